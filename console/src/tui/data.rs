//! Where the console's data comes from. `DataSource` is what the loop talks to; `Poller` is the
//! implementation over the control API. A background thread follows the coordinator's change
//! stream (`GET /stream`) and another fetches only what the current view shows: at once when the
//! view changes or a stream item says it changed, slowly for numbers that move without events,
//! and about once a second while the stream is down (`refresh` has the rules). Another thread
//! follows an app's NDJSON log stream, and each action runs on a thread of its own. Everything
//! comes back as a `Msg` on one channel.

use super::model::{Action, AppDetail, AppRow, Interest, Msg, StreamState, TailState, Update};
use super::refresh::{Backoff, Schedule};
use crate::client::Client;
use crate::error::ApiError;
use anyhow::Result;
use dyno_shared::LogLine;
use dyno_shared::api::{
    ActionResult, App, Dyno, ErrorBody, FormationItem, FormationUpdate, FormationUpdates, Host,
    Pricing, Release, RunRequest, ScaleRequest, StreamItem,
};
use dyno_shared::tls::rustls;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// Lines of history the Logs view asks for.
pub const LOG_HISTORY: u32 = 1500;
/// The Apps view counts crashed dynos with one request per app, up to this many apps.
const CRASH_COUNT_MAX_APPS: usize = 50;
/// Platform lines shown as the App view's recent events.
const EVENT_LINES: u32 = 50;
/// A tail batch is handed over at least this often...
const TAIL_FLUSH: Duration = Duration::from_millis(40);
/// ...or when it has this many lines.
const TAIL_BATCH: usize = 4096;
/// The coordinator pings a quiet stream every 15 s; this much silence means the connection is
/// dead (a host that vanished without closing it).
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// What the console's loop needs from the platform.
pub trait DataSource {
    /// Keep this fresh from now on (and fetch it at once).
    fn watch(&mut self, interest: Interest);
    /// Fetch the current interest now.
    fn refresh(&mut self);
    /// Follow this app's logs (replacing any tail), or none; its messages carry `generation`.
    fn tail(&mut self, app: Option<&str>, generation: u64);
    /// Ask the coordinator for a change; the outcome arrives as `Msg::ActionDone` (or
    /// `Msg::RunStarted`).
    fn act(&mut self, action: Action);
}

enum Ctl {
    Watch(Interest),
    Refresh,
    StreamUp,
    StreamDown,
    Item(StreamItem),
}

pub struct Poller {
    ctl: Sender<Ctl>,
    tx: Sender<Msg>,
    base: String,
    token: Option<String>,
    client: Arc<Client>,
    tail: Option<Tail>,
    /// Ends the change stream's thread (which holds a `ctl` sender, so the fetching thread
    /// ends after it).
    stream_stop: Arc<AtomicBool>,
}

struct Tail {
    stop: Arc<AtomicBool>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stream_stop.store(true, Ordering::Relaxed);
    }
}

impl Poller {
    /// Starts the fetching and change stream threads; they end when the `Poller` is dropped.
    pub fn start(base: &str, token: Option<String>, tx: Sender<Msg>) -> Result<Poller> {
        let client = Arc::new(Client::with_timeouts(
            base,
            token.clone(),
            Duration::from_secs(2),
            Duration::from_secs(5),
        )?);
        let (ctl, ctl_rx) = mpsc::channel();
        let poll_client = client.clone();
        let poll_tx = tx.clone();
        thread::Builder::new()
            .name("console-poll".into())
            .spawn(move || poll_loop(&poll_client, &ctl_rx, &poll_tx))?;
        let stream_stop = Arc::new(AtomicBool::new(false));
        let job = StreamJob {
            base: client.base().to_string(),
            token: token.clone(),
            stop: stream_stop.clone(),
            ctl: ctl.clone(),
            tx: tx.clone(),
        };
        thread::Builder::new()
            .name("console-stream".into())
            .spawn(move || job.run())?;
        Ok(Poller {
            ctl,
            tx,
            base: client.base().to_string(),
            token,
            client,
            tail: None,
            stream_stop,
        })
    }
}

impl DataSource for Poller {
    fn watch(&mut self, interest: Interest) {
        let _ = self.ctl.send(Ctl::Watch(interest));
    }

    fn refresh(&mut self) {
        let _ = self.ctl.send(Ctl::Refresh);
    }

