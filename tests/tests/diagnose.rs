//! `tcpstate diagnose` on real traffic in network namespaces: each
//! scenario's finding, where it is, what it rests on, and its first fix;
//! the same findings from a recording; the exit status.

use std::{
    io::{BufReader, Read},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use tcpstate_tests::{
    kernel::{self, set_sysctl},
    netns::NetNs,
    require_root, slowdown,
    tcp::{self, Pattern},
    tracer::{self, Tracer, bin, of_type},
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Names the calling thread, as a process names itself.
fn name_thread(name: &str) {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) }, 0);
}

/// A running `tcpstate diagnose --json ARGS`, tracing.
struct Diagnose(Child);

impl Diagnose {
    fn start(args: &[&str]) -> Diagnose {
        let mut child = Command::new(bin())
            .arg("diagnose")
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tcpstate diagnose");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        tracer::wait_until_tracing(&mut stderr).expect("diagnose did not start");
        thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::stderr()));
        Diagnose(child)
    }

    /// Its findings and summary, its exit status, and when it ended.
    fn finish(mut self) -> (Vec<Value>, i32, Instant) {
        let mut out = String::new();
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.0.wait().unwrap();
        let ended = Instant::now();
        let objects = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        (objects, status.code().expect("an exit status"), ended)
    }
}

/// The seconds a test observes for, stretched on a slow guest.
fn secs(s: u32) -> String {
    (s * slowdown()).to_string()
}

fn findings_of<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    of_type(objects, "finding")
        .into_iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn the_finding<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = findings_of(objects, kind);
    assert_eq!(
        found.len(),
        1,
        "one {kind} finding expected in {objects:#?}"
    );
    found[0]
}

fn actions(finding: &Value) -> Vec<&str> {
    finding["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["action"].as_str().unwrap())
        .collect()
}

/// Serves `listener` from a thread named `name`: each connection is read to
/// its end, then closed (the client closes first).
fn serve_until_eof(listener: TcpListener, name: &'static str) {
    thread::spawn(move || {
        name_thread(name);
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    });
}

/// Connects to `addr` `rate` times a second from a thread named
/// `tsclient`, closing each connection first, until `connect()` fails for
/// want of a local port: the time from the start to that failure.
fn clients_until_exhausted(addr: SocketAddr, rate: f64, start: Instant) -> Duration {
    name_thread("tsclient");
    for i in 1u32.. {
        match TcpStream::connect(addr) {
            Ok(stream) => drop(stream),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return start.elapsed(),
            Err(e) => panic!("connect: {e}"),
        }
        let next = start + Duration::from_secs_f64(f64::from(i) / rate);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    unreachable!()
}

/// A client closing first at a fixed rate into a 500-port range without
/// `tcp_tw_reuse`: diagnosed critical before the first failure, with the
/// time to exhaustion within 20% of the measured one, the process named,
/// keep-alive first and `tcp_tw_reuse` offered.
#[test]
fn client_side_exhaustion_is_critical_before_connect_fails() {
    require_root();
    let ns = NetNs::new("tcpstate-test-diag-exhaust");
    set_sysctl(&ns, "net.ipv4.ip_local_port_range", "40000 40499");
    set_sysctl(&ns, "net.ipv4.tcp_tw_reuse", "0");
    let netns = ns.inode().to_string();
    let diagnose = Diagnose::start(&["--netns", &netns, "--duration", &secs(2)]);
    let start = Instant::now();
    // 100 a second, 10 on a slow guest: the 500 ports last 5 s (50 s).
    let rate = 100.0 / f64::from(slowdown());
    let failed_after = ns.run(|| {
        let listener = tcp::listen(V4);
        let addr = listener.local_addr().unwrap();
        serve_until_eof(listener, "tsserver");
        let clients = thread::spawn(move || clients_until_exhausted(addr, rate, start));
        let verdict = diagnose.finish();
        (verdict, clients.join().unwrap())
    });
    let ((objects, code, ended), failed_after) = failed_after;
    let observed = ended - start;
    assert!(
        observed < failed_after,
        "the verdict came after connect() failed"
    );
    assert_eq!(code, 4, "critical: {objects:#?}");
    let f = the_finding(&objects, "port_exhaustion");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["netns"], ns.inode());
    assert_eq!(f["where"]["processes"][0], "tsclient", "{f:#}");
    let eta = f["evidence"]["seconds_to_exhaustion"].as_f64().unwrap();
    let predicted = observed.as_secs_f64() + eta;
    let measured = failed_after.as_secs_f64();
    assert!(
        (predicted - measured).abs() <= 0.2 * measured,
        "predicted exhaustion at {predicted:.1} s, measured {measured:.1} s: {f:#}"
    );
    let fixes = actions(f);
    assert_eq!(fixes[0], "keep_alive", "{f:#}");
    assert!(fixes.contains(&"tcp_tw_reuse"), "{f:#}");
    assert!(fixes.contains(&"ip_local_port_range"), "{f:#}");
}

/// Runs `n` connections to `listener` with `pattern` from a thread named
/// `name`.
fn connections(listener: &TcpListener, pattern: Pattern, n: usize, name: &str) {
    thread::scope(|scope| {
        scope.spawn(|| {
            name_thread(name);
            for _ in 0..n {
                tcp::connect(listener, pattern);
            }
        });
    });
}

/// A server that closes first holds the TIME_WAIT: `server_closes_first`
/// on its namespace and port, no port finding, no `tcp_tw_reuse`.
#[test]
fn a_server_closing_first_is_named_and_not_told_to_reuse() {
    require_root();
    let ns = NetNs::new("tcpstate-test-diag-server");
    let netns = ns.inode().to_string();
    let diagnose = Diagnose::start(&["--netns", &netns, "--duration", &secs(2)]);
    let port = ns.run(|| {
        let listener = tcp::listen(V4);
        connections(&listener, Pattern::ServerFirst, 300, "tsserver");
        listener.local_addr().unwrap().port()
    });
    let (objects, code, _) = diagnose.finish();
    let f = the_finding(&objects, "server_closes_first");
    assert_eq!(f["netns"], ns.inode());
    assert_eq!(f["where"]["lport"], port);
    assert_eq!(f["evidence"]["time_wait"], 300, "{f:#}");
    for kind in ["port_exhaustion", "port_pressure"] {
        assert!(findings_of(&objects, kind).is_empty(), "{objects:#?}");
    }
    for f in of_type(&objects, "finding") {
        assert!(!actions(f).contains(&"tcp_tw_reuse"), "{f:#}");
    }
    assert_eq!(code, 0, "information only: {objects:#?}");
}

/// A listener on `addr` without SO_REUSEADDR (Rust's own sets it).
fn listen_without_reuse(addr: SocketAddr) -> TcpListener {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(128).unwrap();
    socket.into()
}

/// A `bind()` to `addr` without SO_REUSEADDR from a thread named `name`:
/// its error.
fn bind_from(addr: SocketAddr, name: &str) -> std::io::Error {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                name_thread(name);
                let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                socket.bind(&addr.into()).expect_err("bind() should fail")
            })
            .join()
            .unwrap()
    })
}

