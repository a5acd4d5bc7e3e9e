//! Growing a mounted ext4 filesystem, online, to fill its block device
//! once the host has grown the device under the running guest (a VM
//! resumed from a template gets the template's work disk, and then its
//! own `--disk-size`).
//!
//! No `resize2fs`: minimal images have none, and the agent must not need
//! a tool from the image. For a mounted filesystem resize2fs only asks the
//! kernel anyway: `EXT4_IOC_RESIZE_FS` on a descriptor of the filesystem,
//! with the new block count, which ext4 grows to itself (a count equal to
//! the current one is a no-op, so this is idempotent). The mount is found
//! in `/proc/self/mountinfo` (an exact mount point of an ext4 filesystem,
//! never a path under one), its device's size in
//! `/sys/dev/block/MAJ:MIN/size`: nothing runs through a shell.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use banger_agent_proto::{GrowFilesystem, MAX_FILESYSTEMS, MAX_MOUNT_PATH};
use nix::sys::stat::{fstat, major, minor};
use nix::sys::statfs::{EXT4_SUPER_MAGIC, fstatfs};

/// How long to wait for the guest's kernel to see the device at its new
/// size: the host grows it and answers virtio-blk's configuration change
/// while this request is on its way, and the two race.
pub const DEVICE_WAIT: Duration = Duration::from_secs(5);
/// `_IOW('f', 16, __u64)` from linux/ext4.h.
const EXT4_IOC_RESIZE_FS: libc::Ioctl = 0x4008_6610;
/// The most of /proc/self/mountinfo read (a guest with Docker has a few
/// hundred mounts, ~150 bytes each).
const MAX_MOUNTINFO: u64 = 4 << 20;

/// What a grow did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grown {
    /// The block device's size, in bytes.
    pub device_bytes: u64,
    /// The filesystem's block size.
    pub block_size: u64,
    /// The filesystem's blocks now.
    pub blocks: u64,
}

/// At most [`MAX_FILESYSTEMS`], each mount point absolute and plain
/// (no `.`, `..`, `//` or trailing `/`), at most [`MAX_MOUNT_PATH`] bytes and named once, each size a
/// positive multiple of 512.
pub(crate) fn check(list: &[GrowFilesystem]) -> Result<(), String> {
    if list.len() > MAX_FILESYSTEMS {
        return Err(format!(
            "{} filesystems: at most {MAX_FILESYSTEMS}",
            list.len()
        ));
    }
    for (i, fs) in list.iter().enumerate() {
        let path = Path::new(&fs.mount);
        let plain = path.is_absolute()
            && fs.mount.len() <= MAX_MOUNT_PATH
            && !fs.mount.contains('\0')
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            // Written as the kernel writes it: no `//`, `/./` or trailing
            // `/` (which the components above would hide).
            && path.components().collect::<PathBuf>().as_os_str() == fs.mount.as_str();
        if !plain {
            return Err(format!(
                "{:?} is not a mount point: a plain absolute path (no '.', '..', '//' or \
                 trailing '/'), at most {MAX_MOUNT_PATH} bytes",
                cut(&fs.mount)
            ));
        }
        if list[..i].iter().any(|other| other.mount == fs.mount) {
            return Err(format!("{} comes twice", fs.mount));
        }
        if fs.bytes == 0 || !fs.bytes.is_multiple_of(512) {
            return Err(format!(
                "{}: {} bytes is not a block device's size (a positive multiple of 512)",
                fs.mount, fs.bytes
            ));
        }
    }
    Ok(())
}

/// Grows the ext4 filesystem mounted at `mount` (an exact mount point of
/// this process's mount table) to fill its block device, once the device
/// is `bytes` big: waits up to [`DEVICE_WAIT`] for the kernel to see that.
/// Already that big is success. The error says what failed and why.
pub fn grow(mount: &Path, bytes: u64) -> Result<Grown, String> {
    grow_with(
        mount,
        bytes,
        Path::new("/proc/self/mountinfo"),
        Path::new("/sys/dev/block"),
        DEVICE_WAIT,
    )
}

