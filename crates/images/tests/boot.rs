//! Boots the artifacts this crate makes, under QEMU with TCG: Debian's
//! cloud kernel as the extracted vmlinux, banger's initramfs with
//! banger-init, and a tiny ext4 base whose /sbin/init (the `boot-probe`
//! example of crates/init) reports what the guest sees and powers off.
//! Proves extraction, the initramfs and banger-init together, before any
//! VM lifecycle exists.
//!
//! Needs qemu-system-x86_64, mkfs.ext4 and apt (for the kernel, cached in
//! the test cache); skips with the reason when one is missing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger_testkit::qemu::{Console, Microvm};
use banger_testkit::{mkfs_ext4 as mkfs, static_guest_binaries};

/// A boot that has not powered off by then has hung.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const BASE_UUID: &str = "6b1d0f0e-6a3c-4d53-9c3e-0ba5e0000001";
const SYSTEM_UUID: &str = "6b1d0f0e-6a3c-4d53-9c3e-0ba5e0000002";

/// Everything a boot needs, made once per test.
struct Guest {
    dir: tempfile::TempDir,
    vmlinux: PathBuf,
    initramfs: PathBuf,
}

#[test]
fn boots_to_the_image_init_with_overlay_root_work_disk_and_network() {
    let Some(guest) = prepare() else { return };
    let boot = guest.boot(&format!(
        "banger.base=UUID={BASE_UUID} banger.system=UUID={SYSTEM_UUID} banger.work=LABEL=banger-work \
         banger.ip=172.16.0.5/24 banger.gw=172.16.0.1 banger.dns=172.16.0.1 banger.hostname=probe-vm"
    ));
    let probe = boot.probe();
    let expect = |key: &str, value: &str| {
        assert_eq!(
            probe.get(key).map(String::as_str),
            Some(value),
            "PROBE {key}; console:\n{}",
            boot.tail()
        )
    };
    expect("pid", "1");
    expect("hostname", "probe-vm");
    expect("etc-hostname", "probe-vm");
    expect("hosts-line", "127.0.1.1\tprobe-vm");
    expect("mount /", "overlay overlay");
    expect("work-marker", "from the work disk");
    expect("per-vm-file", "s3cret mode=600");
    expect("root-writable", "yes");
    expect("addresses", "172.16.0.5");
    expect("default-route", "eth0 via 172.16.0.1");
    expect("done", "powering off");
    assert!(
        boot.lines
            .iter()
            .any(|l| l.starts_with("banger-init ready in ")),
        "no readiness line; console:\n{}",
        boot.tail()
    );
    assert!(!boot.lines.iter().any(|l| l.starts_with("banger-init: ")));
    assert!(
        probe["resolv"].ends_with("nameserver 172.16.0.1;"),
        "{}",
        probe["resolv"]
    );
    let work_mount = &probe["mount /root"];
    assert!(work_mount.starts_with("ext4 /dev/vd"), "{work_mount}");
    // The write went to the overlay's upper layer on the system disk and
    // the base stayed untouched.
    assert!(
        ext4_has(
            &guest.dir.path().join("system.ext4"),
            "/overlay/upper/probe-was-here"
        ),
        "the root's write is not on the system disk"
    );
    assert!(!ext4_has(
        &guest.dir.path().join("base.ext4"),
        "/probe-was-here"
    ));
    println!("timings: {}", boot.timings());
}

#[test]
fn a_missing_disk_prints_one_line_and_powers_off() {
    let Some(guest) = prepare() else { return };
    let boot = guest.boot(&format!(
        "banger.base=UUID={BASE_UUID} banger.system=UUID=00000000-0000-0000-0000-000000000000 \
         banger.timeout=1"
    ));
    let failures: Vec<&String> = boot
        .lines
        .iter()
        .filter(|l| l.starts_with("banger-init: "))
        .collect();
    assert_eq!(failures.len(), 1, "console:\n{}", boot.tail());
    assert!(
        failures[0].starts_with(
            "banger-init: waiting for the system disk UUID=00000000-0000-0000-0000-000000000000: not there after 1.0s (block devices: vda vdb vdc)"
        ),
        "{}",
        failures[0]
    );
    assert!(!boot.lines.iter().any(|l| l.starts_with("PROBE")));
    println!("timings: {}", boot.timings());
}

/// Fetches and builds everything; `None` (after saying why) when this
/// machine cannot.
fn prepare() -> Option<Guest> {
    if !banger_testkit::have_tools(&["qemu-system-x86_64", "mkfs.ext4", "debugfs"]) {
        return None;
    }
    let probe = static_guest_binaries().boot_probe.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (vmlinux, initramfs_path) = banger_testkit::guest_kernel(d)?;

    let base = d.join("base");
    for sub in ["sbin", "dev", "proc", "sys", "etc", "root", "run", "tmp"] {
        fs::create_dir_all(base.join(sub)).unwrap();
    }
    fs::copy(&probe, base.join("sbin/init")).unwrap();
    fs::write(
        base.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\timage\n",
    )
    .unwrap();
    mkfs(
        &d.join("base.ext4"),
        &base,
        "banger-base",
        Some(BASE_UUID),
        "32M",
    );

    let system = d.join("system");
    let secret = system.join("banger/files/etc/banger-test/secret");
    fs::create_dir_all(secret.parent().unwrap()).unwrap();
    fs::write(&secret, "s3cret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    mkfs(
        &d.join("system.ext4"),
        &system,
        "banger-system",
        Some(SYSTEM_UUID),
        "64M",
    );

    let work = d.join("work");
    fs::create_dir_all(&work).unwrap();
    fs::write(work.join("work-marker"), "from the work disk").unwrap();
    mkfs(&d.join("work.ext4"), &work, "banger-work", None, "64M");

    Some(Guest {
        dir,
        vmlinux,
        initramfs: initramfs_path,
    })
}

/// Whether `path` exists inside the ext4 image (read with debugfs, no mount).
fn ext4_has(image: &Path, path: &str) -> bool {
    let output = Command::new("debugfs")
        .args(["-R", &format!("stat {path}")])
        .arg(image)
        .output()
        .expect("run debugfs");
    output.status.success() && String::from_utf8_lossy(&output.stdout).contains("Inode:")
}

/// One boot to power-off: the console as [`Console`], plus what the
/// probe reported.
struct Boot(Console);

impl Guest {
    fn boot(&self, banger_params: &str) -> Boot {
        let d = self.dir.path();
        let console = Microvm::new(
            &self.vmlinux,
            &self.initramfs,
            &format!("quiet {banger_params}"),
        )
        .drive(&d.join("base.ext4"), true)
        .drive(&d.join("system.ext4"), false)
        .drive(&d.join("work.ext4"), false)
        .run(BOOT_TIMEOUT, |_| false);
        assert!(
            console.status.is_some_and(|s| s.success()),
            "qemu exited with {:?}:\n{}",
            console.status,
            console.tail()
        );
        Boot(console)
    }
}

impl std::ops::Deref for Boot {
    type Target = Console;
    fn deref(&self) -> &Console {
        &self.0
    }
}

impl Boot {
    fn probe(&self) -> BTreeMap<String, String> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("PROBE "))
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn timings(&self) -> String {
        let init_line = self
            .lines
            .iter()
            .find(|l| l.starts_with("banger-init"))
            .cloned()
            .unwrap_or_default();
        format!(
            "init line at {:.2?} s, image init at {:.2?} s, powered off at {:.2} s; {init_line}",
            self.when("banger-init"),
            self.when("PROBE pid"),
            self.total.as_secs_f64()
        )
    }
}
