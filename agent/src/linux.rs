//! `LinuxRuntime`: a dyno in its own PID, mount, UTS and IPC namespaces and its own cgroup, as an
//! unprivileged user with no capabilities.
//!
//! The agent re-executes its own binary as `dyno-agent __dyno-init` (with the [`InitSpec`] as JSON
//! in `DYNO_INIT_SPEC`, not on the command line where config vars would show in `ps`). That helper:
//! 1. joins the dyno's cgroup, so everything it starts is counted and can be killed there;
//! 2. unshares the namespaces and forks: its child is PID 1 of the new PID namespace. The helper
//!    stays as the process the agent waits for, forwards SIGTERM to PID 1, and exits with its
//!    status;
//! 3. PID 1 builds a new root (a read-only tmpfs holding read-only binds of `/usr`, `/etc` and the
//!    merged-usr links, at `/app` an overlay of the cached slug under the dyno's own empty upper
//!    directory, so nothing is copied and writes vanish with the dyno, a fresh `/proc`, a `/tmp` tmpfs and a
//!    minimal `/dev`), pivots into it (the agent's state dir is no longer reachable), sets the
//!    hostname to the dyno id, forks the app's shell and becomes a small init: it reaps every
//!    zombie, forwards SIGTERM to every process of the namespace, and exits with the app's status
//!    once the app is gone (at once after a crash; after the stragglers during a stop);
//! 4. the app's process drops to `DYNO_UID`, empties the capability bounding set, sets
//!    `no_new_privs` and execs `/bin/sh -c` with the dyno's environment (`HOME=/app`).
//!
//! Stops: SIGTERM goes to the helper (and on to every process); SIGKILL goes to every process of
//! the cgroup (`Cgroup::kill_all`), double-forked daemons included.
//!
//! Surviving the agent: the dyno writes its output to a file in its directory (followed by a
//! [`FileTail`]) and the helper writes its exit status to another, so neither needs the agent.
//! A restarted agent adopts the dyno through its helper's pid (a pidfd, checked against the
//! cgroup) and resumes its output where the last agent stopped reading.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dyno_shared::protocol::Isolation;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::warn;

use crate::cgroup::{Cgroup, Cgroups, Limits};
use crate::runtime::{
    DynoSignal, Exit, Launch, NOFILE_LIMIT, ProcessGroup, RunningDyno, Runtime, RuntimeError,
    Usage, dyno_env, shell_script,
};
use crate::tail::{FileTail, TailControl};

/// The hidden first argument that turns `dyno-agent` into a dyno's init.
pub const INIT_ARG: &str = "__dyno-init";
/// Carries the JSON [`InitSpec`] from the agent to the helper.
pub const SPEC_ENV: &str = "DYNO_INIT_SPEC";
/// The user and group a dyno's processes run as (`nobody`/`nogroup`).
pub const DYNO_UID: u32 = 65534;
pub const DYNO_GID: u32 = 65534;
/// Where the app lives inside a dyno.
pub const APP_DIR: &str = "/app";
/// Host directories a dyno sees, read-only (symlinks, as on merged-usr hosts, are copied).
pub const SYSTEM_DIRS: [&str; 8] = [
    "usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32", "etc",
];
/// Device nodes bound into a dyno's `/dev`.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Longest host name the kernel takes.
pub const MAX_HOSTNAME: usize = 64;
/// Exit status of the helper when it could not set the dyno up.
pub const SETUP_FAILED: i32 = 126;
/// In a dyno's directory: its stdout and stderr, appended by the dyno, followed by the agent.
pub const OUTPUT_FILE: &str = "output";
/// In a dyno's directory: the exit status the helper wrote.
pub const EXIT_FILE: &str = "exit";
/// In a dyno's directory: overlayfs's work directory.
pub const WORK_DIR: &str = ".work";

#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("Linux isolation needs root (the agent runs as uid {0})")]
    NotRoot(u32),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("failed to find the agent's own binary: {0}")]
    Exe(#[source] io::Error),
}

