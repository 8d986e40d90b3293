//! memcached's `watch`: connections turned into log streams of server events (item lookups,
//! stores, evictions, connections), as memcached 1.6.18's logger does it.
//!
//! Shape (memcached's, on our cores):
//! - [`Hub::flags`] is the union of what the watchers watch: the data path pays one relaxed load
//!   per command (in `Shard::run`) and per connection open/close, and nothing else while nobody
//!   watches.
//! - An event is written as its finished line into the **worker buffer** of the core whose
//!   thread logs it (one per core, `-o worker_logbuf_size`, 64 KiB); a full buffer drops the
//!   event (`log_worker_dropped`). Each event takes the next number of one process-wide counter
//!   (`gid=`) under its buffer's lock, as memcached's.
//! - A **pump** takes every worker buffer at once, orders the lines by gid and copies each into
//!   the buffer of every watcher that watches its class (`-o watcher_logbuf_size`, 256 KiB);
//!   a line that does not fit (memcached keeps 128 bytes spare for it) is skipped and counted,
//!   and the next line that fits is preceded by `skipped=N`. Whichever watcher task ticks first
//!   runs the pump (a `try_lock`), so events of every core reach watchers on every core.
//! - A **watcher task** lives on the core of its connection: it pumps, stages its buffer on the
//!   connection unless the peer has not taken the last one (never more than one buffer's worth
//!   unsent), and waits on the socket with a timer (1 ms after activity, growing to 100 ms while
//!   idle, as memcached's logger thread backs off). What the peer sends is read and dropped;
//!   when it leaves, the watcher is removed and `conn_close reason=error` is logged, as memcached.
//!
//! So a slow watcher never grows memory: its buffer, one staged buffer and the worker buffers are
//! all bounded, and what does not fit is counted in `skipped=` and `log_watcher_skipped`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::net::{self, SockName};
use crate::protocol::watch::{
    class, render, render_skipped, Event, GetStatus, StoreCmd, StoreStatus,
};
use crate::protocol::{Command, StoreMode};
use crate::storage::{Evicted, Liveness, Probed, Store, StoreError, MAX_RELATIVE_EXPTIME};

/// memcached's `WATCHER_LIMIT`: watchers at once.
pub const WATCHER_LIMIT: usize = 20;
/// Room memcached keeps free in a watcher's buffer beyond a line (for its `skipped=` line).
const SKIP_ROOM: usize = 128;
/// Shortest and longest wait of a watcher task between pumps.
const MIN_NAP: Duration = Duration::from_millis(1);
const MAX_NAP: Duration = Duration::from_millis(100);
/// Classes whose events come from the store (logged in `Shard::run`).
pub const ITEM_CLASSES: u16 = class::FETCHERS | class::MUTATIONS | class::EVICTIONS;
/// memcached's `process_started` is this many seconds before its start (ITEM_UPDATE_INTERVAL
/// + 2), which shows in the TTL it logs for items stored already expired.
const MC_CLOCK_OFFSET: u64 = 62;

thread_local! {
    /// The core (shard index) of the running thread: the worker buffer its events go to.
    static CORE: Cell<usize> = const { Cell::new(0) };
}

/// Records that the calling thread runs core `i` (called once by each shard thread).
pub fn set_core(i: usize) {
    CORE.with(|c| c.set(i));
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One line in a worker buffer.
#[derive(Debug, Clone, Copy)]
struct Entry {
    gid: u64,
    class: u16,
    start: u32,
    end: u32,
}

/// A core's finished lines, waiting for the pump.
#[derive(Default)]
struct WorkerBuf {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    written: u64,
    dropped: u64,
}

/// One watching connection's state, shared with the pump.
pub struct Watcher {
    events: u16,
    min_gid: u64,
    buf: Mutex<WatcherBuf>,
}

#[derive(Default)]
struct WatcherBuf {
    data: Vec<u8>,
    skipped: u64,
}

/// The pump's scratch, kept warm between rounds.
#[derive(Default)]
struct Pump {
    taken: Vec<WorkerBuf>,
    order: Vec<(u64, usize, usize)>,
}

/// The counters `stats` reports (`log_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Events dropped because a worker buffer was full.
    pub worker_dropped: u64,
    /// Events written into worker buffers (counted when the pump takes them).
    pub worker_written: u64,
    /// Lines a watcher's full buffer skipped.
    pub watcher_skipped: u64,
    /// Lines copied into watchers' buffers.
    pub watcher_sent: u64,
    /// Watchers now.
    pub watchers: u64,
}

