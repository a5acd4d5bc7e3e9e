//! Progress of long operations, streamed as NDJSON: one [`Event`] per line,
//! ending with exactly one `done` or `failed`. The CLI turns them into
//! progress bars; scripts can read them line by line.

use serde::{Deserialize, Serialize};

use crate::{ApiError, ErrorCode};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A new phase begins (`mmdebstrap`, `ext4`, `boot`...).
    Phase {
        name: String,
        message: String,
    },
    /// Work done within the current phase; `total` when known.
    Progress {
        phase: String,
        done: u64,
        total: Option<u64>,
    },
    /// A line worth showing the user, not an error.
    Info {
        message: String,
    },
    Warning {
        message: String,
    },
    /// The operation succeeded; `result` is its response body.
    Done {
        result: serde_json::Value,
    },
    /// The operation failed; nothing it created is left behind.
    Failed {
        error: ApiError,
    },
}

impl Event {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Event::Done { .. } | Event::Failed { .. })
    }
}

/// One NDJSON line, newline included.
pub fn encode_event(event: &Event) -> Vec<u8> {
    let mut line = serde_json::to_vec(event).unwrap_or_else(|e| {
        // Serializing our own enum cannot fail; if it ever does, say so in-band.
        serde_json::to_vec(&Event::Failed {
            error: ApiError::new(ErrorCode::Internal, format!("cannot encode event: {e}")),
        })
        .unwrap_or_default()
    });
    line.push(b'\n');
    line
}

/// Splits a byte stream into events, whatever the chunk boundaries.
#[derive(Default)]
pub struct NdjsonDecoder {
    buf: Vec<u8>,
}

impl NdjsonDecoder {
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let event = serde_json::from_slice(line).map_err(|e| {
                format!(
                    "bad progress event from bangerd ({e}): {}",
                    String::from_utf8_lossy(line)
                )
            })?;
            events.push(event);
        }
        Ok(events)
    }

    /// Bytes left without a closing newline when the stream ended.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_arbitrary_chunking() {
        let events = vec![
            Event::Phase {
                name: "ext4".into(),
                message: "writing rootfs".into(),
            },
            Event::Progress {
                phase: "ext4".into(),
                done: 5,
                total: Some(10),
            },
            Event::Warning {
                message: "ünïcode ✓".into(),
            },
            Event::Done {
                result: serde_json::json!({"name": "x"}),
            },
        ];
        let wire: Vec<u8> = events.iter().flat_map(encode_event).collect();
        for chunk in [1, 3, 7, wire.len()] {
            let mut dec = NdjsonDecoder::default();
            let mut got = Vec::new();
            for part in wire.chunks(chunk) {
                got.extend(dec.push(part).unwrap());
            }
            assert_eq!(got, events, "chunk size {chunk}");
            assert!(dec.leftover().is_empty());
        }
    }

    #[test]
    fn wire_format_is_tagged() {
        let line = encode_event(&Event::Info {
            message: "hi".into(),
        });
        assert_eq!(line, b"{\"event\":\"info\",\"message\":\"hi\"}\n");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut dec = NdjsonDecoder::default();
        assert!(dec.push(b"{not json}\n").is_err());
        let mut dec = NdjsonDecoder::default();
        assert!(dec.push(b"partial").unwrap().is_empty());
        assert_eq!(dec.leftover(), b"partial");
    }
}
