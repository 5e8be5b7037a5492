//! Runs the guests, two at a time, each with a timeout and one more boot
//! after an infrastructure failure (a panic, no end marker, a timeout);
//! and reports a line per kernel and the output of the failed tests.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use super::{kernel::Kernel, qemu::Qemu, results};

const PARALLEL: usize = 2;
const BOOTS: u32 = 2;
const TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a guest may take to power off once its results are complete.
const POWER_OFF: Duration = Duration::from_secs(30);
/// The most lines of one executable's failure output printed.
const EXCERPT: usize = 60;

/// A kernel to boot, and the folder with its initramfs and logs.
pub struct Guest {
    pub kernel: Kernel,
    pub dir: PathBuf,
}

pub enum Verdict {
    Tests(results::Results),
    /// Why the guest could not report the tests' results.
    Infrastructure(String),
}

pub struct Outcome {
    verdict: Verdict,
    /// The wall time of the last boot.
    wall: Duration,
    boots: u32,
}

/// Boots every guest, at most `PARALLEL` at a time; the outcomes are in
/// the guests' order.
pub fn run(qemu: &Qemu, guests: &[Guest], expected: &[String]) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::from_iter(guests.iter().map(|_| None)));
    thread::scope(|scope| {
        for _ in 0..PARALLEL.min(guests.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(guest) = guests.get(i) else { break };
                    let outcome = run_guest(qemu, guest, expected);
                    outcomes.lock().expect("no panics while locked")[i] = Some(outcome);
                }
            });
        }
    });
    outcomes
        .into_inner()
        .expect("no panics while locked")
        .into_iter()
        .map(|o| o.expect("every guest ran"))
        .collect()
}

fn run_guest(qemu: &Qemu, guest: &Guest, expected: &[String]) -> Outcome {
    let kernel = &guest.kernel;
    let mut boots = 0;
    loop {
        boots += 1;
        let started = Instant::now();
        let verdict = boot(qemu, guest, expected);
        let wall = started.elapsed();
        match &verdict {
            Verdict::Infrastructure(why) if boots < BOOTS => {
                eprintln!(
                    "xtask: {} {}: infrastructure failure after {}: {why}; booting again",
                    kernel.package,
                    kernel.version,
                    minutes(wall)
                );
                continue;
            }
            Verdict::Infrastructure(_) => {}
            Verdict::Tests(_) => eprintln!(
                "xtask: {} {}: tests ran in {}",
                kernel.package,
                kernel.version,
                minutes(wall)
            ),
        }
        return Outcome {
            verdict,
            wall,
            boots,
        };
    }
}

/// Boots the guest once and reads its results.
fn boot(qemu: &Qemu, guest: &Guest, expected: &[String]) -> Verdict {
    let console = guest.dir.join("console.log");
    let results = guest.dir.join("results.txt");
    let log = guest.dir.join("qemu.log");
    for file in [&console, &results] {
        let _ = fs::remove_file(file);
    }
    let mut cmd = qemu.boot(
        &guest.kernel.vmlinuz,
        &guest.dir.join("initrd.img"),
        &console,
        &results,
    );
    let child = File::create(&log)
        .and_then(|out| Ok((out.try_clone()?, out)))
        .and_then(|(out, err)| cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn());
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return Verdict::Infrastructure(format!("cannot start QEMU: {e}")),
    };
    let exit = match wait(&mut child, &results) {
        Ok(exit) => exit,
        Err(why) => return Verdict::Infrastructure(why),
    };
    let results = results::parse(&String::from_utf8_lossy(
        &fs::read(&results).unwrap_or_default(),
    ));
    if !results.done {
        return Verdict::Infrastructure(format!(
            "{} ({exit}; see {})",
            why_unfinished(&console),
            console.display()
        ));
    }
    let missing: Vec<&str> = expected
        .iter()
        .filter(|name| !results.executables.iter().any(|e| &&e.name == name))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Verdict::Infrastructure(format!(
            "no results from {} (see {})",
            missing.join(", "),
            console.display()
        ));
    }
    Verdict::Tests(results)
}

