//! The TUI's layout: a header that always fits (totals, rates with a
//! sparkline, failures, losses, kernel agreement, bucket headroom), the
//! pools worst first, the grouped entries with a detail pane, and a line
//! of keys or the filter prompt. Pure: it draws a [`Model`] and a [`Ui`]
//! into a ratatui frame, so any terminal size can be tested.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Sparkline, Table},
};

use super::state::{Model, Row, Ui, closer_word};
use crate::{
    diagnose::findings::Severity,
    render::{endpoint, escape::escape},
    track::{
        pressure::Pool,
        tracker::{Closer, Role},
    },
};

/// Pools shown at most (the worst ones).
const MAX_POOLS: usize = 5;
/// Findings shown at most (the most severe).
const MAX_FINDINGS: usize = 3;

/// Lines of the header.
const HEADER: u16 = 4;

/// `s` cut to `width` characters in the middle, so that both ends (an
/// address's start, its port) stay: `2001:db8:…:1]:443`.
pub fn fit_middle(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width <= 1 {
        return "…".chars().take(width).collect();
    }
    let tail = (width - 1) / 2;
    let head = width - 1 - tail;
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(n - tail).collect();
    format!("{start}…{end}")
}

/// Where each panel goes: the header first, then the footer, then the
/// pools (the worst always visible before any entry), the entries with
/// whatever is left.
struct Areas {
    header: Rect,
    pools: Rect,
    findings: Rect,
    list: Rect,
    detail: Option<Rect>,
    footer: Rect,
}

impl Areas {
    fn of(area: Rect, model: &Model, detail: bool) -> Areas {
        let header = HEADER.min(area.height);
        let footer = u16::from(area.height > header);
        let rest = area.height - header - footer;
        let pools = model.pools.len().min(MAX_POOLS) as u16;
        let pools = if pools == 0 { 0 } else { (pools + 2).min(rest) };
        let findings = (model.findings.len().min(MAX_FINDINGS) as u16).min(rest - pools);
        let entries = rest - pools - findings;
        let at = |y: u16, height: u16| Rect {
            x: area.x,
            y: area.y + y,
            width: area.width,
            height,
        };
        let top = header + pools + findings;
        let (list, detail) = if detail {
            let list = entries * 55 / 100;
            (at(top, list), Some(at(top + list, entries - list)))
        } else {
            (at(top, entries), None)
        };
        Areas {
            header: at(0, header),
            pools: at(header, pools),
            findings: at(header + pools, findings),
            list,
            detail,
            footer: at(area.height - footer, footer),
        }
    }
}

/// Draws everything.
pub fn draw(f: &mut Frame<'_>, model: &Model, ui: &Ui, rows: &[Row]) {
    let areas = Areas::of(f.area(), model, ui.detail && !rows.is_empty());
    draw_header(f, areas.header, model);
    if areas.pools.height > 0 {
        draw_pools(f, areas.pools, model);
    }
    draw_findings(f, areas.findings, model);
    draw_rows(f, areas.list, model, ui, rows);
    if let Some(detail) = areas.detail {
        draw_detail(f, detail, model, &rows[ui.selected.min(rows.len() - 1)]);
    }
    draw_footer(f, areas.footer, ui);
    if ui.help {
        draw_help(f);
    }
}

/// How many rows the entries panel shows, for a terminal of `area`.
pub fn page(area: Rect, model: &Model, detail: bool) -> usize {
    // Less the title and the column names.
    usize::from(Areas::of(area, model, detail).list.height.saturating_sub(2))
}

fn count(model: &Model, p: impl Fn(Role, Closer) -> bool) -> usize {
    model.entries.iter().filter(|e| p(e.role, e.closer)).count()
}

