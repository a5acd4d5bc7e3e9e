//! The seams between the orchestrator and what runs guests: which
//! hypervisor a boot uses and which one a running VM's handle belongs to
//! ([`Hypervisors`]), and how a booted guest is found to answer
//! ([`GuestProbe`]). The daemon passes the real ones ([`Probed`],
//! [`SshProbe`]); tests pass fakes, so that the VM lifecycle is tested
//! without QEMU or a guest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_agent_proto::{AgentChannel, IdentityReply, IdentityRequest};
use banger_api::ReadyWait;
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

    /// Waits until the guest agent at `socket` answers and reports
    /// `stage`, within `within`; `alive` says whether the VM still runs.
    /// [`AgentWait::Unavailable`] means "no agent here": the boot falls
    /// back to sshd. Without an override, no guest has an agent.
    fn agent_ready(
        &self,
        socket: &Path,
        stage: ReadyWait,
        within: Duration,
        alive: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<AgentReport, AgentWait> {
        let _ = (socket, stage, within, alive);
        Err(AgentWait::Unavailable("this probe knows no agent".into()))
    }

    /// Starts the proxy that serves `listen` for the guest agent on
    /// `agent` for as long as `hypervisor` runs; returns the process that
    /// serves it once it listens. Without an override, there is none.
    fn start_agent_proxy(
        &self,
        listen: &Path,
        agent: &AgentChannel,
        hypervisor: &VmHandle,
    ) -> Result<ProxyProcess, String> {
        let _ = (listen, agent, hypervisor);
        Err("this probe starts no agent proxy".into())
    }

    /// Gives the guest behind the agent proxy `socket` its new identity
    /// (after a resume from a template), within `within`. Without an
    /// override, no guest has an agent.
    fn set_identity(
        &self,
        socket: &Path,
        req: &IdentityRequest,
        within: Duration,
    ) -> Result<IdentityReply, String> {
        let _ = (socket, req, within);
        Err("this probe knows no agent".into())
    }

    /// Unpacks the tar archive in the file `tar` into `dir` in the guest
    /// behind the agent proxy `socket`, within `within`.
    fn tar_in(&self, socket: &Path, dir: &str, tar: &Path, within: Duration) -> Result<(), String> {
        let _ = (socket, dir, tar, within);
        Err("this probe knows no agent".into())
    }
}

/// The process serving a VM's agent proxy: its pid and start time, as
/// for the hypervisor, so that a reused pid is never taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyProcess {
    pub pid: u32,
    pub start_time: u64,
}

/// The flag bangerd takes to run as a VM's agent proxy, then
/// `--listen SOCKET --agent SOCKET [--vsock-port N] --watch PID:START_TIME`.
pub const AGENT_PROXY_FLAG: &str = "--agent-proxy";

/// When the agent answered and when it reported the stage asked for,
/// both counted from the start of the wait.
#[derive(Clone, Debug)]
pub struct AgentReport {
    pub answered: Duration,
    pub ready: Duration,
}

/// Why an agent wait ended without the stage.
#[derive(Debug, PartialEq, Eq)]
pub enum AgentWait {
    /// Nothing greeted within [`AGENT_GREETING`], or it speaks another
    /// protocol: use sshd instead (the reason says why).
    Unavailable(String),
    /// The hypervisor exited.
    Died,
    /// The agent answered, but the guest did not reach the stage.
    Timeout(String),
}

/// How long a booted guest's agent may take to first answer before the
/// boot falls back to sshd. The agent starts with systemd's very first
/// units: 4-7 s after QEMU starts under TCG on a loaded 2-core host.
pub const AGENT_GREETING: Duration = Duration::from_secs(45);

/// `ssh … true` through banger's ControlMaster, which it leaves running.
pub struct SshProbe;

impl GuestProbe for SshProbe {
    fn ssh_ready(&self, target: &SshTarget, timeout: Duration) -> Result<(), SshError> {
        target.wait_ready(timeout).map(|_| ())
    }

