use std::fs;
use std::path::PathBuf;

use banger_model::HostFacts;

/// Directories searched after `PATH` for host tools: e2fsprogs and iproute2
/// live in `/usr/sbin`, which an ordinary user's `PATH` often lacks.
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Finds a host program by name on `PATH`, then in the sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    which::which(name).ok().or_else(|| {
        SBIN_DIRS
            .iter()
            .find_map(|dir| which::which_in(name, Some(dir), "/").ok())
    })
}

/// Reads the CPU count and total memory. A value that cannot be read is
/// `None`, and the defaults resolver falls back to its floor for it.
pub fn probe_host() -> HostFacts {
    HostFacts {
        cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        memory_bytes: fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_mem_total(&s)),
    }
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let kib: u64 = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let s = "MemTotal:       24576000 kB\nMemFree:        1 kB\n";
        assert_eq!(parse_mem_total(s), Some(24576000 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: x kB\n"), None);
    }

    #[test]
    fn finds_tools_in_sbin() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("definitely-not-a-banger-tool").is_none());
    }

    #[test]
    fn probes_this_host() {
        let facts = probe_host();
        assert!(facts.cpus.unwrap_or(0) >= 1);
        assert!(facts.memory_bytes.unwrap_or(0) > 0);
    }
}
