//! Workspace disks end to end, under QEMU/TCG (docs/workspace.md): `vm
//! run PATH` writes the selection into an ext4 disk on the host, and the
//! guest sees it at `/root/NAME`, the same files, modes, links and
//! contents, uncommitted edits included, whether the VM booted cold or
//! resumed a template (at the template's disk size or grown). The files
//! persist across stop and start; a workspace disk that cannot be mounted
//! fails the boot with banger-init's line; a workspace larger than the
//! disk is refused before any VM is made. `bangerd` runs inside a network
//! namespace this test creates.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use banger_model::VmRecord;
use common::*;

/// This test's daemon makes and uses templates.
const TEMPLATES: &[(&str, &str)] = &[("BANGER_VM_TEMPLATES", "1")];
const SHAPE: &[&str] = &["--vcpu", "2", "--memory", "2G"];

/// What the guest lists of `/root/fixture`: every entry's kind, mode,
/// path and link target, then every file's checksum (`.git` left out).
const MANIFEST: &str = "cd /root/fixture && \
    find . -mindepth 1 -path ./.git -prune -o -printf '%y %m %p -> %l\\n' | LC_ALL=C sort && \
    find . -path ./.git -prune -o -type f -exec sha256sum {} + | LC_ALL=C sort -k2 && \
    echo mount=$(findmnt -n -o FSTYPE,SOURCE --target /root/fixture | tr -s ' ' ' ')";

/// One file of the fixture: path, mode, contents.
type Spec = (&'static str, u32, Vec<u8>);

fn files() -> Vec<Spec> {
    // Pseudo-random bytes (a fixed xorshift), so the checksum means
    // something.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    vec![
        ("README", 0o644, b"edited, not committed\n".to_vec()),
        ("run.sh", 0o755, b"#!/bin/sh\necho hi\n".to_vec()),
        ("src/deep/nested/file.txt", 0o644, b"deep\n".to_vec()),
        ("name with spaces.txt", 0o644, b"spaces\n".to_vec()),
        ("\u{fc}n\u{ef}code.txt", 0o600, b"unicode\n".to_vec()),
        ("empty", 0o644, Vec::new()),
        ("big.bin", 0o644, big),
        (".gitignore", 0o644, b"*.log\n".to_vec()),
    ]
}

const LINKS: &[(&str, &str)] = &[("link", "README"), ("srclink", "src/deep")];

/// The fixture repository: [`files`] and [`LINKS`] tracked (README
/// edited after its commit), a `feature` branch, an untracked and an
/// ignored file that are never sent.
fn fixture_repo(root: &Path) -> std::path::PathBuf {
    let repo = root.join("fixture");
    fs::create_dir_all(&repo).unwrap();
    git_in(&repo, &["init", "-q", "-b", "main"]);
    for (path, mode, data) in files() {
        let full = repo.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(
            &full,
            if path == "README" {
                &b"committed\n"[..]
            } else {
                &data
            },
        )
        .unwrap();
        fs::set_permissions(&full, fs::Permissions::from_mode(mode)).unwrap();
    }
    for (link, target) in LINKS {
        std::os::unix::fs::symlink(target, repo.join(link)).unwrap();
    }
    git_in(&repo, &["add", "-A"]);
    git_in(&repo, &["commit", "-q", "-m", "fixture"]);
    git_in(&repo, &["switch", "-q", "-c", "feature"]);
    fs::write(repo.join("feature.txt"), "on feature\n").unwrap();
    git_in(&repo, &["add", "feature.txt"]);
    git_in(&repo, &["commit", "-q", "-m", "feature work"]);
    git_in(&repo, &["switch", "-q", "main"]);
    fs::write(repo.join("README"), "edited, not committed\n").unwrap();
    fs::write(repo.join("notes.txt"), "untracked\n").unwrap();
    fs::write(repo.join("build.log"), "ignored\n").unwrap();
    repo
}

/// What [`MANIFEST`] must print for the fixture, computed here from its
/// specification (not from the guest or the host's tree).
fn expected_manifest() -> String {
    use sha2::Digest;
    let mut entries: Vec<String> = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    for (path, mode, _) in files() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
        entries.push(format!("f {mode:o} ./{path} -> "));
    }
    for d in dirs {
        entries.push(format!("d 755 ./{} -> ", d.display()));
    }
    for (link, target) in LINKS {
        entries.push(format!("l 777 ./{link} -> {target}"));
    }
    entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut sums: Vec<(String, String)> = files()
        .into_iter()
        .map(|(path, _, data)| {
            let sum: String = sha2::Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (format!("./{path}"), sum)
        })
        .collect();
    sums.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = entries.join("\n");
    out.push('\n');
    for (path, sum) in sums {
        out.push_str(&format!("{sum}  {path}\n"));
    }
    out
}

fn manifest_part(seen: &str) -> &str {
    seen.split("mount=").next().unwrap_or_default()
}

