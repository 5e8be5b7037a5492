//! The rules: from the [`Evidence`], what is wrong, where, what it rests
//! on, what follows, and what to change, most severe first.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::evidence::{Binds, Closes, Evidence, share, top};
use crate::{
    host::sysctl::Facts,
    track::{
        pressure::{self, Limits, Pool, PoolKey},
        tracker::{CloseKind, FailReason, Role},
    },
};

/// Connections a group needs before its close pattern is worth a finding.
const MIN_CLOSES: u64 = 20;
/// A connection rate above which missing reuse is worth saying, per second.
const NOTABLE_RATE: f64 = 5.0;
/// Median lifetime under which connections count as short, in ms.
const SHORT_MS: f64 = 1000.0;
/// Resets that make a process's closes worth a finding: at least this many,
/// and this share of its closes or this rate.
const MIN_RESETS: u64 = 10;
const RESET_SHARE: f64 = 0.1;
const RESET_RATE: f64 = 1.0;
/// Bytes a TIME_WAIT socket costs the kernel (`tcp_timewait_sock` slab
/// object, rounded up).
const TW_SOCK_BYTES: u64 = 256;
/// Linux's default `tcp_fin_timeout`.
const DEFAULT_FIN_TIMEOUT: u32 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    PortExhaustion,
    PortPressure,
    TimewaitOverflow,
    ServerClosesFirst,
    ClientClosesFirst,
    RstCloses,
    ShortConnections,
    ConnectFailures,
    BindInUse,
    Healthy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PortExhaustion => "port_exhaustion",
            Kind::PortPressure => "port_pressure",
            Kind::TimewaitOverflow => "timewait_overflow",
            Kind::ServerClosesFirst => "server_closes_first",
            Kind::ClientClosesFirst => "client_closes_first",
            Kind::RstCloses => "rst_closes",
            Kind::ShortConnections => "short_connections",
            Kind::ConnectFailures => "connect_failures",
            Kind::BindInUse => "bind_in_use",
            Kind::Healthy => "healthy",
        }
    }
}

/// Where a finding is: the namespace, the endpoints, the processes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Place {
    pub netns: Option<u32>,
    pub netns_name: Option<String>,
    pub laddr: Option<IpAddr>,
    pub lport: Option<u16>,
    pub raddr: Option<IpAddr>,
    pub rport: Option<u16>,
    /// Owner process names, most involved first.
    pub processes: Vec<String>,
}

impl Place {
    /// The pool, `LADDR -> RADDR:RPORT`, when the finding has one.
    pub fn pool(&self) -> Option<String> {
        let (l, r, port) = (self.laddr?, self.raddr?, self.rport?);
        Some(format!("{l} -> {}", crate::render::endpoint(r, port)))
    }

    /// The local end of a service or a `bind()`: `LADDR:PORT`, or the port
    /// alone beside a pool.
    pub fn local(&self) -> Option<String> {
        let port = self.lport?;
        Some(match (self.laddr, self.raddr) {
            (Some(l), None) => crate::render::endpoint(l, port),
            _ => port.to_string(),
        })
    }
}

/// One number or setting a finding rests on.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Count(u64),
    /// A rate or a duration: printed with its unit in the name.
    Real(f64),
    /// A share, 0 to 1 (text shows a percentage).
    Share(f64),
    Text(String),
}

/// A change to make, ranked within its finding.
#[derive(Clone, Debug, PartialEq)]
pub struct Fix {
    /// A short stable name: `keep_alive`, `tcp_tw_reuse`, ...
    pub action: &'static str,
    /// The exact change, for this situation.
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    pub severity: Severity,
    /// The symptom, in one line.
    pub what: String,
    pub place: Place,
    pub evidence: Vec<(&'static str, Value)>,
    pub consequence: String,
    pub fixes: Vec<Fix>,
}

/// The findings, most severe first; `healthy` when nothing is worth a
/// warning.
pub fn diagnose(ev: &Evidence, threshold: f64) -> Vec<Finding> {
    let mut findings = Vec::new();
    let pools = pools(ev, threshold);
    let mut pressed = Vec::new();
    for pool in &pools {
        if let Some(f) = port_finding(ev, pool) {
            pressed.push(pool.key);
            findings.push(f);
        }
    }
    findings.extend(overflow_findings(ev));
    findings.extend(service_findings(ev));
    findings.extend(destination_findings(ev, &pressed));
    findings.extend(reset_findings(ev));
    findings.extend(failure_findings(ev));
    findings.extend(bind_findings(ev));
    // Stable: within a severity, the order the rules give (worst pool
    // first).
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    if findings.iter().all(|f| f.severity == Severity::Info) {
        findings.push(healthy(ev, &pools));
    }
    findings
}

/// The worst severity, for the exit status.
pub fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Info)
}

/// The pools of local ports, most pressed first, as the rules judge them.
pub fn pools(ev: &Evidence, threshold: f64) -> Vec<Pool> {
    let rates: FxHashMap<PoolKey, f64> = ev
        .destinations
        .iter()
        .filter(|(_, c)| c.time_wait > 0)
        .map(|(&k, c)| (k, ev.per_s(c.time_wait)))
        .collect();
    let failures: FxHashMap<PoolKey, pressure::Failures> = ev
        .failures
        .iter()
        .map(|(&k, f)| {
            let failures = pressure::Failures {
                per_s: ev.per_s(f.total()),
                no_local_port_per_s: ev.per_s(f.by_reason[FailReason::NoLocalPort as usize]),
            };
            (k, failures)
        })
        .collect();
    let limits: FxHashMap<u32, Limits> = ev
        .namespaces
        .iter()
        .filter_map(|(&ns, n)| Some((ns, limits_of(&n.facts?))))
        .collect();
    let fallback = ev
        .own_netns
        .and_then(|own| ev.facts_of(own))
        .map(|f| limits_of(&f))
        .unwrap_or_default();
    pressure::pools(
        ev.time_wait.iter().map(|(id, role)| (id, *role, None)),
        &pressure::Inputs {
            established: &ev.established,
            owners: &FxHashMap::default(),
            listeners: &ev.listeners,
            rates: &rates,
            failures: &failures,
            limits: &limits,
            fallback,
            tw_len_s: ev.tw_len_s,
            threshold,
        },
    )
}

