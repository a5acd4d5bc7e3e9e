//! Workspace selection and its archive, against fixture repositories made
//! with the real `git` in temporary directories.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_guest::workspace::{
    ARCHIVE_MTIME, EntryKind, RevisionRequest, SelectOptions, Selection, SelectionMode,
    WorkspaceError, check_out_here, checkout_command, dry_run_listing, select, select_revision,
    write_bundle, write_tar,
};
use tempfile::TempDir;

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// True (after printing why) when git is missing.
fn no_git() -> bool {
    if have("git") {
        return false;
    }
    banger_testkit::skip("git is not installed (apt install git)");
    true
}

/// Runs git in `dir` with no user or system configuration.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=banger test",
            "-c",
            "user.email=test@banger.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, text: &str, mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn paths(sel: &Selection) -> Vec<String> {
    sel.entries
        .iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect()
}

fn kind<'a>(sel: &'a Selection, path: &str) -> &'a EntryKind {
    &sel.entries
        .iter()
        .find(|e| e.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} not selected: {:?}", paths(sel)))
        .kind
}

fn warned(sel: &Selection, needle: &str) -> bool {
    sel.warnings.iter().any(|w| w.contains(needle))
}

const UNTRACKED: SelectOptions = SelectOptions {
    include_untracked: true,
};

/// A repository `repo` beside a directory `outside`:
/// - tracked: `.gitignore`, `README.md` (0644), `run.sh` (0755),
///   `src/lib.rs` (edited after the commit), `link_in` -> README.md,
///   `link_out` -> ../outside/secret, `sub` (an embedded repository, added
///   as a gitlink), `gone.txt` (deleted in the working tree);
/// - untracked: `notes.txt`, `vendor/nested` (a repository of its own);
/// - ignored: `debug.log`, `build/out.bin`.
struct Fixture {
    _dir: TempDir,
    repo: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let dir = TempDir::new().unwrap();
    let repo = dir.path().join("my repo");
    let outside = dir.path().join("outside");
    write(&outside.join("secret"), "host secret\n", 0o600);
    fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo.join(".gitignore"), "*.log\nbuild/\n", 0o644);
    write(&repo.join("README.md"), "# fixture\n", 0o644);
    write(&repo.join("run.sh"), "#!/bin/sh\necho hi\n", 0o755);
    write(&repo.join("src/lib.rs"), "// committed\n", 0o644);
    write(&repo.join("gone.txt"), "soon deleted\n", 0o644);
    symlink("README.md", repo.join("link_in")).unwrap();
    symlink("../outside/secret", repo.join("link_out")).unwrap();
    let sub = repo.join("sub");
    fs::create_dir_all(&sub).unwrap();
    git(&sub, &["init", "-q"]);
    write(&sub.join("inner.txt"), "inner\n", 0o644);
    git(&sub, &["add", "."]);
    git(&sub, &["commit", "-qm", "inner"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "fixture"]);

    write(
        &repo.join("src/lib.rs"),
        "// edited, not committed\n",
        0o644,
    );
    fs::remove_file(repo.join("gone.txt")).unwrap();
    write(&repo.join("notes.txt"), "untracked\n", 0o644);
    write(&repo.join("debug.log"), "ignored\n", 0o644);
    write(&repo.join("build/out.bin"), "ignored\n", 0o644);
    let nested = repo.join("vendor/nested");
    fs::create_dir_all(&nested).unwrap();
    git(&nested, &["init", "-q"]);
    write(&nested.join("n.txt"), "nested\n", 0o644);
    Fixture {
        _dir: dir,
        repo,
        outside,
    }
}

