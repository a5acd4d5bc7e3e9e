//! banger's own known_hosts: one line per VM, pinned before its first boot.
//!
//! A line is `HOSTS TYPE BASE64 banger-vm=NAME`: OpenSSH reads the last
//! field as the key's comment, and banger reads it as the owner of the line,
//! so `remove` takes out exactly one VM's line. `HOSTS` always starts with
//! [`host_key_alias`], which is what banger's own ssh invocations look the
//! key up by, then the aliases the caller gave (its IP, `<name>.vm`) for
//! anyone pointing plain `ssh` at this file. Lines banger did not write are
//! kept byte for byte.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::SshError;
use crate::keys::{is_base64, is_key_type};

const OWNER_PREFIX: &str = "banger-vm=";

/// The name under which a VM's host key is pinned and looked up
/// (`ssh -o HostKeyAlias=…`): independent of its address, so an address
/// reused by another VM can never match this VM's key.
pub fn host_key_alias(vm: &str) -> String {
    format!("{vm}.vm")
}

/// banger's known_hosts file (never the user's `~/.ssh/known_hosts`).
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
}

impl KnownHosts {
    pub fn new(path: PathBuf) -> Self {
        KnownHosts { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Pins `host_public_key` (an OpenSSH public line; its comment is
    /// dropped) for VM `vm` under [`host_key_alias`] and `aliases`,
    /// replacing the VM's previous line. An alias belongs to one VM: it is
    /// taken off any other VM's line (an address is leased to one VM at a
    /// time, so another VM's claim on it is stale). Written atomically,
    /// 0600, its directory created 0700 if absent.
    pub fn pin(&self, vm: &str, aliases: &[String], host_public_key: &str) -> Result<(), SshError> {
        check_vm(vm)?;
        for alias in aliases {
            check_alias(alias)?;
        }
        let mut key = host_public_key.split_whitespace();
        let (kind, blob) = match (key.next(), key.next()) {
            (Some(kind), Some(blob)) if is_key_type(kind) && is_base64(blob) => (kind, blob),
            _ => {
                return Err(SshError::Invalid {
                    what: "host public key",
                    value: host_public_key.to_string(),
                    why: "expected 'TYPE BASE64 [COMMENT]'",
                });
            }
        };
        let mut hosts = vec![host_key_alias(vm)];
        for alias in aliases {
            if !hosts.contains(alias) {
                hosts.push(alias.clone());
            }
        }
        let line = format!("{} {kind} {blob} {OWNER_PREFIX}{vm}\n", hosts.join(","));
        self.update(|lines| {
            let mut out: Vec<Vec<u8>> = Vec::with_capacity(lines.len() + 1);
            for original in lines {
                match parse_owned(&original) {
                    Some(owned) if owned.vm == vm => {}
                    Some(owned) if owned.hosts.iter().any(|h| hosts.contains(&h.to_string())) => {
                        let kept: Vec<&str> = owned
                            .hosts
                            .iter()
                            .copied()
                            .filter(|h| !hosts.contains(&h.to_string()))
                            .collect();
                        if !kept.is_empty() {
                            out.push(format!("{} {}\n", kept.join(","), owned.rest).into_bytes());
                        }
                    }
                    _ => out.push(original),
                }
            }
            if let Some(last) = out.last_mut()
                && !last.ends_with(b"\n")
            {
                last.push(b'\n');
            }
            out.push(line.clone().into_bytes());
            out
        })
    }

    /// Removes VM `vm`'s line, and nothing else; a missing file or VM is
    /// fine (delete must be repeatable).
    pub fn remove(&self, vm: &str) -> Result<(), SshError> {
        check_vm(vm)?;
        if !self.path.exists() {
            return Ok(());
        }
        self.update(|lines| {
            lines
                .into_iter()
                .filter(|l| parse_owned(l).is_none_or(|owned| owned.vm != vm))
                .collect()
        })
    }

    /// The key pinned for `vm` (`TYPE BASE64`), if any.
    pub fn pinned(&self, vm: &str) -> Result<Option<String>, SshError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SshError::io(format!("reading {}", self.path.display()), e)),
        };
        Ok(split_lines(&bytes)
            .into_iter()
            .filter_map(|l| parse_owned(&l).filter(|o| o.vm == vm).map(|o| o.key()))
            .next_back())
    }

