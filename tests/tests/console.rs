//! `dyno console` end to end: the real binary in a tmux pane against a real coordinator and
//! agent. Keys go in with `tmux send-keys`, the screen comes back with `tmux capture-pane -p`,
//! and every action is checked on the platform itself through the API.

use dyno_tests::{Platform, bin, wait_until};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SAMPLE: &str = "web: dyno-probe web\nworker: dyno-probe worker\n";
const WAIT: Duration = Duration::from_secs(20);

/// A private tmux server (its own socket) running one pane.
struct Tmux {
    socket: PathBuf,
}

fn tmux_found() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Tmux {
    /// `dyno console ARGS` in a WIDTHxHEIGHT pane, set up for platform `p`.
    fn console(p: &Platform, args: &[&str], width: u16, height: u16) -> Tmux {
        let socket = p.dir.path().join("tmux.sock");
        let t = Tmux { socket };
        let dyno = bin("dyno");
        // After the console, the shell reports its exit status and the terminal's line
        // discipline (raw mode must be gone), then keeps the pane open to be read.
        let report = r#""$@"; echo "EXIT=$?"; stty -a | tr ' ;' '\n\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\n' ' '; echo END; sleep 120"#;
        let mut cmd: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            report.into(),
            "sh".into(),
            "env".into(),
            format!("DYNO_COORDINATOR={}", p.url()),
            format!("DYNO_TOKEN={}", p.token),
            format!("XDG_CONFIG_HOME={}", p.dir.path().join("config").display()),
            format!("HOME={}", p.dir.path().display()),
            "TERM=screen".into(),
            dyno.display().to_string(),
            "console".into(),
        ];
        cmd.extend(args.iter().map(|s| s.to_string()));
        let mut tmux_args: Vec<String> = vec![
            "-f".into(),
            "/dev/null".into(),
            "new-session".into(),
            "-d".into(),
            "-s".into(),
            "console".into(),
            "-x".into(),
            width.to_string(),
            "-y".into(),
            height.to_string(),
        ];
        tmux_args.extend(cmd);
        let out = t.tmux(&tmux_args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "tmux new-session: {out:?}");
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Keys by tmux name (`Enter`, `Escape`, `j`), one at a time with a breath between them so an
    /// escape is never merged with the next key.
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.tmux(&["send-keys", "-t", "console", k]);
            assert!(out.status.success(), "send-keys {k}: {out:?}");
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Literal text.
    fn text(&self, text: &str) {
        let out = self.tmux(&["send-keys", "-t", "console", "-l", text]);
        assert!(out.status.success(), "send-keys -l {text}: {out:?}");
        std::thread::sleep(Duration::from_millis(60));
    }

    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", "console"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn display(&self, format: &str) -> String {
        let out = self.tmux(&["display-message", "-p", "-t", "console", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until the screen satisfies `ok`; panics with the last screen.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        self.wait_within(what, WAIT, ok)
    }

    /// Waits at most `timeout` for the screen to satisfy `ok`; panics with the last screen.
    fn wait_within(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {:?} waiting for {what}; the screen:\n{s}",
                    start.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_text(&self, needle: &str) -> String {
        self.wait_for(needle, |s| s.contains(needle))
    }

    /// Waits for the console to exit and checks it left the terminal as it found it: exit
    /// status 0, the normal screen, the cursor shown, and the line discipline out of raw mode.
    fn assert_clean_exit(&self) {
        let s = self.wait_text("END");
        assert!(s.contains("EXIT=0"), "{s}");
        assert!(
            s.contains("icanon echo END"),
            "the terminal is left in raw mode:\n{s}"
        );
        assert_eq!(
            self.display("#{alternate_on}"),
            "0",
            "still on the alternate screen"
        );
        assert_eq!(self.display("#{cursor_flag}"), "1", "the cursor is hidden");
    }

    /// The console's pid: the child of the pane's shell.
    fn console_pid(&self) -> i32 {
        let shell: i32 = self.display("#{pane_pid}").parse().unwrap();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<i32>().ok());
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                ppid == Some(shell) && String::from_utf8_lossy(&cmd).contains("console")
            })
            .expect("the console process")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

fn skip_without_tmux() -> bool {
    if tmux_found() {
        return false;
    }
    eprintln!("\n*** SKIPPED: tmux is not installed; the console end-to-end tests need it ***\n");
    true
}

/// The line of the screen that starts (inside the table's border) with `name`.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.trim_start_matches('│').starts_with(&format!("{name} ")))
}

