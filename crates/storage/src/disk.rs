use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_config::find_tool;
use banger_model::Size;

/// The system disk only holds what a VM changes outside `/root`; it is
/// sparse, so its nominal size costs nothing until written.
pub const SYSTEM_DISK_SIZE: Size = Size::from_gib(16);

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{tool} is not installed: apt-get install {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error(
        "cannot make a disk's files root's without running as root: unshare cannot map your \
         uid to 0 ({stderr}); allow unprivileged user namespaces (sysctl \
         user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns) or run \
         bangerd as root"
    )]
    UserNamespace { stderr: String },
    #[error("{tool} failed on {path}: {stderr}")]
    Tool {
        tool: &'static str,
        path: PathBuf,
        stderr: String,
    },
    #[error(
        "the disk {path} is {current} and cannot shrink to {wanted}: give a size of at least {current}"
    )]
    Shrink {
        path: PathBuf,
        current: Size,
        wanted: Size,
    },
    #[error(
        "not enough space in {path}: {what} {} at full size, {} free; \
         free some space there, or give a smaller --disk-size",
        need.human(),
        free.human()
    )]
    NoSpace {
        path: PathBuf,
        /// "the disks need", "growing the work disk needs".
        what: &'static str,
        need: Size,
        free: Size,
    },
    /// A write found its filesystem full (ENOSPC, or the quota spent).
    #[error(
        "cannot write {path}: the disk holding it is full; free some space there and try again"
    )]
    Full { path: PathBuf },
    #[error("seed path {0:?} must be relative, without '..'")]
    BadSeedPath(String),
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// A file to put on a new disk: a path relative to the disk's root, its
/// contents and mode. Parent directories are made 0700. Everything seeded is
/// owned by root inside the guest, whoever runs banger. Paths are banger's
/// own; files named by others (synced folders) go in through
/// [`make_disk_with`]'s fill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seed {
    pub files: Vec<SeedFile>,
}

impl Seed {
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push(SeedFile {
            path: path.to_string(),
            contents: contents.into(),
            mode,
        });
        self
    }
}

/// A random filesystem UUID: banger-init finds each disk by its UUID, so
/// the kernel's probe order never matters.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Makes a sparse ext4 disk of `size` at `path` holding `seed`, with the
/// given label and UUID. Written to a temporary sibling and renamed, so
/// `path` is absent or complete.
pub fn make_disk(
    path: &Path,
    size: Size,
    label: &str,
    uuid: &str,
    seed: &Seed,
) -> Result<(), DiskError> {
    make_disk_with(path, size, label, uuid, seed, |_| Ok(()))
}

/// [`make_disk`], with `fill` first writing more files into the staging
/// tree that becomes the disk's root (`file_sync` copies the user's files
/// there). `seed`'s files are written after it, so they win over anything
/// `fill` put at the same path. Names in the tree reach the disk as data:
/// `mkfs.ext4 -d` copies them with system calls, never through a script.
pub fn make_disk_with<T>(
    path: &Path,
    size: Size,
    label: &str,
    uuid: &str,
    seed: &Seed,
    fill: impl FnOnce(&Path) -> Result<T, DiskError>,
) -> Result<T, DiskError> {
    let tree = sibling(path, ".seed");
    let result = (|| {
        let _ = fs::remove_dir_all(&tree);
        // Private while it exists: synced files may be secrets.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tree)
            .map_err(io_err("create", &tree))?;
        let filled = fill(&tree)?;
        write_seed(&tree, seed)?;
        make_disk_from_tree(path, size, label, uuid, &tree)?;
        Ok(filled)
    })();
    let _ = fs::remove_dir_all(&tree);
    result
}

/// Makes a sparse ext4 disk of `size` at `path` whose root holds what
/// `tree` holds (a staging tree the caller made, e.g. a workspace's),
/// everything owned by root in the guest, with the given label and UUID.
/// The tree's owners are changed; the tree is left for the caller to
/// remove. `path` is absent or complete.
pub fn make_disk_from_tree(
    path: &Path,
    size: Size,
    label: &str,
    uuid: &str,
    tree: &Path,
) -> Result<(), DiskError> {
    let mkfs = find_tool("mkfs.ext4").ok_or(DiskError::MissingTool {
        tool: "mkfs.ext4",
        package: "e2fsprogs",
    })?;
    let ownership = Ownership::of_this_process()?;
    let tmp = sibling(path, ".partial");
    let made = mkfs_tree(&mkfs, &ownership, path, &tmp, size, label, uuid, tree);
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made
}