/// Why a watcher could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddError {
    /// `-W`.
    Disabled,
    /// [`WATCHER_LIMIT`] watchers watch already.
    TooMany,
}

/// The log: watchers, worker buffers and their counters (one per server, in `Shared`).
pub struct Hub {
    flags: AtomicU16,
    gid: AtomicU64,
    workers: Box<[Mutex<WorkerBuf>]>,
    worker_cap: usize,
    watcher_cap: usize,
    enabled: bool,
    /// memcached's `process_started` (Unix seconds), for the TTLs it logs.
    mc_started: u64,
    watchers: Mutex<Vec<Arc<Watcher>>>,
    pump: Mutex<Pump>,
    worker_dropped: AtomicU64,
    worker_written: AtomicU64,
    watcher_skipped: AtomicU64,
    watcher_sent: AtomicU64,
}

/// Unix time now as (seconds, microseconds).
fn timestamp() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_micros())
}

/// Bytes a line of `event` takes at most (to refuse before numbering, as memcached reserves
/// before it takes a gid).
fn max_line(event: &Event<'_>) -> usize {
    let key = match event {
        Event::ItemGet { key, .. } | Event::ItemStore { key, .. } | Event::Eviction { key, .. } => {
            key.len()
        }
        _ => 0,
    };
    key * 3 + 256
}

impl Hub {
    /// The log of a server configured by `config` with `cores` cores, started at `started`
    /// (Unix seconds).
    pub fn new(config: &Config, cores: usize, started: u64) -> Hub {
        let e = &config.extended;
        let (worker, watcher) = (e.worker_logbuf_size, e.watcher_logbuf_size);
        Hub::with_sizes(cores, worker, watcher, !config.disable_watch, started)
    }

    /// The log of `cores` cores with these buffer sizes; `enabled` false: `-W`.
    pub fn with_sizes(
        cores: usize,
        worker_cap: usize,
        watcher_cap: usize,
        enabled: bool,
        started: u64,
    ) -> Hub {
        Hub {
            flags: AtomicU16::new(0),
            gid: AtomicU64::new(0),
            workers: (0..cores.max(1))
                .map(|_| Mutex::new(WorkerBuf::default()))
                .collect(),
            worker_cap,
            watcher_cap,
            enabled,
            mc_started: started.saturating_sub(MC_CLOCK_OFFSET),
            watchers: Mutex::new(Vec::new()),
            pump: Mutex::new(Pump::default()),
            worker_dropped: AtomicU64::new(0),
            worker_written: AtomicU64::new(0),
            watcher_skipped: AtomicU64::new(0),
            watcher_sent: AtomicU64::new(0),
        }
    }

    /// Whether `watch` is allowed (not `-W`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The classes some watcher watches (one relaxed load: the data path's only cost).
    #[inline]
    pub fn flags(&self) -> u16 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Whether some watcher watches `class`.
    #[inline]
    pub fn wants(&self, class: u16) -> bool {
        self.flags() & class != 0
    }

