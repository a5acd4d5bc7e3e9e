//! One daemon per state directory. The lock is an `flock` on
//! `bangerd.lock`, so it is released by the kernel when the daemon dies,
//! however it dies: a crash never leaves a lock that blocks the next start.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::dirs::{OwnFileError, open_own};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another bangerd{} is already running for {state_dir}: use 'banger daemon stop' first",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        pid: Option<u32>,
        state_dir: PathBuf,
    },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Open(#[from] OwnFileError),
}

/// Held for the daemon's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Never through a link: the pid is written over what is there.
        let mut file = open_own(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600),
        )?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    pid: text.trim().parse().ok(),
                    state_dir: path.parent().unwrap_or(path).to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bangerd.lock");
        let first = DaemonLock::acquire(&path).unwrap();
        let err = DaemonLock::acquire(&path).unwrap_err();
        match &err {
            LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("banger daemon stop"), "{err}");
        drop(first);
        DaemonLock::acquire(&path).unwrap();
    }

    #[test]
    fn a_link_planted_as_the_lock_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"not a pid\n").unwrap();
        let path = dir.path().join("bangerd.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = DaemonLock::acquire(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"not a pid\n");
    }
}
