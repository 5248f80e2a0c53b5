//! One task per dyno, a plain loop: prepare (slug + ephemeral copy), spawn, wait for `up`, then
//! wait for an exit or a stop, report the final state and forget the dyno.
//!
//! States: `starting` -> `up` -> (`crashed` | `down`). Restarts are the coordinator's decision:
//! a `StartDyno` for an id that is no longer running starts it afresh.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dyno_shared::logline::{LogLine, LogSource};
use dyno_shared::protocol::{DynoSpec, DynoState, DynoStats, DynoStatus, HealthCheck};
use dyno_shared::time::now_micros;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::outbox::Outbox;
use crate::output::read_lines_paced;
use crate::runtime::{
    DynoSignal, Exit, Launch, ProcessGroup, RunningDyno, Runtime, RuntimeError, Usage,
};
use crate::slugs::{SlugCache, SlugError};

/// How often a booting web dyno's `$PORT` is probed.
pub const PORT_POLL: Duration = Duration::from_millis(5);
/// How often a stopping dyno's process group is checked for survivors.
pub const GROUP_POLL: Duration = Duration::from_millis(20);
/// How long output may trail the main process's exit (a daemon that left the group may hold
/// the pipe open forever).
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest dyno id accepted; ids name directories.
pub const MAX_DYNO_ID_BYTES: usize = 128;
/// How often each running dyno's resource use is sampled (and R14 checked) and sent.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Each dyno gets `dynos_dir/{dyno_id}/app`.
    pub dynos_dir: PathBuf,
    pub boot_timeout: Duration,
    /// `STATS_INTERVAL` outside tests.
    pub stats_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid dyno id {0:?}: expected 1-128 of [A-Za-z0-9._-], not starting with a dot")]
    InvalidId(String),
    #[error(transparent)]
    Slug(#[from] SlugError),
    #[error("failed to prepare the app in {path}: {source}")]
    Copy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to pick a port: {0}")]
    Port(#[source] io::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("dyno preparation task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone)]
struct StopRequest {
    grace: Duration,
    reason: &'static str,
}

/// What the agent wants of a running dyno's task.
#[derive(Debug, Clone)]
enum Order {
    Stop(StopRequest),
    /// Leave the dyno running for the next agent: stop reading its output and forget it.
    Detach,
}

struct Entry {
    status: DynoStatus,
    orders: watch::Sender<Option<Order>>,
}

/// In each dyno's directory: what a later agent needs to adopt it.
pub const RECORD_FILE: &str = "dyno.json";

/// A running dyno as written to [`RECORD_FILE`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DynoRecord {
    pub spec: DynoSpec,
    pub port: Option<u16>,
    pub pid: u32,
}

#[derive(Default)]
struct Registry {
    dynos: HashMap<String, Entry>,
    tasks: JoinSet<()>,
    shutting_down: bool,
}

struct Inner {
    config: SupervisorConfig,
    runtime: Arc<dyn Runtime>,
    slugs: Arc<SlugCache>,
    outbox: Arc<Outbox>,
    registry: Mutex<Registry>,
    trash_seq: AtomicU64,
}

/// Runs dynos and reports them through the outbox. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    pub fn new(
        config: SupervisorConfig,
        runtime: Arc<dyn Runtime>,
        slugs: Arc<SlugCache>,
        outbox: Arc<Outbox>,
    ) -> Self {
        Supervisor {
            inner: Arc::new(Inner {
                config,
                runtime,
                slugs,
                outbox,
                registry: Mutex::new(Registry::default()),
                trash_seq: AtomicU64::new(0),
            }),
        }
    }

    /// Starts a dyno; for one already running under this id, re-sends its status instead.
    pub fn start(&self, spec: DynoSpec) {
        let mut reg = self.inner.lock();
        if reg.shutting_down {
            warn!(app = %spec.app, dyno = %spec.name, "agent is shutting down; not starting dyno");
            // Said, so the coordinator can place it elsewhere rather than wait for it.
            self.inner.outbox.push_state(DynoStatus {
                dyno_id: spec.dyno_id,
                state: DynoState::Down,
                port: None,
                pid: None,
                exit_code: None,
                at: now_micros(),
                reason: Some("Agent shutting down".to_string()),
                generation: spec.generation,
                healthy: true,
            });
            return;
        }
        if let Some(entry) = reg.dynos.get(&spec.dyno_id) {
            debug!(app = %spec.app, dyno = %spec.name, "dyno already running; re-sending its status");
            self.inner.outbox.push_state(entry.status.clone());
            return;
        }
        let status = DynoStatus {
            dyno_id: spec.dyno_id.clone(),
            state: DynoState::Starting,
            port: None,
            pid: None,
            exit_code: None,
            at: now_micros(),
            reason: None,
            generation: spec.generation,
            healthy: true,
        };
        let (orders_tx, orders_rx) = watch::channel(None);
        reg.dynos.insert(
            spec.dyno_id.clone(),
            Entry {
                status: status.clone(),
                orders: orders_tx,
            },
        );
        self.inner.outbox.push_state(status);
        while let Some(done) = reg.tasks.try_join_next() {
            log_task_end(done);
        }
        let span = info_span!("dyno", app = %spec.app, dyno = %spec.name, id = %spec.dyno_id);
        reg.tasks
            .spawn(run_dyno(self.inner.clone(), spec, orders_rx).instrument(span));
    }

    /// Takes over the dynos an earlier agent left running (those with a [`RECORD_FILE`] the
    /// runtime can adopt), reporting each as running again, or with how it ended if it ended
    /// while no agent watched. Returns the ids of every dyno it took.
    pub async fn adopt_existing(&self) -> HashSet<String> {
        let mut adopted = HashSet::new();
        if !self.inner.runtime.can_adopt() {
            return adopted;
        }
        let dir = &self.inner.config.dynos_dir;
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_dyno_id(&name) {
                continue;
            }
            let record = match fs::read(entry.path().join(RECORD_FILE))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<DynoRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) if r.spec.dyno_id == name => r,
                Ok(_) => {
                    warn!(dir = %name, "dyno record names another dyno; not adopting");
                    continue;
                }
                Err(e) => {
                    debug!(dir = %name, error = %e, "no usable dyno record; not adopting");
                    continue;
                }
            };
            let launch = self.launch_for(&record.spec, record.port);
            match self.inner.runtime.adopt(&launch, record.pid) {
                Ok(running) => {
                    self.adopt(record, running).await;
                    adopted.insert(name);
                }
                Err(e) => warn!(dir = %name, error = %e, "failed to adopt a dyno"),
            }
        }
        adopted
    }

    fn launch_for(&self, spec: &DynoSpec, port: Option<u16>) -> Launch {
        Launch {
            app_dir: self.inner.config.dynos_dir.join(&spec.dyno_id).join("app"),
            slug_dir: self.inner.slugs.path(&spec.slug),
            command: spec.command.clone(),
            dyno_name: spec.name.clone(),
            port,
            env: spec.env.clone(),
            size: spec.size,
        }
    }

    async fn adopt(&self, record: DynoRecord, running: RunningDyno) {
        let DynoRecord { spec, port, pid } = record;
        // A web dyno that accepts on its port is up; one still booting gets a fresh boot timeout.
        let accepting = match port {
            Some(_) => tokio::time::timeout(Duration::from_millis(200), port_accepting(port))
                .await
                .is_ok(),
            None => true,
        };
        let state = if accepting {
            DynoState::Up
        } else {
            DynoState::Starting
        };
        let status = DynoStatus {
            dyno_id: spec.dyno_id.clone(),
            state,
            port,
            pid: Some(pid),
            exit_code: None,
            at: now_micros(),
            reason: None,
            generation: spec.generation,
            healthy: true,
        };
        let (orders_tx, orders_rx) = watch::channel(None);
        let mut reg = self.inner.lock();
        reg.dynos.insert(
            spec.dyno_id.clone(),
            Entry {
                status: status.clone(),
                orders: orders_tx,
            },
        );
        self.inner.outbox.push_state(status);
        info!(app = %spec.app, dyno = %spec.name, id = %spec.dyno_id, pid, "adopted a running dyno");
        let span = info_span!("dyno", app = %spec.app, dyno = %spec.name, id = %spec.dyno_id);
        let mut task = DynoTask {
            inner: self.inner.clone(),
            spec,
            state,
        };
        reg.tasks.spawn(
            async move {
                task.system(format!("Adopted by a restarted agent (pid {pid})"));
                let mut orders = orders_rx;
                if let Some(end) = task.supervise(running, port, &mut orders).await {
                    task.finish(end).await;
                }
            }
            .instrument(span),
        );
    }

    /// Stops a dyno: SIGTERM, `grace`, SIGKILL. An unknown id is answered with `down`.
    pub fn stop(&self, dyno_id: &str, grace: Duration) {
        let reg = self.inner.lock();
        match reg.dynos.get(dyno_id) {
            Some(entry) => order(
                entry,
                Order::Stop(StopRequest {
                    grace,
                    reason: "Stopped",
                }),
            ),
            None => {
                debug!(id = dyno_id, "stop for a dyno that is not running");
                self.inner.outbox.push_state(DynoStatus {
                    dyno_id: dyno_id.to_string(),
                    state: DynoState::Down,
                    port: None,
                    pid: None,
                    exit_code: None,
                    at: now_micros(),
                    reason: Some("Not running on this host".to_string()),
                    generation: 0,
                    healthy: true,
                });
            }
        }
    }

    /// The status of every dyno this agent runs now, by id.
    pub fn statuses(&self) -> Vec<DynoStatus> {
        let mut all: Vec<DynoStatus> = self
            .inner
            .lock()
            .dynos
            .values()
            .map(|e| e.status.clone())
            .collect();
        all.sort_by(|a, b| a.dyno_id.cmp(&b.dyno_id));
        all
    }

    /// Refuses new dynos, stops every running one with `grace`, and waits until all are gone.
    pub async fn shutdown(&self, grace: Duration) {
        let mut tasks = {
            let mut reg = self.inner.lock();
            reg.shutting_down = true;
            for entry in reg.dynos.values() {
                let reason = "Agent shutting down";
                order(entry, Order::Stop(StopRequest { grace, reason }));
            }
            std::mem::take(&mut reg.tasks)
        };
        while let Some(done) = tasks.join_next().await {
            log_task_end(done);
        }
    }

    /// Refuses new dynos and leaves the running ones running, their output read up to now, for
    /// the next agent to adopt. Dynos still starting are stopped. Only for runtimes that can
    /// adopt; others get `shutdown`.
    pub async fn leave(&self, grace: Duration) {
        if !self.inner.runtime.can_adopt() {
            return self.shutdown(grace).await;
        }
        let mut tasks = {
            let mut reg = self.inner.lock();
            reg.shutting_down = true;
            for entry in reg.dynos.values() {
                order(entry, Order::Detach);
            }
            std::mem::take(&mut reg.tasks)
        };
        while let Some(done) = tasks.join_next().await {
            log_task_end(done);
        }
    }
}

