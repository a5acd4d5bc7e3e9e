//! The kernel installed inside an image's ext4 root filesystem: its
//! newest `/boot/vmlinuz-*` and the matching modules tree, read without
//! mounting and copied into a folder the caller names.
//!
//! The image is hostile (a catalog entry, a user's file) and the copy runs
//! as root. So the filesystem is read in-process with `ext4-view`, never by
//! a tool told what to do in words: debugfs `rdump` made the image's
//! symlinks on the host and then opened files through them, so two entries
//! of one name (a link out, then a file) wrote the image's bytes to any
//! host file. Here every host folder is made with `create_dir` and every
//! file with `O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing on the host is
//! followed or overwritten; symlinks and special files in the tree are
//! left out (the initramfs needs the modules and depmod's indexes only);
//! symlinks on the way to the tree (Debian's `/lib -> usr/lib`) are
//! resolved inside the image by `ext4-view`; and what is read is bounded
//! in bytes, entries and depth. On any failure the output folder goes.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Error};

/// Where Debian keeps modules: `/usr/lib` since bookworm (with `/lib ->
/// usr/lib`), `/lib` in older trees.
const MODULE_BASES: [&str; 2] = ["/usr/lib/modules", "/lib/modules"];

/// How much one read-out may take from an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadoutLimits {
    /// Bytes of the kernel and all module files together.
    pub bytes: u64,
    /// Directory entries read (in `/boot` and the modules tree).
    pub entries: u64,
    /// Folders below the release folder of the modules tree.
    pub depth: usize,
}

impl Default for ReadoutLimits {
    /// Debian's generic kernel with all its modules is about 500 MiB in
    /// some 7,000 files, nested 8 deep: these leave room for any real
    /// kernel and still stop an image that would fill the host's disk.
    fn default() -> Self {
        Self {
            bytes: 2 << 30,
            entries: 200_000,
            depth: 32,
        }
    }
}

/// A kernel read out of a root filesystem.
#[derive(Debug)]
pub struct RootfsKernel {
    /// The release, from `/boot/vmlinuz-RELEASE`, a valid object name.
    pub release: String,
    /// `OUT/vmlinuz-RELEASE`.
    pub bzimage: PathBuf,
    /// `OUT/modules/RELEASE`, a copy of the image's modules tree.
    pub modules_dir: PathBuf,
    /// Paths in the image left out: symlinks (`build`, `source`) and
    /// special files.
    pub skipped: Vec<String>,
}

