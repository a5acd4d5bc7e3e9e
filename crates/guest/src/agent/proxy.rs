//! The door to a VM's agent for its clients. QEMU's chardev socket
//! serves one connection at a time, so the proxy holds that one and lets
//! any number of clients (`banger`, and bangerd's own boot wait) in
//! through a socket of its own, 0600 in the VM's runtime dir, speaking
//! the same protocol: each client greets it as it would the agent, and
//! each of its HTTP/2 requests is passed to the agent's connection,
//! bodies streaming both ways under both connections' flow control.
//!
//! bangerd runs it as a process of its own per VM ([`serve`]), so that
//! commands in flight outlive a daemon restart as ssh sessions do; it
//! ends with the VM's hypervisor.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use banger_agent_proto::{AgentChannel, ErrorReply, greeting, limits};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixListener;
use tokio::sync::Mutex;

use super::{AgentClient, BodyError};

/// How long a client may take to greet.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the proxy tries to reach the agent for a client.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`serve`] asks whether the VM still runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A running proxy; dropping it stops accepting (and removes nothing:
/// the runtime dir goes with the VM).
pub struct AgentProxy {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgentProxy {
    /// Listens on `listen` (replacing a stale socket) and reaches the
    /// agent at `agent` when the first client comes, again whenever the
    /// connection was lost.
    pub fn start(listen: &Path, agent: AgentChannel) -> io::Result<Self> {
        let listener = bind(listen)?;
        let upstream = Arc::new(Upstream {
            channel: agent,
            client: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, upstream));
        Ok(Self { task })
    }
}

/// The proxy as a process: serves `listen` for the agent at `agent`
/// until `alive` says the VM is gone or SIGTERM comes, then removes its
/// socket, unless another proxy (of a later boot) has replaced it.
pub async fn serve(listen: &Path, agent: AgentChannel, alive: impl Fn() -> bool) -> io::Result<()> {
    let proxy = AgentProxy::start(listen, agent)?;
    let ours = std::fs::symlink_metadata(listen).map(|m| (m.dev(), m.ino()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => if !alive() {
                tracing::info!("the VM's hypervisor is gone: the proxy ends");
                break;
            },
            _ = term.recv() => {
                tracing::info!("SIGTERM: the proxy ends");
                break;
            }
        }
    }
    drop(proxy);
    if std::fs::symlink_metadata(listen).is_ok_and(|m| (m.dev(), m.ino()) == ours) {
        let _ = std::fs::remove_file(listen);
    }
    Ok(())
}

/// Binds `listen` (replacing a stale socket), 0600.
fn bind(listen: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(listen) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(listen)?;
    std::fs::set_permissions(listen, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn accept_loop(listener: UnixListener, upstream: Arc<Upstream>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_client(stream, upstream).await {
                tracing::debug!(error = %e, "an agent client's connection ended");
            }
        });
    }
}

struct Upstream {
    channel: AgentChannel,
    client: Mutex<Option<AgentClient>>,
}

impl Upstream {
    async fn client(&self) -> Result<AgentClient, super::AgentError> {
        let mut held = self.client.lock().await;
        if let Some(c) = held.as_ref().filter(|c| c.is_open()) {
            return Ok(c.clone());
        }
        let c = AgentClient::connect_channel(&self.channel, UPSTREAM_TIMEOUT).await?;
        *held = Some(c.clone());
        Ok(c)
    }
}

type Reply = http::Response<BoxBody<Bytes, BodyError>>;

async fn serve_client(stream: tokio::net::UnixStream, upstream: Arc<Upstream>) -> io::Result<()> {
    // A client is let in only while the agent answers, so that one that
    // does not (an image without it, a guest stuck) is told at once, by
    // the closed connection, and can use ssh instead.
    if let Err(e) = upstream.client().await {
        tracing::info!(error = %e, "the guest agent does not answer: turning a client away");
        return Ok(());
    }
    // The greeting is a few blocking bytes each way.
    let std_stream = stream.into_std()?;
    std_stream.set_nonblocking(false)?;
    std_stream.set_read_timeout(Some(GREETING_TIMEOUT))?;
    let std_stream = tokio::task::spawn_blocking(move || {
        let mut s = std_stream;
        greeting::agent_answer(&mut s).map_err(io::Error::other)?;
        Ok::<_, io::Error>(s)
    })
    .await
    .map_err(io::Error::other)??;
    std_stream.set_read_timeout(None)?;
    std_stream.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(std_stream)?;
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let upstream = upstream.clone();
        async move { Ok::<_, std::convert::Infallible>(forward(&upstream, req).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(limits::STREAM_WINDOW)
        .initial_connection_window_size(limits::CONNECTION_WINDOW)
        .max_frame_size(limits::MAX_FRAME)
        .max_header_list_size(limits::MAX_HEADER_LIST)
        .max_concurrent_streams(limits::MAX_STREAMS)
        .max_send_buf_size(limits::MAX_SEND_BUF)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(io::Error::other)
}

async fn forward(upstream: &Upstream, req: http::Request<Incoming>) -> Reply {
    let client = match upstream.client().await {
        Ok(c) => c,
        Err(e) => return error_reply(502, &e.to_string()),
    };
    let (parts, body) = req.into_parts();
    let body = BodyExt::boxed(body.map_err(|e| Box::new(e) as BodyError));
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    match client.request(parts.method.clone(), path, body).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            http::Response::from_parts(
                parts,
                BodyExt::boxed(body.map_err(|e| Box::new(e) as BodyError)),
            )
        }
        Err(e) => error_reply(502, &e.to_string()),
    }
}

fn error_reply(status: u16, message: &str) -> Reply {
    let body = serde_json::to_vec(&ErrorReply {
        error: message.to_owned(),
    })
    .unwrap_or_default();
    http::Response::builder()
        .status(status)
        .body(BodyExt::boxed(
            Full::new(Bytes::from(body)).map_err(|never| match never {}),
        ))
        .unwrap_or_else(|_| {
            http::Response::new(BodyExt::boxed(
                Full::new(Bytes::new()).map_err(|never| match never {}),
            ))
        })
}
