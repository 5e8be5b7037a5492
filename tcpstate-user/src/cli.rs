//! The command line: subcommands, options, and their validation into the
//! settings the rest of the program uses.

use std::{ops::RangeInclusive, time::Duration};

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use tcpstate_ebpf::{FAMILY_V4, FAMILY_V6};

use crate::{
    export::tally::CloseLabels,
    host::{netns, snapshot::Scope},
    kernel::loader,
    track::filter::Filter,
};

/// Every TCP state transition, every TIME_WAIT socket, and who closed each
/// connection, live from the kernel.
#[derive(Debug, Parser)]
#[command(
    name = "tcpstate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TCPSTATE_REVISION"), ")"),
    about,
    propagate_version = true,
    subcommand_required = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream every TCP state transition, one line each, with the owner
    /// process and a close annotation.
    Watch(WatchArgs),
    /// Live table of TIME_WAIT sockets: who closed, which process, time
    /// left; totals and ephemeral-port pressure.
    Timewait(TimewaitArgs),
    /// What is wrong with TIME_WAIT and local ports here, where, and what to
    /// change: traces for --duration (default 10 s), or reads a recording
    /// (--input). Exit status: 0 healthy, 3 a warning, 4 critical.
    Diagnose(DiagnoseArgs),
    /// Run always-on as a Prometheus exporter: tracks as timewait does and
    /// serves /metrics, /findings (the live diagnosis, JSON) and /healthz.
    Serve(ServeArgs),
    /// Write the man page or a shell completion script to stdout, from
    /// these definitions (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

impl Command {
    /// The options every tracing command shares; none for `generate`.
    pub fn common(&self) -> Option<&Common> {
        match self {
            Command::Watch(w) => Some(&w.common),
            Command::Timewait(t) => Some(&t.common),
            Command::Diagnose(d) => Some(&d.common),
            Command::Serve(s) => Some(&s.common),
            Command::Generate { .. } => None,
        }
    }
}

/// What `tcpstate generate` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    /// The man page, tcpstate(1), in roff.
    Man,
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct TimewaitArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print the kernel's current TIME_WAIT sockets once and exit (no
    /// tracing: the live view's options do not apply).
    #[arg(long, conflicts_with_all = ["interval", "count", "duration", "reconcile", "ring_mib", "wakeup_bytes", "reorder_window", "no_tui"])]
    pub once: bool,
    /// Refresh the live view every SECS (0.05 to 3600).
    #[arg(long, value_name = "SECS", default_value = "1", allow_negative_numbers = true, value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this many refreshes.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// How to group the entries in the live view.
    #[arg(long, value_enum, default_value_t = GroupBy::Peer)]
    pub group_by: GroupBy,
    /// On a terminal, print the live view as lines (as when standard
    /// output is not a terminal) instead of the full-screen view.
    #[arg(long)]
    pub no_tui: bool,
    #[command(flatten)]
    pub pressure: Pressure,
}

/// When a pool of local ports counts as pressed.
#[derive(Clone, Copy, Debug, Args)]
pub struct Pressure {
    /// Flag an ephemeral-port pool once TIME_WAIT + established use, or the
    /// steady-state projection, exceed this fraction of the port range.
    #[arg(long = "pressure-threshold", value_name = "FRACTION", default_value_t = 0.5, allow_negative_numbers = true, value_parser = parse_fraction)]
    pub threshold: f64,
}

/// How long `diagnose` traces without `--duration`.
pub const DIAGNOSE_DURATION: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub common: Common,
    /// Analyse a recording instead of tracing: the JSON Lines that
    /// `tcpstate watch --json` writes (`-`: standard input).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["duration", "reconcile", "ring_mib", "wakeup_bytes", "reorder_window", "lport", "rport", "port", "laddr", "raddr", "pid", "comm", "netns", "ipv4", "ipv6"])]
    pub input: Option<std::path::PathBuf>,
    /// Also write the report as one self-contained HTML page, with charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub pressure: Pressure,
}

