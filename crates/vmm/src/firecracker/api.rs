//! Firecracker's API as banger uses it: the request bodies (field names as
//! in Firecracker's `firecracker.yaml`, swagger 2.0, API 1.x) and a small
//! HTTP/1.1 client over the API's Unix socket, one connection a request.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::VmmError;

/// `PUT /machine-config` (`MachineConfiguration`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MachineConfiguration {
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    pub smt: bool,
}

/// `PUT /boot-source` (`BootSource`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    pub boot_args: String,
}

/// `PUT /drives/{drive_id}` (`Drive`, virtio-blk flavour).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `PUT /network-interfaces/{iface_id}` (`NetworkInterface`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// `PUT /vsock` (`Vsock`): host-side Unix socket `uds_path` proxies to
/// the guest's vsock with context id `guest_cid` (3 or more).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: PathBuf,
}

/// `PUT /actions` (`InstanceActionInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

/// The `action_type` enum of `InstanceActionInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PATCH /vm` (`Vm`): pauses or resumes the vCPUs of a started VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vm {
    pub state: VmState,
}

/// The `state` enum of `Vm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum VmState {
    Paused,
    Resumed,
}

/// `GET /` (`InstanceInfo`), as far as banger reads it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct InstanceInfo {
    /// `Not started`, `Running` or `Paused`.
    pub state: String,
}

/// `PUT /snapshot/create` (`SnapshotCreateParams`): the VM's device
/// state to `snapshot_path`, its memory to `mem_file_path`. The VM must
/// be paused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotCreateParams {
    pub snapshot_type: SnapshotType,
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
}

/// The `snapshot_type` enum of `SnapshotCreateParams`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SnapshotType {
    Full,
    Diff,
}

/// `PUT /snapshot/load` (`SnapshotLoadParams`), on a fresh process
/// instead of the boot configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotLoadParams {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemoryBackend,
    pub resume_vm: bool,
    /// The TAP each interface uses now (Firecracker 1.12 or later).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    /// The vsock's Unix socket now (Firecracker 1.16 or later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
}

/// `MemoryBackend`: where a loaded snapshot's memory comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: PathBuf,
}

/// The `backend_type` enum of `MemoryBackend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum MemoryBackendType {
    /// The memory file, mapped (private) by Firecracker.
    File,
    Uffd,
}

/// `NetworkOverride`: another TAP for an interface of a loaded snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `VsockOverride`: another Unix socket for a loaded snapshot's vsock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VsockOverride {
    pub uds_path: PathBuf,
}

/// `PATCH /drives/{drive_id}` (`PartialDrive`): another backing file for
/// a drive of a started (or loaded) VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartialDrive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
}

/// An error answer (`Error`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiError {
    pub fault_message: Option<String>,
}

