//! Per-VM files the host put on the system disk (`banger/files/`, laid
//! out like the guest's root: `etc/ssh/ssh_host_ed25519_key`,
//! `root/.ssh/authorized_keys`, …), copied into the new root at every boot
//! with their modes and owned by root.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;

use crate::failure::{Context, Failure};

/// What was copied, for the boot summary.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub files: usize,
    pub dirs: usize,
}

/// Copies the tree at `src` into `root`. `owner` is (uid, gid) for every
/// copied entry (`Some((0, 0))` in the guest; tests that run unprivileged
/// pass `None`). Nothing is written through a symlink: a symlink where the
/// tree has a file or directory is an error, since outside the new root's
/// chroot it could point anywhere.
pub fn copy_tree(src: &Path, root: &Path, owner: Option<(u32, u32)>) -> Result<Copied, Failure> {
    let mut copied = Copied::default();
    if !src.exists() {
        return Ok(copied);
    }
    copy_dir(src, root, Path::new(""), owner, &mut copied)?;
    Ok(copied)
}

fn copy_dir(
    src_root: &Path,
    dst_root: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
    copied: &mut Copied,
) -> Result<(), Failure> {
    let src = src_root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&src)
        .context(|| format!("reading per-VM files in {}", src.display()))?
        .collect::<Result<_, _>>()
        .context(|| format!("reading per-VM files in {}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = rel.join(entry.file_name());
        let from = src_root.join(&rel);
        let to = dst_root.join(&rel);
        let what = || format!("copying per-VM file /{}", rel.display());
        let meta = fs::symlink_metadata(&from).context(what)?;
        let mode = meta.permissions().mode() & 0o7777;
        match fs::symlink_metadata(&to) {
            Ok(existing) if existing.file_type().is_symlink() => {
                return Err(Failure::new(
                    what(),
                    "the image has a symlink there; refusing to write through it",
                ));
            }
            Ok(_) | Err(_) => {}
        }
        if meta.is_dir() {
            match fs::create_dir(&to) {
                Ok(()) => {
                    copied.dirs += 1;
                    set_owner_and_mode(&to, owner, mode).context(what)?;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists && to.is_dir() => {}
                Err(e) => return Err(Failure::new(what(), e)),
            }
            copy_dir(src_root, dst_root, &rel, owner, copied)?;
        } else if meta.is_file() {
            // Replace rather than overwrite: a hard link in the image must
            // not carry our content elsewhere.
            match fs::remove_file(&to) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Failure::new(what(), e)),
            }
            fs::copy(&from, &to).context(what)?;
            set_owner_and_mode(&to, owner, mode).context(what)?;
            copied.files += 1;
        } else {
            return Err(Failure::new(
                what(),
                "only regular files and directories are supported",
            ));
        }
    }
    Ok(())
}

fn set_owner_and_mode(path: &Path, owner: Option<(u32, u32)>, mode: u32) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid), Some(gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Writes `content` to `path` as a fresh regular file (mode 0644), removing
/// whatever was there first, so a symlink in the image (resolv.conf often
/// is one) is replaced rather than followed out of the new root.
pub fn replace_file(path: &Path, content: &str) -> Result<(), Failure> {
    let what = || format!("writing {}", path.display());
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::new(what(), e)),
    }
    fs::write(path, content).context(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_with_their_modes_into_existing_and_new_dirs() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("etc/ssh")).unwrap();
        fs::create_dir_all(src.path().join("root/.ssh")).unwrap();
        fs::set_permissions(
            src.path().join("root/.ssh"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        fs::write(src.path().join("etc/ssh/ssh_host_ed25519_key"), "KEY").unwrap();
        fs::set_permissions(
            src.path().join("etc/ssh/ssh_host_ed25519_key"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        fs::write(
            src.path().join("root/.ssh/authorized_keys"),
            "ssh-ed25519 AAAA",
        )
        .unwrap();
        // The image already has /etc/ssh with an old key; /root exists.
        fs::create_dir_all(root.path().join("etc/ssh")).unwrap();
        fs::write(root.path().join("etc/ssh/ssh_host_ed25519_key"), "OLD").unwrap();
        fs::create_dir_all(root.path().join("root")).unwrap();

        let copied = copy_tree(src.path(), root.path(), None).unwrap();
        assert_eq!(copied, Copied { files: 2, dirs: 1 });
        let key = root.path().join("etc/ssh/ssh_host_ed25519_key");
        assert_eq!(fs::read_to_string(&key).unwrap(), "KEY");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let ssh_dir = root.path().join("root/.ssh");
        assert_eq!(
            fs::metadata(&ssh_dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::read_to_string(ssh_dir.join("authorized_keys")).unwrap(),
            "ssh-ed25519 AAAA"
        );
    }

    #[test]
    fn an_absent_tree_copies_nothing() {
        let root = tempfile::tempdir().unwrap();
        let copied = copy_tree(&root.path().join("none"), root.path(), None).unwrap();
        assert_eq!(copied, Copied::default());
    }

    #[test]
    fn refuses_to_write_through_symlinks() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("etc")).unwrap();
        fs::write(src.path().join("etc/resolv.conf"), "x").unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.path().join("target"),
            root.path().join("etc/resolv.conf"),
        )
        .unwrap();
        let err = copy_tree(src.path(), root.path(), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "banger-init: copying per-VM file /etc/resolv.conf: the image has a symlink there; refusing to write through it"
        );
        assert!(!elsewhere.path().join("target").exists());
    }

    #[test]
    fn replacing_a_symlink_does_not_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "theirs").unwrap();
        let link = dir.path().join("resolv.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        replace_file(&link, "ours").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "theirs");
        assert_eq!(fs::read_to_string(&link).unwrap(), "ours");
        assert!(
            !fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
