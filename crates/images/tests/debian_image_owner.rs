//! The default Debian image built by an unprivileged owner, as bangerd
//! under its system unit builds it: mmdebstrap in unshare mode inside
//! banger's user namespace, then `mkfs.ext4 -d` in the same mapping. Run
//! from root (CI) as `nobody`, granted subordinate ids in a mount
//! namespace of its own (the host's /etc is untouched); the image's
//! owners must be Debian's, and every file of the build the owner's.
//!
//! Then it boots it as debian_image.rs does its root-built twin (mmdebstrap
//! leaves /dev empty in unshare mode: the guest must not mind).
//!
//! About two minutes with the apt cache the root build fills (copied, so
//! the owner can write it); `BANGER_TEST_SKIP_IMAGE_BUILD=1` skips it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use banger_images::debian::{self, BuildOptions, BuiltImage, DebianRecipe};
use banger_images::digest;
use banger_testkit::owner::{OWNER_GID, OWNER_UID, run_ignored_test_as_owner};

mod common;

#[test]
fn the_owner_builds_the_default_image_with_debian_s_owners() {
    if std::env::var_os("BANGER_TEST_SKIP_IMAGE_BUILD").is_some() {
        return banger_testkit::skip("BANGER_TEST_SKIP_IMAGE_BUILD is set");
    }
    if !banger_testkit::have_tools(&["mmdebstrap", "mkfs.ext4", "newuidmap", "newgidmap"]) {
        return;
    }
    if !banger_testkit::running_as_root() {
        return banger_testkit::skip("needs root to run the build as nobody");
    }
    if let Err(e) = debian::host_sources(debian::DEFAULT_SUITE) {
        return banger_testkit::skip(e);
    }
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    let apt = work.join("apt");
    fs::create_dir_all(&apt).unwrap();
    // The packages the root build fetched, if it ran: the owner's copy.
    if let Ok(entries) = fs::read_dir(banger_testkit::test_cache().join("apt-archives")) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "deb") {
                fs::copy(entry.path(), apt.join(entry.file_name())).unwrap();
            }
        }
    }
    // The pinned binaries (mise) the root build fetched, likewise.
    let downloads = work.join("downloads");
    fs::create_dir_all(&downloads).unwrap();
    if let Ok(entries) = fs::read_dir(banger_testkit::test_cache().join("downloads")) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file())
                && !entry.file_name().to_string_lossy().starts_with('.')
            {
                fs::copy(entry.path(), downloads.join(entry.file_name())).unwrap();
            }
        }
    }
    // banger-init for the initramfs, as the owner can read it.
    let init = work.join("banger-init");
    fs::copy(&banger_testkit::static_guest_binaries().init, &init).unwrap();
    chown_tree(&work);
    let out = run_ignored_test_as_owner(
        "owner_side_of_the_build",
        scratch.path(),
        banger_testkit::owner::AsOwner::SET_UP,
        &[("BANGER_TEST_OWNER_DIR", &work)],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.contains("1 passed"),
        "the owner's build failed:\n{said}"
    );
    println!("{said}");

    let built: Vec<PathBuf> = fs::read_dir(work.join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(built.len(), 1, "one image, no staging left: {built:?}");
    for file in fs::read_dir(&built[0]).unwrap() {
        let meta = file.as_ref().unwrap().metadata().unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (OWNER_UID, OWNER_GID),
            "{:?} is the owner's",
            file.unwrap().path()
        );
    }
    let image = built[0].join(debian::ROOTFS);
    let fs4 = ext4_view::Ext4::load_from_path(&image).unwrap();
    let owners = |path: &str| {
        let m = fs4
            .symlink_metadata(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    let group = |name: &str| -> u32 {
        let text = String::from_utf8(fs4.read("/etc/group").unwrap()).unwrap();
        text.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f[0] == name).then(|| f[2].parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no group {name}"))
    };
    assert_eq!(owners("/"), (0, 0, 0o755));
    assert_eq!(owners("/usr/bin/sudo"), (0, 0, 0o4755));
    assert_eq!(owners("/etc/shadow"), (0, group("shadow"), 0o640));
    assert_eq!(owners("/var/cache/apt/archives/partial"), (42, 0, 0o700));
    assert_eq!(
        owners("/var/log/journal").1,
        group("systemd-journal"),
        "a group systemd made at install"
    );
    assert_eq!(
        owners("/etc/machine-id"),
        (0, 0, 0o644),
        "as the root build has it"
    );
    assert_eq!(fs4.read("/etc/machine-id").unwrap(), b"");
    assert_eq!(owners("/etc/ssh/sshd_config.d/banger.conf"), (0, 0, 0o644));
    drop(fs4);

    let dir = built[0].clone();
    let image = BuiltImage {
        recipe_hash: dir.file_name().unwrap().to_string_lossy().into_owned(),
        kernel_release: fs::read_to_string(dir.join(debian::RELEASE_FILE))
            .unwrap()
            .trim()
            .to_owned(),
        artifacts: digest::read_pins(&dir).unwrap(),
        reused: false,
        facts: Default::default(),
        dir,
    };
    digest::verify(&image.dir).expect("pins verify");
    common::smoke_boot(&image);
}

#[test]
#[ignore = "run as an unprivileged owner by the_owner_builds_the_default_image_with_debian_s_owners"]
fn owner_side_of_the_build() {
    let work = PathBuf::from(std::env::var_os("BANGER_TEST_OWNER_DIR").unwrap());
    assert!(!banger_testkit::running_as_root());
    let recipe = DebianRecipe::bookworm(debian::host_sources(debian::DEFAULT_SUITE).unwrap());
    let options = BuildOptions {
        images_cache: work.join("images"),
        apt_cache: work.join("apt"),
        downloads: work.join("downloads"),
        log: work.join("build.log"),
        init: Some(work.join("banger-init")),
        id_mapper: None,
    };
    let started = std::time::Instant::now();
    let built = debian::build_image(&recipe, &options, &mut |p| {
        println!("phase {p:?} at {:?}", started.elapsed());
    });
    match built {
        Ok(image) => println!("built {} in {:?}", image.dir.display(), started.elapsed()),
        Err(e) => {
            let log = fs::read_to_string(work.join("build.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{e}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn chown_tree(dir: &Path) {
    std::os::unix::fs::chown(dir, Some(OWNER_UID), Some(OWNER_GID)).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            chown_tree(&path);
        } else {
            std::os::unix::fs::chown(&path, Some(OWNER_UID), Some(OWNER_GID)).unwrap();
        }
    }
}
