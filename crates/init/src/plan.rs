//! The root filesystem banger-init assembles, as data: which device goes
//! where, with which options. Pure, so the layout is tested without a
//! kernel; `boot` carries it out.
//!
//!   base disk   (ext4, read-only)  → /run/banger/base     lower layer
//!   system disk (ext4, read-write) → /run/banger/system   upper + work dirs
//!   overlay(base, system/overlay/upper)  → /newroot        the guest's /
//!   work disk   (ext4, read-write) → /newroot/root        the guest's /root
//!   workspace   (ext4, read-write) → /newroot/root/NAME   when the host gives one
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
    /// The target is in the guest's own data (on the work disk): made
    /// (0755) only if absent, and a symlink or anything but a directory
    /// there is refused, never followed (`banger_agent::workspace::open_real_dir`).
    pub guarded_target: bool,
}

/// The mounts that build the new root, in order: `workspace` is the
/// workspace disk and its folder's name under `/root`.
pub fn root_mounts(
    base: &Path,
    system: &Path,
    work: Option<&Path>,
    workspace: Option<(&Path, &str)>,
) -> Vec<Mount> {
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
            guarded_target: false,
        },
        Mount {
            role: "system disk",
            source: system.to_owned(),
            target: SYSTEM_MOUNT.into(),
            fstype: "ext4",
            read_only: false,
            options: None,
            then_create: vec![(upper.clone(), 0o755), (workdir.clone(), 0o700)],
            guarded_target: false,
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
            guarded_target: false,
        },
    ];
    let root = Path::new(NEW_ROOT).join("root");
    if work.is_some() || workspace.is_some() {
        mounts
            .last_mut()
            .expect("the overlay is planned")
            .then_create = vec![(root.clone(), 0o700)];
    }
    if let Some(work) = work {
        mounts.push(Mount {
            role: "work disk",
            source: work.to_owned(),
            target: root.clone(),
            fstype: "ext4",
            read_only: false,
            options: None,
            then_create: vec![],
            guarded_target: false,
        });
    }
    if let Some((device, name)) = workspace {
        // The work disk's flags (none), on a folder of the work disk.
        mounts.push(Mount {
            role: "workspace disk",
            source: device.to_owned(),
            target: root.join(name),
            fstype: "ext4",
            read_only: false,
            options: None,
            then_create: vec![],
            guarded_target: true,
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
            None,
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
        assert!(mounts.iter().all(|m| !m.guarded_target));
    }

    #[test]
    fn without_a_work_disk_root_stays_in_the_overlay() {
        let mounts = root_mounts(Path::new("/dev/vda"), Path::new("/dev/vdb"), None, None);
        assert_eq!(mounts.len(), 3);
        assert!(mounts[2].then_create.is_empty());
    }

    #[test]
    fn the_workspace_goes_on_its_folder_after_root() {
        let mounts = root_mounts(
            Path::new("/dev/vda"),
            Path::new("/dev/vdb"),
            Some(Path::new("/dev/vdc")),
            Some((Path::new("/dev/vdd"), "repo")),
        );
        let roles: Vec<_> = mounts.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                "base rootfs",
                "system disk",
                "overlay root",
                "work disk",
                "workspace disk"
            ]
        );
        let ws = &mounts[4];
        assert_eq!(ws.source, PathBuf::from("/dev/vdd"));
        assert_eq!(ws.target, PathBuf::from("/newroot/root/repo"));
        // As the work disk is mounted, on a folder that is the guest's.
        assert_eq!(
            (ws.fstype, ws.read_only, &ws.options),
            (mounts[3].fstype, mounts[3].read_only, &mounts[3].options)
        );
        assert!(ws.guarded_target && ws.then_create.is_empty());
        assert!(mounts[..4].iter().all(|m| !m.guarded_target));

        // Without a work disk, on /root in the overlay (made first).
        let mounts = root_mounts(
            Path::new("/dev/vda"),
            Path::new("/dev/vdb"),
            None,
            Some((Path::new("/dev/vdd"), "repo")),
        );
        let roles: Vec<_> = mounts.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                "base rootfs",
                "system disk",
                "overlay root",
                "workspace disk"
            ]
        );
        assert_eq!(
            mounts[2].then_create,
            [(PathBuf::from("/newroot/root"), 0o700)]
        );
        assert_eq!(mounts[3].target, PathBuf::from("/newroot/root/repo"));
    }
}
