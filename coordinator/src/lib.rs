//! The coordinator: store, dyno manager, agent sessions, control API, slug store and the
//! in-process router it feeds. `run` is what `main` calls; tests call it on `127.0.0.1:0`.

pub mod agents;
pub mod api;
pub mod auth;
pub mod billing;
pub mod conns;
pub mod drains;
pub mod loghub;
pub mod manager;
pub mod metrics;
pub mod rendezvous;
pub mod slugs;
pub mod stats;
pub mod store;
pub mod stream;
pub mod tls;

use drains::{DrainOptions, DrainSpec, Drains};
use dyno_router::{Backend, RouteTable, RouterConfig};
use dyno_shared::api::RunEvent;
use dyno_shared::protocol::{CoordinatorMsg, DynoSpec, DynoState, DynoStatus, HealthCheck};
use dyno_shared::{LogLine, LogSource};
use loghub::{LogHub, LogWriter};
use manager::{Action, AppView, HostView, RestartPolicy, View};
use slugs::SlugStore;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Desired, DynoRow, Queries, Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Slug(#[from] slugs::SlugError),
    #[error("failed to prepare state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("failed to start the log writer thread: {0}")]
    LogWriter(std::io::Error),
    #[error(transparent)]
    Pricing(#[from] billing::PricingError),
    #[error("{0}")]
    Token(String),
    #[error("API TLS: {0}")]
    Tls(#[from] tls::TlsSetupError),
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub state_dir: PathBuf,
    /// The operator and agent token; read from or written to `STATE_DIR/token` when absent.
    pub token: Option<String>,
    /// Apps are reached at `APP.DOMAIN` through the router.
    pub domain: String,
    pub restart: RestartPolicy,
    /// SIGTERM-to-SIGKILL grace given to agents when stopping dynos.
    pub stop_grace: Duration,
    /// How often the manager looks even when nothing woke it (crash cool-offs expire).
    pub reconcile_interval: Duration,
    /// A host whose agent has not been heard from for this long is lost: its dynos are started
    /// elsewhere. Shorter silences (an agent restart, a network blip) change nothing.
    pub host_lost_after: Duration,
    /// The router terminates TLS with this certificate and key (PEM) when set.
    pub tls: Option<dyno_router::TlsConfig>,
    /// Where the router serves Prometheus metrics (`GET /metrics`), when set.
    pub metrics_listen: Option<SocketAddr>,
    /// Daily cycling (Heroku: after 24 h plus up to 216 min); `None` turns it off.
    pub cycle: Option<manager::Cycle>,
    /// Largest slug accepted, in bytes.
    pub max_slug_bytes: usize,
    /// How often runtime-metrics lines are logged for apps with the feature on.
    pub metrics_interval: Duration,
    pub drains: DrainOptions,
    /// The coordinator's TOML config (`[pricing]`), re-read on SIGHUP; `None`: defaults.
    pub config_file: Option<PathBuf>,
    /// TLS on the control API and the agents' websocket.
    pub api_tls: ApiTlsMode,
    /// Names (DNS or IP) a self-made API certificate is issued for, besides localhost.
    pub api_tls_names: Vec<String>,
    /// Open API connections (agents' websockets included) beyond which new ones get a 503.
    pub max_connections: usize,
    /// An app with eco web dynos and no request for this long sleeps (its eco dynos stop, the
    /// next request wakes them). `None`: never.
    pub eco_idle_after: Option<Duration>,
    /// Where `heroku run` attaches (TLS). `None`: the API's IP, a port the system picks.
    pub rendezvous_listen: Option<SocketAddr>,
    /// An attached one-off whose client has not attached within this is stopped (R13).
    pub attach_within: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTlsMode {
    /// Plain HTTP: loopback, or explicitly allowed.
    Off,
    /// A CA and certificate made in `STATE_DIR/tls` on first start.
    SelfMade,
    /// The operator's certificate chain and key (PEM).
    Files { cert: PathBuf, key: PathBuf },
}

impl CoordinatorConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        CoordinatorConfig {
            state_dir,
            token: None,
            domain: "localhost".into(),
            restart: RestartPolicy::default(),
            stop_grace: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(1),
            host_lost_after: Duration::from_secs(5),
            tls: None,
            metrics_listen: None,
            cycle: Some(manager::Cycle {
                after: Duration::from_secs(24 * 3600),
                jitter: Duration::from_secs(216 * 60),
            }),
            max_slug_bytes: dyno_shared::api::MAX_SLUG_BYTES,
            metrics_interval: metrics::DEFAULT_INTERVAL,
            drains: DrainOptions::default(),
            config_file: None,
            api_tls: ApiTlsMode::Off,
            api_tls_names: Vec::new(),
            max_connections: 4096,
            eco_idle_after: Some(Duration::from_secs(30 * 60)),
            rendezvous_listen: None,
            attach_within: rendezvous::ATTACH_WITHIN,
        }
    }
}

/// The Procfile process type of the release phase.
pub const RELEASE_TYPE: &str = "release";

/// Failed authentications from one address before it is refused for the rest of the window.
pub const FAILED_AUTH_MAX: u32 = 20;
pub const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(60);

/// After a coordinator start, agents get this long (on top of `host_lost_after`) to reconnect
/// before their hosts count as lost: their reconnect backoff reaches 5 s.
pub const RECONNECT_GRACE: Duration = Duration::from_secs(10);

/// What the coordinator knows of a host's agent right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Connected and heard from within `host_lost_after`.
    Connected { address: String },
    /// Not connected, but not silent long enough to be lost: a blip.
    Away,
    /// Silent past `host_lost_after`: its dynos run elsewhere.
    Lost,
}

impl Liveness {
    pub fn as_str(&self) -> &'static str {
        match self {
            Liveness::Connected { .. } => "connected",
            Liveness::Away => "away",
            Liveness::Lost => "lost",
        }
    }
}

/// A connected agent.
struct AgentConn {
    conn_id: u64,
    tx: mpsc::UnboundedSender<CoordinatorMsg>,
    address: String,
    last_heartbeat: i64,
    /// The host's 1-minute load average from its latest heartbeat.
    load_1m: Option<f64>,
}

