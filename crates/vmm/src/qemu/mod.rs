//! The QEMU backend: `qemu-system-x86_64 -M microvm` with the ELF vmlinux
//! (booted through its PVH note, no firmware), virtio-mmio disks and NIC,
//! the serial console appended to the VM's console log, QMP on a Unix
//! socket, and the guest agent's virtio-serial port on another Unix
//! socket. KVM when it can run a stock kernel, TCG when not.

pub mod migration;
pub mod qmp;
pub mod sandbox;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::error::VmmError;
use crate::hypervisor::{self, Hypervisor, LaunchSpec, SavedState, VmHandle};
use crate::process::{self, POLL};
use crate::select::{Accel, Backend};
use crate::{state_file, tsc};
use banger_agent_proto::PORT_NAME as AGENT_PORT;
use qmp::Qmp;

/// Always on the kernel command line: the console on the microvm's ISA
/// serial port, and a panic that reboots at once (which `-no-reboot`
/// turns into QEMU exiting) instead of hanging.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1";
/// The QMP socket's file name in the runtime dir.
pub const QMP_SOCKET: &str = "qmp.sock";
/// The guest agent's socket (its virtio-serial port) in the runtime dir.
pub const AGENT_SOCKET: &str = "agent.sock";
/// QEMU's pidfile in the runtime dir.
pub const PIDFILE: &str = "qemu.pid";
/// QEMU's own stdout/stderr (not the guest's console) in the VM dir.
pub const LOG_FILE: &str = "qemu.log";
/// How long QEMU gets to set the machine up and answer QMP.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a QEMU started from a saved state gets to load it, once QMP
/// answers (a 77 MB state loads in ≈ 0.1 s here).
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long QEMU gets to answer `query-block` and `block_resize` (which
/// grows a sparse file: metadata only).
const GROW_TIMEOUT: Duration = Duration::from_secs(30);
/// How many log lines an error quotes.
const TAIL_LINES: usize = 8;
/// How long QMP gets to connect (for a pause, a resume or a save), and to
/// answer `stop`, `cont` and `query-status` for a pause or a resume
/// (stopping the vCPUs waits for each to leave the guest).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// The QEMU backend.
#[derive(Clone, Debug)]
pub struct Qemu {
    binary: PathBuf,
    accel: Accel,
    /// The TSC rate a TCG guest is told; the host's, measured when first
    /// needed, unless set.
    tsc_khz: Option<u32>,
    /// Whether QEMU runs under [`sandbox::SANDBOX`]; asked of the binary
    /// when first needed, unless set.
    sandbox: Option<bool>,
}

/// Where one VM's QEMU files go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuFiles {
    pub qmp: PathBuf,
    pub agent: PathBuf,
    pub pidfile: PathBuf,
    pub log: PathBuf,
}

impl QemuFiles {
    /// The QMP and agent sockets and the pidfile in the runtime dir,
    /// QEMU's log in the VM dir.
    pub fn for_spec(spec: &LaunchSpec) -> Result<Self, VmmError> {
        Ok(Self {
            qmp: hypervisor::socket_path(&spec.runtime_dir, QMP_SOCKET)?,
            agent: hypervisor::socket_path(&spec.runtime_dir, AGENT_SOCKET)?,
            pidfile: spec.runtime_dir.join(PIDFILE),
            log: spec.vm_dir.join(LOG_FILE),
        })
    }
}

impl Qemu {
    /// `binary` is `qemu-system-x86_64` (resolved by `select`).
    pub fn new(binary: &Path, accel: Accel) -> Self {
        Self {
            binary: binary.to_path_buf(),
            accel,
            tsc_khz: None,
            sandbox: None,
        }
    }

    /// Runs QEMU with or without its seccomp sandbox, instead of asking
    /// the binary whether it supports one.
    pub fn with_sandbox(mut self, on: bool) -> Self {
        self.sandbox = Some(on);
        self
    }

    /// Whether this QEMU runs under its seccomp sandbox.
    fn sandboxed(&self) -> bool {
        self.sandbox
            .unwrap_or_else(|| match sandbox::support(&self.binary) {
                Ok(()) => true,
                Err(why) => {
                    tracing::warn!(%why, "QEMU runs without its seccomp sandbox");
                    false
                }
            })
    }

