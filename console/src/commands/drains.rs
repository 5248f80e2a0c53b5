//! `drains`, `drains:add`, `drains:remove`: where an app's logs are forwarded.

use super::{Ctx, emit, emit_json, emit_line};
use crate::error::usage;
use crate::output;
use anyhow::Result;
use dyno_shared::api::{CreateLogDrain, LogDrain};

pub fn list(ctx: &Ctx) -> Result<i32> {
    let app = ctx.app()?;
    let drains: Vec<LogDrain> = ctx.client()?.get(&format!("/apps/{app}/log-drains"))?;
    if ctx.json() {
        emit_json(&drains)?;
    } else {
        emit(&output::drains(&app, &drains))?;
    }
    Ok(0)
}

/// The schemes the coordinator can deliver to; it checks the rest of the URL.
const SCHEMES: [&str; 4] = ["syslog://", "syslog+tls://", "https://", "http://"];

fn check_url(url: &str) -> Result<()> {
    if url.trim() != url || url.is_empty() {
        return Err(usage(format!(
            "invalid drain URL {url:?}: expected syslog://HOST:PORT, syslog+tls://HOST:PORT or https://HOST/PATH"
        )));
    }
    if !SCHEMES.iter().any(|s| url.starts_with(s)) {
        return Err(usage(format!(
            "invalid drain URL {url:?}: the scheme must be syslog://, syslog+tls:// or https://"
        )));
    }
    Ok(())
}

pub fn add(ctx: &Ctx, url: &str) -> Result<i32> {
    check_url(url)?;
    let app = ctx.app()?;
    let drain: LogDrain = ctx.client()?.send(
        "POST",
        &format!("/apps/{app}/log-drains"),
        &CreateLogDrain {
            url: url.to_string(),
        },
    )?;
    if ctx.json() {
        emit_json(&drain)?;
    } else {
        emit_line(&format!("Successfully added drain {}", drain.url))?;
    }
    Ok(0)
}

pub fn remove(ctx: &Ctx, url_or_token: &str) -> Result<i32> {
    if url_or_token.trim().is_empty() {
        return Err(usage(
            "no drain given: pass its URL or token, as `dyno drains` shows them",
        ));
    }
    let app = ctx.app()?;
    let drain: LogDrain = ctx.client()?.delete(&format!(
        "/apps/{app}/log-drains/{}",
        path_segment(url_or_token)
    ))?;
    if ctx.json() {
        emit_json(&drain)?;
    } else {
        emit_line(&format!("Successfully removed drain {}", drain.url))?;
    }
    Ok(0)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a URL fits in one path
/// segment.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::error::exit_code;
    use clap::Parser;

    #[test]
    fn parses_heroku_shapes() {
        let cli = Cli::try_parse_from([
            "dyno",
            "drains:add",
            "syslog://logs.example.com:514",
            "-a",
            "shop",
        ])
        .unwrap();
        assert_eq!(cli.global.app.as_deref(), Some("shop"));
        match cli.command {
            Command::DrainsAdd { url } => assert_eq!(url, "syslog://logs.example.com:514"),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["dyno", "drains:remove", "d.abc", "-a", "shop"]).unwrap();
        match cli.command {
            Command::DrainsRemove { url_or_token } => assert_eq!(url_or_token, "d.abc"),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["dyno", "drains", "--json", "-a", "shop"]).unwrap();
        assert!(matches!(cli.command, Command::Drains));
        assert!(cli.global.json);
        assert!(Cli::try_parse_from(["dyno", "drains:add"]).is_err());
        assert!(Cli::try_parse_from(["dyno", "drains:remove"]).is_err());
    }

    #[test]
    fn urls_need_a_deliverable_scheme() {
        for ok in [
            "syslog://h:514",
            "syslog+tls://h:6514",
            "https://u:p@h/logs",
            "http://127.0.0.1:8080/",
        ] {
            check_url(ok).unwrap();
        }
        for bad in ["", " syslog://h:1", "udp://h:514", "h:514", "ftp://h/"] {
            let err = check_url(bad).unwrap_err();
            assert_eq!(exit_code(&err), 2, "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn drain_urls_fit_one_path_segment() {
        assert_eq!(
            path_segment("syslog+tls://h.example.com:6514/x?y=1"),
            "syslog%2Btls%3A%2F%2Fh.example.com%3A6514%2Fx%3Fy%3D1"
        );
        assert_eq!(
            path_segment("d.01234567-89ab-4cde-af01-23456789abcd"),
            "d.01234567-89ab-4cde-af01-23456789abcd"
        );
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
