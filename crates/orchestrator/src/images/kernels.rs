//! Kernels: recorded once per release and shared by the images that boot
//! them. Each holds Debian's bzImage, the ELF vmlinux extracted from it,
//! and banger's initramfs made from the same kernel's modules.

use std::fs;
use std::path::{Path, PathBuf};

use banger_images::initramfs::{self, GUEST_MODULES, InitramfsSpec};
use banger_images::kernel::extract_vmlinux_file;
use banger_images::kernel::rootfs::{self, ReadoutError, ReadoutLimits};
use banger_model::{ArtifactRole, KernelRecord, ObjectState};

use banger_images::digest::sha256_file;

use super::files::{io_failure, make_read_only, pin, place};
use super::{blocking, now};
use crate::Orchestrator;
use crate::error::Error;
use crate::progress::Progress;

pub(super) const BZIMAGE: &str = "vmlinuz";
pub(super) const VMLINUX: &str = "vmlinux";
pub(super) const INITRAMFS: &str = "initramfs.cpio.gz";

/// Where a kernel's files come from.
pub(super) enum KernelFiles {
    /// All three made already (the image build cache).
    Prebuilt {
        bzimage: PathBuf,
        vmlinux: PathBuf,
        initramfs: PathBuf,
    },
    /// A bzImage and its modules tree: vmlinux and the initramfs are made.
    Tree {
        bzimage: PathBuf,
        modules_dir: PathBuf,
    },
}

/// The kernel named `release`, recorded from `files` unless it exists.
pub(super) async fn ensure_kernel(
    d: &Orchestrator,
    release: &str,
    source: String,
    files: KernelFiles,
    progress: &Progress,
) -> Result<KernelRecord, Error> {
    let name = release.to_string();
    if let Some(k) = d.with_store(move |s| s.get_kernel(&name)).await? {
        if k.state == ObjectState::Ready {
            progress.info(format!("kernel {release} already present: reusing it"));
            return Ok(k);
        }
        return Err(Error::conflict(format!(
            "kernel {release} is still being made by another operation: try again shortly"
        )));
    }
    banger_model::validate_object_name("kernel", release)
        .map_err(|e| Error::invalid(e.to_string()))?;
    let record = KernelRecord {
        name: release.to_string(),
        version: release.to_string(),
        source,
        state: ObjectState::Building,
        artifacts: vec![],
        created_at: now(),
    };
    let rec = record.clone();
    d.with_store(move |s| s.insert_kernel(&rec)).await?;
    let dir = d.inner.paths.kernels_dir().join(release);
    let init = super::init_binary(d);
    let progress = progress.clone();
    let fill_dir = dir.clone();
    let filled = blocking(move || {
        recreate_dir(&fill_dir)?;
        fill(&fill_dir, files, init, &progress)
    })
    .await;
    match filled {
        Ok(artifacts) => {
            let name = record.name.clone();
            d.with_store(move |s| s.finish_kernel(&name, &artifacts))
                .await?;
            let name = record.name.clone();
            d.with_store(move |s| s.get_kernel(&name))
                .await?
                .ok_or_else(|| Error::internal("kernel vanished after being recorded"))
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            let name = record.name.clone();
            let _ = d.with_store(move |s| s.delete_kernel(&name)).await;
            Err(e)
        }
    }
}

fn fill(
    dir: &Path,
    files: KernelFiles,
    init: Result<PathBuf, Error>,
    progress: &Progress,
) -> Result<Vec<banger_model::Artifact>, Error> {
    progress.phase("kernel", "preparing the kernel");
    match files {
        KernelFiles::Prebuilt {
            bzimage,
            vmlinux,
            initramfs,
        } => {
            place(&bzimage, &dir.join(BZIMAGE))?;
            place(&vmlinux, &dir.join(VMLINUX))?;
            place(&initramfs, &dir.join(INITRAMFS))?;
        }
        KernelFiles::Tree {
            bzimage,
            modules_dir,
        } => {
            place(&bzimage, &dir.join(BZIMAGE))?;
            extract_vmlinux_file(&bzimage, &dir.join(VMLINUX))
                .map_err(|e| Error::invalid(e.to_string()))?;
            progress.phase("initramfs", "building banger's initramfs");
            let init = init?;
            let spec = InitramfsSpec {
                init: &init,
                modules_dir: &modules_dir,
                modules: GUEST_MODULES,
            };
            initramfs::build_initramfs(&spec, &dir.join(INITRAMFS))
                .map_err(|e| Error::invalid(e.to_string()))?;
            let (init_sha, _) = sha256_file(&init).map_err(|e| Error::internal(e.to_string()))?;
            initramfs::record_init(&dir.join(INITRAMFS), &init_sha)
                .map_err(|e| io_failure("write", &dir.join(INITRAMFS), e))?;
        }
    }
    progress.phase("pin", "recording SHA-256 pins");
    Ok(vec![
        pin(dir, BZIMAGE, ArtifactRole::Bzimage)?,
        pin(dir, VMLINUX, ArtifactRole::Vmlinux)?,
        pin(dir, INITRAMFS, ArtifactRole::Initramfs)?,
    ])
}

