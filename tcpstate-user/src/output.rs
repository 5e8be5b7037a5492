//! Renderers: the readable table and JSON Lines (schema version 1, see
//! README), for transitions, closes and the final summary.
//!
//! Write errors are kept, not raised: the caller checks [`Renderer::error`]
//! after each batch, so a closed pipe ends the program quietly.

use std::{
    borrow::Cow,
    fmt,
    io::{self, Write},
    net::IpAddr,
    time::SystemTime,
};

use serde::{Serialize, Serializer};

use crate::{
    event::{Clock, Owner, Tuple},
    json::{self, Fields, Value, fields},
    timewait::{Entry, ExitReason, Source, TwSink},
    tracker::{Close, CloseKind, Closer, Role, Sink, Transition},
};

/// Totals printed when the program ends.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Records read from the kernel.
    pub events: u64,
    /// Records the kernel could not write (ring buffer full).
    pub lost: u64,
    pub duration_ms: f64,
    /// Connections not tracked because the tracker's table was full.
    pub untracked: u64,
    /// Connections whose end was never seen (see `tracker::Stats`).
    pub unfinished: u64,
    /// Events the kernel skipped for a classic program (nested runs) that
    /// the rescue programs recorded: included in `events`, not lost.
    pub rescued: u64,
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Client => "client",
        Role::Server => "server",
        Role::Unknown => "unknown",
    }
}

pub fn closer_name(c: Closer) -> &'static str {
    match c {
        Closer::Local => "local",
        Closer::Remote => "remote",
        Closer::Simultaneous => "simultaneous",
        Closer::Unknown => "unknown",
    }
}

pub fn kind_name(k: CloseKind) -> &'static str {
    match k {
        CloseKind::Fin => "fin",
        CloseKind::RstSent => "rst_sent",
        CloseKind::RstReceived => "rst_received",
        CloseKind::Abort => "abort",
    }
}

pub fn reason_name(r: ExitReason) -> &'static str {
    match r {
        ExitReason::Expired => "expired",
        ExitReason::Reused => "reused",
        ExitReason::Gone => "gone",
    }
}

pub fn source_name(s: Source) -> &'static str {
    match s {
        Source::Traced => "traced",
        Source::Kernel => "kernel",
    }
}

/// `text(n)`, or nothing when `n` is zero: for counts worth a word only when
/// something happened.
fn unless_zero(n: u64, text: impl FnOnce(u64) -> String) -> String {
    if n == 0 { String::new() } else { text(n) }
}

/// Nanoseconds to fractional milliseconds, rounded to microseconds.
pub fn ms(ns: u64) -> f64 {
    (ns / 1000) as f64 / 1000.0
}

/// A time as RFC 3339 UTC with microseconds: `2026-11-24T06:44:52.123456Z`.
#[derive(Clone, Copy)]
pub struct Ts([u8; 27]);

