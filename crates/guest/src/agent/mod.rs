//! The host's client of the guest agent (crates/agent-proto has the
//! protocol): one HTTP/2 connection per VM over the agent's Unix socket
//! (QEMU's virtio-serial chardev, or Firecracker's vsock socket after
//! `CONNECT`), carrying every exec, signal and copy at once.
//!
//! Everything the guest sends is untrusted: replies are read with a
//! bound, stream frames are checked by their header before their payload
//! is buffered, and a malformed reply closes the connection.

mod error;
mod exec;
mod proxy;
mod vsock;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_agent_proto::{
    AgentChannel, ClockRequest, ErrorReply, Frame, FrameDecoder, FrameKind, HostnameRequest,
    IdentityReply, IdentityRequest, MAX_JSON, Ready, ResizeRequest, SignalRequest, TarDone,
    TarInSpec, TarOutRequest, WindowSize, greeting, limits, route,
};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use error::AgentError;
pub use exec::{Exec, ExecEvent, StdinSender, new_exec_id};
pub use proxy::{AgentProxy, serve as serve_proxy};
pub use vsock::VsockError;

/// The body of a request: a whole JSON message, or frames as they come.
type Body = BoxBody<Bytes, BodyError>;
/// What a request body may fail with (a proxied client's body).
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// How often the connection is pinged, and how long an answer may take
/// (generous: a loaded TCG guest is slow, and a missed answer fails every
/// command on the connection).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Frames of a request body in flight; a few, so a stream's sender waits
/// for HTTP/2's window instead of queueing.
const BODY_QUEUE: usize = 4;

/// A connection to one guest's agent. Cheap to clone; every clone shares
/// the connection.
#[derive(Clone)]
pub struct AgentClient {
    send: SendRequest<Body>,
    conn: Arc<tokio::task::JoinHandle<()>>,
    channel: AgentChannel,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("channel", &self.channel)
            .finish()
    }
}

