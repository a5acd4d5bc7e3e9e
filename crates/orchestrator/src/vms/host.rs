//! The hypervisor for a new boot, or for a running VM's handle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_vmm::select::{Accel, HostHypervisors, Selection, choose};
use banger_vmm::{Hypervisor, VmHandle};

use crate::Orchestrator;
use crate::error::Error;

/// The hypervisor `hypervisor = …` picks on this host now.
pub(super) fn hypervisor(d: &Orchestrator) -> Result<Arc<dyn Hypervisor>, Error> {
    let config = &d.inner.config;
    let selection = choose(config.hypervisor(), &HostHypervisors::probe(config))
        .map_err(|e| Error::invalid(e.to_string()))?;
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

/// A hypervisor started for this VM whose handle was never recorded (the
/// daemon died between spawning it and writing it down): found by QEMU's
/// pidfile in the VM's runtime folder, and only if that process's command
/// line names this very folder. Killed; returns its pid.
pub(super) fn kill_orphan(runtime_dir: &Path) -> Option<u32> {
    use std::io::Read;
    // Not through a link, and no more than a pid's worth of it.
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(runtime_dir.join(banger_vmm::qemu::PIDFILE))
        .ok()?;
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = runtime_dir.as_os_str().as_encoded_bytes();
    if !cmdline.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .ok()?;
    u32::try_from(pid).ok()
}
