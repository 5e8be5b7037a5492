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
        evidence::{Evidence, Namespace},
        findings::{self, Severity},
        recording,
    },
    host::netns,
    render::{Losses, Printer, Report},
    track::{
        filter::Filter,
        timewait::{Entry, ExitReason, TwSink},
        tracker::{Close, ConnectFailure, Sink, Transition},
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
    worst: Severity,
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
}

impl<P> TwSink for Diagnosis<P> {
    fn tw_enter(&mut self, _: &Entry) {}
    fn tw_exit(&mut self, _: &Entry, _: ExitReason, _: u64) {}
}

impl<P: Printer> View for Diagnosis<P> {
    type P = P;

    fn printer(&self) -> &P {
        &self.printer
    }

    fn printer_mut(&mut self) -> &mut P {
        &mut self.printer
    }

    fn started(&mut self, _engine: &Engine) {
        self.tracing_since = Some(std::time::Instant::now());
    }

    /// The findings instead of the summary.
    fn finish(&mut self, engine: &Engine, lost: Losses, _rescued: u64, duration: Duration) {
        let ev = &mut self.evidence;
        ev.window_s = self
            .tracing_since
            .map_or(duration, |t| t.elapsed())
            .as_secs_f64();
        ev.lost = lost.total();
        ev.own_netns = netns::current_netns().ok();
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
            .filter(|e| self.filter.matches_entry(e))
            .map(|e| (e.id, e.role))
            .collect();
        ev.established = engine.established.clone();
        ev.listeners = engine.listeners.clone();
        let found = findings::diagnose(ev, self.threshold);
        self.worst = findings::worst(&found);
        self.printer
            .report(&Report::new(&found, ev, "live", Some(engine.events)));
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
        worst: Severity::Info,
    };
    let pacing = Pacing {
        // The namespaces' settings and the established sockets come with
        // the kernel's tables: always read.
        reconcile: Some(if common.reconcile.is_zero() {
            Duration::from_secs(5)
        } else {
            common.reconcile
        }),
        refresh: None,
        output,
    };
    engine::run(&common, pacing, &mut view).await?;
    printer = view.printer;
    printer.flush();
    Ok(view.worst)
}

fn from_recording<P: Printer>(
    args: &DiagnoseArgs,
    path: &std::path::Path,
    mut printer: P,
) -> Result<Severity> {
    let tw_len_s = args.common.tw_len.as_secs_f64();
    let ev = if path.as_os_str() == "-" {
        recording::read(io::stdin().lock(), tw_len_s)
    } else {
        let file = File::open(path)
            .with_context(|| format!("opening the recording {}", path.display()))?;
        recording::read(BufReader::new(file), tw_len_s)
    }
    .with_context(|| format!("reading the recording {}", path.display()))?;
    let found = findings::diagnose(&ev, args.pressure.threshold);
    printer.report(&Report::new(&found, &ev, "recording", None));
    engine::output_result(printer.error())?;
    Ok(findings::worst(&found))
}
