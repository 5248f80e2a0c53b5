//! `dyno up`: the whole platform from one command, the sample app reachable, and Ctrl-C (SIGINT)
//! stopping every process it started, dynos included.

use dyno_tests::{bin, free_port, wait_until};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Pids of processes whose command line mentions `needle`.
fn pids_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Pids of live processes whose working directory is below `dir` (the dynos).
fn pids_in(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(dir))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

#[test]
fn dyno_up_runs_the_sample_app_and_ctrl_c_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (api, router) = (free_port(), free_port());
    let mut up = Command::new(bin("dyno"))
        .arg("up")
        .arg("--state-dir")
        .arg(&state)
        .args([
            "--api",
            &format!("127.0.0.1:{api}"),
            "--router",
            &format!("127.0.0.1:{router}"),
            "--no-console",
        ])
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env_remove("DYNO_TOKEN")
        .env_remove("DYNO_COORDINATOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut token = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(t) = line.strip_prefix("export DYNO_TOKEN=") {
            token = Some(t.to_string());
            break;
        }
    }
    let token = token.expect("dyno up printed the token");
    // Keep draining stdout so `up` never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    // The CLI in "another shell" finds the platform through the saved config alone.
    let ps = Command::new(bin("dyno"))
        .args(["ps", "-a", "sample", "--json"])
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env_remove("DYNO_TOKEN")
        .env_remove("DYNO_COORDINATOR")
        .output()
        .unwrap();
    assert!(
        ps.status.success(),
        "{}",
        String::from_utf8_lossy(&ps.stderr)
    );
    let dynos: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    let mut names: Vec<&str> = dynos
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["web.1", "web.2", "worker.1"]);
    assert!(
        dynos.as_array().unwrap().iter().all(|d| d["state"] == "up"),
        "{dynos}"
    );

    let body = wait_until(
        "sample app through the router",
        Duration::from_secs(20),
        || {
            ureq::get(&format!("http://127.0.0.1:{router}/"))
                .set("Host", "sample.localhost")
                .call()
                .ok()?
                .into_string()
                .ok()
        },
    );
    assert!(body.contains("\"dyno\":\"web."), "{body}");
    assert!(!token.is_empty());

    let state_str = state.to_str().unwrap().to_string();
    let daemons = pids_with(&state_str);
    assert!(
        daemons.len() >= 2,
        "coordinator and agent run with the state dir: {daemons:?}"
    );
    let probes = pids_in(&state);
    assert_eq!(
        probes.len(),
        3,
        "one process per dyno runs in the agent's state dir"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_until("dyno up to exit", Duration::from_secs(30), || {
        up.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    for pid in daemons.iter().chain(&probes) {
        assert!(!alive(*pid), "process {pid} outlived dyno up");
    }
    assert!(pids_with(&state_str).is_empty());
    assert!(pids_in(&state).is_empty());
    // The agent stopped each dyno with SIGTERM on the way out.
    let agent_log = std::fs::read_to_string(state.join("agent.log")).unwrap();
    assert!(agent_log.contains("exit_code=Some(143)"), "{agent_log}");
}
