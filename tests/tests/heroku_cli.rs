//! The official heroku CLI (npm `heroku`, pinned at 11.10.0 in tests/heroku-cli, installed and
//! cached by scripts/heroku-cli.sh) against a real coordinator and agent: each command of the
//! compatibility issue, its output as a Heroku user sees it, and the platform's state after it.
//! docs/HEROKU-CLI.md lists what works and what does not.

use dyno_tests::{Platform, wait_until};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Installs the pinned CLI (once per cache) and returns its binary. No Node.js or no registry
/// is a failure, not a skip: this is the proof that the heroku CLI works.
fn heroku_bin() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/heroku-cli.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/heroku-cli.sh");
    assert!(
        out.status.success(),
        "scripts/heroku-cli.sh could not install the heroku CLI (see its message above)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Heroku {
    bin: PathBuf,
    home: tempfile::TempDir,
    /// The API, as HEROKU_HOST.
    url: String,
    /// The coordinator's self-made CA: the rendezvous (and an https API) present its certificate.
    ca: PathBuf,
    key: String,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stderr with the CLI's line wrapping and `›` margins undone.
    fn err(&self) -> String {
        self.stderr
            .replace('›', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Heroku {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // The CLI writes ~/.gitconfig and a terms-of-service marker: not into the real home.
            .env("HOME", self.home.path())
            .env("HEROKU_HOST", &self.url)
            .env("HEROKU_API_KEY", &self.key)
            // No phoning home: telemetry, update checks, the particleboard account lookup.
            .env("DISABLE_TELEMETRY", "true")
            .env("HEROKU_SKIP_NEW_VERSION_CHECK", "true")
            .env("HEROKU_DISABLE_AUTOUPDATE", "true")
            .env("HEROKU_PARTICLEBOARD_URL", &self.url)
            .env("HEROKU_NOTIFICATIONS", "0")
            // Wide enough that tables and messages are not wrapped.
            .env("COLUMNS", "200")
            // `heroku run` attaches over TLS to the coordinator's self-made CA.
            .env("NODE_EXTRA_CA_CERTS", &self.ca)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs a command to its end (at most 90 s).
    fn run(&self, args: &[&str]) -> Run {
        let mut child = self.command(args).spawn().expect("start heroku");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let o = std::thread::spawn(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).ok();
            s
        });
        let e = std::thread::spawn(move || {
            let mut s = String::new();
            err.read_to_string(&mut s).ok();
            s
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("heroku {args:?} did not finish in 90 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: o.join().unwrap(),
            stderr: e.join().unwrap(),
        }
    }

    /// Starts a command that runs on; its stdout collects in the returned string as it comes.
    fn spawn_reading(
        &self,
        args: &[&str],
    ) -> (
        std::process::Child,
        std::sync::Arc<std::sync::Mutex<String>>,
    ) {
        let mut child = self.command(args).spawn().expect("start heroku");
        let mut out = child.stdout.take().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (child, seen)
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "heroku {args:?} failed: {r}");
        r
    }
}

fn formation(p: &Platform, app: &str) -> Vec<(String, u64, String)> {
    let f = p.get(&format!("/apps/{app}/formation")).unwrap();
    let mut out: Vec<(String, u64, String)> = f
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["type"].as_str().unwrap().to_string(),
                i["quantity"].as_u64().unwrap(),
                i["size"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn newest_release(p: &Platform, app: &str) -> Value {
    p.get(&format!("/apps/{app}/releases"))
        .unwrap()
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone()
}

#[test]
fn the_official_heroku_cli_drives_the_platform() {
    let bin = heroku_bin();
    let p = Platform::start();
    p.deploy("shop", "web: dyno-probe web\nworker: dyno-probe worker\n");
    p.dyno_ok(&["ps:scale", "worker=1", "-a", "shop"]);
    p.wait_up("shop", &["web.1", "worker.1"]);
    let h = Heroku {
        bin,
        home: tempfile::tempdir().unwrap(),
        url: p.url(),
        ca: p.dir.path().join("coordinator/tls/ca.pem"),
        key: p.token.clone(),
    };

    // apps, apps:info, apps:create (named and made-up), apps:destroy.
    let r = h.ok(&["apps"]);
    assert!(r.stdout.contains("shop"), "{r}");
    let r = h.ok(&["apps:info", "-a", "shop"]);
    for want in [
        "=== shop",
        "Web URL:",
        "shop.localhost",
        "Stack:",
        "dyno",
        "Region:",
        "us",
    ] {
        assert!(r.stdout.contains(want), "apps:info lacks {want:?}: {r}");
    }
    assert!(r.stdout.contains("web: 1, worker: 1"), "{r}");
    let r = h.ok(&["apps:create", "made"]);
    assert!(r.stdout.contains("http://made.localhost:"), "{r}");
    assert_eq!(p.get("/apps/made").unwrap()["name"], "made");
    let r = h.ok(&["apps:create"]);
    let made_up = r
        .stderr
        .split("done, ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no made-up name: {r}"))
        .to_string();
    assert!(p.get(&format!("/apps/{made_up}")).is_ok(), "{made_up}");
    h.ok(&["apps:destroy", "-a", "made", "--confirm", "made"]);
    assert!(p.get("/apps/made").is_err(), "made is destroyed");

    // ps and ps:scale in every form: absolute, relative, with a size.
    let r = h.ok(&["ps", "-a", "shop"]);
    assert!(
        r.stdout
            .contains("=== web (Standard-1X): dyno-probe web (1)"),
        "{r}"
    );
    assert!(r.stdout.contains("web.1: up"), "{r}");
    let r = h.ok(&["ps:scale", "web=2", "-a", "shop"]);
    assert!(
        r.stderr.contains("done, now running web at 2:Standard-1X"),
        "{r}"
    );
    assert_eq!(
        formation(&p, "shop")[0],
        ("web".into(), 2, "Standard-1X".into())
    );
    h.ok(&["ps:scale", "worker+1", "-a", "shop"]);
    assert_eq!(
        formation(&p, "shop")[1],
        ("worker".into(), 2, "Standard-1X".into())
    );
    let r = h.ok(&["ps:scale", "web=1:standard-2x", "worker-1", "-a", "shop"]);
    assert!(
        r.stderr
            .contains("done, now running web at 1:Standard-2X, worker at 1:Standard-1X"),
        "{r}"
    );
    assert_eq!(
        formation(&p, "shop"),
        [
            ("web".into(), 1, "Standard-2X".into()),
            ("worker".into(), 1, "Standard-1X".into())
        ]
    );
    let r = h.ok(&["ps:scale", "-a", "shop"]);
    assert_eq!(r.stdout.trim(), "web=1:Standard-2X worker=1:Standard-1X");

    // ps:type shows Heroku's prices for our sizes, and resizes.
    let r = h.ok(&["ps:type", "-a", "shop"]);
    assert!(
        r.stdout.contains("Standard-2X") && r.stdout.contains("$50"),
        "{r}"
    );
    h.ok(&["ps:type", "standard-1x", "-a", "shop"]);
    assert!(
        formation(&p, "shop").iter().all(|f| f.2 == "Standard-1X"),
        "{:?}",
        formation(&p, "shop")
    );

    // ps:wait returns once every dyno runs the newest release.
    h.ok(&["ps:scale", "web=2", "-a", "shop"]);
    h.ok(&["ps:wait", "-a", "shop"]);
    let newest = newest_release(&p, "shop")["version"].as_u64().unwrap();
    let dynos = p.dynos("shop");
    assert_eq!(dynos.len(), 3, "{dynos:?}");
    assert!(
        dynos
            .iter()
            .all(|d| d["state"] == "up" && d["release"]["version"] == newest),
        "ps:wait returned early: {dynos:?}"
    );

    // ps:restart (a type, a dyno) and ps:stop replace the dynos named.
    let before = p.dyno_ids("shop");
    let r = h.ok(&["ps:restart", "--process-type", "worker", "-a", "shop"]);
    assert!(
        r.stderr
            .contains("Restarting all worker dynos on shop... done"),
        "{r}"
    );
    wait_until("worker.1 replaced", Duration::from_secs(30), || {
        let now = p.dyno_ids("shop");
        (now.get("worker.1")
            .is_some_and(|(id, st)| *id != before["worker.1"].0 && st == "up"))
        .then_some(())
    });
    assert_eq!(
        p.dyno_ids("shop")["web.1"].0,
        before["web.1"].0,
        "web.1 untouched"
    );
    h.ok(&["ps:restart", "--dyno-name", "web.1", "-a", "shop"]);
    wait_until("web.1 replaced", Duration::from_secs(30), || {
        let now = p.dyno_ids("shop");
        (now.get("web.1")
            .is_some_and(|(id, st)| *id != before["web.1"].0 && st == "up"))
        .then_some(())
    });
    let before = p.dyno_ids("shop");
    let r = h.ok(&["ps:stop", "--dyno-name", "web.2", "-a", "shop"]);
    assert!(
        r.stderr.contains("Stopping dyno web.2 on shop... done"),
        "{r}"
    );
    wait_until(
        "web.2 stopped and replaced",
        Duration::from_secs(30),
        || {
            let now = p.dyno_ids("shop");
            (now.get("web.2")
                .is_some_and(|(id, st)| *id != before["web.2"].0 && st == "up"))
            .then_some(())
        },
    );

    // config, config:get, config:set, config:unset: each change is a release, named in the output.
    let r = h.ok(&["config:set", "FOO=bar", "EQ=a=b", "-a", "shop"]);
    let v = newest_release(&p, "shop")["version"].as_u64().unwrap();
    assert!(r.stderr.contains(&format!("done, v{v}")), "{r}");
    let config = p.get("/apps/shop/config-vars").unwrap();
    assert_eq!(
        (config["FOO"].as_str(), config["EQ"].as_str()),
        (Some("bar"), Some("a=b"))
    );
    assert_eq!(
        h.ok(&["config:get", "EQ", "-a", "shop"]).stdout.trim(),
        "a=b"
    );
    let r = h.ok(&["config", "-a", "shop"]);
    assert!(
        r.stdout.contains("=== shop Config Vars") && r.stdout.contains("FOO: bar"),
        "{r}"
    );
    let r = h.ok(&["config:unset", "EQ", "-a", "shop"]);
    assert!(r.stderr.contains(&format!("done, v{}", v + 1)), "{r}");
    assert!(p.get("/apps/shop/config-vars").unwrap()["EQ"].is_null());
    let r = h.run(&["config:set", "1BAD=x", "-a", "shop"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.err().contains("1BAD"), "the error names the key: {r}");
    assert_eq!(
        newest_release(&p, "shop")["version"],
        v + 1,
        "nothing changed"
    );

    // releases, releases:info, releases:rollback.
    let r = h.ok(&["releases", "-a", "shop", "-n", "2"]);
    assert!(r.stdout.contains(&format!("Current: v{}", v + 1)), "{r}");
    assert!(r.stdout.contains("Remove EQ config vars"), "{r}");
    assert!(
        !r.stdout.contains(&format!("v{} ", v - 1)),
        "-n 2 shows two: {r}"
    );
    let r = h.ok(&["releases:info", &format!("v{v}"), "-a", "shop"]);
    assert!(r.stdout.contains(&format!("=== Release v{v}")), "{r}");
    assert!(r.stdout.contains("Eligible for Rollback?: Yes"), "{r}");
    assert!(r.stdout.contains("By:") && r.stdout.contains("root"), "{r}");
    assert!(
        r.stdout.contains("EQ:") && r.stdout.contains("a=b"),
        "v{v}'s config: {r}"
    );
    let r = h.ok(&["releases:rollback", "-a", "shop"]);
    assert!(
        r.stderr
            .contains(&format!("Rolling back shop to v{v}... done, v{}", v + 2)),
        "{r}"
    );
    let rel = newest_release(&p, "shop");
    assert_eq!(rel["description"], format!("Rollback to v{v}"));
    assert_eq!(p.get("/apps/shop/config-vars").unwrap()["EQ"], "a=b");

    // maintenance, maintenance:on|off.
    h.ok(&["maintenance:on", "-a", "shop"]);
    assert_eq!(p.get("/apps/shop").unwrap()["maintenance"], true);
    assert_eq!(h.ok(&["maintenance", "-a", "shop"]).stdout.trim(), "on");
    h.ok(&["maintenance:off", "-a", "shop"]);
    assert_eq!(p.get("/apps/shop").unwrap()["maintenance"], false);

    // domains, domains:add, and the router follows.
    let r = h.ok(&["domains:add", "www.shop.test", "-a", "shop"]);
    assert!(r.stdout.contains("DNS Target shop.localhost"), "{r}");
    let r = h.ok(&["domains", "-a", "shop"]);
    assert!(r.stdout.contains("=== shop Heroku Domain"), "{r}");
    assert!(
        r.stdout.contains("www.shop.test") && r.stdout.contains("CNAME"),
        "{r}"
    );
    wait_until(
        "www.shop.test routes to shop",
        Duration::from_secs(10),
        || {
            let resp = ureq::get(&format!("http://127.0.0.1:{}/", p.router_port))
                .set("Host", "www.shop.test")
                .call();
            resp.ok().filter(|r| r.status() == 200).map(|_| ())
        },
    );
    h.ok(&["domains:remove", "www.shop.test", "-a", "shop"]);
    let r = h.ok(&["domains", "-a", "shop"]);
    assert!(!r.stdout.contains("www.shop.test"), "{r}");

    // logs: history with -n, -d and -s, and --tail until killed.
    let r = h.ok(&["logs", "-n", "5", "-a", "shop"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 5, "{r}");
    assert!(lines.iter().all(|l| l.contains("+00:00 ")), "{r}");
    let r = h.ok(&["logs", "-n", "50", "-d", "worker.1", "-a", "shop"]);
    assert!(r.stdout.contains("app[worker.1]: worker tick"), "{r}");
    assert!(
        r.stdout.lines().all(|l| l.contains("[worker.1]")),
        "only worker.1: {r}"
    );
    let r = h.ok(&["logs", "-n", "50", "-s", "heroku", "-a", "shop"]);
    assert!(r.stdout.contains("heroku[api]: Maintenance mode on"), "{r}");
    assert!(!r.stdout.contains("app["), "only the platform's lines: {r}");
    // --tail: the history, then lines made after it connected.
    let (mut tail, seen) = h.spawn_reading(&["logs", "--tail", "-a", "shop"]);
    wait_until("--tail prints the history", Duration::from_secs(30), || {
        seen.lock().unwrap().contains("worker tick").then_some(())
    });
    p.dyno_ok(&["run:detached", "-a", "shop", "--", "echo", "tail-marker"]);
    wait_until(
        "--tail shows a line made after it connected",
        Duration::from_secs(30),
        || {
            seen.lock()
                .unwrap()
                .contains("]: tail-marker")
                .then_some(())
        },
    );
    tail.kill().ok();
    tail.wait().ok();

    // run: output through the rendezvous, and the exit code back; run:detached to the logs.
    let r = h.run(&["run", "echo hello from $DYNO; exit 3", "-a", "shop"]);
    assert_eq!(r.code, 3, "{r}");
    assert!(r.stdout.contains("hello from run."), "{r}");
    assert!(r.stderr.contains("Process exited with code 3"), "{r}");
    let r = h.ok(&["run", "-x", "echo ok", "-a", "shop"]);
    assert_eq!(r.stdout.trim(), "ok", "{r}");
    // A client that goes away takes its one-off with it.
    let (mut run, seen) = h.spawn_reading(&["run", "echo started; sleep 300", "-a", "shop"]);
    wait_until("the attached one-off runs", Duration::from_secs(30), || {
        seen.lock().unwrap().contains("started").then_some(())
    });
    let sleeping = |p: &Platform| {
        p.dynos("shop")
            .iter()
            .any(|d| d["command"].as_str().unwrap_or("").contains("sleep 300"))
    };
    assert!(sleeping(&p), "the one-off is listed while attached");
    run.kill().unwrap();
    run.wait().unwrap();
    wait_until(
        "the abandoned one-off stops",
        Duration::from_secs(30),
        || (!sleeping(&p)).then_some(()),
    );
    let r = h.ok(&["run:detached", "echo detached-output", "-a", "shop"]);
    let name = r
        .stderr
        .split("done, ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dyno name: {r}"))
        .to_string();
    assert!(name.starts_with("run."), "{r}");
    wait_until(
        "the detached output in the logs",
        Duration::from_secs(30),
        || {
            p.logs("shop")
                .contains(&format!("app[{name}]: detached-output"))
                .then_some(())
        },
    );

    // What we do not have: a clear error and exit 2, nothing changed.
    for args in [
        &["addons", "-a", "shop"][..],
        &["pipelines"][..],
        &["spaces"][..],
    ] {
        let r = h.run(args);
        assert_eq!(r.code, 2, "heroku {args:?}: {r}");
        assert!(r.err().contains("not supported by this platform"), "{r}");
    }
    let r = h.run(&["apps:rename", "renamed", "-a", "shop"]);
    assert_eq!(r.code, 2, "no silent success: {r}");
    assert!(r.err().contains("Renaming apps is not supported"), "{r}");
    assert!(p.get("/apps/shop").is_ok() && p.get("/apps/renamed").is_err());
    // What exists here in one kind answers as such.
    assert!(h.ok(&["regions"]).stdout.contains("us "), "one region");
    assert!(
        h.ok(&["stack", "-a", "shop"]).stdout.contains("* dyno"),
        "one stack"
    );
    let r = h.ok(&["labs", "-a", "shop"]);
    assert!(r.stdout.contains("runtime-metrics"), "{r}");
    // Unknown apps and wrong tokens are named as such.
    let r = h.run(&["ps", "-a", "nowhere"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.err().contains("no app named \"nowhere\""), "{r}");
    let wrong = Heroku {
        key: "not-a-token".into(),
        bin: h.bin.clone(),
        home: tempfile::tempdir().unwrap(),
        url: h.url.clone(),
        ca: h.ca.clone(),
    };
    let r = wrong.run(&["apps"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.err().contains("HEROKU_API_KEY is invalid"), "{r}");
}

/// An API that speaks TLS (`--api-tls`, the default off loopback): the CLI trusts the
/// coordinator's CA through NODE_EXTRA_CA_CERTS and is otherwise unchanged.
#[test]
fn the_heroku_cli_over_https_with_the_coordinators_ca() {
    let bin = heroku_bin();
    let dir = tempfile::tempdir().unwrap();
    let port = dyno_tests::free_port();
    let _coordinator = KillOnDrop(
        Command::new(dyno_tests::bin("dyno-coordinator"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--router",
                &format!("127.0.0.1:{}", dyno_tests::free_port()),
            ])
            .arg("--state-dir")
            .arg(dir.path().join("coordinator"))
            .args(["--token", "tls-secret", "--api-tls"])
            .stderr(std::fs::File::create(dir.path().join("coordinator.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let ca = dir.path().join("coordinator/tls/ca.pem");
    wait_until("the coordinator's CA", Duration::from_secs(20), || {
        dir.path()
            .join("coordinator/fingerprint")
            .exists()
            .then_some(())
    });
    let h = Heroku {
        bin,
        home: tempfile::tempdir().unwrap(),
        url: format!("https://127.0.0.1:{port}"),
        ca: ca.clone(),
        key: "tls-secret".into(),
    };
    let r = wait_until("apps:create over https", Duration::from_secs(30), || {
        let r = h.run(&["apps:create", "secure"]);
        (r.code == 0).then_some(r)
    });
    assert!(r.stdout.contains("http://secure.localhost:"), "{r}");
    let r = h.ok(&["apps"]);
    assert!(r.stdout.contains("secure"), "{r}");
    // Without the CA the CLI refuses the certificate, naming why.
    let untrusting = Heroku {
        ca: dir.path().join("no-such-ca.pem"),
        bin: h.bin.clone(),
        home: tempfile::tempdir().unwrap(),
        url: h.url.clone(),
        key: h.key.clone(),
    };
    let r = untrusting.run(&["apps"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.err().contains("self-signed certificate"), "{r}");
}

/// A process that ends with the test, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}
