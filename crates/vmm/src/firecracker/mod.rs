//! The Firecracker backend: `firecracker --api-sock` spawned detached,
//! configured through its API (machine, boot source, drives, network),
//! then `InstanceStart`; or, to resume a saved state, given the snapshot
//! to load instead. Its serial console and its own log both go to its
//! stdout, which is appended to the VM's console log.

pub mod api;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use banger_agent_proto::{AgentChannel, VSOCK_PORT};

use crate::error::VmmError;
use crate::hypervisor::{self, Hypervisor, LaunchSpec, SavedState, VmHandle};
use crate::process::{self, POLL};
use crate::select::Backend;
use crate::state_file::{self, SAVING};
use api::{
    ActionType, ApiClient, BootSource, Drive, InstanceActionInfo, MachineConfiguration,
    MemoryBackend, MemoryBackendType, NetworkInterface, NetworkOverride, PartialDrive,
    SnapshotCreateParams, SnapshotLoadParams, SnapshotType, Vm, VmState, Vsock, VsockOverride,
};

/// Always on the kernel command line: the serial console, a reboot
/// through the keyboard controller (which makes Firecracker exit), an
/// immediate reboot on panic, and no PCI probing (Firecracker has none).
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off";
/// The API socket's file name in the runtime dir.
pub const API_SOCKET: &str = "firecracker.sock";
/// How long Firecracker gets to open its API socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API request may take (`InstanceStart` loads the kernel).
pub const API_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a pause or resume request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// The guest's network interface id in the API.
pub const IFACE_ID: &str = "eth0";
/// The guest's vsock context id (2 is the host; 3 is the first guest's).
pub const GUEST_CID: u32 = 3;
/// The Unix socket, in the runtime dir, that Firecracker maps the guest's
/// vsock to.
pub const VSOCK_SOCKET: &str = "vsock.sock";
const TAIL_LINES: usize = 8;
/// What [`Firecracker::memory_file`] appends to a saved state's path.
pub const MEMORY_SUFFIX: &str = ".mem";

/// The Firecracker backend.
#[derive(Clone, Debug)]
pub struct Firecracker {
    binary: PathBuf,
}

impl Firecracker {
    /// `binary` is the `firecracker` executable (resolved by `select`).
    pub fn new(binary: &Path) -> Self {
        Self {
            binary: binary.to_path_buf(),
        }
    }

    /// The kernel command line Firecracker passes: ours, then the spec's.
    pub fn kernel_cmdline(spec: &LaunchSpec) -> String {
        let extra = spec.cmdline.trim();
        if extra.is_empty() {
            BASE_CMDLINE.to_owned()
        } else {
            format!("{BASE_CMDLINE} {extra}")
        }
    }

    /// The process's arguments (everything else goes through the API).
    pub fn args(spec: &LaunchSpec, api_socket: &Path) -> Vec<OsString> {
        vec![
            "--api-sock".into(),
            api_socket.into(),
            "--id".into(),
            spec.name.clone().into(),
        ]
    }

