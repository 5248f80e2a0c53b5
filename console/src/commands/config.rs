//! `config`, `config:get`, `config:set`, `config:unset`.

use super::{Ctx, emit, emit_json, emit_line};
use crate::error::usage;
use crate::output;
use anyhow::Result;
use dyno_shared::api::ConfigPatch;
use dyno_shared::config::{parse_assignment, validate_key};
use std::collections::BTreeMap;

type Vars = BTreeMap<String, String>;

pub fn show(ctx: &Ctx) -> Result<i32> {
    let app = ctx.app()?;
    let vars: Vars = ctx.client()?.get(&format!("/apps/{app}/config-vars"))?;
    if ctx.json() {
        emit_json(&vars)?;
    } else {
        emit(&output::config_listing(&app, &vars))?;
    }
    Ok(0)
}

pub fn get(ctx: &Ctx, key: &str) -> Result<i32> {
    let app = ctx.app()?;
    let vars: Vars = ctx.client()?.get(&format!("/apps/{app}/config-vars"))?;
    let value = vars.get(key);
    if ctx.json() {
        emit_json(&value)?;
    } else {
        emit_line(value.map(String::as_str).unwrap_or(""))?;
    }
    Ok(0)
}

/// Names in heroku's prose style: `A`, `A and B`, `A, B and C`.
fn and_list(names: &[&String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!(
            "{} and {last}",
            rest.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn set(ctx: &Ctx, assignments: &[String]) -> Result<i32> {
    let mut patch = ConfigPatch::new();
    let mut shown = Vars::new();
    for a in assignments {
        let (k, v) = parse_assignment(a).map_err(|e| usage(e.to_string()))?;
        patch.insert(k.clone(), Some(v.clone()));
        shown.insert(k, v);
    }
    let app = ctx.app()?;
    let vars: Vars = ctx
        .client()?
        .send("PATCH", &format!("/apps/{app}/config-vars"), &patch)?;
    if ctx.json() {
        emit_json(&vars)?;
    } else {
        let keys: Vec<&String> = shown.keys().collect();
        emit_line(&format!(
            "Setting {} and restarting {app}... done",
            and_list(&keys)
        ))?;
        emit(&output::config_vars(&shown))?;
    }
    Ok(0)
}

pub fn unset(ctx: &Ctx, keys: &[String]) -> Result<i32> {
    let mut patch = ConfigPatch::new();
    for k in keys {
        validate_key(k).map_err(|e| usage(e.to_string()))?;
        patch.insert(k.clone(), None);
    }
    let app = ctx.app()?;
    let vars: Vars = ctx
        .client()?
        .send("PATCH", &format!("/apps/{app}/config-vars"), &patch)?;
    if ctx.json() {
        emit_json(&vars)?;
    } else {
        let names: Vec<&String> = patch.keys().collect();
        emit_line(&format!(
            "Unsetting {} and restarting {app}... done",
            and_list(&names)
        ))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_names_in_prose() {
        let (a, b, c) = ("A".to_string(), "B".to_string(), "C".to_string());
        assert_eq!(and_list(&[&a]), "A");
        assert_eq!(and_list(&[&a, &b]), "A and B");
        assert_eq!(and_list(&[&a, &b, &c]), "A, B and C");
    }
}