fn draw_header(f: &mut Frame<'_>, area: Rect, m: &Model) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    // Zero counts of the rarer kinds are left out, so that the line fits.
    let some = |name: &str, n: usize| {
        if n == 0 {
            String::new()
        } else {
            format!(" {name} {n}")
        }
    };
    let totals = Line::from(vec![
        Span::styled(format!("TIME_WAIT {}", m.entries.len()), bold),
        Span::raw(format!(
            "  client {} server {}{}  closed first: here {} peer {}{}{}",
            count(m, |r, _| r == Role::Client),
            count(m, |r, _| r == Role::Server),
            some("unknown", count(m, |r, _| r == Role::Unknown)),
            count(m, |_, c| c == Closer::Local),
            count(m, |_, c| c == Closer::Remote),
            some("both", count(m, |_, c| c == Closer::Simultaneous)),
            some("unknown", count(m, |_, c| c == Closer::Unknown)),
        )),
    ]);
    let failed: u64 = m.connect_failed.iter().sum();
    let failures = if failed > 0 {
        Span::styled(
            format!(
                "  connect() failed {:.1}/s ({failed} so far)",
                m.failed_per_s
            ),
            Style::default().fg(Color::Red),
        )
    } else {
        Span::raw("  connect() failed 0")
    };
    let rates = Line::from(vec![
        Span::raw(format!(
            "entered {:.1}/s  exited {:.1}/s",
            m.entered_per_s, m.exited_per_s
        )),
        failures,
    ]);
    let headroom: Vec<String> = m
        .namespaces
        .iter()
        .filter_map(|n| {
            Some(format!(
                "{} {}",
                escape(n.label().as_bytes()),
                n.headroom()?
            ))
        })
        .collect();
    let lost = if m.lost > 0 {
        Style::default().fg(Color::Red)
    } else {
        Style::default()
    };
    let buckets = Line::from(vec![
        Span::styled(
            format!(
                "lost {}{}",
                m.lost,
                if m.filtered { " (host-wide)" } else { "" }
            ),
            lost,
        ),
        Span::raw(format!(
            "  kernel: {} readings, {} missed, {} gone  tw buckets left: {}",
            m.reconciliations,
            m.stats.missed,
            m.exited(crate::track::timewait::ExitReason::Gone),
            headroom.join(", ")
        )),
    ]);
    let [lines, spark, last] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    if area.height == 0 {
        return;
    }
    f.render_widget(Paragraph::new(vec![totals, rates]), lines);
    f.render_widget(Paragraph::new(buckets), last);
    let [label, graph] =
        Layout::horizontal([Constraint::Length(24), Constraint::Min(1)]).areas(spark);
    f.render_widget(
        Paragraph::new(format!("entries/s, last {} s:", m.history.len())),
        label,
    );
    let width = usize::from(graph.width);
    let points: Vec<u64> = m
        .history
        .iter()
        .skip(m.history.len().saturating_sub(width))
        .map(|&(entered, _)| entered)
        .collect();
    f.render_widget(
        Sparkline::default()
            .data(&points)
            .style(Style::default().fg(Color::Cyan)),
        graph,
    );
}

