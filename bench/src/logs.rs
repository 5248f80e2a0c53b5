//! Log throughput and latency through the whole platform (issue 4), as a user sees them: one
//! worker dyno writes 100-byte lines, a real coordinator and agent carry them, and a
//! `dyno logs --tail -a APP` process (the real CLI, its stdout piped into this bench) prints them.
//!
//! 1. Throughput: the dyno writes LINES numbered lines (default 1,000,000) as fast as it can;
//!    lines per second from the first to the last line the tail printed, how many arrived, and
//!    how many the platform said it dropped (`Error L10 (output buffer overflow)` lines, from the
//!    agent's buffer or the coordinator's tail backlog). Per run also: each process's CPU, and
//!    where lines went: read by the agent (its /proc/PID/io), sent over its websocket (TCP_INFO
//!    of the socket), printed by the tail.
//! 2. Latency: the dyno writes `--rate` lines a second (default 10,000) for 5 s, each carrying its
//!    wall clock; this bench stamps each line as it reads it from the tail's stdout; p50/p99 of
//!    the difference. Higher rates (`bench-logs 0 --rate 100000`) find the sustained throughput.
//!
//! Each run is also read straight from the coordinator's NDJSON endpoint (no CLI), and the peer is
//! `bench-log-writer | cat` (a pipe: the upper bound for any log path on this machine).
//!
//! Runs the plain runtime, and the Linux runtime too when root and the host can isolate.
//! Run: `cargo build --release -p dyno-bench -p dyno-agent -p dyno-coordinator -p dyno-console
//! && ./target/release/bench-logs [LINES] [--isolation none|linux|both] [--rate N]`

use anyhow::{Context, Result, bail};
use dyno_tests::{Platform, bin, wait_until};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WRITER: &str = "bench-log-writer";
/// Lines a second of the latency run (`--rate`).
const LAT_RATE: u64 = 10_000;
const LAT_SECS: u64 = 5;
/// Every line the writer writes is this long, newline included.
const LINE_BYTES: usize = 100;
const GOAL_LINES_PER_SEC: f64 = 200_000.0;
const GOAL_P99_MS: f64 = 50.0;
/// A run ends when no expected line arrived for this long.
const IDLE: Duration = Duration::from_secs(15);
/// Linux's USER_HZ: the unit of utime/stime in /proc/PID/stat.
const TICKS_PER_SEC: f64 = 100.0;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flood,
    Lat,
}

/// How the consumer's lines look.
#[derive(Clone, Copy)]
enum Format {
    /// `dyno logs` output: `TIME app[worker.1]: MESSAGE`.
    Rendered,
    /// The coordinator's NDJSON: `{...,"message":"MESSAGE"}`.
    Ndjson,
    /// The writer's own lines (the `cat` peer).
    Raw,
}

#[derive(Default)]
struct Progress {
    /// The writer's start line arrived.
    started: AtomicBool,
    /// Lines read, of any kind (the tail is live once its history arrived).
    lines: AtomicU64,
    /// Expected lines read.
    wanted: AtomicU64,
    done: AtomicBool,
}

#[derive(Default)]
struct Tally {
    /// Distinct expected lines, by sequence number.
    seen: Vec<bool>,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    last_seq: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The writer's own time for all its lines (flood).
    writer_ns: Option<u64>,
    /// Sums of the counts in `Error L10` lines: the agent's buffer, the coordinator's tail.
    l10_agent: u64,
    l10_tail: u64,
    delays_ms: Vec<f64>,
    started: bool,
    done: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn message(line: &[u8], format: Format) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    match format {
        Format::Raw => line,
        Format::Rendered => find(line, b"]: ").map_or(line, |i| &line[i + 3..]),
        Format::Ndjson => match find(line, b"\"message\":\"") {
            Some(i) => {
                let m = &line[i + 11..];
                m.iter().position(|&b| b == b'"').map_or(m, |e| &m[..e])
            }
            None => line,
        },
    }
}

