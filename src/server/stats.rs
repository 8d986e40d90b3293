//! Per-shard counters and latency histograms, and their aggregation into memcached's `stats`
//! replies: every name memcached 1.6.18 prints, in its order, with corecached's value where the
//! concept exists here and 0 where it does not (README.md, "Stats that are always 0").

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::storage::{SlabClassStats, StoreStats};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Event counters of one shard; summed over shards for `stats`.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Adds another shard's counters to these.
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Connections accepted.
    total_connections,
    /// Connections refused because of `-c`.
    rejected_connections,
    /// Get requests (GAT counts as touch, as in memcached).
    cmd_get,
    /// Storage requests.
    cmd_set,
    /// Flush requests.
    cmd_flush,
    /// Touch and GAT requests.
    cmd_touch,
    /// Meta commands memcached counts as such (1.6.18 counts `me` only).
    cmd_meta,
    /// Batches cut short by `-R` with requests left in the buffer.
    conn_yields,
    /// Connections closed by `-o idle_timeout`.
    idle_kicks,
    /// Stores refused for size by the codec, before reaching a store.
    store_too_large,
    /// Bytes read from clients.
    bytes_read,
    /// Bytes written to clients.
    bytes_written,
    /// Authentication attempts (SASL auth/step, `-Y` tokens, peers' handshakes).
    auth_cmds,
    /// Failed authentication attempts.
    auth_errors,
    /// HTTP requests answered (`--http-listen`), by status class: 2xx, 4xx, 5xx.
    http_2xx,
    /// HTTP requests refused as the client's fault.
    http_4xx,
    /// HTTP requests that failed on the server's side (unavailable, out of memory).
    http_5xx,
    /// Bytes read from HTTP clients (not in `bytes_read`, which is memcached's protocols').
    http_bytes_read,
    /// Bytes written to HTTP clients.
    http_bytes_written,
}

/// Command kinds with their own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Get, GetK and their quiet variants.
    Get,
    /// Get-and-touch variants.
    Gat,
    /// Set/Add/Replace/Append/Prepend.
    Set,
    /// Delete.
    Delete,
    /// Incr/Decr.
    Arith,
    /// Touch.
    Touch,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Get,
        Kind::Gat,
        Kind::Set,
        Kind::Delete,
        Kind::Arith,
        Kind::Touch,
    ];

    /// The kind's name in the `latency` group.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Gat => "gat",
            Kind::Set => "set",
            Kind::Delete => "delete",
            Kind::Arith => "incr_decr",
            Kind::Touch => "touch",
        }
    }
}

/// Highest latency the histograms track, in nanoseconds (longer ones are clamped).
const LATENCY_MAX_NS: u64 = 60_000_000_000;

fn new_histogram() -> Histogram<u64> {
    // Two significant digits keep each histogram a few tens of KiB.
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 2).expect("valid histogram bounds")
}

/// One command in this many has its execution time taken: two clock reads and a histogram
/// update per command cost about 5 % of a core at pipeline 16 (32-byte gets), one in 16 costs
/// a twentieth of that and still fills the percentiles within seconds under load.
pub const LATENCY_SAMPLE_EVERY: u32 = 16;

thread_local! {
    /// Commands this thread ran since its last timed one (the sampling is per thread, so it
    /// needs no atomic; a shard run from several cores samples each core's share).
    static UNTIMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether the command about to run on this thread is one of the timed ones.
#[inline]
pub fn sample_latency() -> bool {
    UNTIMED.with(|n| {
        let seen = n.get() + 1;
        let timed = seen >= LATENCY_SAMPLE_EVERY;
        n.set(if timed { 0 } else { seen });
        timed
    })
}

/// Execution time of commands on the owning shard, per kind: every command counted, a sample
/// of them ([`sample_latency`]) timed.
#[derive(Debug, Clone)]
pub struct Latencies {
    counts: [u64; Kind::ALL.len()],
    hist: Vec<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: [0; Kind::ALL.len()],
            hist: Kind::ALL.iter().map(|_| new_histogram()).collect(),
        }
    }
}

impl Latencies {
    /// Counts one command, with its execution time when it was timed.
    #[inline]
    pub fn record(&mut self, kind: Kind, took: Option<Duration>) {
        self.counts[kind as usize] += 1;
        if let Some(took) = took {
            let ns = (took.as_nanos() as u64).clamp(1, LATENCY_MAX_NS);
            // Cannot fail: the value is within the bounds.
            let _ = self.hist[kind as usize].record(ns);
        }
    }

