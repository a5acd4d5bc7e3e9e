//! Blobs (layers and configs) by digest, shared by every image pulled:
//! `blobs/sha256/<hex>`, complete and verified once there. A blob is
//! written under a per-digest lock (flock on `locks/<hex>`) to a temporary
//! name, checked, then renamed into place, so concurrent pulls of one blob
//! — in this daemon or another — download it once and the others wait,
//! and no reader ever sees half a blob.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::{OciError, io_err};

#[derive(Clone, Debug)]
pub struct BlobCache {
    dir: PathBuf,
}

/// Held while a blob is being checked or fetched; released on drop.
pub struct BlobLock {
    _file: File,
}

impl BlobCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` (`sha256:<hex>`) is, once cached.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex_of(digest))
    }

    /// Whether the blob is cached with the expected size (its content was
    /// verified before it was renamed into place, and is verified again
    /// as it is unpacked).
    pub fn has(&self, digest: &str, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Waits for, then takes, the lock of `digest` (blocking).
    pub fn lock(&self, digest: &str) -> Result<BlobLock, OciError> {
        let locks = self.dir.join("locks");
        fs::create_dir_all(&locks).map_err(io_err("create", &locks))?;
        let path = locks.join(hex_of(digest));
        let file = File::create(&path).map_err(io_err("create", &path))?;
        file.lock().map_err(io_err("lock", &path))?;
        Ok(BlobLock { _file: file })
    }

    /// A fresh temporary path for a download of `digest` (same filesystem
    /// as the blob, so the final rename is atomic). Call it holding the
    /// digest's lock: leftovers of downloads of it that died are removed.
    pub fn temp_path(&self, digest: &str) -> Result<PathBuf, OciError> {
        let tmp = self.dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        let prefix = format!("{}.", hex_of(digest));
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(tmp.join(format!("{prefix}{}", std::process::id())))
    }

    /// Removes what downloads that died with their daemon left in `tmp`:
    /// each file whose digest's lock nobody holds (a download under way,
    /// in this daemon or another, holds it and is left alone).
    pub fn remove_abandoned(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        let locks = self.dir.join("locks");
        if fs::create_dir_all(&locks).is_err() {
            return;
        }
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((hex, _pid)) = name.split_once('.') else {
                continue;
            };
            let Ok(lock) = File::create(locks.join(hex)) else {
                continue;
            };
            if lock.try_lock().is_ok() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Moves a verified download into place.
    pub fn commit(&self, temp: &Path, digest: &str) -> Result<PathBuf, OciError> {
        let dest = self.blob_path(digest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        fs::rename(temp, &dest).map_err(io_err("move into the cache", temp))?;
        Ok(dest)
    }

    /// Drops a cached blob found corrupt, so the next pull fetches it again.
    pub fn evict(&self, digest: &str) {
        let _ = fs::remove_file(self.blob_path(digest));
    }
}

/// `sha256:<hex>` → `<hex>`; callers pass digests already validated as
/// sha256 and hex, so this never yields a path separator.
fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    #[test]
    fn locks_exclude_each_other_and_commit_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert!(!cache.has(&digest, 3));
        let first = cache.lock(&digest).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (c, d, b) = (cache.clone(), digest.clone(), barrier.clone());
        let waiter = std::thread::spawn(move || {
            b.wait();
            let _lock = c.lock(&d).unwrap();
            c.has(&d, 3)
        });
        barrier.wait();
        std::thread::sleep(Duration::from_millis(100));
        let stale = dir.path().join(format!("tmp/{}.1", "ab".repeat(32)));
        fs::create_dir_all(stale.parent().unwrap()).unwrap();
        fs::write(&stale, "half a download").unwrap();
        let tmp = cache.temp_path(&digest).unwrap();
        assert!(!stale.exists(), "a dead download's leftover is removed");
        fs::write(&tmp, "abc").unwrap();
        cache.commit(&tmp, &digest).unwrap();
        drop(first);
        assert!(waiter.join().unwrap(), "the waiter saw the finished blob");
        cache.evict(&digest);
        assert!(!cache.has(&digest, 3));
    }

    #[test]
    fn abandoned_downloads_go_and_one_under_way_stays() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let (busy, dead) = (
            format!("sha256:{}", "cd".repeat(32)),
            format!("sha256:{}", "ef".repeat(32)),
        );
        let held = cache.lock(&busy).unwrap();
        let under_way = cache.temp_path(&busy).unwrap();
        fs::write(&under_way, "downloading").unwrap();
        let left = dir.path().join(format!("tmp/{}.4242", "ef".repeat(32)));
        fs::write(&left, "a daemon died here").unwrap();
        cache.remove_abandoned();
        assert!(under_way.exists(), "its lock is held: a download under way");
        assert!(!left.exists(), "{dead}: nobody's download");
        drop(held);
        cache.remove_abandoned();
        assert!(!under_way.exists());
    }
}
