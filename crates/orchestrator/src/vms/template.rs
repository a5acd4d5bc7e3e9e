//! Templates (DESIGN.md, "Boot path: warm"): a VM booted until its guest
//! agent and sshd answer, saved with its memory and device state
//! (`Hypervisor::save_state`) and its two disks as they were at that
//! moment. A new VM of the same shape (image, kernel, vCPUs, memory,
//! backend) resumes it instead of booting: it gets its own copies of the
//! disks, and the agent gives the guest the VM's identity
//! ([`identity_request`]).
//!
//! A template is journaled like an image: its row is written `building`
//! before anything is made, the hidden VM that boots to make it
//! (`VmRecord::template_build`) is an ordinary VM record, and reconcile
//! removes both, and any folder no ready row owns, after a crash. Its
//! files are pinned when it is made (SHA-256 of the state, a sparse
//! digest of each disk, and each file's stamp); a file whose stamp
//! changed is hashed again before a resume, and one whose digest changed
//! makes the template stale. A template is stale too when the pins of its
//! image or kernel (the initramfs with banger-init included) are not
//! those it was made from ([`shape_key`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_agent_proto::{
    ClockRequest, HostKey, IdentityReply, IdentityRequest, LinkRef, NetworkIdentity,
};
use banger_model::{
    ImageRecord, KernelRecord, ObjectState, Size, TemplateFile, TemplateRecord, VmRecord, VmState,
};
use banger_storage::SYSTEM_DISK_SIZE;
use banger_vmm::Hypervisor;
use sha2::{Digest, Sha256};

use super::{Timer, get, paths};
use crate::Orchestrator;
use crate::error::Error;
use crate::images::{self, FileStamp, blocking, now};
use crate::progress::Progress;

/// The work disk a template is made with: the default `--disk-size`
/// (`vm_defaults`), so that a VM of the default size needs no growing; a
/// VM asking for more grows its copy, one asking for less boots cold.
fn template_work(d: &Orchestrator) -> Size {
    banger_model::VmDefaults::resolve(&d.inner.config.vm_defaults, d.inner.host)
        .disk_size
        .value
}
/// The hidden VMs that boot to make templates are named this, then the
/// template's id: `vm create --name` refuses names that start so.
pub(crate) const BUILDER_PREFIX: &str = "banger-tpl-";
/// The saved state's file in a template's folder (Firecracker writes a
/// second one beside it: `Hypervisor::state_files`).
const STATE: &str = "state";
const SYSTEM: &str = "system.ext4";
const WORK: &str = "work.ext4";
/// Bumped when what a template holds changes meaning: older ones go stale.
/// 2: the guest has a fourth disk slot, for a VM's workspace disk.
const FORMAT: u32 = 2;
/// How long saving a guest's state may take (a 3 GiB guest's RAM, mostly
/// untouched, writes in about a second here).
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the resumed guest's agent gets to apply its identity (sshd's
/// restart included).
pub(crate) const IDENTITY_TIMEOUT: Duration = Duration::from_secs(30);

/// The folder of all templates.
pub(crate) fn templates_dir(d: &Orchestrator) -> PathBuf {
    d.inner.paths.state_dir.join("templates")
}

fn template_dir(d: &Orchestrator, id: &str) -> PathBuf {
    templates_dir(d).join(id)
}

/// One template per shape: its id.
pub(crate) fn shape_id(image: &str, vcpu: u32, memory_mib: u64, backend: &str) -> String {
    let digest = Sha256::digest(format!("{image}\n{vcpu}\n{memory_mib}\n{backend}"));
    hex::encode(&digest[..8])
}

/// Everything a saved guest depends on beyond its shape: the image's and
/// kernel's pinned files (banger-init is in the initramfs), the disk
/// layout (the work disk's size included) and this format.
pub(crate) fn shape_key(
    image: &ImageRecord,
    kernel: &KernelRecord,
    vcpu: u32,
    memory_mib: u64,
    backend: &str,
    work: Size,
) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "format {FORMAT}\nimage {}\nkernel {}\nvcpu {vcpu}\nmemory {memory_mib}\nbackend {backend}\n\
         system {}\nwork {}\n",
        image.name,
        kernel.name,
        SYSTEM_DISK_SIZE.bytes(),
        work.bytes()
    ));
    for a in image.artifacts.iter().chain(&kernel.artifacts) {
        h.update(format!("{} {} {}\n", a.role.as_str(), a.file, a.sha256));
    }
    hex::encode(h.finalize())
}

