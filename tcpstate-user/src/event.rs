//! Decoding of ring-buffer records into typed events, TCP state names, and
//! the kernel-clock to wall-clock conversion.
//!
//! Pure: no kernel access, so everything here is unit-tested on synthetic
//! records.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use tcpstate_ebpf::{AF_INET, AF_INET6, COMM_LEN, RawEvent, flags, kind};

/// A TCP state, as the kernel numbers them (`TCP_ESTABLISHED` = 1, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct State(pub u8);

impl State {
    pub const ESTABLISHED: State = State(1);
    pub const SYN_SENT: State = State(2);
    pub const SYN_RECV: State = State(3);
    pub const FIN_WAIT1: State = State(4);
    pub const FIN_WAIT2: State = State(5);
    pub const TIME_WAIT: State = State(6);
    pub const CLOSE: State = State(7);
    pub const CLOSE_WAIT: State = State(8);
    pub const LAST_ACK: State = State(9);
    pub const LISTEN: State = State(10);
    pub const CLOSING: State = State(11);
    pub const NEW_SYN_RECV: State = State(12);

    /// The kernel's name without the `TCP_` prefix, `UNKNOWN(n)` otherwise.
    pub fn name(self) -> &'static str {
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
        f.write_str(self.name())
    }
}

/// IP family of a socket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
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
        let (l, r) = (unmap(laddr), unmap(raddr));
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

/// A process's command name, as the kernel's fixed 16-byte `comm`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm([u8; COMM_LEN]);

impl Comm {
    pub fn new(name: &str) -> Comm {
        let mut bytes = [0; COMM_LEN];
        let n = name.len().min(COMM_LEN - 1);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        Comm(bytes)
    }

    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.0[..end])
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

/// What happened to the socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Transition { old: State, new: State },
    ResetReceived,
    ResetSent,
}

/// One decoded ring-buffer record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Event {
    /// Kernel CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub kind: Kind,
    /// Kernel address of the socket: unique among live sockets.
    pub skaddr: u64,
    /// Network namespace inode.
    pub netns: u32,
    /// Addresses are meaningful for transitions only; resets carry the ports.
    pub tuple: Tuple,
    /// Time of the socket's previous transition, when the kernel saw it.
    pub prev_ts_ns: Option<u64>,
    /// The owner as attributed in the kernel.
    pub owner: Option<Owner>,
}

