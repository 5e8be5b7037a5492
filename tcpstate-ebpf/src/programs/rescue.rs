//! Finding this CPU's `bpf_prog_active`, the per-CPU guard that makes the
//! kernel skip a classic tracepoint program nested inside another BPF run,
//! so that the rescue programs act exactly when the kernel skips.
//!
//! This is the one part of the programs that rests on kernel internals
//! beyond the tracepoints: the guard is a static per-CPU variable, and
//! aya 0.14 cannot name kernel symbols in programs. Its address comes from
//! the loader, or is derived from what a program can read (see
//! [`GuardOffsets`]).

use aya_ebpf::{helpers::bpf_probe_read_kernel, maps::PerCpuArray};
use tcpstate_ebpf::{GuardOffsets, IPPROTO_TCP};

use super::{GUARD, record::read_kernel};

/// Whether the kernel skips this CPU's classic tracepoint programs right
/// now: this CPU's `bpf_prog_active` is raised. `sk` (a TCP socket) lets
/// the first call on a CPU find the guard when it has to be derived.
pub fn classic_skipped(sk: Option<u64>) -> bool {
    let Some(slot) = GUARD.get_ptr_mut(0) else {
        return false;
    };
    let mut addr = unsafe { *slot };
    if addr == 0 {
        match guard_address(slot, sk) {
            Ok(found) => {
                unsafe { *slot = found };
                addr = found;
            }
            Err(_) => return false,
        }
    }
    matches!(unsafe { bpf_probe_read_kernel(addr as *const i32) }, Ok(n) if n > 0)
}

/// A pointer's address as a plain number. The verifier allows no
/// arithmetic on a map or map-value pointer; read back through memory, the
/// address is a number like any other.
fn address<T>(p: *const T) -> Result<u64, i32> {
    let holder = [p];
    unsafe { bpf_probe_read_kernel(holder.as_ptr().cast::<u64>()) }
}

/// This CPU's `bpf_prog_active` (see [`GuardOffsets`]), found from `elem`,
/// this CPU's element of [`GUARD`], and when its static address is not
/// known outright, from TCP socket `sk`.
fn guard_address(elem: *const u64, sk: Option<u64>) -> Result<u64, i32> {
    const ENOENT: i32 = -2;
    let g: GuardOffsets = conf!(guard);
    if g.array_pptrs == 0 {
        return Err(ENOENT);
    }
    let map = address(&GUARD as *const PerCpuArray<u64>)?;
    let cpu_offset = address(elem)?.wrapping_sub(read_kernel::<u64>(map, g.array_pptrs)?);
    if g.prog_active != 0 {
        return Ok(g.prog_active.wrapping_add(cpu_offset));
    }
    let sk = sk.ok_or(ENOENT)?;
    if read_kernel::<u16>(sk, conf!(sock.protocol))? != IPPROTO_TCP {
        return Err(ENOENT);
    }
    let prot = read_kernel::<u64>(sk, conf!(sock.prot))?;
    let fw_alloc = read_kernel::<u64>(prot, g.proto_fw_alloc)?;
    Ok(fw_alloc
        .wrapping_add(g.prog_active_delta as u64)
        .wrapping_add(cpu_offset))
}
