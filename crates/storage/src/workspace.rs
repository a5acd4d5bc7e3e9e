//! The workspace disk of `vm run PATH` (docs/workspace.md): the files the
//! CLI chose from a repository arrive as one tar stream, are unpacked here
//! into a private staging tree, and become an ext4 disk (`mkfs.ext4 -d`,
//! [`make_disk_from_tree`]) that the guest mounts at `/root/NAME`. The
//! host does at native speed what a guest under emulation did file by
//! file.
//!
//! The stream is the CLI's, but its names, modes and link targets come
//! from a repository, which is not trusted (DESIGN.md, "Trust"), and the
//! API is open to anything that reaches the socket: so everything is
//! checked again here. Only directories, regular files and symbolic links
//! are taken; every name is relative, of normal components, below
//! `NAME/`, and never under a link the stream made; sizes are counted
//! against a limit before they are written; nothing is ever followed or
//! overwritten. Names reach the disk as data: mkfs copies the tree with
//! system calls, never through a script.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::disk::{DiskError, io_err};

/// Entries one workspace may hold: the byte limit does not bound a
/// stream of a million empty files.
pub const MAX_ENTRIES: u64 = 1_000_000;

/// Longest name (bytes) of one entry, below the workspace's folder.
const MAX_PATH: usize = 4096;

/// What one workspace may spend on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The regular files' sizes added up.
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// What was unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// The regular files' sizes added up.
    pub bytes: u64,
}

/// Why a stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("the workspace archive is not valid: {0}")]
    Malformed(String),
    #[error("the workspace archive holds {path:?}, which {why}")]
    Refused { path: String, why: &'static str },
    #[error(
        "the workspace is larger than the VM's disk allows ({limit} bytes): give a larger \
         --disk-size, or select fewer files"
    )]
    TooLarge { limit: u64 },
    #[error("the workspace holds more than {0} files and folders")]
    TooMany(u64),
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// Whether `name` may be the workspace's folder under `/root`: 1 to 64
/// bytes of letters, digits, `.`, `_` and `-`, not starting with `.` or
/// `-` (what the CLI's `repo_name` makes; banger-init checks it again).
pub fn valid_dir_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Unpacks the tar stream `from`, whose members are `NAME/...`, into the
/// new folder `tree` (made here, 0755: it becomes the disk's root), which
/// then holds what was below `NAME/`. On an error `tree` is left for the
/// caller to remove.
pub fn unpack(
    from: impl Read,
    name: &str,
    tree: &Path,
    limits: Limits,
) -> Result<Unpacked, WorkspaceError> {
    if !valid_dir_name(name) {
        return Err(WorkspaceError::Refused {
            path: name.to_string(),
            why: "is not a valid workspace name (letters, digits, '.', '_', '-')",
        });
    }
    fs::DirBuilder::new()
        .mode(0o755)
        .create(tree)
        .map_err(io_err("create", tree))?;
    fs::set_permissions(tree, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", tree))?;
    let mut archive = tar::Archive::new(from);
    let mut done = Unpacked::default();
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut count = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| WorkspaceError::Malformed(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| WorkspaceError::Malformed(e.to_string()))?;
        count += 1;
        if count > limits.max_entries {
            return Err(WorkspaceError::TooMany(limits.max_entries));
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refused = |why| WorkspaceError::Refused {
            path: shown.clone(),
            why,
        };
        let rel = relative(&raw, name).map_err(&refused)?;
        let kind = entry.header().entry_type();
        let Some(rel) = rel else {
            // `NAME/` itself: the disk's root.
            if kind != EntryType::Directory {
                return Err(refused("is the workspace's folder but not a folder"));
            }
            continue;
        };
        if rel.ancestors().skip(1).any(|a| links.contains(a)) {
            return Err(refused("lies under a symbolic link of the workspace"));
        }
        let dest = tree.join(&rel);
        make_parents(tree, &rel)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refused("is given twice")),
                    Err(_) => fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&dest)
                        .map_err(io_err("create", &dest))?,
                }
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_err("chmod", &dest))?;
                done.dirs += 1;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().unwrap_or(u64::MAX);
                let total = done.bytes.saturating_add(size);
                if total > limits.max_bytes {
                    return Err(WorkspaceError::TooLarge {
                        limit: limits.max_bytes,
                    });
                }
                // O_EXCL and O_NOFOLLOW: nothing there is replaced or
                // written through.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&dest)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::AlreadyExists => refused("is given twice"),
                        _ => io_err("create", &dest)(e).into(),
                    })?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(|e| full_or(e, &dest))?;
                if copied != size {
                    return Err(WorkspaceError::Malformed(format!(
                        "{shown:?} ends after {copied} of its {size} bytes"
                    )));
                }
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", &dest))?;
                done.files += 1;
                done.bytes = total;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused("is a link without a target"))?
                    .into_owned();
                if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                    return Err(refused("is a link with an unusable target"));
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &dest).map_err(
                    |e| match e.kind() {
                        io::ErrorKind::AlreadyExists => refused("is given twice"),
                        _ => io_err("create", &dest)(e).into(),
                    },
                )?;
                links.insert(rel);
                done.links += 1;
            }
            _ => return Err(refused("is not a file, folder or symbolic link")),
        }
    }
    Ok(done)
}

