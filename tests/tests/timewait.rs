//! TIME_WAIT tracking checked against the kernel's own socket table.
//!
//! Each test makes its TIME_WAIT sockets in a network namespace of its own,
//! so that nothing else on the host lands there; tcpstate runs in the host
//! namespace, sees every namespace, and only its objects for the test's
//! namespace are compared with what `ss` shows inside it.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    process::Output,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tcpstate_tests::{
    kernel::{self, KernelTw, Tuple, set_sysctl},
    netns::NetNs,
    require_root, slowdown, storm,
    tcp::{self, Conn, Pattern},
    tracer::{self, Tracer, of_type, summary},
    workload::Workload,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A fresh namespace for one test.
fn namespace(test: &str) -> NetNs {
    NetNs::new(&format!("tcpstate-tw-{test}-{}", std::process::id()))
}

/// The 4-tuple of the end of `conn` that closed first: the one in TIME_WAIT.
fn closer_end(addr: IpAddr, conn: Conn, pattern: Pattern) -> Tuple {
    match pattern {
        Pattern::ServerFirst => (addr, conn.server_port, addr, conn.client_port),
        Pattern::ClientFirst => (addr, conn.client_port, addr, conn.server_port),
        Pattern::ClientReset | Pattern::ServerReset => unreachable!("a reset leaves no TIME_WAIT"),
    }
}

/// `n` connections of each graceful pattern to `listener`; their TIME_WAIT
/// ends with the pattern that made each.
fn time_wait_conns(listener: &TcpListener, n: usize) -> Vec<(Tuple, Pattern)> {
    let addr = listener.local_addr().expect("listener address").ip();
    [Pattern::ServerFirst, Pattern::ClientFirst]
        .into_iter()
        .flat_map(|pattern| (0..n).map(move |_| pattern))
        .map(|pattern| {
            (
                closer_end(addr, tcp::connect(listener, pattern), pattern),
                pattern,
            )
        })
        .collect()
}

/// The 4-tuple an object names.
fn tuple_of(o: &Value) -> Tuple {
    let addr = |key: &str| -> IpAddr {
        o[key]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address {key} in {o}"))
    };
    let port = |key: &str| -> u16 {
        o[key]
            .as_u64()
            .and_then(|p| p.try_into().ok())
            .unwrap_or_else(|| panic!("no port {key} in {o}"))
    };
    (addr("laddr"), port("lport"), addr("raddr"), port("rport"))
}

/// The objects of type `ty` about sockets in `ns`.
fn in_ns<'a>(objects: &'a [Value], ty: &str, ns: &NetNs) -> Vec<&'a Value> {
    of_type(objects, ty)
        .into_iter()
        .filter(|o| o["netns"] == ns.inode())
        .collect()
}

/// Objects keyed by 4-tuple; fails on a 4-tuple named twice.
fn by_tuple<'a>(objects: &[&'a Value]) -> HashMap<Tuple, &'a Value> {
    let map: HashMap<_, _> = objects.iter().map(|o| (tuple_of(o), *o)).collect();
    assert_eq!(map.len(), objects.len(), "a 4-tuple twice in {objects:#?}");
    map
}

/// The kernel's TIME_WAIT sockets in `ns`, once they are exactly `expected`
/// (the closing ACKs may still be in flight when the sockets are dropped).
fn kernel_settles_to(ns: &NetNs, expected: &HashSet<Tuple>) -> HashMap<Tuple, KernelTw> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let tws: HashMap<_, _> = kernel::time_wait(ns)
            .into_iter()
            .map(|tw| (tw.tuple(), tw))
            .collect();
        let tuples: HashSet<_> = tws.keys().copied().collect();
        if tuples == *expected || Instant::now() > deadline {
            assert_eq!(
                tuples, *expected,
                "the kernel's TIME_WAIT set in {}",
                ns.name
            );
            return tws;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON Lines of a finished `tcpstate`, which must have exited 0 and
/// printed its summary last.
fn json_lines(out: &Output) -> Vec<Value> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tcpstate exited with {}: {stderr}",
        out.status
    );
    let objects: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    summary(&objects);
    objects
}

/// `tcpstate timewait --once --json ARGS`.
fn once(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["timewait", "--once", "--json"];
    all.extend(args);
    json_lines(&tracer::run(&all))
}

/// The entry's time left agrees with the kernel's timer (ss prints whole
/// seconds, and the two were read at slightly different times).
fn assert_time_left(entry: &Value, kernel: &KernelTw) {
    let left = entry["expires_in_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no expires_in_ms in {entry}"));
    assert!(
        (left - kernel.expires_ms as f64).abs() <= 2000.0,
        "{left} ms left, the kernel says {} ms: {entry}",
        kernel.expires_ms
    );
}

