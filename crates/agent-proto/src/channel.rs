//! Where the host reaches one VM's agent. The hypervisor backend says
//! which channel its VMs have; the host client opens it.

use std::fmt;
use std::path::{Path, PathBuf};

/// The host's end of a VM's agent channel: always a Unix socket, which is
/// the agent's byte stream itself or a multiplexer in front of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentChannel {
    /// A Unix socket that is the agent's stream from the first byte
    /// (QEMU's virtio-serial chardev, or a proxy in front of one).
    Serial(PathBuf),
    /// Firecracker's vsock socket: each connection first asks for a guest
    /// port with `CONNECT <port>\n` and gets `OK <host port>\n`, or is
    /// closed when nothing in the guest listens on that port.
    Vsock { uds: PathBuf, port: u32 },
}

impl AgentChannel {
    /// The Unix socket the host connects to.
    pub fn socket(&self) -> &Path {
        match self {
            Self::Serial(path) => path,
            Self::Vsock { uds, .. } => uds,
        }
    }
}

impl fmt::Display for AgentChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serial(path) => write!(f, "{}", path.display()),
            Self::Vsock { uds, port } => write!(f, "vsock port {port} through {}", uds.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_socket_and_the_port() {
        let serial = AgentChannel::Serial("/run/banger/vm/a/agent.sock".into());
        assert_eq!(serial.to_string(), "/run/banger/vm/a/agent.sock");
        assert_eq!(serial.socket(), Path::new("/run/banger/vm/a/agent.sock"));
        let vsock = AgentChannel::Vsock {
            uds: "/run/banger/vm/a/vsock.sock".into(),
            port: 1024,
        };
        assert_eq!(
            vsock.to_string(),
            "vsock port 1024 through /run/banger/vm/a/vsock.sock"
        );
        assert_eq!(vsock.socket(), Path::new("/run/banger/vm/a/vsock.sock"));
    }
}