/// Why a kernel could not be read out of a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum ReadoutError {
    #[error(
        "{image}: its filesystem claims {claimed} bytes but the file holds {actual}: refused (a \
         truncated or crafted image)"
    )]
    Oversized {
        image: PathBuf,
        claimed: u128,
        actual: u64,
    },
    #[error("cannot read {image} as ext4: {source}")]
    Open {
        image: PathBuf,
        #[source]
        source: Ext4Error,
    },
    #[error(
        "{image} has no kernel in /boot (no vmlinuz-*): name one with kernel = \"...\" in the \
         catalog entry"
    )]
    NoKernel { image: PathBuf },
    #[error("{image}: /boot/vmlinuz-{release:?} does not name a kernel banger can record: {why}")]
    BadRelease {
        image: PathBuf,
        release: String,
        why: String,
    },
    #[error(
        "{image} has /boot/vmlinuz-{release} but no modules tree /lib/modules/{release} \
         (with modules.dep or modules.order)"
    )]
    NoModules { image: PathBuf, release: String },
    #[error("cannot read {path} in {image}: {source}")]
    Read {
        image: PathBuf,
        path: String,
        #[source]
        source: Ext4Error,
    },
    #[error(
        "{image}: {path} holds an entry named {name:?}, which is no file name: refused (a \
         damaged or crafted filesystem)"
    )]
    BadName {
        image: PathBuf,
        path: String,
        name: String,
    },
    #[error(
        "{image}: {path} holds two entries named {name:?}: refused (a damaged or crafted \
         filesystem)"
    )]
    DuplicateName {
        image: PathBuf,
        path: String,
        name: String,
    },
    #[error(
        "{image}: the kernel and its modules are more than {limit} bytes, more than any real \
         kernel: refused; name a kernel with kernel = \"...\" in the catalog entry"
    )]
    TooManyBytes { image: PathBuf, limit: u64 },
    #[error(
        "{image}: /boot and the modules tree hold more than {limit} entries, more than any real \
         kernel: refused; name a kernel with kernel = \"...\" in the catalog entry"
    )]
    TooManyEntries { image: PathBuf, limit: u64 },
    #[error(
        "{image}: {path} lies more than {limit} folders deep in the modules tree: refused; name \
         a kernel with kernel = \"...\" in the catalog entry"
    )]
    TooDeep {
        image: PathBuf,
        path: String,
        limit: usize,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the newest kernel in `image`'s `/boot` and its modules tree into
/// `out`, which must not exist yet (its parent must): `out/vmlinuz-RELEASE`
/// and `out/modules/RELEASE/...`. On failure nothing is left at `out`.
pub fn read_rootfs_kernel(
    image: &Path,
    out: &Path,
    limits: &ReadoutLimits,
) -> Result<RootfsKernel, ReadoutError> {
    check_claimed_size(image)?;
    let fs = Ext4::load_from_path(image).map_err(|source| ReadoutError::Open {
        image: image.to_owned(),
        source,
    })?;
    make_dir(out)?;
    let mut readout = Readout {
        fs,
        image,
        limits,
        bytes: 0,
        entries: 0,
        skipped: Vec::new(),
    };
    let result = readout.run(out);
    if result.is_err() {
        // Made by us just now, holding only folders and files we made.
        let _ = fs::remove_dir_all(out);
    }
    result
}

struct Readout<'a> {
    fs: Ext4,
    image: &'a Path,
    limits: &'a ReadoutLimits,
    bytes: u64,
    entries: u64,
    skipped: Vec<String>,
}

