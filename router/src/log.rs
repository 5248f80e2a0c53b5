//! Router log lines in Heroku's logfmt layout.

use dyno_shared::{LogLine, LogSource};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::sync::mpsc::{Sender, error::TrySendError};

/// Lines wait this long for company before they go out together: every send into the log
/// channel may wake its reader on another thread, and one wake per request cost a third of the
/// router's CPU.
const BATCH_WINDOW: Duration = Duration::from_millis(2);

/// Router log lines, a batch at a time.
pub type LogBatches = Sender<Vec<LogLine>>;

/// Where one router worker's log lines go. Never blocks: a full channel drops the batch. Lines
/// are buffered and sent a batch to a message by [`LogSink::forward`], which must run on the
/// worker: a message per line woke the reader on another thread several times a batch.
#[derive(Debug, Clone)]
pub(crate) struct LogSink(Option<Arc<Batch>>);

#[derive(Debug)]
struct Batch {
    sender: LogBatches,
    lines: Mutex<Vec<LogLine>>,
    ready: Notify,
}

impl LogSink {
    pub(crate) fn new(sender: Option<LogBatches>) -> Self {
        LogSink(sender.map(|sender| {
            Arc::new(Batch {
                sender,
                lines: Mutex::new(Vec::new()),
                ready: Notify::new(),
            })
        }))
    }

    /// `at`: microseconds since the Unix epoch.
    pub(crate) fn emit(&self, app: &str, message: String, at: i64) {
        tracing::debug!(app, "{message}");
        let Some(batch) = &self.0 else { return };
        let line = LogLine {
            at,
            app: app.to_string(),
            source: LogSource::Router,
            process: "router".to_string(),
            message,
        };
        let mut lines = batch.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let first = lines.is_empty();
        lines.push(line);
        drop(lines);
        if first {
            batch.ready.notify_one();
        }
    }

    /// Sends buffered lines, a batch at a time, forever.
    pub(crate) async fn forward(&self) {
        let Some(batch) = &self.0 else { return };
        loop {
            batch.ready.notified().await;
            tokio::time::sleep(BATCH_WINDOW).await;
            self.flush();
        }
    }

    /// Sends what is buffered now.
    pub(crate) fn flush(&self) {
        let Some(batch) = &self.0 else { return };
        let lines = {
            let mut buffered = batch.lines.lock().unwrap_or_else(PoisonError::into_inner);
            if buffered.is_empty() {
                return;
            }
            // The next batch is likely as big: spare it growing from empty.
            let capacity = buffered.capacity();
            std::mem::replace(&mut *buffered, Vec::with_capacity(capacity))
        };
        if let Err(TrySendError::Full(lines)) = batch.sender.try_send(lines) {
            tracing::debug!(
                dropped = lines.len(),
                "router log channel full; dropped lines"
            );
        }
    }
}

/// What a log line says about the request itself, fixed before it is proxied. Its texts share
/// one buffer: one allocation per request rather than one per field.
#[derive(Debug, Clone)]
pub(crate) struct RequestInfo {
    /// The fields, in `Field` order, one after another.
    text: String,
    /// Where each field ends in `text`.
    ends: [usize; FIELDS],
    /// `http` or `https`: how the client reached the router.
    pub(crate) protocol: &'static str,
    /// When the router had the request's head, on the monotonic clock and in microseconds since
    /// the Unix epoch: later times on the wall clock are counted from these, without reading it.
    received: Instant,
    received_micros: i64,
}

/// `RequestInfo`'s texts, in the order they are written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field {
    /// Lowercase, without port or trailing dot: routing needs it first.
    Host,
    App,
    Method,
    Path,
    RequestId,
    /// The X-Forwarded-For value sent to the dyno.
    Fwd,
}

const FIELDS: usize = 6;

impl RequestInfo {
    pub(crate) fn new(fields: [&str; FIELDS], protocol: &'static str) -> Self {
        let mut info = InfoBuilder::new(fields.iter().map(|f| f.len()).sum());
        for field in fields {
            info.field(field);
        }
        info.finish(protocol, Instant::now(), dyno_shared::time::now_micros())
    }

    /// When the router had the request's head.
    pub(crate) fn received(&self) -> Instant {
        self.received
    }

    /// `at` in microseconds since the Unix epoch.
    pub(crate) fn wall_micros(&self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.received).as_micros();
        self.received_micros
            .saturating_add(i64::try_from(since).unwrap_or(i64::MAX))
    }

    pub(crate) fn get(&self, field: Field) -> &str {
        let at = field as usize;
        let start = if at == 0 { 0 } else { self.ends[at - 1] };
        &self.text[start..self.ends[at]]
    }

    pub(crate) fn app(&self) -> &str {
        self.get(Field::App)
    }

    pub(crate) fn host(&self) -> &str {
        self.get(Field::Host)
    }

    pub(crate) fn request_id(&self) -> &str {
        self.get(Field::RequestId)
    }

    pub(crate) fn fwd(&self) -> &str {
        self.get(Field::Fwd)
    }
}

/// Writes a `RequestInfo` a field at a time, in `Field` order.
pub(crate) struct InfoBuilder {
    text: String,
    ends: [usize; FIELDS],
    done: usize,
}

impl InfoBuilder {
    pub(crate) fn new(capacity: usize) -> Self {
        InfoBuilder {
            text: String::with_capacity(capacity),
            ends: [0; FIELDS],
            done: 0,
        }
    }

    /// The buffer, to append the current field to.
    pub(crate) fn text(&mut self) -> &mut String {
        &mut self.text
    }

    /// The current field so far.
    pub(crate) fn current(&self) -> &str {
        let start = if self.done == 0 {
            0
        } else {
            self.ends[self.done - 1]
        };
        &self.text[start..]
    }

