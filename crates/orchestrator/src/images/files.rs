//! Putting files in place: hard links from the build cache, copies of a
//! user's file, downloads pinned by a catalog, and the checks on them.

use std::fs::{self, File, Permissions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_images::catalog::{Location, PinnedFile};
use banger_images::digest::sha256_file;
use banger_model::{Artifact, ArtifactRole};

use crate::error::Error;
use crate::progress::Progress;

/// Base images and kernels are read-only to everyone: a VM writes to its
/// own disks, never to these.
const READ_ONLY: u32 = 0o444;

pub(super) fn io_failure(action: &str, path: &Path, e: io::Error) -> Error {
    Error::internal(format!("cannot {action} {}: {e}", path.display()))
}

/// Puts `src` at `dst`: a hard link when both are on one filesystem (the
/// cache and the state dir usually are), else a copy. Made read-only.
pub(super) fn place(src: &Path, dst: &Path) -> Result<(), Error> {
    if fs::hard_link(src, dst).is_err() {
        fs::copy(src, dst).map_err(|e| io_failure("copy", src, e))?;
    }
    make_read_only(dst)
}

pub(super) fn make_read_only(path: &Path) -> Result<(), Error> {
    fs::set_permissions(path, Permissions::from_mode(READ_ONLY))
        .map_err(|e| io_failure("make read-only", path, e))
}

/// Hashes `dir/file` and describes it as the artifact `role`.
pub(super) fn pin(dir: &Path, file: &str, role: ArtifactRole) -> Result<Artifact, Error> {
    let path = dir.join(file);
    let (sha256, size) = sha256_file(&path).map_err(|e| Error::internal(e.to_string()))?;
    Ok(Artifact {
        role,
        file: file.to_string(),
        sha256,
        size,
    })
}

/// `Ok(())` if `path` holds an ext4 (or ext2/3) superblock.
pub(super) fn check_ext4(path: &Path) -> Result<(), Error> {
    const MAGIC_OFFSET: u64 = 1024 + 0x38;
    let not_ext4 = || {
        Error::invalid(format!(
            "{} is not an ext4 filesystem (no ext4 superblock): make one with \
             'mkfs.ext4 -d DIR FILE SIZE'",
            path.display()
        ))
    };
    let mut file = File::open(path)
        .map_err(|e| Error::invalid(format!("cannot open {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| io_failure("inspect", path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut magic = [0u8; 2];
    file.seek(SeekFrom::Start(MAGIC_OFFSET))
        .and_then(|_| file.read_exact(&mut magic))
        .map_err(|_| not_ext4())?;
    if magic == [0x53, 0xef] {
        Ok(())
    } else {
        Err(not_ext4())
    }
}

/// Fetches a catalog file to `dest` and checks it against its pin before
/// anything relies on it. `dest` is removed on any failure.
pub(super) fn fetch_pinned(
    entry: &str,
    pinned: &PinnedFile,
    dest: &Path,
    progress: &Progress,
) -> Result<(), Error> {
    let result =
        fetch(pinned, dest, progress).and_then(|()| check_pin(entry, pinned, dest, progress));
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

fn fetch(pinned: &PinnedFile, dest: &Path, progress: &Progress) -> Result<(), Error> {
    match &pinned.location {
        Location::Path(src) => {
            progress.phase("copy", format!("copying {}", src.display()));
            fs::copy(src, dest)
                .map_err(|e| Error::invalid(format!("cannot copy {}: {e}", src.display())))?;
            Ok(())
        }
        Location::Url(url) => download(url, pinned.size, dest, progress),
    }
}

/// Downloads with the host's curl: it brings the host's TLS roots, proxy
/// settings and HTTP/2, which banger would otherwise have to compile in.
fn download(url: &str, size: u64, dest: &Path, progress: &Progress) -> Result<(), Error> {
    progress.phase("download", format!("downloading {url}"));
    let mut child = Command::new("curl")
        .args(["--fail", "--location", "--silent", "--show-error"])
        .args(["--retry", "2", "--connect-timeout", "20", "--output"])
        .arg(dest)
        .arg("--")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::internal(format!("cannot run curl: {e} (apt-get install curl)")))?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::internal(format!("waiting for curl: {e}")))?
        {
            break status;
        }
        let done = fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        progress.progress("download", done, Some(size));
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(Error::invalid(format!(
            "download of {url} failed: {}",
            err.lines().last().unwrap_or("curl gave no reason").trim()
        )));
    }
    progress.progress("download", size, Some(size));
    Ok(())
}

fn check_pin(
    entry: &str,
    pinned: &PinnedFile,
    path: &Path,
    progress: &Progress,
) -> Result<(), Error> {
    progress.phase("verify", "checking the SHA-256 pin");
    let (sha256, size) = sha256_file(path).map_err(|e| Error::internal(e.to_string()))?;
    if size != pinned.size || sha256 != pinned.sha256 {
        return Err(Error::invalid(format!(
            "catalog entry {entry:?}: the rootfs is {size} bytes with SHA-256 {sha256}, but \
             the catalog pins {} bytes with SHA-256 {}: the file changed or the transfer was \
             corrupted; nothing was recorded",
            pinned.size, pinned.sha256
        )));
    }
    Ok(())
}

/// A folder for work in progress, removed when dropped.
pub(super) struct Staging(pub PathBuf);

impl Staging {
    pub fn new(path: PathBuf) -> Result<Self, Error> {
        if path.exists() {
            fs::remove_dir_all(&path).map_err(|e| io_failure("remove stale", &path, e))?;
        }
        fs::create_dir_all(&path).map_err(|e| io_failure("create", &path, e))?;
        Ok(Self(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_check_reads_the_superblock() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake.ext4");
        fs::write(&fake, vec![0u8; 4096]).unwrap();
        let err = check_ext4(&fake).unwrap_err();
        assert!(err.message.contains("not an ext4 filesystem"));
        let short = dir.path().join("short");
        fs::write(&short, b"tiny").unwrap();
        assert!(check_ext4(&short).is_err());
        let mut sb = vec![0u8; 4096];
        sb[1024 + 0x38] = 0x53;
        sb[1024 + 0x39] = 0xef;
        fs::write(&fake, &sb).unwrap();
        check_ext4(&fake).unwrap();
        assert!(check_ext4(dir.path()).is_err(), "a directory is refused");
    }
}
