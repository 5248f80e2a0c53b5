//! A dyno's cgroup: detection of the host's hierarchy (v2 unified, or v1 with one mount per
//! controller), creating `PARENT/<dyno_id>`, limits from the dyno's size, stats, listing and
//! killing every process, removal.
//!
//! Every file access goes through the paths this module was given, so tests point it at a temp
//! directory of fake cgroup files (`v1.rs` and `v2.rs` hold the version-specific file names).
//!
//! Memory: Heroku logs R14 above the quota and kills at 2x the quota (R15). The kernel's hard
//! limit is therefore set to 2x the quota ([`Limits::memory_max_bytes`]); the quota itself is not
//! enforced by the kernel, the agent compares usage with it ([`Stats::memory_quota_percent`]).

pub mod v1;
pub mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dyno_shared::size::Size;

/// Controllers a dyno needs.
pub const REQUIRED_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The platform's parent cgroup, relative to each hierarchy's root.
pub const DEFAULT_PARENT: &str = "dyno";
/// How long `kill_all` keeps killing before it gives up.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `remove` retries a busy cgroup (the kernel frees it shortly after its last exit).
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);
const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: {0}")]
    Unavailable(String),
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse {path}: {what}")]
    Parse { path: PathBuf, what: String },
    #[error("failed to create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to kill every process of cgroup {path}: {remaining} still running")]
    KillTimeout { path: PathBuf, remaining: usize },
    #[error("invalid cgroup name {0:?}: expected [A-Za-z0-9._-], not starting with a dot")]
    InvalidName(String),
}

pub type Result<T> = std::result::Result<T, CgroupError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Where the controllers are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified mount point.
    V2 { root: PathBuf },
    /// One mount point per controller (`cpu` and `cpuacct` may share one).
    V1(v1::Mounts),
}

impl Hierarchy {
    pub fn version(&self) -> Version {
        match self {
            Hierarchy::V1(_) => Version::V1,
            Hierarchy::V2 { .. } => Version::V2,
        }
    }

    /// The host's hierarchy, from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Hierarchy> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: path.into(),
            source,
        })?;
        Hierarchy::from_mountinfo(&text)
    }

    /// v2 when a `cgroup2` mount offers every required controller in its root's
    /// `cgroup.controllers`; else v1 when every required controller has its own `cgroup` mount.
    pub fn from_mountinfo(mountinfo: &str) -> Result<Hierarchy> {
        let mounts = parse_mountinfo(mountinfo);
        let mut why = Vec::new();
        for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
            let file = m.mount_point.join("cgroup.controllers");
            let available = fs::read_to_string(&file).unwrap_or_default();
            let have: Vec<&str> = available.split_whitespace().collect();
            let missing: Vec<&str> = REQUIRED_CONTROLLERS
                .into_iter()
                .filter(|c| !have.contains(c))
                .collect();
            if missing.is_empty() {
                return Ok(Hierarchy::V2 {
                    root: m.mount_point.clone(),
                });
            }
            why.push(format!(
                "cgroup2 at {} lacks {}",
                m.mount_point.display(),
                missing.join(", ")
            ));
        }
        let v1 = v1::Mounts::from_mounts(&mounts);
        match v1.missing() {
            missing if missing.is_empty() => Ok(Hierarchy::V1(v1)),
            missing => {
                why.push(format!("cgroup v1 lacks {}", missing.join(", ")));
                Err(CgroupError::Unavailable(why.join("; ")))
            }
        }
    }
}

/// One line of `/proc/self/mountinfo`, the parts this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
    /// Super options; for cgroup v1 they name the controllers (`rw,cpu,cpuacct`).
    pub super_options: String,
}

