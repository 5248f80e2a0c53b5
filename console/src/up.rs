//! `dyno up`: a whole platform on this machine (coordinator, one agent, the sample app), kept
//! running until SIGINT or SIGTERM.

use crate::cli::UpArgs;
use crate::client::Client;
use crate::commands::{deploy, emit, ps};
use crate::config_file::{self, SavedConfig};
use crate::error::ApiError;
use crate::output;
use anyhow::{Context, Result, bail};
use dyno_shared::api::{App, CreateApp, Dyno, FormationItem, Host, ScaleRequest};
use dyno_shared::time::{now_secs, ps_time};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::fmt;
use std::fs;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SAMPLE_PROCFILE: &str = include_str!("../../sample/Procfile");
const SAMPLE_APP: &str = "sample";
const SAMPLE_SCALE: [&str; 2] = ["web=2", "worker=1"];
const AGENT_NAME: &str = "local";
const TICK: Duration = Duration::from_millis(100);

/// Why the platform stops: these end `up` without being reported as a failure of a step.
#[derive(Debug)]
enum Stop {
    Signal(Signal),
    Died {
        name: String,
        status: ExitStatus,
        log: PathBuf,
    },
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Signal(s) => write!(f, "received {s}"),
            Stop::Died { name, status, .. } => write!(f, "{name} exited unexpectedly ({status})"),
        }
    }
}

impl std::error::Error for Stop {}

struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// The children and the signals that stop them.
struct Platform {
    /// Started order: coordinator, then agent; stopped in reverse.
    procs: Vec<Proc>,
    signals: SignalFd,
}

impl Platform {
    /// Blocks SIGINT, SIGTERM and SIGHUP and reads them from a signalfd, so no handler (and no
    /// unsafe) is needed. Children would inherit that mask, so they start through
    /// `dyno __exec`, which clears it before exec.
    fn new() -> Result<Platform> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGHUP);
        mask.thread_block().context("failed to block signals")?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("failed to create a signalfd")?;
        Ok(Platform {
            procs: Vec::new(),
            signals,
        })
    }

    fn signal(&self) -> Option<Signal> {
        match self.signals.read_signal() {
            Ok(Some(info)) => Signal::try_from(info.ssi_signo as i32).ok(),
            _ => None,
        }
    }

    /// Fails with `Stop` on a signal or when a child has exited.
    fn check(&mut self) -> Result<()> {
        if let Some(sig) = self.signal() {
            return Err(Stop::Signal(sig).into());
        }
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                let name = p.name.to_string();
                let log = p.log.clone();
                // Already reaped: shutdown must not wait for it.
                self.procs.retain(|q| q.name != name);
                return Err(Stop::Died { name, status, log }.into());
            }
        }
        Ok(())
    }

    fn spawn(&mut self, name: &'static str, bin: &Path, args: &[&str], log: PathBuf) -> Result<()> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("failed to open {}", log.display()))?;
        let err = out.try_clone()?;
        let me = std::env::current_exe().context("cannot find the dyno binary itself")?;
        let child = Command::new(me)
            .arg("__exec")
            .arg("--")
            .arg(bin)
            .args(args)
            // A shell that ran `export DYNO_TOKEN=...` for an earlier platform must not steer
            // this one: `up` passes every setting as a flag.
            .env_remove("DYNO_TOKEN")
            .env_remove("DYNO_COORDINATOR")
            .env_remove("DYNO_APP")
            .env_remove("DYNO_LISTEN")
            .env_remove("DYNO_ROUTER")
            .env_remove("DYNO_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a terminal's Ctrl-C reaches only us, and we stop it in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("failed to start {}", bin.display()))?;
        eprintln!(
            "Started {name} (pid {}), logging to {}",
            child.id(),
            log.display()
        );
        self.procs.push(Proc { name, child, log });
        Ok(())
    }

    /// SIGTERM to the agent (it stops its dynos), then to the coordinator, each awaited in turn.
    fn shutdown(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            let grace = if p.name == "dyno-agent" {
                Duration::from_secs(60)
            } else {
                Duration::from_secs(20)
            };
            let pid = Pid::from_raw(p.child.id() as i32);
            eprintln!("Stopping {}...", p.name);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => {}
                }
                // A second Ctrl-C, or the grace running out, ends it at once.
                if self.signal().is_some() || Instant::now() >= deadline {
                    eprintln!("Killing {}", p.name);
                    let _ = killpg(pid, Signal::SIGKILL);
                    let _ = p.child.wait();
                    break;
                }
                std::thread::sleep(TICK);
            }
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // Only reached with children left on an early return or a panic: never leave them behind.
        for p in &mut self.procs {
            let _ = killpg(Pid::from_raw(p.child.id() as i32), Signal::SIGKILL);
            let _ = p.child.wait();
        }
    }
}

