//! Workspace mode, host half: choosing which of a directory's files go into
//! a VM ([`select`]) and streaming them as one tar archive ([`write_tar`])
//! for the guest to unpack under `/root/<repo_name>`.
//!
//! It owns the rules of what is sent (git's view of a work tree, or a plain
//! directory minus its `.gitignore`) and the safety rules on names and
//! links (docs/workspace.md). It runs `git` with argument vectors, never a
//! shell, and never writes to the workspace. It knows nothing of VMs or
//! ssh: carrying the archive to the guest is the caller's job.

mod archive;
mod entry;
mod error;
mod git;
mod history;
mod plain;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use archive::{ARCHIVE_MTIME, dry_run_listing, write_tar};
pub use error::WorkspaceError;
pub use history::{
    History, RevisionRequest, check_out_here, checkout_command, select_revision, write_bundle,
};

/// What the caller asks of [`select`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectOptions {
    /// In git mode, also send untracked files that are not ignored.
    pub include_untracked: bool,
}

/// How the files were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectionMode {
    /// The path is in a git work tree: tracked files as the working tree
    /// holds them (plus untracked, not ignored, ones if asked).
    Git,
    /// Not in a git work tree: the directory as it is, minus what its
    /// `.gitignore` files exclude.
    Plain,
    /// `--branch` / `--from`: a commit of the repository, checked out in
    /// the guest from its history ([`History`]), not the working tree.
    Revision,
}

impl fmt::Display for SelectionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SelectionMode::Git => "git (tracked files of the working tree)",
            SelectionMode::Plain => "plain directory (not a git repository; .gitignore honoured)",
            SelectionMode::Revision => "git checkout with history (a commit, not the working tree)",
        })
    }
}

/// One file or link to send. Directories are implied by their contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to [`Selection::root`]; normal components only.
    pub path: PathBuf,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file: its permission bits (`0o777` at most) and its size
    /// when selected.
    File { mode: u32, size: u64 },
    /// A symbolic link, sent as a link with this target, never followed.
    Symlink { target: PathBuf },
}

/// The files chosen from one directory, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub mode: SelectionMode,
    /// The selected directory, canonical (no symlinks, absolute).
    pub root: PathBuf,
    /// The directory's name, made safe: the guest gets `/root/<repo_name>`.
    pub repo_name: String,
    pub entries: Vec<Entry>,
    /// The regular files' sizes added up.
    pub total_bytes: u64,
    /// What was left out or looks risky (submodules, nested repositories,
    /// links pointing outside), one line each, for the operator.
    pub warnings: Vec<String>,
    /// In [`SelectionMode::Revision`], the commit the guest checks out.
    pub history: Option<History>,
}

impl Selection {
    /// Where the files land in the guest: `/root/<repo_name>`.
    pub fn guest_root(&self) -> String {
        format!("/root/{}", self.repo_name)
    }

    /// Where the command runs in the guest: the guest root, or for a
    /// checkout of a repository given by one of its subdirectories, that
    /// subdirectory of it.
    pub fn guest_workdir(&self) -> String {
        match &self.history {
            Some(h) if !h.subdir.as_os_str().is_empty() => {
                format!("{}/{}", self.guest_root(), h.subdir.display())
            }
            _ => self.guest_root(),
        }
    }
}

/// Chooses the files of `path` to send into a guest (module docs). Fails
/// on a path that is not a directory, a name the guest cannot hold, or a
/// file reached through a symbolic link.
pub fn select(path: &Path, opts: &SelectOptions) -> Result<Selection, WorkspaceError> {
    let root = existing_dir(path)?;
    let repo_name = repo_name(&root);
    let mut collector = entry::Collector::new(&root, &repo_name);
    let mode = match git::probe(&root)? {
        git::Probe::WorkTree => {
            git::collect(&root, opts, &mut collector)?;
            SelectionMode::Git
        }
        git::Probe::NotARepo => {
            plain::collect(&root, &mut collector)?;
            SelectionMode::Plain
        }
    };
    let entry::Collector {
        mut entries,
        total_bytes,
        mut warnings,
        ..
    } = collector;
    if entries.is_empty() {
        warnings.push(match mode {
            SelectionMode::Git if !opts.include_untracked => format!(
                "no files selected in {}: it holds no tracked files (--include-untracked adds untracked ones)",
                root.display()
            ),
            _ => format!(
                "no files selected in {}: it is empty or all ignored",
                root.display()
            ),
        });
    }
    entries.sort_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });
    entries.dedup_by(|a, b| a.path == b.path);
    Ok(Selection {
        mode,
        root: root.clone(),
        repo_name,
        entries,
        total_bytes,
        warnings,
        history: None,
    })
}

/// `path` made canonical, if it is a directory; the error says what it is
/// instead.
fn existing_dir(path: &Path) -> Result<PathBuf, WorkspaceError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(WorkspaceError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(WorkspaceError::NotFound {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(WorkspaceError::io(format!("reading {}", path.display()), e));
        }
    }
    fs::canonicalize(path)
        .map_err(|e| WorkspaceError::io(format!("resolving {}", path.display()), e))
}

/// The longest guest folder name [`repo_name`] gives: the workspace disk's
/// folder is named on the guest's kernel command line, and banger-init and
/// the agent take at most this (`banger_agent_proto::MAX_WORKSPACE_NAME`).
pub const REPO_NAME_MAX: usize = 64;

/// The directory's name as a safe guest directory name: letters, digits,
/// `.`, `_` and `-` kept, anything else made `-`, no leading dot or dash
/// (so never `.`, `..` or an option), at most [`REPO_NAME_MAX`]
/// characters, `workspace` when nothing is left.
pub fn repo_name(root: &Path) -> String {
    let raw = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed: String = cleaned
        .trim_start_matches(['.', '-'])
        .chars()
        .take(REPO_NAME_MAX)
        .collect();
    if trimmed.is_empty() {
        "workspace".to_string()
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_are_safe_directory_names() {
        let name = |p: &str| repo_name(Path::new(p));
        assert_eq!(name("/home/me/banger"), "banger");
        assert_eq!(name("/home/me/my repo (old)"), "my-repo--old-");
        assert_eq!(name("/home/me/.dotfiles"), "dotfiles");
        assert_eq!(name("/home/me/..."), "workspace");
        assert_eq!(name("/home/me/-rf"), "rf");
        assert_eq!(name("/"), "workspace");
        assert_eq!(name("/x/caf\u{e9}"), "caf-");
    }
}
