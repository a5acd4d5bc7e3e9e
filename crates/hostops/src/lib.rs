//! The host operations that need privilege (DESIGN.md, "HostOps"): the
//! bridge, TAP devices owned by banger's owner, the isolation and NAT
//! rules, IPv4 forwarding, and a socket on the DNS port. Everything else
//! bangerd does runs as its owner.
//!
//! One trait, [`HostOps`], three ways to carry it out:
//! - [`Local`]: in this process, for the dev-mode daemon that runs as root;
//! - [`HelperClient`]: through `bangerd --root-helper`, the root helper of
//!   the system install, which [`serve`] implements: it takes one typed
//!   [`Request`] per connection, only from the owner's uid (`SO_PEERCRED`),
//!   checks every name against banger's own prefixes, logs it, and answers
//!   one line;
//! - a recording fake, in the callers' tests.
//!
//! It must not grow operations that take paths, commands or names that
//! are not banger's: the helper is what stands between the owner's account
//! and root.
#![deny(unsafe_code)]

mod client;
mod error;
mod fd;
mod local;
mod ops;
mod server;
mod userns;

use std::os::fd::OwnedFd;

pub use banger_network::{BridgeSpec, GuestPort};
pub use client::HelperClient;
pub use error::HostOpsError;
pub use local::Local;
pub use ops::{BRIDGE_PREFIX, DNS_PORT, PROTOCOL, Reply, Request};
pub use server::{HelperConfig, ServeError, serve, serve_on};
pub use userns::Owner;

/// The privileged operations the daemon needs. Every call blocks (netlink,
/// host tools, a socket round trip): call it from `spawn_blocking`.
pub trait HostOps: Send + Sync {
    /// Creates the bridge if absent, or checks the one that is there.
    fn ensure_bridge(&self, bridge: &BridgeSpec) -> Result<(), HostOpsError>;
    /// Creates TAP `tap` (one of banger's names), which the owner may open,
    /// and attaches it to the bridge.
    fn create_tap(&self, tap: &str, bridge: &BridgeSpec) -> Result<(), HostOpsError>;
    /// Deletes one of banger's TAPs; absent is fine.
    fn delete_tap(&self, tap: &str) -> Result<(), HostOpsError>;
    /// Writes the guest's isolation rules (idempotent).
    fn isolate_guest(&self, port: &GuestPort) -> Result<(), HostOpsError>;
    /// Removes VM `vm`'s isolation rules; absent is fine.
    fn remove_isolation(&self, vm: &str) -> Result<(), HostOpsError>;
    /// Lets the guest reach beyond the host (and enables forwarding).
    fn enable_nat(&self, port: &GuestPort) -> Result<(), HostOpsError>;
    /// Removes VM `vm`'s NAT rules; absent is fine.
    fn disable_nat(&self, vm: &str) -> Result<(), HostOpsError>;
    /// A UDP socket bound to the bridge's address on the DNS port, which
    /// the owner cannot bind (it is below 1024). `IP_FREEBIND`: the bridge
    /// may not exist yet.
    fn bind_dns(&self, bridge: &BridgeSpec) -> Result<OwnedFd, HostOpsError>;
    /// Writes the id maps of the owner's process `pid`, which has just made
    /// a user namespace for an image build and waits: 0 is the owner, 1..
    /// its subordinate ids (crates/hostops/src/userns.rs).
    fn map_ids(&self, pid: u32) -> Result<(), HostOpsError>;
    /// Who carries the operations out, for logs and `doctor`.
    fn describe(&self) -> String;
}
