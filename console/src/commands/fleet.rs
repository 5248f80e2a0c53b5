//! `hosts:drain`, `hosts:undrain`, `releases:rollback`, `checks`, `checks:set`, `checks:unset`.

use super::{Ctx, emit, emit_json, emit_line};
use crate::error::usage;
use crate::output;
use anyhow::Result;
use dyno_shared::ProcessType;
use dyno_shared::api::{
    App, AppUpdate, Check, CheckUpdate, Concurrency, Domain, DomainCreate, Event, Host, Release,
    Requirement, Rollback,
};
use std::collections::BTreeMap;

fn host_name(raw: &str) -> Result<&str> {
    let ok = (1..=63).contains(&raw.len())
        && raw
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(raw)
    } else {
        Err(usage(format!(
            "invalid host name {raw:?}: use 1-63 letters, digits, '.', '_' and '-' as `dyno hosts` lists them"
        )))
    }
}

/// Drains (`drain`) or undrains a host.
pub fn drain(ctx: &Ctx, host: &str, drain: bool) -> Result<i32> {
    let host = host_name(host)?;
    let verb = if drain { "drain" } else { "undrain" };
    let h: Host = ctx.client()?.send(
        "POST",
        &format!("/hosts/{host}/{verb}"),
        &serde_json::json!({}),
    )?;
    if ctx.json() {
        emit_json(&h)?;
    } else if drain {
        emit_line(&format!(
            "Draining {host}... done: it takes no new dynos; its {} dyno(s) move elsewhere one at a time, each replacement up before the old one stops",
            h.dynos
        ))?;
    } else {
        emit_line(&format!(
            "Undraining {host}... done: it takes new dynos again"
        ))?;
    }
    Ok(0)
}

/// `releases:rollback [vN]`: without a version, the last live release before the current one.
pub fn rollback(ctx: &Ctx, version: Option<&str>) -> Result<i32> {
    let app = ctx.app()?;
    let client = ctx.client()?;
    let target: u32 = match version {
        Some(v) => v.trim_start_matches('v').parse().map_err(|_| {
            usage(format!(
                "invalid release {v:?}: expected a version such as 3 or v3"
            ))
        })?,
        None => {
            let releases: Vec<Release> = client.get(&format!("/apps/{app}/releases"))?;
            let current = releases.iter().find(|r| r.current).map(|r| r.version);
            releases
                .iter()
                .filter(|r| r.status == "succeeded" && Some(r.version) < current)
                .map(|r| r.version)
                .max()
                .ok_or_else(|| usage(format!("{app} has no earlier release to roll back to")))?
        }
    };
    let r: Release = client.send(
        "POST",
        &format!("/apps/{app}/releases"),
        &Rollback {
            release: serde_json::json!(target),
        },
    )?;
    if ctx.json() {
        emit_json(&r)?;
    } else {
        emit_line(&format!(
            "Rolling back {app} to v{target}... done, v{}",
            r.version
        ))?;
    }
    Ok(0)
}

pub fn checks(ctx: &Ctx) -> Result<i32> {
    let app = ctx.app()?;
    let checks: Vec<Check> = ctx.client()?.get(&format!("/apps/{app}/checks"))?;
    if ctx.json() {
        emit_json(&checks)?;
    } else {
        emit(&output::checks(&app, &checks))?;
    }
    Ok(0)
}

/// What `checks:set` was given.
pub struct CheckArgs<'a> {
    pub process_type: &'a str,
    pub path: Option<&'a str>,
    pub file: Option<&'a str>,
    pub interval: Option<f64>,
    pub timeout: Option<f64>,
    pub failures: Option<u32>,
}

pub fn set_check(ctx: &Ctx, a: &CheckArgs) -> Result<i32> {
    let app = ctx.app()?;
    let t: ProcessType = a.process_type.parse().map_err(|e| usage(format!("{e}")))?;
    if a.path.is_some() && a.file.is_some() {
        return Err(usage(
            "give a PATH (web: GET it on $PORT) or --file (worker heartbeat), not both",
        ));
    }
    if let Some(p) = a.path
        && !p.starts_with('/')
    {
        return Err(usage(format!("invalid path {p:?}: it must start with /")));
    }
    let update = CheckUpdate {
        path: a.path.map(str::to_string),
        file: a.file.map(str::to_string),
        interval_secs: a.interval,
        timeout_secs: a.timeout,
        failures: a.failures,
    };
    let c: Check = ctx
        .client()?
        .send("PUT", &format!("/apps/{app}/checks/{t}"), &update)?;
    if ctx.json() {
        emit_json(&c)?;
    } else {
        emit_line(&format!(
            "Setting the {t} check of {app}... done: {}; it applies as {t} dynos restart (`dyno ps:restart {t} -a {app}`)",
            output::check_summary(&c)
        ))?;
    }
    Ok(0)
}

pub fn unset_check(ctx: &Ctx, process_type: &str) -> Result<i32> {
    let app = ctx.app()?;
    let t: ProcessType = process_type.parse().map_err(|e| usage(format!("{e}")))?;
    let c: Check = ctx.client()?.delete(&format!("/apps/{app}/checks/{t}"))?;
    if ctx.json() {
        emit_json(&c)?;
    } else {
        emit_line(&format!("Removing the {t} check of {app}... done"))?;
    }
    Ok(0)
}

