//! Images and kernels (DESIGN.md, "images"): the default Debian image built
//! locally with mmdebstrap, the catalog with SHA-256 pins, OCI pulls, the
//! ELF `vmlinux` extracted from a bzImage, and banger's initramfs.
//!
//! It must not boot anything and holds no state of its own: it produces and
//! verifies files in directories its caller names; the daemon records them.
//!
//! Here: `kernel` (vmlinux extraction, Debian kernel packages, the kernel
//! read out of an image's root filesystem),
//! `initramfs` (module resolution, the cpio), `debian` (the default image
//! recipe and build), `binary` (prebuilt binaries a recipe pins, like mise), `catalog` (named, pinned sources), `oci` (registry
//! pulls: references, blob cache, flattening), `ext4` (the read-only base
//! both builds and pulls write), `digest` (SHA-256 pins), `userns`
//! (building and pulling without root: the steps that own the image's
//! files run as root of a user namespace mapping the owner and its
//! subordinate ids).
#![deny(unsafe_code)]

pub mod binary;
pub mod catalog;
pub mod debian;
pub mod digest;
mod ext4;
pub mod guest_tools;
pub mod host_command;
pub mod initramfs;
pub mod kernel;
pub mod oci;
pub mod userns;

pub use host_command::CommandError;
