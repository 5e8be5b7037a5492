//! The event loop shared by `watch` and `timewait`: ring buffer -> decode
//! -> tracker -> TIME_WAIT table -> the command's view, with the kernel's
//! socket table (sock_diag) seeding the table at start and reconciling it
//! periodically, off the event loop's thread.

use std::{io, os::fd::AsRawFd, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use rustc_hash::FxHashMap;

use crate::{
    cli::Common,
    host::{
        clock, netns, owners,
        snapshot::{self, Dump},
        sockdiag::{KernelSocket, Listeners},
        sysctl::Facts,
    },
    kernel::{
        counters::{Lost, ProgramRuns},
        decode::{self, Kind},
        loader::{self, Kernel},
        privileges,
    },
    messages::{note, warning},
    render::{Losses, NsFigures, Printer, Summary},
    sock::State,
    track::{
        order::{self, Reorder},
        timewait::{self, DumpContext, EXPIRY_SLACK_NS, ExitReason, Table, TwSink},
        tracker::{BindFailure, Close, ConnectFailure, Note, Sink, Tracker, Transition},
    },
};

use super::output;

/// How often userspace drains the ring buffer when the kernel has not woken
/// it (the kernel wakes it only once a batch is waiting).
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long one drain may go on before the loop looks at signals and
/// timers again, however many records wait: the loop answers a signal in
/// time even on a host too slow to keep up.
const DRAIN_SLICE: Duration = Duration::from_millis(20);

/// How long the last drain, after a signal or `--duration`, may take: the
/// run ends within a second whatever the backlog, and the records it had
/// no time for are counted as lost.
const EXIT_DRAIN: Duration = Duration::from_millis(250);

/// Records read between looks at the clock.
const DRAIN_STEP: usize = 256;

/// What a command does with the stream.
pub trait View: Sink + TwSink {
    type P: Printer;

    fn printer(&self) -> &Self::P;
    fn printer_mut(&mut self) -> &mut Self::P;

    /// Called once tracing has begun, after the kernel's tables seeded the
    /// engine.
    fn started(&mut self, _engine: &Engine) {}

    /// Called when the run is told to stop, before the programs are
    /// detached (which takes a while: the kernel waits for its readers of
    /// each classic tracepoint to be done).
    fn stopped(&mut self) {}

    /// Called every `refresh` interval (if any).
    fn refresh(&mut self, _engine: &Engine, _lost: Losses, _now_ns: u64) {}

    /// Called at every poll of the ring buffer ([`POLL_INTERVAL`]).
    fn poll(&mut self) {
        self.printer_mut().poll();
    }

    /// The view has all it wants (`--count`).
    fn done(&self) -> bool {
        false
    }

    fn flush(&mut self) {
        self.printer_mut().flush();
    }

    /// Ends the run with the summary.
    fn finish(&mut self, engine: &Engine, lost: Losses, rescued: u64, duration: Duration) {
        self.printer_mut().summary(&Summary {
            traced: true,
            events: engine.events,
            lost,
            duration_ms: duration.as_secs_f64() * 1000.0,
            untracked: engine.tracker.stats().untracked,
            unfinished: engine.tracker.stats().unfinished,
            rescued,
            late: engine.reorder.late(),
        });
    }

    /// The output's write error, if any.
    fn error(&self) -> Option<&io::Error> {
        self.printer().error()
    }
}

/// The pipeline's state.
pub struct Engine {
    /// Records waiting for older ones from other CPUs.
    pub reorder: Reorder,
    pub tracker: Tracker,
    pub table: Table,
    /// Listening ports from the latest dump.
    pub listeners: Listeners,
    /// Established sockets from the latest dump.
    pub established: Vec<KernelSocket>,
    /// Each namespace's settings and counters, as last read inside it.
    pub facts: FxHashMap<u32, Facts>,
    /// Records read from the kernel.
    pub events: u64,
    /// When the ring buffer was last read to its end (kernel monotonic
    /// time): every record placed before then has been read. Time-driven
    /// release goes no further: while the reader is behind, the records
    /// still in the ring buffer are older than the clock.
    caught_up_ns: u64,
    /// Records left in the ring buffer when the run ended: the last drain
    /// ran out of time.
    pub unread: u64,
    /// Reconciliation passes done.
    pub reconciliations: u64,
    /// The kernel's family and port filters, for the records it cannot
    /// filter itself (see [`Engine::process`]); `None` when tracing is off.
    pub kernel_filter: Option<loader::Settings>,
    /// Whether failed `bind()` calls are traced.
    pub binds_traced: bool,
    /// TIME_WAIT sockets per (namespace, local port), counted for a failed
    /// `bind()` and kept [`HOLDERS_TTL_NS`]: a process retrying `bind()`
    /// in a loop costs one count of the table per second.
    holders: FxHashMap<(u32, u16), (u64, usize)>,
    /// Readable names of namespaces.
    pub names: netns::Names,
    /// What each program's runs cost, as of the latest refresh (read only
    /// when [`Pacing::program_runs`] asks for it).
    pub programs: Vec<ProgramRuns>,
}

/// How long a count of [`Engine::holders`] stands.
const HOLDERS_TTL_NS: u64 = 1_000_000_000;

/// Counts kept in [`Engine::holders`] before they are dropped together.
const HOLDERS_MAX: usize = 4096;

/// Routes the tracker's output through the TIME_WAIT table to the view.
struct Stage<'a, V> {
    table: &'a mut Table,
    facts: &'a FxHashMap<u32, Facts>,
    holders: &'a mut FxHashMap<(u32, u16), (u64, usize)>,
    view: &'a mut V,
}