#[test]
fn git_mode_sends_tracked_files_as_the_working_tree_holds_them() {
    if no_git() {
        return;
    }
    let fx = fixture();
    let sel = select(&fx.repo, &SelectOptions::default()).unwrap();
    assert_eq!(sel.mode, SelectionMode::Git);
    assert_eq!(sel.repo_name, "my-repo");
    assert_eq!(
        paths(&sel),
        [
            ".gitignore",
            "README.md",
            "link_in",
            "link_out",
            "run.sh",
            "src/lib.rs"
        ]
    );
    let script = "#!/bin/sh\necho hi\n".len() as u64;
    assert_eq!(
        kind(&sel, "run.sh"),
        &EntryKind::File {
            mode: 0o755,
            size: script
        }
    );
    assert_eq!(
        kind(&sel, "README.md"),
        &EntryKind::File {
            mode: 0o644,
            size: 10
        }
    );
    let edited = "// edited, not committed\n".len() as u64;
    assert_eq!(
        kind(&sel, "src/lib.rs"),
        &EntryKind::File {
            mode: 0o644,
            size: edited
        }
    );
    assert_eq!(
        kind(&sel, "link_out"),
        &EntryKind::Symlink {
            target: "../outside/secret".into()
        }
    );
    assert_eq!(sel.total_bytes, 13 + 10 + script + edited);
    assert!(warned(&sel, "submodule sub"), "{:?}", sel.warnings);
    assert!(
        warned(&sel, "link_out points outside"),
        "{:?}",
        sel.warnings
    );
    assert!(!warned(&sel, "link_in"), "{:?}", sel.warnings);
    assert_eq!(sel.warnings.len(), 2, "{:?}", sel.warnings);
}

#[test]
fn untracked_files_come_only_when_asked_and_ignored_ones_never() {
    if no_git() {
        return;
    }
    let fx = fixture();
    let sel = select(&fx.repo, &UNTRACKED).unwrap();
    let got = paths(&sel);
    assert!(got.contains(&"notes.txt".to_string()), "{got:?}");
    for never in ["debug.log", "build/out.bin", "gone.txt", "sub/inner.txt"] {
        assert!(
            !got.contains(&never.to_string()),
            "{never} selected: {got:?}"
        );
    }
    assert!(!got.iter().any(|p| p.starts_with("vendor")), "{got:?}");
    assert!(
        warned(&sel, "nested repository vendor/nested"),
        "{:?}",
        sel.warnings
    );
}

#[test]
fn a_subdirectory_selects_only_what_lies_under_it() {
    if no_git() {
        return;
    }
    let fx = fixture();
    write(&fx.repo.join("src/new.rs"), "untracked\n", 0o644);
    let sel = select(&fx.repo.join("src"), &SelectOptions::default()).unwrap();
    assert_eq!(sel.mode, SelectionMode::Git);
    assert_eq!(sel.repo_name, "src");
    assert_eq!(paths(&sel), ["lib.rs"]);
    let sel = select(&fx.repo.join("src"), &UNTRACKED).unwrap();
    assert_eq!(paths(&sel), ["lib.rs", "new.rs"]);
}

#[test]
fn a_tracked_path_through_a_symlinked_directory_is_refused() {
    if no_git() {
        return;
    }
    let fx = fixture();
    write(&fx.repo.join("conf/app.toml"), "x = 1\n", 0o644);
    git(&fx.repo, &["add", "conf/app.toml"]);
    git(&fx.repo, &["commit", "-qm", "conf"]);
    fs::remove_dir_all(fx.repo.join("conf")).unwrap();
    write(&fx.outside.join("app.toml"), "stolen\n", 0o644);
    symlink(&fx.outside, fx.repo.join("conf")).unwrap();
    let err = select(&fx.repo, &SelectOptions::default()).unwrap_err();
    match &err {
        WorkspaceError::ThroughSymlink { path, link } => {
            assert_eq!(path, Path::new("conf/app.toml"));
            assert_eq!(link, Path::new("conf"));
        }
        other => panic!("expected ThroughSymlink, got {other}"),
    }
    assert!(err.to_string().contains("conf/app.toml"), "{err}");
}

