//! The JSON messages. Unknown fields are refused, so a host and an agent
//! of the same protocol version agree on every field.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// Opens an exec stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Chosen by the host (16 hex digits), so it can signal and resize
    /// the command while the exec stream is open.
    pub id: String,
    /// The program and its arguments, run without a shell; empty: the
    /// user's shell as a login shell (`-bash`), as sshd starts it.
    pub argv: Vec<String>,
    /// Added to the agent's base environment (PATH, HOME, USER, LOGNAME,
    /// SHELL, LANG, and TERM with a terminal).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The working directory; the user's home when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// A user name from the guest's /etc/passwd; root when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Run on a new terminal of this size (stdout then carries the
    /// terminal's output, and no stderr frames come).
    #[serde(default)]
    pub pty: Option<WindowSize>,
    /// `TERM` for a terminal.
    #[serde(default)]
    pub term: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// How an exec ended: `code` is the exit status, or 128+N for signal N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitInfo {
    pub code: i32,
    #[serde(default)]
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    pub id: String,
    pub signal: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    pub id: String,
    pub size: WindowSize,
}

/// How far the guest has come.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    pub protocol: u32,
    /// banger-init's version (the crate's).
    pub agent_version: String,
    /// Whether systemd runs the guest (false: banger's minimal init).
    pub systemd: bool,
    /// systemd has reached sysinit.target (always true without systemd).
    pub sysinit: bool,
    /// systemd has reached multi-user.target (always true without).
    pub multi_user: bool,
    /// The guest's uptime, milliseconds.
    pub uptime_ms: u64,
}

/// Opens a tar-in stream: the tar that follows is unpacked into `dir`
/// (made if missing), owned by `user` when given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarInSpec {
    pub dir: String,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarOutRequest {
    /// A file or directory, archived under its own name.
    pub path: String,
}

/// What a tar-in unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarDone {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostnameRequest {
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRequest {
    /// The host's time, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

/// How many random bytes [`IdentityRequest::entropy`] carries: at least
/// a full 256-bit seed, and not so many that the request is mostly noise.
pub const ENTROPY_BYTES: RangeInclusive<usize> = 32..=512;
/// The most host keys one request carries (OpenSSH has four types).
pub const MAX_HOST_KEYS: usize = 8;
/// The longest private or public key text (an RSA-16384 private key in
/// OpenSSH's format is about 12 KiB).
pub const MAX_KEY_TEXT: usize = 16 * 1024;
/// resolv.conf's MAXNS: the resolver reads no more than three.
pub const MAX_NAMESERVERS: usize = 3;
/// The most filesystems one identity grows (a VM has a work disk, and
/// may one day have a few more).
pub const MAX_FILESYSTEMS: usize = 4;
/// The longest mount point [`GrowFilesystem::mount`] names (PATH_MAX).
pub const MAX_MOUNT_PATH: usize = 4096;
/// The longest name of a workspace's folder under the guest's `/root`
/// ([`valid_workspace_name`]).
pub const MAX_WORKSPACE_NAME: usize = 64;

/// A resumed guest's new identity (`POST /v1/identity`): right after a
/// snapshot is resumed the guest still is the template it was taken
/// from. Every part is optional; those present are applied in the order
/// of [`IdentityPart`], each on its own, and the reply says which were
/// applied and why the others failed. A request with a malformed part is
/// refused whole (400) before anything is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRequest {
    /// Random bytes the host chose for this guest, as lowercase hex
    /// ([`ENTROPY_BYTES`] of them): mixed into the kernel's pool, which
    /// is then reseeded, so siblings of one template diverge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<String>,
    /// The host's time, as the clock route takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockRequest>,
    /// /etc/machine-id: 32 lowercase hex digits, not all zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// The kernel's hostname, /etc/hostname and the 127.0.1.1 line of
    /// /etc/hosts, as the hostname route sets them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkIdentity>,
    /// sshd's host keys, written into /etc/ssh (and into the system
    /// disk's per-VM files, so a later cold boot keeps them); sshd is then
    /// restarted (see [`IdentityReply::sshd`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_keys: Option<Vec<HostKey>>,
    /// Mounted ext4 filesystems to grow, online, to their block device's
    /// new size (the host grew the device first), at most
    /// [`MAX_FILESYSTEMS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<Vec<GrowFilesystem>>,
    /// The VM's workspace disk, to mount: the template's guest saw an
    /// empty placeholder there, and the host has since put this VM's
    /// workspace filesystem behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceMount>,
}

