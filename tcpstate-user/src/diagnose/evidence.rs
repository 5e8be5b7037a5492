//! What a diagnosis rests on: the closes and failed `connect()`s and
//! `bind()`s seen over
//! a window, and the state at its end (TIME_WAIT and established sockets,
//! each namespace's settings). Gathered the same way live and from a
//! recording.

use rustc_hash::FxHashMap;

use crate::{
    host::{
        sockdiag::{KernelSocket, Listeners},
        sysctl::Facts,
    },
    sock::{Owner, SockId},
    track::{
        pressure::PoolKey,
        tracker::{BindFailure, Close, CloseKind, Closer, ConnectFailure, Role},
    },
};

/// The gap when failed `bind()`s were not traced.
pub const BINDS_UNTRACED: &str = "failed bind() calls were not traced (the kernel has no \
     syscalls:sys_exit_bind tracepoint): EADDRINUSE at bind() cannot be found";

/// Lifetimes kept per group, for the median: the first ones seen.
const LIFETIME_SAMPLES: usize = 4096;
/// Seconds of TIME_WAIT history kept per holder.
const TIMELINE_SECONDS: usize = 3600;
/// Holders whose TIME_WAIT history is kept (the first ones seen).
const TIMELINE_HOLDERS: usize = 1000;

/// One network namespace, as last read inside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    /// Its `ip netns` name, or `host`.
    pub name: Option<String>,
    /// Its settings; `None` when they were never read.
    pub facts: Option<Facts>,
}

/// The closes of one group of connections (a service or a destination).
#[derive(Clone, Debug, Default)]
pub struct Closes {
    pub n: u64,
    /// By [`Closer`] (local, remote, simultaneous, unknown).
    pub by_closer: [u64; 4],
    /// By [`CloseKind`] (fin, rst_sent, rst_received, abort, unknown).
    pub by_kind: [u64; 5],
    /// Of them, this end entered TIME_WAIT.
    pub time_wait: u64,
    /// Of them, the kernel refused this end a TIME_WAIT socket.
    pub tw_refused: u64,
    lifetimes_ms: Vec<f64>,
    /// Closes per owner process name.
    pub processes: FxHashMap<String, u64>,
}

impl Closes {
    fn add(&mut self, c: &Close) {
        self.n += 1;
        self.by_closer[c.closer as usize] += 1;
        self.by_kind[c.kind as usize] += 1;
        self.time_wait += u64::from(c.time_wait);
        self.tw_refused += u64::from(c.tw_refused);
        if let Some(ns) = c.lifetime_ns
            && self.lifetimes_ms.len() < LIFETIME_SAMPLES
        {
            self.lifetimes_ms.push(ns as f64 / 1e6);
        }
        count_process(&mut self.processes, c.owner.as_ref());
    }

    /// The share of closes whose first FIN (or RST) this end sent.
    pub fn local_share(&self) -> f64 {
        share(self.by_closer[Closer::Local as usize], self.n)
    }

    /// The share of closes by an RST, either way.
    pub fn rst_share(&self) -> f64 {
        let rst = self.by_kind[CloseKind::RstSent as usize]
            + self.by_kind[CloseKind::RstReceived as usize];
        share(rst, self.n)
    }

    /// The lifetimes kept (the first [`LIFETIME_SAMPLES`]), in ms.
    pub fn lifetimes_ms(&self) -> &[f64] {
        &self.lifetimes_ms
    }

    /// The median connection lifetime, when one was seen.
    pub fn median_lifetime_ms(&self) -> Option<f64> {
        let mut sorted = self.lifetimes_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied()
    }
}

/// Failed `connect()`s toward one destination.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    /// By [`FailReason`](crate::track::tracker::FailReason): no local
    /// port, refused, timeout, other.
    pub by_reason: [u64; 4],
    pub processes: FxHashMap<String, u64>,
}

impl Failures {
    pub fn total(&self) -> u64 {
        self.by_reason.iter().sum()
    }
}

/// Failed `bind()`s to one local port of one namespace.
#[derive(Clone, Debug, Default)]
pub struct Binds {
    pub n: u64,
    /// Of them, on a socket without `SO_REUSEADDR`.
    pub without_reuseaddr: u64,
    /// The most TIME_WAIT sockets on the port at a failure, when known.
    pub time_wait_on_port: Option<usize>,
    /// The address asked for in the latest failure.
    pub laddr: Option<std::net::IpAddr>,
    pub processes: FxHashMap<String, u64>,
}

/// The closes of one process in one namespace, for its resets.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessCloses {
    pub n: u64,
    pub rst_sent: u64,
    pub rst_received: u64,
}

/// Who holds a TIME_WAIT socket: a client's pool, or a server's port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Holder {
    Pool(PoolKey),
    /// (namespace, local port).
    Service(u32, u16),
}

