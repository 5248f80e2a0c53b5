//! Helpers shared by the agent's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dyno_agent::outbox::Outbox;
use dyno_agent::runtime::PlainRuntime;
use dyno_agent::slugs::SlugCache;
use dyno_agent::supervisor::{Supervisor, SupervisorConfig};
use dyno_shared::logline::LogLine;
use dyno_shared::protocol::{DynoSpec, DynoState, DynoStatus};
use tokio::time::Instant;

/// Upper bound for anything a test waits on; reaching it is a failure, not a measurement.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A fake slug id and its pre-extracted tree, so no coordinator is needed.
pub fn seed_slug(state_dir: &Path, files: &[(&str, &str, u32)]) -> String {
    let sha = "5".repeat(64);
    let dir = state_dir.join("slugs").join(&sha);
    std::fs::create_dir_all(&dir).unwrap();
    for (path, content, mode) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    sha
}

pub fn spec(id: &str, name: &str, command: &str, slug: &str) -> DynoSpec {
    let (process_type, _) = name.split_once('.').unwrap();
    DynoSpec {
        dyno_id: id.to_string(),
        app: "shop".to_string(),
        name: name.to_string(),
        process_type: process_type.to_string(),
        release: 1,
        slug: slug.to_string(),
        command: command.to_string(),
        env: BTreeMap::from([("GREETING".to_string(), "hi there".to_string())]),
        size: Default::default(),
        one_off: false,
        generation: 1,
        check: None,
    }
}

pub struct Harness {
    pub state: tempfile::TempDir,
    pub sha: String,
    pub outbox: Arc<Outbox>,
    pub supervisor: Supervisor,
    states: Mutex<Vec<DynoStatus>>,
    logs: Mutex<Vec<LogLine>>,
}

impl Harness {
    pub fn new(boot_timeout: Duration, files: &[(&str, &str, u32)]) -> Self {
        Harness::with_stats_interval(boot_timeout, dyno_agent::supervisor::STATS_INTERVAL, files)
    }

    pub fn with_stats_interval(
        boot_timeout: Duration,
        stats_interval: Duration,
        files: &[(&str, &str, u32)],
    ) -> Self {
        let state = tempfile::tempdir().unwrap();
        let sha = seed_slug(state.path(), files);
        let dynos = state.path().join("dynos");
        std::fs::create_dir_all(&dynos).unwrap();
        let slugs =
            SlugCache::open(&state.path().join("slugs"), "http://127.0.0.1:9", "t").unwrap();
        let outbox = Arc::new(Outbox::new());
        let supervisor = Supervisor::new(
            SupervisorConfig {
                dynos_dir: dynos,
                boot_timeout,
                stats_interval,
            },
            Arc::new(PlainRuntime::new()),
            Arc::new(slugs),
            outbox.clone(),
        );
        Harness {
            state,
            sha,
            outbox,
            supervisor,
            states: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
        }
    }

    pub fn spec(&self, id: &str, name: &str, command: &str) -> DynoSpec {
        spec(id, name, command, &self.sha)
    }

    pub fn dyno_dir(&self, id: &str) -> PathBuf {
        self.state.path().join("dynos").join(id)
    }

    fn collect(&self) {
        self.states
            .lock()
            .unwrap()
            .extend(self.outbox.take_states());
        loop {
            let batch = self.outbox.take_logs();
            if batch.is_empty() {
                break;
            }
            self.logs.lock().unwrap().extend(batch);
        }
    }

    /// Every state reported so far for `id`, in order.
    pub fn states_of(&self, id: &str) -> Vec<DynoStatus> {
        self.collect();
        self.states
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.dyno_id == id)
            .cloned()
            .collect()
    }

    /// Waits for the `n`-th (from 1) report of `state` for `id`.
    pub async fn wait_nth_state(&self, id: &str, state: DynoState, n: usize) -> DynoStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found: Vec<_> = self
                .states_of(id)
                .into_iter()
                .filter(|s| s.state == state)
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {state:?} for {id}; got {:?}; logs {:?}",
                self.states_of(id),
                self.messages("")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_state(&self, id: &str, state: DynoState) -> DynoStatus {
        self.wait_nth_state(id, state, 1).await
    }

    /// Messages of `process` (all processes for ""), in order.
    pub fn messages(&self, process: &str) -> Vec<String> {
        self.collect();
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| process.is_empty() || l.process == process)
            .map(|l| l.message.clone())
            .collect()
    }

    pub fn lines(&self) -> Vec<LogLine> {
        self.collect();
        self.logs.lock().unwrap().clone()
    }

    pub async fn wait_message(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(m) = self.messages("").into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "message never came; got {:?}",
                self.messages("")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Asserts that `expected` appear in `all` in this order (other lines may come between).
pub fn assert_in_order(all: &[String], expected: &[&str]) {
    let mut rest = all.iter();
    for want in expected {
        assert!(
            rest.any(|m| m == want),
            "{want:?} missing or out of order in {all:#?}"
        );
    }
}

pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