    /// Writes `event` into the calling core's worker buffer (or counts it dropped).
    pub fn log(&self, event: &Event<'_>) {
        let core = CORE.with(Cell::get) % self.workers.len();
        let mut w = lock(&self.workers[core]);
        if w.bytes.len() + max_line(event) > self.worker_cap {
            w.dropped += 1;
            return;
        }
        let gid = self.gid.fetch_add(1, Ordering::Relaxed) + 1;
        let (secs, usecs) = timestamp();
        let start = w.bytes.len();
        render(&mut w.bytes, secs, usecs, gid, event);
        let end = w.bytes.len();
        w.entries.push(Entry {
            gid,
            class: event.class(),
            start: start as u32,
            end: end as u32,
        });
        w.written += 1;
    }

    /// Adds a watcher of `events`; it sees the events numbered after this call.
    pub fn add(&self, events: u16) -> Result<Arc<Watcher>, AddError> {
        if !self.enabled {
            return Err(AddError::Disabled);
        }
        let mut ws = lock(&self.watchers);
        if ws.len() >= WATCHER_LIMIT {
            return Err(AddError::TooMany);
        }
        // As memcached, the watcher's first number is taken from the event counter.
        let min_gid = self.gid.fetch_add(1, Ordering::Relaxed) + 1;
        let w = Arc::new(Watcher {
            events,
            min_gid,
            buf: Mutex::new(WatcherBuf::default()),
        });
        ws.push(w.clone());
        self.set_flags(&ws);
        Ok(w)
    }

    /// Removes a watcher (its connection left).
    pub fn remove(&self, w: &Arc<Watcher>) {
        let mut ws = lock(&self.watchers);
        ws.retain(|x| !Arc::ptr_eq(x, w));
        self.set_flags(&ws);
    }

    fn set_flags(&self, ws: &[Arc<Watcher>]) {
        let f = ws.iter().fold(0, |f, w| f | w.events);
        self.flags.store(f, Ordering::Relaxed);
    }

    /// The `log_*` counters.
    pub fn stats(&self) -> LogStats {
        LogStats {
            worker_dropped: self.worker_dropped.load(Ordering::Relaxed),
            worker_written: self.worker_written.load(Ordering::Relaxed),
            watcher_skipped: self.watcher_skipped.load(Ordering::Relaxed),
            watcher_sent: self.watcher_sent.load(Ordering::Relaxed),
            watchers: lock(&self.watchers).len() as u64,
        }
    }

    /// Moves every worker buffer's lines into the watchers' buffers, unless another thread is
    /// doing it right now.
    pub fn pump(&self) {
        let Ok(mut p) = self.pump.try_lock() else {
            return;
        };
        let p = &mut *p;
        let watchers = lock(&self.watchers).clone();
        p.taken.resize_with(self.workers.len(), WorkerBuf::default);
        p.order.clear();
        let (mut written, mut dropped) = (0, 0);
        for (i, w) in self.workers.iter().enumerate() {
            let t = &mut p.taken[i];
            t.bytes.clear();
            t.entries.clear();
            {
                let mut w = lock(w);
                std::mem::swap(&mut w.bytes, &mut t.bytes);
                std::mem::swap(&mut w.entries, &mut t.entries);
                written += std::mem::take(&mut w.written);
                dropped += std::mem::take(&mut w.dropped);
            }
            p.order
                .extend(t.entries.iter().enumerate().map(|(n, e)| (e.gid, i, n)));
        }
        self.worker_written.fetch_add(written, Ordering::Relaxed);
        self.worker_dropped.fetch_add(dropped, Ordering::Relaxed);
        if p.order.is_empty() || watchers.is_empty() {
            return;
        }
        // Lines of different cores interleave by number.
        p.order.sort_unstable_by_key(|&(gid, _, _)| gid);
        let (mut sent, mut skipped) = (0, 0);
        for w in &watchers {
            let mut b = lock(&w.buf);
            for &(gid, i, n) in &p.order {
                let e = p.taken[i].entries[n];
                if e.class & w.events == 0 || gid < w.min_gid {
                    continue;
                }
                let line = &p.taken[i].bytes[e.start as usize..e.end as usize];
                if b.data.len() + line.len() + SKIP_ROOM > self.watcher_cap {
                    b.skipped += 1;
                    skipped += 1;
                    continue;
                }
                if b.skipped > 0 {
                    let n = std::mem::take(&mut b.skipped);
                    render_skipped(&mut b.data, n);
                }
                b.data.extend_from_slice(line);
                sent += 1;
            }
        }
        self.watcher_sent.fetch_add(sent, Ordering::Relaxed);
        self.watcher_skipped.fetch_add(skipped, Ordering::Relaxed);
        for t in &mut p.taken {
            // Keep the scratch no larger than a worker buffer.
            if t.bytes.capacity() > 2 * self.worker_cap {
                t.bytes = Vec::new();
            }
        }
    }