    fn tail(&mut self, app: Option<&str>, generation: u64) {
        self.tail = None;
        let Some(app) = app else { return };
        let stop = Arc::new(AtomicBool::new(false));
        let t = TailJob {
            base: self.base.clone(),
            token: self.token.clone(),
            app: app.to_string(),
            generation,
            stop: stop.clone(),
            tx: self.tx.clone(),
        };
        if thread::Builder::new()
            .name("console-tail".into())
            .spawn(move || t.run())
            .is_ok()
        {
            self.tail = Some(Tail { stop });
        }
    }

    fn act(&mut self, action: Action) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        let ctl = self.ctl.clone();
        let _ = thread::Builder::new()
            .name("console-action".into())
            .spawn(move || {
                let label = action.describe();
                let msg = match perform(&client, &action) {
                    Ok(Outcome::Done(summary)) => Msg::ActionDone {
                        label,
                        result: Ok(summary),
                    },
                    Ok(Outcome::Started { app, dyno, command }) => {
                        Msg::RunStarted { app, dyno, command }
                    }
                    Err(e) => Msg::ActionDone {
                        label,
                        result: Err(format!("{e:#}")),
                    },
                };
                let _ = tx.send(msg);
                let _ = ctl.send(Ctl::Refresh);
            });
    }
}

