//! What the TUI shows and how keys change it: the model taken from each
//! refresh (owned, so that keys regroup, sort and filter at once without
//! waiting for the next one), the grouping of its entries, and the view's
//! state. Pure: no terminal here.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::{
    diagnose::findings::{Finding, Severity},
    kernel::loader,
    render::{Frame, NsFigures, endpoint, escape::escape},
    track::{
        filter::Filter,
        pressure::Pool,
        timewait::{Entry, ExitReason, TwStats},
        tracker::{Closer, Role},
    },
};

/// Seconds of entry and exit rates the sparkline keeps.
pub const HISTORY: usize = 300;

/// How the entries are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    Peer,
    Lport,
    Process,
    Netns,
    None,
}

impl Grouping {
    const ORDER: [Grouping; 5] = [
        Grouping::Peer,
        Grouping::Lport,
        Grouping::Process,
        Grouping::Netns,
        Grouping::None,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Grouping::Peer => "peer",
            Grouping::Lport => "local port",
            Grouping::Process => "process",
            Grouping::Netns => "namespace",
            Grouping::None => "entry",
        }
    }

    fn next(self) -> Grouping {
        let i = Self::ORDER.iter().position(|&g| g == self).unwrap_or(0);
        Self::ORDER[(i + 1) % Self::ORDER.len()]
    }
}

impl From<crate::cli::GroupBy> for Grouping {
    fn from(g: crate::cli::GroupBy) -> Grouping {
        match g {
            crate::cli::GroupBy::Peer => Grouping::Peer,
            crate::cli::GroupBy::Lport => Grouping::Lport,
            crate::cli::GroupBy::Process => Grouping::Process,
            crate::cli::GroupBy::None => Grouping::None,
        }
    }
}

/// How the rows are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Most TIME_WAIT sockets first.
    Count,
    /// Most entries in the last 10 s first.
    Rate,
    /// Oldest entry first.
    Oldest,
    /// Least time left first.
    Left,
}

impl Sort {
    const ORDER: [Sort; 4] = [Sort::Count, Sort::Rate, Sort::Oldest, Sort::Left];

    pub fn title(self) -> &'static str {
        match self {
            Sort::Count => "count",
            Sort::Rate => "rate",
            Sort::Oldest => "oldest",
            Sort::Left => "time left",
        }
    }

    fn next(self) -> Sort {
        let i = Self::ORDER.iter().position(|&s| s == self).unwrap_or(0);
        Self::ORDER[(i + 1) % Self::ORDER.len()]
    }
}

/// How far back a row's rate counts.
const RATE_WINDOW_NS: u64 = 10_000_000_000;

/// One row of the entries panel: a group, or one entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Its name, escaped.
    pub name: String,
    pub count: usize,
    /// Entries per second over the last 10 s.
    pub rate: f64,
    pub oldest_ns: u64,
    pub min_left_ns: u64,
    /// Its entries by role (client, server, unknown) and closer (local,
    /// remote, simultaneous, unknown): the close matrix.
    pub matrix: [[usize; 4]; 3],
    /// Owners, most entries first (escaped names).
    pub owners: Vec<(String, usize)>,
    /// A few of its entries, soonest to expire first.
    pub sample: Vec<Entry>,
}

/// Entries a row keeps for its detail pane.
const SAMPLE: usize = 8;

/// Everything one refresh brought.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub now_ns: u64,
    pub entries: Vec<Entry>,
    pub pools: Vec<Pool>,
    pub namespaces: Vec<NsFigures>,
    pub stats: TwStats,
    pub reconciliations: u64,
    pub lost: u64,
    pub entered_per_s: f64,
    pub exited_per_s: f64,
    /// Failed `connect()`s since the start, by reason.
    pub connect_failed: [u64; 4],
    /// Of them, per second since the last refresh.
    pub failed_per_s: f64,
    /// Entries and exits per second, the latest last.
    pub history: VecDeque<(u64, u64)>,
    pub filtered: bool,
    /// The live diagnosis's warnings and critical findings, worst first.
    pub findings: Vec<Finding>,
}

