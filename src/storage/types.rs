//! The store's public vocabulary: settings, errors, modes, what reads and writes return, and
//! the statistics it keeps. The operations are in `mod.rs`, the page mover in `mover.rs`.

use std::fmt;

use super::item::ItemId;

/// Eviction policy selectable per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionPolicy {
    /// Least recently used (default).
    #[default]
    Lru,
    /// First in, first out.
    Fifo,
    /// Least frequently used.
    Lfu,
    /// Uniformly random victim.
    Random,
    /// S3-FIFO: small, main and ghost FIFO queues (Yang et al., SOSP '23).
    S3Fifo,
}

/// How a store numbers versions (the 54-bit CAS counter in the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionClock {
    /// 1, 2, 3, ... per shard (the default, used when replication is off).
    #[default]
    Counter,
    /// Hybrid logical clock comparable across hosts: next = max(last + 1, (unix_ms -
    /// VERSION_EPOCH_MS) << LOGICAL_BITS), 54 bits: 41 bits of milliseconds since
    /// VERSION_EPOCH_MS (2025-01-01T00:00Z) and 13 logical bits. Deletes leave tombstones.
    Hybrid,
}

/// Longest key memcached accepts.
pub const KEY_MAX_LEN: usize = 250;

/// The one 64-bit key hash, computed once per request. The index uses its low bits (buckets) and
/// top 7 bits (tags); the server's shard choice uses bits 24..56, so each shard's table stays full.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Settings of one store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Hard cap on bytes held in slab pages.
    pub memory_limit: usize,
    /// Largest item (header + key + value), memcached's `-I`.
    pub max_item_size: usize,
    /// Slab class growth factor, memcached's `-f`.
    pub growth_factor: f64,
    /// Victim choice when memory is full.
    pub eviction: EvictionPolicy,
    /// This shard's index, for cross-shard unique CAS values.
    pub shard_id: u32,
    /// Number of shards, for cross-shard unique CAS values.
    pub shard_count: u32,
    /// Whether live items may be evicted to make room (memcached's `-M` turns this off: a
    /// store that finds no free or dead chunk fails with out of memory).
    pub evictions: bool,
    /// Whether items carry CAS values (memcached's `-C` turns this off: every CAS reads 0 and
    /// a CAS-conditional store finds the item changed).
    pub cas_enabled: bool,
    /// How versions (CAS counters) are numbered; `Hybrid` for replication.
    pub versions: VersionClock,
    /// Seconds a tombstone lives (Hybrid only).
    pub tombstone_secs: u32,
    /// Tombstones may take at most `memory_limit / tombstone_share` bytes, taken out of the
    /// slab's page cap (Hybrid only; must not be 0 there).
    pub tombstone_share: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            memory_limit: 64 * 1024 * 1024,
            max_item_size: 1024 * 1024,
            growth_factor: 1.25,
            eviction: EvictionPolicy::Lru,
            shard_id: 0,
            shard_count: 1,
            evictions: true,
            cas_enabled: true,
            versions: VersionClock::Counter,
            tombstone_secs: 600,
            tombstone_share: 64,
        }
    }
}

/// Why a store could not be built.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The settings are inconsistent; the text says how.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid(why) => write!(f, "invalid store configuration: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Typed failures of store operations; each protocol maps them to its own wire answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Key missing, expired or flushed.
    NotFound,
    /// CAS mismatch, or add on an existing key.
    Exists,
    /// Append/prepend on a missing key.
    NotStored,
    /// Incr/decr on a non-decimal value.
    NonNumeric,
    /// Item larger than the maximum item size.
    TooLarge,
    /// No chunk could be found or freed for the item.
    OutOfMemory,
    /// Empty key or key over 250 bytes.
    BadKey,
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// How a store operation treats an existing or missing item (storage's own copy of the rule, so
/// storage depends on no protocol; the server maps the protocol's command onto it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Store unconditionally.
    Set,
    /// Store only if missing.
    Add,
    /// Store only if present.
    Replace,
    /// Append to the existing value (flags and expiry kept).
    Append,
    /// Prepend to the existing value (flags and expiry kept).
    Prepend,
    /// Store only over an existing item whose CAS equals the given one, even 0 (which other
    /// modes read as "no compare").
    Cas,
}

/// Counter direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    /// Add, wrapping at 2^64.
    Incr,
    /// Subtract, flooring at 0.
    Decr,
}

/// A read-only view of an item; the borrow ends before the store can change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemView<'a> {
    /// The data block.
    pub value: &'a [u8],
    /// Client flags.
    pub flags: u32,
    /// The item's CAS.
    pub cas: u64,
    /// The item itself, to lend its value out ([`Store::lend`]) before the store changes.
    pub item: ItemRef,
}

/// Names one stored item for [`Store::lend`] and [`Store::end_loan`]; valid until the store
/// changes, or for as long as a loan on it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ItemRef(pub(super) ItemId);

