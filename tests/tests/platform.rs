//! The one-machine platform end to end: real coordinator and agent processes, the `dyno` CLI,
//! the router, SQLite on disk.

use dyno_tests::{Platform, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;

const SAMPLE: &str = "web: dyno-probe web\nworker: dyno-probe worker\n";

#[test]
fn deploy_scale_route_and_restart_without_touching_other_dynos() {
    let p = Platform::start();
    p.deploy("shop", SAMPLE);
    // A first deploy with a web type runs web=1, as on Heroku.
    p.wait_up("shop", &["web.1"]);
    p.dyno_ok(&["ps:scale", "web=2", "worker=1", "-a", "shop", "--wait"]);
    p.wait_up("shop", &["web.1", "web.2", "worker.1"]);
    let before = p.dyno_ids("shop");

    // Both web dynos serve through the router.
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = p.route("shop", "/").unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen.insert(v["dyno"].as_str().unwrap().to_string());
    }
    assert_eq!(
        seen,
        BTreeSet::from(["web.1".to_string(), "web.2".to_string()])
    );

    // Scaling web up never restarts the worker or the web dynos that stay.
    p.dyno_ok(&["ps:scale", "web+1", "-a", "shop", "--wait"]);
    let after = p.dyno_ids("shop");
    for name in ["web.1", "web.2", "worker.1"] {
        assert_eq!(
            before[name].0, after[name].0,
            "{name} was replaced by scaling"
        );
    }
    assert_eq!(after["web.3"].1, "up");

    // Scaling down stops the highest index only.
    p.dyno_ok(&["ps:scale", "web=1", "-a", "shop", "--wait"]);
    let down = p.dyno_ids("shop");
    assert_eq!(
        down.keys().cloned().collect::<Vec<_>>(),
        vec!["web.1", "worker.1"]
    );
    assert_eq!(down["web.1"].0, before["web.1"].0);

    // ps with no arguments prints the formation as re-usable input.
    assert_eq!(
        p.dyno_ok(&["ps:scale", "-a", "shop"]).trim(),
        "web=1:standard-1x worker=1:standard-1x"
    );

    // Restarting one dyno replaces it and nothing else.
    p.dyno_ok(&["ps:restart", "-d", "web.1", "-a", "shop"]);
    wait_until("web.1 replaced", Duration::from_secs(30), || {
        let d = p.dyno_ids("shop");
        (d.get("web.1")
            .is_some_and(|(id, s)| id != &before["web.1"].0 && s == "up"))
        .then_some(())
    });
    assert_eq!(p.dyno_ids("shop")["worker.1"].0, before["worker.1"].0);

    // The heroku `ps` layout.
    let ps = p.dyno_ok(&["ps", "-a", "shop"]);
    assert!(
        ps.contains("=== web (standard-1x): dyno-probe web (1)"),
        "{ps}"
    );
    assert!(ps.lines().any(|l| l.starts_with("worker.1: up ")), "{ps}");

    // The platform's own lines and the dynos' output are in the app's log.
    let logs = p.logs("shop");
    assert!(logs.contains("app[worker.1]: worker tick"), "{logs}");
    assert!(logs.contains("State changed from starting to up"), "{logs}");
}

#[test]
fn crashed_dynos_restart_per_the_backoff_policy() {
    let p = Platform::start_with_backoff("0,1");
    p.deploy("crashy", "web: dyno-probe web\nworker: dyno-probe exit 3\n");
    p.dyno_ok(&["ps:scale", "web=0", "worker=1", "-a", "crashy"]);
    // Each crash is seen, and the manager keeps restarting it (first at once, then every second).
    wait_until("three crash restarts", Duration::from_secs(30), || {
        let d = p.dynos("crashy");
        d.iter()
            .find(|d| d["name"] == "worker.1")
            .filter(|d| d["restarts"].as_u64() >= Some(3))
            .map(|_| ())
    });
    let logs = p.logs("crashy");
    assert!(logs.contains("Process exited with status 3"), "{logs}");
    assert!(logs.contains("State changed from up to crashed"), "{logs}");
}

