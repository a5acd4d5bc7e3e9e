//! A real build of the default Debian image (mmdebstrap from the host's
//! apt mirror, a few minutes and a few hundred MB of downloads the first
//! time), opt-in: set BANGER_TEST_IMAGE_BUILD=1. The image lands in the
//! test cache keyed by recipe hash, so later runs reuse it.

mod common;

use std::process::Command;
use std::time::Instant;

use banger_images::debian::{self, BuildOptions, DebianRecipe};
use banger_images::digest;

#[test]
fn builds_the_default_image_then_reuses_it() {
    if std::env::var_os("BANGER_TEST_IMAGE_BUILD").is_none() {
        println!("skipped: set BANGER_TEST_IMAGE_BUILD=1 to build the Debian image");
        return;
    }
    for tool in ["mmdebstrap", "mkfs.ext4", "debugfs"] {
        if which::which(tool).is_err() {
            println!("skipped: {tool} is not installed");
            return;
        }
    }
    let sources = match debian::host_sources(debian::DEFAULT_SUITE) {
        Ok(s) => s,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    let recipe = DebianRecipe::bookworm(sources);
    let (init, _) = common::build_static_guest_binaries();
    let cache = common::test_cache();
    let options = BuildOptions {
        images_cache: cache.join("images"),
        apt_cache: cache.join("apt-archives"),
        log: cache.join("image-build.log"),
        init: Some(init),
    };
    let started = Instant::now();
    let mut phases = Vec::new();
    let image = debian::build_image(&recipe, &options, &mut |p| {
        println!("phase {p:?} at {:?}", started.elapsed());
        phases.push(p);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "built {} (reused: {}) in {:?}; kernel {}",
        image.dir.display(),
        image.reused,
        started.elapsed(),
        image.kernel_release
    );
    for a in &image.artifacts {
        println!("  {}  {} ({} bytes)", a.sha256, a.name, a.size);
    }
    digest::verify(&image.dir).expect("pins verify");
    assert!(image.initramfs().is_some());
    let names: Vec<&str> = image.artifacts.iter().map(|a| a.name.as_str()).collect();
    for name in [
        "rootfs.ext4",
        "vmlinuz",
        "vmlinux",
        "recipe.txt",
        "initramfs.cpio.gz",
    ] {
        assert!(names.contains(&name), "{name} not pinned: {names:?}");
    }

    let debugfs = |request: &str| {
        let out = Command::new("debugfs")
            .args(["-R", request])
            .arg(image.rootfs())
            .output()
            .expect("debugfs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dropin = debugfs("cat /etc/ssh/sshd_config.d/banger.conf");
    assert!(
        dropin.contains("PermitRootLogin prohibit-password"),
        "{dropin}"
    );
    let ssh_dir = debugfs("ls -l /etc/ssh");
    assert!(
        !ssh_dir.contains("ssh_host_"),
        "host keys baked in:\n{ssh_dir}"
    );
    assert_eq!(debugfs("cat /etc/machine-id"), "");
    let sbin = debugfs("stat /sbin/init");
    assert!(sbin.contains("Inode:"), "no /sbin/init in the image");
    let uuid = Command::new("dumpe2fs")
        .args(["-h"])
        .arg(image.rootfs())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(uuid.contains(&image.rootfs_uuid()), "UUID not set");

    // The same recipe again is a cache hit.
    let again = Instant::now();
    let reused = debian::build_image(&recipe, &options, &mut |_| {}).expect("reuse");
    assert!(reused.reused);
    assert_eq!(reused.artifacts, image.artifacts);
    println!("reused in {:?}", again.elapsed());
}
