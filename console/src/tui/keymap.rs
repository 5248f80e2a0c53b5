//! Every key binding of the console, in one table: the state machine looks keys up here and the
//! help overlay (`?`) and the footer hints are drawn from it, so they cannot disagree.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every view.
    Global,
    /// Views that show a table (all but Logs).
    Table,
    Apps,
    App,
    Hosts,
    Logs,
    Releases,
    Config,
    Billing,
}

impl Scope {
    pub fn title(self) -> &'static str {
        match self {
            Scope::Global => "Everywhere",
            Scope::Table => "Tables",
            Scope::Apps => "Apps",
            Scope::App => "App (dynos)",
            Scope::Hosts => "Hosts",
            Scope::Logs => "Logs",
            Scope::Releases => "Releases",
            Scope::Config => "Config vars",
            Scope::Billing => "Billing",
        }
    }
}

/// What a key asks for; `State::update` gives it meaning in the current view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Quit,
    Back,
    Help,
    CommandBar,
    Filter,
    Refresh,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Open,
    Logs,
    Releases,
    Config,
    Billing,
    Prices,
    RunOneOff,
    Scale,
    ScaleUp,
    ScaleDown,
    Restart,
    RestartType,
    Stop,
    Resize,
    Drain,
    Undrain,
    Rollback,
    Maintenance,
    Follow,
    LogFilter,
    Wrap,
    Timestamps,
    Save,
    ClearLogs,
    Reveal,
    RevealAll,
    SetVar,
    UnsetVar,
}

/// One key as the table spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K {
    Ch(char),
    Ctrl(char),
    Code(KeyCode),
}

pub struct Binding {
    pub scope: Scope,
    pub keys: &'static [K],
    /// How the help overlay names the keys.
    pub label: &'static str,
    pub cmd: Cmd,
    pub help: &'static str,
    /// Changes the platform: hidden and disabled with `--read-only`.
    pub action: bool,
}

const fn b(
    scope: Scope,
    keys: &'static [K],
    label: &'static str,
    cmd: Cmd,
    help: &'static str,
    action: bool,
) -> Binding {
    Binding {
        scope,
        keys,
        label,
        cmd,
        help,
        action,
    }
}

use K::{Ch, Code, Ctrl};
use Scope::*;

