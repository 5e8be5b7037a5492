//! The clocks: the kernel's CLOCK_MONOTONIC (the clock of
//! `bpf_ktime_get_ns()`, which stamps every record) and its mapping to
//! wall-clock time.

use std::time::{Duration, SystemTime};

/// Converts kernel CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero.
    epoch: SystemTime,
}

impl Clock {
    /// Samples both clocks now.
    pub fn system() -> Clock {
        let mono = monotonic_ns();
        Clock {
            epoch: SystemTime::now() - Duration::from_nanos(mono),
        }
    }

    /// A clock whose monotonic zero is `epoch` (for tests and replays).
    pub fn at(epoch: SystemTime) -> Clock {
        Clock { epoch }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        self.epoch + Duration::from_nanos(mono_ns)
    }
}

/// Current CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_maps_monotonic_to_wall() {
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = Clock::at(epoch);
        assert_eq!(clock.wall(1_500_000), epoch + Duration::from_micros(1500));
    }
}
