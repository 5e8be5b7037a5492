//! The commands: the event loop they share, standard output through its
//! writer thread, and one module per subcommand.

pub mod diagnose;
pub mod engine;
pub mod generate;
pub mod output;
pub mod serve;
pub mod timewait;
pub mod watch;

use std::{io::IsTerminal as _, time::Duration};

use anyhow::{Context as _, Result};

use crate::messages::warning;

/// How long the writer thread may take, at the end, to write what is
/// queued: a stalled reader must not hold the exit up.
const OUTPUT_GRACE: Duration = Duration::from_millis(250);

/// Whether standard output is a terminal (the live screen then redraws in
/// place).
pub(crate) fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// Warns about filters that cannot match anything now: a process or a
/// network namespace that does not exist (it may appear later), a name
/// longer than the kernel keeps.
pub(crate) fn warn_unmatchable(common: &crate::cli::Common) {
    for pid in &common.pid {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            warning!("--pid {pid}: no such process now (it matches only if it starts later)");
        }
    }
    for comm in &common.comm {
        if comm.len() > crate::track::filter::COMM_MAX {
            warning!(
                "--comm {comm}: the kernel keeps the first {} bytes of a process name; \
                 matching on {:?}",
                crate::track::filter::COMM_MAX,
                crate::track::filter::kernel_comm(comm)
            );
        }
    }
    if !common.netns.is_empty() {
        let known: Vec<u32> = crate::host::netns::namespaces()
            .map(|all| all.into_iter().map(|(inode, _)| inode).collect())
            .unwrap_or_default();
        for ns in common.netns.iter().filter(|ns| !known.contains(ns)) {
            warning!(
                "--netns {ns}: no such network namespace now (it matches only if it appears later)"
            );
        }
    }
}

/// Starts the writer thread on standard output.
pub(crate) fn stdout() -> Result<(output::Output, output::Writer)> {
    output::start(std::io::stdout()).context("starting the output thread")
}

/// Ends the writer thread once the printer is gone, and says what did not
/// reach the reader.
pub(crate) fn finish_output<T>(writer: output::Writer, result: Result<T>) -> Result<T> {
    let lost = writer.finish(OUTPUT_GRACE);
    if lost.unwritten > 0 {
        warning!(
            "{} lines of output were not written: the reader of standard output stalled",
            lost.unwritten
        );
    }
    result
}

/// Evaluates `$body` with `$printer` bound to the printer on standard
/// output that `--json` (`$json`) chooses, and `$stats` to the output's
/// [`output::Stats`]: the body is compiled once per printer type, so the
/// per-event path has no dynamic dispatch.
macro_rules! with_printer {
    ($json:expr, $printer:ident, $stats:ident => $body:expr) => {{
        let clock = $crate::host::clock::Clock::system();
        let (out, writer) = $crate::cmd::stdout()?;
        let $stats = out.stats();
        let result = if $json {
            let $printer = $crate::render::json::Json::new(out, clock);
            $body
        } else {
            let $printer =
                $crate::render::text::Text::new(out, clock, $crate::cmd::stdout_is_tty());
            $body
        };
        $crate::cmd::finish_output(writer, result)
    }};
}
use with_printer;
