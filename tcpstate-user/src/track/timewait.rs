//! The live TIME_WAIT table: every TIME_WAIT socket, keyed by (network
//! namespace, 4-tuple), with its role, closer, owner, entry time and expiry.
//!
//! Fed by the tracker (a close with `time_wait`, or a new connection on a
//! 4-tuple that is in TIME_WAIT) and corrected by the kernel's own socket
//! table ([`Table::reconcile`]), which also catches what no tracepoint
//! reports: early kills by RST, `ss -K`, namespace teardown. Pure logic.
//!
//! Memory is bounded and small: entries live in a slab indexed by a hash
//! table of `u32` slots, and expiries in an 8-byte heap; a cap limits the
//! entry count and what it drops is counted.

use std::{cmp::Reverse, collections::BinaryHeap, hash::BuildHasher as _};

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use super::tracker::{Close, Closer, Role, Transition};
use crate::{
    host::sockdiag::{KernelSocket, Listeners},
    sock::{Comm, SockId, State},
};

/// Linux's `TCP_TIMEWAIT_LEN`: 60 s, hard-coded in the kernel.
pub const LINUX_TIME_WAIT_NS: u64 = 60_000_000_000;
/// How late the kernel's timer wheel may end a TIME_WAIT socket.
pub const EXPIRY_SLACK_NS: u64 = 5_000_000_000;
/// Default cap: well above the default `tcp_max_tw_buckets` (262,144 on
/// large hosts), per host.
pub const DEFAULT_MAX_ENTRIES: usize = 1 << 21;

/// Where an entry came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Source {
    /// Seen entering TIME_WAIT by tracing.
    Traced,
    /// Known only from the kernel's socket table.
    Kernel,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Traced => "traced",
            Source::Kernel => "kernel",
        }
    }
}

/// Why an entry ended.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ExitReason {
    /// At its predicted time.
    Expired,
    /// A new connection took the 4-tuple.
    Reused,
    /// It vanished from the kernel's table early, for a reason no hook saw
    /// (an RST, `ss -K`, namespace teardown: no tracepoint reports those).
    Gone,
    /// It never existed: the kernel refused the close a TIME_WAIT socket
    /// (its namespace's `tcp_max_tw_buckets` were full), which the table
    /// could not tell at the close (a kernel filter hid some of the
    /// namespace's sockets); told by the namespace's `TCPTimeWaitOverflow`.
    Overflow,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Expired => "expired",
            ExitReason::Reused => "reused",
            ExitReason::Gone => "gone",
            ExitReason::Overflow => "overflow",
        }
    }
}

/// The ephemeral port range (`ip_local_port_range`) of each network
/// namespace, as read inside it.
pub type Ranges = FxHashMap<u32, (u16, u16)>;

/// What a reconciliation needs beside the dump's TIME_WAIT sockets, read
/// with it.
#[derive(Clone, Copy)]
pub struct DumpContext<'a> {
    /// Listening ports: a TIME_WAIT socket on one is a server's.
    pub listeners: &'a Listeners,
    /// Ephemeral ranges: a TIME_WAIT socket on one of their ports is a
    /// client's.
    pub ephemeral: &'a Ranges,
    /// What each namespace's `TCPTimeWaitOverflow` rose by since its
    /// previous reading.
    pub overflowed: &'a FxHashMap<u32, u64>,
}

/// The owner recorded for an entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TwOwner {
    pub pid: u32,
    pub comm: Comm,
}

/// One TIME_WAIT socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Entry {
    pub id: SockId,
    pub role: Role,
    pub closer: Closer,
    pub source: Source,
    /// Added by reconciliation while tracing ran: counted as missed.
    missed: bool,
    pub owner: Option<TwOwner>,
    /// Kernel monotonic time of entry (estimated for kernel-sourced ones).
    pub entered_ns: u64,
    pub expires_ns: u64,
}

#[cfg(test)]
impl Entry {
    pub(crate) fn new_for_test(id: SockId, role: Role, closer: Closer, source: Source) -> Entry {
        Entry {
            id,
            role,
            closer,
            source,
            missed: false,
            owner: None,
            entered_ns: 0,
            expires_ns: LINUX_TIME_WAIT_NS,
        }
    }
}

/// Receives the table's changes.
pub trait TwSink {
    fn tw_enter(&mut self, e: &Entry);
    fn tw_exit(&mut self, e: &Entry, reason: ExitReason, at_ns: u64);
}