/// What the helper needs to start one dyno.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitSpec {
    pub hostname: String,
    /// `/app` is an overlay: the cached slug below, the dyno's own directory above.
    pub app_lower: PathBuf,
    pub app_upper: PathBuf,
    /// overlayfs's scratch directory, on the upper's filesystem.
    pub app_work: PathBuf,
    /// An empty directory the new root is mounted on.
    pub root_dir: PathBuf,
    /// Where the helper writes the dyno's exit status, for an agent that is not its parent.
    pub exit_file: PathBuf,
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// For `/bin/sh -c`.
    pub script: String,
    /// The command's words when it needs no shell at all: exec'd directly (searching `PATH`)
    /// unless the app has a `.profile` to source, saving a shell's start.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub nofile: u64,
}

/// Namespaces, a new root and a cgroup per dyno. Needs root.
#[derive(Debug, Clone)]
pub struct LinuxRuntime {
    cgroups: Cgroups,
    helper: PathBuf,
    /// Replaces the size's memory quota (the hard limit stays at 2x); for tests.
    memory_quota_bytes: Option<u64>,
}

/// The parent cgroup of an agent's dynos: `dyno-` and 12 hex digits of its state directory's
/// canonical path.
pub fn cgroup_parent_for(state_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let path = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", crate::cgroup::DEFAULT_PARENT)
}

impl LinuxRuntime {
    /// Whether this host can run isolated dynos: root, and the cgroup controllers we need.
    pub fn check() -> Result<Cgroups, LinuxError> {
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(LinuxError::NotRoot(uid.as_raw()));
        }
        Ok(Cgroups::detect()?)
    }

    /// The host's cgroups and this binary as the helper. Dyno cgroups an earlier agent left are
    /// adopted or cleaned up by the agent (`Runtime::clean_leftovers`).
    ///
    /// The agent's cgroups live under `dyno-SCOPE`, SCOPE naming its state directory: another
    /// agent on the same machine (tests, several hosts on one box) never sees them as leftovers.
    pub fn new(state_dir: &Path) -> Result<LinuxRuntime, LinuxError> {
        LinuxRuntime::check()?;
        let cgroups = Cgroups::new(
            crate::cgroup::Hierarchy::detect()?,
            cgroup_parent_for(state_dir),
        );
        let helper = std::env::current_exe().map_err(LinuxError::Exe)?;
        Ok(LinuxRuntime {
            cgroups,
            helper,
            memory_quota_bytes: None,
        })
    }

    /// Explicit cgroups and helper binary (a `dyno-agent` that handles [`INIT_ARG`]); for tests.
    pub fn with(cgroups: Cgroups, helper: impl Into<PathBuf>) -> LinuxRuntime {
        LinuxRuntime {
            cgroups,
            helper: helper.into(),
            memory_quota_bytes: None,
        }
    }

    /// Every dyno gets `bytes` as its memory quota and 2x that as its hard limit, whatever its
    /// size; lets tests cross the limits without allocating gigabytes.
    pub fn with_memory_quota(mut self, bytes: u64) -> LinuxRuntime {
        self.memory_quota_bytes = Some(bytes);
        self
    }

    fn limits(&self, size: dyno_shared::size::Size) -> Limits {
        let mut limits = Limits::for_size(size);
        if let Some(quota) = self.memory_quota_bytes {
            limits.memory_quota_bytes = quota;
            limits.memory_max_bytes = 2 * quota;
        }
        limits
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// The dyno's cgroup name: its id, which the supervisor uses as the name of the app dir's
    /// parent (`dynos/<id>/app`).
    pub fn dyno_id(launch: &Launch) -> String {
        launch
            .app_dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .filter(|n| crate::supervisor::valid_dyno_id(n))
            .map(str::to_string)
            .unwrap_or_else(|| launch.dyno_name.clone())
    }
}

fn spawn_error(launch: &Launch, source: io::Error) -> RuntimeError {
    RuntimeError::Spawn {
        command: launch.command.clone(),
        dir: launch.app_dir.clone(),
        source,
    }
}

fn dyno_dir(launch: &Launch) -> &Path {
    launch.app_dir.parent().unwrap_or(Path::new("/"))
}

/// Gives a tree to the dyno's user, its root last: a root owned by `uid` means the whole tree is.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// `pidfd_open(2)`: a handle on `pid` that stays valid (and never names another process) even
/// after it exits; becomes readable when it does. Works for processes that are not our children.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The status the helper wrote; a helper killed before writing one died of SIGKILL.
fn read_exit_file(path: &Path) -> Exit {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Exit::Code)
        .unwrap_or(Exit::Signal(Signal::SIGKILL as i32))
}