/// Fetches the current view when `Schedule` says so, until the `Poller` and the stream's
/// thread are gone.
fn poll_loop(client: &Client, ctl: &Receiver<Ctl>, tx: &Sender<Msg>) {
    let mut schedule = Schedule::default();
    loop {
        // Nothing due: wake up now and then anyway, to notice nothing.
        let wait = schedule.due().map_or(Duration::from_secs(60), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match ctl.recv_timeout(wait) {
            Ok(c) => {
                let mut apply = |c: Ctl| {
                    let now = Instant::now();
                    match c {
                        Ctl::Watch(i) => schedule.watch(i, now),
                        Ctl::Refresh => schedule.refresh(now),
                        Ctl::StreamUp => schedule.stream_up(now),
                        Ctl::StreamDown => schedule.stream_down(now),
                        Ctl::Item(item) => {
                            schedule.item(&item, now);
                        }
                    }
                };
                apply(c);
                while let Ok(c) = ctl.try_recv() {
                    apply(c);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if !schedule.is_due(Instant::now()) {
            continue;
        }
        let Some(i) = schedule.interest().cloned() else {
            continue;
        };
        let (conn, updates) = match fetch(client, &i) {
            Ok(u) => (Ok(()), u),
            Err(e) => match e.downcast_ref::<ApiError>() {
                // An answer, just not the data: the coordinator is there.
                Some(api) if api.status.is_some() => {
                    (Ok(()), vec![Update::Failed(api.message.clone())])
                }
                _ => (Err(format!("{e:#}")), Vec::new()),
            },
        };
        schedule.fetched(Instant::now());
        if tx.send(Msg::Connection(conn)).is_err() {
            return;
        }
        for u in updates {
            if tx.send(Msg::Data(u)).is_err() {
                return;
            }
        }
    }
}

/// Follows `GET /stream`, handing its items to the fetching thread and its state to the loop;
/// reconnects with a backoff while the coordinator is away.
struct StreamJob {
    base: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
    ctl: Sender<Ctl>,
    tx: Sender<Msg>,
}

impl StreamJob {
    fn run(self) {
        let mut backoff = Backoff::new();
        let mut shown: Option<StreamState> = None;
        let mut show = |state: StreamState, tx: &Sender<Msg>| -> bool {
            if shown.as_ref() == Some(&state) {
                return true;
            }
            shown = Some(state.clone());
            tx.send(Msg::Stream(state)).is_ok()
        };
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let why = match open_stream(&self.base, self.token.as_deref(), "/stream") {
                Ok(body) => {
                    if self.ctl.send(Ctl::StreamUp).is_err() || !show(StreamState::Live, &self.tx) {
                        return;
                    }
                    let why = match self.pump(body) {
                        Ok(()) => "the coordinator closed the event stream".to_string(),
                        Err(e) => e.to_string(),
                    };
                    if self.ctl.send(Ctl::StreamDown).is_err() {
                        return;
                    }
                    why
                }
                Err(e) => e.to_string(),
            };
            if self.stop.load(Ordering::Relaxed) || !show(StreamState::Down(why), &self.tx) {
                return;
            }
            // Back off before reconnecting, still answering a stop quickly.
            let until = Instant::now() + backoff.wait_after(started.elapsed());
            while Instant::now() < until {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Reads items until the stream ends, breaks or goes silent, or the job is stopped.
    fn pump(&self, mut body: BodyReader) -> io::Result<()> {
        let mut partial: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut heard = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = match body.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if heard.elapsed() > STREAM_SILENCE {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no word on the event stream for {} s",
                                STREAM_SILENCE.as_secs()
                            ),
                        ));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            heard = Instant::now();
            partial.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(pos) = partial[start..].iter().position(|b| *b == b'\n') {
                let raw = &partial[start..start + pos];
                start += pos + 1;
                // Item types this console does not know are skipped.
                if let Ok(item) = serde_json::from_slice::<StreamItem>(raw)
                    && self.ctl.send(Ctl::Item(item)).is_err()
                {
                    return Ok(());
                }
            }
            partial.drain(..start);
        }
    }
}

/// One round of requests for a view.
pub fn fetch(client: &Client, interest: &Interest) -> Result<Vec<Update>> {
    Ok(match interest {
        Interest::Apps => {
            let apps: Vec<App> = client.get("/apps")?;
            let count = apps.len() <= CRASH_COUNT_MAX_APPS;
            let mut rows = Vec::with_capacity(apps.len());
            for app in apps {
                let crashed = if count && app.dynos_total > 0 {
                    client
                        .get::<Vec<Dyno>>(&format!("/apps/{}/dynos", app.name))
                        .ok()
                        .map(|d| super::model::count_state(&d, "crashed"))
                } else if count {
                    Some(0)
                } else {
                    None
                };
                rows.push(AppRow { app, crashed });
            }
            let mut out = vec![Update::Apps(rows)];
            // For the cost per hour column; the list is worth showing without it.
            if let Ok(p) = client.get::<Pricing>("/pricing") {
                out.push(Update::Pricing(Box::new(p)));
            }
            out
        }
        Interest::App(name) | Interest::Logs(name) => {
            let app: App = client.get(&format!("/apps/{name}"))?;
            let dynos: Vec<Dyno> = client.get(&format!("/apps/{name}/dynos"))?;
            let formation: Vec<FormationItem> = client.get(&format!("/apps/{name}/formation"))?;
            // The Logs view's header does without the recent events.
            let events = if matches!(interest, Interest::App(_)) {
                recent_events(client, name).unwrap_or_default()
            } else {
                Vec::new()
            };
            vec![Update::App(Box::new(AppDetail {
                app,
                dynos,
                formation,
                events,
            }))]
        }
        Interest::Hosts => vec![Update::Hosts(client.get("/hosts")?)],
        Interest::Releases(app) => vec![Update::Releases {
            app: app.clone(),
            releases: client.get::<Vec<Release>>(&format!("/apps/{app}/releases"))?,
        }],
        Interest::Config(app) => vec![Update::Config {
            app: app.clone(),
            vars: client.get::<BTreeMap<String, String>>(&format!("/apps/{app}/config-vars"))?,
        }],
        Interest::Billing => {
            let mut out = vec![Update::Billing(Box::new(client.get("/billing")?))];
            // The report without the price table is still worth showing.
            if let Ok(p) = client.get::<Pricing>("/pricing") {
                out.push(Update::Pricing(Box::new(p)));
            }
            out
        }
    })
}

/// The app's latest platform lines, from the log history (there is no events API). Read with a
/// deadline: a coordinator that stops answering must not stall the polling.
fn recent_events(client: &Client, app: &str) -> Result<Vec<LogLine>> {
    let path = format!("/apps/{app}/logs?lines={EVENT_LINES}&tail=false&source=system");
    let mut body = open_stream(client.base(), client.token(), &path)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            anyhow::bail!("the coordinator is slow to send {app}'s events");
        }
    }
    Ok(raw
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<LogLine>(l).ok())
        .collect())
}

/// What an action came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// What the status line shows.
    Done(String),
    /// A detached one-off dyno started.
    Started {
        app: String,
        dyno: String,
        command: String,
    },
}

/// Runs one action against the API.
pub fn perform(client: &Client, action: &Action) -> Result<Outcome> {
    if let Action::Run { app, command } = action {
        let d: Dyno = client.send(
            "POST",
            &format!("/apps/{app}/run"),
            &RunRequest {
                command: command.clone(),
                detached: true,
                size: None,
                env: BTreeMap::new(),
            },
        )?;
        return Ok(Outcome::Started {
            app: app.clone(),
            dyno: d.name,
            command: command.clone(),
        });
    }
    summary(client, action).map(Outcome::Done)
}

