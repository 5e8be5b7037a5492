//! The one place that writes to stderr: the notes tcpstate prints while it
//! runs, warnings and errors, each one line starting with `tcpstate:`.
//!
//! A closed or full stderr never ends the program (`eprintln!` would panic
//! on a closed pipe): what cannot be written is dropped. Outside text in a
//! message (paths, names, kernel messages) is escaped like every text view.
//! Tests capture the messages instead of printing them.

use std::fmt;

use crate::render::escape::escape_str;

/// Prints `tcpstate: <message>`.
pub fn note_args(args: fmt::Arguments<'_>) {
    write_line("", args);
}

/// Prints `tcpstate: warning: <message>`.
pub fn warning_args(args: fmt::Arguments<'_>) {
    write_line("warning: ", args);
}

/// Prints `tcpstate: error: <message>`, a multi-line message (e.g. a
/// verifier log) joined into one line.
pub fn error(args: fmt::Arguments<'_>) {
    let text = args.to_string();
    let one_line = text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    write_line("error: ", format_args!("{one_line}"));
}

/// `note!("...")`: [`note_args`] with `format!` arguments.
macro_rules! note {
    ($($arg:tt)*) => { $crate::messages::note_args(format_args!($($arg)*)) };
}
/// `warning!("...")`: [`warning_args`] with `format!` arguments.
macro_rules! warning {
    ($($arg:tt)*) => { $crate::messages::warning_args(format_args!($($arg)*)) };
}
pub(crate) use {note, warning};

fn write_line(kind: &str, args: fmt::Arguments<'_>) {
    let line = format!("tcpstate: {kind}{}\n", escape_str(&args.to_string()));
    #[cfg(test)]
    {
        captured::push(line);
    }
    #[cfg(not(test))]
    {
        use std::io::Write as _;
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[cfg(test)]
pub mod captured {
    //! What this thread's code printed, for tests.
    use std::cell::RefCell;

    thread_local! {
        static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn push(line: String) {
        LINES.with(|l| l.borrow_mut().push(line));
    }

    /// The lines printed since the last call, on this thread.
    pub fn take() -> Vec<String> {
        LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_prefixed_line_each() {
        note!("tracing ({} programs)", 6);
        warning!("skipping network namespace {}", 7);
        error(format_args!(
            "loading program x\nverifier: line 1\n\n  line 2"
        ));
        assert_eq!(
            captured::take(),
            [
                "tcpstate: tracing (6 programs)\n",
                "tcpstate: warning: skipping network namespace 7\n",
                "tcpstate: error: loading program x | verifier: line 1 | line 2\n",
            ]
        );
    }

    #[test]
    fn outside_text_is_escaped() {
        warning!("cannot read /run/netns/{}", "a\x1b[2Jb");
        assert_eq!(
            captured::take(),
            ["tcpstate: warning: cannot read /run/netns/a\\x1b[2Jb\n"]
        );
    }
}