/// What runs once a dyno's main process is gone: whatever is left of the dyno goes, and so does
/// its cgroup; then its output ends.
async fn cleanup_after_exit(cgroup: Cgroup, oom_seen: Arc<AtomicBool>, output: TailControl) {
    let _ = tokio::task::spawn_blocking(move || {
        // Read before removal: the count dies with the cgroup. It is fresh per start.
        if cgroup.oom_kills().is_ok_and(|n| n > 0) {
            oom_seen.store(true, Ordering::Relaxed);
        }
        if let Err(e) = cgroup.kill_all().and_then(|()| cgroup.remove()) {
            warn!(error = %e, "failed to clean up the dyno's cgroup");
        }
    })
    .await;
    output.finish();
}

/// overlayfs mount options; `\` escapes the separators overlayfs splits on.
fn overlay_options(lower: &Path, upper: &Path, work: &Path) -> String {
    let esc = |p: &Path| {
        let mut out = String::new();
        for c in p.to_string_lossy().chars() {
            if matches!(c, '\\' | ',' | ':') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    // `volatile`: no syncs to the upper layer, which is thrown away with the dyno anyway; without
    // it every dyno's exit waits for a filesystem sync.
    format!(
        "lowerdir={},upperdir={},workdir={},volatile",
        esc(lower),
        esc(upper),
        esc(work)
    )
}

impl Runtime for LinuxRuntime {
    fn isolation(&self) -> Isolation {
        Isolation::Linux
    }

    /// No copy: the slug (given to the dyno user once) is the overlay's lower layer, and the
    /// dyno's `app` dir, empty, its upper layer.
    fn prepare(&self, launch: &Launch) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let slug = std::fs::metadata(&launch.slug_dir)?;
        if slug.uid() != DYNO_UID {
            chown_tree(&launch.slug_dir, DYNO_UID, DYNO_GID)?;
        }
        // The merged root takes the upper root's owner and mode.
        std::fs::create_dir(&launch.app_dir)?;
        std::fs::set_permissions(
            &launch.app_dir,
            std::fs::Permissions::from_mode(slug.mode() & 0o7777),
        )?;
        std::os::unix::fs::lchown(&launch.app_dir, Some(DYNO_UID), Some(DYNO_GID))?;
        std::fs::create_dir(dyno_dir(launch).join(WORK_DIR))
    }

    fn start(&self, launch: &Launch) -> Result<RunningDyno, RuntimeError> {
        let id = LinuxRuntime::dyno_id(launch);
        let err = |e: &dyn std::fmt::Display| spawn_error(launch, io::Error::other(e.to_string()));
        // A cgroup of the same name can only be a leftover: empty it first.
        let existing = self.cgroups.cgroup(&id).map_err(|e| err(&e))?;
        existing.kill_all().map_err(|e| err(&e))?;
        let limits = self.limits(launch.size);
        let cgroup = self.cgroups.create(&id, &limits).map_err(|e| err(&e))?;
        let fail = |e: RuntimeError| {
            let _ = cgroup.remove();
            e
        };
        let dir = dyno_dir(launch);
        let root_dir = dir.join(format!(".root-{id}"));
        std::fs::create_dir_all(&root_dir).map_err(|e| fail(spawn_error(launch, e)))?;
        let exit_file = dir.join(EXIT_FILE);
        match std::fs::remove_file(&exit_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(fail(spawn_error(launch, e)));
            }
            _ => {}
        }
        let inside = Launch {
            app_dir: PathBuf::from(APP_DIR),
            ..launch.clone()
        };
        let spec = InitSpec {
            hostname: id.chars().take(MAX_HOSTNAME).collect(),
            app_lower: launch.slug_dir.clone(),
            app_upper: launch.app_dir.clone(),
            app_work: dir.join(WORK_DIR),
            root_dir,
            exit_file,
            cgroup_procs: cgroup.procs_files(),
            script: shell_script(&launch.command),
            argv: direct_argv(&launch.command),
            env: dyno_env(&inside),
            uid: DYNO_UID,
            gid: DYNO_GID,
            nofile: NOFILE_LIMIT,
        };
        let json = serde_json::to_string(&spec).map_err(|e| fail(err(&e)))?;

        let output_path = dir.join(OUTPUT_FILE);
        let open_output = || {
            std::fs::File::options()
                .append(true)
                .create(true)
                .truncate(false)
                .open(&output_path)
        };
        let stdout = open_output().map_err(|e| fail(RuntimeError::Pipe(e)))?;
        let stderr = stdout
            .try_clone()
            .map_err(|e| fail(RuntimeError::Pipe(e)))?;
        let control = TailControl::default();
        let output = FileTail::open(&output_path, control.clone())
            .map_err(|e| fail(RuntimeError::Pipe(e)))?;
        let mut cmd = tokio::process::Command::new(&self.helper);
        cmd.arg(INIT_ARG)
            .env_clear()
            .env(SPEC_ENV, json)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let spawned = crate::runtime::forking(|| cmd.spawn());
        drop(cmd);
        let mut child = spawned.map_err(|e| fail(spawn_error(launch, e)))?;
        let pid = child.id().ok_or_else(|| RuntimeError::Wait {
            pid: 0,
            source: io::Error::other("the child exited before its pid was read"),
        })?;
        let oom_killed = Arc::new(AtomicBool::new(false));
        let cleanup = cleanup_after_exit(cgroup.clone(), oom_killed.clone(), control.clone());
        let exit = Box::pin(async move {
            let result = child
                .wait()
                .await
                .map(Exit::from)
                .map_err(|source| RuntimeError::Wait { pid, source });
            cleanup.await;
            result
        });
        Ok(RunningDyno {
            pid,
            output: Box::new(output),
            exit,
            group: Box::new(LinuxGroup {
                helper: pid as i32,
                cgroup,
                memory_quota_bytes: limits.memory_quota_bytes,
                oom_killed,
            }),
            detach_output: Some(control),
        })
    }

    fn can_adopt(&self) -> bool {
        true
    }

    fn adopt(&self, launch: &Launch, pid: u32) -> Result<RunningDyno, RuntimeError> {
        let id = LinuxRuntime::dyno_id(launch);
        let dir = dyno_dir(launch);
        let adopt_err = |source: io::Error| RuntimeError::Adopt {
            dir: dir.to_path_buf(),
            source,
        };
        let cgroup = self
            .cgroups
            .cgroup(&id)
            .map_err(|e| adopt_err(io::Error::other(e.to_string())))?;
        let control = TailControl::default();
        let output = FileTail::open(&dir.join(OUTPUT_FILE), control.clone()).map_err(adopt_err)?;
        // Still ours only while it is in the dyno's cgroup: checked after the pidfd pins it.
        let helper = match pidfd_open(pid)
            .ok()
            .filter(|_| cgroup.pids().is_ok_and(|pids| pids.contains(&pid)))
        {
            // SAFETY: the AsyncFd owns the OwnedFd, which keeps the descriptor open and
            // unchanged until the AsyncFd drops it.
            Some(fd) => Some(
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(|e| adopt_err(e.into()))?,
            ),
            None => None,
        };
        let exit_file = dir.join(EXIT_FILE);
        let oom_killed = Arc::new(AtomicBool::new(false));
        let cleanup = cleanup_after_exit(cgroup.clone(), oom_killed.clone(), control.clone());
        let exit = Box::pin(async move {
            if let Some(helper) = helper {
                // Readable once the helper exits; an error means the same for our purposes.
                let _ = helper.readable().await;
            }
            cleanup.await;
            Ok(read_exit_file(&exit_file))
        });
        Ok(RunningDyno {
            pid,
            output: Box::new(output),
            exit,
            group: Box::new(LinuxGroup {
                helper: pid as i32,
                cgroup,
                memory_quota_bytes: self.limits(launch.size).memory_quota_bytes,
                oom_killed,
            }),
            detach_output: Some(control),
        })
    }

    fn tidy(&self) {
        self.cgroups.remove_parent_if_empty();
    }

    fn clean_leftovers(&self, keep: &HashSet<String>) {
        for name in self.cgroups.list() {
            if keep.contains(&name) {
                continue;
            }
            let removed = self
                .cgroups
                .cgroup(&name)
                .and_then(|c| c.kill_all().and_then(|()| c.remove()));
            match removed {
                Ok(()) => warn!(cgroup = %name, "killed a dyno an earlier agent left behind"),
                Err(e) => {
                    warn!(cgroup = %name, error = %e, "failed to clean up a leftover dyno cgroup")
                }
            }
        }
    }
}

