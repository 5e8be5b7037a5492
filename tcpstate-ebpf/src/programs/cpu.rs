//! This CPU's part of the programs' state: where two of its kernel
//! variables lie (`bpf_prog_active`, the guard that makes the kernel skip a
//! classic tracepoint program nested inside another BPF run, and the
//! preempt count, which tells softirq from process context), and its
//! claims (`tcpstate_ebpf::claim`).
//!
//! This is the one part of the programs that rests on kernel internals
//! beyond the tracepoints: both variables are static per-CPU variables,
//! and aya cannot name kernel symbols in programs. Their addresses come
//! from the loader, or are derived from what a program can read (see
//! [`GuardOffsets`]).

use aya_ebpf::{helpers::bpf_probe_read_kernel, maps::PerCpuArray};
use tcpstate_ebpf::{
    GuardOffsets, IPPROTO_TCP,
    claim::{self, Claims},
};

use super::{CPU, record::read_kernel};

/// One CPU's element of [`CPU`].
#[repr(C)]
pub struct PerCpu {
    /// This CPU's `bpf_prog_active`, 0 until found.
    prog_active: u64,
    /// This CPU's preempt count, 0 until found (or where unknown).
    preempt_count: u64,
    pub claims: Claims,
}

impl PerCpu {
    /// Whether the kernel skips this CPU's classic tracepoint programs
    /// right now: its `bpf_prog_active` is raised.
    pub fn classic_skipped(&self) -> bool {
        self.prog_active != 0
            && matches!(
                unsafe { bpf_probe_read_kernel(self.prog_active as *const i32) },
                Ok(n) if n > 0
            )
    }

    /// The claim slot of the transition running now (process context where
    /// the preempt count is unknown).
    pub fn context(&self) -> usize {
        if self.preempt_count == 0 {
            return claim::PROCESS;
        }
        match unsafe { bpf_probe_read_kernel(self.preempt_count as *const u32) } {
            Ok(count) => claim::context(count),
            Err(_) => claim::PROCESS,
        }
    }
}

/// This CPU's element of [`CPU`]. `sk` (a TCP socket) lets the first call
/// on a CPU find its variables when their addresses have to be derived.
pub fn this(sk: Option<u64>) -> Option<&'static mut PerCpu> {
    let elem = unsafe { &mut *CPU.get_ptr_mut(0)? };
    if elem.prog_active == 0
        && let Ok((prog_active, preempt_count)) = addresses(elem, sk)
    {
        elem.prog_active = prog_active;
        elem.preempt_count = preempt_count;
    }
    Some(elem)
}

/// A pointer's address as a plain number. The verifier allows no
/// arithmetic on a map or map-value pointer; read back through memory, the
/// address is a number like any other.
fn address<T>(p: *const T) -> Result<u64, i32> {
    let holder = [p];
    unsafe { bpf_probe_read_kernel(holder.as_ptr().cast::<u64>()) }
}

/// This CPU's `bpf_prog_active` and preempt count (0 where unknown; see
/// [`GuardOffsets`]), found from `elem`, this CPU's element of [`CPU`], and
/// when their static addresses are not known outright, from TCP socket
/// `sk`.
fn addresses(elem: *const PerCpu, sk: Option<u64>) -> Result<(u64, u64), i32> {
    const ENOENT: i32 = -2;
    let g: GuardOffsets = conf!(guard);
    if g.array_pptrs == 0 {
        return Err(ENOENT);
    }
    let map = address(&CPU as *const PerCpuArray<PerCpu>)?;
    let cpu_offset = address(elem)?.wrapping_sub(read_kernel::<u64>(map, g.array_pptrs)?);
    let base = if g.proto_fw_alloc == 0 {
        0
    } else {
        let sk = sk.ok_or(ENOENT)?;
        if read_kernel::<u16>(sk, conf!(sock.protocol))? != IPPROTO_TCP {
            return Err(ENOENT);
        }
        let prot = read_kernel::<u64>(sk, conf!(sock.prot))?;
        read_kernel::<u64>(prot, g.proto_fw_alloc)?
    };
    let at = |offset: u64| {
        if offset == 0 {
            0
        } else {
            base.wrapping_add(offset).wrapping_add(cpu_offset)
        }
    };
    Ok((at(g.prog_active), at(g.preempt_count)))
}
