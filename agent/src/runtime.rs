//! How a prepared dyno becomes running processes. `Runtime` is the seam where a Linux-isolated
//! runtime (namespaces, cgroups) plugs in; `PlainRuntime` runs the dyno as a plain process group
//! with a cleared environment and rlimits.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{PoisonError, RwLock};

use dyno_shared::protocol::Isolation;
use dyno_shared::size::Size;
use futures_util::future::BoxFuture;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncRead;

/// Open files per dyno process (Heroku's `ulimit -n`).
pub const NOFILE_LIMIT: u64 = 10_000;
/// Appended to `<app>/bin` to make a dyno's `PATH`.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Files are written (slugs unpacked, copied into dynos) on blocking threads while dynos are
/// forked on others. A child forked while a file is open for writing keeps that descriptor until
/// it execs, and an exec of that file meanwhile fails with ETXTBSY ("Text file busy"): a dyno
/// crashed at start that way. So a file is open for writing only under this lock held shared, and
/// a spawn holds it exclusively until the child has exec'd (std's spawn returns only then). A
/// spawn waits at most for the files being written at that moment.
static WRITE_OR_FORK: RwLock<()> = RwLock::new(());

/// Runs `write`, which opens, writes and closes a file, so that no fork happens meanwhile.
pub fn writing_file<T>(write: impl FnOnce() -> T) -> T {
    let _shared = WRITE_OR_FORK.read().unwrap_or_else(PoisonError::into_inner);
    write()
}

/// Runs `spawn` while no file is open for writing, so its child inherits none.
pub fn forking<T>(spawn: impl FnOnce() -> T) -> T {
    let _exclusive = WRITE_OR_FORK
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    spawn()
}

/// Everything a runtime needs to start one dyno whose app directory is ready.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The dyno's own `/app`: `PlainRuntime` copies the slug here, `LinuxRuntime` makes it the
    /// upper layer of an overlay on the slug. Its parent is the dyno's directory.
    pub app_dir: PathBuf,
    /// The cached, extracted slug; never written to.
    pub slug_dir: PathBuf,
    /// As written in the Procfile; run by `sh`, so `$PORT` expands.
    pub command: String,
    /// `web.1`.
    pub dyno_name: String,
    /// Web dynos only.
    pub port: Option<u16>,
    /// The app's config vars.
    pub env: BTreeMap<String, String>,
    pub size: Size,
}

/// How the dyno's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention the platform reports: the status, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl From<std::process::ExitStatus> for Exit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            // Stopped/continued statuses are not final; wait() never returns them.
            (None, None) => Exit::Code(-1),
        }
    }
}

/// Signals the supervisor sends to a whole dyno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynoSignal {
    Term,
    Kill,
}

/// A dyno's resource use at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_rss_bytes: u64,
    pub memory_cache_bytes: u64,
    pub memory_swap_bytes: u64,
    /// The quota R14 is measured against.
    pub memory_quota_bytes: u64,
    /// Cumulative CPU time of the dyno's processes.
    pub cpu_usage_usec: u64,
    /// Processes and threads.
    pub pids: u64,
}

impl Usage {
    /// RSS plus swap: Heroku's figure for R14/R15.
    pub fn memory_total_bytes(&self) -> u64 {
        self.memory_rss_bytes + self.memory_swap_bytes
    }
}

/// Every process of one dyno.
pub trait ProcessGroup: Send + Sync {
    fn signal(&self, sig: DynoSignal) -> Result<(), RuntimeError>;
    /// Whether any process of the dyno is still alive (zombies do not count).
    fn alive(&self) -> bool;
    /// The dyno's resource use now; `None` when it cannot be read (the dyno is gone).
    fn stats(&self) -> Option<Usage>;
    /// Whether the kernel killed a process of the dyno at its hard memory limit (R15), while it
    /// runs or before its main process exited.
    fn oom_killed(&self) -> bool {
        false
    }
}

