//! The readable printer: one table line per transition (with the close
//! record under its CLOSE), TIME_WAIT changes tracing alone could not see,
//! the `timewait` screen, and the summary on stderr. Outside text (process
//! names) is escaped and fitted to its column.

use std::io::Write;

use super::{
    Frame, Out, Printer, Report, Summary, endpoint,
    escape::{escape, fit},
    report, screen,
    time::{ms, time_of_day},
};
use crate::{
    host::clock::Clock,
    messages::note,
    sock::Owner,
    track::{
        timewait::{Entry, ExitReason, Source, TwSink},
        tracker::{BindFailure, Close, ConnectFailure, Sink, Transition},
    },
};

/// Width of the COMM column: the kernel keeps 15 bytes of a name.
const COMM_WIDTH: usize = 15;

/// Writes the readable tables.
pub struct Text<W: Write> {
    out: Out<W>,
    /// The output is a terminal: each `timewait` screen replaces the last.
    tty: bool,
    header_done: bool,
}

impl<W: Write> Text<W> {
    pub fn new(w: W, clock: Clock, tty: bool) -> Text<W> {
        Text {
            out: Out::new(w, clock),
            tty,
            header_done: false,
        }
    }

    fn line(&mut self, text: &str) {
        self.out.write(text.as_bytes());
        self.out.write(b"\n");
    }

    fn header(&mut self) {
        if !self.header_done {
            self.header_done = true;
            let header = format!(
                "{:<15} {:>7} {:<15} {:<30} {:<30} {:<26} {:>10}  {}",
                "TIME(UTC)", "PID", "COMM", "LOCAL", "REMOTE", "TRANSITION", "MS", "NOTE"
            );
            self.line(&header);
        }
    }
}

impl<W: Write> Text<W> {
    /// One line of the table: time, owner, then local, remote, transition,
    /// time in the old state and note.
    fn row(&mut self, ts_ns: u64, owner: Option<&Owner>, cols: [&str; 5]) {
        self.header();
        let ts = self.out.stamp(ts_ns);
        let (pid, comm) = owner_columns(owner);
        let [local, remote, transition, in_old, note] = cols;
        let line = format!(
            "{:<15} {:>7} {:<15} {:<30} {:<30} {:<26} {:>10}  {note}",
            time_of_day(ts),
            pid,
            comm,
            local,
            remote,
            transition,
            in_old,
        );
        // No trailing blanks when there is no note.
        self.line(line.trim_end());
    }
}

/// PID and COMM columns of an owner, `-` when unknown.
fn owner_columns(owner: Option<&Owner>) -> (String, String) {
    match owner {
        Some(o) => (
            o.pid.to_string(),
            fit(&escape(o.comm.bytes()), COMM_WIDTH).into_owned(),
        ),
        None => ("-".into(), "-".into()),
    }
}

impl<W: Write> Sink for Text<W> {
    fn transition(&mut self, t: &Transition) {
        let in_old = t.in_old_ns.map_or("-".into(), |n| format!("{:.3}", ms(n)));
        let tuple = &t.id.tuple;
        self.row(
            t.ts_ns,
            t.owner.as_ref(),
            [
                &endpoint(tuple.laddr, tuple.lport),
                &endpoint(tuple.raddr, tuple.rport),
                &format!("{} -> {}", t.old, t.new),
                &in_old,
                t.note.as_str(),
            ],
        );
    }

    fn close(&mut self, c: &Close) {
        let lifetime = c
            .lifetime_ns
            .map_or(String::new(), |n| format!(", lived {:.3} ms", ms(n)));
        let line = format!(
            "{:>25} closed: role {}, first close: {}, {}{}{}",
            "",
            c.role.as_str(),
            c.closer.as_str(),
            c.kind.as_str(),
            match (c.time_wait, c.tw_refused) {
                (true, _) => ", TIME_WAIT here",
                (false, true) => ", TIME_WAIT refused (tcp_max_tw_buckets full)",
                (false, false) => "",
            },
            lifetime
        );
        self.line(&line);
    }

