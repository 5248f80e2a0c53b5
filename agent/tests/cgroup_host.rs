//! The cgroup module against this host's real hierarchy (root only; says SKIPPED otherwise).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dyno_agent::cgroup::{Cgroups, Hierarchy, Limits};
use dyno_agent::runtime::process_alive;
use dyno_shared::size::Size;

fn host_cgroups(test: &str) -> Option<Cgroups> {
    if !nix::unistd::geteuid().is_root() {
        skipped(test, "needs root to create cgroups");
        return None;
    }
    match Hierarchy::detect() {
        Ok(h) => Some(Cgroups::new(
            h,
            format!("dyno-agent-test-{}", std::process::id()),
        )),
        Err(e) => {
            skipped(test, &e.to_string());
            None
        }
    }
}

#[test]
fn a_real_cgroup_limits_counts_kills_and_goes_away() {
    let Some(cgroups) = host_cgroups("a_real_cgroup_limits_counts_kills_and_goes_away") else {
        return;
    };
    eprintln!(
        "cgroup {} at {:?}",
        cgroups.version().as_str(),
        cgroups.hierarchy()
    );
    let limits = Limits::for_size(Size::Standard1x);
    let cg = cgroups.create("real-1", &limits).unwrap();

    // A sleeper that waits for a line on stdin before forking, so that every process it makes
    // starts inside the cgroup; one child leaves the process group.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("read go; setsid sleep 300 & sleep 300")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    cg.add_pid(child.id()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cg.pids().unwrap().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pids = cg.pids().unwrap();
    assert!(pids.contains(&child.id()), "{pids:?}");
    assert_eq!(pids.len(), 3, "sh and two sleeps: {pids:?}");

    let stats = cg.stats().unwrap();
    assert_eq!(stats.pids_current, 3, "{stats:?}");
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    let limit_file = match cgroups.version() {
        dyno_agent::cgroup::Version::V1 => "memory.limit_in_bytes",
        dyno_agent::cgroup::Version::V2 => "memory.max",
    };
    let applied: u64 = std::fs::read_to_string(cg.dir().join(limit_file))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(applied, limits.memory_max_bytes);
    assert_eq!(cgroups.list(), vec!["real-1".to_string()]);

    cg.kill_all().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    for pid in &pids {
        assert!(!process_alive(*pid), "pid {pid} survived kill_all");
    }
    assert!(!cg.has_live_processes());
    cg.remove().unwrap();
    assert!(!cg.dir().exists());
    // The per-test parent goes too.
    cgroups.remove_parent().unwrap();
}

/// Says why a test did nothing, on the real stderr: libtest captures `eprintln!` of passing tests.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}