/// A server restarted over its own TIME_WAIT sockets, without
/// SO_REUSEADDR: `bind_in_use`, critical, on its port and process, with
/// the TIME_WAIT sockets that hold it and SO_REUSEADDR as the fix; a port
/// a live listener holds is a warning with no TIME_WAIT fix.
#[test]
fn a_server_restarting_over_its_time_wait_is_told_to_set_so_reuseaddr() {
    require_root();
    let ns = NetNs::new("tcpstate-test-diag-bind");
    let netns = ns.inode().to_string();
    let diagnose = Diagnose::start(&["--netns", &netns, "--duration", &secs(2)]);
    let (restarted, held) = ns.run(|| {
        let listener = listen_without_reuse(SocketAddr::new(V4, 0));
        let restarted = listener.local_addr().unwrap();
        connections(&listener, Pattern::ServerFirst, 20, "tsserver");
        drop(listener);
        let err = bind_from(restarted, "restarter");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
        let live = listen_without_reuse(SocketAddr::new(V4, 0));
        let held = live.local_addr().unwrap();
        let err = bind_from(held, "second");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
        (restarted.port(), held.port())
    });
    let (objects, code, _) = diagnose.finish();
    let binds = findings_of(&objects, "bind_in_use");
    assert_eq!(binds.len(), 2, "{objects:#?}");
    let f = binds
        .iter()
        .find(|f| f["where"]["lport"] == restarted)
        .unwrap();
    assert_eq!(f["severity"], "critical", "{f:#}");
    assert_eq!(f["netns"], ns.inode());
    assert_eq!(f["where"]["processes"][0], "restarter", "{f:#}");
    assert_eq!(f["evidence"]["time_wait_on_port"], 20, "{f:#}");
    assert_eq!(f["evidence"]["without_reuseaddr"], 1, "{f:#}");
    assert_eq!(actions(f)[0], "so_reuseaddr", "{f:#}");
    let f = binds.iter().find(|f| f["where"]["lport"] == held).unwrap();
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert_eq!(f["where"]["processes"][0], "second", "{f:#}");
    assert_eq!(actions(f), ["find_holder"], "{f:#}");
    assert_eq!(code, 4, "critical: {objects:#?}");
}

