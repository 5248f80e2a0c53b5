//! What the console knows about the platform, the messages that change it, and the actions it
//! asks the coordinator for. Plain data: no I/O, no drawing.

use dyno_shared::LogLine;
use dyno_shared::api::{App, BillingReport, Dyno, FormationItem, Host, Pricing, Release};
use ratatui::crossterm::event::KeyEvent;
use std::collections::BTreeMap;

/// An app row of the Apps view.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRow {
    pub app: App,
    /// Crashed dynos; `None` when the console did not look (very many apps).
    pub crashed: Option<u32>,
}

/// Everything the App view shows.
#[derive(Debug, Clone, PartialEq)]
pub struct AppDetail {
    pub app: App,
    pub dynos: Vec<Dyno>,
    pub formation: Vec<FormationItem>,
    /// The app's latest platform lines (`heroku[...]`: state changes, scaling, releases).
    pub events: Vec<LogLine>,
}

/// A fresh copy of what one view shows, from the data source.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Apps(Vec<AppRow>),
    App(Box<AppDetail>),
    Hosts(Vec<Host>),
    Releases {
        app: String,
        releases: Vec<Release>,
    },
    Config {
        app: String,
        vars: BTreeMap<String, String>,
    },
    /// This month's usage and cost of every app.
    Billing(Box<BillingReport>),
    /// The price table in effect (`GET /pricing`), fetched with the billing report.
    Pricing(Box<Pricing>),
    /// The coordinator answered, but not with the data (an unknown app, a 500).
    Failed(String),
}

/// What the data source should keep fresh: only what the current view shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    Apps,
    App(String),
    Hosts,
    Releases(String),
    Config(String),
    /// This month's billing report, every app, and the price table.
    Billing,
    /// The Logs view: the app and its dynos for the header (lines come from the tail).
    Logs(String),
}

impl Interest {
    /// The app whose events change what this shows; `None`: every app's.
    pub fn app(&self) -> Option<&str> {
        match self {
            Interest::App(a) | Interest::Releases(a) | Interest::Config(a) | Interest::Logs(a) => {
                Some(a)
            }
            Interest::Apps | Interest::Hosts | Interest::Billing => None,
        }
    }
}

/// A change the console asks the coordinator for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Scale {
        app: String,
        args: Vec<String>,
    },
    Restart {
        app: String,
        dyno: Option<String>,
        process_type: Option<String>,
    },
    Stop {
        app: String,
        dyno: String,
    },
    Resize {
        app: String,
        process_type: String,
        size: String,
    },
    Drain {
        host: String,
        drained: bool,
    },
    SetVar {
        app: String,
        key: String,
        value: Option<String>,
    },
    Rollback {
        app: String,
        version: u32,
    },
    Maintenance {
        app: String,
        on: bool,
    },
    /// A detached one-off dyno; its output goes to the app's logs.
    Run {
        app: String,
        command: String,
    },
}

impl Action {
    /// `Scale shop: web=3`, what the status line says while it runs and when it is done.
    pub fn describe(&self) -> String {
        match self {
            Action::Scale { app, args } => format!("Scale {app}: {}", args.join(" ")),
            Action::Restart {
                app, dyno: Some(d), ..
            } => format!("Restart {d} of {app}"),
            Action::Restart {
                app,
                process_type: Some(t),
                ..
            } => format!("Restart every {t} dyno of {app}"),
            Action::Restart { app, .. } => format!("Restart every dyno of {app}"),
            Action::Stop { app, dyno } => format!("Stop {dyno} of {app}"),
            Action::Resize {
                app,
                process_type,
                size,
            } => format!("Resize {process_type} of {app} to {size}"),
            Action::Drain {
                host,
                drained: true,
            } => format!("Drain host {host}"),
            Action::Drain { host, .. } => format!("Undrain host {host}"),
            Action::SetVar {
                app,
                key,
                value: Some(_),
            } => format!("Set {key} on {app}"),
            Action::SetVar { app, key, .. } => format!("Unset {key} on {app}"),
            Action::Rollback { app, version } => format!("Roll {app} back to v{version}"),
            Action::Maintenance { app, on: true } => format!("Maintenance mode on for {app}"),
            Action::Maintenance { app, .. } => format!("Maintenance mode off for {app}"),
            Action::Run { app, command } => format!("Run {command} in {app}"),
        }
    }
}

/// How the log tail is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailState {
    Connecting,
    Live,
    Broken(String),
}

/// How the coordinator's change stream (`GET /stream`) is doing. While it is live, views are
/// refetched when something changes; while it is down, they are polled every second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamState {
    Connecting,
    Live,
    Down(String),
}

/// Everything that reaches the console's loop, from the keyboard, the data source and signals.
#[derive(Debug)]
pub enum Msg {
    Key(KeyEvent),
    Resize(u16, u16),
    Data(Update),
    /// A poll round reached the coordinator (`Ok`) or not (`Err`, why).
    Connection(Result<(), String>),
    /// Lines of the tail started as generation `gen`; older generations are dropped.
    LogLines {
        generation: u64,
        lines: Vec<LogLine>,
    },
    LogState {
        generation: u64,
        state: TailState,
    },
    /// An action finished: what it was, and a summary or the coordinator's error.
    ActionDone {
        label: String,
        result: Result<String, String>,
    },
    /// A detached one-off dyno started (`Action::Run`): its logs open.
    RunStarted {
        app: String,
        dyno: String,
        command: String,
    },
    /// The change stream connected or dropped.
    Stream(StreamState),
    /// SIGTERM, SIGINT or SIGHUP.
    Signal(String),
    /// Once a second, for relative times.
    Tick,
}

/// The dynos of a type counted by state.
pub fn count_state(dynos: &[Dyno], state: &str) -> u32 {
    dynos.iter().filter(|d| d.state == state).count() as u32
}
