use std::path::PathBuf;

use banger_model::{Size, VmDefaults};
use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub pid: u32,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub state_dir: PathBuf,
    pub database: PathBuf,
    pub schema_version: i64,
    pub uptime_secs: u64,
}

/// The body of every non-2xx response: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Machine-readable: what kind of failure, for clients to branch on.
    pub code: ErrorCode,
    /// One line for a person: what was wrong and what to do.
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The kind of an [`ApiError`], on the wire as a stable string
/// (`"not_found"`, `"conflict"`...). A code this client does not know
/// reads as [`ErrorCode::Other`], so a newer daemon's codes never make an
/// older client fail to parse the error.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ErrorCode {
    /// The request was wrong (a name, a size, a file): the message says
    /// what to change.
    BadRequest,
    /// The VM, image or kernel (or API path) does not exist.
    NotFound,
    /// The request clashes with the current state (exists, running,
    /// in use, still being made).
    Conflict,
    /// A guest did not come up in time and was left running for
    /// diagnosis.
    BootTimeout,
    /// The daemon or the host failed.
    Internal,
    /// Client side only: an HTTP error without banger's error envelope.
    Http,
    /// A code this version does not know, as it was sent.
    Other(String),
}

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::BootTimeout => "boot_timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Http => "http",
            ErrorCode::Other(code) => code,
        }
    }
}

impl From<String> for ErrorCode {
    fn from(code: String) -> Self {
        match code.as_str() {
            "bad_request" => ErrorCode::BadRequest,
            "not_found" => ErrorCode::NotFound,
            "conflict" => ErrorCode::Conflict,
            "boot_timeout" => ErrorCode::BootTimeout,
            "internal" => ErrorCode::Internal,
            "http" => ErrorCode::Http,
            _ => ErrorCode::Other(code),
        }
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Other(code) => code,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/vms`: create and boot a VM. Every field is optional; the
/// daemon fills gaps from the resolved defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    pub name: Option<String>,
    pub image: Option<String>,
    pub vcpu: Option<u32>,
    pub memory_mib: Option<u64>,
    pub disk_size: Option<Size>,
    #[serde(default)]
    pub nat: bool,
    /// Boot it once created (the default); `false` only records it.
    #[serde(default = "yes")]
    pub start: bool,
    /// Delete it if it fails to boot (`vm run --rm`), unless it was left
    /// running because its sshd did not answer.
    #[serde(default)]
    pub remove_on_failure: bool,
    /// Record it as ephemeral (`vm run --rm`): the client then holds
    /// `POST /v1/vms/{name}/lease` open, and the daemon deletes the VM
    /// when that connection ends, however the client ended.
    #[serde(default)]
    pub ephemeral: bool,
    /// How far the guest must have booted before the VM counts as
    /// running; absent: [`ReadyWait::Ssh`].
    #[serde(default)]
    pub wait: Option<ReadyWait>,
    /// Boot cold even where a template of the VM's shape could be
    /// resumed (`--cold`).
    #[serde(default)]
    pub cold: bool,
    /// A workspace staged with `POST /v1/workspaces`: it becomes the VM's
    /// workspace disk, mounted at `/root/<dir>` (`vm run PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// `POST /v1/workspaces?dir=NAME[&disk_size=SIZE][&bytes=N]`, with a tar
/// stream of `NAME/...` as the body: the files of a workspace, unpacked
/// on the host for a new VM's workspace disk. `disk_size` is the VM's
/// `--disk-size` (absent: the default), which bounds what the files may
/// take; `bytes` is what the client expects to send, so that a workspace
/// too large is refused before it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageWorkspaceQuery {
    pub dir: String,
    #[serde(default)]
    pub disk_size: Option<Size>,
    #[serde(default)]
    pub bytes: Option<u64>,
}

/// A staged workspace: give `id` as [`CreateVmRequest::workspace`]. Kept
/// until a VM takes it, for ten minutes, or until bangerd stops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedWorkspace {
    pub id: String,
    pub dir: String,
    pub files: u64,
    pub bytes: u64,
}

