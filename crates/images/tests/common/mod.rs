//! What the integration tests share: the test cache and the real Debian
//! kernel in it.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

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

/// banger-init and the probe, statically linked, built by a nested cargo
/// in a target directory of their own (the outer cargo holds its lock);
/// once per test binary.
pub fn build_static_guest_binaries() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(build_static_guest_binaries_now).clone()
}

fn build_static_guest_binaries_now() -> (PathBuf, PathBuf) {
    let target_dir = test_cache().join("static-guest-target");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let triple = "x86_64-unknown-linux-gnu";
    let started = Instant::now();
    let output = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            triple,
            "-p",
            "banger-init",
        ])
        .args(["--bin", "banger-init", "--example", "boot-probe"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(&workspace)
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "building static banger-init failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("static guest binaries built in {:?}", started.elapsed());
    let release = target_dir.join(triple).join("release");
    (
        release.join("banger-init"),
        release.join("examples/boot-probe"),
    )
}