/// The first order wins: a repeated StopDyno does not restart the grace period.
fn order(entry: &Entry, order: Order) {
    entry.orders.send_if_modified(|current| {
        if current.is_none() {
            *current = Some(order);
            true
        } else {
            false
        }
    });
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        error!(error = %e, "dyno task failed");
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes a dyno's recorded status, and reports it if `report`.
    fn update(&self, dyno_id: &str, change: impl FnOnce(&mut DynoStatus), report: bool) {
        let mut reg = self.lock();
        if let Some(entry) = reg.dynos.get_mut(dyno_id) {
            change(&mut entry.status);
            if report {
                self.outbox.push_state(entry.status.clone());
            }
        }
    }

    /// Reports a dyno's final status and forgets it, in one step: a StartDyno for the same id
    /// right after the report must find it gone.
    fn forget(&self, dyno_id: &str, change: impl FnOnce(&mut DynoStatus)) {
        let mut reg = self.lock();
        if let Some(mut entry) = reg.dynos.remove(dyno_id) {
            change(&mut entry.status);
            self.outbox.forget_stats(dyno_id);
            self.outbox.push_state(entry.status);
        }
    }
}

struct End {
    state: DynoState,
    exit_code: Option<i32>,
    reason: String,
}

impl End {
    /// Ordered away before its process started; a dyno with no process is never left behind.
    fn stopped_early(order: &Order) -> End {
        let reason = match order {
            Order::Stop(req) => req.reason,
            Order::Detach => "Agent shutting down",
        };
        End {
            state: DynoState::Down,
            exit_code: None,
            reason: reason.to_string(),
        }
    }
}

