//! The image's environment in minimal mode (OCI images): its config's
//! `Env`, which ssh sessions get through sshd's `SetEnv`, written by the
//! host as a file beside banger's sshd (`guest_paths::IMAGE_ENV`), one
//! `NAME=value` a line. Read at every exec, so a command sees what a
//! session sees. The host wrote it, but it is a file in the guest: it is
//! read only up to a bound, and an entry that is not `NAME=value` is
//! skipped.

use std::io::{ErrorKind, Read};
use std::path::Path;

/// The most read of the file (the host writes no more:
/// `banger_images::guest_tools::AGENT_ENV_MAX`).
pub const MAX_BYTES: u64 = 64 * 1024;

/// The entries of the file at `path`, in its order. No file (a systemd
/// guest) is no entries; so is one that cannot be read or is bigger than
/// [`MAX_BYTES`], said on stderr: the command still runs, with the
/// agent's own environment.
pub fn read(path: &Path) -> Vec<(String, String)> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            eprintln!(
                "banger-agent: cannot read the image's environment {}: {e}; left out",
                path.display()
            );
            return Vec::new();
        }
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_BYTES + 1).read_to_end(&mut bytes) {
        eprintln!(
            "banger-agent: cannot read the image's environment {}: {e}; left out",
            path.display()
        );
        return Vec::new();
    }
    if bytes.len() as u64 > MAX_BYTES {
        eprintln!(
            "banger-agent: the image's environment {} is over {} KiB; left out",
            path.display(),
            MAX_BYTES / 1024
        );
        return Vec::new();
    }
    parse(&bytes)
}

/// `NAME=value` lines; a line that is not one (no `=`, an empty name, a
/// NUL byte, not UTF-8) is skipped, as are empty lines. The rules are
/// those an exec spec's own environment is held to.
pub fn parse(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty() && !line.contains(&0))
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_name_value_lines_and_the_rest_is_skipped() {
        let text = b"PATH=/opt/image/bin:/usr/bin\n\
            GREETING=from the image config\n\
            \n\
            NOEQUALS\n\
            =novalue\n\
            NUL=a\0b\n\
            BAD=\xff\xfe\n\
            EMPTY=\n\
            EQ=a=b\n\
            LAST=no newline";
        assert_eq!(
            parse(text),
            [
                ("PATH", "/opt/image/bin:/usr/bin"),
                ("GREETING", "from the image config"),
                ("EMPTY", ""),
                ("EQ", "a=b"),
                ("LAST", "no newline"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(parse(b"").is_empty());
    }

    #[test]
    fn no_file_or_a_file_too_big_is_no_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-env");
        assert!(read(&path).is_empty());

        std::fs::write(&path, "A=1\nB=2\n").unwrap();
        assert_eq!(read(&path).len(), 2);

        let mut big = "A=1\n".to_owned();
        big.push_str(&"x".repeat(MAX_BYTES as usize));
        std::fs::write(&path, &big).unwrap();
        assert!(read(&path).is_empty());

        // Exactly the bound is read.
        let exact = format!("A={}", "x".repeat(MAX_BYTES as usize - 2));
        std::fs::write(&path, &exact).unwrap();
        assert_eq!(read(&path).len(), 1);
    }
}