/// Where `serve` listens unless told: loopback only, so that exposing the
/// metrics further is a decision.
pub const SERVE_LISTEN: &str = "127.0.0.1:9977";

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Serve HTTP on ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT", default_value = SERVE_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Take a new snapshot of the metrics every SECS (0.05 to 3600): a
    /// scrape sees figures at most this old.
    #[arg(long, value_name = "SECS", default_value = "1", allow_negative_numbers = true, value_parser = parse_interval)]
    pub interval: Duration,
    /// The live diagnosis looks at the last SECS of closes and failures
    /// (10 to 3600).
    #[arg(long, value_name = "SECS", default_value = "60", allow_negative_numbers = true, value_parser = parse_window)]
    pub window: Duration,
    /// Pools of local ports exported one by one, the worst first; the
    /// others are counted together.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top_pools: usize,
    /// Process names with series of their own in tcpstate_closes_total, the
    /// most active first; the others count as `other`.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top_processes: usize,
    /// The labels of tcpstate_closes_total (of netns, role, closer, kind,
    /// comm); those left out are summed over.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "netns,role,closer,kind,comm"
    )]
    pub close_labels: Vec<String>,
    /// Drop the series of a namespace gone, and of a process name idle,
    /// for SECS (10 to 86400).
    #[arg(long, value_name = "SECS", default_value = "300", allow_negative_numbers = true, value_parser = parse_forget)]
    pub forget_after: Duration,
    #[command(flatten)]
    pub pressure: Pressure,
}

/// Grouping of the live TIME_WAIT view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// Remote endpoint; for server-role entries, the client address and
    /// the local port (client ports are ephemeral).
    Peer,
    /// Local port.
    Lport,
    /// Owner process.
    Process,
    /// One row per entry.
    None,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Stop after this many transitions.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// Options shared by every tracing command.
#[derive(Clone, Debug, Args)]
pub struct Common {
    /// JSON Lines output (schema: docs/schema.md).
    #[arg(long)]
    pub json: bool,
    /// IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Local ports to report (filtered in the kernel), e.g. 80,443 or
    /// 8000-8100.
    #[arg(long, value_name = "PORT[,PORT..]", value_delimiter = ',', allow_negative_numbers = true, value_parser = parse_ports)]
    pub lport: Vec<RangeInclusive<u16>>,
    /// Remote ports to report (filtered in the kernel; with --lport, both
    /// must match).
    #[arg(long, value_name = "PORT[,PORT..]", value_delimiter = ',', allow_negative_numbers = true, value_parser = parse_ports)]
    pub rport: Vec<RangeInclusive<u16>>,
    /// Ports to report at either end (filtered in the kernel): a service's
    /// connections from both sides.
    #[arg(long, value_name = "PORT[,PORT..]", value_delimiter = ',', allow_negative_numbers = true, value_parser = parse_ports)]
    pub port: Vec<RangeInclusive<u16>>,
    /// Local address or CIDR block, e.g. 10.0.0.0/8 or ::1.
    #[arg(long, value_name = "CIDR[,CIDR..]", value_delimiter = ',', value_parser = parse_cidr)]
    pub laddr: Vec<IpNet>,
    /// Remote address or CIDR block.
    #[arg(long, value_name = "CIDR[,CIDR..]", value_delimiter = ',', value_parser = parse_cidr)]
    pub raddr: Vec<IpNet>,
    /// Owner process id(s).
    #[arg(long, value_name = "PID[,PID..]", value_delimiter = ',', allow_negative_numbers = true, value_parser = parse_pid)]
    pub pid: Vec<u32>,
    /// Owner command name(s), as in /proc/PID/comm.
    #[arg(long, value_name = "COMM[,COMM..]", value_delimiter = ',')]
    pub comm: Vec<String>,
    /// Network namespace(s): an inode as `readlink /proc/PID/ns/net` gives
    /// it (4026531840 or net:[4026531840]), an `ip netns` name, the name
    /// tcpstate shows for it (pod:NAME, docker:NAME, a unit), or a path
    /// such as /proc/PID/ns/net.
    #[arg(long, value_name = "NETNS[,NETNS..]", value_delimiter = ',', allow_negative_numbers = true, value_parser = parse_netns)]
    pub netns: Vec<u32>,
    /// Stop after this many seconds (0.001 to one year).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// TIME_WAIT length model, in seconds, 1 to 3600 (Linux: 60, fixed in
    /// the kernel).
    #[arg(long, value_name = "SECS", default_value = "60", allow_negative_numbers = true, value_parser = parse_tw_len)]
    pub tw_len: Duration,
    /// Reconcile the TIME_WAIT table with the kernel's socket table every
    /// SECS, 0.1 to 3600 (0: never; entries then expire at their predicted
    /// time).
    #[arg(long, value_name = "SECS", default_value = "5", allow_negative_numbers = true, value_parser = parse_reconcile)]
    pub reconcile: Duration,
    /// Hold records this long, 0 to 1, for older ones from other CPUs, so
    /// that output is in time order; raise it on VMs whose CPUs stall
    /// (steal time).
    #[arg(long, value_name = "SECS", default_value = "0.002", allow_negative_numbers = true, value_parser = parse_reorder)]
    pub reorder_window: Duration,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = loader::DEFAULT_RING_BYTES >> 20, allow_negative_numbers = true, value_parser = parse_ring_mib)]
    pub ring_mib: u32,
    /// Wake the reader once this many bytes wait in the ring buffer (default:
    /// 1/16 of it; a 50 ms timer drains the rest; at most the ring's size).
    /// 0 wakes it on every event: lowest latency, much higher cost to the
    /// traced workload.
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_bytes)]
    pub wakeup_bytes: Option<u32>,
}

