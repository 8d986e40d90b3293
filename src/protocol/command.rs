//! Protocol-neutral requests and results.
//!
//! Every codec decodes into [`Command`] and encodes from [`Outcome`]; the server maps commands onto a
//! shard's store and store results onto outcomes, knowing nothing of wire formats.
//!
//! Both types are generic over how bytes are held: decoding yields `Command<&[u8]>` borrowing the
//! read buffer; a batch sent to another core maps the byte fields into spans of one owned arena
//! (see [`Command::map_bytes`]) and maps them back to slices on arrival, so one executor function
//! serves local and remote requests alike.

/// How a storage command treats an existing or missing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Store unconditionally.
    Set,
    /// Store only if the key is missing.
    Add,
    /// Store only if the key exists.
    Replace,
    /// Add bytes after the existing value (flags and expiry kept).
    Append,
    /// Add bytes before the existing value (flags and expiry kept).
    Prepend,
    /// Store only if the key exists and its CAS equals the command's, 0 included (text `cas`,
    /// meta `ms` with a `C` flag): memcached answers EXISTS or NOT_FOUND, never stores blindly.
    Cas,
}

/// Direction of a counter command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    /// Add, wrapping at 2^64.
    Incr,
    /// Subtract, flooring at 0.
    Decr,
}

/// The slab classes an `lru_crawler` command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassSet {
    /// `all`.
    All,
    /// `hash` (memcached walks its hash table; here: every class).
    Hash,
    /// A list of class numbers: bit `c` set for class `c` (1..=63).
    Classes(u64),
    /// A list with a word that is no class number (memcached answers BADCLASS after its
    /// other checks).
    Invalid,
}

/// An operator command (memcached's admin commands); answered with [`Outcome::Admin`],
/// [`Outcome::CacheDump`], [`Outcome::MetaDump`] or [`Outcome::Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// `stats cachedump <class> <limit>`: the items of one class (limit 0 = as many as fit).
    CacheDump {
        /// Class number (0..=63).
        class: u32,
        /// Most items to list; 0 = no count limit.
        limit: u32,
    },
    /// `lru_crawler metadump <classes>`: every live item's metadata, streamed.
    MetaDump(ClassSet),
    /// `lru_crawler crawl <classes>`: reclaim expired and flushed items now.
    Crawl(ClassSet),
    /// `lru_crawler enable|disable`.
    Crawler {
        /// enable (true) or disable.
        enable: bool,
    },
    /// `lru_crawler sleep <microseconds>` (at most one second).
    CrawlerSleep(u32),
    /// `lru_crawler tocrawl <items>`.
    CrawlerToCrawl(u32),
    /// `cache_memlimit <megabytes>` (8..=1,000,000,000).
    MemLimit(u32),
    /// `slabs automove <0|1|2>`.
    Automove(u32),
    /// `slabs automove ratio <ratio>`; the ratio's `f64` bits.
    AutomoveRatio(u64),
    /// `refresh_certs`: reload the TLS certificate chain, key and CAs.
    RefreshCerts,
    /// `slabs reassign <src> <dst>` (src -1 = any class with a page to spare).
    Reassign {
        /// Source class.
        src: i32,
        /// Destination class.
        dst: i32,
    },
}

