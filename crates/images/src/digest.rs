//! SHA-256 pins for artifacts: computed when a file is made, recorded in a
//! `SHA256SUMS` file beside it (the format `sha256sum -c` reads), and
//! checked before the file is used, so a changed file is named, not booted.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub const SUMS_FILE: &str = "SHA256SUMS";

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(
        "{path} changed since it was made (SHA-256 {actual}, recorded {expected}): rebuild or re-pull it"
    )]
    Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}, line {line}: not a '<sha256>  <file>' line")]
    BadSums { path: PathBuf, line: usize },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// One pinned file, named relative to its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// The SHA-256 (lowercase hex) and size of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64), DigestError> {
    let io = |source| DigestError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// SHA-256 of a string, lowercase hex.
pub fn sha256_str(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Hashes `names` in `dir` and writes `dir/SHA256SUMS`.
pub fn pin(dir: &Path, names: &[&str]) -> Result<Vec<Artifact>, DigestError> {
    let mut artifacts = Vec::with_capacity(names.len());
    let mut sums = String::new();
    for name in names {
        let (sha256, size) = sha256_file(&dir.join(name))?;
        sums.push_str(&format!("{sha256}  {name}\n"));
        artifacts.push(Artifact {
            name: (*name).to_owned(),
            sha256,
            size,
        });
    }
    let path = dir.join(SUMS_FILE);
    fs::write(&path, sums).map_err(|source| DigestError::Io {
        action: "write",
        path,
        source,
    })?;
    Ok(artifacts)
}

/// Reads `dir/SHA256SUMS` (sizes from the files as they are now).
pub fn read_pins(dir: &Path) -> Result<Vec<Artifact>, DigestError> {
    let path = dir.join(SUMS_FILE);
    let text = fs::read_to_string(&path).map_err(|source| DigestError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let mut artifacts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || DigestError::BadSums {
            path: path.clone(),
            line: i + 1,
        };
        let (sha256, name) = line.split_once("  ").ok_or_else(bad)?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            return Err(bad());
        }
        let size = fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
        artifacts.push(Artifact {
            name: name.to_owned(),
            sha256: sha256.to_ascii_lowercase(),
            size,
        });
    }
    Ok(artifacts)
}

/// Re-hashes every file of `dir/SHA256SUMS`; the first one that changed is
/// the error.
pub fn verify(dir: &Path) -> Result<(), DigestError> {
    for artifact in read_pins(dir)? {
        let path = dir.join(&artifact.name);
        let (actual, _) = sha256_file(&path)?;
        if actual != artifact.sha256 {
            return Err(DigestError::Mismatch {
                path,
                expected: artifact.sha256,
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_str("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn pins_round_trip_and_a_changed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("rootfs.ext4"), "root").unwrap();
        fs::write(dir.path().join("vmlinux"), "kernel").unwrap();
        let pinned = pin(dir.path(), &["rootfs.ext4", "vmlinux"]).unwrap();
        assert_eq!(read_pins(dir.path()).unwrap(), pinned);
        assert_eq!(pinned[1].size, 6);
        verify(dir.path()).unwrap();

        fs::write(dir.path().join("vmlinux"), "kernel!").unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vmlinux changed since it was made"), "{err}");

        fs::write(dir.path().join(SUMS_FILE), "nonsense\n").unwrap();
        let err = read_pins(dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("SHA256SUMS, line 1: not a '<sha256>  <file>' line"),
            "{err}"
        );
    }
}
