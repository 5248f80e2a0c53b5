//! The routing mesh against nginx, on the same backends in the same run.
//!
//! 1. Throughput and added latency: two `bench-router-backend` dynos answering 1 KB bodies, the
//!    router (its own process, 2 worker threads) and nginx (`worker_processes 2`, round robin,
//!    upstream keep-alive) in front of them, driven by `wrk` with keep-alive: requests/s at 64
//!    connections (the router's and nginx's, and their ratio) and p50/p99 latency at one
//!    connection (below saturation) minus the same figures straight to a backend; beside them
//!    each proxy's own CPU time per request.
//!    The machine (a VM on shared cores) moves by 10-20% from one second to the next, and
//!    drifts over minutes: the proxies take turns in many short runs, and each round's ratio
//!    compares two runs a second apart. Runs of 1 s paired this way scatter about half as much
//!    as runs of 3 s.
//! 2. The Rap Genius experiment: ten `--serial` backends (one request at a time, the rest wait
//!    inside the dyno); each request carries its own service time (lognormal, median 50 ms, p99
//!    3 s, capped at 25 s); Poisson arrivals at 70% of capacity (from the sample's mean service
//!    time); the same seeded sequence for every strategy, sent open-loop by this process.
//!    Queue time is total time minus the request's own service time. Strategies: ours (power
//!    of two choices with a per-dyno concurrency limit of 1, so requests queue at the router),
//!    ours without a limit, the router's uniform random flag, nginx `random`, nginx
//!    `least_conn` and nginx `random two least_conn`.
//!
//! Needs `wrk` and `nginx` on PATH (Debian: `apt-get install -y nginx wrk`); run as root
//! without them, the bench installs them with apt-get itself.
//!
//! Run: `cargo build --release -p dyno-bench --bin bench-router --bin bench-router-backend &&
//! ./target/release/bench-router [--requests N] [--seconds S] [--rounds R] [--only throughput|rap]`
//! (defaults: 2500 requests per strategy, about 80 s each; 40 rounds of 1 s wrk runs at 64
//! connections, then 9 rounds of 2 s at one). The router process is this binary run as
//! `bench-router serve-router ...`.

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use dyno_router::{Backend, Balance, RouteTable, RouterConfig};
use dyno_tests::{bin_dir, free_port};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// As in dyno-coordinator, which the router runs in.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APP: &str = "bench";
const HOST: &str = "bench.localhost";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-router") {
        return serve_router(&args[1..]);
    }
    let mut requests = 2500usize;
    let mut seconds = 1u64;
    let mut rounds = 40usize;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => requests = it.next().context("--requests N")?.parse()?,
            "--seconds" => seconds = it.next().context("--seconds S")?.parse()?,
            "--rounds" => rounds = it.next().context("--rounds R")?.parse()?,
            "--only" => only = Some(it.next().context("--only throughput|rap")?.clone()),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    ensure_tools()?;
    let dir = tempfile::tempdir()?;
    println!(
        "bench-router: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        tool_versions()
    );
    if only.as_deref() != Some("rap") {
        ensure!(
            rounds > 0 && seconds > 0,
            "--rounds and --seconds must be at least 1"
        );
        throughput(dir.path(), seconds, rounds)?;
    }
    if only.as_deref() != Some("throughput") {
        rap_genius(dir.path(), requests)?;
    }
    Ok(())
}

// ---- processes ----

/// A child process killed when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // nginx stops its workers on SIGTERM; everything else just exits.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, cmd: &mut Command, port: u16) -> anyhow::Result<Proc> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let mut proc = Proc {
        name: name.to_string(),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = proc.child.try_wait()? {
            bail!("{name} exited with {status} before listening on {port}");
        }
        ensure!(Instant::now() < deadline, "{name} never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

fn backends(n: usize, serial: bool) -> anyhow::Result<(Vec<Proc>, Vec<u16>)> {
    let exe = bin_dir().join("bench-router-backend");
    ensure!(
        exe.exists(),
        "{} is missing: cargo build --release -p dyno-bench --bin bench-router-backend",
        exe.display()
    );
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for i in 0..n {
        let port = free_port();
        let mut cmd = Command::new(&exe);
        cmd.arg(port.to_string());
        if serial {
            cmd.arg("--serial");
        }
        procs.push(spawn(&format!("backend {}", i + 1), &mut cmd, port)?);
        ports.push(port);
    }
    Ok((procs, ports))
}

/// This binary as `serve-router`: the router in a process of its own, like nginx.
fn router(ports: &[u16], balance: &str, concurrency: u32) -> anyhow::Result<(Proc, u16)> {
    let port = free_port();
    let list: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["serve-router", &port.to_string(), balance])
        .arg(concurrency.to_string())
        .arg(list.join(","));
    let proc = spawn(&format!("router ({balance})"), &mut cmd, port)?;
    Ok((proc, port))
}