    pub(crate) fn end_field(&mut self) {
        self.ends[self.done] = self.text.len();
        self.done += 1;
    }

    /// Writes a whole field.
    pub(crate) fn field(&mut self, text: &str) {
        self.text.push_str(text);
        self.end_field();
    }

    /// With when the request came, as in `RequestInfo`.
    pub(crate) fn finish(
        self,
        protocol: &'static str,
        received: Instant,
        received_micros: i64,
    ) -> RequestInfo {
        debug_assert_eq!(self.done, FIELDS, "every field written");
        RequestInfo {
            text: self.text,
            ends: self.ends,
            protocol,
            received,
            received_micros,
        }
    }
}

/// How the request ended, for the second half of the line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome<'a> {
    /// (code, description) for errors, such as ("H12", "Request timeout").
    pub(crate) error: Option<(&'a str, &'a str)>,
    pub(crate) dyno: &'a str,
    pub(crate) connect_ms: u128,
    pub(crate) service_ms: u128,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
}

/// `at=info method=GET path=/ host=shop.localhost request_id=... fwd="1.2.3.4" dyno=web.1
/// connect=1ms service=18ms status=200 bytes=13 protocol=http`
pub(crate) fn format_line(req: &RequestInfo, out: &Outcome<'_>) -> String {
    // push_str rather than one big write!: this runs for every request.
    let (path, host, fwd) = (req.get(Field::Path), req.host(), req.fwd());
    let mut line = String::with_capacity(192 + path.len() + host.len());
    match out.error {
        Some((code, desc)) => {
            line.push_str("at=error code=");
            line.push_str(code);
            line.push_str(" desc=\"");
            line.push_str(desc);
            line.push_str("\" ");
        }
        None => line.push_str("at=info "),
    }
    line.push_str("method=");
    line.push_str(req.get(Field::Method));
    line.push_str(" path=");
    line.push_str(path);
    line.push_str(" host=");
    line.push_str(host);
    line.push_str(" request_id=");
    line.push_str(req.request_id());
    line.push_str(" fwd=\"");
    // The client controls part of this value; keep it from breaking out of the quotes.
    if fwd.contains(['"', '\\']) {
        line.extend(fwd.chars().filter(|c| !matches!(c, '"' | '\\')));
    } else {
        line.push_str(fwd);
    }
    line.push_str("\" dyno=");
    line.push_str(out.dyno);
    // itoa: the formatting machinery cost as much as the rest of the line.
    line.push_str(" connect=");
    push_decimal(&mut line, out.connect_ms);
    line.push_str("ms service=");
    push_decimal(&mut line, out.service_ms);
    line.push_str("ms status=");
    push_decimal(&mut line, u128::from(out.status));
    line.push_str(" bytes=");
    push_decimal(&mut line, u128::from(out.bytes));
    line.push_str(" protocol=");
    line.push_str(req.protocol);
    line
}

fn push_decimal(line: &mut String, n: u128) {
    let mut digits = itoa::Buffer::new();
    match u64::try_from(n) {
        Ok(small) => line.push_str(digits.format(small)),
        Err(_) => line.push_str(digits.format(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RequestInfo {
        info_with_fwd("1.2.3.4")
    }

    fn info_with_fwd(fwd: &str) -> RequestInfo {
        RequestInfo::new(["shop.localhost", "shop", "GET", "/", "abc", fwd], "http")
    }

    #[test]
    fn each_field_reads_back_as_written() {
        let info = RequestInfo::new(["h", "", "GET", "/p?q", "id", "1.2.3.4"], "https");
        assert_eq!(info.host(), "h");
        assert_eq!(info.app(), "");
        assert_eq!(info.get(Field::Method), "GET");
        assert_eq!(info.get(Field::Path), "/p?q");
        assert_eq!(info.request_id(), "id");
        assert_eq!(info.fwd(), "1.2.3.4");
        let later = info.received + Duration::from_millis(1500);
        assert_eq!(info.wall_micros(later), info.received_micros + 1_500_000);
        assert_eq!(info.wall_micros(info.received), info.received_micros);
    }

    #[test]
    fn formats_info_and_error_lines() {
        let ok = Outcome {
            dyno: "web.1",
            connect_ms: 1,
            service_ms: 18,
            status: 200,
            bytes: 13,
            ..Outcome::default()
        };
        assert_eq!(
            format_line(&info(), &ok),
            "at=info method=GET path=/ host=shop.localhost request_id=abc fwd=\"1.2.3.4\" \
             dyno=web.1 connect=1ms service=18ms status=200 bytes=13 protocol=http"
        );
        let timeout = Outcome {
            error: Some(("H12", "Request timeout")),
            dyno: "web.1",
            service_ms: 30000,
            status: 503,
            ..Outcome::default()
        };
        assert!(format_line(&info(), &timeout).starts_with(
            "at=error code=H12 desc=\"Request timeout\" method=GET path=/ host=shop.localhost"
        ));
        let big = Outcome {
            dyno: "web.10",
            connect_ms: 0,
            service_ms: u128::from(u64::MAX) + 1,
            status: 504,
            bytes: u64::MAX,
            ..Outcome::default()
        };
        assert!(format_line(&info(), &big).ends_with(
            "dyno=web.10 connect=0ms service=18446744073709551616ms status=504 \
             bytes=18446744073709551615 protocol=http"
        ));
        let sneaky = info_with_fwd("1.1.1.1\" at=info, 2.2.2.2");
        assert!(format_line(&sneaky, &ok).contains("fwd=\"1.1.1.1 at=info, 2.2.2.2\""));
    }
}
