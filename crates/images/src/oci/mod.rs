//! OCI images: pull any image from a registry and flatten it into banger's
//! read-only ext4 base.
//!
//! - [`reference`]: what people type (`ubuntu:24.04`,
//!   `oci://ghcr.io/org/app@sha256:…`), normalised as docker does.
//! - [`registry`]: the manifest (image index → linux/amd64), the config and
//!   the layers, through `oci-client` (token auth, HTTPS; plain HTTP only
//!   for loopback or `--insecure`); every digest and size is checked here
//!   as the bytes arrive, whatever the client checks itself, and every
//!   declared size against the [`Limits`] before anything is fetched.
//! - [`cache`]: layers by digest under `~/.cache/banger/oci/`, shared by
//!   images; one download per blob however many pulls want it.
//! - [`flatten`]: the layers applied in order into one tree (whiteouts,
//!   opaque directories, hard links, owners, modes, xattrs), refusing
//!   unsafe entries rather than writing them, and layers past the
//!   [`Limits`] (header records, entries, unpacked bytes) as they unpack.
//! - [`config`]: the parts of the image config a VM needs (entrypoint,
//!   cmd, env, workdir, user).

pub mod cache;
pub mod config;
pub mod flatten;
pub mod owner;
pub mod reference;
pub mod registry;

use std::path::PathBuf;

pub use cache::BlobCache;
pub use config::ImageConfig;
pub use flatten::{FlattenOptions, Flattener};
pub use reference::{ImageRef, is_oci_reference};
pub use registry::{Descriptor, Registry, Resolved};

use crate::host_command::CommandError;
use crate::userns::TreeError;
pub use crate::userns::TreeOwner;

/// What one pull may spend, each bound from the `config.toml` key its
/// error names (the daemon fills them in; defaults live with the config).
/// Every size and count a registry or an image declares is checked
/// against these before memory or disk is spent on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// `oci_max_unpacked`: bytes the image may unpack to (decompressed
    /// tar streams, and file contents written, over all layers); the
    /// layers' declared sizes together too, as a layer never packs to
    /// much more than its tar stream.
    pub unpacked: u64,
    /// `oci_max_manifest`: bytes of a manifest, image index or config.
    pub manifest: u64,
    /// `oci_max_tar_header`: bytes of the header records of one tar entry.
    pub tar_header: u64,
    /// `oci_max_layers`: layers in an image.
    pub layers: usize,
    /// `oci_max_layer_entries`: tar entries in one layer.
    pub layer_entries: u64,
    /// `oci_max_image_entries`: tar entries in all layers together.
    pub image_entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{reference:?} is not an image reference: {why}")]
    BadReference { reference: String, why: String },
    #[error("cannot pull {reference}: {message}")]
    Registry { reference: String, message: String },
    #[error(
        "{reference} has no linux/amd64 image (it has {available}): banger boots x86_64 guests"
    )]
    NoPlatform {
        reference: String,
        available: String,
    },
    #[error("{what} {digest}: {why}; nothing was recorded")]
    Blob {
        what: &'static str,
        digest: String,
        why: String,
    },
    #[error("{what} has media type {media_type:?}, which banger cannot unpack")]
    MediaType { what: String, media_type: String },
    #[error("the image config of {reference} is not valid: {why}")]
    Config { reference: String, why: String },
    /// An entry that is refused, never written.
    #[error("layer {layer}: entry {entry:?} {why}; nothing was written")]
    Unsafe {
        layer: String,
        entry: String,
        why: String,
    },
    #[error(
        "layer {layer}: the image unpacks to more than {limit} bytes (oci_max_unpacked in \
         config.toml): refusing it as a decompression bomb, or raise the limit"
    )]
    TooBig { layer: String, limit: u64 },
    #[error(
        "{reference} has {count} layers, more than {limit} (oci_max_layers in config.toml): \
         refused before any download; raise the limit if you trust the image"
    )]
    TooManyLayers {
        reference: String,
        count: usize,
        limit: usize,
    },
    #[error(
        "layer {layer}: the layers up to this one are {total} bytes, more than the {limit} \
         bytes (oci_max_unpacked in config.toml) the image may unpack to: refused before any \
         download; raise the limit if you trust the image"
    )]
    TooBigToFetch {
        layer: String,
        total: u64,
        limit: u64,
    },
    /// A manifest, index or config; `size` when it was declared up front.
    #[error(
        "{what} is {}more than {limit} bytes (oci_max_manifest in config.toml): refused \
         before it is read; raise the limit if you trust the registry",
        size.map(|s| format!("{s} bytes, ")).unwrap_or_default()
    )]
    DocumentTooBig {
        what: String,
        size: Option<u64>,
        limit: u64,
    },
    #[error(
        "layer {layer}: the tar header records of entry {entry} (PAX records, GNU long names or \
         links, a sparse map) are more than {limit} bytes (oci_max_tar_header in config.toml): \
         refused before they are read into memory; raise the limit if you trust the image"
    )]
    TarHeader {
        layer: String,
        entry: u64,
        limit: u64,
    },
    #[error(
        "layer {layer}: more than {limit} entries in {scope} ({key} in config.toml): refused; \
         raise the limit if you trust the image"
    )]
    TooManyEntries {
        layer: String,
        limit: u64,
        scope: &'static str,
        key: &'static str,
    },
    #[error("layer {layer}: {why}")]
    Layer { layer: String, why: String },
    #[error(
        "layer {layer}: the cached blob {} now has digest {actual}: it changed on disk; \
         it was removed from the cache, pull again",
        path.display()
    )]
    CacheCorrupt {
        layer: String,
        path: PathBuf,
        actual: String,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mkfs.ext4 failed to make the base rootfs: {0}")]
    Filesystem(CommandError),
    /// What the flattening helper said failed (see [`owner`]).
    #[error("{0}")]
    Flatten(String),
    #[error(
        "--allow-devices needs bangerd to run as root: a user namespace cannot make device \
         nodes; pull without it"
    )]
    DevicesNeedRoot,
    #[error(transparent)]
    Namespace(#[from] crate::userns::UsernsError),
}

