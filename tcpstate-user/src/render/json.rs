//! The JSON Lines printer (schema version 1, see `docs/schema.md`): one
//! object per line, `type` first. Records about sockets, written for every
//! transition, go through the [`encode`] encoder; rare ones (summaries,
//! `timewait` totals) through serde.

use std::{borrow::Cow, collections::BTreeMap, io::Write, net::IpAddr};

use serde::Serialize;

use super::{
    Frame, Host, Losses, NsFigures, Out, Printer, Rates, Report, Summary,
    encode::{self, Fields, Value, fields},
    time::{Ts, ms},
};
use crate::{
    diagnose::findings::{self, Finding},
    host::clock::Clock,
    sock::{Owner, SockId},
    track::{
        timewait::{Entry, ExitReason, Source, TwSink},
        tracker::{BindFailure, Close, Closer, ConnectFailure, FailReason, Role, Sink, Transition},
    },
};

/// A kernel address as `{:#x}` prints it: `0xffff888102e24a00`.
struct Hex(u64);

impl Value for Hex {
    fn write_json(&self, out: &mut Vec<u8>) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 18];
        let mut start = buf.len();
        let mut n = self.0;
        loop {
            start -= 1;
            buf[start] = DIGITS[(n & 0xf) as usize];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        start -= 2;
        buf[start..start + 2].copy_from_slice(b"0x");
        encode::plain_str(&buf[start..], out);
    }
}

fields! {
    /// The socket-naming fields every record carries.
    struct SockJson {
        family: &'static str,
        laddr: IpAddr,
        lport: u16,
        raddr: IpAddr,
        rport: u16,
        netns: u32,
    }
}

impl SockJson {
    fn new(id: &SockId) -> SockJson {
        let t = &id.tuple;
        SockJson {
            family: t.family.as_str(),
            laddr: t.laddr,
            lport: t.lport,
            raddr: t.raddr,
            rport: t.rport,
            netns: id.netns,
        }
    }
}

/// The fields of one JSON object about a socket, after its `type`: `ts`
/// and the socket's fields, then the record's own.
struct Record<F> {
    ts: Ts,
    sock: SockJson,
    own: F,
}

impl<F: Fields> Fields for Record<F> {
    fn write_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"ts\":");
        self.ts.write_json(out);
        self.sock.write_fields(out);
        self.own.write_fields(out);
    }
}

fields! {
    struct TransitionJson<'a> {
        old: &'static str,
        new: &'static str,
        in_old_ms: Option<f64>,
        pid: Option<u32>,
        comm: Option<Cow<'a, str>>,
        skaddr: Hex,
    }
}

fields! {
    struct CloseJson<'a> {
        role: &'static str,
        closer: &'static str,
        kind: &'static str,
        time_wait: bool,
        tw_refused: bool,
        lifetime_ms: Option<f64>,
        pid: Option<u32>,
        comm: Option<Cow<'a, str>>,
    }
}

fields! {
    struct ConnectFailedJson<'a> {
        reason: &'static str,
        errno: Option<Cow<'static, str>>,
        waited_ms: Option<f64>,
        pid: Option<u32>,
        comm: Option<Cow<'a, str>>,
    }
}

fields! {
    struct BindFailedJson<'a> {
        errno: &'static str,
        reuseaddr: bool,
        reuseport: bool,
        time_wait_on_port: Option<u64>,
        pid: Option<u32>,
        comm: Option<Cow<'a, str>>,
    }
}

fields! {
    struct TwEnterJson<'a> {
        role: &'static str,
        closer: &'static str,
        expires_at: Ts,
        pid: Option<u32>,
        comm: Option<Cow<'a, str>>,
        source: &'static str,
    }
}

fields! {
    struct TwExitJson {
        reason: &'static str,
        lived_ms: f64,
    }
}

fields! {
    /// One row of `timewait --once --json`.
    struct TwEntryJson<'a> {
        role: &'static str,
        closer: &'static str,
        pid: Option<u32>,
        comm: Option<Cow<'a, str>>,
        entered_at: Ts,
        expires_in_ms: f64,
        source: &'static str,
    }
}

