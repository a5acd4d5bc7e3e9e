//! banger's own ssh_config (`~/.config/banger/ssh_config`): a `Host *.vm`
//! block that lets plain `ssh root@NAME.vm` reach a VM with banger's key,
//! banger's known_hosts and strict host key checking. bangerd rewrites it
//! at every start; [`crate::user_config`] includes it from `~/.ssh/config`
//! when the user asks.

use std::fs::{DirBuilder, Permissions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::openssh::{SSH, config_path, config_path_then, wait_until};
use crate::{SshError, host_key_alias};

/// The pattern of VM host names: every `.vm` name goes to banger's VMs.
pub const VM_HOSTS: &str = "*.vm";

/// What the `Host *.vm` block points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSshConfig {
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    /// Where ssh keeps its ControlMaster sockets (`<dir>/%C`, a 40-digit
    /// hash, so any name fits in a socket path).
    pub control_dir: PathBuf,
}

impl VmSshConfig {
    /// The file's bytes. The host key is looked up as the name typed
    /// (`NAME.vm`), which banger pins for every VM beside its address.
    pub fn render(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        out.extend_from_slice(
            b"# banger's ssh settings for its VMs, rewritten by bangerd at every start:\n\
              # edits here are lost. 'banger ssh-config --install' includes this file\n\
              # from ~/.ssh/config, so that 'ssh root@NAME.vm' reaches VM NAME.\n",
        );
        out.extend_from_slice(format!("Host {VM_HOSTS}\n").as_bytes());
        let mut line = |bytes: &[u8]| {
            out.extend_from_slice(b"    ");
            out.extend_from_slice(bytes);
            out.push(b'\n');
        };
        line(b"User root");
        line(config_path("IdentityFile", &self.identity).as_bytes());
        line(b"IdentitiesOnly yes");
        line(config_path("UserKnownHostsFile", &self.known_hosts).as_bytes());
        line(b"GlobalKnownHostsFile /dev/null");
        line(b"StrictHostKeyChecking yes");
        // A guest must never add keys to banger's known_hosts.
        line(b"UpdateHostKeys no");
        // The key is pinned by name; addresses are leased and reused.
        line(b"CheckHostIP no");
        line(b"ControlMaster auto");
        line(config_path_then("ControlPath", &self.control_dir, "/%C").as_bytes());
        line(b"ControlPersist 300");
        line(b"ServerAliveInterval 10");
        line(b"ServerAliveCountMax 3");
        // Nothing of the host is handed into the sandbox unless asked
        // for on the command line (-A, -X).
        line(b"ForwardAgent no");
        line(b"ForwardX11 no");
        out
    }

    /// Writes the file (0600; its directory made 0700 if absent) by
    /// temporary file and rename, so ssh never reads half of it; the
    /// control directory is made too (0700). Unchanged contents are left
    /// alone.
    pub fn write(&self, path: &Path) -> Result<(), SshError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        for d in [dir, self.control_dir.as_path()] {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| SshError::io(format!("creating {}", d.display()), e))?;
        }
        let bytes = self.render();
        if std::fs::read(path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        write_atomically(path, &bytes, 0o600)
    }
}

/// Ends the ControlMaster that `ssh root@VM.vm` opened through banger's
/// ssh_config at `config_file`, if there is one: called when the VM stops
/// or is deleted (as [`crate::SshTarget::close`] is for banger's own), so
/// the next `ssh root@VM.vm` does not go through a connection to a guest
/// that is gone. Masters of other users (`ssh me@VM.vm`) time out by
/// themselves (ServerAlive, 30 s).
pub fn close_master(config_file: &Path, vm: &str) {
    if !config_file.exists() {
        return;
    }
    let child = Command::new(SSH)
        .arg("-F")
        .arg(config_file)
        .args(["-o", "LogLevel=QUIET", "-O", "exit", "--"])
        .arg(format!("root@{}", host_key_alias(vm)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(child) = child {
        let _ = wait_until(child, Instant::now() + Duration::from_secs(5));
    }
}

/// Replaces `path` with `bytes` through a temporary file in the same
/// directory (mode `mode`), synced before the rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SshError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let err = |what: &str, e| SshError::io(format!("{what} {}", path.display()), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".banger-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| err("writing", e))?;
    // The umask may have narrowed the mode asked for; set it exactly.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(|e| err("writing", e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| err("writing", e))?;
    tmp.persist(path).map_err(|e| err("replacing", e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn config(dir: &Path) -> VmSshConfig {
        VmSshConfig {
            identity: dir.join("state dir/ssh/id_ed25519"),
            known_hosts: dir.join("state dir/ssh/known_hosts"),
            control_dir: dir.join("run/ssh"),
        }
    }

    #[test]
    fn written_0600_atomically_and_only_when_changed() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/ssh_config");
        let c = config(dir.path());
        c.write(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), c.render());
        assert!(c.control_dir.is_dir());
        c.write(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
        let mut other = c.clone();
        other.identity = dir.path().join("k");
        other.write(&path).unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), meta.ino());
    }

    /// ssh itself reads the file: `ssh -G` prints the options it would use.
    #[test]
    fn ssh_reads_it_as_meant() {
        if Command::new("ssh").arg("-V").output().is_err() {
            banger_testkit::skip("ssh is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_config");
        let c = config(dir.path());
        c.write(&path).unwrap();
        let g = |host: &str| {
            let out = Command::new("ssh")
                .args(["-G", "-F"])
                .arg(&path)
                .arg(host)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let vm = g("web.vm");
        let has = |text: &str, line: &str| text.lines().any(|l| l == line);
        assert!(has(&vm, "user root"), "{vm}");
        assert!(has(&vm, "stricthostkeychecking true"), "{vm}");
        assert!(has(&vm, "identitiesonly yes"), "{vm}");
        let id = format!("identityfile {}", c.identity.display());
        assert!(has(&vm, &id), "{id} in {vm}");
        let kh = format!("userknownhostsfile {}", c.known_hosts.display());
        assert!(has(&vm, &kh), "{kh} in {vm}");
        let cp = vm
            .lines()
            .find_map(|l| l.strip_prefix("controlpath "))
            .unwrap();
        let expanded = Path::new(cp);
        assert_eq!(expanded.parent(), Some(c.control_dir.as_path()));
        assert_eq!(expanded.file_name().unwrap().len(), 40, "%C is a hash");
        // Other hosts are not banger's business.
        let other = g("example.org");
        assert!(!has(&other, &kh), "{other}");
    }
}
