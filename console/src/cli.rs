//! Command-line shape: heroku CLI names, with colons as subcommand names.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "dyno",
    version,
    about = "Run apps on dynos: a self-hosted Heroku-like platform",
    after_help = "Settings come from flags, then DYNO_* variables, then the file `dyno up` saves \
                  ($XDG_CONFIG_HOME/dyno/config.json)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Default)]
pub struct Global {
    /// Coordinator URL [default: http://127.0.0.1:7070]
    #[arg(long, global = true, env = "DYNO_COORDINATOR", value_name = "URL")]
    pub coordinator: Option<String>,
    /// API token (the operator token `dyno up` prints)
    #[arg(long, global = true, env = "DYNO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// App to act on
    #[arg(short = 'a', long, global = true, env = "DYNO_APP", value_name = "APP")]
    pub app: Option<String>,
    /// Print one JSON document instead of text
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List apps
    Apps,
    /// Create an app
    #[command(name = "apps:create")]
    AppsCreate {
        /// App name: 3-30 lowercase letters, digits and dashes
        name: String,
        /// Who pays for it (billing groups by owner; eco dynos share one pool per owner)
        #[arg(long)]
        owner: Option<String>,
    },
    /// Destroy an app and stop its dynos
    #[command(name = "apps:destroy")]
    AppsDestroy {
        /// App to destroy (or -a)
        name: Option<String>,
        /// The app's name again, to confirm
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Pack a directory into a slug and release it
    Deploy {
        /// App directory, with a Procfile at its root
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Release description
        #[arg(short = 'm', long = "message", value_name = "DESCRIPTION")]
        message: Option<String>,
    },
    /// List an app's releases, newest first
    Releases,
    /// List an app's dynos
    Ps,
    /// Scale process types: web=3:standard-2x worker+1 (no arguments: print the formation)
    #[command(name = "ps:scale")]
    PsScale {
        /// TYPE=N, TYPE+N or TYPE-N, each with an optional :SIZE
        args: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show or change the dyno sizes of an app's process types, with their prices
    ///
    /// Without arguments, prints each type's size, quantity and price. With arguments,
    /// changes sizes: all of them or, when one is malformed or names an unknown size, none.
    #[command(name = "ps:type")]
    PsType {
        /// TYPE=SIZE (web=standard-2x) or a bare SIZE for every process type
        args: Vec<String>,
    },
    /// Wait until every formation dyno is up on the current release
    #[command(name = "ps:wait")]
    PsWait {
        /// Give up after this many seconds
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        wait_timeout: u64,
    },
    /// Restart every dyno, one dyno, or one process type
    #[command(name = "ps:restart")]
    PsRestart {
        /// A dyno, e.g. web.1
        #[arg(short = 'd', long, conflicts_with = "process_type")]
        dyno: Option<String>,
        /// A process type, e.g. web
        #[arg(short = 'p', long = "process-type", value_name = "TYPE")]
        process_type: Option<String>,
        /// Roll through the dynos this many (2) or this share (25%) at a time, each batch up
        /// again before the next one stops
        #[arg(long, value_name = "N|P%", conflicts_with = "dyno")]
        batch: Option<String>,
    },
    /// Stop a dyno (web.1) or every dyno of a type (web)
    #[command(name = "ps:stop")]
    PsStop {
        /// DYNO or TYPE
        target: String,
    },
    /// Show config vars
    Config,
    /// Show one config var
    #[command(name = "config:get")]
    ConfigGet { key: String },
    /// Set config vars (creates a release and restarts the dynos)
    #[command(name = "config:set")]
    ConfigSet {
        /// KEY=VALUE
        #[arg(required = true)]
        assignments: Vec<String>,
    },
    /// Unset config vars (creates a release and restarts the dynos)
    #[command(name = "config:unset")]
    ConfigUnset {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Run a one-off dyno attached to this terminal; exits with its exit code
    Run {
        /// Dyno size
        #[arg(short = 's', long)]
        size: Option<String>,
        /// Extra environment for this dyno, KEY=VALUE
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Note the dyno's name on stderr
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Command and arguments (after --)
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a one-off dyno in the background: prints its name at once, its output goes to the
    /// app's logs
    #[command(name = "run:detached")]
    RunDetached {
        /// Dyno size
        #[arg(short = 's', long)]
        size: Option<String>,
        /// Extra environment for this dyno, KEY=VALUE
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Then follow the dyno's output in the logs
        #[arg(short = 't', long)]
        tail: bool,
        /// Command and arguments (after --)
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show an app's logs: history, then with --tail live lines, every dyno merged
    Logs(LogsArgs),
    /// List an app's log drains
    Drains,
    /// Forward an app's logs to a syslog:// (syslog+tls://) or https:// receiver
    #[command(name = "drains:add")]
    DrainsAdd {
        /// syslog://HOST:PORT, syslog+tls://HOST:PORT or https://HOST/PATH
        url: String,
    },
    /// Stop forwarding an app's logs to a drain
    #[command(name = "drains:remove")]
    DrainsRemove {
        /// The drain's URL or token (d.…), as `dyno drains` shows them
        url_or_token: String,
    },
    /// List an app's features and whether each is enabled
    Labs,
    /// Enable a feature, e.g. runtime-metrics
    #[command(name = "labs:enable")]
    LabsEnable {
        /// Feature name, as `dyno labs` lists it
        feature: String,
    },
    /// Disable a feature
    #[command(name = "labs:disable")]
    LabsDisable {
        /// Feature name, as `dyno labs` lists it
        feature: String,
    },
    /// Show what a feature does and whether it is enabled
    #[command(name = "labs:info")]
    LabsInfo {
        /// Feature name, as `dyno labs` lists it
        feature: String,
    },
    /// List the hosts running agents
    Hosts,
    /// Revoke a host's credential and forget it; its dynos start on other hosts
    #[command(name = "hosts:remove")]
    HostsRemove {
        /// The host's name, as `dyno hosts` lists it
        host: String,
        /// The host's name again, to confirm
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Check a token against the coordinator and save both (mode 0600) for later commands
    Login,
    /// List API tokens (never their secrets)
    Tokens,
    /// Create an API token and print its secret (once)
    #[command(name = "tokens:create")]
    TokensCreate {
        /// Its name, shown in the audit
        name: String,
        /// operate (everything), read (ps, logs, billing, hosts) or join (agents joining)
        #[arg(long, default_value = "read")]
        role: String,
    },
    /// Revoke an API token: refused from now on
    #[command(name = "tokens:revoke")]
    TokensRevoke {
        /// The token's name, as `dyno tokens` lists it
        name: String,
    },
    /// Show who changed what: every state-changing request, newest last
    Audit {
        /// How many entries
        #[arg(short = 'n', long = "num", default_value_t = 50,
              value_parser = clap::value_parser!(u16).range(1..=10000))]
        num: u16,
    },
    /// Take no new dynos on a host and move its dynos elsewhere, one at a time
    #[command(name = "hosts:drain")]
    HostsDrain {
        /// The host's name, as `dyno hosts` lists it
        host: String,
    },
    /// Let a drained host take dynos again
    #[command(name = "hosts:undrain")]
    HostsUndrain {
        /// The host's name, as `dyno hosts` lists it
        host: String,
    },
    /// Make a new release from an earlier one (default: the last live one before the current)
    #[command(name = "releases:rollback")]
    ReleasesRollback {
        /// The release to go back to, e.g. v3
        version: Option<String>,
    },
    /// Run a process type's dynos only on hosts with a label (agents' --label KEY=VALUE)
    #[command(name = "ps:require")]
    PsRequire {
        /// Process type, e.g. web
        process_type: String,
        /// The label, KEY=VALUE
        label: String,
    },
    /// Let a process type's dynos run on any host again
    #[command(name = "ps:unrequire")]
    PsUnrequire {
        /// Process type, e.g. web
        process_type: String,
    },
    /// Show an app's recent events: state changes, releases, scaling, moves off lost hosts
    Events {
        /// How many, newest last (1-1000)
        #[arg(short = 'n', long = "num", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        num: u32,
    },
    /// List an app's custom domains
    Domains,
    /// Route requests for a hostname (www.example.com, *.example.com) to the app
    #[command(name = "domains:add")]
    DomainsAdd { hostname: String },
    /// Stop routing a hostname to the app
    #[command(name = "domains:remove")]
    DomainsRemove { hostname: String },
    /// Show or set how many requests a web dyno takes at once (web=1; web=none: no limit);
    /// more wait at the router, in order
    #[command(name = "ps:concurrency")]
    PsConcurrency {
        /// web=N or web=none
        setting: Option<String>,
    },
    /// Show whether an app is in maintenance mode
    Maintenance,
    /// Serve every request with the maintenance page (H80); dynos keep running
    #[command(name = "maintenance:on")]
    MaintenanceOn,
    /// Serve requests again
    #[command(name = "maintenance:off")]
    MaintenanceOff,
    /// List an app's health checks
    Checks,
    /// Set a process type's health check: a PATH to GET on $PORT (web) or --file (heartbeat)
    #[command(name = "checks:set")]
    ChecksSet {
        /// Process type, e.g. web
        process_type: String,
        /// Path a web dyno must answer below 500 (default: $PORT must accept connections)
        path: Option<String>,
        /// Heartbeat file under /app a worker must touch more often than --timeout
        #[arg(long)]
        file: Option<String>,
        /// Seconds between checks (default 5)
        #[arg(long)]
        interval: Option<f64>,
        /// Seconds a check may take (for --file: the heartbeat's maximum age; default 2)
        #[arg(long)]
        timeout: Option<f64>,
        /// Failures in a row before the dyno is killed and replaced (default 3)
        #[arg(long)]
        failures: Option<u32>,
    },
    /// Remove a process type's health check (web dynos keep the default $PORT check)
    #[command(name = "checks:unset")]
    ChecksUnset {
        /// Process type, e.g. web
        process_type: String,
    },
    /// Show a month's dyno hours and cost per app, type and size (default: this month, every app)
    ///
    /// Prints a line per app, process type and size with each app's subtotal, the eco pools
    /// and the total; for the running month also what it comes to at the month's end with the
    /// current formation. -a APP reports one app.
    Billing {
        /// The month, YYYY-MM (UTC) [default: the current month]
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
        /// Print an invoice as CSV: a line per app, size and month
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
    /// Open the full-screen operator console (apps, dynos, hosts, logs; keys: ?)
    Console(ConsoleArgs),
    /// Bring up a coordinator, an agent and the sample app on this machine
    Up(UpArgs),
    /// Internal to `up`: clear the signal mask, then exec ARGV
    #[command(name = "__exec", hide = true)]
    Exec {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
}

#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct LogsArgs {
    /// Lines of history (1-1500)
    #[arg(short = 'n', long = "num", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1500))]
    pub num: u32,
    /// Keep streaming new lines
    #[arg(short = 't', long)]
    pub tail: bool,
    /// Only this dyno (web.1) or process type (web)
    #[arg(short = 'd', long, conflicts_with = "ps")]
    pub dyno: Option<String>,
    /// Only the dynos of this process type (web)
    #[arg(short = 'p', long, value_name = "TYPE")]
    pub ps: Option<String>,
    /// Only this source: app, system (heroku) or router
    #[arg(short = 's', long)]
    pub source: Option<String>,
    /// Only lines whose message matches this regular expression (Rust regex syntax)
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// Wait until the new formation is up
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub wait_timeout: u64,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ConsoleArgs {
    /// Look only: hide and disable every action (scale, restart, stop, drain, config)
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// Where the coordinator and agent keep their state
    #[arg(long, default_value = "./.dyno-state", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Control API address
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub api: String,
    /// Router address
    #[arg(long, default_value = "127.0.0.1:7080", value_name = "ADDR")]
    pub router: String,
    /// Do not open the console, only print the dyno table
    #[arg(long)]
    pub no_console: bool,
    /// Do not deploy the sample app
    #[arg(long)]
    pub no_sample: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_heroku_shapes() {
        let cli =
            Cli::try_parse_from(["dyno", "ps:scale", "web=2", "worker+1", "-a", "shop"]).unwrap();
        assert_eq!(cli.global.app.as_deref(), Some("shop"));
        match cli.command {
            Command::PsScale { args, wait } => {
                assert_eq!(args, ["web=2", "worker+1"]);
                assert!(!wait.wait);
                assert_eq!(wait.wait_timeout, 120);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["dyno", "run", "-a", "shop", "--", "ls", "-la"]).unwrap();
        match cli.command {
            Command::Run { command, .. } => assert_eq!(command, ["ls", "-la"]),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["dyno", "logs", "-n", "1501"]).is_err());
        let cli = Cli::try_parse_from([
            "dyno",
            "run:detached",
            "-a",
            "shop",
            "-s",
            "standard-2x",
            "-e",
            "A=1",
            "--",
            "bin/migrate",
            "--all",
        ])
        .unwrap();
        assert_eq!(cli.global.app.as_deref(), Some("shop"));
        match cli.command {
            Command::RunDetached {
                size,
                env,
                tail,
                command,
            } => {
                assert_eq!(size.as_deref(), Some("standard-2x"));
                assert_eq!(env, ["A=1"]);
                assert!(!tail);
                assert_eq!(command, ["bin/migrate", "--all"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["dyno", "run:detached", "-a", "shop"]).is_err());
        assert!(Cli::try_parse_from(["dyno", "ps:restart", "-d", "web.1", "-p", "web"]).is_err());
    }

    #[test]
    fn billing_takes_an_optional_app_and_one_output_format() {
        let cli = Cli::try_parse_from(["dyno", "billing", "--month", "2026-10", "--csv"]).unwrap();
        assert_eq!(cli.global.app, None);
        match cli.command {
            Command::Billing { month, csv } => {
                assert_eq!(month.as_deref(), Some("2026-10"));
                assert!(csv);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["dyno", "billing", "-a", "shop", "--json"]).unwrap();
        assert_eq!(cli.global.app.as_deref(), Some("shop"));
        assert!(cli.global.json);
        // (`dyno --json billing --csv`, the global flag before the subcommand, gets past clap's
        // conflict check; `billing` rejects it itself.)
        for args in [
            &["dyno", "billing", "--json", "--csv"][..],
            &["dyno", "billing", "--csv", "--json"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
        }
        let cli = Cli::try_parse_from(["dyno", "ps:type", "web=2X", "worker=basic"]).unwrap();
        match cli.command {
            Command::PsType { args } => assert_eq!(args, ["web=2X", "worker=basic"]),
            other => panic!("{other:?}"),
        }
    }
}
