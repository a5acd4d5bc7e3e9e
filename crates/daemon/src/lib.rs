//! `bangerd`: owns the state store and serves the versioned HTTP/JSON API
//! on a Unix socket. Handlers are thin: they decode a request, call the
//! orchestrator, and encode the answer or stream its progress.
//!
//! One daemon per state directory, enforced by a lock file. Everything here
//! is library code so it can be tested without the binary; `main.rs` only
//! parses arguments and reports a fatal error.
#![deny(unsafe_code)]

mod clock;
pub mod dirs;
pub mod dns;
mod error;
mod images;
mod lock;
mod logging;
mod progress;
mod routes;
mod server;
mod vms;

pub use lock::{DaemonLock, LockError};
pub use logging::{LogError, init_logging};
pub use server::{Daemon, StartError};
