//! Putting the guest agent in place before the image's init runs: a tmpfs
//! on the new root's /run (systemd leaves a /run that already is a mount
//! point alone), banger-init's own binary copied there as the agent, and,
//! for a systemd image, the agent's unit and the two readiness marks'
//! units in systemd's runtime unit directory (/run/systemd/system, read
//! at its start like /etc/systemd/system). The image needs nothing of its
//! own, and nothing is written to its disks. The system disk's per-VM
//! files are bind-mounted there too, for the agent alone
//! ([`guest_paths::PER_VM_FILES`]).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use banger_agent_proto::guest_paths;
use nix::mount::{MsFlags, mount};

use crate::boot::{bind_mount, mkdir};
use crate::failure::{Context, Failure};
use crate::plan::{self, NEW_ROOT};

/// systemd's runtime unit directory.
pub const UNIT_DIR: &str = "/run/systemd/system";
/// systemd's own options for /run (src/shared/mount-setup.c).
const RUN_OPTIONS: &str = "mode=0755,size=20%,nr_inodes=800k";

/// A unit file, and the target whose `.wants/` links to it.
pub struct Unit {
    pub name: &'static str,
    pub wanted_by: &'static str,
    pub text: String,
}

/// The agent's unit and the marks' units. No default dependencies, so
/// the targets that want them are not ordered after them (systemd.target
/// adds that only for units with default dependencies), and nothing
/// waits for the agent.
pub fn units() -> Vec<Unit> {
    let binary = guest_paths::BINARY;
    let mark = |stage: &str, target: &str| {
        format!(
            "[Unit]\n\
             Description=banger: {target} reached\n\
             DefaultDependencies=no\n\
             After={target}\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart={binary} mark {stage}\n"
        )
    };
    vec![
        Unit {
            name: "banger-agent.service",
            wanted_by: "sysinit.target",
            text: format!(
                "[Unit]\n\
                 Description=banger guest agent\n\
                 DefaultDependencies=no\n\
                 StartLimitIntervalSec=0\n\
                 \n\
                 [Service]\n\
                 ExecStart={binary} agent\n\
                 Restart=always\n\
                 RestartSec=1\n"
            ),
        },
        // sysinit.target's own wants would order it after the unit:
        // basic.target comes after sysinit.target anyway.
        Unit {
            name: "banger-mark-sysinit.service",
            wanted_by: "basic.target",
            text: mark("sysinit", "sysinit.target"),
        },
        Unit {
            name: "banger-mark-multi-user.service",
            wanted_by: "multi-user.target",
            text: mark("multi-user", "multi-user.target"),
        },
    ]
}

/// `path` (absolute, in the guest) under the new root.
fn in_new_root(path: &str) -> PathBuf {
    Path::new(NEW_ROOT).join(path.trim_start_matches('/'))
}

/// The tmpfs /run, the agent's binary, and with systemd its units.
pub fn install(systemd: bool) -> Result<(), Failure> {
    let run = in_new_root("/run");
    match fs::symlink_metadata(&run) {
        Ok(m) if m.is_dir() => {}
        // A symlink would be followed by the mount below in the
        // initramfs's tree, not the image's: /run must be a directory.
        Ok(_) => {
            fs::remove_file(&run).context(|| format!("replacing {}", run.display()))?;
            mkdir(&run, 0o755)?;
        }
        Err(_) => mkdir(&run, 0o755)?,
    }
    mount(
        Some("tmpfs"),
        &run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(RUN_OPTIONS),
    )
    .map_err(|e| Failure::new(format!("mounting a tmpfs on {}", run.display()), e.desc()))?;

    mkdir(&in_new_root(guest_paths::DIR), 0o700)?;
    let binary = in_new_root(guest_paths::BINARY);
    fs::copy("/proc/self/exe", &binary)
        .context(|| format!("copying banger-init to {}", binary.display()))?;
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))
        .context(|| format!("making {} executable", binary.display()))?;
    bind_per_vm_files()?;

    if systemd {
        write_units(&in_new_root(UNIT_DIR), &units())?;
    }
    Ok(())
}

/// The system disk's per-VM files (`banger/files/`, copied into the root
/// above), bind-mounted read-write at [`guest_paths::PER_VM_FILES`], in
/// the agent's 0700 directory so only root reaches them: a guest resumed
/// from a template gets new host keys from the agent, which writes them
/// there too, so the next cold boot copies those and not the template's.
/// nosuid, nodev, noexec: it holds keys and files, never programs. A
/// system disk without per-VM files has nothing to mount.
fn bind_per_vm_files() -> Result<(), Failure> {
    let source = Path::new(plan::SYSTEM_MOUNT).join(plan::PER_VM_FILES);
    if !fs::symlink_metadata(&source).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let target = in_new_root(guest_paths::PER_VM_FILES);
    mkdir(&target, 0o700)?;
    bind_mount(
        &source,
        &target,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "the per-VM files",
    )
}

fn write_units(dir: &Path, units: &[Unit]) -> Result<(), Failure> {
    mkdir(dir, 0o755)?;
    for unit in units {
        let path = dir.join(unit.name);
        fs::write(&path, &unit.text).context(|| format!("writing {}", path.display()))?;
        let wants = dir.join(format!("{}.wants", unit.wanted_by));
        mkdir(&wants, 0o755)?;
        let link = wants.join(unit.name);
        symlink(Path::new("..").join(unit.name), &link)
            .context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_start_early_and_order_nothing_after_them() {
        let units = units();
        let agent = &units[0];
        assert!(agent.text.contains("DefaultDependencies=no\n"));
        assert!(
            agent
                .text
                .contains("ExecStart=/run/banger-agent/banger-agent agent\n")
        );
        assert!(agent.text.contains("Restart=always\n"));
        assert!(!agent.text.contains("After="), "{}", agent.text);
        assert_eq!(agent.wanted_by, "sysinit.target");
        for unit in &units {
            assert!(
                unit.text.contains("DefaultDependencies=no\n"),
                "{}",
                unit.name
            );
            assert!(!unit.text.contains("Before="), "{}", unit.name);
        }
        assert!(units[1].text.contains("After=sysinit.target\n"));
        assert!(units[1].text.contains("mark sysinit\n"));
        assert!(units[2].text.contains("After=multi-user.target\n"));
        assert_eq!(units[2].wanted_by, "multi-user.target");
    }

    #[test]
    fn the_per_vm_files_are_the_agents_alone() {
        // Under the agent's 0700 directory, in the new root's tmpfs /run.
        let dir = format!("{}/", guest_paths::DIR);
        assert!(guest_paths::PER_VM_FILES.starts_with(&dir));
        assert_eq!(
            in_new_root(guest_paths::PER_VM_FILES),
            Path::new("/newroot/run/banger-agent/files")
        );
    }

    #[test]
    fn units_are_linked_from_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        write_units(dir.path(), &units()).unwrap();
        let link = dir.path().join("sysinit.target.wants/banger-agent.service");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("../banger-agent.service")
        );
        assert!(fs::read_to_string(&link).unwrap().contains("agent\n"));
        assert!(
            dir.path()
                .join("multi-user.target.wants/banger-mark-multi-user.service")
                .exists()
        );
    }
}