#[derive(Serialize)]
struct SummaryJson {
    r#type: &'static str,
    events: u64,
    lost: u64,
    lost_by_reason: Losses,
    duration_ms: f64,
    untracked: u64,
    unfinished: u64,
    rescued: u64,
    late: u64,
}

/// One refresh of the live `timewait` view.
#[derive(Serialize)]
struct TotalsJson {
    r#type: &'static str,
    ts: Ts,
    time_wait: usize,
    server: usize,
    client: usize,
    unknown_role: usize,
    closer_local: usize,
    closer_simultaneous: usize,
    closer_unknown: usize,
    traced: usize,
    kernel: usize,
    entered_per_s: f64,
    exited_per_s: f64,
    expired: u64,
    reused: u64,
    gone: u64,
    overflow: u64,
    missed_by_tracing: u64,
    cap_dropped: u64,
    lost: u64,
    /// Userspace filters apply to every figure but `lost` and
    /// `cap_dropped`, which are host-wide.
    filtered: bool,
    /// tcpstate's own namespace's limits, as before `namespaces`.
    tcp_max_tw_buckets: u64,
    tcp_max_tw_buckets_headroom: i64,
    tcp_timewait_overflow: u64,
    port_range: (u16, u16),
    tcp_tw_reuse: u8,
    /// Failed `connect()`s since the start, by reason.
    connect_failed: Option<BTreeMap<&'static str, u64>>,
    pools: Vec<PoolJson>,
    namespaces: Vec<NamespaceJson>,
}

/// One namespace in view, judged by its own settings (`null` when they were
/// never read).
#[derive(Serialize)]
struct NamespaceJson {
    netns: u32,
    netns_name: Option<String>,
    /// The container its processes run in (`containerd://ID`).
    container: Option<String>,
    /// The UID of the Kubernetes pod it belongs to.
    pod: Option<String>,
    time_wait: usize,
    tcp_max_tw_buckets: Option<u64>,
    tcp_max_tw_buckets_headroom: Option<i64>,
    tcp_timewait_overflow: Option<u64>,
    port_range: Option<(u16, u16)>,
    reserved_ports: Option<u32>,
    tcp_tw_reuse: Option<u8>,
    tcp_timestamps: Option<u8>,
    tw_recycled: Option<u64>,
    tw_killed: Option<u64>,
    tcp_fin_timeout: Option<u32>,
    tw_refused: Option<u64>,
}

impl NamespaceJson {
    fn new(n: &NsFigures) -> NamespaceJson {
        NamespaceJson {
            netns: n.netns,
            netns_name: n.name.clone(),
            container: n
                .workload
                .as_ref()
                .and_then(|w| w.container())
                .map(|c| c.uri()),
            pod: n
                .workload
                .as_ref()
                .and_then(|w| w.pod_uid())
                .map(str::to_string),
            time_wait: n.time_wait,
            tcp_max_tw_buckets: n.facts.map(|f| f.max_tw_buckets),
            tcp_max_tw_buckets_headroom: n.headroom(),
            tcp_timewait_overflow: n.facts.map(|f| f.tw_overflow),
            port_range: n.facts.map(|f| f.port_range),
            reserved_ports: n.facts.map(|f| f.reserved),
            tcp_tw_reuse: n.facts.map(|f| f.tw_reuse),
            tcp_timestamps: n.facts.map(|f| f.timestamps),
            tw_recycled: n.facts.map(|f| f.tw_recycled),
            tw_killed: n.facts.map(|f| f.tw_killed),
            tcp_fin_timeout: n.facts.map(|f| f.fin_timeout),
            tw_refused: n.tw_refused,
        }
    }
}

/// The `host` object: a recording's context.
#[derive(Serialize)]
struct HostJson {
    r#type: &'static str,
    ts: Ts,
    tw_len_ms: f64,
    own_netns: Option<u32>,
    binds_traced: bool,
    namespaces: Vec<NamespaceJson>,
}

