//! `cargo xtask bench`:
//! - the tracker's criterion benchmark, the TIME_WAIT table's memory per
//!   entry (1 million entries), and the full-screen view's refresh with
//!   100,000 entries;
//! - the end-to-end benchmark: a loopback connection storm (the server
//!   closing first) in a fresh network namespace, run alternately untraced
//!   and traced by `tcpstate watch --json > file`, several rounds; reports
//!   the median connection rate of each, their ratio, the whole machine's
//!   busy CPU time per connection, transitions expected vs seen, and lost
//!   events; optionally also a tracer waking on every event, a breakdown
//!   of where tracing's cost goes, and `tcpstate serve` scraped every
//!   second;
//! - the cost of reading 100,000 TIME_WAIT sockets from the kernel and
//!   reconciling them (`tcpstate timewait --once`), wall and CPU time, and
//!   how fast `serve`'s /metrics answers with them tracked;
//! - the start with 1,000 idle network namespaces on the host (each read,
//!   and named, at start): `timewait --once` and the time until `watch`
//!   traces, against the same without them.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    packages,
    toolchain::{self, Env},
    workload::{Nginx, Workload},
};

#[derive(clap::Args)]
pub struct Args {
    /// Connections per storm.
    #[arg(long, default_value_t = 20_000)]
    conns: u64,
    /// Rounds (each: one untraced and one traced storm).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Client threads of the storm (2 saturate both cores here; 1 leaves the
    /// storm latency-bound with half the CPU idle).
    #[arg(long, default_value_t = 2)]
    threads: u64,
    /// Also measure a tracer that wakes userspace on every event.
    #[arg(long)]
    per_event_wakeup: bool,
    /// Also measure where tracing's cost goes: the programs alone (every
    /// event dropped by the kernel's port filter), and the whole kernel
    /// path with the tracer decoding and tracking but rendering nothing.
    #[arg(long)]
    breakdown: bool,
    /// Also measure the closes-only stream: `tcpstate timewait`, and
    /// `tcpstate serve` with its metrics scraped every second.
    #[arg(long)]
    serve: bool,
    /// Also run every measurement on Debian's nginx under ApacheBench, after
    /// the storm.
    #[arg(long)]
    nginx: bool,
    /// Also measure the peer: libbpf-tools `tcpstates` (every transition,
    /// one text line each).
    #[arg(long)]
    peer: bool,
    /// Also measure another build of tcpstate (e.g. the one before a
    /// change) in every round: `watch --json`, and with `--serve` the
    /// closes-only `timewait`.
    #[arg(long, value_name = "TCPSTATE")]
    against: Option<PathBuf>,
    /// After the rounds, one more storm per tcpstate run with the kernel's
    /// BPF run statistics on (`kernel.bpf_stats_enabled`, read with
    /// bpftool): each program's runs and time per run, and the kernel
    /// path's time per transition. The statistics cost time themselves, so
    /// they are off during the rounds.
    #[arg(long)]
    program_stats: bool,
    /// Skip the criterion benchmark.
    #[arg(long)]
    no_criterion: bool,
}

/// Transitions one connection produces: 5 on each end.
const TRANSITIONS_PER_CONN: u64 = 10;
const NETNS: &str = "tcpstate-bench";
/// The peer the `--peer` variant runs (Debian package libbpf-tools).
const PEER: &str = "/usr/sbin/tcpstates";

pub fn run(env: &Env, tcpstate: &Path, args: &Args) -> Result<()> {
    if !args.no_criterion {
        env.cargo(&["bench", "--package", "tcpstate", "--bench", "tracker"])?;
        env.cargo(&["bench", "--package", "tcpstate", "--bench", "memory"])?;
        env.cargo(&["bench", "--package", "tcpstate", "--bench", "tui"])?;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the storm benchmark loads eBPF programs and makes a network namespace: run it as root"
        );
    }
    if args.nginx || args.peer {
        packages::install(&packages::BENCH)?;
    }
    if args.program_stats {
        packages::install(&packages::PROGRAM_STATS)?;
    }
    let storm = tcpstate.with_file_name("storm");
    let result = create_netns(NETNS)
        .and_then(|netns| {
            let storm = Workload::Storm {
                storm: storm.clone(),
                threads: args.threads,
            };
            storms(tcpstate, &storm, args, netns)?;
            if args.nginx {
                let nginx = Workload::Nginx(Nginx::start(NETNS)?);
                storms(tcpstate, &nginx, args, netns)?;
            }
            Ok(())
        })
        // Before the reconciliation benchmark: the kernel tears its
        // namespace of 100,000 TIME_WAIT sockets down for seconds after,
        // and every namespace operation waits for it meanwhile.
        .and_then(|()| namespaces_cost(tcpstate))
        .and_then(|()| reconcile_cost(tcpstate, &storm));
    delete_netns(NETNS);
    result
}

