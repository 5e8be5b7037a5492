//! Programs on syscall tracepoints, for what the TCP tracepoints cannot
//! tell: failed `bind()` calls (the entry program remembers each call's
//! socket and address by thread, the exit program writes a record when the
//! call failed with `EADDRINUSE` on a TCP socket), `connect()` calls that
//! failed before the socket changed state (likewise, with the errno), and
//! which process accepted a connection (it becomes the socket's owner).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    maps::HashMap,
    programs::TracePointContext,
};
use tcpstate_ebpf::{
    AF_INET, AF_INET6, COMM_LEN, EADDRINUSE, EALREADY, EINPROGRESS, EISCONN, IPPROTO_TCP, RawEvent,
    bind, flags, kind,
};

use super::{
    BINDS, CONNECTS, SOCKS,
    record::{Addr, bytes, emit, filter_family, netns_of, passes, read_kernel},
};

/// One `bind()` or `connect()` in flight.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    fd: u64,
    /// The caller's `struct sockaddr *`.
    addr: u64,
    /// For a `connect()`: the socket reached `SYN_SENT` (the state stream
    /// reports how it ends).
    reached: u64,
}

/// At entry to `bind()` or `connect()`: the call's fd and address, by
/// thread, into `calls`, from the tracepoint fields at `fd_at`, `addr_at`.
pub fn enter(
    ctx: &TracePointContext,
    calls: &HashMap<u32, Call>,
    fd_at: u16,
    addr_at: u16,
) -> Result<(), i32> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let call = Call {
        fd: unsafe { ctx.read_at::<u64>(usize::from(fd_at))? },
        addr: unsafe { ctx.read_at::<u64>(usize::from(addr_at))? },
        reached: 0,
    };
    calls.insert(tid, call, 0)
}

/// The calling thread's call in flight, taken out of `calls`; `None` when
/// it began before the programs were attached.
fn take(calls: &HashMap<u32, Call>) -> Option<Call> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let call = (unsafe { calls.get(tid) }).copied()?;
    let _ = calls.remove(tid);
    Some(call)
}

/// A `connect()` of this thread reached `SYN_SENT`.
pub fn connect_reached_syn_sent() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(call) = CONNECTS.get_ptr_mut(tid) {
        unsafe { (*call).reached = 1 };
    }
}

/// The TCP socket behind a call's fd, and the address the call passed
/// (`struct sockaddr_in`: family, port in network order, address at 4;
/// `struct sockaddr_in6`: family, port, flow info, address at 8); `None`
/// for another protocol or family.
fn tcp_call(call: &Call) -> Result<Option<(u64, u8, u16, Addr)>, i32> {
    let sk = socket_of(call.fd)?;
    if sk == 0 || read_kernel::<u16>(sk, conf!(sock.protocol))? != IPPROTO_TCP {
        return Ok(None);
    }
    let head = unsafe { bpf_probe_read_user(call.addr as *const [u16; 2])? };
    let (family, port) = (head[0] as u8, u16::from_be(head[1]));
    let mut addr = [0u32; 4];
    match family {
        AF_INET => addr[0] = unsafe { bpf_probe_read_user((call.addr + 4) as *const u32)? },
        AF_INET6 => addr = unsafe { bpf_probe_read_user((call.addr + 8) as *const [u32; 4])? },
        _ => return Ok(None),
    }
    Ok(Some((sk, family, port, addr)))
}

/// A record of the calling thread about socket `sk`. Inlined: BPF calls
/// take at most five arguments.
#[inline(always)]
fn emit_call(sk: u64, what: u8, detail: u8, family: u8, ports: (u16, u16), addrs: (Addr, Addr)) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut comm = [0u8; COMM_LEN];
    unsafe { generated::bpf_get_current_comm(comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    emit(RawEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        skaddr: sk,
        prev_ts_ns: 0,
        netns: netns_of(sk),
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        kind: what,
        oldstate: detail,
        newstate: 0,
        family,
        lport: ports.0,
        rport: ports.1,
        flags: flags::OWNER_KNOWN,
        _pad: 0,
        seen: 0,
        laddr: bytes(addrs.0),
        raddr: bytes(addrs.1),
        comm,
        opened_ns: 0,
    });
}

