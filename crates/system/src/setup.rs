//! Installing and removing: the binaries under the prefix, the record,
//! the owner's account, the units. Each step is idempotent, so an install
//! over an older one is an upgrade in place and a failed one is finished
//! by running it again; banger's state directories are never touched here
//! (systemd makes them, `uninstall --purge` alone removes them).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use banger_config::Install;
use banger_config::install::{
    DAEMON_UNIT, HELPER_RUNTIME_DIR, HELPER_UNIT, SYSTEM_CACHE_DIR, SYSTEM_RUNTIME_DIR,
    SYSTEM_STATE_DIR, install_file,
};

use crate::SystemError;
use crate::accounts::{self, Owner};
use crate::files::{install_copy, make_dir, remove_path, write_atomic};
use crate::systemctl::systemctl;
use crate::units;

/// The prefix binaries go under unless `--prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "/usr/local";

/// The files an install copies, found by the caller (next to `banger`).
#[derive(Clone, Debug)]
pub struct Sources {
    pub banger: PathBuf,
    pub bangerd: PathBuf,
    /// The static guest init.
    pub init: PathBuf,
}

/// Something the install did, for the CLI to tell the user.
pub type Say<'a> = &'a mut dyn FnMut(String);

/// `prefix` if banger can put it in a unit's `ExecStart=` as is.
pub fn check_prefix(prefix: &Path) -> Result<(), SystemError> {
    let text = prefix.to_str().unwrap_or("");
    let ok = prefix.is_absolute()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '+' | '-'))
        && !prefix
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if ok {
        Ok(())
    } else {
        Err(SystemError::BadPrefix(prefix.to_path_buf()))
    }
}

/// The record this install writes: the same owner and prefix as an older
/// install (anything else is refused: its state belongs to that owner, its
/// binaries are under that prefix), keeping when it was first installed,
/// since that dates the state it keeps.
pub fn plan_record(
    owner: &Owner,
    prefix: &Path,
    older: Option<&Install>,
    now: i64,
) -> Result<Install, SystemError> {
    if let Some(old) = older {
        if old.owner != owner.name || old.owner_uid != owner.uid {
            return Err(SystemError::OwnerChanged {
                installed: old.owner.clone(),
                asked: owner.name.clone(),
            });
        }
        if old.prefix != prefix {
            return Err(SystemError::PrefixChanged {
                installed: old.prefix.clone(),
                asked: prefix.to_path_buf(),
            });
        }
    }
    Ok(Install {
        version: env!("CARGO_PKG_VERSION").to_string(),
        owner: owner.name.clone(),
        owner_uid: owner.uid,
        owner_gid: owner.gid,
        owner_home: owner.home.clone(),
        prefix: prefix.to_path_buf(),
        installed_at: older.map_or(now, |o| o.installed_at),
    })
}

/// Installs (or upgrades) for `owner_name` under `prefix` and (re)starts
/// both units. The caller has checked root and systemd, and waits for the
/// daemon to answer afterwards.
pub fn install(
    owner_name: &str,
    prefix: &Path,
    sources: &Sources,
    say: Say,
) -> Result<Install, SystemError> {
    check_prefix(prefix)?;
    let owner = accounts::resolve_owner(owner_name)?;
    let older = Install::find()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let record = plan_record(&owner, prefix, older.as_ref(), now)?;

    let bin = record.bin_dir();
    let lib = record.lib_dir();
    for dir in [&bin, &lib] {
        make_dir(dir, 0o755).map_err(SystemError::io("cannot create", dir.clone()))?;
    }
    for (src, dest) in [
        (&sources.banger, bin.join("banger")),
        (&sources.bangerd, bin.join("bangerd")),
        (&sources.init, lib.join("banger-init")),
    ] {
        install_copy(src, &dest, 0o755).map_err(SystemError::io("cannot install", dest.clone()))?;
        say(format!("installed {}", dest.display()));
    }

    let record_file = install_file();
    if let Some(dir) = record_file.parent() {
        make_dir(dir, 0o755).map_err(SystemError::io("cannot create", dir))?;
    }
    write_atomic(&record_file, record.to_toml().as_bytes(), 0o644)
        .map_err(SystemError::io("cannot write", record_file.clone()))?;
    say(format!("wrote {}", record_file.display()));

    if let Some(what) = accounts::ensure_subids(&owner)? {
        say(format!("gave {} subordinate ids: {what}", owner.name));
    }
    if accounts::ensure_kvm_member(&owner)? {
        say(format!(
            "added {} to the kvm group (their own logins see it after logging in again)",
            owner.name
        ));
    }

    let kvm = accounts::kvm_group().is_some();
    let [helper_file, daemon_file] = units::unit_files();
    for (file, text) in [
        (&helper_file, units::helper_unit(&record)),
        (&daemon_file, units::daemon_unit(&record, kvm)),
    ] {
        write_atomic(file, text.as_bytes(), 0o644)
            .map_err(SystemError::io("cannot write", file.clone()))?;
        say(format!("wrote {}", file.display()));
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--quiet", HELPER_UNIT, DAEMON_UNIT])?;
    // restart, not start: an upgrade must run the new binaries. The daemon
    // keeps its VMs across it (KillMode=process).
    systemctl(&["restart", HELPER_UNIT, DAEMON_UNIT])?;
    say(format!(
        "{} and {} {}",
        HELPER_UNIT,
        DAEMON_UNIT,
        if older.is_some() {
            "restarted"
        } else {
            "enabled and started"
        }
    ));
    Ok(record)
}

/// `systemctl restart` of both units, helper first.
pub fn restart() -> Result<(), SystemError> {
    systemctl(&["restart", HELPER_UNIT, DAEMON_UNIT])
}

/// What `banger system uninstall` removes besides the units: the binaries
/// and the record; with `purge`, banger's state, caches and runtime
/// directories too. Never anything in the owner's home.
pub fn removable_paths(install: Option<&Install>, purge: bool) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(i) = install {
        paths.push(i.bin_dir().join("banger"));
        paths.push(i.bin_dir().join("bangerd"));
        paths.push(i.lib_dir());
    }
    if let Some(dir) = install_file().parent() {
        paths.push(dir.to_path_buf());
    }
    if purge {
        for dir in [
            SYSTEM_STATE_DIR,
            SYSTEM_CACHE_DIR,
            SYSTEM_RUNTIME_DIR,
            HELPER_RUNTIME_DIR,
        ] {
            paths.push(PathBuf::from(dir));
        }
    }
    paths
}