    /// Runs on the daemon's runtime from the blocking thread it is
    /// called on.
    fn agent_ready(
        &self,
        socket: &Path,
        stage: ReadyWait,
        within: Duration,
        alive: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<AgentReport, AgentWait> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| AgentWait::Unavailable(format!("no async runtime: {e}")))?;
        runtime.block_on(wait_for_agent(socket, stage, within, alive))
    }

    /// bangerd itself, run again as `bangerd --agent-proxy …` in a
    /// session of its own (so a daemon restart leaves it and the commands
    /// it carries alone), logging to `agent-proxy.log` beside `listen`.
    fn start_agent_proxy(
        &self,
        listen: &Path,
        agent: &AgentChannel,
        hypervisor: &VmHandle,
    ) -> Result<ProxyProcess, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find bangerd's own binary: {e}"))?;
        let log = listen.with_file_name("agent-proxy.log");
        let mut args: Vec<std::ffi::OsString> = vec![
            AGENT_PROXY_FLAG.into(),
            "--listen".into(),
            listen.into(),
            "--agent".into(),
            agent.socket().into(),
            "--watch".into(),
            format!("{}:{}", hypervisor.pid, hypervisor.start_time).into(),
        ];
        if let AgentChannel::Vsock { port, .. } = agent {
            args.extend(["--vsock-port".into(), port.to_string().into()]);
        }
        let child =
            banger_vmm::process::spawn_detached(&exe, &args, &log).map_err(|e| e.to_string())?;
        let process = ProxyProcess {
            pid: child.id(),
            start_time: banger_vmm::process::start_time_of(&child).unwrap_or_default(),
        };
        banger_vmm::process::reap_in_background(child);
        wait_listening(listen, process)?;
        Ok(process)
    }

    fn set_identity(
        &self,
        socket: &Path,
        req: &IdentityRequest,
        within: Duration,
    ) -> Result<IdentityReply, String> {
        with_agent(socket, within, async |client| {
            client.set_identity(req).await.map_err(|e| e.to_string())
        })
    }

    fn tar_in(&self, socket: &Path, dir: &str, tar: &Path, within: Duration) -> Result<(), String> {
        let spec = banger_agent_proto::TarInSpec {
            dir: dir.to_owned(),
            user: None,
        };
        with_agent(socket, within, async |client| {
            let file = tokio::fs::File::open(tar)
                .await
                .map_err(|e| format!("cannot read {}: {e}", tar.display()))?;
            client
                .tar_in(&spec, file)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// Connects to the agent behind the proxy `socket` and runs `f` with it,
/// all within `within`, on the daemon's runtime from the blocking thread
/// this is called on.
fn with_agent<T>(
    socket: &Path,
    within: Duration,
    f: impl AsyncFnOnce(banger_guest::agent::AgentClient) -> Result<T, String>,
) -> Result<T, String> {
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|e| format!("no async runtime: {e}"))?;
    runtime.block_on(async {
        tokio::time::timeout(within, async {
            let client = banger_guest::agent::AgentClient::connect(socket, within)
                .await
                .map_err(|e| e.to_string())?;
            f(client).await
        })
        .await
        .map_err(|_| format!("no answer within {} s", within.as_secs()))?
    })
}

/// Waits until the proxy just started has made its socket, or has died.
fn wait_listening(listen: &Path, process: ProxyProcess) -> Result<(), String> {
    const WITHIN: Duration = Duration::from_secs(5);
    let started = std::time::Instant::now();
    loop {
        if listen.exists() {
            return Ok(());
        }
        if !banger_vmm::process::is_alive(process.pid, process.start_time) {
            return Err(format!(
                "the agent proxy exited at once: see {}",
                listen.with_file_name("agent-proxy.log").display()
            ));
        }
        if started.elapsed() >= WITHIN {
            return Err(format!(
                "the agent proxy did not listen within {} s",
                WITHIN.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls the agent until it greets, then its readiness until `stage`.
async fn wait_for_agent(
    socket: &Path,
    stage: ReadyWait,
    within: Duration,
    alive: &(dyn Fn() -> bool + Send + Sync),
) -> Result<AgentReport, AgentWait> {
    use banger_agent_proto::greeting::GreetingError;
    use banger_guest::agent::{AgentClient, AgentError};
    const POLL: Duration = Duration::from_millis(100);
    let started = std::time::Instant::now();
    let greeting = AGENT_GREETING.min(within);
    let mut last = String::from("no answer yet");
    let client = loop {
        if !alive() {
            return Err(AgentWait::Died);
        }
        if started.elapsed() >= greeting {
            return Err(AgentWait::Unavailable(format!(
                "no answer within {} s: {last}",
                greeting.as_secs()
            )));
        }
        let attempt = Duration::from_secs(2).min(greeting - started.elapsed());
        match AgentClient::connect(socket, attempt).await {
            Ok(client) => break client,
            // The proxy closes a client's connection while the agent does
            // not answer it: not yet.
            Err(AgentError::Greeting(GreetingError::Closed)) => {
                last = "the agent does not answer the proxy yet".into();
            }
            Err(e @ AgentError::Greeting(_)) => return Err(AgentWait::Unavailable(e.to_string())),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL).await;
    };
    let answered = started.elapsed();
    loop {
        if !alive() {
            return Err(AgentWait::Died);
        }
        match client.ready().await {
            Ok(r) => {
                let reached = match stage {
                    ReadyWait::MultiUser => r.multi_user,
                    ReadyWait::Sysinit | ReadyWait::Ssh => r.sysinit,
                };
                if reached {
                    return Ok(AgentReport {
                        answered,
                        ready: started.elapsed(),
                    });
                }
                last = format!(
                    "systemd has not reached {} yet",
                    if stage == ReadyWait::MultiUser {
                        "multi-user.target"
                    } else {
                        "sysinit.target"
                    }
                );
            }
            Err(e) => last = e.to_string(),
        }
        if started.elapsed() >= within {
            return Err(AgentWait::Timeout(last));
        }
        tokio::time::sleep(POLL).await;
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
