//! The latest resource samples agents send for their running dynos, kept in memory only: they
//! are worth nothing after a restart, and a write every few seconds per dyno is not worth SQLite.

use dyno_shared::api::DynoStatsJson;
use dyno_shared::protocol::DynoStats;
use std::collections::HashMap;
use std::sync::Mutex;

const MIB: f64 = 1024.0 * 1024.0;

/// The last two samples of one dyno: a CPU rate needs both.
#[derive(Debug, Clone)]
struct Samples {
    previous: Option<DynoStats>,
    latest: DynoStats,
}

#[derive(Debug, Default)]
pub struct StatsBook {
    by_dyno: Mutex<HashMap<String, Samples>>,
}

impl StatsBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Samples>> {
        self.by_dyno.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, stats: Vec<DynoStats>) {
        let mut book = self.lock();
        for s in stats {
            match book.get_mut(&s.dyno_id) {
                // A repeated or reordered sample must not make a zero or negative interval.
                Some(entry) if s.at <= entry.latest.at => {}
                Some(entry) => entry.previous = Some(std::mem::replace(&mut entry.latest, s)),
                None => {
                    book.insert(
                        s.dyno_id.clone(),
                        Samples {
                            previous: None,
                            latest: s,
                        },
                    );
                }
            }
        }
    }

    pub fn forget(&self, dyno_id: &str) {
        self.lock().remove(dyno_id);
    }

    /// The sample before the latest (if any) and the latest.
    pub fn samples(&self, dyno_id: &str) -> Option<(Option<DynoStats>, DynoStats)> {
        let book = self.lock();
        let s = book.get(dyno_id)?;
        Some((s.previous.clone(), s.latest.clone()))
    }

    pub fn json(&self, dyno_id: &str) -> Option<DynoStatsJson> {
        let book = self.lock();
        let s = book.get(dyno_id)?;
        Some(stats_json(s.previous.as_ref(), &s.latest))
    }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// The API's view of a sample; `cpu_percent` is the CPU time used between `previous` and
/// `latest` over the wall time between them (100 per busy core).
pub fn stats_json(previous: Option<&DynoStats>, latest: &DynoStats) -> DynoStatsJson {
    let mb = |bytes: u64| round(bytes as f64 / MIB, 2);
    let used = latest.memory_rss_bytes + latest.memory_swap_bytes;
    let memory_percent = if latest.memory_quota_bytes == 0 {
        0.0
    } else {
        round(used as f64 * 100.0 / latest.memory_quota_bytes as f64, 1)
    };
    let cpu_percent = previous.and_then(|p| {
        let wall = latest.at - p.at;
        // A restarted dyno starts its counter again: no rate across that.
        let cpu = latest.cpu_usage_usec.checked_sub(p.cpu_usage_usec)?;
        (wall > 0).then(|| round(cpu as f64 * 100.0 / wall as f64, 1))
    });
    DynoStatsJson {
        memory_rss_mb: mb(latest.memory_rss_bytes),
        memory_cache_mb: mb(latest.memory_cache_bytes),
        memory_swap_mb: mb(latest.memory_swap_bytes),
        memory_quota_mb: mb(latest.memory_quota_bytes),
        memory_percent,
        cpu_percent,
        pids: latest.pids,
        at: dyno_shared::time::iso_secs(latest.at.div_euclid(1_000_000)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, cpu: u64) -> DynoStats {
        DynoStats {
            dyno_id: "d1".into(),
            at,
            memory_rss_bytes: 300 * 1024 * 1024,
            memory_cache_bytes: 1024 * 1024 / 2,
            memory_swap_bytes: 7 * 1024 * 1024,
            memory_quota_bytes: 512 * 1024 * 1024,
            cpu_usage_usec: cpu,
            pids: 3,
        }
    }

    #[test]
    fn converts_to_mb_percent_and_a_cpu_rate() {
        let j = stats_json(None, &sample(1_000_000, 500));
        assert_eq!(j.memory_rss_mb, 300.0);
        assert_eq!(j.memory_cache_mb, 0.5);
        assert_eq!(j.memory_swap_mb, 7.0);
        assert_eq!(j.memory_quota_mb, 512.0);
        assert_eq!(j.memory_percent, 60.0, "(300 + 7) / 512");
        assert_eq!(j.cpu_percent, None, "one sample gives no rate");
        assert_eq!(j.pids, 3);
        assert_eq!(j.at, "1970-01-01T00:00:01Z");
        // 2.5 s of CPU in 5 s of wall time: half a core.
        let j = stats_json(Some(&sample(1_000_000, 500)), &sample(6_000_000, 2_500_500));
        assert_eq!(j.cpu_percent, Some(50.0));
        let restarted = stats_json(Some(&sample(1, 900)), &sample(2, 10));
        assert_eq!(restarted.cpu_percent, None);
    }

    #[test]
    fn the_book_keeps_two_samples_and_forgets() {
        let book = StatsBook::default();
        book.record(vec![sample(1_000_000, 0)]);
        assert_eq!(book.json("d1").unwrap().cpu_percent, None);
        book.record(vec![sample(2_000_000, 1_000_000)]);
        assert_eq!(book.json("d1").unwrap().cpu_percent, Some(100.0));
        // A stale sample is ignored rather than making a negative interval.
        book.record(vec![sample(1_500_000, 0)]);
        assert_eq!(book.json("d1").unwrap().cpu_percent, Some(100.0));
        book.forget("d1");
        assert!(book.json("d1").is_none());
    }
}
