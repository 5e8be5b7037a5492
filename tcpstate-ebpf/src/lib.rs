//! Wire types and constants shared by the eBPF programs (`main.rs`) and
//! userspace: records, configuration, TCP state numbers.
//!
//! Everything here is `#[repr(C)]`, `no_std` and plain old data: the kernel
//! side writes these bytes and userspace reads them back with the very same
//! definitions, so the layout can never drift between the two halves.
#![no_std]

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

/// Bytes of a `sock:inet_sock_set_state` record the program copies in one
/// read; every field it uses must lie within them (the loader checks).
pub const SET_STATE_RECORD_LEN: usize = 128;

/// Byte offsets of the fields of `sock:inet_sock_set_state`, as read from the
/// running kernel's tracepoint format file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetStateOffsets {
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
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

/// What the rescue programs need to find this CPU's `bpf_prog_active`, the
/// kernel's per-CPU guard that makes it skip a classic tracepoint program
/// nested inside another BPF run on the same CPU. `array_pptrs == 0`
/// disables the rescue.
///
/// The guard's address on a CPU is its static per-CPU address plus the
/// CPU's per-CPU offset. The CPU's offset is the address a per-CPU array
/// lookup returns minus the array's `pptrs[0]`. The static address is
/// either known outright (`prog_active`, from `/proc/kallsyms`) or derived
/// from another static per-CPU variable whose address the kernel stores in
/// memory a program can read (`tcp_prot.per_cpu_fw_alloc` =
/// `&tcp_memory_per_cpu_fw_alloc`, since Linux 6.0) plus the distance
/// between the two in the `.data..percpu` section of the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardOffsets {
    /// `struct bpf_array` -> `pptrs`.
    pub array_pptrs: u16,
    /// `struct proto` -> `per_cpu_fw_alloc`.
    pub proto_fw_alloc: u16,
    pub _pad: [u8; 4],
    /// `.data..percpu` offset of `bpf_prog_active` minus that of
    /// `tcp_memory_per_cpu_fw_alloc`.
    pub prog_active_delta: i64,
    /// The static per-CPU address of `bpf_prog_active`, 0 when unknown (the
    /// derivation above is used then).
    pub prog_active: u64,
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
    pub set_state: SetStateOffsets,
    /// Offset of `skaddr` in `tcp:tcp_receive_reset`.
    pub receive_reset_skaddr: u16,
    /// Offset of `skaddr` in `tcp:tcp_send_reset`.
    pub send_reset_skaddr: u16,
    pub sock: SockOffsets,
    /// Bit 0: report IPv4, bit 1: report IPv6.
    pub families: u8,
    /// Non-zero: only ports set in `LPORTS` pass.
    pub lport_filter: u8,
    /// Non-zero: only ports set in `RPORTS` pass.
    pub rport_filter: u8,
    /// Non-zero: only sockets with a port set in `PORTS` at either end pass.
    pub port_filter: u8,
    /// Wake the consumer once this many bytes are waiting in the ring buffer;
    /// below that, userspace polls on a short timer.
    pub wakeup_bytes: u64,
    pub guard: GuardOffsets,
    pub syscalls: SyscallOffsets,
    /// Non-zero: only the transitions [`life::in_closes_only`] names are
    /// written; the others only update the socket's [`life::Life`].
    pub closes_only: u8,
    pub _pad: [u8; 7],
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
    /// Transitions and resets the kernel skipped for a classic program and
    /// its rescue program recorded instead.
    pub const RESCUED: u32 = 1;
    /// Number of counters.
    pub const LEN: u32 = 2;

    /// Entry of the `COUNTERS` array holding CPU `cpu`'s counter `index`:
    /// each CPU has a set of [`LEN`], CPU n's from entry `n * LEN`. With
    /// `index` 0 and `cpu` the number of CPUs, the array's length.
    #[inline(always)]
    pub const fn slot(cpu: u32, index: u32) -> u32 {
        cpu * LEN + index
    }
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

/// The classic tracepoint programs, by name, with the tracepoint each
/// attaches to.
pub const PROGRAMS: [(&str, &str, &str); 3] = [
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
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

/// The rescue programs (BTF tracepoints), by name, with their tracepoint:
/// each records what the kernel skipped for the classic program of the same
/// tracepoint.
pub const RESCUERS: [(&str, &str); 3] = [
    ("rescue_set_state", "inet_sock_set_state"),
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
const _: () = assert!(core::mem::size_of::<Config>() == 120);
const _: () = assert!(core::mem::size_of::<life::Life>() == 16);
