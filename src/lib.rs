//! corecached: a memcached-compatible cache server, thread-per-core and shared-nothing.
//!
//! Crate map (one line per module):
//! - [`protocol`]: pure wire codecs, bytes <-> protocol-neutral `Command` / `Outcome`; no I/O.
//! - [`storage`]: one shard's cache (slab arena, index, eviction, TTL, CAS); pure and synchronous.
//! - [`net`]: the per-core event loop (io_uring, or epoll where refused), its executor, sockets
//!   and cross-core mail; knows nothing of memcached.
//! - [`server`]: memcached on top: shards, connections, routing between shards, start and drain.
//! - [`ring`]: key -> servers placement (ketama and the other client libraries' continua), the
//!   one implementation the client and the server's replication both use; pure.
//! - [`client`]: the Rust client: pooling, pipelined multi-get, auto-eject failover over the
//!   ring; blocking std::net, speaks the binary protocol.
//! - [`config`]: command-line flags (memcached's names) and their validation.
//!
//! Dependency rule: `server` -> `net`, `protocol`, `storage`, `ring`; `client` -> `protocol`,
//! `ring`; `net`, `protocol`, `storage` and `ring` depend on nothing of ours. No module reaches
//! upward.

pub mod client;
pub mod config;
pub mod net;
pub mod process;
pub mod protocol;
pub mod ring;
pub mod server;
pub mod storage;

/// The version string reported on the wire: a numeric memcached-style `1.6.N` prefix (libmemcached
/// parses it and rejects major version 0), then our own name and version.
pub const VERSION_STRING: &str = concat!("1.6.18-corecached-", env!("CARGO_PKG_VERSION"));