/// A started dyno.
pub struct RunningDyno {
    pub pid: u32,
    /// stdout and stderr merged into one stream, so their lines keep their order.
    pub output: Box<dyn AsyncRead + Send + Unpin>,
    /// Completes when the main process exits.
    pub exit: BoxFuture<'static, Result<Exit, RuntimeError>>,
    pub group: Box<dyn ProcessGroup>,
    /// For dynos that can outlive the agent: ends `output` at what has been written so far, so
    /// the agent can leave the dyno running for the next agent to adopt.
    pub detach_output: Option<crate::tail::TailControl>,
}

pub trait Runtime: Send + Sync {
    fn isolation(&self) -> Isolation;

    /// Readies `launch.app_dir` (whose parent exists and is empty) from `launch.slug_dir`.
    /// Blocking; runs on a blocking thread. By default a full copy of the slug.
    fn prepare(&self, launch: &Launch) -> io::Result<()> {
        crate::slugs::copy_tree(&launch.slug_dir, &launch.app_dir)
    }

    fn start(&self, launch: &Launch) -> Result<RunningDyno, RuntimeError>;

    /// Whether dynos of this runtime keep running when the agent exits, for the next agent to
    /// adopt.
    fn can_adopt(&self) -> bool {
        false
    }

    /// Takes over a dyno an earlier agent started as `launch` with main process `pid`. A dyno
    /// that ended meanwhile comes back with its exit already complete and its last output.
    fn adopt(&self, launch: &Launch, pid: u32) -> Result<RunningDyno, RuntimeError> {
        let _ = pid;
        Err(RuntimeError::NotAdoptable {
            dir: launch.app_dir.clone(),
        })
    }

    /// Kills and removes what earlier agents left of dynos other than `keep` (ids).
    fn clean_leftovers(&self, keep: &std::collections::HashSet<String>) {
        let _ = keep;
    }

    /// The agent is exiting and its dynos are stopped or left to the next agent: remove what
    /// the runtime holds for itself that nothing uses any more.
    fn tidy(&self) {}
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("failed to create the output pipe: {0}")]
    Pipe(#[source] io::Error),
    #[error("failed to spawn `{command}` in {dir}: {source}")]
    Spawn {
        command: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to wait for process {pid}: {source}")]
    Wait {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("the dyno in {dir} cannot be adopted: this runtime's dynos end with their agent")]
    NotAdoptable { dir: PathBuf },
    #[error("failed to adopt the dyno in {dir}: {source}")]
    Adopt {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to signal process group {pgid}: {source}")]
    Signal {
        pgid: i32,
        #[source]
        source: nix::Error,
    },
}

/// Runs dynos as plain processes: own process group, cleared environment, rlimits, no isolation.
#[derive(Debug, Default)]
pub struct PlainRuntime;

impl PlainRuntime {
    pub fn new() -> Self {
        PlainRuntime
    }
}

/// The environment a dyno starts with: the platform's base, the config vars, then the variables
/// the platform owns (a config var must not move the port the router uses).
pub fn dyno_env(launch: &Launch) -> Vec<(String, String)> {
    let app = launch.app_dir.display().to_string();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), format!("{app}/bin:{SYSTEM_PATH}"));
    env.insert("HOME".into(), app);
    env.insert("LANG".into(), "C.UTF-8".into());
    env.extend(launch.env.clone());
    env.insert("DYNO".into(), launch.dyno_name.clone());
    match launch.port {
        Some(port) => {
            env.insert("PORT".into(), port.to_string());
        }
        None => {
            env.remove("PORT");
        }
    }
    env.into_iter().collect()
}

/// `sh -c` script: source `.profile` if the slug has one, then become the command, so signals and
/// the exit status are the app's own. Leading `FOO=1` assignments go before `exec` (where POSIX
/// applies them to the new program); a command with unquoted shell operators (`a && b`, `x; y`)
/// or starting with a shell keyword runs under the shell, and stops signal its whole group.
pub fn shell_script(command: &str) -> String {
    let command = command.trim();
    if has_shell_syntax(command) {
        return format!("[ -f .profile ] && . ./.profile\n{command}");
    }
    let words: Vec<&str> = command.split(' ').filter(|w| !w.is_empty()).collect();
    let assigns = words.iter().take_while(|w| is_assignment(w)).count();
    if assigns == 0 {
        return format!("[ -f .profile ] && . ./.profile; exec {command}");
    }
    let (env, rest) = words.split_at(assigns);
    let env = env.iter().map(|w| format!("{w} ")).collect::<String>();
    format!(
        "[ -f .profile ] && . ./.profile; {env}exec {}",
        rest.join(" ")
    )
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
    })
}

