//! Debian's kernel packages as the source of banger's kernels: resolve the
//! flavour's meta-package (e.g. `linux-image-cloud-amd64`) to the versioned
//! package, download it with apt, and unpack it with `dpkg-deb` into a
//! cache directory keyed by package and version. `fetch_unpacked` does
//! the same for any package (the guest tools use it).
//!
//! The unpacked tree has `boot/vmlinuz-<release>` and
//! `lib/modules/<release>/`. Debian generates `modules.dep` at install time
//! (depmod in postinst), so the unpacked package has none; the initramfs
//! builder reads dependencies from the modules themselves in that case.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host_command::{self, CommandError};

/// The meta-package of Debian's cloud kernel flavour.
pub const CLOUD_KERNEL_META: &str = "linux-image-cloud-amd64";

/// Marks an unpacked package as complete (written last).
const COMPLETE_MARKER: &str = ".banger-complete";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot resolve package {meta}: {source}")]
    Resolve { meta: String, source: CommandError },
    #[error(
        "apt knows no kernel package behind {meta}: run 'apt-get update', or check the host's apt sources"
    )]
    NotFound { meta: String },
    #[error("cannot download {package}: {source}")]
    Download {
        package: String,
        source: CommandError,
    },
    #[error("cannot unpack {package}: {source}")]
    Unpack {
        package: String,
        source: CommandError,
    },
    #[error(
        "apt knows no package {package}: run 'apt-get update', or check the host's apt sources"
    )]
    Unknown { package: String },
    #[error("apt-get download {package} succeeded but left no .deb file")]
    NoDeb { package: String },
    #[error("{package} has no boot/vmlinuz-* (not a kernel image package?)")]
    NoKernel { package: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An unpacked Debian kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPackage {
    /// e.g. `linux-image-6.1.0-56-cloud-amd64`
    pub package: String,
    /// The Debian version, e.g. `6.1.192-2`.
    pub version: String,
    /// The kernel release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// Where the package is unpacked.
    pub root: PathBuf,
}

impl KernelPackage {
    pub fn bzimage(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// Asks apt which versioned package `meta` depends on, and its version.
pub fn resolve(meta: &str) -> Result<(String, String), PackageError> {
    let resolve_err = |source| PackageError::Resolve {
        meta: meta.to_owned(),
        source,
    };
    let depends = host_command::run(Command::new("apt-cache").args(["depends", meta]))
        .map_err(resolve_err)?;
    let package =
        parse_image_dependency(&String::from_utf8_lossy(&depends.stdout)).ok_or_else(|| {
            PackageError::NotFound {
                meta: meta.to_owned(),
            }
        })?;
    let show =
        host_command::run(Command::new("apt-cache").args(["show", "--no-all-versions", &package]))
            .map_err(resolve_err)?;
    let version = parse_version(&String::from_utf8_lossy(&show.stdout)).ok_or_else(|| {
        PackageError::NotFound {
            meta: meta.to_owned(),
        }
    })?;
    Ok((package, version))
}

/// Resolves `meta`, and downloads and unpacks its kernel package into
/// `cache` unless a complete copy of that version is already there.
pub fn fetch(meta: &str, cache: &Path) -> Result<KernelPackage, PackageError> {
    let (package, version) = resolve(meta)?;
    let root = fetch_unpacked(&package, &version, cache)?;
    open(&package, &version, &root)
}

/// The version of `package` apt would install.
pub fn candidate_version(package: &str) -> Result<String, PackageError> {
    let show =
        host_command::run(Command::new("apt-cache").args(["show", "--no-all-versions", package]))
            .map_err(|source| PackageError::Resolve {
            meta: package.to_owned(),
            source,
        })?;
    parse_version(&String::from_utf8_lossy(&show.stdout)).ok_or_else(|| PackageError::Unknown {
        package: package.to_owned(),
    })
}

/// Downloads `package` at `version` with apt and unpacks it (`dpkg-deb
/// -x`, no maintainer scripts: nothing is installed on the host) into
/// `cache/<package>_<version>/`, unless a complete copy is already there;
/// that directory.
pub fn fetch_unpacked(package: &str, version: &str, cache: &Path) -> Result<PathBuf, PackageError> {
    let root = cache.join(format!("{package}_{version}"));
    if root.join(COMPLETE_MARKER).exists() {
        return Ok(root);
    }
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| PackageError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(cache).map_err(io("cannot create", cache))?;
    // One fetch at a time per cache (tests run in parallel; so may daemons).
    let lock_path = cache.join(".lock");
    let lock = fs::File::create(&lock_path).map_err(io("cannot create", &lock_path))?;
    lock.lock().map_err(io("cannot lock", &lock_path))?;
    if root.join(COMPLETE_MARKER).exists() {
        return Ok(root);
    }
    let staging = cache.join(format!(".{package}_{version}.partial"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("cannot remove stale", &staging))?;
    }
    fs::create_dir(&staging).map_err(io("cannot create", &staging))?;
    let result = download_and_unpack(package, version, &staging);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if root.exists() {
        fs::remove_dir_all(&root).map_err(io("cannot remove incomplete", &root))?;
    }
    fs::rename(staging.join("root"), &root).map_err(io("cannot move into place", &root))?;
    let _ = fs::remove_dir_all(&staging);
    fs::write(root.join(COMPLETE_MARKER), b"").map_err(io("cannot write", &root))?;
    Ok(root)
}

fn download_and_unpack(package: &str, version: &str, staging: &Path) -> Result<(), PackageError> {
    host_command::run(
        Command::new("apt-get")
            // As root apt would drop to _apt, which cannot write here.
            .args(["-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{package}={version}"))
            .current_dir(staging),
    )
    .map_err(|source| PackageError::Download {
        package: package.to_owned(),
        source,
    })?;
    let deb = fs::read_dir(staging)
        .map_err(|source| PackageError::Io {
            action: "cannot list",
            path: staging.to_owned(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| PackageError::NoDeb {
            package: package.to_owned(),
        })?;
    host_command::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(staging.join("root")),
    )
    .map_err(|source| PackageError::Unpack {
        package: package.to_owned(),
        source,
    })?;
    let _ = fs::remove_file(&deb);
    Ok(())
}

/// The release of the newest `boot/vmlinuz-<release>` in an installed or
/// unpacked tree, `None` when there is none; an unreadable `boot/` is an
/// error.
pub fn newest_release(root: &Path) -> std::io::Result<Option<String>> {
    let mut releases: Vec<String> = fs::read_dir(root.join("boot"))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .collect();
    releases.sort();
    Ok(releases.pop())
}

fn open(package: &str, version: &str, root: &Path) -> Result<KernelPackage, PackageError> {
    let release = newest_release(root)
        .map_err(|source| PackageError::Io {
            action: "cannot list",
            path: root.join("boot"),
            source,
        })?
        .ok_or_else(|| PackageError::NoKernel {
            package: package.to_owned(),
        })?;
    Ok(KernelPackage {
        package: package.to_owned(),
        version: version.to_owned(),
        release,
        root: root.to_owned(),
    })
}

/// The first `Depends: linux-image-…` of `apt-cache depends` output.
fn parse_image_dependency(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let dep = line.trim().strip_prefix("Depends:")?.trim();
        let dep = dep.trim_start_matches('<').trim_end_matches('>');
        dep.starts_with("linux-image-").then(|| dep.to_owned())
    })
}

/// The `Version:` field of `apt-cache show` output.
fn parse_version(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_versioned_package_from_apt_cache_depends() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_image_dependency(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(parse_image_dependency("linux-image-cloud-amd64\n"), None);
        assert_eq!(
            parse_image_dependency("x\n  Depends: <linux-image-6.1.0-9-cloud-amd64>\n").as_deref(),
            Some("linux-image-6.1.0-9-cloud-amd64")
        );
    }

    #[test]
    fn parses_the_version_field() {
        let out =
            "Package: linux-image-6.1.0-56-cloud-amd64\nVersion: 6.1.192-2\nSection: kernel\n";
        assert_eq!(parse_version(out).as_deref(), Some("6.1.192-2"));
        assert_eq!(parse_version("Package: x\n"), None);
    }

    #[test]
    fn opening_a_tree_finds_the_release() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("boot")).unwrap();
        fs::write(dir.path().join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"").unwrap();
        let pkg = open("p", "1", dir.path()).unwrap();
        assert_eq!(pkg.release, "6.1.0-9-cloud-amd64");
        assert!(
            pkg.modules_dir()
                .ends_with("lib/modules/6.1.0-9-cloud-amd64")
        );
        let empty = tempfile::tempdir().unwrap();
        fs::create_dir_all(empty.path().join("boot")).unwrap();
        assert!(matches!(
            open("p", "1", empty.path()),
            Err(PackageError::NoKernel { .. })
        ));
    }
}