impl Model {
    /// Takes what `frame` shows; `failed_per_s` from the change in
    /// failures since the previous model.
    pub fn update(&mut self, f: &Frame<'_>) {
        let failed = f.connect_failed.unwrap_or_default();
        let (entered, exited) = f
            .rates
            .map_or((0.0, 0.0), |r| (r.entered_per_s, r.exited_per_s));
        let window_s = (f.now_ns.saturating_sub(self.now_ns) as f64 / 1e9).max(1e-3);
        let new_failures = failed.iter().sum::<u64>() - self.connect_failed.iter().sum::<u64>();
        self.failed_per_s = if self.now_ns == 0 {
            0.0
        } else {
            new_failures as f64 / window_s
        };
        self.now_ns = f.now_ns;
        self.entries = f.entries.iter().map(|&&e| e).collect();
        self.pools = f.pools.clone();
        self.namespaces = f.namespaces.clone();
        self.stats = f.stats;
        self.reconciliations = f.reconciliations;
        self.lost = f.lost;
        self.entered_per_s = entered;
        self.exited_per_s = exited;
        self.connect_failed = failed;
        self.filtered = f.filtered;
        self.findings = f
            .findings
            .iter()
            .filter(|x| x.severity > Severity::Info)
            .cloned()
            .collect();
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history
            .push_back((entered.round() as u64, exited.round() as u64));
    }

    /// The name of namespace `netns`.
    pub fn label_of(&self, netns: u32) -> String {
        self.namespaces
            .iter()
            .find(|n| n.netns == netns)
            .map_or_else(|| format!("net:[{netns}]"), NsFigures::label)
    }

    /// The TIME_WAIT exits so far by reason.
    pub fn exited(&self, reason: ExitReason) -> u64 {
        self.stats.exited(reason)
    }
}

/// A filter typed at the `/` prompt: the command line's filters.
#[derive(Clone, Debug)]
pub struct Typed {
    pub text: String,
    pub filter: Filter,
    /// The family and port filters (kernel-side on the command line).
    pub settings: loader::Settings,
}

impl Typed {
    fn passes(&self, e: &Entry) -> bool {
        self.settings.passes(&e.id.tuple) && self.filter.matches_entry(e)
    }
}

/// What the user steers.
#[derive(Clone, Debug)]
pub struct Ui {
    pub grouping: Grouping,
    pub sort: Sort,
    /// The first row shown and the selected one.
    pub offset: usize,
    pub selected: usize,
    pub detail: bool,
    pub help: bool,
    /// The `/` prompt's text while it is open.
    pub prompt: Option<String>,
    pub filter: Option<Typed>,
    /// Why the last filter typed was refused.
    pub refused: Option<String>,
    /// Seconds between refreshes.
    pub interval_s: f64,
    pub quit: bool,
    /// The latest note or warning tcpstate had (held while the view owns
    /// the terminal).
    pub message: Option<String>,
}

impl Ui {
    pub fn new(grouping: Grouping, interval_s: f64) -> Ui {
        Ui {
            grouping,
            sort: Sort::Count,
            offset: 0,
            selected: 0,
            detail: false,
            help: false,
            prompt: None,
            filter: None,
            refused: None,
            interval_s,
            quit: false,
            message: None,
        }
    }
}

/// A key, as the TUI tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    /// Ctrl-C.
    Interrupt,
}

/// Smallest and largest refresh interval the keys set.
const INTERVAL_RANGE: (f64, f64) = (0.25, 60.0);

impl Ui {
    /// Applies `key`; `page` is how many rows the entries panel shows,
    /// `rows` how many there are, and `parse` turns a typed filter into
    /// one (or says why not).
    pub fn key(
        &mut self,
        key: Key,
        page: usize,
        rows: usize,
        parse: impl Fn(&str) -> Result<Typed, String>,
    ) {
        if let Some(text) = &mut self.prompt {
            match key {
                Key::Char(c) => text.push(c),
                Key::Backspace => {
                    text.pop();
                }
                Key::Esc => self.prompt = None,
                Key::Interrupt => self.quit = true,
                Key::Enter => {
                    let text = self.prompt.take().unwrap_or_default();
                    if text.trim().is_empty() {
                        self.filter = None;
                        self.refused = None;
                    } else {
                        match parse(&text) {
                            Ok(typed) => {
                                self.filter = Some(typed);
                                self.refused = None;
                            }
                            Err(why) => self.refused = Some(why),
                        }
                    }
                    self.selected = 0;
                    self.offset = 0;
                }
                _ => {}
            }
            return;
        }
        let last = rows.saturating_sub(1);
        match key {
            Key::Char('q') | Key::Interrupt => self.quit = true,
            Key::Char('?') => self.help = !self.help,
            Key::Esc => {
                self.help = false;
                self.detail = false;
            }
            Key::Char('g') => {
                self.grouping = self.grouping.next();
                self.selected = 0;
                self.offset = 0;
            }
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('/') => self.prompt = Some(String::new()),
            Key::Enter | Key::Char('d') => self.detail = !self.detail,
            Key::Char('+') => {
                self.interval_s = (self.interval_s * 2.0).min(INTERVAL_RANGE.1);
            }
            Key::Char('-') => {
                self.interval_s = (self.interval_s / 2.0).max(INTERVAL_RANGE.0);
            }
            Key::Down | Key::Char('j') => self.selected = (self.selected + 1).min(last),
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::PageDown => self.selected = (self.selected + page.max(1)).min(last),
            Key::PageUp => self.selected = self.selected.saturating_sub(page.max(1)),
            Key::Home => self.selected = 0,
            Key::End => self.selected = last,
            _ => {}
        }
        self.scroll_to_selected(page);
    }

