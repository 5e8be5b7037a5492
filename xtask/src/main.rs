//! `cargo xtask`: everything a fresh machine needs, in one place.
//!
//! - `bootstrap`: installs the eBPF toolchain pieces that are missing
//!   (nightly's `rust-src`, `bpf-linker` built on the nightly's own LLVM).
//! - `build`, `run -- ARGS`: build the tool (programs included) and run it.
//! - `test`: formatting, lints, unit tests, the fuzz targets for a bounded
//!   time (see `fuzz.rs`), the shipped binary (`dist`), and the
//!   integration tests that load the real programs into the real kernel:
//!   this machine's, then each kernel of the matrix (`test-kernels`).
//! - `dist`: the static binary, tarball and `.deb` that ship (see
//!   `dist.rs`).
//! - `bench`: the tracker's criterion benchmark and the end-to-end
//!   connection-storm benchmark (see `bench.rs`).
//! - `test-kernels`: the kernel integration tests in QEMU guests booted on
//!   several Debian kernels (see `kernels/`).
//!
//! Every command bootstraps first; bootstrapping is idempotent and takes
//! well under a second when everything is in place.

mod artifacts;
mod bench;
mod dist;
mod fuzz;
mod kernels;
mod packages;
mod toolchain;
mod workload;

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
    /// Build what ships: the static binary, a tarball with the man page
    /// and completions, a .deb (in target/dist).
    Dist,
    /// Run the benchmarks: tracker throughput and the connection storm.
    Bench(bench::Args),
    /// Run the kernel integration tests with the shipped binary in QEMU
    /// guests on several Debian kernels (`TCPSTATE_KERNELS=5.10,6.1`
    /// selects series).
    TestKernels,
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
        Cmd::Build => artifacts::tcpstate(&env).map(drop),
        Cmd::Run { args } => {
            let bin = artifacts::tcpstate(&env)?;
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test => test(&env),
        Cmd::Dist => dist::build(&env).map(drop),
        Cmd::Bench(args) => {
            let bin = artifacts::tcpstate(&env)?;
            bench::run(&env, &bin, &args)
        }
        Cmd::TestKernels => {
            let bin = dist::build(&env)?;
            kernels::run(
                &bin,
                &artifacts::guest_tests(&artifacts::kernel_tests(&env)?),
            )
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
    let bin = timed("release build and dist", || dist::build(env))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the integration tests load eBPF programs: run `cargo xtask test` as root");
    }
    let tests = timed("kernel test build", || artifacts::kernel_tests(env))?;
    timed("test packages", || packages::install(&packages::TESTS))?;
    timed("kernel integration tests", || {
        artifacts::run_kernel_tests(&tests, &bin)
    })?;
    timed("kernel matrix", || {
        kernels::run(&bin, &artifacts::guest_tests(&tests))
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
