//! Images and kernels: building, adopting, pulling, verifying, deleting.
//!
//! The files come from the images crate; this module journals them in the
//! store (a `building` record before any file, `ready` after the last) and
//! places them in per-object folders under the state dir. A failure removes
//! what it made, record and files; a crash mid-way is undone by
//! [`reconcile`] when the daemon starts again.

mod files;
mod kernels;

pub(crate) use kernels::refresh_initramfs;
mod oci;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use banger_api::{BuildImageRequest, PullImageRequest, RegisterImageRequest, VerifiedFile};
use banger_images::binary::{BinarySource, PinnedBinary};
use banger_images::catalog::{Catalog, Entry, Source};
use banger_images::debian::{self, AptSource, BuildOptions, BuildPhase, DebianRecipe};
use banger_images::digest::sha256_file;
use banger_images::oci::TreeOwner;
use banger_model::{
    Artifact, ArtifactRole, ImageFacts, ImageRecord, ObjectState, validate_object_name,
};
use serde::Deserialize;

use self::files::{Staging, check_ext4, fetch_pinned, io_failure, make_read_only, pin, place};
use self::kernels::{KernelFiles, ensure_kernel, kernel_from_rootfs, recreate_dir};
use crate::Orchestrator;
use crate::error::{Error, ErrorKind};
use crate::progress::Progress;

const ROOTFS: &str = "rootfs.ext4";
/// The recipe `image build` uses without `--from-config`.
pub const DEFAULT_RECIPE: &str = "debian-bookworm";

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs file work off the async executor.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("worker task failed: {e}")))?
}

/// banger's guest init, a static binary shipped beside `bangerd`, unless
/// the orchestrator was given one.
pub(crate) fn init_binary(d: &Orchestrator) -> Result<PathBuf, Error> {
    match &d.inner.init_binary {
        Some(path) => Ok(path.clone()),
        None => banger_images::initramfs::find_init_binary().map_err(Error::internal),
    }
}

/// A recipe file for `image build --from-config FILE`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    /// The image's name when `--name` is not given.
    name: Option<String>,
    /// Debian suite [default: bookworm].
    suite: Option<String>,
    /// Packages on top of the default set.
    #[serde(default)]
    packages: Vec<String>,
    /// Docker Engine [default: true]; `--no-docker` with `docker = true`
    /// is refused.
    docker: Option<bool>,
    /// mise: `false` leaves it out, a `[mise]` table names the binary to
    /// use ([`MiseBinary`]). Read as a value, then as one of the two, so a
    /// mistake is reported as such rather than as "no variant matched".
    mise: Option<toml::Value>,
}

/// What a recipe says about mise.
enum MiseChoice {
    Enabled(bool),
    Binary(MiseBinary),
}

impl MiseChoice {
    fn parse(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Boolean(b) => Ok(MiseChoice::Enabled(b)),
            toml::Value::Table(t) => toml::Value::Table(t)
                .try_into()
                .map(MiseChoice::Binary)
                .map_err(|e| format!("[mise]: {}", e.message().trim())),
            _ => Err("mise: write false, or a [mise] table with url or npm, and sha256".into()),
        }
    }
}

/// `[mise]`: `sha256` and one of `url` (the binary itself, e.g. mise's
/// own GitHub release) or `npm` (a package of the npm registry with
/// `bin/mise`, `PACKAGE@VERSION`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MiseBinary {
    url: Option<String>,
    npm: Option<String>,
    sha256: String,
    /// Shown by `image show`; an npm package's version by default.
    version: Option<String>,
}

impl MiseBinary {
    fn pinned(&self) -> Result<PinnedBinary, String> {
        let source = match (&self.url, &self.npm) {
            (Some(url), None) => BinarySource::Url(url.clone()),
            (None, Some(npm)) => {
                let (package, version) = npm
                    .rsplit_once('@')
                    .filter(|(p, v)| !p.is_empty() && !v.is_empty())
                    .ok_or_else(|| {
                        format!("mise.npm {npm:?}: write PACKAGE@VERSION, like @jdxcode/mise-linux-x64@2026.9.15")
                    })?;
                BinarySource::Npm {
                    package: package.to_owned(),
                    version: version.to_owned(),
                }
            }
            _ => return Err("[mise] needs one of url or npm, with sha256".into()),
        };
        let version = self.version.clone().or(match &source {
            BinarySource::Npm { version, .. } => Some(version.clone()),
            BinarySource::Url(_) => None,
        });
        Ok(PinnedBinary {
            version,
            source,
            sha256: self.sha256.clone(),
            ..PinnedBinary::default_mise()
        })
    }
}