/// Why a record could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Length(usize),
    Family(u8),
    Kind(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Length(n) => write!(f, "record of {n} bytes, expected {}", RECORD_LEN),
            DecodeError::Family(n) => write!(f, "unknown address family {n}"),
            DecodeError::Kind(n) => write!(f, "unknown record kind {n}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Size of one ring-buffer record.
pub const RECORD_LEN: usize = std::mem::size_of::<RawEvent>();

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < RECORD_LEN {
        return Err(DecodeError::Length(bytes.len()));
    }
    // SAFETY: length checked above; `RawEvent` is plain integers and byte
    // arrays, valid for any bit pattern; the read tolerates any alignment.
    let raw: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    decode_raw(&raw)
}

/// Decodes a record already copied out of the ring buffer.
pub fn decode_raw(raw: &RawEvent) -> Result<Event, DecodeError> {
    let kind = match raw.kind {
        kind::TRANSITION => Kind::Transition {
            old: State(raw.oldstate),
            new: State(raw.newstate),
        },
        kind::RESET_RECEIVED => Kind::ResetReceived,
        kind::RESET_SENT => Kind::ResetSent,
        other => return Err(DecodeError::Kind(other)),
    };
    let (laddr, raddr) = match raw.family {
        AF_INET => (IpAddr::V4(v4(&raw.laddr)), IpAddr::V4(v4(&raw.raddr))),
        AF_INET6 => (
            IpAddr::V6(Ipv6Addr::from(raw.laddr)),
            IpAddr::V6(Ipv6Addr::from(raw.raddr)),
        ),
        other => return Err(DecodeError::Family(other)),
    };
    let owner = (raw.flags & flags::OWNER_KNOWN != 0).then_some(Owner {
        pid: raw.pid,
        tid: raw.tid,
        comm: Comm(raw.comm),
    });
    Ok(Event {
        ts_ns: raw.ts_ns,
        kind,
        skaddr: raw.skaddr,
        netns: raw.netns,
        tuple: Tuple::new(laddr, raw.lport, raddr, raw.rport),
        prev_ts_ns: (raw.prev_ts_ns != 0).then_some(raw.prev_ts_ns),
        owner,
    })
}

fn v4(bytes: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

/// Converts kernel CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero.
    epoch: SystemTime,
}

impl Clock {
    /// Samples both clocks now.
    pub fn system() -> Clock {
        let mono = monotonic_ns();
        Clock {
            epoch: SystemTime::now() - Duration::from_nanos(mono),
        }
    }

    /// A clock whose monotonic zero is `epoch` (for tests and replays).
    pub fn at(epoch: SystemTime) -> Clock {
        Clock { epoch }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        self.epoch + Duration::from_nanos(mono_ns)
    }
}

/// Current CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A raw transition record as the eBPF program would write it.
    pub(crate) fn raw_transition(family: u8, old: u8, new: u8) -> RawEvent {
        RawEvent {
            ts_ns: 5_000_000,
            skaddr: 0xffff_8881_02e2_4a00,
            prev_ts_ns: 2_000_000,
            netns: 4026531840,
            pid: 1234,
            tid: 1235,
            kind: kind::TRANSITION,
            oldstate: old,
            newstate: new,
            family,
            lport: 9098,
            rport: 41566,
            flags: flags::OWNER_KNOWN,
            _pad: [0; 3],
            laddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            raddr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm: *b"nginx\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn bytes_of(raw: &RawEvent) -> Vec<u8> {
        // SAFETY: RawEvent has no padding; viewing it as bytes is sound.
        unsafe { std::slice::from_raw_parts((raw as *const RawEvent).cast::<u8>(), RECORD_LEN) }
            .to_vec()
    }

    #[test]
    fn decodes_ipv4_transition() {
        let ev = decode(&bytes_of(&raw_transition(AF_INET, 1, 4))).unwrap();
        assert_eq!(
            ev.kind,
            Kind::Transition {
                old: State::ESTABLISHED,
                new: State::FIN_WAIT1
            }
        );
        assert_eq!(ev.tuple.family, Family::V4);
        assert_eq!(ev.tuple.laddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ev.tuple.raddr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((ev.tuple.lport, ev.tuple.rport), (9098, 41566));
        assert_eq!(ev.prev_ts_ns, Some(2_000_000));
        let owner = ev.owner.unwrap();
        assert_eq!((owner.pid, owner.tid), (1234, 1235));
        assert_eq!(owner.comm.as_str(), "nginx");
    }

    #[test]
    fn decodes_ipv6_and_mapped_ipv4() {
        let mut raw = raw_transition(AF_INET6, 2, 1);
        raw.laddr = Ipv6Addr::LOCALHOST.octets();
        raw.raddr = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.tuple.family, Family::V6);
        assert_eq!(ev.tuple.raddr.to_string(), "2001:db8::7");

        raw.laddr = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
        raw.raddr = Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets();
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.tuple.family, Family::V4);
        assert_eq!(ev.tuple.laddr.to_string(), "10.0.0.1");
    }

    #[test]
    fn unknown_owner_and_unseen_previous_transition() {
        let mut raw = raw_transition(AF_INET, 3, 1);
        raw.flags = 0;
        raw.prev_ts_ns = 0;
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.owner, None);
        assert_eq!(ev.prev_ts_ns, None);
    }

    #[test]
    fn decodes_resets() {
        let mut raw = raw_transition(AF_INET, 1, 1);
        raw.kind = kind::RESET_RECEIVED;
        assert_eq!(decode(&bytes_of(&raw)).unwrap().kind, Kind::ResetReceived);
        raw.kind = kind::RESET_SENT;
        assert_eq!(decode(&bytes_of(&raw)).unwrap().kind, Kind::ResetSent);
    }

    #[test]
    fn rejects_malformed_records() {
        let raw = raw_transition(AF_INET, 1, 4);
        assert_eq!(decode(&bytes_of(&raw)[..40]), Err(DecodeError::Length(40)));
        let mut bad = raw;
        bad.family = 7;
        assert_eq!(decode(&bytes_of(&bad)), Err(DecodeError::Family(7)));
        let mut bad = raw;
        bad.kind = 99;
        assert_eq!(decode(&bytes_of(&bad)), Err(DecodeError::Kind(99)));
    }

    #[test]
    fn state_names_match_the_kernel() {
        let names: Vec<_> = (1..=12).map(|n| State(n).name()).collect();
        assert_eq!(
            names,
            [
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
                "NEW_SYN_RECV"
            ]
        );
        assert_eq!(State(0).name(), "UNKNOWN");
        assert_eq!(State(200).name(), "UNKNOWN");
    }

    #[test]
    fn clock_maps_monotonic_to_wall() {
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = Clock::at(epoch);
        assert_eq!(clock.wall(1_500_000), epoch + Duration::from_micros(1500));
    }
}