    /// Keeps the selected row within the `page` rows shown.
    pub fn scroll_to_selected(&mut self, page: usize) {
        let page = page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
    }

    /// The entries panel's rows: `model`'s entries that pass the typed
    /// filter, grouped and sorted.
    pub fn rows(&self, model: &Model) -> Vec<Row> {
        let mut groups: FxHashMap<String, Row> = FxHashMap::default();
        let mut order = Vec::new();
        for e in &model.entries {
            if self.filter.as_ref().is_some_and(|f| !f.passes(e)) {
                continue;
            }
            let name = self.name_of(e, model);
            let row = groups.entry(name.clone()).or_insert_with(|| {
                order.push(name.clone());
                Row {
                    name,
                    count: 0,
                    rate: 0.0,
                    oldest_ns: u64::MAX,
                    min_left_ns: u64::MAX,
                    matrix: [[0; 4]; 3],
                    owners: Vec::new(),
                    sample: Vec::new(),
                }
            });
            row.count += 1;
            if model.now_ns.saturating_sub(e.entered_ns) <= RATE_WINDOW_NS {
                row.rate += 1e9 / RATE_WINDOW_NS as f64;
            }
            row.oldest_ns = row.oldest_ns.min(e.entered_ns);
            row.min_left_ns = row
                .min_left_ns
                .min(e.expires_ns.saturating_sub(model.now_ns));
            row.matrix[e.role as usize][e.closer as usize] += 1;
            let owner = e
                .owner
                .map_or_else(|| "unknown".to_string(), |o| escape(o.comm.bytes()).into());
            match row.owners.iter_mut().find(|(name, _)| *name == owner) {
                Some((_, n)) => *n += 1,
                None => row.owners.push((owner, 1)),
            }
            if row.sample.len() < SAMPLE {
                row.sample.push(*e);
            }
        }
        let mut rows: Vec<Row> = order
            .into_iter()
            .filter_map(|name| groups.remove(&name))
            .collect();
        for row in &mut rows {
            row.owners
                .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            row.sample.sort_by_key(|e| e.expires_ns);
        }
        let by_name = |a: &Row, b: &Row| a.name.cmp(&b.name);
        match self.sort {
            Sort::Count => rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| by_name(a, b))),
            Sort::Rate => rows.sort_by(|a, b| {
                b.rate
                    .total_cmp(&a.rate)
                    .then_with(|| b.count.cmp(&a.count))
                    .then_with(|| by_name(a, b))
            }),
            Sort::Oldest => {
                rows.sort_by(|a, b| a.oldest_ns.cmp(&b.oldest_ns).then_with(|| by_name(a, b)))
            }
            Sort::Left => rows.sort_by(|a, b| {
                a.min_left_ns
                    .cmp(&b.min_left_ns)
                    .then_with(|| by_name(a, b))
            }),
        }
        rows
    }

    /// The group entry `e` belongs to, by name (escaped: names come from
    /// outside).
    fn name_of(&self, e: &Entry, model: &Model) -> String {
        let t = &e.id.tuple;
        let ns = || escape(model.label_of(e.id.netns).as_bytes()).into_owned();
        match self.grouping {
            // A server's peers come from ephemeral ports: one group per
            // client address and service.
            Grouping::Peer if e.role == Role::Server => {
                format!("{} (clients of :{})", t.raddr, t.lport)
            }
            Grouping::Peer => endpoint(t.raddr, t.rport),
            Grouping::Lport => format!(":{}", t.lport),
            Grouping::Process => e
                .owner
                .map_or_else(|| "(unknown)".into(), |o| escape(o.comm.bytes()).into()),
            Grouping::Netns => ns(),
            Grouping::None => format!(
                "{} -> {} {} {}",
                endpoint(t.laddr, t.lport),
                endpoint(t.raddr, t.rport),
                e.role.as_str(),
                closer_word(e.closer),
            ),
        }
    }
}

