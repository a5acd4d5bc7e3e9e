//! `banger system install` (issue 15). Units need systemd as PID 1, which
//! development machines and CI containers lack, so the real test boots a
//! Debian tree with systemd in systemd-nspawn, in a network namespace of
//! its own (nothing the root helper does reaches the host's network),
//! installs there as a user would, and checks what runs as whom and what
//! uninstall leaves behind. The refusals need no systemd and run anywhere.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestHome, ok, stderr, stdout};

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where the test puts the freshly built binaries inside the container:
/// the install copies them from there, as from a build tree.
const BUILD_DIR: &str = "/opt/banger-build";
/// CAP_NET_ADMIN (12), CAP_NET_BIND_SERVICE (10), CAP_SETUID (7), CAP_SETGID
/// (6) and CAP_DAC_OVERRIDE (1), as /proc shows a set.
const HELPER_CAPS: &str = "00000000000014c2";

/// Every file and directory of an install (globs as prefixes of a name in
/// a directory), none of which may outlive `uninstall --purge`.
const INSTALLED: &[(&str, &str)] = &[
    ("/usr/local/bin", "banger"),
    ("/usr/local/lib", "banger"),
    ("/etc", "banger"),
    ("/etc/systemd/system", "bangerd"),
    ("/etc/systemd/system/multi-user.target.wants", "bangerd"),
    ("/var/lib", "banger"),
    ("/var/cache", "banger"),
    ("/run", "banger"),
];

/// A Debian tree booted by systemd-nspawn; powered off on drop.
struct Container {
    nspawn: Child,
    /// The container's PID 1, as the host sees it.
    leader: u32,
    _tree: tempfile::TempDir,
}

