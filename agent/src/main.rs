//! `dyno-agent`: runs dynos on this host for a coordinator.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dyno_agent::{AgentConfig, validate_coordinator_url};
use dyno_shared::protocol::Isolation;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "dyno-agent",
    version,
    about = "Runs dynos on this host for a coordinator"
)]
struct Cli {
    /// The coordinator's control URL, e.g. http://10.0.0.1:7070
    #[arg(long, env = "DYNO_COORDINATOR", value_name = "URL", value_parser = parse_url)]
    coordinator: String,
    /// The agent token the coordinator was started with
    #[arg(long, env = "DYNO_TOKEN", value_name = "T", hide_env_values = true)]
    token: String,
    /// Where cached slugs and the dynos' app directories live
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// This host's name among agents (default: the machine's host name)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The address the router reaches this host's web dynos on
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    address: IpAddr,
    /// Seconds between SIGTERM and SIGKILL when the agent shuts down
    #[arg(long, value_name = "N", default_value_t = 30)]
    stop_grace_secs: u64,
    /// Seconds a web dyno has to bind $PORT (R10)
    #[arg(long, value_name = "N", default_value_t = 60)]
    boot_timeout_secs: u64,
    /// Memory in MB this host offers to dynos (default: the machine's total)
    #[arg(long, value_name = "MB")]
    memory_mb: Option<u64>,
    /// A label for placement, KEY=VALUE (repeatable): `dyno ps:require web disk=ssd` puts web
    /// dynos only on hosts labelled so
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = dyno_shared::protocol::parse_label)]
    labels: Vec<(String, String)>,
    /// How dynos are isolated: `none` (plain processes), `linux` (namespaces and cgroups; needs
    /// root), or `auto` (`linux` when this host can, else refuse to start)
    #[arg(long, value_name = "MODE", default_value = "none", value_parser = parse_isolation)]
    isolation: IsolationMode,
    /// What happens to the dynos when the agent stops: `keep` leaves isolated dynos running for
    /// the next agent to adopt (upgrades, restarts), `stop` stops them. Default: `keep` with
    /// Linux isolation; plain dynos cannot be adopted and always stop
    #[arg(long, value_name = "WHAT", value_parser = ["keep", "stop"])]
    on_exit: Option<String>,
}

fn parse_url(s: &str) -> Result<String, String> {
    validate_coordinator_url(s).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IsolationMode {
    None,
    Linux,
    Auto,
}

fn parse_isolation(s: &str) -> Result<IsolationMode, String> {
    match s {
        "none" => Ok(IsolationMode::None),
        "linux" => Ok(IsolationMode::Linux),
        "auto" => Ok(IsolationMode::Auto),
        other => Err(format!(
            "unknown isolation {other:?}: expected `none`, `linux` or `auto`"
        )),
    }
}

/// The isolation to run with, or why this host cannot give the one asked for.
fn resolve_isolation(mode: IsolationMode) -> anyhow::Result<Isolation> {
    match mode {
        IsolationMode::None => Ok(Isolation::None),
        IsolationMode::Linux | IsolationMode::Auto => {
            match dyno_agent::linux::LinuxRuntime::check() {
                Ok(cgroups) => {
                    tracing::info!(
                        cgroup = cgroups.version().as_str(),
                        "Linux isolation available"
                    );
                    Ok(Isolation::Linux)
                }
                Err(e) => Err(anyhow::anyhow!(
                    "--isolation {}: this host cannot isolate dynos: {e}; run as root on a host \
                     with the memory, pids and cpu cgroup controllers, or pass --isolation none",
                    if mode == IsolationMode::Auto {
                        "auto"
                    } else {
                        "linux"
                    }
                )),
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    // A dyno's init: must run before any thread exists, since it forks.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == dyno_agent::linux::INIT_ARG)
    {
        std::process::exit(dyno_agent::linux::init_main());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(agent_main())
}

async fn agent_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = AgentConfig::new(cli.coordinator, cli.token, cli.state_dir);
    if let Some(name) = cli.name {
        config.name = name;
    }
    config.address = cli.address.to_string();
    config.stop_grace = Duration::from_secs(cli.stop_grace_secs);
    config.boot_timeout = Duration::from_secs(cli.boot_timeout_secs);
    config.memory_mb = cli.memory_mb;
    config.labels = cli.labels.into_iter().collect();
    config.isolation = resolve_isolation(cli.isolation)?;
    config.keep_dynos_on_exit = match (cli.on_exit.as_deref(), config.isolation) {
        (Some("keep"), Isolation::None) => anyhow::bail!(
            "--on-exit keep needs --isolation linux: plain dynos cannot be adopted by a later agent"
        ),
        (Some(what), _) => what == "keep",
        (None, isolation) => isolation == Isolation::Linux,
    };

    let mut term = signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    };
    dyno_agent::run(config, shutdown)
        .await
        .context("the agent failed")?;
    Ok(())
}
