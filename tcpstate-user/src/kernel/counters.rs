//! The kernel's counts of what tracing lost (ring-buffer-full records and
//! runs the kernel skipped, `recursion_misses`, less those the rescue
//! programs recorded), and of what the programs cost (`bpf_stats`).

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};

use anyhow::{Context as _, Result, anyhow};
use aya::programs::TracePoint;
use aya_obj::generated::{bpf_cmd, bpf_prog_info};
use tcpstate_ebpf::counter;

use super::loader::Kernel;

/// Events the kernel reported but tcpstate could not record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// The ring buffer was full.
    pub ring_full: u64,
    /// The kernel skipped a classic program because the same CPU was
    /// already running a BPF program (a softirq transition interrupting a
    /// process-context one), and its rescuer did not record the event
    /// either: the programs' `recursion_misses` less the rescues.
    pub nested: u64,
    /// Not lost: events the kernel skipped that the rescuers recorded.
    pub rescued: u64,
}

impl Lost {
    pub fn total(&self) -> u64 {
        self.ring_full + self.nested
    }
}

impl Kernel {
    /// Every event lost so far, as counted by the kernel.
    pub fn lost(&self) -> Result<Lost> {
        // Misses before rescues: reading in this order may, for an instant,
        // report a skipped event as rescued before it shows as missed, but
        // never the other way round.
        let mut misses = 0;
        for &name in &self.classic {
            let program: &TracePoint = self
                .ebpf
                .program(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            misses += prog_info(program.fd()?.as_fd())
                .with_context(|| format!("reading the statistics of program {name}"))?
                .recursion_misses;
        }
        let count = |index: u32| -> Result<u64> {
            Ok(self
                .counters
                .get(&index, 0)
                .context("reading the event counters")?
                .iter()
                .sum())
        };
        let rescued = count(counter::RESCUED)?;
        Ok(Lost {
            ring_full: count(counter::RING_FULL)?,
            nested: misses.saturating_sub(rescued),
            rescued,
        })
    }
}

/// What one program's runs cost: counted by the kernel only while
/// `kernel.bpf_stats_enabled` is 1 (0 otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramRuns {
    pub name: String,
    pub runs: u64,
    pub run_ns: u64,
}

impl Kernel {
    /// Each loaded program's runs and time in them (those not loaded, the
    /// syscall programs of a command without them, are left out).
    pub fn runs(&self) -> Result<Vec<ProgramRuns>> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| Some((name, program.fd().ok()?)))
            .map(|(name, fd)| {
                let info = prog_info(fd.as_fd())
                    .with_context(|| format!("reading the statistics of program {name}"))?;
                Ok(ProgramRuns {
                    name: name.to_string(),
                    runs: info.run_cnt,
                    run_ns: info.run_time_ns,
                })
            })
            .collect()
    }
}

/// A loaded program's information (BPF_OBJ_GET_INFO_BY_FD; aya does not
/// expose `recursion_misses`).
fn prog_info(fd: BorrowedFd<'_>) -> Result<bpf_prog_info> {
    /// The `info` member of `union bpf_attr`.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is plain integers; all-zero is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: std::ptr::addr_of_mut!(info) as u64,
    };
    // SAFETY: `attr` points at `info`, which outlives the call and is as
    // large as `info_len` says.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(info)
}
