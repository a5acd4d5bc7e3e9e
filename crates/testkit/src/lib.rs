//! What banger's integration tests share: a cache outside the source tree
//! for things worth making once (Debian's kernel, statically linked guest
//! binaries, built images), and the skip convention.
//!
//! Test support only: no crate depends on it outside `[dev-dependencies]`.
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use banger_images::kernel::package::{self, CLOUD_KERNEL_META, KernelPackage};

pub mod owner;
pub mod qemu;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$BANGER_TEST_CACHE`, else `test-cache` in cargo's target directory
/// (outside the source tree's tracked files either way).
pub fn test_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("BANGER_TEST_CACHE") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("test-cache")
}

/// Whether every tool is installed; if not, says which is missing.
pub fn have_tools(tools: &[&str]) -> bool {
    for tool in tools {
        if banger_config::find_tool(tool).is_none() {
            skip(format!("{tool} is not installed"));
            return false;
        }
    }
    true
}

/// Whether this process runs as root (namespaces, TAPs, mmdebstrap).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// Set to `1` to make every skip a failure: a run that must prove
/// everything (a host that has all the tools) cannot pass by skipping.
pub const REQUIRE_ENV: &str = "BANGER_TEST_REQUIRE";

/// Says why a test does not run, on stderr, uncaptured (cargo test shows
/// it without `--nocapture`; a captured line of a passing test is hidden
/// and the skip would read as `ok`); call it and return. With `BANGER_TEST_REQUIRE=1`
/// the skip is a failure instead.
pub fn skip(why: impl std::fmt::Display) {
    if std::env::var_os(REQUIRE_ENV).is_some_and(|v| v == "1") {
        panic!("skipped: {why}, and {REQUIRE_ENV}=1 makes a skip a failure");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` as it
    // does `println!`, and would hide the skip of a passing test.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// As [`skip`], for a requirement CI cannot have (a Firecracker binary,
/// real KVM, a constant TSC) or a test that is only the inner half of
/// another (it runs inside the namespace its outer test makes): the skip
/// is printed, and says why `BANGER_TEST_REQUIRE=1` lets it pass.
pub fn skip_beyond_ci(why: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {why} ({REQUIRE_ENV}=1 allows this skip: no CI run can provide it)"
    );
}

/// Debian's cloud kernel, fetched once into the test cache; `None` (after
/// printing why) when apt cannot provide it.
pub fn debian_kernel() -> Option<KernelPackage> {
    match package::fetch(CLOUD_KERNEL_META, &test_cache().join("debian-kernel")) {
        Ok(pkg) => Some(pkg),
        Err(e) => {
            skip(format!("cannot fetch the Debian kernel: {e}"));
            None
        }
    }
}

/// Debian's cloud kernel as the ELF vmlinux, and banger's initramfs for it
/// (with the static banger-init), written into `dir`; `None` (after saying
/// why) when the kernel cannot be fetched.
pub fn guest_kernel(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    use banger_images::initramfs::{self, GUEST_MODULES, InitramfsSpec};
    let pkg = debian_kernel()?;
    let vmlinux = dir.join("vmlinux");
    banger_images::kernel::extract_vmlinux_file(&pkg.bzimage(), &vmlinux).expect("extract vmlinux");
    let initramfs_path = dir.join("initramfs.cpio.gz");
    let modules_dir = pkg.modules_dir();
    let spec = InitramfsSpec {
        init: &static_guest_binaries().init,
        modules_dir: &modules_dir,
        modules: GUEST_MODULES,
    };
    initramfs::build_initramfs(&spec, &initramfs_path).expect("build initramfs");
    Some((vmlinux, initramfs_path))
}

/// Statically linked guest binaries: `banger-init` and the `boot-probe`
/// example, built by a nested cargo in a target directory of their own
/// (the outer cargo holds its lock); once per test binary.
pub struct GuestBinaries {
    pub init: PathBuf,
    pub boot_probe: PathBuf,
}

pub fn static_guest_binaries() -> &'static GuestBinaries {
    static BUILT: OnceLock<GuestBinaries> = OnceLock::new();
    BUILT.get_or_init(build_static_guest_binaries)
}

fn build_static_guest_binaries() -> GuestBinaries {
    let target_dir = test_cache().join("static-guest-target");
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
        .current_dir(workspace())
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "building static banger-init failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("static guest binaries built in {:?}", started.elapsed());
    let release = target_dir.join(triple).join("release");
    GuestBinaries {
        init: release.join("banger-init"),
        boot_probe: release.join("examples/boot-probe"),
    }
}

