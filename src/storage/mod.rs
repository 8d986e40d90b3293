//! One shard's cache, pure and synchronous: knows nothing of sockets, executors or protocols.
//!
//! API SKETCH — the storage work replaces every `todo!()` and may extend this API; the public
//! signatures below are what the server codes against.

use std::fmt;

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
}

/// The cache of one shard.
pub struct Store {
    _private: (),
}

impl Store {
    /// Builds a store; refuses settings that cannot work (e.g. a limit below one page).
    pub fn new(_config: StoreConfig) -> Result<Store, ConfigError> {
        todo!()
    }

    /// Advances the coarse clock (Unix seconds); the caller ticks it, so tests control time.
    pub fn set_time(&mut self, _unix_secs: u64) {
        todo!()
    }

    /// Looks up a live item.
    pub fn get(&mut self, _key: &[u8], _hash: u64) -> StoreResult<ItemView<'_>> {
        todo!()
    }

    /// Looks up a live item and sets its expiry (wire exptime, memcached rules).
    pub fn get_and_touch(
        &mut self,
        _key: &[u8],
        _hash: u64,
        _exptime: i64,
    ) -> StoreResult<ItemView<'_>> {
        todo!()
    }

    /// Sets a new expiry on a live item.
    pub fn touch(&mut self, _key: &[u8], _hash: u64, _exptime: i64) -> StoreResult<ItemView<'_>> {
        todo!()
    }

    /// Set/add/replace/append/prepend, with CAS when `cas != 0`; returns the new CAS.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        _mode: StoreMode,
        _key: &[u8],
        _hash: u64,
        _value: &[u8],
        _flags: u32,
        _exptime: i64,
        _cas: u64,
    ) -> StoreResult<u64> {
        todo!()
    }

    /// Incr/decr; `on_miss` = (initial, exptime) creates a missing item. Returns (value, new CAS).
    pub fn arith(
        &mut self,
        _op: ArithOp,
        _key: &[u8],
        _hash: u64,
        _delta: u64,
        _on_miss: Option<(u64, i64)>,
        _cas: u64,
    ) -> StoreResult<(u64, u64)> {
        todo!()
    }

    /// Removes an item; `cas != 0` must match.
    pub fn delete(&mut self, _key: &[u8], _hash: u64, _cas: u64) -> StoreResult<()> {
        todo!()
    }

    /// Invalidates items stored up to now, or up to the deadline `delay` (wire exptime; 0 = now).
    pub fn flush(&mut self, _delay: i64) {
        todo!()
    }

    /// Walks at most `budget` items and frees the expired ones; returns how many were freed.
    pub fn reclaim(&mut self, _budget: usize) -> usize {
        todo!()
    }

    /// One page-reassignment step (slab automove); returns whether a page moved.
    pub fn rebalance(&mut self) -> bool {
        todo!()
    }
}
