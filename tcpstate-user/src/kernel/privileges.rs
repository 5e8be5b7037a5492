//! The privileges each part of tcpstate needs, checked up front so that a
//! missing one is named in one clear line instead of failing deep inside a
//! system call.

use std::fs;

use anyhow::{Context as _, Result, anyhow, bail};

/// Capability bits (see `capabilities(7)`).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
fn effective_capabilities() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| anyhow!("no CapEff line in /proc/self/status"))
}

const PERF_EVENT_PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Fails with a clear message unless this process may load and attach
/// tracing programs (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN).
pub fn check_tracing() -> Result<()> {
    let eff = effective_capabilities()?;
    require(
        missing_capabilities(eff),
        "needed to load and attach eBPF programs",
    )?;
    // Debian's and Ubuntu's kernels add a level 3 at which only
    // CAP_SYS_ADMIN may open perf events, which a classic tracepoint
    // attachment is; they default to it.
    let paranoid = fs::read_to_string(PERF_EVENT_PARANOID)
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok());
    match paranoid {
        Some(level) if level > 2 && eff & (1 << CAP_SYS_ADMIN) == 0 => bail!(
            "kernel.perf_event_paranoid is {level}: above 2 (a Debian and Ubuntu kernel \
             restriction) only CAP_SYS_ADMIN may attach tracepoints: run tcpstate as root, \
             grant it CAP_SYS_ADMIN, or set kernel.perf_event_paranoid=2"
        ),
        _ => Ok(()),
    }
}

/// Fails with a clear message unless this process may enter other network
/// namespaces to read their socket tables (CAP_SYS_ADMIN).
pub fn check_namespace_access() -> Result<()> {
    let missing = if effective_capabilities()? & (1 << CAP_SYS_ADMIN) == 0 {
        vec!["CAP_SYS_ADMIN"]
    } else {
        Vec::new()
    };
    require(
        missing,
        "needed to read the socket tables of every network namespace",
    )
}

fn require(missing: Vec<&str>, why: &str) -> Result<()> {
    if !missing.is_empty() {
        bail!(
            "missing {} ({why}): run tcpstate as root, e.g. with sudo",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// The tracing capabilities lacking from the effective set `eff`.
fn missing_capabilities(eff: u64) -> Vec<&'static str> {
    let has = |cap: u32| eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_needed() {
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(missing_capabilities(1 << CAP_BPF), ["CAP_PERFMON"]);
        assert_eq!(missing_capabilities(0), ["CAP_BPF", "CAP_PERFMON"]);
    }
}
