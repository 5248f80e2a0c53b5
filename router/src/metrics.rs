//! Router metrics per app and dyno, rendered in the Prometheus text format.
//!
//! - `dyno_router_requests_total{app,dyno,status}`: answered requests; `dyno=""` when the router
//!   answered without reaching a dyno (H14, H80, H11, ...).
//! - `dyno_router_errors_total{app,code}`: router errors by Heroku code.
//! - `dyno_router_queue_seconds{app}`: histogram, from receipt until a dyno was chosen (time
//!   spent waiting for room in the app's queue).
//! - `dyno_router_service_seconds{app,dyno}`: histogram, from sending the request to the dyno
//!   until the response ended.
//! - `dyno_router_in_flight{app,dyno}`, `dyno_router_queue_depth{app}`, `dyno_router_backends{app}`:
//!   gauges.
//!
//! Counting is lock-free (atomics); only creating a dyno's entry or an error code takes a lock.

use crate::table::App;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Statuses 100..=599 get a counter each.
const STATUSES: usize = 500;

#[derive(Debug)]
pub(crate) struct Histogram {
    /// Non-cumulative counts per bucket; the last one is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

#[derive(Debug)]
pub(crate) struct StatusCounts([AtomicU64; STATUSES]);

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl StatusCounts {
    pub(crate) fn count(&self, status: u16) {
        if let Some(c) = (status as usize)
            .checked_sub(100)
            .and_then(|i| self.0.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .map(|(i, c)| (i + 100, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
    }
}

/// One dyno's figures (by name: a restarted `web.1` keeps counting).
#[derive(Debug, Default)]
pub(crate) struct DynoMetrics {
    pub(crate) statuses: StatusCounts,
    pub(crate) service: Histogram,
}

#[derive(Debug, Default)]
pub(crate) struct AppMetrics {
    dynos: Mutex<BTreeMap<String, Arc<DynoMetrics>>>,
    /// Requests the router answered itself.
    pub(crate) router_statuses: StatusCounts,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) queue: Histogram,
}

impl AppMetrics {
    pub(crate) fn dyno(&self, dyno: &str) -> Arc<DynoMetrics> {
        let mut dynos = self.dynos.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(dynos.entry(dyno.to_string()).or_default())
    }

    pub(crate) fn error(&self, code: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(code)
            .or_default() += 1;
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) fn render(apps: &[Arc<App>]) -> String {
    let mut out = String::with_capacity(4096);
    let mut requests = String::new();
    let mut errors = String::new();
    let mut queue = String::new();
    let mut service = String::new();
    let mut in_flight = String::new();
    let mut gauges = String::new();
    for app in apps {
        let a = escape(&app.name);
        let metrics = &app.metrics;
        for (status, n) in metrics.router_statuses.nonzero() {
            let _ = writeln!(
                requests,
                "dyno_router_requests_total{{app=\"{a}\",dyno=\"\",status=\"{status}\"}} {n}"
            );
        }
        let dynos: Vec<(String, Arc<DynoMetrics>)> = metrics
            .dynos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        for (dyno, m) in &dynos {
            let d = escape(dyno);
            for (status, n) in m.statuses.nonzero() {
                let _ = writeln!(
                    requests,
                    "dyno_router_requests_total{{app=\"{a}\",dyno=\"{d}\",status=\"{status}\"}} {n}"
                );
            }
            m.service.render(
                &mut service,
                "dyno_router_service_seconds",
                &format!("app=\"{a}\",dyno=\"{d}\""),
            );
        }
        for (code, n) in metrics
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                errors,
                "dyno_router_errors_total{{app=\"{a}\",code=\"{code}\"}} {n}"
            );
        }
        metrics.queue.render(
            &mut queue,
            "dyno_router_queue_seconds",
            &format!("app=\"{a}\""),
        );
        let slots = app.slots();
        for slot in &slots {
            let _ = writeln!(
                in_flight,
                "dyno_router_in_flight{{app=\"{a}\",dyno=\"{}\"}} {}",
                escape(&slot.dyno),
                slot.in_flight()
            );
        }
        let _ = writeln!(
            gauges,
            "dyno_router_queue_depth{{app=\"{a}\"}} {}",
            app.queue_depth()
        );
        let _ = writeln!(
            gauges,
            "dyno_router_backends{{app=\"{a}\"}} {}",
            slots.len()
        );
    }
    let sections = [
        (
            "dyno_router_requests_total",
            "counter",
            "Requests answered, by app, dyno and status.",
            requests,
        ),
        (
            "dyno_router_errors_total",
            "counter",
            "Router errors, by app and Heroku code.",
            errors,
        ),
        (
            "dyno_router_queue_seconds",
            "histogram",
            "Time from receipt until a dyno was chosen.",
            queue,
        ),
        (
            "dyno_router_service_seconds",
            "histogram",
            "Time from sending the request to the dyno until the response ended.",
            service,
        ),
        (
            "dyno_router_in_flight",
            "gauge",
            "Requests at each dyno.",
            in_flight,
        ),
    ];
    for (name, kind, help, body) in sections {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        out.push_str(&body);
    }
    let _ = writeln!(
        out,
        "# HELP dyno_router_queue_depth Requests waiting at the router.\n\
         # TYPE dyno_router_queue_depth gauge\n\
         # HELP dyno_router_backends Up web dynos the router sends to.\n\
         # TYPE dyno_router_backends gauge"
    );
    out.push_str(&gauges);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(40));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "app=\"a\"");
        assert!(
            out.contains("x_bucket{app=\"a\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{app=\"a\",le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{app=\"a\",le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{app=\"a\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{app=\"a\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{app=\"a\"} 60.0405\n"), "{out}");
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