/// One `diagnose` finding.
#[derive(Serialize)]
struct FindingJson<'a> {
    r#type: &'static str,
    kind: &'static str,
    severity: &'static str,
    netns: Option<u32>,
    netns_name: Option<&'a str>,
    r#where: WhereJson<'a>,
    what: &'a str,
    evidence: EvidenceJson<'a>,
    consequence: &'a str,
    fixes: Vec<FixJson<'a>>,
}

#[derive(Serialize)]
struct WhereJson<'a> {
    laddr: Option<IpAddr>,
    lport: Option<u16>,
    raddr: Option<IpAddr>,
    rport: Option<u16>,
    processes: &'a [String],
}

#[derive(Serialize)]
struct FixJson<'a> {
    action: &'static str,
    detail: &'a str,
}

/// The evidence as one object, in the finding's order.
struct EvidenceJson<'a>(&'a [(&'static str, findings::Value)]);

impl Serialize for EvidenceJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, v)| (name, EvidenceValue(v))))
    }
}

struct EvidenceValue<'a>(&'a findings::Value);

impl Serialize for EvidenceValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            findings::Value::Count(n) => s.serialize_u64(*n),
            findings::Value::Real(x) | findings::Value::Share(x) => {
                s.serialize_f64((x * 1000.0).round() / 1000.0)
            }
            findings::Value::Text(t) => s.serialize_str(t),
        }
    }
}

/// The end of a `diagnose` report.
#[derive(Serialize)]
struct DiagnosisSummaryJson<'a> {
    r#type: &'static str,
    severity: &'static str,
    findings: usize,
    source: &'static str,
    observed_ms: f64,
    events: Option<u64>,
    lost: u64,
    gaps: &'a [String],
}

/// `serve`'s `/findings`: the live diagnosis as one JSON document, each
/// finding as `diagnose --json` writes it.
pub fn findings_document(found: &[Finding], window_s: f64) -> String {
    #[derive(Serialize)]
    struct Document<'a> {
        severity: &'static str,
        window_s: f64,
        findings: Vec<FindingJson<'a>>,
    }
    let document = Document {
        severity: findings::worst(found).as_str(),
        window_s,
        findings: found.iter().map(FindingJson::new).collect(),
    };
    serde_json::to_string(&document).expect("findings serialize")
}

impl<'a> FindingJson<'a> {
    fn new(f: &'a Finding) -> FindingJson<'a> {
        let p = &f.place;
        FindingJson {
            r#type: "finding",
            kind: f.kind.as_str(),
            severity: f.severity.as_str(),
            netns: p.netns,
            netns_name: p.netns_name.as_deref(),
            r#where: WhereJson {
                laddr: p.laddr,
                lport: p.lport,
                raddr: p.raddr,
                rport: p.rport,
                processes: &p.processes,
            },
            what: &f.what,
            evidence: EvidenceJson(&f.evidence),
            consequence: &f.consequence,
            fixes: f
                .fixes
                .iter()
                .map(|x| FixJson {
                    action: x.action,
                    detail: &x.detail,
                })
                .collect(),
        }
    }
}

/// One pool of `timewait --once --json`.
#[derive(Serialize)]
struct PoolRecord<'a> {
    r#type: &'static str,
    ts: Ts,
    #[serde(flatten)]
    pool: &'a PoolJson,
}

#[derive(Serialize)]
struct PoolJson {
    netns: u32,
    netns_name: Option<String>,
    /// Ports the namespace's range offers.
    ports: u32,
    laddr: IpAddr,
    raddr: IpAddr,
    rport: u16,
    time_wait: u64,
    established: u64,
    rate_per_s: f64,
    used: f64,
    projected: f64,
    flagged: bool,
    tw_reuse_applies: bool,
    ports_left: u64,
    connect_failed_per_s: f64,
    no_local_port_per_s: f64,
    /// The process most of its sockets belong to.
    process: Option<String>,
}