/// Idle network namespaces for [`namespaces_cost`].
const IDLE_NAMESPACES: usize = 1000;

/// The start with [`IDLE_NAMESPACES`] idle namespaces (a `sleep` in each)
/// against the start without them.
fn namespaces_cost(tcpstate: &Path) -> Result<()> {
    let quiet = start_times(tcpstate)?;
    let mut sleepers = Vec::new();
    let spawned = (0..IDLE_NAMESPACES).try_for_each(|_| {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .spawn()
            .context("starting a sleep in a namespace of its own")?;
        sleepers.push(child);
        Ok::<_, anyhow::Error>(())
    });
    // Every sleep in its namespace before measuring.
    thread::sleep(Duration::from_secs(2));
    let busy = spawned.and_then(|()| start_times(tcpstate));
    for mut child in sleepers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let busy = busy?;
    println!(
        "\nstart with {IDLE_NAMESPACES} idle network namespaces (without them): timewait --once \
         {:.0} ms wall, {:.0} ms CPU ({:.0} ms, {:.0} ms); watch traces after {:.0} ms ({:.0} ms)",
        busy.once_wall_ms,
        busy.once_cpu_ms,
        quiet.once_wall_ms,
        quiet.once_cpu_ms,
        busy.watch_ms,
        quiet.watch_ms
    );
    Ok(())
}

/// How long tcpstate takes to start.
struct StartTimes {
    once_wall_ms: f64,
    once_cpu_ms: f64,
    /// From `watch`'s start to its "tracing" note.
    watch_ms: f64,
}

