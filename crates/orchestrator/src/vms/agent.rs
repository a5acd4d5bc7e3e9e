//! Each running VM's door to its guest agent: the proxy socket `banger`
//! connects to, served by a process of its own per VM
//! (`bangerd --agent-proxy`, [`crate::GuestProbe::start_agent_proxy`]) so
//! that a daemon restart leaves the commands it carries running. The
//! process ends with the VM's hypervisor; its pid and start time are
//! kept in the VM's runtime dir, where a restarted daemon finds it again.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_agent_proto::AgentChannel;
use banger_api::AgentInfo;
use banger_vmm::VmHandle;

use crate::hypervisors::{GuestProbe, ProxyProcess};

/// The proxy's socket in the VM's runtime dir.
pub(crate) const PROXY_SOCKET: &str = "agent-proxy.sock";
/// Its process, as `PID START_TIME`, beside it.
const PROXY_PIDFILE: &str = "agent-proxy.pid";

/// What this daemon learnt of a VM's agent at its boot.
enum Door {
    Open(PathBuf),
    /// The boot found no agent: why, for the client's announcement.
    Absent(String),
}

#[derive(Default)]
pub(crate) struct AgentDoors(Mutex<HashMap<String, Door>>);

impl AgentDoors {
    /// `name`'s proxy in `runtime_dir` to the agent on `agent`: the one
    /// already running for this hypervisor, or a new one. Returns its
    /// socket.
    pub fn open(
        &self,
        name: &str,
        runtime_dir: &Path,
        agent: &AgentChannel,
        hypervisor: &VmHandle,
        probe: &dyn GuestProbe,
    ) -> Result<PathBuf, String> {
        let socket = runtime_dir.join(PROXY_SOCKET);
        let pidfile = runtime_dir.join(PROXY_PIDFILE);
        if !(running(&pidfile) && socket.exists()) {
            let process = probe.start_agent_proxy(&socket, agent, hypervisor)?;
            std::fs::write(
                &pidfile,
                format!("{} {}\n", process.pid, process.start_time),
            )
            .map_err(|e| format!("cannot write {}: {e}", pidfile.display()))?;
        }
        self.lock()
            .insert(name.to_owned(), Door::Open(socket.clone()));
        Ok(socket)
    }

    /// Records that `name`'s boot found no agent.
    pub fn absent(&self, name: &str, why: String) {
        self.lock().insert(name.to_owned(), Door::Absent(why));
    }

    /// Forgets `name`'s door (the VM stopped; its proxy ends with the
    /// hypervisor).
    pub fn close(&self, name: &str) {
        self.lock().remove(name);
    }

    /// What is known of `name`'s door: `None` when nothing is, or when
    /// its proxy is gone.
    pub fn info(&self, name: &str, runtime_dir: &Path) -> Option<AgentInfo> {
        let mut doors = self.lock();
        let info = match doors.get(name)? {
            Door::Open(socket) => {
                if !running(&runtime_dir.join(PROXY_PIDFILE)) {
                    doors.remove(name);
                    return None;
                }
                AgentInfo {
                    socket: Some(socket.clone()),
                    reason: None,
                }
            }
            Door::Absent(why) => AgentInfo {
                socket: None,
                reason: Some(why.clone()),
            },
        };
        Some(info)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Door>> {
        // A panic elsewhere while holding it leaves a usable map.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether the proxy `pidfile` names still runs.
fn running(pidfile: &Path) -> bool {
    read_pidfile(pidfile).is_some_and(|p| banger_vmm::process::is_alive(p.pid, p.start_time))
}

fn read_pidfile(pidfile: &Path) -> Option<ProxyProcess> {
    // Not through a link, and no more than two numbers' worth of it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(pidfile)
        .ok()?;
    let mut text = String::new();
    file.take(64).read_to_string(&mut text).ok()?;
    let mut words = text.split_whitespace();
    Some(ProxyProcess {
        pid: words.next()?.parse().ok()?,
        start_time: words.next()?.parse().ok()?,
    })
}