pub struct Inner {
    store: Mutex<Store>,
    agents: Mutex<HashMap<String, AgentConn>>,
    pub logs: LogHub,
    /// Persists `logs` (also one of its sinks); synced on shutdown.
    log_writer: Arc<LogWriter>,
    /// Running log drains (also a sink of `logs`).
    pub drains: Arc<Drains>,
    pub routes: RouteTable,
    slugs: SlugStore,
    wake: Notify,
    token: String,
    config: CoordinatorConfig,
    router_port: u16,
    /// Attached one-off dynos: (app, dyno name) -> the client's stream.
    runs: Mutex<HashMap<(String, String), mpsc::Sender<RunEvent>>>,
    unplaced: Mutex<HashSet<String>>,
    /// Apps in the route table, so destroyed ones can be removed.
    routed: Mutex<HashSet<String>>,
    next_conn: AtomicU64,
    /// Agents' dyno reports waiting for the status applier (host, status), in arrival order.
    statuses: Mutex<Vec<(String, DynoStatus)>>,
    status_ready: Notify,
    /// When each disconnected host's agent was last heard from (unix ms).
    away: Mutex<HashMap<String, i64>>,
    /// Hosts already logged as lost, so each loss is logged once.
    lost_noted: Mutex<HashSet<String>>,
    /// Unix ms of this coordinator's start: hosts it has not heard from count from here.
    started_at: i64,
    /// The latest resource samples of running dynos, by dyno id.
    pub stats: stats::StatsBook,
    /// The price table in effect (also the newest entry of the store's pricing history).
    pricing: Mutex<billing::PriceTable>,
    /// Open log sessions by secret (`POST /apps/{app}/log-sessions`).
    pub log_sessions: Mutex<HashMap<String, api::LogSession>>,
    /// Changes pushed to `GET /stream` subscribers.
    pub stream: tokio::sync::broadcast::Sender<dyno_shared::api::StreamItem>,
    /// The API's TLS certificate, when it speaks TLS.
    api_tls: Option<tls::ApiTls>,
    /// One-offs waiting for `heroku run` to attach.
    pub rendezvous: Arc<rendezvous::Sessions>,
    /// The audit trail (`audit.sqlite`).
    pub audit: Mutex<store::audit::AuditStore>,
    /// Valid tokens by hash, so a request costs no store read; emptied on every revoke.
    token_cache: Mutex<HashMap<String, auth::Principal>>,
    pub failed_auth: auth::FailedAuth,
}

pub type Shared = Arc<Inner>;

/// Longest a stopping web dyno's SIGTERM waits for the requests it was serving.
const DRAIN_WITHIN: Duration = Duration::from_secs(10);

static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique id: time, a process-wide counter and the std hasher's random keys.
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(dyno_shared::time::now_micros());
    h.write_u64(ID_COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("{prefix}{:016x}", h.finish())
}

fn now_ms() -> i64 {
    dyno_shared::time::now_micros() / 1000
}

