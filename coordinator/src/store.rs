//! The coordinator's state in SQLite (WAL, foreign keys on, migrations by `user_version`).
//! This module (with `store::logs`, the persisted log rings) is the only one that touches
//! rusqlite; everything it returns is plain data.

pub mod audit;
pub mod logs;

use dyno_shared::protocol::{DynoState, HealthCheck};
use dyno_shared::{ConfigVars, Formation, FormationEntry, ProcessType, Procfile, Size};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the store at {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store holds malformed data in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("store schema version {0} is newer than this coordinator understands")]
    TooNew(i64),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Each entry moves the schema from version i to i+1; never edit a released entry.
/// Events kept per app (a few dozen more until the next trim).
pub const EVENTS_PER_APP: usize = 1000;
const EVENTS_TRIM_EVERY: i64 = 64;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    maintenance INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE releases (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    slug TEXT,
    procfile TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, version)
);
CREATE TABLE formation (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    process_type TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    size TEXT NOT NULL,
    PRIMARY KEY (app_id, process_type)
);
CREATE TABLE config_vars (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (app_id, key)
);
-- Dynos outlive their app's row while they stop, so no foreign key here.
CREATE TABLE dynos (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    app TEXT NOT NULL,
    process_type TEXT NOT NULL,
    idx INTEGER NOT NULL,
    release INTEGER NOT NULL,
    host TEXT,
    state TEXT NOT NULL,
    desired TEXT NOT NULL,
    port INTEGER,
    size TEXT NOT NULL,
    command TEXT NOT NULL,
    one_off INTEGER NOT NULL,
    exit_code INTEGER,
    reason TEXT,
    restarts INTEGER NOT NULL DEFAULT 0,
    next_start_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    up_since INTEGER
);
CREATE UNIQUE INDEX dynos_app_name ON dynos(app_id, process_type, idx);
CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    memory_mb INTEGER NOT NULL,
    cpus INTEGER NOT NULL,
    isolation TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE log_drains (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (app_id, url)
);
CREATE TABLE app_features (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, name)
);
"#,
    r#"
ALTER TABLE dynos ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
"#,
    r#"
ALTER TABLE hosts ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
-- A slot has two rows while a replacement boots beside the dyno it replaces (drain, preboot).
DROP INDEX dynos_app_name;
CREATE INDEX dynos_app_slot ON dynos(app_id, process_type, idx);
"#,
    r#"
-- pending while its release phase runs; only a succeeded release is ever current.
ALTER TABLE releases ADD COLUMN status TEXT NOT NULL DEFAULT 'succeeded';
ALTER TABLE dynos ADD COLUMN healthy INTEGER NOT NULL DEFAULT 1;
ALTER TABLE hosts ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
-- A process type whose dynos go only to hosts with this label.
CREATE TABLE requirements (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    process_type TEXT NOT NULL,
    label_key TEXT NOT NULL,
    label_value TEXT NOT NULL,
    PRIMARY KEY (app_id, process_type)
);
-- Requests a web dyno of the app takes at once (NULL: no limit); more wait at the router.
ALTER TABLE apps ADD COLUMN web_concurrency INTEGER;
CREATE TABLE domains (
    hostname TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
-- What happened to an app's dynos and releases, newest kept (EVENTS_PER_APP per app).
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    dyno TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_app ON events(app_id, seq);
CREATE TABLE checks (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    process_type TEXT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (app_id, process_type)
);
"#,
    r#"
-- Who pays for an app; eco dynos share one pool of hours per owner.
ALTER TABLE apps ADD COLUMN owner TEXT NOT NULL DEFAULT 'default';
-- Wall-clock time each dyno existed (starting, up, crashed) at one size, for billing. Written in
-- the transaction that changes the dyno's state; outlives the app (no foreign key).
CREATE TABLE usage (
    seq INTEGER PRIMARY KEY,
    dyno_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    app TEXT NOT NULL,
    owner TEXT NOT NULL,
    process_type TEXT NOT NULL,
    dyno TEXT NOT NULL,
    size TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER
);
-- At most one open interval per dyno: a reconnecting agent's reports never count twice.
CREATE UNIQUE INDEX usage_open ON usage(dyno_id) WHERE ended_at IS NULL;
CREATE INDEX usage_ended ON usage(ended_at);
CREATE INDEX usage_eco ON usage(ended_at) WHERE size = 'eco';
-- Every price table the coordinator applied, from the moment it took effect.
CREATE TABLE pricing (
    seq INTEGER PRIMARY KEY,
    effective_from INTEGER NOT NULL,
    spec TEXT NOT NULL
);
"#,
    r#"
-- API tokens, stored as the sha256 of their secret. Revoked ones stay, so their names do too.
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    host TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX tokens_host ON tokens(host) WHERE host IS NOT NULL;
"#,
    r#"
-- Apps whose eco dynos sleep for want of requests, until the next one arrives; `waking`
-- from that request until their web dynos are starting (requests keep waiting meanwhile).
CREATE TABLE sleeping_apps (
    app_id TEXT PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    since INTEGER NOT NULL,
    waking INTEGER NOT NULL DEFAULT 0
);
"#,
    r#"
-- The token that made each release (its name); NULL for releases made before this was kept.
ALTER TABLE releases ADD COLUMN made_by TEXT;
"#,
];

/// One row of an app's events, with the app's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub seq: i64,
    pub app: String,
    /// Unix ms.
    pub at: i64,
    pub dyno: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub name: String,
    /// `operate`, `read`, `join` or `agent`.
    pub role: String,
    /// sha256 hex of the secret.
    pub hash: String,
    /// The host an `agent` credential belongs to.
    pub host: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

