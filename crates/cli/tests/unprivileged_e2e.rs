//! The supported host model on every CI run: `bangerd` as an unprivileged
//! user (`nobody`), the root helper (`bangerd --root-helper`) as root
//! beside it, both plain processes in a network namespace this test
//! creates, as bangerd.service and bangerd-root.service run them. The user
//! runs `banger` without privilege: a guest boots, runs a command and is
//! deleted, and every privileged step went through the helper. One guest
//! boot.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use banger_model::VmRecord;
use common::*;

/// `nobody`: present on every Debian host, owns nothing of its own.
const USER: u32 = 65534;

/// The helper process, killed at the end whatever happened.
struct Helper {
    child: Child,
    log: PathBuf,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Helper {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `/dev/net/tun` as udev makes it on systemd hosts (0666: opening a TAP
/// is then checked against the TAP's owner), for as long as the test runs.
/// Hosts without udev, like the CI machine, leave it 0600, and the user's
/// hypervisor could not open the TAP made for it. The mode is put back.
struct TunOpen {
    restore: Option<u32>,
}

impl TunOpen {
    fn ensure() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let tun = Path::new("/dev/net/tun");
        let mode = std::fs::metadata(tun).expect("/dev/net/tun").mode() & 0o777;
        if mode & 0o006 == 0o006 {
            return TunOpen { restore: None };
        }
        eprintln!(
            "note: /dev/net/tun is {mode:o} here (no udev); 0666 for this test, as udev sets it"
        );
        std::fs::set_permissions(tun, std::fs::Permissions::from_mode(0o666)).expect("chmod tun");
        TunOpen {
            restore: Some(mode),
        }
    }
}

impl Drop for TunOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(mode) = self.restore {
            let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(mode));
        }
    }
}

/// The user's uid and primary gid, if the host has that user.
fn user() -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(USER))
        .ok()
        .flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// Gives the home (built by a root daemon) to the user, as if it had made
/// it: directories and the files it alone links. Image artifacts hard-
/// linked from the shared test cache stay root's (read-only, 0444, which
/// the user can read) so the cache is not changed for other tests.
fn give_home(root: &Path, uid: u32, gid: u32) {
    fn walk(path: &Path, uid: u32, gid: u32) {
        let meta = std::fs::symlink_metadata(path).expect("stat");
        if meta.file_type().is_symlink() {
            return;
        }
        if meta.is_dir() || meta.nlink() == 1 {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
        } else {
            assert!(meta.mode() & 0o004 != 0, "{} is unreadable", path.display());
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).expect("read_dir") {
                walk(&entry.expect("entry").path(), uid, gid);
            }
        }
    }
    walk(root, uid, gid);
}

fn wait_for_socket(path: &Path, helper: &mut Helper) {
    let started = Instant::now();
    while !path.exists() {
        if let Ok(Some(status)) = helper.child.try_wait() {
            panic!("the root helper exited ({status}): {}", helper.log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the root helper did not listen: {}",
            helper.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `banger ARGS` as the user `(uid, gid)` in `ns`, with the guest init
/// at `init` and the root helper at `helper`.
fn as_user(
    home: &TestHome,
    ns: &Netns,
    (uid, gid): (u32, u32),
    init: &Path,
    helper: &Path,
    args: &[&str],
) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.0, "setpriv"])
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
            "--".into(),
        ])
        .arg(TestHome::banger_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.root().join("home"))
        .env("BANGER_HOME", home.root())
        // No VMs of the daemon's own in the background (templates).
        .env("BANGER_VM_TEMPLATES", "0")
        .env("BANGER_INIT_BIN", init)
        .env("BANGER_ROOT_HELPER", helper)
        .output()
        .expect("run banger as the user")
}

/// The real uid of process `pid`.
fn uid_of(pid: u64) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next()?.parse().ok())
        .expect("a Uid line")
}

