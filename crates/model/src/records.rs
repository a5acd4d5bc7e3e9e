//! The records the store keeps and the API returns. Later issues add
//! fields as VMs, images and kernels gain artifacts on disk.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Size, VmName};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Created,
    Starting,
    Running,
    /// The hypervisor process lives with the guest's memory, but its
    /// vCPUs are frozen (`vm pause`) until `vm resume`.
    Paused,
    Stopping,
    Stopped,
    Error,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            VmState::Created,
            VmState::Starting,
            VmState::Running,
            VmState::Paused,
            VmState::Stopping,
            VmState::Stopped,
            VmState::Error,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: VmName,
    pub image: String,
    /// The kernel the VM boots, fixed when it is created.
    pub kernel: String,
    pub state: VmState,
    pub vcpu: u32,
    pub memory_mib: u64,
    /// Size of the work disk at `/root`.
    pub disk_size: Size,
    pub nat: bool,
    /// The guest's address, leased for the VM's lifetime (unique).
    pub ip: Option<String>,
    pub mac: String,
    pub tap: String,
    /// Filesystem UUIDs banger-init finds the VM's disks by.
    pub system_uuid: String,
    pub work_uuid: String,
    /// What the hypervisor layer persists to find a running VM again
    /// (process id and start time, control socket); `None` when stopped.
    pub runtime: Option<serde_json::Value>,
    /// Why the VM last failed, for `vm show`.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Made by `vm run --rm`: the daemon deletes it when the client's
    /// lease ends, or at its next start (a lease cannot outlive bangerd).
    #[serde(default)]
    pub ephemeral: bool,
    /// How the VM last started: resumed from which template, or booted
    /// cold and why (`vm show`, `--timings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_path: Option<String>,
    /// Set on the hidden VM that boots to make the template with this id
    /// (`vm list` leaves it out; reconcile removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_build: Option<String>,
    /// The workspace disk of `vm run PATH`, mounted at `/root/<dir>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<VmWorkspace>,
}

/// A VM's workspace disk (`workspace.ext4` in its folder): the files the
/// CLI chose from a repository, written on the host into an ext4
/// filesystem that the guest mounts at `/root/<dir>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmWorkspace {
    /// The folder under `/root`.
    pub dir: String,
    /// The filesystem's UUID (banger-init and the agent find it by it).
    pub uuid: String,
    /// What was written when the VM was made.
    pub files: u64,
    pub bytes: u64,
}

/// A snapshot of a VM booted until its guest agent and sshd answer, for
/// one shape (image, kernel, vCPUs, memory, backend): what new VMs of that
/// shape resume from instead of booting. Journaled like images: recorded
/// `building` before its files are made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Derived from the shape: one template per shape.
    pub id: String,
    pub image: String,
    pub kernel: String,
    pub vcpu: u32,
    pub memory_mib: u64,
    /// `qemu` or `firecracker`.
    pub backend: String,
    /// A digest of everything the saved guest depends on (the image's and
    /// kernel's pins, the hypervisor, the disk layout): a template whose
    /// key differs from today's is stale.
    pub key: String,
    pub state: ObjectState,
    /// The UUIDs of its disks (copies keep them).
    pub system_uuid: String,
    pub work_uuid: String,
    /// The MAC its guest's interface had.
    pub mac: String,
    /// The work disk's size in the template: VMs resumed from it grow
    /// theirs from here.
    pub work_bytes: u64,
    /// Its files, each pinned.
    pub files: Vec<TemplateFile>,
    /// Their allocated size on disk.
    pub bytes: u64,
    pub created_at: i64,
}

/// One file of a template: its name in the template's folder, its digest
/// (`sha256` of a state file; `banger_storage::sparse_digest` of a disk),
/// and the stamp it had once written (a file whose stamp still matches is
/// not hashed again before a resume).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateFile {
    pub file: String,
    pub digest: String,
    pub stamp: String,
}

/// Images and kernels are journaled: recorded as `building` before their
/// files are made, `ready` once every file is in place and hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectState {
    Building,
    Ready,
}

impl ObjectState {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectState::Building => "building",
            ObjectState::Ready => "ready",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "building" => Some(ObjectState::Building),
            "ready" => Some(ObjectState::Ready),
            _ => None,
        }
    }
}

/// What a file is for. Each image or kernel has at most one of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactRole {
    /// The read-only base root filesystem of an image (ext4).
    Rootfs,
    /// The kernel as Debian ships it; QEMU `-M pc` boots it.
    Bzimage,
    /// The ELF kernel extracted from the bzImage; Firecracker and QEMU
    /// `microvm` boot it.
    Vmlinux,
    /// banger's initramfs for this kernel: its modules and banger's init.
    Initramfs,
    /// banger's sshd, busybox and their libraries, as a tar, for an image
    /// that brings no sshd of its own (OCI): kept with the image so that
    /// its VMs boot with no network.
    #[serde(rename = "guest-tools")]
    GuestTools,
}

