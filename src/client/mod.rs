//! The Rust client: blocking (std::net, no runtime), binary protocol through
//! [`crate::protocol::binary`]'s request encoder and response decoder, keys placed by a
//! [`crate::ring::Continuum`] exactly as libmemcached / spymemcached / twemproxy place them.
//!
//! - A small pool of connections per server ([`Config::pool_size`] idle connections kept).
//! - [`Client::get_multi`] pipelines GetKQ ... Noop per server, all servers in parallel.
//! - Failover with libmemcached's auto-eject semantics: [`Config::failure_limit`] consecutive
//!   failures eject a server for [`Config::retry_interval`]; the continuum is rebuilt without it
//!   (its keys move to the next server on the ring), and rebuilt with it once the interval has
//!   passed; a re-added server that fails once more is ejected again at once (libmemcached
//!   "retries dead servers once"). The request that ejects a server is retried once on its new
//!   owner.
//! - Optional replica reads ([`Config::replica_reads`]): a get whose owner fails is answered by
//!   the next distinct server on the ring.
//! - Replicated fleets ([`Config::replicas`], the servers' `--replicas`): a key whose owner is
//!   ejected goes to its next live owner on the full ring, the server that holds its copy, for
//!   reads and writes alike. The rebuilt continuum would agree for equal weights only: with
//!   weights, the servers left share the dead one's weight and a few keys move elsewhere.

mod pool;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::{ArithOp, Command, Outcome, StoreMode};

pub use crate::ring::{Continuum, Distribution, Node};
use pool::{Packet, ServerPool};

/// Client settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Placement algorithm (default `ketama`).
    pub distribution: Distribution,
    /// TCP connect timeout per address.
    pub connect_timeout: Duration,
    /// Read and write timeout of every socket operation.
    pub io_timeout: Duration,
    /// Idle connections kept per server.
    pub pool_size: usize,
    /// Consecutive failures that eject a server (libmemcached SERVER_FAILURE_LIMIT); 0 = never
    /// eject.
    pub failure_limit: u32,
    /// How long an ejected server stays out (libmemcached RETRY_TIMEOUT / dead timeout).
    pub retry_interval: Duration,
    /// Read from the next distinct server on the ring when a get's owner fails.
    pub replica_reads: bool,
    /// Copies the servers keep of each key beyond its owner (their `--replicas`); 0 = none.
    /// With copies, a key of an ejected server is sent to its first live owner.
    pub replicas: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            distribution: Distribution::Ketama,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            pool_size: 4,
            failure_limit: 2,
            retry_interval: Duration::from_secs(2),
            replica_reads: false,
            replicas: 0,
        }
    }
}

/// What went wrong, with the server and operation it concerns.
#[derive(Debug)]
pub enum Error {
    /// Connecting, reading or writing failed (including timeouts and a closed connection).
    Io {
        /// `host:port` as configured.
        server: String,
        /// The operation (e.g. "get", "connect").
        op: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The server sent something that is not a valid reply to the request.
    Protocol {
        /// `host:port`.
        server: String,
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The server refused the request with an error status (too large, out of memory, ...).
    Server {
        /// `host:port`.
        server: String,
        /// The operation.
        op: &'static str,
        /// The status as memcached names it.
        status: String,
    },
    /// The request cannot be encoded (key too long, exptime out of range).
    Request {
        /// The operation.
        op: &'static str,
        /// Why.
        detail: String,
    },
    /// Every server is ejected (or none is configured).
    NoServers {
        /// The operation.
        op: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { server, op, source } => write!(f, "{op} on {server}: {source}"),
            Error::Protocol { server, op, detail } => {
                write!(f, "{op} on {server}: protocol error: {detail}")
            }
            Error::Server { server, op, status } => write!(f, "{op} on {server}: {status}"),
            Error::Request { op, detail } => write!(f, "{op}: {detail}"),
            Error::NoServers { op } => write!(f, "{op}: no live server"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// Whether the server could not be reached or dropped the connection (counts towards
    /// ejection).
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Protocol { .. })
    }
}

/// One server's statistics: (name, value) in the server's order.
pub type ServerStats = Vec<(String, String)>;

/// Hits of one server's multi-get pipeline.
type Hits = Vec<(Vec<u8>, Value)>;

/// Result of client operations.
pub type Result<T> = std::result::Result<T, Error>;

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The data.
    pub data: Vec<u8>,
    /// Client flags.
    pub flags: u32,
    /// CAS unique.
    pub cas: u64,
}

/// Result of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasResult {
    /// Stored; the new CAS.
    Stored(u64),
    /// The item changed since the CAS was read.
    Exists,
    /// No such item.
    NotFound,
}

