//! cgroup v1: one hierarchy per controller (`memory`, `cpu` (often with `cpuacct`), `pids`,
//! optionally `freezer`); a dyno has a directory in each.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use super::{
    Limits, Mount, Result, Stats, create_dir, keyed, read, read_u64, read_u64_or_zero, send, write,
};

/// Mount points of the v1 controllers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mounts {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub pids: PathBuf,
    /// CPU usage lives here; `None` reads usage as 0.
    pub cpuacct: Option<PathBuf>,
    /// Used to freeze a dyno while it is killed, when mounted.
    pub freezer: Option<PathBuf>,
}

impl Mounts {
    /// The first `cgroup` mount naming each controller in its super options.
    pub fn from_mounts(mounts: &[Mount]) -> Mounts {
        let mut found = Mounts::default();
        let set = |slot: &mut PathBuf, path: &Path| {
            if slot.as_os_str().is_empty() {
                *slot = path.to_path_buf();
            }
        };
        for m in mounts.iter().filter(|m| m.fstype == "cgroup") {
            for opt in m.super_options.split(',') {
                match opt {
                    "memory" => set(&mut found.memory, &m.mount_point),
                    "cpu" => set(&mut found.cpu, &m.mount_point),
                    "pids" => set(&mut found.pids, &m.mount_point),
                    "cpuacct" if found.cpuacct.is_none() => {
                        found.cpuacct = Some(m.mount_point.clone())
                    }
                    "freezer" if found.freezer.is_none() => {
                        found.freezer = Some(m.mount_point.clone())
                    }
                    _ => {}
                }
            }
        }
        found
    }

    /// Required controllers without a mount.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            ("memory", &self.memory),
            ("pids", &self.pids),
            ("cpu", &self.cpu),
        ]
        .into_iter()
        .filter(|(_, p)| p.as_os_str().is_empty())
        .map(|(n, _)| n)
        .collect()
    }
}

/// One dyno's directories, one per controller.
#[derive(Debug, Clone)]
pub struct V1Cgroup {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub pids: PathBuf,
    pub cpuacct: Option<PathBuf>,
    pub freezer: Option<PathBuf>,
}

impl V1Cgroup {
    pub fn new(mounts: &Mounts, rel: &Path) -> V1Cgroup {
        V1Cgroup {
            memory: mounts.memory.join(rel),
            cpu: mounts.cpu.join(rel),
            pids: mounts.pids.join(rel),
            cpuacct: mounts.cpuacct.as_ref().map(|m| m.join(rel)),
            freezer: mounts.freezer.as_ref().map(|m| m.join(rel)),
        }
    }