/// Unquoted `;`, `&`, `|`, newline or a leading keyword/builtin that `exec` would break.
fn has_shell_syntax(command: &str) -> bool {
    const KEYWORDS: [&str; 14] = [
        "trap", "if", "for", "while", "until", "case", "cd", "export", "set", "exec", "{", "(",
        "!", "time",
    ];
    let first_program = command
        .split_whitespace()
        .find(|w| !is_assignment(w))
        .unwrap_or("");
    if KEYWORDS.contains(&first_program) {
        return true;
    }
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in command.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ';' | '&' | '|' | '\n' | '(' | ')' | '`') => return true,
            (None, _) => {}
        }
    }
    false
}

/// (soft, hard) open-files limit for dynos: `NOFILE_LIMIT`, unless an unprivileged agent's own
/// hard limit is lower (raising it would fail in the child).
fn nofile_limit() -> u64 {
    let hard = getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(NOFILE_LIMIT);
    if nix::unistd::geteuid().is_root() {
        NOFILE_LIMIT
    } else {
        NOFILE_LIMIT.min(hard)
    }
}

impl Runtime for PlainRuntime {
    fn isolation(&self) -> Isolation {
        Isolation::None
    }

    fn start(&self, launch: &Launch) -> Result<RunningDyno, RuntimeError> {
        let (reader, writer) = io::pipe().map_err(RuntimeError::Pipe)?;
        let writer_err = writer.try_clone().map_err(RuntimeError::Pipe)?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(shell_script(&launch.command))
            .current_dir(&launch.app_dir)
            .env_clear()
            .envs(dyno_env(launch))
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer_err)
            .process_group(0)
            .kill_on_drop(false);
        let nofile = nofile_limit();
        // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
        // calls are allowed. It makes two setrlimit syscalls on values computed before the fork,
        // does not allocate, lock or touch shared state, and builds its error from an errno
        // without allocating.
        unsafe {
            cmd.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile)
                    .and_then(|()| setrlimit(Resource::RLIMIT_CORE, 0, 0))
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))
            });
        }
        let spawned = forking(|| cmd.spawn());
        // The command holds our copies of the pipe's write end; the reader sees EOF only once
        // every copy, ours included, is closed.
        drop(cmd);
        let mut child = spawned.map_err(|source| RuntimeError::Spawn {
            command: launch.command.clone(),
            dir: launch.app_dir.clone(),
            source,
        })?;
        let pid = child.id().ok_or_else(|| RuntimeError::Wait {
            pid: 0,
            source: io::Error::other("the child exited before its pid was read"),
        })?;
        let output = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
            .map_err(RuntimeError::Pipe)?;
        let exit = Box::pin(async move {
            child
                .wait()
                .await
                .map(Exit::from)
                .map_err(|source| RuntimeError::Wait { pid, source })
        });
        Ok(RunningDyno {
            pid,
            output: Box::new(output),
            exit,
            group: Box::new(PlainGroup {
                pgid: pid as i32,
                memory_quota_bytes: launch.size.memory_mb() * MIB,
            }),
            detach_output: None,
        })
    }
}

const MIB: u64 = 1024 * 1024;

/// The dyno's process group; its id is the main process's pid.
#[derive(Debug)]
struct PlainGroup {
    pgid: i32,
    memory_quota_bytes: u64,
}

