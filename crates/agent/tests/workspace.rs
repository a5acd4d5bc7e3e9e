//! The identity's `workspace` part against this machine's kernel, as
//! root: a loop device stands for the resumed guest's 4th virtio disk.
//! It is attached while it holds a small empty placeholder, read and
//! held open (so the kernel keeps the placeholder's blocks cached: a
//! block device's cache is dropped at its last close, but something in
//! the guest may hold it), then the host's workspace filesystem is written into the
//! file behind it and, a little later, the loop device is told its new
//! size (`losetup -c`, as virtio-blk's configuration change tells a
//! guest). The agent must see through the stale cache, wait for the
//! size, and mount the filesystem at `/root/<name>` under a temporary
//! root.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use banger_agent::{superblock, workspace};
use banger_agent_proto::WorkspaceMount;

const UUID: &str = "5f1c2e3a-0b4d-4c6e-8f90-a1b2c3d4e5f6";
const PLACEHOLDER: u64 = 1 << 20;
const WORKSPACE: u64 = 16 << 20;

/// The loop device and what is mounted from it; undone on drop.
struct Disk {
    dir: tempfile::TempDir,
    device: String,
    /// Keeps the device open, and so its cache.
    _held: fs::File,
    mounted: Option<PathBuf>,
}

impl Disk {
    fn name(&self) -> &str {
        self.device.trim_start_matches("/dev/")
    }

    fn backing(&self) -> PathBuf {
        self.dir.path().join("placeholder")
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Some(at) = &self.mounted {
            let _ = Command::new("umount").arg(at).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// The placeholder on a loop device, read once; None (skipped) where
/// that cannot be had.
fn placeholder() -> Option<Disk> {
    if !banger_testkit::running_as_root() {
        banger_testkit::skip("mounting a workspace disk needs root (loop devices, mount)");
        return None;
    }
    if !banger_testkit::have_tools(&["mkfs.ext4", "losetup", "umount"]) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("placeholder");
    fs::File::create(&backing)
        .unwrap()
        .set_len(PLACEHOLDER)
        .unwrap();
    let attach = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    if !attach.status.success() {
        banger_testkit::skip(format!(
            "no loop device here: {}",
            String::from_utf8_lossy(&attach.stderr).trim()
        ));
        return None;
    }
    let device = String::from_utf8(attach.stdout).unwrap().trim().to_owned();
    let disk = Disk {
        _held: fs::File::open(&device).unwrap(),
        device,
        dir,
        mounted: None,
    };
    assert_eq!(superblock_uuid(&disk.device), None);
    Some(disk)
}

/// The UUID the kernel's view of `device` shows now (its cache, if any).
fn superblock_uuid(device: &str) -> Option<String> {
    let mut file = fs::File::open(device).unwrap();
    let mut sb = vec![0u8; superblock::SIZE];
    file.seek(SeekFrom::Start(superblock::OFFSET)).unwrap();
    file.read_exact(&mut sb).unwrap();
    superblock::identity(&sb).map(|id| id.uuid)
}

/// What the host does: `mkfs.ext4 -d` of a tree, written into the file
/// behind the disk (the same file: the loop device holds it open).
fn host_fills(disk: &Disk) {
    let tree = disk.dir.path().join("tree");
    fs::create_dir_all(tree.join("src")).unwrap();
    fs::write(tree.join("src/main.rs"), "fn main() {}\n").unwrap();
    let image = disk.dir.path().join("workspace.ext4");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", UUID, "-d"])
        .arg(&tree)
        .arg(&image)
        .arg(format!("{}k", WORKSPACE >> 10))
        .output()
        .unwrap();
    assert!(mkfs.status.success(), "{mkfs:?}");
    fs::copy(&image, disk.backing()).unwrap();
}

fn mount_point_entries(at: &Path) -> Vec<String> {
    let needle = format!(" {} ", at.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_swapped_disk_is_found_through_the_stale_cache_waited_for_and_mounted() {
    let Some(mut disk) = placeholder() else {
        return;
    };
    host_fills(&disk);
    // The kernel still shows the placeholder: what the agent must see
    // through (without this the test would prove nothing).
    assert_eq!(superblock_uuid(&disk.device), None);

    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("root")).unwrap();
    let target = root.path().join("root/repo");
    let req = WorkspaceMount {
        uuid: UUID.into(),
        dir: "/root/repo".into(),
        bytes: WORKSPACE,
    };
    let late_resize = {
        let device = disk.device.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            let status = Command::new("losetup")
                .args(["-c", &device])
                .status()
                .unwrap();
            assert!(status.success(), "losetup -c");
        })
    };
    let started = Instant::now();
    let mounted =
        workspace::mount_among(root.path(), &req, &[disk.name()], Duration::from_secs(10));
    let took = started.elapsed();
    late_resize.join().unwrap();
    if mounted.is_ok() {
        disk.mounted = Some(target.clone());
    }
    mounted.unwrap();
    println!("mounted in {took:?}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert_eq!(
        fs::read_to_string(target.join("src/main.rs")).unwrap(),
        "fn main() {}\n"
    );
    let entries = mount_point_entries(&target);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].contains(" - ext4 "), "{entries:?}");

    // Again: already mounted there, nothing stacked.
    workspace::mount_among(root.path(), &req, &[disk.name()], Duration::ZERO).unwrap();
    assert_eq!(mount_point_entries(&target).len(), 1);

    // Another UUID on no disk: refused after the wait, naming the disks.
    let other = WorkspaceMount {
        uuid: "00000000-0000-4000-8000-000000000000".into(),
        ..req
    };
    let err = workspace::mount_among(
        root.path(),
        &other,
        &[disk.name()],
        Duration::from_millis(100),
    )
    .unwrap_err();
    assert!(
        err.starts_with("no disk holds the workspace filesystem UUID 00000000-")
            && err.contains(&format!("{} {WORKSPACE} bytes", disk.name())),
        "{err}"
    );
}