#[test]
fn the_host_built_workspace_is_the_selection_cold_or_resumed() {
    let Some(home) = home_with_default_image(&["git"], |home| {
        // Templates are made at the default disk size: 2G here, so that
        // one VM below grows its workspace disk and another does not.
        home.write_config("[vm_defaults]\ndisk_size = \"2G\"\n");
    }) else {
        return;
    };
    let Some(ns) = Netns::new("banger-ws") else {
        return;
    };
    let b = |args: &[&str]| home.banger_in(&ns, args, TEMPLATES);
    let repo = fixture_repo(home.root());
    let repo_arg = repo.to_str().unwrap();
    let want = expected_manifest();

    // Too large for the disk: refused before a VM is made, with the sizes.
    let huge = home.root().join("huge");
    fs::create_dir_all(&huge).unwrap();
    fs::File::create(huge.join("sparse.img"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let out = b(&["vm", "run", huge.to_str().unwrap(), "--rm", "--", "true"]);
    assert!(!out.status.success(), "a 3 GiB workspace on a 2G disk ran");
    let err = stderr(&out);
    assert!(
        err.contains("3.0 GiB") && err.contains("--disk-size 4G"),
        "{err}"
    );
    assert!(vm_list(&home, &ns).is_empty(), "a VM was made");

    // Cold: the template does not exist yet.
    let mut run = vec!["vm", "run", repo_arg, "--name", "ws-cold", "--timings"];
    run.extend_from_slice(SHAPE);
    run.extend(["--", "sh", "-c", MANIFEST]);
    let out = b(&run);
    let seen = ok(out, "vm run (cold)");
    assert_eq!(manifest_part(&seen), want);
    assert!(seen.contains("mount=ext4 /dev/vd"), "{seen}");
    let show = ok(b(&["vm", "show", "ws-cold"]), "vm show");
    assert!(
        show.contains("workspace: /root/fixture on its own disk (8 files"),
        "{show}"
    );

    // Written in the workspace, kept across stop and start.
    ok(
        b(&[
            "vm",
            "ssh",
            "ws-cold",
            "--",
            "sh",
            "-c",
            "echo kept > /root/fixture/new && sync",
        ]),
        "write",
    );
    ok(b(&["vm", "stop", "ws-cold"]), "stop");
    ok(b(&["vm", "start", "ws-cold"]), "start");
    let kept = ok(
        b(&[
            "vm",
            "ssh",
            "ws-cold",
            "--",
            "cat",
            "/root/fixture/new",
            "/root/fixture/README",
        ]),
        "after restart",
    );
    assert_eq!(kept, "kept\nedited, not committed\n");

    // A workspace disk that cannot be mounted: the boot fails with
    // banger-init's line, and the VM is left stopped, not half-running.
    ok(b(&["vm", "stop", "ws-cold"]), "stop again");
    let disk = home.state().join("vms/ws-cold/workspace.ext4");
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 4096], 0).unwrap();
    drop(f);
    let out = b(&["vm", "start", "ws-cold"]);
    assert!(!out.status.success(), "a VM booted without its workspace");
    let err = stderr(&out);
    assert!(
        err.contains("banger-init") && err.contains("workspace"),
        "{err}"
    );
    let vm: VmRecord =
        serde_json::from_str(&ok(b(&["vm", "show", "ws-cold", "--json"]), "show")).unwrap();
    assert!(
        vm.runtime.is_none() && vm.state != banger_model::VmState::Running,
        "{vm:?}"
    );
    ok(b(&["vm", "delete", "--force", "ws-cold"]), "delete");

    // A template, then two VMs resume it: one at its disk size, one grown.
    let mut warm = vec!["image", "warm", "debian-bookworm"];
    warm.extend_from_slice(SHAPE);
    ok(b(&warm), "image warm");
    for (name, disk, bytes) in [
        ("ws-a", "2G", 1_900_000_000u64..2_200_000_000),
        ("ws-b", "3G", 2_900_000_000..3_300_000_000),
    ] {
        let mut run = vec![
            "vm",
            "run",
            repo_arg,
            "--rm",
            "--name",
            name,
            "--disk-size",
            disk,
            "--timings",
        ];
        run.extend_from_slice(SHAPE);
        let script = format!("{MANIFEST}; df -B1 --output=size /root/fixture | tail -1");
        run.extend(["--", "sh", "-c", &script]);
        let out = b(&run);
        let err = stderr(&out);
        let seen = ok(out, name);
        assert!(err.contains("resumed from template"), "{name}: {err}");
        assert_eq!(manifest_part(&seen), want, "{name}");
        assert!(seen.contains("mount=ext4 /dev/vd"), "{name}: {seen}");
        // As large as the disk (ext4's own metadata takes a little).
        let df: u64 = seen
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap();
        assert!(
            bytes.contains(&df),
            "{name}: the workspace filesystem is {df} bytes, not about {disk}"
        );
    }

    // --branch: still a real repository, checked out by the guest's git.
    let out = b(&[
        "vm",
        "run",
        repo_arg,
        "--rm",
        "--branch",
        "feature",
        "--",
        "sh",
        "-c",
        "git branch --show-current && git log --format=%s && cat feature.txt",
    ]);
    assert_eq!(
        ok(out, "vm run --branch"),
        "feature\nfeature work\nfixture\non feature\n"
    );
    assert!(vm_list(&home, &ns).is_empty(), "{:?}", vm_list(&home, &ns));
    assert!(
        !home.state().join("workspaces").exists()
            || fs::read_dir(home.state().join("workspaces"))
                .unwrap()
                .count()
                == 0,
        "a staged workspace was left"
    );
}
