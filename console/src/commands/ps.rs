//! `ps`, `ps:scale`, `ps:wait`, `ps:restart`, `ps:stop`.

use super::{Ctx, emit, emit_json, emit_line};
use crate::cli::WaitArgs;
use crate::client::Client;
use crate::error::{ApiError, usage};
use crate::output;
use crate::wait::not_ready;
use anyhow::Result;
use dyno_shared::api::{ActionResult, App, Dyno, DynoSelector, FormationItem, ScaleRequest};
use dyno_shared::scale::parse_scale_args;
use dyno_shared::time::now_secs;
use dyno_shared::{DynoName, ProcessType};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(200);

pub fn list(ctx: &Ctx) -> Result<i32> {
    let app = ctx.app()?;
    let dynos: Vec<Dyno> = ctx.client()?.get(&format!("/apps/{app}/dynos"))?;
    if ctx.json() {
        emit_json(&dynos)?;
    } else if dynos.is_empty() {
        emit_line(&format!("No dynos on {app}"))?;
    } else {
        emit(&output::ps(&dynos, now_secs()))?;
    }
    Ok(0)
}

pub fn scale(ctx: &Ctx, args: &[String], wait: &WaitArgs) -> Result<i32> {
    // Every argument is checked before anything is sent: one bad one changes nothing.
    let parsed = if args.is_empty() {
        Vec::new()
    } else {
        parse_scale_args(args).map_err(|e| usage(e.to_string()))?
    };
    let app = ctx.app()?;
    let client = ctx.client()?;
    let path = format!("/apps/{app}/formation");
    if parsed.is_empty() {
        let formation: Vec<FormationItem> = client.get(&path)?;
        if ctx.json() {
            emit_json(&formation)?;
        } else if formation.is_empty() {
            eprintln!("No process types on {app}; deploy a Procfile to add some.");
        } else {
            emit_line(&output::formation(&formation))?;
        }
        if wait.wait {
            wait_for_formation(
                &client,
                &app,
                Duration::from_secs(wait.wait_timeout),
                &mut || Ok(()),
            )?;
        }
        return Ok(0);
    }
    let request = ScaleRequest {
        args: parsed.iter().map(|a| a.to_string()).collect(),
    };
    let formation: Vec<FormationItem> = client.send("POST", &format!("{path}/scale"), &request)?;
    let changed: Vec<String> = parsed.iter().map(|a| a.process_type.to_string()).collect();
    if !ctx.json() {
        emit_line(&output::scale_done(&formation, &changed))?;
    }
    if wait.wait {
        eprint!("Waiting for dynos to be up...");
        wait_for_formation(
            &client,
            &app,
            Duration::from_secs(wait.wait_timeout),
            &mut || Ok(()),
        )
        .inspect_err(|_| eprintln!())?;
        eprintln!(" done");
    }
    if ctx.json() {
        emit_json(&formation)?;
    }
    Ok(0)
}

pub fn wait_command(ctx: &Ctx, timeout: u64) -> Result<i32> {
    let app = ctx.app()?;
    let client = ctx.client()?;
    eprint!("Waiting for every dyno of {app} to be up...");
    wait_for_formation(&client, &app, Duration::from_secs(timeout), &mut || Ok(()))
        .inspect_err(|_| eprintln!())?;
    eprintln!(" done");
    Ok(0)
}

/// Polls until every type has exactly its quantity of dynos `up` on the current release.
/// `tick` runs on every round, so a caller can stop the wait (e.g. on a signal).
pub fn wait_for_formation(
    client: &Client,
    app: &str,
    timeout: Duration,
    tick: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        tick()?;
        let round = (|| -> Result<Vec<String>> {
            let info: App = client.get(&format!("/apps/{app}"))?;
            let formation: Vec<FormationItem> = client.get(&format!("/apps/{app}/formation"))?;
            let dynos: Vec<Dyno> = client.get(&format!("/apps/{app}/dynos"))?;
            Ok(not_ready(&formation, &dynos, info.release))
        })();
        let problems = match round {
            Ok(p) if p.is_empty() => return Ok(()),
            Ok(p) => p,
            Err(e) => {
                // A 4xx will not fix itself; anything else may be a coordinator restarting.
                let permanent = e
                    .downcast_ref::<ApiError>()
                    .and_then(|a| a.status)
                    .is_some_and(|s| (400..500).contains(&s));
                if permanent {
                    return Err(e);
                }
                vec![format!("{e:#}")]
            }
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {}s waiting for the dynos of {app}: {}",
                timeout.as_secs(),
                problems.join("; ")
            );
        }
        std::thread::sleep(POLL);
    }
}

pub fn restart(
    ctx: &Ctx,
    dyno: Option<&str>,
    process_type: Option<&str>,
    batch: Option<&str>,
) -> Result<i32> {
    if let Some(b) = batch {
        // Checked here so a typo changes nothing (100: any count is fine, the share is checked).
        dyno_shared::api::batch_size(b, 100).map_err(usage)?;
    }
    let selector = DynoSelector {
        dyno: dyno.map(parse_dyno).transpose()?,
        process_type: process_type.map(parse_type).transpose()?,
        batch: batch.map(str::to_string),
    };
    let app = ctx.app()?;
    let what = match batch {
        Some(b) => format!("{} in batches of {b}", describe(&selector)),
        None => describe(&selector),
    };
    let result: ActionResult =
        ctx.client()?
            .send("POST", &format!("/apps/{app}/restart"), &selector)?;
    report(ctx, &format!("Restarting {what} on {app}"), &result)
}

pub fn stop(ctx: &Ctx, target: &str) -> Result<i32> {
    // As in heroku: a dot means one dyno, otherwise a process type.
    let selector = if target.contains('.') {
        DynoSelector {
            dyno: Some(parse_dyno(target)?),
            process_type: None,
            batch: None,
        }
    } else {
        DynoSelector {
            dyno: None,
            process_type: Some(parse_type(target)?),
            batch: None,
        }
    };
    let app = ctx.app()?;
    let what = describe(&selector);
    let result: ActionResult =
        ctx.client()?
            .send("POST", &format!("/apps/{app}/stop"), &selector)?;
    report(ctx, &format!("Stopping {what} on {app}"), &result)
}

fn parse_dyno(s: &str) -> Result<String> {
    s.parse::<DynoName>()
        .map(|d| d.to_string())
        .map_err(|e| usage(e.to_string()))
}

fn parse_type(s: &str) -> Result<String> {
    s.parse::<ProcessType>()
        .map(|t| t.to_string())
        .map_err(|e| usage(e.to_string()))
}

fn describe(selector: &DynoSelector) -> String {
    match (&selector.dyno, &selector.process_type) {
        (Some(d), _) => format!("{d} dyno"),
        (None, Some(t)) => format!("{t} dynos"),
        (None, None) => "dynos".to_string(),
    }
}

fn report(ctx: &Ctx, action: &str, result: &ActionResult) -> Result<i32> {
    if ctx.json() {
        emit_json(result)?;
    } else {
        emit_line(&format!("{action}... done"))?;
        if result.dynos.is_empty() {
            eprintln!("(no dynos matched)");
        }
    }
    Ok(0)
}
