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
/// Its process and the hypervisor it serves, as `PID START_TIME
/// HYPERVISOR_PID HYPERVISOR_START_TIME`, beside it.
const PROXY_PIDFILE: &str = "agent-proxy.pid";

/// What this daemon learnt of a VM's agent at its boot.
enum Door {
    Open(PathBuf),
    /// The boot found no agent: why, for the client's announcement.
    Absent(String),
}

#[derive(Default)]
pub(crate) struct AgentDoors {
    doors: Mutex<HashMap<String, Door>>,
    /// VMs whose boot ended when the agent was ready, so that nothing has
    /// seen their sshd answer yet (it may still be starting).
    sshd_unconfirmed: Mutex<std::collections::HashSet<String>>,
}

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
        let found = read_pidfile(&pidfile).filter(|r| r.proxy_runs());
        let serves_this_boot = found.is_some_and(|r| {
            r.hypervisor == (hypervisor.pid, hypervisor.start_time) && socket.exists()
        });
        if !serves_this_boot {
            // One of an earlier boot, still finding out that its
            // hypervisor is gone, or one whose socket was taken away:
            // it goes, so that the new one is the only client of the
            // channel.
            if let Some(old) = found {
                old.terminate();
            }
            let process = probe.start_agent_proxy(&socket, agent, hypervisor)?;
            let record = ProxyRecord {
                proxy: process,
                hypervisor: (hypervisor.pid, hypervisor.start_time),
            };
            std::fs::write(&pidfile, record.to_line())
                .map_err(|e| format!("cannot write {}: {e}", pidfile.display()))?;
        }
        self.lock()
            .insert(name.to_owned(), Door::Open(socket.clone()));
        Ok(socket)
    }

    /// Ends `name`'s proxy (SIGTERM, then up to two seconds for it to
    /// go), so that its guest agent is left with no host: before a
    /// template's state is saved, the agent must be waiting for a new
    /// host's greeting, which the resumed guests' proxies then give.
    pub fn shut(&self, name: &str, runtime_dir: &Path) {
        self.close(name);
        if let Some(record) = read_pidfile(&runtime_dir.join(PROXY_PIDFILE))
            && record.terminate()
        {
            let started = std::time::Instant::now();
            while record.proxy_runs() && started.elapsed() < std::time::Duration::from_secs(2) {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Records that `name`'s boot found no agent.
    pub fn absent(&self, name: &str, why: String) {
        self.lock().insert(name.to_owned(), Door::Absent(why));
    }

    /// Forgets `name`'s door (the VM stopped; its proxy ends with the
    /// hypervisor).
    pub fn close(&self, name: &str) {
        self.lock().remove(name);
        self.sshd_confirmed(name);
    }

    /// `name` booted through the agent: its sshd was not waited for.
    pub fn sshd_unconfirmed(&self, name: &str) {
        self.unconfirmed().insert(name.to_owned());
    }

    /// `name`'s sshd answered (or the VM stopped).
    pub fn sshd_confirmed(&self, name: &str) {
        self.unconfirmed().remove(name);
    }

    /// Whether `name`'s sshd is yet to be seen answering.
    pub fn sshd_pending(&self, name: &str) -> bool {
        self.unconfirmed().contains(name)
    }

    fn unconfirmed(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.sshd_unconfirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
        self.doors.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the pidfile says: the proxy and the hypervisor it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProxyRecord {
    proxy: ProxyProcess,
    hypervisor: (u32, u64),
}

impl ProxyRecord {
    fn to_line(self) -> String {
        format!(
            "{} {} {} {}\n",
            self.proxy.pid, self.proxy.start_time, self.hypervisor.0, self.hypervisor.1
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let mut numbers = text.split_whitespace();
        let record = Self {
            proxy: ProxyProcess {
                pid: numbers.next()?.parse().ok()?,
                start_time: numbers.next()?.parse().ok()?,
            },
            hypervisor: (numbers.next()?.parse().ok()?, numbers.next()?.parse().ok()?),
        };
        numbers.next().is_none().then_some(record)
    }

    fn proxy_runs(&self) -> bool {
        banger_vmm::process::is_alive(self.proxy.pid, self.proxy.start_time)
    }

    /// SIGTERM to the proxy, if it is still that process (and not this
    /// one: the tests' fakes serve their proxies in-process). Whether it
    /// was sent.
    fn terminate(&self) -> bool {
        if self.proxy_runs()
            && self.proxy.pid != std::process::id()
            && let Ok(pid) = i32::try_from(self.proxy.pid)
        {
            return nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .is_ok();
        }
        false
    }
}

/// Whether the proxy `pidfile` names still runs.
fn running(pidfile: &Path) -> bool {
    read_pidfile(pidfile).is_some_and(|r| r.proxy_runs())
}

fn read_pidfile(pidfile: &Path) -> Option<ProxyRecord> {
    // Not through a link, and no more than four numbers' worth of it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(pidfile)
        .ok()?;
    let mut text = String::new();
    file.take(128).read_to_string(&mut text).ok()?;
    ProxyRecord::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pidfile_round_trips_and_refuses_what_it_did_not_write() {
        let record = ProxyRecord {
            proxy: ProxyProcess {
                pid: 41,
                start_time: 7,
            },
            hypervisor: (40, 6),
        };
        assert_eq!(ProxyRecord::parse(&record.to_line()), Some(record));
        for bad in ["", "41 7", "41 7 40", "41 7 40 6 1", "a b c d", "-1 7 40 6"] {
            assert_eq!(ProxyRecord::parse(bad), None, "{bad:?}");
        }
    }
}
