//! Git mode: asking the real `git` which files a work tree holds.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::entry::{Collector, Found};
use super::{SelectOptions, WorkspaceError};

/// Variables that would point git at another repository than the one at
/// the workspace path (set, for instance, when banger runs from a hook).
pub(super) const REDIRECTING_ENV: [&str; 5] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
];

/// What `git rev-parse` says about a directory.
pub(super) enum Probe {
    /// Inside a work tree (at its top or below).
    WorkTree,
    /// Not inside a git repository (or git is absent and no `.git` is
    /// near): plain mode.
    NotARepo,
}

/// `git -C dir`, isolated from variables that would redirect it.
pub(super) fn command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir);
    for var in REDIRECTING_ENV {
        cmd.env_remove(var);
    }
    // English messages: `probe` tells "not a git repository" apart.
    cmd.env("LC_ALL", "C").env("LANGUAGE", "C");
    cmd.stdin(Stdio::null());
    cmd
}

/// The last few lines of a tool's stderr, joined onto one line.
pub(super) fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Whether `dir` is inside a git work tree.
pub(super) fn probe(dir: &Path) -> Result<Probe, WorkspaceError> {
    let action = format!("git rev-parse --show-toplevel in {}", dir.display());
    let out = match command(dir).args(["rev-parse", "--show-toplevel"]).output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Without git, a directory that looks like a repository must
            // not be shipped as plain: that would send ignored files.
            return match dir.ancestors().find(|d| d.join(".git").exists()) {
                Some(_) => Err(WorkspaceError::GitMissing {
                    path: dir.to_path_buf(),
                }),
                None => Ok(Probe::NotARepo),
            };
        }
        Err(e) => return Err(WorkspaceError::io(action, e)),
    };
    if out.status.success() {
        return Ok(Probe::WorkTree);
    }
    if String::from_utf8_lossy(&out.stderr).contains("not a git repository") {
        return Ok(Probe::NotARepo);
    }
    Err(WorkspaceError::GitFailed {
        action,
        status: out.status.to_string(),
        stderr: last_lines(&out.stderr),
    })
}

/// Runs `git ARGS` in `dir` with `input` on its stdin, to the end.
fn run(dir: &Path, args: &[&str], input: &[u8]) -> Result<Output, WorkspaceError> {
    let action = || format!("git {} in {}", args.join(" "), dir.display());
    let mut child = command(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| WorkspaceError::io(action(), e))?;
    // Fed from a thread: git may fill its stdout before it has read all of
    // its stdin.
    let feeder = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        std::thread::spawn(move || stdin.write_all(&input))
    });
    let out = child
        .wait_with_output()
        .map_err(|e| WorkspaceError::io(action(), e))?;
    if let Some(feeder) = feeder {
        // A write error means git stopped reading; its status says why.
        let _ = feeder.join();
    }
    Ok(out)
}

/// Stdout with its one trailing newline dropped.
fn trimmed(mut stdout: Vec<u8>) -> Vec<u8> {
    if stdout.last() == Some(&b'\n') {
        stdout.pop();
    }
    stdout
}

/// `git ARGS`'s stdout if it succeeds, `None` if it exits non-zero (for
/// questions git answers with its status).
pub(super) fn try_output(dir: &Path, args: &[&str]) -> Result<Option<Vec<u8>>, WorkspaceError> {
    let out = run(dir, args, b"")?;
    Ok(out.status.success().then(|| trimmed(out.stdout)))
}

/// `git ARGS`'s stdout, given `input`; a non-zero exit is an error
/// carrying git's last words.
pub(super) fn output_with_input(
    dir: &Path,
    args: &[&str],
    input: &[u8],
) -> Result<Vec<u8>, WorkspaceError> {
    let out = run(dir, args, input)?;
    if !out.status.success() {
        return Err(WorkspaceError::GitFailed {
            action: format!("git {} in {}", args.join(" "), dir.display()),
            status: out.status.to_string(),
            stderr: last_lines(&out.stderr),
        });
    }
    Ok(trimmed(out.stdout))
}

/// [`output_with_input`] with nothing on stdin.
pub(super) fn output(dir: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
    output_with_input(dir, args, b"")
}

/// Runs `git ls-files -z` with `args` in `dir`; the NUL-separated records.
fn ls_files(dir: &Path, args: &[&str]) -> Result<Vec<Vec<u8>>, WorkspaceError> {
    let action = format!("git ls-files {} in {}", args.join(" "), dir.display());
    let out = command(dir)
        .args(["ls-files", "-z"])
        .args(args)
        .output()
        .map_err(|e| WorkspaceError::io(action.clone(), e))?;
    if !out.status.success() {
        return Err(WorkspaceError::GitFailed {
            action,
            status: out.status.to_string(),
            stderr: last_lines(&out.stderr),
        });
    }
    Ok(out
        .stdout
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

/// Adds the tracked files under `root` as the working tree holds them now
/// and, if asked, the untracked files git does not ignore. `git ls-files`
/// run in `root` lists only what lies under it, relative to it, which is
/// what selecting a subdirectory of a repository needs.
pub(super) fn collect(
    root: &Path,
    opts: &SelectOptions,
    out: &mut Collector<'_>,
) -> Result<(), WorkspaceError> {
    // `--stage` gives each path's mode, which tells submodules (gitlinks,
    // 160000) apart; an unmerged path is listed once per stage.
    let mut last: Option<Vec<u8>> = None;
    for record in ls_files(root, &["--stage"])? {
        let Some(tab) = record.iter().position(|&b| b == b'\t') else {
            return Err(WorkspaceError::GitFailed {
                action: format!("git ls-files --stage in {}", root.display()),
                status: "success".into(),
                stderr: format!("unexpected record {:?}", String::from_utf8_lossy(&record)),
            });
        };
        let (meta, name) = (&record[..tab], &record[tab + 1..]);
        if last.as_deref() == Some(name) {
            continue;
        }
        last = Some(name.to_vec());
        let rel = path_of(name);
        if meta.starts_with(b"160000 ") {
            out.warnings.push(format!(
                "submodule {} is not copied: banger does not descend into submodules",
                rel.display()
            ));
            continue;
        }
        if out.add(rel.clone())? == Found::Directory {
            out.warnings.push(format!(
                "tracked file {} is a directory in the working tree: skipped",
                rel.display()
            ));
        }
    }
    if opts.include_untracked {
        for name in ls_files(root, &["--others", "--exclude-standard"])? {
            // git lists a nested repository as its directory, with a
            // trailing slash, and does not look inside.
            if let Some(dir) = name.strip_suffix(b"/") {
                out.warnings.push(format!(
                    "nested repository {} is not copied: banger does not descend into other repositories",
                    path_of(dir).display()
                ));
                continue;
            }
            let rel = path_of(&name);
            if out.add(rel.clone())? == Found::Directory {
                out.warnings.push(format!(
                    "nested repository {} is not copied: banger does not descend into other repositories",
                    rel.display()
                ));
            }
        }
    }
    Ok(())
}
