//! Wire types and constants shared by the eBPF programs (`main.rs`) and
//! userspace: records, configuration, TCP state numbers.
//!
//! Everything here is `#[repr(C)]`, `no_std` and plain old data: the kernel
//! side writes these bytes and userspace reads them back with the very same
//! definitions, so the layout can never drift between the two halves.
#![cfg_attr(not(test), no_std)]

/// Length of a task's `comm`, as in the kernel's `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// TCP states, as the kernel numbers them (`include/net/tcp_states.h`).
pub mod tcp {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// `IPPROTO_TCP`, as the tracepoints and `struct sock` carry it.
pub const IPPROTO_TCP: u16 = 6;

/// `AF_INET`, as carried in [`RawEvent::family`].
pub const AF_INET: u8 = 2;
/// `AF_INET6`, as carried in [`RawEvent::family`].
pub const AF_INET6: u8 = 10;

/// What a [`RawEvent`] reports.
pub mod kind {
    /// `sock:inet_sock_set_state`: a TCP socket changed state.
    pub const TRANSITION: u8 = 1;
    /// `tcp:tcp_receive_reset`: the socket received an RST.
    pub const RESET_RECEIVED: u8 = 2;
    /// `tcp:tcp_send_reset`: the socket sent an RST.
    pub const RESET_SENT: u8 = 3;
    /// `syscalls:sys_exit_bind`: a `bind()` of a TCP socket failed with
    /// `EADDRINUSE`.
    pub const BIND_FAILED: u8 = 4;
    /// `syscalls:sys_exit_connect`: a `connect()` of a TCP socket failed
    /// before the socket reached `SYN_SENT`.
    pub const CONNECT_ERROR: u8 = 5;
}

/// Errors syscalls return (negated), as the programs test them.
pub const EADDRINUSE: i64 = 98;
pub const EINPROGRESS: i64 = 115;
pub const EALREADY: i64 = 114;
pub const EISCONN: i64 = 106;

/// Bits of [`RawEvent::oldstate`] in a [`kind::BIND_FAILED`] record.
pub mod bind {
    /// The socket had `SO_REUSEADDR` set.
    pub const REUSEADDR: u8 = 1;
    /// The socket had `SO_REUSEPORT` set.
    pub const REUSEPORT: u8 = 2;
}

/// Bits of [`RawEvent::flags`].
pub mod flags {
    /// `pid`, `tid` and `comm` name the socket's owner, captured in process
    /// context; without it they are zero.
    pub const OWNER_KNOWN: u8 = 1;
}

/// A connection's life as the programs follow it, and what it tells of the
/// connection: the one classification of role and closer, shared by the
/// programs (which keep each socket's [`Life`]) and userspace (which reads
/// it from each record).
pub mod life {
    use super::tcp;

    /// The bit of `state` in [`Life::seen`].
    pub const fn bit(state: u8) -> u16 {
        1 << (state & 0xf)
    }

    /// Whether `old -> new` starts a socket's life: `connect()`, `listen()`
    /// or a connection accepted from a listener.
    pub const fn begins(old: u8, new: u8) -> bool {
        old == tcp::CLOSE || (old == tcp::LISTEN && new == tcp::SYN_RECV)
    }

    /// What is kept of one socket's life, from its first transition seen.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Life {
        /// When the life began ([`begins`]), 0 when tracing came later.
        pub opened_ns: u64,
        /// [`bit`] of every state entered since.
        pub seen: u16,
        pub _pad: [u16; 3],
    }

    impl Life {
        /// The life after transition `old -> new` at `now_ns`.
        pub const fn after(self, old: u8, new: u8, now_ns: u64) -> Life {
            if begins(old, new) {
                Life {
                    opened_ns: now_ns,
                    seen: bit(new),
                    _pad: [0; 3],
                }
            } else {
                Life {
                    seen: self.seen | bit(new),
                    ..self
                }
            }
        }

        /// Which end this socket is.
        pub const fn role(self) -> Role {
            if self.seen & bit(tcp::SYN_SENT) != 0 {
                Role::Client
            } else if self.seen & bit(tcp::SYN_RECV) != 0 {
                Role::Server
            } else {
                Role::Unknown
            }
        }

        /// Which end closed first, as far as the states tell: this end
        /// sending its FIN from ESTABLISHED (FIN_WAIT1), the peer's FIN
        /// arriving first (CLOSE_WAIT), or both crossing (CLOSING).
        pub const fn closer(self) -> Closer {
            if self.seen & bit(tcp::CLOSING) != 0 {
                Closer::Simultaneous
            } else if self.seen & bit(tcp::FIN_WAIT1) != 0 {
                Closer::Local
            } else if self.seen & bit(tcp::CLOSE_WAIT) != 0 {
                Closer::Remote
            } else {
                Closer::Unknown
            }
        }
    }

