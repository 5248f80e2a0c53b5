//! Dyno processes left by a crashed agent are killed when the next agent starts, so no dyno runs
//! twice beside its replacement.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::time::{Duration, Instant};

#[test]
fn leftover_dyno_groups_are_killed_and_nothing_else() {
    let state = tempfile::tempdir().unwrap();
    let app = state.path().join("dynos/d-1/app");
    std::fs::create_dir_all(&app).unwrap();
    // A dyno with a grandchild, in its own process group, as the plain runtime starts them.
    let mut dyno = std::process::Command::new("sh")
        .args(["-c", "sleep 100 & sleep 100"])
        .current_dir(&app)
        .process_group(0)
        .spawn()
        .unwrap();
    // A process elsewhere must survive.
    let mut bystander = std::process::Command::new("sleep")
        .arg("100")
        .current_dir(state.path())
        .process_group(0)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    assert_eq!(
        dyno_agent::runtime::kill_leftover_dynos(&state.path().join("dynos")),
        1
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = dyno.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "leftover dyno still running"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(9));
    assert!(
        !dyno_agent::runtime::group_alive(dyno.id() as i32),
        "grandchild survived"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a process outside dynos/ was killed"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}
