//! The event loop shared by `watch` and `timewait`: ring buffer -> decode
//! -> tracker -> TIME_WAIT table -> the command's view, with the kernel's
//! socket table (sock_diag) seeding the table at start and reconciling it
//! periodically, off the event loop's thread.

use std::{io, os::fd::AsRawFd, time::Duration};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    cli::Common,
    host::{
        clock, owners,
        snapshot::{self, Dump},
        sockdiag::{KernelSocket, Listeners},
    },
    kernel::{counters::Lost, decode, loader, privileges},
    messages::{note, warning},
    render::{Printer, Summary},
    track::{
        timewait::{self, EXPIRY_SLACK_NS, Table, TwSink},
        tracker::{Close, Sink, Tracker, Transition},
    },
};

/// How often userspace drains the ring buffer when the kernel has not woken
/// it (the kernel wakes it only once a batch is waiting).
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a command does with the stream.
pub trait View: Sink + TwSink {
    type P: Printer;

    fn printer(&self) -> &Self::P;
    fn printer_mut(&mut self) -> &mut Self::P;

    /// Called every `refresh` interval (if any).
    fn refresh(&mut self, _engine: &Engine, _lost: Lost, _now_ns: u64) {}

    /// The view has all it wants (`--count`).
    fn done(&self) -> bool {
        false
    }

    fn flush(&mut self) {
        self.printer_mut().flush();
    }

    /// Ends the run with the summary.
    fn finish(&mut self, engine: &Engine, lost: Lost, duration: Duration) {
        self.printer_mut().summary(&Summary {
            traced: true,
            events: engine.events,
            lost: lost.total(),
            duration_ms: duration.as_secs_f64() * 1000.0,
            untracked: engine.tracker.stats().untracked,
            unfinished: engine.tracker.stats().unfinished,
            rescued: lost.rescued,
        });
    }

    /// The output's write error, if any.
    fn error(&self) -> Option<&io::Error> {
        self.printer().error()
    }
}

/// The pipeline's state.
pub struct Engine {
    pub tracker: Tracker,
    pub table: Table,
    /// Listening ports from the latest dump.
    pub listeners: Listeners,
    /// Established sockets from the latest dump.
    pub established: Vec<KernelSocket>,
    /// Records read from the kernel.
    pub events: u64,
    /// Reconciliation passes done.
    pub reconciliations: u64,
}

/// Routes the tracker's output through the TIME_WAIT table to the view.
struct Stage<'a, V> {
    table: &'a mut Table,
    view: &'a mut V,
}

impl<V: View> Sink for Stage<'_, V> {
    fn transition(&mut self, t: &Transition) {
        self.view.transition(t);
        self.table.on_transition(t, self.view);
    }

    fn close(&mut self, c: &Close) {
        self.view.close(c);
        self.table.on_close(c, self.view);
    }
}

impl Engine {
    pub fn new(tw_len_ns: u64, reconciling: bool) -> Engine {
        let grace = if reconciling { EXPIRY_SLACK_NS } else { 0 };
        Engine {
            tracker: Tracker::default(),
            table: Table::new(
                clock::monotonic_ns(),
                tw_len_ns,
                grace,
                timewait::DEFAULT_MAX_ENTRIES,
            ),
            listeners: Listeners::default(),
            established: Vec::new(),
            events: 0,
            reconciliations: 0,
        }
    }

    /// Applies a dump: the first one seeds the table.
    pub fn apply(&mut self, dump: Dump, seeding: bool, view: &mut impl TwSink) {
        self.table.reconcile(
            &dump.time_wait,
            &dump.listeners,
            dump.ephemeral,
            dump.taken_ns,
            seeding,
            view,
        );
        self.listeners = dump.listeners;
        self.established = dump.established;
        self.reconciliations += 1;
    }

    /// Reads every waiting record through the pipeline.
    fn drain<V: View>(&mut self, ring: &mut RingBuf<MapData>, view: &mut V) {
        while !view.done() {
            let Some(item) = ring.next() else { break };
            self.events += 1;
            match decode::decode(&item) {
                Ok(ev) => self.tracker.on_event(
                    &ev,
                    &mut Stage {
                        table: &mut self.table,
                        view,
                    },
                ),
                Err(e) => warning!("skipping a malformed record: {e}"),
            }
        }
    }

    /// Time-driven work: held closes, expiries.
    fn tick<V: View>(&mut self, now_ns: u64, view: &mut V) {
        self.tracker.flush(
            now_ns,
            &mut Stage {
                table: &mut self.table,
                view,
            },
        );
        self.table.expire(now_ns, view);
    }
}