/// Runs an action other than a run; the text is what the status line shows on success.
fn summary(client: &Client, action: &Action) -> Result<String> {
    match action {
        Action::Run { .. } => unreachable!("perform starts runs"),
        Action::Scale { app, args } => {
            let formation: Vec<FormationItem> = client.send(
                "POST",
                &format!("/apps/{app}/formation/scale"),
                &ScaleRequest { args: args.clone() },
            )?;
            Ok(format!("now {}", crate::output::formation(&formation)))
        }
        Action::Restart {
            app,
            dyno,
            process_type,
        } => {
            let r: ActionResult = client.send(
                "POST",
                &format!("/apps/{app}/restart"),
                &dyno_shared::api::DynoSelector {
                    dyno: dyno.clone(),
                    process_type: process_type.clone(),
                    batch: None,
                },
            )?;
            Ok(done_on(&r))
        }
        Action::Stop { app, dyno } => {
            let r: ActionResult = client.send(
                "POST",
                &format!("/apps/{app}/stop"),
                &dyno_shared::api::DynoSelector {
                    dyno: Some(dyno.clone()),
                    process_type: None,
                    batch: None,
                },
            )?;
            Ok(done_on(&r))
        }
        Action::Resize {
            app,
            process_type,
            size,
        } => {
            let formation: Vec<FormationItem> = client.send(
                "PATCH",
                &format!("/apps/{app}/formation"),
                &FormationUpdates {
                    updates: vec![FormationUpdate {
                        process_type: process_type.clone(),
                        quantity: None,
                        size: Some(size.clone()),
                        dyno_size: None,
                    }],
                },
            )?;
            Ok(format!("now {}", crate::output::formation(&formation)))
        }
        Action::Drain { host, drained } => {
            let verb = if *drained { "drain" } else { "undrain" };
            let h: Host = client.send(
                "POST",
                &format!("/hosts/{host}/{verb}"),
                &serde_json::json!({}),
            )?;
            Ok(format!(
                "{} is {}",
                h.name,
                if h.drained { "drained" } else { "in service" }
            ))
        }
        Action::Rollback { app, version } => {
            let r: Release = client.send(
                "POST",
                &format!("/apps/{app}/releases"),
                &dyno_shared::api::Rollback {
                    release: serde_json::json!(version),
                },
            )?;
            Ok(format!("v{} made from v{version}", r.version))
        }
        Action::Maintenance { app, on } => {
            let a: App = client.send(
                "PATCH",
                &format!("/apps/{app}"),
                &dyno_shared::api::AppUpdate {
                    maintenance: Some(*on),
                    name: None,
                    build_stack: None,
                },
            )?;
            Ok(format!(
                "maintenance {}",
                if a.maintenance { "on" } else { "off" }
            ))
        }
        Action::SetVar { app, key, value } => {
            let mut patch = BTreeMap::new();
            patch.insert(key.clone(), value.clone());
            let _: BTreeMap<String, String> =
                client.send("PATCH", &format!("/apps/{app}/config-vars"), &patch)?;
            Ok("new release made".to_string())
        }
    }
}

fn done_on(r: &ActionResult) -> String {
    if r.dynos.is_empty() {
        "no dynos matched".to_string()
    } else {
        r.dynos.join(" ")
    }
}

/// Follows `GET /apps/{app}/logs?tail=true`, reconnecting while the coordinator is away.
struct TailJob {
    base: String,
    token: Option<String>,
    app: String,
    generation: u64,
    stop: Arc<AtomicBool>,
    tx: Sender<Msg>,
}

