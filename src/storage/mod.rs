//! One shard's cache, pure and synchronous: knows nothing of sockets, executors or protocols.
//!
//! A [`Store`] holds items in a slab arena (`slab.rs`) under a hard memory limit, finds them
//! through a hash index of `u32` chunk ids (`index.rs`), evicts by a per-store policy
//! (`evict.rs`) and applies memcached 1.6's rules for expiry (`clock.rs`), CAS, flush and
//! arithmetic. The item header layout is documented in `item.rs`. This file holds the store and
//! its operations; `types.rs` the public vocabulary (settings, errors, what operations return,
//! statistics); `mover.rs` the page mover.
//!
//! Memory: pages (1 MiB, or the max item size if larger) are the unit of the limit; the store never
//! holds more page bytes than `memory_limit`. Outside it: the index (about 5 bytes per slot,
//! 1.15-2.3 slots per item, so under 12 bytes per item), per-page and per-class bookkeeping (tens
//! of bytes each), and a victim-candidate buffer.
//!
//! Time is coarse and driven by the caller ([`Store::set_time`]), so tests control it.
//!
//! Flush uses the CAS counter as the clock: `flush` (or the moment `set_time` reaches a delayed
//! flush's deadline) records the next CAS counter, and every item with an older CAS is invisible.
//! Items written after that point stay, even within the same second.
//!
//! Replication (`replica.rs`, `tombs.rs`): with [`VersionClock::Hybrid`] the CAS counter is a
//! hybrid logical clock (milliseconds since 2025 in the high 41 bits, a logical count in the low
//! 13), so it doubles as a version comparable across hosts; a flush then kills every version
//! below the clock's reading, including ones peers issued earlier and have not sent yet.
//! [`Store::replica`] gives a key's state, [`Store::apply`] merges a peer's state by last writer
//! wins, [`Store::walk_replicas`] lists every state for a full resync. A client's delete (or a
//! failed store that removed the key) leaves a tombstone, bounded in age (`tombstone_secs`,
//! dropped by [`Store::reclaim`]) and in bytes (`memory_limit / tombstone_share`, taken out of the
//! page cap so that tombstones count inside the limit; oldest dropped first). Gets never see
//! tombstones, flush keeps them, expiry and eviction leave none. With the default
//! [`VersionClock::Counter`] there are no tombstones and the counter counts 1, 2, 3, ... .

mod clock;
mod evict;
mod index;
mod item;
mod mover;
mod replica;
mod slab;
mod tombs;
mod types;
mod walk;

use hashbrown::HashMap;

pub use clock::MAX_RELATIVE_EXPTIME;
pub use replica::{Applied, Replica, ReplicaCursor, LOGICAL_BITS, VERSION_EPOCH_MS};
pub use tombs::TOMBSTONE_OVERHEAD;
pub use types::*;
pub use walk::{class_bit, Cursor, ReassignError, WalkedItem};

use clock::Clock;
use evict::{Carry, Evictor, Policy, SEARCH_DEPTH};
use index::Index;
use item::{Header, ItemId, CAS_MASK, HEADER_SIZE, NIL};
use slab::Slab;
use tombs::Tombstones;

/// Loans outstanding on one chunk.
#[derive(Debug, Clone, Copy)]
struct Loan {
    count: u32,
    /// The item was unlinked meanwhile: its chunk is withheld until the last loan ends.
    unlinked: bool,
}

/// Per-class counters kept by the store (the slab keeps the gauges).
#[derive(Debug, Clone, Copy, Default)]
struct ClassCounters {
    evicted: u64,
    evicted_unfetched: u64,
    expired_unfetched: u64,
    reclaimed: u64,
    outofmemory: u64,
    /// Evicted items that had an expiry time.
    evicted_nonzero: u64,
    /// Seconds the last evicted item had gone unaccessed.
    evicted_time: u32,
    /// Items the background reclaimer examined / freed.
    crawler_items_checked: u64,
    crawler_reclaimed: u64,
    /// Command results counted in the item's class (memcached's per-class `stats slabs`).
    get_hits: u64,
    set_cmds: u64,
    delete_hits: u64,
    incr_hits: u64,
    decr_hits: u64,
    cas_hits: u64,
    cas_badval: u64,
    touch_hits: u64,
    /// Page-move window: chunks allocated, hits, evictions (halved by each `rebalance` call).
    win_allocs: u64,
    win_hits: u64,
    win_evicts: u64,
    /// Evictions since this class last tried to win a page inline.
    since_attempt: u64,
}

/// Outcome of a key lookup that cleans up dead items on the way.
enum Found {
    Live(ItemId),
    Missing,
}

/// The cache of one shard.
pub struct Store {
    config: StoreConfig,
    max_item: usize,
    clock: Clock,
    slab: Slab,
    index: Index,
    policy: Policy,
    /// Last CAS counter issued.
    cas_counter: u64,
    /// Items whose CAS counter is below this are flushed.
    flush_below: u64,
    /// Deadline (relative time) of a delayed flush not yet in force.
    flush_at: Option<u32>,
    stats: StoreStats,
    classes: Vec<ClassCounters>,
    /// Where the next `reclaim` walk starts.
    reclaim_cursor: ItemId,
    /// An item that allocation must neither evict nor move (the source of an append).
    protect: ItemId,
    /// Reused buffer for victim candidates.
    candidates: Vec<ItemId>,
    /// Items whose value is lent out (`lend`): neither overwritten in place, evicted, nor moved,
    /// and their chunk not reused, until the loans end.
    lent: HashMap<ItemId, Loan>,
    /// Evictions made for room while recording is on (`record_evictions`).
    evicted: Option<Vec<Evicted>>,
    /// Versions come from the hybrid clock and deletes leave tombstones.
    hybrid: bool,
    /// Keys deleted on purpose, with the delete's version (always empty unless `hybrid`).
    tombs: Tombstones,
}