struct DynoTask {
    inner: Arc<Inner>,
    spec: DynoSpec,
    state: DynoState,
}

async fn run_dyno(inner: Arc<Inner>, spec: DynoSpec, mut orders: watch::Receiver<Option<Order>>) {
    let mut task = DynoTask {
        inner,
        spec,
        state: DynoState::Starting,
    };
    if let Some(end) = task.run(&mut orders).await {
        task.finish(end).await;
    }
}

impl DynoTask {
    fn system(&self, message: impl Into<String>) {
        self.inner.outbox.push_log(LogLine {
            at: now_micros(),
            app: self.spec.app.clone(),
            source: LogSource::System,
            process: self.spec.name.clone(),
            message: message.into(),
        });
    }

    /// Reports whether the dyno passes its health check; the coordinator routes only to those
    /// that do.
    fn set_healthy(&self, healthy: bool) {
        self.inner.update(
            &self.spec.dyno_id,
            |s| {
                s.healthy = healthy;
                s.at = now_micros();
            },
            true,
        );
    }

    fn change_state(&mut self, to: DynoState) {
        self.system(format!(
            "State changed from {} to {}",
            self.state.as_str(),
            to.as_str()
        ));
        self.state = to;
        info!(state = to.as_str(), "dyno state changed");
        self.inner.update(
            &self.spec.dyno_id,
            |s| {
                s.state = to;
                s.at = now_micros();
            },
            true,
        );
    }