impl Cli {
    /// Checks what no single option's parser can: the options together.
    pub fn validate(&self) -> Result<(), String> {
        let Some(common) = self.command.common() else {
            return Ok(());
        };
        if let Command::Diagnose(d) = &self.command
            && d.input.is_none()
            && common.reconcile.is_zero()
        {
            return Err(
                "diagnose reads each namespace's settings and sockets from the kernel's tables: \
                 --reconcile 0 would leave it without them (give SECS, or leave it out)"
                    .into(),
            );
        }
        if let Command::Serve(s) = &self.command {
            CloseLabels::of(&s.close_labels)?;
            if common.reconcile.is_zero() {
                return Err(
                    "serve reads each namespace's settings from the kernel's tables: \
                     --reconcile 0 would leave its figures without them (give SECS, or leave \
                     it out)"
                        .into(),
                );
            }
        }
        let ring = common.ring_mib << 20;
        match common.wakeup_bytes {
            Some(b) if b > ring => Err(format!(
                "--wakeup-bytes {b} is larger than the ring buffer ({ring} bytes, --ring-mib {}): \
                 use at most {ring}",
                common.ring_mib
            )),
            _ => Ok(()),
        }
    }
}

impl Common {
    /// What the kernel side filters.
    pub fn settings(&self) -> loader::Settings {
        let families = match (self.ipv4, self.ipv6) {
            (true, false) => FAMILY_V4,
            (false, true) => FAMILY_V6,
            _ => FAMILY_V4 | FAMILY_V6,
        };
        loader::Settings {
            families,
            lports: expand(&self.lport),
            rports: expand(&self.rport),
            ports: expand(&self.port),
            ring_bytes: self.ring_mib << 20,
            wakeup_bytes: self.wakeup_bytes.unwrap_or((self.ring_mib << 20) / 16),
            syscalls: false,
            closes_only: false,
        }
    }

    /// Which sockets the run covers, in the kernel's tables too.
    pub fn scope(&self) -> Scope {
        Scope {
            settings: self.settings(),
            netns: self.netns.clone(),
        }
    }

