//! `tcpstate watch`: every transition, close and TIME_WAIT change, through
//! the filters to the printer.

use anyhow::Result;

use super::{
    engine::{self, Engine, Pacing, View},
    output,
};
use crate::{
    cli::WatchArgs,
    render::{Host, Printer},
    track::{
        filter::Filter,
        timewait::{Entry, ExitReason, TwSink},
        tracker::{BindFailure, Close, ConnectFailure, Sink, Transition},
    },
};

/// The watch view: filter, `--count`, printer.
struct Watch<P> {
    filter: Filter,
    printer: P,
    remaining: Option<u64>,
}

impl<P: Printer> Sink for Watch<P> {
    fn transition(&mut self, t: &Transition) {
        if self.done() || !self.filter.matches(&t.id, t.owner.as_ref()) {
            return;
        }
        self.printer.transition(t);
        if let Some(n) = &mut self.remaining {
            *n -= 1;
        }
    }

    fn close(&mut self, c: &Close) {
        // A close follows its CLOSE transition: it passes when that did,
        // including the one that used up `--count`.
        if self.filter.matches(&c.id, c.owner.as_ref()) {
            self.printer.close(c);
        }
    }

    fn connect_failed(&mut self, f: &ConnectFailure) {
        // Like a close, it follows its CLOSE transition.
        if self.filter.matches(&f.id, f.owner.as_ref()) {
            self.printer.connect_failed(f);
        }
    }

    fn bind_failed(&mut self, b: &BindFailure) {
        if !self.done() && self.filter.matches(&b.id, b.owner.as_ref()) {
            self.printer.bind_failed(b);
        }
    }
}

impl<P: Printer> TwSink for Watch<P> {
    fn tw_enter(&mut self, e: &Entry) {
        if !self.done() && self.filter.matches_entry(e) {
            self.printer.tw_enter(e);
        }
    }

    fn tw_exit(&mut self, e: &Entry, reason: ExitReason, at_ns: u64) {
        if !self.done() && self.filter.matches_entry(e) {
            self.printer.tw_exit(e, reason, at_ns);
        }
    }
}

impl<P: Printer> View for Watch<P> {
    type P = P;

    fn printer(&self) -> &P {
        &self.printer
    }

    fn printer_mut(&mut self) -> &mut P {
        &mut self.printer
    }

    fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// A recording's context: each namespace's settings (none without
    /// reconciliation, which reads them).
    fn started(&mut self, engine: &Engine) {
        let namespaces = engine.known_namespaces();
        if !namespaces.is_empty() {
            self.printer.host(&Host {
                now_ns: crate::host::clock::monotonic_ns(),
                tw_len_ms: engine.table.tw_len_ns() as f64 / 1e6,
                own_netns: crate::host::netns::current_netns().ok(),
                binds_traced: engine.binds_traced,
                namespaces: &namespaces,
            });
        }
    }
}

pub async fn run(args: &WatchArgs) -> Result<()> {
    super::with_printer!(args.common.json, printer, stats => watch(args, printer, stats).await)
}

async fn watch<P: Printer>(args: &WatchArgs, printer: P, output: output::Stats) -> Result<()> {
    let common = &args.common;
    super::warn_unmatchable(common);
    let mut view = Watch {
        filter: common.filter(),
        printer,
        remaining: args.count,
    };
    let pacing = Pacing {
        reconcile: (!common.reconcile.is_zero()).then_some(common.reconcile),
        refresh: None,
        output,
        syscalls: true,
        closes_only: false,
        program_runs: false,
    };
    engine::run(common, pacing, &mut view).await
}
