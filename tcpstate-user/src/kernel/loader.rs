//! Loads and attaches the eBPF programs: checks privileges, mounts tracefs
//! if needed, resolves field offsets on the running kernel (tracepoint
//! formats, BTF), writes them and the kernel-side filters into the programs'
//! globals, and hands out the ring buffer and the attached programs (whose
//! losses `counters` reads).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Map, MapData, RingBuf},
    programs::{
        BtfTracePoint, Link as _, TracePoint, tp_btf::BtfTracePointLink,
        trace_point::TracePointLink,
    },
};
use aya_log::EbpfLogger;
use tcpstate_ebpf::{
    Config, FAMILY_V4, FAMILY_V6, GLOBAL_CONFIG, GLOBAL_LPORTS, GLOBAL_PORTS, GLOBAL_RPORTS,
    MAP_COUNTERS, MAP_EVENTS, PORT_BITMAP_LEN, PROGRAMS, RESCUERS, SET_STATE_RECORD_LEN,
    SYSCALL_PROGRAMS, SetStateOffsets, SyscallOffsets,
};

use super::{
    btf,
    counters::{Counters, Nested},
    guard, privileges, tracefs,
};
use crate::{
    messages::warning,
    sock::{Family, Tuple},
};

/// What the kernel side should report.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `FAMILY_V4 | FAMILY_V6` bits.
    pub families: u8,
    /// Local ports to report; empty: all.
    pub lports: Vec<u16>,
    /// Remote ports to report; empty: all.
    pub rports: Vec<u16>,
    /// Ports of which one end must have one; empty: all.
    pub ports: Vec<u16>,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Wake userspace once this many bytes are waiting (0: every event).
    pub wakeup_bytes: u32,
    /// Attach the syscall programs: `bind()` calls that fail with
    /// `EADDRINUSE`, `connect()` calls that fail before `SYN_SENT`, and the
    /// process that accepts each connection.
    pub syscalls: bool,
    /// Write only the records that end a handshake, a listener or a
    /// connection (`tcpstate_ebpf::life::in_closes_only`): the others only
    /// update the socket's life in the kernel.
    pub closes_only: bool,
}

impl Settings {
    /// Whether the kernel filters by anything but the local port: an
    /// accept still carrying its listener's tuple cannot be judged then.
    pub fn filters_remote_or_family(&self) -> bool {
        self.families != FAMILY_V4 | FAMILY_V6 || !self.rports.is_empty() || !self.ports.is_empty()
    }

    /// Whether the kernel's family and port filters pass a socket with this
    /// tuple (an IPv4-mapped one is IPv4), as userspace applies them to
    /// what the kernel cannot filter: its tables, and a socket still
    /// carrying its listener's tuple.
    pub fn passes(&self, t: &Tuple) -> bool {
        let family_bit = match t.family {
            Family::V4 => FAMILY_V4,
            Family::V6 => FAMILY_V6,
        };
        self.families & family_bit != 0
            && (self.lports.is_empty() || self.lports.contains(&t.lport))
            && (self.rports.is_empty() || self.rports.contains(&t.rport))
            && (self.ports.is_empty()
                || self.ports.contains(&t.lport)
                || self.ports.contains(&t.rport))
    }
}

/// Default ring buffer: 16 MiB, about 170,000 records.
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;

/// The loaded, attached programs.
pub struct Probe {
    /// The record stream.
    pub events: RingBuf<MapData>,
    /// The programs' diagnostics (aya-log); must stay open while they run.
    pub logger: EbpfLogger<&'static dyn log::Log>,
    pub kernel: Kernel,
}

/// The programs themselves and their counters. Dropping it detaches them,
/// all at once: the kernel waits for RCU grace periods at each classic
/// tracepoint (~40 ms each, one after the other even then), and one after
/// the other the attachments took 0.65 s to let go of, together 0.36 s.
pub struct Kernel {
    /// The programs' attachments, owned so that they can be let go of
    /// together.
    links: Vec<Attachment>,
    /// Keeps the programs alive.
    pub(super) ebpf: Ebpf,
    pub(super) counters: Counters,
    /// The classic tracepoint programs attached, whose skipped runs count.
    pub(super) classic: Vec<&'static str>,
    /// What the readings so far found lost to skipped runs.
    pub(super) nested: Nested,
    /// Whether the syscall programs are attached (failed `bind()` and early
    /// failed `connect()` calls reported, accepted sockets owned by the
    /// process that accepted them).
    pub syscalls: bool,
}

/// One attachment of a program.
enum Attachment {
    Classic(TracePointLink),
    Btf(BtfTracePointLink),
}

impl Attachment {
    /// Detaches the program from there (a failure leaves it to the
    /// kernel, which detaches it when tcpstate exits).
    fn detach(self) {
        let _ = match self {
            Self::Classic(link) => link.detach(),
            Self::Btf(link) => link.detach(),
        };
    }
}