impl TailJob {
    fn run(self) {
        // Lines up to this time were sent: a reconnect's history repeats them.
        let mut seen_until: Option<i64> = None;
        let mut first = true;
        while !self.stop.load(Ordering::Relaxed) {
            if !first {
                // Back off before reconnecting, still answering a stop quickly.
                let until = Instant::now() + Duration::from_secs(1);
                while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                }
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            first = false;
            self.state(TailState::Connecting);
            let path = format!("/apps/{}/logs?tail=true&lines={LOG_HISTORY}", self.app);
            let why = match open_stream(&self.base, self.token.as_deref(), &path) {
                Ok(stream) => {
                    self.state(TailState::Live);
                    match self.pump(stream, &mut seen_until) {
                        Ok(()) => "the coordinator closed the log stream".to_string(),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            self.state(TailState::Broken(why));
        }
    }

    fn state(&self, state: TailState) {
        let _ = self.tx.send(Msg::LogState {
            generation: self.generation,
            state,
        });
    }

    /// Reads lines until the stream ends, the job is stopped, or the loop went away.
    fn pump(&self, mut body: BodyReader, seen_until: &mut Option<i64>) -> io::Result<()> {
        let skip_until = *seen_until;
        let mut partial: Vec<u8> = Vec::new();
        let mut batch: Vec<LogLine> = Vec::new();
        let mut last_flush = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = match body.read(&mut buf) {
                Ok(0) => {
                    self.flush(&mut batch);
                    return Ok(());
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    0
                }
                Err(e) => {
                    self.flush(&mut batch);
                    return Err(e);
                }
            };
            partial.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(pos) = partial[start..].iter().position(|b| *b == b'\n') {
                let raw = &partial[start..start + pos];
                start += pos + 1;
                if let Ok(line) = serde_json::from_slice::<LogLine>(raw) {
                    if skip_until.is_some_and(|s| line.at <= s) {
                        continue;
                    }
                    *seen_until = Some(line.at);
                    batch.push(line);
                }
            }
            partial.drain(..start);
            if !batch.is_empty()
                && (batch.len() >= TAIL_BATCH || last_flush.elapsed() >= TAIL_FLUSH)
            {
                if !self.flush(&mut batch) {
                    return Ok(());
                }
                last_flush = Instant::now();
            }
        }
    }

    fn flush(&self, batch: &mut Vec<LogLine>) -> bool {
        if batch.is_empty() {
            return true;
        }
        self.tx
            .send(Msg::LogLines {
                generation: self.generation,
                lines: std::mem::take(batch),
            })
            .is_ok()
    }
}

/// A response body over a socket we own, so a stopped tail never waits on a quiet stream: reads
/// time out every 100 ms and the caller checks its stop flag.
pub struct BodyReader {
    stream: Conn,
    /// Bytes read past the headers, not yet decoded.
    raw: Vec<u8>,
    chunked: bool,
    chunk_left: Option<usize>,
    done: bool,
}

impl BodyReader {
    fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.raw.extend_from_slice(&tmp[..n]);
        Ok(n > 0)
    }

    /// Decodes what `raw` holds into `out`; returns the bytes written.
    fn decode(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if !self.chunked {
            let n = self.raw.len().min(out.len());
            out[..n].copy_from_slice(&self.raw[..n]);
            self.raw.drain(..n);
            return Ok(n);
        }
        let mut written = 0;
        loop {
            match self.chunk_left {
                None => {
                    let Some(end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                        return Ok(written);
                    };
                    let line = String::from_utf8_lossy(&self.raw[..end]).to_string();
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "bad chunk size")
                    })?;
                    self.raw.drain(..end + 2);
                    if size == 0 {
                        self.done = true;
                        return Ok(written);
                    }
                    self.chunk_left = Some(size);
                }
                Some(0) => {
                    if self.raw.len() < 2 {
                        return Ok(written);
                    }
                    self.raw.drain(..2);
                    self.chunk_left = None;
                }
                Some(left) => {
                    let n = left.min(self.raw.len()).min(out.len() - written);
                    if n == 0 {
                        return Ok(written);
                    }
                    out[written..written + n].copy_from_slice(&self.raw[..n]);
                    self.raw.drain(..n);
                    written += n;
                    self.chunk_left = Some(left - n);
                }
            }
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.decode(out)?;
            if n > 0 || self.done {
                return Ok(n);
            }
            if !self.fill()? {
                // Closed by the server.
                return Ok(0);
            }
        }
    }
}

/// `GET path` on an `http://host:port` base; fails with the coordinator's message on a non-200.
/// The stream's connection: plain, or TLS to a coordinator whose certificate is pinned.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

