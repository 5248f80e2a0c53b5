//! Per-app log history (a ring of the last lines) and fan-out to live tails and sinks (the
//! persisted rings, drains). A slow tail never blocks a writer: broadcast receivers that lag lose
//! the oldest lines, and sinks only queue.

use crate::store::logs::{LogOp, LogStore};
use dyno_shared::{LogLine, LogSource};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Lines of history kept per app (Heroku keeps 1500).
pub const RING_LINES: usize = 1500;
/// Lines a live tail may fall behind before it loses the oldest.
pub const TAIL_BACKLOG: usize = 8192;
/// Longest `grep` pattern the logs endpoint compiles.
pub const MAX_GREP_BYTES: usize = 1000;
/// Lines waiting for the log writer; past this, new lines are counted and not persisted.
pub const PERSIST_QUEUE_LINES: usize = 16_384;
/// The log writer commits what arrived within this long of the first line of a batch.
pub const PERSIST_FLUSH: Duration = Duration::from_millis(150);
/// Most lines the log writer commits in one transaction.
pub const PERSIST_BATCH_LINES: usize = PERSIST_QUEUE_LINES;

/// Something that gets every line after the ring: called under the hub's lock, so every sink
/// sees each app's lines in ring order. It must only queue, never wait.
pub trait LogSink: Send + Sync {
    fn line(&self, line: &LogLine);
    /// The app was destroyed.
    fn forget(&self, _app: &str) {}
}

struct AppLog {
    ring: VecDeque<LogLine>,
    live: broadcast::Sender<LogLine>,
}

impl AppLog {
    fn new() -> AppLog {
        AppLog {
            ring: VecDeque::with_capacity(64),
            live: broadcast::channel(TAIL_BACKLOG).0,
        }
    }
}

#[derive(Default)]
pub struct LogHub {
    apps: Mutex<HashMap<String, AppLog>>,
    sinks: Vec<Arc<dyn LogSink>>,
}

/// Which lines a reader wants.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// `web.1` (one dyno) or `web` (every dyno of the type, or the process of that name:
    /// `router`, `api`).
    pub dyno: Option<String>,
    pub source: Option<LogSource>,
    /// Heroku's `heroku` source: system and router lines (`source` is then `None`).
    pub platform_only: bool,
    /// Matched against the message (not the time or the `app[web.1]:` prefix).
    pub grep: Option<regex::Regex>,
}

impl LogFilter {
    pub fn matches(&self, l: &LogLine) -> bool {
        if let Some(s) = self.source
            && l.source != s
        {
            return false;
        }
        if self.platform_only && l.source == LogSource::App {
            return false;
        }
        let dyno = match &self.dyno {
            None => true,
            Some(d) if d.contains('.') => &l.process == d,
            Some(t) => {
                &l.process == t
                    || l.process
                        .split_once('.')
                        .is_some_and(|(ptype, _)| ptype == t)
            }
        };
        dyno && self.grep.as_ref().is_none_or(|re| re.is_match(&l.message))
    }
}

/// Compiles a `grep` filter; the error names what is wrong with the pattern.
pub fn compile_grep(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_GREP_BYTES {
        return Err(format!(
            "grep pattern is {} bytes; the limit is {MAX_GREP_BYTES}",
            pattern.len()
        ));
    }
    regex::RegexBuilder::new(pattern)
        // Bounds what a hostile pattern can cost to compile and keep.
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid grep pattern {pattern:?}: {e}"))
}

impl LogHub {
    /// A hub that starts from `history` (oldest first per app) and hands every new line to `sinks`.
    pub fn new(history: HashMap<String, Vec<LogLine>>, sinks: Vec<Arc<dyn LogSink>>) -> LogHub {
        let apps = history
            .into_iter()
            .map(|(app, lines)| {
                let mut log = AppLog::new();
                let skip = lines.len().saturating_sub(RING_LINES);
                log.ring.extend(lines.into_iter().skip(skip));
                (app, log)
            })
            .collect();
        LogHub {
            apps: Mutex::new(apps),
            sinks,
        }
    }

    /// Pushes a batch under one lock.
    pub fn push_all(&self, lines: Vec<LogLine>) {
        let mut apps = self.apps.lock().expect("log hub lock");
        for line in lines {
            Self::push_locked(&mut apps, &self.sinks, line);
        }
    }

    pub fn push(&self, line: LogLine) {
        let mut apps = self.apps.lock().expect("log hub lock");
        Self::push_locked(&mut apps, &self.sinks, line);
    }

    fn push_locked(apps: &mut HashMap<String, AppLog>, sinks: &[Arc<dyn LogSink>], line: LogLine) {
        if !apps.contains_key(&line.app) {
            apps.insert(line.app.clone(), AppLog::new());
        }
        let app = apps.get_mut(&line.app).expect("inserted above");
        if app.ring.len() == RING_LINES {
            app.ring.pop_front();
        }
        for sink in sinks {
            sink.line(&line);
        }
        app.ring.push_back(line.clone());
        // No receivers is fine: nobody is tailing.
        let _ = app.live.send(line);
    }