/// The number right after `marker` in `text`.
fn number_after(text: &[u8], marker: &[u8]) -> Option<u64> {
    let rest = &text[find(text, marker)? + marker.len()..];
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn field(msg: &[u8], i: usize) -> Option<u64> {
    let f = msg.split(|&b| b == b' ').nth(i)?;
    std::str::from_utf8(f).ok()?.parse().ok()
}

impl Tally {
    fn new(expected: u64) -> Tally {
        Tally {
            seen: vec![false; expected as usize + 1],
            ..Tally::default()
        }
    }

    /// Counts one line; true when it was an expected one.
    fn line(&mut self, msg: &[u8], kind: Kind, at: Instant, recv_ns: u64) -> bool {
        let (prefix, start, done) = match kind {
            Kind::Flood => (&b"flood "[..], &b"flood-start "[..], &b"flood-done "[..]),
            Kind::Lat => (&b"lat "[..], &b"paced-start "[..], &b"paced-done "[..]),
        };
        if msg.starts_with(start) {
            self.started = true;
            false
        } else if msg.starts_with(prefix) {
            let Some(seq) = field(msg, 1) else {
                return false;
            };
            if let Some(slot) = self.seen.get_mut(seq as usize) {
                if *slot {
                    self.duplicates += 1;
                } else {
                    *slot = true;
                    self.unique += 1;
                }
            }
            if seq < self.last_seq {
                self.out_of_order += 1;
            }
            self.last_seq = seq;
            self.first.get_or_insert(at);
            self.last = Some(at);
            if kind == Kind::Lat
                && let Some(sent) = field(msg, 2)
            {
                self.delays_ms
                    .push((recv_ns as i64 - sent as i64) as f64 / 1e6);
            }
            true
        } else if msg.starts_with(done) {
            if kind == Kind::Flood {
                self.writer_ns = field(msg, 2);
            }
            self.done = true;
            true
        } else {
            if find(msg, b"Error L10").is_some() {
                if let Some(n) = number_after(msg, b"-> ") {
                    self.l10_agent += n;
                } else if let Some(n) = number_after(msg, b"lost ") {
                    self.l10_tail += n;
                }
            }
            false
        }
    }
}

/// Reads `r` until the writer's done line, the end of the stream, or `IDLE` without an expected
/// line (`4 * IDLE` before the first; checked as other lines arrive: a silent stream is ended by
/// the caller).
fn read_stream(
    r: impl Read,
    format: Format,
    kind: Kind,
    expected: u64,
    progress: &Progress,
) -> Tally {
    let mut tally = Tally::new(expected);
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut buf = Vec::with_capacity(256);
    let mut last_wanted = Instant::now();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let recv_ns = now_ns();
        let at = Instant::now();
        progress.lines.fetch_add(1, Ordering::Relaxed);
        let wanted = tally.line(message(&buf, format), kind, at, recv_ns);
        if tally.started {
            progress.started.store(true, Ordering::Release);
        }
        let patience = if tally.first.is_some() {
            IDLE
        } else {
            4 * IDLE
        };
        if wanted {
            last_wanted = at;
            progress.wanted.fetch_add(1, Ordering::Relaxed);
        } else if at - last_wanted > patience {
            break;
        }
        if tally.done {
            break;
        }
    }
    progress.done.store(true, Ordering::Release);
    tally
}

/// Where a run's lines are read from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Consumer {
    /// `dyno logs --tail -n 1 -a APP`, stdout piped into this process.
    Cli,
    /// `GET /apps/APP/logs?tail=true` read here directly: the platform without the CLI.
    Http,
}

impl Consumer {
    fn label(self) -> &'static str {
        match self {
            Consumer::Cli => "dyno logs --tail",
            Consumer::Http => "raw NDJSON tail (no CLI)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Consumer::Cli => "cli",
            Consumer::Http => "http",
        }
    }
}

struct Reading {
    thread: Option<JoinHandle<Tally>>,
    progress: Arc<Progress>,
    child: Option<Child>,
}