/// `dyno __exec -- PROGRAM ARGS...`: the blocked signals of `up` must not reach its children.
pub fn exec_unblocked(argv: &[String]) -> Result<i32> {
    let Some((program, args)) = argv.split_first() else {
        bail!("__exec needs a program");
    };
    SigSet::empty()
        .thread_set_mask()
        .context("failed to clear the signal mask")?;
    // Only returns on failure.
    let err = Command::new(program).args(args).exec();
    Err(anyhow::Error::new(err).context(format!("failed to exec {program}")))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A sibling of the running `dyno` binary, else the first match on PATH.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    if let Some(p) = sibling.filter(|p| is_executable(p)) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A listen address as a client reaches it: wildcard hosts become loopback.
pub fn client_addr(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    }
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(_, p)| p).unwrap_or(addr)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Polls `ready` every tick until it holds, failing after `timeout` or on a stop.
fn wait_until(
    platform: &mut Platform,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        platform.check()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(TICK);
    }
}

pub fn up(args: &UpArgs) -> Result<i32> {
    let mut needed = vec!["dyno-coordinator", "dyno-agent"];
    if !args.no_sample {
        needed.push("dyno-probe");
    }
    let found: Vec<(&str, Option<PathBuf>)> = needed.iter().map(|n| (*n, find_binary(n))).collect();
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        let here = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.display().to_string()))
            .unwrap_or_else(|| "?".into());
        bail!(
            "cannot find {} in {here} or on PATH; build them with `cargo build --release` and run \
             target/release/dyno up",
            missing.join(", ")
        );
    }
    let bin = |name: &str| {
        found
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, p)| p.clone())
            .unwrap_or_default()
    };

    let mut platform = Platform::new()?;
    let outcome = start_and_serve(&mut platform, args, &bin);
    let err = match outcome {
        Ok(()) => return Ok(0),
        Err(e) => e,
    };
    match err.chain().find_map(|c| c.downcast_ref::<Stop>()) {
        Some(Stop::Signal(_)) => {
            platform.shutdown();
            println!("stopped");
            Ok(0)
        }
        Some(Stop::Died { name, status, log }) => {
            eprintln!("error: {name} exited unexpectedly: {status}");
            eprintln!("last lines of {}:\n{}", log.display(), log_tail(log));
            platform.shutdown();
            eprintln!("stopped");
            Ok(1)
        }
        None => {
            eprintln!("error: {err:#}");
            platform.shutdown();
            eprintln!("stopped");
            Ok(1)
        }
    }
}

