//! One core's shard: its `Store`, counters and latency histograms. Every command that touches a
//! store runs through [`Shard::execute`], whether it came from a local connection or over the
//! mesh — the one place mutations pass (replication will hook in here).

use std::cell::{Ref, RefCell, RefMut};
use std::time::Instant;

use crate::protocol::{ArithOp, Command, Outcome, StoreMode};
use crate::storage::{self, Store, StoreError};

use super::router::{ReplyBatch, RequestBatch, Span};
use super::stats::{Counters, Kind, Latencies, Snapshot, StoreTotals};

/// Items the background reclaimer may examine per tick.
pub const RECLAIM_BUDGET: usize = 4096;

/// A core's cache and its statistics. Lives on one executor; never shared across threads.
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    store: RefCell<Store>,
    counters: RefCell<Counters>,
    latency: RefCell<Latencies>,
}

fn outcome_of(e: StoreError) -> Outcome<Span> {
    match e {
        StoreError::NotFound => Outcome::NotFound,
        StoreError::Exists => Outcome::Exists,
        StoreError::NotStored => Outcome::NotStored,
        StoreError::NonNumeric => Outcome::NonNumeric,
        StoreError::TooLarge => Outcome::TooLarge,
        StoreError::OutOfMemory => Outcome::OutOfMemory,
        StoreError::BadKey => Outcome::InvalidArguments,
    }
}

fn store_mode(m: StoreMode) -> storage::StoreMode {
    match m {
        StoreMode::Set => storage::StoreMode::Set,
        StoreMode::Add => storage::StoreMode::Add,
        StoreMode::Replace => storage::StoreMode::Replace,
        StoreMode::Append => storage::StoreMode::Append,
        StoreMode::Prepend => storage::StoreMode::Prepend,
    }
}

impl Shard {
    /// Wraps a store as shard `id`.
    pub fn new(id: usize, store: Store) -> Shard {
        Shard {
            id,
            store: RefCell::new(store),
            counters: RefCell::new(Counters::default()),
            latency: RefCell::new(Latencies::default()),
        }
    }

