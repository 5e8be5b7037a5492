//! tcpstate's eBPF programs: every TCP state transition and reset, one fixed
//! record each, into a ring buffer.
//!
//! Kept deliberately small: read the tracepoint, filter by family and port,
//! attribute the socket's owner, follow its life (`tcpstate_ebpf::life`),
//! write the record; in closes-only mode, only the records that end a
//! handshake, a listener or a connection. Everything else (naming,
//! classification from the life, TIME_WAIT tracking) happens in userspace.
//!
//! - [`programs`]: the entry points, maps and globals;
//! - `programs/record.rs`: reading a transition or reset and writing its
//!   record;
//! - `programs/rescue.rs`: finding this CPU's `bpf_prog_active`, so that a
//!   BTF twin of each classic program records what the kernel skips for it
//!   (the one part that depends on kernel internals beyond the tracepoints).
//!
//! Field offsets are not hard-coded: the loader reads them from the running
//! kernel (tracepoint format files, BTF) and writes them into the `CONFIG`
//! global.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

/// The programs only exist for the BPF target; a host build has nothing to run.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
