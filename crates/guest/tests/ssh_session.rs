//! Sessions against a real sshd on 127.0.0.1 standing in for a guest: the
//! pinned first connection, exit statuses, the shared ControlMaster,
//! quoting, and a changed host key refused at once.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use banger_guest::{KnownHosts, SshError, SshTarget, exit_code, generate_host_key};
use support::Sshd;

const VM: &str = "testvm";

fn target(dir: &Path, sshd: &Sshd) -> SshTarget {
    SshTarget {
        vm: VM.into(),
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: support::user_name(),
        identity: sshd.user_key.clone(),
        known_hosts: dir.join("state 100%/ssh/known_hosts"),
        control_dir: dir.join("ctl"),
    }
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs `cmd` to completion with its output captured, failing the test
/// rather than hanging if anything (say a backgrounded ControlMaster) kept
/// the output pipes open.
fn run(mut cmd: Command, home: &Path) -> (Output, Duration) {
    cmd.env("HOME", home);
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(cmd.output());
    });
    let output = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ssh did not finish in 60 s (output pipes held open?)")
        .expect("spawning ssh");
    (output, start.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A snapshot of `~/.ssh` (names, sizes, mtimes), to show it untouched.
fn snapshot(dir: &Path) -> Option<Vec<(PathBuf, u64, std::time::SystemTime)>> {
    let entries = fs::read_dir(dir).ok()?;
    let mut list: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()?))
        })
        .collect();
    list.sort();
    Some(list)
}

#[test]
fn a_pinned_guest_runs_commands_over_one_verified_connection() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(dir.path()) else {
        return;
    };
    let home = dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    // OpenSSH finds `~` through the passwd entry, not $HOME: watch both.
    let real_ssh_dir = support::passwd_home().map(|h| h.join(".ssh"));
    let real_before = real_ssh_dir.as_deref().map(snapshot);

    let t = target(dir.path(), &sshd);
    let mut fresh_target = t.clone();
    fresh_target.control_dir = dir.path().join("ctl2");
    let _closer = support::Closer(vec![t.clone(), fresh_target.clone()]);
    let known_hosts = KnownHosts::new(t.known_hosts.clone());
    known_hosts
        .pin(
            VM,
            &words(&["127.0.0.1", "testvm.vm"]),
            &sshd.host_public_key,
        )
        .unwrap();

    // First connection: verified against the pinned key, makes the master.
    let ready = t
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log_text()));
    println!("wait_ready: {ready:?}");
    assert!(t.control_path().exists(), "no ControlMaster socket");
    assert_eq!(sshd.logins(), 1);

    // Exit statuses.
    let (out, _) = run(t.command(&words(&["sh", "-c", "exit 7"]), false), &home);
    assert_eq!(
        exit_code(out.status, &stderr(&out)).unwrap(),
        7,
        "{}",
        stderr(&out)
    );
    let (out, _) = run(
        t.command(&words(&["sh", "-c", "kill -TERM $$"]), false),
        &home,
    );
    assert_eq!(exit_code(out.status, &stderr(&out)).unwrap(), 128 + 15);
    let (out, _) = run(
        t.command(&words(&["sh", "-c", "kill -KILL $$"]), false),
        &home,
    );
    assert_eq!(exit_code(out.status, &stderr(&out)).unwrap(), 128 + 9);
    let (out, _) = run(t.command(&words(&["sh", "-c", "exit 255"]), false), &home);
    assert_eq!(exit_code(out.status, &stderr(&out)).unwrap(), 255);

    // Quoting: every word arrives as itself.
    let tricky = ["it's $HOME", "a b", ";rm -rf /", "`id`", "\"q\"", "", "*"];
    let mut argv = words(&["printf", "[%s]"]);
    argv.extend(words(&tricky));
    let (out, _) = run(t.command(&argv, false), &home);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[it's $HOME][a b][;rm -rf /][`id`][\"q\"][][*]"
    );

    // Multiplexed: none of those commands logged in again; a command costs
    // less than a fresh handshake.
    assert_eq!(sshd.logins(), 1, "commands did not reuse the ControlMaster");
    let mux = (0..3)
        .map(|_| run(t.command(&words(&["true"]), false), &home).1)
        .min()
        .unwrap();
    let fresh = fresh_target.wait_ready(Duration::from_secs(30)).unwrap();
    fresh_target.close();
    assert_eq!(sshd.logins(), 2);
    println!("multiplexed command: {mux:?}; fresh connection: {fresh:?}");
    assert!(
        mux < fresh,
        "multiplexed {mux:?} not faster than fresh {fresh:?}"
    );

    // ssh's own failure is an error, not the command's status.
    let mut nowhere = t.clone();
    nowhere.port = support::free_port();
    nowhere.control_dir = dir.path().join("ctl3");
    fs::create_dir_all(&nowhere.control_dir).unwrap();
    let (out, _) = run(nowhere.command(&words(&["true"]), false), &home);
    match exit_code(out.status, &stderr(&out)) {
        Err(SshError::Connection { detail }) => assert!(detail.contains("refused"), "{detail}"),
        other => panic!("{other:?}"),
    }
    match nowhere.wait_ready(Duration::from_secs(1)) {
        Err(e @ SshError::Timeout { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("Connection refused"), "{msg}");
        }
        other => panic!("{other:?}"),
    }

    t.close();
    assert!(!t.control_path().exists(), "close left the master running");
    drop(sshd);

    assert!(!home.join(".ssh").exists(), "$HOME/.ssh was created");
    if let (Some(dir), Some(before)) = (real_ssh_dir, real_before) {
        assert_eq!(snapshot(&dir), before, "{} changed", dir.display());
    }
}