/// Per-server failure state (libmemcached's server_failure_counter / next_retry).
#[derive(Debug, Default)]
struct Health {
    failures: u32,
    ejected_until: Option<Instant>,
}

/// The current continuum and when it must be rebuilt.
struct Ring {
    continuum: Arc<Continuum>,
    next_rebuild: Option<Instant>,
}

/// A client for a list of memcached-compatible servers. `Sync`: share it between threads.
pub struct Client {
    config: Config,
    nodes: Vec<Node>,
    servers: Vec<ServerPool>,
    health: Vec<Mutex<Health>>,
    ring: Mutex<Ring>,
    /// The continuum of every configured server: owners and replica reads follow it.
    full: Arc<Continuum>,
}

impl Client {
    /// A client for `nodes` (in this order: the order is part of the placement).
    pub fn new(nodes: Vec<Node>, config: Config) -> Client {
        let servers = nodes
            .iter()
            .map(|n| ServerPool::new(n.addr(), &config))
            .collect();
        let health = nodes.iter().map(|_| Mutex::default()).collect();
        let continuum = Arc::new(Continuum::new(config.distribution, &nodes));
        Client {
            config,
            nodes,
            servers,
            health,
            full: continuum.clone(),
            ring: Mutex::new(Ring {
                continuum,
                next_rebuild: None,
            }),
        }
    }

    /// Parses `host:port[:weight],...` and builds a client with `config`.
    pub fn from_list(list: &str, config: Config) -> std::result::Result<Client, String> {
        Ok(Client::new(Node::parse_list(list)?, config))
    }

    /// The configured servers.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The continuum in use now (without ejected servers), rebuilt first if a retry interval
    /// has passed.
    pub fn continuum(&self) -> Arc<Continuum> {
        let mut ring = self.ring.lock().unwrap();
        if ring.next_rebuild.is_some_and(|t| Instant::now() >= t) {
            self.rebuild(&mut ring);
        }
        ring.continuum.clone()
    }

    /// Index of the server `key` goes to now.
    pub fn server_for(&self, key: &[u8]) -> Option<usize> {
        self.place(&self.continuum(), key)
    }

    /// Where `key` goes on `ring` (the continuum in use now): with replicas, its first live
    /// owner on the full ring; with none alive, or no replicas, wherever `ring` puts it.
    fn place(&self, ring: &Continuum, key: &[u8]) -> Option<usize> {
        if self.config.replicas > 0 {
            let owners = self.full.owners(key, self.config.replicas + 1);
            if let Some(live) = owners.into_iter().find(|&i| !self.is_ejected(i)) {
                return Some(live);
            }
        }
        ring.server_for(key)
    }

    /// Whether server `index` is ejected now.
    pub fn is_ejected(&self, index: usize) -> bool {
        let h = self.health[index].lock().unwrap();
        h.ejected_until.is_some_and(|t| Instant::now() < t)
    }

    fn rebuild(&self, ring: &mut Ring) {
        let now = Instant::now();
        let mut next = None::<Instant>;
        let live: Vec<bool> = self
            .health
            .iter()
            .map(|h| {
                let mut h = h.lock().unwrap();
                match h.ejected_until {
                    Some(t) if t > now => {
                        next = Some(next.map_or(t, |n| n.min(t)));
                        false
                    }
                    Some(_) => {
                        // Back in; one more failure ejects it again.
                        h.ejected_until = None;
                        h.failures = self.config.failure_limit.saturating_sub(1);
                        true
                    }
                    None => true,
                }
            })
            .collect();
        ring.continuum = Arc::new(Continuum::with_live(
            self.config.distribution,
            &self.nodes,
            |i| live[i],
        ));
        ring.next_rebuild = next;
    }

    fn record(&self, index: usize, ok: bool) {
        let mut h = self.health[index].lock().unwrap();
        if ok {
            h.failures = 0;
            return;
        }
        h.failures += 1;
        if self.config.failure_limit > 0 && h.failures >= self.config.failure_limit {
            h.ejected_until = Some(Instant::now() + self.config.retry_interval);
            drop(h);
            self.servers[index].clear();
            let mut ring = self.ring.lock().unwrap();
            self.rebuild(&mut ring);
        }
    }

    /// Runs one request/reply exchange on server `index`, recording success or failure.
    fn exchange(&self, index: usize, op: &'static str, command: &Command<&[u8]>) -> Result<Packet> {
        let server = &self.servers[index];
        let result = server
            .with_conn(|conn| conn.request(command))
            .map_err(|e| self.io_error(index, op, e));
        self.record(index, !matches!(&result, Err(e) if e.is_io()));
        result
    }

