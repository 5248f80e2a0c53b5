//! The bounded buffer between dyno output and the coordinator. Pushing never waits: when the
//! buffer is full the oldest lines are dropped, and the next batch starts with one L10 warning per
//! dyno that lost lines (Heroku's `Error L10 (output buffer overflow)`).

use std::collections::{BTreeMap, VecDeque};

use dyno_shared::logline::{LogLine, LogSource};
use dyno_shared::protocol::MAX_FRAME_BYTES;

/// Bytes of log lines the agent holds for the coordinator, across all dynos.
pub const LOG_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Most lines in one `Logs` frame.
pub const BATCH_MAX_LINES: usize = 1000;
/// Largest `Logs` frame the agent sends: half the protocol limit leaves room for escaping surprises.
pub const BATCH_MAX_BYTES: usize = MAX_FRAME_BYTES / 2;
/// Per-line bookkeeping (timestamp, JSON keys) so that floods of empty lines still count.
const LINE_OVERHEAD: usize = 64;

#[derive(Debug)]
struct Dropped {
    count: u64,
    since: i64,
}

#[derive(Debug)]
pub struct LogBuffer {
    lines: VecDeque<LogLine>,
    bytes: usize,
    capacity: usize,
    /// Per (app, process): lines dropped since the last batch was taken.
    dropped: BTreeMap<(String, String), Dropped>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer::new(LOG_BUFFER_BYTES)
    }
}

/// What a line costs in the buffer.
pub fn line_cost(line: &LogLine) -> usize {
    line.message.len() + line.app.len() + line.process.len() + LINE_OVERHEAD
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        LogBuffer {
            lines: VecDeque::new(),
            bytes: 0,
            capacity,
            dropped: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.dropped.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn push(&mut self, line: LogLine) {
        self.bytes += line_cost(&line);
        self.lines.push_back(line);
        self.shed();
    }

    /// Puts lines that could not be sent back in front, oldest first.
    pub fn requeue_front(&mut self, lines: Vec<LogLine>) {
        for line in lines.into_iter().rev() {
            self.bytes += line_cost(&line);
            self.lines.push_front(line);
        }
        self.shed();
    }

    fn shed(&mut self) {
        while self.bytes > self.capacity {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= line_cost(&old);
            let entry = self
                .dropped
                .entry((old.app, old.process))
                .or_insert(Dropped {
                    count: 0,
                    since: old.at,
                });
            entry.count += 1;
            entry.since = entry.since.min(old.at);
        }
    }

    /// The next batch: overflow warnings first, then the oldest lines, at most `max_lines` and
    /// (unless a single line is larger) `max_bytes` of line cost.
    pub fn take_batch(&mut self, max_lines: usize, max_bytes: usize) -> Vec<LogLine> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let now = dyno_shared::time::now_micros();
        for ((app, process), d) in std::mem::take(&mut self.dropped) {
            let line = LogLine {
                at: now,
                app,
                source: LogSource::System,
                process,
                message: overflow_message(d.count, d.since),
            };
            bytes += line_cost(&line);
            out.push(line);
        }
        while out.len() < max_lines {
            let Some(front) = self.lines.front() else {
                break;
            };
            let cost = line_cost(front);
            if !out.is_empty() && bytes + cost > max_bytes {
                break;
            }
            bytes += cost;
            self.bytes -= cost;
            out.extend(self.lines.pop_front());
        }
        out
    }
}

pub fn overflow_message(count: u64, since: i64) -> String {
    format!(
        "Error L10 (output buffer overflow) -> {count} messages dropped since {}",
        dyno_shared::time::rfc3339_micros(since)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(process: &str, message: &str, at: i64) -> LogLine {
        LogLine {
            at,
            app: "shop".into(),
            source: LogSource::App,
            process: process.into(),
            message: message.into(),
        }
    }

    #[test]
    fn drops_oldest_when_full_and_says_how_many() {
        let one = line_cost(&line("web.1", "line 00", 0));
        let mut buf = LogBuffer::new(one * 10);
        for i in 0..25 {
            buf.push(line("web.1", &format!("line {i:02}"), 1_000_000 + i));
        }
        assert_eq!(buf.len(), 10);
        assert!(buf.bytes() <= one * 10);
        let batch = buf.take_batch(100, usize::MAX);
        assert_eq!(batch.len(), 11);
        assert_eq!(batch[0].source, LogSource::System);
        assert_eq!(batch[0].process, "web.1");
        assert_eq!(
            batch[0].message,
            "Error L10 (output buffer overflow) -> 15 messages dropped since 1970-01-01T00:00:01.000000+00:00"
        );
        let kept: Vec<_> = batch[1..].iter().map(|l| l.message.as_str()).collect();
        assert_eq!(kept.first(), Some(&"line 15"));
        assert_eq!(kept.last(), Some(&"line 24"));
        // The warning is said once.
        assert!(buf.is_empty());
        assert!(buf.take_batch(100, usize::MAX).is_empty());
    }

    #[test]
    fn the_named_capacity_is_enforced() {
        let mut buf = LogBuffer::default();
        let msg = "x".repeat(dyno_shared::logline::MAX_LINE_BYTES);
        let per = line_cost(&line("worker.1", &msg, 0));
        let total = LOG_BUFFER_BYTES / per + 50;
        for i in 0..total {
            buf.push(line("worker.1", &msg, i as i64));
        }
        assert!(buf.bytes() <= LOG_BUFFER_BYTES);
        assert_eq!(buf.len(), LOG_BUFFER_BYTES / per);
        let batch = buf.take_batch(1, usize::MAX);
        assert!(
            batch[0].message.contains(&format!(
                "-> {} messages dropped",
                total - LOG_BUFFER_BYTES / per
            )),
            "{}",
            batch[0].message
        );
    }

    #[test]
    fn batches_respect_line_and_byte_limits() {
        let mut buf = LogBuffer::new(usize::MAX);
        for i in 0..2500 {
            buf.push(line("web.1", &format!("{i}"), i));
        }
        assert_eq!(buf.take_batch(BATCH_MAX_LINES, BATCH_MAX_BYTES).len(), 1000);
        let cost = line_cost(&line("web.1", "1000", 0));
        let small = buf.take_batch(BATCH_MAX_LINES, cost * 3);
        assert_eq!(small.len(), 3);
        assert_eq!(small[0].message, "1000");
        // A line larger than the byte budget still goes out alone.
        let alone = buf.take_batch(BATCH_MAX_LINES, 1);
        assert_eq!(alone.len(), 1);
        buf.requeue_front(alone);
        assert_eq!(buf.take_batch(1, usize::MAX)[0].message, "1003");
    }
}
