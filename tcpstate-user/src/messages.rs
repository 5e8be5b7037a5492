//! The one place that writes to stderr: the notes tcpstate prints while it
//! runs, warnings and errors, each one line starting with `tcpstate:`.
//!
//! A closed or full stderr never ends the program (`eprintln!` would panic
//! on a closed pipe): what cannot be written is dropped. Outside text in a
//! message (paths, names, kernel messages) is escaped like every text view.
//! Tests capture the messages instead of printing them. While a
//! full-screen view owns the terminal, messages are held and printed when
//! it gives the terminal back.

use std::fmt;
#[cfg(not(test))]
use std::sync::Mutex;

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

/// Lines held while a full-screen view owns the terminal (`None`: none
/// is), and how many more were dropped.
type Held = Option<(Vec<String>, u64)>;

#[cfg(not(test))]
static HELD: Mutex<Held> = Mutex::new(None);

/// `f` on the lines held: process-wide; per thread in tests, which run
/// side by side.
fn with_held<R>(f: impl FnOnce(&mut Held) -> R) -> R {
    #[cfg(not(test))]
    {
        f(&mut HELD.lock().unwrap_or_else(|e| e.into_inner()))
    }
    #[cfg(test)]
    {
        thread_local! {
            static HELD: std::cell::RefCell<Held> = const { std::cell::RefCell::new(None) };
        }
        HELD.with(|held| f(&mut held.borrow_mut()))
    }
}

/// Lines held at most; later ones are counted.
const HELD_MAX: usize = 100;

/// Holds messages from now on, until [`release`].
pub fn hold() {
    with_held(|held| *held = Some((Vec::new(), 0)));
}

/// The latest warning or error held, for the view to show.
pub fn latest_held() -> Option<String> {
    with_held(|held| {
        let line =
            held.as_ref()?.0.iter().rev().find(|l| {
                l.starts_with("tcpstate: warning: ") || l.starts_with("tcpstate: error: ")
            })?;
        Some(line.trim_end().to_string())
    })
}

/// Prints the messages held, and stops holding.
pub fn release() {
    if let Some((lines, dropped)) = with_held(Option::take) {
        for line in lines {
            print_line(&line);
        }
        if dropped > 0 {
            print_line(&format!("tcpstate: {dropped} more messages were dropped\n"));
        }
    }
}

fn write_line(kind: &str, args: fmt::Arguments<'_>) {
    let line = format!("tcpstate: {kind}{}\n", escape_str(&args.to_string()));
    let line = with_held(|held| match held {
        Some((lines, dropped)) => {
            if lines.len() < HELD_MAX {
                lines.push(line);
            } else {
                *dropped += 1;
            }
            None
        }
        None => Some(line),
    });
    if let Some(line) = line {
        print_line(&line);
    }
}

fn print_line(line: &str) {
    #[cfg(test)]
    {
        captured::push(line.to_string());
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
    fn messages_held_for_a_full_screen_view_follow_its_end() {
        hold();
        warning!("lost so far: {}", 3);
        note!("tracing");
        assert_eq!(
            latest_held().as_deref(),
            Some("tcpstate: warning: lost so far: 3")
        );
        assert!(captured::take().is_empty());
        release();
        assert_eq!(
            captured::take(),
            ["tcpstate: warning: lost so far: 3\n", "tcpstate: tracing\n"]
        );
        assert_eq!(latest_held(), None);
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
