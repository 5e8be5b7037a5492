//! tcpstate's eBPF programs: every TCP state transition and reset, one fixed
//! record each, into a ring buffer.
//!
//! Kept deliberately small: read the tracepoint, filter by family and port,
//! attribute the socket's owner, write the record. Everything else (naming,
//! classification, TIME_WAIT tracking) happens in userspace.
//!
//! The kernel runs at most one classic tracepoint (or kprobe) program at a
//! time per CPU: while one runs, its per-CPU guard `bpf_prog_active` is
//! raised, and a transition that interrupts it (a softirq one arriving while
//! the program handles a `connect()` or `close()`) skips the classic program,
//! counted only in its `recursion_misses`. Each classic program therefore
//! has a rescuer: a BTF tracepoint on the same tracepoint (guarded per
//! program, not by `bpf_prog_active`) that acts only when this CPU's
//! `bpf_prog_active` is raised, that is exactly when the kernel skips the
//! classic program, and records the event from the socket itself. Userspace
//! reports the misses minus the rescues as lost.
//!
//! Field offsets are not hard-coded: the loader reads them from the running
//! kernel (tracepoint format files, BTF) and writes them into [`CONFIG`].
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use core::ptr::{addr_of, read_volatile};

    use aya_ebpf::{
        EbpfContext,
        bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
        helpers::{
            bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
            bpf_probe_read_kernel_buf, generated,
        },
        macros::{btf_tracepoint, map, tracepoint},
        maps::{LruHashMap, PerCpuArray, RingBuf},
        programs::{BtfTracePointContext, TracePointContext},
    };
    use aya_log_ebpf::error;
    use tcpstate_ebpf::{
        AF_INET, AF_INET6, COMM_LEN, Config, FAMILY_V4, FAMILY_V6, GuardOffsets, PORT_BITMAP_LEN,
        RawEvent, SET_STATE_RECORD_LEN, counter, flags, kind,
    };

    /// One field of [`CONFIG`], e.g. `conf!(set_state.sport)`. Read
    /// volatile, field by field: the loader rewrites the value, so the
    /// compiler must not fold it, and copying the whole struct on every
    /// event would cost as much as the rest of the program.
    macro_rules! conf {
        ($($field:ident).+) => {
            unsafe { read_volatile(addr_of!(CONFIG.$($field).+)) }
        };
    }

    const IPPROTO_TCP: u16 = 6;
    const TCP_ESTABLISHED: u8 = 1;
    const TCP_SYN_SENT: u8 = 2;
    const TCP_SYN_RECV: u8 = 3;
    const TCP_FIN_WAIT1: u8 = 4;
    const TCP_CLOSE: u8 = 7;
    const TCP_CLOSE_WAIT: u8 = 8;
    const TCP_LAST_ACK: u8 = 9;
    const TCP_LISTEN: u8 = 10;

    /// What the programs remember about one live socket.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct SockState {
        last_ts_ns: u64,
        pid: u32,
        tid: u32,
        comm: [u8; COMM_LEN],
        /// Inode of the socket's network namespace, read once.
        netns: u32,
        owner_known: u8,
        _pad: [u8; 3],
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
        };

        /// [`RawEvent::flags`] for a record naming this owner.
        fn flags(&self) -> u8 {
            if self.owner_known != 0 {
                flags::OWNER_KNOWN
            } else {
                0
            }
        }
    }

    #[unsafe(no_mangle)]
    static CONFIG: Config = Config {
        set_state: tcpstate_ebpf::SetStateOffsets {
            skaddr: 0,
            oldstate: 0,
            newstate: 0,
            sport: 0,
            dport: 0,
            family: 0,
            protocol: 0,
            saddr: 0,
            daddr: 0,
            saddr_v6: 0,
            daddr_v6: 0,
        },
        receive_reset_skaddr: 0,
        send_reset_skaddr: 0,
        sock: tcpstate_ebpf::SockOffsets {
            protocol: 0,
            family: 0,
            num: 0,
            dport: 0,
            net: 0,
            state: 0,
            net_inum: 0,
            saddr: 0,
            daddr: 0,
            saddr_v6: 0,
            daddr_v6: 0,
            prot: 0,
            sport: 0,
        },
        families: 0,
        lport_filter: 0,
        rport_filter: 0,
        _pad: [0; 1],
        wakeup_bytes: 0,
        guard: GuardOffsets {
            array_pptrs: 0,
            proto_fw_alloc: 0,
            _pad: [0; 4],
            prog_active_delta: 0,
        },
    };

    #[unsafe(no_mangle)]
    static LPORTS: [u8; PORT_BITMAP_LEN] = [0; PORT_BITMAP_LEN];
    #[unsafe(no_mangle)]
    static RPORTS: [u8; PORT_BITMAP_LEN] = [0; PORT_BITMAP_LEN];

    /// The record stream. Its size is set by the loader.
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

    /// Per-CPU counters, indexed by [`counter`].
    #[map]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

    /// Per CPU: the address of that CPU's `bpf_prog_active`, 0 until the
    /// first rescuer run on the CPU works it out (see [`guard_address`]).
    #[map]
    static GUARD: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// One copied `inet_sock_set_state` record, aligned like the kernel's
    /// so that each field is read in one load.
    #[repr(C, align(8))]
    struct Copied([u8; SET_STATE_RECORD_LEN]);

    /// Per-CPU room for one [`Copied`] record (too big for the stack). The
    /// kernel never runs the classic program nested on one CPU, and the
    /// rescuers do not use it.
    #[map]
    static RECORD: PerCpuArray<Copied> = PerCpuArray::with_max_entries(1, 0);

    /// Owner and last-transition time per live socket, keyed by `skaddr`.
    #[map]
    static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(131072, 0);

    fn port_allowed(bitmap: &[u8; PORT_BITMAP_LEN], port: u16) -> bool {
        let byte = unsafe { read_volatile(addr_of!(bitmap[(port >> 3) as usize])) };
        byte & (1 << (port & 7)) != 0
    }

    fn passes(family: u8, lport: u16, rport: u16) -> bool {
        let bit = match family {
            AF_INET => FAMILY_V4,
            AF_INET6 => FAMILY_V6,
            _ => return false,
        };
        conf!(families) & bit != 0
            && (conf!(lport_filter) == 0 || port_allowed(&LPORTS, lport))
            && (conf!(rport_filter) == 0 || port_allowed(&RPORTS, rport))
    }

    /// Reads a value at `base + off` from kernel memory.
    fn read_kernel<T>(base: u64, off: u16) -> Result<T, i32> {
        unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }
    }

    /// Inode of the socket's network namespace (0 if unreadable).
    fn netns_of(sk: u64) -> u32 {
        read_kernel::<u64>(sk, conf!(sock.net))
            .and_then(|net| read_kernel::<u32>(net, conf!(sock.net_inum)))
            .unwrap_or(0)
    }

    fn count(index: u32) {
        if let Some(c) = COUNTERS.get_ptr_mut(index) {
            unsafe { *c += 1 };
        }
    }

    /// Writes one record, counting it as lost when the ring buffer is full.
    ///
    /// The consumer is not woken unless enough data is waiting (userspace
    /// also drains on a short timer): waking it per event costs the traced
    /// workload more than half its throughput.
    fn emit(event: RawEvent) {
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
            (TCP_CLOSE, TCP_SYN_SENT)
                | (TCP_CLOSE, TCP_LISTEN)
                | (TCP_ESTABLISHED, TCP_FIN_WAIT1)
                | (TCP_CLOSE_WAIT, TCP_LAST_ACK)
        )
    }

    /// One transition, however it was read.
    struct Change {
        sk: u64,
        old: u8,
        new: u8,
        family: u8,
        lport: u16,
        rport: u16,
        laddr: Addr,
        raddr: Addr,
    }

    #[tracepoint]
    pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
        if let Err(err) = from_record(&ctx).and_then(|c| c.map_or(Ok(()), |c| record(&c))) {
            error!(
                &ctx,
                "inet_sock_set_state: reading the event failed: {}", err
            );
        }
        0
    }

    /// The rescuer of [`inet_sock_set_state`]: records the transition only
    /// when the kernel skips the classic program for it.
    #[btf_tracepoint(function = "inet_sock_set_state")]
    pub fn rescue_set_state(ctx: BtfTracePointContext) -> i32 {
        // (const struct sock *sk, const int oldstate, const int newstate)
        let sk: u64 = ctx.arg(0);
        if !classic_skipped(Some(sk)) {
            return 0;
        }
        count(counter::RESCUED);
        let (old, new) = (ctx.arg::<u64>(1) as u8, ctx.arg::<u64>(2) as u8);
        if let Err(err) = from_sock(sk, old, new).and_then(|c| c.map_or(Ok(()), |c| record(&c))) {
            error!(&ctx, "rescue_set_state: reading the socket failed: {}", err);
        }
        0
    }

    /// Whether the kernel skips this CPU's classic tracepoint programs right
    /// now: this CPU's `bpf_prog_active` is raised. `sk` (a TCP socket) lets
    /// the first call on a CPU find the guard.
    fn classic_skipped(sk: Option<u64>) -> bool {
        let Some(slot) = GUARD.get_ptr_mut(0) else {
            return false;
        };
        let mut addr = unsafe { *slot };
        if addr == 0 {
            match sk.map(|sk| guard_address(slot, sk)) {
                Some(Ok(found)) => {
                    unsafe { *slot = found };
                    addr = found;
                }
                _ => return false,
            }
        }
        matches!(unsafe { bpf_probe_read_kernel(addr as *const i32) }, Ok(n) if n > 0)
    }

    /// A pointer's address as a plain number. The verifier allows no
    /// arithmetic on a map or map-value pointer; read back through memory,
    /// the address is a number like any other.
    fn address<T>(p: *const T) -> Result<u64, i32> {
        let holder = [p];
        unsafe { bpf_probe_read_kernel(holder.as_ptr().cast::<u64>()) }
    }

    /// This CPU's `bpf_prog_active` (see [`GuardOffsets`]), found from TCP
    /// socket `sk` and from `elem`, this CPU's element of [`GUARD`].
    fn guard_address(elem: *const u64, sk: u64) -> Result<u64, i32> {
        const ENOENT: i32 = -2;
        let g: GuardOffsets = conf!(guard);
        if g.array_pptrs == 0 {
            return Err(ENOENT);
        }
        if read_kernel::<u16>(sk, conf!(sock.protocol))? != IPPROTO_TCP {
            return Err(ENOENT);
        }
        let map = address(&GUARD as *const PerCpuArray<u64>)?;
        let cpu_offset = address(elem)?.wrapping_sub(read_kernel::<u64>(map, g.array_pptrs)?);
        let prot = read_kernel::<u64>(sk, conf!(sock.prot))?;
        let fw_alloc = read_kernel::<u64>(prot, g.proto_fw_alloc)?;
        Ok(fw_alloc
            .wrapping_add(g.prog_active_delta as u64)
            .wrapping_add(cpu_offset))
    }

    /// Where a transition's fields are read: a copied tracepoint record or
    /// the socket itself.
    trait Fields {
        /// The `T` at byte `off`.
        fn get<T: Copy>(&self, off: u16) -> Result<T, i32>;
    }

    impl Fields for Copied {
        /// One load. The loader checks that each field the programs read
        /// lies within the copy at an offset aligned for its type, so the
        /// error never happens: the bounds check is for the verifier, the
        /// alignment check keeps the typed load sound.
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

    /// An address as [`RawEvent`] carries it, read in 4-byte words: IPv4 in
    /// the first word, network order throughout.
    type Addr = [u32; 4];

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
    fn bytes(addr: Addr) -> [u8; 16] {
        // SAFETY: same size, and every bit pattern is a valid `[u8; 16]`.
        unsafe { core::mem::transmute(addr) }
    }

    /// The transition in a `sock:inet_sock_set_state` record, if it is one
    /// to report.
    fn from_record(ctx: &TracePointContext) -> Result<Option<Change>, i32> {
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
        if !passes(family, lport, rport) {
            return Ok(None);
        }
        let (laddr, raddr) = addresses(
            rec,
            family,
            (conf!(set_state.saddr), conf!(set_state.daddr)),
            (conf!(set_state.saddr_v6), conf!(set_state.daddr_v6)),
        )?;
        Ok(Some(Change {
            sk: rec.get(conf!(set_state.skaddr))?,
            old: rec.get::<i32>(conf!(set_state.oldstate))? as u8,
            new: rec.get::<i32>(conf!(set_state.newstate))? as u8,
            family,
            lport,
            rport,
            laddr,
            raddr,
        }))
    }

    /// Transition `old -> new` of socket `sk`, read from the socket as the
    /// tracepoint reads it, if it is one to report.
    fn from_sock(sk: u64, old: u8, new: u8) -> Result<Option<Change>, i32> {
        if read_kernel::<u16>(sk, conf!(sock.protocol))? != IPPROTO_TCP {
            return Ok(None);
        }
        let family = read_kernel::<u16>(sk, conf!(sock.family))? as u8;
        let lport = u16::from_be(read_kernel::<u16>(sk, conf!(sock.sport))?);
        let rport = u16::from_be(read_kernel::<u16>(sk, conf!(sock.dport))?);
        if !passes(family, lport, rport) {
            return Ok(None);
        }
        let (laddr, raddr) = addresses(
            &Sock(sk),
            family,
            (conf!(sock.saddr), conf!(sock.daddr)),
            (conf!(sock.saddr_v6), conf!(sock.daddr_v6)),
        )?;
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
    fn record(c: &Change) -> Result<(), i32> {
        let now = unsafe { bpf_ktime_get_ns() };

        // Owner: the current task when this transition runs in its context,
        // otherwise whoever was recorded for the socket earlier. The entry
        // is worked on in place: a socket's transitions are serialised by
        // the kernel (socket lock), so nothing else writes it meanwhile.
        // A socket's first transition starts afresh, without a lookup: an
        // entry left by an earlier socket at the same address (whose CLOSE
        // was missed) says nothing about this one, and the insert below
        // replaces it.
        let first = c.old == TCP_CLOSE || (c.old == TCP_LISTEN && c.new == TCP_SYN_RECV);
        let stored = if first { None } else { SOCKS.get_ptr_mut(c.sk) };
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
        if in_owner_context(c.old, c.new) {
            let pid_tgid = bpf_get_current_pid_tgid();
            state.pid = (pid_tgid >> 32) as u32;
            state.tid = pid_tgid as u32;
            // Straight into the entry; the helper zeroes it on failure.
            unsafe {
                generated::bpf_get_current_comm(state.comm.as_mut_ptr().cast(), COMM_LEN as u32)
            };
            state.owner_known = 1;
        }

        emit(RawEvent {
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
            _pad: [0; 3],
            laddr: bytes(c.laddr),
            raddr: bytes(c.raddr),
            comm: state.comm,
        });
        match stored {
            Some(_) if c.new == TCP_CLOSE => {
                let _ = SOCKS.remove(c.sk);
            }
            None if c.new != TCP_CLOSE => {
                let _ = SOCKS.insert(c.sk, fresh, 0);
            }
            _ => {}
        }
        Ok(())
    }

    #[tracepoint]
    pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
        let off = conf!(receive_reset_skaddr);
        if let Err(err) = read_kernel::<u64>(ctx.as_ptr() as u64, off)
            .and_then(|sk| reset(sk, kind::RESET_RECEIVED))
        {
            error!(
                &ctx,
                "tcp_receive_reset: reading the socket failed: {}", err
            );
        }
        0
    }

    #[tracepoint]
    pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
        let off = conf!(send_reset_skaddr);
        if let Err(err) =
            read_kernel::<u64>(ctx.as_ptr() as u64, off).and_then(|sk| reset(sk, kind::RESET_SENT))
        {
            error!(&ctx, "tcp_send_reset: reading the socket failed: {}", err);
        }
        0
    }

    /// The rescuer of [`tcp_receive_reset`]. Like that of
    /// [`tcp_send_reset`], it relies on this CPU's guard address being
    /// known already: set-state rescues find it, and every connection
    /// starts with a transition.
    #[btf_tracepoint(function = "tcp_receive_reset")]
    pub fn rescue_receive_reset(ctx: BtfTracePointContext) -> i32 {
        // (struct sock *sk)
        rescue_reset(&ctx, ctx.arg(0), kind::RESET_RECEIVED)
    }

    #[btf_tracepoint(function = "tcp_send_reset")]
    pub fn rescue_send_reset(ctx: BtfTracePointContext) -> i32 {
        // (const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason reason)
        rescue_reset(&ctx, ctx.arg(0), kind::RESET_SENT)
    }

    fn rescue_reset(ctx: &BtfTracePointContext, sk: u64, what: u8) -> i32 {
        if classic_skipped(None) {
            count(counter::RESCUED);
            if let Err(err) = reset(sk, what) {
                error!(ctx, "rescuing a reset: reading the socket failed: {}", err);
            }
        }
        0
    }

    /// A reset on a full socket: family, ports and state come from the
    /// socket itself (offsets from BTF) so the same filters apply.
    fn reset(sk: u64, what: u8) -> Result<(), i32> {
        if sk == 0 {
            // A reset answering a segment that matched no socket.
            return Ok(());
        }
        let family = read_kernel::<u16>(sk, conf!(sock.family))? as u8;
        let lport = read_kernel::<u16>(sk, conf!(sock.num))?;
        let rport = u16::from_be(read_kernel::<u16>(sk, conf!(sock.dport))?);
        if !passes(family, lport, rport) {
            return Ok(());
        }
        let state = read_kernel::<u8>(sk, conf!(sock.state))?;
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
            _pad: [0; 3],
            laddr: [0; 16],
            raddr: [0; 16],
            comm: owner.comm,
        });
        Ok(())
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}

/// The programs only exist for the BPF target; a host build has nothing to run.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