fn start_times(tcpstate: &Path) -> Result<StartTimes> {
    let before = children_cpu();
    let started = std::time::Instant::now();
    let out = Command::new(tcpstate)
        .args(["timewait", "--once", "--json"])
        .output()
        .context("running tcpstate timewait --once")?;
    let once_wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let once_cpu_ms = (children_cpu() - before) * 1000.0;
    if !out.status.success() {
        bail!(
            "tcpstate timewait --once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let started = std::time::Instant::now();
    let mut watch = Command::new(tcpstate)
        .args(["watch", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tcpstate watch")?;
    let stderr = watch.stderr.take().context("watch's stderr")?;
    let traced = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("tracing"));
    let watch_ms = started.elapsed().as_secs_f64() * 1000.0;
    nix_kill(&watch)?;
    watch.wait()?;
    if !traced {
        bail!("tcpstate watch ended before tracing");
    }
    Ok(StartTimes {
        once_wall_ms,
        once_cpu_ms,
        watch_ms,
    })
}

/// TIME_WAIT sockets for the reconciliation benchmark, made by storms of
/// 10,000 connections on fresh server ports until the kernel holds them.
/// Per server port the kernel recycles a TIME_WAIT socket when a client
/// port comes round again (a new SYN on the 4-tuple), so one storm leaves
/// fewer TIME_WAIT sockets than connections.
const RECONCILE_SOCKETS: usize = 100_000;
const RECONCILE_STORM: u64 = 10_000;

fn reconcile_cost(tcpstate: &Path, storm: &Path) -> Result<()> {
    let ns = "tcpstate-bench-tw";
    let result = create_netns(ns).and_then(|inode| {
        while time_wait_count(ns)? < RECONCILE_SOCKETS {
            let out = Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(storm)
                .args(["--conns", &RECONCILE_STORM.to_string(), "--threads", "2"])
                .output()?;
            if !out.status.success() {
                bail!("storm failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let before = children_cpu();
        let started = std::time::Instant::now();
        let out = Command::new(tcpstate)
            .args([
                "timewait",
                "--once",
                "--json",
                "--netns",
                &inode.to_string(),
            ])
            .output()
            .context("running tcpstate timewait --once")?;
        let wall = started.elapsed();
        let cpu = children_cpu() - before;
        if !out.status.success() {
            bail!(
                "tcpstate timewait failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let entries = out
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(br#"{"type":"timewait_entry""#))
            .count();
        println!(
            "\nreconciliation: {entries} TIME_WAIT sockets read from the kernel and reconciled \
             (timewait --once, JSON output included) in {:.0} ms wall, {:.0} ms CPU",
            wall.as_secs_f64() * 1000.0,
            cpu * 1000.0
        );
        scrape_cost(tcpstate, entries)
    });
    delete_netns(ns);
    result
}

/// How long `serve`'s /metrics takes to answer with `entries` TIME_WAIT
/// sockets in its table: 20 scrapes, a second apart.
fn scrape_cost(tcpstate: &Path, entries: usize) -> Result<()> {
    let out = std::env::temp_dir().join("tcpstate-bench-serve.json");
    let (mut server, _) = start_tracer(
        tcpstate,
        &out,
        &["serve", "--json", "--listen", SERVE_LISTEN],
    )?;
    let timed = scrapes(20);
    nix_kill(&server)?;
    server.wait()?;
    let _ = fs::remove_file(&out);
    let mut timed = timed?;
    timed.sort_by(f64::total_cmp);
    println!(
        "serve: /metrics with {entries} TIME_WAIT sockets tracked answers in {:.1} ms (median \
         of 20), {:.1} ms at most",
        median(timed.clone()),
        timed.last().copied().unwrap_or_default()
    );
    Ok(())
}

/// The times of `n` scrapes a second apart, once the first snapshot is
/// there, in ms.
fn scrapes(n: usize) -> Result<Vec<f64>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while scrape().is_err() {
        if std::time::Instant::now() > deadline {
            bail!("tcpstate serve took no snapshot within 30 s");
        }
        thread::sleep(Duration::from_millis(200));
    }
    (0..n)
        .map(|_| {
            thread::sleep(Duration::from_secs(1));
            Ok(scrape()?.as_secs_f64() * 1000.0)
        })
        .collect()
}

/// Makes network namespace `ns` afresh (deleting one a run left behind),
/// with loopback up; returns its inode.
fn create_netns(ns: &str) -> Result<u64> {
    delete_netns(ns);
    toolchain::run(Command::new("ip").args(["netns", "add", ns]))?;
    toolchain::run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
    fs::metadata(format!("/run/netns/{ns}"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .context("netns inode")
}

/// Deletes network namespace `ns` if a run left it behind (quietly, so
/// that a clean start prints nothing).
fn delete_netns(ns: &str) {
    if Path::new("/run/netns").join(ns).exists() {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
}

/// TIME_WAIT sockets in namespace `ns`, as `ss` counts them.
fn time_wait_count(ns: &str) -> Result<usize> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Htan", "state", "time-wait"])
        .output()
        .context("running ss")?;
    Ok(out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count())
}

/// CPU seconds (user + system) of waited-for children so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The main traced configuration.
const WATCH: &[&str] = &["watch", "--json"];

/// Where the `serve` variant listens.
const SERVE_LISTEN: &str = "127.0.0.1:9978";

/// A traced configuration beside the main one, measured in every round.
struct Variant {
    name: &'static str,
    /// What runs.
    tracer: Tracer,
    /// Whether it writes the storm's transitions (false: it filters them,
    /// or writes none).
    renders: bool,
    runs: Vec<Traced>,
}

impl Variant {
    fn chosen(args: &Args) -> Vec<Variant> {
        let variant = |name, bin, args, renders| Variant {
            name,
            tracer: Tracer::Tcpstate(bin, args),
            renders,
            runs: Vec::new(),
        };
        let tested = |name, args, renders| variant(name, Bin::Tested, args, renders);
        let mut chosen = Vec::new();
        if args.per_event_wakeup {
            chosen.push(tested(
                "same, wake-up per event",
                &["watch", "--json", "--wakeup-bytes", "0"][..],
                true,
            ));
        }
        if args.breakdown {
            chosen.push(tested(
                "programs only: the kernel's port filter drops every event (`--lport 1`)",
                &["watch", "--json", "--lport", "1"][..],
                false,
            ));
            chosen.push(tested(
                "whole kernel path, tracer decodes and tracks, renders nothing (`--pid 1`)",
                &["watch", "--json", "--pid", "1"][..],
                false,
            ));
            chosen.push(tested(
                "same as the main run, no reading of the kernel's tables (`--reconcile 0`)",
                &["watch", "--json", "--reconcile", "0"][..],
                true,
            ));
        }
        if args.serve {
            chosen.push(tested(
                "`tcpstate timewait`: the closes-only stream, the table written every 10 s",
                TIMEWAIT,
                false,
            ));
            chosen.push(tested(
                "`tcpstate serve`, /metrics scraped every second",
                &["serve", "--json", "--listen", SERVE_LISTEN][..],
                false,
            ));
        }
        if args.against.is_some() {
            chosen.push(variant(
                "`--against` build: `tcpstate watch --json`",
                Bin::Against,
                WATCH,
                true,
            ));
            if args.serve {
                chosen.push(variant(
                    "`--against` build: `tcpstate timewait`",
                    Bin::Against,
                    TIMEWAIT,
                    false,
                ));
            }
        }
        if args.peer {
            chosen.push(Variant {
                name: "peer: libbpf-tools `tcpstates > file`",
                tracer: Tracer::Peer,
                renders: true,
                runs: Vec::new(),
            });
        }
        chosen
    }
}

impl Variant {
    /// Whether the build under test reads the closes-only stream (the 95%
    /// bar).
    fn closes_only(&self) -> bool {
        matches!(self.tracer, Tracer::Tcpstate(Bin::Tested, c) if matches!(c.first(), Some(&("serve" | "timewait"))))
    }
}

/// The closes-only configuration of `timewait`.
const TIMEWAIT: &[&str] = &["timewait", "--json", "--interval", "10"];

/// A tracer the benchmark runs.
#[derive(Clone, Copy)]
enum Tracer {
    /// `tcpstate ARGS`, `--json` included.
    Tcpstate(Bin, &'static [&'static str]),
    /// [`PEER`], as its users run it.
    Peer,
}

/// Which build of tcpstate runs.
#[derive(Clone, Copy)]
enum Bin {
    /// The one under test.
    Tested,
    /// `--against`.
    Against,
}

struct Traced {
    run: Run,
    seen: u64,
    lost: u64,
    /// Connections whose end tracing never saw (summary `unfinished`).
    unfinished: u64,
    /// Transitions the kernel skipped for the classic program that the
    /// rescue programs recorded (summary `rescued`), included in `seen`.
    rescued: u64,
    /// The programs' run statistics, when taken.
    programs: Vec<Program>,
}

/// One BPF program's run statistics over a storm.
struct Program {
    name: String,
    runs: u64,
    ns: u64,
}

/// The run statistics of the tracing programs loaded now (tcpstate's: the
/// benchmark runs one tracer at a time), from `bpftool prog show`.
fn program_stats() -> Result<Vec<Program>> {
    let out = Command::new("bpftool")
        .args(["--json", "prog", "show"])
        .output()
        .context("running bpftool")?;
    if !out.status.success() {
        bail!("bpftool failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let shown: Vec<Value> = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    Ok(shown
        .iter()
        .filter(|p| matches!(p["type"].as_str(), Some("tracepoint" | "tracing")))
        .filter_map(|p| {
            Some(Program {
                name: p["name"].as_str()?.to_owned(),
                runs: p["run_cnt"].as_u64().filter(|&n| n > 0)?,
                ns: p["run_time_ns"].as_u64()?,
            })
        })
        .collect())
}

/// Sets `kernel.bpf_stats_enabled`; returns what it was.
fn bpf_stats(on: bool) -> Result<String> {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let was = fs::read_to_string(PATH).with_context(|| format!("reading {PATH}"))?;
    fs::write(PATH, if on { "1" } else { "0" }).with_context(|| format!("writing {PATH}"))?;
    Ok(was.trim().to_owned())
}

/// One more storm per tcpstate run of the benchmark with the kernel's run
/// statistics on: each program's time per run, and the kernel path's time
/// per transition.
fn program_costs(
    tcpstate: &Path,
    workload: &Workload,
    args: &Args,
    out: &Path,
    netns: u64,
    variants: &[Variant],
) -> Result<()> {
    let was = bpf_stats(true)?;
    let tracers = std::iter::once((
        "tcpstate watch --json",
        Tracer::Tcpstate(Bin::Tested, WATCH),
    ))
    .chain(variants.iter().map(|v| (v.name, v.tracer)))
    .filter(|(_, t)| matches!(t, Tracer::Tcpstate(..)));
    let runs: Result<Vec<_>> = tracers
        .map(|(name, tracer)| {
            Ok((
                name,
                traced_storm(tcpstate, workload, args, out, netns, tracer, true)?,
            ))
        })
        .collect();
    // Back to what it was, whatever happened.
    bpf_stats(was == "1")?;
    let runs = runs?;
    let transitions = (args.conns * TRANSITIONS_PER_CONN + workload.listener_transitions()) as f64;
    println!(
        "\nprogram run statistics (kernel.bpf_stats_enabled, one storm each; their own cost \
         included):"
    );
    println!("| run | program | runs | ns per run | ns per transition |");
    println!("|---|---|---|---|---|");
    for (name, t) in &runs {
        for p in &t.programs {
            println!(
                "| {name} | {} | {} | {:.0} | {:.0} |",
                p.name,
                p.runs,
                p.ns as f64 / p.runs as f64,
                p.ns as f64 / transitions
            );
        }
        let total: u64 = t.programs.iter().map(|p| p.ns).sum();
        println!("| {name} | all | | | {:.0} |", total as f64 / transitions);
    }
    Ok(())
}

/// The interleaved runs of `workload` in namespace [`NETNS`], whose inode
/// is `netns`.
fn storms(tcpstate: &Path, workload: &Workload, args: &Args, netns: u64) -> Result<()> {
    let expected = args.conns * TRANSITIONS_PER_CONN + workload.listener_transitions();
    let mut untraced = Vec::new();
    let mut traced = Vec::new();
    let mut variants = Variant::chosen(args);
    let out = std::env::temp_dir().join("tcpstate-bench.jsonl");
    for round in 1..=args.rounds {
        let u = untraced_storm(workload, args)?;
        let t = traced_storm(
            tcpstate,
            workload,
            args,
            &out,
            netns,
            Tracer::Tcpstate(Bin::Tested, WATCH),
            false,
        )?;
        eprintln!(
            "round {round}: untraced {:.0} conn/s ({:.0} us CPU/conn), traced {:.0} conn/s \
             ({:.0} us CPU/conn), transitions {}/{expected} ({} rescued), lost {}, unfinished {}",
            u.rate, u.cpu_us, t.run.rate, t.run.cpu_us, t.seen, t.rescued, t.lost, t.unfinished
        );
        untraced.push(u);
        traced.push(t);
        for v in &mut variants {
            let t = traced_storm(tcpstate, workload, args, &out, netns, v.tracer, false)?;
            eprintln!(
                "round {round}: {}: {:.0} conn/s ({:.0} us CPU/conn), lost {}",
                v.name, t.run.rate, t.run.cpu_us, t.lost
            );
            v.runs.push(t);
        }
    }
    if args.program_stats {
        program_costs(tcpstate, workload, args, &out, netns, &variants)?;
    }
    let _ = fs::remove_file(&out);
    let mu = median(untraced.iter().map(|u| u.rate).collect());
    let cu = median(untraced.iter().map(|u| u.cpu_us).collect());
    let mt = median(traced.iter().map(|t| t.run.rate).collect());
    // Each round's traced run against the untraced run just before it:
    // this VM's throughput drifts within minutes, neighbours drift least.
    let paired = median(
        traced
            .iter()
            .zip(&untraced)
            .map(|(t, u)| t.run.rate / u.rate)
            .collect(),
    );
    println!(
        "\n{}: {} connections x {} rounds",
        workload.name(),
        args.conns,
        args.rounds
    );
    println!(
        "| run | median conn/s | vs untraced | median busy CPU per conn | transitions seen / expected | of which rescued | lost | unfinished |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!("| untraced | {mu:.0} | 100% | {cu:.0} us | - | - | - | - |");
    let row = |name: &str, runs: &[Traced], renders: bool| {
        let m = median(runs.iter().map(|t| t.run.rate).collect());
        let c = median(runs.iter().map(|t| t.run.cpu_us).collect());
        let seen: u64 = runs.iter().map(|t| t.seen).sum();
        let lost: u64 = runs.iter().map(|t| t.lost).sum();
        let unfinished: u64 = runs.iter().map(|t| t.unfinished).sum();
        let rescued: u64 = runs.iter().map(|t| t.rescued).sum();
        let seen = if renders {
            format!("{seen} / {}", expected * runs.len() as u64)
        } else {
            "- (filtered)".to_owned()
        };
        println!(
            "| {name} | {m:.0} | {:.1}% | {c:.0} us (+{:.0}) | {seen} | {rescued} | {lost} | {unfinished} |",
            100.0 * m / mu,
            c - cu,
        );
    };
    row("tcpstate watch --json", &traced, true);
    for v in &variants {
        row(v.name, &v.runs, v.renders);
    }
    let lost: u64 = traced.iter().map(|t| t.lost).sum();
    let silent = traced
        .iter()
        .filter(|t| t.seen + t.lost < expected && t.unfinished == 0)
        .count();
    let ct = median(traced.iter().map(|t| t.run.cpu_us).collect());
    println!(
        "\nratio of medians {:.3}, median of per-round ratios {paired:.3}; \
         rounds with transitions neither seen, counted as lost, nor detected as unfinished: {silent}",
        mt / mu,
    );
    println!(
        "tracing costs {:.1} us of CPU per connection ({:.1} per transition); a workload bound \
         by CPU alone would run at {:.3} of its untraced rate",
        ct - cu,
        (ct - cu) / TRANSITIONS_PER_CONN as f64,
        cu / ct
    );
    println!(
        "bar: >= 0.90 with zero lost events: {}",
        if mt / mu >= 0.90 && paired >= 0.90 && lost == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    for v in variants.iter().filter(|v| v.closes_only()) {
        let ratio = median(v.runs.iter().map(|t| t.run.rate).collect()) / mu;
        let lost: u64 = v.runs.iter().map(|t| t.lost).sum();
        println!(
            "{} bar: >= 0.95 with zero lost events: {} ({ratio:.3}, {lost} lost)",
            v.name,
            if ratio >= 0.95 && lost == 0 {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One storm's figures.
struct Run {
    /// Connections per second.
    rate: f64,
    /// The whole machine's busy CPU time per connection, from the storm's
    /// start to the tracer's exit (or as long after an untraced storm), in
    /// microseconds: throughput on this noisy VM drifts with what the host
    /// grants, the work done per connection much less.
    cpu_us: f64,
}

/// How long the tracer keeps running after its storm, to catch up.
const TAIL: Duration = Duration::from_millis(300);

fn untraced_storm(workload: &Workload, args: &Args) -> Result<Run> {
    let busy = busy_cpu()?;
    let rate = workload.rate(NETNS, args.conns)?;
    thread::sleep(TAIL);
    Ok(Run {
        rate,
        cpu_us: cpu_per_conn(busy, args)?,
    })
}

/// Busy CPU per storm connection since `busy_cpu()` read `since`, in
/// microseconds.
fn cpu_per_conn(since: f64, args: &Args) -> Result<f64> {
    Ok((busy_cpu()? - since) * 1e6 / args.conns as f64)
}

/// Seconds all CPUs have spent busy since boot (user, nice, system, irq,
/// softirq: neither idle, I/O wait nor time the hypervisor took).
fn busy_cpu() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("parsing /proc/stat")?;
    let &[user, nice, system, _idle, _iowait, irq, softirq, ..] = &ticks[..] else {
        bail!("short cpu line in /proc/stat");
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((user + nice + system + irq + softirq) as f64 / hz)
}

fn traced_storm(
    tcpstate: &Path,
    workload: &Workload,
    args: &Args,
    out: &Path,
    netns: u64,
    tracer: Tracer,
    stats: bool,
) -> Result<Traced> {
    let (mut child, stderr) = match tracer {
        Tracer::Tcpstate(bin, command) => start_tracer(binary(tcpstate, args, bin)?, out, command)?,
        Tracer::Peer => start_peer(out)?,
    };
    let busy = busy_cpu()?;
    // A server is scraped as Prometheus would, every second.
    let storming = std::sync::atomic::AtomicBool::new(true);
    let rate = thread::scope(|scope| {
        if matches!(tracer, Tracer::Tcpstate(_, c) if c.first() == Some(&"serve")) {
            scope.spawn(|| {
                while storming.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = scrape();
                    thread::sleep(Duration::from_secs(1));
                }
            });
        }
        let rate = workload.rate(NETNS, args.conns);
        storming.store(false, std::sync::atomic::Ordering::Relaxed);
        rate
    });
    thread::sleep(TAIL);
    // Read while the programs are still loaded.
    let programs = if stats {
        program_stats()
    } else {
        Ok(Vec::new())
    };
    nix_kill(&child)?;
    let status = child.wait()?;
    let programs = programs?;
    if !status.success() {
        bail!("the tracer exited with {status}");
    }
    let run = Run {
        rate: rate?,
        cpu_us: cpu_per_conn(busy, args)?,
    };
    let reported_lost = stderr
        .join()
        .map_err(|_| anyhow::anyhow!("the tracer's stderr reader panicked"))?;
    if let Tracer::Peer = tracer {
        // One line per transition, after a header; the host is otherwise
        // quiet.
        let lines = BufReader::new(File::open(out)?).lines().count() as u64;
        return Ok(Traced {
            run,
            seen: lines.saturating_sub(1),
            lost: reported_lost,
            unfinished: 0,
            rescued: 0,
            programs,
        });
    }
    let mut seen = 0;
    let mut lost = None;
    let mut unfinished = 0;
    let mut rescued = 0;
    for line in BufReader::new(File::open(out)?).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        match v["type"].as_str() {
            Some("transition") if v["netns"] == netns => seen += 1,
            Some("summary") => {
                lost = v["lost"].as_u64();
                unfinished = v["unfinished"].as_u64().unwrap_or(0);
                rescued = v["rescued"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(Traced {
        run,
        seen,
        lost: lost.context("no summary from tcpstate")?,
        unfinished,
        rescued,
        programs,
    })
}

/// The tcpstate binary of `bin`.
fn binary<'a>(tcpstate: &'a Path, args: &'a Args, bin: Bin) -> Result<&'a Path> {
    match bin {
        Bin::Tested => Ok(tcpstate),
        Bin::Against => args.against.as_deref().context("no --against build"),
    }
}

/// One GET of `serve`'s /metrics; how long it took.
fn scrape() -> Result<Duration> {
    let started = std::time::Instant::now();
    let mut response = ureq::get(&format!("http://{SERVE_LISTEN}/metrics"))
        .call()
        .context("scraping tcpstate serve")?;
    response.body_mut().read_to_string()?;
    Ok(started.elapsed())
}

/// Starts `tcpstate COMMAND` writing to `out`, and waits until it traces;
/// with the thread echoing its stderr.
fn start_tracer(
    tcpstate: &Path,
    out: &Path,
    command: &[&str],
) -> Result<(Child, thread::JoinHandle<u64>)> {
    let mut child = Command::new(tcpstate)
        .args(command)
        .stdout(File::create(out)?)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tcpstate")?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    // `serve` says where it listens first.
    while stderr.read_line(&mut line)? > 0 && line.starts_with("tcpstate: serving") {
        line.clear();
    }
    if !line.starts_with("tcpstate: tracing") {
        bail!("tcpstate did not start: {line}");
    }
    Ok((child, echo(stderr, "tcpstate")))
}

/// Starts [`PEER`] writing to `out`, and waits until its program is
/// attached (a BPF link among its descriptors: its header reaches a file
/// only at exit); with the thread reading its stderr, which returns the
/// events it reports lost.
fn start_peer(out: &Path) -> Result<(Child, thread::JoinHandle<u64>)> {
    let mut child = Command::new(PEER)
        .stdout(File::create(out)?)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {PEER}"))?;
    let stderr = echo(
        BufReader::new(child.stderr.take().context("stderr")?),
        "tcpstates",
    );
    for _ in 0..100 {
        if bpf_links(child.id()) > 0 {
            return Ok((child, stderr));
        }
        if let Some(status) = child.try_wait()? {
            bail!("{PEER} exited with {status} before tracing");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    bail!("{PEER} attached no program within 10 s")
}

/// BPF links among the descriptors of process `pid`.
fn bpf_links(pid: u32) -> usize {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| fs::read_to_string(fd.path()).ok())
        .filter(|info| info.contains("link_type:"))
        .count()
}

/// Echoes a tracer's stderr, prefixed; returns the sum of the `lost N
/// events` it reports (libbpf-tools' wording).
fn echo(stderr: impl BufRead + Send + 'static, who: &'static str) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut lost = 0;
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("[{who}] {line}");
            if let Some(n) = line
                .strip_prefix("lost ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                lost += n;
            }
        }
        lost
    })
}

fn nix_kill(child: &Child) -> Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(child.id() as i32, libc::SIGINT) } != 0 {
        bail!("signalling tcpstate: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