/// `bench-router serve-router PORT BALANCE CONCURRENCY ADDR,ADDR,...`
fn serve_router(args: &[String]) -> anyhow::Result<()> {
    let [port, balance, concurrency, addrs] = args else {
        bail!("usage: bench-router serve-router PORT p2c|least|random CONCURRENCY ADDR,...");
    };
    let balance = match balance.as_str() {
        "p2c" => Balance::PowerOfTwo,
        "least" => Balance::LeastOutstanding,
        "random" => Balance::Random,
        other => bail!("unknown balance {other:?}"),
    };
    let concurrency: u32 = concurrency.parse()?;
    let table = RouteTable::new();
    let backends = addrs
        .split(',')
        .enumerate()
        .map(|(i, a)| {
            Ok(Backend {
                dyno: format!("web.{}", i + 1),
                addr: a.parse()?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    table.set_backends(APP, backends);
    table.set_concurrency(APP, (concurrency > 0).then_some(concurrency));
    let config = RouterConfig {
        balance,
        // Random routing queues for tens of seconds inside dynos; let it finish.
        request_timeout: Duration::from_secs(300),
        max_queue: 1_000_000,
        ..RouterConfig::default()
    };
    let port: u16 = port.parse()?;
    // The router serves on worker threads of its own; this runtime only accepts and drains
    // log lines.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        // Log lines are made and sent as in the coordinator, then dropped.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shutdown = async move {
            tokio::select! {
                () = stop => {}
                _ = term.recv() => {}
            }
        };
        dyno_router::run(listener, table, config, Some(tx), shutdown).await?;
        Ok(())
    })
}

fn nginx(dir: &Path, name: &str, ports: &[u16], balance: &str) -> anyhow::Result<(Proc, u16)> {
    let port = free_port();
    let prefix = dir.join(format!("nginx-{name}"));
    std::fs::create_dir_all(prefix.join("logs"))?;
    let servers: String = ports
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p};\n"))
        .collect();
    let conf = format!(
        "worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log {prefix}/logs/access.log combined buffer=64k;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_requests 1000000;
  upstream dynos {{
    {balance}
{servers}    keepalive 256;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://dynos;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Request-Start $msec;
      proxy_read_timeout 300s;
    }}
  }}
}}
",
        prefix = prefix.display()
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stderr(Stdio::null());
    let proc = spawn(&format!("nginx ({name})"), &mut cmd, port)?;
    Ok((proc, port))
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        || Path::new("/usr/sbin").join(tool).is_file()
}

fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["wrk", "nginx"].into_iter().filter(|t| !which(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    ensure!(
        nix::unistd::geteuid().is_root(),
        "{missing:?} missing: install them (Debian: apt-get install -y nginx wrk)"
    );
    println!("installing {missing:?} with apt-get");
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    ensure!(update.success(), "apt-get update failed");
    let install = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "nginx",
            "wrk",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    ensure!(install.success(), "apt-get install nginx wrk failed");
    Ok(())
}

fn tool_versions() -> String {
    let out = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default()
    };
    format!("{}; {}", out("nginx", "-v"), out("wrk", "-v"))
}

// ---- 1. throughput and added latency ----