/// A client for one Firecracker's API socket.
#[derive(Clone, Debug)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// Every request (connect, send, answer) must finish within `timeout`.
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        Self {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    /// `PUT path` with a JSON body; any 2xx is success.
    pub fn put<T: Serialize>(&self, path: &str, body: &T) -> Result<(), VmmError> {
        self.send("PUT", path, body)
    }

    /// `PATCH path` with a JSON body; any 2xx is success.
    pub fn patch<T: Serialize>(&self, path: &str, body: &T) -> Result<(), VmmError> {
        self.send("PATCH", path, body)
    }

    fn send<T: Serialize>(
        &self,
        method: &'static str,
        path: &str,
        body: &T,
    ) -> Result<(), VmmError> {
        let json = serde_json::to_string(body).map_err(|e| self.error(method, path, None, e))?;
        let (status, answer) = self.request(method, path, Some(&json))?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let fault = serde_json::from_str::<ApiError>(&answer)
            .ok()
            .and_then(|e| e.fault_message)
            .unwrap_or_else(|| answer.trim().to_owned());
        Err(self.error(method, path, Some(status), format!("{status}: {fault}")))
    }

    /// `GET /`: the instance's state.
    pub fn instance_info(&self) -> Result<InstanceInfo, VmmError> {
        let value = self.get("/")?;
        serde_json::from_value(value).map_err(|e| self.error("GET", "/", Some(200), e))
    }

    /// `GET path`, the answer's JSON.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, VmmError> {
        let (status, answer) = self.request("GET", path, None)?;
        if !(200..300).contains(&status) {
            return Err(self.error("GET", path, Some(status), format!("{status}: {answer}")));
        }
        serde_json::from_str(&answer).map_err(|e| self.error("GET", path, Some(status), e))
    }

    fn request(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), VmmError> {
        let fail = |e: String| self.error(method, path, None, e);
        let deadline = Instant::now() + self.timeout;
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| fail(format!("cannot connect to {}: {e}", self.socket.display())))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(|e| fail(e.to_string()))?;
        stream
            .write_all(request_bytes(method, path, body).as_bytes())
            .map_err(|e| fail(format!("sending: {e}")))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(done) = parse_response(&buf).map_err(fail)? {
                return Ok(done);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail(format!("no answer within {:?}", self.timeout)));
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| fail(e.to_string()))?;
            match stream.read(&mut chunk) {
                Ok(0) => return Err(fail("firecracker closed the connection".into())),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(format!("reading the answer: {e}"))),
            }
        }
    }

    fn error(
        &self,
        method: &'static str,
        path: &str,
        status: Option<u16>,
        message: impl ToString,
    ) -> VmmError {
        VmmError::FirecrackerApi {
            method,
            path: path.to_owned(),
            status,
            message: message.to_string(),
        }
    }
}

/// The bytes of one request.
pub(crate) fn request_bytes(method: &str, path: &str, body: Option<&str>) -> String {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if let Some(body) = body {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    } else {
        req.push_str("\r\n");
    }
    req
}