    /// memcached's TTL of an item stored with wire `exptime` at `now` (Unix seconds): 0 for
    /// none, else its `realtime(exptime) - current_time` in unsigned 32-bit arithmetic (so an
    /// item stored already expired shows a huge number, as there).
    pub fn mc_ttl(&self, exptime: i64, now: u64) -> u32 {
        if exptime == 0 {
            return 0;
        }
        let started = self.mc_started as i64;
        let current = now as i64 - started;
        let real = if exptime < 0 {
            1
        } else if exptime > MAX_RELATIVE_EXPTIME {
            if exptime <= started {
                1
            } else {
                exptime - started
            }
        } else {
            exptime + current
        };
        (real - current) as u32
    }
}

/// A peer as the log names it (`None`: a unix socket).
pub fn log_peer(a: Option<SockName>) -> Option<SocketAddr> {
    // memcached prints the unix form for every peer that is not IPv4/IPv6.
    match a {
        Some(SockName::Inet(a)) => Some(a),
        _ => None,
    }
}

/// Serves a connection that became a watcher until its peer leaves or the server stops.
pub async fn serve_watcher(hub: &Hub, conn: &net::Conn, watcher: Arc<Watcher>) {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let mut nap = MIN_NAP;
    loop {
        hub.pump();
        // Hand a buffer over only once the peer took the last one (bounded memory: a slow
        // reader's lines are skipped in its buffer instead).
        if conn.unsent() < hub.watcher_cap.max(1) {
            std::mem::swap(&mut lock(&watcher.buf).data, &mut out);
        }
        if out.is_empty() {
            nap = (nap + nap / 8).min(MAX_NAP);
        } else {
            nap = (nap / 2).max(MIN_NAP);
            if conn.stage(&mut out).is_err() {
                break;
            }
        }
        match net::timeout(nap, conn.recv(&mut scratch)).await {
            None => {}
            // What a watcher sends is not read as commands (memcached drops it too).
            Some(Ok(true)) => scratch.clear(),
            Some(Ok(false)) | Some(Err(_)) => break,
        }
    }
    hub.remove(&watcher);
}

/// What a store command found and did, for its log lines (no borrow of the store).
pub(crate) struct Traced {
    flags: u16,
    before: Option<Probed>,
}

impl Traced {
    /// Notes what `cmd`'s key holds before the command runs (while some watcher watches the
    /// store's events).
    pub(crate) fn before(flags: u16, store: &mut Store, cmd: &Command<&[u8]>, hash: u64) -> Traced {
        store.record_evictions(flags & class::EVICTIONS != 0);
        let before = cmd.key().and_then(|k| store.probe(k, hash));
        Traced { flags, before }
    }

