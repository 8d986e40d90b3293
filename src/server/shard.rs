//! One core's shard: its `Store`, command counters and latency histograms. Every command that
//! touches a store runs through [`Shard::execute`], whether it came from a local connection, from
//! a connection on another core running a short batch directly, or over the mail — the one place
//! mutations pass (replication will hook in here).
//!
//! The shard's state sits behind one mutex. Its own core takes it uncontended (one atomic
//! exchange each way per command); another core takes it only for the few requests of a batch
//! it runs directly instead of sending them (see `router`), so contention stays rare and short:
//! the lock is held for one command, never across I/O or an await.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Instant;

use crate::net::Lent;

use crate::protocol::{
    ArithMeta, ArithOp, Command, GetMeta, ItemMeta, Outcome, StoreMeta, StoreMode,
};
use crate::storage::{
    self, ArithOptions, FetchOptions, ItemInfo, ItemRef, ItemView, Store, StoreError, StoreOptions,
};

use super::hotkeys::{self, TopK};
use super::repl::backlog::{Backlog, Read};
use super::repl::Replication;
use super::router::{ReplyBatch, RequestBatch, Span};
use super::stats::{Counters, Kind, Latencies, PrefixStats, Snapshot};
use super::watch::{Hub, Traced, ITEM_CLASSES};
use crate::protocol::repl::Frame;
use crate::storage::{Applied, Replica, ReplicaCursor};

/// Items the background reclaimer may examine per tick.
pub const RECLAIM_BUDGET: usize = 4096;

/// Values at least this long are sent from the store (lent, see [`ValueLoan`]) instead of being
/// copied into the reply. Below it the copy costs less than the loan (a lock to end it, an
/// allocation, an iovec of its own).
pub const LEND_MIN: usize = 8 * 1024;

/// A core's cache and its statistics. Owned by its core's thread; other cores reach it only
/// through [`Shard::execute`].
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    state: Mutex<State>,
    /// Loans that ended while the state was locked (by this thread or another): ended on the
    /// next lock instead of waiting for it.
    returns: Mutex<Vec<ItemRef>>,
    returns_pending: AtomicBool,
    /// `stats detail on`: count gets, hits, sets and deletes per key prefix.
    detail: AtomicBool,
    /// Where a key's prefix ends (`-D`).
    delimiter: AtomicU8,
    /// `--hotkeys-sample`: one key command in this many is counted in the hot-key table.
    hot_every: AtomicU32,
    /// The `watch` log: item events are written there while someone watches them.
    watch: Arc<Hub>,
    /// Replication (`--cluster`): mutations are recorded in the state's backlog.
    repl: Option<Arc<Replication>>,
}

/// A hit's value lent to the network layer: the store keeps the bytes in place until this is
/// dropped (see `Store::lend`). Dropping never blocks: if the shard is locked, the loan is
/// queued and ended by the next command.
pub struct ValueLoan {
    shard: Arc<Shard>,
    item: ItemRef,
}

impl Drop for ValueLoan {
    fn drop(&mut self) {
        let shard = &self.shard;
        match shard.state.try_lock() {
            Ok(mut state) => state.store.end_loan(self.item),
            Err(TryLockError::Poisoned(p)) => p.into_inner().store.end_loan(self.item),
            Err(TryLockError::WouldBlock) => {
                shard
                    .returns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(self.item);
                shard.returns_pending.store(true, Ordering::Release);
            }
        }
    }
}

/// What the shard's mutex guards.
struct State {
    store: Store,
    counters: Counters,
    latency: Latencies,
    /// Per key prefix counters while detail is on (`stats detail dump`).
    prefixes: PrefixStats,
    /// This shard's replication backlog (with `--cluster`).
    backlog: Option<Backlog>,
    /// The sampled hot keys of this shard's keyspace.
    hot: TopK,
}