    /// The last `n` matching lines and a receiver for every line after them, taken atomically so a
    /// tail neither misses nor repeats a line.
    pub fn subscribe(
        &self,
        app: &str,
        n: usize,
        filter: &LogFilter,
    ) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let mut apps = self.apps.lock().expect("log hub lock");
        let log = apps.entry(app.to_string()).or_insert_with(AppLog::new);
        let mut history: Vec<LogLine> = log
            .ring
            .iter()
            .rev()
            .filter(|l| filter.matches(l))
            .take(n)
            .cloned()
            .collect();
        history.reverse();
        (history, log.live.subscribe())
    }

    pub fn forget(&self, app: &str) {
        let mut apps = self.apps.lock().expect("log hub lock");
        apps.remove(app);
        for sink in &self.sinks {
            sink.forget(app);
        }
    }
}

enum WriterMsg {
    Op(LogOp),
    /// Answered once everything sent before it is committed.
    Sync(std::sync::mpsc::Sender<()>),
}

/// Persists the rings through a bounded channel to one writer thread, which commits a batch
/// every `PERSIST_FLUSH`. Ingestion only ever `try_send`s: when the writer falls behind, lines
/// are counted and logged as not persisted (they are still in the ring, tails and drains).
pub struct LogWriter {
    tx: SyncSender<WriterMsg>,
    dropped: Arc<AtomicU64>,
}

impl LogWriter {
    pub fn spawn(store: LogStore) -> std::io::Result<LogWriter> {
        let (tx, rx) = std::sync::mpsc::sync_channel(PERSIST_QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_loop(store, rx, counter))?;
        Ok(LogWriter { tx, dropped })
    }

