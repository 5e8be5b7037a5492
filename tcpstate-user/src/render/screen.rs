//! The `timewait` screen: a header with totals, kernel agreement and the
//! host's limits, the ephemeral-port pools, then the entries grouped (or
//! one per line). Pure: it lays out a [`Frame`] and nothing else.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    Frame, NsFigures, endpoint,
    escape::{escape, escape_str, fit},
    time::ms,
};
use crate::{
    cli::GroupBy,
    track::{
        timewait::{Entry, ExitReason},
        tracker::{Closer, FailReason, Role},
    },
};

/// Rows of grouped entries shown at most.
const MAX_GROUPS: usize = 40;
/// Pools shown at most.
const MAX_POOLS: usize = 10;
/// Namespaces whose limits are shown at most.
const MAX_NAMESPACES: usize = 8;

/// The whole screen, as text.
pub fn render(f: &Frame<'_>) -> String {
    let mut out = String::new();
    header(&mut out, f);
    pools(&mut out, f);
    out.push('\n');
    if f.group_by == GroupBy::None {
        entries(&mut out, f);
    } else {
        groups(&mut out, f);
    }
    out
}

fn count(f: &Frame<'_>, p: impl Fn(&Entry) -> bool) -> usize {
    f.entries.iter().filter(|e| p(e)).count()
}

fn header(out: &mut String, f: &Frame<'_>) {
    let stats = &f.stats;
    let _ = writeln!(
        out,
        "TIME_WAIT {}  (server {}, client {}, unknown {}; closed first by this end {}, simultaneously {}, unknown {})",
        f.entries.len(),
        count(f, |e| e.role == Role::Server),
        count(f, |e| e.role == Role::Client),
        count(f, |e| e.role == Role::Unknown),
        count(f, |e| e.closer == Closer::Local),
        count(f, |e| e.closer == Closer::Simultaneous),
        count(f, |e| e.closer == Closer::Unknown
            || e.closer == Closer::Remote),
    );
    match f.rates {
        Some(rates) => {
            let _ = writeln!(
                out,
                "entered {:.1}/s  exited {:.1}/s  (exits so far: expired {}, reused {}, gone {}{})",
                rates.entered_per_s,
                rates.exited_per_s,
                stats.exited(ExitReason::Expired),
                stats.exited(ExitReason::Reused),
                stats.exited(ExitReason::Gone),
                match stats.exited(ExitReason::Overflow) {
                    0 => String::new(),
                    n => format!(", refused by the kernel {n}"),
                }
            );
            if let Some(failed) = f.connect_failed.filter(|n| n.iter().sum::<u64>() > 0) {
                let by_reason: Vec<String> = FailReason::ALL
                    .iter()
                    .zip(failed)
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| format!("{} {n}", r.as_str()))
                    .collect();
                let _ = writeln!(
                    out,
                    "connect() failed {} times so far: {}",
                    failed.iter().sum::<u64>(),
                    by_reason.join(", ")
                );
            }
            let _ = writeln!(
                out,
                "kernel agreement: {} reconciliations, {} missed by tracing, {} vanished early; \
                 lost events {}; table cap drops {}{}",
                f.reconciliations,
                stats.missed,
                stats.exited(ExitReason::Gone),
                f.lost,
                stats.dropped,
                if f.filtered {
                    " (lost and cap drops: host-wide, not filtered)"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(
                out,
                "one reading of the kernel's socket table, no tracing: roles from listening ports \
                 and each namespace's ephemeral range, closers local (the end in TIME_WAIT \
                 closed first, or both did), rates from the kernel's timers; table cap drops {}",
                stats.dropped
            );
        }
    }
    for ns in f.namespaces.iter().take(MAX_NAMESPACES) {
        let prefix = if f.many_namespaces() {
            format!("{}: ", fit(&escape_str(&ns.label()), 40))
        } else {
            String::new()
        };
        let _ = writeln!(out, "{prefix}{}", limits(ns));
    }
    if f.namespaces.len() > MAX_NAMESPACES {
        let _ = writeln!(
            out,
            "... and {} more namespaces",
            f.namespaces.len() - MAX_NAMESPACES
        );
    }
}

/// A namespace's limits, as its own settings and counters say.
fn limits(ns: &NsFigures) -> String {
    let Some(facts) = &ns.facts else {
        return format!(
            "TIME_WAIT {}; its settings were not read (reconciliation is off)",
            ns.time_wait
        );
    };
    let refused = match ns.tw_refused {
        Some(n) if n > 0 => format!(" ({n} while traced)"),
        _ => String::new(),
    };
    format!(
        "tcp_max_tw_buckets {} (headroom {}), TCPTimeWaitOverflow {}{refused}, ip_local_port_range {}-{} ({} ports{}), tcp_tw_reuse {}{}, TWRecycled {}, TWKilled {}",
        facts.max_tw_buckets,
        ns.headroom().unwrap_or_default(),
        facts.tw_overflow,
        facts.port_range.0,
        facts.port_range.1,
        facts.usable_ports(),
        match facts.reserved {
            0 => String::new(),
            n => format!(", {n} reserved"),
        },
        match facts.tw_reuse {
            0 => "0 (off)",
            1 => "1 (on)",
            _ => "2 (loopback only)",
        },
        if facts.timestamps == 0 && facts.tw_reuse != 0 {
            " (no effect: tcp_timestamps 0)"
        } else {
            ""
        },
        facts.tw_recycled,
        facts.tw_killed
    )
}

fn pools(out: &mut String, f: &Frame<'_>) {
    if f.pools.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<48} {:>9} {:>6} {:>6} {:>7} {:>9} {:>10} {:>7}",
        "EPHEMERAL PORT POOL (local -> remote)",
        "TIME_WAIT",
        "ESTAB",
        "LEFT",
        "USED",
        "RATE/s",
        "PROJECTED",
        "FAIL/s"
    );
    for p in f.pools.iter().take(MAX_POOLS) {
        let pool = format!("{} -> {}", p.key.laddr, endpoint(p.key.raddr, p.key.rport));
        let pool = if f.many_namespaces() {
            format!("{}: {pool}", escape_str(&f.label_of(p.key.netns)))
        } else {
            pool
        };
        let _ = writeln!(
            out,
            "{:<48} {:>9} {:>6} {:>6} {:>6.1}% {:>9.1} {:>9.1}% {:>7.1}{}{}",
            fit(&pool, 48),
            p.time_wait,
            p.established,
            p.left,
            p.used * 100.0,
            p.rate,
            p.projected * 100.0,
            p.failures.per_s,
            match (
                p.flagged,
                p.failures.no_local_port_per_s > 0.0,
                p.reuse_applies
            ) {
                (_, true, true) => "  EXHAUSTED: no free port (tcp_tw_reuse applies)",
                (_, true, false) => "  EXHAUSTED: no free port (tcp_tw_reuse does not apply)",
                (true, _, true) => "  HIGH (tcp_tw_reuse applies)",
                (true, _, false) => "  HIGH (tcp_tw_reuse does not apply)",
                _ => "",
            },
            p.process
                .map_or(String::new(), |c| format!("  by {}", escape(c.bytes())))
        );
    }
}