/// Seconds since the epoch of an RFC 3339 time, e.g.
/// `2026-11-24T06:11:20.440050Z` or `2026-11-24T07:11:20.44+01:00`.
fn epoch_secs(ts: &str) -> f64 {
    let bad = || -> ! { panic!("not an RFC 3339 time: {ts:?}") };
    let (date, time) = ts.split_once('T').unwrap_or_else(|| bad());
    let [y, m, d] = date
        .split('-')
        .map(|n| n.parse::<i64>().unwrap_or_else(|_| bad()))
        .collect::<Vec<_>>()[..]
    else {
        bad()
    };
    let (clock, offset_secs) = match time.strip_suffix('Z') {
        Some(clock) => (clock, 0.0),
        None => {
            let at = time.rfind(['+', '-']).unwrap_or_else(|| bad());
            let (hh, mm) = time[at + 1..].split_once(':').unwrap_or_else(|| bad());
            let offset = hh.parse::<f64>().unwrap_or_else(|_| bad()) * 3600.0
                + mm.parse::<f64>().unwrap_or_else(|_| bad()) * 60.0;
            let sign = if time[at..].starts_with('-') {
                -1.0
            } else {
                1.0
            };
            (&time[..at], sign * offset)
        }
    };
    let [h, min, s] = clock
        .split(':')
        .map(|n| n.parse::<f64>().unwrap_or_else(|_| bad()))
        .collect::<Vec<_>>()[..]
    else {
        bad()
    };
    // Days since 1970-01-01, counting years from March so that the leap
    // day is the last day of a year.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + d - 1 - 719_468;
    days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s - offset_secs
}

#[test]
fn rfc3339_times() {
    assert_eq!(epoch_secs("1970-01-01T00:00:00Z"), 0.0);
    assert_eq!(epoch_secs("2000-03-01T00:00:00Z"), 951_868_800.0);
    assert_eq!(epoch_secs("2024-02-29T23:59:59.5Z"), 1_709_251_199.5);
    assert_eq!(epoch_secs("2024-03-01T01:00:00+01:00"), 1_709_251_200.0);
}

#[test]
fn watch_reports_exactly_the_kernels_new_time_wait_sockets() {
    require_root();
    let ns = namespace("watch");
    let tracer = Tracer::start(&["watch", "--json"]);
    let made: Vec<(Tuple, Pattern)> = ns.run(|| {
        [V4, V6]
            .into_iter()
            .flat_map(|addr| time_wait_conns(&tcp::listen(addr), 10))
            .collect()
    });
    let expected: HashSet<Tuple> = made.iter().map(|(t, _)| *t).collect();
    assert_eq!(expected.len(), 40);
    let kernel = kernel_settles_to(&ns, &expected);
    let objects = tracer.stop();

    let entered = by_tuple(&in_ns(&objects, "timewait_enter", &ns));
    let entered_set: HashSet<Tuple> = entered.keys().copied().collect();
    let kernel_set: HashSet<Tuple> = kernel.keys().copied().collect();
    assert_eq!(entered_set, kernel_set);
    for (tuple, pattern) in &made {
        let o = entered[tuple];
        let role = match pattern {
            Pattern::ServerFirst => "server",
            _ => "client",
        };
        let family = if tuple.0.is_ipv4() { "ipv4" } else { "ipv6" };
        assert_eq!(
            [&o["role"], &o["closer"], &o["source"], &o["family"]],
            [role, "local", "traced", family],
            "{pattern:?}: {o}"
        );
        assert_eq!(o["pid"], std::process::id(), "{o}");
        let ahead = epoch_secs(o["expires_at"].as_str().expect("expires_at"))
            - epoch_secs(o["ts"].as_str().expect("ts"));
        assert!(
            (ahead - 60.0).abs() < 1.0,
            "expires {ahead} s after ts: {o}"
        );
    }
    // Nothing ended within the test.
    assert_eq!(in_ns(&objects, "timewait_exit", &ns), Vec::<&Value>::new());
    assert_eq!(summary(&objects)["lost"], 0);
}

