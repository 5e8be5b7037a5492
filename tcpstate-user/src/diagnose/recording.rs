//! Reads a recording, the JSON Lines `tcpstate watch --json` writes, into
//! [`Evidence`]: its `host` object (each namespace's settings), closes,
//! failed connects, TIME_WAIT changes and summary. Outside data: every line
//! is checked, and what the recording lacks is said.

use std::{io::BufRead, net::IpAddr};

use rustc_hash::FxHashMap;
use serde::Deserialize;

use super::evidence::{BINDS_UNTRACED, Evidence, Namespace};
use crate::{
    host::sysctl::Facts,
    sock::{Comm, Owner, SockId, Tuple},
    track::tracker::{BindFailure, Close, CloseKind, Closer, ConnectFailure, FailReason, Role},
};

/// The fields of any line that the diagnosis reads; others are ignored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Line {
    r#type: String,
    ts: Option<String>,
    laddr: Option<IpAddr>,
    lport: Option<u16>,
    raddr: Option<IpAddr>,
    rport: Option<u16>,
    netns: Option<u32>,
    role: Option<String>,
    closer: Option<String>,
    kind: Option<String>,
    reason: Option<String>,
    time_wait: Option<bool>,
    tw_refused: Option<bool>,
    lifetime_ms: Option<f64>,
    pid: Option<u32>,
    comm: Option<String>,
    lost: Option<u64>,
    duration_ms: Option<f64>,
    // `bind_failed`
    reuseaddr: Option<bool>,
    reuseport: Option<bool>,
    time_wait_on_port: Option<usize>,
    // `host`
    tw_len_ms: Option<f64>,
    own_netns: Option<u32>,
    binds_traced: Option<bool>,
    namespaces: Vec<HostNamespace>,
}

/// One namespace of the `host` object (the namespace fields of
/// `timewait_summary`).
#[derive(Deserialize)]
struct HostNamespace {
    netns: u32,
    netns_name: Option<String>,
    port_range: Option<(u16, u16)>,
    reserved_ports: Option<u32>,
    tcp_tw_reuse: Option<u8>,
    tcp_timestamps: Option<u8>,
    tcp_max_tw_buckets: Option<u64>,
    tcp_timewait_overflow: Option<u64>,
    tw_recycled: Option<u64>,
    tw_killed: Option<u64>,
    tcp_fin_timeout: Option<u32>,
}