    /// Every directory, without duplicates (`cpu,cpuacct` share one mount).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.memory.clone(), self.cpu.clone(), self.pids.clone()];
        dirs.extend(self.cpuacct.clone());
        dirs.extend(self.freezer.clone());
        let mut unique = Vec::new();
        for d in dirs {
            if !unique.contains(&d) {
                unique.push(d);
            }
        }
        unique
    }

    pub fn create(&self) -> Result<()> {
        for dir in self.dirs() {
            create_dir(&dir)?;
        }
        Ok(())
    }

    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    pub fn pids_dir(&self) -> &Path {
        &self.pids
    }

    /// `memory.limit_in_bytes` (the R15 limit, 2x quota), `pids.max`, `cpu.shares` = 1024 x weight.
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        write(
            &self.memory.join("memory.limit_in_bytes"),
            &limits.memory_max_bytes.to_string(),
        )?;
        write(&self.pids.join("pids.max"), &limits.pids_max.to_string())?;
        write(
            &self.cpu.join("cpu.shares"),
            &(1024 * u64::from(limits.cpu_weight)).to_string(),
        )
    }

    /// `memory.usage_in_bytes`, `memory.stat` (`total_rss`, `total_cache`, `total_swap`),
    /// `cpuacct.usage` (ns), `pids.current`.
    pub fn stats(&self) -> Result<Stats> {
        let stat = read(&self.memory.join("memory.stat"))?;
        let cpu_ns = match &self.cpuacct {
            Some(dir) => read_u64_or_zero(&dir.join("cpuacct.usage"))?,
            None => 0,
        };
        Ok(Stats {
            memory_usage_bytes: read_u64(&self.memory.join("memory.usage_in_bytes"))?,
            memory_rss_bytes: keyed(&stat, "total_rss"),
            memory_cache_bytes: keyed(&stat, "total_cache"),
            memory_swap_bytes: keyed(&stat, "total_swap"),
            cpu_usage_usec: cpu_ns / 1000,
            pids_current: read_u64(&self.pids.join("pids.current"))?,
        })
    }

    /// Freezes the cgroup (so nothing forks while we kill), SIGKILLs each pid, thaws.
    pub fn kill_once(&self, pids: &[u32]) -> Result<()> {
        let state = self.freezer.as_ref().map(|d| d.join("freezer.state"));
        if let Some(state) = &state {
            write(state, "FROZEN")?;
        }
        for &pid in pids {
            send(pid, Signal::SIGKILL);
        }
        if let Some(state) = &state {
            write(state, "THAWED")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::fs;

    fn fixture() -> (tempfile::TempDir, Cgroups) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut mountinfo = String::new();
        for (i, c) in ["cpu,cpuacct", "memory", "pids", "freezer"]
            .iter()
            .enumerate()
        {
            let dir = root.join(c);
            fs::create_dir_all(&dir).unwrap();
            mountinfo.push_str(&format!(
                "{} 31 0:{} / {} rw,relatime shared:1 - cgroup cgroup rw,{c}\n",
                40 + i,
                30 + i,
                dir.display()
            ));
        }
        // An empty v2 hierarchy beside them, as on hybrid hosts: it must not be chosen.
        let unified = root.join("unified");
        fs::create_dir_all(&unified).unwrap();
        fs::write(unified.join("cgroup.controllers"), "").unwrap();
        mountinfo.push_str(&format!(
            "50 31 0:40 / {} rw - cgroup2 cgroup2 rw\n",
            unified.display()
        ));
        let hierarchy = Hierarchy::from_mountinfo(&mountinfo).unwrap();
        (tmp, Cgroups::new(hierarchy, "dyno"))
    }

    #[test]
    fn detects_v1_controllers_and_ignores_an_empty_v2() {
        let (tmp, cgroups) = fixture();
        assert_eq!(cgroups.version(), Version::V1);
        let Hierarchy::V1(m) = cgroups.hierarchy() else {
            panic!()
        };
        assert_eq!(m.cpu, tmp.path().join("cpu,cpuacct"));
        assert_eq!(
            m.cpuacct.as_deref(),
            Some(tmp.path().join("cpu,cpuacct").as_path())
        );
        assert_eq!(m.freezer, Some(tmp.path().join("freezer")));

        let err = Hierarchy::from_mountinfo(&format!(
            "40 31 0:30 / {}/memory rw - cgroup cgroup rw,memory\n",
            tmp.path().display()
        ))
        .unwrap_err();
        assert!(err.to_string().contains("pids, cpu"), "{err}");
    }

    #[test]
    fn v1_limits_go_to_each_controller() {
        let (tmp, cgroups) = fixture();
        let cg = cgroups
            .create("d1", &Limits::for_size(Size::Standard2x))
            .unwrap();
        let read = |p: &str| fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(
            read("memory/dyno/d1/memory.limit_in_bytes"),
            (2048u64 * 1024 * 1024).to_string()
        );
        assert_eq!(read("pids/dyno/d1/pids.max"), "512");
        assert_eq!(read("cpu,cpuacct/dyno/d1/cpu.shares"), "2048");
        assert_eq!(
            cg.procs_files().len(),
            4,
            "cpu and cpuacct share a directory"
        );

        cg.add_pid(4242).unwrap();
        assert_eq!(read("freezer/dyno/d1/cgroup.procs"), "4242");
        assert_eq!(cg.pids().unwrap(), vec![4242]);
        assert_eq!(cgroups.list(), vec!["d1".to_string()]);
    }

    #[test]
    fn v1_stats_come_from_memory_stat_cpuacct_and_pids() {
        let (tmp, cgroups) = fixture();
        let cg = cgroups.cgroup("d1").unwrap();
        let Cgroup::V1(v1) = &cg else { panic!() };
        v1.create().unwrap();
        let w = |p: &str, v: &str| fs::write(tmp.path().join(p), v).unwrap();
        w("memory/dyno/d1/memory.usage_in_bytes", "30000\n");
        w(
            "memory/dyno/d1/memory.stat",
            "cache 1\nrss 2\nswap 3\ntotal_cache 1000\ntotal_rss 20000\ntotal_swap 300\n",
        );
        w("cpu,cpuacct/dyno/d1/cpuacct.usage", "123456789\n");
        w("pids/dyno/d1/pids.current", "7\n");
        assert_eq!(
            cg.stats().unwrap(),
            Stats {
                memory_usage_bytes: 30000,
                memory_rss_bytes: 20000,
                memory_cache_bytes: 1000,
                memory_swap_bytes: 300,
                cpu_usage_usec: 123456,
                pids_current: 7,
            }
        );
        w("pids/dyno/d1/pids.current", "many\n");
        let err = cg.stats().unwrap_err();
        assert!(err.to_string().contains("pids.current"), "{err}");
    }

    #[test]
    fn v1_remove_deletes_every_controller_directory() {
        let (tmp, cgroups) = fixture();
        let cg = cgroups.create("d1", &Limits::for_size(Size::Eco)).unwrap();
        // Real cgroupfs directories hold only kernel files; empty the fixture's.
        for dir in ["memory", "pids", "cpu,cpuacct", "freezer"] {
            let d = tmp.path().join(dir).join("dyno/d1");
            for f in fs::read_dir(&d).unwrap() {
                fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
        cg.remove().unwrap();
        cg.remove().unwrap();
        assert!(!tmp.path().join("memory/dyno/d1").exists());
        assert!(!tmp.path().join("freezer/dyno/d1").exists());
        assert!(
            cg.kill_all().is_ok(),
            "a removed cgroup has nothing to kill"
        );
    }
}