/// `mkfs.ext4 -d tree` into `tmp`, renamed to `path` once complete.
#[allow(clippy::too_many_arguments)]
fn mkfs_tree(
    mkfs: &Path,
    ownership: &Ownership,
    path: &Path,
    tmp: &Path,
    size: Size,
    label: &str,
    uuid: &str,
    tree: &Path,
) -> Result<(), DiskError> {
    ownership.prepare(tree)?;
    let _ = fs::remove_file(tmp);
    let mut command = ownership.command(mkfs);
    command
        .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid])
        // Lazy init: the host writes only metadata that is used, so
        // the file stays sparse; the guest kernel finishes the rest.
        .args([
            "-E",
            "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg("-d")
        .arg(tree)
        .arg(tmp)
        .arg(format!("{}k", size.bytes() / 1024));
    let out = command
        .output()
        .map_err(io_err("run mkfs.ext4 for", path))?;
    if !out.status.success() {
        return Err(ownership.failure(path, &out.stderr));
    }
    fs::rename(tmp, path).map_err(io_err("move into place", path))
}

/// How everything on a new disk comes to be owned by root inside the
/// guest, whoever runs banger (sshd refuses an authorized_keys owned by
/// anyone else). `mkfs.ext4 -d` copies each file's owner from the staging
/// tree, so the tree's owners must read as 0:0 to mkfs.
///
/// banger once set owners afterwards with a debugfs command script (`sif
/// "PATH" uid 0`), but the paths include names from synced folders, and a
/// name with a quote and a newline became debugfs commands run as root
/// (`dump`/`write` between the host and the disk). No name banger did not
/// make goes into a tool's script; ownership is settled before mkfs runs:
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ownership {
    /// The daemon is root: it gives the tree it wrote to 0:0 (lchown,
    /// never following a link), and mkfs copies that.
    Chown,
    /// The daemon is not root: mkfs runs in a user namespace (util-linux
    /// `unshare --user --map-root-user`) where the daemon's uid and gid are
    /// 0, so files it owns read as root's. A root daemon does not take
    /// this path because hardened hosts turn user namespaces off.
    UserNamespace { unshare: PathBuf },
}

impl Ownership {
    fn of_this_process() -> Result<Self, DiskError> {
        if nix::unistd::geteuid().is_root() {
            return Ok(Ownership::Chown);
        }
        let unshare = find_tool("unshare").ok_or(DiskError::MissingTool {
            tool: "unshare",
            package: "util-linux",
        })?;
        Ok(Ownership::UserNamespace { unshare })
    }

    /// Makes every owner in `tree` read as 0:0 to mkfs.
    fn prepare(&self, tree: &Path) -> Result<(), DiskError> {
        match self {
            Ownership::Chown => set_owners(tree, Some(0), 0),
            // Only the daemon's own gid is mapped; a file that took another
            // group (a setgid parent folder) would read as "nogroup".
            Ownership::UserNamespace { .. } => {
                set_owners(tree, None, nix::unistd::getegid().as_raw())
            }
        }
    }

    fn command(&self, mkfs: &Path) -> Command {
        match self {
            Ownership::Chown => Command::new(mkfs),
            Ownership::UserNamespace { unshare } => {
                let mut c = Command::new(unshare);
                c.args(["--user", "--map-root-user", "--"]).arg(mkfs);
                c
            }
        }
    }

    fn failure(&self, path: &Path, stderr: &[u8]) -> DiskError {
        let stderr = tail(stderr);
        match self {
            // unshare prefixes its own complaints; mkfs's are mkfs's.
            Ownership::UserNamespace { .. } if stderr.starts_with("unshare:") => {
                DiskError::UserNamespace { stderr }
            }
            _ => DiskError::Tool {
                tool: "mkfs.ext4",
                path: path.to_path_buf(),
                stderr,
            },
        }
    }
}

/// Sets the owner (when `uid` is given) and group of `dir` and everything
/// below it, links included but never followed. The tree is banger's
/// staging tree: it holds only folders and files banger made.
fn set_owners(dir: &Path, uid: Option<u32>, gid: u32) -> Result<(), DiskError> {
    std::os::unix::fs::lchown(dir, uid, Some(gid)).map_err(io_err("chown", dir))?;
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(io_err("inspect", &path))?
            .is_dir()
        {
            set_owners(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, uid, Some(gid)).map_err(io_err("chown", &path))?;
        }
    }
    Ok(())
}

