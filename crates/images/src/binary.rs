//! Prebuilt binaries a recipe puts into an image (mise), each pinned by
//! the SHA-256 of what is downloaded: the binary itself from a URL (a
//! project's own release), or the tarball of a registry package (npm's
//! `@jdxcode/mise-linux-x64` ships mise's release binary), whichever the
//! builder can reach. A download is bounded in size while it runs, checked
//! against its pin before anything uses it, and kept in a cache by its
//! SHA-256, so a rebuild downloads nothing.
//!
//! Downloads use the host's curl, as the catalog's do: it brings the host's
//! TLS roots and proxy settings.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::digest;

/// The npm registry the builder reaches.
pub const NPM_REGISTRY: &str = "https://registry.npmjs.org";

/// No download or unpacked binary may be larger: mise's tarball is 52 MB,
/// its binary 151 MB.
pub const MAX_BYTES: u64 = 512 << 20;

/// Where a binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinarySource {
    /// The binary itself, at this URL.
    Url(String),
    /// An npm package's tarball; the binary is `package/bin/<name>` in it.
    Npm { package: String, version: String },
}

impl BinarySource {
    /// What is downloaded.
    pub fn url(&self) -> String {
        match self {
            BinarySource::Url(url) => url.clone(),
            BinarySource::Npm { package, version } => {
                let base = package.rsplit('/').next().unwrap_or(package);
                format!("{NPM_REGISTRY}/{package}/-/{base}-{version}.tgz")
            }
        }
    }
}

impl fmt::Display for BinarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BinarySource::Url(url) => write!(f, "url:{url}"),
            BinarySource::Npm { package, version } => write!(f, "npm:{package}@{version}"),
        }
    }
}

/// One binary of a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedBinary {
    /// Its name (`mise`): the file in the image and in a package's `bin/`.
    pub name: String,
    /// Its version as the recipe states it (an npm package's version).
    pub version: Option<String>,
    pub source: BinarySource,
    /// SHA-256 (lowercase hex) of what [`BinarySource::url`] serves.
    pub sha256: String,
    /// Where it goes in the image, relative to `/`.
    pub install_path: String,
}

impl PinnedBinary {
    /// mise as the default image ships it: npm's package of mise's release
    /// binary for linux-x64 (the registry the builder can reach).
    pub fn default_mise() -> Self {
        PinnedBinary {
            name: "mise".into(),
            version: Some(MISE_VERSION.into()),
            source: BinarySource::Npm {
                package: "@jdxcode/mise-linux-x64".into(),
                version: MISE_VERSION.into(),
            },
            sha256: MISE_NPM_SHA256.into(),
            install_path: "usr/local/bin/mise".into(),
        }
    }

    /// Checks what reaches curl's arguments and the image's paths.
    pub fn validate(&self) -> Result<(), BinaryError> {
        let bad = |field: &'static str, value: &str, why: &'static str| BinaryError::Bad {
            name: self.name.clone(),
            field,
            value: value.to_owned(),
            why,
        };
        let word = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-+@/".contains(c))
                && s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '@')
                && !s.contains("..")
        };
        if !word(&self.name) || self.name.contains(['/', '@']) {
            return Err(bad(
                "name",
                &self.name,
                "use letters, digits, '.', '_', '-'",
            ));
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(
                "sha256",
                &self.sha256,
                "give 64 lowercase hexadecimal digits",
            ));
        }
        match &self.source {
            BinarySource::Url(url) => {
                let parsed = url::Url::parse(url)
                    .map_err(|_| bad("url", url, "not a URL, like https://example.org/mise"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(bad("url", url, "use an http:// or https:// URL"));
                }
            }
            BinarySource::Npm { package, version } => {
                if !word(package) {
                    return Err(bad("npm package", package, "like @jdxcode/mise-linux-x64"));
                }
                if !word(version) || version.contains(['/', '@']) {
                    return Err(bad("npm version", version, "like 2026.9.15"));
                }
            }
        }
        let path = Path::new(&self.install_path);
        if self.install_path.is_empty()
            || path.is_absolute()
            || !path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad(
                "path",
                &self.install_path,
                "a relative path without '..', like usr/local/bin/mise",
            ));
        }
        Ok(())
    }
}

