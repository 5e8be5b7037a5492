//! `tcpstate serve` as a fleet runs it: a real Prometheus server scrapes
//! it and evaluates the shipped alerting rules; `promtool` lints the
//! scrapes and the rules; the shipped systemd unit's capabilities are
//! enough; labels stay bounded; memory stays flat while namespaces come
//! and go. The kernel (`ss`) and the client's own failures are the oracles.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use tcpstate_tests::{
    http::{self, free_port},
    kernel::{self, set_sysctl},
    netns::NetNs,
    prometheus::{self, Prometheus},
    require_root,
    tcp::{self, Pattern},
    tracer::{self, Tracer},
};

/// Calls `f` until it is true, for at most `within`.
fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(250));
    }
}

/// A `tcpstate serve --json` on a free loopback port; its address.
fn serve(args: &[&str]) -> (Tracer, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut all = vec!["serve", "--json", "--listen", &addr];
    all.extend_from_slice(args);
    let tracer = Tracer::start(&all);
    let healthz = format!("http://{addr}/healthz");
    wait_for(Duration::from_secs(10), "the first snapshot", || {
        http::get(&healthz).is_ok_and(|r| r.status == 200)
    });
    (tracer, addr)
}

/// The metric names a scrape in the Prometheus text format declares or
/// samples.
fn metric_names(scrape: &str) -> Vec<String> {
    let mut names: Vec<String> = scrape
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The `tcpstate_...` names an alerting rule or dashboard refers to.
fn referenced_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("tcpstate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

/// The exhaustion scenario of a container host, seen through Prometheus:
/// a client in a namespace of 300 local ports, closing first at 8
/// connections a second without `tcp_tw_reuse`, runs out after ~37 s.
/// The shipped rule for imminent exhaustion must fire before the first
/// `connect()` fails; then the failures Prometheus has equal those the
/// client saw, and its TIME_WAIT count equals the kernel's.
#[test]
fn prometheus_sees_the_kernels_figures_and_alerts_before_connect_fails() {
    require_root();
    let ns = NetNs::new("tcpstate-test-serve");
    set_sysctl(&ns, "net.ipv4.ip_local_port_range", "40000 40299");
    set_sysctl(&ns, "net.ipv4.tcp_tw_reuse", "0");
    let (tracer, addr) = serve(&["--interval", "1"]);
    let prom = Prometheus::start(&addr);
    wait_for(Duration::from_secs(30), "a first scrape", || {
        prom.value(r#"up{job="tcpstate"}"#) == Some(1.0)
    });
    // Outside the range: a listener on port 0 would take one of its ports.
    let listener = ns.run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).unwrap());
    let netns = format!("netns=\"{}\"", ns.name);
    let firing = Mutex::new(None::<Instant>);
    let done = Mutex::new(false);
    let (made, failed, first_failure) = thread::scope(|scope| {
        scope.spawn(|| {
            while !*done.lock().unwrap() {
                let fires = prom.alerts().iter().any(|a| {
                    a["labels"]["alertname"] == "TcpstatePortExhaustionImminent"
                        && a["labels"]["netns"] == ns.name.as_str()
                        && a["state"] == "firing"
                });
                if fires {
                    firing.lock().unwrap().get_or_insert_with(Instant::now);
                }
                thread::sleep(Duration::from_millis(250));
            }
        });
        let outcome = ns.run(|| {
            let started = Instant::now();
            let (mut made, mut failed, mut first_failure) = (0u32, 0u32, None);
            while failed < 10 {
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "the pool never ran out: {made} connections"
                );
                match tcp::try_connect(&listener, Pattern::ClientFirst) {
                    Ok(_) => made += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                        failed += 1;
                        first_failure.get_or_insert_with(Instant::now);
                    }
                    Err(e) => panic!("connect failed otherwise: {e}"),
                }
                let next = Duration::from_millis(125) * (made + failed);
                if let Some(wait) = next.checked_sub(started.elapsed()) {
                    thread::sleep(wait);
                }
            }
            (made, failed, first_failure.expect("failures"))
        });
        *done.lock().unwrap() = true;
        outcome
    });
    assert_eq!(made, 300, "every usable port once");
    let fired = firing
        .lock()
        .unwrap()
        .unwrap_or_else(|| panic!("the exhaustion alert never fired: {:?}", prom.alerts()));
    assert!(
        fired < first_failure,
        "the exhaustion alert fired {:?} after connect() first failed",
        fired - first_failure
    );
    eprintln!(
        "the exhaustion alert fired {:?} before connect() first failed",
        first_failure - fired
    );
    let failures = format!(r#"tcpstate_connect_failures_total{{{netns},reason="no_local_port"}}"#);
    wait_for(
        Duration::from_secs(15),
        "the failures in Prometheus",
        || prom.value(&failures) == Some(f64::from(failed)),
    );
    let in_kernel = kernel::time_wait(&ns).len();
    assert_eq!(in_kernel, 300);
    let time_wait = format!("sum(tcpstate_timewait_sockets{{{netns}}})");
    wait_for(Duration::from_secs(15), "TIME_WAIT in Prometheus", || {
        prom.value(&time_wait) == Some(in_kernel as f64)
    });
    let pool = |metric: &str| prom.value(&format!("{metric}{{{netns}}}"));
    assert_eq!(pool("tcpstate_port_pool_ports"), Some(300.0));
    assert_eq!(pool("tcpstate_port_pool_left"), Some(0.0));
    wait_for(Duration::from_secs(15), "the no-local-port alert", || {
        prom.alerts().iter().any(|a| {
            a["labels"]["alertname"] == "TcpstateConnectFailuresNoLocalPort"
                && a["labels"]["netns"] == ns.name.as_str()
                && a["state"] == "firing"
        })
    });
    let finding = format!(r#"tcpstate_finding{{kind="port_exhaustion",{netns}}}"#);
    assert_eq!(
        prom.value(&finding),
        Some(1.0),
        "{:?}",
        prom.query("tcpstate_finding")
    );
    let findings = http::get(&format!("http://{addr}/findings")).unwrap();
    assert_eq!(findings.content_type, "application/json");
    let findings: serde_json::Value = serde_json::from_str(&findings.body).unwrap();
    assert_eq!(findings["severity"], "critical", "{findings}");
    assert!(
        findings["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "port_exhaustion" && f["netns_name"] == ns.name.as_str()),
        "{findings}"
    );
    let objects = tracer.stop();
    assert_eq!(tracer::summary(&objects)["lost"], 0);
}

/// What a scrape serves passes `promtool check metrics` in the Prometheus
/// text format, OpenMetrics is served on `Accept`, the shipped rules pass
/// `promtool check rules`, and every metric the rules and the dashboard
/// use is one tcpstate serves.
#[test]
fn scrapes_and_shipped_rules_pass_promtool_and_name_served_metrics() {
    require_root();
    let ns = NetNs::new("tcpstate-test-lint");
    let (tracer, addr) = serve(&["--interval", "0.5"]);
    ns.run(|| {
        let listener = tcp::listen(IpAddr::V4(Ipv4Addr::LOCALHOST));
        for pattern in [
            Pattern::ClientFirst,
            Pattern::ServerFirst,
            Pattern::ClientReset,
        ] {
            tcp::connect(&listener, pattern);
        }
        // A refused connect(), for the failure series.
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    });
    thread::sleep(Duration::from_secs(2));
    let url = format!("http://{addr}/metrics");
    let text = http::get(&url).unwrap();
    assert_eq!(text.status, 200);
    assert_eq!(
        text.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool: install Debian's prometheus package (`cargo xtask test` does)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        text.body
    );
    let refused = format!(
        "tcpstate_connect_failures_total{{netns=\"{}\",reason=\"refused\"}} 1\n",
        ns.name
    );
    assert!(text.body.contains(&refused), "{}", text.body);
    let om = http::request(
        &url,
        Some("application/openmetrics-text; version=1.0.0"),
        &[],
    )
    .unwrap();
    assert_eq!(
        om.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.contains("# TYPE tcpstate_closes counter\n"));

    let rules = prometheus::rules();
    let check = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
        .expect("running promtool");
    assert!(
        check.status.success(),
        "promtool check rules: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let served = metric_names(&text.body);
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/tcpstate.json");
    for file in [rules, dashboard] {
        let content = std::fs::read_to_string(&file).unwrap();
        for name in referenced_names(&content) {
            assert!(
                served.contains(&name),
                "{} uses {name}, which tcpstate does not serve",
                file.display()
            );
        }
    }
    let objects = tracer.stop();
    tracer::summary(&objects);
}

/// 10,000 destinations make 10,000 pools of local ports; `--top-pools 5`
/// serves five of them, the worst, and counts the rest.
#[test]
fn ten_thousand_peers_make_at_most_the_configured_pool_series() {
    require_root();
    let ns = NetNs::new("tcpstate-test-peers");
    set_sysctl(&ns, "net.ipv4.tcp_tw_reuse", "0");
    let (tracer, addr) = serve(&["--interval", "0.5", "--top-pools", "5"]);
    ns.run(|| {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 7000)).unwrap();
        for i in 0..10_000u32 {
            let peer = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
            let client = TcpStream::connect((peer, 7000)).expect("connect");
            let (mut server, _) = listener.accept().expect("accept");
            drop(client);
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).expect("EOF");
        }
    });
    let url = format!("http://{addr}/metrics");
    let mut scrape = String::new();
    wait_for(Duration::from_secs(15), "10,000 pools", || {
        scrape = http::get(&url).unwrap().body;
        let folded = scrape
            .lines()
            .find_map(|l| l.strip_prefix("tcpstate_port_pools_folded "))
            .and_then(|v| v.parse::<u64>().ok());
        folded >= Some(9_995)
    });
    let pools = scrape
        .lines()
        .filter(|l| l.starts_with("tcpstate_port_pool_ports{"))
        .count();
    assert_eq!(pools, 5, "{scrape}");
    let series = scrape.lines().filter(|l| !l.starts_with('#')).count();
    assert!(series < 500, "{series} series for 10,000 peers");
    tracer.stop();
}