    /// Waits until every line pushed before this call is committed, or `timeout` passes.
    pub fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(WriterMsg::Sync(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

impl LogSink for LogWriter {
    fn line(&self, line: &LogLine) {
        match self.tx.try_send(WriterMsg::Op(LogOp::Line(line.clone()))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn forget(&self, app: &str) {
        // Blocking is fine here (an API call, rare); losing it would bring the lines back.
        let _ = self.tx.send(WriterMsg::Op(LogOp::Forget(app.to_string())));
    }
}

/// Drops the lines of `ops` that the store would trim away at once: all but the last `keep` of
/// each app, and any before a `Forget` of their app. Under a flood this bounds the disk work to
/// the ring's size per flush, whatever the rate.
fn compact(ops: &mut Vec<LogOp>, keep: usize) {
    let mut kept: HashMap<&str, usize> = HashMap::new();
    let mut forgotten: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut wanted = vec![false; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        wanted[i] = match op {
            LogOp::Forget(app) => {
                forgotten.insert(app);
                true
            }
            LogOp::Line(l) if forgotten.contains(l.app.as_str()) => false,
            LogOp::Line(l) => {
                let n = kept.entry(&l.app).or_insert(0);
                *n += 1;
                *n <= keep
            }
        };
    }
    let mut i = 0;
    ops.retain(|_| {
        i += 1;
        wanted[i - 1]
    });
}

fn write_loop(mut store: LogStore, rx: Receiver<WriterMsg>, dropped: Arc<AtomicU64>) {
    let mut batch: Vec<LogOp> = Vec::new();
    let mut waiters = Vec::new();
    let mut open = true;
    while open {
        let Ok(first) = rx.recv() else { break };
        let deadline = Instant::now() + PERSIST_FLUSH;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Op(op) => batch.push(op),
                WriterMsg::Sync(w) => waiters.push(w),
            }
            // A sync request commits at once rather than at the deadline.
            if !waiters.is_empty() || batch.len() >= PERSIST_BATCH_LINES {
                break;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => next = Some(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        compact(&mut batch, RING_LINES);
        if !batch.is_empty()
            && let Err(e) = store.apply(&batch, RING_LINES)
        {
            tracing::error!(error = %e, lines = batch.len(), "failed to persist log lines");
        }
        batch.clear();
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                lost,
                "log persistence fell behind; lines were kept in memory but not written to disk"
            );
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(app: &str, process: &str, msg: &str) -> LogLine {
        LogLine {
            at: 0,
            app: app.into(),
            source: if process == "router" {
                LogSource::Router
            } else {
                LogSource::App
            },
            process: process.into(),
            message: msg.into(),
        }
    }

    #[test]
    fn keeps_the_last_lines_and_filters() {
        let hub = LogHub::default();
        for i in 0..RING_LINES + 10 {
            hub.push(line(
                "shop",
                if i % 2 == 0 { "web.1" } else { "worker.1" },
                &i.to_string(),
            ));
        }
        hub.push(line("shop", "router", "r"));
        let (all, _) = hub.subscribe("shop", 5000, &LogFilter::default());
        assert_eq!(all.len(), RING_LINES);
        let web = LogFilter {
            platform_only: false,
            dyno: Some("web".into()),
            ..Default::default()
        };
        let (h, _) = hub.subscribe("shop", 3, &web);
        assert_eq!(
            h.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            vec!["1504", "1506", "1508"]
        );
        let router = LogFilter {
            source: Some(LogSource::Router),
            ..Default::default()
        };
        assert_eq!(hub.subscribe("shop", 10, &router).0.len(), 1);
        assert!(
            hub.subscribe("other", 10, &LogFilter::default())
                .0
                .is_empty()
        );
    }

    #[test]
    fn compaction_keeps_the_last_lines_per_app_and_nothing_before_a_forget() {
        let mut ops: Vec<LogOp> = Vec::new();
        for i in 0..5 {
            ops.push(LogOp::Line(line("a", "web.1", &format!("a{i}"))));
            ops.push(LogOp::Line(line("b", "web.1", &format!("b{i}"))));
        }
        ops.push(LogOp::Forget("b".into()));
        ops.push(LogOp::Line(line("b", "web.1", "b-new")));
        compact(&mut ops, 2);
        let left: Vec<String> = ops
            .iter()
            .map(|op| match op {
                LogOp::Line(l) => l.message.clone(),
                LogOp::Forget(app) => format!("forget {app}"),
            })
            .collect();
        assert_eq!(left, ["a3", "a4", "forget b", "b-new"]);
    }

    #[test]
    fn grep_filters_messages_and_bad_patterns_are_named() {
        let hub = LogHub::default();
        for m in ["GET /a 200", "GET /b 500", "worker tick 1", "POST /c 503"] {
            hub.push(line("shop", "web.1", m));
        }
        let f = LogFilter {
            grep: Some(compile_grep(r" 5\d\d$").unwrap()),
            ..Default::default()
        };
        let (h, _) = hub.subscribe("shop", 1, &f);
        assert_eq!(
            h[0].message, "POST /c 503",
            "the last match, not the last line"
        );
        assert_eq!(hub.subscribe("shop", 10, &f).0.len(), 2);
        let err = compile_grep("a(").unwrap_err();
        assert!(
            err.contains("invalid grep pattern \"a(\"") && err.contains("unclosed group"),
            "{err}"
        );
        let long = "a".repeat(MAX_GREP_BYTES + 1);
        assert!(compile_grep(&long).unwrap_err().contains("limit is 1000"));
        assert!(compile_grep(&"a".repeat(MAX_GREP_BYTES)).is_ok());
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl LogSink for Recorder {
        fn line(&self, line: &LogLine) {
            self.0.lock().unwrap().push(line.message.clone());
        }
        fn forget(&self, app: &str) {
            self.0.lock().unwrap().push(format!("forget {app}"));
        }
    }

    #[test]
    fn sinks_see_every_line_in_order_and_history_is_preloaded() {
        let rec = Arc::new(Recorder::default());
        let history = HashMap::from([(
            "shop".to_string(),
            (0..RING_LINES + 3)
                .map(|i| line("shop", "web.1", &format!("old {i}")))
                .collect(),
        )]);
        let hub = LogHub::new(history, vec![rec.clone()]);
        let (h, _) = hub.subscribe("shop", RING_LINES, &LogFilter::default());
        assert_eq!(h.len(), RING_LINES);
        assert_eq!(h[0].message, "old 3");
        hub.push(line("shop", "web.1", "a"));
        hub.push(line("other", "web.1", "b"));
        hub.forget("shop");
        assert_eq!(*rec.0.lock().unwrap(), vec!["a", "b", "forget shop"]);
        assert!(
            hub.subscribe("shop", 10, &LogFilter::default())
                .0
                .is_empty()
        );
    }

    #[test]
    fn the_writer_persists_batches_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.sqlite");
        let writer = Arc::new(LogWriter::spawn(LogStore::open(&path).unwrap()).unwrap());
        let hub = LogHub::new(HashMap::new(), vec![writer.clone()]);
        for i in 0..RING_LINES + 5 {
            hub.push(line("shop", "web.1", &i.to_string()));
        }
        hub.push(line("gone", "web.1", "x"));
        hub.forget("gone");
        assert!(writer.sync(Duration::from_secs(10)));
        let saved = LogStore::open(&path).unwrap().load(RING_LINES).unwrap();
        assert_eq!(saved.len(), 1, "the forgotten app left nothing behind");
        let shop = &saved["shop"];
        assert_eq!(shop.len(), RING_LINES);
        assert_eq!(shop[0].message, "5");
        assert_eq!(shop.last().unwrap().message, (RING_LINES + 4).to_string());
    }

    #[test]
    fn live_receivers_get_lines_after_history() {
        let hub = LogHub::default();
        hub.push(line("shop", "web.1", "old"));
        let (h, mut rx) = hub.subscribe("shop", 10, &LogFilter::default());
        assert_eq!(h.len(), 1);
        hub.push(line("shop", "web.1", "new"));
        assert_eq!(rx.try_recv().unwrap().message, "new");
    }
}
