//! Layers applied in order into one directory tree, as the OCI image
//! spec's changeset rules say: `.wh.NAME` removes `NAME` from the layers
//! below, `.wh..wh..opq` empties its directory of what the layers below
//! put there, a directory over a directory merges, anything else replaces.
//! Hard links stay hard links; owners (numeric, the image's own uids),
//! modes, mtimes and xattrs are applied, so `mkfs.ext4 -d` carries them
//! into the image. That needs root: real root, or root of the owner's user
//! namespace, where [`super::owner`] runs this same code in a helper.
//!
//! Nothing unsafe is ever written: a `..` component, an absolute name, an
//! entry under a symlink (wherever it points: symlinks are never followed
//! while writing), a name ext4 cannot hold (a component over 255 bytes), a
//! device node unless allowed, or more unpacked bytes than the limit is an
//! error naming the layer and the entry. Names that are not UTF-8 are
//! kept as bytes: ext4 stores bytes. The caller removes the tree on error.
//!
//! Nothing in a layer sizes an allocation unchecked: the header records
//! the tar crate holds in memory are bounded as they are read
//! ([`HeaderBudget`]), entries are counted per layer and per image.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::{Limits, OciError};

/// The longest name of one path component ext4 can hold.
const MAX_NAME: usize = 255;
const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct FlattenOptions {
    /// Unpacked bytes (decompressed tar streams and file contents written,
    /// each counted against it), header records and entries.
    pub limits: Limits,
    /// Create character and block device nodes instead of refusing them.
    pub allow_devices: bool,
}

/// What one layer did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerStats {
    pub entries: u64,
    pub whiteouts: u64,
    /// xattrs the staging filesystem would not take (e.g. `trusted.*`
    /// elsewhere than on ext4); they are left out.
    pub skipped_xattrs: u64,
}

pub struct Flattener {
    root: PathBuf,
    options: FlattenOptions,
    /// Decompressed tar bytes read so far, all layers.
    read: u64,
    /// File content bytes written so far, all layers (sparse files count
    /// their full length).
    written: u64,
    /// Tar entries so far, all layers.
    entries: u64,
}

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

impl Flattener {
    /// Flattens into `root`, which must exist (and be empty).
    pub fn new(root: &Path, options: FlattenOptions) -> Self {
        Self {
            root: root.to_owned(),
            options,
            read: 0,
            written: 0,
            entries: 0,
        }
    }

    /// Applies the layer blob at `blob` (named `digest`, compressed as
    /// `compression`) over what is there. The blob is hashed as it is read
    /// and must match `digest`: a cache file that changed is caught here.
    pub fn apply_layer(
        &mut self,
        digest: &str,
        compression: Compression,
        blob: &Path,
    ) -> Result<LayerStats, OciError> {
        let layer_err = |why: String| OciError::Layer {
            layer: digest.to_string(),
            why,
        };
        let file = File::open(blob).map_err(|e| layer_err(format!("cannot open the blob: {e}")))?;
        let mut hashed = HashingReader::new(BufReader::with_capacity(1 << 20, file));
        let stats = {
            let decompressed: Box<dyn Read + '_> = match compression {
                Compression::None => Box::new(&mut hashed),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut hashed)),
                Compression::Zstd => Box::new(ZstdFrames::new(BufReader::new(&mut hashed))),
            };
            let counted = LimitedReader {
                inner: decompressed,
                count: &mut self.read,
                limit: self.options.limits.unpacked,
            };
            let budget = HeaderBudget::new(self.options.limits.tar_header);
            let mut archive = tar::Archive::new(HeaderBound {
                inner: counted,
                budget: &budget,
            });
            let mut layer = Layer {
                root: &self.root,
                digest,
                options: self.options,
                written: &mut self.written,
                image_entries: &mut self.entries,
                budget: &budget,
                this_layer: WrittenPaths::default(),
                stats: LayerStats::default(),
            };
            let result = layer.apply(&mut archive);
            match result {
                Err(OciError::Layer { why, .. }) if why.contains(LIMIT_MARK) => {
                    return Err(OciError::TooBig {
                        layer: digest.to_string(),
                        limit: self.options.limits.unpacked,
                    });
                }
                other => other?,
            }
            // A tar ends with zero blocks; the compressed stream may go on
            // a little. Read it out so the whole blob is hashed.
            let mut rest = archive.into_inner();
            io::copy(&mut rest, &mut io::sink())
                .map_err(|e| layer_err(format!("cannot read the blob to its end: {e}")))?;
            layer.stats
        };
        let actual = format!("sha256:{}", hex::encode(hashed.hasher.finalize()));
        if actual != digest {
            return Err(OciError::CacheCorrupt {
                layer: digest.to_string(),
                path: blob.to_owned(),
                actual,
            });
        }
        Ok(stats)
    }
}