/// mise's version in the default image.
pub const MISE_VERSION: &str = "2026.9.15";
/// SHA-256 of `mise-linux-x64-2026.9.15.tgz` from the npm registry.
pub const MISE_NPM_SHA256: &str =
    "b51f2463bc4fcdc3b0959b1454792f64be3612e73d856cbca4a062e39e070e74";

#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("recipe binary {name}: {field} {value:?} is not valid: {why}")]
    Bad {
        name: String,
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(
        "{name} from {from}: SHA-256 is {actual}, the recipe pins {expected}: \
         the download is not the pinned file; fix the pin or the source"
    )]
    Mismatch {
        name: String,
        from: BinarySource,
        expected: String,
        actual: String,
    },
    #[error("{name} from {from}: download failed: {why}")]
    Download {
        name: String,
        from: BinarySource,
        why: String,
    },
    #[error("{name} from {from}: {why}")]
    Unpack {
        name: String,
        from: BinarySource,
        why: String,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BinaryError {
    let path = path.to_owned();
    move |source| BinaryError::Io {
        action,
        path,
        source,
    }
}

/// The pinned download of `binary` in `cache` (`<cache>/<sha256>`),
/// downloading it first when absent. A file whose SHA-256 is not the pin
/// is removed and named.
pub fn fetch(binary: &PinnedBinary, cache: &Path) -> Result<PathBuf, BinaryError> {
    binary.validate()?;
    fs::create_dir_all(cache).map_err(io_err("create", cache))?;
    let file = cache.join(&binary.sha256);
    if !file.exists() {
        let partial = cache.join(format!(".{}.partial", binary.sha256));
        let _ = fs::remove_file(&partial);
        let downloaded = download(&binary.source.url(), &partial).map_err(|why| {
            let _ = fs::remove_file(&partial);
            BinaryError::Download {
                name: binary.name.clone(),
                from: binary.source.clone(),
                why,
            }
        });
        downloaded?;
        fs::rename(&partial, &file).map_err(io_err("move into place", &file))?;
    }
    let (actual, _) = digest::sha256_file(&file).map_err(|e| BinaryError::Io {
        action: "hash",
        path: file.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    if actual != binary.sha256 {
        let _ = fs::remove_file(&file);
        return Err(BinaryError::Mismatch {
            name: binary.name.clone(),
            from: binary.source.clone(),
            expected: binary.sha256.clone(),
            actual,
        });
    }
    Ok(file)
}

/// curl to `dest`, stopped once the file passes [`MAX_BYTES`] (curl's own
/// `--max-filesize` trusts a `Content-Length` the server may not send).
fn download(url: &str, dest: &Path) -> Result<(), String> {
    let mut child = Command::new("curl")
        .args(["--fail", "--location", "--silent", "--show-error"])
        .args(["--proto", "=http,https", "--retry", "2"])
        .args(["--connect-timeout", "20", "--max-filesize"])
        .arg(MAX_BYTES.to_string())
        .arg("--output")
        .arg(dest)
        .arg("--")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run curl: {e} (apt-get install curl)"))?;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for curl: {e}"))?
        {
            break status;
        }
        if fs::metadata(dest).is_ok_and(|m| m.len() > MAX_BYTES) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("larger than {} MiB: refused", MAX_BYTES >> 20));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(err
            .lines()
            .last()
            .unwrap_or("curl gave no reason")
            .trim()
            .to_owned());
    }
    if fs::metadata(dest).is_ok_and(|m| m.len() > MAX_BYTES) {
        return Err(format!("larger than {} MiB: refused", MAX_BYTES >> 20));
    }
    Ok(())
}

