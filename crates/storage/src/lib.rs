//! Per-VM disks (DESIGN.md, "storage"): the shared read-only base rootfs of
//! an image, a sparse system disk holding the copy-on-write upper layer for
//! `/`, and a persistent ext4 work disk mounted at `/root`. Disks are made
//! and filled without mounting (`mkfs.ext4 -d`, `resize2fs`, `debugfs`).
//!
//! Empty today: the VM lifecycle issue fills it. It must not reach into the
//! store or the network; the orchestrator calls it with paths and sizes.
#![deny(unsafe_code)]