    /// Adds another shard's histograms.
    pub fn add(&mut self, other: &Latencies) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            // Same bounds on every shard, so adding cannot fail.
            let _ = a.add(b);
        }
    }

    /// Commands of `kind` counted (every one, timed or not).
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind as usize]
    }

    /// The execution times of the timed commands of `kind`, in nanoseconds.
    pub fn histogram(&self, kind: Kind) -> &Histogram<u64> {
        &self.hist[kind as usize]
    }

    /// Forgets everything recorded.
    pub fn reset(&mut self) {
        self.counts = [0; Kind::ALL.len()];
        self.hist.iter_mut().for_each(|h| h.reset());
    }

    /// The `latency` group: per kind the count (every command) and p50/p90/p99/p999/max in
    /// microseconds (of the timed ones).
    pub fn report(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let h = &self.hist[kind as usize];
            let name = kind.name();
            out.push((
                format!("{name}_count"),
                self.counts[kind as usize].to_string(),
            ));
            for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
                out.push((format!("{name}_{label}_us"), micros(h.value_at_quantile(q))));
            }
            out.push((format!("{name}_max_us"), micros(h.max())));
        }
        out
    }
}

fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// Adds another shard's store statistics (all counters and gauges sum).
pub fn add_store_stats(a: &mut StoreStats, b: &StoreStats) {
    macro_rules! sum {
        ($($f:ident),*) => { $(a.$f += b.$f;)* };
    }
    sum!(
        curr_items,
        total_items,
        bytes,
        evictions,
        evicted_unfetched,
        expired_unfetched,
        reclaimed,
        get_hits,
        get_misses,
        get_expired,
        get_flushed,
        delete_hits,
        delete_misses,
        incr_hits,
        incr_misses,
        decr_hits,
        decr_misses,
        cas_hits,
        cas_misses,
        cas_badval,
        touch_hits,
        touch_misses,
        store_too_large,
        store_no_memory,
        slabs_moved,
        slab_reassign_rescues,
        slab_reassign_evictions,
        total_malloced,
        limit_maxbytes,
        hash_bytes,
        crawler_items_checked,
        crawler_reclaimed,
        hash_buckets,
        tombstones,
        tombstone_bytes,
        tombstones_reclaimed
    );
}

/// Adds one shard's slab class statistics into the per-class totals.
pub fn add_class_stats(total: &mut Vec<SlabClassStats>, more: &[SlabClassStats]) {
    for m in more {
        let Some(t) = total.iter_mut().find(|t| t.class == m.class) else {
            total.push(*m);
            continue;
        };
        macro_rules! sum {
            ($($f:ident),*) => { $(t.$f += m.$f;)* };
        }
        sum!(
            total_pages,
            total_chunks,
            used_chunks,
            free_chunks,
            mem_requested,
            number,
            evicted,
            evicted_unfetched,
            expired_unfetched,
            reclaimed,
            outofmemory,
            evicted_nonzero,
            crawler_items_checked,
            crawler_reclaimed,
            get_hits,
            set_cmds,
            delete_hits,
            incr_hits,
            decr_hits,
            cas_hits,
            cas_badval,
            touch_hits
        );
        // Per shard "seconds since"; the class's figure is the oldest of them.
        t.age = t.age.max(m.age);
        t.evicted_time = t.evicted_time.max(m.evicted_time);
    }
}

/// Per key prefix counters of `stats detail` (memcached's PREFIX lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCounts {
    /// Gets (get, gets, gat, gats and binary gets).
    pub get: u64,
    /// Those that hit.
    pub hit: u64,
    /// Storage commands.
    pub set: u64,
    /// Deletes, found or not.
    pub del: u64,
}

/// Most prefixes one shard keeps: a key space of unbounded prefixes must not grow memory
/// without bound (memcached's table has no limit); new prefixes beyond it are not counted.
pub const MAX_PREFIXES: usize = 16 * 1024;

/// One shard's `stats detail` table: counters per key prefix (the key up to the first
/// delimiter; keys without one are not counted, as in memcached).
#[derive(Debug, Clone, Default)]
pub struct PrefixStats {
    map: HashMap<Box<[u8]>, PrefixCounts>,
}

