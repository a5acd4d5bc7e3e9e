//! Frames inside a stream's HTTP/2 body: `[kind: u8][len: u32 BE][payload]`.
//! HTTP/2 cuts a body into DATA frames wherever it likes, so the decoder
//! accumulates; it never holds more than one frame's header and a payload
//! it has checked against the bound of that frame's kind.

use thiserror::Error;

use crate::{MAX_JSON, MAX_PAYLOAD};

/// Header bytes before each payload.
pub const HEADER: usize = 5;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// The JSON that opens a stream (an [`crate::ExecSpec`], a
    /// [`crate::TarInSpec`]).
    Spec = 1,
    /// Host to guest: bytes for the command's stdin.
    Stdin = 2,
    /// Host to guest: stdin is closed.
    StdinEof = 3,
    /// Guest to host: bytes the command wrote to stdout (or its terminal).
    Stdout = 4,
    /// Guest to host: bytes the command wrote to stderr.
    Stderr = 5,
    /// Guest to host: [`crate::ExitInfo`], the last frame of an exec.
    Exit = 6,
    /// Either way: a one-line error (UTF-8), the last frame of a stream.
    Error = 7,
    /// Bytes of a tar stream.
    Data = 8,
    /// The tar stream is complete (guest to host: with a
    /// [`crate::TarDone`]).
    End = 9,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Spec,
            2 => Self::Stdin,
            3 => Self::StdinEof,
            4 => Self::Stdout,
            5 => Self::Stderr,
            6 => Self::Exit,
            7 => Self::Error,
            8 => Self::Data,
            9 => Self::End,
            _ => return None,
        })
    }

    /// The largest payload this kind may carry.
    pub fn max_payload(self) -> usize {
        match self {
            Self::Spec | Self::Exit | Self::Error | Self::End => MAX_JSON,
            Self::StdinEof => 0,
            Self::Stdin | Self::Stdout | Self::Stderr | Self::Data => MAX_PAYLOAD,
        }
    }
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: FrameKind, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            payload: payload.into(),
        }
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json(kind: FrameKind, value: &impl serde::Serialize) -> Self {
        // Serializing our own plain structs cannot fail.
        Self::new(kind, serde_json::to_vec(value).unwrap_or_default())
    }

    /// The payload as JSON of type `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|e| FrameError::Json(e.to_string()))
    }

    /// The frame's bytes. A payload over its kind's bound is the
    /// caller's bug; it is cut to the bound rather than sent.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.payload.len().min(self.kind.max_payload());
        let mut out = Vec::with_capacity(HEADER + len);
        out.push(self.kind as u8);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&self.payload[..len]);
        out
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("a {kind:?} frame of {len} bytes is over its bound of {max}")]
    TooLarge {
        kind: FrameKind,
        len: usize,
        max: usize,
    },
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("malformed message: {0}")]
    Json(String),
}

/// Turns body chunks into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; then call [`Self::next_frame`] until it gives `None`.
    /// The header is checked as soon as it is complete, so an oversized
    /// frame is refused before its payload is buffered.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.buf.extend_from_slice(bytes);
        self.check_header()
    }

    fn check_header(&self) -> Result<(), FrameError> {
        if self.buf.len() < HEADER {
            return Ok(());
        }
        let kind = FrameKind::from_byte(self.buf[0]).ok_or(FrameError::UnknownKind(self.buf[0]))?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > kind.max_payload() {
            return Err(FrameError::TooLarge {
                kind,
                len,
                max: kind.max_payload(),
            });
        }
        Ok(())
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.check_header()?;
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(self.buf[0]).ok_or(FrameError::UnknownKind(self.buf[0]))?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        self.check_header()?;
        Ok(Some(Frame { kind, payload }))
    }

    /// At the end of the body: an error if a frame was cut short.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_chunking() {
        let frames = [
            Frame::new(FrameKind::Spec, b"{\"a\":1}".to_vec()),
            Frame::new(FrameKind::Stdin, vec![7u8; 1000]),
            Frame::new(FrameKind::StdinEof, vec![]),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for chunk in [1, 2, 5, 7, 999, bytes.len()] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for c in bytes.chunks(chunk) {
                d.push(c).unwrap();
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            d.finish().unwrap();
            assert_eq!(got, frames, "chunks of {chunk}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header() {
        let mut d = FrameDecoder::new();
        let mut header = vec![FrameKind::Stdout as u8];
        header.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        assert!(matches!(
            d.push(&header),
            Err(FrameError::TooLarge { len, .. }) if len == MAX_PAYLOAD + 1
        ));
        let mut d = FrameDecoder::new();
        assert_eq!(
            d.push(&[FrameKind::StdinEof as u8, 0, 0, 0, 1]),
            Err(FrameError::TooLarge {
                kind: FrameKind::StdinEof,
                len: 1,
                max: 0
            })
        );
    }

    #[test]
    fn unknown_kinds_and_cut_frames_are_errors() {
        let mut d = FrameDecoder::new();
        assert_eq!(d.push(&[0, 0, 0, 0, 0]), Err(FrameError::UnknownKind(0)));
        let mut d = FrameDecoder::new();
        d.push(&[FrameKind::Stdout as u8, 0, 0, 0, 4, 1]).unwrap();
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }
}
