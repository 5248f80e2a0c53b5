//! dyno-probe: runs inside a dyno and reports what it sees; also the bundled sample app.
//! std only (plus nix for `ignore-term`), so it starts fast and copies anywhere.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const USAGE: &str = "usage: dyno-probe MODE [ARGS]
modes:
  web            HTTP server on $PORT (GET /, /sleep?ms=N, /exit?code=N, /hang: never answer again)
  worker         print `worker tick N` every second
  sleep SECS     sleep, then exit 0
  exit CODE      print `exiting with CODE` and exit with it
  now            print the wall clock in ns (start benchmarks)
  echo ARGS...   print the arguments joined by spaces
  heartbeat FILE SECS  touch FILE every 200 ms for SECS seconds, then hang
  env            print KEY=VALUE lines, sorted
  ignore-term    ignore SIGTERM and sleep forever
  spam N         print N numbered lines as fast as possible
  count MS [WORD]  print `WORD N` (N = 1, 2, ...; WORD defaults to count) every MS ms
  report         print one JSON object describing the dyno's view of the system";

/// A tiny JSON value: enough for the probe's answers without a serde dependency.
enum Json {
    Null,
    Bool(bool),
    Num(i64),
    Str(String),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }

    fn opt(s: Option<String>) -> Json {
        s.map(Json::Str).unwrap_or(Json::Null)
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(&n.to_string()),
            Json::Str(s) => quote(s, out),
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    quote(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    fn render(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn die_usage(msg: &str) -> ! {
    eprintln!("dyno-probe: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let rest = &args[args.len().min(1)..];
    match mode {
        "web" => web(),
        "worker" => worker(),
        "sleep" => {
            let secs: f64 = rest
                .first()
                .and_then(|s| s.parse().ok())
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .unwrap_or_else(|| die_usage("sleep needs SECS"));
            std::thread::sleep(Duration::from_secs_f64(secs));
        }
        "exit" => {
            let code: i32 = rest
                .first()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| die_usage("exit needs CODE"));
            say(&format!("exiting with {code}"));
            std::process::exit(code);
        }
        "echo" => say(&rest.join(" ")),
        // Touches FILE (under the working directory) every 200 ms for SECS seconds, then stops
        // touching it but keeps running: a worker whose loop hung.
        "heartbeat" => {
            let (Some(file), Some(secs)) = (
                rest.first(),
                rest.get(1).and_then(|s| s.parse::<f64>().ok()),
            ) else {
                die_usage("heartbeat needs FILE SECS");
            };
            let until = std::time::Instant::now() + Duration::from_secs_f64(secs);
            while std::time::Instant::now() < until {
                if let Err(e) = std::fs::write(file, b"beat") {
                    eprintln!("dyno-probe: cannot touch {file}: {e}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            say("heartbeat stopped; hanging");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        // The wall clock in ns as early as main runs: start-latency benchmarks read it.
        "now" => say(&std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_string()),
        "env" => {
            let vars: BTreeMap<String, String> = std::env::vars().collect();
            let mut out = std::io::stdout().lock();
            for (k, v) in vars {
                let _ = writeln!(out, "{k}={v}");
            }
            let _ = out.flush();
        }
        "ignore-term" => ignore_term(),
        "spam" => {
            let n: u64 = rest
                .first()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| die_usage("spam needs N"));
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for i in 1..=n {
                if writeln!(out, "spam line {i}").is_err() {
                    break;
                }
            }
            let _ = out.flush();
        }
        "count" => {
            let ms: u64 = rest
                .first()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| die_usage("count needs MS"));
            count(ms, rest.get(1).map_or("count", String::as_str));
        }
        "report" => say(&report().render()),
        "" => die_usage("no mode given"),
        other => die_usage(&format!("unknown mode {other:?}")),
    }
}

fn worker() -> ! {
    let mut n: u64 = 0;
    loop {
        n += 1;
        say(&format!("worker tick {n}"));
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Each line waits for the one before it: a dyno whose output blocks falls behind for good.
fn count(ms: u64, word: &str) -> ! {
    let mut n: u64 = 0;
    loop {
        n += 1;
        say(&format!("{word} {n}"));
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn ignore_term() -> ! {
    // Blocked rather than ignored, which takes no unsafe call: it stays pending and is never
    // delivered. This process has no other thread to take it, and starts no child.
    let mut term = nix::sys::signal::SigSet::empty();
    term.add(nix::sys::signal::Signal::SIGTERM);
    if let Err(err) = term.thread_block() {
        eprintln!("dyno-probe: cannot block SIGTERM: {err}");
        std::process::exit(1);
    }
    say("ignoring SIGTERM");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

static HUNG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn web() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dyno-probe: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    say(&format!("listening on {port}"));
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let port = port.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &port) {
                        eprintln!("dyno-probe: connection error: {e}");
                    }
                });
            }
            Err(e) => eprintln!("dyno-probe: accept failed: {e}"),
        }
    }
}

struct Request {
    method: String,
    target: String,
    /// HTTP/1.0 closes after each response unless it asks otherwise.
    http10: bool,
    headers: Vec<(String, String)>,
}

const MAX_HEAD_BYTES: usize = 64 * 1024;

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    let mut total = 0;
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    total += line.len();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let http10 = parts.next() == Some("HTTP/1.0");
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        total += h.len();
        if total > MAX_HEAD_BYTES {
            return Err(std::io::Error::other("request head too large"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().to_string();
            if k == "content-length" {
                content_length = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    // The body means nothing to the probe; read it so the connection stays in sync.
    std::io::copy(
        &mut reader.by_ref().take(content_length as u64),
        &mut std::io::sink(),
    )?;
    Ok(Some(Request {
        method,
        target,
        http10,
        headers,
    }))
}

fn query_param(target: &str, name: &str) -> Option<String> {
    let (_, q) = target.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn probe_env() -> Json {
    let vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PROBE_") || k.starts_with("SAMPLE_"))
        .collect();
    Json::Obj(vars.into_iter().map(|(k, v)| (k, Json::Str(v))).collect())
}

fn serve(stream: TcpStream, port: &str) -> std::io::Result<()> {
    // Idle keep-alive connections should not hold a thread forever.
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => break,
            // An idle keep-alive connection timed out: just close it.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e),
        };
        let path = req.target.split('?').next().unwrap_or("/").to_string();
        let mut fields = vec![
            ("dyno".to_string(), Json::opt(std::env::var("DYNO").ok())),
            ("pid".to_string(), Json::Num(std::process::id() as i64)),
            ("port".to_string(), Json::str(port)),
            ("method".to_string(), Json::str(&req.method)),
            ("path".to_string(), Json::str(&req.target)),
            ("release_env".to_string(), probe_env()),
            (
                "headers".to_string(),
                Json::Obj(
                    req.headers
                        .iter()
                        .map(|(k, v)| (k.clone(), Json::str(v)))
                        .collect(),
                ),
            ),
        ];
        let mut status = "200 OK";
        let mut exit_code = None;
        // After GET /hang the process stays up and accepting but never answers again: a hung app.
        if path == "/hang" {
            say("hanging: no more answers");
            HUNG.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        while HUNG.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(3600));
        }
        match path.as_str() {
            "/sleep" => {
                let ms: u64 = query_param(&req.target, "ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
                fields.push(("slept_ms".to_string(), Json::Num(ms as i64)));
            }
            "/exit" => {
                let code: i32 = query_param(&req.target, "code")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                fields.push(("exit_code".to_string(), Json::Num(code as i64)));
                exit_code = Some(code);
            }
            _ => {}
        }
        if req.method != "GET" && req.method != "HEAD" && req.method != "POST" {
            status = "405 Method Not Allowed";
        }
        let body = Json::Obj(fields).render() + "\n";
        let connection = req
            .headers
            .iter()
            .find(|(k, _)| k == "connection")
            .map(|(_, v)| v.to_ascii_lowercase());
        let close = exit_code.is_some()
            || connection.as_deref() == Some("close")
            || (req.http10 && connection.as_deref() != Some("keep-alive"));
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        if req.method != "HEAD" {
            response.push_str(&body);
        }
        // One write: a body written after its head waits for the head's ACK (Nagle), which a
        // peer delays by 40 ms.
        writer.write_all(response.as_bytes())?;
        writer.flush()?;
        say(&format!("{} {} {}", req.method, req.target, &status[..3]));
        if let Some(code) = exit_code {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            say(&format!("exiting with {code}"));
            std::process::exit(code);
        }
        if close {
            break;
        }
    }
    Ok(())
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A field of /proc/self/status, e.g. `Uid:` gives the real uid first.
fn status_field(name: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn first_number(field: Option<String>) -> Json {
    field
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .map(Json::Num)
        .unwrap_or(Json::Null)
}

/// Soft and hard limits of one /proc/self/limits row, e.g. `Max open files`.
fn rlimit(row: &str) -> Json {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some(rest) = text.lines().find_map(|l| l.strip_prefix(row)) else {
        return Json::Null;
    };
    let mut cols = rest.split_whitespace();
    let value = |s: Option<&str>| match s {
        Some("unlimited") => Json::str("unlimited"),
        Some(v) => v.parse().map(Json::Num).unwrap_or(Json::Null),
        None => Json::Null,
    };
    let soft = value(cols.next());
    let hard = value(cols.next());
    Json::Obj(vec![("soft".into(), soft), ("hard".into(), hard)])
}

/// Whether a file can really be created in `dir` (a read-only mount says no even to root).
fn writable(dir: &str) -> bool {
    let path = format!(
        "{}/.dyno-probe-write-test-{}",
        dir.trim_end_matches('/'),
        std::process::id()
    );
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&path);
            true
        }
        Err(_) => false,
    }
}

fn report() -> Json {
    let visible_pids = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as i64
        })
        .unwrap_or(-1);
    let env = |k: &str| Json::opt(std::env::var(k).ok());
    Json::Obj(vec![
        ("pid".into(), Json::Num(std::process::id() as i64)),
        (
            "ppid".into(),
            Json::Num(std::os::unix::process::parent_id() as i64),
        ),
        ("uid".into(), first_number(status_field("Uid"))),
        ("gid".into(), first_number(status_field("Gid"))),
        (
            "hostname".into(),
            Json::opt(read_trim("/proc/sys/kernel/hostname")),
        ),
        (
            "cwd".into(),
            Json::opt(
                std::env::current_dir()
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned()),
            ),
        ),
        (
            "env".into(),
            Json::Obj(vec![
                ("DYNO".into(), env("DYNO")),
                ("PORT".into(), env("PORT")),
                ("HOME".into(), env("HOME")),
            ]),
        ),
        ("visible_pids".into(), Json::Num(visible_pids)),
        ("root_writable".into(), Json::Bool(writable("/"))),
        ("usr_writable".into(), Json::Bool(writable("/usr"))),
        ("cap_eff".into(), Json::opt(status_field("CapEff"))),
        (
            "rlimits".into(),
            Json::Obj(vec![
                ("nofile".into(), rlimit("Max open files")),
                ("nproc".into(), rlimit("Max processes")),
            ]),
        ),
    ])
}
