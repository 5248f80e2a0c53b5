//! `LinuxRuntime` for real: namespaces, the dyno's root, its user and its cgroup. Root only; each
//! test prints `SKIPPED: ...` and returns elsewhere.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dyno_agent::cgroup::{Cgroups, Hierarchy};
use dyno_agent::linux::LinuxRuntime;
use dyno_agent::outbox::Outbox;
use dyno_agent::runtime::{DynoSignal, Exit, Launch, RunningDyno, Runtime, process_alive};
use dyno_agent::slugs::SlugCache;
use dyno_agent::supervisor::{Supervisor, SupervisorConfig};
use dyno_shared::protocol::{DynoSpec, DynoState};
use dyno_shared::size::Size;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(20);

/// A runtime on this host's cgroups under a parent of its own, or `None` after saying SKIPPED.
fn runtime(test: &str) -> Option<(LinuxRuntime, tempfile::TempDir)> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    if let Err(e) = LinuxRuntime::check() {
        skipped(test, &e.to_string());
        return None;
    }
    let hierarchy = Hierarchy::detect().unwrap();
    let parent = format!(
        "dyno-agent-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let rt = LinuxRuntime::with(
        Cgroups::new(hierarchy, parent),
        env!("CARGO_BIN_EXE_dyno-agent"),
    );
    Some((rt, tempfile::tempdir().unwrap()))
}

