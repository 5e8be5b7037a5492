//! The kernel's own TCP socket table, read through `NETLINK_SOCK_DIAG`
//! (inet_diag, what `ss -tan` uses).
//!
//! Events from the kernel programs can be missed (tcpstate started after the
//! connection closed, a full ring buffer); the socket table cannot. It is the
//! source of truth that tracked TIME_WAIT sockets are reconciled against: per
//! network namespace, one dump request per address family, with the kernel
//! filtering by state.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    mem::size_of,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    thread,
};

use anyhow::{Context, Result, anyhow, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    Parseable, parse_u32,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, SocketIdBuffer, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use nix::{
    sched::{CloneFlags, setns},
    sys::statfs::{NSFS_MAGIC, statfs},
};

use crate::event::{State, Tuple};

/// One socket from the kernel's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSocket {
    /// Inode of the network namespace it was dumped from.
    pub netns: u32,
    pub tuple: Tuple,
    /// `idiag_state`: for a timewait socket, its substate (TIME_WAIT, or
    /// FIN_WAIT2 when that state was asked for).
    pub state: State,
    /// `idiag_expires`: milliseconds left on the socket's timer.
    pub expires_ms: u32,
    /// `idiag_inode`: 0 for timewait sockets.
    pub inode: u32,
}

/// Listening sockets: (network namespace, port) to the socket's inode (one
/// of them, when several listen on the port).
pub type Listeners = rustc_hash::FxHashMap<(u32, u16), u32>;

/// The calling thread's network namespace.
const CURRENT_NETNS: &str = "/proc/thread-self/ns/net";

/// Receive buffer, reused for every datagram of a dump. The kernel sizes a
/// dump's datagrams to the reader's buffer, up to 32 KiB (about 370 TIME_WAIT
/// sockets); more only leaves room to spare.
const RECV_BUF_LEN: usize = 64 << 10;

/// Offset of `idiag_expires` in `struct inet_diag_msg`, after family, state,
/// timer, retransmits and the socket id. The crate keeps no duration for
/// TIME_WAIT timers, so the field is read from the message itself.
const EXPIRES_OFFSET: usize = 4 + size_of::<SocketIdBuffer>();

/// Sockets of the network namespace at `path` (`/proc/PID/ns/net`,
/// `/run/netns/NAME`) whose state is in `states`. The dump runs on a
/// short-lived thread that enters the namespace, so the caller's never
/// changes.
pub fn dump_in(path: &Path, states: &[State]) -> Result<Vec<KernelSocket>> {
    let netns = ns_inode(path)?;
    let file = File::open(path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    thread::scope(|scope| {
        thread::Builder::new()
            .name("sockdiag-netns".into())
            .spawn_scoped(scope, || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering network namespace {}", path.display()))?;
                dump_netns(netns, states)
            })
            .context("starting the sock_diag thread")?
            .join()
            .map_err(|_| anyhow!("the sock_diag thread panicked"))?
    })
}

