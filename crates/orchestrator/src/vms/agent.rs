//! Each running VM's door to its guest agent: the proxy socket `banger`
//! connects to (`banger_guest::agent::AgentProxy`), started when a boot
//! found the agent answering, or on first demand for a VM booted before
//! this daemon started. Held in memory only: a proxy is a task and a
//! socket in the VM's runtime dir, both gone with the daemon or the VM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_api::AgentInfo;
use banger_guest::agent::{AgentClient, AgentProxy};

/// The proxy's socket in the VM's runtime dir.
pub(crate) const PROXY_SOCKET: &str = "agent-proxy.sock";

enum Door {
    Open {
        socket: PathBuf,
        _proxy: AgentProxy,
    },
    /// The boot found no agent: why, for the client's announcement.
    Absent(String),
}

#[derive(Default)]
pub(crate) struct AgentDoors(Mutex<HashMap<String, Door>>);

impl AgentDoors {
    /// Opens `name`'s proxy in `runtime_dir` to the agent at `agent`.
    pub fn open(
        &self,
        name: &str,
        runtime_dir: &Path,
        agent: &Path,
        client: Option<AgentClient>,
    ) -> Result<PathBuf, String> {
        let socket = runtime_dir.join(PROXY_SOCKET);
        let proxy = AgentProxy::start(&socket, agent, client)
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        self.lock().insert(
            name.to_owned(),
            Door::Open {
                socket: socket.clone(),
                _proxy: proxy,
            },
        );
        Ok(socket)
    }

    /// Records that `name`'s boot found no agent.
    pub fn absent(&self, name: &str, why: String) {
        self.lock().insert(name.to_owned(), Door::Absent(why));
    }

    /// Closes `name`'s proxy (the VM stopped).
    pub fn close(&self, name: &str) {
        self.lock().remove(name);
    }

    /// What is known of `name`'s door: `None` when nothing is.
    pub fn info(&self, name: &str) -> Option<AgentInfo> {
        self.lock().get(name).map(|door| match door {
            Door::Open { socket, .. } => AgentInfo {
                socket: Some(socket.clone()),
                reason: None,
            },
            Door::Absent(why) => AgentInfo {
                socket: None,
                reason: Some(why.clone()),
            },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Door>> {
        // A panic elsewhere while holding it leaves a usable map.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
