//! The guest agent end to end, under QEMU/TCG: `banger vm ssh` and
//! `banger vm run` through the agent of a real default-image guest
//! (systemd), with `bangerd` inside a network namespace this test
//! creates. One VM serves every assertion.

mod common;

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_model::{VmRecord, VmState};
use common::*;

const VM: &str = "agent";
/// Commands go through the agent by default (docs/agent.md).
const AGENT: &[(&str, &str)] = &[];

fn agent_command(home: &TestHome, ns: &Netns, args: &[&str]) -> Command {
    home.banger_in_command(ns, args)
}

fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn commands_and_shells_run_through_the_guest_agent() {
    let Some(home) = home_with_default_image(&["tmux", "sha256sum"], |_| {}) else {
        return;
    };
    let Some(ns) = Netns::new("banger-agent") else {
        return;
    };
    let b = |args: &[&str]| home.banger_in(&ns, args, AGENT);
    let ssh = |args: &[&str]| {
        let mut all = vec!["vm", "ssh", VM, "--"];
        all.extend_from_slice(args);
        home.banger_in(&ns, &all, AGENT)
    };

    // vm create --wait sysinit: the agent answers and systemd passed
    // sysinit.target; the timings show both phases.
    let created = b(&[
        "vm",
        "create",
        "--name",
        VM,
        "--wait",
        "sysinit",
        "--timings",
    ]);
    let err = stderr(&created);
    ok(created, "vm create --wait sysinit");
    assert!(err.contains("agent") && err.contains("ready"), "{err}");
    assert!(!err.contains("using ssh"), "{err}");
    let marks = ok(
        ssh(&[
            "sh",
            "-c",
            "ls /run/banger-agent; systemctl is-active sysinit.target",
        ]),
        "readiness marks",
    );
    assert!(
        marks.contains("sysinit\n") && marks.contains("active"),
        "{marks}"
    );
    // The system disk's per-VM files, bind-mounted for the agent alone,
    // hold the host keys /etc/ssh has (docs/guest-init.md).
    let files = ok(
        ssh(&[
            "sh",
            "-c",
            "grep ' /run/banger-agent/files ' /proc/self/mountinfo; \
             stat -c %a /run/banger-agent; \
             cmp /run/banger-agent/files/etc/ssh/ssh_host_ed25519_key.pub \
                 /etc/ssh/ssh_host_ed25519_key.pub && echo same",
        ]),
        "the per-VM files' mount",
    );
    assert!(
        files.contains(" /run/banger-agent/files rw,nosuid,nodev,noexec")
            && files.contains(" - ext4 "),
        "{files}"
    );
    assert!(files.contains("\n700\nsame\n"), "{files}");

    // stdin passes through; stdout and stderr stay apart; statuses.
    let mut cat = agent_command(&home, &ns, &["vm", "ssh", VM, "--", "cat"]);
    let mut child = cat
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "hi\n", "stderr: {}", stderr(&out));
    let out = ssh(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).ends_with("err\n"), "{}", stderr(&out));
    assert_eq!(ssh(&["true"]).status.code(), Some(0));
    let out = ssh(&["sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let out = ssh(&["no-such-program"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no-such-program"), "{}", stderr(&out));

    // 100 MB each way, checksummed.
    let big: Vec<u8> = (0..100u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = home.root().join("big");
    fs::write(&file, &big).unwrap();
    let out = home
        .banger_in_command(&ns, &["vm", "ssh", VM, "--", "sha256sum"])
        .stdin(fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    let guest_sum = ok(out, "100 MB in");
    assert_eq!(
        guest_sum.split_whitespace().next(),
        Some(sha256(&big).as_str())
    );
    let sum = ok(
        ssh(&[
            "sh",
            "-c",
            "head -c 104857600 /dev/urandom >/root/big && sha256sum /root/big",
        ]),
        "100 MB made in the guest",
    );
    let out = ssh(&["cat", "/root/big"]);
    let data = ok_bytes(out, "100 MB out");
    assert_eq!(data.len(), 100 << 20);
    assert_eq!(sum.split_whitespace().next(), Some(sha256(&data).as_str()));
    drop(data);

    // Eight commands at once on the one VM.
    let children: Vec<_> = (0..8)
        .map(|i| {
            agent_command(
                &home,
                &ns,
                &[
                    "vm",
                    "ssh",
                    VM,
                    "--",
                    "sh",
                    "-c",
                    &format!("sleep 2; echo {i}"),
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(stdout(&out), format!("{i}\n"), "{}", stderr(&out));
    }

    // The workspace arrives through the agent as --dry-run lists it.
    let dir = home.root().join("proj");
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("src/main.c"), "int main(){}\n").unwrap();
    fs::write(dir.join("README"), "hello\n").unwrap();
    fs::write(dir.join(".gitignore"), "*.o\n").unwrap();
    fs::write(dir.join("main.o"), "junk").unwrap();
    let dir_arg = dir.to_str().unwrap();
    let listing = ok(b(&["vm", "run", dir_arg, "--dry-run"]), "dry run");
    let mut listed: Vec<&str> = listing
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(' ') && !l.contains(':'))
        .collect();
    listed.sort_unstable();
    let prepared = b(&["vm", "workspace", "prepare", VM, dir_arg]);
    let err = stderr(&prepared);
    ok(prepared, "workspace prepare");
    assert!(!err.contains("using ssh"), "{err}");
    let found = ok(
        ssh(&[
            "sh",
            "-c",
            "cd /root/proj && find . -type f | sed 's|^./||' | sort",
        ]),
        "the copied workspace",
    );
    let found: Vec<&str> = found.lines().collect();
    assert_eq!(found, listed, "dry run said:\n{listing}");

    // --ssh takes OpenSSH, and says nothing of the agent.
    let out = b(&[
        "vm",
        "ssh",
        "--ssh",
        VM,
        "--",
        "sh",
        "-c",
        "echo $SSH_CONNECTION",
    ]);
    let err = stderr(&out);
    let via = ok(out, "vm ssh --ssh");
    assert!(!via.trim().is_empty(), "an ssh session: {via:?} {err}");
    let via = ok(ssh(&["sh", "-c", "echo \"[$SSH_CONNECTION]\""]), "vm ssh");
    assert_eq!(via, "[]\n", "the agent's commands are not ssh sessions");

    shell_on_a_real_terminal(&home, &ns);
    a_command_outlives_a_daemon_restart(&home, &ns);
    agent_killed_mid_command(&home, &ns);
    paused_and_resumed(&home, &ns);

    ok(b(&["vm", "delete", "--force", VM]), "vm delete");
}

/// `vm pause`: `vm list` says paused, also after a daemon restart (which
/// keeps it so); commands are refused with the way out; `vm stats` still
/// answers. `vm resume`, and the next command works.
fn paused_and_resumed(home: &TestHome, ns: &Netns) {
    let b = |args: &[&str]| home.banger_in(ns, args, AGENT);
    let state = || {
        vm_list(home, ns)
            .into_iter()
            .find(|v| v.name.as_str() == VM)
            .map(|v| v.state)
    };
    let paused: VmRecord =
        serde_json::from_str(&ok(b(&["vm", "pause", VM, "--json"]), "vm pause")).unwrap();
    assert_eq!(paused.state, VmState::Paused);
    assert_eq!(state(), Some(VmState::Paused));

    let out = b(&["vm", "ssh", VM, "--", "true"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "a paused VM ran a command: {err}");
    assert!(err.contains(&format!("'banger vm resume {VM}'")), "{err}");
    assert!(!err.contains("using ssh"), "said once: {err}");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(b(&["vm", "stats", VM, "--json"]), "vm stats")).unwrap();
    assert_eq!(stats["state"], "paused", "{stats}");
    assert!(stats["pid"].is_u64(), "{stats}");

    ok(home.banger_in(ns, &["daemon", "stop"], &[]), "daemon stop");
    assert_eq!(state(), Some(VmState::Paused), "after a daemon restart");

    let resumed = ok(b(&["vm", "resume", VM]), "vm resume");
    assert!(resumed.contains("running again"), "{resumed}");
    assert_eq!(state(), Some(VmState::Running));
    let out = b(&["vm", "ssh", VM, "--", "true"]);
    let err = stderr(&out);
    ok(out, "vm ssh -- true after resume");
    assert!(!err.contains("using ssh"), "through the agent: {err}");
}

/// A shell in tmux: type, read the screen, resize, read `stty size`.
fn shell_on_a_real_terminal(home: &TestHome, ns: &Netns) {
    let session = format!("banger-agent-{}", std::process::id());
    let cmd = agent_command(home, ns, &["vm", "ssh", VM]);
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let env: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
        .collect();
    let line = shlex::try_join(
        ["env", "-i", "TERM=xterm-256color"]
            .into_iter()
            .chain(env.iter().map(String::as_str))
            .chain(words.iter().map(String::as_str)),
    )
    .unwrap();
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux").args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        &line,
    ]);
    let screen = || tmux(&["capture-pane", "-p", "-t", &session]);
    let wait_screen = |want: &str| {
        let started = Instant::now();
        loop {
            let s = screen();
            if s.contains(want) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{want:?} never showed; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    tmux(&["send-keys", "-t", &session, "echo typed-$((6*7))", "Enter"]);
    wait_screen("typed-42");
    tmux(&["send-keys", "-t", &session, "stty size", "Enter"]);
    wait_screen("24 80");
    tmux(&["resize-window", "-t", &session, "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", &session, "stty size", "Enter"]);
    wait_screen("30 100");
    tmux(&["send-keys", "-t", &session, "exit", "Enter"]);
    let started = Instant::now();
    while Command::new("tmux")
        .args(["has-session", "-t", &session])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the shell did not end"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A command in flight outlives a bangerd restart, as an ssh session
/// does: the VM's agent proxy is a process of its own, which the
/// restarted daemon finds again.
fn a_command_outlives_a_daemon_restart(home: &TestHome, ns: &Netns) {
    let child = home
        .banger_in_command(
            ns,
            &["vm", "ssh", VM, "--", "sh", "-c", "sleep 6; echo survived"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    ok(home.banger_in(ns, &["daemon", "stop"], &[]), "daemon stop");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(ok(out, "a command across a daemon restart"), "survived\n");
    assert!(!err.contains("using ssh"), "{err}");
    let out = home.banger_in(ns, &["vm", "ssh", VM, "--", "echo", "again"], &[]);
    let err = stderr(&out);
    assert_eq!(ok(out, "after the restart"), "again\n");
    assert!(
        !err.contains("using ssh"),
        "the proxy was found again: {err}"
    );

    // A restart: the new boot's proxy replaces the old one at once, even
    // if that one has not yet seen its hypervisor go.
    ok(
        home.banger_in(ns, &["vm", "restart", VM], &[]),
        "vm restart",
    );
    let out = home.banger_in(ns, &["vm", "ssh", VM, "--", "echo", "restarted"], &[]);
    let err = stderr(&out);
    assert_eq!(ok(out, "after vm restart"), "restarted\n");
    assert!(!err.contains("using ssh"), "{err}");
}

/// The agent killed while a command runs: the command's banger says so
/// and fails; systemd starts the agent again and the next command works.
fn agent_killed_mid_command(home: &TestHome, ns: &Netns) {
    let sleeper = home
        .banger_in_command(ns, &["vm", "ssh", VM, "--", "sleep", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = home.banger_in(
        ns,
        &[
            "vm",
            "ssh",
            VM,
            "--",
            "pkill",
            "-KILL",
            "-x",
            "banger-agent",
        ],
        AGENT,
    );
    let started = Instant::now();
    let out = sleeper.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "banger waited {:?} after the agent died",
        started.elapsed()
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("guest agent went away"),
        "{}",
        stderr(&out)
    );
    let started = Instant::now();
    loop {
        let out = home.banger_in(ns, &["vm", "ssh", VM, "--", "echo", "back"], AGENT);
        if out.status.success() && stdout(&out) == "back\n" && !stderr(&out).contains("using ssh") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent did not come back: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
