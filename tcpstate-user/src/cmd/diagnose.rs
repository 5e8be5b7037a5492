//! `tcpstate diagnose`: traces for `--duration` (seeded from the kernel's
//! tables at once) or reads a recording, gathers the [`Evidence`], and
//! prints the findings; the worst severity becomes the exit status.

use std::{
    fs::File,
    io::{self, BufReader},
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::{
    engine::{self, Engine, Pacing, View},
    output,
};
use crate::{
    cli::{DIAGNOSE_DURATION, DiagnoseArgs},
    diagnose::{
        evidence::{self, Evidence, Namespace},
        findings::{self, Finding, Severity},
        recording,
    },
    host::netns,
    render::{Losses, Printer, Report, html},
    track::{
        filter::Filter,
        timewait::{Entry, ExitReason, TwSink},
        tracker::{BindFailure, Close, ConnectFailure, Sink, Transition},
    },
};

/// The live diagnosis: closes and failures into the evidence; the state at
/// the end from the engine.
struct Diagnosis<P> {
    filter: Filter,
    printer: P,
    evidence: Evidence,
    threshold: f64,
    /// When tracing began: rates count from there.
    tracing_since: Option<std::time::Instant>,
    /// When it was told to stop: rates count until there.
    stopped_at: Option<std::time::Instant>,
    /// The same, in kernel monotonic time, for the TIME_WAIT timeline.
    start_ns: u64,
    /// What it found, once finished, and from how many records.
    found: Vec<Finding>,
    events: u64,
}

impl<P> Sink for Diagnosis<P> {
    fn transition(&mut self, _: &Transition) {}

    fn close(&mut self, c: &Close) {
        if self.filter.matches(&c.id, c.owner.as_ref()) {
            self.evidence.close(c);
        }
    }

    fn connect_failed(&mut self, f: &ConnectFailure) {
        if self.filter.matches(&f.id, f.owner.as_ref()) {
            self.evidence.connect_failed(f);
        }
    }

    fn bind_failed(&mut self, b: &BindFailure) {
        if self.filter.matches(&b.id, b.owner.as_ref()) {
            self.evidence.bind_failed(b);
        }
    }
}

impl<P> Diagnosis<P> {
    fn since_start_s(&self, at_ns: u64) -> f64 {
        at_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}

impl<P> TwSink for Diagnosis<P> {
    fn tw_enter(&mut self, e: &Entry) {
        if self.filter.matches_entry(e) {
            let at = self.since_start_s(e.entered_ns);
            self.evidence.timeline.change(at, &e.id, e.role, 1);
        }
    }

    fn tw_exit(&mut self, e: &Entry, _: ExitReason, at_ns: u64) {
        if self.filter.matches_entry(e) {
            let at = self.since_start_s(at_ns);
            self.evidence.timeline.change(at, &e.id, e.role, -1);
        }
    }
}

impl<P: Printer> View for Diagnosis<P> {
    type P = P;

    fn printer(&self) -> &P {
        &self.printer
    }

    fn printer_mut(&mut self) -> &mut P {
        &mut self.printer
    }

    /// The TIME_WAIT sockets the kernel's tables seeded begin the timeline.
    fn started(&mut self, engine: &Engine) {
        self.tracing_since = Some(std::time::Instant::now());
        self.start_ns = crate::host::clock::monotonic_ns();
        for e in engine
            .table
            .entries()
            .filter(|e| self.filter.matches_entry(e))
        {
            self.evidence.timeline.at_start(&e.id, e.role);
        }
    }

    fn stopped(&mut self) {
        self.stopped_at = Some(std::time::Instant::now());
    }

    /// The findings instead of the summary.
    fn finish(&mut self, engine: &Engine, lost: Losses, _rescued: u64, duration: Duration) {
        let ev = &mut self.evidence;
        let stopped_at = self.stopped_at.unwrap_or_else(std::time::Instant::now);
        ev.window_s = self
            .tracing_since
            .map_or(duration, |t| stopped_at.saturating_duration_since(t))
            .as_secs_f64();
        ev.lost = lost.total();
        state_into(ev, engine, &self.filter);
        self.found = findings::diagnose(ev, self.threshold);
        self.events = engine.events;
        self.printer
            .report(&Report::new(&self.found, ev, "live", Some(engine.events)));
    }
}

/// The state a diagnosis judges, from the engine now: each namespace's
/// settings, the TIME_WAIT sockets that pass `filter`, the established
/// and listening sockets, and what the evidence lacks.
pub(super) fn state_into(ev: &mut Evidence, engine: &Engine, filter: &Filter) {
    ev.own_netns = netns::current_netns().ok();
    if !engine.binds_traced && !ev.gaps.iter().any(|g| g == evidence::BINDS_UNTRACED) {
        ev.gaps.push(evidence::BINDS_UNTRACED.into());
    }
    ev.namespaces = engine
        .known_namespaces()
        .into_iter()
        .map(|n| {
            let ns = Namespace {
                name: n.name,
                facts: n.facts,
            };
            (n.netns, ns)
        })
        .collect();
    ev.time_wait = engine
        .table
        .entries()
        .filter(|e| filter.matches_entry(e))
        .map(|e| (e.id, e.role))
        .collect();
    ev.established = engine.established.clone();
    ev.listeners = engine.listeners.clone();
}

/// How long a new window of a [`LiveDiagnosis`] observes before its
/// findings replace those of the window before.
const WINDOW_SETTLE: Duration = Duration::from_secs(10);

/// A diagnosis kept live over a sliding window (`serve`, the full-screen
/// view): closes and failures gathered for `window`, then a new window;
/// the findings judged at each refresh with the state then.
pub(super) struct LiveDiagnosis {
    evidence: Evidence,
    since: std::time::Instant,
    window: Duration,
    threshold: f64,
    /// The findings of the window before, and its length.
    previous: Option<(Vec<Finding>, f64)>,
}

impl LiveDiagnosis {
    pub fn new(tw_len_s: f64, window: Duration, threshold: f64) -> LiveDiagnosis {
        LiveDiagnosis {
            evidence: Evidence {
                tw_len_s,
                ..Evidence::default()
            },
            since: std::time::Instant::now(),
            window,
            threshold,
            previous: None,
        }
    }

    pub fn close(&mut self, c: &Close) {
        self.evidence.close(c);
    }

    pub fn connect_failed(&mut self, f: &ConnectFailure) {
        self.evidence.connect_failed(f);
    }

    /// The findings of the current window, or of the one before while the
    /// current one is young, and the window's length; a window over
    /// starts the next.
    pub fn findings(&mut self, engine: &Engine, lost: u64, filter: &Filter) -> (Vec<Finding>, f64) {
        let ev = &mut self.evidence;
        ev.window_s = self.since.elapsed().as_secs_f64();
        ev.lost = lost;
        state_into(ev, engine, filter);
        let found = findings::diagnose(ev, self.threshold);
        let window_s = ev.window_s;
        if self.since.elapsed() >= self.window {
            self.previous = Some((found.clone(), window_s));
            self.evidence = Evidence {
                tw_len_s: ev.tw_len_s,
                ..Evidence::default()
            };
            self.since = std::time::Instant::now();
        }
        match &self.previous {
            Some(previous) if Duration::from_secs_f64(window_s) < WINDOW_SETTLE => previous.clone(),
            _ => (found, window_s),
        }
    }
}

pub async fn run(args: &DiagnoseArgs) -> Result<Severity> {
    super::with_printer!(args.common.json, printer, stats => diagnose(args, printer, stats).await)
}

async fn diagnose<P: Printer>(
    args: &DiagnoseArgs,
    mut printer: P,
    output: output::Stats,
) -> Result<Severity> {
    if let Some(path) = &args.input {
        return from_recording(args, path, printer);
    }
    let mut common = args.common.clone();
    common.duration = Some(common.duration.unwrap_or(DIAGNOSE_DURATION));
    super::warn_unmatchable(&common);
    let mut view = Diagnosis {
        filter: common.filter(),
        printer,
        evidence: Evidence {
            tw_len_s: common.tw_len.as_secs_f64(),
            ..Evidence::default()
        },
        threshold: args.pressure.threshold,
        tracing_since: None,
        stopped_at: None,
        start_ns: 0,
        found: Vec::new(),
        events: 0,
    };
    // Refused before a run of nothing: a page that cannot be written.
    let page = create_html(args)?;
    let pacing = Pacing {
        // The namespaces' settings and the established sockets come with
        // the kernel's tables (`--reconcile 0` is refused).
        reconcile: Some(common.reconcile),
        refresh: None,
        output,
        syscalls: true,
        closes_only: true,
        program_runs: false,
    };
    engine::run(&common, pacing, &mut view).await?;
    printer = view.printer;
    printer.flush();
    let report = Report::new(&view.found, &view.evidence, "live", Some(view.events));
    write_html(args, page, &report, &view.evidence)?;
    Ok(findings::worst(&view.found))
}

/// `--html FILE`, created (empty) before anything is observed.
fn create_html(args: &DiagnoseArgs) -> Result<Option<File>> {
    args.html
        .as_ref()
        .map(|path| {
            File::create(path)
                .with_context(|| format!("creating the HTML report {}", path.display()))
        })
        .transpose()
}

/// Writes the report as a page into `--html`'s file.
fn write_html(
    args: &DiagnoseArgs,
    page: Option<File>,
    report: &Report<'_>,
    ev: &Evidence,
) -> Result<()> {
    let (Some(mut file), Some(path)) = (page, &args.html) else {
        return Ok(());
    };
    let pools = findings::pools(ev, args.pressure.threshold);
    std::io::Write::write_all(&mut file, html::page(report, ev, &pools).as_bytes())
        .with_context(|| format!("writing the HTML report {}", path.display()))
}

fn from_recording<P: Printer>(
    args: &DiagnoseArgs,
    path: &std::path::Path,
    mut printer: P,
) -> Result<Severity> {
    let tw_len_s = args.common.tw_len.as_secs_f64();
    let page = create_html(args)?;
    let ev = if path.as_os_str() == "-" {
        recording::read(io::stdin().lock(), tw_len_s)
    } else {
        let file = File::open(path)
            .with_context(|| format!("opening the recording {}", path.display()))?;
        recording::read(BufReader::new(file), tw_len_s)
    }
    .with_context(|| format!("reading the recording {}", path.display()))?;
    let found = findings::diagnose(&ev, args.pressure.threshold);
    let report = Report::new(&found, &ev, "recording", None);
    printer.report(&report);
    engine::output_result(printer.error())?;
    write_html(args, page, &report, &ev)?;
    Ok(findings::worst(&found))
}
