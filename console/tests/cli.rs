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
        "command": format!("dyno-probe {ptype}"), "release": 3, "host": "local", "address": null,
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