/// What a new VM starts from.
pub(crate) enum Plan {
    Resume(Box<TemplateRecord>),
    /// A cold boot, and why.
    Cold(ColdWhy),
}

/// Why a VM boots cold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ColdWhy {
    Asked,
    Disabled,
    /// No template of this shape yet (one is made after this boot).
    Missing,
    /// One is being made.
    Building,
    /// Its image, kernel or format changed since it was made (a new one is
    /// made after this boot).
    Stale,
    /// One of its files changed since it was made (it is deleted, and a new
    /// one made after this boot).
    Changed(String),
    /// The VM's work disk is smaller than the template's.
    SmallDisk,
    /// The resume failed (the template is deleted).
    ResumeFailed(String),
}

impl ColdWhy {
    pub fn describe(&self) -> String {
        match self {
            Self::Asked => "cold boot (--cold)".into(),
            Self::Disabled => "cold boot (templates are off: vm_templates = false)".into(),
            Self::Missing => "cold boot (no template of this shape yet)".into(),
            Self::Building => "cold boot (the template of this shape is still being made)".into(),
            Self::Stale => "cold boot (the template was made from another image or kernel)".into(),
            Self::Changed(what) => format!("cold boot (template invalid: {what})"),
            Self::SmallDisk => {
                "cold boot (--disk-size is smaller than the template's work disk, the default \
                 size)"
                    .into()
            }
            Self::ResumeFailed(why) => format!("cold boot (the resume failed: {why})"),
        }
    }

    /// Whether a template should be made after this cold boot.
    pub fn wants_template(&self) -> bool {
        matches!(
            self,
            Self::Missing | Self::Stale | Self::Changed(_) | Self::ResumeFailed(_)
        )
    }
}

/// Whether templates are used and made: `vm_templates` in the config,
/// unless `BANGER_VM_TEMPLATES` (`0` or `1`) says otherwise in bangerd's
/// environment (for test suites, whose daemons must not boot VMs of
/// their own in the background).
pub(crate) fn enabled(d: &Orchestrator) -> bool {
    match std::env::var("BANGER_VM_TEMPLATES").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => d.inner.config.vm_templates(),
    }
}

/// Whether `image` at this shape resumes a template (checked and ready)
/// or boots cold, and why.
pub(crate) async fn plan(
    d: &Orchestrator,
    image: &ImageRecord,
    vcpu: u32,
    memory_mib: u64,
    disk_size: Size,
    cold: bool,
) -> Result<Plan, Error> {
    if cold {
        return Ok(Plan::Cold(ColdWhy::Asked));
    }
    if !enabled(d) {
        return Ok(Plan::Cold(ColdWhy::Disabled));
    }
    let hv = d.inner.hypervisors.for_boot(&d.inner.config)?;
    let backend = hv.backend().to_string();
    let id = shape_id(&image.name, vcpu, memory_mib, &backend);
    let key = id.clone();
    let Some(t) = d.with_store(move |s| s.get_template(&key)).await? else {
        return Ok(Plan::Cold(ColdWhy::Missing));
    };
    if t.state != ObjectState::Ready {
        return Ok(Plan::Cold(ColdWhy::Building));
    }
    let kernel = images::get_kernel(d, &image.kernel).await?;
    if t.key != shape_key(image, &kernel, vcpu, memory_mib, &backend, template_work(d)) {
        return Ok(Plan::Cold(ColdWhy::Stale));
    }
    if disk_size.bytes() < t.work_bytes {
        return Ok(Plan::Cold(ColdWhy::SmallDisk));
    }
    let dir = template_dir(d, &t.id);
    let files = t.files.clone();
    let checked = blocking(move || Ok(check_files(&dir, &files))).await?;
    if let Err(what) = checked {
        tracing::warn!(template = %t.id, %what, "a template's file changed: deleting it");
        let _ = delete(d, &t.id).await;
        return Ok(Plan::Cold(ColdWhy::Changed(what)));
    }
    Ok(Plan::Resume(Box::new(t)))
}