    /// What userspace filters.
    pub fn filter(&self) -> Filter {
        Filter {
            laddr: self.laddr.clone(),
            raddr: self.raddr.clone(),
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            netns: self.netns.clone(),
        }
    }
}

/// A port or an inclusive range of them (`8000-8100`).
fn parse_ports(s: &str) -> Result<RangeInclusive<u16>, String> {
    let port = |p: &str| match p.trim().parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(p) => Some(p),
    };
    let range = match s.split_once('-') {
        Some((low, high)) => port(low).zip(port(high)).map(|(l, h)| l..=h),
        None => port(s).map(|p| p..=p),
    };
    match range {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(format!(
            "{} is not a port or port range: use numbers from 1 to 65535, e.g. 443 or 8000-8100",
            quoted(s)
        )),
    }
}

/// Every port of `ranges`, sorted, once each.
fn expand(ranges: &[RangeInclusive<u16>]) -> Vec<u16> {
    let mut ports: Vec<u16> = ranges.iter().cloned().flatten().collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "{} is not an address or CIDR block: use e.g. 10.0.0.0/8 or ::1",
                quoted(s)
            )
        })
}

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if p > 0 && p <= 4_194_304 => Ok(p),
        _ => Err(format!(
            "{} is not a process id: use a number from 1 to 4194304",
            quoted(s)
        )),
    }
}

fn parse_netns(s: &str) -> Result<u32, String> {
    let s = s.trim();
    // Accept `readlink` output as is: net:[4026531840].
    let digits = s
        .strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(n) = digits.parse::<u32>()
        && n > 0
    {
        return Ok(n);
    }
    let path = if s.contains('/') {
        std::path::PathBuf::from(s)
    } else {
        std::path::Path::new(netns::NAMED).join(s)
    };
    netns::ns_inode(&path)
        .or_else(|e| {
            // A name tcpstate gives it: `pod:web-5c9f7d`, `docker:web`.
            let named = (!s.contains('/')).then(|| netns::named(s)).flatten();
            named.ok_or(e)
        })
        .map_err(|e| {
            format!(
                "{} is no network namespace ({e:#}): use an inode as `readlink \
                 /proc/PID/ns/net` gives it, an `ip netns` name, the name tcpstate shows for it \
                 (`pod:NAME`, `docker:NAME`, a unit) or a namespace path",
                quoted(s)
            )
        })
}

/// A value as an error message quotes it: long ones cut (a 120 KB value
/// echoed back helps nobody).
fn quoted(s: &str) -> String {
    const MAX: usize = 32;
    if s.chars().count() <= MAX {
        return format!("'{s}'");
    }
    format!(
        "'{}…' ({} bytes)",
        s.chars().take(MAX).collect::<String>(),
        s.len()
    )
}

/// Seconds within `[min, max]`, checked after conversion (a value that
/// rounds to zero nanoseconds is not accepted as positive).
fn secs_in(s: &str, min: f64, max: f64, what: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{} is not {what}: use a number of seconds from {min} to {max}",
            quoted(s)
        )),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    secs_in(s, 0.001, 31_536_000.0, "a run's length")
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    secs_in(s, 0.05, 3600.0, "a refresh interval")
}

fn parse_window(s: &str) -> Result<Duration, String> {
    secs_in(s, 10.0, 3600.0, "a diagnosis window")
}

fn parse_forget(s: &str) -> Result<Duration, String> {
    secs_in(s, 10.0, 86_400.0, "a time to forget after")
}

fn parse_tw_len(s: &str) -> Result<Duration, String> {
    secs_in(s, 1.0, 3600.0, "a TIME_WAIT length")
}

fn parse_reconcile(s: &str) -> Result<Duration, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    secs_in(s, 0.1, 3600.0, "a reconciliation interval (or 0 for none)")
}

