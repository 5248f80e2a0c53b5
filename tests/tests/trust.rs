//! Who may do what: API tokens by role, hashed at rest, an audit of every change, `dyno login`,
//! agents joining with a join token and getting their own (revocable) credential, and the limit
//! on failed logins.

use dyno_tests::{Platform, bin, wait_until};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

const SAMPLE: &str = "web: dyno-probe web\nworker: dyno-probe worker\n";

/// `dyno` with exactly this token (no saved config, no DYNO_TOKEN from the harness).
fn dyno_as(p: &Platform, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("dyno"))
        .args(args)
        .env("DYNO_COORDINATOR", p.url())
        .env("DYNO_TOKEN", token)
        .env("XDG_CONFIG_HOME", p.dir.path().join("nocfg"))
        .env("HOME", p.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn get_as(p: &Platform, token: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = ureq::get(&format!("{}{path}", p.url()));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn roles_decide_what_a_token_may_do_and_every_change_is_audited() {
    let p = Platform::start();
    p.deploy("shop", SAMPLE);

    // No token, a wrong one: refused, with the reason, and the CLI exits 3.
    let (code, body) = get_as(&p, None, "/apps");
    assert_eq!(code, 401);
    assert!(
        body["message"].as_str().unwrap().contains("Authorization"),
        "{body}"
    );
    let (code, body) = get_as(&p, Some("dyno_op_nope"), "/apps");
    assert_eq!((code, body["id"].as_str()), (401, Some("unauthorized")));
    let out = dyno_as(&p, "dyno_op_nope", &["apps"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid token"), "{}", stderr(&out));

    // An operator creates a read token and an operate token; secrets are shown once.
    let viewer = p.dyno_ok(&["tokens:create", "viewer", "--role", "read"]);
    let viewer = viewer.trim().to_string();
    assert!(viewer.starts_with("dyno_rd_"), "{viewer}");
    let deployer = p.dyno_ok(&["tokens:create", "deployer", "--role", "operate"]);
    let deployer = deployer.trim().to_string();
    let dup = p.dyno(&["tokens:create", "viewer", "--role", "read"]);
    assert!(
        !dup.status.success() && stderr(&dup).contains("exists"),
        "{}",
        stderr(&dup)
    );
    let bad = p.dyno(&["tokens:create", "x", "--role", "admin"]);
    assert_eq!(bad.status.code(), Some(2));

    // read: ps, logs, billing, hosts; not config vars, not changes.
    for args in [
        vec!["apps"],
        vec!["ps", "-a", "shop"],
        vec!["logs", "-a", "shop", "-n", "5"],
        vec!["billing"],
        vec!["hosts"],
    ] {
        let out = dyno_as(&p, &viewer, &args);
        assert!(
            out.status.success(),
            "read token: {args:?}: {}",
            stderr(&out)
        );
    }
    let formation = p.get("/apps/shop/formation").unwrap();
    for args in [
        vec!["config", "-a", "shop"],
        vec!["ps:scale", "web=3", "-a", "shop"],
        vec!["ps:restart", "-a", "shop"],
        vec!["tokens"],
        vec!["audit"],
    ] {
        let out = dyno_as(&p, &viewer, &args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "read token: {args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("the read token viewer may not"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        p.get("/apps/shop/formation").unwrap(),
        formation,
        "nothing changed"
    );

    // operate: changes, and the audit says who made them.
    let out = dyno_as(&p, &deployer, &["ps:scale", "worker=1", "-a", "shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let audit = p.json(&["audit", "-n", "100"]);
    let rows = audit.as_array().unwrap();
    let by = |token: &str, path: &str, status: u64| {
        rows.iter()
            .any(|r| r["token"] == token && r["path"] == path && r["status"] == status)
    };
    assert!(by("deployer", "/apps/shop/formation/scale", 200), "{audit}");
    assert!(by("viewer", "/apps/shop/formation/scale", 403), "{audit}");
    assert!(by("root", "/tokens", 201), "{audit}");
    assert!(
        rows.iter().all(|r| r["method"] != "GET"),
        "reads are not audited: {audit}"
    );

    // Tokens are stored hashed: the secret is nowhere in the store.
    let db = p.dir.path().join("coordinator/state.db");
    std::thread::sleep(Duration::from_millis(100));
    for f in ["state.db", "state.db-wal"] {
        let bytes = std::fs::read(db.with_file_name(f)).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains(&viewer) && !hay.contains(&deployer),
            "a secret in {f}"
        );
    }

    // Revoked: refused at once, by name.
    p.dyno_ok(&["tokens:revoke", "viewer"]);
    let (code, body) = get_as(&p, Some(&viewer), "/apps");
    assert_eq!(code, 401);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("viewer was revoked"),
        "{body}"
    );
    let listed = p.json(&["tokens"]);
    let v = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "viewer")
        .unwrap();
    assert!(v["revoked_at"].is_string(), "{listed}");

    // `dyno login` checks the token and saves it with the URL, 0600, for later commands.
    let cfg = p.dir.path().join("logincfg");
    let login = Command::new(bin("dyno"))
        .args(["login", "--coordinator", &p.url(), "--token", &deployer])
        .env("XDG_CONFIG_HOME", &cfg)
        .env_remove("DYNO_TOKEN")
        .env_remove("DYNO_COORDINATOR")
        .output()
        .unwrap();
    assert!(login.status.success(), "{}", stderr(&login));
    assert!(String::from_utf8_lossy(&login.stdout).contains("as deployer (operate)"));
    let file = cfg.join("dyno/config.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let apps = Command::new(bin("dyno"))
        .args(["apps"])
        .env("XDG_CONFIG_HOME", &cfg)
        .env_remove("DYNO_TOKEN")
        .env_remove("DYNO_COORDINATOR")
        .output()
        .unwrap();
    assert!(apps.status.success(), "{}", stderr(&apps));
    assert!(String::from_utf8_lossy(&apps.stdout).contains("shop"));
    let wrong = Command::new(bin("dyno"))
        .args([
            "login",
            "--coordinator",
            &p.url(),
            "--token",
            "dyno_op_wrong",
        ])
        .env("XDG_CONFIG_HOME", p.dir.path().join("other"))
        .env_remove("DYNO_TOKEN")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(3));
    assert!(
        !p.dir.path().join("other/dyno/config.json").exists(),
        "a failed login saves nothing"
    );
}

fn start_agent(p: &Platform, name: &str, token: &str) -> std::process::Child {
    Command::new(bin("dyno-agent"))
        .args(["--coordinator", &p.url(), "--token", token, "--name", name])
        .arg("--state-dir")
        .arg(p.dir.path().join(name))
        .args(["--stop-grace-secs", "3"])
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(p.dir.path().join(format!("{name}.log"))).unwrap())
        .stderr(std::fs::File::create(p.dir.path().join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap()
}

fn host_state(p: &Platform, name: &str) -> Option<String> {
    let hosts = p.get("/hosts").ok()?;
    hosts
        .as_array()?
        .iter()
        .find(|h| h["id"] == name)
        .map(|h| h["state"].as_str().unwrap_or("").to_string())
}

#[test]
fn agents_join_with_a_join_token_and_a_removed_host_is_refused() {
    let mut p = Platform::start();
    let out = Command::new(bin("dyno-coordinator"))
        .arg("--state-dir")
        .arg(p.dir.path().join("coordinator"))
        .args(["tokens:create", "--agent", "rack-7"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let join = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(join.starts_with("dyno_jn_"), "{join}");

    // A join token cannot drive the API.
    assert_eq!(get_as(&p, Some(&join), "/apps").0, 403);

    let agent = start_agent(&p, "host-2", &join);
    wait_until("host-2 connected", Duration::from_secs(20), || {
        (host_state(&p, "host-2")? == "connected").then_some(())
    });
    // It got a credential of its own, saved 0600, and no longer needs the join token.
    let cred_file = p.dir.path().join("host-2/credential");
    let cred = std::fs::read_to_string(&cred_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(cred.starts_with("dyno_ag_") && cred != join, "{cred}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cred_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let tokens = p.json(&["tokens"]);
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["role"] == "agent" && t["host"] == "host-2" && t["revoked_at"].is_null()),
        "{tokens}"
    );
    // The credential reaches only the agent endpoints.
    assert_eq!(get_as(&p, Some(&cred), "/apps").0, 403);
    p.dyno_ok(&["tokens:revoke", "rack-7"]);
    stop(agent);
    let agent = start_agent(&p, "host-2", &join);
    wait_until(
        "host-2 back on its own credential",
        Duration::from_secs(20),
        || (host_state(&p, "host-2")? == "connected").then_some(()),
    );

    // Dynos on both hosts; then host-2 is removed: its dynos start on host-1 and it is refused.
    p.deploy("shop", SAMPLE);
    p.dyno_ok(&["ps:scale", "web=2", "-a", "shop", "--wait"]);
    let on_2 = p
        .dynos("shop")
        .iter()
        .filter(|d| d["host"] == "host-2")
        .count();
    assert_eq!(on_2, 1, "spread over both hosts: {:?}", p.dynos("shop"));
    let refused = p.dyno(&["hosts:remove", "host-2"]);
    assert_eq!(refused.status.code(), Some(2), "asks for --confirm");
    p.dyno_ok(&["hosts:remove", "host-2", "--confirm", "host-2"]);
    wait_until(
        "both web dynos up on host-1",
        Duration::from_secs(30),
        || {
            let d = p.dynos("shop");
            (d.len() == 2
                && d.iter()
                    .all(|d| d["host"] == "host-1" && d["state"] == "up"))
            .then_some(())
        },
    );
    wait_until(
        "the agent's refusal logged",
        Duration::from_secs(20),
        || {
            let log = std::fs::read_to_string(p.dir.path().join("host-2.err")).unwrap_or_default()
                + &std::fs::read_to_string(p.dir.path().join("host-2.log")).unwrap_or_default();
            log.contains("refused this host's credential").then_some(())
        },
    );
    let log = std::fs::read_to_string(p.dir.path().join("coordinator.log")).unwrap();
    assert!(log.contains("host removed"), "{log}");
    assert!(
        log.contains("was revoked"),
        "the refused reconnect is logged"
    );
    assert!(host_state(&p, "host-2").is_none_or(|s| s != "connected"));
    stop(agent);
    p.kill_agent();
}

/// SIGTERM, so the agent stops its (plain) dynos before it exits.
fn stop(mut agent: std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    agent.wait().unwrap();
}

#[test]
fn an_address_that_keeps_failing_to_log_in_is_refused_for_a_while() {
    let p = Platform::start();
    // Requests without a token are refused, but do not lock the address out.
    for _ in 0..25 {
        assert_eq!(get_as(&p, None, "/apps").0, 401);
    }
    assert_eq!(get_as(&p, Some(&p.token), "/apps").0, 200);
    let mut last = 0;
    for _ in 0..25 {
        last = get_as(&p, Some("dyno_op_guess"), "/apps").0;
    }
    assert_eq!(last, 429);
    // Refused whatever it presents now, with the reason.
    let (code, body) = get_as(&p, Some(&p.token), "/apps");
    assert_eq!(code, 429);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many failed authentications"),
        "{body}"
    );
}

/// A coordinator of our own on `listen` (loopback or 0.0.0.0), its state in `dir`.
fn coordinator(dir: &std::path::Path, listen: &str, extra: &[&str]) -> std::process::Child {
    let child = Command::new(bin("dyno-coordinator"))
        .args(["--listen", listen])
        .args([
            "--router",
            &format!("127.0.0.1:{}", dyno_tests::free_port()),
        ])
        .arg("--state-dir")
        .arg(dir.join("coordinator"))
        .args(["--token", "root-secret"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(dir.join("coordinator.log")).unwrap())
        .spawn()
        .unwrap();
    wait_until("the fingerprint file", Duration::from_secs(20), || {
        std::fs::read_to_string(dir.join("coordinator/fingerprint"))
            .ok()
            .filter(|f| f.trim().starts_with("sha256:"))
            .map(|_| ())
    });
    child
}

fn cli(dir: &std::path::Path, url: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin("dyno"))
        .args(args)
        .env("DYNO_COORDINATOR", url)
        .env("DYNO_TOKEN", token)
        .env("XDG_CONFIG_HOME", dir.join("cfg"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_api_speaks_tls_that_clients_and_agents_pin_by_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let port = dyno_tests::free_port();
    let mut c = coordinator(dir.path(), &format!("127.0.0.1:{port}"), &["--api-tls"]);
    let fp = std::fs::read_to_string(dir.path().join("coordinator/fingerprint"))
        .unwrap()
        .trim()
        .to_string();
    let https = format!("https://127.0.0.1:{port}");
    let pinned = format!("root-secret@{fp}");
    wait_until("the API answers over TLS", Duration::from_secs(20), || {
        cli(dir.path(), &https, &pinned, &["apps"])
            .status
            .success()
            .then_some(())
    });

    // Without the pin (the system's roots), with a wrong one, or over plain HTTP: refused,
    // and the reason says which.
    let unpinned = cli(dir.path(), &https, "root-secret", &["apps"]);
    assert!(!unpinned.status.success());
    let wrong_fp = format!("root-secret@sha256:{}", "ab".repeat(32));
    let wrong = cli(dir.path(), &https, &wrong_fp, &["apps"]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("does not match the pinned fingerprint"),
        "{}",
        stderr(&wrong)
    );
    let plain = cli(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        "root-secret",
        &["apps"],
    );
    assert!(!plain.status.success());

    // A join token carries the fingerprint; the agent joins over wss and fetches slugs over
    // https with it.
    let out = Command::new(bin("dyno-coordinator"))
        .arg("--state-dir")
        .arg(dir.path().join("coordinator"))
        .args(["tokens:create", "--agent"])
        .output()
        .unwrap();
    let join = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(join.ends_with(&format!("@{fp}")), "{join}");
    let agent = Command::new(bin("dyno-agent"))
        .args([
            "--coordinator",
            &https,
            "--token",
            &join,
            "--name",
            "tls-host",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("agent"))
        .args(["--stop-grace-secs", "3"])
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("bin")).unwrap();
    std::fs::copy(bin("dyno-probe"), app.join("bin/dyno-probe")).unwrap();
    std::fs::write(app.join("Procfile"), "worker: dyno-probe worker\n").unwrap();
    for args in [
        vec!["apps:create", "secure"],
        vec!["deploy", app.to_str().unwrap(), "-a", "secure"],
        vec!["ps:scale", "worker=1", "-a", "secure", "--wait"],
    ] {
        let out = cli(dir.path(), &https, &pinned, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let ps = cli(
        dir.path(),
        &https,
        &pinned,
        &["ps", "-a", "secure", "--json"],
    );
    let dynos: Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(dynos[0]["state"], "up", "{dynos}");
    assert_eq!(dynos[0]["host"], "tls-host");
    let cred = std::fs::read_to_string(dir.path().join("agent/credential")).unwrap();
    assert!(
        cred.trim().ends_with(&fp),
        "the credential keeps the pin: {cred}"
    );

    stop(agent);
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn off_loopback_the_api_is_tls_unless_plain_http_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let port = dyno_tests::free_port();
    let mut c = coordinator(dir.path(), &format!("0.0.0.0:{port}"), &[]);
    let fp = std::fs::read_to_string(dir.path().join("coordinator/fingerprint")).unwrap();
    let pinned = format!("root-secret@{}", fp.trim());
    wait_until("TLS on 0.0.0.0", Duration::from_secs(20), || {
        cli(
            dir.path(),
            &format!("https://127.0.0.1:{port}"),
            &pinned,
            &["apps"],
        )
        .status
        .success()
        .then_some(())
    });
    let plain = cli(
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        "root-secret",
        &["apps"],
    );
    assert!(!plain.status.success(), "no plain HTTP off loopback");
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn past_its_connection_limit_the_api_answers_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = dyno_tests::free_port();
    let mut c = Command::new(bin("dyno-coordinator"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--router",
            &format!("127.0.0.1:{}", dyno_tests::free_port()),
        ])
        .arg("--state-dir")
        .arg(dir.path().join("c"))
        .args(["--token", "t", "--max-connections", "3"])
        .stderr(std::fs::File::create(dir.path().join("c.log")).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let status = || match ureq::get(&url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    };
    wait_until("the coordinator", Duration::from_secs(20), || {
        (status().0 == 200).then_some(())
    });
    // Three idle connections take every slot.
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let (code, body) = wait_until("a 503", Duration::from_secs(10), || {
        let s = status();
        (s.0 == 503).then_some(s)
    });
    assert_eq!(code, 503);
    assert!(body.contains("--max-connections"), "{body}");
    drop(held);
    wait_until("room again", Duration::from_secs(10), || {
        (status().0 == 200).then_some(())
    });
    let _ = c.kill();
    let _ = c.wait();
}
