//! The hypervisor for a new boot or for a running VM's handle, and what
//! the host reports about a hypervisor process.

use std::path::PathBuf;
use std::sync::Arc;

use banger_vmm::select::{Accel, HostHypervisors, Selection, choose};
use banger_vmm::{Hypervisor, VmHandle};

use crate::error::Failure;
use crate::server::Daemon;

/// The hypervisor `hypervisor = …` picks on this host now.
pub(super) fn hypervisor(d: &Daemon) -> Result<Arc<dyn Hypervisor>, Failure> {
    let config = &d.inner.config;
    let selection = choose(config.hypervisor(), &HostHypervisors::probe(config))
        .map_err(|e| Failure::bad_request(e.to_string()))?;
    Ok(banger_vmm::hypervisor_for(&selection))
}

/// The backend that started `handle`, whatever the config says today.
/// Stopping, killing and watching need no binary or accelerator.
pub(super) fn for_handle(handle: &VmHandle) -> Arc<dyn Hypervisor> {
    banger_vmm::hypervisor_for(&Selection {
        backend: handle.backend,
        accel: Accel::Tcg,
        binary: PathBuf::new(),
        reason: String::new(),
    })
}

/// CPU seconds (user + system) and resident memory of a process.
pub(super) fn process_usage(pid: u32) -> (Option<f64>, Option<u64>) {
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| cpu_ticks(&s))
        .map(|ticks| ticks as f64 / clock_ticks_per_second());
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    (cpu, rss)
}

/// utime + stime (fields 14 and 15) of /proc/PID/stat; the command name
/// (field 2) may hold spaces, so count from its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 is index 0, so 14 and 15 are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_odd_process_names() {
        let stat = "42 (qemu (x) y) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(200));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn measures_this_process() {
        let (cpu, rss) = process_usage(std::process::id());
        assert!(cpu.is_some());
        assert!(rss.unwrap_or(0) > 0);
    }
}
