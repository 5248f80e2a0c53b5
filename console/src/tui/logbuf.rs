//! The Logs view's state: a bounded buffer of an app's merged lines, with the filters, the regex
//! search, follow/pause and the per-dyno colours. Pure: the tail's I/O lives in `data`.

use dyno_shared::{LogLine, LogSource};
use regex::Regex;
use std::collections::{HashMap, VecDeque};

/// Lines kept for the view; older ones fall off.
pub const BUFFER_LINES: usize = 20_000;
/// Largest compiled search pattern, as the coordinator's `grep`.
const SEARCH_SIZE_LIMIT: usize = 1 << 20;

/// Which lines show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// A dyno (`web.1`) or a process type (`web`).
    pub dyno: Option<String>,
    pub source: Option<LogSource>,
}

impl LogFilter {
    /// `web.1`, `web`, `source=router`, `dyno=web.1 source=app`; empty clears.
    pub fn parse(text: &str) -> Result<LogFilter, String> {
        let mut f = LogFilter::default();
        for word in text.split_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (Some(k), v),
                None => (None, word),
            };
            let as_source = LogSource::parse(value);
            match key {
                Some("source") | Some("s") => {
                    f.source = Some(as_source.ok_or_else(|| {
                        format!("unknown source {value:?}: expected app, system or router")
                    })?)
                }
                None if as_source.is_some() => f.source = as_source,
                Some("dyno") | Some("type") | Some("d") | Some("p") | None => {
                    let ok = value.parse::<dyno_shared::DynoName>().is_ok()
                        || value.parse::<dyno_shared::ProcessType>().is_ok();
                    if !ok {
                        return Err(format!(
                            "invalid dyno filter {value:?}: expected a dyno (web.1) or a type (web)"
                        ));
                    }
                    f.dyno = Some(value.to_string());
                }
                Some(other) => {
                    return Err(format!(
                        "unknown filter {other:?}: use dyno=, type= or source="
                    ));
                }
            }
        }
        Ok(f)
    }

    pub fn matches(&self, line: &LogLine) -> bool {
        if let Some(s) = self.source
            && line.source != s
        {
            return false;
        }
        match &self.dyno {
            None => true,
            Some(d) if d.contains('.') => line.process == *d,
            Some(t) => line.process.split_once('.').is_some_and(|(ty, _)| ty == t),
        }
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.dyno {
            parts.push(d.clone());
        }
        if let Some(s) = self.source {
            parts.push(format!("source={}", s.as_str()));
        }
        parts.join(" ")
    }
}

#[derive(Debug)]
pub struct LogBuf {
    pub app: String,
    lines: VecDeque<LogLine>,
    /// Sequence number of `lines[0]`; a line's number never changes.
    first_seq: u64,
    cap: usize,
    pub filter: LogFilter,
    pub search: Option<Regex>,
    /// Paused at this line (the bottom one on screen); `None` follows the tail.
    pub anchor: Option<u64>,
    pub wrap: bool,
    pub timestamps: bool,
    /// Lines that arrived since the pause began.
    pub new_while_paused: u64,
    colours: HashMap<String, u8>,
}

impl LogBuf {
    pub fn new(app: &str) -> LogBuf {
        LogBuf::with_capacity(app, BUFFER_LINES)
    }

