//! The workspace disk: an ext4 the host filled with a repository's files
//! (`mkfs.ext4 -d`), mounted at `/root/<name>`. banger-init mounts it at a
//! cold boot (`banger.workspace`); a guest resumed from a template gets it
//! from the identity request ([`mount`]).
//!
//! A resumed guest's kernel probed that disk when the template booted,
//! while it held an empty placeholder; the host has since put this VM's
//! file behind it and, when it is bigger, told the guest (virtio-blk's
//! configuration change). So the kernel may still cache the placeholder's
//! blocks and size: each candidate's cached blocks are dropped
//! (`BLKFLSBUF`) before its superblock is read, the disk is picked by the
//! filesystem UUID the host chose, and its size is waited for (bounded)
//! before ext4 is mounted on it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_agent_proto::{WorkspaceMount, valid_fs_uuid, valid_workspace_name};
use nix::mount::MsFlags;

use crate::filesystem::{find_mount, read_bounded, wait_for_size};
use crate::superblock;

/// How long the disk may take to show the host's filesystem at its size:
/// the host's swap, virtio-blk's configuration change and this request
/// race.
pub const WAIT: Duration = Duration::from_secs(10);
/// The mode of a workspace folder made under `/root`.
pub const DIR_MODE: u32 = 0o755;
/// Under which folder a workspace is mounted.
pub const PARENT: &str = "/root";
/// How often the disks are looked at again while waiting.
const POLL: Duration = Duration::from_millis(50);
/// `_IO(0x12, 97)` from linux/fs.h: write out and drop a block device's
/// cached blocks.
const BLKFLSBUF: libc::Ioctl = 0x1261;
/// The most of /proc/self/mountinfo read (as filesystem.rs).
const MAX_MOUNTINFO: u64 = 4 << 20;

/// The request is plain: a UUID as banger writes it, `/root/<name>` with
/// a name banger-init also takes, a positive multiple of 512 bytes.
pub(crate) fn check(ws: &WorkspaceMount) -> Result<(), String> {
    if !valid_fs_uuid(&ws.uuid) {
        return Err(format!(
            "{:?} is not a filesystem UUID: 36 lowercase hex digits and dashes, e.g. \
             0f8fad5b-d9cb-469f-a165-70867728950e",
            cut(&ws.uuid)
        ));
    }
    let name = ws
        .dir
        .strip_prefix(PARENT)
        .and_then(|rest| rest.strip_prefix('/'));
    if !name.is_some_and(valid_workspace_name) {
        return Err(format!(
            "{:?} is not {PARENT}/<name>, the name 1 to {} letters, digits, '.', '_' or '-', \
             not starting with '.' or '-'",
            cut(&ws.dir),
            banger_agent_proto::MAX_WORKSPACE_NAME
        ));
    }
    if ws.bytes == 0 || !ws.bytes.is_multiple_of(512) {
        return Err(format!(
            "{} bytes is not a block device's size (a positive multiple of 512)",
            ws.bytes
        ));
    }
    Ok(())
}

/// Mounts the workspace filesystem `ws` names at `ws.dir` under `root`
/// (`/` but in tests); waits up to [`WAIT`] for its disk. Already mounted
/// there is success. The error names the step that failed.
pub fn mount(root: &Path, ws: &WorkspaceMount) -> Result<(), String> {
    let virtio = Kernel::live(Box::new(|name| name.starts_with("vd")));
    mount_with(root, ws, &virtio, WAIT)
}

/// [`mount`], with the disks looked for among `/sys/block/<name>` for
/// `names` only, waiting up to `wait`: for a test on a host, whose loop
/// devices stand for the guest's `vd*` disks.
#[doc(hidden)]
pub fn mount_among(
    root: &Path,
    ws: &WorkspaceMount,
    names: &[&str],
    wait: Duration,
) -> Result<(), String> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let named = Kernel::live(Box::new(move |name| names.iter().any(|n| n == name)));
    mount_with(root, ws, &named, wait)
}