    fn connect_failed(&mut self, f: &ConnectFailure) {
        let errno = f.errno_name().map_or(String::new(), |e| format!(" ({e})"));
        let waited = f
            .waited_ns
            .map_or(String::new(), |n| format!(", after {:.3} ms", ms(n)));
        let line = format!(
            "{:>25} connect failed: {}{errno}{waited}",
            "",
            f.reason.as_str()
        );
        self.line(&line);
    }

    /// A line of its own in the table, with what holds the address under it.
    fn bind_failed(&mut self, b: &BindFailure) {
        let tuple = &b.id.tuple;
        self.row(
            b.ts_ns,
            b.owner.as_ref(),
            [
                &endpoint(tuple.laddr, tuple.lport),
                "-",
                "bind()",
                "-",
                "bind failed (EADDRINUSE)",
            ],
        );
        let held = match b.time_wait_on_port {
            Some(0) => "no TIME_WAIT socket on the port: a live socket holds it".to_string(),
            Some(n) => format!("{n} TIME_WAIT sockets hold the port"),
            None => "TIME_WAIT sockets on the port unknown".to_string(),
        };
        let line = format!(
            "{:>25} {held}; SO_REUSEADDR {}",
            "",
            if b.reuseaddr { "on" } else { "off" }
        );
        self.line(&line);
    }
}

impl<W: Write> TwSink for Text<W> {
    /// Entries tracing saw enter are in the table already (the close line
    /// says so); only those found in the kernel's table get a line.
    fn tw_enter(&mut self, e: &Entry) {
        if e.source == Source::Kernel {
            let ts = self.out.stamp(e.entered_ns);
            let t = &e.id.tuple;
            let line = format!(
                "{:<15} TIME_WAIT found in the kernel's table, missed by tracing: {} -> {} ({})",
                time_of_day(ts),
                endpoint(t.laddr, t.lport),
                endpoint(t.raddr, t.rport),
                e.role.as_str(),
            );
            self.line(&line);
        }
    }

    fn tw_exit(&mut self, e: &Entry, reason: ExitReason, at_ns: u64) {
        let ts = self.out.stamp(at_ns);
        let t = &e.id.tuple;
        let line = format!(
            "{:<15} TIME_WAIT ends ({}) after {:.1} s: {} -> {}",
            time_of_day(ts),
            reason.as_str(),
            ms(at_ns.saturating_sub(e.entered_ns)) / 1000.0,
            endpoint(t.laddr, t.lport),
            endpoint(t.raddr, t.rport),
        );
        self.line(&line);
    }
}

impl<W: Write> Printer for Text<W> {
    fn report(&mut self, r: &Report<'_>) {
        self.out.write(report::render(r).as_bytes());
        self.out.flush();
    }

    fn timewait(&mut self, frame: &Frame<'_>) {
        let text = screen::render(frame);
        match frame.rates {
            // Home and clear, then the screen.
            Some(_) if self.tty => self.out.write(format!("\x1b[H\x1b[2J{text}").as_bytes()),
            // One screen after another, a blank line between.
            Some(_) => self.line(&text),
            None => self.out.write(text.as_bytes()),
        }
    }

    /// On stderr, so that the tables on stdout stay tables; nothing for a
    /// run that traced nothing.
    fn summary(&mut self, s: &Summary) {
        self.out.flush();
        summary(s);
    }

    fn flush(&mut self) {
        self.out.flush();
    }

    fn error(&self) -> Option<&std::io::Error> {
        self.out.error()
    }
}