fn grow_with(
    mount: &Path,
    bytes: u64,
    mountinfo: &Path,
    sys_dev_block: &Path,
    wait: Duration,
) -> Result<Grown, String> {
    let m = mount.display();
    let text = read_bounded(mountinfo, MAX_MOUNTINFO)
        .map_err(|e| format!("reading {}: {e}", mountinfo.display()))?;
    let entry = find_mount(&text, mount)
        .ok_or_else(|| format!("{m} is not a mount point (not in {})", mountinfo.display()))?;
    if entry.fstype != "ext4" {
        return Err(format!(
            "{m} is {}, not ext4: only ext4 is grown",
            entry.fstype
        ));
    }
    let (maj, min) = entry.device;
    // The mount point itself, not a link there: its descriptor must be on
    // the filesystem mountinfo named, and ext4.
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(mount)
        .map_err(|e| format!("opening {m}: {e}"))?;
    let st = fstat(&dir).map_err(|e| format!("inspecting {m}: {e}"))?;
    if (major(st.st_dev), minor(st.st_dev)) != (u64::from(maj), u64::from(min)) {
        return Err(format!(
            "{m} is no longer the filesystem on device {maj}:{min} (it changed meanwhile)"
        ));
    }
    let stats = fstatfs(&dir).map_err(|e| format!("inspecting {m}: {e}"))?;
    if stats.filesystem_type() != EXT4_SUPER_MAGIC {
        return Err(format!("{m} is not an ext4 filesystem"));
    }
    let block_size = u64::try_from(stats.block_size())
        .ok()
        .filter(|b| *b >= 1024 && b.is_power_of_two())
        .ok_or_else(|| format!("{m} has an odd block size {}", stats.block_size()))?;
    let size_file = sys_dev_block.join(format!("{maj}:{min}/size"));
    let device_bytes = wait_for_size(&size_file, bytes, wait).map_err(|e| {
        format!("the block device {maj}:{min} of {m} (growing it to {bytes} bytes): {e}")
    })?;
    let blocks = device_bytes / block_size;
    resize(&dir, blocks).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EPERM) => {
                " (the agent needs CAP_SYS_RESOURCE, and ext4 refuses a filesystem with \
                 errors: see the guest's kernel log)"
            }
            Some(libc::EINVAL) => " (smaller than the filesystem already is?)",
            _ => "",
        };
        format!(
            "the kernel did not grow {m} to {blocks} blocks of {block_size} bytes \
             ({device_bytes} bytes on device {maj}:{min}): {e}{why}"
        )
    })?;
    Ok(Grown {
        device_bytes,
        block_size,
        blocks,
    })
}