    pub fn with_capacity(app: &str, cap: usize) -> LogBuf {
        LogBuf {
            app: app.to_string(),
            lines: VecDeque::new(),
            first_seq: 0,
            cap: cap.max(1),
            filter: LogFilter::default(),
            search: None,
            anchor: None,
            wrap: false,
            timestamps: true,
            new_while_paused: 0,
            colours: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn following(&self) -> bool {
        self.anchor.is_none()
    }

    /// Appends lines (the tail drops what a reconnect repeats). Returns how many were added.
    pub fn push(&mut self, new: Vec<LogLine>) -> usize {
        let mut added = 0;
        for line in new {
            if !self.colours.contains_key(&line.process) {
                let next = self.colours.len() as u8;
                self.colours.insert(line.process.clone(), next);
            }
            if self.anchor.is_some() && self.shows(&line) {
                self.new_while_paused += 1;
            }
            self.lines.push_back(line);
            added += 1;
        }
        while self.lines.len() > self.cap {
            self.lines.pop_front();
            self.first_seq += 1;
        }
        if let Some(a) = self.anchor
            && a < self.first_seq
        {
            self.anchor = Some(self.first_seq);
        }
        added
    }

    pub fn clear(&mut self) {
        self.first_seq += self.lines.len() as u64;
        self.lines.clear();
        if self.anchor.is_some() {
            self.anchor = Some(self.first_seq);
        }
        self.new_while_paused = 0;
    }

    /// Palette index of a process, in order of first appearance (foreman's way).
    pub fn colour_of(&self, process: &str) -> u8 {
        self.colours.get(process).copied().unwrap_or(0)
    }

    pub fn shows(&self, line: &LogLine) -> bool {
        self.filter.matches(line)
            && self
                .search
                .as_ref()
                .is_none_or(|r| r.is_match(&line.message))
    }

    pub fn set_search(&mut self, pattern: &str) -> Result<(), String> {
        if pattern.is_empty() {
            self.search = None;
            return Ok(());
        }
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(SEARCH_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
        self.search = Some(re);
        Ok(())
    }

    fn last_seq(&self) -> Option<u64> {
        (!self.lines.is_empty()).then(|| self.first_seq + self.lines.len() as u64 - 1)
    }

    fn get(&self, seq: u64) -> Option<&LogLine> {
        seq.checked_sub(self.first_seq)
            .and_then(|i| self.lines.get(i as usize))
    }

    /// Up to `n` shown lines ending at the anchor (or the newest), oldest first, with their
    /// sequence numbers.
    pub fn window(&self, n: usize) -> Vec<(u64, &LogLine)> {
        let Some(last) = self.last_seq() else {
            return Vec::new();
        };
        let bottom = self.anchor.unwrap_or(last).min(last);
        let mut out = Vec::with_capacity(n);
        let mut seq = bottom as i64;
        while seq >= self.first_seq as i64 && out.len() < n {
            if let Some(l) = self.get(seq as u64)
                && self.shows(l)
            {
                out.push((seq as u64, l));
            }
            seq -= 1;
        }
        out.reverse();
        out
    }

    /// Every shown line, oldest first (for saving).
    pub fn shown(&self) -> impl Iterator<Item = &LogLine> {
        self.lines.iter().filter(|l| self.shows(l))
    }

    /// Pauses (or keeps paused) and moves the bottom line `delta` shown lines (negative: up).
    pub fn scroll(&mut self, delta: i64) {
        let Some(last) = self.last_seq() else {
            return;
        };
        let mut seq = self.anchor.unwrap_or(last).min(last);
        if self.anchor.is_none() {
            self.new_while_paused = 0;
        }
        let mut left = delta.unsigned_abs();
        let step: i64 = if delta < 0 { -1 } else { 1 };
        let mut probe = seq as i64;
        while left > 0 {
            probe += step;
            if probe < self.first_seq as i64 || probe > last as i64 {
                break;
            }
            if self.get(probe as u64).is_some_and(|l| self.shows(l)) {
                seq = probe as u64;
                left -= 1;
            }
        }
        if delta > 0 && seq == last {
            // Scrolled back to the end: follow again.
            self.follow();
        } else {
            self.anchor = Some(seq);
        }
    }

    pub fn pause(&mut self) {
        if self.anchor.is_none() {
            self.anchor = Some(self.last_seq().unwrap_or(self.first_seq));
            self.new_while_paused = 0;
        }
    }

    pub fn follow(&mut self) {
        self.anchor = None;
        self.new_while_paused = 0;
    }

    pub fn top(&mut self) {
        let first = (self.first_seq..self.first_seq + self.lines.len() as u64)
            .find(|s| self.get(*s).is_some_and(|l| self.shows(l)));
        self.anchor = Some(first.unwrap_or(self.first_seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at: i64, process: &str, source: LogSource, message: &str) -> LogLine {
        LogLine {
            at,
            app: "shop".into(),
            source,
            process: process.into(),
            message: message.into(),
        }
    }

    fn msgs(buf: &LogBuf, n: usize) -> Vec<String> {
        buf.window(n)
            .iter()
            .map(|(_, l)| l.message.clone())
            .collect()
    }

    #[test]
    fn filters_parse_like_the_cli() {
        assert_eq!(LogFilter::parse("").unwrap(), LogFilter::default());
        let f = LogFilter::parse("web source=router").unwrap();
        assert_eq!(f.dyno.as_deref(), Some("web"));
        assert_eq!(f.source, Some(LogSource::Router));
        assert_eq!(
            LogFilter::parse("heroku").unwrap().source,
            Some(LogSource::System)
        );
        assert_eq!(
            LogFilter::parse("dyno=web.2").unwrap().dyno.as_deref(),
            Some("web.2")
        );
        assert!(LogFilter::parse("web!").unwrap_err().contains("web!"));
        assert!(LogFilter::parse("source=kernel").is_err());
        assert!(LogFilter::parse("colour=red").is_err());
    }

    #[test]
    fn filter_by_dyno_type_and_source() {
        let web1 = line(1, "web.1", LogSource::App, "a");
        let web12 = line(1, "web.12", LogSource::App, "a");
        let worker = line(1, "worker.1", LogSource::App, "a");
        let router = line(1, "router", LogSource::Router, "a");
        let f = LogFilter::parse("web").unwrap();
        assert!(f.matches(&web1) && f.matches(&web12) && !f.matches(&worker));
        let f = LogFilter::parse("web.1").unwrap();
        assert!(f.matches(&web1) && !f.matches(&web12));
        let f = LogFilter::parse("router").unwrap();
        assert!(f.matches(&router) && !f.matches(&web1));
    }

    #[test]
    fn bounded() {
        let mut b = LogBuf::with_capacity("shop", 3);
        let batch: Vec<LogLine> = (0..5)
            .map(|i| line(i, "web.1", LogSource::App, &format!("m{i}")))
            .collect();
        assert_eq!(b.push(batch), 5);
        assert_eq!(b.len(), 3);
        assert_eq!(msgs(&b, 10), ["m2", "m3", "m4"]);
        b.pause();
        b.push(vec![line(9, "web.1", LogSource::App, "m9")]);
        // The anchored line fell off: the view stays at the oldest line left.
        b.push(vec![line(10, "web.1", LogSource::App, "m10")]);
        b.push(vec![line(11, "web.1", LogSource::App, "m11")]);
        assert_eq!(msgs(&b, 1), ["m9"]);
    }

    #[test]
    fn pause_keeps_the_screen_still_and_follow_catches_up() {
        let mut b = LogBuf::new("shop");
        b.push(
            (0..10)
                .map(|i| line(i, "web.1", LogSource::App, &format!("m{i}")))
                .collect(),
        );
        b.pause();
        b.push(vec![line(10, "web.1", LogSource::App, "m10")]);
        assert_eq!(msgs(&b, 2), ["m8", "m9"]);
        assert_eq!(b.new_while_paused, 1);
        b.scroll(-3);
        assert_eq!(msgs(&b, 2), ["m5", "m6"]);
        b.scroll(100);
        assert!(b.following());
        assert_eq!(msgs(&b, 2), ["m9", "m10"]);
        b.top();
        assert_eq!(msgs(&b, 2), ["m0"]);
    }

    #[test]
    fn search_shows_matching_lines_only() {
        let mut b = LogBuf::new("shop");
        b.push(vec![
            line(1, "web.1", LogSource::App, "GET /a status=200"),
            line(2, "web.1", LogSource::App, "GET /b status=500"),
            line(3, "worker.1", LogSource::App, "tick 1"),
        ]);
        b.set_search("status=5[0-9]{2}").unwrap();
        assert_eq!(msgs(&b, 10), ["GET /b status=500"]);
        assert!(b.set_search("(").unwrap_err().contains("invalid regex"));
        b.set_search("").unwrap();
        assert_eq!(b.shown().count(), 3);
    }
}
