use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    #[error("{tool} is not installed: apt-get install e2fsprogs")]
    MissingTool { tool: &'static str },
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
    #[error("seed path {0:?} must be relative, without '..'")]
    BadSeedPath(String),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// A file to put on a new disk: a path relative to the disk's root, its
/// contents and mode. Parent directories are made 0700. Everything seeded is
/// owned by root inside the guest, whoever runs banger.
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
    let mkfs = find_tool("mkfs.ext4").ok_or(DiskError::MissingTool { tool: "mkfs.ext4" })?;
    let tmp = sibling(path, ".partial");
    let tree = sibling(path, ".seed");
    let result = (|| {
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir_all(&tree).map_err(io_err("create", &tree))?;
        write_seed(&tree, seed)?;
        let _ = fs::remove_file(&tmp);
        let out = Command::new(mkfs)
            .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid])
            // Lazy init: the host writes only metadata that is used, so
            // the file stays sparse; the guest kernel finishes the rest.
            .args([
                "-E",
                "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
            ])
            .arg("-d")
            .arg(&tree)
            .arg(&tmp)
            .arg(format!("{}k", size.bytes() / 1024))
            .output()
            .map_err(io_err("run mkfs.ext4 for", path))?;
        if !out.status.success() {
            return Err(DiskError::Tool {
                tool: "mkfs.ext4",
                path: path.to_path_buf(),
                stderr: tail(&out.stderr),
            });
        }
        chown_seed_to_root(&tmp, seed)?;
        fs::rename(&tmp, path).map_err(io_err("move into place", path))
    })();
    let _ = fs::remove_dir_all(&tree);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

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
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            let mut dir = parent;
            while dir != tree {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("chmod", dir))?;
                match dir.parent() {
                    Some(p) => dir = p,
                    None => break,
                }
            }
        }
        fs::write(&dest, &f.contents).map_err(io_err("write", &dest))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(f.mode))
            .map_err(io_err("chmod", &dest))?;
    }
    Ok(())
}

/// `mkfs.ext4 -d` copies owners from the host files; a daemon that is not
/// root would give the guest files owned by its uid, and sshd refuses an
/// authorized_keys it does not trust. Set root ownership with debugfs.
fn chown_seed_to_root(image: &Path, seed: &Seed) -> Result<(), DiskError> {
    let mut paths: Vec<String> = Vec::new();
    for f in &seed.files {
        let mut p = PathBuf::new();
        for c in Path::new(&f.path).components() {
            p.push(c);
            let s = format!("/{}", p.display());
            if !paths.contains(&s) {
                paths.push(s);
            }
        }
    }
    if paths.is_empty() {
        return Ok(());
    }
    let debugfs = find_tool("debugfs").ok_or(DiskError::MissingTool { tool: "debugfs" })?;
    let script: String = paths
        .iter()
        .map(|p| format!("sif \"{p}\" uid 0\nsif \"{p}\" gid 0\n"))
        .collect();
    let cmd_file = sibling(image, ".debugfs");
    fs::write(&cmd_file, script).map_err(io_err("write", &cmd_file))?;
    let out = Command::new(debugfs)
        .arg("-w")
        .arg("-f")
        .arg(&cmd_file)
        .arg(image)
        .output();
    let _ = fs::remove_file(&cmd_file);
    let out = out.map_err(io_err("run debugfs on", image))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // debugfs exits 0 even when a request fails; its complaints name them.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        return Err(DiskError::Tool {
            tool: "debugfs",
            path: image.to_path_buf(),
            stderr: complaints.join(" | "),
        });
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
    let e2fsck = find_tool("e2fsck").ok_or(DiskError::MissingTool { tool: "e2fsck" })?;
    let resize2fs = find_tool("resize2fs").ok_or(DiskError::MissingTool { tool: "resize2fs" })?;
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
            println!("skipped: e2fsprogs is not installed");
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
