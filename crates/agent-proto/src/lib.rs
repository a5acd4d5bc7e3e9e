//! The protocol between banger on the host and `banger-agent` in the guest.
//! No I/O of its own beyond the greeting on a blocking stream, so both
//! sides (the async host client, the guest agent) share it and it is
//! tested without a guest.
//!
//! The transport is one byte stream per VM: QEMU's virtio-serial port
//! [`PORT_NAME`] (a Unix socket in the VM's runtime dir on the host), or a
//! Firecracker vsock port [`VSOCK_PORT`]; [`AgentChannel`] says which and
//! where the host finds it. On it:
//!
//! 1. **Greeting** ([`greeting`]): the host writes `BANGER-AGENT-HELLO
//!    <version> <nonce>` as one line; the agent answers `BANGER-AGENT-OK
//!    <version> <nonce>`, or `BANGER-AGENT-VERSION <its version>` when it
//!    speaks another protocol. A virtio-serial port outlives its hosts:
//!    bytes a previous host left in either direction are skipped, because
//!    each side looks only for its line (and the host for its nonce).
//! 2. **HTTP/2** (hyper, the host as client): one connection multiplexes
//!    every exec, signal and copy, with HTTP/2's per-stream flow control,
//!    so a command that never reads stdin or a host that stops reading
//!    stdout stalls only its own stream, and neither side buffers more than
//!    a window. HTTP/2 over a plain stream needs no TLS or ALPN and is
//!    implemented by a well-kept crate on both sides; ttrpc (Kata's) would
//!    bring protobuf code generation for the same result.
//! 3. **Routes** ([`route`]): small requests carry one JSON body of at
//!    most [`MAX_JSON`] bytes; streams (exec, tar) carry [`frame`]s in
//!    their bodies: a type byte, a 4-byte big-endian length, the payload,
//!    at most [`MAX_PAYLOAD`] bytes each.
//!
//! Everything from the guest is untrusted on the host: every length is
//! checked against these bounds before anything is allocated for it.
#![deny(unsafe_code)]

pub mod channel;
pub mod frame;
pub mod greeting;
pub mod messages;

pub use channel::AgentChannel;
pub use frame::{Frame, FrameDecoder, FrameError, FrameKind};
pub use messages::*;

/// The protocol's version: the greeting carries it and both sides refuse
/// another.
pub const PROTOCOL_VERSION: u32 = 1;
/// QEMU's `virtserialport` name; the guest opens `/dev/virtio-ports/<it>`.
pub const PORT_NAME: &str = "banger.agent";
/// The agent's vsock port under Firecracker.
pub const VSOCK_PORT: u32 = 1024;
/// Largest JSON message (a request or a reply).
pub const MAX_JSON: usize = 1 << 20;
/// Largest payload of one stream frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// HTTP/2 settings both sides use: small, bounded buffers.
pub mod limits {
    /// Per-stream flow-control window.
    pub const STREAM_WINDOW: u32 = 256 * 1024;
    /// Per-connection window.
    pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
    /// Largest HTTP/2 frame.
    pub const MAX_FRAME: u32 = 16 * 1024;
    /// Largest header list.
    pub const MAX_HEADER_LIST: u32 = 16 * 1024;
    /// Concurrent streams the agent accepts (each exec uses one, its
    /// signals and resizes one each for an instant).
    pub const MAX_STREAMS: u32 = 128;
    /// Bytes the host may queue to send on one connection.
    pub const MAX_SEND_BUF: usize = 256 * 1024;
}

/// The request paths.
pub mod route {
    /// `GET`: [`crate::Ready`].
    pub const READY: &str = "/v1/ready";
    /// `POST`: a streamed exec (see [`crate::frame`]).
    pub const EXEC: &str = "/v1/exec";
    /// `POST` [`crate::SignalRequest`].
    pub const SIGNAL: &str = "/v1/signal";
    /// `POST` [`crate::ResizeRequest`].
    pub const RESIZE: &str = "/v1/resize";
    /// `POST`: a tar stream unpacked into a directory.
    pub const TAR_IN: &str = "/v1/tar-in";
    /// `POST` [`crate::TarOutRequest`]: a tar stream of a path back.
    pub const TAR_OUT: &str = "/v1/tar-out";
    /// `POST` [`crate::HostnameRequest`].
    pub const HOSTNAME: &str = "/v1/hostname";
    /// `POST` [`crate::ClockRequest`].
    pub const CLOCK: &str = "/v1/clock";
    /// `POST` [`crate::IdentityRequest`]: a resumed guest's new identity;
    /// the reply is [`crate::IdentityReply`].
    pub const IDENTITY: &str = "/v1/identity";
}

/// Paths inside the guest. banger-init puts the agent's binary (and, for
/// systemd, its units) on a tmpfs `/run` before handing over to the
/// image, so an image needs nothing of its own.
pub mod guest_paths {
    /// The directory of the agent's binary and readiness marks.
    pub const DIR: &str = "/run/banger-agent";
    /// The agent's binary (a copy of banger-init).
    pub const BINARY: &str = "/run/banger-agent/banger-agent";
    /// Made when systemd has reached `sysinit.target` (mounts, tmpfiles'
    /// boot-time cleanup of /tmp, sysctl, udev's trigger are done).
    pub const SYSINIT_MARK: &str = "/run/banger-agent/sysinit";
    /// Made when systemd has reached `multi-user.target`.
    pub const MULTI_USER_MARK: &str = "/run/banger-agent/multi-user";
    /// The system disk's per-VM files (`banger/files/`, which banger-init
    /// copies into the new root at every boot), bind-mounted read-write
    /// here by banger-init, under the agent's 0700 directory: the agent
    /// writes a resumed guest's new host keys there too, so a later cold
    /// boot does not bring back the template's.
    pub const PER_VM_FILES: &str = "/run/banger-agent/files";
    /// Minimal mode only: the image's environment (its config's `Env`),
    /// one `NAME=value` per line, written by the host on the system disk
    /// with banger's guest tools (`banger/tools/agent-env`) and mounted
    /// read-only with them. Every exec gets it after the agent's own
    /// environment and before its spec's. A systemd guest has none.
    pub const IMAGE_ENV: &str = "/.banger/agent-env";
    /// Minimal mode only: the sshd banger-init supervises (the host puts
    /// it on the system disk with banger's guest tools).
    pub const MINIMAL_SSHD: &str = "/.banger/bin/sshd";
    /// Minimal mode only: the pid of [`MINIMAL_SSHD`], written by
    /// banger-init's supervisor each time it starts it, so the agent can
    /// ask that sshd to load new host keys (SIGHUP: sshd re-executes
    /// itself under the same pid).
    pub const SSHD_PID: &str = "/run/banger-agent/sshd.pid";
}