/// One line per entry, soonest expiry first.
fn entries(out: &mut String, f: &Frame<'_>) {
    let _ = writeln!(
        out,
        "{:<30} {:<30} {:<7} {:<12} {:>8} {:<16} {:>8} {:<6}",
        "LOCAL", "REMOTE", "ROLE", "CLOSER", "PID", "COMM", "LEFT(s)", "SOURCE"
    );
    let mut entries = f.entries.clone();
    entries.sort_by_key(|e| e.expires_ns);
    for e in entries {
        let t = &e.id.tuple;
        let _ = writeln!(
            out,
            "{:<30} {:<30} {:<7} {:<12} {:>8} {:<16} {:>8.1} {:<6}",
            endpoint(t.laddr, t.lport),
            endpoint(t.raddr, t.rport),
            e.role.as_str(),
            e.closer.as_str(),
            e.owner.map_or("-".into(), |o| o.pid.to_string()),
            e.owner
                .map_or("-".into(), |o| fit(&escape(o.comm.bytes()), 16)
                    .into_owned()),
            ms(e.expires_ns.saturating_sub(f.now_ns)) / 1000.0,
            e.source.as_str(),
        );
    }
}

/// Entries grouped by peer, local port or process, largest group first.
fn groups(out: &mut String, f: &Frame<'_>) {
    #[derive(Default)]
    struct Group {
        count: usize,
        server: usize,
        client: usize,
        min_left_ns: u64,
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for e in &f.entries {
        let t = &e.id.tuple;
        let name = match f.group_by {
            // A server's peers come from ephemeral ports: group them by
            // client address and the service's port.
            GroupBy::Peer if e.role == Role::Server => {
                format!("{} (clients of :{})", t.raddr, t.lport)
            }
            GroupBy::Peer => endpoint(t.raddr, t.rport),
            GroupBy::Lport => t.lport.to_string(),
            GroupBy::Process | GroupBy::None => e.owner.map_or("(unknown)".into(), |o| {
                format!("{} {}", o.pid, escape(o.comm.bytes()))
            }),
        };
        let g = groups.entry(name).or_insert(Group {
            min_left_ns: u64::MAX,
            ..Group::default()
        });
        g.count += 1;
        g.server += usize::from(e.role == Role::Server);
        g.client += usize::from(e.role == Role::Client);
        g.min_left_ns = g.min_left_ns.min(e.expires_ns.saturating_sub(f.now_ns));
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
    let title = match f.group_by {
        GroupBy::Peer => "PEER",
        GroupBy::Lport => "LOCAL PORT",
        GroupBy::Process | GroupBy::None => "PROCESS",
    };
    let _ = writeln!(
        out,
        "{:<48} {:>9} {:>8} {:>8} {:>14}",
        title, "TIME_WAIT", "SERVER", "CLIENT", "OLDEST LEFT(s)"
    );
    for (name, g) in rows.iter().take(MAX_GROUPS) {
        let _ = writeln!(
            out,
            "{:<48} {:>9} {:>8} {:>8} {:>14.1}",
            fit(name, 48),
            g.count,
            g.server,
            g.client,
            ms(g.min_left_ns) / 1000.0
        );
    }
    if rows.len() > MAX_GROUPS {
        let _ = writeln!(out, "... and {} more", rows.len() - MAX_GROUPS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        host::sysctl::Facts,
        render::{NsFigures, Rates},
        sock::{Comm, SockId},
        track::{
            pressure::{Failures, Pool, PoolKey},
            timewait::{Source, TwOwner, TwStats},
            tracker::tests::tuple,
        },
    };

    const NOW: u64 = 100_000_000_000;

    fn entry(lport: u16, rport: u16, role: Role, comm: &[u8]) -> Entry {
        let id = SockId {
            netns: 1,
            tuple: tuple(lport, rport),
        };
        let mut e = Entry::new_for_test(id, role, Closer::Local, Source::Traced);
        e.expires_ns = NOW + 42_000_000_000;
        let mut name = [0u8; 16];
        name[..comm.len()].copy_from_slice(comm);
        e.owner = Some(TwOwner {
            pid: 77,
            comm: Comm(name),
        });
        e
    }

    fn frame<'a>(entries: &'a [Entry], group_by: GroupBy, live: bool) -> Frame<'a> {
        Frame {
            now_ns: NOW,
            entries: entries.iter().collect(),
            pools: vec![Pool {
                key: PoolKey::of(&SockId {
                    netns: 1,
                    tuple: tuple(40000, 8080),
                }),
                range_size: 28232,
                time_wait: 2,
                established: 1,
                rate: 1000.0,
                used: 0.6,
                projected: 2.125,
                flagged: true,
                reuse_applies: false,
                left: 28229,
                failures: Failures {
                    per_s: 2.0,
                    no_local_port_per_s: 0.0,
                },
                process: Some(Comm::new("curl")),
            }],
            namespaces: vec![NsFigures {
                netns: 1,
                name: Some("host".into()),
                workload: None,
                facts: Some(Facts {
                    reserved: 0,
                    timestamps: 1,
                    tw_recycled: 12,
                    tw_killed: 0,
                    port_range: (32768, 60999),
                    tw_reuse: 0,
                    max_tw_buckets: 131072,
                    tw_overflow: 3,
                    fin_timeout: 60,
                }),
                time_wait: 3,
                tw_refused: Some(0),
            }],
            stats: TwStats::default(),
            reconciliations: 4,
            lost: 0,
            rates: live.then_some(Rates {
                entered_per_s: 12.5,
                exited_per_s: 1.0,
            }),
            connect_failed: None,
            group_by,
            filtered: false,
            findings: Vec::new(),
        }
    }

    fn entries() -> Vec<Entry> {
        vec![
            entry(40000, 8080, Role::Client, b"curl"),
            entry(40001, 8080, Role::Client, b"curl"),
            entry(80, 50000, Role::Server, b"a\x1b[2J\nFAKE"),
        ]
    }

    #[test]
    fn header_pools_and_groups() {
        let entries = entries();
        let text = render(&frame(&entries, GroupBy::Peer, true));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "TIME_WAIT 3  (server 1, client 2, unknown 0; closed first by this end 3, \
             simultaneously 0, unknown 0)"
        );
        assert!(
            lines[1].starts_with("entered 12.5/s  exited 1.0/s"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("kernel agreement: 4 reconciliations"),
            "{text}"
        );
        assert!(lines[3].contains("headroom 131069") && lines[3].contains("28232 ports"));
        assert!(
            lines[3].ends_with("tcp_tw_reuse 0 (off), TWRecycled 12, TWKilled 0"),
            "{text}"
        );
        assert!(text.contains("     1  28229   60.0%"), "{text}");
        assert!(
            text.contains("127.0.0.1 -> 127.0.0.1:8080")
                && text.contains("212.5%     2.0  HIGH (tcp_tw_reuse does not apply)  by curl"),
            "{text}"
        );
        let peer = lines.iter().position(|l| l.starts_with("PEER")).unwrap();
        assert!(lines[peer + 1].starts_with("127.0.0.1:8080 "), "{text}");
        assert!(lines[peer + 1].contains(" 2 "), "{text}");
        assert!(
            lines[peer + 2].starts_with("127.0.0.1 (clients of :80)"),
            "{text}"
        );
        assert!(lines[peer + 2].ends_with("42.0"), "{text}");

        // Failed connects: counted by reason; a pool without free ports
        // says so.
        let mut f = frame(&entries, GroupBy::Peer, true);
        f.connect_failed = Some([3, 1, 0, 0]);
        f.pools[0].failures.no_local_port_per_s = 1.5;
        let text = render(&f);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "connect() failed 4 times so far: no_local_port 3, refused 1"
        );
        assert!(
            text.contains("2.0  EXHAUSTED: no free port (tcp_tw_reuse does not apply)"),
            "{text}"
        );
    }

    /// Two namespaces with the same 4-tuples: separate rows, each named,
    /// each with its own limits.
    #[test]
    fn namespaces_are_named_with_their_own_limits() {
        let entries = entries();
        let mut f = frame(&entries, GroupBy::Peer, true);
        let mut pod = f.namespaces[0].clone();
        pod.netns = 2;
        pod.name = None;
        pod.facts.as_mut().unwrap().port_range = (40000, 40999);
        pod.facts.as_mut().unwrap().max_tw_buckets = 100;
        pod.time_wait = 90;
        pod.tw_refused = Some(7);
        f.namespaces.push(pod);
        let mut other = f.pools[0];
        other.key.netns = 2;
        other.range_size = 1000;
        f.pools.push(other);
        let text = render(&f);
        assert!(
            text.contains("host: tcp_max_tw_buckets 131072 (headroom 131069)"),
            "{text}"
        );
        assert!(
            text.contains("TCPTimeWaitOverflow 3 (7 while traced), ip_local_port_range 40000"),
            "{text}"
        );
        assert!(
            text.contains("net:[2]: tcp_max_tw_buckets 100 (headroom 10)")
                && text.contains("40000-40999 (1000 ports)"),
            "{text}"
        );
        assert!(
            text.contains("\nhost: 127.0.0.1 -> 127.0.0.1:8080"),
            "{text}"
        );
        assert!(
            text.contains("\nnet:[2]: 127.0.0.1 -> 127.0.0.1:8080"),
            "{text}"
        );
    }

    #[test]
    fn once_has_no_rates() {
        let entries = entries();
        let text = render(&frame(&entries, GroupBy::Lport, false));
        assert!(text.contains("one reading of the kernel's socket table"));
        assert!(!text.contains("entered"));
        assert!(text.contains("LOCAL PORT"));
    }

    #[test]
    fn names_from_outside_are_escaped_in_every_grouping() {
        let entries = entries();
        for group_by in [GroupBy::Process, GroupBy::None] {
            let text = render(&frame(&entries, group_by, true));
            assert!(!text.contains('\x1b'), "{group_by:?}: {text}");
            assert!(!text.contains("\nFAKE"), "{group_by:?}: {text}");
            assert!(text.contains("a\\x1b[2J\\x0aFAKE"), "{group_by:?}: {text}");
        }
    }
}
