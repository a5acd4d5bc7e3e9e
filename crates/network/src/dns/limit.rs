//! Rate bounding for the DNS listener: a token bucket per source address,
//! so one flooding sender is cut off without starving the others, and a
//! bounded table of senders, so a flood from many addresses cannot grow
//! memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Queries a second one source may send, sustained.
pub const RATE_PER_SEC: f64 = 200.0;
/// Queries a source may send at once (a resolver asking A and AAAA for a
/// few names in a burst).
pub const BURST: f64 = 100.0;
/// Sources tracked at most; beyond this, new sources wait until idle ones
/// are forgotten.
pub const MAX_SOURCES: usize = 4096;

#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new(RATE_PER_SEC, BURST, MAX_SOURCES)
    }
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64, max_sources: usize) -> Self {
        Self {
            rate,
            burst,
            max_sources,
            buckets: HashMap::new(),
        }
    }

    /// Whether a query from `source` at `now` may be answered.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            // Forget sources whose bucket has refilled: they are idle.
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= self.max_sources {
                return false;
            }
        }
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let mut limit = RateLimit::new(10.0, 5.0, 16);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| limit.allow(a, t0)).count();
        assert_eq!(allowed, 5, "the burst");
        assert!(limit.allow(b, t0), "another source is not starved");
        // One second later: ten more.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| limit.allow(a, t1)).count();
        assert_eq!(allowed, 5, "refilled up to the burst, no more");
        let t2 = t1 + Duration::from_millis(300);
        assert_eq!((0..100).filter(|_| limit.allow(a, t2)).count(), 3);
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let mut limit = RateLimit::new(10.0, 2.0, 4);
        let t0 = Instant::now();
        for i in 0..4u8 {
            assert!(limit.allow(IpAddr::from([10, 0, 0, i]), t0));
        }
        assert!(!limit.allow("10.0.1.1".parse().unwrap(), t0), "table full");
        assert_eq!(limit.buckets.len(), 4);
        // Once the others are idle (refilled), a new source gets in.
        let later = t0 + Duration::from_secs(1);
        assert!(limit.allow("10.0.1.1".parse().unwrap(), later));
        assert!(limit.buckets.len() <= 4);
    }
}
