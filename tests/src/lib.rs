//! Helpers for tcpstate's integration tests: run the real binary, drive real
//! TCP on loopback and in network namespaces, and read what it printed.
//!
//! The kernel is the fixture: these tests need root, and fail (never skip)
//! when they cannot run.

pub mod guard;
pub mod kernel;
pub mod netns;
pub mod storm;
pub mod tcp;
pub mod tracer;

/// Fails the test with a clear reason unless running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tcpstate's integration tests load eBPF programs: run them as root (`cargo xtask test`)"
    );
}