pub(crate) async fn build(
    d: &Orchestrator,
    req: BuildImageRequest,
    progress: &Progress,
) -> Result<ImageRecord, Error> {
    let file: RecipeFile = match &req.recipe {
        Some(text) => toml::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "recipe {}: {}",
                req.recipe_origin.as_deref().unwrap_or("(inline)"),
                e.message().trim()
            ))
        })?,
        None => RecipeFile::default(),
    };
    let name = req
        .name
        .clone()
        .or(file.name.clone())
        .unwrap_or_else(|| DEFAULT_RECIPE.to_string());
    validate_object_name("image", &name).map_err(|e| Error::invalid(e.to_string()))?;
    refuse_existing(d, &name).await?;

    let suite = file
        .suite
        .clone()
        .unwrap_or_else(|| debian::DEFAULT_SUITE.to_string());
    // Checked before anything reads it: the suite reaches mmdebstrap's
    // arguments and apt's sources lines.
    let origin = req.recipe_origin.as_deref().unwrap_or("(inline)");
    let refused = |e: debian::DebianError| match &req.recipe {
        Some(_) => Error::invalid(format!("recipe {origin}: {e}")),
        None => Error::invalid(e.to_string()),
    };
    debian::validate_suite(&suite).map_err(refused)?;
    let sources = match &d.inner.config.debian_mirror {
        Some(mirror) => vec![AptSource {
            uri: mirror.clone(),
            suites: vec![suite.clone(), format!("{suite}-updates")],
            components: vec!["main".into()],
        }],
        None => debian::host_sources(&suite).map_err(|e| Error::invalid(e.to_string()))?,
    };
    let mut packages = file.packages.clone();
    packages.extend(req.packages.iter().cloned());
    if req.no_docker {
        let asks = match file.docker {
            Some(true) => Some("docker = true".to_string()),
            _ => packages
                .iter()
                .find(|p| debian::DOCKER_PACKAGES.contains(&p.as_str()))
                .map(|p| format!("package {p}")),
        };
        if let Some(asks) = asks {
            let whose = match &req.recipe {
                Some(_) => format!("recipe {origin}"),
                None => "--package".to_string(),
            };
            return Err(Error::invalid(format!(
                "--no-docker contradicts {whose}, which asks for Docker ({asks}): drop one of them"
            )));
        }
    }
    let mut recipe = DebianRecipe::bookworm(sources)
        .with_packages(&packages)
        .map_err(|e| Error::invalid(e.to_string()))?;
    recipe.suite = suite;
    if req.no_docker || file.docker == Some(false) {
        recipe = recipe.without_docker();
    }
    let mise = file
        .mise
        .clone()
        .map(MiseChoice::parse)
        .transpose()
        .map_err(|e| Error::invalid(format!("recipe {origin}: {e}")))?;
    match &mise {
        Some(MiseChoice::Enabled(false)) => recipe = recipe.without_mise(),
        Some(MiseChoice::Binary(b)) => {
            if req.no_mise {
                return Err(Error::invalid(format!(
                    "--no-mise contradicts recipe {origin}, which names a mise binary: drop one of them"
                )));
            }
            recipe = recipe.with_binary(
                b.pinned()
                    .map_err(|e| Error::invalid(format!("recipe {origin}: {e}")))?,
            );
        }
        Some(MiseChoice::Enabled(true)) | None => {}
    }
    if req.no_mise {
        recipe = recipe.without_mise();
    }
    recipe.validate().map_err(refused)?;
    let hash = recipe.hash();
    let init = init_binary(d)?;

    // One build at a time: they are heavy, and two builds of one recipe
    // would race for its cache folder.
    let _guard = d.inner.build_lock.lock().await;
    let log = d.inner.paths.image_build_log(&name);
    if let Some(parent) = log.parent() {
        fs::create_dir_all(parent).map_err(|e| io_failure("create", parent, e))?;
    }
    let _ = fs::remove_file(&log);
    progress.info(format!(
        "building image {name} from recipe {} (log: {})",
        &hash[..12],
        log.display()
    ));
    let options = BuildOptions {
        images_cache: d.inner.paths.image_cache(),
        apt_cache: d.inner.paths.apt_cache(),
        downloads: d.inner.paths.download_cache(),
        log: log.clone(),
        init: Some(init),
        id_mapper: Some(d.inner.id_mapper.clone()),
    };
    let p = progress.clone();
    let built = blocking(move || {
        debian::build_image(&recipe, &options, &mut |phase| {
            let (key, text) = match phase {
                BuildPhase::Fetch => ("fetch", "fetching the recipe's pinned binaries (mise)"),
                BuildPhase::Bootstrap => ("mmdebstrap", "bootstrapping Debian packages"),
                BuildPhase::Configure => ("configure", "configuring sshd, machine-id, hostname"),
                BuildPhase::Kernel => ("kernel", "extracting the kernel"),
                BuildPhase::Initramfs => ("initramfs", "building banger's initramfs"),
                BuildPhase::Filesystem => ("ext4", "writing the ext4 root filesystem"),
                BuildPhase::Pin => ("pin", "recording SHA-256 pins"),
            };
            p.phase(key, text);
        })
        .map_err(|e| {
            let e = e.to_string();
            let log = log.display().to_string();
            // Tool failures already name the log; others get it added.
            let hint = if e.contains(&log) {
                String::new()
            } else {
                format!(" (log: {log})")
            };
            Error::invalid(format!("image build failed: {e}{hint}"))
        })
    })
    .await?;
    if built.reused {
        progress.info(format!(
            "recipe {} was built before: reusing {}",
            &built.recipe_hash[..12],
            built.dir.display()
        ));
    }
    let pins = built.artifacts.clone();
    let pinned = move |file: &str, role| -> Result<Artifact, Error> {
        pins.iter()
            .find(|a| a.name == file)
            .map(|a| Artifact {
                role,
                file: file.to_string(),
                sha256: a.sha256.clone(),
                size: a.size,
            })
            .ok_or_else(|| Error::internal(format!("the build left no pin for {file}")))
    };
    let initramfs = built
        .initramfs()
        .ok_or_else(|| Error::internal("the build made no initramfs"))?;
    let kernel = ensure_kernel(
        d,
        &built.kernel_release,
        format!("recipe:{}", &built.recipe_hash[..12]),
        KernelFiles::Prebuilt {
            bzimage: built.bzimage(),
            vmlinux: built.vmlinux(),
            initramfs,
        },
        progress,
    )
    .await?;
    let rootfs = built.rootfs();
    let rootfs_pin = pinned(debian::ROOTFS, ArtifactRole::Rootfs)?;
    create_image(
        d,
        &name,
        &kernel.name,
        format!("recipe:{}", &built.recipe_hash[..12]),
        Some(built.facts.clone()),
        move |dir| {
            place(&rootfs, &dir.join(ROOTFS))?;
            Ok(vec![Artifact {
                file: ROOTFS.into(),
                ..rootfs_pin
            }])
        },
    )
    .await
}

