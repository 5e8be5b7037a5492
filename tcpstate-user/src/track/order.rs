//! Puts the kernel's records in timestamp order. Each CPU stamps a record
//! before it reserves its place in the ring buffer, so records of different
//! CPUs can arrive a few microseconds out of order (a record stamped later
//! may be reserved first). Records are held for [`WINDOW_NS`] and released
//! oldest first; within one timestamp, in arrival order. Per socket the
//! kernel's order is already the timestamp order, so classification is
//! unchanged. A record that arrives after a later one has left (its CPU
//! stalled for longer than the window between stamping and placing it)
//! leaves at once, out of order, and is counted ([`Reorder::late`]).
//!
//! While held, a record can still learn from a later one of its socket:
//! before Linux 6.15 an accepted socket's `LISTEN -> SYN_RECV` carries its
//! listener's tuple (no remote end yet), and its next record, a few
//! microseconds later, carries its own. The held record leaves with that,
//! and waits for it up to [`COMPLETION_WAIT_NS`] (holding what is behind
//! it, to keep the order): long enough for a stalled CPU, short enough
//! when the next record never comes (a kernel filter dropped it).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::{
    kernel::decode::{Event, Kind},
    sock::{SockId, State},
};

/// How long a record with its listener's tuple waits for its socket's next
/// record.
pub const COMPLETION_WAIT_NS: u64 = 50_000_000;

/// Whether `event` is an accepted socket's first transition reported with
/// its listener's tuple (the remote port, never 0 on a connection, is).
pub fn has_listener_tuple(event: &Event) -> bool {
    event.kind
        == Kind::Transition {
            old: State::LISTEN,
            new: State::SYN_RECV,
        }
        && event.id.tuple.rport == 0
}

/// How long a record waits for older ones that arrive after it, unless
/// told otherwise (`--reorder-window`).
pub const WINDOW_NS: u64 = 2_000_000;

/// A held record and its arrival number.
struct Held {
    seq: u64,
    event: Event,
}

/// The reorder window.
pub struct Reorder {
    window_ns: u64,
    /// Oldest first; within one timestamp, in arrival order. Records come
    /// nearly in order, so each goes in at or near the back: no record is
    /// moved to keep the order, as a heap would move several.
    held: VecDeque<Held>,
    seq: u64,
    /// The newest timestamp seen.
    newest_ns: u64,
    /// The timestamp of the newest record released.
    released_ns: u64,
    /// Records that arrived stamped before one already released.
    late: u64,
    /// Held records with their listener's tuple still waiting for their
    /// socket's next record: the arrival number of each, by socket.
    awaiting: FxHashMap<u64, u64>,
    /// Held records with their listener's tuple whose socket's next record
    /// came: its tuple, by the held record's arrival number (a socket's
    /// address can begin a new life while its last accept is still held).
    completed: FxHashMap<u64, SockId>,
}

impl Default for Reorder {
    fn default() -> Self {
        Reorder::new(WINDOW_NS)
    }
}

impl Reorder {
    pub fn new(window_ns: u64) -> Reorder {
        Reorder {
            window_ns,
            held: VecDeque::new(),
            seq: 0,
            newest_ns: 0,
            released_ns: 0,
            late: 0,
            awaiting: FxHashMap::default(),
            completed: FxHashMap::default(),
        }
    }

    /// How long records are held.
    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    /// Holds one record.
    pub fn push(&mut self, event: Event) {
        self.seq += 1;
        if has_listener_tuple(&event) {
            self.awaiting.insert(event.skaddr, self.seq);
        } else if !self.awaiting.is_empty()
            && let Kind::Transition { old, .. } = event.kind
            && let Some(accept) = self.awaiting.remove(&event.skaddr)
            && old == State::SYN_RECV
        {
            // The same life's next transition; any other begins a new life
            // of the address (a kernel filter dropped the accept's end).
            self.completed.insert(accept, event.id);
        }
        self.newest_ns = self.newest_ns.max(event.ts_ns);
        if event.ts_ns < self.released_ns {
            self.late += 1;
        }
        // After every record stamped at or before it: arrival order within
        // a timestamp.
        let at = self.held.partition_point(|h| h.event.ts_ns <= event.ts_ns);
        self.held.insert(
            at,
            Held {
                seq: self.seq,
                event,
            },
        );
    }

    /// The oldest record, if it has waited out the window behind the newest
    /// one seen.
    pub fn pop_settled(&mut self) -> Option<Event> {
        self.pop_until(self.newest_ns.saturating_sub(self.window_ns))
    }

    /// The oldest record stamped at or before `horizon_ns` (`u64::MAX`:
    /// every record, at the end).
    pub fn pop_until(&mut self, horizon_ns: u64) -> Option<Event> {
        let oldest = self.held.front()?;
        if oldest.event.ts_ns > horizon_ns {
            return None;
        }
        let now_ns = horizon_ns.saturating_add(self.window_ns);
        let awaiting = self.awaiting.get(&oldest.event.skaddr) == Some(&oldest.seq);
        if awaiting
            && horizon_ns != u64::MAX
            && oldest.event.ts_ns.saturating_add(COMPLETION_WAIT_NS) > now_ns
        {
            return None;
        }
        let Held { seq, mut event } = self.held.pop_front()?;
        self.released_ns = self.released_ns.max(event.ts_ns);
        if awaiting {
            self.awaiting.remove(&event.skaddr);
        } else if let Some(id) = self.completed.remove(&seq) {
            event.id = id;
        }
        Some(event)
    }

    /// Records that arrived after a record stamped later had left: they
    /// leave out of time order.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::tracker::tests::tuple;

