//! The exporter's counters, kept from the stream on the event loop's
//! thread: closes by namespace, role, closer, kind and process; connection
//! lifetimes; failed `connect()`s; TIME_WAIT entries and exits. Every
//! label is bounded: processes beyond the admitted few count as `other`,
//! labels left out of the allow-list are summed over, and the series of a
//! namespace gone for good are dropped.

use rustc_hash::FxHashMap;

use crate::{
    sock::Comm,
    track::{
        timewait::ExitReason,
        tracker::{Close, CloseKind, Closer, FailReason, Role},
    },
};

/// Upper bounds of the lifetime histogram's buckets, in seconds.
pub const LIFETIME_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0,
];

/// Process names waiting for admission that are kept (their closes count
/// as `other` meanwhile): a storm of one-off names cannot grow it.
const PENDING_MAX: usize = 4096;

/// The labels of `tcpstate_closes_total` that can be left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseLabels {
    pub netns: bool,
    pub role: bool,
    pub closer: bool,
    pub kind: bool,
    pub comm: bool,
}

impl CloseLabels {
    pub const ALL: CloseLabels = CloseLabels {
        netns: true,
        role: true,
        closer: true,
        kind: true,
        comm: true,
    };
    pub const NAMES: [&'static str; 5] = ["netns", "role", "closer", "kind", "comm"];

    /// The labels named in `list` (of [`CloseLabels::NAMES`]).
    pub fn of(list: &[String]) -> Result<CloseLabels, String> {
        if let Some(bad) = list.iter().find(|l| !Self::NAMES.contains(&l.as_str())) {
            return Err(format!(
                "--close-labels: no label {bad:?} (labels: {})",
                Self::NAMES.join(", ")
            ));
        }
        let has = |name: &str| list.iter().any(|l| l == name);
        Ok(CloseLabels {
            netns: has("netns"),
            role: has("role"),
            closer: has("closer"),
            kind: has("kind"),
            comm: has("comm"),
        })
    }
}

/// The process a series is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Process {
    /// Admitted: it has series of its own.
    Named(Comm),
    /// Any process not admitted.
    Other,
    /// The owner is not known.
    Unknown,
    /// The `comm` label is left out.
    Omitted,
}

/// One series of `tcpstate_closes_total`: `None` for a label left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseKey {
    pub netns: Option<u32>,
    pub role: Option<Role>,
    pub closer: Option<Closer>,
    pub kind: Option<CloseKind>,
    pub process: Process,
}

/// A Prometheus histogram: counts per bucket (not cumulative), the sum
/// and the count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: [u64; LIFETIME_BUCKETS.len()],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, x: f64) {
        if let Some(i) = LIFETIME_BUCKETS.iter().position(|&upper| x <= upper) {
            self.buckets[i] += 1;
        }
        self.sum += x;
        self.count += 1;
    }

    /// Counts per bucket upper bound, the last `+Inf` (prometheus-client
    /// makes them cumulative).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let within: u64 = self.buckets.iter().sum();
        LIFETIME_BUCKETS
            .iter()
            .copied()
            .zip(self.buckets)
            .chain([(f64::INFINITY, self.count - within)])
            .collect()
    }
}

/// Which process names have series: up to `cap`, the most active of those
/// waiting admitted at each refresh, and dropped again once idle for
/// `idle_refreshes`. An admitted name counts from its admission (what it
/// did before stays in `other`), so every series only grows.
#[derive(Clone, Debug, Default)]
struct Admission {
    cap: usize,
    idle_refreshes: u64,
    refreshes: u64,
    /// Admitted names and the refresh they were last active in.
    admitted: FxHashMap<Comm, u64>,
    /// Closes of names not admitted since the last refresh.
    pending: FxHashMap<Comm, u64>,
}

impl Admission {
    fn label(&mut self, comm: Option<Comm>) -> Process {
        let Some(comm) = comm else {
            return Process::Unknown;
        };
        if let Some(active) = self.admitted.get_mut(&comm) {
            *active = self.refreshes;
            return Process::Named(comm);
        }
        if self.pending.len() < PENDING_MAX || self.pending.contains_key(&comm) {
            *self.pending.entry(comm).or_default() += 1;
        }
        Process::Other
    }

