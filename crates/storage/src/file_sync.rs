//! `[[file_sync]]`: files from the user's home copied onto a new VM's work
//! disk (its `/root`) before the first boot. Everything here decides what
//! to copy and refuses what must not be: guest paths outside `/root`, host
//! paths that resolve outside the user's home (directly or through a
//! symlink). A missing or refused entry is a warning, never a failure: a
//! config typo must not stop VMs from being created.
//!
//! What the folders hold is not trusted (DESIGN.md, "Trust"): it may change
//! while it is copied. So nothing is looked at by path and then read by
//! path: each file and folder is opened without following links
//! (`O_NOFOLLOW`, folders walked by descriptor) and what was opened is
//! checked (`fstat`) and read, within size limits. Names are carried as
//! bytes into the disk's staging tree, never into a tool's script.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use banger_config::{Config, FileSyncEntry};
use banger_model::Size;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::disk::{DiskError, io_err};

/// Files copied without an explicit `mode` get this.
pub const DEFAULT_MODE: u32 = 0o600;

/// Folders deeper than this below an entry are not copied: each level
/// holds a descriptor open while it is walked.
pub const MAX_DEPTH: usize = 64;

/// Files and folders one VM's entries may create, all together: the byte
/// limits do not bound a folder of a million empty files.
pub const MAX_ENTRIES: u64 = 100_000;

/// Past this many files refused for the total, the rest are counted in
/// one closing warning instead of one each.
const TOTAL_WARNINGS: usize = 20;

/// How a file or folder is opened: never through a link, never waiting on
/// a FIFO's writer, never becoming the controlling terminal.
const OPEN_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// How much one VM's entries may copy (`file_sync_max_file`,
/// `file_sync_max_total` in config.toml).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_file: Size,
    pub max_total: Size,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Limits {
            max_file: config.file_sync_max_file(),
            max_total: config.file_sync_max_total(),
        }
    }
}

/// What copying did, and what was skipped and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub files: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// Where an entry lands, relative to `/root` (the work disk's root).
pub fn guest_relative(guest: &str) -> Result<PathBuf, String> {
    let rest = guest
        .strip_prefix("~/")
        .or_else(|| guest.strip_prefix("/root/"))
        .ok_or_else(|| format!("guest path {guest:?} must start with ~/ or /root/"))?;
    let rel = PathBuf::from(rest);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!(
            "guest path {guest:?} must name a file or folder under /root, without '..'"
        ));
    }
    Ok(rel)
}

/// The host path an entry names, resolved (symlinks followed) and checked
/// to stay inside `home`. `Ok(None)` when it does not exist.
pub fn host_source(host: &str, home: &Path) -> Result<Option<PathBuf>, String> {
    let path = match host.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if Path::new(host).is_absolute() => PathBuf::from(host),
        None => {
            return Err(format!(
                "host path {host:?} must be absolute or start with ~/"
            ));
        }
    };
    if fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let resolved = path
        .canonicalize()
        .map_err(|e| format!("host path {host:?} cannot be resolved: {e}"))?;
    let home = home
        .canonicalize()
        .map_err(|e| format!("home {} cannot be resolved: {e}", home.display()))?;
    if !resolved.starts_with(&home) {
        return Err(format!(
            "host path {host:?} resolves to {}, outside your home {}: not copied",
            resolved.display(),
            home.display()
        ));
    }
    Ok(Some(resolved))
}

/// Is this entry usable? For `doctor`: `Err` says why not; a missing host
/// path is `Ok(false)`.
pub fn check(entry: &FileSyncEntry, home: &Path) -> Result<bool, String> {
    guest_relative(&entry.guest)?;
    Ok(host_source(&entry.host, home)?.is_some())
}