pub(crate) async fn register(
    d: &Orchestrator,
    req: RegisterImageRequest,
    progress: &Progress,
) -> Result<ImageRecord, Error> {
    validate_object_name("image", &req.name).map_err(|e| Error::invalid(e.to_string()))?;
    if !req.rootfs.is_absolute() {
        return Err(Error::invalid(format!(
            "rootfs {} must be an absolute path",
            req.rootfs.display()
        )));
    }
    refuse_existing(d, &req.name).await?;
    require_kernel(d, &req.kernel).await?;
    let rootfs = req.rootfs.clone();
    blocking(move || check_ext4(&rootfs)).await?;
    let p = progress.clone();
    let src = req.rootfs.clone();
    create_image(
        d,
        &req.name,
        &req.kernel,
        format!("file:{}", req.rootfs.display()),
        None,
        move |dir| {
            p.phase("copy", format!("copying {}", src.display()));
            let dst = dir.join(ROOTFS);
            fs::copy(&src, &dst).map_err(|e| io_failure("copy", &src, e))?;
            make_read_only(&dst)?;
            p.phase("pin", "recording the SHA-256 pin");
            Ok(vec![pin(dir, ROOTFS, ArtifactRole::Rootfs)?])
        },
    )
    .await
}

pub(crate) fn catalog(d: &Orchestrator) -> Result<Catalog, Error> {
    Catalog::load(&d.inner.paths.user_catalog()).map_err(|e| Error::invalid(e.to_string()))
}

