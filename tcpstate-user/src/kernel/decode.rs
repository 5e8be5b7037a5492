//! Decoding of ring-buffer records into typed events.
//!
//! Pure: no kernel access, so everything here is unit-tested on synthetic
//! records.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use tcpstate_ebpf::{AF_INET, AF_INET6, RawEvent, bind, flags, kind, life::Life};

use crate::sock::{Comm, Owner, SockId, State, Tuple};

/// What happened to the socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Transition {
        old: State,
        new: State,
    },
    ResetReceived,
    ResetSent,
    /// A `bind()` failed with `EADDRINUSE`; the socket had these options.
    BindFailed {
        reuseaddr: bool,
        reuseport: bool,
    },
    /// A `connect()` failed with this errno before the socket reached
    /// `SYN_SENT`.
    ConnectError {
        errno: u8,
    },
}

/// One decoded ring-buffer record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Event {
    /// Kernel CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub kind: Kind,
    /// Kernel address of the socket: unique among live sockets.
    pub skaddr: u64,
    /// Addresses are meaningful for transitions only; resets carry the ports.
    pub id: SockId,
    /// Time of the socket's previous transition, when the kernel saw it.
    pub prev_ts_ns: Option<u64>,
    /// The owner as attributed in the kernel.
    pub owner: Option<Owner>,
    /// The socket's life as the kernel follows it (transitions only; zero
    /// for other records).
    pub life: Life,
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
        kind::BIND_FAILED => Kind::BindFailed {
            reuseaddr: raw.oldstate & bind::REUSEADDR != 0,
            reuseport: raw.oldstate & bind::REUSEPORT != 0,
        },
        kind::CONNECT_ERROR => Kind::ConnectError {
            errno: raw.oldstate,
        },
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
        id: SockId {
            netns: raw.netns,
            tuple: Tuple::new(laddr, raw.lport, raddr, raw.rport),
        },
        prev_ts_ns: (raw.prev_ts_ns != 0).then_some(raw.prev_ts_ns),
        owner,
        life: Life {
            opened_ns: raw.opened_ns,
            seen: raw.seen,
            _pad: [0; 3],
        },
    })
}

fn v4(bytes: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sock::Family;

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
            _pad: 0,
            seen: 1 << 4,
            laddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            raddr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm: *b"nginx\0\0\0\0\0\0\0\0\0\0\0",
            opened_ns: 1_000_000,
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
        assert_eq!(ev.id.tuple.family, Family::V4);
        assert_eq!(ev.id.tuple.laddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ev.id.tuple.raddr, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((ev.id.tuple.lport, ev.id.tuple.rport), (9098, 41566));
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
        assert_eq!(ev.id.tuple.family, Family::V6);
        assert_eq!(ev.id.tuple.raddr.to_string(), "2001:db8::7");

        raw.laddr = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets();
        raw.raddr = Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets();
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.id.tuple.family, Family::V4);
        assert_eq!(ev.id.tuple.laddr.to_string(), "10.0.0.1");
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
    fn decodes_failed_binds_with_their_options() {
        let mut raw = raw_transition(AF_INET6, bind::REUSEPORT, 0);
        raw.kind = kind::BIND_FAILED;
        raw.laddr = Ipv6Addr::UNSPECIFIED.octets();
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(
            ev.kind,
            Kind::BindFailed {
                reuseaddr: false,
                reuseport: true
            }
        );
        assert_eq!(ev.id.tuple.laddr.to_string(), "::");
        assert_eq!(ev.id.tuple.lport, 9098);
        raw.kind = kind::CONNECT_ERROR;
        raw.oldstate = 101;
        let ev = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(ev.kind, Kind::ConnectError { errno: 101 });
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
}
