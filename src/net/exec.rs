//! A single-threaded executor for one core: tasks are boxed futures in a slab; a waker is just
//! the task's slot number, and waking pushes it onto this thread's ready list. Timers live in a
//! heap the event loop consults for its sleep deadline.
//!
//! Wakers never leave their thread in this crate (cross-core traffic goes through
//! [`super::mail`], which wakes the owner's event loop, not a task). A waker used on another
//! thread would only cause a spurious poll of some task there, which futures tolerate.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

type BoxedTask = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    /// Task slots woken since the executor last ran them.
    static READY: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

fn raw_waker(slot: u32) -> RawWaker {
    RawWaker::new(slot as usize as *const (), &VTABLE)
}

const VTABLE: RawWakerVTable = RawWakerVTable::new(
    |data| raw_waker(data as usize as u32),
    |data| wake_slot(data as usize as u32),
    |data| wake_slot(data as usize as u32),
    |_| {},
);

fn wake_slot(slot: u32) {
    READY.with(|r| r.borrow_mut().push(slot));
}

fn waker_for(slot: u32) -> Waker {
    // SAFETY: the data pointer is a plain integer (a slot number), never dereferenced; every
    // vtable function only copies it or pushes it onto a thread-local list, so cloning, waking
    // and dropping from any thread, any number of times, touches no shared memory.
    unsafe { Waker::from_raw(raw_waker(slot)) }
}

struct Slot {
    task: Option<BoxedTask>,
    /// Bumped each time the slot is reused, so a stale ready entry cannot poll a newcomer twice
    /// in one round (a spurious poll would still be harmless).
    polled_round: u64,
}

/// The tasks of one core and its timers.
#[derive(Default)]
pub struct Executor {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    live: Cell<usize>,
    round: Cell<u64>,
    timers: RefCell<BinaryHeap<Reverse<(Instant, u64)>>>,
    timer_wakers: RefCell<hashbrown::HashMap<u64, Waker>>,
    next_timer: Cell<u64>,
}

impl Executor {
    /// Adds a task and schedules its first poll.
    pub fn spawn(&self, fut: impl Future<Output = ()> + 'static) {
        let task: BoxedTask = Box::pin(fut);
        let slot = match self.free.borrow_mut().pop() {
            Some(i) => {
                self.slots.borrow_mut()[i as usize].task = Some(task);
                i
            }
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot {
                    task: Some(task),
                    polled_round: 0,
                });
                (slots.len() - 1) as u32
            }
        };
        self.live.set(self.live.get() + 1);
        wake_slot(slot);
    }

    /// Number of unfinished tasks.
    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// Whether some task waits to be polled.
    pub fn has_ready(&self) -> bool {
        READY.with(|r| !r.borrow().is_empty())
    }

    /// Polls every woken task once (tasks woken while this runs wait for the next call).
    /// Returns how many were polled.
    pub fn run_ready(&self) -> usize {
        let batch = READY.with(|r| std::mem::take(&mut *r.borrow_mut()));
        let round = self.round.get() + 1;
        self.round.set(round);
        let mut polled = 0;
        for &slot in &batch {
            let task = {
                let mut slots = self.slots.borrow_mut();
                let Some(s) = slots.get_mut(slot as usize) else {
                    continue;
                };
                if s.polled_round == round {
                    continue;
                }
                s.polled_round = round;
                s.task.take()
            };
            let Some(mut task) = task else { continue };
            polled += 1;
            let waker = waker_for(slot);
            let mut cx = Context::from_waker(&waker);
            match task.as_mut().poll(&mut cx) {
                Poll::Pending => self.slots.borrow_mut()[slot as usize].task = Some(task),
                Poll::Ready(()) => {
                    drop(task);
                    self.free.borrow_mut().push(slot);
                    self.live.set(self.live.get() - 1);
                }
            }
        }
        // Give the list's allocation back for the next round.
        READY.with(|r| {
            let mut r = r.borrow_mut();
            if r.is_empty() {
                let mut batch = batch;
                batch.clear();
                *r = batch;
            }
        });
        polled
    }

    /// Drops every task (at shutdown), so that what they own is released on this thread.
    pub fn clear(&self) {
        let tasks: Vec<_> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(|s| s.task.take())
            .collect();
        drop(tasks);
        self.slots.borrow_mut().clear();
        self.free.borrow_mut().clear();
        self.live.set(0);
        READY.with(|r| r.borrow_mut().clear());
    }

    /// Registers `waker` to be woken at `at`; returns the timer's id.
    pub fn add_timer(&self, at: Instant, waker: Waker) -> u64 {
        let id = self.next_timer.get();
        self.next_timer.set(id + 1);
        self.timers.borrow_mut().push(Reverse((at, id)));
        self.timer_wakers.borrow_mut().insert(id, waker);
        id
    }

    /// Forgets a timer that is no longer awaited.
    pub fn cancel_timer(&self, id: u64) {
        self.timer_wakers.borrow_mut().remove(&id);
    }

    /// Wakes the tasks whose timers are due; returns how long until the next one.
    pub fn fire_timers(&self, now: Instant) -> Option<Duration> {
        let mut timers = self.timers.borrow_mut();
        while let Some(Reverse((at, id))) = timers.peek().copied() {
            if !self.timer_wakers.borrow().contains_key(&id) {
                timers.pop();
                continue;
            }
            if at > now {
                return Some(at - now);
            }
            timers.pop();
            if let Some(w) = self.timer_wakers.borrow_mut().remove(&id) {
                w.wake();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn tasks_run_until_done_and_slots_are_reused() {
        let ex = Executor::default();
        let hits = Rc::new(Cell::new(0));
        for _ in 0..3 {
            let h = hits.clone();
            ex.spawn(async move { h.set(h.get() + 1) });
        }
        assert_eq!(ex.live(), 3);
        ex.run_ready();
        assert_eq!(hits.get(), 3);
        assert_eq!(ex.live(), 0);
        ex.spawn(async {});
        assert_eq!(
            ex.slots.borrow().len(),
            3,
            "a finished task's slot is reused"
        );
        ex.clear();
    }

    #[test]
    fn a_woken_task_is_polled_once_per_round() {
        let ex = Executor::default();
        let polls = Rc::new(Cell::new(0));
        let p = polls.clone();
        ex.spawn(std::future::poll_fn(move |cx| {
            p.set(p.get() + 1);
            cx.waker().wake_by_ref();
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        }));
        ex.run_ready();
        assert_eq!(polls.get(), 1);
        ex.run_ready();
        assert_eq!(polls.get(), 2, "two wakes in one round give one poll");
        ex.clear();
    }

    #[test]
    fn timers_fire_in_order_and_report_the_next_deadline() {
        let ex = Executor::default();
        let now = Instant::now();
        let w = waker_for(0);
        ex.add_timer(now + Duration::from_millis(20), w.clone());
        let cancelled = ex.add_timer(now + Duration::from_millis(5), w.clone());
        ex.cancel_timer(cancelled);
        let next = ex.fire_timers(now).unwrap();
        assert_eq!(next, Duration::from_millis(20));
        assert_eq!(ex.fire_timers(now + Duration::from_millis(25)), None);
        READY.with(|r| r.borrow_mut().clear());
    }
}
