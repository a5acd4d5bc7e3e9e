//! Turning a relative path under the workspace root into a checked
//! [`Entry`]: the name rules, the no-symlinked-parent rule, and what the
//! working tree holds at that path right now.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Entry, EntryKind, WorkspaceError};

/// The longest file name (one path component) ext4 can store, in bytes.
pub(crate) const NAME_MAX: usize = 255;
/// The longest path the guest's kernel accepts, terminating NUL included.
pub(crate) const PATH_MAX: usize = 4096;
/// Where the guest extracts the archive: `/root/<repo_name>/<path>`.
const GUEST_PARENT: &str = "/root/";

/// How `name` is shown in an error: quoted, with control characters and
/// invalid UTF-8 escaped, so the message stays on one line.
pub(crate) fn shown(name: &OsStr) -> String {
    format!("{name:?}")
}

/// Why `bytes` (a name or a link target) cannot be sent, if it cannot.
/// UTF-8 is required because the `--dry-run` listing and every error must
/// show the exact name, and control characters (a newline above all) would
/// break the one-path-per-line listing and confuse the guest's tools.
fn text_problem(bytes: &[u8]) -> Option<&'static str> {
    if bytes.is_empty() {
        return Some("it is empty");
    }
    if std::str::from_utf8(bytes).is_err() {
        return Some("it is not valid UTF-8");
    }
    if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Some("it contains a control character (a newline, a tab, ...)");
    }
    None
}

/// Checks that `rel` can be created as `/root/<repo_name>/<rel>` in the
/// guest: UTF-8 without control characters, relative, made only of normal
/// components (no `.`, `..` or empty ones), each at most [`NAME_MAX`]
/// bytes, the whole within [`PATH_MAX`]. Checked on the raw bytes, since
/// [`Path::components`] quietly drops `.` and repeated slashes.
pub(crate) fn check_name(repo_name: &str, rel: &Path) -> Result<(), WorkspaceError> {
    let bytes = rel.as_os_str().as_bytes();
    let fail = |why| WorkspaceError::UnrepresentableName {
        path: shown(rel.as_os_str()),
        why,
    };
    if let Some(why) = text_problem(bytes) {
        return Err(fail(why));
    }
    for part in bytes.split(|&b| b == b'/') {
        match part {
            b"" => return Err(fail("it is absolute or has an empty component")),
            b"." | b".." => return Err(fail("it has a '.' or '..' component")),
            _ if part.len() > NAME_MAX => {
                return Err(fail("a component is longer than ext4's 255 bytes"));
            }
            _ => {}
        }
    }
    if GUEST_PARENT.len() + repo_name.len() + 1 + bytes.len() >= PATH_MAX {
        return Err(fail("its path in the guest would exceed 4096 bytes"));
    }
    Ok(())
}

/// Checks a symbolic link's target can be recreated as is; where it points
/// is not checked here (see [`escapes`]).
pub(crate) fn check_link_target(rel: &Path, target: &Path) -> Result<(), WorkspaceError> {
    let bytes = target.as_os_str().as_bytes();
    let why = text_problem(bytes)
        .or_else(|| (bytes.len() >= PATH_MAX).then_some("is longer than the guest's 4096 bytes"));
    match why {
        Some(why) => Err(WorkspaceError::UnrepresentableLink {
            path: shown(rel.as_os_str()),
            target: shown(target.as_os_str()),
            why: why.strip_prefix("it ").unwrap_or(why),
        }),
        None => Ok(()),
    }
}

/// Whether the link at `rel` (relative to the workspace root), pointing at
/// `target`, leads outside the workspace, judged on the names alone: an
/// absolute target, or one whose `..`s climb above the root.
pub(crate) fn escapes(rel: &Path, target: &Path) -> bool {
    let target = target.as_os_str().as_bytes();
    if target.starts_with(b"/") {
        return true;
    }
    // Components of the directory holding the link.
    let mut depth = rel.as_os_str().as_bytes().split(|&b| b == b'/').count() as isize - 1;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// The directories `rel` lies under, outermost first (`a`, `a/b` for
/// `a/b/c`).
pub(crate) fn parents_top_down(rel: &Path) -> Vec<&Path> {
    let mut parents: Vec<&Path> = rel
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    parents.reverse();
    parents
}

/// What the working tree holds at a path handed to [`Collector::add`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// A file or a link, now in the selection.
    Added,
    /// Nothing (deleted in the working tree, or a parent is no longer a
    /// directory).
    Missing,
    /// A directory: not an entry (directories are implied).
    Directory,
    /// A FIFO, socket or device: never sent.
    Special,
}

/// Gathers the entries of one selection, checking each as it comes.
pub(crate) struct Collector<'a> {
    root: &'a Path,
    repo_name: &'a str,
    /// Parents already seen to be real directories (not links).
    dirs: HashSet<PathBuf>,
    pub entries: Vec<Entry>,
    pub total_bytes: u64,
    pub warnings: Vec<String>,
}