fn outcome_of<B>(e: StoreError) -> Outcome<B> {
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

/// Whether a key command may change its key (everything but a plain get).
fn may_mutate(cmd: &Command<&[u8]>) -> bool {
    !matches!(
        cmd,
        Command::Get {
            touch: None,
            meta: None,
            ..
        } | Command::Inspect { .. }
    )
}

/// What replication compares before and after a command: version, expiry, deleted.
type KeyState = Option<(u64, u64, bool)>;

fn state_of(store: &Store, key: &[u8], hash: u64) -> KeyState {
    store
        .replica(key, hash)
        .map(|r| (r.version, r.exptime, r.deleted))
}

/// Records in the backlog what a command changed about `key`: its new state (a new version:
/// the item or its tombstone), or its new expiry (the same version: a touch).
fn record_change(
    backlog: &mut Backlog,
    store: &Store,
    key: &[u8],
    hash: u64,
    peers: u64,
    before: KeyState,
) {
    let Some(r) = store.replica(key, hash) else {
        // Gone without a tombstone: a touch into the past expired it. The same version,
        // expired (unix second 1), does the same on the peers.
        if let Some((version, _, false)) = before {
            backlog.push(peers, |seq, out| {
                Frame::Touch {
                    seq,
                    version,
                    exptime: 1,
                    key,
                }
                .encode(out)
            });
        }
        return;
    };
    if before == Some((r.version, r.exptime, r.deleted)) {
        return;
    }
    let same_version = before.is_some_and(|(v, _, d)| v == r.version && d == r.deleted);
    backlog.push(peers, |seq, out| {
        let frame = if same_version {
            Frame::Touch {
                seq,
                version: r.version,
                exptime: r.exptime,
                key: r.key,
            }
        } else if r.deleted {
            Frame::Tombstone {
                seq,
                version: r.version,
                key: r.key,
            }
        } else {
            Frame::Item {
                seq,
                version: r.version,
                flags: r.flags,
                exptime: r.exptime,
                key: r.key,
                value: r.value,
            }
        };
        frame.encode(out)
    });
}

fn item_meta(i: &ItemInfo) -> ItemMeta {
    ItemMeta {
        value_len: i.value_len as u32,
        ttl: i.ttl.map_or(-1, i64::from),
        ttl_after: i.ttl.map_or(-1, i64::from),
        idle: i.idle,
        fetched: i.fetched,
        cas: i.cas,
        class: i.class,
        size: i.size as u32,
        stale: i.stale,
        token_sent: i.token_sent,
        won: false,
    }
}

fn arith_op(op: ArithOp) -> storage::ArithOp {
    match op {
        ArithOp::Incr => storage::ArithOp::Incr,
        ArithOp::Decr => storage::ArithOp::Decr,
    }
}

fn store_mode(m: StoreMode) -> storage::StoreMode {
    match m {
        StoreMode::Set => storage::StoreMode::Set,
        StoreMode::Add => storage::StoreMode::Add,
        StoreMode::Replace => storage::StoreMode::Replace,
        StoreMode::Append => storage::StoreMode::Append,
        StoreMode::Prepend => storage::StoreMode::Prepend,
        StoreMode::Cas => storage::StoreMode::Cas,
    }
}

impl Shard {
    /// Wraps a store as shard `id` of `shards`, logging its events to `watch` and recording
    /// its mutations for `repl`'s peers.
    pub fn new(
        id: usize,
        shards: usize,
        store: Store,
        watch: Arc<Hub>,
        repl: Option<Arc<Replication>>,
    ) -> Shard {
        let backlog = repl
            .as_ref()
            .map(|r| Backlog::new((r.cluster.backlog_bytes / shards.max(1)).max(1 << 16)));
        Shard {
            id,
            state: Mutex::new(State {
                store,
                counters: Counters::default(),
                latency: Latencies::default(),
                prefixes: PrefixStats::default(),
                backlog,
                hot: TopK::default(),
            }),
            returns: Mutex::new(Vec::new()),
            returns_pending: AtomicBool::new(false),
            detail: AtomicBool::new(false),
            delimiter: AtomicU8::new(b':'),
            hot_every: AtomicU32::new(hotkeys::DEFAULT_SAMPLE_EVERY),
            watch,
            repl,
        }
    }

    /// Turns per-prefix counting (`stats detail on|off`) on or off; `-D` sets the delimiter.
    pub fn set_detail(&self, on: bool, delimiter: u8) {
        self.delimiter.store(delimiter, Ordering::Relaxed);
        self.detail.store(on, Ordering::Relaxed);
    }

    /// Samples one key command in `every` for the hot-key table (0: none).
    pub fn set_hotkeys_sample(&self, every: u32) {
        self.hot_every.store(every, Ordering::Relaxed);
    }

    /// The hot-key sampling interval.
    pub fn hotkeys_sample(&self) -> u32 {
        self.hot_every.load(Ordering::Relaxed)
    }

    /// Whether per-prefix counting is on.
    pub fn detail_on(&self) -> bool {
        self.detail.load(Ordering::Relaxed)
    }

    /// This shard's per-prefix counters.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.lock().prefixes.clone()
    }

    /// Starts or stops counting items per size (`stats sizes_enable|sizes_disable`).
    pub fn set_track_sizes(&self, on: bool) {
        let store = &mut self.lock().store;
        if on {
            store.enable_sizes();
        } else {
            store.disable_sizes();
        }
    }

    /// Items per size while counted (see `Store::sizes`).
    pub fn sizes(&self) -> Option<Vec<(u64, u64)>> {
        self.lock().store.sizes()
    }

    /// The state. A panic while it was held cannot leave the store half-changed in a way a
    /// later command would misread (each command's changes are complete before it returns a
    /// value), so a poisoned lock is used as is rather than taking the server down with it.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.returns_pending.load(Ordering::Acquire) {
            self.returns_pending.store(false, Ordering::Relaxed);
            let returned =
                std::mem::take(&mut *self.returns.lock().unwrap_or_else(PoisonError::into_inner));
            for item in returned {
                state.store.end_loan(item);
            }
        }
        state
    }

    /// Runs one item command (or a flush) against this shard's store for the connection with
    /// descriptor `cfd` (named in `watch` lines). Values of hits are copied into `arena`; the
    /// outcome refers to them by span. `next`, the hash of the key the caller runs here next,
    /// is prefetched first (see [`Store::prefetch`]).
    pub fn execute(
        &self,
        cmd: Command<&[u8]>,
        hash: u64,
        next: Option<u64>,
        cfd: i32,
        arena: &mut Vec<u8>,
    ) -> Outcome<Span> {
        self.execute_with(cmd, hash, next, cfd, |o| {
            o.map_bytes(|b| Span::push(arena, b))
        })
    }

    /// Runs one item command (or a flush) and hands its outcome to `answer` while the shard is
    /// still locked, so a hit's value can be encoded straight from the store (one copy instead
    /// of two). The store keeps the hit/miss counters; this counts the commands and their
    /// latency (`answer` not included).
    pub fn execute_with<R>(
        &self,
        cmd: Command<&[u8]>,
        hash: u64,
        next: Option<u64>,
        cfd: i32,
        answer: impl FnOnce(Outcome<&[u8]>) -> R,
    ) -> R {
        self.run(None, cmd, hash, next, cfd, |o, _| answer(o))
    }

    /// As [`Shard::execute_with`], and a get's hit of at least [`LEND_MIN`] bytes comes with
    /// its value lent, for sending it from the store without a copy.
    pub fn execute_lending<R>(
        self: &Arc<Self>,
        cmd: Command<&[u8]>,
        hash: u64,
        next: Option<u64>,
        cfd: i32,
        answer: impl FnOnce(Outcome<&[u8]>, Option<Lent>) -> R,
    ) -> R {
        self.run(Some(self), cmd, hash, next, cfd, answer)
    }

    fn run<R>(
        &self,
        lender: Option<&Arc<Shard>>,
        cmd: Command<&[u8]>,
        hash: u64,
        next: Option<u64>,
        cfd: i32,
        answer: impl FnOnce(Outcome<&[u8]>, Option<Lent>) -> R,
    ) -> R {
        let started = super::stats::sample_latency().then(Instant::now);
        let mut state = self.lock();
        let State {
            store,
            counters: c,
            latency,
            prefixes,
            backlog,
            hot,
        } = &mut *state;
        // With --cluster: the key's replicable state before a command that may change it, and
        // the peers that own it.
        let replicated = match (&self.repl, cmd.key()) {
            (Some(repl), Some(&key)) if may_mutate(&cmd) => {
                let peers = repl.peers_of(key);
                (peers != 0).then(|| (key, peers, state_of(store, key, hash)))
            }
            _ => None,
        };
        if let Some(&key) = cmd.key() {
            if hotkeys::sample(self.hot_every.load(Ordering::Relaxed)) {
                hot.record(key, hash);
            }
        }
        if let Some(next) = next {
            // Loads while this command runs, instead of stalling the next one.
            store.prefetch(next);
        }
        // The one check the data path pays while detail is off.
        let detail = self
            .detail
            .load(Ordering::Relaxed)
            .then(|| self.delimiter.load(Ordering::Relaxed));
        // The one check the data path pays while nobody watches the store's events.
        let watched = self.watch.flags() & ITEM_CLASSES;
        let traced = if watched != 0 {
            Some((Traced::before(watched, store, &cmd, hash), cmd.clone()))
        } else {
            store.record_evictions(false);
            None
        };
        fn value(item: ItemView<'_>) -> Outcome<&[u8]> {
            Outcome::Value {
                flags: item.flags,
                cas: item.cas,
                value: item.value,
            }
        }
        let mut lent = None;
        let (kind, outcome) = match cmd {
            Command::Get {
                key,
                touch,
                meta: None,
            } => {
                let (kind, found) = match touch {
                    None => {
                        c.cmd_get += 1;
                        (Kind::Get, store.get(key, hash).map(|v| v.item))
                    }
                    Some(exptime) => {
                        c.cmd_touch += 1;
                        let found = store.get_and_touch(key, hash, exptime);
                        (Kind::Gat, found.map(|v| v.item))
                    }
                };
                if let Some(d) = detail {
                    prefixes.record(key, d, |p| {
                        p.get += 1;
                        p.hit += u64::from(found.is_ok());
                    });
                }
                match found {
                    Ok(item) => {
                        if let Some(shard) =
                            lender.filter(|_| store.item(item).value.len() >= LEND_MIN)
                        {
                            let v = store.lend(item);
                            let loan = ValueLoan {
                                shard: shard.clone(),
                                item,
                            };
                            // SAFETY: the store keeps the value's bytes allocated and unchanged
                            // while the loan lasts (`Store::lend`), and the loan ends only when
                            // `ValueLoan` (kept by the `Lent`) is dropped. The network layer never
                            // forms a reference over them; only the kernel reads them.
                            lent = Some(unsafe { Lent::new(v.ptr, v.len, Box::new(loan)) });
                        }
                        (kind, Ok(value(store.item(item))))
                    }
                    Err(e) => (kind, Err(e)),
                }
            }
            Command::Get {
                key,
                touch,
                meta:
                    Some(GetMeta {
                        value: want_value,
                        vivify,
                        recache,
                        new_cas,
                        no_update,
                    }),
            } => {
                match touch {
                    None => c.cmd_get += 1,
                    Some(_) => c.cmd_touch += 1,
                }
                let opts = FetchOptions {
                    touch,
                    vivify,
                    recache_below: recache,
                    new_cas,
                    no_update,
                };
                // Metadata is read before the access: memcached reports h, l and t as they were.
                let o = store.fetch(key, hash, opts).map(|f| {
                    let meta = ItemMeta {
                        won: f.won,
                        ttl_after: f.ttl_after.map_or(-1, i64::from),
                        ..item_meta(&f.info)
                    };
                    let value = if want_value { f.item.value } else { &[] };
                    Outcome::Item {
                        flags: f.item.flags,
                        cas: f.item.cas,
                        value,
                        meta,
                    }
                });
                (Kind::Get, o)
            }
            Command::Store {
                mode,
                key,
                value,
                flags,
                exptime,
                cas,
                meta:
                    Some(StoreMeta {
                        invalidate,
                        new_cas,
                    }),
            } => {
                c.cmd_set += 1;
                let opts = StoreOptions {
                    cas,
                    invalidate,
                    new_cas,
                };
                let o = store
                    .store_with(store_mode(mode), key, hash, value, flags, exptime, opts)
                    .map(|cas| Outcome::Stored { cas });
                (Kind::Set, o)
            }
            Command::Invalidate {
                key,
                cas,
                exptime,
                new_cas,
            } => {
                let o = store
                    .invalidate(key, hash, cas, exptime, new_cas)
                    .map(|_| Outcome::Deleted);
                (Kind::Delete, o)
            }
            Command::Arith {
                op,
                key,
                delta,
                on_miss,
                cas,
                meta: Some(ArithMeta { touch, new_cas }),
            } => {
                let opts = ArithOptions {
                    on_miss,
                    cas,
                    touch,
                    new_cas,
                };
                let o = store
                    .arith_with(arith_op(op), key, hash, delta, opts)
                    .map(|r| Outcome::MetaCounter {
                        value: r.value,
                        cas: r.cas,
                        ttl: r.ttl.map_or(-1, i64::from),
                    });
                (Kind::Arith, o)
            }
            Command::Inspect { key } => {
                c.cmd_meta += 1;
                let o = store.peek(key, hash).map(|i| Outcome::Info(item_meta(&i)));
                (Kind::Get, o)
            }
            Command::Store {
                mode,
                key,
                value,
                flags,
                exptime,
                cas,
                meta: None,
            } => {
                c.cmd_set += 1;
                if let Some(d) = detail {
                    prefixes.record(key, d, |p| p.set += 1);
                }
                let o = store
                    .store(store_mode(mode), key, hash, value, flags, exptime, cas)
                    .map(|cas| Outcome::Stored { cas });
                (Kind::Set, o)
            }
            Command::Arith {
                op,
                key,
                delta,
                on_miss,
                cas,
                meta: None,
            } => {
                let o = store
                    .arith(arith_op(op), key, hash, delta, on_miss, cas)
                    .map(|(value, cas)| Outcome::Counter { value, cas });
                (Kind::Arith, o)
            }
            Command::Delete { key, cas } => {
                if let Some(d) = detail {
                    prefixes.record(key, d, |p| p.del += 1);
                }
                let o = store.delete(key, hash, cas).map(|()| Outcome::Deleted);
                (Kind::Delete, o)
            }
            Command::Touch { key, exptime } => {
                c.cmd_touch += 1;
                let o = store
                    .touch(key, hash, exptime)
                    .map(|item| Outcome::Touched {
                        flags: item.flags,
                        cas: item.cas,
                    });
                (Kind::Touch, o)
            }
            Command::Flush { delay } => {
                store.flush(delay);
                if let (Some(repl), Some(b)) = (&self.repl, backlog.as_mut()) {
                    // memcached's exptime rule: up to 30 days relative, beyond that a unix time.
                    let at = match delay {
                        ..=0 => 0,
                        1..=2_592_000 => crate::server::stats::unix_now() + delay as u64,
                        _ => delay as u64,
                    };
                    b.push(repl.all_peers(), |seq, out| {
                        Frame::Flush { seq, at }.encode(out)
                    });
                }
                return answer(Outcome::Done, None);
            }
            // Server-level commands never reach a shard.
            _ => return answer(Outcome::UnknownCommand, None),
        };
        latency.record(kind, started.map(|t| t.elapsed()));
        let result = outcome.as_ref().map(|_| ()).map_err(|e| *e);
        let r = answer(outcome.unwrap_or_else(outcome_of), lent);
        if let (Some((key, peers, before)), Some(b)) = (replicated, backlog.as_mut()) {
            // Whatever the outcome: a refused set, too, may have removed the old value.
            record_change(b, store, key, hash, peers, before);
        }
        if let Some((traced, cmd)) = traced {
            traced.log(&self.watch, store, &cmd, hash, result, cfd);
        }
        r
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
        for (i, (cmd, hash)) in batch.commands.iter().enumerate() {
            if reply.arena.len() >= cap {
                break;
            }
            let cmd = cmd.clone().map_bytes(|s| s.get(&batch.arena));
            let next = batch.commands.get(i + 1).map(|&(_, h)| h);
            reply
                .outcomes
                .push(self.execute(cmd, *hash, next, batch.cfd, &mut reply.arena));
            done += 1;
        }
        if done < batch.len() {
            batch.commands.drain(..done);
            reply.rest = Some(batch);
        }
        reply
    }

    /// The last position of this shard's replication backlog.
    pub fn repl_last_seq(&self) -> u64 {
        self.lock().backlog.as_ref().map_or(0, |b| b.last_seq())
    }

    /// Whether a peer at position `at` can go on from the backlog.
    pub fn repl_covers(&self, at: u64) -> bool {
        self.lock().backlog.as_ref().is_some_and(|b| b.covers(at))
    }

    /// Copies the backlog's frames after `after` for member `peer` into `out` (at most about
    /// `max` bytes).
    pub fn repl_read(&self, after: u64, peer: usize, out: &mut Vec<u8>, max: usize) -> Read {
        match &self.lock().backlog {
            Some(b) => b.read(after, peer, out, max),
            None => Read::Gap,
        }
    }

    /// Bytes held in the backlog and records dropped from it.
    pub fn repl_backlog(&self) -> (usize, u64) {
        self.lock()
            .backlog
            .as_ref()
            .map_or((0, 0), |b| (b.bytes(), b.dropped))
    }

    /// One slice of a full resync: the items and tombstones after `cursor` whose key member
    /// `peer` owns, as frames (position 0) in `out`; the cursor to go on from, and how many.
    pub fn repl_walk(
        &self,
        cursor: ReplicaCursor,
        budget: usize,
        repl: &Replication,
        peer: usize,
        out: &mut Vec<u8>,
    ) -> (Option<ReplicaCursor>, u64) {
        let state = self.lock();
        let mut n = 0;
        let next = state.store.walk_replicas(cursor, budget, |r| {
            if repl.peers_of(r.key) & (1 << peer) == 0 {
                return;
            }
            n += 1;
            let frame = if r.deleted {
                Frame::Tombstone {
                    seq: 0,
                    version: r.version,
                    key: r.key,
                }
            } else {
                Frame::Item {
                    seq: 0,
                    version: r.version,
                    flags: r.flags,
                    exptime: r.exptime,
                    key: r.key,
                    value: r.value,
                }
            };
            frame.encode(out);
        });
        (next, n)
    }

    /// Applies a peer's record of a key's state (last writer wins); counts a tie of two
    /// different states of one version as a conflict.
    pub fn repl_apply(&self, repl: &Replication, r: &Replica<'_>, hash: u64) -> Applied {
        let mut state = self.lock();
        let tie = state
            .store
            .replica(r.key, hash)
            .is_some_and(|l| l.version == r.version && l != *r);
        if tie {
            repl.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        state.store.apply(r, hash)
    }

    /// Applies a peer's touch of one version of a key.
    pub fn repl_apply_touch(&self, key: &[u8], hash: u64, version: u64, exptime: u64) -> Applied {
        self.lock().store.apply_touch(key, hash, version, exptime)
    }

    /// Applies a peer's `flush_all`: at once (`at` 0 or past) or at unix second `at`.
    pub fn repl_flush(&self, at: u64) {
        // A unix time is past memcached's 30 days, so the store reads it as one.
        self.lock().store.flush(at.min(i64::MAX as u64) as i64);
    }

    /// Advances the store's clock to `unix_secs`.
    pub fn tick(&self, unix_secs: u64) {
        self.lock().store.set_time(unix_secs);
    }

    /// One background housekeeping step: reclaim expired items (unless the crawler is off),
    /// move a page if needed (unless automove is off).
    pub fn housekeep(&self, reclaim: bool, rebalance: bool) {
        let store = &mut self.lock().store;
        if reclaim {
            store.reclaim(RECLAIM_BUDGET);
        }
        if rebalance {
            store.rebalance();
        }
    }

    /// Runs `f` on the store under the shard's lock (operator commands: walks, page moves,
    /// limits). Keep `f` bounded: the shard serves nothing meanwhile.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.lock().store)
    }

    /// This shard's contribution to `stats`.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Snapshot {
            counters: state.counters,
            store: state.store.stats(),
            classes: state.store.slab_stats(),
            latency: state.latency.clone(),
            hot: state.hot.keys().to_vec(),
        }
    }

    /// Zeroes the counters and histograms (`stats reset`).
    pub fn reset_stats(&self) {
        let mut state = self.lock();
        state.counters = Counters::default();
        state.latency.reset();
        state.prefixes = PrefixStats::default();
        state.hot.clear();
        state.store.reset_stats();
    }
}