    /// Logs the lines of `cmd`, which ended with `result`, in memcached's order: evictions made
    /// for it, the lookup, then the store.
    pub(crate) fn log(
        self,
        hub: &Hub,
        store: &mut Store,
        cmd: &Command<&[u8]>,
        hash: u64,
        result: Result<(), StoreError>,
        cfd: i32,
    ) {
        let flags = self.flags;
        if flags & class::EVICTIONS != 0 {
            let mut evicted: Vec<Evicted> = Vec::new();
            store.take_evictions(&mut evicted);
            for e in &evicted {
                hub.log(&Event::Eviction {
                    key: &e.key,
                    fetched: e.fetched,
                    ttl: e.ttl.map_or(-1, i64::from),
                    idle: e.idle,
                    class: e.class,
                    size: e.value_len,
                });
            }
        }
        let Some(&key) = cmd.key() else {
            return;
        };
        let get = |before: Option<Probed>| {
            if flags & class::FETCHERS == 0 {
                return;
            }
            let (status, class, size) = match before {
                None => (GetStatus::NotFound, 0, 0),
                Some(p) => match p.liveness {
                    Liveness::Live => (GetStatus::Found, p.class, p.value_len),
                    Liveness::Flushed => (GetStatus::Flushed, 0, 0),
                    Liveness::Expired => (GetStatus::Expired, 0, 0),
                },
            };
            hub.log(&Event::ItemGet {
                key,
                status,
                class,
                cfd,
                size,
            });
        };
        let live_before = self.before.is_some_and(|p| p.liveness == Liveness::Live);
        match *cmd {
            Command::Store {
                mode,
                value,
                exptime,
                cas,
                ..
            } => {
                get(self.before);
                if flags & class::MUTATIONS != 0 {
                    let now = store.now();
                    let (status, cmd, ttl, class, size) =
                        store_event(store, key, hash, mode, value, cas, result);
                    let ttl = ttl.unwrap_or_else(|| hub.mc_ttl(exptime, now));
                    hub.log(&Event::ItemStore {
                        key,
                        status,
                        cmd,
                        ttl,
                        class,
                        cfd,
                        size,
                    });
                }
            }
            Command::Arith { on_miss, .. } => {
                get(self.before);
                // A counter created on a miss: memcached looks again, then adds it.
                if let (Some((_, exptime)), false, Ok(())) = (on_miss, live_before, result) {
                    get(None);
                    if flags & class::MUTATIONS != 0 {
                        let after = store.probe(key, hash);
                        hub.log(&Event::ItemStore {
                            key,
                            status: StoreStatus::Stored,
                            cmd: StoreCmd::Add,
                            ttl: hub.mc_ttl(exptime, store.now()),
                            class: after.map_or(0, |p| p.class),
                            cfd,
                            size: after.map_or(0, |p| p.value_len),
                        });
                    }
                }
            }
            _ => get(self.before),
        }
    }
}

