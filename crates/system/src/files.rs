//! Files the install puts in place: each written beside its destination
//! and renamed over it, so an upgrade replaces a binary that is running
//! (the old inode lives on until its process exits; writing into it would
//! fail with ETXTBSY) and a crash leaves the old file or the new one,
//! never half of one.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Copies `src` to `dest` with `mode`, atomically.
pub fn install_copy(src: &Path, dest: &Path, mode: u32) -> io::Result<()> {
    let bytes = fs::read(src)?;
    write_atomic(dest, &bytes, mode)
}

/// Writes `bytes` to `dest` with `mode`, atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_beside(dest)?;
    let result = (|| {
        // A leftover from an interrupted install is ours to replace.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode asked for, whatever sudo's umask is.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_beside(dest: &Path) -> io::Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".banger-install");
    Ok(dest.with_file_name(tmp))
}

/// Creates `dir` (and its parents) and gives it `mode`.
pub fn make_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(mode))
}

/// Removes a file, or a directory and everything in it (never following a
/// link out of it); an absent path is already removed. True when
/// something was there.
pub fn remove_path(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map(|()| true),
        Ok(_) => fs::remove_file(path).map(|()| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_running_binary_is_replaced_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("new");
        let dest = dir.path().join("bangerd");
        fs::write(&src, b"new").unwrap();
        fs::write(&dest, b"old").unwrap();
        let before = fs::metadata(&dest).unwrap().ino();
        // An open handle stands in for the running process.
        let held = fs::File::open(&dest).unwrap();
        install_copy(&src, &dest, 0o755).unwrap();
        let after = fs::metadata(&dest).unwrap();
        assert_ne!(after.ino(), before, "a new inode, renamed into place");
        assert_eq!(after.mode() & 0o7777, 0o755);
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(held.metadata().unwrap().len(), 3);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file left");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("banger");
        fs::write(&dest, b"old").unwrap();
        let err = install_copy(&dir.path().join("absent"), &dest, 0o755);
        assert!(err.is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
    }

    #[test]
    fn removal_takes_trees_and_leaves_link_targets() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        assert!(remove_path(&tree).unwrap());
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        assert!(!remove_path(&tree).unwrap());
    }
}
