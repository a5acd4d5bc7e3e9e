//! The default Debian image, for real: built with mmdebstrap from the
//! host's apt mirror (about a minute and 160 MB of packages the first
//! time; the image lands in the test cache keyed by recipe hash, so later
//! runs reuse it), then smoke-booted under QEMU/TCG with banger's kernel,
//! initramfs and two fresh sparse disks until systemd reaches
//! multi-user.target and sshd has started.
//!
//! `BANGER_TEST_SKIP_IMAGE_BUILD=1` skips it (saying so), for quick local
//! runs; CI runs it.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_testkit::qemu::Microvm;

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

/// Boots the image the way a VM will: the base read-only, an empty sparse
/// system disk (overlay upper, per-VM files) and an empty sparse work disk
/// at /root, and waits for systemd's multi-user target and sshd.
fn smoke_boot(image: &debian::BuiltImage) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // sshd's host keys come per VM, through the system disk.
    let files = d.join("system/banger/files/etc/ssh");
    fs::create_dir_all(&files).unwrap();
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "smoke", "-f"])
        .arg(files.join("ssh_host_ed25519_key"))
        .status()
        .unwrap();
    assert!(keygen.success());
    let work = d.join("work");
    fs::create_dir_all(&work).unwrap();
    banger_testkit::mkfs_ext4(
        &d.join("system.ext4"),
        &d.join("system"),
        "banger-system",
        None,
        "1G",
    );
    banger_testkit::mkfs_ext4(&d.join("work.ext4"), &work, "banger-work", None, "1G");
    for disk in ["system.ext4", "work.ext4"] {
        let meta = fs::metadata(d.join(disk)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < meta.len() / 4, "{disk} is sparse");
    }

    let initramfs = image.initramfs().expect("initramfs");
    let params = format!(
        "banger.base=UUID={} banger.system=LABEL=banger-system banger.work=LABEL=banger-work \
         banger.ip=172.16.0.9/24 banger.gw=172.16.0.1 banger.dns=172.16.0.1 banger.hostname=smoke",
        image.rootfs_uuid()
    );
    let (mut multi_user, mut sshd, mut sshd_failed) = (false, false, false);
    let console = Microvm::new(&image.vmlinux(), &initramfs, &params)
        .memory_mib(1024)
        .drive(&image.rootfs(), true)
        .drive(&d.join("system.ext4"), false)
        .drive(&d.join("work.ext4"), false)
        .run(Duration::from_secs(240), |line| {
            multi_user |= line.contains("Reached target") && line.contains("Multi-User System");
            sshd |= line.contains("Started") && line.contains("OpenBSD Secure Shell server");
            sshd_failed |= line.contains("Failed to start") && line.contains("ssh");
            (multi_user && sshd) || sshd_failed || line.starts_with("banger-init: ")
        });
    let tail = console.tail();
    assert!(!sshd_failed, "sshd failed to start:\n{tail}");
    assert!(sshd, "sshd did not start:\n{tail}");
    assert!(
        multi_user,
        "systemd did not reach multi-user.target:\n{tail}"
    );
    println!(
        "smoke boot: banger-init ready at {:.1?} s, sshd at {:.1?} s, multi-user at {:.1?} s",
        console.when("banger-init ready"),
        console.when_contains("OpenBSD Secure Shell server"),
        console.when_contains("Multi-User System"),
    );
}
