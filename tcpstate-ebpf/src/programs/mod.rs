//! Entry points, maps and globals.
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

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_MMAPABLE,
    helpers::bpf_get_smp_processor_id,
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
};
use aya_log_ebpf::error;
use tcpstate_ebpf::{Config, PORT_BITMAP_LEN, counter, kind};

/// One field of [`CONFIG`], e.g. `conf!(set_state.sport)`. Read volatile,
/// field by field: the loader rewrites the value, so the compiler must not
/// fold it, and copying the whole struct on every event would cost as much
/// as the rest of the program.
macro_rules! conf {
    ($($field:ident).+) => {
        unsafe {
            ::core::ptr::read_volatile(::core::ptr::addr_of!(
                $crate::programs::CONFIG.$($field).+
            ))
        }
    };
}

mod record;
mod rescue;
mod syscalls;

use record::{Copied, SockState, from_record, from_sock, read_kernel, record, reset};
use rescue::classic_skipped;
use syscalls::Call;

#[unsafe(no_mangle)]
static CONFIG: Config = Config::ZERO;

#[unsafe(no_mangle)]
static LPORTS: [u8; PORT_BITMAP_LEN] = [0; PORT_BITMAP_LEN];
#[unsafe(no_mangle)]
static RPORTS: [u8; PORT_BITMAP_LEN] = [0; PORT_BITMAP_LEN];
#[unsafe(no_mangle)]
static PORTS: [u8; PORT_BITMAP_LEN] = [0; PORT_BITMAP_LEN];

/// The record stream. Its size is set by the loader.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// The counters, a set per CPU ([`counter::slot`]; the loader sizes the
/// array), in memory userspace
/// maps and reads without a syscall. A map syscall (a per-CPU array's
/// lookup, say) raises the reading CPU's `bpf_prog_active` while it
/// copies: were the reader preempted then, the kernel would skip every
/// classic program run on that CPU, a `connect()`'s included, until the
/// reader ran again.
#[map]
static COUNTERS: Array<u64> = Array::with_max_entries(counter::LEN, BPF_F_MMAPABLE);

/// Per CPU: the address of that CPU's `bpf_prog_active`, 0 until the first
/// rescuer run on the CPU works it out (see `rescue.rs`).
#[map]
static GUARD: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for one [`Copied`] record (too big for the stack). The
/// kernel never runs the classic program nested on one CPU, and the
/// rescuers do not use it.
#[map]
static RECORD: PerCpuArray<Copied> = PerCpuArray::with_max_entries(1, 0);

/// Owner and last-transition time per live socket, keyed by `skaddr`.
#[map]
static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(131072, 0);

/// `bind()` calls in flight, by thread id.
#[map]
static BINDS: HashMap<u32, Call> = HashMap::with_max_entries(4096, 0);

/// `connect()` calls in flight, by thread id.
#[map]
static CONNECTS: HashMap<u32, Call> = HashMap::with_max_entries(4096, 0);

/// `PORT_BITMAP_LEN - 1`; see [`port_allowed`].
static PORT_INDEX_MASK: usize = PORT_BITMAP_LEN - 1;

/// Whether `port` is set in a port bitmap global.
fn port_allowed(bitmap: &[u8; PORT_BITMAP_LEN], port: u16) -> bool {
    // Masked although a u16 cannot exceed it: older verifiers (Linux 5.10,
    // 6.1) lose a spilled port's bounds and refuse the access otherwise.
    // The mask is read from read-only data, whose value the verifier knows
    // and the compiler does not (it would drop a mask it can prove idle).
    let mask = unsafe { read_volatile(addr_of!(PORT_INDEX_MASK)) };
    let index = (port as usize >> 3) & mask;
    let byte = unsafe { read_volatile(addr_of!(bitmap[index])) };
    byte & (1 << (port & 7)) != 0
}

/// Adds one to this CPU's counter `index`.
fn count(index: u32) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(c) = COUNTERS.get_ptr_mut(counter::slot(cpu, index)) {
        unsafe { *c += 1 };
    }
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

/// The rescuer of [`inet_sock_set_state`]: records the transition only when
/// the kernel skips the classic program for it.
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

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let off = conf!(receive_reset_skaddr);
    if let Err(err) =
        read_kernel::<u64>(ctx.as_ptr() as u64, off).and_then(|sk| reset(sk, kind::RESET_RECEIVED))
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

/// The rescuer of [`tcp_receive_reset`]. Like that of [`tcp_send_reset`],
/// it relies on this CPU's guard address being known already: set-state
/// rescues find it, and every connection starts with a transition.
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

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    let (fd_at, addr_at) = (conf!(syscalls.bind_fd), conf!(syscalls.bind_addr));
    if let Err(err) = syscalls::enter(&ctx, &BINDS, fd_at, addr_at) {
        error!(&ctx, "sys_enter_bind: remembering the call failed: {}", err);
    }
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    if let Err(err) = syscalls::exit_bind(&ctx) {
        error!(
            &ctx,
            "sys_exit_bind: reading the failed call failed: {}", err
        );
    }
    0
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let (fd_at, addr_at) = (conf!(syscalls.connect_fd), conf!(syscalls.connect_addr));
    if let Err(err) = syscalls::enter(&ctx, &CONNECTS, fd_at, addr_at) {
        error!(
            &ctx,
            "sys_enter_connect: remembering the call failed: {}", err
        );
    }
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if let Err(err) = syscalls::exit_connect(&ctx) {
        error!(
            &ctx,
            "sys_exit_connect: reading the failed call failed: {}", err
        );
    }
    0
}

/// Attached to `sys_exit_accept4` and `sys_exit_accept`.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    if let Err(err) = syscalls::exit_accept(&ctx) {
        error!(
            &ctx,
            "sys_exit_accept: reading the accepted socket failed: {}", err
        );
    }
    0
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Dual MIT/GPL, as the crates' MIT license allows; GPL-compatible, which
/// the kernel requires for the helpers the programs call.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