impl Kernel {
    /// Detaches every program, all at once.
    pub(super) fn detach(&mut self) {
        std::thread::scope(|scope| {
            for link in self.links.drain(..) {
                scope.spawn(move || link.detach());
            }
        });
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Loads the programs, configures them and attaches them.
pub fn load(settings: &Settings) -> Result<Probe> {
    privileges::check_tracing()?;
    require_ring_buffer()?;
    let tracefs = tracefs::ensure_mounted()?;
    let vmlinux = btf::load_vmlinux()?;

    let set_state = tracefs::Format::read(&tracefs, "sock", "inet_sock_set_state")?;
    let receive_reset = tracefs::Format::read(&tracefs, "tcp", "tcp_receive_reset")?;
    let send_reset = tracefs::Format::read(&tracefs, "tcp", "tcp_send_reset")?;
    let config = Config {
        set_state: SetStateOffsets {
            skaddr: set_state.offset::<u64>("skaddr")?,
            oldstate: set_state.offset::<i32>("oldstate")?,
            newstate: set_state.offset::<i32>("newstate")?,
            sport: set_state.offset::<u16>("sport")?,
            dport: set_state.offset::<u16>("dport")?,
            family: set_state.offset::<u16>("family")?,
            protocol: set_state.offset::<u16>("protocol")?,
            saddr: set_state.offset::<u32>("saddr")?,
            daddr: set_state.offset::<u32>("daddr")?,
            saddr_v6: set_state.offset::<[u32; 4]>("saddr_v6")?,
            daddr_v6: set_state.offset::<[u32; 4]>("daddr_v6")?,
        },
        receive_reset_skaddr: receive_reset.offset::<u64>("skaddr")?,
        send_reset_skaddr: send_reset.offset::<u64>("skaddr")?,
        sock: btf::sock_offsets(&vmlinux)?,
        families: settings.families,
        lport_filter: u8::from(!settings.lports.is_empty()),
        rport_filter: u8::from(!settings.rports.is_empty()),
        port_filter: u8::from(!settings.ports.is_empty()),
        wakeup_bytes: u64::from(settings.wakeup_bytes),
        syscalls: match settings
            .syscalls
            .then(|| syscall_offsets(&tracefs, &vmlinux))
        {
            Some(Ok(offsets)) => offsets,
            Some(Err(e)) => {
                warning!(
                    "failed bind() calls, and connect() calls that fail before SYN_SENT, cannot \
                     be seen on this kernel, and accepted connections belong to the process that \
                     listened until another touches them: {e:#}"
                );
                SyscallOffsets::default()
            }
            None => SyscallOffsets::default(),
        },
        guard: guard::offsets(&vmlinux).unwrap_or_else(|e| {
            warning!(
                "transitions the kernel skips for nested BPF runs cannot be rescued on this \
                 kernel ({e:#}); they are counted as lost only where the kernel counts them \
                 (recursion_misses of tracepoint programs, Linux 6.7 and later)"
            );
            Default::default()
        }),
        closes_only: u8::from(settings.closes_only),
        _pad: [0; 7],
    };
    let record_end = set_state.end();
    if record_end > SET_STATE_RECORD_LEN {
        bail!(
            "this kernel's sock:inet_sock_set_state record is {record_end} bytes, more than the \
             {SET_STATE_RECORD_LEN} tcpstate reads: tcpstate needs updating for this kernel"
        );
    }
    let lports = port_bitmap(&settings.lports);
    let rports = port_bitmap(&settings.rports);
    let ports = port_bitmap(&settings.ports);

    let cpus = aya::util::nr_cpus()
        .map_err(|(path, e)| anyhow!("reading {path}: {e}"))
        .context("counting the possible CPUs")?;
    let mut ebpf = EbpfLoader::new()
        .override_global(GLOBAL_CONFIG, &config, true)
        .override_global(GLOBAL_LPORTS, &lports, true)
        .override_global(GLOBAL_RPORTS, &rports, true)
        .override_global(GLOBAL_PORTS, &ports, true)
        .map_max_entries(MAP_EVENTS, settings.ring_bytes)
        .map_max_entries(MAP_COUNTERS, Counters::entries(cpus))
        .load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/tcpstate"
        )))
        .map_err(|e| memlock_hint(anyhow::Error::new(e)))
        .context("loading the eBPF programs")?;
    let logger = EbpfLogger::init(&mut ebpf).context("setting up eBPF diagnostics")?;

    let syscalls = config.syscalls.exit_ret != 0;
    let syscall_programs = SYSCALL_PROGRAMS.iter().filter(|_| syscalls);
    let mut classic = Vec::new();
    let mut links = Vec::new();
    for &(name, group, tracepoint) in PROGRAMS.iter().chain(syscall_programs) {
        let program: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?;
        // A program serving two tracepoints is loaded once.
        if !classic.contains(&name) {
            program
                .load()
                .with_context(|| format!("loading program {name}"))?;
            classic.push(name);
        }
        let link = program
            .attach(group, tracepoint)
            .with_context(|| format!("attaching to tracepoint {group}:{tracepoint}"))?;
        links.push(Attachment::Classic(program.take_link(link)?));
    }
    // The rescuers after the classic programs: a rescue with no classic
    // program to miss would be counted against no miss.
    let kernel_btf = Btf::from_sys_fs().context("reading the kernel's BTF for BTF tracepoints")?;
    for (name, tracepoint) in RESCUERS {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
            .try_into()?;
        program
            .load(tracepoint, &kernel_btf)
            .with_context(|| format!("loading program {name}"))?;
        let link = program
            .attach()
            .with_context(|| format!("attaching to BTF tracepoint {tracepoint}"))?;
        links.push(Attachment::Btf(program.take_link(link)?));
    }

    let events = RingBuf::try_from(
        ebpf.take_map(MAP_EVENTS)
            .ok_or_else(|| anyhow!("map {MAP_EVENTS} missing"))?,
    )?;
    let counters = match ebpf.map(MAP_COUNTERS) {
        Some(Map::Array(array)) => Counters::map(array, cpus)?,
        _ => bail!("map {MAP_COUNTERS} missing, or not an array"),
    };
    Ok(Probe {
        events,
        logger,
        kernel: Kernel {
            links,
            ebpf,
            counters,
            classic,
            syscalls,
            nested: Nested::default(),
        },
    })
}

