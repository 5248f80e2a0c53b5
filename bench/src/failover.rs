//! Failover: the time from a host's death (its agent and every dyno on it, SIGKILL) to each of its
//! dynos `up` on another host, with the coordinator's default settings (no
//! `--host-lost-after-secs`: a host silent for 5 s is lost). Three agents run as separate hosts
//! (plain runtime) on 127.0.0.1, .2 and .3; an app is scaled to web=3 worker=3 so each host runs
//! dynos; the host with the most dynos is killed (at a random point of its heartbeat second,
//! while requests run through the router). Polling `GET /apps/APP/dynos` and `GET /hosts`
//! every 10 ms gives, per round: when the coordinator shows the host `away` (its connection
//! dropped), `lost`, when every dyno of the host was ordered to start elsewhere (its host changed)
//! and when all of them are `up` there. Requests through the router are counted during the
//! failover and must all succeed after it. Between rounds the killed agent is started again and
//! rejoins, and the app is scaled to 0 and back so every host runs dynos again; among hosts with
//! as many dynos, the victim rotates.
//!
//! Goal: under 10 s with default settings (Nomad's defaults take 20 s or more, Kubernetes'
//! minutes).
//!
//! Run: `cargo build --release -p dyno-bench --bin bench-failover -p dyno-agent
//! -p dyno-coordinator -p dyno-console -p dyno-tests && ./target/release/bench-failover [ROUNDS]`

use anyhow::{Context, Result, bail, ensure};
use dyno_tests::{Platform, bin_dir, free_port, process_groups_under};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

const APP: &str = "failover";
const PROCFILE: &str = "web: dyno-probe web\nworker: dyno-probe worker\n";
const FORMATION: [&str; 2] = ["web=3", "worker=3"];
const DYNOS: usize = 6;
const HOSTS: [(&str, &str); 3] = [
    ("host-1", "127.0.0.1"),
    ("host-2", "127.0.0.2"),
    ("host-3", "127.0.0.3"),
];
const POLL: Duration = Duration::from_millis(10);
const GOAL: Duration = Duration::from_secs(10);
/// The coordinator's default `--host-lost-after-secs`, for the explanation printed.
const DEFAULT_LOST_AFTER_SECS: u64 = 5;
/// Give up on a round after this long (the goal is 10 s).
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
const ROUTER_CHECKS: usize = 20;

/// Set by SIGINT/SIGTERM/SIGHUP: every wait stops and the guards clean up.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// signal-hook's handler only sets the flag. Handlers, unlike a blocked signal mask, are not
/// passed on to the children this starts.
fn catch_signals() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register(sig, Arc::clone(&INTERRUPTED))
            .with_context(|| format!("cannot catch signal {sig}"))?;
    }
    Ok(())
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Polls `f` every 50 ms until it returns a value, `timeout` passes or a signal arrives.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        check_interrupted()?;
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A release binary beside this one, or an error saying how to build it.
fn need(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    ensure!(
        p.exists(),
        "{} is not built: cargo build --release -p dyno-agent -p dyno-coordinator -p dyno-console \
         -p dyno-tests",
        p.display()
    );
    Ok(p)
}

/// The control API over one keep-alive connection pool (polling every 10 ms).
struct Api {
    http: ureq::Agent,
    base: String,
    auth: String,
}

impl Api {
    fn get(&self, path: &str) -> Result<Value> {
        self.http
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .call()
            .with_context(|| format!("GET {path}"))?
            .into_json()
            .with_context(|| format!("GET {path}: not JSON"))
    }

    fn scale(&self, args: &[&str]) -> Result<()> {
        self.http
            .post(&format!("{}/apps/{APP}/formation/scale", self.base))
            .set("Authorization", &self.auth)
            .send_json(serde_json::json!({ "args": args }))
            .with_context(|| format!("scale {args:?}"))?;
        Ok(())
    }

