//! Logs end to end: one merged tail of every dyno of an app through `dyno logs`, its filters,
//! history that outlives the coordinator, tails that cannot slow a dyno down, syslog drains that
//! catch up after an outage, and runtime-metrics lines. Real coordinator and agent processes.

use dyno_tests::{Platform, wait_until};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One printed log line: `2026-11-29T18:55:28.123456+00:00 app[web.1]: message`.
#[derive(Debug, Clone, PartialEq)]
struct Printed {
    time: String,
    source: String,
    process: String,
    message: String,
}

/// True for `2026-11-29T18:55:28.123456+00:00`: RFC 3339, microseconds, UTC as `+00:00`.
fn is_log_time(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 32
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && &t[26..] == "+00:00"
}

/// Parses a line of `dyno logs` text output, insisting on heroku's layout.
fn parse(line: &str) -> Printed {
    let (time, rest) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    assert!(is_log_time(time), "bad time in {line:?}");
    let (prefix, message) = rest
        .split_once("]: ")
        .unwrap_or_else(|| panic!("no SOURCE[PROCESS]: in {line:?}"));
    let (source, process) = prefix
        .split_once('[')
        .unwrap_or_else(|| panic!("no [PROCESS] in {line:?}"));
    assert!(
        source == "app" || source == "heroku",
        "source {source:?} in {line:?}"
    );
    Printed {
        time: time.to_string(),
        source: source.to_string(),
        process: process.to_string(),
        message: message.to_string(),
    }
}

fn parse_all(out: &str) -> Vec<Printed> {
    out.lines().map(parse).collect()
}

/// `N` of a `WORD N` message.
fn number(message: &str, word: &str) -> Option<u64> {
    message.strip_prefix(word)?.strip_prefix(' ')?.parse().ok()
}

/// Per dyno, the `WORD N` numbers of its app lines, in the order printed.
fn numbers(lines: &[Printed], word: &str) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.source == "app") {
        if let Some(n) = number(&l.message, word) {
            out.entry(l.process.clone()).or_default().push(n);
        }
    }
    out
}

