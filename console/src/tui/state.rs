//! The console's state and how messages change it. `State::update` is pure: it returns the
//! effects (fetch this, run that action, quit) for the loop to carry out, so every key path is
//! unit-tested without a terminal or a coordinator.

use super::keymap::{self, Cmd, Scope};
use super::logbuf::{LogBuf, LogFilter};
use super::model::{Action, AppDetail, AppRow, Interest, Msg, StreamState, TailState, Update};
use crate::output::{BillingRow, billing_rows};
use dyno_shared::api::{BillingReport, Dyno, Host, Pricing, Release};
use dyno_shared::scale::{ScaleOp, parse_scale_args};
use dyno_shared::{AppName, Size};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

/// How many ticks (seconds) a status message stays.
const FLASH_TICKS: u8 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Apps,
    App(String),
    Hosts,
    Logs(String),
    Releases(String),
    Config(String),
    /// This month's billing report, every app.
    Billing,
}

impl View {
    pub fn scope(&self) -> Scope {
        match self {
            View::Apps => Scope::Apps,
            View::App(_) => Scope::App,
            View::Hosts => Scope::Hosts,
            View::Logs(_) => Scope::Logs,
            View::Releases(_) => Scope::Releases,
            View::Config(_) => Scope::Config,
            View::Billing => Scope::Billing,
        }
    }

    pub fn app(&self) -> Option<&str> {
        match self {
            View::App(a) | View::Logs(a) | View::Releases(a) | View::Config(a) => Some(a),
            View::Apps | View::Hosts | View::Billing => None,
        }
    }

    pub fn interest(&self) -> Interest {
        match self {
            View::Apps => Interest::Apps,
            View::App(a) => Interest::App(a.clone()),
            View::Hosts => Interest::Hosts,
            View::Logs(a) => Interest::Logs(a.clone()),
            View::Releases(a) => Interest::Releases(a.clone()),
            View::Config(a) => Interest::Config(a.clone()),
            View::Billing => Interest::Billing,
        }
    }

    pub fn name(&self) -> String {
        match self {
            View::Apps => "apps".into(),
            View::App(a) => format!("app {a}"),
            View::Hosts => "hosts".into(),
            View::Logs(a) => format!("logs {a}"),
            View::Releases(a) => format!("releases {a}"),
            View::Config(a) => format!("config {a}"),
            View::Billing => "billing".into(),
        }
    }
}

/// A view on the stack with its own selection and filter, restored by `esc`.
#[derive(Debug, Clone)]
pub struct ViewState {
    pub view: View,
    pub selected: usize,
    /// First row on screen; drawing keeps the selection visible.
    pub offset: Cell<usize>,
    pub filter: String,
}

impl ViewState {
    fn new(view: View) -> ViewState {
        ViewState {
            view,
            selected: 0,
            offset: Cell::new(0),
            filter: String::new(),
        }
    }
}

/// A line of text being edited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    pub text: String,
    /// In chars.
    pub cursor: usize,
}

enum Edit {
    Submit,
    Cancel,
    Changed,
    Nothing,
}

impl Input {
    pub fn with(text: &str) -> Input {
        Input {
            text: text.to_string(),
            cursor: text.chars().count(),
        }
    }

    fn byte(&self, char_idx: usize) -> usize {
        self.text
            .char_indices()
            .nth(char_idx)
            .map(|(i, _)| i)
            .unwrap_or(self.text.len())
    }