/// A workspace disk to mount (the resumed guest's counterpart of
/// banger-init's `banger.workspace` and `banger.workspace_dir`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceMount {
    /// The workspace filesystem's UUID (lowercase hyphenated, as mkfs -U
    /// takes it): [`valid_fs_uuid`].
    pub uuid: String,
    /// Where to mount it: `/root/<name>`, the name as for
    /// `banger.workspace_dir` ([`valid_workspace_name`]).
    pub dir: String,
    /// The device's size in bytes as the host made it (a positive
    /// multiple of 512): the agent waits (a few seconds) for the guest's
    /// kernel to see the device that big.
    pub bytes: u64,
}

/// A mounted ext4 filesystem whose block device the host has grown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowFilesystem {
    /// Where it is mounted, absolute, e.g. `/root`: exactly a mount point
    /// of the guest's mount table, at most [`MAX_MOUNT_PATH`] bytes.
    pub mount: String,
    /// The block device's new size in bytes, a positive multiple of 512:
    /// the agent waits (a few seconds) for the guest's kernel to see the
    /// device that big, then grows the filesystem to fill it.
    pub bytes: u64,
}

/// The guest's interface, given the VM's own MAC and IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkIdentity {
    /// Which interface: by name, or by the MAC it has now (the
    /// template's).
    pub link: LinkRef,
    /// The new MAC, `52:54:00:12:34:56`: unicast, not all zero.
    pub mac: String,
    pub address: Ipv4Addr,
    /// 1 to 32.
    pub prefix: u8,
    /// The default route's gateway; none: no default route.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// resolv.conf's nameservers, at most [`MAX_NAMESERVERS`]; empty:
    /// resolv.conf is left as it is.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
}

/// An interface, by name (`{"name":"eth0"}`) or by its current MAC
/// (`{"mac":"52:54:00:12:34:56"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LinkRef {
    Name(String),
    Mac(String),
}

/// One of sshd's host keys: `/etc/ssh/<name>` (0600) and
/// `/etc/ssh/<name>.pub` (0644).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostKey {
    /// `ssh_host_<type>_key`, e.g. `ssh_host_ed25519_key`.
    pub name: String,
    /// The private key file's text (OpenSSH's format).
    pub private_key: String,
    /// The public key's one line.
    pub public_key: String,
}

/// The parts of an identity, in the order they are applied: the random
/// pool first, so everything after (sshd's restart included) draws from
/// the reseeded pool; the clock next, so the files written after carry
/// the right times; sshd's keys after the network, so it restarts on the
/// new address; the filesystems and the workspace last, since they may
/// wait a few seconds for the kernel to see a grown or swapped disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityPart {
    Entropy,
    Clock,
    MachineId,
    Hostname,
    Network,
    HostKeys,
    Filesystems,
    Workspace,
}

impl IdentityPart {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entropy => "entropy",
            Self::Clock => "clock",
            Self::MachineId => "machine_id",
            Self::Hostname => "hostname",
            Self::Network => "network",
            Self::HostKeys => "host_keys",
            Self::Filesystems => "filesystems",
            Self::Workspace => "workspace",
        }
    }
}

impl std::fmt::Display for IdentityPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an identity request did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityReply {
    /// The parts applied, in the order they were.
    pub applied: Vec<IdentityPart>,
    /// The parts that failed, in order, and why.
    pub failed: Vec<PartFailure>,
    /// With host keys written: what became of sshd.
    #[serde(default)]
    pub sshd: Option<SshdRestart>,
}

impl IdentityReply {
    /// Whether every requested part was applied.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartFailure {
    pub part: IdentityPart,
    pub error: String,
}

/// Whether sshd serves the new host keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SshdRestart {
    /// It was restarted (`how`: `systemctl restart ssh.service`, or the
    /// SIGHUP that makes minimal mode's sshd execute itself again).
    Restarted { how: String },
    /// No sshd runs yet: it reads the new keys when it starts.
    NotRunning,
    /// sshd may still serve the old keys, and why it was not restarted.
    NotRestarted { reason: String },
}

/// The body of every non-2xx reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    pub error: String,
}

/// A workspace's folder name under the guest's `/root`: 1 to
/// [`MAX_WORKSPACE_NAME`] bytes of letters, digits, `.`, `_` and `-`, not
/// starting with `.` or `-` (so never `.`, `..`, a hidden folder or an
/// option). banger-init's `banger.workspace_dir` and the identity's
/// [`WorkspaceMount::dir`] both take exactly these.
pub fn valid_workspace_name(name: &str) -> bool {
    (1..=MAX_WORKSPACE_NAME).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An ext2/3/4 filesystem UUID as banger writes it (and the superblock
/// reads back): 36 characters, lowercase hex digits in groups of 8-4-4-4-12
/// joined by `-`.
pub fn valid_fs_uuid(uuid: &str) -> bool {
    uuid.len() == 36
        && uuid.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                matches!(b, b'0'..=b'9' | b'a'..=b'f')
            }
        })
}