/// Each file of a template as it was pinned: a stamp that still matches
/// needs no hashing. Blocking.
fn check_files(dir: &Path, files: &[TemplateFile]) -> Result<(), String> {
    if files.is_empty() {
        return Err("it records no files".into());
    }
    for f in files {
        let path = dir.join(&f.file);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err(format!("{} is not a regular file", path.display())),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        if FileStamp::of(&path).is_some_and(|s| s.to_text() == f.stamp) {
            continue;
        }
        if digest_of(&path, &f.file)? != f.digest {
            return Err(format!("{} changed since it was made", path.display()));
        }
    }
    Ok(())
}

/// A disk's sparse digest, or a state file's SHA-256. Blocking.
fn digest_of(path: &Path, file: &str) -> Result<String, String> {
    if file.ends_with(".ext4") {
        banger_storage::sparse_digest(path).map_err(|e| e.to_string())
    } else {
        banger_images::digest::sha256_file(path)
            .map(|(sha, _)| sha)
            .map_err(|e| e.to_string())
    }
}

/// Ends `name`'s agent proxy, so that in the saved state its agent waits
/// for a new host (the resumed guest's proxy greets it anew), then saves
/// the guest's state to `dest` (its folder made if needed), `what` naming
/// it in errors. The VM is left paused, saved or not. Blocking.
pub(crate) fn save_guest(
    d: &Orchestrator,
    name: &str,
    runtime_dir: &Path,
    hv: &dyn Hypervisor,
    handle: &banger_vmm::VmHandle,
    dest: &Path,
    what: &str,
) -> Result<banger_vmm::SavedState, Error> {
    d.inner.agents.shut(name, runtime_dir);
    std::thread::sleep(Duration::from_millis(300));
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    hv.save_state(handle, dest, SAVE_TIMEOUT).map_err(|e| {
        let text = e.to_string();
        if text.contains("No space left") {
            Error::invalid(format!(
                "cannot save {what}: the state filesystem is full ({text})"
            ))
        } else {
            Error::internal(format!("cannot save {what}'s state: {text}"))
        }
    })
}

/// A template's disks: system, work.
pub(crate) fn disks_of(d: &Orchestrator, t: &TemplateRecord) -> (PathBuf, PathBuf) {
    let dir = template_dir(d, &t.id);
    (dir.join(SYSTEM), dir.join(WORK))
}

/// Copies disks (a template's, or a paused VM's) to a new VM's: reflinks
/// where the filesystem can, else sparse copies. Blocking.
pub(crate) fn copy_disks(
    from: &(PathBuf, PathBuf),
    system: &Path,
    work: &Path,
) -> Result<(), Error> {
    for (from, to) in [(&from.0, system), (&from.1, work)] {
        banger_storage::clone_file(from, to).map_err(|e| match e {
            banger_storage::DiskError::NoSpace { .. } | banger_storage::DiskError::Full { .. } => {
                Error::invalid(e.to_string())
            }
            e => Error::internal(e.to_string()),
        })?;
    }
    Ok(())
}

/// A saved guest a new VM resumes: a template's, or a running VM's
/// (`vm fork`).
pub(crate) struct Resume {
    /// `LaunchSpec::incoming`.
    pub state: PathBuf,
    /// The MAC the saved guest's interface has.
    pub mac: String,
    /// The size of the saved guest's work disk.
    pub work_bytes: u64,
    /// What it is, for `vm show`: `template ID`, `a fork of NAME`.
    pub label: String,
    /// Whether `[[file_sync]]`'s files are copied in after the resume (a
    /// fork has its VM's own).
    pub sync: bool,
}

impl Resume {
    pub fn of_template(d: &Orchestrator, t: &TemplateRecord) -> Self {
        Self {
            state: template_dir(d, &t.id).join(STATE),
            mac: t.mac.clone(),
            work_bytes: t.work_bytes,
            label: format!("template {}", t.id),
            sync: true,
        }
    }
}