fn start_and_serve(
    platform: &mut Platform,
    args: &UpArgs,
    bin: &dyn Fn(&str) -> PathBuf,
) -> Result<()> {
    let state = std::path::absolute(&args.state_dir)
        .with_context(|| format!("bad state dir {}", args.state_dir.display()))?;
    let coord_dir = state.join("coordinator");
    let agent_dir = state.join("agent");
    for d in [&coord_dir, &agent_dir] {
        fs::create_dir_all(d).with_context(|| format!("failed to create {}", d.display()))?;
    }
    let api_url = format!("http://{}", client_addr(&args.api));
    let router = client_addr(&args.router);

    let probe = Client::new(&api_url, None)?;
    if probe.healthy() {
        bail!("a coordinator already answers at {api_url}; stop it or pass --api ADDR");
    }
    platform.spawn(
        "dyno-coordinator",
        &bin("dyno-coordinator"),
        &[
            "--listen",
            &args.api,
            "--router",
            &args.router,
            "--state-dir",
            &coord_dir.to_string_lossy(),
        ],
        state.join("coordinator.log"),
    )?;
    wait_until(
        platform,
        "the coordinator's /healthz",
        Duration::from_secs(30),
        || probe.healthy(),
    )?;
    let token_path = coord_dir.join("token");
    let mut token = String::new();
    wait_until(
        platform,
        &format!("the operator token in {}", token_path.display()),
        Duration::from_secs(10),
        || {
            token = fs::read_to_string(&token_path)
                .unwrap_or_default()
                .trim()
                .to_string();
            !token.is_empty()
        },
    )?;
    let client = Client::new(&api_url, Some(token.clone()))?;

    platform.spawn(
        "dyno-agent",
        &bin("dyno-agent"),
        &[
            "--coordinator",
            &api_url,
            "--token",
            &token,
            "--state-dir",
            &agent_dir.to_string_lossy(),
            "--name",
            AGENT_NAME,
        ],
        state.join("agent.log"),
    )?;
    wait_until(
        platform,
        "the agent to connect",
        Duration::from_secs(30),
        || {
            client.get::<Vec<Host>>("/hosts").is_ok_and(|hosts| {
                hosts
                    .iter()
                    .any(|h| h.name == AGENT_NAME && h.state == "connected")
            })
        },
    )?;
    eprintln!("Agent {AGENT_NAME} connected");

    if !args.no_sample {
        match deploy_sample(platform, &client, &state, &bin("dyno-probe")) {
            Ok(()) => {}
            Err(e) if e.chain().any(|c| c.is::<Stop>()) => return Err(e),
            // The platform itself is fine: keep it up so the problem can be looked at.
            Err(e) => eprintln!("warning: the sample app is not fully up: {e:#}"),
        }
    }

    let router_port = port_of(&router);
    println!();
    println!("The platform is up.");
    if !args.no_sample {
        println!("  sample app:  http://{SAMPLE_APP}.localhost:{router_port}/");
        println!(
            "  without *.localhost resolution:  curl -H 'Host: {SAMPLE_APP}.localhost' http://{router}/"
        );
    } else {
        println!("  apps answer at http://APP.localhost:{router_port}/ (router {router})");
    }
    println!(
        "  logs: {} and {}",
        state.join("coordinator.log").display(),
        state.join("agent.log").display()
    );
    println!();
    // Save before printing: whoever reads the token line may run `dyno` at once, and that
    // must find the saved settings.
    let saved_to = match config_file::config_path() {
        Some(path) => {
            let saved = SavedConfig {
                coordinator: Some(api_url.clone()),
                token: Some(token.clone()),
            };
            match config_file::save(&path, &saved) {
                Ok(()) => Some(path),
                Err(e) => {
                    eprintln!("warning: could not save settings: {e:#}");
                    None
                }
            }
        }
        None => {
            eprintln!("warning: neither XDG_CONFIG_HOME nor HOME is set; settings not saved");
            None
        }
    };
    println!("export DYNO_COORDINATOR={api_url}");
    println!("export DYNO_TOKEN={token}");
    if let Some(path) = saved_to {
        println!("(saved to {})", path.display());
    }
    println!();

    let tty = std::io::stdout().is_terminal();
    if tty && !args.no_console && std::io::stdin().is_terminal() {
        // The console owns the screen; the platform's children and signals are checked on
        // every turn of its loop. Quitting it stops the platform, as Ctrl-C does.
        crate::tui::run(
            crate::tui::Options {
                coordinator: api_url.clone(),
                token: Some(token.clone()),
                read_only: false,
                app: (!args.no_sample).then(|| SAMPLE_APP.to_string()),
                own_signals: false,
                frame_log: None,
            },
            &mut || platform.check(),
        )?;
        return Err(Stop::Signal(Signal::SIGINT).into());
    }
    let every = if tty {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    };
    let mut last = Instant::now() - every;
    loop {
        platform.check()?;
        if last.elapsed() >= every {
            last = Instant::now();
            let table = dyno_table(&client, router_port);
            let text = if tty {
                // Redraw in place, keeping the essentials on screen.
                format!(
                    "\x1b[H\x1b[2J{}  (Ctrl-C stops the platform; DYNO_COORDINATOR={api_url})\n\n{table}",
                    ps_time(now_secs())
                )
            } else {
                format!("--- {}\n{table}", ps_time(now_secs()))
            };
            emit(&text)?;
        }
        std::thread::sleep(TICK);
    }
}