/// Said by [`LimitedReader`] in its error, to tell a bomb from bad data.
const LIMIT_MARK: &str = "unpack limit reached";

/// The bound on tar header records, which the tar crate (0.4) reads whole
/// into memory: a PAX extended header, a GNU long name or long link
/// record each into a `Vec` (`read_all`), a GNU sparse map into a list of
/// blocks. Their sizes come from the layer, so a few MB of gzip could
/// become a many-GiB allocation; the crate has no limit of its own, and
/// reads these records inside `Entries::next`, before a caller sees any
/// header it could check.
///
/// So the bound is on what `next` reads. Everything the tar reader
/// consumes from the end of one entry's data to the return of the next
/// entry is that entry's headers: the padding after the data, the header
/// blocks, the records, a sparse map. [`Layer::apply`] counts it from the
/// call to `next` to its return, through [`HeaderBound`] wrapped around the
/// stream; past the limit the read fails and the layer is refused, with
/// at most the limit read. This parses no tar headers of banger's own
/// (which could disagree with the crate on where a header is); it rests on
/// two facts: the crate never reads ahead (exactly a header, a record or
/// an entry's data at a time), and `apply` reads each entry's data to its
/// end before asking for the next.
struct HeaderBudget {
    limit: u64,
    /// Whether reads now are headers (inside `next`).
    counting: Cell<bool>,
    spent: Cell<u64>,
    exceeded: Cell<bool>,
}

impl HeaderBudget {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            counting: Cell::new(false),
            spent: Cell::new(0),
            exceeded: Cell::new(false),
        }
    }

    /// What is read from now on is the next entry's headers.
    fn start(&self) {
        self.spent.set(0);
        self.counting.set(true);
    }

    fn stop(&self) {
        self.counting.set(false);
    }
}

/// The stream as the tar crate reads it, counted against a
/// [`HeaderBudget`] while it reads headers.
struct HeaderBound<'a, R> {
    inner: R,
    budget: &'a HeaderBudget,
}

impl<R: Read> Read for HeaderBound<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let budget = self.budget;
        if !budget.counting.get() {
            return self.inner.read(buf);
        }
        // Never read more than one byte past the limit: the byte that
        // shows it is crossed.
        let room = (budget.limit + 1).saturating_sub(budget.spent.get());
        let len = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        let spent = budget.spent.get() + n as u64;
        budget.spent.set(spent);
        if spent > budget.limit {
            budget.exceeded.set(true);
            return Err(io::Error::other("tar header limit reached"));
        }
        Ok(n)
    }
}

struct Layer<'a> {
    root: &'a Path,
    digest: &'a str,
    options: FlattenOptions,
    written: &'a mut u64,
    /// Entries of all layers so far, this one included.
    image_entries: &'a mut u64,
    budget: &'a HeaderBudget,
    /// Paths this layer wrote: an opaque marker or whiteout in the same
    /// layer hides only what the layers below put there.
    this_layer: WrittenPaths,
    stats: LayerStats,
}