#[test]
fn once_lists_exactly_the_kernel_set_with_time_left() {
    require_root();
    let ns = namespace("once");
    // The listeners stay open: roles are inferred from listening ports.
    let (listeners, made): (Vec<TcpListener>, Vec<(Tuple, Pattern)>) = ns.run(|| {
        let listeners = vec![tcp::listen(V4), tcp::listen(V6)];
        let made = listeners
            .iter()
            .flat_map(|l| time_wait_conns(l, 5))
            .collect();
        (listeners, made)
    });
    let listening: HashSet<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("listener address").port())
        .collect();
    let expected: HashSet<Tuple> = made.iter().map(|(t, _)| *t).collect();
    assert_eq!(expected.len(), 20);
    let kernel = kernel_settles_to(&ns, &expected);

    let objects = once(&["--netns", &ns.inode().to_string()]);
    let entries = of_type(&objects, "timewait_entry");
    assert!(
        entries.iter().all(|e| e["netns"] == ns.inode()),
        "--netns {} let others through: {entries:#?}",
        ns.inode()
    );
    let listed = by_tuple(&entries);
    let listed_set: HashSet<Tuple> = listed.keys().copied().collect();
    assert_eq!(listed_set, expected);
    for (tuple, pattern) in &made {
        let e = listed[tuple];
        let role = if listening.contains(&tuple.1) {
            "server"
        } else {
            "client"
        };
        // The fixture made the server end the closer exactly when it says so.
        assert_eq!(role == "server", *pattern == Pattern::ServerFirst);
        assert_eq!(e["role"], role, "{e}");
        assert_eq!(e["source"], "kernel", "{e}");
        assert_time_left(e, &kernel[tuple]);
    }

    // The text screen counts the same set, and claims nothing about
    // tracing, which did not run.
    let out = tracer::run(&["timewait", "--once", "--netns", &ns.inode().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("TIME_WAIT 20 "), "{text}");
    assert!(
        text.contains("one reading of the kernel's socket table, no tracing"),
        "{text}"
    );
    assert!(!text.contains("missed by tracing"), "{text}");
    drop(listeners);
}

#[test]
fn roles_without_a_listener_are_client_only_for_ephemeral_ports() {
    require_root();
    let ns = namespace("gone-listener");
    // A service port below the ephemeral range; its listener closes before
    // tcpstate reads the table, as when a server stops.
    let made: Vec<(Tuple, Pattern)> = ns.run(|| {
        let listener = TcpListener::bind((V4, 1080)).expect("bind port 1080");
        time_wait_conns(&listener, 3)
    });
    let expected: HashSet<Tuple> = made.iter().map(|(t, _)| *t).collect();
    kernel_settles_to(&ns, &expected);

    let objects = once(&["--netns", &ns.inode().to_string()]);
    let listed = by_tuple(&of_type(&objects, "timewait_entry"));
    assert_eq!(listed.len(), expected.len());
    for (tuple, pattern) in &made {
        let role = match pattern {
            // The server's end, on port 1080: nothing says it was a server.
            Pattern::ServerFirst => "unknown",
            // The client's end, on a port connect() picked.
            _ => "client",
        };
        assert_eq!(listed[tuple]["role"], role, "{}", listed[tuple]);
    }
}

#[test]
fn time_wait_sockets_from_before_start_appear_as_kernel_source() {
    require_root();
    let ns = namespace("before");
    let made = ns.run(|| time_wait_conns(&tcp::listen(V4), 5));
    let closed = Instant::now();
    let expected: HashSet<Tuple> = made.iter().map(|(t, _)| *t).collect();
    kernel_settles_to(&ns, &expected);

    // `watch` seeds its table from the kernel without announcing the
    // sockets it found there.
    let tracer = Tracer::start(&["watch", "--json"]);
    thread::sleep(Duration::from_millis(1500).saturating_sub(closed.elapsed()));
    let watched = tracer.stop();
    assert_eq!(in_ns(&watched, "timewait_enter", &ns), Vec::<&Value>::new());
    assert_eq!(in_ns(&watched, "timewait_exit", &ns), Vec::<&Value>::new());

    let kernel = kernel_settles_to(&ns, &expected);
    let objects = once(&["--netns", &ns.inode().to_string()]);
    let listed = by_tuple(&in_ns(&objects, "timewait_entry", &ns));
    let listed_set: HashSet<Tuple> = listed.keys().copied().collect();
    assert_eq!(listed_set, expected);
    for (tuple, e) in &listed {
        assert_eq!(e["source"], "kernel", "{e}");
        assert_time_left(e, &kernel[tuple]);
        // At least 1.5 s of the 60 s have passed.
        assert!(e["expires_in_ms"].as_f64().unwrap() <= 58_600.0, "{e}");
    }
}