impl Readout<'_> {
    fn run(&mut self, out: &Path) -> Result<RootfsKernel, ReadoutError> {
        let release = self.newest_release()?;
        let bzimage = out.join(format!("vmlinuz-{release}"));
        self.copy_file(
            &self.image_path(&format!("/boot/vmlinuz-{release}"))?,
            &bzimage,
        )?;
        let tree = self.modules_tree(&release)?;
        let modules = out.join("modules");
        make_dir(&modules)?;
        let modules_dir = modules.join(&release);
        self.copy_tree(&tree, &modules_dir, 0)?;
        Ok(RootfsKernel {
            release,
            bzimage,
            modules_dir,
            skipped: std::mem::take(&mut self.skipped),
        })
    }

    /// The greatest `RELEASE` of `/boot/vmlinuz-RELEASE`, compared as
    /// strings (as [`super::package::newest_release`] does), checked as an
    /// object name: it becomes a folder name and a record's key.
    fn newest_release(&mut self) -> Result<String, ReadoutError> {
        let boot = match self.fs.read_dir("/boot") {
            Ok(dir) => dir,
            Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => {
                return Err(ReadoutError::NoKernel {
                    image: self.image.to_owned(),
                });
            }
            Err(source) => return Err(self.read_error("/boot", source)),
        };
        let size = self
            .fs
            .metadata("/boot")
            .map_err(|source| self.read_error("/boot", source))?
            .len();
        self.charge(size)?;
        let mut releases = Vec::new();
        for entry in boot {
            let entry = entry.map_err(|source| self.read_error("/boot", source))?;
            self.count_entry()?;
            if let Some(release) = entry
                .file_name()
                .as_str()
                .ok()
                .and_then(|name| name.strip_prefix("vmlinuz-"))
            {
                releases.push(release.to_owned());
            }
        }
        releases.sort();
        let release = releases.pop().ok_or_else(|| ReadoutError::NoKernel {
            image: self.image.to_owned(),
        })?;
        banger_model::validate_object_name("kernel", &release).map_err(|e| {
            ReadoutError::BadRelease {
                image: self.image.to_owned(),
                release: release.clone(),
                why: e.to_string(),
            }
        })?;
        Ok(release)
    }

    /// The first modules tree of `release` that depmod (`modules.dep`) or
    /// the kernel build (`modules.order`, which the initramfs builder can
    /// work from) has marked, as a path inside the image.
    fn modules_tree(&self, release: &str) -> Result<ext4_view::PathBuf, ReadoutError> {
        for base in MODULE_BASES {
            let tree = format!("{base}/{release}");
            for marker in ["modules.dep", "modules.order"] {
                let path = format!("{tree}/{marker}");
                match self.fs.exists(path.as_str()) {
                    Ok(true) => return self.image_path(&tree),
                    // A missing folder, or a file where one is expected.
                    Ok(false) | Err(Ext4Error::NotADirectory) => {}
                    Err(source) => return Err(self.read_error(&path, source)),
                }
            }
        }
        Err(ReadoutError::NoModules {
            image: self.image.to_owned(),
            release: release.to_owned(),
        })
    }

    /// Copies the folder `from` in the image to the new folder `to`:
    /// folders and regular files only.
    fn copy_tree(
        &mut self,
        from: &ext4_view::PathBuf,
        to: &Path,
        depth: usize,
    ) -> Result<(), ReadoutError> {
        if depth > self.limits.depth {
            return Err(ReadoutError::TooDeep {
                image: self.image.to_owned(),
                path: from.display().to_string(),
                limit: self.limits.depth,
            });
        }
        make_dir(to)?;
        let shown = from.display().to_string();
        let entries = self
            .fs
            .read_dir(from)
            .map_err(|source| self.read_error(&shown, source))?;
        // Listing a folder reads its blocks: as many as its size says.
        let size = self
            .fs
            .metadata(from)
            .map_err(|source| self.read_error(&shown, source))?
            .len();
        self.charge(size)?;
        let mut seen = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|source| self.read_error(&shown, source))?;
            let name = entry.file_name();
            let name = name.as_ref();
            let is_dir_entry = entry.file_type().is_ok_and(|t| t.is_dir());
            if matches!(name, b"." | b"..") && is_dir_entry {
                // Every folder's links to itself and its parent.
                continue;
            }
            self.count_entry()?;
            if !is_file_name(name) {
                return Err(ReadoutError::BadName {
                    image: self.image.to_owned(),
                    path: shown,
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
            // Two entries of one name are never what mkfs or a kernel
            // writes; here one could stand in for the other.
            if !seen.insert(name.to_vec()) {
                return Err(ReadoutError::DuplicateName {
                    image: self.image.to_owned(),
                    path: shown,
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
            let path = entry.path();
            let host = to.join(OsStr::from_bytes(name));
            // The inode's own type, not the one its entry claims.
            let kind = entry
                .metadata()
                .map_err(|source| self.read_error(&path.display().to_string(), source))?
                .file_type();
            if kind.is_dir() {
                self.copy_tree(&path, &host, depth + 1)?;
            } else if kind.is_regular_file() {
                self.copy_file(&path, &host)?;
            } else {
                self.skipped.push(path.display().to_string());
            }
        }
        Ok(())
    }

    /// Copies the regular file `from` in the image to the new file `to`.
    fn copy_file(&mut self, from: &ext4_view::PathBuf, to: &Path) -> Result<(), ReadoutError> {
        let shown = from.display().to_string();
        let mut file = self
            .fs
            .open(from)
            .map_err(|source| self.read_error(&shown, source))?;
        // A file never reads past its size: charge it before writing.
        self.charge(file.metadata().len())?;
        let write_error = |source| ReadoutError::Write {
            path: to.to_owned(),
            source,
        };
        let mut host = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            // create_new is O_EXCL, which already refuses a symlink at
            // `to`; O_NOFOLLOW says so again, whatever std does.
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(to)
            .map_err(write_error)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read_bytes(&mut buf)
                .map_err(|source| self.read_error(&shown, source))?;
            if n == 0 {
                break;
            }
            host.write_all(&buf[..n]).map_err(write_error)?;
        }
        Ok(())
    }

    /// Counts `bytes` about to be read against the cap.
    fn charge(&mut self, bytes: u64) -> Result<(), ReadoutError> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.limits.bytes {
            return Err(ReadoutError::TooManyBytes {
                image: self.image.to_owned(),
                limit: self.limits.bytes,
            });
        }
        Ok(())
    }

    fn count_entry(&mut self) -> Result<(), ReadoutError> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(ReadoutError::TooManyEntries {
                image: self.image.to_owned(),
                limit: self.limits.entries,
            });
        }
        Ok(())
    }

    /// A path inside the image, from banger's words and a checked release.
    fn image_path(&self, path: &str) -> Result<ext4_view::PathBuf, ReadoutError> {
        ext4_view::PathBuf::try_from(path)
            .map_err(|_| self.read_error(path, Ext4Error::MalformedPath))
    }

    fn read_error(&self, path: &str, source: Ext4Error) -> ReadoutError {
        ReadoutError::Read {
            image: self.image.to_owned(),
            path: path.to_owned(),
            source,
        }
    }
}

