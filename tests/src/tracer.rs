//! Runs the real `tcpstate` binary and collects its JSON Lines.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use serde_json::Value;

/// The binary under test, built by `cargo xtask test`.
pub fn bin() -> PathBuf {
    let path = std::env::var_os("TCPSTATE_BIN")
        .map(PathBuf::from)
        .expect("TCPSTATE_BIN is not set: run the integration tests through `cargo xtask test`");
    assert!(
        path.is_file(),
        "TCPSTATE_BIN={} does not exist",
        path.display()
    );
    path
}

/// Runs `tcpstate ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running tcpstate")
}

/// Reads tcpstate's stderr up to its `tcpstate: tracing` line, which it
/// prints once its programs are attached. Lines before it (warnings about
/// the kernel, say) are passed on; an error line or the end of stderr is
/// returned as the error.
pub fn wait_until_tracing(stderr: &mut impl BufRead) -> Result<(), String> {
    let mut line = String::new();
    loop {
        line.clear();
        match stderr.read_line(&mut line) {
            Ok(0) => return Err("stderr ended before tracing started".into()),
            Ok(_) if line.starts_with("tcpstate: tracing") => return Ok(()),
            Ok(_) if line.contains("error") => return Err(line.trim_end().into()),
            Ok(_) => eprintln!("[tcpstate stderr] {}", line.trim_end()),
            Err(e) => return Err(format!("reading stderr: {e}")),
        }
    }
}

/// A running `tcpstate ... --json`.
pub struct Tracer {
    child: Child,
    stdout: thread::JoinHandle<Vec<String>>,
}

impl Tracer {
    /// Starts `tcpstate ARGS` and waits until its programs are attached.
    pub fn start(args: &[&str]) -> Tracer {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Tracer::start_command(cmd)
    }

    /// [`Tracer::start`] of a command set up by the caller (its
    /// scheduling, say).
    pub fn start_command(mut cmd: Command) -> Tracer {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tcpstate");
        let stdout = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect()
        });
        let stderr = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let ready = wait_until_tracing(&mut stderr);
            let _ = ready_tx.send(ready);
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[tcpstate stderr] {line}");
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(line)) => panic!("tcpstate failed to start: {line}"),
            Err(_) => panic!("tcpstate did not attach within 30 s"),
        }
        Tracer { child, stdout }
    }

    /// Its process, to signal.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Stops it with SIGINT (as Ctrl-C would), waits for it to exit 0,
    /// and returns every JSON object it printed.
    pub fn stop(self) -> Vec<Value> {
        self.stop_with(nix::sys::signal::Signal::SIGINT)
    }

    /// Stops it with `signal`, as [`Tracer::stop`] does with SIGINT.
    pub fn stop_with(self, signal: nix::sys::signal::Signal) -> Vec<Value> {
        // Let the last events reach the ring buffer and be polled.
        thread::sleep(Duration::from_millis(200));
        nix::sys::signal::kill(self.pid(), signal).expect("signalling tcpstate");
        self.finish()
    }

    /// Waits for it to exit by itself (`--count`, `--duration`, `--once`).
    pub fn finish(self) -> Vec<Value> {
        self.finish_at().0
    }

    /// [`Tracer::finish`], and when it exited.
    pub fn finish_at(mut self) -> (Vec<Value>, std::time::Instant) {
        let status = self.child.wait().expect("waiting for tcpstate");
        let exited = std::time::Instant::now();
        assert!(status.success(), "tcpstate exited with {status}");
        let lines = self.stdout.join().expect("stdout reader");
        let objects = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        (objects, exited)
    }
}

/// The objects of one `"type"`.
pub fn of_type<'a>(objects: &'a [Value], ty: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["type"] == ty).collect()
}

/// The summary object, which must be last.
pub fn summary(objects: &[Value]) -> &Value {
    let last = objects.last().expect("no output at all");
    assert_eq!(last["type"], "summary", "last object is not the summary");
    last
}
