//! Finding the disks the command line names: by kernel name, or by the
//! ext4 label or UUID in their superblock, waiting (bounded) for the
//! virtio devices to be probed.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use banger_agent::superblock;

use crate::cmdline::DeviceRef;
use crate::failure::Failure;

const POLL: Duration = Duration::from_millis(10);

/// Block devices the kernel has, by name (`vda`, `vdb`, …), skipping
/// loop and ram devices.
fn block_devices(sys_block: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_identity(dev: &Path) -> Option<superblock::Identity> {
    let sb = superblock::read(&mut File::open(dev).ok()?).ok()?;
    superblock::identity(&sb)
}

/// Tries to find `device` now: `Ok(None)` if it is not there (yet).
fn find(device: &DeviceRef, sys_block: &Path, dev: &Path) -> Result<Option<PathBuf>, String> {
    match device {
        DeviceRef::Path(path) => {
            let name = path.file_name().unwrap_or_default();
            let present = sys_block.join(name).exists() && path.exists();
            Ok(present.then(|| path.clone()))
        }
        DeviceRef::Label(_) | DeviceRef::Uuid(_) => {
            let mut found = Vec::new();
            for name in block_devices(sys_block) {
                let node = dev.join(&name);
                let Some(id) = read_identity(&node) else {
                    continue;
                };
                let matches = match device {
                    DeviceRef::Label(l) => *l == id.label,
                    DeviceRef::Uuid(u) => *u == id.uuid,
                    DeviceRef::Path(_) => false,
                };
                if matches {
                    found.push(node);
                }
            }
            match found.len() {
                0 => Ok(None),
                1 => Ok(found.pop()),
                _ => Err(format!(
                    "{} disks carry {device}: {}",
                    found.len(),
                    found
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

/// Waits until every device in `wanted` is present, or `timeout` passes.
pub fn wait_for(wanted: &[(&str, &DeviceRef)], timeout: Duration) -> Result<Vec<PathBuf>, Failure> {
    wait_for_in(
        wanted,
        timeout,
        Path::new("/sys/class/block"),
        Path::new("/dev"),
    )
}

fn wait_for_in(
    wanted: &[(&str, &DeviceRef)],
    timeout: Duration,
    sys_block: &Path,
    dev: &Path,
) -> Result<Vec<PathBuf>, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut found = Vec::with_capacity(wanted.len());
        let mut missing = None;
        for (role, device) in wanted {
            match find(device, sys_block, dev) {
                Ok(Some(path)) => found.push(path),
                Ok(None) => {
                    missing.get_or_insert((*role, *device));
                }
                Err(why) => return Err(Failure::new(format!("finding the {role} disk"), why)),
            }
        }
        let Some((role, device)) = missing else {
            return Ok(found);
        };
        if Instant::now() >= deadline {
            let present = block_devices(sys_block);
            return Err(Failure::new(
                format!("waiting for the {role} disk {device}"),
                format!(
                    "not there after {:.1}s (block devices: {})",
                    timeout.as_secs_f64(),
                    if present.is_empty() {
                        "none".into()
                    } else {
                        present.join(" ")
                    }
                ),
            ));
        }
        sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(label: &str, uuid: [u8; 16]) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&superblock::MAGIC.to_le_bytes());
        sb[0x68..0x78].copy_from_slice(&uuid);
        sb[0x78..0x78 + label.len()].copy_from_slice(label.as_bytes());
        sb
    }

    const UUID: [u8; 16] = [
        0x0f, 0x8f, 0xad, 0x5b, 0xd9, 0xcb, 0x46, 0x9f, 0xa1, 0x65, 0x70, 0x86, 0x77, 0x28, 0x95,
        0x0e,
    ];

    /// A fake /sys/class/block and /dev with image files as "devices".
    fn fake_devices(disks: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sys")).unwrap();
        fs::create_dir_all(dir.path().join("dev")).unwrap();
        fs::create_dir(dir.path().join("sys/loop0")).unwrap();
        for (name, sb) in disks {
            fs::create_dir(dir.path().join("sys").join(name)).unwrap();
            let mut data = vec![0u8; 1024];
            data.extend_from_slice(sb);
            fs::write(dir.path().join("dev").join(name), data).unwrap();
        }
        dir
    }

    #[test]
    fn finds_disks_by_name_label_and_uuid() {
        let dir = fake_devices(&[
            ("vda", superblock("base", [1; 16])),
            ("vdb", superblock("banger-work", UUID)),
        ]);
        let (sys, dev) = (dir.path().join("sys"), dir.path().join("dev"));
        let by_path = DeviceRef::Path(dev.join("vda"));
        let by_label = DeviceRef::Label("banger-work".into());
        let by_uuid = DeviceRef::Uuid("01010101-0101-0101-0101-010101010101".into());
        let found = wait_for_in(
            &[("base", &by_path), ("work", &by_label), ("other", &by_uuid)],
            Duration::from_secs(1),
            &sys,
            &dev,
        )
        .unwrap();
        assert_eq!(found, [dev.join("vda"), dev.join("vdb"), dev.join("vda")]);
    }

    #[test]
    fn gives_up_after_the_timeout_and_lists_what_is_there() {
        let dir = fake_devices(&[("vda", superblock("base", [1; 16]))]);
        let missing = DeviceRef::Label("banger-sys".into());
        let started = Instant::now();
        let err = wait_for_in(
            &[("system", &missing)],
            Duration::from_millis(100),
            &dir.path().join("sys"),
            &dir.path().join("dev"),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            "banger-init: waiting for the system disk LABEL=banger-sys: not there after 0.1s (block devices: vda)"
        );
    }

    #[test]
    fn two_disks_with_one_uuid_are_ambiguous() {
        let dir = fake_devices(&[
            ("vda", superblock("a", UUID)),
            ("vdb", superblock("b", UUID)),
        ]);
        let uuid = DeviceRef::Uuid("0f8fad5b-d9cb-469f-a165-70867728950e".into());
        let err = wait_for_in(
            &[("base", &uuid)],
            Duration::from_secs(1),
            &dir.path().join("sys"),
            &dir.path().join("dev"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("2 disks carry UUID="), "{err}");
    }
}