/// Looked up in order: a view's own bindings come before the generic ones.
pub const BINDINGS: &[Binding] = &[
    // Apps
    b(
        Apps,
        &[Code(KeyCode::Enter)],
        "enter",
        Cmd::Open,
        "open the app's dynos",
        false,
    ),
    b(Apps, &[Ch('l')], "l", Cmd::Logs, "the app's logs", false),
    b(
        Apps,
        &[Ch('v')],
        "v",
        Cmd::Releases,
        "the app's releases",
        false,
    ),
    b(
        Apps,
        &[Ch('c')],
        "c",
        Cmd::Config,
        "the app's config vars",
        false,
    ),
    b(
        Apps,
        &[Ch('$')],
        "$",
        Cmd::Billing,
        "billing: this month's cost per app, eco pools, projection",
        false,
    ),
    b(
        Apps,
        &[Ch('s')],
        "s",
        Cmd::Scale,
        "scale: web=3:standard-2x worker+1",
        true,
    ),
    b(
        Apps,
        &[Ch('r')],
        "r",
        Cmd::Restart,
        "restart every dyno of the app",
        true,
    ),
    // App
    b(
        App,
        &[Code(KeyCode::Enter)],
        "enter",
        Cmd::Open,
        "logs of the selected dyno",
        false,
    ),
    b(App, &[Ch('l')], "l", Cmd::Logs, "logs of the app", false),
    b(App, &[Ch('v')], "v", Cmd::Releases, "releases", false),
    b(App, &[Ch('c')], "c", Cmd::Config, "config vars", false),
    b(
        App,
        &[Ch('s')],
        "s",
        Cmd::Scale,
        "scale: web=3:standard-2x worker+1",
        true,
    ),
    b(
        App,
        &[Ch('+')],
        "+",
        Cmd::ScaleUp,
        "one more dyno of the selected type",
        true,
    ),
    b(
        App,
        &[Ch('-')],
        "-",
        Cmd::ScaleDown,
        "one dyno less of the selected type",
        true,
    ),
    b(
        App,
        &[Ch('r')],
        "r",
        Cmd::Restart,
        "restart the selected dyno",
        true,
    ),
    b(
        App,
        &[Ch('R')],
        "R",
        Cmd::RestartType,
        "restart every dyno of the selected type",
        true,
    ),
    b(
        App,
        &[Ch('x')],
        "x",
        Cmd::Stop,
        "stop the selected dyno",
        true,
    ),
    b(
        App,
        &[Ch('z')],
        "z",
        Cmd::Resize,
        "change the size of the selected type",
        true,
    ),
    b(
        App,
        &[Ch('M')],
        "M",
        Cmd::Maintenance,
        "maintenance mode on/off (H80 page, dynos keep running)",
        true,
    ),
    b(
        App,
        &[Ch('o')],
        "o",
        Cmd::RunOneOff,
        "run a one-off dyno (detached): COMMAND; its logs open",
        true,
    ),
    // Billing
    b(
        Billing,
        &[Code(KeyCode::Enter)],
        "enter",
        Cmd::Open,
        "open the selected row's app",
        false,
    ),
    b(
        Billing,
        &[Ch('p')],
        "p",
        Cmd::Prices,
        "daily cost chart and the price table / back to the lines",
        false,
    ),
    // Hosts
    b(
        Hosts,
        &[Ch('d')],
        "d",
        Cmd::Drain,
        "drain the host (its dynos move away)",
        true,
    ),
    b(
        Hosts,
        &[Ch('u')],
        "u",
        Cmd::Undrain,
        "take the host back into service",
        true,
    ),
    b(
        Releases,
        &[Ch('b')],
        "b",
        Cmd::Rollback,
        "roll back to the selected release (a new release from it)",
        true,
    ),
    // Config
    b(
        Config,
        &[Code(KeyCode::Enter), Ch('m')],
        "enter m",
        Cmd::Reveal,
        "show/mask the selected value",
        false,
    ),
    b(
        Config,
        &[Ch('M')],
        "M",
        Cmd::RevealAll,
        "show/mask every value",
        false,
    ),
    b(
        Config,
        &[Ch('e')],
        "e",
        Cmd::SetVar,
        "set a var: KEY=VALUE (new release)",
        true,
    ),
    b(
        Config,
        &[Ch('D')],
        "D",
        Cmd::UnsetVar,
        "unset the selected var (new release)",
        true,
    ),
    // Logs
    b(
        Logs,
        &[Ch(' '), Ch('p')],
        "space p",
        Cmd::Follow,
        "pause / follow",
        false,
    ),
    b(
        Logs,
        &[Ch('f')],
        "f",
        Cmd::LogFilter,
        "filter: web.1, web, source=router (empty: all)",
        false,
    ),
    b(
        Logs,
        &[Ch('/')],
        "/",
        Cmd::Filter,
        "regex search: only matching lines, matches highlighted",
        false,
    ),
    b(Logs, &[Ch('w')], "w", Cmd::Wrap, "wrap long lines", false),
    b(Logs, &[Ch('t')], "t", Cmd::Timestamps, "timestamps", false),
    b(
        Logs,
        &[Ch('S'), Ctrl('s')],
        "S ctrl-s",
        Cmd::Save,
        "save the shown lines to a file",
        false,
    ),
    b(
        Logs,
        &[Ch('c')],
        "c",
        Cmd::ClearLogs,
        "clear the screen's buffer",
        false,
    ),
    // Tables
    b(
        Table,
        &[Ch('/')],
        "/",
        Cmd::Filter,
        "filter the rows (esc clears)",
        false,
    ),
    // Everywhere
    b(
        Global,
        &[Ch(':')],
        ":",
        Cmd::CommandBar,
        "go to: apps, app, hosts, logs, releases, config, billing",
        false,
    ),
    b(Global, &[Ch('?')], "?", Cmd::Help, "this help", false),
    b(
        Global,
        &[Code(KeyCode::Esc)],
        "esc",
        Cmd::Back,
        "back (clears a filter first)",
        false,
    ),
    b(
        Global,
        &[Ch('q'), Ctrl('c')],
        "q ctrl-c",
        Cmd::Quit,
        "quit",
        false,
    ),
    b(
        Global,
        &[Code(KeyCode::Up), Ch('k')],
        "↑ k",
        Cmd::Up,
        "up",
        false,
    ),
    b(
        Global,
        &[Code(KeyCode::Down), Ch('j')],
        "↓ j",
        Cmd::Down,
        "down",
        false,
    ),
    b(
        Global,
        &[Code(KeyCode::PageUp), Ctrl('b')],
        "pgup ctrl-b",
        Cmd::PageUp,
        "page up",
        false,
    ),
    b(
        Global,
        &[Code(KeyCode::PageDown), Ctrl('f')],
        "pgdn ctrl-f",
        Cmd::PageDown,
        "page down",
        false,
    ),
    b(
        Global,
        &[Code(KeyCode::Home), Ch('g')],
        "home g",
        Cmd::Top,
        "first",
        false,
    ),
    b(
        Global,
        &[Code(KeyCode::End), Ch('G')],
        "end G",
        Cmd::Bottom,
        "last (logs: follow)",
        false,
    ),
    b(
        Global,
        &[Ctrl('r')],
        "ctrl-r",
        Cmd::Refresh,
        "refresh now",
        false,
    ),
    b(Global, &[Ch('h')], "h", Cmd::Back, "back", false),
];

