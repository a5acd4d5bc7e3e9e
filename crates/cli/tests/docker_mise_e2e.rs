//! Docker and mise in the default image, end to end under QEMU/TCG, with
//! `bangerd` in a network namespace this test creates: one VM made by
//! `vm run ./repo` serves every in-guest check (docker socket-activated,
//! its data on ext4 with overlay2, an image built here and loaded with
//! `docker load`, mise, the workspace's `mise install`); then a
//! `--no-docker` build is compared with the default one. The recipe's
//! bad inputs (a wrong pin, contradicting choices) are checked apart,
//! without a build.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_model::ImageRecord;
use common::*;

const VM: &str = "dock";

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

    ok(b(&["vm", "delete", "--force", VM]), "vm delete");
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
