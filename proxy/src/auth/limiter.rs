//! Per-peer limit on failed authentications: a token bucket per address, touched only when a
//! peer fails, so clients that authenticate never contend on its lock.
//!
//! The hot path reads one atomic: while no peer is blocked, a check takes no lock at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most; past this, full (idle) buckets are dropped first.
const MAX_PEERS: usize = 65_536;

/// Token buckets of failed attempts, keyed by peer (IPv6 by its /64, which one host holds).
#[derive(Debug)]
pub struct FailureLimiter {
    per_second: f64,
    burst: f64,
    epoch: Instant,
    /// Milliseconds after `epoch` until which some peer may be blocked.
    blocked_until: AtomicU64,
    peers: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl FailureLimiter {
    /// `per_minute` failures refill per minute, up to `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst),
            epoch: Instant::now(),
            blocked_until: AtomicU64::new(0),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `peer` has no failed attempt left.
    pub fn check(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.millis(now) >= self.blocked_until.load(Ordering::Relaxed) {
            return Ok(());
        }
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get(&key(peer)) {
            Some(bucket) => {
                let tokens = self.refilled(bucket, now);
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.wait_for_one(tokens))
                }
            }
            None => Ok(()),
        }
    }

    /// Counts one failed attempt by `peer`.
    pub fn record_failure(&self, peer: IpAddr, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS {
            peers.retain(|_, b| self.refilled(b, now) < self.burst);
            if peers.len() >= MAX_PEERS {
                // Still full of active attackers: start over rather than grow without bound.
                peers.clear();
            }
        }
        let bucket = peers.entry(key(peer)).or_insert(Bucket { tokens: self.burst, updated: now });
        bucket.tokens = (self.refilled(bucket, now) - 1.0).max(0.0);
        bucket.updated = now;
        if bucket.tokens < 1.0 {
            let until = self.millis(now + self.wait_for_one(bucket.tokens)) + 1;
            self.blocked_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    fn wait_for_one(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.per_second).max(0.0))
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }
}

fn key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn blocks_after_the_burst_and_only_that_peer() {
        let limiter = FailureLimiter::new(60, 3);
        let now = Instant::now();
        for _ in 0..2 {
            limiter.record_failure(A, now);
            assert!(limiter.check(A, now).is_ok());
        }
        limiter.record_failure(A, now);
        let wait = limiter.check(A, now).expect_err("blocked");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(B, now).is_ok(), "other peers are not slowed");
        assert!(limiter.check(A, now + Duration::from_secs(1)).is_ok(), "refilled");
    }

    #[test]
    fn ipv6_peers_share_their_slash_64() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let limiter = FailureLimiter::new(1, 1);
        let now = Instant::now();
        limiter.record_failure(one, now);
        assert!(limiter.check(two, now).is_err());
        assert!(limiter.check(other, now).is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        limiter.record_failure(mapped, now);
        assert!(limiter.check(A, now).is_err());
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = FailureLimiter::new(60, 5);
        let now = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 10) {
            limiter.record_failure(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(limiter.peers.lock().unwrap().len() <= MAX_PEERS);
    }
}
