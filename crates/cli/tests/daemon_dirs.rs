//! bangerd's directories, and the files it opens there by a fixed name, are
//! checked rather than trusted: a planted link, or a directory another user
//! could write, stops the daemon before it writes anything.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::*;

const PRECIOUS: &[u8] = b"someone else's file\n";

/// A file outside banger's directories, for a planted link to point at.
fn precious(home: &TestHome) -> PathBuf {
    let path = home.root().join("precious");
    fs::write(&path, PRECIOUS).unwrap();
    path
}

/// Runs bangerd, which must refuse to start; returns its one-line reason.
fn refused(home: &TestHome) -> String {
    let out = home.bangerd_cmd().output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "bangerd started: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!home.socket().exists(), "nothing was served");
    err
}

/// The tests' user, which is the daemon's: the temporary home is theirs.
fn euid(home: &TestHome) -> u32 {
    fs::metadata(home.root()).unwrap().uid()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn a_link_planted_as_the_lock_log_or_database_is_refused_and_its_target_untouched() {
    for name in [
        "bangerd.lock",
        "bangerd.log",
        "banger.db",
        "banger.db-wal",
        "banger.db-journal",
    ] {
        let home = TestHome::new();
        let target = precious(&home);
        fs::create_dir_all(home.state()).unwrap();
        let link = home.state().join(name);
        symlink(&target, &link).unwrap();

        let err = refused(&home);
        assert!(
            err.contains(&format!("{} is a symbolic link", link.display())),
            "{name}: {err}"
        );
        assert!(err.contains("remove the link"), "{name}: {err}");
        assert_eq!(fs::read(&target).unwrap(), PRECIOUS, "{name}");
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink(), "{name}");
    }
}

#[test]
fn the_cli_reports_a_planted_link_in_one_line() {
    let home = TestHome::new();
    let target = precious(&home);
    fs::create_dir_all(home.state()).unwrap();
    symlink(&target, home.state().join("bangerd.lock")).unwrap();
    let out = home.banger(&["vm", "list"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bangerd failed to start"), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), PRECIOUS);
}

#[test]
fn a_link_planted_as_the_socket_is_neither_followed_nor_removed() {
    let home = TestHome::new();
    let target = precious(&home);
    let run = home.socket().parent().unwrap().to_path_buf();
    fs::create_dir_all(&run).unwrap();
    symlink(&target, home.socket()).unwrap();

    let out = home.bangerd_cmd().output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is not a socket"), "{err}");
    assert!(fs::symlink_metadata(home.socket()).unwrap().is_symlink());
    assert_eq!(fs::read(&target).unwrap(), PRECIOUS);
    assert_eq!(mode(&target), 0o644, "not chmodded through the link");
}

#[test]
fn a_state_dir_others_can_write_is_refused_with_the_fix() {
    for (bad, who) in [(0o777, "group and others"), (0o770, "its group")] {
        let home = TestHome::new();
        fs::create_dir(home.state()).unwrap();
        fs::set_permissions(home.state(), fs::Permissions::from_mode(bad)).unwrap();
        let err = refused(&home);
        let state = home.state().display().to_string();
        assert!(
            err.contains(&format!("state directory {state} is writable by {who}")),
            "{err}"
        );
        assert!(err.contains(&format!("chmod go-w {state}")), "{err}");
        assert!(
            !home.state().join("bangerd.log").exists(),
            "nothing written there"
        );
    }
}

#[test]
fn a_state_dir_of_another_user_is_refused_with_the_fix() {
    let home = TestHome::new();
    fs::create_dir(home.state()).unwrap();
    if euid(&home) != 0 {
        banger_testkit::skip("needs root to give a directory to uid 65534");
        return;
    }
    std::os::unix::fs::chown(home.state(), Some(65534), None).unwrap();
    let err = refused(&home);
    let state = home.state().display().to_string();
    assert!(
        err.contains(&format!("state directory {state} is owned by uid 65534")),
        "{err}"
    );
    assert!(err.contains(&format!("chown root: {state}")), "{err}");
    assert!(!home.state().join("bangerd.log").exists());
}

#[test]
fn a_symlinked_state_dir_is_refused() {
    let home = TestHome::new();
    let real = home.root().join("elsewhere");
    fs::create_dir(&real).unwrap();
    symlink(&real, home.state()).unwrap();
    let err = refused(&home);
    assert!(
        err.contains(&format!(
            "state directory {} is a symbolic link",
            home.state().display()
        )),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&real).unwrap().count(),
        0,
        "nothing made there"
    );
}

#[test]
fn a_parent_others_can_write_is_refused_but_a_sticky_one_is_not() {
    let home = TestHome::new();
    // BANGER_HOME itself is the parent of state/, run/, cache/, config/.
    fs::set_permissions(home.root(), fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused(&home);
    assert!(
        err.contains(&format!("{}, a parent of the", home.root().display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod go-w {}", home.root().display())),
        "{err}"
    );

    // Like /tmp: others may write, but not rename or remove our entries.
    fs::set_permissions(home.root(), fs::Permissions::from_mode(0o1777)).unwrap();
    home.banger(&["vm", "list"]).assert().success();
}

#[test]
fn fresh_dirs_are_made_0700_as_the_daemon_user() {
    let home = TestHome::new();
    home.banger(&["vm", "list"]).assert().success();
    let uid = euid(&home);
    for dir in ["state", "run", "cache", "config"] {
        let path = home.root().join(dir);
        assert_eq!(mode(&path), 0o700, "{dir}");
        assert_eq!(fs::metadata(&path).unwrap().uid(), uid, "{dir}");
    }
    // Its own files are private too.
    assert_eq!(mode(&home.state().join("bangerd.log")), 0o600);
    assert_eq!(mode(&home.state().join("bangerd.lock")), 0o600);
}
