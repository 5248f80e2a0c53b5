//! bench-console: the operator console with 1,000 dynos and a 10,000 lines/s log tail.
//!
//! A fake coordinator (this process) serves an app with 1,000 dynos and a log stream at
//! 10,000 lines/s; the real `dyno console` runs in a tmux pane against it with
//! `DYNO_CONSOLE_FRAME_LOG` set, so it records how long each frame took to draw (ratatui diff
//! plus the write to the terminal). Prints per-view frame times, key-to-screen latency as seen
//! through tmux, the console's CPU use during the tail, and its RSS.
//!
//! Build: `cargo build --release -p dyno-console -p dyno-bench --bin dyno --bin bench-console`
//! Run:   `./target/release/bench-console` (needs tmux)

use anyhow::{Context, Result, bail};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DYNOS: usize = 1000;
const LINES_PER_SEC: u64 = 10_000;
const APP: &str = "big";

struct Fake {
    apps: Vec<u8>,
    app: Vec<u8>,
    dynos: Vec<u8>,
    formation: Vec<u8>,
    hosts: Vec<u8>,
    sent: AtomicU64,
}

fn iso_now() -> String {
    let secs = dyno_shared::time::now_secs() - 3600;
    let (y, mo, d) = dyno_shared::time::civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

fn fake() -> Fake {
    let t = iso_now();
    let app = json!({
        "id": "a1", "name": APP, "created_at": t, "updated_at": t, "release": 7,
        "web_url": "http://big.localhost/", "maintenance": false,
        "formation": "web=990:standard-1x worker=10:standard-2x",
        "dynos_up": DYNOS - 3, "dynos_total": DYNOS,
    });
    let dynos: Vec<_> = (0..DYNOS)
        .map(|i| {
            let (ty, n, size) = if i < 990 {
                ("web", i + 1, "standard-1x")
            } else {
                ("worker", i - 989, "standard-2x")
            };
            let state = if i % 333 == 7 { "crashed" } else { "up" };
            json!({
                "id": format!("d-{i}"), "name": format!("{ty}.{n}"), "type": ty, "state": state,
                "size": size, "command": format!("bin/{ty}"), "release": 7,
                "host": format!("host-{}", i % 20), "address": null,
                "created_at": t, "updated_at": t, "restarts": 0, "exit_code": null,
                "one_off": false,
                "stats": {"memory_rss_mb": 200.0, "memory_cache_mb": 1.0, "memory_swap_mb": 0.0,
                          "memory_quota_mb": 512.0, "memory_percent": (i % 120) as f64,
                          "cpu_percent": 4.0, "pids": 3, "at": t},
            })
        })
        .collect();
    let formation = json!([
        {"type": "web", "quantity": 990, "size": "standard-1x", "command": "bin/web"},
        {"type": "worker", "quantity": 10, "size": "standard-2x", "command": "bin/worker"},
    ]);
    let hosts: Vec<_> = (0..20)
        .map(|i| {
            json!({
                "id": format!("h{i}"), "name": format!("host-{i}"),
                "address": format!("127.0.0.{}", i + 1), "state": "connected",
                "isolation": "linux", "memory_mb": 65536, "allocated_mb": 25600, "cpus": 16,
                "dynos": 50, "last_heartbeat": t, "agent_version": "0.1.0", "drained": false,
            })
        })
        .collect();
    Fake {
        apps: serde_json::to_vec(&json!([app])).unwrap(),
        app: serde_json::to_vec(&app).unwrap(),
        dynos: serde_json::to_vec(&dynos).unwrap(),
        formation: serde_json::to_vec(&formation).unwrap(),
        hosts: serde_json::to_vec(&hosts).unwrap(),
        sent: AtomicU64::new(0),
    }
}

fn respond(s: &mut TcpStream, status: &str, body: &[u8]) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(body);
}

fn log_line(n: u64) -> String {
    let at = dyno_shared::time::now_micros();
    let dyno = format!("web.{}", n % 990 + 1);
    format!(
        "{{\"at\":{at},\"app\":\"{APP}\",\"source\":\"app\",\"process\":\"{dyno}\",\"message\":\"GET /orders/{n} status=200 service=12ms bytes=5123 request_id=8f14e45f-ceea-467f\"}}\n"
    )
}

fn serve(mut s: TcpStream, f: &Fake) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (route, query) = path.split_once('?').unwrap_or((&path, ""));
    match route {
        "/healthz" => respond(&mut s, "200 OK", b"ok"),
        "/stream" => {
            // The change stream of a coordinator where nothing changes: a ping every 15 s.
            // With it live, the console polls the App view every 5 s instead of every second.
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n"
            );
            while s.write_all(b"{\"type\":\"ping\"}\n").is_ok() {
                std::thread::sleep(Duration::from_secs(15));
            }
        }
        "/apps" => respond(&mut s, "200 OK", &f.apps),
        "/hosts" => respond(&mut s, "200 OK", &f.hosts),
        r if r == format!("/apps/{APP}") => respond(&mut s, "200 OK", &f.app),
        r if r == format!("/apps/{APP}/dynos") => respond(&mut s, "200 OK", &f.dynos),
        r if r == format!("/apps/{APP}/formation") => respond(&mut s, "200 OK", &f.formation),
        r if r == format!("/apps/{APP}/logs") && !query.contains("tail=true") => {
            let body: String = (0..20).map(log_line).collect();
            respond(&mut s, "200 OK", body.as_bytes());
        }
        r if r == format!("/apps/{APP}/logs") => {
            // A close-delimited NDJSON stream at LINES_PER_SEC, in 10 ms batches.
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n"
            );
            let start = Instant::now();
            let mut n = 0u64;
            loop {
                let due = start.elapsed().as_micros() as u64 * LINES_PER_SEC / 1_000_000;
                let mut batch = String::new();
                while n < due {
                    batch.push_str(&log_line(n));
                    n += 1;
                }
                if !batch.is_empty() && s.write_all(batch.as_bytes()).is_err() {
                    break;
                }
                f.sent.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        _ => respond(
            &mut s,
            "404 Not Found",
            br#"{"id":"not_found","message":"no such path"}"#,
        ),
    }
}

struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
    fn key(&self, k: &str) {
        self.run(&["send-keys", "-t", "b", k]);
    }
    fn text(&self, t: &str) {
        self.run(&["send-keys", "-t", "b", "-l", t]);
    }
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "b"])
    }
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("timed out waiting for {what}; screen:\n{s}");
            }
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn console_pid(shell: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: i32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == shell && String::from_utf8_lossy(&cmd).contains("console")).then_some(pid)
    })
}

fn pct(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(label: &str, mut v: Vec<u128>) {
    v.sort_unstable();
    println!(
        "{label:<34} n={:<5} p50={:>6} us  p99={:>6} us  max={:>6} us",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(0)
    );
}

fn main() -> Result<()> {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("SKIPPED: bench-console needs tmux");
        return Ok(());
    }
    let dyno = dyno_tests::bin("dyno");
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    let f = Arc::new(fake());
    let server = f.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let f = server.clone();
            std::thread::spawn(move || serve(s, &f));
        }
    });

    let frames = dir.path().join("frames.log");
    let t = Tmux {
        socket: dir.path().join("tmux.sock"),
    };
    let cmd = format!(
        "env DYNO_COORDINATOR={base} DYNO_TOKEN=x HOME={home} XDG_CONFIG_HOME={home} \
         DYNO_CONSOLE_FRAME_LOG={frames} TERM=screen {dyno} console -a {APP}; sleep 30",
        home = dir.path().display(),
        frames = frames.display(),
        dyno = dyno.display()
    );
    t.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "b",
        "-x",
        "120",
        "-y",
        "40",
        &cmd,
    ]);
    let shell: i32 = t
        .run(&["display-message", "-p", "-t", "b", "#{pane_pid}"])
        .trim()
        .parse()
        .context("pane pid")?;
    t.wait("1,000 dynos on screen", |s| s.contains("Dynos (1000)"))?;
    let pid = console_pid(shell).context("the console process")?;
    println!("dyno console against a fake coordinator: app {APP} with {DYNOS} dynos, 120x40 pane");

    // Key to screen, through tmux: G (last row) and g (first row), alternately.
    let mut key_ms = Vec::new();
    for i in 0..20 {
        let (k, want) = if i % 2 == 0 {
            ("G", "worker.10 ")
        } else {
            ("g", "web.1 ")
        };
        let start = Instant::now();
        t.key(k);
        t.wait(want, |s| s.contains(want))?;
        key_ms.push(start.elapsed().as_micros());
    }
    // Filter typing: each key re-filters 1,000 rows.
    t.key("/");
    t.text("web.99");
    t.wait("filtered", |s| s.contains("(2/1000)"))?;
    t.key("Escape");
    t.key("Escape");
    std::thread::sleep(Duration::from_millis(300));
    let rss_app = status_kb(pid, "VmRSS:");

    // The log tail at 10,000 lines/s for 5 s.
    t.key(":");
    t.text("logs big");
    t.key("Enter");
    t.wait("the log tail", |s| s.contains("GET /orders/"))?;
    let c0 = cpu_ticks(pid);
    let sent0 = f.sent.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut tail_key_ms = Vec::new();
    while t0.elapsed() < Duration::from_secs(5) {
        let start = Instant::now();
        t.key("p");
        t.wait("paused", |s| s.contains("paused (+"))?;
        tail_key_ms.push(start.elapsed().as_micros());
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        t.key("p");
        t.wait("following", |s| s.contains(" following "))?;
        tail_key_ms.push(start.elapsed().as_micros());
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = t0.elapsed().as_secs_f64();
    let c1 = cpu_ticks(pid);
    let sent = f.sent.load(Ordering::Relaxed) - sent0;
    let hz = 100.0; // USER_HZ on Linux
    let rss_logs = status_kb(pid, "VmRSS:");
    let hwm = status_kb(pid, "VmHWM:");
    t.key("q");
    std::thread::sleep(Duration::from_millis(500));

    let text = std::fs::read_to_string(&frames).context("the frame log")?;
    let mut by_view: std::collections::BTreeMap<String, Vec<u128>> = Default::default();
    for l in text.lines() {
        if let Some((v, us)) = l.split_once(' ') {
            by_view
                .entry(v.to_string())
                .or_default()
                .push(us.parse().unwrap_or(0));
        }
    }
    println!();
    for (v, times) in by_view {
        summary(&format!("frame draw, {v} view"), times);
    }
    summary("key -> screen via tmux, 1000 dynos", key_ms);
    summary("key -> screen via tmux, tail running", tail_key_ms);
    println!(
        "log tail: {:.0} lines/s served, console CPU {:.0}% of one core",
        sent as f64 / secs,
        (c1 - c0) as f64 / hz / secs * 100.0
    );
    println!(
        "console RSS: {} MB with 1000 dynos, {} MB after the tail (20,000-line buffer), peak {} MB",
        rss_app / 1024,
        rss_logs / 1024,
        hwm / 1024
    );
    Ok(())
}