pub(crate) async fn pull(
    d: &Orchestrator,
    req: PullImageRequest,
    progress: &Progress,
) -> Result<ImageRecord, Error> {
    if banger_images::oci::is_oci_reference(&req.entry) {
        return oci::pull(d, req, progress).await;
    }
    if req.insecure || req.allow_devices {
        return Err(Error::invalid(format!(
            "--insecure and --allow-devices apply to OCI references, and {:?} is a catalog \
             entry name (write oci://docker.io/library/{} for the Docker Hub image)",
            req.entry, req.entry
        )));
    }
    let catalog = catalog(d)?;
    let entry: Entry = catalog
        .get(&req.entry)
        .map_err(|e| Error::not_found(e.to_string()))?
        .clone();
    let name = req.name.clone().unwrap_or_else(|| entry.name.clone());
    validate_object_name("image", &name).map_err(|e| Error::invalid(e.to_string()))?;
    match entry.source {
        Source::Recipe { recipe } => {
            if recipe != DEFAULT_RECIPE {
                return Err(Error::invalid(format!(
                    "catalog entry {:?} names recipe {recipe:?}, but this banger knows only \
                     {DEFAULT_RECIPE:?}",
                    entry.name
                )));
            }
            build(
                d,
                BuildImageRequest {
                    name: Some(name),
                    ..Default::default()
                },
                progress,
            )
            .await
        }
        Source::Rootfs { rootfs, kernel } => {
            refuse_existing(d, &name).await?;
            if let Some(k) = &kernel {
                require_kernel(d, k).await?;
            }
            let staging = Staging::new(d.inner.paths.images_dir().join(format!(".pull-{name}")))?;
            let file = staging.0.join(ROOTFS);
            let (p, e, f) = (progress.clone(), entry.name.clone(), file.clone());
            blocking(move || {
                fetch_pinned(&e, &rootfs, &f, &p)?;
                check_ext4(&f)
            })
            .await?;
            let kernel = match kernel {
                Some(k) => k,
                None => {
                    progress.phase("kernel", "reading the kernel installed in the image");
                    let (f, out) = (file.clone(), staging.0.join("kernel"));
                    let image = name.clone();
                    let (release, bzimage, modules_dir) =
                        blocking(move || kernel_from_rootfs(&image, &f, &out)).await?;
                    ensure_kernel(
                        d,
                        &release,
                        format!("catalog:{}", entry.name),
                        KernelFiles::Tree {
                            bzimage,
                            modules_dir,
                        },
                        progress,
                    )
                    .await?
                    .name
                }
            };
            let p = progress.clone();
            let image = create_image(
                d,
                &name,
                &kernel,
                format!("catalog:{}", entry.name),
                None,
                move |dir| {
                    let dst = dir.join(ROOTFS);
                    fs::rename(&file, &dst).map_err(|e| io_failure("move", &file, e))?;
                    make_read_only(&dst)?;
                    p.phase("pin", "recording the SHA-256 pin");
                    Ok(vec![pin(dir, ROOTFS, ArtifactRole::Rootfs)?])
                },
            )
            .await;
            drop(staging);
            image
        }
    }
}

