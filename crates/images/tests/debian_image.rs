//! The default Debian image, for real: built with mmdebstrap from the
//! host's apt mirror (about a minute and 160 MB of packages the first
//! time; the image lands in the test cache keyed by recipe hash, so later
//! runs reuse it), then smoke-booted under QEMU/TCG with banger's kernel,
//! initramfs and two fresh sparse disks until systemd reaches
//! multi-user.target and sshd has started.
//!
//! `BANGER_TEST_SKIP_IMAGE_BUILD=1` skips it (saying so), for quick local
//! runs; CI runs it.

use std::process::Command;
use std::time::Instant;

mod common;
use common::smoke_boot;

use banger_images::debian::{self, BuildOptions, DebianRecipe};
use banger_images::digest;

#[test]
fn builds_the_default_image_then_reuses_it() {
    if std::env::var_os("BANGER_TEST_SKIP_IMAGE_BUILD").is_some() {
        return banger_testkit::skip("BANGER_TEST_SKIP_IMAGE_BUILD is set");
    }
    if !banger_testkit::have_tools(&[
        "mmdebstrap",
        "mkfs.ext4",
        "debugfs",
        "ssh-keygen",
        "qemu-system-x86_64",
    ]) {
        return;
    }
    if !banger_testkit::running_as_root() {
        return banger_testkit::skip(
            "building the Debian image needs root (mmdebstrap --mode=root)",
        );
    }
    let sources = match debian::host_sources(debian::DEFAULT_SUITE) {
        Ok(s) => s,
        Err(e) => {
            banger_testkit::skip(format!("{e}"));
            return;
        }
    };
    let recipe = DebianRecipe::bookworm(sources);
    let init = banger_testkit::static_guest_binaries().init.clone();
    let cache = banger_testkit::test_cache();
    let options = BuildOptions {
        images_cache: cache.join("images"),
        apt_cache: cache.join("apt-archives"),
        downloads: cache.join("downloads"),
        log: cache.join("image-build.log"),
        init: Some(init),
        id_mapper: None,
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

    smoke_boot(&image);

    // The same recipe again is a cache hit.
    let again = Instant::now();
    let reused = debian::build_image(&recipe, &options, &mut |_| {}).expect("reuse");
    assert!(reused.reused);
    assert_eq!(reused.artifacts, image.artifacts);
    println!("reused in {:?}", again.elapsed());
}
