//! The JSON messages. Unknown fields are refused, so a host and an agent
//! of the same protocol version agree on every field.

use serde::{Deserialize, Serialize};

/// Opens an exec stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Chosen by the host (16 hex digits), so it can signal and resize
    /// the command while the exec stream is open.
    pub id: String,
    /// The program and its arguments, run without a shell; empty: the
    /// user's shell as a login shell (`-bash`), as sshd starts it.
    pub argv: Vec<String>,
    /// Added to the agent's base environment (PATH, HOME, USER, LOGNAME,
    /// SHELL, LANG, and TERM with a terminal).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The working directory; the user's home when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// A user name from the guest's /etc/passwd; root when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Run on a new terminal of this size (stdout then carries the
    /// terminal's output, and no stderr frames come).
    #[serde(default)]
    pub pty: Option<WindowSize>,
    /// `TERM` for a terminal.
    #[serde(default)]
    pub term: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// How an exec ended: `code` is the exit status, or 128+N for signal N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitInfo {
    pub code: i32,
    #[serde(default)]
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    pub id: String,
    pub signal: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    pub id: String,
    pub size: WindowSize,
}

/// How far the guest has come.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    pub protocol: u32,
    /// banger-init's version (the crate's).
    pub agent_version: String,
    /// Whether systemd runs the guest (false: banger's minimal init).
    pub systemd: bool,
    /// systemd has reached sysinit.target (always true without systemd).
    pub sysinit: bool,
    /// systemd has reached multi-user.target (always true without).
    pub multi_user: bool,
    /// The guest's uptime, milliseconds.
    pub uptime_ms: u64,
}

/// Opens a tar-in stream: the tar that follows is unpacked into `dir`
/// (made if missing), owned by `user` when given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarInSpec {
    pub dir: String,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarOutRequest {
    /// A file or directory, archived under its own name.
    pub path: String,
}

/// What a tar-in unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarDone {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostnameRequest {
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRequest {
    /// The host's time, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

/// The body of every non-2xx reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub error: String,
}

/// An exec id: 16 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