/// The answer to an [`Admin`] command that is one status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminStatus {
    /// Done.
    Ok,
    /// `cache_memlimit` could not change the limit.
    MemLimitFailed,
    /// A crawl or dump named no class that exists.
    CrawlerBadClass,
    /// `lru_crawler crawl hash`: memcached walks its hash table only for dumps.
    CrawlerHashCrawl,
    /// A class list without any class (`lru_crawler crawl ,`).
    CrawlerNotStarted,
    /// The crawler is disabled (`lru_crawler disable`, `-o no_lru_crawler`).
    CrawlerDisabled,
    /// `lru_crawler enable` while it runs.
    CrawlerRunning,
    /// A dump while dumping is disabled (`-X`): `stats cachedump`'s answer.
    CacheDumpDisabled,
    /// A dump while dumping is disabled (`-X`): `lru_crawler metadump`'s answer.
    MetaDumpDisabled,
    /// A metadump after other requests of the same read (memcached refuses to mix them).
    MetaDumpPipelined,
    /// Page moves are disabled (`-o no_slab_reassign`).
    ReassignDisabled,
    /// A reassign named no class that exists.
    ReassignBadClass,
    /// The source class has no page to spare.
    ReassignNoSpare,
    /// Source and destination are the same class.
    ReassignSame,
    /// `watch` while watching is disabled (`-W`).
    WatchDisabled,
    /// `watch` after other requests of the same read (memcached refuses to mix them).
    WatchPipelined,
    /// `watch` while memcached's 20 watchers watch already.
    WatchTooMany,
}

/// One item as a dump lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedItem {
    /// The key.
    pub key: Vec<u8>,
    /// Value length.
    pub value_len: u32,
    /// Item size as stored.
    pub size: u32,
    /// Slab class.
    pub class: u32,
    /// Expiry as Unix seconds; `None` = never.
    pub exptime: Option<u64>,
    /// Last access as Unix seconds.
    pub atime: u64,
    /// The item's CAS.
    pub cas: u64,
    /// Read since stored.
    pub fetched: bool,
}

/// What a meta get (`mg`) asks beyond a get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetMeta {
    /// Whether the value is wanted (else only metadata is returned).
    pub value: bool,
    /// On a miss, create an empty placeholder with this exptime and win it (meta `N`).
    pub vivify: Option<i64>,
    /// Win the recompute if fewer seconds than this are left to live (meta `R`).
    pub recache: Option<i64>,
    /// Explicit CAS for a created placeholder (meta `E`; 0 = generated).
    pub new_cas: u64,
    /// Leave the item's fetched mark and recency as they are (meta `u`).
    pub no_update: bool,
}

/// What a meta set (`ms`) with invalidation mode or an explicit CAS asks beyond a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreMeta {
    /// Meta `I`: a `cas` older than the item's stores the value as stale.
    pub invalidate: bool,
    /// Meta `E`: the new item's CAS (0 = generated).
    pub new_cas: u64,
}

/// What a meta arithmetic (`ma`) asks beyond incr/decr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArithMeta {
    /// New exptime, also for a created item (meta `T`).
    pub touch: Option<i64>,
    /// Meta `E`: the result's CAS (0 = generated).
    pub new_cas: u64,
}