    /// Whether the closes-only stream carries `old -> new`: a listener's
    /// transitions, the end of a handshake (the first record with both
    /// ports, which says a TIME_WAIT socket on that 4-tuple was reused) and
    /// every end. The rest is kept in the socket's [`Life`].
    pub const fn in_closes_only(old: u8, new: u8) -> bool {
        new == tcp::LISTEN || new == tcp::CLOSE || old == tcp::SYN_SENT || old == tcp::SYN_RECV
    }

    /// Which end of the connection a socket is.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub enum Role {
        /// This end called `connect()`.
        Client,
        /// This end was accepted from a listener.
        Server,
        /// Tracing started after the connection was set up.
        Unknown,
    }

    impl Role {
        pub const fn as_str(self) -> &'static str {
            match self {
                Role::Client => "client",
                Role::Server => "server",
                Role::Unknown => "unknown",
            }
        }
    }

    /// Which end closed first.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub enum Closer {
        Local,
        Remote,
        Simultaneous,
        Unknown,
    }

    impl Closer {
        pub const fn as_str(self) -> &'static str {
            match self {
                Closer::Local => "local",
                Closer::Remote => "remote",
                Closer::Simultaneous => "simultaneous",
                Closer::Unknown => "unknown",
            }
        }
    }
}

/// One record of the ring buffer: a transition or a reset on one socket.
///
/// For resets, `oldstate`/`newstate` both hold the socket's state and the
/// addresses are left zero (userspace knows the socket from its transitions).
/// For a failed `bind()`, `laddr`/`lport` are the address asked for,
/// `oldstate` holds [`bind`] bits, the owner is the calling thread and
/// `skaddr` the socket; for a failed `connect()`, `raddr`/`rport` are the
/// destination and `oldstate` the errno.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event fired.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`: identifies the socket while it lives.
    pub skaddr: u64,
    /// Time of this socket's previous transition, 0 when none was seen.
    pub prev_ts_ns: u64,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// Owner's process id (tgid), valid with [`flags::OWNER_KNOWN`].
    pub pid: u32,
    /// Owner's thread id, valid with [`flags::OWNER_KNOWN`].
    pub tid: u32,
    /// One of [`kind`].
    pub kind: u8,
    /// `TCP_*` state before the transition.
    pub oldstate: u8,
    /// `TCP_*` state after the transition.
    pub newstate: u8,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// This host's port, host byte order.
    pub lport: u16,
    /// The peer's port, host byte order.
    pub rport: u16,
    /// Bits of [`flags`].
    pub flags: u8,
    pub _pad: u8,
    /// The socket's [`life::Life::seen`] after this transition (0 for other
    /// records).
    pub seen: u16,
    /// This host's address: 4 bytes for IPv4, 16 for IPv6, network order.
    pub laddr: [u8; 16],
    /// The peer's address, as `laddr`.
    pub raddr: [u8; 16],
    /// Owner's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// The socket's [`life::Life::opened_ns`] (0 for other records).
    pub opened_ns: u64,
}

/// Byte offsets inside kernel structures, read from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `struct sock` -> `sk_protocol` (u16).
    pub protocol: u16,
    /// `struct sock` -> `__sk_common.skc_family` (u16).
    pub family: u16,
    /// `struct sock` -> `__sk_common.skc_num` (local port, host order).
    pub num: u16,
    /// `struct sock` -> `__sk_common.skc_dport` (peer port, network order).
    pub dport: u16,
    /// `struct sock` -> `__sk_common.skc_net` (a `struct net *`).
    pub net: u16,
    /// `struct sock` -> `__sk_common.skc_state` (u8).
    pub state: u16,
    /// `struct net` -> `ns.inum` (u32).
    pub net_inum: u16,
    /// `struct sock` -> `__sk_common.skc_rcv_saddr` (IPv4, network order).
    pub saddr: u16,
    /// `struct sock` -> `__sk_common.skc_daddr` (IPv4, network order).
    pub daddr: u16,
    /// `struct sock` -> `__sk_common.skc_v6_rcv_saddr` (16 bytes).
    pub saddr_v6: u16,
    /// `struct sock` -> `__sk_common.skc_v6_daddr` (16 bytes).
    pub daddr_v6: u16,
    /// `struct sock` -> `__sk_common.skc_prot` (a `struct proto *`).
    pub prot: u16,
    /// `struct inet_sock` (which starts with its `struct sock`) ->
    /// `inet_sport` (network order): the local port as the tracepoint
    /// reports it, still set when `skc_num` is already cleared at CLOSE.
    pub sport: u16,
}

