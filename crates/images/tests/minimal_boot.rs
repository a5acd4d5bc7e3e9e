//! An image with no init, no sshd and no shell (as distroless OCI images
//! are) boots in banger-init's minimal mode with banger's guest tools: the
//! host reaches it over ssh with a pinned host key, commands run in
//! banger's fallback shell with the image's environment, and the ACPI
//! power button (`vm stop` on QEMU) powers it off cleanly.
//!
//! Needs qemu-system-x86_64, mkfs.ext4, ssh, ssh-keygen, patchelf and apt
//! (the kernel, openssh-server and busybox-static packages are downloaded
//! into the test cache once); skips with the reason when one is missing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use banger_images::guest_tools;
use banger_testkit::mkfs_ext4 as mkfs;
use banger_testkit::qemu::{self, Microvm};

const BASE_UUID: &str = "6b1d0f0e-6a3c-4d53-9c3e-0ba5e0000011";
const SYSTEM_UUID: &str = "6b1d0f0e-6a3c-4d53-9c3e-0ba5e0000012";
const WORK_UUID: &str = "6b1d0f0e-6a3c-4d53-9c3e-0ba5e0000013";

fn put(root: &Path, rel: &str, contents: &[u8], mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, contents).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_distroless_image_is_reachable_over_ssh_and_stops_on_the_power_button() {
    if !banger_testkit::have_tools(&[
        "qemu-system-x86_64",
        "mkfs.ext4",
        "ssh",
        "ssh-keygen",
        "patchelf",
        "apt-get",
    ]) {
        return;
    }
    // The tools are what this test is about: with patchelf and apt here,
    // failing to assemble them is a failure, not a reason to skip.
    let tools = guest_tools::ensure(&banger_testkit::test_cache().join("guest-tools"))
        .unwrap_or_else(|e| panic!("assembling the guest tools: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some((vmlinux, initramfs)) = banger_testkit::guest_kernel(d) else {
        return;
    };

    // The image: a passwd whose root has no usable shell, a marker file,
    // and nothing to run.
    let base = d.join("base");
    put(
        &base,
        "etc/passwd",
        b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n",
        0o644,
    );
    put(&base, "etc/image-marker", b"from the image\n", 0o644);
    for sub in ["dev", "proc", "sys", "root", "tmp"] {
        fs::create_dir_all(base.join(sub)).unwrap();
    }
    mkfs(
        &d.join("base.ext4"),
        &base,
        "banger-base",
        Some(BASE_UUID),
        "16M",
    );

    // Per-VM files, as the daemon writes them: host key, tools, config.
    let keys = d.join("keys");
    fs::create_dir_all(&keys).unwrap();
    for name in ["host", "user"] {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(keys.join(name))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let system = d.join("system");
    let files = "banger/files";
    put(
        &system,
        &format!("{files}/etc/ssh/ssh_host_ed25519_key"),
        &fs::read(keys.join("host")).unwrap(),
        0o600,
    );
    for (path, bytes, mode) in tools.files().unwrap() {
        put(&system, &format!("banger/tools/{path}"), &bytes, mode);
    }
    let (config, skipped) = guest_tools::sshd_config(&[
        "PATH=/opt/image/bin:/usr/bin:/bin".into(),
        "GREETING=hello from the image".into(),
    ]);
    assert!(skipped.is_empty());
    put(
        &system,
        "banger/tools/sshd_config",
        config.as_bytes(),
        0o644,
    );
    mkfs(
        &d.join("system.ext4"),
        &system,
        "banger-system",
        Some(SYSTEM_UUID),
        "128M",
    );
    let work = d.join("work");
    put(
        &work,
        ".ssh/authorized_keys",
        &fs::read(keys.join("user.pub")).unwrap(),
        0o600,
    );
    fs::set_permissions(work.join(".ssh"), fs::Permissions::from_mode(0o700)).unwrap();
    mkfs(
        &d.join("work.ext4"),
        &work,
        "banger-work",
        Some(WORK_UUID),
        "32M",
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host_pub = fs::read_to_string(keys.join("host.pub")).unwrap();
    let known_hosts = d.join("known_hosts");
    fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
    let qmp_socket = d.join("qmp.sock");

    let vm = Microvm::new(
        &vmlinux,
        &initramfs,
        &format!(
            "banger.base=UUID={BASE_UUID} banger.system=UUID={SYSTEM_UUID} banger.work=UUID={WORK_UUID} \
             banger.ip=10.0.2.15/24 banger.gw=10.0.2.2 banger.hostname=mini banger.minimal=1"
        ),
    )
    .drive(&d.join("base.ext4"), true)
    .drive(&d.join("system.ext4"), false)
    .drive(&d.join("work.ext4"), false)
    .forward_ssh(port)
    .qmp(&qmp_socket);

    let ssh = {
        let (key, known_hosts) = (keys.join("user"), known_hosts.clone());
        move |command: &str| {
            Command::new("ssh")
                .args(["-F", "/dev/null", "-p", &port.to_string(), "-i"])
                .arg(&key)
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
                .args([
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ConnectTimeout=5",
                    "-o",
                    "LogLevel=ERROR",
                    "root@127.0.0.1",
                    command,
                ])
                .output()
                .unwrap()
        }
    };
    // The checks run beside the console reader, once the supervisor says
    // sshd is up; their results come back through a channel.
    let (tx, rx) = mpsc::channel();
    let mut started = false;
    let console = vm.run(Duration::from_secs(120), |line| {
        if !started && line.starts_with("banger-init supervising: sshd pid") {
            started = true;
            let (ssh, tx, qmp_socket) = (ssh.clone(), tx.clone(), qmp_socket.clone());
            std::thread::spawn(move || {
                let begun = Instant::now();
                let mut out = ssh("true");
                while !out.status.success() && begun.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(500));
                    out = ssh("true");
                }
                println!("ssh answered {:?} after sshd started", begun.elapsed());
                let seen = ssh("read m </etc/image-marker; echo \"$m|$GREETING|$PATH\"; \
                     read c </proc/1/comm; echo \"pid1=$c\"; \
                     read u </etc/passwd; echo \"$u\"");
                let _ = tx.send((out, seen));
                let _ = qemu::qmp(&qmp_socket, "system_powerdown");
            });
        }
        false
    });
    let tail = console.tail();
    if let Some(ready) = console
        .lines
        .iter()
        .find(|l| l.starts_with("banger-init ready"))
    {
        println!("{ready}");
    }
    println!(
        "banger-init ready at {:?} s, sshd started at {:?} s, powered off after {:?}",
        console.when("banger-init ready"),
        console.when("banger-init supervising: sshd pid"),
        console.total
    );
    let (first, seen) = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("sshd never started; console:\n{tail}"));
    assert!(
        first.status.success(),
        "ssh: {}; console:\n{tail}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        "from the image|hello from the image|/opt/image/bin:/usr/bin:/bin\n\
         pid1=init\nroot:x:0:0:root:/root:/.banger/bin/sh\n",
        "stderr: {}; console:\n{tail}",
        String::from_utf8_lossy(&seen.stderr)
    );
    assert!(
        console
            .lines
            .iter()
            .any(|l| l.contains("SIGPWR: powering off")),
        "the power button powers off; console:\n{tail}"
    );
    assert!(
        console.status.is_some_and(|s| s.success()),
        "QEMU exits by itself after the power-off; console:\n{tail}"
    );
    assert!(
        !console.lines.iter().any(|l| l.starts_with("banger-init: ")),
        "no failure; console:\n{tail}"
    );
}
