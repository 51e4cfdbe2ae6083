//! Which host to try next: each format's hosts are shuffled once per run,
//! then rotated when a host fails; and how long to wait between tries
//! (exponential backoff with jitter).
//!
//! Pure bookkeeping: no I/O here. Deciding *whether* an answer warrants
//! rotation is `transfer.rs`'s job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;

/// The hosts of one format, in this run's order.
#[derive(Debug)]
pub struct HostPool {
    /// `https://HOST:PORT`, shuffled once.
    /// Invariant: not empty.
    urls: Vec<String>,
    /// The host new files start on: moves forward when a host fails, so one
    /// dead host costs the run one error, not one per file.
    preferred: AtomicUsize,
    /// Per host: not before this instant (a 503's Retry-After).
    not_before: Mutex<Vec<Option<Instant>>>,
}

impl HostPool {
    /// A pool over `urls` (not empty), shuffled unless `shuffle` is false.
    pub fn new(mut urls: Vec<String>, shuffle: bool) -> HostPool {
        assert!(!urls.is_empty(), "a host pool needs a host");
        if shuffle {
            urls.shuffle(&mut rand::thread_rng());
        }
        let n = urls.len();
        HostPool {
            urls,
            preferred: AtomicUsize::new(0),
            not_before: Mutex::new(vec![None; n]),
        }
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Whether there are no hosts (never: see the invariant).
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The URL of host `i`.
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }

    /// Where a new file starts.
    pub fn start(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.urls.len()
    }

    /// Host `failed` let us down: the next one, which also becomes where new
    /// files start (unless another file already moved on).
    pub fn rotate(&self, failed: usize) -> usize {
        let next = (failed + 1) % self.urls.len();
        let _ = self
            .preferred
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
        next
    }

    /// Host `i` asked not to be bothered for `wait` (503 + Retry-After).
    pub fn hold_off(&self, i: usize, wait: Duration) {
        if let Ok(mut v) = self.not_before.lock() {
            if let Some(slot) = v.get_mut(i % self.urls.len()) {
                *slot = Some(Instant::now() + wait);
            }
        }
    }

    /// How long host `i` still asked us to wait.
    pub fn wait_for(&self, i: usize) -> Duration {
        let until = self
            .not_before
            .lock()
            .ok()
            .and_then(|v| v.get(i % self.urls.len()).copied().flatten());
        until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first error (before jitter).
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after the `errors`-th error (1-based): `base·2^(errors-1)`
    /// capped at `max`, then a random point in its upper half, so clients that
    /// failed together do not come back together.
    pub fn delay(&self, errors: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << errors.saturating_sub(1).min(20))
            .min(self.max);
        let half = exp / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            rand::thread_rng().gen_range(Duration::ZERO..=half)
        };
        half + jitter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_moves_the_start_once() {
        let p = HostPool::new(vec!["a".into(), "b".into(), "c".into()], false);
        assert_eq!(p.start(), 0);
        // Two files fail on host 0 at the same time: the start moves by one only.
        assert_eq!(p.rotate(0), 1);
        assert_eq!(p.rotate(0), 1);
        assert_eq!(p.start(), 1);
        assert_eq!(p.rotate(2), 0);
        assert_eq!(p.start(), 1, "a stale failure does not move the start");
        assert_eq!(p.url(4), "b");
    }

    #[test]
    fn shuffle_keeps_every_host() {
        let urls: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let p = HostPool::new(urls.clone(), true);
        let mut got: Vec<String> = (0..20).map(|i| p.url(i).to_string()).collect();
        got.sort();
        let mut want = urls;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let d1 = b.delay(1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d3 = b.delay(3);
            assert!(
                d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
                "{d3:?}"
            );
            assert!(b.delay(30) <= Duration::from_millis(1000));
        }
        let zero = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.delay(5), Duration::ZERO);
    }

    #[test]
    fn hold_off_is_remembered() {
        let p = HostPool::new(vec!["a".into(), "b".into()], false);
        p.hold_off(1, Duration::from_secs(5));
        assert!(p.wait_for(1) > Duration::from_secs(4));
        assert_eq!(p.wait_for(0), Duration::ZERO);
    }
}
