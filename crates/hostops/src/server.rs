//! `bangerd --root-helper`: the one process of the system install that
//! runs as root. It listens on a Unix socket that only the owner's uid may
//! use (checked with `SO_PEERCRED` on every connection, whatever the
//! socket file's mode), reads one request line of at most
//! [`MAX_REQUEST`] bytes, checks it ([`Request::check`]), carries it out
//! one at a time, logs it with the peer's pid, and answers one line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::ops::{MAX_REQUEST, PROTOCOL, Reply, Request};
use crate::{HostOps, HostOpsError, Local};

/// How long a peer may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen queue's stead are
/// answered "busy". The owner's daemon needs a handful.
const MAX_CONNECTIONS: usize = 32;
/// How much of an oversized request is read and dropped before refusing.
const DRAIN_LIMIT: u64 = 1 << 20;

/// Where the helper listens and whom it serves.
#[derive(Clone, Debug)]
pub struct HelperConfig {
    pub socket: PathBuf,
    pub owner_uid: u32,
    pub owner_gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the root helper must run as root (it makes bridges, TAPs and firewall rules)")]
    NotRoot,
    #[error("cannot listen on {socket}: {source}")]
    Bind {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{socket} exists and is not a socket: move it aside")]
    NotASocket { socket: PathBuf },
}

/// Listens on `config.socket` and serves the owner until killed.
pub fn serve(config: &HelperConfig) -> Result<(), ServeError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ServeError::NotRoot);
    }
    let listener = bind(config)?;
    tracing::info!(
        socket = %config.socket.display(),
        owner_uid = config.owner_uid,
        version = env!("CARGO_PKG_VERSION"),
        "root helper listening"
    );
    serve_on(
        listener,
        config.owner_uid,
        Arc::new(Local::for_owner(crate::Owner::new(
            config.owner_uid,
            config.owner_gid,
        ))),
    );
    Ok(())
}

/// Binds the socket: a stale socket is replaced, anything else refused.
/// The file is 0666: the peer check on every connection is what guards
/// it, and handing the file to the owner would take CAP_CHOWN, which the
/// helper's unit does not have.
fn bind(config: &HelperConfig) -> Result<UnixListener, ServeError> {
    let socket = &config.socket;
    let bind_err = |source| ServeError::Bind {
        socket: socket.clone(),
        source,
    };
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(socket).map_err(bind_err)?
        }
        Ok(_) => {
            return Err(ServeError::NotASocket {
                socket: socket.clone(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(socket).map_err(bind_err)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).map_err(bind_err)?;
    Ok(listener)
}

/// Serves connections on `listener` with `ops` until the listener fails.
/// Public so that tests drive the protocol with a recording `ops`.
pub fn serve_on(listener: UnixListener, owner_uid: u32, ops: Arc<dyn HostOps>) {
    let serial = Arc::new(Mutex::new(()));
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = answer(&stream, &refusal("busy: too many requests at once".into()));
            continue;
        }
        let (ops, serial, active) = (ops.clone(), serial.clone(), active.clone());
        std::thread::spawn(move || {
            handle(&stream, owner_uid, ops.as_ref(), &serial);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn refusal(message: String) -> Reply {
    Reply::Error {
        message,
        invalid: true,
    }
}

fn handle(stream: &UnixStream, owner_uid: u32, ops: &dyn HostOps, serial: &Mutex<()>) {
    let peer = match getsockopt(stream, PeerCredentials) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the peer's credentials; closed");
            return;
        }
    };
    let (pid, uid) = (peer.pid(), peer.uid());
    if uid != owner_uid {
        tracing::warn!(
            peer_pid = pid,
            peer_uid = uid,
            "refused a peer that is not the owner"
        );
        let _ = answer(
            stream,
            &refusal(format!(
                "uid {uid} is not banger's owner (uid {owner_uid}); only the owner's bangerd may ask"
            )),
        );
        return;
    }
    let request = match read_request(stream) {
        Ok(r) => r,
        Err(message) => {
            tracing::warn!(peer_pid = pid, error = %message, "refused a malformed request");
            let _ = answer(stream, &refusal(message));
            return;
        }
    };
    if let Err(message) = request.check() {
        tracing::warn!(peer_pid = pid, op = request.name(), request = ?request, error = %message, "refused");
        let _ = answer(stream, &refusal(message));
        return;
    }
    let _one_at_a_time = serial.lock().unwrap_or_else(|p| p.into_inner());
    let outcome = carry_out(stream, &request, ops);
    match &outcome {
        Ok(()) => tracing::info!(peer_pid = pid, op = request.name(), request = ?request, "done"),
        Err(e) => {
            tracing::warn!(peer_pid = pid, op = request.name(), request = ?request, error = %e, "failed")
        }
    }
    if let Err(e) = outcome {
        let _ = answer(
            stream,
            &Reply::Error {
                message: one_line(&e.to_string()),
                invalid: e.is_invalid(),
            },
        );
    }
}

/// Does what `request` asks and answers ok (with the socket for
/// `bind_dns`); an error is answered by the caller.
fn carry_out(
    stream: &UnixStream,
    request: &Request,
    ops: &dyn HostOps,
) -> Result<(), HostOpsError> {
    let result = match request {
        Request::Ping => {
            return answer(
                stream,
                &Reply::Ok {
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                    protocol: Some(PROTOCOL),
                },
            )
            .map_err(|e| HostOpsError::Failed(e.to_string()));
        }
        Request::BindDns { bridge } => {
            let fd = ops.bind_dns(&bridge.into())?;
            let line = reply_line(&Reply::done());
            return crate::fd::send_with_fd(stream, &line, std::os::fd::AsFd::as_fd(&fd))
                .map_err(|e| HostOpsError::Failed(format!("cannot pass the socket: {e}")));
        }
        Request::EnsureBridge { bridge } => ops.ensure_bridge(&bridge.into()),
        Request::CreateTap { tap, bridge } => ops.create_tap(tap, &bridge.into()),
        Request::DeleteTap { tap } => ops.delete_tap(tap),
        Request::IsolateGuest { port } => ops.isolate_guest(&port.into()),
        Request::RemoveIsolation { vm } => ops.remove_isolation(vm),
        Request::EnableNat { port } => ops.enable_nat(&port.into()),
        Request::DisableNat { vm } => ops.disable_nat(vm),
        Request::MapIds { pid } => ops.map_ids(*pid),
    };
    result?;
    answer(stream, &Reply::done()).map_err(|e| HostOpsError::Failed(e.to_string()))
}

/// One line, at most [`MAX_REQUEST`] bytes, parsed.
fn read_request(stream: &UnixStream) -> Result<Request, String> {
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream);
    (&mut reader)
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    if line.last() != Some(&b'\n') {
        if line.len() <= MAX_REQUEST {
            return Err("the request ended before its newline".into());
        }
        // Read (a bounded amount of) the rest, so the peer gets the
        // refusal instead of a reset for the bytes left unread.
        let _ = (&mut reader)
            .take(DRAIN_LIMIT)
            .read_until(b'\n', &mut Vec::new());
        return Err(format!("the request is longer than {MAX_REQUEST} bytes"));
    }
    serde_json::from_slice(&line).map_err(|e| one_line(&format!("malformed request: {e}")))
}

fn reply_line(reply: &Reply) -> Vec<u8> {
    let mut line = serde_json::to_vec(reply).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

fn answer(mut stream: &UnixStream, reply: &Reply) -> io::Result<()> {
    stream.write_all(&reply_line(reply))
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}