/// What a guest resumed from `from` is told to become: the VM's address,
/// MAC, hostname, host keys, a fresh machine-id, fresh entropy, the
/// host's time, and its work disk at full size.
pub(crate) fn identity_request(
    vm: &VmRecord,
    from: &Resume,
    ip: std::net::Ipv4Addr,
    bridge: ipnet::Ipv4Net,
    dns: &[std::net::IpAddr],
    host_key: (String, String),
) -> IdentityRequest {
    let entropy: [u8; 64] = rand::random();
    let mut machine_id: [u8; 16] = rand::random();
    if machine_id == [0; 16] {
        machine_id[0] = 1;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    IdentityRequest {
        entropy: Some(hex::encode(entropy)),
        clock: Some(ClockRequest {
            unix_nanos: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
        }),
        machine_id: Some(hex::encode(machine_id)),
        hostname: Some(vm.name.to_string()),
        network: Some(NetworkIdentity {
            link: LinkRef::Mac(from.mac.clone()),
            mac: vm.mac.clone(),
            address: ip,
            prefix: bridge.prefix_len(),
            gateway: Some(bridge.addr()),
            dns: dns
                .iter()
                .take(banger_agent_proto::MAX_NAMESERVERS)
                .copied()
                .collect(),
        }),
        host_keys: Some(vec![HostKey {
            name: "ssh_host_ed25519_key".into(),
            private_key: host_key.0,
            public_key: host_key.1,
        }]),
        filesystems: (vm.disk_size.bytes() > from.work_bytes).then(|| {
            vec![banger_agent_proto::GrowFilesystem {
                mount: "/root".into(),
                bytes: vm.disk_size.bytes(),
            }]
        }),
        // Mounted where a cold boot's banger-init would: the disk took
        // the place of the template's placeholder (docs/workspace.md).
        workspace: vm
            .workspace
            .as_ref()
            .map(|w| banger_agent_proto::WorkspaceMount {
                uuid: w.uuid.clone(),
                dir: format!("/root/{}", w.dir),
                bytes: vm.disk_size.bytes(),
            }),
    }
}

/// The identity's reply as an error, unless every part was applied.
pub(crate) fn check_identity(reply: &IdentityReply) -> Result<(), String> {
    match reply.failed.first() {
        None => Ok(()),
        Some(f) => Err(format!(
            "the guest could not take its {}: {}",
            f.part, f.error
        )),
    }
}

/// `[[file_sync]]`'s files for a resumed VM's `/root`, as the agent
/// unpacks them: a tar archive (a temporary file in the VM's folder) of
/// what a cold boot's work disk gets, owned by root as there. Bounded by
/// file_sync's own limits. Blocking.
pub(crate) fn file_sync_archive(
    d: &Orchestrator,
    vm_dir: &Path,
    progress: &Progress,
) -> Result<Option<tempfile::NamedTempFile>, Error> {
    let sync = &d.inner.config.file_sync;
    if sync.is_empty() {
        return Ok(None);
    }
    let limits = banger_storage::file_sync::Limits::from_config(&d.inner.config);
    let staging = tempfile::Builder::new()
        .prefix(".file-sync")
        .tempdir_in(vm_dir)
        .map_err(|e| Error::internal(format!("cannot stage file_sync's files: {e}")))?;
    let report =
        banger_storage::file_sync::copy_into(sync, &d.inner.paths.home, limits, staging.path())
            .map_err(|e| Error::internal(e.to_string()))?;
    for warning in report.warnings {
        progress.warn(warning);
    }
    let packed = (|| {
        let file = tempfile::Builder::new()
            .prefix(".file-sync")
            .suffix(".tar")
            .tempfile_in(vm_dir)?;
        let mut tar = tar::Builder::new(file);
        tar.follow_symlinks(false);
        append_tree(&mut tar, staging.path(), Path::new(""))?;
        tar.into_inner()
    })();
    packed
        .map(Some)
        .map_err(|e| Error::internal(format!("cannot pack file_sync's files: {e}")))
}

/// Appends the staged tree under `rel`, every entry owned by root.
fn append_tree<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = rel.join(entry.file_name());
        let path = root.join(&name);
        let meta = fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_uid(0);
        header.set_gid(0);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            tar.append_link(&mut header, &name, target)?;
        } else if meta.is_dir() {
            tar.append_data(&mut header, &name, std::io::empty())?;
            append_tree(tar, root, &name)?;
        } else {
            tar.append_data(&mut header, &name, fs::File::open(&path)?)?;
        }
    }
    Ok(())
}