/// The image `name`, built first when it is the default one and absent
/// (`vm run` on a fresh machine), else an error saying how to get it.
pub(crate) async fn ensure_image(
    d: &Orchestrator,
    name: &str,
    progress: &Progress,
) -> Result<ImageRecord, Error> {
    let key = name.to_string();
    if let Some(image) = d.with_store(move |s| s.get_image(&key)).await? {
        if image.state != ObjectState::Ready {
            return Err(Error::conflict(format!(
                "image {name} is still being made: wait for it to finish"
            )));
        }
        return Ok(image);
    }
    let default = d.inner.config.default_image_name();
    if name == default && name == DEFAULT_RECIPE {
        progress.info(format!(
            "image {name} is not built yet: building it now (once; later VMs reuse it)"
        ));
        return build(
            d,
            BuildImageRequest {
                name: Some(name.to_string()),
                ..Default::default()
            },
            progress,
        )
        .await;
    }
    if banger_images::oci::is_oci_reference(name) {
        return ensure_oci_image(d, name, progress).await;
    }
    Err(Error::not_found(format!(
        "image {name:?} not found: run 'banger image build' or 'banger image list'"
    )))
}

/// `vm run --image REF`, as `docker run` does: the image pulled from REF
/// under its default name, pulled now if it is not there yet.
async fn ensure_oci_image(
    d: &Orchestrator,
    reference: &str,
    progress: &Progress,
) -> Result<ImageRecord, Error> {
    let local = banger_images::oci::ImageRef::parse(reference)
        .map_err(|e| Error::invalid(e.to_string()))?
        .default_name();
    // Several first uses of one reference at once: one pulls, the others
    // wait for its record to be ready (or gone, then one of them pulls).
    let mut waiting = false;
    loop {
        let key = local.clone();
        match d.with_store(move |s| s.get_image(&key)).await? {
            Some(image) if image.oci.is_some() && image.state == ObjectState::Ready => {
                progress.info(format!(
                    "using image {local}, pulled earlier from {} ('banger image delete {local}' to pull again)",
                    image.source
                ));
                return Ok(image);
            }
            Some(image) if image.oci.is_some() => {
                if !waiting {
                    progress.info(format!(
                        "image {local} is being pulled by another command: waiting for it"
                    ));
                    waiting = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Some(image) => {
                return Err(Error::conflict(format!(
                    "{reference} would be pulled as image {local}, but an image of that name exists \
                     (from {}): pull it under another name with 'banger image pull {reference} --name NAME' \
                     and give --image NAME",
                    image.source
                )));
            }
            None => {
                progress.info(format!(
                    "image {reference} is not pulled yet: pulling it as {local}"
                ));
                let pulled = pull(
                    d,
                    PullImageRequest {
                        entry: reference.to_string(),
                        name: Some(local.clone()),
                        ..Default::default()
                    },
                    progress,
                )
                .await;
                match pulled {
                    // Another first use recorded it between the look and
                    // the pull: wait for that one.
                    Err(e) if e.kind == ErrorKind::Conflict => {
                        let key = local.clone();
                        if d.with_store(move |s| s.get_image(&key)).await?.is_none() {
                            return Err(e);
                        }
                    }
                    other => return other,
                }
            }
        }
    }
}

pub(crate) async fn get_image(d: &Orchestrator, name: &str) -> Result<ImageRecord, Error> {
    let key = name.to_string();
    d.with_store(move |s| s.get_image(&key))
        .await?
        .ok_or_else(|| not_found("image", name))
}

pub(crate) async fn get_kernel(
    d: &Orchestrator,
    name: &str,
) -> Result<banger_model::KernelRecord, Error> {
    let key = name.to_string();
    d.with_store(move |s| s.get_kernel(&key))
        .await?
        .ok_or_else(|| not_found("kernel", name))
}

/// Where an image's file of `role` is.
pub(crate) fn artifact_path(
    d: &Orchestrator,
    image: &ImageRecord,
    role: ArtifactRole,
) -> Result<PathBuf, Error> {
    image
        .artifact(role)
        .map(|a| d.inner.paths.images_dir().join(&image.name).join(&a.file))
        .ok_or_else(|| Error::internal(format!("image {} has no {role} file", image.name)))
}

/// Where a kernel's file of `role` is.
pub(crate) fn kernel_path(
    d: &Orchestrator,
    kernel: &banger_model::KernelRecord,
    role: ArtifactRole,
) -> Result<PathBuf, Error> {
    kernel
        .artifact(role)
        .map(|a| d.inner.paths.kernels_dir().join(&kernel.name).join(&a.file))
        .ok_or_else(|| Error::internal(format!("kernel {} has no {role} file", kernel.name)))
}

/// Hashes every file of the image and of its kernel against its pin.
/// Booting calls this first: a changed file is named, never booted.
/// What a file looked like when it was last hashed and matched its pin.
/// The kernel changes ctime on every write (and no one can set it back),
/// so a file with the same stamp still has the contents that matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl FileStamp {
    /// What the file is now, or `None` if it cannot be read.
    pub(crate) fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        })
    }

    /// As kept in a record: any change to the file (its contents, its
    /// metadata, or the file itself replaced) changes it.
    pub(crate) fn to_text(self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns
        )
    }
}