impl Layer<'_> {
    fn apply<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), OciError> {
        let mut entries = archive
            .entries()
            .map_err(|e| self.layer_err(format!("not a tar stream: {e}")))?;
        loop {
            self.budget.start();
            let next = entries.next();
            self.budget.stop();
            let Some(entry) = next else {
                return Ok(());
            };
            let mut entry = entry.map_err(|e| {
                if self.budget.exceeded.get() {
                    OciError::TarHeader {
                        layer: self.digest.to_string(),
                        entry: self.stats.entries + 1,
                        limit: self.options.limits.tar_header,
                    }
                } else {
                    self.layer_err(format!("cannot read the tar stream: {e}"))
                }
            })?;
            self.count_entry()?;
            self.entry(&mut entry)?;
            // What the entry left unread (a directory's or a whiteout's
            // data, say) would otherwise be read inside the next `next`,
            // counted as the next entry's headers.
            io::copy(&mut entry, &mut io::sink())
                .map_err(|e| self.io(&entry.path_bytes(), "read its data")(e))?;
        }
    }

    fn count_entry(&mut self) -> Result<(), OciError> {
        self.stats.entries += 1;
        *self.image_entries += 1;
        let limits = &self.options.limits;
        let (limit, scope, key) = if self.stats.entries > limits.layer_entries {
            (limits.layer_entries, "one layer", "oci_max_layer_entries")
        } else if *self.image_entries > limits.image_entries {
            (limits.image_entries, "the image", "oci_max_image_entries")
        } else {
            return Ok(());
        };
        Err(OciError::TooManyEntries {
            layer: self.digest.to_string(),
            limit,
            scope,
            key,
        })
    }

    fn layer_err(&self, why: String) -> OciError {
        OciError::Layer {
            layer: self.digest.to_string(),
            why,
        }
    }

    fn unsafe_entry(&self, entry: &[u8], why: impl Into<String>) -> OciError {
        OciError::Unsafe {
            layer: self.digest.to_string(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            why: why.into(),
        }
    }

    fn io(&self, entry: &[u8], what: &str) -> impl FnOnce(io::Error) -> OciError + use<'_> {
        let entry = String::from_utf8_lossy(entry).into_owned();
        let what = what.to_string();
        move |e| {
            if e.to_string().contains(LIMIT_MARK) {
                return self.layer_err(LIMIT_MARK.into());
            }
            OciError::Layer {
                layer: self.digest.to_string(),
                why: format!("entry {entry:?}: cannot {what}: {e}"),
            }
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), OciError> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let parts = self.components(&raw, &raw)?;
        let Some((name, parents)) = parts.split_last() else {
            // `./` itself: the root directory's owner and mode.
            if kind == EntryType::Directory {
                let meta = Meta::of(entry).map_err(self.io(&raw, "read the header"))?;
                self.set_meta(&raw, self.root, &meta, kind)?;
            }
            return Ok(());
        };
        let parent = self.parent_dir(&raw, parents)?;
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            self.stats.whiteouts += 1;
            return self.whiteout(&raw, &parent, parents, hidden);
        }
        let rel = join(&parts);
        let path = self.root.join(OsStr::from_bytes(&rel));
        let existing = fs::symlink_metadata(&path).ok();
        match kind {
            EntryType::Directory => {
                // A directory over a directory merges; over anything else
                // (a symlink to a directory included) it replaces.
                match &existing {
                    Some(m) if m.is_dir() => {}
                    other => {
                        if other.is_some() {
                            remove(&path).map_err(self.io(&raw, "replace what was there"))?;
                        }
                        fs::create_dir(&path).map_err(self.io(&raw, "create the directory"))?;
                    }
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.replace(&raw, &path, existing.as_ref())?;
                self.write_file(&raw, &path, entry)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.unsafe_entry(&raw, "is a symlink without a target"))?
                    .into_owned();
                if target.is_empty() || target.contains(&0) {
                    return Err(self.unsafe_entry(&raw, "is a symlink with an empty target"));
                }
                self.replace(&raw, &path, existing.as_ref())?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(self.io(&raw, "create the symlink"))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.unsafe_entry(&raw, "is a hard link without a target"))?
                    .into_owned();
                let target_parts = self.components(&raw, &target)?;
                if target_parts.is_empty() {
                    return Err(self.unsafe_entry(&raw, "is a hard link to the root"));
                }
                self.parent_dir(&raw, &target_parts[..target_parts.len() - 1])?;
                let source = self.root.join(OsStr::from_bytes(&join(&target_parts)));
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_dir() => {
                        return Err(self.unsafe_entry(&raw, "is a hard link to a directory"));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(self.unsafe_entry(
                            &raw,
                            format!(
                                "is a hard link to {:?}, which no layer so far has",
                                String::from_utf8_lossy(&target)
                            ),
                        ));
                    }
                }
                if source == path {
                    return Ok(());
                }
                self.replace(&raw, &path, existing.as_ref())?;
                // link(2) does not follow a symlink source: the link is to
                // the entry itself, as tar meant.
                fs::hard_link(&source, &path).map_err(self.io(&raw, "create the hard link"))?;
                self.this_layer.insert(&rel);
                // A hard link shares its inode's metadata: nothing to set.
                return Ok(());
            }
            EntryType::Char | EntryType::Block => {
                if !self.options.allow_devices {
                    return Err(self.unsafe_entry(
                        &raw,
                        "is a device node (pull with --allow-devices to keep device nodes)",
                    ));
                }
                self.replace(&raw, &path, existing.as_ref())?;
                let (major, minor) = (
                    entry.header().device_major().ok().flatten().unwrap_or(0),
                    entry.header().device_minor().ok().flatten().unwrap_or(0),
                );
                let kind_flag = if kind == EntryType::Char {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    &path,
                    kind_flag,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(|e| self.io(&raw, "create the device node")(e.into()))?;
            }
            EntryType::Fifo => {
                self.replace(&raw, &path, existing.as_ref())?;
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| self.io(&raw, "create the fifo")(e.into()))?;
            }
            other => {
                return Err(self.unsafe_entry(
                    &raw,
                    format!("has tar entry type {other:?}, which an image layer must not hold"),
                ));
            }
        }
        let meta = Meta::of(entry).map_err(self.io(&raw, "read the header"))?;
        self.set_meta(&raw, &path, &meta, kind)?;
        self.this_layer.insert(&rel);
        Ok(())
    }

    /// The entry's path as components, `.` and empty ones dropped; `..`,
    /// absolute names and names ext4 cannot hold are refused.
    fn components(&self, entry: &[u8], path: &[u8]) -> Result<Vec<Vec<u8>>, OciError> {
        if path.starts_with(b"/") {
            return Err(self.unsafe_entry(entry, "is an absolute path"));
        }
        if path.contains(&0) {
            return Err(self.unsafe_entry(entry, "has a NUL byte in its name"));
        }
        let mut parts = Vec::new();
        for part in path.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err(self.unsafe_entry(entry, "has a '..' component")),
                p if p.len() > MAX_NAME => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "has a name of {} bytes; ext4 holds at most {MAX_NAME}",
                            p.len()
                        ),
                    ));
                }
                p => parts.push(p.to_vec()),
            }
        }
        Ok(parts)
    }

    /// The directory an entry goes into: every component must be a real
    /// directory (never a symlink, wherever it points); missing ones are
    /// made, as tar does.
    fn parent_dir(&mut self, entry: &[u8], parents: &[Vec<u8>]) -> Result<PathBuf, OciError> {
        let mut dir = self.root.to_path_buf();
        for (i, part) in parents.iter().enumerate() {
            dir.push(OsStr::from_bytes(part));
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_symlink() => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "is under {:?}, a symlink: writing through it could leave the image",
                            String::from_utf8_lossy(&join(&parents[..=i]))
                        ),
                    ));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "is under {:?}, which is not a directory",
                            String::from_utf8_lossy(&join(&parents[..=i]))
                        ),
                    ));
                }
                Err(_) => {
                    fs::create_dir(&dir).map_err(self.io(entry, "create a parent directory"))?;
                    self.this_layer.insert(&join(&parents[..=i]));
                }
            }
        }
        Ok(dir)
    }

    fn whiteout(
        &mut self,
        entry: &[u8],
        parent: &Path,
        parents: &[Vec<u8>],
        hidden: &[u8],
    ) -> Result<(), OciError> {
        let prefix = join(parents);
        if hidden == &OPAQUE[WHITEOUT.len()..] {
            // Empty the directory of what lower layers put there.
            let list = fs::read_dir(parent).map_err(self.io(entry, "list the opaque directory"))?;
            for child in list {
                let child = child.map_err(self.io(entry, "list the opaque directory"))?;
                let rel = join_with(&prefix, child.file_name().as_bytes());
                if !self.this_layer.contains(&rel) {
                    remove(&child.path()).map_err(self.io(entry, "empty the opaque directory"))?;
                }
            }
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.unsafe_entry(entry, "is a whiteout of nothing"));
        }
        let rel = join_with(&prefix, hidden);
        if self.this_layer.contains(&rel) {
            return Ok(());
        }
        let target = parent.join(OsStr::from_bytes(hidden));
        if fs::symlink_metadata(&target).is_ok() {
            remove(&target).map_err(self.io(entry, "remove the whited-out path"))?;
        }
        Ok(())
    }

    /// Clears the way for a non-directory at `path`.
    fn replace(
        &self,
        entry: &[u8],
        path: &Path,
        existing: Option<&fs::Metadata>,
    ) -> Result<(), OciError> {
        if existing.is_some() {
            remove(path).map_err(self.io(entry, "replace what was there"))?;
        }
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &[u8],
        path: &Path,
        data: &mut tar::Entry<'_, R>,
    ) -> Result<(), OciError> {
        // O_EXCL|O_NOFOLLOW: a fresh file, never through a symlink.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
            .map_err(self.io(entry, "create the file"))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = data
                .read(&mut buf)
                .map_err(self.io(entry, "read its content"))?;
            if n == 0 {
                break;
            }
            *self.written += n as u64;
            if *self.written > self.options.limits.unpacked {
                return Err(self.layer_err(LIMIT_MARK.into()));
            }
            out.write_all(&buf[..n])
                .map_err(self.io(entry, "write its content"))?;
        }
        out.flush().map_err(self.io(entry, "write its content"))?;
        Ok(())
    }

    fn set_meta(
        &mut self,
        entry: &[u8],
        path: &Path,
        meta: &Meta,
        kind: EntryType,
    ) -> Result<(), OciError> {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
            .map_err(self.io(entry, "set its owner"))?;
        if kind == EntryType::Symlink {
            let _ = filetime::set_symlink_file_times(path, meta.mtime, meta.mtime);
            return Ok(());
        }
        // After chown, which clears set-uid bits.
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode & 0o7777))
            .map_err(self.io(entry, "set its mode"))?;
        for (name, value) in &meta.xattrs {
            if xattr::set(path, OsStr::from_bytes(name), value).is_err() {
                self.stats.skipped_xattrs += 1;
            }
        }
        if kind != EntryType::Directory {
            let _ = filetime::set_symlink_file_times(path, meta.mtime, meta.mtime);
        }
        Ok(())
    }
}