/// Parses mountinfo lines: `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let super_options = right.next().unwrap_or("");
            Some(Mount {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fstype: fstype.to_string(),
                super_options: super_options.to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let n = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the kernel enforces for one dyno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The size's quota; over it the agent logs R14. Not enforced by the kernel.
    pub memory_quota_bytes: u64,
    /// The kernel's hard limit: 2x the quota, where Heroku kills the dyno (R15).
    pub memory_max_bytes: u64,
    /// `pids.max`; threads count.
    pub pids_max: u64,
    /// Relative CPU share (1 for a 1x dyno).
    pub cpu_weight: u32,
}

impl Limits {
    pub fn for_size(size: Size) -> Limits {
        let quota = size.memory_mb() * MIB;
        Limits {
            memory_quota_bytes: quota,
            memory_max_bytes: 2 * quota,
            pids_max: size.pids_max(),
            cpu_weight: size.cpu_weight(),
        }
    }
}

/// A dyno's figures, read from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Everything charged to the cgroup (RSS, page cache, kernel memory).
    pub memory_usage_bytes: u64,
    /// Anonymous memory (v1 `rss`, v2 `anon`).
    pub memory_rss_bytes: u64,
    /// Page cache (v1 `cache`, v2 `file`).
    pub memory_cache_bytes: u64,
    /// Swap in use; 0 when the kernel does not account swap.
    pub memory_swap_bytes: u64,
    /// CPU time of all processes, in microseconds.
    pub cpu_usage_usec: u64,
    /// Processes and threads.
    pub pids_current: u64,
}

impl Stats {
    /// RSS plus swap, Heroku's figure for R14/R15.
    pub fn memory_total_bytes(&self) -> u64 {
        self.memory_rss_bytes + self.memory_swap_bytes
    }

    /// `memory_total_bytes` as a percentage of the quota.
    pub fn memory_quota_percent(&self, limits: &Limits) -> f64 {
        if limits.memory_quota_bytes == 0 {
            return 0.0;
        }
        self.memory_total_bytes() as f64 * 100.0 / limits.memory_quota_bytes as f64
    }
}

/// The platform's cgroups on one host: a hierarchy and a parent under which every dyno gets
/// `<parent>/<dyno_id>`.
#[derive(Debug, Clone)]
pub struct Cgroups {
    hierarchy: Hierarchy,
    parent: PathBuf,
}

impl Cgroups {
    /// `parent` is relative to each hierarchy's root, e.g. `dyno`.
    pub fn new(hierarchy: Hierarchy, parent: impl Into<PathBuf>) -> Cgroups {
        let parent: PathBuf = parent.into();
        let parent = parent
            .strip_prefix("/")
            .map(Path::to_path_buf)
            .unwrap_or(parent);
        Cgroups { hierarchy, parent }
    }

    /// The host's hierarchy with the default parent.
    pub fn detect() -> Result<Cgroups> {
        Ok(Cgroups::new(Hierarchy::detect()?, DEFAULT_PARENT))
    }

