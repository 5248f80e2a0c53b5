//! Router log lines in Heroku's logfmt layout.

use dyno_shared::{LogLine, LogSource};
use std::fmt::Write as _;
use tokio::sync::mpsc::{Sender, error::TrySendError};

/// Where router log lines go. Never blocks: a full channel drops the line.
#[derive(Debug, Clone)]
pub(crate) struct LogSink(Option<Sender<LogLine>>);

impl LogSink {
    pub(crate) fn new(sender: Option<Sender<LogLine>>) -> Self {
        LogSink(sender)
    }

    pub(crate) fn emit(&self, app: &str, message: String) {
        tracing::debug!(app, "{message}");
        let Some(sender) = &self.0 else { return };
        let line = LogLine {
            at: dyno_shared::time::now_micros(),
            app: app.to_string(),
            source: LogSource::Router,
            process: "router".to_string(),
            message,
        };
        if let Err(TrySendError::Full(_)) = sender.try_send(line) {
            tracing::debug!(app, "router log channel full; dropped a line");
        }
    }
}

/// What a log line says about the request itself, fixed before it is proxied.
#[derive(Debug, Clone)]
pub(crate) struct RequestInfo {
    pub(crate) app: String,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) host: String,
    pub(crate) request_id: String,
    /// The X-Forwarded-For value sent to the dyno.
    pub(crate) fwd: String,
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
    let mut line = String::with_capacity(256);
    match out.error {
        Some((code, desc)) => {
            let _ = write!(line, "at=error code={code} desc=\"{desc}\" ");
        }
        None => line.push_str("at=info "),
    }
    let _ = write!(
        line,
        "method={} path={} host={} request_id={} fwd=\"{}\" dyno={} connect={}ms service={}ms \
         status={} bytes={} protocol=http",
        req.method,
        req.path,
        req.host,
        req.request_id,
        // The client controls part of this value; keep it from breaking out of the quotes.
        req.fwd.replace(['"', '\\'], ""),
        out.dyno,
        out.connect_ms,
        out.service_ms,
        out.status,
        out.bytes,
    );
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RequestInfo {
        RequestInfo {
            app: "shop".into(),
            method: "GET".into(),
            path: "/".into(),
            host: "shop.localhost".into(),
            request_id: "abc".into(),
            fwd: "1.2.3.4".into(),
        }
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
        let mut sneaky = info();
        sneaky.fwd = "1.1.1.1\" at=info, 2.2.2.2".into();
        assert!(format_line(&sneaky, &ok).contains("fwd=\"1.1.1.1 at=info, 2.2.2.2\""));
    }
}
