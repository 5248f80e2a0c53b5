//! One function per CLI command; each validates its input before the first request.

pub mod access;
mod apps;
mod billing;
mod config;
pub mod deploy;
mod drains;
mod fleet;
mod labs;
mod logs;
pub mod ps;
mod run;

use crate::cli::{Cli, Command, Global};
use crate::client::{Client, DEFAULT_COORDINATOR};
use crate::config_file::{self, SavedConfig};
use crate::error::usage;
use anyhow::Result;
use dyno_shared::AppName;
use serde::Serialize;
use std::io::Write;

/// What every command may need: settings resolved from flags, environment and the saved file.
pub struct Ctx {
    global: Global,
    saved: SavedConfig,
}

impl Ctx {
    pub fn new(global: Global) -> Ctx {
        let saved = match config_file::config_path() {
            Some(path) => config_file::load(&path).unwrap_or_else(|e| {
                eprintln!("warning: ignoring saved settings: {e:#}");
                SavedConfig::default()
            }),
            None => SavedConfig::default(),
        };
        Ctx { global, saved }
    }

    pub fn json(&self) -> bool {
        self.global.json
    }

    /// The token given by flag or DYNO_TOKEN (not the saved one).
    pub fn token_flag(&self) -> Option<String> {
        self.global.token.clone()
    }

    /// A client for the resolved coordinator, presenting `token`.
    pub fn client_with_token(&self, token: String) -> Result<Client> {
        let url = config_file::resolve(
            self.global.coordinator.as_deref(),
            self.saved.coordinator.as_deref(),
            Some(DEFAULT_COORDINATOR),
        )
        .unwrap_or_else(|| DEFAULT_COORDINATOR.to_string());
        Client::new(&url, Some(token))
    }

    pub fn client(&self) -> Result<Client> {
        let url = config_file::resolve(
            self.global.coordinator.as_deref(),
            self.saved.coordinator.as_deref(),
            Some(DEFAULT_COORDINATOR),
        )
        .unwrap_or_else(|| DEFAULT_COORDINATOR.to_string());
        let token = config_file::resolve(
            self.global.token.as_deref(),
            self.saved.token.as_deref(),
            None,
        );
        Client::new(&url, token)
    }

    /// The `-a` app if one was given, validated.
    pub fn app_opt(&self) -> Result<Option<String>> {
        match self.global.app.as_deref().filter(|a| !a.is_empty()) {
            Some(raw) => app_name(raw).map(Some),
            None => Ok(None),
        }
    }

    /// The `-a` app, validated.
    pub fn app(&self) -> Result<String> {
        let raw = self
            .global
            .app
            .as_deref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| usage("no app given: pass -a APP or set DYNO_APP"))?;
        app_name(raw)
    }
}

pub fn app_name(raw: &str) -> Result<String> {
    raw.parse::<AppName>()
        .map(|a| a.to_string())
        .map_err(|e| usage(e.to_string()))
}

/// Writes to stdout and flushes, so streamed output shows as it arrives.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

pub fn emit_line(text: &str) -> Result<()> {
    emit(&format!("{text}\n"))
}

pub fn emit_json<T: Serialize>(value: &T) -> Result<()> {
    emit_line(&serde_json::to_string_pretty(value)?)
}

/// `dyno console`: the full-screen console on this terminal.
fn console(ctx: &Ctx, args: &crate::cli::ConsoleArgs) -> Result<i32> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(usage(
            "dyno console needs a terminal; for scripts use `dyno ps`, `dyno logs` and --json",
        ));
    }
    let app = ctx.app_opt()?;
    let client = ctx.client()?;
    crate::tui::run(
        crate::tui::Options {
            coordinator: client.base().to_string(),
            token: client.token().map(str::to_string),
            read_only: args.read_only,
            app,
            own_signals: true,
            frame_log: std::env::var_os("DYNO_CONSOLE_FRAME_LOG").map(Into::into),
        },
        &mut || Ok(()),
    )?;
    Ok(0)
}