    /// Read-modify-write under an exclusive lock on `<path>.lock` (two VMs
    /// created at once must not lose each other's line), replacing the file
    /// by rename so a reader never sees half of it. Unchanged contents are
    /// not rewritten.
    fn update(&self, edit: impl FnOnce(Vec<Vec<u8>>) -> Vec<Vec<u8>>) -> Result<(), SshError> {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let io_err = |what: &str, e| SshError::io(format!("{what} {}", self.path.display()), e);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SshError::io(format!("creating {}", dir.display()), e))?;
        let _lock = crate::keys::lock_beside(&self.path)?;

        let before = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("reading", e)),
        };
        let after = edit(split_lines(&before)).concat();
        if after == before && self.path.exists() {
            return Ok(());
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".known_hosts.")
            .permissions(Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| io_err("writing", e))?;
        tmp.write_all(&after)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| io_err("writing", e))?;
        tmp.persist(&self.path)
            .map_err(|e| io_err("replacing", e.error))?;
        // The rename is durable once the directory is.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Lines with their terminators, so that joining them gives the input back.
fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// A line banger wrote: its hosts, the rest after them, and its VM.
struct Owned<'a> {
    hosts: Vec<&'a str>,
    rest: &'a str,
    vm: &'a str,
}

impl Owned<'_> {
    fn key(&self) -> String {
        let mut fields = self.rest.split_whitespace();
        let kind = fields.next().unwrap_or_default();
        let blob = fields.next().unwrap_or_default();
        format!("{kind} {blob}")
    }
}

fn parse_owned(line: &[u8]) -> Option<Owned<'_>> {
    let text = std::str::from_utf8(line).ok()?.trim();
    if text.starts_with(['#', '@']) {
        return None;
    }
    let (hosts, rest) = text.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let [_, _, owner] = fields[..] else {
        return None;
    };
    Some(Owned {
        hosts: hosts.split(',').collect(),
        rest,
        vm: owner.strip_prefix(OWNER_PREFIX)?,
    })
}

fn check_vm(vm: &str) -> Result<(), SshError> {
    let ok = !vm.is_empty()
        && vm.len() <= 63
        && vm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SshError::Invalid {
            what: "VM name",
            value: vm.to_string(),
            why: "expected 1-63 letters, digits, '-', '_' or '.'",
        })
    }
}

