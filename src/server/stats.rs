//! Per-shard counters and latency histograms, and their aggregation into memcached's `stats`
//! replies (names, order and meanings of memcached 1.6.18 where a true value exists; names that
//! would only carry a made-up value are left out).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

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
    /// Connections accepted (also the refused ones' opposite: see `rejected_connections`).
    total_connections,
    /// Connections refused because of `-c`.
    rejected_connections,
    /// Get and get-like requests (GAT counts as touch, as in memcached).
    cmd_get,
    /// Storage requests.
    cmd_set,
    /// Flush requests.
    cmd_flush,
    /// Touch and GAT requests.
    cmd_touch,
    /// Gets that found the key.
    get_hits,
    /// Gets that did not.
    get_misses,
    /// Deletes of a missing key.
    delete_misses,
    /// Deletes that removed an item.
    delete_hits,
    /// Incr of a missing key (auto-created or not).
    incr_misses,
    /// Incr that changed an item.
    incr_hits,
    /// Decr of a missing key.
    decr_misses,
    /// Decr that changed an item.
    decr_hits,
    /// CAS stores on a missing key.
    cas_misses,
    /// CAS stores that matched.
    cas_hits,
    /// CAS stores that did not match.
    cas_badval,
    /// Touch/GAT that found the key.
    touch_hits,
    /// Touch/GAT that did not.
    touch_misses,
    /// Stores refused for size.
    store_too_large,
    /// Stores that found no memory.
    store_no_memory,
    /// Bytes read from clients.
    bytes_read,
    /// Bytes written to clients.
    bytes_written,
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

/// Execution time of commands on the owning shard, per kind.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Vec<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            hist: Kind::ALL.iter().map(|_| new_histogram()).collect(),
        }
    }
}

impl Latencies {
    /// Records one command's execution time.
    #[inline]
    pub fn record(&mut self, kind: Kind, took: Duration) {
        let ns = (took.as_nanos() as u64).clamp(1, LATENCY_MAX_NS);
        // Cannot fail: the value is within the bounds.
        let _ = self.hist[kind as usize].record(ns);
    }

    /// Adds another shard's histograms.
    pub fn add(&mut self, other: &Latencies) {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            // Same bounds on every shard, so adding cannot fail.
            let _ = a.add(b);
        }
    }

    /// Forgets everything recorded.
    pub fn reset(&mut self) {
        self.hist.iter_mut().for_each(|h| h.reset());
    }

    /// The `latency` group: per kind the count and p50/p90/p99/p999/max in microseconds.
    pub fn report(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let h = &self.hist[kind as usize];
            let name = kind.name();
            out.push((format!("{name}_count"), h.len().to_string()));
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

/// What the store of one shard reports about its contents.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreTotals {
    /// Bytes used by items.
    pub bytes: u64,
    /// Items held now.
    pub curr_items: u64,
    /// Items ever stored.
    pub total_items: u64,
    /// Items evicted to make room.
    pub evictions: u64,
    /// Times an expired item's memory was reused.
    pub reclaimed: u64,
    /// Expired items never fetched.
    pub expired_unfetched: u64,
    /// Evicted items never fetched.
    pub evicted_unfetched: u64,
    /// Gets that found an expired item.
    pub get_expired: u64,
    /// Gets that found a flushed item.
    pub get_flushed: u64,
}

impl StoreTotals {
    /// Adds another shard's totals.
    pub fn add(&mut self, o: &StoreTotals) {
        self.bytes += o.bytes;
        self.curr_items += o.curr_items;
        self.total_items += o.total_items;
        self.evictions += o.evictions;
        self.reclaimed += o.reclaimed;
        self.expired_unfetched += o.expired_unfetched;
        self.evicted_unfetched += o.evicted_unfetched;
        self.get_expired += o.get_expired;
        self.get_flushed += o.get_flushed;
    }
}

/// Everything one shard contributes to a `stats` reply.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Event counters.
    pub counters: Counters,
    /// Store contents.
    pub store: StoreTotals,
    /// Per slab class `(class, field, value)` for `stats slabs` / `stats items`, summed by key.
    pub classes: Vec<(u32, &'static str, u64)>,
    /// Latency histograms.
    pub latency: Latencies,
}