impl AgentClient {
    /// Connects to the agent's socket at `path`, greets it and opens the
    /// HTTP/2 connection, all within `timeout`. An agent that is not
    /// listening yet (the guest still booting) is an error: callers poll.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, AgentError> {
        Self::connect_channel(&AgentChannel::Serial(path.to_path_buf()), timeout).await
    }

    /// Connects to the agent through `channel` (for Firecracker's vsock,
    /// asking for the agent's port first), greets it and opens the HTTP/2
    /// connection, all within `timeout`.
    pub async fn connect_channel(
        channel: &AgentChannel,
        timeout: Duration,
    ) -> Result<Self, AgentError> {
        let deadline = Instant::now() + timeout;
        let owned = channel.clone();
        let stream = tokio::task::spawn_blocking(move || greet(&owned, deadline, timeout))
            .await
            .map_err(|e| AgentError::Io(std::io::Error::other(e)))??;
        stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(stream)?;
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .initial_stream_window_size(limits::STREAM_WINDOW)
            .initial_connection_window_size(limits::CONNECTION_WINDOW)
            .max_frame_size(limits::MAX_FRAME)
            .max_header_list_size(limits::MAX_HEADER_LIST)
            .max_send_buf_size(limits::MAX_SEND_BUF)
            .max_concurrent_reset_streams(limits::MAX_STREAMS as usize)
            // An agent that dies leaves QEMU's end of the socket open, and
            // nothing else would ever end the connection: pings find out,
            // so its commands fail and the next client reconnects to the
            // agent that was started again.
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let handshake = builder.handshake::<_, Body>(TokioIo::new(stream));
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (send, conn) = tokio::time::timeout(remaining, handshake)
            .await
            .map_err(|_| AgentError::Timeout(timeout.as_secs()))??;
        let shown = channel.to_string();
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(agent = %shown, error = %e, "the agent's connection ended");
            }
        });
        Ok(Self {
            send,
            conn: Arc::new(conn),
            channel: channel.clone(),
        })
    }

    /// Whether the connection is still usable.
    pub fn is_open(&self) -> bool {
        !self.send.is_closed() && !self.conn.is_finished()
    }

    /// Closes the connection (after malformed data from the guest).
    fn poison(&self, why: &str) {
        tracing::warn!(agent = %self.channel, why, "closing the channel to the guest agent");
        self.conn.abort();
    }

    pub(crate) async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Body,
    ) -> Result<http::Response<Incoming>, AgentError> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://agent{path}"))
            .body(body)
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let mut send = self.send.clone();
        send.ready().await?;
        Ok(send.send_request(request).await?)
    }

    /// A small request with a JSON body (or none), and its JSON reply (or
    /// nothing, for 204).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<Option<T>, AgentError> {
        let body = match body {
            Some(b) => json_body(b),
            None => empty_body(),
        };
        let response = self.request(method, path, body).await?;
        let status = response.status();
        let bytes = self.read_json_body(response.into_body()).await?;
        if !status.is_success() {
            return Err(refusal(status.as_u16(), &bytes));
        }
        if status == http::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            let e = AgentError::Protocol(format!("a reply to {path}: {e}"));
            self.poison(&e.to_string());
            e
        })
    }

    async fn read_json_body(&self, body: Incoming) -> Result<Bytes, AgentError> {
        match Limited::new(body, MAX_JSON).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) => match e.downcast::<hyper::Error>() {
                Ok(e) => Err(AgentError::Http(*e)),
                Err(e) => {
                    let e = AgentError::Protocol(format!("a reply over {MAX_JSON} bytes ({e})"));
                    self.poison(&e.to_string());
                    Err(e)
                }
            },
        }
    }

    /// How far the guest has come.
    pub async fn ready(&self) -> Result<Ready, AgentError> {
        self.call::<Ready>(http::Method::GET, route::READY, None::<&()>)
            .await?
            .ok_or_else(|| AgentError::Protocol("an empty readiness reply".into()))
    }

    pub async fn signal(&self, id: &str, signal: i32) -> Result<(), AgentError> {
        let req = SignalRequest {
            id: id.into(),
            signal,
        };
        self.post(route::SIGNAL, &req).await
    }

    pub async fn resize(&self, id: &str, size: WindowSize) -> Result<(), AgentError> {
        let req = ResizeRequest {
            id: id.into(),
            size,
        };
        self.post(route::RESIZE, &req).await
    }

    pub async fn set_hostname(&self, name: &str) -> Result<(), AgentError> {
        let req = HostnameRequest { name: name.into() };
        self.post(route::HOSTNAME, &req).await
    }

    /// Sets the guest's clock to the host's.
    pub async fn set_clock(&self) -> Result<(), AgentError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let req = ClockRequest {
            unix_nanos: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
        };
        self.post(route::CLOCK, &req).await
    }

    /// Gives a guest resumed from a template its own identity (see
    /// [`IdentityRequest`]). A malformed request is refused whole
    /// ([`AgentError::Refused`], status 400, nothing applied); otherwise
    /// the reply says which parts were applied and why any failed, and
    /// the caller decides what a failed part costs. An agent older than
    /// the route refuses it with status 404.
    pub async fn set_identity(&self, req: &IdentityRequest) -> Result<IdentityReply, AgentError> {
        self.call::<IdentityReply>(http::Method::POST, route::IDENTITY, Some(req))
            .await?
            .ok_or_else(|| AgentError::Protocol("an empty reply to an identity".into()))
    }

    /// A request whose answer is only its status.
    async fn post(&self, path: &str, req: &impl serde::Serialize) -> Result<(), AgentError> {
        self.call::<()>(http::Method::POST, path, Some(req))
            .await
            .map(drop)
    }

    /// Opens a streamed request whose body is frames sent through the
    /// returned sender.
    async fn open_stream(
        &self,
        path: &str,
        first: Frame,
    ) -> Result<(mpsc::Sender<Bytes>, http::Response<Incoming>), AgentError> {
        let (tx, body) = frame_body(first).await?;
        let response = self.request(http::Method::POST, path, body).await?;
        Ok((tx, response))
    }

    /// Unpacks the tar stream read from `tar` into `spec.dir` in the guest.
    pub async fn tar_in(
        &self,
        spec: &TarInSpec,
        mut tar: impl AsyncRead + Unpin,
    ) -> Result<TarDone, AgentError> {
        let (tx, body) = frame_body(Frame::json(FrameKind::Spec, spec)).await?;
        // The agent answers once it has unpacked everything: the archive
        // is sent while the answer is awaited.
        let send = async move {
            let mut buf = vec![0u8; banger_agent_proto::MAX_PAYLOAD];
            loop {
                let n = tar.read(&mut buf).await?;
                let frame = if n == 0 {
                    Frame::new(FrameKind::End, Vec::new())
                } else {
                    Frame::new(FrameKind::Data, buf[..n].to_vec())
                };
                if tx.send(Bytes::from(frame.encode())).await.is_err() {
                    // The agent answered early (an error): its reply says why.
                    return Ok::<(), AgentError>(());
                }
                if n == 0 {
                    return Ok(());
                }
            }
        };
        let reply = async {
            let response = self
                .request(http::Method::POST, route::TAR_IN, body)
                .await?;
            let status = response.status();
            let bytes = self.read_json_body(response.into_body()).await?;
            Ok::<_, AgentError>((status, bytes))
        };
        let (sent, reply) = tokio::join!(send, reply);
        let (status, reply) = reply?;
        if !status.is_success() {
            return Err(refusal(status.as_u16(), &reply));
        }
        sent?;
        serde_json::from_slice(&reply).map_err(|e| AgentError::Protocol(e.to_string()))
    }

    /// Writes a tar stream of `path` in the guest to `out`.
    pub async fn tar_out(
        &self,
        path: &str,
        mut out: impl AsyncWrite + Unpin,
    ) -> Result<TarDone, AgentError> {
        let req = TarOutRequest { path: path.into() };
        let response = self
            .request(http::Method::POST, route::TAR_OUT, json_body(&req))
            .await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = self.read_json_body(body).await?;
            return Err(refusal(status.as_u16(), &bytes));
        }
        let mut decoder = FrameDecoder::new();
        loop {
            let Some(chunk) = body.frame().await else {
                decoder.finish()?;
                return Err(AgentError::Gone);
            };
            let Ok(data) = chunk?.into_data() else {
                continue;
            };
            if let Err(e) = decoder.push(&data) {
                self.poison(&e.to_string());
                return Err(e.into());
            }
            while let Some(frame) = decoder.next_frame()? {
                match frame.kind {
                    FrameKind::Data => out.write_all(&frame.payload).await?,
                    FrameKind::End => {
                        out.flush().await?;
                        return frame.parse().map_err(Into::into);
                    }
                    FrameKind::Error => {
                        return Err(AgentError::Refused {
                            status: 500,
                            message: one_line(&frame.payload),
                        });
                    }
                    other => {
                        let e = AgentError::Protocol(format!("a {other:?} frame in a tar stream"));
                        self.poison(&e.to_string());
                        return Err(e);
                    }
                }
            }
        }
    }
}