    fn io_error(&self, index: usize, op: &'static str, e: pool::ConnError) -> Error {
        let server = self.nodes[index].addr();
        match e {
            pool::ConnError::Io(source) => Error::Io { server, op, source },
            pool::ConnError::Protocol(detail) => Error::Protocol { server, op, detail },
            pool::ConnError::Encode(detail) => Error::Request { op, detail },
        }
    }

    /// Sends a keyed request to the key's owner; an I/O failure that ejects the owner is retried
    /// once on the new owner.
    fn keyed(
        &self,
        op: &'static str,
        key: &[u8],
        command: &Command<&[u8]>,
    ) -> Result<(usize, Packet)> {
        let index = self.server_for(key).ok_or(Error::NoServers { op })?;
        match self.exchange(index, op, command) {
            Err(e) if e.is_io() && self.is_ejected(index) => {
                let Some(retry) = self.server_for(key).filter(|&r| r != index) else {
                    return Err(e);
                };
                self.exchange(retry, op, command).map(|p| (retry, p))
            }
            other => other.map(|p| (index, p)),
        }
    }

    fn outcome(&self, index: usize, op: &'static str, packet: &Packet) -> Result<Outcome<Vec<u8>>> {
        let outcome = packet.outcome().ok_or_else(|| Error::Protocol {
            server: self.nodes[index].addr(),
            op,
            detail: format!(
                "unexpected reply: opcode {:#04x} status {:#06x}",
                packet.opcode, packet.status
            ),
        })?;
        match outcome {
            Outcome::TooLarge
            | Outcome::OutOfMemory
            | Outcome::InvalidArguments
            | Outcome::UnknownCommand
            | Outcome::AuthError
            | Outcome::NonNumeric => Err(Error::Server {
                server: self.nodes[index].addr(),
                op,
                status: format!("{outcome:?}"),
            }),
            o => Ok(o),
        }
    }

    fn unexpected<T>(&self, index: usize, op: &'static str, o: Outcome<Vec<u8>>) -> Result<T> {
        Err(Error::Protocol {
            server: self.nodes[index].addr(),
            op,
            detail: format!("unexpected outcome {o:?}"),
        })
    }