/// Stops, disables and removes both units, then removes
/// [`removable_paths`]. Running VMs are the caller's to stop first.
pub fn uninstall(install: Option<&Install>, purge: bool, say: Say) -> Result<(), SystemError> {
    let unit_files = units::unit_files();
    if unit_files.iter().any(|f| f.exists()) {
        // Daemon first: it needs the helper to tear anything down.
        systemctl(&["disable", "--now", "--quiet", DAEMON_UNIT, HELPER_UNIT])?;
        say(format!(
            "stopped and disabled {DAEMON_UNIT} and {HELPER_UNIT}"
        ));
    }
    for file in &unit_files {
        if remove_path(file).map_err(SystemError::io("cannot remove", file.clone()))? {
            say(format!("removed {}", file.display()));
        }
    }
    systemctl(&["daemon-reload"])?;
    // A unit that failed stays listed as failed until this.
    let _ = systemctl(&["reset-failed", DAEMON_UNIT, HELPER_UNIT]);
    for path in removable_paths(install, purge) {
        if remove_path(&path).map_err(SystemError::io("cannot remove", path.clone()))? {
            say(format!("removed {}", path.display()));
        }
    }
    Ok(())
}

/// Whether anything of an install is on this host (a record or a unit).
pub fn anything_installed(install: Option<&Install>) -> bool {
    install.is_some() || units::unit_files().iter().any(|f| f.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Owner {
        Owner {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/alice".into(),
        }
    }

    #[test]
    fn prefixes_that_a_unit_cannot_hold_are_refused() {
        for ok in ["/usr/local", "/opt/banger-1.2", "/srv/b_x+y"] {
            assert!(check_prefix(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "usr/local",
            "/opt/my banger",
            "/opt/a\nb",
            "/opt/../etc",
            "/o$x",
        ] {
            let e = check_prefix(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("/usr/local"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_reinstall_keeps_its_first_date_and_refuses_another_owner_or_prefix() {
        let first = plan_record(&alice(), Path::new("/usr/local"), None, 100).unwrap();
        assert_eq!(first.installed_at, 100);
        assert_eq!(first.owner_home, Path::new("/home/alice"));
        let again = plan_record(&alice(), Path::new("/usr/local"), Some(&first), 200).unwrap();
        assert_eq!(again.installed_at, 100);
        let bob = Owner {
            name: "bob".into(),
            uid: 1001,
            ..alice()
        };
        let e = plan_record(&bob, Path::new("/usr/local"), Some(&first), 200)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("installed for alice") && e.contains("uninstall"),
            "{e}"
        );
        let e = plan_record(&alice(), Path::new("/opt"), Some(&first), 200)
            .unwrap_err()
            .to_string();
        assert!(e.contains("under /usr/local"), "{e}");
    }

    #[test]
    fn purge_adds_state_and_never_the_owners_home() {
        let record = plan_record(&alice(), Path::new("/usr/local"), None, 1).unwrap();
        let plain = removable_paths(Some(&record), false);
        assert!(plain.contains(&PathBuf::from("/usr/local/bin/bangerd")));
        assert!(plain.contains(&PathBuf::from("/usr/local/lib/banger")));
        assert!(!plain.contains(&PathBuf::from(SYSTEM_STATE_DIR)));
        let purge = removable_paths(Some(&record), true);
        for dir in [
            "/var/lib/banger",
            "/var/cache/banger",
            "/run/banger",
            "/run/banger-root",
        ] {
            assert!(purge.contains(&PathBuf::from(dir)), "{dir}");
        }
        assert!(!purge.iter().any(|p| p.starts_with("/home")), "{purge:?}");
        assert!(!purge.contains(&PathBuf::from("/usr/local/bin")));
    }
}
