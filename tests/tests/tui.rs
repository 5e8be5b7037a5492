//! The full-screen `timewait` view in a real terminal: tmux runs it at
//! 80x24 with traffic in a namespace; keys go in with `send-keys`, the
//! screen comes out with `capture-pane`.

use std::{
    net::{Ipv4Addr, TcpListener},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use tcpstate_tests::{
    netns::NetNs,
    require_root, slowdown,
    tcp::{self, Pattern},
    tracer,
};

/// A tmux server of the test's own, with one session.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("tcpstate-test-{}", std::process::id()),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "80",
            "-y",
            "24",
            command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("running tmux: install Debian's tmux package (`cargo xtask test` does)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.run(&["send-keys", "-t", "t", "--", key]);
            thread::sleep(Duration::from_millis(150));
        }
    }

    /// The screen once `ok` holds for it (within 10 s).
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10) * slowdown();
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not on screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn keys_steer_the_view_and_quitting_restores_the_terminal() {
    require_root();
    let ns = NetNs::new("tcpstate-test-tui");
    let command = format!(
        "{} timewait --netns {}; echo EXITED $?; sleep 600",
        tracer::bin().display(),
        ns.name
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("the view", |s| s.contains("TIME_WAIT by peer"));
    let port = ns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).unwrap();
        for _ in 0..100 {
            tcp::connect(&listener, Pattern::ClientFirst);
        }
        listener.local_addr().unwrap().port()
    });
    let screen = tmux.wait_for("100 TIME_WAIT sockets", |s| s.starts_with("TIME_WAIT 100 "));
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines.len() <= 24, "{screen}");
    assert!(lines.iter().all(|l| l.chars().count() <= 80), "{screen}");
    assert!(
        screen.contains("port pools, worst first (1 in all)"),
        "{screen}"
    );
    // The namespace's name, cut in the middle to its column.
    assert!(screen.contains("tcpstat…st-tui 127.0.0.1 -> "), "{screen}");
    assert!(
        screen.contains(&format!("127.0.0.1 -> 127.0.0.1:{port}")),
        "{screen}"
    );

    // Grouping: peer -> local port -> process -> namespace -> entry.
    tmux.keys(&["g"]);
    tmux.wait_for("by local port", |s| s.contains("TIME_WAIT by local port"));
    tmux.keys(&["g", "g", "g"]);
    let screen = tmux.wait_for("one row per entry", |s| s.contains("TIME_WAIT by entry"));
    assert!(screen.contains("(1-"), "{screen}");
    // Sorting, and scrolling a page of 100 rows.
    tmux.keys(&["s"]);
    tmux.wait_for("sorted by rate", |s| s.contains("sorted by rate"));
    tmux.keys(&["End"]);
    tmux.wait_for("scrolled to the end", |s| {
        s.contains(" of 100)") && !s.contains("(1-")
    });
    // Detail of the selected row, and help.
    tmux.keys(&["Enter"]);
    tmux.wait_for("the detail pane", |s| s.contains("close matrix"));
    tmux.keys(&["?"]);
    tmux.wait_for("the keys", |s| s.contains("q, Ctrl-C  quit"));
    tmux.keys(&["Escape"]);
    // A filter, in the command line's own syntax.
    tmux.keys(&["g", "/", "--lport", " ", "1-1024", "Enter"]);
    let screen = tmux.wait_for("the filter", |s| s.contains("filter --lport 1-1024"));
    assert!(
        screen.contains("(0-0 of 0)"),
        "no entry has a local port below 1025: {screen}"
    );
    tmux.keys(&["/", "--nonsense", "Enter"]);
    tmux.wait_for("a refused filter", |s| s.contains("filter refused:"));
    tmux.keys(&["/", "Enter"]);
    tmux.wait_for("the filter cleared", |s| {
        s.contains("TIME_WAIT by peer, sorted by rate (")
    });

    tmux.keys(&["q"]);
    let screen = tmux.wait_for("the exit", |s| s.contains("EXITED 0"));
    assert!(
        !screen.contains("TIME_WAIT by"),
        "the view is left: {screen}"
    );
    assert!(
        screen.contains(" events, "),
        "the summary follows: {screen}"
    );
    assert!(
        tmux.run(&["display", "-p", "-t", "t", "#{alternate_on}"])
            .trim()
            == "0",
        "the alternate screen is off"
    );
}