#[derive(Debug, Clone, Copy, Default)]
struct WrkResult {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

fn wrk(port: u16, threads: u32, connections: u32, seconds: u64) -> anyhow::Result<WrkResult> {
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .args(["-H", &format!("Host: {HOST}")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(out.status.success(), "wrk failed: {text}");
    parse_wrk(&text)
}

fn parse_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50_us = parse_duration_us(v).context("p50")?;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_us = parse_duration_us(v).context("p99")?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            r.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    ensure!(r.rps > 0.0, "no Requests/sec in wrk's output:\n{text}");
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Rounds of the runs at one connection (latency), and their length.
const LATENCY_ROUNDS: usize = 9;
const LATENCY_SECONDS: u64 = 2;

/// The value at quantile `q` (0..=1) of `v`.
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Throughput rounds first (the proxies back to back, in turn first), then latency rounds: a
/// run at one connection between them would put the two runs a round compares further apart.
fn throughput(dir: &Path, seconds: u64, rounds: usize) -> anyhow::Result<()> {
    let (backend_procs, ports) = backends(2, false)?;
    let (router_proc, router_port) = router(&ports, "p2c", 0)?;
    let (nginx_proc, nginx_port) = nginx(dir, "rr", &ports, "")?;
    // The process whose CPU time per request is shown: the backend itself for `direct`, the
    // proxy (nginx's master and workers) otherwise.
    let targets = [
        ("direct", ports[0], backend_procs[0].child.id()),
        ("dyno-router", router_port, router_proc.child.id()),
        ("nginx", nginx_port, nginx_proc.child.id()),
    ];
    println!(
        "\n== 1. Throughput and added latency: 2 backends, 1 KB bodies, keep-alive, wrk; \
         {rounds} rounds of {seconds} s at 64 connections, {LATENCY_ROUNDS} of \
         {LATENCY_SECONDS} s at one =="
    );
    // Warm up: connections, pools, page cache.
    for (_, port, _) in &targets {
        wrk(*port, 2, 64, 2)?;
    }
    // The router and nginx run next to each other in every round, each first in turn.
    let order = |round: usize| -> Vec<usize> {
        if round.is_multiple_of(2) {
            vec![0, 1, 2]
        } else {
            vec![2, 1, 0]
        }
    };
    let mut load: Vec<Vec<WrkResult>> = vec![Vec::new(); targets.len()];
    let mut cpu_us: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for round in 0..rounds {
        for i in order(round) {
            let before = cpu_ticks(targets[i].2);
            let run = wrk(targets[i].1, 2, 64, seconds)?;
            let used = cpu_ticks(targets[i].2).saturating_sub(before);
            // USER_HZ is 100: a tick is 10 ms.
            cpu_us[i].push(used as f64 * 10_000.0 / (run.rps * seconds as f64));
            load[i].push(run);
        }
    }
    let mut idle: Vec<Vec<WrkResult>> = vec![Vec::new(); targets.len()];
    for round in 0..LATENCY_ROUNDS {
        for i in order(round) {
            idle[i].push(wrk(targets[i].1, 1, 1, LATENCY_SECONDS)?);
        }
    }
    let stat = |runs: &[WrkResult], f: fn(&WrkResult) -> f64| median(runs.iter().map(f).collect());
    println!(
        "{:<12} {:>12} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "target", "req/s (c64)", "p50 c64", "p99 c64", "errors", "p50 c1", "p99 c1", "CPU/req"
    );
    for (i, (name, _, _)) in targets.iter().enumerate() {
        println!(
            "{:<12} {:>12.0} {:>8.0}us {:>8.0}us {:>10} {:>10.0}us {:>10.0}us {:>8.1}us",
            name,
            stat(&load[i], |r| r.rps),
            stat(&load[i], |r| r.p50_us),
            stat(&load[i], |r| r.p99_us),
            load[i]
                .iter()
                .chain(&idle[i])
                .map(|r| r.errors)
                .sum::<u64>(),
            stat(&idle[i], |r| r.p50_us),
            stat(&idle[i], |r| r.p99_us),
            median(cpu_us[i].clone()),
        );
    }
    println!(
        "CPU/req: CPU time of the target's own process(es) per request at c64 (user + system; \
         all of them share the 2 cores with wrk and the backends)"
    );
    // Per round, then the median: a slow second of the machine moves both runs of a round.
    let ratios: Vec<f64> = load[1]
        .iter()
        .zip(&load[2])
        .map(|(router, nginx)| router.rps / nginx.rps)
        .collect();
    let cpu_ratios: Vec<f64> = cpu_us[1]
        .iter()
        .zip(&cpu_us[2])
        .map(|(router, nginx)| router / nginx)
        .collect();
    let above = ratios.iter().filter(|&&r| r >= 1.0).count();
    println!(
        "dyno-router / nginx throughput: {:.3}x (goal >= 1.0x; median of the rounds' ratios, \
         quartiles {:.3}-{:.3}, {above} of {} rounds at or above 1.0; ratio of the medians \
         {:.3}x); CPU per request {:.3}x nginx's (median of the rounds' ratios)",
        median(ratios.clone()),
        quantile(ratios.clone(), 0.25),
        quantile(ratios.clone(), 0.75),
        ratios.len(),
        stat(&load[1], |r| r.rps) / stat(&load[2], |r| r.rps),
        median(cpu_ratios),
    );
    println!(
        "rounds: router {:?}, nginx {:?}",
        load[1].iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
        load[2].iter().map(|r| r.rps.round()).collect::<Vec<_>>(),
    );
    for (i, name) in [(1, "dyno-router"), (2, "nginx")] {
        // Against the direct run of the same round; one stall of the direct run would
        // otherwise make a proxy look faster than no proxy.
        let added = |f: fn(&WrkResult) -> f64| {
            median(
                idle[i]
                    .iter()
                    .zip(&idle[0])
                    .map(|(p, d)| f(p) - f(d))
                    .collect(),
            )
        };
        println!(
            "{name} added latency at 1 connection: p50 {:.0}us, p99 {:.0}us (goal p99 < 1000us; \
             median over the rounds of its figure minus the direct one's)",
            added(|r| r.p50_us),
            added(|r| r.p99_us),
        );
    }
    Ok(())
}

/// CPU time (user + system, in 10 ms ticks) used so far by `pid` and its children (nginx's
/// workers are its master's).
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, ... utime (14th), stime (15th).
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let parent = fields.get(1).and_then(|f| f.parse::<u32>().ok());
        if id == pid || parent == Some(pid) {
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            total += field(11).unwrap_or(0) + field(12).unwrap_or(0);
        }
    }
    total
}

// ---- 2. the Rap Genius experiment ----

/// splitmix64: a seeded sequence, the same on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
}