impl<V> Stage<'_, V> {
    /// Whether namespace `netns` has no TIME_WAIT bucket left: the kernel
    /// refuses a TIME_WAIT socket once it has `tcp_max_tw_buckets` of them,
    /// and the table holds what the kernel holds (exact when no kernel
    /// filter hides some of them; unknown when its settings were never
    /// read).
    fn buckets_full(&self, netns: u32) -> bool {
        self.facts
            .get(&netns)
            .is_some_and(|f| self.table.in_netns(netns) as u64 >= f.max_tw_buckets)
    }
}

impl<V: View> Sink for Stage<'_, V> {
    fn transition(&mut self, t: &Transition) {
        if t.note == Note::TimeWait && self.buckets_full(t.id.netns) {
            let t = Transition {
                note: Note::TimeWaitRefused,
                ..*t
            };
            self.view.transition(&t);
        } else {
            self.view.transition(t);
        }
        self.table.on_transition(t, self.view);
    }

    fn close(&mut self, c: &Close) {
        let refused = c.time_wait && self.buckets_full(c.id.netns);
        let c = Close {
            time_wait: c.time_wait && !refused,
            tw_refused: refused,
            ..*c
        };
        self.view.close(&c);
        self.table.on_close(&c, self.view);
    }

    fn connect_failed(&mut self, f: &ConnectFailure) {
        self.view.connect_failed(f);
    }

    /// With the TIME_WAIT sockets that hold the port.
    fn bind_failed(&mut self, b: &BindFailure) {
        let key = (b.id.netns, b.id.tuple.lport);
        let fresh = |&(at, _): &(u64, usize)| b.ts_ns.saturating_sub(at) < HOLDERS_TTL_NS;
        let held = match self.holders.get(&key).filter(|c| fresh(c)) {
            Some(&(_, n)) => n,
            None => {
                if self.holders.len() >= HOLDERS_MAX {
                    self.holders.clear();
                }
                let n = self
                    .table
                    .entries()
                    .filter(|e| e.id.netns == key.0 && e.id.tuple.lport == key.1)
                    .count();
                self.holders.insert(key, (b.ts_ns, n));
                n
            }
        };
        self.view.bind_failed(&BindFailure {
            time_wait_on_port: Some(held),
            ..*b
        });
    }
}

impl Engine {
    pub fn new(tw_len_ns: u64, reconciling: bool) -> Engine {
        let grace = if reconciling { EXPIRY_SLACK_NS } else { 0 };
        Engine {
            reorder: Reorder::default(),
            tracker: Tracker::default(),
            table: Table::new(
                clock::monotonic_ns(),
                tw_len_ns,
                grace,
                timewait::DEFAULT_MAX_ENTRIES,
            ),
            listeners: Listeners::default(),
            established: Vec::new(),
            facts: FxHashMap::default(),
            events: 0,
            caught_up_ns: 0,
            unread: 0,
            reconciliations: 0,
            kernel_filter: None,
            binds_traced: false,
            holders: FxHashMap::default(),
            names: netns::Names::default(),
            programs: Vec::new(),
        }
    }