/// The overflow and reset scenario: 150 server-first closes into 50
/// buckets, and 50 connections a process named `aborter` makes, accepts
/// and ends with RST.
fn overflow_and_resets(ns: &NetNs) {
    ns.run(|| {
        let listener = tcp::listen(V4);
        connections(&listener, Pattern::ServerFirst, 150, "tsserver");
        connections(&listener, Pattern::ClientReset, 50, "aborter");
    });
}

/// TIME_WAIT buckets full and resets, live and from a recording of the
/// same traffic: `timewait_overflow` with the kernel's refused count,
/// `rst_closes` naming the process, and the same findings both ways.
#[test]
fn overflow_and_resets_live_and_from_a_recording() {
    require_root();
    let ns = NetNs::new("tcpstate-test-diag-overflow");
    // Few enough connections that a slow guest makes them well within a
    // TIME_WAIT length: a bucket freed by an expiry would take a close.
    set_sysctl(&ns, "net.ipv4.tcp_max_tw_buckets", "50");
    let before = kernel::nstat(&ns, "TcpExtTCPTimeWaitOverflow");
    let netns = ns.inode().to_string();
    let diagnose = Diagnose::start(&["--netns", &netns, "--duration", &secs(3)]);
    let recorder = Tracer::start(&["watch", "--json", "--netns", &netns]);
    overflow_and_resets(&ns);
    let recording = recorder.stop();
    let (live, code, _) = diagnose.finish();
    let refused = kernel::nstat(&ns, "TcpExtTCPTimeWaitOverflow") - before;
    // 100 for 50 buckets and 150 server closes, or a few fewer: a bucket
    // the kernel frees meanwhile (an expiry on a slow guest; once, on
    // 6.18 under emulation, 12 of 200) takes a close. tcpstate must count
    // what the kernel counted either way.
    assert!(
        (80..=100).contains(&refused),
        "50 buckets, 150 server closes: {refused}"
    );
    assert_eq!(code, 4, "{live:#?}");

    let overflow = the_finding(&live, "timewait_overflow");
    assert_eq!(overflow["severity"], "critical");
    assert_eq!(overflow["netns"], ns.inode());
    assert_eq!(overflow["evidence"]["tw_refused"], refused, "{overflow:#}");
    assert_eq!(overflow["evidence"]["tcp_max_tw_buckets"], 50);
    // The process that sends them, and receives them: the `aborter`
    // thread connected and accepted both ends.
    let resets = findings_of(&live, "rst_closes");
    let sender = resets
        .iter()
        .find(|f| f["where"]["processes"][0] == "aborter")
        .unwrap_or_else(|| panic!("no rst_closes for aborter: {resets:#?}"));
    // All 50, or nearly: under emulation the kernel now and then reports
    // no reset for one (seen once in 5.10: 49).
    let lost = live.last().unwrap()["lost"].as_u64().unwrap();
    let (sent, received) = (
        sender["evidence"]["rst_sent"].as_u64().unwrap(),
        sender["evidence"]["rst_received"].as_u64().unwrap(),
    );
    assert!((45..=50).contains(&sent), "{sender:#} lost {lost}");
    assert!((45..=50).contains(&received), "{sender:#} lost {lost}");
    assert_eq!(
        actions(sender),
        ["close_with_fin", "check_peers"],
        "{sender:#}"
    );

    // The recording, through --input on stdin.
    assert_eq!(recording[0]["type"], "host", "no host object first");
    let text: String = recording.iter().map(|o| o.to_string() + "\n").collect();
    let mut child = Command::new(bin())
        .args(["diagnose", "--json", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || std::io::Write::write_all(&mut stdin, text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let replayed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdicts = |objects: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = of_type(objects, "finding")
            .iter()
            .map(|f| {
                format!(
                    "{} {} {} {}",
                    f["kind"], f["severity"], f["netns"], f["where"]
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(verdicts(&replayed), verdicts(&live));
    assert_eq!(
        the_finding(&replayed, "timewait_overflow")["evidence"]["tw_refused"],
        refused
    );
}

/// Nothing happening: `healthy` alone, exit status 0.
#[test]
fn a_quiet_namespace_is_healthy() {
    require_root();
    let ns = NetNs::new("tcpstate-test-diag-quiet");
    let netns = ns.inode().to_string();
    let (objects, code, _) = Diagnose::start(&["--netns", &netns, "--duration", "1"]).finish();
    let findings = of_type(&objects, "finding");
    assert_eq!(findings.len(), 1, "{objects:#?}");
    assert_eq!(findings[0]["kind"], "healthy");
    assert_eq!(code, 0);
    let summary = objects.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["severity"], "info");
    assert_eq!(summary["source"], "live");
}