/// Copies every entry into `tree`, the staging tree that becomes the work
/// disk's root (see [`crate::make_disk_with`]). Refused and unreadable
/// sources are warnings in the report; only a failure to write `tree`
/// itself is an error.
pub fn copy_into(
    entries: &[FileSyncEntry],
    home: &Path,
    limits: Limits,
    tree: &Path,
) -> Result<SyncReport, DiskError> {
    let mut copier = Copier {
        tree: tree.to_path_buf(),
        limits,
        entries: 0,
        over_total: 0,
        report: SyncReport::default(),
    };
    for entry in entries {
        let dest = match guest_relative(&entry.guest) {
            Ok(d) => d,
            Err(e) => {
                copier.warn(format!("{e}; skipped"));
                continue;
            }
        };
        let source = match host_source(&entry.host, home) {
            Ok(Some(s)) => s,
            Ok(None) => {
                copier.warn(format!("{} does not exist; skipped", entry.host));
                continue;
            }
            Err(e) => {
                copier.warn(e);
                continue;
            }
        };
        // A FIFO or device named by the entry itself is not even opened
        // (opening some devices does things); the open below re-checks.
        if let Ok(meta) = fs::symlink_metadata(&source)
            && let Some(kind) = special_kind(meta.file_type())
        {
            copier.warn(format!(
                "{source:?} is {kind}, not a regular file or folder; skipped"
            ));
            continue;
        }
        let fd = match open_canonical(&source) {
            Ok(fd) => fd,
            Err(e) => {
                copier.open_failed(&source, e);
                continue;
            }
        };
        if !copier.make_parents(tree, &dest)? {
            continue;
        }
        let mode = entry.mode.map_or(DEFAULT_MODE, |m| m & 0o7777);
        copier.copy(fd, &source, &tree.join(&dest), mode, 0)?;
    }
    Ok(copier.finish())
}

struct Copier {
    /// The staging tree: the guest's `/root`.
    tree: PathBuf,
    limits: Limits,
    /// Files and folders created so far.
    entries: u64,
    /// Files refused for the total (each of the first [`TOTAL_WARNINGS`]
    /// gets its own warning, the rest one together).
    over_total: usize,
    report: SyncReport,
}

impl Copier {
    fn warn(&mut self, message: String) {
        self.report.warnings.push(format!("file_sync: {message}"));
    }

    /// Where `dest` (in the staging tree) is in the guest, for warnings.
    fn in_guest(&self, dest: &Path) -> PathBuf {
        Path::new("/root").join(dest.strip_prefix(&self.tree).unwrap_or(dest))
    }

    fn finish(mut self) -> SyncReport {
        if self.over_total > TOTAL_WARNINGS {
            let n = self.over_total - TOTAL_WARNINGS;
            let max = self.limits.max_total;
            self.warn(format!(
                "{n} more files skipped: they would take the total past file_sync_max_total \
                 ({max}); raise it in config.toml to copy them"
            ));
        }
        self.report
    }

    fn open_failed(&mut self, source: &Path, e: Errno) {
        match e {
            // O_NOFOLLOW met a link (or, on the way down, O_DIRECTORY met
            // one): something changed after it was checked.
            Errno::ELOOP | Errno::ENOTDIR => self.warn(format!(
                "{source:?} is a symlink inside a synced folder (or became one); skipped"
            )),
            Errno::ENXIO => self.warn(format!(
                "{source:?} is a socket, not a regular file or folder; skipped"
            )),
            e => self.warn(format!(
                "cannot open {source:?}: {}; skipped",
                io::Error::from(e)
            )),
        }
    }

    /// Counts one more file or folder; `false` (with a warning, once) past
    /// [`MAX_ENTRIES`].
    fn count(&mut self, source: &Path) -> bool {
        self.entries += 1;
        if self.entries == MAX_ENTRIES + 1 {
            self.warn(format!(
                "more than {MAX_ENTRIES} files and folders: {source:?} and everything after it \
                 skipped"
            ));
        }
        self.entries <= MAX_ENTRIES
    }

