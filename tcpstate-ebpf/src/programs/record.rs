//! The record path: read a transition (from the tracepoint's record or from
//! the socket), filter it, attribute its owner, keep the socket's entry and
//! write one [`RawEvent`]; likewise for resets.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf, generated,
    },
    programs::TracePointContext,
};
use tcpstate_ebpf::{
    AF_INET, AF_INET6, COMM_LEN, FAMILY_V4, FAMILY_V6, IPPROTO_TCP, RawEvent, SET_STATE_RECORD_LEN,
    counter, flags, kind,
    life::{self, Life},
    tcp,
};

use super::{EVENTS, LPORTS, PORTS, RECORD, RPORTS, SOCKS, count, port_allowed};

/// What the programs remember about one live socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockState {
    last_ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: [u8; COMM_LEN],
    /// Inode of the socket's network namespace, read once.
    netns: u32,
    owner_known: u8,
    _pad: [u8; 3],
    life: Life,
}

impl SockState {
    const UNKNOWN: Self = Self {
        last_ts_ns: 0,
        pid: 0,
        tid: 0,
        comm: [0; COMM_LEN],
        netns: 0,
        owner_known: 0,
        _pad: [0; 3],
        life: Life {
            opened_ns: 0,
            seen: 0,
            _pad: [0; 3],
        },
    };

    /// Makes the current task the socket's owner.
    pub(super) fn take_current_owner(&mut self) {
        let pid_tgid = bpf_get_current_pid_tgid();
        self.pid = (pid_tgid >> 32) as u32;
        self.tid = pid_tgid as u32;
        // Straight into the entry; the helper zeroes it on failure.
        unsafe { generated::bpf_get_current_comm(self.comm.as_mut_ptr().cast(), COMM_LEN as u32) };
        self.owner_known = 1;
    }

    /// [`RawEvent::flags`] for a record naming this owner.
    fn flags(&self) -> u8 {
        if self.owner_known != 0 {
            flags::OWNER_KNOWN
        } else {
            0
        }
    }
}

/// One copied `inet_sock_set_state` record, aligned like the kernel's so
/// that each field is read in one load.
#[repr(C, align(8))]
pub struct Copied([u8; SET_STATE_RECORD_LEN]);

/// The family the filters see: an IPv6 socket carrying IPv4 (an
/// IPv4-mapped address at either end, the other possibly still unset) is
/// IPv4, as userspace reports it.
pub(super) fn filter_family(family: u8, laddr: &Addr, raddr: &Addr) -> u8 {
    // ::ffff:a.b.c.d: 80 zero bits, 16 one bits, the IPv4 address.
    const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    let mapped = |a: &Addr| a[0] == 0 && a[1] == 0 && a[2] == MAPPED;
    if family == AF_INET6 && (mapped(laddr) || mapped(raddr)) {
        AF_INET
    } else {
        family
    }
}

/// Whether transition `old -> new` of a socket with these addresses and
/// ports is reported. Before Linux 6.15 the kernel reports an accepted
/// socket's `LISTEN -> SYN_RECV` before giving it its own addresses: it
/// carries its listener's tuple (no remote port), which says nothing of the
/// remote end or, for a dual-stack listener, of the family. Only the local
/// port filters it then (`--port` cannot: the other end is unknown);
/// userspace completes it from the socket's next record and applies the
/// other filters. Inlined: BPF calls take at most five arguments.
#[inline(always)]
fn wanted(old: u8, new: u8, family: u8, addrs: (&Addr, &Addr), ports: (u16, u16)) -> bool {
    let (lport, rport) = ports;
    if old == tcp::LISTEN && new == tcp::SYN_RECV && rport == 0 {
        let families = if family == AF_INET {
            FAMILY_V4
        } else {
            FAMILY_V4 | FAMILY_V6
        };
        return conf!(families) & families != 0
            && (conf!(lport_filter) == 0 || port_allowed(&LPORTS, lport));
    }
    passes(filter_family(family, addrs.0, addrs.1), lport, rport)
}

