//! `tcpstate watch`: every transition, close and TIME_WAIT change, through
//! the filters to the renderer.

use std::io::{self, BufWriter, Stdout, Write};

use anyhow::Result;

use crate::{
    cli::WatchArgs,
    engine::{self, Pacing, View},
    event::Clock,
    filter::Filter,
    output::Renderer,
    timewait::{Entry, ExitReason, TwSink},
    tracker::{Close, Sink, Transition},
};

/// The watch view: filter, `--count`, renderer.
struct Watch<W: Write> {
    filter: Filter,
    renderer: Renderer<W>,
    remaining: Option<u64>,
}

impl<W: Write> Sink for Watch<W> {
    fn transition(&mut self, t: &Transition) {
        if self.done() || !self.filter.matches(t.netns, &t.tuple, t.owner.as_ref()) {
            return;
        }
        self.renderer.transition(t);
        if let Some(n) = &mut self.remaining {
            *n -= 1;
        }
    }

    fn close(&mut self, c: &Close) {
        // A close follows its CLOSE transition: it passes when that did,
        // including the one that used up `--count`.
        if self.filter.matches(c.netns, &c.tuple, c.owner.as_ref()) {
            self.renderer.close(c);
        }
    }
}

impl<W: Write> TwSink for Watch<W> {
    fn tw_enter(&mut self, e: &Entry) {
        if !self.done() && self.filter.matches_entry(e) {
            self.renderer.tw_enter(e);
        }
    }

    fn tw_exit(&mut self, e: &Entry, reason: ExitReason, at_ns: u64) {
        if !self.done() && self.filter.matches_entry(e) {
            self.renderer.tw_exit(e, reason, at_ns);
        }
    }
}

impl<W: Write> View for Watch<W> {
    type Out = W;

    fn renderer(&self) -> &Renderer<W> {
        &self.renderer
    }

    fn renderer_mut(&mut self) -> &mut Renderer<W> {
        &mut self.renderer
    }

    fn done(&self) -> bool {
        self.remaining == Some(0)
    }
}

pub async fn run(args: &WatchArgs) -> Result<()> {
    let common = &args.common;
    let mut view: Watch<BufWriter<Stdout>> = Watch {
        filter: common.filter(),
        renderer: Renderer::new(
            BufWriter::with_capacity(1 << 18, io::stdout()),
            common.json,
            Clock::system(),
        ),
        remaining: common.count,
    };
    let pacing = Pacing {
        reconcile: (!common.reconcile.is_zero()).then_some(common.reconcile),
        refresh: None,
    };
    engine::run(common, pacing, &mut view).await
}
