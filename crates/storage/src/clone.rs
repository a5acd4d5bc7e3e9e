//! Per-VM copies of a template's disks, and the digest that pins them.
//!
//! A template's system and work disks are sparse files of many GiB that
//! hold a few hundred MB. Each VM resumed from the template gets its own
//! copy: a reflink where the filesystem shares extents (btrfs, xfs), so
//! the copy costs nothing until written; else a copy of the data extents
//! only, found with `SEEK_DATA`/`SEEK_HOLE`, so holes stay holes and the
//! copy takes the time the data takes, not the nominal size.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use nix::libc;
use rustix::fs::SeekFrom;
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::disk::{DiskError, io_err};

/// How much a read/write copy or the digest reads at once.
const CHUNK: usize = 1 << 20;

/// What [`clone_file`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloneReport {
    /// The filesystem shared the source's extents (`FICLONE`).
    pub reflinked: bool,
    /// Data bytes copied: 0 when reflinked.
    pub copied: u64,
}

/// Copies the regular file `src` to `dest`, a new file (mode 0600) that
/// must not exist: a file or a symlink there is refused, and no link is
/// followed at either end. A reflink (`FICLONE`) where the filesystem can
/// (btrfs, xfs); else the data extents one by one (`copy_file_range`, or
/// reads and writes where the kernel cannot), with the holes between and
/// after them left as holes. On any failure `dest` is removed; a full
/// filesystem is [`DiskError::Full`]. The copy is not fsynced. `src` must
/// not change meanwhile (a template's disks do not).
pub fn clone_file(src: &Path, dest: &Path) -> Result<CloneReport, DiskError> {
    let source = open_regular(src)?;
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .map_err(io_err("create", dest))?;
    let result = copy_into(&source, src, &out, dest);
    drop(out);
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

fn copy_into(source: &File, src: &Path, out: &File, dest: &Path) -> Result<CloneReport, DiskError> {
    match rustix::fs::ioctl_ficlone(out, source) {
        Ok(()) => {
            return Ok(CloneReport {
                reflinked: true,
                copied: 0,
            });
        }
        // The filesystem cannot share extents (ext4, tmpfs), or not
        // between these two files (another filesystem): copy.
        Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::NOSYS) => {}
        Err(e) => return Err(write_err(dest, e.into())),
    }
    let len = source.metadata().map_err(io_err("inspect", src))?.len();
    let mut copied = 0;
    for extent in DataExtents::new(source, src, len) {
        let (offset, length) = extent?;
        copy_range(source, src, out, dest, offset, length)?;
        copied += length;
    }
    // Trailing holes: the length without the blocks.
    out.set_len(len).map_err(|e| write_err(dest, e))?;
    Ok(CloneReport {
        reflinked: false,
        copied,
    })
}

/// Copies `length` bytes at `offset` from `source` to the same offset of
/// `out`: in the kernel where it can, else through a buffer.
fn copy_range(
    source: &File,
    src: &Path,
    out: &File,
    dest: &Path,
    offset: u64,
    length: u64,
) -> Result<(), DiskError> {
    let (mut off_in, mut off_out) = (offset, offset);
    let end = offset + length;
    while off_in < end {
        let want = usize::try_from(end - off_in)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(source, Some(&mut off_in), out, Some(&mut off_out), want)
        {
            Ok(0) => return Err(shrunk(src)),
            Ok(_) => {}
            Err(Errno::INTR) => {}
            // Not between these filesystems, or not on this kernel.
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) => {
                return copy_through_buffer(source, src, out, dest, off_in, end);
            }
            Err(e) => {
                let e = io::Error::from(e);
                return Err(match e.raw_os_error() {
                    Some(libc::ENOSPC | libc::EDQUOT) => write_err(dest, e),
                    // Which side failed is not said: name both.
                    _ => DiskError::Io {
                        action: "copy into",
                        path: dest.to_path_buf(),
                        source: io::Error::new(e.kind(), format!("{e} (from {})", src.display())),
                    },
                });
            }
        }
    }
    Ok(())
}