impl Reading {
    fn start(
        p: &Platform,
        app: &str,
        consumer: Consumer,
        kind: Kind,
        expected: u64,
    ) -> Result<Reading> {
        let progress = Arc::new(Progress::default());
        let prog = progress.clone();
        match consumer {
            Consumer::Cli => {
                let stderr = std::fs::File::create(p.dir.path().join(format!("tail-{app}.err")))?;
                let mut child = Command::new(bin("dyno"))
                    .args(["logs", "--tail", "-n", "1", "-a", app])
                    .env("DYNO_COORDINATOR", p.url())
                    .env("DYNO_TOKEN", &p.token)
                    .env("XDG_CONFIG_HOME", p.dir.path().join("config"))
                    .env("HOME", p.dir.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(stderr)
                    .spawn()
                    .context("start `dyno logs --tail`")?;
                let out = child.stdout.take().expect("piped stdout");
                let thread = std::thread::spawn(move || {
                    read_stream(out, Format::Rendered, kind, expected, &prog)
                });
                Ok(Reading {
                    thread: Some(thread),
                    progress,
                    child: Some(child),
                })
            }
            Consumer::Http => {
                let agent = ureq::AgentBuilder::new().timeout_read(IDLE).build();
                let resp = agent
                    .get(&format!("{}/apps/{app}/logs", p.url()))
                    .query("lines", "1")
                    .query("tail", "true")
                    .set("Authorization", &format!("Bearer {}", p.token))
                    .call()
                    .context("GET the log tail")?;
                let thread = std::thread::spawn(move || {
                    read_stream(resp.into_reader(), Format::Ndjson, kind, expected, &prog)
                });
                Ok(Reading {
                    thread: Some(thread),
                    progress,
                    child: None,
                })
            }
        }
    }

    /// Waits for the tail's history (so it is subscribed before the dyno writes).
    fn wait_live(&self) {
        let t0 = Instant::now();
        while self.progress.lines.load(Ordering::Relaxed) == 0
            && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the done line, or `IDLE` without progress; then stops the consumer (and shows
    /// what the CLI said on stderr, if anything).
    fn finish(mut self, p: &Platform, app: &str) -> Result<Tally> {
        let mut seen = 0;
        let mut moved = Instant::now();
        while !self.progress.done.load(Ordering::Acquire) {
            let now = self.progress.wanted.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                moved = Instant::now();
            } else if moved.elapsed() > IDLE + Duration::from_secs(5) {
                // A silent CLI: killing it ends the reader; the HTTP read times out by itself.
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                }
                moved = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let err = std::fs::read_to_string(p.dir.path().join(format!("tail-{app}.err")))
                .unwrap_or_default();
            for l in err.lines().take(5) {
                println!("  [{app}: dyno logs stderr] {l}");
            }
        }
        self.thread
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU seconds of a process (all its threads).
fn cpu_secs(pid: u32) -> f64 {
    stat_ticks(&format!("/proc/{pid}/stat")) as f64 / TICKS_PER_SEC
}

fn stat_ticks(path: &str) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let f = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime: fields 14 and 15, counted from the state (field 3) here.
    f(11) + f(12)
}

/// CPU seconds of a process's threads, summed by thread name.
fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let ticks = stat_ticks(&dir.join("stat").to_string_lossy());
        *out.entry(comm.trim().to_string()).or_insert(0.0) += ticks as f64 / TICKS_PER_SEC;
    }
    out
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    while let Some(up) = parent(pid).filter(|&p| p > 1) {
        if up == ancestor {
            return true;
        }
        pid = up;
    }
    false
}

/// The dyno's writer process: `bench-log-writer MODE ...` below the agent.
fn writer_pid(mode: &str, agent: u32) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if argv.first().is_some_and(|a| a.ends_with(WRITER.as_bytes()))
            && argv.get(1) == Some(&mode.as_bytes())
            && descends_from(pid, agent)
        {
            return Some(pid);
        }
    }
    None
}

/// `rchar` of /proc/PID/io: bytes through read(2)-family calls. The agent reads its dyno's output
/// with read (pipe) or pread (file), so this counts the lines it captured.
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The socket inodes of `/proc/net/tcp` whose remote port is `port`, established.
fn tcp_inodes_to(port: u16) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let rem_port = u16::from_str_radix(f.get(2)?.rsplit_once(':')?.1, 16).ok()?;
            (rem_port == port && *f.get(3)? == "01").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// A duplicate of the agent's websocket to the coordinator (pidfd_getfd), to read its TCP_INFO:
/// the bytes the agent sent are the log frames it sent, as the agent counts nothing itself.
/// None when this kernel or this user cannot (then that stage is not shown).
struct AgentSocket(std::os::fd::OwnedFd);

impl AgentSocket {
    fn open(agent: u32, api_port: u16) -> Option<AgentSocket> {
        let inodes = tcp_inodes_to(api_port);
        let target = std::fs::read_dir(format!("/proc/{agent}/fd"))
            .ok()?
            .flatten()
            .find_map(|e| {
                let link = std::fs::read_link(e.path()).ok()?;
                let inode: u64 = link
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                inodes
                    .contains(&inode)
                    .then(|| e.file_name().to_str()?.parse::<i32>().ok())?
            })?;
        use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
        let pidfd = pidfd_open(
            Pid::from_raw(i32::try_from(agent).ok()?)?,
            PidfdFlags::empty(),
        )
        .ok()?;
        let fd = pidfd_getfd(&pidfd, target, PidfdGetfdFlags::empty()).ok()?;
        Some(AgentSocket(fd))
    }

    /// `tcpi_bytes_acked`: sent and acknowledged by the coordinator's kernel.
    fn bytes_sent(&self) -> u64 {
        /// Its offset in the kernel's `struct tcp_info` (stable ABI since Linux 4.1).
        const BYTES_ACKED: usize = 120;
        let mut buf = [0u8; 256];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `buf` and updates `len`.
        let r = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r != 0 || (len as usize) < BYTES_ACKED + 8 {
            return 0;
        }
        u64::from_ne_bytes(
            buf[BYTES_ACKED..BYTES_ACKED + 8]
                .try_into()
                .expect("8 bytes"),
        )
    }
}

#[derive(Clone, Copy)]
struct Pids {
    agent: u32,
    coordinator: u32,
    cli: Option<u32>,
    api_port: u16,
}

/// CPU seconds of every process of a run, and the agent's I/O, at one moment.
struct Snapshot {
    agent: f64,
    coordinator: f64,
    agent_threads: BTreeMap<String, f64>,
    coordinator_threads: BTreeMap<String, f64>,
    cli: f64,
    bench: f64,
}

impl Snapshot {
    fn take(pids: Pids) -> Snapshot {
        Snapshot {
            agent: cpu_secs(pids.agent),
            coordinator: cpu_secs(pids.coordinator),
            agent_threads: thread_cpu(pids.agent),
            coordinator_threads: thread_cpu(pids.coordinator),
            cli: pids.cli.map_or(0.0, cpu_secs),
            bench: cpu_secs(std::process::id()),
        }
    }
}

struct Sample {
    at: Instant,
    agent_read: u64,
    agent_sent: Option<u64>,
    tail: u64,
}

/// What a sampler saw from the writer's start line to the end of the run.
struct Sampled {
    before: Snapshot,
    after: Snapshot,
    samples: Vec<Sample>,
}