// --- making, listing, deleting ---

/// Makes (or finds) the template of `image` at this shape: boots a hidden
/// VM until its agent reports multi-user.target, ends its agent proxy,
/// saves its state, copies its disks, deletes it, and pins the files.
pub(crate) async fn warm(
    d: &Orchestrator,
    image_name: &str,
    vcpu: Option<u32>,
    memory_mib: Option<u64>,
    progress: &Progress,
) -> Result<TemplateRecord, Error> {
    let defaults = banger_model::VmDefaults::resolve(&d.inner.config.vm_defaults, d.inner.host);
    let vcpu = vcpu.unwrap_or(defaults.vcpu.value);
    let memory_mib = memory_mib.unwrap_or(defaults.memory_mib.value);
    super::spec::check_sizes(vcpu, memory_mib)?;
    super::fits_host(d, vcpu, memory_mib)?;
    let image = images::ensure_image(d, image_name, progress).await?;
    let kernel = images::get_kernel(d, &image.kernel).await?;
    images::refresh_initramfs(d, &kernel, progress).await?;
    // The pins after the refresh: the initramfs may have been rebuilt.
    let kernel = images::get_kernel(d, &image.kernel).await?;
    let hv = d.inner.hypervisors.for_boot(&d.inner.config)?;
    let backend = hv.backend().to_string();
    let id = shape_id(&image.name, vcpu, memory_mib, &backend);
    let key = shape_key(
        &image,
        &kernel,
        vcpu,
        memory_mib,
        &backend,
        template_work(d),
    );

    let lock = d.inner.vms.of(&format!(" template {id}"));
    let _guard = lock.lock().await;
    let id2 = id.clone();
    if let Some(old) = d.with_store(move |s| s.get_template(&id2)).await? {
        let dir = template_dir(d, &old.id);
        let files = old.files.clone();
        let intact = old.state == ObjectState::Ready
            && old.key == key
            && blocking(move || Ok(check_files(&dir, &files).is_ok())).await?;
        if intact {
            progress.info(format!("template {id} is ready"));
            return Ok(old);
        }
        progress.info(format!("replacing template {id}: it is stale or changed"));
        delete_locked(d, &old).await?;
    }
    progress.phase(
        "template",
        format!(
            "making template {id} of {} ({vcpu} vCPU, {memory_mib} MiB)",
            image.name
        ),
    );
    make(d, &image, &kernel, hv, vcpu, memory_mib, id, key, progress).await
}