impl PrefixStats {
    /// Counts an event of `key` in its prefix's counters.
    pub fn record(&mut self, key: &[u8], delimiter: u8, count: impl FnOnce(&mut PrefixCounts)) {
        // memcached reads the key as a C string: a NUL ends it before any delimiter.
        let Some(end) = key
            .iter()
            .take_while(|&&b| b != 0)
            .position(|&b| b == delimiter)
        else {
            return;
        };
        let prefix = &key[..end];
        if let Some(p) = self.map.get_mut(prefix) {
            count(p);
        } else if self.map.len() < MAX_PREFIXES {
            count(self.map.entry(prefix.into()).or_default());
        }
    }

    /// Adds another shard's table into `total`.
    pub fn add_to(&self, total: &mut BTreeMap<Box<[u8]>, PrefixCounts>) {
        for (k, v) in &self.map {
            let t = total.entry(k.clone()).or_default();
            t.get += v.get;
            t.hit += v.hit;
            t.set += v.set;
            t.del += v.del;
        }
    }
}

/// memcached's `stats detail dump` text: a PREFIX line per prefix (sorted here), then END.
pub fn detail_dump(total: &BTreeMap<Box<[u8]>, PrefixCounts>) -> String {
    let mut out = String::new();
    for (prefix, p) in total {
        out.push_str(&format!(
            "PREFIX {} get {} hit {} set {} del {}\r\n",
            String::from_utf8_lossy(prefix),
            p.get,
            p.hit,
            p.set,
            p.del
        ));
    }
    out.push_str("END\r\n");
    out
}

/// Everything one shard contributes to a `stats` reply.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Event counters.
    pub counters: Counters,
    /// Store counters and gauges.
    pub store: StoreStats,
    /// Per slab class statistics, summed by class.
    pub classes: Vec<SlabClassStats>,
    /// Latency histograms.
    pub latency: Latencies,
    /// The shard's sampled hot keys (shards' keys are disjoint: summing is a union).
    pub hot: Vec<super::hotkeys::HotKey>,
}

impl Snapshot {
    /// Merges another shard's snapshot into this one.
    pub fn add(&mut self, o: &Snapshot) {
        self.counters.add(&o.counters);
        add_store_stats(&mut self.store, &o.store);
        add_class_stats(&mut self.classes, &o.classes);
        self.latency.add(&o.latency);
        self.hot.extend(o.hot.iter().cloned());
    }
}

