//! Durability under load: concurrent clients change state through the control API while the
//! coordinator is killed with SIGKILL. After a restart on the same state dir every change the API
//! acknowledged (a 2xx reached the client) is there, nothing half-applied is visible (each config
//! change is exactly one release, versions have no gaps, config and release history agree) and
//! nothing appears that no client asked for.

use dyno_tests::Platform;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 400;
/// Apps made before the load; config vars and domains go to them.
const APPS: [&str; 3] = ["dura", "durb", "durc"];

#[derive(Debug, Clone)]
enum Op {
    /// `PATCH /apps/{app}/config-vars` `{key: value}`, a key no other op uses.
    Config {
        app: String,
        key: String,
        value: String,
    },
    /// `POST /apps` with a name no other op uses.
    CreateApp { name: String },
    /// `POST /apps/{app}/domains` with a hostname no other op uses.
    Domain { app: String, hostname: String },
}

impl Op {
    fn new(thread: usize, n: usize) -> Op {
        let app = APPS[(thread + n) % APPS.len()].to_string();
        match n % 3 {
            0 => Op::Config {
                app,
                key: format!("K_{thread}_{n}"),
                value: format!("v{n}"),
            },
            1 => Op::CreateApp {
                name: format!("l{thread}x{n}"),
            },
            _ => Op::Domain {
                app,
                hostname: format!("d{thread}x{n}.example.com"),
            },
        }
    }
}

/// One operation and what the client saw.
#[derive(Debug)]
struct Done {
    op: Op,
    sent: Instant,
    /// When the answer (or the error) arrived.
    at: Instant,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    /// 2xx; the body when it could be read.
    Acked(Option<Value>),
    /// No answer (connection refused, reset, closed, timeout): may or may not have happened.
    Unknown(String),
    /// A non-2xx status: every op here is valid, so none is expected.
    Refused(u16, String),
}

