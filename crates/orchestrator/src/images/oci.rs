//! `image pull` of an OCI reference: resolve the manifest, find a kernel,
//! journal the image `building` (with its OCI description), fetch the
//! layers into the shared blob cache (per-layer progress), flatten them
//! into a staging tree inside the image's folder, write the read-only
//! ext4, keep banger's guest tools beside it (fetched before anything is
//! journaled: a VM of the image must not need the network), pin both,
//! mark the image ready. Without root, the flattening and the ext4 run
//! as root of the owner's user namespace (bangerd runs itself as the
//! helper). Any failure removes the folder and the record; a crash leaves
//! a `building` record that reconcile removes with its folder, staging
//! tree included.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use banger_api::PullImageRequest;
use banger_images::guest_tools::{self, GuestTools};
use banger_images::kernel::package::{self, CLOUD_KERNEL_META};
use banger_images::oci::flatten::Compression;
use banger_images::oci::owner::{HELPER_FLAG, JobLayer, flatten_layers};
use banger_images::oci::{
    BlobCache, Descriptor, FlattenOptions, ImageRef, Limits, OciError, Registry, Resolved,
    TreeOwner, remove_tree, write_rootfs,
};
use banger_images::userns::IdMapper;
use banger_model::{
    ArtifactRole, ImageRecord, ObjectState, OciImageConfig, OciLayer, validate_object_name,
};
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};

use super::files::{io_failure, make_read_only, pin};
use super::kernels::{KernelFiles, ensure_kernel};
use super::{ROOTFS, blocking, journal_image, now, refuse_existing};
use crate::Orchestrator;
use crate::error::Error;
use crate::progress::Progress;

/// Layers downloaded at once.
const PARALLEL_DOWNLOADS: usize = 3;
/// The source of a kernel fetched for OCI images (`debian:<package>_<version>`).
const OCI_KERNEL_SOURCE: &str = "debian:";
/// Where the layers are flattened, inside the image's own folder.
const STAGING: &str = ".rootfs";