struct Workload {
    /// (arrival offset, own service time), in ms.
    requests: Vec<(f64, f64)>,
    rate_per_s: f64,
    mean_service_ms: f64,
}

const DYNOS: usize = 10;
const LOAD: f64 = 0.7;

fn workload(n: usize) -> Workload {
    let mut rng = Rng(0x5eed_2013);
    // Lognormal: median 50 ms; p99 = 50 * e^(2.326 sigma) = 3000 ms.
    let sigma = (3000.0f64 / 50.0).ln() / 2.326_347_874;
    let service: Vec<f64> = (0..n)
        .map(|_| (50.0 * (sigma * rng.normal()).exp()).min(25_000.0))
        .collect();
    let mean_service_ms = service.iter().sum::<f64>() / n as f64;
    let rate_per_s = LOAD * DYNOS as f64 / (mean_service_ms / 1000.0);
    let mut t = 0.0;
    let requests = service
        .into_iter()
        .map(|s| {
            t += -rng.unit().ln() / rate_per_s * 1000.0;
            (t, s)
        })
        .collect();
    Workload {
        requests,
        rate_per_s,
        mean_service_ms,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Outcome {
    queue_ms: Vec<f64>,
    total_ms: Vec<f64>,
    errors: usize,
}

/// Sends the workload open-loop (each request at its own time, however many are pending).
fn drive(port: u16, work: &Workload) -> anyhow::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let mut tasks = Vec::with_capacity(work.requests.len());
        for &(at_ms, service_ms) in &work.requests {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_secs_f64(at_ms / 1000.0)).await;
                let req = Request::builder()
                    .uri(format!("http://127.0.0.1:{port}/"))
                    .header("host", HOST)
                    .header("x-service-ms", format!("{service_ms:.3}"))
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let sent = Instant::now();
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                let total_ms = sent.elapsed().as_secs_f64() * 1000.0;
                (ok, total_ms, (total_ms - service_ms).max(0.0))
            }));
        }
        let mut out = Outcome {
            queue_ms: Vec::with_capacity(tasks.len()),
            total_ms: Vec::with_capacity(tasks.len()),
            errors: 0,
        };
        for task in tasks {
            let (ok, total, queue) = task.await?;
            if !ok {
                out.errors += 1;
            }
            out.total_ms.push(total);
            out.queue_ms.push(queue);
        }
        out.queue_ms.sort_by(|a, b| a.total_cmp(b));
        out.total_ms.sort_by(|a, b| a.total_cmp(b));
        Ok(out)
    })
}

