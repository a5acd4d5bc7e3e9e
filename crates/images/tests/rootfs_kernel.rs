//! The kernel read out of an image's ext4 root filesystem: ordinary trees
//! come out whole, crafted ones never touch a host file banger did not
//! make, and oversized ones are refused with nothing left behind. The
//! images are made here with `mkfs.ext4 -d` and edited with `debugfs -w`
//! (no mounting, no root).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_images::kernel::rootfs::{ReadoutError, ReadoutLimits, read_rootfs_kernel};

const RELEASE: &str = "6.1.0-test-amd64";

/// A folder to build a tree in, and whether the tools are here.
fn workdir() -> Option<tempfile::TempDir> {
    banger_testkit::have_tools(&["mkfs.ext4", "debugfs"]).then(|| tempfile::tempdir().unwrap())
}

/// `tree` (under `dir`) with a kernel in /boot and a small modules tree
/// under /usr/lib/modules/RELEASE.
fn kernel_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    let modules = tree.join(format!("usr/lib/modules/{RELEASE}"));
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(modules.join("kernel/drivers/net")).unwrap();
    fs::write(
        tree.join(format!("boot/vmlinuz-{RELEASE}")),
        b"bzImage\x00\xff",
    )
    .unwrap();
    fs::write(tree.join("boot/config-6.1.0-test-amd64"), "CONFIG_X=y\n").unwrap();
    fs::write(
        modules.join("modules.order"),
        "kernel/drivers/net/virtio_net.ko\n",
    )
    .unwrap();
    fs::write(
        modules.join("modules.dep"),
        "kernel/drivers/net/virtio_net.ko:\n",
    )
    .unwrap();
    let module: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(modules.join("kernel/drivers/net/virtio_net.ko"), &module).unwrap();
    // Debian's links into the headers package: not needed, never made.
    symlink(
        "/usr/src/linux-headers-6.1.0-test-amd64",
        modules.join("build"),
    )
    .unwrap();
    tree
}

fn mkfs(dir: &Path, tree: &Path) -> PathBuf {
    let image = dir.join("rootfs.ext4");
    banger_testkit::mkfs_ext4(&image, tree, "root", None, "32M");
    image
}

/// Like [`mkfs`], without metadata checksums: bytes patched in by a test
/// still read as the filesystem's, as a crafted image's would.
fn mkfs_unchecked(dir: &Path, tree: &Path) -> PathBuf {
    let image = dir.join("rootfs.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^metadata_csum", "-d"])
        .arg(tree)
        .arg(&image)
        .arg("32M")
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs.ext4: {out:?}");
    image
}

/// One `debugfs -w` request against `image`; the test's own words.
fn edit(image: &Path, request: &str) {
    let out = Command::new("debugfs")
        .args(["-w", "-R", request])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs -w {request:?}: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| !l.starts_with("debugfs "))
            .count(),
        0,
        "debugfs -w {request:?}: {stderr}"
    );
}

