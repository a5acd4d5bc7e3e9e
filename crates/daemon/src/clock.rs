//! bangerd's clock answerer: at boot, banger-init asks the host's time on
//! the bridge address ([`banger_model::clock`]) and steps the guest's
//! clock to it, so a guest starts within milliseconds of the host rather
//! than whole seconds off the emulated RTC.
//!
//! Guests are untrusted: only a well-formed question of exactly
//! [`DATAGRAM`] bytes is answered, with as many bytes (nothing to
//! amplify), at a bounded rate per sender. The host's time is no secret.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use banger_model::clock::{self, DATAGRAM};
use banger_network::dns::RateLimit;
use tokio::net::UdpSocket;

/// Answers questions on `socket` until the task is dropped.
pub async fn serve(socket: UdpSocket) {
    let mut limit = RateLimit::default();
    // Larger than a question, so a longer datagram is seen as such (and
    // dropped) rather than cut to a plausible one.
    let mut buf = [0u8; 2 * DATAGRAM];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "clock: receive error");
                continue;
            }
        };
        if !limit.allow(peer.ip(), Instant::now()) {
            continue;
        }
        let Some(nonce) = clock::parse_question(&buf[..n]) else {
            tracing::debug!(peer = %peer, bytes = n, "clock: dropped a datagram that is no question");
            continue;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        if let Err(e) = socket.send_to(&clock::answer(nonce, now), peer).await {
            tracing::debug!(peer = %peer, error = %e, "clock: cannot answer");
        }
    }
}
