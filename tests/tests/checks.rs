//! Health checks: a web dyno that hangs (running, accepting, never answering) leaves the router at
//! its first failed check and is replaced after the last; a worker whose heartbeat file goes stale
//! is replaced the same way.

use dyno_tests::{Platform, wait_until};
use std::time::Duration;

const APP: &str = "web: dyno-probe web\nworker: dyno-probe heartbeat hb 2.5\n";

fn dyno<'a>(dynos: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    dynos.iter().find(|d| d["name"] == name)
}

#[test]
fn a_hung_web_dyno_leaves_the_router_and_is_replaced_and_so_is_a_stale_worker() {
    let p = Platform::start();
    p.deploy("chk", APP);
    let default = p.dyno_ok(&["checks", "-a", "chk"]);
    assert!(
        default.contains("web: $PORT accepts every 5s") && default.contains("(default)"),
        "{default}"
    );
    // Bad input changes nothing.
    let bad = p.dyno(&["checks:set", "web", "health", "-a", "chk"]);
    assert_eq!(bad.status.code(), Some(2), "a path without /");
    let bad = p.dyno(&["checks:set", "worker", "/health", "-a", "chk"]);
    assert_eq!(bad.status.code(), Some(2), "workers have no $PORT");
    p.dyno_ok(&[
        "checks:set",
        "web",
        "/health",
        "--interval",
        "0.3",
        "--timeout",
        "0.5",
        "--failures",
        "3",
        "-a",
        "chk",
    ]);
    p.dyno_ok(&[
        "checks:set",
        "worker",
        "--file",
        "hb",
        "--interval",
        "0.3",
        "--timeout",
        "1",
        "--failures",
        "2",
        "-a",
        "chk",
    ]);
    let listed = p.json(&["checks", "-a", "chk"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // The deploy started web.1 before its check was set: a check applies as dynos restart.
    let before = p.dyno_ids("chk")["web.1"].0.clone();
    p.dyno_ok(&["ps:restart", "-p", "web", "-a", "chk"]);
    p.dyno_ok(&["ps:scale", "web=2", "worker=1", "-a", "chk", "--wait"]);
    wait_until(
        "web.1 restarted with its check",
        Duration::from_secs(20),
        || {
            let d = p.dyno_ids("chk");
            (d.len() == 3 && d["web.1"].0 != before && d.values().all(|(_, s)| s == "up"))
                .then_some(())
        },
    );

    // web.1 hangs: asked directly, it never answers again, though its process runs on.
    let dynos = p.dynos("chk");
    let web1 = dyno(&dynos, "web.1").unwrap().clone();
    let address = web1["address"].as_str().unwrap().to_string();
    let hang = std::thread::spawn(move || {
        let _ = ureq::get(&format!("http://{address}/hang"))
            .timeout(Duration::from_secs(1))
            .call();
    });
    wait_until("web.1 unhealthy", Duration::from_secs(10), || {
        let d = p.dynos("chk");
        (dyno(&d, "web.1")?["healthy"] == false).then_some(())
    });
    // Out of the router at once: every request lands on web.2.
    for _ in 0..20 {
        let (status, body) = p.route("chk", "/").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"dyno\":\"web.2\""), "{body}");
    }
    // Replaced: a new process under web.1, healthy and routed again.
    wait_until("web.1 replaced", Duration::from_secs(20), || {
        let d = p.dynos("chk");
        let w = dyno(&d, "web.1")?;
        (w["state"] == "up" && w["healthy"] == true && w["restarts"].as_u64()? >= 1).then_some(())
    });
    hang.join().unwrap();
    wait_until("web.1 serving", Duration::from_secs(10), || {
        (0..10)
            .any(|_| {
                p.route("chk", "/")
                    .is_ok_and(|(s, b)| s == 200 && b.contains("\"dyno\":\"web.1\""))
            })
            .then_some(())
    });

    // The worker's heartbeat stops after 2.5 s: it is killed and restarted. (Its restart count
    // alone would not say why it restarted.)
    let logs = wait_until(
        "worker.1 killed by its check",
        Duration::from_secs(20),
        || {
            let logs = p.logs("chk");
            logs.contains("heroku[worker.1]: Dyno unresponsive: 2 failed health checks in a row")
                .then_some(logs)
        },
    );
    assert!(!logs.contains("Text file busy"), "{logs}");
    for line in [
        "heroku[web.1]: Health check failed (1 of 3): GET /health: no answer within 0.5 s",
        "heroku[web.1]: Dyno unresponsive: 3 failed health checks in a row; stopping it with SIGKILL",
        "heroku[worker.1]: Health check failed (1 of 2): heartbeat file /app/hb last touched",
        "heroku[worker.1]: Dyno unresponsive: 2 failed health checks in a row",
    ] {
        assert!(logs.contains(line), "missing {line:?} in:\n{logs}");
    }
    let gone = p.dyno_ok(&["checks:unset", "worker", "-a", "chk"]);
    assert!(gone.contains("done"), "{gone}");
    assert_eq!(
        p.json(&["checks", "-a", "chk"]).as_array().unwrap().len(),
        1
    );
}