/// A decoded request, with its byte fields held as `B` (a slice, or a span into an arena).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<B> {
    /// Fetch a value ([`Outcome::Value`]); `touch` also sets a new expiry (GAT, meta `T`).
    Get {
        /// The key.
        key: B,
        /// New exptime (wire value, memcached rules) for get-and-touch.
        touch: Option<i64>,
        /// A meta get (`mg`): its options, and the reply is [`Outcome::Item`] (the item with
        /// its metadata); `None` for the classic gets.
        meta: Option<GetMeta>,
    },
    /// Mark an item stale instead of deleting it (meta `md I`): [`Outcome::Deleted`].
    Invalidate {
        /// The key.
        key: B,
        /// Compare CAS (0 = none).
        cas: u64,
        /// New exptime (meta `T`).
        exptime: Option<i64>,
        /// Meta `E`: the item's new CAS (0 = generated).
        new_cas: u64,
    },
    /// Item metadata without side effects (meta `me`): [`Outcome::Info`].
    Inspect {
        /// The key.
        key: B,
    },
    /// Set/Add/Replace/Append/Prepend; `cas != 0` turns it into a compare-and-swap (mode
    /// [`StoreMode::Cas`] compares even 0).
    Store {
        /// Which storage rule applies.
        mode: StoreMode,
        /// The key.
        key: B,
        /// The data block.
        value: B,
        /// Client-opaque flags.
        flags: u32,
        /// Wire exptime (memcached rules).
        exptime: i64,
        /// Compare value; 0 = no check.
        cas: u64,
        /// Meta set options (`ms` with `I` or `E`); `None` for every other store, a plain
        /// `ms` included.
        meta: Option<StoreMeta>,
    },
    /// Increment or decrement a decimal counter.
    Arith {
        /// Incr or decr.
        op: ArithOp,
        /// The key.
        key: B,
        /// Amount to add or subtract.
        delta: u64,
        /// Value created on a miss, with its exptime; `None` = fail if missing.
        on_miss: Option<(u64, i64)>,
        /// Compare value; 0 = no check.
        cas: u64,
        /// A meta arithmetic (`ma`): its options, and the reply is [`Outcome::MetaCounter`]
        /// (which also carries the TTL); `None` for incr/decr.
        meta: Option<ArithMeta>,
    },
    /// Remove an item; `cas != 0` must match.
    Delete {
        /// The key.
        key: B,
        /// Compare value; 0 = no check.
        cas: u64,
    },
    /// Set a new expiry on an existing item.
    Touch {
        /// The key.
        key: B,
        /// Wire exptime (memcached rules).
        exptime: i64,
    },
    /// Invalidate everything stored up to now, or up to a deadline (`delay` = wire exptime, 0 = now).
    Flush {
        /// Wire exptime of the deadline; 0 = immediately.
        delay: i64,
    },
    /// Pipeline barrier; answers with an empty success.
    Noop,
    /// Ask for the server version string.
    Version,
    /// Close the connection (after replying, unless quiet).
    Quit,
    /// Text `shutdown [graceful]`: stop the server (allowed by memcached's `-A`).
    Shutdown {
        /// The mode argument was absent or `graceful`; false for anything else.
        valid_mode: bool,
    },
    /// Statistics; `group` is empty for the general group.
    Stats {
        /// Group name ("", "settings", "items", "slabs", ...).
        group: B,
    },
    /// Set the logging verbosity.
    Verbosity {
        /// Requested level.
        level: u32,
    },
    /// An operator command.
    Admin(Admin),
    /// Text `watch`: turn the connection into a log stream of these event classes
    /// ([`super::watch::class`] bits).
    Watch {
        /// The classes named (`fetchers` when none).
        events: u16,
        /// Every word named a class (memcached answers `ERROR` otherwise).
        valid: bool,
    },
    /// SASL: list mechanisms.
    SaslListMechs,
    /// SASL: start authentication with `mechanism` and the initial response.
    SaslAuth {
        /// Mechanism name, e.g. "PLAIN".
        mechanism: B,
        /// Initial client response.
        data: B,
    },
    /// SASL: continue a multi-step authentication.
    SaslStep {
        /// Mechanism name.
        mechanism: B,
        /// Client response.
        data: B,
    },
}