fn copy_through_buffer(
    source: &File,
    src: &Path,
    out: &File,
    dest: &Path,
    mut at: u64,
    end: u64,
) -> Result<(), DiskError> {
    let mut buf = vec![0u8; CHUNK];
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
        let n = match source.read_at(&mut buf[..want], at) {
            Ok(0) => return Err(shrunk(src)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", src)(e)),
        };
        out.write_all_at(&buf[..n], at)
            .map_err(|e| write_err(dest, e))?;
        at += n as u64;
    }
    Ok(())
}

/// A SHA-256, as 64 lowercase hex digits, of the file at `path` (opened
/// without following a link) that reads only its data, not its holes:
/// a 16 GiB sparse disk holding 40 MB hashes in the time 40 MB take.
///
/// What is hashed, in order: the file's length as a little-endian u64;
/// then, for each data extent as `SEEK_DATA`/`SEEK_HOLE` find them from
/// the start, its offset and its length (little-endian u64 each) and its
/// bytes. So the digest covers where the data lies as well as what it
/// is: a byte changed, the length changed, or a block of zeros where the
/// file had a hole all change it. A [`clone_file`] copy hashes as its
/// source on a filesystem with the same block size (data extents are
/// whole blocks, except the last one at the end of the file); a file
/// filesystems allocate differently (another block size, a preallocated
/// range) may hash differently with the same bytes.
pub fn sparse_digest(path: &Path) -> Result<String, DiskError> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(io_err("inspect", path))?.len();
    let mut hash = Sha256::new();
    hash.update(len.to_le_bytes());
    let mut buf = vec![0u8; CHUNK];
    for extent in DataExtents::new(&file, path, len) {
        let (offset, length) = extent?;
        hash.update(offset.to_le_bytes());
        hash.update(length.to_le_bytes());
        let (mut at, end) = (offset, offset + length);
        while at < end {
            let want = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
            let n = match file.read_at(&mut buf[..want], at) {
                Ok(0) => return Err(shrunk(path)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read", path)(e)),
            };
            hash.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(format!("{:x}", hash.finalize()))
}

/// Opens `path` for reading without following a link; it must be a
/// regular file (a disk image, not a device or a FIFO).
fn open_regular(path: &Path) -> Result<File, DiskError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("open", path))?;
    if !file.metadata().map_err(io_err("inspect", path))?.is_file() {
        return Err(DiskError::Io {
            action: "copy",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    Ok(file)
}

/// The data extents of the first `len` bytes of a file, as (offset,
/// length), in order, adjacent ones merged (a hole lies between any two).
/// A filesystem without `SEEK_DATA` support answers as if the whole file
/// were data.
struct DataExtents<'a> {
    file: &'a File,
    path: &'a Path,
    len: u64,
    at: u64,
}

impl<'a> DataExtents<'a> {
    fn new(file: &'a File, path: &'a Path, len: u64) -> Self {
        Self {
            file,
            path,
            len,
            at: 0,
        }
    }
}

impl Iterator for DataExtents<'_> {
    type Item = Result<(u64, u64), DiskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.len {
            return None;
        }
        let failed = |e: Errno| io_err("find the data in", self.path)(e.into());
        let data = match rustix::fs::seek(self.file, SeekFrom::Data(self.at)) {
            Ok(data) => data,
            // No data from here to the end.
            Err(Errno::NXIO) => {
                self.at = self.len;
                return None;
            }
            Err(e) => {
                self.at = self.len;
                return Some(Err(failed(e)));
            }
        };
        if data >= self.len {
            self.at = self.len;
            return None;
        }
        let hole = match rustix::fs::seek(self.file, SeekFrom::Hole(data)) {
            Ok(hole) => hole.min(self.len),
            Err(e) => {
                self.at = self.len;
                return Some(Err(failed(e)));
            }
        };
        // A hole at or before its data would loop: a file changing under
        // us. Treat the rest as data, which copies and hashes correctly.
        let end = if hole > data { hole } else { self.len };
        self.at = end;
        Some(Ok((data, end - data)))
    }
}