#[allow(clippy::too_many_arguments)]
async fn make(
    d: &Orchestrator,
    image: &ImageRecord,
    kernel: &KernelRecord,
    hv: std::sync::Arc<dyn Hypervisor>,
    vcpu: u32,
    memory_mib: u64,
    id: String,
    key: String,
    progress: &Progress,
) -> Result<TemplateRecord, Error> {
    let name = format!("{BUILDER_PREFIX}{id}");
    let dir = template_dir(d, &id);
    // What it will hold: the guest's memory at most, and what a boot
    // writes to its (sparse) disks, well under a gigabyte here. Not the
    // disks at full size, as a VM's check asks: a template's disks never
    // grow.
    super::fits_disks(
        d,
        "a template needs",
        Size::from_bytes(memory_mib.saturating_mul(1 << 20).saturating_add(2 << 30)),
    )
    .await?;
    let builder = super::record_vm(
        d,
        super::NewVm {
            name: &name,
            image,
            vcpu,
            memory_mib,
            disk_size: template_work(d),
            nat: false,
            ephemeral: false,
            uuids: None,
            template_build: Some(id.clone()),
            workspace: None,
        },
    )
    .await?;
    let mut record = TemplateRecord {
        id: id.clone(),
        image: image.name.clone(),
        kernel: kernel.name.clone(),
        vcpu,
        memory_mib,
        backend: hv.backend().to_string(),
        key,
        state: ObjectState::Building,
        system_uuid: builder.system_uuid.clone(),
        work_uuid: builder.work_uuid.clone(),
        mac: builder.mac.clone(),
        work_bytes: template_work(d).bytes(),
        files: vec![],
        bytes: 0,
        created_at: now(),
    };
    let row = record.clone();
    if let Err(e) = d.with_store(move |s| s.insert_template(&row)).await {
        let _ = super::delete(d, &name, true).await;
        return Err(e);
    }
    d.journaled("template:recorded").await;
    let made = build_files(d, &builder, &hv, &dir, progress).await;
    // The hidden VM goes whatever happened: what it made is copied.
    if let Err(e) = super::delete(d, &name, true).await {
        tracing::warn!(vm = %name, error = %e.message, "cannot delete a template's VM");
    }
    let files = match made {
        Ok(files) => files,
        Err(e) => {
            remove_files(d, &id).await;
            let id2 = id.clone();
            let _ = d.with_store(move |s| s.delete_template(&id2)).await;
            return Err(e);
        }
    };
    let (bytes, files2, id2) = (
        files.iter().map(|(_, allocated)| allocated).sum::<u64>(),
        files.into_iter().map(|(f, _)| f).collect::<Vec<_>>(),
        id.clone(),
    );
    let pins = files2.clone();
    d.with_store(move |s| s.set_template_ready(&id2, &pins, bytes))
        .await?;
    record.state = ObjectState::Ready;
    record.files = files2;
    record.bytes = bytes;
    progress.info(format!(
        "template {id} is ready: {} on disk",
        Size::from_bytes(bytes)
    ));
    Ok(record)
}

/// Boots the hidden VM, saves it and copies its disks into `dir`; returns
/// the pinned files and their allocated sizes.
async fn build_files(
    d: &Orchestrator,
    builder: &VmRecord,
    hv: &std::sync::Arc<dyn Hypervisor>,
    dir: &Path,
    progress: &Progress,
) -> Result<Vec<(TemplateFile, u64)>, Error> {
    let name = builder.name.to_string();
    {
        let lock = d.inner.vms.of(&name);
        let _guard = lock.lock().await;
        progress.phase("disks", "making the template's disks");
        super::prepare(
            d,
            builder,
            progress,
            super::Disks::Fresh { sync: false },
            // The slot of a resumed VM's workspace disk: empty, never
            // mounted by the template's guest.
            super::WorkspaceDisk::Placeholder(template_work(d).bytes()),
        )
        .await?;
        super::set_state(d, &name, VmState::Stopped, None, None).await?;
        let mut timer = Timer::new();
        super::boot(
            d,
            &name,
            progress,
            &mut timer,
            banger_api::ReadyWait::MultiUser,
        )
        .await?;
    }
    let vm = get(d, &name).await?;
    let p = paths(d, &vm);
    if d.inner
        .agents
        .info(&name, &p.runtime)
        .and_then(|a| a.socket)
        .is_none()
    {
        return Err(Error::conflict(format!(
            "the guest of image {} has no agent that answers: it cannot be made a template",
            vm.image
        )));
    }
    let handle = super::handle_of(&vm)
        .ok_or_else(|| Error::internal(format!("the template's VM {name} has no handle")))?;
    progress.phase("save", "saving the guest's memory and disks");
    let (d2, hv2, dir2) = (d.clone(), hv.clone(), dir.to_path_buf());
    blocking(move || {
        let state = dir2.join(STATE);
        let saved = save_guest(
            &d2,
            &name,
            &p.runtime,
            hv2.as_ref(),
            &handle,
            &state,
            "the template",
        )?;
        tracing::info!(bytes = saved.bytes, took = ?saved.took, "saved a template's state");
        // Copied while the guest is paused: the disks hold what its memory
        // expects.
        copy_disks(
            &(p.system.clone(), p.work.clone()),
            &dir2.join(SYSTEM),
            &dir2.join(WORK),
        )?;
        let mut files = Vec::new();
        let state_names = saved
            .files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()));
        for file in state_names.chain([SYSTEM.to_string(), WORK.to_string()]) {
            let path = dir2.join(&file);
            let digest = digest_of(&path, &file).map_err(Error::internal)?;
            let stamp = FileStamp::of(&path)
                .ok_or_else(|| Error::internal(format!("cannot read {}", path.display())))?
                .to_text();
            let allocated = banger_storage::usage(&path)
                .map(|u| u.allocated)
                .unwrap_or_default();
            files.push((
                TemplateFile {
                    file,
                    digest,
                    stamp,
                },
                allocated,
            ));
        }
        Ok(files)
    })
    .await
}

