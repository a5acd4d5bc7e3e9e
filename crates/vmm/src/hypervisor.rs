//! The contract between the orchestrator and a hypervisor backend: what a
//! VM needs to boot ([`LaunchSpec`]), what must be kept to find it again
//! ([`VmHandle`]), and the [`Hypervisor`] trait itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_agent_proto::AgentChannel;
use serde::{Deserialize, Serialize};

use crate::error::VmmError;
use crate::firecracker::Firecracker;
use crate::qemu::Qemu;
use crate::select::{Backend, Selection};

/// Everything needed to boot one VM. Paths are absolute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchSpec {
    /// VM name (a DNS label).
    pub name: String,
    /// Persistent per-VM folder: disks live here, and the backend's own
    /// log (`qemu.log`).
    pub vm_dir: PathBuf,
    /// Per-VM folder for sockets (QMP, Firecracker API): keep it short,
    /// a Unix socket path has at most 107 bytes.
    pub runtime_dir: PathBuf,
    pub vcpu: u32,
    pub memory_mib: u64,
    /// ELF kernel with a PVH note (boots on QEMU microvm and Firecracker).
    pub vmlinux: PathBuf,
    /// Kept for a `-M pc` fallback; unused by today's backends.
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    /// `banger.*` parameters etc.; the backend prepends what it needs
    /// (`console=`, `panic=`, TCG timing flags), so later words here win.
    pub cmdline: String,
    /// In order: base (read-only), system, work; the guest sees vda, vdb, vdc.
    pub disks: Vec<DiskSpec>,
    /// A TAP device the caller already created.
    pub net: Option<NetSpec>,
    /// Serial console output is appended here.
    pub console_log: PathBuf,
    /// Resume from this saved state ([`Hypervisor::save_state`]'s `dest`)
    /// instead of booting: the guest goes on where it was saved, its
    /// memory and devices as they were. The rest of the spec must
    /// describe the same machine as the saved VM's spec did: the same
    /// vCPUs and memory, kernel and initramfs, the same disks in the same
    /// order with the same read-only flags, holding what they held when
    /// the state was saved (copies made after the save may live at other
    /// paths), and a network interface if and only if the saved VM had
    /// one. A mismatch fails the start (QEMU quits with its reason) or,
    /// for disk contents, corrupts the guest's filesystems. The name,
    /// folders, console log, TAP and MAC may differ; the command line is
    /// not read again, and the guest keeps the MAC address it had (both
    /// backends restore the NIC's): giving it its new one is the guest's
    /// business.
    pub incoming: Option<PathBuf>,
}

/// One virtio-blk disk, a raw image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub read_only: bool,
}

/// One virtio-net interface backed by a host TAP device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSpec {
    /// The TAP device's name (at most 15 bytes).
    pub tap: String,
    /// The guest's MAC address, like `52:54:00:12:34:56`.
    pub mac: String,
}

/// What must be persisted to find the VM again after a daemon restart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VmHandle {
    pub backend: Backend,
    pub pid: u32,
    /// `/proc/PID/stat` field 22: with the pid, names this exact process
    /// (a pid reused by another process has another start time).
    pub start_time: u64,
    /// QMP socket (QEMU) or API socket (Firecracker).
    pub control_socket: PathBuf,
    pub console_log: PathBuf,
    /// The console log's length when this boot started: what came before
    /// belongs to earlier boots, and [`crate::wait_for_console`] skips it.
    #[serde(default)]
    pub console_offset: u64,
}

/// What [`Hypervisor::save_state`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedState {
    /// The files, `dest` first ([`Hypervisor::state_files`]).
    pub files: Vec<PathBuf>,
    /// Their total size.
    pub bytes: u64,
    /// From pausing the guest to the last byte written.
    pub took: Duration,
}

