//! Facts about the machine the agent reports in its `Hello`.

/// The machine's host name, or `localhost` if it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Total memory in MB from `/proc/meminfo` (0 when it cannot be read).
pub fn memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_total_kb(&s))
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

pub fn cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn parse_mem_total_kb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        let sample = "MemTotal:       16314880 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total_kb(sample), Some(16_314_880));
        assert_eq!(parse_mem_total_kb("nothing"), None);
        assert!(cpus() >= 1);
        assert!(!hostname().is_empty());
    }
}