/// Deletes a template: its row, then its files.
pub(crate) async fn delete(d: &Orchestrator, id: &str) -> Result<(), Error> {
    let lock = d.inner.vms.of(&format!(" template {id}"));
    let _guard = lock.lock().await;
    let key = id.to_string();
    let t = d
        .with_store(move |s| s.get_template(&key))
        .await?
        .ok_or_else(|| {
            Error::not_found(format!(
                "template {id:?} not found: see 'banger template list'"
            ))
        })?;
    delete_locked(d, &t).await
}

async fn delete_locked(d: &Orchestrator, t: &TemplateRecord) -> Result<(), Error> {
    let key = t.id.clone();
    d.with_store(move |s| s.delete_template(&key)).await?;
    remove_files(d, &t.id).await;
    Ok(())
}

async fn remove_files(d: &Orchestrator, id: &str) {
    let dir = template_dir(d, id);
    let _ = blocking(move || {
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a template's files");
        }
        Ok(())
    })
    .await;
}

pub(crate) async fn list(d: &Orchestrator) -> Result<Vec<TemplateRecord>, Error> {
    d.with_store(|s| s.list_templates()).await
}

/// Deletes the templates of `image` (it is being deleted or replaced).
pub(crate) async fn delete_for_image(d: &Orchestrator, image: &str) {
    let Ok(all) = list(d).await else { return };
    for t in all.into_iter().filter(|t| t.image == image) {
        if let Err(e) = delete(d, &t.id).await {
            tracing::warn!(template = %t.id, error = %e.message, "cannot delete a template");
        }
    }
}

/// Makes the template of this shape in the background, once, after a
/// cold boot found none (or a stale one). Nothing waits for it; a failure
/// is logged.
///
/// A shape whose template could not be made is not tried again in the
/// background until the daemon restarts (`banger image warm` still
/// tries, and says why it fails).
pub(crate) fn warm_in_background(d: &Orchestrator, image: String, vcpu: u32, memory_mib: u64) {
    let shape = format!("{image} {vcpu} {memory_mib}");
    {
        let failed = d
            .inner
            .templates_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failed.contains(&shape) {
            return;
        }
    }
    let d = d.clone();
    tokio::spawn(async move {
        let progress = Progress::discard();
        match warm(&d, &image, Some(vcpu), Some(memory_mib), &progress).await {
            Ok(t) => tracing::info!(template = %t.id, image = %image, "made a template"),
            Err(e) => {
                tracing::warn!(image = %image, error = %e.message, "cannot make a template");
                d.inner
                    .templates_failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(shape);
            }
        }
    });
}