/// The value bytes of a lent item (see [`Store::lend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LentValue {
    /// Address of the first value byte.
    pub ptr: *const u8,
    /// Value length.
    pub len: usize,
}

/// Counters and gauges of one store, with memcached's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Items linked now (including expired ones not yet reclaimed).
    pub curr_items: u64,
    /// Items stored since start (or the last reset).
    pub total_items: u64,
    /// Bytes of items linked now (header + key + value).
    pub bytes: u64,
    /// Live items removed to free memory (including page moves that found no free chunk).
    pub evictions: u64,
    /// Evicted items that were never read.
    pub evicted_unfetched: u64,
    /// Expired or flushed items reclaimed without ever being read.
    pub expired_unfetched: u64,
    /// Expired or flushed items whose memory the store reclaimed itself (allocation, `reclaim`,
    /// page moves); those found by a lookup count as `get_expired` / `get_flushed` instead.
    pub reclaimed: u64,
    /// Lookups that found a live item (get).
    pub get_hits: u64,
    /// Lookups that found nothing live (get).
    pub get_misses: u64,
    /// Lookups (any command) that found the item expired.
    pub get_expired: u64,
    /// Lookups (any command) that found the item flushed.
    pub get_flushed: u64,
    /// Deletes that removed an item.
    pub delete_hits: u64,
    /// Deletes of a missing key.
    pub delete_misses: u64,
    /// Incr on a live item.
    pub incr_hits: u64,
    /// Incr on a missing key.
    pub incr_misses: u64,
    /// Decr on a live item.
    pub decr_hits: u64,
    /// Decr on a missing key.
    pub decr_misses: u64,
    /// CAS stores that matched.
    pub cas_hits: u64,
    /// CAS stores on a missing key.
    pub cas_misses: u64,
    /// CAS stores whose CAS did not match.
    pub cas_badval: u64,
    /// Touch / get-and-touch on a live item.
    pub touch_hits: u64,
    /// Touch / get-and-touch on a missing key.
    pub touch_misses: u64,
    /// Stores refused as too large.
    pub store_too_large: u64,
    /// Stores refused for want of memory.
    pub store_no_memory: u64,
    /// Pages moved between slab classes.
    pub slabs_moved: u64,
    /// Items relocated within their class while their page moved.
    pub slab_reassign_rescues: u64,
    /// Items evicted because their page moved and no free chunk was left for them.
    pub slab_reassign_evictions: u64,
    /// Bytes held by slab pages.
    pub total_malloced: u64,
    /// The memory limit (memcached's `limit_maxbytes`).
    pub limit_maxbytes: u64,
    /// Bytes held by the hash index (outside the limit).
    pub hash_bytes: u64,
    /// Items the background reclaimer examined (memcached's `crawler_items_checked`).
    pub crawler_items_checked: u64,
    /// Dead items the background reclaimer freed (memcached's `crawler_reclaimed`; also in
    /// `reclaimed`).
    pub crawler_reclaimed: u64,
    /// Slots of the hash index.
    pub hash_buckets: u64,
    /// Tombstones held now (Hybrid versions only).
    pub tombstones: u64,
    /// Bytes they count against their budget (key + `TOMBSTONE_OVERHEAD` each).
    pub tombstone_bytes: u64,
    /// Tombstones dropped for age or for the budget.
    pub tombstones_reclaimed: u64,
}

/// Slab and item statistics of one slab class (memcached's `stats slabs` / `stats items`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlabClassStats {
    /// Class number, 1-based as in memcached.
    pub class: u32,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// Chunks per page.
    pub chunks_per_page: u64,
    /// Pages owned by the class.
    pub total_pages: u64,
    /// Chunks in those pages.
    pub total_chunks: u64,
    /// Chunks holding items.
    pub used_chunks: u64,
    /// Chunks free.
    pub free_chunks: u64,
    /// Bytes of the items held (header + key + value).
    pub mem_requested: u64,
    /// Items held (`items:<n>:number`).
    pub number: u64,
    /// Seconds since the oldest item was last accessed (0 where the policy keeps no order).
    pub age: u64,
    /// Items evicted from this class.
    pub evicted: u64,
    /// Items evicted from this class never read.
    pub evicted_unfetched: u64,
    /// Expired or flushed items of this class reclaimed never read.
    pub expired_unfetched: u64,
    /// Expired or flushed items of this class reclaimed by the store.
    pub reclaimed: u64,
    /// Allocations in this class that failed for want of memory.
    pub outofmemory: u64,
    /// Evicted items of this class that had an expiry time.
    pub evicted_nonzero: u64,
    /// Seconds the last item evicted from this class had gone unaccessed.
    pub evicted_time: u64,
    /// Items of this class the background reclaimer examined.
    pub crawler_items_checked: u64,
    /// Expired or flushed items of this class the background reclaimer freed.
    pub crawler_reclaimed: u64,
    /// Get hits on items of this class (get, gat, mg).
    pub get_hits: u64,
    /// Storage commands whose item falls in this class (memcached's per-class `cmd_set`).
    pub set_cmds: u64,
    /// Deletes that removed an item of this class.
    pub delete_hits: u64,
    /// Incr on an item of this class.
    pub incr_hits: u64,
    /// Decr on an item of this class.
    pub decr_hits: u64,
    /// CAS stores that matched an item of this class.
    pub cas_hits: u64,
    /// CAS stores refused by an item of this class.
    pub cas_badval: u64,
    /// Touches and get-and-touches of an item of this class.
    pub touch_hits: u64,
}

