//! The archive the guest unpacks: a GNU tar stream of the selection under
//! `<repo_name>/`, owned by root, with one fixed mtime.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::entry::{check_name, parents_top_down};
use super::{EntryKind, Selection, WorkspaceError};

/// The mtime of every archive member: 2000-01-01T00:00:00Z. Fixed, so the
/// same tree gives the same archive; not 0, because tools that zip a tree
/// (Python's wheel builds among them) refuse times before 1980.
pub const ARCHIVE_MTIME: u64 = 946_684_800;

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(ARCHIVE_MTIME);
    // Infallible for names this short.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

/// Reads exactly `left` bytes of a file, remembering whether it ended
/// early: a tar member must hold as many bytes as its header says.
struct Exact {
    file: File,
    left: u64,
    short: bool,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            self.short = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Opens the regular file at `full` and checks it is the same inode that
/// `lstat` sees there, so a file swapped for a link since [`select`] is
/// not followed.
///
/// [`select`]: super::select
fn open_checked(full: &Path, rel: &Path) -> Result<(File, u64), WorkspaceError> {
    let changed = |what| WorkspaceError::Changed {
        path: rel.to_path_buf(),
        what,
    };
    let before = match fs::symlink_metadata(full) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed("it was removed")),
        Err(e) => return Err(WorkspaceError::io(format!("reading {}", full.display()), e)),
    };
    if !before.file_type().is_file() {
        return Err(changed("it is no longer a regular file"));
    }
    let file = File::open(full)
        .map_err(|e| WorkspaceError::io(format!("opening {}", full.display()), e))?;
    let after = file
        .metadata()
        .map_err(|e| WorkspaceError::io(format!("reading {}", full.display()), e))?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err(changed("it was replaced"));
    }
    Ok((file, after.len()))
}