fn load_or_create_token(dir: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = auth::random_hex(24)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

impl Inner {
    pub fn open(config: CoordinatorConfig, router_port: u16) -> Result<Shared, CoordinatorError> {
        let dir = &config.state_dir;
        let io = |source| CoordinatorError::StateDir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let token = match &config.token {
            Some(t) => t.clone(),
            None => load_or_create_token(dir).map_err(io)?,
        };
        let api_tls = match &config.api_tls {
            ApiTlsMode::Off => None,
            ApiTlsMode::SelfMade => {
                let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
                names.extend(config.api_tls_names.iter().cloned());
                Some(tls::self_made(&dir.join("tls"), &names)?)
            }
            ApiTlsMode::Files { cert, key } => Some(tls::from_files(cert, key)?),
        };
        let fingerprint_file = dir.join("fingerprint");
        match &api_tls {
            Some(t) => std::fs::write(&fingerprint_file, format!("{}\n", t.pin)).map_err(io)?,
            None => {
                let _ = std::fs::remove_file(&fingerprint_file);
            }
        }
        let mut store = Store::open(&dir.join("state.db"))?;
        let pricing = load_pricing(config.config_file.as_deref())?;
        record_pricing(&mut store, &pricing)?;
        let slugs = SlugStore::open(dir.join("slugs"))?;
        let mut log_store = store::logs::LogStore::open(&dir.join("logs.sqlite"))?;
        let audit = store::audit::AuditStore::open(&dir.join("audit.sqlite"))?;
        // Lines that arrived for an app after it was destroyed must not greet a new app that
        // takes its name.
        let apps: HashSet<String> = store
            .read(|r| r.apps())?
            .into_iter()
            .map(|a| a.name)
            .collect();
        log_store.retain_apps(&apps)?;
        let history = log_store.load(loghub::RING_LINES)?;
        let log_writer =
            Arc::new(LogWriter::spawn(log_store).map_err(CoordinatorError::LogWriter)?);
        let drains = Arc::new(Drains::new(config.drains.clone()));
        let logs = LogHub::new(history, vec![log_writer.clone(), drains.clone()]);
        Ok(Arc::new(Inner {
            store: Mutex::new(store),
            agents: Mutex::new(HashMap::new()),
            logs,
            log_writer,
            drains,
            routes: RouteTable::new(),
            slugs,
            wake: Notify::new(),
            token,
            config,
            router_port,
            runs: Mutex::new(HashMap::new()),
            unplaced: Mutex::new(HashSet::new()),
            routed: Mutex::new(HashSet::new()),
            next_conn: AtomicU64::new(1),
            statuses: Mutex::new(Vec::new()),
            status_ready: Notify::new(),
            away: Mutex::new(HashMap::new()),
            lost_noted: Mutex::new(HashSet::new()),
            started_at: now_ms() + RECONNECT_GRACE.as_millis() as i64,
            stats: stats::StatsBook::default(),
            pricing: Mutex::new(pricing),
            audit: Mutex::new(audit),
            stream: stream::channel(),
            log_sessions: Mutex::new(HashMap::new()),
            api_tls,
            rendezvous: Default::default(),
            token_cache: Mutex::new(HashMap::new()),
            failed_auth: auth::FailedAuth::new(FAILED_AUTH_MAX, FAILED_AUTH_WINDOW),
        }))
    }

    /// Who `secret` is: the root token (`--token` or `STATE_DIR/token`), or a live stored one.
    pub fn authenticate(&self, secret: &str) -> Result<auth::Principal, String> {
        if api::constant_time_eq(secret.as_bytes(), self.token.as_bytes()) {
            return Ok(auth::Principal {
                name: "root".into(),
                role: auth::Role::Operate,
                host: None,
            });
        }
        let hash = auth::hash(secret);
        if let Some(p) = self.token_cache.lock().expect("token cache").get(&hash) {
            return Ok(p.clone());
        }
        let row = self
            .store()
            .read(|r| r.token_by_hash(&hash))
            .map_err(|e| format!("token lookup failed: {e}"))?;
        let Some(row) = row else {
            return Err("invalid token".into());
        };
        if row.revoked_at.is_some() {
            return Err(format!("token {} was revoked", row.name));
        }
        let Some(role) = auth::Role::parse(&row.role) else {
            return Err(format!("token {} has an unknown role", row.name));
        };
        let p = auth::Principal {
            name: row.name,
            role,
            host: row.host,
        };
        let mut cache = self.token_cache.lock().expect("token cache");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(hash, p.clone());
        Ok(p)
    }

    /// Forgets cached tokens: after a revoke, the next request reads the store.
    pub fn forget_tokens(&self) {
        self.token_cache.lock().expect("token cache").clear();
    }

    /// A host's own credential, replacing any it had: returns the secret.
    pub fn issue_agent_credential(&self, host: &str, via: &str) -> Result<String, String> {
        let secret = auth::new_secret(auth::Role::Agent).map_err(|e| e.to_string())?;
        let suffix = &auth::hash(&secret)[..8];
        let now = now_ms();
        let name = format!("agent-{host}-{suffix}");
        let revoked = self
            .store()
            .transaction(|tx| {
                let n = tx.revoke_host_tokens(host, now)?;
                tx.insert_token(&store::TokenRow {
                    name: name.clone(),
                    role: auth::Role::Agent.as_str().into(),
                    hash: auth::hash(&secret),
                    host: Some(host.to_string()),
                    created_at: now,
                    revoked_at: None,
                })?;
                Ok(n)
            })
            .map_err(|e| e.to_string())?;
        self.forget_tokens();
        tracing::info!(host, token = %name, joined_with = via, revoked, "host joined; issued its credential");
        Ok(secret)
    }

    /// `hosts:remove`: revokes the host's credentials, drops its connection and forgets it; its
    /// dynos count as lost and start elsewhere. False when no such host is known.
    pub fn remove_host(&self, host: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let (known, revoked) = self.store().transaction(|tx| {
            let n = tx.revoke_host_tokens(host, now)?;
            Ok((tx.delete_host(host)?, n))
        })?;
        self.forget_tokens();
        // Dropping its sender ends the session: the agent is disconnected at once.
        self.agents.lock().expect("agents lock").remove(host);
        self.away.lock().expect("away lock").remove(host);
        if known || revoked > 0 {
            tracing::warn!(host, revoked, "host removed; its credentials are revoked");
            self.wake();
        }
        Ok(known || revoked > 0)
    }

    /// Apps whose eco web dynos are all up and have had no request through the router for
    /// `eco_idle_after` (counting from when they came up, or this coordinator started).
    fn idle_eco_apps(
        &self,
        apps: &[AppView],
        dynos: &[DynoRow],
        sleeping: &HashMap<String, bool>,
        now: i64,
    ) -> HashSet<String> {
        let Some(after) = self.config.eco_idle_after else {
            return HashSet::new();
        };
        let after = after.as_millis() as i64;
        let mut idle = HashSet::new();
        for app in apps {
            let web_eco = app.formation.entries.iter().any(|(t, e)| {
                t.as_str() == "web" && e.size == dyno_shared::Size::Eco && e.quantity > 0
            });
            if !web_eco || app.eco_sleeps || sleeping.contains_key(&app.app.id) {
                continue;
            }
            let web: Vec<&DynoRow> = dynos
                .iter()
                .filter(|d| d.app_id == app.app.id && d.process_type == "web" && !d.one_off)
                .collect();
            if web.is_empty() || web.iter().any(|d| d.state != DynoState::Up) {
                continue;
            }
            let since = web
                .iter()
                .filter_map(|d| d.up_since)
                .max()
                .unwrap_or(now)
                .max(self.routes.last_request_ms(&app.app.name).unwrap_or(0))
                .max(self.started_at - RECONNECT_GRACE.as_millis() as i64);
            if now - since >= after {
                idle.insert(app.app.id.clone());
            }
        }
        idle
    }

    /// A request arrived for a sleeping app: wake its eco dynos.
    pub fn wake_app(&self, app: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let woke = self.store().transaction(|tx| {
            let Some(row) = tx.app(app)? else {
                return Ok(false);
            };
            if !tx.set_waking(&row.id)? {
                return Ok(false);
            }
            tx.insert_event(&row.id, now, "api", "Waking: a request arrived")?;
            Ok(true)
        })?;
        if woke {
            self.system_log(app, "api", "Waking: a request arrived".to_string());
            self.wake();
        }
        Ok(())
    }

    /// The price table in effect.
    pub fn pricing(&self) -> billing::PriceTable {
        self.pricing.lock().expect("pricing lock").clone()
    }

    /// Re-reads the config file (SIGHUP): a changed price table applies from now and is
    /// recorded; a bad file changes nothing.
    pub fn reload_pricing(&self) -> Result<bool, CoordinatorError> {
        let table = load_pricing(self.config.config_file.as_deref())?;
        let changed = record_pricing(&mut self.store(), &table)?;
        *self.pricing.lock().expect("pricing lock") = table;
        if changed {
            tracing::info!("pricing changed; it applies from now");
            self.wake();
        }
        Ok(changed)
    }

    /// The fingerprint clients pin, when the API speaks TLS.
    pub fn api_pin(&self) -> Option<dyno_shared::tls::Pin> {
        self.api_tls.as_ref().map(|t| t.pin)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("store lock poisoned")
    }

    /// Bytes of a stored slug, if it is there.
    pub fn slug_size(&self, id: &str) -> Option<u64> {
        let path = self.slugs.path(id).ok()?;
        std::fs::metadata(path).ok().map(|m| m.len())
    }

    pub fn web_url(&self, app: &str) -> String {
        format!("http://{app}.{}:{}/", self.config.domain, self.router_port)
    }

    /// Starts a sender for every stored drain (at start; `Drains::start` skips running ones).
    pub fn start_stored_drains(&self) -> Result<(), StoreError> {
        let rows = self.store().read(|r| r.all_drains())?;
        for d in rows {
            match d.url.parse() {
                Ok(url) => self.drains.start(DrainSpec {
                    id: d.id,
                    app: d.app,
                    url,
                    token: d.token,
                }),
                // Stored URLs were checked on the way in; a rule made stricter since can refuse one.
                Err(e) => {
                    tracing::error!(app = d.app, drain = d.id, error = %e, "stored log drain has an invalid URL; not starting it")
                }
            }
        }
        Ok(())
    }

    /// Running dynos of the apps with runtime metrics on.
    pub fn metered_dynos(&self) -> Result<Vec<DynoRow>, StoreError> {
        self.store().read(|r| {
            let apps: HashSet<String> =
                r.apps_with_feature(metrics::FEATURE)?.into_iter().collect();
            if apps.is_empty() {
                return Ok(Vec::new());
            }
            Ok(r.dynos()?
                .into_iter()
                .filter(|d| {
                    apps.contains(&d.app) && d.desired == Desired::Run && d.state.is_running()
                })
                .collect())
        })
    }

    /// A platform line in the app's log (Heroku's `heroku[api]`, `heroku[web.1]`).
    pub fn system_log(&self, app: &str, process: &str, message: impl Into<String>) {
        self.logs.push(LogLine {
            at: dyno_shared::time::now_micros(),
            app: app.to_string(),
            source: LogSource::System,
            process: process.to_string(),
            message: message.into(),
        });
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Every known host's liveness at `now` (unix ms).
    pub fn liveness(&self, hosts: &[store::HostRow], now: i64) -> HashMap<String, Liveness> {
        let agents = self.agents.lock().expect("agents lock");
        let away = self.away.lock().expect("away lock");
        let lost_after = self.config.host_lost_after.as_millis() as i64;
        hosts
            .iter()
            .map(|h| {
                let state = match agents.get(&h.name) {
                    Some(c) if now - c.last_heartbeat < lost_after => Liveness::Connected {
                        address: c.address.clone(),
                    },
                    Some(_) => Liveness::Lost,
                    None => {
                        let heard = away.get(&h.name).copied().unwrap_or(self.started_at);
                        if now - heard < lost_after {
                            Liveness::Away
                        } else {
                            Liveness::Lost
                        }
                    }
                };
                (h.name.clone(), state)
            })
            .collect()
    }

    /// When the next host would turn lost if it stays silent (unix ms), so the manager runs
    /// then rather than at its next tick.
    fn next_loss_at(&self) -> Option<i64> {
        let lost_after = self.config.host_lost_after.as_millis() as i64;
        let agents = self.agents.lock().expect("agents lock");
        let away = self.away.lock().expect("away lock");
        let noted = self.lost_noted.lock().expect("lost lock");
        agents
            .values()
            .map(|c| c.last_heartbeat)
            .chain(
                away.iter()
                    .filter(|(h, _)| !noted.contains(*h))
                    .map(|(_, &t)| t),
            )
            .map(|t| t + lost_after)
            .filter(|&t| t >= now_ms())
            .min()
    }

    /// The views of hosts the manager and placement work from.
    pub fn host_views(&self, hosts: &[store::HostRow], now: i64) -> Vec<HostView> {
        let live = self.liveness(hosts, now);
        hosts
            .iter()
            .map(|h| {
                let l = live.get(&h.name);
                HostView {
                    name: h.name.clone(),
                    memory_mb: h.memory_mb,
                    connected: matches!(l, Some(Liveness::Connected { .. })),
                    lost: matches!(l, Some(Liveness::Lost)),
                    drained: h.drained,
                    labels: h.labels.clone(),
                }
            })
            .collect()
    }

    /// Logs each host the first time it is seen lost, and forgets the losses of hosts back.
    fn note_lost(&self, views: &[HostView]) {
        let mut noted = self.lost_noted.lock().expect("lost lock");
        for h in views {
            if h.lost && noted.insert(h.name.clone()) {
                tracing::warn!(
                    host = h.name,
                    "host lost: no word from its agent for {:?}; its dynos start elsewhere",
                    self.config.host_lost_after
                );
            } else if !h.lost && noted.remove(&h.name) {
                tracing::info!(host = h.name, "lost host is back");
            }
        }
    }

    pub fn host_heartbeat(&self, name: &str) -> Option<i64> {
        self.agents
            .lock()
            .expect("agents lock")
            .get(name)
            .map(|c| c.last_heartbeat)
    }

    fn send(&self, host: &str, msg: CoordinatorMsg) -> bool {
        match self.agents.lock().expect("agents lock").get(host) {
            Some(c) => c.tx.send(msg).is_ok(),
            None => false,
        }
    }

    /// What an agent needs to start `d` of `release`, with its process type's check if any.
    fn spec_for(
        &self,
        d: &DynoRow,
        release: &store::ReleaseRow,
        checks: &HashMap<(String, String), HealthCheck>,
    ) -> DynoSpec {
        DynoSpec {
            dyno_id: d.id.clone(),
            app: d.app.clone(),
            name: d.name(),
            process_type: d.process_type.clone(),
            release: d.release,
            slug: release.slug.clone().unwrap_or_default(),
            command: d.command.clone(),
            env: release.config.0.clone(),
            size: d.size,
            one_off: d.one_off,
            generation: d.generation,
            check: (!d.one_off)
                .then(|| {
                    checks
                        .get(&(d.app_id.clone(), d.process_type.clone()))
                        .cloned()
                })
                .flatten(),
        }
    }

    /// One pass of the dyno manager: plan from the store and the connected hosts, apply the plan
    /// in one transaction, then tell the agents.
    pub fn reconcile(&self) -> Result<(), StoreError> {
        let now = now_ms();
        let mut outbox: Vec<(String, CoordinatorMsg)> = Vec::new();
        let mut logs: Vec<(String, String, String)> = Vec::new();
        let mut finished: Vec<(String, String)> = Vec::new();
        let mut lost_phases: Vec<(String, String, u32)> = Vec::new();
        let mut store = self.store();
        let month = billing::Month::containing(now);
        let eco_pool_ms = self.pricing.lock().expect("pricing lock").eco_pool_hours * 3_600_000.0;
        let (mut apps, dynos, hosts, checks, sleeping) = store.read(|r| {
            let sleeping = r.sleeping_apps()?;
            let mut apps = Vec::new();
            let preboot: HashSet<String> = r.apps_with_feature(api::PREBOOT)?.into_iter().collect();
            let requirements = r.requirements()?;
            for app in r.apps()? {
                let requires = requirements
                    .iter()
                    .filter(|((a, _), _)| *a == app.id)
                    .map(|((_, t), l)| (t.clone(), l.clone()))
                    .collect();
                apps.push(AppView {
                    release: r.current_release(&app.id)?,
                    formation: r.formation(&app.id)?,
                    preboot: preboot.contains(&app.name),
                    requires,
                    eco_sleeps: sleeping.get(&app.id) == Some(&false),
                    app,
                });
            }
            // Eco dynos also sleep once their owner's pool is used up; only apps with eco in
            // their formation pay for reading the month's eco usage, on every pass.
            let has_eco = |a: &AppView| {
                a.formation
                    .entries
                    .values()
                    .any(|e| e.size == dyno_shared::Size::Eco)
            };
            if apps.iter().any(has_eco) {
                let eco_used = billing::eco_ms_by_owner(
                    month,
                    now,
                    &r.usage_between(month.start_ms(), now + 1, true)?,
                );
                for a in apps.iter_mut().filter(|a| has_eco(a)) {
                    a.eco_sleeps |= eco_used
                        .get(&a.app.owner)
                        .is_some_and(|&ms| ms as f64 >= eco_pool_ms);
                }
            }
            Ok((apps, r.dynos()?, r.hosts()?, r.checks()?, sleeping))
        })?;
        // Woken apps whose web dynos are on their way: requests now wait for them to boot.
        let awake: Vec<&str> = sleeping
            .iter()
            .filter(|(_, waking)| **waking)
            .map(|(id, _)| id.as_str())
            .filter(|id| {
                !dynos.iter().any(|d| {
                    d.app_id == *id && d.process_type == "web" && d.desired == Desired::Sleep
                })
            })
            .collect();
        if !awake.is_empty() {
            store.transaction(|tx| {
                for id in &awake {
                    tx.set_awake(id)?;
                }
                Ok(())
            })?;
        }
        // Eco apps nobody has asked anything for a while go to sleep.
        let idle = self.idle_eco_apps(&apps, &dynos, &sleeping, now);
        if !idle.is_empty() {
            let minutes = self
                .config
                .eco_idle_after
                .map_or(0.0, |d| d.as_secs_f64() / 60.0);
            store.transaction(|tx| {
                for app in apps.iter().filter(|a| idle.contains(&a.app.id)) {
                    if tx.set_asleep(&app.app.id, now)? {
                        let why = format!(
                            "Idling: no requests for {minutes} minutes; eco dynos sleep until the next one"
                        );
                        tx.insert_event(&app.app.id, now, "api", &why)?;
                        logs.push((app.app.name.clone(), "api".into(), why));
                    }
                }
                Ok(())
            })?;
            for app in apps.iter_mut().filter(|a| idle.contains(&a.app.id)) {
                app.eco_sleeps = true;
            }
        }
        let host_views = self.host_views(&hosts, now);
        self.note_lost(&host_views);
        let lost: HashSet<&str> = host_views
            .iter()
            .filter(|h| h.lost)
            .map(|h| h.name.as_str())
            .collect();
        let plan = manager::plan(&View {
            apps: &apps,
            dynos: &dynos,
            hosts: &host_views,
            now_ms: now,
            cycle: self.config.cycle,
        });
        logs.extend(plan.notes.iter().cloned());
        self.note_unplaced(&plan.unplaced);
        if !plan.actions.is_empty() {
            let apps_by_id: HashMap<&str, &AppView> =
                apps.iter().map(|a| (a.app.id.as_str(), a)).collect();
            let dynos_by_id: HashMap<&str, &DynoRow> =
                dynos.iter().map(|d| (d.id.as_str(), d)).collect();
            let grace_ms = self.config.stop_grace.as_millis() as u64;
            store.transaction(|tx| {
                for action in &plan.actions {
                    match action {
                        Action::Create {
                            app_id,
                            process_type,
                            idx,
                            size,
                            host,
                        } => {
                            let app = apps_by_id[app_id.as_str()];
                            let release = app.release.as_ref().expect("planned apps have releases");
                            let command = process_type
                                .parse()
                                .ok()
                                .and_then(|t| release.procfile.command(&t).map(str::to_string))
                                .unwrap_or_default();
                            let row = DynoRow::new(store::NewDyno {
                                id: new_id("d-"),
                                app: &app.app,
                                process_type: process_type.clone(),
                                idx: *idx,
                                release: release.version,
                                host: host.clone(),
                                size: *size,
                                command,
                                one_off: false,
                                now,
                            });
                            tx.insert_dyno(&row)?;
                            outbox.push((
                                host.clone(),
                                CoordinatorMsg::StartDyno(self.spec_for(&row, release, &checks)),
                            ));
                        }
                        Action::Start { dyno_id, host } => {
                            let mut row = dynos_by_id[dyno_id.as_str()].clone();
                            let Some(release) = apps_by_id
                                .get(row.app_id.as_str())
                                .and_then(|a| a.release.clone())
                            else {
                                continue;
                            };
                            let why = if let Some(old) =
                                row.host.as_deref().filter(|h| lost.contains(h))
                            {
                                Some(format!("Host {old} lost; starting on {host}"))
                            } else if row.state == DynoState::Crashed {
                                Some(format!(
                                    "Restarting after crash ({} in a row)",
                                    row.restarts
                                ))
                            } else {
                                None
                            };
                            if let Some(why) = why {
                                tx.insert_event(&row.app_id, now, &row.name(), &why)?;
                                logs.push((row.app.clone(), row.name(), why));
                            }
                            row.generation += 1;
                            row.desired = Desired::Run;
                            row.healthy = true;
                            row.port = None;
                            row.up_since = None;
                            row.host = Some(host.clone());
                            row.state = DynoState::Starting;
                            row.updated_at = now;
                            row.next_start_at = None;
                            tx.update_dyno(&row)?;
                            outbox.push((
                                host.clone(),
                                CoordinatorMsg::StartDyno(self.spec_for(&row, &release, &checks)),
                            ));
                        }
                        Action::Stop { dyno_id } | Action::Sleep { dyno_id } => {
                            let mut row = dynos_by_id[dyno_id.as_str()].clone();
                            if matches!(action, Action::Sleep { .. }) {
                                let owner = apps_by_id
                                    .get(row.app_id.as_str())
                                    .map_or("default", |a| a.app.owner.as_str());
                                let idling = idle.contains(&row.app_id)
                                    || sleeping.get(&row.app_id) == Some(&false);
                                let why = if idling {
                                    "Sleeping until the next request".to_string()
                                } else {
                                    format!(
                                        "Sleeping: the eco dyno hours of {owner} are used up for {month}"
                                    )
                                };
                                tx.insert_event(&row.app_id, now, &row.name(), &why)?;
                                logs.push((row.app.clone(), row.name(), why));
                                row.desired = Desired::Sleep;
                            } else {
                                row.desired = Desired::Stop;
                            }
                            row.updated_at = now;
                            tx.update_dyno(&row)?;
                            if let Some(h) = &row.host {
                                outbox.push((
                                    h.clone(),
                                    CoordinatorMsg::StopDyno {
                                        dyno_id: row.id.clone(),
                                        grace_ms,
                                    },
                                ));
                            }
                        }
                        Action::Forget { dyno_id } => {
                            self.stats.forget(dyno_id);
                            if let Some(d) = dynos_by_id.get(dyno_id.as_str())
                                && d.one_off
                                && d.state.is_running()
                            {
                                // Only a lost host forgets a running one-off: its client learns.
                                finished.push((d.app.clone(), d.name()));
                                if d.process_type == RELEASE_TYPE {
                                    lost_phases.push((d.app_id.clone(), d.app.clone(), d.release));
                                }
                            }
                            tx.delete_dyno(dyno_id, now)?
                        }
                    }
                }
                Ok(())
            })?;
        }
        drop(store);
        for (app, process, msg) in logs {
            self.system_log(&app, &process, msg);
        }
        for (app, name) in finished {
            self.finish_run(&app, &name, -1);
        }
        for (app_id, app, version) in lost_phases {
            self.finish_release_phase(
                &app_id,
                &app,
                version,
                "was lost with its host".into(),
                false,
            )?;
        }
        self.send_after_drain(outbox)
    }

    /// Sends `msgs` so that a stopping web dyno leaves the router before it gets SIGTERM, and
    /// gets it once the requests it was serving are done (within DRAIN_WITHIN): stopping fails
    /// no request that could have gone elsewhere. Everything but stops goes at once.
    pub(crate) fn send_after_drain(
        &self,
        msgs: Vec<(String, CoordinatorMsg)>,
    ) -> Result<(), StoreError> {
        // Most passes stop nothing: no snapshot of the table for them.
        let stopping = msgs
            .iter()
            .any(|(_, m)| matches!(m, CoordinatorMsg::StopDyno { .. }));
        let before = stopping.then(|| self.routes.snapshot());
        let refreshed = self.refresh_routes();
        let draining = before.map(|b| self.routes.draining(b)).unwrap_or_default();
        let mut deferred = Vec::new();
        for (host, msg) in msgs {
            // Only while requests drain; then stops of other dynos wait for them too (briefly).
            if matches!(msg, CoordinatorMsg::StopDyno { .. }) && !draining.is_empty() {
                if let Some(c) = self.agents.lock().expect("agents lock").get(&host) {
                    deferred.push((c.tx.clone(), msg));
                }
            } else if !self.send(&host, msg) {
                tracing::debug!(host, "agent went away before a message reached it");
            }
        }
        if !deferred.is_empty() {
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                while draining.in_flight() > 0 && start.elapsed() < DRAIN_WITHIN {
                    std::thread::sleep(Duration::from_millis(5));
                }
                for (tx, msg) in deferred {
                    let _ = tx.send(msg);
                }
            });
        }
        refreshed
    }

    fn note_unplaced(&self, unplaced: &[String]) {
        let mut seen = self.unplaced.lock().expect("unplaced lock");
        let now: HashSet<String> = unplaced.iter().cloned().collect();
        for u in now.difference(&seen) {
            tracing::warn!(dyno = %u, "no connected host has room for this dyno");
            if let Some((app, rest)) = u.split_once(' ') {
                self.system_log(
                    app,
                    "manager",
                    format!("Cannot place {rest}: no connected host has room for it"),
                );
            }
        }
        *seen = now;
    }

    /// Web dynos that are up, wanted and on a connected host, per app.
    pub fn refresh_routes(&self) -> Result<(), StoreError> {
        let (apps, dynos, hosts, domains, concurrency, sleeping) = self.store().read(|r| {
            Ok((
                r.apps()?,
                r.dynos()?,
                r.hosts()?,
                r.domains()?,
                r.concurrency()?,
                r.sleeping_apps()?,
            ))
        })?;
        // Dynos of an away host keep their routes: its agent is gone for a blip, they may well
        // still serve (the router retries elsewhere when they do not).
        let live = self.liveness(&hosts, now_ms());
        let addresses: HashMap<&str, &str> = hosts
            .iter()
            .filter(|h| !matches!(live.get(&h.name), Some(Liveness::Lost) | None))
            .map(|h| match live.get(&h.name) {
                Some(Liveness::Connected { address }) => (h.name.as_str(), address.as_str()),
                _ => (h.name.as_str(), h.address.as_str()),
            })
            .collect();
        let mut table: BTreeMap<String, Vec<Backend>> =
            apps.iter().map(|a| (a.name.clone(), Vec::new())).collect();
        for d in &dynos {
            if d.process_type != "web"
                || d.one_off
                || d.desired != Desired::Run
                || d.state != DynoState::Up
                || !d.healthy
            {
                continue;
            }
            let (Some(host), Some(port)) = (&d.host, d.port) else {
                continue;
            };
            let Some(address) = addresses.get(host.as_str()) else {
                continue;
            };
            let Ok(ip) = address.parse::<std::net::IpAddr>() else {
                continue;
            };
            if let Some(list) = table.get_mut(&d.app) {
                list.push(Backend {
                    dyno: d.name(),
                    addr: SocketAddr::new(ip, port),
                });
            }
        }
        // Backends first: a request waiting for a booting dyno must get it, not the H14 that
        // the app's no-backends answer turns to once that dyno is no longer starting.
        let now: HashSet<String> = table.keys().cloned().collect();
        {
            let mut routed = self.routed.lock().expect("routed lock");
            for stale in routed.difference(&now) {
                self.routes.remove_app(stale);
            }
            *routed = now;
        }
        for (app, backends) in table {
            self.routes.set_backends(&app, backends);
        }
        for app in &apps {
            self.routes.set_maintenance(&app.name, app.maintenance);
            self.routes
                .set_concurrency(&app.name, concurrency.get(&app.id).copied());
            self.routes.set_domains(
                &app.name,
                domains
                    .iter()
                    .filter(|(_, a)| *a == app.id)
                    .map(|(h, _)| h.clone())
                    .collect(),
            );
            // What a request gets while no web dyno is up: wait for a booting one (H20 after the
            // boot timeout), H10 when they all crashed, else H14.
            let web: Vec<&DynoRow> = dynos
                .iter()
                .filter(|d| {
                    d.app_id == app.id
                        && d.process_type == "web"
                        && !d.one_off
                        && d.desired == Desired::Run
                })
                .collect();
            let why = if sleeping.contains_key(&app.id) {
                dyno_router::NoBackends::Asleep
            } else if web.iter().any(|d| d.state == DynoState::Starting) {
                dyno_router::NoBackends::Booting
            } else if !web.is_empty() && web.iter().all(|d| d.state == DynoState::Crashed) {
                dyno_router::NoBackends::Crashed
            } else {
                dyno_router::NoBackends::NotRunning
            };
            self.routes.set_no_backends(&app.name, why);
        }
        Ok(())
    }

    /// Queues an agent's report of one dyno for the status applier, which applies everything
    /// queued in one transaction: a flood of reports costs one commit, not one each.
    pub fn queue_status(&self, host: &str, s: DynoStatus) {
        self.statuses
            .lock()
            .expect("statuses lock")
            .push((host.to_string(), s));
        self.status_ready.notify_one();
    }

    /// Applies what `queue_status` collected, then tells agents about dynos no longer wanted.
    pub fn apply_queued_statuses(&self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut *self.statuses.lock().expect("statuses lock"));
        if batch.is_empty() {
            return Ok(());
        }
        let replies = self.apply_statuses(&batch)?;
        for (host, msg) in replies {
            self.send(&host, msg);
        }
        self.refresh_routes()?;
        self.wake();
        Ok(())
    }

    /// Applies agents' reports of dynos (host, status) in one transaction, in order. Returns
    /// messages for agents whose dynos the coordinator no longer wants.
    fn apply_statuses(
        &self,
        batch: &[(String, DynoStatus)],
    ) -> Result<Vec<(String, CoordinatorMsg)>, StoreError> {
        let grace_ms = self.config.stop_grace.as_millis() as u64;
        let now = now_ms();
        let policy = &self.config.restart;
        let mut finished_runs: Vec<(String, String, i32)> = Vec::new();
        // Release phases that ended: (app id, app, version, exit code).
        let mut phases: Vec<(String, String, u32, Option<i32>)> = Vec::new();
        for (_, s) in batch {
            if !s.state.is_running() {
                self.stats.forget(&s.dyno_id);
            }
        }
        let replies = self.store().transaction(|tx| {
            let mut replies = Vec::new();
            for (host, s) in batch {
                let stop = || {
                    (
                        host.clone(),
                        CoordinatorMsg::StopDyno {
                            dyno_id: s.dyno_id.clone(),
                            grace_ms,
                        },
                    )
                };
                let Some(mut d) = tx.dyno(&s.dyno_id)? else {
                    if s.state.is_running() {
                        replies.push(stop());
                    }
                    continue;
                };
                if d.host.as_deref() != Some(host.as_str()) {
                    // A stale report from a host the dyno was moved off.
                    if s.state.is_running() {
                        replies.push(stop());
                    }
                    continue;
                }
                if s.generation != 0 && s.generation < d.generation && !s.state.is_running() {
                    // How an earlier start ended, arriving after the next start was ordered.
                    continue;
                }
                // A sleeping eco dyno that stopped is idle, not down.
                let new_state = if !s.state.is_running() && d.desired == Desired::Sleep {
                    DynoState::Idle
                } else {
                    s.state
                };
                if d.state != new_state {
                    let why = s
                        .reason
                        .as_deref()
                        .map_or(String::new(), |r| format!(" ({r})"));
                    tx.insert_event(
                        &d.app_id,
                        now,
                        &d.name(),
                        &format!(
                            "State changed from {} to {}{why}",
                            d.state.as_str(),
                            new_state.as_str()
                        ),
                    )?;
                }
                let done = !s.state.is_running();
                // Billing stops when the agent saw the dyno stop, which a reconnecting agent
                // reports late.
                let stopped_at = (s.at / 1000).min(now);
                if done && s.state != DynoState::Crashed {
                    tx.close_usage(&d.id, stopped_at)?;
                }
                if done && (d.desired == Desired::Stop || d.one_off) {
                    if d.one_off {
                        finished_runs.push((d.app.clone(), d.name(), s.exit_code.unwrap_or(-1)));
                        if d.process_type == RELEASE_TYPE {
                            phases.push((d.app_id.clone(), d.app.clone(), d.release, s.exit_code));
                        }
                    }
                    tx.delete_dyno(&d.id, stopped_at)?;
                    continue;
                }
                let previous = d.state;
                d.state = new_state;
                d.updated_at = now;
                if s.port.is_some() {
                    d.port = s.port;
                }
                d.exit_code = s.exit_code;
                d.reason = s.reason.clone();
                d.healthy = s.healthy || !s.state.is_running();
                match new_state {
                    DynoState::Up if previous != DynoState::Up => d.up_since = Some(now),
                    DynoState::Crashed => {
                        d.restarts = policy.count_after_crash(d.restarts, d.up_since, now);
                        d.next_start_at = Some(now + policy.delay(d.restarts).as_millis() as i64);
                        d.up_since = None;
                    }
                    DynoState::Down | DynoState::Idle => d.up_since = None,
                    _ => {}
                }
                tx.update_dyno(&d)?;
                if s.state.is_running() && matches!(d.desired, Desired::Stop | Desired::Sleep) {
                    replies.push(stop());
                }
            }
            Ok(replies)
        })?;
        for (app, name, code) in finished_runs {
            self.finish_run(&app, &name, code);
        }
        for (app_id, app, version, code) in phases {
            let how = match code {
                Some(c) => format!("exited with status {c}"),
                None => "was stopped".to_string(),
            };
            self.finish_release_phase(&app_id, &app, version, how, code == Some(0))?;
        }
        Ok(replies)
    }

    /// Runs a pending release's `release` command as a one-off dyno (`release.N` for vN); the
    /// release goes live if it exits 0 and fails otherwise, leaving the running one live.
    pub fn start_release_phase(
        &self,
        app: &store::AppRow,
        release: &store::ReleaseRow,
    ) -> Result<(), StoreError> {
        let command = release
            .procfile
            .command(&RELEASE_TYPE.parse().expect("a valid process type"))
            .unwrap_or_default()
            .to_string();
        let now = now_ms();
        let row = self.store().transaction(|tx| {
            let dynos = tx.dynos()?;
            let hosts = self.host_views(&tx.hosts()?, now);
            let size = dyno_shared::Size::default();
            let Some(host) = manager::place_one(&hosts, &dynos, &app.id, RELEASE_TYPE, size) else {
                return Ok(None);
            };
            let row = DynoRow::new(store::NewDyno {
                id: new_id("d-"),
                app,
                process_type: RELEASE_TYPE.to_string(),
                idx: release.version,
                release: release.version,
                host,
                size,
                command: command.clone(),
                one_off: true,
                now,
            });
            tx.insert_dyno(&row)?;
            Ok(Some(row))
        })?;
        let Some(row) = row else {
            return self.finish_release_phase(
                &app.id,
                &app.name,
                release.version,
                "no connected host has room for the release phase".into(),
                false,
            );
        };
        self.system_log(
            &app.name,
            &row.name(),
            format!("Release phase of v{}: running `{command}`", release.version),
        );
        let host = row.host.clone().unwrap_or_default();
        // Not sent: the host went away; the manager forgets the dyno once the host is lost,
        // which fails the release.
        self.send(
            &host,
            CoordinatorMsg::StartDyno(self.spec_for(&row, release, &HashMap::new())),
        );
        Ok(())
    }

    /// Settles a pending release by how its release phase ended.
    fn finish_release_phase(
        &self,
        app_id: &str,
        app: &str,
        version: u32,
        how: String,
        ok: bool,
    ) -> Result<(), StoreError> {
        let status = if ok { "succeeded" } else { "failed" };
        let message = self.store().transaction(|tx| {
            tx.set_release_status(app_id, version, status)?;
            let live = tx.current_release(app_id)?.map(|r| r.version);
            let message = if ok {
                format!("Release v{version} is live: its release phase {how}")
            } else {
                let live = live.map_or("no release".to_string(), |v| format!("v{v}"));
                format!("Release v{version} failed: its release phase {how}; {live} stays live")
            };
            tx.insert_event(app_id, now_ms(), "api", &message)?;
            Ok(message)
        })?;
        if ok {
            tracing::info!(app, version, "release phase succeeded");
        } else {
            tracing::warn!(app, version, how, "release phase failed");
        }
        self.system_log(app, "api", message);
        self.wake();
        Ok(())
    }

    fn finish_run(&self, app: &str, name: &str, code: i32) {
        if let Some(tx) = self
            .runs
            .lock()
            .expect("runs lock")
            .remove(&(app.to_string(), name.to_string()))
        {
            let _ = tx.try_send(RunEvent::Exit { code });
        }
    }

    /// Lines for an attached one-off dyno also go to its client.
    pub fn ingest_logs(&self, lines: Vec<LogLine>) {
        {
            let runs = self.runs.lock().expect("runs lock");
            if !runs.is_empty() {
                for line in &lines {
                    if line.source == LogSource::App
                        && let Some(tx) = runs.get(&(line.app.clone(), line.process.clone()))
                    {
                        // A client that cannot keep up loses lines here; the dyno never waits.
                        let _ = tx.try_send(RunEvent::Line { line: line.clone() });
                    }
                }
            }
        }
        self.logs.push_all(lines);
    }
}