fn call(agent: &ureq::Agent, base: &str, token: &str, op: &Op) -> Outcome {
    let auth = format!("Bearer {token}");
    let (req, body) = match op {
        Op::Config { app, key, value } => (
            agent.request("PATCH", &format!("{base}/apps/{app}/config-vars")),
            json!({ key.as_str(): value }),
        ),
        Op::CreateApp { name } => (agent.post(&format!("{base}/apps")), json!({ "name": name })),
        Op::Domain { app, hostname } => (
            agent.post(&format!("{base}/apps/{app}/domains")),
            json!({ "hostname": hostname }),
        ),
    };
    match req.set("Authorization", &auth).send_json(body) {
        Ok(r) => Outcome::Acked(r.into_json::<Value>().ok()),
        Err(ureq::Error::Status(code, r)) => {
            Outcome::Refused(code, r.into_string().unwrap_or_default())
        }
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

/// Runs up to `OPS_PER_THREAD` operations one after the other; stops at the first one without an
/// answer (the coordinator is gone).
fn client(thread: usize, base: String, token: String, acked: Arc<AtomicUsize>) -> Vec<Done> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let mut log = Vec::new();
    for n in 0..OPS_PER_THREAD {
        let op = Op::new(thread, n);
        let sent = Instant::now();
        let outcome = call(&agent, &base, &token, &op);
        let at = Instant::now();
        let stop = matches!(outcome, Outcome::Unknown(_));
        if matches!(outcome, Outcome::Acked(_)) {
            acked.fetch_add(1, Ordering::SeqCst);
        }
        log.push(Done {
            op,
            sent,
            at,
            outcome,
        });
        if stop {
            break;
        }
    }
    log
}

fn get(p: &Platform, path: &str) -> Value {
    p.get(path)
        .unwrap_or_else(|e| panic!("GET {path} after the restart: {e}"))
}

#[test]
fn acknowledged_changes_survive_kill_9_under_load() {
    let start = Instant::now();
    let mut p = Platform::start();
    for app in APPS {
        p.dyno_ok(&["apps:create", app]);
    }

    // Kill once this many ops are acknowledged (varies from run to run), or after 3 s at most.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let kill_after = 150 + seed % 100;

    let acked = Arc::new(AtomicUsize::new(0));
    let load_start = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (base, token, acked) = (p.url(), p.token.clone(), acked.clone());
            std::thread::spawn(move || client(t, base, token, acked))
        })
        .collect();
    let mut all_done = false;
    while acked.load(Ordering::SeqCst) < kill_after
        && load_start.elapsed() < Duration::from_secs(3)
        && !all_done
    {
        std::thread::sleep(Duration::from_millis(1));
        all_done = handles.iter().all(|h| h.is_finished());
    }
    let acked_at_kill = acked.load(Ordering::SeqCst);
    let kill_at = Instant::now();
    p.kill_coordinator();
    let killed_in = kill_at.elapsed();

    let logs: Vec<Vec<Done>> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let load_time = load_start.elapsed();

    let restart = Instant::now();
    p.start_coordinator();
    p.wait_for_host();
    let restart_time = restart.elapsed();

    // What the clients saw.
    let all: Vec<&Done> = logs.iter().flatten().collect();
    let acks: Vec<&Done> = all
        .iter()
        .copied()
        .filter(|d| matches!(d.outcome, Outcome::Acked(_)))
        .collect();
    let unknown: Vec<&Done> = all
        .iter()
        .copied()
        .filter(|d| matches!(d.outcome, Outcome::Unknown(_)))
        .collect();
    let refused: Vec<&Done> = all
        .iter()
        .copied()
        .filter(|d| matches!(d.outcome, Outcome::Refused(..)))
        .collect();
    let acked_after_kill = acks.iter().filter(|d| d.at >= kill_at).count();
    let in_flight_at_kill = all
        .iter()
        .filter(|d| d.sent < kill_at && d.at >= kill_at)
        .count();
    let count = |f: fn(&Op) -> bool| acks.iter().filter(|d| f(&d.op)).count();
    eprintln!(
        "durability: {} ops acknowledged ({} config, {} apps, {} domains; {} at the kill, {} \
         answered after it), {} in flight at the kill, {} without an answer, {} refused; kill \
         after {:?} of load (threshold {kill_after}), kill took {killed_in:?}, clients done \
         {load_time:?}, restart {restart_time:?}",
        acks.len(),
        count(|o| matches!(o, Op::Config { .. })),
        count(|o| matches!(o, Op::CreateApp { .. })),
        count(|o| matches!(o, Op::Domain { .. })),
        acked_at_kill,
        acked_after_kill,
        in_flight_at_kill,
        unknown.len(),
        refused.len(),
        kill_at - load_start,
    );

    for d in &unknown {
        if let Outcome::Unknown(e) = &d.outcome {
            eprintln!(
                "durability: no answer {:?} after the kill to {:?}: {e}",
                d.at.saturating_duration_since(kill_at),
                d.op
            );
        }
    }

    // The kill really happened in the middle of the load.
    assert!(
        acked_at_kill >= 20,
        "only {acked_at_kill} ops were acknowledged before the kill"
    );
    assert!(
        !all_done && all.len() < THREADS * OPS_PER_THREAD,
        "the clients ran out of work before the kill"
    );
    assert!(!unknown.is_empty(), "no client saw the coordinator go away");
    // Before the kill every op is valid and answered with 2xx.
    for d in &refused {
        if let Outcome::Refused(code, body) = &d.outcome {
            panic!("refused with {code}: {:?}: {body}", d.op);
        }
    }
    for d in &unknown {
        assert!(
            d.at >= kill_at,
            "no answer before the kill ({:?} after the load started): {:?} -> {:?}",
            d.at.saturating_duration_since(load_start),
            d.op,
            d.outcome
        );
    }
    for (t, log) in logs.iter().enumerate() {
        assert!(
            matches!(log.last().map(|d| &d.outcome), Some(Outcome::Unknown(_))),
            "client {t} did not end with the coordinator gone"
        );
    }

    // The acknowledged config patches answered with the new vars, their key among them.
    for d in &acks {
        if let (Op::Config { key, value, .. }, Outcome::Acked(Some(body))) = (&d.op, &d.outcome) {
            assert_eq!(
                body[key.as_str()].as_str(),
                Some(value.as_str()),
                "PATCH answer of {key}: {body}"
            );
        }
    }

    // After the restart. Apps: every acknowledged one, no other.
    let apps = get(&p, "/apps");
    let apps: BTreeMap<String, Value> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_string(), a.clone()))
        .collect();
    let created = |ds: &[&Done]| -> BTreeSet<String> {
        ds.iter()
            .filter_map(|d| match &d.op {
                Op::CreateApp { name } => Some(name.clone()),
                _ => None,
            })
            .collect()
    };
    let (acked_apps, maybe_apps) = (created(&acks), created(&unknown));
    // Ops without an answer that turned out to have happened.
    let mut landed = maybe_apps.iter().filter(|n| apps.contains_key(*n)).count();
    for name in &acked_apps {
        let a = apps
            .get(name)
            .unwrap_or_else(|| panic!("acknowledged app {name} is gone after the restart"));
        assert!(a["release"].is_null(), "new app {name} has a release: {a}");
    }
    for name in apps.keys() {
        assert!(
            APPS.contains(&name.as_str()) || acked_apps.contains(name) || maybe_apps.contains(name),
            "app {name} exists but no client created it"
        );
    }

    for app in APPS {
        let mine = |ds: &[&Done]| -> Vec<(Op, Instant, Instant)> {
            ds.iter()
                .filter(|d| match &d.op {
                    Op::Config { app: a, .. } | Op::Domain { app: a, .. } => a == app,
                    Op::CreateApp { .. } => false,
                })
                .map(|d| (d.op.clone(), d.sent, d.at))
                .collect()
        };
        let (acked_ops, maybe_ops) = (mine(&acks), mine(&unknown));

        // Config vars: every acknowledged key with its value; an unanswered one, if there, with
        // its value; nothing else.
        let config = get(&p, &format!("/apps/{app}/config-vars"));
        let config = config.as_object().unwrap();
        let mut expected_keys = BTreeSet::new();
        for (op, ..) in &acked_ops {
            if let Op::Config { key, value, .. } = op {
                assert_eq!(
                    config.get(key).and_then(Value::as_str),
                    Some(value.as_str()),
                    "{app}: acknowledged config var {key}={value} after the restart"
                );
                expected_keys.insert(key.clone());
            }
        }
        let mut maybe_keys = BTreeSet::new();
        for (op, ..) in &maybe_ops {
            if let Op::Config { key, value, .. } = op {
                if let Some(v) = config.get(key) {
                    assert_eq!(v.as_str(), Some(value.as_str()), "{app}: {key}");
                    landed += 1;
                }
                maybe_keys.insert(key.clone());
            }
        }
        for k in config.keys() {
            assert!(
                expected_keys.contains(k) || maybe_keys.contains(k),
                "{app}: config var {k} no client set"
            );
        }

        // Releases: one per config change, v1..vN without a gap, each naming the key it set,
        // together exactly the config's keys; the last one current.
        let releases = get(&p, &format!("/apps/{app}/releases"));
        let releases = releases.as_array().unwrap();
        let versions: Vec<u64> = releases
            .iter()
            .map(|r| r["version"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (1..=releases.len() as u64).collect();
        assert_eq!(versions, want, "{app}: release versions");
        assert_eq!(
            releases.len(),
            config.len(),
            "{app}: one release per config var"
        );
        let mut version_of = BTreeMap::new();
        for r in releases {
            let d = r["description"].as_str().unwrap();
            let key = d
                .strip_prefix("Set ")
                .and_then(|s| s.strip_suffix(" config vars"))
                .unwrap_or_else(|| panic!("{app}: unexpected release {r}"));
            assert!(
                config.contains_key(key),
                "{app}: release {r} set {key}, which is not in the config"
            );
            assert_eq!(r["status"], "succeeded", "{app}: {r}");
            assert_eq!(
                r["current"].as_bool(),
                Some(r["version"].as_u64() == Some(releases.len() as u64)),
                "{app}: {r}"
            );
            assert!(
                version_of
                    .insert(key.to_string(), r["version"].as_u64().unwrap())
                    .is_none(),
                "{app}: two releases set {key}"
            );
        }
        let app_json = &apps[app];
        let last = releases.len() as u64;
        assert_eq!(
            app_json["release"].as_u64(),
            (last > 0).then_some(last),
            "{app}: {app_json}"
        );

        // The order of the releases respects real time: a change acknowledged before another was
        // sent has the lower version.
        let acked_config: Vec<(&str, Instant, Instant)> = acked_ops
            .iter()
            .filter_map(|(op, sent, at)| match op {
                Op::Config { key, .. } => Some((key.as_str(), *sent, *at)),
                _ => None,
            })
            .collect();
        for (ka, _, acked_a) in &acked_config {
            for (kb, sent_b, _) in &acked_config {
                if acked_a < sent_b {
                    assert!(
                        version_of[*ka] < version_of[*kb],
                        "{app}: {ka} (v{}) was acknowledged before {kb} (v{}) was sent",
                        version_of[*ka],
                        version_of[*kb]
                    );
                }
            }
        }

        // Events: each release's event, written in its transaction, once.
        let events = get(&p, &format!("/apps/{app}/events?limit=1000"));
        let mut release_events: Vec<u64> = events
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let m = e["message"].as_str()?;
                m.strip_prefix("Release v")?
                    .split_once(" created: ")?
                    .0
                    .parse()
                    .ok()
            })
            .collect();
        release_events.sort();
        assert_eq!(release_events, want, "{app}: release events");

        // Domains: every acknowledged one, no other.
        let domains = get(&p, &format!("/apps/{app}/domains"));
        let domains: BTreeSet<String> = domains
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "custom")
            .map(|d| d["hostname"].as_str().unwrap().to_string())
            .collect();
        let hosts = |ops: &[(Op, Instant, Instant)]| -> BTreeSet<String> {
            ops.iter()
                .filter_map(|(op, ..)| match op {
                    Op::Domain { hostname, .. } => Some(hostname.clone()),
                    _ => None,
                })
                .collect()
        };
        let (acked_hosts, maybe_hosts) = (hosts(&acked_ops), hosts(&maybe_ops));
        landed += maybe_hosts.intersection(&domains).count();
        for h in &acked_hosts {
            assert!(
                domains.contains(h),
                "{app}: acknowledged domain {h} is gone after the restart"
            );
        }
        for h in &domains {
            assert!(
                acked_hosts.contains(h) || maybe_hosts.contains(h),
                "{app}: domain {h} no client added"
            );
        }
    }
    eprintln!(
        "durability: verified after the restart ({landed} of {} ops without an answer had \
         happened); whole test {:?}",
        unknown.len(),
        start.elapsed()
    );
}
