//! The event loop shared by `watch` and `timewait`: ring buffer -> decode
//! -> tracker -> TIME_WAIT table -> the command's view, with the kernel's
//! socket table (sock_diag) seeding the table at start and reconciling it
//! periodically, off the event loop's thread.

use std::{
    io::{self, Write},
    os::fd::AsRawFd,
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use rustc_hash::FxHashSet;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    cli::Common,
    event::{self, State, Tuple},
    loader::{self, Lost},
    output::{Renderer, Summary},
    owners,
    sockdiag::{self, KernelSocket, Listeners},
    sysctl,
    timewait::{EXPIRY_SLACK_NS, Table, TwSink},
    tracker::{Close, Sink, Tracker, Transition},
};

/// How often userspace drains the ring buffer when the kernel has not woken
/// it (the kernel wakes it only once a batch is waiting).
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a command does with the stream.
pub trait View: Sink + TwSink {
    type Out: Write;

    fn renderer(&self) -> &Renderer<Self::Out>;
    fn renderer_mut(&mut self) -> &mut Renderer<Self::Out>;

    /// Called every `refresh` interval (if any).
    fn refresh(&mut self, _engine: &Engine, _lost: Lost, _now_ns: u64) {}

    /// The view has all it wants (`--count`).
    fn done(&self) -> bool {
        false
    }

    fn flush(&mut self) {
        self.renderer_mut().flush();
    }

    /// Ends the run with the summary.
    fn finish(&mut self, engine: &Engine, lost: Lost, duration: Duration) {
        self.renderer_mut().summary(&Summary {
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
        self.renderer().error()
    }
}

/// One pass over the kernel's socket tables.
pub struct Dump {
    /// CLOCK_MONOTONIC when the dump began.
    pub taken_ns: u64,
    /// Per namespace: TIME_WAIT sockets and FIN_WAIT2 ones (which include
    /// timewait sockets still in that substate).
    pub time_wait: Vec<(u32, Vec<KernelSocket>)>,
    pub listeners: Listeners,
    /// `ip_local_port_range` of tcpstate's own namespace, to tell clients'
    /// TIME_WAIT sockets from those of servers whose listener is gone.
    pub ephemeral: (u16, u16),
    /// Established sockets, for port pressure.
    pub established: Vec<KernelSocket>,
}

/// Which sockets a run covers: the kernel-side family and port filters,
/// applied to the kernel's tables too so both sources agree.
#[derive(Clone, Debug)]
pub struct Scope {
    pub settings: loader::Settings,
    pub netns: Vec<u32>,
}

impl Scope {
    pub fn new(common: &Common) -> Scope {
        Scope {
            settings: common.settings(),
            netns: common.netns.clone(),
        }
    }

    fn matches(&self, netns: u32, t: &Tuple) -> bool {
        let s = &self.settings;
        let family_bit = match t.family {
            event::Family::V4 => tcpstate_ebpf::FAMILY_V4,
            event::Family::V6 => tcpstate_ebpf::FAMILY_V6,
        };
        s.families & family_bit != 0
            && (s.lports.is_empty() || s.lports.contains(&t.lport))
            && (s.rports.is_empty() || s.rports.contains(&t.rport))
            && (self.netns.is_empty() || self.netns.contains(&netns))
    }
}

/// Dumps the namespaces in `only` (all of them when `None`). A namespace
/// that no longer exists is reported empty, so its entries end as `gone`;
/// one whose dump fails is left out (its entries stay as they are) with a
/// warning.
pub fn dump(scope: &Scope, only: Option<&FxHashSet<u32>>) -> Result<Dump> {
    let taken_ns = event::monotonic_ns();
    let all = sockdiag::namespaces()?;
    let wanted: Vec<u32> = match only {
        Some(set) => set.iter().copied().collect(),
        None => all.iter().map(|(ns, _)| *ns).collect(),
    };
    let mut out = Dump {
        taken_ns,
        time_wait: Vec::new(),
        listeners: Listeners::default(),
        ephemeral: sysctl::port_range(),
        established: Vec::new(),
    };
    let states = [
        State::TIME_WAIT,
        State::FIN_WAIT2,
        State::LISTEN,
        State::ESTABLISHED,
    ];
    for ns in wanted {
        if !scope.netns.is_empty() && !scope.netns.contains(&ns) {
            continue;
        }
        let sockets = match all.iter().find(|(inode, _)| *inode == ns) {
            Some((_, path)) => match sockdiag::dump_in(path, &states) {
                Ok(sockets) => sockets,
                Err(e) => {
                    eprintln!("tcpstate: warning: skipping network namespace {ns}: {e:#}");
                    continue;
                }
            },
            None => Vec::new(),
        };
        let mut tw = Vec::new();
        for ks in sockets {
            match ks.state {
                State::LISTEN => {
                    out.listeners.insert((ks.netns, ks.tuple.lport), ks.inode);
                }
                _ if !scope.matches(ks.netns, &ks.tuple) => {}
                State::ESTABLISHED => out.established.push(ks),
                // Full FIN_WAIT2 sockets have an inode; timewait ones do not.
                State::FIN_WAIT2 if ks.inode != 0 => {}
                _ => tw.push(ks),
            }
        }
        out.time_wait.push((ns, tw));
    }
    Ok(out)
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
                event::monotonic_ns(),
                tw_len_ns,
                grace,
                crate::timewait::DEFAULT_MAX_ENTRIES,
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
            match event::decode(&item) {
                Ok(ev) => self.tracker.on_event(
                    &ev,
                    &mut Stage {
                        table: &mut self.table,
                        view,
                    },
                ),
                Err(e) => log::warn!("skipping a malformed record: {e}"),
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
    let scope = Scope::new(common);
    let probe = loader::load(&scope.settings)?;
    if pacing.reconcile.is_some() {
        loader::check_namespace_access()?;
    }
    let started = Instant::now();
    let tw_len_ns = common.tw_len.as_nanos() as u64;
    let mut engine = Engine::new(tw_len_ns, pacing.reconcile.is_some());
    if pacing.reconcile.is_some() {
        let seed = dump(&scope, None).context("reading the kernel's TIME_WAIT sockets")?;
        engine.apply(seed, true, view);
        let owners = owners::of_sockets(engine.listeners.values().copied());
        for (&(netns, port), inode) in &engine.listeners {
            if let Some(&owner) = owners.get(inode) {
                engine.tracker.seed_listener(netns, port, owner);
            }
        }
    }
    eprintln!("tcpstate: tracing TCP state transitions (Ctrl-C to stop)");

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
                engine.tick(event::monotonic_ns(), view);
                lost.check(kernel.lost()?);
            }
            _ = tick(&mut refresh) => {
                engine.drain(events.get_mut(), view);
                view.refresh(&engine, kernel.lost()?, event::monotonic_ns());
            }
            _ = tick(&mut reconcile), if pending_dump.is_none() => {
                // Drain first: what is already traced is not "missed".
                engine.drain(events.get_mut(), view);
                let (scope, only) = (scope.clone(), engine.table.namespaces());
                pending_dump = Some(tokio::task::spawn_blocking(move || dump(&scope, Some(&only))));
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
    match view.error() {
        // `tcpstate watch | head`: the reader has all it wanted.
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
        eprintln!(
            "tcpstate: warning: {} events lost so far: {} because the ring buffer was full \
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
