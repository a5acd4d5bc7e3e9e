//! Bodies: reading the host's frames out of a request body, and a
//! response body fed by a bounded channel (its capacity is the only
//! buffer between a producer and HTTP/2's flow control).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use banger_agent_proto::frame::HEADER;
use banger_agent_proto::{Frame, FrameDecoder, FrameError, FrameKind};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use tokio::sync::mpsc;

/// How many encoded frames a response channel holds.
pub const CHANNEL_FRAMES: usize = 8;

/// A response body whose frames come from a channel; it ends when every
/// sender is dropped.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it.
    pub fn channel() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// One protocol frame's bytes, without copying the payload twice.
/// `payload` must be within `kind`'s bound (the callers cut their reads
/// to it); [`Frame::encode`] would cut it anyway.
pub fn encode(kind: FrameKind, payload: &[u8]) -> Bytes {
    let len = payload.len().min(kind.max_payload());
    let mut out = BytesMut::with_capacity(HEADER + len);
    out.put_u8(kind as u8);
    out.put_u32(len as u32);
    out.put_slice(&payload[..len]);
    out.freeze()
}

/// A frame whose payload is `value` as JSON.
pub fn encode_json(kind: FrameKind, value: &impl serde::Serialize) -> Bytes {
    Frame::json(kind, value).encode().into()
}

#[derive(Debug)]
pub enum ReadError {
    Frame(FrameError),
    Body(hyper::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Frame(e) => write!(f, "{e}"),
            Self::Body(e) => write!(f, "reading the request: {e}"),
        }
    }
}

/// The host's frames out of a request body. The decoder holds at most
/// one HTTP/2 DATA frame beyond a frame it has checked against its bound.
pub struct FrameReader {
    body: Incoming,
    decoder: FrameDecoder,
    ended: bool,
}

impl FrameReader {
    pub fn new(body: Incoming) -> Self {
        Self {
            body,
            decoder: FrameDecoder::new(),
            ended: false,
        }
    }

    /// The next frame; `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(ReadError::Frame)? {
                return Ok(Some(frame));
            }
            if self.ended {
                self.decoder.finish().map_err(ReadError::Frame)?;
                return Ok(None);
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data).map_err(ReadError::Frame)?;
                    }
                }
                Some(Err(e)) => return Err(ReadError::Body(e)),
            }
        }
    }
}