/// Where the kernel's view of the disks is read, so tests give fakes.
struct Kernel {
    sys_block: PathBuf,
    dev: PathBuf,
    mountinfo: PathBuf,
    /// Which block devices may hold the workspace: virtio-blk's `vd*`.
    candidate: Box<dyn Fn(&str) -> bool>,
    /// Drops a device's cached blocks ([`flush_buffers`]).
    flush: fn(&File) -> io::Result<()>,
}

impl Kernel {
    /// The running kernel's view, of the disks `candidate` names.
    fn live(candidate: Box<dyn Fn(&str) -> bool>) -> Self {
        Kernel {
            sys_block: "/sys/block".into(),
            dev: "/dev".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            candidate,
            flush: flush_buffers,
        }
    }
}

fn mount_with(
    root: &Path,
    ws: &WorkspaceMount,
    kernel: &Kernel,
    wait: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    let uuid = &ws.uuid;
    let name = loop {
        if let Some(name) = find(kernel, uuid)? {
            break name;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no disk holds the workspace filesystem UUID {uuid} after {wait:?} (disks: {})",
                listing(kernel)
            ));
        }
        std::thread::sleep(POLL);
    };
    let device = kernel.dev.join(&name);
    let shown = device.display();
    wait_for_size(
        &kernel.sys_block.join(&name).join("size"),
        ws.bytes,
        deadline.saturating_duration_since(Instant::now()),
    )
    .map_err(|e| format!("the workspace disk {shown}: {e}"))?;
    // Blocks read while the kernel still had the old size are dropped
    // too; the superblock must still be this filesystem's.
    if read_identity(kernel, &device)?.is_none_or(|id| id.uuid != *uuid) {
        return Err(format!(
            "the workspace disk {shown} no longer holds the filesystem UUID {uuid} (it changed \
             while the agent waited for its size)"
        ));
    }
    let target = root.join(ws.dir.trim_start_matches('/'));
    let dir = open_real_dir(&target, DIR_MODE)?;
    let numbers = read_bounded(&kernel.sys_block.join(&name).join("dev"), 64)
        .map_err(|e| format!("reading the device numbers of {shown}: {e}"))?;
    let mountinfo = read_bounded(&kernel.mountinfo, MAX_MOUNTINFO)
        .map_err(|e| format!("reading {}: {e}", kernel.mountinfo.display()))?;
    if find_mount(&mountinfo, &target).is_some_and(|m| {
        let (major, minor) = m.device;
        format!("{major}:{minor}") == numbers.trim()
    }) {
        return Ok(());
    }
    mount_ext4(&device, &dir).map_err(|e| {
        format!(
            "mounting the workspace disk {shown} on {}: {}",
            target.display(),
            e.desc()
        )
    })
}

