//! SSH keys: the user key banger logs in with, and per-VM sshd host keys.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::SshError;
use crate::openssh;

/// File name of a VM's sshd host key (and, with `.pub`, its public half),
/// as written by [`generate_host_key`] and as sshd's default
/// `HostKey /etc/ssh/ssh_host_ed25519_key` expects it in the guest.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// The comment on banger's managed user key.
const USER_KEY_COMMENT: &str = "banger";

/// Returns the public line (`ssh-ed25519 AAAA… comment`) of the key at
/// `path`, which banger logs in to guests with.
///
/// `managed`: banger's own key (`~/.local/state/banger/ssh/id_ed25519`):
/// created when absent (ed25519, no passphrase, 0600, comment "banger",
/// its directory 0700), its permissions repaired if loosened.
/// Not managed: the user's `ssh_key_path`, which must exist and is never
/// created or modified; when it has no `.pub`, the public half is read from
/// the private key (which then must have no passphrase).
pub fn ensure_user_key(path: &Path, managed: bool) -> Result<String, SshError> {
    if !path.exists() {
        if !managed {
            return Err(SshError::KeyMissing {
                path: path.to_path_buf(),
            });
        }
        create_managed_key(path)?;
    }
    let meta = fs::metadata(path)
        .map_err(|e| SshError::io(format!("reading ssh key {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(SshError::Invalid {
            what: "ssh key",
            value: path.display().to_string(),
            why: "not a regular file",
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        if !managed {
            return Err(SshError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        fs::set_permissions(path, Permissions::from_mode(0o600))
            .map_err(|e| SshError::io(format!("chmod 600 {}", path.display()), e))?;
    }
    let public = public_path(path);
    match fs::read_to_string(&public) {
        Ok(text) => return parse_public_line(&text, &public),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SshError::io(format!("reading {}", public.display()), e)),
    }
    // No .pub: derive it. `-P ""` makes a passphrase-protected key fail
    // instead of prompting on the terminal.
    let output = openssh::keygen(
        &[
            OsStr::new("-y"),
            OsStr::new("-P"),
            OsStr::new(""),
            OsStr::new("-f"),
            path.as_os_str(),
        ],
        || format!("reading the public half of {}", path.display()),
    )
    .map_err(|e| match e {
        SshError::ToolFailed { ref stderr, .. } if stderr.contains("passphrase") => {
            SshError::KeyNeedsPublicHalf {
                path: path.to_path_buf(),
            }
        }
        e => e,
    })?;
    let line = parse_public_line(&String::from_utf8_lossy(&output.stdout), path)?;
    if managed {
        write_file(&public, format!("{line}\n").as_bytes(), 0o644)?;
    }
    Ok(line)
}

/// Generates a VM's sshd host key pair on the host: `<dir>/ssh_host_ed25519_key`
/// (0600) and `.pub` (0644), replacing any previous pair (`dir` is created,
/// 0700, if absent). Returns the public line, to pin with
/// [`crate::KnownHosts::pin`] before the VM first boots.
pub fn generate_host_key(dir: &Path, comment: &str) -> Result<String, SshError> {
    if comment.chars().any(char::is_control) {
        return Err(SshError::Invalid {
            what: "host key comment",
            value: comment.to_string(),
            why: "control characters are not allowed",
        });
    }
    create_private_dir(dir)?;
    let key = NewKey::generate(dir, comment)?;
    let line = key.public_line()?;
    key.install(&dir.join(HOST_KEY_FILE))?;
    Ok(line)
}

fn create_managed_key(path: &Path) -> Result<(), SshError> {
    let dir = parent(path);
    create_private_dir(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(0o700))
        .map_err(|e| SshError::io(format!("chmod 700 {}", dir.display()), e))?;
    // Two banger processes may both find the key absent: one makes it, the
    // other then finds it.
    let _lock = lock_beside(path)?;
    if path.exists() {
        return Ok(());
    }
    NewKey::generate(dir, USER_KEY_COMMENT)?.install(path)
}

/// A freshly generated key pair in a temporary directory inside the
/// directory it is moved to (so the renames stay on one filesystem); the
/// directory goes when this is dropped, after the files have been moved.
struct NewKey {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: PathBuf,
}

impl NewKey {
    fn generate(dir: &Path, comment: &str) -> Result<Self, SshError> {
        let tmp = tempfile::Builder::new()
            .prefix(".banger-keygen-")
            .tempdir_in(dir)
            .map_err(|e| {
                SshError::io(
                    format!("creating a temporary directory in {}", dir.display()),
                    e,
                )
            })?;
        let private = tmp.path().join("key");
        openssh::keygen(
            &[
                OsStr::new("-q"),
                OsStr::new("-t"),
                OsStr::new("ed25519"),
                OsStr::new("-N"),
                OsStr::new(""),
                OsStr::new("-C"),
                OsStr::new(comment),
                OsStr::new("-f"),
                private.as_os_str(),
            ],
            || format!("generating an ed25519 key in {}", dir.display()),
        )?;
        let public = public_path(&private);
        for (file, mode) in [(&private, 0o600), (&public, 0o644)] {
            fs::set_permissions(file, Permissions::from_mode(mode))
                .map_err(|e| SshError::io(format!("chmod {mode:o} {}", file.display()), e))?;
        }
        Ok(NewKey {
            _dir: tmp,
            private,
            public,
        })
    }

    fn public_line(&self) -> Result<String, SshError> {
        let text = fs::read_to_string(&self.public)
            .map_err(|e| SshError::io(format!("reading {}", self.public.display()), e))?;
        parse_public_line(&text, &self.public)
    }

    /// Moves the pair to `path` and `path.pub`: the public half first, so
    /// a crash in between leaves a stale `.pub` beside the old private key
    /// (or none), which the next call replaces.
    fn install(self, path: &Path) -> Result<(), SshError> {
        rename(&self.public, &public_path(path))?;
        rename(&self.private, path)
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), SshError> {
    fs::rename(from, to)
        .map_err(|e| SshError::io(format!("moving a new key to {}", to.display()), e))
}

/// The public line of an OpenSSH `.pub` file: `type base64 [comment]`.
fn parse_public_line(text: &str, path: &Path) -> Result<String, SshError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut fields = line.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(blob)) if is_key_type(kind) && is_base64(blob) => Ok(line.to_string()),
        _ => Err(SshError::Invalid {
            what: "ssh public key",
            value: path.display().to_string(),
            why: "expected one 'TYPE BASE64 [COMMENT]' line",
        }),
    }
}

pub(crate) fn is_key_type(kind: &str) -> bool {
    !kind.is_empty()
        && !kind.starts_with('@')
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'@'))
}

pub(crate) fn is_base64(blob: &str) -> bool {
    !blob.is_empty()
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

fn create_private_dir(dir: &Path) -> Result<(), SshError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SshError::io(format!("creating {}", dir.display()), e))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), SshError> {
    let mut file = tempfile::Builder::new()
        .prefix(".banger-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(parent(path))
        .map_err(|e| SshError::io(format!("writing {}", path.display()), e))?;
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| SshError::io(format!("writing {}", path.display()), e))?;
    file.persist(path)
        .map_err(|e| SshError::io(format!("writing {}", path.display()), e.error))?;
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn public_path(private: &Path) -> PathBuf {
    sibling(private, ".pub")
}

/// Takes an exclusive lock on `<path>.lock` (made 0600 if absent), held
/// until the returned file is dropped: banger processes editing `path` at
/// once take turns.
pub(crate) fn lock_beside(path: &Path) -> Result<fs::File, SshError> {
    let lock_path = sibling(path, ".lock");
    // By a fixed name in banger's state: never through a link.
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(|e| SshError::io(format!("opening {}", lock_path.display()), e))?;
    lock.lock()
        .map_err(|e| SshError::io(format!("locking {}", lock_path.display()), e))?;
    Ok(lock)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