impl Holder {
    pub fn of(id: &SockId, role: Role) -> Option<Holder> {
        match role {
            Role::Client => Some(Holder::Pool(PoolKey::of(id))),
            Role::Server => Some(Holder::Service(id.netns, id.tuple.lport)),
            Role::Unknown => None,
        }
    }
}

/// TIME_WAIT sockets over the window, per holder: the count at its start
/// and the net change in each second.
#[derive(Debug, Default)]
pub struct Timeline {
    start: FxHashMap<Holder, i64>,
    changes: FxHashMap<Holder, Vec<i64>>,
}

impl Timeline {
    /// A TIME_WAIT socket there when the window began.
    pub fn at_start(&mut self, id: &SockId, role: Role) {
        if let Some(h) = Holder::of(id, role) {
            *self.start.entry(h).or_default() += 1;
        }
    }

    /// One entering (`delta` 1) or leaving (-1) `at_s` seconds into the
    /// window.
    pub fn change(&mut self, at_s: f64, id: &SockId, role: Role, delta: i64) {
        let Some(h) = Holder::of(id, role) else {
            return;
        };
        let second = (at_s.max(0.0) as usize).min(TIMELINE_SECONDS - 1);
        let full = self.changes.len() >= TIMELINE_HOLDERS;
        if full && !self.changes.contains_key(&h) {
            return;
        }
        let slots = self.changes.entry(h).or_default();
        if slots.len() <= second {
            slots.resize(second + 1, 0);
        }
        slots[second] += delta;
    }

    /// The holder's count at the end of each of `seconds` seconds.
    pub fn series(&self, h: Holder, seconds: usize) -> Vec<(f64, f64)> {
        let mut n = self.start.get(&h).copied().unwrap_or(0);
        let changes = self.changes.get(&h).map_or(&[][..], Vec::as_slice);
        (0..seconds.min(TIMELINE_SECONDS))
            .map(|s| {
                n += changes.get(s).copied().unwrap_or(0);
                ((s + 1) as f64, n.max(0) as f64)
            })
            .collect()
    }
}

/// Everything a diagnosis looks at.
#[derive(Debug, Default)]
pub struct Evidence {
    /// How long closes and failures were observed.
    pub window_s: f64,
    /// The TIME_WAIT length the figures assume.
    pub tw_len_s: f64,
    pub namespaces: FxHashMap<u32, Namespace>,
    /// tcpstate's own namespace: its settings judge namespaces never read.
    pub own_netns: Option<u32>,
    /// The TIME_WAIT sockets at the end: each one's socket and role.
    pub time_wait: Vec<(SockId, Role)>,
    /// Established sockets at the end (none in a recording).
    pub established: Vec<KernelSocket>,
    pub listeners: Listeners,
    /// Server-role closes by (namespace, local port).
    pub services: FxHashMap<(u32, u16), Closes>,
    /// Client-role closes by pool (namespace, local address, destination).
    pub destinations: FxHashMap<PoolKey, Closes>,
    pub failures: FxHashMap<PoolKey, Failures>,
    /// Failed `bind()`s by (namespace, local port).
    pub binds: FxHashMap<(u32, u16), Binds>,
    /// Closes by (namespace, process name).
    pub processes: FxHashMap<(u32, String), ProcessCloses>,
    /// Events lost while observing.
    pub lost: u64,
    /// What the evidence lacks, in words (e.g. a recording without the
    /// host's settings).
    pub gaps: Vec<String>,
    /// TIME_WAIT over the window, for the report's charts.
    pub timeline: Timeline,
}

impl Evidence {
    pub fn close(&mut self, c: &Close) {
        match c.role {
            Role::Server => self
                .services
                .entry((c.id.netns, c.id.tuple.lport))
                .or_default()
                .add(c),
            Role::Client => self
                .destinations
                .entry(PoolKey::of(&c.id))
                .or_default()
                .add(c),
            Role::Unknown => {}
        }
        let name = process_name(c.owner.as_ref());
        let p = self.processes.entry((c.id.netns, name)).or_default();
        p.n += 1;
        p.rst_sent += u64::from(c.kind == CloseKind::RstSent);
        p.rst_received += u64::from(c.kind == CloseKind::RstReceived);
    }

    pub fn connect_failed(&mut self, f: &ConnectFailure) {
        let failures = self.failures.entry(PoolKey::of(&f.id)).or_default();
        failures.by_reason[f.reason as usize] += 1;
        count_process(&mut failures.processes, f.owner.as_ref());
    }

    pub fn bind_failed(&mut self, b: &BindFailure) {
        let binds = self
            .binds
            .entry((b.id.netns, b.id.tuple.lport))
            .or_default();
        binds.n += 1;
        binds.without_reuseaddr += u64::from(!b.reuseaddr);
        binds.time_wait_on_port = binds.time_wait_on_port.max(b.time_wait_on_port);
        binds.laddr = Some(b.id.tuple.laddr);
        count_process(&mut binds.processes, b.owner.as_ref());
    }

