//! Images and kernels (DESIGN.md, "images"): the default Debian image built
//! locally with mmdebstrap, the catalog with SHA-256 pins, OCI pulls, the
//! ELF `vmlinux` extracted from a bzImage, and banger's initramfs.
//!
//! Empty today: the guest-artifacts issue fills it. It must not boot
//! anything; it only produces and verifies files the vmm layer boots.
#![deny(unsafe_code)]