/// The one candidate disk whose superblock carries `uuid`, each read
/// after its cached blocks are dropped; `None` if none does (yet: a
/// disk smaller than a superblock is one whose new size the kernel has
/// not seen).
fn find(kernel: &Kernel, uuid: &str) -> Result<Option<String>, String> {
    let mut found = Vec::new();
    for name in disks(kernel) {
        let device = kernel.dev.join(&name);
        if read_identity(kernel, &device)?.is_some_and(|id| id.uuid == uuid) {
            found.push(name);
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(format!(
            "{} disks hold the workspace filesystem UUID {uuid}: {}",
            found.len(),
            found.join(", ")
        )),
    }
}

/// The superblock's identity of `device` once its cached blocks are
/// dropped; `None` when it cannot be opened or read, or holds no ext
/// filesystem. Failing to drop the cache is an error: what would be
/// read then may be the placeholder's.
fn read_identity(kernel: &Kernel, device: &Path) -> Result<Option<superblock::Identity>, String> {
    let Ok(mut file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(device)
    else {
        return Ok(None);
    };
    (kernel.flush)(&file).map_err(|e| {
        format!(
            "dropping the cached blocks of {} (BLKFLSBUF): {e}",
            device.display()
        )
    })?;
    Ok(superblock::read(&mut file)
        .ok()
        .and_then(|sb| superblock::identity(&sb)))
}

/// The candidates among sys_block's entries, sorted.
fn disks(kernel: &Kernel) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(&kernel.sys_block)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| (kernel.candidate)(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The disks and their sizes, for a message: `vda 1073741824 bytes, …`.
fn listing(kernel: &Kernel) -> String {
    let all: Vec<String> = disks(kernel)
        .into_iter()
        .map(|name| {
            let sectors = read_bounded(&kernel.sys_block.join(&name).join("size"), 64)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            match sectors {
                Some(s) => format!("{name} {} bytes", s.saturating_mul(512)),
                None => name,
            }
        })
        .collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// Writes out and drops the block device's cached blocks (`BLKFLSBUF`,
/// as `blockdev --flushbufs`; needs CAP_SYS_ADMIN).
#[allow(unsafe_code)]
fn flush_buffers(device: &File) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument; the descriptor is open for
    // the borrow's length.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), BLKFLSBUF, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The directory at `path`, made with `mode` if absent (its parent must
/// exist), opened without following a link. A symlink or anything but a
/// directory there is refused, never followed or replaced: the work disk
/// under it is the guest's, and a mount must land where it was meant to.
/// Mount on it through [`fd_path`], so it cannot be swapped meanwhile.
pub fn open_real_dir(path: &Path, mode: u32) -> Result<File, String> {
    let shown = path.display();
    match DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {shown}: {e}")),
    }
    let meta = fs::symlink_metadata(path).map_err(|e| format!("inspecting {shown}: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{shown} is a symbolic link: the workspace is mounted only on a real directory \
             (move the link away)"
        ));
    }
    if !meta.is_dir() {
        return Err(format!(
            "{shown} is there and is not a directory: move it away for the workspace"
        ));
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("opening {shown}: {e}"))
}

/// The path through which the kernel reaches exactly `dir`'s open
/// directory (procfs's magic link), whatever its path now names.
pub fn fd_path(dir: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// Mounts the ext4 on `device` on the directory `dir` (from
/// [`open_real_dir`]) with the work disk's flags: none (read-write,
/// banger-init's defaults).
pub fn mount_ext4(device: &Path, dir: &File) -> nix::Result<()> {
    nix::mount::mount(
        Some(device),
        &fd_path(dir),
        Some("ext4"),
        MsFlags::empty(),
        None::<&str>,
    )
}

fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const UUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
    const UUID_BYTES: [u8; 16] = [
        0x0f, 0x8f, 0xad, 0x5b, 0xd9, 0xcb, 0x46, 0x9f, 0xa1, 0x65, 0x70, 0x86, 0x77, 0x28, 0x95,
        0x0e,
    ];

    fn ws(uuid: &str, dir: &str, bytes: u64) -> WorkspaceMount {
        WorkspaceMount {
            uuid: uuid.into(),
            dir: dir.into(),
            bytes,
        }
    }

    #[test]
    fn requests_are_checked() {
        check(&ws(UUID, "/root/banger", 1 << 30)).unwrap();
        check(&ws(UUID, "/root/a", 512)).unwrap();
        for (bad, why) in [
            (ws("", "/root/a", 512), "not a filesystem UUID"),
            (
                ws(&UUID.to_uppercase(), "/root/a", 512),
                "not a filesystem UUID",
            ),
            (ws(UUID, "/root", 512), "not /root/<name>"),
            (ws(UUID, "/root/", 512), "not /root/<name>"),
            (ws(UUID, "/root/a/b", 512), "not /root/<name>"),
            (ws(UUID, "/root/..", 512), "not /root/<name>"),
            (ws(UUID, "/root/.git", 512), "not /root/<name>"),
            (ws(UUID, "/root/-rf", 512), "not /root/<name>"),
            (ws(UUID, "/rootx/a", 512), "not /root/<name>"),
            (ws(UUID, "/home/a", 512), "not /root/<name>"),
            (ws(UUID, "root/a", 512), "not /root/<name>"),
            (
                ws(UUID, &format!("/root/{}", "a".repeat(65)), 512),
                "1 to 64",
            ),
            (ws(UUID, "/root/a", 0), "positive multiple of 512"),
            (ws(UUID, "/root/a", 1000), "positive multiple of 512"),
        ] {
            let e = check(&bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    /// A fake /sys/block, /dev and mountinfo: each disk an image file
    /// with a superblock (or none), its size in sectors and its numbers.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new(disks: &[(&str, Option<Vec<u8>>, u64)]) -> Self {
            let fake = Fake {
                dir: tempfile::tempdir().unwrap(),
            };
            for sub in ["sys", "dev", "root/root"] {
                fs::create_dir_all(fake.dir.path().join(sub)).unwrap();
            }
            fs::write(fake.path("mountinfo"), "").unwrap();
            for (i, (name, sb, bytes)) in disks.iter().enumerate() {
                fake.set(name, sb.clone(), *bytes, i);
            }
            fake
        }

        fn set(&self, name: &str, sb: Option<Vec<u8>>, bytes: u64, minor: usize) {
            let sys = self.path("sys").join(name);
            fs::create_dir_all(&sys).unwrap();
            fs::write(sys.join("size"), format!("{}\n", bytes / 512)).unwrap();
            fs::write(sys.join("dev"), format!("254:{}\n", minor * 16)).unwrap();
            let mut data = vec![0u8; superblock::OFFSET as usize];
            data.extend(sb.unwrap_or_else(|| vec![0; superblock::SIZE]));
            fs::write(self.path("dev").join(name), data).unwrap();
        }

        fn path(&self, sub: &str) -> PathBuf {
            self.dir.path().join(sub)
        }

        fn kernel(&self) -> Kernel {
            Kernel {
                sys_block: self.path("sys"),
                dev: self.path("dev"),
                mountinfo: self.path("mountinfo"),
                candidate: Box::new(|name| name.starts_with("vd")),
                flush: |_| Ok(()),
            }
        }

        fn mount(&self, ws: &WorkspaceMount, wait: Duration) -> Result<(), String> {
            mount_with(&self.path("root"), ws, &self.kernel(), wait)
        }
    }

    fn three_disks() -> Fake {
        Fake::new(&[
            ("vda", Some(superblock::fake("base", [1; 16])), 1 << 30),
            ("vdb", Some(superblock::fake("", [2; 16])), 1 << 30),
            ("vdc", Some(superblock::fake("work", [3; 16])), 1 << 30),
            // The placeholder, and a disk that is not virtio's with the
            // same UUID as the workspace.
            ("vdd", None, 1 << 20),
            ("sda", Some(superblock::fake("", UUID_BYTES)), 1 << 30),
        ])
    }

    #[test]
    fn the_disk_is_the_one_vd_disk_with_the_uuid() {
        let fake = three_disks();
        assert_eq!(find(&fake.kernel(), UUID).unwrap(), None);
        fake.set("vdd", Some(superblock::fake("", UUID_BYTES)), 1 << 30, 3);
        assert_eq!(find(&fake.kernel(), UUID).unwrap().as_deref(), Some("vdd"));
        fake.set("vde", Some(superblock::fake("", UUID_BYTES)), 1 << 30, 4);
        let e = find(&fake.kernel(), UUID).unwrap_err();
        assert_eq!(
            e,
            format!("2 disks hold the workspace filesystem UUID {UUID}: vdd, vde")
        );
    }

    #[test]
    fn a_cache_that_cannot_be_dropped_is_an_error() {
        let fake = three_disks();
        let mut kernel = fake.kernel();
        kernel.flush = |_| Err(io::Error::from_raw_os_error(libc::EPERM));
        let e = find(&kernel, UUID).unwrap_err();
        assert!(
            e.starts_with("dropping the cached blocks of ") && e.contains("vda (BLKFLSBUF)"),
            "{e}"
        );
    }

    #[test]
    fn no_disk_with_the_uuid_is_waited_for_then_refused_with_the_disks() {
        let fake = three_disks();
        let started = Instant::now();
        let e = fake
            .mount(
                &ws(UUID, "/root/banger", 1 << 30),
                Duration::from_millis(150),
            )
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            e,
            format!(
                "no disk holds the workspace filesystem UUID {UUID} after 150ms (disks: vda \
                 1073741824 bytes, vdb 1073741824 bytes, vdc 1073741824 bytes, vdd 1048576 bytes)"
            )
        );
        assert!(!fake.path("root/root/banger").exists());
    }

    #[test]
    fn a_disk_that_appears_while_waited_for_is_found() {
        let fake = three_disks();
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                fake.set("vdd", Some(superblock::fake("", UUID_BYTES)), 1 << 30, 3);
            });
            // Found, sized, and then (a fake mountinfo that already has it)
            // already mounted.
            fs::write(
                fake.path("mountinfo"),
                format!(
                    "30 22 254:48 / {} rw - ext4 /dev/vdd rw\n",
                    fake.path("root/root/banger").display()
                ),
            )
            .unwrap();
            fake.mount(&ws(UUID, "/root/banger", 1 << 30), Duration::from_secs(5))
                .unwrap();
        });
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn a_disk_smaller_than_the_host_made_it_is_refused_after_the_wait() {
        let fake = three_disks();
        fake.set("vdd", Some(superblock::fake("", UUID_BYTES)), 1 << 20, 3);
        let e = fake
            .mount(
                &ws(UUID, "/root/banger", 1 << 30),
                Duration::from_millis(100),
            )
            .unwrap_err();
        assert!(
            e.starts_with(&format!(
                "the workspace disk {}: it is 1048576 bytes after",
                fake.path("dev/vdd").display()
            )) && e.contains("not 1073741824"),
            "{e}"
        );
    }

    #[test]
    fn the_folder_is_made_once_and_a_mount_of_that_disk_there_is_success() {
        let fake = three_disks();
        fake.set("vdd", Some(superblock::fake("", UUID_BYTES)), 1 << 30, 3);
        let target = fake.path("root/root/banger");
        let line = |numbers: &str| {
            format!(
                "23 22 254:32 / {} rw - ext4 /dev/vdc rw\n30 23 {numbers} / {} rw - ext4 /dev/vdd rw\n",
                fake.path("root/root").display(),
                target.display()
            )
        };
        fs::write(fake.path("mountinfo"), line("254:48")).unwrap();
        let req = ws(UUID, "/root/banger", 1 << 30);
        fake.mount(&req, Duration::ZERO).unwrap();
        let meta = fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o777, DIR_MODE & !umask());
        // Again: nothing changes.
        fake.mount(&req, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_link_or_a_file_where_the_folder_goes_is_refused() {
        let fake = three_disks();
        fake.set("vdd", Some(superblock::fake("", UUID_BYTES)), 1 << 30, 3);
        let target = fake.path("root/root/banger");
        let elsewhere = fake.path("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &target).unwrap();
        let req = ws(UUID, "/root/banger", 1 << 30);
        let e = fake.mount(&req, Duration::ZERO).unwrap_err();
        assert!(e.ends_with("banger is a symbolic link: the workspace is mounted only on a real directory (move the link away)"), "{e}");
        // A dangling link too.
        fs::remove_dir(&elsewhere).unwrap();
        let e = fake.mount(&req, Duration::ZERO).unwrap_err();
        assert!(e.contains("is a symbolic link"), "{e}");
        fs::remove_file(&target).unwrap();
        fs::write(&target, "").unwrap();
        let e = fake.mount(&req, Duration::ZERO).unwrap_err();
        assert!(e.contains("banger is there and is not a directory"), "{e}");
        // No /root at all.
        fs::remove_file(&target).unwrap();
        fs::remove_dir(fake.path("root/root")).unwrap();
        let e = fake.mount(&req, Duration::ZERO).unwrap_err();
        assert!(e.starts_with("creating "), "{e}");
    }

    fn umask() -> u32 {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        DirBuilder::new().mode(0o777).create(&probe).unwrap();
        0o777 & !fs::metadata(&probe).unwrap().permissions().mode()
    }
}