#[test]
fn console_scales_restarts_and_filters_logs() {
    if skip_without_tmux() {
        return;
    }
    let p = Platform::start();
    p.deploy("shop", SAMPLE);
    p.dyno_ok(&["ps:scale", "worker=1", "-a", "shop", "--wait"]);
    p.wait_up("shop", &["web.1", "worker.1"]);

    let t = Tmux::console(&p, &[], 100, 30);
    // The Apps view: the formation and dynos up/total.
    let s = t.wait_for("the apps view", |s| {
        row(s, "shop").is_some_and(|r| r.contains("2/2") && r.contains("web=1:standard-1x"))
    });
    assert!(s.contains("● connected"), "{s}");

    // `:app shop` opens the dynos.
    t.keys(&[":"]);
    t.text("app shop");
    t.keys(&["Enter"]);
    t.wait_for("web.1 and worker.1 up", |s| {
        row(s, "web.1").is_some_and(|r| r.contains(" up "))
            && row(s, "worker.1").is_some_and(|r| r.contains(" up "))
    });

    // Scale web from 1 to 3 through the dialog.
    t.keys(&["s"]);
    t.wait_text("Scale shop");
    t.text("web=3");
    t.keys(&["Enter"]);
    t.wait_text("Scale shop: web=3: done");
    p.wait_up("shop", &["web.1", "web.2", "web.3", "worker.1"]);
    let formation = p.get("/apps/shop/formation").unwrap();
    let web = formation
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["type"] == "web")
        .unwrap();
    assert_eq!(web["quantity"], 3, "{formation}");
    t.wait_for("web.3 up on screen", |s| {
        row(s, "web.3").is_some_and(|r| r.contains(" up "))
    });

    // Restart web.2: the second row; confirm; only web.2 is replaced.
    let before = p.dyno_ids("shop");
    t.keys(&["g", "j", "r"]);
    t.wait_text("Restart web.2 of shop?");
    t.keys(&["y"]);
    t.wait_text("Restart web.2 of shop: done");
    wait_until("web.2 replaced and up", WAIT, || {
        let d = p.dyno_ids("shop");
        d.get("web.2")
            .is_some_and(|(id, st)| id != &before["web.2"].0 && st == "up")
            .then_some(())
    });
    let after = p.dyno_ids("shop");
    for name in ["web.1", "web.3", "worker.1"] {
        assert_eq!(after[name].0, before[name].0, "{name} was restarted too");
    }

    // Logs: the merged tail, then only the worker, then a search.
    t.keys(&[":"]);
    t.text("logs shop");
    t.keys(&["Enter"]);
    t.wait_for("web and worker lines", |s| {
        s.contains("app[worker.1]: worker tick") && s.contains("[web.")
    });
    t.keys(&["f"]);
    t.wait_text("Show lines of");
    t.text("worker");
    t.keys(&["Enter"]);
    let lines_of = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with('│'))
            .map(|l| l.trim_matches('│').trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let s = t.wait_for("only worker lines", |s| {
        let lines = lines_of(s);
        s.contains("filter: worker")
            && !lines.is_empty()
            && lines.iter().all(|l| l.contains("[worker.1]:"))
    });
    assert!(!s.contains("[web."), "{s}");
    t.keys(&["/"]);
    t.text("tick [0-9]*7$");
    t.keys(&["Enter"]);
    t.wait_for("only ticks ending in 7", |s| {
        let lines = lines_of(s);
        s.contains("/tick [0-9]*7$/")
            && !lines.is_empty()
            && lines
                .iter()
                .all(|l| l.ends_with('7') && l.contains("worker tick"))
    });

    // Billing: the month's lines of the app's dynos, from the coordinator's meter.
    t.keys(&["Escape"]);
    t.keys(&[":"]);
    t.text("billing");
    t.keys(&["Enter"]);
    let s = t.wait_for("shop's web and worker billed", |s| {
        s.contains("Billing for")
            && s.lines()
                .any(|l| l.contains("shop") && l.contains("web") && l.contains("Standard-1X"))
            && s.lines()
                .any(|l| l.contains("worker") && l.contains("Standard-1X"))
    });
    assert!(s.contains("Total: $"), "{s}");

    // q quits and leaves a usable terminal: no alternate screen, cursor shown.
    t.keys(&["q"]);
    t.assert_clean_exit();
    let s = t.screen();
    assert!(
        !s.contains("Logs shop"),
        "the console's screen is left behind:\n{s}"
    );
}

#[test]
fn console_read_only_survives_a_lost_coordinator_and_sigterm_restores_the_terminal() {
    if skip_without_tmux() {
        return;
    }
    let mut p = Platform::start();
    p.dyno_ok(&["apps:create", "calm"]);
    let t = Tmux::console(&p, &["--read-only"], 100, 30);
    let s = t.wait_for("the apps view", |s| row(s, "calm").is_some());
    assert!(s.contains("read-only"), "{s}");
    // No action keys: `r` asks nothing, the help lists no action.
    t.keys(&["r", "?"]);
    let help = t.wait_text("Keys (any key closes");
    assert!(
        !help.contains("restart") && !help.contains("scale"),
        "{help}"
    );
    assert!(!help.contains("Restart every dyno"), "{help}");
    t.keys(&["Escape"]);

    // The Hosts view, then the coordinator goes away and comes back.
    t.keys(&[":"]);
    t.text("hosts");
    t.keys(&["Enter"]);
    t.wait_for("host-1 connected", |s| {
        row(s, "host-1").is_some_and(|r| r.contains("connected"))
    });
    p.kill_coordinator();
    t.wait_text("coordinator unreachable");
    p.start_coordinator();
    p.wait_for_host();
    t.wait_for("reconnected, the event stream too", |s| {
        s.contains("● connected · live")
            && row(s, "host-1").is_some_and(|r| r.contains("connected"))
    });

    // SIGTERM: the console exits cleanly and gives the terminal back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(t.console_pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    t.assert_clean_exit();
}