/// Refuses a filesystem that claims more blocks than its file holds.
/// `ext4-view` sizes its table of block groups by the superblock's claim
/// before reading any of it: a few patched bytes (4 billion groups) made
/// it ask for 64 GiB at once, and a failed allocation aborts the daemon.
/// Within the file's size the table stays a small fraction of it.
fn check_claimed_size(image: &Path) -> Result<(), ReadoutError> {
    let open_error = |source: io::Error| ReadoutError::Open {
        image: image.to_owned(),
        source: Ext4Error::Io(Box::new(source)),
    };
    let mut file = fs::File::open(image).map_err(open_error)?;
    let actual = file.metadata().map_err(open_error)?.len();
    let mut superblock = [0u8; 1024];
    file.seek(SeekFrom::Start(1024))
        .and_then(|_| file.read_exact(&mut superblock))
        .map_err(open_error)?;
    let word = |at: usize| {
        u32::from_le_bytes([
            superblock[at],
            superblock[at + 1],
            superblock[at + 2],
            superblock[at + 3],
        ])
    };
    // s_blocks_count_lo, s_blocks_count_hi and s_log_block_size, read as
    // ext4-view reads them; a block size it refuses is its to report.
    let blocks = (u64::from(word(0x150)) << 32) | u64::from(word(0x4));
    let Some(block_size) = 1024u128.checked_shl(word(0x18)) else {
        return Ok(());
    };
    let claimed = u128::from(blocks) * block_size;
    if claimed > u128::from(actual) {
        return Err(ReadoutError::Oversized {
            image: image.to_owned(),
            claimed,
            actual,
        });
    }
    Ok(())
}

/// A folder made here, never one that was there (`create_dir` fails then).
fn make_dir(path: &Path) -> Result<(), ReadoutError> {
    DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(|source| ReadoutError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Whether `name` can be one component of a host path: not empty, not
/// `.` or `..`, no `/` or NUL. ext4-view refuses the last two already;
/// this does not depend on it.
fn is_file_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        for ok in [&b"modules.dep"[..], b"e1000e.ko.xz", b"...", b".hidden"] {
            assert!(is_file_name(ok), "{ok:?}");
        }
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(!is_file_name(bad), "{bad:?}");
        }
    }
}