/// A dyno's processes: the helper the agent waits for, and everything in the cgroup.
#[derive(Debug)]
pub struct LinuxGroup {
    helper: i32,
    cgroup: Cgroup,
    memory_quota_bytes: u64,
    /// Set by the exit future when the cgroup recorded an OOM kill, as the cgroup goes with it.
    oom_killed: Arc<AtomicBool>,
}

impl ProcessGroup for LinuxGroup {
    fn signal(&self, sig: DynoSignal) -> Result<(), RuntimeError> {
        let to_err = |e: crate::cgroup::CgroupError| RuntimeError::Signal {
            pgid: self.helper,
            source: match &e {
                crate::cgroup::CgroupError::KillTimeout { .. } => Errno::EBUSY,
                _ => Errno::EIO,
            },
        };
        match sig {
            // The helper forwards it to PID 1, which sends it to every process of the dyno.
            DynoSignal::Term => match kill(Pid::from_raw(self.helper), Signal::SIGTERM) {
                Ok(()) => Ok(()),
                Err(Errno::ESRCH) => self.cgroup.signal_all(Signal::SIGTERM).or(Ok(())),
                Err(source) => Err(RuntimeError::Signal {
                    pgid: self.helper,
                    source,
                }),
            },
            DynoSignal::Kill => self.cgroup.kill_all().map_err(to_err),
        }
    }

