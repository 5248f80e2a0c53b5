//! The route table: which dynos serve each app, how busy each one is, and the queue of requests
//! waiting for a dyno with room.
//!
//! Every app has one mutex-guarded state. Taking a backend for a request and giving it back both
//! happen under that lock, so a freed backend goes to the oldest waiting request before any
//! newcomer can take it: requests that wait are served in arrival order.

use crate::clock;
use crate::metrics::{AppMetrics, DynoMetrics};
use smallvec::SmallVec;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

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

/// How the router chooses among an app's dynos that have room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Two dynos at random, the one with fewer outstanding requests. Close to least-outstanding
    /// for one router, and several routers sharing dynos do not all pile onto the same idle one.
    #[default]
    PowerOfTwo,
    /// The dyno with the fewest outstanding requests (ties rotate).
    LeastOutstanding,
    /// Uniformly at random, as Heroku's router does; for comparisons.
    Random,
}

/// What the router answers for an app with no `up` web dyno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoBackends {
    /// No web dyno is meant to run (scaled to 0, or none yet): H14 at once.
    #[default]
    NotRunning,
    /// Web dynos are starting: requests wait at the router for one to come up, at most the boot
    /// timeout (75 s), then H20.
    Booting,
    /// Every web dyno crashed: H10 at once.
    Crashed,
    /// Eco web dynos sleep: a request wakes the app (the waker set with
    /// [`RouteTable::set_waker`]) and waits like one for a booting dyno.
    Asleep,
}

/// Why a request gets no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Maintenance,
    NotRunning,
    Crashed,
    /// The app's queue is full (H11).
    Backlog,
    /// Every backend was tried already.
    Exhausted,
}

/// A backend plus its live state; shared by the table and every request routed to it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) dyno: String,
    pub(crate) addr: SocketAddr,
    in_flight: AtomicUsize,
    /// Milliseconds since the process epoch; 0 when never quarantined.
    quarantined_until: AtomicU64,
    pub(crate) metrics: Arc<DynoMetrics>,
}

impl Slot {
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn quarantined(&self, now: u64) -> bool {
        self.quarantined_until.load(Ordering::Relaxed) > now
    }
}

/// One app: its backends, settings and queue. Lives as long as the app is in the table; a
/// request keeps it alive while it runs.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) name: String,
    state: Mutex<AppState>,
    pub(crate) metrics: Arc<AppMetrics>,
    /// Unix ms of the latest request for the app, 0 before the first (eco dynos sleep when
    /// it is old enough).
    last_request: std::sync::atomic::AtomicI64,
}

#[derive(Debug)]
struct AppState {
    backends: Vec<Arc<Slot>>,
    maintenance: bool,
    no_backends: NoBackends,
    /// Most requests one dyno gets at a time; `None` is unlimited.
    limit: Option<u32>,
    queue: VecDeque<Waiter>,
    domains: Vec<String>,
    rng: u64,
    /// Where the least-outstanding scan starts, so ties rotate.
    next: usize,
    /// Removed from the table: waiters are turned away.
    removed: bool,
}

#[derive(Debug)]
struct Waiter {
    tried: Vec<SocketAddr>,
    grant: oneshot::Sender<Result<InFlight, Refusal>>,
}

/// Counts one request against a backend until dropped (when the response body ends, or when
/// the attempt fails); dropping it hands the room to the oldest waiting request.
#[derive(Debug)]
pub(crate) struct InFlight {
    app: Arc<App>,
    slot: Arc<Slot>,
}

impl InFlight {
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    pub(crate) fn app(&self) -> &Arc<App> {
        &self.app
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let undelivered = {
            let mut state = self.app.lock();
            self.slot.in_flight.fetch_sub(1, Ordering::AcqRel);
            state.dispatch(&self.app)
        };
        // Dropped outside the lock: each of them takes it again.
        drop(undelivered);
    }
}

/// What `RouteTable::acquire` decided.
#[derive(Debug)]
pub(crate) enum Acquire {
    Ready(InFlight),
    /// Queued; `booting` when it waits for a first dyno to come up rather than for room.
    Wait {
        grant: oneshot::Receiver<Result<InFlight, Refusal>>,
        booting: bool,
    },
    Refused(Refusal),
}