/// Where the programs find two of this CPU's kernel variables:
/// `bpf_prog_active`, the guard that makes the kernel skip a classic
/// tracepoint program nested inside another BPF run on the same CPU (the
/// reset rescuers act when it is raised), and the preempt count, which says
/// whether a transition runs in softirq (see [`claim`]).
///
/// A variable's address on a CPU is its static per-CPU address plus the
/// CPU's per-CPU offset. The CPU's offset is the address a per-CPU array
/// lookup returns minus the array's `pptrs[0]`. The static addresses are
/// either known outright (from `/proc/kallsyms`, `proto_fw_alloc == 0`) or
/// derived from another static per-CPU variable whose address the kernel
/// stores in memory a program can read (`tcp_prot.per_cpu_fw_alloc` =
/// `&tcp_memory_per_cpu_fw_alloc`, since Linux 6.0) plus each variable's
/// distance from it in the `.data..percpu` section of the kernel's BTF.
/// `array_pptrs == 0`: neither is known.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardOffsets {
    /// `struct bpf_array` -> `pptrs`.
    pub array_pptrs: u16,
    /// `struct proto` -> `per_cpu_fw_alloc`; 0: the addresses below are
    /// static per-CPU addresses.
    pub proto_fw_alloc: u16,
    pub _pad: [u8; 4],
    /// `bpf_prog_active`: its distance from `tcp_memory_per_cpu_fw_alloc`,
    /// or its static address.
    pub prog_active: u64,
    /// The preempt count (`__preempt_count`, or `pcpu_hot.preempt_count` in
    /// Linux 6.2 to 6.14), likewise.
    pub preempt_count: u64,
}

/// Which of the two copies of the set-state program records a transition.
///
/// The kernel guards each BTF tracepoint program on its own: a transition
/// that interrupts a program's run on the same CPU (a softirq one arriving
/// while it handles a process-context one) skips that program, and only
/// that one. Two copies run on every transition, the first attached first
/// (the kernel calls a tracepoint's probes in the order they were
/// attached). The first claims the transition in its context's slot and
/// records it; the second clears a matching claim, or, finding none,
/// records the transition itself: the first was skipped. Transitions nest
/// at most two deep on one CPU (softirqs do not nest, and TCP changes state
/// neither in a hard interrupt nor in an NMI), so one slot per context
/// suffices:
///
/// - arriving while the first runs, a transition skips it, not the second;
/// - arriving between the two, it runs both, in the other context's slot;
/// - arriving while the second runs, it runs the first, which records it,
///   and skips the second: its claim stays behind in the softirq slot,
///   until the next softirq transition overwrites it or the next
///   process-context one clears it (no softirq run is in progress when a
///   process-context run starts).
///
/// What is left: a stale claim matched by the next softirq transition of
/// the same socket with the same two states, arriving on that CPU while
/// the first copy runs. The first copy's skipped runs that no rescue
/// answers are counted as lost.
pub mod claim {
    /// The context bit of the preempt count: set while a softirq is served.
    pub const SOFTIRQ_OFFSET: u32 = 1 << 8;

    /// Slot of a process-context transition.
    pub const PROCESS: usize = 0;
    /// Slot of a softirq transition.
    pub const SOFTIRQ: usize = 1;

    /// The slot of a transition that runs with this preempt count.
    pub const fn context(preempt_count: u32) -> usize {
        if preempt_count & SOFTIRQ_OFFSET != 0 {
            SOFTIRQ
        } else {
            PROCESS
        }
    }