/// A hypervisor backend. The orchestrator holds an `Arc<dyn Hypervisor>`
/// from [`hypervisor_for`] and never asks which one it has.
pub trait Hypervisor: Send + Sync {
    /// Which backend this is (recorded in the [`VmHandle`]).
    fn backend(&self) -> Backend;

    /// Spawns the hypervisor detached (own session, stdio not tied to the
    /// caller, survives the caller's exit) and returns once the VM is
    /// started (QEMU: process up and QMP answering; Firecracker:
    /// `InstanceStart` accepted). Does not wait for the guest OS. If the
    /// hypervisor exits first, the error quotes the tail of its log; if
    /// anything fails, no process is left behind.
    fn start(&self, spec: &LaunchSpec) -> Result<VmHandle, VmmError>;

    /// Is this exact process (pid and start time) still alive?
    fn is_running(&self, handle: &VmHandle) -> bool;

    /// Graceful stop: resumes a paused guest, asks it to power off (QEMU:
    /// QMP `system_powerdown`; Firecracker: `SendCtrlAltDel`), waits up to
    /// `grace`, then SIGTERM (up to [`crate::process::TERM_WAIT`]), then
    /// SIGKILL (up to [`crate::process::KILL_WAIT`]). Returns when the
    /// process is gone; a process already gone is not an error.
    fn stop(&self, handle: &VmHandle, grace: Duration) -> Result<(), VmmError>;

    /// Sends `signal` (e.g. 9, SIGKILL) to the hypervisor process, if it
    /// is still the process in the handle. Does not wait for it to exit.
    fn kill(&self, handle: &VmHandle, signal: i32) -> Result<(), VmmError>;

    /// Freezes the guest's vCPUs: the process stays, with the guest's
    /// memory and devices as they are, but uses no host CPU for the guest
    /// (QEMU: QMP `stop`; Firecracker: `PATCH /vm` `Paused`). Returns once
    /// the hypervisor says the VM is paused; pausing a paused VM (one
    /// left paused by [`Self::save_state`] included) is not an error. [`Self::stop`] works on a paused VM (it resumes it first,
    /// since a frozen guest cannot power off); [`Self::kill`] needs no
    /// resume.
    fn pause(&self, handle: &VmHandle) -> Result<(), VmmError>;

    /// Lets a paused guest run again (QEMU: QMP `cont`; Firecracker:
    /// `PATCH /vm` `Resumed`), also one left paused by
    /// [`Self::save_state`] (QEMU then says `postmigrate`, not `paused`).
    /// Returns once the hypervisor says the VM runs; resuming a running VM
    /// is not an error.
    fn resume(&self, handle: &VmHandle) -> Result<(), VmmError>;

    /// The Unix socket where the host reaches the guest agent of a VM
    /// started with this `runtime_dir`, if this backend gives it one.
    fn agent_socket(&self, runtime_dir: &Path) -> Option<PathBuf> {
        let _ = runtime_dir;
        None
    }

    /// How the host reaches the guest agent of a VM started with this
    /// `runtime_dir`: by default [`Self::agent_socket`] as the agent's own
    /// stream; Firecracker's goes through its vsock socket.
    fn agent_channel(&self, runtime_dir: &Path) -> Option<AgentChannel> {
        self.agent_socket(runtime_dir).map(AgentChannel::Serial)
    }

    /// Grows disk `disk` (its index in the [`LaunchSpec::disks`] the VM
    /// was started, or resumed, with) of a running or paused VM to
    /// `bytes`, a multiple of 512: its file at `path` grows (QEMU: QMP
    /// `block_resize`; Firecracker: the file, then `PATCH /drives/{id}`,
    /// which makes it read the size again), and the guest is told (a
    /// virtio-blk configuration change), so its kernel sees the new
    /// capacity; growing the filesystem on it is the guest's business.
    /// A size below the file's is refused before anything is done: a
    /// disk never shrinks. The same size again is not an error, and tells
    /// the guest again. Backends that cannot answer
    /// [`VmmError::Unsupported`].
    fn grow_disk(
        &self,
        handle: &VmHandle,
        disk: usize,
        path: &Path,
        bytes: u64,
    ) -> Result<(), VmmError> {
        let _ = (handle, disk, path, bytes);
        Err(VmmError::Unsupported {
            backend: self.backend(),
            what: "grow a running VM's disk",
        })
    }

