//! The routing mesh in the running platform: real coordinator (with its in-process router),
//! agent and `dyno-probe` web dynos. Router behaviour that needs settings the coordinator does
//! not expose yet (timeouts, concurrency limits, TLS, ...) is tested in router/tests/.

use dyno_tests::Platform;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const WEB: &str = "web: dyno-probe web\n";

fn get(p: &Platform, app: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = ureq::get(&format!("http://127.0.0.1:{}{path}", p.router_port))
        .set("Host", &format!("{app}.localhost"))
        .timeout(Duration::from_secs(20));
    for (name, value) in headers {
        req = req.set(name, value);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_json().expect("the probe answers JSON")),
        Err(ureq::Error::Status(code, r)) => {
            (code, Value::String(r.into_string().unwrap_or_default()))
        }
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[test]
fn a_slow_request_on_one_dyno_does_not_delay_requests_the_other_can_serve() {
    let p = Platform::start();
    p.deploy("shop", WEB);
    p.dyno_ok(&["ps:scale", "web=2", "-a", "shop", "--wait"]);
    p.wait_up("shop", &["web.1", "web.2"]);

    let port = p.router_port;
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let r = ureq::get(&format!("http://127.0.0.1:{port}/sleep?ms=3000"))
            .set("Host", "shop.localhost")
            .timeout(Duration::from_secs(20))
            .call()
            .expect("the slow request is answered");
        let v: Value = r.into_json().unwrap();
        (v["dyno"].as_str().unwrap().to_string(), started.elapsed())
    });
    // Let the slow request reach its dyno first.
    std::thread::sleep(Duration::from_millis(300));

    let mut served_by = BTreeSet::new();
    for _ in 0..10 {
        let started = Instant::now();
        let (status, body) = get(&p, "shop", "/", &[]);
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "a quick request waited {:?} behind the slow one",
            started.elapsed()
        );
        served_by.insert(body["dyno"].as_str().unwrap().to_string());
    }
    let (slow_dyno, slow_took) = slow.join().unwrap();
    assert!(slow_took >= Duration::from_secs(3));
    assert_eq!(served_by.len(), 1, "{served_by:?}");
    assert!(
        !served_by.contains(&slow_dyno),
        "quick requests went to the busy {slow_dyno}"
    );
}

#[test]
fn forwarding_headers_request_ids_and_router_log_lines() {
    let p = Platform::start();
    p.deploy("ids", WEB);
    p.wait_up("ids", &["web.1"]);

    let kept = "abcdefghij-0123456789+/=";
    let (status, body) = get(
        &p,
        "ids",
        "/kept",
        &[("X-Request-Id", kept), ("X-Forwarded-For", "203.0.113.9")],
    );
    assert_eq!(status, 200, "{body}");
    let headers = &body["headers"];
    assert_eq!(headers["x-request-id"], kept);
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-port"], p.router_port.to_string());
    assert_eq!(headers["via"], "1.1 dyno-router");
    let start: i64 = headers["x-request-start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let now_ms = dyno_shared::time::now_micros() / 1000;
    assert!((now_ms - 10_000..=now_ms).contains(&start), "{start}");

    // Too short to keep: the router makes a new one.
    let (_, body) = get(&p, "ids", "/made", &[("X-Request-Id", "too-short")]);
    let made = body["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(made, "too-short");
    assert_eq!(made.len(), 36);

    // Every request has a router line in the app's log; errors carry their code.
    p.dyno_ok(&["ps:scale", "web=0", "-a", "ids", "--wait"]);
    let (status, body) = get(&p, "ids", "/gone", &[]);
    assert_eq!(status, 503);
    assert!(body.as_str().unwrap().contains("H14"), "{body}");
    dyno_tests::wait_until("router lines in the log", Duration::from_secs(10), || {
        let logs = p.logs("ids");
        let lines: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("heroku[router]"))
            .collect();
        let kept_line = lines
            .iter()
            .any(|l| l.contains("path=/kept") && l.contains(&format!("request_id={kept}")));
        let made_line = lines
            .iter()
            .any(|l| l.contains("path=/made") && l.contains(&format!("request_id={made}")));
        let h14 = lines.iter().any(|l| {
            l.contains("at=error code=H14 desc=\"No web dynos running\" method=GET path=/gone")
        });
        (kept_line && made_line && h14).then_some(())
    });
}