    /// One transition: socket `sk` going from `old` to `new`; `sk == 0`: none.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Claim {
        pub sk: u64,
        pub old: u8,
        pub new: u8,
        pub _pad: [u8; 6],
    }

    impl Claim {
        pub const NONE: Claim = Claim::new(0, 0, 0);

        pub const fn new(sk: u64, old: u8, new: u8) -> Claim {
            Claim {
                sk,
                old,
                new,
                _pad: [0; 6],
            }
        }
    }

    /// One CPU's claims, one slot per context.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Claims {
        pub slots: [Claim; 2],
    }

    impl Claims {
        /// The first copy: claims transition `c`, which runs in `context`.
        pub fn first(&mut self, context: usize, c: Claim) {
            if context == PROCESS {
                self.slots[SOFTIRQ] = Claim::NONE;
            }
            self.slots[context & 1] = c;
        }

        /// The second copy: whether transition `c` went unclaimed, so that
        /// the second copy records it. Either slot may hold its claim: one
        /// socket is never in the same transition in both contexts at once,
        /// so the second copy needs no context of its own (one kernel read
        /// less on every transition).
        pub fn second(&mut self, c: Claim) -> bool {
            match self.slots.iter_mut().find(|slot| **slot == c) {
                Some(slot) => {
                    *slot = Claim::NONE;
                    false
                }
                None => true,
            }
        }
    }
}

/// Where the syscall programs find a call's arguments, its result and its
/// socket: tracepoint offsets from the `syscalls` format files, the rest
/// from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallOffsets {
    /// `syscalls:sys_enter_bind` -> `fd`.
    pub bind_fd: u16,
    /// `syscalls:sys_enter_bind` -> `umyaddr` (a user pointer).
    pub bind_addr: u16,
    /// `ret` of `syscalls:sys_exit_bind`, `sys_exit_connect`,
    /// `sys_exit_accept4` and `sys_exit_accept` (the loader checks that it
    /// is the same in each).
    pub exit_ret: u16,
    /// `struct task_struct` -> `files`.
    pub task_files: u16,
    /// `struct files_struct` -> `fdt`.
    pub files_fdt: u16,
    /// `struct fdtable` -> `fd` (an array of `struct file *`).
    pub fdtable_fd: u16,
    /// `struct file` -> `private_data` (a socket's `struct socket *`).
    pub file_private_data: u16,
    /// `struct socket` -> `sk`.
    pub socket_sk: u16,
    /// Byte of `struct sock` holding the `skc_reuse:4` and `skc_reuseport:1`
    /// bitfields.
    pub reuse_byte: u16,
    /// Bit of that byte where `skc_reuse` starts.
    pub reuse_shift: u8,
    /// Bit of that byte holding `skc_reuseport`.
    pub reuseport_shift: u8,
    /// `syscalls:sys_enter_connect` -> `fd`.
    pub connect_fd: u16,
    /// `syscalls:sys_enter_connect` -> `uservaddr` (a user pointer).
    pub connect_addr: u16,
}

/// Configuration the loader writes into the programs' read-only globals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Wake the consumer once this many bytes are waiting in the ring buffer;
    /// below that, userspace polls on a short timer.
    pub wakeup_bytes: u64,
    pub guard: GuardOffsets,
    pub syscalls: SyscallOffsets,
    pub sock: SockOffsets,
    /// Offset of `skaddr` in `tcp:tcp_receive_reset`.
    pub receive_reset_skaddr: u16,
    /// Offset of `skaddr` in `tcp:tcp_send_reset`.
    pub send_reset_skaddr: u16,
    /// Bit 0: report IPv4, bit 1: report IPv6.
    pub families: u8,
    /// Non-zero: only ports set in `LPORTS` pass.
    pub lport_filter: u8,
    /// Non-zero: only ports set in `RPORTS` pass.
    pub rport_filter: u8,
    /// Non-zero: only sockets with a port set in `PORTS` at either end pass.
    pub port_filter: u8,
    /// Non-zero: only the transitions [`life::in_closes_only`] names are
    /// written; the others only update the socket's [`life::Life`].
    pub closes_only: u8,
    pub _pad: [u8; 5],
}

impl Config {
    /// Everything zero: the value compiled into the programs, before the
    /// loader writes the running kernel's.
    // SAFETY: integers and byte arrays only: all-zero is a valid value.
    pub const ZERO: Config = unsafe { core::mem::zeroed() };
}

/// [`Config::families`] bit for IPv4.
pub const FAMILY_V4: u8 = 1;
/// [`Config::families`] bit for IPv6.
pub const FAMILY_V6: u8 = 2;

/// Size of a port bitmap (`LPORTS`, `RPORTS`): one bit per port.
pub const PORT_BITMAP_LEN: usize = 65536 / 8;

/// Name of the ring buffer map.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the per-CPU counter map, indexed by [`counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";