    /// The counters, for connection-level events (bytes, connections).
    pub fn counters(&self) -> RefMut<'_, Counters> {
        self.counters.borrow_mut()
    }

    /// The store, read-only (e.g. for statistics).
    pub fn store(&self) -> Ref<'_, Store> {
        self.store.borrow()
    }

    /// Runs one item command (or a flush) against this shard's store. Values of hits are copied
    /// into `arena`; the outcome refers to them by span.
    pub fn execute(&self, cmd: Command<&[u8]>, hash: u64, arena: &mut Vec<u8>) -> Outcome<Span> {
        let started = Instant::now();
        let mut store = self.store.borrow_mut();
        let mut guard = self.counters.borrow_mut();
        let c = &mut *guard;
        let (kind, outcome) = match cmd {
            Command::Get { key, touch: None } => {
                c.cmd_get += 1;
                let o = match store.get(key, hash) {
                    Ok(item) => {
                        c.get_hits += 1;
                        Outcome::Value {
                            flags: item.flags,
                            cas: item.cas,
                            value: Span::push(arena, item.value),
                        }
                    }
                    Err(e) => {
                        c.get_misses += 1;
                        outcome_of(e)
                    }
                };
                (Kind::Get, o)
            }
            Command::Get {
                key,
                touch: Some(exptime),
            } => {
                c.cmd_touch += 1;
                let o = match store.get_and_touch(key, hash, exptime) {
                    Ok(item) => {
                        c.touch_hits += 1;
                        Outcome::Value {
                            flags: item.flags,
                            cas: item.cas,
                            value: Span::push(arena, item.value),
                        }
                    }
                    Err(e) => {
                        c.touch_misses += 1;
                        outcome_of(e)
                    }
                };
                (Kind::Gat, o)
            }
            Command::Store {
                mode,
                key,
                value,
                flags,
                exptime,
                cas,
            } => {
                c.cmd_set += 1;
                let r = store.store(store_mode(mode), key, hash, value, flags, exptime, cas);
                if cas != 0 {
                    match r {
                        Ok(_) => c.cas_hits += 1,
                        Err(StoreError::NotFound) => c.cas_misses += 1,
                        Err(StoreError::Exists) => c.cas_badval += 1,
                        Err(_) => {}
                    }
                }
                let o = match r {
                    Ok(cas) => Outcome::Stored { cas },
                    Err(e) => {
                        match e {
                            StoreError::TooLarge => c.store_too_large += 1,
                            StoreError::OutOfMemory => c.store_no_memory += 1,
                            _ => {}
                        }
                        outcome_of(e)
                    }
                };
                (Kind::Set, o)
            }
            Command::Arith {
                op,
                key,
                delta,
                on_miss,
                cas,
            } => {
                let sop = match op {
                    ArithOp::Incr => storage::ArithOp::Incr,
                    ArithOp::Decr => storage::ArithOp::Decr,
                };
                let r = store.arith(sop, key, hash, delta, on_miss, cas);
                let (hits, misses) = match op {
                    ArithOp::Incr => (&mut c.incr_hits, &mut c.incr_misses),
                    ArithOp::Decr => (&mut c.decr_hits, &mut c.decr_misses),
                };
                // A miss that auto-creates the counter is not told apart by the store, so it
                // counts as a hit; a miss without creation counts as a miss.
                match r {
                    Ok(_) => *hits += 1,
                    Err(StoreError::NotFound) => *misses += 1,
                    Err(_) => {}
                }
                let o = match r {
                    Ok((value, cas)) => Outcome::Counter { value, cas },
                    Err(e) => outcome_of(e),
                };
                (Kind::Arith, o)
            }
            Command::Delete { key, cas } => {
                let o = match store.delete(key, hash, cas) {
                    Ok(()) => {
                        c.delete_hits += 1;
                        Outcome::Deleted
                    }
                    Err(e) => {
                        if e == StoreError::NotFound {
                            c.delete_misses += 1;
                        }
                        outcome_of(e)
                    }
                };
                (Kind::Delete, o)
            }
            Command::Touch { key, exptime } => {
                c.cmd_touch += 1;
                let o = match store.touch(key, hash, exptime) {
                    Ok(item) => {
                        c.touch_hits += 1;
                        Outcome::Touched {
                            flags: item.flags,
                            cas: item.cas,
                        }
                    }
                    Err(e) => {
                        c.touch_misses += 1;
                        outcome_of(e)
                    }
                };
                (Kind::Touch, o)
            }
            Command::Flush { delay } => {
                store.flush(delay);
                return Outcome::Done;
            }
            // Server-level commands never reach a shard.
            _ => return Outcome::UnknownCommand,
        };
        drop((store, guard));
        self.latency.borrow_mut().record(kind, started.elapsed());
        outcome
    }

    /// Runs a batch from another shard, in order, until its reply holds `cap` bytes of values;
    /// what is left goes back unexecuted in [`ReplyBatch::rest`].
    pub fn execute_batch(&self, mut batch: RequestBatch, cap: usize) -> ReplyBatch {
        let mut reply = ReplyBatch {
            outcomes: Vec::with_capacity(batch.len()),
            arena: Vec::new(),
            rest: None,
        };
        let mut done = 0;
        for (cmd, hash) in &batch.commands {
            if reply.arena.len() >= cap {
                break;
            }
            let cmd = cmd.clone().map_bytes(|s| s.get(&batch.arena));
            reply
                .outcomes
                .push(self.execute(cmd, *hash, &mut reply.arena));
            done += 1;
        }
        if done < batch.len() {
            batch.commands.drain(..done);
            reply.rest = Some(batch);
        }
        reply
    }

    /// Advances the store's clock to `unix_secs`.
    pub fn tick(&self, unix_secs: u64) {
        self.store.borrow_mut().set_time(unix_secs);
    }

    /// One background housekeeping step: reclaim expired items, move a page if needed.
    pub fn housekeep(&self) {
        let mut store = self.store.borrow_mut();
        store.reclaim(RECLAIM_BUDGET);
        store.rebalance();
    }

    /// This shard's contribution to `stats`.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counters: *self.counters.borrow(),
            store: self.store_totals(),
            classes: self.class_stats(),
            latency: self.latency.borrow().clone(),
        }
    }

    /// Zeroes the counters and histograms (`stats reset`).
    pub fn reset_stats(&self) {
        *self.counters.borrow_mut() = Counters::default();
        self.latency.borrow_mut().reset();
    }

    fn store_totals(&self) -> StoreTotals {
        StoreTotals::default()
    }

    fn class_stats(&self) -> Vec<(u32, &'static str, u64)> {
        Vec::new()
    }
}
