//! The kernel's counts of what tracing lost (ring-buffer-full records and
//! runs the kernel skipped, `recursion_misses`, less those the rescue
//! programs recorded), and of what the programs cost (`bpf_stats`).

use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{maps::MapData, programs::TracePoint};
use aya_obj::generated::{bpf_cmd, bpf_prog_info};
use memmap2::{Mmap, MmapOptions};
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

/// Skipped runs counted as lost only once their rescue had time to come.
///
/// The kernel counts a skipped run (`recursion_misses`) a moment before the
/// rescuer counts its rescue (the classic program runs first), and a CPU
/// stalled in between (a VM's, by its hypervisor) makes that moment long:
/// a reading in between would report as lost what the rescuer is still
/// recording. So while the programs run, a skip counts as lost only if a
/// reading at least [`RESCUE_WAIT`] earlier already counted it and its
/// rescue has not come since. Once the programs are detached the counts
/// are final.
#[derive(Clone, Copy, Debug, Default)]
pub struct Nested {
    /// The misses of a reading [`RESCUE_WAIT`] to twice that ago.
    settled_misses: u64,
    /// A later reading's time and misses, to settle once old enough.
    pending: Option<(Instant, u64)>,
    /// What was reported last: a count of losses never goes down.
    reported: u64,
}

/// How long a skip's rescue may take before the skip counts as lost.
pub const RESCUE_WAIT: Duration = Duration::from_secs(1);

impl Nested {
    /// The skips lost, from misses and rescues read `now` (misses first).
    pub fn running(&mut self, now: Instant, misses: u64, rescued: u64) -> u64 {
        match self.pending {
            Some((at, earlier)) if now.duration_since(at) >= RESCUE_WAIT => {
                self.settled_misses = earlier;
                self.pending = Some((now, misses));
            }
            Some(_) => {}
            None => self.pending = Some((now, misses)),
        }
        self.reported = self
            .settled_misses
            .saturating_sub(rescued)
            .max(self.reported);
        self.reported
    }
}

/// The kernel's counts at one reading.
struct Counts {
    misses: u64,
    rescued: u64,
    ring_full: u64,
}

impl Counts {
    /// What was lost, with `nested` skips judged lost.
    fn lost(&self, nested: u64) -> Lost {
        Lost {
            ring_full: self.ring_full,
            nested,
            rescued: self.rescued,
        }
    }
}

impl Kernel {
    /// Every event lost so far, as counted by the kernel while the programs
    /// run (see [`Nested`]).
    pub fn lost(&mut self) -> Result<Lost> {
        let c = self.counts()?;
        Ok(c.lost(self.nested.running(Instant::now(), c.misses, c.rescued)))
    }

    /// Detaches the programs and returns every event they lost: final, as
    /// none runs any more.
    pub fn finish(mut self) -> Result<Lost> {
        self.detach();
        let c = self.counts()?;
        Ok(c.lost(c.misses.saturating_sub(c.rescued)))
    }

    fn counts(&self) -> Result<Counts> {
        // The order of the readings does not matter: while the programs
        // run, `Nested` weighs rescues against misses read a second
        // earlier; once they are detached, the counts no longer change.
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
        Ok(Counts {
            misses,
            rescued: self.counters.get(counter::RESCUED),
            ring_full: self.counters.get(counter::RING_FULL),
        })
    }
}

/// The programs' counters ([`counter`], one set per CPU), read from the
/// map's memory, shared with the kernel: no syscall (see the `COUNTERS`
/// map).
pub struct Counters {
    memory: Mmap,
    cpus: usize,
}

impl Counters {
    /// Entries the `COUNTERS` array needs on a machine with `cpus`
    /// possible CPUs.
    pub fn entries(cpus: usize) -> u32 {
        counter::slot(cpus as u32, 0)
    }

    /// Maps the programs' `COUNTERS` array (`BPF_F_MMAPABLE`), sized for
    /// `cpus` possible CPUs.
    pub fn map(array: &MapData, cpus: usize) -> Result<Counters> {
        let len = Self::entries(cpus) as usize * size_of::<u64>();
        // SAFETY: a read-only mapping of the map's values, which the
        // kernel keeps valid for as long as the mapping exists.
        let memory = unsafe {
            MmapOptions::new()
                .len(len)
                .map(array.fd().as_fd().as_raw_fd())
        }
        .context("mapping the event counters into memory")?;
        Ok(Counters { memory, cpus })
    }

    /// Counter `index` now, summed over the CPUs.
    fn get(&self, index: u32) -> u64 {
        let slots = self.memory.as_ptr().cast::<u64>();
        (0..self.cpus as u32)
            .map(|cpu| counter::slot(cpu, index) as usize)
            // SAFETY: in the mapping, which is page-aligned and as long as
            // `cpus` sets of counters; the programs write the integers
            // whole, so a volatile read sees either value.
            .map(|i| unsafe { slots.add(i).read_volatile() })
            .sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_the_sum_of_each_cpus_slot() {
        let cpus = 3;
        let mut memory = memmap2::MmapMut::map_anon(Counters::entries(cpus) as usize * 8).unwrap();
        for (cpu, (ring_full, rescued)) in [(1u64, 10u64), (2, 20), (4, 40)].into_iter().enumerate()
        {
            for (index, value) in [(counter::RING_FULL, ring_full), (counter::RESCUED, rescued)] {
                let i = counter::slot(cpu as u32, index) as usize * 8;
                memory[i..i + 8].copy_from_slice(&value.to_ne_bytes());
            }
        }
        let counters = Counters {
            memory: memory.make_read_only().unwrap(),
            cpus,
        };
        assert_eq!(counters.get(counter::RING_FULL), 7);
        assert_eq!(counters.get(counter::RESCUED), 70);
    }

    #[test]
    fn a_skip_is_lost_only_when_its_rescue_has_not_come_within_the_wait() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let wait = RESCUE_WAIT.as_millis() as u64;
        let mut n = Nested::default();
        // Read between a skip and its rescue (a stalled CPU): not lost.
        assert_eq!(n.running(at(0), 1, 0), 0);
        assert_eq!(n.running(at(wait - 1), 1, 0), 0);
        // The rescue came before the skip was settled.
        assert_eq!(n.running(at(wait), 1, 1), 0);
        // A second skip, never rescued: lost once a reading that counted
        // it is old enough.
        assert_eq!(n.running(at(wait + 50), 2, 1), 0);
        assert_eq!(n.running(at(2 * wait), 2, 1), 0);
        assert_eq!(n.running(at(3 * wait), 2, 1), 1);
        // A rescue that comes later does not take back what was reported:
        // the count never goes down.
        assert_eq!(n.running(at(4 * wait), 2, 2), 1);
    }
}
