//! Steps the guest's clock to the host's at boot. The kernel starts from
//! the emulated RTC, which has whole seconds (a guest began up to a
//! second and more behind); the host's daemon answers on the bridge
//! ([`banger_model::clock`]), and the step takes half the round trip into
//! account, so the guest starts within milliseconds of the host.
//!
//! Best effort: a host that does not answer leaves the RTC's time, and
//! the boot goes on. The wait is bounded ([`TRIES`] × [`WAIT`]).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use banger_model::clock::{self, DATAGRAM};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_settime};

/// Questions asked; the answer with the shortest round trip is used.
const TRIES: usize = 3;
/// How long each question waits for its answer.
const WAIT: Duration = Duration::from_millis(300);

/// Steps the clock to the time `host` gives; what happened, for the
/// ready line ("clock +1.187 s, rtt 2 ms").
pub fn step(host: SocketAddr) -> String {
    match ask(host) {
        Ok(Some((host_nanos, rtt, at))) => {
            // The host read its clock about half a round trip before the
            // answer arrived, and time has passed since.
            let now = u128::from(host_nanos) + (rtt / 2 + at.elapsed()).as_nanos();
            let before = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let target = TimeSpec::new(
                i64::try_from(now / 1_000_000_000).unwrap_or(i64::MAX),
                (now % 1_000_000_000) as i64,
            );
            match clock_settime(ClockId::CLOCK_REALTIME, target) {
                Ok(()) => format!(
                    "clock {:+.3} s, rtt {} ms",
                    (now as f64 - before as f64) / 1e9,
                    rtt.as_millis()
                ),
                Err(e) => format!("clock not set: {}", e.desc()),
            }
        }
        Ok(None) => format!("clock not set: no answer from {host}"),
        Err(e) => format!("clock not set: {e}"),
    }
}

/// The host's time, the round trip it took, and when it arrived; `None`
/// when no question was answered.
fn ask(host: SocketAddr) -> std::io::Result<Option<(u64, Duration, Instant)>> {
    let socket = UdpSocket::bind(("0.0.0.0", 0))?;
    socket.connect(host)?;
    socket.set_read_timeout(Some(WAIT))?;
    let mut best: Option<(u64, Duration, Instant)> = None;
    let mut buf = [0u8; 2 * DATAGRAM];
    for _ in 0..TRIES {
        let nonce = nonce();
        let sent = Instant::now();
        socket.send(&clock::question(nonce))?;
        let deadline = sent + WAIT;
        // Anything but the answer to this question (a late answer to an
        // earlier one, noise) is skipped until the wait is over.
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                // Nothing listens there (ICMP port unreachable): no use
                // asking again.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(best),
                Err(e) => return Err(e),
            };
            let arrived = Instant::now();
            if let Some(host_nanos) = clock::parse_answer(&buf[..n], nonce) {
                let rtt = arrived - sent;
                if best.is_none_or(|(_, b, _)| rtt < b) {
                    best = Some((host_nanos, rtt, arrived));
                }
                break;
            }
        }
    }
    Ok(best)
}

/// A nonce no other sender on the bridge can guess in advance.
fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut random) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut random, &mut bytes);
    }
    u64::from_le_bytes(bytes)
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that answers on loopback: the exchange finds its time.
    #[test]
    fn asks_a_host_and_takes_its_answer() {
        let host = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = host.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            for _ in 0..TRIES {
                let (n, peer) = host.recv_from(&mut buf).unwrap();
                let nonce = clock::parse_question(&buf[..n]).unwrap();
                // Noise first, then the answer.
                host.send_to(b"noise", peer).unwrap();
                host.send_to(&clock::answer(nonce, 1_000_000_000_123), peer)
                    .unwrap();
            }
        });
        let (nanos, rtt, _) = ask(addr).unwrap().expect("answered");
        assert_eq!(nanos, 1_000_000_000_123);
        assert!(rtt < WAIT, "{rtt:?}");
        server.join().unwrap();
    }

    #[test]
    fn a_host_that_does_not_answer_is_given_up_on_in_bounded_time() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        assert_eq!(ask(silent.local_addr().unwrap()).unwrap(), None);
        assert!(started.elapsed() < WAIT * (TRIES as u32 + 1));
    }
}
