//! Per-app log history (a ring of the last lines) and fan-out to live tails.
//! A slow tail never blocks a writer: broadcast receivers that lag lose the oldest lines.

use dyno_shared::{LogLine, LogSource};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Lines of history kept per app (Heroku keeps 1500).
pub const RING_LINES: usize = 1500;
/// Lines a live tail may fall behind before it loses the oldest.
pub const TAIL_BACKLOG: usize = 8192;

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
}

/// Which lines a reader wants.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// `web.1` (one dyno) or `web` (every dyno of the type).
    pub dyno: Option<String>,
    pub source: Option<LogSource>,
}

impl LogFilter {
    pub fn matches(&self, l: &LogLine) -> bool {
        if let Some(s) = self.source
            && l.source != s
        {
            return false;
        }
        match &self.dyno {
            None => true,
            Some(d) if d.contains('.') => &l.process == d,
            Some(t) => l
                .process
                .split_once('.')
                .is_some_and(|(ptype, _)| ptype == t),
        }
    }
}

impl LogHub {
    pub fn push(&self, line: LogLine) {
        let mut apps = self.apps.lock().expect("log hub lock");
        let app = apps.entry(line.app.clone()).or_insert_with(AppLog::new);
        if app.ring.len() == RING_LINES {
            app.ring.pop_front();
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
        self.apps.lock().expect("log hub lock").remove(app);
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
    fn live_receivers_get_lines_after_history() {
        let hub = LogHub::default();
        hub.push(line("shop", "web.1", "old"));
        let (h, mut rx) = hub.subscribe("shop", 10, &LogFilter::default());
        assert_eq!(h.len(), 1);
        hub.push(line("shop", "web.1", "new"));
        assert_eq!(rx.try_recv().unwrap().message, "new");
    }
}