use futures_util::StreamExt;

/// Connects and greets, blocking, before `deadline`; `timeout` is only
/// for the message.
fn greet(
    channel: &AgentChannel,
    deadline: Instant,
    timeout: Duration,
) -> Result<StdUnixStream, AgentError> {
    let mut stream =
        StdUnixStream::connect(channel.socket()).map_err(|source| AgentError::Connect {
            path: channel.to_string(),
            source,
        })?;
    let mut timed = TimedStream {
        stream: &mut stream,
        deadline,
    };
    let timed_out = || AgentError::Timeout(timeout.as_secs());
    if let AgentChannel::Vsock { port, .. } = channel {
        match vsock::request_port(&mut timed, *port) {
            Ok(_) => {}
            Err(VsockError::Io(e)) if is_timeout(&e) => return Err(timed_out()),
            Err(source) => {
                return Err(AgentError::Vsock {
                    channel: channel.to_string(),
                    source,
                });
            }
        }
    }
    let nonce: u64 = rand::random();
    match greeting::host_greet(&mut timed, nonce) {
        Ok(()) => {}
        Err(greeting::GreetingError::Io(e)) if is_timeout(&e) => return Err(timed_out()),
        Err(e) => return Err(e.into()),
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(stream)
}

/// A read or write that ran into the stream's timeout.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The stream, as `Read + Write` for the exchanges before HTTP/2, which
/// read a byte at a time: each read and write may take only what is left
/// until the deadline, so a peer that trickles bytes cannot stretch it.
struct TimedStream<'a> {
    stream: &'a mut StdUnixStream,
    deadline: Instant,
}

impl TimedStream<'_> {
    fn time_left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl Read for TimedStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.time_left()?))?;
        self.stream.read(buf)
    }
}

impl Write for TimedStream<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.time_left()?))?;
        self.stream.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A request body of frames: `first`, then what is sent through the
/// returned sender, a few frames queued at most.
async fn frame_body(first: Frame) -> Result<(mpsc::Sender<Bytes>, Body), AgentError> {
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_QUEUE);
    tx.send(Bytes::from(first.encode()))
        .await
        .map_err(|_| AgentError::Gone)?;
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, BodyError>(hyper::body::Frame::data(b)));
    Ok((tx, BodyExt::boxed(StreamBody::new(stream))))
}

fn json_body(value: &impl serde::Serialize) -> Body {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    BodyExt::boxed(Full::new(Bytes::from(bytes)).map_err(|never| match never {}))
}

fn empty_body() -> Body {
    BodyExt::boxed(Full::new(Bytes::new()).map_err(|never| match never {}))
}

/// A non-2xx reply: its `ErrorReply` line, bounded, or the status.
fn refusal(status: u16, body: &[u8]) -> AgentError {
    let message = serde_json::from_slice::<ErrorReply>(body)
        .map(|r| one_line(r.error.as_bytes()))
        .unwrap_or_else(|_| format!("HTTP status {status}"));
    AgentError::Refused { status, message }
}

/// At most 300 printable characters of a message from the guest, on one
/// line, control characters shown as `?`.
fn one_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(300)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