    /// Namespace `netns`'s settings, else tcpstate's own.
    pub fn facts_of(&self, netns: u32) -> Option<Facts> {
        let own = || {
            self.own_netns
                .and_then(|own| self.namespaces.get(&own)?.facts)
        };
        self.namespaces
            .get(&netns)
            .and_then(|n| n.facts)
            .or_else(own)
    }

    /// How namespace `netns` is named: its name, else `net:[inode]`.
    pub fn label_of(&self, netns: u32) -> String {
        match self.namespaces.get(&netns).and_then(|n| n.name.clone()) {
            Some(name) => name,
            None => format!("net:[{netns}]"),
        }
    }

    /// Per second of the window.
    pub fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.window_s.max(1e-3)
    }

    /// TIME_WAIT sockets at the end in namespace `netns`.
    pub fn time_wait_in(&self, netns: u32) -> u64 {
        self.time_wait
            .iter()
            .filter(|(id, _)| id.netns == netns)
            .count() as u64
    }
}

/// How a process is named in findings.
pub fn process_name(owner: Option<&Owner>) -> String {
    owner.map_or_else(|| "unknown".to_string(), |o| o.comm.as_str().into_owned())
}

fn count_process(counts: &mut FxHashMap<String, u64>, owner: Option<&Owner>) {
    if owner.is_some() {
        *counts.entry(process_name(owner)).or_default() += 1;
    }
}

/// `part / whole`, 0 for an empty whole.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The names with the most counts, most first (at most `n`).
pub fn top(counts: &FxHashMap<String, u64>, n: usize) -> Vec<String> {
    let mut all: Vec<(&String, &u64)> = counts.iter().collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    all.into_iter()
        .take(n)
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::tracker::tests::{owner, tuple};

    fn close(role: Role, closer: Closer, kind: CloseKind, lifetime_ms: u64) -> Close {
        Close {
            ts_ns: 0,
            skaddr: 1,
            id: SockId {
                netns: 7,
                tuple: tuple(40000, 8080),
            },
            role,
            closer,
            kind,
            time_wait: closer == Closer::Local,
            tw_refused: false,
            lifetime_ns: Some(lifetime_ms * 1_000_000),
            owner: Some(owner(42)),
        }
    }

    #[test]
    fn closes_are_grouped_by_role_and_counted_by_closer_and_kind() {
        let mut ev = Evidence::default();
        for ms in [1, 2, 3] {
            ev.close(&close(Role::Client, Closer::Local, CloseKind::Fin, ms));
        }
        ev.close(&close(
            Role::Client,
            Closer::Remote,
            CloseKind::RstReceived,
            100,
        ));
        ev.close(&close(Role::Server, Closer::Local, CloseKind::Fin, 5));
        ev.close(&close(Role::Unknown, Closer::Local, CloseKind::Fin, 5));
        let dest = ev.destinations.values().next().unwrap();
        assert_eq!(dest.n, 4);
        assert_eq!(dest.time_wait, 3);
        assert_eq!(dest.local_share(), 0.75);
        assert_eq!(dest.rst_share(), 0.25);
        assert_eq!(dest.median_lifetime_ms(), Some(3.0));
        assert_eq!(ev.services[&(7, 40000)].n, 1);
        let p = ev.processes.values().next().unwrap();
        assert_eq!((p.n, p.rst_received), (6, 1));
    }

    #[test]
    fn a_timeline_counts_from_the_start_second_by_second() {
        let c = close(Role::Client, Closer::Local, CloseKind::Fin, 1);
        let mut t = Timeline::default();
        t.at_start(&c.id, Role::Client);
        t.change(0.5, &c.id, Role::Client, 1);
        t.change(2.2, &c.id, Role::Client, 1);
        t.change(2.9, &c.id, Role::Client, -1);
        t.change(3.0, &c.id, Role::Unknown, 1);
        let h = Holder::of(&c.id, Role::Client).unwrap();
        assert_eq!(
            t.series(h, 4),
            [(1.0, 2.0), (2.0, 2.0), (3.0, 2.0), (4.0, 2.0)]
        );
        t.change(3.5, &c.id, Role::Client, 1);
        assert_eq!(t.series(h, 4)[3], (4.0, 3.0));
    }

    #[test]
    fn a_namespace_never_read_is_judged_by_the_own_one() {
        let own = Facts {
            max_tw_buckets: 5,
            ..Facts::default()
        };
        let mut ev = Evidence {
            own_netns: Some(1),
            ..Evidence::default()
        };
        ev.namespaces.insert(
            1,
            Namespace {
                name: Some("host".into()),
                facts: Some(own),
            },
        );
        assert_eq!(ev.facts_of(2), Some(own));
        assert_eq!(ev.label_of(1), "host");
        assert_eq!(ev.label_of(2), "net:[2]");
    }
}
