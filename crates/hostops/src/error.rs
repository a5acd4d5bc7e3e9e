//! What a host operation's failure says, in one line, with what to do.

use std::path::PathBuf;

use banger_network::NetError;

#[derive(Debug, thiserror::Error)]
pub enum HostOpsError {
    /// The operation itself failed (in this process, or in the helper,
    /// whose one-line message this is).
    #[error("{0}")]
    Net(#[from] NetError),

    /// A request the helper refuses: a name outside banger's, a bad
    /// address, or a peer that is not the owner.
    #[error("the root helper refused: {0}")]
    Refused(String),

    /// The helper carried the operation out and it failed.
    #[error("{0}")]
    Failed(String),

    #[error(
        "networking needs root (bridge, TAP devices, firewall rules): run \
         'sudo banger system install --owner \"$USER\"' so a root helper does it, \
         or run bangerd as root"
    )]
    NeedsRoot,

    #[error(
        "the root helper at {socket} does not answer ({source}): check \
         'systemctl status bangerd-root.service' (or 'banger system status')"
    )]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the root helper at {socket} broke the protocol: {reason}")]
    Protocol { socket: PathBuf, reason: String },
}

impl HostOpsError {
    /// Whether the failure is the request's (a bad bridge CIDR, a name the
    /// helper refuses), not the host's: the daemon answers 400 for these.
    pub fn is_invalid(&self) -> bool {
        match self {
            HostOpsError::Net(e) => matches!(
                e,
                NetError::InvalidName { .. }
                    | NetError::InvalidVmName { .. }
                    | NetError::BadCidr { .. }
                    | NetError::Overlap { .. }
                    | NetError::NotABridge { .. }
                    | NetError::BridgeAddressMismatch { .. }
                    | NetError::BadGuestPort { .. }
            ),
            HostOpsError::Refused(_) | HostOpsError::NeedsRoot => true,
            _ => false,
        }
    }
}
