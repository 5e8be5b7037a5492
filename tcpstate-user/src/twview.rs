//! `tcpstate timewait`: the TIME_WAIT table as a live view (header with
//! totals, reconciliation and port pressure, then the entries grouped), or
//! once from the kernel's table (`--once`), as text or JSON.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, BufWriter, IsTerminal, Stdout},
};

use anyhow::{Context as _, Result};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::{
    cli::{GroupBy, TimewaitArgs},
    engine::{self, Engine, Pacing, Scope, View},
    event::{self, Clock},
    filter::Filter,
    loader::Lost,
    output::{self, Renderer, Summary, Ts, endpoint, ms},
    pressure::{self, Pool, PoolKey},
    sockdiag,
    sysctl::Facts,
    timewait::{Entry, ExitReason, Source, TwSink},
    tracker::{Close, Closer, Role, Sink, Transition},
};

/// Totals at one refresh.
#[derive(Serialize)]
struct Totals {
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
    missed_by_tracing: u64,
    cap_dropped: u64,
    lost: u64,
    tcp_max_tw_buckets: u64,
    tcp_max_tw_buckets_headroom: i64,
    tcp_timewait_overflow: u64,
    port_range: (u16, u16),
    tcp_tw_reuse: u8,
    pools: Vec<PoolJson>,
}

#[derive(Serialize)]
struct PoolJson {
    netns: u32,
    laddr: std::net::IpAddr,
    raddr: std::net::IpAddr,
    rport: u16,
    time_wait: u64,
    established: u64,
    rate_per_s: f64,
    used: f64,
    projected: f64,
    flagged: bool,
    tw_reuse_applies: bool,
}

/// The live view's state between refreshes.
struct TwView {
    args: Settings,
    filter: Filter,
    renderer: Renderer<BufWriter<Stdout>>,
    tty: bool,
    /// Client-role entries per pool since the last refresh.
    entered: FxHashMap<PoolKey, u64>,
    entered_total: u64,
    exited_total: u64,
    last_refresh: std::time::Instant,
}

/// The view's options.
struct Settings {
    json: bool,
    group_by: GroupBy,
    threshold: f64,
    tw_len_s: f64,
}

impl Sink for TwView {
    fn transition(&mut self, _: &Transition) {}
    fn close(&mut self, _: &Close) {}
}

impl TwSink for TwView {
    fn tw_enter(&mut self, e: &Entry) {
        self.entered_total += 1;
        if e.role == Role::Client {
            *self
                .entered
                .entry(PoolKey::of(e.key.netns, &e.key.tuple))
                .or_default() += 1;
        }
    }

    fn tw_exit(&mut self, _: &Entry, _: ExitReason, _: u64) {
        self.exited_total += 1;
    }
}

impl View for TwView {
    type Out = BufWriter<Stdout>;

    fn renderer(&self) -> &Renderer<Self::Out> {
        &self.renderer
    }

    fn renderer_mut(&mut self) -> &mut Renderer<Self::Out> {
        &mut self.renderer
    }

    fn refresh(&mut self, engine: &Engine, lost: Lost, now_ns: u64) {
        let window = self.last_refresh.elapsed().as_secs_f64();
        self.last_refresh = std::time::Instant::now();
        let frame = Frame::build(
            engine,
            &self.filter,
            &self.args,
            &self.entered,
            window,
            lost,
        );
        self.entered.clear();
        let (entered, exited) = (self.entered_total, self.exited_total);
        self.entered_total = 0;
        self.exited_total = 0;
        let rates = (entered as f64 / window, exited as f64 / window);
        if self.args.json {
            let ts = self.renderer.stamp(now_ns);
            let totals = frame.totals(engine, ts, rates);
            self.renderer.json_line(&totals);
        } else {
            let text = frame.render(engine, &self.args, Some(rates), now_ns);
            if self.tty {
                // Home and clear, then the frame.
                self.renderer.text(format_args!("\x1b[H\x1b[2J{text}"));
            } else {
                self.renderer.text(format_args!("{text}\n"));
            }
        }
    }
}

/// What one refresh shows.
struct Frame<'a> {
    entries: Vec<&'a Entry>,
    pools: Vec<Pool>,
    facts: Facts,
    /// `tcp_max_tw_buckets` minus the TIME_WAIT sockets of the namespace it
    /// was read in (the sysctl and its limit are per namespace).
    headroom: i64,
    lost: Lost,
}