#[test]
fn an_unprivileged_daemon_runs_guests_through_the_root_helper() {
    let Some(home) = home_with_default_image(&["setpriv"], |_| {}) else {
        return;
    };
    let Some((uid, gid)) = user() else {
        banger_testkit::skip("the host has no user nobody (uid 65534) to run bangerd as");
        return;
    };
    let Some(ns) = Netns::new("banger-unpriv") else {
        return;
    };
    // The guest init where the user can read it (the test cache may be
    // under root's 0700 home).
    let init = home.root().join("banger-init");
    std::fs::copy(&banger_testkit::static_guest_binaries().init, &init).expect("copy init");
    give_home(home.root(), uid, gid);
    let _tun = TunOpen::ensure();

    // The helper's socket in a directory of root's, as /run/banger-root.
    let run = tempfile::Builder::new()
        .prefix("bgrroot")
        .tempdir_in("/tmp")
        .expect("helper dir");
    let socket = run.path().join("bangerd-root.sock");
    let log = run.path().join("helper.log");
    let mut helper = Helper {
        child: Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(home.bangerd())
            .args(["--root-helper", "--owner-uid", &uid.to_string()])
            .args(["--owner-gid", &gid.to_string(), "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("helper log"))
            .spawn()
            .expect("start the root helper"),
        log,
    };
    wait_for_socket(&socket, &mut helper);
    // Anyone may connect; the helper serves only the owner's uid (the
    // protocol test shows the refusal).
    let meta = std::fs::metadata(&socket).expect("socket");
    assert_eq!(meta.mode() & 0o777, 0o666);

    let banger = |args: &[&str]| as_user(&home, &ns, (uid, gid), &init, &socket, args);

    ok(banger(&["vm", "create", "--name", "unpriv"]), "vm create");
    let status: serde_json::Value =
        serde_json::from_str(&ok(banger(&["daemon", "status", "--json"]), "status")).unwrap();
    let daemon_pid = status["pid"].as_u64().expect("the daemon's pid");
    assert_eq!(uid_of(daemon_pid), uid, "bangerd runs as the user");
    let vms: Vec<VmRecord> =
        serde_json::from_str(&ok(banger(&["vm", "list", "--json"]), "vm list")).unwrap();
    let vm = vms
        .iter()
        .find(|v| v.name.as_str() == "unpriv")
        .expect("the VM");
    let hv_pid = vm
        .runtime
        .as_ref()
        .and_then(|r| r.get("pid")?.as_u64())
        .expect("the hypervisor's pid");
    assert_eq!(uid_of(hv_pid), uid, "the hypervisor runs as the user");
    let tap = banger_network::tap_name("unpriv");
    let owner = ns.exec(&["cat", &format!("/sys/class/net/{tap}/owner")]);
    assert_eq!(
        stdout(&owner).trim(),
        uid.to_string(),
        "the helper made the TAP for the user"
    );
    assert!(rules_of(&ns, "unpriv") > 0, "the guest is isolated");

    let said = ok(
        banger(&[
            "vm",
            "ssh",
            "unpriv",
            "--",
            "echo",
            "hello from an unprivileged host",
        ]),
        "a command in the guest",
    );
    assert!(said.contains("hello from an unprivileged host"), "{said}");

    ok(banger(&["vm", "delete", "--force", "unpriv"]), "vm delete");
    assert!(!link_exists(&ns, &tap), "its TAP is gone");
    assert_eq!(rules_of(&ns, "unpriv"), 0, "its rules are gone");

    // Every privileged step went through the helper, which logged it.
    let log = helper.log();
    for op in [
        "ensure_bridge",
        "create_tap",
        "isolate_guest",
        "delete_tap",
        "bind_dns",
    ] {
        assert!(
            log.lines().any(|l| l.contains(op) && l.contains("done")),
            "the helper did {op}: {log}"
        );
    }
    let daemon_log = std::fs::read_to_string(home.log()).unwrap_or_default();
    assert!(
        daemon_log.contains("dns: answering the .vm zone"),
        "the helper's DNS socket serves: {daemon_log}"
    );
    let _ = banger(&["daemon", "stop"]);
}

/// The helper is down while the daemon runs: the network step fails in
/// one line that names the helper's unit, and nothing is left half-made.
/// No guest boots.
#[test]
fn a_missing_root_helper_is_named_and_leaves_nothing_behind() {
    let Some(home) = home_with_default_image(&["setpriv"], |_| {}) else {
        return;
    };
    let Some((uid, gid)) = user() else {
        banger_testkit::skip("the host has no user nobody (uid 65534) to run bangerd as");
        return;
    };
    let Some(ns) = Netns::new("banger-nohelper") else {
        return;
    };
    let init = home.root().join("banger-init");
    std::fs::copy(&banger_testkit::static_guest_binaries().init, &init).expect("copy init");
    give_home(home.root(), uid, gid);
    let socket = home.root().join("no-helper-here.sock");
    let banger = |args: &[&str]| as_user(&home, &ns, (uid, gid), &init, &socket, args);

    let out = banger(&["vm", "run", "--rm", "--name", "orphan", "--", "true"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("bangerd-root.service"),
        "one line naming the helper's unit: {err}"
    );
    let vms: Vec<VmRecord> =
        serde_json::from_str(&ok(banger(&["vm", "list", "--json"]), "vm list")).unwrap();
    assert!(vms.is_empty(), "vm run --rm keeps nothing: {vms:?}");
    assert!(!home.state().join("vms/orphan").exists(), "no disks left");
    assert!(!link_exists(&ns, &banger_network::tap_name("orphan")));
    assert!(!link_exists(&ns, "banger0"), "no bridge was made");
    let _ = banger(&["daemon", "stop"]);
}