pub(super) fn recreate_dir(dir: &Path) -> Result<(), Error> {
    if dir.exists() {
        // No record owns it (we just inserted ours): a leftover of a crash.
        fs::remove_dir_all(dir).map_err(|e| io_failure("remove leftover", dir, e))?;
    }
    fs::create_dir_all(dir).map_err(|e| io_failure("create", dir, e))
}

/// The kernel installed inside an image's ext4 root filesystem: its
/// newest `/boot/vmlinuz-*` and the matching modules tree, copied into
/// `out` (which must not exist) without mounting and without running a
/// tool on the image ([`rootfs::read_rootfs_kernel`]). `image` names it
/// in errors. Returns `(release, bzimage, modules_dir)`.
pub(super) fn kernel_from_rootfs(
    image: &str,
    rootfs: &Path,
    out: &Path,
) -> Result<(String, PathBuf, PathBuf), Error> {
    let kernel =
        rootfs::read_rootfs_kernel(rootfs, out, &ReadoutLimits::default()).map_err(|e| {
            let message = format!("reading the kernel out of image {image:?}: {e}");
            match e {
                ReadoutError::Write { .. } => Error::internal(message),
                _ => Error::invalid(message),
            }
        })?;
    for path in &kernel.skipped {
        tracing::debug!(image = %rootfs.display(), %path, "not a folder or regular file: left out");
    }
    Ok((kernel.release, kernel.bzimage, kernel.modules_dir))
}