/// After a restart: removes templates a crash left `building` (their
/// hidden VMs are removed with the other VMs) and folders no template
/// owns.
pub(crate) async fn reconcile(d: &Orchestrator) -> Result<(), Error> {
    let all = list(d).await?;
    let mut kept = std::collections::HashSet::new();
    for t in all {
        if t.state == ObjectState::Ready {
            kept.insert(t.id);
            continue;
        }
        tracing::warn!(template = %t.id, "removing a template left unfinished by a crash");
        let key = t.id.clone();
        d.with_store(move |s| s.delete_template(&key)).await?;
        remove_files(d, &t.id).await;
    }
    let dir = templates_dir(d);
    let strays: Vec<String> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !kept.contains(n))
            .collect(),
        Err(_) => vec![],
    };
    for id in strays {
        tracing::warn!(template = %id, "removing template files no template owns");
        remove_files(d, &id).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::{Artifact, ArtifactRole};

    fn image(sha: &str) -> ImageRecord {
        ImageRecord {
            name: "debian-bookworm".into(),
            kernel: "k".into(),
            source: "built".into(),
            state: ObjectState::Ready,
            artifacts: vec![Artifact {
                role: ArtifactRole::Rootfs,
                file: "rootfs.ext4".into(),
                sha256: sha.into(),
                size: 1,
            }],
            created_at: 0,
            oci: None,
            facts: None,
        }
    }

    fn kernel(initramfs: &str) -> KernelRecord {
        KernelRecord {
            name: "k".into(),
            version: "6.1".into(),
            source: "debian".into(),
            state: ObjectState::Ready,
            artifacts: vec![Artifact {
                role: ArtifactRole::Initramfs,
                file: "initramfs.cpio.gz".into(),
                sha256: initramfs.into(),
                size: 1,
            }],
            created_at: 0,
        }
    }

    #[test]
    fn one_template_per_shape_and_a_key_that_follows_the_pins() {
        let id = shape_id("debian-bookworm", 2, 2048, "qemu");
        assert_eq!(id.len(), 16);
        assert_eq!(id, shape_id("debian-bookworm", 2, 2048, "qemu"));
        for other in [
            shape_id("debian-bookworm", 1, 2048, "qemu"),
            shape_id("debian-bookworm", 2, 4096, "qemu"),
            shape_id("debian-bookworm", 2, 2048, "firecracker"),
            shape_id("ubuntu", 2, 2048, "qemu"),
        ] {
            assert_ne!(id, other);
        }
        let g8 = Size::from_gib(8);
        let key = shape_key(&image("a"), &kernel("i"), 2, 2048, "qemu", g8);
        assert_eq!(
            key,
            shape_key(&image("a"), &kernel("i"), 2, 2048, "qemu", g8)
        );
        // A rebuilt image, a new banger-init in the initramfs, another
        // default disk size: stale.
        assert_ne!(
            key,
            shape_key(&image("b"), &kernel("i"), 2, 2048, "qemu", g8)
        );
        assert_ne!(
            key,
            shape_key(&image("a"), &kernel("j"), 2, 2048, "qemu", g8)
        );
        let g4 = Size::from_gib(4);
        assert_ne!(
            key,
            shape_key(&image("a"), &kernel("i"), 2, 2048, "qemu", g4)
        );
    }

    #[test]
    fn a_changed_file_is_found_and_an_untouched_one_is_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE);
        std::fs::write(&state, b"saved guest").unwrap();
        let pin = |file: &str| TemplateFile {
            file: file.into(),
            digest: digest_of(&dir.path().join(file), file).unwrap(),
            stamp: FileStamp::of(&dir.path().join(file)).unwrap().to_text(),
        };
        let files = vec![pin(STATE)];
        assert_eq!(check_files(dir.path(), &files), Ok(()));
        // A stamp that changed with the same contents: hashed, accepted.
        let touched = vec![TemplateFile {
            stamp: "0:0:0:0:0".into(),
            ..files[0].clone()
        }];
        assert_eq!(check_files(dir.path(), &touched), Ok(()));
        std::fs::write(&state, b"saved guesT").unwrap();
        let e = check_files(dir.path(), &files).unwrap_err();
        assert!(e.contains("changed since it was made"), "{e}");
        std::fs::remove_file(&state).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &state).unwrap();
        let e = check_files(dir.path(), &files).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(check_files(dir.path(), &[]).is_err());
    }

    #[test]
    fn only_a_missing_stale_or_broken_template_is_made_after_a_cold_boot() {
        for why in [
            ColdWhy::Missing,
            ColdWhy::Stale,
            ColdWhy::Changed("x".into()),
            ColdWhy::ResumeFailed("y".into()),
        ] {
            assert!(why.wants_template(), "{why:?}");
        }
        for why in [
            ColdWhy::Asked,
            ColdWhy::Disabled,
            ColdWhy::Building,
            ColdWhy::SmallDisk,
        ] {
            assert!(!why.wants_template(), "{why:?}");
            assert!(why.describe().starts_with("cold boot ("), "{why:?}");
        }
    }
}
