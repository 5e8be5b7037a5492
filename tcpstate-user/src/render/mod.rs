//! Output. One printer per format behind one trait, [`Printer`]: [`text`]
//! (the readable tables, and the `timewait` [`screen`]) and [`json`] (JSON
//! Lines, schema version 1, written with the [`encode`] encoder), and
//! beside them the `diagnose` report as a page ([`html`], [`charts`]) and
//! `serve`'s metrics ([`prometheus`]), and the full-screen `timewait` view
//! on a terminal ([`tui`]). [`time`]
//! formats timestamps; [`escape`] makes outside text safe for a terminal.
//!
//! Write errors are kept, not raised: the command checks
//! [`Printer::error`] after each batch, so a closed pipe ends the program
//! quietly.

pub mod charts;
pub mod encode;
pub mod escape;
pub mod html;
pub mod json;
pub mod prometheus;
pub mod report;
pub mod screen;
pub mod text;
pub mod time;
pub mod tui;

use std::{
    io::{self, Write},
    net::IpAddr,
};

use crate::{
    cli::GroupBy,
    diagnose::{evidence::Evidence, findings::Finding},
    host::{cgroup::Workload, clock::Clock, sysctl::Facts},
    track::{
        pressure::Pool,
        timewait::{Entry, TwSink, TwStats},
        tracker::Sink,
    },
};

/// Totals printed when the program ends.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Whether tracing ran; `timewait --once` only reads the kernel's
    /// table, so it has no events to count.
    pub traced: bool,
    /// Records read from the kernel.
    pub events: u64,
    /// What was lost, by reason.
    pub lost: Losses,
    pub duration_ms: f64,
    /// Connections not tracked because the tracker's table was full.
    pub untracked: u64,
    /// Connections whose end was never seen (see `tracker::Stats`).
    pub unfinished: u64,
    /// Events the kernel skipped for a classic program (nested runs) that
    /// the rescue programs recorded: included in `events`, not lost.
    pub rescued: u64,
    /// Records written out of time order: they reached tcpstate after one
    /// stamped later had been written (their CPU stalled for longer than
    /// the reorder window between stamping and placing them).
    pub late: u64,
}

/// What a run lost, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Losses {
    /// Records the kernel could not write: the ring buffer was full.
    pub ring_full: u64,
    /// Runs the kernel skipped for nested programs that no rescue program
    /// recorded.
    pub nested: u64,
    /// Connections whose end tracing never saw although no loss was
    /// counted for them: the socket's address began a new life first (the
    /// kernel ran no program for at least one transition).
    pub inferred: u64,
    /// Lines of output dropped because the reader of standard output did
    /// not keep up.
    pub output: u64,
    /// Records still in the ring buffer when the run had to end: it ends
    /// within a second of a signal or `--duration`, whatever the backlog.
    pub unread: u64,
}

impl Losses {
    pub fn total(&self) -> u64 {
        self.ring_full + self.nested + self.inferred + self.output + self.unread
    }
}

/// Rates over the last refresh of the live `timewait` view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub entered_per_s: f64,
    pub exited_per_s: f64,
}

/// What one `timewait` refresh (or `--once`) shows: the command gathers it
/// from the table and the host, the printers only lay it out.
pub struct Frame<'a> {
    /// When it was taken (kernel monotonic time).
    pub now_ns: u64,
    /// The entries that pass the filters.
    pub entries: Vec<&'a Entry>,
    pub pools: Vec<Pool>,
    /// tcpstate's own namespace first, then those of the entries in view.
    pub namespaces: Vec<NsFigures>,
    pub stats: TwStats,
    pub reconciliations: u64,
    pub lost: u64,
    /// `None` for `--once`, which has no rates, exits or events to report.
    pub rates: Option<Rates>,
    /// Failed `connect()`s since the start, by [`FailReason`] (`None` for
    /// `--once`).
    ///
    /// [`FailReason`]: crate::track::tracker::FailReason
    pub connect_failed: Option<[u64; 4]>,
    pub group_by: GroupBy,
    /// Userspace filters are given: every figure counts only what they
    /// pass, but `lost` and the table's cap drops, which are host-wide.
    pub filtered: bool,
    /// The live diagnosis, most severe first, for the views that show it
    /// (the full-screen view); empty for the others.
    pub findings: Vec<Finding>,
}

/// One network namespace's figures, from its own settings and counters.
#[derive(Clone, Debug, PartialEq)]
pub struct NsFigures {
    pub netns: u32,
    /// Its `ip netns` name, or `host` for the initial namespace.
    pub name: Option<String>,
    /// The pod or container its processes run in.
    pub workload: Option<Workload>,
    /// As last read inside it; `None` when it was never read (no
    /// reconciliation).
    pub facts: Option<Facts>,
    /// Its TIME_WAIT sockets, every one (its bucket limit counts them all).
    pub time_wait: usize,
    /// Closes traced there whose TIME_WAIT socket the kernel refused (its
    /// buckets were full), since the start; `None` without tracing.
    pub tw_refused: Option<u64>,
}

impl NsFigures {
    /// How it is named in text: its name, else `net:[inode]`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("net:[{}]", self.netns),
        }
    }

    /// `tcp_max_tw_buckets` left before the kernel refuses TIME_WAIT
    /// sockets there.
    pub fn headroom(&self) -> Option<i64> {
        self.facts
            .map(|f| f.max_tw_buckets as i64 - self.time_wait as i64)
    }
}

