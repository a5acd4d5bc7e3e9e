//! Test doubles for the orchestrator's seams. Each records what was asked
//! and keeps the state the real thing would leave on the host, so that a
//! test can tell what leaked; they outlive an orchestrator, as the host's
//! devices and processes outlive a daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_config::Config;
use banger_guest::{SshError, SshTarget};
use banger_hostops::{BridgeSpec, GuestPort, HostOps, HostOpsError};
use banger_vmm::{Backend, Hypervisor, LaunchSpec, VmHandle, VmmError};

use crate::error::Error;
use crate::hypervisors::{GuestProbe, Hypervisors};

/// What the host holds now: the bridge, TAPs, and each VM's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    pub bridge: bool,
    pub taps: BTreeSet<String>,
    pub isolated: BTreeSet<String>,
    pub nat: BTreeSet<String>,
}

impl HostState {
    /// Nothing of any VM's: no TAP, no isolation or NAT rule.
    pub fn no_vm_left(&self) -> bool {
        self.taps.is_empty() && self.isolated.is_empty() && self.nat.is_empty()
    }
}

/// A `HostOps` that changes nothing but its own record; told to, it
/// fails one operation (by its name, like `"isolate_guest"`).
#[derive(Default)]
pub struct FakeHost {
    state: Mutex<HostState>,
    fail: Mutex<Option<&'static str>>,
    pub calls: Mutex<Vec<String>>,
}

impl FakeHost {
    pub fn state(&self) -> HostState {
        self.state.lock().unwrap().clone()
    }

    pub fn fail(&self, op: &'static str) {
        *self.fail.lock().unwrap() = Some(op);
    }

    fn call(&self, op: &'static str, arg: &str) -> Result<(), HostOpsError> {
        self.calls.lock().unwrap().push(format!("{op} {arg}"));
        if *self.fail.lock().unwrap() == Some(op) {
            return Err(HostOpsError::Failed(format!("{op} failed (as told)")));
        }
        Ok(())
    }
}

impl HostOps for FakeHost {
    fn ensure_bridge(&self, bridge: &BridgeSpec) -> Result<(), HostOpsError> {
        self.call("ensure_bridge", &bridge.name)?;
        self.state.lock().unwrap().bridge = true;
        Ok(())
    }
    fn create_tap(&self, tap: &str, _bridge: &BridgeSpec) -> Result<(), HostOpsError> {
        self.call("create_tap", tap)?;
        self.state.lock().unwrap().taps.insert(tap.to_string());
        Ok(())
    }
    fn delete_tap(&self, tap: &str) -> Result<(), HostOpsError> {
        self.call("delete_tap", tap)?;
        self.state.lock().unwrap().taps.remove(tap);
        Ok(())
    }
    fn isolate_guest(&self, port: &GuestPort) -> Result<(), HostOpsError> {
        self.call("isolate_guest", &port.vm)?;
        self.state.lock().unwrap().isolated.insert(port.vm.clone());
        Ok(())
    }
    fn remove_isolation(&self, vm: &str) -> Result<(), HostOpsError> {
        self.call("remove_isolation", vm)?;
        self.state.lock().unwrap().isolated.remove(vm);
        Ok(())
    }
    fn enable_nat(&self, port: &GuestPort) -> Result<(), HostOpsError> {
        self.call("enable_nat", &port.vm)?;
        self.state.lock().unwrap().nat.insert(port.vm.clone());
        Ok(())
    }
    fn disable_nat(&self, vm: &str) -> Result<(), HostOpsError> {
        self.call("disable_nat", vm)?;
        self.state.lock().unwrap().nat.remove(vm);
        Ok(())
    }
    fn bind_dns(&self, _bridge: &BridgeSpec) -> Result<OwnedFd, HostOpsError> {
        Err(HostOpsError::Failed("the fake binds no socket".into()))
    }
    fn map_ids(&self, pid: u32) -> Result<(), HostOpsError> {
        self.call("map_ids", &pid.to_string())
    }
    fn describe(&self) -> String {
        "a recording fake".into()
    }
}

