//! `--branch` / `--from`: the guest gets a real git repository checked out
//! at a commit, not a copy of the working tree. The commit's history goes
//! as one git bundle; the guest fetches from it and checks the commit out,
//! so `git log`, `git diff` and `git commit` work inside.
//!
//! The bundle is written here, not by `git bundle create`: that command
//! refuses a bare commit id (`--from 3f2a1bc`) unless a ref names it, and
//! making a ref would write to the user's repository. A bundle is a short
//! header (gitformat-bundle(5)) and the pack `git pack-objects --revs`
//! writes, so the pack, the part that matters, is still git's.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::entry::{check_link_target, check_name, escapes};
use super::git::{self, Probe};
use super::{Entry, EntryKind, Selection, SelectionMode, WorkspaceError, repo_name};

/// The one ref the bundle carries; the guest fetches it by this name.
const BUNDLE_REF: &str = "refs/banger/checkout";

/// What the user asked to check out in the guest's copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionRequest {
    /// `--branch`: alone, an existing local branch to check out; with
    /// `from`, the name of a new branch the guest makes at that commit.
    pub branch: Option<String>,
    /// `--from`: any commit-ish (a tag, a remote branch, a commit id).
    pub from: Option<String>,
}

/// The commit a guest copy checks out, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The full object id.
    pub commit: String,
    /// The branch the guest's HEAD is on; `None` leaves it detached.
    pub branch: Option<String>,
    /// What was asked, for messages: `branch feature`, `origin/main`, ...
    pub label: String,
    /// Commits the bundle carries.
    pub commits: u64,
    /// `sha1` or `sha256`: the guest's repository must use the same.
    pub object_format: String,
    /// The workspace path below the repository's top level (empty at the
    /// top): the guest gets the whole repository and the command runs in
    /// this directory of it.
    pub subdir: PathBuf,
}

/// Chooses a commit of the repository at `path` and the files of its tree
/// (for `--dry-run` and the summary line; the guest's `git checkout`
/// writes them). The selection's root is the repository's top level.
pub fn select_revision(path: &Path, req: &RevisionRequest) -> Result<Selection, WorkspaceError> {
    let dir = super::existing_dir(path)?;
    if matches!(git::probe(&dir)?, Probe::NotARepo) {
        return Err(WorkspaceError::NotARepository { path: dir });
    }
    let top = PathBuf::from(std::ffi::OsStr::from_bytes(&git::output(
        &dir,
        &["rev-parse", "--show-toplevel"],
    )?));
    let top = std::fs::canonicalize(&top)
        .map_err(|e| WorkspaceError::io(format!("resolving {}", top.display()), e))?;
    let subdir = PathBuf::from(std::ffi::OsStr::from_bytes(
        git::output(&dir, &["rev-parse", "--show-prefix"])?
            .strip_suffix(b"/")
            .unwrap_or_default(),
    ));
    if let Some(branch) = &req.branch {
        check_branch_name(&top, branch)?;
    }
    let (commit, label) = match (&req.from, &req.branch) {
        (Some(from), branch) => {
            let commit = resolve(&top, from)?.ok_or_else(|| WorkspaceError::UnknownRevision {
                rev: from.clone(),
                repo: top.clone(),
            })?;
            let label = match branch {
                Some(b) => format!("{from} as new branch {b}"),
                None => from.clone(),
            };
            (commit, label)
        }
        (None, Some(branch)) => {
            let commit = resolve(&top, &format!("refs/heads/{branch}"))?.ok_or_else(|| {
                WorkspaceError::UnknownBranch {
                    branch: branch.clone(),
                    repo: top.clone(),
                }
            })?;
            (commit, format!("branch {branch}"))
        }
        (None, None) => return Err(WorkspaceError::NoRevision),
    };
    let name = repo_name(&top);
    let (entries, total_bytes, warnings) = tree_entries(&top, &name, &commit)?;
    let commits = text(git::output(&top, &["rev-list", "--count", &commit])?)
        .parse()
        .unwrap_or(0);
    let object_format = text(git::output(&top, &["rev-parse", "--show-object-format"])?);
    Ok(Selection {
        mode: SelectionMode::Revision,
        root: top,
        repo_name: name,
        entries,
        total_bytes,
        warnings,
        history: Some(History {
            commit,
            branch: req.branch.clone(),
            label,
            commits,
            object_format,
            subdir,
        }),
    })
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// A branch name git accepts and no option can be mistaken for.
fn check_branch_name(top: &Path, branch: &str) -> Result<(), WorkspaceError> {
    let bad = || WorkspaceError::BadBranchName {
        branch: branch.to_string(),
    };
    if branch.starts_with('-') || branch.is_empty() {
        return Err(bad());
    }
    // `git check-ref-format --branch` would also expand `@{-1}`; the
    // plain form only judges the name.
    git::try_output(top, &["check-ref-format", &format!("refs/heads/{branch}")])?
        .map(drop)
        .ok_or_else(bad)
}

/// The commit `rev` names, if it names one.
fn resolve(top: &Path, rev: &str) -> Result<Option<String>, WorkspaceError> {
    let spec = format!("{rev}^{{commit}}");
    let args = [
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        &spec,
    ];
    Ok(git::try_output(top, &args)?.map(text))
}

/// The files of `commit`'s tree, checked as the working-tree ones are.
fn tree_entries(
    top: &Path,
    name: &str,
    commit: &str,
) -> Result<(Vec<Entry>, u64, Vec<String>), WorkspaceError> {
    let listing = git::output(
        top,
        &["ls-tree", "-r", "-z", "--long", "--full-tree", commit],
    )?;
    let mut entries = Vec::new();
    let mut links = Vec::new();
    let mut total = 0;
    let mut warnings = Vec::new();
    for record in listing.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let bad = || WorkspaceError::GitFailed {
            action: format!("git ls-tree {commit}"),
            status: "success".into(),
            stderr: format!("unexpected record {:?}", String::from_utf8_lossy(record)),
        };
        let tab = record.iter().position(|&b| b == b'\t').ok_or_else(bad)?;
        let meta = String::from_utf8_lossy(&record[..tab]);
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&record[tab + 1..]));
        let fields: Vec<&str> = meta.split_whitespace().collect();
        let [mode, _kind, object, size] = fields[..] else {
            return Err(bad());
        };
        check_name(name, &path)?;
        match mode {
            "160000" => warnings.push(format!(
                "submodule {} is not checked out: banger does not descend into submodules",
                path.display()
            )),
            "120000" => links.push((path, object.to_string())),
            _ => {
                let size: u64 = size.parse().map_err(|_| bad())?;
                let mode = if mode == "100755" { 0o755 } else { 0o644 };
                total += size;
                entries.push(Entry {
                    path,
                    kind: EntryKind::File { mode, size },
                });
            }
        }
    }
    let targets = blobs(top, links.iter().map(|(_, o)| o.as_str()))?;
    for ((path, _), target) in links.into_iter().zip(targets) {
        let target = PathBuf::from(std::ffi::OsStr::from_bytes(&target));
        check_link_target(&path, &target)?;
        if escapes(&path, &target) {
            warnings.push(format!(
                "symbolic link {} points outside the repository (to {}): checked out as a link, its target is not copied",
                path.display(),
                target.display()
            ));
        }
        entries.push(Entry {
            path,
            kind: EntryKind::Symlink { target },
        });
    }
    Ok((entries, total, warnings))
}

