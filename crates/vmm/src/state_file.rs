//! The files a saved VM state lives in. They hold a guest's whole memory,
//! keys and all: a save creates them afresh with mode 0600, never
//! writing into an existing file or through a symlink; a restore opens
//! them without following a symlink, and only if they are regular
//! files; a failed save removes what it wrote.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::error::VmmError;

/// How errors of a save name what they were doing.
pub(crate) const SAVING: &str = "saving the VM's state to";
/// How errors of a restore name what they were doing.
pub(crate) const RESTORING: &str = "restoring the VM's state from";

/// Creates `path` for writing: it must not exist (`O_EXCL`, which also
/// refuses a symlink, even a dangling one), mode 0600 (less if the umask
/// says so), not inherited by children (`O_CLOEXEC`, std's default).
pub(crate) fn create(path: &Path) -> Result<File, VmmError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|source| VmmError::Io {
            what: "creating the saved state",
            path: path.to_path_buf(),
            source,
        })
}

/// Opens a saved state for reading: not through a symlink
/// (`O_NOFOLLOW`), and only a regular file. `O_NONBLOCK` keeps a FIFO
/// put there from blocking the open; it changes nothing for a regular
/// file.
pub(crate) fn open(path: &Path) -> Result<File, VmmError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|source| VmmError::Io {
            what: "opening the saved state",
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| VmmError::Io {
        what: "reading the saved state",
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    Ok(file)
}

/// For a backend that opens the file itself (Firecracker): `path` is a
/// regular file, not a symlink. (The folder is the caller's, so nobody
/// else swaps it between this check and the open.)
pub(crate) fn check(path: &Path) -> Result<(), VmmError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| VmmError::Io {
        what: "opening the saved state",
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(not_regular(path))
    }
}

fn not_regular(path: &Path) -> VmmError {
    VmmError::State {
        action: RESTORING,
        path: path.to_path_buf(),
        message: "not a regular file (a symlink, folder or device is refused)".into(),
    }
}

/// Removes what a failed save left; a file already gone is fine, and a
/// removal that fails only gets a warning (the save's own error is the
/// one the caller needs).
pub(crate) fn remove(paths: &[PathBuf]) {
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "cannot remove a partial saved state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_afresh_private_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let mut f = create(&path).unwrap();
        f.write_all(b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        let err = create(&path).unwrap_err().to_string();
        assert!(err.starts_with("creating the saved state "), "{err}");
        assert!(err.contains("exists"), "{err}");
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create(&link).is_err());
        assert!(!target.exists(), "nothing was written through the symlink");
    }

    #[test]
    fn opened_only_as_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        std::fs::write(&path, b"QEVM").unwrap();
        assert!(open(&path).is_ok());
        assert!(check(&path).is_ok());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(open(&link).is_err());
        let err = check(&link).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = open(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = open(&dir.path().join("none")).unwrap_err().to_string();
        assert!(err.starts_with("opening the saved state "), "{err}");
        remove(&[path.clone(), dir.path().join("none")]);
        assert!(!path.exists());
    }
}