    /// Admits the most active waiting names into free places; returns
    /// the names dropped for idleness.
    fn refresh(&mut self) -> Vec<Comm> {
        self.refreshes += 1;
        let now = self.refreshes;
        let idle = self.idle_refreshes;
        let mut dropped = Vec::new();
        self.admitted.retain(|comm, active| {
            let keep = now - *active <= idle;
            if !keep {
                dropped.push(*comm);
            }
            keep
        });
        let mut waiting: Vec<(Comm, u64)> = self.pending.drain().collect();
        waiting.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.0.cmp(&b.0.0)));
        let free = self.cap.saturating_sub(self.admitted.len());
        for (comm, _) in waiting.into_iter().take(free) {
            self.admitted.insert(comm, now);
        }
        dropped
    }
}

/// The counters.
#[derive(Clone, Debug)]
pub struct Tally {
    labels: CloseLabels,
    admission: Admission,
    pub closes: FxHashMap<CloseKey, u64>,
    /// Connection lifetimes by [`Role`] (client, server, unknown).
    pub lifetimes: [Histogram; 3],
    /// Failed `connect()`s per namespace, by [`FailReason`].
    pub failures: FxHashMap<u32, [u64; 4]>,
    /// TIME_WAIT entries per namespace.
    pub entered: FxHashMap<u32, u64>,
    /// TIME_WAIT exits per namespace, by [`ExitReason`].
    pub exited: FxHashMap<u32, [u64; 4]>,
}

impl Tally {
    /// Counters with the `labels` of closes kept, series for up to
    /// `processes` process names, each dropped after `idle_refreshes`
    /// refreshes without a close.
    pub fn new(labels: CloseLabels, processes: usize, idle_refreshes: u64) -> Tally {
        Tally {
            labels,
            admission: Admission {
                cap: processes,
                idle_refreshes,
                ..Admission::default()
            },
            closes: FxHashMap::default(),
            lifetimes: Default::default(),
            failures: FxHashMap::default(),
            entered: FxHashMap::default(),
            exited: FxHashMap::default(),
        }
    }

    pub fn close(&mut self, c: &Close) {
        let labels = self.labels;
        let process = if labels.comm {
            self.admission.label(c.owner.map(|o| o.comm))
        } else {
            Process::Omitted
        };
        let key = CloseKey {
            netns: labels.netns.then_some(c.id.netns),
            role: labels.role.then_some(c.role),
            closer: labels.closer.then_some(c.closer),
            kind: labels.kind.then_some(c.kind),
            process,
        };
        *self.closes.entry(key).or_default() += 1;
        if let Some(ns) = c.lifetime_ns {
            self.lifetimes[c.role as usize].observe(ns as f64 / 1e9);
        }
    }

    pub fn connect_failed(&mut self, netns: u32, reason: FailReason) {
        self.failures.entry(netns).or_default()[reason as usize] += 1;
    }

    pub fn tw_enter(&mut self, netns: u32) {
        *self.entered.entry(netns).or_default() += 1;
    }

    pub fn tw_exit(&mut self, netns: u32, reason: ExitReason) {
        self.exited.entry(netns).or_default()[reason as usize] += 1;
    }

    /// At each refresh: admits process names, and drops the series of
    /// those idle too long.
    pub fn refresh(&mut self) {
        let dropped = self.admission.refresh();
        if !dropped.is_empty() {
            self.closes.retain(
                |k, _| !matches!(k.process, Process::Named(comm) if dropped.contains(&comm)),
            );
        }
    }