/// Every distinct network namespace on the host, as its inode and a path to
/// open it, from `/proc/*/ns/net` and `/run/netns/*`; sorted by inode.
pub fn namespaces() -> Result<Vec<(u32, PathBuf)>> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let entry = entry.context("listing /proc")?;
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()));
        let path = entry.path().join("ns/net");
        // Processes vanish and some are not ours to inspect.
        if is_pid && let Ok(inode) = ns_inode(&path) {
            found.entry(inode).or_insert(path);
        }
    }
    match fs::read_dir("/run/netns") {
        Ok(entries) => {
            for entry in entries {
                let path = entry.context("listing /run/netns")?.path();
                // A name whose namespace is not mounted is a plain file.
                let is_ns = statfs(&path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC);
                if is_ns && let Ok(inode) = ns_inode(&path) {
                    // Named paths outlive processes: prefer them.
                    found.insert(inode, path);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("listing /run/netns"),
    }
    Ok(found.into_iter().collect())
}

/// Inode of the calling thread's network namespace.
pub fn current_netns() -> Result<u32> {
    ns_inode(Path::new(CURRENT_NETNS))
}

fn ns_inode(path: &Path) -> Result<u32> {
    let inode = fs::metadata(path)
        .with_context(|| format!("reading network namespace {}", path.display()))?
        .ino();
    u32::try_from(inode)
        .with_context(|| format!("{}: inode {inode} is not a namespace's", path.display()))
}

/// Dumps both families of the calling thread's namespace, labelled `netns`.
fn dump_netns(netns: u32, states: &[State]) -> Result<Vec<KernelSocket>> {
    // A state beyond the mask's range is one no socket can be in.
    let mask = states.iter().fold(0, |mask, s| {
        mask | 1u32.checked_shl(s.0.into()).unwrap_or(0)
    });
    let socket = Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
    let mut buf = Vec::with_capacity(RECV_BUF_LEN);
    let mut sockets = Vec::new();
    for (family, name) in [(AF_INET, "IPv4"), (AF_INET6, "IPv6")] {
        dump_family(&socket, family, mask, netns, &mut buf, &mut sockets).with_context(|| {
            format!("sock_diag dump of {name} TCP sockets in network namespace {netns}")
        })?;
    }
    Ok(sockets)
}

fn dump_family(
    socket: &Socket,
    family: u8,
    states: u32,
    netns: u32,
    buf: &mut Vec<u8>,
    sockets: &mut Vec<KernelSocket>,
) -> Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let request = InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        // Retained, not truncated: the crate's flags lack NEW_SYN_RECV.
        states: StateFlags::from_bits_retain(states),
        socket_id: if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        },
    };
    let mut message = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket
        .send_to(&bytes, &SocketAddr::new(0, 0), 0)
        .context("sending the request")?;
    loop {
        buf.clear();
        match socket.recv(buf, libc::MSG_TRUNC) {
            Ok(len) if len > buf.len() => bail!("a {len}-byte datagram overflowed the buffer"),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("receiving the answer"),
        }
        if parse_datagram(buf, netns, sockets)? {
            return Ok(());
        }
    }
}

/// Appends the sockets in one datagram; true once the dump is done.
fn parse_datagram(
    mut datagram: &[u8],
    netns: u32,
    sockets: &mut Vec<KernelSocket>,
) -> Result<bool> {
    while !datagram.is_empty() {
        let buffer = NetlinkBuffer::new_checked(&datagram).context("malformed netlink message")?;
        let message = NetlinkMessage::<SockDiagMessage>::parse(&buffer)
            .context("malformed sock_diag message")?;
        match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                sockets.push(kernel_socket(&response.header, buffer.payload(), netns)?);
            }
            NetlinkPayload::Done(done) if done.code < 0 => bail!(
                "the kernel aborted the dump: {}",
                io::Error::from_raw_os_error(-done.code)
            ),
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(error) => bail!("the kernel refused the request: {error}"),
            _ => bail!(
                "unexpected netlink message of type {}",
                buffer.message_type()
            ),
        }
        let aligned = (buffer.length() as usize).next_multiple_of(4);
        datagram = datagram.get(aligned..).unwrap_or_default();
    }
    Ok(false)
}