/// memcached's `isspace`.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parses a stored counter like memcached's `safe_strtoull`: decimal digits, optionally surrounded
/// by whitespace; anything else, nothing, or more than `u64::MAX` is refused.
fn parse_counter(v: &[u8]) -> Option<u64> {
    let start = v.iter().position(|&b| !is_c_space(b))?;
    let end = v.iter().rposition(|&b| !is_c_space(b))? + 1;
    let digits = &v[start..end];
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Decimal digits of `n`, written at the end of `buf`; returns the used tail.
fn format_counter(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Bytes of explicit-CAS trailer an item stored with `new_cas` needs.
fn explicit_len(new_cas: u64) -> usize {
    if new_cas != 0 {
        item::EXPLICIT_CAS_LEN
    } else {
        0
    }
}

/// Bytes of `limit` set aside for tombstones (none with counter versions).
fn tomb_budget(config: &StoreConfig, limit: usize) -> usize {
    match config.versions {
        VersionClock::Counter => 0,
        VersionClock::Hybrid => limit / config.tombstone_share as usize,
    }
}

fn check_key(key: &[u8]) -> StoreResult<()> {
    if key.is_empty() || key.len() > KEY_MAX_LEN {
        Err(StoreError::BadKey)
    } else {
        Ok(())
    }
}

impl Store {
    /// Builds a store; refuses settings that cannot work (e.g. a limit below one page).
    pub fn new(config: StoreConfig) -> Result<Store, ConfigError> {
        let bad = |why: String| Err(ConfigError::Invalid(why));
        if config.shard_count == 0 || config.shard_id >= config.shard_count {
            return bad(format!(
                "shard id {} is not below shard count {}",
                config.shard_id, config.shard_count
            ));
        }
        if !(MIN_ITEM_SIZE_LIMIT..=MAX_ITEM_SIZE_LIMIT).contains(&config.max_item_size) {
            return bad(format!(
                "max item size {} is outside {MIN_ITEM_SIZE_LIMIT}..={MAX_ITEM_SIZE_LIMIT}",
                config.max_item_size
            ));
        }
        let hybrid = config.versions == VersionClock::Hybrid;
        if hybrid && config.tombstone_share == 0 {
            return bad("tombstone share must be at least 1".to_string());
        }
        let tomb_budget = tomb_budget(&config, config.memory_limit);
        let slab = Slab::new(
            config.max_item_size,
            config.memory_limit - tomb_budget,
            config.growth_factor,
        )
        .map_err(ConfigError::Invalid)?;
        let n = slab.classes().len();
        Ok(Store {
            max_item: config.max_item_size.min(slab.largest_chunk()),
            clock: Clock::new(),
            policy: Policy::new(config.eviction, n, u64::from(config.shard_id) + 1),
            slab,
            index: Index::new(),
            cas_counter: 0,
            flush_below: 0,
            flush_at: None,
            stats: StoreStats::default(),
            classes: vec![ClassCounters::default(); n],
            reclaim_cursor: 0,
            protect: NIL,
            candidates: Vec::with_capacity(SEARCH_DEPTH),
            lent: HashMap::new(),
            evicted: None,
            hybrid,
            tombs: Tombstones::new(tomb_budget),
            config,
        })
    }

    /// Advances the coarse clock (Unix seconds); the caller ticks it, so tests control time.
    pub fn set_time(&mut self, unix_secs: u64) {
        self.clock.set(unix_secs);
        if let Some(deadline) = self.flush_at {
            if self.clock.now() >= deadline {
                self.flush_now();
            }
        }
    }

    /// The store's current time as Unix seconds.
    pub fn now(&self) -> u64 {
        self.clock.unix_now()
    }

    /// The settings this store was built with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Largest item (header + key + value) the store accepts.
    pub fn max_item_size(&self) -> usize {
        self.max_item
    }

    /// Per-item bytes counted against the item size besides key and value.
    pub const ITEM_HEADER_SIZE: usize = HEADER_SIZE;

    /// Items linked now (expired ones not yet reclaimed included).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no item is linked.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// What the item of `key` is (live, flushed or expired) without touching it, its counters
    /// or the index: the store's answer to "what would a lookup find now". `None` when no item
    /// of that key is linked.
    pub fn probe(&self, key: &[u8], hash: u64) -> Option<Probed> {
        let id = self.index.find(&self.slab, key, hash)?;
        let c = self.slab.chunk(id);
        let h = Header::load(c);
        let liveness = if item::cas(c) < self.flush_below {
            Liveness::Flushed
        } else if self.clock.is_expired(h.exptime) {
            Liveness::Expired
        } else {
            Liveness::Live
        };
        Some(Probed {
            liveness,
            class: self.slab.class_of(id) as u32 + 1,
            value_len: h.value_len(),
            ttl: self.clock.ttl_left(h.exptime),
        })
    }

    /// The slab class (1-based) an item of this key and value length is stored in; 0 when it
    /// is too large for any.
    pub fn item_class(&self, key_len: usize, value_len: usize) -> u32 {
        self.slab
            .class_for(item::item_size(key_len, value_len))
            .map_or(0, |c| c as u32 + 1)
    }

    /// Starts (true) or stops recording the items evicted to make room; while on, each
    /// eviction is kept until [`Store::take_evictions`].
    pub fn record_evictions(&mut self, on: bool) {
        match (on, self.evicted.is_some()) {
            (true, false) => self.evicted = Some(Vec::new()),
            (false, true) => self.evicted = None,
            _ => {}
        }
    }

    /// Moves the evictions recorded so far to the end of `into`.
    pub fn take_evictions(&mut self, into: &mut Vec<Evicted>) {
        if let Some(e) = &mut self.evicted {
            into.append(e);
        }
    }

    /// Starts loading, without waiting, the memory a lookup of a key with this hash will
    /// read; changes nothing. For a caller that knows its next key before it is done with the
    /// current one.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.index.prefetch(&self.slab, hash);
    }

    /// Looks up a live item.
    pub fn get(&mut self, key: &[u8], hash: u64) -> StoreResult<ItemView<'_>> {
        check_key(key)?;
        match self.lookup(key, hash) {
            Found::Live(id) => {
                self.stats.get_hits += 1;
                self.class_mut(id).get_hits += 1;
                self.hit(id);
                Ok(self.view(id))
            }
            Found::Missing => {
                self.stats.get_misses += 1;
                Err(StoreError::NotFound)
            }
        }
    }

    /// The item a view named, unchanged since (the caller has not changed the store in between,
    /// or holds a loan on it).
    pub fn item(&self, item: ItemRef) -> ItemView<'_> {
        self.view(item.0)
    }

    /// Lends a live item's value to a reader outside the store (a send the kernel performs
    /// later). Until the matching [`Store::end_loan`], the value's bytes stay at the returned
    /// address and unchanged: the item is not rewritten in place, evicted or moved to another
    /// page, and if it is deleted or replaced meanwhile, its chunk is kept from reuse until the
    /// last loan ends. Loans nest. The reader must not form a Rust reference over the bytes:
    /// the store keeps writing the item's header next to them.
    pub fn lend(&mut self, item: ItemRef) -> LentValue {
        let v = self.view(item.0).value;
        let lent = LentValue {
            ptr: v.as_ptr(),
            len: v.len(),
        };
        self.lent
            .entry(item.0)
            .and_modify(|l| l.count += 1)
            .or_insert(Loan {
                count: 1,
                unlinked: false,
            });
        lent
    }

    /// Ends one loan of [`Store::lend`]; the last one frees the chunk of an item unlinked
    /// meanwhile.
    pub fn end_loan(&mut self, item: ItemRef) {
        let Some(loan) = self.lent.get_mut(&item.0) else {
            debug_assert!(false, "loan ended twice");
            return;
        };
        loan.count -= 1;
        if loan.count == 0 {
            let unlinked = loan.unlinked;
            self.lent.remove(&item.0);
            if unlinked {
                self.slab.release_withheld(item.0);
            }
        }
    }

    /// Loans outstanding, counted per item.
    pub fn lent_items(&self) -> usize {
        self.lent.len()
    }

    /// Looks up a live item and sets its expiry (wire exptime, memcached rules).
    pub fn get_and_touch(
        &mut self,
        key: &[u8],
        hash: u64,
        exptime: i64,
    ) -> StoreResult<ItemView<'_>> {
        self.touch(key, hash, exptime)
    }

    /// Sets a new expiry on a live item.
    pub fn touch(&mut self, key: &[u8], hash: u64, exptime: i64) -> StoreResult<ItemView<'_>> {
        check_key(key)?;
        match self.lookup(key, hash) {
            Found::Live(id) => {
                self.stats.touch_hits += 1;
                self.class_mut(id).touch_hits += 1;
                let exp = self.clock.expiry(exptime);
                item::set_exptime(self.slab.chunk_mut(id), exp);
                self.hit(id);
                Ok(self.view(id))
            }
            Found::Missing => {
                self.stats.touch_misses += 1;
                Err(StoreError::NotFound)
            }
        }
    }

    /// Set/add/replace/append/prepend, with CAS when `cas != 0`; returns the new CAS.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        hash: u64,
        value: &[u8],
        flags: u32,
        exptime: i64,
        cas: u64,
    ) -> StoreResult<u64> {
        let opts = StoreOptions {
            cas,
            ..StoreOptions::default()
        };
        self.store_with(mode, key, hash, value, flags, exptime, opts)
    }

    /// [`Store::store`] with invalidation mode and explicit CAS; returns the new item's CAS.
    #[allow(clippy::too_many_arguments)]
    pub fn store_with(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        hash: u64,
        value: &[u8],
        flags: u32,
        exptime: i64,
        opts: StoreOptions,
    ) -> StoreResult<u64> {
        let cas = opts.cas;
        let trailer = explicit_len(opts.new_cas);
        check_key(key)?;
        if item::item_size(key.len(), value.len()) + trailer > self.max_item {
            self.stats.store_too_large += 1;
            // A failed set must not leave the old value readable (memcached does the same).
            if mode == StoreMode::Set && cas == 0 {
                if let Found::Live(old) = self.lookup(key, hash) {
                    self.unlink(old, Some(hash));
                    if self.hybrid {
                        self.bury(key, hash);
                    }
                }
            }
            return Err(StoreError::TooLarge);
        }
        if let Some(class) = self
            .slab
            .class_for(item::item_size(key.len(), value.len()) + trailer)
        {
            self.classes[class].set_cmds += 1;
        }
        let old = match self.lookup(key, hash) {
            Found::Live(id) => Some(id),
            Found::Missing => None,
        };
        // Invalidation mode: (expiry, token handed out) the new, stale item inherits.
        let mut stale_from = None;
        if cas != 0 || mode == StoreMode::Cas {
            match old {
                None => {
                    self.stats.cas_misses += 1;
                    return Err(StoreError::NotFound);
                }
                // As memcached with -C: no CAS ever matches.
                Some(id) if !self.config.cas_enabled => {
                    self.stats.cas_badval += 1;
                    self.class_mut(id).cas_badval += 1;
                    return Err(StoreError::Exists);
                }
                Some(id) if self.item_cas(id) == cas => {
                    self.stats.cas_hits += 1;
                    self.class_mut(id).cas_hits += 1;
                }
                Some(id) if opts.invalidate && cas < self.item_cas(id) => {
                    self.stats.cas_hits += 1;
                    self.class_mut(id).cas_hits += 1;
                    let h = Header::load(self.slab.chunk(id));
                    stale_from = Some((h.exptime, h.token_sent()));
                }
                Some(id) => {
                    self.stats.cas_badval += 1;
                    self.class_mut(id).cas_badval += 1;
                    return Err(StoreError::Exists);
                }
            }
        } else {
            match (mode, old) {
                (StoreMode::Add, Some(id)) => {
                    // memcached bumps the existing item on a failed add.
                    self.touch_recency(id);
                    return Err(StoreError::Exists);
                }
                (StoreMode::Replace, None) => return Err(StoreError::NotFound),
                (StoreMode::Append | StoreMode::Prepend, None) => {
                    return Err(StoreError::NotStored)
                }
                _ => {}
            }
        }
        let new_cas = opts.new_cas;
        let id = match (mode, old) {
            (StoreMode::Append | StoreMode::Prepend, Some(id)) => {
                self.concat(id, hash, value, mode == StoreMode::Prepend, new_cas)?
            }
            _ => {
                let exp = match stale_from {
                    Some((exp, _)) => exp,
                    None => self.clock.expiry(exptime),
                };
                // A CAS store read the item to compare: a rewrite that keeps it as hot as it
                // was; a plain set is a new item.
                let rewrite = cas != 0 || mode == StoreMode::Cas;
                self.put_as(old, key, hash, value, flags, exp, new_cas, 0, rewrite)?
            }
        };
        if let Some((_, token)) = stale_from {
            let c = self.slab.chunk_mut(id);
            item::set_stale(c, true);
            item::set_token_sent(c, token);
        }
        Ok(self.item_cas(id))
    }

    /// Looks up an item for a stampede-protected read: reports the stale and token marks, wins
    /// the caller the right to recompute (a stale item, one expiring within `recache_below`,
    /// or a placeholder created on a miss by `vivify`) at most once until the item is replaced
    /// or invalidated again. Hits and created placeholders count as `get_hits` (as memcached's
    /// mg does), misses as `get_misses`; with `touch`, as a touch instead.
    pub fn fetch(&mut self, key: &[u8], hash: u64, opts: FetchOptions) -> StoreResult<Fetched<'_>> {
        check_key(key)?;
        let (id, won, info) = match self.lookup(key, hash) {
            Found::Live(id) => {
                let info = self.info(id);
                let ttl_short = match (opts.recache_below, info.ttl) {
                    (Some(below), Some(ttl)) => i64::from(ttl) < below,
                    _ => false,
                };
                let won = !info.token_sent && (info.stale || ttl_short);
                (id, won, info)
            }
            Found::Missing => {
                let Some(ttl) = opts.vivify else {
                    if opts.touch.is_some() {
                        self.stats.touch_misses += 1;
                    } else {
                        self.stats.get_misses += 1;
                    }
                    return Err(StoreError::NotFound);
                };
                let exp = self.clock.expiry(ttl);
                let id = self.put(None, key, hash, b"", 0, exp, opts.new_cas)?;
                if let Some(exptime) = opts.touch {
                    let exp = self.clock.expiry(exptime);
                    item::set_exptime(self.slab.chunk_mut(id), exp);
                }
                (id, true, self.info(id))
            }
        };
        if won {
            item::set_token_sent(self.slab.chunk_mut(id), true);
        }
        match opts.touch {
            Some(exptime) => {
                self.stats.touch_hits += 1;
                self.class_mut(id).touch_hits += 1;
                let exp = self.clock.expiry(exptime);
                item::set_exptime(self.slab.chunk_mut(id), exp);
            }
            None => {
                self.stats.get_hits += 1;
                self.class_mut(id).get_hits += 1;
            }
        }
        if opts.no_update {
            self.count_hit(id);
        } else {
            self.hit(id);
        }
        let ttl_after = match opts.touch {
            Some(_) => self.info(id).ttl,
            None => info.ttl,
        };
        Ok(Fetched {
            item: self.view(id),
            info,
            won,
            ttl_after,
        })
    }

    /// Marks a live item stale instead of deleting it: it is still served, with a new CAS
    /// (`new_cas`, or a generated one when 0), optionally a new expiry, and its token mark
    /// cleared so the next reader wins the recompute. `cas != 0` must match. Returns the new CAS.
    pub fn invalidate(
        &mut self,
        key: &[u8],
        hash: u64,
        cas: u64,
        exptime: Option<i64>,
        new_cas: u64,
    ) -> StoreResult<u64> {
        check_key(key)?;
        let id = match self.lookup(key, hash) {
            Found::Live(id) => id,
            Found::Missing => {
                self.stats.delete_misses += 1;
                return Err(StoreError::NotFound);
            }
        };
        if cas != 0 && self.item_cas(id) != cas {
            return Err(StoreError::Exists);
        }
        let h = Header::load(self.slab.chunk(id));
        if new_cas != 0 && !h.has_explicit_cas() {
            // The trailer needs room: rewrite the item (same value, flags, expiry and marks).
            let key = item::key(self.slab.chunk(id)).to_vec();
            let vstart = HEADER_SIZE + h.key_len();
            let value = self.slab.chunk(id)[vstart..vstart + h.value_len()].to_vec();
            let (flags, exp) = (h.flags, h.exptime);
            self.put_as(Some(id), &key, hash, &value, flags, exp, new_cas, 0, true)?;
        } else {
            let c = self.next_cas();
            let chunk = self.slab.chunk_mut(id);
            let mut nh = Header::load(chunk);
            nh.cas_klen = (nh.cas_klen & !(CAS_MASK << 8)) | (c << 8);
            nh.store(chunk);
            if new_cas != 0 {
                item::set_explicit_cas(chunk, new_cas);
            } else if nh.has_explicit_cas() {
                // Drop the old explicit CAS: the generated one applies again.
                item::clear_explicit_cas(chunk);
                let class = self.slab.class_of(id);
                self.slab.account(
                    class,
                    h.total_size(),
                    h.total_size() - item::EXPLICIT_CAS_LEN,
                );
            }
        }
        let id = self
            .index
            .find(&self.slab, key, hash)
            .expect("still linked");
        let c = self.slab.chunk_mut(id);
        item::set_stale(c, true);
        item::set_token_sent(c, false);
        if let Some(exptime) = exptime {
            let exp = self.clock.expiry(exptime);
            item::set_exptime(self.slab.chunk_mut(id), exp);
        }
        Ok(self.item_cas(id))
    }

    /// Incr/decr; `on_miss` = (initial, exptime) creates a missing item. Returns (value, new CAS).
    pub fn arith(
        &mut self,
        op: ArithOp,
        key: &[u8],
        hash: u64,
        delta: u64,
        on_miss: Option<(u64, i64)>,
        cas: u64,
    ) -> StoreResult<(u64, u64)> {
        let opts = ArithOptions {
            on_miss,
            cas,
            ..ArithOptions::default()
        };
        self.arith_with(op, key, hash, delta, opts)
            .map(|r| (r.value, r.cas))
    }

    /// [`Store::arith`] with a new expiry and an explicit CAS; also reports the TTL.
    pub fn arith_with(
        &mut self,
        op: ArithOp,
        key: &[u8],
        hash: u64,
        delta: u64,
        opts: ArithOptions,
    ) -> StoreResult<Counted> {
        let ArithOptions {
            on_miss,
            cas,
            touch,
            new_cas,
        } = opts;
        check_key(key)?;
        let id = match self.lookup(key, hash) {
            Found::Live(id) => id,
            Found::Missing => {
                match op {
                    ArithOp::Incr => self.stats.incr_misses += 1,
                    ArithOp::Decr => self.stats.decr_misses += 1,
                }
                let (initial, exptime) = on_miss.ok_or(StoreError::NotFound)?;
                let mut buf = [0u8; 20];
                let digits = format_counter(initial, &mut buf);
                let exp = self.clock.expiry(touch.unwrap_or(exptime));
                let id = self.put(None, key, hash, digits, 0, exp, new_cas)?;
                return Ok(self.counted(id, initial));
            }
        };
        if cas != 0 && self.item_cas(id) != cas {
            return Err(StoreError::Exists);
        }
        if let Some(exptime) = touch {
            let exp = self.clock.expiry(exptime);
            item::set_exptime(self.slab.chunk_mut(id), exp);
        }
        let chunk = self.slab.chunk(id);
        let h = Header::load(chunk);
        let vstart = HEADER_SIZE + h.key_len();
        let current =
            parse_counter(&chunk[vstart..vstart + h.value_len()]).ok_or(StoreError::NonNumeric)?;
        let next = match op {
            ArithOp::Incr => {
                self.stats.incr_hits += 1;
                self.class_mut(id).incr_hits += 1;
                current.wrapping_add(delta)
            }
            ArithOp::Decr => {
                self.stats.decr_hits += 1;
                self.class_mut(id).decr_hits += 1;
                current.saturating_sub(delta)
            }
        };
        let mut buf = [0u8; 20];
        let digits = format_counter(next, &mut buf);
        let new_size = item::item_size(h.key_len(), digits.len()) + explicit_len(new_cas);
        if new_size <= self.slab.chunk_size_of(id) && !self.is_lent(id) {
            // Rewrite in place: same chunk, flags, expiry and stampede marks (as memcached's
            // in-place incr keeps them); new CAS and length.
            let c = self.next_cas();
            let class = self.slab.class_of(id);
            let mut nh = Header::new(c, h.key_len(), digits.len(), h.flags, h.exptime);
            nh.w0 = h.w0;
            nh.w1 = h.w1;
            nh.atime = self.clock.now();
            let chunk = self.slab.chunk_mut(id);
            nh.store(chunk);
            chunk[vstart..vstart + digits.len()].copy_from_slice(digits);
            item::set_stale(chunk, h.stale());
            item::set_token_sent(chunk, h.token_sent());
            if new_cas != 0 {
                item::set_explicit_cas(chunk, new_cas);
            }
            self.slab.account(class, h.total_size(), new_size);
            self.policy
                .on_access(&mut self.slab, class, id, self.clock.now());
        } else {
            let key = item::key(self.slab.chunk(id)).to_vec();
            let (flags, exp) = (h.flags, h.exptime);
            let new = self.put_as(Some(id), &key, hash, digits, flags, exp, new_cas, 0, true)?;
            return Ok(self.counted(new, next));
        }
        Ok(self.counted(id, next))
    }

    /// The result of an arith, just written to item `id`.
    fn counted(&self, id: ItemId, value: u64) -> Counted {
        Counted {
            value,
            cas: self.item_cas(id),
            ttl: self.clock.ttl_left(item::exptime(self.slab.chunk(id))),
        }
    }

    /// Removes an item; `cas != 0` must match.
    pub fn delete(&mut self, key: &[u8], hash: u64, cas: u64) -> StoreResult<()> {
        check_key(key)?;
        match self.lookup(key, hash) {
            Found::Live(id) => {
                if cas != 0 && self.item_cas(id) != cas {
                    return Err(StoreError::Exists);
                }
                self.stats.delete_hits += 1;
                self.class_mut(id).delete_hits += 1;
                self.unlink(id, Some(hash));
                if self.hybrid {
                    self.bury(key, hash);
                }
                Ok(())
            }
            Found::Missing => {
                self.stats.delete_misses += 1;
                Err(StoreError::NotFound)
            }
        }
    }

    /// Invalidates items stored up to now, or up to the deadline `delay` (wire exptime; 0 = now).
    pub fn flush(&mut self, delay: i64) {
        let deadline = self.clock.expiry(delay);
        if delay <= 0 || deadline <= self.clock.now() {
            self.flush_now();
        } else {
            // A later flush replaces a pending one, as in memcached.
            self.flush_at = Some(deadline);
        }
    }

    /// Walks at most `budget` items and frees the expired ones; returns how many were freed.
    /// With hybrid versions it also drops up to `budget` tombstones older than
    /// `tombstone_secs` (not counted in the result; see `tombstones_reclaimed`).
    pub fn reclaim(&mut self, budget: usize) -> usize {
        if self.hybrid && !self.tombs.is_empty() {
            let ttl = self.config.tombstone_secs;
            let gone = self.tombs.expire(self.clock.now(), ttl, budget);
            self.stats.tombstones_reclaimed += gone as u64;
        }
        if self.slab.pages_allocated() == 0 {
            return 0;
        }
        let mut freed = 0;
        let mut id = self.slab.chunk_at_or_after(self.reclaim_cursor);
        for _ in 0..budget {
            if item::key_len(self.slab.chunk(id)) != 0 {
                self.stats.crawler_items_checked += 1;
                self.class_mut(id).crawler_items_checked += 1;
                if self.is_dead(id) {
                    self.stats.crawler_reclaimed += 1;
                    self.class_mut(id).crawler_reclaimed += 1;
                    self.reclaim_item(id);
                    freed += 1;
                }
            }
            id = self.slab.chunk_at_or_after(id.wrapping_add(1));
        }
        self.reclaim_cursor = id;
        freed
    }

    /// Metadata of a live item without touching its recency, fetched mark or hit counters.
    pub fn peek(&mut self, key: &[u8], hash: u64) -> StoreResult<ItemInfo> {
        check_key(key)?;
        let Found::Live(id) = self.lookup(key, hash) else {
            return Err(StoreError::NotFound);
        };
        Ok(self.info(id))
    }

    fn info(&self, id: ItemId) -> ItemInfo {
        let h = Header::load(self.slab.chunk(id));
        ItemInfo {
            value_len: h.value_len(),
            size: h.total_size(),
            ttl: self.clock.ttl_left(h.exptime),
            idle: self.clock.now().saturating_sub(h.atime),
            fetched: h.fetched(),
            cas: self.item_cas(id),
            class: self.slab.class_of(id) as u32 + 1,
            stale: h.stale(),
            token_sent: h.token_sent(),
        }
    }

    /// Bytes per slab page (the unit of the memory limit).
    pub fn page_size(&self) -> usize {
        self.slab.page_size()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats;
        s.curr_items = self.index.len() as u64;
        s.bytes = self.slab.classes().iter().map(|c| c.mem_requested).sum();
        s.total_malloced = self.slab.bytes_allocated() as u64;
        s.limit_maxbytes = self.config.memory_limit as u64;
        s.hash_bytes = self.index.heap_bytes() as u64;
        s.hash_buckets = self.index.buckets() as u64;
        s.tombstones = self.tombs.len() as u64;
        s.tombstone_bytes = self.tombs.bytes() as u64;
        s
    }

    /// Zeroes the counters (memcached's `stats reset`); gauges are left as they are.
    pub fn reset_stats(&mut self) {
        self.stats = StoreStats::default();
        for c in &mut self.classes {
            *c = ClassCounters {
                win_allocs: c.win_allocs,
                win_hits: c.win_hits,
                win_evicts: c.win_evicts,
                since_attempt: c.since_attempt,
                ..ClassCounters::default()
            };
        }
    }

    /// Starts counting items per size for [`Store::sizes`] (the items held now included).
    pub fn enable_sizes(&mut self) {
        self.slab.enable_sizes();
    }

    /// Stops counting items per size.
    pub fn disable_sizes(&mut self) {
        self.slab.disable_sizes();
    }

    /// Items per size while counting is on (memcached's `stats sizes`): `(size, items)` for
    /// every non-empty bucket of 32 bytes, `size` the bucket's upper bound, smallest first.
    pub fn sizes(&self) -> Option<Vec<(u64, u64)>> {
        let hist = self.slab.sizes()?;
        Some(
            hist.iter()
                .enumerate()
                .filter(|(_, &n)| n != 0)
                .map(|(i, &n)| ((i * slab::SIZE_BUCKET) as u64, u64::from(n)))
                .collect(),
        )
    }

    /// Statistics of every slab class, smallest chunk first (classes without pages included).
    pub fn slab_stats(&self) -> Vec<SlabClassStats> {
        let now = self.clock.now();
        self.slab
            .classes()
            .iter()
            .zip(&self.classes)
            .enumerate()
            .map(|(i, (c, k))| {
                let age = self
                    .policy
                    .oldest(i)
                    .map(|id| now.saturating_sub(item::atime(self.slab.chunk(id))))
                    .unwrap_or(0);
                let total_chunks = c.pages.len() as u64 * u64::from(c.per_page);
                SlabClassStats {
                    class: i as u32 + 1,
                    chunk_size: u64::from(c.chunk_size),
                    chunks_per_page: u64::from(c.per_page),
                    total_pages: c.pages.len() as u64,
                    total_chunks,
                    used_chunks: u64::from(c.used),
                    free_chunks: u64::from(c.free),
                    mem_requested: c.mem_requested,
                    number: u64::from(c.used),
                    age: u64::from(age),
                    evicted: k.evicted,
                    evicted_unfetched: k.evicted_unfetched,
                    expired_unfetched: k.expired_unfetched,
                    reclaimed: k.reclaimed,
                    outofmemory: k.outofmemory,
                    evicted_nonzero: k.evicted_nonzero,
                    evicted_time: u64::from(k.evicted_time),
                    crawler_items_checked: k.crawler_items_checked,
                    crawler_reclaimed: k.crawler_reclaimed,
                    get_hits: k.get_hits,
                    set_cmds: k.set_cmds,
                    delete_hits: k.delete_hits,
                    incr_hits: k.incr_hits,
                    decr_hits: k.decr_hits,
                    cas_hits: k.cas_hits,
                    cas_badval: k.cas_badval,
                    touch_hits: k.touch_hits,
                }
            })
            .collect()
    }

    // ---- internals ----

    /// Checks every structure against the others (tests only).
    #[cfg(test)]
    pub(crate) fn verify(&self) {
        let used = self.slab.verify();
        assert_eq!(used.len(), self.index.len(), "index and arena disagree");
        for &id in &used {
            let key = item::key(self.slab.chunk(id));
            assert_eq!(self.index.find(&self.slab, key, key_hash(key)), Some(id));
        }
        for class in 0..self.slab.classes().len() {
            if let Some(list) = self.policy.list(&self.slab, class) {
                assert_eq!(list.len() as u32, self.slab.classes()[class].used);
                assert!(list.iter().all(|&id| self.slab.class_of(id) == class));
            }
        }
        assert!(self.slab.bytes_allocated() <= self.config.memory_limit - self.tombs.budget());
        self.tombs.verify();
        assert!(self.hybrid || self.tombs.is_empty());
        for s in 0..self.tombs.slot_count() {
            if let Some(t) = self.tombs.at(s) {
                assert!(
                    self.index
                        .find(&self.slab, t.key, key_hash(t.key))
                        .is_none(),
                    "a key both linked and tombstoned"
                );
            }
        }
    }

    /// The wire CAS of a CAS counter: unique across shards, never 0.
    #[inline]
    fn wire_cas(&self, counter: u64) -> u64 {
        counter
            .wrapping_mul(u64::from(self.config.shard_count))
            .wrapping_add(u64::from(self.config.shard_id))
    }

    /// The wire CAS of a linked item: its explicit one, else derived from its counter.
    #[inline]
    fn item_cas(&self, id: ItemId) -> u64 {
        if !self.config.cas_enabled {
            return 0;
        }
        let c = self.slab.chunk(id);
        item::explicit_cas(c).unwrap_or_else(|| self.wire_cas(item::cas(c)))
    }

    /// The next CAS counter (54 bits, never 0).
    #[inline]
    fn next_cas(&mut self) -> u64 {
        if self.hybrid {
            return self.next_hybrid();
        }
        self.cas_counter = (self.cas_counter + 1) & CAS_MASK;
        if self.cas_counter == 0 {
            self.cas_counter = 1;
        }
        self.cas_counter
    }

    /// The next hybrid version: past the last one and not behind the wall clock.
    #[inline(never)]
    fn next_hybrid(&mut self) -> u64 {
        let next = (self.cas_counter + 1).max(replica::wall_version()) & CAS_MASK;
        self.cas_counter = next.max(1);
        self.cas_counter
    }

    fn flush_now(&mut self) {
        self.flush_below = self.cas_counter + 1;
        if self.hybrid {
            // Versions below the clock now die, also those peers issued but have not sent yet;
            // the next local write gets at least `flush_below`, so it stays.
            self.flush_below = self.flush_below.max(replica::wall_version());
            self.cas_counter = self.flush_below - 1;
        }
        self.flush_at = None;
    }

    /// Records a tombstone with a new version for `key`, just unlinked on a client's request.
    fn bury(&mut self, key: &[u8], hash: u64) {
        let version = self.next_cas();
        self.bury_at(key, hash, version);
    }

    /// Records a tombstone of `key` at `version`.
    fn bury_at(&mut self, key: &[u8], hash: u64, version: u64) {
        let dropped = self.tombs.insert(key, hash, version, self.clock.now());
        self.stats.tombstones_reclaimed += dropped as u64;
    }

    /// Whether an item is expired or flushed.
    #[inline]
    fn is_dead(&self, id: ItemId) -> bool {
        let c = self.slab.chunk(id);
        self.clock.is_expired(item::exptime(c)) || item::cas(c) < self.flush_below
    }

    /// Finds the live item of a key; a dead one found on the way is unlinked.
    #[inline]
    fn lookup(&mut self, key: &[u8], hash: u64) -> Found {
        let Some(id) = self.index.find(&self.slab, key, hash) else {
            return Found::Missing;
        };
        let c = self.slab.chunk(id);
        if item::cas(c) < self.flush_below {
            self.stats.get_flushed += 1;
        } else if self.clock.is_expired(item::exptime(c)) {
            self.stats.get_expired += 1;
        } else {
            return Found::Live(id);
        }
        self.unlink(id, Some(hash));
        Found::Missing
    }

    /// A read or touch: marks fetched, moves it in the policy, stamps the access time.
    #[inline]
    fn hit(&mut self, id: ItemId) {
        self.count_hit(id);
        item::set_fetched(self.slab.chunk_mut(id));
        self.touch_recency(id);
    }

    /// The counters of the item's class.
    #[inline]
    fn class_mut(&mut self, id: ItemId) -> &mut ClassCounters {
        let class = self.slab.class_of(id);
        &mut self.classes[class]
    }

    /// Counts a hit in the item's class, without marking or moving the item.
    fn count_hit(&mut self, id: ItemId) {
        let class = self.slab.class_of(id);
        self.classes[class].win_hits += 1;
    }

    /// Moves an item in the policy and stamps its access time (no fetched mark).
    #[inline]
    fn touch_recency(&mut self, id: ItemId) {
        let class = self.slab.class_of(id);
        let now = self.clock.now();
        self.policy.on_access(&mut self.slab, class, id, now);
        item::set_atime(self.slab.chunk_mut(id), now);
    }

    fn view(&self, id: ItemId) -> ItemView<'_> {
        let c = self.slab.chunk(id);
        let h = Header::load(c);
        let start = HEADER_SIZE + h.key_len();
        ItemView {
            value: &c[start..start + h.value_len()],
            flags: h.flags,
            cas: self.item_cas(id),
            item: ItemRef(id),
        }
    }

    /// Removes an item from index, policy and arena; `hash` if the caller has it.
    fn unlink(&mut self, id: ItemId, hash: Option<u64>) {
        let class = self.slab.class_of(id);
        let hash = hash.unwrap_or_else(|| key_hash(item::key(self.slab.chunk(id))));
        let removed = self.index.remove(hash, id);
        debug_assert!(removed, "linked item missing from the index");
        self.policy.on_remove(&mut self.slab, class, id);
        match self.lent.get_mut(&id) {
            Some(loan) => {
                loan.unlinked = true;
                self.slab.withhold(id);
            }
            None => self.slab.free(id),
        }
    }

    /// Whether a loan holds the item's bytes in place.
    #[inline]
    fn is_lent(&self, id: ItemId) -> bool {
        !self.lent.is_empty() && self.lent.contains_key(&id)
    }

    /// Whether any item of a page is lent (the page cannot be drained).
    fn page_lent(&self, page: u32) -> bool {
        self.lent.keys().any(|&id| self.slab.page_index(id) == page)
    }

    /// Frees a dead item found by the store itself.
    fn reclaim_item(&mut self, id: ItemId) {
        let class = self.slab.class_of(id);
        let k = &mut self.classes[class];
        k.reclaimed += 1;
        self.stats.reclaimed += 1;
        if !item::fetched(self.slab.chunk(id)) {
            k.expired_unfetched += 1;
            self.stats.expired_unfetched += 1;
        }
        self.unlink(id, None);
    }

    /// Frees a live item to make room; `pressure` when its own class needed the chunk.
    fn evict_item(&mut self, id: ItemId, pressure: bool) {
        let class = self.slab.class_of(id);
        let c = self.slab.chunk(id);
        let (exptime, idle) = (
            item::exptime(c),
            self.clock.now().saturating_sub(item::atime(c)),
        );
        let k = &mut self.classes[class];
        k.evicted += 1;
        k.evicted_nonzero += u64::from(exptime != clock::NEVER);
        k.evicted_time = idle;
        k.win_evicts += u64::from(pressure);
        k.since_attempt += u64::from(pressure);
        self.stats.evictions += 1;
        self.policy.on_evict(&mut self.slab, class, id);
        let fetched = item::fetched(self.slab.chunk(id));
        if !fetched {
            k.evicted_unfetched += 1;
            self.stats.evicted_unfetched += 1;
        }
        if let Some(log) = self.evicted.as_mut().filter(|_| pressure) {
            let c = self.slab.chunk(id);
            log.push(Evicted {
                key: item::key(c).to_vec(),
                fetched,
                ttl: self.clock.ttl_left(exptime),
                idle,
                class: class as u32 + 1,
                value_len: Header::load(c).value_len(),
            });
        }
        self.unlink(id, None);
    }

    /// Writes a new item (header, key, value parts) into chunk `id` with counter `version`, or a
    /// new one when 0; returns its CAS counter.
    #[allow(clippy::too_many_arguments)]
    fn write_item(
        &mut self,
        id: ItemId,
        key: &[u8],
        parts: [&[u8]; 2],
        flags: u32,
        exp: u32,
        new_cas: u64,
        version: u64,
    ) -> u64 {
        let cas = if version != 0 {
            version
        } else {
            self.next_cas()
        };
        let vlen = parts[0].len() + parts[1].len();
        let mut h = Header::new(cas, key.len(), vlen, flags, exp);
        h.atime = self.clock.now();
        let c = self.slab.chunk_mut(id);
        h.store(c);
        let mut at = HEADER_SIZE;
        for p in [key, parts[0], parts[1]] {
            c[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        if new_cas != 0 {
            item::set_explicit_cas(c, new_cas);
        }
        cas
    }

    /// Stores a new item for `key`, replacing `old`; returns where it is, so that no caller
    /// looks it up again.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn put(
        &mut self,
        old: Option<ItemId>,
        key: &[u8],
        hash: u64,
        value: &[u8],
        flags: u32,
        exp: u32,
        new_cas: u64,
    ) -> StoreResult<ItemId> {
        self.put_as(old, key, hash, value, flags, exp, new_cas, 0, false)
    }

    /// [`Store::put`] with the item's version given (a replicated one, or 0 for a new one); with
    /// `rewrite`, the new item inherits `old`'s policy state (see `Evictor::carry`), else it is
    /// a new item to the policy.
    #[allow(clippy::too_many_arguments)]
    fn put_as(
        &mut self,
        old: Option<ItemId>,
        key: &[u8],
        hash: u64,
        value: &[u8],
        flags: u32,
        exp: u32,
        new_cas: u64,
        version: u64,
        rewrite: bool,
    ) -> StoreResult<ItemId> {
        let size = item::item_size(key.len(), value.len()) + explicit_len(new_cas);
        let class = self.slab.class_for(size).ok_or(StoreError::TooLarge)?;
        let mut carry = None;
        if let Some(id) = old {
            if rewrite {
                carry = Some(self.carry(id));
            }
            if self.slab.class_of(id) == class && !self.is_lent(id) {
                // Same class: overwrite the chunk in place, the index entry stays.
                let old_size = Header::load(self.slab.chunk(id)).total_size();
                self.policy.on_remove(&mut self.slab, class, id);
                self.write_item(id, key, [value, &[]], flags, exp, new_cas, version);
                self.slab.account(class, old_size, size);
                self.link_policy(id, class, carry);
                self.stats.total_items += 1;
                return Ok(id);
            }
            // Free first: the old chunk may serve the new item's class no more, and a failed
            // store must not leave the old value behind.
            self.unlink(id, Some(hash));
        }
        let id = match self.alloc(class) {
            Ok(id) => id,
            Err(e) => {
                // A client's failed store removed the key: as a delete, it leaves a tombstone
                // (a replicated one, version != 0, is only as good as an eviction).
                if self.hybrid && old.is_some() && version == 0 {
                    self.bury(key, hash);
                }
                return Err(e);
            }
        };
        self.write_item(id, key, [value, &[]], flags, exp, new_cas, version);
        self.link(id, class, hash, size, carry);
        Ok(id)
    }

    /// What linked item `id` passes on to its rewrite.
    fn carry(&self, id: ItemId) -> Carry {
        let class = self.slab.class_of(id);
        self.policy.carry(&self.slab, class, id, self.clock.now())
    }

    /// Links a written item into the policy: as a new one, or as a rewrite with `carry`.
    fn link_policy(&mut self, id: ItemId, class: usize, carry: Option<Carry>) {
        match carry {
            None => self.policy.on_insert(&mut self.slab, class, id),
            Some(carry) => {
                let now = self.clock.now();
                self.policy
                    .on_rewrite(&mut self.slab, class, id, carry, now);
            }
        }
    }

    /// Links a freshly written item into index, policy (see `link_policy`) and accounting.
    fn link(&mut self, id: ItemId, class: usize, hash: u64, size: usize, carry: Option<Carry>) {
        if self.hybrid && !self.tombs.is_empty() {
            // The key is written again: its delete no longer needs remembering.
            let key = item::key(self.slab.chunk(id));
            self.tombs.remove(key, hash);
        }
        self.slab.account(class, 0, size);
        self.index.insert(&self.slab, hash, id);
        self.link_policy(id, class, carry);
        self.stats.total_items += 1;
    }

    /// Append or prepend `data` to live item `id`; keeps flags and expiry, returns where the
    /// result is (the same chunk, or a new one).
    fn concat(
        &mut self,
        id: ItemId,
        hash: u64,
        data: &[u8],
        prepend: bool,
        new_cas: u64,
    ) -> StoreResult<ItemId> {
        let h = Header::load(self.slab.chunk(id));
        let (klen, vlen) = (h.key_len(), h.value_len());
        let size = item::item_size(klen, vlen + data.len()) + explicit_len(new_cas);
        if size > self.max_item {
            self.stats.store_too_large += 1;
            return Err(StoreError::TooLarge);
        }
        let class = self.slab.class_of(id);
        if size <= self.slab.chunk_size_of(id) && !self.is_lent(id) {
            // Fits the chunk: edit in place. An append is a fetch and a store: the item keeps
            // its standing in the policy.
            let carry = self.carry(id);
            self.policy.on_remove(&mut self.slab, class, id);
            let cas = self.next_cas();
            let mut nh = Header::new(cas, klen, vlen + data.len(), h.flags, h.exptime);
            nh.atime = self.clock.now();
            let c = self.slab.chunk_mut(id);
            let v = HEADER_SIZE + klen;
            if prepend {
                c.copy_within(v..v + vlen, v + data.len());
                c[v..v + data.len()].copy_from_slice(data);
            } else {
                c[v + vlen..v + vlen + data.len()].copy_from_slice(data);
            }
            nh.store(c);
            if new_cas != 0 {
                item::set_explicit_cas(c, new_cas);
            }
            self.slab.account(class, h.total_size(), size);
            self.link_policy(id, class, Some(carry));
            self.stats.total_items += 1;
            return Ok(id);
        }
        let to_class = self.slab.class_for(size).ok_or(StoreError::TooLarge)?;
        self.protect = id;
        let new = self.alloc(to_class);
        self.protect = NIL;
        let new = new?;
        let cas = self.next_cas();
        let mut nh = Header::new(cas, klen, vlen + data.len(), h.flags, h.exptime);
        nh.atime = self.clock.now();
        let (src, dst) = self.slab.chunk_pair(id, new);
        nh.store(dst);
        let v = HEADER_SIZE + klen;
        dst[HEADER_SIZE..v].copy_from_slice(&src[HEADER_SIZE..v]);
        let old_value = &src[v..v + vlen];
        if prepend {
            dst[v..v + data.len()].copy_from_slice(data);
            dst[v + data.len()..v + data.len() + vlen].copy_from_slice(old_value);
        } else {
            dst[v..v + vlen].copy_from_slice(old_value);
            dst[v + vlen..v + vlen + data.len()].copy_from_slice(data);
        }
        if new_cas != 0 {
            item::set_explicit_cas(dst, new_cas);
        }
        // Read after making room, which may have re-queued the old item.
        let carry = self.carry(id);
        self.unlink(id, Some(hash));
        self.link(new, to_class, hash, size, Some(carry));
        Ok(new)
    }

    /// A chunk of `class`: a free one, a new page, a reclaimed or evicted item, or a moved page.
    fn alloc(&mut self, class: usize) -> StoreResult<ItemId> {
        self.classes[class].win_allocs += 1;
        if let Some(id) = self.slab.pop_free(class) {
            return Ok(id);
        }
        if self.slab.grow(class) || self.make_room(class) {
            if let Some(id) = self.slab.pop_free(class) {
                return Ok(id);
            }
        }
        if self.config.evictions {
            // A class of large chunks may need several small pages' bytes for one page.
            for _ in 0..=self.slab.page_bytes(class).div_ceil(slab::PAGE) {
                if !self.rebalance_into(class, true) {
                    break;
                }
                if self.slab.grow(class) || self.slab.classes()[class].free > 0 {
                    if let Some(id) = self.slab.pop_free(class) {
                        return Ok(id);
                    }
                }
            }
        }
        self.classes[class].outofmemory += 1;
        self.stats.store_no_memory += 1;
        Err(StoreError::OutOfMemory)
    }

    /// Frees one chunk of a full class: a dead item among the policy's candidates, else the
    /// policy's victim. Every page's worth of evictions, tries to win a page from another class.
    fn make_room(&mut self, class: usize) -> bool {
        let mut cands = std::mem::take(&mut self.candidates);
        cands.clear();
        let now = self.clock.now();
        self.policy
            .candidates(&mut self.slab, class, SEARCH_DEPTH, now, &mut cands);
        cands.retain(|&id| id != self.protect && !self.is_lent(id));
        let dead = cands.iter().copied().find(|&id| self.is_dead(id));
        let freed = if let Some(id) = dead {
            self.reclaim_item(id);
            true
        } else if !self.config.evictions {
            false
        } else if let Some(&id) = cands.first() {
            self.evict_item(id, true);
            // A page's worth of evictions since the last try: see whether a colder class can
            // give a page (rate-limited so that pages do not flap between busy classes).
            if self.classes[class].since_attempt >= u64::from(self.slab.classes()[class].per_page) {
                self.classes[class].since_attempt = 0;
                self.rebalance_into(class, false);
            }
            true
        } else {
            false
        };
        self.candidates = cands;
        freed
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model_tests;
