//! Reaching a guest over SSH (DESIGN.md, "guest"): the managed ed25519 user
//! key, per-VM sshd host keys generated on the host and pinned in banger's
//! own known_hosts before the VM first boots, and OpenSSH sessions
//! multiplexed over one ControlMaster per VM; and which files of a user's
//! directory a workspace sends into a guest, as one tar stream (`workspace`).
//!
//! It drives the system OpenSSH tools (`ssh`, `ssh-keygen`) with argument
//! vectors, never a shell; only the remote command line is quoted, for the
//! guest's shell. It writes banger's own ssh_config (`Host *.vm`, for plain
//! `ssh NAME.vm`). It must not touch the user's `~/.ssh` (no config, no
//! known_hosts, no default keys are read or written) except through
//! [`user_config`], which `banger ssh-config --install` calls, never creates or
//! modifies a user-configured key, and knows nothing of VMs beyond a name,
//! an address and the paths it is handed: placing the host key on the
//! system disk and the user key on the work disk is the orchestrator's job.
#![deny(unsafe_code)]

pub mod agent;
mod error;
mod keys;
mod known_hosts;
mod openssh;
mod session;
mod ssh_config;
pub mod user_config;
pub mod workspace;

pub use error::SshError;
pub use keys::{HOST_KEY_FILE, ensure_user_key, generate_host_key};
pub use known_hosts::{KnownHosts, host_key_alias};
pub use session::{SshTarget, exit_code};
pub use ssh_config::{VM_HOSTS, VmSshConfig, close_master};
