//! `logs`: history and, with `--tail`, live lines.

use super::{Ctx, emit_line};
use crate::error::usage;
use crate::output::log_line;
use anyhow::{Context, Result, bail};
use dyno_shared::{DynoName, LogLine, LogSource, ProcessType};
use std::io::{BufRead, IsTerminal};

pub fn logs(
    ctx: &Ctx,
    num: u32,
    tail: bool,
    dyno: Option<&str>,
    source: Option<&str>,
) -> Result<i32> {
    if let Some(d) = dyno {
        let valid = if d.contains('.') {
            d.parse::<DynoName>().map(|_| ())
        } else {
            d.parse::<ProcessType>().map(|_| ())
        };
        valid.map_err(|e| usage(e.to_string()))?;
    }
    let source = source
        .map(|s| {
            LogSource::parse(s).ok_or_else(|| {
                usage(format!(
                    "invalid log source {s:?}: expected app, system (or heroku) or router"
                ))
            })
        })
        .transpose()?;
    let app = ctx.app()?;
    let lines = num.to_string();
    let mut query: Vec<(&str, &str)> = vec![
        ("lines", lines.as_str()),
        ("tail", if tail { "true" } else { "false" }),
    ];
    if let Some(d) = dyno {
        query.push(("dyno", d));
    }
    if let Some(s) = source {
        query.push(("source", s.as_str()));
    }
    let reader = ctx
        .client()?
        .stream("GET", &format!("/apps/{app}/logs"), &query, None)?;
    let colour = !ctx.json() && std::io::stdout().is_terminal();
    for raw in reader.lines() {
        let raw = raw.context("the log stream broke off")?;
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<LogLine>(&raw) {
            Ok(line) if ctx.json() => emit_line(&serde_json::to_string(&line)?)?,
            Ok(line) => emit_line(&log_line(&line, colour))?,
            Err(e) => eprintln!("warning: skipping a malformed log line ({e}): {raw}"),
        }
    }
    if tail {
        bail!("the coordinator closed the log stream");
    }
    Ok(0)
}
