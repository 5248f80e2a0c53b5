//! Releases: the release phase gates a release, a failing one leaves the running release live,
//! and a rollback makes a new release from an old one.

use dyno_tests::{Platform, wait_until};
use std::time::Duration;

const GOOD: &str = "web: dyno-probe web\nrelease: dyno-probe echo migrated the database\n";
const BAD: &str = "web: dyno-probe web\nrelease: dyno-probe exit 3\n";

/// version -> (status, current) of every release.
fn releases(p: &Platform, app: &str) -> Vec<(u64, String, bool)> {
    p.json(&["releases", "-a", app])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
                r["current"].as_bool().unwrap(),
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn redeploy(p: &Platform, app: &str, procfile: &str) {
    let dir = p.app_dir(app, procfile);
    p.dyno_ok(&["deploy", dir.to_str().unwrap(), "-a", app]);
}

#[test]
fn the_release_phase_gates_releases_and_rollback_brings_an_old_one_back() {
    let p = Platform::start();
    p.deploy("rel", GOOD);
    // v1 goes live only after its release phase: then web.1 starts on it.
    wait_until("v1 live", Duration::from_secs(30), || {
        (releases(&p, "rel") == [(1, "succeeded".to_string(), true)]).then_some(())
    });
    p.wait_up("rel", &["web.1"]);
    let logs = p.logs("rel");
    assert!(
        logs.contains("app[release.1]: migrated the database"),
        "{logs}"
    );
    assert!(logs.contains("Release v1 is live"), "{logs}");
    assert!(
        p.dynos("rel")
            .iter()
            .all(|d| d["process_type"] != "release"),
        "the release phase's dyno is gone"
    );
    let web = p.dyno_ids("rel")["web.1"].clone();
    let events = p.dyno_ok(&["events", "-a", "rel"]);
    for e in [
        "api: Release v1 created: Deploy",
        "api: Release v1 is live: its release phase exited with status 0",
        "web.1: State changed from starting to up",
    ] {
        assert!(events.contains(e), "no {e:?} in events:\n{events}");
    }
    // A phase that exits within one report batch of starting goes from starting to down.
    assert!(
        events
            .lines()
            .any(|l| l.contains("release.1: State changed from ")
                && l.ends_with("to down (Process exited)")),
        "the release phase's exit is an event:\n{events}"
    );

    // A failing release phase: v2 fails, v1 stays live, its dyno untouched.
    redeploy(&p, "rel", BAD);
    wait_until("v2 failed", Duration::from_secs(30), || {
        releases(&p, "rel")
            .iter()
            .any(|r| r.0 == 2 && r.1 == "failed")
            .then_some(())
    });
    assert_eq!(
        releases(&p, "rel"),
        [
            (1, "succeeded".to_string(), true),
            (2, "failed".to_string(), false)
        ]
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(p.dyno_ids("rel")["web.1"], web, "the running release stays");
    assert_eq!(p.dynos("rel")[0]["release"]["version"], 1);
    let logs = p.logs("rel");
    assert!(
        logs.contains("Release v2 failed: its release phase exited with status 3; v1 stays live"),
        "{logs}"
    );

    // A config change is a release too: v3 runs v1's release phase and goes live.
    p.dyno_ok(&["config:set", "COLOR=blue", "-a", "rel"]);
    wait_until("v3 live on web.1", Duration::from_secs(30), || {
        let d = p.dynos("rel");
        (d.len() == 1 && d[0]["release"]["version"] == 3 && d[0]["state"] == "up").then_some(())
    });

    // Rollback to v1: v4 has v1's config again (no COLOR), and the dynos move to it.
    let r: serde_json::Value = ureq::post(&format!("{}/apps/rel/releases", p.url()))
        .set("Authorization", &format!("Bearer {}", p.token))
        .send_json(serde_json::json!({"release": "v1"}))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(r["version"], 4);
    assert_eq!(r["description"], "Rollback to v1");
    wait_until("v4 live on web.1", Duration::from_secs(30), || {
        let d = p.dynos("rel");
        (d.len() == 1 && d[0]["release"]["version"] == 4 && d[0]["state"] == "up").then_some(())
    });
    let config = p.json(&["config", "-a", "rel"]);
    assert!(config.get("COLOR").is_none(), "{config}");
    // The CLI without a version: the last live release before the current one (v3).
    let out = p.dyno_ok(&["releases:rollback", "-a", "rel"]);
    assert!(out.contains("Rolling back rel to v3... done, v5"), "{out}");
    assert_eq!(p.json(&["config", "-a", "rel"])["COLOR"], "blue");
    let bad = p.dyno(&["releases:rollback", "version-three", "-a", "rel"]);
    assert_eq!(bad.status.code(), Some(2));
    // A failed release or a missing one cannot be rolled back to.
    for (target, code) in [("2", 422), ("9", 404)] {
        match ureq::post(&format!("{}/apps/rel/releases", p.url()))
            .set("Authorization", &format!("Bearer {}", p.token))
            .send_json(serde_json::json!({ "release": target }))
        {
            Err(ureq::Error::Status(c, _)) => assert_eq!(c, code, "rollback to {target}"),
            other => panic!("rollback to {target}: {other:?}"),
        }
    }
}

#[test]
fn a_rolling_restart_goes_batch_by_batch() {
    let p = Platform::start();
    p.deploy("roll", "web: dyno-probe web\n");
    p.dyno_ok(&["ps:scale", "web=4", "-a", "roll", "--wait"]);
    let before = p.dyno_ids("roll");
    let bad = p.dyno(&["ps:restart", "-p", "web", "--batch", "0%", "-a", "roll"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(p.dyno_ids("roll"), before, "a bad batch changes nothing");

    let out = p.dyno_ok(&["ps:restart", "-p", "web", "--batch", "50%", "-a", "roll"]);
    assert!(out.contains("in batches of 50%"), "{out}");
    wait_until("rolled", Duration::from_secs(60), || {
        p.logs("roll")
            .contains("Rolling restart done")
            .then_some(())
    });
    let after = p.dyno_ids("roll");
    assert_eq!(after.len(), 4);
    for (name, (id, state)) in &after {
        assert_ne!(id, &before[name].0, "{name} restarted");
        assert_eq!(state, "up");
    }
    // Batch 2 stopped only after batch 1's new dynos were up.
    let logs = p.logs("roll");
    let lines: Vec<&str> = logs.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{logs}"))
    };
    assert!(
        logs.contains("Rolling restart: batch 1/2: web.1, web.2"),
        "{logs}"
    );
    let second = at("Rolling restart: batch 2/2: web.3, web.4");
    for name in ["web.1", "web.2"] {
        let up = lines
            .iter()
            .rposition(|l| {
                l.contains(&format!(
                    "heroku[{name}]: State changed from starting to up"
                ))
            })
            .unwrap();
        assert!(up < second, "{name} was up again before batch 2:\n{logs}");
    }
}

#[test]
fn daily_cycling_replaces_a_dyno_before_stopping_it() {
    // 1.8 s instead of 24 h, no jitter.
    let p = Platform::start_with_coordinator_args(&[
        "--cycle-after-hours",
        "0.0005",
        "--cycle-jitter-minutes",
        "0",
    ]);
    p.deploy("cyc", "web: dyno-probe web\n");
    p.wait_up("cyc", &["web.1"]);
    let first = p.dyno_ids("cyc")["web.1"].0.clone();
    wait_until("web.1 cycled", Duration::from_secs(20), || {
        let d = p.dyno_ids("cyc");
        (d.len() == 1 && d["web.1"].0 != first && d["web.1"].1 == "up").then_some(())
    });
    let logs = p.logs("cyc");
    let lines: Vec<&str> = logs.lines().collect();
    let cycling = lines
        .iter()
        .position(|l| l.contains("heroku[web.1]: Cycling"))
        .unwrap_or_else(|| panic!("no Cycling line:\n{logs}"));
    // The replacement was up before the old one got SIGTERM.
    let up = lines[cycling..]
        .iter()
        .position(|l| l.contains("heroku[web.1]: State changed from starting to up"))
        .expect("the replacement came up");
    let term = lines[cycling..]
        .iter()
        .position(|l| l.contains("heroku[web.1]: Stopping all processes with SIGTERM"))
        .expect("the old dyno was stopped");
    assert!(up < term, "stopped before its replacement was up:\n{logs}");
}

#[test]
fn maintenance_mode_serves_h80_while_the_dynos_run_on() {
    let p = Platform::start();
    p.deploy("maint", "web: dyno-probe web\n");
    p.wait_up("maint", &["web.1"]);
    let web = p.dyno_ids("maint")["web.1"].clone();
    assert_eq!(p.dyno_ok(&["maintenance", "-a", "maint"]).trim(), "off");
    let on = p.dyno_ok(&["maintenance:on", "-a", "maint"]);
    assert!(
        on.contains("Enabling maintenance mode for maint... done"),
        "{on}"
    );
    wait_until("H80 page", Duration::from_secs(10), || {
        (p.route("maint", "/").ok()?.0 == 503).then_some(())
    });
    assert_eq!(p.dyno_ok(&["maintenance", "-a", "maint"]).trim(), "on");
    assert_eq!(p.dyno_ids("maint")["web.1"], web, "the dyno runs on");
    p.dyno_ok(&["maintenance:off", "-a", "maint"]);
    wait_until("served again", Duration::from_secs(10), || {
        (p.route("maint", "/").ok()?.0 == 200).then_some(())
    });
    assert!(p.logs("maint").contains("H80"), "the router logs H80");
    assert!(
        p.dyno_ok(&["events", "-a", "maint"])
            .contains("api: Maintenance mode on")
    );
}
