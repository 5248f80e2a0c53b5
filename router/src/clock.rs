//! The kernel's coarse clocks (its tick: 1-10 ms) for what is timed in seconds: how long a pooled
//! dyno connection has been idle, a dyno's quarantine, an app's last request, the Date header.
//! A precise clock read is a few per cent of the router's work on a request; a coarse one reads
//! a value the kernel keeps, without the time stamp counter.

use nix::time::{ClockId, clock_gettime};

/// Milliseconds on a monotonic clock (since boot, so never 0).
pub(crate) fn monotonic_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).map_or(0, |t| {
        (t.tv_sec() as u64) * 1000 + (t.tv_nsec() as u64) / 1_000_000
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> i64 {
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .map_or(0, |t| t.tv_sec() * 1000 + t.tv_nsec() / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn coarse_clocks_agree_with_the_precise_ones() {
        let precise = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let coarse = Duration::from_millis(unix_ms() as u64);
        assert!(
            precise.abs_diff(coarse) < Duration::from_millis(100),
            "{precise:?} {coarse:?}"
        );
        let before = monotonic_ms();
        std::thread::sleep(Duration::from_millis(50));
        let waited = monotonic_ms() - before;
        assert!((30..1000).contains(&waited), "{waited} ms");
    }
}