/// Process-wide facts the general group reports next to the summed snapshot.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Process start, Unix seconds.
    pub started: u64,
    /// Shard count.
    pub threads: usize,
    /// `-c`.
    pub max_connections: usize,
    /// Open client connections now.
    pub curr_connections: usize,
    /// `-m` in bytes.
    pub limit_maxbytes: usize,
    /// The network backend, reported where memcached names its libevent version.
    pub backend: String,
    /// The `-o` settings that decide which names memcached prints.
    pub maxconns_fast: bool,
    /// `-o idle_timeout` is set.
    pub idle_timeout: bool,
    /// `-o slab_reassign` (default on).
    pub slab_reassign: bool,
    /// `-o lru_crawler` (default on).
    pub lru_crawler: bool,
    /// `-o lru_maintainer` (default on).
    pub lru_maintainer: bool,
    /// `-o temp_lru`.
    pub temp_lru: bool,
    /// The `watch` log's counters.
    pub log: super::watch::LogStats,
    /// With `-Z`: the TLS lines (memcached prints them only then).
    pub tls: Vec<(String, String)>,
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rusage() -> (String, String) {
    // SAFETY: getrusage only writes the zeroed plain-data struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// The general group, in memcached 1.6.18's order and with its conditions (names that depend
/// on `-o` settings appear when memcached would print them).
pub fn general(info: &ServerInfo, s: &Snapshot) -> Vec<(String, String)> {
    let now = unix_now();
    let c = &s.counters;
    let st = &s.store;
    let (user, system) = rusage();
    let mut out: Vec<(String, String)> = Vec::with_capacity(96);
    let mut put = |k: &str, v: String| out.push((k.to_string(), v));
    let zero = || "0".to_string();
    put("pid", std::process::id().to_string());
    put("uptime", now.saturating_sub(info.started).to_string());
    put("time", now.to_string());
    put("version", crate::VERSION_STRING.to_string());
    put("libevent", info.backend.clone());
    put("pointer_size", (usize::BITS).to_string());
    put("rusage_user", user);
    put("rusage_system", system);
    put("max_connections", info.max_connections.to_string());
    put("curr_connections", info.curr_connections.to_string());
    put("total_connections", c.total_connections.to_string());
    if info.maxconns_fast {
        put("rejected_connections", c.rejected_connections.to_string());
    }
    // One connection state per open connection; none kept for reuse.
    put("connection_structures", info.curr_connections.to_string());
    for name in [
        "response_obj_oom",
        "response_obj_count",
        "response_obj_bytes",
        "read_buf_count",
        "read_buf_bytes",
        "read_buf_bytes_free",
        "read_buf_oom",
        "reserved_fds",
    ] {
        put(name, zero());
    }
    put("cmd_get", c.cmd_get.to_string());
    put("cmd_set", c.cmd_set.to_string());
    put("cmd_flush", c.cmd_flush.to_string());
    put("cmd_touch", c.cmd_touch.to_string());
    put("cmd_meta", c.cmd_meta.to_string());
    put("get_hits", st.get_hits.to_string());
    put("get_misses", st.get_misses.to_string());
    put("get_expired", st.get_expired.to_string());
    put("get_flushed", st.get_flushed.to_string());
    put("delete_misses", st.delete_misses.to_string());
    put("delete_hits", st.delete_hits.to_string());
    put("incr_misses", st.incr_misses.to_string());
    put("incr_hits", st.incr_hits.to_string());
    put("decr_misses", st.decr_misses.to_string());
    put("decr_hits", st.decr_hits.to_string());
    put("cas_misses", st.cas_misses.to_string());
    put("cas_hits", st.cas_hits.to_string());
    put("cas_badval", st.cas_badval.to_string());
    put("touch_hits", st.touch_hits.to_string());
    put("touch_misses", st.touch_misses.to_string());
    put(
        "store_too_large",
        (st.store_too_large + c.store_too_large).to_string(),
    );
    put("store_no_memory", st.store_no_memory.to_string());
    put("auth_cmds", c.auth_cmds.to_string());
    put("auth_errors", c.auth_errors.to_string());
    if info.idle_timeout {
        put("idle_kicks", c.idle_kicks.to_string());
    }
    put("bytes_read", c.bytes_read.to_string());
    put("bytes_written", c.bytes_written.to_string());
    put("limit_maxbytes", info.limit_maxbytes.to_string());
    put("accepting_conns", "1".into());
    put("listen_disabled_num", zero());
    put("time_in_listen_disabled_us", zero());
    put("threads", info.threads.to_string());
    put("conn_yields", c.conn_yields.to_string());
    put(
        "hash_power_level",
        st.hash_buckets.checked_ilog2().unwrap_or(0).to_string(),
    );
    put("hash_bytes", st.hash_bytes.to_string());
    put("hash_is_expanding", zero());
    if info.slab_reassign {
        put(
            "slab_reassign_rescues",
            st.slab_reassign_rescues.to_string(),
        );
        put("slab_reassign_chunk_rescues", zero());
        put(
            "slab_reassign_evictions_nomem",
            st.slab_reassign_evictions.to_string(),
        );
        put("slab_reassign_inline_reclaim", zero());
        put("slab_reassign_busy_items", zero());
        put("slab_reassign_busy_deletes", zero());
        put("slab_reassign_running", zero());
        put("slabs_moved", st.slabs_moved.to_string());
    }
    if info.lru_crawler {
        put("lru_crawler_running", zero());
        put("lru_crawler_starts", zero());
    }
    if info.lru_maintainer {
        put("lru_maintainer_juggles", zero());
    }
    put("malloc_fails", zero());
    let log = &info.log;
    put("log_worker_dropped", log.worker_dropped.to_string());
    put("log_worker_written", log.worker_written.to_string());
    put("log_watcher_skipped", log.watcher_skipped.to_string());
    put("log_watcher_sent", log.watcher_sent.to_string());
    put("log_watchers", log.watchers.to_string());
    for (k, v) in &info.tls {
        put(k, v.clone());
    }
    for name in ["unexpected_napi_ids", "round_robin_fallback"] {
        put(name, zero());
    }
    put("bytes", st.bytes.to_string());
    put("curr_items", st.curr_items.to_string());
    put("total_items", st.total_items.to_string());
    put("slab_global_page_pool", zero());
    put("expired_unfetched", st.expired_unfetched.to_string());
    put("evicted_unfetched", st.evicted_unfetched.to_string());
    if info.lru_maintainer {
        put("evicted_active", zero());
    }
    put("evictions", st.evictions.to_string());
    put("reclaimed", st.reclaimed.to_string());
    put("crawler_reclaimed", st.crawler_reclaimed.to_string());
    put(
        "crawler_items_checked",
        st.crawler_items_checked.to_string(),
    );
    put("lrutail_reflocked", zero());
    if info.lru_maintainer {
        for name in [
            "moves_to_cold",
            "moves_to_warm",
            "moves_within_lru",
            "direct_reclaims",
            "lru_bumps_dropped",
        ] {
            put(name, zero());
        }
    }
    out
}

/// What the `settings` group reports: the configuration and the bound port.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The running configuration.
    pub config: crate::config::Config,
    /// Bound TCP port.
    pub tcpport: u16,
    /// `stats detail` is on now.
    pub detail_enabled: bool,
    /// `stats sizes` is counting now.
    pub track_sizes: bool,
}