fn assert_consecutive(process: &str, ns: &[u64]) {
    assert!(
        ns.windows(2).all(|w| w[1] == w[0] + 1),
        "{process}: lines missing, repeated or out of order: {ns:?}"
    );
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `dyno logs --tail` whose lines a thread collects.
struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Tail {
    fn start(p: &Platform, args: &[&str]) -> Tail {
        let mut child = p
            .dyno_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dyno logs --tail");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Tail {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Stops the CLI and returns every line it printed.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.snapshot()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `dyno ARGS` with its stdout on a pseudo-terminal; returns what it printed there.
fn dyno_on_a_terminal(p: &Platform, args: &[&str], env: &[(&str, &str)]) -> String {
    let nix::pty::OpenptyResult { master, slave } = nix::pty::openpty(None, None).expect("openpty");
    let mut cmd = p.dyno_command(args);
    cmd.stdout(Stdio::from(slave)).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start dyno on a terminal");
    // The only other handle on the terminal went with `cmd`; reading ends (EIO) when dyno exits.
    drop(cmd);
    let mut out = Vec::new();
    let _ = std::fs::File::from(master).read_to_end(&mut out);
    let status = child.wait().unwrap();
    assert!(status.success(), "dyno {args:?}: {status}");
    String::from_utf8(out).unwrap().replace("\r\n", "\n")
}

const MERGE_PROCFILE: &str = "worker: dyno-probe count 40 tick\nclock: dyno-probe count 40 clock\n";

#[test]
fn one_merged_tail_in_per_dyno_order_and_its_filters() {
    let p = Platform::start();
    let app = "merged";
    p.deploy(app, MERGE_PROCFILE);
    p.dyno_ok(&["ps:scale", "worker=3", "clock=1", "-a", app, "--wait"]);

    // History, then live lines, of every dyno in one stream.
    let ticking = ["worker.1", "worker.2", "worker.3"];
    let history = numbers(&parse_all(&p.logs(app)), "tick");
    let tail = Tail::start(&p, &["logs", "-a", app, "--tail", "-n", "1500"]);
    wait_until(
        "each worker's history and 20 newer lines in the tail",
        Duration::from_secs(30),
        || {
            let got = numbers(&parse_all(&tail.snapshot().join("\n")), "tick");
            ticking
                .iter()
                .all(|d| {
                    let had = history.get(*d).and_then(|n| n.last()).copied().unwrap_or(0);
                    got.get(*d)
                        .and_then(|n| n.last())
                        .is_some_and(|last| *last >= had + 20)
                })
                .then_some(())
        },
    );
    let raw = tail.stop();
    assert!(
        raw.iter().all(|l| !l.contains('\x1b')),
        "no colours when stdout is a pipe: {raw:?}"
    );
    let printed = parse_all(&raw.join("\n"));
    let ticks = numbers(&printed, "tick");
    let clocks = numbers(&printed, "clock");
    // Each dyno's lines under its own prefix, in its order, none lost or repeated across the
    // step from history to live lines.
    assert_eq!(
        ticks.keys().map(String::as_str).collect::<Vec<_>>(),
        ticking,
        "tick lines come from the workers only"
    );
    assert_eq!(
        clocks.keys().map(String::as_str).collect::<Vec<_>>(),
        ["clock.1"]
    );
    for (dyno, ns) in ticks.iter().chain(clocks.iter()) {
        assert_consecutive(dyno, ns);
    }
    for (dyno, had) in &history {
        assert_eq!(
            ticks[dyno].first(),
            had.first(),
            "the tail starts with {dyno}'s history"
        );
    }
    // The dynos' lines are interleaved as they happen, not one dyno after another.
    let app_lines: Vec<&str> = printed
        .iter()
        .filter(|l| l.source == "app")
        .map(|l| l.process.as_str())
        .collect();
    let switches = app_lines.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(switches >= 20, "{switches} switches in {app_lines:?}");
    // The platform's own lines are in the same stream.
    assert!(
        printed
            .iter()
            .any(|l| l.source == "heroku" && l.message.contains("State changed")),
        "{raw:#?}"
    );

    // On a terminal each dyno's prefix gets its own colour, foreman-style; NO_COLOR turns that off.
    let args = ["logs", "-a", app, "-n", "60", "-p", "worker", "-s", "app"];
    let coloured = dyno_on_a_terminal(&p, &args, &[]);
    let mut colour_of: BTreeMap<String, String> = BTreeMap::new();
    for l in coloured.lines() {
        let (_, rest) = l
            .split_once(" \x1b[")
            .unwrap_or_else(|| panic!("no colour: {l:?}"));
        let (code, rest) = rest.split_once('m').unwrap();
        let (prefix, _) = rest
            .split_once(":\x1b[0m ")
            .unwrap_or_else(|| panic!("{l:?}"));
        let known = colour_of
            .entry(prefix.to_string())
            .or_insert(code.to_string());
        assert_eq!(known, code, "{prefix} changed colour");
    }
    assert_eq!(
        colour_of.keys().map(String::as_str).collect::<Vec<_>>(),
        ["app[worker.1]", "app[worker.2]", "app[worker.3]"],
        "{coloured}"
    );
    let distinct: BTreeSet<&String> = colour_of.values().collect();
    assert_eq!(distinct.len(), 3, "{colour_of:?}");
    let plain = dyno_on_a_terminal(&p, &args, &[("NO_COLOR", "1")]);
    assert!(!plain.contains('\x1b'), "{plain}");
    assert_eq!(parse_all(&plain).len(), 60, "{plain}");

    // --dyno: one dyno, or with a type every dyno of it.
    let one = parse_all(&p.dyno_ok(&["logs", "-a", app, "-n", "1500", "-d", "worker.2"]));
    assert!(one.iter().any(|l| l.source == "app"), "{one:?}");
    assert!(one.iter().all(|l| l.process == "worker.2"), "{one:?}");
    assert_consecutive("worker.2", &numbers(&one, "tick")["worker.2"]);
    let clock = parse_all(&p.dyno_ok(&["logs", "-a", app, "-n", "50", "--dyno", "clock"]));
    assert!(!clock.is_empty() && clock.iter().all(|l| l.process == "clock.1"));

    // -p/--ps: a process type.
    let workers = parse_all(&p.dyno_ok(&["logs", "-a", app, "-n", "300", "-p", "worker"]));
    let procs: BTreeSet<&str> = workers.iter().map(|l| l.process.as_str()).collect();
    assert_eq!(
        procs,
        BTreeSet::from(ticking),
        "only and all the workers: {workers:?}"
    );

    // --source.
    let app_only = parse_all(&p.dyno_ok(&["logs", "-a", app, "-n", "200", "-s", "app"]));
    assert!(!app_only.is_empty() && app_only.iter().all(|l| l.source == "app"));
    let system = parse_all(&p.dyno_ok(&["logs", "-a", app, "-n", "200", "-s", "heroku"]));
    assert!(system.iter().all(|l| l.source == "heroku"), "{system:?}");
    assert!(
        system
            .iter()
            .any(|l| l.process == "worker.3" && l.message == "State changed from starting to up"),
        "{system:?}"
    );

    // --grep on the message, combined with the other filters.
    let fives = parse_all(&p.dyno_ok(&[
        "logs",
        "-a",
        app,
        "-n",
        "1500",
        "-p",
        "worker",
        "-s",
        "app",
        "--grep",
        "^tick [0-9]*5$",
    ]));
    assert!(fives.len() >= 6, "{fives:?}");
    for l in &fives {
        assert!(l.process.starts_with("worker."), "{l:?}");
        let n = number(&l.message, "tick").unwrap_or_else(|| panic!("{l:?}"));
        assert_eq!(n % 10, 5, "{l:?}");
    }

    // --json: one object per line, the API's LogLine.
    let json = p.dyno_ok(&["logs", "-a", app, "-n", "20", "-p", "worker", "--json"]);
    let objects: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(objects.len(), 20, "{json}");
    for o in &objects {
        assert_eq!(o["app"], app, "{o}");
        assert!(o["at"].as_i64().is_some_and(|t| t > 1_700_000_000_000_000));
        assert!(o["process"].as_str().unwrap().starts_with("worker."), "{o}");
        assert!(["app", "system"].contains(&o["source"].as_str().unwrap()));
    }
    assert!(
        objects
            .iter()
            .any(|o| o["source"] == "app" && o["message"].as_str().unwrap().starts_with("tick "))
    );

    // Refused filters: exit 2, a message naming the problem, nothing printed.
    let cases: &[(&[&str], &str)] = &[
        (&["--grep", "tick ("], "invalid grep pattern \"tick (\""),
        (&["-d", "worker.1", "-p", "worker"], "--ps"),
        (&["-p", "worker.1"], "--dyno worker.1"),
        (&["-s", "kernel"], "kernel"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["logs", "-a", app];
        args.extend_from_slice(extra);
        let out = p.dyno(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A pattern only the coordinator refuses (over its length limit) is bad input as well.
    let long = "a".repeat(1001);
    let out = p.dyno(&["logs", "-a", app, "--grep", &long]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("grep pattern"), "{}", stderr(&out));
    // An unknown app is a failed operation naming it.
    let out = p.dyno(&["logs", "-a", "ghost"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ghost"), "{}", stderr(&out));
}

#[test]
fn history_survives_a_coordinator_kill_9() {
    let mut p = Platform::start();
    let app = "durable-logs";
    p.deploy(app, "worker: dyno-probe count 50 tick\n");
    p.dyno_ok(&["ps:scale", "worker=1", "-a", app, "--wait"]);
    wait_until("20 ticks logged", Duration::from_secs(20), || {
        let ns = numbers(&parse_all(&p.logs(app)), "tick");
        ns.get("worker.1")
            .is_some_and(|n| n.len() >= 20)
            .then_some(())
    });
    let before: Vec<String> = p.logs(app).lines().map(String::from).collect();
    // The log writer commits within 150 ms; give it that before pulling the plug.
    std::thread::sleep(Duration::from_millis(500));
    p.kill_coordinator();
    p.start_coordinator();

    let after: Vec<String> = p.logs(app).lines().map(String::from).collect();
    let start = after
        .iter()
        .position(|l| *l == before[0])
        .unwrap_or_else(|| panic!("{:?} lost in the restart; now: {after:#?}", before[0]));
    assert_eq!(
        after[start..].get(..before.len()),
        Some(&before[..]),
        "the history before the kill comes back whole and in order"
    );
    let last_before = *numbers(&parse_all(&before.join("\n")), "tick")["worker.1"]
        .last()
        .unwrap();
    // New lines carry on after the old ones once the agent is back.
    p.wait_for_host();
    wait_until("lines after the restart", Duration::from_secs(20), || {
        let all = parse_all(&p.logs(app));
        let ns = numbers(&all, "tick").remove("worker.1")?;
        // New lines follow the restored ones: none repeated, none out of order (lines in
        // flight at the kill may be missing).
        assert!(ns.windows(2).all(|w| w[1] > w[0]), "{ns:?}");
        ns.iter().any(|n| *n > last_before + 20).then_some(())
    });
}

/// The highest `tick N` the app's log has from `dyno`.
fn latest_tick(p: &Platform, app: &str, dyno: &str) -> u64 {
    let out = p.dyno_ok(&["logs", "-a", app, "-n", "50", "-d", dyno, "-s", "app"]);
    numbers(&parse_all(&out), "tick")
        .get(dyno)
        .and_then(|n| n.iter().max().copied())
        .unwrap_or(0)
}

/// Seconds the tail below stays unread.
const STALL_SECS: usize = 5;

#[test]
fn a_stalled_tail_does_not_slow_a_dyno_writing_every_millisecond() {
    let p = Platform::start();
    let app = "stall";
    p.deploy(app, "ticker: dyno-probe count 1 tick\n");
    p.dyno_ok(&["ps:scale", "ticker=1", "-a", app, "--wait"]);
    wait_until("ticking", Duration::from_secs(20), || {
        (latest_tick(&p, app, "ticker.1") > 100).then_some(())
    });

    // A live tail that is opened and then not read at all.
    let stalled = ureq::get(&format!(
        "{}/apps/{app}/logs?lines=1&tail=true&dyno=ticker.1&source=app",
        p.url()
    ))
    .set("Authorization", &format!("Bearer {}", p.token))
    .call()
    .expect("open a tail");
    let mut samples = vec![(Instant::now(), latest_tick(&p, app, "ticker.1"))];
    for _ in 0..STALL_SECS {
        std::thread::sleep(Duration::from_secs(1));
        samples.push((Instant::now(), latest_tick(&p, app, "ticker.1")));
    }
    // A line a millisecond (a little less, with the sleep's overshoot) the whole time: every
    // second the count moves on by at least a third of the nominal rate.
    for w in samples.windows(2) {
        let ms = w[1].0.duration_since(w[0].0).as_millis() as u64;
        let lines = w[1].1.saturating_sub(w[0].1);
        assert!(
            lines * 3 >= ms,
            "only {lines} lines in {ms} ms with a stalled tail: {samples:?}"
        );
    }
    let (start, end) = (samples[0].1, samples[STALL_SECS].1);
    let stall_ms = samples[STALL_SECS]
        .0
        .duration_since(samples[0].0)
        .as_millis() as u64;
    assert!(
        (end - start) * 2 >= stall_ms,
        "{} lines in {stall_ms} ms",
        end - start
    );

    // The stalled tail's lines were held for it, not lost: reading it now yields every line
    // since it was opened, in order. Its socket's receive buffer (128 KiB) takes about 1400 of
    // them; the coordinator held the rest while the dyno carried on.
    let mut ticks = Vec::new();
    for l in BufReader::new(stalled.into_reader()).lines() {
        let v: Value = serde_json::from_str(&l.expect("read the stalled tail")).unwrap();
        assert_eq!(v["process"], "ticker.1", "{v}");
        let n = number(v["message"].as_str().unwrap(), "tick")
            .unwrap_or_else(|| panic!("not a tick: {v}"));
        ticks.push(n);
        if n >= end {
            break;
        }
    }
    assert_consecutive("ticker.1 in the stalled tail", &ticks);
    assert!(
        ticks[0] <= start + 50,
        "the tail began at {} not {start}",
        ticks[0]
    );
    assert!(ticks.len() >= 2000, "{} lines held", ticks.len());
}

/// One RFC 5424 message from a drain.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    pri: u8,
    time: String,
    host: String,
    app_name: String,
    proc_id: String,
    message: String,
}

fn parse_frame(msg: &str) -> Result<Frame, String> {
    let f: Vec<&str> = msg.splitn(8, ' ').collect();
    if f.len() != 8 {
        return Err(format!("too few fields: {msg:?}"));
    }
    let pri = f[0]
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix(">1"))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("bad PRI/VERSION: {msg:?}"))?;
    if !is_log_time(f[1]) || f[5] != "-" || f[6] != "-" {
        return Err(format!("bad header: {msg:?}"));
    }
    Ok(Frame {
        pri,
        time: f[1].into(),
        host: f[2].into(),
        app_name: f[3].into(),
        proc_id: f[4].into(),
        message: f[7].into(),
    })
}

/// A syslog receiver on TCP: octet-counted RFC 5424 frames (RFC 6587), as Heroku's drains send.
struct SyslogReceiver {
    port: u16,
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Result<Frame, String>>>>,
    accepted: Arc<Mutex<u32>>,
    thread: Option<JoinHandle<()>>,
}

impl SyslogReceiver {
    fn start(port: u16) -> SyslogReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the syslog receiver");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let thread = {
            let (stop, frames, accepted) = (stop.clone(), frames.clone(), accepted.clone());
            std::thread::spawn(move || {
                let mut conns = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            *accepted.lock().unwrap() += 1;
                            let (stop, frames) = (stop.clone(), frames.clone());
                            conns.push(std::thread::spawn(move || read_frames(s, &stop, &frames)));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                drop(listener);
                for c in conns {
                    c.join().unwrap();
                }
            })
        };
        SyslogReceiver {
            port,
            stop,
            frames,
            accepted,
            thread: Some(thread),
        }
    }

    fn frames(&self) -> Vec<Frame> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.clone().unwrap_or_else(|e| panic!("malformed frame: {e}")))
            .collect()
    }

    /// `tick N` numbers from one dyno's app lines, in arrival order.
    fn ticks(&self, dyno: &str) -> Vec<u64> {
        self.frames()
            .iter()
            .filter(|f| f.app_name == "app" && f.proc_id == dyno)
            .filter_map(|f| number(&f.message, "tick"))
            .collect()
    }

    /// Closes the listener and every connection.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for SyslogReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads `LEN SP MSG` frames until the peer hangs up or `stop`; anything else is recorded as an
/// error.
fn read_frames(s: TcpStream, stop: &AtomicBool, frames: &Mutex<Vec<Result<Frame, String>>>) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut s = s;
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        }
        while let Some(sp) = buf.iter().position(|b| *b == b' ') {
            let len: usize = match std::str::from_utf8(&buf[..sp])
                .ok()
                .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|l| l.parse().ok())
            {
                Some(len) => len,
                None => {
                    frames.lock().unwrap().push(Err(format!(
                        "no octet count before {:?}",
                        String::from_utf8_lossy(&buf[..buf.len().min(80)])
                    )));
                    return;
                }
            };
            if buf.len() < sp + 1 + len {
                break;
            }
            let msg = String::from_utf8_lossy(&buf[sp + 1..sp + 1 + len]).into_owned();
            frames.lock().unwrap().push(parse_frame(&msg));
            buf.drain(..sp + 1 + len);
        }
    }
}