/// Reads `input` to its end. Lines that are not tcpstate's objects are
/// counted and said, not fatal; a last line cut off mid-way (a recording
/// stopped by force) is said too.
pub fn read(input: impl BufRead, tw_len_s: f64) -> std::io::Result<Evidence> {
    let mut ev = Evidence {
        tw_len_s,
        ..Evidence::default()
    };
    let mut time_wait: FxHashMap<(u32, Tuple), Role> = FxHashMap::default();
    let (mut first, mut last, mut duration_s) = (None::<f64>, None::<f64>, None);
    let (mut bad, mut lines, mut host, mut summary) = (0u64, 0u64, false, false);
    let (mut cut, mut binds_traced) = (false, false);
    for line in input.split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        let Ok(l) = serde_json::from_slice::<Line>(&line) else {
            // Only the last line can be a cut one; any other is foreign.
            bad += 1;
            cut = true;
            continue;
        };
        cut = false;
        let at = l.ts.as_deref().and_then(epoch_s);
        if let Some(t) = at {
            first = Some(first.map_or(t, |f: f64| f.min(t)));
            last = Some(last.map_or(t, |x: f64| x.max(t)));
        }
        // Seconds into the recording, for the timeline.
        let since = at.zip(first).map_or(0.0, |(t, f)| t - f);
        match l.r#type.as_str() {
            "host" => {
                host = true;
                ev.own_netns = l.own_netns.or(ev.own_netns);
                binds_traced = l.binds_traced.unwrap_or(false);
                if let Some(ms) = l.tw_len_ms {
                    ev.tw_len_s = ms / 1000.0;
                }
                for n in l.namespaces {
                    ev.namespaces.insert(n.netns, namespace(n));
                }
            }
            "close" => match close(&l) {
                Some(c) => ev.close(&c),
                None => bad += 1,
            },
            "connect_failed" => match failure(&l) {
                Some(f) => ev.connect_failed(&f),
                None => bad += 1,
            },
            "bind_failed" => match bind_failure(&l) {
                Some(b) => ev.bind_failed(&b),
                None => bad += 1,
            },
            "timewait_enter" => match (id(&l), l.role.as_deref().and_then(role)) {
                (Some(id), Some(role)) => {
                    if time_wait.insert((id.netns, id.tuple), role).is_none() {
                        ev.timeline.change(since, &id, role, 1);
                    }
                }
                _ => bad += 1,
            },
            "timewait_exit" => match id(&l) {
                Some(id) => {
                    if let Some(role) = time_wait.remove(&(id.netns, id.tuple)) {
                        ev.timeline.change(since, &id, role, -1);
                    }
                }
                None => bad += 1,
            },
            "summary" => {
                summary = true;
                ev.lost = l.lost.unwrap_or(0);
                duration_s = l.duration_ms.map(|ms| ms / 1000.0);
            }
            _ => {}
        }
    }
    if cut {
        bad -= 1;
        ev.gaps
            .push("its last line is cut off (the recording was stopped by force)".into());
    }
    if bad > 0 {
        ev.gaps.push(format!(
            "{bad} of its {lines} lines are not tcpstate records: skipped"
        ));
    }
    if !host {
        ev.gaps.push(
            "no host object (recorded by an older tcpstate, or with --reconcile 0): every \
             namespace is judged by Linux's default settings"
                .into(),
        );
        ev.own_netns = Some(0);
        ev.namespaces.insert(
            0,
            Namespace {
                name: Some("default settings".into()),
                facts: Some(linux_defaults()),
            },
        );
    }
    if host && !binds_traced {
        ev.gaps.push(BINDS_UNTRACED.into());
    }
    if !summary {
        ev.gaps
            .push("no summary: events lost while recording are unknown".into());
    }
    ev.gaps.push(
        "TIME_WAIT sockets from before the recording began are not in it: only those it saw \
         enter count"
            .into(),
    );
    ev.window_s = duration_s
        .or_else(|| Some(last? - first?))
        .unwrap_or(0.0)
        .max(1e-3);
    ev.time_wait = time_wait
        .into_iter()
        .map(|((netns, tuple), role)| (SockId { netns, tuple }, role))
        .collect();
    Ok(ev)
}

/// Linux's defaults, for a recording that carries no settings.
fn linux_defaults() -> Facts {
    Facts {
        port_range: (32768, 60999),
        tw_reuse: 2,
        timestamps: 1,
        max_tw_buckets: 262_144,
        fin_timeout: 60,
        ..Facts::default()
    }
}

fn namespace(n: HostNamespace) -> Namespace {
    // A range the kernel could not have (low above high) is no reading.
    let facts = n
        .port_range
        .filter(|(lo, hi)| lo <= hi)
        .map(|port_range| Facts {
            port_range,
            reserved: n.reserved_ports.unwrap_or(0),
            tw_reuse: n.tcp_tw_reuse.unwrap_or(0),
            timestamps: n.tcp_timestamps.unwrap_or(0),
            max_tw_buckets: n.tcp_max_tw_buckets.unwrap_or(0),
            tw_overflow: n.tcp_timewait_overflow.unwrap_or(0),
            tw_recycled: n.tw_recycled.unwrap_or(0),
            tw_killed: n.tw_killed.unwrap_or(0),
            fin_timeout: n.tcp_fin_timeout.unwrap_or(0),
        });
    Namespace {
        name: n.netns_name,
        facts,
    }
}