/// Where the syscall programs read: the `syscalls` tracepoints' formats
/// (absent without `CONFIG_FTRACE_SYSCALLS`) and the BTF offsets.
fn syscall_offsets(tracefs: &Path, vmlinux: &btf_rs::Btf) -> Result<SyscallOffsets> {
    let enter = tracefs::Format::read(tracefs, "syscalls", "sys_enter_bind")?;
    let connect = tracefs::Format::read(tracefs, "syscalls", "sys_enter_connect")?;
    let exit_ret =
        tracefs::Format::read(tracefs, "syscalls", "sys_exit_bind")?.offset::<i64>("ret")?;
    for name in ["sys_exit_connect", "sys_exit_accept4", "sys_exit_accept"] {
        let ret = tracefs::Format::read(tracefs, "syscalls", name)?.offset::<i64>("ret")?;
        if ret != exit_ret {
            bail!("syscalls:{name} has ret at offset {ret}, sys_exit_bind at {exit_ret}");
        }
    }
    Ok(SyscallOffsets {
        bind_fd: enter.offset::<u64>("fd")?,
        bind_addr: enter.offset::<u64>("umyaddr")?,
        connect_fd: connect.offset::<u64>("fd")?,
        connect_addr: connect.offset::<u64>("uservaddr")?,
        exit_ret,
        ..btf::syscall_offsets(vmlinux)?
    })
}

/// `err` with what to do when it is the locked-memory limit: before Linux
/// 5.11 BPF maps count against RLIMIT_MEMLOCK, which aya raises only with
/// CAP_SYS_RESOURCE.
fn memlock_hint(err: anyhow::Error) -> anyhow::Error {
    let denied = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            || e.to_string().contains("Operation not permitted")
    });
    let limited = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .is_ok_and(|(soft, _)| soft != nix::sys::resource::RLIM_INFINITY);
    if denied && limited {
        err.context(
            "this kernel may charge BPF maps to RLIMIT_MEMLOCK (before Linux 5.11): run with \
             it unlimited (`ulimit -l unlimited`, systemd LimitMEMLOCK=infinity) or grant \
             CAP_SYS_RESOURCE",
        )
    } else {
        err
    }
}

/// The BPF ring buffer (Linux 5.8 and later) carries every record: probed
/// by creating one, so that a kernel without it gets a line that names it
/// rather than a failed map creation. A probe that fails in an unexpected
/// way leaves the answer to the load itself.
fn require_ring_buffer() -> Result<()> {
    if aya::sys::is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(true) {
        return Ok(());
    }
    bail!(
        "this kernel has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8 and later): \
         tcpstate needs a newer kernel"
    )
}

/// One bit per port set in `ports`.
fn port_bitmap(ports: &[u16]) -> [u8; PORT_BITMAP_LEN] {
    let mut bitmap = [0u8; PORT_BITMAP_LEN];
    for &p in ports {
        bitmap[usize::from(p >> 3)] |= 1 << (p & 7);
    }
    bitmap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bitmap_sets_exactly_the_ports() {
        let bm = port_bitmap(&[0, 7, 8, 443, 65535]);
        let set: Vec<u16> = (0..=65535u16)
            .filter(|&p| bm[usize::from(p >> 3)] & (1 << (p & 7)) != 0)
            .collect();
        assert_eq!(set, [0, 7, 8, 443, 65535]);
    }
}
