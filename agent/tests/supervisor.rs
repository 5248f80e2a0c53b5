//! The supervisor with real processes: states, exit codes, stop and kill, boot, restarts.

mod common;

use std::time::Duration;

use common::{Harness, assert_in_order, eventually};
use dyno_agent::runtime::{group_alive, process_alive};
use dyno_shared::logline::LogSource;
use dyno_shared::protocol::DynoState;

const SCRIPT: &str = "#!/bin/sh\necho \"hello from $DYNO: $GREETING\"\n";

fn harness() -> Harness {
    Harness::new(
        Duration::from_secs(10),
        &[
            ("bin/hello", SCRIPT, 0o755),
            ("data.txt", "original\n", 0o644),
        ],
    )
}

#[tokio::test]
async fn a_worker_runs_from_its_own_copy_and_crashes_with_its_exit_code() {
    let h = harness();
    let command = "sh -c 'hello; echo oops >&2; echo changed > data.txt; exit 3'";
    h.supervisor.start(h.spec("w1", "worker.1", command));

    let crashed = h.wait_state("w1", DynoState::Crashed).await;
    assert_eq!(crashed.exit_code, Some(3));
    assert_eq!(crashed.reason.as_deref(), Some("Process exited"));
    assert!(crashed.pid.is_some());
    assert_eq!(crashed.port, None, "only web dynos get a port");
    // `up` may have been coalesced away by the crash that followed; final states never are.
    let states: Vec<_> = h.states_of("w1").iter().map(|s| s.state).collect();
    assert_eq!(states.first(), Some(&DynoState::Starting));
    assert_eq!(states.last(), Some(&DynoState::Crashed));

    assert_in_order(
        &h.messages("worker.1"),
        &[
            &format!("Starting process with command `{command}`"),
            "State changed from starting to up",
            "hello from worker.1: hi there",
            "oops",
            "Process exited with status 3",
            "State changed from up to crashed",
        ],
    );
    let lines = h.lines();
    let hello = lines
        .iter()
        .find(|l| l.message.starts_with("hello"))
        .unwrap();
    assert_eq!((hello.source, hello.app.as_str()), (LogSource::App, "shop"));
    let state_line = lines
        .iter()
        .find(|l| l.message.starts_with("State"))
        .unwrap();
    assert_eq!(state_line.source, LogSource::System);

    // The dyno wrote to its copy, never to the cached slug; its directory is gone.
    let cached = h.state.path().join("slugs").join(&h.sha).join("data.txt");
    assert_eq!(std::fs::read_to_string(cached).unwrap(), "original\n");
    assert!(h.supervisor.statuses().is_empty());
    eventually("dyno directory removed", || !h.dyno_dir("w1").exists()).await;

    // A crash restart keeps the id and starts afresh.
    h.supervisor
        .start(h.spec("w1", "worker.1", "sh -c 'cat data.txt; exec sleep 100'"));
    // The first run's `up` may or may not still be among the reports (running states coalesce
    // until collected), so look for an `up` of another process.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !h
        .states_of("w1")
        .iter()
        .any(|s| s.state == DynoState::Up && s.pid.is_some() && s.pid != crashed.pid)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no restart: {:?}",
            h.states_of("w1")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.wait_message(|m| m == "original").await;
    h.supervisor.shutdown(Duration::from_secs(5)).await;
    let down = h.wait_state("w1", DynoState::Down).await;
    assert_eq!(down.reason.as_deref(), Some("Agent shutting down"));
}

#[tokio::test]
async fn one_off_dynos_end_down_and_signals_map_to_128_plus_n() {
    let h = harness();
    let mut spec = h.spec("r1", "run.1", "sh -c 'kill -9 $$'");
    spec.one_off = true;
    h.supervisor.start(spec);
    let down = h.wait_state("r1", DynoState::Down).await;
    assert_eq!(down.exit_code, Some(137));
    assert!(
        h.states_of("r1")
            .iter()
            .all(|s| s.state != DynoState::Crashed)
    );
    assert!(
        h.messages("run.1")
            .contains(&"Process exited with status 137".to_string())
    );

    let mut spec = h.spec("r2", "run.2", "true");
    spec.one_off = true;
    h.supervisor.start(spec);
    assert_eq!(h.wait_state("r2", DynoState::Down).await.exit_code, Some(0));
}