/// A key event as the table spells it: Shift only shows in the character.
pub fn normalize(key: &KeyEvent) -> Option<K> {
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char(c) => Some(Ctrl(c.to_ascii_lowercase())),
            _ => None,
        };
    }
    if key.modifiers.contains(KeyModifiers::ALT) {
        return None;
    }
    Some(match key.code {
        KeyCode::Char(c) => Ch(c),
        other => Code(other),
    })
}

/// The bindings that apply in `view` (a table view also gets the `Table` ones), in lookup order.
pub fn bindings_for(view: Scope, read_only: bool) -> impl Iterator<Item = &'static Binding> {
    BINDINGS.iter().filter(move |b| {
        let scope_ok = b.scope == view || b.scope == Global || (b.scope == Table && view != Logs);
        scope_ok && !(read_only && b.action)
    })
}

/// The command a key means in `view`.
pub fn lookup(view: Scope, read_only: bool, key: &KeyEvent) -> Option<Cmd> {
    let k = normalize(key)?;
    bindings_for(view, read_only)
        .find(|b| b.keys.contains(&k))
        .map(|b| b.cmd)
}

/// Names of the views `:` knows, with the argument they take.
pub const VIEW_NAMES: &[(&str, &str)] = &[
    ("apps", ""),
    ("app", "APP (also ps, dynos)"),
    ("hosts", ""),
    ("logs", "[APP]"),
    ("releases", "[APP]"),
    ("config", "[APP]"),
    ("billing", "this month, every app"),
    ("quit", "(also q)"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn view_bindings_win_over_generic_ones() {
        let slash = key(KeyCode::Char('/'), KeyModifiers::NONE);
        assert_eq!(lookup(Logs, false, &slash), Some(Cmd::Filter));
        assert_eq!(lookup(Apps, false, &slash), Some(Cmd::Filter));
        let c = key(KeyCode::Char('c'), KeyModifiers::NONE);
        assert_eq!(lookup(Logs, false, &c), Some(Cmd::ClearLogs));
        assert_eq!(lookup(App, false, &c), Some(Cmd::Config));
        let ctrl_c = key(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(lookup(Logs, false, &ctrl_c), Some(Cmd::Quit));
        let big_r = key(KeyCode::Char('R'), KeyModifiers::SHIFT);
        assert_eq!(lookup(App, false, &big_r), Some(Cmd::RestartType));
    }

    #[test]
    fn read_only_has_no_actions() {
        let s = key(KeyCode::Char('s'), KeyModifiers::NONE);
        assert_eq!(lookup(App, false, &s), Some(Cmd::Scale));
        assert_eq!(lookup(App, true, &s), None);
        // Billing only looks: it stays with --read-only.
        let dollar = key(KeyCode::Char('$'), KeyModifiers::SHIFT);
        assert_eq!(lookup(Apps, true, &dollar), Some(Cmd::Billing));
        for scope in [Apps, App, Hosts, Logs, Releases, Config, Billing] {
            assert!(bindings_for(scope, true).all(|b| !b.action));
        }
    }

    #[test]
    fn no_key_is_bound_twice_in_one_view() {
        for scope in [Apps, App, Hosts, Logs, Releases, Config, Billing] {
            let mut seen: Vec<(K, Cmd)> = Vec::new();
            for bd in bindings_for(scope, false) {
                for k in bd.keys {
                    if let Some((_, other)) = seen.iter().find(|(s, _)| s == k) {
                        // A later, generic binding of the same key is shadowed on purpose only
                        // when the view's own binding comes first.
                        assert!(
                            bd.scope == Global || bd.scope == Table,
                            "{scope:?}: {k:?} bound to {other:?} and {:?}",
                            bd.cmd
                        );
                    } else {
                        seen.push((*k, bd.cmd));
                    }
                }
            }
        }
    }
}
