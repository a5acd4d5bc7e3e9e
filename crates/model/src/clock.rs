//! The wire format of the boot-time clock exchange: banger-init asks the
//! daemon for the host's time over UDP on the bridge, and steps the
//! guest's clock to it (a guest otherwise starts from the emulated RTC,
//! whole seconds behind).
//!
//! One datagram each way, both [`DATAGRAM`] bytes long, so an answer is
//! never larger than the question (nothing to amplify):
//!
//!   question: "bgrclk1?" | nonce (8 bytes) | 8 zero bytes
//!   answer:   "bgrclk1!" | the same nonce  | host time, ns since the
//!                                            Unix epoch, u64 little-endian
//!
//! The nonce ties an answer to its question; the guest measures the round
//! trip and adds half of it.

/// Where the daemon answers, on the bridge address: an unprivileged port,
/// so a daemon that is not root can listen.
pub const CLOCK_PORT: u16 = 10123;
/// The size of both datagrams.
pub const DATAGRAM: usize = 24;
const ASK: &[u8; 8] = b"bgrclk1?";
const ANSWER: &[u8; 8] = b"bgrclk1!";

/// A question with `nonce`.
pub fn question(nonce: u64) -> [u8; DATAGRAM] {
    let mut out = [0u8; DATAGRAM];
    out[..8].copy_from_slice(ASK);
    out[8..16].copy_from_slice(&nonce.to_le_bytes());
    out
}

/// The nonce of a well-formed question; `None` for anything else.
pub fn parse_question(datagram: &[u8]) -> Option<u64> {
    let d: &[u8; DATAGRAM] = datagram.try_into().ok()?;
    (&d[..8] == ASK && d[16..] == [0u8; 8]).then(|| le_u64(&d[8..16]))
}

/// The answer to the question with `nonce`: the host's time in ns.
pub fn answer(nonce: u64, unix_nanos: u64) -> [u8; DATAGRAM] {
    let mut out = [0u8; DATAGRAM];
    out[..8].copy_from_slice(ANSWER);
    out[8..16].copy_from_slice(&nonce.to_le_bytes());
    out[16..].copy_from_slice(&unix_nanos.to_le_bytes());
    out
}

/// The host's time from an answer to the question with `nonce`.
pub fn parse_answer(datagram: &[u8], nonce: u64) -> Option<u64> {
    let d: &[u8; DATAGRAM] = datagram.try_into().ok()?;
    (&d[..8] == ANSWER && le_u64(&d[8..16]) == nonce).then(|| le_u64(&d[16..]))
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_and_its_answer_round_trip() {
        let q = question(42);
        assert_eq!(parse_question(&q), Some(42));
        let a = answer(42, 1_764_547_200_123_456_789);
        assert_eq!(a.len(), q.len(), "never larger than the question");
        assert_eq!(parse_answer(&a, 42), Some(1_764_547_200_123_456_789));
    }

    #[test]
    fn anything_else_is_ignored() {
        let q = question(7);
        assert_eq!(parse_question(&q[..23]), None, "short");
        assert_eq!(parse_question(&[q.as_slice(), &[0]].concat()), None, "long");
        let mut tail = q;
        tail[20] = 1;
        assert_eq!(parse_question(&tail), None, "padding must be zero");
        assert_eq!(
            parse_question(&answer(7, 1)),
            None,
            "an answer is no question"
        );
        assert_eq!(parse_answer(&answer(7, 1), 8), None, "another nonce");
        assert_eq!(parse_answer(&q, 7), None, "a question is no answer");
    }
}