/// How a pool stands: exhausted, pressed, or fine.
fn pool_style(p: &Pool) -> Style {
    if p.failures.no_local_port_per_s > 0.0 || (p.left == 0 && !p.reuse_applies) {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else if p.flagged {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default()
    }
}

/// When the pool has no port left at its rate: now, in so many seconds,
/// or not while it is not filling up.
fn exhaustion(p: &Pool) -> String {
    if p.failures.no_local_port_per_s > 0.0 || (p.left == 0 && !p.reuse_applies) {
        "now".into()
    } else if p.rate > 0.0 && !p.reuse_applies {
        format!("{:.0} s", p.left as f64 / p.rate)
    } else {
        "-".into()
    }
}

fn draw_pools(f: &mut Frame<'_>, area: Rect, m: &Model) {
    const NETNS: u16 = 14;
    let widths = [
        Constraint::Length(NETNS),
        Constraint::Min(20),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(7),
    ];
    // The columns' widths and the gaps between them.
    let name_width = usize::from(area.width.saturating_sub(NETNS + 6 + 6 + 7 + 5 + 7 + 6)).max(20);
    let rows = m.pools.iter().take(MAX_POOLS).map(|p| {
        let netns = escape(m.label_of(p.key.netns).as_bytes()).into_owned();
        let pool = format!("{} -> {}", p.key.laddr, endpoint(p.key.raddr, p.key.rport));
        TableRow::new(vec![
            Cell::from(fit_middle(&netns, usize::from(NETNS))),
            Cell::from(fit_middle(&pool, name_width)),
            Cell::from(p.left.to_string()),
            Cell::from((p.time_wait + p.established).to_string()),
            Cell::from(format!("{:.1}", p.rate)),
            Cell::from(format!("{:.0}%", p.projected * 100.0)),
            Cell::from(exhaustion(p)),
        ])
        .style(pool_style(p))
    });
    let header = TableRow::new([
        "namespace",
        "pool (local -> remote)",
        "left",
        "in use",
        "rate/s",
        "proj",
        "full in",
    ])
    .style(Style::default().add_modifier(Modifier::DIM));
    let title = format!("port pools, worst first ({} in all)", m.pools.len());
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

/// One line per finding: severity, kind, where, the first fix, and what.
fn draw_findings(f: &mut Frame<'_>, area: Rect, m: &Model) {
    let lines: Vec<Line> = m
        .findings
        .iter()
        .take(usize::from(area.height))
        .map(|x| {
            let style = match x.severity {
                Severity::Critical => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                _ => Style::default().fg(Color::Yellow),
            };
            let place = x
                .place
                .netns_name
                .clone()
                .or_else(|| x.place.netns.map(|ns| m.label_of(ns)))
                .unwrap_or_default();
            // The fix first: the symptom is in the panels already.
            let text = match x.fixes.first() {
                Some(fix) => format!(" {place}: fix: {} ({})", fix.detail, x.what),
                None => format!(" {place}: {}", x.what),
            };
            Line::from(vec![
                Span::styled(
                    format!("{} {}", x.severity.as_str().to_uppercase(), x.kind.as_str()),
                    style,
                ),
                Span::raw(escape(text.as_bytes()).into_owned()),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines), area);
}

fn draw_rows(f: &mut Frame<'_>, area: Rect, m: &Model, ui: &Ui, rows: &[Row]) {
    let widths = [
        Constraint::Min(20),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    let name_width = usize::from(area.width.saturating_sub(9 + 7 + 8 + 8 + 4)).max(20);
    let page = usize::from(area.height.saturating_sub(2)).max(1);
    let first = ui.offset.min(rows.len().saturating_sub(1));
    let shown = rows
        .iter()
        .enumerate()
        .skip(first)
        .take(page)
        .map(|(i, r)| {
            let style = if i == ui.selected {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default()
            };
            TableRow::new(vec![
                Cell::from(fit_middle(&r.name, name_width)),
                Cell::from(r.count.to_string()),
                Cell::from(format!("{:.1}", r.rate)),
                Cell::from(format!(
                    "{:.0} s",
                    m.now_ns.saturating_sub(r.oldest_ns) as f64 / 1e9
                )),
                Cell::from(format!("{:.0} s", r.min_left_ns as f64 / 1e9)),
            ])
            .style(style)
        });
    let header = TableRow::new([ui.grouping.title(), "TIME_WAIT", "rate/s", "oldest", "left"])
        .style(Style::default().add_modifier(Modifier::DIM));
    let filter = ui.filter.as_ref().map_or(String::new(), |t| {
        format!(", filter {}", escape(t.text.as_bytes()))
    });
    let title = format!(
        "TIME_WAIT by {}, sorted by {}{filter} ({}-{} of {})",
        ui.grouping.title(),
        ui.sort.title(),
        if rows.is_empty() { 0 } else { first + 1 },
        (first + page).min(rows.len()),
        rows.len()
    );
    f.render_widget(
        Table::new(shown, widths)
            .header(header)
            .block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

fn draw_detail(f: &mut Frame<'_>, area: Rect, m: &Model, r: &Row) {
    let mut lines = vec![Line::from(format!(
        "close matrix (role x who closed first): {}",
        ["local", "remote", "both", "unknown"].join(" / ")
    ))];
    for (role, name) in [
        (Role::Client, "client"),
        (Role::Server, "server"),
        (Role::Unknown, "unknown"),
    ] {
        let cells = r.matrix[role as usize];
        if cells.iter().sum::<usize>() > 0 {
            lines.push(Line::from(format!(
                "  {name:<8} {}",
                cells.map(|n| n.to_string()).join(" / ")
            )));
        }
    }
    let owners: Vec<String> = r
        .owners
        .iter()
        .take(5)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    lines.push(Line::from(format!("owners: {}", owners.join(", "))));
    for e in &r.sample {
        let t = &e.id.tuple;
        lines.push(Line::from(format!(
            "  {} -> {}  {} {}  {:.0} s left",
            endpoint(t.laddr, t.lport),
            endpoint(t.raddr, t.rport),
            e.role.as_str(),
            closer_word(e.closer),
            e.expires_ns.saturating_sub(m.now_ns) as f64 / 1e9
        )));
    }
    let title = format!("detail: {}", r.name);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

fn draw_footer(f: &mut Frame<'_>, area: Rect, ui: &Ui) {
    let line = match (&ui.prompt, &ui.refused) {
        (Some(text), _) => Line::from(vec![
            Span::styled("filter: ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!("{}_", escape(text.as_bytes()))),
            Span::raw("  (e.g. --lport 443 --comm curl; enter applies, empty clears, esc cancels)"),
        ]),
        (None, Some(why)) => Line::from(Span::styled(
            format!("filter refused: {}", escape(why.as_bytes())),
            Style::default().fg(Color::Red),
        )),
        (None, None) if ui.message.is_some() => Line::from(Span::styled(
            ui.message.clone().unwrap_or_default(),
            Style::default().fg(Color::Yellow),
        )),
        (None, None) => Line::from(format!(
            "g group  s sort  / filter  ↑↓ scroll  enter detail  +/- every {} s  ? help  q quit",
            ui.interval_s
        )),
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_help(f: &mut Frame<'_>) {
    let text = [
        "g          group by peer, local port, process, namespace, entry",
        "s          sort by count, rate, oldest, time left",
        "/          filter, as on the command line: --lport 443 --comm curl",
        "up/down j/k, PgUp/PgDn, Home/End   move the selection",
        "enter, d   the selected row's entries, owners and close matrix",
        "+ / -      refresh less / more often",
        "?          this help; esc closes it",
        "q, Ctrl-C  quit (the summary follows)",
    ];
    let area = f.area();
    let width =
        (text.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u16 + 4).min(area.width);
    let height = (text.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(text.map(Line::from).to_vec())
            .block(Block::default().borders(Borders::ALL).title("keys")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        render::tui::state::{Grouping, Key, Model, Typed, Ui},
        sock::{Comm, SockId, Tuple},
        track::{
            pressure::{Failures, PoolKey},
            timewait::{Entry, Source, TwOwner},
        },
    };

    const NOW: u64 = 1_000_000_000_000;
    const V6: &str = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1";

    fn entry(i: u16, v6: bool) -> Entry {
        let (laddr, raddr) = if v6 {
            (
                V6.parse().unwrap(),
                "2001:db8:ffff:eeee:dddd:cccc:bbbb:2".parse().unwrap(),
            )
        } else {
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        };
        let id = SockId {
            netns: 1,
            tuple: Tuple {
                family: if v6 {
                    crate::sock::Family::V6
                } else {
                    crate::sock::Family::V4
                },
                laddr,
                lport: 40000 + i,
                raddr,
                rport: 443 + i % 50,
            },
        };
        let mut e = Entry::new_for_test(id, Role::Client, Closer::Local, Source::Traced);
        e.entered_ns = NOW - u64::from(i) * 100_000_000;
        e.expires_ns = e.entered_ns + 60_000_000_000;
        e.owner = Some(TwOwner {
            pid: 9,
            comm: Comm::new("curl\x1b[2J"),
        });
        e
    }

    fn model() -> Model {
        let entries: Vec<Entry> = (0..400).map(|i| entry(i, i % 2 == 0)).collect();
        let pool = |rport: u16, left: u64, failing: bool| Pool {
            key: PoolKey::of(&entries[usize::from(rport % 2)].id),
            range_size: 28232,
            time_wait: 200,
            established: 3,
            rate: 50.0,
            used: 0.4,
            projected: 1.2,
            flagged: true,
            reuse_applies: false,
            left,
            failures: Failures {
                per_s: if failing { 2.0 } else { 0.0 },
                no_local_port_per_s: if failing { 2.0 } else { 0.0 },
            },
            process: None,
        };
        let pools = (0..8)
            .map(|i| pool(i, 1000 - u64::from(i), i == 0))
            .collect();
        let mut m = Model {
            now_ns: NOW,
            entries,
            pools,
            ..Model::default()
        };
        m.connect_failed = [5, 0, 0, 0];
        m.failed_per_s = 2.0;
        m.history.extend((0..400).map(|i| (i % 60, i % 30)));
        m
    }

    fn screen(width: u16, height: u16, model: &Model, ui: &Ui) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let rows = ui.rows(model);
        terminal.draw(|f| draw(f, model, ui, &rows)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    #[test]
    fn the_header_and_the_worst_pool_fit_80x24_and_200x50() {
        let m = model();
        for (w, h) in [(80, 24), (200, 50)] {
            let ui = Ui::new(Grouping::Peer, 1.0);
            let lines = screen(w, h, &m, &ui);
            assert_eq!(lines.len(), usize::from(h));
            assert!(
                lines[0].starts_with("TIME_WAIT 400  client 400"),
                "{lines:#?}"
            );
            assert!(lines[1].starts_with("entered 0.0/s"), "{lines:#?}");
            assert!(
                lines[1].contains("connect() failed 2.0/s (5 so far)"),
                "{lines:#?}"
            );
            assert!(lines[2].starts_with("entries/s, last 400 s:"), "{lines:#?}");
            assert!(
                lines[4].contains("port pools, worst first (8 in all)"),
                "{lines:#?}"
            );
            // The worst pool, first: its IPv6 peer cut in the middle, the
            // port kept.
            assert!(lines[6].contains('…') || w == 200, "{lines:#?}");
            assert!(lines[6].contains("1000"), "{lines:#?}");
            assert!(
                lines[h as usize - 1].starts_with("g group  s sort"),
                "{lines:#?}"
            );
            let title = lines
                .iter()
                .position(|l| l.contains("TIME_WAIT by peer"))
                .unwrap();
            assert!(lines[title].contains("of 50)"), "{lines:#?}");
            // Nothing from outside is printed raw.
            assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:#?}");
        }
    }

    #[test]
    fn long_ipv6_endpoints_keep_both_ends() {
        let cut = fit_middle(&format!("[{V6}]:443"), 20);
        assert_eq!(cut.chars().count(), 20);
        assert!(
            cut.starts_with("[2001:db8:") && cut.ends_with("e:1]:443"),
            "{cut}"
        );
        assert_eq!(fit_middle("short", 20), "short");
    }

    #[test]
    fn keys_switch_grouping_and_open_detail_help_and_the_prompt() {
        let m = model();
        let mut ui = Ui::new(Grouping::Peer, 1.0);
        let rows = ui.rows(&m).len();
        let parse = |t: &str| -> Result<Typed, String> { Err(format!("unknown {t}")) };
        ui.key(Key::Char('g'), 10, rows, parse);
        ui.key(Key::Char('g'), 10, rows, parse);
        ui.key(Key::Enter, 10, rows, parse);
        let lines = screen(80, 24, &m, &ui);
        assert!(
            lines.iter().any(|l| l.contains("TIME_WAIT by process")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("curl\\x1b[2J")),
            "escaped: {lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("detail: curl")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("client   400 / 0 / 0 / 0")),
            "{lines:#?}"
        );
        ui.key(Key::Char('?'), 10, rows, parse);
        let lines = screen(80, 24, &m, &ui);
        assert!(
            lines.iter().any(|l| l.contains("q, Ctrl-C  quit")),
            "{lines:#?}"
        );
        ui.key(Key::Esc, 10, rows, parse);
        ui.key(Key::Char('/'), 10, rows, parse);
        ui.key(Key::Char('x'), 10, rows, parse);
        let lines = screen(80, 24, &m, &ui);
        assert!(lines[23].starts_with("filter: x_"), "{lines:#?}");
        ui.key(Key::Enter, 10, rows, parse);
        let lines = screen(80, 24, &m, &ui);
        assert!(
            lines[23].starts_with("filter refused: unknown x"),
            "{lines:#?}"
        );
    }

    #[test]
    fn findings_show_one_line_each_with_the_first_fix() {
        use crate::diagnose::findings::{Finding, Fix, Kind, Place};
        let mut m = model();
        m.findings = vec![Finding {
            kind: Kind::PortExhaustion,
            severity: Severity::Critical,
            what: "connect() toward 10.0.0.2:443 fails: no free local port".into(),
            place: Place {
                netns_name: Some("shop".into()),
                ..Place::default()
            },
            evidence: Vec::new(),
            consequence: String::new(),
            fixes: vec![Fix {
                action: "keep_alive",
                detail: "reuse connections in curl".into(),
            }],
        }];
        let lines = screen(200, 50, &m, &Ui::new(Grouping::Peer, 1.0));
        let at = lines
            .iter()
            .position(|l| {
                l.starts_with("CRITICAL port_exhaustion shop: fix: reuse connections in curl (")
            })
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert!(
            lines[at].contains("(connect() toward 10.0.0.2:443 fails"),
            "{lines:#?}"
        );
        assert!(
            lines[at - 1].starts_with("net:[1] "),
            "after the pools: {lines:#?}"
        );
        assert!(lines[at + 1].contains("TIME_WAIT by peer"), "{lines:#?}");
    }

    #[test]
    fn a_tiny_terminal_still_draws() {
        let m = model();
        let ui = Ui::new(Grouping::None, 1.0);
        let lines = screen(20, 5, &m, &ui);
        assert!(lines[0].starts_with("TIME_WAIT 400"), "{lines:#?}");
        assert!(lines[4].starts_with("g group"), "{lines:#?}");
        let lines = screen(80, 8, &m, &ui);
        assert!(
            lines[4].contains("port pools"),
            "the worst pool first: {lines:#?}"
        );
        assert!(lines[6].contains("1000"), "{lines:#?}");
    }
}
