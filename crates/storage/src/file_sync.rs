//! `[[file_sync]]`: files from the user's home copied onto a new VM's work
//! disk (its `/root`) before the first boot. Everything here decides what
//! to copy and refuses what must not be: guest paths outside `/root`, host
//! paths that resolve outside the user's home (directly or through a
//! symlink). A missing or refused entry is a warning, never a failure: a
//! config typo must not stop VMs from being created.

use std::fs;
use std::path::{Component, Path, PathBuf};

use banger_config::FileSyncEntry;

use crate::SeedFile;

/// Files copied without an explicit `mode` get this.
pub const DEFAULT_MODE: u32 = 0o600;

/// What the entries add to the work disk, and what was skipped and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub files: Vec<SeedFile>,
    pub warnings: Vec<String>,
}

/// Where an entry lands, relative to `/root` (the work disk's root).
pub fn guest_relative(guest: &str) -> Result<PathBuf, String> {
    let rest = guest
        .strip_prefix("~/")
        .or_else(|| guest.strip_prefix("/root/"))
        .ok_or_else(|| format!("guest path {guest:?} must start with ~/ or /root/"))?;
    let rel = PathBuf::from(rest);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "guest path {guest:?} must name a file or folder under /root, without '..'"
        ));
    }
    Ok(rel)
}

/// The host path an entry names, resolved (symlinks followed) and checked
/// to stay inside `home`. `Ok(None)` when it does not exist.
pub fn host_source(host: &str, home: &Path) -> Result<Option<PathBuf>, String> {
    let path = match host.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if Path::new(host).is_absolute() => PathBuf::from(host),
        None => {
            return Err(format!(
                "host path {host:?} must be absolute or start with ~/"
            ));
        }
    };
    if fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let resolved = path
        .canonicalize()
        .map_err(|e| format!("host path {host:?} cannot be resolved: {e}"))?;
    let home = home
        .canonicalize()
        .map_err(|e| format!("home {} cannot be resolved: {e}", home.display()))?;
    if !resolved.starts_with(&home) {
        return Err(format!(
            "host path {host:?} resolves to {}, outside your home {}: not copied",
            resolved.display(),
            home.display()
        ));
    }
    Ok(Some(resolved))
}

/// Is this entry usable? For `doctor`: `Err` says why not; a missing host
/// path is `Ok(false)`.
pub fn check(entry: &FileSyncEntry, home: &Path) -> Result<bool, String> {
    guest_relative(&entry.guest)?;
    Ok(host_source(&entry.host, home)?.is_some())
}

/// Reads every entry into seed files for the work disk.
pub fn plan(entries: &[FileSyncEntry], home: &Path) -> SyncPlan {
    let mut plan = SyncPlan::default();
    for entry in entries {
        let dest = match guest_relative(&entry.guest) {
            Ok(d) => d,
            Err(e) => {
                plan.warnings.push(format!("file_sync: {e}; skipped"));
                continue;
            }
        };
        let source = match host_source(&entry.host, home) {
            Ok(Some(s)) => s,
            Ok(None) => {
                plan.warnings
                    .push(format!("file_sync: {} does not exist; skipped", entry.host));
                continue;
            }
            Err(e) => {
                plan.warnings.push(format!("file_sync: {e}"));
                continue;
            }
        };
        add(&mut plan, &source, &dest, entry.mode);
    }
    plan
}