/// Files verified since the daemon started, so that booting does not
/// re-hash a gigabyte that has not been touched: a boot checks the stamp,
/// and hashes again whenever anything about the file changed.
#[derive(Default)]
pub(crate) struct VerifiedFiles(
    std::sync::Mutex<std::collections::HashMap<PathBuf, (FileStamp, String)>>,
);

impl VerifiedFiles {
    fn matches(&self, path: &Path, sha256: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(path)
            .is_some_and(|(stamp, sha)| sha == sha256 && FileStamp::of(path) == Some(*stamp))
    }

    fn record(&self, path: &Path, stamp: FileStamp, sha256: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(path.to_path_buf(), (stamp, sha256.to_string()));
    }
}

/// Before a boot: every file of the image and its kernel must match its
/// pin; a file unchanged since this daemon last hashed it is not hashed
/// again.
pub(crate) async fn verify_for_boot(d: &Orchestrator, name: &str) -> Result<(), Error> {
    verify_files(d, name, false).await.map(|_| ())
}

/// `image verify`: hashes every file again, whatever the stamps say.
pub(crate) async fn verify(d: &Orchestrator, name: &str) -> Result<Vec<VerifiedFile>, Error> {
    verify_files(d, name, true).await
}

async fn verify_files(
    d: &Orchestrator,
    name: &str,
    full: bool,
) -> Result<Vec<VerifiedFile>, Error> {
    let key = name.to_string();
    let image = d
        .with_store(move |s| s.get_image(&key))
        .await?
        .ok_or_else(|| not_found("image", name))?;
    let kernel_name = image.kernel.clone();
    let kernel = d
        .with_store(move |s| s.get_kernel(&kernel_name))
        .await?
        .ok_or_else(|| not_found("kernel", &image.kernel))?;
    for (kind, state, n) in [
        ("image", image.state, &image.name),
        ("kernel", kernel.state, &kernel.name),
    ] {
        if state != ObjectState::Ready {
            return Err(Error::conflict(format!(
                "{kind} {n} is still being made: wait for it to finish"
            )));
        }
    }
    let mut files = Vec::new();
    let image_dir = d.inner.paths.images_dir().join(&image.name);
    let kernel_dir = d.inner.paths.kernels_dir().join(&kernel.name);
    for a in &image.artifacts {
        files.push((
            format!("image {}", image.name),
            image_dir.join(&a.file),
            a.clone(),
        ));
    }
    for a in &kernel.artifacts {
        files.push((
            format!("kernel {}", kernel.name),
            kernel_dir.join(&a.file),
            a.clone(),
        ));
    }
    let daemon = d.clone();
    blocking(move || {
        let cache = &daemon.inner.verified;
        files
            .into_iter()
            .map(|(owner, path, pinned)| {
                if !full && cache.matches(&path, &pinned.sha256) {
                    return Ok(VerifiedFile {
                        owner,
                        role: pinned.role,
                        path,
                        sha256: pinned.sha256,
                    });
                }
                let before = FileStamp::of(&path);
                let (sha256, _) = sha256_file(&path)
                    .map_err(|e| Error::conflict(format!("{owner}: {e}: rebuild or re-pull it")))?;
                if sha256 != pinned.sha256 {
                    return Err(Error::conflict(format!(
                        "{} of {owner} changed since it was made (SHA-256 {sha256}, pinned {}): \
                         refusing to boot it; delete and rebuild or re-pull it",
                        path.display(),
                        pinned.sha256
                    )));
                }
                // Remembered only if nothing changed while it was read.
                if let Some(stamp) = before
                    && FileStamp::of(&path) == Some(stamp)
                {
                    cache.record(&path, stamp, &sha256);
                }
                Ok(VerifiedFile {
                    owner,
                    role: pinned.role,
                    path,
                    sha256,
                })
            })
            .collect()
    })
    .await
}

