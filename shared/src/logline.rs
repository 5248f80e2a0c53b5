//! Log lines as the platform stores, streams and prints them.

use serde::{Deserialize, Serialize};

/// Longer output lines are split into pieces of at most this many bytes.
pub const MAX_LINE_BYTES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// A dyno's own output.
    App,
    /// The platform: state changes, scaling, releases (Heroku's `heroku` source).
    System,
    /// The HTTP router.
    Router,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::App => "app",
            LogSource::System => "system",
            LogSource::Router => "router",
        }
    }
    pub fn parse(s: &str) -> Option<LogSource> {
        match s {
            "app" => Some(LogSource::App),
            "system" | "heroku" => Some(LogSource::System),
            "router" => Some(LogSource::Router),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Unix microseconds.
    pub at: i64,
    pub app: String,
    pub source: LogSource,
    /// `web.1`, `router`, `manager`, `api`.
    pub process: String,
    pub message: String,
}

impl LogLine {
    /// `2026-11-23T15:13:46.677020+00:00 app[web.1]: MESSAGE`
    pub fn render(&self) -> String {
        let source = match self.source {
            LogSource::App => "app",
            LogSource::System | LogSource::Router => "heroku",
        };
        format!(
            "{} {}[{}]: {}",
            crate::time::rfc3339_micros(self.at),
            source,
            self.process,
            self.message
        )
    }
}

/// Splits `text` into pieces of at most `MAX_LINE_BYTES`, on char boundaries.
pub fn split_long(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_heroku_layout() {
        let l = LogLine {
            at: 1_795_446_826_677_020,
            app: "shop".into(),
            source: LogSource::App,
            process: "web.1".into(),
            message: "hello".into(),
        };
        assert_eq!(
            l.render(),
            "2026-11-23T15:13:46.677020+00:00 app[web.1]: hello"
        );
    }

    #[test]
    fn splits_long_lines_on_char_boundaries() {
        let s = "é".repeat(MAX_LINE_BYTES);
        let parts = split_long(&s);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert_eq!(parts.concat(), s);
        assert_eq!(split_long("short"), vec!["short"]);
    }
}