/// What a started fake guest does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// `start` fails: no process is left, as the real backends promise.
    FailsToStart,
    /// Runs, but banger-init never says it is ready on the console.
    NeverReady,
    /// banger-init says it is ready as soon as the "process" starts.
    InitReady,
}

/// A `Hypervisor` whose processes are entries in a table. A "process" runs
/// until stopped or killed, whatever happens to the orchestrator that
/// started it; one whose start was never recorded is found again by its
/// runtime folder, as the real pidfile is.
pub struct FakeHypervisor {
    guest: Mutex<Guest>,
    next_pid: AtomicU32,
    /// pid → runtime folder, of the processes running now.
    running: Mutex<BTreeMap<u32, PathBuf>>,
    /// Those of them whose vCPUs are paused.
    paused: Mutex<BTreeSet<u32>>,
    /// Told to, `pause` fails (after pausing, as a late answer would).
    pub fail_pause: std::sync::atomic::AtomicBool,
    pub launches: Mutex<Vec<String>>,
    pub stops: Mutex<Vec<u32>>,
    /// The saved states each launch started from (`LaunchSpec::incoming`).
    pub incoming: Mutex<Vec<Option<PathBuf>>>,
    /// Told to, `save_state` fails (leaving the VM paused, as the real
    /// ones do).
    pub fail_save: std::sync::atomic::AtomicBool,
    /// `grow_disk` calls: the file and its new size.
    pub grown: Mutex<Vec<(PathBuf, u64)>>,
    /// Every launch's spec.
    pub specs: Mutex<Vec<LaunchSpec>>,
}

impl FakeHypervisor {
    pub fn new(guest: Guest) -> Self {
        Self {
            guest: Mutex::new(guest),
            // Far above any real pid: `/proc` never has these.
            next_pid: AtomicU32::new(0x7000_0000),
            running: Mutex::default(),
            paused: Mutex::default(),
            fail_pause: false.into(),
            launches: Mutex::default(),
            stops: Mutex::default(),
            incoming: Mutex::default(),
            fail_save: false.into(),
            grown: Mutex::default(),
            specs: Mutex::default(),
        }
    }

    pub fn set_guest(&self, guest: Guest) {
        *self.guest.lock().unwrap() = guest;
    }

    /// How many "processes" run now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap().len()
    }

    /// How many "processes" are paused now.
    pub fn paused(&self) -> usize {
        self.paused.lock().unwrap().len()
    }

    /// Ends every "process", as a host reboot or a crash of each would.
    pub fn exit_all(&self) {
        self.running.lock().unwrap().clear();
        self.paused.lock().unwrap().clear();
    }

    fn end(&self, pid: u32) {
        self.paused.lock().unwrap().remove(&pid);
        if self.running.lock().unwrap().remove(&pid).is_some() {
            self.stops.lock().unwrap().push(pid);
        }
    }
}

impl Hypervisor for FakeHypervisor {
    fn backend(&self) -> Backend {
        Backend::Qemu
    }