    /// The name and workload of namespace `netns`, for its figures.
    pub fn identity(&self, netns: u32) -> NsFigures {
        let identity = self.names.of(netns);
        NsFigures {
            netns,
            name: identity.as_ref().map(|i| i.name.clone()),
            workload: identity.and_then(|i| i.workload),
            facts: None,
            time_wait: 0,
            tw_refused: None,
        }
    }

    /// Every namespace whose settings were read, in inode order, with its
    /// TIME_WAIT sockets now.
    pub fn known_namespaces(&self) -> Vec<NsFigures> {
        let mut known: Vec<NsFigures> = self
            .facts
            .iter()
            .map(|(&netns, &facts)| NsFigures {
                netns,
                facts: Some(facts),
                time_wait: self.table.in_netns(netns),
                tw_refused: None,
                ..self.identity(netns)
            })
            .collect();
        known.sort_by_key(|n| n.netns);
        known
    }

    /// Applies a dump: the first one seeds the table.
    pub fn apply(&mut self, dump: Dump, seeding: bool, view: &mut impl TwSink) {
        // What each namespace's `TCPTimeWaitOverflow` rose by since its
        // previous reading.
        let overflowed: FxHashMap<u32, u64> = dump
            .facts
            .iter()
            .filter_map(|(ns, now)| {
                let before = self.facts.get(ns)?;
                Some((*ns, now.tw_overflow.saturating_sub(before.tw_overflow)))
            })
            .collect();
        self.table.reconcile(
            &dump.time_wait,
            &DumpContext {
                listeners: &dump.listeners,
                ephemeral: &dump.ranges(),
                overflowed: &overflowed,
            },
            dump.taken_ns,
            seeding,
            view,
        );
        self.listeners = dump.listeners;
        self.established = dump.established;
        // Namespaces not dumped this time (no entries) keep their facts;
        // those gone are forgotten (their inode numbers may come back).
        self.facts.retain(|ns, _| dump.existing.contains(ns));
        self.facts.extend(dump.facts);
        self.names.retain(&dump.existing);
        self.reconciliations += 1;
    }

