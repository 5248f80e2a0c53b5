//! Several hosts: the platform's agent (`host-1`, 127.0.0.1) and two more agents, each in its own
//! network namespace with a veth pair to this one and its own address (as root), or else as
//! separate processes on loopback addresses (127.0.0.2, .3). Covers spread, a short blip, a
//! partitioned host's loss and return without duplicates, a coordinator kill -9 that restarts
//! nothing, a killed host replaced, drain and preboot under load.

use dyno_tests::{Platform, bin, process_groups_under, wait_until};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const WEB: &str = "web: dyno-probe web\nworker: dyno-probe worker\n";
/// Seconds of silence before a host is lost, for these tests (the default is 5).
const LOST_AFTER: u64 = 2;

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A network namespace joined to this one by a veth pair: `host_ip` here, `ns_ip` inside.
struct NetNs {
    name: String,
    veth: String,
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl NetNs {
    /// None when this process cannot make namespaces (not root, no `ip`).
    fn create() -> Option<NetNs> {
        if !dyno_tests::is_root() {
            return None;
        }
        let k = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // One /30 per namespace in 10.201.B.0/24, B from the pid so parallel test binaries differ.
        let b = pid % 250;
        let net = NetNs {
            name: format!("dyno-t{pid}-{k}"),
            veth: format!("dv{}x{k}", pid % 100_000),
            host_ip: format!("10.201.{b}.{}", 4 * k + 1),
            ns_ip: format!("10.201.{b}.{}", 4 * k + 2),
        };
        let ok = ip(&["netns", "add", &net.name])
            && ip(&[
                "link", "add", &net.veth, "type", "veth", "peer", "name", "eth0", "netns",
                &net.name,
            ])
            && ip(&[
                "addr",
                "add",
                &format!("{}/30", net.host_ip),
                "dev",
                &net.veth,
            ])
            && ip(&["link", "set", &net.veth, "up"])
            && ip(&[
                "-n",
                &net.name,
                "addr",
                "add",
                &format!("{}/30", net.ns_ip),
                "dev",
                "eth0",
            ])
            && ip(&["-n", &net.name, "link", "set", "eth0", "up"])
            && ip(&["-n", &net.name, "link", "set", "lo", "up"]);
        ok.then_some(net)
    }

    /// Cuts (`false`) or restores the host's network: a partition, not a crash.
    fn link(&self, up: bool) {
        assert!(ip(&[
            "link",
            "set",
            &self.veth,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        ip(&["link", "del", &self.veth]);
        ip(&["netns", "del", &self.name]);
    }
}

struct Fleet {
    p: Platform,
    /// host-2, host-3 (host-1 is the platform's own agent).
    extra: BTreeMap<String, Child>,
    /// The namespaces of host-2 and host-3, when this process can make them.
    nets: BTreeMap<String, NetNs>,
}

impl Fleet {
    fn start() -> Fleet {
        let mut nets = BTreeMap::new();
        for name in ["host-2", "host-3"] {
            match NetNs::create() {
                Some(n) => {
                    nets.insert(name.to_string(), n);
                }
                None => {
                    eprintln!(
                        "SKIPPED network namespaces (needs root and `ip`): {name} runs as a plain process on a loopback address"
                    );
                }
            }
        }
        // Agents in namespaces reach the coordinator through their veth pair.
        let listen = if nets.is_empty() {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let p =
            Platform::start_listening(listen, &["--host-lost-after-secs", &LOST_AFTER.to_string()]);
        let mut f = Fleet {
            p,
            extra: BTreeMap::new(),
            nets,
        };
        for (name, addr) in [("host-2", "127.0.0.2"), ("host-3", "127.0.0.3")] {
            f.start_host(name, addr);
        }
        f.wait_connected(&["host-1", "host-2", "host-3"]);
        f
    }

    fn state_dir(&self, host: &str) -> PathBuf {
        match host {
            "host-1" => self.p.dir.path().join("agent"),
            other => self.p.dir.path().join(other),
        }
    }

    /// Starts the host's agent: inside its namespace (`ip netns exec` execs, so the child is the
    /// agent), else on the loopback address `addr`.
    fn start_host(&mut self, name: &str, addr: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.p.dir.path().join(format!("{name}.log")))
            .unwrap();
        let (mut cmd, coordinator, addr) = match self.nets.get(name) {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.name]).arg(bin("dyno-agent"));
                let url = format!("http://{}:{}", n.host_ip, self.p.api_port);
                (c, url, n.ns_ip.clone())
            }
            None => (
                Command::new(bin("dyno-agent")),
                self.p.url(),
                addr.to_string(),
            ),
        };
        let child = cmd
            .args(["--coordinator", &coordinator])
            .args(["--token", &self.p.token])
            .arg("--state-dir")
            .arg(self.state_dir(name))
            .args(["--name", name, "--address", &addr, "--stop-grace-secs", "3"])
            // Only host-3 is in zone b: `ps:require` tests place by it.
            .args(if name == "host-3" {
                &["--label", "zone=b"][..]
            } else {
                &[]
            })
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dyno-agent");
        self.extra.insert(name.to_string(), child);
    }

    fn agent_pid(&self, host: &str) -> Pid {
        let child = match host {
            "host-1" => self.p.agent.as_ref(),
            other => self.extra.get(other),
        };
        Pid::from_raw(child.expect("agent running").id() as i32)
    }

    fn hosts(&self) -> BTreeMap<String, serde_json::Value> {
        self.p
            .get("/hosts")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap().to_string(), h.clone()))
            .collect()
    }

    fn wait_connected(&self, names: &[&str]) {
        wait_until(
            &format!("{names:?} connected"),
            Duration::from_secs(30),
            || {
                let hosts = self.hosts();
                names
                    .iter()
                    .all(|n| hosts.get(*n).is_some_and(|h| h["state"] == "connected"))
                    .then_some(())
            },
        );
    }

    /// name -> (id, host, state) of every dyno of the app.
    fn placement(&self, app: &str) -> BTreeMap<String, (String, String, String)> {
        self.p
            .dynos(app)
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_string(),
                    (
                        d["id"].as_str().unwrap().to_string(),
                        d["host"].as_str().unwrap_or("").to_string(),
                        d["state"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    }

    /// Process groups of dynos on each host, from their working directories.
    fn groups(&self, host: &str) -> BTreeSet<i32> {
        process_groups_under(&self.state_dir(host).join("dynos"))
    }

    fn all_groups(&self) -> usize {
        ["host-1", "host-2", "host-3"]
            .iter()
            .map(|h| self.groups(h).len())
            .sum()
    }

    fn coordinator_log(&self) -> String {
        std::fs::read_to_string(self.p.dir.path().join("coordinator.log")).unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (name, child) in &mut self.extra {
            let pid = Pid::from_raw(child.id() as i32);
            // A stopped agent would never see the SIGTERM.
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            for g in process_groups_under(&self.p.dir.path().join(name).join("dynos")) {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            }
        }
    }
}

fn all_up(pl: &BTreeMap<String, (String, String, String)>, n: usize) -> bool {
    pl.len() == n && pl.values().all(|(_, _, s)| s == "up")
}

fn router_ok(f: &Fleet, app: &str) -> bool {
    ureq::get(&format!("http://127.0.0.1:{}/", f.p.router_port))
        .set("Host", &format!("{app}.localhost"))
        .timeout(Duration::from_secs(5))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

#[test]
fn dynos_spread_survive_a_blip_move_off_a_lost_host_and_are_never_duplicated_on_its_return() {
    let f = Fleet::start();
    f.p.deploy("spread", WEB);
    f.p.dyno_ok(&["ps:scale", "web=3", "-a", "spread", "--wait"]);
    let before = f.placement("spread");
    assert!(all_up(&before, 3), "{before:?}");
    let hosts: BTreeSet<&str> = before.values().map(|(_, h, _)| h.as_str()).collect();
    assert_eq!(hosts.len(), 3, "one web dyno per host: {before:?}");
    let table = f.hosts();
    for h in ["host-1", "host-2", "host-3"] {
        assert_eq!(table[h]["dynos"], 1, "{h}: {}", table[h]);
        assert_eq!(table[h]["allocated_mb"], 512, "{h}: {}", table[h]);
    }

    // A blip shorter than the loss threshold changes nothing.
    let h3 = f.agent_pid("host-3");
    kill(h3, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    kill(h3, Signal::SIGCONT).unwrap();
    std::thread::sleep(Duration::from_secs(LOST_AFTER + 1));
    assert_eq!(
        f.placement("spread"),
        before,
        "a blip moved or restarted dynos"
    );
    assert_eq!(f.hosts()["host-3"]["state"], "connected");

    // host-3 goes silent (its dynos keep running, as on a partitioned host).
    let (moved_name, (moved_id, _, _)) = before
        .iter()
        .find(|(_, (_, h, _))| h == "host-3")
        .map(|(n, v)| (n.clone(), v.clone()))
        .unwrap();
    // In a namespace the link goes down (a partition); else the agent stops (a frozen host).
    match f.nets.get("host-3") {
        Some(n) => n.link(false),
        None => kill(h3, Signal::SIGSTOP).unwrap(),
    }
    let lost_at = Instant::now();
    let after = wait_until(
        "host-3's dyno up elsewhere",
        Duration::from_secs(20),
        || {
            let pl = f.placement("spread");
            (all_up(&pl, 3) && pl[&moved_name].1 != "host-3").then_some(pl)
        },
    );
    eprintln!("replaced {moved_name} in {:?}", lost_at.elapsed());
    assert_eq!(
        after[&moved_name].0, moved_id,
        "the dyno moves under its id"
    );
    for (name, v) in &before {
        if *name != moved_name {
            assert_eq!(&after[name], v, "dynos of live hosts are untouched");
        }
    }
    assert_eq!(f.hosts()["host-3"]["state"], "lost");
    let logs = f.p.dyno_ok(&["logs", "-a", "spread", "-n", "200"]);
    assert!(
        logs.contains(&format!(
            "heroku[{moved_name}]: Host host-3 lost; starting on"
        )),
        "{logs}"
    );
    assert!(
        router_ok(&f, "spread"),
        "the router serves from the live hosts"
    );
    // Duplicated while host-3 is cut off: its copy still runs there.
    assert_eq!(f.groups("host-3").len(), 1);

    // host-3 comes back: the coordinator is the source of truth, its stale dyno stops.
    match f.nets.get("host-3") {
        Some(n) => n.link(true),
        None => kill(h3, Signal::SIGCONT).unwrap(),
    }
    f.wait_connected(&["host-3"]);
    wait_until(
        "host-3's stale dyno stopped",
        Duration::from_secs(20),
        || f.groups("host-3").is_empty().then_some(()),
    );
    assert_eq!(f.all_groups(), 3, "each web dyno runs exactly once");
    let settled = f.placement("spread");
    assert_eq!(settled, after, "the return restarted nothing");
    assert!(f.coordinator_log().contains("host lost"));
}

#[test]
fn a_killed_host_is_replaced_and_a_coordinator_kill_9_restarts_nothing() {
    let mut f = Fleet::start();
    f.p.deploy("fleet", WEB);
    f.p.dyno_ok(&["ps:scale", "web=2", "worker=2", "-a", "fleet", "--wait"]);
    let before = f.placement("fleet");
    assert!(all_up(&before, 4), "{before:?}");
    let groups_before: Vec<BTreeSet<i32>> = ["host-1", "host-2", "host-3"]
        .iter()
        .map(|h| f.groups(h))
        .collect();
    assert_eq!(groups_before.iter().map(BTreeSet::len).sum::<usize>(), 4);

    // The coordinator dies with kill -9 and comes back: the agents keep their dynos and
    // report them; nothing restarts, nothing moves.
    f.p.kill_coordinator();
    std::thread::sleep(Duration::from_millis(500));
    f.p.start_coordinator();
    f.wait_connected(&["host-1", "host-2", "host-3"]);
    wait_until("dynos reported again", Duration::from_secs(20), || {
        all_up(&f.placement("fleet"), 4).then_some(())
    });
    // Past the loss threshold: still nothing moved.
    std::thread::sleep(Duration::from_secs(LOST_AFTER + 1));
    assert_eq!(f.placement("fleet"), before);
    let groups_after: Vec<BTreeSet<i32>> = ["host-1", "host-2", "host-3"]
        .iter()
        .map(|h| f.groups(h))
        .collect();
    assert_eq!(groups_after, groups_before, "the same processes run");

    // A whole host dies: its agent and its dynos.
    let victim = ["host-2", "host-3"]
        .into_iter()
        .max_by_key(|h| f.groups(h).len())
        .unwrap();
    let on_victim: Vec<String> = before
        .iter()
        .filter(|(_, (_, h, _))| h == victim)
        .map(|(n, _)| n.clone())
        .collect();
    assert!(!on_victim.is_empty());
    let mut agent = f.extra.remove(victim).unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    for g in f.groups(victim) {
        killpg(Pid::from_raw(g), Signal::SIGKILL).unwrap();
    }
    let killed_at = Instant::now();
    let after = wait_until("replacements up elsewhere", Duration::from_secs(20), || {
        let pl = f.placement("fleet");
        (all_up(&pl, 4) && on_victim.iter().all(|n| pl[n].1 != victim)).then_some(pl)
    });
    eprintln!("replaced {on_victim:?} in {:?}", killed_at.elapsed());
    assert_eq!(f.all_groups(), 4, "four dynos run, each once: {after:?}");
    let web_hosts: BTreeSet<&str> = after
        .iter()
        .filter(|(n, _)| n.starts_with("web."))
        .map(|(_, (_, h, _))| h.as_str())
        .collect();
    assert_eq!(web_hosts.len(), 2, "web dynos still spread: {after:?}");
    assert!(router_ok(&f, "fleet"));
}

fn api(f: &Fleet, method: &str, path: &str, body: &str) -> serde_json::Value {
    let r = ureq::request(method, &format!("{}{path}", f.p.url()))
        .set("Authorization", &format!("Bearer {}", f.p.token))
        .set("Content-Type", "application/json")
        .send_string(body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    r.into_json().unwrap()
}

/// Requests to the app through the router from a background thread until stopped:
/// (answered 200, anything else with what it was).
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(f: &Fleet, app: &str) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let url = format!("http://127.0.0.1:{}/", f.p.router_port);
        let host = format!("{app}.localhost");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ok = 0;
            let mut failed = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match ureq::get(&url)
                    .set("Host", &host)
                    .timeout(Duration::from_secs(10))
                    .call()
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn a_drained_host_hands_its_dynos_over_without_a_failed_request() {
    let f = Fleet::start();
    f.p.deploy("drain", WEB);
    f.p.dyno_ok(&["ps:scale", "web=2", "worker=1", "-a", "drain", "--wait"]);
    let before = f.placement("drain");
    let victim = before["web.1"].1.clone();
    let leaving: BTreeSet<String> = before
        .iter()
        .filter(|(_, (_, h, _))| *h == victim)
        .map(|(n, _)| n.clone())
        .collect();

    let load = Load::start(&f, "drain");
    std::thread::sleep(Duration::from_millis(300));
    let host = f.p.json(&["hosts:drain", &victim]);
    assert_eq!(host["drained"], true, "{host}");
    assert!(f.p.dyno_ok(&["hosts"]).contains("connected (drained)"));
    assert_eq!(
        f.p.dyno(&["hosts:drain", "no such host"]).status.code(),
        Some(2)
    );
    assert_eq!(f.p.dyno(&["hosts:drain", "ghost"]).status.code(), Some(1));
    let after = wait_until(&format!("{victim} empty"), Duration::from_secs(40), || {
        let pl = f.placement("drain");
        (all_up(&pl, 3) && pl.values().all(|(_, h, _)| *h != victim)).then_some(pl)
    });
    wait_until("old dynos gone", Duration::from_secs(20), || {
        f.groups(&victim).is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed) = load.finish();
    assert!(ok > 20, "the load ran: {ok}");
    assert!(
        failed.is_empty(),
        "failed requests during the drain: {failed:?}"
    );
    assert_eq!(f.all_groups(), 3);
    for name in &leaving {
        assert_ne!(
            after[name].0, before[name].0,
            "{name}: a new dyno took its slot"
        );
    }
    let hosts = f.hosts();
    assert_eq!(hosts[&victim]["drained"], true);
    assert_eq!(hosts[&victim]["dynos"], 0);

    // Drained: new dynos go elsewhere. Undrained: it takes them again.
    f.p.dyno_ok(&["ps:scale", "web=4", "-a", "drain", "--wait"]);
    assert!(
        f.placement("drain").values().all(|(_, h, _)| *h != victim),
        "a drained host took a dyno"
    );
    let host = api(&f, "POST", &format!("/hosts/{victim}/undrain"), "");
    assert_eq!(host["drained"], false);
    f.p.dyno_ok(&["ps:scale", "web=5", "-a", "drain", "--wait"]);
    assert_eq!(
        f.placement("drain")["web.5"].1,
        victim,
        "spread to the emptiest host"
    );
}

#[test]
fn preboot_replaces_web_dynos_without_a_failed_request() {
    let f = Fleet::start();
    f.p.deploy("pre", WEB);
    f.p.dyno_ok(&["ps:scale", "web=2", "-a", "pre", "--wait"]);
    let feature = api(
        &f,
        "PATCH",
        "/apps/pre/features/preboot",
        r#"{"enabled":true}"#,
    );
    assert_eq!(feature["enabled"], true);
    let before = f.placement("pre");

    let load = Load::start(&f, "pre");
    std::thread::sleep(Duration::from_millis(300));
    f.p.dyno_ok(&["config:set", "COLOR=blue", "-a", "pre"]);
    let release =
        f.p.json(&["releases", "-a", "pre"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["version"].as_u64())
            .max()
            .unwrap();
    wait_until("web on the new release", Duration::from_secs(40), || {
        let d = f.p.dynos("pre");
        (d.len() == 2
            && d.iter()
                .all(|d| d["state"] == "up" && d["release"]["version"].as_u64() == Some(release)))
        .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed) = load.finish();
    assert!(ok > 20, "the load ran: {ok}");
    assert!(
        failed.is_empty(),
        "failed requests during the deploy: {failed:?}"
    );
    let after = f.placement("pre");
    for name in ["web.1", "web.2"] {
        assert_ne!(after[name].0, before[name].0, "{name} was replaced");
    }
    // Each old dyno got SIGTERM only once its replacement was up.
    let logs = f.p.logs("pre");
    let lines: Vec<&str> = logs.lines().collect();
    for name in ["web.1", "web.2"] {
        let up = lines
            .iter()
            .rposition(|l| l.contains(&format!("heroku[{name}]")) && l.contains("to up"))
            .expect("the new dyno came up");
        let stop = lines
            .iter()
            .position(|l| l.contains(&format!("heroku[{name}]")) && l.contains("SIGTERM"))
            .expect("the old dyno was stopped");
        assert!(
            up < stop,
            "{name}: stopped before its replacement was up:\n{logs}"
        );
    }
}

#[test]
fn a_required_label_moves_a_type_onto_the_labelled_host() {
    let f = Fleet::start();
    f.p.deploy("zoned", WEB);
    f.p.dyno_ok(&["ps:scale", "web=2", "worker=1", "-a", "zoned", "--wait"]);
    assert!(f.p.dyno_ok(&["hosts"]).contains("zone=b"));
    let bad = f.p.dyno(&["ps:require", "web", "zone", "-a", "zoned"]);
    assert_eq!(bad.status.code(), Some(2), "a label is KEY=VALUE");

    f.p.dyno_ok(&["ps:require", "web", "zone=b", "-a", "zoned"]);
    wait_until("web on host-3 only", Duration::from_secs(30), || {
        let pl = f.placement("zoned");
        (all_up(&pl, 3)
            && pl
                .iter()
                .filter(|(n, _)| n.starts_with("web."))
                .all(|(_, (_, h, _))| h == "host-3"))
        .then_some(())
    });
    wait_until("old web dynos gone", Duration::from_secs(20), || {
        (f.all_groups() == 3).then_some(())
    });
    f.p.dyno_ok(&["ps:scale", "web=3", "-a", "zoned", "--wait"]);
    assert_eq!(f.placement("zoned")["web.3"].1, "host-3");

    // A label no host has: the worker stays where it is and the log says why.
    let worker = f.placement("zoned")["worker.1"].clone();
    f.p.dyno_ok(&["ps:require", "worker", "gpu=yes", "-a", "zoned"]);
    wait_until("cannot place", Duration::from_secs(10), || {
        f.p.logs("zoned")
            .contains("Cannot place worker.1")
            .then_some(())
    });
    assert_eq!(f.placement("zoned")["worker.1"], worker);
    f.p.dyno_ok(&["ps:unrequire", "worker", "-a", "zoned"]);
    assert_eq!(
        f.p.json(&["ps:unrequire", "web", "-a", "zoned"]),
        serde_json::json!({})
    );
}
