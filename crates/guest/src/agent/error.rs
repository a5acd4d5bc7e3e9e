use std::io;

use banger_agent_proto::FrameError;
use banger_agent_proto::greeting::GreetingError;

use super::vsock::VsockError;

/// What can go wrong talking to a guest's agent. Whatever the guest sent
/// is quoted only after it was bounded.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the guest agent at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot reach the guest agent on {channel}: {source}")]
    Vsock {
        channel: String,
        #[source]
        source: VsockError,
    },
    #[error("the guest agent did not answer within {0} s")]
    Timeout(u64),
    #[error("the guest agent's greeting failed: {0}")]
    Greeting(#[from] GreetingError),
    #[error("the channel to the guest agent failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the guest agent refused: {message}")]
    Refused { status: u16, message: String },
    #[error("the guest agent sent malformed data ({0}); the channel was closed")]
    Protocol(String),
    #[error("the guest agent went away before the command ended")]
    Gone,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<FrameError> for AgentError {
    fn from(e: FrameError) -> Self {
        Self::Protocol(e.to_string())
    }
}

impl AgentError {
    /// Whether the agent is not there at all (no socket, nothing listening
    /// on the vsock port, nobody greeting, an old guest): the caller may
    /// wait or fall back to ssh. Errors of a command that ran are not.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Vsock { .. } | Self::Timeout(_) | Self::Greeting(_)
        )
    }
}
