//! The system install (`sudo banger system install --owner USER`): where
//! its metadata lives, what it records, and the fixed directories the
//! owner's daemon and the root helper use. `banger`, `bangerd --system` and
//! `bangerd --root-helper` all read [`INSTALL_FILE`]; only `banger system
//! install` writes it.
//!
//! The file is root's (0644 in a root-owned `/etc/banger`), so nothing in
//! it is the owner's to change: the helper takes the owner's uid from it,
//! never from a request.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Paths;

/// The install's metadata.
pub const INSTALL_FILE: &str = "/etc/banger/install.toml";
/// The owner daemon's state (database, images, VMs' disks).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/banger";
/// The owner daemon's caches (apt packages, OCI blobs, built images).
pub const SYSTEM_CACHE_DIR: &str = "/var/cache/banger";
/// The owner daemon's runtime directory: the CLI's socket, VMs' sockets.
pub const SYSTEM_RUNTIME_DIR: &str = "/run/banger";
/// The root helper's runtime directory.
pub const HELPER_RUNTIME_DIR: &str = "/run/banger-root";
/// The root helper's socket; it accepts only the owner's uid.
pub const HELPER_SOCKET: &str = "/run/banger-root/bangerd-root.sock";
/// The owner daemon's unit.
pub const DAEMON_UNIT: &str = "bangerd.service";
/// The root helper's unit.
pub const HELPER_UNIT: &str = "bangerd-root.service";

/// What `banger system install` recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// banger's version that wrote the install.
    pub version: String,
    /// The user whose daemon this is.
    pub owner: String,
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// The owner's home: their `~/.config/banger` is the daemon's config.
    pub owner_home: PathBuf,
    /// Where the binaries went (`bin/`) and the guest files (`lib/banger/`).
    pub prefix: PathBuf,
    /// When, in seconds since the epoch.
    pub installed_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a banger install record ({reason}): run 'sudo banger system install' again"
    )]
    Parse { path: PathBuf, reason: String },
}

impl Install {
    /// The install at [`INSTALL_FILE`] (or `BANGER_INSTALL_FILE`, which
    /// tests use), or None when banger is not installed as a service.
    pub fn find() -> Result<Option<Self>, InstallError> {
        Self::load_if_present(&install_file())
    }

    /// The record at `path`, or None when there is none.
    pub fn load_if_present(path: &Path) -> Result<Option<Self>, InstallError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(InstallError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, InstallError> {
        toml::from_str(text).map_err(|e| InstallError::Parse {
            path: path.to_path_buf(),
            reason: e.message().replace('\n', " "),
        })
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# Written by 'banger system install'; read by banger, bangerd and its root helper.\n\
             # Change it with 'sudo banger system install' again, not by hand.\n{body}"
        )
    }

    /// The directories of the owner's daemon under this install.
    pub fn paths(&self) -> Paths {
        Paths::system(&self.owner_home)
    }

    /// `bin/` under the prefix.
    pub fn bin_dir(&self) -> PathBuf {
        self.prefix.join("bin")
    }

    /// `lib/banger/` under the prefix: guest binaries (banger-init).
    pub fn lib_dir(&self) -> PathBuf {
        self.prefix.join("lib").join("banger")
    }
}

/// Where the install record is looked for.
pub fn install_file() -> PathBuf {
    std::env::var_os("BANGER_INSTALL_FILE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(INSTALL_FILE), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Install {
        Install {
            version: "0.1.0".into(),
            owner: "alice".into(),
            owner_uid: 1000,
            owner_gid: 1000,
            owner_home: "/home/alice".into(),
            prefix: "/usr/local".into(),
            installed_at: 1_764_567_890,
        }
    }

    #[test]
    fn round_trips_through_its_file() {
        let text = sample().to_toml();
        assert!(text.starts_with("# Written by"));
        assert_eq!(Install::parse(&text, Path::new("/x")).unwrap(), sample());
    }

    #[test]
    fn unknown_and_missing_keys_are_refused() {
        let extra = format!("{}surprise = 1\n", sample().to_toml());
        let e = Install::parse(&extra, Path::new("/etc/banger/install.toml")).unwrap_err();
        assert!(e.to_string().contains("surprise"), "{e}");
        let e = Install::parse("owner = \"alice\"\n", Path::new("/x")).unwrap_err();
        assert!(e.to_string().contains("system install"), "{e}");
    }

    #[test]
    fn absent_file_is_no_install() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Install::load_if_present(&dir.path().join("install.toml")).unwrap(),
            None
        );
    }

    #[test]
    fn system_paths_keep_config_in_the_owners_home_and_the_rest_in_var() {
        let p = sample().paths();
        assert_eq!(
            p.config_file(),
            Path::new("/home/alice/.config/banger/config.toml")
        );
        assert_eq!(p.database(), Path::new("/var/lib/banger/banger.db"));
        assert_eq!(p.socket(), Path::new("/run/banger/bangerd.sock"));
        assert_eq!(p.cache_dir, Path::new("/var/cache/banger"));
        // The daemon cannot write the owner's home: what it generates for
        // the user's ssh lives with its state.
        assert_eq!(p.ssh_config(), Path::new("/var/lib/banger/ssh_config"));
        assert!(p.system);
    }
}