/// Writes JSON Lines.
pub struct Json<W: Write> {
    out: Out<W>,
    /// The line being written, kept for its allocation.
    line: Vec<u8>,
}

impl<W: Write> Json<W> {
    pub fn new(w: W, clock: Clock) -> Json<W> {
        Json {
            out: Out::new(w, clock),
            line: Vec::with_capacity(512),
        }
    }

    /// Writes one object through serde.
    fn serde_line(&mut self, value: &impl Serialize) {
        self.line.clear();
        // Serialising plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.line, value);
        self.line.push(b'\n');
        self.out.write(&self.line);
    }

    /// Writes one record about a socket.
    fn record(&mut self, r#type: &'static str, fields: &impl Fields) {
        self.line.clear();
        encode::line(r#type, fields, &mut self.line);
        self.out.write(&self.line);
    }

    /// One `timewait_entry` object (`now_ns`: when the table was read).
    fn tw_entry(&mut self, e: &Entry, now_ns: u64) {
        let ts = self.out.stamp(now_ns);
        let entered_at = self.out.stamp(e.entered_ns);
        self.record(
            "timewait_entry",
            &Record {
                ts,
                sock: SockJson::new(&e.id),
                own: TwEntryJson {
                    role: e.role.as_str(),
                    closer: e.closer.as_str(),
                    pid: e.owner.map(|o| o.pid),
                    comm: e.owner.as_ref().map(|o| o.comm.as_str()),
                    entered_at,
                    expires_in_ms: ms(e.expires_ns.saturating_sub(now_ns)),
                    source: e.source.as_str(),
                },
            },
        );
    }

    fn totals(&mut self, f: &Frame<'_>, rates: Rates) {
        let count = |p: &dyn Fn(&Entry) -> bool| f.entries.iter().filter(|e| p(e)).count();
        let own = f.namespaces.first().and_then(|n| n.facts);
        let totals = TotalsJson {
            r#type: "timewait_summary",
            ts: self.out.stamp(f.now_ns),
            time_wait: f.entries.len(),
            server: count(&|e| e.role == Role::Server),
            client: count(&|e| e.role == Role::Client),
            unknown_role: count(&|e| e.role == Role::Unknown),
            closer_local: count(&|e| e.closer == Closer::Local),
            closer_simultaneous: count(&|e| e.closer == Closer::Simultaneous),
            closer_unknown: count(&|e| e.closer == Closer::Unknown || e.closer == Closer::Remote),
            traced: count(&|e| e.source == Source::Traced),
            kernel: count(&|e| e.source == Source::Kernel),
            entered_per_s: rates.entered_per_s,
            exited_per_s: rates.exited_per_s,
            expired: f.stats.exited(ExitReason::Expired),
            reused: f.stats.exited(ExitReason::Reused),
            gone: f.stats.exited(ExitReason::Gone),
            overflow: f.stats.exited(ExitReason::Overflow),
            missed_by_tracing: f.stats.missed,
            cap_dropped: f.stats.dropped,
            lost: f.lost,
            filtered: f.filtered,
            tcp_max_tw_buckets: own.map_or(0, |f| f.max_tw_buckets),
            tcp_max_tw_buckets_headroom: f
                .namespaces
                .first()
                .and_then(NsFigures::headroom)
                .unwrap_or_default(),
            tcp_timewait_overflow: own.map_or(0, |f| f.tw_overflow),
            port_range: own.map_or((0, 0), |f| f.port_range),
            tcp_tw_reuse: own.map_or(0, |f| f.tw_reuse),
            connect_failed: f
                .connect_failed
                .map(|n| FailReason::ALL.iter().map(|r| r.as_str()).zip(n).collect()),
            namespaces: f.namespaces.iter().map(NamespaceJson::new).collect(),
            pools: pools(f),
        };
        self.serde_line(&totals);
    }
}

/// The pools of a frame, as JSON objects.
fn pools(f: &Frame<'_>) -> Vec<PoolJson> {
    f.pools
        .iter()
        .map(|p| PoolJson {
            netns: p.key.netns,
            netns_name: f
                .namespaces
                .iter()
                .find(|n| n.netns == p.key.netns)
                .and_then(|n| n.name.clone()),
            ports: p.range_size,
            laddr: p.key.laddr,
            raddr: p.key.raddr,
            rport: p.key.rport,
            time_wait: p.time_wait,
            established: p.established,
            rate_per_s: p.rate,
            used: p.used,
            projected: p.projected,
            flagged: p.flagged,
            tw_reuse_applies: p.reuse_applies,
            ports_left: p.left,
            connect_failed_per_s: p.failures.per_s,
            no_local_port_per_s: p.failures.no_local_port_per_s,
            process: p.process.map(|c| c.as_str().into_owned()),
        })
        .collect()
}

fn comm_of(owner: &Option<Owner>) -> Option<Cow<'_, str>> {
    owner.as_ref().map(|o| o.comm.as_str())
}