fn token_from_row(r: &Row) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        name: r.get(0)?,
        role: r.get(1)?,
        hash: r.get(2)?,
        host: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub maintenance: bool,
    /// Who pays (`default` unless named at creation).
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseRow {
    pub app_id: String,
    pub version: u32,
    pub description: String,
    pub slug: Option<String>,
    pub procfile: Procfile,
    pub config: ConfigVars,
    pub created_at: i64,
    /// `pending` (its release phase runs), `succeeded` or `failed`.
    pub status: String,
    /// The name of the token that made it, when known.
    pub made_by: Option<String>,
}

/// What the coordinator wants of a dyno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Run,
    /// Stop it; the row goes once the agent reports it down.
    Stop,
    /// Stop it and keep the row as `idle`: an eco dyno whose owner's hour pool ran out.
    Sleep,
}

impl Desired {
    fn as_str(self) -> &'static str {
        match self {
            Desired::Run => "run",
            Desired::Stop => "stop",
            Desired::Sleep => "sleep",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DynoRow {
    pub id: String,
    pub app_id: String,
    pub app: String,
    pub process_type: String,
    pub idx: u32,
    pub release: u32,
    pub host: Option<String>,
    pub state: DynoState,
    pub desired: Desired,
    pub port: Option<u16>,
    pub size: Size,
    pub command: String,
    pub one_off: bool,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub restarts: u32,
    /// Unix ms before which a crashed dyno is not restarted.
    pub next_start_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub up_since: Option<i64>,
    /// Starts so far, counting this one: a report from an earlier start is stale.
    pub generation: u32,
    /// False while its agent reports it failing its health check: out of the router.
    pub healthy: bool,
}

/// Who a new dyno is: everything else starts out the same for every new dyno.
pub struct NewDyno<'a> {
    pub id: String,
    pub app: &'a AppRow,
    pub process_type: String,
    pub idx: u32,
    pub release: u32,
    pub host: String,
    pub size: Size,
    pub command: String,
    pub one_off: bool,
    /// Unix ms.
    pub now: i64,
}

impl DynoRow {
    /// A dyno about to be started: `starting`, wanted, no crashes yet.
    pub fn new(n: NewDyno) -> DynoRow {
        DynoRow {
            id: n.id,
            app_id: n.app.id.clone(),
            app: n.app.name.clone(),
            process_type: n.process_type,
            idx: n.idx,
            release: n.release,
            host: Some(n.host),
            state: DynoState::Starting,
            desired: Desired::Run,
            port: None,
            size: n.size,
            command: n.command,
            one_off: n.one_off,
            exit_code: None,
            reason: None,
            restarts: 0,
            next_start_at: None,
            created_at: n.now,
            updated_at: n.now,
            up_since: None,
            generation: 1,
            healthy: true,
        }
    }

    pub fn name(&self) -> String {
        format!("{}.{}", self.process_type, self.idx)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub name: String,
    pub address: String,
    pub memory_mb: u64,
    pub cpus: u32,
    pub isolation: String,
    pub agent_version: String,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Set by an operator (`hosts:drain`); an agent's hello never changes it.
    pub drained: bool,
    /// From the agent's `--label KEY=VALUE` flags, as of its last hello.
    pub labels: BTreeMap<String, String>,
}

/// A log drain of an app (`app` is its name, joined from `apps`).
#[derive(Debug, Clone, PartialEq)]
pub struct DrainRow {
    pub id: String,
    pub app_id: String,
    pub app: String,
    pub url: String,
    pub token: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An app feature (`labs`) someone switched on or off.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    pub name: String,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

pub struct Store {
    conn: Connection,
}

fn parse_state(s: &str) -> Result<DynoState> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| {
        StoreError::Corrupt {
            what: "dynos.state",
            detail: e.to_string(),
        }
    })
}

fn parse_size(s: &str) -> Result<Size> {
    s.parse()
        .map_err(|e: dyno_shared::size::UnknownSize| StoreError::Corrupt {
            what: "size",
            detail: e.to_string(),
        })
}

fn from_json<T: for<'de> serde::Deserialize<'de>>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

const DYNO_COLUMNS: &str = "id, app_id, app, process_type, idx, release, host, state, desired, port, size, command, one_off, exit_code, reason, restarts, next_start_at, created_at, updated_at, up_since, generation, healthy";

fn dyno_from_row(r: &Row) -> Result<DynoRow> {
    let state: String = r.get(7)?;
    let desired: String = r.get(8)?;
    let size: String = r.get(10)?;
    Ok(DynoRow {
        id: r.get(0)?,
        app_id: r.get(1)?,
        app: r.get(2)?,
        process_type: r.get(3)?,
        idx: r.get(4)?,
        release: r.get(5)?,
        host: r.get(6)?,
        state: parse_state(&state)?,
        desired: match desired.as_str() {
            "stop" => Desired::Stop,
            "sleep" => Desired::Sleep,
            _ => Desired::Run,
        },
        port: r.get(9)?,
        size: parse_size(&size)?,
        command: r.get(11)?,
        one_off: r.get(12)?,
        exit_code: r.get(13)?,
        reason: r.get(14)?,
        restarts: r.get(15)?,
        next_start_at: r.get(16)?,
        created_at: r.get(17)?,
        updated_at: r.get(18)?,
        up_since: r.get(19)?,
        generation: r.get(20)?,
        healthy: r.get(21)?,
    })
}

fn release_from_row(r: &Row) -> Result<ReleaseRow> {
    let procfile: String = r.get(4)?;
    let config: String = r.get(5)?;
    Ok(ReleaseRow {
        app_id: r.get(0)?,
        version: r.get(1)?,
        description: r.get(2)?,
        slug: r.get(3)?,
        procfile: from_json("releases.procfile", &procfile)?,
        config: from_json("releases.config", &config)?,
        created_at: r.get(6)?,
        status: r.get(7)?,
        made_by: r.get(8)?,
    })
}

fn app_from_row(r: &Row) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        maintenance: r.get(4)?,
        owner: r.get(5)?,
    })
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        // WAL + synchronous=FULL: a committed change survives kill -9 and power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        migrate(&mut self.conn, MIGRATIONS)
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Runs `f` in one transaction: all of its writes land or none do.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Tx) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction()?;
        let out = f(&Tx(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    pub fn read<T>(&self, f: impl FnOnce(&Reader) -> Result<T>) -> Result<T> {
        f(&Reader(&self.conn))
    }
}

/// Brings `conn` to the last of `migrations`, each in its own transaction.
fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version as usize > migrations.len() {
        return Err(StoreError::TooNew(version));
    }
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn drain_from_row(r: &Row) -> rusqlite::Result<DrainRow> {
    Ok(DrainRow {
        id: r.get(0)?,
        app_id: r.get(1)?,
        app: r.get(2)?,
        url: r.get(3)?,
        token: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

const DRAIN_SELECT: &str = "SELECT d.id, d.app_id, a.name, d.url, d.token, d.created_at, d.updated_at FROM log_drains d JOIN apps a ON a.id = d.app_id";

/// Read queries, usable inside and outside transactions.
pub struct Reader<'a>(&'a Connection);

/// Writes, only inside `Store::transaction`.
pub struct Tx<'a>(&'a Transaction<'a>);

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0
    }
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0
    }
}

