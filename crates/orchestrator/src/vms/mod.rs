//! The VM lifecycle: create, start, stop, kill, pause, resume, delete,
//! change, and what reconcile does after a restart. The hypervisor is
//! whatever the orchestrator's `Hypervisors` gives, behind `dyn
//! Hypervisor`: nothing here asks which one it is.
//!
//! Every step records what it is about to make before making it: the VM
//! row (with its lease and disk UUIDs) before its disks, `starting` before
//! the TAP, the hypervisor's handle as soon as the process exists (one
//! spawned but not yet recorded is found by its runtime folder). Teardown
//! reads the store, never memory, so a crash at any point is undone by
//! [`reconcile`]; `Orchestrator::journaled` marks each step, and the tests
//! crash there.

mod agent;
mod boot;
mod console;
mod fork;
mod lease;
mod resume;
mod spec;
pub(crate) mod template;

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_api::{
    AgentInfo, CreateVmRequest, ReadyWait, SetVmRequest, SshInfo, VmStarted, VmStats,
};
use banger_guest::{KnownHosts, SshError, SshTarget};
use banger_model::{ArtifactRole, ImageRecord, Size, VmRecord, VmState, VmWorkspace};
use banger_storage::{SYSTEM_DISK_SIZE, Seed};
use banger_vmm::{DiskSpec, Hypervisor, LaunchSpec, NetSpec, VmHandle};

pub(crate) use self::agent::AgentDoors;
pub(crate) use self::boot::parse_signal;
use self::boot::{GuestParams, Timer, available_memory_mib, check_resources, guest_cmdline};
pub use self::console::stream_console;
pub(crate) use self::console::{cap_console_logs, console_log};
pub(crate) use self::fork::fork;
pub(crate) use self::lease::{Leases, lease};
use self::resume::{ResumedGuest, cold_again, note_boot_path, resume_guest};
use crate::Orchestrator;
use crate::error::{Error, ErrorKind};
use crate::hypervisors::{AgentWait, GuestProbe};
use crate::images::{self, blocking, now};
use crate::progress::Progress;

/// The console's last lines of this boot, for errors.
fn console_tail(handle: &VmHandle) -> String {
    banger_vmm::process::log_tail(&handle.console_log, handle.console_offset, 8).join(" | ")
}
/// Refuses what this host cannot give (`boot::check_resources`).
fn fits_host(d: &Orchestrator, vcpu: u32, memory_mib: u64) -> Result<(), Error> {
    check_resources(vcpu, memory_mib, d.inner.host.cpus, available_memory_mib())
        .map_err(Error::invalid)
}

/// Refuses disks (`need`: at their full size, or what a disk grows by)
/// that the state filesystem could not hold (`banger_storage::check_space`).
async fn fits_disks(d: &Orchestrator, what: &'static str, need: Size) -> Result<(), Error> {
    let dir = d.inner.paths.state_dir.join("vms");
    blocking(move || {
        banger_storage::check_space(&dir, what, need).map_err(|e| match e {
            banger_storage::DiskError::NoSpace { .. } => Error::invalid(e.to_string()),
            e => Error::internal(e.to_string()),
        })
    })
    .await
}

/// What a new VM's disks take at their full size: the system disk, the
/// work disk, and what a workspace disk holds when it is made
/// (`workspace`: its files' bytes). The workspace disk is as large as the
/// work disk, but counting it at that size too would refuse VMs on hosts
/// that run them well today: what a command writes into `/root/NAME`
/// comes out of the same free space as what it writes elsewhere in
/// `/root`, which the work disk's size already counts.
fn disks_at_full_size(work: Size, workspace: u64) -> Size {
    // Its filesystem's metadata: a tenth, as the staging limit allows.
    let ws = workspace.saturating_add(workspace / 9);
    Size::from_bytes(
        SYSTEM_DISK_SIZE
            .bytes()
            .saturating_add(work.bytes())
            .saturating_add(ws),
    )
}

/// How long a graceful stop may take before the hypervisor is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Serializes operations on one VM (start vs stop vs delete), while other
/// VMs proceed.
#[derive(Default)]
pub(crate) struct VmLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while choosing a name and an address.
    pub lease: tokio::sync::Mutex<()>,
}

impl VmLocks {
    fn of(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_string()).or_default().clone()
    }
}

/// Where a VM's files are.
struct VmPaths {
    dir: PathBuf,
    system: PathBuf,
    work: PathBuf,
    /// The workspace disk (`vm run PATH`), or an empty placeholder in its
    /// slot (a VM resumed from a template, whose guest has that slot);
    /// attached as the fourth disk whenever the file exists.
    workspace: PathBuf,
    console: PathBuf,
    host_keys: PathBuf,
    /// Short, for sockets (Unix socket paths are limited to 107 bytes).
    runtime: PathBuf,
}

fn paths(d: &Orchestrator, vm: &VmRecord) -> VmPaths {
    let dir = d.inner.paths.state_dir.join("vms").join(vm.name.as_str());
    VmPaths {
        system: dir.join("system.ext4"),
        work: dir.join("work.ext4"),
        workspace: dir.join("workspace.ext4"),
        console: dir.join("console.log"),
        host_keys: dir.join("ssh"),
        runtime: d.inner.paths.runtime_dir.join(&vm.tap),
        dir,
    }
}

fn known_hosts(d: &Orchestrator) -> KnownHosts {
    KnownHosts::new(d.inner.paths.state_dir.join("ssh").join("known_hosts"))
}

fn ssh_info(d: &Orchestrator, vm: &VmRecord) -> Result<SshInfo, Error> {
    Ok(SshInfo {
        vm: vm.name.to_string(),
        host: vm
            .ip
            .clone()
            .ok_or_else(|| Error::internal(format!("VM {} has no address", vm.name)))?,
        port: 22,
        user: "root".into(),
        identity: d.inner.config.ssh_key_path(&d.inner.paths),
        known_hosts: d.inner.paths.state_dir.join("ssh").join("known_hosts"),
        control_dir: d.inner.paths.runtime_dir.join("ssh"),
    })
}

pub(crate) async fn get(d: &Orchestrator, name: &str) -> Result<VmRecord, Error> {
    let key = name.to_string();
    d.with_store(move |s| s.get_vm(&key))
        .await?
        .ok_or_else(|| Error::not_found(format!("VM {name:?} not found: see 'banger vm list'")))
}

async fn set_state(
    d: &Orchestrator,
    name: &str,
    state: VmState,
    runtime: Option<serde_json::Value>,
    error: Option<String>,
) -> Result<(), Error> {
    let key = name.to_string();
    d.with_store(move |s| s.set_vm_state(&key, state, &runtime, error.as_deref()))
        .await?;
    // A VM resolves as `<name>.vm` exactly while its hypervisor runs.
    d.refresh_dns().await;
    Ok(())
}