/// Counters of the table's life.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct TwStats {
    /// Entries added by tracing.
    pub entered: u64,
    /// Entries that existed when the table was seeded from the kernel.
    pub seeded: u64,
    /// Entries the kernel had that tracing had not seen (added by
    /// reconciliation; a traced enter that arrives later takes it back).
    pub missed: u64,
    /// Exits by reason: expired, reused, gone, overflow.
    pub exited: [u64; 4],
    /// Entries not stored because the table was full.
    pub dropped: u64,
}

impl TwStats {
    pub fn exited(&self, reason: ExitReason) -> u64 {
        self.exited[reason as usize]
    }
}

/// The table.
pub struct Table {
    slab: Vec<Option<Entry>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: FxBuildHasher,
    /// (expiry in ms since `base_ns`, slot), earliest first; stale items
    /// (slot freed or expiry moved) are skipped when popped.
    expiries: BinaryHeap<Reverse<(u32, u32)>>,
    base_ns: u64,
    tw_len_ns: u64,
    /// Extra time before an entry expires on its own, when reconciliation
    /// confirms expiries against the kernel.
    grace_ns: u64,
    /// While reconciling: entries that ended, with when. A dump that began
    /// before an entry ended may still list its socket, which must not
    /// bring it back as missed by tracing.
    ended: FxHashMap<SockId, u64>,
    max_entries: usize,
    /// Entries per network namespace.
    per_netns: FxHashMap<u32, usize>,
    /// Closes refused a TIME_WAIT socket per namespace since its last
    /// dump: the part of its `TCPTimeWaitOverflow` rise already told.
    refused: FxHashMap<u32, u64>,
    stats: TwStats,
}

impl Table {
    /// `base_ns`: the monotonic time from which expiries are counted;
    /// `grace_ns`: 0 without reconciliation, [`EXPIRY_SLACK_NS`] with it.
    pub fn new(base_ns: u64, tw_len_ns: u64, grace_ns: u64, max_entries: usize) -> Table {
        Table {
            slab: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: FxBuildHasher,
            expiries: BinaryHeap::new(),
            base_ns,
            tw_len_ns,
            grace_ns,
            ended: FxHashMap::default(),
            max_entries,
            per_netns: FxHashMap::default(),
            refused: FxHashMap::default(),
            stats: TwStats::default(),
        }
    }

    /// The TIME_WAIT length it assumes.
    pub fn tw_len_ns(&self) -> u64 {
        self.tw_len_ns
    }

    /// Entries in network namespace `netns`.
    pub fn in_netns(&self, netns: u32) -> usize {
        self.per_netns.get(&netns).copied().unwrap_or(0)
    }