/// Threads serving each UDP socket, as memcached computes it (whether UDP is on or not): all of
/// them with one -l address, one with several.
pub fn threads_per_udp(c: &crate::config::Config) -> usize {
    if c.listen.len() > 1 {
        1
    } else {
        c.shards()
    }
}

/// The settings group: every name memcached 1.6.18 prints, in its order, with this server's
/// value, or memcached's default where the concept does not exist here (README, "stats
/// settings"); then corecached's own.
pub fn settings(s: &Settings) -> Vec<(String, String)> {
    let c = &s.config;
    let e = &c.extended;
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut out: Vec<(String, String)> = Vec::with_capacity(96);
    let mut put = |k: &str, v: String| out.push((k.to_string(), v));
    put("maxbytes", c.memory_limit.to_string());
    put("maxconns", c.conn_limit.to_string());
    put("tcpport", s.tcpport.to_string());
    put("udpport", c.udp_port.to_string());
    put(
        "inter",
        c.listen
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    put("verbosity", c.verbosity.to_string());
    put("oldest", "0".into());
    put(
        "evictions",
        if c.disable_evictions { "off" } else { "on" }.into(),
    );
    put(
        "domain_socket",
        c.unix_socket
            .as_ref()
            .map_or("NULL".to_string(), |p| p.display().to_string()),
    );
    put("umask", format!("{:o}", c.unix_mask));
    put("shutdown_command", yes(c.enable_shutdown));
    put("growth_factor", format!("{:.2}", c.growth_factor));
    put("chunk_size", c.slab_min_size.to_string());
    put("num_threads", c.shards().to_string());
    put("num_threads_per_udp", threads_per_udp(c).to_string());
    put("stat_key_prefix", c.prefix_delimiter.to_string());
    put("detail_enabled", yes(s.detail_enabled));
    put("reqs_per_event", c.reqs_per_event.unwrap_or(20).to_string());
    put("cas_enabled", yes(!c.disable_cas));
    put("tcp_backlog", c.listen_backlog.to_string());
    put("binding_protocol", c.protocol.name().into());
    // What memcached prints: SASL on or off, the -Y file's path or "no".
    put("auth_enabled_sasl", yes(c.sasl_pwdb.is_some()));
    put(
        "auth_enabled_ascii",
        c.auth_file
            .as_ref()
            .map_or("no".into(), |p| p.display().to_string()),
    );
    put("item_size_max", c.max_item_size.to_string());
    put("maxconns_fast", yes(e.maxconns_fast));
    put("hashpower_init", e.hashpower_init.to_string());
    put("slab_reassign", yes(e.slab_reassign));
    put("slab_automove", e.slab_automove.to_string());
    put(
        "slab_automove_ratio",
        format!("{:.2}", e.slab_automove_ratio),
    );
    put("slab_automove_window", e.slab_automove_window.to_string());
    put("slab_chunk_max", e.slab_chunk_max.to_string());
    put("lru_crawler", yes(e.lru_crawler));
    put("lru_crawler_sleep", e.lru_crawler_sleep.to_string());
    put("lru_crawler_tocrawl", e.lru_crawler_tocrawl.to_string());
    put("tail_repair_time", e.tail_repair_time.to_string());
    put("flush_enabled", yes(!c.disable_flush_all));
    put("dump_enabled", yes(!c.disable_dumping));
    put("hash_algorithm", "xxh3".into());
    put("lru_maintainer_thread", yes(e.lru_maintainer_thread));
    put("lru_segmented", yes(e.lru_segmented));
    put("hot_lru_pct", e.hot_lru_pct.to_string());
    put("warm_lru_pct", e.warm_lru_pct.to_string());
    put("hot_max_factor", format!("{:.2}", e.hot_max_factor));
    put("warm_max_factor", format!("{:.2}", e.warm_max_factor));
    put("temp_lru", yes(e.temp_lru));
    put("temporary_ttl", e.temporary_ttl.to_string());
    put("idle_timeout", e.idle_timeout.to_string());
    put("watcher_logbuf_size", e.watcher_logbuf_size.to_string());
    put("worker_logbuf_size", e.worker_logbuf_size.to_string());
    put(
        "read_buf_mem_limit",
        (c.buffer_memory_limit >> 20).to_string(),
    );
    put("track_sizes", yes(s.track_sizes));
    put("inline_ascii_response", yes(e.inline_ascii_response));
    // No external storage here: memcached's defaults.
    put("ext_item_size", "512".into());
    put("ext_item_age", "4294967295".into());
    put("ext_low_ttl", "0".into());
    put("ext_recache_rate", "2000".into());
    put("ext_wbuf_size", "4194304".into());
    put("ext_compact_under", "0".into());
    put("ext_drop_under", "0".into());
    put("ext_max_sleep", "1000000".into());
    put("ext_max_frag", "0.80".into());
    put("slab_automove_freeratio", "0.010".into());
    put("ext_drop_unread", "no".into());
    for (k, v) in super::tls::settings_lines(c.tls.as_ref()) {
        put(&k, v);
    }
    put(
        "num_napi_ids",
        c.napi_ids.map_or("(null)".to_string(), |n| n.to_string()),
    );
    put("memory_file", "(null)".into());
    // corecached's own.
    put("eviction_policy", c.eviction.name().into());
    out
}

/// The `slabs` group: per class with pages, memcached 1.6.18's fields, then the totals.
pub fn slabs(s: &Snapshot) -> Vec<(String, String)> {
    let mut classes: Vec<&SlabClassStats> =
        s.classes.iter().filter(|c| c.total_pages > 0).collect();
    classes.sort_by_key(|c| c.class);
    let mut out = Vec::new();
    for c in &classes {
        let n = c.class;
        for (field, v) in [
            ("chunk_size", c.chunk_size),
            ("chunks_per_page", c.chunks_per_page),
            ("total_pages", c.total_pages),
            ("total_chunks", c.total_chunks),
            ("used_chunks", c.used_chunks),
            ("free_chunks", c.free_chunks),
            // Pages are carved whole when they join a class: no uncarved end.
            ("free_chunks_end", 0),
            ("get_hits", c.get_hits),
            ("cmd_set", c.set_cmds),
            ("delete_hits", c.delete_hits),
            ("incr_hits", c.incr_hits),
            ("decr_hits", c.decr_hits),
            ("cas_hits", c.cas_hits),
            ("cas_badval", c.cas_badval),
            ("touch_hits", c.touch_hits),
        ] {
            out.push((format!("{n}:{field}"), v.to_string()));
        }
    }
    out.push(("active_slabs".into(), classes.len().to_string()));
    out.push(("total_malloced".into(), s.store.total_malloced.to_string()));
    out
}

/// The `items` group: `items:<class>:<field>` for every class holding items, memcached
/// 1.6.18's fields with its conditions. Each class has one eviction list, which plays the part
/// of memcached's COLD list (where its evictions happen): `number_cold` is the class's items,
/// `age` its list's tail, `hits_to_cold` its hits; HOT, WARM and TEMP stay empty.
pub fn items(s: &Snapshot, info: &ServerInfo) -> Vec<(String, String)> {
    let mut classes: Vec<&SlabClassStats> = s.classes.iter().filter(|c| c.number > 0).collect();
    classes.sort_by_key(|c| c.class);
    let mut out = Vec::new();
    for c in classes {
        let n = c.class;
        let mut put = |field: &str, v: u64| out.push((format!("items:{n}:{field}"), v.to_string()));
        put("number", c.number);
        if info.lru_maintainer {
            put("number_hot", 0);
            put("number_warm", 0);
            put("number_cold", c.number);
            if info.temp_lru {
                put("number_temp", 0);
            }
            put("age_hot", 0);
            put("age_warm", 0);
        }
        put("age", c.age);
        put("mem_requested", c.mem_requested);
        put("evicted", c.evicted);
        put("evicted_nonzero", c.evicted_nonzero);
        put("evicted_time", c.evicted_time);
        put("outofmemory", c.outofmemory);
        put("tailrepairs", 0);
        put("reclaimed", c.reclaimed);
        put("expired_unfetched", c.expired_unfetched);
        put("evicted_unfetched", c.evicted_unfetched);
        if info.lru_maintainer {
            put("evicted_active", 0);
        }
        put("crawler_reclaimed", c.crawler_reclaimed);
        put("crawler_items_checked", c.crawler_items_checked);
        put("lrutail_reflocked", 0);
        if info.lru_maintainer {
            put("moves_to_cold", 0);
            put("moves_to_warm", 0);
            put("moves_within_lru", 0);
            put("direct_reclaims", 0);
            put("hits_to_hot", 0);
            put("hits_to_warm", 0);
            put("hits_to_cold", c.get_hits);
            put("hits_to_temp", 0);
        }
    }
    out
}

impl super::router::Core {
    /// Answers a `stats` request for `group`, gathering every shard's part.
    pub async fn stats(&self, group: &[u8]) -> crate::protocol::Outcome<&'static [u8]> {
        use super::router::{Reply, Request};
        use crate::protocol::Outcome;
        // memcached matches these two by prefix.
        if group.starts_with(b"reset") {
            self.fan_out(|| Request::ResetStats).await;
            self.reset_stats();
            return Outcome::Stats(Vec::new());
        }
        if group.starts_with(b"settings") {
            return Outcome::Stats(settings(&self.shared.settings()));
        }
        // `stats detail on|off|dump`: memcached's binary matching (the text decoder sends
        // exactly these three).
        if let Some(sub) = group.strip_prefix(b"detail") {
            let delimiter = self.shared.config().delimiter_byte();
            let set = |on: bool| {
                self.shared
                    .all_shards()
                    .for_each(|s| s.set_detail(on, delimiter));
                Outcome::Stats(Vec::new())
            };
            return if sub.starts_with(b" dump") {
                let mut total = BTreeMap::new();
                for s in self.shared.all_shards() {
                    s.prefix_stats().add_to(&mut total);
                }
                Outcome::Stats(vec![("detailed".into(), detail_dump(&total))])
            } else if sub.starts_with(b" on") {
                set(true)
            } else if sub.starts_with(b" off") {
                set(false)
            } else {
                Outcome::UnknownStatsGroup
            };
        }
        let status = |v: &str| vec![("sizes_status".to_string(), v.to_string())];
        match group {
            b"sizes" => {
                let mut hist = BTreeMap::new();
                let mut enabled = false;
                for s in self.shared.all_shards() {
                    if let Some(sizes) = s.sizes() {
                        enabled = true;
                        for (size, n) in sizes {
                            *hist.entry(size).or_insert(0u64) += n;
                        }
                    }
                }
                return Outcome::Stats(if enabled {
                    hist.into_iter()
                        .map(|(size, n)| (size.to_string(), n.to_string()))
                        .collect()
                } else {
                    status("disabled")
                });
            }
            // memcached ends these two answers without END (or a binary terminator).
            b"sizes_enable" if self.shared.config().disable_cas => {
                let mut pairs = status("error");
                pairs.push(("sizes_error".into(), "cas_support_disabled".into()));
                return Outcome::StatsOpen(pairs);
            }
            b"sizes_enable" | b"sizes_disable" => {
                let on = group == b"sizes_enable";
                self.shared.all_shards().for_each(|s| s.set_track_sizes(on));
                return Outcome::StatsOpen(status(if on { "enabled" } else { "disabled" }));
            }
            _ => {}
        }
        if group == b"replication" && self.shared.repl.is_none() {
            return Outcome::UnknownStatsGroup;
        }
        let known: &[&[u8]] = &[
            b"",
            b"items",
            b"slabs",
            b"latency",
            b"replication",
            b"hotkeys",
        ];
        if !known.contains(&group) {
            return Outcome::UnknownStatsGroup;
        }
        let mut total = self.snapshot();
        for reply in self.fan_out(|| Request::Stats).await {
            if let Reply::Stats(s) = reply {
                total.add(&s);
            }
        }
        Outcome::Stats(match group {
            b"items" => items(&total, &self.shared.server_info()),
            b"slabs" => slabs(&total),
            b"latency" => total.latency.report(),
            b"hotkeys" => super::hotkeys::report(
                &super::hotkeys::merge([&total.hot[..]], super::hotkeys::REPORTED),
                self.shard.hotkeys_sample(),
            ),
            b"replication" => self.replication_report(&total),
            _ => {
                let mut lines = general(&self.shared.server_info(), &total);
                if self.shared.repl.is_some() {
                    // After memcached's own names, so parsers that know them find them in place.
                    lines.extend(self.replication_report(&total));
                }
                lines
            }
        })
    }

    /// `stats replication` (with `--cluster`): the streams' figures, the backlogs' bytes and the
    /// tombstones deletes left (from `total`, the shards' summed figures).
    pub(super) fn replication_report(&self, total: &Snapshot) -> Vec<(String, String)> {
        let Some(repl) = &self.shared.repl else {
            return Vec::new();
        };
        let (bytes, dropped) = self
            .shared
            .all_shards()
            .map(|s| s.repl_backlog())
            .fold((0, 0), |(b, d), (b2, d2)| (b + b2, d + d2));
        let mut lines = repl.report(bytes, dropped);
        let st = &total.store;
        for (name, value) in [
            ("repl_tombstones", st.tombstones),
            ("repl_tombstone_bytes", st.tombstone_bytes),
            ("repl_tombstones_reclaimed", st.tombstones_reclaimed),
        ] {
            lines.push((name.to_owned(), value.to_string()));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_sum() {
        let mut a = Snapshot::default();
        a.counters.cmd_get = 2;
        a.classes.push(SlabClassStats {
            class: 1,
            total_pages: 3,
            ..Default::default()
        });
        let mut b = Snapshot::default();
        b.counters.cmd_get = 5;
        b.classes.push(SlabClassStats {
            class: 1,
            total_pages: 1,
            ..Default::default()
        });
        b.latency.record(Kind::Get, Some(Duration::from_micros(3)));
        b.latency.record(Kind::Get, None);
        a.latency.record(Kind::Get, None);
        a.add(&b);
        assert_eq!(a.counters.cmd_get, 7);
        assert_eq!(a.classes.len(), 1);
        assert_eq!(a.classes[0].total_pages, 4);
        let rep = a.latency.report();
        assert_eq!(rep[0], ("get_count".to_string(), "3".to_string()));
        // Two significant digits: 3 µs reads back as the top of its bucket.
        assert_eq!(rep[1], ("get_p50_us".to_string(), "3.007".to_string()));
    }

    #[test]
    fn one_command_in_every_sample_period_is_timed() {
        let timed = (0..LATENCY_SAMPLE_EVERY * 4)
            .filter(|_| sample_latency())
            .count();
        assert_eq!(timed, 4);
    }

    #[test]
    fn general_starts_like_memcached() {
        let info = ServerInfo {
            started: unix_now(),
            threads: 2,
            max_connections: 1024,
            curr_connections: 1,
            limit_maxbytes: 64 << 20,
            backend: "epoll".into(),
            maxconns_fast: true,
            idle_timeout: false,
            slab_reassign: true,
            lru_crawler: true,
            lru_maintainer: true,
            temp_lru: false,
            log: Default::default(),
            tls: Vec::new(),
        };
        let g = general(&info, &Snapshot::default());
        let names: Vec<&str> = g.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..4], &["pid", "uptime", "time", "version"]);
    }

    #[test]
    fn prefixes_split_at_the_delimiter_and_stay_bounded() {
        let mut p = PrefixStats::default();
        p.record(b"user:1", b':', |c| c.set += 1);
        p.record(b"user:2:x", b':', |c| c.get += 1);
        p.record(b"nodelim", b':', |c| c.set += 1);
        p.record(b"nul\0:x", b':', |c| c.set += 1);
        let mut total = BTreeMap::new();
        p.add_to(&mut total);
        assert_eq!(
            detail_dump(&total),
            "PREFIX user get 1 hit 0 set 1 del 0\r\nEND\r\n"
        );
        for i in 0..MAX_PREFIXES + 10 {
            p.record(format!("{i}:k").as_bytes(), b':', |c| c.del += 1);
        }
        assert_eq!(p.map.len(), MAX_PREFIXES);
    }
}
