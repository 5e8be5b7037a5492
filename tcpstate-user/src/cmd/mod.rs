//! The commands: the event loop they share and one module per subcommand.

pub mod engine;
pub mod timewait;
pub mod watch;

use std::io::{self, BufWriter, IsTerminal as _, Stdout};

/// Standard output, buffered as the printers want it.
pub(crate) fn stdout() -> BufWriter<Stdout> {
    BufWriter::with_capacity(1 << 18, io::stdout())
}

/// Whether standard output is a terminal (the live screen then redraws in
/// place).
pub(crate) fn stdout_is_tty() -> bool {
    io::stdout().is_terminal()
}

/// Evaluates `$body` with `$printer` bound to the printer on standard
/// output that `--json` (`$json`) chooses: the body is compiled once per
/// printer type, so the per-event path has no dynamic dispatch.
macro_rules! with_printer {
    ($json:expr, $printer:ident => $body:expr) => {{
        let clock = $crate::host::clock::Clock::system();
        if $json {
            let $printer = $crate::render::json::Json::new($crate::cmd::stdout(), clock);
            $body
        } else {
            let $printer = $crate::render::text::Text::new(
                $crate::cmd::stdout(),
                clock,
                $crate::cmd::stdout_is_tty(),
            );
            $body
        }
    }};
}
use with_printer;
