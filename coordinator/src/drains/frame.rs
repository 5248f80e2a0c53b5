//! Heroku's drain framing: RFC 5424 syslog messages, octet-counted as in RFC 6587, the same
//! bytes for syslog drains and in the body of HTTPS drain batches.
//!
//! `<190>1 2026-11-25T12:00:00.123456+00:00 d.TOKEN app web.1 - - message`: HOSTNAME is the
//! drain's token (so one receiver can tell drains apart), APP-NAME is `app` for dyno output and
//! `heroku` for the platform and the router, PROCID the dyno or component. Heroku's HTTPS drains
//! leave out the structured-data dash; we send the valid RFC 5424 form everywhere.

use dyno_shared::time::rfc3339_micros;
use dyno_shared::{LogLine, LogSource};
use std::borrow::Cow;
use std::io::Write;

/// PRI as logplex sends it: app output local7.info, router local3.info, platform syslog.notice.
pub fn priority(source: LogSource) -> u8 {
    match source {
        LogSource::App => 190,
        LogSource::Router => 158,
        LogSource::System => 45,
    }
}

/// PRI of logplex's own warnings (local5.warning).
const LOGPLEX_PRIORITY: u8 = 172;

fn app_name(source: LogSource) -> &'static str {
    match source {
        LogSource::App => "app",
        LogSource::System | LogSource::Router => "heroku",
    }
}

/// A header field: printable ASCII without spaces, at most `max` bytes, `-` when empty.
fn field(s: &str, max: usize) -> Cow<'_, str> {
    if s.is_empty() {
        return Cow::Borrowed("-");
    }
    if s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b)) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
            .take(max)
            .collect(),
    )
}

/// One line as an RFC 5424 message (without the octet count).
pub fn message(line: &LogLine, host: &str) -> Vec<u8> {
    format!(
        "<{}>1 {} {} {} {} - - {}",
        priority(line.source),
        rfc3339_micros(line.at),
        field(host, 255),
        app_name(line.source),
        field(&line.process, 128),
        line.message
    )
    .into_bytes()
}

/// logplex's L10 warning for a drain that lost lines while it could not keep up.
pub fn overflow_message(host: &str, dropped: u64, since: i64, now: i64) -> Vec<u8> {
    format!(
        "<{LOGPLEX_PRIORITY}>1 {} {} heroku logplex - - Error L10 (output buffer overflow): \
         {dropped} messages dropped since {}.",
        rfc3339_micros(now),
        field(host, 255),
        rfc3339_micros(since)
    )
    .into_bytes()
}

/// Appends `LEN SP MSG` (RFC 6587 octet counting) to `out`.
pub fn octet_counted(msg: &[u8], out: &mut Vec<u8>) {
    let _ = write!(out, "{} ", msg.len());
    out.extend_from_slice(msg);
}

/// Every message of a batch, octet-counted, back to back.
pub fn frames(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msgs.iter().map(|m| m.len() + 6).sum());
    for m in msgs {
        octet_counted(m, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(source: LogSource, process: &str, message: &str) -> LogLine {
        LogLine {
            at: 1_795_446_826_677_020,
            app: "shop".into(),
            source,
            process: process.into(),
            message: message.into(),
        }
    }

    #[test]
    fn formats_heroku_syslog_messages() {
        let m = message(&line(LogSource::App, "web.1", "hello world"), "d.abc");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<190>1 2026-11-23T15:13:46.677020+00:00 d.abc app web.1 - - hello world"
        );
        let m = message(&line(LogSource::Router, "router", "at=info"), "d.abc");
        assert!(String::from_utf8(m).unwrap().starts_with("<158>1 "));
        let m = message(&line(LogSource::System, "web.1", "State changed"), "d.abc");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<45>1 2026-11-23T15:13:46.677020+00:00 d.abc heroku web.1 - - State changed"
        );
        // Header fields never carry spaces; an empty one is `-`.
        let m = message(&line(LogSource::App, "", "x"), "a b");
        assert!(String::from_utf8(m).unwrap().contains(" a_b app - - - x"));
    }

    #[test]
    fn octet_counts_in_bytes() {
        let msgs = vec![b"abc".to_vec(), "é".as_bytes().to_vec()];
        assert_eq!(frames(&msgs), b"3 abc2 \xc3\xa9".to_vec());
        let m = overflow_message("d.abc", 42, 1_795_446_826_000_000, 1_795_446_830_000_000);
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<172>1 2026-11-23T15:13:50.000000+00:00 d.abc heroku logplex - - Error L10 \
             (output buffer overflow): 42 messages dropped since 2026-11-23T15:13:46.000000+00:00."
        );
    }
}