/// `mkfs.ext4 -d CONTENTS IMAGE SIZE`, owned by root inside.
pub fn mkfs_ext4(image: &Path, contents: &Path, label: &str, uuid: Option<&str>, size: &str) {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d"])
        .arg(contents);
    if let Some(uuid) = uuid {
        cmd.args(["-U", uuid]);
    }
    let output = cmd.arg(image).arg(size).output().expect("run mkfs.ext4");
    assert!(
        output.status.success(),
        "mkfs.ext4 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Debian root filesystem (bookworm, mmdebstrap's `minbase` variant) as
/// one tar, for tests that need a Debian-based OCI image. Made once from
/// the host's apt sources, with the packages of the shared apt cache (the
/// default image's build fills it), and kept in the test cache by the
/// sources it came from. `None`, after saying why, without root,
/// mmdebstrap or apt sources.
pub fn debian_minbase_tar() -> Option<PathBuf> {
    debian_tar("debian-minbase", "minbase nodev", &[])
}

/// As [`debian_minbase_tar`], with systemd as its init and what the system
/// install's test runs in it: a tree systemd-nspawn boots.
pub fn debian_systemd_tar() -> Option<PathBuf> {
    debian_tar(
        "debian-systemd",
        "systemd nodev",
        &["systemd", "systemd-sysv", "dbus", "iproute2", "nftables"],
    )
}

/// As [`debian_minbase_tar`], with Debian's Docker Engine (`docker.io`,
/// which brings containerd, runc and iptables): a Debian image with
/// Docker in it, as a user would make one for an OCI registry.
pub fn debian_docker_tar() -> Option<PathBuf> {
    debian_tar("debian-docker", "docker nodev", &["docker.io"])
}

/// A bookworm minbase tar with `include` added, cached in `cache_dir` of
/// the test cache under a name that carries `recipe` and the mirror.
fn debian_tar(cache_dir: &str, recipe: &str, include: &[&str]) -> Option<PathBuf> {
    use banger_images::debian::{self, DEFAULT_SUITE};
    if !running_as_root() {
        skip("mmdebstrap --mode=root needs root");
        return None;
    }
    if !have_tools(&["mmdebstrap"]) {
        return None;
    }
    let sources = match debian::host_sources(DEFAULT_SUITE) {
        Ok(s) => s,
        Err(e) => {
            skip(e);
            return None;
        }
    };
    let lines: Vec<String> = sources
        .iter()
        .flat_map(|s| {
            s.suites
                .iter()
                .map(move |suite| format!("deb {} {suite} {}", s.uri, s.components.join(" ")))
        })
        .collect();
    // The file name carries what decides the content (the mirror, and
    // this recipe's version), so a change makes a new one.
    let mut key_text = recipe.to_string();
    if !include.is_empty() {
        key_text.push_str(&format!(" {}", include.join(",")));
    }
    let key = banger_images::digest::sha256_str(&format!("{key_text}\n{}", lines.join("\n")));
    let dir = test_cache().join(cache_dir);
    let tar = dir.join(format!("{DEFAULT_SUITE}-{}.tar", &key[..16]));
    if tar.is_file() {
        return Some(tar);
    }
    std::fs::create_dir_all(&dir).expect("create the test cache");
    let lock = std::fs::File::create(dir.join(".lock")).expect("create the lock");
    lock.lock().expect("lock");
    if tar.is_file() {
        return Some(tar);
    }
    let apt = test_cache().join("apt-archives");
    std::fs::create_dir_all(&apt).expect("create the apt cache");
    let partial = tar.with_extension("partial");
    let started = Instant::now();
    let mut command = Command::new("mmdebstrap");
    command.args(["--mode=root", "--variant=minbase", "--format=tar"]);
    if !include.is_empty() {
        command.arg(format!("--include={}", include.join(",")));
    }
    let output = command
        // No /dev nodes in the tar, as in an image from a registry.
        .arg("--skip=output/dev")
        .arg(r#"--setup-hook=mkdir -p "$1/var/cache/apt/archives""#)
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives/",
            apt.display()
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            apt.display()
        ))
        .arg(r#"--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb"#)
        .arg(DEFAULT_SUITE)
        .arg(&partial)
        .args(&lines)
        .output()
        .expect("run mmdebstrap");
    assert!(
        output.status.success(),
        "mmdebstrap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &tar).expect("move the tar into place");
    println!("Debian {cache_dir} tar made in {:?}", started.elapsed());
    Some(tar)
}