/// Whether a socket of `family` (as [`filter_family`] sees it) with these
/// ports is reported.
pub(super) fn passes(family: u8, lport: u16, rport: u16) -> bool {
    let bit = match family {
        AF_INET => FAMILY_V4,
        AF_INET6 => FAMILY_V6,
        _ => return false,
    };
    conf!(families) & bit != 0
        && (conf!(lport_filter) == 0 || port_allowed(&LPORTS, lport))
        && (conf!(rport_filter) == 0 || port_allowed(&RPORTS, rport))
        && (conf!(port_filter) == 0 || port_allowed(&PORTS, lport) || port_allowed(&PORTS, rport))
}

/// Reads a value at `base + off` from kernel memory.
pub fn read_kernel<T>(base: u64, off: u16) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }
}

/// Inode of the socket's network namespace (0 if unreadable).
pub(super) fn netns_of(sk: u64) -> u32 {
    read_kernel::<u64>(sk, conf!(sock.net))
        .and_then(|net| read_kernel::<u32>(net, conf!(sock.net_inum)))
        .unwrap_or(0)
}

/// Writes one record, counting it as lost when the ring buffer is full.
///
/// The consumer is not woken unless enough data is waiting (userspace also
/// drains on a short timer): waking it per event costs the traced workload
/// more than half its throughput.
pub(super) fn emit(event: RawEvent) {
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        count(counter::RING_FULL);
        return;
    };
    entry.write(event);
    let wake = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= conf!(wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wake as u64);
}

/// Whether the transition runs in the context of the socket's owner
/// (connect, listen, close, shutdown) rather than in softirq.
fn in_owner_context(old: u8, new: u8) -> bool {
    matches!(
        (old, new),
        (tcp::CLOSE, tcp::SYN_SENT)
            | (tcp::CLOSE, tcp::LISTEN)
            | (tcp::ESTABLISHED, tcp::FIN_WAIT1)
            | (tcp::CLOSE_WAIT, tcp::LAST_ACK)
    )
}

/// One transition, however it was read.
pub struct Change {
    sk: u64,
    old: u8,
    new: u8,
    family: u8,
    lport: u16,
    rport: u16,
    laddr: Addr,
    raddr: Addr,
}

/// Where a transition's fields are read: a copied tracepoint record or the
/// socket itself.
trait Fields {
    /// The `T` at byte `off`.
    fn get<T: Copy>(&self, off: u16) -> Result<T, i32>;
}

impl Fields for Copied {
    /// One load. The loader checks that each field the programs read lies
    /// within the copy at an offset aligned for its type, so the error
    /// never happens: the bounds check is for the verifier, the alignment
    /// check keeps the typed load sound.
    fn get<T: Copy>(&self, off: u16) -> Result<T, i32> {
        const EINVAL: i32 = -22;
        let off = usize::from(off);
        if off + size_of::<T>() > SET_STATE_RECORD_LEN || off % align_of::<T>() != 0 {
            return Err(EINVAL);
        }
        Ok(unsafe { self.0.as_ptr().add(off).cast::<T>().read() })
    }
}

/// A `struct sock` in kernel memory.
struct Sock(u64);

impl Fields for Sock {
    fn get<T: Copy>(&self, off: u16) -> Result<T, i32> {
        read_kernel(self.0, off)
    }
}

/// An address as [`RawEvent`] carries it, read in 4-byte words: IPv4 in the
/// first word, network order throughout.
pub(super) type Addr = [u32; 4];

/// Local and remote address, IPv4 or IPv6, at the given offsets.
fn addresses(
    f: &impl Fields,
    family: u8,
    (v4_local, v4_remote): (u16, u16),
    (v6_local, v6_remote): (u16, u16),
) -> Result<(Addr, Addr), i32> {
    if family == AF_INET {
        Ok(([f.get(v4_local)?, 0, 0, 0], [f.get(v4_remote)?, 0, 0, 0]))
    } else {
        Ok((f.get(v6_local)?, f.get(v6_remote)?))
    }
}