/// At exit from `bind()`: the record, when the call failed with
/// `EADDRINUSE`.
pub fn exit_bind(ctx: &TracePointContext) -> Result<(), i32> {
    let Some(call) = take(&BINDS) else {
        return Ok(());
    };
    if returned(ctx)? != -EADDRINUSE {
        return Ok(());
    }
    let Some((sk, family, lport, laddr)) = tcp_call(&call)? else {
        return Ok(());
    };
    if !passes(filter_family(family, &laddr, &[0; 4]), lport, 0) {
        return Ok(());
    }
    let reuse = read_kernel::<u8>(sk, conf!(syscalls.reuse_byte))?;
    let mut options = 0;
    if (reuse >> conf!(syscalls.reuse_shift)) & 0xf != 0 {
        options |= bind::REUSEADDR;
    }
    if (reuse >> conf!(syscalls.reuseport_shift)) & 1 != 0 {
        options |= bind::REUSEPORT;
    }
    emit_call(
        sk,
        kind::BIND_FAILED,
        options,
        family,
        (lport, 0),
        (laddr, [0; 4]),
    );
    Ok(())
}

/// At exit from `connect()`: the record of a call that failed before its
/// socket reached `SYN_SENT` (no route, a firewall's `EPERM`, ...): no
/// transition shows it. Those that reached it end in the state stream.
pub fn exit_connect(ctx: &TracePointContext) -> Result<(), i32> {
    let Some(call) = take(&CONNECTS) else {
        return Ok(());
    };
    let ret = returned(ctx)?;
    let pending = ret == -EINPROGRESS || ret == -EALREADY || ret == -EISCONN;
    if ret >= 0 || pending || call.reached != 0 || ret < -255 {
        return Ok(());
    }
    let Some((sk, family, rport, raddr)) = tcp_call(&call)? else {
        return Ok(());
    };
    if !passes(filter_family(family, &[0; 4], &raddr), 0, rport) {
        return Ok(());
    }
    emit_call(
        sk,
        kind::CONNECT_ERROR,
        (-ret) as u8,
        family,
        (0, rport),
        ([0; 4], raddr),
    );
    Ok(())
}

/// At exit from `accept()` or `accept4()`: the calling process owns the
/// accepted socket from now on (a pre-forked server's worker, not the
/// process that listened), so that the transitions the kernel reports in
/// softirq from here on carry it. Sockets without an entry (not reported,
/// or accepted before tracing began) are left alone.
pub fn exit_accept(ctx: &TracePointContext) -> Result<(), i32> {
    let fd = returned(ctx)?;
    if fd < 0 {
        return Ok(());
    }
    let sk = socket_of(fd as u64)?;
    let Some(state) = SOCKS.get_ptr_mut(sk) else {
        return Ok(());
    };
    unsafe { (*state).take_current_owner() };
    Ok(())
}

/// A syscall's return value, at its exit tracepoint.
fn returned(ctx: &TracePointContext) -> Result<i64, i32> {
    let at = conf!(syscalls.exit_ret);
    unsafe { ctx.read_at::<i64>(usize::from(at)) }
}

/// The `struct sock` behind the calling task's file descriptor `fd`
/// (`current->files->fdt->fd[fd]->private_data->sk`); the call used `fd`
/// as a socket, so it is one.
fn socket_of(fd: u64) -> Result<u64, i32> {
    let task = unsafe { generated::bpf_get_current_task() };
    let files = read_kernel::<u64>(task, conf!(syscalls.task_files))?;
    let fdt = read_kernel::<u64>(files, conf!(syscalls.files_fdt))?;
    let fds = read_kernel::<u64>(fdt, conf!(syscalls.fdtable_fd))?;
    let file = read_kernel::<u64>(fds + (fd & 0xffff_ffff) * 8, 0)?;
    let socket = read_kernel::<u64>(file, conf!(syscalls.file_private_data))?;
    read_kernel::<u64>(socket, conf!(syscalls.socket_sk))
}
