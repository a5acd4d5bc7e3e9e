//! Docker and mise in the default image, end to end under QEMU/TCG, with
//! `bangerd` in a network namespace this test creates: one VM made by
//! `vm run ./repo` serves every in-guest check (docker socket-activated,
//! its data on ext4 with overlay2, an image built here and loaded with
//! `docker load`, `docker compose`, mise, the workspace's `mise
//! install`, and last Docker's data filesystem full); then a
//! `--no-docker` build is compared with the default one. Docker in a
//! minimal-mode (OCI) image has a VM of its own. The recipe's bad inputs
//! (a wrong pin, contradicting choices) are checked apart, without a
//! build.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_model::ImageRecord;
use common::registry::{Layout, Registry};
use common::*;

const VM: &str = "dock";

/// A one-service compose project running the image [`BUILD_TINY_IMAGE`]
/// loads; never pulled (the guest has no registry in reach).
const WRITE_COMPOSE_FILE: &str = r#"mkdir -p /root/hello && cat >/root/hello/compose.yaml <<'EOF'
services:
  hello:
    image: tiny:1
    pull_policy: never
    command: ["/bin/dash", "-c", "echo hello from compose; exit 5"]
EOF"#;

/// Makes a small image from the guest's own dash and C library, in
/// `docker save`'s layout (manifest, config, one layer), and loads it:
/// no registry involved.
const BUILD_TINY_IMAGE: &str = r#"set -e
d=$(mktemp -d); cd "$d"; mkdir rootfs
for f in /bin/dash /lib/x86_64-linux-gnu/libc.so.6 /lib64/ld-linux-x86-64.so.2; do
  cp -L --parents "$f" rootfs/
done
tar -C rootfs -cf layer.tar .
diff=$(sha256sum layer.tar | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff" >config.json
printf '[{"Config":"config.json","RepoTags":["tiny:1"],"Layers":["layer.tar"]}]' >manifest.json
tar -cf image.tar config.json manifest.json layer.tar
docker load -i image.tar"#;

/// `image show NAME --json`; a daemon it starts knows the static init, for
/// the builds after it.
fn image(home: &TestHome, name: &str) -> ImageRecord {
    let out = home
        .banger(&["image", "show", name, "--json"])
        .env(
            "BANGER_INIT_BIN",
            &banger_testkit::static_guest_binaries().init,
        )
        .output()
        .unwrap();
    serde_json::from_slice(&ok_bytes(out, "image show")).expect("image show --json")
}

/// A git repository whose `.mise.toml` pins nothing to download.
fn mise_repo(root: &std::path::Path) -> std::path::PathBuf {
    let repo = root.join("tools");
    fs::create_dir_all(&repo).unwrap();
    fs::write(
        repo.join(".mise.toml"),
        "[env]\nGREETING = \"hi\"\n\n[tasks.hello]\nrun = \"echo hello\"\n",
    )
    .unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", ".mise.toml"],
        &["commit", "-q", "-m", "mise"],
    ] {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    }
    repo
}

