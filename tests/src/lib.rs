//! Helpers for tcpstate's integration tests: run the real binary, drive real
//! TCP on loopback and in network namespaces, and read what it printed.
//!
//! The kernel is the fixture: these tests need root, and fail (never skip)
//! when they cannot run.

pub mod guard;
pub mod http;
pub mod kernel;
pub mod netns;
pub mod prometheus;
pub mod storm;
pub mod tcp;
pub mod tracer;
pub mod workload;

/// How many times slower than a real host the machine running the tests
/// is: 1 unless `TCPSTATE_TEST_SLOWDOWN` says otherwise, as the kernel
/// matrix does for its emulated guests. The bounds of the responsiveness
/// tests (a signal ends a run within a second, ...) are multiplied by it.
pub fn slowdown() -> u32 {
    match std::env::var("TCPSTATE_TEST_SLOWDOWN") {
        Ok(v) => {
            v.parse().ok().filter(|&n| n >= 1).unwrap_or_else(|| {
                panic!("TCPSTATE_TEST_SLOWDOWN={v:?} is not a whole number >= 1")
            })
        }
        Err(_) => 1,
    }
}

/// Fails the test with a clear reason unless running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tcpstate's integration tests load eBPF programs: run them as root (`cargo xtask test`)"
    );
}