/// An exec id: 16 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_request_names_only_the_parts_it_carries() {
        let req = IdentityRequest {
            hostname: Some("web-1".into()),
            network: Some(NetworkIdentity {
                link: LinkRef::Mac("52:54:00:00:00:01".into()),
                mac: "52:54:00:00:00:02".into(),
                address: Ipv4Addr::new(172, 16, 0, 9),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(172, 16, 0, 1)),
                dns: vec![IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1))],
            }),
            ..Default::default()
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"hostname":"web-1","network":{"link":{"mac":"52:54:00:00:00:01"},"mac":"52:54:00:00:00:02","address":"172.16.0.9","prefix":24,"gateway":"172.16.0.1","dns":["172.16.0.1"]}}"#
        );
        assert_eq!(serde_json::from_str::<IdentityRequest>(&json).unwrap(), req);
        assert!(serde_json::from_str::<IdentityRequest>(r#"{"hostnam":"x"}"#).is_err());
        let grow = IdentityRequest {
            filesystems: Some(vec![GrowFilesystem {
                mount: "/root".into(),
                bytes: 16 << 30,
            }]),
            ..Default::default()
        };
        let json = serde_json::to_string(&grow).unwrap();
        assert_eq!(
            json,
            r#"{"filesystems":[{"mount":"/root","bytes":17179869184}]}"#
        );
        assert_eq!(
            serde_json::from_str::<IdentityRequest>(&json).unwrap(),
            grow
        );
        assert!(
            serde_json::from_str::<IdentityRequest>(
                r#"{"filesystems":[{"mount":"/root","bytes":1,"device":"/dev/vdc"}]}"#
            )
            .is_err()
        );
        assert_eq!(
            serde_json::to_string(&IdentityPart::Filesystems).unwrap(),
            r#""filesystems""#
        );
        assert!(IdentityPart::HostKeys < IdentityPart::Filesystems);
    }

    #[test]
    fn the_workspace_is_an_optional_part_applied_last() {
        let req = IdentityRequest {
            workspace: Some(WorkspaceMount {
                uuid: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
                dir: "/root/banger".into(),
                bytes: 1 << 30,
            }),
            ..Default::default()
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"workspace":{"uuid":"0f8fad5b-d9cb-469f-a165-70867728950e","dir":"/root/banger","bytes":1073741824}}"#
        );
        assert_eq!(serde_json::from_str::<IdentityRequest>(&json).unwrap(), req);
        assert!(
            serde_json::from_str::<IdentityRequest>(
                r#"{"workspace":{"uuid":"x","dir":"/root/a","bytes":512,"device":"/dev/vdd"}}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<IdentityRequest>(r#"{"workspace":{"uuid":"x","bytes":512}}"#)
                .is_err()
        );
        assert_eq!(
            serde_json::to_string(&IdentityPart::Workspace).unwrap(),
            r#""workspace""#
        );
        assert_eq!(IdentityPart::Workspace.to_string(), "workspace");
        assert!(IdentityPart::Filesystems < IdentityPart::Workspace);
    }

    #[test]
    fn workspace_names_are_plain_folder_names() {
        for good in [
            "banger",
            "a",
            "my-repo--old-",
            "v1.2_x",
            "A9",
            &"a".repeat(64),
        ] {
            assert!(valid_workspace_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "a/b",
            "a b",
            "caf\u{e9}",
            "a\0",
            "a\n",
            &"a".repeat(65),
        ] {
            assert!(!valid_workspace_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn filesystem_uuids_are_lowercase_and_dashed() {
        assert!(valid_fs_uuid("0f8fad5b-d9cb-469f-a165-70867728950e"));
        for bad in [
            "",
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0f8fad5bd9cb469fa16570867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b-d9cb-469f-a165-70867728950e0",
            "0f8fad5b_d9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-7086772895ge",
            "+f8fad5b-d9cb-469f-a165-70867728950e",
        ] {
            assert!(!valid_fs_uuid(bad), "{bad}");
        }
    }

    #[test]
    fn a_reply_says_what_was_applied_and_what_failed() {
        let reply = IdentityReply {
            applied: vec![IdentityPart::Hostname, IdentityPart::HostKeys],
            failed: vec![PartFailure {
                part: IdentityPart::Network,
                error: "no interface eth9".into(),
            }],
            sshd: Some(SshdRestart::NotRestarted {
                reason: "why".into(),
            }),
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            json,
            r#"{"applied":["hostname","host_keys"],"failed":[{"part":"network","error":"no interface eth9"}],"sshd":{"outcome":"not_restarted","reason":"why"}}"#
        );
        assert_eq!(serde_json::from_str::<IdentityReply>(&json).unwrap(), reply);
        assert!(!reply.is_complete());
        let restarted: SshdRestart = serde_json::from_str(r#"{"outcome":"not_running"}"#).unwrap();
        assert_eq!(restarted, SshdRestart::NotRunning);
    }
}