    pub fn stats(&self) -> TwStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slab.iter().flatten()
    }

    pub fn get(&self, key: &SockId) -> Option<&Entry> {
        self.find(key)
            .and_then(|slot| self.slab[slot as usize].as_ref())
    }

    /// Network namespaces that have entries.
    pub fn namespaces(&self) -> FxHashSet<u32> {
        self.entries().map(|e| e.id.netns).collect()
    }

    fn hash(&self, key: &SockId) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &SockId) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(self.hash(key), |&slot| {
                slab[slot as usize].as_ref().is_some_and(|e| e.id == *key)
            })
            .copied()
    }

    fn expiry_ms(&self, expires_ns: u64) -> u32 {
        let ms = expires_ns
            .saturating_add(self.grace_ns)
            .saturating_sub(self.base_ns)
            / 1_000_000;
        u32::try_from(ms).unwrap_or(u32::MAX)
    }

    fn schedule(&mut self, slot: u32) {
        if let Some(e) = &self.slab[slot as usize] {
            let at = self.expiry_ms(e.expires_ns);
            self.expiries.push(Reverse((at, slot)));
        }
    }

    /// Stores a new entry; false when the table is full.
    fn insert(&mut self, entry: Entry) -> bool {
        if self.index.len() >= self.max_entries {
            self.stats.dropped += 1;
            return false;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.slab.push(Some(entry));
                (self.slab.len() - 1) as u32
            }
        };
        let hash = self.hash(&entry.id);
        let (slab, hasher) = (&self.slab, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| {
            slab[s as usize]
                .as_ref()
                .map_or(0, |e| hasher.hash_one(e.id))
        });
        self.schedule(slot);
        *self.per_netns.entry(entry.id.netns).or_default() += 1;
        true
    }

    /// Removes the entry in `slot`, reporting why.
    fn remove(&mut self, slot: u32, reason: ExitReason, at_ns: u64, sink: &mut impl TwSink) {
        let Some(entry) = self.slab[slot as usize].take() else {
            return;
        };
        let hash = self.hash(&entry.id);
        if let Ok(found) = self.index.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        self.free.push(slot);
        if let Some(n) = self.per_netns.get_mut(&entry.id.netns) {
            *n -= 1;
            if *n == 0 {
                self.per_netns.remove(&entry.id.netns);
            }
        }
        if self.grace_ns > 0 {
            self.ended.insert(entry.id, at_ns);
        }
        self.stats.exited[reason as usize] += 1;
        sink.tw_exit(&entry, reason, at_ns);
    }

    /// A transition from the tracker: a new connection on a 4-tuple that is
    /// in TIME_WAIT took it over (`tcp_tw_reuse`, or a new SYN accepted).
    ///
    /// Only a connection's opening transitions can do that (from CLOSE with
    /// a bound port, from SYN_SENT once `connect()` chose its port, from
    /// LISTEN or SYN_RECV for an accepted one: a closes-only stream has
    /// only the latter), so the others skip the lookup: it is a likely
    /// cache miss on a table of up to a minute of closes.
    pub fn on_transition(&mut self, t: &Transition, sink: &mut impl TwSink) {
        let opening = matches!(t.old, State::CLOSE | State::SYN_SENT | State::SYN_RECV)
            || t.old == State::LISTEN && t.new != State::CLOSE;
        if !opening || t.id.tuple.lport == 0 || t.id.tuple.rport == 0 {
            return;
        }
        if let Some(slot) = self.find(&t.id) {
            self.remove(slot, ExitReason::Reused, t.ts_ns, sink);
        }
    }

    /// A close from the tracker: enters TIME_WAIT when this end did.
    pub fn on_close(&mut self, c: &Close, sink: &mut impl TwSink) {
        if c.tw_refused {
            *self.refused.entry(c.id.netns).or_default() += 1;
        }
        if !c.time_wait {
            return;
        }
        let key = c.id;
        let entry = Entry {
            id: key,
            role: c.role,
            closer: c.closer,
            source: Source::Traced,
            missed: false,
            owner: c.owner.map(|o| TwOwner {
                pid: o.pid,
                comm: o.comm,
            }),
            entered_ns: c.ts_ns,
            expires_ns: c.ts_ns + self.tw_len_ns,
        };
        if let Some(slot) = self.find(&key) {
            let Some(e) = self.slab[slot as usize].as_mut() else {
                return;
            };
            if e.source == Source::Kernel {
                // The kernel's table showed the socket before its event was
                // read: tracing did not miss it after all. Keep the kernel's
                // timer. A reconciliation already announced it; a seeded
                // entry (the dump ran just after attaching) was not.
                let announced = e.missed;
                if announced {
                    self.stats.missed -= 1;
                } else {
                    self.stats.seeded -= 1;
                }
                *e = Entry {
                    expires_ns: e.expires_ns,
                    ..entry
                };
                let upgraded = *e;
                self.stats.entered += 1;
                if !announced {
                    sink.tw_enter(&upgraded);
                }
                return;
            }
            self.remove(slot, ExitReason::Reused, c.ts_ns, sink);
        }
        if self.insert(entry) {
            self.stats.entered += 1;
            sink.tw_enter(&entry);
        }
    }

    /// Ends the entries whose time has come (plus the grace, when
    /// reconciliation confirms expiries).
    pub fn expire(&mut self, now_ns: u64, sink: &mut impl TwSink) {
        let now_ms = now_ns.saturating_sub(self.base_ns) / 1_000_000;
        while let Some(&Reverse((at, slot))) = self.expiries.peek() {
            if u64::from(at) > now_ms {
                break;
            }
            self.expiries.pop();
            let current = self.slab[slot as usize].map(|e| self.expiry_ms(e.expires_ns));
            if current == Some(at) {
                let at_ns = self.slab[slot as usize].map_or(now_ns, |e| e.expires_ns);
                self.remove(slot, ExitReason::Expired, at_ns, sink);
            }
        }
    }

    /// Makes the table agree with the kernel's socket tables.
    ///
    /// `dumps`: per network namespace, its TIME_WAIT sockets (and the
    /// FIN_WAIT2 ones, which include timewait sockets still in that
    /// substate), dumped starting at `dump_ns`. `listeners` (listening
    /// sockets) and `ephemeral` (each namespace's port range) infer the roles
    /// of sockets tracing missed. `seeding`: the first pass, whose
    /// additions existed before tracing started.
    pub fn reconcile(
        &mut self,
        dumps: &[(u32, Vec<KernelSocket>)],
        around: &DumpContext<'_>,
        dump_ns: u64,
        seeding: bool,
        sink: &mut impl TwSink,
    ) {
        let DumpContext {
            listeners,
            ephemeral,
            overflowed,
        } = *around;
        let mut in_kernel = FxHashSet::default();
        for (_, sockets) in dumps {
            for ks in sockets {
                let key = ks.id;
                in_kernel.insert(key);
                if ks.state != State::TIME_WAIT {
                    // A FIN_WAIT2 timewait socket keeps its entry alive; it
                    // is not TIME_WAIT yet, so it does not create one.
                    continue;
                }
                let expires_ns = dump_ns + u64::from(ks.expires_ms) * 1_000_000;
                match self.find(&key) {
                    Some(slot) => {
                        if let Some(e) = self.slab[slot as usize].as_mut() {
                            e.expires_ns = expires_ns;
                        }
                        self.schedule(slot);
                    }
                    // Ended after the dump began: the dump is stale.
                    None if self.ended.get(&key).is_some_and(|&at| at >= dump_ns) => {}
                    None => {
                        let lport = ks.id.tuple.lport;
                        // A port that listens is a server's; an ephemeral
                        // one was picked by connect(); any other belonged
                        // to a listener that is gone, or to a client that
                        // bound it: unknown.
                        let role = if listeners.contains_key(&(ks.id.netns, lport)) {
                            Role::Server
                        } else if ephemeral
                            .get(&ks.id.netns)
                            .is_some_and(|&(lo, hi)| (lo..=hi).contains(&lport))
                        {
                            Role::Client
                        } else {
                            Role::Unknown
                        };
                        let entry = Entry {
                            id: key,
                            role,
                            // A TIME_WAIT socket is held by the end that
                            // closed first (or by both, after a
                            // simultaneous close, which the kernel's table
                            // does not tell apart).
                            closer: Closer::Local,
                            source: Source::Kernel,
                            missed: !seeding,
                            owner: None,
                            // Estimated: the kernel keeps no entry time.
                            entered_ns: expires_ns.saturating_sub(self.tw_len_ns),
                            expires_ns,
                        };
                        if self.insert(entry) {
                            if seeding {
                                self.stats.seeded += 1;
                            } else {
                                self.stats.missed += 1;
                                sink.tw_enter(&entry);
                            }
                        }
                    }
                }
            }
        }
        // Entries of the dumped namespaces that the kernel no longer has.
        let dumped: FxHashSet<u32> = dumps.iter().map(|(ns, _)| *ns).collect();
        let mut gone: Vec<(u32, Entry)> = self
            .slab
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| e.map(|e| (slot as u32, e)))
            .filter(|(_, e)| {
                dumped.contains(&e.id.netns) && e.entered_ns < dump_ns && !in_kernel.contains(&e.id)
            })
            .collect();
        // Refusals the namespace's counter shows and no close was told of:
        // the latest traced entries that the kernel does not have.
        let mut untold: FxHashMap<u32, u64> = overflowed
            .iter()
            .map(|(ns, &n)| {
                (
                    *ns,
                    n.saturating_sub(self.refused.get(ns).copied().unwrap_or(0)),
                )
            })
            .collect();
        gone.sort_by_key(|(_, e)| Reverse(e.entered_ns));
        for (slot, e) in gone {
            let refused = untold.get_mut(&e.id.netns).filter(|n| **n > 0);
            let reason = if dump_ns + EXPIRY_SLACK_NS >= e.expires_ns {
                ExitReason::Expired
            } else if let Some(n) = refused
                && e.source == Source::Traced
            {
                *n -= 1;
                ExitReason::Overflow
            } else {
                ExitReason::Gone
            };
            self.remove(slot, reason, dump_ns, sink);
        }
        for ns in &dumped {
            self.refused.remove(ns);
        }
        // Later dumps begin after this one: earlier ends cannot be stale
        // for them.
        self.ended.retain(|_, at| *at >= dump_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sock::Owner,
        track::tracker::{CloseKind, Note, tests::tuple},
    };

    const NS: u32 = 4026531840;
    fn ephemeral() -> Ranges {
        [(NS, (32768, 60999))].into_iter().collect()
    }
    const T0: u64 = 1_000_000_000_000;

    /// No namespace's `TCPTimeWaitOverflow` rose.
    fn none() -> FxHashMap<u32, u64> {
        FxHashMap::default()
    }

    /// A dump's context.
    fn around<'a>(
        listeners: &'a Listeners,
        ephemeral: &'a Ranges,
        overflowed: &'a FxHashMap<u32, u64>,
    ) -> DumpContext<'a> {
        DumpContext {
            listeners,
            ephemeral,
            overflowed,
        }
    }

    #[derive(Default)]
    struct Log {
        enters: Vec<Entry>,
        exits: Vec<(SockId, ExitReason)>,
    }

    impl TwSink for Log {
        fn tw_enter(&mut self, e: &Entry) {
            self.enters.push(*e);
        }
        fn tw_exit(&mut self, e: &Entry, reason: ExitReason, _: u64) {
            self.exits.push((e.id, reason));
        }
    }

    fn table() -> Table {
        Table::new(T0, LINUX_TIME_WAIT_NS, 0, 100)
    }

    fn close(lport: u16, rport: u16, ts: u64, time_wait: bool) -> Close {
        Close {
            ts_ns: ts,
            skaddr: 1,
            id: key(lport, rport),
            role: Role::Server,
            closer: Closer::Local,
            kind: CloseKind::Fin,
            time_wait,
            tw_refused: false,
            lifetime_ns: Some(1),
            owner: Some(Owner {
                pid: 7,
                tid: 7,
                comm: Comm::new("srv"),
            }),
        }
    }

    fn transition(lport: u16, rport: u16, ts: u64) -> Transition {
        Transition {
            ts_ns: ts,
            skaddr: 2,
            id: key(lport, rport),
            old: State::SYN_SENT,
            new: State::ESTABLISHED,
            in_old_ns: None,
            owner: None,
            note: Note::None,
        }
    }

    fn kernel(lport: u16, rport: u16, expires_ms: u32) -> KernelSocket {
        KernelSocket {
            id: key(lport, rport),
            state: State::TIME_WAIT,
            expires_ms,
            inode: 0,
        }
    }

    fn key(lport: u16, rport: u16) -> SockId {
        SockId {
            netns: NS,
            tuple: tuple(lport, rport),
        }
    }

    #[test]
    fn a_time_wait_close_enters_and_expires_after_the_length() {
        let (mut t, mut log) = (table(), Log::default());
        t.on_close(&close(80, 40000, T0, true), &mut log);
        t.on_close(&close(80, 40001, T0, false), &mut log);
        assert_eq!(t.len(), 1);
        let e = log.enters[0];
        assert_eq!(
            (e.role, e.closer, e.source),
            (Role::Server, Closer::Local, Source::Traced)
        );
        assert_eq!(e.owner.map(|o| o.pid), Some(7));
        assert_eq!(e.expires_ns, T0 + LINUX_TIME_WAIT_NS);
        t.expire(T0 + LINUX_TIME_WAIT_NS - 1_000_000, &mut log);
        assert!(log.exits.is_empty());
        t.expire(T0 + LINUX_TIME_WAIT_NS, &mut log);
        assert_eq!(log.exits, [(key(80, 40000), ExitReason::Expired)]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_new_connection_on_the_tuple_reuses_it() {
        let (mut t, mut log) = (table(), Log::default());
        t.on_close(&close(40000, 80, T0, true), &mut log);
        t.on_transition(&transition(40001, 80, T0 + 1), &mut log);
        assert!(log.exits.is_empty(), "another tuple");
        let later = Transition {
            old: State::ESTABLISHED,
            new: State::FIN_WAIT1,
            ..transition(40000, 80, T0 + 2)
        };
        t.on_transition(&later, &mut log);
        assert!(log.exits.is_empty(), "not an opening transition");
        t.on_transition(&transition(40000, 80, T0 + 2), &mut log);
        assert_eq!(log.exits, [(key(40000, 80), ExitReason::Reused)]);
        // Its stale expiry does not end anything later.
        t.expire(u64::MAX, &mut log);
        assert_eq!(log.exits.len(), 1);
    }

    #[test]
    fn entries_the_kernel_refused_end_as_overflow_by_its_counter() {
        let (mut t, mut log) = (table(), Log::default());
        // Three closes claimed TIME_WAIT; one more was judged refused at
        // its close already.
        for (rport, at) in [(1, T0), (2, T0 + 1), (3, T0 + 2)] {
            t.on_close(&close(80, rport, at, true), &mut log);
        }
        t.on_close(
            &Close {
                time_wait: false,
                tw_refused: true,
                ..close(80, 4, T0 + 3, true)
            },
            &mut log,
        );
        // The kernel has none of them and refused three: the told one and
        // the two latest.
        let overflowed = [(NS, 3)].into_iter().collect();
        let dump = vec![(NS, Vec::new())];
        let now = T0 + 2_000_000_000;
        t.reconcile(
            &dump,
            &around(&Listeners::default(), &ephemeral(), &overflowed),
            now,
            false,
            &mut log,
        );
        assert_eq!(
            log.exits,
            [
                (key(80, 3), ExitReason::Overflow),
                (key(80, 2), ExitReason::Overflow),
                (key(80, 1), ExitReason::Gone),
            ]
        );
        assert_eq!(t.stats().exited(ExitReason::Overflow), 2);
        // The told refusal is forgotten with the dump.
        t.on_close(&close(80, 5, now + 1, true), &mut log);
        let later = [(NS, 1)].into_iter().collect();
        t.reconcile(
            &dump,
            &around(&Listeners::default(), &ephemeral(), &later),
            now + 2,
            false,
            &mut log,
        );
        assert_eq!(log.exits.last(), Some(&(key(80, 5), ExitReason::Overflow)));
    }

    #[test]
    fn reconciliation_adds_corrects_and_removes() {
        let (mut t, mut log) = (table(), Log::default());
        t.on_close(&close(80, 1, T0, true), &mut log); // kernel still has it
        t.on_close(&close(80, 2, T0, true), &mut log); // killed early
        t.on_close(&close(80, 3, T0 + 5_000_000_000, true), &mut log); // after the dump
        let now = T0 + 2_000_000_000;
        let listeners = [((NS, 80), 1)].into_iter().collect();
        let dump = vec![(
            NS,
            vec![
                kernel(80, 1, 50_000),
                kernel(80, 9, 30_000),
                kernel(40000, 80, 1000),
                kernel(8088, 40001, 1000),
            ],
        )];
        t.reconcile(
            &dump,
            &around(&listeners, &ephemeral(), &none()),
            now,
            false,
            &mut log,
        );
        assert_eq!(log.exits, [(key(80, 2), ExitReason::Gone)]);
        // Corrected expiry from the kernel timer.
        assert_eq!(t.get(&key(80, 1)).unwrap().expires_ns, now + 50_000_000_000);
        // Added, counted as missed, role from the listening ports, else the
        // ephemeral range.
        let added = t.get(&key(80, 9)).unwrap();
        assert_eq!((added.source, added.role), (Source::Kernel, Role::Server));
        assert_eq!(t.get(&key(40000, 80)).unwrap().role, Role::Client);
        // Neither listening nor ephemeral: a server whose listener is gone,
        // or a client that bound its port.
        assert_eq!(t.get(&key(8088, 40001)).unwrap().role, Role::Unknown);
        assert_eq!(t.stats().missed, 3);
        assert_eq!(log.enters.len(), 6);
        assert!(t.get(&key(80, 3)).is_some(), "entered after the dump began");
        assert_eq!(t.stats().exited(ExitReason::Gone), 1);
    }

    #[test]
    fn a_dump_older_than_an_end_does_not_bring_the_entry_back() {
        let mut t = Table::new(T0, LINUX_TIME_WAIT_NS, EXPIRY_SLACK_NS, 100);
        let mut log = Log::default();
        t.on_close(&close(80, 1, T0, true), &mut log);
        t.on_close(&close(80, 2, T0, true), &mut log);
        // Both end after the dump began, one of them reused, one expired.
        let dump_ns = T0 + 1_000;
        t.on_transition(&transition(80, 1, dump_ns + 1), &mut log);
        t.expire(u64::MAX, &mut log);
        assert_eq!(log.exits.len(), 2);
        let dump = vec![(NS, vec![kernel(80, 1, 50_000), kernel(80, 2, 1)])];
        t.reconcile(
            &dump,
            &around(&Listeners::default(), &ephemeral(), &none()),
            dump_ns,
            false,
            &mut log,
        );
        assert!(
            t.is_empty(),
            "stale dump brought back {:?}",
            t.entries().collect::<Vec<_>>()
        );
        assert_eq!(t.stats().missed, 0);
        // A dump that began after the end is believed.
        t.reconcile(
            &dump,
            &around(&Listeners::default(), &ephemeral(), &none()),
            T0 + 3 * LINUX_TIME_WAIT_NS,
            false,
            &mut log,
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn vanishing_at_the_predicted_time_is_an_expiry() {
        let (mut t, mut log) = (table(), Log::default());
        t.on_close(&close(80, 1, T0, true), &mut log);
        let now = T0 + LINUX_TIME_WAIT_NS - 2_000_000_000;
        t.reconcile(
            &[(NS, vec![])],
            &around(&Listeners::default(), &ephemeral(), &none()),
            now,
            false,
            &mut log,
        );
        assert_eq!(log.exits, [(key(80, 1), ExitReason::Expired)]);
    }

    #[test]
    fn seeding_is_not_counted_as_missed_and_a_late_event_takes_a_miss_back() {
        let (mut t, mut log) = (table(), Log::default());
        t.reconcile(
            &[(NS, vec![kernel(80, 1, 40_000)])],
            &around(&Listeners::default(), &ephemeral(), &none()),
            T0,
            true,
            &mut log,
        );
        assert_eq!((t.stats().seeded, t.stats().missed), (1, 0));
        assert!(log.enters.is_empty(), "pre-existing sockets are not new");
        let e = t.get(&key(80, 1)).unwrap();
        assert_eq!(e.entered_ns, T0 + 40_000_000_000 - LINUX_TIME_WAIT_NS);
        // Traced after all (the seeding dump ran after attaching): announced
        // now, as traced, no longer counted as seeded.
        t.on_close(&close(80, 1, T0, true), &mut log);
        assert_eq!(log.enters.len(), 1);
        assert_eq!(log.enters[0].source, Source::Traced);
        assert_eq!(t.stats().seeded, 0);

        t.reconcile(
            &[(NS, vec![kernel(80, 2, 59_000)])],
            &around(&Listeners::default(), &ephemeral(), &none()),
            T0 + 1,
            false,
            &mut log,
        );
        assert_eq!(t.stats().missed, 1);
        let enters = log.enters.len();
        t.on_close(&close(80, 2, T0, true), &mut log);
        assert_eq!(t.stats().missed, 0);
        assert_eq!(
            log.enters.len(),
            enters,
            "announced once, by the reconciliation"
        );
        assert_eq!(t.get(&key(80, 2)).unwrap().source, Source::Traced);
    }

    #[test]
    fn other_namespaces_and_fin_wait2_timewait_sockets_keep_their_entries() {
        let (mut t, mut log) = (table(), Log::default());
        t.on_close(&close(80, 1, T0, true), &mut log);
        let mut other = close(80, 1, T0, true);
        other.id.netns = NS + 1;
        t.on_close(&other, &mut log);
        assert_eq!(t.len(), 2, "same tuple, two namespaces");
        let mut fw2 = kernel(80, 1, 50_000);
        fw2.state = State::FIN_WAIT2;
        t.reconcile(
            &[(NS, vec![fw2])],
            &around(&Listeners::default(), &ephemeral(), &none()),
            T0 + 1,
            false,
            &mut log,
        );
        assert!(log.exits.is_empty());
        assert_eq!(t.namespaces().len(), 2);
    }

    #[test]
    fn the_cap_counts_what_it_drops() {
        let mut t = Table::new(T0, LINUX_TIME_WAIT_NS, 0, 2);
        let mut log = Log::default();
        for port in 1..=3 {
            t.on_close(&close(80, port, T0, true), &mut log);
        }
        assert_eq!((t.len(), t.stats().dropped), (2, 1));
    }

    #[test]
    fn freed_slots_are_reused() {
        let (mut t, mut log) = (table(), Log::default());
        for round in 0..3u64 {
            for port in 1..=10 {
                t.on_close(
                    &close(80, port, T0 + round * LINUX_TIME_WAIT_NS, true),
                    &mut log,
                );
            }
            t.expire(T0 + (round + 1) * LINUX_TIME_WAIT_NS, &mut log);
        }
        assert!(t.slab.len() <= 10);
        assert_eq!(t.stats().exited(ExitReason::Expired), 30);
    }
}