    /// Makes the folders above `rel` in `tree`; `false` (with a warning)
    /// when an earlier entry put a file where a folder must go.
    fn make_parents(&mut self, tree: &Path, rel: &Path) -> Result<bool, DiskError> {
        let mut dir = tree.to_path_buf();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                dir.push(c);
                if !self.make_dir(&dir)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Makes one folder of the tree (0700), or finds it made; `false` (with
    /// a warning) when a file is in the way.
    fn make_dir(&mut self, dir: &Path) -> Result<bool, DiskError> {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                    Ok(true)
                } else {
                    let at = self.in_guest(dir);
                    self.warn(format!(
                        "{at:?} is a file from another entry, and a folder must go there; \
                         skipped"
                    ));
                    Ok(false)
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidFilename => {
                let at = self.in_guest(dir);
                self.warn(format!("{at:?} is too long a path; skipped"));
                Ok(false)
            }
            Err(e) => Err(io_err("create", dir)(e)),
        }
    }

    /// Copies what `fd` (opened from `source`) turned out to be.
    fn copy(
        &mut self,
        fd: OwnedFd,
        source: &Path,
        dest: &Path,
        mode: u32,
        depth: usize,
    ) -> Result<(), DiskError> {
        let file = File::from(fd);
        // fstat of what was opened: a link or FIFO swapped in after the
        // folder was listed is seen here, not missed.
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("cannot read {source:?}: {e}; skipped"));
                return Ok(());
            }
        };
        let kind = meta.file_type();
        if kind.is_file() {
            self.copy_file(file, meta.len(), source, dest, mode)
        } else if kind.is_dir() {
            self.copy_dir(OwnedFd::from(file), source, dest, mode, depth)
        } else {
            let kind = special_kind(kind).unwrap_or("something else");
            self.warn(format!(
                "{source:?} is {kind}, not a regular file or folder; skipped"
            ));
            Ok(())
        }
    }

    fn copy_file(
        &mut self,
        mut file: File,
        len: u64,
        source: &Path,
        dest: &Path,
        mode: u32,
    ) -> Result<(), DiskError> {
        let (max_file, max_total) = (self.limits.max_file, self.limits.max_total);
        if len > max_file.bytes() {
            self.warn(format!(
                "{source:?} is {len} bytes, more than file_sync_max_file ({max_file}); skipped: \
                 raise file_sync_max_file in config.toml to copy it"
            ));
            return Ok(());
        }
        if self.report.bytes + len > max_total.bytes() {
            self.over_total += 1;
            if self.over_total <= TOTAL_WARNINGS {
                self.warn(format!(
                    "{source:?} ({len} bytes) would take the total past file_sync_max_total \
                     ({max_total}); skipped: raise file_sync_max_total in config.toml to copy it"
                ));
            }
            return Ok(());
        }
        if !self.count(source) {
            return Ok(());
        }
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {
                let at = self.in_guest(dest);
                self.warn(format!(
                    "{at:?} is a folder from another entry; {source:?} skipped"
                ));
                return Ok(());
            }
            // A later entry for the same path wins.
            Ok(_) => fs::remove_file(dest).map_err(io_err("replace", dest))?,
            Err(_) => {}
        }
        let mut out = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            // The staging tree is banger's own, but never write through a
            // link all the same.
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(dest)
        {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::InvalidFilename => {
                let at = self.in_guest(dest);
                self.warn(format!("{at:?} is too long a path; {source:?} skipped"));
                return Ok(());
            }
            Err(e) => return Err(io_err("create", dest)(e)),
        };
        // Exactly the bytes fstat counted: a file still growing is not
        // followed past them (that would escape the limits) but refused.
        let mut buf = vec![0u8; 64 << 10];
        let mut left = len;
        let failure = loop {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(format!("cannot read {source:?}: {e}; skipped")),
            };
            if n == 0 {
                break (left > 0)
                    .then(|| format!("{source:?} shrank while it was copied; skipped"));
            }
            out.write_all(&buf[..n]).map_err(io_err("write", dest))?;
            left -= n as u64;
            if left == 0 {
                break match file.read(&mut buf[..1]) {
                    Ok(0) => None,
                    _ => Some(format!("{source:?} grew while it was copied; skipped")),
                };
            }
        };
        if let Some(message) = failure {
            drop(out);
            fs::remove_file(dest).map_err(io_err("remove", dest))?;
            self.warn(message);
            return Ok(());
        }
        out.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", dest))?;
        self.report.files += 1;
        self.report.bytes += len;
        Ok(())
    }

    fn copy_dir(
        &mut self,
        fd: OwnedFd,
        source: &Path,
        dest: &Path,
        mode: u32,
        depth: usize,
    ) -> Result<(), DiskError> {
        if depth >= MAX_DEPTH {
            self.warn(format!(
                "{source:?} is more than {MAX_DEPTH} folders deep; skipped"
            ));
            return Ok(());
        }
        if !self.count(source) || !self.make_dir(dest)? {
            return Ok(());
        }
        let mut dir = match Dir::from_fd(fd) {
            Ok(d) => d,
            Err(e) => {
                self.warn(format!(
                    "cannot list {source:?}: {}; skipped",
                    io::Error::from(e)
                ));
                return Ok(());
            }
        };
        // Listed first, sorted, so the copy is the same whatever order the
        // filesystem lists in; no more names kept than could be copied.
        let room = MAX_ENTRIES.saturating_sub(self.entries) + 1;
        let mut names: Vec<(OsString, Option<Type>)> = Vec::new();
        for item in dir.iter() {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    self.warn(format!(
                        "cannot list {source:?}: {}; skipped",
                        io::Error::from(e)
                    ));
                    return Ok(());
                }
            };
            let name = item.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            names.push((
                std::ffi::OsStr::from_bytes(name).to_owned(),
                item.file_type(),
            ));
            if names.len() as u64 > room {
                break;
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in names {
            let src = source.join(&name);
            let dst = dest.join(&name);
            match kind {
                Some(Type::Symlink) => {
                    self.warn(format!(
                        "{src:?} is a symlink inside a synced folder; skipped"
                    ));
                    continue;
                }
                Some(Type::Fifo | Type::Socket | Type::CharacterDevice | Type::BlockDevice) => {
                    let kind = match kind {
                        Some(Type::Fifo) => "a FIFO",
                        Some(Type::Socket) => "a socket",
                        _ => "a device",
                    };
                    self.warn(format!(
                        "{src:?} is {kind}, not a regular file or folder; skipped"
                    ));
                    continue;
                }
                // Regular, folder, or not said: open and see.
                _ => {}
            }
            #[cfg(test)]
            tests::before_open(&src);
            match nix::fcntl::openat(&dir, name.as_os_str(), OPEN_FLAGS, Mode::empty()) {
                Ok(fd) => self.copy(fd, &src, &dst, mode, depth + 1)?,
                Err(e) => self.open_failed(&src, e),
            }
            if self.entries > MAX_ENTRIES {
                break;
            }
        }
        Ok(())
    }
}