impl<'a> Collector<'a> {
    pub fn new(root: &'a Path, repo_name: &'a str) -> Self {
        Collector {
            root,
            repo_name,
            dirs: HashSet::new(),
            entries: Vec::new(),
            total_bytes: 0,
            warnings: Vec::new(),
        }
    }

    /// Checks `rel` and records what the working tree holds there. A name
    /// that cannot be sent, or a parent that is a symbolic link, is an
    /// error: the caller asked for this path, and silently dropping it, or
    /// reading through the link, would both be wrong.
    pub fn add(&mut self, rel: PathBuf) -> Result<Found, WorkspaceError> {
        check_name(self.repo_name, &rel)?;
        if !self.parents_are_dirs(&rel)? {
            return Ok(Found::Missing);
        }
        let full = self.root.join(&rel);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) => return Err(WorkspaceError::io(format!("reading {}", full.display()), e)),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            return Ok(Found::Directory);
        }
        if kind.is_symlink() {
            let target = fs::read_link(&full)
                .map_err(|e| WorkspaceError::io(format!("reading link {}", full.display()), e))?;
            check_link_target(&rel, &target)?;
            if escapes(&rel, &target) {
                self.warnings.push(format!(
                    "symbolic link {} points outside the workspace (to {}): sent as a link, its target is not copied",
                    rel.display(),
                    target.display()
                ));
            }
            self.entries.push(Entry {
                path: rel,
                kind: EntryKind::Symlink { target },
            });
            return Ok(Found::Added);
        }
        if !kind.is_file() {
            self.warnings.push(format!(
                "{} is not a regular file or a link (a FIFO, socket or device): skipped",
                rel.display()
            ));
            return Ok(Found::Special);
        }
        let size = meta.len();
        self.total_bytes += size;
        self.entries.push(Entry {
            path: rel,
            kind: EntryKind::File {
                mode: meta.permissions().mode() & 0o777,
                size,
            },
        });
        Ok(Found::Added)
    }

    /// Whether every parent of `rel` is a real directory. A parent that is
    /// a symbolic link is an error naming it: following it could read
    /// anything on the host.
    fn parents_are_dirs(&mut self, rel: &Path) -> Result<bool, WorkspaceError> {
        for parent in parents_top_down(rel) {
            if self.dirs.contains(parent) {
                continue;
            }
            let full = self.root.join(parent);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(WorkspaceError::ThroughSymlink {
                        path: rel.to_path_buf(),
                        link: parent.to_path_buf(),
                    });
                }
                Ok(meta) if meta.is_dir() => {
                    self.dirs.insert(parent.to_path_buf());
                }
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => {
                    return Err(WorkspaceError::io(format!("reading {}", full.display()), e));
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn name_ok(name: &[u8]) -> bool {
        check_name("repo", Path::new(&OsString::from_vec(name.to_vec()))).is_ok()
    }

    #[test]
    fn names_must_be_plain_relative_utf8() {
        assert!(name_ok(b"src/main.rs"));
        assert!(name_ok(b".github/workflows/ci.yml"));
        assert!(name_ok("d\u{e9}j\u{e0} vu/caf\u{e9}.txt".as_bytes()));
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"../x",
            b"a/../../x",
            b"a/./b",
            b"a//b",
            b"a/",
            b".",
            b"bad\nname",
            b"tab\there",
            b"\xff\xfe",
        ] {
            assert!(!name_ok(bad), "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn names_must_fit_ext4() {
        assert!(name_ok(&[b'a'; 255]));
        assert!(!name_ok(&[b'a'; 256]));
        let deep: Vec<u8> = std::iter::repeat_n(&b"abcdefgh/"[..], 460)
            .flatten()
            .copied()
            .chain(*b"x")
            .collect();
        assert!(!name_ok(&deep));
    }

    #[test]
    fn a_newline_is_named_escaped_in_one_line() {
        let err = check_name("repo", Path::new("docs/bad\nname.md")).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains(r#""docs/bad\nname.md""#), "{msg}");
        assert!(msg.contains("control character"), "{msg}");
    }

    #[test]
    fn escaping_targets_are_told_from_inner_ones() {
        let esc = |link: &str, target: &str| escapes(Path::new(link), Path::new(target));
        assert!(esc("a", "/etc/passwd"));
        assert!(esc("a", ".."));
        assert!(esc("a", "../x"));
        assert!(esc("d/a", "../../x"));
        assert!(esc("d/a", "e/../../../x"));
        assert!(!esc("a", "b"));
        assert!(!esc("a", "."));
        assert!(!esc("d/a", "../b"));
        assert!(!esc("d/e/a", "../../b/./c"));
        assert!(!esc("d/a", "x/../y"));
    }

    #[test]
    fn link_targets_must_be_text() {
        let rel = Path::new("l");
        assert!(check_link_target(rel, Path::new("../anything/at all")).is_ok());
        assert!(check_link_target(rel, Path::new("a\nb")).is_err());
        let raw = OsString::from_vec(vec![0xff]);
        assert!(check_link_target(rel, Path::new(&raw)).is_err());
    }
}
