//! What a guest reports on its second serial port: each test executable's
//! output and exit status between markers, then an end marker; and what
//! libtest's output says (counts, the failed tests and their output).

/// The markers `/init` writes around each executable's output and at the end.
pub const BEGIN: &str = "@@tcpstate-begin ";
pub const END: &str = "@@tcpstate-end ";
pub const DONE: &str = "@@tcpstate-done";

/// One test executable's run.
#[derive(Debug, PartialEq, Eq)]
pub struct Executable {
    pub name: String,
    /// Its exit status (timeout's 124 or 128 + a signal included).
    pub status: i32,
    pub output: String,
}

/// A guest's results file, parsed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Results {
    pub executables: Vec<Executable>,
    /// Whether the end marker came: every executable was run.
    pub done: bool,
}

/// Parses the results file (the serial port may add carriage returns).
pub fn parse(text: &str) -> Results {
    let mut results = Results::default();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(name) = line.strip_prefix(BEGIN) {
            current = Some((name.to_string(), Vec::new()));
        } else if let Some(rest) = line.strip_prefix(END) {
            let Some((name, lines)) = current.take() else {
                continue;
            };
            let status = rest
                .rsplit_once(' ')
                .filter(|(n, _)| *n == name)
                .and_then(|(_, s)| s.parse().ok());
            if let Some(status) = status {
                results.executables.push(Executable {
                    name,
                    status,
                    output: lines.join("\n"),
                });
            }
        } else if line == DONE {
            results.done = true;
        } else if let Some((_, lines)) = &mut current {
            lines.push(line);
        }
    }
    results
}

impl Executable {
    /// The tests that passed and failed, from libtest's summary lines.
    pub fn counts(&self) -> (u32, u32) {
        let mut counts = (0, 0);
        for line in self.output.lines() {
            let Some(summary) = line.strip_prefix("test result: ") else {
                continue;
            };
            for part in summary.split([';', '.']) {
                let mut words = part.split_whitespace();
                match (
                    words.next().and_then(|n| n.parse::<u32>().ok()),
                    words.next(),
                ) {
                    (Some(n), Some("passed")) => counts.0 += n,
                    (Some(n), Some("failed")) => counts.1 += n,
                    _ => {}
                }
            }
        }
        counts
    }

    /// The names of the failed tests, and their output as libtest printed
    /// it (its `failures:` section); without one (the executable crashed
    /// or timed out), the end of the output.
    pub fn failures(&self) -> (Vec<String>, String) {
        const TAIL: usize = 30;
        let lines: Vec<&str> = self.output.lines().collect();
        let sections: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i] == "failures:")
            .collect();
        let &[details, list, ..] = sections.as_slice() else {
            let start = lines.len().saturating_sub(TAIL);
            return (Vec::new(), lines[start..].join("\n"));
        };
        let names = lines[list + 1..]
            .iter()
            .map_while(|l| l.strip_prefix("    "))
            .map(str::to_string)
            .collect();
        (
            names,
            lines[details + 1..list].join("\n").trim().to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED: &str = "\nrunning 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ok\n\n\
        failures:\n\n---- b stdout ----\n\nthread 'b' panicked at tests/b.rs:1:1:\nboom\n\n\
        failures:\n    b\n\ntest result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; \
        0 filtered out; finished in 1.00s\n";

    #[test]
    fn results_file_is_parsed() {
        let text = format!(
            "{BEGIN}errors\r\n\r\nrunning 1 test\r\ntest x ... ok\r\n\r\n\
             test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\r\n\r\n\
             {END}errors 0\r\n{BEGIN}watch\n{FAILED}\n{END}watch 101\n{DONE}\n"
        );
        let results = parse(&text);
        assert!(results.done);
        let [errors, watch] = &results.executables[..] else {
            panic!("{results:?}")
        };
        assert_eq!((errors.name.as_str(), errors.status), ("errors", 0));
        assert_eq!(errors.counts(), (1, 0));
        assert_eq!((watch.name.as_str(), watch.status), ("watch", 101));
        assert_eq!(watch.counts(), (2, 1));
        let (names, output) = watch.failures();
        assert_eq!(names, ["b"]);
        assert!(output.starts_with("---- b stdout ----"));
        assert!(output.ends_with("boom"));
    }

    #[test]
    fn cut_off_results_are_not_done() {
        let results = parse(&format!("{BEGIN}errors\nrunning 1 test\n"));
        assert_eq!(results, Results::default());
        let crashed = Executable {
            name: "x".into(),
            status: 124,
            output: "running 1 test\ntest slow ...".into(),
        };
        assert_eq!(crashed.counts(), (0, 0));
        assert_eq!(crashed.failures(), (vec![], crashed.output.clone()));
    }
}
