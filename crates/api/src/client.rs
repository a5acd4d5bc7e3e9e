//! A small HTTP/1.1 client over the daemon's Unix socket (hyper), one
//! connection per request: the CLI makes few calls, and a fresh connection
//! keeps a streamed response independent of anything else.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::{ApiError, ErrorBody, ErrorCode, Event, NdjsonDecoder};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (absent, or stale from a dead daemon).
    #[error("bangerd is not running (no daemon answers on {socket})")]
    NotRunning { socket: PathBuf },
    #[error("cannot reach bangerd on {socket}: {source}")]
    Connect { socket: PathBuf, source: io::Error },
    #[error("bangerd did not answer within {0:?}")]
    Timeout(Duration),
    /// The daemon answered with an error; its message is for the user.
    #[error("{0}")]
    Api(ApiError),
    #[error("unexpected answer from bangerd: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Option<Duration>,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: None,
        }
    }

    /// Bounds connecting and waiting for response headers (not the length
    /// of a streamed body). Completion uses a short one.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        read_json(resp).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self.send(Method::POST, path, Some(body)).await?;
        read_json(resp).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.send(Method::DELETE, path, None).await?;
        read_json(resp).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self.send(Method::PATCH, path, Some(body)).await?;
        read_json(resp).await
    }

    /// GETs a body that arrives over time (a console log being written),
    /// chunk by chunk.
    pub async fn get_chunks(&self, path: &str) -> Result<Chunks, ClientError> {
        let resp = self.send(Method::GET, path, None).await?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        Ok(Chunks {
            body: resp.into_body(),
        })
    }

    /// POSTs with no body, for a body that arrives over time (a lease's
    /// heartbeats), chunk by chunk.
    pub async fn post_chunks(&self, path: &str) -> Result<Chunks, ClientError> {
        let resp = self.send(Method::POST, path, None).await?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        Ok(Chunks {
            body: resp.into_body(),
        })
    }

    /// POSTs a body that is written as it is sent (a workspace's tar
    /// stream): the chunks `body` receives, until its senders are gone. A
    /// sender that fails sends its error, which ends the request.
    pub async fn post_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    ) -> Result<T, ClientError> {
        let fut = self.send_body(
            Method::POST,
            path,
            Some(content_type),
            ChannelBody(body).boxed(),
        );
        let resp = match self.timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| ClientError::Timeout(t))?,
            None => fut.await,
        }?;
        read_json(resp).await
    }

    /// POSTs and returns the streamed progress events.
    pub async fn stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<EventStream, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self.send(Method::POST, path, Some(body)).await?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        Ok(EventStream {
            body: resp.into_body(),
            decoder: NdjsonDecoder::default(),
            pending: Default::default(),
            finished: false,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let fut = self.send_inner(method, path, body);
        match self.timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| ClientError::Timeout(t))?,
            None => fut.await,
        }
    }

    async fn send_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let json = body.is_some().then_some("application/json");
        let body = Full::new(Bytes::from(body.unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed();
        self.send_body(method, path, json, body).await
    }

    async fn send_body(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: BoxBody<Bytes, io::Error>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning {
                        socket: self.socket.clone(),
                    }
                }
                _ => ClientError::Connect {
                    socket: self.socket.clone(),
                    source: e,
                },
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        tokio::spawn(async move {
            // Errors here surface through send_request or the body.
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "bangerd");
        if let Some(kind) = content_type {
            req = req.header(CONTENT_TYPE, kind);
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(format!("request failed: {e}")))
    }
}

/// A request body of the chunks a channel receives.
struct ChannelBody(tokio::sync::mpsc::Receiver<io::Result<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(hyper::body::Frame::data)))
    }
}

async fn read_json<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T, ClientError> {
    if !resp.status().is_success() {
        return Err(error_from(resp).await);
    }
    let bytes = collect(resp).await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("bad JSON: {e}")))
}

async fn collect(resp: Response<Incoming>) -> Result<Bytes, ClientError> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(format!("reading the answer: {e}")))?
        .to_bytes())
}

async fn error_from(resp: Response<Incoming>) -> ClientError {
    let status = resp.status();
    match collect(resp).await {
        Ok(bytes) => match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ClientError::Api(body.error),
            Err(_) => ClientError::Api(ApiError::new(
                if status == StatusCode::NOT_FOUND {
                    ErrorCode::NotFound
                } else {
                    ErrorCode::Http
                },
                format!(
                    "bangerd answered {status}: {}",
                    String::from_utf8_lossy(&bytes).trim()
                ),
            )),
        },
        Err(e) => e,
    }
}

/// Progress events of a long operation, read as they arrive.
pub struct EventStream {
    body: Incoming,
    decoder: NdjsonDecoder,
    pending: std::collections::VecDeque<Event>,
    finished: bool,
}

impl EventStream {
    /// The next event; `None` after the terminal `done`/`failed` event.
    /// A stream that ends without one is reported as an error: the daemon
    /// died or dropped the connection mid-operation.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.is_terminal() {
                    self.finished = true;
                }
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        match self.decoder.push(data) {
                            Ok(events) => self.pending.extend(events),
                            Err(e) => {
                                self.finished = true;
                                return Some(Err(ClientError::Protocol(e)));
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(ClientError::Protocol(format!(
                        "progress stream broke: {e}"
                    ))));
                }
                None => {
                    self.finished = true;
                    return Some(Err(ClientError::Protocol(
                        "bangerd closed the progress stream before the operation finished \
                         (did it stop or crash? see 'banger daemon status')"
                            .into(),
                    )));
                }
            }
        }
    }
}

/// Raw chunks of a streamed body.
pub struct Chunks {
    body: Incoming,
}

impl Chunks {
    pub async fn next(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(e) => return Some(Err(ClientError::Protocol(format!("stream broke: {e}")))),
            }
        }
    }
}
