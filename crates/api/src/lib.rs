//! The contract between `banger` and `bangerd`: versioned paths (`/v1/…`),
//! typed requests and responses, the error envelope, the NDJSON progress
//! events long operations stream, and the client that speaks it over the
//! daemon's Unix socket.
//!
//! Types only and a transport: no daemon logic and no rendering live here.
#![deny(unsafe_code)]

mod client;
mod events;
mod types;

pub use client::{Chunks, Client, ClientError, EventStream};
pub use events::{Event, NdjsonDecoder, encode_event};
pub use types::*;

/// The path prefix of this API version.
pub const API_PREFIX: &str = "/v1";
/// Content type of streamed progress: one JSON [`Event`] per line.
pub const NDJSON: &str = "application/x-ndjson";
