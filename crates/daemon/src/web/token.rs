//! The web UI's per-install token: 32 random bytes, hex, in the state
//! directory with mode 0600, made on first use and kept across restarts
//! (so a browser's cookie outlives a daemon restart). Other local users
//! can reach 127.0.0.1; without this token they get a bare 401.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

const BYTES: usize = 32;

#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Reads the token at `path`, or makes it. Never follows a link, and
    /// refuses a file others may read or that holds something else.
    pub fn load_or_create(path: &Path) -> io::Result<Self> {
        let nofollow = nix::fcntl::OFlag::O_NOFOLLOW.bits();
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nofollow)
            .open(path)
        {
            Ok(mut file) => {
                let token = Token(hex::encode(rand::random::<[u8; BYTES]>()));
                file.write_all(token.0.as_bytes())?;
                file.sync_all()?;
                Ok(token)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mut file = OpenOptions::new()
                    .read(true)
                    .custom_flags(nofollow)
                    .open(path)?;
                let meta = file.metadata()?;
                if !meta.is_file() || meta.mode() & 0o077 != 0 {
                    return Err(io::Error::other(format!(
                        "{} is not a file only its owner can read: remove it, and bangerd makes a new one",
                        path.display()
                    )));
                }
                let mut text = String::new();
                Read::by_ref(&mut file)
                    .take(256)
                    .read_to_string(&mut text)?;
                let text = text.trim();
                if text.len() != BYTES * 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(io::Error::other(format!(
                        "{} does not hold a token: remove it, and bangerd makes a new one",
                        path.display()
                    )));
                }
                Ok(Token(text.to_ascii_lowercase()))
            }
            Err(e) => Err(e),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in constant time: how much of a guess is right must not
    /// show in how long the answer takes.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        given.len() == want.len()
            && given
                .iter()
                .zip(want)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-token");
        let t = Token::load_or_create(&path).unwrap();
        assert_eq!(t.as_str().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Token::load_or_create(&path).unwrap().as_str(), t.as_str());
        assert!(t.matches(t.as_str().as_bytes()));
        assert!(!t.matches(b"00"));
        let mut wrong = t.as_str().as_bytes().to_vec();
        wrong[63] ^= 1;
        assert!(!t.matches(&wrong));
    }

    #[test]
    fn a_readable_or_linked_or_bad_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web-token");
        std::fs::write(&path, "a".repeat(64)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Token::load_or_create(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Token::load_or_create(&path).is_ok());
        std::fs::write(&path, "short").unwrap();
        assert!(Token::load_or_create(&path).is_err());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(Token::load_or_create(&link).is_err());
    }
}