/// `ps:require TYPE KEY=VALUE` (`label` Some) or `ps:unrequire TYPE`.
pub fn require(ctx: &Ctx, process_type: &str, label: Option<&str>) -> Result<i32> {
    let app = ctx.app()?;
    let t: ProcessType = process_type.parse().map_err(|e| usage(format!("{e}")))?;
    let path = format!("/apps/{app}/requirements/{t}");
    let all: BTreeMap<String, String> = match label {
        Some(l) => {
            dyno_shared::protocol::parse_label(l).map_err(usage)?;
            ctx.client()?.send(
                "PUT",
                &path,
                &Requirement {
                    label: l.to_string(),
                },
            )?
        }
        None => ctx.client()?.delete(&path)?,
    };
    if ctx.json() {
        emit_json(&all)?;
    } else {
        match label {
            Some(l) => emit_line(&format!(
                "{t} dynos of {app} now run only on hosts labelled {l}; those elsewhere move, each replacement up before the old one stops"
            ))?,
            None => emit_line(&format!("{t} dynos of {app} may run on any host again"))?,
        }
    }
    Ok(0)
}

/// `events`: `TIME DYNO: MESSAGE` per line, oldest first.
pub fn events(ctx: &Ctx, num: u32) -> Result<i32> {
    let app = ctx.app()?;
    let events: Vec<Event> = ctx.client()?.get_query(
        &format!("/apps/{app}/events"),
        &[("limit", &num.to_string())],
    )?;
    if ctx.json() {
        emit_json(&events)?;
    } else {
        let text: String = events
            .iter()
            .map(|e| format!("{} {}: {}\n", e.at, e.dyno, e.message))
            .collect();
        emit(&text)?;
    }
    Ok(0)
}

/// `maintenance` (`on` None: show), `maintenance:on`, `maintenance:off`, as heroku prints them.
pub fn maintenance(ctx: &Ctx, on: Option<bool>) -> Result<i32> {
    let app = ctx.app()?;
    let client = ctx.client()?;
    let info: App = match on {
        Some(on) => client.send(
            "PATCH",
            &format!("/apps/{app}"),
            &AppUpdate {
                maintenance: Some(on),
                name: None,
                build_stack: None,
            },
        )?,
        None => client.get(&format!("/apps/{app}"))?,
    };
    if ctx.json() {
        emit_json(&info)?;
    } else {
        match on {
            Some(true) => emit_line(&format!("Enabling maintenance mode for {app}... done"))?,
            Some(false) => emit_line(&format!("Disabling maintenance mode for {app}... done"))?,
            None => emit_line(if info.maintenance { "on" } else { "off" })?,
        }
    }
    Ok(0)
}

pub fn domains(ctx: &Ctx) -> Result<i32> {
    let app = ctx.app()?;
    let domains: Vec<Domain> = ctx.client()?.get(&format!("/apps/{app}/domains"))?;
    let custom: Vec<&Domain> = domains.iter().filter(|d| d.kind == "custom").collect();
    if ctx.json() {
        emit_json(&domains)?;
    } else if custom.is_empty() {
        emit_line(&format!(
            "{app} has no custom domains; add one with `dyno domains:add www.example.com -a {app}`"
        ))?;
    } else {
        let text: String = custom.iter().map(|d| format!("{}\n", d.hostname)).collect();
        emit(&format!("=== {app} Custom Domains\n{text}"))?;
    }
    Ok(0)
}

/// `domains:add` (`add`) or `domains:remove`.
pub fn domain(ctx: &Ctx, hostname: &str, add: bool) -> Result<i32> {
    let app = ctx.app()?;
    let client = ctx.client()?;
    let d: Domain = if add {
        client.send(
            "POST",
            &format!("/apps/{app}/domains"),
            &DomainCreate {
                hostname: hostname.to_string(),
                sni_endpoint: None,
            },
        )?
    } else {
        if hostname.is_empty() || hostname.contains('/') {
            return Err(usage(format!("invalid hostname {hostname:?}")));
        }
        client.delete(&format!("/apps/{app}/domains/{hostname}"))?
    };
    if ctx.json() {
        emit_json(&d)?;
    } else if add {
        emit_line(&format!(
            "Adding {} to {app}... done: point its DNS at the router",
            d.hostname
        ))?;
    } else {
        emit_line(&format!("Removing {} from {app}... done", d.hostname))?;
    }
    Ok(0)
}

/// `ps:concurrency` (show) or `ps:concurrency web=N|web=none`.
pub fn concurrency(ctx: &Ctx, setting: Option<&str>) -> Result<i32> {
    let app = ctx.app()?;
    let client = ctx.client()?;
    let c: Concurrency = match setting {
        None => client.get(&format!("/apps/{app}/concurrency"))?,
        Some(s) => {
            let value = s.strip_prefix("web=").ok_or_else(|| {
                usage(format!(
                    "invalid setting {s:?}: expected web=N or web=none (only web dynos take requests)"
                ))
            })?;
            let web = match value {
                "none" => None,
                n => Some(n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    usage(format!(
                        "invalid concurrency {n:?}: a number of requests, 1 or more, or none"
                    ))
                })?),
            };
            client.send(
                "PUT",
                &format!("/apps/{app}/concurrency"),
                &Concurrency { web },
            )?
        }
    };
    if ctx.json() {
        emit_json(&c)?;
    } else {
        match c.web {
            Some(n) => emit_line(&format!(
                "web={n}: each web dyno of {app} takes {n} request(s) at once; more wait at the router"
            ))?,
            None => emit_line(&format!(
                "web=none: web dynos of {app} take any number of requests"
            ))?,
        }
    }
    Ok(0)
}