    /// The namespaces that have series.
    pub fn namespaces(&self) -> impl Iterator<Item = u32> + '_ {
        self.closes
            .keys()
            .filter_map(|k| k.netns)
            .chain(self.failures.keys().copied())
            .chain(self.entered.keys().copied())
            .chain(self.exited.keys().copied())
    }

    /// Drops every series of namespace `netns` (gone for good).
    pub fn forget(&mut self, netns: u32) {
        self.closes.retain(|k, _| k.netns != Some(netns));
        self.failures.remove(&netns);
        self.entered.remove(&netns);
        self.exited.remove(&netns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sock::SockId,
        track::tracker::tests::{owner, tuple},
    };

    fn all_labels() -> CloseLabels {
        let all = CloseLabels::of(&CloseLabels::NAMES.map(String::from)).unwrap();
        assert_eq!(all, CloseLabels::ALL);
        all
    }

    fn close(netns: u32, comm: Option<&str>, lifetime_ms: u64) -> Close {
        Close {
            ts_ns: 0,
            skaddr: 1,
            id: SockId {
                netns,
                tuple: tuple(40000, 8080),
            },
            role: Role::Client,
            closer: Closer::Local,
            kind: CloseKind::Fin,
            time_wait: true,
            tw_refused: false,
            lifetime_ns: Some(lifetime_ms * 1_000_000),
            owner: comm.map(|name| crate::sock::Owner {
                comm: Comm::new(name),
                ..owner(1)
            }),
        }
    }

    fn by_process(t: &Tally) -> FxHashMap<Process, u64> {
        let mut out = FxHashMap::default();
        for (k, n) in &t.closes {
            *out.entry(k.process).or_default() += n;
        }
        out
    }

    #[test]
    fn the_most_active_processes_are_admitted_and_count_from_then_on() {
        let mut t = Tally::new(all_labels(), 2, 10);
        for (name, n) in [("curl", 5), ("wget", 3), ("nc", 1)] {
            for _ in 0..n {
                t.close(&close(1, Some(name), 2));
            }
        }
        t.close(&close(1, None, 2));
        // Before any refresh, every name is other.
        assert_eq!(by_process(&t)[&Process::Other], 9);
        t.refresh();
        t.close(&close(1, Some("curl"), 2));
        t.close(&close(1, Some("nc"), 2));
        let counts = by_process(&t);
        assert_eq!(counts[&Process::Named(Comm::new("curl"))], 1);
        assert_eq!(
            counts[&Process::Other],
            10,
            "nc is not admitted: two places"
        );
        assert_eq!(counts[&Process::Unknown], 1);
        assert!(!counts.contains_key(&Process::Named(Comm::new("wget"))));
    }

    #[test]
    fn idle_processes_lose_their_series_and_make_room() {
        let mut t = Tally::new(all_labels(), 1, 2);
        t.close(&close(1, Some("old"), 1));
        t.refresh();
        t.close(&close(1, Some("old"), 1));
        for _ in 0..3 {
            t.close(&close(1, Some("new"), 1));
            t.refresh();
        }
        let counts = by_process(&t);
        assert!(!counts.contains_key(&Process::Named(Comm::new("old"))));
        t.close(&close(1, Some("new"), 1));
        assert_eq!(by_process(&t)[&Process::Named(Comm::new("new"))], 1);
    }

    #[test]
    fn labels_left_out_are_summed_over() {
        let labels = CloseLabels::of(&["role".to_string()]).unwrap();
        let mut t = Tally::new(labels, 5, 10);
        t.close(&close(1, Some("a"), 1));
        t.close(&close(2, Some("b"), 1));
        assert_eq!(t.closes.len(), 1);
        let (key, n) = t.closes.iter().next().unwrap();
        assert_eq!((key.netns, key.process, *n), (None, Process::Omitted, 2));
        assert!(CloseLabels::of(&["pid".to_string()]).is_err());
    }

    #[test]
    fn lifetimes_fill_the_buckets_they_fit() {
        let mut t = Tally::new(all_labels(), 5, 10);
        for ms in [1, 3, 700, 4_000_000] {
            t.close(&close(1, None, ms));
        }
        let h = &t.lifetimes[Role::Client as usize];
        assert_eq!(h.count, 4);
        let buckets = h.buckets();
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[1], (0.005, 1));
        assert_eq!(buckets[5], (0.5, 0));
        assert_eq!(buckets[6], (1.0, 1));
        assert_eq!(buckets[12], (f64::INFINITY, 1), "beyond an hour: only +Inf");
        assert!((h.sum - 4000.704).abs() < 1e-6);
    }

    #[test]
    fn a_forgotten_namespace_has_no_series() {
        let mut t = Tally::new(all_labels(), 5, 10);
        t.close(&close(1, None, 1));
        t.close(&close(2, None, 1));
        t.connect_failed(2, FailReason::NoLocalPort);
        t.tw_enter(2);
        t.tw_exit(2, ExitReason::Expired);
        t.forget(2);
        let mut left: Vec<u32> = t.namespaces().collect();
        left.dedup();
        assert_eq!(left, [1]);
    }
}