    fn key(&mut self, key: &KeyEvent) -> Edit {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Enter => Edit::Submit,
            KeyCode::Esc => Edit::Cancel,
            KeyCode::Char('c') if ctrl => Edit::Cancel,
            KeyCode::Char('u') if ctrl => {
                self.text.clear();
                self.cursor = 0;
                Edit::Changed
            }
            KeyCode::Char('a') if ctrl => {
                self.cursor = 0;
                Edit::Nothing
            }
            KeyCode::Char('e') if ctrl => {
                self.cursor = self.text.chars().count();
                Edit::Nothing
            }
            KeyCode::Char(c) if !ctrl => {
                let at = self.byte(self.cursor);
                self.text.insert(at, c);
                self.cursor += 1;
                Edit::Changed
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte(self.cursor);
                self.text.remove(at);
                Edit::Changed
            }
            KeyCode::Delete if self.cursor < self.text.chars().count() => {
                let at = self.byte(self.cursor);
                self.text.remove(at);
                Edit::Changed
            }
            KeyCode::Left => {
                self.cursor = self.cursor.saturating_sub(1);
                Edit::Nothing
            }
            KeyCode::Right => {
                self.cursor = (self.cursor + 1).min(self.text.chars().count());
                Edit::Nothing
            }
            KeyCode::Home => {
                self.cursor = 0;
                Edit::Nothing
            }
            KeyCode::End => {
                self.cursor = self.text.chars().count();
                Edit::Nothing
            }
            _ => Edit::Nothing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogKind {
    Scale { app: String },
    Resize { app: String, process_type: String },
    SetVar { app: String },
    LogFilter,
    Run { app: String },
}

#[derive(Debug, Clone)]
pub struct Dialog {
    pub kind: DialogKind,
    pub title: String,
    /// Shown under the input: the current value, the accepted forms.
    pub hint: String,
    pub input: Input,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Confirm {
    pub question: String,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Mode {
    Normal,
    Command(Input),
    Filter(Input),
    Dialog(Dialog),
    Confirm(Confirm),
    Help { scroll: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Up,
    Down(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    Info,
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub text: String,
    pub kind: FlashKind,
    ticks_left: u8,
}

/// What the loop must do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Watch(Interest),
    /// Follow this app's logs as generation `generation` (`None`: stop tailing).
    Tail(Option<String>, u64),
    Act(Action),
    Refresh,
    /// Write the Logs view's shown lines to a file.
    SaveLogs,
    Quit,
}

pub struct State {
    pub stack: Vec<ViewState>,
    pub mode: Mode,
    pub read_only: bool,
    pub coordinator: String,
    pub conn: Conn,
    pub apps: Option<Vec<AppRow>>,
    pub app: Option<AppDetail>,
    pub hosts: Option<Vec<Host>>,
    pub releases: Option<(String, Vec<Release>)>,
    pub config: Option<(String, BTreeMap<String, String>)>,
    pub billing: Option<BillingReport>,
    /// The price table in effect, shown in the Billing view beside the daily costs.
    pub pricing: Option<Pricing>,
    /// The Billing view shows the daily costs and the price table instead of the lines (`p`).
    pub billing_prices: bool,
    /// The coordinator's answer when the current view's data could not be had.
    pub failed: Option<String>,
    pub logs: Option<LogBuf>,
    pub tail: TailState,
    tail_generation: u64,
    /// The change stream that drives the refreshes.
    pub stream: StreamState,
    pub reveal_all: bool,
    pub revealed: BTreeSet<String>,
    pub flash: Option<Flash>,
    /// Unix seconds, for relative times; set by ticks so drawing stays a pure function.
    pub now: i64,
    pub size: (u16, u16),
    /// Something on screen changed since the last draw.
    pub dirty: bool,
}

impl State {
    pub fn new(coordinator: &str, read_only: bool, start: View, now: i64) -> State {
        let mut stack = vec![ViewState::new(View::Apps)];
        if start != View::Apps {
            stack.push(ViewState::new(start));
        }
        State {
            stack,
            mode: Mode::Normal,
            read_only,
            coordinator: coordinator.to_string(),
            conn: Conn::Connecting,
            apps: None,
            app: None,
            hosts: None,
            releases: None,
            config: None,
            billing: None,
            pricing: None,
            billing_prices: false,
            failed: None,
            logs: None,
            tail: TailState::Connecting,
            tail_generation: 0,
            stream: StreamState::Connecting,
            reveal_all: false,
            revealed: BTreeSet::new(),
            flash: None,
            now,
            size: (80, 24),
            dirty: true,
        }
    }

    /// The effects that start the current view (the loop's first step).
    pub fn start(&mut self) -> Vec<Effect> {
        self.enter_current()
    }

    pub fn current(&self) -> &ViewState {
        self.stack.last().expect("the view stack is never empty")
    }

    fn current_mut(&mut self) -> &mut ViewState {
        self.stack
            .last_mut()
            .expect("the view stack is never empty")
    }

    pub fn view(&self) -> &View {
        &self.current().view
    }

    pub fn flash(&mut self, kind: FlashKind, text: impl Into<String>) {
        self.flash = Some(Flash {
            text: text.into(),
            kind,
            ticks_left: FLASH_TICKS,
        });
        self.dirty = true;
    }

    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(key) => {
                self.dirty = true;
                self.key(&key)
            }
            Msg::Resize(w, h) => {
                self.size = (w, h);
                self.dirty = true;
                Vec::new()
            }
            Msg::Data(u) => {
                self.data(u);
                Vec::new()
            }
            Msg::Connection(r) => {
                let c = match r {
                    Ok(()) => Conn::Up,
                    Err(e) => Conn::Down(e),
                };
                if c != self.conn {
                    if c == Conn::Up {
                        self.failed = None;
                    }
                    self.conn = c;
                    self.dirty = true;
                }
                Vec::new()
            }
            Msg::LogLines { generation, lines } => {
                if generation == self.tail_generation
                    && let Some(buf) = &mut self.logs
                    && buf.push(lines) > 0
                {
                    self.dirty = true;
                }
                Vec::new()
            }
            Msg::LogState { generation, state } => {
                if generation == self.tail_generation && state != self.tail {
                    self.tail = state;
                    self.dirty = true;
                }
                Vec::new()
            }
            Msg::ActionDone { label, result } => {
                match result {
                    Ok(summary) => self.flash(FlashKind::Ok, format!("{label}: done, {summary}")),
                    Err(e) => self.flash(FlashKind::Error, format!("{label} failed: {e}")),
                }
                Vec::new()
            }
            Msg::RunStarted { app, dyno, command } => {
                self.flash(FlashKind::Ok, format!("Started {dyno}: {command}"));
                // Its output, as it runs: the app's logs narrowed to the new dyno.
                self.open_logs(
                    app,
                    LogFilter {
                        dyno: Some(dyno),
                        source: None,
                    },
                )
            }
            Msg::Stream(state) => {
                if state != self.stream {
                    self.stream = state;
                    self.dirty = true;
                }
                Vec::new()
            }
            Msg::Signal(_) => vec![Effect::Quit],
            Msg::Tick => {
                if let Some(f) = &mut self.flash {
                    f.ticks_left = f.ticks_left.saturating_sub(1);
                    if f.ticks_left == 0 {
                        self.flash = None;
                        self.dirty = true;
                    }
                }
                Vec::new()
            }
        }
    }

    /// A new second: relative times on screen may read differently.
    pub fn set_now(&mut self, now: i64) {
        if now != self.now {
            self.now = now;
            if matches!(self.view(), View::App(_) | View::Hosts | View::Releases(_)) {
                self.dirty = true;
            }
        }
    }

    fn data(&mut self, u: Update) {
        let view = self.view().clone();
        let changed = match u {
            Update::Apps(rows) => replace(&mut self.apps, rows),
            Update::App(detail) => {
                if view.app() != Some(detail.app.name.as_str()) {
                    return;
                }
                replace(&mut self.app, *detail)
            }
            Update::Hosts(h) => replace(&mut self.hosts, h),
            Update::Releases { app, releases } => replace(&mut self.releases, (app, releases)),
            Update::Config { app, vars } => replace(&mut self.config, (app, vars)),
            Update::Billing(report) => replace(&mut self.billing, *report),
            Update::Pricing(p) => replace(&mut self.pricing, *p),
            Update::Failed(e) => {
                let c = self.failed.as_deref() != Some(e.as_str());
                self.failed = Some(e);
                c
            }
        };
        if changed {
            self.clamp_selection();
            self.dirty = true;
        }
    }

    // ----- rows of the table views -----

    /// Indices of the current view's rows that pass its filter.
    pub fn visible_rows(&self) -> Vec<usize> {
        let vs = self.current();
        let f = vs.filter.to_lowercase();
        let keep = |text: &str| f.is_empty() || text.to_lowercase().contains(&f);
        match &vs.view {
            View::Apps => self
                .apps
                .iter()
                .flatten()
                .enumerate()
                .filter(|(_, r)| keep(&format!("{} {}", r.app.name, r.app.formation)))
                .map(|(i, _)| i)
                .collect(),
            View::App(name) => self
                .app_detail(name)
                .map(|d| {
                    d.dynos
                        .iter()
                        .enumerate()
                        .filter(|(_, x)| {
                            keep(&format!(
                                "{} {} {} {}",
                                x.name,
                                x.state,
                                x.size,
                                x.host.as_deref().unwrap_or("")
                            ))
                        })
                        .map(|(i, _)| i)
                        .collect()
                })
                .unwrap_or_default(),
            View::Hosts => self
                .hosts
                .iter()
                .flatten()
                .enumerate()
                .filter(|(_, h)| keep(&format!("{} {} {}", h.name, h.address, h.state)))
                .map(|(i, _)| i)
                .collect(),
            View::Releases(app) => self
                .releases_of(app)
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .rev()
                        .filter(|(_, x)| keep(&format!("v{} {}", x.version, x.description)))
                        .map(|(i, _)| i)
                        .collect()
                })
                .unwrap_or_default(),
            View::Config(app) => self
                .config_of(app)
                .map(|vars| {
                    vars.keys()
                        .enumerate()
                        .filter(|(_, k)| keep(k))
                        .map(|(i, _)| i)
                        .collect()
                })
                .unwrap_or_default(),
            View::Billing => self
                .billing_rows()
                .iter()
                .enumerate()
                .filter(|(_, r)| keep(&r.cells[..3].join(" ")))
                .map(|(i, _)| i)
                .collect(),
            View::Logs(_) => Vec::new(),
        }
    }

    /// The Billing view's rows (lines and subtotals), as `dyno billing` prints them.
    pub fn billing_rows(&self) -> Vec<BillingRow> {
        self.billing.as_ref().map(billing_rows).unwrap_or_default()
    }

    pub fn app_detail(&self, name: &str) -> Option<&AppDetail> {
        self.app.as_ref().filter(|d| d.app.name == name)
    }

    pub fn releases_of(&self, app: &str) -> Option<&Vec<Release>> {
        self.releases
            .as_ref()
            .filter(|(a, _)| a == app)
            .map(|(_, r)| r)
    }

    pub fn config_of(&self, app: &str) -> Option<&BTreeMap<String, String>> {
        self.config
            .as_ref()
            .filter(|(a, _)| a == app)
            .map(|(_, v)| v)
    }

    fn selected_index(&self) -> Option<usize> {
        self.visible_rows().get(self.current().selected).copied()
    }

    pub fn selected_app(&self) -> Option<String> {
        match self.view() {
            View::Apps => {
                let i = self.selected_index()?;
                self.apps.as_ref()?.get(i).map(|r| r.app.name.clone())
            }
            View::Billing => {
                let i = self.selected_index()?;
                self.billing_rows().get(i).map(|r| r.app.clone())
            }
            v => v.app().map(str::to_string),
        }
    }

    pub fn selected_dyno(&self) -> Option<&Dyno> {
        let View::App(name) = self.view() else {
            return None;
        };
        let i = self.selected_index()?;
        self.app_detail(name)?.dynos.get(i)
    }

    fn selected_host(&self) -> Option<&Host> {
        let i = self.selected_index()?;
        self.hosts.as_ref()?.get(i)
    }

    fn selected_var(&self) -> Option<String> {
        let View::Config(app) = self.view() else {
            return None;
        };
        let i = self.selected_index()?;
        self.config_of(app)?.keys().nth(i).cloned()
    }

    fn clamp_selection(&mut self) {
        let n = self.visible_rows().len();
        let vs = self.current_mut();
        vs.selected = vs.selected.min(n.saturating_sub(1));
    }

    /// Rows a page moves: the body's height less borders and the header row.
    fn page(&self) -> usize {
        (self.size.1 as usize).saturating_sub(8).max(1)
    }

    // ----- navigation -----

    /// Opens `view`: back to it if it is on the stack already, else on top.
    pub fn go(&mut self, view: View) -> Vec<Effect> {
        if let Some(i) = self.stack.iter().position(|v| v.view == view) {
            self.stack.truncate(i + 1);
        } else {
            self.stack.push(ViewState::new(view));
        }
        self.enter_current()
    }

    fn back(&mut self) -> Vec<Effect> {
        if self.billing_prices && *self.view() == View::Billing {
            self.billing_prices = false;
            return Vec::new();
        }
        if !self.current().filter.is_empty() {
            self.current_mut().filter.clear();
            self.clamp_selection();
            return Vec::new();
        }
        if self.stack.len() > 1 {
            self.stack.pop();
            return self.enter_current();
        }
        Vec::new()
    }

    fn enter_current(&mut self) -> Vec<Effect> {
        self.failed = None;
        self.dirty = true;
        let view = self.view().clone();
        self.tail_generation += 1;
        let tail = match &view {
            View::Logs(app) => {
                if self.logs.as_ref().is_none_or(|l| &l.app != app) {
                    self.logs = Some(LogBuf::new(app));
                }
                self.tail = TailState::Connecting;
                Some(app.clone())
            }
            _ => {
                self.logs = None;
                None
            }
        };
        if let View::Config(app) = &view
            && self.config.as_ref().is_none_or(|(a, _)| a != app)
        {
            self.revealed.clear();
            self.reveal_all = false;
        }
        vec![
            Effect::Watch(view.interest()),
            Effect::Tail(tail, self.tail_generation),
        ]
    }

    fn open_logs(&mut self, app: String, filter: LogFilter) -> Vec<Effect> {
        self.logs = Some(LogBuf::new(&app));
        if let Some(l) = &mut self.logs {
            l.filter = filter;
        }
        self.go(View::Logs(app))
    }

    // ----- keys -----

    fn key(&mut self, key: &KeyEvent) -> Vec<Effect> {
        // A terminal sends esc and a quickly following key as one alt+key: take it apart.
        if key.modifiers.contains(KeyModifiers::ALT)
            && let KeyCode::Char(c) = key.code
        {
            let mut effects = self.key(&KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
            let rest = KeyEvent::new(KeyCode::Char(c), key.modifiers - KeyModifiers::ALT);
            effects.extend(self.key(&rest));
            return effects;
        }
        let mode = std::mem::replace(&mut self.mode, Mode::Normal);
        match mode {
            Mode::Normal => self.normal_key(key),
            Mode::Help { scroll } => {
                self.mode = match key.code {
                    KeyCode::Down | KeyCode::Char('j') => Mode::Help {
                        scroll: scroll.saturating_add(1),
                    },
                    KeyCode::Up | KeyCode::Char('k') => Mode::Help {
                        scroll: scroll.saturating_sub(1),
                    },
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        return vec![Effect::Quit];
                    }
                    _ => Mode::Normal,
                };
                Vec::new()
            }
            Mode::Command(mut input) => match input.key(key) {
                Edit::Submit => self.command(input.text.trim()),
                Edit::Cancel => Vec::new(),
                _ => {
                    self.mode = Mode::Command(input);
                    Vec::new()
                }
            },
            Mode::Filter(mut input) => self.filter_key(&mut input, key),
            Mode::Dialog(mut d) => match d.input.key(key) {
                Edit::Submit => self.submit(d),
                Edit::Cancel => Vec::new(),
                _ => {
                    d.error = None;
                    self.mode = Mode::Dialog(d);
                    Vec::new()
                }
            },
            Mode::Confirm(c) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => self.act(c.action),
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => {
                    self.flash(FlashKind::Info, "Cancelled");
                    Vec::new()
                }
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    vec![Effect::Quit]
                }
                _ => {
                    self.mode = Mode::Confirm(c);
                    Vec::new()
                }
            },
        }
    }

    fn filter_key(&mut self, input: &mut Input, key: &KeyEvent) -> Vec<Effect> {
        let is_logs = matches!(self.view(), View::Logs(_));
        match input.key(key) {
            Edit::Submit if is_logs => {
                let text = input.text.clone();
                if let Some(buf) = &mut self.logs {
                    match buf.set_search(&text) {
                        Ok(()) => {}
                        Err(e) => {
                            self.flash(FlashKind::Error, e);
                            self.mode = Mode::Filter(input.clone());
                        }
                    }
                }
            }
            Edit::Submit => {}
            Edit::Cancel => {
                if !is_logs {
                    self.current_mut().filter.clear();
                    self.clamp_selection();
                }
            }
            Edit::Changed if !is_logs => {
                self.current_mut().filter = input.text.clone();
                self.current_mut().selected = 0;
                self.mode = Mode::Filter(input.clone());
            }
            _ => self.mode = Mode::Filter(input.clone()),
        }
        Vec::new()
    }

    fn normal_key(&mut self, key: &KeyEvent) -> Vec<Effect> {
        let scope = self.view().scope();
        let Some(cmd) = keymap::lookup(scope, self.read_only, key) else {
            return Vec::new();
        };
        let in_logs = matches!(self.view(), View::Logs(_));
        match cmd {
            Cmd::Quit => vec![Effect::Quit],
            Cmd::Back => self.back(),
            Cmd::Help => {
                self.mode = Mode::Help { scroll: 0 };
                Vec::new()
            }
            Cmd::CommandBar => {
                self.mode = Mode::Command(Input::default());
                Vec::new()
            }
            Cmd::Filter => {
                let text = if in_logs {
                    self.logs
                        .as_ref()
                        .and_then(|l| l.search.as_ref().map(|r| r.as_str().to_string()))
                        .unwrap_or_default()
                } else {
                    self.current().filter.clone()
                };
                self.mode = Mode::Filter(Input::with(&text));
                Vec::new()
            }
            Cmd::Refresh => vec![Effect::Refresh],
            Cmd::Up | Cmd::Down | Cmd::PageUp | Cmd::PageDown | Cmd::Top | Cmd::Bottom => {
                self.movement(cmd);
                Vec::new()
            }
            Cmd::Open => match self.view().clone() {
                View::Apps => match self.selected_app() {
                    Some(a) => self.go(View::App(a)),
                    None => Vec::new(),
                },
                View::App(app) => {
                    let filter = LogFilter {
                        dyno: self.selected_dyno().map(|d| d.name.clone()),
                        source: None,
                    };
                    self.open_logs(app, filter)
                }
                View::Billing => match self.selected_app() {
                    Some(a) => self.go(View::App(a)),
                    None => Vec::new(),
                },
                _ => Vec::new(),
            },
            Cmd::Logs => match self.selected_app() {
                Some(a) => self.open_logs(a, LogFilter::default()),
                None => Vec::new(),
            },
            Cmd::Releases => match self.selected_app() {
                Some(a) => self.go(View::Releases(a)),
                None => Vec::new(),
            },
            Cmd::Config => match self.selected_app() {
                Some(a) => self.go(View::Config(a)),
                None => Vec::new(),
            },
            Cmd::Billing => self.go(View::Billing),
            Cmd::Prices => {
                self.billing_prices = !self.billing_prices;
                Vec::new()
            }
            Cmd::RunOneOff => {
                if let Some(app) = self.selected_app() {
                    self.mode = Mode::Dialog(Dialog {
                        kind: DialogKind::Run { app: app.clone() },
                        title: format!("Run in {app}:"),
                        hint: "COMMAND ARGS, e.g. bin/migrate; runs detached, its logs open".into(),
                        input: Input::default(),
                        error: None,
                    });
                }
                Vec::new()
            }
            Cmd::Scale => {
                if let Some(app) = self.selected_app() {
                    let current = self.formation_text(&app);
                    self.mode = Mode::Dialog(Dialog {
                        kind: DialogKind::Scale { app: app.clone() },
                        title: format!("Scale {app}"),
                        hint: match current {
                            Some(c) if !c.is_empty() => {
                                format!("now: {c}   (TYPE=N, TYPE+N, TYPE-N, each :SIZE)")
                            }
                            _ => "TYPE=N, TYPE+N or TYPE-N, each with an optional :SIZE".into(),
                        },
                        input: Input::default(),
                        error: None,
                    });
                }
                Vec::new()
            }
            Cmd::ScaleUp | Cmd::ScaleDown => {
                let (Some(app), Some(d)) = (self.selected_app(), self.selected_dyno()) else {
                    return Vec::new();
                };
                let t = d.process_type.clone();
                if cmd == Cmd::ScaleUp {
                    self.act(Action::Scale {
                        app,
                        args: vec![format!("{t}+1")],
                    })
                } else {
                    self.confirm(
                        format!(
                            "Scale {t} of {app} down by one? The highest-numbered {t} dyno stops."
                        ),
                        Action::Scale {
                            app,
                            args: vec![format!("{t}-1")],
                        },
                    )
                }
            }
            Cmd::Restart => match self.view().clone() {
                View::Apps => match self.selected_app() {
                    Some(app) => self.confirm(
                        format!("Restart every dyno of {app}?"),
                        Action::Restart {
                            app,
                            dyno: None,
                            process_type: None,
                        },
                    ),
                    None => Vec::new(),
                },
                View::App(app) => match self.selected_dyno() {
                    Some(d) => {
                        let dyno = d.name.clone();
                        self.confirm(
                            format!("Restart {dyno} of {app}?"),
                            Action::Restart {
                                app,
                                dyno: Some(dyno),
                                process_type: None,
                            },
                        )
                    }
                    None => Vec::new(),
                },
                _ => Vec::new(),
            },
            Cmd::RestartType => {
                let (Some(app), Some(d)) = (self.selected_app(), self.selected_dyno()) else {
                    return Vec::new();
                };
                let t = d.process_type.clone();
                self.confirm(
                    format!("Restart every {t} dyno of {app}?"),
                    Action::Restart {
                        app,
                        dyno: None,
                        process_type: Some(t),
                    },
                )
            }
            Cmd::Stop => {
                let (Some(app), Some(d)) = (self.selected_app(), self.selected_dyno()) else {
                    return Vec::new();
                };
                let dyno = d.name.clone();
                let note = if d.one_off {
                    ""
                } else {
                    " (the formation starts a replacement)"
                };
                self.confirm(
                    format!("Stop {dyno} of {app}?{note}"),
                    Action::Stop { app, dyno },
                )
            }
            Cmd::Resize => {
                let (Some(app), Some(d)) = (self.selected_app(), self.selected_dyno()) else {
                    return Vec::new();
                };
                let t = d.process_type.clone();
                self.mode = Mode::Dialog(Dialog {
                    kind: DialogKind::Resize {
                        app: app.clone(),
                        process_type: t.clone(),
                    },
                    title: format!("Size of {t} dynos of {app}"),
                    hint: format!(
                        "now: {}   (eco basic standard-1x standard-2x performance-m performance-l)",
                        d.size
                    ),
                    input: Input::default(),
                    error: None,
                });
                Vec::new()
            }
            Cmd::Rollback => {
                let View::Releases(app) = self.view().clone() else {
                    return Vec::new();
                };
                let Some(r) = self
                    .selected_index()
                    .and_then(|i| self.releases_of(&app)?.get(i))
                else {
                    return Vec::new();
                };
                let version = r.version;
                self.confirm(
                    format!("Roll {app} back to v{version}? Its dynos restart on a new release."),
                    Action::Rollback { app, version },
                )
            }
            Cmd::Maintenance => {
                let Some(app) = self.selected_app() else {
                    return Vec::new();
                };
                let on = !self.app_detail(&app).is_some_and(|d| d.app.maintenance);
                let q = if on {
                    format!("Turn maintenance mode on for {app}? Every request gets the H80 page.")
                } else {
                    format!("Turn maintenance mode off for {app}?")
                };
                self.confirm(q, Action::Maintenance { app, on })
            }
            Cmd::Drain | Cmd::Undrain => {
                let Some(h) = self.selected_host() else {
                    return Vec::new();
                };
                let host = h.name.clone();
                let drained = cmd == Cmd::Drain;
                let q = if drained {
                    format!("Drain host {host}? It takes no new dynos and its dynos move away.")
                } else {
                    format!("Take host {host} back into service?")
                };
                self.confirm(q, Action::Drain { host, drained })
            }
            Cmd::Follow => {
                if let Some(l) = &mut self.logs {
                    if l.following() {
                        l.pause();
                    } else {
                        l.follow();
                    }
                }
                Vec::new()
            }
            Cmd::LogFilter => {
                let current = self
                    .logs
                    .as_ref()
                    .map(|l| l.filter.describe())
                    .unwrap_or_default();
                self.mode = Mode::Dialog(Dialog {
                    kind: DialogKind::LogFilter,
                    title: "Show lines of".into(),
                    hint: "web.1 (a dyno), web (a type), source=app|system|router; empty: all"
                        .into(),
                    input: Input::with(&current),
                    error: None,
                });
                Vec::new()
            }
            Cmd::Wrap => {
                if let Some(l) = &mut self.logs {
                    l.wrap = !l.wrap;
                }
                Vec::new()
            }
            Cmd::Timestamps => {
                if let Some(l) = &mut self.logs {
                    l.timestamps = !l.timestamps;
                }
                Vec::new()
            }
            Cmd::Save => vec![Effect::SaveLogs],
            Cmd::ClearLogs => {
                if let Some(l) = &mut self.logs {
                    l.clear();
                }
                Vec::new()
            }
            Cmd::Reveal => {
                if let Some(k) = self.selected_var()
                    && !self.revealed.remove(&k)
                {
                    self.revealed.insert(k);
                }
                Vec::new()
            }
            Cmd::RevealAll => {
                self.reveal_all = !self.reveal_all;
                self.revealed.clear();
                Vec::new()
            }
            Cmd::SetVar => {
                if let Some(app) = self.selected_app() {
                    let prefill = self
                        .selected_var()
                        .map(|k| format!("{k}="))
                        .unwrap_or_default();
                    self.mode = Mode::Dialog(Dialog {
                        kind: DialogKind::SetVar { app: app.clone() },
                        title: format!("Set a config var of {app}"),
                        hint: "KEY=VALUE (makes a new release; the dynos restart)".into(),
                        input: Input::with(&prefill),
                        error: None,
                    });
                }
                Vec::new()
            }
            Cmd::UnsetVar => {
                let (Some(app), Some(key)) = (self.selected_app(), self.selected_var()) else {
                    return Vec::new();
                };
                self.confirm(
                    format!(
                        "Unset {key} on {app}? This makes a new release and restarts the dynos."
                    ),
                    Action::SetVar {
                        app,
                        key,
                        value: None,
                    },
                )
            }
        }
    }

    fn movement(&mut self, cmd: Cmd) {
        let page = self.page();
        if let View::Logs(_) = self.view() {
            let Some(l) = &mut self.logs else { return };
            match cmd {
                Cmd::Up => l.scroll(-1),
                Cmd::Down => l.scroll(1),
                Cmd::PageUp => l.scroll(-(page as i64)),
                Cmd::PageDown => l.scroll(page as i64),
                Cmd::Top => l.top(),
                _ => l.follow(),
            }
            return;
        }
        let n = self.visible_rows().len();
        let vs = self.current_mut();
        let last = n.saturating_sub(1);
        vs.selected = match cmd {
            Cmd::Up => vs.selected.saturating_sub(1),
            Cmd::Down => (vs.selected + 1).min(last),
            Cmd::PageUp => vs.selected.saturating_sub(page),
            Cmd::PageDown => (vs.selected + page).min(last),
            Cmd::Top => 0,
            _ => last,
        };
    }

    fn confirm(&mut self, question: String, action: Action) -> Vec<Effect> {
        self.mode = Mode::Confirm(Confirm { question, action });
        Vec::new()
    }

    fn act(&mut self, action: Action) -> Vec<Effect> {
        if self.read_only {
            return Vec::new();
        }
        self.flash(FlashKind::Info, format!("{}...", action.describe()));
        vec![Effect::Act(action)]
    }

    /// `web=1:standard-1x worker=0:basic`, when the App view has the formation of `app`.
    fn formation_text(&self, app: &str) -> Option<String> {
        if let Some(d) = self.app_detail(app) {
            return Some(crate::output::formation(&d.formation));
        }
        self.apps
            .iter()
            .flatten()
            .find(|r| r.app.name == app)
            .map(|r| r.app.formation.clone())
    }

    /// Current quantity of a type, when known.
    fn quantity(&self, app: &str, process_type: &str) -> Option<u32> {
        self.app_detail(app)?
            .formation
            .iter()
            .find(|f| f.process_type == process_type)
            .map(|f| f.quantity)
    }

    fn submit(&mut self, mut d: Dialog) -> Vec<Effect> {
        let text = d.input.text.trim().to_string();
        let outcome: Result<Vec<Effect>, String> = match &d.kind {
            DialogKind::Scale { app } => {
                let words: Vec<&str> = text.split_whitespace().collect();
                if words.is_empty() {
                    Err("type a scale argument, e.g. web=3".into())
                } else {
                    match parse_scale_args(&words) {
                        Err(e) => Err(e.to_string()),
                        Ok(parsed) => {
                            let app = app.clone();
                            let fewer: Vec<String> = parsed
                                .iter()
                                .filter(|a| match a.op {
                                    ScaleOp::Sub(n) => n > 0,
                                    ScaleOp::Set(n) => self
                                        .quantity(&app, a.process_type.as_str())
                                        .is_some_and(|q| n < q),
                                    ScaleOp::Add(_) => false,
                                })
                                .map(|a| a.process_type.to_string())
                                .collect();
                            let action = Action::Scale {
                                app: app.clone(),
                                args: parsed.iter().map(|a| a.to_string()).collect(),
                            };
                            if fewer.is_empty() {
                                Ok(self.act(action))
                            } else {
                                Ok(self.confirm(
                                    format!(
                                        "Scale {app}: {}? Fewer {} dynos: some stop.",
                                        words.join(" "),
                                        fewer.join(", ")
                                    ),
                                    action,
                                ))
                            }
                        }
                    }
                }
            }
            DialogKind::Resize { app, process_type } => match text.parse::<Size>() {
                Err(e) => Err(e.to_string()),
                Ok(size) => {
                    let (app, process_type) = (app.clone(), process_type.clone());
                    Ok(self.confirm(
                        format!("Resize {process_type} of {app} to {size}? Its dynos restart."),
                        Action::Resize {
                            app,
                            process_type,
                            size: size.to_string(),
                        },
                    ))
                }
            },
            DialogKind::SetVar { app } => {
                match dyno_shared::config::parse_assignment(&text) {
                    Ok((key, v)) => {
                        let app = app.clone();
                        Ok(self.confirm(
                        format!("Set {key} on {app}? This makes a new release and restarts the dynos."),
                        Action::SetVar {
                            app,
                            key,
                            value: Some(v.to_string()),
                        },
                    ))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            DialogKind::Run { app } => {
                if text.is_empty() {
                    Err("type a command, e.g. bin/migrate".into())
                } else {
                    let app = app.clone();
                    Ok(self.act(Action::Run { app, command: text }))
                }
            }
            DialogKind::LogFilter => match LogFilter::parse(&text) {
                Err(e) => Err(e),
                Ok(f) => {
                    if let Some(l) = &mut self.logs {
                        l.filter = f;
                    }
                    Ok(Vec::new())
                }
            },
        };
        match outcome {
            Ok(effects) => effects,
            Err(e) => {
                d.error = Some(e);
                self.mode = Mode::Dialog(d);
                Vec::new()
            }
        }
    }

    /// `:apps`, `:app shop`, `:hosts`, `:logs shop`, `:releases`, `:config`, `:billing`, `:q`.
    fn command(&mut self, line: &str) -> Vec<Effect> {
        let mut words = line.split_whitespace();
        let Some(word) = words.next() else {
            return Vec::new();
        };
        let arg = words.next();
        let name = match resolve_view_name(word) {
            Ok(n) => n,
            Err(e) => {
                self.flash(FlashKind::Error, e);
                return Vec::new();
            }
        };
        let app = match arg {
            Some(a) => match a.parse::<AppName>() {
                Ok(a) => Some(a.to_string()),
                Err(e) => {
                    self.flash(FlashKind::Error, e.to_string());
                    return Vec::new();
                }
            },
            None => self.selected_app(),
        };
        let need_app = |s: &mut State, f: fn(String) -> View| match &app {
            Some(a) => s.go(f(a.clone())),
            None => {
                s.flash(FlashKind::Error, format!("name an app: :{name} APP"));
                Vec::new()
            }
        };
        match name {
            "apps" => self.go(View::Apps),
            "hosts" => self.go(View::Hosts),
            "app" => need_app(self, View::App),
            "logs" => match &app {
                Some(a) => self.open_logs(a.clone(), LogFilter::default()),
                None => need_app(self, View::Logs),
            },
            "releases" => need_app(self, View::Releases),
            "config" => need_app(self, View::Config),
            "billing" => self.go(View::Billing),
            _ => vec![Effect::Quit],
        }
    }
}

fn replace<T: PartialEq>(slot: &mut Option<T>, new: T) -> bool {
    if slot.as_ref() == Some(&new) {
        false
    } else {
        *slot = Some(new);
        true
    }
}

/// A view name or alias, or a unique prefix of one.
fn resolve_view_name(word: &str) -> Result<&'static str, String> {
    const NAMES: &[(&str, &str)] = &[
        ("apps", "apps"),
        ("app", "app"),
        ("ps", "app"),
        ("dynos", "app"),
        ("hosts", "hosts"),
        ("logs", "logs"),
        ("releases", "releases"),
        ("config", "config"),
        ("billing", "billing"),
        ("quit", "quit"),
        ("q", "quit"),
    ];
    let w = word.to_lowercase();
    if let Some((_, n)) = NAMES.iter().find(|(a, _)| *a == w) {
        return Ok(n);
    }
    let mut found: Vec<&str> = NAMES
        .iter()
        .filter(|(a, _)| a.starts_with(&w))
        .map(|(_, n)| *n)
        .collect();
    found.dedup();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no view {word:?}: try {}",
            keymap::VIEW_NAMES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        many => Err(format!("{word:?} could be {}", many.join(" or "))),
    }
}