/// The contents of the blobs `objects`, in order, read by one
/// `git cat-file --batch`.
fn blobs<'a>(
    top: &Path,
    objects: impl Iterator<Item = &'a str>,
) -> Result<Vec<Vec<u8>>, WorkspaceError> {
    let input: String = objects.map(|o| format!("{o}\n")).collect();
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let out = git::output_with_input(top, &["cat-file", "--batch"], input.as_bytes())?;
    let mut rest = &out[..];
    let mut found = Vec::new();
    let bad = || WorkspaceError::GitFailed {
        action: "git cat-file --batch".into(),
        status: "success".into(),
        stderr: "unexpected output".into(),
    };
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
        let head = String::from_utf8_lossy(&rest[..nl]);
        let size: usize = head
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let body = rest.get(nl + 1..nl + 1 + size).ok_or_else(bad)?;
        found.push(body.to_vec());
        rest = rest.get(nl + 2 + size..).unwrap_or_default();
    }
    Ok(found)
}

/// Writes the bundle of `history`'s commit and everything it reaches.
pub fn write_bundle(
    root: &Path,
    history: &History,
    mut out: impl Write,
) -> Result<(), WorkspaceError> {
    let fail = |e: io::Error| WorkspaceError::io("sending the repository's history", e);
    if history.object_format == "sha1" {
        out.write_all(b"# v2 git bundle\n").map_err(fail)?;
    } else {
        write!(
            out,
            "# v3 git bundle\n@object-format={}\n",
            history.object_format
        )
        .map_err(fail)?;
    }
    write!(out, "{} {BUNDLE_REF}\n\n", history.commit).map_err(fail)?;
    let mut child = git::command(root)
        .args(["pack-objects", "--revs", "--stdout", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| WorkspaceError::io("running git pack-objects", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{}", history.commit).map_err(fail)?;
    }
    let copied = match child.stdout.take() {
        Some(mut pack) => io::copy(&mut pack, &mut out).and_then(|_| out.flush()),
        None => Ok(()),
    };
    let done = child
        .wait_with_output()
        .map_err(|e| WorkspaceError::io("waiting for git pack-objects", e))?;
    if !done.status.success() {
        return Err(WorkspaceError::GitFailed {
            action: format!("git pack-objects --revs {}", history.commit),
            status: done.status.to_string(),
            stderr: git::last_lines(&done.stderr),
        });
    }
    copied.map_err(fail)
}

/// The checkout made on the host instead, for a new VM's workspace disk
/// (docs/workspace.md): the guest's own script ([`checkout_command`]), fed
/// the same bundle, run here by the host's git into `scratch/<repo_name>`
/// (`scratch`: a new, private, empty folder), with umask 022 as root's in
/// the guest, and with no user or system git configuration, so none of the
/// user's filters, hooks or aliases apply, as none would in the guest.
/// Returns everything the checkout made, `.git` included, as a selection
/// of that folder to send as it is (`history` is then `None`: nothing is
/// left for the guest's git to do).
pub fn check_out_here(
    sel: &Selection,
    history: &History,
    scratch: &Path,
) -> Result<Selection, WorkspaceError> {
    let words = checkout_command(sel, history);
    let top = scratch.join(&sel.repo_name);
    let bundle = scratch.join(".banger-checkout.bundle");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask 022\n{}", words[2]))
        .arg("sh")
        .arg(&top)
        .arg(&bundle)
        .args(&words[6..]);
    for var in git::REDIRECTING_ENV {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| WorkspaceError::io("running sh for the checkout", e))?;
    let fed = match child.stdin.take() {
        Some(stdin) => write_bundle(&sel.root, history, io::BufWriter::new(stdin)),
        None => Ok(()),
    };
    let done = child
        .wait_with_output()
        .map_err(|e| WorkspaceError::io("waiting for the checkout", e))?;
    if !done.status.success() {
        return Err(WorkspaceError::GitFailed {
            action: format!("checking out {} on the host", history.label),
            status: done.status.to_string(),
            stderr: git::last_lines(&done.stderr),
        });
    }
    fed?;
    let mut collector = super::entry::Collector::new(&top, &sel.repo_name);
    let walk = ignore::WalkBuilder::new(&top)
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .build();
    for item in walk {
        let entry = item.map_err(|e| WorkspaceError::Io {
            action: format!("walking {}", top.display()),
            source: io::Error::other(e.to_string()),
        })?;
        if entry.depth() == 0 || entry.file_type().is_some_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(rel) = entry.path().strip_prefix(&top) {
            collector.add(rel.to_path_buf())?;
        }
    }
    let super::entry::Collector {
        mut entries,
        total_bytes,
        warnings,
        ..
    } = collector;
    entries.sort_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });
    Ok(Selection {
        mode: SelectionMode::Revision,
        root: top,
        repo_name: sel.repo_name.clone(),
        entries,
        total_bytes,
        warnings: sel.warnings.iter().cloned().chain(warnings).collect(),
        history: None,
    })
}

