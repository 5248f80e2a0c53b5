//! Starts real coordinators and agents as processes on loopback ports and drives them through the
//! `dyno` CLI and the HTTP API. Used by the end-to-end tests and by `bench/`.

use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory cargo put the workspace's binaries in: a test's exe lives in `deps/` below it,
/// a benchmark binary beside them.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own exe path");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run the tests with `cargo test --workspace` so every binary is built",
        p.display()
    );
    p
}

/// Whether this process runs as root (effective uid 0): namespaces and cgroups need it.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: &mut Child, timeout: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Platform {
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    pub router_port: u16,
    pub token: String,
    pub coordinator: Option<Child>,
    pub agent: Option<Child>,
    pub crash_backoff: String,
    pub agent_args: Vec<String>,
    /// Added to the coordinator's command line on every start (`--metrics-interval-secs 1`).
    pub coordinator_args: Vec<String>,
    /// The address the coordinator's API listens on: 127.0.0.1, or 0.0.0.0 when agents in
    /// network namespaces must reach it.
    pub listen_ip: String,
}

impl Platform {
    /// A coordinator and one agent, both real processes.
    pub fn start() -> Platform {
        Self::start_with_backoff("0,1,2")
    }

    pub fn start_with_backoff(backoff: &str) -> Platform {
        Self::start_with(backoff, &[])
    }

    /// `agent_args` are added to the agent's command line (`--memory-mb 65536`).
    pub fn start_with(backoff: &str, agent_args: &[&str]) -> Platform {
        Self::start_full(backoff, agent_args, &[])
    }

    /// `coordinator_args` are added to the coordinator's command line, also when it is started
    /// again (`--metrics-interval-secs 1`).
    pub fn start_with_coordinator_args(coordinator_args: &[&str]) -> Platform {
        Self::start_full("0,1,2", &[], coordinator_args)
    }

    /// Like `start_with_coordinator_args`, with the API on `listen_ip` (0.0.0.0 lets agents in
    /// network namespaces reach it through their veth pairs).
    pub fn start_listening(listen_ip: &str, coordinator_args: &[&str]) -> Platform {
        Self::start_on(listen_ip, "0,1,2", &[], coordinator_args)
    }

    /// Both sets of extra arguments (`--isolation linux` for the agent, `--eco-idle-minutes 1`
    /// for the coordinator).
    pub fn start_custom(agent_args: &[&str], coordinator_args: &[&str]) -> Platform {
        Self::start_full("0,1,2", agent_args, coordinator_args)
    }

    fn start_full(backoff: &str, agent_args: &[&str], coordinator_args: &[&str]) -> Platform {
        Self::start_on("127.0.0.1", backoff, agent_args, coordinator_args)
    }

    fn start_on(
        listen_ip: &str,
        backoff: &str,
        agent_args: &[&str],
        coordinator_args: &[&str],
    ) -> Platform {
        let mut p = Platform {
            dir: tempfile::tempdir().unwrap(),
            api_port: free_port(),
            router_port: free_port(),
            token: format!("test-token-{}", std::process::id()),
            coordinator: None,
            agent: None,
            crash_backoff: backoff.to_string(),
            agent_args: agent_args.iter().map(|s| s.to_string()).collect(),
            coordinator_args: coordinator_args
                .iter()
                .map(|s| s.to_string())
                // Off loopback the API speaks TLS unless told otherwise; these tests reach
                // it over plain HTTP from their network namespaces (tests/trust.rs covers TLS).
                .chain((listen_ip != "127.0.0.1").then(|| "--insecure-http".to_string()))
                .collect(),
            listen_ip: listen_ip.to_string(),
        };
        p.start_coordinator();
        p.start_agent();
        p.wait_for_host();
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap()
    }

    pub fn start_coordinator(&mut self) {
        let child = Command::new(bin("dyno-coordinator"))
            .args(["--listen", &format!("{}:{}", self.listen_ip, self.api_port)])
            .args(["--router", &format!("127.0.0.1:{}", self.router_port)])
            .arg("--state-dir")
            .arg(self.dir.path().join("coordinator"))
            .args(["--token", &self.token])
            .args(["--crash-backoff-secs", &self.crash_backoff])
            .args(["--stop-grace-secs", "3"])
            .args(&self.coordinator_args)
            .env("RUST_LOG", "info")
            .stdout(self.log_file("coordinator"))
            .stderr(self.log_file("coordinator"))
            .spawn()
            .expect("start dyno-coordinator");
        self.coordinator = Some(child);
        let url = format!("{}/healthz", self.url());
        wait_until("coordinator health", Duration::from_secs(20), || {
            ureq::get(&url).call().ok().map(|_| ())
        });
    }

    pub fn start_agent(&mut self) {
        let child = Command::new(bin("dyno-agent"))
            .args(["--coordinator", &self.url()])
            .args(["--token", &self.token])
            .arg("--state-dir")
            .arg(self.dir.path().join("agent"))
            .args(["--name", "host-1"])
            .args(["--stop-grace-secs", "3"])
            .args(&self.agent_args)
            .env("RUST_LOG", "info")
            .stdout(self.log_file("agent"))
            .stderr(self.log_file("agent"))
            .spawn()
            .expect("start dyno-agent");
        self.agent = Some(child);
    }