pub(crate) async fn delete_image(d: &Orchestrator, name: &str) -> Result<(), Error> {
    let key = name.to_string();
    let users = d.with_store(move |s| s.vms_using_image(&key)).await?;
    if !users.is_empty() {
        return Err(Error::conflict(format!(
            "image {name} is used by VM(s) {}: delete them first",
            users.join(", ")
        )));
    }
    let key = name.to_string();
    d.with_store(move |s| s.delete_image(&key))
        .await
        .map_err(|f| if_missing(f, "image", name))?;
    remove_dir(d, &d.inner.paths.images_dir().join(name)).await
}

pub(crate) async fn delete_kernel(d: &Orchestrator, name: &str) -> Result<(), Error> {
    let key = name.to_string();
    d.with_store(move |s| s.delete_kernel(&key))
        .await
        .map_err(|f| if_missing(f, "kernel", name))?;
    remove_dir(d, &d.inner.paths.kernels_dir().join(name)).await
}

/// Undoes what a daemon that died mid-operation left `building`, and the
/// downloads into the OCI blob cache it left unfinished.
pub(crate) async fn reconcile(d: &Orchestrator) -> Result<(), Error> {
    let cache = banger_images::oci::BlobCache::new(d.inner.paths.oci_cache());
    blocking(move || {
        cache.remove_abandoned();
        Ok(())
    })
    .await?;
    let (kernels, images) = d.with_store(|s| s.unfinished()).await?;
    for name in images {
        tracing::warn!(image = %name, "removing an image left unfinished by a crash");
        let key = name.clone();
        d.with_store(move |s| s.delete_image(&key)).await?;
        remove_dir(d, &d.inner.paths.images_dir().join(&name)).await?;
    }
    for name in kernels {
        tracing::warn!(kernel = %name, "removing a kernel left unfinished by a crash");
        let key = name.clone();
        d.with_store(move |s| s.delete_kernel(&key)).await?;
        remove_dir(d, &d.inner.paths.kernels_dir().join(&name)).await?;
    }
    Ok(())
}

/// Journals an image, fills its folder with `fill` (off the executor),
/// and marks it ready; on failure removes both.
async fn create_image<F>(
    d: &Orchestrator,
    name: &str,
    kernel: &str,
    source: String,
    facts: Option<ImageFacts>,
    fill: F,
) -> Result<ImageRecord, Error>
where
    F: FnOnce(&Path) -> Result<Vec<Artifact>, Error> + Send + 'static,
{
    let record = ImageRecord {
        name: name.to_string(),
        kernel: kernel.to_string(),
        source,
        state: ObjectState::Building,
        artifacts: vec![],
        created_at: now(),
        oci: None,
        facts,
    };
    journal_image(d, record, |dir| blocking(move || fill(&dir))).await
}

/// Records `record` (`building`), makes its empty folder, runs `fill` on
/// it, and marks the image ready with the files `fill` pinned; on failure
/// removes the folder and the record. A second operation on the same name
/// meanwhile is refused by the record's primary key.
async fn journal_image<F, Fut>(
    d: &Orchestrator,
    record: ImageRecord,
    fill: F,
) -> Result<ImageRecord, Error>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Artifact>, Error>>,
{
    let name = record.name.clone();
    d.with_store(move |s| s.insert_image(&record))
        .await
        .map_err(|f| {
            if f.kind == ErrorKind::Conflict {
                Error::conflict(format!(
                    "image {name} already exists (or another pull is making it): choose \
                     another --name, or see 'banger image show {name}'"
                ))
            } else {
                f
            }
        })?;
    d.journaled("image:recorded").await;
    let name = name.as_str();
    let dir = d.inner.paths.images_dir().join(name);
    let fill_dir = dir.clone();
    let filled = match blocking(move || recreate_dir(&fill_dir)).await {
        Ok(()) => fill(dir.clone()).await,
        Err(e) => Err(e),
    };
    let key = name.to_string();
    match filled {
        Ok(artifacts) => {
            d.journaled("image:filled").await;
            d.with_store(move |s| {
                s.finish_image(&key, &artifacts)?;
                s.get_image(&key)
            })
            .await?
            .ok_or_else(|| Error::internal("image vanished after being recorded"))
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            let _ = d.with_store(move |s| s.delete_image(&key)).await;
            Err(e)
        }
    }
}

