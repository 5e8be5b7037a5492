//! The oracle: what the kernel itself says about a test's network namespace,
//! read with `ss` and `nstat` run inside it, and from its `/proc/sys`.

use std::{net::IpAddr, process::Command};

use crate::netns::NetNs;

/// A socket's 4-tuple: local address and port, remote address and port.
pub type Tuple = (IpAddr, u16, IpAddr, u16);

/// One TIME_WAIT socket as `ss` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelTw {
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    /// Time left on its TIME_WAIT timer (ss prints whole seconds above 10 s).
    pub expires_ms: u64,
}

impl KernelTw {
    pub fn tuple(&self) -> Tuple {
        (self.laddr, self.lport, self.raddr, self.rport)
    }
}

/// The TIME_WAIT sockets in `ns`: `ss -tanHo state time-wait`.
pub fn time_wait(ns: &NetNs) -> Vec<KernelTw> {
    let mut ss = ns.command("ss");
    ss.args(["-tanHo", "state", "time-wait"]);
    stdout_of(&mut ss).lines().map(parse_ss_line).collect()
}

/// Every TCP socket of `ns` on `port`, in any state, as `ss -tanoe` prints
/// them: for the failure message of a test whose oracle disagrees.
pub fn sockets_on(ns: &NetNs, port: u16) -> String {
    let mut ss = ns.command("ss");
    ss.args([
        "-tanHoe",
        &format!("( sport = :{port} or dport = :{port} )"),
    ]);
    stdout_of(&mut ss)
}

/// The absolute value of a kernel SNMP counter in `ns`, e.g.
/// `TcpExtTWRecycled` (`nstat -asz`).
pub fn nstat(ns: &NetNs, counter: &str) -> u64 {
    let mut nstat = ns.command("nstat");
    nstat.args(["-asz", counter]);
    let out = stdout_of(&mut nstat);
    out.lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(counter)).then(|| fields.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {counter} in nstat output {out:?}"))
}

/// A sysctl's value in `ns`, e.g. `net.ipv4.tcp_tw_reuse`, read from
/// `/proc/sys` by a thread inside `ns` (no dependency on procps).
pub fn sysctl(ns: &NetNs, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(|| std::fs::read_to_string(&path))
        .unwrap_or_else(|e| panic!("reading {path} in network namespace {}: {e}", ns.name))
        .trim()
        .to_string()
}

/// Writes a sysctl inside `ns`, e.g. `net.ipv4.ip_local_port_range`.
pub fn set_sysctl(ns: &NetNs, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(|| std::fs::write(&path, value))
        .unwrap_or_else(|e| panic!("writing {path} in {}: {e}", ns.name));
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `Recv-Q Send-Q Local:Port Peer:Port timer:(timewait,59sec,0)`
fn parse_ss_line(line: &str) -> KernelTw {
    let [_, _, local, peer, timer] = line.split_whitespace().collect::<Vec<_>>()[..] else {
        panic!("unexpected ss line {line:?}");
    };
    let (laddr, lport) = endpoint(local);
    let (raddr, rport) = endpoint(peer);
    let left = timer
        .strip_prefix("timer:(timewait,")
        .and_then(|t| t.split(',').next())
        .unwrap_or_else(|| panic!("no TIME_WAIT timer in ss line {line:?}"));
    KernelTw {
        laddr,
        lport,
        raddr,
        rport,
        expires_ms: ss_duration_ms(left),
    }
}

/// `127.0.0.1:80` or `[::1]:80`.
fn endpoint(s: &str) -> (IpAddr, u16) {
    let (addr, port) = s
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("not address:port: {s:?}"));
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    (
        addr.parse().unwrap_or_else(|_| panic!("bad address {s:?}")),
        port.parse().unwrap_or_else(|_| panic!("bad port {s:?}")),
    )
}

/// ss's timer format: `[Nmin][Nsec | S.MMMms | MMMms]`, empty for zero.
fn ss_duration_ms(s: &str) -> u64 {
    let number = |n: &str| -> u64 {
        n.parse()
            .unwrap_or_else(|_| panic!("bad ss duration {s:?}"))
    };
    let (minutes, rest) = match s.split_once("min") {
        Some((m, rest)) => (number(m), rest),
        None => (0, s),
    };
    let rest_ms = if rest.is_empty() {
        0
    } else if let Some(secs) = rest.strip_suffix("sec") {
        number(secs) * 1000
    } else if let Some(ms) = rest.strip_suffix("ms") {
        match ms.split_once('.') {
            Some((secs, ms)) => number(secs) * 1000 + number(ms),
            None => number(ms),
        }
    } else {
        panic!("bad ss duration {s:?}")
    };
    minutes * 60_000 + rest_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_durations() {
        for (s, ms) in [
            ("", 0),
            ("123ms", 123),
            ("5.007ms", 5007),
            ("5sec", 5000),
            ("59sec", 59_000),
            ("1min", 60_000),
            ("1min5sec", 65_000),
        ] {
            assert_eq!(ss_duration_ms(s), ms, "{s:?}");
        }
    }

    #[test]
    fn ss_lines() {
        let v6 = parse_ss_line("0      0      [::1]:8080 [::1]:41234 timer:(timewait,7.250ms,0)");
        assert_eq!(
            (v6.tuple(), v6.expires_ms),
            (
                ("::1".parse().unwrap(), 8080, "::1".parse().unwrap(), 41234),
                7250
            )
        );
        let v4 = parse_ss_line("0 0 127.0.0.1:43605 127.0.0.1:36136 timer:(timewait,59sec,0)");
        assert_eq!(v4.lport, 43605);
        assert_eq!(v4.rport, 36136);
        assert_eq!(v4.expires_ms, 59_000);
    }
}