    /// Prepares and starts the dyno, then supervises it. `None` when it was left running.
    async fn run(&mut self, orders: &mut watch::Receiver<Option<Order>>) -> Option<End> {
        self.system(format!(
            "Starting process with command `{}`",
            self.spec.command
        ));
        // Fetching may take long and can be abandoned; the preparation is not, so that a restart
        // under the same id never meets a half-written directory.
        let fetched = tokio::select! {
            fetched = self.fetch_slug() => fetched,
            order = ordered(orders) => return Some(End::stopped_early(&order)),
        };
        let prepared = match fetched {
            Ok(slug_dir) => self.prepare(slug_dir).await,
            Err(e) => Err(e),
        };
        let launch = match prepared {
            Ok(launch) => launch,
            Err(e) => return Some(self.failed_start(e)),
        };
        if let Some(order) = orders.borrow().clone() {
            return Some(End::stopped_early(&order));
        }
        let running = match self.inner.runtime.start(&launch) {
            Ok(running) => running,
            Err(e) => return Some(self.failed_start(e.into())),
        };
        info!(pid = running.pid, port = ?launch.port, "dyno process started");
        if self.inner.runtime.can_adopt() {
            self.write_record(launch.port, running.pid).await;
        }
        self.supervise(running, launch.port, orders).await
    }