impl Ts {
    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Value for Ts {
    fn write_json(&self, out: &mut Vec<u8>) {
        json::plain_str(&self.0, out);
    }
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Formats times, doing the calendar work once per second: records arrive
/// in bursts within the same second.
#[derive(Clone, Copy)]
pub struct Stamper {
    /// Wall-clock nanoseconds since the Unix epoch at monotonic zero
    /// (negative before it). Plain integers: `SystemTime`'s checked
    /// arithmetic showed in profiles.
    epoch_ns: i128,
    second: u64,
    /// `2026-11-24T06:44:52` for `second`.
    prefix: [u8; 19],
}

impl Stamper {
    pub fn new(clock: Clock) -> Stamper {
        let epoch_ns = match clock.wall(0).duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        };
        Stamper {
            epoch_ns,
            second: u64::MAX,
            prefix: [0; 19],
        }
    }

    /// The wall-clock time of kernel monotonic time `mono_ns`.
    pub fn stamp(&mut self, mono_ns: u64) -> Ts {
        // Times before the epoch print as the epoch; u64 nanoseconds last
        // until 2554.
        let since_epoch =
            (self.epoch_ns + i128::from(mono_ns)).clamp(0, i128::from(u64::MAX)) as u64;
        let second = since_epoch / 1_000_000_000;
        if second != self.second {
            let text = humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(second),
            )
            .to_string();
            self.prefix.copy_from_slice(&text.as_bytes()[..19]);
            self.second = second;
        }
        let mut out = [0u8; 27];
        out[..19].copy_from_slice(&self.prefix);
        out[19] = b'.';
        let mut micros = (since_epoch % 1_000_000_000 / 1000) as u32;
        for i in (20..26).rev() {
            out[i] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out[26] = b'Z';
        Ts(out)
    }
}

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
        json::plain_str(&buf[start..], out);
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
    fn new(tuple: &Tuple, netns: u32) -> SockJson {
        SockJson {
            family: tuple.family.name(),
            laddr: tuple.laddr,
            lport: tuple.lport,
            raddr: tuple.raddr,
            rport: tuple.rport,
            netns,
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
        lifetime_ms: Option<f64>,
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
    duration_ms: f64,
    untracked: u64,
    unfinished: u64,
    rescued: u64,
}

/// Formats records to a writer, as text or JSON Lines.
pub struct Renderer<W: Write> {
    w: W,
    json: bool,
    stamper: Stamper,
    header_done: bool,
    error: Option<io::Error>,
    /// The JSON line being written, kept for its allocation.
    line: Vec<u8>,
}

impl<W: Write> Renderer<W> {
    pub fn new(w: W, json: bool, clock: Clock) -> Renderer<W> {
        Renderer {
            w,
            json,
            stamper: Stamper::new(clock),
            header_done: false,
            error: None,
            line: Vec::with_capacity(512),
        }
    }

    /// Wall-clock time of kernel monotonic time `mono_ns`.
    pub fn stamp(&mut self, mono_ns: u64) -> Ts {
        self.stamper.stamp(mono_ns)
    }

    /// The first write error, if any (e.g. a closed pipe).
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    pub fn flush(&mut self) {
        let r = self.w.flush();
        self.keep(r);
    }

    /// Writes one JSON object as a line.
    pub fn json_line(&mut self, value: &impl Serialize) {
        if self.error.is_some() {
            return;
        }
        let r = serde_json::to_writer(&mut self.w, value)
            .map_err(io::Error::from)
            .and_then(|()| self.w.write_all(b"\n"));
        self.keep(r);
    }

    /// Writes one record about a socket as a JSON line.
    fn record(&mut self, r#type: &'static str, fields: &impl Fields) {
        if self.error.is_some() {
            return;
        }
        self.line.clear();
        json::line(r#type, fields, &mut self.line);
        let r = self.w.write_all(&self.line);
        self.keep(r);
    }

    /// Writes preformatted text.
    pub fn text(&mut self, args: fmt::Arguments<'_>) {
        if self.error.is_some() {
            return;
        }
        let r = self.w.write_fmt(args);
        self.keep(r);
    }

    fn keep(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    pub fn summary(&mut self, s: &Summary) {
        if self.json {
            self.json_line(&SummaryJson {
                r#type: "summary",
                events: s.events,
                lost: s.lost,
                duration_ms: s.duration_ms,
                untracked: s.untracked,
                unfinished: s.unfinished,
                rescued: s.rescued,
            });
        } else {
            eprintln!(
                "tcpstate: {} events, {} lost, {:.1} s{}{}{}",
                s.events,
                s.lost,
                s.duration_ms / 1000.0,
                unless_zero(s.rescued, |n| format!(
                    " ({n} skipped by the kernel for nested runs, recorded by the rescue programs)"
                )),
                unless_zero(s.untracked, |n| format!(
                    ", {n} connections untracked (table full)"
                )),
                unless_zero(s.unfinished, |n| format!(
                    ", {n} connections whose end was never seen (transitions missed)"
                )),
            );
        }
        self.flush();
    }

    /// One `timewait_entry` object (`now_ns`: when the table was read).
    pub fn tw_entry(&mut self, e: &Entry, now_ns: u64) {
        let ts = self.stamp(now_ns);
        let entered_at = self.stamp(e.entered_ns);
        self.record(
            "timewait_entry",
            &Record {
                ts,
                sock: SockJson::new(&e.key.tuple, e.key.netns),
                own: TwEntryJson {
                    role: role_name(e.role),
                    closer: closer_name(e.closer),
                    pid: e.owner.map(|o| o.pid),
                    comm: e.owner.as_ref().map(|o| o.comm.as_str()),
                    entered_at,
                    expires_in_ms: ms(e.expires_ns.saturating_sub(now_ns)),
                    source: source_name(e.source),
                },
            },
        );
    }

    fn header(&mut self) {
        if !self.header_done {
            self.header_done = true;
            self.text(format_args!(
                "{:<15} {:>7} {:<15} {:<30} {:<30} {:<26} {:>10}  {}\n",
                "TIME(UTC)", "PID", "COMM", "LOCAL", "REMOTE", "TRANSITION", "MS", "NOTE"
            ));
        }
    }
}

fn comm_of(owner: &Option<Owner>) -> Option<Cow<'_, str>> {
    owner.as_ref().map(|o| o.comm.as_str())
}

/// `addr:port`, with brackets for IPv6.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Time of day, `HH:MM:SS.micros`, UTC.
fn time_of_day(ts: Ts) -> String {
    // 2026-11-24T06:12:01.123456Z -> 06:12:01.123456
    ts.as_str()[11..26].to_owned()
}

impl<W: Write> Sink for Renderer<W> {
    fn transition(&mut self, t: &Transition) {
        let ts = self.stamp(t.ts_ns);
        if self.json {
            self.record(
                "transition",
                &Record {
                    ts,
                    sock: SockJson::new(&t.tuple, t.netns),
                    own: TransitionJson {
                        old: t.old.name(),
                        new: t.new.name(),
                        in_old_ms: t.in_old_ns.map(ms),
                        pid: t.owner.map(|o| o.pid),
                        comm: comm_of(&t.owner),
                        skaddr: Hex(t.skaddr),
                    },
                },
            );
            return;
        }
        self.header();
        let (pid, comm) = match &t.owner {
            Some(o) => (o.pid.to_string(), o.comm.as_str().into_owned()),
            None => ("-".into(), "-".into()),
        };
        let in_old = t.in_old_ns.map_or("-".into(), |n| format!("{:.3}", ms(n)));
        self.text(format_args!(
            "{:<15} {:>7} {:<15} {:<30} {:<30} {:<26} {:>10}  {}\n",
            time_of_day(ts),
            pid,
            comm,
            endpoint(t.tuple.laddr, t.tuple.lport),
            endpoint(t.tuple.raddr, t.tuple.rport),
            format!("{} -> {}", t.old, t.new),
            in_old,
            t.note.text()
        ));
    }

    fn close(&mut self, c: &Close) {
        if self.json {
            let ts = self.stamp(c.ts_ns);
            self.record(
                "close",
                &Record {
                    ts,
                    sock: SockJson::new(&c.tuple, c.netns),
                    own: CloseJson {
                        role: role_name(c.role),
                        closer: closer_name(c.closer),
                        kind: kind_name(c.kind),
                        time_wait: c.time_wait,
                        lifetime_ms: c.lifetime_ns.map(ms),
                        pid: c.owner.map(|o| o.pid),
                        comm: comm_of(&c.owner),
                    },
                },
            );
            return;
        }
        let lifetime = c
            .lifetime_ns
            .map_or(String::new(), |n| format!(", lived {:.3} ms", ms(n)));
        self.text(format_args!(
            "{:>25} closed: role {}, first close by {}, {}{}{}\n",
            "",
            role_name(c.role),
            closer_name(c.closer),
            kind_name(c.kind),
            if c.time_wait { ", TIME_WAIT here" } else { "" },
            lifetime
        ));
    }
}

impl<W: Write> TwSink for Renderer<W> {
    fn tw_enter(&mut self, e: &Entry) {
        let tuple = &e.key.tuple;
        if self.json {
            let ts = self.stamp(e.entered_ns);
            let expires_at = self.stamp(e.expires_ns);
            self.record(
                "timewait_enter",
                &Record {
                    ts,
                    sock: SockJson::new(tuple, e.key.netns),
                    own: TwEnterJson {
                        role: role_name(e.role),
                        closer: closer_name(e.closer),
                        expires_at,
                        pid: e.owner.map(|o| o.pid),
                        comm: e.owner.as_ref().map(|o| o.comm.as_str()),
                        source: source_name(e.source),
                    },
                },
            );
            return;
        }
        if e.source == Source::Kernel {
            let ts = self.stamp(e.entered_ns);
            self.text(format_args!(
                "{:<15} TIME_WAIT found in the kernel's table, missed by tracing: {} -> {} ({})\n",
                time_of_day(ts),
                endpoint(tuple.laddr, tuple.lport),
                endpoint(tuple.raddr, tuple.rport),
                role_name(e.role),
            ));
        }
    }

    fn tw_exit(&mut self, e: &Entry, reason: ExitReason, at_ns: u64) {
        let tuple = &e.key.tuple;
        if self.json {
            let ts = self.stamp(at_ns);
            self.record(
                "timewait_exit",
                &Record {
                    ts,
                    sock: SockJson::new(tuple, e.key.netns),
                    own: TwExitJson {
                        reason: reason_name(reason),
                        lived_ms: ms(at_ns.saturating_sub(e.entered_ns)),
                    },
                },
            );
            return;
        }
        let ts = self.stamp(at_ns);
        self.text(format_args!(
            "{:<15} TIME_WAIT ends ({}) after {:.1} s: {} -> {}\n",
            time_of_day(ts),
            reason_name(reason),
            ms(at_ns.saturating_sub(e.entered_ns)) / 1000.0,
            endpoint(tuple.laddr, tuple.lport),
            endpoint(tuple.raddr, tuple.rport),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::{
        event::{Comm, State},
        timewait::{Key, TwOwner},
        tracker::{
            Note,
            tests::{owner, tuple},
        },
    };

    fn clock() -> Clock {
        Clock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000))
    }

    fn transition() -> Transition {
        Transition {
            ts_ns: 1_500_000,
            skaddr: 0xffff_8881_02e2_4a00,
            netns: 4026531840,
            tuple: tuple(9098, 41566),
            old: State::ESTABLISHED,
            new: State::FIN_WAIT1,
            in_old_ns: Some(12_300_000),
            owner: Some(owner(1234)),
            note: Note::ActiveClose,
        }
    }

    fn render(f: impl FnOnce(&mut Renderer<&mut Vec<u8>>), json: bool) -> String {
        let mut buf = Vec::new();
        let mut r = Renderer::new(&mut buf, json, clock());
        f(&mut r);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn transition_json_matches_the_schema() {
        let out = render(|r| r.transition(&transition()), true);
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
        let out = render(|r| r.transition(&t), true);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert!(v["pid"].is_null() && v["comm"].is_null() && v["in_old_ms"].is_null());
    }

    #[test]
    fn close_and_summary_json() {
        let c = Close {
            ts_ns: 2_000_000,
            skaddr: 1,
            netns: 7,
            tuple: tuple(80, 40000),
            role: Role::Server,
            closer: Closer::Local,
            kind: CloseKind::Fin,
            time_wait: true,
            lifetime_ns: Some(1_532_000_000),
            owner: None,
        };
        let out = render(
            |r| {
                r.close(&c);
                r.summary(&Summary {
                    events: 10,
                    lost: 0,
                    duration_ms: 1000.0,
                    untracked: 0,
                    unfinished: 0,
                    rescued: 0,
                });
            },
            true,
        );
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
        t6.tuple = Tuple::new(
            "2001:db8::1".parse().unwrap(),
            443,
            "::1".parse().unwrap(),
            1,
        );
        t6.netns = 0;
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
            netns: 7,
            tuple: tuple(80, 40000),
            role: Role::Client,
            closer: Closer::Simultaneous,
            kind: CloseKind::RstReceived,
            time_wait: false,
            lifetime_ns: None,
            owner: Some(owner(1)),
        };
        let key = Key {
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
        let out = render(
            |r| {
                r.transition(&transition());
                r.transition(&t6);
                r.close(&c);
                r.tw_enter(&e);
                r.tw_enter(&e2);
                r.tw_exit(&e, ExitReason::Reused, e.entered_ns + 1_234);
                r.tw_exit(&e2, ExitReason::Expired, e.expires_ns + 7);
                r.tw_entry(&e, e.entered_ns + 1_000_000);
                r.tw_entry(&e2, e.expires_ns + 1);
                r.summary(&Summary {
                    events: 3,
                    lost: 1,
                    duration_ms: 0.5,
                    untracked: 2,
                    unfinished: 3,
                    rescued: 4,
                });
            },
            true,
        );
        let want = [
            r#"{"type":"transition","ts":"2025-11-24T16:00:00.001500Z","family":"ipv4","laddr":"127.0.0.1","lport":9098,"raddr":"127.0.0.1","rport":41566,"netns":4026531840,"old":"ESTABLISHED","new":"FIN_WAIT1","in_old_ms":12.3,"pid":1234,"comm":"test","skaddr":"0xffff888102e24a00"}"#,
            r#"{"type":"transition","ts":"2025-11-24T16:00:00.001500Z","family":"ipv6","laddr":"2001:db8::1","lport":443,"raddr":"::1","rport":1,"netns":0,"old":"ESTABLISHED","new":"FIN_WAIT1","in_old_ms":null,"pid":4294967295,"comm":"a\"b\\cé","skaddr":"0x0"}"#,
            r#"{"type":"close","ts":"2025-11-24T16:00:00.002000Z","family":"ipv4","laddr":"127.0.0.1","lport":80,"raddr":"127.0.0.1","rport":40000,"netns":7,"role":"client","closer":"simultaneous","kind":"rst_received","time_wait":false,"lifetime_ms":null,"pid":1,"comm":"test"}"#,
            r#"{"type":"timewait_enter","ts":"2025-11-24T16:16:39.999999Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"role":"server","closer":"remote","expires_at":"2025-11-24T16:17:40.000000Z","pid":null,"comm":null,"source":"kernel"}"#,
            r#"{"type":"timewait_enter","ts":"2025-11-24T16:16:39.999999Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"role":"server","closer":"remote","expires_at":"2025-11-24T16:17:40.000000Z","pid":0,"comm":"x","source":"traced"}"#,
            r#"{"type":"timewait_exit","ts":"2025-11-24T16:16:40.000001Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"reason":"reused","lived_ms":0.001}"#,
            r#"{"type":"timewait_exit","ts":"2025-11-24T16:17:40.000000Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"reason":"expired","lived_ms":60000.0}"#,
            r#"{"type":"timewait_entry","ts":"2025-11-24T16:16:40.000999Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"role":"server","closer":"remote","pid":null,"comm":null,"entered_at":"2025-11-24T16:16:39.999999Z","expires_in_ms":59999.0,"source":"kernel"}"#,
            r#"{"type":"timewait_entry","ts":"2025-11-24T16:17:40.000000Z","family":"ipv4","laddr":"10.1.255.0","lport":65535,"raddr":"192.168.0.10","rport":0,"netns":9,"role":"server","closer":"remote","pid":0,"comm":"x","entered_at":"2025-11-24T16:16:39.999999Z","expires_in_ms":0.0,"source":"traced"}"#,
            r#"{"type":"summary","events":3,"lost":1,"duration_ms":0.5,"untracked":2,"unfinished":3,"rescued":4}"#,
        ];
        assert_eq!(out.lines().collect::<Vec<_>>(), want);
    }

    #[test]
    fn times_before_the_epoch_print_as_the_epoch() {
        let epoch = SystemTime::UNIX_EPOCH - Duration::from_millis(1500);
        let mut s = Stamper::new(Clock::at(epoch));
        assert_eq!(
            s.stamp(1_000_000_000).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            s.stamp(2_000_250_999).to_string(),
            "1970-01-01T00:00:00.500250Z"
        );
    }

    #[test]
    fn text_has_a_header_and_one_line_per_transition() {
        let mut t6 = transition();
        t6.tuple.laddr = "::1".parse().unwrap();
        let out = render(
            |r| {
                r.transition(&transition());
                r.transition(&t6);
            },
            false,
        );
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("TIME(UTC)"));
        assert!(lines[1].starts_with("16:00:00.001500"));
        assert!(lines[1].contains("127.0.0.1:9098"));
        assert!(lines[1].contains("ESTABLISHED -> FIN_WAIT1"));
        assert!(lines[1].contains("12.300"));
        assert!(lines[1].ends_with("active close"));
        assert!(lines[2].contains("[::1]:9098"));
    }

    #[test]
    fn write_errors_are_kept_not_raised() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut r = Renderer::new(Closed, true, clock());
        r.transition(&transition());
        r.transition(&transition());
        assert_eq!(r.error().unwrap().kind(), io::ErrorKind::BrokenPipe);
    }
}
