//! Plain mode: a directory that is not in a git work tree, walked as it is,
//! minus what its `.gitignore` files exclude.

use std::path::Path;

use ignore::WalkBuilder;

use super::WorkspaceError;
use super::entry::{Collector, Found};

/// Adds every file and link under `root` not excluded by a `.gitignore`
/// inside `root`. Hidden files are included; `.git` is not; links are
/// recorded, never followed. Nothing outside `root` is consulted (no
/// parent `.gitignore`, no global excludes), so the result depends on the
/// directory alone.
pub(super) fn collect(root: &Path, out: &mut Collector<'_>) -> Result<(), WorkspaceError> {
    let walk = WalkBuilder::new(root)
        .hidden(false)
        .parents(false)
        .ignore(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for item in walk {
        let entry = match item {
            Ok(entry) => entry,
            // A line of a .gitignore that does not parse: git would skip
            // it too; say so rather than fail.
            Err(e) if e.io_error().is_none() => {
                out.warnings
                    .push(format!("ignored a .gitignore problem: {e}"));
                continue;
            }
            Err(e) => {
                return Err(WorkspaceError::Io {
                    action: format!("walking {}", root.display()),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        };
        if entry.depth() == 0 || entry.file_type().is_some_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        // Directories are implied by their files; a directory reported
        // here appeared between the walk and the check.
        let _: Found = out.add(rel.to_path_buf())?;
    }
    Ok(())
}
