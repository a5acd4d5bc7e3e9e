//! Images and kernels through the real binaries: catalog pulls pinned by
//! SHA-256, registering a user's ext4, verifying, deleting, and builds
//! that fail cleanly. The rootfs here is a small ext4 holding Debian's
//! real cloud kernel and its modules, so the kernel banger extracts and
//! the initramfs it builds are the real thing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_images::digest::sha256_file;
use banger_model::{ArtifactRole, ImageRecord, KernelRecord};
use common::*;
use predicates::prelude::*;
use predicates::str::contains;

/// A small ext4 with `/boot/vmlinuz-REL` and `/usr/lib/modules/REL`.
struct Rootfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
    release: String,
    sha256: String,
    size: u64,
}

fn rootfs_with_kernel() -> Option<Rootfs> {
    if banger_config::find_tool("mkfs.ext4").is_none() {
        banger_testkit::skip("mkfs.ext4 is not installed");
        return None;
    }
    let kernel = banger_testkit::debian_kernel()?;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let release = kernel.release.clone();
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(tree.join("usr/lib/modules")).unwrap();
    fs::create_dir_all(tree.join("sbin")).unwrap();
    fs::copy(
        kernel.bzimage(),
        tree.join(format!("boot/vmlinuz-{release}")),
    )
    .unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(kernel.modules_dir())
        .arg(tree.join("usr/lib/modules"))
        .status()
        .unwrap();
    assert!(status.success());
    fs::write(tree.join("sbin/init"), "#!/bin/sh\n").unwrap();
    let path = dir.path().join("tiny.ext4");
    banger_testkit::mkfs_ext4(&path, &tree, "tiny", None, "256M");
    fs::remove_dir_all(&tree).unwrap();
    let (sha256, size) = sha256_file(&path).unwrap();
    Some(Rootfs {
        _dir: dir,
        path,
        release,
        sha256,
        size,
    })
}

fn with_init(home: &TestHome) -> impl Fn(&[&str]) -> assert_cmd::Command + '_ {
    let init = banger_testkit::static_guest_binaries().init.clone();
    move |args| {
        let mut cmd = home.banger(args);
        cmd.env("BANGER_INIT_BIN", &init);
        cmd
    }
}

fn catalog_entry(name: &str, path: &Path, sha256: &str, size: u64) -> String {
    format!(
        "[[image]]\nname = \"{name}\"\nrootfs = {{ path = \"{}\", sha256 = \"{sha256}\", size = {size} }}\n\n",
        path.display()
    )
}