/// The bytes of an address, as they lie in memory.
pub(super) fn bytes(addr: Addr) -> [u8; 16] {
    // SAFETY: same size, and every bit pattern is a valid `[u8; 16]`.
    unsafe { core::mem::transmute(addr) }
}

/// The transition in a `sock:inet_sock_set_state` record, if it is one to
/// report.
pub fn from_record(ctx: &TracePointContext) -> Result<Option<Change>, i32> {
    // One copy of the record instead of one read per field.
    const ENOMEM: i32 = -12;
    let rec = unsafe { &mut *RECORD.get_ptr_mut(0).ok_or(ENOMEM)? };
    unsafe { bpf_probe_read_kernel_buf(ctx.as_ptr().cast(), &mut rec.0)? };
    if rec.get::<u16>(conf!(set_state.protocol))? != IPPROTO_TCP {
        return Ok(None);
    }
    let family = rec.get::<u16>(conf!(set_state.family))? as u8;
    let lport = rec.get::<u16>(conf!(set_state.sport))?;
    let rport = rec.get::<u16>(conf!(set_state.dport))?;
    let (laddr, raddr) = addresses(
        rec,
        family,
        (conf!(set_state.saddr), conf!(set_state.daddr)),
        (conf!(set_state.saddr_v6), conf!(set_state.daddr_v6)),
    )?;
    let old = rec.get::<i32>(conf!(set_state.oldstate))? as u8;
    let new = rec.get::<i32>(conf!(set_state.newstate))? as u8;
    if !wanted(old, new, family, (&laddr, &raddr), (lport, rport)) {
        return Ok(None);
    }
    Ok(Some(Change {
        sk: rec.get(conf!(set_state.skaddr))?,
        old,
        new,
        family,
        lport,
        rport,
        laddr,
        raddr,
    }))
}

/// Transition `old -> new` of socket `sk`, read from the socket as the
/// tracepoint reads it, if it is one to report.
pub fn from_sock(sk: u64, old: u8, new: u8) -> Result<Option<Change>, i32> {
    if read_kernel::<u16>(sk, conf!(sock.protocol))? != IPPROTO_TCP {
        return Ok(None);
    }
    let family = read_kernel::<u16>(sk, conf!(sock.family))? as u8;
    let lport = u16::from_be(read_kernel::<u16>(sk, conf!(sock.sport))?);
    let rport = u16::from_be(read_kernel::<u16>(sk, conf!(sock.dport))?);
    let (laddr, raddr) = addresses(
        &Sock(sk),
        family,
        (conf!(sock.saddr), conf!(sock.daddr)),
        (conf!(sock.saddr_v6), conf!(sock.daddr_v6)),
    )?;
    if !wanted(old, new, family, (&laddr, &raddr), (lport, rport)) {
        return Ok(None);
    }
    Ok(Some(Change {
        sk,
        old,
        new,
        family,
        lport,
        rport,
        laddr,
        raddr,
    }))
}

