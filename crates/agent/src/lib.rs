//! banger's guest agent: the server side of `banger-agent-proto`. It runs
//! inside the guest (as `banger-init agent`, the same static binary as the
//! initramfs's `/init`) and answers the host over one byte stream: QEMU's
//! virtio-serial port or a Firecracker vsock port, never the network.
//!
//! It owns the routes (exec with pipes or a terminal, signals, window
//! sizes, tar in and out, readiness, hostname, clock, and the identity a
//! guest resumed from a snapshot is given, growing its filesystems online
//! and mounting its workspace disk included: [`filesystem`], [`workspace`]) and the transport
//! loops that wait for a host, answer its greeting and serve HTTP/2 until
//! it goes away. It must not trust the host's bytes to be small: every body
//! is read through the protocol's bounds, and output reaches the host
//! through bounded channels, so a slow host slows the command instead of
//! growing a buffer. It must not depend on the guest's libc services
//! (NSS): users and groups come from /etc/passwd and /etc/group, parsed
//! here. In minimal mode a command gets the image's environment from a
//! file the host wrote (`guest_paths::IMAGE_ENV`), as ssh sessions do.
//!
//! It also lends banger-init what both configure: the interfaces over
//! rtnetlink ([`net`]), the identity files of /etc ([`etc`]), ext
//! superblocks' labels and UUIDs ([`superblock`]) and the workspace
//! disk's mount point ([`workspace`]).
#![deny(unsafe_code)]

mod body;
pub mod etc;
mod exec;
pub mod filesystem;
mod identity;
mod image_env;
pub mod net;
mod random;
mod server;
mod sshd;
pub mod superblock;
mod system;
mod tar;
mod transport;
mod users;
pub mod workspace;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use banger_agent_proto::guest_paths;
use tokio::io::{AsyncRead, AsyncWrite};

pub use transport::{find_virtio_port, run, run_virtio_serial, run_vsock};

/// The agent's state, shared by every connection: the execs that are
/// running (so a signal or a resize may come on another connection than
/// the exec's own), where the image's environment is, and the root under
/// which the identity's files are written.
#[derive(Clone)]
pub struct Agent {
    execs: Arc<Mutex<HashMap<String, exec::Running>>>,
    image_env: Arc<Path>,
    root: Arc<Path>,
    /// Held while an identity is applied: two at once would interleave
    /// their network steps.
    identity: Arc<Mutex<()>>,
}

impl Default for Agent {
    fn default() -> Self {
        Self::with_image_env(guest_paths::IMAGE_ENV)
    }
}

impl Agent {
    pub fn new() -> Self {
        Self::default()
    }

    /// An agent whose commands get the image's environment from `path`
    /// rather than [`guest_paths::IMAGE_ENV`] (a test on a host has none
    /// there).
    pub fn with_image_env(path: impl Into<PathBuf>) -> Self {
        Self {
            execs: Arc::default(),
            image_env: Arc::from(path.into()),
            root: Arc::from(Path::new("/")),
            identity: Arc::default(),
        }
    }

    /// This agent with the files the hostname and identity routes write
    /// (/etc/hostname, /etc/hosts, /etc/machine-id, /etc/resolv.conf,
    /// /etc/ssh/) and the marks they read (/run/systemd/system, the
    /// supervisor's sshd pid file) under `root` rather than `/`, for a
    /// test on a host. The kernel's state (hostname, clock, interfaces,
    /// random pool) is the process's own either way.
    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Arc::from(root.into());
        self
    }

    /// Serves the protocol's HTTP/2 on `io` until the host closes it or
    /// the connection fails. The greeting must have been answered on the
    /// stream before (`banger_agent_proto::greeting::agent_answer`). Execs
    /// whose stream goes away with the connection get SIGHUP, then SIGKILL
    /// after 3 s, and are reaped. Needs a tokio runtime with I/O, time and
    /// signals enabled (child processes are reaped through SIGCHLD).
    pub async fn serve_connection<S>(&self, io: S) -> Result<(), hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        server::serve(self.clone(), io).await
    }
}