/// The part of `raw` below `NAME/`: `Ok(None)` for `NAME/` itself; an
/// error for anything else than normal components below it.
fn relative(raw: &[u8], name: &str) -> Result<Option<PathBuf>, &'static str> {
    if raw.len() > MAX_PATH || raw.contains(&0) {
        return Err("has an unusable name");
    }
    let path = Path::new(OsStr::from_bytes(raw));
    let mut parts = path.components();
    match parts.next() {
        Some(Component::Normal(first)) if first.as_bytes() == name.as_bytes() => {}
        _ => return Err("is not inside the workspace's folder"),
    }
    let rest: PathBuf = parts.clone().collect();
    if parts.any(|c| !matches!(c, Component::Normal(_))) {
        return Err("has '..', '.' or an absolute part in its name");
    }
    if rest
        .components()
        .any(|c| c.as_os_str().len() > 255 || c.as_os_str().as_bytes().contains(&b'/'))
    {
        return Err("has a name part longer than ext4 holds (255 bytes)");
    }
    Ok((!rest.as_os_str().is_empty()).then_some(rest))
}

/// Makes the folders above `rel` in `tree` (0755) that the stream did not
/// give first; each must be a real folder, never a link.
fn make_parents(tree: &Path, rel: &Path) -> Result<(), WorkspaceError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut dir = tree.to_path_buf();
    for c in parent.components() {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(WorkspaceError::Refused {
                    path: rel.display().to_string(),
                    why: "lies under something that is not a folder",
                });
            }
            Err(_) => fs::DirBuilder::new()
                .mode(0o755)
                .create(&dir)
                .map_err(io_err("create", &dir))?,
        }
    }
    Ok(())
}

/// `mkfs.ext4` always makes `/lost+found`; a workspace disk's root is
/// the repository's folder, which must hold what was selected and nothing
/// else, so it is removed (e2fsck makes it again if it is ever needed),
/// unless the repository has one of its own. The debugfs request is
/// banger's own, fixed: no name from the tree goes into it.
pub fn drop_lost_found(disk: &Path, tree: &Path) -> Result<(), DiskError> {
    if fs::symlink_metadata(tree.join("lost+found")).is_ok() {
        return Ok(());
    }
    let debugfs = banger_config::find_tool("debugfs").ok_or(DiskError::MissingTool {
        tool: "debugfs",
        package: "e2fsprogs",
    })?;
    let out = std::process::Command::new(debugfs)
        .args(["-w", "-R", "rmdir /lost+found"])
        .arg(disk)
        .output()
        .map_err(io_err("run debugfs on", disk))?;
    // debugfs exits 0 even when a request fails: its stderr says.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaint = stderr
        .lines()
        .find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty());
    match complaint {
        Some(line) if out.status.success() => Err(DiskError::Tool {
            tool: "debugfs",
            path: disk.to_path_buf(),
            stderr: line.to_string(),
        }),
        _ if !out.status.success() => Err(DiskError::Tool {
            tool: "debugfs",
            path: disk.to_path_buf(),
            stderr: stderr.trim().to_string(),
        }),
        _ => Ok(()),
    }
}