#[test]
fn pull_register_verify_and_delete() {
    let Some(rootfs) = rootfs_with_kernel() else {
        return;
    };
    let home = TestHome::new();
    let banger = with_init(&home);
    let release = rootfs.release.as_str();
    let mut catalog = catalog_entry("tiny", &rootfs.path, &rootfs.sha256, rootfs.size);
    catalog += &catalog_entry("tampered", &rootfs.path, &"0".repeat(64), rootfs.size);
    fs::create_dir_all(home.root().join("config")).unwrap();
    fs::write(home.root().join("config/catalog.toml"), catalog).unwrap();

    banger(&["image", "pull", "--list"])
        .assert()
        .success()
        .stdout(contains("tiny").and(contains("debian-bookworm")));

    // Pull: the kernel is read out of the image, vmlinux extracted, and
    // banger's initramfs built from the image's own modules.
    banger(&["image", "pull", "tiny"])
        .assert()
        .success()
        .stdout(contains(format!("image tiny is ready (kernel {release})")));
    let out = banger(&["kernel", "show", release, "--json"])
        .output()
        .unwrap();
    let kernel: KernelRecord = serde_json::from_slice(&out.stdout).expect("kernel JSON");
    let kernel_dir = home.state().join("kernels").join(release);
    for role in [
        ArtifactRole::Bzimage,
        ArtifactRole::Vmlinux,
        ArtifactRole::Initramfs,
    ] {
        let a = kernel
            .artifact(role)
            .unwrap_or_else(|| panic!("{role} missing"));
        let (sha, size) = sha256_file(&kernel_dir.join(&a.file)).unwrap();
        assert_eq!(
            (sha.as_str(), size),
            (a.sha256.as_str(), a.size),
            "{role} pin"
        );
    }
    let vmlinux = fs::read(kernel_dir.join("vmlinux")).unwrap();
    assert_eq!(&vmlinux[..4], b"\x7fELF");

    let out = banger(&["image", "show", "tiny", "--json"])
        .output()
        .unwrap();
    let image: ImageRecord = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(image.kernel, release);
    assert_eq!(image.source, "catalog:tiny");
    assert_eq!(
        image.artifact(ArtifactRole::Rootfs).unwrap().sha256,
        rootfs.sha256
    );
    let base = home.state().join("images/tiny/rootfs.ext4");
    assert_eq!(
        fs::metadata(&base).unwrap().permissions().mode() & 0o777,
        0o444
    );
    banger(&["image", "verify", "tiny"])
        .assert()
        .success()
        .stdout(contains("every file matches"));

    // A catalog pin that does not match: refused, nothing recorded or left.
    banger(&["image", "pull", "tampered"])
        .assert()
        .code(1)
        .stderr(contains("the catalog pins").and(contains("nothing was recorded")));
    assert!(!home.state().join("images/tampered").exists());
    assert!(!home.state().join("images/.pull-tampered").exists());

    // Register the same file under another name.
    let path = rootfs.path.to_str().unwrap();
    banger(&[
        "image", "register", "--rootfs", path, "--kernel", release, "--name", "reg",
    ])
    .assert()
    .success();
    banger(&[
        "image", "register", "--rootfs", path, "--kernel", release, "--name", "reg",
    ])
    .assert()
    .code(1)
    .stderr(contains("image reg already exists"));
    banger(&[
        "image", "register", "--rootfs", path, "--kernel", "nope", "--name", "x",
    ])
    .assert()
    .code(1)
    .stderr(contains("kernel \"nope\" not found"));
    let not_ext4 = home.root().join("notes.txt");
    fs::write(&not_ext4, "not a filesystem").unwrap();
    banger(&[
        "image",
        "register",
        "--rootfs",
        not_ext4.to_str().unwrap(),
        "--kernel",
        release,
    ])
    .assert()
    .code(1)
    .stderr(contains("is not an ext4 filesystem"));
    assert!(!home.state().join("images/notes").exists());

    let out = banger(&["image", "list", "--json"]).output().unwrap();
    let images: Vec<ImageRecord> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["reg", "tiny"]);

    // A changed file is named, and verification fails.
    let reg = home.state().join("images/reg/rootfs.ext4");
    fs::set_permissions(&reg, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&reg).unwrap();
    bytes[5000] ^= 0xff;
    fs::write(&reg, bytes).unwrap();
    banger(&["image", "verify", "reg"])
        .assert()
        .code(1)
        .stderr(contains(
            "rootfs.ext4 of image reg changed since it was made",
        ));

    // Deleting follows references.
    banger(&["kernel", "delete", release])
        .assert()
        .code(1)
        .stderr(contains("is used by image(s) reg, tiny"));
    banger(&["image", "delete", "tiny"]).assert().success();
    banger(&["image", "delete", "reg"]).assert().success();
    banger(&["image", "delete", "reg"])
        .assert()
        .code(1)
        .stderr(contains("image \"reg\" not found"));
    banger(&["kernel", "delete", release]).assert().success();
    assert!(!kernel_dir.exists());
    assert!(!home.state().join("images/tiny").exists());
    banger(&["kernel", "list"])
        .assert()
        .success()
        .stdout(contains("no kernels yet"));
}

