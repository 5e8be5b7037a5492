//! Ephemeral-port pressure: for client-role TIME_WAIT entries, per pool
//! (namespace, local address, remote address, remote port), how much of the
//! ephemeral port range TIME_WAIT and established sockets hold now, and the
//! steady state the current entry rate leads to (rate x TIME_WAIT length).

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::{timewait::Entry, tracker::Role};
use crate::{
    host::sockdiag::{KernelSocket, Listeners},
    sock::{Comm, SockId},
};

/// Connections to one remote endpoint from one local address share the
/// ephemeral port range.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PoolKey {
    pub netns: u32,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub rport: u16,
}

impl PoolKey {
    pub fn of(id: &SockId) -> PoolKey {
        PoolKey {
            netns: id.netns,
            laddr: id.tuple.laddr,
            raddr: id.tuple.raddr,
            rport: id.tuple.rport,
        }
    }
}

/// What bounds a namespace's pools: its own settings.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Limits {
    /// Ports `connect()` can pick: its `ip_local_port_range` without its
    /// `ip_local_reserved_ports`.
    pub range_size: u32,
    /// Its `net.ipv4.tcp_tw_reuse`: 0 off, 1 on, 2 loopback only.
    pub tw_reuse: u8,
    /// Its `net.ipv4.tcp_timestamps` are on: `tcp_tw_reuse` needs them.
    pub timestamps: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Pool {
    pub key: PoolKey,
    /// The ports its namespace's range offers `connect()` (reserved ones
    /// left out).
    pub range_size: u32,
    pub time_wait: u64,
    pub established: u64,
    /// Client-role TIME_WAIT entries per second, lately.
    pub rate: f64,
    /// (TIME_WAIT + established) / range size.
    pub used: f64,
    /// rate x TIME_WAIT length / range size.
    pub projected: f64,
    pub flagged: bool,
    /// `tcp_tw_reuse` lets connect() take over this pool's TIME_WAIT ports.
    pub reuse_applies: bool,
    /// Ports `connect()` can still get toward this destination: the
    /// usable ones not held by an established connection nor, unless reuse
    /// applies, by a TIME_WAIT socket. With reuse, `connect()` tries the
    /// ports of one parity first and takes TIME_WAIT ones over there, so
    /// TIME_WAIT levels off near half the range while ports are left.
    pub left: u64,
    /// Its failed `connect()`s, lately.
    pub failures: Failures,
    /// The process most of its sockets belong to, when known: the owners
    /// traced for its TIME_WAIT sockets and those holding its established
    /// ones.
    pub process: Option<Comm>,
}

/// Failed `connect()`s per second of one pool, lately.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Failures {
    /// For any reason.
    pub per_s: f64,
    /// Of them, for want of a free local port (`EADDRNOTAVAIL`): the pool
    /// is exhausted.
    pub no_local_port_per_s: f64,
}

/// What the computation needs besides the entries.
pub struct Inputs<'a> {
    pub established: &'a [KernelSocket],
    /// The process holding each established socket (by inode), where it
    /// was looked up.
    pub owners: &'a FxHashMap<u32, Comm>,
    pub listeners: &'a Listeners,
    /// Client-role TIME_WAIT entries per second, per pool, lately.
    pub rates: &'a FxHashMap<PoolKey, f64>,
    /// Failed `connect()`s per pool, lately.
    pub failures: &'a FxHashMap<PoolKey, Failures>,
    /// Each namespace's limits; a namespace missing here gets `fallback`.
    pub limits: &'a FxHashMap<u32, Limits>,
    pub fallback: Limits,
    pub tw_len_s: f64,
    pub threshold: f64,
}

