//! Each format's signing rate (`[format:NAME] max_rate`, `burst`): a token
//! bucket per format, so that a key in a cloud KMS or an HSM is never asked
//! for more signatures than its quota, whatever the builds send.
//!
//! Two ways to take from a bucket:
//! - an upload's job *reserves* its turn ([`Turn::wait`]): the bucket may go
//!   below zero, each reservation pushing the next one later, and the job
//!   sleeps until its turn (uploads wait, they are not refused);
//! - a digest request *tries* ([`Rates::try_take`]): a signature now or a
//!   wait to tell the client (`429` + `Retry-After`). It gets nothing while
//!   uploads hold reservations, so neither kind starves the other.
//!
//! The buckets are this server's: a fleet of N servers signs up to N times
//! `max_rate` in all (docs/OPERATIONS.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::RateLimit;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Signatures available now; below zero while reservations wait.
    left: f64,
    /// When `left` was last brought up to date.
    at: Instant,
}

/// The buckets of every rate-limited format (one per configured format at
/// most, so bounded by the config).
pub struct Rates {
    buckets: Mutex<HashMap<String, Bucket>>,
    metrics: Arc<Metrics>,
}

impl Rates {
    /// Empty buckets are created full on first use.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Rates> {
        Arc::new(Rates {
            buckets: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Brings `format`'s bucket up to date and hands it to `f`.
    fn with<T>(&self, format: &str, limit: RateLimit, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let now = Instant::now();
        let burst = f64::from(limit.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(format.to_string()).or_insert(Bucket {
            left: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        // A reload may have lowered the burst: never more than it.
        bucket.left = (bucket.left + elapsed * limit.per_second).min(burst);
        bucket.at = now;
        f(bucket)
    }

    /// One signature of `format` now, or how long until one is free (whole
    /// seconds, at least 1: what `Retry-After` says).
    pub fn try_take(&self, format: &str, limit: RateLimit) -> Result<(), Duration> {
        let taken = self.with(format, limit, |b| {
            if b.left >= 1.0 {
                b.left -= 1.0;
                Ok(())
            } else {
                Err((1.0 - b.left) / limit.per_second)
            }
        });
        taken.map_err(|secs| {
            self.limited(format);
            Duration::from_secs(secs.ceil().max(1.0) as u64)
        })
    }

    /// Reserves `format`'s next signature; how long to wait for it.
    fn reserve(&self, format: &str, limit: RateLimit) -> Duration {
        let wait = self.with(format, limit, |b| {
            b.left -= 1.0;
            (-b.left).max(0.0) / limit.per_second
        });
        if wait > 0.0 {
            self.limited(format);
        }
        Duration::from_secs_f64(wait)
    }

    fn limited(&self, format: &str) {
        self.metrics
            .inc("signing_rate_limited_total", &[("format", format)]);
    }

    /// A job's turn at `format`'s key under `limit` (None: not limited).
    pub fn turn(self: &Arc<Self>, limit: Option<RateLimit>) -> Option<Turn> {
        limit.map(|limit| Turn {
            rates: Arc::clone(self),
            limit,
        })
    }
}

/// A queued job's place in its format's bucket.
pub struct Turn {
    rates: Arc<Rates>,
    limit: RateLimit,
}

impl Turn {
    /// Reserves the job's signature and sleeps until its turn.
    pub async fn wait(self, format: &str) {
        let wait = self.rates.reserve(format, self.limit);
        if !wait.is_zero() {
            tracing::debug!(
                format,
                wait_ms = wait.as_millis() as u64,
                "waiting for the format's rate"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let r = Rates::new(Arc::new(Metrics::default()));
        let l = limit(0.5, 3);
        for _ in 0..3 {
            assert!(r.try_take("k", l).is_ok());
        }
        let wait = r.try_take("k", l).expect_err("the burst is spent");
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert!(
            r.try_take("other", l).is_ok(),
            "each format has its own bucket"
        );
    }

    #[test]
    fn reservations_queue_up_and_hold_off_tries() {
        let r = Rates::new(Arc::new(Metrics::default()));
        let l = limit(1.0, 1);
        assert_eq!(r.reserve("k", l), Duration::ZERO);
        let second = r.reserve("k", l);
        let third = r.reserve("k", l);
        assert!(second > Duration::from_millis(900) && third > Duration::from_millis(1900));
        let wait = r.try_take("k", l).expect_err("reservations come first");
        assert!(wait >= Duration::from_secs(2), "{wait:?}");
    }
}