    pub fn version(&self) -> Version {
        self.hierarchy.version()
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Removes the parent cgroup where no dyno cgroup is left in it (the kernel refuses to remove
    /// a non-empty one, so kept dynos keep theirs).
    pub fn remove_parent_if_empty(&self) {
        let dirs = match &self.hierarchy {
            Hierarchy::V2 { root } => vec![root.join(&self.parent)],
            Hierarchy::V1(mounts) => v1::V1Cgroup::new(mounts, &self.parent).dirs(),
        };
        for dir in dirs {
            let _ = fs::remove_dir(&dir);
        }
    }

    /// The dyno's cgroup, without touching the filesystem.
    pub fn cgroup(&self, name: &str) -> Result<Cgroup> {
        if !valid_name(name) {
            return Err(CgroupError::InvalidName(name.to_string()));
        }
        let rel = self.parent.join(name);
        Ok(match &self.hierarchy {
            Hierarchy::V2 { root } => Cgroup::V2(v2::V2Cgroup::new(root, &self.parent, &rel)),
            Hierarchy::V1(mounts) => Cgroup::V1(v1::V1Cgroup::new(mounts, &rel)),
        })
    }

    /// Creates (or reuses) the dyno's cgroup and applies `limits`.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Cgroup> {
        let cgroup = self.cgroup(name)?;
        match &cgroup {
            Cgroup::V1(c) => c.create()?,
            Cgroup::V2(c) => c.create()?,
        }
        cgroup.apply(limits)?;
        Ok(cgroup)
    }

    /// Removes the parent itself once it holds no dyno cgroups (each controller's on v1).
    pub fn remove_parent(&self) -> Result<()> {
        let dirs = match &self.hierarchy {
            Hierarchy::V2 { root } => vec![root.join(&self.parent)],
            Hierarchy::V1(m) => {
                let mut all = vec![m.memory.clone(), m.cpu.clone(), m.pids.clone()];
                all.extend(m.cpuacct.clone());
                all.extend(m.freezer.clone());
                all.dedup();
                all.into_iter().map(|d| d.join(&self.parent)).collect()
            }
        };
        for dir in dirs {
            remove_dir(&dir)?;
        }
        Ok(())
    }

    /// Names of the dyno cgroups under the parent (left over from an earlier agent, say).
    pub fn list(&self) -> Vec<String> {
        let dir = match &self.hierarchy {
            Hierarchy::V2 { root } => root.join(&self.parent),
            Hierarchy::V1(mounts) => mounts.memory.join(&self.parent),
        };
        let mut names: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        names
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One dyno's cgroup.
#[derive(Debug, Clone)]
pub enum Cgroup {
    V1(v1::V1Cgroup),
    V2(v2::V2Cgroup),
}

impl Cgroup {
    pub fn version(&self) -> Version {
        match self {
            Cgroup::V1(_) => Version::V1,
            Cgroup::V2(_) => Version::V2,
        }
    }

    /// Every `cgroup.procs` a process must be written to, to join this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1(c) => c.procs_files(),
            Cgroup::V2(c) => vec![c.dir.join("cgroup.procs")],
        }
    }

    pub fn apply(&self, limits: &Limits) -> Result<()> {
        match self {
            Cgroup::V1(c) => c.apply(limits),
            Cgroup::V2(c) => c.apply(limits),
        }
    }

    /// Moves a process (and its future children) into the cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        for file in self.procs_files() {
            write(&file, &pid.to_string())?;
        }
        Ok(())
    }

    /// Processes in the cgroup (host pids).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let file = match self {
            Cgroup::V1(c) => c.pids_dir().join("cgroup.procs"),
            Cgroup::V2(c) => c.dir.join("cgroup.procs"),
        };
        let text = read(&file)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.trim().parse().map_err(|_| CgroupError::Parse {
                    path: file.clone(),
                    what: format!("not a pid: {l:?}"),
                })
            })
            .collect()
    }

    /// Whether the cgroup still holds a live (non-zombie) process. A removed cgroup holds none.
    pub fn has_live_processes(&self) -> bool {
        self.pids()
            .unwrap_or_default()
            .into_iter()
            .any(crate::runtime::process_alive)
    }

    pub fn stats(&self) -> Result<Stats> {
        match self {
            Cgroup::V1(c) => c.stats(),
            Cgroup::V2(c) => c.stats(),
        }
    }

    /// How many processes the kernel's OOM killer killed in this cgroup (v2 `memory.events`,
    /// v1 `memory.oom_control`, both `oom_kill`). Unlike `memory.failcnt`, which also counts
    /// limit hits that reclaim resolved, this only moves when a process was killed.
    pub fn oom_kills(&self) -> Result<u64> {
        let file = match self {
            Cgroup::V1(c) => c.memory.join("memory.oom_control"),
            Cgroup::V2(c) => c.dir.join("memory.events"),
        };
        Ok(keyed(&read(&file)?, "oom_kill"))
    }

    /// Sends `signal` to every process of the cgroup, once.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        for pid in self.pids()? {
            send(pid, signal);
        }
        Ok(())
    }

    /// SIGKILLs every process until the cgroup is empty: v2 `cgroup.kill` when the kernel has it,
    /// else freeze (when a freezer is there), SIGKILL each pid, thaw, repeat.
    pub fn kill_all(&self) -> Result<()> {
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let pids = match self.pids() {
                Ok(pids) => pids,
                // Already removed: nothing left to kill.
                Err(CgroupError::Read { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if !pids.iter().any(|&p| crate::runtime::process_alive(p)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::KillTimeout {
                    path: self.dir().to_path_buf(),
                    remaining: pids.len(),
                });
            }
            match self {
                Cgroup::V2(c) => c.kill_once(&pids)?,
                Cgroup::V1(c) => c.kill_once(&pids)?,
            }
            std::thread::sleep(POLL);
        }
    }

    /// Removes the cgroup (every controller's directory on v1); a missing one is fine. Retries
    /// while the kernel still reports it busy.
    pub fn remove(&self) -> Result<()> {
        let dirs = match self {
            Cgroup::V1(c) => c.dirs(),
            Cgroup::V2(c) => vec![c.dir.clone()],
        };
        for dir in dirs {
            remove_dir(&dir)?;
        }
        Ok(())
    }

    /// The main directory (v2's only one; v1's memory controller's).
    pub fn dir(&self) -> &Path {
        match self {
            Cgroup::V1(c) => &c.memory,
            Cgroup::V2(c) => &c.dir,
        }
    }
}