#[test]
fn a_web_dyno_that_crashes_is_replaced_and_served_again() {
    let p = Platform::start();
    p.deploy("phoenix", SAMPLE);
    p.wait_up("phoenix", &["web.1"]);
    // The route table follows a dyno's `up` a moment after the API shows it.
    wait_until("web.1 routed", Duration::from_secs(10), || {
        p.route("phoenix", "/").ok().filter(|(s, _)| *s == 200)
    });
    let (status, _) = p.route("phoenix", "/exit?code=1").unwrap();
    assert_eq!(status, 200);
    wait_until(
        "web.1 back after its crash",
        Duration::from_secs(30),
        || {
            let d = p.dynos("phoenix");
            let w = d.iter().find(|d| d["name"] == "web.1")?;
            (w["state"] == "up" && w["restarts"].as_u64() == Some(1)).then_some(())
        },
    );
    assert_eq!(p.route("phoenix", "/").unwrap().0, 200);
}

#[test]
fn coordinator_kill_9_loses_nothing_and_restarts_no_dyno() {
    let mut p = Platform::start();
    p.deploy("durable", SAMPLE);
    p.dyno_ok(&["config:set", "GREETING=hello", "-a", "durable"]);
    p.dyno_ok(&["ps:scale", "web=2", "worker=1", "-a", "durable", "--wait"]);
    let before = p.dyno_ids("durable");
    let releases = p.json(&["releases", "-a", "durable"]);

    p.kill_coordinator();
    // Dynos keep serving while the coordinator is away? The router lives in the coordinator, so
    // check the dynos' processes instead: the agent keeps them.
    std::thread::sleep(Duration::from_millis(500));
    p.start_coordinator();
    p.wait_for_host();

    assert_eq!(p.json(&["releases", "-a", "durable"]), releases);
    let config = p.json(&["config", "-a", "durable"]);
    assert_eq!(config["GREETING"], "hello");
    assert_eq!(
        p.dyno_ok(&["ps:scale", "-a", "durable"]).trim(),
        "web=2:standard-1x worker=1:standard-1x"
    );
    wait_until("dynos re-adopted", Duration::from_secs(20), || {
        (p.dyno_ids("durable") == before).then_some(())
    });
    // Still the same dynos a few manager passes later, and reachable through the new router.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.dyno_ids("durable"), before);
    wait_until("routed again", Duration::from_secs(10), || {
        p.route("durable", "/")
            .ok()
            .filter(|(s, _)| *s == 200)
            .map(|_| ())
    });
}

#[test]
fn config_changes_make_a_release_and_reach_the_dynos() {
    let p = Platform::start();
    p.deploy("conf", SAMPLE);
    p.wait_up("conf", &["web.1"]);
    let id_before = p.dyno_ids("conf")["web.1"].0.clone();
    p.dyno_ok(&[
        "config:set",
        "PROBE_COLOR=blue",
        "PROBE_SIZE=9",
        "-a",
        "conf",
    ]);
    let releases = p.json(&["releases", "-a", "conf"]);
    let versions: Vec<u64> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions.iter().max(), Some(&2));
    wait_until(
        "web.1 restarted on v2 with the new config",
        Duration::from_secs(30),
        || {
            let (status, body) = p.route("conf", "/").ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && v["release_env"]["PROBE_COLOR"] == "blue").then_some(())
        },
    );
    assert_ne!(p.dyno_ids("conf")["web.1"].0, id_before);
    p.dyno_ok(&["config:unset", "PROBE_COLOR", "-a", "conf"]);
    let config = p.json(&["config", "-a", "conf"]);
    assert_eq!(config, serde_json::json!({"PROBE_SIZE": "9"}));
}