impl<'a> Frame<'a> {
    fn build(
        engine: &'a Engine,
        filter: &Filter,
        args: &Settings,
        entered: &FxHashMap<PoolKey, u64>,
        window_s: f64,
        lost: Lost,
    ) -> Frame<'a> {
        let facts = Facts::read();
        let own_netns = sockdiag::current_netns().ok();
        let in_own_netns = engine
            .table
            .entries()
            .filter(|e| Some(e.key.netns) == own_netns)
            .count();
        let entries: Vec<&Entry> = engine
            .table
            .entries()
            .filter(|e| filter.matches_entry(e))
            .collect();
        let pools = pressure::pools(
            entries.iter().copied(),
            &pressure::Inputs {
                established: &engine.established,
                listeners: &engine.listeners,
                entered,
                window_s,
                range_size: facts.range_size(),
                tw_len_s: args.tw_len_s,
                threshold: args.threshold,
                tw_reuse: facts.tw_reuse,
            },
        );
        Frame {
            entries,
            pools,
            headroom: facts.max_tw_buckets as i64 - in_own_netns as i64,
            facts,
            lost,
        }
    }

    fn count(&self, f: impl Fn(&Entry) -> bool) -> usize {
        self.entries.iter().filter(|e| f(e)).count()
    }

    fn totals(&self, engine: &Engine, ts: Ts, rates: (f64, f64)) -> Totals {
        let stats = engine.table.stats();
        Totals {
            r#type: "timewait_summary",
            ts,
            time_wait: self.entries.len(),
            server: self.count(|e| e.role == Role::Server),
            client: self.count(|e| e.role == Role::Client),
            unknown_role: self.count(|e| e.role == Role::Unknown),
            closer_local: self.count(|e| e.closer == Closer::Local),
            closer_simultaneous: self.count(|e| e.closer == Closer::Simultaneous),
            closer_unknown: self
                .count(|e| e.closer == Closer::Unknown || e.closer == Closer::Remote),
            traced: self.count(|e| e.source == Source::Traced),
            kernel: self.count(|e| e.source == Source::Kernel),
            entered_per_s: rates.0,
            exited_per_s: rates.1,
            expired: stats.exited(ExitReason::Expired),
            reused: stats.exited(ExitReason::Reused),
            gone: stats.exited(ExitReason::Gone),
            missed_by_tracing: stats.missed,
            cap_dropped: stats.dropped,
            lost: self.lost.total(),
            tcp_max_tw_buckets: self.facts.max_tw_buckets,
            tcp_max_tw_buckets_headroom: self.headroom,
            tcp_timewait_overflow: self.facts.tw_overflow,
            port_range: self.facts.port_range,
            tcp_tw_reuse: self.facts.tw_reuse,
            pools: self
                .pools
                .iter()
                .map(|p| PoolJson {
                    netns: p.key.netns,
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
                })
                .collect(),
        }
    }

    /// The text screen.
    /// `rates`: entered and exited per second when the view is live; `None`
    /// for `--once`, which has no exits, rates or events to report.
    fn render(
        &self,
        engine: &Engine,
        args: &Settings,
        rates: Option<(f64, f64)>,
        now_ns: u64,
    ) -> String {
        let stats = engine.table.stats();
        let f = &self.facts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "TIME_WAIT {}  (server {}, client {}, unknown {}; closed first by this end {}, simultaneously {}, unknown {})",
            self.entries.len(),
            self.count(|e| e.role == Role::Server),
            self.count(|e| e.role == Role::Client),
            self.count(|e| e.role == Role::Unknown),
            self.count(|e| e.closer == Closer::Local),
            self.count(|e| e.closer == Closer::Simultaneous),
            self.count(|e| e.closer == Closer::Unknown || e.closer == Closer::Remote),
        );
        match rates {
            Some((entered, exited)) => {
                let _ = writeln!(
                    out,
                    "entered {entered:.1}/s  exited {exited:.1}/s  \
                     (exits so far: expired {}, reused {}, gone {})",
                    stats.exited(ExitReason::Expired),
                    stats.exited(ExitReason::Reused),
                    stats.exited(ExitReason::Gone)
                );
                let _ = writeln!(
                    out,
                    "kernel agreement: {} reconciliations, {} missed by tracing, {} vanished early; \
                     lost events {}; table cap drops {}",
                    engine.reconciliations,
                    stats.missed,
                    stats.exited(ExitReason::Gone),
                    self.lost.total(),
                    stats.dropped
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "one reading of the kernel's socket table, no tracing: roles inferred from \
                     listening ports and the ephemeral range, closers unknown; table cap drops {}",
                    stats.dropped
                );
            }
        }
        let _ = writeln!(
            out,
            "tcp_max_tw_buckets {} (headroom {}), TCPTimeWaitOverflow {}, ip_local_port_range {}-{} ({} ports), tcp_tw_reuse {}",
            f.max_tw_buckets,
            self.headroom,
            f.tw_overflow,
            f.port_range.0,
            f.port_range.1,
            f.range_size(),
            match f.tw_reuse {
                0 => "0 (off)",
                1 => "1 (on)",
                _ => "2 (loopback only)",
            }
        );
        if !self.pools.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<48} {:>9} {:>6} {:>7} {:>9} {:>10}",
                "EPHEMERAL PORT POOL (local -> remote)",
                "TIME_WAIT",
                "ESTAB",
                "USED",
                "RATE/s",
                "PROJECTED"
            );
            for p in self.pools.iter().take(10) {
                let pool = format!("{} -> {}", p.key.laddr, endpoint(p.key.raddr, p.key.rport));
                let _ = writeln!(
                    out,
                    "{:<48} {:>9} {:>6} {:>6.1}% {:>9.1} {:>9.1}%{}",
                    pool,
                    p.time_wait,
                    p.established,
                    p.used * 100.0,
                    p.rate,
                    p.projected * 100.0,
                    match (p.flagged, p.reuse_applies) {
                        (true, true) => "  HIGH (tcp_tw_reuse applies)",
                        (true, false) => "  HIGH (tcp_tw_reuse does not apply)",
                        _ => "",
                    }
                );
            }
        }
        out.push('\n');
        self.render_groups(&mut out, args.group_by, now_ns);
        out
    }

    fn render_groups(&self, out: &mut String, group_by: GroupBy, now_ns: u64) {
        if group_by == GroupBy::None {
            let _ = writeln!(
                out,
                "{:<30} {:<30} {:<7} {:<12} {:>8} {:<16} {:>8} {:<6}",
                "LOCAL", "REMOTE", "ROLE", "CLOSER", "PID", "COMM", "LEFT(s)", "SOURCE"
            );
            let mut entries = self.entries.clone();
            entries.sort_by_key(|e| e.expires_ns);
            for e in entries {
                let t = &e.key.tuple;
                let _ = writeln!(
                    out,
                    "{:<30} {:<30} {:<7} {:<12} {:>8} {:<16} {:>8.1} {:<6}",
                    endpoint(t.laddr, t.lport),
                    endpoint(t.raddr, t.rport),
                    output::role_name(e.role),
                    output::closer_name(e.closer),
                    e.owner.map_or("-".into(), |o| o.pid.to_string()),
                    e.owner.map_or("-".into(), |o| o.comm.as_str().into_owned()),
                    ms(e.expires_ns.saturating_sub(now_ns)) / 1000.0,
                    output::source_name(e.source),
                );
            }
            return;
        }
        #[derive(Default)]
        struct Group {
            count: usize,
            server: usize,
            client: usize,
            min_left_ns: u64,
        }
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for e in &self.entries {
            let t = &e.key.tuple;
            let name = match group_by {
                // A server's peers come from ephemeral ports: group them by
                // client address and the service's port.
                GroupBy::Peer if e.role == Role::Server => {
                    format!("{} (clients of :{})", t.raddr, t.lport)
                }
                GroupBy::Peer => endpoint(t.raddr, t.rport),
                GroupBy::Lport => t.lport.to_string(),
                GroupBy::Process => e.owner.map_or("(unknown)".into(), |o| {
                    format!("{} {}", o.pid, o.comm.as_str())
                }),
                GroupBy::None => unreachable!("handled above"),
            };
            let g = groups.entry(name).or_insert(Group {
                min_left_ns: u64::MAX,
                ..Group::default()
            });
            g.count += 1;
            g.server += usize::from(e.role == Role::Server);
            g.client += usize::from(e.role == Role::Client);
            g.min_left_ns = g.min_left_ns.min(e.expires_ns.saturating_sub(now_ns));
        }
        let mut rows: Vec<_> = groups.into_iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let title = match group_by {
            GroupBy::Peer => "PEER",
            GroupBy::Lport => "LOCAL PORT",
            _ => "PROCESS",
        };
        let _ = writeln!(
            out,
            "{:<48} {:>9} {:>8} {:>8} {:>14}",
            title, "TIME_WAIT", "SERVER", "CLIENT", "OLDEST LEFT(s)"
        );
        for (name, g) in rows.iter().take(40) {
            let _ = writeln!(
                out,
                "{:<48} {:>9} {:>8} {:>8} {:>14.1}",
                name,
                g.count,
                g.server,
                g.client,
                ms(g.min_left_ns) / 1000.0
            );
        }
        if rows.len() > 40 {
            let _ = writeln!(out, "... and {} more", rows.len() - 40);
        }
    }
}

