//! The read-only base ext4 of an image, written from a directory tree with
//! `mkfs.ext4 -d` (no mounting: e2fsprogs copies owners, modes, hard links
//! and xattrs from the tree): how big to make it, and mkfs's arguments.
//! Used by the Debian build and by OCI pulls.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Free space beyond the content, as a fraction of it.
const HEADROOM_FRACTION: f64 = 0.10;

/// Bytes allocated and inodes used by the tree (hard links counted once).
pub(crate) fn tree_usage(root: &Path) -> io::Result<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let mut used = 0u64;
    let mut inodes = 0u64;
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            inodes += 1;
            used += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok((used, inodes))
}

/// Filesystem size in bytes (whole MiB) and inode count for a tree:
/// content plus metadata estimate plus 10% and `headroom` bytes.
pub(crate) fn filesystem_size(used: u64, inodes: u64, headroom: u64) -> (u64, u64) {
    let inode_count = inodes + inodes / 5 + 4096;
    // 256-byte inodes, plus ~2% for block groups, bitmaps and directories.
    let metadata = inode_count * 256 + used / 50;
    let raw = used + metadata;
    let size = raw + (raw as f64 * HEADROOM_FRACTION) as u64 + headroom;
    let mib = 1u64 << 20;
    (size.div_ceil(mib) * mib, inode_count)
}

/// The base is read-only, so no journal: less space, and no replay to
/// refuse on a read-only device.
pub(crate) fn mkfs_args(
    root: &Path,
    image: &Path,
    size: u64,
    inodes: u64,
    uuid: &str,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-O".into(),
        "^has_journal".into(),
        "-L".into(),
        "banger-base".into(),
        "-U".into(),
        uuid.into(),
        "-N".into(),
        inodes.to_string().into(),
        "-d".into(),
    ];
    args.push(root.as_os_str().to_owned());
    args.push(image.as_os_str().to_owned());
    args.push(format!("{}k", size / 1024).into());
    args
}

/// A UUID (version-4 shaped) from the first bytes of a hex hash, so the
/// same recipe's base always has the same UUID.
pub(crate) fn uuid_from_hash(hash: &str) -> String {
    let h: String = hash
        .chars()
        .chain(std::iter::repeat('0'))
        .take(32)
        .collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HEADROOM: u64 = 256 << 20;

    #[test]
    fn sizes_leave_headroom_and_round_to_mib() {
        let (size, inodes) = filesystem_size(1 << 30, 40_000, HEADROOM);
        assert_eq!(size % (1 << 20), 0);
        assert!(size > (1u64 << 30) + HEADROOM, "{size}");
        assert!(size < (1u64 << 30) * 3 / 2 + HEADROOM, "{size}");
        assert!(inodes >= 48_000, "{inodes}");
    }

    #[test]
    fn tree_usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        let (used, inodes) = tree_usage(dir.path()).unwrap();
        assert_eq!(inodes, 2);
        assert!(used >= 100_000, "{used}");
    }

    #[test]
    fn uuids_from_hashes_are_stable_and_well_formed() {
        let uuid = uuid_from_hash(&crate::digest::sha256_str("x"));
        assert_eq!(uuid, uuid_from_hash(&crate::digest::sha256_str("x")));
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_eq!(&uuid[19..20], "8");
    }

    #[test]
    fn mkfs_gets_a_read_only_friendly_layout() {
        let args: Vec<String> = mkfs_args(
            Path::new("/r"),
            Path::new("/o/rootfs.ext4"),
            3 << 30,
            9000,
            "u",
        )
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
        assert!(args.windows(2).any(|w| w == ["-O", "^has_journal"]));
        assert!(args.windows(2).any(|w| w == ["-N", "9000"]));
        assert_eq!(
            &args[args.len() - 3..],
            ["/r", "/o/rootfs.ext4", "3145728k"]
        );
    }
}
