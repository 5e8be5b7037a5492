//! Netlink sock_diag answers, as one datagram from the socket.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut sockets = Vec::new();
    let _ = tcpstate::host::sockdiag::parse_datagram(data, 1, &mut sockets);
});
