//! The directories bangerd writes into, and the files it opens there by a
//! fixed name, are checked rather than trusted.
//!
//! bangerd runs as root (in dev mode), and its directories can be named by
//! the environment (`BANGER_HOME`, the XDG variables). A directory that
//! another user can write, or swap, would let that user plant a symbolic
//! link named `bangerd.log` or `bangerd.lock` and have the daemon truncate
//! or append to any file on the host. So, before anything is opened:
//!
//! - each of banger's own directories (config, state, runtime, cache) is
//!   made 0700 if missing, with every missing parent, as the daemon's user;
//!   if it exists, it must be a real directory (not a symbolic link), owned
//!   by the daemon's uid, and writable by no one else;
//! - every existing parent must be one that only root or the daemon's user
//!   can change: owned by one of them, and writable by group or others only
//!   with the sticky bit (`/tmp`), where nobody can rename or remove an
//!   entry they do not own. A state dir directly in `/tmp` is then safe
//!   because the state dir itself is checked, and `/tmp` cannot be made to
//!   swap it.
//!
//! Files are then opened with `O_NOFOLLOW` ([`open_own`]): the checks keep
//! other users out, and refusing links also guards against a link left
//! behind by anything else.

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use banger_config::Paths;

/// Which of banger's directories a check is about, for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Config,
    State,
    Runtime,
    Cache,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Config => "config",
            Role::State => "state",
            Role::Runtime => "runtime",
            Role::Cache => "cache",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot create the {role} directory {path}: {source}")]
    Create {
        role: Role,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot inspect {path} (for the {role} directory): {source}")]
    Inspect {
        role: Role,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the {role} directory {path} is a symbolic link, which bangerd does not follow: \
         point BANGER_HOME (or the XDG variable) at the directory it leads to, \
         or replace the link with a directory"
    )]
    Symlink { role: Role, path: PathBuf },
    #[error("{path} (for the {role} directory) is not a directory: move it aside")]
    NotADirectory { role: Role, path: PathBuf },
    #[error(
        "the {role} directory {path} is {problems}, so another user could plant files \
         bangerd opens: run '{fix}', or point BANGER_HOME elsewhere"
    )]
    Unsafe {
        role: Role,
        path: PathBuf,
        problems: String,
        fix: String,
    },
    #[error(
        "{path}, a parent of the {role} directory {dir}, is {problems}, so another user \
         could swap the directory: run '{fix}', or point BANGER_HOME elsewhere"
    )]
    UnsafeParent {
        role: Role,
        path: PathBuf,
        dir: PathBuf,
        problems: String,
        fix: String,
    },
}

/// Creates or checks every directory bangerd uses; see the module docs.
/// Called before the log or the lock is opened.
pub fn prepare(paths: &Paths) -> Result<(), DirError> {
    let uid = nix::unistd::geteuid().as_raw();
    // The state dir first: the runtime dir may lie inside it.
    for (role, dir) in [
        (Role::State, &paths.state_dir),
        (Role::Runtime, &paths.runtime_dir),
        (Role::Cache, &paths.cache_dir),
        (Role::Config, &paths.config_dir),
    ] {
        // Under the system install the config is the owner's, in a home
        // the daemon may only read: nothing is created there.
        if role == Role::Config && paths.system {
            continue;
        }
        ensure_dir(dir, role, uid)?;
    }
    Ok(())
}

/// Makes `dir` (0700, with its missing parents) or checks the one that is
/// there, then checks the parents that existed before.
pub fn ensure_dir(dir: &Path, role: Role, uid: u32) -> Result<(), DirError> {
    let inspect = |path: &Path, source| DirError::Inspect {
        role,
        path: path.to_path_buf(),
        source,
    };
    let mut chain: Vec<&Path> = dir.ancestors().collect();
    chain.reverse();
    let mut creating = false;
    for path in chain {
        if !creating {
            match fs::symlink_metadata(path) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => creating = true,
                Err(e) => return Err(inspect(path, e)),
            }
        }
        match DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            // Made by someone else meanwhile: checked below like any
            // directory that was already there.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(DirError::Create {
                    role,
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| inspect(dir, e))?;
    check_own(dir, &meta, role, uid)?;
    check_parents(dir, role, uid)
}

/// What may change `dir`'s path is every directory looked up on the way:
/// its lexical parents (a link among them can be replaced by whoever
/// writes the directory holding it) and, where links lead elsewhere, the
/// parents of where they lead.
fn check_parents(dir: &Path, role: Role, uid: u32) -> Result<(), DirError> {
    let inspect = |path: &Path, source| DirError::Inspect {
        role,
        path: path.to_path_buf(),
        source,
    };
    let real = fs::canonicalize(dir).map_err(|e| inspect(dir, e))?;
    for parent in dir.ancestors().skip(1).chain(real.ancestors().skip(1)) {
        let meta = fs::metadata(parent).map_err(|e| inspect(parent, e))?;
        if !meta.is_dir() {
            return Err(DirError::NotADirectory {
                role,
                path: parent.to_path_buf(),
            });
        }
        let problems = parent_problems(&meta, uid);
        if !problems.is_empty() {
            return Err(DirError::UnsafeParent {
                role,
                path: parent.to_path_buf(),
                dir: dir.to_path_buf(),
                problems: describe(&problems, &meta),
                fix: fix(parent, &problems, uid),
            });
        }
    }
    Ok(())
}

