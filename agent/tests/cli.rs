//! The `dyno-agent` binary's flags.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyno-agent"))
        .args(args)
        .env_remove("DYNO_COORDINATOR")
        .env_remove("DYNO_TOKEN")
        .output()
        .expect("the agent binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_coordinator_url_without_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(&[
        "--coordinator",
        "localhost:7070",
        "--token",
        "t",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--coordinator"), "{err}");
    assert!(err.contains("http://"), "{err}");
}

#[test]
fn isolation_modes_are_none_linux_auto() {
    let dir = tempfile::tempdir().unwrap();
    let help = agent(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for mode in ["`none`", "`linux`", "`auto`"] {
        assert!(help.contains(mode), "{help}");
    }
    if !nix::unistd::geteuid().is_root() {
        // Without root Linux isolation is refused with the reason, before anything starts.
        let out = agent(&[
            "--coordinator",
            "http://127.0.0.1:7070",
            "--token",
            "t",
            "--state-dir",
            dir.path().to_str().unwrap(),
            "--isolation",
            "auto",
        ]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("needs root"), "{err}");
        assert!(err.contains("--isolation none"), "{err}");
    }

    let out = agent(&[
        "--coordinator",
        "http://127.0.0.1:7070",
        "--token",
        "t",
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--isolation",
        "docker",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown isolation"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_token_is_required() {
    let out = agent(&[
        "--coordinator",
        "http://127.0.0.1:7070",
        "--state-dir",
        "/tmp",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--token"), "{}", stderr(&out));
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dyno-agent"))
        .args(["--coordinator", "http://127.0.0.1:1", "--state-dir"])
        .arg(dir.path())
        .env("DYNO_TOKEN", "t")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is up (it made its state directories) before signalling.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.path().join("slugs").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("agent stopped"), "{err}");
}