/// The error of a write to `dest`: [`DiskError::Full`] when its
/// filesystem has no room (or the quota none left), else the I/O error.
fn write_err(dest: &Path, e: io::Error) -> DiskError {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => DiskError::Full {
            path: dest.to_path_buf(),
        },
        _ => io_err("write", dest)(e),
    }
}

fn shrunk(path: &Path) -> DiskError {
    DiskError::Io {
        action: "copy",
        path: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file shrank while it was read",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    const MIB: u64 = 1 << 20;

    /// 64 MiB with holes at the start, in the middle and at the end:
    /// data at 4-5 MiB, 20-23 MiB and a few unaligned bytes at 40 MiB.
    fn sparse_file(path: &Path) {
        let f = File::create(path).unwrap();
        f.set_len(64 * MIB).unwrap();
        let pattern = |n: u64, seed: u8| -> Vec<u8> {
            (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
        };
        f.write_all_at(&pattern(MIB, 1), 4 * MIB).unwrap();
        f.write_all_at(&pattern(3 * MIB, 2), 20 * MIB).unwrap();
        f.write_all_at(b"tail of the data", 40 * MIB + 123).unwrap();
    }

    fn allocated(path: &Path) -> u64 {
        fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn a_sparse_copy_keeps_the_bytes_and_the_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
        sparse_file(&src);
        let report = clone_file(&src, &dest).unwrap();
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dest).unwrap());
        assert_eq!(fs::metadata(&dest).unwrap().len(), 64 * MIB);
        let block = fs::metadata(&dest).unwrap().blksize();
        let (a, b) = (allocated(&src), allocated(&dest));
        // Three extents, each rounded to blocks at most once more.
        assert!(a.abs_diff(b) <= 3 * block, "{a} vs {b} bytes allocated");
        assert!(b < 6 * MIB, "holes stayed holes: {b} bytes allocated");
        if report.reflinked {
            assert_eq!(report.copied, 0);
        } else {
            // The data, rounded to blocks: never the 64 MiB.
            assert!((4 * MIB..6 * MIB).contains(&report.copied), "{report:?}");
        }
        let mode = fs::metadata(&dest).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let digest = sparse_digest(&src).unwrap();
        assert_eq!(digest.len(), 64);
        assert!(
            digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
        assert_eq!(sparse_digest(&dest).unwrap(), digest);
        // One byte changed.
        File::options()
            .write(true)
            .open(&dest)
            .unwrap()
            .write_all_at(b"X", 20 * MIB + 7)
            .unwrap();
        assert_ne!(sparse_digest(&dest).unwrap(), digest);
        // Only the length changed.
        let longer = dir.path().join("longer");
        clone_file(&src, &longer).unwrap();
        File::options()
            .write(true)
            .open(&longer)
            .unwrap()
            .set_len(65 * MIB)
            .unwrap();
        assert_ne!(sparse_digest(&longer).unwrap(), digest);
    }

    /// The path taken where `copy_file_range` cannot go between two
    /// filesystems (older kernels) copies the same bytes.
    #[test]
    fn the_buffered_copy_copies_a_range_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("src"), dir.path().join("dest"));
        let bytes: Vec<u8> = (0..3 * MIB + 17).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &bytes).unwrap();
        let out = File::create(&dest).unwrap();
        let source = File::open(&src).unwrap();
        copy_through_buffer(&source, &src, &out, &dest, 5, 3 * MIB + 10).unwrap();
        let copied = fs::read(&dest).unwrap();
        assert_eq!(copied.len() as u64, 3 * MIB + 10);
        assert!(copied[..5].iter().all(|&b| b == 0));
        assert_eq!(copied[5..], bytes[5..(3 * MIB + 10) as usize]);
        // Past the end of the source: an error, not a short copy.
        let err = copy_through_buffer(&source, &src, &out, &dest, 0, 4 * MIB).unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
    }

    /// The format the doc comment gives, computed by hand for a file
    /// whose layout is known: one block of data after a hole.
    #[test]
    fn the_digest_is_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let block = f.metadata().unwrap().blksize();
        f.set_len(4 * block).unwrap();
        let data = vec![7u8; block as usize];
        f.write_all_at(&data, 2 * block).unwrap();
        f.sync_all().unwrap();
        let mut want = Sha256::new();
        want.update((4 * block).to_le_bytes());
        want.update((2 * block).to_le_bytes());
        want.update(block.to_le_bytes());
        want.update(&data);
        assert_eq!(
            sparse_digest(&path).unwrap(),
            format!("{:x}", want.finalize())
        );
        // An empty file: its length only.
        let empty = dir.path().join("empty");
        File::create(&empty).unwrap();
        let mut want = Sha256::new();
        want.update(0u64.to_le_bytes());
        assert_eq!(
            sparse_digest(&empty).unwrap(),
            format!("{:x}", want.finalize())
        );
    }

    #[test]
    fn an_existing_file_or_a_link_is_refused_at_either_end() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, "data").unwrap();
        let dest = dir.path().join("dest");
        fs::write(&dest, "precious").unwrap();
        let err = clone_file(&src, &dest).unwrap_err().to_string();
        assert!(err.starts_with("cannot create "), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), b"precious");

        let target = dir.path().join("target");
        fs::write(&target, "theirs").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(clone_file(&src, &link).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"theirs");
        // A dangling link: O_EXCL refuses it too, nothing made at its target.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(clone_file(&src, &dangling).is_err());
        assert!(!dir.path().join("nowhere").exists());
        // The source is not followed either.
        let err = clone_file(&link, &dir.path().join("new")).unwrap_err();
        assert!(err.to_string().starts_with("cannot open "), "{err}");
        assert!(!dir.path().join("new").exists());
        assert!(sparse_digest(&link).is_err());
        // Nor is a non-file copied.
        assert!(clone_file(dir.path(), &dir.path().join("new")).is_err());
        assert!(!dir.path().join("new").exists());
    }

    /// A small ext4 filesystem, loop-mounted, unmounted on drop.
    struct TinyFs {
        dir: tempfile::TempDir,
    }

    impl TinyFs {
        fn mount(mib: u64) -> Option<Self> {
            if !nix::unistd::geteuid().is_root() {
                banger_testkit::skip("mounting a small filesystem needs root");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            let image = dir.path().join("fs.ext4");
            File::create(&image).unwrap().set_len(mib * MIB).unwrap();
            let mkfs = Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&image)
                .output();
            if !mkfs.is_ok_and(|o| o.status.success()) {
                banger_testkit::skip("mkfs.ext4 is missing or failed");
                return None;
            }
            let mnt = dir.path().join("mnt");
            fs::create_dir(&mnt).unwrap();
            let out = Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mnt)
                .output()
                .unwrap();
            if !out.status.success() {
                banger_testkit::skip(format!(
                    "no loop mount here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                return None;
            }
            Some(Self { dir })
        }

        fn path(&self) -> std::path::PathBuf {
            self.dir.path().join("mnt")
        }
    }

    impl Drop for TinyFs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.path()).status();
        }
    }

    #[test]
    fn a_full_filesystem_is_one_clear_error_and_leaves_nothing() {
        let Some(tiny) = TinyFs::mount(8) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        // 12 MiB of data after a hole: more than the 8 MiB filesystem holds.
        let f = File::create(&src).unwrap();
        f.write_all_at(&vec![9u8; 12 * MIB as usize], MIB).unwrap();
        f.set_len(32 * MIB).unwrap();
        let dest = tiny.path().join("copy.ext4");
        let err = clone_file(&src, &dest).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DiskError::Full { .. }), "{message}");
        assert_eq!(
            message,
            format!(
                "cannot write {}: the disk holding it is full; free some space there and try again",
                dest.display()
            )
        );
        assert!(!dest.exists(), "the partial copy was left behind");
        // Room enough: the same copy fits once the source is small.
        let small = dir.path().join("small");
        fs::write(&small, vec![5u8; 100_000]).unwrap();
        clone_file(&small, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&small).unwrap());
    }
}
