//! The platform with `--isolation linux`: real namespaces and cgroups under a real coordinator and
//! agent, probed from inside dynos. Needs root; without it each test says SKIPPED and returns.

use dyno_tests::{Platform, wait_until};
use serde_json::Value;
use std::time::Duration;

const SAMPLE: &str = "web: dyno-probe web\nworker: dyno-probe worker\n";

fn isolated_platform(test: &str) -> Option<Platform> {
    if !dyno_tests::is_root() {
        eprintln!("SKIPPED: {test}: Linux isolation needs root");
        return None;
    }
    // Stopping the agent stops its dynos, so nothing outlives the test.
    Some(Platform::start_with(
        "0,1,2",
        &["--isolation", "linux", "--on-exit", "stop"],
    ))
}

/// Runs a one-off dyno and returns (exit code, stdout).
fn run(p: &Platform, app: &str, cmd: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["run", "-a", app, "--"];
    args.extend_from_slice(cmd);
    let out = p.dyno(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn isolated_dynos_serve_through_the_router_and_cannot_see_out() {
    let Some(p) = isolated_platform("isolated_dynos_serve_through_the_router_and_cannot_see_out")
    else {
        return;
    };
    let hosts = p.get("/hosts").unwrap();
    assert_eq!(hosts[0]["isolation"], "linux", "{hosts}");
    p.deploy("iso", SAMPLE);
    p.dyno_ok(&["ps:scale", "web=2", "worker=1", "-a", "iso", "--wait"]);
    let (status, body) = p.route("iso", "/").unwrap();
    assert_eq!(status, 200, "{body}");

    // What a dyno sees of itself.
    let (code, out) = run(&p, "iso", &["dyno-probe", "report"]);
    assert_eq!(code, Some(0), "{out}");
    let r: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(r["uid"], 65534, "{r}");
    assert_eq!(r["cap_eff"], "0000000000000000", "{r}");
    assert_eq!(r["root_writable"], false, "{r}");
    assert_eq!(r["usr_writable"], false, "{r}");
    assert_eq!(r["cwd"], "/app", "{r}");
    assert_eq!(r["env"]["HOME"], "/app", "{r}");
    assert!(
        r["visible_pids"].as_i64().unwrap() <= 3,
        "only its own processes: {r}"
    );
    assert!(
        r["hostname"].as_str().unwrap().starts_with("d-"),
        "hostname is the dyno id: {r}"
    );

    // The agent's state (tokens, other dynos' files) is not there, and host processes are out of reach.
    let state = p.dir.path().to_str().unwrap().to_string();
    let agent_pid = p.agent_pid().unwrap();
    let (_, out) = run(
        &p,
        "iso",
        &[
            "sh",
            "-c",
            &format!(
                "test -e {state} && echo state-visible; kill -9 {agent_pid} 2>/dev/null && echo killed-agent; {{ echo x > /usr/x; }} 2>/dev/null && echo wrote-usr; echo done"
            ),
        ],
    );
    assert_eq!(out.trim(), "done", "{out}");
    assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent_pid as i32), None).is_ok());

    // /app is writable but ephemeral: a new dyno starts from the slug again.
    let (_, out) = run(
        &p,
        "iso",
        &["sh", "-c", "echo mark > /app/mark && cat /app/mark"],
    );
    assert_eq!(out.trim(), "mark");
    let (_, out) = run(
        &p,
        "iso",
        &[
            "sh",
            "-c",
            "test -e /app/mark && echo present || echo absent",
        ],
    );
    assert_eq!(out.trim(), "absent");
}