impl<W: Write> Sink for Json<W> {
    fn transition(&mut self, t: &Transition) {
        let ts = self.out.stamp(t.ts_ns);
        self.record(
            "transition",
            &Record {
                ts,
                sock: SockJson::new(&t.id),
                own: TransitionJson {
                    old: t.old.as_str(),
                    new: t.new.as_str(),
                    in_old_ms: t.in_old_ns.map(ms),
                    pid: t.owner.map(|o| o.pid),
                    comm: comm_of(&t.owner),
                    skaddr: Hex(t.skaddr),
                },
            },
        );
    }

    fn close(&mut self, c: &Close) {
        let ts = self.out.stamp(c.ts_ns);
        self.record(
            "close",
            &Record {
                ts,
                sock: SockJson::new(&c.id),
                own: CloseJson {
                    role: c.role.as_str(),
                    closer: c.closer.as_str(),
                    kind: c.kind.as_str(),
                    time_wait: c.time_wait,
                    tw_refused: c.tw_refused,
                    lifetime_ms: c.lifetime_ns.map(ms),
                    pid: c.owner.map(|o| o.pid),
                    comm: comm_of(&c.owner),
                },
            },
        );
    }

    fn connect_failed(&mut self, f: &ConnectFailure) {
        let ts = self.out.stamp(f.ts_ns);
        self.record(
            "connect_failed",
            &Record {
                ts,
                sock: SockJson::new(&f.id),
                own: ConnectFailedJson {
                    reason: f.reason.as_str(),
                    errno: f.errno_name(),
                    waited_ms: f.waited_ns.map(ms),
                    pid: f.owner.map(|o| o.pid),
                    comm: comm_of(&f.owner),
                },
            },
        );
    }

    fn bind_failed(&mut self, b: &BindFailure) {
        let ts = self.out.stamp(b.ts_ns);
        self.record(
            "bind_failed",
            &Record {
                ts,
                sock: SockJson::new(&b.id),
                own: BindFailedJson {
                    errno: "EADDRINUSE",
                    reuseaddr: b.reuseaddr,
                    reuseport: b.reuseport,
                    time_wait_on_port: b.time_wait_on_port.map(|n| n as u64),
                    pid: b.owner.map(|o| o.pid),
                    comm: comm_of(&b.owner),
                },
            },
        );
    }
}

impl<W: Write> TwSink for Json<W> {
    fn tw_enter(&mut self, e: &Entry) {
        let ts = self.out.stamp(e.entered_ns);
        let expires_at = self.out.stamp(e.expires_ns);
        self.record(
            "timewait_enter",
            &Record {
                ts,
                sock: SockJson::new(&e.id),
                own: TwEnterJson {
                    role: e.role.as_str(),
                    closer: e.closer.as_str(),
                    expires_at,
                    pid: e.owner.map(|o| o.pid),
                    comm: e.owner.as_ref().map(|o| o.comm.as_str()),
                    source: e.source.as_str(),
                },
            },
        );
    }

