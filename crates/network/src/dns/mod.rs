//! The `.vm` DNS zone (DESIGN.md, "network"): answering one query
//! ([`zone`]), bounding how often a sender is answered ([`limit`]), and the
//! host's resolver and the guests' nameservers ([`host`]). The socket and
//! the record table belong to the daemon; nothing here keeps state across
//! calls except the rate limiter the caller owns.

pub mod host;
pub mod limit;
pub mod zone;

pub use hickory_proto::rr::RecordType;
pub use host::{
    HostResolver, ProbeAnswer, guest_nameservers, host_resolv_confs, probe, resolvectl_install,
    resolvectl_uninstall,
};
pub use limit::RateLimit;
pub use zone::{MAX_QUERY_BYTES, PROBE_ADDR, PROBE_NAME, Reply, TTL, ZONE, answer, query_bytes};