impl ProcessGroup for PlainGroup {
    fn signal(&self, sig: DynoSignal) -> Result<(), RuntimeError> {
        let signal = match sig {
            DynoSignal::Term => Signal::SIGTERM,
            DynoSignal::Kill => Signal::SIGKILL,
        };
        match killpg(Pid::from_raw(self.pgid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(source) => Err(RuntimeError::Signal {
                pgid: self.pgid,
                source,
            }),
        }
    }

    fn alive(&self) -> bool {
        group_alive(self.pgid)
    }

    fn stats(&self) -> Option<Usage> {
        let mut usage = group_usage(self.pgid)?;
        usage.memory_quota_bytes = self.memory_quota_bytes;
        Some(usage)
    }
}

/// Memory, CPU and threads summed over the live members of a process group, from `/proc`. Page
/// cache is not attributable to a process, so it stays 0. `None` when no member is alive.
pub fn group_usage(pgid: i32) -> Option<Usage> {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    };
    let mut usage = Usage::default();
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat_usage(&s))
        else {
            continue;
        };
        if stat.pgrp != pgid || matches!(stat.state, 'Z' | 'X') {
            continue;
        }
        // Gone between the two reads: count what we have.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        found = true;
        usage.memory_rss_bytes += status_kb(&status, "VmRSS:") * 1024;
        usage.memory_swap_bytes += status_kb(&status, "VmSwap:") * 1024;
        usage.cpu_usage_usec += stat.cpu_ticks * 1_000_000 / ticks;
        usage.pids += stat.threads;
    }
    found.then_some(usage)
}

/// A `kB` figure of `/proc/PID/status`; 0 when absent (kernel threads have no `VmRSS`).
fn status_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, PartialEq, Eq)]
struct StatUsage {
    state: char,
    pgrp: i32,
    /// utime + stime + cutime + cstime.
    cpu_ticks: u64,
    threads: u64,
}

/// Fields of `/proc/PID/stat` after the command name: state, ppid, pgrp, ..., utime (12th),
/// stime, cutime, cstime, priority, nice, num_threads (18th).
fn parse_stat_usage(stat: &str) -> Option<StatUsage> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(StatUsage {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        cpu_ticks: num(11)? + num(12)? + num(13)? + num(14)?,
        threads: num(17)?,
    })
}

/// Whether a process group has a live (non-zombie) member. Reads `/proc`, because orphans whose
/// new parent never reaps them stay zombies and would keep `kill(-pgid, 0)` succeeding.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return killpg(Pid::from_raw(pgid), None).is_ok();
    };
    dir.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
    })
}

/// SIGKILLs the process group of every process whose working directory is inside `dynos_dir`:
/// plain-runtime dynos left running by an agent that crashed. This agent does not re-adopt them
/// yet, and the coordinator will start replacements, so leaving them would run each dyno twice.
/// Returns how many groups were killed.
pub fn kill_leftover_dynos(dynos_dir: &Path) -> usize {
    let Ok(dir) = dynos_dir.canonicalize() else {
        return 0;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut groups = std::collections::BTreeSet::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let inside =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir));
        if !inside {
            continue;
        }
        if let Some((_, pgrp)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
            // Never the agent's own group, nor init's.
            .filter(|(_, pgrp)| *pgrp > 1 && *pgrp != nix::unistd::getpgrp().as_raw())
        {
            groups.insert(pgrp);
        }
    }
    for pgrp in &groups {
        let _ = killpg(Pid::from_raw(*pgrp), Signal::SIGKILL);
    }
    groups.len()
}

