//! `dyno console`: the full-screen operator console (ratatui + crossterm).
//!
//! - `model`: the data, messages and actions; `state`: pure updates from messages to effects;
//! - `keymap`: every key binding; `draw`: rendering; `logbuf`: the Logs view's buffer;
//! - `data`: the `DataSource` trait and its implementation over the control API, driven by the
//!   coordinator's change stream; `refresh`: the pure rules of when it fetches what.
//!
//! The loop (`run_loop`) is generic over the ratatui backend, so tests drive it on `TestBackend`.
//! The terminal is restored by a guard's `Drop`, by a panic hook, on SIGTERM/SIGINT/SIGHUP (read
//! from a signalfd on a thread of its own) and when `q` or ctrl-c quit.

pub mod data;
pub mod draw;
pub mod keymap;
pub mod logbuf;
pub mod model;
pub mod refresh;
pub mod state;

use anyhow::{Context, Result};
use data::{DataSource, Poller};
use model::Msg;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use state::{Effect, FlashKind, State, View};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Data-only redraws are spaced at least this much (a busy log tail does not eat the CPU);
/// a key redraws at once.
const FRAME_GAP: Duration = Duration::from_millis(33);

pub struct Options {
    pub coordinator: String,
    pub token: Option<String>,
    pub read_only: bool,
    /// Open this app's view first.
    pub app: Option<String>,
    /// Handle SIGTERM/SIGINT/SIGHUP here (not when `dyno up` owns the signals).
    pub own_signals: bool,
    /// Where to record each frame's drawing time in microseconds (`DYNO_CONSOLE_FRAME_LOG`).
    pub frame_log: Option<PathBuf>,
}

/// Puts the terminal back however the console ends.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard> {
        enable_raw_mode().context("failed to put the terminal in raw mode")?;
        let guard = TerminalGuard;
        execute!(std::io::stdout(), EnterAlternateScreen)
            .context("failed to switch to the alternate screen")?;
        Ok(guard)
    }
}

pub fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Restores the terminal before the panic message prints, so it is readable.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
}

/// Blocks the stopping signals in this thread (and so in every thread started after) and turns
/// them into messages.
fn watch_signals(tx: Sender<Msg>) -> Result<()> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("failed to block signals")?;
    let fd = SignalFd::new(&mask).context("failed to create a signalfd")?;
    std::thread::Builder::new()
        .name("console-signals".into())
        .spawn(move || {
            if let Ok(Some(info)) = fd.read_signal() {
                let name = Signal::try_from(info.ssi_signo as i32)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| "a signal".into());
                let _ = tx.send(Msg::Signal(name));
            }
        })?;
    Ok(())
}

/// Reads keys and resizes until `stop`, polling so it can notice `stop`.
fn read_input(tx: Sender<Msg>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let msg = match event::read() {
            // Key presses only: no repeats of releases on terminals that report them.
            Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => Msg::Key(k),
            Ok(Event::Resize(w, h)) => Msg::Resize(w, h),
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Runs the console on this terminal until the operator quits or a signal arrives. `tick` runs
/// between messages; an error from it ends the console with that error (`dyno up` checks its
/// children and signals there).
pub fn run(opts: Options, tick: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    if opts.own_signals {
        // Before any thread starts, so all of them inherit the blocked mask.
        watch_signals(tx.clone())?;
    }
    install_panic_hook();
    let _guard = TerminalGuard::enter()?;
    let stop = Arc::new(AtomicBool::new(false));
    let input_stop = stop.clone();
    let input_tx = tx.clone();
    std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || read_input(input_tx, input_stop))?;
    let mut source = Poller::start(&opts.coordinator, opts.token.clone(), tx.clone())?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    terminal.clear()?;
    let size = terminal.size()?;
    let start = match &opts.app {
        Some(a) => View::App(a.clone()),
        None => View::Apps,
    };
    let mut state = State::new(
        &opts.coordinator,
        opts.read_only,
        start,
        dyno_shared::time::now_secs(),
    );
    state.size = (size.width, size.height);
    let mut frames = opts.frame_log.as_ref().map(|_| Vec::new());
    let result = run_loop(
        &mut terminal,
        &mut state,
        &rx,
        &mut source,
        tick,
        frames.as_mut(),
    );
    stop.store(true, Ordering::Relaxed);
    drop(source);
    if let (Some(path), Some(frames)) = (&opts.frame_log, frames) {
        let text: String = frames
            .iter()
            .map(|f: &FrameTime| format!("{} {}\n", f.view, f.micros))
            .collect();
        let _ = std::fs::write(path, text);
    }
    terminal.show_cursor().ok();
    result
}

/// One drawn frame, for `DYNO_CONSOLE_FRAME_LOG`.
pub struct FrameTime {
    pub view: &'static str,
    pub micros: u128,
}

fn view_kind(v: &View) -> &'static str {
    match v {
        View::Apps => "apps",
        View::App(_) => "app",
        View::Hosts => "hosts",
        View::Logs(_) => "logs",
        View::Releases(_) => "releases",
        View::Config(_) => "config",
        View::Billing => "billing",
    }
}