    fn event(ts_ns: u64, skaddr: u64) -> Event {
        Event {
            ts_ns,
            kind: Kind::Transition {
                old: State::ESTABLISHED,
                new: State::FIN_WAIT1,
            },
            skaddr,
            id: SockId {
                netns: 1,
                tuple: tuple(1, 2),
            },
            prev_ts_ns: None,
            owner: None,
            life: Default::default(),
        }
    }

    #[test]
    fn records_leave_in_timestamp_order_once_settled() {
        let mut r = Reorder::default();
        // A second CPU's record, stamped earlier, arrives after.
        r.push(event(1_000_050, 1));
        r.push(event(1_000_000, 2));
        r.push(event(1_000_050, 3));
        assert!(r.pop_settled().is_none(), "nothing has waited the window");
        r.push(event(1_000_000 + WINDOW_NS + 50, 4));
        let out: Vec<_> = std::iter::from_fn(|| r.pop_settled())
            .map(|e| e.skaddr)
            .collect();
        assert_eq!(out, [2, 1, 3], "oldest first, ties in arrival order");
        assert_eq!(r.len(), 1);
        assert_eq!(r.pop_until(u64::MAX).map(|e| e.skaddr), Some(4));
        assert!(r.is_empty());
    }

    #[test]
    fn a_record_arriving_after_the_window_leaves_out_of_order_and_is_counted() {
        let mut r = Reorder::default();
        r.push(event(1_000_000, 1));
        r.push(event(1_000_000 + WINDOW_NS, 2));
        assert_eq!(r.pop_settled().map(|e| e.skaddr), Some(1));
        assert_eq!(r.late(), 0);
        // Stamped before the record released, after the window had passed.
        r.push(event(999_999, 3));
        // Stamped at the released record's time: still in order.
        r.push(event(1_000_000, 4));
        assert_eq!(r.late(), 1);
        let out: Vec<_> = std::iter::from_fn(|| r.pop_until(u64::MAX))
            .map(|e| e.skaddr)
            .collect();
        assert_eq!(out, [3, 4, 2]);
        assert_eq!(r.late(), 1);
    }

    #[test]
    fn records_in_any_order_leave_sorted_ties_in_arrival_order() {
        let mut r = Reorder::new(u64::MAX);
        // Timestamps in a scrambled order with many ties; skaddr is the
        // arrival number.
        let stamps: Vec<u64> = (0..500u64).map(|i| (i * 7919) % 61).collect();
        for (arrival, &ts) in stamps.iter().enumerate() {
            r.push(event(ts, arrival as u64));
        }
        let out: Vec<_> = std::iter::from_fn(|| r.pop_until(u64::MAX))
            .map(|e| (e.ts_ns, e.skaddr))
            .collect();
        let mut expected: Vec<_> = stamps
            .iter()
            .enumerate()
            .map(|(arrival, &ts)| (ts, arrival as u64))
            .collect();
        expected.sort();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_listener_tuple_leaves_with_the_sockets_own() {
        let accepted = |ts_ns, skaddr, rport| Event {
            kind: Kind::Transition {
                old: State::LISTEN,
                new: State::SYN_RECV,
            },
            id: SockId {
                netns: 1,
                tuple: tuple(80, rport),
            },
            ..event(ts_ns, skaddr)
        };
        // The accept's end: SYN_RECV -> ESTABLISHED, with the own tuple.
        let established = |ts_ns, skaddr, rport| Event {
            kind: Kind::Transition {
                old: State::SYN_RECV,
                new: State::ESTABLISHED,
            },
            ..accepted(ts_ns, skaddr, rport)
        };
        let mut r = Reorder::default();
        r.push(accepted(1_000, 7, 0));
        // Another socket's record tells nothing about socket 7.
        r.push(event(1_001, 8));
        r.push(established(1_002, 7, 41000));
        // Socket 7's address begins a new life while its first accept is
        // still held: each accept gets its own life's tuple.
        r.push(event(1_002, 7));
        r.push(accepted(1_002, 7, 0));
        r.push(established(1_002, 7, 42000));
        // Socket 11's next life begins before its accept's end was seen (a
        // kernel filter dropped it): that life's tuple is not the accept's.
        r.push(accepted(1_002, 11, 0));
        let mut connect = event(1_002, 11);
        connect.kind = Kind::Transition {
            old: State::CLOSE,
            new: State::SYN_SENT,
        };
        r.push(connect);
        // Socket 9's next record never comes: it waits, holding what is
        // behind it, then leaves as it came.
        r.push(accepted(1_003, 9, 0));
        r.push(event(1_004, 10));
        let first = r.pop_until(1_000).unwrap();
        assert_eq!(first.id.tuple.rport, 41000, "completed");
        assert!(!has_listener_tuple(&first));
        assert_eq!(first.kind, accepted(0, 0, 0).kind, "still the accept");
        let settled: Vec<_> = std::iter::from_fn(|| r.pop_until(1_000_000)).collect();
        assert_eq!(settled.len(), 7, "sockets 8, 7 and 11, then 9 waits");
        assert_eq!(settled[3].id.tuple.rport, 42000, "the second life's accept");
        assert!(
            has_listener_tuple(&settled[5]),
            "socket 11's accept: not completed"
        );
        assert!(r.pop_until(1_000_000).is_none(), "socket 9 still waits");
        let later = 1_003 + COMPLETION_WAIT_NS;
        let rest: Vec<_> = std::iter::from_fn(|| r.pop_until(later)).collect();
        assert_eq!(rest.len(), 2);
        assert!(has_listener_tuple(&rest[0]), "nothing completed socket 9");
        assert_eq!(rest[1].skaddr, 10);
        // After 6.15 the first transition has its own tuple already.
        assert!(!has_listener_tuple(&accepted(0, 1, 5000)));
        assert!(r.awaiting.is_empty() && r.completed.is_empty());
    }
}
