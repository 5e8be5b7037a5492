//! The fuzzing step of `cargo xtask test`: every cargo-fuzz target in
//! `fuzz/` (one per decoder of outside data: ring-buffer records, sock_diag
//! answers, tracefs format files, /proc text, the command line) runs for a
//! bounded time, `TCPSTATE_FUZZ_SECS` seconds each (default 20; 0 skips
//! the step).
//!
//! Each target starts from a scratch copy of its seeds in
//! `fuzz/corpus/<target>/`, so what the fuzzer adds to its corpus is thrown
//! away and the committed seeds stay as they are. A crashing input lands in
//! `fuzz/artifacts/<target>/` (ignored by git), as cargo-fuzz puts it.

use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::toolchain::Env;

/// Pinned: 0.13.2 builds with the stable toolchain here (Rust 1.95) and
/// drives the nightly's libFuzzer build flags.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds each target runs for.
const SECS_VAR: &str = "TCPSTATE_FUZZ_SECS";
const DEFAULT_SECS: u64 = 20;

/// libFuzzer's limits besides the run time: memory, and time per input (a
/// decoder that hangs on one input is a finding too).
const LIBFUZZER_LIMITS: [&str; 2] = ["-rss_limit_mb=2048", "-timeout=10"];

/// Runs every target. A target that crashes does not stop the others: the
/// step fails at the end, naming each one and its input. One that does not
/// build stops the step at once.
pub fn run(env: &Env) -> Result<()> {
    let secs = secs()?;
    if secs == 0 {
        eprintln!("xtask: {SECS_VAR}=0: fuzzing skipped");
        return Ok(());
    }
    ensure_cargo_fuzz(env)?;
    let targets = targets(env)?;
    build(env, &targets)?;
    let scratch = env::temp_dir().join(format!("tcpstate-fuzz-{}", std::process::id()));
    let mut failed = Vec::new();
    let result = targets.iter().try_for_each(|target| -> Result<()> {
        if let Some(failure) = run_target(env, target, secs, &scratch)? {
            failed.push(failure);
        }
        Ok(())
    });
    let _ = fs::remove_dir_all(&scratch);
    result?;
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

fn secs() -> Result<u64> {
    match env::var(SECS_VAR) {
        Err(env::VarError::NotPresent) => Ok(DEFAULT_SECS),
        Ok(v) => v.trim().parse().with_context(|| {
            format!("{SECS_VAR}={v:?} is not a number of seconds (0 skips fuzzing)")
        }),
        Err(e) => bail!("{SECS_VAR}: {e}"),
    }
}

/// `cargo fuzz`, nightly, from the repository root.
fn cargo_fuzz(env: &Env, args: &[&str]) -> Command {
    let mut cmd = env.nightly_cargo();
    cmd.arg("fuzz").args(args);
    cmd
}

fn ensure_cargo_fuzz(env: &Env) -> Result<()> {
    let installed = cargo_fuzz(env, &["--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        env.cargo(&[
            "install",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
            "--locked",
        ])
        .context("installing cargo-fuzz")?;
    }
    Ok(())
}

/// The targets `fuzz/Cargo.toml` declares, by name.
fn targets(env: &Env) -> Result<Vec<String>> {
    let out = cargo_fuzz(env, &["list", "--fuzz-dir", "fuzz"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list failed ({}): see above", out.status);
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("fuzz/Cargo.toml declares no fuzz targets");
    }
    Ok(targets)
}

/// Builds every target at once, with cargo's output as is. When that fails,
/// builds each on its own, quietly, to name the ones that do not build.
fn build(env: &Env, targets: &[String]) -> Result<()> {
    let status = cargo_fuzz(env, &["build", "--fuzz-dir", "fuzz"])
        .status()
        .context("running cargo fuzz build")?;
    if status.success() {
        return Ok(());
    }
    let broken: Vec<&str> = targets
        .iter()
        .filter(|target| {
            !cargo_fuzz(env, &["build", "--fuzz-dir", "fuzz", target])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(String::as_str)
        .collect();
    match broken.as_slice() {
        [] => bail!("cargo fuzz build failed ({status}): see cargo's errors above"),
        [target] => bail!("fuzz target {target} does not build: see cargo's errors above"),
        _ => bail!(
            "fuzz targets {} do not build: see cargo's errors above",
            broken.join(", ")
        ),
    }
}

/// Runs one target, built already; `Some(line)` says how it failed.
fn run_target(env: &Env, target: &str, secs: u64, scratch: &Path) -> Result<Option<String>> {
    let root = crate::root();
    let corpus = scratch.join(target);
    copy_dir(&root.join("fuzz/corpus").join(target), &corpus)?;
    let seeds = count_files(&corpus);
    let artifacts = root.join("fuzz/artifacts").join(target);
    let before = files(&artifacts);
    let log_path = scratch.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;

    let max_time = format!("-max_total_time={secs}");
    let corpus_arg = corpus
        .to_str()
        .context("the temporary directory is not UTF-8")?;
    let mut args = vec!["run", "--fuzz-dir", "fuzz", target, corpus_arg, "--"];
    args.push(&max_time);
    args.extend(LIBFUZZER_LIMITS);
    let started = Instant::now();
    let status = cargo_fuzz(env, &args)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let elapsed = started.elapsed();
    let output = fs::read_to_string(&log_path).unwrap_or_default();

    if status.success() {
        let runs = output
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("Done ")?.split(' ').next())
            .unwrap_or("?");
        eprintln!(
            "xtask: fuzz {target}: {runs} inputs in {elapsed:.0?}, corpus {seeds} -> {} files, \
             no crash",
            count_files(&corpus)
        );
        return Ok(None);
    }
    // What libFuzzer and cargo-fuzz said, without the progress lines: the
    // panic, the stack, how to reproduce.
    for line in output.lines().filter(|l| !is_progress(l)) {
        eprintln!("{line}");
    }
    // Where libFuzzer says it wrote the input (relative to the repository
    // root, where it runs), else whatever is new in the artifacts.
    let written = output.lines().find_map(|l| {
        Some(PathBuf::from(
            l.split_once("Test unit written to ")?.1.trim(),
        ))
    });
    let input = written.or_else(|| files(&artifacts).difference(&before).next().cloned());
    let failure = match input {
        Some(input) => {
            let input = input.strip_prefix(&root).unwrap_or(&input);
            // crash-, timeout-, oom-, leak-<sha1>.
            let name = input.file_name().unwrap_or_default().to_string_lossy();
            let what = name.split_once('-').map_or("crash", |(kind, _)| kind);
            let input = input.display();
            format!(
                "fuzz target {target} found a {what}: the input is saved in {input} (reproduce \
                 with `cargo +nightly fuzz run {target} {input}`)"
            )
        }
        None => format!(
            "fuzz target {target} failed ({status}) without saving an input: see its output above"
        ),
    };
    eprintln!("xtask: fuzz {target}: FAILED after {elapsed:.0?}: {failure}");
    Ok(Some(failure))
}

/// libFuzzer's progress lines: `#1234 NEW cov: ...`, and the functions
/// each new input reached.
fn is_progress(line: &str) -> bool {
    line.strip_prefix('#')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        || line.trim_start().starts_with("NEW_FUNC[")
}

/// Copies the files of `from` (none when it does not exist: a target
/// without seeds starts from nothing) into `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    if !from.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The files in `dir` (none when it does not exist).
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn count_files(dir: &Path) -> usize {
    files(dir).len()
}
