//! `apps`, `apps:create`, `apps:destroy`, `releases`, `hosts`.

use super::{Ctx, app_name, emit, emit_json, emit_line};
use crate::error::usage;
use crate::output;
use anyhow::Result;
use dyno_shared::api::{App, CreateApp, Host, Release};
use dyno_shared::time::now_secs;

pub fn list(ctx: &Ctx) -> Result<i32> {
    let apps: Vec<App> = ctx.client()?.get("/apps")?;
    if ctx.json() {
        emit_json(&apps)?;
    } else {
        emit(&output::apps(&apps))?;
    }
    Ok(0)
}

pub fn create(ctx: &Ctx, name: &str, owner: Option<String>) -> Result<i32> {
    let name = app_name(name)?;
    let app: App = ctx.client()?.send(
        "POST",
        "/apps",
        &CreateApp {
            name: name.clone(),
            owner,
        },
    )?;
    if ctx.json() {
        emit_json(&app)?;
    } else {
        emit_line(&format!("Creating {name}... done, {}", app.web_url))?;
    }
    Ok(0)
}

pub fn destroy(ctx: &Ctx, name: Option<&str>, confirm: Option<&str>) -> Result<i32> {
    let name = match name {
        Some(n) => app_name(n)?,
        None => ctx.app()?,
    };
    match confirm {
        Some(c) if c == name => {}
        Some(c) => {
            return Err(usage(format!(
                "confirmation {c:?} does not match {name:?}; nothing was destroyed"
            )));
        }
        None => {
            return Err(usage(format!(
                "this permanently destroys {name} and stops its dynos; re-run with --confirm {name}"
            )));
        }
    }
    let app: App = ctx.client()?.delete(&format!("/apps/{name}"))?;
    if ctx.json() {
        emit_json(&app)?;
    } else {
        emit_line(&format!("Destroying {name} (including all dynos)... done"))?;
    }
    Ok(0)
}

pub fn releases(ctx: &Ctx) -> Result<i32> {
    let app = ctx.app()?;
    let mut releases: Vec<Release> = ctx.client()?.get(&format!("/apps/{app}/releases"))?;
    releases.sort_by_key(|r| std::cmp::Reverse(r.version));
    if ctx.json() {
        emit_json(&releases)?;
    } else {
        emit(&output::releases(&app, &releases, now_secs()))?;
    }
    Ok(0)
}

pub fn hosts(ctx: &Ctx) -> Result<i32> {
    let hosts: Vec<Host> = ctx.client()?.get("/hosts")?;
    if ctx.json() {
        emit_json(&hosts)?;
    } else {
        emit(&output::hosts(&hosts, now_secs()))?;
    }
    Ok(0)
}
