//! `tcpstate timewait`: the TIME_WAIT table as a live view, refreshed every
//! `--interval`, or once from the kernel's table (`--once`). This module
//! gathers each [`Frame`] (the filtered entries, the pools, the host's
//! limits); the printers lay it out.

use std::time::Instant;

use anyhow::{Context as _, Result};
use rustc_hash::FxHashMap;

use super::{
    diagnose::LiveDiagnosis,
    engine::{self, Engine, Pacing, Quiet, View},
    output,
};
use crate::{
    cli::TimewaitArgs,
    host::{clock, netns, owners, snapshot, sysctl::Facts},
    kernel::privileges,
    render::{Frame, Losses, NsFigures, Printer, Rates, Summary, tui::Tui},
    sock::Comm,
    track::{
        filter::Filter,
        pressure::{self, Failures, Limits, PoolKey},
        timewait::{Entry, ExitReason, Source, TwSink},
        tracker::{BindFailure, Close, ConnectFailure, FailReason, Role, Sink, Transition},
    },
};

/// The view's options.
pub(super) struct Settings {
    pub group_by: crate::cli::GroupBy,
    pub threshold: f64,
    pub tw_len_s: f64,
}

/// What the pools did since the last refresh: client-role TIME_WAIT
/// entries, and failed `connect()`s (any reason, no local port), that
/// pass the filters.
pub(super) struct Recent {
    /// When the window began (the last refresh).
    since: Instant,
    entered: FxHashMap<PoolKey, u64>,
    failed: FxHashMap<PoolKey, [u64; 2]>,
}

impl Recent {
    pub fn new() -> Recent {
        Recent {
            since: Instant::now(),
            entered: FxHashMap::default(),
            failed: FxHashMap::default(),
        }
    }

    /// How long the window has run.
    pub fn age(&self) -> std::time::Duration {
        self.since.elapsed()
    }

    pub fn entered(&mut self, e: &Entry) {
        if e.role == Role::Client {
            *self.entered.entry(PoolKey::of(&e.id)).or_default() += 1;
        }
    }

    pub fn failed(&mut self, f: &ConnectFailure) {
        let pool = self.failed.entry(PoolKey::of(&f.id)).or_default();
        pool[0] += 1;
        pool[1] += u64::from(f.reason == FailReason::NoLocalPort);
    }

    /// The window's length in seconds and the pools' rates over it;
    /// starts the next window.
    pub fn rates(&mut self) -> (f64, FxHashMap<PoolKey, f64>, FxHashMap<PoolKey, Failures>) {
        let window_s = self.since.elapsed().as_secs_f64();
        self.since = Instant::now();
        let rates = self
            .entered
            .drain()
            .map(|(key, n)| (key, n as f64 / window_s))
            .collect();
        let failures = self
            .failed
            .drain()
            .map(|(key, [any, no_port])| {
                let failures = Failures {
                    per_s: any as f64 / window_s,
                    no_local_port_per_s: no_port as f64 / window_s,
                };
                (key, failures)
            })
            .collect();
        (window_s, rates, failures)
    }
}

/// The live view's state between refreshes.
struct TwView<P> {
    settings: Settings,
    filter: Filter,
    printer: P,
    recent: Recent,
    entered_total: u64,
    exited_total: u64,
    /// Since the start, of the entries that pass the filters: exits by
    /// reason, and entries the kernel had that tracing had not seen.
    exits: [u64; 4],
    missed: u64,
    /// Failed `connect()`s that pass the filters, by reason, since the
    /// start.
    failed_total: [u64; 4],
    /// Closes refused a TIME_WAIT socket, per namespace, since the start.
    refused: FxHashMap<u32, u64>,
    /// Refreshes left (`--count`).
    remaining: Option<u64>,
    /// The live diagnosis, for a printer that shows it.
    diagnosis: Option<LiveDiagnosis>,
}

impl<P> Sink for TwView<P> {
    fn transition(&mut self, _: &Transition) {}
    fn close(&mut self, c: &Close) {
        if !self.filter.matches(&c.id, c.owner.as_ref()) {
            return;
        }
        if c.tw_refused {
            *self.refused.entry(c.id.netns).or_default() += 1;
        }
        if let Some(d) = &mut self.diagnosis {
            d.close(c);
        }
    }
    fn connect_failed(&mut self, f: &ConnectFailure) {
        if !self.filter.matches(&f.id, f.owner.as_ref()) {
            return;
        }
        self.failed_total[f.reason as usize] += 1;
        self.recent.failed(f);
        if let Some(d) = &mut self.diagnosis {
            d.connect_failed(f);
        }
    }
    /// Not traced for this view.
    fn bind_failed(&mut self, _: &BindFailure) {}
}

/// The rates, the exits and the pools count only what the filters pass.
impl<P> TwSink for TwView<P> {
    fn tw_enter(&mut self, e: &Entry) {
        if !self.filter.matches_entry(e) {
            return;
        }
        self.entered_total += 1;
        self.missed += u64::from(e.source == Source::Kernel);
        self.recent.entered(e);
    }