/// Writes banger's own files. Whatever a `fill` left at one of their paths
/// (or at a parent that must be a folder) gives way: banger's files win.
fn write_seed(tree: &Path, seed: &Seed) -> Result<(), DiskError> {
    for f in &seed.files {
        let rel = Path::new(&f.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(DiskError::BadSeedPath(f.path.clone()));
        }
        let dest = tree.join(rel);
        if let Some(parent) = dest.parent() {
            let mut dir = tree.to_path_buf();
            for c in parent.strip_prefix(tree).unwrap_or(parent).components() {
                dir.push(c);
                match fs::symlink_metadata(&dir) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => fs::remove_file(&dir).map_err(io_err("remove", &dir))?,
                    Err(_) => {}
                }
                match fs::create_dir(&dir) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                        return Err(io_err("create", &dir)(e));
                    }
                    _ => {}
                }
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("chmod", &dir))?;
            }
        }
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&dest).map_err(io_err("remove", &dest))?;
        }
        fs::write(&dest, &f.contents).map_err(io_err("write", &dest))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(f.mode))
            .map_err(io_err("chmod", &dest))?;
    }
    Ok(())
}

/// The UUID of the ext2/3/4 filesystem in `path`, read from its
/// superblock (how banger-init will find the disk in the guest).
pub fn read_ext4_uuid(path: &Path) -> Result<String, DiskError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(path).map_err(io_err("open", path))?;
    let mut sb = [0u8; 0x78];
    f.seek(SeekFrom::Start(1024))
        .and_then(|_| f.read_exact(&mut sb))
        .map_err(io_err("read the superblock of", path))?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Err(DiskError::Tool {
            tool: "ext4",
            path: path.to_path_buf(),
            stderr: "no ext4 superblock".into(),
        });
    }
    let u = &sb[0x68..0x78];
    Ok(uuid::Uuid::from_slice(u)
        .map_err(|_| DiskError::Tool {
            tool: "ext4",
            path: path.to_path_buf(),
            stderr: "bad UUID".into(),
        })?
        .hyphenated()
        .to_string())
}

/// Grows a disk image and its ext4 filesystem to `size` (the VM must be
/// stopped). Shrinking is refused.
pub fn grow_disk(path: &Path, size: Size) -> Result<(), DiskError> {
    let current = Size::from_bytes(fs::metadata(path).map_err(io_err("inspect", path))?.len());
    if size < current {
        return Err(DiskError::Shrink {
            path: path.to_path_buf(),
            current,
            wanted: size,
        });
    }
    if size == current {
        return Ok(());
    }
    let e2fsck = find_tool("e2fsck").ok_or(DiskError::MissingTool {
        tool: "e2fsck",
        package: "e2fsprogs",
    })?;
    let resize2fs = find_tool("resize2fs").ok_or(DiskError::MissingTool {
        tool: "resize2fs",
        package: "e2fsprogs",
    })?;
    // resize2fs insists on a freshly checked filesystem.
    let out = Command::new(e2fsck)
        .args(["-f", "-p"])
        .arg(path)
        .output()
        .map_err(io_err("run e2fsck on", path))?;
    // 0: clean, 1: errors corrected.
    if !matches!(out.status.code(), Some(0) | Some(1)) {
        return Err(DiskError::Tool {
            tool: "e2fsck",
            path: path.to_path_buf(),
            stderr: tail(&[out.stdout, out.stderr].concat()),
        });
    }
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(size.bytes()))
        .map_err(io_err("extend", path))?;
    let out = Command::new(resize2fs)
        .arg(path)
        .output()
        .map_err(io_err("run resize2fs on", path))?;
    if !out.status.success() {
        return Err(DiskError::Tool {
            tool: "resize2fs",
            path: path.to_path_buf(),
            stderr: tail(&out.stderr),
        });
    }
    Ok(())
}

/// A disk's nominal size and what it really takes on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub size: u64,
    pub allocated: u64,
}