    /// Fetches `key`; `None` on a miss.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let op = "get";
        let command = Command::Get {
            key,
            touch: None,
            meta: None,
        };
        let (index, packet) = match self.keyed(op, key, &command) {
            Ok(r) => r,
            Err(e) if e.is_io() && self.config.replica_reads => {
                return self.replica_get(key, &command).unwrap_or(Err(e));
            }
            Err(e) => return Err(e),
        };
        match self.outcome(index, op, &packet)? {
            Outcome::Value { flags, cas, value } => Ok(Some(Value {
                data: value,
                flags,
                cas,
            })),
            Outcome::NotFound => Ok(None),
            o => self.unexpected(index, op, o),
        }
    }

    /// Reads `key` from the servers after its owner on the full ring (replica reads).
    fn replica_get(&self, key: &[u8], command: &Command<&[u8]>) -> Option<Result<Option<Value>>> {
        for index in self.full.servers_for(key).into_iter().skip(1) {
            if self.is_ejected(index) {
                continue;
            }
            if let Ok(packet) = self.exchange(index, "get", command) {
                return Some(match self.outcome(index, "get", &packet) {
                    Ok(Outcome::Value { flags, cas, value }) => Ok(Some(Value {
                        data: value,
                        flags,
                        cas,
                    })),
                    Ok(Outcome::NotFound) => Ok(None),
                    Ok(o) => self.unexpected(index, "get", o),
                    Err(e) => Err(e),
                });
            }
        }
        None
    }

    /// Fetches many keys: one pipeline of GetKQ ... Noop per server, servers in parallel. A
    /// server that fails contributes no hits (its keys read as misses, as in libmemcached's
    /// mget); an error is returned only when every server involved failed.
    pub fn get_multi<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<HashMap<Vec<u8>, Value>> {
        let op = "get_multi";
        let ring = self.continuum();
        let mut per_server: Vec<Vec<&[u8]>> = vec![Vec::new(); self.nodes.len()];
        for key in keys {
            let key = key.as_ref();
            let index = self.place(&ring, key).ok_or(Error::NoServers { op })?;
            per_server[index].push(key);
        }
        let results: Vec<(usize, Result<Hits>)> = std::thread::scope(|s| {
            let handles: Vec<_> = per_server
                .iter()
                .enumerate()
                .filter(|(_, keys)| !keys.is_empty())
                .map(|(index, keys)| {
                    s.spawn(move || {
                        let r = self.servers[index]
                            .with_conn(|conn| conn.get_pipelined(keys))
                            .map_err(|e| self.io_error(index, op, e));
                        self.record(index, !matches!(&r, Err(e) if e.is_io()));
                        (index, r)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("get_multi worker panicked"))
                .collect()
        });
        let mut out = HashMap::new();
        let mut first_err = None;
        let involved = results.len();
        let mut failed = 0;
        for (_, r) in results {
            match r {
                Ok(hits) => out.extend(hits),
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if failed == involved => Err(e),
            _ => Ok(out),
        }
    }

    /// Runs a Store command (its key is the command's).
    fn store(&self, op: &'static str, command: Command<&[u8]>) -> Result<Outcome<Vec<u8>>> {
        let Command::Store { key, .. } = command else {
            unreachable!("store() takes Store commands")
        };
        let (index, packet) = self.keyed(op, key, &command)?;
        match self.outcome(index, op, &packet)? {
            o @ (Outcome::Stored { .. }
            | Outcome::NotStored
            | Outcome::Exists
            | Outcome::NotFound) => Ok(o),
            o => self.unexpected(index, op, o),
        }
    }

    /// A conditional store (add/replace/append/prepend): `false` when its condition fails.
    fn store_if(
        &self,
        op: &'static str,
        mode: StoreMode,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: i64,
    ) -> Result<bool> {
        let command = Command::Store {
            mode,
            key,
            value,
            flags,
            exptime,
            cas: 0,
            meta: None,
        };
        Ok(matches!(self.store(op, command)?, Outcome::Stored { .. }))
    }

    /// Stores `value` unconditionally; returns the new CAS.
    pub fn set(&self, key: &[u8], value: &[u8], flags: u32, exptime: i64) -> Result<u64> {
        match self.store(
            "set",
            Command::Store {
                mode: StoreMode::Set,
                key,
                value,
                flags,
                exptime,
                cas: 0,
                meta: None,
            },
        )? {
            Outcome::Stored { cas } => Ok(cas),
            o => Err(Error::Server {
                server: self.owner_name(key),
                op: "set",
                status: format!("{o:?}"),
            }),
        }
    }

    fn owner_name(&self, key: &[u8]) -> String {
        self.server_for(key)
            .map(|i| self.nodes[i].addr())
            .unwrap_or_default()
    }

    /// Stores only if absent; `false` when the key exists.
    pub fn add(&self, key: &[u8], value: &[u8], flags: u32, exptime: i64) -> Result<bool> {
        self.store_if("add", StoreMode::Add, key, value, flags, exptime)
    }

    /// Stores only if present; `false` when the key is missing.
    pub fn replace(&self, key: &[u8], value: &[u8], flags: u32, exptime: i64) -> Result<bool> {
        self.store_if("replace", StoreMode::Replace, key, value, flags, exptime)
    }

    /// Appends to an existing value; `false` when the key is missing.
    pub fn append(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.store_if("append", StoreMode::Append, key, value, 0, 0)
    }

    /// Prepends to an existing value; `false` when the key is missing.
    pub fn prepend(&self, key: &[u8], value: &[u8]) -> Result<bool> {
        self.store_if("prepend", StoreMode::Prepend, key, value, 0, 0)
    }

    /// Stores `value` if the item's CAS is still `cas`.
    pub fn cas(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u32,
        exptime: i64,
        cas: u64,
    ) -> Result<CasResult> {
        Ok(
            match self.store(
                "cas",
                Command::Store {
                    mode: StoreMode::Set,
                    key,
                    value,
                    flags,
                    exptime,
                    cas,
                    meta: None,
                },
            )? {
                Outcome::Stored { cas } => CasResult::Stored(cas),
                Outcome::NotFound => CasResult::NotFound,
                _ => CasResult::Exists,
            },
        )
    }

    /// Deletes `key`; `false` when it was missing.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        let op = "delete";
        let (index, packet) = self.keyed(op, key, &Command::Delete { key, cas: 0 })?;
        match self.outcome(index, op, &packet)? {
            Outcome::Deleted => Ok(true),
            Outcome::NotFound => Ok(false),
            o => self.unexpected(index, op, o),
        }
    }

    fn arith(
        &self,
        op: &'static str,
        aop: ArithOp,
        key: &[u8],
        delta: u64,
        initial: Option<(u64, i64)>,
    ) -> Result<Option<u64>> {
        let command = Command::Arith {
            op: aop,
            key,
            delta,
            on_miss: initial,
            cas: 0,
            meta: None,
        };
        let (index, packet) = self.keyed(op, key, &command)?;
        match self.outcome(index, op, &packet)? {
            Outcome::Counter { value, .. } => Ok(Some(value)),
            Outcome::NotFound => Ok(None),
            o => self.unexpected(index, op, o),
        }
    }

    /// Adds `delta` to a decimal counter; `initial` = (value, exptime) creates it on a miss.
    /// `None` when missing (and not created).
    pub fn incr(&self, key: &[u8], delta: u64, initial: Option<(u64, i64)>) -> Result<Option<u64>> {
        self.arith("incr", ArithOp::Incr, key, delta, initial)
    }

    /// Subtracts `delta` (saturating at 0, memcached rules).
    pub fn decr(&self, key: &[u8], delta: u64, initial: Option<(u64, i64)>) -> Result<Option<u64>> {
        self.arith("decr", ArithOp::Decr, key, delta, initial)
    }

    /// Sets a new exptime; `false` when the key is missing.
    pub fn touch(&self, key: &[u8], exptime: i64) -> Result<bool> {
        let op = "touch";
        let (index, packet) = self.keyed(op, key, &Command::Touch { key, exptime })?;
        match self.outcome(index, op, &packet)? {
            Outcome::Touched { .. } => Ok(true),
            Outcome::NotFound => Ok(false),
            o => self.unexpected(index, op, o),
        }
    }

    /// Flushes every live server (`delay` = wire exptime, 0 = now).
    pub fn flush(&self, delay: i64) -> Result<()> {
        let op = "flush";
        for index in 0..self.nodes.len() {
            if self.is_ejected(index) {
                continue;
            }
            let packet = self.exchange(index, op, &Command::Flush { delay })?;
            match self.outcome(index, op, &packet)? {
                Outcome::Done => {}
                o => return self.unexpected(index, op, o),
            }
        }
        Ok(())
    }

    /// `stats GROUP` ("" = general) of every live server: `(host:port, [(name, value)])`.
    pub fn stats(&self, group: &str) -> Result<Vec<(String, ServerStats)>> {
        let op = "stats";
        let mut out = Vec::new();
        for index in 0..self.nodes.len() {
            if self.is_ejected(index) {
                continue;
            }
            let r = self.servers[index]
                .with_conn(|conn| conn.stats(group.as_bytes()))
                .map_err(|e| self.io_error(index, op, e));
            self.record(index, !matches!(&r, Err(e) if e.is_io()));
            out.push((self.nodes[index].addr(), r?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_server_is_ejected_and_readded_after_the_interval() {
        // Port 1 on localhost refuses connections at once.
        let config = Config {
            failure_limit: 2,
            retry_interval: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        let client = Client::from_list("127.0.0.1:1", config).unwrap();
        assert!(client.get(b"a").unwrap_err().is_io());
        assert!(!client.is_ejected(0));
        let e = client.get(b"a").unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
        assert!(client.is_ejected(0));
        assert!(matches!(client.get(b"a"), Err(Error::NoServers { .. })));
        std::thread::sleep(Duration::from_millis(250));
        // Back on the ring; one more failure ejects it again.
        assert!(client.get(b"a").unwrap_err().is_io());
        assert!(client.is_ejected(0));
    }

    #[test]
    fn with_replicas_an_ejected_owners_keys_go_to_their_next_owner() {
        let list = "127.0.0.1:1:3,127.0.0.2:1:1,127.0.0.3:1:2";
        let config = |replicas| Config {
            failure_limit: 1,
            retry_interval: Duration::from_secs(60),
            replicas,
            ..Config::default()
        };
        let (plain, replicated) = (
            Client::from_list(list, config(0)).unwrap(),
            Client::from_list(list, config(1)).unwrap(),
        );
        for client in [&plain, &replicated] {
            client.record(0, false);
            assert!(client.is_ejected(0));
        }
        let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
        let mut moved_elsewhere = 0;
        for key in keys.iter().map(String::as_bytes) {
            let owners = replicated.full.owners(key, 2);
            let expected = if owners[0] == 0 { owners[1] } else { owners[0] };
            assert_eq!(replicated.server_for(key), Some(expected));
            moved_elsewhere += usize::from(plain.server_for(key) != Some(expected));
        }
        // The rebuilt continuum shares the dead server's weight out: some keys land on a server
        // that holds no copy of them. This is why replicated fleets follow the owners.
        assert!(moved_elsewhere > 0);
    }
}
