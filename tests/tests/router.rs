//! The routing mesh in the running platform: real coordinator (with its in-process router),
//! agent and `dyno-probe` web dynos: balancing, headers, custom domains, the per-dyno concurrency
//! limit with its router-side queue, and H10 for an app whose web dynos all crashed. Timeouts,
//! TLS and HTTP/2 are tested on the router itself in router/tests/.

use dyno_tests::{Platform, wait_until};
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

#[test]
fn custom_domains_a_concurrency_limit_and_h10_through_the_coordinator() {
    let p = Platform::start();
    p.deploy("dom", WEB);
    p.wait_up("dom", &["web.1"]);

    // A custom domain routes to the app; bad ones are refused.
    let bad = p.dyno(&["domains:add", "not a host", "-a", "dom"]);
    assert_eq!(bad.status.code(), Some(2));
    p.dyno_ok(&["domains:add", "www.dom.test", "-a", "dom"]);
    assert!(
        p.dyno_ok(&["domains", "-a", "dom"])
            .contains("www.dom.test")
    );
    let by_domain = |host: &str| match ureq::get(&format!("http://127.0.0.1:{}/", p.router_port))
        .set("Host", host)
        .timeout(Duration::from_secs(5))
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(by_domain("www.dom.test"), 200);
    p.dyno_ok(&["domains:remove", "www.dom.test", "-a", "dom"]);
    assert_eq!(by_domain("www.dom.test"), 404);

    // web=1: a second request waits at the router for the busy dyno instead of joining it.
    assert!(
        p.dyno_ok(&["ps:concurrency", "-a", "dom"])
            .contains("web=none")
    );
    p.dyno_ok(&["ps:concurrency", "web=1", "-a", "dom"]);
    let router = p.router_port;
    let slow = std::thread::spawn(move || {
        ureq::get(&format!("http://127.0.0.1:{router}/sleep?ms=1500"))
            .set("Host", "dom.localhost")
            .call()
            .map_or(0, |r| r.status())
    });
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(get(&p, "dom", "/", &[]).0, 200);
    let waited = t0.elapsed();
    assert_eq!(slow.join().unwrap(), 200);
    assert!(
        waited >= Duration::from_millis(900),
        "the second request waited for the first: {waited:?}"
    );
    p.dyno_ok(&["ps:concurrency", "web=none", "-a", "dom"]);

    // Every web dyno crashed: H10 at once, not H14 (a long cool-off keeps it crashed).
    drop(p);
    let p = Platform::start_with_backoff("60");
    p.deploy("crashy", "web: dyno-probe exit 1\n");
    dyno_tests::wait_until("web.1 crashed", Duration::from_secs(20), || {
        let d = p.dynos("crashy");
        (d.len() == 1 && d[0]["state"] == "crashed").then_some(())
    });
    let (status, _) = get(&p, "crashy", "/", &[]);
    assert_eq!(status, 503);
    // The router's line reaches the log a moment after the answer.
    dyno_tests::wait_until("an H10 line", Duration::from_secs(10), || {
        p.logs("crashy").contains("code=H10").then_some(())
    });
}

#[test]
fn an_idle_eco_app_sleeps_and_the_next_request_wakes_and_is_served() {
    // Idle after 2 s without requests.
    let p = Platform::start_with_coordinator_args(&["--eco-idle-minutes", "0.0333"]);
    p.deploy("nap", "web: dyno-probe web\n");
    p.dyno_ok(&["ps:scale", "web=1:eco", "-a", "nap", "--wait"]);
    let id = p.dyno_ids("nap")["web.1"].0.clone();
    wait_until("web.1 asleep", Duration::from_secs(30), || {
        let d = p.dynos("nap");
        (d.len() == 1 && d[0]["state"] == "idle").then_some(())
    });
    assert_eq!(
        p.dyno_process_groups().len(),
        0,
        "nothing runs while it sleeps"
    );
    let events = p.dyno_ok(&["events", "-a", "nap"]);
    assert!(events.contains("Idling: no requests"), "{events}");

    // The request is held while the dyno starts, then served by the same dyno (woken, not
    // replaced).
    let started = std::time::Instant::now();
    let (status, body) = p.route("nap", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    eprintln!("woke and served in {:?}", started.elapsed());
    let d = p.dynos("nap");
    assert_eq!(d[0]["state"], "up");
    assert_eq!(p.dyno_ids("nap")["web.1"].0, id);
    let events = p.dyno_ok(&["events", "-a", "nap"]);
    assert!(events.contains("Waking: a request arrived"), "{events}");

    // A request keeps it awake; silence puts it back to sleep.
    wait_until("asleep again", Duration::from_secs(30), || {
        (p.dynos("nap")[0]["state"] == "idle").then_some(())
    });
}

/// A web dyno that is stopped leaves the router first and gets SIGTERM only once the request
/// it was serving is done (the probe dies at once on SIGTERM, so a lost request would show).
#[test]
fn a_restarted_web_dyno_finishes_the_request_it_was_serving() {
    let p = Platform::start();
    p.deploy("drain", "web: dyno-probe web\n");
    p.wait_up("drain", &["web.1"]);
    std::thread::scope(|s| {
        let slow = s.spawn(|| p.route("drain", "/sleep?ms=1500"));
        std::thread::sleep(Duration::from_millis(400));
        let started = std::time::Instant::now();
        p.dyno_ok(&["ps:restart", "-d", "web.1", "-a", "drain"]);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the restart answers without waiting for the drain"
        );
        let (status, body) = slow.join().unwrap().expect("the slow request completes");
        assert_eq!(status, 200, "in flight during the restart: {body}");
    });
    // And the dyno was restarted all the same.
    wait_until("web.1 back up", Duration::from_secs(30), || {
        p.dynos("drain")
            .iter()
            .any(|d| d["name"] == "web.1" && d["state"] == "up")
            .then_some(())
    });
}