/// Brings the initramfs of `kernel` up to the installed banger-init,
/// before a boot. A kernel keeps its initramfs for as long as it is
/// recorded, but banger-init changes with banger: a kernel recorded by an
/// older banger, or placed from the build cache, carries the init of its
/// day, which may not know what this daemon puts on the command line. Only
/// `/init` is swapped ([`initramfs::replace_init`]), the file re-pinned,
/// and the init it now carries recorded beside it; one that still
/// matches costs one hash of the init.
pub(crate) async fn refresh_initramfs(
    d: &Orchestrator,
    kernel: &KernelRecord,
    progress: &Progress,
) -> Result<(), Error> {
    let Some(pinned) = kernel.artifact(ArtifactRole::Initramfs).cloned() else {
        return Ok(());
    };
    let dir = d.inner.paths.kernels_dir().join(&kernel.name);
    let init = super::init_binary(d)?;
    // Two boots of one kernel at once must not both rewrite it.
    let _guard = d.inner.initramfs_lock.lock().await;
    let path = dir.join(&pinned.file);
    let (init_sha, current) = {
        let (init, path) = (init.clone(), path.clone());
        blocking(move || {
            let (sha, _) = sha256_file(&init).map_err(|e| Error::internal(e.to_string()))?;
            let current = initramfs::carries_init(&path, &sha);
            Ok((sha, current))
        })
        .await?
    };
    if current {
        return Ok(());
    }
    progress.phase(
        "initramfs",
        format!(
            "putting this banger-init into kernel {}'s initramfs",
            kernel.name
        ),
    );
    let (name, file) = (kernel.name.clone(), pinned.file.clone());
    let repinned = blocking(move || {
        // Never launder a file that changed behind banger's back: it must
        // match its pin before it is rewritten and pinned anew.
        let (sha, _) = sha256_file(&path).map_err(|e| Error::internal(e.to_string()))?;
        if sha != pinned.sha256 {
            return Err(Error::conflict(format!(
                "{} of kernel {name} changed since it was made (SHA-256 {sha}, pinned {}): \
                 refusing to boot it; delete and rebuild or re-pull its image",
                path.display(),
                pinned.sha256
            )));
        }
        initramfs::replace_init(&path, &init).map_err(|e| Error::internal(e.to_string()))?;
        make_read_only(&path)?;
        initramfs::record_init(&path, &init_sha).map_err(|e| io_failure("write", &path, e))?;
        pin(&dir, &file, ArtifactRole::Initramfs)
    })
    .await?;
    let mut artifacts = kernel.artifacts.clone();
    for a in &mut artifacts {
        if a.role == ArtifactRole::Initramfs {
            *a = repinned.clone();
        }
    }
    let name = kernel.name.clone();
    tracing::info!(kernel = %name, "initramfs now carries the installed banger-init");
    d.with_store(move |s| s.finish_kernel(&name, &artifacts))
        .await
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A small ext4 holding a kernel and its modules tree.
    fn rootfs(dir: &Path, release: &str) -> Option<PathBuf> {
        rootfs_with(dir, release, |_| {})
    }

    /// As [`rootfs`], with `extra` adding to the modules tree first.
    fn rootfs_with(dir: &Path, release: &str, extra: impl FnOnce(&Path)) -> Option<PathBuf> {
        let Some(mkfs) = banger_config::find_tool("mkfs.ext4") else {
            banger_testkit::skip("e2fsprogs is not installed");
            return None;
        };
        let tree = dir.join("tree");
        let modules = tree.join(format!("usr/lib/modules/{release}"));
        fs::create_dir_all(tree.join("boot")).unwrap();
        fs::create_dir_all(&modules).unwrap();
        fs::write(tree.join(format!("boot/vmlinuz-{release}")), "bzImage").unwrap();
        fs::write(modules.join("modules.order"), "kernel/x.ko\n").unwrap();
        extra(&modules);
        let image = dir.join("rootfs.ext4");
        let ok = Command::new(mkfs)
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&tree)
            .arg(&image)
            .arg("16M")
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfs.ext4");
        Some(image)
    }

    /// The host folder once went into a debugfs request, where a space
    /// split the `dump` request into other arguments.
    #[test]
    fn reads_the_kernel_into_a_folder_whose_path_has_spaces() {
        let dir = tempfile::tempdir().unwrap();
        let Some(image) = rootfs(dir.path(), "6.1.0-test") else {
            return;
        };
        let out = dir.path().join("kernel out \"x\"");
        let (release, bzimage, modules) = kernel_from_rootfs("tiny", &image, &out)
            .map_err(|f| f.message)
            .unwrap();
        assert_eq!(release, "6.1.0-test");
        assert_eq!(fs::read(&bzimage).unwrap(), b"bzImage");
        assert_eq!(bzimage, out.join("vmlinuz-6.1.0-test"));
        assert!(modules.join("modules.order").is_file());
    }

    /// A 16 MiB image whose modules tree holds a sparse 3 GiB file: debugfs
    /// wrote every byte of it to the host's disk (a few such files fill
    /// it). Refused by its size before anything is written.
    #[test]
    fn a_modules_tree_over_the_byte_cap_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let Some(image) = rootfs_with(dir.path(), "6.1.0-test", |modules| {
            fs::File::create(modules.join("x.ko"))
                .unwrap()
                .set_len(3 << 30)
                .unwrap();
        }) else {
            return;
        };
        let out = dir.path().join("kernel");
        let err = kernel_from_rootfs("tiny", &image, &out)
            .map(|_| ())
            .unwrap_err()
            .message;
        assert!(
            err.contains("image \"tiny\"") && err.contains("more than 2147483648 bytes"),
            "{err}"
        );
        assert!(!out.exists(), "a partial read-out is left behind");
    }

    /// One `debugfs -w` request against `image`; the test's own words.
    fn edit(image: &Path, request: &str) {
        let out = Command::new(banger_config::find_tool("debugfs").expect("debugfs"))
            .args(["-w", "-R", request])
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success(), "debugfs -w {request:?}: {out:?}");
    }

    /// A crafted ext4 may hold two entries of one name: a symlink out of
    /// the tree, then a regular file. debugfs `rdump` made the link on the
    /// host and then wrote the file through it, as root. The host file
    /// stays as it was, and the image is refused, saying why.
    #[test]
    fn a_duplicate_name_in_the_modules_tree_never_writes_through_a_link() {
        if banger_config::find_tool("debugfs").is_none() {
            banger_testkit::skip("e2fsprogs is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let release = "6.1.0-test";
        let Some(image) = rootfs(dir.path(), release) else {
            return;
        };
        let target = dir.path().join("host-file");
        fs::write(&target, "original\n").unwrap();
        let modules = format!("/usr/lib/modules/{release}");
        // `ln` into a folder keeps the source's name and checks nothing.
        let payload = dir.path().join("payload");
        fs::write(&payload, "attacker bytes\n").unwrap();
        edit(&image, "mkdir /data");
        edit(&image, &format!("write {} /data/evil", payload.display()));
        edit(
            &image,
            &format!("symlink {modules}/evil {}", target.display()),
        );
        edit(&image, &format!("ln /data/evil {modules}"));

        let out = dir.path().join("kernel");
        let result = kernel_from_rootfs("tiny", &image, &out);
        assert_eq!(
            fs::read(&target).unwrap(),
            b"original\n",
            "host file written"
        );
        let err = result.map(|_| ()).unwrap_err().message;
        assert!(err.contains("two entries named \"evil\""), "{err}");
        assert!(!out.exists(), "a partial read-out is left behind");
    }
}