impl Container {
    fn boot(tar: &Path) -> Self {
        let tree = tempfile::Builder::new()
            .prefix("bgr-nspawn")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let untar = Command::new("tar")
            .arg("-C")
            .arg(tree.path())
            .arg("-xf")
            .arg(tar)
            .output()
            .expect("run tar");
        ok(untar, "unpacking the Debian tree");
        let machine = format!("bgr-sys-{}", std::process::id());
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(tree.path())
            .args(["-M", &machine, "--boot", "--private-network"])
            // The host's systemd is not PID 1: nothing to register with.
            .args(["--register=no", "--keep-unit", "--console=passive"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run systemd-nspawn");
        let nspawn_pid = nspawn.id();
        let mut container = Container {
            nspawn,
            leader: 0,
            _tree: tree,
        };
        // nspawn's first child is a helper that starts the container's
        // PID 1 and exits: the leader is the child that runs systemd, not
        // whichever child is seen first (a loaded host once caught the
        // helper, and every nsenter into it failed).
        common::wait_for("the container's PID 1", Duration::from_secs(60), || {
            container.leader =
                std::fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .find(|p| {
                        std::fs::read_to_string(format!("/proc/{p}/comm"))
                            .is_ok_and(|c| matches!(c.trim(), "systemd" | "init"))
                    })
                    .unwrap_or(0);
            container.leader != 0
        });
        let started = Instant::now();
        loop {
            let out = container.exec(&["systemctl", "is-system-running"]);
            let state = stdout(&out);
            if matches!(state.trim(), "running" | "degraded") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "the container did not finish booting: state {state:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        container
    }

    /// `args` as root in the container, with a clean environment.
    fn exec(&self, args: &[&str]) -> Output {
        self.command(None, args).output().expect("run nsenter")
    }

    /// `args` as `user` (no sudo, no login: their uid, gids and home).
    fn exec_as(&self, user: &str, args: &[&str]) -> Output {
        self.command(Some(user), args)
            .output()
            .expect("run nsenter")
    }

    fn command(&self, user: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.leader.to_string(), "-a", "-r", "-w"]);
        let home = match user {
            Some(user) => {
                cmd.args(["setpriv", "--reuid", user, "--regid", user, "--init-groups"]);
                format!("HOME=/home/{user}")
            }
            None => "HOME=/root".to_string(),
        };
        cmd.args(["env", "-i", PATH, &home]).args(args);
        cmd
    }

    /// A path of the container, seen from the host (its /run included).
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.leader)).join(inside.trim_start_matches('/'))
    }

    /// The value of `key` in `systemctl show UNIT`.
    fn unit_property(&self, unit: &str, key: &str) -> String {
        let out = self.exec(&["systemctl", "show", "-p", key, "--value", unit]);
        ok(out, "systemctl show").trim().to_string()
    }

    /// A field of /proc/PID/status in the container.
    fn proc_status(&self, pid: &str, field: &str) -> String {
        let text = ok(
            self.exec(&["cat", &format!("/proc/{pid}/status")]),
            "reading /proc/PID/status",
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in {text}"))
            .trim()
            .to_string()
    }

    /// Every install path still there.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for (dir, prefix) in INSTALLED {
            let Ok(entries) = std::fs::read_dir(self.path(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix) {
                    left.push(format!("{dir}/{name}"));
                }
            }
        }
        left
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM asks nspawn to power the container off cleanly.
        let _ = Command::new("kill")
            .arg(self.nspawn.id().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// Whether this bangerd has the modes the units run (`--system`,
/// `--root-helper`).
fn bangerd_has_system_modes(bangerd: &Path) -> bool {
    let out = Command::new(bangerd)
        .arg("--help")
        .output()
        .expect("bangerd --help");
    let help = stdout(&out);
    help.contains("--system") && help.contains("--root-helper")
}

#[test]
fn installs_runs_as_the_owner_and_uninstalls_without_a_trace() {
    if !banger_testkit::running_as_root() {
        banger_testkit::skip("needs root (systemd-nspawn)");
        return;
    }
    if !banger_testkit::have_tools(&["systemd-nspawn", "nsenter", "tar"]) {
        return;
    }
    let Some(tar) = banger_testkit::debian_systemd_tar() else {
        return;
    };
    let banger = TestHome::banger_bin();
    let bangerd = banger.with_file_name("bangerd");
    assert!(
        bangerd.is_file(),
        "bangerd is not built next to banger: run `cargo build --workspace` first"
    );
    let init = banger_testkit::static_guest_binaries().init.clone();
    let modes = bangerd_has_system_modes(&bangerd);

    let c = Container::boot(&tar);
    let build = c.path(BUILD_DIR);
    std::fs::create_dir_all(&build).unwrap();
    for (src, name) in [
        (&banger, "banger"),
        (&bangerd, "bangerd"),
        (&init, "banger-init"),
    ] {
        std::fs::copy(src, build.join(name)).unwrap();
    }
    for args in [
        &["groupadd", "--system", "kvm"][..],
        &["useradd", "--create-home", "alice"],
        &["useradd", "--create-home", "bob"],
    ] {
        ok(c.exec(args), &args.join(" "));
    }
    let banger_in_build = format!("{BUILD_DIR}/banger");

    // Refused without root, and for root or an unknown owner.
    let out = c.exec_as(
        "alice",
        &[&banger_in_build, "system", "install", "--owner", "alice"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("run it with sudo"),
        "{}",
        stderr(&out)
    );
    for (owner, says) in [
        ("root", "cannot be root"),
        ("nobody-here", "does not exist"),
    ] {
        let out = c.exec(&[&banger_in_build, "system", "install", "--owner", owner]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{owner}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "one line: {}",
            stderr(&out)
        );
    }
    assert!(
        c.leftovers().is_empty(),
        "a refusal installed {:?}",
        c.leftovers()
    );

    let install = c.exec(&[&banger_in_build, "system", "install", "--owner", "alice"]);
    // What the install wrote, whether or not the services came up.
    for file in [
        "/usr/local/bin/banger",
        "/usr/local/bin/bangerd",
        "/usr/local/lib/banger/banger-init",
        "/etc/banger/install.toml",
        "/etc/systemd/system/bangerd.service",
        "/etc/systemd/system/bangerd-root.service",
    ] {
        assert!(
            c.path(file).is_file(),
            "{file} missing: {}",
            stderr(&install)
        );
    }
    let record = std::fs::metadata(c.path("/etc/banger/install.toml")).unwrap();
    assert_eq!(record.mode() & 0o7777, 0o644);
    let subuid = std::fs::read_to_string(c.path("/etc/subuid")).unwrap();
    assert!(subuid.lines().any(|l| l.starts_with("alice:")), "{subuid}");
    let groups = ok(c.exec(&["id", "-nG", "alice"]), "id alice");
    assert!(groups.split_whitespace().any(|g| g == "kvm"), "{groups}");
    let unit = std::fs::read_to_string(c.path("/etc/systemd/system/bangerd.service")).unwrap();
    assert!(unit.contains("SupplementaryGroups=kvm"), "{unit}");

    if modes {
        ok(install, "banger system install");
        services_run_as_designed(&c);
    } else {
        // The units run modes this bangerd lacks: the install must say so
        // in one line naming a unit, and leave the rest for uninstall.
        assert!(!install.status.success());
        let err = stderr(&install);
        assert!(err.contains(".service"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    let out = c.exec_as("alice", &["banger", "system", "uninstall"]);
    assert!(stderr(&out).contains("needs root"), "{}", stderr(&out));
    let mut uninstall = vec!["banger", "system", "uninstall", "--purge"];
    if !modes {
        // A daemon that does not answer cannot say whether VMs run (they
        // outlive it): refused, unless --force.
        let out = c.exec(&uninstall);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
        uninstall.push("--force");
    }
    ok(c.exec(&uninstall), "banger system uninstall --purge");
    assert_eq!(
        c.leftovers(),
        Vec::<String>::new(),
        "left behind by uninstall --purge"
    );
    // (It exits 1 when nothing matches.)
    let units = stdout(&c.exec(&["systemctl", "list-unit-files", "--no-legend", "bangerd*"]));
    assert!(units.trim().is_empty(), "{units}");
    // The owner's account keeps what the install gave it.
    assert!(c.path("/home/alice").is_dir());

    if !modes {
        banger_testkit::skip(
            "bangerd has no --system/--root-helper yet: the running services (units active, \
             the owner's commands, another user refused, uids and capabilities) were not checked",
        );
    }
}

/// Both units up; the owner's commands work without sudo, another user's
/// are refused; bangerd runs as the owner, the helper with only its two
/// capabilities; a reinstall upgrades in place and keeps state.
fn services_run_as_designed(c: &Container) {
    for unit in ["bangerd-root.service", "bangerd.service"] {
        assert_eq!(c.unit_property(unit, "ActiveState"), "active", "{unit}");
    }
    for args in [
        &["banger", "vm", "list"][..],
        &["banger", "image", "list"],
        &["banger", "system", "status"],
    ] {
        ok(
            c.exec_as("alice", args),
            &format!("alice: {}", args.join(" ")),
        );
    }
    let status = ok(
        c.exec_as("alice", &["banger", "system", "status", "--json"]),
        "system status --json",
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["owner"], "alice", "{status}");

    // doctor sees the install healthy (other rows, like the hypervisor,
    // fail in a container without QEMU).
    let doctor = c.exec_as("alice", &["banger", "doctor", "--json"]);
    let doctor: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("doctor --json");
    for row in [
        "privileges",
        "system install",
        "bangerd-root.service",
        "bangerd.service",
        "daemon socket",
        "helper socket",
    ] {
        let check = doctor["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["name"] == row))
            .unwrap_or_else(|| panic!("no doctor row {row}: {doctor}"));
        assert_eq!(check["status"], "ok", "{check}");
    }
    // The owner is answered by the helper itself, which says its version.
    let helper = doctor["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "helper socket"))
        .expect("the helper row");
    assert!(
        helper["detail"]
            .as_str()
            .is_some_and(|d| d.contains(concat!("(helper ", env!("CARGO_PKG_VERSION"), ")"))),
        "{helper}"
    );

    let out = c.exec_as("bob", &["banger", "vm", "list"]);
    assert!(!out.status.success(), "bob got in: {}", stdout(&out));
    assert!(
        stderr(&out).contains("only alice may use"),
        "{}",
        stderr(&out)
    );

    let before = c.unit_property("bangerd.service", "MainPID");
    ok(c.exec(&["banger", "system", "restart"]), "system restart");
    assert_ne!(
        c.unit_property("bangerd.service", "MainPID"),
        before,
        "not restarted"
    );

    let alice_uid = ok(c.exec(&["id", "-u", "alice"]), "id -u alice");
    let daemon_pid = c.unit_property("bangerd.service", "MainPID");
    let uids = c.proc_status(&daemon_pid, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == alice_uid.trim()),
        "bangerd runs as {uids}, not alice ({alice_uid})"
    );
    let helper_pid = c.unit_property("bangerd-root.service", "MainPID");
    assert_eq!(
        c.proc_status(&helper_pid, "Uid").split_whitespace().next(),
        Some("0")
    );
    assert_eq!(c.proc_status(&helper_pid, "CapBnd"), HELPER_CAPS);
    assert_eq!(c.proc_status(&helper_pid, "CapAmb"), "0000000000000000");

    // An upgrade in place: the installed banger installs itself again, and
    // the state (a file the daemon did not make) and the first date stay.
    let marker = c.path("/var/lib/banger/upgrade-marker");
    std::fs::write(&marker, b"kept").unwrap();
    let before = std::fs::read_to_string(c.path("/etc/banger/install.toml")).unwrap();
    ok(
        c.exec(&["banger", "system", "install", "--owner", "alice"]),
        "reinstall",
    );
    assert!(marker.is_file(), "the reinstall dropped state");
    let after = std::fs::read_to_string(c.path("/etc/banger/install.toml")).unwrap();
    let installed_at = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("installed_at"))
            .map(String::from)
    };
    assert_eq!(installed_at(&before), installed_at(&after));
    assert_ne!(
        c.unit_property("bangerd.service", "MainPID"),
        daemon_pid,
        "not restarted"
    );
    let out = c.exec(&["banger", "system", "install", "--owner", "bob"]);
    assert!(
        stderr(&out).contains("installed for alice"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_without_an_install_says_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(TestHome::banger_bin())
        .args(["system", "status"])
        .env("BANGER_INSTALL_FILE", dir.path().join("install.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("not installed (dev mode):"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn changes_to_the_host_need_root_and_systemd() {
    let banger = TestHome::banger_bin();
    // As another user (root can become one; anyone else already is).
    let as_user = || {
        if banger_testkit::running_as_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
                .arg(&banger);
            c
        } else {
            Command::new(&banger)
        }
    };
    for sub in [
        &["install", "--owner", "nobody"][..],
        &["restart"],
        &["uninstall"],
    ] {
        let out = as_user().arg("system").args(sub).output().unwrap();
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("needs root: run it with sudo"),
            "{sub:?}: {}",
            stderr(&out)
        );
    }
    // Without systemd as PID 1, root is refused too, pointed at dev mode.
    // (Where systemd runs this would install for real: not here.)
    if banger_testkit::running_as_root() && !Path::new("/run/systemd/system").exists() {
        let out = Command::new(&banger)
            .args(["system", "install", "--owner", "nobody"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("needs systemd") && err.contains("dev mode"),
            "{err}"
        );
    }
}

#[test]
fn with_an_install_the_cli_uses_its_service_and_never_starts_a_daemon() {
    if Path::new("/run/banger").exists() {
        banger_testkit::skip("this host has banger's service running: /run/banger exists");
        return;
    }
    let home = TestHome::new();
    let record = home.root().join("install.toml");
    let install = banger_config::Install {
        version: "0.1.0".into(),
        owner: "alice".into(),
        owner_uid: 1000,
        owner_gid: 1000,
        owner_home: home.root().join("home"),
        prefix: "/usr/local".into(),
        installed_at: 1,
    };
    std::fs::write(&record, install.to_toml()).unwrap();
    let banger = |args: &[&str], dev: bool| {
        let mut cmd = Command::new(TestHome::banger_bin());
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.root().join("home"))
            .env("BANGER_INSTALL_FILE", &record)
            .args(args);
        if dev {
            cmd.env("BANGER_HOME", home.root());
        }
        cmd.output().unwrap()
    };
    let out = banger(&["vm", "list"], false);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bangerd.service does not answer on /run/banger/bangerd.sock")
            && err.contains("systemctl status bangerd.service")
            && err.contains("banger system status"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !home.root().join("home/.local").exists() && !home.state().exists(),
        "a daemon was started"
    );
    let out = banger(&["daemon", "stop"], false);
    assert!(
        stderr(&out).contains("sudo banger system restart"),
        "{}",
        stderr(&out)
    );
    // BANGER_HOME is dev mode, install or not.
    let status = banger(&["daemon", "status", "--json"], true);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["service"], false, "{status}");
    assert_eq!(
        status["socket"].as_str().map(PathBuf::from),
        Some(home.socket()),
        "{status}"
    );
}