/// The guest's half, as words for ssh to run: store the bundle arriving on
/// stdin, make `/root/<repo_name>` a repository with the commit checked
/// out, drop the bundle. A directory that exists and is not empty is
/// refused, never merged into; a failed checkout removes what it made.
pub fn checkout_command(sel: &Selection, history: &History) -> Vec<String> {
    let script = r#"set -eu
top=$1 bundle=$2 commit=$3 branch=$4 format=$5 ref=$6
if ! command -v git >/dev/null 2>&1; then
  echo "git is not installed in this VM's image, and --branch/--from need it: use an image with git (the default debian-bookworm has it)" >&2
  exit 1
fi
if [ -d "$top" ] && [ -n "$(ls -A "$top")" ]; then
  echo "$top already exists in the VM and is not empty: --branch and --from check out into a new directory (remove it, or use a new VM)" >&2
  exit 1
fi
fresh=
[ -e "$top" ] || fresh=1
trap 'st=$?; rm -f "$bundle"; if [ "$st" -ne 0 ] && [ -n "$fresh" ]; then rm -rf "$top"; fi' EXIT
mkdir -p "${bundle%/*}"
cat >"$bundle"
git -c init.defaultBranch=banger-unborn init -q --object-format="$format" "$top"
cd "$top"
git fetch -q "$bundle" "$ref"
if [ -n "$branch" ]; then
  git checkout -q -B "$branch" "$commit"
else
  git checkout -q --detach "$commit"
fi
fresh=
"#;
    vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        format!("/root/{}", sel.repo_name),
        format!("/root/.cache/banger/workspace-{}.bundle", sel.repo_name),
        history.commit.clone(),
        history.branch.clone().unwrap_or_default(),
        history.object_format.clone(),
        BUNDLE_REF.into(),
    ]
}