enum Pick {
    Slot(usize),
    /// Every untried healthy backend is at its limit.
    Busy,
    /// Nothing left to try.
    Exhausted,
}

impl App {
    fn new(name: &str) -> App {
        static SEEDS: OnceLock<RandomState> = OnceLock::new();
        let seed = SEEDS.get_or_init(RandomState::new).hash_one(name) | 1;
        App {
            name: name.to_string(),
            state: Mutex::new(AppState {
                backends: Vec::new(),
                maintenance: false,
                no_backends: NoBackends::default(),
                limit: None,
                queue: VecDeque::new(),
                domains: Vec::new(),
                rng: seed,
                next: 0,
                removed: false,
            }),
            metrics: Arc::new(AppMetrics::default()),
            last_request: std::sync::atomic::AtomicI64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, AppState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn queue_depth(&self) -> usize {
        self.lock().queue.len()
    }

    pub(crate) fn slots(&self) -> Vec<Arc<Slot>> {
        self.lock().backends.clone()
    }
}

impl AppState {
    fn random(&mut self) -> u64 {
        // xorshift64*: plenty for picking dynos.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (((self.random() >> 32) * n as u64) >> 32) as usize
    }

    /// An untried backend with room: healthy ones first; quarantined ones only when every
    /// untried backend is quarantined.
    fn pick(&mut self, tried: &[SocketAddr], balance: Balance, now: u64) -> Pick {
        let limit = self.limit.map_or(usize::MAX, |l| l.max(1) as usize);
        // Inline: a pick per request, over a handful of dynos.
        let mut healthy: SmallVec<[usize; 16]> = SmallVec::new();
        let mut quarantined: SmallVec<[usize; 16]> = SmallVec::new();
        let mut any_healthy = false;
        for (i, slot) in self.backends.iter().enumerate() {
            if tried.contains(&slot.addr) {
                continue;
            }
            let sick = slot.quarantined(now);
            any_healthy |= !sick;
            if slot.in_flight() < limit {
                if sick {
                    quarantined.push(i);
                } else {
                    healthy.push(i);
                }
            }
        }
        let candidates = if !healthy.is_empty() {
            healthy
        } else if any_healthy {
            return Pick::Busy;
        } else if !quarantined.is_empty() {
            quarantined
        } else if self.backends.iter().any(|s| !tried.contains(&s.addr)) {
            return Pick::Busy;
        } else {
            return Pick::Exhausted;
        };
        let chosen = match balance {
            Balance::Random => candidates[self.below(candidates.len())],
            Balance::PowerOfTwo if candidates.len() > 2 => {
                let a = self.below(candidates.len());
                let mut b = self.below(candidates.len() - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
                if self.backends[b].in_flight() < self.backends[a].in_flight() {
                    b
                } else {
                    a
                }
            }
            // With two candidates, the power of two choices is the least outstanding.
            Balance::PowerOfTwo | Balance::LeastOutstanding => {
                let start = self.next;
                self.next = self.next.wrapping_add(1);
                let n = candidates.len();
                (0..n)
                    .map(|k| candidates[start.wrapping_add(k) % n])
                    .min_by_key(|&i| self.backends[i].in_flight())
                    .unwrap_or(candidates[0])
            }
        };
        Pick::Slot(chosen)
    }

    fn take(&self, app: &Arc<App>, i: usize) -> InFlight {
        let slot = Arc::clone(&self.backends[i]);
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            app: Arc::clone(app),
            slot,
        }
    }

    /// Serves waiting requests, oldest first, while backends have room. Grants that could not
    /// be delivered (the request gave up meanwhile) are returned for dropping outside the lock.
    #[must_use]
    fn dispatch(&mut self, app: &Arc<App>) -> Vec<InFlight> {
        let mut undelivered = Vec::new();
        if self.queue.is_empty() {
            return undelivered;
        }
        let refusal = if self.removed {
            Some(Refusal::NotRunning)
        } else if self.maintenance {
            Some(Refusal::Maintenance)
        } else if self.backends.is_empty() {
            match self.no_backends {
                NoBackends::NotRunning => Some(Refusal::NotRunning),
                NoBackends::Crashed => Some(Refusal::Crashed),
                NoBackends::Booting | NoBackends::Asleep => return undelivered,
            }
        } else {
            None
        };
        if let Some(refusal) = refusal {
            for waiter in self.queue.drain(..) {
                let _ = waiter.grant.send(Err(refusal));
            }
            return undelivered;
        }
        let now = clock::monotonic_ms();
        let mut i = 0;
        while i < self.queue.len() {
            if self.queue[i].grant.is_closed() {
                self.queue.remove(i);
                continue;
            }
            let tried = std::mem::take(&mut self.queue[i].tried);
            // Dispatch is not where balancing matters: any backend with room will do, but the
            // least busy one is as cheap to find.
            match self.pick(&tried, Balance::LeastOutstanding, now) {
                Pick::Slot(b) => {
                    let granted = self.take(app, b);
                    let waiter = self.queue.remove(i).expect("index in range");
                    if let Err(Ok(granted)) = waiter.grant.send(Ok(granted)) {
                        undelivered.push(granted);
                    }
                }
                Pick::Exhausted => {
                    let waiter = self.queue.remove(i).expect("index in range");
                    let _ = waiter.grant.send(Err(Refusal::Exhausted));
                }
                Pick::Busy => {
                    self.queue[i].tried = tried;
                    let limit = self.limit.map_or(usize::MAX, |l| l.max(1) as usize);
                    if self.backends.iter().all(|s| s.in_flight() >= limit) {
                        break;
                    }
                    i += 1;
                }
            }
        }
        undelivered
    }
}

/// Looked up by every request with its Host, but filled only by the coordinator: foldhash's
/// seeded hash is safe here and a fraction of SipHash's cost.
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Tables {
    apps: Map<Arc<App>>,
    /// Custom domain (lowercase; `*.example.com` for a wildcard) -> app name.
    domains: Map<String>,
}

/// Called with an app's name when a request arrives while its eco dynos sleep.
#[derive(Clone)]
struct Waker(Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

/// The table's backends at one moment (opaque).
#[derive(Debug, Default)]
pub struct RouteSnapshot(Vec<Arc<Slot>>);

/// Backends out of the table whose requests are still in flight.
#[derive(Debug, Default)]
pub struct Draining(Vec<Arc<Slot>>);

impl Draining {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Requests still in flight to them.
    pub fn in_flight(&self) -> usize {
        self.0.iter().map(|s| s.in_flight()).sum()
    }
}

/// App name -> web backends, settings and queue. Cheap to clone; all clones share one table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    inner: Arc<RwLock<Tables>>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn app_or_insert(&self, app: &str) -> Arc<App> {
        if let Some(found) = self.read().apps.get(app) {
            return Arc::clone(found);
        }
        Arc::clone(
            self.write()
                .apps
                .entry(app.to_string())
                .or_insert_with(|| Arc::new(App::new(app))),
        )
    }

    /// Runs `change` on the app's state (adding the app when absent), then serves waiters the
    /// change may have made room for.
    fn update(&self, app: &str, change: impl FnOnce(&App, &mut AppState)) {
        let app = self.app_or_insert(app);
        let undelivered = {
            let mut state = app.lock();
            change(&app, &mut state);
            state.dispatch(&app)
        };
        drop(undelivered);
    }

    /// Replaces the app's backends; keeps the in-flight counters of backends that stay (same
    /// dyno and address). An app present with no backends answers per [`NoBackends`] (H14 by
    /// default); an absent app answers 404.
    pub fn set_backends(&self, app: &str, backends: Vec<Backend>) {
        self.update(app, |app, state| {
            let slots = backends
                .into_iter()
                .map(|b| {
                    state
                        .backends
                        .iter()
                        .find(|s| s.dyno == b.dyno && s.addr == b.addr)
                        .cloned()
                        .unwrap_or_else(|| {
                            Arc::new(Slot {
                                metrics: app.metrics.dyno(&b.dyno),
                                dyno: b.dyno,
                                addr: b.addr,
                                in_flight: AtomicUsize::new(0),
                                quarantined_until: AtomicU64::new(0),
                            })
                        })
                })
                .collect();
            state.backends = slots;
        });
    }

    /// Every backend now in the table, to compare with after a change ([`RouteTable::draining`]).
    pub fn snapshot(&self) -> RouteSnapshot {
        let apps: Vec<Arc<App>> = self.read().apps.values().cloned().collect();
        RouteSnapshot(apps.iter().flat_map(|a| a.slots()).collect())
    }

    /// The backends of `before` the table no longer routes to but that still have requests in
    /// flight: a dyno gets SIGTERM only once these are done.
    pub fn draining(&self, before: RouteSnapshot) -> Draining {
        let now = self.snapshot().0;
        Draining(
            before
                .0
                .into_iter()
                .filter(|s| s.in_flight() > 0 && !now.iter().any(|n| Arc::ptr_eq(n, s)))
                .collect(),
        )
    }

    /// Removes the app and its custom domains; its waiting requests get H14.
    pub fn remove_app(&self, app: &str) {
        let removed = {
            let mut tables = self.write();
            tables.domains.retain(|_, owner| owner != app);
            tables.apps.remove(app)
        };
        if let Some(app) = removed {
            let mut state = app.lock();
            state.removed = true;
            let undelivered = state.dispatch(&app);
            drop(state);
            drop(undelivered);
        }
    }

    /// Turns maintenance mode (H80) on or off. Turning it on for an absent app adds the app
    /// with no backends, so it answers H80 rather than 404.
    pub fn set_maintenance(&self, app: &str, on: bool) {
        if !on && !self.read().apps.contains_key(app) {
            return;
        }
        self.update(app, |_, state| state.maintenance = on);
    }

    /// The most requests one dyno of the app gets at a time (`None`: unlimited, the default).
    /// When every dyno is at the limit, requests wait at the router in arrival order (at most
    /// `RouterConfig::max_queue` of them, then H11) instead of queueing inside a busy dyno.
    pub fn set_concurrency(&self, app: &str, limit: Option<u32>) {
        self.update(app, |_, state| state.limit = limit.map(|l| l.max(1)));
    }

    /// Who hears of requests for sleeping apps (`NoBackends::Asleep`): it must start their
    /// dynos, and should return at once.
    pub fn set_waker(&self, wake: impl Fn(&str) + Send + Sync + 'static) {
        *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(Waker(Arc::new(wake)));
    }

    /// Unix ms of the app's latest request through this router, if it had one.
    pub fn last_request_ms(&self, app: &str) -> Option<i64> {
        let t = self
            .read()
            .apps
            .get(app)?
            .last_request
            .load(std::sync::atomic::Ordering::Relaxed);
        (t > 0).then_some(t)
    }

    /// What requests get while the app has no backends: H14, wait for a booting dyno (H20
    /// after the boot timeout), or H10.
    pub fn set_no_backends(&self, app: &str, why: NoBackends) {
        self.update(app, |_, state| state.no_backends = why);
    }

    /// Custom domains the app also answers at, besides `APP.DOMAIN` (`www.example.com`, or
    /// `*.example.com` for any one label in front of `example.com`). Replaces the app's previous
    /// domains; a domain claimed by another app moves to this one.
    pub fn set_domains(&self, app: &str, domains: Vec<String>) {
        let domains: Vec<String> = domains
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        let entry = self.app_or_insert(app);
        let mut tables = self.write();
        tables.domains.retain(|_, owner| owner != app);
        for domain in &domains {
            if let Some(previous) = tables.domains.insert(domain.clone(), app.to_string()) {
                tracing::warn!(domain, from = previous, to = app, "custom domain moved");
            }
        }
        drop(tables);
        entry.lock().domains = domains;
    }

    /// The app's custom domains, as set.
    pub fn domains(&self, app: &str) -> Vec<String> {
        self.lookup(app)
            .map(|a| a.lock().domains.clone())
            .unwrap_or_default()
    }

    pub fn backends(&self, app: &str) -> Vec<Backend> {
        self.lookup(app)
            .map(|app| {
                app.lock()
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
        let app = self.lookup(app)?;
        let state = app.lock();
        let slot = state.backends.iter().find(|s| s.dyno == dyno)?;
        Some(slot.in_flight())
    }

    /// Requests waiting at the router for a dyno of the app.
    pub fn queued(&self, app: &str) -> usize {
        self.lookup(app).map_or(0, |a| a.queue_depth())
    }

    /// The router's metrics in the Prometheus text format, for serving on any endpoint.
    pub fn prometheus(&self) -> String {
        let mut apps: Vec<Arc<App>> = self.read().apps.values().cloned().collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        crate::metrics::render(&apps)
    }

    pub(crate) fn lookup(&self, app: &str) -> Option<Arc<App>> {
        self.read().apps.get(app).cloned()
    }

    /// The app a request for `host` (lowercase, no port) goes to: a custom domain, then
    /// `APP.DOMAIN` (`domain_suffix` is `.DOMAIN`), then a wildcard custom domain.
    pub(crate) fn route(&self, host: &str, domain_suffix: &str) -> Option<Arc<App>> {
        let tables = self.read();
        if let Some(app) = tables.domains.get(host) {
            return tables.apps.get(app).cloned();
        }
        if let Some(app) = host.strip_suffix(domain_suffix)
            && !app.is_empty()
            && !app.contains('.')
        {
            return tables.apps.get(app).cloned();
        }
        let (_, parent) = host.split_once('.')?;
        let app = tables.domains.get(&format!("*.{parent}"))?;
        tables.apps.get(app).cloned()
    }

    /// A backend for one attempt of a request, or a place in the app's queue. `retry` puts a
    /// request whose first backend failed at the head of the queue rather than the tail.
    pub(crate) fn acquire(
        &self,
        app: &Arc<App>,
        tried: &[SocketAddr],
        balance: Balance,
        max_queue: usize,
        retry: bool,
    ) -> Acquire {
        app.last_request
            .store(clock::unix_ms(), std::sync::atomic::Ordering::Relaxed);
        let mut state = app.lock();
        if state.maintenance {
            return Acquire::Refused(Refusal::Maintenance);
        }
        let mut wake = false;
        if state.removed {
            return Acquire::Refused(Refusal::NotRunning);
        }
        let booting = state.backends.is_empty();
        if booting {
            match state.no_backends {
                NoBackends::NotRunning => return Acquire::Refused(Refusal::NotRunning),
                NoBackends::Crashed => return Acquire::Refused(Refusal::Crashed),
                NoBackends::Booting => {}
                NoBackends::Asleep => wake = true,
            }
        } else if state.queue.is_empty() || retry {
            match state.pick(tried, balance, clock::monotonic_ms()) {
                Pick::Slot(i) => return Acquire::Ready(state.take(app, i)),
                Pick::Exhausted => return Acquire::Refused(Refusal::Exhausted),
                Pick::Busy => {}
            }
        }
        if state.queue.len() >= max_queue {
            return Acquire::Refused(Refusal::Backlog);
        }
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            tried: tried.to_vec(),
            grant: tx,
        };
        if retry {
            state.queue.push_front(waiter);
        } else {
            state.queue.push_back(waiter);
        }
        // Others may be waiting only for backends this request has not tried.
        let undelivered = state.dispatch(app);
        drop(state);
        drop(undelivered);
        if wake {
            let waker = self
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(w) = waker {
                (w.0)(&app.name);
            }
        }
        Acquire::Wait { grant: rx, booting }
    }

    pub(crate) fn quarantine(&self, slot: &Slot) {
        let until = clock::monotonic_ms() + QUARANTINE.as_millis() as u64;
        slot.quarantined_until.store(until, Ordering::Relaxed);
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

    fn ready(table: &RouteTable, app: &Arc<App>, tried: &[SocketAddr]) -> InFlight {
        match table.acquire(app, tried, Balance::PowerOfTwo, 100, false) {
            Acquire::Ready(g) => g,
            other => panic!("expected a backend, got {other:?}"),
        }
    }

    #[test]
    fn idle_backends_take_turns_and_busy_ones_wait() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1), backend("web.2", 2)]);
        let app = table.lookup("shop").unwrap();
        let first = ready(&table, &app, &[]).slot().dyno.clone();
        let second = ready(&table, &app, &[]).slot().dyno.clone();
        assert_ne!(first, second);