    /// What a later agent needs to adopt this dyno, written next to its app.
    async fn write_record(&self, port: Option<u16>, pid: u32) {
        let record = DynoRecord {
            spec: self.spec.clone(),
            port,
            pid,
        };
        let dir = self.inner.config.dynos_dir.join(&self.spec.dyno_id);
        let written = tokio::task::spawn_blocking(move || {
            let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
            let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
            fs::write(&tmp, json)?;
            fs::rename(&tmp, dir.join(RECORD_FILE))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "failed to record the dyno; a restarted agent will not adopt it")
            }
            Err(e) => warn!(error = %e, "failed to record the dyno"),
        }
    }

    /// Watches a running dyno until it exits, is stopped, or is left for the next agent (`None`).
    async fn supervise(
        &mut self,
        running: RunningDyno,
        port: Option<u16>,
        orders: &mut watch::Receiver<Option<Order>>,
    ) -> Option<End> {
        let RunningDyno {
            pid,
            output,
            mut exit,
            group,
            detach_output,
        } = running;
        self.inner.update(
            &self.spec.dyno_id,
            |s| {
                s.pid = Some(pid);
                s.port = port;
            },
            false,
        );
        let mut pump = {
            let outbox = self.inner.outbox.clone();
            let (app, process) = (self.spec.app.clone(), self.spec.name.clone());
            // A file keeps what is not read yet: reading it waits for room instead of shedding.
            let paced = detach_output.is_some();
            let skipped_from = detach_output.clone();
            tokio::spawn(
                async move {
                    let emit = |message: String| {
                        if let Some(skipped) = skipped_from.as_ref().map(|c| c.take_skipped()).filter(|&n| n > 0) {
                            outbox.push_log(LogLine {
                                at: now_micros(),
                                app: app.clone(),
                                source: LogSource::System,
                                process: process.clone(),
                                message: format!(
                                    "Error L10 (output buffer overflow) -> {skipped} bytes of output were skipped while they could not be sent"
                                ),
                            });
                        }
                        outbox.push_log(LogLine {
                            at: now_micros(),
                            app: app.clone(),
                            source: LogSource::App,
                            process: process.clone(),
                            message,
                        })
                    };
                    let room = paced.then_some(&*outbox);
                    if let Err(e) = read_lines_paced(output, emit, room).await {
                        warn!(error = %e, "failed to read dyno output");
                    }
                }
                .in_current_span(),
            )
        };
        if port.is_none() && self.state == DynoState::Starting {
            self.change_state(DynoState::Up);
        }
        let boot_timeout = self.inner.config.boot_timeout;
        let boot_deadline = Instant::now() + boot_timeout;
        let mut stats_tick = tokio::time::interval(self.inner.config.stats_interval);
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quota = self.spec.size.memory_mb() * MIB;
        let mut r15_logged = false;
        let check = match &self.spec.check {
            Some(c) if !self.spec.one_off => Some(c.clone()),
            _ => self.spec.is_web().then(HealthCheck::default_web),
        };
        let check_interval =
            Duration::from_millis(check.as_ref().map_or(60_000, |c| c.interval_ms));
        let mut check_due = Instant::now() + check_interval;
        let mut check_run: Option<CheckRun> = None;
        let mut strikes = 0u32;
        let app_dir = self
            .inner
            .config
            .dynos_dir
            .join(&self.spec.dyno_id)
            .join("app");
        let (state, result, reason) = loop {
            let watching = check.is_some() && self.state == DynoState::Up;
            let booting = self.state == DynoState::Starting && port.is_some();
            tokio::select! {
                result = &mut exit => {
                    // Whatever the main process left behind goes with it.
                    signal(&*group, DynoSignal::Kill);
                    let state = if self.spec.one_off { DynoState::Down } else { DynoState::Crashed };
                    break (state, result, "Process exited".to_string());
                }
                order = ordered(orders) => match order {
                    Order::Stop(req) => {
                        let result = self.stop_process(&req, &mut exit, &*group).await;
                        break (DynoState::Down, result, req.reason.to_string());
                    }
                    Order::Detach => {
                        self.detach(detach_output, pump).await;
                        return None;
                    }
                },
                () = port_accepting(port), if booting => {
                    self.change_state(DynoState::Up);
                    check_due = Instant::now() + check_interval;
                }
                () = tokio::time::sleep_until(check_due), if watching && check_run.is_none() => {
                    let c = check.clone().expect("watching implies a check");
                    check_run = Some(Box::pin(run_check(c, port, app_dir.clone())));
                }
                outcome = poll_check(&mut check_run) => {
                    check_run = None;
                    check_due = Instant::now() + check_interval;
                    let c = check.as_ref().expect("a check ran");
                    match outcome {
                        Ok(()) => {
                            if strikes > 0 {
                                self.system("Health check passed again");
                                self.set_healthy(true);
                            }
                            strikes = 0;
                        }
                        Err(why) => {
                            strikes += 1;
                            if strikes == 1 {
                                self.set_healthy(false);
                            }
                            self.system(format!(
                                "Health check failed ({strikes} of {}): {why}",
                                c.failures
                            ));
                            if strikes >= c.failures {
                                self.system(format!(
                                    "Dyno unresponsive: {strikes} failed health checks in a row; stopping it with SIGKILL"
                                ));
                                signal(&*group, DynoSignal::Kill);
                                let result = (&mut exit).await;
                                break (DynoState::Crashed, result, "Health check failed".to_string());
                            }
                        }
                    }
                }
                _ = stats_tick.tick() => {
                    if let Some(usage) = group.stats() {
                        quota = usage.memory_quota_bytes;
                        self.report_stats(&usage);
                    }
                    // The kernel killed only one process; Heroku ends the whole dyno on R15.
                    if group.oom_killed() {
                        r15_logged = true;
                        self.system(r15_message(quota));
                        self.system("Stopping process with SIGKILL");
                        signal(&*group, DynoSignal::Kill);
                        let result = (&mut exit).await;
                        break (DynoState::Crashed, result, "Memory quota vastly exceeded".to_string());
                    }
                }
                () = tokio::time::sleep_until(boot_deadline), if booting => {
                    self.system(format!(
                        "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within {} seconds of launch",
                        secs(boot_timeout)
                    ));
                    self.system("Stopping process with SIGKILL");
                    signal(&*group, DynoSignal::Kill);
                    let result = (&mut exit).await;
                    break (DynoState::Crashed, result, "Boot timeout".to_string());
                }
            }
        };
        // The app's last lines come before the platform's verdict.
        if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, &mut pump)
            .await
            .is_err()
        {
            debug!("output still open after the dyno exited; no longer reading it");
            pump.abort();
        }
        if !r15_logged && group.oom_killed() {
            self.system(r15_message(quota));
        }
        let exit_code = match result {
            Ok(exit) => {
                self.system(format!("Process exited with status {}", exit.code()));
                Some(exit.code())
            }
            Err(e) => {
                warn!(error = %e, "could not learn how the dyno exited");
                None
            }
        };
        Some(End {
            state,
            exit_code,
            reason,
        })
    }

    /// Reads the dyno's output up to now and lets go of it, leaving its processes and files for
    /// the next agent.
    async fn detach(
        &self,
        output: Option<crate::tail::TailControl>,
        mut pump: tokio::task::JoinHandle<()>,
    ) {
        if let Some(output) = output {
            output.finish();
        }
        if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, &mut pump)
            .await
            .is_err()
        {
            pump.abort();
        }
        info!("left the dyno running for the next agent");
        self.inner.lock().dynos.remove(&self.spec.dyno_id);
        self.inner.outbox.forget_stats(&self.spec.dyno_id);
    }

    /// Queues the sample for the coordinator and logs R14 when the dyno is over its quota.
    fn report_stats(&self, usage: &Usage) {
        self.inner.outbox.push_stats(DynoStats {
            dyno_id: self.spec.dyno_id.clone(),
            at: now_micros(),
            memory_rss_bytes: usage.memory_rss_bytes,
            memory_cache_bytes: usage.memory_cache_bytes,
            memory_swap_bytes: usage.memory_swap_bytes,
            memory_quota_bytes: usage.memory_quota_bytes,
            cpu_usage_usec: usage.cpu_usage_usec,
            pids: usage.pids,
        });
        if let Some(line) = r14_message(usage.memory_total_bytes(), usage.memory_quota_bytes) {
            self.system(line);
        }
    }

    async fn fetch_slug(&self) -> Result<PathBuf, StartError> {
        let id = &self.spec.dyno_id;
        if !valid_dyno_id(id) {
            return Err(StartError::InvalidId(id.clone()));
        }
        Ok(self.inner.slugs.ensure(&self.spec.slug).await?)
    }

    /// The dyno's own `/app` from the slug (as its runtime makes it), and its port.
    async fn prepare(&self, slug_dir: PathBuf) -> Result<Launch, StartError> {
        let id = &self.spec.dyno_id;
        let dyno_dir = self.inner.config.dynos_dir.join(id);
        let port = if self.spec.is_web() {
            Some(free_port().map_err(StartError::Port)?)
        } else {
            None
        };
        let launch = Launch {
            app_dir: dyno_dir.join("app"),
            slug_dir,
            command: self.spec.command.clone(),
            dyno_name: self.spec.name.clone(),
            port,
            env: self.spec.env.clone(),
            size: self.spec.size,
        };
        let (runtime, ready) = (self.inner.runtime.clone(), launch.clone());
        tokio::task::spawn_blocking(move || {
            remove_tree(&dyno_dir)?;
            fs::create_dir_all(&dyno_dir)?;
            runtime.prepare(&ready)
        })
        .await
        .map_err(|e| StartError::Task(e.to_string()))?
        .map_err(|source| StartError::Copy {
            path: launch.app_dir.clone(),
            source,
        })?;
        Ok(launch)
    }

    fn failed_start(&self, e: StartError) -> End {
        let reason = e.to_string();
        warn!(error = %reason, "dyno failed to start");
        self.system(format!("Failed to start process: {reason}"));
        End {
            state: DynoState::Crashed,
            exit_code: None,
            reason,
        }
    }

    /// SIGTERM to the group, up to `grace` for every process to go, then SIGKILL (R12).
    async fn stop_process(
        &self,
        req: &StopRequest,
        exit: &mut BoxFuture<'static, Result<Exit, RuntimeError>>,
        group: &dyn ProcessGroup,
    ) -> Result<Exit, RuntimeError> {
        info!(grace_ms = req.grace.as_millis() as u64, "stopping dyno");
        self.system("Stopping all processes with SIGTERM");
        signal(group, DynoSignal::Term);
        let deadline = Instant::now() + req.grace;
        let main = tokio::time::timeout_at(deadline, &mut *exit).await.ok();
        let all_gone = main.is_some()
            && tokio::time::timeout_at(deadline, async {
                while group.alive() {
                    tokio::time::sleep(GROUP_POLL).await;
                }
            })
            .await
            .is_ok();
        if !all_gone {
            self.system(format!(
                "Error R12 (Exit timeout) -> At least one process failed to exit within {} seconds of SIGTERM",
                secs(req.grace)
            ));
            self.system("Stopping process with SIGKILL");
            signal(group, DynoSignal::Kill);
        }
        match main {
            Some(result) => result,
            None => exit.await,
        }
    }

    async fn finish(self, end: End) {
        self.system(format!(
            "State changed from {} to {}",
            self.state.as_str(),
            end.state.as_str()
        ));
        info!(state = end.state.as_str(), exit_code = ?end.exit_code, reason = %end.reason, "dyno ended");
        // Moved aside first, so a restart under the same id gets a clean directory at once.
        let trash = valid_dyno_id(&self.spec.dyno_id)
            .then(|| {
                let dir = self.inner.config.dynos_dir.join(&self.spec.dyno_id);
                let seq = self.inner.trash_seq.fetch_add(1, Ordering::Relaxed);
                let trash = self
                    .inner
                    .config
                    .dynos_dir
                    .join(format!(".trash-{}-{seq}", self.spec.dyno_id));
                fs::rename(&dir, &trash).ok().map(|()| trash)
            })
            .flatten();
        self.inner.forget(&self.spec.dyno_id, |s| {
            s.state = end.state;
            s.exit_code = end.exit_code;
            s.reason = Some(end.reason);
            s.at = now_micros();
        });
        if let Some(trash) = trash {
            let removed = tokio::task::spawn_blocking(move || remove_tree(&trash)).await;
            if let Ok(Err(e)) = removed {
                warn!(error = %e, "failed to delete the dyno's directory");
            }
        }
    }
}