/// Runs the coordinator until `shutdown` resolves: control API and agent websocket on `api`,
/// the routing mesh on `router`.
/// Creates a token straight in the store under `state_dir` (the coordinator may be running:
/// SQLite serialises the writers). Returns its secret.
pub fn create_token(
    state_dir: &std::path::Path,
    name: &str,
    role: &str,
) -> Result<String, CoordinatorError> {
    let invalid = |m: String| CoordinatorError::Token(m);
    if !auth::valid_token_name(name) || name == "root" {
        return Err(invalid(format!(
            "invalid token name {name:?}: use 1-64 letters, digits, '-', '_', '.' or '@' (not root)"
        )));
    }
    let role = match auth::Role::parse(role) {
        Some(r @ (auth::Role::Operate | auth::Role::Read | auth::Role::Join)) => r,
        _ => return Err(invalid(format!("invalid role {role:?}"))),
    };
    std::fs::create_dir_all(state_dir).map_err(|source| CoordinatorError::StateDir {
        path: state_dir.display().to_string(),
        source,
    })?;
    let mut store = Store::open(&state_dir.join("state.db"))?;
    let secret = auth::new_secret(role).map_err(|e| invalid(e.to_string()))?;
    let row = store::TokenRow {
        name: name.to_string(),
        role: role.as_str().into(),
        hash: auth::hash(&secret),
        host: None,
        created_at: now_ms(),
        revoked_at: None,
    };
    if !store.transaction(|tx| tx.insert_token(&row))? {
        return Err(invalid(format!("a token named {name:?} exists")));
    }
    Ok(secret)
}

