//! The daemon's side of the root helper: one connection per operation.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_network::{BridgeSpec, GuestPort};

use crate::ops::{Bridge, MAX_REQUEST, PROTOCOL, Port, Reply, Request};
use crate::{HostOps, HostOpsError};

/// How long one operation may take (nft and netlink answer in
/// milliseconds; this only bounds a wedged helper).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Host operations through `bangerd --root-helper` at `socket`.
#[derive(Clone, Debug)]
pub struct HelperClient {
    socket: PathBuf,
}

impl HelperClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        HelperClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The helper's version, after checking it speaks our protocol.
    pub fn ping(&self) -> Result<String, HostOpsError> {
        match self.call(&Request::Ping)? {
            (
                Reply::Ok {
                    version: Some(version),
                    protocol: Some(protocol),
                },
                _,
            ) => {
                if protocol == PROTOCOL {
                    Ok(version)
                } else {
                    Err(self.protocol(format!(
                        "it speaks protocol {protocol} (banger {version}) and this bangerd speaks \
                         {PROTOCOL}: install one version of both ('sudo banger system install')"
                    )))
                }
            }
            _ => Err(self.protocol("its answer to ping has no version".into())),
        }
    }

    fn protocol(&self, reason: String) -> HostOpsError {
        HostOpsError::Protocol {
            socket: self.socket.clone(),
            reason,
        }
    }

    fn unreachable(&self, source: std::io::Error) -> HostOpsError {
        HostOpsError::Unreachable {
            socket: self.socket.clone(),
            source,
        }
    }

    /// Sends `request`, returns the reply and the descriptor beside it.
    fn call(&self, request: &Request) -> Result<(Reply, Option<OwnedFd>), HostOpsError> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(e))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(|e| self.unreachable(e))?;
        let mut line = serde_json::to_vec(request)
            .map_err(|e| self.protocol(format!("cannot encode the request: {e}")))?;
        line.push(b'\n');
        (&stream)
            .write_all(&line)
            .map_err(|e| self.unreachable(e))?;
        let mut reply = Vec::new();
        let mut fd = None;
        let mut buf = [0u8; 1024];
        while !reply.contains(&b'\n') {
            let (n, got) =
                crate::fd::recv_with_fd(&stream, &mut buf).map_err(|e| self.unreachable(e))?;
            if got.is_some() && fd.is_none() {
                fd = got;
            }
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.len() > MAX_REQUEST {
                return Err(self.protocol("its reply is longer than a line".into()));
            }
        }
        let end = reply
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.protocol("it closed the connection without answering".into()))?;
        let reply: Reply = serde_json::from_slice(&reply[..end])
            .map_err(|e| self.protocol(format!("unreadable reply: {e}")))?;
        Ok((reply, fd))
    }

    /// [`Self::call`] for operations that answer only ok or an error.
    fn act(&self, request: Request) -> Result<Option<OwnedFd>, HostOpsError> {
        match self.call(&request)? {
            (Reply::Ok { .. }, fd) => Ok(fd),
            (
                Reply::Error {
                    message,
                    invalid: true,
                },
                _,
            ) => Err(HostOpsError::Refused(message)),
            (
                Reply::Error {
                    message,
                    invalid: false,
                },
                _,
            ) => Err(HostOpsError::Failed(message)),
        }
    }
}

impl HostOps for HelperClient {
    fn ensure_bridge(&self, bridge: &BridgeSpec) -> Result<(), HostOpsError> {
        self.act(Request::EnsureBridge {
            bridge: Bridge::from(bridge),
        })
        .map(drop)
    }

    fn create_tap(&self, tap: &str, bridge: &BridgeSpec) -> Result<(), HostOpsError> {
        self.act(Request::CreateTap {
            tap: tap.to_string(),
            bridge: Bridge::from(bridge),
        })
        .map(drop)
    }

    fn delete_tap(&self, tap: &str) -> Result<(), HostOpsError> {
        self.act(Request::DeleteTap {
            tap: tap.to_string(),
        })
        .map(drop)
    }

    fn isolate_guest(&self, port: &GuestPort) -> Result<(), HostOpsError> {
        self.act(Request::IsolateGuest {
            port: Port::from(port),
        })
        .map(drop)
    }

    fn remove_isolation(&self, vm: &str) -> Result<(), HostOpsError> {
        self.act(Request::RemoveIsolation { vm: vm.to_string() })
            .map(drop)
    }

    fn enable_nat(&self, port: &GuestPort) -> Result<(), HostOpsError> {
        self.act(Request::EnableNat {
            port: Port::from(port),
        })
        .map(drop)
    }

    fn disable_nat(&self, vm: &str) -> Result<(), HostOpsError> {
        self.act(Request::DisableNat { vm: vm.to_string() })
            .map(drop)
    }

    fn bind_dns(&self, bridge: &BridgeSpec) -> Result<OwnedFd, HostOpsError> {
        self.act(Request::BindDns {
            bridge: Bridge::from(bridge),
        })?
        .ok_or_else(|| self.protocol("it answered bind_dns without a socket".into()))
    }

    fn map_ids(&self, pid: u32) -> Result<(), HostOpsError> {
        self.act(Request::MapIds { pid }).map(drop)
    }

    fn describe(&self) -> String {
        format!("through the root helper at {}", self.socket.display())
    }
}