fn signal(group: &dyn ProcessGroup, sig: DynoSignal) {
    if let Err(e) = group.signal(sig) {
        warn!(error = %e, "failed to signal dyno");
    }
}

async fn ordered(orders: &mut watch::Receiver<Option<Order>>) -> Order {
    let order = orders
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|o| o.clone());
    match order {
        Some(order) => order,
        // The registry holds the sender until this task ends, so this is never reached.
        None => std::future::pending().await,
    }
}

/// Completes once something accepts TCP connections on 127.0.0.1:`port`.
type CheckRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// The running check's outcome; never completes while none runs.
async fn poll_check(run: &mut Option<CheckRun>) -> Result<(), String> {
    match run {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// One health check: `$PORT` accepts (or answers `GET path` below 500), or the heartbeat file
/// under the dyno's `/app` was touched recently, all within the check's timeout.
async fn run_check(check: HealthCheck, port: Option<u16>, app_dir: PathBuf) -> Result<(), String> {
    let timeout = Duration::from_millis(check.timeout_ms);
    if let Some(file) = &check.file {
        let path = app_dir.join(file.trim_start_matches('/'));
        let modified = tokio::fs::metadata(&path)
            .await
            .and_then(|m| m.modified())
            .map_err(|e| format!("heartbeat file /app/{file}: {e}"))?;
        let age = modified.elapsed().unwrap_or_default();
        return if age <= timeout {
            Ok(())
        } else {
            Err(format!(
                "heartbeat file /app/{file} last touched {:.1} s ago",
                age.as_secs_f64()
            ))
        };
    }
    let Some(port) = port else {
        return Ok(());
    };
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("$PORT {port} refused the connection: {e}"))?;
        let Some(path) = &check.path else {
            return Ok(());
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: dyno-health-check\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head)
            .await
            .map_err(|e| format!("GET {path}: no answer ({e})"))?;
        let status: u16 = std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|_| head.starts_with(b"HTTP/1."))
            .ok_or_else(|| format!("GET {path}: not an HTTP answer"))?;
        if status < 500 {
            Ok(())
        } else {
            Err(format!("GET {path} answered {status}"))
        }
    };
    let what = match &check.path {
        Some(path) => format!("GET {path}"),
        None => format!("$PORT {port}"),
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{what}: no answer within {:.1} s",
            timeout.as_secs_f64()
        )),
    }
}

