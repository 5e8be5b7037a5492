//! Text from /proc and sysctls: the port range, /proc/net/netstat, the
//! targets of /proc/PID/fd links, and /proc/kallsyms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpstate::{
    host::{owners, sysctl},
    kernel::guard,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = sysctl::parse_range(&text);
    let _ = sysctl::reserved_in(&text, (1, 65535));
    let _ = sysctl::reserved_in(&text, (32768, 60999));
    let _ = sysctl::netstat_value(&text, "TcpExt", "TCPTimeWaitOverflow");
    let _ = sysctl::netstat_value(&text, "IpExt", "InNoRoutes");
    // Group and counter names taken from the input too, split at the first
    // two lines, so that every name gets tried.
    let mut parts = text.splitn(3, '\n');
    if let (Some(group), Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
        let _ = sysctl::netstat_value(rest, group, name);
    }
    let _ = owners::socket_inode(&text);
    let _ = guard::data_symbol(&text, "bpf_prog_active");
});
