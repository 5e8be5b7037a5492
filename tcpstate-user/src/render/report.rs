//! The text layout of `diagnose`'s report: one block per finding, most
//! severe first, wrapped to 80 columns, everything from outside escaped.

use std::fmt::Write as _;

use super::{Report, escape::escape_str};
use crate::diagnose::findings::{Finding, Place, Value};

/// Columns the report fits in.
const WIDTH: usize = 80;
/// Where a block's values begin, after its labels.
const INDENT: usize = 12;
/// Fixes shown per finding: the report stays about a screen.
const FIXES_SHOWN: usize = 3;

/// The whole report.
pub fn render(r: &Report<'_>) -> String {
    let mut out = r.headline();
    out.push('\n');
    if r.lost > 0 {
        line(
            &mut out,
            "lost",
            &format!("{} events were lost: the figures may be low", r.lost),
        );
    }
    for gap in r.gaps {
        line(&mut out, "note", &format!("the recording: {gap}"));
    }
    for f in r.findings {
        out.push('\n');
        finding(&mut out, f);
    }
    out
}

fn finding(out: &mut String, f: &Finding) {
    let mut head = format!("{} {}", f.severity.as_str().to_uppercase(), f.kind.as_str());
    if let Some(name) = &f.place.netns_name {
        let _ = write!(head, " in {}", escape_str(name));
        if let Some(ns) = f.place.netns
            && !name.starts_with("net:[")
        {
            let _ = write!(head, " (net:[{ns}])");
        }
    }
    out.push_str(&head);
    out.push('\n');
    wrap(out, "", &escape_str(&f.what), 2);
    if let Some(place) = place(&f.place) {
        line(out, "where", &place);
    }
    let evidence: Vec<String> = f
        .evidence
        .iter()
        .map(|(name, v)| format!("{name} {}", value(v)))
        .collect();
    line(out, "evidence", &evidence.join(", "));
    line(out, "impact", &escape_str(&f.consequence));
    for (i, fix) in f.fixes.iter().take(FIXES_SHOWN).enumerate() {
        line(out, &format!("fix {}", i + 1), &escape_str(&fix.detail));
    }
    let more = f.fixes.len().saturating_sub(FIXES_SHOWN);
    if more > 0 {
        line(out, "", &format!("({more} more in --json and --html)"));
    }
}

fn place(p: &Place) -> Option<String> {
    let mut parts = Vec::new();
    parts.extend(p.pool());
    if let Some(local) = p.local() {
        parts.push(format!("local {local}"));
    }
    if !p.processes.is_empty() {
        let names: Vec<_> = p.processes.iter().map(|n| escape_str(n)).collect();
        parts.push(format!("process {}", names.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn value(v: &Value) -> String {
    match v {
        Value::Count(n) => n.to_string(),
        Value::Real(x) => format!("{x:.1}"),
        Value::Share(x) => format!("{:.0}%", x * 100.0),
        Value::Text(t) => escape_str(t).into_owned(),
    }
}

/// `label` then `text`, wrapped with a hanging indent.
fn line(out: &mut String, label: &str, text: &str) {
    let first = format!("  {label:<width$}", width = INDENT - 2);
    wrap(out, &first, text, INDENT);
}

/// `text` after `first` (or after `indent` spaces when `first` is empty),
/// wrapped at word boundaries to [`WIDTH`], continued at `indent`.
fn wrap(out: &mut String, first: &str, text: &str, indent: usize) {
    let mut col = if first.is_empty() {
        out.push_str(&" ".repeat(indent));
        indent
    } else {
        out.push_str(first);
        first.chars().count()
    };
    let start = col;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let len = word.chars().count();
        if col > start && col + 1 + len > WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            col = indent;
        } else if col > start {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::findings::{Fix, Kind, Severity};

    #[test]
    fn a_finding_fits_in_80_columns_and_outside_names_are_escaped() {
        let f = Finding {
            kind: Kind::PortExhaustion,
            severity: Severity::Critical,
            what: "connect() toward 127.0.0.1:7000 will run out of local ports in about 10 s"
                .into(),
            place: Place {
                netns: Some(42),
                netns_name: Some("client".into()),
                laddr: "127.0.0.1".parse().ok(),
                raddr: "127.0.0.1".parse().ok(),
                rport: Some(7000),
                processes: vec!["evil\x1b[2J".into()],
                ..Place::default()
            },
            evidence: vec![
                ("time_wait_per_s", Value::Real(50.0)),
                ("used", Value::Share(0.5)),
                ("ports", Value::Count(1000)),
            ],
            consequence: "x ".repeat(60),
            fixes: vec![
                Fix {
                    action: "keep_alive",
                    detail: "reuse connections in evil\x1b[2J".into(),
                };
                4
            ],
        };
        let text = render(&Report {
            findings: &[f],
            source: "live",
            observed_s: 10.0,
            events: Some(5),
            lost: 0,
            gaps: &[],
        });
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("process evil\\x1b[2J"), "{text}");
        assert!(
            text.starts_with(
                "tcpstate diagnose: 1 finding from 10 s of tracing, worst: critical\n\n\
                 CRITICAL port_exhaustion in client (net:[42])\n  connect() toward"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n  evidence  time_wait_per_s 50.0, used 50%, ports 1000\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  fix 1     reuse connections in evil\\x1b[2J\n"),
            "{text}"
        );
    }
}