    fn tw_exit(&mut self, e: &Entry, reason: ExitReason, at_ns: u64) {
        let ts = self.out.stamp(at_ns);
        self.record(
            "timewait_exit",
            &Record {
                ts,
                sock: SockJson::new(&e.id),
                own: TwExitJson {
                    reason: reason.as_str(),
                    lived_ms: ms(at_ns.saturating_sub(e.entered_ns)),
                },
            },
        );
    }
}

impl<W: Write> Printer for Json<W> {
    fn host(&mut self, h: &Host<'_>) {
        let ts = self.out.stamp(h.now_ns);
        self.serde_line(&HostJson {
            r#type: "host",
            ts,
            tw_len_ms: h.tw_len_ms,
            own_netns: h.own_netns,
            binds_traced: h.binds_traced,
            namespaces: h.namespaces.iter().map(NamespaceJson::new).collect(),
        });
    }

    /// One `finding` per finding, then the report's `summary`.
    fn report(&mut self, r: &Report<'_>) {
        for f in r.findings {
            self.serde_line(&FindingJson::new(f));
        }
        self.serde_line(&DiagnosisSummaryJson {
            r#type: "summary",
            severity: findings::worst(r.findings).as_str(),
            findings: r.findings.len(),
            source: r.source,
            observed_ms: r.observed_s * 1000.0,
            events: r.events,
            lost: r.lost,
            gaps: r.gaps,
        });
        self.out.flush();
    }

    /// Live: one `timewait_summary` object. `--once`: one `timewait_entry`
    /// per socket, soonest expiry first, then one `pool` per pool.
    fn timewait(&mut self, frame: &Frame<'_>) {
        match frame.rates {
            Some(rates) => self.totals(frame, rates),
            None => {
                let mut entries = frame.entries.clone();
                entries.sort_by_key(|e| e.expires_ns);
                for e in entries {
                    self.tw_entry(e, frame.now_ns);
                }
                let ts = self.out.stamp(frame.now_ns);
                for pool in &pools(frame) {
                    self.serde_line(&PoolRecord {
                        r#type: "pool",
                        ts,
                        pool,
                    });
                }
            }
        }
    }

    /// Always, even without tracing: consumers expect the summary last.
    fn summary(&mut self, s: &Summary) {
        self.serde_line(&SummaryJson {
            r#type: "summary",
            events: s.events,
            lost: s.lost.total(),
            lost_by_reason: s.lost,
            duration_ms: s.duration_ms,
            untracked: s.untracked,
            unfinished: s.unfinished,
            rescued: s.rescued,
            late: s.late,
        });
        self.out.flush();
    }

    fn flush(&mut self) {
        self.out.flush();
    }

    fn error(&self) -> Option<&std::io::Error> {
        self.out.error()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::{
        render::tests::{clock, transition},
        sock::{Comm, Tuple},
        track::{
            timewait::TwOwner,
            tracker::{CloseKind, tests::owner, tests::tuple},
        },
    };

    fn render(f: impl FnOnce(&mut Json<&mut Vec<u8>>)) -> String {
        let mut buf = Vec::new();
        let mut r = Json::new(&mut buf, clock());
        f(&mut r);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn transition_json_matches_the_schema() {
        let out = render(|r| r.transition(&transition()));
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["type"], "transition");
        assert_eq!(v["ts"], "2025-11-24T16:00:00.001500Z");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["laddr"], "127.0.0.1");
        assert_eq!(v["lport"], 9098);
        assert_eq!(v["raddr"], "127.0.0.1");
        assert_eq!(v["rport"], 41566);
        assert_eq!(v["old"], "ESTABLISHED");
        assert_eq!(v["new"], "FIN_WAIT1");
        assert_eq!(v["in_old_ms"], 12.3);
        assert_eq!(v["pid"], 1234);
        assert_eq!(v["comm"], "test");
        assert_eq!(v["netns"], 4026531840u64);
        assert_eq!(v["skaddr"], "0xffff888102e24a00");
    }