/// Whether one process is alive (not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// (state, process group) from `/proc/PID/stat`; the command name may hold spaces and parens.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod shell_tests {
    use super::*;

    #[test]
    fn plain_commands_exec_and_shell_syntax_does_not() {
        assert!(shell_script("bin/web --port $PORT").ends_with("; exec bin/web --port $PORT"));
        assert!(shell_script("FOO=1 B_2=x bin/web").ends_with("; FOO=1 B_2=x exec bin/web"));
        assert!(shell_script(r#"sh -c "trap '' TERM; sleep 1""#).contains("exec sh -c"));
        for c in [
            "a && b",
            "trap '' TERM",
            "a | b",
            "cd x\ny",
            "x; y",
            "a & b",
            "FOO=1 if x",
        ] {
            assert!(!shell_script(c).contains("exec"), "{c}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn no_fork_while_a_file_is_open_for_writing() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prog");
        let closed = std::sync::Arc::new(AtomicBool::new(false));
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let writer = std::thread::spawn({
            let closed = closed.clone();
            move || {
                writing_file(|| {
                    let file = std::fs::File::create(&path).unwrap();
                    opened_tx.send(()).unwrap();
                    // Long enough for a fork that did not wait to come first.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    drop(file);
                    closed.store(true, Ordering::SeqCst);
                })
            }
        });
        opened.recv().unwrap();
        let child = forking(|| {
            assert!(
                closed.load(Ordering::SeqCst),
                "forked while a file was open for writing"
            );
            std::process::Command::new("/bin/true").spawn()
        });
        assert!(child.unwrap().wait().unwrap().success());
        writer.join().unwrap();
    }

    fn launch(dir: &std::path::Path, command: &str) -> Launch {
        Launch {
            app_dir: dir.to_path_buf(),
            slug_dir: dir.to_path_buf(),
            command: command.to_string(),
            dyno_name: "web.1".into(),
            port: Some(5123),
            env: BTreeMap::from([("FOO".to_string(), "bar baz".to_string())]),
            size: Size::Standard1x,
        }
    }

    async fn run_to_end(l: &Launch) -> (String, Exit) {
        let mut dyno = PlainRuntime::new().start(l).unwrap();
        let mut out = String::new();
        dyno.output.read_to_string(&mut out).await.unwrap();
        let exit = dyno.exit.await.unwrap();
        (out, exit)
    }

    #[test]
    fn parses_proc_stat_with_odd_names() {
        assert_eq!(parse_stat("42 (a) b (c)) S 1 42 42 0 -1"), Some(('S', 42)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_cpu_and_threads_from_proc_stat() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 5 0 99 0 0";
        assert_eq!(
            parse_stat_usage(stat),
            Some(StatUsage {
                state: 'S',
                pgrp: 42,
                cpu_ticks: 13,
                threads: 5
            })
        );
        assert_eq!(parse_stat_usage("42 (x) S 1 42"), None);
        assert_eq!(status_kb("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"), 2048);
        assert_eq!(status_kb("Name:\tx\n", "VmSwap:"), 0);
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Exit::Code(3).code(), 3);
        assert_eq!(Exit::Signal(9).code(), 137);
        assert_eq!(Exit::Signal(15).code(), 143);
    }

    #[tokio::test]
    async fn merges_stdout_and_stderr_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let l = launch(
            dir.path(),
            "sh -c 'echo one; echo two >&2; echo three; echo four >&2'",
        );
        let (out, exit) = run_to_end(&l).await;
        assert_eq!(out, "one\ntwo\nthree\nfour\n");
        assert_eq!(exit, Exit::Code(0));
    }

    #[tokio::test]
    async fn environment_is_the_dynos_not_the_agents() {
        let dir = tempfile::tempdir().unwrap();
        let (out, _) = run_to_end(&launch(dir.path(), "env")).await;
        let env: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        let app = dir.path().display().to_string();
        assert_eq!(env.get("PORT"), Some(&"5123"));
        assert_eq!(env.get("DYNO"), Some(&"web.1"));
        assert_eq!(env.get("HOME"), Some(&app.as_str()));
        assert_eq!(env.get("FOO"), Some(&"bar baz"));
        assert_eq!(env.get("LANG"), Some(&"C.UTF-8"));
        assert!(env["PATH"].starts_with(&format!("{app}/bin:")));
        // Cargo sets these for the test process; a dyno must not inherit them.
        assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
        assert!(!env.contains_key("CARGO_MANIFEST_DIR"), "{out}");
    }

    #[tokio::test]
    async fn sources_profile_runs_in_app_dir_and_sets_rlimits() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".profile"),
            "export GREETING=from-profile\n",
        )
        .unwrap();
        let mut l = launch(
            dir.path(),
            "sh -c 'echo $GREETING; pwd; ulimit -n; ulimit -c; echo $PORT'",
        );
        l.port = None;
        let (out, _) = run_to_end(&l).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "from-profile");
        assert_eq!(
            std::fs::canonicalize(lines[1]).unwrap(),
            std::fs::canonicalize(dir.path()).unwrap()
        );
        assert_eq!(lines[2], nofile_limit().to_string());
        assert_eq!(lines[3], "0");
        assert_eq!(lines[4], "", "non-web dynos get no PORT");
    }

    #[tokio::test]
    async fn spawn_failure_names_the_directory() {
        let l = launch(std::path::Path::new("/nonexistent/app"), "true");
        let err = PlainRuntime::new().start(&l).err().expect("must fail");
        assert!(err.to_string().contains("/nonexistent/app"), "{err}");
    }
}
