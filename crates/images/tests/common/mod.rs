//! What the integration tests share: the test cache and the real Debian
//! kernel in it.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;

use banger_images::kernel::package::{self, CLOUD_KERNEL_META, KernelPackage};

/// `$BANGER_TEST_CACHE`, else `test-cache` in cargo's target directory
/// (outside the source tree's tracked files either way).
pub fn test_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("BANGER_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-cache")
}

/// Debian's cloud kernel, fetched once into the test cache; `None` (after
/// printing why) when apt cannot provide it.
pub fn debian_kernel() -> Option<KernelPackage> {
    match package::fetch(CLOUD_KERNEL_META, &test_cache().join("debian-kernel")) {
        Ok(pkg) => Some(pkg),
        Err(e) => {
            println!("skipped: cannot fetch the Debian kernel: {e}");
            None
        }
    }
}