fn send(pid: u32, signal: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    // ESRCH: it is already gone.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal);
}

fn remove_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(POLL);
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

pub(crate) fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|source| CgroupError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// A file holding one number (`max` reads as `u64::MAX`).
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let text = read(path)?;
    let text = text.trim();
    if text == "max" {
        return Ok(u64::MAX);
    }
    text.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        what: format!("not a number: {text:?}"),
    })
}

/// Like `read_u64`, 0 when the file does not exist (an accounting the kernel does not do).
pub(crate) fn read_u64_or_zero(path: &Path) -> Result<u64> {
    if !path.exists() {
        return Ok(0);
    }
    read_u64(path)
}

/// The value of `key` in a flat keyed file (`memory.stat`, `cpu.stat`); 0 when absent.
pub(crate) fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_put_the_hard_limit_at_twice_the_quota() {
        let l = Limits::for_size(Size::Standard2x);
        assert_eq!(l.memory_quota_bytes, 1024 * MIB);
        assert_eq!(l.memory_max_bytes, 2048 * MIB);
        assert_eq!(l.pids_max, 512);
        assert_eq!(l.cpu_weight, 2);
        let s = Stats {
            memory_rss_bytes: 1028 * MIB,
            ..Stats::default()
        };
        assert!((s.memory_quota_percent(&l) - 100.390625).abs() < 1e-9);
    }

    #[test]
    fn mountinfo_parsing_unescapes_and_finds_fstype() {
        let text = "41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime shared:9 - cgroup2 cgroup2 rw\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/un ified"));
        assert_eq!(m[0].fstype, "cgroup2");
        assert_eq!(m[1].super_options, "rw,cpu,cpuacct");
    }

    #[test]
    fn oom_kills_come_from_the_version_specific_file() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Cgroups::new(
            Hierarchy::V2 {
                root: tmp.path().into(),
            },
            "dyno",
        );
        let cg = c.cgroup("d1").unwrap();
        fs::create_dir_all(cg.dir()).unwrap();
        assert!(cg.oom_kills().is_err(), "a missing file is an error");
        fs::write(
            cg.dir().join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills().unwrap(), 1);
    }

    #[test]
    fn names_cannot_escape_the_parent() {
        let c = Cgroups::new(Hierarchy::V2 { root: "/x".into() }, "/dyno");
        for bad in ["..", "a/b", "", ".hidden"] {
            assert!(matches!(c.cgroup(bad), Err(CgroupError::InvalidName(_))));
        }
        assert_eq!(c.cgroup("web-1").unwrap().dir(), Path::new("/x/dyno/web-1"));
    }
}