/// Owner, mode, time and xattrs, with PAX records winning over the header.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: filetime::FileTime,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn of<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Self> {
        let header = entry.header();
        let mut uid = header.uid()?;
        let mut gid = header.gid()?;
        let mode = header.mode()?;
        let mut mtime = header.mtime().unwrap_or(0);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let number = || {
                    std::str::from_utf8(value)
                        .ok()?
                        .split('.')
                        .next()?
                        .parse()
                        .ok()
                };
                match key {
                    b"uid" => uid = number().unwrap_or(uid),
                    b"gid" => gid = number().unwrap_or(gid),
                    b"mtime" => mtime = number().unwrap_or(mtime),
                    k => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            xattrs.push((name.to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
        let id =
            |v: u64| u32::try_from(v).map_err(|_| io::Error::other(format!("id {v} is too big")));
        Ok(Self {
            uid: id(uid)?,
            gid: id(gid)?,
            mode,
            mtime: filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(0), 0),
            xattrs,
        })
    }
}

/// The paths one layer wrote, kept as 128-bit hashes rather than bytes: a
/// layer may hold a million entries whose paths are up to 4 KiB each,
/// gigabytes as bytes, some 50 MB as hashes. SHA-256 (truncated), so that
/// no layer can be made whose paths collide.
#[derive(Default)]
struct WrittenPaths(HashSet<[u8; 16]>);