impl<B> Command<B> {
    /// Converts every byte field with `f`, in field order (key before value).
    pub fn map_bytes<C>(self, mut f: impl FnMut(B) -> C) -> Command<C> {
        match self {
            Command::Get { key, touch, meta } => Command::Get {
                key: f(key),
                touch,
                meta,
            },
            Command::Invalidate {
                key,
                cas,
                exptime,
                new_cas,
            } => Command::Invalidate {
                key: f(key),
                cas,
                exptime,
                new_cas,
            },
            Command::Inspect { key } => Command::Inspect { key: f(key) },
            Command::Store {
                mode,
                key,
                value,
                flags,
                exptime,
                cas,
                meta,
            } => {
                let key = f(key);
                Command::Store {
                    mode,
                    key,
                    value: f(value),
                    flags,
                    exptime,
                    cas,
                    meta,
                }
            }
            Command::Arith {
                op,
                key,
                delta,
                on_miss,
                cas,
                meta,
            } => Command::Arith {
                op,
                key: f(key),
                delta,
                on_miss,
                cas,
                meta,
            },
            Command::Delete { key, cas } => Command::Delete { key: f(key), cas },
            Command::Touch { key, exptime } => Command::Touch {
                key: f(key),
                exptime,
            },
            Command::Flush { delay } => Command::Flush { delay },
            Command::Noop => Command::Noop,
            Command::Version => Command::Version,
            Command::Quit => Command::Quit,
            Command::Shutdown { valid_mode } => Command::Shutdown { valid_mode },
            Command::Stats { group } => Command::Stats { group: f(group) },
            Command::Verbosity { level } => Command::Verbosity { level },
            Command::Admin(a) => Command::Admin(a),
            Command::Watch { events, valid } => Command::Watch { events, valid },
            Command::SaslListMechs => Command::SaslListMechs,
            Command::SaslAuth { mechanism, data } => {
                let mechanism = f(mechanism);
                Command::SaslAuth {
                    mechanism,
                    data: f(data),
                }
            }
            Command::SaslStep { mechanism, data } => {
                let mechanism = f(mechanism);
                Command::SaslStep {
                    mechanism,
                    data: f(data),
                }
            }
        }
    }

