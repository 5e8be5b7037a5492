//! Debian packages the host's tests and the benchmark use, installed with
//! the system's apt when missing. The tests': Chromium, the real browser
//! the HTML report is opened in; Prometheus and promtool, which scrape and lint `tcpstate serve`;
//! systemd's `systemd-analyze`, which checks the shipped unit; and tmux,
//! the terminal the full-screen view is tested in. The benchmark's: nginx
//! and ApacheBench, its second workload, libbpf-tools, its peer, and
//! bpftool, which reads the programs' run statistics.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// A Debian package, the program of it that is run, and what for.
pub type Package = (&'static str, &'static str, &'static str);

/// What the host's tests run.
pub const TESTS: [Package; 4] = [
    ("chromium", "/usr/bin/chromium", "the HTML report test"),
    ("prometheus", "/usr/bin/promtool", "the exporter tests"),
    (
        "systemd",
        "/usr/bin/systemd-analyze",
        "the systemd unit test",
    ),
    ("tmux", "/usr/bin/tmux", "the full-screen view test"),
];

/// What the benchmark's second workload and its peer run.
pub const BENCH: [Package; 3] = [
    ("nginx", "/usr/sbin/nginx", "the nginx benchmark"),
    ("apache2-utils", "/usr/bin/ab", "the nginx benchmark's load"),
    ("libbpf-tools", "/usr/sbin/tcpstates", "the peer benchmark"),
];

/// What reads the programs' run statistics for the benchmark.
pub const PROGRAM_STATS: [Package; 1] = [(
    "bpftool",
    "/usr/sbin/bpftool",
    "the benchmark's program statistics",
)];

/// Installs those of `packages` that are missing.
pub fn install(packages: &[Package]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, program, _)| {
            let there = Path::new(program).exists();
            if there {
                eprintln!("xtask: {program} is installed");
            }
            !there
        })
        .map(|(package, _, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(", "));
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    // With the package lists as they are, then refreshed (a fresh machine
    // may have none).
    if !apt_get(&args)? {
        apt_get(&["update", "-q"])?;
        apt_get(&args)?;
    }
    for (package, program, why) in packages {
        if !Path::new(program).exists() {
            bail!("apt-get install {package} failed: {why} needs {program}");
        }
    }
    Ok(())
}

/// Runs `apt-get ARGS`; whether it succeeded.
fn apt_get(args: &[&str]) -> Result<bool> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get: install apt")?;
    Ok(status.success())
}
