//! Dyno start latency with full Linux isolation: from the runtime's start call to the dyno's
//! command running (the probe prints the wall clock first thing after exec), p50/p99 over N starts.
//! Peers in the same run, starting the same probe binary: `unshare -fpmiu --mount-proc` (namespaces
//! only) and `runc run` of an equivalent bundle (PID/mount/UTS/IPC namespaces, read-only root, no
//! network namespace). Then churn: dynos one runtime starts and stops per second.
//!
//! Needs root and cgroups. Run:
//! `cargo build --release --workspace && sudo ./target/release/bench-start [STARTS]`
//! (runc from Debian's `runc` package; that peer is skipped with a note when it is missing.)

use dyno_agent::linux::LinuxRuntime;
use dyno_agent::runtime::{DynoSignal, Launch, Runtime};
use dyno_shared::Size;
use dyno_tests::bin;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// ms between `t0` and the clock the probe printed.
fn latency(t0: u128, printed: &str) -> f64 {
    let at: u128 = printed
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("probe printed {printed:?}"));
    (at.saturating_sub(t0)) as f64 / 1e6
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<28} p50 {:>7.2} ms   p99 {:>7.2} ms   ({} starts)",
        pct(0.5),
        pct(0.99),
        ms.len()
    );
}

/// The slug every dyno of the run shares (`slugs/bench`), holding the probe in `bin/`.
fn slug_dir(root: &Path, probe: &Path) -> PathBuf {
    let slug = root.join("slugs/bench");
    if !slug.exists() {
        std::fs::create_dir_all(slug.join("bin")).unwrap();
        std::fs::copy(probe, slug.join("bin/dyno-probe")).unwrap();
    }
    slug
}

/// A dyno's app dir as the agent lays it out (`dynos/<id>/app`), not yet prepared.
fn app_dir(root: &Path, i: usize) -> PathBuf {
    let dyno = root.join(format!("dynos/b{i}"));
    std::fs::create_dir_all(&dyno).unwrap();
    dyno.join("app")
}

fn launch(dir: PathBuf, slug: &Path, command: &str) -> Launch {
    Launch {
        app_dir: dir,
        slug_dir: slug.to_path_buf(),
        command: command.to_string(),
        dyno_name: "run.1".into(),
        port: None,
        env: BTreeMap::new(),
        size: Size::Standard1x,
    }
}

async fn ours(rt: &LinuxRuntime, root: &Path, probe: &Path, starts: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(starts);
    let slug = slug_dir(root, probe);
    for i in 0..starts {
        let l = launch(app_dir(root, i), &slug, "dyno-probe now");
        // From the agent's side: preparing /app (the overlay's layers) and starting.
        let t0 = now_ns();
        rt.prepare(&l).expect("prepare the app");
        let mut dyno = rt.start(&l).expect("start dyno");
        let mut line = String::new();
        BufReader::new(&mut dyno.output)
            .read_line(&mut line)
            .await
            .unwrap();
        out.push(latency(t0, &line));
        dyno.exit.await.expect("dyno exits");
    }
    out
}

fn unshare(probe: &Path, starts: usize) -> Vec<f64> {
    (0..starts)
        .map(|_| {
            let t0 = now_ns();
            let o = Command::new("unshare")
                .args([
                    "--fork",
                    "--pid",
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--mount-proc",
                ])
                .arg(probe)
                .arg("now")
                .output()
                .expect("unshare");
            latency(t0, &String::from_utf8_lossy(&o.stdout))
        })
        .collect()
}

/// A bundle equivalent to a dyno's root: read-only binds of the host's `/usr` and `/etc` (so the
/// same dynamically linked probe runs) made by runc inside the container's mount namespace, with
/// runc's default spec minus the network namespace and `/sys`. On the host the rootfs holds only
/// empty directories and symlinks: nothing is mounted there, so deleting the bundle is always safe.
fn runc_bundle(dir: &Path, probe: &Path) -> Option<PathBuf> {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    for d in ["usr", "etc", "proc", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        std::os::unix::fs::symlink(target, rootfs.join(link)).unwrap();
    }
    std::fs::write(rootfs.join("probe"), b"").unwrap();
    let ok = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/probe", "now"]);
    spec["root"]["readonly"] = true.into();
    let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "network");
    let mounts = spec["mounts"].as_array_mut().unwrap();
    // sysfs needs its own network namespace, and dynos get no /sys either.
    mounts.retain(|m| m["destination"] != "/sys");
    for (src, dst) in [
        ("/usr", "/usr"),
        ("/etc", "/etc"),
        (probe.to_str().unwrap(), "/probe"),
    ] {
        mounts.push(serde_json::json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "ro", "nosuid"]}));
    }
    std::fs::write(&path, spec.to_string()).unwrap();
    Some(bundle)
}

fn runc(bundle: &Path, starts: usize) -> Vec<f64> {
    (0..starts)
        .map(|i| {
            let t0 = now_ns();
            let o = Command::new("runc")
                .args(["run", "--bundle"])
                .arg(bundle)
                .arg(format!("bench-{}-{i}", std::process::id()))
                .stdin(Stdio::null())
                .output()
                .expect("runc run");
            assert!(
                o.status.success(),
                "runc: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            latency(t0, &String::from_utf8_lossy(&o.stdout))
        })
        .collect()
}

/// Start a long-running dyno, SIGTERM it, wait: how many per second.
async fn churn(rt: &LinuxRuntime, root: &Path, probe: &Path, window: Duration) -> f64 {
    let t0 = Instant::now();
    let mut n = 0usize;
    let slug = slug_dir(root, probe);
    while t0.elapsed() < window {
        let l = launch(app_dir(root, 1_000_000 + n), &slug, "dyno-probe sleep 600");
        rt.prepare(&l).expect("prepare the app");
        let dyno = rt.start(&l).expect("start dyno");
        dyno.group.signal(DynoSignal::Term).expect("signal");
        dyno.exit.await.expect("dyno exits");
        n += 1;
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let starts: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    if !dyno_tests::is_root() {
        eprintln!("SKIPPED: bench-start needs root for namespaces and cgroups");
        return;
    }
    let cgroups = LinuxRuntime::check().expect("this host cannot isolate dynos");
    let rt = LinuxRuntime::with(cgroups, bin("dyno-agent"));
    let probe = bin("dyno-probe");
    let dir = tempfile::tempdir().unwrap();
    println!(
        "bench-start: {starts} starts each; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    summary(
        "dyno (linux isolation)",
        ours(&rt, dir.path(), &probe, starts).await,
    );
    summary("unshare -fpmiu --mount-proc", unshare(&probe, starts));
    match runc_bundle(dir.path(), &probe) {
        Some(bundle) => summary("runc run (ro root, no netns)", runc(&bundle, starts)),
        None => println!("runc: not available (apt-get install runc), peer skipped"),
    }
    let rate = churn(&rt, dir.path(), &probe, Duration::from_secs(5)).await;
    println!("churn: {rate:.0} dynos started and stopped per second (sequential, one runtime)");
    // Every dyno is gone: leave no empty parent cgroup behind.
    rt.tidy();
}
