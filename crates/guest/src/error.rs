use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong reaching a guest. Each message is one line for the
/// operator, saying what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "{tool} is not installed: install OpenSSH (scripts/install-deps, or apt install openssh-client)"
    )]
    ToolMissing { tool: &'static str },

    #[error("{action} failed ({status}): {stderr}")]
    ToolFailed {
        action: String,
        status: String,
        stderr: String,
    },

    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "ssh key {path} (ssh_key_path) does not exist: create it with 'ssh-keygen -t ed25519 -f {path}', or remove ssh_key_path from the config to use banger's managed key"
    )]
    KeyMissing { path: PathBuf },

    #[error(
        "ssh key {path} can be read by other users (mode {mode:03o}) and ssh refuses such keys: run 'chmod 600 {path}'"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },

    #[error(
        "ssh key {path} has no {path}.pub and cannot be read without its passphrase: write the public half with 'ssh-keygen -y -f {path} > {path}.pub'"
    )]
    KeyNeedsPublicHalf { path: PathBuf },

    #[error("{what} {value:?} is not valid: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },

    #[error(
        "host key changed for VM {vm}: possible MITM; the guest did not present the host key pinned when the VM was created (banger's known_hosts); if its disks were replaced on purpose, recreate the VM"
    )]
    HostKeyChanged { vm: String },

    #[error(
        "no host key is pinned for VM {vm} in banger's known_hosts: its entry was removed or the VM was not created by this banger; recreate the VM"
    )]
    HostKeyNotPinned { vm: String },

    #[error("ssh to VM {vm} not ready after {:.1} s: {last_error}", waited.as_secs_f64())]
    Timeout {
        vm: String,
        waited: Duration,
        last_error: String,
    },

    #[error("{}: {why}", path.display())]
    UserConfig { path: PathBuf, why: String },

    #[error("ssh failed: {detail}")]
    Connection { detail: String },
}

impl SshError {
    pub(crate) fn io(action: impl Into<String>, source: io::Error) -> Self {
        SshError::Io {
            action: action.into(),
            source,
        }
    }
}
