//! A server-wide budget of scratch disk space, for signers that expand their
//! input on disk (an `.app` tarball is unpacked, then copied while signed).
//! Each job takes what it writes from the budget as it writes it and gives
//! it back when its [`Reservation`] drops with its scratch directory, so all
//! jobs together never hold more than the budget however their inputs
//! expand. Running out is the server's limit, not the input's fault:
//! [`SignError::Internal`] (the client may use another host).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::SignError;

/// The budget, shared by every job.
#[derive(Debug)]
pub struct ScratchBudget {
    limit: u64,
    used: AtomicU64,
}

impl ScratchBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<ScratchBudget> {
        Arc::new(ScratchBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Bytes held now by all jobs.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The whole budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// What one job holds of a budget (nothing, when there is no budget).
#[derive(Debug, Default)]
pub struct Reservation {
    budget: Option<Arc<ScratchBudget>>,
    held: u64,
}

impl Reservation {
    /// A reservation of nothing yet, against `budget` (if any).
    pub fn new(budget: Option<Arc<ScratchBudget>>) -> Reservation {
        Reservation { budget, held: 0 }
    }

    /// Bytes this job holds.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Takes `bytes` more, or fails without taking anything.
    pub fn take(&mut self, bytes: u64) -> Result<(), SignError> {
        let Some(b) = &self.budget else {
            return Ok(());
        };
        let taken = b
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= b.limit)
            });
        match taken {
            Ok(_) => {
                self.held += bytes;
                Ok(())
            }
            Err(used) => Err(SignError::Internal(anyhow::anyhow!(
                "the server's scratch space budget is used up ({used} of {} bytes held by jobs \
                 in progress): try again later or use another host",
                b.limit
            ))),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.used.fetch_sub(self.held, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_together_never_hold_more_than_the_budget() {
        let budget = ScratchBudget::new(100);
        let mut a = Reservation::new(Some(budget.clone()));
        let mut b = Reservation::new(Some(budget.clone()));
        a.take(60).unwrap();
        assert!(matches!(b.take(50), Err(SignError::Internal(_))));
        b.take(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        b.take(60).unwrap();
        drop(b);
        assert_eq!(budget.used(), 0);
        Reservation::new(None).take(u64::MAX).unwrap();
    }
}