/// A complete response's status and body, `None` while more is needed.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<(u16, String)>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line {status_line:?}"))?,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
        }
    }
    let body = &buf[head_end + 4..];
    if body.len() < length {
        return Ok(None);
    }
    Ok(Some((
        status,
        String::from_utf8_lossy(&body[..length]).into_owned(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// Field lists of the definitions banger sends, transcribed from
    /// firecracker.yaml (API 1.17.0-dev): (name, required, properties).
    const SPEC: &[(&str, &[&str], &[&str])] = &[
        (
            "MachineConfiguration",
            &["mem_size_mib", "vcpu_count"],
            &[
                "cpu_template",
                "smt",
                "mem_size_mib",
                "track_dirty_pages",
                "vcpu_count",
                "huge_pages",
            ],
        ),
        (
            "BootSource",
            &["kernel_image_path"],
            &["boot_args", "initrd_path", "kernel_image_path"],
        ),
        (
            "Drive",
            &["drive_id", "is_root_device"],
            &[
                "drive_id",
                "partuuid",
                "is_root_device",
                "cache_type",
                "is_read_only",
                "path_on_host",
                "rate_limiter",
                "io_engine",
                "socket",
            ],
        ),
        (
            "NetworkInterface",
            &["host_dev_name", "iface_id"],
            &[
                "guest_mac",
                "host_dev_name",
                "iface_id",
                "mtu",
                "rx_rate_limiter",
                "tx_rate_limiter",
            ],
        ),
        (
            "Vsock",
            &["guest_cid", "uds_path"],
            &["guest_cid", "uds_path", "vsock_id"],
        ),
        ("InstanceActionInfo", &["action_type"], &["action_type"]),
        ("Vm", &["state"], &["state"]),
        (
            "SnapshotCreateParams",
            &["mem_file_path", "snapshot_path"],
            &["mem_file_path", "snapshot_path", "snapshot_type"],
        ),
        (
            "SnapshotLoadParams",
            &["snapshot_path"],
            &[
                "enable_diff_snapshots",
                "track_dirty_pages",
                "mem_file_path",
                "mem_backend",
                "snapshot_path",
                "resume_vm",
                "network_overrides",
                "vsock_override",
                "clock_realtime",
                "huge_pages",
            ],
        ),
        (
            "MemoryBackend",
            &["backend_type", "backend_path"],
            &["backend_type", "backend_path"],
        ),
        (
            "NetworkOverride",
            &["iface_id", "host_dev_name"],
            &["iface_id", "host_dev_name"],
        ),
        ("VsockOverride", &["uds_path"], &["uds_path"]),
        (
            "PartialDrive",
            &["drive_id"],
            &["drive_id", "path_on_host", "rate_limiter"],
        ),
    ];

    fn check(definition: &str, body: &Value) {
        let (_, required, properties) = SPEC.iter().find(|d| d.0 == definition).unwrap();
        let object = body.as_object().unwrap();
        for key in object.keys() {
            assert!(
                properties.contains(&key.as_str()),
                "{definition} has no field {key}"
            );
        }
        for key in *required {
            assert!(
                object.contains_key(*key),
                "{definition} needs {key}: {body}"
            );
        }
    }

    #[test]
    fn bodies_use_the_spec_field_names() {
        let machine = serde_json::to_value(MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 1024,
            smt: false,
        })
        .unwrap();
        check("MachineConfiguration", &machine);
        assert_eq!(
            machine,
            json!({"vcpu_count": 2, "mem_size_mib": 1024, "smt": false})
        );

        let boot = serde_json::to_value(BootSource {
            kernel_image_path: "/k/vmlinux".into(),
            initrd_path: Some("/k/initramfs.cpio.gz".into()),
            boot_args: "console=ttyS0".into(),
        })
        .unwrap();
        check("BootSource", &boot);
        let boot = serde_json::to_value(BootSource {
            kernel_image_path: "/k/vmlinux".into(),
            initrd_path: None,
            boot_args: String::new(),
        })
        .unwrap();
        check("BootSource", &boot);
        assert!(boot.get("initrd_path").is_none());

        let drive = serde_json::to_value(Drive {
            drive_id: "d0".into(),
            path_on_host: "/img/rootfs.ext4".into(),
            is_root_device: false,
            is_read_only: true,
        })
        .unwrap();
        check("Drive", &drive);
        assert_eq!(drive["is_read_only"], json!(true));

        let net = serde_json::to_value(NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "bgr-x".into(),
            guest_mac: Some("52:54:00:00:00:01".into()),
        })
        .unwrap();
        check("NetworkInterface", &net);

        let vsock = serde_json::to_value(Vsock {
            guest_cid: 3,
            uds_path: "/run/v.sock".into(),
        })
        .unwrap();
        check("Vsock", &vsock);

        for (action, name) in [
            (ActionType::InstanceStart, "InstanceStart"),
            (ActionType::SendCtrlAltDel, "SendCtrlAltDel"),
            (ActionType::FlushMetrics, "FlushMetrics"),
        ] {
            let body = serde_json::to_value(InstanceActionInfo {
                action_type: action,
            })
            .unwrap();
            check("InstanceActionInfo", &body);
            assert_eq!(body, json!({ "action_type": name }));
        }

        for (state, name) in [(VmState::Paused, "Paused"), (VmState::Resumed, "Resumed")] {
            let body = serde_json::to_value(Vm { state }).unwrap();
            check("Vm", &body);
            assert_eq!(body, json!({ "state": name }));
        }
    }

    #[test]
    fn snapshot_bodies_use_the_spec_field_names() {
        let create = serde_json::to_value(SnapshotCreateParams {
            snapshot_type: SnapshotType::Full,
            snapshot_path: "/t/state".into(),
            mem_file_path: "/t/state.mem".into(),
        })
        .unwrap();
        check("SnapshotCreateParams", &create);
        assert_eq!(
            create,
            json!({"snapshot_type": "Full", "snapshot_path": "/t/state", "mem_file_path": "/t/state.mem"})
        );
        let load = SnapshotLoadParams {
            snapshot_path: "/t/state".into(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: "/t/state.mem".into(),
            },
            resume_vm: false,
            network_overrides: vec![NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: "bgr-x".into(),
            }],
            vsock_override: Some(VsockOverride {
                uds_path: "/run/x/vsock.sock".into(),
            }),
        };
        let body = serde_json::to_value(&load).unwrap();
        check("SnapshotLoadParams", &body);
        check("MemoryBackend", &body["mem_backend"]);
        check("NetworkOverride", &body["network_overrides"][0]);
        check("VsockOverride", &body["vsock_override"]);
        assert_eq!(body["mem_backend"]["backend_type"], json!("File"));
        // Without a network or a vsock to point elsewhere, the body does
        // not mention them (older Firecrackers refuse unknown fields).
        let bare = serde_json::to_value(SnapshotLoadParams {
            network_overrides: vec![],
            vsock_override: None,
            ..load
        })
        .unwrap();
        check("SnapshotLoadParams", &bare);
        assert!(bare.get("network_overrides").is_none() && bare.get("vsock_override").is_none());
        let drive = serde_json::to_value(PartialDrive {
            drive_id: "d1".into(),
            path_on_host: "/vms/x/system.ext4".into(),
        })
        .unwrap();
        check("PartialDrive", &drive);
    }

    #[test]
    fn requests_and_responses_on_the_wire() {
        assert_eq!(
            request_bytes("PUT", "/actions", Some("{}")),
            "PUT /actions HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 204 \r\nServer: Firecracker API\r\n").unwrap(),
            None
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
            )
            .unwrap(),
            Some((204, String::new()))
        );
        let partial = b"HTTP/1.1 400 \r\nContent-Length: 30\r\n\r\n{\"fault_message\":";
        assert_eq!(parse_response(partial).unwrap(), None);
        let full = b"HTTP/1.1 400 \r\ncontent-length: 24\r\n\r\n{\"fault_message\":\"nope\"}";
        assert_eq!(
            parse_response(full).unwrap(),
            Some((400, "{\"fault_message\":\"nope\"}".into()))
        );
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn a_refused_request_quotes_the_fault_message() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let fault = r#"{"fault_message":"Invalid kernel path: No such file"}"#;
            for answer in [
                "HTTP/1.1 204 \r\nServer: Firecracker API\r\n\r\n".to_owned(),
                format!(
                    "HTTP/1.1 400 \r\nContent-Length: {}\r\n\r\n{fault}",
                    fault.len()
                ),
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        length = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                seen.push(format!(
                    "{}{}",
                    head.lines().next().unwrap(),
                    String::from_utf8(body).unwrap()
                ));
                s.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        let api = ApiClient::new(&socket, Duration::from_secs(5));
        api.put(
            "/machine-config",
            &MachineConfiguration {
                vcpu_count: 1,
                mem_size_mib: 128,
                smt: false,
            },
        )
        .unwrap();
        let err = api
            .put(
                "/boot-source",
                &BootSource {
                    kernel_image_path: "/nope".into(),
                    initrd_path: None,
                    boot_args: String::new(),
                },
            )
            .unwrap_err();
        assert!(matches!(
            err,
            VmmError::FirecrackerApi {
                status: Some(400),
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "firecracker API PUT /boot-source: 400: Invalid kernel path: No such file"
        );
        assert_eq!(
            server.join().unwrap(),
            vec![
                r#"PUT /machine-config HTTP/1.1{"vcpu_count":1,"mem_size_mib":128,"smt":false}"#,
                r#"PUT /boot-source HTTP/1.1{"kernel_image_path":"/nope","boot_args":""}"#,
            ]
        );
    }
}