/// A closer in few letters.
pub fn closer_word(c: Closer) -> &'static str {
    match c {
        Closer::Local => "local",
        Closer::Remote => "remote",
        Closer::Simultaneous => "both",
        Closer::Unknown => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sock::{Comm, SockId},
        track::{
            timewait::{Source, TwOwner},
            tracker::tests::tuple,
        },
    };

    pub(crate) fn entry(lport: u16, rport: u16, role: Role, comm: &str, age_s: u64) -> Entry {
        let id = SockId {
            netns: 1,
            tuple: tuple(lport, rport),
        };
        let mut e = Entry::new_for_test(id, role, Closer::Local, Source::Traced);
        e.entered_ns = NOW - age_s * 1_000_000_000;
        e.expires_ns = e.entered_ns + 60_000_000_000;
        e.owner = Some(TwOwner {
            pid: 7,
            comm: Comm::new(comm),
        });
        e
    }

    pub(crate) const NOW: u64 = 1_000_000_000_000;

    fn model() -> Model {
        Model {
            now_ns: NOW,
            entries: vec![
                entry(40000, 8080, Role::Client, "curl", 50),
                entry(40001, 8080, Role::Client, "curl", 1),
                entry(40002, 9090, Role::Client, "wget", 2),
                entry(80, 50000, Role::Server, "nginx", 30),
            ],
            ..Model::default()
        }
    }

    fn no_parse(_: &str) -> Result<Typed, String> {
        Err("no".into())
    }

    #[test]
    fn rows_group_sort_and_count_the_close_matrix() {
        let m = model();
        let mut ui = Ui::new(Grouping::Peer, 1.0);
        let rows = ui.rows(&m);
        assert_eq!(rows[0].name, "127.0.0.1:8080");
        assert_eq!(rows[0].count, 2);
        assert_eq!(
            rows[0].matrix[Role::Client as usize][Closer::Local as usize],
            2
        );
        assert_eq!(rows[0].owners, [("curl".to_string(), 2)]);
        assert!((rows[0].rate - 0.1).abs() < 1e-9, "one entry in 10 s");
        assert_eq!(rows[1].name, "127.0.0.1 (clients of :80)");
        ui.key(Key::Char('s'), 10, rows.len(), no_parse);
        assert_eq!(ui.sort, Sort::Rate);
        ui.key(Key::Char('s'), 10, rows.len(), no_parse);
        assert_eq!(ui.sort, Sort::Oldest);
        assert_eq!(ui.rows(&m)[0].name, "127.0.0.1:8080", "the 50 s old one");
        ui.key(Key::Char('s'), 10, rows.len(), no_parse);
        assert_eq!(ui.rows(&m)[0].min_left_ns, 10_000_000_000);
        ui.key(Key::Char('g'), 10, rows.len(), no_parse);
        assert_eq!(ui.grouping, Grouping::Lport);
        ui.key(Key::Char('g'), 10, rows.len(), no_parse);
        ui.sort = Sort::Count;
        let by_process: Vec<String> = ui.rows(&m).into_iter().map(|r| r.name).collect();
        assert_eq!(by_process, ["curl", "nginx", "wget"]);
    }

    #[test]
    fn keys_scroll_within_the_rows_and_the_prompt_takes_a_filter() {
        let mut ui = Ui::new(Grouping::None, 1.0);
        for _ in 0..5 {
            ui.key(Key::Down, 2, 4, no_parse);
        }
        assert_eq!((ui.selected, ui.offset), (3, 2));
        ui.key(Key::Home, 2, 4, no_parse);
        assert_eq!((ui.selected, ui.offset), (0, 0));
        ui.key(Key::Char('/'), 2, 4, no_parse);
        for c in "--bad".chars() {
            ui.key(Key::Char(c), 2, 4, no_parse);
        }
        assert_eq!(ui.prompt.as_deref(), Some("--bad"));
        ui.key(Key::Enter, 2, 4, no_parse);
        assert_eq!(ui.refused.as_deref(), Some("no"));
        assert!(ui.filter.is_none() && ui.prompt.is_none());
        ui.key(Key::Char('+'), 2, 4, no_parse);
        assert_eq!(ui.interval_s, 2.0);
        ui.key(Key::Char('q'), 2, 4, no_parse);
        assert!(ui.quit);
    }
}
