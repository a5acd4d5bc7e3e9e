//! bangerd's `.vm` DNS server: a UDP socket and the loop that answers
//! from the orchestrator's table of names ([`DnsRecords`]). The zone's
//! answers come from `banger_network::dns`.
//!
//! UDP only: answers are a few dozen bytes, never truncated, so no client
//! has a reason to retry over TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use banger_network::dns::{self, RateLimit, Reply};
pub use banger_orchestrator::dns::DnsRecords;
use tokio::net::UdpSocket;

/// Binds the server's socket. `IP_FREEBIND`: the bridge address exists
/// only once the first VM has made the bridge, and the server must be
/// listening by then without a restart.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Answers queries on `socket` from `records` until the task is dropped.
/// Nothing a sender does ends it: malformed, oversized and flooding
/// queries are answered with an error or dropped.
pub async fn serve(socket: UdpSocket, records: Arc<DnsRecords>) {
    let mut limit = RateLimit::default();
    // Larger than any query answered, so an oversized one is seen whole
    // (and dropped) rather than cut to a plausible prefix.
    let mut buf = vec![0u8; 4096];
    let mut dropped: u64 = 0;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // ICMP errors from earlier replies surface here on Linux;
                // they concern one peer, not the socket.
                tracing::debug!(error = %e, "dns: receive error");
                continue;
            }
        };
        if !limit.allow(peer.ip(), Instant::now()) {
            dropped += 1;
            if dropped.is_power_of_two() {
                tracing::warn!(peer = %peer, dropped, "dns: rate limit exceeded, dropping queries");
            }
            continue;
        }
        match dns::answer(&buf[..n], |name| records.get(name)) {
            Reply::Send(bytes) => {
                if let Err(e) = socket.send_to(&bytes, peer).await {
                    tracing::debug!(peer = %peer, error = %e, "dns: cannot answer");
                }
            }
            Reply::Drop(why) => tracing::debug!(peer = %peer, why, "dns: dropped a datagram"),
        }
    }
}