/// Waits for QEMU to exit (or, once the results are complete, to power
/// off); says how it ended, or why it was killed.
fn wait(child: &mut Child, results: &Path) -> Result<String, String> {
    let started = Instant::now();
    let mut complete: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(format!("QEMU {status}")),
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
        if complete.is_none()
            && fs::read(results).is_ok_and(|r| String::from_utf8_lossy(&r).contains(results::DONE))
        {
            complete = Some(Instant::now());
        }
        let timed_out = started.elapsed() > TIMEOUT;
        if timed_out || complete.is_some_and(|c| c.elapsed() > POWER_OFF) {
            let _ = child.kill();
            let _ = child.wait();
            if timed_out {
                return Err(format!("no results after {}: killed", minutes(TIMEOUT)));
            }
            return Ok("killed: it did not power off".to_string());
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The console's first sign of a kernel failure, else its last line.
fn why_unfinished(console: &Path) -> String {
    const SIGNS: [&str; 6] = [
        "Kernel panic",
        "BUG:",
        "Oops",
        "double fault",
        "general protection fault",
        "Unable to ",
    ];
    let text = String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    match lines.iter().find(|l| SIGNS.iter().any(|s| l.contains(s))) {
        Some(line) => format!("the guest failed: {}", line.trim()),
        None => match lines.iter().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!("the guest stopped before the end, last: {}", line.trim()),
            None => "the guest printed nothing".to_string(),
        },
    }
}

/// Prints a line per kernel, then the failures; returns the failed
/// kernels' series.
pub fn report(guests: &[Guest], outcomes: &[Outcome]) -> Vec<String> {
    let mut failed = Vec::new();
    let mut details = String::new();
    for (guest, outcome) in guests.iter().zip(outcomes) {
        let kernel = &guest.kernel;
        let boots = match outcome.boots {
            1 => String::new(),
            n => format!(" ({n} boots)"),
        };
        let summary = match &outcome.verdict {
            Verdict::Infrastructure(why) => {
                failed.push(format!("{} (infrastructure)", kernel.series));
                format!("INFRASTRUCTURE FAILURE: {why}")
            }
            Verdict::Tests(results) => {
                let (mut passed, mut failures) = (0, 0);
                for executable in &results.executables {
                    let (p, f) = executable.counts();
                    passed += p;
                    failures += f;
                    if executable.status != 0 {
                        failures += u32::from(f == 0);
                        details += &failure(kernel, executable);
                    }
                }
                if results.executables.iter().any(|e| e.status != 0) {
                    failed.push(kernel.series.clone());
                }
                format!("{passed} passed, {failures} failed")
            }
        };
        println!(
            "{:<5} {} {}  {:>6}  {summary}{boots}",
            kernel.series,
            kernel.package,
            kernel.version,
            minutes(outcome.wall)
        );
    }
    if !details.is_empty() {
        print!("\n{details}");
    }
    failed
}

/// One failed executable's failed tests and their output, trimmed.
fn failure(kernel: &Kernel, executable: &results::Executable) -> String {
    let (names, output) = executable.failures();
    let mut lines: Vec<&str> = output.lines().collect();
    let cut = lines.len().saturating_sub(EXCERPT);
    lines.truncate(EXCERPT);
    let mut text = format!(
        "--- {} ({}): {} exited with {}; failed: {}\n",
        kernel.series,
        kernel.version,
        executable.name,
        executable.status,
        if names.is_empty() {
            "(no libtest summary)".to_string()
        } else {
            names.join(", ")
        }
    );
    for line in lines {
        text += &format!("    {line}\n");
    }
    if cut > 0 {
        text += &format!("    ... ({cut} more lines)\n");
    }
    text + "\n"
}

/// `95s` as `1m35s`.
fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}