#[test]
fn a_changed_or_unpinned_host_key_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(dir.path()) else {
        return;
    };
    let t = target(dir.path(), &sshd);
    let _closer = support::Closer(vec![t.clone()]);
    let known_hosts = KnownHosts::new(t.known_hosts.clone());
    known_hosts
        .pin(VM, &words(&["127.0.0.1"]), &sshd.host_public_key)
        .unwrap();
    t.wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log_text()));

    // Pin another key, as if the guest's disk had been swapped; the open
    // master was verified against the old key, so close it first.
    let other = generate_host_key(&dir.path().join("other"), "other").unwrap();
    known_hosts.pin(VM, &words(&["127.0.0.1"]), &other).unwrap();
    t.close();
    let start = Instant::now();
    match t.wait_ready(Duration::from_secs(30)) {
        Err(e @ SshError::HostKeyChanged { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("host key changed for VM testvm: possible MITM"),
                "{msg}"
            );
            assert!(!msg.contains('\n'));
        }
        other => panic!("{other:?}"),
    }
    println!("changed key refused after {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        start.elapsed()
    );
    assert!(
        !t.control_path().exists(),
        "a master was made to an unverified host"
    );

    // A command run on its own reports the same, as an error.
    let home = dir.path().join("home");
    let (out, _) = run(t.command(&words(&["true"]), false), &home);
    assert!(matches!(
        exit_code(out.status, &stderr(&out)),
        Err(SshError::HostKeyChanged { ref vm }) if vm == VM
    ));

    // No key pinned at all: refused too, never trusted on first use.
    known_hosts.remove(VM).unwrap();
    let start = Instant::now();
    assert!(matches!(
        t.wait_ready(Duration::from_secs(30)),
        Err(SshError::HostKeyNotPinned { .. })
    ));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(known_hosts.pinned(VM).unwrap(), None);
    let (out, _) = run(t.command(&words(&["true"]), false), &home);
    assert!(matches!(
        exit_code(out.status, &stderr(&out)),
        Err(SshError::HostKeyNotPinned { ref vm }) if vm == VM
    ));
}
