//! A process-wide allowance of bytes for connection buffers beyond each connection's small
//! share, so the memory that clients can make the server hold (large requests arriving slowly,
//! large replies not being read) has one bound whatever the number of connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes all connections together may hold beyond their own small share.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes not taken.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used.load(Ordering::Relaxed))
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One holder's share of a [`MemoryBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    held: usize,
}

impl Reservation {
    /// An empty share of `budget`.
    pub fn new(budget: Arc<MemoryBudget>) -> Reservation {
        Reservation { budget, held: 0 }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The budget this share comes from.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Holds exactly `want` bytes: shrinking always succeeds; growing fails (holding what it
    /// held) when the budget cannot cover the difference.
    pub fn resize(&mut self, want: usize) -> bool {
        if want <= self.held {
            self.budget.give(self.held - want);
            self.held = want;
            return true;
        }
        if self.budget.try_take(want - self.held) {
            self.held = want;
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_limit_and_give_back_on_drop() {
        let b = MemoryBudget::new(100);
        let mut r1 = Reservation::new(b.clone());
        let mut r2 = Reservation::new(b.clone());
        assert!(r1.resize(60));
        assert!(!r2.resize(50), "60 + 50 is over the limit");
        assert_eq!(r2.held(), 0);
        assert!(r2.resize(40));
        assert_eq!(b.available(), 0);
        assert!(r1.resize(10));
        assert_eq!(b.available(), 50);
        drop(r2);
        assert_eq!(b.used(), 10);
        drop(r1);
        assert_eq!(b.used(), 0);
    }
}