pub fn open_stream(base: &str, token: Option<&str>, path: &str) -> io::Result<BodyReader> {
    let (secret, pin) = match token {
        Some(t) => {
            let (s, p) = dyno_shared::tls::split_token(t)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            (Some(s), p)
        }
        None => (None, None),
    };
    let token = secret.as_deref();
    let (tls, hostport) = match (base.strip_prefix("https://"), base.strip_prefix("http://")) {
        (Some(h), _) => (true, h),
        (None, Some(h)) => (false, h),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "expected an http:// or https:// URL",
            ));
        }
    };
    let addr = hostport
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach the coordinator at {base}: {e}"),
        )
    })?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = if tls {
        let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(dyno_shared::tls::client_config(pin), name)
            .map_err(io::Error::other)?;
        // The handshake completes on the first write, before the read timeout applies.
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut s = rustls::StreamOwned::new(conn, stream);
        s.conn.complete_io(&mut s.sock)?;
        s.sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Conn::Tls(Box::new(s))
    } else {
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        Conn::Plain(stream)
    };
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\n{auth}Accept: application/x-ndjson\r\nConnection: close\r\n\r\n"
    )?;
    let mut head: Vec<u8> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let end = loop {
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if head.len() > 64 * 1024 || Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no response headers",
            ));
        }
        let mut tmp = [0u8; 4096];
        match stream.read(&mut tmp) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the coordinator closed the connection",
                ));
            }
            Ok(n) => head.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_string();
    let rest = head[end + 4..].to_vec();
    let status: u16 = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = text.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = BodyReader {
        stream,
        raw: rest,
        chunked,
        chunk_left: None,
        done: false,
    };
    if status != 200 {
        let mut text = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && text.len() < 64 * 1024 {
            match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let message = serde_json::from_slice::<ErrorBody>(&text)
            .map(|b| b.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&text).trim().to_string());
        return Err(io::Error::other(format!("HTTP {status}: {message}")));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server answering with `response`, then keeping the socket open for `hold`.
    fn serve(response: &'static [u8], hold: Duration) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut tmp = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&tmp[..n]),
                }
            }
            s.write_all(response).unwrap();
            if hold.is_zero() {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            thread::sleep(hold.max(Duration::from_millis(200)));
        });
        format!("http://{addr}")
    }

    fn read_all(mut r: BodyReader) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn decodes_chunked_and_plain_bodies() {
        let base = serve(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\n{\"a\":1\r\n3;x=y\r\n}\n\n\r\n0\r\n\r\n",
            Duration::ZERO,
        );
        assert_eq!(
            read_all(open_stream(&base, None, "/").unwrap()),
            "{\"a\":1}\n\n"
        );
        let base = serve(
            b"HTTP/1.0 200 OK\r\n\r\nline one\nline two\n",
            Duration::ZERO,
        );
        assert_eq!(
            read_all(open_stream(&base, Some("t"), "/").unwrap()),
            "line one\nline two\n"
        );
    }

    #[test]
    fn an_error_answer_carries_the_coordinators_message() {
        let base = serve(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 45\r\n\r\n{\"id\":\"not_found\",\"message\":\"no app named x\"}",
            Duration::from_millis(300),
        );
        let err = open_stream(&base, None, "/apps/x/logs").err().unwrap();
        assert!(err.to_string().contains("no app named x"), "{err}");
    }

    #[test]
    fn the_change_stream_hands_over_its_items_and_skips_unknown_ones() {
        let base = serve(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\r\n{\"type\":\"hosts\"}\n{\"type\":\"something_new\"}\n{\"type\":\"event\",\"seq\":4,\"app\":\"shop\",\"at\":\"2026-11-29T18:55:28.123456+00:00\",\"dyno\":\"web.1\",\"message\":\"State changed from starting to up\"}\n{\"type\":\"pi",
            Duration::ZERO,
        );
        let (ctl, ctl_rx) = mpsc::channel();
        let (tx, _rx) = mpsc::channel();
        let job = StreamJob {
            base: base.clone(),
            token: None,
            stop: Arc::new(AtomicBool::new(false)),
            ctl,
            tx,
        };
        job.pump(open_stream(&base, None, "/stream").unwrap())
            .unwrap();
        let items: Vec<StreamItem> = ctl_rx
            .try_iter()
            .filter_map(|c| match c {
                Ctl::Item(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0], StreamItem::Hosts);
        assert!(
            matches!(&items[1], StreamItem::Event { app, seq: 4, .. } if app == "shop"),
            "{items:?}"
        );
    }

    #[test]
    fn a_quiet_stream_times_out_instead_of_blocking() {
        let base = serve(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            Duration::from_secs(2),
        );
        let mut r = open_stream(&base, None, "/").unwrap();
        let start = Instant::now();
        let err = r.read(&mut [0u8; 16]).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