    fn alive(&self) -> bool {
        self.cgroup.has_live_processes()
    }

    fn stats(&self) -> Option<Usage> {
        let s = self.cgroup.stats().ok()?;
        Some(Usage {
            memory_rss_bytes: s.memory_rss_bytes,
            memory_cache_bytes: s.memory_cache_bytes,
            memory_swap_bytes: s.memory_swap_bytes,
            memory_quota_bytes: self.memory_quota_bytes,
            cpu_usage_usec: s.cpu_usage_usec,
            pids: s.pids_current,
        })
    }

    fn oom_killed(&self) -> bool {
        self.oom_killed.load(Ordering::Relaxed) || self.cgroup.oom_kills().is_ok_and(|n| n > 0)
    }
}

// ---------------------------------------------------------------------------------------------
// The helper side: runs in a fresh, single-threaded process (`main` calls `init_main` before any
// runtime or thread starts), so `fork` is sound there.

/// `dyno-agent __dyno-init`: reads the spec, joins the cgroup, enters the namespaces and runs the
/// dyno. Returns the exit status for `main` to exit with.
pub fn init_main() -> i32 {
    let spec = match std::env::var(SPEC_ENV)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str::<InitSpec>(&s).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("dyno-init: failed to read {SPEC_ENV}: {e}");
            return SETUP_FAILED;
        }
    };
    match outer(&spec) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dyno-init: {e}");
            SETUP_FAILED
        }
    }
}

fn ctx<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("failed to {what}: {e}")
}

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

fn status_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// The helper in the host's PID namespace: runs PID 1 and records its status in the exit file
/// (the agent that reads it may not be the one that started the dyno).
fn outer(spec: &InitSpec) -> Result<i32, String> {
    // Opened before PID 1 pivots our shared mount namespace away from the host's paths.
    let mut exit_file = std::fs::File::create(&spec.exit_file)
        .map_err(ctx(format!("create {}", spec.exit_file.display())))?;
    let code = run_pid1(spec)?;
    use std::io::Write;
    // Not synced: a host crash takes the dyno with it, so nobody would read the file.
    let _ = write!(exit_file, "{code}");
    Ok(code)
}

