//! The per-host agent: connects to the coordinator, runs the dynos it is told to run, and streams
//! their state changes and output back.
//!
//! `run(config, shutdown)` is what `main` calls; tests call the same function with their own
//! shutdown future.

pub mod cgroup;
pub mod connection;
pub mod credential;
pub mod host;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod logbuf;
pub mod outbox;
pub mod output;
pub mod runtime;
pub mod slugs;
pub mod supervisor;
pub mod tail;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dyno_shared::protocol::Isolation;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::outbox::Outbox;
use crate::runtime::{PlainRuntime, Runtime};
use crate::slugs::SlugCache;
use crate::supervisor::{Supervisor, SupervisorConfig};

/// How long a dyno gets between SIGTERM and SIGKILL when the agent itself shuts down.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);
/// How long a web dyno gets to accept connections on `$PORT` (Heroku's R10).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent waits, after its dynos stopped, to tell the coordinator about it.
pub const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://host:port` of the coordinator.
    pub coordinator: String,
    pub token: String,
    /// Cached slugs and the dynos' ephemeral app directories live here.
    pub state_dir: PathBuf,
    /// Host name, unique among agents.
    pub name: String,
    /// The address the router reaches web dynos on.
    pub address: String,
    pub stop_grace: Duration,
    pub boot_timeout: Duration,
    /// Memory offered to dynos; `None` offers the machine's total.
    pub memory_mb: Option<u64>,
    /// How dynos are isolated: plain processes, or namespaces and cgroups (`linux::LinuxRuntime`).
    pub isolation: Isolation,
    /// On shutdown, leave isolated dynos running for the next agent to adopt (an upgrade or
    /// restart) instead of stopping them. Plain dynos always stop: they cannot be adopted.
    pub keep_dynos_on_exit: bool,
    /// Labels the coordinator places by (`disk=ssd`).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl AgentConfig {
    /// A config with the defaults: the machine's host name, 127.0.0.1, 30 s grace, 60 s boot timeout.
    pub fn new(
        coordinator: impl Into<String>,
        token: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        AgentConfig {
            coordinator: coordinator.into(),
            token: token.into(),
            state_dir: state_dir.into(),
            name: host::hostname(),
            address: "127.0.0.1".to_string(),
            stop_grace: DEFAULT_STOP_GRACE,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            memory_mb: None,
            isolation: Isolation::None,
            keep_dynos_on_exit: false,
            labels: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid coordinator URL {0:?}: it must start with http:// or https://")]
    InvalidCoordinatorUrl(String),
    #[error("invalid agent name: it must not be empty")]
    EmptyName,
    #[cfg(target_os = "linux")]
    #[error("failed to set up Linux isolation: {0}")]
    Isolation(#[from] linux::LinuxError),
    #[cfg(not(target_os = "linux"))]
    #[error("Linux isolation is only available on Linux")]
    Isolation,
    #[error("failed to prepare the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks a coordinator URL and returns it without a trailing slash.
pub fn validate_coordinator_url(url: &str) -> Result<String, AgentError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host)
            if !host.trim_end_matches('/').is_empty() && !host.contains(char::is_whitespace) =>
        {
            Ok(url.trim_end_matches('/').to_string())
        }
        _ => Err(AgentError::InvalidCoordinatorUrl(url.to_string())),
    }
}