/// What the store knows about one item, read without side effects on recency or stats (for the
/// meta protocol's `me` and `mg` flags `t`, `l`, `h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemInfo {
    /// Value length in bytes.
    pub value_len: usize,
    /// Item size as stored (header + key + value).
    pub size: usize,
    /// Seconds left to live; `None` = never expires.
    pub ttl: Option<u32>,
    /// Seconds since the last access.
    pub idle: u32,
    /// Whether the item was read since it was stored.
    pub fetched: bool,
    /// The item's CAS.
    pub cas: u64,
    /// Slab class, 1-based.
    pub class: u32,
    /// Invalidated but still served (see [`Store::invalidate`]).
    pub stale: bool,
    /// A win token was already handed out for this item (see [`Store::fetch`]).
    pub token_sent: bool,
}

/// Whether a linked item may still be served (see [`Store::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Live.
    Live,
    /// Invalidated by a flush; the next lookup unlinks it.
    Flushed,
    /// Expired; the next lookup unlinks it.
    Expired,
}

/// What a key's item is, read without any side effect (see [`Store::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    /// Whether it may be served.
    pub liveness: Liveness,
    /// Slab class, 1-based.
    pub class: u32,
    /// Value length in bytes.
    pub value_len: usize,
    /// Seconds left to live; `None` = never expires.
    pub ttl: Option<u32>,
}

/// An item evicted to make room, as recorded while [`Store::record_evictions`] is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// The key.
    pub key: Vec<u8>,
    /// Whether it had been read since stored.
    pub fetched: bool,
    /// Seconds it had left to live; `None` = no expiry.
    pub ttl: Option<u32>,
    /// Seconds since its last access.
    pub idle: u32,
    /// Slab class, 1-based.
    pub class: u32,
    /// Value length in bytes.
    pub value_len: usize,
}

/// What a [`Store::fetch`] may do besides reading: the stampede-protection lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FetchOptions {
    /// Set the expiry (wire exptime) after reading the metadata.
    pub touch: Option<i64>,
    /// On a miss, create an empty placeholder item with this wire exptime and win it.
    pub vivify: Option<i64>,
    /// Win if the item expires in fewer than this many seconds (items that never expire don't).
    pub recache_below: Option<i64>,
    /// Explicit wire CAS for a placeholder created by `vivify` (0 = a generated one).
    pub new_cas: u64,
    /// Count the hit but leave the fetched mark, access time and recency as they are
    /// (memcached's meta `u`: the next plain read still sees "never fetched").
    pub no_update: bool,
}

/// The result of a [`Store::fetch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched<'a> {
    /// The item after the access.
    pub item: ItemView<'a>,
    /// Its metadata before the access (a created placeholder's after creation).
    pub info: ItemInfo,
    /// This caller won the right to recompute the value; the item now records a token as sent.
    pub won: bool,
    /// Seconds left to live after the access (differs from `info.ttl` after a touch).
    pub ttl_after: Option<u32>,
}

/// Options of [`Store::arith_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArithOptions {
    /// (initial value, wire exptime): create a missing item.
    pub on_miss: Option<(u64, i64)>,
    /// Compare CAS (0 = none).
    pub cas: u64,
    /// New wire exptime for the item (also for a created one, over `on_miss`'s).
    pub touch: Option<i64>,
    /// Explicit wire CAS of the result (0 = a generated one).
    pub new_cas: u64,
}

/// The result of [`Store::arith_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// The new counter value.
    pub value: u64,
    /// The item's new CAS.
    pub cas: u64,
    /// Seconds left to live; `None` = never expires.
    pub ttl: Option<u32>,
}

/// Stampede-protection and CAS options of a store (the plain [`Store::store`] uses none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreOptions {
    /// Compare CAS (0 = none).
    pub cas: u64,
    /// Invalidation mode: a `cas` older than the item's stores the value as stale instead of
    /// failing (expiry and handed-out token kept), so a late writer cannot clobber a fresh value.
    pub invalidate: bool,
    /// Explicit wire CAS of the new item (0 = a generated one).
    pub new_cas: u64,
}

/// Largest item size accepted in the settings (memcached's `-I` ceiling).
pub const MAX_ITEM_SIZE_LIMIT: usize = 1 << 30;
/// Smallest item size accepted in the settings (memcached's `-I` floor).
pub const MIN_ITEM_SIZE_LIMIT: usize = 1024;