    fn tw_exit(&mut self, e: &Entry, reason: ExitReason, _: u64) {
        if self.filter.matches_entry(e) {
            self.exited_total += 1;
            self.exits[reason as usize] += 1;
        }
    }
}

impl<P: Printer> View for TwView<P> {
    type P = P;

    fn printer(&self) -> &P {
        &self.printer
    }

    fn printer_mut(&mut self) -> &mut P {
        &mut self.printer
    }

    fn done(&self) -> bool {
        self.remaining == Some(0) || self.printer.quit()
    }

    fn refresh(&mut self, engine: &Engine, lost: Losses, now_ns: u64) {
        // An interactive printer sets its own pace.
        if let Some(every) = self.printer.interval()
            && self.recent.age() < every
        {
            return;
        }
        let (window_s, pool_rates, failures) = self.recent.rates();
        let rates = Rates {
            entered_per_s: self.entered_total as f64 / window_s,
            exited_per_s: self.exited_total as f64 / window_s,
        };
        let frame = frame(
            engine,
            &self.filter,
            &self.settings,
            Activity {
                rates: &pool_rates,
                failures: &failures,
                // Each refresh has the traced owners; looking up those of
                // the established sockets would scan every process's
                // descriptors.
                owners: &FxHashMap::default(),
            },
            lost.total(),
            Some(rates),
            now_ns,
        );
        let mut frame = frame;
        if self.filter.is_active() {
            // The table's own counts are host-wide: these are not.
            frame.stats.exited = self.exits;
            frame.stats.missed = self.missed;
        }
        frame.connect_failed = Some(self.failed_total);
        if let Some(d) = &mut self.diagnosis {
            frame.findings = d.findings(engine, lost.total(), &self.filter).0;
        }
        for ns in &mut frame.namespaces {
            ns.tw_refused = Some(self.refused.get(&ns.netns).copied().unwrap_or(0));
        }
        self.printer.timewait(&frame);
        if let Some(n) = &mut self.remaining {
            *n = n.saturating_sub(1);
        }
        self.entered_total = 0;
        self.exited_total = 0;
    }
}

/// What the pools did lately: client-role entries and failed `connect()`s
/// per second; and who holds their established sockets, where looked up.
#[derive(Clone, Copy)]
pub(super) struct Activity<'a> {
    pub rates: &'a FxHashMap<PoolKey, f64>,
    pub failures: &'a FxHashMap<PoolKey, Failures>,
    pub owners: &'a FxHashMap<u32, Comm>,
}

/// What one refresh shows, from the table and a fresh reading of the
/// host's limits.
pub(super) fn frame<'a>(
    engine: &'a Engine,
    filter: &Filter,
    settings: &Settings,
    activity: Activity<'_>,
    lost: u64,
    rates: Option<Rates>,
    now_ns: u64,
) -> Frame<'a> {
    let entries: Vec<&Entry> = engine
        .table
        .entries()
        .filter(|e| filter.matches_entry(e))
        .collect();
    // Namespaces whose pools are busy count as in view even with no entry
    // yet (an exhausted pool fails before any TIME_WAIT builds up).
    let active = activity.rates.keys().chain(activity.failures.keys());
    let namespaces = namespaces(engine, &entries, active.map(|k| k.netns));
    let limits: FxHashMap<u32, Limits> = namespaces
        .iter()
        .filter_map(|n| Some((n.netns, limits_of(&n.facts?))))
        .collect();
    let pools = pressure::pools(
        entries
            .iter()
            .map(|e| (&e.id, e.role, e.owner.map(|o| o.comm))),
        &pressure::Inputs {
            established: &engine.established,
            owners: activity.owners,
            listeners: &engine.listeners,
            rates: activity.rates,
            failures: activity.failures,
            limits: &limits,
            // Without a reading inside a namespace, its pools are judged by
            // tcpstate's own namespace (said in the namespace's line).
            fallback: namespaces
                .first()
                .and_then(|n| n.facts)
                .map(|f| limits_of(&f))
                .unwrap_or_default(),
            tw_len_s: settings.tw_len_s,
            threshold: settings.threshold,
        },
    );
    Frame {
        now_ns,
        entries,
        pools,
        namespaces,
        stats: engine.table.stats(),
        reconciliations: engine.reconciliations,
        lost,
        rates,
        connect_failed: None,
        group_by: settings.group_by,
        filtered: filter.is_active(),
        findings: Vec::new(),
    }
}

