//! The one error type of this crate: every message is one line for an
//! operator and says what to do next.

use std::io;

/// What went wrong with the host's network, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("interface name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error(
        "VM name {name:?} cannot tag a firewall rule: use 1-100 letters, digits, '-', '_' or '.'"
    )]
    InvalidVmName { name: String },

    #[error(
        "bridge CIDR {cidr} is unusable: {reason}; set bridge_cidr to a host address with its prefix, e.g. 172.16.0.1/24"
    )]
    BadCidr { cidr: String, reason: &'static str },

    #[error(
        "bridge CIDR {cidr} overlaps {conflicts}: set bridge_cidr to a range no other interface uses"
    )]
    Overlap { cidr: String, conflicts: String },

    #[error(
        "interface {name} exists but is a {kind}, not a bridge: set bridge_name to another name or remove it (ip link del {name})"
    )]
    NotABridge { name: String, kind: String },

    #[error(
        "bridge {name} carries {found}, not {want}: set bridge_cidr to {found} or remove the bridge (ip link del {name})"
    )]
    BridgeAddressMismatch {
        name: String,
        found: String,
        want: String,
    },

    #[error("bridge {name} does not exist: ensure_bridge must create it before TAPs attach to it")]
    BridgeMissing { name: String },

    #[error(
        "interface {name} exists but is a {kind}, not a TAP: banger leaves it alone; remove it by hand (ip link del {name}) if it is stale"
    )]
    NotATap { name: String, kind: String },

    #[error("{action}: {source}{hint}")]
    Netlink {
        action: String,
        #[source]
        source: io::Error,
        /// What to do, for the errors that have an obvious remedy.
        hint: &'static str,
    },

    #[error("{tool} not found on PATH or in /usr/sbin, /sbin: install {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    #[error(
        "neither nft nor iptables found: install nftables (apt-get install nftables) to use --nat"
    )]
    NoNatTool,

    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error(
        "unexpected output from {command}: {detail}; please report this with the output of {command}"
    )]
    Parse { command: String, detail: String },

    #[error("cannot isolate VM {vm}: {reason}")]
    BadGuestPort { vm: String, reason: String },

    #[error(
        "nft not found on PATH or in /usr/sbin, /sbin: banger isolates guests on the bridge with nftables and starts no VM without it; install nftables (apt-get install nftables)"
    )]
    NoIsolationTool,

    #[error("isolating VM {vm} on the bridge: {source}")]
    Isolation {
        vm: String,
        #[source]
        source: Box<NetError>,
    },

    #[error(
        "enabling IPv4 forwarding (/proc/sys/net/ipv4/ip_forward): {source}; run as root or set net.ipv4.ip_forward=1 yourself"
    )]
    Forwarding {
        #[source]
        source: io::Error,
    },
}

impl NetError {
    pub(crate) fn netlink(action: impl Into<String>, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::PermissionDenied => {
                ": banger needs root (or CAP_NET_ADMIN) for host networking"
            }
            _ => "",
        };
        NetError::Netlink {
            action: action.into(),
            source,
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_say_what_to_do() {
        let e = NetError::netlink("creating bridge banger0", io::Error::from_raw_os_error(1));
        assert_eq!(
            e.to_string(),
            "creating bridge banger0: Operation not permitted (os error 1): banger needs root (or CAP_NET_ADMIN) for host networking"
        );
        let e = NetError::netlink("deleting TAP x", io::Error::from_raw_os_error(16));
        assert_eq!(
            e.to_string(),
            "deleting TAP x: Device or resource busy (os error 16)"
        );
    }
}
