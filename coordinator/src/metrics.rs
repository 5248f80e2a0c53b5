//! Heroku's log-runtime-metrics: with the app's `runtime-metrics` feature on, every running dyno's
//! latest resource sample goes into the app's log each interval (20 s) as a `heroku[web.1]` line:
//!
//! `source=web.1 dyno=heroku.shop.d-... sample#load_avg_1m=0.02 ... sample#memory_quota=512.00MB`
//!
//! Load: agents report CPU time, not run queues, so `load_avg_*` here is the number of cores the
//! dyno kept busy (CPU time over wall time between its last two samples), averaged exponentially
//! over 1, 5 and 15 minutes the way the kernel averages its load. A dyno using one core flat out
//! tends to 1.00; unlike Linux's figure, processes waiting for a CPU or for disk do not count.

use crate::Shared;
use dyno_shared::protocol::DynoStats;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;

/// The feature's name in `labs` and the API.
pub const FEATURE: &str = "runtime-metrics";
/// Heroku's name for it, accepted too.
pub const FEATURE_ALIAS: &str = "log-runtime-metrics";
/// How often each dyno's line is logged (Heroku: about every 20 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);

const MIB: f64 = 1024.0 * 1024.0;

/// A dyno's load averages and the sample they last took in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub avg_1m: f64,
    pub avg_5m: f64,
    pub avg_15m: f64,
    /// Unix microseconds of the last sample folded in; 0 before the first.
    last_at: i64,
}

/// Cores kept busy between two samples; none across a restart (the counter starts again).
fn busy_cores(previous: &DynoStats, latest: &DynoStats) -> Option<f64> {
    let wall = latest.at - previous.at;
    let cpu = latest.cpu_usage_usec.checked_sub(previous.cpu_usage_usec)?;
    (wall > 0).then(|| cpu as f64 / wall as f64)
}

impl Load {
    /// Folds in the rate between the book's last two samples, once per new sample.
    pub fn update(&mut self, previous: Option<&DynoStats>, latest: &DynoStats) {
        if latest.at <= self.last_at {
            return;
        }
        let Some(busy) = previous.and_then(|p| busy_cores(p, latest)) else {
            return;
        };
        if self.last_at == 0 {
            // Start from the first rate rather than from zero, so a new dyno's figure means
            // something at once.
            *self = Load {
                avg_1m: busy,
                avg_5m: busy,
                avg_15m: busy,
                last_at: latest.at,
            };
            return;
        }
        let dt = (latest.at - self.last_at) as f64 / 1e6;
        for (avg, window) in [
            (&mut self.avg_1m, 60.0),
            (&mut self.avg_5m, 300.0),
            (&mut self.avg_15m, 900.0),
        ] {
            let keep = (-dt / window).exp();
            *avg = *avg * keep + busy * (1.0 - keep);
        }
        self.last_at = latest.at;
    }
}

/// One dyno's runtime-metrics line, Heroku's fields and units (MB are MiB).
pub fn line(app: &str, dyno: &str, dyno_id: &str, s: &DynoStats, load: &Load) -> String {
    let mb = |bytes: u64| format!("{:.2}MB", bytes as f64 / MIB);
    format!(
        "source={dyno} dyno=heroku.{app}.{dyno_id} sample#load_avg_1m={:.2} sample#load_avg_5m={:.2} \
         sample#load_avg_15m={:.2} sample#memory_total={} sample#memory_rss={} sample#memory_cache={} \
         sample#memory_swap={} sample#memory_pgpgin=0pages sample#memory_pgpgout=0pages \
         sample#memory_quota={}",
        load.avg_1m,
        load.avg_5m,
        load.avg_15m,
        mb(s.memory_rss_bytes + s.memory_cache_bytes + s.memory_swap_bytes),
        mb(s.memory_rss_bytes),
        mb(s.memory_cache_bytes),
        mb(s.memory_swap_bytes),
        mb(s.memory_quota_bytes),
    )
}

/// Logs the lines every `interval` until `stop`.
pub async fn run(inner: Shared, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut loads: HashMap<String, Load> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the first lines come one interval after start.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let i = inner.clone();
        let dynos = match tokio::task::spawn_blocking(move || i.metered_dynos()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "runtime metrics: failed to read dynos");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "runtime metrics pass panicked");
                continue;
            }
        };
        let mut seen = HashSet::new();
        for d in dynos {
            let Some((previous, latest)) = inner.stats.samples(&d.id) else {
                continue;
            };
            let load = loads.entry(d.id.clone()).or_default();
            load.update(previous.as_ref(), &latest);
            let name = d.name();
            inner.system_log(&d.app, &name, line(&d.app, &name, &d.id, &latest, load));
            seen.insert(d.id);
        }
        loads.retain(|id, _| seen.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_secs: i64, cpu_secs: f64) -> DynoStats {
        DynoStats {
            dyno_id: "d-1".into(),
            at: at_secs * 1_000_000,
            memory_rss_bytes: 22_585_344,
            memory_cache_bytes: 1024 * 1024,
            memory_swap_bytes: 0,
            memory_quota_bytes: 512 * 1024 * 1024,
            cpu_usage_usec: (cpu_secs * 1e6) as u64,
            pids: 2,
        }
    }

    #[test]
    fn formats_herokus_fields() {
        let load = Load {
            avg_1m: 0.5,
            avg_5m: 0.25,
            avg_15m: 0.004,
            last_at: 1,
        };
        assert_eq!(
            line("shop", "web.1", "d-1", &sample(10, 1.0), &load),
            "source=web.1 dyno=heroku.shop.d-1 sample#load_avg_1m=0.50 sample#load_avg_5m=0.25 \
             sample#load_avg_15m=0.00 sample#memory_total=22.54MB sample#memory_rss=21.54MB \
             sample#memory_cache=1.00MB sample#memory_swap=0.00MB sample#memory_pgpgin=0pages \
             sample#memory_pgpgout=0pages sample#memory_quota=512.00MB"
        );
    }

    #[test]
    fn load_follows_busy_cores() {
        let mut load = Load::default();
        // One sample: no rate yet.
        load.update(None, &sample(0, 0.0));
        assert_eq!(load.avg_1m, 0.0);
        // A full core for 5 s starts every average at 1.
        load.update(Some(&sample(0, 0.0)), &sample(5, 5.0));
        assert_eq!((load.avg_1m, load.avg_15m), (1.0, 1.0));
        // The same sample again changes nothing.
        let before = load;
        load.update(Some(&sample(0, 0.0)), &sample(5, 5.0));
        assert_eq!(load, before);
        // Idle for a minute: the 1 minute average falls to 1/e, the longer ones less.
        load.update(Some(&sample(5, 5.0)), &sample(65, 5.0));
        assert!((load.avg_1m - (-1.0f64).exp()).abs() < 1e-9, "{load:?}");
        assert!(load.avg_5m > load.avg_1m && load.avg_15m > load.avg_5m);
        // A restarted dyno's counter goes back: no rate across it.
        let before = load;
        load.update(Some(&sample(65, 5.0)), &sample(70, 0.1));
        assert_eq!(load, before);
    }
}
