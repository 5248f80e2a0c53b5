//! Time from `ps:scale web=N` to all N web dynos `up` (plain runtime), for N = 1, 10, 50, and the
//! coordinator's and agent's RSS with 50 dynos up. The peer, measured in the same run: starting N
//! bare `dyno-probe web` processes and waiting for each to accept on its port, the floor any
//! supervisor pays.
//!
//! Run: `cargo build --release --workspace && ./target/release/bench-scale [ROUNDS]`

use dyno_tests::{Platform, bin, free_port, wait_until};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [1, 10, 50];

fn scale(p: &Platform, n: usize) {
    ureq::post(&format!("{}/apps/bench/formation/scale", p.url()))
        .set("Authorization", &format!("Bearer {}", p.token))
        .send_json(serde_json::json!({"args": [format!("web={n}")]}))
        .expect("scale");
}

fn up_count(p: &Platform) -> (usize, usize) {
    let dynos = p.dynos("bench");
    let up = dynos.iter().filter(|d| d["state"] == "up").count();
    (up, dynos.len())
}

fn time_scale(p: &Platform, n: usize) -> Duration {
    scale(p, 0);
    wait_until("scaled to 0", Duration::from_secs(60), || {
        (up_count(p).1 == 0).then_some(())
    });
    let t0 = Instant::now();
    scale(p, n);
    loop {
        if up_count(p) == (n, n) {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// N bare processes, each bound to its own port, without the platform.
fn time_bare(n: usize) -> Duration {
    let probe = bin("dyno-probe");
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let t0 = Instant::now();
    let mut children: Vec<_> = ports
        .iter()
        .map(|port| {
            std::process::Command::new(&probe)
                .arg("web")
                .env("PORT", port.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn probe")
        })
        .collect();
    for port in &ports {
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let elapsed = t0.elapsed();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    elapsed
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // The peer first, so its ports cannot collide with dynos' ports.
    let bare: Vec<Duration> = SIZES
        .iter()
        .map(|&n| median((0..rounds).map(|_| time_bare(n)).collect()))
        .collect();
    // Room for 50 standard-1x dynos whatever this machine's memory.
    let p = Platform::start_with("0,1,2", &["--memory-mb", "65536"]);
    p.deploy("bench", "web: dyno-probe web\n");
    p.wait_up("bench", &["web.1"]);
    println!(
        "bench-scale: {rounds} rounds each, median first; plain runtime; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("   N      platform    bare procs  all rounds (platform, ms)");
    for (n, bare) in SIZES.into_iter().zip(bare) {
        let runs: Vec<Duration> = (0..rounds).map(|_| time_scale(&p, n)).collect();
        let all: Vec<String> = runs
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
            .collect();
        println!(
            "{n:>4}  {:>10.1}ms  {:>10.1}ms  {}",
            median(runs).as_secs_f64() * 1000.0,
            bare.as_secs_f64() * 1000.0,
            all.join(" ")
        );
    }
    // Memory with 50 dynos up (the last size run left them running).
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "RSS with 50 dynos up: coordinator {:.1} MB, agent {:.1} MB",
        rss_mb(p.coordinator_pid().expect("coordinator runs")),
        rss_mb(p.agent_pid().expect("agent runs"))
    );
}
