//! The kernel's own TCP socket table, read through `NETLINK_SOCK_DIAG`
//! (inet_diag, what `ss -tan` uses).
//!
//! Events from the kernel programs can be missed (tcpstate started after the
//! connection closed, a full ring buffer); the socket table cannot. It is the
//! source of truth that tracked TIME_WAIT sockets are reconciled against: per
//! network namespace, one dump request per address family, with the kernel
//! filtering by state.

use std::{io, mem::size_of, path::Path};

use super::netns;
use crate::sock::{SockId, State, Tuple};
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

/// One socket from the kernel's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSocket {
    /// Its namespace (the one it was dumped from) and 4-tuple.
    pub id: SockId,
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

/// Receive buffer, reused for every datagram of a dump. The kernel sizes a
/// dump's datagrams to the reader's buffer, up to 32 KiB (about 370 TIME_WAIT
/// sockets); more only leaves room to spare.
const RECV_BUF_LEN: usize = 64 << 10;

/// Offset of `idiag_expires` in `struct inet_diag_msg`, after family, state,
/// timer, retransmits and the socket id. The crate keeps no duration for
/// TIME_WAIT timers, so the field is read from the message itself.
const EXPIRES_OFFSET: usize = 4 + size_of::<SocketIdBuffer>();

/// Sockets of the network namespace at `path` (`/proc/PID/ns/net`,
/// `/run/netns/NAME`) whose state is in `states`, dumped on a thread that
/// enters it, so the caller's namespace never changes.
pub fn dump_in(path: &Path, states: &[State]) -> Result<Vec<KernelSocket>> {
    netns::in_each(&[path], |netns| dump_current(netns, states))
        .pop()
        .unwrap_or_else(|| Err(anyhow!("no dump of {}", path.display())))
}

/// Sockets whose state is in `states`, both families, in the calling
/// thread's namespace, labelled `netns` (see [`netns::in_each`]).
pub fn dump_current(netns: u32, states: &[State]) -> Result<Vec<KernelSocket>> {
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

/// Appends the sockets in one datagram (as the kernel sends a dump, for
/// namespace `netns`); true once the dump is done. Public for the fuzzer:
/// everything in it comes from outside.
pub fn parse_datagram(
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
            NetlinkPayload::Done(done) if done.code < 0 => {
                bail!("the kernel aborted the dump: {}", errno(done.code))
            }
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(error) => {
                bail!(
                    "the kernel refused the request: {}",
                    errno(error.raw_code())
                )
            }
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

/// The error a negative netlink code stands for. Any code at all may arrive,
/// and i32::MIN has no negation (the netlink crate's own `Display` panics on it).
fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code.saturating_neg())
}

fn kernel_socket(header: &InetResponseHeader, payload: &[u8], netns: u32) -> Result<KernelSocket> {
    let expires = payload
        .get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)
        .context("inet_diag message too short")?;
    let id = &header.socket_id;
    Ok(KernelSocket {
        id: SockId {
            netns,
            tuple: Tuple::new(
                id.source_address,
                id.source_port,
                id.destination_address,
                id.destination_port,
            ),
        },
        state: State(header.state),
        expires_ms: parse_u32(expires)?,
        inode: header.inode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink control message of `kind` carrying `code`: NLMSG_DONE (3)
    /// as the kernel ends a dump, NLMSG_ERROR (2) as it refuses a request
    /// (followed by the header of the refused request).
    fn control(kind: u16, code: i32) -> Vec<u8> {
        let length: u32 = if kind == 2 { 36 } else { 20 };
        let mut msg = Vec::new();
        msg.extend_from_slice(&length.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        msg.extend_from_slice(&[0; 8]); // sequence, port
        msg.extend_from_slice(&code.to_ne_bytes());
        msg.resize(length as usize, 0);
        msg
    }

    #[test]
    fn the_end_of_a_dump_and_its_errors() {
        let mut sockets = Vec::new();
        assert!(parse_datagram(&control(3, 0), 1, &mut sockets).unwrap());
        for (kind, code, says) in [
            (3, -4, "aborted"),
            (2, -22, "refused"),
            // Found by fuzzing: codes with no negation.
            (3, i32::MIN, "aborted"),
            (2, i32::MIN, "refused"),
        ] {
            let err = parse_datagram(&control(kind, code), 1, &mut sockets).unwrap_err();
            assert!(err.to_string().contains(says), "{kind} {code}: {err}");
        }
        assert!(sockets.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[][..], &[0xff; 3], &[0x10, 0, 0, 0, 0xff, 0xff, 0, 0]] {
            let _ = parse_datagram(bytes, 1, &mut Vec::new());
        }
    }
}