/// Joins the cgroup, unshares, forks PID 1, forwards signals to it and returns its status.
fn run_pid1(spec: &InitSpec) -> Result<i32, String> {
    let me = std::process::id().to_string();
    for file in &spec.cgroup_procs {
        std::fs::write(file, &me).map_err(ctx(format!("join cgroup {}", file.display())))?;
    }
    unshare(
        CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(ctx("unshare the PID, mount, UTS and IPC namespaces"))?;
    let signals = handled_signals();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None).map_err(ctx("block signals"))?;
    // SAFETY: the helper is single-threaded (main calls init_main before starting any thread),
    // so the child may allocate and run ordinary code after the fork.
    let child = match unsafe { fork() }.map_err(ctx("fork the dyno's init"))? {
        ForkResult::Child => std::process::exit(pid1(spec)),
        ForkResult::Parent { child } => child,
    };
    loop {
        match signals.wait().map_err(ctx("wait for signals"))? {
            Signal::SIGCHLD => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => {
                    if let Some(code) = status_code(status) {
                        return Ok(code);
                    }
                }
                Err(Errno::ECHILD) => return Ok(SETUP_FAILED),
                Err(_) => {}
            },
            sig => {
                let _ = kill(child, sig);
            }
        }
    }
}

/// PID 1 of the dyno's namespace.
fn pid1(spec: &InitSpec) -> i32 {
    if let Err(e) = setup_root(spec)
        .and_then(|()| nix::unistd::sethostname(&spec.hostname).map_err(ctx("set the host name")))
    {
        eprintln!("dyno-init: {e}");
        return SETUP_FAILED;
    }
    // SAFETY: PID 1 is single-threaded (forked from the single-threaded helper).
    let main = match unsafe { fork() } {
        Err(e) => {
            eprintln!("dyno-init: failed to fork the app: {e}");
            return SETUP_FAILED;
        }
        Ok(ForkResult::Child) => {
            let e = exec_app(spec);
            eprintln!("dyno-init: {e}");
            std::process::exit(127);
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    reap(main)
}

/// Reaps every child; on SIGTERM sends it to every process of the namespace. Exits with the app's
/// status once it is gone, after a stop only once every process is.
fn reap(main: Pid) -> i32 {
    let signals = handled_signals();
    let mut main_status: Option<i32> = None;
    let mut stopping = false;
    loop {
        let Ok(sig) = signals.wait() else { continue };
        if sig != Signal::SIGCHLD {
            stopping = true;
            // -1 from PID 1 of a namespace: every process in it but PID 1.
            let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
        }
        let mut none_left = false;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if status.pid() == Some(main) {
                        main_status = status_code(status);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    none_left = true;
                    break;
                }
            }
        }
        if let Some(code) = main_status
            && (!stopping || none_left)
        {
            // Leaving kills whatever is left in the namespace.
            return code;
        }
    }
}

fn mount_err(what: &str, path: &Path) -> impl FnOnce(Errno) -> String {
    let what = format!("{what} {}", path.display());
    move |e| format!("failed to {what}: {e}")
}

/// Binds `src` on `dst`, then remounts it read-only (or not), nosuid, nodev.
fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<(), String> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_err("bind-mount onto", dst))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, dst, None::<&str>, flags, None::<&str>).map_err(mount_err("remount", dst))
}