fn check_own(dir: &Path, meta: &Metadata, role: Role, uid: u32) -> Result<(), DirError> {
    if meta.file_type().is_symlink() {
        return Err(DirError::Symlink {
            role,
            path: dir.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(DirError::NotADirectory {
            role,
            path: dir.to_path_buf(),
        });
    }
    let problems = own_problems(meta, uid);
    if problems.is_empty() {
        return Ok(());
    }
    Err(DirError::Unsafe {
        role,
        path: dir.to_path_buf(),
        problems: describe(&problems, meta),
        fix: fix(dir, &problems, uid),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Problem {
    Owner(u32),
    Writable,
}

/// banger's own directory: the daemon's, and no one else may write it.
fn own_problems(meta: &Metadata, uid: u32) -> Vec<Problem> {
    let mut problems = Vec::new();
    if meta.uid() != uid {
        problems.push(Problem::Owner(meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        problems.push(Problem::Writable);
    }
    problems
}

/// A parent: root may own it too (`/`, `/home`, `/run/user`), and others
/// may write it if the sticky bit keeps them from renaming our entry.
fn parent_problems(meta: &Metadata, uid: u32) -> Vec<Problem> {
    let mut problems = Vec::new();
    if meta.uid() != uid && meta.uid() != 0 {
        problems.push(Problem::Owner(meta.uid()));
    }
    if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        problems.push(Problem::Writable);
    }
    problems
}

fn describe(problems: &[Problem], meta: &Metadata) -> String {
    let mode = meta.mode() & 0o7777;
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "others",
    };
    problems
        .iter()
        .map(|p| match p {
            Problem::Owner(owner) => format!("owned by uid {owner}, not bangerd's"),
            Problem::Writable => format!("writable by {writers} (mode {mode:04o})"),
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The shell commands that fix `problems`, with the path quoted.
fn fix(path: &Path, problems: &[Problem], uid: u32) -> String {
    let lossy = path.to_string_lossy();
    let quoted = shlex::try_quote(&lossy).unwrap_or(lossy.clone());
    // `root:` also gives root's group; a bare uid may have no passwd
    // entry to take a group from.
    let owner = if uid == 0 {
        "root:".to_string()
    } else {
        uid.to_string()
    };
    problems
        .iter()
        .map(|p| match p {
            Problem::Owner(_) => format!("chown {owner} {quoted}"),
            Problem::Writable => format!("chmod go-w {quoted}"),
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

#[derive(Debug, thiserror::Error)]
pub enum OwnFileError {
    #[error(
        "{path} is a symbolic link, and bangerd never follows one to its own files: \
         remove the link (the file it points to was not touched)"
    )]
    Symlink { path: PathBuf },
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Opens one of bangerd's own files (the lock, the log) by its fixed name,
/// never through a symbolic link: a link planted there would otherwise
/// make the daemon truncate or append to whatever it points at.
pub fn open_own(path: &Path, options: &mut OpenOptions) -> Result<File, OwnFileError> {
    options
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(nix::libc::ELOOP) {
                OwnFileError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                OwnFileError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn missing_dir_and_parents_are_made_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        ensure_dir(&dir, Role::State, uid()).unwrap();
        for made in [tmp.path().join("a"), tmp.path().join("a/b"), dir.clone()] {
            assert_eq!(mode(&made), 0o700, "{}", made.display());
            assert_eq!(fs::metadata(&made).unwrap().uid(), uid());
        }
        // Checking again what we made passes.
        ensure_dir(&dir, Role::State, uid()).unwrap();
    }

    #[test]
    fn writable_dir_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        for bad in [0o777, 0o770, 0o1777] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(bad)).unwrap();
            let err = ensure_dir(&dir, Role::State, uid())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("state directory {}", dir.display())),
                "{err}"
            );
            assert!(err.contains("writable by"), "{err}");
            assert!(
                err.contains(&format!("chmod go-w {}", dir.display())),
                "{err}"
            );
        }
        // Readable by others is not a way in.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir, Role::State, uid()).unwrap();
    }

    #[test]
    fn dir_of_another_uid_is_refused_with_the_fix() {
        if !nix::unistd::geteuid().is_root() {
            banger_testkit::skip("needs root to chown a directory to another uid");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let err = ensure_dir(&dir, Role::State, 0).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert!(
            err.contains(&format!("chown root: {}", dir.display())),
            "{err}"
        );
    }

    #[test]
    fn symlinked_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("real")).unwrap();
        let dir = tmp.path().join("state");
        std::os::unix::fs::symlink(tmp.path().join("real"), &dir).unwrap();
        let err = ensure_dir(&dir, Role::State, uid()).unwrap_err();
        assert!(matches!(err, DirError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn parents_are_checked_but_sticky_ones_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        let dir = shared.join("state");

        // Like /tmp: anyone may write, nobody may rename our entry.
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_dir(&dir, Role::State, uid()).unwrap();

        // Without the sticky bit anyone could move our directory aside.
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_dir(&dir, Role::State, uid()).unwrap_err();
        assert!(matches!(err, DirError::UnsafeParent { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}, a parent of", shared.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("chmod go-w {}", shared.display())),
            "{text}"
        );
    }

    #[test]
    fn fix_quotes_paths() {
        let problems = [Problem::Owner(7), Problem::Writable];
        assert_eq!(
            fix(Path::new("/tmp/a b"), &problems, 0),
            "chown root: '/tmp/a b' && chmod go-w '/tmp/a b'"
        );
        assert_eq!(fix(Path::new("/x"), &problems[..1], 1000), "chown 1000 /x");
    }

    #[test]
    fn own_files_are_never_opened_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        let link = tmp.path().join("bangerd.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_own(
            &link,
            OpenOptions::new().create(true).write(true).truncate(true),
        )
        .unwrap_err();
        assert!(matches!(err, OwnFileError::Symlink { .. }), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
    }
}
