//! Per-address rate limits for things an unauthenticated peer can repeat:
//! failed minting attempts. A token bucket per source address: `burst`
//! failures at once, then one more every `60 / burst` seconds. Only
//! failures take from it, so a host that knows its password is never slowed
//! down, and one address's failures never slow another's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses remembered at once; beyond it, addresses whose bucket
/// has refilled are forgotten first (so memory stays bounded whatever the
/// number of sources).
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures still allowed now (fractional while refilling).
    left: f64,
    /// When `left` was last brought up to date.
    at: Instant,
}

/// Failure buckets by source address.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Throttle {
    /// Takes one attempt of `ip` from its bucket of `per_minute`, or
    /// `Err(retry_after)` when there is none left. Taken before the attempt
    /// is judged, under one lock, so concurrent attempts can never pass the
    /// limit between a check and a count; a successful attempt is given back
    /// ([`Throttle::succeeded`]), so only failures use the bucket up.
    pub fn take(&self, ip: IpAddr, per_minute: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_TRACKED && !b.contains_key(&ip) {
            b.retain(|_, bucket| {
                refill(bucket, per_minute, now);
                bucket.left < f64::from(per_minute)
            });
            if b.len() >= MAX_TRACKED {
                // Every tracked address is still throttled: forget the one
                // that has waited longest.
                if let Some(oldest) = b.iter().min_by_key(|(_, v)| v.at).map(|(k, _)| *k) {
                    b.remove(&oldest);
                }
            }
        }
        let bucket = b.entry(ip).or_insert(Bucket {
            left: f64::from(per_minute),
            at: now,
        });
        refill(bucket, per_minute, now);
        if bucket.left >= 1.0 {
            bucket.left -= 1.0;
            return Ok(());
        }
        let per_second = f64::from(per_minute.max(1)) / 60.0;
        let wait = (1.0 - bucket.left) / per_second;
        Err(Duration::from_secs(wait.ceil().max(1.0) as u64))
    }

    /// Gives back the attempt [`Throttle::take`] took: it succeeded.
    pub fn succeeded(&self, ip: IpAddr, per_minute: u32) {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = b.get_mut(&ip) {
            refill(bucket, per_minute, Instant::now());
            bucket.left += 1.0;
            if bucket.left >= f64::from(per_minute) {
                b.remove(&ip);
            }
        }
    }

    /// Addresses tracked now (for tests).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn refill(bucket: &mut Bucket, per_minute: u32, now: Instant) {
    let per_second = f64::from(per_minute) / 60.0;
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    bucket.left = (bucket.left + elapsed * per_second).min(f64::from(per_minute));
    bucket.at = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_is_throttled_per_address() {
        let t = Throttle::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..10 {
            assert!(t.take(a, 10).is_ok());
        }
        let wait = t.take(a, 10).expect_err("11th failure in a row");
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(6));
        assert!(t.take(b, 10).is_ok(), "another address is not slowed down");
        // Successes cost nothing.
        for _ in 0..100 {
            t.take(b, 10).unwrap();
            t.succeeded(b, 10);
        }
    }

    #[test]
    fn concurrent_attempts_never_pass_the_limit() {
        let t = std::sync::Arc::new(Throttle::default());
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        let passed: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..64)
                .map(|_| {
                    let t = t.clone();
                    s.spawn(move || usize::from(t.take(ip, 10).is_ok()))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(passed, 10);
    }

    #[test]
    fn memory_stays_bounded_whatever_the_sources() {
        let t = Throttle::default();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let _ = t.take(IpAddr::from(i.to_be_bytes()), 10);
        }
        assert!(t.tracked() <= MAX_TRACKED);
    }
}
