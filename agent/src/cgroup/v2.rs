//! cgroup v2: one unified hierarchy; controllers are enabled for children through each
//! ancestor's `cgroup.subtree_control`.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use super::{
    Limits, REQUIRED_CONTROLLERS, Result, Stats, create_dir, keyed, read, read_u64,
    read_u64_or_zero, send, write,
};

/// v2 `cpu.weight` for a 1x dyno (the kernel's default; range 1-10000).
pub const CPU_WEIGHT_UNIT: u64 = 100;

#[derive(Debug, Clone)]
pub struct V2Cgroup {
    /// The hierarchy's mount point.
    pub root: PathBuf,
    /// The platform's parent, relative to `root`.
    pub parent: PathBuf,
    /// The dyno's directory.
    pub dir: PathBuf,
}

impl V2Cgroup {
    pub fn new(root: &Path, parent: &Path, rel: &Path) -> V2Cgroup {
        V2Cgroup {
            root: root.to_path_buf(),
            parent: parent.to_path_buf(),
            dir: root.join(rel),
        }
    }

    /// Creates the parent and the dyno's directory, enabling the controllers on the way down
    /// (the root and the parent hold no processes of ours, so this is allowed).
    pub fn create(&self) -> Result<()> {
        let enable = REQUIRED_CONTROLLERS
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut dir = self.root.clone();
        let ancestors: Vec<_> = self.parent.components().collect();
        for component in std::iter::once(None).chain(ancestors.into_iter().map(Some)) {
            if let Some(c) = component {
                dir.push(c);
                create_dir(&dir)?;
            }
            let control = dir.join("cgroup.subtree_control");
            let enabled = read(&control).unwrap_or_default();
            let missing = REQUIRED_CONTROLLERS
                .iter()
                .any(|c| !enabled.split_whitespace().any(|e| e == *c));
            if missing {
                write(&control, &enable)?;
            }
        }
        create_dir(&self.dir)
    }

    /// `memory.max` (the R15 limit, 2x quota), `pids.max`, `cpu.weight` = 100 x weight.
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        write(
            &self.dir.join("memory.max"),
            &limits.memory_max_bytes.to_string(),
        )?;
        write(&self.dir.join("pids.max"), &limits.pids_max.to_string())?;
        let weight = (CPU_WEIGHT_UNIT * u64::from(limits.cpu_weight)).clamp(1, 10_000);
        write(&self.dir.join("cpu.weight"), &weight.to_string())
    }

    /// `memory.current`, `memory.stat` (`anon`, `file`), `memory.swap.current`,
    /// `cpu.stat` (`usage_usec`), `pids.current`.
    pub fn stats(&self) -> Result<Stats> {
        let stat = read(&self.dir.join("memory.stat"))?;
        let cpu = read(&self.dir.join("cpu.stat"))?;
        Ok(Stats {
            memory_usage_bytes: read_u64(&self.dir.join("memory.current"))?,
            memory_rss_bytes: keyed(&stat, "anon"),
            memory_cache_bytes: keyed(&stat, "file"),
            memory_swap_bytes: read_u64_or_zero(&self.dir.join("memory.swap.current"))?,
            cpu_usage_usec: keyed(&cpu, "usage_usec"),
            pids_current: read_u64(&self.dir.join("pids.current"))?,
        })
    }

    /// `cgroup.kill` when the kernel has it (5.14+), else SIGKILL each pid.
    pub fn kill_once(&self, pids: &[u32]) -> Result<()> {
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            return write(&kill, "1");
        }
        for &pid in pids {
            send(pid, Signal::SIGKILL);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::fs;

    fn fixture(controllers: &str) -> (tempfile::TempDir, Result<Cgroups>) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cgroup");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("cgroup.controllers"), controllers).unwrap();
        let mountinfo = format!(
            "23 1 0:22 / /proc rw - proc proc rw\n\
             30 23 0:26 / {} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
            root.display()
        );
        let cgroups = Hierarchy::from_mountinfo(&mountinfo).map(|h| Cgroups::new(h, "dyno"));
        (tmp, cgroups)
    }

    #[test]
    fn detects_v2_only_with_the_controllers_we_need() {
        let (tmp, c) = fixture("cpuset cpu io memory hugetlb pids rdma misc\n");
        let c = c.unwrap();
        assert_eq!(c.version(), Version::V2);
        assert_eq!(
            c.hierarchy(),
            &Hierarchy::V2 {
                root: tmp.path().join("cgroup")
            }
        );
        let (_tmp, c) = fixture("cpu io\n");
        let err = c.unwrap_err();
        assert!(err.to_string().contains("lacks memory, pids"), "{err}");
    }

    #[test]
    fn v2_create_enables_controllers_and_writes_limits() {
        let (tmp, c) = fixture("cpu memory pids");
        let cg = c
            .unwrap()
            .create("d1", &Limits::for_size(Size::PerformanceL))
            .unwrap();
        let root = tmp.path().join("cgroup");
        let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +pids +cpu");
        assert_eq!(read("dyno/cgroup.subtree_control"), "+memory +pids +cpu");
        assert_eq!(
            read("dyno/d1/memory.max"),
            (2 * 14336u64 * 1024 * 1024).to_string()
        );
        assert_eq!(read("dyno/d1/pids.max"), "32768");
        assert_eq!(read("dyno/d1/cpu.weight"), "5000");
        assert_eq!(cg.procs_files(), vec![root.join("dyno/d1/cgroup.procs")]);
        cg.add_pid(17).unwrap();
        assert_eq!(cg.pids().unwrap(), vec![17]);
    }

    #[test]
    fn v2_stats_come_from_memory_cpu_and_pids_files() {
        let (tmp, c) = fixture("cpu memory pids");
        let cg = c.unwrap().cgroup("d1").unwrap();
        let dir = tmp.path().join("cgroup/dyno/d1");
        fs::create_dir_all(&dir).unwrap();
        let w = |f: &str, v: &str| fs::write(dir.join(f), v).unwrap();
        w("memory.current", "50000\n");
        w(
            "memory.stat",
            "anon 40000\nfile 9000\nkernel 1000\nanon_thp 0\n",
        );
        w(
            "cpu.stat",
            "usage_usec 777\nuser_usec 700\nsystem_usec 77\n",
        );
        w("pids.current", "3\n");
        let no_swap = cg.stats().unwrap();
        assert_eq!(
            no_swap.memory_swap_bytes, 0,
            "no swap accounting reads as 0"
        );
        w("memory.swap.current", "4096\n");
        assert_eq!(
            cg.stats().unwrap(),
            Stats {
                memory_usage_bytes: 50000,
                memory_rss_bytes: 40000,
                memory_cache_bytes: 9000,
                memory_swap_bytes: 4096,
                cpu_usage_usec: 777,
                pids_current: 3,
            }
        );
        fs::remove_file(dir.join("cpu.stat")).unwrap();
        let err = cg.stats().unwrap_err();
        assert!(err.to_string().contains("cpu.stat"), "{err}");
    }

    #[test]
    fn v2_kill_uses_cgroup_kill_when_present() {
        let (tmp, c) = fixture("cpu memory pids");
        let cg = c.unwrap().cgroup("d1").unwrap();
        let Cgroup::V2(v2) = &cg else { panic!() };
        let dir = tmp.path().join("cgroup/dyno/d1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup.kill"), "").unwrap();
        // A pid that cannot exist, so a fallback kill() would do nothing either way.
        v2.kill_once(&[u32::MAX]).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.kill")).unwrap(), "1");
    }
}
