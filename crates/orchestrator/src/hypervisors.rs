//! The seams between the orchestrator and what runs guests: which
//! hypervisor a boot uses and which one a running VM's handle belongs to
//! ([`Hypervisors`]), and how a booted guest is found to answer
//! ([`GuestProbe`]). The daemon passes the real ones ([`Probed`],
//! [`SshProbe`]); tests pass fakes, so that the VM lifecycle is tested
//! without QEMU or a guest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_config::Config;
use banger_guest::{SshError, SshTarget};
use banger_vmm::select::{Accel, HostHypervisors, Selection, choose};
use banger_vmm::{Hypervisor, VmHandle};

use crate::error::Error;

/// Where the orchestrator gets its hypervisors. Every call may block
/// (probing the host, reading `/proc`).
pub trait Hypervisors: Send + Sync {
    /// The hypervisor `hypervisor = …` in `config` picks on this host now,
    /// for a new boot; an error says why none can run and what to do.
    fn for_boot(&self, config: &Config) -> Result<Arc<dyn Hypervisor>, Error>;

    /// The backend that started `handle`, whatever the config says today.
    /// Stopping, killing and watching need no binary or accelerator.
    fn for_handle(&self, handle: &VmHandle) -> Arc<dyn Hypervisor>;

    /// A hypervisor started for the VM whose runtime folder is
    /// `runtime_dir` but whose handle was never recorded (bangerd died
    /// between spawning it and writing it down): killed; returns its pid.
    fn kill_orphan(&self, runtime_dir: &Path) -> Option<u32>;
}

/// The host's hypervisors, probed at every boot
/// (`banger_vmm::select::choose`).
pub struct Probed;

impl Hypervisors for Probed {
    fn for_boot(&self, config: &Config) -> Result<Arc<dyn Hypervisor>, Error> {
        let selection = choose(config.hypervisor(), &HostHypervisors::probe(config))
            .map_err(|e| Error::invalid(e.to_string()))?;
        Ok(banger_vmm::hypervisor_for(&selection))
    }

    fn for_handle(&self, handle: &VmHandle) -> Arc<dyn Hypervisor> {
        banger_vmm::hypervisor_for(&Selection {
            backend: handle.backend,
            accel: Accel::Tcg,
            binary: PathBuf::new(),
            reason: String::new(),
        })
    }

    /// Found by QEMU's pidfile in the VM's runtime folder, and only if
    /// that process's command line names this very folder.
    fn kill_orphan(&self, runtime_dir: &Path) -> Option<u32> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // Not through a link, and no more than a pid's worth of it.
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
}

/// How the orchestrator learns that a booted guest answers, after
/// banger-init said it is ready on the console. Blocking.
pub trait GuestProbe: Send + Sync {
    /// One attempt of at most `timeout`: does the guest's sshd answer
    /// `target` with the pinned host key?
    fn ssh_ready(&self, target: &SshTarget, timeout: Duration) -> Result<(), SshError>;
}

/// `ssh … true` through banger's ControlMaster, which it leaves running.
pub struct SshProbe;

impl GuestProbe for SshProbe {
    fn ssh_ready(&self, target: &SshTarget, timeout: Duration) -> Result<(), SshError> {
        target.wait_ready(timeout).map(|_| ())
    }
}

/// How long a booting guest may take to start banger-init, and then to
/// answer ssh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootTimeouts {
    pub init: Duration,
    pub ssh: Duration,
}

impl BootTimeouts {
    /// TCG is slow: Debian's systemd answers ssh ~10-16 s after QEMU
    /// starts.
    pub const DEFAULT: Self = Self {
        init: Duration::from_secs(90),
        ssh: Duration::from_secs(180),
    };

    /// The defaults, both replaced by `BANGER_BOOT_TIMEOUT` (seconds) when
    /// it is set, for slow hosts and tests.
    pub fn from_env() -> Self {
        let cap = std::env::var("BANGER_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map(Duration::from_secs);
        match cap {
            Some(cap) => Self {
                init: cap,
                ssh: cap,
            },
            None => Self::DEFAULT,
        }
    }
}