    pub fn wait_for_host(&self) {
        wait_until("agent connected", Duration::from_secs(20), || {
            let hosts = self.get("/hosts").ok()?;
            hosts
                .as_array()?
                .iter()
                .any(|h| h["state"] == "connected")
                .then_some(())
        });
    }

    /// kill -9: no chance to flush or say goodbye.
    pub fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// kill -9 of the agent: its dynos are orphaned, not stopped.
    pub fn kill_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.kill().unwrap();
            a.wait().unwrap();
        }
    }

    /// SIGTERM to the agent, waiting for it to exit (it stops or leaves its dynos per `--on-exit`).
    pub fn stop_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            terminate(&mut a, Duration::from_secs(15));
        }
    }

    /// Process groups whose processes work inside the agent's dyno directories.
    pub fn dyno_process_groups(&self) -> std::collections::BTreeSet<i32> {
        process_groups_under(&self.dir.path().join("agent/dynos"))
    }

    pub fn get(&self, path: &str) -> Result<Value, String> {
        match ureq::get(&format!("{}{path}", self.url()))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
        {
            Ok(r) => r.into_json().map_err(|e| e.to_string()),
            Err(ureq::Error::Status(code, r)) => {
                Err(format!("{code} {}", r.into_string().unwrap_or_default()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The `dyno` CLI set up to talk to this platform, for callers that spawn it themselves
    /// (a `logs --tail` read while it runs).
    pub fn dyno_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("dyno"));
        c.args(args)
            .env("DYNO_COORDINATOR", self.url())
            .env("DYNO_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs the `dyno` CLI against this platform.
    pub fn dyno(&self, args: &[&str]) -> Output {
        self.dyno_command(args).output().expect("run dyno")
    }

    /// Runs the CLI and insists it succeeds; returns stdout.
    pub fn dyno_ok(&self, args: &[&str]) -> String {
        let out = self.dyno(args);
        assert!(
            out.status.success(),
            "dyno {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.dyno_ok(&a)).expect("--json prints JSON")
    }

    /// An app directory with the probe binary and the given Procfile.
    pub fn app_dir(&self, name: &str, procfile: &str) -> PathBuf {
        let dir = self.dir.path().join("src").join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::copy(bin("dyno-probe"), dir.join("bin/dyno-probe")).unwrap();
        std::fs::write(dir.join("Procfile"), procfile).unwrap();
        dir
    }

    /// Creates and deploys an app from `procfile`.
    pub fn deploy(&self, app: &str, procfile: &str) {
        self.dyno_ok(&["apps:create", app]);
        let dir = self.app_dir(app, procfile);
        self.dyno_ok(&["deploy", dir.to_str().unwrap(), "-a", app]);
    }

    pub fn dynos(&self, app: &str) -> Vec<Value> {
        self.get(&format!("/apps/{app}/dynos"))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// name -> (id, state) of every dyno of the app.
    pub fn dyno_ids(&self, app: &str) -> std::collections::BTreeMap<String, (String, String)> {
        self.dynos(app)
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_string(),
                    (
                        d["id"].as_str().unwrap().to_string(),
                        d["state"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Waits until exactly `names` are up.
    pub fn wait_up(&self, app: &str, names: &[&str]) {
        let want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        wait_until(
            &format!("{app}: {names:?} up"),
            Duration::from_secs(30),
            || {
                let d = self.dyno_ids(app);
                let up: Vec<String> = d
                    .iter()
                    .filter(|(_, (_, s))| s == "up")
                    .map(|(n, _)| n.clone())
                    .collect();
                (up == want && d.len() == want.len()).then_some(())
            },
        );
    }

    /// GET through the router with the app's Host header.
    pub fn coordinator_pid(&self) -> Option<u32> {
        self.coordinator.as_ref().map(Child::id)
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    pub fn route(&self, app: &str, path: &str) -> Result<(u16, String), String> {
        let r = ureq::get(&format!("http://127.0.0.1:{}{path}", self.router_port))
            .set("Host", &format!("{app}.localhost"))
            .timeout(Duration::from_secs(10))
            .call();
        match r {
            Ok(r) => Ok((r.status(), r.into_string().unwrap())),
            Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn logs(&self, app: &str) -> String {
        self.dyno_ok(&["logs", "-a", app, "-n", "1500"])
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // The agent first: it stops its dynos with SIGTERM on the way out.
        if let Some(mut a) = self.agent.take() {
            terminate(&mut a, Duration::from_secs(10));
        }
        if let Some(mut c) = self.coordinator.take() {
            terminate(&mut c, Duration::from_secs(5));
        }
        // Dynos of an agent a test killed with SIGKILL (or of extra agents it started in this
        // directory) outlive it: nothing of a test may outlive the test.
        for group in process_groups_under(self.dir.path()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::thread::panicking() {
            for name in ["coordinator", "agent"] {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- last lines of {name}.log ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Process groups whose processes work inside `dir` (an agent's `dynos` directory).
pub fn process_groups_under(dynos: &std::path::Path) -> std::collections::BTreeSet<i32> {
    let mut groups = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let inside =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dynos));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace()
            .collect();
        if inside
            && fields.first().is_some_and(|s| *s != "Z")
            && let Some(pgrp) = fields.get(2).and_then(|g| g.parse().ok())
        {
            groups.insert(pgrp);
        }
    }
    groups
}
