//! The root filesystem banger-init assembles, as data: which device goes
//! where, with which options. Pure, so the layout is tested without a
//! kernel; `boot` carries it out.
//!
//!   base disk   (ext4, read-only)  → /run/banger/base     lower layer
//!   system disk (ext4, read-write) → /run/banger/system   upper + work dirs
//!   overlay(base, system/overlay/upper)  → /newroot        the guest's /
//!   work disk   (ext4, read-write) → /newroot/root        the guest's /root
//!   system/docker (bind)           → /newroot/var/lib/docker  when the image has it

use std::path::{Path, PathBuf};

pub const BASE_MOUNT: &str = "/run/banger/base";
pub const SYSTEM_MOUNT: &str = "/run/banger/system";
pub const NEW_ROOT: &str = "/newroot";
/// On the system disk: the overlay's upper and work directories.
pub const OVERLAY_UPPER: &str = "overlay/upper";
pub const OVERLAY_WORK: &str = "overlay/work";
/// On the system disk: files the host wants in the guest's root.
pub const PER_VM_FILES: &str = "banger/files";
/// On the system disk: banger's guest tools for minimal mode, mounted
/// (not copied) read-only at [`TOOLS_TARGET`] in the guest.
pub const GUEST_TOOLS: &str = "banger/tools";
pub const TOOLS_TARGET: &str = ".banger";
/// On the system disk: docker's data, bind-mounted at
/// [`DOCKER_DATA_TARGET`] in images that have that directory (overlay2
/// needs a real filesystem under it, not the overlay root).
pub const DOCKER_DATA: &str = "docker";
pub const DOCKER_DATA_TARGET: &str = "var/lib/docker";

/// One mount of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What it is, for error messages ("base rootfs").
    pub role: &'static str,
    pub source: PathBuf,
    pub target: PathBuf,
    pub fstype: &'static str,
    pub read_only: bool,
    pub options: Option<String>,
    /// Directories (absolute) to create after this mount, with their mode.
    pub then_create: Vec<(PathBuf, u32)>,
}

/// The mounts that build the new root, in order.
pub fn root_mounts(base: &Path, system: &Path, work: Option<&Path>) -> Vec<Mount> {
    let system_dir = Path::new(SYSTEM_MOUNT);
    let upper = system_dir.join(OVERLAY_UPPER);
    let workdir = system_dir.join(OVERLAY_WORK);
    let mut mounts = vec![
        Mount {
            role: "base rootfs",
            source: base.to_owned(),
            target: BASE_MOUNT.into(),
            fstype: "ext4",
            read_only: true,
            options: None,
            then_create: vec![],
        },
        Mount {
            role: "system disk",
            source: system.to_owned(),
            target: SYSTEM_MOUNT.into(),
            fstype: "ext4",
            read_only: false,
            options: None,
            then_create: vec![(upper.clone(), 0o755), (workdir.clone(), 0o700)],
        },
        Mount {
            role: "overlay root",
            source: "overlay".into(),
            target: NEW_ROOT.into(),
            fstype: "overlay",
            read_only: false,
            options: Some(format!(
                "lowerdir={BASE_MOUNT},upperdir={},workdir={}",
                upper.display(),
                workdir.display()
            )),
            then_create: vec![],
        },
    ];
    if let Some(work) = work {
        mounts
            .last_mut()
            .expect("the overlay is planned")
            .then_create = vec![(Path::new(NEW_ROOT).join("root"), 0o700)];
        mounts.push(Mount {
            role: "work disk",
            source: work.to_owned(),
            target: Path::new(NEW_ROOT).join("root"),
            fstype: "ext4",
            read_only: false,
            options: None,
            then_create: vec![],
        });
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_on_the_system_disk_and_work_at_root() {
        let mounts = root_mounts(
            Path::new("/dev/vda"),
            Path::new("/dev/vdb"),
            Some(Path::new("/dev/vdc")),
        );
        let roles: Vec<_> = mounts.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            ["base rootfs", "system disk", "overlay root", "work disk"]
        );
        assert!(mounts[0].read_only && !mounts[1].read_only);
        assert_eq!(
            mounts[2].options.as_deref(),
            Some(
                "lowerdir=/run/banger/base,upperdir=/run/banger/system/overlay/upper,workdir=/run/banger/system/overlay/work"
            )
        );
        // The upper and work dirs exist before the overlay is mounted, and
        // /root before the work disk goes there.
        assert_eq!(
            mounts[1].then_create,
            [
                (PathBuf::from("/run/banger/system/overlay/upper"), 0o755),
                (PathBuf::from("/run/banger/system/overlay/work"), 0o700),
            ]
        );
        assert_eq!(
            mounts[2].then_create,
            [(PathBuf::from("/newroot/root"), 0o700)]
        );
        assert_eq!(mounts[3].target, PathBuf::from("/newroot/root"));
    }

    #[test]
    fn without_a_work_disk_root_stays_in_the_overlay() {
        let mounts = root_mounts(Path::new("/dev/vda"), Path::new("/dev/vdb"), None);
        assert_eq!(mounts.len(), 3);
        assert!(mounts[2].then_create.is_empty());
    }
}