fn rap_genius(dir: &Path, n: usize) -> anyhow::Result<()> {
    let work = workload(n);
    let mut sorted: Vec<f64> = work.requests.iter().map(|r| r.1).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let span_s = work.requests.last().map_or(0.0, |r| r.0) / 1000.0;
    println!(
        "\n== 2. Rap Genius: {DYNOS} single-concurrency backends, {n} requests, Poisson arrivals at \
         {:.1}/s ({:.0}% of capacity), about {span_s:.0} s per strategy ==",
        work.rate_per_s,
        LOAD * 100.0
    );
    println!(
        "service times: median {:.0} ms, p99 {:.0} ms, p99.9 {:.0} ms, mean {:.0} ms, max {:.0} ms",
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        percentile(&sorted, 99.9),
        work.mean_service_ms,
        sorted.last().copied().unwrap_or(0.0),
    );
    let (_backends, ports) = backends(DYNOS, true)?;
    type Start<'a> = Box<dyn Fn() -> anyhow::Result<(Proc, u16)> + 'a>;
    let strategies: Vec<(&str, Start)> = vec![
        (
            "dyno-router: p2c, limit 1/dyno",
            Box::new(|| router(&ports, "p2c", 1)),
        ),
        (
            "dyno-router: p2c, no limit",
            Box::new(|| router(&ports, "p2c", 0)),
        ),
        (
            "dyno-router: random",
            Box::new(|| router(&ports, "random", 0)),
        ),
        (
            "nginx random",
            Box::new(|| nginx(dir, "random", &ports, "random;")),
        ),
        (
            "nginx least_conn",
            Box::new(|| nginx(dir, "least_conn", &ports, "least_conn;")),
        ),
        (
            "nginx random two least_conn",
            Box::new(|| nginx(dir, "random2", &ports, "random two least_conn;")),
        ),
    ];
    let mut results = Vec::new();
    for (name, start) in &strategies {
        let (proc, port) = start()?;
        let began = Instant::now();
        let outcome = drive(port, &work)?;
        drop(proc);
        eprintln!(
            "  {name}: done in {:.0} s, {} errors",
            began.elapsed().as_secs_f64(),
            outcome.errors
        );
        results.push((*name, outcome));
    }
    println!(
        "{:<30} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>6}",
        "strategy (ms)", "queue p50", "p99", "p99.9", "total p50", "p99", "p99.9", "errors"
    );
    for (name, o) in &results {
        println!(
            "{:<30} {:>9.1} {:>9.1} {:>9.1} | {:>9.1} {:>9.1} {:>9.1} | {:>6}",
            name,
            percentile(&o.queue_ms, 50.0),
            percentile(&o.queue_ms, 99.0),
            percentile(&o.queue_ms, 99.9),
            percentile(&o.total_ms, 50.0),
            percentile(&o.total_ms, 99.0),
            percentile(&o.total_ms, 99.9),
            o.errors
        );
    }
    let p99 = |name: &str| {
        results
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(f64::NAN, |(_, o)| percentile(&o.queue_ms, 99.0))
    };
    let ours = p99("dyno-router: p2c, limit 1/dyno");
    println!(
        "p99 queue time: random / ours = {:.0}x (goal >= 10x); nginx random / ours = {:.0}x; \
         ours / nginx least_conn = {:.2} (goal <= 1)",
        p99("dyno-router: random") / ours,
        p99("nginx random") / ours,
        ours / p99("nginx least_conn"),
    );
    Ok(())
}