fn kernel_socket(header: &InetResponseHeader, payload: &[u8], netns: u32) -> Result<KernelSocket> {
    let expires = payload
        .get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)
        .context("inet_diag message too short")?;
    let id = &header.socket_id;
    Ok(KernelSocket {
        netns,
        tuple: Tuple::new(
            id.source_address,
            id.source_port,
            id.destination_address,
            id.destination_port,
        ),
        state: State(header.state),
        expires_ms: parse_u32(expires)?,
        inode: header.inode,
    })
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        io::Read,
        net::{IpAddr, SocketAddr, TcpListener, TcpStream},
        process::Command,
    };

    use super::*;
    use crate::event::Family;

    /// A network namespace made for one test, deleted on drop.
    struct TestNs {
        name: String,
        path: PathBuf,
    }

    impl TestNs {
        fn new(test: &str) -> TestNs {
            require_root();
            let name = format!("tcpstate-sockdiag-test-{}-{test}", std::process::id());
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            let ns = TestNs {
                path: PathBuf::from("/run/netns").join(&name),
                name,
            };
            ns.ip(&["netns", "add", &ns.name]);
            ns.ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
            ns
        }

        fn ip(&self, args: &[&str]) -> String {
            let out = Command::new("ip").args(args).output().expect("running ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
            String::from_utf8(out.stdout).expect("ip output is UTF-8")
        }

        /// Runs `f` on a thread inside the namespace.
        fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let file = File::open(&self.path).expect("opening the namespace");
                        setns(&file, CloneFlags::CLONE_NEWNET).expect("entering the namespace");
                        f()
                    })
                    .join()
                    .expect("namespace thread")
            })
        }

        /// The TIME_WAIT sockets `ss` sees in the namespace.
        fn ss_time_wait(&self) -> HashSet<Tuple> {
            let args = [
                "netns",
                "exec",
                &self.name,
                "ss",
                "-tanH",
                "state",
                "time-wait",
            ];
            let endpoint = |s: &str| {
                let (addr, port) = s.rsplit_once(':').expect("address:port");
                let addr = addr.trim_start_matches('[').trim_end_matches(']');
                let addr: IpAddr = addr.parse().expect("ss address");
                (addr, port.parse::<u16>().expect("ss port"))
            };
            self.ip(&args)
                .lines()
                .map(|line| {
                    // Recv-Q Send-Q Local:Port Peer:Port
                    let [_, _, local, peer] = line.split_whitespace().collect::<Vec<_>>()[..]
                    else {
                        panic!("unexpected ss line {line:?}");
                    };
                    let ((laddr, lport), (raddr, rport)) = (endpoint(local), endpoint(peer));
                    Tuple::new(laddr, lport, raddr, rport)
                })
                .collect()
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
    }

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the sock_diag tests create network namespaces and enter them: run them as root"
        );
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

    #[test]
    fn time_wait_matches_ss() {
        let ns = TestNs::new("tw");
        let created: HashSet<Tuple> = ns.run(|| {
            let mut v4 = time_wait_sockets("127.0.0.1:0", 50);
            v4.extend(time_wait_sockets("[::1]:0", 20));
            v4.into_iter().collect()
        });
        assert_eq!(created.len(), 70);
        // The clients' final ACKs are on their way: wait for all 70.
        let mut ss = ns.ss_time_wait();
        for _ in 0..100 {
            if ss.is_superset(&created) {
                break;
            }
            thread::sleep(std::time::Duration::from_millis(20));
            ss = ns.ss_time_wait();
        }
        let sockets = dump_in(&ns.path, &[State::TIME_WAIT]).expect("dump_in");

        let dumped: HashSet<Tuple> = sockets.iter().map(|s| s.tuple).collect();
        assert_eq!(dumped.len(), sockets.len(), "duplicates in {sockets:#?}");
        assert_eq!(dumped, ss, "sock_diag and ss disagree");
        assert!(
            dumped.is_superset(&created),
            "missing sockets: {sockets:#?}"
        );
        let netns = ns_inode(&ns.path).expect("namespace inode");
        for s in &sockets {
            assert_eq!(s.netns, netns);
            assert_eq!(s.state, State::TIME_WAIT);
            assert_eq!(s.inode, 0);
            assert!((55_001..=60_000).contains(&s.expires_ms), "{s:?}");
        }
        let count = |family| sockets.iter().filter(|s| s.tuple.family == family).count();
        assert_eq!((count(Family::V4), count(Family::V6)), (50, 20));
    }

    #[test]
    fn listen_socket_has_port_and_inode() {
        let ns = TestNs::new("listen");
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("bind"));
        let port = listener.local_addr().expect("listener address").port();
        let sockets = dump_in(&ns.path, &[State::LISTEN]).expect("dump_in");
        let [socket] = sockets[..] else {
            panic!("expected one listener, got {sockets:#?}");
        };
        assert_eq!(socket.state, State::LISTEN);
        assert_eq!(socket.tuple.lport, port);
        assert_ne!(socket.inode, 0);
        drop(listener);
    }

    #[test]
    fn namespaces_include_test_and_current() {
        let ns = TestNs::new("list");
        let inodes: Vec<u32> = namespaces()
            .expect("namespaces")
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert!(
            inodes.is_sorted() && inodes.windows(2).all(|w| w[0] != w[1]),
            "{inodes:?}"
        );
        assert!(inodes.contains(&ns_inode(&ns.path).expect("test namespace inode")));
        assert!(inodes.contains(&current_netns().expect("current namespace")));
    }

    #[test]
    fn dump_current_namespace() {
        require_root();
        let sockets = dump_in(Path::new(CURRENT_NETNS), &[State::TIME_WAIT]).expect("dump");
        let own = current_netns().expect("current netns");
        assert!(sockets.iter().all(|s| s.netns == own));
    }
}