fn load_pricing(path: Option<&std::path::Path>) -> Result<billing::PriceTable, CoordinatorError> {
    let config = match path {
        Some(p) => billing::CoordinatorConfig::load(p)?,
        None => billing::CoordinatorConfig::default(),
    };
    Ok(config.pricing.resolve()?)
}

/// Records `table` as in effect from now unless it already is; true when it is new.
fn record_pricing(store: &mut Store, table: &billing::PriceTable) -> Result<bool, StoreError> {
    let spec = serde_json::to_string(table).expect("a price table serializes");
    store.transaction(|tx| tx.record_pricing(&spec, now_ms()))
}

pub async fn run(
    config: CoordinatorConfig,
    api: TcpListener,
    router: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let router_port = router.local_addr().map_err(CoordinatorError::Serve)?.port();
    let inner = Inner::open(config, router_port)?;
    serve(inner, api, router, shutdown).await
}

pub async fn serve(
    inner: Shared,
    api: TcpListener,
    router: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    inner.refresh_routes()?;
    inner.start_stored_drains()?;
    // Requests for sleeping apps wake them, off the router's path.
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<String>();
    inner.routes.set_waker(move |app| {
        let _ = wake_tx.send(app.to_string());
    });
    let waker = inner.clone();
    tokio::spawn(async move {
        while let Some(app) = wake_rx.recv().await {
            let w = waker.clone();
            match tokio::task::spawn_blocking(move || w.wake_app(&app)).await {
                Ok(Err(e)) => tracing::error!(error = %e, "failed to wake an app"),
                Err(e) => tracing::error!(error = %e, "waking an app panicked"),
                Ok(Ok(())) => {}
            }
        }
    });
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let reloader = inner.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => {}
                    _ = stop.changed() => break,
                }
                let r = reloader.clone();
                match tokio::task::spawn_blocking(move || r.reload_pricing()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("config not reloaded, pricing unchanged: {e}"),
                    Err(e) => tracing::error!("config reload failed: {e}"),
                }
            }
        });
    }
    tokio::spawn(stream::watch(inner.clone(), stop_rx.clone()));
    tokio::spawn(metrics::run(
        inner.clone(),
        inner.config.metrics_interval,
        stop_rx.clone(),
    ));

    // Router log lines come in batches (a few milliseconds' worth from each router worker).
    let (log_tx, mut log_rx) = mpsc::channel::<Vec<LogLine>>(1024);
    let hub = inner.clone();
    tokio::spawn(async move {
        while let Some(batch) = log_rx.recv().await {
            for line in batch {
                hub.logs.push(line);
            }
        }
    });
    let router_config = RouterConfig {
        domain: inner.config.domain.clone(),
        tls: inner.config.tls.clone(),
        metrics_listen: inner.config.metrics_listen,
        ..RouterConfig::default()
    };
    let router_task = tokio::spawn(dyno_router::run(
        router,
        inner.routes.clone(),
        router_config,
        Some(log_tx),
        wait_for(stop_rx.clone()),
    ));

    let applier = inner.clone();
    let mut applier_stop = stop_rx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = applier.status_ready.notified() => {}
                _ = applier_stop.changed() => break,
            }
            let a = applier.clone();
            match tokio::task::spawn_blocking(move || a.apply_queued_statuses()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "failed to record dyno states"),
                Err(e) => tracing::error!(error = %e, "status applier panicked"),
                Ok(Ok(())) => {}
            }
        }
    });

    let manager = inner.clone();
    let mut manager_stop = stop_rx.clone();
    let manager_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(manager.config.reconcile_interval);
        loop {
            let loss = manager
                .next_loss_at()
                .map_or(Duration::from_secs(3600), |t| {
                    // A millisecond late, so the host is past the threshold when we look.
                    Duration::from_millis((t - now_ms()).max(0) as u64 + 1)
                });
            tokio::select! {
                _ = tick.tick() => {}
                _ = manager.wake.notified() => {}
                _ = tokio::time::sleep(loss) => {}
                _ = manager_stop.changed() => break,
            }
            let m = manager.clone();
            match tokio::task::spawn_blocking(move || m.reconcile()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "dyno manager pass failed"),
                Err(e) => tracing::error!(error = %e, "dyno manager pass panicked"),
                Ok(Ok(())) => {}
            }
        }
    });

    let rendezvous_addr = match inner.config.rendezvous_listen {
        Some(a) => a,
        None => SocketAddr::new(api.local_addr().map_err(CoordinatorError::Serve)?.ip(), 0),
    };
    let rendezvous = TcpListener::bind(rendezvous_addr)
        .await
        .map_err(CoordinatorError::Serve)?;
    // Always TLS (the heroku CLI insists): the API's certificate, else the self-made one.
    let rendezvous_tls = match inner.api_tls.as_ref() {
        Some(t) => t.server.clone(),
        None => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            names.extend(inner.config.api_tls_names.iter().cloned());
            tls::self_made(&inner.config.state_dir.join("tls"), &names)?.server
        }
    };
    tracing::info!(addr = %rendezvous.local_addr().map_err(CoordinatorError::Serve)?, "run rendezvous listening");
    tokio::spawn(rendezvous::serve(
        inner.rendezvous.clone(),
        rendezvous,
        rendezvous_tls,
        stop_rx.clone(),
    ));
    let app = api::router(inner.clone(), stop_rx.clone());
    tracing::info!(api = %api.local_addr().map_err(CoordinatorError::Serve)?, router_port = inner.router_port, "coordinator listening");
    use axum::serve::ListenerExt;
    match inner.api_tls.as_ref() {
        Some(t) => {
            tracing::info!(fingerprint = %t.pin, "the API speaks TLS; clients pin this fingerprint");
            let listener = conns::Limited::new(
                tls::TlsListener::spawn(api, t.server.clone()).map_err(CoordinatorError::Serve)?,
                inner.config.max_connections,
            )
            // TapIo gives the listener axum's ConnectInfo<SocketAddr>.
            .tap_io(|_| {});
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(wait_for(stop_rx))
            .await
            .map_err(CoordinatorError::Serve)?;
        }
        None => {
            // Without TCP_NODELAY a log line written alone waits for the client's delayed ACK
            // (~40 ms).
            let api = conns::Limited::new(api, inner.config.max_connections).tap_io(|conn| {
                if let Err(e) = conn.get_mut().set_nodelay(true) {
                    tracing::debug!(error = %e, "failed to set TCP_NODELAY");
                }
            });
            axum::serve(api, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(wait_for(stop_rx))
                .await
                .map_err(CoordinatorError::Serve)?;
        }
    }
    let _ = manager_task.await;
    match router_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "router failed"),
        Err(e) => tracing::error!(error = %e, "router task panicked"),
        Ok(Ok(())) => {}
    }
    // The last lines of a clean stop are on disk before the process exits.
    let writer = inner.log_writer.clone();
    let synced = tokio::task::spawn_blocking(move || writer.sync(Duration::from_secs(5))).await;
    if !matches!(synced, Ok(true)) {
        tracing::warn!("the last log lines may not have been persisted");
    }
    Ok(())
}

pub async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