/// Ignores the table's changes (`--once` reads a finished table).
struct Discard;

impl TwSink for Discard {
    fn tw_enter(&mut self, _: &Entry) {}
    fn tw_exit(&mut self, _: &Entry, _: ExitReason, _: u64) {}
}

pub async fn run(args: &TimewaitArgs) -> Result<()> {
    let common = &args.common;
    let settings = Settings {
        json: common.json,
        group_by: args.group_by,
        threshold: args.pressure_threshold,
        tw_len_s: common.tw_len.as_secs_f64(),
    };
    let mut renderer = Renderer::new(
        BufWriter::with_capacity(1 << 18, io::stdout()),
        common.json,
        Clock::system(),
    );
    if args.once {
        return once(args, settings, renderer);
    }
    let mut view = TwView {
        args: settings,
        filter: common.filter(),
        tty: !common.json && io::stdout().is_terminal(),
        renderer,
        entered: FxHashMap::default(),
        entered_total: 0,
        exited_total: 0,
        last_refresh: std::time::Instant::now(),
    };
    let pacing = Pacing {
        reconcile: (!common.reconcile.is_zero()).then_some(common.reconcile),
        refresh: Some(args.interval),
    };
    let result = engine::run(common, pacing, &mut view).await;
    renderer = view.renderer;
    renderer.flush();
    result
}

