//! tcpstate's sock_diag reader against the kernel's own table as `ss` shows
//! it, in network namespaces made for each test.

use std::{
    collections::HashSet,
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use tcpstate::{
    host::{netns, sockdiag},
    sock::{Family, State, Tuple},
};
use tcpstate_tests::{kernel, netns::NetNs, require_root};

fn namespace(test: &str) -> (NetNs, PathBuf) {
    require_root();
    let ns = NetNs::new(&format!("tcpstate-sockdiag-{test}-{}", std::process::id()));
    let path = PathBuf::from("/run/netns").join(&ns.name);
    (ns, path)
}

/// `n` connections to a listener on `addr`, closed by the server first so
/// that the accepted sockets end in TIME_WAIT; their tuples, server side.
fn time_wait_sockets(addr: &str, n: usize) -> Vec<Tuple> {
    let listener = TcpListener::bind(addr).expect("bind");
    let server = listener.local_addr().expect("listener address");
    (0..n)
        .map(|_| {
            let mut client = TcpStream::connect(server).expect("connect");
            let (accepted, peer) = listener.accept().expect("accept");
            drop(accepted);
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).expect("reading EOF");
            tuple(server, peer)
        })
        .collect()
}

fn tuple(local: SocketAddr, peer: SocketAddr) -> Tuple {
    Tuple::new(local.ip(), local.port(), peer.ip(), peer.port())
}

/// The TIME_WAIT sockets `ss` sees in the namespace.
fn ss_time_wait(ns: &NetNs) -> HashSet<Tuple> {
    kernel::time_wait(ns)
        .into_iter()
        .map(|k| Tuple::new(k.laddr, k.lport, k.raddr, k.rport))
        .collect()
}

#[test]
fn time_wait_matches_ss() {
    let (ns, path) = namespace("tw");
    let created: HashSet<Tuple> = ns.run(|| {
        let mut v4 = time_wait_sockets("127.0.0.1:0", 50);
        v4.extend(time_wait_sockets("[::1]:0", 20));
        v4.into_iter().collect()
    });
    assert_eq!(created.len(), 70);
    // The clients' final ACKs are on their way: wait for all 70.
    let mut ss = ss_time_wait(&ns);
    for _ in 0..100 {
        if ss.is_superset(&created) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
        ss = ss_time_wait(&ns);
    }
    let sockets = sockdiag::dump_in(&path, &[State::TIME_WAIT]).expect("dump_in");

    let dumped: HashSet<Tuple> = sockets.iter().map(|s| s.id.tuple).collect();
    assert_eq!(dumped.len(), sockets.len(), "duplicates in {sockets:#?}");
    assert_eq!(dumped, ss, "sock_diag and ss disagree");
    assert!(
        dumped.is_superset(&created),
        "missing sockets: {sockets:#?}"
    );
    let inode = netns::ns_inode(&path).expect("namespace inode");
    for s in &sockets {
        assert_eq!(s.id.netns, inode);
        assert_eq!(s.state, State::TIME_WAIT);
        assert_eq!(s.inode, 0);
        assert!((55_001..=60_000).contains(&s.expires_ms), "{s:?}");
    }
    let count = |family| {
        sockets
            .iter()
            .filter(|s| s.id.tuple.family == family)
            .count()
    };
    assert_eq!((count(Family::V4), count(Family::V6)), (50, 20));
}

#[test]
fn listen_socket_has_port_and_inode() {
    let (ns, path) = namespace("listen");
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind"));
    let port = listener.local_addr().expect("listener address").port();
    let sockets = sockdiag::dump_in(&path, &[State::LISTEN]).expect("dump_in");
    let [socket] = sockets[..] else {
        panic!("expected one listener, got {sockets:#?}");
    };
    assert_eq!(socket.state, State::LISTEN);
    assert_eq!(socket.id.tuple.lport, port);
    assert_ne!(socket.inode, 0);
    drop(listener);
}

#[test]
fn namespaces_include_test_and_current() {
    let (_ns, path) = namespace("list");
    let inodes: Vec<u32> = netns::namespaces()
        .expect("namespaces")
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert!(
        inodes.is_sorted() && inodes.windows(2).all(|w| w[0] != w[1]),
        "{inodes:?}"
    );
    assert!(inodes.contains(&netns::ns_inode(&path).expect("test namespace inode")));
    assert!(inodes.contains(&netns::current_netns().expect("current namespace")));
}

#[test]
fn dump_current_namespace() {
    require_root();
    let sockets =
        sockdiag::dump_in(Path::new(netns::CURRENT_NETNS), &[State::TIME_WAIT]).expect("dump");
    let own = netns::current_netns().expect("current netns");
    assert!(sockets.iter().all(|s| s.id.netns == own));
}