/// Indices of the per-CPU counter map.
pub mod counter {
    /// Records that found the ring buffer full.
    pub const RING_FULL: u32 = 0;
    /// Transitions the kernel skipped for the first set-state program and
    /// the second recorded instead (see [`super::claim`]), and resets it
    /// skipped for a classic program and its rescuer recorded.
    pub const RESCUED: u32 = 1;
    /// Number of counters.
    pub const LEN: u32 = 2;
}
/// Name of the per-socket owner/timestamp LRU map.
pub const MAP_SOCKS: &str = "SOCKS";
/// Name of the [`Config`] global.
pub const GLOBAL_CONFIG: &str = "CONFIG";
/// Name of the local-port bitmap global.
pub const GLOBAL_LPORTS: &str = "LPORTS";
/// Name of the remote-port bitmap global.
pub const GLOBAL_RPORTS: &str = "RPORTS";
/// Name of the either-end port bitmap global.
pub const GLOBAL_PORTS: &str = "PORTS";

/// The two copies of the set-state program (BTF tracepoints, see
/// [`claim`]), by name, in the order they are attached.
pub const SET_STATE_PROGRAMS: [&str; 2] = ["set_state", "set_state_rescue"];
/// The tracepoint of [`SET_STATE_PROGRAMS`].
pub const SET_STATE_TRACEPOINT: &str = "inet_sock_set_state";

/// The classic tracepoint programs on resets, by name, with the tracepoint
/// each attaches to.
pub const RESET_PROGRAMS: [(&str, &str, &str); 2] = [
    ("tcp_receive_reset", "tcp", "tcp_receive_reset"),
    ("tcp_send_reset", "tcp", "tcp_send_reset"),
];

/// The programs on syscall tracepoints (failed `bind()`s and `connect()`s,
/// the process that accepts a connection), by name, with their tracepoint (one program
/// may serve two): attached only where they are wanted, since every
/// syscall of every task goes through the tracing entry path then.
pub const SYSCALL_PROGRAMS: [(&str, &str, &str); 6] = [
    ("sys_enter_bind", "syscalls", "sys_enter_bind"),
    ("sys_exit_bind", "syscalls", "sys_exit_bind"),
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept4"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
];

/// The rescuers of [`RESET_PROGRAMS`] (BTF tracepoints), by name, with
/// their tracepoint: each records what the kernel skipped for the classic
/// program of the same tracepoint.
pub const RESCUERS: [(&str, &str); 2] = [
    ("rescue_receive_reset", "tcp_receive_reset"),
    ("rescue_send_reset", "tcp_send_reset"),
];

#[cfg(feature = "user")]
mod user {
    // SAFETY: a `#[repr(C)]` struct of integers with explicit padding fields
    // (no implicit padding): every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
}

// The layouts are part of the kernel/userspace contract: no implicit padding.
const _: () = assert!(core::mem::size_of::<RawEvent>() == 104);
const _: () = assert!(core::mem::size_of::<Config>() == 96);
const _: () = assert!(core::mem::offset_of!(Config, _pad) + 5 == 96);
const _: () = assert!(core::mem::size_of::<life::Life>() == 16);

#[cfg(test)]
mod tests {
    use super::claim::{Claim, Claims, PROCESS, SOFTIRQ, context};

