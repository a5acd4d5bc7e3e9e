//! Per-VM disks (DESIGN.md, "storage"). Each VM boots from its image's
//! shared read-only base plus two disks of its own, both sparse ext4 files
//! in the VM's folder:
//!
//! - the **system disk** holds the overlay's upper layer for `/` (so
//!   changes outside `/root` persist across restarts) and the per-VM files
//!   banger-init copies into the guest (`banger/files/…`: sshd host keys);
//! - the **work disk** is mounted at `/root`, seeded with
//!   `/root/.ssh/authorized_keys`, sized by `--disk-size`, and can grow.
//!
//! `file_sync` copies the user's files `[[file_sync]]` names onto a new
//! work disk, opening each without following links and within size limits.
//!
//! A VM resumed from a template gets its own copies of the template's
//! disks ([`clone_file`]: a reflink where the filesystem can, else a
//! sparse copy), and [`sparse_digest`] pins a template's disks without
//! reading their holes.
//!
//! Before disks are made, or one grows, [`check_space`] refuses when their
//! filesystem could not hold them at full size.
//!
//! Disks are made and filled without mounting (`mkfs.ext4 -d` from a
//! staging tree, `resize2fs`), so this needs no privilege and leaves no
//! loop device. Names from synced folders are data: they never go into a
//! tool's command script (no debugfs `-f`). It knows files and sizes only:
//! no store, no network, no hypervisor.
#![deny(unsafe_code)]

mod clone;
mod disk;
pub mod file_sync;
mod space;
pub mod workspace;

pub use clone::{CloneReport, clone_file, sparse_digest};
pub use disk::{
    DiskError, DiskUsage, SYSTEM_DISK_SIZE, Seed, SeedFile, grow_disk, make_disk,
    make_disk_from_tree, make_disk_with, new_uuid, read_ext4_uuid, usage,
};
pub use space::check_space;