/// How a run is paced.
pub struct Pacing {
    /// Reconcile with the kernel this often (`None`: never).
    pub reconcile: Option<Duration>,
    /// Call [`View::refresh`] this often.
    pub refresh: Option<Duration>,
}

/// Loads the programs and runs the pipeline until a signal, `--duration`,
/// or the view is done.
pub async fn run(common: &Common, pacing: Pacing, view: &mut impl View) -> Result<()> {
    let scope = common.scope();
    let probe = loader::load(&scope.settings)?;
    if pacing.reconcile.is_some() {
        privileges::check_namespace_access()?;
    }
    let started = Instant::now();
    let tw_len_ns = common.tw_len.as_nanos() as u64;
    let mut engine = Engine::new(tw_len_ns, pacing.reconcile.is_some());
    if pacing.reconcile.is_some() {
        let seed =
            snapshot::dump(&scope, None).context("reading the kernel's TIME_WAIT sockets")?;
        engine.apply(seed, true, view);
        let owners = owners::of_sockets(engine.listeners.values().copied());
        for (&(netns, port), inode) in &engine.listeners {
            if let Some(&owner) = owners.get(inode) {
                engine.tracker.seed_listener(netns, port, owner);
            }
        }
    }
    note!("tracing TCP state transitions (Ctrl-C to stop)");

    let mut events = readable(probe.events).context("polling the ring buffer")?;
    let mut logs = readable(probe.logger).context("polling eBPF diagnostics")?;
    let kernel = probe.kernel;
    let mut poll = interval(POLL_INTERVAL);
    let mut refresh = pacing.refresh.map(interval);
    let mut reconcile = pacing.reconcile.map(interval);
    let mut pending_dump: Option<tokio::task::JoinHandle<Result<Dump>>> = None;
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
    let mut lost = LostWatch::default();

    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                engine.drain(guard.get_inner_mut(), view);
                guard.clear_ready();
            }
            _ = poll.tick() => {
                engine.drain(events.get_mut(), view);
                engine.tick(clock::monotonic_ns(), view);
                lost.check(kernel.lost()?);
            }
            _ = tick(&mut refresh) => {
                engine.drain(events.get_mut(), view);
                view.refresh(&engine, kernel.lost()?, clock::monotonic_ns());
            }
            _ = tick(&mut reconcile), if pending_dump.is_none() => {
                // Drain first: what is already traced is not "missed".
                engine.drain(events.get_mut(), view);
                let (scope, only) = (scope.clone(), engine.table.namespaces());
                pending_dump = Some(tokio::task::spawn_blocking(move || snapshot::dump(&scope, Some(&only))));
            }
            done = async { pending_dump.as_mut().expect("guarded").await }, if pending_dump.is_some() => {
                pending_dump = None;
                let dump = done.context("reconciliation task")?.context("reconciling with the kernel")?;
                engine.drain(events.get_mut(), view);
                engine.apply(dump, false, view);
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
        view.flush();
        if view.error().is_some() || view.done() {
            break;
        }
    }

    // Detach first, so that nothing arrives after the final drain.
    let lost_total = kernel.lost()?;
    drop(kernel);
    engine.drain(events.get_mut(), view);
    let mut sink = Stage {
        table: &mut engine.table,
        view,
    };
    engine.tracker.finish(&mut sink);
    view.finish(&engine, lost_total, started.elapsed());
    output_result(view.error())
}

/// The run's result given the output's first write error: a closed pipe
/// (`tcpstate watch | head`) means the reader has all it wanted.
pub fn output_result(error: Option<&io::Error>) -> Result<()> {
    match error {
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(io::Error::new(e.kind(), e.to_string())).context("writing output"),
        None => Ok(()),
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// Waits for the next tick, or forever without an interval.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Registers an object that owns its file descriptor with the reactor.
fn readable<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` (a map or the log reader) owns its descriptor and keeps it
    // open and unchanged until it is dropped, which the AsyncFd does last.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Warns on stderr when the kernel loses events: at once for the first
/// loss, then at most every [`LOST_WARNING_EVERY`].
#[derive(Default)]
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
        warning!(
            "{} events lost so far: {} because the ring buffer was full \
             (raise --ring-mib), {} skipped by the kernel as nested program runs (a softirq \
             transition while the same CPU ran a BPF program) that the rescue programs could \
             not record",
            lost.total(),
            lost.ring_full,
            lost.nested
        );
        self.reported = lost;
        self.last_warning = Some(Instant::now());
    }
}
