//! The boot sequence of banger-init as PID 1 (docs/guest-init.md): early
//! mounts, command line, modules, disks, the overlay root, per-VM files,
//! network, then `switch_root` to the image's init (or, for minimal
//! images, banger-init stays PID 1: `minimal`).

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{chdir, chroot, execv, sethostname};

use crate::cmdline::{self, BootParams};
use crate::failure::{Context, Failure};
use crate::plan::{self, NEW_ROOT};
use crate::{agent, devices, files, minimal, modules, network};

pub fn run() -> Result<Infallible, Failure> {
    let started = Instant::now();
    mount_early()?;
    let uptime = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let text =
        fs::read_to_string("/proc/cmdline").context(|| "reading the kernel command line".into())?;
    let params = cmdline::parse(&text).map_err(|e| Failure::new("kernel command line", e))?;

    let mut timings = Vec::new();
    let mut phase = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<String>| {
        timings.push(format!("{name} {} ms", phase.elapsed().as_millis()));
        phase = Instant::now();
    };

    let loaded = modules::load_all()?;
    lap(&format!("{loaded} modules"), &mut timings);

    // A fourth disk the command line does not name (the host's empty
    // placeholder for a workspace) is never looked for, nor mounted.
    let mut wanted = vec![("base", &params.base), ("system", &params.system)];
    if let Some(work) = &params.work {
        wanted.push(("work", work));
    }
    if let Some(workspace) = &params.workspace {
        wanted.push(("workspace", &workspace.device));
    }
    let disks = devices::wait_for(&wanted, params.timeout)?;
    lap("disks", &mut timings);

    mount_root(&params, &disks)?;
    let copied = files::copy_tree(
        &Path::new(plan::SYSTEM_MOUNT).join(plan::PER_VM_FILES),
        Path::new(NEW_ROOT),
        Some((0, 0)),
    )?;
    if params.minimal {
        mount_guest_tools()?;
    }
    let docker = mount_docker_data()?;
    lap("root", &mut timings);

    configure_identity(&params)?;
    lap("network", &mut timings);
    agent::install(!params.minimal)?;
    lap("agent", &mut timings);
    if let Some(host) = params.clock {
        timings.push(crate::clock::step(host));
    }

    println!(
        "banger-init ready in {} ms at uptime {uptime} s ({}; {} per-VM files{}); starting {}",
        started.elapsed().as_millis(),
        timings.join(", "),
        copied.files,
        if docker {
            "; docker data on the system disk"
        } else {
            ""
        },
        if params.minimal {
            "banger's minimal init"
        } else {
            &params.init
        }
    );
    enter_new_root()?;
    if params.minimal {
        return minimal::run(
            params
                .workspace
                .as_ref()
                .map(|w| Path::new("/root").join(&w.dir)),
        );
    }
    exec_init(&params.init)
}

/// /proc, /sys and /dev (devtmpfs) in the initramfs.
fn mount_early() -> Result<(), Failure> {
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    // /dev keeps exec, as systemd mounts it.
    for (fstype, target, flags) in [
        ("proc", "/proc", quiet),
        ("sysfs", "/sys", quiet),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID),
    ] {
        mount_kernel_fs(fstype, target, flags, None)?;
    }
    Ok(())
}

/// Mounts a kernel filesystem (proc, tmpfs, …) on `target`, made first;
/// one already there (EBUSY) is fine.
pub(crate) fn mount_kernel_fs(
    fstype: &str,
    target: &str,
    flags: MsFlags,
    options: Option<&str>,
) -> Result<(), Failure> {
    mkdir(Path::new(target), 0o755)?;
    match mount(Some(fstype), target, Some(fstype), flags, options) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(e) => Err(Failure::new(
            format!("mounting {fstype} on {target}"),
            e.desc(),
        )),
    }
}

/// `disks` as `devices::wait_for` found them, one for each it was asked
/// for: base, system, then the work disk and the workspace disk when the
/// command line names them.
fn mount_root(params: &BootParams, disks: &[PathBuf]) -> Result<(), Failure> {
    let work = params.work.as_ref().map(|_| disks[2].as_path());
    let workspace = params
        .workspace
        .as_ref()
        .zip(disks.last())
        .map(|(w, device)| (device.as_path(), w.dir.as_str()));
    for m in plan::root_mounts(&disks[0], &disks[1], work, workspace) {
        // A folder of the guest's is opened without following a link and
        // mounted on through that descriptor.
        let guarded = if m.guarded_target {
            let dir = banger_agent::workspace::open_real_dir(
                &m.target,
                banger_agent::workspace::DIR_MODE,
            )
            .map_err(|e| Failure::new(format!("preparing the {}'s mount point", m.role), e))?;
            Some(dir)
        } else {
            mkdir(&m.target, 0o755)?;
            None
        };
        let target = guarded
            .as_ref()
            .map_or_else(|| m.target.clone(), banger_agent::workspace::fd_path);
        let mut flags = MsFlags::empty();
        if m.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(
            Some(m.source.as_path()),
            target.as_path(),
            Some(m.fstype),
            flags,
            m.options.as_deref(),
        )
        .map_err(|e| {
            Failure::new(
                format!(
                    "mounting the {} {} on {}",
                    m.role,
                    m.source.display(),
                    m.target.display()
                ),
                mount_hint(e, m.fstype),
            )
        })?;
        for (dir, mode) in &m.then_create {
            mkdir(dir, *mode)?;
        }
    }
    Ok(())
}