#[test]
fn one_off_dynos_stream_output_and_return_the_exit_code() {
    let p = Platform::start();
    p.deploy("oneoff", SAMPLE);
    let out = p.dyno(&[
        "run",
        "-a",
        "oneoff",
        "--",
        "dyno-probe",
        "echo",
        "hello from a one-off",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from a one-off"));
    let out = p.dyno(&["run", "-a", "oneoff", "--", "dyno-probe", "exit", "7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("exiting with 7"));
    // One-off dynos are gone once they exit, and never restarted.
    wait_until("one-offs cleaned up", Duration::from_secs(10), || {
        p.dynos("oneoff")
            .iter()
            .all(|d| d["type"] != "run")
            .then_some(())
    });
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let p = Platform::start();
    p.deploy("strict", SAMPLE);
    p.wait_up("strict", &["web.1"]);
    let formation = p.dyno_ok(&["ps:scale", "-a", "strict"]);

    let cases: &[(&[&str], &str)] = &[
        (&["apps:create", "Bad_Name"], "invalid app name"),
        (&["ps:scale", "web=2", "nope=1", "-a", "strict"], "nope"),
        (&["ps:scale", "web=x", "-a", "strict"], "web=x"),
        (&["ps:scale", "web=2:huge", "-a", "strict"], "huge"),
        (&["config:set", "BAD-KEY=1", "-a", "strict"], "BAD-KEY"),
    ];
    for (args, needle) in cases {
        let out = p.dyno(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(p.dyno_ok(&["ps:scale", "-a", "strict"]), formation);
    assert_eq!(
        p.json(&["releases", "-a", "strict"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Unknown app and dyno: exit 1 and a message naming them.
    let out = p.dyno(&["ps", "-a", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
    let out = p.dyno(&["ps:restart", "-d", "web.9", "-a", "strict"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("web.9"));

    // Wrong token: 401 with a JSON error.
    let r = ureq::get(&format!("{}/apps", p.url()))
        .set("Authorization", "Bearer wrong")
        .call();
    match r {
        Err(ureq::Error::Status(401, resp)) => {
            let v: serde_json::Value = resp.into_json().unwrap();
            assert_eq!(v["id"], "unauthorized");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    // An oversized request body: 413, nothing created.
    let big = format!(
        "{{\"name\":\"{}\"}}",
        "a".repeat(dyno_shared::api::MAX_REQUEST_BYTES)
    );
    let r = ureq::post(&format!("{}/apps", p.url()))
        .set("Authorization", &format!("Bearer {}", p.token))
        .send_string(&big);
    assert!(matches!(r, Err(ureq::Error::Status(413, _))), "{r:?}");
    // Malformed JSON: 400.
    let r = ureq::post(&format!("{}/apps", p.url()))
        .set("Authorization", &format!("Bearer {}", p.token))
        .send_string("{nope");
    assert!(matches!(r, Err(ureq::Error::Status(400, _))), "{r:?}");
    // A slug without a Procfile: 422 naming the problem.
    let r = ureq::post(&format!("{}/apps/strict/releases", p.url()))
        .set("Authorization", &format!("Bearer {}", p.token))
        .send_bytes(b"definitely not a tarball");
    match r {
        Err(ureq::Error::Status(422, resp)) => {
            assert!(resp.into_string().unwrap().contains("gzipped tar"))
        }
        other => panic!("expected 422, got {other:?}"),
    }
    assert_eq!(p.json(&["apps"]).as_array().unwrap().len(), 1);
}

#[test]
fn garbled_agent_frames_get_an_error_and_the_coordinator_stays_up() {
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
    let p = Platform::start();
    let mut req = format!("ws://127.0.0.1:{}/agent/ws", p.api_port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", p.token).parse().unwrap(),
    );
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    ws.send(Message::text("{this is not json")).unwrap();
    let reply = ws.read().unwrap();
    let text = reply.into_text().unwrap();
    assert!(
        text.contains("\"type\":\"error\"") && text.contains("bad hello"),
        "{text}"
    );

    // A version the coordinator does not speak is refused by name.
    let mut req = format!("ws://127.0.0.1:{}/agent/ws", p.api_port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", p.token).parse().unwrap(),
    );
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    let hello = serde_json::json!({"type": "hello", "protocol_version": 99, "name": "x", "address": "127.0.0.1",
        "memory_mb": 1, "cpus": 1, "isolation": "none", "agent_version": "0", "dynos": []});
    ws.send(Message::text(hello.to_string())).unwrap();
    let text = ws.read().unwrap().into_text().unwrap();
    assert!(text.contains("protocol version 99"), "{text}");

    // After a good hello, an unknown message type is answered with an error naming it, and the
    // session carries on.
    let mut req = format!("ws://127.0.0.1:{}/agent/ws", p.api_port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", p.token).parse().unwrap(),
    );
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    let hello = serde_json::json!({"type": "hello", "protocol_version": 1, "name": "probe-host", "address": "127.0.0.1",
        "memory_mb": 0, "cpus": 1, "isolation": "none", "agent_version": "0", "dynos": []});
    ws.send(Message::text(hello.to_string())).unwrap();
    let text = ws.read().unwrap().into_text().unwrap();
    assert!(text.contains("welcome"), "{text}");
    ws.send(Message::text(r#"{"type":"launch_missiles"}"#))
        .unwrap();
    let text = ws.read().unwrap().into_text().unwrap().to_string();
    assert!(
        text.contains("error") && text.contains("launch_missiles"),
        "{text}"
    );
    ws.send(Message::text(r#"{"type":"heartbeat","at":1}"#))
        .unwrap();
    drop(ws);

    // Without the token the upgrade itself is refused.
    let req = format!("ws://127.0.0.1:{}/agent/ws", p.api_port)
        .into_client_request()
        .unwrap();
    assert!(tungstenite::connect(req).is_err());

    assert!(p.get("/apps").is_ok());
    p.wait_for_host();
}

#[test]
fn stop_destroy_and_a_live_log_tail() {
    let p = Platform::start();
    p.deploy("tail", SAMPLE);
    p.dyno_ok(&["ps:scale", "web=1", "worker=1", "-a", "tail", "--wait"]);

    // A live tail sees lines written after it started, in order, filtered to one dyno.
    let mut tail = std::process::Command::new(dyno_tests::bin("dyno"))
        .args([
            "logs", "-a", "tail", "--tail", "-n", "1", "--dyno", "worker.1",
        ])
        .env("DYNO_COORDINATOR", p.url())
        .env("DYNO_TOKEN", &p.token)
        .env("XDG_CONFIG_HOME", p.dir.path().join("config"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tail.stdout.take().unwrap();
    let ticks = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .take(3)
            .collect::<Vec<_>>()
    });
    wait_until("three live lines", Duration::from_secs(15), || {
        ticks.is_finished().then_some(())
    });
    let lines = ticks.join().unwrap();
    let _ = tail.kill();
    let _ = tail.wait();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("app[worker.1]: worker tick")),
        "{lines:?}"
    );
    let n: Vec<u64> = lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "in order: {n:?}");

    // ps:stop of a formation dyno stops it; the manager replaces it (as on Heroku).
    let before = p.dyno_ids("tail");
    p.dyno_ok(&["ps:stop", "worker.1", "-a", "tail"]);
    wait_until("worker.1 replaced", Duration::from_secs(20), || {
        let d = p.dyno_ids("tail");
        d.get("worker.1")
            .filter(|(id, s)| id != &before["worker.1"].0 && s == "up")
            .map(|_| ())
    });
    assert!(
        p.logs("tail")
            .contains("Stopping all processes with SIGTERM")
    );

    // Destroying needs the name twice, then stops every dyno of the app.
    let out = p.dyno(&["apps:destroy", "tail", "--confirm", "tial"]);
    assert_eq!(out.status.code(), Some(2));
    p.dyno_ok(&["apps:destroy", "tail", "--confirm", "tail"]);
    assert_eq!(p.json(&["apps"]), serde_json::json!([]));
    wait_until("the agent runs no dyno", Duration::from_secs(20), || {
        let hosts = p.get("/hosts").ok()?;
        (hosts[0]["dynos"] == 0).then_some(())
    });
    wait_until("dyno directories removed", Duration::from_secs(20), || {
        let dir = p.dir.path().join("agent/dynos");
        std::fs::read_dir(&dir)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
            .then_some(())
    });
}

#[test]
fn an_agent_killed_with_9_leaves_no_dyno_running_twice() {
    let mut p = Platform::start();
    p.deploy("orphans", SAMPLE);
    p.dyno_ok(&["ps:scale", "web=1", "worker=1", "-a", "orphans", "--wait"]);
    assert_eq!(p.dyno_process_groups().len(), 2);

    p.kill_agent();
    p.start_agent();
    p.wait_for_host();
    // The new agent kills what the old one left; the manager starts replacements.
    wait_until("replacements up", Duration::from_secs(30), || {
        let d = p.dyno_ids("orphans");
        (d.len() == 2 && d.values().all(|(_, s)| s == "up")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        p.dyno_process_groups().len(),
        2,
        "each dyno runs exactly once"
    );
}

#[test]
fn the_change_stream_pushes_app_events_app_set_and_host_changes() {
    use std::io::BufRead;
    let mut p = Platform::start();
    let resp = ureq::get(&format!("{}/stream", p.url()))
        .set("Authorization", &format!("Bearer {}", p.token))
        .call()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(resp.into_reader()).lines() {
            let Ok(line) = line else { break };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    let expect = |what: &str, ok: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) if ok(&v) => return v,
                Ok(_) => {}
                Err(_) => panic!("no {what} on the stream"),
            }
        }
    };
    p.deploy("streamy", SAMPLE);
    expect("apps change", &|v| v["type"] == "apps");
    let up = expect("web.1 up", &|v| {
        v["type"] == "event"
            && v["app"] == "streamy"
            && v["dyno"] == "web.1"
            && v["message"].as_str().is_some_and(|m| m.ends_with("to up"))
    });
    assert!(up["seq"].as_i64().unwrap() > 0, "{up}");
    p.stop_agent();
    expect("hosts change", &|v| v["type"] == "hosts");
}