/// Puts the binary of the pinned download `file` at its path in the tree
/// `root`, mode 0755: the file itself for a URL, `package/bin/<name>` out
/// of an npm tarball (gzip'd tar; only that regular file is read, its size
/// bounded).
pub fn install(binary: &PinnedBinary, file: &Path, root: &Path) -> Result<(), BinaryError> {
    let dest = root.join(&binary.install_path);
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    match fs::remove_file(&dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &dest)(e)),
    }
    let unpack = |why: String| BinaryError::Unpack {
        name: binary.name.clone(),
        from: binary.source.clone(),
        why,
    };
    match &binary.source {
        BinarySource::Url(_) => {
            fs::copy(file, &dest).map_err(io_err("copy", file))?;
        }
        BinarySource::Npm { .. } => {
            let wanted = format!("package/bin/{}", binary.name);
            let tgz = File::open(file).map_err(io_err("open", file))?;
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
            let mut found = false;
            for entry in archive
                .entries()
                .map_err(|e| unpack(format!("not a tarball: {e}")))?
            {
                let mut entry = entry.map_err(|e| unpack(format!("bad tarball: {e}")))?;
                let path = entry
                    .path()
                    .map_err(|e| unpack(format!("bad tarball: {e}")))?;
                if path.to_str() != Some(wanted.as_str()) {
                    continue;
                }
                if entry.header().entry_type() != tar::EntryType::Regular {
                    return Err(unpack(format!("{wanted} is not a regular file")));
                }
                let size = entry.size();
                if size > MAX_BYTES {
                    return Err(unpack(format!(
                        "{wanted} is larger than {} MiB",
                        MAX_BYTES >> 20
                    )));
                }
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(io_err("create", &dest))?;
                let copied = io::copy(&mut (&mut entry).take(MAX_BYTES), &mut out)
                    .map_err(io_err("write", &dest))?;
                if copied != size {
                    return Err(unpack(format!("{wanted} is cut short")));
                }
                found = true;
                break;
            }
            if !found {
                return Err(unpack(format!("the package has no {wanted}")));
            }
        }
    }
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", &dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npm_tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn binary(sha256: &str) -> PinnedBinary {
        PinnedBinary {
            sha256: sha256.into(),
            ..PinnedBinary::default_mise()
        }
    }

    #[test]
    fn npm_sources_name_the_registry_tarball() {
        let mise = PinnedBinary::default_mise();
        mise.validate().unwrap();
        assert_eq!(
            mise.source.url(),
            "https://registry.npmjs.org/@jdxcode/mise-linux-x64/-/mise-linux-x64-2026.9.15.tgz"
        );
        assert_eq!(
            mise.source.to_string(),
            "npm:@jdxcode/mise-linux-x64@2026.9.15"
        );
    }

    #[test]
    fn hostile_values_are_refused() {
        let mut b = PinnedBinary::default_mise();
        b.install_path = "../etc/passwd".into();
        assert!(b.validate().unwrap_err().to_string().contains("path"));
        let mut b = PinnedBinary::default_mise();
        b.source = BinarySource::Url("file:///etc/shadow".into());
        assert!(b.validate().unwrap_err().to_string().contains("http"));
        let mut b = PinnedBinary::default_mise();
        b.source = BinarySource::Npm {
            package: "--config=/x".into(),
            version: "1".into(),
        };
        assert!(b.validate().is_err());
        assert!(
            binary("ABC")
                .validate()
                .unwrap_err()
                .to_string()
                .contains("sha256")
        );
    }

    #[test]
    fn a_cached_download_that_is_not_the_pin_is_named_and_removed() {
        let cache = tempfile::tempdir().unwrap();
        let pin = "0".repeat(64);
        fs::write(cache.path().join(&pin), b"not mise").unwrap();
        let err = fetch(&binary(&pin), cache.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("mise from npm:@jdxcode/mise-linux-x64@2026.9.15: SHA-256 is "),
            "{err}"
        );
        assert!(err.contains(&pin), "{err}");
        assert!(!cache.path().join(&pin).exists());
    }

    #[test]
    fn the_binary_comes_out_of_the_package_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("p.tgz");
        fs::write(
            &tgz,
            npm_tarball(&[
                ("package/README.md", b"readme"),
                ("package/bin/mise", b"#!mise"),
            ]),
        )
        .unwrap();
        let root = dir.path().join("root");
        let b = PinnedBinary::default_mise();
        install(&b, &tgz, &root).unwrap();
        let dest = root.join("usr/local/bin/mise");
        assert_eq!(fs::read(&dest).unwrap(), b"#!mise");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(!root.join("usr/local/bin/README.md").exists());

        fs::write(&tgz, npm_tarball(&[("package/bin/other", b"x")])).unwrap();
        let err = install(&b, &tgz, &root).unwrap_err().to_string();
        assert!(err.contains("the package has no package/bin/mise"), "{err}");
    }
}
