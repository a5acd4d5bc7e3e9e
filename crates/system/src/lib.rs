//! The system install (`sudo banger system install --owner USER`, issue 15):
//! the two systemd units rendered from the install record ([`units`]), the
//! host changes an install makes and their undoing ([`setup`]: binaries
//! under the prefix, the record in `/etc/banger`, the owner's subordinate
//! ids and `kvm` group), and the probes `banger system status` and `banger
//! doctor` read ([`probe`], [`systemctl`]).
//!
//! It changes the host only when `banger system` asks, as root. It never
//! touches the owner's home, and an install over an older one keeps
//! banger's state. Host tools run with argument vectors, never a shell.
#![deny(unsafe_code)]

pub mod accounts;
pub mod files;
pub mod probe;
pub mod setup;
pub mod systemctl;
pub mod units;

use std::path::PathBuf;

use banger_images::host_command::CommandError;

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error(
        "'banger system {command}' changes the host's services and needs root: run it with sudo"
    )]
    NotRoot { command: &'static str },
    #[error(
        "'banger system {command}' needs systemd as PID 1, and this host has none \
         ({} is missing): banger works here without an install, in dev mode (run it as root \
         and it starts bangerd itself)",
        systemctl::SYSTEMD_RUN_DIR
    )]
    NoSystemd { command: &'static str },
    #[error("user {0:?} does not exist: create it first, or name another with --owner")]
    UnknownOwner(String),
    #[error(
        "the owner cannot be root: the point of the install is a daemon that runs without root; \
         name your own user, e.g. --owner \"$SUDO_USER\""
    )]
    RootOwner,
    #[error("user name {0:?} has characters a systemd unit cannot hold: name another user")]
    OddOwnerName(String),
    #[error("cannot look up user {name:?}: {source}")]
    OwnerLookup { name: String, source: nix::Error },
    #[error(
        "banger is installed for {installed}, not {asked}: run 'sudo banger system uninstall' \
         first to change the owner (add --purge to drop {installed}'s VMs and images)"
    )]
    OwnerChanged { installed: String, asked: String },
    #[error(
        "banger is installed under {}, not {}: run 'sudo banger system uninstall' first to \
         move it",
        installed.display(),
        asked.display()
    )]
    PrefixChanged { installed: PathBuf, asked: PathBuf },
    #[error(
        "--prefix {0:?} must be an absolute path of letters, digits and '/._+-', like /usr/local"
    )]
    BadPrefix(PathBuf),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find {what} to install ({why}): {fix}")]
    MissingSource {
        what: &'static str,
        why: String,
        fix: &'static str,
    },
    #[error("{0}")]
    Tool(#[from] CommandError),
    #[error("{0}")]
    Install(#[from] banger_config::InstallError),
}

impl SystemError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| SystemError::Io { what, path, source }
    }
}

/// Refuses `banger system COMMAND` unless this process is root.
pub fn require_root(command: &'static str) -> Result<(), SystemError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(SystemError::NotRoot { command })
    }
}

/// Refuses `banger system COMMAND` unless systemd runs this host.
pub fn require_systemd(command: &'static str) -> Result<(), SystemError> {
    if systemctl::systemd_runs() {
        Ok(())
    } else {
        Err(SystemError::NoSystemd { command })
    }
}