fn tmpfs(dst: &Path, options: &str, extra: MsFlags) -> Result<(), String> {
    mount(
        Some("tmpfs"),
        dst,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | extra,
        Some(options),
    )
    .map_err(mount_err("mount a tmpfs on", dst))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(ctx(format!("create {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(ctx(format!("chmod {}", path.display())))
}

/// The dyno's root: a tmpfs with read-only system dirs, `/app`, `/proc`, `/tmp` and `/dev`;
/// pivoted into, the old root detached, then made read-only.
fn setup_root(spec: &InitSpec) -> Result<(), String> {
    let root = spec.root_dir.as_path();
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(ctx("make the mounts private"))?;
    tmpfs(root, "mode=755,size=1m", MsFlags::MS_NODEV)?;
    for name in SYSTEM_DIRS {
        let host = Path::new("/").join(name);
        let target = root.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let link =
                std::fs::read_link(&host).map_err(ctx(format!("read {}", host.display())))?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(ctx(format!("link {}", target.display())))?;
        } else if meta.is_dir() {
            mkdir(&target, 0o755)?;
            bind(&host, &target, true)?;
        }
    }
    let app = root.join("app");
    mkdir(&app, 0o755)?;
    let options = overlay_options(&spec.app_lower, &spec.app_upper, &spec.app_work);
    mount(
        Some("overlay"),
        &app,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(mount_err("mount the app's overlay on", &app))?;
    let proc_dir = root.join("proc");
    mkdir(&proc_dir, 0o555)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_err("mount proc on", &proc_dir))?;
    let tmp = root.join("tmp");
    mkdir(&tmp, 0o1777)?;
    tmpfs(&tmp, "mode=1777", MsFlags::MS_NODEV)?;
    let dev = root.join("dev");
    mkdir(&dev, 0o755)?;
    tmpfs(&dev, "mode=755", MsFlags::MS_NOEXEC)?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let node = dev.join(name);
        std::fs::write(&node, b"").map_err(ctx(format!("create {}", node.display())))?;
        mount(
            Some(&host),
            &node,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(mount_err("bind-mount onto", &node))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(ctx(format!("link /dev/{name}")))?;
    }
    let shm = dev.join("shm");
    mkdir(&shm, 0o1777)?;
    tmpfs(&shm, "mode=1777", MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)?;

    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only ours.
    std::env::set_current_dir(root).map_err(ctx(format!("enter {}", root.display())))?;
    nix::unistd::pivot_root(".", ".").map_err(ctx("pivot into the dyno's root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(ctx("detach the host's root"))?;
    std::env::set_current_dir("/").map_err(ctx("enter /"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(ctx("make the dyno's root read-only"))
}

/// The words of a command the shell would run as they are: plain words only (no quoting,
/// expansion, globbing, redirection or assignments), the first not a shell keyword.
fn direct_argv(command: &str) -> Option<Vec<String>> {
    let plain = |w: &str| {
        w.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_./:,+@%-".contains(&c))
    };
    let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    let first = words.first()?;
    let keyword = ["exec", "time", "cd", "export", "set", "trap"].contains(&first.as_str());
    // `=` only after the program: before it, a word is an assignment.
    let args_plain = words[1..].iter().all(|w| plain(&w.replace('=', "")));
    (!keyword && plain(first) && args_plain).then_some(words)
}

/// `name` as the shell would find it: a path as given, else the first executable file of that
/// name in `PATH` (from the dyno's environment).
fn find_program(name: &str, env: &[(String, String)]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())?;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// In the app's process: rlimits, no capabilities, the dyno's user, no_new_privs, then exec.
/// Returns only on failure.
fn exec_app(spec: &InitSpec) -> String {
    let prepared = (|| -> Result<(CString, Vec<CString>, Vec<CString>), String> {
        let args = [
            CString::new("/bin/sh").map_err(ctx("build argv"))?,
            CString::new("-c").map_err(ctx("build argv"))?,
            CString::new(spec.script.as_str()).map_err(ctx("build argv"))?,
        ];
        let env = spec
            .env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ctx("build the environment"))?;
        nix::unistd::setsid().map_err(ctx("start a session"))?;
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(ctx("unblock signals"))?;
        setrlimit(Resource::RLIMIT_NOFILE, spec.nofile, spec.nofile)
            .and_then(|()| setrlimit(Resource::RLIMIT_CORE, 0, 0))
            .map_err(ctx("set rlimits"))?;
        drop_bounding_set()?;
        let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
        nix::unistd::setgroups(&[]).map_err(ctx("clear supplementary groups"))?;
        nix::unistd::setresgid(gid, gid, gid).map_err(ctx("set the group"))?;
        // Leaving uid 0 for all three ids clears the permitted, effective and ambient sets.
        nix::unistd::setresuid(uid, uid, uid).map_err(ctx("set the user"))?;
        nix::sys::prctl::set_no_new_privs().map_err(ctx("set no_new_privs"))?;
        std::env::set_current_dir(APP_DIR).map_err(ctx("enter /app"))?;
        // Without a .profile to source, a plain command needs no shell; one that cannot be
        // found goes through the shell, which says so as usual (exit 127).
        if let Some(argv) = &spec.argv
            && !Path::new(".profile").exists()
            && let Some(program) = find_program(&argv[0], &spec.env)
        {
            let program =
                CString::new(program.as_os_str().as_encoded_bytes()).map_err(ctx("build argv"))?;
            let argv = argv
                .iter()
                .map(|a| CString::new(a.as_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ctx("build argv"))?;
            return Ok((program, argv, env));
        }
        Ok((args[0].clone(), args.to_vec(), env))
    })();
    match prepared {
        Ok((path, args, env)) => match nix::unistd::execve(&path, &args, &env) {
            Err(e) => format!("failed to exec {}: {e}", path.to_string_lossy()),
            Ok(never) => match never {},
        },
        Err(e) => e,
    }
}

/// Empties the capability bounding set, so nothing exec'd later can regain a capability.
fn drop_bounding_set() -> Result<(), String> {
    for cap in 0..64 {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 {
            match Errno::last() {
                // Past the last capability this kernel knows.
                Errno::EINVAL => break,
                e => return Err(format!("failed to drop capability {cap}: {e}")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_commands_skip_the_shell() {
        assert_eq!(
            direct_argv("dyno-probe web --port=5000"),
            Some(vec![
                "dyno-probe".into(),
                "web".into(),
                "--port=5000".into()
            ])
        );
        for shelly in [
            "echo $HOME",
            "python app.py > log",
            "ls *.txt",
            "FOO=1 run",
            "exec run",
            "say 'hi there'",
            "a && b",
            "",
        ] {
            assert_eq!(direct_argv(shelly), None, "{shelly}");
        }
    }

    #[test]
    fn each_state_dir_gets_its_own_cgroup_parent() {
        let a = cgroup_parent_for(Path::new("/var/lib/dyno-agent"));
        let b = cgroup_parent_for(Path::new("/var/lib/dyno-agent-2"));
        assert_ne!(a, b);
        assert_eq!(a, cgroup_parent_for(Path::new("/var/lib/dyno-agent")));
        assert!(
            a.starts_with("dyno-") && a.len() == "dyno-".len() + 12,
            "{a}"
        );
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    }

    #[test]
    fn the_dyno_id_comes_from_the_supervisors_layout() {
        let mut l = Launch {
            app_dir: PathBuf::from("/state/dynos/0193-web-1/app"),
            slug_dir: PathBuf::from("/state/slugs/ab"),
            command: "true".into(),
            dyno_name: "web.1".into(),
            port: None,
            env: Default::default(),
            size: Default::default(),
        };
        assert_eq!(LinuxRuntime::dyno_id(&l), "0193-web-1");
        l.app_dir = PathBuf::from("/");
        assert_eq!(LinuxRuntime::dyno_id(&l), "web.1");
    }

    #[test]
    fn overlay_options_escape_what_overlayfs_splits_on() {
        assert_eq!(
            overlay_options(
                Path::new("/s/slugs/ab"),
                Path::new("/s,x/d:1/app"),
                Path::new("/s\\y/.work")
            ),
            "lowerdir=/s/slugs/ab,upperdir=/s\\,x/d\\:1/app,workdir=/s\\\\y/.work,volatile"
        );
    }

    #[test]
    fn a_missing_or_torn_exit_file_means_the_helper_was_killed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exit");
        assert_eq!(read_exit_file(&file), Exit::Signal(9));
        std::fs::write(&file, "3").unwrap();
        assert_eq!(read_exit_file(&file), Exit::Code(3));
        std::fs::write(&file, "").unwrap();
        assert_eq!(read_exit_file(&file).code(), 137);
    }

    #[test]
    fn statuses_follow_the_shell_convention() {
        let p = Pid::from_raw(5);
        assert_eq!(status_code(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            status_code(WaitStatus::Signaled(p, Signal::SIGTERM, false)),
            Some(143)
        );
        assert_eq!(status_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn the_spec_round_trips_through_json() {
        let spec = InitSpec {
            hostname: "d1".into(),
            app_lower: "/s/slugs/ab".into(),
            app_upper: "/s/d1/app".into(),
            app_work: "/s/d1/.work".into(),
            root_dir: "/s/d1/.root-d1".into(),
            exit_file: "/s/d1/exit".into(),
            cgroup_procs: vec!["/sys/fs/cgroup/dyno/d1/cgroup.procs".into()],
            script: "exec true".into(),
            argv: None,
            env: vec![("HOME".into(), "/app".into())],
            uid: DYNO_UID,
            gid: DYNO_GID,
            nofile: NOFILE_LIMIT,
        };
        let back: InitSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back.env, spec.env);
        assert_eq!(back.cgroup_procs, spec.cgroup_procs);
    }
}
