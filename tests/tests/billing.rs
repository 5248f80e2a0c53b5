//! Metering and billing against real dynos: usage to the second from state changes, across a
//! coordinator kill -9, one-off dynos, eco pools that run out, and price tables reloaded on
//! SIGHUP.

use dyno_tests::{Platform, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The bill's line for (type, size) of `app`, if any.
fn line(report: &Value, app: &str, ptype: &str, size: &str) -> Option<Value> {
    report["apps"]
        .as_array()?
        .iter()
        .find(|a| a["app"] == app)?["lines"]
        .as_array()?
        .iter()
        .find(|l| l["type"] == ptype && l["size"] == size)
        .cloned()
}

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("coordinator.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn usage_is_metered_to_the_second_across_a_coordinator_kill_9() {
    let mut p = Platform::start();
    p.deploy("meter", "worker: dyno-probe worker\n");

    let before_scale = Instant::now();
    p.dyno_ok(&["ps:scale", "worker=2", "-a", "meter", "--wait"]);
    let all_up = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    // The dynos keep running while the coordinator is dead, so that time is billed once.
    p.kill_coordinator();
    std::thread::sleep(Duration::from_millis(1500));
    p.start_coordinator();
    p.wait_for_host();
    std::thread::sleep(Duration::from_millis(500));
    let scale_down = Instant::now();
    p.dyno_ok(&["ps:scale", "worker=0", "-a", "meter"]);
    wait_until("workers gone", Duration::from_secs(20), || {
        p.dynos("meter").is_empty().then_some(())
    });
    let gone = Instant::now();

    let report = p.json(&["billing", "-a", "meter"]);
    let l = line(&report, "meter", "worker", "Standard-1X").expect("a worker line");
    let secs = l["dyno_seconds"].as_u64().unwrap() as f64;
    let low = 2.0 * (scale_down - all_up).as_secs_f64() - 2.0;
    let high = 2.0 * (gone - before_scale).as_secs_f64() + 2.0;
    assert!(
        (low..=high).contains(&secs),
        "2 dynos billed {secs} s; they existed between {low} and {high} s: {report}"
    );
    let cost = l["cost"].as_f64().unwrap();
    let expected = secs * 25.0 / 720.0 / 3600.0;
    assert!((cost - expected).abs() < 0.001, "{cost} vs {expected}");
    assert_eq!(l["quantity"], 0, "the formation is scaled down: {l}");
    assert_eq!(report["current"], true);
    assert_eq!(report["currency"], "USD");
    assert_eq!(report["cost"], report["apps"][0]["cost"]);

    // Nothing more accrues once the dynos are gone.
    std::thread::sleep(Duration::from_millis(1500));
    let again = p.json(&["billing", "-a", "meter"]);
    assert_eq!(
        line(&again, "meter", "worker", "Standard-1X").unwrap()["dyno_seconds"],
        l["dyno_seconds"]
    );

    // One-off dynos are metered too, under `run`.
    let started = Instant::now();
    p.dyno_ok(&["run", "-a", "meter", "--", "dyno-probe", "sleep", "2"]);
    let took = started.elapsed().as_secs_f64();
    let report = p.json(&["billing", "-a", "meter"]);
    let run = line(&report, "meter", "run", "Standard-1X").expect("a run line");
    let secs = run["dyno_seconds"].as_u64().unwrap() as f64;
    assert!(
        (1.0..=took + 1.0).contains(&secs),
        "run billed {secs} s, ran 2 s within {took} s"
    );

    // The CLI reads the same numbers: a table, an invoice per app and size, and prices.
    let month = report["month"].as_str().unwrap().to_string();
    let text = p.dyno_ok(&["billing", "-a", "meter"]);
    assert!(
        text.contains("meter") && text.contains("worker") && text.contains('$'),
        "{text}"
    );
    let csv = p.dyno_ok(&["billing", "-a", "meter", "--csv"]);
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("month,app,owner,size,dyno_hours,cost,currency")
    );
    let row: Vec<&str> = rows.next().expect("an invoice line").split(',').collect();
    assert_eq!(
        &row[..4],
        [month.as_str(), "meter", "default", "standard-1x"]
    );
    let total = report["apps"][0]["cost"].as_f64().unwrap();
    assert!(
        (row[5].parse::<f64>().unwrap() - total).abs() < 0.006,
        "{csv}"
    );
    assert_eq!(row[6], "USD");
    let types = p.dyno_ok(&["ps:type", "-a", "meter"]);
    assert!(
        types.contains("~$0.035") && types.contains("$25"),
        "{types}"
    );
    let bad = p.dyno(&["billing", "--month", "2026-13"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("2026-13"));

    // Bad requests name what was wrong and change nothing.
    let err = p.get("/billing?month=2026-13").unwrap_err();
    assert!(err.starts_with("422") || err.starts_with("400"), "{err}");
    assert!(err.contains("2026-13"), "{err}");
    let err = p.get("/billing?app=nosuch").unwrap_err();
    assert!(err.starts_with("404") && err.contains("nosuch"), "{err}");
    // A month long past has nothing, and projects nothing.
    let old = p.get("/billing?month=2001-01").unwrap();
    assert_eq!(old["apps"].as_array().unwrap().len(), 0);
    assert_eq!(old["current"], false);
}

#[test]
fn eco_dynos_sleep_when_the_pool_runs_out_and_a_sighup_reprices_from_then() {
    let cfg = tempfile::tempdir().unwrap();
    // A pool of 3.6 seconds, so it runs out within the test.
    let path = config_file(&cfg, "[pricing]\neco_pool_hours = 0.001\n");
    let p = Platform::start_with_coordinator_args(&["--config", &path]);
    let pricing = p.get("/pricing").unwrap();
    assert_eq!(pricing["model"], "monthly");
    assert_eq!(pricing["eco_pool_hours"], 0.001);
    let std1x = pricing["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["size"] == "Standard-1X")
        .unwrap()
        .clone();
    assert_eq!(std1x["max_monthly"], 25.0);

    let bad = p.dyno(&["apps:create", "sleepy", "--owner", "not an owner"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an owner"));
    p.dyno_ok(&["apps:create", "sleepy", "--owner", "acme"]);
    let dir = p.app_dir("sleepy", "worker: dyno-probe worker\n");
    p.dyno_ok(&["deploy", dir.to_str().unwrap(), "-a", "sleepy"]);
    p.dyno_ok(&["ps:scale", "worker=1:eco", "-a", "sleepy"]);
    wait_until("the eco worker sleeps", Duration::from_secs(30), || {
        let d = p.dynos("sleepy");
        (d.len() == 1 && d[0]["state"] == "idle").then_some(())
    });
    let report = p.get("/billing").unwrap();
    let pool = &report["eco_pools"][0];
    assert_eq!(pool["owner"], "acme");
    assert_eq!(pool["exhausted"], true, "{report}");
    assert_eq!(pool["cost"], 5.0);
    let used = pool["hours_used"].as_f64().unwrap();
    assert!((0.001..0.003).contains(&used), "{report}");
    let events = p.get("/apps/sleepy/events").unwrap().to_string();
    assert!(events.contains("Sleeping"), "{events}");
    assert_eq!(
        p.dyno_process_groups().len(),
        0,
        "the sleeping dyno runs nothing"
    );

    // Asleep it stays (no restart loop) and costs nothing more.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.dynos("sleepy")[0]["state"], "idle");
    let later = p.get("/billing").unwrap();
    assert_eq!(later["eco_pools"][0]["hours_used"], pool["hours_used"]);

    // New prices from the config file, applied from the SIGHUP on: a bigger pool wakes the
    // dyno, and the new currency shows.
    config_file(
        &cfg,
        "[pricing]\neco_pool_hours = 1000\ncurrency = \"EUR\"\n[pricing.monthly]\nstandard-1x = 30\n",
    );
    let pid = p.coordinator_pid().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until("new prices", Duration::from_secs(10), || {
        let pr = p.get("/pricing").ok()?;
        (pr["currency"] == "EUR").then_some(pr)
    });
    wait_until("the eco worker wakes", Duration::from_secs(30), || {
        let d = p.dynos("sleepy");
        (d.len() == 1 && d[0]["state"] == "up").then_some(())
    });
    let report = p.get("/billing").unwrap();
    assert_eq!(report["currency"], "EUR");
    assert_eq!(report["eco_pools"][0]["exhausted"], false);

    // A bad config on SIGHUP changes nothing.
    config_file(&cfg, "[pricing]\neco_pool_hours = -5\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pr = p.get("/pricing").unwrap();
    assert_eq!(pr["eco_pool_hours"], 1000.0);
    let log = std::fs::read_to_string(p.dir.path().join("coordinator.log")).unwrap();
    assert!(log.contains("eco_pool_hours"), "the reason is logged");
}

#[test]
fn a_bad_config_file_stops_the_coordinator_at_start_with_the_reason() {
    let cfg = tempfile::tempdir().unwrap();
    let path = config_file(&cfg, "[pricing]\npreset = \"cheap\"\n");
    let out = std::process::Command::new(dyno_tests::bin("dyno-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--router", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(cfg.path().join("state"))
        .args(["--config", &path])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cheap") && err.contains("coordinator.toml"),
        "{err}"
    );
}