/// `--once`: the kernel's table, with roles inferred from listening ports
/// and the ephemeral port range.
fn once(
    args: &TimewaitArgs,
    settings: Settings,
    mut renderer: Renderer<BufWriter<Stdout>>,
) -> Result<()> {
    let common = &args.common;
    crate::loader::check_namespace_access()?;
    let started = std::time::Instant::now();
    let dump = engine::dump(&Scope::new(common), None)
        .context("reading the kernel's TIME_WAIT sockets")?;
    let mut engine = Engine::new(common.tw_len.as_nanos() as u64, true);
    engine.apply(dump, true, &mut Discard);
    let now_ns = event::monotonic_ns();
    let filter = common.filter();
    if settings.json {
        let mut entries: Vec<&Entry> = engine
            .table
            .entries()
            .filter(|e| filter.matches_entry(e))
            .collect();
        entries.sort_by_key(|e| e.expires_ns);
        for e in entries {
            renderer.tw_entry(e, now_ns);
        }
    } else {
        let no_entries = FxHashMap::default();
        let frame = Frame::build(
            &engine,
            &filter,
            &settings,
            &no_entries,
            1.0,
            Lost::default(),
        );
        let text = frame.render(&engine, &settings, None, now_ns);
        renderer.text(format_args!("{text}"));
    }
    // Without tracing there are no events to count: only JSON, whose
    // consumers expect the summary object last, gets one.
    if settings.json {
        renderer.summary(&Summary {
            events: 0,
            lost: 0,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            untracked: 0,
            unfinished: 0,
            rescued: 0,
        });
    }
    renderer.flush();
    match renderer.error() {
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(io::Error::new(e.kind(), e.to_string())).context("writing output"),
        None => Ok(()),
    }
}