/// The console's loop: draw when something changed, wait for a message, update, carry out the
/// effects. Generic over the backend so it runs on `TestBackend` as well.
pub fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    state: &mut State,
    rx: &Receiver<Msg>,
    source: &mut dyn DataSource,
    tick: &mut dyn FnMut() -> Result<()>,
    mut frames: Option<&mut Vec<FrameTime>>,
) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let effects = state.start();
    if apply(state, source, effects) {
        return Ok(());
    }
    let mut last_draw = Instant::now() - FRAME_GAP;
    let mut last_second = Instant::now();
    let mut urgent = true;
    loop {
        if state.dirty && (urgent || last_draw.elapsed() >= FRAME_GAP) {
            let t = Instant::now();
            terminal.draw(|f| draw::draw(f, state))?;
            if let Some(fr) = frames.as_deref_mut() {
                fr.push(FrameTime {
                    view: view_kind(state.view()),
                    micros: t.elapsed().as_micros(),
                });
            }
            state.dirty = false;
            urgent = false;
            last_draw = Instant::now();
        }
        tick()?;
        let wait = if state.dirty {
            FRAME_GAP.saturating_sub(last_draw.elapsed())
        } else {
            Duration::from_millis(250)
        };
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        if last_second.elapsed() >= Duration::from_secs(1) {
            last_second = Instant::now();
            state.set_now(dyno_shared::time::now_secs());
            state.update(Msg::Tick);
        }
        // Take everything queued (a burst of log batches) before drawing again, but never
        // hold a key back for long.
        let budget = Instant::now() + Duration::from_millis(15);
        let mut next = first;
        while let Some(msg) = next {
            if let Msg::Key(_) | Msg::Resize(..) = msg {
                urgent = true;
            }
            if let Msg::Resize(..) = msg {
                terminal.autoresize()?;
            }
            let effects = state.update(msg);
            if apply(state, source, effects) {
                return Ok(());
            }
            if Instant::now() >= budget {
                break;
            }
            next = rx.try_recv().ok();
        }
    }
}

/// Carries out effects; true when the console should quit.
fn apply(state: &mut State, source: &mut dyn DataSource, effects: Vec<Effect>) -> bool {
    for e in effects {
        match e {
            Effect::Quit => return true,
            Effect::Watch(i) => source.watch(i),
            Effect::Tail(app, generation) => source.tail(app.as_deref(), generation),
            Effect::Act(a) => source.act(a),
            Effect::Refresh => source.refresh(),
            Effect::SaveLogs => match save_logs(state, Path::new(".")) {
                Ok((path, n)) => state.flash(
                    FlashKind::Ok,
                    format!("Saved {n} lines to {}", path.display()),
                ),
                Err(e) => state.flash(FlashKind::Error, format!("Saving the logs failed: {e:#}")),
            },
        }
    }
    false
}

/// Writes the Logs view's shown lines (heroku's layout) to `DIR/dyno-logs-APP-TIME.log`.
pub fn save_logs(state: &State, dir: &Path) -> Result<(PathBuf, usize)> {
    let buf = state.logs.as_ref().context("no logs on screen")?;
    let stamp = dyno_shared::time::rfc3339_micros(dyno_shared::time::now_micros())
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect::<String>();
    let path = dir.join(format!("dyno-logs-{}-{stamp}.log", buf.app));
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path)
            .with_context(|| format!("failed to create {}", path.display()))?,
    );
    let mut n = 0;
    for l in buf.shown() {
        writeln!(out, "{}", l.render())?;
        n += 1;
    }
    out.flush()?;
    let path = std::path::absolute(&path).unwrap_or(path);
    Ok((path, n))
}

#[cfg(test)]
mod tests;