/// A known_hosts host name: no separators, wildcards, negation, hashing
/// or markers, so it matches itself and nothing else.
fn check_alias(alias: &str) -> Result<(), SshError> {
    let ok = !alias.is_empty()
        && !alias.starts_with(['@', '|', '#'])
        && alias.bytes().all(|b| {
            b.is_ascii_graphic() && !matches!(b, b',' | b'*' | b'?' | b'!' | b'"' | b'\'' | b'\\')
        });
    if ok {
        Ok(())
    } else {
        Err(SshError::Invalid {
            what: "host alias",
            value: alias.to_string(),
            why: "expected a host name or address without spaces, commas or wildcards",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    fn aliases(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn fixture() -> (tempfile::TempDir, KnownHosts) {
        let dir = tempfile::tempdir().unwrap();
        let kh = KnownHosts::new(dir.path().join("ssh/known_hosts"));
        (dir, kh)
    }

    #[test]
    fn pin_writes_one_owned_line_with_all_aliases_0600() {
        let (_dir, kh) = fixture();
        kh.pin(
            "web",
            &aliases(&["172.16.0.5", "web.vm"]),
            &format!("{KEY_A} banger web"),
        )
        .unwrap();
        let text = fs::read_to_string(kh.path()).unwrap();
        assert_eq!(text, format!("web.vm,172.16.0.5 {KEY_A} banger-vm=web\n"));
        let mode = fs::metadata(kh.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(kh.path().parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(kh.pinned("web").unwrap().as_deref(), Some(KEY_A));
        assert_eq!(kh.pinned("db").unwrap(), None);
    }

    #[test]
    fn pin_replaces_and_remove_removes_only_that_vm_byte_for_byte() {
        let (_dir, kh) = fixture();
        fs::create_dir_all(kh.path().parent().unwrap()).unwrap();
        // Foreign lines: a comment, CRLF, odd spacing, a marker line, a
        // look-alike whose comment merely mentions banger, non-UTF-8, and
        // no final newline.
        let mut foreign: Vec<u8> = Vec::new();
        foreign.extend_from_slice(b"# my own notes\r\n");
        foreign.extend_from_slice(b"example.org   ssh-rsa AAAAB3Nza  user@host\n");
        foreign.extend_from_slice(b"@cert-authority *.corp ssh-ed25519 AAAAC3 banger-vm=web\n");
        foreign.extend_from_slice(b"other ssh-ed25519 AAAAC3 banger-vm=web extra\n");
        foreign.extend_from_slice(b"\xff\xfe binary\n");
        foreign.extend_from_slice(b"last.example ssh-ed25519 AAAAC3");
        fs::write(kh.path(), &foreign).unwrap();

        kh.pin("web", &aliases(&["172.16.0.5"]), KEY_A).unwrap();
        kh.pin("db", &aliases(&["172.16.0.6"]), KEY_B).unwrap();
        kh.pin("web", &aliases(&["172.16.0.7"]), KEY_B).unwrap();
        let text = fs::read(kh.path()).unwrap();
        let mut expected = foreign.clone();
        expected.extend_from_slice(b"\n");
        expected.extend_from_slice(format!("db.vm,172.16.0.6 {KEY_B} banger-vm=db\n").as_bytes());
        expected.extend_from_slice(format!("web.vm,172.16.0.7 {KEY_B} banger-vm=web\n").as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&text),
            String::from_utf8_lossy(&expected)
        );

        kh.remove("web").unwrap();
        kh.remove("db").unwrap();
        let mut expected = foreign.clone();
        expected.extend_from_slice(b"\n");
        assert_eq!(fs::read(kh.path()).unwrap(), expected);
        // Repeatable, and a missing VM or file is fine.
        kh.remove("web").unwrap();
        let (_d, empty) = fixture();
        empty.remove("web").unwrap();
        assert!(!empty.path().exists());
    }

    #[test]
    fn an_alias_moves_to_the_vm_that_pins_it_last() {
        let (_dir, kh) = fixture();
        kh.pin("old", &aliases(&["172.16.0.5", "extra"]), KEY_A)
            .unwrap();
        kh.pin("gone", &aliases(&["172.16.0.9"]), KEY_A).unwrap();
        kh.pin("new", &aliases(&["172.16.0.5", "172.16.0.9"]), KEY_B)
            .unwrap();
        let text = fs::read_to_string(kh.path()).unwrap();
        assert_eq!(
            text,
            format!(
                "old.vm,extra {KEY_A} banger-vm=old\n\
                 gone.vm {KEY_A} banger-vm=gone\n\
                 new.vm,172.16.0.5,172.16.0.9 {KEY_B} banger-vm=new\n"
            )
        );
    }

    #[test]
    fn the_file_is_replaced_never_rewritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, kh) = fixture();
        kh.pin("web", &[], KEY_A).unwrap();
        let before = fs::metadata(kh.path()).unwrap().ino();
        // A reader holding the old file keeps seeing a whole old file.
        let old_view = fs::File::open(kh.path()).unwrap();
        kh.pin("web", &[], KEY_B).unwrap();
        let after = fs::metadata(kh.path()).unwrap().ino();
        assert_ne!(before, after, "pin must write a new file and rename it");
        let old = io::read_to_string(old_view).unwrap();
        assert_eq!(old, format!("web.vm {KEY_A} banger-vm=web\n"));
        // No temporary file is left beside it.
        let names: Vec<String> = fs::read_dir(kh.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["known_hosts", "known_hosts.lock"]);
    }

    #[test]
    fn bad_input_is_refused_before_writing() {
        let (_dir, kh) = fixture();
        for alias in ["", "a b", "a,b", "*.vm", "!x", "|1|hash", "@revoked", "x\n"] {
            assert!(
                matches!(
                    kh.pin("web", &aliases(&[alias]), KEY_A),
                    Err(SshError::Invalid { .. })
                ),
                "{alias:?}"
            );
        }
        for vm in ["", "a b", "a=b", "web\nx"] {
            assert!(
                matches!(kh.pin(vm, &[], KEY_A), Err(SshError::Invalid { .. })),
                "{vm:?}"
            );
        }
        for key in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 not*base64",
            "@cert-authority AAAA",
        ] {
            assert!(
                matches!(kh.pin("web", &[], key), Err(SshError::Invalid { .. })),
                "{key:?}"
            );
        }
        assert!(!kh.path().exists());
    }
}
