//! `cargo xtask`: everything a fresh machine needs, in one place.
//!
//! - `bootstrap`: installs the eBPF toolchain pieces that are missing
//!   (nightly's `rust-src`, `bpf-linker` built on the nightly's own LLVM).
//! - `build`, `run -- ARGS`: build the tool (programs included) and run it.
//! - `test`: formatting, lints, unit tests, the fuzz targets for a bounded
//!   time (see `fuzz.rs`), and the integration tests that load the real
//!   programs into the real kernel.
//! - `bench`: the tracker's criterion benchmark and the end-to-end
//!   connection-storm benchmark (see `bench.rs`).
//!
//! Every command bootstraps first; bootstrapping is idempotent and takes
//! well under a second when everything is in place.

mod bench;
mod fuzz;
mod toolchain;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain pieces that are missing.
    Bootstrap,
    /// Build tcpstate (release).
    Build,
    /// Build and run tcpstate with the given arguments, e.g. `-- watch`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run every check and test: fmt, clippy, unit tests, fuzzing, kernel
    /// integration tests.
    Test,
    /// Run the benchmarks: tracker throughput and the connection storm.
    Bench(bench::Args),
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let env = toolchain::bootstrap()?;
    if started.elapsed().as_secs() >= 1 {
        eprintln!("xtask: toolchain installed in {:.1?}", started.elapsed());
    }
    match cli.command {
        Cmd::Bootstrap => Ok(()),
        Cmd::Build => build(&env).map(drop),
        Cmd::Run { args } => {
            let bin = build(&env)?;
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test => test(&env),
        Cmd::Bench(args) => {
            let bin = build(&env)?;
            bench::run(&env, &bin, &args)
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Builds the release binary; returns its path.
fn build(env: &toolchain::Env) -> Result<PathBuf> {
    env.cargo(&["build", "--release", "--package", "tcpstate", "--bins"])?;
    env.cargo(&[
        "build",
        "--release",
        "--package",
        "tcpstate-tests",
        "--bins",
    ])?;
    Ok(root().join("target/release/tcpstate"))
}

fn test(env: &toolchain::Env) -> Result<()> {
    let started = Instant::now();
    timed("formatting", || {
        env.cargo(&["fmt", "--all", "--", "--check"])
            .context("formatting: run `cargo fmt --all`")
    })?;
    timed("lints", || {
        env.cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
        env.clippy_ebpf()
    })?;
    timed("unit tests", || {
        env.cargo(&[
            "test",
            "--workspace",
            "--exclude",
            "tcpstate-tests",
            "--lib",
            "--bins",
            "--tests",
        ])
    })?;
    timed("fuzzing", || fuzz::run(env))?;
    let bin = timed("release build", || build(env))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the integration tests load eBPF programs: run `cargo xtask test` as root");
    }
    timed("kernel integration tests", || {
        env.cargo_with(
            &[
                "test",
                "--release",
                "--package",
                "tcpstate-tests",
                "--tests",
                "--",
                "--test-threads=1",
            ],
            &[("TCPSTATE_BIN", bin.as_os_str())],
        )
    })?;
    eprintln!("xtask: all checks passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Runs one step of a command and says how long it took.
fn timed<T>(step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let result = f();
    eprintln!(
        "xtask: {step}: {} in {:.1?}",
        if result.is_ok() { "done" } else { "FAILED" },
        started.elapsed()
    );
    result
}
