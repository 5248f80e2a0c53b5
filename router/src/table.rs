//! The route table: which dynos serve each app, and how busy each one is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// After a refused or timed-out connect a backend is tried last for this long, so requests stop
/// queueing behind a dyno that died before the coordinator noticed.
const QUARANTINE: Duration = Duration::from_secs(5);

/// One web dyno of an app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// `web.1`
    pub dyno: String,
    pub addr: SocketAddr,
}

/// A backend plus its live state; shared by the table and every request routed to it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) dyno: String,
    pub(crate) addr: SocketAddr,
    in_flight: AtomicUsize,
    /// Milliseconds since the table's epoch; 0 when never quarantined.
    quarantined_until: AtomicU64,
}

impl Slot {
    fn new(backend: Backend) -> Self {
        Slot {
            dyno: backend.dyno,
            addr: backend.addr,
            in_flight: AtomicUsize::new(0),
            quarantined_until: AtomicU64::new(0),
        }
    }
}

/// Counts one request against a backend until dropped: when the response body ends, or when
/// the attempt fails.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Slot>);

impl InFlight {
    pub(crate) fn start(slot: Arc<Slot>) -> Self {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(slot)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An immutable snapshot of one app's routes; replaced whole on every change.
#[derive(Debug)]
pub(crate) struct AppRoutes {
    pub(crate) backends: Vec<Arc<Slot>>,
    pub(crate) maintenance: bool,
    /// Where the next scan starts, so ties between equally idle backends rotate.
    next: AtomicUsize,
}

#[derive(Debug)]
struct Inner {
    apps: RwLock<HashMap<String, Arc<AppRoutes>>>,
    epoch: Instant,
}

/// App name -> web backends. Cheap to clone; all clones share one table.
#[derive(Debug, Clone)]
pub struct RouteTable {
    inner: Arc<Inner>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    pub fn new() -> Self {
        RouteTable {
            inner: Arc::new(Inner {
                apps: RwLock::new(HashMap::new()),
                epoch: Instant::now(),
            }),
        }
    }

    /// Replaces the app's backends; keeps the in-flight counters of backends that stay (same
    /// dyno and address). An app present with no backends answers H14; an absent app answers 404.
    pub fn set_backends(&self, app: &str, backends: Vec<Backend>) {
        let mut apps = self
            .inner
            .apps
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let old = apps.get(app);
        let slots = backends
            .into_iter()
            .map(|b| {
                old.and_then(|o| {
                    o.backends
                        .iter()
                        .find(|s| s.dyno == b.dyno && s.addr == b.addr)
                        .cloned()
                })
                .unwrap_or_else(|| Arc::new(Slot::new(b)))
            })
            .collect();
        let routes = AppRoutes {
            backends: slots,
            maintenance: old.is_some_and(|o| o.maintenance),
            next: AtomicUsize::new(old.map_or(0, |o| o.next.load(Ordering::Relaxed))),
        };
        apps.insert(app.to_string(), Arc::new(routes));
    }

    pub fn remove_app(&self, app: &str) {
        self.inner
            .apps
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(app);
    }

    /// Turns maintenance mode (H80) on or off. Turning it on for an absent app adds the app
    /// with no backends, so it answers H80 rather than 404.
    pub fn set_maintenance(&self, app: &str, on: bool) {
        let mut apps = self
            .inner
            .apps
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let routes = match apps.get(app) {
            Some(old) => AppRoutes {
                backends: old.backends.clone(),
                maintenance: on,
                next: AtomicUsize::new(old.next.load(Ordering::Relaxed)),
            },
            None if on => AppRoutes {
                backends: Vec::new(),
                maintenance: true,
                next: AtomicUsize::new(0),
            },
            None => return,
        };
        apps.insert(app.to_string(), Arc::new(routes));
    }

    pub fn backends(&self, app: &str) -> Vec<Backend> {
        self.lookup(app)
            .map(|routes| {
                routes
                    .backends
                    .iter()
                    .map(|s| Backend {
                        dyno: s.dyno.clone(),
                        addr: s.addr,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Requests currently proxied to the app's dyno (connecting, waiting or streaming).
    pub fn in_flight(&self, app: &str, dyno: &str) -> Option<usize> {
        let routes = self.lookup(app)?;
        let slot = routes.backends.iter().find(|s| s.dyno == dyno)?;
        Some(slot.in_flight.load(Ordering::Acquire))
    }

    pub(crate) fn lookup(&self, app: &str) -> Option<Arc<AppRoutes>> {
        self.inner
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(app)
            .cloned()
    }

    /// The untried backend with the fewest in-flight requests; quarantined backends only when
    /// nothing else is left.
    pub(crate) fn pick(&self, routes: &AppRoutes, tried: &[SocketAddr]) -> Option<Arc<Slot>> {
        let n = routes.backends.len();
        if n == 0 {
            return None;
        }
        let start = routes.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let mut best: Option<((bool, usize), &Arc<Slot>)> = None;
        for i in 0..n {
            let slot = &routes.backends[start.wrapping_add(i) % n];
            if tried.contains(&slot.addr) {
                continue;
            }
            let quarantined = slot.quarantined_until.load(Ordering::Relaxed) > now;
            let key = (quarantined, slot.in_flight.load(Ordering::Acquire));
            if best.is_none_or(|(best_key, _)| key < best_key) {
                best = Some((key, slot));
            }
        }
        best.map(|(_, slot)| Arc::clone(slot))
    }

    pub(crate) fn quarantine(&self, slot: &Slot) {
        let until = self.now_ms() + QUARANTINE.as_millis() as u64;
        slot.quarantined_until.store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        // +1 so a fresh slot (0) is never "quarantined until" the first millisecond.
        self.inner.epoch.elapsed().as_millis() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(dyno: &str, port: u16) -> Backend {
        Backend {
            dyno: dyno.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn idle_backends_take_turns_and_busy_ones_wait() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1), backend("web.2", 2)]);
        let routes = table.lookup("shop").unwrap();
        let first = table.pick(&routes, &[]).unwrap();
        let second = table.pick(&routes, &[]).unwrap();
        assert_ne!(first.dyno, second.dyno);

        let _busy = InFlight::start(Arc::clone(&routes.backends[0]));
        for _ in 0..4 {
            assert_eq!(table.pick(&routes, &[]).unwrap().dyno, "web.2");
        }
        let tried = [routes.backends[1].addr];
        assert_eq!(table.pick(&routes, &tried).unwrap().dyno, "web.1");
    }

    #[test]
    fn quarantined_backends_come_last() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1), backend("web.2", 2)]);
        let routes = table.lookup("shop").unwrap();
        table.quarantine(&routes.backends[1]);
        for _ in 0..4 {
            assert_eq!(table.pick(&routes, &[]).unwrap().dyno, "web.1");
        }
        let tried = [routes.backends[0].addr];
        assert_eq!(table.pick(&routes, &tried).unwrap().dyno, "web.2");
    }

    #[test]
    fn set_backends_keeps_counters_and_maintenance() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1)]);
        table.set_maintenance("shop", true);
        let guard = InFlight::start(Arc::clone(&table.lookup("shop").unwrap().backends[0]));
        table.set_backends("shop", vec![backend("web.1", 1), backend("web.2", 2)]);
        assert_eq!(table.in_flight("shop", "web.1"), Some(1));
        assert_eq!(table.in_flight("shop", "web.2"), Some(0));
        assert!(table.lookup("shop").unwrap().maintenance);
        drop(guard);
        assert_eq!(table.in_flight("shop", "web.1"), Some(0));
        assert_eq!(table.backends("shop").len(), 2);

        table.remove_app("shop");
        assert!(table.lookup("shop").is_none());
        table.set_maintenance("shop", false);
        assert!(table.lookup("shop").is_none());
    }
}