#[test]
fn limits_hold_inside_a_dyno_while_others_keep_running() {
    let Some(p) = isolated_platform("limits_hold_inside_a_dyno_while_others_keep_running") else {
        return;
    };
    p.deploy("limits", SAMPLE);
    p.dyno_ok(&["ps:scale", "web=1", "worker=1", "-a", "limits", "--wait"]);
    let before = p.dyno_ids("limits");

    // A fork bomb stops at the dyno's pids limit (256 for standard-1x).
    let bomb = "import os, time\nn = 0\ntry:\n    while n < 400:\n        if os.fork() == 0:\n            time.sleep(60)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint('forked', n)";
    let (_, out) = run(&p, "limits", &["python3", "-c", bomb]);
    let forked: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("forked "))
        .unwrap_or_else(|| panic!("no count in {out:?}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        (100..256).contains(&forked),
        "pids.max holds: forked {forked}"
    );

    // Past twice the memory quota (2 x 512 MB) the kernel kills the dyno.
    let (code, out) = run(
        &p,
        "limits",
        &[
            "python3",
            "-c",
            "b = bytearray(1536 * 1024 * 1024); print('allocated')",
        ],
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(!out.contains("allocated"), "{out}");

    // The formation's dynos were not touched, and serve.
    assert_eq!(p.dyno_ids("limits"), before);
    assert_eq!(p.route("limits", "/").unwrap().0, 200);
    wait_until("one-offs gone", Duration::from_secs(20), || {
        p.dynos("limits")
            .iter()
            .all(|d| d["type"] != "run")
            .then_some(())
    });
}

/// A heroku/python-getting-started style app: its dependency installed inside the slug (where the
/// Python buildpack puts it), found through the slug's `.profile`, serving on `[::]:$PORT`.
#[test]
fn a_python_app_with_dependencies_in_its_slug_serves_on_ipv6_any() {
    let Some(p) =
        isolated_platform("a_python_app_with_dependencies_in_its_slug_serves_on_ipv6_any")
    else {
        return;
    };
    let dir = p.app_dir("pyapp", "web: python3 app.py\n");
    let site = dir.join(".heroku/python/lib/site-packages/greeter");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("__init__.py"),
        "def greet(who):\n    return f'Hello from {who}, via a dependency in the slug'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join(".profile"),
        "export PYTHONPATH=\"$HOME/.heroku/python/lib/site-packages\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("app.py"),
        r#"import os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import greeter

class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = greeter.greet(os.environ["DYNO"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print("listening on [::]:" + os.environ["PORT"], flush=True)
Server(("::", int(os.environ["PORT"])), Handler).serve_forever()
"#,
    )
    .unwrap();
    p.dyno_ok(&["apps:create", "pyapp"]);
    p.dyno_ok(&["deploy", dir.to_str().unwrap(), "-a", "pyapp"]);
    p.wait_up("pyapp", &["web.1"]);
    let (status, body) = p.route("pyapp", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "Hello from web.1, via a dependency in the slug");
    assert!(p.logs("pyapp").contains("listening on [::]:"));
}

/// The `worker tick N` numbers of worker.1 in the app's logs, in order.
fn ticks(p: &Platform, app: &str) -> Vec<u64> {
    p.logs(app)
        .lines()
        .filter(|l| l.contains("app[worker.1]:"))
        .filter_map(|l| l.split("worker tick ").nth(1)?.trim().parse().ok())
        .collect()
}

#[test]
fn dynos_outlive_agent_restarts_and_are_adopted() {
    if !dyno_tests::is_root() {
        eprintln!(
            "SKIPPED: dynos_outlive_agent_restarts_and_are_adopted: Linux isolation needs root"
        );
        return;
    }
    // Linux isolation's default on exit: leave the dynos for the next agent.
    let mut p = Platform::start_with("0,1,2", &["--isolation", "linux"]);
    p.deploy("keep", SAMPLE);
    p.dyno_ok(&["ps:scale", "web=1", "worker=1", "-a", "keep", "--wait"]);
    let ids = p.dyno_ids("keep");
    wait_until("two ticks", Duration::from_secs(20), || {
        (ticks(&p, "keep").len() >= 2).then_some(())
    });

    // A crash (kill -9), then a graceful restart (SIGTERM): the same dynos run on, adopted.
    for how in ["kill -9", "SIGTERM"] {
        if how == "kill -9" {
            p.kill_agent();
        } else {
            p.stop_agent();
        }
        // The worker ticks on while no agent watches.
        std::thread::sleep(Duration::from_millis(1500));
        p.start_agent();
        p.wait_for_host();
        p.wait_up("keep", &["web.1", "worker.1"]);
        assert_eq!(p.dyno_ids("keep"), ids, "after {how}: the same dynos, up");
        let (status, body) = p.route("keep", "/").unwrap();
        assert_eq!(status, 200, "after {how}: {body}");
    }
    let seen = ticks(&p, "keep").len();
    wait_until("ticks after the restarts", Duration::from_secs(20), || {
        (ticks(&p, "keep").len() >= seen + 2).then_some(())
    });
    let t = ticks(&p, "keep");
    // After a kill -9 the next agent resumes from the last saved read offset (saved every 100 ms),
    // so a line read just before the kill can come twice: at least once, never lost.
    assert!(
        t.windows(2).all(|w| w[0] <= w[1]),
        "one process counting on: {t:?}"
    );
    let repeats = t.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(repeats <= 1, "at most the kill -9's line twice: {t:?}");
    let last = *t.last().unwrap();
    assert!(
        (1..=last).all(|n| t.contains(&n)),
        "no tick lost across the restarts: {t:?}"
    );
    let logs = p.logs("keep");
    let started = logs
        .lines()
        .filter(|l| l.contains("[worker.1]") && l.contains("Starting process"))
        .count();
    assert_eq!(started, 1, "never restarted:\n{logs}");
    assert_eq!(
        logs.matches("Adopted by a restarted agent").count(),
        4,
        "two dynos, two restarts:\n{logs}"
    );

    // An agent told to stop its dynos on exit adopts them too, then stops them when it goes.
    p.stop_agent();
    p.agent_args
        .extend(["--on-exit".to_string(), "stop".to_string()]);
    p.start_agent();
    p.wait_for_host();
    p.wait_up("keep", &["web.1", "worker.1"]);
    p.dyno_ok(&["ps:scale", "web=0", "worker=0", "-a", "keep", "--wait"]);
    let dynos = p.dir.path().join("agent/dynos");
    wait_until("the dyno dirs gone", Duration::from_secs(20), || {
        (std::fs::read_dir(&dynos).unwrap().count() == 0).then_some(())
    });
}