/// The run's totals on stderr; nothing for a run that traced nothing.
pub fn summary(s: &Summary) {
    if !s.traced {
        return;
    }
    let optional = |n: u64, text: &dyn Fn(u64) -> String| {
        if n == 0 { String::new() } else { text(n) }
    };
    note!(
        "{} events, {} lost, {:.1} s{}{}{}{}{}{}",
        s.events,
        s.lost.total(),
        s.duration_ms / 1000.0,
        optional(s.lost.output, &|n| format!(
            " (of which {n} lines of output the reader of standard output did not take)"
        )),
        optional(s.lost.unread, &|n| format!(
            " (of which {n} records still in the ring buffer: the run ended before \
             reading them)"
        )),
        optional(s.rescued, &|n| format!(
            " ({n} skipped by the kernel for nested runs, recorded by the rescue programs)"
        )),
        optional(s.late, &|n| format!(
            ", {n} written out of time order (they arrived later than the reorder window: \
             raise --reorder-window)"
        )),
        optional(s.untracked, &|n| format!(
            ", {n} connections untracked (table full)"
        )),
        optional(s.unfinished, &|n| format!(
            ", {n} connections whose end was never seen (transitions missed)"
        )),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        messages::captured,
        render::{
            Losses,
            tests::{clock, transition},
        },
        sock::Comm,
    };

    fn render(f: impl FnOnce(&mut Text<&mut Vec<u8>>)) -> String {
        let mut buf = Vec::new();
        let mut r = Text::new(&mut buf, clock(), false);
        f(&mut r);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn text_has_a_header_and_one_line_per_transition() {
        let mut t6 = transition();
        t6.id.tuple.laddr = "::1".parse().unwrap();
        let out = render(|r| {
            r.transition(&transition());
            r.transition(&t6);
        });
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("TIME(UTC)"));
        assert!(lines[1].starts_with("16:00:00.001500"));
        assert!(lines[1].contains("127.0.0.1:9098"));
        assert!(lines[1].contains("ESTABLISHED -> FIN_WAIT1"));
        assert!(lines[1].contains("12.300"));
        assert!(lines[1].ends_with("active close"));
        assert!(lines[2].contains("[::1]:9098"));
    }

    /// A process chooses its own name (`prctl(PR_SET_NAME)`): it must not
    /// reach the terminal raw, nor widen its column.
    #[test]
    fn process_names_are_escaped_and_fit_their_column() {
        let plain = render(|r| r.transition(&transition()));
        for name in [
            &b"a\x1b[2Jb"[..],
            b"\x1b]0;owned\x07",
            b"a\nFAKE 1.2.3.4",
            b"x\rz",
            b"\xff\xfe\xfd",
        ] {
            let mut t = transition();
            let mut comm = [0u8; 16];
            comm[..name.len()].copy_from_slice(name);
            t.owner.as_mut().unwrap().comm = Comm(comm);
            let out = render(|r| r.transition(&t));
            let line = out.lines().nth(1).unwrap();
            assert_eq!(out.lines().count(), 2, "{name:?} forged a line: {out:?}");
            assert!(
                !line.chars().any(|c| c.is_control()),
                "{name:?} reached the terminal raw: {line:?}"
            );
            let plain_line = plain.lines().nth(1).unwrap();
            assert_eq!(
                line.chars().count(),
                plain_line.chars().count(),
                "{name:?} broke the columns:\n{line}\n{plain_line}"
            );
        }
    }

    #[test]
    fn summary_goes_to_stderr_and_only_after_tracing() {
        let summary = Summary {
            traced: true,
            events: 20,
            duration_ms: 1500.0,
            rescued: 2,
            ..Summary::default()
        };
        let behind = Summary {
            lost: Losses {
                unread: 7,
                ..Losses::default()
            },
            late: 3,
            ..summary
        };
        let out = render(|r| {
            r.summary(&summary);
            r.summary(&Summary::default());
            r.summary(&behind);
        });
        assert_eq!(out, "");
        assert_eq!(
            captured::take(),
            [
                "tcpstate: 20 events, 0 lost, 1.5 s (2 skipped by the kernel for nested runs, \
              recorded by the rescue programs)\n",
                "tcpstate: 20 events, 7 lost, 1.5 s (of which 7 records still in the ring buffer: \
                 the run ended before reading them) (2 skipped by the kernel for nested runs, \
                 recorded by the rescue programs), 3 written out of time order (they arrived \
                 later than the reorder window: raise --reorder-window)\n"
            ]
        );
    }
}