/// The shipped systemd unit is valid, and its capability set is enough:
/// tcpstate serve run with exactly those capabilities reads another
/// namespace's sockets and settings.
#[test]
fn the_systemd_unit_is_valid_and_its_capabilities_are_enough() {
    require_root();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/tcpstate.service"),
    )
    .unwrap();
    let bin = tracer::bin();
    let dir = std::env::temp_dir().join(format!("tcpstate-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("tcpstate.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/tcpstate", &bin.display().to_string()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect(
            "running systemd-analyze: install Debian's systemd package (`cargo xtask test` does)",
        );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let ns = NetNs::new("tcpstate-test-unit");
    set_sysctl(&ns, "net.ipv4.tcp_max_tw_buckets", "777");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new("setpriv");
    cmd.arg("--bounding-set")
        .arg(format!("-all,{}", caps.join(",")))
        .arg(&bin)
        .args(["serve", "--json", "--listen", &addr, "--interval", "0.5"]);
    let tracer = Tracer::start_command(cmd);
    let limit = format!("tcpstate_tw_buckets_limit{{netns=\"{}\"}} 777\n", ns.name);
    let url = format!("http://{addr}/metrics");
    wait_for(Duration::from_secs(15), "the namespace's settings", || {
        http::get(&url).is_ok_and(|r| r.body.contains(&limit))
    });
    let objects = tracer.stop();
    assert_eq!(tracer::summary(&objects)["lost"], 0);
}