/// From the writer's `flood-start` line (the dyno has started; its flood begins a second later)
/// until the reader is done: a snapshot at both ends, and the agent's bytes read and sent and the
/// tail's count every 10 ms. The CLI's CPU is read here, before the run ends by killing it.
fn sample_run(pids: Pids, progress: &Progress) -> Option<Sampled> {
    while !progress.started.load(Ordering::Acquire) {
        if progress.done.load(Ordering::Acquire) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let socket = AgentSocket::open(pids.agent, pids.api_port);
    let before = Snapshot::take(pids);
    let mut samples = Vec::new();
    let mut cli = before.cli;
    loop {
        let done = progress.done.load(Ordering::Acquire);
        samples.push(Sample {
            at: Instant::now(),
            agent_read: bytes_read(pids.agent),
            agent_sent: socket.as_ref().map(AgentSocket::bytes_sent),
            tail: progress.wanted.load(Ordering::Relaxed),
        });
        cli = cli.max(pids.cli.map_or(0.0, cpu_secs));
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut after = Snapshot::take(pids);
    after.cli = after.cli.max(cli);
    Some(Sampled {
        before,
        after,
        samples,
    })
}

/// Units (lines) a counter moved by in a run, and its rate while it moved: 98% of the total over
/// the time from 1% to 99% of it, so neither the wait before nor a slow last trickle counts.
fn stage(samples: &[Sample], value: impl Fn(&Sample) -> u64, per_line: f64) -> (f64, f64) {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return (f64::NAN, f64::NAN);
    };
    let base = value(first);
    let total = value(last).saturating_sub(base) as f64;
    let when = |fraction: f64| {
        samples
            .iter()
            .find(|s| value(s).saturating_sub(base) as f64 >= fraction * total)
            .map(|s| s.at)
    };
    let rate = match (when(0.01), when(0.99)) {
        (Some(a), Some(b)) if b > a => 0.98 * total / per_line / (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    (total / per_line, rate)
}

fn threads_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    let mut parts: Vec<(f64, &str)> = after
        .iter()
        .map(|(k, v)| (v - before.get(k).copied().unwrap_or(0.0), k.as_str()))
        .filter(|(d, _)| *d >= 0.05)
        .collect();
    parts.sort_by(|a, b| b.0.total_cmp(&a.0));
    parts
        .iter()
        .map(|(d, k)| format!("{k} {d:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes one flood line takes in the agent's `Logs` frame (its JSON and a comma).
fn ws_bytes_per_line(app: &str) -> f64 {
    let line = dyno_shared::logline::LogLine {
        at: dyno_shared::time::now_micros(),
        app: app.to_string(),
        source: dyno_shared::logline::LogSource::App,
        process: "worker.1".into(),
        message: format!("flood {:010} {}", 1, "x".repeat(LINE_BYTES - 18)),
    };
    serde_json::to_string(&line).map_or(f64::NAN, |j| j.len() as f64 + 1.0)
}

fn scale(p: &Platform, app: &str, n: u32) -> Result<()> {
    ureq::post(&format!("{}/apps/{app}/formation/scale", p.url()))
        .set("Authorization", &format!("Bearer {}", p.token))
        .send_json(serde_json::json!({"args": [format!("worker={n}")]}))
        .with_context(|| format!("scale {app} worker={n}"))?;
    Ok(())
}

fn deploy(p: &Platform, app: &str, command: &str) -> Result<()> {
    let dir = p.dir.path().join("src").join(app);
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::copy(bin(WRITER), dir.join("bin").join(WRITER))?;
    std::fs::write(dir.join("Procfile"), format!("worker: {command}\n"))?;
    p.dyno_ok(&["apps:create", app]);
    p.dyno_ok(&["deploy", dir.to_str().context("utf-8 path")?, "-a", app]);
    Ok(())
}

fn stop(p: &Platform, app: &str) -> Result<()> {
    scale(p, app, 0)?;
    wait_until(
        &format!("{app} scaled to 0"),
        Duration::from_secs(60),
        || p.dynos(app).is_empty().then_some(()),
    );
    Ok(())
}

struct FloodResult {
    label: String,
    tally: Tally,
    written: u64,
    notes: Vec<String>,
}

/// One dyno floods `n` lines; `consumer` reads them.
fn flood(p: &Platform, runtime: &str, consumer: Consumer, n: u64) -> Result<FloodResult> {
    let app = format!("flood-{runtime}-{}", consumer.short());
    deploy(p, &app, &format!("{WRITER} flood {n}"))?;
    let reading = Reading::start(p, &app, consumer, Kind::Flood, n)?;
    reading.wait_live();
    let pids = Pids {
        agent: p.agent_pid().context("the agent runs")?,
        coordinator: p.coordinator_pid().context("the coordinator runs")?,
        cli: reading.child.as_ref().map(Child::id),
        api_port: p.api_port,
    };
    scale(p, &app, 1)?;
    let progress = reading.progress.clone();
    let sampler = std::thread::spawn(move || sample_run(pids, &progress));
    let tally = reading.finish(p, &app)?;
    let sampled = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let writer = writer_pid("flood", pids.agent).map_or(f64::NAN, cpu_secs);
    stop(p, &app)?;
    let mut notes = Vec::new();
    if let Some(Sampled {
        before: b,
        after: a,
        samples,
    }) = sampled
    {
        let cli = match consumer {
            Consumer::Cli => format!(", dyno logs {:.1}", a.cli - b.cli),
            Consumer::Http => String::new(),
        };
        notes.push(format!(
            "CPU s: writer {writer:.1}, agent {:.1} [{}], coordinator {:.1} [{}]{cli}, bench reader {:.1}",
            a.agent - b.agent,
            threads_delta(&b.agent_threads, &a.agent_threads),
            a.coordinator - b.coordinator,
            threads_delta(&b.coordinator_threads, &a.coordinator_threads),
            a.bench - b.bench,
        ));
        let (read, read_rate) = stage(&samples, |s| s.agent_read, LINE_BYTES as f64);
        let (tail, tail_rate) = stage(&samples, |s| s.tail, 1.0);
        let mut line = format!(
            "stages: agent read {} lines ({}/s)",
            thousands(read as u64),
            thousands(read_rate as u64)
        );
        if samples.iter().all(|s| s.agent_sent.is_some()) {
            let per_line = ws_bytes_per_line(&app);
            let (sent, sent_rate) = stage(&samples, |s| s.agent_sent.unwrap_or(0), per_line);
            line.push_str(&format!(
                " -> sent ~{} to the coordinator ({}/s; the agent dropped ~{})",
                thousands(sent as u64),
                thousands(sent_rate as u64),
                thousands((read - sent).max(0.0) as u64),
            ));
            line.push_str(&format!(
                " -> tail got {} ({}/s; the coordinator dropped ~{})",
                thousands(tail as u64),
                thousands(tail_rate as u64),
                thousands((sent - tail).max(0.0) as u64),
            ));
        } else {
            line.push_str(&format!(
                " -> tail got {} ({}/s) [the agent's socket could not be read: no pidfd_getfd]",
                thousands(tail as u64),
                thousands(tail_rate as u64),
            ));
        }
        notes.push(line);
    }
    Ok(FloodResult {
        label: format!("{runtime:<6} {}", consumer.label()),
        tally,
        written: n,
        notes,
    })
}

struct LatResult {
    label: String,
    tally: Tally,
    written: u64,
}

fn latency(p: &Platform, runtime: &str, consumer: Consumer, rate: u64) -> Result<LatResult> {
    let app = format!("lat-{runtime}-{}", consumer.short());
    deploy(p, &app, &format!("{WRITER} paced {rate} {LAT_SECS}"))?;
    let total = rate * LAT_SECS;
    let reading = Reading::start(p, &app, consumer, Kind::Lat, total)?;
    reading.wait_live();
    scale(p, &app, 1)?;
    let tally = reading.finish(p, &app)?;
    stop(p, &app)?;
    Ok(LatResult {
        label: format!("{runtime:<6} {}", consumer.label()),
        tally,
        written: total,
    })
}

/// The peer: `bench-log-writer ARGS --exit | cat`, cat's stdout read here.
fn through_cat(args: &[String], kind: Kind, expected: u64) -> Result<Tally> {
    let mut writer = Command::new(bin(WRITER))
        .args(args)
        .arg("--exit")
        .stdout(Stdio::piped())
        .spawn()
        .context("start the writer")?;
    let mut cat = Command::new("cat")
        .stdin(writer.stdout.take().expect("piped"))
        .stdout(Stdio::piped())
        .spawn()
        .context("start cat")?;
    let out = cat.stdout.take().expect("piped");
    let progress = Progress::default();
    let tally = read_stream(out, Format::Raw, kind, expected, &progress);
    writer.wait()?;
    cat.wait()?;
    Ok(tally)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_flood_header() {
    println!(
        "{:<32} {:>10} {:>11} {:>10} {:>13} {:>11} {:>9} {:>9}",
        "runtime consumer",
        "lines/s",
        "received",
        "missing",
        "L10 agt/tail",
        "unreported",
        "first→last",
        "writer"
    );
}

fn print_flood(label: &str, t: &Tally, written: u64) {
    let secs = match (t.first, t.last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    let rate = t.unique as f64 / secs;
    let missing = written - t.unique;
    let reported = t.l10_agent + t.l10_tail;
    let unaccounted = missing as i64 - reported as i64;
    let writer = t
        .writer_ns
        .map_or("?".to_string(), |ns| format!("{:.2}s", ns as f64 / 1e9));
    println!(
        "{label:<32} {:>10} {:>11} {:>10} {:>13} {:>11} {:>8.2}s {:>9}{}",
        thousands(rate as u64),
        thousands(t.unique),
        thousands(missing),
        format!("{}/{}", thousands(t.l10_agent), thousands(t.l10_tail)),
        unaccounted,
        secs,
        writer,
        if t.done {
            ""
        } else {
            "  (no done line: timed out)"
        }
    );
    if t.duplicates > 0 || t.out_of_order > 0 {
        println!(
            "{:<32} !! {} duplicate and {} out-of-order lines",
            "", t.duplicates, t.out_of_order
        );
    }
}

fn print_lat_header() {
    println!(
        "{:<32} {:>8} {:>8} {:>8} {:>8} {:>8} {:>17} {:>8}",
        "runtime consumer", "p50", "p90", "p99", "p99.9", "max", "received/written", "L10"
    );
}

fn print_lat(label: &str, t: &Tally, written: u64) {
    let mut d = t.delays_ms.clone();
    d.sort_by(f64::total_cmp);
    println!(
        "{label:<32} {:>6.2}ms {:>6.2}ms {:>6.2}ms {:>6.2}ms {:>6.2}ms {:>17} {:>8}{}",
        pct(&d, 0.5),
        pct(&d, 0.9),
        pct(&d, 0.99),
        pct(&d, 0.999),
        d.last().copied().unwrap_or(f64::NAN),
        format!("{}/{}", thousands(t.unique), thousands(written)),
        t.l10_agent + t.l10_tail,
        if t.done { "" } else { "  (no done line)" }
    );
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "nproc {}, {model}, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}

struct Args {
    lines: u64,
    rate: u64,
    /// As given.
    isolation: Option<String>,
    runtimes: Vec<&'static str>,
    skipped: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut lines = 1_000_000u64;
    let mut rate = LAT_RATE;
    let mut isolation = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--isolation" => isolation = it.next(),
            "--rate" => {
                rate = it
                    .next()
                    .and_then(|r| r.parse().ok())
                    .filter(|&r| r > 0)
                    .context("--rate needs lines per second")?
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench-logs [LINES] [--isolation none|linux|both] [--rate LINES_PER_SEC]\n\
                     LINES (default 1000000; 0 skips the throughput runs) are flooded by one dyno;\n\
                     the latency runs write --rate lines a second (default {LAT_RATE}) for {LAT_SECS} s.\n\
                     Default isolation: both when root and the host can isolate, else none."
                );
                std::process::exit(0);
            }
            s => lines = s.parse().with_context(|| format!("LINES: {s:?}"))?,
        }
    }
    let can_isolate = if dyno_tests::is_root() {
        dyno_agent::linux::LinuxRuntime::check().map_err(|e| e.to_string())
    } else {
        Err("not root".to_string())
    };
    let (runtimes, skipped) = match (isolation.as_deref(), &can_isolate) {
        (Some("none"), _) => (vec!["plain"], None),
        (Some("linux"), Ok(_)) => (vec!["linux"], None),
        (Some("both") | None, Ok(_)) => (vec!["plain", "linux"], None),
        (None, Err(e)) => (vec!["plain"], Some(format!("linux isolation skipped: {e}"))),
        (Some("linux" | "both"), Err(e)) => bail!("--isolation linux: this host cannot: {e}"),
        (Some(other), _) => bail!("--isolation {other:?}: expected none, linux or both"),
    };
    Ok(Args {
        lines,
        rate,
        isolation,
        runtimes,
        skipped,
    })
}

fn platform(runtime: &str) -> Platform {
    let mut args = vec!["--memory-mb", "65536"];
    if runtime == "linux" {
        // Stop the dynos with the agent: nothing may outlive the bench.
        args.extend(["--isolation", "linux", "--on-exit", "stop"]);
    }
    Platform::start_with("0,1,2", &args)
}

fn print_throughput(n: u64, floods: &[FloodResult], cat_flood: &Tally) {
    println!();
    println!(
        "1. Throughput: {} lines written as fast as possible (goal {} lines/s at the tail)",
        thousands(n),
        thousands(GOAL_LINES_PER_SEC as u64)
    );
    print_flood_header();
    for r in floods {
        print_flood(&r.label, &r.tally, r.written);
    }
    print_flood("peer   writer | cat (a pipe)", cat_flood, n);
    for l in [
        "  lines/s: distinct lines received / time from the first to the last; missing = written -",
        "  received; L10 agt/tail = drops the agent's buffer / the coordinator's tail backlog reported",
        "  in `Error L10` lines; unreported = missing - L10: lines whose L10 notice was itself dropped",
        "  (the agent's notices travel the same path); writer = the dyno's own time to write them all.",
        "  Per run, from the dyno's start line to the end (agent read: its /proc/PID/io rchar; sent: the",
        "  TCP_INFO bytes_acked of its websocket, over the JSON size of one line):",
    ] {
        println!("{l}");
    }
    for r in floods {
        println!("    {}:", r.label.trim_end());
        for note in &r.notes {
            println!("      {note}");
        }
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let n = args.lines;
    let rate = args.rate;
    // Fail early, before any platform starts.
    for b in [WRITER, "dyno", "dyno-agent", "dyno-coordinator"] {
        let path = dyno_tests::bin_dir().join(b);
        if !path.exists() {
            bail!("{} is not built", path.display());
        }
    }
    println!(
        "bench-logs: one worker dyno writing 100-byte lines, read from the stdout of `dyno logs --tail`"
    );
    println!("machine: {}", machine());
    println!(
        "load average at start: {} (other work on this machine skews every figure)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "runtimes: {} (plain = --isolation none; linux = --isolation linux, output through a file)",
        args.runtimes.join(", ")
    );
    if let Some(s) = &args.skipped {
        println!("{s}");
    }
    let mut repro = format!("./target/release/bench-logs {n}");
    if let Some(i) = &args.isolation {
        repro.push_str(&format!(" --isolation {i}"));
    }
    if rate != LAT_RATE {
        repro.push_str(&format!(" --rate {rate}"));
    }
    println!(
        "reproduce: cargo build --release -p dyno-bench -p dyno-agent -p dyno-coordinator -p dyno-console && {repro}"
    );

    let mut floods = Vec::new();
    let mut lats = Vec::new();
    for runtime in &args.runtimes {
        let p = platform(runtime);
        if n > 0 {
            floods.push(flood(&p, runtime, Consumer::Cli, n)?);
            floods.push(flood(&p, runtime, Consumer::Http, n)?);
        }
        lats.push(latency(&p, runtime, Consumer::Cli, rate)?);
        lats.push(latency(&p, runtime, Consumer::Http, rate)?);
        drop(p);
    }
    let cat_flood = if n > 0 {
        Some(through_cat(
            &["flood".into(), n.to_string()],
            Kind::Flood,
            n,
        )?)
    } else {
        None
    };
    let cat_lat = through_cat(
        &["paced".into(), rate.to_string(), LAT_SECS.to_string()],
        Kind::Lat,
        rate * LAT_SECS,
    )?;

    if let Some(cat_flood) = &cat_flood {
        print_throughput(n, &floods, cat_flood);
    }
    println!();
    println!(
        "2. Latency: {} lines/s for {LAT_SECS} s, write -> read from the consumer's stdout (goal p99 < {GOAL_P99_MS:.0} ms at 10,000/s)",
        thousands(rate)
    );
    print_lat_header();
    for r in &lats {
        print_lat(&r.label, &r.tally, r.written);
    }
    print_lat("peer   writer | cat (a pipe)", &cat_lat, rate * LAT_SECS);
    println!(
        "  delay = the bench's clock when it read the line - the clock the dyno wrote into it; L10 = lines said dropped."
    );
    Ok(())
}