    /// Reads waiting records into the reorder window and passes on those
    /// that have settled, until the ring buffer is empty (true) or
    /// `deadline` has passed, so that the loop gets back to signals and
    /// timers under any load.
    fn drain<V: View>(
        &mut self,
        ring: &mut RingBuf<MapData>,
        view: &mut V,
        deadline: std::time::Instant,
    ) -> bool {
        let started_ns = clock::monotonic_ns();
        loop {
            for _ in 0..DRAIN_STEP {
                let Some(item) = ring.next() else {
                    self.caught_up_ns = started_ns;
                    self.process_settled(view);
                    return true;
                };
                self.events += 1;
                match decode::decode(&item) {
                    Ok(ev) => self.reorder.push(ev),
                    Err(e) => warning!("skipping a malformed record: {e}"),
                }
            }
            self.process_settled(view);
            if std::time::Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// [`Engine::drain`] for one [`DRAIN_SLICE`].
    fn drain_slice<V: View>(&mut self, ring: &mut RingBuf<MapData>, view: &mut V) -> bool {
        self.drain(ring, view, std::time::Instant::now() + DRAIN_SLICE)
    }

    /// The last drains, while `detaching` lets go of the programs (which
    /// takes a few hundred milliseconds, see [`Kernel`]): records are read
    /// for up to [`EXIT_DRAIN`], and those left when it is over and the
    /// programs are gone are counted in [`Engine::unread`]. Returns what
    /// the programs lost, read once they were gone.
    fn drain_last<V: View>(
        &mut self,
        ring: &mut RingBuf<MapData>,
        view: &mut V,
        detaching: std::thread::JoinHandle<Result<Lost>>,
    ) -> Result<Lost> {
        let deadline = std::time::Instant::now() + EXIT_DRAIN;
        let mut empty = false;
        while std::time::Instant::now() < deadline && !(empty && detaching.is_finished()) {
            empty = self.drain(
                ring,
                view,
                deadline.min(std::time::Instant::now() + DRAIN_SLICE),
            );
            if empty && !detaching.is_finished() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let lost = detaching
            .join()
            .map_err(|_| anyhow!("detaching the eBPF programs failed"))?
            .context("reading what the eBPF programs lost")?;
        if !self.drain(ring, view, std::time::Instant::now()) {
            while ring.next().is_some() {
                self.unread += 1;
            }
        }
        Ok(lost)
    }

    fn process_settled<V: View>(&mut self, view: &mut V) {
        while !view.done()
            && let Some(ev) = self.reorder.pop_settled()
        {
            self.process(&ev, view);
        }
    }

    /// One record through the tracker and the table, after the expiries
    /// due before it: the output stays in time order.
    fn process<V: View>(&mut self, ev: &decode::Event, view: &mut V) {
        // An accepted socket's first transition passes the kernel with its
        // listener's tuple before Linux 6.15 (see `order`): it is filtered
        // here, with its own tuple. One left without it had its next
        // records dropped by the kernel's filter, unless that filter looks
        // at the local port only.
        let accept = Kind::Transition {
            old: State::LISTEN,
            new: State::SYN_RECV,
        };
        if ev.kind == accept
            && let Some(filter) = &self.kernel_filter
            && (!filter.passes(&ev.id.tuple)
                || (order::has_listener_tuple(ev) && filter.filters_remote_or_family()))
        {
            return;
        }
        self.table.expire(ev.ts_ns, view);
        self.tracker.on_event(
            ev,
            &mut Stage {
                table: &mut self.table,
                facts: &self.facts,
                holders: &mut self.holders,
                view,
            },
        );
    }

    /// Passes on every held record stamped at or before `horizon_ns`.
    fn release<V: View>(&mut self, horizon_ns: u64, view: &mut V) {
        while !view.done()
            && let Some(ev) = self.reorder.pop_until(horizon_ns)
        {
            self.process(&ev, view);
        }
    }

    /// Time-driven work up to the reorder window's horizon: records that
    /// waited long enough, held closes, expiries. The horizon is a window
    /// before the ring buffer was last read to its end, not before now.
    fn tick<V: View>(&mut self, view: &mut V) {
        let horizon = self.caught_up_ns.saturating_sub(self.reorder.window_ns());
        self.release(horizon, view);
        self.tracker.flush(
            horizon,
            &mut Stage {
                table: &mut self.table,
                facts: &self.facts,
                holders: &mut self.holders,
                view,
            },
        );
        self.table.expire(horizon, view);
    }
}

/// How a run is paced, and what else it reports on.
pub struct Pacing {
    /// Reconcile with the kernel this often (`None`: never).
    pub reconcile: Option<Duration>,
    /// Call [`View::refresh`] this often.
    pub refresh: Option<Duration>,
    /// The output's losses, reported with the kernel's.
    pub output: output::Stats,
    /// Attach the syscall programs: failed `bind()` calls, `connect()`
    /// calls that fail before `SYN_SENT`, and accepted connections owned by
    /// the process that accepted them.
    pub syscalls: bool,
    /// Read only the records that end a handshake, a listener or a
    /// connection: what the TIME_WAIT table, the closes and the failures
    /// need, a fraction of every transition (see [`loader::Settings`]).
    pub closes_only: bool,
    /// Read each program's runs and run time at every refresh, into
    /// [`Engine::programs`] (the exporter's self-observation).
    pub program_runs: bool,
}

/// The signals that end a run, installed before anything slow starts.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        let on = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("installing the {name} handler"))
        };
        Ok(Signals {
            int: on(SignalKind::interrupt(), "SIGINT")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next of them.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// Loads and attaches the programs, then seeds the TIME_WAIT table and the
/// listeners' owners from the kernel's tables (when reconciling): the slow
/// part of a start, run off the event loop so that a signal ends it.
fn start(
    common: &Common,
    reconciling: bool,
    programs: &loader::Settings,
) -> Result<(loader::Probe, Engine)> {
    let scope = common.scope();
    let probe = loader::load(programs)?;
    if reconciling {
        privileges::check_namespace_access()?;
    }
    let mut engine = Engine::new(common.tw_len.as_nanos() as u64, reconciling);
    engine.kernel_filter = Some(programs.clone());
    engine.binds_traced = probe.kernel.syscalls;
    engine.reorder = Reorder::new(common.reorder_window.as_nanos() as u64);
    if reconciling {
        let seed =
            snapshot::dump(&scope, None).context("reading the kernel's TIME_WAIT sockets")?;
        // Seeded entries predate tracing: nothing to announce.
        engine.apply(seed, true, &mut Quiet);
        let owners = owners::of_sockets(engine.listeners.values().copied());
        for (&(netns, port), inode) in &engine.listeners {
            if let Some(&owner) = owners.get(inode) {
                engine.tracker.seed_listener(netns, port, owner);
            }
        }
    }
    Ok((probe, engine))
}

/// Ignores the table's changes.
pub struct Quiet;

impl TwSink for Quiet {
    fn tw_enter(&mut self, _: &crate::track::timewait::Entry) {}
    fn tw_exit(&mut self, _: &crate::track::timewait::Entry, _: ExitReason, _: u64) {}
}

/// Every loss, the kernel's, the tracker's gaps and the output's; and the
/// rescues.
fn losses(kernel: &mut Kernel, engine: &Engine, output: &output::Stats) -> Result<(Losses, u64)> {
    Ok(combine(kernel.lost()?, engine, output))
}

/// [`losses`] from the kernel's counts read earlier.
fn combine(lost: Lost, engine: &Engine, output: &output::Stats) -> (Losses, u64) {
    // A gap the kernel counted is not inferred again: each counted loss
    // may explain one unfinished connection.
    let counted = lost.ring_full + lost.nested;
    (
        Losses {
            ring_full: lost.ring_full,
            nested: lost.nested,
            inferred: engine.tracker.stats().unfinished.saturating_sub(counted),
            output: output.dropped(),
            unread: engine.unread,
        },
        lost.rescued,
    )
}

/// Loads the programs and runs the pipeline until a signal (SIGINT,
/// SIGTERM, SIGHUP), `--duration`, or the view is done.
pub async fn run(common: &Common, pacing: Pacing, view: &mut impl View) -> Result<()> {
    let started = Instant::now();
    let mut signals = Signals::install()?;
    let reconciling = pacing.reconcile.is_some();
    let programs = loader::Settings {
        syscalls: pacing.syscalls,
        closes_only: pacing.closes_only,
        ..common.settings()
    };
    let starting = {
        let common = common.clone();
        tokio::task::spawn_blocking(move || start(&common, reconciling, &programs))
    };
    let (probe, mut engine) = tokio::select! {
        started = starting => started.context("the start-up task")??,
        // Nothing is attached yet: nothing to drain or report but the end.
        _ = signals.recv() => return stopped_early(view, &pacing, started),
    };
    // `--duration` counts from when tracing begins.
    let stop_at = common.duration.map(|d| Instant::now() + d);
    let until_stop = async {
        match stop_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_stop);
    let scope = common.scope();
    note!("tracing TCP state transitions (Ctrl-C to stop)");
    view.started(&engine);

    let mut events = readable(probe.events).context("polling the ring buffer")?;
    let mut logs = readable(probe.logger).context("polling eBPF diagnostics")?;
    let mut kernel = probe.kernel;
    let mut poll = interval(POLL_INTERVAL);
    let mut refresh = pacing.refresh.map(interval);
    let mut reconcile = pacing.reconcile.map(interval);
    let mut pending_dump: Option<tokio::task::JoinHandle<Result<Dump>>> = None;
    // A dump taken, to apply once everything traced before it is read.
    let mut taken_dump: Option<Dump> = None;
    let mut lost = LostWatch::default();

    loop {
        // Records still waiting after a slice: the loop must still give
        // the runtime its turn (below).
        let mut behind = false;
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                // Ready until it is empty: a full slice leaves it so.
                if engine.drain_slice(guard.get_inner_mut(), view) {
                    guard.clear_ready();
                } else {
                    behind = true;
                }
            }
            _ = poll.tick() => {
                engine.drain_slice(events.get_mut(), view);
                engine.tick(view);
                view.poll();
                lost.check(losses(&mut kernel, &engine, &pacing.output)?.0);
            }
            _ = tick(&mut refresh) => {
                engine.drain_slice(events.get_mut(), view);
                if pacing.program_runs {
                    engine.programs = kernel.runs()?;
                }
                view.refresh(&engine, losses(&mut kernel, &engine, &pacing.output)?.0, clock::monotonic_ns());
            }
            _ = tick(&mut reconcile), if pending_dump.is_none() && taken_dump.is_none() => {
                // Drain first: what is already traced is not "missed".
                engine.drain_slice(events.get_mut(), view);
                let (scope, only) = (scope.clone(), engine.table.namespaces());
                pending_dump = Some(tokio::task::spawn_blocking(move || snapshot::dump(&scope, Some(&only))));
            }
            done = async { pending_dump.as_mut().expect("guarded").await }, if pending_dump.is_some() => {
                pending_dump = None;
                taken_dump = Some(done.context("reconciliation task")?.context("reconciling with the kernel")?);
            }
            guard = logs.readable_mut() => {
                let mut guard = guard.context("polling eBPF diagnostics")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = signals.recv() => break,
            _ = &mut until_stop => break,
        }
        // Everything tracing saw first: what it saw is not "missed". A
        // backlog postpones the dump to a later turn of the loop.
        if taken_dump.is_some()
            && engine.drain_slice(events.get_mut(), view)
            && let Some(dump) = taken_dump.take()
        {
            engine.release(u64::MAX, view);
            engine.apply(dump, false, view);
        }
        view.flush();
        if view.error().is_some() || view.done() {
            break;
        }
        if behind {
            // Signals and timers reach the select only through the
            // runtime's driver, which runs when this task yields: with the
            // ring buffer never empty (a host too busy for tcpstate to keep
            // up) it would otherwise wait for the backlog to end.
            tokio::task::yield_now().await;
        }
    }

    // The run's length: until it was told to stop.
    let duration = started.elapsed();
    view.stopped();
    // Detach beside the last drains, so that nothing arrives after them;
    // then the kernel's counts are final.
    let detaching = std::thread::spawn(move || kernel.finish());
    let kernel_lost = engine.drain_last(events.get_mut(), view, detaching)?;
    engine.release(u64::MAX, view);
    let mut sink = Stage {
        table: &mut engine.table,
        facts: &engine.facts,
        holders: &mut engine.holders,
        view,
    };
    engine.tracker.finish(&mut sink);
    let (lost, rescued) = combine(kernel_lost, &engine, &pacing.output);
    view.finish(&engine, lost, rescued, duration);
    output_result(view.error())
}

/// A run that ended before tracing began: only the summary.
fn stopped_early(view: &mut impl View, pacing: &Pacing, started: Instant) -> Result<()> {
    let engine = Engine::new(0, false);
    let lost = Losses {
        output: pacing.output.dropped(),
        ..Losses::default()
    };
    view.finish(&engine, lost, 0, started.elapsed());
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

/// Warns on stderr when events or output are lost: at once for the first
/// loss, then at most every [`LOST_WARNING_EVERY`].
#[derive(Default)]
struct LostWatch {
    reported: Losses,
    last_warning: Option<Instant>,
}

const LOST_WARNING_EVERY: Duration = Duration::from_secs(10);

impl LostWatch {
    fn check(&mut self, lost: Losses) {
        if lost.total() == self.reported.total()
            || self
                .last_warning
                .is_some_and(|at| at.elapsed() < LOST_WARNING_EVERY)
        {
            return;
        }
        let reasons = [
            (
                lost.ring_full,
                "events: the ring buffer was full (raise --ring-mib)",
            ),
            (
                lost.nested,
                "events the kernel skipped as nested program runs (a softirq transition while \
                 the same CPU ran the same program) that the rescue programs could not record",
            ),
            (
                lost.inferred,
                "connections whose end the kernel reported to no program (their socket \
                 began a new life first); each closes as kind unknown",
            ),
            (
                lost.output,
                "lines of output: the reader of standard output did not keep up",
            ),
        ];
        let said: Vec<String> = reasons
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, why)| format!("{n} {why}"))
            .collect();
        warning!("lost so far: {}", said.join("; "));
        self.reported = lost;
        self.last_warning = Some(Instant::now());
    }
}
