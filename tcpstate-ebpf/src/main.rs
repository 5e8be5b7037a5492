//! tcpstate's eBPF programs: every TCP state transition and reset, one fixed
//! record each, into a ring buffer.
//!
//! Kept deliberately small: take each transition from a BTF tracepoint
//! (the socket and both states, no record to build or copy), filter by
//! family and port, attribute the socket's owner, follow its life
//! (`tcpstate_ebpf::life`), write the record; in closes-only mode, only the
//! records that end a handshake, a listener or a connection. Everything
//! else (naming, classification from the life, TIME_WAIT tracking) happens
//! in userspace.
//!
//! - [`programs`]: the entry points, maps and globals;
//! - `programs/record.rs`: reading a transition or reset and writing its
//!   record;
//! - `programs/cpu.rs`: this CPU's kernel variables and claims, so that
//!   what the kernel skips for a nested run is recorded by another program
//!   (the one part that depends on kernel internals beyond the
//!   tracepoints);
//! - `programs/syscalls.rs`: failed `bind()` and `connect()` calls, and the
//!   process that accepts each connection.
//!
//! Field offsets are not hard-coded: the loader reads them from the running
//! kernel (BTF, tracepoint format files) and writes them into the `CONFIG`
//! global.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

/// The programs only exist for the BPF target; a host build has nothing to run.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