/// Polls the device's size (512-byte sectors in sysfs) until it is at
/// least `bytes`; its size then.
pub(crate) fn wait_for_size(size_file: &Path, bytes: u64, wait: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + wait;
    loop {
        let text = read_bounded(size_file, 64)
            .map_err(|e| format!("reading {}: {e}", size_file.display()))?;
        let sectors: u64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{} says {:?}", size_file.display(), cut(text.trim())))?;
        let now = sectors.saturating_mul(512);
        if now >= bytes {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "it is {now} bytes after {wait:?}, not {bytes}: the guest's kernel has not seen \
                 the host grow it"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[allow(unsafe_code)]
fn resize(fs: &File, blocks: u64) -> std::io::Result<()> {
    // SAFETY: EXT4_IOC_RESIZE_FS reads one __u64 (the new block count)
    // from the pointer; `blocks` lives on the stack for the call and the
    // kernel does not keep the pointer. The descriptor is open for the
    // borrow's length.
    let rc = unsafe { libc::ioctl(fs.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks as *const u64) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One line of mountinfo, what this needs of it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) device: (u32, u32),
    pub(crate) mount_point: PathBuf,
    pub(crate) fstype: String,
}

/// The mount on top at `mount` (mountinfo lists mounts in the order they
/// were made, so the last entry for a path is the one seen there).
pub(crate) fn find_mount(mountinfo: &str, mount: &Path) -> Option<MountEntry> {
    mountinfo
        .lines()
        .rev()
        .filter_map(parse_line)
        .find(|e| e.mount_point == mount)
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`:
/// the device (field 3), the mount point (field 5, with `\ooo` escapes)
/// and, after the `-`, the filesystem type (proc(5)).
fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let device = fields.nth(2)?;
    let mount_point = fields.nth(1)?;
    let fstype = fields.skip_while(|f| *f != "-").nth(1)?;
    let (maj, min) = device.split_once(':')?;
    Some(MountEntry {
        device: (maj.parse().ok()?, min.parse().ok()?),
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point)?)),
        fstype: fstype.to_owned(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Option<Vec<u8>> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = bytes.get(i + 1..i + 4)?;
            let text = std::str::from_utf8(octal).ok()?;
            out.push(u8::from_str_radix(text, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let mut text = String::new();
    File::open(path)?.take(max).read_to_string(&mut text)?;
    Ok(text)
}

fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/run/banger/base
23 22 254:32 / /root rw,relatime - ext4 /dev/vdc rw
24 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=4k
25 22 0:24 / /run rw,nosuid,nodev shared:5 master:1 - tmpfs tmpfs rw,mode=755
26 22 7:0 / /mnt/with\\040space rw - ext4 /dev/loop0 rw
27 23 0:30 / /root rw - tmpfs tmpfs rw
28 22 254:48 / /srv rw - xfs /dev/vdd rw
";

    #[test]
    fn finds_the_mount_on_top_by_its_exact_path() {
        let without_27: String = MOUNTINFO
            .lines()
            .filter(|l| !l.starts_with("27 "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            find_mount(&without_27, Path::new("/root")),
            Some(MountEntry {
                device: (254, 32),
                mount_point: "/root".into(),
                fstype: "ext4".into(),
            })
        );
        // A tmpfs mounted over it later hides it.
        assert_eq!(
            find_mount(MOUNTINFO, Path::new("/root")).unwrap().fstype,
            "tmpfs"
        );
        assert_eq!(
            find_mount(MOUNTINFO, Path::new("/mnt/with space"))
                .unwrap()
                .device,
            (7, 0)
        );
        assert_eq!(
            find_mount(MOUNTINFO, Path::new("/run")).unwrap().fstype,
            "tmpfs"
        );
        // Only exact mount points: not a path under one, not a prefix.
        assert_eq!(find_mount(MOUNTINFO, Path::new("/root/sub")), None);
        assert_eq!(find_mount(MOUNTINFO, Path::new("/ro")), None);
        assert_eq!(find_mount("garbage\n1 2\n", Path::new("/")), None);
    }

    #[test]
    fn escapes_are_undone_and_bad_ones_refused() {
        assert_eq!(unescape("/a\\040b\\134c").unwrap(), b"/a b\\c");
        assert_eq!(unescape("/a\\04"), None);
        assert_eq!(unescape("/a\\9zz"), None);
    }

    #[test]
    fn requests_are_bounded() {
        let fs = |mount: &str, bytes: u64| GrowFilesystem {
            mount: mount.into(),
            bytes,
        };
        check(&[fs("/root", 16 << 30), fs("/srv/data", 512)]).unwrap();
        check(&[]).unwrap();
        for bad in [
            vec![fs("root", 1 << 30)],
            vec![fs("/root/../etc", 1 << 30)],
            vec![fs("/root/./x", 1 << 30)],
            vec![fs("/root/", 1 << 30)],
            vec![fs("//root", 1 << 30)],
            vec![fs("/ro\0ot", 1 << 30)],
            vec![fs(&format!("/{}", "a".repeat(MAX_MOUNT_PATH)), 1 << 30)],
            vec![fs("/root", 0)],
            vec![fs("/root", (1 << 30) + 1)],
            vec![fs("/root", 1 << 30), fs("/root", 2 << 30)],
            (0..=MAX_FILESYSTEMS)
                .map(|i| fs(&format!("/m{i}"), 1 << 30))
                .collect(),
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_mount_that_is_not_ext4_or_not_there_is_refused_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("mountinfo");
        std::fs::write(&info, MOUNTINFO).unwrap();
        let grow = |mount: &str| {
            grow_with(Path::new(mount), 1 << 30, &info, dir.path(), Duration::ZERO).unwrap_err()
        };
        assert!(
            grow("/srv").contains("/srv is xfs, not ext4"),
            "{}",
            grow("/srv")
        );
        assert!(grow("/root/sub").contains("not a mount point"));
    }

    #[test]
    fn waits_for_the_device_to_grow_then_gives_up_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let size = dir.path().join("size");
        std::fs::write(&size, "2048\n").unwrap();
        assert_eq!(
            wait_for_size(&size, 1 << 20, Duration::ZERO).unwrap(),
            1 << 20
        );
        let err = wait_for_size(&size, 2 << 20, Duration::from_millis(120)).unwrap_err();
        assert!(
            err.contains("it is 1048576 bytes after 120ms, not 2097152"),
            "{err}"
        );
        // Growing while waited for.
        let writer = {
            let size = size.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::fs::write(&size, "4096\n").unwrap();
            })
        };
        assert_eq!(
            wait_for_size(&size, 2 << 20, Duration::from_secs(5)).unwrap(),
            2 << 20
        );
        writer.join().unwrap();
        std::fs::write(&size, "lots\n").unwrap();
        assert!(wait_for_size(&size, 1, Duration::ZERO).is_err());
    }
}