/// Checks a selection before any byte is written, whoever built it: every
/// name passes the selection rules, and no entry lies under a link that is
/// itself an entry (unpacking would write through that link).
fn check(sel: &Selection) -> Result<(), WorkspaceError> {
    check_name(&sel.repo_name, Path::new(&sel.repo_name))?;
    if sel.repo_name.contains('/') {
        return Err(WorkspaceError::UnrepresentableName {
            path: format!("{:?}", sel.repo_name),
            why: "the repository name must be one path component",
        });
    }
    let links: HashSet<&Path> = sel
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Symlink { .. }))
        .map(|e| e.path.as_path())
        .collect();
    for entry in &sel.entries {
        check_name(&sel.repo_name, &entry.path)?;
        if let Some(link) = entry.path.ancestors().skip(1).find(|a| links.contains(a)) {
            return Err(WorkspaceError::ThroughSymlink {
                path: entry.path.clone(),
                link: link.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Streams `sel` as a tar archive into `out`, one file at a time: members
/// are `<repo_name>/<path>`, preceded by their directories (mode 0755);
/// files keep their permission bits, links their targets; all owned by
/// root, all with [`ARCHIVE_MTIME`]. A file's content is read now, so an
/// edit since [`select`](super::select) is sent; a file removed or
/// replaced since is an error.
pub fn write_tar<W: Write>(sel: &Selection, out: W) -> Result<(), WorkspaceError> {
    check(sel)?;
    let write_err = |e| WorkspaceError::io("writing the workspace archive", e);
    let mut tar = Builder::new(out);
    let base = PathBuf::from(&sel.repo_name);
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    tar.append_data(
        &mut header(EntryType::Directory, 0o755, 0),
        &base,
        io::empty(),
    )
    .map_err(write_err)?;
    for entry in &sel.entries {
        for parent in parents_top_down(&entry.path) {
            if dirs.insert(parent.to_path_buf()) {
                let mut h = header(EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, base.join(parent), io::empty())
                    .map_err(write_err)?;
            }
        }
        let name = base.join(&entry.path);
        match &entry.kind {
            EntryKind::File { mode, .. } => {
                let (file, size) = open_checked(&sel.root.join(&entry.path), &entry.path)?;
                let mut h = header(EntryType::Regular, mode & 0o777, size);
                let mut data = Exact {
                    file,
                    left: size,
                    short: false,
                };
                if let Err(e) = tar.append_data(&mut h, &name, &mut data) {
                    return Err(if data.short {
                        WorkspaceError::Changed {
                            path: entry.path.clone(),
                            what: "it shrank while it was read",
                        }
                    } else {
                        WorkspaceError::io(
                            format!("archiving {}", sel.root.join(&entry.path).display()),
                            e,
                        )
                    });
                }
            }
            EntryKind::Symlink { target } => {
                let mut h = header(EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, &name, target).map_err(write_err)?;
            }
        }
    }
    let mut out = tar.into_inner().map_err(write_err)?;
    out.flush().map_err(write_err)
}

/// What `--dry-run` prints: the selected paths, one per line, as they are
/// named under the workspace root (names with newlines cannot be
/// selected, so each line is one path), then one line with the totals.
pub fn dry_run_listing(sel: &Selection) -> String {
    let mut text = String::new();
    let mut links = 0usize;
    for entry in &sel.entries {
        if matches!(entry.kind, EntryKind::Symlink { .. }) {
            links += 1;
        }
        let _ = writeln!(text, "{}", entry.path.display());
    }
    let files = sel.entries.len() - links;
    let mode = match (&sel.mode, &sel.history) {
        (super::SelectionMode::Revision, Some(h)) => format!(
            "checkout of {} ({}) with {} commit{} of history",
            h.label,
            h.commit.get(..12).unwrap_or(&h.commit),
            h.commits,
            if h.commits == 1 { "" } else { "s" }
        ),
        (super::SelectionMode::Plain, _) => "plain mode".into(),
        _ => "git mode".into(),
    };
    let _ = writeln!(
        text,
        "total: {files} file{}, {links} link{}, {} ({} bytes), {mode}",
        if files == 1 { "" } else { "s" },
        if links == 1 { "" } else { "s" },
        human_size(sel.total_bytes),
        sel.total_bytes,
    );
    text
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Entry, SelectionMode};
    use super::*;

    fn selection(entries: Vec<Entry>) -> Selection {
        Selection {
            mode: SelectionMode::Plain,
            root: PathBuf::from("/nonexistent"),
            repo_name: "repo".into(),
            entries,
            total_bytes: 0,
            warnings: vec![],
            history: None,
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(100 << 20), "100.0 MiB");
    }

    #[test]
    fn a_hand_made_selection_cannot_write_through_its_own_link() {
        let sel = selection(vec![
            link("l", "/etc"),
            Entry {
                path: "l/passwd".into(),
                kind: EntryKind::File {
                    mode: 0o644,
                    size: 0,
                },
            },
        ]);
        let err = write_tar(&sel, Vec::new()).unwrap_err();
        assert!(
            matches!(err, WorkspaceError::ThroughSymlink { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_hand_made_selection_cannot_climb_out() {
        for bad in ["../x", "/etc/x", "a/./b"] {
            let sel = selection(vec![link(bad, "t")]);
            assert!(write_tar(&sel, Vec::new()).is_err(), "{bad} accepted");
        }
        let mut sel = selection(vec![link("a", "t")]);
        sel.repo_name = "..".into();
        assert!(write_tar(&sel, Vec::new()).is_err());
        sel.repo_name = "a/b".into();
        assert!(write_tar(&sel, Vec::new()).is_err());
    }

    #[test]
    fn the_listing_has_one_path_a_line_and_a_total() {
        let mut sel = selection(vec![
            Entry {
                path: "a b.txt".into(),
                kind: EntryKind::File {
                    mode: 0o644,
                    size: 2048,
                },
            },
            link("l", "a b.txt"),
        ]);
        sel.total_bytes = 2048;
        assert_eq!(
            dry_run_listing(&sel),
            "a b.txt\nl\ntotal: 1 file, 1 link, 2.0 KiB (2048 bytes), plain mode\n"
        );
    }
}