async fn port_accepting(port: Option<u16>) {
    let Some(port) = port else {
        return std::future::pending().await;
    };
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return;
        }
        tokio::time::sleep(PORT_POLL).await;
    }
}

/// A port nobody listens on right now: bind port 0, read it, let it go.
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port())
}

/// Heroku's `mem=1028MB(100.4%)`: MiB rounded, percentage of the quota to one decimal.
fn memory_usage(used: u64, quota: u64) -> String {
    let percent = if quota == 0 {
        0.0
    } else {
        used as f64 * 100.0 / quota as f64
    };
    format!("mem={}MB({percent:.1}%)", (used + MIB / 2) / MIB)
}

/// The R14 line when `used` (RSS plus swap) is above `quota`.
pub fn r14_message(used: u64, quota: u64) -> Option<String> {
    (quota > 0 && used > quota).then(|| {
        format!(
            "Error R14 (Memory quota exceeded) -> {}",
            memory_usage(used, quota)
        )
    })
}

/// The R15 line. The kernel kills at the hard limit, 2x the quota, so that is the usage shown:
/// the last sample may be seconds older than the kill.
pub fn r15_message(quota: u64) -> String {
    format!(
        "Error R15 (Memory quota vastly exceeded) -> {}",
        memory_usage(2 * quota, quota)
    )
}

/// `60` for whole seconds, `0.5` otherwise.
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

pub fn valid_dyno_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DYNO_ID_BYTES
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Removes a file or a whole tree; a missing path is fine. Directories the app made read-only
/// are made writable first.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    make_dirs_writable(path);
    fs::remove_dir_all(path)
}

fn make_dirs_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::symlink_metadata(dir)
        && meta.is_dir()
    {
        let mode = meta.permissions().mode() | 0o700;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode));
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}