    // Saved state: what templates and forks are made of.

    /// Pauses the VM and writes its memory and device state to `dest`
    /// (and, for backends that write more than one file, beside it: see
    /// [`Self::state_files`]), created afresh with mode 0600: an existing
    /// file or a symlink there is refused before the VM is paused. Returns
    /// once everything is written, within `timeout`, with the VM still
    /// paused, whether it succeeded or not: the caller resumes it
    /// ([`Self::resume`]) or stops it. On failure no file is left. The disks are not copied:
    /// once this returns they hold what the saved guest expects, and stay
    /// so while the VM is paused. The files are not fsynced.
    /// [`LaunchSpec::incoming`] starts a VM from them. Backends that
    /// cannot answer [`VmmError::Unsupported`].
    fn save_state(
        &self,
        handle: &VmHandle,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SavedState, VmmError> {
        let _ = (handle, dest, timeout);
        Err(VmmError::Unsupported {
            backend: self.backend(),
            what: "save a VM's state",
        })
    }

    /// Every file that [`Self::save_state`] writes for `dest`, `dest`
    /// first: what to copy, check or remove as one saved state (e.g.
    /// after a crash in the middle of a save).
    fn state_files(&self, dest: &Path) -> Vec<PathBuf> {
        vec![dest.to_path_buf()]
    }
}

/// Builds the backend that [`crate::select::choose`] picked.
pub fn hypervisor_for(selection: &Selection) -> Arc<dyn Hypervisor> {
    match selection.backend {
        Backend::Qemu => Arc::new(Qemu::new(&selection.binary, selection.accel)),
        Backend::Firecracker => Arc::new(Firecracker::new(&selection.binary)),
    }
}

/// Checks what both backends rely on, before anything is spawned.
pub(crate) fn validate(spec: &LaunchSpec) -> Result<(), VmmError> {
    let bad = |m: String| Err(VmmError::Spec(m));
    // QEMU's -name and Firecracker's --id take it; Firecracker allows
    // letters, digits and '-', at most 64.
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 63
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !name_ok {
        return bad(format!(
            "VM name {:?} must be a DNS label: 1-63 letters, digits or '-'",
            spec.name
        ));
    }
    if spec.vcpu == 0 {
        return bad("vcpu must be at least 1".into());
    }
    if spec.memory_mib < 32 {
        return bad(format!(
            "memory {} MiB is too small: give the VM at least 32 MiB",
            spec.memory_mib
        ));
    }
    for (what, path) in [
        ("vm_dir", &spec.vm_dir),
        ("runtime_dir", &spec.runtime_dir),
        ("vmlinux", &spec.vmlinux),
        ("initramfs", &spec.initramfs),
        ("console_log", &spec.console_log),
    ] {
        if !path.is_absolute() {
            return bad(format!("{what} {} is not an absolute path", path.display()));
        }
    }
    if let Some(state) = &spec.incoming
        && !state.is_absolute()
    {
        return bad(format!(
            "saved state {} is not an absolute path",
            state.display()
        ));
    }
    for disk in &spec.disks {
        if !disk.path.is_absolute() {
            return bad(format!(
                "disk {} is not an absolute path",
                disk.path.display()
            ));
        }
    }
    if let Some(net) = &spec.net {
        validate_tap(&net.tap)?;
        validate_mac(&net.mac)?;
    }
    Ok(())
}

fn validate_tap(tap: &str) -> Result<(), VmmError> {
    let ok = !tap.is_empty()
        && tap.len() <= 15
        && tap
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(VmmError::Spec(format!(
            "TAP name {tap:?} must be 1-15 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn validate_mac(mac: &str) -> Result<(), VmmError> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    // Bit 0 of the first octet marks multicast: not a NIC's address.
    let unicast = ok && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0);
    if unicast {
        Ok(())
    } else {
        Err(VmmError::Spec(format!(
            "MAC address {mac:?} must be a unicast address like 52:54:00:12:34:56"
        )))
    }
}

/// Refuses a [`Hypervisor::grow_disk`] to `bytes` that is not whole
/// sectors or is less than the file at `path` (not followed if a link)
/// holds, before any backend acts.
pub(crate) fn check_growth(path: &Path, bytes: u64) -> Result<(), VmmError> {
    let refuse = |message: String| VmmError::Grow {
        path: path.to_path_buf(),
        bytes,
        message,
    };
    if bytes == 0 || !bytes.is_multiple_of(512) {
        return Err(refuse(
            "a disk's size must be a positive multiple of 512 bytes".into(),
        ));
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    if bytes < meta.len() {
        return Err(refuse(format!(
            "it is {} bytes already, and a disk never shrinks: give at least that",
            meta.len()
        )));
    }
    Ok(())
}

/// A Unix socket path must fit `sockaddr_un.sun_path` (108 bytes with NUL).
pub(crate) fn socket_path(runtime_dir: &Path, file: &str) -> Result<PathBuf, VmmError> {
    let path = runtime_dir.join(file);
    let len = path.as_os_str().len();
    if len > 107 {
        return Err(VmmError::Spec(format!(
            "socket path {} is {len} bytes, more than a Unix socket allows (107): use a shorter runtime dir",
            path.display()
        )));
    }
    Ok(path)
}

/// Makes the folders a start writes into: the VM dir, the runtime dir
/// (0700: its sockets are the VM's control and the guest agent, which
/// QEMU binds with the daemon's umask), and the console log's folder.
pub(crate) fn ensure_dirs(spec: &LaunchSpec) -> Result<(), VmmError> {
    use std::os::unix::fs::PermissionsExt;
    ensure_dir(&spec.vm_dir)?;
    ensure_dir(&spec.runtime_dir)?;
    std::fs::set_permissions(&spec.runtime_dir, std::fs::Permissions::from_mode(0o700)).map_err(
        |source| VmmError::Io {
            what: "restricting",
            path: spec.runtime_dir.clone(),
            source,
        },
    )?;
    match spec.console_log.parent() {
        Some(parent) => ensure_dir(parent),
        None => Ok(()),
    }
}

/// Makes a folder (and its parents) if missing.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), VmmError> {
    std::fs::create_dir_all(path).map_err(|source| VmmError::Io {
        what: "creating",
        path: path.to_path_buf(),
        source,
    })
}

/// Removes a socket left by an earlier run (it would make the bind fail).
pub(crate) fn remove_stale(path: &Path) -> Result<(), VmmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(VmmError::Io {
            what: "removing the stale socket",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec in the shape the orchestrator builds.
    pub(crate) fn sample_spec() -> LaunchSpec {
        LaunchSpec {
            name: "dev-box".into(),
            vm_dir: "/var/lib/banger/vms/dev-box".into(),
            runtime_dir: "/run/banger/vm/dev-box".into(),
            vcpu: 2,
            memory_mib: 1024,
            vmlinux: "/var/lib/banger/kernels/k/vmlinux".into(),
            bzimage: "/var/lib/banger/kernels/k/bzImage".into(),
            initramfs: "/var/lib/banger/kernels/k/initramfs.cpio.gz".into(),
            cmdline: "banger.base=/dev/vda banger.system=/dev/vdb".into(),
            disks: vec![
                DiskSpec {
                    path: "/var/lib/banger/images/i/rootfs.ext4".into(),
                    read_only: true,
                },
                DiskSpec {
                    path: "/var/lib/banger/vms/dev-box/system.ext4".into(),
                    read_only: false,
                },
                DiskSpec {
                    path: "/var/lib/banger/vms/dev-box/work.ext4".into(),
                    read_only: false,
                },
            ],
            net: Some(NetSpec {
                tap: "bgr-dev-box".into(),
                mac: "52:54:00:ab:cd:ef".into(),
            }),
            console_log: "/var/lib/banger/vms/dev-box/console.log".into(),
            incoming: None,
        }
    }

    #[test]
    fn validates_specs() {
        assert!(validate(&sample_spec()).is_ok());
        let with = |f: fn(&mut LaunchSpec)| {
            let mut s = sample_spec();
            f(&mut s);
            validate(&s).unwrap_err().to_string()
        };
        assert!(with(|s| s.vcpu = 0).contains("vcpu"));
        assert!(with(|s| s.name = "a_b".into()).contains("DNS label"));
        assert!(with(|s| s.name = String::new()).contains("DNS label"));
        assert!(with(|s| s.memory_mib = 8).contains("at least 32 MiB"));
        assert!(with(|s| s.vmlinux = "vmlinux".into()).contains("not an absolute path"));
        assert!(
            with(|s| s.incoming = Some("state".into())).contains("saved state state is not an")
        );
        assert!(
            with(|s| s.net.as_mut().unwrap().mac = "01:00:00:00:00:01".into()).contains("unicast")
        );
        assert!(with(|s| s.net.as_mut().unwrap().mac = "52:54:00:00:00".into()).contains("MAC"));
        assert!(with(|s| s.net.as_mut().unwrap().tap = "tap,script=/x".into()).contains("TAP"));
        assert!(
            with(|s| s.net.as_mut().unwrap().tap = "a-very-long-tap-name".into()).contains("TAP")
        );
    }

    #[test]
    fn a_disk_grows_in_sectors_and_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("work.ext4");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        check_growth(&disk, 1 << 20).unwrap();
        check_growth(&disk, 2 << 20).unwrap();
        let refused = |path: &Path, bytes: u64| check_growth(path, bytes).unwrap_err().to_string();
        assert_eq!(
            refused(&disk, 512 * 1024),
            format!(
                "growing the disk {} to 524288 bytes: it is 1048576 bytes already, and a disk \
                 never shrinks: give at least that",
                disk.display()
            )
        );
        assert!(refused(&disk, (2 << 20) + 1).contains("multiple of 512"));
        assert!(refused(&disk, 0).contains("multiple of 512"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&disk, &link).unwrap();
        assert!(refused(&link, 2 << 20).contains("not a regular file"));
        assert!(refused(&dir.path().join("none"), 2 << 20).contains("No such file"));
    }

    #[test]
    fn socket_paths_must_fit() {
        assert!(socket_path(Path::new("/run/banger/vm/x"), "qmp.sock").is_ok());
        let long = PathBuf::from(format!("/{}", "d".repeat(100)));
        let err = socket_path(&long, "qmp.sock").unwrap_err().to_string();
        assert!(err.contains("shorter runtime dir"), "{err}");
    }

    #[test]
    fn handle_round_trips_and_reads_without_offset() {
        let h = VmHandle {
            backend: Backend::Firecracker,
            pid: 42,
            start_time: 7,
            control_socket: "/run/banger/vm/x/firecracker.sock".into(),
            console_log: "/var/lib/banger/vms/x/console.log".into(),
            console_offset: 3,
        };
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains("\"backend\":\"firecracker\""), "{json}");
        assert_eq!(serde_json::from_str::<VmHandle>(&json).unwrap(), h);
        let old =
            r#"{"backend":"qemu","pid":1,"start_time":2,"control_socket":"/s","console_log":"/c"}"#;
        assert_eq!(
            serde_json::from_str::<VmHandle>(old)
                .unwrap()
                .console_offset,
            0
        );
    }
}
