//! Who may use the platform: `login`, `tokens*`, `audit`, and `hosts:remove` (an agent's
//! credential).

use super::{Ctx, emit_json, emit_line, usage};
use crate::config_file::{self, SavedConfig};
use anyhow::{Context, Result};
use dyno_shared::api::{AuditEntry, CreateToken, CreatedToken, Host, Token, Whoami};

/// `dyno login`: checks the token against the coordinator, then saves both (mode 0600).
pub fn login(ctx: &Ctx, token: Option<String>) -> Result<i32> {
    let token = match token.or_else(|| ctx.token_flag()) {
        Some(t) => t,
        None => {
            eprint!("Token: ");
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("failed to read the token from stdin")?;
            line.trim().to_string()
        }
    };
    if token.is_empty() {
        return Err(usage(
            "no token given: pass --token, set DYNO_TOKEN or type it",
        ));
    }
    let client = ctx.client_with_token(token.clone())?;
    let me: Whoami = client.get("/tokens/self")?;
    let path = config_file::config_path()
        .context("neither XDG_CONFIG_HOME nor HOME is set: nowhere to save the login")?;
    config_file::save(
        &path,
        &SavedConfig {
            coordinator: Some(client.base().to_string()),
            token: Some(token),
        },
    )?;
    if ctx.json() {
        emit_json(&me)?;
    } else {
        emit_line(&format!(
            "Logged in to {} as {} ({}); saved to {}",
            client.base(),
            me.name,
            me.role,
            path.display()
        ))?;
    }
    Ok(0)
}

pub fn list(ctx: &Ctx) -> Result<i32> {
    let tokens: Vec<Token> = ctx.client()?.get("/tokens")?;
    if ctx.json() {
        emit_json(&tokens)?;
        return Ok(0);
    }
    if tokens.is_empty() {
        emit_line(
            "No tokens besides the root token; create one with `dyno tokens:create NAME --role read`",
        )?;
        return Ok(0);
    }
    let width = tokens
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    emit_line(&format!(
        "{:width$}  {:8} {:20} {:20} HOST",
        "NAME", "ROLE", "CREATED", "REVOKED"
    ))?;
    for t in &tokens {
        emit_line(&format!(
            "{:width$}  {:8} {:20} {:20} {}",
            t.name,
            t.role,
            t.created_at,
            t.revoked_at.as_deref().unwrap_or("-"),
            t.host.as_deref().unwrap_or("-")
        ))?;
    }
    Ok(0)
}

pub fn create(ctx: &Ctx, name: &str, role: &str) -> Result<i32> {
    if !matches!(role, "operate" | "read" | "join") {
        return Err(usage(format!(
            "invalid --role {role:?}: expected operate, read or join"
        )));
    }
    let created: CreatedToken = ctx.client()?.send(
        "POST",
        "/tokens",
        &CreateToken {
            name: name.to_string(),
            role: role.to_string(),
        },
    )?;
    if ctx.json() {
        emit_json(&created)?;
    } else {
        eprintln!(
            "Created the {} token {}; its secret is shown only now:",
            created.token.role, created.token.name
        );
        match &created.fingerprint {
            Some(fp) => emit_line(&format!("{}@{fp}", created.secret))?,
            None => emit_line(&created.secret)?,
        }
    }
    Ok(0)
}

pub fn revoke(ctx: &Ctx, name: &str) -> Result<i32> {
    let t: Token = ctx.client()?.delete(&format!("/tokens/{name}"))?;
    if ctx.json() {
        emit_json(&t)?;
    } else {
        emit_line(&format!(
            "Revoked {} ({}); it is refused from now on",
            t.name, t.role
        ))?;
    }
    Ok(0)
}

pub fn audit(ctx: &Ctx, lines: usize) -> Result<i32> {
    let rows: Vec<AuditEntry> = ctx
        .client()?
        .get_query("/audit", &[("limit", &lines.to_string())])?;
    if ctx.json() {
        emit_json(&rows)?;
        return Ok(0);
    }
    for a in &rows {
        emit_line(&format!(
            "{}  {:16} {:6} {:3} {}  ({})",
            a.at, a.token, a.method, a.status, a.path, a.address
        ))?;
    }
    Ok(0)
}

/// `hosts:remove HOST --confirm HOST`: revokes its credential; its dynos start elsewhere.
pub fn remove_host(ctx: &Ctx, host: &str, confirm: Option<&str>) -> Result<i32> {
    match confirm {
        Some(c) if c == host => {}
        Some(c) => {
            return Err(usage(format!(
                "confirmation {c:?} does not match {host:?}; nothing was removed"
            )));
        }
        None => {
            return Err(usage(format!(
                "this revokes {host}'s credential and moves its dynos to other hosts; re-run with --confirm {host}"
            )));
        }
    }
    let hosts: Vec<Host> = ctx.client()?.delete(&format!("/hosts/{host}"))?;
    if ctx.json() {
        emit_json(&hosts)?;
    } else {
        emit_line(&format!(
            "Removed {host}: its credential is revoked and its dynos start on other hosts"
        ))?;
    }
    Ok(0)
}