#[tokio::test]
async fn stop_terminates_the_whole_process_group() {
    let h = harness();
    h.supervisor
        .start(h.spec("w2", "worker.1", "sh -c 'sleep 100 & echo child=$!; wait'"));
    let up = h.wait_state("w2", DynoState::Up).await;
    let leader = up.pid.unwrap();
    let child_line = h.wait_message(|m| m.starts_with("child=")).await;
    let child: u32 = child_line["child=".len()..].parse().unwrap();
    assert!(process_alive(child));
    assert!(group_alive(leader as i32));

    h.supervisor.stop("w2", Duration::from_secs(10));
    let down = h.wait_state("w2", DynoState::Down).await;
    assert_eq!(down.exit_code, Some(143));
    assert_eq!(down.reason.as_deref(), Some("Stopped"));
    assert!(!process_alive(child), "the grandchild must be gone");
    assert!(
        !group_alive(leader as i32),
        "no process of the group may remain"
    );
    let messages = h.messages("worker.1");
    assert_in_order(
        &messages,
        &[
            "Stopping all processes with SIGTERM",
            "Process exited with status 143",
            "State changed from up to down",
        ],
    );
    assert!(!messages.iter().any(|m| m.contains("R12")), "{messages:?}");

    // A stop for a dyno that is not (or no longer) here is answered with down.
    h.supervisor.stop("w2", Duration::from_secs(1));
    eventually("second down", || {
        h.states_of("w2")
            .iter()
            .filter(|s| s.state == DynoState::Down)
            .count()
            == 2
    })
    .await;
}

#[tokio::test]
async fn a_dyno_that_ignores_sigterm_is_killed_after_the_grace() {
    let h = harness();
    h.supervisor.start(h.spec(
        "w3",
        "worker.1",
        "sh -c \"trap '' TERM; sleep 100 & echo ready; wait\"",
    ));
    let up = h.wait_state("w3", DynoState::Up).await;
    h.wait_message(|m| m == "ready").await;

    h.supervisor.stop("w3", Duration::from_millis(500));
    let down = h.wait_state("w3", DynoState::Down).await;
    assert_eq!(down.exit_code, Some(137));
    assert!(!group_alive(up.pid.unwrap() as i32));
    assert_in_order(
        &h.messages("worker.1"),
        &[
            "Stopping all processes with SIGTERM",
            "Error R12 (Exit timeout) -> At least one process failed to exit within 0.5 seconds of SIGTERM",
            "Stopping process with SIGKILL",
            "Process exited with status 137",
            "State changed from up to down",
        ],
    );
}

#[tokio::test]
async fn a_web_dyno_is_up_only_once_its_port_accepts_connections() {
    let h = harness();
    h.supervisor
        .start(h.spec("web1", "web.1", "sh -c 'echo port=$PORT; exec sleep 100'"));
    let line = h.wait_message(|m| m.starts_with("port=")).await;
    let port: u16 = line["port=".len()..].parse().unwrap();
    let status = h.supervisor.statuses().pop().unwrap();
    assert_eq!(status.port, Some(port));
    assert_eq!(status.state, DynoState::Starting);
    // Nothing listens yet: it must stay starting (a sanity window, not a timing claim).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.states_of("web1")
            .iter()
            .all(|s| s.state == DynoState::Starting),
        "{:?}",
        h.states_of("web1")
    );

    // The test plays the app's server on the dyno's $PORT.
    let before_bind = dyno_shared::time::now_micros();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let up = h.wait_state("web1", DynoState::Up).await;
    assert_eq!(up.port, Some(port));
    assert!(up.at >= before_bind);
    assert!(
        h.messages("web.1")
            .contains(&"State changed from starting to up".to_string())
    );
    drop(listener);

    h.supervisor.stop("web1", Duration::from_secs(5));
    let down = h.wait_state("web1", DynoState::Down).await;
    assert_eq!(down.port, Some(port));
}