    /// Where in a process-context transition's two runs a softirq one
    /// arrives.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum At {
        FirstBeforeClaim,
        FirstAfterClaim,
        Between,
        SecondBeforeCheck,
        SecondAfterCheck,
    }

    const EVERYWHERE: [At; 5] = [
        At::FirstBeforeClaim,
        At::FirstAfterClaim,
        At::Between,
        At::SecondBeforeCheck,
        At::SecondAfterCheck,
    ];

    /// One CPU running both copies on each transition, each guarded on its
    /// own as the kernel guards BTF tracepoint programs.
    #[derive(Default)]
    struct Cpu {
        claims: Claims,
        first_running: bool,
        second_running: bool,
        /// Transitions run, and those recorded.
        run: Vec<Claim>,
        recorded: Vec<Claim>,
        /// The first copy's skipped runs (its `recursion_misses`).
        misses: u64,
        rescued: u64,
    }

    impl Cpu {
        fn transition(&mut self, ctx: usize, c: Claim, nested: Option<(At, Claim)>) {
            self.run.push(c);
            let nest = |cpu: &mut Cpu, at: At| {
                if let Some((_, y)) = nested.filter(|&(when, _)| when == at) {
                    cpu.transition(SOFTIRQ, y, None);
                }
            };
            if self.first_running {
                self.misses += 1;
            } else {
                self.first_running = true;
                nest(self, At::FirstBeforeClaim);
                self.claims.first(ctx, c);
                nest(self, At::FirstAfterClaim);
                self.recorded.push(c);
                self.first_running = false;
            }
            nest(self, At::Between);
            if !self.second_running {
                self.second_running = true;
                nest(self, At::SecondBeforeCheck);
                let rescue = self.claims.second(c);
                nest(self, At::SecondAfterCheck);
                if rescue {
                    self.rescued += 1;
                    self.recorded.push(c);
                }
                self.second_running = false;
            }
        }

        /// Every transition run was recorded exactly once.
        fn exact(&self) {
            let mut run = self.run.clone();
            let mut recorded = self.recorded.clone();
            run.sort_by_key(|c| (c.sk, c.old, c.new));
            recorded.sort_by_key(|c| (c.sk, c.old, c.new));
            assert_eq!(run, recorded);
            assert_eq!(self.misses, self.rescued);
        }

        /// What was not recorded is what the counters call lost, and
        /// nothing was recorded twice.
        fn accounted(&self) {
            let lost = self.misses - self.rescued;
            assert_eq!(self.recorded.len() as u64 + lost, self.run.len() as u64);
            for c in &self.recorded {
                let times = |v: &Vec<Claim>| v.iter().filter(|x| *x == c).count();
                assert!(times(&self.recorded) <= times(&self.run), "{c:?} twice");
            }
        }
    }

    const X: Claim = Claim::new(0xffff_8880_0000_1000, 1, 4);
    const Y: Claim = Claim::new(0xffff_8880_0000_2000, 4, 5);
    const Z: Claim = Claim::new(0xffff_8880_0000_3000, 2, 1);

    #[test]
    fn the_context_is_the_softirq_bit_of_the_preempt_count() {
        assert_eq!(context(0), PROCESS);
        assert_eq!(context(0x200), PROCESS); // softirqs disabled, not served
        assert_eq!(context(0x100), SOFTIRQ);
        assert_eq!(context(0x8000_0101), SOFTIRQ);
    }

    #[test]
    fn a_softirq_transition_nested_anywhere_is_recorded_once() {
        for at in EVERYWHERE {
            let mut cpu = Cpu::default();
            cpu.transition(PROCESS, X, Some((at, Y)));
            cpu.exact();
            let skipped = u64::from(matches!(at, At::FirstBeforeClaim | At::FirstAfterClaim));
            assert_eq!(cpu.rescued, skipped, "{at:?}");
        }
    }

    #[test]
    fn a_claim_left_behind_does_not_hide_later_transitions() {
        // Arriving inside the second copy leaves Y's claim behind.
        for at in [At::SecondBeforeCheck, At::SecondAfterCheck] {
            let mut cpu = Cpu::default();
            cpu.transition(PROCESS, X, Some((at, Y)));
            assert_eq!(cpu.claims.slots[SOFTIRQ], Y);
            // A later softirq transition overwrites it, one nested in a
            // process-context transition finds it cleared.
            cpu.transition(SOFTIRQ, Z, None);
            cpu.transition(PROCESS, X, Some((At::SecondBeforeCheck, Y)));
            cpu.transition(PROCESS, Z, Some((At::FirstAfterClaim, Y)));
            cpu.transition(PROCESS, X, Some((At::FirstBeforeClaim, Z)));
            cpu.exact();
        }
    }

    #[test]
    fn a_stale_claim_matched_by_the_same_transition_is_counted_as_lost() {
        let mut cpu = Cpu::default();
        cpu.transition(PROCESS, X, Some((At::SecondAfterCheck, Y)));
        // The same socket and states again, arriving before the first copy
        // of a process-context transition cleared the stale claim.
        cpu.transition(PROCESS, Z, Some((At::FirstBeforeClaim, Y)));
        cpu.accounted();
        assert_eq!(cpu.misses - cpu.rescued, 1);
    }

    #[test]
    fn every_sequence_of_nestings_is_accounted_for() {
        // Every sequence of three process-context transitions, each with a
        // nested softirq one (or none) anywhere, over three claims.
        let claims = [X, Y, Z];
        let choices: Vec<Option<(At, Claim)>> = core::iter::once(None)
            .chain(
                EVERYWHERE
                    .iter()
                    .flat_map(|&at| claims.map(|y| Some((at, y)))),
            )
            .collect();
        for a in &choices {
            for b in &choices {
                for c in &choices {
                    let mut cpu = Cpu::default();
                    for (outer, nested) in claims.iter().zip([a, b, c]) {
                        cpu.transition(PROCESS, *outer, *nested);
                    }
                    cpu.accounted();
                }
            }
        }
    }
}
