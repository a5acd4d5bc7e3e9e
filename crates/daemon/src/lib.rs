//! `bangerd`: serves the versioned HTTP/JSON API on a Unix socket, over
//! the orchestrator (`banger_orchestrator`), which owns the VM and image
//! logic and the store. Handlers are thin: they decode a request, call the
//! orchestrator, and encode the answer or stream its progress; the
//! orchestrator's error kinds become HTTP statuses in one function
//! (`error::status_of`). The daemon also owns its state directories'
//! checks, the one-daemon lock, its log, and the sockets of the `.vm` DNS
//! server and the guests' clock, and the web UI (`web`), which serves
//! the same API behind a token.
//!
//! It must not make VM or image decisions of its own, nor branch on an
//! error's message or code: what an operation does is the orchestrator's.
//!
//! One daemon per state directory, enforced by a lock file. Everything here
//! is library code so it can be tested without the binary; `main.rs` only
//! parses arguments and reports a fatal error.
#![deny(unsafe_code)]

pub mod agent_proxy;
mod clock;
pub mod dirs;
pub mod dns;
mod error;
mod lock;
mod logging;
mod progress;
mod routes;
mod server;
mod web;

pub use lock::{DaemonLock, LockError};
pub use logging::{LogError, init_logging};
pub use server::{Daemon, StartError};