    fn start(&self, spec: &LaunchSpec) -> Result<VmHandle, VmmError> {
        self.launches.lock().unwrap().push(spec.name.clone());
        self.incoming.lock().unwrap().push(spec.incoming.clone());
        self.specs.lock().unwrap().push(spec.clone());
        let guest = *self.guest.lock().unwrap();
        if guest == Guest::FailsToStart {
            return Err(VmmError::Spec("the fake hypervisor fails to start".into()));
        }
        let offset = std::fs::metadata(&spec.console_log).map_or(0, |m| m.len());
        if guest == Guest::InitReady {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&spec.console_log)
                .unwrap();
            writeln!(log, "banger-init ready").unwrap();
        }
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        self.running
            .lock()
            .unwrap()
            .insert(pid, spec.runtime_dir.clone());
        Ok(VmHandle {
            backend: Backend::Qemu,
            pid,
            start_time: 1,
            control_socket: spec.runtime_dir.join("qmp.sock"),
            console_log: spec.console_log.clone(),
            console_offset: offset,
        })
    }

    fn is_running(&self, handle: &VmHandle) -> bool {
        self.running.lock().unwrap().contains_key(&handle.pid)
    }

    fn stop(&self, handle: &VmHandle, _grace: Duration) -> Result<(), VmmError> {
        self.end(handle.pid);
        Ok(())
    }

    fn kill(&self, handle: &VmHandle, signal: i32) -> Result<(), VmmError> {
        if matches!(signal, 2 | 9 | 15) {
            self.end(handle.pid);
        }
        Ok(())
    }

    fn pause(&self, handle: &VmHandle) -> Result<(), VmmError> {
        if !self.is_running(handle) {
            return Err(VmmError::Qmp {
                socket: handle.control_socket.clone(),
                message: "cannot connect: the fake process is gone".into(),
            });
        }
        self.paused.lock().unwrap().insert(handle.pid);
        if self.fail_pause.load(Ordering::SeqCst) {
            return Err(VmmError::Qmp {
                socket: handle.control_socket.clone(),
                message: "no answer in time (as told)".into(),
            });
        }
        Ok(())
    }

    fn resume(&self, handle: &VmHandle) -> Result<(), VmmError> {
        if !self.is_running(handle) {
            return Err(VmmError::Qmp {
                socket: handle.control_socket.clone(),
                message: "cannot connect: the fake process is gone".into(),
            });
        }
        self.paused.lock().unwrap().remove(&handle.pid);
        Ok(())
    }

    fn agent_socket(&self, runtime_dir: &Path) -> Option<std::path::PathBuf> {
        Some(runtime_dir.join("agent.sock"))
    }

    /// Writes a small file for the state; the VM is left paused.
    fn save_state(
        &self,
        handle: &VmHandle,
        dest: &Path,
        _timeout: Duration,
    ) -> Result<banger_vmm::SavedState, VmmError> {
        self.pause(handle)?;
        if self.fail_save.load(Ordering::SeqCst) {
            return Err(VmmError::Spec("No space left on device (as told)".into()));
        }
        std::fs::write(dest, format!("state of pid {}", handle.pid)).unwrap();
        Ok(banger_vmm::SavedState {
            files: vec![dest.to_path_buf()],
            bytes: 16,
            took: Duration::from_millis(1),
        })
    }

    fn grow_disk(
        &self,
        _handle: &VmHandle,
        _disk: usize,
        path: &Path,
        bytes: u64,
    ) -> Result<(), VmmError> {
        self.grown.lock().unwrap().push((path.to_path_buf(), bytes));
        Ok(())
    }
}

/// Every boot and every handle gets the one fake.
pub struct FakeHypervisors(pub Arc<FakeHypervisor>);

impl Hypervisors for FakeHypervisors {
    fn for_boot(&self, _config: &Config) -> Result<Arc<dyn Hypervisor>, Error> {
        Ok(self.0.clone())
    }

    fn for_handle(&self, _handle: &VmHandle) -> Arc<dyn Hypervisor> {
        self.0.clone()
    }

    fn kill_orphan(&self, runtime_dir: &Path) -> Option<u32> {
        let pid = {
            let running = self.0.running.lock().unwrap();
            running
                .iter()
                .find(|(_, dir)| dir.as_path() == runtime_dir)
                .map(|(pid, _)| *pid)
        }?;
        self.0.end(pid);
        Some(pid)
    }
}