/// Minimal mode: the host's tools on the system disk, bind-mounted
/// read-only at `/.banger` (a mount, so 11 MB are not copied at every
/// boot).
fn mount_guest_tools() -> Result<(), Failure> {
    let source = Path::new(plan::SYSTEM_MOUNT).join(plan::GUEST_TOOLS);
    let target = Path::new(NEW_ROOT).join(plan::TOOLS_TARGET);
    if !source.is_dir() {
        return Err(Failure::new(
            "starting minimal mode",
            format!(
                "the system disk has no {}: the host did not add banger's guest tools",
                plan::GUEST_TOOLS
            ),
        ));
    }
    if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
        return Err(Failure::new(
            "starting minimal mode",
            "the image has a /.banger that is not a directory",
        ));
    }
    mkdir(&target, 0o755)?;
    bind_mount(&source, &target, MsFlags::MS_RDONLY, "banger's guest tools")
}

/// Bind-mounts `source` on `target`, then remounts the bind with `flags`
/// (a bind mount takes flags only when remounted); `what` names it in the
/// failure line.
pub(crate) fn bind_mount(
    source: &Path,
    target: &Path,
    flags: MsFlags,
    what: &str,
) -> Result<(), Failure> {
    let failed = |e: nix::errno::Errno| {
        Failure::new(format!("mounting {what} on {}", target.display()), e.desc())
    };
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(failed)?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None::<&str>,
    )
    .map_err(failed)
}

/// Docker's data directory on ext4: overlay2 (docker's storage driver)
/// cannot put its overlays on the overlayfs root, so in an image that has
/// a `/var/lib/docker` directory, the system disk's `docker/` (made here,
/// kept across boots like the overlay's upper layer) is bind-mounted
/// there. Nothing is done for an image without that directory, or where
/// a component of the path is not a directory (a symlink is not
/// followed). Returns whether it was mounted.
fn mount_docker_data() -> Result<bool, Failure> {
    let mut target = Path::new(NEW_ROOT).to_path_buf();
    for part in plan::DOCKER_DATA_TARGET.split('/') {
        target.push(part);
        if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Ok(false);
        }
    }
    let source = Path::new(plan::SYSTEM_MOUNT).join(plan::DOCKER_DATA);
    mkdir(&source, 0o710)?;
    mount(
        Some(source.as_path()),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Failure::new(
            format!(
                "mounting the system disk's docker data on {}",
                target.display()
            ),
            e.desc(),
        )
    })?;
    Ok(true)
}

fn mount_hint(e: Errno, fstype: &str) -> String {
    match e {
        Errno::ENODEV => format!(
            "{} (the kernel has no {fstype} support: module missing from the initramfs?)",
            e.desc()
        ),
        Errno::EINVAL if fstype == "ext4" => format!("{} (not an ext4 filesystem?)", e.desc()),
        _ => e.desc().to_owned(),
    }
}

pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<(), Failure> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .context(|| format!("creating {}", path.display()))
}

/// Network, resolver, hostname.
fn configure_identity(params: &BootParams) -> Result<(), Failure> {
    if let Some(net) = &params.network {
        network::configure(net, params.timeout)?;
    }
    let etc = Path::new(NEW_ROOT).join("etc");
    if !params.dns.is_empty() {
        files::replace_file(&etc.join("resolv.conf"), &network::resolv_conf(&params.dns))?;
    }
    if let Some(name) = &params.hostname {
        sethostname(name).map_err(|e| Failure::new("setting the hostname", e.desc()))?;
        files::replace_file(&etc.join("hostname"), &format!("{name}\n"))?;
        let hosts = etc.join("hosts");
        let existing = fs::read_to_string(&hosts).unwrap_or_default();
        files::replace_file(&hosts, &banger_agent::etc::hosts_with(&existing, name))?;
    }
    Ok(())
}

/// Makes /newroot the root: the kernel filesystems move along, the new
/// root is moved over `/` and chrooted into (the initramfs is left in
/// memory; it is a few megabytes).
fn enter_new_root() -> Result<(), Failure> {
    for fs in ["/dev", "/proc", "/sys"] {
        let target = Path::new(NEW_ROOT).join(&fs[1..]);
        // Images from registries often leave these out; the overlay is
        // writable, and nothing works without /dev.
        if fs::symlink_metadata(&target).is_err() {
            mkdir(&target, 0o755)?;
        }
        if target.is_dir() {
            mount(
                Some(fs),
                &target,
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            )
            .map_err(|e| Failure::new(format!("moving {fs} into the new root"), e.desc()))?;
        } else {
            let _ = umount2(fs, MntFlags::MNT_DETACH);
        }
    }
    let what = || "switching to the new root".to_owned();
    chdir(NEW_ROOT).map_err(|e| Failure::new(what(), e.desc()))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| Failure::new(what(), e.desc()))?;
    chroot(".").map_err(|e| Failure::new(what(), e.desc()))?;
    chdir("/").map_err(|e| Failure::new(what(), e.desc()))
}

/// Hands PID 1 to the image's init.
fn exec_init(init: &str) -> Result<Infallible, Failure> {
    let starting = || format!("starting {init}");
    if let Err(e) = fs::metadata(init) {
        return Err(Failure::new(starting(), format!("{e} in the image")));
    }
    let path = CString::new(init).map_err(|e| Failure::new(starting(), e))?;
    execv(&path, &[&path]).map_err(|e| Failure::new(starting(), e.desc()))
}