    /// Tells TCG guests `khz` instead of the host's measured TSC rate.
    pub fn with_tsc_khz(mut self, khz: u32) -> Self {
        self.tsc_khz = Some(khz);
        self
    }

    /// The kernel command line QEMU passes: ours, then the spec's.
    pub fn kernel_cmdline(&self, spec: &LaunchSpec) -> String {
        let mut line = BASE_CMDLINE.to_owned();
        if self.accel == Accel::Tcg {
            let khz = self.tsc_khz.unwrap_or_else(|| tsc::host_rate().khz);
            line.push(' ');
            line.push_str(&tsc::tcg_cmdline(khz));
        }
        if !spec.cmdline.trim().is_empty() {
            line.push(' ');
            line.push_str(spec.cmdline.trim());
        }
        line
    }

    /// The full argument vector (without the program). Never passed
    /// through a shell; paths inside `-drive`/`-chardev` option strings
    /// have their commas doubled, as QEMU's option parser wants.
    pub fn args(&self, spec: &LaunchSpec, files: &QemuFiles) -> Result<Vec<OsString>, VmmError> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&["-name", &opt_escape(&spec.name)]);
        push(&["-M", "microvm,pit=on,pic=on,rtc=on,isa-serial=on"]);
        push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
        if self.sandboxed() {
            push(&["-sandbox", sandbox::SANDBOX]);
        }
        match self.accel {
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        }
        push(&["-smp", &spec.vcpu.to_string()]);
        push(&["-m", &format!("{}M", spec.memory_mib)]);
        push(&["-kernel", utf8(&spec.vmlinux)?]);
        push(&["-initrd", utf8(&spec.initramfs)?]);
        push(&["-append", &self.kernel_cmdline(spec)]);
        for (i, disk) in spec.disks.iter().enumerate() {
            let ro = if disk.read_only { ",readonly=on" } else { "" };
            let id = drive_id(i);
            push(&[
                "-drive",
                &format!(
                    "id={id},file={},format=raw,if=none{ro}",
                    opt_escape(utf8(&disk.path)?)
                ),
            ]);
            push(&["-device", &format!("virtio-blk-device,drive={id}")]);
        }
        if let Some(net) = &spec.net {
            push(&[
                "-netdev",
                &format!("tap,id=n0,ifname={},script=no,downscript=no", net.tap),
            ]);
            push(&[
                "-device",
                &format!("virtio-net-device,netdev=n0,mac={}", net.mac),
            ]);
        }
        // A file chardev truncates unless told to append: the console log
        // keeps earlier boots. `append=on` is also O_APPEND, which the
        // daemon's rotation (copy, then truncate in place) relies on.
        push(&[
            "-chardev",
            &format!(
                "file,id=console,path={},append=on",
                opt_escape(utf8(&spec.console_log)?)
            ),
        ]);
        push(&["-serial", "chardev:console"]);
        // The agent's port, last among the devices so the others keep
        // their virtio-mmio slots. Its chardev comes before QMP's: QEMU
        // makes chardevs in order, so once QMP answers the socket exists.
        // `wait=off`: QEMU does not wait for a client; the guest reads 0
        // while no host is connected.
        push(&[
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                opt_escape(utf8(&files.agent)?)
            ),
        ]);
        push(&["-device", "virtio-serial-device"]);
        push(&[
            "-device",
            &format!("virtserialport,chardev=agent,name={AGENT_PORT}"),
        ]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=qmp,path={},server=on,wait=off",
                opt_escape(utf8(&files.qmp)?)
            ),
        ]);
        push(&["-mon", "chardev=qmp,mode=control"]);
        push(&["-pidfile", utf8(&files.pidfile)?]);
        // The saved state comes later, over QMP, as an open file: see
        // `migration`.
        if spec.incoming.is_some() {
            push(&["-incoming", "defer"]);
        }
        Ok(a)
    }

    /// Waits for QMP to answer, or QEMU to exit, or the deadline.
    fn await_qmp(
        &self,
        child: &mut Child,
        files: &QemuFiles,
        log_offset: u64,
    ) -> Result<(), VmmError> {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        let program = self.program();
        let exited = |child: &mut Child| -> Option<VmmError> {
            let status = child.try_wait().ok().flatten()?;
            Some(VmmError::Exited {
                program: program.clone(),
                status: status.to_string(),
                log: files.log.clone(),
                tail: process::log_tail(&files.log, log_offset, TAIL_LINES),
            })
        };
        let timed_out = || VmmError::StartTimeout {
            program: program.clone(),
            after: START_TIMEOUT,
            log: files.log.clone(),
            tail: process::log_tail(&files.log, log_offset, TAIL_LINES),
        };
        loop {
            if let Some(e) = exited(child) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            let Ok(stream) = std::os::unix::net::UnixStream::connect(&files.qmp) else {
                std::thread::sleep(POLL);
                continue;
            };
            // QEMU sends the greeting once the machine is built (kernel
            // loaded): an error there closes the socket and QEMU exits.
            let mut gone = || matches!(child.try_wait(), Ok(Some(_)));
            let result = Qmp::handshake(stream, &files.qmp, deadline, &mut gone)
                .and_then(|mut qmp| qmp.query_status(Duration::from_secs(5)).map(drop));
            return result
                .map_err(|e| self.explain(e, child, files, log_offset, (deadline, START_TIMEOUT)));
        }
    }

    /// Loads the saved state at `path` (opened as `file`) into a QEMU
    /// started with `-incoming defer`, and lets the guest run.
    fn restore(
        &self,
        child: &mut Child,
        files: &QemuFiles,
        log_offset: u64,
        file: &std::fs::File,
        path: &Path,
    ) -> Result<(), VmmError> {
        let deadline = Instant::now() + RESTORE_TIMEOUT;
        let mut gone = || matches!(child.try_wait(), Ok(Some(_)));
        let loaded = Qmp::connect(&files.qmp, Duration::from_secs(5))
            .and_then(|mut qmp| migration::load(&mut qmp, file, path, deadline, &mut gone));
        loaded.map_err(|e| self.explain(e, child, files, log_offset, (deadline, RESTORE_TIMEOUT)))
    }

    /// The error of a failed start: QEMU's own words if it is exiting (it
    /// gets 2 s to), a timeout if the deadline (of a wait that long)
    /// passed, else `e`.
    fn explain(
        &self,
        e: VmmError,
        child: &mut Child,
        files: &QemuFiles,
        log_offset: u64,
        (deadline, after): (Instant, Duration),
    ) -> VmmError {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return VmmError::Exited {
                    program: self.program(),
                    status: status.to_string(),
                    log: files.log.clone(),
                    tail: process::log_tail(&files.log, log_offset, TAIL_LINES),
                };
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::sleep(POLL);
        }
        if Instant::now() >= deadline {
            VmmError::StartTimeout {
                program: self.program(),
                after,
                log: files.log.clone(),
                tail: process::log_tail(&files.log, log_offset, TAIL_LINES),
            }
        } else {
            e
        }
    }

    fn program(&self) -> String {
        self.binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.binary.display().to_string())
    }
}