pub(crate) fn io_err(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> OciError {
    let path = path.to_owned();
    move |source| OciError::Io {
        action,
        path,
        source,
    }
}

/// Free space in an OCI base beyond its content: the base is read-only
/// (VMs write to their own overlay), so only mkfs's own slack.
const BASE_HEADROOM: u64 = 32 << 20;

/// Writes the flattened tree at `root` as the read-only base ext4 `image`
/// (`mkfs.ext4 -d`, no mounting; owners, modes, hard links and xattrs come
/// from the tree). Its UUID derives from the manifest digest, so the same
/// image always gets the same one.
///
/// As the tree's `owner`: root, or root of the owner's user namespace,
/// which reads the tree's owners as the image's ids and leaves the image
/// the owner's.
pub fn write_rootfs(
    owner: &TreeOwner,
    root: &std::path::Path,
    image: &std::path::Path,
    manifest_digest: &str,
) -> Result<(), OciError> {
    let (used, inodes) = owner.tree_usage(root).map_err(tree_err)?;
    let (size, inode_count) = crate::ext4::filesystem_size(used, inodes, BASE_HEADROOM);
    let uuid = crate::ext4::uuid_from_hash(manifest_digest.trim_start_matches("sha256:"));
    let mut mkfs = std::process::Command::new("mkfs.ext4");
    mkfs.args(crate::ext4::mkfs_args(
        root,
        image,
        size,
        inode_count,
        &uuid,
    ));
    owner.run(mkfs).map_err(tree_err)?;
    Ok(())
}

/// Removes the flattened tree, as its `owner` (it holds files of the
/// image's users).
pub fn remove_tree(owner: &TreeOwner, root: &std::path::Path) -> Result<(), OciError> {
    owner.remove_tree(root).map_err(tree_err)
}

fn tree_err(e: TreeError) -> OciError {
    match e {
        TreeError::Tool(e) => OciError::Filesystem(e),
        TreeError::Namespace(e) => OciError::Namespace(e),
        TreeError::Io {
            action,
            path,
            source,
        } => OciError::Io {
            action,
            path,
            source,
        },
    }
}
