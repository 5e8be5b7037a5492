//! Host TCP facts that bound TIME_WAIT: the ephemeral port range,
//! `tcp_tw_reuse`, `tcp_max_tw_buckets`, and the kernel's counts of
//! TIME_WAIT sockets it could not create (`TCPTimeWaitOverflow`), that
//! `connect()` took over (`TWRecycled`) or that it ended early
//! (`TWKilled`).

use std::fs;

/// What the kernel says, as read from /proc in the calling thread's
/// network namespace (each namespace has its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// `net.ipv4.ip_local_port_range`.
    pub port_range: (u16, u16),
    /// Ports of `net.ipv4.ip_local_reserved_ports` inside the range:
    /// `connect()` never picks them.
    pub reserved: u32,
    /// `net.ipv4.tcp_tw_reuse`: 0 off, 1 on, 2 loopback only.
    pub tw_reuse: u8,
    /// `net.ipv4.tcp_timestamps` (0 off): `tcp_tw_reuse` needs them.
    pub timestamps: u8,
    pub max_tw_buckets: u64,
    /// `TcpExt: TCPTimeWaitOverflow` from /proc/net/netstat.
    pub tw_overflow: u64,
    /// `TcpExt: TWRecycled`: TIME_WAIT sockets `connect()` took over
    /// (`tcp_tw_reuse`).
    pub tw_recycled: u64,
    /// `TcpExt: TWKilled`: TIME_WAIT sockets the kernel ended on a short
    /// timer (at most 4 s) rather than after the full TIME_WAIT.
    pub tw_killed: u64,
    /// `net.ipv4.tcp_fin_timeout`, in seconds: it bounds FIN_WAIT2, not
    /// TIME_WAIT (a common mistake to lower it for TIME_WAIT).
    pub fin_timeout: u32,
}

impl Facts {
    /// Reads them; a value that cannot be read stays 0.
    pub fn read() -> Facts {
        let port_range = port_range();
        // Not /proc/net: that follows the process, not this thread.
        let netstat = fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
        let counter = |name| netstat_value(&netstat, "TcpExt", name).unwrap_or(0);
        Facts {
            port_range,
            reserved: reserved_in(&sysctl("ip_local_reserved_ports"), port_range),
            tw_reuse: sysctl("tcp_tw_reuse").trim().parse().unwrap_or(0),
            timestamps: sysctl("tcp_timestamps").trim().parse().unwrap_or(0),
            max_tw_buckets: sysctl("tcp_max_tw_buckets").trim().parse().unwrap_or(0),
            tw_overflow: counter("TCPTimeWaitOverflow"),
            tw_recycled: counter("TWRecycled"),
            tw_killed: counter("TWKilled"),
            fin_timeout: sysctl("tcp_fin_timeout").trim().parse().unwrap_or(0),
        }
    }

    /// Ports in the ephemeral range.
    pub fn range_size(&self) -> u32 {
        u32::from(self.port_range.1).saturating_sub(u32::from(self.port_range.0)) + 1
    }

    /// Ports `connect()` can pick: the range without the reserved ones.
    pub fn usable_ports(&self) -> u32 {
        self.range_size().saturating_sub(self.reserved)
    }
}

/// `net.ipv4.ip_local_port_range`, or (0, 0) when it cannot be read.
pub fn port_range() -> (u16, u16) {
    parse_range(&sysctl("ip_local_port_range")).unwrap_or((0, 0))
}

fn sysctl(name: &str) -> String {
    fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).unwrap_or_default()
}

/// Parses outside text: the contents of `ip_local_port_range`, `LOW HIGH`.
pub fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// Parses outside text: how many ports of `ip_local_reserved_ports`
/// (`8080,9000-9100`) lie inside `range`. Malformed items count nothing.
pub fn reserved_in(text: &str, range: (u16, u16)) -> u32 {
    let (low, high) = (u32::from(range.0), u32::from(range.1));
    text.trim()
        .split(',')
        .filter_map(|item| {
            let item = item.trim();
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
            let (a, b) = (u32::from(a).max(low), u32::from(b).min(high));
            (a <= b).then(|| b - a + 1)
        })
        .sum::<u32>()
        .min(high.saturating_sub(low) + 1)
}

/// Parses outside text: a counter from /proc/net/netstat (header/value line pairs).
pub fn netstat_value(text: &str, group: &str, name: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    lines.chunks(2).find_map(|pair| {
        let [names, values] = pair else { return None };
        let prefix = format!("{group}:");
        let names = names.strip_prefix(&prefix)?.split_whitespace();
        let values = values.strip_prefix(&prefix)?.split_whitespace();
        names.zip(values).find(|(n, _)| *n == name)?.1.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_port_range() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("9 1"), None);
        let f = Facts {
            port_range: (32768, 60999),
            ..Facts::default()
        };
        assert_eq!(f.range_size(), 28232);
        let text = "8080,32768-32777,40000,60990-61010\n";
        let reserved = reserved_in(text, (32768, 60999));
        assert_eq!(reserved, 10 + 1 + 10);
        assert_eq!(reserved_in("", (32768, 60999)), 0);
        assert_eq!(reserved_in("x,5-,1-65535", (100, 199)), 100);
        let f = Facts { reserved, ..f };
        assert_eq!(f.usable_ports(), 28232 - 21);
    }

    #[test]
    fn finds_netstat_counters() {
        let text = "TcpExt: SyncookiesSent TCPTimeWaitOverflow\nTcpExt: 3 17\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            netstat_value(text, "TcpExt", "TCPTimeWaitOverflow"),
            Some(17)
        );
        assert_eq!(netstat_value(text, "IpExt", "InNoRoutes"), Some(0));
        assert_eq!(netstat_value(text, "TcpExt", "Nope"), None);
    }

    #[test]
    fn reads_this_host() {
        let f = Facts::read();
        assert!(f.range_size() > 1, "{f:?}");
        assert!(f.max_tw_buckets > 0, "{f:?}");
    }
}
