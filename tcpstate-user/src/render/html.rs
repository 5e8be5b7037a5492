//! `diagnose --html`: one self-contained page (no external assets) with the
//! findings, and charts where a picture says more than a table: TIME_WAIT
//! over the window, ports left, entry rate against what each pool can
//! sustain, connection lifetimes; and the close matrix of each service.

use std::fmt::Write as _;

use super::{
    Report,
    charts::{self, Series},
    endpoint,
    escape::escape_str,
};
use crate::{
    diagnose::{
        evidence::{Closes, Evidence, Holder},
        findings::{Finding, Value},
    },
    track::{pressure::Pool, tracker::CloseKind},
};

/// Holders drawn in the TIME_WAIT chart, the most held first.
const CHART_HOLDERS: usize = 6;
/// Services and destinations in the close matrix.
const MATRIX_ROWS: usize = 12;

/// Text from anywhere, safe inside HTML: control characters made visible
/// as in the text views, then the HTML specials escaped.
fn h(text: &str) -> String {
    let visible = escape_str(text);
    let mut out = String::with_capacity(visible.len());
    for c in visible.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
section{border-left:6px solid #999;padding:.2em 1em;margin:1em 0}\
.critical{border-color:#c0392b}.warning{border-color:#e67e22}.info{border-color:#2980b9}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;\
text-align:left;font-size:.9em}th{background:#f4f4f4}.chart{margin:1em 0}";

/// The whole page.
pub fn page(r: &Report<'_>, ev: &Evidence, pools: &[Pool]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tcpstate diagnose</title><style>{STYLE}</style></head><body>\n\
         <h1>{}</h1>\n",
        h(&r.headline())
    );
    if r.lost > 0 || !r.gaps.is_empty() {
        out.push_str("<ul>");
        if r.lost > 0 {
            let _ = write!(
                out,
                "<li>{} events were lost: the figures may be low</li>",
                r.lost
            );
        }
        for gap in r.gaps {
            let _ = write!(out, "<li>the recording: {}</li>", h(gap));
        }
        out.push_str("</ul>\n");
    }
    for f in r.findings {
        finding(&mut out, f);
    }
    charts_of(&mut out, ev, pools);
    close_matrix(&mut out, ev);
    out.push_str("</body></html>\n");
    out
}

fn finding(out: &mut String, f: &Finding) {
    let sev = f.severity.as_str();
    let _ = write!(
        out,
        "<section class=\"{sev}\"><h2>{} {}{}</h2><p>{}</p><table>",
        sev.to_uppercase(),
        f.kind.as_str(),
        f.place
            .netns_name
            .as_deref()
            .map_or(String::new(), |n| format!(" in {}", h(n))),
        h(&f.what)
    );
    let p = &f.place;
    if let Some(pool) = p.pool() {
        let _ = write!(out, "<tr><th>pool</th><td>{}</td></tr>", h(&pool));
    }
    if let Some(local) = p.local() {
        let _ = write!(out, "<tr><th>local</th><td>{}</td></tr>", h(&local));
    }
    if !p.processes.is_empty() {
        let names: Vec<String> = p.processes.iter().map(|n| h(n)).collect();
        let _ = write!(
            out,
            "<tr><th>processes</th><td>{}</td></tr>",
            names.join(", ")
        );
    }
    for (name, v) in &f.evidence {
        let v = match v {
            Value::Count(n) => n.to_string(),
            Value::Real(x) => format!("{x:.1}"),
            Value::Share(x) => format!("{:.0}%", x * 100.0),
            Value::Text(t) => h(t),
        };
        let _ = write!(out, "<tr><th>{name}</th><td>{v}</td></tr>");
    }
    let _ = write!(out, "</table><p><b>Impact:</b> {}</p>", h(&f.consequence));
    if !f.fixes.is_empty() {
        out.push_str("<ol>");
        for fix in &f.fixes {
            let _ = write!(
                out,
                "<li><code>{}</code>: {}</li>",
                fix.action,
                h(&fix.detail)
            );
        }
        out.push_str("</ol>");
    }
    out.push_str("</section>\n");
}

/// How a holder is named in a chart.
fn label(ev: &Evidence, holder: Holder) -> String {
    match holder {
        Holder::Pool(k) => format!(
            "{}: {} -> {}",
            ev.label_of(k.netns),
            k.laddr,
            endpoint(k.raddr, k.rport)
        ),
        Holder::Service(ns, port) => format!("{}: port {port}", ev.label_of(ns)),
    }
}

fn charts_of(out: &mut String, ev: &Evidence, pools: &[Pool]) {
    let seconds = ev.window_s.ceil().max(1.0) as usize;
    let mut holders: Vec<(Holder, Vec<(f64, f64)>)> = ev
        .time_wait
        .iter()
        .filter_map(|(id, role)| Holder::of(id, *role))
        .chain(pools.iter().map(|p| Holder::Pool(p.key)))
        .collect::<rustc_hash::FxHashSet<_>>()
        .into_iter()
        .map(|holder| (holder, ev.timeline.series(holder, seconds)))
        .collect();
    let peak = |s: &[(f64, f64)]| s.iter().map(|p| p.1).fold(0.0, f64::max);
    holders.sort_by(|a, b| peak(&b.1).total_cmp(&peak(&a.1)));
    holders.truncate(CHART_HOLDERS);
    out.push_str("<h2>Over the window</h2>\n");
    let series: Vec<Series> = holders
        .iter()
        .map(|(holder, points)| Series {
            label: escape_str(&label(ev, *holder)).into_owned(),
            points: points.clone(),
        })
        .collect();
    chart(
        out,
        &charts::lines("TIME_WAIT sockets", "sockets", seconds as f64, &series),
    );
    // Pools worth drawing: those with some pressure (the host's idle
    // ones would only flatten the scale), at least the most pressed.
    let pressed: Vec<&Pool> = pools
        .iter()
        .enumerate()
        .filter(|(i, p)| *i == 0 || p.flagged || p.projected.max(p.used) >= 0.05)
        .map(|(_, p)| p)
        .take(CHART_HOLDERS)
        .collect();
    // Ports left, as a share of the pool: its usable ports less what holds
    // them (TIME_WAIT only where tcp_tw_reuse does not apply).
    let left: Vec<Series> = pressed
        .iter()
        .map(|p| {
            let tw = ev.timeline.series(Holder::Pool(p.key), seconds);
            let range = f64::from(p.range_size.max(1));
            let points = tw
                .into_iter()
                .map(|(t, n)| {
                    let held = p.established as f64 + if p.reuse_applies { 0.0 } else { n };
                    (t, 100.0 * (range - held).max(0.0) / range)
                })
                .collect();
            Series {
                label: escape_str(&label(ev, Holder::Pool(p.key))).into_owned(),
                points,
            }
        })
        .collect();
    if !left.is_empty() {
        chart(
            out,
            &charts::lines("Local ports left", "% of the pool", seconds as f64, &left),
        );
        let rates: Vec<(String, f64, f64)> = pressed
            .iter()
            .map(|p| {
                let k = p.key;
                let name =
                    escape_str(&format!("{}:{}", ev.label_of(k.netns), k.rport)).into_owned();
                (name, p.rate, f64::from(p.range_size) / ev.tw_len_s.max(1.0))
            })
            .collect();
        chart(
            out,
            &charts::paired_bars(
                "TIME_WAIT entries per second, and what each pool sustains",
                ["entering", "sustainable (ports / TIME_WAIT length)"],
                &rates,
            ),
        );
    }
    let lifetimes: Vec<f64> = ev
        .services
        .values()
        .chain(ev.destinations.values())
        .flat_map(|c| c.lifetimes_ms().iter().copied())
        .collect();
    chart(out, &charts::lifetimes("Connection lifetimes", &lifetimes));
}

fn chart(out: &mut String, svg: &str) {
    let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
}

/// Role x closer x FIN/RST per service and destination.
fn close_matrix(out: &mut String, ev: &Evidence) {
    let mut rows: Vec<(String, &str, &Closes)> = ev
        .services
        .iter()
        .map(|(&(ns, port), c)| (format!("{}: port {port}", ev.label_of(ns)), "server", c))
        .chain(ev.destinations.iter().map(|(k, c)| {
            let to = format!(
                "{}: {} -> {}",
                ev.label_of(k.netns),
                k.laddr,
                endpoint(k.raddr, k.rport)
            );
            (to, "client", c)
        }))
        .collect();
    if rows.is_empty() {
        return;
    }
    rows.sort_by(|a, b| b.2.n.cmp(&a.2.n).then(a.0.cmp(&b.0)));
    rows.truncate(MATRIX_ROWS);
    out.push_str(
        "<h2>Who closes, and how</h2>\n<table><tr><th>connections</th><th>role</th>\
         <th>closes</th><th>closed first here</th><th>by the peer</th><th>FIN</th>\
         <th>RST sent</th><th>RST received</th><th>TIME_WAIT here</th></tr>",
    );
    for (name, role, c) in rows {
        let k = |kind: CloseKind| c.by_kind[kind as usize];
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{role}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            h(&name),
            c.n,
            c.by_closer[0],
            c.by_closer[1],
            k(CloseKind::Fin),
            k(CloseKind::RstSent),
            k(CloseKind::RstReceived),
            c.time_wait
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_cannot_open_a_tag() {
        assert_eq!(h("<script>\x1b\"'&"), "&lt;script&gt;\\x1b&quot;&#39;&amp;");
    }

    #[test]
    fn a_page_has_the_findings_and_four_charts() {
        let ev = Evidence {
            window_s: 3.0,
            tw_len_s: 60.0,
            ..Evidence::default()
        };
        let findings = crate::diagnose::findings::diagnose(&ev, 0.5);
        let page = page(&Report::new(&findings, &ev, "live", None), &ev, &[]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("INFO healthy"), "{page}");
        // No pools: TIME_WAIT and lifetimes only.
        assert_eq!(page.matches("<svg").count(), 2, "{page}");
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "no external assets"
        );
    }
}