/// How long the soak runs: 10 minutes unless `TCPSTATE_SOAK_SECS` says.
fn soak_length() -> Duration {
    let secs = std::env::var("TCPSTATE_SOAK_SECS")
        .ok()
        .map(|v| v.parse().expect("TCPSTATE_SOAK_SECS: a number of seconds"))
        .unwrap_or(600);
    Duration::from_secs(secs)
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Steady traffic while namespaces are created and deleted every few
/// seconds: after the first two minutes (TIME_WAIT tables filled), the
/// resident memory stays within 10% (and 8 MiB) of where it was, and a
/// namespace deleted has no series once `--forget-after` has passed.
#[test]
fn a_soak_keeps_memory_flat_and_forgets_deleted_namespaces() {
    require_root();
    let length = soak_length();
    let warm_up = length / 5;
    let (tracer, addr) = serve(&["--interval", "1", "--forget-after", "20"]);
    let url = format!("http://{addr}/metrics");
    let started = Instant::now();
    let mut generation = 0u32;
    let mut baseline = None;
    let mut peak = 0;
    let mut deleted: Vec<(String, Instant)> = Vec::new();
    while started.elapsed() < length {
        // A short-lived namespace: 200 connections, then it is deleted.
        let ns = NetNs::new(&format!("tcpstate-soak-{}", generation % 1000));
        generation += 1;
        ns.run(|| {
            let listener = tcp::listen(IpAddr::V4(Ipv4Addr::LOCALHOST));
            for i in 0..200 {
                let pattern = if i % 2 == 0 {
                    Pattern::ClientFirst
                } else {
                    Pattern::ServerFirst
                };
                tcp::connect(&listener, pattern);
            }
        });
        thread::sleep(Duration::from_secs(2));
        let name = ns.name.clone();
        drop(ns);
        deleted.push((name, Instant::now()));
        let now = rss(tracer.pid());
        if started.elapsed() >= warm_up {
            let base = *baseline.get_or_insert(now);
            peak = peak.max(now);
            assert!(
                peak <= base + (base / 10).max(8 << 20),
                "RSS grew from {base} to {peak} bytes after {:?}",
                started.elapsed()
            );
        }
        // Namespaces deleted long enough ago have no series (the name of a
        // deleted one may be taken again by a later one: those are not
        // checked).
        let scrape = http::get(&url).unwrap().body;
        for (name, at) in &deleted {
            let reused = deleted.iter().filter(|(n, _)| n == name).count() > 1;
            if !reused && at.elapsed() > Duration::from_secs(40) {
                assert!(
                    !scrape.contains(&format!("netns=\"{name}\"")),
                    "{name} was deleted {:?} ago and still has series",
                    at.elapsed()
                );
            }
        }
    }
    eprintln!(
        "soak: {generation} namespaces in {:?}; RSS {:?} -> peak {peak} bytes",
        started.elapsed(),
        baseline
    );
    let objects = tracer.stop();
    assert_eq!(tracer::summary(&objects)["lost"], 0);
}