fn id(l: &Line) -> Option<SockId> {
    Some(SockId {
        netns: l.netns?,
        tuple: Tuple::new(l.laddr?, l.lport?, l.raddr?, l.rport?),
    })
}

fn owner(l: &Line) -> Option<Owner> {
    Some(Owner {
        pid: l.pid?,
        tid: l.pid?,
        comm: Comm::new(l.comm.as_deref()?),
    })
}

fn close(l: &Line) -> Option<Close> {
    Some(Close {
        ts_ns: 0,
        skaddr: 0,
        id: id(l)?,
        role: role(l.role.as_deref()?)?,
        closer: closer(l.closer.as_deref()?)?,
        kind: kind(l.kind.as_deref()?)?,
        time_wait: l.time_wait?,
        tw_refused: l.tw_refused.unwrap_or(false),
        lifetime_ns: l.lifetime_ms.map(|ms| (ms.max(0.0) * 1e6) as u64),
        owner: owner(l),
    })
}

fn failure(l: &Line) -> Option<ConnectFailure> {
    Some(ConnectFailure {
        ts_ns: 0,
        skaddr: 0,
        id: id(l)?,
        reason: reason(l.reason.as_deref()?)?,
        errno: None,
        waited_ns: None,
        owner: owner(l),
    })
}

fn bind_failure(l: &Line) -> Option<BindFailure> {
    Some(BindFailure {
        ts_ns: 0,
        skaddr: 0,
        id: id(l)?,
        reuseaddr: l.reuseaddr?,
        reuseport: l.reuseport.unwrap_or(false),
        time_wait_on_port: l.time_wait_on_port,
        owner: owner(l),
    })
}

/// The value of `all` whose name is `s`.
fn named<T: Copy>(s: &str, all: &[T], name: impl Fn(T) -> &'static str) -> Option<T> {
    all.iter().copied().find(|&v| name(v) == s)
}

fn role(s: &str) -> Option<Role> {
    named(
        s,
        &[Role::Client, Role::Server, Role::Unknown],
        Role::as_str,
    )
}

fn closer(s: &str) -> Option<Closer> {
    let all = [
        Closer::Local,
        Closer::Remote,
        Closer::Simultaneous,
        Closer::Unknown,
    ];
    named(s, &all, Closer::as_str)
}

fn kind(s: &str) -> Option<CloseKind> {
    let all = [
        CloseKind::Fin,
        CloseKind::RstSent,
        CloseKind::RstReceived,
        CloseKind::Abort,
        CloseKind::Unknown,
    ];
    named(s, &all, CloseKind::as_str)
}

fn reason(s: &str) -> Option<FailReason> {
    let all = [
        FailReason::NoLocalPort,
        FailReason::Refused,
        FailReason::Timeout,
        FailReason::Other,
    ];
    named(s, &all, FailReason::as_str)
}

