//! An image build's user namespace mapped by the root helper, as under the
//! system install: the owner (`nobody`) runs with `no_new_privs`, as
//! `NoNewPrivileges=yes` sets it, so the setuid newuidmap cannot help;
//! the helper's `map_ids` writes the maps instead, and a tree of several
//! users' files packed in that namespace keeps its owners in the ext4.
//! The host's /etc is never written (banger_testkit::owner overlays it).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use banger_hostops::{HelperClient, HostOps, Local, Owner, serve_on};
use banger_images::userns::{IdMapper, UserNamespace};
use banger_orchestrator::HostIds;
use banger_testkit::owner::{AsOwner, OWNER_GID, OWNER_SUBORDINATE, OWNER_UID};

#[test]
fn the_helper_maps_an_owner_build_under_no_new_privileges() {
    if !banger_testkit::running_as_root() {
        return banger_testkit::skip("needs root: the helper's side, and nobody's");
    }
    if !banger_testkit::have_tools(&["tar", "mkfs.ext4"]) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The helper: root, serving nobody, with the ranges the overlay grants.
    let ranges = scratch.path().join("subids");
    std::fs::write(&ranges, format!("nobody:{OWNER_SUBORDINATE}:65536\n")).unwrap();
    let socket = scratch.path().join("helper.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ops: Arc<dyn HostOps> = Arc::new(Local::for_owner(Owner {
        subuid: ranges.clone(),
        subgid: ranges,
        ..Owner::new(OWNER_UID, OWNER_GID)
    }));
    std::thread::spawn(move || serve_on(listener, OWNER_UID, ops));

    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(OWNER_UID), Some(OWNER_GID)).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for (path, uid, gid, mode) in [
        ("etc/", 0, 0, 0o755),
        ("etc/shadow", 0, 42, 0o640),
        ("var/", 0, 0, 0o755),
        ("var/log/", 0, 101, 0o2755),
        ("home/", 0, 0, 0o755),
        ("home/user/", 1000, 1000, 0o700),
        ("nobody-file", 65534, 65534, 0o644),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if path.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_size(0);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mode(mode);
        h.set_cksum();
        tar.append_data(&mut h, path, &[][..]).unwrap();
    }
    std::fs::write(work.join("tree.tar"), tar.into_inner().unwrap()).unwrap();

    let overlay = scratch.path().join("overlay");
    std::fs::create_dir(&overlay).unwrap();
    let out = banger_testkit::owner::run_ignored_test_as_owner(
        "owner_side_packs_through_the_helper",
        &overlay,
        AsOwner {
            no_new_privs: true,
            ..AsOwner::SET_UP
        },
        &[
            ("BANGER_TEST_OWNER_DIR", &work),
            ("BANGER_TEST_HELPER", &socket),
        ],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.contains("1 passed"),
        "the owner's side:\n{said}"
    );

    let image = work.join("rootfs.ext4");
    assert_eq!(
        std::fs::metadata(&image).unwrap().uid(),
        OWNER_UID,
        "the owner's"
    );
    let fs4 = ext4_view::Ext4::load_from_path(&image).unwrap();
    let owners = |path: &str| {
        let m = fs4.symlink_metadata(path).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(owners("/etc/shadow"), (0, 42, 0o640));
    assert_eq!(owners("/var/log"), (0, 101, 0o2755));
    assert_eq!(owners("/home/user"), (1000, 1000, 0o700));
    assert_eq!(owners("/nobody-file"), (65534, 65534, 0o644));
}

/// Run by the test above as nobody, with no_new_privs: unpack the tree and
/// make its ext4 in a namespace the helper mapped.
#[test]
#[ignore = "run as nobody by the_helper_maps_an_owner_build_under_no_new_privileges"]
fn owner_side_packs_through_the_helper() {
    let work = PathBuf::from(std::env::var_os("BANGER_TEST_OWNER_DIR").unwrap());
    let helper = PathBuf::from(std::env::var_os("BANGER_TEST_HELPER").unwrap());
    let ops: Arc<dyn HostOps> = Arc::new(HelperClient::new(helper));
    let mapper: Arc<dyn IdMapper> = Arc::new(HostIds(ops));
    let ns = UserNamespace::for_this_process(mapper).unwrap_or_else(|e| panic!("{e}"));
    let root = work.join("root");
    std::fs::create_dir(&root).unwrap();
    let run = |c: &mut Command| banger_images::host_command::run(c);
    let mut untar = Command::new("tar");
    untar
        .args([
            "--extract",
            "--numeric-owner",
            "--same-owner",
            "--same-permissions",
            "-f",
        ])
        .arg(work.join("tree.tar"))
        .arg("-C")
        .arg(&root);
    ns.run_in(untar, run)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(work.join("rootfs.ext4"))
        .arg("16M");
    ns.run_in(mkfs, run)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
}