/// Runs a parsed command line; the result is the process's exit code.
pub fn run(cli: Cli) -> Result<i32> {
    // These two take no settings: `up` makes its own, `__exec` only execs.
    match &cli.command {
        Command::Up(args) => return crate::up::up(args),
        Command::Exec { argv } => return crate::up::exec_unblocked(argv),
        _ => {}
    }
    let ctx = Ctx::new(cli.global);
    match cli.command {
        Command::Apps => apps::list(&ctx),
        Command::AppsCreate { name, owner } => apps::create(&ctx, &name, owner),
        Command::AppsDestroy { name, confirm } => {
            apps::destroy(&ctx, name.as_deref(), confirm.as_deref())
        }
        Command::Deploy { dir, message } => deploy::run(&ctx, &dir, message.as_deref()),
        Command::Releases => apps::releases(&ctx),
        Command::Ps => ps::list(&ctx),
        Command::PsScale { args, wait } => ps::scale(&ctx, &args, &wait),
        Command::PsType { args } => ps::types(&ctx, &args),
        Command::PsWait { wait_timeout } => ps::wait_command(&ctx, wait_timeout),
        Command::PsRestart {
            dyno,
            process_type,
            batch,
        } => ps::restart(
            &ctx,
            dyno.as_deref(),
            process_type.as_deref(),
            batch.as_deref(),
        ),
        Command::PsStop { target } => ps::stop(&ctx, &target),
        Command::Config => config::show(&ctx),
        Command::ConfigGet { key } => config::get(&ctx, &key),
        Command::ConfigSet { assignments } => config::set(&ctx, &assignments),
        Command::ConfigUnset { keys } => config::unset(&ctx, &keys),
        Command::Run {
            size,
            env,
            verbose,
            command,
        } => run::run(&ctx, size.as_deref(), &env, verbose, &command),
        Command::RunDetached {
            size,
            env,
            tail,
            command,
        } => run::detached(&ctx, size.as_deref(), &env, tail, &command),
        Command::Logs(args) => logs::logs(&ctx, &args),
        Command::Drains => drains::list(&ctx),
        Command::DrainsAdd { url } => drains::add(&ctx, &url),
        Command::DrainsRemove { url_or_token } => drains::remove(&ctx, &url_or_token),
        Command::Labs => labs::list(&ctx),
        Command::LabsEnable { feature } => labs::set(&ctx, &feature, true),
        Command::LabsDisable { feature } => labs::set(&ctx, &feature, false),
        Command::LabsInfo { feature } => labs::info(&ctx, &feature),
        Command::Hosts => apps::hosts(&ctx),
        Command::HostsDrain { host } => fleet::drain(&ctx, &host, true),
        Command::HostsRemove { host, confirm } => {
            access::remove_host(&ctx, &host, confirm.as_deref())
        }
        Command::Login => access::login(&ctx, None),
        Command::Tokens => access::list(&ctx),
        Command::TokensCreate { name, role } => access::create(&ctx, &name, &role),
        Command::TokensRevoke { name } => access::revoke(&ctx, &name),
        Command::Audit { num } => access::audit(&ctx, num.into()),
        Command::HostsUndrain { host } => fleet::drain(&ctx, &host, false),
        Command::ReleasesRollback { version } => fleet::rollback(&ctx, version.as_deref()),
        Command::Checks => fleet::checks(&ctx),
        Command::Maintenance => fleet::maintenance(&ctx, None),
        Command::Domains => fleet::domains(&ctx),
        Command::DomainsAdd { hostname } => fleet::domain(&ctx, &hostname, true),
        Command::DomainsRemove { hostname } => fleet::domain(&ctx, &hostname, false),
        Command::PsConcurrency { setting } => fleet::concurrency(&ctx, setting.as_deref()),
        Command::MaintenanceOn => fleet::maintenance(&ctx, Some(true)),
        Command::MaintenanceOff => fleet::maintenance(&ctx, Some(false)),
        Command::Events { num } => fleet::events(&ctx, num),
        Command::PsRequire {
            process_type,
            label,
        } => fleet::require(&ctx, &process_type, Some(&label)),
        Command::PsUnrequire { process_type } => fleet::require(&ctx, &process_type, None),
        Command::ChecksSet {
            process_type,
            path,
            file,
            interval,
            timeout,
            failures,
        } => fleet::set_check(
            &ctx,
            &fleet::CheckArgs {
                process_type: &process_type,
                path: path.as_deref(),
                file: file.as_deref(),
                interval,
                timeout,
                failures,
            },
        ),
        Command::ChecksUnset { process_type } => fleet::unset_check(&ctx, &process_type),
        Command::Billing { month, csv } => billing::billing(&ctx, month.as_deref(), csv),
        Command::Console(args) => console(&ctx, &args),
        Command::Up(_) | Command::Exec { .. } => unreachable!("handled above"),
    }
}