/// Queries shared by `Reader` and `Tx`.
pub trait Queries: std::ops::Deref<Target = Connection> {
    /// Apps whose eco dynos sleep for want of requests: app id -> waking (a request came).
    fn sleeping_apps(&self) -> Result<HashMap<String, bool>> {
        let mut st = self.prepare_cached("SELECT app_id, waking FROM sleeping_apps")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        Ok(self
            .prepare_cached(
                "SELECT name, role, hash, host, created_at, revoked_at FROM tokens WHERE hash = ?1",
            )?
            .query_row([hash], token_from_row)
            .optional()?)
    }

    fn tokens(&self) -> Result<Vec<TokenRow>> {
        let mut st = self.prepare_cached(
            "SELECT name, role, hash, host, created_at, revoked_at FROM tokens ORDER BY created_at, name",
        )?;
        let rows = st.query_map([], token_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Usage intervals that overlap [from, to) (unix ms), eco ones only if `eco_only`.
    fn usage_between(
        &self,
        from: i64,
        to: i64,
        eco_only: bool,
    ) -> Result<Vec<crate::billing::UsageInterval>> {
        // Two literal queries, so the eco one can use its partial index (the manager runs it
        // every second).
        let mut st = self.prepare_cached(if eco_only {
            "SELECT app_id, app, owner, process_type, dyno, size, started_at, ended_at FROM usage
             WHERE size = 'eco' AND started_at < ?2 AND (ended_at IS NULL OR ended_at > ?1)
             ORDER BY seq"
        } else {
            "SELECT app_id, app, owner, process_type, dyno, size, started_at, ended_at FROM usage
             WHERE started_at < ?2 AND (ended_at IS NULL OR ended_at > ?1)
             ORDER BY seq"
        })?;
        let rows = st.query_map(params![from, to], |r| {
            Ok((
                crate::billing::UsageInterval {
                    app_id: r.get(0)?,
                    app: r.get(1)?,
                    owner: r.get(2)?,
                    process_type: r.get(3)?,
                    dyno: r.get(4)?,
                    size: Size::default(),
                    started_at: r.get(6)?,
                    ended_at: r.get(7)?,
                },
                r.get::<_, String>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (mut iv, size) = row?;
            iv.size = size.parse().map_err(|_| StoreError::Corrupt {
                what: "usage",
                detail: format!("unknown size {size:?}"),
            })?;
            Ok(iv)
        })
        .collect()
    }

    /// Every recorded price table (effective from unix ms, JSON), oldest first.
    fn pricing_history(&self) -> Result<Vec<(i64, String)>> {
        let mut st =
            self.prepare_cached("SELECT effective_from, spec FROM pricing ORDER BY seq")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn apps(&self) -> Result<Vec<AppRow>> {
        let mut st = self.prepare_cached(
            "SELECT id, name, created_at, updated_at, maintenance, owner FROM apps ORDER BY name",
        )?;
        let rows = st.query_map([], app_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn app(&self, name: &str) -> Result<Option<AppRow>> {
        Ok(self
            .prepare_cached(
                "SELECT id, name, created_at, updated_at, maintenance, owner FROM apps WHERE name = ?1",
            )?
            .query_row([name], app_from_row)
            .optional()?)
    }

    fn releases(&self, app_id: &str) -> Result<Vec<ReleaseRow>> {
        let mut st = self.prepare_cached(
            "SELECT app_id, version, description, slug, procfile, config, created_at, status, made_by FROM releases WHERE app_id = ?1 ORDER BY version",
        )?;
        let mut rows = st.query([app_id])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(release_from_row(r)?);
        }
        Ok(out)
    }

    fn current_release(&self, app_id: &str) -> Result<Option<ReleaseRow>> {
        let mut st = self.prepare_cached(
            "SELECT app_id, version, description, slug, procfile, config, created_at, status, made_by FROM releases WHERE app_id = ?1 AND status = 'succeeded' ORDER BY version DESC LIMIT 1",
        )?;
        let mut rows = st.query([app_id])?;
        match rows.next()? {
            Some(r) => Ok(Some(release_from_row(r)?)),
            None => Ok(None),
        }
    }

    /// The app's newest `limit` events, oldest first: (unix ms, dyno or "api", message).
    fn events(&self, app_id: &str, limit: usize) -> Result<Vec<(i64, String, String)>> {
        let mut st = self.prepare_cached(
            "SELECT at, dyno, message FROM (SELECT seq, at, dyno, message FROM events WHERE app_id = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
        )?;
        let rows = st.query_map(params![app_id, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Events of every app after `seq`, oldest first, at most `limit`.
    fn events_after(&self, seq: i64, limit: usize) -> Result<Vec<EventRow>> {
        let mut st = self.prepare_cached(
            "SELECT e.seq, a.name, e.at, e.dyno, e.message FROM events e JOIN apps a ON a.id = e.app_id
             WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![seq, limit as i64], |r| {
            Ok(EventRow {
                seq: r.get(0)?,
                app: r.get(1)?,
                at: r.get(2)?,
                dyno: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn last_event_seq(&self) -> Result<i64> {
        Ok(self.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Every custom domain: (hostname, app id), by hostname.
    fn domains(&self) -> Result<Vec<(String, String)>> {
        let mut st =
            self.prepare_cached("SELECT hostname, app_id FROM domains ORDER BY hostname")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// An app's custom domains and when each was added, by host name.
    fn app_domains(&self, app_id: &str) -> Result<Vec<(String, i64)>> {
        let mut st = self.prepare_cached(
            "SELECT hostname, created_at FROM domains WHERE app_id = ?1 ORDER BY hostname",
        )?;
        let rows = st.query_map([app_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// App id -> its web dynos' concurrency limit, for apps that have one.
    fn concurrency(&self) -> Result<HashMap<String, u32>> {
        let mut st = self.prepare_cached(
            "SELECT id, web_concurrency FROM apps WHERE web_concurrency IS NOT NULL",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every placement requirement: (app id, process type) -> (label key, value).
    fn requirements(&self) -> Result<HashMap<(String, String), (String, String)>> {
        let mut st = self.prepare_cached(
            "SELECT app_id, process_type, label_key, label_value FROM requirements",
        )?;
        let mut rows = st.query([])?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next()? {
            out.insert((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?));
        }
        Ok(out)
    }

    /// Every configured health check: (app id, process type) -> check.
    fn checks(&self) -> Result<HashMap<(String, String), HealthCheck>> {
        let mut st = self.prepare_cached("SELECT app_id, process_type, spec FROM checks")?;
        let mut rows = st.query([])?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next()? {
            let spec: String = r.get(2)?;
            out.insert((r.get(0)?, r.get(1)?), from_json("checks.spec", &spec)?);
        }
        Ok(out)
    }

    /// The highest version of any status: the next release takes the one after it.
    fn last_version(&self, app_id: &str) -> Result<u32> {
        Ok(self.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM releases WHERE app_id = ?1",
            [app_id],
            |r| r.get(0),
        )?)
    }

    fn release(&self, app_id: &str, version: u32) -> Result<Option<ReleaseRow>> {
        let mut st = self.prepare_cached(
            "SELECT app_id, version, description, slug, procfile, config, created_at, status, made_by FROM releases WHERE app_id = ?1 AND version = ?2",
        )?;
        let mut rows = st.query(params![app_id, version])?;
        match rows.next()? {
            Some(r) => Ok(Some(release_from_row(r)?)),
            None => Ok(None),
        }
    }

    fn formation(&self, app_id: &str) -> Result<Formation> {
        let mut st = self.prepare_cached(
            "SELECT process_type, quantity, size FROM formation WHERE app_id = ?1",
        )?;
        let mut rows = st.query([app_id])?;
        let mut f = Formation::default();
        while let Some(r) = rows.next()? {
            let t: String = r.get(0)?;
            let size: String = r.get(2)?;
            let ptype: ProcessType =
                t.parse()
                    .map_err(|e: dyno_shared::NameError| StoreError::Corrupt {
                        what: "formation.process_type",
                        detail: e.to_string(),
                    })?;
            f.entries.insert(
                ptype,
                FormationEntry {
                    quantity: r.get(1)?,
                    size: parse_size(&size)?,
                },
            );
        }
        Ok(f)
    }

    fn config(&self, app_id: &str) -> Result<ConfigVars> {
        let mut st = self.prepare_cached("SELECT key, value FROM config_vars WHERE app_id = ?1")?;
        let rows = st.query_map([app_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(ConfigVars(
            rows.collect::<rusqlite::Result<BTreeMap<_, _>>>()?,
        ))
    }

    /// Dyno rows matching `filter` (SQL after `FROM dynos`).
    fn select_dynos(&self, filter: &str, params: impl rusqlite::Params) -> Result<Vec<DynoRow>> {
        let mut st = self.prepare_cached(&format!("SELECT {DYNO_COLUMNS} FROM dynos {filter}"))?;
        let mut rows = st.query(params)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(dyno_from_row(r)?);
        }
        Ok(out)
    }

    fn dynos(&self) -> Result<Vec<DynoRow>> {
        self.select_dynos("ORDER BY app, process_type, idx", [])
    }

    fn app_dynos(&self, app_id: &str) -> Result<Vec<DynoRow>> {
        self.select_dynos("WHERE app_id = ?1 ORDER BY process_type, idx", [app_id])
    }

    fn dyno(&self, id: &str) -> Result<Option<DynoRow>> {
        Ok(self.select_dynos("WHERE id = ?1", [id])?.pop())
    }

    fn hosts(&self) -> Result<Vec<HostRow>> {
        let mut st = self.prepare_cached(
            "SELECT name, address, memory_mb, cpus, isolation, agent_version, first_seen, last_seen, drained, labels FROM hosts ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok(HostRow {
                name: r.get(0)?,
                address: r.get(1)?,
                memory_mb: r.get::<_, i64>(2)? as u64,
                cpus: r.get(3)?,
                isolation: r.get(4)?,
                agent_version: r.get(5)?,
                first_seen: r.get(6)?,
                last_seen: r.get(7)?,
                drained: r.get(8)?,
                labels: {
                    let l: String = r.get(9)?;
                    serde_json::from_str(&l).unwrap_or_default()
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every drain of every app, oldest first.
    fn all_drains(&self) -> Result<Vec<DrainRow>> {
        let mut st = self.prepare_cached(&format!("{DRAIN_SELECT} ORDER BY d.created_at, d.id"))?;
        let rows = st.query_map([], drain_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn drains(&self, app_id: &str) -> Result<Vec<DrainRow>> {
        let mut st = self.prepare_cached(&format!(
            "{DRAIN_SELECT} WHERE d.app_id = ?1 ORDER BY d.created_at, d.id"
        ))?;
        let rows = st.query_map([app_id], drain_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn features(&self, app_id: &str) -> Result<Vec<FeatureRow>> {
        let mut st = self.prepare_cached(
            "SELECT name, enabled, created_at, updated_at FROM app_features WHERE app_id = ?1 ORDER BY name",
        )?;
        let rows = st.query_map([app_id], |r| {
            Ok(FeatureRow {
                name: r.get(0)?,
                enabled: r.get(1)?,
                created_at: r.get(2)?,
                updated_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Names of the apps with feature `name` enabled.
    fn apps_with_feature(&self, name: &str) -> Result<Vec<String>> {
        let mut st = self.prepare_cached(
            "SELECT a.name FROM app_features f JOIN apps a ON a.id = f.app_id WHERE f.name = ?1 AND f.enabled ORDER BY a.name",
        )?;
        let rows = st.query_map([name], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl Queries for Reader<'_> {}
impl Queries for Tx<'_> {}

impl Tx<'_> {
    pub fn set_concurrency(&self, app_id: &str, limit: Option<u32>) -> Result<()> {
        self.execute(
            "UPDATE apps SET web_concurrency = ?2 WHERE id = ?1",
            params![app_id, limit],
        )?;
        Ok(())
    }

    /// False when another app has the hostname already.
    pub fn add_domain(&self, hostname: &str, app_id: &str, now: i64) -> Result<bool> {
        let n = self.execute(
            "INSERT INTO domains (hostname, app_id, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(hostname) DO NOTHING",
            params![hostname, app_id, now],
        )?;
        Ok(n == 1)
    }

    /// False when the app has no such domain.
    pub fn remove_domain(&self, hostname: &str, app_id: &str) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM domains WHERE hostname = ?1 AND app_id = ?2",
            params![hostname, app_id],
        )? == 1)
    }

    pub fn set_maintenance(&self, app_id: &str, on: bool, now: i64) -> Result<()> {
        self.execute(
            "UPDATE apps SET maintenance = ?2, updated_at = ?3 WHERE id = ?1",
            params![app_id, on, now],
        )?;
        Ok(())
    }

    pub fn insert_app(&self, app: &AppRow) -> Result<()> {
        self.execute(
            "INSERT INTO apps (id, name, created_at, updated_at, maintenance, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![app.id, app.name, app.created_at, app.updated_at, app.maintenance, app.owner],
        )?;
        Ok(())
    }

    pub fn delete_app(&self, app_id: &str) -> Result<()> {
        self.execute("DELETE FROM apps WHERE id = ?1", [app_id])?;
        Ok(())
    }

    pub fn touch_app(&self, app_id: &str, now: i64) -> Result<()> {
        self.execute(
            "UPDATE apps SET updated_at = ?2 WHERE id = ?1",
            params![app_id, now],
        )?;
        Ok(())
    }

    pub fn insert_release(&self, r: &ReleaseRow) -> Result<()> {
        let procfile = serde_json::to_string(&r.procfile).expect("procfile serializes");
        let config = serde_json::to_string(&r.config).expect("config serializes");
        self.execute(
            "INSERT INTO releases (app_id, version, description, slug, procfile, config, created_at, status, made_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![r.app_id, r.version, r.description, r.slug, procfile, config, r.created_at, r.status, r.made_by],
        )?;
        Ok(())
    }

    pub fn set_release_status(&self, app_id: &str, version: u32, status: &str) -> Result<()> {
        self.execute(
            "UPDATE releases SET status = ?3 WHERE app_id = ?1 AND version = ?2",
            params![app_id, version, status],
        )?;
        Ok(())
    }

    pub fn set_formation(&self, app_id: &str, f: &Formation) -> Result<()> {
        self.execute("DELETE FROM formation WHERE app_id = ?1", [app_id])?;
        let mut st = self.prepare_cached(
            "INSERT INTO formation (app_id, process_type, quantity, size) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (t, e) in &f.entries {
            st.execute(params![app_id, t.as_str(), e.quantity, e.size.as_str()])?;
        }
        Ok(())
    }

    pub fn set_config(&self, app_id: &str, c: &ConfigVars) -> Result<()> {
        self.execute("DELETE FROM config_vars WHERE app_id = ?1", [app_id])?;
        let mut st = self
            .prepare_cached("INSERT INTO config_vars (app_id, key, value) VALUES (?1, ?2, ?3)")?;
        for (k, v) in &c.0 {
            st.execute(params![app_id, k, v])?;
        }
        Ok(())
    }

    pub fn insert_dyno(&self, d: &DynoRow) -> Result<()> {
        self.execute(
            &format!("INSERT INTO dynos ({DYNO_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"),
            params![
                d.id, d.app_id, d.app, d.process_type, d.idx, d.release, d.host,
                d.state.as_str(), d.desired.as_str(), d.port, d.size.as_str(), d.command,
                d.one_off, d.exit_code, d.reason, d.restarts, d.next_start_at, d.created_at,
                d.updated_at, d.up_since, d.generation, d.healthy
            ],
        )?;
        self.meter(d, d.updated_at)
    }

    /// Writes every mutable field of an existing dyno row.
    pub fn update_dyno(&self, d: &DynoRow) -> Result<()> {
        self.execute(
            "UPDATE dynos SET host = ?2, state = ?3, desired = ?4, port = ?5, exit_code = ?6, reason = ?7, restarts = ?8, next_start_at = ?9, updated_at = ?10, up_since = ?11, generation = ?12, healthy = ?13 WHERE id = ?1",
            params![
                d.id, d.host, d.state.as_str(), d.desired.as_str(), d.port, d.exit_code,
                d.reason, d.restarts, d.next_start_at, d.updated_at, d.up_since, d.generation,
                d.healthy
            ],
        )?;
        self.meter(d, d.updated_at)
    }

    /// Removes the row; its usage interval, if still open, ends at `at` (unix ms).
    pub fn delete_dyno(&self, id: &str, at: i64) -> Result<()> {
        self.close_usage(id, at)?;
        self.execute("DELETE FROM dynos WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Opens or closes the dyno's usage interval so it matches the row: billed while starting,
    /// up or crashed, at its size.
    fn meter(&self, d: &DynoRow, at: i64) -> Result<()> {
        let billed = matches!(
            d.state,
            DynoState::Starting | DynoState::Up | DynoState::Crashed
        );
        let open: Option<String> = self
            .prepare_cached("SELECT size FROM usage WHERE dyno_id = ?1 AND ended_at IS NULL")?
            .query_row([&d.id], |r| r.get(0))
            .optional()?;
        match (billed, open) {
            (true, Some(size)) if size == d.size.as_str() => {}
            (true, open) => {
                if open.is_some() {
                    self.close_usage(&d.id, at)?;
                }
                self.prepare_cached(
                    "INSERT INTO usage (dyno_id, app_id, app, owner, process_type, dyno, size, started_at)
                     VALUES (?1, ?2, ?3, COALESCE((SELECT owner FROM apps WHERE id = ?2), 'default'), ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    d.id,
                    d.app_id,
                    d.app,
                    d.process_type,
                    d.name(),
                    d.size.as_str(),
                    at
                ])?;
            }
            (false, Some(_)) => self.close_usage(&d.id, at)?,
            (false, None) => {}
        }
        Ok(())
    }

    /// Ends the dyno's open usage interval at `at`, never before it began.
    pub fn close_usage(&self, dyno_id: &str, at: i64) -> Result<()> {
        self.prepare_cached(
            "UPDATE usage SET ended_at = MAX(started_at, ?2) WHERE dyno_id = ?1 AND ended_at IS NULL",
        )?
        .execute(params![dyno_id, at])?;
        Ok(())
    }

    /// Records `spec` (a price table as JSON) as in effect from `at`, unless it already is.
    /// Returns whether it was new.
    pub fn record_pricing(&self, spec: &str, at: i64) -> Result<bool> {
        let latest: Option<String> = self
            .query_row(
                "SELECT spec FROM pricing ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if latest.as_deref() == Some(spec) {
            return Ok(false);
        }
        self.execute(
            "INSERT INTO pricing (effective_from, spec) VALUES (?1, ?2)",
            params![at, spec],
        )?;
        Ok(true)
    }

    pub fn insert_drain(&self, d: &DrainRow) -> Result<()> {
        self.execute(
            "INSERT INTO log_drains (id, app_id, url, token, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![d.id, d.app_id, d.url, d.token, d.created_at, d.updated_at],
        )?;
        Ok(())
    }

    pub fn delete_drain(&self, id: &str) -> Result<()> {
        self.execute("DELETE FROM log_drains WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn set_feature(&self, app_id: &str, name: &str, enabled: bool, now: i64) -> Result<()> {
        self.execute(
            "INSERT INTO app_features (app_id, name, enabled, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(app_id, name) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
            params![app_id, name, enabled, now],
        )?;
        Ok(())
    }

    /// False when the name is taken (also by a revoked token).
    pub fn insert_token(&self, t: &TokenRow) -> Result<bool> {
        let n = self.execute(
            "INSERT OR IGNORE INTO tokens (name, role, hash, host, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![t.name, t.role, t.hash, t.host, t.created_at, t.revoked_at],
        )?;
        Ok(n == 1)
    }

    /// Revokes a live token; false when there is none of that name.
    pub fn revoke_token(&self, name: &str, at: i64) -> Result<bool> {
        let n = self.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, at],
        )?;
        Ok(n == 1)
    }

    /// Revokes every live credential of `host`; how many.
    pub fn revoke_host_tokens(&self, host: &str, at: i64) -> Result<usize> {
        Ok(self.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE host = ?1 AND revoked_at IS NULL",
            params![host, at],
        )?)
    }

    /// Puts the app's eco dynos to sleep; true when they were awake.
    pub fn set_asleep(&self, app_id: &str, now: i64) -> Result<bool> {
        Ok(self.execute(
            "INSERT OR IGNORE INTO sleeping_apps (app_id, since) VALUES (?1, ?2)",
            params![app_id, now],
        )? == 1)
    }

    /// A request came for a sleeping app; true when it was asleep and not yet waking.
    pub fn set_waking(&self, app_id: &str) -> Result<bool> {
        Ok(self.execute(
            "UPDATE sleeping_apps SET waking = 1 WHERE app_id = ?1 AND waking = 0",
            [app_id],
        )? == 1)
    }

    /// The app is awake: its web dynos are starting.
    pub fn set_awake(&self, app_id: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM sleeping_apps WHERE app_id = ?1", [app_id])? == 1)
    }

    pub fn delete_host(&self, name: &str) -> Result<bool> {
        Ok(self.execute("DELETE FROM hosts WHERE name = ?1", [name])? == 1)
    }

    pub fn upsert_host(&self, h: &HostRow) -> Result<()> {
        self.execute(
            "INSERT INTO hosts (name, address, memory_mb, cpus, isolation, agent_version, first_seen, last_seen, labels) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(name) DO UPDATE SET address = excluded.address, memory_mb = excluded.memory_mb, cpus = excluded.cpus, isolation = excluded.isolation, agent_version = excluded.agent_version, last_seen = excluded.last_seen, labels = excluded.labels",
            params![h.name, h.address, h.memory_mb as i64, h.cpus, h.isolation, h.agent_version, h.first_seen, h.last_seen, serde_json::to_string(&h.labels).expect("labels serialize")],
        )?;
        Ok(())
    }

    pub fn set_check(&self, app_id: &str, process_type: &str, check: &HealthCheck) -> Result<()> {
        let spec = serde_json::to_string(check).expect("checks serialize");
        self.execute(
            "INSERT INTO checks (app_id, process_type, spec) VALUES (?1, ?2, ?3)
             ON CONFLICT(app_id, process_type) DO UPDATE SET spec = excluded.spec",
            params![app_id, process_type, spec],
        )?;
        Ok(())
    }

    /// Records an event. Every `EVENTS_TRIM_EVERY`th one also drops its app's oldest beyond
    /// `EVENTS_PER_APP`: trimming walks that many index entries, too much for every insert of a
    /// status flood (reads return the newest `limit` anyway).
    pub fn insert_event(&self, app_id: &str, at: i64, dyno: &str, message: &str) -> Result<()> {
        self.prepare_cached(
            "INSERT INTO events (app_id, at, dyno, message) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![app_id, at, dyno, message])?;
        if self.last_insert_rowid() % EVENTS_TRIM_EVERY != 0 {
            return Ok(());
        }
        self.prepare_cached(
            "DELETE FROM events WHERE app_id = ?1 AND seq <= \
             (SELECT seq FROM events WHERE app_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )?
        .execute(params![app_id, EVENTS_PER_APP as i64])?;
        Ok(())
    }

    pub fn set_requirement(
        &self,
        app_id: &str,
        process_type: &str,
        key: &str,
        value: &str,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO requirements (app_id, process_type, label_key, label_value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(app_id, process_type) DO UPDATE SET label_key = excluded.label_key, label_value = excluded.label_value",
            params![app_id, process_type, key, value],
        )?;
        Ok(())
    }

    /// Returns false when there was none.
    pub fn delete_requirement(&self, app_id: &str, process_type: &str) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM requirements WHERE app_id = ?1 AND process_type = ?2",
            params![app_id, process_type],
        )? == 1)
    }

    /// Returns false when there was none.
    pub fn delete_check(&self, app_id: &str, process_type: &str) -> Result<bool> {
        Ok(self.execute(
            "DELETE FROM checks WHERE app_id = ?1 AND process_type = ?2",
            params![app_id, process_type],
        )? == 1)
    }

    /// Returns false when no host has that name.
    pub fn set_host_drained(&self, name: &str, drained: bool) -> Result<bool> {
        let n = self.execute(
            "UPDATE hosts SET drained = ?2 WHERE name = ?1",
            params![name, drained],
        )?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppRow {
        AppRow {
            id: format!("id-{name}"),
            name: name.into(),
            created_at: 1,
            updated_at: 1,
            maintenance: false,
            owner: "default".into(),
        }
    }

    #[test]
    fn events_keep_the_newest_per_app() {
        let mut s = Store::open_in_memory().unwrap();
        s.transaction(|tx| {
            tx.insert_app(&app("shop"))?;
            tx.insert_app(&app("blog"))?;
            for i in 0..EVENTS_PER_APP + 5 {
                tx.insert_event("id-shop", i as i64, "web.1", &format!("e{i}"))?;
            }
            tx.insert_event("id-blog", 1, "api", "only")
        })
        .unwrap();
        let shop = s.read(|r| r.events("id-shop", EVENTS_PER_APP)).unwrap();
        assert_eq!(shop.len(), EVENTS_PER_APP);
        assert_eq!(shop[0].2, "e5");
        assert_eq!(shop.last().unwrap().2, format!("e{}", EVENTS_PER_APP + 4));
        assert_eq!(
            s.read(|r| r.events("id-shop", 2)).unwrap()[0].2,
            format!("e{}", EVENTS_PER_APP + 3)
        );
        assert_eq!(s.read(|r| r.events("id-blog", 10)).unwrap().len(), 1);
    }

    #[test]
    fn usage_follows_dyno_states_with_one_open_interval_per_dyno() {
        let mut s = Store::open_in_memory().unwrap();
        let mut shop = app("shop");
        shop.owner = "acme".into();
        let mut d = DynoRow::new(NewDyno {
            id: "d1".into(),
            app: &shop,
            process_type: "web".into(),
            idx: 1,
            release: 1,
            host: "h1".into(),
            size: Size::Standard1x,
            command: "x".into(),
            one_off: false,
            now: 1_000,
        });
        let usage = |s: &Store| s.read(|r| r.usage_between(0, i64::MAX, false)).unwrap();
        s.transaction(|tx| {
            tx.insert_app(&shop)?;
            tx.insert_dyno(&d)
        })
        .unwrap();
        // Reports that change nothing billable (up, the same report again, crashed) keep the
        // one interval open.
        for (state, at) in [
            (DynoState::Up, 2_000),
            (DynoState::Up, 2_500),
            (DynoState::Crashed, 3_000),
            (DynoState::Starting, 3_500),
        ] {
            d.state = state;
            d.updated_at = at;
            s.transaction(|tx| tx.update_dyno(&d)).unwrap();
        }
        let u = usage(&s);
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].started_at, u[0].ended_at), (1_000, None));
        assert_eq!((u[0].owner.as_str(), u[0].dyno.as_str()), ("acme", "web.1"));
        // A size change closes the interval and opens one at the new size.
        d.size = Size::Standard2x;
        d.updated_at = 4_000;
        s.transaction(|tx| tx.update_dyno(&d)).unwrap();
        // Down ends it; the agent's earlier stop time wins over the coordinator's.
        d.state = DynoState::Down;
        d.updated_at = 9_000;
        s.transaction(|tx| {
            tx.close_usage("d1", 6_000)?;
            tx.update_dyno(&d)
        })
        .unwrap();
        let u = usage(&s);
        assert_eq!(
            u.iter()
                .map(|i| (i.size, i.started_at, i.ended_at))
                .collect::<Vec<_>>(),
            vec![
                (Size::Standard1x, 1_000, Some(4_000)),
                (Size::Standard2x, 4_000, Some(6_000))
            ]
        );
        // Idle (asleep) is not billed; deleting a running dyno ends its interval, never
        // before it began.
        d.state = DynoState::Up;
        d.updated_at = 10_000;
        s.transaction(|tx| tx.update_dyno(&d)).unwrap();
        s.transaction(|tx| tx.delete_dyno("d1", 5)).unwrap();
        let u = usage(&s);
        assert_eq!(u.len(), 3);
        assert_eq!((u[2].started_at, u[2].ended_at), (10_000, Some(10_000)));
        // The history outlives the app.
        s.transaction(|tx| tx.delete_app("id-shop")).unwrap();
        assert_eq!(usage(&s).len(), 3);
        assert_eq!(
            s.read(|r| r.usage_between(0, 5_000, true)).unwrap().len(),
            0
        );
    }

    #[test]
    fn pricing_is_recorded_only_when_it_changes() {
        let mut s = Store::open_in_memory().unwrap();
        assert!(
            s.transaction(|tx| tx.record_pricing("{\"a\":1}", 10))
                .unwrap()
        );
        assert!(
            !s.transaction(|tx| tx.record_pricing("{\"a\":1}", 20))
                .unwrap()
        );
        assert!(
            s.transaction(|tx| tx.record_pricing("{\"a\":2}", 30))
                .unwrap()
        );
        let h = s.read(|r| r.pricing_history()).unwrap();
        assert_eq!(
            h,
            vec![(10, "{\"a\":1}".to_string()), (30, "{\"a\":2}".to_string())]
        );
    }

    #[test]
    fn migrates_and_round_trips() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.transaction(|tx| {
            tx.insert_app(&app("shop"))?;
            tx.insert_release(&ReleaseRow {
                app_id: "id-shop".into(),
                version: 1,
                description: "Deploy".into(),
                slug: Some("ab".into()),
                procfile: Procfile::parse("web: x").unwrap(),
                config: ConfigVars::default(),
                created_at: 2,
                status: "succeeded".into(),
                made_by: Some("root".into()),
            })?;
            let f = Formation::default()
                .apply(
                    &dyno_shared::scale::parse_scale_args(&["web=2:standard-2x"]).unwrap(),
                    &Procfile::parse("web: x").unwrap(),
                )
                .unwrap();
            tx.set_formation("id-shop", &f)
        })
        .unwrap();
        s.read(|r| {
            assert_eq!(r.apps()?.len(), 1);
            let current = r.current_release("id-shop")?.unwrap();
            assert_eq!(
                (current.version, current.made_by.as_deref()),
                (1, Some("root"))
            );
            assert_eq!(
                r.formation("id-shop")?.to_scale_string(),
                "web=2:standard-2x"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn failed_transaction_changes_nothing() {
        let mut s = Store::open_in_memory().unwrap();
        let res: Result<()> = s.transaction(|tx| {
            tx.insert_app(&app("shop"))?;
            tx.insert_app(&app("shop"))
        });
        assert!(res.is_err());
        assert!(s.read(|r| r.apps()).unwrap().is_empty());
    }

    #[test]
    fn deleting_an_app_cascades() {
        let mut s = Store::open_in_memory().unwrap();
        s.transaction(|tx| {
            tx.insert_app(&app("shop"))?;
            let mut c = ConfigVars::default();
            c.0.insert("A".into(), "1".into());
            tx.set_config("id-shop", &c)?;
            tx.delete_app("id-shop")
        })
        .unwrap();
        assert!(s.read(|r| r.config("id-shop")).unwrap().0.is_empty());
    }

    #[test]
    fn reopening_a_file_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.transaction(|tx| tx.insert_app(&app("shop"))).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.read(|r| r.apps()).unwrap()[0].name, "shop");
    }
}
