//! The kernel's coarse clocks (its tick: 1-10 ms) for what is timed in seconds: how long a pooled
//! dyno connection has been idle, a dyno's quarantine, an app's last request, the Date header.
//! A precise clock read is a few per cent of the router's work on a request; a coarse one reads
//! a value the kernel keeps, without the time stamp counter.

use nix::time::{ClockId, clock_gettime};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a wall-clock reading is counted on from before it is read again: steps of the
/// wall clock (NTP, an operator) show within this.
const REANCHOR: Duration = Duration::from_secs(1);

thread_local! {
    /// A wall-clock reading (Unix microseconds) and the monotonic instant it was made at.
    static ANCHOR: Cell<Option<(Instant, i64)>> = const { Cell::new(None) };
}

/// Unix microseconds at `at`, a monotonic instant just read: counted on from this thread's
/// last wall-clock reading when that is under a second older, which spares a request the
/// second precise clock read.
pub(crate) fn wall_micros(at: Instant) -> i64 {
    ANCHOR.with(|anchor| {
        if let Some((base, micros)) = anchor.get()
            && let Some(since) = at.checked_duration_since(base)
            && since < REANCHOR
        {
            // Under a second: the microseconds fit.
            return micros + since.as_micros() as i64;
        }
        let micros = dyno_shared::time::now_micros();
        anchor.set(Some((at, micros)));
        micros
    })
}

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

    #[test]
    fn wall_time_is_counted_on_from_a_reading_under_a_second_old() {
        let wall = |at| Duration::from_micros(wall_micros(at) as u64);
        let start = Instant::now();
        let first = wall(start);
        let precise = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(precise.abs_diff(first) < Duration::from_millis(100));
        // Within the second: exactly the monotonic difference, not a new reading.
        let later = start + Duration::from_millis(400);
        assert_eq!(wall(later) - first, Duration::from_millis(400));
        assert_eq!(wall(start), first);
        // An instant before the anchor, or a second past it, reads the wall clock again.
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        let reread = wall(now + REANCHOR);
        let precise = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(
            precise.abs_diff(reread) < Duration::from_millis(100),
            "{reread:?}"
        );
        assert_eq!(wall(now + REANCHOR), reread);
    }
}