fn parse_reorder(s: &str) -> Result<Duration, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    secs_in(s, 0.000_001, 1.0, "a reorder window")
}

fn parse_bytes(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| format!("{} is not a number of bytes", quoted(s)))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "{} is not a fraction: use a number in (0, 1], e.g. 0.5",
            quoted(s)
        )),
    }
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(v) if v.is_power_of_two() && v <= 1024 => Ok(v),
        _ => Err(format!(
            "{} is not a ring size: use a power of two from 1 to 1024 (MiB)",
            quoted(s)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tcpstate").chain(args.iter().copied()))
    }

    fn common(args: &[&str]) -> Common {
        let cli = parse(args).unwrap();
        cli.command.common().expect("a tracing command").clone()
    }

    #[test]
    fn durations_are_bounded_after_conversion() {
        for (args, needle) in [
            (&["timewait", "--interval", "1e-10"][..], "0.05 to 3600"),
            (&["timewait", "--interval", "-1"], "0.05 to 3600"),
            (&["watch", "--reconcile", "1e-10"], "0.1 to 3600"),
            (&["watch", "--tw-len", "1e-10"], "1 to 3600"),
            (&["watch", "--tw-len", "inf"], "1 to 3600"),
            (&["watch", "--duration", "NaN"], "0.001 to"),
            (&["watch", "--duration", "1e-10"], "0.001 to"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        assert_eq!(
            common(&["watch", "--duration", "0.001"]).duration,
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn long_values_are_not_echoed_whole() {
        let long = "1".repeat(120_000);
        // clap quotes the value in front of ours (main cuts that one).
        let ours = parse_duration(&long).unwrap_err();
        assert!(ours.len() < 200, "{} bytes: {}", ours.len(), &ours[..200]);
        assert!(ours.contains("(120000 bytes)"), "{ours}");
    }

    #[test]
    fn once_rejects_the_live_views_options() {
        for opt in [
            &["--interval", "2"][..],
            &["--count", "3"],
            &["--duration", "1"],
            &["--reconcile", "1"],
            &["--ring-mib", "4"],
            &["--wakeup-bytes", "1"],
        ] {
            let args: Vec<&str> = ["timewait", "--once"].iter().chain(opt).copied().collect();
            let err = parse(&args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{opt:?}"
            );
        }
        assert!(parse(&["timewait", "--once", "--tw-len", "30"]).is_ok());
    }

    #[test]
    fn wakeup_bytes_fit_in_the_ring() {
        let cli = parse(&["watch", "--ring-mib", "1", "--wakeup-bytes", "2000000"]).unwrap();
        assert!(cli.validate().unwrap_err().contains("at most 1048576"));
        let cli = parse(&["watch", "--ring-mib", "1", "--wakeup-bytes", "1048576"]).unwrap();
        assert!(cli.validate().is_ok());
    }

    #[test]
    fn diagnose_needs_the_kernels_tables_and_input_excludes_tracing_options() {
        let cli = parse(&["diagnose", "--reconcile", "0"]).unwrap();
        assert!(cli.validate().unwrap_err().contains("--reconcile 0"));
        assert!(
            parse(&["diagnose", "--reconcile", "2"])
                .unwrap()
                .validate()
                .is_ok()
        );
        assert!(
            parse(&["diagnose", "--input", "-"])
                .unwrap()
                .validate()
                .is_ok()
        );
        for opt in [
            &["--duration", "3"][..],
            &["--netns", "1"],
            &["--lport", "80"],
        ] {
            let args = [&["diagnose", "--input", "f"][..], opt].concat();
            assert!(parse(&args).is_err(), "{opt:?}");
        }
    }

    #[test]
    fn count_means_transitions_for_watch_and_refreshes_for_timewait() {
        let Command::Watch(w) = parse(&["watch", "--count", "5"]).unwrap().command else {
            panic!("not watch")
        };
        assert_eq!(w.count, Some(5));
        let Command::Timewait(t) = parse(&["timewait", "--count", "2"]).unwrap().command else {
            panic!("not timewait")
        };
        assert_eq!(t.count, Some(2));
        assert!(parse(&["timewait", "--count", "-1"]).is_err());
    }

    #[test]
    fn ports_and_families_go_to_the_kernel() {
        let c = common(&["watch", "-4", "--lport", "80,443", "--rport", "5432"]);
        let s = c.settings();
        assert_eq!(s.families, FAMILY_V4);
        assert_eq!(s.lports, [80, 443]);
        assert_eq!(s.rports, [5432]);
        assert!(s.ports.is_empty());
        let s = common(&["watch", "--port", "8002-8004,443,8003", "--lport", "7-7"]).settings();
        assert_eq!(s.ports, [443, 8002, 8003, 8004]);
        assert_eq!(s.lports, [7]);
        for bad in ["8100-8000", "0-5", "1-", "-", "80-90-100", "1-65536"] {
            assert!(parse(&["watch", "--port", bad]).is_err(), "{bad}");
        }
        assert_eq!(
            common(&["watch"]).settings().families,
            FAMILY_V4 | FAMILY_V6
        );
        assert_eq!(common(&["watch", "-6"]).settings().families, FAMILY_V6);
    }

    #[test]
    fn addresses_accept_cidr_and_plain_ips() {
        let c = common(&["watch", "--laddr", "10.0.0.0/8,::1", "--raddr", "127.0.0.1"]);
        assert_eq!(c.laddr[0].to_string(), "10.0.0.0/8");
        assert_eq!(c.laddr[1].to_string(), "::1/128");
        assert_eq!(c.raddr[0].to_string(), "127.0.0.1/32");
    }

    #[test]
    fn invalid_values_are_rejected_with_the_fix() {
        for (args, needle) in [
            (&["watch", "--lport", "0"][..], "1 to 65535"),
            (&["watch", "--lport", "70000"], "1 to 65535"),
            (&["watch", "--rport", "http"], "1 to 65535"),
            (&["watch", "--laddr", "10.0.0.0/33"], "CIDR"),
            (&["watch", "--pid", "-3"], "process id"),
            (&["watch", "--pid", "abc"], "process id"),
            (&["watch", "--netns", "x"], "readlink"),
            (&["watch", "--duration", "-1"], "seconds"),
            (&["watch", "--ring-mib", "3"], "power of two"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn conflicting_flags_are_rejected() {
        let err = parse(&["watch", "-4", "-6"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["watch", "--count", "0"]).is_err());
    }

    #[test]
    fn timewait_options() {
        let Command::Timewait(t) = parse(&[
            "timewait",
            "--once",
            "--group-by",
            "lport",
            "--tw-len",
            "30",
        ])
        .unwrap()
        .command
        else {
            panic!("not timewait")
        };
        assert!(t.once);
        assert_eq!(t.group_by, GroupBy::Lport);
        assert_eq!(t.common.tw_len, Duration::from_secs(30));
        assert_eq!(t.common.reconcile, Duration::from_secs(5));
        assert_eq!(
            common(&["watch", "--reconcile", "0"]).reconcile,
            Duration::ZERO
        );
        for bad in [
            &["timewait", "--interval", "0"][..],
            &["timewait", "--pressure-threshold", "2"],
            &["timewait", "--group-by", "x"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn netns_accepts_inodes_names_and_paths() {
        assert_eq!(
            common(&["watch", "--netns", "net:[4026531840]"]).netns,
            [4026531840]
        );
        let own = netns::current_netns().unwrap();
        assert_eq!(
            common(&["watch", "--netns", "/proc/self/ns/net"]).netns,
            [own]
        );
        let err = parse(&["watch", "--netns", "no-such-netns-name"]).unwrap_err();
        assert!(
            err.to_string().contains("/run/netns/no-such-netns-name"),
            "{err}"
        );
    }
}
