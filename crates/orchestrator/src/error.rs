//! How the orchestrator fails: an [`Error`] is a one-line message for a
//! person and an [`ErrorKind`] for the caller to act on. No HTTP here: the
//! daemon maps kinds to statuses in one function of its own.

use banger_store::StoreError;

/// What kind of failure, whoever reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request was wrong (a name, a size, a file, a config value):
    /// the message says what to change.
    Invalid,
    /// The VM, image or kernel does not exist.
    NotFound,
    /// The request clashes with the current state: the object exists, is
    /// running, is used, or is still being made.
    Conflict,
    /// The guest did not come up in time; it is left running for
    /// diagnosis (`vm logs`), and its record says why.
    BootTimeout,
    /// A privileged host operation failed (the bridge, a TAP, the rules),
    /// or its root helper is down.
    Host,
    /// Anything else that went wrong on this side: I/O, a tool, a bug.
    Internal,
}

/// An orchestrator failure: its kind and a message that says what was
/// wrong and what to do, in one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// A guest that did not come up in time (left running for diagnosis).
    pub fn boot_timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BootTimeout, message)
    }
    /// A host operation's failure that is not the request's fault.
    pub fn host(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "host operation failed");
        Self::new(ErrorKind::Host, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "internal error");
        Self::new(ErrorKind::Internal, message)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists { .. }
            | StoreError::KernelInUse { .. }
            | StoreError::IpTaken { .. } => Error::conflict(e.to_string()),
            StoreError::NotFound { .. } => Error::not_found(e.to_string()),
            other => Error::internal(other.to_string()),
        }
    }
}