pub fn usage(path: &Path) -> Result<DiskUsage, DiskError> {
    let m = fs::metadata(path).map_err(io_err("inspect", path))?;
    Ok(DiskUsage {
        size: m.len(),
        allocated: m.blocks() * 512,
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_e2fsprogs() -> bool {
        let ok = ["mkfs.ext4", "debugfs", "resize2fs", "e2fsck"]
            .iter()
            .all(|t| find_tool(t).is_some());
        if !ok {
            banger_testkit::skip("e2fsprogs is not installed");
        }
        ok
    }

    fn debugfs(image: &Path, request: &str) -> String {
        let out = Command::new(find_tool("debugfs").unwrap())
            .args(["-R", request])
            .arg(image)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn makes_a_sparse_seeded_disk_owned_by_root() {
        if !have_e2fsprogs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("work.ext4");
        let uuid = new_uuid();
        let seed = Seed::default().file(".ssh/authorized_keys", "ssh-ed25519 AAAA test\n", 0o600);
        make_disk(&disk, Size::from_gib(8), "banger-work", &uuid, &seed).unwrap();
        let u = usage(&disk).unwrap();
        assert_eq!(u.size, 8 << 30);
        assert!(
            u.allocated < 32 << 20,
            "sparse: {} bytes allocated",
            u.allocated
        );
        assert_eq!(
            debugfs(&disk, "cat /.ssh/authorized_keys"),
            "ssh-ed25519 AAAA test\n"
        );
        let stat = debugfs(&disk, "stat /.ssh/authorized_keys");
        assert!(
            stat.contains("User:     0") && stat.contains("Group:     0"),
            "{stat}"
        );
        assert!(stat.contains("Mode:  0600"), "{stat}");
        let dir_stat = debugfs(&disk, "stat /.ssh");
        assert!(dir_stat.contains("Mode:  0700"), "{dir_stat}");
        let root_stat = debugfs(&disk, "stat /");
        assert!(root_stat.contains("Mode:  0755"), "{root_stat}");
        let sb = Command::new(find_tool("dumpe2fs").unwrap())
            .arg("-h")
            .arg(&disk)
            .output()
            .unwrap();
        let sb = String::from_utf8_lossy(&sb.stdout);
        assert!(sb.contains(&uuid), "UUID set");
        assert_eq!(read_ext4_uuid(&disk).unwrap(), uuid);
        assert!(sb.contains("banger-work"), "label set");
        // Nothing left beside it.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// Where the re-run of [`a_daemon_that_is_not_root_makes_root_owned_disks`]
    /// as an unprivileged user makes its disk.
    const AS_USER_DIR: &str = "BANGER_TEST_DISK_AS_USER";

    /// A daemon that is not root gets root-owned files on its disks too
    /// (through a user namespace), even one its own uid could not read.
    /// Run as root, the test re-runs itself as `nobody` to take that path.
    #[test]
    fn a_daemon_that_is_not_root_makes_root_owned_disks() {
        use std::os::unix::process::CommandExt;
        if let Some(dir) = std::env::var_os(AS_USER_DIR) {
            // The re-run, as nobody.
            assert!(!nix::unistd::geteuid().is_root());
            let seed = Seed::default()
                .file(".ssh/authorized_keys", "key\n", 0o600)
                .file("unreadable", "secret", 0o000);
            make_disk(
                &Path::new(&dir).join("d.ext4"),
                Size::from_mib(64),
                "w",
                &new_uuid(),
                &seed,
            )
            .unwrap();
            return;
        }
        if !have_e2fsprogs() {
            return;
        }
        if !nix::unistd::geteuid().is_root() {
            let dir = tempfile::tempdir().unwrap();
            let disk = dir.path().join("d.ext4");
            let seed = Seed::default().file("f", "x", 0o600);
            match make_disk(&disk, Size::from_mib(64), "w", &new_uuid(), &seed) {
                Err(DiskError::UserNamespace { stderr }) => {
                    banger_testkit::skip(format!("no user namespaces here ({stderr})"));
                }
                r => {
                    r.unwrap();
                    assert!(debugfs(&disk, "stat /f").contains("User:     0"));
                }
            }
            return;
        }
        let nobody = 65534;
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(nobody), Some(nobody)).unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "disk::tests::a_daemon_that_is_not_root_makes_root_owned_disks",
                "--nocapture",
            ])
            .env(AS_USER_DIR, dir.path())
            .uid(nobody)
            .gid(nobody)
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                banger_testkit::skip(format!("cannot run the test binary as nobody: {e}"));
                return;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "as nobody: {stdout}{stderr}"
        );
        let disk = dir.path().join("d.ext4");
        for path in ["/.ssh", "/.ssh/authorized_keys", "/unreadable"] {
            let stat = debugfs(&disk, &format!("stat {path}"));
            assert!(
                stat.contains("User:     0") && stat.contains("Group:     0"),
                "{path}: {stat}"
            );
        }
        assert_eq!(debugfs(&disk, "cat /unreadable"), "secret");
    }

    /// A seed path is a name, not a debugfs command: banger once wrote
    /// `sif "PATH" uid 0` lines, and this one made debugfs copy a file
    /// out of the disk onto the host.
    #[test]
    fn seed_names_are_data() {
        if !have_e2fsprogs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.ext4");
        // Relative: debugfs would write it in its working directory, ours.
        let marker = format!("banger-disk-marker-{}", std::process::id());
        let evil = format!("q\" uid 0\ncd sub\ndump a {marker}\nsif \"q");
        let seed = Seed::default()
            .file("sub/a", "A", 0o600)
            .file(&format!("sub/{evil}"), "E", 0o600)
            .file("sub/-R \\ x", "B", 0o600);
        let made = make_disk(&disk, Size::from_mib(64), "w", &new_uuid(), &seed);
        let leaked = Path::new(&marker).exists();
        let _ = fs::remove_file(&marker);
        assert!(!leaked, "a seed name ran a debugfs command on the host");
        made.unwrap();
        let listing = Command::new(find_tool("debugfs").unwrap())
            .args(["-R", "ls -p /sub"])
            .arg(&disk)
            .output()
            .unwrap()
            .stdout;
        for name in [evil.as_str(), "-R \\ x", "a"] {
            let entry = format!("/0/0/{name}/");
            assert!(
                listing.windows(entry.len()).any(|w| w == entry.as_bytes()),
                "{name:?} not in {}",
                String::from_utf8_lossy(&listing)
            );
        }
    }

    #[test]
    fn seed_files_win_over_what_the_fill_left() {
        if !have_e2fsprogs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.ext4");
        let seed = Seed::default()
            .file(".ssh/authorized_keys", "banger\n", 0o600)
            .file("keys/k", "k", 0o600);
        let filled = make_disk_with(&disk, Size::from_mib(64), "w", &new_uuid(), &seed, |tree| {
            fs::create_dir_all(tree.join(".ssh/authorized_keys/sub"))
                .map_err(io_err("create", tree))?;
            fs::write(tree.join("keys"), "a file where a folder goes")
                .map_err(io_err("write", tree))?;
            fs::write(tree.join("kept"), "kept").map_err(io_err("write", tree))?;
            Ok(7)
        })
        .unwrap();
        assert_eq!(filled, 7);
        assert_eq!(debugfs(&disk, "cat /.ssh/authorized_keys"), "banger\n");
        assert_eq!(debugfs(&disk, "cat /keys/k"), "k");
        assert_eq!(debugfs(&disk, "cat /kept"), "kept");
    }

    #[test]
    fn grows_but_never_shrinks() {
        if !have_e2fsprogs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("work.ext4");
        make_disk(
            &disk,
            Size::from_mib(256),
            "w",
            &new_uuid(),
            &Seed::default().file("keep", "me", 0o644),
        )
        .unwrap();
        grow_disk(&disk, Size::from_mib(512)).unwrap();
        assert_eq!(usage(&disk).unwrap().size, 512 << 20);
        let sb = Command::new(find_tool("dumpe2fs").unwrap())
            .arg("-h")
            .arg(&disk)
            .output()
            .unwrap();
        let sb = String::from_utf8_lossy(&sb.stdout);
        let field = |name: &str| -> u64 {
            sb.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|n| n.parse().ok())
                .unwrap()
        };
        assert_eq!(
            field("Block count:") * field("Block size:"),
            512 << 20,
            "the filesystem grew too"
        );
        assert_eq!(debugfs(&disk, "cat /keep"), "me");
        let err = grow_disk(&disk, Size::from_mib(256)).unwrap_err();
        assert!(err.to_string().contains("cannot shrink"), "{err}");
        grow_disk(&disk, Size::from_mib(512)).unwrap();
    }

    #[test]
    fn seed_paths_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["/etc/passwd", "../x", "a/../../x"] {
            let err = make_disk(
                &dir.path().join("d.ext4"),
                Size::from_mib(64),
                "x",
                &new_uuid(),
                &Seed::default().file(bad, "x", 0o600),
            )
            .unwrap_err();
            assert!(matches!(err, DiskError::BadSeedPath(_)), "{bad}: {err}");
        }
        assert!(!dir.path().join("d.ext4").exists());
    }
}