impl Snapshot {
    /// Merges another shard's snapshot into this one.
    pub fn add(&mut self, o: &Snapshot) {
        self.counters.add(&o.counters);
        self.store.add(&o.store);
        self.latency.add(&o.latency);
        for &(class, field, value) in &o.classes {
            match self
                .classes
                .iter_mut()
                .find(|(c, f, _)| *c == class && *f == field)
            {
                Some(entry) => entry.2 += value,
                None => self.classes.push((class, field, value)),
            }
        }
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

/// The general group, in memcached 1.6.18's order.
pub fn general(info: &ServerInfo, s: &Snapshot) -> Vec<(String, String)> {
    let now = unix_now();
    let c = &s.counters;
    let st = &s.store;
    let (user, system) = rusage();
    let mut out: Vec<(String, String)> = Vec::with_capacity(64);
    let mut put = |k: &str, v: String| out.push((k.to_string(), v));
    put("pid", std::process::id().to_string());
    put("uptime", now.saturating_sub(info.started).to_string());
    put("time", now.to_string());
    put("version", crate::VERSION_STRING.to_string());
    put("pointer_size", (usize::BITS).to_string());
    put("rusage_user", user);
    put("rusage_system", system);
    put("max_connections", info.max_connections.to_string());
    put("curr_connections", info.curr_connections.to_string());
    put("total_connections", c.total_connections.to_string());
    put("rejected_connections", c.rejected_connections.to_string());
    put("cmd_get", c.cmd_get.to_string());
    put("cmd_set", c.cmd_set.to_string());
    put("cmd_flush", c.cmd_flush.to_string());
    put("cmd_touch", c.cmd_touch.to_string());
    put("get_hits", c.get_hits.to_string());
    put("get_misses", c.get_misses.to_string());
    put("get_expired", st.get_expired.to_string());
    put("get_flushed", st.get_flushed.to_string());
    put("delete_misses", c.delete_misses.to_string());
    put("delete_hits", c.delete_hits.to_string());
    put("incr_misses", c.incr_misses.to_string());
    put("incr_hits", c.incr_hits.to_string());
    put("decr_misses", c.decr_misses.to_string());
    put("decr_hits", c.decr_hits.to_string());
    put("cas_misses", c.cas_misses.to_string());
    put("cas_hits", c.cas_hits.to_string());
    put("cas_badval", c.cas_badval.to_string());
    put("touch_hits", c.touch_hits.to_string());
    put("touch_misses", c.touch_misses.to_string());
    put("store_too_large", c.store_too_large.to_string());
    put("store_no_memory", c.store_no_memory.to_string());
    // SASL is off: memcached reports zeros then too.
    put("auth_cmds", "0".into());
    put("auth_errors", "0".into());
    put("bytes_read", c.bytes_read.to_string());
    put("bytes_written", c.bytes_written.to_string());
    put("limit_maxbytes", info.limit_maxbytes.to_string());
    put("accepting_conns", "1".into());
    put("threads", info.threads.to_string());
    put("bytes", st.bytes.to_string());
    put("curr_items", st.curr_items.to_string());
    put("total_items", st.total_items.to_string());
    put("expired_unfetched", st.expired_unfetched.to_string());
    put("evicted_unfetched", st.evicted_unfetched.to_string());
    put("evictions", st.evictions.to_string());
    put("reclaimed", st.reclaimed.to_string());
    out
}

/// Settings the `settings` group reports.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `-m` in bytes.
    pub maxbytes: usize,
    /// `-c`.
    pub maxconns: usize,
    /// Bound TCP port.
    pub tcpport: u16,
    /// Listen address(es), comma separated.
    pub inter: String,
    /// `-v` count.
    pub verbosity: u8,
    /// `-f`.
    pub growth_factor: f64,
    /// Shards.
    pub num_threads: usize,
    /// `-I`.
    pub item_size_max: usize,
    /// `--eviction` name.
    pub eviction: &'static str,
}

/// The settings group, memcached's names in its order, then ours.
pub fn settings(s: &Settings) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(24);
    let mut put = |k: &str, v: String| out.push((k.to_string(), v));
    put("maxbytes", s.maxbytes.to_string());
    put("maxconns", s.maxconns.to_string());
    put("tcpport", s.tcpport.to_string());
    put("udpport", "0".into());
    put("inter", s.inter.clone());
    put("verbosity", s.verbosity.to_string());
    put("evictions", "on".into());
    put("domain_socket", "NULL".into());
    put("growth_factor", format!("{:.2}", s.growth_factor));
    put("num_threads", s.num_threads.to_string());
    put("cas_enabled", "yes".into());
    put("tcp_backlog", "1024".into());
    put("binding_protocol", "auto-negotiate".into());
    put("auth_enabled_sasl", "no".into());
    put("item_size_max", s.item_size_max.to_string());
    put("slab_reassign", "yes".into());
    put("flush_enabled", "yes".into());
    put("hash_algorithm", "xxh3".into());
    put("eviction_policy", s.eviction.into());
    out
}

/// The `slabs` group (`<class>:<field>` lines, then `active_slabs`/`total_malloced` when known),
/// or the `items` group (`items:<class>:<field>`), from the summed per-class values.
pub fn classes(s: &Snapshot, items: bool) -> Vec<(String, String)> {
    let mut rows: Vec<(u32, &'static str, u64)> = s
        .classes
        .iter()
        .copied()
        .filter(|(_, f, _)| f.starts_with("items:") == items)
        .collect();
    // Stable sort keeps each class's fields in the order the store gave them.
    rows.sort_by_key(|r| r.0);
    let mut out = Vec::with_capacity(rows.len() + 2);
    let mut active = 0u64;
    let mut last = None;
    for (class, field, value) in rows {
        if last != Some(class) {
            active += 1;
            last = Some(class);
        }
        let mut key = String::new();
        match field.strip_prefix("items:") {
            Some(f) => {
                let _ = write!(key, "items:{class}:{f}");
            }
            None => {
                let _ = write!(key, "{class}:{field}");
            }
        }
        out.push((key, value.to_string()));
    }
    if !items {
        out.push(("active_slabs".into(), active.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_sum() {
        let mut a = Snapshot::default();
        a.counters.cmd_get = 2;
        a.classes.push((1, "total_pages", 3));
        let mut b = Snapshot::default();
        b.counters.cmd_get = 5;
        b.classes.push((1, "total_pages", 1));
        b.latency.record(Kind::Get, Duration::from_micros(3));
        a.add(&b);
        assert_eq!(a.counters.cmd_get, 7);
        assert_eq!(a.classes, vec![(1, "total_pages", 4)]);
        let rep = a.latency.report();
        assert_eq!(rep[0], ("get_count".to_string(), "1".to_string()));
    }

    #[test]
    fn general_starts_like_memcached() {
        let info = ServerInfo {
            started: unix_now(),
            threads: 2,
            max_connections: 1024,
            curr_connections: 1,
            limit_maxbytes: 64 << 20,
        };
        let g = general(&info, &Snapshot::default());
        let names: Vec<&str> = g.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..4], &["pid", "uptime", "time", "version"]);
    }
}