/// Removes everything inside `dir`.
pub fn clear_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        remove_tree(&entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_shared::protocol::Isolation;

    struct FailingRuntime;

    impl Runtime for FailingRuntime {
        fn isolation(&self) -> Isolation {
            Isolation::None
        }
        fn start(&self, launch: &Launch) -> Result<RunningDyno, RuntimeError> {
            Err(RuntimeError::Spawn {
                command: launch.command.clone(),
                dir: launch.app_dir.clone(),
                source: io::Error::new(io::ErrorKind::PermissionDenied, "no exec for you"),
            })
        }
    }

    fn spec(id: &str, slug: &str) -> DynoSpec {
        DynoSpec {
            dyno_id: id.into(),
            app: "shop".into(),
            name: "worker.1".into(),
            process_type: "worker".into(),
            release: 1,
            slug: slug.into(),
            command: "true".into(),
            env: Default::default(),
            size: Default::default(),
            one_off: false,
            generation: 1,
            check: None,
        }
    }

    async fn final_state(outbox: &Outbox, id: &str) -> DynoStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = outbox
                .take_states()
                .into_iter()
                .find(|s| s.dyno_id == id && !s.state.is_running())
            {
                return s;
            }
            assert!(Instant::now() < deadline, "no final state for {id}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn messages(outbox: &Outbox) -> Vec<String> {
        let mut all = Vec::new();
        loop {
            let batch = outbox.take_logs();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch.into_iter().map(|l| l.message));
        }
    }

    #[tokio::test]
    async fn failed_starts_crash_with_the_reason() {
        let state = tempfile::tempdir().unwrap();
        let sha = "ab".repeat(32);
        fs::create_dir_all(state.path().join("slugs").join(&sha)).unwrap();
        fs::create_dir_all(state.path().join("dynos")).unwrap();
        let slugs =
            SlugCache::open(&state.path().join("slugs"), "http://127.0.0.1:9", "t").unwrap();
        let outbox = Arc::new(Outbox::new());
        let sup = Supervisor::new(
            SupervisorConfig {
                dynos_dir: state.path().join("dynos"),
                boot_timeout: Duration::from_secs(5),
                stats_interval: STATS_INTERVAL,
            },
            Arc::new(FailingRuntime),
            Arc::new(slugs),
            outbox.clone(),
        );

        sup.start(spec("d1", &sha));
        let s = final_state(&outbox, "d1").await;
        assert_eq!(s.state, DynoState::Crashed);
        assert!(
            s.reason.as_deref().unwrap().contains("no exec for you"),
            "{s:?}"
        );
        let logs = messages(&outbox);
        assert!(
            logs.iter()
                .any(|m| m.starts_with("Failed to start process:") && m.contains("no exec")),
            "{logs:?}"
        );
        assert!(logs.contains(&"State changed from starting to crashed".to_string()));
        assert!(sup.statuses().is_empty(), "a crashed dyno is forgotten");
        assert!(!state.path().join("dynos/d1").exists());

        // A bad slug id and a path-like dyno id never reach the filesystem.
        sup.start(spec("d2", "../../etc"));
        let s = final_state(&outbox, "d2").await;
        assert!(s.reason.unwrap().contains("invalid slug id"));
        sup.start(spec("../escape", &sha));
        let s = final_state(&outbox, "../escape").await;
        assert!(s.reason.unwrap().contains("invalid dyno id"));
        sup.shutdown(Duration::from_secs(1)).await;
    }

    #[test]
    fn r14_only_above_the_quota_in_herokus_form() {
        let quota = 1024 * MIB;
        assert_eq!(r14_message(quota, quota), None, "at the quota is fine");
        assert_eq!(r14_message(5 * MIB, 0), None, "no quota, no R14");
        assert_eq!(
            r14_message(1028 * MIB, quota).as_deref(),
            Some("Error R14 (Memory quota exceeded) -> mem=1028MB(100.4%)")
        );
        assert_eq!(
            r14_message(1058 * MIB, quota).unwrap(),
            "Error R14 (Memory quota exceeded) -> mem=1058MB(103.3%)"
        );
        assert_eq!(
            r15_message(512 * MIB),
            "Error R15 (Memory quota vastly exceeded) -> mem=1024MB(200.0%)"
        );
    }

    #[test]
    fn ids_and_seconds() {
        assert!(valid_dyno_id("0193a2b4-web-1"));
        assert!(!valid_dyno_id(".."));
        assert!(!valid_dyno_id("a/b"));
        assert!(!valid_dyno_id(""));
        assert!(!valid_dyno_id(&"a".repeat(MAX_DYNO_ID_BYTES + 1)));
        assert!(valid_dyno_id(&"a".repeat(MAX_DYNO_ID_BYTES)));
        assert_eq!(secs(Duration::from_secs(60)), "60");
        assert_eq!(secs(Duration::from_millis(500)), "0.5");
    }
}