/// A slug at `state/slugs/<id>` with `bin/probe` holding `script`; returns the dyno's (not yet
/// prepared) `state/dynos/<id>/app`, the supervisor's layout.
fn app(state: &Path, id: &str, script: &str) -> PathBuf {
    let slug = state.join("slugs").join(id);
    std::fs::create_dir_all(slug.join("bin")).unwrap();
    let probe = slug.join("bin/probe");
    std::fs::write(&probe, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dyno = state.join("dynos").join(id);
    std::fs::create_dir_all(&dyno).unwrap();
    dyno.join("app")
}

fn launch(app_dir: PathBuf, command: &str, size: Size) -> Launch {
    let dyno = app_dir.parent().unwrap();
    let slug_dir = dyno
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("slugs")
        .join(dyno.file_name().unwrap());
    Launch {
        app_dir,
        slug_dir,
        command: command.to_string(),
        dyno_name: "web.1".into(),
        port: Some(5000),
        env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
        size,
    }
}

/// What the supervisor does: prepare the app dir, then start.
fn start(rt: &LinuxRuntime, l: &Launch) -> RunningDyno {
    rt.prepare(l).unwrap();
    rt.start(l).unwrap()
}

async fn run_to_end(rt: &LinuxRuntime, l: &Launch) -> (String, Exit) {
    let mut dyno = start(rt, l);
    let mut out = String::new();
    // The output ends once the exit is seen, as in the supervisor.
    let (read, exit) = tokio::time::timeout(
        PATIENCE,
        futures_util::future::join(dyno.output.read_to_string(&mut out), dyno.exit),
    )
    .await
    .expect("dyno exits and its output ends");
    read.unwrap();
    (out, exit.unwrap())
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
}

fn finish(rt: &LinuxRuntime) {
    assert!(rt.cgroups().list().is_empty(), "dyno cgroups left behind");
    rt.cgroups().remove_parent().unwrap();
}

#[tokio::test]
async fn a_dyno_sees_only_itself_as_an_unprivileged_user_in_its_own_root() {
    let Some((rt, state)) =
        runtime("a_dyno_sees_only_itself_as_an_unprivileged_user_in_its_own_root")
    else {
        return;
    };
    let state_path = state.path().display().to_string();
    let script = format!(
        r#"echo "pid=$$"
echo "procs=$(cd /proc && echo [0-9]*)"
echo "host=$(cat /proc/sys/kernel/hostname)"
echo "uid=$(id -u) gid=$(id -g)"
echo "caps=$(grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | tr -s '\t' ' ' | tr '\n' ',')"
echo "nnp=$(grep NoNewPrivs /proc/self/status | tr -d ' \t')"
if touch /usr/dyno-test 2>/dev/null; then echo usr=writable; else echo usr=readonly; fi
if touch /dyno-test 2>/dev/null; then echo root=writable; else echo root=readonly; fi
if echo hi > /app/written; then echo app=writable; fi
if echo hi > /tmp/x; then echo tmp=writable; fi
echo "home=$HOME pwd=$(pwd) port=$PORT greeting=$GREETING"
if [ -e '{state_path}' ]; then echo state=visible; else echo state=hidden; fi
echo "mounts=$(cut -d' ' -f2 /proc/mounts | tr '\n' ' ')"
exit 7
"#
    );
    let app_dir = app(state.path(), "d-self", &script);
    let (out, exit) = run_to_end(&rt, &launch(app_dir.clone(), "probe", Size::Standard1x)).await;
    assert_eq!(exit.code(), 7, "{out}");
    let pid: u32 = field(&out, "pid").parse().unwrap();
    assert!(pid <= 3, "the app is a low pid in its own namespace: {out}");
    let procs: Vec<u32> = field(&out, "procs")
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(procs.contains(&1), "{out}");
    assert!(
        procs.iter().all(|&p| p < 20),
        "only the dyno's processes: {out}"
    );
    assert_eq!(field(&out, "host"), "d-self");
    assert_eq!(field(&out, "uid"), "65534 gid=65534");
    for cap in field(&out, "caps").split(',').filter(|c| !c.is_empty()) {
        assert!(cap.ends_with(" 0000000000000000"), "{cap} in {out}");
    }
    assert_eq!(field(&out, "nnp"), "NoNewPrivs:1");
    assert_eq!(field(&out, "usr"), "readonly");
    assert_eq!(field(&out, "root"), "readonly");
    assert_eq!(field(&out, "app"), "writable");
    assert_eq!(field(&out, "tmp"), "writable");
    assert_eq!(field(&out, "home"), "/app pwd=/app port=5000 greeting=hi");
    assert_eq!(field(&out, "state"), "hidden");
    let mounts = field(&out, "mounts");
    assert!(!mounts.contains(&state_path), "{mounts}");
    // The write went to the dyno's own upper layer, not to the slug.
    assert_eq!(
        std::fs::read_to_string(app_dir.join("written")).unwrap(),
        "hi\n"
    );
    assert!(!state.path().join("slugs/d-self/written").exists());
    finish(&rt);
}

#[tokio::test]
async fn a_fork_bomb_stays_under_pids_max_and_the_memory_limit_is_set() {
    let Some((rt, state)) = runtime("a_fork_bomb_stays_under_pids_max_and_the_memory_limit_is_set")
    else {
        return;
    };
    // Eco: pids.max 256. Four hundred sleepers cannot all start; the bomber shell gives up at
    // its first failed fork (dash exits), the sleepers it made stay.
    let script = "sh -c 'i=0; while [ $i -lt 400 ]; do sleep 60 & i=$((i+1)); done' 2>/dev/null\n\
                  echo forked\nexec sleep 60\n";
    let app_dir = app(state.path(), "d-bomb", script);
    let RunningDyno {
        mut output,
        exit,
        group,
        ..
    } = start(&rt, &launch(app_dir, "probe", Size::Eco));
    let mut seen = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !seen.contains("forked") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout_at(deadline, output.read(&mut buf))
            .await
            .expect("the bomb finishes forking")
            .unwrap();
        if n == 0 {
            group.signal(DynoSignal::Kill).unwrap();
            panic!("the dyno ended early: {seen:?}");
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let cg = rt.cgroups().cgroup("d-bomb").unwrap();
    let stats = cg.stats().unwrap();
    assert!(
        stats.pids_current <= 256 && stats.pids_current > 200,
        "{stats:?}"
    );
    let limit_file = match cg.version() {
        dyno_agent::cgroup::Version::V1 => "memory.limit_in_bytes",
        dyno_agent::cgroup::Version::V2 => "memory.max",
    };
    let limit = std::fs::read_to_string(cg.dir().join(limit_file)).unwrap();
    assert_eq!(limit.trim(), (2 * 512u64 * 1024 * 1024).to_string());
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");

    let pids = cg.pids().unwrap();
    group.signal(DynoSignal::Kill).unwrap();
    let exit = tokio::time::timeout(PATIENCE, exit).await.unwrap().unwrap();
    assert_eq!(exit.code(), 137);
    assert!(!group.alive());
    assert!(pids.iter().all(|&p| !process_alive(p)), "survivors");
    assert!(!cg.dir().exists(), "the cgroup is removed with the dyno");
    finish(&rt);
}

#[tokio::test]
async fn sigterm_reaches_every_process_and_sigkill_leaves_nothing() {
    let Some((rt, state)) = runtime("sigterm_reaches_every_process_and_sigkill_leaves_nothing")
    else {
        return;
    };
    // A polite child in the group, and a double-forked daemon in its own session ignoring TERM.
    let script = r#"sh -c 'trap "echo child-got-term; exit 0" TERM; sleep 300 & wait' &
(setsid sh -c 'trap "echo daemon-ignores-term" TERM; while :; do sleep 1; done' &)
trap 'echo main-got-term; wait; exit 0' TERM
echo ready
sleep 300 & wait
"#;
    let app_dir = app(state.path(), "d-term", script);
    let RunningDyno {
        mut output,
        exit,
        group,
        pid,
        ..
    } = start(&rt, &launch(app_dir, "probe", Size::Standard1x));
    let mut seen = String::new();
    let deadline = Instant::now() + PATIENCE;
    while !seen.contains("ready") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout_at(deadline, output.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cg = rt.cgroups().cgroup("d-term").unwrap();
    let pids = cg.pids().unwrap();
    assert!(pids.contains(&pid), "{pids:?}");
    assert!(
        pids.len() >= 6,
        "helper, init, main, child, daemon, sleeps: {pids:?}"
    );

    group.signal(DynoSignal::Term).unwrap();
    let reader = tokio::spawn(async move {
        let mut rest = String::new();
        let _ = output.read_to_string(&mut rest).await;
        rest
    });
    // The daemon ignores TERM, so init keeps the dyno alive until the grace runs out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(group.alive());
    let mut exit = exit;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut exit)
            .await
            .is_err(),
        "init waits for the stragglers during a stop"
    );
    group.signal(DynoSignal::Kill).unwrap();
    let code = tokio::time::timeout(PATIENCE, exit).await.unwrap().unwrap();
    assert_eq!(code, Exit::Signal(9));
    let rest = tokio::time::timeout(PATIENCE, reader)
        .await
        .unwrap()
        .unwrap();
    for line in ["main-got-term", "child-got-term", "daemon-ignores-term"] {
        assert!(rest.contains(line), "{line} missing from {rest:?}");
    }
    assert!(!group.alive());
    for p in pids {
        assert!(!process_alive(p), "pid {p} survived");
    }
    finish(&rt);
}

#[tokio::test]
async fn a_graceful_stop_ends_with_the_apps_status() {
    let Some((rt, state)) = runtime("a_graceful_stop_ends_with_the_apps_status") else {
        return;
    };
    let app_dir = app(state.path(), "d-grace", "echo ready; exec sleep 300\n");
    let RunningDyno {
        mut output,
        exit,
        group,
        ..
    } = start(&rt, &launch(app_dir, "probe", Size::Standard1x));
    let mut buf = [0u8; 16];
    tokio::time::timeout(PATIENCE, output.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    group.signal(DynoSignal::Term).unwrap();
    let code = tokio::time::timeout(PATIENCE, exit).await.unwrap().unwrap();
    assert_eq!(code.code(), 143, "sleep died of SIGTERM");
    assert!(!group.alive());
    finish(&rt);
}

#[tokio::test]
async fn app_writes_are_gone_after_a_restart_through_the_supervisor() {
    let Some((rt, state)) = runtime("app_writes_are_gone_after_a_restart_through_the_supervisor")
    else {
        return;
    };
    let sha = "5".repeat(64);
    let slug = state.path().join("slugs").join(&sha);
    std::fs::create_dir_all(slug.join("bin")).unwrap();
    std::fs::write(
        slug.join("bin/look"),
        "#!/bin/sh\necho \"files: $(ls /app | tr '\\n' ' ')\"\necho new > /app/written\n",
    )
    .unwrap();
    std::fs::set_permissions(
        slug.join("bin/look"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(state.path().join("dynos")).unwrap();
    let slugs = SlugCache::open(&state.path().join("slugs"), "http://127.0.0.1:9", "t").unwrap();
    let outbox = Arc::new(Outbox::new());
    let rt = Arc::new(rt);
    let sup = Supervisor::new(
        SupervisorConfig {
            dynos_dir: state.path().join("dynos"),
            boot_timeout: Duration::from_secs(10),
            stats_interval: dyno_agent::supervisor::STATS_INTERVAL,
        },
        rt.clone(),
        Arc::new(slugs),
        outbox.clone(),
    );
    let spec = DynoSpec {
        dyno_id: "d-restart".into(),
        app: "shop".into(),
        name: "worker.1".into(),
        process_type: "worker".into(),
        release: 1,
        slug: sha,
        command: "look".into(),
        env: Default::default(),
        size: Size::Standard1x,
        one_off: false,
        generation: 1,
        check: None,
    };
    let mut listings = Vec::new();
    for _ in 0..2 {
        sup.start(spec.clone());
        let deadline = Instant::now() + PATIENCE;
        loop {
            let done = outbox
                .take_states()
                .into_iter()
                .any(|s| s.state == DynoState::Crashed);
            for l in
                std::iter::from_fn(|| Some(outbox.take_logs()).filter(|b| !b.is_empty())).flatten()
            {
                if let Some(files) = l.message.strip_prefix("files: ") {
                    listings.push(files.trim().to_string());
                }
            }
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "the dyno never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The supervisor forgets the dyno right after reporting it; wait for that.
        while !sup.statuses().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(
        listings,
        vec!["bin", "bin"],
        "a restart starts from the slug"
    );
    sup.shutdown(Duration::from_secs(1)).await;
    finish(&rt);
}

#[tokio::test]
async fn memory_over_the_quota_logs_r14_and_over_twice_the_quota_r15() {
    let test = "memory_over_the_quota_logs_r14_and_over_twice_the_quota_r15";
    let Some((rt, state)) = runtime(test) else {
        return;
    };
    const MIB: u64 = 1024 * 1024;
    // A 16 MB quota (32 MB hard limit) instead of the sizes' hundreds of MB. `tail -c` keeps a
    // pipe's bytes in anonymous memory until EOF, so the first dyno holds 24 MB until stopped
    // and the second tries to hold 48 MB.
    let rt = Arc::new(rt.with_memory_quota(16 * MIB));
    let sha = "6".repeat(64);
    let slug = state.path().join("slugs").join(&sha);
    std::fs::create_dir_all(&slug).unwrap();
    std::fs::create_dir_all(state.path().join("dynos")).unwrap();
    let slugs = SlugCache::open(&state.path().join("slugs"), "http://127.0.0.1:9", "t").unwrap();
    let outbox = Arc::new(Outbox::new());
    let sup = Supervisor::new(
        SupervisorConfig {
            dynos_dir: state.path().join("dynos"),
            boot_timeout: Duration::from_secs(10),
            stats_interval: Duration::from_millis(100),
        },
        rt.clone(),
        Arc::new(slugs),
        outbox.clone(),
    );
    let spec = |id: &str, name: &str, command: &str| DynoSpec {
        dyno_id: id.into(),
        app: "shop".into(),
        name: name.into(),
        process_type: "worker".into(),
        release: 1,
        slug: sha.clone(),
        command: command.into(),
        env: Default::default(),
        size: Size::Standard1x,
        one_off: false,
        generation: 1,
        check: None,
    };
    let mut seen: Vec<(String, String)> = Vec::new();

    sup.start(spec(
        "d-r14",
        "worker.1",
        "sh -c '(head -c 24M /dev/zero; sleep 300) | tail -c 30M'",
    ));
    wait_log(&outbox, &mut seen, "R14", |p, m| {
        p == "worker.1" && m.starts_with("Error R14 (Memory quota exceeded) -> mem=")
    })
    .await;
    let r14 = seen.iter().find(|(_, m)| m.contains("R14")).unwrap();
    assert!(r14.1.ends_with("%)"), "{r14:?}");
    let stats = outbox.take_stats();
    let s = stats.iter().find(|s| s.dyno_id == "d-r14").expect("stats");
    assert_eq!(s.memory_quota_bytes, 16 * MIB);
    assert!(s.memory_rss_bytes > 16 * MIB && s.pids >= 2, "{s:?}");

    // Without swap the kernel must kill at the hard limit; with swap it may page out instead.
    let swap = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    if swap.lines().count() > 1 {
        skipped(test, "R15 part: this host has swap");
    } else {
        sup.start(spec(
            "d-r15",
            "worker.2",
            "sh -c '(head -c 48M /dev/zero; sleep 300) | tail -c 60M'",
        ));
        wait_log(&outbox, &mut seen, "the exit", |p, m| {
            p == "worker.2" && m.starts_with("Process exited with status")
        })
        .await;
        let worker2: Vec<String> = seen
            .into_iter()
            .filter(|(p, _)| p == "worker.2")
            .map(|(_, m)| m)
            .collect();
        let r15 = worker2
            .iter()
            .position(|m| m == "Error R15 (Memory quota vastly exceeded) -> mem=32MB(200.0%)")
            .unwrap_or_else(|| panic!("no R15 in {worker2:#?}"));
        let exited = worker2
            .iter()
            .position(|m| m.starts_with("Process exited"))
            .unwrap();
        assert!(r15 < exited, "{worker2:#?}");
    }
    sup.shutdown(Duration::from_secs(1)).await;
    finish(&rt);
}

/// Collects log lines as (process, message) into `seen` until one matches `pred`.
async fn wait_log(
    outbox: &Outbox,
    seen: &mut Vec<(String, String)>,
    what: &str,
    pred: impl Fn(&str, &str) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        seen.extend(
            std::iter::from_fn(|| Some(outbox.take_logs()).filter(|b| !b.is_empty()))
                .flatten()
                .map(|l| (l.process, l.message)),
        );
        if seen.iter().any(|(p, m)| pred(p, m)) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Says why a test did nothing, on the real stderr: libtest captures `eprintln!` of passing tests.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

/// A supervisor on `rt` over `state`, as an agent builds it.
fn supervisor(rt: &Arc<LinuxRuntime>, state: &Path) -> (Supervisor, Arc<Outbox>) {
    std::fs::create_dir_all(state.join("dynos")).unwrap();
    let slugs = SlugCache::open(&state.join("slugs"), "http://127.0.0.1:9", "t").unwrap();
    let outbox = Arc::new(Outbox::new());
    let sup = Supervisor::new(
        SupervisorConfig {
            dynos_dir: state.join("dynos"),
            boot_timeout: Duration::from_secs(10),
            stats_interval: dyno_agent::supervisor::STATS_INTERVAL,
        },
        rt.clone(),
        Arc::new(slugs),
        outbox.clone(),
    );
    (sup, outbox)
}

fn brief_ended(seen: &[(String, String)]) -> bool {
    seen.iter()
        .any(|(p, m)| p == "worker.2" && m == "last-words")
}

/// The numbers `count N` lines carry, in the order they arrived.
fn counts(seen: &[(String, String)], process: &str) -> Vec<u32> {
    seen.iter()
        .filter(|(p, _)| p == process)
        .filter_map(|(_, m)| m.strip_prefix("count ")?.parse().ok())
        .collect()
}

#[tokio::test]
async fn a_restarted_agent_adopts_running_dynos_and_resumes_their_output() {
    let test = "a_restarted_agent_adopts_running_dynos_and_resumes_their_output";
    let Some((rt, state)) = runtime(test) else {
        return;
    };
    let rt = Arc::new(rt);
    let sha = "7".repeat(64);
    let slug = state.path().join("slugs").join(&sha);
    std::fs::create_dir_all(slug.join("bin")).unwrap();
    std::fs::write(
        slug.join("bin/counter"),
        "#!/bin/sh\ntrap 'echo got-term; exit 0' TERM\ni=0\nwhile :; do i=$((i+1)); echo \"count $i\"; sleep 0.02 & wait; done\n",
    )
    .unwrap();
    std::fs::write(
        slug.join("bin/brief"),
        "#!/bin/sh\necho started\nsleep 2\necho last-words\nexit 3\n",
    )
    .unwrap();
    for f in ["counter", "brief"] {
        std::fs::set_permissions(
            slug.join("bin").join(f),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let spec = |id: &str, name: &str, command: &str| DynoSpec {
        dyno_id: id.into(),
        app: "shop".into(),
        name: name.into(),
        process_type: "worker".into(),
        release: 1,
        slug: sha.clone(),
        command: command.into(),
        env: Default::default(),
        size: Size::Standard1x,
        one_off: false,
        generation: 1,
        check: None,
    };

    let (first, outbox) = supervisor(&rt, state.path());
    first.start(spec("d-count", "worker.1", "counter"));
    first.start(spec("d-brief", "worker.2", "brief"));
    let mut seen = Vec::new();
    wait_log(&outbox, &mut seen, "count 5", |p, m| {
        p == "worker.1" && m == "count 5"
    })
    .await;
    let pid = first
        .statuses()
        .into_iter()
        .find(|s| s.dyno_id == "d-count")
        .and_then(|s| s.pid)
        .unwrap();
    // The agent leaves: nothing is stopped, nothing reported down.
    first.leave(Duration::from_secs(1)).await;
    assert!(first.statuses().is_empty());
    seen.extend(
        std::iter::from_fn(|| Some(outbox.take_logs()).filter(|b| !b.is_empty()))
            .flatten()
            .map(|l| (l.process, l.message)),
    );
    assert!(
        !outbox.take_states().iter().any(|s| !s.state.is_running()),
        "nothing ended"
    );
    assert!(process_alive(pid), "the dyno outlives its agent");
    // While no agent watches, the counter keeps counting and the brief one ends.
    assert!(
        !brief_ended(&seen),
        "the test needs the brief dyno to outlive the first agent"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (second, outbox) = supervisor(&rt, state.path());
    let adopted = second.adopt_existing().await;
    assert_eq!(
        adopted,
        ["d-count", "d-brief"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    rt.clean_leftovers(&adopted);
    let count = second
        .statuses()
        .into_iter()
        .find(|s| s.dyno_id == "d-count")
        .unwrap();
    assert_eq!(count.state, DynoState::Up);
    assert_eq!(count.pid, Some(pid), "the same process, not a new one");
    wait_log(&outbox, &mut seen, "the brief dyno's end", |p, m| {
        p == "worker.2" && m == "Process exited with status 3"
    })
    .await;
    let brief: Vec<&str> = seen
        .iter()
        .filter(|(p, _)| p == "worker.2")
        .map(|(_, m)| m.as_str())
        .collect();
    assert!(
        brief.contains(&"last-words"),
        "output written while away: {brief:#?}"
    );
    let last = counts(&seen, "worker.1").last().copied().unwrap();
    wait_log(&outbox, &mut seen, "counting on", |p, m| {
        p == "worker.1" && m == format!("count {}", last + 10)
    })
    .await;
    let numbers = counts(&seen, "worker.1");
    assert_eq!(
        numbers,
        (1..=numbers.len() as u32).collect::<Vec<_>>(),
        "every line once, in order, across the handover"
    );

    // The new agent stops what the old one started, through the cgroup as always.
    second.stop("d-count", Duration::from_secs(5));
    wait_log(&outbox, &mut seen, "the stop", |p, m| {
        p == "worker.1" && m == "Process exited with status 0"
    })
    .await;
    assert!(seen.iter().any(|(_, m)| m == "got-term"));
    second.shutdown(Duration::from_secs(1)).await;
    assert!(!process_alive(pid));
    finish(&rt);
}