    /// The configuration requests, in order, as (path, JSON body).
    pub fn configuration(spec: &LaunchSpec) -> Result<Vec<(String, serde_json::Value)>, VmmError> {
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| VmmError::Spec(format!("a path is not valid UTF-8: {e}")))
        };
        let mut calls = vec![
            (
                "/machine-config".to_owned(),
                json(serde_json::to_value(MachineConfiguration {
                    vcpu_count: spec.vcpu,
                    mem_size_mib: spec.memory_mib,
                    smt: false,
                }))?,
            ),
            (
                "/boot-source".to_owned(),
                json(serde_json::to_value(BootSource {
                    kernel_image_path: spec.vmlinux.clone(),
                    initrd_path: Some(spec.initramfs.clone()),
                    boot_args: Self::kernel_cmdline(spec),
                }))?,
            ),
        ];
        for (i, disk) in spec.disks.iter().enumerate() {
            let id = drive_id(i);
            calls.push((
                format!("/drives/{id}"),
                // Not a root device: banger-init in the initramfs finds
                // and mounts the disks itself.
                json(serde_json::to_value(Drive {
                    drive_id: id,
                    path_on_host: disk.path.clone(),
                    is_root_device: false,
                    is_read_only: disk.read_only,
                }))?,
            ));
        }
        if let Some(net) = &spec.net {
            calls.push((
                format!("/network-interfaces/{IFACE_ID}"),
                json(serde_json::to_value(NetworkInterface {
                    iface_id: IFACE_ID.into(),
                    host_dev_name: net.tap.clone(),
                    guest_mac: Some(net.mac.clone()),
                }))?,
            ));
        }
        // The guest channel for banger's agent: Firecracker maps the
        // guest's vsock to a Unix socket here, no host vsock module needed.
        calls.push((
            "/vsock".to_owned(),
            json(serde_json::to_value(Vsock {
                guest_cid: GUEST_CID,
                uds_path: spec.runtime_dir.join(VSOCK_SOCKET),
            }))?,
        ));
        Ok(calls)
    }

    /// Where a saved state's memory goes: beside `dest`, `dest` plus
    /// [`MEMORY_SUFFIX`]. (`dest` itself holds the device state.)
    pub fn memory_file(dest: &Path) -> PathBuf {
        let mut path = dest.as_os_str().to_owned();
        path.push(MEMORY_SUFFIX);
        PathBuf::from(path)
    }

    /// The requests that resume `spec.incoming`, in order, as (method,
    /// path, JSON body), instead of the boot configuration: load the
    /// snapshot paused, with the spec's TAP and vsock socket in place of
    /// the saved VM's; point each drive at the spec's disk (Firecracker
    /// reopens the saved VM's paths at load, and has no override for
    /// drives); then let it run.
    pub fn restore_requests(
        spec: &LaunchSpec,
        state: &Path,
    ) -> Result<Vec<(&'static str, String, serde_json::Value)>, VmmError> {
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| VmmError::Spec(format!("a path is not valid UTF-8: {e}")))
        };
        let load = SnapshotLoadParams {
            snapshot_path: state.to_path_buf(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: Self::memory_file(state),
            },
            resume_vm: false,
            network_overrides: spec
                .net
                .iter()
                .map(|net| NetworkOverride {
                    iface_id: IFACE_ID.into(),
                    host_dev_name: net.tap.clone(),
                })
                .collect(),
            vsock_override: Some(VsockOverride {
                uds_path: spec.runtime_dir.join(VSOCK_SOCKET),
            }),
        };
        let mut calls = vec![(
            "PUT",
            "/snapshot/load".to_owned(),
            json(serde_json::to_value(load))?,
        )];
        for (i, disk) in spec.disks.iter().enumerate() {
            let id = drive_id(i);
            calls.push((
                "PATCH",
                format!("/drives/{id}"),
                json(serde_json::to_value(PartialDrive {
                    drive_id: id,
                    path_on_host: disk.path.clone(),
                }))?,
            ));
        }
        calls.push((
            "PATCH",
            "/vm".to_owned(),
            json(serde_json::to_value(Vm {
                state: VmState::Resumed,
            }))?,
        ));
        Ok(calls)
    }

    /// Spawns Firecracker and waits for its API socket. The child is
    /// killed again if the socket never answers.
    fn spawn(&self, spec: &LaunchSpec) -> Result<Spawned, VmmError> {
        hypervisor::validate(spec)?;
        let socket = hypervisor::socket_path(&spec.runtime_dir, API_SOCKET)?;
        hypervisor::ensure_dirs(spec)?;
        // Firecracker refuses to start when its socket path exists.
        hypervisor::remove_stale(&socket)?;
        let console_offset = process::file_len(&spec.console_log);
        let mut child =
            process::spawn_detached(&self.binary, &Self::args(spec, &socket), &spec.console_log)?;
        let mut spawned = Spawned {
            start_time: process::start_time_of(&child).unwrap_or(0),
            child: None,
            socket,
            log: spec.console_log.clone(),
            console_offset,
            program: self.program(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(spawned.exited(status.to_string()));
            }
            if std::os::unix::net::UnixStream::connect(&spawned.socket).is_ok() {
                spawned.child = Some(child);
                return Ok(spawned);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VmmError::StartTimeout {
                    program: spawned.program.clone(),
                    after: START_TIMEOUT,
                    log: spawned.log.clone(),
                    tail: process::log_tail(&spawned.log, console_offset, TAIL_LINES),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn program(&self) -> String {
        self.binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.binary.display().to_string())
    }
}

/// A Firecracker process whose API socket answers.
struct Spawned {
    child: Option<Child>,
    start_time: u64,
    socket: PathBuf,
    log: PathBuf,
    console_offset: u64,
    program: String,
}

impl Spawned {
    fn api(&self) -> ApiClient {
        ApiClient::new(&self.socket, API_TIMEOUT)
    }

    /// Sends the configuration, each request accepted before the next.
    fn configure(&self, spec: &LaunchSpec) -> Result<(), VmmError> {
        let api = self.api();
        for (path, body) in Firecracker::configuration(spec)? {
            api.put(&path, &body)?;
        }
        Ok(())
    }

    /// Resumes the saved state at `state` instead of configuring a boot.
    fn restore(&self, spec: &LaunchSpec, state: &Path) -> Result<(), VmmError> {
        let api = self.api();
        for (method, path, body) in Firecracker::restore_requests(spec, state)? {
            match method {
                "PATCH" => api.patch(&path, &body)?,
                _ => api.put(&path, &body)?,
            }
        }
        Ok(())
    }

    fn instance_start(&self) -> Result<(), VmmError> {
        self.api().put(
            "/actions",
            &InstanceActionInfo {
                action_type: ActionType::InstanceStart,
            },
        )
    }

    fn exited(&self, status: String) -> VmmError {
        VmmError::Exited {
            program: self.program.clone(),
            status,
            log: self.log.clone(),
            tail: process::log_tail(&self.log, self.console_offset, TAIL_LINES),
        }
    }

    /// On a failed start: if Firecracker died, its own words say why
    /// better than the API error; either way, no process stays behind.
    fn abandon(mut self, error: VmmError) -> VmmError {
        let Some(mut child) = self.child.take() else {
            return error;
        };
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                return self.exited(status.to_string());
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        error
    }

    fn into_handle(mut self) -> VmHandle {
        let child = self.child.take().expect("spawned child");
        let handle = VmHandle {
            backend: Backend::Firecracker,
            pid: child.id(),
            start_time: self.start_time,
            control_socket: self.socket.clone(),
            console_log: self.log.clone(),
            console_offset: self.console_offset,
        };
        process::reap_in_background(child);
        handle
    }
}

impl Hypervisor for Firecracker {
    fn backend(&self) -> Backend {
        Backend::Firecracker
    }

    fn start(&self, spec: &LaunchSpec) -> Result<VmHandle, VmmError> {
        if let Some(state) = &spec.incoming {
            // Firecracker opens them itself: check them before spawning.
            state_file::check(state)?;
            state_file::check(&Self::memory_file(state))?;
            // It binds the vsock socket at load; one left by an earlier
            // run of this VM would be in the way.
            hypervisor::remove_stale(&spec.runtime_dir.join(VSOCK_SOCKET))?;
        }
        let spawned = self.spawn(spec)?;
        let started = match &spec.incoming {
            Some(state) => spawned.restore(spec, state),
            None => spawned
                .configure(spec)
                .and_then(|()| spawned.instance_start()),
        };
        match started {
            Ok(()) => Ok(spawned.into_handle()),
            Err(e) => Err(spawned.abandon(e)),
        }
    }

    fn is_running(&self, handle: &VmHandle) -> bool {
        process::is_alive(handle.pid, handle.start_time)
    }

    fn stop(&self, handle: &VmHandle, grace: Duration) -> Result<(), VmmError> {
        process::stop_sequence(handle, grace, || {
            // An i8042 Ctrl-Alt-Del: the guest's init shuts down and the
            // `reboot=k` reboot makes Firecracker exit. A paused guest
            // cannot act on it: resumed first.
            let api = ApiClient::new(&handle.control_socket, Duration::from_secs(2));
            let _ = set_run_state(&api, VmState::Resumed);
            let _ = api.put(
                "/actions",
                &InstanceActionInfo {
                    action_type: ActionType::SendCtrlAltDel,
                },
            );
        })
    }

    fn kill(&self, handle: &VmHandle, signal: i32) -> Result<(), VmmError> {
        process::send_signal(handle, process::signal_from(signal)?)
    }

    fn pause(&self, handle: &VmHandle) -> Result<(), VmmError> {
        let api = ApiClient::new(&handle.control_socket, CONTROL_TIMEOUT);
        set_run_state(&api, VmState::Paused)
    }

    fn resume(&self, handle: &VmHandle) -> Result<(), VmmError> {
        let api = ApiClient::new(&handle.control_socket, CONTROL_TIMEOUT);
        set_run_state(&api, VmState::Resumed)
    }

    /// The agent listens on vsock port [`VSOCK_PORT`], which the host
    /// reaches through the vsock socket configured at start.
    fn agent_channel(&self, runtime_dir: &Path) -> Option<AgentChannel> {
        Some(AgentChannel::Vsock {
            uds: runtime_dir.join(VSOCK_SOCKET),
            port: VSOCK_PORT,
        })
    }

    /// `PATCH /vm` `Paused` (unless `GET /` says it is), then a full
    /// `PUT /snapshot/create`: the device state to `dest`, the memory to
    /// [`Firecracker::memory_file`]`(dest)`. Both files are created by
    /// banger first (new, 0600), which Firecracker then fills.
    fn save_state(
        &self,
        handle: &VmHandle,
        dest: &Path,
        timeout: Duration,
    ) -> Result<SavedState, VmmError> {
        let started = Instant::now();
        if !self.is_running(handle) {
            return Err(VmmError::State {
                action: SAVING,
                path: dest.to_path_buf(),
                message: format!("Firecracker (pid {}) is not running", handle.pid),
            });
        }
        let files = self.state_files(dest);
        let mut created = Vec::new();
        for path in &files {
            match state_file::create(path) {
                Ok(_) => created.push(path.clone()),
                Err(e) => {
                    state_file::remove(&created);
                    return Err(e);
                }
            }
        }
        let saved = save_snapshot(handle, &files, started, timeout).and_then(|()| {
            let mut bytes = 0;
            for path in &files {
                bytes += std::fs::metadata(path)
                    .map_err(|source| VmmError::Io {
                        what: "reading the saved state",
                        path: path.clone(),
                        source,
                    })?
                    .len();
            }
            Ok(SavedState {
                files: files.clone(),
                bytes,
                took: started.elapsed(),
            })
        });
        if saved.is_err() {
            state_file::remove(&files);
        }
        saved
    }

    /// The file grows first (Firecracker has no resize of its own), then
    /// `PATCH /drives/{id}` with the same `path_on_host`: Firecracker
    /// opens it again, reads its size and raises virtio-blk's
    /// configuration change. Running or paused alike. If the request
    /// fails the file stays grown and the guest may not know: the same
    /// call again tells it.
    fn grow_disk(
        &self,
        handle: &VmHandle,
        disk: usize,
        path: &Path,
        bytes: u64,
    ) -> Result<(), VmmError> {
        use std::os::unix::fs::OpenOptionsExt;
        hypervisor::check_growth(path, bytes)?;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .and_then(|file| file.set_len(bytes))
            .map_err(|e| VmmError::Grow {
                path: path.to_path_buf(),
                bytes,
                message: e.to_string(),
            })?;
        let id = drive_id(disk);
        ApiClient::new(&handle.control_socket, CONTROL_TIMEOUT).patch(
            &format!("/drives/{id}"),
            &PartialDrive {
                drive_id: id.clone(),
                path_on_host: path.to_path_buf(),
            },
        )
    }

    /// The device state, then the memory.
    fn state_files(&self, dest: &Path) -> Vec<PathBuf> {
        vec![dest.to_path_buf(), Self::memory_file(dest)]
    }
}

/// The API's drive id of `spec.disks[index]`.
pub fn drive_id(index: usize) -> String {
    format!("d{index}")
}

/// Brings a started VM to `state` with `PATCH /vm`, as `GET /` then
/// reports it (`Paused` or `Running`); asks first, so a VM already there
/// gets no request (whether Firecracker accepts a repeated one has varied
/// between versions).
fn set_run_state(api: &ApiClient, state: VmState) -> Result<(), VmmError> {
    let want = match state {
        VmState::Paused => "Paused",
        VmState::Resumed => "Running",
    };
    if api.instance_info()?.state == want {
        return Ok(());
    }
    api.patch("/vm", &Vm { state })?;
    let now = api.instance_info()?.state;
    if now == want {
        Ok(())
    } else {
        Err(VmmError::FirecrackerApi {
            method: "PATCH",
            path: "/vm".into(),
            status: None,
            message: format!("accepted {state:?}, but the VM is {now:?}, not {want:?}"),
        })
    }
}

/// Pauses the VM if it runs and writes a full snapshot into `files`
/// (state, memory); each request within what is left of `timeout`.
fn save_snapshot(
    handle: &VmHandle,
    files: &[PathBuf],
    started: Instant,
    timeout: Duration,
) -> Result<(), VmmError> {
    let api = |what: Duration| {
        let left = timeout.saturating_sub(started.elapsed());
        ApiClient::new(&handle.control_socket, left.min(what).max(POLL))
    };
    set_run_state(&api(CONTROL_TIMEOUT), VmState::Paused)?;
    let (Some(state), Some(memory)) = (files.first(), files.get(1)) else {
        return Err(VmmError::Spec("a snapshot needs two files".into()));
    };
    api(timeout).put(
        "/snapshot/create",
        &SnapshotCreateParams {
            snapshot_type: SnapshotType::Full,
            snapshot_path: state.clone(),
            mem_file_path: memory.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::tests::sample_spec;
    use serde_json::json;

    #[test]
    fn configuration_requests_in_order() {
        let spec = sample_spec();
        let calls = Firecracker::configuration(&spec).unwrap();
        let paths: Vec<&str> = calls.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/machine-config",
                "/boot-source",
                "/drives/d0",
                "/drives/d1",
                "/drives/d2",
                "/network-interfaces/eth0",
                "/vsock"
            ]
        );
        assert_eq!(
            calls[0].1,
            json!({"vcpu_count": 2, "mem_size_mib": 1024, "smt": false})
        );
        assert_eq!(
            calls[1].1,
            json!({
                "kernel_image_path": "/var/lib/banger/kernels/k/vmlinux",
                "initrd_path": "/var/lib/banger/kernels/k/initramfs.cpio.gz",
                "boot_args": "console=ttyS0 reboot=k panic=-1 pci=off banger.base=/dev/vda banger.system=/dev/vdb"
            })
        );
        assert_eq!(
            calls[2].1,
            json!({
                "drive_id": "d0",
                "path_on_host": "/var/lib/banger/images/i/rootfs.ext4",
                "is_root_device": false,
                "is_read_only": true
            })
        );
        assert_eq!(calls[3].1["is_read_only"], json!(false));
        assert_eq!(
            calls[5].1,
            json!({"iface_id": "eth0", "host_dev_name": "bgr-dev-box", "guest_mac": "52:54:00:ab:cd:ef"})
        );
        let args: Vec<String> = Firecracker::args(&spec, Path::new("/run/x/firecracker.sock"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            ["--api-sock", "/run/x/firecracker.sock", "--id", "dev-box"]
        );
    }

    #[test]
    fn a_restore_loads_repoints_and_resumes() {
        let mut spec = sample_spec();
        spec.incoming = Some("/var/lib/banger/templates/t/state".into());
        let state = spec.incoming.clone().unwrap();
        assert_eq!(
            Firecracker::memory_file(&state),
            PathBuf::from("/var/lib/banger/templates/t/state.mem")
        );
        let fc = Firecracker::new(Path::new("/usr/bin/firecracker"));
        assert_eq!(
            fc.state_files(&state),
            [state.clone(), Firecracker::memory_file(&state)]
        );
        let calls = Firecracker::restore_requests(&spec, &state).unwrap();
        let paths: Vec<String> = calls.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
        assert_eq!(
            paths,
            [
                "PUT /snapshot/load",
                "PATCH /drives/d0",
                "PATCH /drives/d1",
                "PATCH /drives/d2",
                "PATCH /vm"
            ]
        );
        assert_eq!(
            calls[0].2,
            json!({
                "snapshot_path": "/var/lib/banger/templates/t/state",
                "mem_backend": {
                    "backend_type": "File",
                    "backend_path": "/var/lib/banger/templates/t/state.mem"
                },
                "resume_vm": false,
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "bgr-dev-box"}],
                "vsock_override": {"uds_path": "/run/banger/vm/dev-box/vsock.sock"}
            })
        );
        assert_eq!(
            calls[2].2,
            json!({"drive_id": "d1", "path_on_host": "/var/lib/banger/vms/dev-box/system.ext4"})
        );
        assert_eq!(calls[4].2, json!({"state": "Resumed"}));
        spec.net = None;
        let calls = Firecracker::restore_requests(&spec, &state).unwrap();
        assert!(calls[0].2.get("network_overrides").is_none());
    }

    #[test]
    fn the_agent_channel_is_the_configured_vsock_socket() {
        let spec = sample_spec();
        let calls = Firecracker::configuration(&spec).unwrap();
        let Some((_, vsock)) = calls.iter().find(|(p, _)| p == "/vsock") else {
            panic!("no /vsock request");
        };
        let fc = Firecracker::new(Path::new("/usr/bin/firecracker"));
        let channel = fc.agent_channel(&spec.runtime_dir).unwrap();
        assert_eq!(
            channel,
            AgentChannel::Vsock {
                uds: PathBuf::from(vsock["uds_path"].as_str().unwrap()),
                port: VSOCK_PORT,
            }
        );
        assert_eq!(vsock["guest_cid"], json!(GUEST_CID));
    }

    #[test]
    fn a_missing_binary_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sample_spec();
        spec.vm_dir = dir.path().join("vm");
        spec.runtime_dir = dir.path().join("run");
        spec.console_log = dir.path().join("vm/console.log");
        let fc = Firecracker::new(Path::new("/nonexistent/firecracker"));
        let err = fc.start(&spec).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot run /nonexistent/firecracker: "),
            "{err}"
        );
    }

    /// A spec whose files are all in `d`: a kernel and an initramfs that
    /// are none, three 1 MiB disks, no TAP (the API opens the TAP device
    /// when it is configured).
    fn dummy_spec(d: &Path) -> LaunchSpec {
        let mut spec = sample_spec();
        spec.vm_dir = d.join("vm");
        spec.runtime_dir = d.join("run");
        spec.console_log = d.join("vm/console.log");
        spec.vmlinux = d.join("vmlinux");
        spec.initramfs = d.join("initramfs");
        spec.net = None;
        std::fs::write(&spec.vmlinux, b"not a kernel").unwrap();
        std::fs::write(&spec.initramfs, b"not an initramfs").unwrap();
        for (i, disk) in spec.disks.iter_mut().enumerate() {
            disk.path = d.join(format!("disk{i}.img"));
            std::fs::write(&disk.path, vec![0u8; 1 << 20]).unwrap();
        }
        spec
    }

    /// Against a real Firecracker named by BANGER_TEST_FIRECRACKER: every
    /// configuration request is accepted. `InstanceStart` may fail where
    /// KVM cannot run the guest (PVM, or the dummy kernel used here); its
    /// outcome is printed, not asserted.
    #[test]
    fn real_firecracker_accepts_the_configuration() {
        let Some(binary) = std::env::var_os("BANGER_TEST_FIRECRACKER") else {
            banger_testkit::skip_beyond_ci("BANGER_TEST_FIRECRACKER is not set");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let spec = dummy_spec(dir.path());
        let fc = Firecracker::new(Path::new(&binary));
        let spawned = fc.spawn(&spec).unwrap();
        let info = spawned.api().get("/").unwrap();
        println!("firecracker {info}");
        assert_eq!(info["state"], json!("Not started"));
        let configured = spawned.configure(&spec);
        let started = configured.as_ref().ok().map(|()| spawned.instance_start());
        let handle = spawned.into_handle();
        let api = ApiClient::new(&handle.control_socket, API_TIMEOUT);
        if let Some(Ok(())) = started {
            fc.pause(&handle).unwrap();
            assert_eq!(api.instance_info().unwrap().state, "Paused");
            fc.pause(&handle).unwrap();
            fc.resume(&handle).unwrap();
            assert_eq!(api.instance_info().unwrap().state, "Running");
            fc.pause(&handle).unwrap();
        } else {
            // Not started, Firecracker refuses to pause: for that reason,
            // and not because of the request's body.
            let err = fc.pause(&handle).unwrap_err().to_string();
            println!("pause before InstanceStart: {err}");
            for bad in ["unknown variant", "unknown field", "missing field"] {
                assert!(!err.contains(bad), "{err}");
            }
            banger_testkit::skip_beyond_ci(format!(
                "pausing a running Firecracker VM (InstanceStart failed here: {started:?})"
            ));
        }
        // Stopped paused, when it started: stop resumes it first.
        fc.stop(&handle, Duration::from_millis(200)).unwrap();
        assert!(!fc.is_running(&handle));
        configured.unwrap();
        println!("InstanceStart: {started:?}");
        println!(
            "log:\n{}",
            std::fs::read_to_string(&spec.console_log).unwrap_or_default()
        );
    }

    /// Against a real Firecracker named by BANGER_TEST_FIRECRACKER: a
    /// disk grown under a started VM is accepted. Where KVM cannot start
    /// the guest, the request is still sent, and must be refused for the
    /// VM's state, not for its body.
    #[test]
    fn real_firecracker_takes_a_grown_disk() {
        let Some(binary) = std::env::var_os("BANGER_TEST_FIRECRACKER") else {
            banger_testkit::skip_beyond_ci("BANGER_TEST_FIRECRACKER is not set");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let spec = dummy_spec(dir.path());
        let fc = Firecracker::new(Path::new(&binary));
        let spawned = fc.spawn(&spec).unwrap();
        let started = spawned
            .configure(&spec)
            .and_then(|()| spawned.instance_start());
        let handle = spawned.into_handle();
        let work = spec.disks[2].path.clone();
        let grown = fc.grow_disk(&handle, 2, &work, 4 << 20);
        fc.stop(&handle, Duration::from_millis(200)).unwrap();
        println!("InstanceStart: {started:?}; grow: {grown:?}");
        match (started, grown) {
            (Ok(()), grown) => {
                grown.unwrap();
                assert_eq!(std::fs::metadata(&work).unwrap().len(), 4 << 20);
            }
            (Err(_), Err(e)) => {
                let m = e.to_string();
                for bad in ["unknown field", "missing field", "unknown variant"] {
                    assert!(!m.contains(bad), "the body was refused: {m}");
                }
                banger_testkit::skip_beyond_ci(format!(
                    "growing a running Firecracker VM's disk (InstanceStart failed here): {m}"
                ));
            }
            (Err(e), Ok(())) => panic!("a VM that did not start took a grown disk: {e}"),
        }
    }

    /// Against a real Firecracker named by BANGER_TEST_FIRECRACKER: the
    /// snapshot requests' bodies parse. Where KVM cannot boot a guest no
    /// VM runs to pause or snapshot, so each request is sent where
    /// Firecracker must refuse it for its state or its files, never for
    /// its body: an unknown or missing field would be refused first.
    #[test]
    fn real_firecracker_parses_the_snapshot_requests() {
        let Some(binary) = std::env::var_os("BANGER_TEST_FIRECRACKER") else {
            banger_testkit::skip_beyond_ci("BANGER_TEST_FIRECRACKER is not set");
            return;
        };
        let body_refused = |e: &VmmError| {
            let m = e.to_string();
            [
                "unknown field",
                "missing field",
                "unknown variant",
                "deserializ",
            ]
            .iter()
            .any(|w| m.contains(w))
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let fresh = |name: &str| {
            let mut spec = sample_spec();
            spec.name = name.into();
            spec.vm_dir = d.join(name);
            spec.runtime_dir = d.join(format!("{name}-run"));
            spec.console_log = d.join(name).join("console.log");
            spec.net = None;
            let fc = Firecracker::new(Path::new(&binary));
            let spawned = fc.spawn(&spec).unwrap();
            (fc, spec, spawned)
        };

        // Before a boot: PATCH /vm and /snapshot/create are refused for the
        // state, PATCH /drives too.
        let (fc, _, spawned) = fresh("fc-pre");
        let api = spawned.api();
        let pause = api.patch(
            "/vm",
            &Vm {
                state: VmState::Paused,
            },
        );
        let create = api.put(
            "/snapshot/create",
            &SnapshotCreateParams {
                snapshot_type: SnapshotType::Full,
                snapshot_path: d.join("state"),
                mem_file_path: d.join("state.mem"),
            },
        );
        let patch = api.patch(
            "/drives/d0",
            &PartialDrive {
                drive_id: "d0".into(),
                path_on_host: d.join("disk"),
            },
        );
        let handle = spawned.into_handle();
        fc.stop(&handle, Duration::from_millis(200)).unwrap();
        for (what, result) in [
            ("PATCH /vm", pause),
            ("PUT /snapshot/create", create),
            ("PATCH /drives", patch),
        ] {
            println!("{what} before boot: {result:?}");
            let err = result.expect_err("refused before a boot");
            assert!(!body_refused(&err), "{what}: the body was refused: {err}");
        }

        // A load of a file that is no snapshot, with every override: refused
        // for the file (and Firecracker ends itself, as documented).
        let (fc, mut spec, spawned) = fresh("fc-load");
        let state = d.join("not-a-snapshot");
        std::fs::write(&state, b"not a snapshot").unwrap();
        std::fs::write(Firecracker::memory_file(&state), vec![0u8; 4096]).unwrap();
        spec.net = Some(crate::hypervisor::NetSpec {
            tap: "bgr-none".into(),
            mac: "52:54:00:00:00:01".into(),
        });
        let calls = Firecracker::restore_requests(&spec, &state).unwrap();
        let load = spawned.api().put(&calls[0].1, &calls[0].2);
        let handle = spawned.into_handle();
        fc.stop(&handle, Duration::from_millis(200)).unwrap();
        println!("PUT /snapshot/load of a non-snapshot: {load:?}");
        let err = load.expect_err("not a snapshot");
        assert!(!body_refused(&err), "the load body was refused: {err}");
    }
}
