//! What tcpstate itself costs: CPU time and resident memory, from
//! `/proc/self/stat`, for the exporter's self-observation.

/// tcpstate's own use of the host.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

impl Usage {
    /// Reads it now; what cannot be read stays 0.
    pub fn read() -> Usage {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        parse(&stat, ticks.max(1) as f64, page.max(0) as u64)
    }
}

/// A `/proc/PID/stat` line: the fields after the command name (which may
/// hold spaces and parentheses) are counted from its last `)`.
fn parse(stat: &str, ticks_per_s: f64, page_bytes: u64) -> Usage {
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // Field 3 (state) is the first after the name: utime is field 14,
    // stime 15, rss 24.
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    Usage {
        cpu_seconds: (field(14) + field(15)) as f64 / ticks_per_s,
        resident_bytes: field(24) * page_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_from_a_stat_line() {
        let line = "4242 (tcp state) (x) S 1 4242 4242 0 -1 4194560 1033 0 0 0 250 50 0 0 20 0 \
                    3 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let u = parse(line, 100.0, 4096);
        assert_eq!(u.cpu_seconds, 3.0);
        assert_eq!(u.resident_bytes, 2560 * 4096);
        assert_eq!(parse("garbage", 100.0, 4096), Usage::default());
    }

    #[test]
    fn this_process_uses_memory() {
        assert!(Usage::read().resident_bytes > 0);
    }
}