/// Attributes the owner, keeps the socket's entry and writes the record.
pub fn record(c: &Change) -> Result<(), i32> {
    let now = unsafe { bpf_ktime_get_ns() };

    // Owner: the current task when this transition runs in its context,
    // otherwise whoever was recorded for the socket earlier. The entry is
    // worked on in place: a socket's transitions are serialised by the
    // kernel (socket lock), so nothing else writes it meanwhile. A socket's
    // first transition starts afresh, without a lookup: an entry left by an
    // earlier socket at the same address (whose CLOSE was missed) says
    // nothing about this one, and the insert below replaces it.
    let stored = if life::begins(c.old, c.new) {
        None
    } else {
        SOCKS.get_ptr_mut(c.sk)
    };
    let mut fresh = SockState::UNKNOWN;
    let state = match stored {
        Some(s) => unsafe { &mut *s },
        None => {
            fresh.netns = netns_of(c.sk);
            &mut fresh
        }
    };
    let prev_ts_ns = state.last_ts_ns;
    state.last_ts_ns = now;
    state.life = state.life.after(c.old, c.new, now);
    if c.old == tcp::CLOSE && c.new == tcp::SYN_SENT {
        super::syscalls::connect_reached_syn_sent();
    }
    if in_owner_context(c.old, c.new) {
        state.take_current_owner();
    }

    if conf!(closes_only) == 0 || life::in_closes_only(c.old, c.new) {
        emit(transition(c, state, now, prev_ts_ns));
    }
    match stored {
        Some(_) if c.new == tcp::CLOSE => {
            let _ = SOCKS.remove(c.sk);
        }
        None if c.new != tcp::CLOSE => {
            let _ = SOCKS.insert(c.sk, fresh, 0);
        }
        _ => {}
    }
    Ok(())
}

/// The record of transition `c` of the socket whose state is now `state`.
#[inline(always)]
fn transition(c: &Change, state: &SockState, now: u64, prev_ts_ns: u64) -> RawEvent {
    RawEvent {
        ts_ns: now,
        skaddr: c.sk,
        prev_ts_ns,
        netns: state.netns,
        pid: state.pid,
        tid: state.tid,
        kind: kind::TRANSITION,
        oldstate: c.old,
        newstate: c.new,
        family: c.family,
        lport: c.lport,
        rport: c.rport,
        flags: state.flags(),
        _pad: 0,
        seen: state.life.seen,
        laddr: bytes(c.laddr),
        raddr: bytes(c.raddr),
        comm: state.comm,
        opened_ns: state.life.opened_ns,
    }
}

/// A reset on a full socket: family, ports and state come from the socket
/// itself (offsets from BTF) so the same filters apply.
pub fn reset(sk: u64, what: u8) -> Result<(), i32> {
    if sk == 0 {
        // A reset answering a segment that matched no socket.
        return Ok(());
    }
    let family = read_kernel::<u16>(sk, conf!(sock.family))? as u8;
    let state = read_kernel::<u8>(sk, conf!(sock.state))?;
    let mut lport = read_kernel::<u16>(sk, conf!(sock.num))?;
    if lport == 0 && state != tcp::TIME_WAIT && state != tcp::NEW_SYN_RECV {
        // A full socket already moved to CLOSE gave its port back (an
        // abortive close resets after that): `inet_sport` still has it.
        lport = u16::from_be(read_kernel::<u16>(sk, conf!(sock.sport))?);
    }
    let rport = u16::from_be(read_kernel::<u16>(sk, conf!(sock.dport))?);
    let filtered = if family == AF_INET6 {
        let (laddr, raddr) = addresses(
            &Sock(sk),
            family,
            (conf!(sock.saddr), conf!(sock.daddr)),
            (conf!(sock.saddr_v6), conf!(sock.daddr_v6)),
        )?;
        filter_family(family, &laddr, &raddr)
    } else {
        family
    };
    if !passes(filtered, lport, rport) {
        return Ok(());
    }
    let owner = match unsafe { SOCKS.get(sk) } {
        Some(o) if o.owner_known != 0 => *o,
        _ => SockState::UNKNOWN,
    };
    emit(RawEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr: sk,
        prev_ts_ns: 0,
        netns: netns_of(sk),
        pid: owner.pid,
        tid: owner.tid,
        kind: what,
        oldstate: state,
        newstate: state,
        family,
        lport,
        rport,
        flags: owner.flags(),
        _pad: 0,
        seen: 0,
        laddr: [0; 16],
        raddr: [0; 16],
        comm: owner.comm,
        opened_ns: 0,
    });
    Ok(())
}