#[test]
fn reused_four_tuple_ends_the_entry_with_reason_reused() {
    require_root();
    let ns = namespace("reuse");
    let reuse = kernel::sysctl(&ns, "net.ipv4.tcp_tw_reuse");
    assert!(
        reuse == "1" || reuse == "2",
        "net.ipv4.tcp_tw_reuse is {reuse}: connect() would not recycle TIME_WAIT"
    );
    let tracer = Tracer::start(&["watch", "--json"]);
    let listener = ns.run(|| tcp::listen(V4));
    // The client closes first and holds the TIME_WAIT. It set SO_REUSEADDR,
    // so the next client may bind the same port.
    let first =
        ns.run(|| tcp::connect_from(&listener, SocketAddr::new(V4, 0), Pattern::ClientFirst));
    let tuple = (V4, first.client_port, V4, first.server_port);
    kernel_settles_to(&ns, &HashSet::from([tuple]));
    let recycled = kernel::nstat(&ns, "TcpExtTWRecycled");
    // connect() takes over a TIME_WAIT 4-tuple once the last timestamp seen
    // is tcp_tw_reuse_delay (1 s) old.
    thread::sleep(Duration::from_millis(1200));
    let again = SocketAddr::new(V4, first.client_port);
    // The server closes first this time: the client's 4-tuple does not
    // enter TIME_WAIT again.
    ns.run(|| tcp::connect_from(&listener, again, Pattern::ServerFirst));
    assert!(
        kernel::nstat(&ns, "TcpExtTWRecycled") > recycled,
        "the kernel did not recycle the TIME_WAIT socket"
    );
    let objects = tracer.stop();

    let of_tuple = |ty| -> Vec<&Value> {
        in_ns(&objects, ty, &ns)
            .into_iter()
            .filter(|o| tuple_of(o) == tuple)
            .collect()
    };
    let [enter] = of_tuple("timewait_enter")[..] else {
        panic!("one timewait_enter for {tuple:?}: {objects:#?}");
    };
    assert_eq!(enter["source"], "traced", "{enter}");
    let [exit] = of_tuple("timewait_exit")[..] else {
        panic!("one timewait_exit for {tuple:?}: {objects:#?}");
    };
    assert_eq!(exit["reason"], "reused", "{exit}");
    let lived = exit["lived_ms"].as_f64().expect("lived_ms");
    assert!((1000.0..3000.0).contains(&lived), "{exit}");
}