/// Seconds since the epoch of an RFC 3339 UTC time as tcpstate writes it
/// (`2026-12-01T06:40:06.169287Z`).
fn epoch_s(ts: &str) -> Option<f64> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let s = t.next()?.parse::<f64>().ok()?;
    if !(0..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = r#"{"type":"host","ts":"2026-12-01T06:40:00.000000Z","tw_len_ms":60000.0,"own_netns":1,"binds_traced":true,"namespaces":[{"netns":1,"netns_name":"host","time_wait":0,"tcp_max_tw_buckets":262144,"tcp_max_tw_buckets_headroom":262144,"tcp_timewait_overflow":0,"port_range":[32768,60999],"reserved_ports":0,"tcp_tw_reuse":2,"tcp_timestamps":1,"tw_recycled":0,"tcp_fin_timeout":60,"tw_refused":null},{"netns":9,"netns_name":"client","time_wait":0,"tcp_max_tw_buckets":262144,"port_range":[40000,40999],"tcp_tw_reuse":0,"tcp_timestamps":1}]}"#;
    const CLOSE: &str = r#"{"type":"close","ts":"2026-12-01T06:40:06.170485Z","family":"ipv4","laddr":"127.0.0.1","lport":40001,"raddr":"127.0.0.1","rport":7000,"netns":9,"role":"client","closer":"local","kind":"fin","time_wait":true,"tw_refused":false,"lifetime_ms":1.139,"pid":31218,"comm":"client"}"#;
    const ENTER: &str = r#"{"type":"timewait_enter","ts":"2026-12-01T06:40:06.170485Z","family":"ipv4","laddr":"127.0.0.1","lport":40001,"raddr":"127.0.0.1","rport":7000,"netns":9,"role":"client","closer":"local","expires_at":"2026-12-01T06:41:06.170485Z","pid":31218,"comm":"client","source":"traced"}"#;
    const FAILED: &str = r#"{"type":"connect_failed","ts":"2026-12-01T06:40:07.0Z","family":"ipv4","laddr":"127.0.0.1","lport":0,"raddr":"127.0.0.1","rport":7000,"netns":9,"reason":"no_local_port","errno":"EADDRNOTAVAIL","waited_ms":0.012,"pid":4485,"comm":"client"}"#;
    const BIND: &str = r#"{"type":"bind_failed","ts":"2026-12-01T06:40:08.0Z","family":"ipv4","laddr":"0.0.0.0","lport":8080,"raddr":"0.0.0.0","rport":0,"netns":1,"errno":"EADDRINUSE","reuseaddr":false,"reuseport":false,"time_wait_on_port":12,"pid":4490,"comm":"server"}"#;
    const SUMMARY: &str =
        r#"{"type":"summary","events":20,"lost":3,"lost_by_reason":{},"duration_ms":10000.0}"#;

    #[test]
    fn a_recording_becomes_the_same_evidence() {
        let text = [HOST, CLOSE, ENTER, FAILED, BIND, SUMMARY].join("\n") + "\n";
        let ev = read(text.as_bytes(), 60.0).unwrap();
        assert_eq!(ev.window_s, 10.0);
        assert_eq!(ev.lost, 3);
        assert_eq!(ev.own_netns, Some(1));
        assert_eq!(ev.label_of(9), "client");
        assert_eq!(ev.facts_of(9).unwrap().port_range, (40000, 40999));
        assert_eq!(ev.time_wait.len(), 1);
        assert_eq!(ev.destinations.values().next().unwrap().n, 1);
        assert_eq!(ev.failures.values().next().unwrap().by_reason[0], 1);
        let bind = &ev.binds[&(1, 8080)];
        assert_eq!((bind.n, bind.without_reuseaddr), (1, 1));
        assert_eq!(bind.time_wait_on_port, Some(12));
        assert_eq!(ev.gaps.len(), 1, "{:?}", ev.gaps);
    }

    #[test]
    fn a_cut_recording_without_context_says_what_it_lacks() {
        let text = format!("{CLOSE}\n{ENTER}\nnot json\n{}", &CLOSE[..40]);
        let ev = read(text.as_bytes(), 60.0).unwrap();
        let gaps = ev.gaps.join("; ");
        assert!(gaps.contains("last line is cut off"), "{gaps}");
        assert!(gaps.contains("1 of its 4 lines"), "{gaps}");
        assert!(gaps.contains("no host object"), "{gaps}");
        assert!(gaps.contains("no summary"), "{gaps}");
        // Judged by Linux's defaults; the window from the timestamps.
        assert_eq!(ev.facts_of(9).unwrap().port_range, (32768, 60999));
        assert!(ev.window_s < 1e-2, "{}", ev.window_s);
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(epoch_s("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(epoch_s("2026-12-01T06:40:06.5Z"), Some(1_796_107_206.5));
        assert_eq!(epoch_s("2026-13-01T00:00:00Z"), None);
        assert_eq!(epoch_s("9223372036854775807-01-01T00:00:00Z"), None);
        assert_eq!(epoch_s("garbage"), None);
    }
}