    #[test]
    fn unknown_values_are_null() {
        let mut t = transition();
        t.owner = None;
        t.in_old_ns = None;
        let out = render(|r| r.transition(&t));
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert!(v["pid"].is_null() && v["comm"].is_null() && v["in_old_ms"].is_null());
    }

    #[test]
    fn close_and_summary_json() {
        let c = Close {
            ts_ns: 2_000_000,
            skaddr: 1,
            id: SockId {
                netns: 7,
                tuple: tuple(80, 40000),
            },
            role: Role::Server,
            closer: Closer::Local,
            kind: CloseKind::Fin,
            time_wait: true,
            tw_refused: false,
            lifetime_ns: Some(1_532_000_000),
            owner: None,
        };
        let out = render(|r| {
            r.close(&c);
            r.summary(&Summary {
                traced: true,
                events: 10,
                lost: Losses::default(),
                duration_ms: 1000.0,
                untracked: 0,
                unfinished: 0,
                rescued: 0,
                late: 0,
            });
        });
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "close");
        assert_eq!(lines[0]["role"], "server");
        assert_eq!(lines[0]["closer"], "local");
        assert_eq!(lines[0]["kind"], "fin");
        assert_eq!(lines[0]["time_wait"], true);
        assert_eq!(lines[0]["lifetime_ms"], 1532.0);
        assert_eq!(lines[0]["netns"], 7);
        assert_eq!(lines[1]["type"], "summary");
        assert_eq!(lines[1]["events"], 10);
        assert_eq!(lines[1]["lost"], 0);
    }

    /// Every JSON record type, byte for byte: the format is a contract.
    #[test]
    fn json_bytes_are_stable() {
        let mut t6 = transition();
        t6.id.tuple = Tuple::new(
            "2001:db8::1".parse().unwrap(),
            443,
            "::1".parse().unwrap(),
            1,
        );
        t6.id.netns = 0;
        t6.skaddr = 0;
        t6.in_old_ns = None;
        t6.owner = Some(Owner {
            pid: u32::MAX,
            tid: 1,
            comm: Comm::new("a\"b\\c\u{e9}"),
        });
        let c = Close {
            ts_ns: 2_000_000,
            skaddr: 1,
            id: SockId {
                netns: 7,
                tuple: tuple(80, 40000),
            },
            role: Role::Client,
            closer: Closer::Simultaneous,
            kind: CloseKind::RstReceived,
            time_wait: false,
            tw_refused: false,
            lifetime_ns: None,
            owner: Some(owner(1)),
        };
        let failed = ConnectFailure {
            ts_ns: 2_500_000,
            skaddr: 2,
            id: SockId {
                netns: 7,
                tuple: tuple(0, 8080),
            },
            reason: FailReason::NoLocalPort,
            errno: None,
            waited_ns: Some(12_000),
            owner: Some(owner(3)),
        };
        let key = SockId {
            netns: 9,
            tuple: Tuple::new(
                "10.1.255.0".parse().unwrap(),
                65535,
                "192.168.0.10".parse().unwrap(),
                0,
            ),
        };
        let mut e = Entry::new_for_test(key, Role::Server, Closer::Remote, Source::Kernel);
        e.entered_ns = 999_999_999_999;
        e.expires_ns = e.entered_ns + 60_000_000_001;
        let mut e2 = e;
        e2.owner = Some(TwOwner {
            pid: 0,
            comm: Comm::new("x"),
        });
        e2.source = Source::Traced;
        let out = render(|r| {
            r.transition(&transition());
            r.transition(&t6);
            r.close(&c);
            r.connect_failed(&failed);
            r.connect_failed(&ConnectFailure {
                reason: FailReason::Timeout,
                errno: None,
                waited_ns: None,
                owner: None,
                ..failed
            });
            r.tw_enter(&e);
            r.tw_enter(&e2);
            r.tw_exit(&e, ExitReason::Reused, e.entered_ns + 1_234);
            r.tw_exit(&e2, ExitReason::Expired, e.expires_ns + 7);
            r.tw_entry(&e, e.entered_ns + 1_000_000);
            r.tw_entry(&e2, e.expires_ns + 1);
            r.summary(&Summary {
                traced: true,
                events: 3,
                lost: Losses {
                    ring_full: 1,
                    nested: 2,
                    inferred: 5,
                    output: 3,
                    unread: 6,
                },
                duration_ms: 0.5,
                untracked: 2,
                unfinished: 3,
                rescued: 4,
                late: 8,
            });
        });
        let want = [
            r#"{"type":"transition","ts":"2025-11-24T16:00:00.001500Z","family":"ipv4","laddr":"127.0.0.1","lport":9098,"raddr":"127.0.0.1","rport":41566,"netns":4026531840,"old":"ESTABLISHED","new":"FIN_WAIT1","in_old_ms":12.3,"pid":1234,"comm":"test","skaddr":"0xffff888102e24a00"}"#,
            r#"{"type":"transition","ts":"2025-11-24T16:00:00.001500Z","family":"ipv6","laddr":"2001:db8::1","lport":443,"raddr":"::1","rport":1,"netns":0,"old":"ESTABLISHED","new":"FIN_WAIT1","in_old_ms":null,"pid":4294967295,"comm":"a\"b\\cé","skaddr":"0x0"}"#,
            r#"{"type":"close","ts":"2025-11-24T16:00:00.002000Z","family":"ipv4","laddr":"127.0.0.1","lport":80,"raddr":"127.0.0.1","rport":40000,"netns":7,"role":"client","closer":"simultaneous","kind":"rst_received","time_wait":false,"tw_refused":false,"lifetime_ms":null,"pid":1,"comm":"test"}"#,
            r#"{"type":"connect_failed","ts":"2025-11-24T16:00:00.002500Z","family":"ipv4","laddr":"127.0.0.1","lport":0,"raddr":"127.0.0.1","rport":8080,"netns":7,"reason":"no_local_port","errno":"EADDRNOTAVAIL","waited_ms":0.012,"pid":3,"comm":"test"}"#,
            r#"{"type":"connect_failed","ts":"2025-11-24T16:00:00.002500Z","family":"ipv4","laddr":"127.0.0.1","lport":0,"raddr":"127.0.0.1","rport":8080,"netns":7,"reason":"timeout","errno":null,"waited_ms":null,"pid":null,"comm":null}"#,
            r#"{"type":"timewait_enter","ts":"2025-11-24T16:16:39.999999Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"role":"server","closer":"remote","expires_at":"2025-11-24T16:17:40.000000Z","pid":null,"comm":null,"source":"kernel"}"#,
            r#"{"type":"timewait_enter","ts":"2025-11-24T16:16:39.999999Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"role":"server","closer":"remote","expires_at":"2025-11-24T16:17:40.000000Z","pid":0,"comm":"x","source":"traced"}"#,
            r#"{"type":"timewait_exit","ts":"2025-11-24T16:16:40.000001Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"reason":"reused","lived_ms":0.001}"#,
            r#"{"type":"timewait_exit","ts":"2025-11-24T16:17:40.000000Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"reason":"expired","lived_ms":60000.0}"#,
            r#"{"type":"timewait_entry","ts":"2025-11-24T16:16:40.000999Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"role":"server","closer":"remote","pid":null,"comm":null,"entered_at":"2025-11-24T16:16:39.999999Z","expires_in_ms":59999.0,"source":"kernel"}"#,
            r#"{"type":"timewait_entry","ts":"2025-11-24T16:17:40.000000Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"role":"server","closer":"remote","pid":0,"comm":"x","entered_at":"2025-11-24T16:16:39.999999Z","expires_in_ms":0.0,"source":"traced"}"#,
            r#"{"type":"summary","events":3,"lost":17,"lost_by_reason":{"ring_full":1,"nested":2,"inferred":5,"output":3,"unread":6},"duration_ms":0.5,"untracked":2,"unfinished":3,"rescued":4,"late":8}"#,
        ];
        assert_eq!(out.lines().collect::<Vec<_>>(), want);
    }
}
