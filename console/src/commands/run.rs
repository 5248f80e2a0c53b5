//! `run`: a one-off dyno whose output streams back and whose exit code becomes ours.

use super::{Ctx, emit_json, emit_line};
use crate::error::usage;
use crate::shell::command_line;
use anyhow::{Context, Result, bail};
use dyno_shared::Size;
use dyno_shared::api::{RunEvent, RunRequest};
use dyno_shared::config::parse_assignment;
use std::collections::BTreeMap;
use std::io::BufRead;

pub fn run(
    ctx: &Ctx,
    size: Option<&str>,
    env: &[String],
    verbose: bool,
    args: &[String],
) -> Result<i32> {
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
        return Err(usage(
            "no command given: dyno run -a APP -- COMMAND ARGS...",
        ));
    }
    let app = ctx.app()?;
    let request = RunRequest {
        command: command.clone(),
        detached: false,
        size,
        env: vars,
    };
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