/// How soon a change must show when the change stream drives the console: the coordinator
/// notices changes every 100 ms and the console refetches at once, while without the stream's
/// item it would only poll these views every 5 s. Generous for a loaded machine.
const PUSHED: Duration = Duration::from_millis(1500);

#[test]
fn console_follows_the_change_stream() {
    if skip_without_tmux() {
        return;
    }
    let mut p = Platform::start();
    p.deploy("shop", "web: dyno-probe web\n");
    p.wait_up("shop", &["web.1"]);

    let t = Tmux::console(&p, &["-a", "shop"], 100, 30);
    // The App view, with the stream connected (the header says `live`).
    t.wait_for("web.1 up and the event stream live", |s| {
        row(s, "web.1").is_some_and(|r| r.contains(" up ")) && s.contains("● connected · live")
    });

    // Scaled from outside the console: the new dyno shows within moments.
    p.dyno_ok(&["ps:scale", "web=2", "-a", "shop"]);
    let pushed = Instant::now();
    t.wait_within("web.2 on screen, pushed by the stream", PUSHED, |s| {
        row(s, "web.2").is_some()
    });
    eprintln!("web.2 on screen {:?} after ps:scale", pushed.elapsed());
    t.wait_for("web.2 up and the scaling in the events", |s| {
        row(s, "web.2").is_some_and(|r| r.contains(" up ")) && s.contains("api: Scaled to web")
    });

    // The Hosts view: the agent stops, and its host is away (then lost) on screen at once,
    // long before the view's 5 s poll.
    t.keys(&[":"]);
    t.text("hosts");
    t.keys(&["Enter"]);
    t.wait_for("host-1 connected", |s| {
        row(s, "host-1").is_some_and(|r| r.contains("connected"))
    });
    p.stop_agent();
    let gone = Instant::now();
    t.wait_within("host-1 away or lost", PUSHED, |s| {
        row(s, "host-1").is_some_and(|r| r.contains(" away ") || r.contains(" lost "))
    });
    eprintln!(
        "host-1 away on screen {:?} after the agent exited",
        gone.elapsed()
    );
    let s = t.wait_for("host-1 lost", |s| {
        row(s, "host-1").is_some_and(|r| r.contains(" lost "))
    });
    assert!(s.contains("● connected · live"), "{s}");

    t.keys(&["q"]);
    t.assert_clean_exit();
}

#[test]
fn console_runs_a_one_off_and_shows_its_output() {
    if skip_without_tmux() {
        return;
    }
    let p = Platform::start();
    p.deploy("shop", "web: dyno-probe web\n");
    p.wait_up("shop", &["web.1"]);

    let t = Tmux::console(&p, &["-a", "shop"], 100, 30);
    t.wait_for("web.1 up", |s| {
        row(s, "web.1").is_some_and(|r| r.contains(" up "))
    });
    // `o` asks for the command; enter starts it detached and opens its logs.
    t.keys(&["o"]);
    t.wait_text("Run in shop:");
    t.text("dyno-probe echo hello-from-console");
    t.keys(&["Enter"]);
    // The bottom line names the new dyno.
    let s = t.wait_text("Started run.");
    let dyno = s
        .split("Started ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        s.contains(&format!(
            "Started {dyno}: dyno-probe echo hello-from-console"
        )),
        "{s}"
    );
    // The Logs view, narrowed to it, shows its output as it runs.
    let s = t.wait_for("the one-off's output in its Logs view", |s| {
        s.contains("Logs shop") && s.contains("]: hello-from-console")
    });
    assert!(s.contains(&format!("filter: {dyno} ")), "{s}");
    assert!(
        s.contains(&format!("app[{dyno}]: hello-from-console")),
        "{s}"
    );
    assert!(
        !s.contains("app[web.1]"),
        "other dynos' lines are filtered out:\n{s}"
    );

    // The platform ran it: its start and its output are in the app's logs.
    let logs = p.logs("shop");
    assert!(
        logs.contains(&format!("app[{dyno}]: hello-from-console")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!(
            "heroku[{dyno}]: Starting process with command `dyno-probe echo hello-from-console`"
        )),
        "{logs}"
    );

    t.keys(&["q"]);
    t.assert_clean_exit();
}