impl ArtifactRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactRole::Rootfs => "rootfs",
            ArtifactRole::Bzimage => "bzimage",
            ArtifactRole::Vmlinux => "vmlinux",
            ArtifactRole::Initramfs => "initramfs",
            ArtifactRole::GuestTools => "guest-tools",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            ArtifactRole::Rootfs,
            ArtifactRole::Bzimage,
            ArtifactRole::Vmlinux,
            ArtifactRole::Initramfs,
            ArtifactRole::GuestTools,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl fmt::Display for ArtifactRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file of an image or kernel, pinned by its SHA-256 when it was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub role: ArtifactRole,
    /// The file's name inside the object's folder.
    pub file: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub kernel: String,
    /// Where the image came from: `recipe:<hash>`, `catalog:<entry>`,
    /// `file:<path>`, `oci:<reference>@<manifest digest>`.
    pub source: String,
    pub state: ObjectState,
    pub artifacts: Vec<Artifact>,
    pub created_at: i64,
    /// What an image pulled from an OCI registry was, and how its author
    /// meant it to run; `None` for every other image.
    #[serde(default)]
    pub oci: Option<OciImageConfig>,
    /// What a built image holds (sizes, package count, docker's and mise's
    /// versions, where its pinned binaries came from); `None` for images
    /// not built from a recipe.
    #[serde(default)]
    pub facts: Option<ImageFacts>,
}

/// Facts about a built image, printed by `image build` and `image show`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFacts {
    /// The root filesystem's size (the ext4 file's length).
    pub size_bytes: u64,
    /// What the (sparse) file takes on the host's disk.
    pub disk_bytes: u64,
    /// What the image's files take.
    pub used_bytes: u64,
    /// Installed Debian packages.
    pub packages: u64,
    /// The `docker.io` package's version; `None` without Docker.
    pub docker: Option<String>,
    /// mise's version; `None` without mise.
    pub mise: Option<String>,
    /// Each prebuilt binary put into the image, and where it came from.
    #[serde(default)]
    pub binaries: Vec<BinaryOrigin>,
}

/// Where a prebuilt binary of an image came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryOrigin {
    pub name: String,
    pub version: Option<String>,
    /// `npm:PACKAGE@VERSION` or `url:URL`.
    pub source: String,
    /// SHA-256 of what was downloaded.
    pub sha256: String,
}

/// The OCI side of an image: where it came from (pinned by digest), its
/// layers, and its run configuration (entrypoint, cmd, env, workdir,
/// user) as the image config gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciImageConfig {
    /// Normalised, e.g. `docker.io/library/debian:bookworm`.
    pub reference: String,
    /// The linux/amd64 image manifest's digest, `sha256:…`.
    pub manifest_digest: String,
    /// Bottom first.
    pub layers: Vec<OciLayer>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// One layer, as the manifest pins it (compressed digest and size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciLayer {
    pub digest: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRecord {
    pub name: String,
    /// The kernel release (`uname -r`), e.g. `6.1.0-37-cloud-amd64`.
    pub version: String,
    pub source: String,
    pub state: ObjectState,
    pub artifacts: Vec<Artifact>,
    pub created_at: i64,
}

impl ImageRecord {
    pub fn artifact(&self, role: ArtifactRole) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.role == role)
    }
}

impl KernelRecord {
    pub fn artifact(&self, role: ArtifactRole) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_object_states_round_trip() {
        for r in [
            ArtifactRole::Rootfs,
            ArtifactRole::Bzimage,
            ArtifactRole::Vmlinux,
            ArtifactRole::Initramfs,
        ] {
            assert_eq!(ArtifactRole::parse(r.as_str()), Some(r));
        }
        for st in [ObjectState::Building, ObjectState::Ready] {
            assert_eq!(ObjectState::parse(st.as_str()), Some(st));
        }
        assert_eq!(ArtifactRole::parse("kernel"), None);
    }

    #[test]
    fn state_round_trips_through_text() {
        for st in [
            VmState::Created,
            VmState::Starting,
            VmState::Running,
            VmState::Paused,
            VmState::Stopping,
            VmState::Stopped,
            VmState::Error,
        ] {
            assert_eq!(VmState::parse(st.as_str()), Some(st));
            // The API's JSON spells it as the store does.
            assert_eq!(
                serde_json::to_value(st).unwrap(),
                serde_json::Value::from(st.as_str())
            );
        }
        assert_eq!(VmState::parse("bogus"), None);
    }
}