/// A guest whose sshd answers, or never does; and whose agent is
/// absent, reaches the stage asked for, or never does.
pub struct FakeGuest {
    pub answers: std::sync::atomic::AtomicBool,
    pub agent: Mutex<FakeAgent>,
    /// The agent proxies started, served in this process.
    pub proxies: Mutex<Vec<banger_guest::agent::AgentProxy>>,
    /// The identities given to resumed guests.
    pub identities: Mutex<Vec<banger_agent_proto::IdentityRequest>>,
    /// Told to, the identity's network part fails.
    pub fail_identity: std::sync::atomic::AtomicBool,
    /// The archives unpacked in guests: the folder, and the archive's
    /// entries.
    pub unpacked: Mutex<Vec<(String, Vec<String>)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeAgent {
    Absent,
    Ready,
    NeverReady,
}

impl FakeGuest {
    pub fn new(answers: bool) -> Self {
        Self {
            answers: answers.into(),
            agent: Mutex::new(FakeAgent::Absent),
            proxies: Mutex::new(Vec::new()),
            identities: Mutex::default(),
            fail_identity: false.into(),
            unpacked: Mutex::default(),
        }
    }

    pub fn set_agent(&self, agent: FakeAgent) {
        *self.agent.lock().unwrap() = agent;
    }
}

impl GuestProbe for FakeGuest {
    fn agent_ready(
        &self,
        _socket: &Path,
        _stage: banger_api::ReadyWait,
        _within: Duration,
        alive: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<crate::AgentReport, crate::AgentWait> {
        if !alive() {
            return Err(crate::AgentWait::Died);
        }
        match *self.agent.lock().unwrap() {
            FakeAgent::Absent => Err(crate::AgentWait::Unavailable("the fake has none".into())),
            FakeAgent::NeverReady => Err(crate::AgentWait::Timeout("never ready".into())),
            FakeAgent::Ready => Ok(crate::AgentReport {
                answered: Duration::from_millis(10),
                ready: Duration::from_millis(30),
            }),
        }
    }

    /// In this process, which stands for the proxy's own.
    fn start_agent_proxy(
        &self,
        listen: &Path,
        agent: &banger_agent_proto::AgentChannel,
        _hypervisor: &banger_vmm::VmHandle,
    ) -> Result<crate::ProxyProcess, String> {
        let proxy = banger_guest::agent::AgentProxy::start(listen, agent.clone())
            .map_err(|e| e.to_string())?;
        self.proxies.lock().unwrap().push(proxy);
        let pid = std::process::id();
        let start_time = banger_vmm::process::ProcStat::read(pid)
            .map(|s| s.start_time)
            .ok_or("no /proc entry for this process")?;
        Ok(crate::ProxyProcess { pid, start_time })
    }

    fn set_identity(
        &self,
        _socket: &Path,
        req: &banger_agent_proto::IdentityRequest,
        _within: Duration,
    ) -> Result<banger_agent_proto::IdentityReply, String> {
        use banger_agent_proto::{IdentityPart, IdentityReply, PartFailure};
        self.identities.lock().unwrap().push(req.clone());
        let mut reply = IdentityReply::default();
        if self.fail_identity.load(Ordering::SeqCst) {
            reply.failed.push(PartFailure {
                part: IdentityPart::Network,
                error: "no such link (as told)".into(),
            });
        } else {
            reply.applied.push(IdentityPart::Network);
        }
        Ok(reply)
    }

    fn tar_in(
        &self,
        _socket: &Path,
        dir: &str,
        tar: &Path,
        _within: Duration,
    ) -> Result<(), String> {
        let mut archive = tar::Archive::new(std::fs::File::open(tar).map_err(|e| e.to_string())?);
        let names = archive
            .entries()
            .map_err(|e| e.to_string())?
            .map(|e| {
                let e = e.map_err(|e| e.to_string())?;
                let path = e.path().map_err(|e| e.to_string())?;
                Ok(path.display().to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.unpacked.lock().unwrap().push((dir.to_string(), names));
        Ok(())
    }

    fn ssh_ready(&self, _target: &SshTarget, timeout: Duration) -> Result<(), SshError> {
        if self.answers.load(Ordering::SeqCst) {
            return Ok(());
        }
        std::thread::sleep(timeout.min(Duration::from_millis(100)));
        Err(SshError::Io {
            action: "connecting to the fake guest".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        })
    }
}
