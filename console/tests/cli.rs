//! Runs the built `dyno` binary: exit codes, local validation before any request, settings
//! precedence, and output against a small fake coordinator.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// Nothing listens on the discard port.
const DEAD: &str = "http://127.0.0.1:9";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn dyno(config_home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dyno"));
    cmd.args(args)
        .env_remove("DYNO_COORDINATOR")
        .env_remove("DYNO_TOKEN")
        .env_remove("DYNO_APP")
        .env("XDG_CONFIG_HOME", config_home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run dyno");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

#[test]
fn invalid_scale_argument_is_rejected_before_any_request() {
    let home = tempfile::tempdir().unwrap();
    let r = dyno(
        home.path(),
        &[
            "ps:scale",
            "web=2",
            "web=abc",
            "-a",
            "shop",
            "--coordinator",
            DEAD,
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(r.stderr.contains("web=abc"), "{}", r.stderr);
    // Had it tried the coordinator, the error would name the unreachable URL instead.
    assert!(!r.stderr.contains("127.0.0.1:9"), "{}", r.stderr);
}

#[test]
fn malformed_procfile_names_its_line() {
    let home = tempfile::tempdir().unwrap();
    let app = tempfile::tempdir().unwrap();
    std::fs::write(
        app.path().join("Procfile"),
        "web: ./server\nthis is not a process\n",
    )
    .unwrap();
    let dir = app.path().to_str().unwrap();
    let r = dyno(home.path(), &["deploy", dir, "--coordinator", DEAD], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("line 2"), "{}", r.stderr);
    std::fs::remove_file(app.path().join("Procfile")).unwrap();
    let r = dyno(
        home.path(),
        &["deploy", dir, "-a", "shop", "--coordinator", DEAD],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("Procfile"), "{}", r.stderr);
}

#[test]
fn unreachable_coordinator_fails_with_its_url() {
    let home = tempfile::tempdir().unwrap();
    let r = dyno(home.path(), &["apps", "--coordinator", DEAD], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("http://127.0.0.1:9"), "{}", r.stderr);
}

#[test]
fn destroy_needs_a_matching_confirmation() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["apps:destroy", "x", "--confirm", "y"][..],
        &["apps:destroy", "shop", "--confirm", "shoe"],
        &["apps:destroy", "shop"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--coordinator", DEAD]);
        let r = dyno(home.path(), &args, &[]);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
}

#[test]
fn bad_input_exits_2_without_a_server() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["config:set", "1BAD=x", "-a", "shop"][..],
        &["config:set", "NOEQUALS", "-a", "shop"],
        &["config:unset", "PORT", "-a", "shop"],
        &["apps:create", "Bad_Name"],
        &["ps", "-a", "X"],
        &["ps:stop", "web.0", "-a", "shop"],
        &["ps:restart", "-p", "a.b.c", "-a", "shop"],
        &["logs", "-s", "kernel", "-a", "shop"],
        &["logs", "-n", "0", "-a", "shop"],
        &["run", "--size", "huge", "-a", "shop", "--", "true"],
        &["ps"],
        &["no-such-command"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--coordinator", DEAD]);
        let r = dyno(home.path(), &args, &[]);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
}

#[test]
fn flag_beats_environment_beats_saved_file() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("dyno")).unwrap();
    std::fs::write(
        home.path().join("dyno/config.json"),
        r#"{"coordinator": "http://127.0.0.1:7", "token": "t"}"#,
    )
    .unwrap();
    let r = dyno(home.path(), &["apps"], &[]);
    assert!(r.stderr.contains("127.0.0.1:7"), "{}", r.stderr);
    let env = [("DYNO_COORDINATOR", "http://127.0.0.1:8")];
    let r = dyno(home.path(), &["apps"], &env);
    assert!(r.stderr.contains("127.0.0.1:8"), "{}", r.stderr);
    let r = dyno(home.path(), &["apps", "--coordinator", DEAD], &env);
    assert!(r.stderr.contains("127.0.0.1:9"), "{}", r.stderr);
    let empty = tempfile::tempdir().unwrap();
    let r = dyno(empty.path(), &["apps"], &[("HOME", "/nonexistent")]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("127.0.0.1:7070") || r.stdout.contains("NAME"),
        "default coordinator: {}",
        r.stderr
    );
}

#[test]
fn exec_trampoline_clears_the_blocked_signal_mask() {
    use nix::sys::signal::{SigSet, Signal};
    // `dyno up` blocks SIGTERM for its signalfd, and spawned children inherit a thread's mask.
    let status = |argv: &'static [&'static str]| {
        std::thread::spawn(move || {
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGTERM);
            mask.thread_block().unwrap();
            let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .join()
        .unwrap()
    };
    let direct = status(&["grep", "^SigBlk", "/proc/self/status"]);
    assert!(!direct.contains("0000000000000000"), "{direct}");
    let via = status(&[
        env!("CARGO_BIN_EXE_dyno"),
        "__exec",
        "--",
        "grep",
        "^SigBlk",
        "/proc/self/status",
    ]);
    assert!(via.contains("0000000000000000"), "{via}");
}

// ---- against a fake coordinator ----

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    auth: Option<String>,
    body: String,
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// Answers each request with `handler`'s status and body, closing every connection.
fn fake(handler: Box<Handler>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            let mut len = 0;
            let mut auth = None;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap(),
                    "authorization" => auth = Some(v.trim().to_string()),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let req = Seen {
                method,
                target,
                auth,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            log.lock().unwrap().push(req.clone());
            let (status, body) = handler(&req);
            let mut w = stream;
            let _ = write!(
                w,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

fn dyno_json(name: &str, state: &str, exit: Option<i32>) -> serde_json::Value {
    let ptype = name.split('.').next().unwrap();
    serde_json::json!({
        "id": name, "name": name, "type": ptype, "state": state, "size": "standard-1x",
        "command": format!("dyno-probe {ptype}"), "release": {"id": "r3", "version": 3}, "host": "local", "address": null,
        "created_at": "2026-11-23T15:08:07Z", "updated_at": "2026-11-23T15:08:07Z",
        "restarts": 0, "exit_code": exit, "one_off": false
    })
}

fn formation_json() -> serde_json::Value {
    serde_json::json!([
        {"type": "web", "quantity": 2, "size": "standard-1x", "command": "dyno-probe web"},
        {"type": "worker", "quantity": 1, "size": "standard-2x", "command": "dyno-probe worker"}
    ])
}

fn app_json() -> serde_json::Value {
    serde_json::json!({
        "id": "a1", "name": "shop", "created_at": "2026-11-23T15:08:07Z",
        "updated_at": "2026-11-23T15:08:07Z", "release": 3, "web_url": "http://shop.localhost:7080/",
        "maintenance": false, "formation": "web=2:standard-1x worker=1:standard-2x",
        "dynos_up": 2, "dynos_total": 3
    })
}

fn coordinator(req: &Seen) -> (u16, String) {
    let path = req.target.split('?').next().unwrap();
    let ok = |v: serde_json::Value| (200, v.to_string());
    match (req.method.as_str(), path) {
        ("GET", "/apps") => ok(serde_json::json!([app_json()])),
        ("GET", "/apps/shop") => ok(app_json()),
        ("GET", "/apps/shop/dynos") => ok(serde_json::json!([
            dyno_json("web.1", "up", None),
            dyno_json("web.2", "crashed", Some(1)),
            dyno_json("worker.1", "up", None)
        ])),
        ("GET", "/apps/shop/formation") => ok(formation_json()),
        ("POST", "/apps/shop/formation/scale") => ok(formation_json()),
        ("GET", "/apps/shop/config-vars") => ok(serde_json::json!({"A": "1", "LONG_KEY": "x"})),
        ("PATCH", "/apps/shop/config-vars") => (
            422,
            serde_json::json!({"id": "invalid_params", "message": "config vars would total 40000 bytes"})
                .to_string(),
        ),
        ("GET", "/apps/shop/logs") => {
            let line = |process: &str, source: &str, message: &str| {
                serde_json::json!({"at": 1_795_446_826_677_020_i64, "app": "shop", "source": source,
                    "process": process, "message": message})
                .to_string()
                    + "\n"
            };
            (
                200,
                line("web.1", "app", "hello") + &line("router", "router", "at=info status=200"),
            )
        }
        ("POST", "/apps/shop/run") => {
            let events = [
                serde_json::json!({"event": "started", "dyno": "run.1"}),
                serde_json::json!({"event": "line", "line": {"at": 1, "app": "shop", "source": "app",
                    "process": "run.1", "message": "hello from the dyno"}}),
                serde_json::json!({"event": "exit", "code": 3}),
            ];
            (200, events.iter().map(|e| e.to_string() + "\n").collect())
        }
        _ => (
            404,
            serde_json::json!({"id": "not_found", "message": format!("no such path {path}")})
                .to_string(),
        ),
    }
}

#[test]
fn talks_to_a_coordinator() {
    let home = tempfile::tempdir().unwrap();
    let (url, seen) = fake(Box::new(coordinator));
    let run = |args: &[&str]| {
        // Flags go first: after `run --` they would belong to the command.
        let mut a = vec!["--coordinator", &url, "--token", "sekrit"];
        a.extend(args);
        dyno(home.path(), &a, &[])
    };

    let r = run(&["ps", "-a", "shop"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with(
            "=== web (standard-1x): dyno-probe web (2)\nweb.1: up 2026/11/23 15:08:07 +0000 (~ "
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("\nweb.2: crashed 2026/11/23 15:08:07 +0000")
    );
    assert_eq!(
        seen.lock().unwrap()[0].auth.as_deref(),
        Some("Bearer sekrit")
    );

    // --json is one document.
    let r = run(&["ps", "-a", "shop", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    let r = run(&["apps", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["name"], "shop");
    let r = run(&["apps"]);
    assert!(r.stdout.contains("shop  v3"), "{}", r.stdout);

    let r = run(&["ps:scale", "-a", "shop"]);
    assert_eq!(r.stdout, "web=2:standard-1x worker=1:standard-2x\n");
    let r = run(&["ps:scale", "web=2", "worker+1:2X", "-a", "shop"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "Scaling dynos... done, now running web at 2:Standard-1X, worker at 1:Standard-2X\n"
    );
    let body = seen.lock().unwrap().last().unwrap().body.clone();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"args": ["web=2", "worker+1:standard-2x"]})
    );

    // web.2 never comes up: the wait times out naming it.
    let r = run(&[
        "ps:scale",
        "web=2",
        "-a",
        "shop",
        "--wait",
        "--wait-timeout",
        "1",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("web.2 crashed (exit 1)"), "{}", r.stderr);

    let r = run(&["config", "-a", "shop"]);
    assert_eq!(r.stdout, "=== shop Config Vars\nA:        1\nLONG_KEY: x\n");

    // The server's own validation error is exit 2 with its message.
    let r = run(&["config:set", "A=2", "-a", "shop"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr, "error: config vars would total 40000 bytes\n");

    let r = run(&["releases", "-a", "nope"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no such path /apps/nope/releases"),
        "{}",
        r.stderr
    );

    // run: output streams to stdout and the dyno's exit code becomes ours.
    let r = run(&["run", "-a", "shop", "--", "dyno-probe", "echo", "a b"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stdout, "hello from the dyno\n");
    let body = seen.lock().unwrap().last().unwrap().body.clone();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["command"], "dyno-probe echo 'a b'");
    let r = run(&["run", "-a", "shop", "--json", "--", "true"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["output"][0], "hello from the dyno");

    let r = run(&["logs", "-a", "shop", "-n", "5", "-d", "web.1", "-s", "app"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "2026-11-23T15:13:46.677020+00:00 app[web.1]: hello\n\
         2026-11-23T15:13:46.677020+00:00 heroku[router]: at=info status=200\n"
    );
    let target = seen.lock().unwrap().last().unwrap().target.clone();
    assert_eq!(
        target,
        "/apps/shop/logs?lines=5&tail=false&dyno=web.1&source=app"
    );
    let r = run(&["logs", "-a", "shop", "--json"]);
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["source"], "router");

    let methods: BTreeMap<String, usize> =
        seen.lock()
            .unwrap()
            .iter()
            .fold(BTreeMap::new(), |mut m, s| {
                *m.entry(s.method.clone()).or_default() += 1;
                m
            });
    assert!(methods["GET"] > 3, "{methods:?}");
}

fn billing_json(month: &str, current: bool) -> serde_json::Value {
    serde_json::json!({
        "month": month, "currency": "USD", "model": "monthly",
        "generated_at": "2026-11-23T15:13:46Z", "current": current,
        "apps": [{
            "app": "shop", "owner": "acme", "cost": 56.5, "projected": 80.0,
            "lines": [
                {"type": "web", "size": "standard-1x", "dyno_seconds": 3600000, "dyno_hours": 1000.0,
                 "cost": 34.72, "projected": 50.0, "quantity": 2},
                {"type": "worker", "size": "standard-1x", "dyno_seconds": 1800000, "dyno_hours": 500.0,
                 "cost": 17.36, "projected": 25.0, "quantity": 1},
                {"type": "run", "size": "performance-m", "dyno_seconds": 3600, "dyno_hours": 1.0,
                 "cost": 4.42, "projected": 5.0, "quantity": 0}
            ]
        }],
        "eco_pools": [{"owner": "bob", "hours_used": 1000.0, "hours_limit": 1000.0, "cost": 5.0,
                       "exhausted": true}],
        "cost": 61.5, "projected": 85.0,
        "a_field_from_a_newer_coordinator": 1
    })
}

fn pricing_json() -> serde_json::Value {
    let size = |size: &str, monthly: f64| {
        serde_json::json!({"size": size, "hourly": monthly / 720.0, "max_monthly": monthly,
            "units": 1.0})
    };
    serde_json::json!({
        "model": "monthly", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
        "sizes": [
            {"size": "eco", "hourly": 0.0, "max_monthly": null, "units": 1.0},
            size("basic", 7.0), size("standard-1x", 25.0), size("standard-2x", 50.0),
            size("performance-m", 250.0), size("performance-l", 500.0)
        ],
        "eco_pool_hours": 1000.0, "eco_pool_price": 5.0, "dyno_hour_price": 0.05,
        "free_hours_per_app": 0.0
    })
}

fn billing_coordinator(req: &Seen) -> (u16, String) {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let ok = |v: serde_json::Value| (200, v.to_string());
    match (req.method.as_str(), path) {
        ("GET", "/billing") if query.contains("app=nope") => (
            404,
            serde_json::json!({"id": "not_found", "message": "no app named nope"}).to_string(),
        ),
        ("GET", "/billing") if query.contains("month=1999-01") => (
            422,
            serde_json::json!({"id": "invalid_params", "message": "no usage is kept before 2026-01"})
                .to_string(),
        ),
        ("GET", "/billing") if query.contains("month=2026-10") => {
            ok(billing_json("2026-10", false))
        }
        ("GET", "/billing") => ok(billing_json("2026-11", true)),
        ("GET", "/pricing") => ok(pricing_json()),
        ("GET", "/apps/shop/formation") => ok(formation_json()),
        ("PATCH", "/apps/shop/formation") => ok(serde_json::json!([
            {"type": "web", "quantity": 2, "size": "standard-2x", "command": "dyno-probe web"},
            {"type": "worker", "quantity": 1, "size": "standard-2x", "command": "dyno-probe worker"}
        ])),
        _ => (
            404,
            serde_json::json!({"id": "not_found", "message": format!("no such path {path}")})
                .to_string(),
        ),
    }
}

#[test]
fn billing_and_ps_type_against_a_coordinator() {
    let home = tempfile::tempdir().unwrap();
    let (url, seen) = fake(Box::new(billing_coordinator));
    let run = |args: &[&str]| {
        let mut a = vec!["--coordinator", &url];
        a.extend(args);
        dyno(home.path(), &a, &[])
    };
    let requests = || seen.lock().unwrap().len();
    let last = || seen.lock().unwrap().last().unwrap().clone();

    // No -a: every app, no error about a missing app.
    let r = run(&["billing"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(last().target, "/billing");
    assert_eq!(
        r.stdout,
        "\
=== Billing for 2026-11 (USD, month to date, projected to month end)
app   type      size           dyno hours    cost  projected
shop  web       Standard-1X       1000.00  $34.72     $50.00
shop  worker    Standard-1X        500.00  $17.36     $25.00
shop  run       Performance-M        1.00   $4.42      $5.00
shop  subtotal                    1501.00  $56.50     $80.00

=== Eco pools
owner  hours used / limit   cost
bob        1000.00 / 1000  $5.00  exhausted

Total: $61.50 month to date, $85.00 projected to month end
"
    );

    let r = run(&["billing", "-a", "shop", "--month", "2026-10"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(last().target, "/billing?month=2026-10&app=shop");
    assert!(
        r.stdout
            .starts_with("=== Billing of shop for 2026-10 (USD)\napp   type      size           dyno hours    cost\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("projected"), "{}", r.stdout);

    let r = run(&["billing", "--month", "2026-10", "--csv"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "month,app,owner,size,dyno_hours,cost,currency\n\
         2026-10,shop,acme,standard-1x,1500.00,52.08,USD\n\
         2026-10,shop,acme,performance-m,1.00,4.42,USD\n"
    );

    // --json is the coordinator's document, fields this build does not know included.
    let r = run(&["billing", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v, billing_json("2026-11", true));

    // Bad input changes nothing and asks nothing.
    let before = requests();
    for (args, says) in [
        (&["billing", "--month", "2026-13"][..], "\"2026-13\""),
        (&["billing", "--month", "nov"], "\"nov\""),
        (&["--json", "billing", "--csv"], "--csv"),
        (&["billing", "--json", "--csv"], "--csv"),
        (
            &["ps:type", "web=2X", "worker=huge", "-a", "shop"],
            "\"worker=huge\"",
        ),
        (&["ps:type", "web", "-a", "shop"], "\"web\""),
        (&["ps:type"], "-a APP"),
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
    assert_eq!(requests(), before);

    let r = run(&["billing", "-a", "nope"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (1, "error: no app named nope\n")
    );
    let r = run(&["billing", "--month", "1999-01"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr, "error: no usage is kept before 2026-01\n");

    let r = run(&["ps:type", "-a", "shop"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "\
=== Dyno Types
type    size         qty  cost/hour  max cost/month
web     Standard-1X  2    ~$0.035    $25
worker  Standard-2X  1    ~$0.069    $50

=== Dyno Totals
type         total
Standard-1X  2
Standard-2X  1
"
    );
    assert!(seen.lock().unwrap().iter().all(|s| s.method == "GET"));

    // A bare size is every type; one PATCH, then the new table.
    let r = run(&["ps:type", "2X", "-a", "shop"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let patches: Vec<Seen> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "PATCH")
        .cloned()
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].target, "/apps/shop/formation");
    let body: serde_json::Value = serde_json::from_str(&patches[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"updates": [
            {"type": "web", "quantity": null, "size": "standard-2x"},
            {"type": "worker", "quantity": null, "size": "standard-2x"}
        ]})
    );
    assert!(
        r.stdout
            .contains("web     Standard-2X  2    ~$0.069    $50\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Standard-2X  3\n"), "{}", r.stdout);

    let r = run(&["ps:type", "web=standard-2x", "-a", "shop", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let body: serde_json::Value = serde_json::from_str(&last_patch(&seen).body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"updates": [{"type": "web", "quantity": null, "size": "standard-2x"}]})
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["type"], "web");
    assert_eq!(v[0]["quantity"], 2);
    assert_eq!(v[0]["size"], "Standard-2X");
    assert_eq!(v[0]["max_monthly"], 50.0);
    assert_eq!(v[0]["currency"], "USD");
    assert!((v[0]["hourly"].as_f64().unwrap() - 50.0 / 720.0).abs() < 1e-9);

    // A type the app does not have is refused before the PATCH.
    let patches_before = count_patches(&seen);
    let r = run(&["ps:type", "clock=basic", "-a", "shop"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no process type clock"), "{}", r.stderr);
    assert_eq!(count_patches(&seen), patches_before);
}

fn last_patch(seen: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    seen.lock()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s.method == "PATCH")
        .cloned()
        .unwrap()
}

fn count_patches(seen: &Arc<Mutex<Vec<Seen>>>) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "PATCH")
        .count()
}

#[test]
fn run_detached_prints_the_dyno_and_how_to_see_its_output() {
    let home = tempfile::tempdir().unwrap();
    let (url, seen) = fake(Box::new(|req: &Seen| match req.target.as_str() {
        "/apps/shop/run" => {
            let mut d = dyno_json("run.4", "starting", None);
            d["type"] = "run".into();
            d["one_off"] = true.into();
            d["size"] = "standard-2x".into();
            (201, d.to_string())
        }
        _ => (404, r#"{"id":"not_found","message":"no such path"}"#.into()),
    }));
    let run = |args: &[&str]| {
        let mut a = vec!["--coordinator", &url, "--token", "sekrit"];
        a.extend(args);
        dyno(home.path(), &a, &[])
    };
    let r = run(&[
        "run:detached",
        "-a",
        "shop",
        "-s",
        "2X",
        "-e",
        "MODE=fast",
        "--",
        "bin/migrate",
        "--all",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "Running bin/migrate --all on shop... up, run.4 (Standard-2X)\n\
         Run `dyno logs -a shop -d run.4 --tail` to view the output.\n"
    );
    let req = seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/apps/shop/run")
    );
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"command": "bin/migrate --all", "detached": true,
            "size": "Standard-2X", "env": {"MODE": "fast"}})
    );
    // --json: the Dyno.
    let r = run(&["run:detached", "-a", "shop", "--json", "--", "true"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["name"], "run.4");
    // Bad input exits 2 before any request.
    let before = seen.lock().unwrap().len();
    for args in [
        &["run:detached", "-a", "shop", "-s", "huge", "--", "true"][..],
        &["run:detached", "-a", "shop", "-e", "NOEQUALS", "--", "true"],
        &["run:detached", "-a", "shop", "--", " "],
        &[
            "run:detached",
            "-a",
            "shop",
            "--json",
            "--tail",
            "--",
            "true",
        ],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
    assert_eq!(seen.lock().unwrap().len(), before);
}
