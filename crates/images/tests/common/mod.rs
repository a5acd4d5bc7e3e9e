//! What the Debian image tests share: the smoke boot.

use std::fs;
use std::process::Command;
use std::time::Duration;

use banger_images::debian;
use banger_testkit::qemu::Microvm;

/// Boots the image the way a VM will: the base read-only, an empty sparse
/// system disk (overlay upper, per-VM files) and an empty sparse work disk
/// at /root, and waits for systemd's multi-user target and sshd.
pub fn smoke_boot(image: &debian::BuiltImage) {
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
