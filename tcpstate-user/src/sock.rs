//! A socket's identity and state, the vocabulary every layer shares: TCP
//! states, address families, the 4-tuple, the socket id (namespace and
//! 4-tuple), and the owning process.

use std::{fmt, net::IpAddr};

use tcpstate_ebpf::{COMM_LEN, tcp};

/// A TCP state, as the kernel numbers them (`TCP_ESTABLISHED` = 1, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct State(pub u8);

impl State {
    pub const ESTABLISHED: State = State(tcp::ESTABLISHED);
    pub const SYN_SENT: State = State(tcp::SYN_SENT);
    pub const SYN_RECV: State = State(tcp::SYN_RECV);
    pub const FIN_WAIT1: State = State(tcp::FIN_WAIT1);
    pub const FIN_WAIT2: State = State(tcp::FIN_WAIT2);
    pub const TIME_WAIT: State = State(tcp::TIME_WAIT);
    pub const CLOSE: State = State(tcp::CLOSE);
    pub const CLOSE_WAIT: State = State(tcp::CLOSE_WAIT);
    pub const LAST_ACK: State = State(tcp::LAST_ACK);
    pub const LISTEN: State = State(tcp::LISTEN);
    pub const CLOSING: State = State(tcp::CLOSING);
    pub const NEW_SYN_RECV: State = State(tcp::NEW_SYN_RECV);

    /// The kernel's name without the `TCP_` prefix; `UNKNOWN` for a number
    /// the kernel does not define.
    pub fn as_str(self) -> &'static str {
        const NAMES: [&str; 13] = [
            "UNKNOWN",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
            "NEW_SYN_RECV",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("UNKNOWN")
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IP family of a socket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// Both ends of a socket: `l*` is this host's end, `r*` the peer's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Tuple {
    pub family: Family,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
}

impl Tuple {
    /// A tuple from two addresses; IPv4-mapped IPv6 addresses (an IPv6
    /// socket carrying IPv4 traffic) become IPv4.
    pub fn new(laddr: IpAddr, lport: u16, raddr: IpAddr, rport: u16) -> Tuple {
        let unmap = |a: IpAddr| match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        };
        let (mut l, mut r) = (unmap(laddr), unmap(raddr));
        // One end mapped, the other not set yet (`connect()` before the
        // local address is chosen): still IPv4, as the kernel filters it.
        let unset_v4 = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        match (l, r) {
            (IpAddr::V4(_), IpAddr::V6(v6)) if v6.is_unspecified() => r = unset_v4,
            (IpAddr::V6(v6), IpAddr::V4(_)) if v6.is_unspecified() => l = unset_v4,
            _ => {}
        }
        let family = if l.is_ipv4() && r.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let (laddr, raddr) = if family == Family::V6 {
            (laddr, raddr)
        } else {
            (l, r)
        };
        Tuple {
            family,
            laddr,
            lport,
            raddr,
            rport,
        }
    }
}

/// A socket's identity: its network namespace (one 4-tuple can exist in
/// many) and its 4-tuple.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SockId {
    /// Inode of the network namespace (as in `readlink /proc/PID/ns/net`).
    pub netns: u32,
    pub tuple: Tuple,
}

/// A process's command name, as the kernel's fixed 16-byte `comm`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm(pub [u8; COMM_LEN]);

impl Comm {
    pub fn new(name: &str) -> Comm {
        let mut bytes = [0; COMM_LEN];
        let n = name.len().min(COMM_LEN - 1);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        Comm(bytes)
    }

    /// The name's bytes, up to the first NUL: any bytes a process chose.
    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.0[..end]
    }

    /// The name as text, invalid UTF-8 replaced (for JSON, which escapes
    /// control characters itself).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.bytes())
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The process that owns a socket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Owner {
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn state_names_are_the_kernels() {
        assert_eq!(State::ESTABLISHED.as_str(), "ESTABLISHED");
        assert_eq!(State(tcp::FIN_WAIT2).to_string(), "FIN_WAIT2");
        assert_eq!(State::NEW_SYN_RECV.as_str(), "NEW_SYN_RECV");
        assert_eq!(State(0).as_str(), "UNKNOWN");
        assert_eq!(State(200).as_str(), "UNKNOWN");
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let mapped = |a: [u8; 4]| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped());
        let t = Tuple::new(mapped([10, 0, 0, 1]), 1, mapped([10, 0, 0, 2]), 2);
        assert_eq!(t.family, Family::V4);
        assert_eq!(t.laddr.to_string(), "10.0.0.1");
    }

    #[test]
    fn a_mapped_end_with_an_unset_one_is_ipv4() {
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        let unset = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        let t = Tuple::new(unset, 0, mapped, 80);
        assert_eq!(t.family, Family::V4);
        assert_eq!(t.laddr.to_string(), "0.0.0.0");
        assert_eq!(t.raddr.to_string(), "127.0.0.1");
        let both_unset = Tuple::new(unset, 80, unset, 0);
        assert_eq!(both_unset.family, Family::V6, "a dual-stack listener");
    }

    #[test]
    fn comm_keeps_the_kernels_bytes() {
        let c = Comm(*b"a\x1b[2J\xff\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(c.bytes(), b"a\x1b[2J\xff");
        assert_eq!(Comm::new("a-very-long-command-name").bytes().len(), 15);
    }
}