/// Creates (if needed), deploys, scales and waits for the bundled sample app.
fn deploy_sample(
    platform: &mut Platform,
    client: &Client,
    state: &Path,
    probe: &Path,
) -> Result<()> {
    match client.get::<App>(&format!("/apps/{SAMPLE_APP}")) {
        Ok(_) => {}
        Err(e)
            if e.downcast_ref::<ApiError>()
                .is_some_and(ApiError::is_not_found) =>
        {
            let _: App = client.send(
                "POST",
                "/apps",
                &CreateApp {
                    name: SAMPLE_APP.into(),
                    owner: None,
                },
            )?;
            eprintln!("Created app {SAMPLE_APP}");
        }
        Err(e) => return Err(e),
    }
    let dir = state.join("sample-app");
    let bin_dir = dir.join("bin");
    fs::create_dir_all(&bin_dir)
        .with_context(|| format!("failed to create {}", bin_dir.display()))?;
    fs::write(dir.join("Procfile"), SAMPLE_PROCFILE)?;
    let target = bin_dir.join("dyno-probe");
    let _ = fs::remove_file(&target);
    fs::copy(probe, &target)
        .with_context(|| format!("failed to copy {} to {}", probe.display(), target.display()))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    deploy::check_dir(&dir)?;
    platform.check()?;
    let release = deploy::deploy_dir(client, SAMPLE_APP, &dir, "Deploy the sample app")?;
    eprintln!("Released {SAMPLE_APP} v{}", release.version);
    let request = ScaleRequest {
        args: SAMPLE_SCALE.iter().map(|s| s.to_string()).collect(),
    };
    let formation: Vec<FormationItem> = client.send(
        "POST",
        &format!("/apps/{SAMPLE_APP}/formation/scale"),
        &request,
    )?;
    let changed: Vec<String> = formation.iter().map(|f| f.process_type.clone()).collect();
    eprintln!("{}", output::scale_done(&formation, &changed));
    eprint!("Waiting for the sample app's dynos...");
    let waited = ps::wait_for_formation(client, SAMPLE_APP, Duration::from_secs(120), &mut || {
        platform.check()
    });
    eprintln!("{}", if waited.is_ok() { " done" } else { "" });
    waited
}

/// The `ps` layout of every app, under a line per app.
fn dyno_table(client: &Client, router_port: &str) -> String {
    let apps: Vec<App> = match client.get("/apps") {
        Ok(a) => a,
        Err(e) => return format!("(could not list apps: {e:#})\n"),
    };
    if apps.is_empty() {
        return "No apps yet.\n".to_string();
    }
    let now = now_secs();
    let mut out = String::new();
    for app in apps {
        out.push_str(&format!(
            "{}  {}  {}/{} dynos up  http://{}.localhost:{router_port}/\n",
            app.name,
            app.release
                .map(|v| format!("v{v}"))
                .unwrap_or("no release".into()),
            app.dynos_up,
            app.dynos_total,
            app.name
        ));
        match client.get::<Vec<Dyno>>(&format!("/apps/{}/dynos", app.name)) {
            Ok(d) if d.is_empty() => out.push_str("(no dynos)\n"),
            Ok(d) => out.push_str(&output::ps(&d, now)),
            Err(e) => out.push_str(&format!("(could not list dynos: {e:#})\n")),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_become_loopback() {
        assert_eq!(client_addr("0.0.0.0:7070"), "127.0.0.1:7070");
        assert_eq!(client_addr("[::]:7080"), "[::1]:7080");
        assert_eq!(client_addr("10.0.0.2:7070"), "10.0.0.2:7070");
        assert_eq!(port_of("127.0.0.1:7080"), "7080");
    }

    #[test]
    fn sample_procfile_is_valid() {
        let p = dyno_shared::Procfile::parse(SAMPLE_PROCFILE).unwrap();
        assert_eq!(p.processes.len(), 2);
    }
}
