//! `tcpstate watch`: the event loop. Records flow one way: ring buffer ->
//! decode -> tracker -> filter -> renderer.

use std::{
    io::{self, BufWriter, Write},
    os::fd::AsRawFd,
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    cli::WatchArgs,
    event::{self, Clock},
    filter::Filter,
    loader::{self, Lost},
    output::{Renderer, Summary},
    tracker::{Close, Sink, Tracker, Transition},
};

/// How often userspace drains the ring buffer when the kernel has not woken
/// it (the kernel wakes it only once a batch is waiting).
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The stages after the tracker: filter, `--count`, renderer.
struct Pipeline<W: Write> {
    filter: Filter,
    renderer: Renderer<W>,
    remaining: Option<u64>,
}

impl<W: Write> Pipeline<W> {
    fn done(&self) -> bool {
        self.remaining == Some(0)
    }
}

impl<W: Write> Sink for Pipeline<W> {
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

/// Warns on stderr when the kernel loses events: at once for the first
/// loss, then at most every [`LOST_WARNING_EVERY`].
struct LostWatch {
    reported: Lost,
    last_warning: Option<Instant>,
}

const LOST_WARNING_EVERY: Duration = Duration::from_secs(10);

impl LostWatch {
    fn check(&mut self, lost: Lost) {
        if lost.total() == self.reported.total()
            || self
                .last_warning
                .is_some_and(|at| at.elapsed() < LOST_WARNING_EVERY)
        {
            return;
        }
        eprintln!(
            "tcpstate: warning: {} events lost so far: {} because the ring buffer was full \
             (raise --ring-mib), {} skipped by the kernel as nested program runs (a softirq \
             transition while the same CPU ran the program in process context)",
            lost.total(),
            lost.ring_full,
            lost.nested
        );
        self.reported = lost;
        self.last_warning = Some(Instant::now());
    }
}

pub async fn run(args: &WatchArgs) -> Result<()> {
    let common = &args.common;
    let probe = loader::load(&common.settings())?;
    eprintln!("tcpstate: tracing TCP state transitions (Ctrl-C to stop)");
    let clock = Clock::system();
    let started = Instant::now();
    let mut pipe = Pipeline {
        filter: common.filter(),
        renderer: Renderer::new(
            BufWriter::with_capacity(1 << 16, io::stdout()),
            common.json,
            clock,
        ),
        remaining: common.count,
    };
    let mut tracker = Tracker::default();
    let mut events = readable(probe.events).context("polling the ring buffer")?;
    let mut logs = readable(probe.logger).context("polling eBPF diagnostics")?;
    let kernel = probe.kernel;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let stop_at = common.duration.map(|d| started + d);
    let until_stop = async {
        match stop_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_stop);
    let mut count = 0u64;
    let mut lost = LostWatch {
        reported: Lost::default(),
        last_warning: None,
    };

    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                count += drain(guard.get_inner_mut(), &mut tracker, &mut pipe);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                count += drain(events.get_mut(), &mut tracker, &mut pipe);
                tracker.flush(event::monotonic_ns(), &mut pipe);
                lost.check(kernel.lost()?);
            }
            guard = logs.readable_mut() => {
                let mut guard = guard.context("polling eBPF diagnostics")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut until_stop => break,
        }
        pipe.renderer.flush();
        if pipe.renderer.error().is_some() || pipe.done() {
            break;
        }
    }

    // Detach first, so that nothing arrives after the final drain.
    let lost_total = kernel.lost()?;
    drop(kernel);
    count += drain(events.get_mut(), &mut tracker, &mut pipe);
    tracker.finish(&mut pipe);
    let untracked = tracker.stats().untracked;
    pipe.renderer.summary(&Summary {
        events: count,
        lost: lost_total.total(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        untracked,
    });
    match pipe.renderer.error() {
        // `tcpstate watch | head`: the reader has all it wanted.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(io::Error::new(e.kind(), e.to_string())).context("writing output"),
        None => Ok(()),
    }
}

/// Registers an object that owns its file descriptor with the reactor.
fn readable<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` (a map or the log reader) owns its descriptor and keeps it
    // open and unchanged until it is dropped, which the AsyncFd does last.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Reads every waiting record through the tracker; returns how many.
fn drain<W: Write>(
    ring: &mut RingBuf<MapData>,
    tracker: &mut Tracker,
    pipe: &mut Pipeline<W>,
) -> u64 {
    let mut n = 0;
    while !pipe.done() {
        let Some(item) = ring.next() else { break };
        n += 1;
        match event::decode(&item) {
            Ok(ev) => tracker.on_event(&ev, pipe),
            Err(e) => log::warn!("skipping a malformed record: {e}"),
        }
    }
    n
}
