//! The kernel side as userspace sees it: loading and attaching the eBPF
//! programs with the running kernel's offsets, the privileges that takes,
//! the counters of what was lost, and decoding the ring buffer's records.

pub mod btf;
pub mod counters;
pub mod decode;
pub mod guard;
pub mod loader;
pub mod privileges;
pub mod tracefs;