/// Each pool's recent entry rate (client-role entries per second), from
/// the entry times alone: for a reading of the kernel's table, where the
/// entry time comes from the kernel's timer (an entry with 50 s left
/// entered 10 s ago). Entries of the last `window_ns` count, over the time
/// since the oldest of them (at least a second): a burst that began 10 s
/// ago is measured over those 10 s.
pub fn rates_from_ages<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    now_ns: u64,
    window_ns: u64,
) -> FxHashMap<PoolKey, f64> {
    let since = now_ns.saturating_sub(window_ns);
    let mut seen: FxHashMap<PoolKey, (u64, u64)> = FxHashMap::default();
    for e in entries.filter(|e| e.role == Role::Client && e.entered_ns >= since) {
        let (n, oldest) = seen.entry(PoolKey::of(&e.id)).or_insert((0, u64::MAX));
        *n += 1;
        *oldest = (*oldest).min(e.entered_ns);
    }
    seen.into_iter()
        .map(|(key, (n, oldest))| {
            let span_s = (now_ns.saturating_sub(oldest) as f64 / 1e9).max(1.0);
            (key, n as f64 / span_s)
        })
        .collect()
}

/// The pools, most pressed first, from the TIME_WAIT sockets (each one's
/// socket, role and owner's name when known).
pub fn pools<'a>(
    time_wait: impl Iterator<Item = (&'a SockId, Role, Option<Comm>)>,
    i: &Inputs<'_>,
) -> Vec<Pool> {
    let mut counts: FxHashMap<PoolKey, (u64, u64)> = FxHashMap::default();
    let mut processes: FxHashMap<PoolKey, FxHashMap<Comm, u64>> = FxHashMap::default();
    let mut count_process = |key: PoolKey, comm: Option<Comm>| {
        if let Some(comm) = comm {
            *processes.entry(key).or_default().entry(comm).or_default() += 1;
        }
    };
    for (id, _, comm) in time_wait.filter(|(_, role, _)| *role == Role::Client) {
        let key = PoolKey::of(id);
        counts.entry(key).or_default().0 += 1;
        count_process(key, comm);
    }
    for ks in i.established {
        if !i.listeners.contains_key(&(ks.id.netns, ks.id.tuple.lport)) {
            let key = PoolKey::of(&ks.id);
            counts.entry(key).or_default().1 += 1;
            count_process(key, i.owners.get(&ks.inode).copied());
        }
    }
    for key in i.rates.keys().chain(i.failures.keys()) {
        counts.entry(*key).or_default();
    }
    let mut pools: Vec<Pool> = counts
        .into_iter()
        .filter(|(key, (tw, _))| {
            *tw > 0 || i.rates.contains_key(key) || i.failures.contains_key(key)
        })
        .map(|(key, (time_wait, established))| {
            let limits = i.limits.get(&key.netns).copied().unwrap_or(i.fallback);
            let range = f64::from(limits.range_size.max(1));
            let rate = i.rates.get(&key).copied().unwrap_or(0.0);
            let used = (time_wait + established) as f64 / range;
            let projected = rate * i.tw_len_s / range;
            let failures = i.failures.get(&key).copied().unwrap_or_default();
            let reuse_applies = limits.timestamps
                && (limits.tw_reuse == 1 || (limits.tw_reuse == 2 && key.raddr.is_loopback()));
            let held = established + if reuse_applies { 0 } else { time_wait };
            Pool {
                key,
                range_size: limits.range_size,
                time_wait,
                established,
                rate,
                used,
                projected,
                flagged: used.max(projected) > i.threshold || failures.no_local_port_per_s > 0.0,
                reuse_applies,
                left: u64::from(limits.range_size).saturating_sub(held),
                failures,
                process: processes.get(&key).and_then(|by_comm| {
                    by_comm
                        .iter()
                        .max_by_key(|(comm, n)| (**n, std::cmp::Reverse(comm.0)))
                        .map(|(comm, _)| *comm)
                }),
            }
        })
        .collect();
    // Worst first: those out of ports now (connect() failing for want of
    // one, or none left), then by the larger of use and projection.
    let out_of_ports = |p: &Pool| p.failures.no_local_port_per_s > 0.0 || p.left == 0;
    pools.sort_by(|a, b| {
        out_of_ports(b)
            .cmp(&out_of_ports(a))
            .then_with(|| b.used.max(b.projected).total_cmp(&a.used.max(a.projected)))
    });
    pools
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sock::State,
        track::{
            timewait::{Source, TwOwner},
            tracker::{Closer, tests::tuple},
        },
    };

    /// What a pool computation without sockets, owners or failures
    /// borrows.
    #[derive(Default)]
    struct Nothing {
        owners: FxHashMap<u32, Comm>,
        listeners: Listeners,
        rates: FxHashMap<PoolKey, f64>,
        failures: FxHashMap<PoolKey, Failures>,
    }

    /// Inputs with only `limits` (others judged by the host's defaults)
    /// and `rates`.
    fn judged_by<'a>(
        limits: &'a FxHashMap<u32, Limits>,
        rates: &'a FxHashMap<PoolKey, f64>,
        none: &'a Nothing,
    ) -> Inputs<'a> {
        Inputs {
            established: &[],
            owners: &none.owners,
            listeners: &none.listeners,
            rates,
            failures: &none.failures,
            limits,
            fallback: Limits {
                range_size: 28232,
                tw_reuse: 2,
                timestamps: true,
            },
            tw_len_s: 60.0,
            threshold: 0.5,
        }
    }

    fn held(entries: &[Entry]) -> impl Iterator<Item = (&SockId, Role, Option<Comm>)> {
        entries
            .iter()
            .map(|e| (&e.id, e.role, e.owner.map(|o| o.comm)))
    }

    fn entry(lport: u16, rport: u16, role: Role) -> Entry {
        Entry::new_for_test(
            SockId {
                netns: 1,
                tuple: tuple(lport, rport),
            },
            role,
            Closer::Local,
            Source::Traced,
        )
    }

    #[test]
    fn arithmetic_of_a_pressed_pool() {
        let entries: Vec<Entry> = (0..14_000u16)
            .map(|i| entry(32768 + i, 8080, Role::Client))
            .chain([entry(80, 40000, Role::Server)])
            .collect();
        let established = vec![KernelSocket {
            id: SockId {
                netns: 1,
                tuple: tuple(50000, 8080),
            },
            state: State::ESTABLISHED,
            expires_ms: 0,
            inode: 9,
        }];
        let key = PoolKey::of(&SockId {
            netns: 1,
            tuple: tuple(0, 8080),
        });
        let rates = [(key, 500.0)].into_iter().collect();
        let (none, limits) = (Nothing::default(), FxHashMap::default());
        let inputs = Inputs {
            established: &established,
            ..judged_by(&limits, &rates, &none)
        };
        let pools = pools(held(&entries), &inputs);
        assert_eq!(pools.len(), 1, "server-role entries are not a client pool");
        let p = pools[0];
        assert_eq!((p.time_wait, p.established), (14_000, 1));
        assert_eq!(p.rate, 500.0);
        assert!((p.used - 14_001.0 / 28232.0).abs() < 1e-12);
        assert!((p.projected - 30_000.0 / 28232.0).abs() < 1e-12);
        assert!(p.flagged, "projection above the range");
        assert!(p.reuse_applies, "loopback peer with tcp_tw_reuse=2");
        // Reuse takes TIME_WAIT ports over: only the established one holds.
        assert_eq!(p.left, 28231);
        // Without timestamps tcp_tw_reuse does nothing.
        let no_timestamps = Inputs {
            fallback: Limits {
                timestamps: false,
                ..inputs.fallback
            },
            ..inputs
        };
        let p = super::pools(held(&entries), &no_timestamps)[0];
        assert!(!p.reuse_applies);
        assert_eq!(p.left, 28232 - 14_001);
        // No owner known: no process; the established socket's owner names
        // the pool when it is the only one known.
        assert_eq!(p.process, None);
        let owners = [(9, Comm::new("wget"))].into_iter().collect();
        let with_owner = Inputs {
            owners: &owners,
            ..inputs
        };
        let p = super::pools(held(&entries), &with_owner)[0];
        assert_eq!(p.process, Some(Comm::new("wget")));
        // The owners of its TIME_WAIT sockets outnumber it.
        let mut traced = entries.clone();
        for e in traced.iter_mut().take(2) {
            e.owner = Some(TwOwner {
                pid: 7,
                comm: Comm::new("curl"),
            });
        }
        let p = super::pools(held(&traced), &with_owner)[0];
        assert_eq!(p.process, Some(Comm::new("curl")));
    }

    #[test]
    fn quiet_pools_are_not_flagged() {
        let entries = [entry(40000, 443, Role::Client)];
        let inputs = Inputs {
            established: &[],
            owners: &FxHashMap::default(),
            listeners: &Listeners::default(),
            rates: &FxHashMap::default(),
            failures: &FxHashMap::default(),
            limits: &FxHashMap::default(),
            fallback: Limits {
                range_size: 28232,
                tw_reuse: 0,
                timestamps: true,
            },
            tw_len_s: 60.0,
            threshold: 0.5,
        };
        let p = pools(held(&entries), &inputs)[0];
        assert!(!p.flagged && !p.reuse_applies);
        assert_eq!(p.rate, 0.0);
        // Refused connects are no pressure; failures for want of a port
        // flag the pool whatever its figures, and list it even with no
        // TIME_WAIT.
        let refused = Failures {
            per_s: 2.0,
            no_local_port_per_s: 0.0,
        };
        let exhausted = Failures {
            per_s: 3.0,
            no_local_port_per_s: 1.0,
        };
        let key = PoolKey::of(&entries[0].id);
        let other = PoolKey { rport: 80, ..key };
        let failures = [(key, refused), (other, exhausted)].into_iter().collect();
        let pools = pools(
            held(&entries),
            &Inputs {
                failures: &failures,
                ..inputs
            },
        );
        let of = |k: PoolKey| pools.iter().find(|p| p.key == k).unwrap();
        assert!(!of(key).flagged);
        assert_eq!(of(key).failures, refused);
        assert!(of(other).flagged);
        assert_eq!(of(other).time_wait, 0);
    }

    #[test]
    fn entry_times_give_the_rate() {
        let now = 100_000_000_000;
        // Ten a second for the last 20 s, and older ones out of the window.
        let entries: Vec<Entry> = (0..260u16)
            .map(|i| {
                let mut e = entry(40000 + i, 8080, Role::Client);
                e.entered_ns = now - 50_000_000 - u64::from(i) * 100_000_000;
                if i >= 200 {
                    e.entered_ns = now - 55_000_000_000;
                }
                e
            })
            .collect();
        let rates = rates_from_ages(entries.iter(), now, 50_000_000_000);
        let rate = rates.values().copied().next().unwrap();
        assert!((rate - 10.0).abs() < 0.1, "{rate}");
    }

    /// A namespace is judged by its own range and `tcp_tw_reuse`, not by
    /// the host's.
    #[test]
    fn each_namespace_has_its_own_limits() {
        let entries: Vec<Entry> = (0..700u16)
            .map(|i| entry(40000 + i, 8080, Role::Client))
            .collect();
        let limits = [(
            1,
            Limits {
                range_size: 1000,
                tw_reuse: 0,
                timestamps: true,
            },
        )]
        .into_iter()
        .collect();
        let none = Nothing::default();
        let inputs = judged_by(&limits, &none.rates, &none);
        let p = pools(held(&entries), &inputs)[0];
        assert_eq!(p.range_size, 1000);
        assert!((p.used - 0.7).abs() < 1e-12);
        assert!(p.flagged, "700 of 1,000 ports");
        assert!(!p.reuse_applies, "tcp_tw_reuse 0 in that namespace");
        assert_eq!(p.left, 300);
    }

    /// A pool out of ports comes first, even when another one's projection
    /// (its entry rate against its range) is higher: its rate is nil once
    /// connect() fails.
    #[test]
    fn a_pool_out_of_ports_is_the_worst() {
        let mut entries: Vec<Entry> = (0..100u16)
            .map(|i| entry(40000 + i, 8080, Role::Client))
            .collect();
        entries.extend((0..10u16).map(|i| entry(50000 + i, 9090, Role::Client)));
        let limits = [(
            1,
            Limits {
                range_size: 100,
                tw_reuse: 0,
                timestamps: true,
            },
        )]
        .into_iter()
        .collect();
        let busy = PoolKey::of(&entries[100].id);
        let rates = [(busy, 10.0)].into_iter().collect();
        let none = Nothing::default();
        let found = pools(held(&entries), &judged_by(&limits, &rates, &none));
        assert_eq!(found[0].key.rport, 8080, "none left");
        assert_eq!(found[0].left, 0);
        assert_eq!(found[1].key.rport, 9090);
        assert!(found[1].projected > found[0].used.max(found[0].projected));
    }
}
