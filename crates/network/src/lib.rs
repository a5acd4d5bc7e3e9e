//! Host networking for VMs (DESIGN.md, "network"): the bridge, one TAP per
//! VM attached to it, picking guest addresses from the bridge's subnet (the
//! leases themselves are persisted by the store), the rules that isolate
//! each guest on the bridge, and optional NAT, all tagged `banger:<vm>` as
//! banger's own. See docs/networking.md.
//!
//! It must not touch anything it did not make: an interface that is not
//! its bridge or TAP, a firewall rule without its tag, another nft table.
//! It never passes input through a shell (netlink, or host tools run with
//! an argument vector), and it holds no state: callers journal what it
//! creates. Every call blocks (netlink, host tools): the daemon calls it
//! from `spawn_blocking`. The `.vm` zone's logic is here ([`dns`]: one query
//! in, one answer out); the daemon owns its socket and record table.
#![deny(unsafe_code)]

mod bridge;
mod command;
pub mod dns;
mod error;
mod isolation;
mod naming;
mod nat;
mod nft;
mod pool;
mod rtnl;
mod tap;

pub use bridge::{
    BridgeSpec, HostNet, Origin, check_bridge, ensure_bridge, find_overlaps, validate_cidr,
};
pub use error::NetError;
pub use isolation::{
    GUEST_TCP_PORTS, GUEST_UDP_PORTS, GuestPort, LINK_LOCAL, guest_isolated, isolate_guest,
    remove_isolation,
};
pub use naming::{IFNAME_MAX, TAP_PREFIX, mac_for, tap_name, validate_ifname};
pub use nat::{
    NFT_CHAIN, NatBackend, disable_nat, enable_nat, enable_nat_with, nat_enabled, nat_tag,
};
pub use nft::NFT_TABLE;
pub use pool::next_free_ip;
pub use tap::{create_tap, create_tap_owned, delete_tap, tap_exists};

/// Re-exported so callers name the bridge CIDR with the same type.
pub use ipnet::Ipv4Net;
