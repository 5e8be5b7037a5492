//! Errors a user can cause: one clear line, a non-zero exit, no panic.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr},
    process::{Command, Stdio},
    time::Duration,
};

use tcpstate_tests::{
    require_root,
    tcp::{self, Pattern},
    tracer::{self, bin},
};

fn one_line_error(out: &std::process::Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("tcpstate: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
}

#[test]
fn invalid_values_and_conflicting_flags() {
    for (args, needle) in [
        (&["watch", "--lport", "0"][..], "1 to 65535"),
        (&["watch", "--rport", "99999"], "1 to 65535"),
        (&["watch", "--laddr", "300.1.1.1/8"], "CIDR"),
        (&["watch", "--pid", "nope"], "process id"),
        (&["watch", "-4", "-6"], "cannot be used with"),
        (&["watch", "--count", "0"], "--count"),
        (&["serve", "--close-labels", "role,pid"], "no label \"pid\""),
        (&["serve", "--listen", "localhost"], "--listen"),
        (&["serve", "--reconcile", "0"], "--reconcile 0"),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        one_line_error(&tracer::run(args), 2, needle);
    }
}

/// Runs `tcpstate ARGS` as user nobody, without capabilities.
fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin())
        .args(args)
        .output()
        .expect("running setpriv")
}

/// `serve` on an address another socket holds: refused before tracing.
#[test]
fn serve_on_a_taken_port_names_the_address_and_the_fix() {
    require_root();
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tracer::run(&["serve", "--listen", &addr]);
    one_line_error(
        &out,
        1,
        &format!("listening on {addr}: choose another address"),
    );
}

#[test]
fn unprivileged_user_is_told_what_is_missing() {
    let out = as_nobody(&["watch"]);
    one_line_error(&out, 1, "missing CAP_BPF and CAP_PERFMON");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run tcpstate as root"));
}

#[test]
fn timewait_once_needs_to_enter_namespaces() {
    let out = as_nobody(&["timewait", "--once"]);
    one_line_error(&out, 1, "missing CAP_SYS_ADMIN");
}

#[test]
fn missing_capability_is_named() {
    require_root();
    // Root without CAP_PERFMON and CAP_SYS_ADMIN: only CAP_PERFMON is missing.
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-perfmon,-sys_admin",
            "--bounding-set=-perfmon,-sys_admin",
        ])
        .arg(bin())
        .arg("watch")
        .output()
        .expect("running setpriv");
    one_line_error(&out, 1, "missing CAP_PERFMON");
}

#[test]
fn mounts_tracefs_when_it_is_not_mounted() {
    require_root();
    // In a private mount namespace, so that the tests running beside this
    // one keep the host's tracefs.
    let script = r#"set -e
        while umount /sys/kernel/tracing 2>/dev/null; do :; done
        # Nor through debugfs, where tcpstate would find it too (one
        # mount at a time: busybox's umount has no -R).
        while umount /sys/kernel/debug/tracing 2>/dev/null; do :; done
        while umount /sys/kernel/debug 2>/dev/null; do :; done
        if [ -e /sys/kernel/tracing/events ]; then echo "tracefs still mounted" >&2; exit 90; fi
        "$1" watch --json --duration 0.5 >/dev/null
        if [ ! -d /sys/kernel/tracing/events ]; then echo "tracefs not mounted" >&2; exit 91; fi"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(bin())
        .output()
        .expect("running unshare");
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::path::Path::new("/sys/kernel/tracing/events").is_dir());
}

#[test]
fn closed_pipe_ends_quietly_with_status_zero() {
    require_root();
    let listener = tcp::listen(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = listener.local_addr().unwrap().port().to_string();
    let mut child = Command::new(bin())
        .args(["watch", "--lport", &port])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    tracer::wait_until_tracing(&mut stderr).expect("tcpstate did not start");
    // Like `| head -1`: read the header, then close the pipe.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    tcp::connect(&listener, Pattern::ServerFirst);
    let mut header = String::new();
    stdout.read_line(&mut header).unwrap();
    assert!(header.starts_with("TIME(UTC)"), "{header}");
    drop(stdout);
    for _ in 0..50 {
        tcp::connect(&listener, Pattern::ServerFirst);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(
        !rest.contains("error") && !rest.contains("panicked"),
        "{rest}"
    );
}