        let _busy = ready(&table, &app, &[]);
        let busy = _busy.slot().dyno.clone();
        for _ in 0..4 {
            assert_ne!(ready(&table, &app, &[]).slot().dyno, busy);
        }
        let other = table
            .backends("shop")
            .into_iter()
            .find(|b| b.dyno != busy)
            .unwrap();
        assert_eq!(ready(&table, &app, &[other.addr]).slot().dyno, busy);
    }

    #[test]
    fn power_of_two_avoids_the_busiest() {
        let table = RouteTable::new();
        let backends: Vec<Backend> = (1..=5).map(|i| backend(&format!("web.{i}"), i)).collect();
        table.set_backends("shop", backends);
        let app = table.lookup("shop").unwrap();
        // Load web.1 with 10 requests: two random choices never pick it over an idle dyno.
        let _held: Vec<InFlight> = (0..10).map(|_| app.lock().take(&app, 0)).collect();
        for _ in 0..200 {
            assert_ne!(ready(&table, &app, &[]).slot().dyno, "web.1");
        }
    }

    #[test]
    fn quarantined_backends_come_last() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1), backend("web.2", 2)]);
        let app = table.lookup("shop").unwrap();
        let sick = Arc::clone(&app.slots()[1]);
        table.quarantine(&sick);
        for _ in 0..4 {
            assert_eq!(ready(&table, &app, &[]).slot().dyno, "web.1");
        }
        let tried = [app.slots()[0].addr];
        assert_eq!(ready(&table, &app, &tried).slot().dyno, "web.2");
        let both = [app.slots()[0].addr, app.slots()[1].addr];
        assert!(matches!(
            table.acquire(&app, &both, Balance::PowerOfTwo, 100, true),
            Acquire::Refused(Refusal::Exhausted)
        ));
    }

    #[tokio::test]
    async fn a_full_app_queues_in_arrival_order_and_bounds_the_queue() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1)]);
        table.set_concurrency("shop", Some(1));
        let app = table.lookup("shop").unwrap();
        let first = ready(&table, &app, &[]);
        let mut waiting = Vec::new();
        for _ in 0..3 {
            match table.acquire(&app, &[], Balance::PowerOfTwo, 3, false) {
                Acquire::Wait { grant, booting } => {
                    assert!(!booting);
                    waiting.push(grant);
                }
                other => panic!("expected to wait, got {other:?}"),
            }
        }
        assert_eq!(table.queued("shop"), 3);
        assert!(matches!(
            table.acquire(&app, &[], Balance::PowerOfTwo, 3, false),
            Acquire::Refused(Refusal::Backlog)
        ));
        // The second waiter gives up; the slot goes first to waiter 0, then to waiter 2.
        let mut waiting = waiting.into_iter();
        let w0 = waiting.next().unwrap();
        drop(waiting.next());
        let w2 = waiting.next().unwrap();
        drop(first);
        let g0 = w0.await.unwrap().unwrap();
        assert_eq!(table.in_flight("shop", "web.1"), Some(1));
        drop(g0);
        let g2 = w2.await.unwrap().unwrap();
        assert_eq!(g2.slot().dyno, "web.1");
        assert_eq!(table.queued("shop"), 0);
        drop(g2);
        assert_eq!(table.in_flight("shop", "web.1"), Some(0));
    }

    #[tokio::test]
    async fn raising_the_limit_or_adding_dynos_serves_waiters() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1)]);
        table.set_concurrency("shop", Some(1));
        let app = table.lookup("shop").unwrap();
        let _first = ready(&table, &app, &[]);
        let Acquire::Wait { grant, .. } = table.acquire(&app, &[], Balance::PowerOfTwo, 9, false)
        else {
            panic!("expected to wait");
        };
        table.set_backends("shop", vec![backend("web.1", 1), backend("web.2", 2)]);
        assert_eq!(grant.await.unwrap().unwrap().slot().dyno, "web.2");

        let _second = ready(&table, &app, &[]);
        let Acquire::Wait { grant, .. } = table.acquire(&app, &[], Balance::PowerOfTwo, 9, false)
        else {
            panic!("expected to wait");
        };
        table.set_concurrency("shop", None);
        grant.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn booting_apps_queue_until_a_dyno_is_up() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![]);
        let app = table.lookup("shop").unwrap();
        assert!(matches!(
            table.acquire(&app, &[], Balance::PowerOfTwo, 9, false),
            Acquire::Refused(Refusal::NotRunning)
        ));
        table.set_no_backends("shop", NoBackends::Crashed);
        assert!(matches!(
            table.acquire(&app, &[], Balance::PowerOfTwo, 9, false),
            Acquire::Refused(Refusal::Crashed)
        ));
        table.set_no_backends("shop", NoBackends::Booting);
        let Acquire::Wait { grant, booting } =
            table.acquire(&app, &[], Balance::PowerOfTwo, 9, false)
        else {
            panic!("expected to wait");
        };
        assert!(booting);
        table.set_backends("shop", vec![backend("web.1", 1)]);
        assert_eq!(grant.await.unwrap().unwrap().slot().dyno, "web.1");

        // Maintenance turns waiters away.
        table.set_backends("shop", vec![]);
        let Acquire::Wait { grant, .. } = table.acquire(&app, &[], Balance::PowerOfTwo, 9, false)
        else {
            panic!("expected to wait");
        };
        table.set_maintenance("shop", true);
        assert_eq!(grant.await.unwrap().unwrap_err(), Refusal::Maintenance);
    }

    #[tokio::test]
    async fn a_request_for_a_sleeping_app_wakes_it_and_waits_for_its_dyno() {
        let table = RouteTable::new();
        let woken = Arc::new(Mutex::new(Vec::<String>::new()));
        let w = woken.clone();
        table.set_waker(move |app| w.lock().unwrap().push(app.to_string()));
        table.set_backends("shop", vec![]);
        table.set_no_backends("shop", NoBackends::Asleep);
        assert_eq!(table.last_request_ms("shop"), None);
        let app = table.lookup("shop").unwrap();
        let Acquire::Wait { grant, booting } =
            table.acquire(&app, &[], Balance::PowerOfTwo, 9, false)
        else {
            panic!("expected to wait");
        };
        assert!(booting, "a sleeping app waits as long as a booting one");
        assert_eq!(*woken.lock().unwrap(), vec!["shop".to_string()]);
        assert!(table.last_request_ms("shop").is_some());
        table.set_backends("shop", vec![backend("web.1", 1)]);
        assert_eq!(grant.await.unwrap().unwrap().slot().dyno, "web.1");
    }

    #[test]
    fn hosts_route_to_apps_and_custom_domains() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1)]);
        table.set_backends("blog", vec![backend("web.1", 2)]);
        table.set_domains(
            "shop",
            vec!["WWW.Shop.Example.".into(), "*.shop.test".into()],
        );
        let name = |host: &str| table.route(host, ".localhost").map(|a| a.name.clone());
        assert_eq!(name("shop.localhost").as_deref(), Some("shop"));
        assert_eq!(name("www.shop.example").as_deref(), Some("shop"));
        assert_eq!(name("eu.shop.test").as_deref(), Some("shop"));
        assert_eq!(name("a.b.shop.test"), None);
        assert_eq!(name("x.shop.localhost"), None);
        assert_eq!(name("nope.localhost"), None);

        table.set_domains("blog", vec!["www.shop.example".into()]);
        assert_eq!(name("www.shop.example").as_deref(), Some("blog"));
        table.set_domains("shop", vec![]);
        assert_eq!(name("eu.shop.test"), None);
        table.remove_app("blog");
        assert_eq!(name("www.shop.example"), None);
    }

    #[test]
    fn set_backends_keeps_counters_and_maintenance() {
        let table = RouteTable::new();
        table.set_backends("shop", vec![backend("web.1", 1)]);
        table.set_maintenance("shop", true);
        let app = table.lookup("shop").unwrap();
        let guard = app.lock().take(&app, 0);
        table.set_backends("shop", vec![backend("web.1", 1), backend("web.2", 2)]);
        assert_eq!(table.in_flight("shop", "web.1"), Some(1));
        assert_eq!(table.in_flight("shop", "web.2"), Some(0));
        assert!(app.lock().maintenance);
        drop(guard);
        assert_eq!(table.in_flight("shop", "web.1"), Some(0));
        assert_eq!(table.backends("shop").len(), 2);

        table.remove_app("shop");
        assert!(table.lookup("shop").is_none());
        table.set_maintenance("shop", false);
        assert!(table.lookup("shop").is_none());
    }
}