#[test]
fn a_syslog_drain_gets_the_lines_and_catches_up_after_an_outage() {
    let p = Platform::start();
    let app = "drained";
    p.deploy(app, "worker: dyno-probe count 20 tick\n");
    p.dyno_ok(&["ps:scale", "worker=1", "-a", app, "--wait"]);
    assert!(
        p.dyno_ok(&["drains", "-a", app])
            .starts_with("No drains on drained")
    );

    let receiver = SyslogReceiver::start(0);
    let port = receiver.port;
    let url = format!("syslog://127.0.0.1:{port}");
    assert_eq!(
        p.dyno_ok(&["drains:add", &url, "-a", app]).trim(),
        format!("Successfully added drain {url}")
    );
    let listed = p.json(&["drains", "-a", app]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["url"], url.as_str());
    let token = listed[0]["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("d."), "{token}");
    assert_eq!(
        p.dyno_ok(&["drains", "-a", app]),
        format!("=== {app} Drains\n{url} ({token})\n")
    );
    // Bad drains: a scheme we cannot deliver to and a URL the coordinator refuses are bad input;
    // the same URL twice is a conflict.
    for (bad, code, needle) in [
        ("udp://127.0.0.1:514", 2, "scheme"),
        ("syslog://", 2, "no host"),
        (url.as_str(), 1, "already has a drain"),
    ] {
        let out = p.dyno(&["drains:add", bad, "-a", app]);
        assert_eq!(out.status.code(), Some(code), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{bad}: {}", stderr(&out));
    }

    wait_until("30 ticks at the receiver", Duration::from_secs(20), || {
        (receiver.ticks("worker.1").len() >= 30).then_some(())
    });
    let first = receiver.frames();
    for f in &first {
        assert_eq!(f.host, token, "every frame names the drain: {f:?}");
    }
    let tick = first
        .iter()
        .find(|f| f.app_name == "app")
        .expect("an app line");
    assert_eq!((tick.pri, tick.proc_id.as_str()), (190, "worker.1"));
    let before = receiver.ticks("worker.1");
    assert_consecutive("worker.1 at the receiver", &before);

    // The receiver goes away for 3 s while the dyno keeps logging.
    receiver.stop();
    let last_before = *before.last().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let logged_in_outage = latest_tick(&p, app, "worker.1");
    assert!(logged_in_outage >= last_before + 100, "{logged_in_outage}");

    // Back on the same port: what was logged during the outage arrives, then what follows.
    let receiver = SyslogReceiver::start(port);
    let want_up_to = logged_in_outage + 25;
    wait_until(
        "outage lines and newer ones delivered",
        Duration::from_secs(20),
        || (receiver.ticks("worker.1").last() >= Some(&want_up_to)).then_some(()),
    );
    let after = receiver.ticks("worker.1");
    assert_consecutive("worker.1 after the outage", &after);
    // Lines written to the old connection just as it closed may be lost; every line from half a
    // second (25 lines) after it is delivered.
    assert!(
        after[0] <= last_before + 25,
        "lines from {} to {} were lost: {after:?}",
        last_before + 1,
        after[0]
    );
    assert!(after.iter().all(|n| *n > last_before.saturating_sub(25)));

    // Removing by token stops delivery; removing by URL finds a drain too.
    let other = "https://127.0.0.1:1/logs";
    p.dyno_ok(&["drains:add", other, "-a", app]);
    assert_eq!(
        p.dyno_ok(&["drains:remove", &token, "-a", app]).trim(),
        format!("Successfully removed drain {url}")
    );
    let removed = p.json(&["drains:remove", other, "-a", app]);
    assert_eq!(removed["url"], other);
    assert!(p.dyno_ok(&["drains", "-a", app]).starts_with("No drains"));
    std::thread::sleep(Duration::from_millis(300));
    let count = receiver.frames().len();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.frames().len(), count, "frames after the removal");
    assert_eq!(*receiver.accepted.lock().unwrap(), 1);
    let out = p.dyno(&["drains:remove", "d.nope", "-a", app]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("d.nope"), "{}", stderr(&out));
}

#[test]
fn runtime_metrics_lines_once_the_feature_is_enabled() {
    let p = Platform::start_with_coordinator_args(&["--metrics-interval-secs", "1"]);
    let app = "metered";
    p.deploy(app, "worker: dyno-probe count 1000 tick\n");
    p.dyno_ok(&["ps:scale", "worker=1", "-a", app, "--wait"]);

    let labs = p.dyno_ok(&["labs", "-a", app]);
    assert!(
        labs.starts_with(&format!("=== {app} App Features\n")),
        "{labs}"
    );
    assert!(labs.contains("[ ]  runtime-metrics  "), "{labs}");
    assert_eq!(p.json(&["labs", "-a", app])[0]["enabled"], false);
    let metric_lines = || {
        parse_all(&p.dyno_ok(&[
            "logs",
            "-a",
            app,
            "-n",
            "1500",
            "-s",
            "heroku",
            "--grep",
            "sample#memory_total=",
        ]))
    };
    assert_eq!(metric_lines(), vec![]);

    assert_eq!(
        p.dyno_ok(&["labs:enable", "runtime-metrics", "-a", app])
            .trim(),
        format!("Enabling runtime-metrics for {app}... done")
    );
    let info = p.dyno_ok(&["labs:info", "runtime-metrics", "-a", app]);
    assert!(info.starts_with("=== runtime-metrics\n"), "{info}");
    assert!(info.contains("\nEnabled:      true\n"), "{info}");
    assert!(
        p.dyno_ok(&["labs", "-a", app])
            .contains("[+]  runtime-metrics")
    );

    let lines = wait_until("a runtime-metrics line", Duration::from_secs(20), || {
        Some(metric_lines()).filter(|l| !l.is_empty())
    });
    let l = &lines[0];
    assert_eq!(
        (l.source.as_str(), l.process.as_str()),
        ("heroku", "worker.1")
    );
    assert!(
        l.message
            .starts_with(&format!("source=worker.1 dyno=heroku.{app}.")),
        "{l:?}"
    );
    let field = |name: &str| {
        l.message
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("sample#{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {l:?}"))
            .to_string()
    };
    let mb = |v: String| -> f64 {
        v.strip_suffix("MB")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not MB: {v}"))
    };
    assert!(mb(field("memory_total")) > 0.0, "{l:?}");
    assert!(mb(field("memory_rss")) > 0.0, "{l:?}");
    assert_eq!(field("memory_quota"), "512.00MB", "standard-1x");
    assert!(field("load_avg_1m").parse::<f64>().is_ok(), "{l:?}");

    // Disabled: no more lines (one may still be on its way as the switch happens).
    assert_eq!(
        p.dyno_ok(&["labs:disable", "runtime-metrics", "-a", app])
            .trim(),
        format!("Disabling runtime-metrics for {app}... done")
    );
    assert_eq!(
        p.json(&["labs:info", "runtime-metrics", "-a", app])["enabled"],
        false
    );
    std::thread::sleep(Duration::from_millis(1500));
    let settled = metric_lines().len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(metric_lines().len(), settled);

    // An unknown feature is named, with what there is; a malformed name never leaves the CLI.
    let out = p.dyno(&["labs:enable", "warp-drive", "-a", app]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warp-drive") && stderr(&out).contains("runtime-metrics"),
        "{}",
        stderr(&out)
    );
    let out = p.dyno(&["labs:info", "../apps", "-a", app]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