pub(super) async fn pull(
    d: &Orchestrator,
    req: PullImageRequest,
    progress: &Progress,
) -> Result<ImageRecord, Error> {
    let image = ImageRef::parse(&req.entry).map_err(oci_failure)?;
    let name = req.name.clone().unwrap_or_else(|| image.default_name());
    validate_object_name("image", &name).map_err(|e| Error::invalid(e.to_string()))?;
    refuse_existing(d, &name).await?;

    progress.phase("resolve", format!("resolving {image}"));
    let limits = limits(&d.inner.config);
    let registry = Registry::new(&image, req.insecure, limits).map_err(oci_failure)?;
    let cache = BlobCache::new(d.inner.paths.oci_cache());
    let resolved = registry
        .resolve(&image, &cache)
        .await
        .map_err(oci_failure)?;
    let compressions = resolved
        .layers
        .iter()
        .map(|l| {
            Compression::from_media_type(&l.media_type).ok_or_else(|| {
                oci_failure(OciError::MediaType {
                    what: format!("layer {}", l.digest),
                    media_type: l.media_type.clone(),
                })
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total: u64 = resolved.layers.iter().map(|l| l.size).sum();
    progress.info(format!(
        "{image} is {} ({} layers, {})",
        resolved.manifest_digest,
        resolved.layers.len(),
        human_bytes(total)
    ));

    let kernel = kernel_for_oci(d, progress).await?;
    let tools = tools_for_oci(d, progress).await?;
    let oci = describe(&resolved);
    let unpinned = ImageRef {
        digest: None,
        ..resolved.reference.clone()
    };
    let record = ImageRecord {
        name: name.clone(),
        kernel,
        source: format!("oci:{unpinned}@{}", resolved.manifest_digest),
        state: ObjectState::Building,
        artifacts: vec![],
        created_at: now(),
        oci: Some(oci),
        facts: None,
    };
    let options = FlattenOptions {
        limits,
        allow_devices: req.allow_devices,
    };
    let p = progress.clone();
    let mapper = d.inner.id_mapper.clone();
    journal_image(d, record, move |dir| async move {
        fetch_layers(&registry, &resolved, &cache, &p).await?;
        d.journaled("pull:fetched").await;
        blocking(move || {
            let mut artifacts =
                build_rootfs(&dir, &resolved, &compressions, &cache, options, &mapper, &p)?;
            artifacts.push(keep_tools(&dir, &tools)?);
            Ok(artifacts)
        })
        .await
    })
    .await
}

/// What a pull may spend, from `config.toml`.
fn limits(config: &banger_config::Config) -> Limits {
    Limits {
        unpacked: config.oci_max_unpacked().bytes(),
        manifest: config.oci_max_manifest().bytes(),
        tar_header: config.oci_max_tar_header().bytes(),
        layers: usize::try_from(config.oci_max_layers()).unwrap_or(usize::MAX),
        layer_entries: config.oci_max_layer_entries(),
        image_entries: config.oci_max_image_entries(),
    }
}

/// Every layer into the cache, a few at a time, each with its own bar.
async fn fetch_layers(
    registry: &Registry,
    resolved: &Resolved,
    cache: &BlobCache,
    progress: &Progress,
) -> Result<(), Error> {
    progress.phase(
        "download",
        format!("fetching {} layers", resolved.layers.len()),
    );
    let image = resolved.reference.with_digest(&resolved.manifest_digest);
    // Boxed: a stream of borrowing futures inside a Send task otherwise
    // trips over higher-ranked lifetimes.
    let mut fetches = Vec::with_capacity(resolved.layers.len());
    for layer in &resolved.layers {
        let (image, p) = (&image, progress.clone());
        let fetch: BoxFuture<'_, Result<bool, Error>> = Box::pin(async move {
            let bar = layer_bar(&layer.digest);
            let size = layer.size;
            p.progress(&bar, 0, Some(size));
            let report = move |done: u64| p.progress(&bar, done, Some(size));
            registry
                .fetch_blob(image, "layer", layer, cache, &report)
                .await
                .map_err(oci_failure)
        });
        fetches.push(fetch);
    }
    let downloaded: Vec<bool> = futures_util::stream::iter(fetches)
        .buffered(PARALLEL_DOWNLOADS)
        .try_collect()
        .await?;
    let reused = downloaded.iter().filter(|d| !**d).count();
    if reused > 0 {
        progress.info(format!(
            "{reused} of {} layers were already in the cache",
            downloaded.len()
        ));
    }
    Ok(())
}

/// Flattens the cached layers into `dir/.rootfs`, writes `dir/rootfs.ext4`
/// from it and pins it. As root in this process; as the owner in a user
/// namespace, the flattening in bangerd run again as a helper (see
/// [`banger_images::oci::owner`]). The tree holds files of the image's
/// users, so only its owner can remove it: it does, on failure too.
fn build_rootfs(
    dir: &Path,
    resolved: &Resolved,
    compressions: &[Compression],
    cache: &BlobCache,
    options: FlattenOptions,
    mapper: &Arc<dyn IdMapper>,
    progress: &Progress,
) -> Result<Vec<banger_model::Artifact>, Error> {
    let owner = TreeOwner::for_this_process(mapper).map_err(|e| oci_failure(e.into()))?;
    let staging = dir.join(STAGING);
    fs::create_dir(&staging).map_err(|e| io_failure("create", &staging, e))?;
    let result = flatten_and_pack(
        &owner,
        dir,
        resolved,
        compressions,
        cache,
        options,
        progress,
    );
    if result.is_err() {
        let _ = remove_tree(&owner, &staging);
    }
    result
}

/// [`build_rootfs`] once its staging tree is made.
fn flatten_and_pack(
    owner: &TreeOwner,
    dir: &Path,
    resolved: &Resolved,
    compressions: &[Compression],
    cache: &BlobCache,
    options: FlattenOptions,
    progress: &Progress,
) -> Result<Vec<banger_model::Artifact>, Error> {
    let staging = &dir.join(STAGING);
    progress.phase(
        "flatten",
        format!("flattening {} layers", resolved.layers.len()),
    );
    let layers: Vec<JobLayer> = resolved
        .layers
        .iter()
        .zip(compressions)
        .map(|(layer, compression)| JobLayer {
            digest: layer.digest.clone(),
            compression: *compression,
            blob: cache.blob_path(&layer.digest),
        })
        .collect();
    let count = layers.len() as u64;
    let helper = std::env::current_exe()
        .map(|exe| {
            let mut command = Command::new(exe);
            command.arg(HELPER_FLAG);
            command
        })
        .map_err(|e| Error::internal(format!("cannot find bangerd's own binary: {e}")))?;
    let flattened = flatten_layers(owner, helper, staging, options, &layers, &mut |i, stats| {
        if stats.skipped_xattrs > 0 {
            progress.warn(format!(
                "layer {}: {} extended attributes could not be kept",
                layers[i].digest, stats.skipped_xattrs
            ));
        }
        progress.progress("flatten", i as u64 + 1, Some(count));
    });
    if let Err(e) = flattened {
        if let OciError::CacheCorrupt { layer, .. } = &e {
            cache.evict(layer);
        }
        return Err(oci_failure(e));
    }
    progress.phase("ext4", "writing the read-only ext4 root filesystem");
    let rootfs = dir.join(ROOTFS);
    write_rootfs(owner, staging, &rootfs, &resolved.manifest_digest).map_err(oci_failure)?;
    remove_tree(owner, staging).map_err(oci_failure)?;
    make_read_only(&rootfs)?;
    progress.phase("pin", "recording the SHA-256 pin");
    Ok(vec![pin(dir, ROOTFS, ArtifactRole::Rootfs)?])
}

/// OCI images carry no kernel: they boot the default image's kernel, or,
/// when that image is not there yet, the same Debian cloud kernel its
/// recipe installs, fetched on its own (a few MiB through apt, rather than
/// a whole image build).
async fn kernel_for_oci(d: &Orchestrator, progress: &Progress) -> Result<String, Error> {
    // Two first pulls at once would both try to record the kernel.
    let _guard = d.inner.build_lock.lock().await;
    let default = d.inner.config.default_image_name().to_string();
    if let Some(image) = d.with_store(move |s| s.get_image(&default)).await?
        && image.state == ObjectState::Ready
    {
        return Ok(image.kernel);
    }
    // One fetched for an earlier pull: asking apt again costs a second or
    // more per pull, and the default image, once built, keeps its kernel
    // the same way.
    let kernels = d.with_store(|s| s.list_kernels()).await?;
    if let Some(k) = kernels
        .into_iter()
        .filter(|k| k.state == ObjectState::Ready && k.source.starts_with(OCI_KERNEL_SOURCE))
        .max_by_key(|k| k.created_at)
    {
        return Ok(k.name);
    }
    progress.phase(
        "kernel",
        "fetching Debian's cloud kernel for OCI images (once)",
    );
    let cache = d.inner.paths.kernel_package_cache();
    let pkg = blocking(move || {
        package::fetch(CLOUD_KERNEL_META, &cache).map_err(|e| Error::invalid(e.to_string()))
    })
    .await?;
    let kernel = ensure_kernel(
        d,
        &pkg.release,
        format!("{OCI_KERNEL_SOURCE}{}_{}", pkg.package, pkg.version),
        KernelFiles::Tree {
            bzimage: pkg.bzimage(),
            modules_dir: pkg.modules_dir(),
        },
        progress,
    )
    .await?;
    Ok(kernel.name)
}

/// banger's sshd and busybox, which VMs of an OCI image run (the image
/// has no sshd of its own). Fetched here, while the network is there,
/// and kept with the image ([`keep_tools`]): a VM is made with no mirror
/// in reach, and a pull that cannot fetch them records no image.
async fn tools_for_oci(d: &Orchestrator, progress: &Progress) -> Result<GuestTools, Error> {
    progress.phase("tools", "fetching banger's sshd and busybox for the guest");
    let cache = d.inner.paths.guest_tools_cache();
    blocking(move || guest_tools::ensure(&cache).map_err(|e| Error::invalid(e.to_string()))).await
}

/// The tools as the image's own pinned archive.
fn keep_tools(dir: &Path, tools: &GuestTools) -> Result<banger_model::Artifact, Error> {
    guest_tools::write_archive(tools, &dir.join(guest_tools::ARCHIVE))
        .map_err(|e| Error::internal(e.to_string()))?;
    make_read_only(&dir.join(guest_tools::ARCHIVE))?;
    pin(dir, guest_tools::ARCHIVE, ArtifactRole::GuestTools)
}

fn describe(resolved: &Resolved) -> OciImageConfig {
    let config = &resolved.config;
    OciImageConfig {
        reference: resolved.reference.to_string(),
        manifest_digest: resolved.manifest_digest.clone(),
        layers: resolved
            .layers
            .iter()
            .map(|l: &Descriptor| OciLayer {
                digest: l.digest.clone(),
                size: l.size,
            })
            .collect(),
        entrypoint: config.entrypoint.clone(),
        cmd: config.cmd.clone(),
        env: config.env.clone(),
        workdir: config.workdir.clone(),
        user: config.user.clone(),
    }
}

/// The progress key of a layer's bar: `layer 0123456789ab`.
fn layer_bar(digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("layer {}", &hex[..hex.len().min(12)])
}

fn oci_failure(e: OciError) -> Error {
    match e {
        OciError::Io { .. } | OciError::Filesystem(_) => Error::internal(e.to_string()),
        _ => Error::invalid(e.to_string()),
    }
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_bars_are_short() {
        assert_eq!(
            layer_bar(&format!("sha256:{}", "0123456789abcdef".repeat(4))),
            "layer 0123456789ab"
        );
    }
}