#[tokio::test]
async fn a_web_dyno_that_never_binds_crashes_with_r10() {
    let h = Harness::new(Duration::from_millis(500), &[]);
    h.supervisor.start(h.spec("web2", "web.1", "sleep 100"));
    let crashed = h.wait_state("web2", DynoState::Crashed).await;
    assert_eq!(crashed.reason.as_deref(), Some("Boot timeout"));
    assert_eq!(crashed.exit_code, Some(137));
    assert!(h.states_of("web2").iter().all(|s| s.state != DynoState::Up));
    assert_in_order(
        &h.messages("web.1"),
        &[
            "Error R10 (Boot timeout) -> Web process failed to bind to $PORT within 0.5 seconds of launch",
            "Stopping process with SIGKILL",
            "Process exited with status 137",
            "State changed from starting to crashed",
        ],
    );
}

#[tokio::test]
async fn starting_a_running_dyno_again_only_resends_its_status() {
    let h = harness();
    let spec = h.spec("w4", "worker.1", "sleep 100");
    h.supervisor.start(spec.clone());
    let up = h.wait_state("w4", DynoState::Up).await;
    h.supervisor.start(spec);
    let again = h.wait_nth_state("w4", DynoState::Up, 2).await;
    assert_eq!(again.pid, up.pid);
    let starts = h
        .messages("worker.1")
        .iter()
        .filter(|m| m.starts_with("Starting process"))
        .count();
    assert_eq!(starts, 1);
    assert_eq!(h.supervisor.statuses().len(), 1);

    // Shutdown stops everything and refuses new work.
    h.supervisor.start(h.spec("w5", "worker.2", "sleep 100"));
    h.wait_state("w5", DynoState::Up).await;
    h.supervisor.shutdown(Duration::from_secs(5)).await;
    assert!(h.supervisor.statuses().is_empty());
    for id in ["w4", "w5"] {
        let down = h.wait_state(id, DynoState::Down).await;
        assert_eq!(down.exit_code, Some(143));
    }
    // Refused out loud, so the coordinator places it elsewhere instead of waiting.
    h.supervisor.start(h.spec("w6", "worker.3", "sleep 100"));
    let refused = h.states_of("w6");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].state, DynoState::Down);
    assert_eq!(refused[0].reason.as_deref(), Some("Agent shutting down"));
    assert!(h.supervisor.statuses().is_empty());
}

#[tokio::test]
async fn running_dynos_report_stats_and_forget_them_when_gone() {
    let h = Harness::with_stats_interval(
        Duration::from_secs(10),
        Duration::from_millis(50),
        &[("bin/hello", SCRIPT, 0o755)],
    );
    // The shell stays the group leader (no exec), with a child: two processes.
    h.supervisor
        .start(h.spec("s1", "worker.1", "sleep 100 & wait"));
    h.wait_state("s1", DynoState::Up).await;
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let stats = loop {
        let all = h.outbox.take_stats();
        if let Some(s) = all.into_iter().find(|s| s.dyno_id == "s1" && s.pids >= 2) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no stats for s1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stats.memory_rss_bytes > 0, "{stats:?}");
    assert_eq!(stats.memory_quota_bytes, 512 * 1024 * 1024, "standard-1x");
    assert!(stats.at > 0);
    // Far below the quota: no R14.
    assert!(!h.messages("worker.1").iter().any(|m| m.contains("R14")));

    h.supervisor.shutdown(Duration::from_secs(5)).await;
    h.wait_state("s1", DynoState::Down).await;
    assert!(
        h.outbox.take_stats().is_empty(),
        "a stopped dyno's sample is dropped"
    );
}