pub(super) async fn refuse_existing(d: &Orchestrator, name: &str) -> Result<(), Error> {
    let key = name.to_string();
    if d.with_store(move |s| s.get_image(&key)).await?.is_some() {
        return Err(Error::conflict(format!(
            "image {name} already exists: choose another --name, or delete it with \
             'banger image delete {name}'"
        )));
    }
    Ok(())
}

async fn require_kernel(d: &Orchestrator, name: &str) -> Result<(), Error> {
    let key = name.to_string();
    match d.with_store(move |s| s.get_kernel(&key)).await? {
        Some(k) if k.state == ObjectState::Ready => Ok(()),
        Some(_) => Err(Error::conflict(format!(
            "kernel {name} is still being made: try again shortly"
        ))),
        None => Err(not_found("kernel", name)),
    }
}

fn not_found(kind: &str, name: &str) -> Error {
    Error::not_found(format!(
        "{kind} {name:?} not found: see 'banger {kind} list'"
    ))
}

fn if_missing(f: Error, kind: &str, name: &str) -> Error {
    if f.kind == ErrorKind::NotFound {
        not_found(kind, name)
    } else {
        f
    }
}

async fn remove_dir(d: &Orchestrator, dir: &Path) -> Result<(), Error> {
    let dir = dir.to_path_buf();
    let mapper = d.inner.id_mapper.clone();
    blocking(move || match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // The staging tree of a pull that died mid-flatten, made without
        // root, holds files of the image's users: only the owner's user
        // namespace can remove them.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            TreeOwner::for_this_process(&mapper)
                .map_err(|_| io_failure("remove", &dir, e))
                .and_then(|owner| {
                    banger_images::oci::remove_tree(&owner, &dir)
                        .map_err(|e| Error::internal(e.to_string()))
                })
        }
        Err(e) => Err(io_failure("remove", &dir, e)),
    })
    .await
}

#[cfg(test)]
mod recipe_tests {
    use super::*;

    fn mise(text: &str) -> Result<MiseChoice, String> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| e.to_string())?;
        MiseChoice::parse(file.mise.expect("mise given"))
    }

    #[test]
    fn a_recipe_names_mise_by_url_or_npm_or_leaves_it_out() {
        assert!(matches!(
            mise("mise = false"),
            Ok(MiseChoice::Enabled(false))
        ));
        let sha = "ab".repeat(32);
        let Ok(MiseChoice::Binary(b)) = mise(&format!(
            "[mise]\nnpm = \"@jdxcode/mise-linux-x64@2025.1.0\"\nsha256 = \"{sha}\"\n"
        )) else {
            panic!("an npm table");
        };
        let pinned = b.pinned().unwrap();
        assert_eq!(
            pinned.source.to_string(),
            "npm:@jdxcode/mise-linux-x64@2025.1.0"
        );
        assert_eq!(pinned.version.as_deref(), Some("2025.1.0"));
        assert_eq!(pinned.install_path, "usr/local/bin/mise");
        let Ok(MiseChoice::Binary(b)) = mise(&format!(
            "[mise]\nurl = \"https://example.org/mise\"\nsha256 = \"{sha}\"\n"
        )) else {
            panic!("a url table");
        };
        assert_eq!(b.pinned().unwrap().version, None);

        let err = mise("[mise]\nurl = \"https://x/\"\nsha = \"x\"\n")
            .err()
            .unwrap();
        assert!(err.starts_with("[mise]: unknown field `sha`"), "{err}");
        let err = mise("mise = 3").err().unwrap();
        assert!(err.contains("write false, or a [mise] table"), "{err}");
        let Ok(MiseChoice::Binary(both)) = mise(&format!(
            "[mise]\nurl = \"https://x/\"\nnpm = \"a@1\"\nsha256 = \"{sha}\"\n"
        )) else {
            panic!("parses");
        };
        assert!(both.pinned().unwrap_err().contains("one of url or npm"));
    }
}