#[test]
fn docker_and_mise_work_in_the_default_image_and_no_docker_is_smaller() {
    let Some(home) = home_with_default_image(&["git", "debugfs"], |_| {}) else {
        return;
    };
    let default = image(&home, "debian-bookworm");
    let facts = default.facts.clone().expect("a built image has facts");
    assert!(
        facts
            .docker
            .as_deref()
            .is_some_and(|v| v.starts_with("20.10")),
        "{facts:?}"
    );
    assert!(facts.mise.is_some(), "{facts:?}");
    assert!(facts.packages > 200, "{facts:?}");
    assert!(
        facts.used_bytes > 0 && facts.used_bytes < facts.size_bytes,
        "{facts:?}"
    );
    assert!(
        facts.binaries[0]
            .source
            .starts_with("npm:@jdxcode/mise-linux-x64@"),
        "image show says where mise came from: {facts:?}"
    );

    // The lean variant, built outside the namespace (the mirror is
    // reachable only there): no Docker, so no dockerd, and smaller.
    let lean = home
        .banger(&["image", "build", "--name", "lean", "--no-docker"])
        .env(
            "BANGER_INIT_BIN",
            &banger_testkit::static_guest_binaries().init,
        )
        .timeout(Duration::from_secs(900))
        .output()
        .unwrap();
    let said = ok(lean, "image build --no-docker");
    assert!(said.contains("docker:  not in the image"), "{said}");
    let lean = image(&home, "lean");
    let lean_facts = lean.facts.clone().expect("facts");
    assert_eq!(lean_facts.docker, None);
    assert!(lean_facts.mise.is_some(), "--no-docker keeps mise");
    assert!(
        lean_facts.used_bytes + (100 << 20) < facts.used_bytes
            && lean_facts.packages < facts.packages,
        "lean {lean_facts:?} against default {facts:?}"
    );
    let rootfs = home.state().join("images/lean/rootfs.ext4");
    let stat = Command::new("debugfs")
        .args(["-R", "stat /usr/sbin/dockerd"])
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&stat.stderr).contains("not found"),
        "no dockerd in the lean image: {}",
        stderr(&stat)
    );
    home.banger(&["daemon", "stop"]).assert().success();

    let Some(ns) = Netns::new("banger-docker") else {
        return;
    };
    let b = |args: &[&str]| home.banger_in(&ns, args, &[]);
    let ssh = |script: &str| b(&["vm", "ssh", VM, "--", "sh", "-c", script]);
    let repo = mise_repo(home.root());
    ok(
        b(&[
            "vm",
            "run",
            repo.to_str().unwrap(),
            "--name",
            VM,
            "--disk-size",
            "2G",
            "--",
            "true",
        ]),
        "vm run ./tools",
    );

    // Socket-activated: nothing of Docker's runs until a client comes.
    let before = stdout(&ssh(
        "systemctl is-active docker.socket docker.service containerd.service",
    ));
    assert_eq!(before, "active\ninactive\ninactive\n");

    let info = ok(
        ssh("docker info --format '{{.Driver}}'; findmnt -n -o FSTYPE /var/lib/docker"),
        "docker info",
    );
    assert_eq!(info, "overlay2\next4\n", "data on ext4, overlay2 driver");

    ok(ssh(BUILD_TINY_IMAGE), "building and loading a tiny image");
    let run = ssh("docker run --rm tiny:1 /bin/dash -c 'echo hello from tiny; exit 7'");
    assert_eq!(run.status.code(), Some(7), "stderr: {}", stderr(&run));
    assert_eq!(stdout(&run), "hello from tiny\n");

    let version = ok(ssh("mise --version"), "mise --version");
    assert!(
        version.starts_with(facts.mise.as_deref().unwrap()),
        "{version}"
    );

    // The workspace's tool bootstrap ran mise install, in the background.
    let started = Instant::now();
    let log = loop {
        let out = ssh("cat /root/.cache/banger/vm-run-tooling-tools.log");
        let log = stdout(&out);
        if log.contains("mise install exited") {
            break log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the tooling log never said mise install ended: {log:?} {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        log.contains("banger: running mise install in /root/tools")
            && log.contains("banger: mise install exited with status 0"),
        "{log}"
    );

    compose_runs_the_loaded_image(&ssh);
    a_full_docker_disk_fails_docker_not_the_guest(&ssh, &|script| {
        b(&["vm", "ssh", "--ssh", VM, "--", "sh", "-c", script])
    });

    ok(b(&["vm", "delete", "--force", VM]), "vm delete");
}

/// `docker compose` (banger's plugin shim, which execs Debian's
/// `docker-compose`: one run covers both; each run of compose v1 costs
/// seconds of Python under TCG) runs a one-service project from the
/// image loaded above (no registry: the guest has none in reach), prints
/// its output, returns its status, and `down` removes its container and
/// network.
fn compose_runs_the_loaded_image(ssh: &dyn Fn(&str) -> std::process::Output) {
    ok(ssh(WRITE_COMPOSE_FILE), "writing compose.yaml");
    let up = ssh("cd /root/hello && docker compose up --no-color --exit-code-from hello");
    let said = format!("{}{}", stdout(&up), stderr(&up));
    assert_eq!(up.status.code(), Some(5), "docker compose up: {said}");
    assert!(
        stdout(&up).contains("hello_1  | hello from compose\n"),
        "docker compose up: {said}"
    );
    ok(
        ssh("cd /root/hello && docker compose down"),
        "docker compose down",
    );
    let left = ok(
        ssh(
            "docker ps -aq --filter label=com.docker.compose.project=hello; \
             docker network ls -q --filter name=hello_default",
        ),
        "after docker compose down",
    );
    assert_eq!(left, "", "docker compose down left a container or network");
}

/// Docker's data filesystem (the system disk's `docker/`, on
/// `/var/lib/docker`) filled, mostly with a preallocated file (the disk
/// is 16 GiB: writing it all would take long under TCG), then an image
/// is loaded: docker fails with its own
/// `no space left on device`, while dockerd, systemd, the agent and sshd
/// go on answering; with the file removed, the next container runs.
/// `ssh` goes through the agent, `real_ssh` through sshd.
fn a_full_docker_disk_fails_docker_not_the_guest(
    ssh: &dyn Fn(&str) -> std::process::Output,
    real_ssh: &dyn Fn(&str) -> std::process::Output,
) {
    // A 4 MiB layer, made on the work disk (/root).
    ok(
        ssh(r#"set -e
d=/root/big; mkdir -p "$d"; cd "$d"
head -c 4M /dev/zero >big; tar -cf layer.tar big; rm big
diff=$(sha256sum layer.tar | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff" >config.json
printf '[{"Config":"config.json","RepoTags":["big:1"],"Layers":["layer.tar"]}]' >manifest.json
tar -cf image.tar config.json manifest.json layer.tar; rm layer.tar"#),
        "making a 4 MiB image",
    );
    // Full for every writer: a preallocated file takes all but 64 MiB
    // (ext4 keeps up to 16 MiB for itself, which fallocate may not
    // take), then dd writes until the disk refuses.
    let left = ok(
        ssh(r#"set -e
free=$(( $(stat -f -c '%f * %S' /var/lib/docker) ))
fallocate -l $(( free - 64 * 1024 * 1024 )) /var/lib/docker/banger-filler
! dd if=/dev/zero of=/var/lib/docker/banger-filler-2 bs=1M 2>/dev/null
sync
stat -f -c '%a' /var/lib/docker
df --output=target /var/lib/docker | tail -1"#),
        "filling docker's filesystem",
    );
    assert_eq!(left, "0\n/var/lib/docker\n", "no block left to write");

    let load = ssh("docker load -i /root/big/image.tar");
    assert!(!load.status.success(), "docker load on a full disk");
    assert!(
        stderr(&load).contains("no space left on device"),
        "docker's own error: {}{}",
        stdout(&load),
        stderr(&load)
    );

    // The guest goes on: the agent, sshd, systemd and dockerd answer.
    let state =
        real_ssh("systemctl is-system-running; systemctl is-active docker.service; echo via sshd");
    let said = stdout(&state);
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        matches!(
            lines[..],
            ["running" | "degraded" | "starting", "active", "via sshd"]
        ),
        "ssh on a full disk: {said}{}",
        stderr(&state)
    );
    let images = ok(
        ssh("docker image ls --format '{{.Repository}}:{{.Tag}}'"),
        "docker image ls on a full disk",
    );
    assert!(
        images.contains("tiny:1") && !images.contains("big:1"),
        "{images}"
    );

    ok(
        ssh("rm /var/lib/docker/banger-filler* /root/big/image.tar"),
        "freeing the space",
    );
    let run = ok(
        ssh("docker run --rm tiny:1 /bin/dash -c 'echo room again'"),
        "docker run after freeing",
    );
    assert_eq!(run, "room again\n");
}

/// Answers every connection with `body`, once per connection, until the
/// test ends.
fn serve(body: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    port
}

#[test]
fn a_wrong_pin_or_contradicting_choices_record_no_image() {
    if !banger_testkit::running_as_root() {
        return banger_testkit::skip("builds need root here (no subordinate ids set up)");
    }
    if !banger_testkit::have_tools(&["curl"]) {
        return;
    }
    let home = TestHome::new();
    let init = banger_testkit::static_guest_binaries().init.clone();
    let build = |args: &[&str]| {
        home.banger(args)
            .env("BANGER_INIT_BIN", &init)
            .output()
            .unwrap()
    };
    let port = serve(b"not the pinned mise");
    let recipe = home.root().join("recipe.toml");
    let pin = "ab".repeat(32);
    fs::write(
        &recipe,
        format!("[mise]\nurl = \"http://127.0.0.1:{port}/mise\"\nsha256 = \"{pin}\"\n"),
    )
    .unwrap();
    let out = build(&[
        "image",
        "build",
        "--name",
        "pinned",
        "--from-config",
        recipe.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "mise from url:http://127.0.0.1:{port}/mise: SHA-256 is "
        )) && err.contains(&format!("the recipe pins {pin}")),
        "{err}"
    );
    let listed = ok(
        home.banger(&["image", "list", "--json"]).output().unwrap(),
        "image list",
    );
    assert_eq!(listed.trim(), "[]", "no image recorded");

    // --no-docker and a recipe (or --package) asking for Docker.
    fs::write(&recipe, "docker = true\n").unwrap();
    let out = build(&[
        "image",
        "build",
        "--no-docker",
        "--from-config",
        recipe.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("--no-docker contradicts recipe")
            && err.contains("(docker = true)"),
        "{err}"
    );
    let out = build(&["image", "build", "--no-docker", "--package", "docker.io"]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("--no-docker contradicts --package"),
        "{err}"
    );
    let listed = ok(
        home.banger(&["image", "list", "--json"]).output().unwrap(),
        "image list",
    );
    assert_eq!(listed.trim(), "[]", "no image recorded");
}

/// Starts dockerd by hand, as minimal mode needs (no systemd, so no
/// socket activation and no cgroup filesystem; no kernel modules in the
/// image, so no bridge or iptables), and waits until it answers.
const START_DOCKERD_MINIMAL: &str = r#"set -e
mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
dockerd --iptables=false --bridge=none >/var/log/dockerd.log 2>&1 &
for i in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
tail -5 /var/log/dockerd.log; exit 1"#;

/// Docker in an image booted in minimal mode (an OCI image: banger-init
/// stays PID 1, no systemd): Debian's `docker.io` in a bookworm tree, plus
/// a layer with an empty `/var/lib/docker` (as `RUN mkdir` would add),
/// pushed to a registry on loopback and pulled. banger-init bind-mounts
/// the system disk's `docker/` there as in the default image; dockerd as
/// Debian configures it cannot start (no iptables without the kernel's
/// modules), while `dockerd --iptables=false --bridge=none`, started from
/// one command, serves the next: overlay2 on ext4, `docker load`, and
/// `docker run` with its output and status. docs/debian-image.md says
/// what does not work.
#[test]
fn dockerd_started_by_hand_runs_containers_in_a_minimal_mode_image() {
    let Some(home) = home_with_default_image(
        &["docker-registry", "skopeo", "umoci", "patchelf"],
        |home| {
            // banger's guest tools for the pull, from the test cache.
            let tools = banger_testkit::test_cache().join("guest-tools");
            fs::create_dir_all(&tools).unwrap();
            std::os::unix::fs::symlink(&tools, home.root().join("cache/guest-tools")).unwrap();
        },
    ) else {
        return;
    };
    let Some(rootfs_tar) = banger_testkit::debian_docker_tar() else {
        return;
    };
    let registry = Registry::start();
    let layout = Layout::new();
    layout.create("base");
    layout.raw_layer_file("base", "base", &rootfs_tar);
    let mkdir = layout.dir.path().join("docker-dir.tar");
    let mut tar = tar::Builder::new(fs::File::create(&mkdir).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o710);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(0);
    tar.append_data(&mut header, "var/lib/docker/", std::io::empty())
        .unwrap();
    tar.into_inner().unwrap();
    layout.raw_layer_file("base", "docker", &mkdir);
    layout.config(
        "docker",
        &[
            "--config.env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ],
    );
    layout.push("docker", &registry, "test/debian");
    drop(layout);
    let reference = format!("{}/test/debian:docker", registry.host());
    let pulled = home
        .banger(&["image", "pull", &reference, "--name", "deb-docker"])
        .env(
            "BANGER_INIT_BIN",
            &banger_testkit::static_guest_binaries().init,
        )
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap();
    ok(pulled, "image pull");
    drop(registry);
    home.banger(&["daemon", "stop"]).assert().success();

    let Some(ns) = Netns::new("banger-dmin") else {
        return;
    };
    let b = |args: &[&str]| home.banger_in(&ns, args, &[]);
    let ssh = |script: &str| b(&["vm", "ssh", "mini", "--", "sh", "-c", script]);
    ok(
        b(&[
            "vm",
            "create",
            "--image",
            "deb-docker",
            "--name",
            "mini",
            "--disk-size",
            "2G",
        ]),
        "vm create",
    );
    let logs = stdout(&b(&["vm", "logs", "mini"]));
    assert!(
        logs.contains("docker data on the system disk); starting banger's minimal init"),
        "{logs}"
    );
    let mounted = ok(
        ssh("cat /proc/1/comm; findmnt -n -o FSTYPE /var/lib/docker"),
        "minimal mode",
    );
    assert_eq!(mounted, "init\next4\n");

    // Debian's defaults: dockerd stops at iptables (nf_tables is a module
    // of banger's kernel, and the image has none of its modules).
    let plain = ok(
        ssh(
            "mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
             timeout 120 dockerd >/var/log/dockerd-plain.log 2>&1; echo $?
             grep -o 'failed to start daemon.*' /var/log/dockerd-plain.log",
        ),
        "dockerd with Debian's defaults",
    );
    assert!(
        plain.starts_with("1\n") && plain.contains("failed to create NAT chain DOCKER"),
        "{plain}"
    );

    ok(ssh(START_DOCKERD_MINIMAL), "starting dockerd by hand");
    // The command that started it has ended; dockerd serves the next one.
    let info = ok(
        ssh("docker info --format '{{.Driver}} {{.CgroupVersion}}'"),
        "docker info",
    );
    assert_eq!(info, "overlay2 2\n");
    ok(ssh(BUILD_TINY_IMAGE), "building and loading a tiny image");
    let run = ssh("docker run --rm tiny:1 /bin/dash -c 'echo hello from minimal; exit 4'");
    assert_eq!(run.status.code(), Some(4), "stderr: {}", stderr(&run));
    assert_eq!(stdout(&run), "hello from minimal\n");

    ok(b(&["vm", "delete", "--force", "mini"]), "vm delete");
}
