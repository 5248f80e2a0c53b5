use anyhow::Context;
use clap::Parser;
use dyno_coordinator::{CoordinatorConfig, manager::RestartPolicy};
use std::path::PathBuf;
use std::time::Duration;

/// The dyno platform's coordinator: control API, agent websocket, dyno manager and router.
#[derive(Parser)]
#[command(
    name = "dyno-coordinator",
    version,
    args_conflicts_with_subcommands = false
)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Address of the control API and the agents' websocket.
    #[arg(long, default_value = "127.0.0.1:7070", env = "DYNO_LISTEN")]
    listen: String,
    /// Address of the HTTP router in front of web dynos.
    #[arg(long, default_value = "127.0.0.1:7080", env = "DYNO_ROUTER")]
    router: String,
    /// Directory for the SQLite store, slugs and the token.
    #[arg(long, env = "DYNO_STATE_DIR")]
    state_dir: PathBuf,
    /// The root operator token (also joins agents); generated into STATE_DIR/token when not
    /// given. Create narrower ones with `tokens:create`.
    #[arg(long, env = "DYNO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Apps answer at APP.DOMAIN on the router.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Crash restart delays in seconds, first crash first; the last repeats.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1200,2400,3600,10800,19200"
    )]
    crash_backoff_secs: Vec<u64>,
    /// Seconds a dyno must stay up before its crash count resets.
    #[arg(long, default_value_t = 10)]
    crash_reset_secs: u64,
    /// Largest slug accepted, in MB.
    #[arg(long, default_value_t = (dyno_shared::api::MAX_SLUG_BYTES / (1024 * 1024)) as u64)]
    max_slug_mb: u64,
    /// Seconds between SIGTERM and SIGKILL when stopping dynos.
    #[arg(long, default_value_t = 30)]
    stop_grace_secs: u64,
    /// Seconds without word from a host's agent before the host counts as lost and its dynos
    /// are started elsewhere.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    host_lost_after_secs: u64,
    /// PEM certificate chain for the router's TLS (HTTPS and HTTP/2 by ALPN on the router port,
    /// beside plain HTTP); needs --tls-key
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Serve the router's Prometheus metrics (GET /metrics) on this address
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Where `heroku run` attaches (TLS); default: the --listen IP and a port the system picks
    #[arg(long, value_name = "ADDR")]
    rendezvous_listen: Option<std::net::SocketAddr>,
    /// Seconds a `heroku run` one-off waits for its client to attach before it is stopped
    /// (R13)
    #[arg(
        long,
        default_value_t = dyno_coordinator::rendezvous::ATTACH_WITHIN.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    attach_within_secs: u64,
    /// Hours a dyno runs before it is cycled (replaced, the new one up before the old one
    /// stops); 0 turns daily cycling off.
    #[arg(long, default_value_t = 24.0)]
    cycle_after_hours: f64,
    /// Minutes of extra wait, spread over the dynos, so those started together cycle apart.
    #[arg(long, default_value_t = 216.0)]
    cycle_jitter_minutes: f64,
    /// Seconds between runtime-metrics lines (Heroku: 20); tests shorten it.
    #[arg(long, default_value_t = 20, hide = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    metrics_interval_secs: u64,
    /// Serve the API and agent websocket over TLS with a CA and certificate made in
    /// STATE_DIR/tls (the default when --listen is not a loopback address)
    #[arg(long)]
    api_tls: bool,
    /// The API's certificate chain (PEM) instead of a self-made one
    #[arg(long, value_name = "PATH", requires = "api_tls_key")]
    api_tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "PATH", requires = "api_tls_cert")]
    api_tls_key: Option<PathBuf>,
    /// A DNS name or IP address the self-made certificate also names (repeatable)
    #[arg(long = "api-tls-name", value_name = "NAME")]
    api_tls_names: Vec<String>,
    /// Serve plain HTTP on a non-loopback --listen address (tokens then cross the network in the clear)
    #[arg(long, conflicts_with_all = ["api_tls", "api_tls_cert"])]
    insecure_http: bool,
    /// Minutes without a request after which an app's eco dynos sleep (0: never); the next
    /// request wakes them
    #[arg(long, default_value_t = 30.0)]
    eco_idle_minutes: f64,
    /// Open API connections (agents included) beyond which new ones are answered 503
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// The coordinator's TOML config (`[pricing]`: preset, currency, prices); re-read on SIGHUP.
    #[arg(long, value_name = "PATH", env = "DYNO_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Create an API token in the store (the coordinator may be running) and print its secret
    #[command(name = "tokens:create")]
    TokensCreate {
        /// A join token for agents (`dyno-agent --token ...`); each host that joins gets a
        /// credential of its own
        #[arg(long, conflicts_with = "role")]
        agent: bool,
        /// `operate` or `read`
        #[arg(long)]
        role: Option<String>,
        /// Its name, shown in the audit (default: join-TIME for --agent)
        name: Option<String>,
    },
}