/// An `item_store` line's status, command, TTL (when not memcached's from the wire exptime),
/// class and size.
fn store_event(
    store: &Store,
    key: &[u8],
    hash: u64,
    mode: StoreMode,
    value: &[u8],
    cas: u64,
    result: Result<(), StoreError>,
) -> (StoreStatus, StoreCmd, Option<u32>, u32, usize) {
    let concat = matches!(mode, StoreMode::Append | StoreMode::Prepend);
    let is_cas = mode == StoreMode::Cas || (cas != 0 && !concat);
    let cmd = if is_cas {
        StoreCmd::Cas
    } else {
        match mode {
            StoreMode::Set | StoreMode::Cas => StoreCmd::Set,
            StoreMode::Add => StoreCmd::Add,
            StoreMode::Replace => StoreCmd::Replace,
            StoreMode::Append => StoreCmd::Append,
            StoreMode::Prepend => StoreCmd::Prepend,
        }
    };
    let status = match result {
        Ok(()) => StoreStatus::Stored,
        Err(StoreError::TooLarge) => StoreStatus::TooLarge,
        Err(StoreError::OutOfMemory) => StoreStatus::NoMemory,
        Err(StoreError::NotFound) if is_cas => StoreStatus::NotFound,
        Err(StoreError::Exists) if is_cas || cas != 0 => StoreStatus::Exists,
        Err(_) => StoreStatus::NotStored,
    };
    if result.is_ok() {
        if let Some(p) = store.probe(key, hash) {
            // An append/prepend is logged with the joined item, which keeps the old expiry.
            let ttl = concat.then(|| p.ttl.unwrap_or(0));
            return (status, cmd, ttl, p.class, p.value_len);
        }
    }
    let class = store.item_class(key.len(), value.len());
    (status, cmd, None, class, value.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(watcher_cap: usize) -> Hub {
        Hub::with_sizes(2, 64 * 1024, watcher_cap, true, 1_700_000_000)
    }

    fn get(key: &[u8]) -> Event<'_> {
        Event::ItemGet {
            key,
            status: GetStatus::NotFound,
            class: 0,
            cfd: 5,
            size: 0,
        }
    }

    #[test]
    fn nothing_is_logged_without_watchers_and_lines_reach_watchers_of_their_class() {
        let h = hub(256 * 1024);
        assert_eq!(h.flags(), 0);
        let fetch = h.add(class::FETCHERS).unwrap();
        let conns = h.add(class::CONNEVENTS).unwrap();
        assert!(h.wants(class::FETCHERS) && !h.wants(class::MUTATIONS));
        set_core(1);
        h.log(&get(b"a"));
        set_core(0);
        h.log(&get(b"b"));
        h.pump();
        let data = String::from_utf8(lock(&fetch.buf).data.clone()).unwrap();
        let lines: Vec<&str> = data.lines().collect();
        assert_eq!(lines.len(), 2);
        // Ordered by number across cores; the watchers took gids 1 and 2.
        assert!(lines[0].contains(" gid=3 type=item_get key=a "), "{data}");
        assert!(lines[1].contains(" gid=4 type=item_get key=b "), "{data}");
        assert!(lock(&conns.buf).data.is_empty());
        h.remove(&fetch);
        h.remove(&conns);
        assert_eq!(h.flags(), 0);
        let s = h.stats();
        assert_eq!((s.worker_written, s.watcher_sent, s.watchers), (2, 2, 0));
    }

    #[test]
    fn a_full_watcher_skips_and_says_so() {
        let h = hub(1024);
        let w = h.add(class::FETCHERS).unwrap();
        for _ in 0..50 {
            h.log(&get(b"key"));
        }
        h.pump();
        let first = lock(&w.buf).data.len();
        assert!(first + SKIP_ROOM <= 1024);
        let skipped = h.stats().watcher_skipped;
        assert!(skipped > 0);
        // The peer takes the buffer: the next line that fits follows a skipped= line.
        lock(&w.buf).data.clear();
        h.log(&get(b"key"));
        h.pump();
        let data = String::from_utf8(lock(&w.buf).data.clone()).unwrap();
        assert!(data.starts_with(&format!("skipped={skipped}\n")), "{data}");
    }

    #[test]
    fn the_watcher_limit_is_memcached_s() {
        let h = hub(1024);
        let ws: Vec<_> = (0..WATCHER_LIMIT)
            .map(|_| h.add(class::FETCHERS).unwrap())
            .collect();
        assert_eq!(h.add(class::FETCHERS).err(), Some(AddError::TooMany));
        h.remove(&ws[0]);
        assert!(h.add(class::FETCHERS).is_ok());
    }

    #[test]
    fn ttls_follow_memcached_s_clock() {
        let h = hub(1024);
        let now = 1_700_000_100;
        assert_eq!(h.mc_ttl(0, now), 0);
        assert_eq!(h.mc_ttl(100, now), 100);
        assert_eq!(h.mc_ttl(now as i64 + 5000, now), 5000);
        // Stored already expired: 1 - current_time, unsigned (memcached shows 2^32 - 161 here).
        let current = now - (1_700_000_000 - MC_CLOCK_OFFSET);
        assert_eq!(h.mc_ttl(-1, now), (1i64 - current as i64) as u32);
    }
}