    /// name -> state of every host.
    fn hosts(&self) -> Result<BTreeMap<String, String>> {
        let v = self.get("/hosts")?;
        let list = v.as_array().context("GET /hosts: not a list")?;
        Ok(list
            .iter()
            .filter_map(|h| {
                Some((
                    h["name"].as_str()?.to_string(),
                    h["state"].as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// Every dyno of the app: name -> (id, host, state).
    fn placement(&self) -> Result<BTreeMap<String, Placed>> {
        let v = self.get(&format!("/apps/{APP}/dynos"))?;
        let list = v.as_array().context("GET dynos: not a list")?;
        Ok(list
            .iter()
            .filter_map(|d| {
                Some((
                    d["name"].as_str()?.to_string(),
                    Placed {
                        id: d["id"].as_str()?.to_string(),
                        host: d["host"].as_str().unwrap_or("").to_string(),
                        state: d["state"].as_str()?.to_string(),
                    },
                ))
            })
            .collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Placed {
    id: String,
    host: String,
    state: String,
}

/// The platform: the coordinator (owned by `p`, stopped by its Drop) and three agents with
/// their dynos (stopped by this Drop, which runs first). The temp dir goes with `p`.
struct Fleet {
    agents: BTreeMap<String, Child>,
    p: Platform,
    api: Api,
}

impl Fleet {
    fn start() -> Result<Fleet> {
        let dir = tempfile::Builder::new()
            .prefix("bench-failover-")
            .tempdir()?;
        let api_port = free_port();
        let token = format!("bench-{}", std::process::id());
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let mut f = Fleet {
            agents: BTreeMap::new(),
            api: Api {
                http,
                base: format!("http://127.0.0.1:{api_port}"),
                auth: format!("Bearer {token}"),
            },
            p: Platform {
                dir,
                api_port,
                router_port: free_port(),
                token,
                coordinator: None,
                agent: None,
                crash_backoff: String::new(),
                agent_args: Vec::new(),
                coordinator_args: Vec::new(),
                listen_ip: "127.0.0.1".into(),
            },
        };
        // Not `Platform::start_coordinator`: it adds test settings. Only addresses, the state
        // directory and the token here; everything else is the coordinator's default.
        let child = Command::new(need("dyno-coordinator")?)
            .args(["--listen", &format!("127.0.0.1:{}", f.p.api_port)])
            .args(["--router", &format!("127.0.0.1:{}", f.p.router_port)])
            .arg("--state-dir")
            .arg(f.p.dir.path().join("coordinator"))
            .args(["--token", &f.p.token])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.log("coordinator")?)
            .stderr(f.log("coordinator")?)
            // Its own process group: a Ctrl-C reaches only this benchmark, which cleans up.
            .process_group(0)
            .spawn()
            .context("start dyno-coordinator")?;
        f.p.coordinator = Some(child);
        wait_for("coordinator health", Duration::from_secs(20), || {
            if let Some(c) = f.p.coordinator.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("dyno-coordinator exited with {status}");
            }
            let health = f.api.http.get(&format!("{}/healthz", f.api.base)).call();
            Ok(health.ok().map(|_| ()))
        })?;
        for (name, _) in HOSTS {
            f.start_agent(name)?;
        }
        f.wait_connected(&HOSTS.map(|(n, _)| n))?;
        Ok(f)
    }

    fn log(&self, name: &str) -> Result<std::fs::File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.p.dir.path().join(format!("{name}.log")))?)
    }

    fn state_dir(&self, host: &str) -> PathBuf {
        self.p.dir.path().join(host)
    }

    fn start_agent(&mut self, name: &str) -> Result<()> {
        let addr = HOSTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .context("unknown host")?;
        let child = Command::new(need("dyno-agent")?)
            .args(["--coordinator", &self.api.base])
            .args(["--token", &self.p.token])
            .arg("--state-dir")
            .arg(self.state_dir(name))
            .args(["--name", name, "--address", addr, "--isolation", "none"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(self.log(name)?)
            .stderr(self.log(name)?)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start dyno-agent {name}"))?;
        self.agents.insert(name.to_string(), child);
        Ok(())
    }

    fn wait_connected(&self, names: &[&str]) -> Result<()> {
        wait_for(
            &format!("{names:?} connected"),
            Duration::from_secs(30),
            || {
                let hosts = self.api.hosts()?;
                Ok(names
                    .iter()
                    .all(|n| hosts.get(*n).is_some_and(|s| s == "connected"))
                    .then_some(()))
            },
        )
    }

    /// Process groups of the dynos running on `host`, from their working directories.
    fn groups(&self, host: &str) -> BTreeSet<i32> {
        process_groups_under(&self.state_dir(host).join("dynos"))
    }

    /// Scales the app and waits until exactly `n` dynos are listed, all `up`.
    fn scale_and_wait(&self, args: &[&str], n: usize) -> Result<BTreeMap<String, Placed>> {
        self.api.scale(args)?;
        wait_for(
            &format!("{n} dynos up after scaling {args:?}"),
            Duration::from_secs(60),
            || {
                let pl = self.api.placement()?;
                Ok((pl.len() == n && pl.values().all(|d| d.state == "up")).then_some(pl))
            },
        )
    }

    /// Last lines of the logs, for a failed run.
    fn dump_logs(&self, names: &[&str]) {
        for name in names {
            let log = std::fs::read_to_string(self.p.dir.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(25).collect();
            eprintln!("--- last lines of {name}.log ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn signal_group(pgrp: i32, sig: libc::c_int) {
    if pgrp > 1
        && let Ok(sig) = nix::sys::signal::Signal::try_from(sig)
    {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgrp), sig);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The coordinator's log is dumped by `Platform`'s Drop.
            self.dump_logs(&HOSTS.map(|(h, _)| h));
        }
        // SIGTERM: the plain-runtime agent stops its dynos on the way out.
        for child in self.agents.values() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in self.agents.values_mut() {
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.agents.clear();
        // Whatever still runs in a host's dyno directories (a killed host's, a slow stop).
        for (name, _) in HOSTS {
            for g in self.groups(name) {
                signal_group(g, libc::SIGKILL);
            }
        }
        // Then `p` drops: the coordinator gets SIGTERM (SIGKILL after 5 s), the temp dir goes.
    }
}

/// Requests to the app through the router from a background thread until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(router_port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), ok.clone());
        let thread = std::thread::spawn(move || {
            let http = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build();
            let mut failed = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match route(&http, router_port) {
                    Ok(()) => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed.push(format!("{e:#}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failed
        });
        Load {
            stop,
            ok,
            thread: Some(thread),
        }
    }

    /// (answered 200, the failures).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failed = self
            .thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `GET /` through the router with the app's Host header; Ok when it answers 200.
fn route(http: &ureq::Agent, router_port: u16) -> Result<()> {
    let r = http
        .get(&format!("http://127.0.0.1:{router_port}/"))
        .set("Host", &format!("{APP}.localhost"))
        .call();
    match r {
        Ok(r) if r.status() == 200 => Ok(()),
        Ok(r) => bail!("status {}", r.status()),
        Err(ureq::Error::Status(code, r)) => {
            let body = r.into_string().unwrap_or_default();
            bail!("status {code}: {}", body.trim())
        }
        Err(e) => Err(e.into()),
    }
}

struct Round {
    victim: String,
    moved: usize,
    away: Duration,
    lost: Duration,
    ordered: Duration,
    up: Duration,
    load_ok: u64,
    load_failed: usize,
    router_after: usize,
}

fn round(f: &mut Fleet, n: usize) -> Result<Round> {
    // Every host connected and running dynos: a fresh spread.
    f.wait_connected(&HOSTS.map(|(h, _)| h))?;
    if n > 0 {
        f.scale_and_wait(&["web=0", "worker=0"], 0)?;
    }
    let before = f.scale_and_wait(&FORMATION, DYNOS)?;
    let mut per_host: BTreeMap<&str, usize> = HOSTS.iter().map(|(h, _)| (*h, 0)).collect();
    for d in before.values() {
        if let Some(c) = per_host.get_mut(d.host.as_str()) {
            *c += 1;
        }
    }
    // The host with the most dynos; among equals, a different one each round.
    let most = per_host.values().copied().max().unwrap_or(0);
    let victim = (0..HOSTS.len())
        .map(|i| HOSTS[(n + i) % HOSTS.len()].0)
        .find(|h| per_host[h] == most)
        .context("no hosts")?
        .to_string();
    let on_victim: Vec<String> = before
        .iter()
        .filter(|(_, d)| d.host == victim)
        .map(|(name, _)| name.clone())
        .collect();
    ensure!(!on_victim.is_empty(), "no dynos on any host: {before:?}");
    let groups = f.groups(&victim);
    ensure!(
        groups.len() == on_victim.len(),
        "{victim} runs {} dyno process groups, the coordinator lists {on_victim:?}",
        groups.len()
    );

    let load = Load::start(f.p.router_port);
    // Heartbeats come every second: kill at a random point of that second, so rounds do not all
    // sample the same phase.
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::thread::sleep(Duration::from_millis(300) + Duration::from_nanos(jitter.into()));

    // The host dies: its agent and all its dynos, SIGKILL, nothing said to anyone.
    let mut agent = f.agents.remove(&victim).context("victim agent runs")?;
    let t0 = Instant::now();
    let _ = agent.kill();
    for &g in &groups {
        signal_group(g, libc::SIGKILL);
    }
    agent.wait()?;
    let killed_in = t0.elapsed();
    wait_for(
        "the killed host's dynos gone",
        Duration::from_secs(5),
        || {
            let left = f.groups(&victim);
            for &g in &left {
                signal_group(g, libc::SIGKILL);
            }
            Ok(left.is_empty().then_some(()))
        },
    )?;

    let (mut away, mut lost, mut ordered) = (None, None, None);
    let up = loop {
        check_interrupted()?;
        let tick = Instant::now();
        let hosts = f.api.hosts()?;
        let pl = f.api.placement()?;
        let seen = t0.elapsed();
        match hosts.get(&victim).map(String::as_str) {
            Some("away") => {
                away.get_or_insert(seen);
            }
            Some("lost") => {
                away.get_or_insert(seen);
                lost.get_or_insert(seen);
            }
            _ => {}
        }
        let moved: Vec<&Placed> = on_victim
            .iter()
            .filter_map(|name| pl.get(name))
            .filter(|d| !d.host.is_empty() && d.host != victim)
            .collect();
        if moved.len() == on_victim.len() {
            ordered.get_or_insert(seen);
            if moved.iter().all(|d| d.state == "up") {
                break seen;
            }
        }
        ensure!(
            seen < ROUND_TIMEOUT,
            "round {}: {victim}'s dynos not all up elsewhere after {ROUND_TIMEOUT:?}: {pl:?}",
            n + 1
        );
        std::thread::sleep(POLL.saturating_sub(tick.elapsed()));
    };
    let after = f.api.placement()?;
    let (load_ok, load_failed) = load.finish();

    // Through the router after: every request answered.
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let mut router_after = 0;
    let mut router_errors = Vec::new();
    for _ in 0..ROUTER_CHECKS {
        match route(&http, f.p.router_port) {
            Ok(()) => router_after += 1,
            Err(e) => router_errors.push(format!("{e:#}")),
        }
    }
    ensure!(
        router_errors.is_empty(),
        "round {}: {} of {ROUTER_CHECKS} requests through the router failed after the failover: \
         {router_errors:?}",
        n + 1,
        router_errors.len()
    );
    if !load_failed.is_empty() {
        eprintln!(
            "round {}: {} requests failed during the failover, first: {}",
            n + 1,
            load_failed.len(),
            load_failed[0]
        );
    }
    for (name, d) in &before {
        if d.host != victim && after.get(name) != Some(d) {
            eprintln!(
                "round {}: {name} on a live host changed: {d:?} -> {:?}",
                n + 1,
                after.get(name)
            );
        }
    }
    if killed_in > Duration::from_millis(50) {
        eprintln!("round {}: killing the host took {killed_in:?}", n + 1);
    }

    // The host comes back empty (plain dynos die with it) and rejoins.
    f.start_agent(&victim)?;
    f.wait_connected(&[victim.as_str()])?;
    Ok(Round {
        moved: on_victim.len(),
        victim,
        away: away.unwrap_or(up),
        lost: lost.context("the host was never shown lost")?,
        ordered: ordered.unwrap_or(up),
        up,
        load_ok,
        load_failed: load_failed.len(),
        router_after,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() -> Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        None => 3,
        Some(s) => match s.parse() {
            Ok(n) if n > 0 => n,
            _ => bail!("usage: bench-failover [ROUNDS]   (ROUNDS >= 1, default 3); got {s:?}"),
        },
    };
    catch_signals()?;
    for b in ["dyno-coordinator", "dyno-agent", "dyno", "dyno-probe"] {
        need(b)?;
    }
    let mut fleet = Fleet::start()?;
    let result = run(&mut fleet, rounds);
    if result.is_err() && !INTERRUPTED.load(Ordering::SeqCst) {
        fleet.dump_logs(&["coordinator", "host-1", "host-2", "host-3"]);
    }
    result
}

fn run(f: &mut Fleet, rounds: usize) -> Result<()> {
    // `deploy` drives the `dyno` CLI.
    f.p.deploy(APP, PROCFILE);
    let mut done = Vec::new();
    for n in 0..rounds {
        let r = round(f, n)?;
        eprintln!(
            "round {}: {} ({} dynos) killed, all up elsewhere in {}",
            n + 1,
            r.victim,
            r.moved,
            secs(r.up)
        );
        done.push(r);
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let argv: Vec<String> = std::env::args().collect();
    let exe = argv
        .first()
        .map_or("./target/release/bench-failover", |s| s);
    println!(
        "bench-failover: a host (its agent and all its dynos) killed with SIGKILL -> its dynos up on \
         other hosts"
    );
    println!(
        "3 agents (--isolation none) on 127.0.0.1/.2/.3, app {APP} at web=3 worker=3; coordinator \
         defaults (host lost after {DEFAULT_LOST_AFTER_SECS} s of silence, manager pass every 1 s); \
         GET /hosts and /apps/{APP}/dynos polled every {} ms; times from the kill",
        POLL.as_millis()
    );
    println!(
        "goal: all up elsewhere in under {} s with default settings (Nomad's defaults take 20 s \
         or more, Kubernetes' minutes)",
        GOAL.as_secs()
    );
    println!();
    println!(
        "round  killed  dynos     away      lost   ordered    all up   router during  router after"
    );
    for (i, r) in done.iter().enumerate() {
        println!(
            "{:>5}  {:<6}  {:>5}  {:>7}  {:>8}  {:>8}  {:>8}   {:>4} ok {:>2} err  {:>6}",
            i + 1,
            r.victim,
            r.moved,
            secs(r.away),
            secs(r.lost),
            secs(r.ordered),
            secs(r.up),
            r.load_ok,
            r.load_failed,
            format!("{}/{ROUTER_CHECKS}", r.router_after)
        );
    }
    let col = |get: fn(&Round) -> Duration| median(done.iter().map(get).collect());
    let up = col(|r| r.up);
    println!(
        "median                {:>7}  {:>8}  {:>8}  {:>8}",
        secs(col(|r| r.away)),
        secs(col(|r| r.lost)),
        secs(col(|r| r.ordered)),
        secs(up)
    );
    let worst = done.iter().map(|r| r.up).max().unwrap_or_default();
    println!();
    println!(
        "goal under {} s: {} (median {}, worst {})",
        GOAL.as_secs(),
        if worst < GOAL { "met" } else { "MISSED" },
        secs(up),
        secs(worst)
    );
    println!(
        "away = the coordinator saw the agent's connection drop; lost = GET /hosts says lost; \
         ordered = every dyno of the host had another host; all up = each of them up there"
    );
    println!("machine: {cores} cores ({cpu}), kernel {}", kernel.trim());
    println!(
        "reproduce: cargo build --release -p dyno-bench --bin bench-failover -p dyno-agent \
         -p dyno-coordinator -p dyno-console -p dyno-tests && {exe} {rounds}"
    );
    Ok(())
}