/// The router runs in this process: glibc's malloc cost it about a tenth of its CPU per request
/// (bench-router), mimalloc a third of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Some(Sub::TokensCreate { agent, role, name }) = args.command {
        let role = match (agent, role.as_deref()) {
            (true, _) => "join",
            (false, Some(r @ ("operate" | "read"))) => r,
            (false, Some(other)) => {
                anyhow::bail!("invalid --role {other:?}: expected operate or read")
            }
            (false, None) => {
                anyhow::bail!("say what the token may do: --agent, --role operate or --role read")
            }
        };
        let name = name.unwrap_or_else(|| format!("{role}-{}", dyno_shared::time::now_secs()));
        let secret = dyno_coordinator::create_token(&args.state_dir, &name, role)?;
        eprintln!("Created the {role} token {name}; it is shown only now:");
        // With TLS on, the token carries the fingerprint to pin: it alone is enough to join.
        match std::fs::read_to_string(args.state_dir.join("fingerprint")) {
            Ok(fp) if !fp.trim().is_empty() => println!("{secret}@{}", fp.trim()),
            _ => println!("{secret}"),
        }
        return Ok(());
    }
    if args.crash_backoff_secs.is_empty() {
        anyhow::bail!("--crash-backoff-secs needs at least one delay");
    }
    let api = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let router = tokio::net::TcpListener::bind(&args.router)
        .await
        .with_context(|| format!("failed to listen on {}", args.router))?;
    let mut config = CoordinatorConfig::new(args.state_dir);
    config.token = args.token;
    config.domain = args.domain;
    config.stop_grace = Duration::from_secs(args.stop_grace_secs);
    config.host_lost_after = Duration::from_secs(args.host_lost_after_secs);
    config.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert_path), Some(key_path)) => Some(dyno_router::TlsConfig {
            cert_path,
            key_path,
        }),
        _ => None,
    };
    config.metrics_listen = args.metrics_listen;
    config.rendezvous_listen = args.rendezvous_listen;
    config.attach_within = Duration::from_secs(args.attach_within_secs);
    anyhow::ensure!(
        args.cycle_after_hours.is_finite() && args.cycle_after_hours >= 0.0,
        "--cycle-after-hours must be 0 (off) or a positive number of hours"
    );
    anyhow::ensure!(
        args.cycle_jitter_minutes.is_finite() && args.cycle_jitter_minutes >= 0.0,
        "--cycle-jitter-minutes must be 0 or a positive number of minutes"
    );
    config.cycle = (args.cycle_after_hours > 0.0).then(|| dyno_coordinator::manager::Cycle {
        after: Duration::from_secs_f64(args.cycle_after_hours * 3600.0),
        jitter: Duration::from_secs_f64(args.cycle_jitter_minutes * 60.0),
    });
    config.metrics_interval = Duration::from_secs(args.metrics_interval_secs);
    config.config_file = args.config;
    let loopback = args
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    config.api_tls = match (args.api_tls_cert, args.api_tls_key) {
        (Some(cert), Some(key)) => dyno_coordinator::ApiTlsMode::Files { cert, key },
        _ if args.api_tls => dyno_coordinator::ApiTlsMode::SelfMade,
        _ if loopback || args.insecure_http => dyno_coordinator::ApiTlsMode::Off,
        _ => dyno_coordinator::ApiTlsMode::SelfMade,
    };
    if args.insecure_http {
        tracing::warn!("--insecure-http: tokens cross the network in the clear");
    }
    config.api_tls_names = args.api_tls_names;
    config.max_connections = args.max_connections as usize;
    anyhow::ensure!(
        args.eco_idle_minutes.is_finite() && args.eco_idle_minutes >= 0.0,
        "--eco-idle-minutes must be 0 (never) or a positive number of minutes"
    );
    config.eco_idle_after = (args.eco_idle_minutes > 0.0)
        .then(|| Duration::from_secs_f64(args.eco_idle_minutes * 60.0));
    config.max_slug_bytes = (args.max_slug_mb as usize).saturating_mul(1024 * 1024);
    config.restart = RestartPolicy {
        backoff: args
            .crash_backoff_secs
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
        reset_after: Duration::from_secs(args.crash_reset_secs),
    };
    dyno_coordinator::run(config, api, router, shutdown_signal())
        .await
        .context("coordinator failed")?;
    tracing::info!("coordinator stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
