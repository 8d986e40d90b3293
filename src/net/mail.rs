//! Cross-core mail: each core has one inbox that every other core posts into. Messages are
//! batched on the sending side for the whole loop turn and moved into the inbox with one lock per
//! destination per turn; the destination is woken (one eventfd write) only when it sleeps.
//!
//! The queue is bounded by its users: a request travels only with a credit from the sender's
//! per-destination allowance (see [`Credits`]), and replies answer requests, so a pair never holds
//! more than its allowance of either.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use super::Notifier;

/// One core's inbox.
pub struct Inbox<T> {
    queue: Mutex<Vec<T>>,
    /// Set (after the push) when the queue may be non-empty; read by the owner before it sleeps.
    pending: AtomicBool,
    notifier: Arc<Notifier>,
}

impl<T> Inbox<T> {
    /// An empty inbox whose owner sleeps behind `notifier`.
    pub fn new(notifier: Arc<Notifier>) -> Inbox<T> {
        Inbox {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            notifier,
        }
    }

    fn deliver(&self, batch: &mut Vec<T>) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.is_empty() {
                std::mem::swap(&mut *q, batch);
            } else {
                q.append(batch);
            }
        }
        // SeqCst pairs with the owner's store of its sleeping flag: either it sees `pending`
        // before sleeping, or the notifier sees it asleep and wakes it.
        self.pending.store(true, Ordering::SeqCst);
        self.notifier.wake();
    }

    /// Whether mail may be waiting (cheap; the owner calls it before sleeping).
    pub fn has_mail(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Takes every message waiting, in arrival order per sender, into `into` (emptied first).
    pub fn take(&self, into: &mut Vec<T>) {
        into.clear();
        if !self.pending.swap(false, Ordering::SeqCst) {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *q, into);
    }
}

/// Every core's inbox, shared by all cores.
pub type PostOffice<T> = Arc<Vec<Inbox<T>>>;

/// One core's sending side: messages posted during a turn wait here until [`Outbox::flush`].
pub struct Outbox<T> {
    office: PostOffice<T>,
    pending: RefCell<Vec<Vec<T>>>,
    dirty: Cell<bool>,
}

impl<T> Outbox<T> {
    /// The outbox of a core in `office`.
    pub fn new(office: PostOffice<T>) -> Outbox<T> {
        let n = office.len();
        Outbox {
            office,
            pending: RefCell::new((0..n).map(|_| Vec::new()).collect()),
            dirty: Cell::new(false),
        }
    }

    /// Queues `msg` for core `to`; it leaves at the end of this loop turn.
    pub fn post(&self, to: usize, msg: T) {
        self.pending.borrow_mut()[to].push(msg);
        self.dirty.set(true);
    }

    /// Delivers everything posted since the last flush: one lock and at most one wake-up per
    /// destination.
    pub fn flush(&self) {
        if !self.dirty.replace(false) {
            return;
        }
        let mut pending = self.pending.borrow_mut();
        for (to, batch) in pending.iter_mut().enumerate() {
            if !batch.is_empty() {
                self.office[to].deliver(batch);
            }
        }
    }
}

/// A sender's allowance of requests in flight towards each destination; a task without credit
/// waits until an answer returns one.
pub struct Credits {
    left: Vec<Cell<usize>>,
    waiters: RefCell<Vec<Vec<Waker>>>,
}

impl Credits {
    /// `per_peer` requests in flight towards each of `peers` cores.
    pub fn new(peers: usize, per_peer: usize) -> Credits {
        Credits {
            left: (0..peers).map(|_| Cell::new(per_peer)).collect(),
            waiters: RefCell::new((0..peers).map(|_| Vec::new()).collect()),
        }
    }

    /// Takes one credit for `to`, waiting for one if none is left.
    pub async fn acquire(&self, to: usize) {
        std::future::poll_fn(|cx| {
            let left = &self.left[to];
            if left.get() > 0 {
                left.set(left.get() - 1);
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut()[to].push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Returns a credit for `to` (its answer arrived).
    pub fn release(&self, to: usize) {
        self.left[to].set(self.left[to].get() + 1);
        if let Some(w) = self.waiters.borrow_mut()[to].pop() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_arrive_in_order_after_flush() {
        let n0 = Arc::new(Notifier::new().unwrap());
        let n1 = Arc::new(Notifier::new().unwrap());
        let office: PostOffice<u32> = Arc::new(vec![Inbox::new(n0), Inbox::new(n1)]);
        let out = Outbox::new(office.clone());
        out.post(1, 7);
        out.post(1, 8);
        assert!(!office[1].has_mail(), "nothing leaves before the flush");
        out.flush();
        assert!(office[1].has_mail());
        let mut got = Vec::new();
        office[1].take(&mut got);
        assert_eq!(got, vec![7, 8]);
        assert!(!office[1].has_mail());
        office[0].take(&mut got);
        assert!(got.is_empty());
    }

    #[test]
    fn credits_bound_requests_in_flight() {
        let credits = Credits::new(2, 1);
        let ex = super::super::exec::Executor::default();
        let done = std::rc::Rc::new(Cell::new(0));
        let credits = std::rc::Rc::new(credits);
        for _ in 0..2 {
            let (c, d) = (credits.clone(), done.clone());
            ex.spawn(async move {
                c.acquire(1).await;
                d.set(d.get() + 1);
            });
        }
        ex.run_ready();
        assert_eq!(done.get(), 1, "the second sender waits for a credit");
        credits.release(1);
        ex.run_ready();
        assert_eq!(done.get(), 2);
    }
}