impl Hypervisor for Qemu {
    fn backend(&self) -> Backend {
        Backend::Qemu
    }

    fn start(&self, spec: &LaunchSpec) -> Result<VmHandle, VmmError> {
        hypervisor::validate(spec)?;
        let files = QemuFiles::for_spec(spec)?;
        let args = self.args(spec, &files)?;
        // Opened before anything is spawned: a missing or odd file fails
        // here, with nothing to clean up.
        let incoming = match &spec.incoming {
            Some(path) => Some((state_file::open(path)?, path)),
            None => None,
        };
        hypervisor::ensure_dirs(spec)?;
        hypervisor::remove_stale(&files.qmp)?;
        hypervisor::remove_stale(&files.agent)?;
        let console_offset = process::file_len(&spec.console_log);
        let log_offset = process::file_len(&files.log);
        let mut child = process::spawn_detached(&self.binary, &args, &files.log)?;
        let Some(start_time) = process::start_time_of(&child) else {
            // Exited before we could even look at it.
            let _ = child.wait();
            return Err(VmmError::Exited {
                program: self.program(),
                status: "at once".into(),
                log: files.log.clone(),
                tail: process::log_tail(&files.log, log_offset, TAIL_LINES),
            });
        };
        // QEMU binds its sockets with the daemon's umask; the runtime dir
        // is 0700 (ensure_dirs), and the agent's socket, a root shell in
        // the guest, is made 0600 here, once QMP answering proves QEMU
        // has made it (chardevs are made in order, the agent's first).
        let started = self
            .await_qmp(&mut child, &files, log_offset)
            .and_then(|()| {
                std::fs::set_permissions(&files.agent, std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| VmmError::Io {
                        what: "restricting the agent socket",
                        path: files.agent.clone(),
                        source,
                    })
            })
            .and_then(|()| match &incoming {
                Some((file, path)) => self.restore(&mut child, &files, log_offset, file, path),
                None => Ok(()),
            });
        if let Err(e) = started {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let handle = VmHandle {
            backend: Backend::Qemu,
            pid: child.id(),
            start_time,
            control_socket: files.qmp,
            console_log: spec.console_log.clone(),
            console_offset,
        };
        process::reap_in_background(child);
        Ok(handle)
    }

    fn is_running(&self, handle: &VmHandle) -> bool {
        process::is_alive(handle.pid, handle.start_time)
    }

    fn stop(&self, handle: &VmHandle, grace: Duration) -> Result<(), VmmError> {
        process::stop_sequence(handle, grace, || {
            // microvm's ACPI power button reaches a guest that listens
            // (systemd-logind); one that does not is signalled after grace.
            // A paused guest cannot hear it: `cont` first (a no-op on a
            // running VM).
            if let Ok(mut qmp) = Qmp::connect(&handle.control_socket, Duration::from_secs(2)) {
                let _ = qmp.execute("cont", None, Duration::from_secs(2));
                let _ = qmp.execute("system_powerdown", None, Duration::from_secs(2));
            }
        })
    }

    fn kill(&self, handle: &VmHandle, signal: i32) -> Result<(), VmmError> {
        process::send_signal(handle, process::signal_from(signal)?)
    }

    fn pause(&self, handle: &VmHandle) -> Result<(), VmmError> {
        Qmp::connect(&handle.control_socket, CONTROL_TIMEOUT)?.pause(CONTROL_TIMEOUT)
    }

    fn resume(&self, handle: &VmHandle) -> Result<(), VmmError> {
        Qmp::connect(&handle.control_socket, CONTROL_TIMEOUT)?.resume(CONTROL_TIMEOUT)
    }

    fn agent_socket(&self, runtime_dir: &Path) -> Option<PathBuf> {
        Some(runtime_dir.join(AGENT_SOCKET))
    }

    /// QMP `block_resize` of the drive, once `query-block` shows it
    /// holds `path`: QEMU grows the file it has open and raises
    /// virtio-blk's configuration change. Running or paused (`stop`)
    /// alike. After [`Hypervisor::save_state`] (`postmigrate`) QEMU has
    /// let go of its disks until `cont`, and QEMU 7.2 aborts on a
    /// `block_resize` then: refused here until the VM is resumed.
    fn grow_disk(
        &self,
        handle: &VmHandle,
        disk: usize,
        path: &Path,
        bytes: u64,
    ) -> Result<(), VmmError> {
        hypervisor::check_growth(path, bytes)?;
        let failed = |message: String| VmmError::Grow {
            path: path.to_path_buf(),
            bytes,
            message,
        };
        let id = drive_id(disk);
        let mut qmp = Qmp::connect(&handle.control_socket, CONTROL_TIMEOUT)?;
        let status = qmp.query_status(CONTROL_TIMEOUT)?;
        if !matches!(status.as_str(), "running" | "paused") {
            return Err(failed(format!(
                "the VM is {status}, not running or paused: its disks are not QEMU's \
                 to change now (after a saved state, resume it first)"
            )));
        }
        check_drive(&mut qmp, &id, path).map_err(failed)?;
        qmp.execute(
            "block_resize",
            Some(serde_json::json!({ "device": id, "size": bytes })),
            GROW_TIMEOUT,
        )
        .map_err(|e| failed(e.to_string()))?;
        Ok(())
    }

    /// A pause (QMP `stop`), then QEMU's migration stream into `dest` (see
    /// [`migration`]). Afterwards QEMU says `postmigrate`: paused, its
    /// disks flushed and released; [`Hypervisor::resume`] (`cont`) runs
    /// the guest again.
    fn save_state(
        &self,
        handle: &VmHandle,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SavedState, VmmError> {
        let started = Instant::now();
        let deadline = started
            .checked_add(timeout)
            .unwrap_or(started + Duration::from_secs(24 * 3600));
        if !self.is_running(handle) {
            return Err(VmmError::State {
                action: state_file::SAVING,
                path: dest.to_path_buf(),
                message: format!("QEMU (pid {}) is not running", handle.pid),
            });
        }
        let mut qmp = Qmp::connect(&handle.control_socket, timeout.min(CONTROL_TIMEOUT))?;
        migration::save(&mut qmp, dest, deadline)
    }
}

/// The id of the drive of `spec.disks[index]`: its block backend's name
/// in QMP (`query-block`'s `device`, `block_resize`'s `device`).
pub fn drive_id(index: usize) -> String {
    format!("d{index}")
}

/// Checks that QEMU's drive `id` holds the file at `path` (`query-block`),
/// so a wrong index never grows another disk.
fn check_drive(qmp: &mut Qmp, id: &str, path: &Path) -> Result<(), String> {
    let blocks = qmp
        .execute("query-block", None, GROW_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let drives = blocks.as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(drive) = drives.iter().find(|b| b["device"] == id) else {
        return Err(format!("QEMU has no drive {id}"));
    };
    let file = drive["inserted"]["file"].as_str().unwrap_or_default();
    if Path::new(file) != path {
        return Err(format!("QEMU's drive {id} is {file:?}, not this file"));
    }
    Ok(())
}

/// QEMU option values separate options with commas; a literal comma is
/// written twice.
fn opt_escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn utf8(path: &Path) -> Result<&str, VmmError> {
    path.to_str().ok_or_else(|| {
        VmmError::Spec(format!(
            "path {} is not valid UTF-8: QEMU options need text",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::tests::sample_spec;

    fn args(accel: Accel, spec: &LaunchSpec) -> Vec<String> {
        let q = Qemu::new(Path::new("/usr/bin/qemu-system-x86_64"), accel)
            .with_tsc_khz(2_596_125)
            .with_sandbox(true);
        let files = QemuFiles::for_spec(spec).unwrap();
        q.args(spec, &files)
            .unwrap()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    /// The value after each occurrence of `flag`.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn tcg_command_line() {
        let spec = sample_spec();
        let a = args(Accel::Tcg, &spec);
        assert_eq!(
            values(&a, "-M"),
            ["microvm,pit=on,pic=on,rtc=on,isa-serial=on"]
        );
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing: {a:?}");
        }
        assert!(!a.iter().any(|x| x == "-daemonize"));
        assert_eq!(values(&a, "-accel"), ["tcg"]);
        assert_eq!(values(&a, "-cpu"), ["max"]);
        assert_eq!(values(&a, "-smp"), ["2"]);
        assert_eq!(values(&a, "-m"), ["1024M"]);
        assert_eq!(values(&a, "-kernel"), ["/var/lib/banger/kernels/k/vmlinux"]);
        assert_eq!(
            values(&a, "-initrd"),
            ["/var/lib/banger/kernels/k/initramfs.cpio.gz"]
        );
        assert_eq!(
            values(&a, "-append"),
            [
                "console=ttyS0 panic=-1 tsc_early_khz=2596125 tsc=reliable no_timer_check lpj=10384500 \
              banger.base=/dev/vda banger.system=/dev/vdb"
            ]
        );
        assert_eq!(
            values(&a, "-chardev"),
            [
                "file,id=console,path=/var/lib/banger/vms/dev-box/console.log,append=on",
                "socket,id=agent,path=/run/banger/vm/dev-box/agent.sock,server=on,wait=off",
                "socket,id=qmp,path=/run/banger/vm/dev-box/qmp.sock,server=on,wait=off",
            ]
        );
        assert_eq!(
            values(&a, "-device")[values(&a, "-device").len() - 2..],
            [
                "virtio-serial-device",
                "virtserialport,chardev=agent,name=banger.agent"
            ]
        );
        assert_eq!(values(&a, "-serial"), ["chardev:console"]);
        assert_eq!(values(&a, "-mon"), ["chardev=qmp,mode=control"]);
        assert_eq!(values(&a, "-pidfile"), ["/run/banger/vm/dev-box/qemu.pid"]);
        assert_eq!(values(&a, "-name"), ["dev-box"]);
        assert_eq!(values(&a, "-sandbox"), [sandbox::SANDBOX]);
        let unconfined = Qemu::new(Path::new("/usr/bin/qemu-system-x86_64"), Accel::Tcg)
            .with_tsc_khz(1)
            .with_sandbox(false)
            .args(&spec, &QemuFiles::for_spec(&spec).unwrap())
            .unwrap();
        assert!(!unconfined.iter().any(|x| x == "-sandbox"));
    }

    #[test]
    fn kvm_command_line_has_no_tcg_flags() {
        let a = args(Accel::Kvm, &sample_spec());
        assert_eq!(values(&a, "-accel"), ["kvm"]);
        assert_eq!(values(&a, "-cpu"), ["host"]);
        let append = values(&a, "-append")[0];
        assert_eq!(
            append,
            "console=ttyS0 panic=-1 banger.base=/dev/vda banger.system=/dev/vdb"
        );
    }

    #[test]
    fn disks_in_order_with_the_base_read_only() {
        let a = args(Accel::Tcg, &sample_spec());
        assert_eq!(
            values(&a, "-drive"),
            [
                "id=d0,file=/var/lib/banger/images/i/rootfs.ext4,format=raw,if=none,readonly=on",
                "id=d1,file=/var/lib/banger/vms/dev-box/system.ext4,format=raw,if=none",
                "id=d2,file=/var/lib/banger/vms/dev-box/work.ext4,format=raw,if=none",
            ]
        );
        assert_eq!(
            values(&a, "-device")[..3],
            [
                "virtio-blk-device,drive=d0",
                "virtio-blk-device,drive=d1",
                "virtio-blk-device,drive=d2"
            ]
        );
        // Each -device follows its own -drive.
        let d0 = a.iter().position(|x| x.starts_with("id=d0,")).unwrap();
        assert_eq!(a[d0 + 2], "virtio-blk-device,drive=d0");
    }

    #[test]
    fn tap_network_and_none() {
        let spec = sample_spec();
        let a = args(Accel::Tcg, &spec);
        assert_eq!(
            values(&a, "-netdev"),
            ["tap,id=n0,ifname=bgr-dev-box,script=no,downscript=no"]
        );
        assert_eq!(
            values(&a, "-device")[3],
            "virtio-net-device,netdev=n0,mac=52:54:00:ab:cd:ef"
        );
        let mut bare = spec;
        bare.net = None;
        bare.disks.clear();
        let a = args(Accel::Tcg, &bare);
        assert!(values(&a, "-netdev").is_empty());
        // The agent's port only.
        assert_eq!(values(&a, "-device").len(), 2);
        assert!(values(&a, "-drive").is_empty());
    }

    #[test]
    fn a_restore_defers_the_incoming_migration() {
        let mut spec = sample_spec();
        assert!(values(&args(Accel::Tcg, &spec), "-incoming").is_empty());
        spec.incoming = Some("/var/lib/banger/templates/t/state,x".into());
        let a = args(Accel::Tcg, &spec);
        // The file comes over QMP later: its path is never an argument.
        assert_eq!(values(&a, "-incoming"), ["defer"]);
        assert!(!a.iter().any(|x| x.contains("templates")), "{a:?}");
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut spec = sample_spec();
        spec.disks[1].path = "/vms/a,b/system.ext4".into();
        spec.console_log = "/vms/a,b/console.log".into();
        let a = args(Accel::Tcg, &spec);
        assert!(values(&a, "-drive")[1].starts_with("id=d1,file=/vms/a,,b/system.ext4,format=raw"));
        assert!(values(&a, "-chardev")[0].contains("path=/vms/a,,b/console.log,append=on"));
    }

    #[test]
    fn the_agent_channel_is_the_serial_socket() {
        let q = Qemu::new(Path::new("/usr/bin/qemu-system-x86_64"), Accel::Tcg);
        let run = Path::new("/run/banger/vm/x");
        assert_eq!(
            q.agent_channel(run),
            Some(banger_agent_proto::AgentChannel::Serial(
                run.join(AGENT_SOCKET)
            ))
        );
    }
}