/// Namespaces outside `ip netns` are named after what runs in them, from
/// their processes' cgroups: a Kubernetes pod by its hostname, with its UID
/// and container; a Docker container by its short ID; a systemd unit.
#[test]
fn namespaces_are_named_after_their_pod_container_or_unit() {
    require_root();
    const ID: &str = "5e0c7d2b9a4f3e1d8c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d";
    const UID: &str = "0b3c9e2a-4d5f-4a1b-9c8d-7e6f5a4b3c2d";
    let pod = Workload::start(
        &format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/\
             cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        ),
        Some("web-5c9f7d"),
    );
    let docker = Workload::start(&format!("tcpstate-test.slice/docker-{ID}.scope"), None);
    let unit = Workload::start("tcpstate-test.slice/tcpstate-test.service", None);
    let objects = Tracer::start(&["watch", "--json", "--duration", "1"]).finish();
    let host = of_type(&objects, "host");
    let namespace = |w: &Workload| -> Value {
        host[0]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["netns"] == w.netns())
            .unwrap_or_else(|| panic!("namespace {} missing: {host:#?}", w.netns()))
            .clone()
    };
    let pod = namespace(&pod);
    assert_eq!(pod["netns_name"], "pod:web-5c9f7d", "{pod:#}");
    assert_eq!(pod["pod"], UID);
    assert_eq!(pod["container"], format!("containerd://{ID}"));
    let docker = namespace(&docker);
    assert_eq!(
        docker["netns_name"],
        format!("docker:{}", &ID[..12]),
        "{docker:#}"
    );
    assert_eq!(docker["container"], format!("docker://{ID}"));
    assert_eq!(docker["pod"], Value::Null);
    let unit = namespace(&unit);
    assert_eq!(unit["netns_name"], "tcpstate-test.service", "{unit:#}");
    assert_eq!(unit["container"], Value::Null);
    // `--netns` takes the names tcpstate shows.
    let objects = json_lines(&tracer::run(&[
        "timewait",
        "--once",
        "--json",
        "--netns",
        "pod:web-5c9f7d",
    ]));
    let summary = of_type(&objects, "summary");
    assert_eq!(summary.len(), 1, "{objects:#?}");
    let out = std::process::Command::new(tracer::bin())
        .args(["timewait", "--once", "--netns", "pod:no-such-pod"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pod:NAME"), "{err}");
}

#[test]
fn same_four_tuples_in_two_namespaces_are_kept_apart() {
    require_root();
    let twins = [namespace("twin-a"), namespace("twin-b")];
    let (server, client) = (SocketAddr::new(V4, 18080), SocketAddr::new(V4, 38080));
    // The server closes first: its end is in TIME_WAIT in both namespaces.
    let tuple = (V4, server.port(), V4, client.port());
    let tracer = Tracer::start(&["watch", "--json"]);
    let mut kernel = HashMap::new();
    for ns in &twins {
        ns.run(|| {
            let listener = TcpListener::bind(server).expect("bind listener");
            tcp::connect_from(&listener, client, Pattern::ServerFirst)
        });
        let tws = kernel_settles_to(ns, &HashSet::from([tuple]));
        kernel.insert(ns.inode(), tws[&tuple]);
    }
    let objects = tracer.stop();

    // One object per namespace, for the same 4-tuple.
    let namespaces = |objects: Vec<&Value>| -> Vec<u64> {
        let mut inodes: Vec<u64> = objects
            .into_iter()
            .filter(|o| tuple_of(o) == tuple)
            .filter_map(|o| o["netns"].as_u64())
            .filter(|inode| kernel.contains_key(inode))
            .collect();
        inodes.sort();
        inodes
    };
    let mut expected: Vec<u64> = kernel.keys().copied().collect();
    expected.sort();
    assert_eq!(namespaces(of_type(&objects, "timewait_enter")), expected);

    let listed = once(&[]);
    let entries = of_type(&listed, "timewait_entry");
    assert_eq!(namespaces(entries.clone()), expected);
    for e in entries.into_iter().filter(|e| tuple_of(e) == tuple) {
        if let Some(tw) = e["netns"].as_u64().and_then(|inode| kernel.get(&inode)) {
            assert_time_left(e, tw);
        }
    }
}

#[test]
fn storm_time_wait_set_matches_the_kernel() {
    require_root();
    let ns = namespace("storm");
    // Reconcile every second: what no hook sees (an RST killing a
    // TIME_WAIT socket, an event the kernel skipped) is caught by it.
    let tracer = Tracer::start(&["watch", "--json", "--reconcile", "1"]);
    // Smaller on a slower guest: the storm and the wait below must end
    // well before the first TIME_WAIT socket expires (60 s).
    let conns = 20_000 / u64::from(slowdown());
    let report = ns
        .run(|| storm::run("127.0.0.1:0".parse().unwrap(), conns, 2))
        .expect("storm");
    assert_eq!(report.failures, 0, "{report:?}");
    // Let a whole reconciliation pass (a dump begun after the last
    // connection, and applied) run: it takes longer on a slower guest.
    thread::sleep(Duration::from_millis(1000) + Duration::from_millis(1500) * slowdown());
    let objects = tracer.stop();
    let kernel: HashSet<Tuple> = kernel::time_wait(&ns).iter().map(KernelTw::tuple).collect();

    // Replay the tracker's view: entered, minus ended (a 4-tuple reused by a
    // later connection ends and may enter again).
    let mut tracked = HashSet::new();
    let mut by_kernel = 0;
    for o in objects.iter().filter(|o| o["netns"] == ns.inode()) {
        match o["type"].as_str() {
            Some("timewait_enter") => {
                by_kernel += usize::from(o["source"] == "kernel");
                tracked.insert(tuple_of(o))
            }
            Some("timewait_exit") => tracked.remove(&tuple_of(o)),
            _ => continue,
        };
    }
    let missing: Vec<_> = kernel.difference(&tracked).collect();
    let extra: Vec<_> = tracked.difference(&kernel).collect();
    let lost = summary(&objects)["lost"].as_u64().expect("lost");
    eprintln!(
        "storm: {} connections, {} TIME_WAIT in the kernel, {} tracked ({by_kernel} added by \
         reconciliation), {} missing, {} extra, {lost} events lost",
        report.conns,
        kernel.len(),
        tracked.len(),
        missing.len(),
        extra.len()
    );
    // Most server ends are still in TIME_WAIT (client ports get reused).
    assert!(kernel.len() as u64 >= report.conns / 2, "{}", kernel.len());
    let examples = |v: &[&Tuple]| format!("{:?}", &v[..v.len().min(5)]);
    assert!(
        missing.is_empty(),
        "missing from the tracker: {}",
        examples(&missing)
    );
    // What the kernel has on an extra entry's ports, in any state: a
    // FIN_WAIT2 timewait socket, or a new connection on the 4-tuple.
    let states: Vec<String> = extra
        .iter()
        .take(5)
        .map(|t| kernel::sockets_on(&ns, t.3))
        .collect();
    assert!(
        extra.is_empty(),
        "not in the kernel: {}; the kernel's sockets on their remote ports:\n{}",
        examples(&extra),
        states.join("")
    );
    // Every transition is recorded at most once: 5 on each end of a
    // connection, 2 for the listener.
    let transitions: Vec<_> = of_type(&objects, "transition")
        .into_iter()
        .filter(|o| o["netns"] == ns.inode())
        .collect();
    let distinct: HashSet<_> = transitions
        .iter()
        .map(|o| (&o["skaddr"], &o["ts"], &o["old"], &o["new"]))
        .collect();
    assert_eq!(
        distinct.len(),
        transitions.len(),
        "a transition recorded twice"
    );
    let expected = report.conns * 10 + 2;
    let seen = transitions.len() as u64;
    assert!(
        seen <= expected,
        "{seen} transitions recorded, {expected} expected"
    );

    // What is missing is accounted for. Now and then the kernel runs no
    // program for the last two transitions of a socket (FIN_WAIT1 ->
    // FIN_WAIT2 -> CLOSE) and counts no miss. Such a connection's end is
    // never seen: the tracker counts it as unfinished when the address is
    // reused, and the storm being over, a socket whose last recorded
    // transition is not to CLOSE is one too. `lost` counts every namespace.
    let mut last = HashMap::new();
    for o in &transitions {
        last.insert(&o["skaddr"], &o["new"]);
    }
    let open_at_end = last.values().filter(|&&new| new != "CLOSE").count() as u64;
    let unfinished = summary(&objects)["unfinished"]
        .as_u64()
        .expect("unfinished");
    let ends_unseen = unfinished + open_at_end;
    assert!(
        expected - seen <= lost + 2 * ends_unseen,
        "{} transitions missing: {lost} lost, {ends_unseen} connections whose end was never seen",
        expected - seen
    );
    // Tracing, not reconciliation, found almost all TIME_WAIT sockets: each
    // lost event or unseen end hides at most one.
    assert!(
        by_kernel as u64 <= lost + ends_unseen,
        "{by_kernel} added by reconciliation, {lost} lost, {ends_unseen} ends unseen"
    );
}

#[test]
fn live_view_runs_and_stops() {
    require_root();
    let objects = json_lines(&tracer::run(&[
        "timewait",
        "--json",
        "--duration",
        "2",
        "--interval",
        "0.5",
    ]));
    let refreshes = of_type(&objects, "timewait_summary").len();
    assert!(
        refreshes >= 2,
        "{refreshes} timewait_summary objects in 2 s"
    );
}

/// Seen from tcpstate's own namespace, each namespace's pool is judged by
/// that namespace's own port range and `tcp_tw_reuse`, and is named.
#[test]
fn each_namespace_is_judged_by_its_own_settings() {
    require_root();
    let narrow = namespace("narrow");
    let wide = namespace("wide");
    set_sysctl(&narrow, "net.ipv4.ip_local_port_range", "40000 40999");
    set_sysctl(&narrow, "net.ipv4.ip_local_reserved_ports", "40990-40999");
    set_sysctl(&narrow, "net.ipv4.tcp_tw_reuse", "0");
    set_sysctl(&wide, "net.ipv4.ip_local_port_range", "20000 59999");
    set_sysctl(&wide, "net.ipv4.tcp_tw_reuse", "1");
    for ns in [&narrow, &wide] {
        ns.run(|| {
            let listener = tcp::listen(IpAddr::V4(Ipv4Addr::LOCALHOST));
            for _ in 0..300 {
                tcp::connect(&listener, Pattern::ClientFirst);
            }
        });
    }
    let objects = json_lines(&tracer::run(&[
        "timewait",
        "--json",
        "--count",
        "1",
        "--interval",
        "0.5",
    ]));
    let totals = of_type(&objects, "timewait_summary");
    let totals = totals.last().expect("a timewait_summary");
    // The narrow range: 990 usable ports (10 reserved), 300 held by
    // TIME_WAIT; the wide one reuses TIME_WAIT ports, so all are left.
    for (ns, ports, reuse, used, left) in [
        (&narrow, 990, 0, 300.0 / 990.0, 690),
        (&wide, 40000, 1, 0.0075, 40000),
    ] {
        let inode = ns.inode();
        let pool = totals["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["netns"] == inode)
            .unwrap_or_else(|| panic!("no pool for {}: {totals}", ns.name));
        assert_eq!(pool["ports"], ports, "{pool}");
        assert_eq!(pool["netns_name"], ns.name.as_str(), "{pool}");
        assert_eq!(pool["time_wait"], 300, "{pool}");
        let got = pool["used"].as_f64().unwrap();
        assert!(
            (got - used).abs() < 1e-9,
            "used {got}, expected {used}: {pool}"
        );
        assert_eq!(pool["tw_reuse_applies"], reuse == 1, "{pool}");
        assert_eq!(pool["ports_left"], left, "{pool}");
        let figures = totals["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["netns"] == inode)
            .unwrap_or_else(|| panic!("no figures for {}: {totals}", ns.name));
        assert_eq!(figures["tcp_tw_reuse"], reuse, "{figures}");
        assert_eq!(figures["netns_name"], ns.name.as_str(), "{figures}");
        assert_eq!(figures["time_wait"], 300, "{figures}");
    }
}

/// Without tracing, `--once` estimates each pool's entry rate from the
/// kernel's own timers, and reports the pool with the closer that holds
/// TIME_WAIT.
#[test]
fn once_estimates_the_entry_rate_from_the_kernels_timers() {
    require_root();
    let ns = namespace("once-rate");
    // No port of ours is taken over by a later connect() (loopback reuse
    // is on by default): every connection stays in TIME_WAIT.
    set_sysctl(&ns, "net.ipv4.tcp_tw_reuse", "0");
    let started = Instant::now();
    let listener = ns.run(|| tcp::listen(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let made = ns.run(|| {
        let mut made = 0u32;
        // 100 connections a second, the client closing first, for 6 s.
        while started.elapsed() < Duration::from_secs(6) {
            tcp::connect(&listener, Pattern::ClientFirst);
            made += 1;
            let next = Duration::from_millis(10) * made;
            if let Some(wait) = next.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        made
    });
    let real = f64::from(made) / started.elapsed().as_secs_f64();
    // The last sockets reach TIME_WAIT once the peer's FIN is in.
    let deadline = Instant::now() + Duration::from_secs(2);
    while kernel::time_wait(&ns).len() < made as usize {
        assert!(
            Instant::now() < deadline,
            "the kernel never showed {made} TIME_WAIT sockets"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // An open connection of the pool: its owner names the pool, as `ss -p`
    // finds it.
    let _open = ns.run(|| {
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap())
    });
    let objects = json_lines(&tracer::run(&[
        "timewait",
        "--once",
        "--json",
        "--netns",
        &ns.inode().to_string(),
    ]));
    let pools = of_type(&objects, "pool");
    let [pool] = pools[..] else {
        panic!("one pool expected: {pools:?}");
    };
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(pool["process"], me.trim_end(), "{pool}");
    assert_eq!(pool["established"], 1, "{pool}");
    let rate = pool["rate_per_s"].as_f64().unwrap();
    assert!(
        (rate - real).abs() <= real * 0.2,
        "estimated {rate:.1}/s, real {real:.1}/s: {pool}"
    );
    assert_eq!(pool["time_wait"], made, "{pool}");
    for e in of_type(&objects, "timewait_entry") {
        assert_eq!(e["closer"], "local", "{e}");
    }
}

/// A userspace filter applies to every figure of the live view: one that
/// matches nothing shows zero everywhere, while the same traffic moves the
/// unfiltered view.
#[test]
fn a_filter_that_matches_nothing_shows_zero_everywhere() {
    require_root();
    let ns = namespace("filtered");
    // Four refreshes that outlast the second start and the traffic.
    let interval = format!("{}", 0.5 * f64::from(slowdown()));
    let args = |filter: &[&'static str]| {
        let mut a = vec![
            "timewait",
            "--json",
            "--interval",
            &interval,
            "--count",
            "4",
        ];
        a.extend_from_slice(filter);
        a
    };
    let unfiltered = Tracer::start(&args(&[]));
    let nothing = Tracer::start(&args(&["--pid", "4000000"]));
    ns.run(|| {
        let listener = tcp::listen(IpAddr::V4(Ipv4Addr::LOCALHOST));
        for _ in 0..200 {
            tcp::connect(&listener, Pattern::ClientFirst);
        }
    });
    let (unfiltered, nothing) = (unfiltered.finish(), nothing.finish());
    let moved = of_type(&unfiltered, "timewait_summary").iter().any(|t| {
        t["entered_per_s"].as_f64().unwrap() > 0.0 && !t["pools"].as_array().unwrap().is_empty()
    });
    assert!(moved, "the unfiltered view never saw the traffic");
    let totals = of_type(&nothing, "timewait_summary");
    assert_eq!(totals.len(), 4);
    for t in totals {
        assert_eq!(t["filtered"], true, "{t}");
        for key in [
            "time_wait",
            "server",
            "client",
            "unknown_role",
            "closer_local",
            "closer_simultaneous",
            "closer_unknown",
            "traced",
            "kernel",
            "expired",
            "reused",
            "gone",
            "missed_by_tracing",
        ] {
            assert_eq!(t[key], 0, "{key}: {t}");
        }
        assert_eq!(t["entered_per_s"], 0.0, "{t}");
        assert_eq!(t["exited_per_s"], 0.0, "{t}");
        assert!(t["pools"].as_array().unwrap().is_empty(), "{t}");
    }
}

/// With `tcp_max_tw_buckets` full in a namespace the kernel makes no
/// TIME_WAIT socket for a close: tcpstate reports such closes as refused,
/// not as TIME_WAIT, and their number equals the namespace's
/// `TCPTimeWaitOverflow` delta; what is in TIME_WAIT equals `ss`.
#[test]
fn closes_the_kernel_refuses_a_time_wait_socket_are_not_time_wait() {
    require_root();
    let ns = namespace("overflow");
    set_sysctl(&ns, "net.ipv4.tcp_max_tw_buckets", "5");
    set_sysctl(&ns, "net.ipv4.tcp_tw_reuse", "0");
    let overflow_before = kernel::nstat(&ns, "TcpExtTCPTimeWaitOverflow");
    let netns = ns.inode().to_string();
    let tracer = Tracer::start(&["watch", "--json", "--netns", &netns]);
    ns.run(|| {
        let listener = tcp::listen(V4);
        for _ in 0..20 {
            tcp::connect(&listener, Pattern::ClientFirst);
        }
    });
    let objects = tracer.stop();
    let refused_by_kernel = kernel::nstat(&ns, "TcpExtTCPTimeWaitOverflow") - overflow_before;
    assert_eq!(refused_by_kernel, 15, "5 buckets, 20 closes");
    let closes = of_type(&objects, "close");
    let client_closes: Vec<_> = closes.iter().filter(|c| c["role"] == "client").collect();
    assert_eq!(client_closes.len(), 20);
    let refused = client_closes
        .iter()
        .filter(|c| c["tw_refused"] == true)
        .count();
    let in_tw = client_closes
        .iter()
        .filter(|c| c["time_wait"] == true)
        .count();
    assert_eq!(refused as u64, refused_by_kernel, "{client_closes:#?}");
    assert_eq!(in_tw, 5, "{client_closes:#?}");
    let entered: HashSet<Tuple> = of_type(&objects, "timewait_enter")
        .iter()
        .map(|e| tuple_of(e))
        .collect();
    let kernel: HashSet<Tuple> = kernel::time_wait(&ns).iter().map(KernelTw::tuple).collect();
    assert_eq!(entered, kernel);
}

/// With a kernel filter hiding the sockets that fill the buckets, a close
/// cannot be judged refused when it happens: the namespace's
/// `TCPTimeWaitOverflow` tells at the next reconciliation, and those
/// entries end as `overflow`, not `gone`.
#[test]
fn refusals_a_kernel_filter_hides_end_as_overflow() {
    require_root();
    let ns = namespace("overflow-filtered");
    set_sysctl(&ns, "net.ipv4.tcp_max_tw_buckets", "5");
    set_sysctl(&ns, "net.ipv4.tcp_tw_reuse", "0");
    let (filling, watched) = ns.run(|| (tcp::listen(V4), tcp::listen(V4)));
    ns.run(|| {
        for _ in 0..5 {
            tcp::connect(&filling, Pattern::ServerFirst);
        }
    });
    let overflow_before = kernel::nstat(&ns, "TcpExtTCPTimeWaitOverflow");
    let port = watched.local_addr().unwrap().port().to_string();
    let netns = ns.inode().to_string();
    let tracer = Tracer::start(&[
        "watch",
        "--json",
        "--netns",
        &netns,
        "--lport",
        &port,
        "--reconcile",
        "1",
    ]);
    ns.run(|| {
        for _ in 0..10 {
            tcp::connect(&watched, Pattern::ServerFirst);
        }
    });
    thread::sleep(Duration::from_millis(2500) * slowdown());
    let objects = tracer.stop();
    let refused = kernel::nstat(&ns, "TcpExtTCPTimeWaitOverflow") - overflow_before;
    assert_eq!(refused, 10, "5 buckets taken, 10 closes");
    let exits: Vec<&str> = of_type(&objects, "timewait_exit")
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    // The table held 5 (hidden) TIME_WAIT sockets fewer than the kernel:
    // the first 5 closes took the buckets it thought free; once it counted
    // 5, the rest were told refused at their close (unless a
    // reconciliation came between them and freed the table's count).
    let told = of_type(&objects, "close")
        .iter()
        .filter(|c| c["tw_refused"] == true)
        .count();
    assert!(exits.len() >= 5, "{objects:#?}");
    assert!(exits.iter().all(|&r| r == "overflow"), "{exits:?}");
    assert_eq!(exits.len() + told, 10, "{objects:#?}");
}

/// A pool that runs out of ports before any TIME_WAIT builds up is judged
/// by its own namespace's range: failures flag it, sized with 4 ports.
#[test]
fn an_exhausted_pool_without_time_wait_is_judged_by_its_namespace() {
    require_root();
    let ns = namespace("exhausted");
    set_sysctl(&ns, "net.ipv4.ip_local_port_range", "40000 40003");
    let interval = format!("{}", 0.5 * f64::from(slowdown()));
    let tracer = Tracer::start(&[
        "timewait",
        "--json",
        "--netns",
        &ns.name,
        "--interval",
        &interval,
        "--count",
        "3",
    ]);
    ns.run(|| {
        let _listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 8080)).unwrap();
        let mut held = Vec::new();
        while let Ok(conn) = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, 8080)) {
            held.push(conn);
            assert!(held.len() <= 4, "more connections than ports");
        }
        thread::sleep(Duration::from_millis(500) * slowdown());
    });
    let objects = tracer.finish();
    let pool = of_type(&objects, "timewait_summary")
        .iter()
        .flat_map(|t| t["pools"].as_array().unwrap().clone())
        .find(|p| p["rport"] == 8080 && p["no_local_port_per_s"].as_f64() > Some(0.0))
        .unwrap_or_else(|| panic!("no exhausted pool: {objects:?}"));
    assert_eq!(pool["ports"], 4, "{pool}");
    assert_eq!(pool["flagged"], true, "{pool}");
    assert_eq!(pool["netns_name"], ns.name.as_str(), "{pool}");
}
