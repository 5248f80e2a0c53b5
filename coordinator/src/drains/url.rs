//! Drain URLs: which schemes are accepted and what each needs, checked before anything is stored.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest drain URL accepted.
pub const MAX_DRAIN_URL_BYTES: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 5424 over TCP with octet counting (RFC 6587).
    Syslog,
    /// The same over TLS.
    SyslogTls,
    /// Batches POSTed as `application/logplex-1`.
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Syslog => "syslog",
            Scheme::SyslogTls => "syslog+tls",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Scheme::SyslogTls | Scheme::Https)
    }

    pub fn is_http(self) -> bool {
        matches!(self, Scheme::Http | Scheme::Https)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainUrl {
    pub scheme: Scheme,
    /// A host name or an IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query for HTTP drains (`/` when absent); empty for syslog.
    pub target: String,
    /// `user:password` for HTTP basic auth, percent-decoded.
    pub userinfo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainUrlError {
    #[error("drain URL is {0} bytes; the limit is {MAX_DRAIN_URL_BYTES}")]
    TooLong(usize),
    #[error("drain URL must not contain spaces or control characters")]
    BadCharacter,
    #[error("drain URL {0:?} has no scheme: use syslog://, syslog+tls://, https:// or http://")]
    NoScheme(String),
    #[error("unsupported drain scheme {0:?}: use syslog://, syslog+tls://, https:// or http://")]
    UnsupportedScheme(String),
    #[error("drain URL has no host")]
    NoHost,
    #[error("invalid host {0:?} in drain URL")]
    BadHost(String),
    #[error("{0}:// drains need a port, e.g. {0}://logs.example.com:6514")]
    NoPort(&'static str),
    #[error("invalid port {0:?} in drain URL: expected 1-65535")]
    BadPort(String),
    #[error("{0}:// drains take no path, query or fragment")]
    PathNotAllowed(&'static str),
    #[error("{0}:// drains take no user or password")]
    UserinfoNotAllowed(&'static str),
    #[error("drain URLs take no #fragment")]
    Fragment,
    #[error("invalid percent-encoding in the user or password of the drain URL")]
    BadEncoding,
}

impl FromStr for DrainUrl {
    type Err = DrainUrlError;

    fn from_str(raw: &str) -> Result<DrainUrl, DrainUrlError> {
        if raw.len() > MAX_DRAIN_URL_BYTES {
            return Err(DrainUrlError::TooLong(raw.len()));
        }
        if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(if raw.is_empty() {
                DrainUrlError::NoScheme(String::new())
            } else {
                DrainUrlError::BadCharacter
            });
        }
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| DrainUrlError::NoScheme(raw.to_string()))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "syslog" => Scheme::Syslog,
            "syslog+tls" => Scheme::SyslogTls,
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(DrainUrlError::UnsupportedScheme(other.to_string())),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if target.contains('#') {
            return Err(DrainUrlError::Fragment);
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if !scheme.is_http() {
            if userinfo.is_some() {
                return Err(DrainUrlError::UserinfoNotAllowed(scheme.as_str()));
            }
            if !(target.is_empty() || target == "/") {
                return Err(DrainUrlError::PathNotAllowed(scheme.as_str()));
            }
        }
        let (host, port) = split_host_port(hostport)?;
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(DrainUrlError::BadPort(p.to_string())),
            },
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
                Scheme::Syslog | Scheme::SyslogTls => {
                    return Err(DrainUrlError::NoPort(scheme.as_str()));
                }
            },
        };
        Ok(DrainUrl {
            scheme,
            host,
            port,
            target: match (scheme.is_http(), target.is_empty()) {
                (false, _) => String::new(),
                (true, true) => "/".into(),
                (true, false) if target.starts_with('?') => format!("/{target}"),
                (true, false) => target.to_string(),
            },
            userinfo: userinfo.map(percent_decode).transpose()?,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, with the host checked.
fn split_host_port(s: &str) -> Result<(String, Option<&str>), DrainUrlError> {
    if s.is_empty() {
        return Err(DrainUrlError::NoHost);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| DrainUrlError::BadHost(s.to_string()))?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| DrainUrlError::BadHost(v6.to_string()))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| DrainUrlError::BadHost(s.to_string()))?,
            ),
        };
        return Ok((v6.to_string(), port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if host.is_empty() {
        return Err(DrainUrlError::NoHost);
    }
    let is_name = host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    // All-digit labels must make an IPv4 address, so `999.1.1.1` is refused.
    let looks_numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !is_name || (looks_numeric && host.parse::<Ipv4Addr>().is_err()) {
        return Err(DrainUrlError::BadHost(host.to_string()));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn percent_decode(s: &str) -> Result<String, DrainUrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(DrainUrlError::BadEncoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| DrainUrlError::BadEncoding)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DrainUrlError::BadEncoding)
}

impl DrainUrl {
    /// `host:port` as an HTTP `Host` header, brackets around IPv6, default ports left out.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.scheme, self.port) {
            (Scheme::Http, 80) | (Scheme::Https, 443) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// Where the drain sends, without credentials (for the daemon's own log).
impl fmt::Display for DrainUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{}://{host}:{}{}",
            self.scheme.as_str(),
            self.port,
            self.target.split('?').next().unwrap_or("")
        )
    }
}

/// Standard base64 with padding, for the HTTP basic auth header.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | ((*b as u32) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> DrainUrl {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        s.parse::<DrainUrl>().unwrap_err().to_string()
    }

    #[test]
    fn accepts_the_four_schemes() {
        let u = ok("syslog://logs.example.com:514");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.target.as_str()),
            (Scheme::Syslog, "logs.example.com", 514, "")
        );
        assert_eq!(ok("syslog+tls://127.0.0.1:6514/").scheme, Scheme::SyslogTls);
        let u = ok("https://user:p%40ss@Logs.Example.com/drain?x=1");
        assert_eq!(u.port, 443);
        assert_eq!(u.host, "logs.example.com");
        assert_eq!(u.target, "/drain?x=1");
        assert_eq!(u.userinfo.as_deref(), Some("user:p@ss"));
        assert_eq!(u.host_header(), "logs.example.com");
        assert_eq!(u.to_string(), "https://logs.example.com:443/drain");
        let u = ok("http://[::1]:8080");
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(u.host_header(), "[::1]:8080");
        assert_eq!(ok("HTTP://h?q").target, "/?q");
    }

    #[test]
    fn refusals_name_the_problem() {
        assert!(err("ftp://h:1").contains("unsupported drain scheme \"ftp\""));
        assert!(err("logs.example.com:514").contains("has no scheme"));
        assert!(err("").contains("has no scheme"));
        assert!(err("syslog://h").contains("syslog:// drains need a port"));
        assert!(err("syslog://h:0").contains("invalid port \"0\""));
        assert!(err("syslog://h:65536").contains("invalid port \"65536\""));
        assert!(err("syslog://h:x").contains("invalid port \"x\""));
        assert!(err("syslog://h:514/path").contains("take no path"));
        assert!(err("syslog://u@h:514").contains("no user or password"));
        assert!(err("https://").contains("no host"));
        assert!(err("https://:80/").contains("no host"));
        assert!(err("https://bad_host!/").contains("invalid host \"bad_host!\""));
        assert!(err("https://999.1.1.1/").contains("invalid host"));
        assert!(err("https://[nope]/").contains("invalid host"));
        assert!(err("https://h/a b").contains("spaces"));
        assert!(err("https://h/#frag").contains("fragment"));
        assert!(err("https://%zz@h/").contains("percent-encoding"));
        let long = format!("https://h/{}", "a".repeat(MAX_DRAIN_URL_BYTES));
        assert!(err(&long).contains("the limit is 2048"));
        let just = format!("https://h/{}", "a".repeat(MAX_DRAIN_URL_BYTES - 10));
        assert_eq!(just.len(), MAX_DRAIN_URL_BYTES);
        ok(&just);
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }
}