/// Runs the agent until `shutdown` completes, then stops every dyno (SIGTERM, grace, SIGKILL),
/// reports them `down` if the coordinator is connected, and returns.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let coordinator = validate_coordinator_url(&config.coordinator)?;
    if config.name.trim().is_empty() {
        return Err(AgentError::EmptyName);
    }
    let state_err = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| AgentError::StateDir { path, source }
    };
    // Holds tokens in dyno records and the dynos' files: the agent's alone.
    create_private_dir(&config.state_dir).map_err(state_err(&config.state_dir))?;
    let dynos_dir = config.state_dir.join("dynos");
    std::fs::create_dir_all(&dynos_dir).map_err(state_err(&dynos_dir))?;
    let slugs_dir = config.state_dir.join("slugs");
    let credential = credential::Credential::load(&config.state_dir, &config.token)
        .map_err(state_err(&config.state_dir))?;
    let slugs = SlugCache::open(&slugs_dir, &coordinator, credential.clone())
        .map_err(state_err(&slugs_dir))?;

    let runtime: Arc<dyn Runtime> = match config.isolation {
        Isolation::None => Arc::new(PlainRuntime::new()),
        #[cfg(target_os = "linux")]
        Isolation::Linux => Arc::new(linux::LinuxRuntime::new(&config.state_dir)?),
        #[cfg(not(target_os = "linux"))]
        Isolation::Linux => return Err(AgentError::Isolation),
    };
    info!(
        isolation = runtime.isolation().as_str(),
        "dyno isolation chosen"
    );
    let outbox = Arc::new(Outbox::new());
    let supervisor = Supervisor::new(
        SupervisorConfig {
            dynos_dir: dynos_dir.clone(),
            boot_timeout: config.boot_timeout,
            stats_interval: supervisor::STATS_INTERVAL,
        },
        runtime.clone(),
        Arc::new(slugs),
        outbox.clone(),
    );
    adopt_or_clean(&supervisor, &*runtime, &dynos_dir)
        .await
        .map_err(state_err(&dynos_dir))?;

    let conn_config = connection::ConnectionConfig {
        ws_url: connection::ws_url(&coordinator),
        credential,
        name: config.name.clone(),
        address: config.address.clone(),
        memory_mb: config.memory_mb.unwrap_or_else(host::memory_mb),
        cpus: host::cpus(),
        isolation: runtime.isolation(),
        labels: config.labels.clone(),
    };
    let (finish_tx, finish_rx) = watch::channel(false);
    let mut conn = tokio::spawn(connection::run(
        conn_config,
        supervisor.clone(),
        outbox.clone(),
        finish_rx,
    ));
    info!(name = %config.name, coordinator = %coordinator, "agent started");

    shutdown.await;
    info!(
        dynos = supervisor.statuses().len(),
        "shutting down: stopping every dyno"
    );
    if config.keep_dynos_on_exit && runtime.can_adopt() {
        info!("leaving the dynos running for the next agent");
        supervisor.leave(config.stop_grace).await;
    } else {
        supervisor.shutdown(config.stop_grace).await;
    }
    runtime.tidy();
    let _ = finish_tx.send(true);
    match tokio::time::timeout(FINAL_FLUSH_TIMEOUT, &mut conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "connection task failed"),
        Err(_) => {
            warn!("could not report the final dyno states to the coordinator in time");
            conn.abort();
        }
    }
    info!("agent stopped");
    Ok(())
}

/// Creates the state dir as the agent's alone (0700). An existing one keeps its mode, with a
/// warning when others may enter it: it holds config vars, and slugs the dyno user owns.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(dir)?.permissions().mode();
            if mode & 0o077 != 0 {
                warn!(
                    dir = %dir.display(),
                    mode = format!("{:o}", mode & 0o7777),
                    "the state directory is open to other users; chmod 700 it"
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

/// What an earlier agent left in `dynos_dir`: dynos the runtime can adopt are taken over; every
/// other process and file goes, so nothing runs beside its replacement.
async fn adopt_or_clean(
    supervisor: &Supervisor,
    runtime: &dyn Runtime,
    dynos_dir: &std::path::Path,
) -> std::io::Result<()> {
    if !runtime.can_adopt() {
        let killed = runtime::kill_leftover_dynos(dynos_dir);
        if killed > 0 {
            warn!(
                groups = killed,
                "killed dyno processes left by an earlier agent"
            );
        }
        return supervisor::clear_dir(dynos_dir);
    }
    let adopted = supervisor.adopt_existing().await;
    if !adopted.is_empty() {
        info!(
            dynos = adopted.len(),
            "adopted the dynos an earlier agent left running"
        );
    }
    runtime.clean_leftovers(&adopted);
    for entry in std::fs::read_dir(dynos_dir)? {
        let entry = entry?;
        if !adopted.contains(entry.file_name().to_string_lossy().as_ref()) {
            supervisor::remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_url_must_be_http() {
        assert_eq!(
            validate_coordinator_url("http://127.0.0.1:7070/").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert!(validate_coordinator_url("https://coord.example").is_ok());
        for bad in ["127.0.0.1:7070", "ws://x:1", "http://", "ftp://x", ""] {
            let e = validate_coordinator_url(bad).unwrap_err();
            assert!(e.to_string().contains("http://"), "{e}");
        }
    }
}