impl Frame<'_> {
    /// The name of namespace `netns` in text.
    pub fn label_of(&self, netns: u32) -> String {
        self.namespaces
            .iter()
            .find(|n| n.netns == netns)
            .map_or_else(|| format!("net:[{netns}]"), NsFigures::label)
    }

    /// Whether more than one namespace is in view (text then names them).
    pub fn many_namespaces(&self) -> bool {
        self.namespaces.len() > 1
    }
}

/// The context of a recording, written when tracing begins: each
/// namespace's settings as read inside it.
pub struct Host<'a> {
    pub now_ns: u64,
    pub tw_len_ms: f64,
    /// tcpstate's own namespace.
    pub own_netns: Option<u32>,
    /// Whether failed `bind()` calls are traced.
    pub binds_traced: bool,
    pub namespaces: &'a [NsFigures],
}

/// What `diagnose` concluded, and from what.
pub struct Report<'a> {
    /// Most severe first.
    pub findings: &'a [Finding],
    /// `live` or `recording`.
    pub source: &'static str,
    pub observed_s: f64,
    /// Records read from the kernel (live only).
    pub events: Option<u64>,
    pub lost: u64,
    /// What the evidence lacks, in words.
    pub gaps: &'a [String],
}

impl<'a> Report<'a> {
    /// The report of `findings`, drawn from `ev`.
    pub fn new(
        findings: &'a [Finding],
        ev: &'a Evidence,
        source: &'static str,
        events: Option<u64>,
    ) -> Report<'a> {
        Report {
            findings,
            source,
            observed_s: ev.window_s,
            events,
            lost: ev.lost,
            gaps: &ev.gaps,
        }
    }
}

impl Report<'_> {
    /// The report's first line: how many findings, from what, the worst.
    pub fn headline(&self) -> String {
        let n = self.findings.len();
        let worst = self.findings.iter().map(|f| f.severity).max();
        format!(
            "tcpstate diagnose: {n} finding{} from {:.0} s of {}{}",
            if n == 1 { "" } else { "s" },
            self.observed_s,
            if self.source == "live" {
                "tracing"
            } else {
                "a recording"
            },
            worst.map_or(String::new(), |w| format!(", worst: {}", w.as_str()))
        )
    }
}

/// One output format.
pub trait Printer: Sink + TwSink {
    /// The context a recording needs (JSON only: text has nothing to add).
    fn host(&mut self, _host: &Host<'_>) {}
    /// `diagnose`'s findings.
    fn report(&mut self, report: &Report<'_>);
    /// One `timewait` refresh, or the `--once` table.
    fn timewait(&mut self, frame: &Frame<'_>);
    /// The run's totals, at the end.
    fn summary(&mut self, s: &Summary);
    fn flush(&mut self);
    /// The first write error, if any (e.g. a closed pipe).
    fn error(&self) -> Option<&io::Error>;
    /// Between refreshes (every poll of the ring buffer): an interactive
    /// printer takes its keys.
    fn poll(&mut self) {}
    /// The user asked to quit (an interactive printer).
    fn quit(&self) -> bool {
        false
    }
    /// How often the printer wants a `timewait` frame, when it sets that
    /// itself (an interactive printer; else every `--interval`).
    fn interval(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A writer that keeps its first error instead of raising it, and the
/// clock that stamps what is written.
pub struct Out<W: Write> {
    w: W,
    error: Option<io::Error>,
    stamper: time::Stamper,
}

impl<W: Write> Out<W> {
    pub fn new(w: W, clock: Clock) -> Out<W> {
        Out {
            w,
            error: None,
            stamper: time::Stamper::new(clock),
        }
    }

    /// Wall-clock time of kernel monotonic time `mono_ns`.
    pub fn stamp(&mut self, mono_ns: u64) -> time::Ts {
        self.stamper.stamp(mono_ns)
    }

    /// Writes `bytes` unless an earlier write failed.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.w.write_all(bytes)
        {
            self.error = Some(e);
        }
    }

    pub fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.w.flush()
        {
            self.error = Some(e);
        }
    }

    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }
}

/// `addr:port`, with brackets for IPv6.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{
        sock::{SockId, State},
        track::tracker::{
            Note, Transition,
            tests::{owner, tuple},
        },
    };

    /// A clock whose monotonic zero is 2025-11-24T16:00:00Z.
    pub(crate) fn clock() -> Clock {
        Clock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000))
    }

    /// A transition every printer test starts from.
    pub(crate) fn transition() -> Transition {
        Transition {
            ts_ns: 1_500_000,
            skaddr: 0xffff_8881_02e2_4a00,
            id: SockId {
                netns: 4026531840,
                tuple: tuple(9098, 41566),
            },
            old: State::ESTABLISHED,
            new: State::FIN_WAIT1,
            in_old_ns: Some(12_300_000),
            owner: Some(owner(1234)),
            note: Note::ActiveClose,
        }
    }

    #[test]
    fn write_errors_are_kept_not_raised() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut out = Out::new(Closed, Clock::system());
        out.write(b"a");
        out.write(b"b");
        out.flush();
        assert_eq!(out.error().unwrap().kind(), io::ErrorKind::BrokenPipe);
    }
}