/// `POST /v1/vms/{name}/fork`: the new VM's name; absent: generated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkVmRequest {
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/templates`: make (or find) the template of an image at a
/// shape; absent sizes are the resolved defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmRequest {
    pub image: String,
    #[serde(default)]
    pub vcpu: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
}

/// What a boot waits for before the VM counts as running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadyWait {
    /// The guest agent answers and systemd has reached sysinit.target:
    /// filesystems mounted, /tmp cleaned, sysctl and udev's first pass
    /// done, so nothing of the boot undoes what a command does (images
    /// without systemd: as soon as the agent answers). Falls back to
    /// `ssh` when the guest has no agent.
    Sysinit,
    /// The agent answers and systemd has reached multi-user.target (the
    /// image's services are started).
    MultiUser,
    /// sshd answers (the guest agent is not waited for).
    #[default]
    Ssh,
}

impl ReadyWait {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sysinit => "sysinit",
            Self::MultiUser => "multi-user",
            Self::Ssh => "ssh",
        }
    }
}

/// `GET /v1/vms/{name}/agent`: where `banger` reaches the VM's guest
/// agent (the daemon's proxy socket), or why it cannot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub socket: Option<PathBuf>,
    pub reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// The answer to `vm create`, `vm start`, `vm restart`: the VM and how
/// long each phase took (`--timings`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmStarted {
    pub vm: banger_model::VmRecord,
    pub timings: Vec<Timing>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub phase: String,
    pub secs: f64,
}

/// `POST /v1/vms/{name}/kill`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillVmRequest {
    /// `KILL`, `TERM`, `SIGINT`, `9`...; default KILL.
    pub signal: Option<String>,
}

/// `PATCH /v1/vms/{name}`: change a stopped VM. Absent fields stay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVmRequest {
    pub vcpu: Option<u32>,
    pub memory_mib: Option<u64>,
    /// The work disk grows to this; shrinking is refused.
    pub disk_size: Option<Size>,
    pub nat: Option<bool>,
}

/// `GET /v1/vms/{name}/ssh`: how the CLI reaches the guest with the
/// system's OpenSSH client; the guest crate's own description of a target,
/// so neither side copies it field by field.
pub use banger_guest::SshTarget as SshInfo;

/// `GET /v1/vms/{name}/stats`: host-side view of a VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmStats {
    pub name: String,
    pub state: banger_model::VmState,
    /// The hypervisor process, when running.
    pub pid: Option<u32>,
    /// CPU time the hypervisor has used (user + system).
    pub cpu_secs: Option<f64>,
    /// Resident memory of the hypervisor process.
    pub rss_bytes: Option<u64>,
    /// How long the hypervisor process has run (absent from older
    /// daemons).
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    pub disks: Vec<DiskStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    pub name: String,
    pub path: PathBuf,
    /// Nominal size.
    pub size: u64,
    /// What it takes on the host (sparse files).
    pub allocated: u64,
}

/// `GET /v1/web`: where the web UI answers, with the link that carries
/// this install's token; `url` is `None` (and `reason` says why) when it
/// is off or could not listen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebInfo {
    pub url: Option<String>,
    pub reason: Option<String>,
}

/// What a VM will get, after defaults; streamed before any slow work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    pub image: String,
    pub vcpu: u32,
    pub memory_mib: u64,
    pub disk_size: Size,
    pub nat: bool,
}

impl VmSpec {
    /// `2 vcpu · 2048 MiB · 8G disk`
    pub fn summary(&self) -> String {
        format!(
            "{} vcpu · {} MiB · {} disk",
            self.vcpu, self.memory_mib, self.disk_size
        )
    }
}

/// `GET /v1/defaults`: the daemon's resolved VM defaults.
pub type DefaultsResponse = VmDefaults;

/// `POST /v1/images/build`: build an image from a recipe. Without a
/// recipe, banger's default (`debian-bookworm`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildImageRequest {
    pub name: Option<String>,
    /// Extra Debian packages on top of the recipe's.
    #[serde(default)]
    pub packages: Vec<String>,
    /// A recipe file's text (TOML), read by the CLI.
    pub recipe: Option<String>,
    /// Where the recipe text came from, for error messages.
    pub recipe_origin: Option<String>,
    /// Leave Docker out (`--no-docker`).
    #[serde(default)]
    pub no_docker: bool,
    /// Leave mise out (`--no-mise`).
    #[serde(default)]
    pub no_mise: bool,
}

/// `POST /v1/images/register`: adopt an ext4 root filesystem file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterImageRequest {
    pub name: String,
    /// Absolute path on the host; the daemon copies the file.
    pub rootfs: PathBuf,
    pub kernel: String,
}

/// `POST /v1/images/pull`: make an image from a catalog entry, or from an
/// OCI registry when `entry` is an OCI reference (`oci://…`, or anything
/// with `/`, `:` or `@`; see `banger_images::oci::is_oci_reference`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullImageRequest {
    pub entry: String,
    /// The image's name, when not the default (the entry's, or for OCI
    /// the repository's last part and the tag).
    pub name: Option<String>,
    /// OCI: allow plain HTTP to a registry that is not on loopback.
    #[serde(default)]
    pub insecure: bool,
    /// OCI: keep device nodes from the layers instead of refusing them.
    #[serde(default)]
    pub allow_devices: bool,
}

/// One file checked by `POST /v1/images/{name}/verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedFile {
    /// `image NAME` or `kernel NAME`.
    pub owner: String,
    pub role: banger_model::ArtifactRole,
    pub path: PathBuf,
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_keep_their_wire_strings() {
        for (code, wire) in [
            (ErrorCode::BadRequest, "bad_request"),
            (ErrorCode::NotFound, "not_found"),
            (ErrorCode::Conflict, "conflict"),
            (ErrorCode::BootTimeout, "boot_timeout"),
            (ErrorCode::Internal, "internal"),
            (ErrorCode::Http, "http"),
        ] {
            let e = ApiError::new(code.clone(), "m");
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json, serde_json::json!({"code": wire, "message": "m"}));
            assert_eq!(serde_json::from_value::<ApiError>(json).unwrap().code, code);
        }
    }

    #[test]
    fn an_unknown_code_still_parses_and_round_trips() {
        let e: ApiError =
            serde_json::from_str(r#"{"code":"quota_exceeded","message":"m"}"#).unwrap();
        assert_eq!(e.code, ErrorCode::Other("quota_exceeded".into()));
        assert_eq!(
            serde_json::to_value(&e).unwrap()["code"],
            serde_json::json!("quota_exceeded")
        );
    }
}
