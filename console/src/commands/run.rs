//! `run`: a one-off dyno whose output streams back and whose exit code becomes ours;
//! `run:detached`: one whose output goes to the app's logs while the command returns at once.

use super::{Ctx, emit_json, emit_line};
use crate::cli::LogsArgs;
use crate::error::usage;
use crate::shell::command_line;
use anyhow::{Context, Result, bail};
use dyno_shared::Size;
use dyno_shared::api::{Dyno, RunEvent, RunRequest};
use dyno_shared::config::parse_assignment;
use std::collections::BTreeMap;
use std::io::BufRead;

/// The request for `COMMAND...` with `-s` and `-e`, checked before anything is sent.
fn request(
    size: Option<&str>,
    env: &[String],
    args: &[String],
    detached: bool,
    usage_line: &str,
) -> Result<RunRequest> {
    let size = size
        .map(|s| s.parse::<Size>())
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    let mut vars = BTreeMap::new();
    for a in env {
        let (k, v) = parse_assignment(a).map_err(|e| usage(e.to_string()))?;
        vars.insert(k, v);
    }
    let command = command_line(args);
    if command.trim().is_empty() {
        return Err(usage(format!("no command given: {usage_line}")));
    }
    Ok(RunRequest {
        command,
        detached,
        size,
        env: vars,
    })
}

/// `dyno run:detached`: starts the one-off and prints heroku's two lines,
/// `Running COMMAND on APP... up, run.3 (Standard-1X)` and how to see its output; `--tail`
/// then follows that output in the logs (until interrupted), `--json` prints the `Dyno`.
pub fn detached(
    ctx: &Ctx,
    size: Option<&str>,
    env: &[String],
    tail: bool,
    args: &[String],
) -> Result<i32> {
    let request = request(
        size,
        env,
        args,
        true,
        "dyno run:detached -a APP -- COMMAND ARGS...",
    )?;
    if tail && ctx.json() {
        return Err(usage(
            "--tail prints the dyno's log lines; leave out --json (or use `dyno logs --json`)",
        ));
    }
    let app = ctx.app()?;
    let dyno: Dyno = ctx
        .client()?
        .send("POST", &format!("/apps/{app}/run"), &request)?;
    if ctx.json() {
        emit_json(&dyno)?;
        return Ok(0);
    }
    emit_line(&detached_started(&request.command, &app, &dyno))?;
    if !tail {
        emit_line(&format!(
            "Run `dyno logs -a {app} -d {} --tail` to view the output.",
            dyno.name
        ))?;
        return Ok(0);
    }
    super::logs::logs(
        ctx,
        &LogsArgs {
            num: 1500,
            tail: true,
            dyno: Some(dyno.name.clone()),
            ps: None,
            source: None,
            grep: None,
        },
    )
}

/// `Running bin/migrate on shop... up, run.3 (Standard-1X)`.
pub fn detached_started(command: &str, app: &str, dyno: &Dyno) -> String {
    format!(
        "Running {command} on {app}... up, {} ({})",
        dyno.name,
        crate::output::display_size(dyno.size)
    )
}

pub fn run(
    ctx: &Ctx,
    size: Option<&str>,
    env: &[String],
    verbose: bool,
    args: &[String],
) -> Result<i32> {
    let request = request(size, env, args, false, "dyno run -a APP -- COMMAND ARGS...")?;
    let command = request.command.clone();
    let app = ctx.app()?;
    let body = serde_json::to_value(&request)?;
    let reader = ctx
        .client()?
        .stream("POST", &format!("/apps/{app}/run"), &[], Some(&body))?;
    let mut dyno = String::new();
    let mut output: Vec<String> = Vec::new();
    for line in reader.lines() {
        let line = line.context("the run stream broke off")?;
        if line.trim().is_empty() {
            continue;
        }
        let event: RunEvent = serde_json::from_str(&line)
            .with_context(|| format!("unexpected line in the run stream: {line}"))?;
        match event {
            RunEvent::Started { dyno: name } => {
                if verbose {
                    eprintln!("Running `{command}` on {app}... up, {name}");
                }
                dyno = name;
            }
            RunEvent::Line { line } => {
                if ctx.json() {
                    output.push(line.message);
                } else {
                    emit_line(&line.message)?;
                }
            }
            RunEvent::Exit { code } => {
                if ctx.json() {
                    emit_json(&serde_json::json!({
                        "dyno": dyno,
                        "exit_code": code,
                        "output": output,
                    }))?;
                }
                if verbose {
                    eprintln!("{dyno} exited with status {code}");
                }
                return Ok(code);
            }
            RunEvent::Error { message } => bail!("{message}"),
        }
    }
    bail!("the run stream ended before the dyno reported its exit code")
}