fn limits_of(f: &Facts) -> Limits {
    Limits {
        range_size: f.usable_ports(),
        tw_reuse: f.tw_reuse,
        timestamps: f.timestamps != 0,
    }
}

fn namespace(ev: &Evidence, netns: u32) -> Place {
    Place {
        netns: Some(netns),
        netns_name: Some(ev.label_of(netns)),
        ..Place::default()
    }
}

/// A pool's place: its namespace, local address and destination.
fn pool_place(ev: &Evidence, key: PoolKey, processes: Vec<String>) -> Place {
    Place {
        laddr: Some(key.laddr),
        raddr: Some(key.raddr),
        rport: Some(key.rport),
        processes,
        ..namespace(ev, key.netns)
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// How to run a sysctl in namespace `netns`.
fn sysctl_in(ev: &Evidence, netns: u32, setting: &str) -> String {
    let name = ev.namespaces.get(&netns).and_then(|n| n.name.clone());
    match name {
        _ if ev.own_netns == Some(netns) => format!("sysctl -w {setting}"),
        Some(name) if name != "host" => format!("ip netns exec {name} sysctl -w {setting}"),
        _ => format!("sysctl -w {setting} inside network namespace net:[{netns}]"),
    }
}

/// `port_exhaustion` (failing, or running out at the current rate) or
/// `port_pressure` (above the threshold).
fn port_finding(ev: &Evidence, pool: &Pool) -> Option<Finding> {
    let key = pool.key;
    let dest = ev.destinations.get(&key);
    let failing = pool.failures.no_local_port_per_s > 0.0;
    let runs_out = pool.projected >= 1.0 && !pool.reuse_applies;
    if !(failing || runs_out || pool.flagged) {
        return None;
    }
    let facts = ev.facts_of(key.netns).unwrap_or_default();
    let to = crate::render::endpoint(key.raddr, key.rport);
    let (kind, severity, what, consequence) = if failing {
        let failed = ev.failures[&key].by_reason[FailReason::NoLocalPort as usize];
        (
            Kind::PortExhaustion,
            Severity::Critical,
            format!("connect() toward {to} fails: no free local port (EADDRNOTAVAIL)"),
            format!(
                "{failed} connects failed with EADDRNOTAVAIL ({:.1}/s) in {:.0} s: the pool's {} \
                 ports are all held",
                pool.failures.no_local_port_per_s, ev.window_s, pool.range_size
            ),
        )
    } else if runs_out {
        let eta = pool.left as f64 / pool.rate.max(1e-9);
        (
            Kind::PortExhaustion,
            Severity::Critical,
            format!("connect() toward {to} will run out of local ports in about {eta:.0} s"),
            format!(
                "at {:.1} TIME_WAIT/s for {:.0} s each, the pool needs {:.0} ports and has {}: \
                 {} left, then connect() fails with EADDRNOTAVAIL",
                pool.rate,
                ev.tw_len_s,
                pool.rate * ev.tw_len_s,
                pool.range_size,
                pool.left
            ),
        )
    } else {
        (
            Kind::PortPressure,
            Severity::Warning,
            format!(
                "local ports toward {to} are {} used, {} projected",
                pct(pool.used),
                pct(pool.projected)
            ),
            format!(
                "{} of {} ports left; a burst or a slower peer can exhaust them",
                pool.left, pool.range_size
            ),
        )
    };
    let processes = dest.map_or_else(Vec::new, |d| top(&d.processes, 3));
    let eta = (runs_out && !failing && pool.rate > 0.0).then(|| pool.left as f64 / pool.rate);
    let mut evidence: Vec<(&'static str, Value)> = eta
        .map(|s| ("seconds_to_exhaustion", Value::Real(s)))
        .into_iter()
        .collect();
    evidence.extend([
        ("time_wait_per_s", Value::Real(pool.rate)),
        ("time_wait", Value::Count(pool.time_wait)),
        ("established", Value::Count(pool.established)),
        ("ports", Value::Count(u64::from(pool.range_size))),
        (
            "port_range",
            Value::Text(format!("{} {}", facts.port_range.0, facts.port_range.1)),
        ),
        ("ports_left", Value::Count(pool.left)),
        ("used", Value::Share(pool.used)),
        ("projected", Value::Share(pool.projected)),
        ("tcp_tw_reuse", Value::Count(u64::from(facts.tw_reuse))),
        ("tcp_timestamps", Value::Count(u64::from(facts.timestamps))),
    ]);
    if let Some(d) = dest {
        evidence.push(("local_closes_first", Value::Share(d.local_share())));
        if let Some(ms) = d.median_lifetime_ms() {
            evidence.push(("median_lifetime_ms", Value::Real(ms)));
        }
    }
    if let Some(f) = ev.failures.get(&key) {
        evidence.push(("connect_failed", Value::Count(f.total())));
    }
    let mut fixes = vec![keep_alive(&processes, &to, dest, ev)];
    if let Some(fix) = tw_reuse_fix(ev, key, &facts, pool) {
        fixes.push(fix);
    }
    if let Some(fix) = wider_range(ev, key.netns, &facts) {
        fixes.push(fix);
    }
    fixes.push(Fix {
        action: "server_closes_first",
        detail: format!(
            "have {to} close the connections first (e.g. HTTP: the server ends idle keep-alive \
             connections): TIME_WAIT then stays on the server, where it holds no local port of \
             this host"
        ),
    });
    fixes.push(Fix {
        action: "more_destinations",
        detail: format!(
            "spread connections over more destination addresses or ports: each address:port \
             has its own {} local ports",
            pool.range_size
        ),
    });
    fixes.extend(fin_timeout_note(&facts));
    Some(Finding {
        kind,
        severity,
        what,
        place: pool_place(ev, key, processes),
        evidence,
        consequence,
        fixes,
    })
}

/// How to keep connections open in a process tcpstate knows by name.
fn keep_alive_how(process: Option<&String>) -> &'static str {
    match process.map(String::as_str) {
        Some("nginx") => {
            " (nginx: `keepalive 32;` in the upstream block, with `proxy_http_version 1.1;` and \
             `proxy_set_header Connection \"\";`)"
        }
        Some("haproxy") => " (haproxy: `http-reuse safe` and no `option httpclose`)",
        Some("curl") => " (one curl for many URLs reuses its connections)",
        _ => "",
    }
}

fn keep_alive(processes: &[String], to: &str, dest: Option<&Closes>, ev: &Evidence) -> Fix {
    let who = match processes.first() {
        Some(p) => format!("in {p}"),
        None => "in the client".to_string(),
    };
    let rate = dest.map_or(String::new(), |d| {
        format!(
            " (it opens {:.1} connections/s and closes each first)",
            ev.per_s(d.n)
        )
    });
    Fix {
        action: "keep_alive",
        detail: format!(
            "reuse connections {who}: HTTP keep-alive or a connection pool toward {to}{rate}{}",
            keep_alive_how(processes.first())
        ),
    }
}

/// `tcp_tw_reuse=1`, where it would apply: outgoing connections, with
/// timestamps on.
fn tw_reuse_fix(ev: &Evidence, key: PoolKey, facts: &Facts, pool: &Pool) -> Option<Fix> {
    if pool.reuse_applies {
        return None;
    }
    let set = sysctl_in(ev, key.netns, "net.ipv4.tcp_tw_reuse=1");
    let detail = if facts.timestamps == 0 {
        format!(
            "{} and {set}: connect() may then take over this pool's TIME_WAIT ports older than \
             1 s (tcp_tw_reuse needs TCP timestamps, which are off)",
            sysctl_in(ev, key.netns, "net.ipv4.tcp_timestamps=1")
        )
    } else {
        let why = if facts.tw_reuse == 2 {
            " (it is 2: loopback destinations only)"
        } else {
            ""
        };
        format!(
            "{set}{why}: connect() may then take over this pool's TIME_WAIT ports older than \
             1 s; safe for outgoing connections with timestamps, which are on"
        )
    };
    Some(Fix {
        action: "tcp_tw_reuse",
        detail,
    })
}

/// A wider `ip_local_port_range`, when the current one is narrower than
/// what most hosts can give.
fn wider_range(ev: &Evidence, netns: u32, facts: &Facts) -> Option<Fix> {
    const LOW: u16 = 10000;
    const HIGH: u16 = 65000;
    let (lo, hi) = facts.port_range;
    let (new_lo, new_hi) = (lo.min(LOW), hi.max(HIGH));
    let gained =
        (u32::from(new_hi) - u32::from(new_lo)).saturating_sub(u32::from(hi.saturating_sub(lo)));
    if lo == 0 || gained < 1000 {
        return None;
    }
    Some(Fix {
        action: "ip_local_port_range",
        detail: format!(
            "{}: {gained} more ports per destination (reserve listening ports inside the range \
             with net.ipv4.ip_local_reserved_ports)",
            sysctl_in(
                ev,
                netns,
                &format!("net.ipv4.ip_local_port_range=\"{new_lo} {new_hi}\"")
            )
        ),
    })
}

/// When `tcp_fin_timeout` was lowered, as if it shortened TIME_WAIT.
fn fin_timeout_note(facts: &Facts) -> Option<Fix> {
    (facts.fin_timeout != 0 && facts.fin_timeout < DEFAULT_FIN_TIMEOUT).then(|| Fix {
        action: "not_tcp_fin_timeout",
        detail: format!(
            "net.ipv4.tcp_fin_timeout is {} here: it bounds FIN_WAIT2, not TIME_WAIT (60 s, \
             fixed in Linux), so lowering it does not help; nor does tcp_tw_recycle (removed in \
             Linux 4.12)",
            facts.fin_timeout
        ),
    })
}

/// `timewait_overflow`: a namespace whose TIME_WAIT buckets are full.
fn overflow_findings(ev: &Evidence) -> Vec<Finding> {
    let mut refused: FxHashMap<u32, (u64, FxHashMap<String, u64>)> = FxHashMap::default();
    let groups = ev
        .services
        .iter()
        .map(|(&(ns, _), c)| (ns, c))
        .chain(ev.destinations.iter().map(|(k, c)| (k.netns, c)));
    for (ns, c) in groups.filter(|(_, c)| c.tw_refused > 0) {
        let (n, procs) = refused.entry(ns).or_default();
        *n += c.tw_refused;
        for (p, k) in &c.processes {
            *procs.entry(p.clone()).or_default() += k;
        }
    }
    let mut findings: Vec<Finding> = refused
        .into_iter()
        .filter_map(|(ns, (n, procs))| {
            let facts = ev.namespaces.get(&ns)?.facts?;
            let in_tw = ev.time_wait_in(ns);
            let needed = ((ev.per_s(n) * ev.tw_len_s) as u64 + in_tw) * 5 / 4;
            let processes = top(&procs, 3);
            let who = processes
                .first()
                .map_or("the processes that close first".to_string(), Clone::clone);
            Some(Finding {
                kind: Kind::TimewaitOverflow,
                severity: Severity::Critical,
                what: format!(
                    "the kernel refuses TIME_WAIT sockets: all {} buckets are taken",
                    facts.max_tw_buckets
                ),
                place: Place {
                    processes,
                    ..namespace(ev, ns)
                },
                evidence: vec![
                    ("tw_refused", Value::Count(n)),
                    ("tw_refused_per_s", Value::Real(ev.per_s(n))),
                    ("time_wait", Value::Count(in_tw)),
                    ("tcp_max_tw_buckets", Value::Count(facts.max_tw_buckets)),
                    ("TCPTimeWaitOverflow", Value::Count(facts.tw_overflow)),
                ],
                consequence: format!(
                    "{:.1} closes/s get no TIME_WAIT: a delayed segment of an old connection \
                     can then corrupt a new one on the same ports (the kernel logs \"TCP: time \
                     wait bucket table overflow\")",
                    ev.per_s(n)
                ),
                fixes: vec![
                    Fix {
                        action: "keep_alive",
                        detail: format!(
                            "reuse connections in {who}: fewer connections, fewer TIME_WAIT \
                             sockets"
                        ),
                    },
                    Fix {
                        action: "tcp_max_tw_buckets",
                        detail: format!(
                            "{}: room for the current rate, about {} KiB of kernel memory",
                            sysctl_in(ev, ns, &format!("net.ipv4.tcp_max_tw_buckets={needed}")),
                            needed * TW_SOCK_BYTES / 1024
                        ),
                    },
                ],
            })
        })
        .collect();
    findings.sort_by_key(|f| f.place.netns);
    findings
}

/// The common evidence of a group of closes.
fn close_evidence(ev: &Evidence, c: &Closes) -> Vec<(&'static str, Value)> {
    let mut evidence = vec![
        ("closes", Value::Count(c.n)),
        ("closes_per_s", Value::Real(ev.per_s(c.n))),
        ("local_closes_first", Value::Share(c.local_share())),
        ("rst", Value::Share(c.rst_share())),
        ("time_wait_entered", Value::Count(c.time_wait)),
    ];
    if let Some(ms) = c.median_lifetime_ms() {
        evidence.push(("median_lifetime_ms", Value::Real(ms)));
    }
    evidence
}

fn is_short(ev: &Evidence, c: &Closes) -> bool {
    ev.per_s(c.n) >= NOTABLE_RATE && c.median_lifetime_ms().is_some_and(|ms| ms < SHORT_MS)
}

/// `server_closes_first` or `short_connections` per listening port.
fn service_findings(ev: &Evidence) -> Vec<Finding> {
    let mut services: Vec<(&(u32, u16), &Closes)> = ev
        .services
        .iter()
        .filter(|(_, c)| c.n >= MIN_CLOSES)
        .collect();
    services.sort_by(|a, b| b.1.time_wait.cmp(&a.1.time_wait).then(a.0.cmp(b.0)));
    services
        .into_iter()
        .filter_map(|(&(ns, lport), c)| {
            let held = ev
                .time_wait
                .iter()
                .filter(|(id, role)| {
                    id.netns == ns
                        && id.tuple.lport == lport
                        && *role == crate::track::tracker::Role::Server
                })
                .count() as u64;
            let closes_first = c.local_share() >= 0.5 && c.time_wait > 0;
            if !closes_first && !is_short(ev, c) {
                return None;
            }
            let buckets = ev.facts_of(ns).map_or(0, |f| f.max_tw_buckets);
            let heavy = buckets > 0 && held * 2 >= buckets;
            let mut evidence = close_evidence(ev, c);
            evidence.push(("time_wait", Value::Count(held)));
            evidence.push(("tcp_max_tw_buckets", Value::Count(buckets)));
            let processes = top(&c.processes, 3);
            let place = Place {
                lport: Some(lport),
                processes,
                ..namespace(ev, ns)
            };
            let finding = if closes_first {
                Finding {
                    kind: Kind::ServerClosesFirst,
                    severity: if heavy {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    what: format!(
                        "the server on port {lport} closes {} of its connections first and \
                         holds their TIME_WAIT",
                        pct(c.local_share())
                    ),
                    place,
                    evidence,
                    consequence: format!(
                        "{held} TIME_WAIT sockets on the server ({} of the namespace's \
                         {buckets} buckets, about {} KiB): no local port is used up (each \
                         client's port is the client's); tcp_tw_reuse does not apply (it acts \
                         on outgoing connect() only)",
                        pct(share(held, buckets)),
                        held * TW_SOCK_BYTES / 1024
                    ),
                    fixes: vec![Fix {
                        action: "client_closes_first",
                        detail: format!(
                            "keep connections open and let the clients close them: HTTP \
                             keep-alive (nginx: keepalive_timeout above the clients' idle \
                             timeout; no \"Connection: close\"), so that port {lport} stops \
                             closing first"
                        ),
                    }],
                }
            } else {
                short_finding(ev, c, place, format!("port {lport}"))
            };
            Some(finding)
        })
        .collect()
}

fn short_finding(ev: &Evidence, c: &Closes, place: Place, what: String) -> Finding {
    let who = place
        .processes
        .first()
        .map_or("the client".to_string(), |p| p.clone());
    let how = keep_alive_how(place.processes.first());
    Finding {
        kind: Kind::ShortConnections,
        severity: Severity::Info,
        what: format!(
            "connections of {what} last {:.1} ms (median) at {:.1}/s: no reuse",
            c.median_lifetime_ms().unwrap_or(0.0),
            ev.per_s(c.n)
        ),
        place,
        evidence: close_evidence(ev, c),
        consequence: "every request pays a handshake and leaves a TIME_WAIT socket on the end \
                      that closes first"
            .to_string(),
        fixes: vec![Fix {
            action: "keep_alive",
            detail: format!(
                "reuse connections in {who}: HTTP keep-alive or a connection pool{how}"
            ),
        }],
    }
}

/// `client_closes_first` or `short_connections` per destination not
/// already under port pressure.
fn destination_findings(ev: &Evidence, pressed: &[PoolKey]) -> Vec<Finding> {
    let mut dests: Vec<(&PoolKey, &Closes)> = ev
        .destinations
        .iter()
        .filter(|(k, c)| c.n >= MIN_CLOSES && !pressed.contains(k))
        .collect();
    dests.sort_by_key(|d| std::cmp::Reverse(d.1.time_wait));
    dests
        .into_iter()
        .filter_map(|(key, c)| {
            let to = crate::render::endpoint(key.raddr, key.rport);
            let place = pool_place(ev, *key, top(&c.processes, 3));
            if c.local_share() >= 0.5 && c.time_wait > 0 {
                let processes = place.processes.clone();
                Some(Finding {
                    kind: Kind::ClientClosesFirst,
                    severity: Severity::Info,
                    what: format!(
                        "this host closes {} of its connections to {to} first and holds their \
                         TIME_WAIT",
                        pct(c.local_share())
                    ),
                    place,
                    evidence: close_evidence(ev, c),
                    consequence: format!(
                        "each holds a local port toward {to} for {:.0} s; the pool is not under \
                         pressure at this rate",
                        ev.tw_len_s
                    ),
                    fixes: vec![keep_alive(&processes, &to, Some(c), ev)],
                })
            } else if is_short(ev, c) {
                Some(short_finding(ev, c, place, to))
            } else {
                None
            }
        })
        .collect()
}

/// `rst_closes`: processes whose connections end with resets.
fn reset_findings(ev: &Evidence) -> Vec<Finding> {
    let mut procs: Vec<_> = ev
        .processes
        .iter()
        .filter(|(_, p)| {
            let rst = p.rst_sent + p.rst_received;
            rst >= MIN_RESETS && (share(rst, p.n) >= RESET_SHARE || ev.per_s(rst) >= RESET_RATE)
        })
        .collect();
    procs.sort_by(|a, b| {
        (b.1.rst_sent + b.1.rst_received)
            .cmp(&(a.1.rst_sent + a.1.rst_received))
            .then(a.0.cmp(b.0))
    });
    procs
        .into_iter()
        .map(|((ns, name), p)| {
            let rst = p.rst_sent + p.rst_received;
            let sends = p.rst_sent >= p.rst_received;
            let mut fixes = Vec::new();
            if p.rst_sent > 0 {
                fixes.push(Fix {
                    action: "close_with_fin",
                    detail: format!(
                        "close with FIN in {name}: an RST close (SO_LINGER with a 0 timeout, \
                         or closing with unread data) discards data in flight; it avoids \
                         TIME_WAIT only by risking that loss, so it is no fix for TIME_WAIT"
                    ),
                });
            }
            if p.rst_received > 0 {
                fixes.push(Fix {
                    action: "check_peers",
                    detail: format!(
                        "find why the peers of {name} abort: a peer closing with unread data \
                         or SO_LINGER 0, a middlebox timing out idle connections, or a crash"
                    ),
                });
            }
            Finding {
                kind: Kind::RstCloses,
                severity: Severity::Warning,
                what: format!(
                    "{} of the connections of {name} end with an RST ({})",
                    pct(share(rst, p.n)),
                    if sends {
                        "mostly sent by it"
                    } else {
                        "mostly from its peers"
                    }
                ),
                place: Place {
                    processes: vec![name.clone()],
                    ..namespace(ev, *ns)
                },
                evidence: vec![
                    ("closes", Value::Count(p.n)),
                    ("rst_sent", Value::Count(p.rst_sent)),
                    ("rst_received", Value::Count(p.rst_received)),
                    ("rst_per_s", Value::Real(ev.per_s(rst))),
                    ("rst", Value::Share(share(rst, p.n))),
                ],
                consequence: "data still in flight when the RST is sent or received is lost; \
                              the application sees ECONNRESET"
                    .to_string(),
                fixes,
            }
        })
        .collect()
}

/// `connect_failures`: destinations that refuse or do not answer.
fn failure_findings(ev: &Evidence) -> Vec<Finding> {
    let mut dests: Vec<_> = ev
        .failures
        .iter()
        .map(|(k, f)| {
            let other = f.total() - f.by_reason[FailReason::NoLocalPort as usize];
            (k, f, other)
        })
        .filter(|(_, _, other)| *other > 0)
        .collect();
    dests.sort_by_key(|d| std::cmp::Reverse(d.2));
    dests
        .into_iter()
        .map(|(key, f, other)| {
            let to = crate::render::endpoint(key.raddr, key.rport);
            let [_, refused, timeout, _] = f.by_reason;
            let mut fixes = Vec::new();
            if refused > 0 {
                fixes.push(Fix {
                    action: "check_listener",
                    detail: format!(
                        "nothing accepts on {to} (no listener, or a firewall rejects): start \
                         the service or point the client at the right port"
                    ),
                });
            }
            if timeout > 0 {
                fixes.push(Fix {
                    action: "check_path",
                    detail: format!(
                        "SYNs to {to} go unanswered: a firewall dropping them, a wrong route, \
                         or the server's accept queue overflowing (ListenDrops in nstat there)"
                    ),
                });
            }
            if fixes.is_empty() {
                fixes.push(Fix {
                    action: "check_path",
                    detail: format!(
                        "connects to {to} end early: an ICMP error or the client giving up"
                    ),
                });
            }
            Finding {
                kind: Kind::ConnectFailures,
                severity: if ev.per_s(other) >= 1.0 {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                what: format!("connect() toward {to} fails ({:.1}/s)", ev.per_s(other)),
                place: pool_place(ev, *key, top(&f.processes, 3)),
                evidence: vec![
                    ("refused", Value::Count(refused)),
                    ("timeout", Value::Count(timeout)),
                    (
                        "other",
                        Value::Count(f.by_reason[FailReason::Other as usize]),
                    ),
                    ("failures_per_s", Value::Real(ev.per_s(other))),
                ],
                consequence: "requests to this destination fail or wait for the connect \
                              timeout"
                    .to_string(),
                fixes,
            }
        })
        .collect()
}

/// `bind_in_use`: `bind()` refused with `EADDRINUSE`, by what holds the
/// port: TIME_WAIT sockets (a server restarting without `SO_REUSEADDR`, a
/// client binding a fixed source port) or a live socket.
fn bind_findings(ev: &Evidence) -> Vec<Finding> {
    let mut ports: Vec<_> = ev.binds.iter().collect();
    ports.sort_by(|a, b| b.1.n.cmp(&a.1.n).then(a.0.cmp(b.0)));
    ports
        .into_iter()
        .map(|(&(netns, port), b)| bind_finding(ev, netns, port, b))
        .collect()
}

fn bind_finding(ev: &Evidence, netns: u32, port: u16, b: &Binds) -> Finding {
    let processes = top(&b.processes, 3);
    let who = processes.first().map_or("the process", String::as_str);
    let held = b.time_wait_on_port.unwrap_or(0);
    let listening = ev.listeners.contains_key(&(netns, port));
    // Whose TIME_WAIT sockets are on the port at the end: a client's ends
    // mean a fixed source port, a server's a restart.
    let (mut as_client, mut as_server) = (0, 0);
    for (id, role) in &ev.time_wait {
        if id.netns == netns && id.tuple.lport == port {
            match role {
                Role::Client => as_client += 1,
                Role::Server => as_server += 1,
                Role::Unknown => {}
            }
        }
    }
    let mut fixes = Vec::new();
    if held > 0 && as_client > as_server {
        fixes.push(Fix {
            action: "no_fixed_source_port",
            detail: format!(
                "let the kernel choose the source port in {who}: do not bind() before                  connect(), or bind() to port 0 with IP_BIND_ADDRESS_NO_PORT; a fixed source                  port waits out each TIME_WAIT (60 s) toward the same peer"
            ),
        });
    }
    if held > 0 {
        fixes.push(Fix {
            action: "so_reuseaddr",
            detail: if b.without_reuseaddr > 0 {
                format!(
                    "set SO_REUSEADDR on the socket of {who} before bind()                      (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)): Linux then binds over the                      port's TIME_WAIT sockets, never over a live listener"
                )
            } else {
                format!(
                    "{who} sets SO_REUSEADDR already: the TIME_WAIT sockets on port {port} come                      from sockets without it (another program, or an instance that did not                      set it); set it on every socket bound to the port"
                )
            },
        });
    } else {
        fixes.push(Fix {
            action: "find_holder",
            detail: format!(
                "a live socket holds port {port}: find it with `ss -tlnp 'sport = :{port}'`                  (often a previous instance still running), stop it or use another port"
            ),
        });
    }
    let holder = match (held, listening) {
        (0, true) => "a listener holds the port".to_string(),
        (0, false) => "no TIME_WAIT socket holds it: a live socket does".to_string(),
        (n, _) => format!("{n} TIME_WAIT sockets hold the port"),
    };
    Finding {
        kind: Kind::BindInUse,
        severity: if held > 0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        what: format!(
            "bind() to port {port} fails with EADDRINUSE ({}): {holder}",
            match b.n {
                1 => "once".to_string(),
                n => format!("{n} times"),
            }
        ),
        place: Place {
            laddr: b.laddr,
            lport: Some(port),
            processes,
            ..namespace(ev, netns)
        },
        evidence: vec![
            ("bind_failures", Value::Count(b.n)),
            ("without_reuseaddr", Value::Count(b.without_reuseaddr)),
            ("time_wait_on_port", Value::Count(held as u64)),
        ],
        consequence: format!(
            "\"address already in use\" here is EADDRINUSE at bind() (the port is taken), not              EADDRNOTAVAIL at connect() (no local port left toward a peer); {}",
            if held > 0 {
                "the bind keeps failing until those TIME_WAIT sockets expire, up to 60 s                  after the last close"
            } else {
                "it keeps failing while that socket lives"
            }
        ),
        fixes,
    }
}

fn healthy(ev: &Evidence, pools: &[Pool]) -> Finding {
    let closes: u64 = ev
        .services
        .values()
        .chain(ev.destinations.values())
        .map(|c| c.n)
        .sum();
    let rst: u64 = ev
        .services
        .values()
        .chain(ev.destinations.values())
        .map(|c| {
            c.by_kind[CloseKind::RstSent as usize] + c.by_kind[CloseKind::RstReceived as usize]
        })
        .sum();
    let worst = pools.first().map_or(0.0, |p| p.used.max(p.projected));
    Finding {
        kind: Kind::Healthy,
        severity: Severity::Info,
        what: format!(
            "no TIME_WAIT or port problem in {:.0} s of observation",
            ev.window_s
        ),
        place: Place::default(),
        evidence: vec![
            ("time_wait", Value::Count(ev.time_wait.len() as u64)),
            ("closes", Value::Count(closes)),
            ("rst", Value::Share(share(rst, closes))),
            ("worst_pool", Value::Share(worst)),
        ],
        consequence: "nothing to change".to_string(),
        fixes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        diagnose::evidence::Namespace,
        sock::SockId,
        track::tracker::{
            BindFailure, Close, Closer, ConnectFailure, Role, tests::owner, tests::tuple,
        },
    };

    const NS: u32 = 9;

    fn facts(range: (u16, u16), tw_reuse: u8) -> Facts {
        Facts {
            port_range: range,
            tw_reuse,
            timestamps: 1,
            max_tw_buckets: 262_144,
            fin_timeout: 60,
            ..Facts::default()
        }
    }

    fn evidence(f: Facts) -> Evidence {
        let mut ev = Evidence {
            window_s: 10.0,
            tw_len_s: 60.0,
            own_netns: Some(1),
            ..Evidence::default()
        };
        ev.namespaces.insert(
            NS,
            Namespace {
                name: Some("client".into()),
                facts: Some(f),
            },
        );
        ev.namespaces.insert(
            1,
            Namespace {
                name: Some("host".into()),
                facts: Some(facts((32768, 60999), 2)),
            },
        );
        ev
    }

    fn close(lport: u16, rport: u16, role: Role, closer: Closer, kind: CloseKind) -> Close {
        Close {
            ts_ns: 0,
            skaddr: 1,
            id: SockId {
                netns: NS,
                tuple: tuple(lport, rport),
            },
            role,
            closer,
            kind,
            time_wait: closer == Closer::Local && kind == CloseKind::Fin,
            tw_refused: false,
            lifetime_ns: Some(2_000_000),
            owner: Some(owner(77)),
        }
    }

    /// A client closing first toward port 7000 at `rate` per second over
    /// the window, every TIME_WAIT socket still there.
    fn client_storm(ev: &mut Evidence, rate: u64) {
        for i in 0..rate * 10 {
            let c = close(
                40000 + i as u16,
                7000,
                Role::Client,
                Closer::Local,
                CloseKind::Fin,
            );
            ev.time_wait.push((c.id, Role::Client));
            ev.close(&c);
        }
    }

    #[test]
    fn a_narrow_pool_without_reuse_runs_out_and_keep_alive_comes_first() {
        let mut ev = evidence(facts((40000, 40999), 0));
        client_storm(&mut ev, 50);
        let findings = diagnose(&ev, 0.5);
        let f = &findings[0];
        assert_eq!(
            (f.kind, f.severity),
            (Kind::PortExhaustion, Severity::Critical)
        );
        assert!(f.what.contains("in about 10 s"), "{}", f.what);
        assert_eq!(f.evidence[0], ("seconds_to_exhaustion", Value::Real(10.0)));
        assert_eq!(f.place.netns_name.as_deref(), Some("client"));
        assert_eq!(f.place.rport, Some(7000));
        assert_eq!(f.place.processes, ["test"]);
        let actions: Vec<_> = f.fixes.iter().map(|x| x.action).collect();
        assert_eq!(
            actions[..3],
            ["keep_alive", "tcp_tw_reuse", "ip_local_port_range"]
        );
        assert!(
            f.fixes[1]
                .detail
                .starts_with("ip netns exec client sysctl -w net.ipv4.tcp_tw_reuse=1"),
            "{}",
            f.fixes[1].detail
        );
        assert!(
            f.fixes[2]
                .detail
                .contains("\"10000 65000\": 54001 more ports")
        );
        assert!(findings.iter().all(|f| f.kind != Kind::Healthy));
        assert_eq!(worst(&findings), Severity::Critical);
    }

    #[test]
    fn failing_connects_are_exhaustion_now() {
        let mut ev = evidence(facts((40000, 40003), 0));
        client_storm(&mut ev, 0);
        for _ in 0..30 {
            ev.connect_failed(&ConnectFailure {
                ts_ns: 0,
                skaddr: 1,
                id: SockId {
                    netns: NS,
                    tuple: tuple(0, 7000),
                },
                reason: FailReason::NoLocalPort,
                errno: None,
                waited_ns: None,
                owner: Some(owner(5)),
            });
        }
        let f = &diagnose(&ev, 0.5)[0];
        assert_eq!(f.kind, Kind::PortExhaustion);
        assert!(f.what.contains("EADDRNOTAVAIL"), "{}", f.what);
        assert!(
            f.consequence.starts_with("30 connects failed"),
            "{}",
            f.consequence
        );
    }

    #[test]
    fn reuse_that_applies_is_not_offered_and_a_wide_range_is_not_widened() {
        let mut ev = evidence(facts((1024, 65535), 1));
        client_storm(&mut ev, 600);
        let findings = diagnose(&ev, 0.5);
        let f = findings
            .iter()
            .find(|f| f.kind == Kind::PortPressure)
            .expect("pressure");
        assert!(
            f.fixes
                .iter()
                .all(|x| x.action != "tcp_tw_reuse" && x.action != "ip_local_port_range")
        );
    }

    #[test]
    fn a_server_closing_first_is_told_to_let_clients_close_not_tw_reuse() {
        let mut ev = evidence(facts((32768, 60999), 0));
        for i in 0..200u16 {
            let c = close(8080, 50000 + i, Role::Server, Closer::Local, CloseKind::Fin);
            ev.time_wait.push((c.id, Role::Server));
            ev.close(&c);
        }
        let findings = diagnose(&ev, 0.5);
        let f = findings
            .iter()
            .find(|f| f.kind == Kind::ServerClosesFirst)
            .expect("server_closes_first");
        assert_eq!(f.place.lport, Some(8080));
        assert!(f.fixes.iter().all(|x| x.action != "tcp_tw_reuse"));
        assert!(
            findings
                .iter()
                .all(|f| f.kind != Kind::PortExhaustion && f.kind != Kind::PortPressure)
        );
        // Informational: the host is healthy for ports.
        assert_eq!(findings.last().unwrap().kind, Kind::Healthy);
    }

    #[test]
    fn refused_time_wait_sockets_are_an_overflow() {
        let mut ev = evidence(Facts {
            max_tw_buckets: 100,
            ..facts((32768, 60999), 0)
        });
        for i in 0..300u16 {
            let mut c = close(8080, 50000 + i, Role::Server, Closer::Local, CloseKind::Fin);
            c.tw_refused = i >= 100;
            c.time_wait = i < 100;
            ev.time_wait
                .extend((i < 100).then_some((c.id, Role::Server)));
            ev.close(&c);
        }
        let f = &diagnose(&ev, 0.5)[0];
        assert_eq!(
            (f.kind, f.severity),
            (Kind::TimewaitOverflow, Severity::Critical)
        );
        assert!(f.evidence.contains(&("tw_refused", Value::Count(200))));
        assert!(
            f.fixes[1].detail.contains("tcp_max_tw_buckets=1625"),
            "{}",
            f.fixes[1].detail
        );
    }

    #[test]
    fn resets_name_the_process_and_are_no_fix() {
        let mut ev = evidence(facts((32768, 60999), 2));
        for i in 0..50u16 {
            ev.close(&close(
                8080,
                50000 + i,
                Role::Server,
                Closer::Local,
                CloseKind::RstSent,
            ));
        }
        let f = diagnose(&ev, 0.5)
            .into_iter()
            .find(|f| f.kind == Kind::RstCloses)
            .expect("rst_closes");
        assert_eq!(f.place.processes, ["test"]);
        assert_eq!(f.fixes[0].action, "close_with_fin");
    }

    #[test]
    fn a_quiet_host_is_healthy_and_a_lowered_fin_timeout_is_called_out() {
        let ev = evidence(facts((32768, 60999), 2));
        let findings = diagnose(&ev, 0.5);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].kind, Kind::Healthy);
        assert_eq!(worst(&findings), Severity::Info);
        assert!(
            fin_timeout_note(&Facts {
                fin_timeout: 10,
                ..Facts::default()
            })
            .is_some_and(|f| f.detail.contains("not TIME_WAIT"))
        );
    }

    #[test]
    fn a_bind_refused_over_time_wait_asks_for_so_reuseaddr() {
        let mut ev = evidence(facts((32768, 60999), 0));
        let mut id = SockId {
            netns: NS,
            tuple: tuple(8080, 0),
        };
        for _ in 0..3 {
            ev.bind_failed(&BindFailure {
                ts_ns: 1,
                skaddr: 1,
                id,
                reuseaddr: false,
                reuseport: false,
                time_wait_on_port: Some(40),
                owner: Some(owner(5)),
            });
        }
        // A client binding a fixed source port: its TIME_WAIT ends there.
        id.tuple.lport = 40000;
        ev.time_wait.push((
            SockId {
                netns: NS,
                tuple: tuple(40000, 7000),
            },
            Role::Client,
        ));
        ev.bind_failed(&BindFailure {
            ts_ns: 1,
            skaddr: 2,
            id,
            reuseaddr: true,
            reuseport: false,
            time_wait_on_port: Some(1),
            owner: Some(owner(6)),
        });
        let findings = diagnose(&ev, 0.5);
        let binds: Vec<_> = findings
            .iter()
            .filter(|f| f.kind == Kind::BindInUse)
            .collect();
        assert_eq!(binds.len(), 2, "{findings:#?}");
        let server = binds[0];
        assert_eq!(server.severity, Severity::Critical);
        assert_eq!(server.place.lport, Some(8080));
        assert!(
            server.what.contains("40 TIME_WAIT sockets"),
            "{}",
            server.what
        );
        assert!(server.consequence.contains("EADDRNOTAVAIL at connect()"));
        assert_eq!(server.fixes[0].action, "so_reuseaddr");
        assert!(
            server.fixes[0]
                .detail
                .contains("set SO_REUSEADDR on the socket of test")
        );
        let client = binds[1];
        assert_eq!(client.fixes[0].action, "no_fixed_source_port");
        assert!(client.fixes[1].detail.contains("sets SO_REUSEADDR already"));
    }

    #[test]
    fn a_bind_refused_by_a_live_socket_names_no_time_wait_fix() {
        let mut ev = evidence(facts((32768, 60999), 0));
        ev.listeners.insert((NS, 8080), 77);
        ev.bind_failed(&BindFailure {
            ts_ns: 1,
            skaddr: 1,
            id: SockId {
                netns: NS,
                tuple: tuple(8080, 0),
            },
            reuseaddr: true,
            reuseport: false,
            time_wait_on_port: Some(0),
            owner: Some(owner(5)),
        });
        let findings = diagnose(&ev, 0.5);
        let f = findings.iter().find(|f| f.kind == Kind::BindInUse).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.what.ends_with("a listener holds the port"), "{}", f.what);
        assert_eq!(f.fixes.len(), 1);
        assert_eq!(f.fixes[0].action, "find_holder");
    }
}