/// What a file that is neither regular nor a folder is, for warnings;
/// `None` for regular files, folders and links.
fn special_kind(kind: fs::FileType) -> Option<&'static str> {
    if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else {
        None
    }
}

/// Opens `path`, already resolved by [`host_source`] (so it names no
/// link), one component at a time with `O_NOFOLLOW`: a folder on the way
/// swapped for a link after the check fails to open instead of leading
/// out of home.
fn open_canonical(path: &Path) -> Result<OwnedFd, Errno> {
    let walk = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let names: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = names.split_last() else {
        return nix::fcntl::open("/", OPEN_FLAGS, Mode::empty());
    };
    let mut dir = nix::fcntl::open("/", walk, Mode::empty())?;
    for name in parents {
        dir = nix::fcntl::openat(&dir, *name, walk, Mode::empty())?;
    }
    nix::fcntl::openat(&dir, *last, OPEN_FLAGS, Mode::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::process::Command;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Called with the path of a folder entry about to be opened.
    type Hook = Box<dyn Fn(&Path) + Send>;

    thread_local! {
        /// Runs just before a folder's entry is opened: lets a test swap
        /// the entry the way a hostile writer racing the copy would.
        static BEFORE_OPEN: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    pub(super) fn before_open(path: &Path) {
        BEFORE_OPEN.with(|hook| {
            if let Some(hook) = &*hook.borrow() {
                hook(path);
            }
        });
    }

    const LIMITS: Limits = Limits {
        max_file: Size::from_mib(16),
        max_total: Size::from_mib(64),
    };

    fn entry(host: &str, guest: &str, mode: Option<u32>) -> FileSyncEntry {
        FileSyncEntry {
            host: host.into(),
            guest: guest.into(),
            mode,
        }
    }

    /// Runs `copy_into` on its own thread; a copy that blocks (on a FIFO,
    /// say) fails the test instead of hanging it.
    fn copy_bounded(
        entries: Vec<FileSyncEntry>,
        home: &Path,
        limits: Limits,
        tree: &Path,
        hook: Option<Hook>,
    ) -> SyncReport {
        let (home, tree) = (home.to_path_buf(), tree.to_path_buf());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Some(hook) = hook {
                BEFORE_OPEN.with(|h| *h.borrow_mut() = Some(hook));
            }
            let _ = tx.send(copy_into(&entries, &home, limits, &tree));
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("file_sync hung")
            .unwrap()
    }

    /// Every file below `dir`: (relative path, contents, mode).
    fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    pending.push(path);
                } else {
                    let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                    out.push((rel, fs::read(&path).unwrap(), meta.mode() & 0o7777));
                }
            }
        }
        out.sort();
        out
    }

    fn have_e2fsprogs() -> bool {
        let ok = ["mkfs.ext4", "debugfs"]
            .iter()
            .all(|t| banger_config::find_tool(t).is_some());
        if !ok {
            banger_testkit::skip("e2fsprogs is not installed");
        }
        ok
    }

    #[test]
    fn guest_paths_stay_under_root() {
        assert_eq!(
            guest_relative("~/.gitconfig").unwrap(),
            PathBuf::from(".gitconfig")
        );
        assert_eq!(guest_relative("/root/a/b").unwrap(), PathBuf::from("a/b"));
        for bad in [
            "/etc/passwd",
            "~/../etc/x",
            "/root/",
            "~/",
            "relative",
            "/root/a/../../x",
        ] {
            assert!(guest_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn copies_files_and_folders_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let outside = dir.path().join("outside");
        let tree = dir.path().join("tree");
        fs::create_dir_all(home.join(".config/tool/sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir(&tree).unwrap();
        fs::write(home.join(".gitconfig"), "[user]\n").unwrap();
        fs::write(home.join(".config/tool/a"), "A").unwrap();
        fs::write(home.join(".config/tool/sub/b"), "B").unwrap();
        fs::write(outside.join("secret"), "S").unwrap();
        symlink(outside.join("secret"), home.join(".config/tool/link")).unwrap();
        symlink(&outside, home.join("escape")).unwrap();
        symlink(home.join(".gitconfig"), home.join("alias")).unwrap();

        let r = copy_bounded(
            vec![
                entry("~/.gitconfig", "~/.gitconfig", None),
                entry("~/.config/tool", "/root/.config/tool", Some(0o640)),
                entry("~/escape", "~/escape", None),
                entry("~/alias", "~/alias", None),
                entry("~/missing", "~/missing", None),
                entry(outside.join("secret").to_str().unwrap(), "~/s", None),
                entry("~/.gitconfig", "/etc/gitconfig", None),
            ],
            &home,
            LIMITS,
            &tree,
            None,
        );
        assert_eq!(
            files_below(&tree),
            [
                (".config/tool/a".into(), b"A".to_vec(), 0o640),
                (".config/tool/sub/b".into(), b"B".to_vec(), 0o640),
                (".gitconfig".into(), b"[user]\n".to_vec(), 0o600),
                // A top-level link inside home is followed.
                ("alias".into(), b"[user]\n".to_vec(), 0o600),
            ]
        );
        assert_eq!((r.files, r.bytes), (4, 16));
        let warnings = r.warnings.join("\n");
        assert!(
            warnings.contains("link\" is a symlink inside a synced folder"),
            "{warnings}"
        );
        assert!(warnings.contains("\"~/escape\" resolves to"), "{warnings}");
        assert!(warnings.contains("~/missing does not exist"), "{warnings}");
        assert!(warnings.contains("outside your home"), "{warnings}");
        assert!(
            warnings.contains("must start with ~/ or /root/"),
            "{warnings}"
        );
        assert_eq!(r.warnings.len(), 5, "{warnings}");
        assert_eq!(
            fs::metadata(tree.join(".config/tool/sub")).unwrap().mode() & 0o7777,
            0o700
        );

        assert_eq!(
            check(&entry("~/.gitconfig", "~/.gitconfig", None), &home),
            Ok(true)
        );
        assert_eq!(check(&entry("~/missing", "~/m", None), &home), Ok(false));
        assert!(check(&entry("~/escape", "~/e", None), &home).is_err());
        assert!(check(&entry("relative", "~/e", None), &home).is_err());
    }

    /// Names from a synced folder are bytes on the disk, whatever they
    /// hold. banger once wrote them into a debugfs script, where this name
    /// made debugfs copy a file from the disk onto the host.
    #[test]
    fn hostile_names_arrive_verbatim_and_run_nothing() {
        if !have_e2fsprogs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let folder = home.join("folder");
        fs::create_dir_all(&folder).unwrap();
        // Relative: debugfs would write it in its working directory, ours.
        let marker = format!("banger-marker-{}", std::process::id());
        let names: Vec<OsString> = vec![
            format!("q\" uid 0\ncd sub\ndump a {marker}\nsif \"q").into(),
            "new\nline".into(),
            "back\\slash".into(),
            "with space".into(),
            "-R".into(),
            "--help".into(),
            "tab\tand'quote'".into(),
            std::ffi::OsStr::from_bytes(b"not-utf8-\xff\xfe").to_owned(),
        ];
        fs::write(folder.join("a"), "A").unwrap();
        for (i, name) in names.iter().enumerate() {
            fs::write(folder.join(name), format!("content {i}")).unwrap();
        }
        fs::create_dir(folder.join("-d")).unwrap();
        fs::write(folder.join("-d").join("x\"y"), "nested").unwrap();

        let disk = dir.path().join("work.ext4");
        let report = crate::make_disk_with(
            &disk,
            Size::from_mib(64),
            "w",
            &crate::new_uuid(),
            &crate::Seed::default(),
            |tree| copy_into(&[entry("~/folder", "~/sub", None)], &home, LIMITS, tree),
        );
        let leaked = Path::new(&marker).exists();
        let _ = fs::remove_file(&marker);
        assert!(!leaked, "a file name ran a debugfs command on the host");
        let report = report.unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);

        // Read the folder back out (debugfs writes the names as data).
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let dump = Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /sub {}", out.display()))
            .arg(&disk)
            .output()
            .unwrap();
        assert!(dump.status.success(), "{dump:?}");
        // Same names and bytes; the mode is file_sync's default.
        let expected: Vec<_> = files_below(&folder)
            .into_iter()
            .map(|(name, bytes, _)| (name, bytes, DEFAULT_MODE))
            .collect();
        assert_eq!(files_below(&out.join("sub")), expected);
        for e in fs::read_dir(out.join("sub")).unwrap() {
            let meta = fs::symlink_metadata(e.unwrap().path()).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (0, 0));
        }
    }

    #[test]
    fn fifos_sockets_and_devices_are_skipped_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let folder = home.join("folder");
        let tree = dir.path().join("tree");
        fs::create_dir_all(&folder).unwrap();
        fs::create_dir(&tree).unwrap();
        fs::write(folder.join("plain"), "P").unwrap();
        nix::unistd::mkfifo(&folder.join("pipe"), Mode::from_bits_truncate(0o600)).unwrap();
        nix::unistd::mkfifo(&home.join("toppipe"), Mode::from_bits_truncate(0o600)).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(folder.join("sock")).unwrap();
        symlink("/dev/zero", folder.join("zero")).unwrap();
        // /dev/zero mounted over a regular file: the listing says "file",
        // only what the open returns says "device".
        let bound = folder.join("bound");
        fs::write(&bound, "").unwrap();
        let _mount = BindMount::new(Path::new("/dev/zero"), &bound);

        let r = copy_bounded(
            vec![
                entry("~/folder", "~/f", None),
                entry("~/toppipe", "~/p", None),
            ],
            &home,
            LIMITS,
            &tree,
            None,
        );
        assert_eq!(
            files_below(&tree),
            [("f/plain".into(), b"P".to_vec(), 0o600)]
        );
        let warnings = r.warnings.join("\n");
        for (name, why) in [
            ("folder/pipe", "is a FIFO"),
            ("toppipe", "is a FIFO"),
            ("folder/sock", "is a socket"),
            ("folder/zero", "is a symlink"),
        ] {
            assert!(
                warnings.contains(&format!("{name}\" {why}")),
                "{name}: {warnings}"
            );
        }
        if _mount.is_some() {
            assert!(warnings.contains("bound\" is a device"), "{warnings}");
        }
    }

    /// A writer racing the copy swaps entries after the folder is listed:
    /// a file for a FIFO, a file for a link to /dev/zero, a folder for a
    /// link out of home. What is opened is what is checked.
    #[test]
    fn entries_swapped_after_listing_are_seen_for_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let folder = home.join("folder");
        let outside = dir.path().join("outside");
        let tree = dir.path().join("tree");
        fs::create_dir_all(folder.join("sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir(&tree).unwrap();
        fs::write(outside.join("secret"), "S").unwrap();
        for f in ["fifo", "zero", "kept"] {
            fs::write(folder.join(f), f).unwrap();
        }
        let hook = {
            let (folder, outside) = (folder.clone(), outside.clone());
            Box::new(move |path: &Path| {
                let name = path.file_name().unwrap().to_str().unwrap();
                match name {
                    "fifo" => {
                        fs::remove_file(path).unwrap();
                        nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).unwrap();
                    }
                    "zero" => {
                        fs::remove_file(path).unwrap();
                        symlink("/dev/zero", path).unwrap();
                    }
                    "sub" if path.parent() == Some(folder.as_path()) => {
                        fs::remove_dir(path).unwrap();
                        symlink(&outside, path).unwrap();
                    }
                    _ => {}
                }
            }) as Hook
        };
        let r = copy_bounded(
            vec![entry("~/folder", "~/f", None)],
            &home,
            LIMITS,
            &tree,
            Some(hook),
        );
        assert_eq!(
            files_below(&tree),
            [("f/kept".into(), b"kept".to_vec(), 0o600)]
        );
        let warnings = r.warnings.join("\n");
        assert!(warnings.contains("fifo\" is a FIFO"), "{warnings}");
        assert!(warnings.contains("zero\" is a symlink"), "{warnings}");
        assert!(warnings.contains("sub\" is a symlink"), "{warnings}");
    }

    #[test]
    fn sizes_are_capped_per_file_and_in_total() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let folder = home.join("folder");
        let tree = dir.path().join("tree");
        fs::create_dir_all(&folder).unwrap();
        fs::create_dir(&tree).unwrap();
        fs::write(folder.join("big"), vec![1u8; 2048]).unwrap();
        for name in ["a", "b", "c", "d"] {
            fs::write(folder.join(name), vec![2u8; 1024]).unwrap();
        }
        // Sparse, so the test costs nothing; read whole, it would be 64 GiB.
        File::create(home.join("huge"))
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let limits = Limits {
            max_file: Size::from_bytes(1024),
            max_total: Size::from_bytes(3 * 1024),
        };
        let r = copy_bounded(
            vec![
                entry("~/folder", "~/f", None),
                entry("~/huge", "~/huge", None),
            ],
            &home,
            limits,
            &tree,
            None,
        );
        let got: Vec<PathBuf> = files_below(&tree).into_iter().map(|f| f.0).collect();
        assert_eq!(got, [PathBuf::from("f/a"), "f/b".into(), "f/c".into()]);
        assert_eq!((r.files, r.bytes), (3, 3 * 1024));
        let warnings = r.warnings.join("\n");
        assert!(
            warnings.contains("big\" is 2048 bytes, more than file_sync_max_file (1K)"),
            "{warnings}"
        );
        assert!(
            warnings.contains("huge\" is 68719476736 bytes, more than file_sync_max_file"),
            "{warnings}"
        );
        assert!(
            warnings
                .contains("d\" (1024 bytes) would take the total past file_sync_max_total (3K)"),
            "{warnings}"
        );
        assert_eq!(r.warnings.len(), 3, "{warnings}");
    }

    #[test]
    fn later_entries_replace_files_and_conflicts_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let tree = dir.path().join("tree");
        fs::create_dir_all(home.join("d")).unwrap();
        fs::create_dir(&tree).unwrap();
        fs::write(home.join("one"), "1").unwrap();
        fs::write(home.join("two"), "2").unwrap();
        fs::write(home.join("d/x"), "x").unwrap();
        let r = copy_bounded(
            vec![
                entry("~/one", "~/same", None),
                entry("~/two", "~/same", None),
                entry("~/d", "~/same/under", None),
            ],
            &home,
            LIMITS,
            &tree,
            None,
        );
        assert_eq!(files_below(&tree), [("same".into(), b"2".to_vec(), 0o600)]);
        assert!(
            r.warnings[0].contains("a folder must go there"),
            "{:?}",
            r.warnings
        );
    }

    /// `/dev/zero` bind-mounted over `at` while it lives; `None` (and a
    /// note) where mounting is not allowed.
    struct BindMount(PathBuf);

    impl BindMount {
        fn new(what: &Path, at: &Path) -> Option<BindMount> {
            if !nix::unistd::geteuid().is_root() {
                banger_testkit::skip("the bind-mounted /dev/zero case needs root");
                return None;
            }
            let ok = Command::new("mount")
                .arg("--bind")
                .arg(what)
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                banger_testkit::skip(format!("cannot bind-mount {}", what.display()));
                return None;
            }
            Some(BindMount(at.to_path_buf()))
        }
    }

    impl Drop for BindMount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
}