/// Adds a file, or a folder's files recursively; links met inside a
/// folder are skipped with a warning (never followed).
fn add(plan: &mut SyncPlan, source: &Path, dest: &Path, mode: Option<u32>) {
    let meta = match fs::symlink_metadata(source) {
        Ok(m) => m,
        Err(e) => {
            plan.warnings.push(format!(
                "file_sync: cannot read {}: {e}; skipped",
                source.display()
            ));
            return;
        }
    };
    if meta.file_type().is_symlink() {
        plan.warnings.push(format!(
            "file_sync: {} is a symlink inside a synced folder; skipped",
            source.display()
        ));
    } else if meta.is_dir() {
        let Ok(entries) = fs::read_dir(source) else {
            plan.warnings.push(format!(
                "file_sync: cannot list {}; skipped",
                source.display()
            ));
            return;
        };
        let mut names: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            add(plan, &source.join(&name), &dest.join(&name), mode);
        }
    } else if meta.is_file() {
        match fs::read(source) {
            Ok(contents) => plan.files.push(SeedFile {
                path: dest.to_string_lossy().into_owned(),
                contents,
                mode: mode.unwrap_or(DEFAULT_MODE) & 0o7777,
            }),
            Err(e) => plan.warnings.push(format!(
                "file_sync: cannot read {}: {e}; skipped",
                source.display()
            )),
        }
    } else {
        plan.warnings.push(format!(
            "file_sync: {} is not a regular file or folder; skipped",
            source.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entry(host: &str, guest: &str, mode: Option<u32>) -> FileSyncEntry {
        FileSyncEntry {
            host: host.into(),
            guest: guest.into(),
            mode,
        }
    }

    #[test]
    fn guest_paths_stay_under_root() {
        assert_eq!(
            guest_relative("~/.gitconfig").unwrap(),
            PathBuf::from(".gitconfig")
        );
        assert_eq!(guest_relative("/root/a/b").unwrap(), PathBuf::from("a/b"));
        for bad in [
            "/etc/passwd",
            "~/../etc/x",
            "/root/",
            "~/",
            "relative",
            "/root/a/../../x",
        ] {
            assert!(guest_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn copies_files_and_folders_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let outside = dir.path().join("outside");
        fs::create_dir_all(home.join(".config/tool/sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(home.join(".gitconfig"), "[user]\n").unwrap();
        fs::write(home.join(".config/tool/a"), "A").unwrap();
        fs::write(home.join(".config/tool/sub/b"), "B").unwrap();
        fs::write(outside.join("secret"), "S").unwrap();
        symlink(outside.join("secret"), home.join(".config/tool/link")).unwrap();
        symlink(&outside, home.join("escape")).unwrap();
        symlink(home.join(".gitconfig"), home.join("alias")).unwrap();

        let p = plan(
            &[
                entry("~/.gitconfig", "~/.gitconfig", None),
                entry("~/.config/tool", "/root/.config/tool", Some(0o640)),
                entry("~/escape", "~/escape", None),
                entry("~/alias", "~/alias", None),
                entry("~/missing", "~/missing", None),
                entry(outside.join("secret").to_str().unwrap(), "~/s", None),
                entry("~/.gitconfig", "/etc/gitconfig", None),
            ],
            &home,
        );
        let got: Vec<(&str, &[u8], u32)> = p
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_slice(), f.mode))
            .collect();
        assert_eq!(
            got,
            [
                (".gitconfig", b"[user]\n".as_slice(), 0o600),
                (".config/tool/a", b"A".as_slice(), 0o640),
                (".config/tool/sub/b", b"B".as_slice(), 0o640),
                // A top-level link inside home is followed.
                ("alias", b"[user]\n".as_slice(), 0o600),
            ]
        );
        let warnings = p.warnings.join("\n");
        assert!(
            warnings.contains("link is a symlink inside a synced folder"),
            "{warnings}"
        );
        assert!(warnings.contains("\"~/escape\" resolves to"), "{warnings}");
        assert!(warnings.contains("~/missing does not exist"), "{warnings}");
        assert!(warnings.contains("outside your home"), "{warnings}");
        assert!(
            warnings.contains("must start with ~/ or /root/"),
            "{warnings}"
        );
        assert_eq!(p.warnings.len(), 5, "{warnings}");

        assert_eq!(
            check(&entry("~/.gitconfig", "~/.gitconfig", None), &home),
            Ok(true)
        );
        assert_eq!(check(&entry("~/missing", "~/m", None), &home), Ok(false));
        assert!(check(&entry("~/escape", "~/e", None), &home).is_err());
        assert!(check(&entry("relative", "~/e", None), &home).is_err());
    }
}