#[test]
fn a_file_name_with_a_newline_is_refused_by_name() {
    if no_git() {
        return;
    }
    let fx = fixture();
    write(&fx.repo.join("docs/bad\nname.md"), "x\n", 0o644);
    git(&fx.repo, &["add", "docs"]);
    let err = select(&fx.repo, &SelectOptions::default()).unwrap_err();
    assert!(
        matches!(err, WorkspaceError::UnrepresentableName { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(r#""docs/bad\nname.md""#), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn a_plain_directory_is_sent_as_is_minus_its_gitignore() {
    if no_git() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("plain");
    write(&root.join(".gitignore"), "*.log\nsecret/\n", 0o644);
    write(&root.join("a.txt"), "a\n", 0o644);
    write(&root.join("tool"), "#!/bin/sh\n", 0o750);
    write(&root.join(".hidden"), "h\n", 0o644);
    write(&root.join("b.log"), "ignored\n", 0o644);
    write(&root.join("secret/key"), "ignored\n", 0o600);
    write(&root.join("sub/.gitignore"), "local.txt\n", 0o644);
    write(&root.join("sub/local.txt"), "ignored\n", 0o644);
    write(&root.join("sub/keep.txt"), "kept\n", 0o644);
    symlink("/etc", root.join("etc")).unwrap();
    let probe = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .unwrap();
    if probe.status.success() {
        banger_testkit::skip("the temporary directory is inside a git repository");
        return;
    }
    let sel = select(&root, &UNTRACKED).unwrap();
    assert_eq!(sel.mode, SelectionMode::Plain);
    assert_eq!(
        paths(&sel),
        [
            ".gitignore",
            ".hidden",
            "a.txt",
            "etc",
            "sub/.gitignore",
            "sub/keep.txt",
            "tool"
        ]
    );
    assert_eq!(
        kind(&sel, "tool"),
        &EntryKind::File {
            mode: 0o750,
            size: 10
        }
    );
    assert_eq!(
        kind(&sel, "etc"),
        &EntryKind::Symlink {
            target: "/etc".into()
        }
    );
    assert!(warned(&sel, "etc points outside"), "{:?}", sel.warnings);
}

#[test]
fn a_path_that_is_not_a_directory_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope");
    let err = select(&missing, &SelectOptions::default()).unwrap_err();
    assert!(matches!(err, WorkspaceError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let file = dir.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = select(&file, &SelectOptions::default()).unwrap_err();
    assert!(matches!(err, WorkspaceError::NotADirectory { .. }), "{err}");
}

/// What an archive holds, by name: (type, mode, uid, gid, mtime, link
/// target, content).
type Member = (tar::EntryType, u32, u64, u64, u64, Option<PathBuf>, Vec<u8>);

fn members(archive: &[u8]) -> BTreeMap<String, Member> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let h = entry.header().clone();
        let link = entry.link_name().unwrap().map(|l| l.into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.insert(
            name,
            (
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                link,
                data,
            ),
        );
    }
    out
}

#[test]
fn the_archive_round_trips_names_modes_and_links() {
    if no_git() {
        return;
    }
    let fx = fixture();
    let long = format!("{}/{}.txt", "d".repeat(90), "f".repeat(90));
    write(&fx.repo.join(&long), "long\n", 0o644);
    git(&fx.repo, &["add", &long]);
    let sel = select(&fx.repo, &SelectOptions::default()).unwrap();
    let mut archive = Vec::new();
    write_tar(&sel, &mut archive).unwrap();
    let got = members(&archive);

    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    let long_dir = format!("my-repo/{}", "d".repeat(90));
    let long_file = format!("my-repo/{long}");
    let mut want = vec![
        "my-repo",
        "my-repo/.gitignore",
        "my-repo/README.md",
        "my-repo/link_in",
        "my-repo/link_out",
        "my-repo/run.sh",
        "my-repo/src",
        "my-repo/src/lib.rs",
        &long_dir,
        &long_file,
    ];
    want.sort();
    assert_eq!(names, want);

    for (name, m) in &got {
        assert_eq!((m.2, m.3), (0, 0), "{name} not owned by root");
        assert_eq!(m.4, ARCHIVE_MTIME, "{name} mtime");
    }
    let run = &got["my-repo/run.sh"];
    assert_eq!((run.0, run.1 & 0o7777), (tar::EntryType::Regular, 0o755));
    assert_eq!(run.6, b"#!/bin/sh\necho hi\n");
    assert_eq!(got["my-repo/README.md"].1 & 0o7777, 0o644);
    assert_eq!(got["my-repo/src/lib.rs"].6, b"// edited, not committed\n");
    assert_eq!(got["my-repo/src"].0, tar::EntryType::Directory);
    assert_eq!(got["my-repo/src"].1 & 0o7777, 0o755);
    let out = &got["my-repo/link_out"];
    assert_eq!(out.0, tar::EntryType::Symlink);
    assert_eq!(out.5.as_deref(), Some(Path::new("../outside/secret")));
    assert!(out.6.is_empty(), "the link's target was followed");
    assert_eq!(
        got["my-repo/link_in"].5.as_deref(),
        Some(Path::new("README.md"))
    );

    // The same tree gives the same bytes.
    let mut again = Vec::new();
    write_tar(&sel, &mut again).unwrap();
    assert!(archive == again, "the archive is not deterministic");
}

#[test]
fn gnu_tar_unpacks_the_archive_as_the_guest_will() {
    if no_git() {
        return;
    }
    if !have("tar") {
        banger_testkit::skip("tar is not installed");
        return;
    }
    let fx = fixture();
    let sel = select(&fx.repo, &SelectOptions::default()).unwrap();
    let dest = TempDir::new().unwrap();
    let archive = dest.path().join("ws.tar");
    write_tar(&sel, fs::File::create(&archive).unwrap()).unwrap();
    let into = dest.path().join("root");
    fs::create_dir(&into).unwrap();
    let out = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&into)
        .arg("--no-same-owner")
        .arg("-f")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = into.join("my-repo");
    let mode = |p: &str| {
        fs::symlink_metadata(repo.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(mode("README.md"), 0o644);
    assert_eq!(
        fs::read_to_string(repo.join("src/lib.rs")).unwrap(),
        "// edited, not committed\n"
    );
    assert_eq!(
        fs::read_link(repo.join("link_out")).unwrap(),
        Path::new("../outside/secret")
    );
    assert!(
        !into.join("outside").exists(),
        "something was written outside the repo"
    );
}

#[test]
fn a_file_replaced_by_a_link_after_selection_is_not_followed() {
    if no_git() {
        return;
    }
    let fx = fixture();
    let sel = select(&fx.repo, &SelectOptions::default()).unwrap();
    fs::remove_file(fx.repo.join("README.md")).unwrap();
    symlink(fx.outside.join("secret"), fx.repo.join("README.md")).unwrap();
    let err = write_tar(&sel, Vec::new()).unwrap_err();
    assert!(matches!(err, WorkspaceError::Changed { .. }), "{err}");
    assert!(err.to_string().contains("README.md"), "{err}");
}

#[test]
fn the_dry_run_lists_what_the_archive_holds() {
    if no_git() {
        return;
    }
    let fx = fixture();
    let sel = select(&fx.repo, &SelectOptions::default()).unwrap();
    let listing = dry_run_listing(&sel);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), sel.entries.len() + 1);
    assert_eq!(&lines[..lines.len() - 1], paths(&sel));
    let total = lines[lines.len() - 1];
    assert!(total.starts_with("total: 4 files, 2 links"), "{total}");
    assert!(
        total.contains(&format!("({} bytes)", sel.total_bytes)),
        "{total}"
    );
    assert!(total.ends_with("git mode"), "{total}");
}

#[test]
fn an_untracked_name_that_is_not_utf8_is_refused_only_when_sent() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    if no_git() {
        return;
    }
    let fx = fixture();
    let bad = fx.repo.join(OsStr::from_bytes(b"caf\xe9.txt"));
    if fs::write(&bad, "latin-1\n").is_err() {
        banger_testkit::skip("this filesystem refuses names that are not UTF-8");
        return;
    }
    // Untracked and not asked for: not looked at, no error.
    select(&fx.repo, &SelectOptions::default()).unwrap();
    let err = select(&fx.repo, &UNTRACKED).unwrap_err();
    assert!(
        matches!(err, WorkspaceError::UnrepresentableName { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(r#""caf\xE9.txt""#), "{err}");
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
}

#[test]
fn a_tracked_file_now_a_directory_and_an_empty_selection_are_reported() {
    if no_git() {
        return;
    }
    let fx = fixture();
    fs::remove_file(fx.repo.join("README.md")).unwrap();
    write(&fx.repo.join("README.md/inside"), "x\n", 0o644);
    let sel = select(&fx.repo, &SelectOptions::default()).unwrap();
    assert!(!paths(&sel).iter().any(|p| p.starts_with("README.md")));
    assert!(
        warned(&sel, "tracked file README.md is a directory"),
        "{:?}",
        sel.warnings
    );

    write(&fx.repo.join("empty/untracked.txt"), "x\n", 0o644);
    let sel = select(&fx.repo.join("empty"), &SelectOptions::default()).unwrap();
    assert!(sel.entries.is_empty());
    assert!(warned(&sel, "no files selected"), "{:?}", sel.warnings);
    let mut archive = Vec::new();
    write_tar(&sel, &mut archive).unwrap();
    assert_eq!(members(&archive).keys().collect::<Vec<_>>(), ["empty"]);
}

/// A writer that fails after `left` bytes, like an ssh pipe whose far end
/// went away.
struct Failing {
    left: usize,
}

impl std::io::Write for Failing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_broken_output_is_an_error_not_a_panic() {
    if no_git() {
        return;
    }
    let fx = fixture();
    let sel = select(&fx.repo, &SelectOptions::default()).unwrap();
    let err = write_tar(&sel, Failing { left: 1500 }).unwrap_err();
    assert!(matches!(err, WorkspaceError::Io { .. }), "{err}");
}

/// Commits on a branch `feature` of the fixture: `feature.txt` added,
/// `README.md` changed; `main` stays where the fixture left it.
fn with_feature_branch(fx: &Fixture) {
    git(&fx.repo, &["switch", "-q", "-c", "feature"]);
    write(&fx.repo.join("feature.txt"), "feature\n", 0o644);
    write(&fx.repo.join("README.md"), "# on feature\n", 0o644);
    git(&fx.repo, &["add", "feature.txt", "README.md"]);
    git(&fx.repo, &["commit", "-qm", "feature work"]);
    git(&fx.repo, &["switch", "-q", "main"]);
}

fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn revision(branch: Option<&str>, from: Option<&str>) -> RevisionRequest {
    RevisionRequest {
        branch: branch.map(String::from),
        from: from.map(String::from),
    }
}

/// Runs the guest's half of a checkout here, with `top` in place of
/// `/root/<name>`, fed the bundle the host half writes.
fn check_out_locally(sel: &Selection, top: &Path) -> std::process::Output {
    let history = sel.history.as_ref().unwrap();
    let mut words = checkout_command(sel, history);
    words[4] = top.to_string_lossy().into_owned();
    words[5] = top.with_extension("bundle").to_string_lossy().into_owned();
    let mut bundle = Vec::new();
    write_bundle(&sel.root, history, &mut bundle).unwrap();
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&bundle).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_branch_is_checked_out_with_its_history_not_the_working_tree() {
    if no_git() {
        return;
    }
    let fx = fixture();
    with_feature_branch(&fx);
    let sel = select_revision(&fx.repo, &revision(Some("feature"), None)).unwrap();
    assert_eq!(sel.mode, SelectionMode::Revision);
    let history = sel.history.clone().unwrap();
    assert_eq!(history.commit, git_out(&fx.repo, &["rev-parse", "feature"]));
    assert_eq!(history.branch.as_deref(), Some("feature"));
    assert_eq!(history.commits, 2);
    // The commit's tree, not the working tree: no untracked or ignored
    // files, no uncommitted edits, the deleted file still there.
    let listed = paths(&sel);
    assert!(listed.contains(&"feature.txt".to_string()), "{listed:?}");
    assert!(listed.contains(&"gone.txt".to_string()), "{listed:?}");
    assert!(!listed.contains(&"notes.txt".to_string()), "{listed:?}");
    assert_eq!(
        kind(&sel, "run.sh"),
        &EntryKind::File {
            mode: 0o755,
            size: 18
        }
    );
    assert_eq!(
        kind(&sel, "link_out"),
        &EntryKind::Symlink {
            target: "../outside/secret".into()
        }
    );
    assert!(warned(&sel, "link_out"), "{:?}", sel.warnings);
    assert!(warned(&sel, "submodule sub"), "{:?}", sel.warnings);
    assert!(dry_run_listing(&sel).contains("checkout of branch feature"));

    let scratch = TempDir::new().unwrap();
    let top = scratch.path().join("guest");
    let out = check_out_locally(&sel, &top);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git_out(&top, &["branch", "--show-current"]), "feature");
    assert_eq!(
        git_out(&top, &["log", "--format=%s"]),
        "feature work\nfixture"
    );
    assert_eq!(git_out(&top, &["status", "--porcelain"]), "");
    assert_eq!(
        fs::read_to_string(top.join("README.md")).unwrap(),
        "# on feature\n"
    );
    assert!(
        !top.with_extension("bundle").exists(),
        "the bundle is removed"
    );
    let mode = fs::metadata(top.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "run.sh stays executable");

    // A second checkout into the same place is refused, and leaves it be.
    let again = check_out_locally(&sel, &top);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(top.join("feature.txt").is_file());
}

#[test]
fn from_checks_out_any_commit_detached_or_as_a_new_branch() {
    if no_git() {
        return;
    }
    let fx = fixture();
    with_feature_branch(&fx);
    let first = git_out(&fx.repo, &["rev-parse", "feature~1"]);
    let sel = select_revision(&fx.repo, &revision(None, Some(&first[..10]))).unwrap();
    assert_eq!(sel.history.as_ref().unwrap().commit, first);
    assert!(!paths(&sel).contains(&"feature.txt".to_string()));
    let scratch = TempDir::new().unwrap();
    let detached = scratch.path().join("detached");
    let out = check_out_locally(&sel, &detached);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git_out(&detached, &["rev-parse", "HEAD"]), first);
    assert_eq!(git_out(&detached, &["branch", "--show-current"]), "");

    let sel = select_revision(&fx.repo, &revision(Some("work"), Some("feature"))).unwrap();
    let branched = scratch.path().join("branched");
    let out = check_out_locally(&sel, &branched);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git_out(&branched, &["branch", "--show-current"]), "work");
    assert!(branched.join("feature.txt").is_file());
}

#[test]
fn a_subdirectory_gets_the_whole_repository_and_runs_inside_it() {
    if no_git() {
        return;
    }
    let fx = fixture();
    let sel = select_revision(&fx.repo.join("src"), &revision(Some("main"), None)).unwrap();
    assert_eq!(sel.root, fs::canonicalize(&fx.repo).unwrap());
    assert_eq!(sel.guest_root(), "/root/my-repo");
    assert_eq!(sel.guest_workdir(), "/root/my-repo/src");
    assert!(paths(&sel).contains(&"README.md".to_string()));
}

#[test]
fn bad_revisions_are_refused_with_what_to_do() {
    if no_git() {
        return;
    }
    let fx = fixture();
    let err = |b: Option<&str>, f: Option<&str>| {
        select_revision(&fx.repo, &revision(b, f))
            .unwrap_err()
            .to_string()
    };
    let missing = err(Some("nope"), None);
    assert!(
        missing.contains("no local branch nope") && missing.contains("--from origin/nope"),
        "{missing}"
    );
    assert!(err(None, Some("v9.9")).contains("--from v9.9 names no commit"));
    assert!(err(Some("-x"), None).contains("not a valid git branch name"));
    assert!(err(Some("a..b"), None).contains("not a valid git branch name"));
    assert!(err(Some("@{-1}"), None).contains("not a valid git branch name"));
    // An option smuggled as a revision is a name, never an option.
    assert!(err(None, Some("--output=/tmp/x")).contains("names no commit"));
    let plain = TempDir::new().unwrap();
    assert!(matches!(
        select_revision(plain.path(), &revision(Some("main"), None)),
        Err(WorkspaceError::NotARepository { .. })
    ));
}

#[test]
fn a_branch_checked_out_on_the_host_is_sent_whole_with_its_git_folder() {
    if no_git() {
        return;
    }
    let fx = fixture();
    with_feature_branch(&fx);
    let sel = select_revision(&fx.repo, &revision(Some("feature"), None)).unwrap();
    let scratch = TempDir::new().unwrap();
    let made = check_out_here(&sel, sel.history.as_ref().unwrap(), scratch.path()).unwrap();
    assert_eq!(made.history, None, "nothing left for the guest's git");
    assert_eq!(made.repo_name, sel.repo_name);
    let top = scratch.path().join(&sel.repo_name);
    assert_eq!(made.root, top);
    let listed = paths(&made);
    for want in ["feature.txt", "run.sh", ".git/HEAD", "link_out"] {
        assert!(listed.contains(&want.to_string()), "{want}: {listed:?}");
    }
    // The commit's tree, not the working tree.
    assert!(!listed.contains(&"notes.txt".to_string()), "{listed:?}");
    assert_eq!(git_out(&top, &["branch", "--show-current"]), "feature");
    assert_eq!(
        git_out(&top, &["log", "--format=%s"]),
        "feature work\nfixture"
    );
    assert_eq!(git_out(&top, &["status", "--porcelain"]), "");
    assert!(
        matches!(kind(&made, "run.sh"), EntryKind::File { mode: 0o755, .. }),
        "{:?}",
        kind(&made, "run.sh")
    );
    // No bundle is left, and what was made goes into an archive whole.
    assert!(!listed.iter().any(|p| p.ends_with(".bundle")), "{listed:?}");
    let mut archive = Vec::new();
    write_tar(&made, &mut archive).unwrap();
    let got = members(&archive);
    assert!(
        got.keys().any(|k| k.ends_with("/.git/HEAD")),
        "{:?}",
        got.keys()
    );
    // A second checkout into the same scratch is refused.
    let err = check_out_here(&sel, sel.history.as_ref().unwrap(), scratch.path()).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}
