//! The files of the guest's /etc that carry its identity, as banger
//! writes them both at boot (banger-init) and after a resume (the agent):
//! their text, and writing them without ever writing through a symlink.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// `/etc/hosts` with the guest's name on 127.0.1.1 (Debian's convention,
/// so `sudo` and friends resolve it), any older 127.0.1.1 line dropped.
pub fn hosts_with(existing: &str, hostname: &str) -> String {
    let mut out: String = existing
        .lines()
        .filter(|l| !l.trim_start().starts_with("127.0.1.1"))
        .map(|l| format!("{l}\n"))
        .collect();
    if out.is_empty() {
        out.push_str("127.0.0.1\tlocalhost\n");
    }
    out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    out
}

/// `/etc/resolv.conf` for the given nameservers; `by` says who wrote it
/// and from what, in its first line.
pub fn resolv_conf(dns: &[IpAddr], by: &str) -> String {
    let mut text = format!("# written by {by}\n");
    for server in dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

/// Writes a sibling file with `mode` and renames it over `path`, so a
/// reader sees the old file or the new one, never half of it, and a
/// symlink at `path` is replaced, never written through.
pub(crate) fn replace_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.banger-agent"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let written = (|| {
        // The umask may have taken bits `mode` asks for.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The permission bits of the regular file at `path`, or `default` when
/// there is none (or something else is there).
pub(crate) fn mode_or(path: &Path, default: u32) -> u32 {
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(default, |m| m.permissions().mode() & 0o7777)
}

/// The text of the file at `path`, at most `max` bytes of it; empty when
/// there is none.
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "it is over {} KiB",
            max / 1024
        )));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_gets_one_line_for_the_guest() {
        let existing = "127.0.0.1\tlocalhost\n127.0.1.1\told\n::1\tlocalhost ip6-localhost\n";
        assert_eq!(
            hosts_with(existing, "web-1"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\tweb-1\n"
        );
        assert_eq!(hosts_with("", "a"), "127.0.0.1\tlocalhost\n127.0.1.1\ta\n");
    }

    #[test]
    fn resolv_conf_lists_nameservers_in_order() {
        let text = resolv_conf(
            &["172.16.0.1".parse().unwrap(), "1.1.1.1".parse().unwrap()],
            "a test",
        );
        assert_eq!(
            text,
            "# written by a test\nnameserver 172.16.0.1\nnameserver 1.1.1.1\n"
        );
    }

    #[test]
    fn replacing_a_file_does_not_write_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "theirs").unwrap();
        let link = dir.path().join("hostname");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        replace_file(&link, b"ours\n", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "theirs");
        assert_eq!(fs::read_to_string(&link).unwrap(), "ours\n");
        assert_eq!(mode_or(&link, 0), 0o644);
        assert_eq!(mode_or(&dir.path().join("none"), 0o444), 0o444);
        replace_file(&link, b"secret\n", 0o600).unwrap();
        assert_eq!(mode_or(&link, 0), 0o600);
    }

    #[test]
    fn reading_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        assert_eq!(read_bounded(&path, 8).unwrap(), "");
        fs::write(&path, "12345678").unwrap();
        assert_eq!(read_bounded(&path, 8).unwrap(), "12345678");
        fs::write(&path, "123456789").unwrap();
        assert!(read_bounded(&path, 8).is_err());
    }
}