fn full_or(e: io::Error, path: &Path) -> WorkspaceError {
    if e.raw_os_error() == Some(nix::libc::ENOSPC) || e.raw_os_error() == Some(nix::libc::EDQUOT) {
        DiskError::Full {
            path: path.to_path_buf(),
        }
        .into()
    } else {
        io_err("write", path)(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use tar::{Builder, Header};

    fn member(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &[u8], mode: u32, data: &[u8]) {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        // Written raw, so the test can give names the crate's
        // `append_data` would refuse.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, path, target).unwrap();
    }

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };

    #[test]
    fn unpacks_files_modes_links_and_folders() {
        let mut b = Builder::new(Vec::new());
        member(&mut b, EntryType::Directory, b"repo/", 0o755, b"");
        member(
            &mut b,
            EntryType::Regular,
            b"repo/run.sh",
            0o755,
            b"#!/bin/sh\n",
        );
        member(
            &mut b,
            EntryType::Regular,
            b"repo/a/b/c.txt",
            0o644,
            b"deep",
        );
        member(&mut b, EntryType::Directory, b"repo/empty/", 0o755, b"");
        link(&mut b, "repo/latest", "a/b/c.txt");
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let got = unpack(&data[..], "repo", &tree, LIMITS).unwrap();
        assert_eq!((got.files, got.links, got.bytes), (2, 1, 14));
        assert_eq!(fs::read(tree.join("a/b/c.txt")).unwrap(), b"deep");
        let mode = |p: &str| fs::symlink_metadata(tree.join(p)).unwrap().mode() & 0o777;
        assert_eq!(mode("run.sh"), 0o755);
        assert_eq!(mode("a/b/c.txt"), 0o644);
        assert_eq!(mode(""), 0o755);
        assert!(tree.join("empty").is_dir());
        assert_eq!(
            fs::read_link(tree.join("latest")).unwrap(),
            Path::new("a/b/c.txt")
        );
    }

    #[test]
    fn refuses_what_a_repository_must_not_do() {
        type Build = Box<dyn Fn(&mut Builder<Vec<u8>>)>;
        let cases: Vec<(Build, &str)> = vec![
            (
                Box::new(|b| member(b, EntryType::Regular, b"repo/../x", 0o644, b"x")),
                "'..'",
            ),
            (
                Box::new(|b| member(b, EntryType::Regular, b"other/x", 0o644, b"x")),
                "not inside",
            ),
            (
                Box::new(|b| member(b, EntryType::Regular, b"/repo/x", 0o644, b"x")),
                "not inside",
            ),
            (
                Box::new(|b| {
                    link(b, "repo/out", "/etc");
                    member(b, EntryType::Regular, b"repo/out/passwd", 0o644, b"x");
                }),
                "under a symbolic link",
            ),
            (
                Box::new(|b| {
                    member(b, EntryType::Regular, b"repo/x", 0o644, b"x");
                    member(b, EntryType::Regular, b"repo/x", 0o644, b"y");
                }),
                "given twice",
            ),
            (
                Box::new(|b| member(b, EntryType::Link, b"repo/hard", 0o644, b"")),
                "not a file, folder",
            ),
            (
                Box::new(|b| member(b, EntryType::Fifo, b"repo/fifo", 0o644, b"")),
                "not a file, folder",
            ),
        ];
        for (build, want) in cases {
            let mut b = Builder::new(Vec::new());
            build(&mut b);
            let data = b.into_inner().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let err = unpack(&data[..], "repo", &dir.path().join("t"), LIMITS)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn sizes_and_counts_are_bounded_before_they_are_spent() {
        let mut b = Builder::new(Vec::new());
        member(&mut b, EntryType::Regular, b"repo/big", 0o644, &[7; 2048]);
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let small = Limits {
            max_bytes: 1024,
            max_entries: 100,
        };
        let err = unpack(&data[..], "repo", &dir.path().join("t"), small).unwrap_err();
        assert!(matches!(err, WorkspaceError::TooLarge { .. }), "{err}");
        assert!(!dir.path().join("t/big").exists());
        let few = Limits {
            max_bytes: 1 << 20,
            max_entries: 0,
        };
        let err = unpack(&data[..], "repo", &dir.path().join("u"), few).unwrap_err();
        assert!(matches!(err, WorkspaceError::TooMany(0)), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_dir_name("my-repo_1.2"));
        for bad in ["", ".git", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_dir_name(bad), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&b""[..], "../x", &dir.path().join("t"), LIMITS).unwrap_err();
        assert!(err.to_string().contains("not a valid workspace name"));
    }
}