    /// The item key, for commands that address one item (these are routed to the key's shard).
    pub fn key(&self) -> Option<&B> {
        match self {
            Command::Get { key, .. }
            | Command::Inspect { key }
            | Command::Invalidate { key, .. }
            | Command::Store { key, .. }
            | Command::Arith { key, .. }
            | Command::Delete { key, .. }
            | Command::Touch { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Item metadata the meta protocol reports (flags `s t l h`, command `me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ItemMeta {
    /// Value length in bytes.
    pub value_len: u32,
    /// Seconds left to live; -1 = never expires.
    pub ttl: i64,
    /// Seconds left to live after this request's touch (meta `t` written after `T`).
    pub ttl_after: i64,
    /// Seconds since the last access (before this request).
    pub idle: u32,
    /// Whether the item had been read before this request.
    pub fetched: bool,
    /// The item's CAS.
    pub cas: u64,
    /// Slab class, 1-based.
    pub class: u32,
    /// Item size as stored (header + key + value).
    pub size: u32,
    /// Invalidated, still served (meta `X`).
    pub stale: bool,
    /// A win token had already been handed out (meta `Z`).
    pub token_sent: bool,
    /// This request won the recompute (meta `W`).
    pub won: bool,
}

/// The result of executing one command, protocol-neutral; values held as `V`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<V> {
    /// Get/GAT hit.
    Value {
        /// Client flags.
        flags: u32,
        /// The item's CAS.
        cas: u64,
        /// The data block.
        value: V,
    },
    /// A meta get hit: the item and its metadata (read before this access).
    Item {
        /// Client flags.
        flags: u32,
        /// The item's CAS.
        cas: u64,
        /// The data block (empty when not asked for).
        value: V,
        /// What the store knows about the item.
        meta: ItemMeta,
    },
    /// Metadata of an item (meta `me`).
    Info(ItemMeta),
    /// A storage command stored the item; `cas` is the new CAS.
    Stored {
        /// New CAS of the item.
        cas: u64,
    },
    /// Delete succeeded.
    Deleted,
    /// Incr/decr result.
    Counter {
        /// The new counter value.
        value: u64,
        /// New CAS of the item.
        cas: u64,
    },
    /// A meta arithmetic result.
    MetaCounter {
        /// The new counter value.
        value: u64,
        /// New CAS of the item.
        cas: u64,
        /// Seconds left to live; -1 = never expires.
        ttl: i64,
    },
    /// Touch succeeded.
    Touched {
        /// Client flags of the item.
        flags: u32,
        /// The item's CAS.
        cas: u64,
    },
    /// Flush/Noop/Verbosity succeeded (empty reply).
    Done,
    /// Version reply.
    Version(V),
    /// Statistics as name/value pairs, in the order to send them.
    Stats(Vec<(String, String)>),
    /// Statistics without the end marker (memcached's `stats sizes_enable|sizes_disable`
    /// answers end with their last pair).
    StatsOpen(Vec<(String, String)>),
    /// Unknown stats group.
    UnknownStatsGroup,
    /// An operator command's status answer.
    Admin(AdminStatus),
    /// `stats cachedump`'s items, in the order to list them.
    CacheDump(Vec<DumpedItem>),
    /// A part of a metadump; `end` on the last part.
    MetaDump {
        /// The items of this part.
        items: Vec<DumpedItem>,
        /// Whether the dump ends with this part.
        end: bool,
    },
    /// SASL mechanism list (space separated).
    SaslMechs(V),
    /// SASL authentication succeeded.
    Authenticated,
    /// SASL needs another step; `V` is the challenge.
    AuthContinue(V),
    /// Authentication failed, or the command needs authentication first.
    AuthError,
    /// Key missing (or expired / flushed).
    NotFound,
    /// CAS mismatch, or Add on an existing key.
    Exists,
    /// Append/prepend on a missing key, or a conditional store that did not happen.
    NotStored,
    /// Incr/decr on a value that is not a decimal u64.
    NonNumeric,
    /// Item larger than the maximum item size.
    TooLarge,
    /// No memory could be found for the item.
    OutOfMemory,
    /// The server cannot serve the request now (a cluster member still catching up from its
    /// peers); the client should go to another server.
    Unavailable,
    /// Malformed request (bad key etc.).
    InvalidArguments,
    /// Command the server does not implement.
    UnknownCommand,
}

impl<V> Outcome<V> {
    /// Converts the byte fields with `f`.
    pub fn map_bytes<W>(self, f: impl FnOnce(V) -> W) -> Outcome<W> {
        match self {
            Outcome::Value { flags, cas, value } => Outcome::Value {
                flags,
                cas,
                value: f(value),
            },
            Outcome::Item {
                flags,
                cas,
                value,
                meta,
            } => Outcome::Item {
                flags,
                cas,
                value: f(value),
                meta,
            },
            Outcome::Info(m) => Outcome::Info(m),
            Outcome::Stored { cas } => Outcome::Stored { cas },
            Outcome::Deleted => Outcome::Deleted,
            Outcome::Counter { value, cas } => Outcome::Counter { value, cas },
            Outcome::MetaCounter { value, cas, ttl } => Outcome::MetaCounter { value, cas, ttl },
            Outcome::Touched { flags, cas } => Outcome::Touched { flags, cas },
            Outcome::Done => Outcome::Done,
            Outcome::Version(v) => Outcome::Version(f(v)),
            Outcome::Stats(s) => Outcome::Stats(s),
            Outcome::StatsOpen(s) => Outcome::StatsOpen(s),
            Outcome::UnknownStatsGroup => Outcome::UnknownStatsGroup,
            Outcome::Admin(a) => Outcome::Admin(a),
            Outcome::CacheDump(items) => Outcome::CacheDump(items),
            Outcome::MetaDump { items, end } => Outcome::MetaDump { items, end },
            Outcome::SaslMechs(v) => Outcome::SaslMechs(f(v)),
            Outcome::Authenticated => Outcome::Authenticated,
            Outcome::AuthContinue(v) => Outcome::AuthContinue(f(v)),
            Outcome::AuthError => Outcome::AuthError,
            Outcome::NotFound => Outcome::NotFound,
            Outcome::Exists => Outcome::Exists,
            Outcome::NotStored => Outcome::NotStored,
            Outcome::NonNumeric => Outcome::NonNumeric,
            Outcome::TooLarge => Outcome::TooLarge,
            Outcome::OutOfMemory => Outcome::OutOfMemory,
            Outcome::Unavailable => Outcome::Unavailable,
            Outcome::InvalidArguments => Outcome::InvalidArguments,
            Outcome::UnknownCommand => Outcome::UnknownCommand,
        }
    }
}
