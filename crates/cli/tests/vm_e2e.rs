//! The VM lifecycle end to end, under QEMU/TCG, with `bangerd` inside a
//! network namespace this test creates: its bridge, TAPs, NAT rules and
//! guest addresses exist only there and vanish with it. The default image
//! is built (or reused from the test cache, by recipe hash) before, outside
//! the namespace, which has no route to the Debian mirror.
//!
//! One test, few boots: each VM serves several assertions.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use banger_model::VmState;
use common::*;

fn banger_in(home: &TestHome, ns: &Netns, args: &[&str]) -> Output {
    home.banger_in(ns, args, &[])
}

#[test]
fn vms_boot_run_persist_reach_each_other_and_survive_a_daemon_restart() {
    let Some(home) = home_with_default_image(&[], |home| {
        // [[file_sync]]: a file from the user's home lands in every new VM's
        // /root; one that points outside home is refused.
        fs::write(
            home.root().join("home/.gitconfig"),
            "[user]\n\tname = banger\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", home.root().join("home/escape")).unwrap();
        home.write_config(
            "[[file_sync]]\nhost = \"~/.gitconfig\"\nguest = \"~/.gitconfig\"\n\n\
             [[file_sync]]\nhost = \"~/escape\"\nguest = \"~/escape\"\n",
        );
    }) else {
        return;
    };

    let Some(ns) = Netns::new("banger-e2e") else {
        return;
    };
    let b = |args: &[&str]| banger_in(&home, &ns, args);
    let in_alpha =
        |script: &str, what: &str| ok(b(&["vm", "ssh", "alpha", "--", "sh", "-c", script]), what);
    let prepare_in_alpha = |path: &str, flags: &[&str]| {
        let mut args = vec!["vm", "workspace", "prepare", "alpha", path];
        args.extend_from_slice(flags);
        b(&args)
    };

    // Workspace mode: a repo's tracked files, as in the working tree, land
    // in /root/NAME where the command runs; its exit status comes back, and
    // --rm leaves nothing.
    let repo = fixture_repo(home.root());
    let repo_arg = repo.to_str().unwrap();
    let dry = b(&["vm", "run", repo_arg, "--dry-run", "--include-untracked"]);
    let listing = ok(dry, "dry run");
    assert!(
        listing.contains("run.sh") && listing.contains("notes.txt"),
        "{listing}"
    );
    assert!(
        !listing.contains("build.log"),
        "ignored files are never sent: {listing}"
    );
    assert!(vm_list(&home, &ns).is_empty(), "--dry-run creates no VM");
    let check = "pwd; cat README; ls -l run.sh | cut -c1-10; \
                 test -e notes.txt && echo untracked-present; \
                 test -e build.log && echo ignored-present; \
                 readlink link; exit 7";
    let out = b(&[
        "vm",
        "run",
        repo_arg,
        "--rm",
        "--name",
        "seven",
        "--timings",
        "--",
        "sh",
        "-c",
        check,
    ]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    let seen = stdout(&out);
    assert_eq!(
        seen,
        "/root/fixture\nedited, not committed\n-rwxr-xr-x\nREADME\n",
        "stderr: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("timings:"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("workspace: "),
        "says which mode: {}",
        stderr(&out)
    );
    assert!(
        vm_list(&home, &ns).is_empty(),
        "--rm deleted the VM and its lease"
    );
    assert!(
        !link_exists(&ns, &banger_network::tap_name("seven")),
        "TAP removed"
    );

    // Two VMs: different addresses, and they reach each other.
    ok(b(&["vm", "create", "--name", "alpha"]), "vm create alpha");
    ok(b(&["vm", "create", "--name", "beta"]), "vm create beta");
    let vms = vm_list(&home, &ns);
    let ip = |n: &str| {
        vms.iter()
            .find(|v| v.name.as_str() == n)
            .and_then(|v| v.ip.clone())
            .unwrap()
    };
    assert_ne!(ip("alpha"), ip("beta"));
    assert!(vms.iter().all(|v| v.state == VmState::Running), "{vms:?}");
    // The kernel came from the build cache with whichever banger-init
    // built it; before booting, the daemon put this one in its initramfs,
    // and re-pinned it.
    let alpha_vm = vms.iter().find(|v| v.name.as_str() == "alpha").unwrap();
    let carried = fs::read_to_string(
        home.state()
            .join("kernels")
            .join(&alpha_vm.kernel)
            .join("initramfs.cpio.gz.init-sha256"),
    )
    .unwrap();
    let init = banger_testkit::static_guest_binaries().init.clone();
    let (init_sha, _) = banger_images::digest::sha256_file(&init).unwrap();
    assert_eq!(carried.trim(), init_sha);
    ok(b(&["image", "verify", &alpha_vm.image]), "image verify");
    ok(
        b(&[
            "vm",
            "ssh",
            "alpha",
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "5",
            &ip("beta"),
        ]),
        "alpha pings beta",
    );
    assert!(rules_of(&ns, "alpha") > 0, "alpha is isolated");
    assert!(rules_of(&ns, "beta") > 0, "beta is isolated");
    let hostname = ok(b(&["vm", "ssh", "beta", "--", "hostname"]), "hostname");
    assert_eq!(hostname.trim(), "beta");

    // The guest's clock: stepped to the host's at boot, and, under TCG,
    // ticking at the host's rate on the TSC clocksource (checked again
    // once beta has run for a minute, further down).
    let mut beta_clock = GuestClock::open(&home, &ns, "beta");
    let beta_booted = std::time::Instant::now();
    let offset = beta_clock.offset();
    assert!(
        offset.abs() <= 0.25,
        "guest minus host at boot: {offset:.3} s"
    );
    let cmdline = ok(
        b(&["vm", "ssh", "beta", "--", "cat", "/proc/cmdline"]),
        "cmdline",
    );
    if cmdline.contains("tsc_early_khz=") {
        let source = ok(
            b(&[
                "vm",
                "ssh",
                "beta",
                "--",
                "cat",
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            ]),
            "clocksource",
        );
        assert_eq!(source.trim(), "tsc", "under TCG: {cmdline}");
    }
    let slept = beta_clock.sleep(5);
    assert!(
        (slept - 5.0).abs() <= 0.25,
        "a 5 s sleep in the guest took {slept:.3} s of the host's time"
    );

    // Files in /root (work disk) and elsewhere (overlay) survive a restart.
    in_alpha(
        "echo kept > /root/keep && echo sys > /etc/banger-mark && sync",
        "write files",
    );
    ok(b(&["vm", "stop", "alpha"]), "vm stop");
    assert!(
        !link_exists(&ns, &banger_network::tap_name("alpha")),
        "TAP removed on stop"
    );
    assert_eq!(rules_of(&ns, "alpha"), 0, "isolation rules removed on stop");
    ok(
        b(&["vm", "set", "alpha", "--nat", "--disk-size", "9G"]),
        "vm set",
    );
    ok(b(&["vm", "start", "alpha"]), "vm start");
    let files = ok(
        b(&[
            "vm",
            "ssh",
            "alpha",
            "--",
            "cat",
            "/root/keep",
            "/etc/banger-mark",
        ]),
        "cat",
    );
    assert_eq!(files, "kept\nsys\n");
    let df = ok(
        b(&[
            "vm",
            "ssh",
            "alpha",
            "--",
            "df",
            "-BG",
            "--output=size",
            "/root",
        ]),
        "df",
    );
    assert!(
        df.contains("9G") || df.contains("8G"),
        "work disk grown: {df}"
    );
    let rules = ns.exec(&["nft", "list", "table", "ip", "banger"]);
    assert!(
        stdout(&rules).contains("banger:alpha"),
        "NAT rule: {}",
        stdout(&rules)
    );

    let synced = in_alpha(
        "stat -c %a /root/.gitconfig; cat /root/.gitconfig; test -e /root/escape || echo no-escape",
        "file_sync",
    );
    assert_eq!(synced, "600\n[user]\n\tname = banger\nno-escape\n");

    // A workspace copied into a running VM.
    ok(prepare_in_alpha(repo_arg, &[]), "workspace prepare");
    let readme = ok(
        b(&["vm", "ssh", "alpha", "--", "cat", "/root/fixture/README"]),
        "cat README",
    );
    assert_eq!(readme, "edited, not committed\n");
    // Untracked files come when asked; ignored ones never do.
    ok(
        prepare_in_alpha(repo_arg, &["--include-untracked"]),
        "workspace prepare --include-untracked",
    );
    let seen = in_alpha(
        "cd /root/fixture && cat notes.txt && test ! -e build.log && echo no-ignored",
        "untracked",
    );
    assert_eq!(seen, "untracked\nno-ignored\n");
    // A directory outside git goes as it is, minus its .gitignore.
    let plain = home.root().join("plain");
    fs::create_dir_all(plain.join("bin")).unwrap();
    fs::write(plain.join(".gitignore"), "*.tmp\n").unwrap();
    fs::write(plain.join("data.txt"), "plain data\n").unwrap();
    fs::write(plain.join("scratch.tmp"), "ignored\n").unwrap();
    fs::write(plain.join("bin/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(plain.join("bin/tool"), fs::Permissions::from_mode(0o750)).unwrap();
    let out = prepare_in_alpha(plain.to_str().unwrap(), &[]);
    assert!(stderr(&out).contains("plain directory"), "{}", stderr(&out));
    ok(out, "workspace prepare (plain)");
    let seen = in_alpha(
        "cd /root/plain && cat data.txt && stat -c %a bin/tool && test ! -e scratch.tmp && echo no-ignored",
        "plain",
    );
    assert_eq!(seen, "plain data\n750\nno-ignored\n");
    // --branch: a real repository at that branch, history included; never
    // merged into a directory that is already there.
    let out = prepare_in_alpha(repo_arg, &["--branch", "feature"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    ok(
        b(&["vm", "ssh", "alpha", "--", "rm", "-rf", "/root/fixture"]),
        "rm",
    );
    ok(
        prepare_in_alpha(repo_arg, &["--branch", "feature"]),
        "workspace prepare --branch",
    );
    let seen = in_alpha(
        "cd /root/fixture && git branch --show-current && git log --format=%s && cat README feature.txt && git status --porcelain && test ! -e notes.txt && echo clean",
        "git in the guest",
    );
    assert_eq!(
        seen,
        "feature\nfeature work\nfixture\ncommitted\non feature\nclean\n"
    );

    // A changed host key is refused, loudly.
    let kh = home.state().join("ssh/known_hosts");
    let original = fs::read_to_string(&kh).unwrap();
    let forged = forge_key_for(&original, &ip("beta"), home.root());
    fs::write(&kh, forged).unwrap();
    // Forget the multiplexed connection, so the next one shows its key.
    for entry in fs::read_dir(home.root().join("run/ssh")).unwrap() {
        let _ = fs::remove_file(entry.unwrap().path());
    }
    let out = b(&["vm", "ssh", "--ssh", "beta", "--", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("host key") && err.to_lowercase().contains("mitm"),
        "{err}"
    );
    fs::write(&kh, original).unwrap();

    // The daemon can go away: VMs keep running and are re-adopted.
    let pid_before = vm_list(&home, &ns)
        .iter()
        .find(|v| v.name.as_str() == "alpha")
        .and_then(|v| v.runtime.as_ref()?.get("pid")?.as_u64());
    ok(b(&["daemon", "stop"]), "daemon stop");
    // As if started by a bangerd without isolation: the restarted daemon
    // writes the VMs' rules again.
    let dropped = ns.exec(&["nft", "delete", "table", "bridge", "banger"]);
    assert!(dropped.status.success(), "{}", stderr(&dropped));
    let after = vm_list(&home, &ns);
    let alpha = after.iter().find(|v| v.name.as_str() == "alpha").unwrap();
    assert_eq!(alpha.state, VmState::Running, "{alpha:?}");
    assert_eq!(
        alpha.runtime.as_ref().and_then(|r| r.get("pid")?.as_u64()),
        pid_before
    );
    ok(
        b(&["vm", "ssh", "--ssh", "alpha", "--", "true"]),
        "ssh after re-adoption",
    );
    let listing = ns.exec(&["nft", "list", "table", "bridge", "banger"]);
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("\"banger:alpha\""),
        "re-adopted alpha is isolated again: {}",
        stderr(&listing)
    );

    // kill -9 of the daemon in the middle of a create: the restarted
    // daemon leaves neither a process nor a TAP behind.
    let mut creating = home
        .banger_in_command(&ns, &["vm", "create", "--name", "gamma"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db = home.state().join("banger.db");
    let gamma_pid = wait_until("gamma's hypervisor is recorded", || {
        let store = banger_store::Store::open(&db).ok()?;
        let vm = store.get_vm("gamma").ok()??;
        vm.runtime.as_ref()?.get("pid")?.as_u64()
    });
    let daemon_pid = fs::read_to_string(home.state().join("bangerd.lock")).unwrap();
    let _ = Command::new("kill")
        .args(["-9", daemon_pid.trim()])
        .status();
    let _ = creating.wait();
    let after = vm_list(&home, &ns); // starts a new daemon, which reconciles
    let gamma = after.iter().find(|v| v.name.as_str() == "gamma").unwrap();
    assert_eq!(gamma.state, VmState::Stopped, "{gamma:?}");
    assert!(gamma.runtime.is_none());
    assert!(
        !Path::new(&format!("/proc/{gamma_pid}")).exists()
            || fs::read_to_string(format!("/proc/{gamma_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "gamma's hypervisor is gone"
    );
    assert!(
        !link_exists(&ns, &banger_network::tap_name("gamma")),
        "gamma's TAP is gone"
    );
    let alpha = after.iter().find(|v| v.name.as_str() == "alpha").unwrap();
    assert_eq!(alpha.state, VmState::Running, "alpha survived that too");
    ok(b(&["vm", "delete", "gamma"]), "delete gamma");

    // What a guest writes to its console reaches a terminal as text: an
    // OSC 52 clipboard write and a colour are shown, not obeyed. Piped, and
    // with --raw, the bytes are as written.
    in_alpha(
        r"printf 'osc-\033]52;c;aGk=\007-red-\033[31m-end\n' > /dev/console",
        "write escapes to the console",
    );
    let shown = wait_until("the escapes in vm logs", || {
        let shown = on_a_terminal(&home, &ns, &["vm", "logs", "alpha"]);
        shown.contains("osc-").then_some(shown)
    });
    assert!(
        shown.contains("osc-^[]52;c;aGk=^G-red-^[[31m-end"),
        "placeholders on a terminal: {:?}",
        shown.lines().find(|l| l.contains("osc-"))
    );
    assert!(!shown.contains('\x1b'), "no escape reaches the terminal");
    let raw = on_a_terminal(&home, &ns, &["vm", "logs", "--raw", "alpha"]);
    assert!(raw.contains("osc-\x1b]52;c;aGk=\x07-red-\x1b[31m-end"));
    let piped = ok(b(&["vm", "logs", "alpha"]), "vm logs, piped");
    assert!(piped.contains("osc-\x1b]52;c;aGk=\x07-red-\x1b[31m-end"));

    // A minute on, beta's clock has not drifted.
    if let Some(left) = std::time::Duration::from_secs(60).checked_sub(beta_booted.elapsed()) {
        std::thread::sleep(left);
    }
    let offset = beta_clock.offset();
    assert!(
        offset.abs() <= 0.25,
        "guest minus host {:.0} s after boot: {offset:.3} s",
        beta_booted.elapsed().as_secs_f64()
    );
    drop(beta_clock);

    // An sshd that never lets banger in: the start gives up after the boot
    // timeout, says so with the console's tail, and leaves the VM running.
    ok(b(&["vm", "stop", "beta"]), "stop beta");
    let work = home.state().join("vms/beta/work.ext4");
    let rm = Command::new("debugfs")
        .args(["-w", "-R", "rm /.ssh/authorized_keys"])
        .arg(&work)
        .output()
        .unwrap();
    assert!(rm.status.success());
    ok(b(&["daemon", "stop"]), "daemon stop");
    let out = home.banger_in(
        &ns,
        &["vm", "start", "beta"],
        &[("BANGER_BOOT_TIMEOUT", "30")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("did not answer within 30s"), "{err}");
    assert!(err.contains("console: "), "quotes the console: {err}");
    assert!(err.contains("banger vm logs beta"), "{err}");
    let beta = vm_list(&home, &ns)
        .into_iter()
        .find(|v| v.name.as_str() == "beta")
        .unwrap();
    assert_eq!(beta.state, VmState::Error);
    assert!(beta.runtime.is_some(), "left running for diagnosis");
    let logs = ok(b(&["vm", "logs", "beta"]), "vm logs");
    assert!(
        logs.contains("banger-init ready"),
        "the console log is there"
    );

    ok(b(&["vm", "delete", "--force", "alpha"]), "delete alpha");
    ok(b(&["vm", "delete", "--force", "beta"]), "delete beta");
    assert!(vm_list(&home, &ns).is_empty());
    assert!(!link_exists(&ns, &banger_network::tap_name("alpha")));
    assert!(!stdout(&ns.exec(&["nft", "list", "table", "ip", "banger"])).contains("banger:alpha"));
    assert!(!fs::read_to_string(&kh).unwrap_or_default().contains("beta"));
    let _ = b(&["daemon", "stop"]);
}

/// What `banger ARGS` shows with its output on a terminal (util-linux
/// `script` runs it on a pseudo-terminal).
fn on_a_terminal(home: &TestHome, ns: &Netns, args: &[&str]) -> String {
    let cmd = home.banger_in_command(ns, args);
    let quote = |w: &std::ffi::OsStr| format!("'{}'", w.to_string_lossy().replace('\'', r"'\''"));
    let words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect();
    let mut script = Command::new("script");
    script.args(["-qec", &words.join(" "), "/dev/null"]);
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            script.env(key, value);
        }
    }
    let out = script
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    assert!(
        out.status.success(),
        "{args:?} on a terminal: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// A shell in a guest that answers each line it reads with its clock
/// (bash's `$EPOCHREALTIME`: no process is started per answer), so the
/// guest's time is read in the middle of a short round trip.
struct GuestClock {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl GuestClock {
    fn open(home: &TestHome, ns: &Netns, vm: &str) -> Self {
        use std::process::Stdio;
        let script =
            r#"while read -r x; do [ "$x" = "" ] || sleep "$x"; echo "$EPOCHREALTIME"; done"#;
        let mut child = home
            .banger_in_command(ns, &["vm", "ssh", vm, "--", "bash", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends `line`; the guest's clock when it answered, and the host's
    /// clock before and after.
    fn exchange(&mut self, line: &str) -> (f64, f64, f64) {
        use std::io::{BufRead, Write};
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let before = now();
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        let after = now();
        let guest = answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a time: {answer:?}"));
        (guest, before, after)
    }

    /// Guest minus host, in seconds, from the shortest of a few round trips.
    fn offset(&mut self) -> f64 {
        (0..8)
            .map(|_| self.exchange(""))
            .min_by(|a, b| (a.2 - a.1).total_cmp(&(b.2 - b.1)))
            .map(|(guest, before, after)| guest - (before + after) / 2.0)
            .unwrap()
    }

    /// How many of the host's seconds a `sleep SECS` in the guest takes
    /// (less one round trip without a sleep).
    fn sleep(&mut self, secs: u32) -> f64 {
        let (_, before, after) = self.exchange("");
        let rtt = after - before;
        let (_, before, after) = self.exchange(&secs.to_string());
        after - before - rtt
    }
}

impl Drop for GuestClock {
    /// End of input ends the guest's loop, and with it the session.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// known_hosts with beta's key swapped for a freshly generated one.
fn forge_key_for(known_hosts: &str, ip: &str, scratch: &Path) -> String {
    let key = scratch.join("forged");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = fs::read_to_string(key.with_extension("pub")).unwrap();
    let forged_key = public.split_whitespace().nth(1).unwrap().to_string();
    known_hosts
        .lines()
        .map(|line| {
            if line.contains(ip) && line.contains("ssh-ed25519") {
                let mut words: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "ssh-ed25519") {
                    words[i + 1] = &forged_key;
                }
                words.join(" ")
            } else {
                line.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

/// Polls `probe` until it gives a value (60 s at most).
fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A git repository with a tracked script (0755), a tracked file edited
/// after the commit, a symlink, an untracked file and an ignored one.
fn fixture_repo(root: &Path) -> std::path::PathBuf {
    let repo = root.join("fixture");
    fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| git_in(&repo, args);
    git(&["init", "-q"]);
    fs::write(repo.join("README"), "committed\n").unwrap();
    fs::write(repo.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(repo.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("README", repo.join("link")).unwrap();
    fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
    git(&["add", "README", "run.sh", "link", ".gitignore"]);
    git(&["commit", "-q", "-m", "fixture"]);
    git(&["switch", "-q", "-c", "feature"]);
    fs::write(repo.join("feature.txt"), "on feature\n").unwrap();
    git(&["add", "feature.txt"]);
    git(&["commit", "-q", "-m", "feature work"]);
    git(&["switch", "-q", "-"]);
    fs::write(repo.join("README"), "edited, not committed\n").unwrap();
    fs::write(repo.join("notes.txt"), "untracked\n").unwrap();
    fs::write(repo.join("build.log"), "ignored\n").unwrap();
    repo
}