/// A catalog image crafted to write through a link: its modules folder
/// holds a symlink `evil` to a host file, then a regular file `evil`.
/// debugfs `rdump` made the link on the host and wrote the file through
/// it, as root. The pull is refused, naming the image; the host file is
/// as it was and nothing is recorded or left.
#[test]
fn a_crafted_catalog_image_never_writes_outside_its_kernel_folder() {
    if !banger_testkit::have_tools(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let home = TestHome::new();
    let target = home.root().join("host-file");
    fs::write(&target, "original\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let release = "6.1.0-crafted";
    let modules = format!("usr/lib/modules/{release}");
    fs::create_dir_all(tree.join(&modules)).unwrap();
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(tree.join("data/file")).unwrap();
    fs::create_dir_all(tree.join("data/link")).unwrap();
    fs::write(tree.join(format!("boot/vmlinuz-{release}")), "bzImage").unwrap();
    fs::write(tree.join(&modules).join("modules.order"), "").unwrap();
    fs::write(tree.join("data/file/evil"), "attacker bytes\n").unwrap();
    std::os::unix::fs::symlink(&target, tree.join("data/link/evil")).unwrap();
    let image = dir.path().join("crafted.ext4");
    banger_testkit::mkfs_ext4(&image, &tree, "crafted", None, "16M");
    // `ln` into a folder keeps the source's name and checks nothing.
    for source in ["/data/link/evil", "/data/file/evil"] {
        let out = Command::new("debugfs")
            .args(["-w", "-R", &format!("ln {source} /{modules}")])
            .arg(&image)
            .output()
            .unwrap();
        assert!(out.status.success(), "debugfs: {out:?}");
    }
    let (sha256, size) = sha256_file(&image).unwrap();
    fs::create_dir_all(home.root().join("config")).unwrap();
    fs::write(
        home.root().join("config/catalog.toml"),
        catalog_entry("crafted", &image, &sha256, size),
    )
    .unwrap();

    home.banger(&["image", "pull", "crafted"])
        .env("BANGER_INIT_BIN", "/nonexistent")
        .assert()
        .code(1)
        .stderr(contains("image \"crafted\"").and(contains("two entries named \"evil\"")));
    assert_eq!(fs::read(&target).unwrap(), b"original\n");
    assert!(!home.state().join("images/crafted").exists());
    assert!(!home.state().join("images/.pull-crafted").exists());
    assert!(!home.state().join("kernels").join(release).exists());
}

#[test]
fn image_build_with_an_unreachable_mirror_fails_cleanly() {
    if which::which("mmdebstrap").is_err() {
        return banger_testkit::skip("mmdebstrap is not installed");
    }
    if !banger_testkit::running_as_root() {
        return banger_testkit::skip("image builds need root (mmdebstrap --mode=root)");
    }
    let home = TestHome::new();
    // Port 9 (discard) on loopback: nothing answers.
    home.write_config("debian_mirror = \"http://127.0.0.1:9/debian\"\n");
    let banger = with_init(&home);
    let out = banger(&["image", "build", "--name", "broken"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let log = home.state().join("image-build/broken.log");
    assert!(err.contains("image build failed: mmdebstrap"), "{err}");
    assert!(err.contains(log.to_str().unwrap()), "names the log: {err}");
    assert!(
        err.trim().lines().last().unwrap().starts_with("error: "),
        "{err}"
    );
    assert!(fs::read_to_string(&log).unwrap().contains("127.0.0.1:9"));
    let out = banger(&["image", "list", "--json"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), "[]");
    let leftovers: Vec<_> = fs::read_dir(home.root().join("cache/images"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "no partial build left: {leftovers:?}");
}

#[test]
fn bad_image_requests_are_refused_up_front() {
    let home = TestHome::new();
    let banger = |args: &[&str]| {
        let mut cmd = home.banger(args);
        cmd.env("BANGER_INIT_BIN", "/nonexistent");
        cmd
    };
    banger(&["image", "build", "--name", "../etc"])
        .assert()
        .code(1)
        .stderr(contains("image name \"../etc\" is not valid"));
    banger(&["image", "build", "--package", "Bad Package"])
        .assert()
        .code(1)
        .stderr(contains("is not a Debian package name"));
    let recipe = home.root().join("recipe.toml");
    fs::write(&recipe, "packages = [\"jq\"]\nflavour = \"x\"\n").unwrap();
    banger(&["image", "build", "--from-config", recipe.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(contains("unknown field `flavour`"));
    // A suite reaches mmdebstrap's arguments and apt's sources lines: a
    // value that would be an option or another line is refused, naming
    // the field, before anything runs.
    let marker = home.root().join("hook-ran");
    for suite in [
        format!("--setup-hook=touch {}", marker.display()),
        "bookworm\ndeb http://evil.invalid/debian bookworm main".to_string(),
    ] {
        fs::write(&recipe, format!("suite = {}\n", toml_string(&suite))).unwrap();
        banger(&["image", "build", "--from-config", recipe.to_str().unwrap()])
            .assert()
            .code(1)
            .stderr(contains("recipe suite "))
            .stderr(contains("is not valid"));
    }
    assert!(!marker.exists(), "no hook ran");
    banger(&["image", "pull", "nothing-like-this"])
        .assert()
        .code(1)
        .stderr(contains("no catalog entry named \"nothing-like-this\""));
    fs::create_dir_all(home.root().join("config")).unwrap();
    fs::write(
        home.root().join("config/catalog.toml"),
        "[[image]]\nname = \"x\"\n",
    )
    .unwrap();
    banger(&["image", "pull", "x"])
        .assert()
        .code(1)
        .stderr(contains("exactly one of `recipe`"));
    banger(&["image", "verify", "nope"])
        .assert()
        .code(1)
        .stderr(contains("image \"nope\" not found"));
}

/// `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    format!("{:?}", value)
}