/// Every file and folder under `root`, with file contents, sorted.
fn listing(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path);
                out.push((name, None));
            } else {
                assert!(meta.is_file(), "{name} is neither file nor folder");
                out.push((name, Some(fs::read(&path).unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn read_out(image: &Path, out: &Path, limits: ReadoutLimits) -> Result<(), String> {
    read_rootfs_kernel(image, out, &limits)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn an_ordinary_tree_comes_out_whole_without_its_links() {
    let Some(dir) = workdir() else {
        return;
    };
    let tree = kernel_tree(dir.path());
    // A FIFO among the modules: left out like a link.
    let fifo = tree.join(format!("usr/lib/modules/{RELEASE}/fifo"));
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let image = mkfs(dir.path(), &tree);

    let out = dir.path().join("out");
    let kernel = read_rootfs_kernel(&image, &out, &ReadoutLimits::default()).unwrap();
    assert_eq!(kernel.release, RELEASE);
    assert_eq!(kernel.bzimage, out.join(format!("vmlinuz-{RELEASE}")));
    assert_eq!(fs::read(&kernel.bzimage).unwrap(), b"bzImage\x00\xff");
    assert_eq!(kernel.modules_dir, out.join("modules").join(RELEASE));
    let modules = tree.join(format!("usr/lib/modules/{RELEASE}"));
    fs::remove_file(modules.join("build")).unwrap();
    fs::remove_file(&fifo).unwrap();
    assert_eq!(listing(&kernel.modules_dir), listing(&modules));
    let mut skipped = kernel.skipped.clone();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            format!("/usr/lib/modules/{RELEASE}/build"),
            format!("/usr/lib/modules/{RELEASE}/fifo"),
        ]
    );
}

/// The newest release wins, and a tree under /lib only is found too.
#[test]
fn the_newest_kernel_and_an_old_style_lib_tree_are_found() {
    let Some(dir) = workdir() else {
        return;
    };
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(tree.join("lib/modules/5.10.0-9-amd64")).unwrap();
    fs::write(tree.join("boot/vmlinuz-4.19.0-1-amd64"), "old").unwrap();
    fs::write(tree.join("boot/vmlinuz-5.10.0-9-amd64"), "new").unwrap();
    fs::write(tree.join("lib/modules/5.10.0-9-amd64/modules.order"), "").unwrap();
    let image = mkfs(dir.path(), &tree);
    let out = dir.path().join("out");
    let kernel = read_rootfs_kernel(&image, &out, &ReadoutLimits::default()).unwrap();
    assert_eq!(kernel.release, "5.10.0-9-amd64");
    assert_eq!(fs::read(&kernel.bzimage).unwrap(), b"new");
    assert!(kernel.modules_dir.join("modules.order").is_file());
}

/// `/lib -> usr/lib` is followed inside the image; an absolute link
/// that names a host folder holding a modules tree is still the image's
/// path, so the host tree is never read.
#[test]
fn lib_links_are_resolved_inside_the_image() {
    let Some(dir) = workdir() else {
        return;
    };
    let tree = kernel_tree(dir.path());
    fs::rename(tree.join("usr/lib"), tree.join("usr/lib64")).unwrap();
    symlink("usr/lib64", tree.join("lib")).unwrap();
    let image = mkfs(dir.path(), &tree);
    let out = dir.path().join("out");
    let kernel = read_rootfs_kernel(&image, &out, &ReadoutLimits::default()).unwrap();
    assert!(kernel.modules_dir.join("modules.dep").is_file());

    // Now /lib names a host folder that has the tree: not found.
    let host = dir.path().join("host-lib");
    fs::create_dir_all(host.join(format!("modules/{RELEASE}"))).unwrap();
    fs::write(
        host.join(format!("modules/{RELEASE}/modules.dep")),
        "host\n",
    )
    .unwrap();
    fs::remove_file(tree.join("lib")).unwrap();
    symlink(&host, tree.join("lib")).unwrap();
    fs::remove_dir_all(tree.join("usr/lib64")).unwrap();
    let image = mkfs(dir.path(), &tree);
    let out = dir.path().join("out2");
    let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
    assert!(err.contains("no modules tree"), "{err}");
    assert!(!out.exists());
}

/// Two entries of one name in a folder: a link to a host file, then a
/// regular file (debugfs `rdump` wrote through the link, as root), and
/// the other way round. The host file is untouched and the image refused.
#[test]
fn duplicate_names_never_write_through_a_link() {
    for link_first in [true, false] {
        let Some(dir) = workdir() else {
            return;
        };
        let tree = kernel_tree(dir.path());
        let target = dir.path().join("host-file");
        fs::write(&target, "original\n").unwrap();
        fs::create_dir_all(tree.join("data/file")).unwrap();
        fs::create_dir_all(tree.join("data/link")).unwrap();
        fs::write(tree.join("data/file/evil"), "attacker bytes\n").unwrap();
        symlink(&target, tree.join("data/link/evil")).unwrap();
        let image = mkfs(dir.path(), &tree);
        let modules = format!("/usr/lib/modules/{RELEASE}");
        // `ln` into a folder keeps the source's name and checks nothing.
        let link = format!("ln /data/link/evil {modules}");
        let file = format!("ln /data/file/evil {modules}");
        if link_first {
            edit(&image, &link);
            edit(&image, &file);
        } else {
            edit(&image, &file);
            edit(&image, &link);
        }

        let out = dir.path().join("out");
        let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
        assert_eq!(fs::read(&target).unwrap(), b"original\n");
        assert!(err.contains("two entries named \"evil\""), "{err}");
        assert!(err.contains("rootfs.ext4"), "names the image: {err}");
        assert!(!out.exists(), "a partial read-out is left behind");
    }
}

/// The same with folders: a link `kernel -> HOST` and then a folder
/// `kernel` whose files would land in HOST.
#[test]
fn a_duplicate_folder_never_lands_in_a_host_folder() {
    let Some(dir) = workdir() else {
        return;
    };
    let tree = kernel_tree(dir.path());
    let host = dir.path().join("host-dir");
    fs::create_dir(&host).unwrap();
    fs::create_dir_all(tree.join("data/kernel")).unwrap();
    fs::write(tree.join("data/kernel/planted"), "attacker bytes\n").unwrap();
    let modules = format!("/usr/lib/modules/{RELEASE}");
    fs::remove_dir_all(tree.join(&modules[1..]).join("kernel")).unwrap();
    let image = mkfs(dir.path(), &tree);
    edit(
        &image,
        &format!("symlink {modules}/kernel {}", host.display()),
    );
    edit(&image, &format!("ln /data/kernel {modules}"));

    let out = dir.path().join("out");
    let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
    assert!(err.contains("two entries named \"kernel\""), "{err}");
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "wrote into the host"
    );
    assert!(!out.exists());
}

/// Renames the one regular file called `from` (two bytes) in `image` by
/// patching its directory entry: no tool makes a file called `..`.
fn rename_entry(image: &Path, from: &[u8; 2], to: &[u8; 2]) {
    let mut bytes = fs::read(image).unwrap();
    // name_len 2, file type 1 (regular file), the name.
    let needle = [2, 1, from[0], from[1]];
    let at: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "entry {from:?} found {} times", at.len());
    bytes[at[0] + 2..at[0] + 4].copy_from_slice(to);
    fs::write(image, bytes).unwrap();
}

/// Names a host path cannot hold, as a damaged or crafted image has
/// them: a regular file called `..`, a name with a `/`.
#[test]
fn entries_that_are_no_file_name_are_refused() {
    for (to, expect) in [(b"..", "named \"..\""), (b"a/", "rootfs.ext4")] {
        let Some(dir) = workdir() else {
            return;
        };
        let tree = kernel_tree(dir.path());
        fs::write(tree.join(format!("usr/lib/modules/{RELEASE}/Q~")), "x").unwrap();
        let image = mkfs_unchecked(dir.path(), &tree);
        rename_entry(&image, b"Q~", to);
        let out = dir.path().join("out");
        let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
        assert!(err.contains(expect), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn a_tree_over_the_byte_cap_is_refused_and_removed() {
    let Some(dir) = workdir() else {
        return;
    };
    let image = mkfs(dir.path(), &kernel_tree(dir.path()));
    let out = dir.path().join("out");
    let limits = ReadoutLimits {
        bytes: 50_000,
        ..ReadoutLimits::default()
    };
    let err = read_rootfs_kernel(&image, &out, &limits).unwrap_err();
    assert!(
        matches!(err, ReadoutError::TooManyBytes { limit: 50_000, .. }),
        "{err}"
    );
    let err = err.to_string();
    assert!(
        err.contains("more than 50000 bytes") && err.contains("rootfs.ext4"),
        "{err}"
    );
    assert!(!out.exists(), "a partial read-out is left behind");
}

/// A sparse file claims its size: a small image could unpack to
/// terabytes. It is refused before a byte of it is written.
#[test]
fn a_sparse_file_over_the_byte_cap_is_refused_before_writing() {
    let Some(dir) = workdir() else {
        return;
    };
    let tree = kernel_tree(dir.path());
    let huge = tree.join(format!("usr/lib/modules/{RELEASE}/kernel/huge.ko"));
    fs::File::create(&huge).unwrap().set_len(3 << 30).unwrap();
    let image = mkfs(dir.path(), &tree);
    let out = dir.path().join("out");
    let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
    assert!(err.contains("more than 2147483648 bytes"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_tree_over_the_entry_cap_is_refused_and_removed() {
    let Some(dir) = workdir() else {
        return;
    };
    let tree = kernel_tree(dir.path());
    let many = tree.join(format!("usr/lib/modules/{RELEASE}/kernel/many"));
    fs::create_dir_all(&many).unwrap();
    for i in 0..100 {
        fs::write(many.join(format!("m{i}.ko")), "").unwrap();
    }
    let image = mkfs(dir.path(), &tree);
    let out = dir.path().join("out");
    let limits = ReadoutLimits {
        entries: 50,
        ..ReadoutLimits::default()
    };
    let err = read_rootfs_kernel(&image, &out, &limits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 50 entries"), "{err}");
    assert!(!out.exists(), "a partial read-out is left behind");
    // The same tree is fine within the default cap.
    read_rootfs_kernel(&image, &out, &ReadoutLimits::default()).unwrap();
}

#[test]
fn a_tree_over_the_depth_cap_is_refused_and_removed() {
    let Some(dir) = workdir() else {
        return;
    };
    let tree = kernel_tree(dir.path());
    let deep = tree.join(format!("usr/lib/modules/{RELEASE}/a/b/c/d/e"));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("x.ko"), "").unwrap();
    let image = mkfs(dir.path(), &tree);
    let out = dir.path().join("out");
    let limits = ReadoutLimits {
        depth: 3,
        ..ReadoutLimits::default()
    };
    let err = read_rootfs_kernel(&image, &out, &limits)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("/usr/lib/modules/{RELEASE}/a/b/c/d"))
            && err.contains("more than 3 folders deep"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn images_without_a_usable_kernel_are_refused_clearly() {
    let Some(dir) = workdir() else {
        return;
    };
    // No /boot at all.
    let tree = dir.path().join("empty");
    fs::create_dir_all(tree.join("etc")).unwrap();
    let image = mkfs(dir.path(), &tree);
    let out = dir.path().join("out");
    let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
    assert!(err.contains("has no kernel in /boot"), "{err}");
    assert!(!out.exists());

    // A release that cannot be a kernel's name.
    let tree = dir.path().join("odd");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::write(tree.join("boot/vmlinuz-6.1 evil"), "").unwrap();
    let image = mkfs(dir.path(), &tree);
    let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
    assert!(err.contains("does not name a kernel"), "{err}");
    assert!(!out.exists());

    // A kernel without modules.
    let tree = dir.path().join("bare");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::write(tree.join(format!("boot/vmlinuz-{RELEASE}")), "bz").unwrap();
    let image = mkfs(dir.path(), &tree);
    let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
    assert!(err.contains("no modules tree"), "{err}");
    assert!(!out.exists());

    // Not ext4 at all.
    let junk = dir.path().join("junk");
    fs::write(&junk, vec![0u8; 64 << 10]).unwrap();
    let err = read_out(&junk, &out, ReadoutLimits::default()).unwrap_err();
    assert!(err.contains("as ext4"), "{err}");
    assert!(!out.exists());

    // An output that exists already is never written into.
    fs::create_dir(&out).unwrap();
    let image = mkfs(dir.path(), &kernel_tree(dir.path()));
    let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
    assert!(err.contains("File exists"), "{err}");
    assert!(out.exists(), "a folder banger did not make is removed");
}

/// Debian's real cloud kernel tree (thousands of modules, depmod's
/// indexes) comes out byte for byte.
#[test]
fn the_debian_cloud_kernel_tree_comes_out_whole() {
    if !banger_testkit::have_tools(&["mkfs.ext4"]) {
        return;
    }
    let Some(pkg) = banger_testkit::debian_kernel() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::create_dir_all(tree.join("usr/lib/modules")).unwrap();
    symlink("usr/lib", tree.join("lib")).unwrap();
    fs::copy(
        pkg.bzimage(),
        tree.join(format!("boot/vmlinuz-{}", pkg.release)),
    )
    .unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(pkg.modules_dir())
        .arg(tree.join("usr/lib/modules"))
        .status()
        .unwrap();
    assert!(status.success());
    let image = dir.path().join("rootfs.ext4");
    banger_testkit::mkfs_ext4(&image, &tree, "root", None, "256M");
    let out = dir.path().join("out");
    let kernel = read_rootfs_kernel(&image, &out, &ReadoutLimits::default()).unwrap();
    assert_eq!(kernel.release, pkg.release);
    assert_eq!(
        fs::read(&kernel.bzimage).unwrap(),
        fs::read(pkg.bzimage()).unwrap()
    );
    // The links (`build`, `source`) are left out, everything else kept.
    let source = tree.join("usr/lib/modules").join(&pkg.release);
    let links: Vec<_> = listing_links(&source);
    for link in &links {
        fs::remove_file(link).unwrap();
    }
    assert_eq!(listing(&kernel.modules_dir), listing(&source));
    assert_eq!(kernel.skipped.len(), links.len());
}

/// The symlinks under `root`.
fn listing_links(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.push(path);
            } else if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    out
}

/// A superblock that claims far more blocks than the file holds: the
/// reader would size its tables by the claim (here some 4 billion block
/// groups) before reading any of them.
#[test]
fn a_superblock_claiming_more_than_the_file_holds_is_refused() {
    let Some(dir) = workdir() else {
        return;
    };
    let image = mkfs_unchecked(dir.path(), &kernel_tree(dir.path()));
    let mut bytes = fs::read(&image).unwrap();
    // s_blocks_count_hi, at 0x150 in the superblock (at 1024).
    bytes[1024 + 0x150..1024 + 0x154].copy_from_slice(&8191u32.to_le_bytes());
    fs::write(&image, bytes).unwrap();
    let out = dir.path().join("out");
    let err = read_out(&image, &out, ReadoutLimits::default()).unwrap_err();
    assert!(
        err.contains("rootfs.ext4") && err.contains("claims"),
        "{err}"
    );
    assert!(!out.exists());
}