impl WrittenPaths {
    fn key(path: &[u8]) -> [u8; 16] {
        let mut key = [0u8; 16];
        key.copy_from_slice(&Sha256::digest(path)[..16]);
        key
    }

    fn insert(&mut self, path: &[u8]) {
        self.0.insert(Self::key(path));
    }

    fn contains(&self, path: &[u8]) -> bool {
        self.0.contains(&Self::key(path))
    }
}

/// Removes a file, symlink or whole directory, never following symlinks.
fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.join(&b'/')
}

fn join_with(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts decompressed bytes against the limit; past it, reading fails
/// (a bomb is stopped while it expands, not after).
struct LimitedReader<'a, R> {
    inner: R,
    count: &'a mut u64,
    limit: u64,
}

impl<R: Read> Read for LimitedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.count += n as u64;
        if *self.count > self.limit {
            return Err(io::Error::other(LIMIT_MARK));
        }
        Ok(n)
    }
}

/// A zstd stream of one or more frames, decoded in sequence.
struct ZstdFrames<R: BufRead> {
    source: Option<R>,
    frame: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        Self {
            source: Some(source),
            frame: None,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(frame) = &mut self.frame {
                let n = frame.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                let done = self.frame.take().map(|f| f.into_inner());
                self.source = done;
            }
            let Some(mut source) = self.source.take() else {
                return Ok(0);
            };
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let frame = ruzstd::decoding::StreamingDecoder::new(source)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.frame = Some(frame);
        }
    }
}

#[cfg(test)]
mod tests;