/// The figures of tcpstate's own namespace (read now), then of those of
/// the entries in view and of the busy pools, most TIME_WAIT first (as last read inside each).
fn namespaces(
    engine: &Engine,
    entries: &[&Entry],
    active: impl Iterator<Item = u32>,
) -> Vec<NsFigures> {
    let own = netns::current_netns().ok();
    let mut time_wait: FxHashMap<u32, usize> = FxHashMap::default();
    for e in engine.table.entries() {
        *time_wait.entry(e.id.netns).or_default() += 1;
    }
    let mut in_view: Vec<u32> = entries
        .iter()
        .map(|e| e.id.netns)
        .chain(active)
        .filter(|&ns| Some(ns) != own)
        .collect::<rustc_hash::FxHashSet<u32>>()
        .into_iter()
        .collect();
    in_view.sort_by_key(|ns| (std::cmp::Reverse(time_wait.get(ns).copied()), *ns));
    let figures = |netns: u32, facts: Option<Facts>| NsFigures {
        facts,
        time_wait: time_wait.get(&netns).copied().unwrap_or(0),
        ..engine.identity(netns)
    };
    own.map(|ns| figures(ns, Some(Facts::read())))
        .into_iter()
        .chain(
            in_view
                .into_iter()
                .map(|ns| figures(ns, engine.facts.get(&ns).copied())),
        )
        .collect()
}

fn limits_of(f: &Facts) -> Limits {
    Limits {
        range_size: f.usable_ports(),
        tw_reuse: f.tw_reuse,
        timestamps: f.timestamps != 0,
    }
}

/// How often the engine offers an interactive printer a refresh: it
/// takes one once its own interval has passed.
const TUI_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// The window of the full-screen view's diagnosis.
const TUI_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn run(args: &TimewaitArgs) -> Result<()> {
    if !args.once && !args.common.json && !args.no_tui && super::stdout_is_tty() {
        let printer = Tui::start(args.group_by.into(), args.interval)
            .context("taking the terminal over for the live view (--no-tui prints lines)")?;
        return timewait(args, printer, output::Stats::default()).await;
    }
    super::with_printer!(args.common.json, printer, stats => timewait(args, printer, stats).await)
}

async fn timewait<P: Printer>(
    args: &TimewaitArgs,
    printer: P,
    output: output::Stats,
) -> Result<()> {
    let common = &args.common;
    super::warn_unmatchable(common);
    let settings = Settings {
        group_by: args.group_by,
        threshold: args.pressure.threshold,
        tw_len_s: common.tw_len.as_secs_f64(),
    };
    if args.once {
        return once(args, settings, printer);
    }
    let mut view = TwView {
        settings,
        filter: common.filter(),
        printer,
        recent: Recent::new(),
        entered_total: 0,
        exited_total: 0,
        exits: [0; 4],
        missed: 0,
        failed_total: [0; 4],
        refused: FxHashMap::default(),
        remaining: args.count,
        diagnosis: None,
    };
    // The full-screen view shows the live diagnosis.
    if view.printer.interval().is_some() {
        view.diagnosis = Some(LiveDiagnosis::new(
            common.tw_len.as_secs_f64(),
            TUI_WINDOW,
            args.pressure.threshold,
        ));
    }
    let refresh = match view.printer.interval() {
        Some(_) => TUI_TICK,
        None => args.interval,
    };
    let pacing = Pacing {
        reconcile: (!common.reconcile.is_zero()).then_some(common.reconcile),
        refresh: Some(refresh),
        output,
        syscalls: false,
        closes_only: true,
        program_runs: false,
    };
    let result = engine::run(common, pacing, &mut view).await;
    view.printer.flush();
    result
}

/// `--once`: the kernel's table, with roles inferred from listening ports
/// and the ephemeral port range.
fn once<P: Printer>(args: &TimewaitArgs, settings: Settings, mut printer: P) -> Result<()> {
    let common = &args.common;
    privileges::check_namespace_access()?;
    let started = Instant::now();
    let dump =
        snapshot::dump(&common.scope(), None).context("reading the kernel's TIME_WAIT sockets")?;
    let mut engine = Engine::new(common.tw_len.as_nanos() as u64, true);
    engine.apply(dump, true, &mut Quiet);
    // The kernel keeps no entry time, but its timers give one: the
    // entries of the last 50 s (of 60) give each pool's recent entry rate.
    let now_ns = clock::monotonic_ns();
    let filter = common.filter();
    let rates = pressure::rates_from_ages(
        engine.table.entries().filter(|e| filter.matches_entry(e)),
        now_ns,
        common.tw_len.as_nanos() as u64 * 5 / 6,
    );
    // Nothing was traced: the established sockets' owners name the pools,
    // found as `ss -p` finds them.
    let owners: FxHashMap<u32, Comm> =
        owners::of_sockets(engine.established.iter().map(|ks| ks.inode))
            .into_iter()
            .map(|(inode, o)| (inode, o.comm))
            .collect();
    let activity = Activity {
        rates: &rates,
        failures: &FxHashMap::default(),
        owners: &owners,
    };
    let frame = frame(&engine, &filter, &settings, activity, 0, None, now_ns);
    printer.timewait(&frame);
    printer.summary(&Summary {
        traced: false,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        ..Summary::default()
    });
    engine::output_result(printer.error())
}