fn handle_of(vm: &VmRecord) -> Option<VmHandle> {
    vm.runtime
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

// --- create ---

pub(crate) async fn create(
    d: &Orchestrator,
    req: CreateVmRequest,
    progress: &Progress,
) -> Result<VmStarted, Error> {
    let mut timer = Timer::new();
    let (start, ephemeral, req_cold) = (req.start, req.ephemeral, req.cold);
    let wait = req.wait.unwrap_or_default();
    // An ephemeral VM that failed to boot is nobody's to keep.
    let remove_on_failure = req.remove_on_failure || ephemeral;
    let staged = req.workspace.clone();
    let spec = spec::resolve_spec(d, req).await?;
    progress.info(format!("spec: {}", spec.summary()));
    fits_host(d, spec.vcpu, spec.memory_mib)?;
    // Taken now: from here on, whatever fails removes it (`Taken`'s drop).
    let taken = match &staged {
        Some(id) => Some(crate::workspaces::take(d, id, spec.disk_size)?),
        None => None,
    };
    let full_size =
        disks_at_full_size(spec.disk_size, taken.as_ref().map_or(0, |t| t.staged.bytes));
    // Checked again before the disks are made: building the image spends
    // space too.
    fits_disks(d, "the disks need", full_size).await?;
    d.inner.hypervisors.for_boot(&d.inner.config)?;
    let image = images::ensure_image(d, &spec.image, progress).await?;
    timer.mark("image");

    let plan = if start {
        template::plan(
            d,
            &image,
            spec.vcpu,
            spec.memory_mib,
            spec.disk_size,
            req_cold,
        )
        .await?
    } else {
        template::Plan::Cold(template::ColdWhy::Asked)
    };
    let record = record_vm(
        d,
        NewVm {
            name: &spec.name,
            image: &image,
            vcpu: spec.vcpu,
            memory_mib: spec.memory_mib,
            disk_size: spec.disk_size,
            nat: spec.nat,
            ephemeral,
            uuids: match &plan {
                template::Plan::Resume(t) => Some((t.system_uuid.clone(), t.work_uuid.clone())),
                template::Plan::Cold(_) => None,
            },
            template_build: None,
            workspace: taken.as_ref().map(|t| VmWorkspace {
                dir: t.staged.dir.clone(),
                uuid: banger_storage::new_uuid(),
                files: t.staged.files,
                bytes: t.staged.bytes,
            }),
        },
    )
    .await?;
    d.journaled("create:recorded").await;
    let lock = d.inner.vms.of(record.name.as_str());
    let _guard = lock.lock().await;
    progress.phase("disks", "making the VM's disks and keys");
    let from = match &plan {
        template::Plan::Resume(t) => Disks::Copies(template::disks_of(d, t)),
        template::Plan::Cold(_) => Disks::Fresh { sync: true },
    };
    let slot = match (&taken, &plan) {
        (Some(t), _) => WorkspaceDisk::Tree(t.tree.clone()),
        // The template's guest has a fourth disk: so must its copies.
        (None, template::Plan::Resume(t)) => WorkspaceDisk::Placeholder(t.work_bytes),
        (None, template::Plan::Cold(_)) => WorkspaceDisk::None,
    };
    let prepared = async {
        fits_disks(d, "the disks need", full_size).await?;
        prepare(d, &record, progress, from, WorkspaceDisk::None).await
    };
    if let Err(e) = prepared.await {
        destroy(d, &record).await;
        return Err(e);
    }
    // Its own phase: what `--timings` and scripts/bench-workspace show of
    // the host's part of a workspace.
    if let WorkspaceDisk::Tree(_) = &slot {
        timer.mark("disks");
        progress.phase("workspace", "writing the workspace disk");
    }
    let made_ws = matches!(slot, WorkspaceDisk::Tree(_));
    if let Err(e) = make_slot(&record, &paths(d, &record).workspace, slot).await {
        destroy(d, &record).await;
        return Err(e);
    }
    drop(taken);
    if made_ws {
        timer.mark("workspace-disk");
    }
    d.journaled("create:disks").await;
    set_state(d, record.name.as_str(), VmState::Stopped, None, None).await?;
    d.journaled("create:stopped").await;
    if !made_ws {
        timer.mark("disks");
    }
    if !start {
        let vm = get(d, record.name.as_str()).await?;
        expect_lease(d, &vm);
        return Ok(VmStarted {
            vm,
            timings: timer.phases,
        });
    }
    let booted = match &plan {
        template::Plan::Resume(t) => {
            let from = template::Resume::of_template(d, t);
            match boot_from(
                d,
                record.name.as_str(),
                progress,
                &mut timer,
                wait,
                Some(&from),
            )
            .await
            {
                Ok(vm) => Ok(vm),
                Err(e) => {
                    let why = template::ColdWhy::ResumeFailed(e.message.clone());
                    progress.warn(format!(
                        "resuming template {} failed: {}; booting cold",
                        t.id, e.message
                    ));
                    tracing::warn!(vm = %record.name, template = %t.id, error = %e.message, "a resume failed: booting cold");
                    // The template is suspect: it goes, and a new one is made.
                    let _ = template::delete(d, &t.id).await;
                    cold_again(d, &record, progress, &mut timer, wait, why).await
                }
            }
        }
        template::Plan::Cold(why) => {
            let booted = boot(d, record.name.as_str(), progress, &mut timer, wait).await;
            if booted.is_ok() {
                note_boot_path(d, record.name.as_str(), &why.describe()).await;
                if why.wants_template() {
                    template::warm_in_background(
                        d,
                        record.image.clone(),
                        record.vcpu,
                        record.memory_mib,
                    );
                }
            }
            booted
        }
    };
    let vm = match booted {
        Ok(_) => get(d, record.name.as_str()).await?,
        // `vm run --rm`: a VM that failed to boot is not kept, unless it
        // is still running for diagnosis (its sshd never answered).
        Err(e) if remove_on_failure && e.kind != ErrorKind::BootTimeout => {
            if let Ok(vm) = get(d, record.name.as_str()).await {
                destroy(d, &vm).await;
            }
            return Err(e);
        }
        // Kept for `vm logs`: it is the user's now, not a lease's, so
        // neither the lease watch nor the next reconcile deletes it.
        Err(e) if ephemeral => {
            let key = record.name.to_string();
            if let Err(f) = d.with_store(move |s| s.set_vm_ephemeral(&key, false)).await {
                tracing::warn!(vm = %record.name, error = %f.message, "cannot keep a wedged VM");
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    expect_lease(d, &vm);
    Ok(VmStarted {
        vm,
        timings: timer.phases,
    })
}

/// From create's answer on, until its client takes the lease, nothing
/// else would delete an ephemeral VM. Not before: a boot under TCG may
/// take longer than the lease's grace.
fn expect_lease(d: &Orchestrator, vm: &VmRecord) {
    if vm.ephemeral {
        tokio::spawn(lease::expect_lease(d.clone(), vm.name.to_string()));
    }
}

/// A VM about to be recorded.
struct NewVm<'a> {
    name: &'a str,
    image: &'a ImageRecord,
    vcpu: u32,
    memory_mib: u64,
    disk_size: Size,
    nat: bool,
    ephemeral: bool,
    /// The UUIDs of the disks it gets copies of (a template's, or a
    /// forked VM's); `None`: new ones.
    uuids: Option<(String, String)>,
    template_build: Option<String>,
    /// The workspace disk it gets (`vm run PATH`).
    workspace: Option<VmWorkspace>,
}

/// Leases the VM an address and records it `created`: from here on,
/// reconcile knows it.
async fn record_vm(d: &Orchestrator, new: NewVm<'_>) -> Result<VmRecord, Error> {
    let _lease = d.inner.vms.lease.lock().await;
    let key = new.name.to_string();
    if d.with_store(move |s| s.vm_exists(&key)).await? {
        return Err(Error::conflict(format!(
            "VM \"{}\" already exists: choose another --name",
            new.name
        )));
    }
    let leased = d.with_store(|s| s.leased_ips()).await?;
    let used = leased.iter().filter_map(|ip| ip.parse().ok()).collect();
    let cidr = d.inner.config.bridge_cidr();
    let ip = banger_network::next_free_ip(cidr, &used).ok_or_else(|| {
        Error::conflict(format!(
            "no free guest address left in {cidr}: delete VMs, or widen bridge_cidr"
        ))
    })?;
    let (system_uuid, work_uuid) = new
        .uuids
        .unwrap_or_else(|| (banger_storage::new_uuid(), banger_storage::new_uuid()));
    let record = VmRecord {
        name: banger_model::VmName::parse(new.name).map_err(|e| Error::invalid(e.to_string()))?,
        image: new.image.name.clone(),
        kernel: new.image.kernel.clone(),
        state: VmState::Created,
        vcpu: new.vcpu,
        memory_mib: new.memory_mib,
        disk_size: new.disk_size,
        nat: new.nat,
        ip: Some(ip.to_string()),
        mac: banger_network::mac_for(new.name),
        tap: banger_network::tap_name(new.name),
        system_uuid,
        work_uuid,
        runtime: None,
        last_error: None,
        created_at: now(),
        ephemeral: new.ephemeral,
        boot_path: None,
        template_build: new.template_build,
        workspace: new.workspace,
    };
    let rec = record.clone();
    // The journal entry: from here on, reconcile knows this VM.
    d.with_store(move |s| s.insert_vm(&rec)).await?;
    Ok(record)
}

/// Where a new VM's disks come from.
enum Disks {
    /// Made afresh; with `[[file_sync]]`'s files on the work disk when
    /// `sync` (not for a template's VM: its files are every VM's).
    Fresh { sync: bool },
    /// Copies of these (system, work): a template's, whose
    /// `[[file_sync]]`'s files come through the agent after the resume, or
    /// a paused VM's (`vm fork`).
    Copies((PathBuf, PathBuf)),
}

/// What goes in a new VM's fourth disk slot (`VmPaths::workspace`).
pub(super) enum WorkspaceDisk {
    /// Nothing: the VM has three disks.
    None,
    /// The workspace disk, made from this staged tree at the VM's disk
    /// size, with the record's UUID.
    Tree(PathBuf),
    /// An empty sparse file this big: the slot of a guest resumed from a
    /// template (the template's guest probed it empty and never mounts it).
    Placeholder(u64),
    /// A copy of this file (`vm fork`).
    Copy(PathBuf),
}

/// Keys, disks (with `[[file_sync]]`'s files on the work disk), the
/// workspace slot and the known_hosts pin of a recorded VM.
async fn prepare(
    d: &Orchestrator,
    vm: &VmRecord,
    progress: &Progress,
    disks: Disks,
    slot: WorkspaceDisk,
) -> Result<(), Error> {
    let p = paths(d, vm);
    make_slot(vm, &p.workspace, slot).await?;
    // An image without an sshd of its own (OCI) gets banger's, with the
    // image's environment for every session.
    let image = images::get_image(d, &vm.image).await?;
    let minimal = match &image.oci {
        Some(oci) => Some(Minimal {
            env: oci.env.clone(),
            tools: kept_tools(d, &image)?,
        }),
        None => None,
    };
    let (copy_of, sync) = match disks {
        Disks::Copies(from) => (Some(from), false),
        Disks::Fresh { sync } => (None, sync),
    };
    // A template's copies carry what the image gives (minimal mode's
    // tools included); [[file_sync]]'s entries are every VM's own.
    let minimal = if copy_of.is_some() { None } else { minimal };
    let sync = if sync {
        d.inner.config.file_sync.clone()
    } else {
        Vec::new()
    };
    let sync_limits = banger_storage::file_sync::Limits::from_config(&d.inner.config);
    let home = d.inner.paths.home.clone();
    let progress = progress.clone();
    let key_path = d.inner.config.ssh_key_path(&d.inner.paths);
    let managed = d.inner.config.ssh_key_path.is_none();
    let vm = vm.clone();
    let kh = known_hosts(d);
    blocking(move || {
        fs::create_dir_all(&p.host_keys)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", p.dir.display())))?;
        let user_key = banger_guest::ensure_user_key(&key_path, managed)
            .map_err(|e| Error::invalid(e.to_string()))?;
        let host_pub = banger_guest::generate_host_key(&p.host_keys, vm.name.as_str())
            .map_err(|e| Error::internal(e.to_string()))?;
        if let Some(from) = &copy_of {
            template::copy_disks(from, &p.system, &p.work)?;
            return kh
                .pin(
                    vm.name.as_str(),
                    &[vm.ip.clone().unwrap_or_default(), format!("{}.vm", vm.name)],
                    &host_pub,
                )
                .map_err(|e| Error::internal(e.to_string()));
        }
        let host_key = fs::read(p.host_keys.join("ssh_host_ed25519_key"))
            .map_err(|e| Error::internal(format!("cannot read the host key: {e}")))?;
        let mut system = Seed::default()
            .file("banger/files/etc/ssh/ssh_host_ed25519_key", host_key, 0o600)
            .file(
                "banger/files/etc/ssh/ssh_host_ed25519_key.pub",
                format!("{}\n", host_pub.trim()),
                0o644,
            );
        if let Some(minimal) = &minimal {
            system = with_guest_tools(system, minimal, &progress)?;
        }
        banger_storage::make_disk(
            &p.system,
            SYSTEM_DISK_SIZE,
            "banger-system",
            &vm.system_uuid,
            &system,
        )
        .map_err(|e| Error::internal(e.to_string()))?;
        // banger's key is written after the synced files: a synced file
        // cannot replace it.
        let work = Seed::default().file(
            ".ssh/authorized_keys",
            format!("{}\n", user_key.trim()),
            0o600,
        );
        let synced = banger_storage::make_disk_with(
            &p.work,
            vm.disk_size,
            "banger-work",
            &vm.work_uuid,
            &work,
            |tree| banger_storage::file_sync::copy_into(&sync, &home, sync_limits, tree),
        )
        .map_err(|e| Error::internal(e.to_string()))?;
        for warning in synced.warnings {
            progress.warn(warning);
        }
        // Pinned before the first boot: even the first connection is
        // verified.
        let ip = vm.ip.clone().unwrap_or_default();
        kh.pin(
            vm.name.as_str(),
            &[ip, format!("{}.vm", vm.name)],
            &host_pub,
        )
        .map_err(|e| Error::internal(e.to_string()))
    })
    .await
}

/// Fills the VM's fourth disk slot. Blocking work on a blocking thread.
async fn make_slot(
    vm: &VmRecord,
    path: &std::path::Path,
    slot: WorkspaceDisk,
) -> Result<(), Error> {
    let (vm, path) = (vm.clone(), path.to_path_buf());
    let disk_err = |e: banger_storage::DiskError| match e {
        banger_storage::DiskError::NoSpace { .. } | banger_storage::DiskError::Full { .. } => {
            Error::invalid(e.to_string())
        }
        e => Error::internal(e.to_string()),
    };
    blocking(move || {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        match slot {
            WorkspaceDisk::None => Ok(()),
            WorkspaceDisk::Tree(tree) => {
                let ws = vm.workspace.as_ref().ok_or_else(|| {
                    Error::internal("a workspace disk for a VM recorded without one")
                })?;
                let started = std::time::Instant::now();
                banger_storage::make_disk_from_tree(
                    &path,
                    vm.disk_size,
                    "banger-ws",
                    &ws.uuid,
                    &tree,
                )
                .map_err(|e| match e {
                    banger_storage::DiskError::Tool { stderr, .. } => Error::invalid(format!(
                        "cannot make the workspace disk ({} files, {}) of {}: {stderr}; give a \
                         larger --disk-size",
                        ws.files,
                        Size::from_bytes(ws.bytes).human(),
                        vm.disk_size.human()
                    )),
                    e => disk_err(e),
                })?;
                if let Err(e) = banger_storage::workspace::drop_lost_found(&path, &tree) {
                    tracing::warn!(vm = %vm.name, error = %e, "the workspace disk keeps its lost+found");
                }
                tracing::info!(vm = %vm.name, files = ws.files, bytes = ws.bytes, took = ?started.elapsed(), "made the workspace disk");
                Ok(())
            }
            WorkspaceDisk::Placeholder(bytes) => {
                let f = fs::File::create(&path)
                    .and_then(|f| f.set_len(bytes).map(|_| f))
                    .map_err(|e| Error::internal(format!("cannot make {}: {e}", path.display())))?;
                drop(f);
                Ok(())
            }
            WorkspaceDisk::Copy(from) => {
                banger_storage::clone_file(&from, &path).map_err(disk_err)?;
                Ok(())
            }
        }
    })
    .await
}

/// What a VM of an image without an sshd of its own (banger-init's
/// minimal mode) gets: the image's environment for ssh sessions and the
/// agent's commands, and where banger's tools come from.
struct Minimal {
    env: Vec<String>,
    tools: KeptTools,
}

enum KeptTools {
    /// The image's own pinned archive, written when it was pulled.
    Archive { path: PathBuf, sha256: String },
    /// An image pulled before images kept their tools: assembled from the
    /// tools cache, which needs apt's mirror unless it is already filled.
    Cache(PathBuf),
}

fn kept_tools(d: &Orchestrator, image: &ImageRecord) -> Result<KeptTools, Error> {
    use banger_images::guest_tools;
    Ok(match image.artifact(ArtifactRole::GuestTools) {
        Some(a) => KeptTools::Archive {
            path: images::artifact_path(d, image, ArtifactRole::GuestTools)?,
            sha256: a.sha256.clone(),
        },
        None => {
            tracing::warn!(
                image = %image.name,
                "image keeps no {}: using the tools cache (re-pull it to boot with no network)",
                guest_tools::ARCHIVE
            );
            KeptTools::Cache(d.inner.paths.guest_tools_cache())
        }
    })
}

/// Adds banger's guest tools, their sshd configuration and the image's
/// environment for the guest agent to the per-VM files of a VM whose
/// image has no sshd (banger-init's minimal mode).
fn with_guest_tools(
    mut system: Seed,
    minimal: &Minimal,
    progress: &Progress,
) -> Result<Seed, Error> {
    use banger_images::guest_tools;
    progress.phase("tools", "adding banger's sshd (the image has none)");
    let files = match &minimal.tools {
        KeptTools::Archive { path, sha256 } => {
            guest_tools::read_archive(path, sha256).map_err(|e| Error::conflict(e.to_string()))?
        }
        KeptTools::Cache(cache) => {
            progress.warn(
                "this image was pulled by an older banger and keeps no guest tools: \
                 assembling them now (this needs apt's mirror); re-pull the image to boot \
                 with no network",
            );
            guest_tools::ensure(cache)
                .and_then(|tools| tools.files())
                .map_err(|e| Error::internal(e.to_string()))?
        }
    };
    for (path, bytes, mode) in files {
        system = system.file(&format!("banger/tools/{path}"), bytes, mode);
    }
    let (config, skipped) = guest_tools::sshd_config(&minimal.env);
    for entry in skipped {
        progress.warn(format!(
            "the image's environment entry {entry:?} cannot be passed to ssh sessions: left out"
        ));
    }
    // The same entries for commands run through the guest agent, which
    // reads them at every exec (sshd cannot hand them over).
    let (agent_env, too_big) = guest_tools::agent_env(&minimal.env);
    for entry in too_big {
        let name = entry.split_once('=').map_or(entry.as_str(), |(n, _)| n);
        progress.warn(format!(
            "the image's environment entry {name:?} does not fit in the guest agent's {} KiB: \
             left out of commands run through the agent",
            guest_tools::AGENT_ENV_MAX / 1024
        ));
    }
    Ok(system.file("banger/tools/sshd_config", config, 0o644).file(
        &format!("banger/tools/{}", guest_tools::AGENT_ENV),
        agent_env,
        0o644,
    ))
}

// --- start ---

pub(crate) async fn start(
    d: &Orchestrator,
    name: &str,
    progress: &Progress,
) -> Result<VmStarted, Error> {
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    let mut timer = Timer::new();
    boot(d, name, progress, &mut timer, ReadyWait::Ssh).await?;
    note_boot_path(d, name, OWN_DISKS).await;
    Ok(VmStarted {
        vm: get(d, name).await?,
        timings: timer.phases,
    })
}

/// How a stopped VM starts.
const OWN_DISKS: &str = "cold boot (a stopped VM boots from its own disks)";

/// Boots a stopped VM and waits for its sshd. The caller holds the VM's
/// lock.
async fn boot(
    d: &Orchestrator,
    name: &str,
    progress: &Progress,
    timer: &mut Timer,
    wait: ReadyWait,
) -> Result<VmRecord, Error> {
    boot_from(d, name, progress, timer, wait, None).await
}

/// [`boot`], or, `from` a saved guest whose disks the VM's are copies of
/// (a template's, a forked VM's), resumes it and gives it the VM's
/// identity. A failed resume leaves the VM stopped in `error`, its
/// network freed.
async fn boot_from(
    d: &Orchestrator,
    name: &str,
    progress: &Progress,
    timer: &mut Timer,
    wait: ReadyWait,
    from: Option<&template::Resume>,
) -> Result<VmRecord, Error> {
    let vm = get(d, name).await?;
    if vm.state == VmState::Paused {
        return Err(paused_error(name));
    }
    let hv = d.inner.hypervisors.for_boot(&d.inner.config)?;
    if let Some(h) = handle_of(&vm)
        && d.inner.hypervisors.for_handle(&h).is_running(&h)
    {
        return Err(Error::conflict(format!(
            "VM {name} is already running (pid {}): 'banger vm ssh {name}'",
            h.pid
        )));
    }
    fits_host(d, vm.vcpu, vm.memory_mib)?;
    images::refresh_initramfs(d, &images::get_kernel(d, &vm.kernel).await?, progress).await?;
    progress.phase("verify", "checking the image's files against their pins");
    images::verify_for_boot(d, &vm.image).await?;
    let image = images::get_image(d, &vm.image).await?;
    let kernel = images::get_kernel(d, &vm.kernel).await?;
    timer.mark("verify");

    // Everything that can fail without making anything comes first: from
    // the network on, each failure has something to undo.
    let p = paths(d, &vm);
    let port = guest_port(d, &vm)?;
    let ip = port.ip;
    let rootfs = images::artifact_path(d, &image, ArtifactRole::Rootfs)?;
    let base_uuid = {
        let r = rootfs.clone();
        blocking(move || {
            banger_storage::read_ext4_uuid(&r).map_err(|e| Error::internal(e.to_string()))
        })
        .await?
    };
    let bridge_ip = d.inner.config.bridge_cidr().addr();
    let dns = blocking(move || {
        Ok(banger_network::dns::guest_nameservers(
            bridge_ip,
            &banger_network::dns::host_resolv_confs(),
        ))
    })
    .await?;
    let spec = LaunchSpec {
        name: vm.name.to_string(),
        vm_dir: p.dir.clone(),
        runtime_dir: p.runtime.clone(),
        vcpu: vm.vcpu,
        memory_mib: vm.memory_mib,
        vmlinux: images::kernel_path(d, &kernel, ArtifactRole::Vmlinux)?,
        bzimage: images::kernel_path(d, &kernel, ArtifactRole::Bzimage)?,
        initramfs: images::kernel_path(d, &kernel, ArtifactRole::Initramfs)?,
        cmdline: guest_cmdline(&GuestParams {
            name: vm.name.as_str(),
            base_uuid: &base_uuid,
            system_uuid: &vm.system_uuid,
            work_uuid: &vm.work_uuid,
            ip,
            bridge: d.inner.config.bridge_cidr(),
            dns: &dns,
            clock: d.inner.clock,
            minimal: image.oci.is_some(),
            workspace: vm
                .workspace
                .as_ref()
                .map(|w| (w.uuid.as_str(), w.dir.as_str())),
        }),
        disks: vec![
            DiskSpec {
                path: rootfs,
                read_only: true,
            },
            DiskSpec {
                path: p.system.clone(),
                read_only: false,
            },
            DiskSpec {
                path: p.work.clone(),
                read_only: false,
            },
        ]
        .into_iter()
        .chain(p.workspace.exists().then(|| DiskSpec {
            path: p.workspace.clone(),
            read_only: false,
        }))
        .collect(),
        net: Some(NetSpec {
            tap: vm.tap.clone(),
            mac: vm.mac.clone(),
        }),
        console_log: p.console.clone(),
        incoming: from.map(|r| r.state.clone()),
    };
    progress.phase(
        "network",
        "setting up the bridge, the VM's TAP and its isolation",
    );
    // Journaled before the TAP exists: a crash from here on leaves a
    // `starting` VM, whose network reconcile removes.
    set_state(d, name, VmState::Starting, None, None).await?;
    d.journaled("boot:starting").await;
    let ops = d.inner.host_ops.clone();
    let connected = blocking(move || {
        ops.ensure_bridge(&port.bridge).map_err(host_failure)?;
        let made = connect_guest(ops.as_ref(), &port);
        if made.is_err() {
            disconnect_guest(ops.as_ref(), &port.vm, &port.tap, port.nat);
        }
        made.map_err(host_failure)
    })
    .await;
    if let Err(e) = connected {
        // Nothing was started: the VM is as it was.
        set_state(d, name, vm.state, None, vm.last_error.clone()).await?;
        return Err(e);
    }
    d.journaled("boot:network").await;
    timer.mark("network");

    progress.phase("boot", "starting the hypervisor");
    let launcher = hv.clone();
    let console = d.inner.consoles.get(&p.console);
    let (handle, this_boot) = match blocking(move || {
        fs::create_dir_all(&spec.runtime_dir).map_err(|e| {
            Error::internal(format!("cannot create {}: {e}", spec.runtime_dir.display()))
        })?;
        // Where this boot's output starts, before the hypervisor writes
        // any: the reader follows the log across rotations from here.
        let this_boot = console.cursor_at_end();
        launcher
            .start(&spec)
            .map(|h| (h, this_boot))
            .map_err(|e| Error::internal(e.to_string()))
    })
    .await
    {
        Ok(started) => started,
        Err(e) => {
            teardown_network(d, &vm).await;
            set_state(d, name, VmState::Error, None, Some(e.message.clone())).await?;
            return Err(e);
        }
    };
    d.journaled("boot:spawned").await;
    let runtime = serde_json::to_value(&handle).ok();
    set_state(d, name, VmState::Starting, runtime.clone(), None).await?;
    d.journaled("boot:recorded").await;
    timer.mark("hypervisor");
    if let Some(t) = from {
        let guest = ResumedGuest {
            vm: &vm,
            from: t,
            hv: &hv,
            handle: &handle,
            ip,
            dns: &dns,
        };
        return resume_guest(d, guest, progress, timer, runtime).await;
    }

    progress.phase("kernel", "waiting for the kernel and banger-init");
    let (h, hv2, within) = (handle.clone(), hv.clone(), d.inner.timeouts.init);
    let init = blocking(move || {
        banger_vmm::wait_for_console(this_boot, "banger-init ready", &h, hv2.as_ref(), within)
            .map_err(|e| Error::internal(e.to_string()))
    })
    .await;
    if let Err(e) = init {
        return Err(fail_boot(d, &vm, &hv, &handle, e.message).await);
    }
    timer.mark("kernel+init");

    let spec_runtime = p.runtime.clone();
    let agent = hv.agent_channel(&spec_runtime);
    d.inner.agents.close(name);
    if let Some(channel) = agent
        && wait != ReadyWait::Ssh
    {
        progress.phase("agent", "waiting for the guest agent");
        let (h, hv2, probe) = (handle.clone(), hv.clone(), d.inner.guests.clone());
        let within = d.inner.timeouts.ssh;
        let (agents, vm_name) = (d.inner.clone(), name.to_owned());
        let waited = blocking(move || {
            // Everything, the boot's own wait included, reaches the agent
            // through the VM's proxy: the only holder of its channel.
            let proxy = agents
                .agents
                .open(&vm_name, &spec_runtime, &channel, &h, probe.as_ref())
                .map_err(AgentWait::Unavailable);
            let alive = move || hv2.is_running(&h);
            Ok(proxy.and_then(|proxy| probe.agent_ready(&proxy, wait, within, &alive)))
        })
        .await?;
        match waited {
            Ok(report) => {
                timer.mark_for("agent", report.answered);
                timer.mark_for("ready", report.ready.saturating_sub(report.answered));
                d.inner.agents.sshd_unconfirmed(name);
                set_state(d, name, VmState::Running, runtime, None).await?;
                return get(d, name).await;
            }
            Err(AgentWait::Died) => {
                let msg = format!(
                    "the hypervisor exited while the guest booted: see 'banger vm logs {name}'"
                );
                return Err(fail_boot(d, &vm, &hv, &handle, msg).await);
            }
            Err(AgentWait::Timeout(last)) => {
                let msg = format!(
                    "VM {name} did not reach {} within {}s ({last}); the VM is left running: \
                     read 'banger vm logs {name}', then 'banger vm delete --force {name}'",
                    wait.as_str(),
                    d.inner.timeouts.ssh.as_secs(),
                );
                set_state(d, name, VmState::Error, runtime, Some(msg.clone())).await?;
                return Err(Error::boot_timeout(msg));
            }
            Err(AgentWait::Unavailable(why)) => {
                tracing::warn!(vm = name, %why, "no guest agent: waiting for sshd");
                progress.info(format!(
                    "the guest agent does not answer ({why}): using sshd"
                ));
                d.inner.agents.absent(name, why);
            }
        }
    }
    progress.phase("ssh", "waiting for sshd");
    let info = ssh_info(d, &vm)?;
    let (h, hv2, probe) = (handle.clone(), hv.clone(), d.inner.guests.clone());
    let within = d.inner.timeouts.ssh;
    let ready = blocking(move || {
        Ok(wait_for_ssh(
            probe.as_ref(),
            &info,
            &h,
            hv2.as_ref(),
            within,
        ))
    })
    .await?;
    match ready {
        Ok(()) => {}
        Err(SshWait::Died) => {
            // banger-init's failure line says why, when there is one.
            let tail =
                banger_vmm::process::log_tail(&handle.console_log, handle.console_offset, 40);
            let why = tail
                .iter()
                .rev()
                .find(|l| l.starts_with("banger-init: "))
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            let msg = format!(
                "the hypervisor exited while the guest booted{why}: see 'banger vm logs {name}'"
            );
            return Err(fail_boot(d, &vm, &hv, &handle, msg).await);
        }
        Err(SshWait::Fatal(msg)) => {
            return Err(fail_boot(d, &vm, &hv, &handle, msg).await);
        }
        Err(SshWait::Timeout(last)) => {
            // Kept running for diagnosis; the record says why.
            let msg = format!(
                "sshd in VM {name} did not answer within {}s ({last}); console: {}; the VM is \
                 left running: read 'banger vm logs {name}', then 'banger vm delete --force {name}'",
                d.inner.timeouts.ssh.as_secs(),
                console_tail(&handle)
            );
            set_state(d, name, VmState::Error, runtime, Some(msg.clone())).await?;
            return Err(Error::boot_timeout(msg));
        }
    }
    timer.mark("ssh");
    set_state(d, name, VmState::Running, runtime, None).await?;
    get(d, name).await
}

enum SshWait {
    Died,
    Timeout(String),
    Fatal(String),
}

/// Removes the sockets a dead hypervisor left in its runtime folder
/// (QMP, console, agent): found by the smoke suite's crash at
/// `boot:spawned` of `vm start`, where reconcile killed the unrecorded
/// hypervisor and its sockets stayed beside the stopped VM.
fn remove_sockets(runtime: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = fs::read_dir(runtime) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_socket()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// How long one readiness probe of a guest's sshd may take before the
/// hypervisor is checked again.
const SSH_PROBE_SLICE: Duration = Duration::from_secs(15);

fn wait_for_ssh(
    probe: &dyn GuestProbe,
    target: &SshTarget,
    handle: &VmHandle,
    hv: &dyn Hypervisor,
    within: Duration,
) -> Result<(), SshWait> {
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < within {
        if !hv.is_running(handle) {
            return Err(SshWait::Died);
        }
        // Each slice must fit a whole handshake: the slice also bounds
        // ssh's ConnectTimeout, which covers the banner exchange, and a
        // guest's sshd on a busy TCG host can take more than 3 s to send
        // its banner; with 3 s slices no attempt ever succeeded. The
        // hypervisor is looked at between slices.
        let left = within.saturating_sub(started.elapsed());
        match probe.ssh_ready(target, SSH_PROBE_SLICE.min(left)) {
            Ok(()) => return Ok(()),
            Err(e @ SshError::HostKeyChanged { .. }) => return Err(SshWait::Fatal(e.to_string())),
            Err(e) => last = e.to_string(),
        }
    }
    Err(SshWait::Timeout(last))
}

/// A boot that failed: stop what runs, free the network, record why.
async fn fail_boot(
    d: &Orchestrator,
    vm: &VmRecord,
    hv: &Arc<dyn Hypervisor>,
    handle: &VmHandle,
    why: String,
) -> Error {
    let (hv, h) = (hv.clone(), handle.clone());
    let _ = blocking(move || {
        hv.stop(&h, Duration::from_secs(1))
            .map_err(|e| Error::internal(e.to_string()))
    })
    .await;
    teardown_network(d, vm).await;
    let _ = set_state(d, vm.name.as_str(), VmState::Error, None, Some(why.clone())).await;
    Error::internal(why)
}

/// Ends the ssh ControlMasters to a VM that stops: banger's, and the one
/// `ssh root@NAME.vm` opened through banger's ssh_config.
async fn close_ssh(d: &Orchestrator, vm: &VmRecord) {
    d.inner.agents.close(vm.name.as_str());
    let info = ssh_info(d, vm).ok();
    let (config, name) = (d.inner.paths.ssh_config(), vm.name.to_string());
    let _ = blocking(move || {
        if let Some(info) = info {
            info.close();
        }
        banger_guest::close_master(&config, &name);
        Ok(())
    })
    .await;
}

/// The VM's place on the bridge, from its record and the config.
fn guest_port(d: &Orchestrator, vm: &VmRecord) -> Result<banger_network::GuestPort, Error> {
    let ip: std::net::Ipv4Addr = vm
        .ip
        .as_deref()
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| Error::internal(format!("VM {} has no valid address", vm.name)))?;
    Ok(banger_network::GuestPort {
        vm: vm.name.to_string(),
        tap: vm.tap.clone(),
        mac: vm.mac.clone(),
        ip,
        bridge: banger_network::BridgeSpec {
            name: d.inner.config.bridge_name().to_string(),
            cidr: d.inner.config.bridge_cidr(),
        },
        nat: vm.nat,
    })
}

/// A host operation's failure: the request's fault (a bad bridge CIDR, a
/// name the helper refuses, no root) is the user's to fix; the rest is
/// the host's (or its root helper's).
fn host_failure(e: banger_hostops::HostOpsError) -> Error {
    if e.is_invalid() {
        Error::invalid(e.to_string())
    } else {
        Error::host(e.to_string())
    }
}

/// Makes the VM's TAP, isolates the guest before anything can open the
/// TAP, then NAT when asked. Blocking.
fn connect_guest(
    ops: &dyn banger_hostops::HostOps,
    port: &banger_network::GuestPort,
) -> Result<(), banger_hostops::HostOpsError> {
    ops.create_tap(&port.tap, &port.bridge)?;
    ops.isolate_guest(port)?;
    if port.nat {
        ops.enable_nat(port)?;
    }
    Ok(())
}

/// Undoes [`connect_guest`]: the TAP first (nothing can send any more),
/// then the VM's rules; absent ones are fine. Blocking.
fn disconnect_guest(ops: &dyn banger_hostops::HostOps, name: &str, tap: &str, nat: bool) {
    if let Err(e) = ops.delete_tap(tap) {
        tracing::warn!(vm = %name, error = %e, "cannot delete the TAP");
    }
    if let Err(e) = ops.remove_isolation(name) {
        tracing::warn!(vm = %name, error = %e, "cannot remove isolation rules");
    }
    if nat && let Err(e) = ops.disable_nat(name) {
        tracing::warn!(vm = %name, error = %e, "cannot remove NAT rules");
    }
}

/// Removes the VM's TAP, isolation and NAT rules; absent ones are fine.
async fn teardown_network(d: &Orchestrator, vm: &VmRecord) {
    let (tap, name, nat) = (vm.tap.clone(), vm.name.to_string(), vm.nat);
    let ops = d.inner.host_ops.clone();
    let _ = blocking(move || {
        disconnect_guest(ops.as_ref(), &name, &tap, nat);
        Ok(())
    })
    .await;
}

// --- stop, kill, restart ---

pub(crate) async fn stop(d: &Orchestrator, name: &str) -> Result<VmRecord, Error> {
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    stop_locked(d, name, None).await
}

/// Graceful stop, or `signal` when given. Returns the stopped VM. A paused
/// VM needs nothing more: the backend's stop resumes it before asking it
/// to power off (a frozen guest cannot), and a signal needs no guest.
async fn stop_locked(d: &Orchestrator, name: &str, signal: Option<i32>) -> Result<VmRecord, Error> {
    let vm = get(d, name).await?;
    let Some(handle) = handle_of(&vm) else {
        if matches!(
            vm.state,
            VmState::Running | VmState::Paused | VmState::Starting
        ) {
            set_state(d, name, VmState::Stopped, None, None).await?;
        }
        return get(d, name).await;
    };
    let hv = d.inner.hypervisors.for_handle(&handle);
    set_state(d, name, VmState::Stopping, vm.runtime.clone(), None).await?;
    let h = handle.clone();
    blocking(move || {
        match signal {
            None => hv.stop(&h, STOP_GRACE),
            Some(sig) => hv.kill(&h, sig).map(|()| {
                let started = Instant::now();
                while hv.is_running(&h) && started.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }),
        }
        .map_err(|e| Error::internal(e.to_string()))
    })
    .await?;
    if d.inner.hypervisors.for_handle(&handle).is_running(&handle) {
        // A signal that does not end the process (STOP, USR1...).
        set_state(d, name, vm.state, vm.runtime.clone(), None).await?;
        return get(d, name).await;
    }
    close_ssh(d, &vm).await;
    teardown_network(d, &vm).await;
    set_state(d, name, VmState::Stopped, None, None).await?;
    get(d, name).await
}

pub(crate) async fn kill(d: &Orchestrator, name: &str, signal: i32) -> Result<VmRecord, Error> {
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    let vm = get(d, name).await?;
    if handle_of(&vm).is_none() {
        return Err(Error::conflict(format!("VM {name} is not running")));
    }
    stop_locked(d, name, Some(signal)).await
}

pub(crate) async fn restart(
    d: &Orchestrator,
    name: &str,
    progress: &Progress,
) -> Result<VmStarted, Error> {
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    progress.phase("stop", "stopping");
    stop_locked(d, name, None).await?;
    let mut timer = Timer::new();
    boot(d, name, progress, &mut timer, ReadyWait::Ssh).await?;
    note_boot_path(d, name, OWN_DISKS).await;
    Ok(VmStarted {
        vm: get(d, name).await?,
        timings: timer.phases,
    })
}

// --- pause, resume ---

/// Freezes a running VM's vCPUs: its process, memory, network and lease
/// stay, and the host spends no CPU on the guest until [`resume`].
///
/// Journaled so that whenever the guest may be frozen the record says
/// `paused`: recorded before the hypervisor is asked (and put back if it
/// refuses), and `running` again only once a resume has worked. A crash in
/// between leaves at worst a running guest recorded as paused, which
/// `vm resume` (a no-op for the hypervisor then) puts right; reconcile
/// keeps a paused VM paused.
pub(crate) async fn pause(d: &Orchestrator, name: &str) -> Result<VmRecord, Error> {
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    let vm = get(d, name).await?;
    match vm.state {
        VmState::Running => {}
        VmState::Paused => {
            return Err(Error::conflict(format!(
                "VM {name} is already paused: 'banger vm resume {name}' lets it run again"
            )));
        }
        VmState::Stopped | VmState::Created => {
            return Err(Error::conflict(format!(
                "VM {name} is stopped: only a running VM can be paused ('banger vm start {name}')"
            )));
        }
        other => {
            return Err(Error::conflict(format!(
                "VM {name} is {other}: only a running VM can be paused"
            )));
        }
    }
    let (hv, handle) = live_hypervisor(d, &vm)?;
    set_state(d, name, VmState::Paused, vm.runtime.clone(), None).await?;
    d.journaled("pause:recorded").await;
    let h = handle.clone();
    let paused = blocking(move || {
        let paused = hv.pause(&h);
        if paused.is_err() {
            // It may have half-happened (an answer that came too late):
            // the record goes back to running, so the guest must run.
            let _ = hv.resume(&h);
        }
        Ok(paused)
    })
    .await?;
    if let Err(e) = paused {
        set_state(d, name, VmState::Running, vm.runtime.clone(), None).await?;
        return Err(Error::internal(format!(
            "cannot pause VM {name}: {e}; it is left running"
        )));
    }
    get(d, name).await
}

/// Lets a paused VM run again, where it left off.
pub(crate) async fn resume(d: &Orchestrator, name: &str) -> Result<VmRecord, Error> {
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    let vm = get(d, name).await?;
    match vm.state {
        VmState::Paused => {}
        VmState::Running => {
            return Err(Error::conflict(format!(
                "VM {name} is not paused: it is running"
            )));
        }
        VmState::Stopped | VmState::Created => {
            return Err(Error::conflict(format!(
                "VM {name} is stopped: only a paused VM can be resumed; start it with \
                 'banger vm start {name}'"
            )));
        }
        other => {
            return Err(Error::conflict(format!(
                "VM {name} is {other}: only a paused VM can be resumed"
            )));
        }
    }
    let (hv, handle) = live_hypervisor(d, &vm)?;
    let resumed = blocking(move || Ok(hv.resume(&handle))).await?;
    if let Err(e) = resumed {
        return Err(Error::internal(format!(
            "cannot resume VM {name}: {e}; it is still paused: try again, or \
             'banger vm stop {name}'"
        )));
    }
    set_state(d, name, VmState::Running, vm.runtime.clone(), None).await?;
    get(d, name).await
}

/// The hypervisor and handle of a VM whose process still runs; a VM
/// whose hypervisor died behind the daemon's back is a conflict that
/// `vm stop` clears.
fn live_hypervisor(
    d: &Orchestrator,
    vm: &VmRecord,
) -> Result<(Arc<dyn Hypervisor>, VmHandle), Error> {
    let name = &vm.name;
    let gone = || {
        Error::conflict(format!(
            "VM {name}'s hypervisor is no longer running: 'banger vm logs {name}' may say \
             why, 'banger vm stop {name}' records it stopped"
        ))
    };
    let handle = handle_of(vm).ok_or_else(gone)?;
    let hv = d.inner.hypervisors.for_handle(&handle);
    if !hv.is_running(&handle) {
        return Err(gone());
    }
    Ok((hv, handle))
}

/// What `vm ssh`, `vm start` and the agent say of a paused VM.
fn paused_error(name: &str) -> Error {
    Error::conflict(format!(
        "VM {name} is paused: resume it with 'banger vm resume {name}'"
    ))
}

/// Commands reach a running VM only; a paused one would take them and
/// never answer.
fn check_running(vm: &VmRecord) -> Result<(), Error> {
    let name = &vm.name;
    match vm.state {
        VmState::Running => Ok(()),
        VmState::Paused => Err(paused_error(name.as_str())),
        other => Err(Error::conflict(format!(
            "VM {name} is {other}: start it with 'banger vm start {name}'"
        ))),
    }
}

// --- delete ---

pub(crate) async fn delete(d: &Orchestrator, name: &str, force: bool) -> Result<(), Error> {
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    let vm = get(d, name).await?;
    if let Some(h) = handle_of(&vm)
        && d.inner.hypervisors.for_handle(&h).is_running(&h)
    {
        if !force {
            return Err(Error::conflict(format!(
                "VM {name} is {}: stop it first ('banger vm stop {name}'), or use --force",
                running_or_paused(&vm)
            )));
        }
        stop_locked(d, name, Some(9)).await?;
        d.journaled("delete:stopped").await;
    }
    destroy(d, &vm).await;
    Ok(())
}

/// How a VM whose hypervisor runs is described to someone who wants it
/// stopped.
fn running_or_paused(vm: &VmRecord) -> &'static str {
    if vm.state == VmState::Paused {
        "paused"
    } else {
        "running"
    }
}

/// Where a VM's folder is moved while it is removed: a VM whose record
/// outlives its folder was being deleted when bangerd died ([`reconcile`]
/// finishes it). VM names never start with a dot.
fn doomed_dir(d: &Orchestrator, vm: &VmRecord) -> PathBuf {
    d.inner
        .paths
        .state_dir
        .join("vms")
        .join(format!(".{}.deleting", vm.name.as_str()))
}

/// Removes everything a VM has: network, known_hosts entries, files, and
/// last its record (so a failure half-way leaves it findable). The folder
/// is first renamed aside, in one step: a crash during the removal
/// leaves a record without its folder, which reconcile deletes, never a
/// VM with half its disks.
async fn destroy(d: &Orchestrator, vm: &VmRecord) {
    let p = paths(d, vm);
    let doomed = doomed_dir(d, vm);
    if handle_of(vm).is_none()
        && let Some(pid) = d.inner.hypervisors.kill_orphan(&p.runtime)
    {
        tracing::warn!(vm = %vm.name, pid, "killed a hypervisor whose start was never recorded");
    }
    // A VM whose hypervisor died behind the daemon's back was never
    // stopped, so its ControlMasters were never ended: they would
    // outlive it until their keepalives gave up.
    close_ssh(d, vm).await;
    teardown_network(d, vm).await;
    d.journaled("delete:network").await;
    let kh = known_hosts(d);
    let name = vm.name.to_string();
    let console = d.inner.consoles.get(&p.console);
    let _ = blocking(move || {
        if let Err(e) = kh.remove(&name) {
            tracing::warn!(vm = %name, error = %e, "cannot remove known_hosts entries");
        }
        // No rotation may write console.log.1 into the folder while it
        // is removed.
        console.exclusive(|| {
            if let Err(e) = fs::rename(&p.dir, &doomed)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(vm = %name, dir = %p.dir.display(), error = %e, "cannot move aside");
            }
            for dir in [&p.dir, &doomed, &p.runtime] {
                if let Err(e) = fs::remove_dir_all(dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(vm = %name, dir = %dir.display(), error = %e, "cannot remove");
                }
            }
        });
        Ok(())
    })
    .await;
    d.inner.consoles.forget(&paths(d, vm).console);
    d.journaled("delete:files").await;
    let key = vm.name.to_string();
    if let Err(e) = d.with_store(move |s| s.delete_vm(&key)).await {
        tracing::warn!(vm = %vm.name, error = %e.message, "cannot delete the record");
    }
    d.refresh_dns().await;
}

// --- set, ssh, stats ---

pub(crate) async fn set(
    d: &Orchestrator,
    name: &str,
    req: SetVmRequest,
) -> Result<VmRecord, Error> {
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    let vm = get(d, name).await?;
    if handle_of(&vm).is_some() {
        return Err(Error::conflict(format!(
            "VM {name} is {}: stop it first ('banger vm stop {name}')",
            running_or_paused(&vm)
        )));
    }
    let vcpu = req.vcpu.unwrap_or(vm.vcpu);
    let memory_mib = req.memory_mib.unwrap_or(vm.memory_mib);
    spec::check_sizes(vcpu, memory_mib)?;
    check_resources(vcpu, memory_mib, d.inner.host.cpus, None).map_err(Error::invalid)?;
    let disk_size: Size = req.disk_size.unwrap_or(vm.disk_size);
    if disk_size < vm.disk_size {
        return Err(Error::invalid(format!(
            "--disk-size {disk_size} is smaller than the work disk's {}: disks only grow",
            vm.disk_size
        )));
    }
    if disk_size > vm.disk_size {
        fits_disks(
            d,
            "growing the work disk needs",
            Size::from_bytes(disk_size.bytes() - vm.disk_size.bytes()),
        )
        .await?;
        let work = paths(d, &vm).work;
        blocking(move || {
            banger_storage::grow_disk(&work, disk_size).map_err(|e| Error::internal(e.to_string()))
        })
        .await?;
    }
    let nat = req.nat.unwrap_or(vm.nat);
    let key = name.to_string();
    d.with_store(move |s| s.set_vm_spec(&key, vcpu, memory_mib, disk_size, nat))
        .await?;
    get(d, name).await
}

/// How `banger` reaches a running VM over ssh. A VM whose boot ended
/// when its agent was ready may not have its sshd listening yet: the
/// first asker waits for it (as a boot waiting for ssh would have).
pub(crate) async fn ssh(d: &Orchestrator, name: &str) -> Result<SshInfo, Error> {
    let vm = get(d, name).await?;
    check_running(&vm)?;
    // Else the CLI would wait for an address nothing answers, and end
    // with ssh's "No route to host" instead of the reason.
    live_hypervisor(d, &vm)?;
    let info = ssh_info(d, &vm)?;
    if !d.inner.agents.sshd_pending(name) {
        return Ok(info);
    }
    let Some(handle) = handle_of(&vm) else {
        return Ok(info);
    };
    let hv = d.inner.hypervisors.for_handle(&handle);
    let (probe, within, target) = (d.inner.guests.clone(), d.inner.timeouts.ssh, info.clone());
    let ready = blocking(move || {
        Ok(wait_for_ssh(
            probe.as_ref(),
            &target,
            &handle,
            hv.as_ref(),
            within,
        ))
    })
    .await?;
    match ready {
        Ok(()) => {
            d.inner.agents.sshd_confirmed(name);
            Ok(info)
        }
        Err(SshWait::Died) => Err(Error::conflict(format!(
            "VM {name}'s hypervisor exited: see 'banger vm logs {name}'"
        ))),
        Err(SshWait::Fatal(msg)) => Err(Error::conflict(msg)),
        Err(SshWait::Timeout(last)) => Err(Error::boot_timeout(format!(
            "VM {name}'s sshd did not answer within {}s ({last}): the guest agent \
             still serves 'banger vm ssh {name}' without --ssh",
            within.as_secs()
        ))),
    }
}

/// Where `banger` reaches a running VM's guest agent, or why it cannot.
/// A VM booted before this daemon started (or booted waiting for sshd)
/// gets its proxy now, if its hypervisor has an agent channel.
pub(crate) async fn agent(d: &Orchestrator, name: &str) -> Result<AgentInfo, Error> {
    let vm = get(d, name).await?;
    check_running(&vm)?;
    live_hypervisor(d, &vm)?;
    let p = paths(d, &vm);
    if let Some(info) = d.inner.agents.info(name, &p.runtime) {
        return Ok(info);
    }
    let handle = handle_of(&vm);
    let channel = handle
        .as_ref()
        .and_then(|h| d.inner.hypervisors.for_handle(h).agent_channel(&p.runtime));
    let (Some(handle), Some(channel)) = (handle, channel.filter(|c| c.socket().exists())) else {
        return Ok(AgentInfo {
            socket: None,
            reason: Some("this VM's hypervisor gives it no agent channel".into()),
        });
    };
    let lock = d.inner.vms.of(name);
    let _guard = lock.lock().await;
    if let Some(info) = d.inner.agents.info(name, &p.runtime) {
        return Ok(info);
    }
    let (inner, vm_name, runtime) = (d.inner.clone(), name.to_owned(), p.runtime.clone());
    let opened = blocking(move || {
        Ok(inner
            .agents
            .open(&vm_name, &runtime, &channel, &handle, inner.guests.as_ref()))
    })
    .await?;
    Ok(match opened {
        Ok(proxy) => AgentInfo {
            socket: Some(proxy),
            reason: None,
        },
        Err(why) => AgentInfo {
            socket: None,
            reason: Some(why),
        },
    })
}

pub(crate) async fn stats(d: &Orchestrator, name: &str) -> Result<VmStats, Error> {
    let vm = get(d, name).await?;
    let p = paths(d, &vm);
    let handle = handle_of(&vm).filter(|h| d.inner.hypervisors.for_handle(h).is_running(h));
    blocking(move || {
        let usage = handle.as_ref().and_then(banger_vmm::process::usage);
        let cpu_secs = usage.as_ref().map(|u| u.cpu.as_secs_f64());
        let rss_bytes = usage.as_ref().map(|u| u.rss_bytes);
        let uptime_secs = usage.as_ref().map(|u| u.age.as_secs());
        let disks = [
            ("system", &p.system),
            ("work", &p.work),
            ("workspace", &p.workspace),
        ]
        .into_iter()
        .filter_map(|(n, path)| {
            banger_storage::usage(path)
                .ok()
                .map(|u| banger_api::DiskStats {
                    name: n.to_string(),
                    path: path.clone(),
                    size: u.size,
                    allocated: u.allocated,
                })
        })
        .collect();
        Ok(VmStats {
            name: vm.name.to_string(),
            state: vm.state,
            pid: handle.map(|h| h.pid),
            cpu_secs,
            rss_bytes,
            uptime_secs,
            disks,
        })
    })
    .await
}

// --- reconcile ---

/// After a daemon (re)start: re-adopt VMs whose hypervisor still runs
/// (running or paused, as recorded: a paused one stays paused), mark the
/// others stopped and free their network, and remove VMs whose creation a
/// crash interrupted.
pub(crate) async fn reconcile(d: &Orchestrator) -> Result<(), Error> {
    template::reconcile(d).await?;
    let vms = d.with_store(|s| s.list_vms()).await?;
    for vm in vms {
        let name = vm.name.to_string();
        if vm.template_build.is_some() {
            // A template's VM whose making the restart interrupted: the
            // template's row goes too (`template::reconcile`).
            tracing::warn!(vm = %name, "removing a template's VM left by a crash");
            if let Err(e) = delete(d, &name, true).await {
                tracing::warn!(vm = %name, error = %e.message, "cannot delete a template's VM");
            }
            continue;
        }
        if vm.ephemeral {
            // Its client's lease ended with the previous bangerd. A client
            // still running its command takes the lease again once this
            // daemon answers; the VM gets the same grace as a new one, and
            // goes if nobody does. One whose hypervisor is gone serves
            // nobody, nor one whose boot the restart interrupted (its
            // create's client got an error): it goes now.
            let running =
                handle_of(&vm).is_some_and(|h| d.inner.hypervisors.for_handle(&h).is_running(&h));
            if running && vm.state != VmState::Starting {
                tracing::info!(vm = %name, "an ephemeral VM ('vm run --rm') waits for its client to take its lease again");
                expect_lease(d, &vm);
            } else {
                tracing::warn!(vm = %name, "deleting an ephemeral VM ('vm run --rm') whose hypervisor is gone or never booted");
                if let Err(e) = delete(d, &name, true).await {
                    tracing::warn!(vm = %name, error = %e.message, "cannot delete an ephemeral VM");
                }
                continue;
            }
        }
        if vm.state == VmState::Created {
            tracing::warn!(vm = %name, "removing a VM whose creation was interrupted");
            destroy(d, &vm).await;
            continue;
        }
        // Only `destroy` removes the folder of a VM past `created`.
        if !paths(d, &vm).dir.exists() {
            tracing::warn!(vm = %name, "finishing a delete the restart interrupted");
            destroy(d, &vm).await;
            continue;
        }
        fork::remove_saved_state(&paths(d, &vm).dir);
        match handle_of(&vm) {
            Some(h)
                if vm.state == VmState::Starting
                    && d.inner.hypervisors.for_handle(&h).is_running(&h) =>
            {
                // Nobody waits for this boot any more: end it cleanly rather
                // than leave a VM that never becomes ready.
                tracing::warn!(vm = %name, pid = h.pid, "stopping a boot the restart interrupted");
                let hv = d.inner.hypervisors.for_handle(&h);
                let _ = blocking(move || {
                    hv.stop(&h, Duration::from_secs(1))
                        .map_err(|e| Error::internal(e.to_string()))
                })
                .await;
                teardown_network(d, &vm).await;
                set_state(
                    d,
                    &name,
                    VmState::Stopped,
                    None,
                    Some("its boot was interrupted by a bangerd restart: start it again".into()),
                )
                .await?;
            }
            Some(h) if d.inner.hypervisors.for_handle(&h).is_running(&h) => {
                tracing::info!(vm = %name, pid = h.pid, state = %vm.state, "re-adopted a VM whose hypervisor runs");
                // Rewritten (idempotent): a VM started by an older bangerd
                // has none, and the rules shared by all guests drop what a
                // TAP without rules sends.
                match guest_port(d, &vm) {
                    Ok(port) => {
                        let ops = d.inner.host_ops.clone();
                        let isolated =
                            blocking(move || ops.isolate_guest(&port).map_err(host_failure)).await;
                        if let Err(e) = isolated {
                            tracing::warn!(vm = %name, error = %e.message, "cannot isolate a re-adopted VM");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(vm = %name, error = %e.message, "cannot isolate a re-adopted VM");
                    }
                }
            }
            Some(_) => {
                tracing::warn!(vm = %name, "its hypervisor exited while bangerd was down");
                teardown_network(d, &vm).await;
                set_state(
                    d,
                    &name,
                    VmState::Stopped,
                    None,
                    Some(format!(
                        "the hypervisor exited while bangerd was not running: see 'banger vm logs {name}'"
                    )),
                )
                .await?;
            }
            None if matches!(
                vm.state,
                VmState::Running | VmState::Paused | VmState::Starting | VmState::Stopping
            ) =>
            {
                // A boot the crash interrupted may have spawned its
                // hypervisor without recording it.
                let runtime = paths(d, &vm).runtime;
                let hvs = d.inner.hypervisors.clone();
                let orphan = blocking(move || {
                    let orphan = hvs.kill_orphan(&runtime);
                    remove_sockets(&runtime);
                    Ok(orphan)
                })
                .await?;
                if let Some(pid) = orphan {
                    tracing::warn!(vm = %name, pid, "killed a hypervisor whose start was never recorded");
                }
                teardown_network(d, &vm).await;
                set_state(d, &name, VmState::Stopped, None, None).await?;
            }
            None => {}
        }
    }
    Ok(())
}
