//! Whether the filesystem that will hold a VM's disks could hold them at
//! their full size. The disks are sparse and cost little when made, but a
//! guest can fill them: on a filesystem too small for that, it would fill
//! the host's instead, and with it the store, the other VMs' disks and
//! their console logs.

use std::path::{Path, PathBuf};

use banger_model::Size;

use crate::disk::{DiskError, io_err};

/// Refuses when the filesystem holding `dir` (or its nearest existing
/// parent: the VMs' folder may not exist yet) has less free space than
/// `need`: what the disks take at their full size, or what growing one
/// adds. `what` says which, in the error: "the disks need".
pub fn check_space(dir: &Path, what: &'static str, need: Size) -> Result<(), DiskError> {
    let existing = nearest_existing(dir);
    let stat = nix::sys::statvfs::statvfs(&existing)
        .map_err(|e| io_err("measure the free space of", &existing)(e.into()))?;
    // Blocks free to anyone, not the root-reserved ones: a guest's writes
    // must not eat the reserve either.
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    fits(dir, what, need, Size::from_bytes(free))
}

fn fits(dir: &Path, what: &'static str, need: Size, free: Size) -> Result<(), DiskError> {
    if need <= free {
        return Ok(());
    }
    Err(DiskError::NoSpace {
        path: dir.to_path_buf(),
        what,
        need,
        free,
    })
}

fn nearest_existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_the_filesystem_could_not_hold_and_says_how_much() {
        let err = fits(
            Path::new("/var/lib/banger/vms"),
            "the disks need",
            Size::from_gib(12),
            Size::from_bytes(3_435_973_837),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "not enough space in /var/lib/banger/vms: the disks need 12.0 GiB at full \
                 size, 3.2 GiB free"
            ),
            "{err}"
        );
        assert!(!err.contains('\n'));
        fits(Path::new("/x"), "w", Size::from_gib(1), Size::from_gib(1)).unwrap();
    }

    #[test]
    fn measures_the_real_filesystem_from_a_folder_not_made_yet() {
        let dir = tempfile::tempdir().unwrap();
        let not_yet = dir.path().join("vms/new");
        check_space(&not_yet, "w", Size::from_bytes(1)).unwrap();
        let err = check_space(&not_yet, "w", Size::from_bytes(u64::MAX)).unwrap_err();
        assert!(
            matches!(&err, DiskError::NoSpace { path, .. } if *path == not_yet),
            "{err}"
        );
    }
}
