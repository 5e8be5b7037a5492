//! Times as the output writes them: kernel monotonic nanoseconds to RFC 3339
//! UTC with microseconds, to time of day, and to milliseconds.

use std::{fmt, time::SystemTime};

use serde::{Serialize, Serializer};

use super::encode::{self, Value};
use crate::host::clock::Clock;

/// Nanoseconds to fractional milliseconds, rounded to microseconds.
pub fn ms(ns: u64) -> f64 {
    (ns / 1000) as f64 / 1000.0
}

/// A time as RFC 3339 UTC with microseconds: `2026-11-24T06:44:52.123456Z`.
#[derive(Clone, Copy)]
pub struct Ts([u8; 27]);

impl Ts {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Value for Ts {
    fn write_json(&self, out: &mut Vec<u8>) {
        encode::plain_str(&self.0, out);
    }
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Formats times, doing the calendar work once per second: records arrive
/// in bursts within the same second.
#[derive(Clone, Copy)]
pub struct Stamper {
    /// Wall-clock nanoseconds since the Unix epoch at monotonic zero
    /// (negative before it). Plain integers: `SystemTime`'s checked
    /// arithmetic showed in profiles.
    epoch_ns: i128,
    second: u64,
    /// `2026-11-24T06:44:52` for `second`.
    prefix: [u8; 19],
}

impl Stamper {
    pub fn new(clock: Clock) -> Stamper {
        let epoch_ns = match clock.wall(0).duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        };
        Stamper {
            epoch_ns,
            second: u64::MAX,
            prefix: [0; 19],
        }
    }

    /// The wall-clock time of kernel monotonic time `mono_ns`.
    pub fn stamp(&mut self, mono_ns: u64) -> Ts {
        // Times before the epoch print as the epoch; u64 nanoseconds last
        // until 2554.
        let since_epoch =
            (self.epoch_ns + i128::from(mono_ns)).clamp(0, i128::from(u64::MAX)) as u64;
        let second = since_epoch / 1_000_000_000;
        if second != self.second {
            let text = humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(second),
            )
            .to_string();
            self.prefix.copy_from_slice(&text.as_bytes()[..19]);
            self.second = second;
        }
        let mut out = [0u8; 27];
        out[..19].copy_from_slice(&self.prefix);
        out[19] = b'.';
        let mut micros = (since_epoch % 1_000_000_000 / 1000) as u32;
        for i in (20..26).rev() {
            out[i] = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out[26] = b'Z';
        Ts(out)
    }
}

/// Time of day, `HH:MM:SS.micros`, UTC.
pub fn time_of_day(ts: Ts) -> String {
    // 2026-11-24T06:12:01.123456Z -> 06:12:01.123456
    ts.as_str()[11..26].to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_before_the_epoch_print_as_the_epoch() {
        let epoch = SystemTime::UNIX_EPOCH - Duration::from_millis(1500);
        let mut s = Stamper::new(Clock::at(epoch));
        assert_eq!(
            s.stamp(1_000_000_000).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            s.stamp(2_000_250_999).to_string(),
            "1970-01-01T00:00:00.500250Z"
        );
    }
}
