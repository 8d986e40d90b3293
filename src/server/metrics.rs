//! `GET /metrics`: the Prometheus text exposition, built on demand from the same figures
//! `stats` reports (no counter of its own): the asking core takes its shard's snapshot and asks
//! every other shard for theirs over the mail (as `stats` does), then the `prometheus` crate's
//! metric families are filled and encoded in its text format.
//!
//! Names: memcached_exporter's where it has one (so its dashboards work), for every figure of
//! `stats`, `stats settings`, `stats items` and `stats slabs` that it maps; every other
//! numeric `stats` figure as `corecached_<name>`; then corecached's own: per-shard load,
//! per-command execution-time histograms, the HTTP face's requests and replication per peer.
//! Three of the exporter's counters have no `_total` suffix (`memcached_uptime_seconds`,
//! `memcached_slab_items_evicted_time_seconds`, `memcached_slab_items_moves_*`); they are gauges
//! here, which keeps the same names and passes `promtool check metrics`.

use std::collections::HashMap;

use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Encoder;

use super::router::{Core, Reply, Request};
use super::stats::{self, Kind, Snapshot};

/// The exposition's content type (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 19] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0,
];

/// Metric families under construction, in the order first named.
#[derive(Default)]
struct Families {
    list: Vec<MetricFamily>,
    index: HashMap<String, usize>,
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name((*name).to_owned());
            l.set_value((*value).to_owned());
            l
        })
        .collect()
}

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let mut f = MetricFamily::default();
                f.set_name(name.to_owned());
                f.set_help(help.to_owned());
                f.set_field_type(kind);
                self.list.push(f);
                self.index.insert(name.to_owned(), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[i]
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        let mut c = proto::Counter::default();
        c.set_value(v);
        let mut m = Metric::default();
        m.set_label(label_pairs(labels));
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER)
            .mut_metric()
            .push(m);
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        let mut g = proto::Gauge::default();
        g.set_value(v);
        let mut m = Metric::default();
        m.set_label(label_pairs(labels));
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE)
            .mut_metric()
            .push(m);
    }

    fn metric(&mut self, kind: Type, name: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        match kind {
            Type::Counter => self.counter(name, help, labels, v),
            Type::Gauge => self.gauge(name, help, labels, v),
        }
    }

    /// A histogram of nanosecond samples, in seconds.
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        h: &hdrhistogram::Histogram<u64>,
    ) {
        let buckets = LATENCY_BUCKETS
            .iter()
            .map(|&le| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(h.count_between(0, (le * 1e9) as u64));
                b
            })
            .collect();
        let mut p = proto::Histogram::default();
        p.set_bucket(buckets);
        p.set_sample_count(h.len());
        p.set_sample_sum(h.mean() * h.len() as f64 / 1e9);
        let mut m = Metric::default();
        m.set_label(label_pairs(labels));
        m.set_histogram(p);
        self.family(name, help, MetricType::HISTOGRAM)
            .mut_metric()
            .push(m);
    }
}

#[derive(Clone, Copy)]
enum Type {
    Counter,
    Gauge,
}
use Type::{Counter as C, Gauge as G};

/// `stats` names memcached_exporter maps one to one: (stats name, metric, type, help).
const GENERAL: &[(&str, &str, Type, &str)] = &[
    ("uptime", "memcached_uptime_seconds", G, "Number of seconds since the server started."),
    ("time", "memcached_time_seconds", G, "current UNIX time according to the server."),
    ("rusage_user", "memcached_process_user_cpu_seconds_total", C, "Accumulated user time for this process."),
    ("rusage_system", "memcached_process_system_cpu_seconds_total", C, "Accumulated system time for this process."),
    ("bytes_read", "memcached_read_bytes_total", C, "Total number of bytes read by this server from network."),
    ("bytes_written", "memcached_written_bytes_total", C, "Total number of bytes sent by this server to network."),
    ("curr_connections", "memcached_current_connections", G, "Current number of open connections."),
    ("max_connections", "memcached_max_connections", G, "Maximum number of clients allowed."),
    ("total_connections", "memcached_connections_total", C, "Total number of connections opened since the server started running."),
    ("rejected_connections", "memcached_connections_rejected_total", C, "Total number of connections rejected due to hitting the memcached's -c limit in maxconns_fast mode."),
    ("conn_yields", "memcached_connections_yielded_total", C, "Total number of connections yielded running due to hitting the memcached's -R limit."),
    ("listen_disabled_num", "memcached_connections_listener_disabled_total", C, "Number of times that memcached has hit its connections limit and disabled its listener."),
    ("bytes", "memcached_current_bytes", G, "Current number of bytes used to store items."),
    ("limit_maxbytes", "memcached_limit_bytes", G, "Number of bytes this server is allowed to use for storage."),
    ("curr_items", "memcached_current_items", G, "Current number of items stored by this instance."),
    ("total_items", "memcached_items_total", C, "Total number of items stored during the life of this instance."),
    ("evictions", "memcached_items_evicted_total", C, "Total number of valid items removed from cache to free memory for new items."),
    ("reclaimed", "memcached_items_reclaimed_total", C, "Total number of times an entry was stored using memory from an expired entry."),
    ("store_too_large", "memcached_item_too_large_total", C, "The number of times an item exceeded the max-item-size when being stored."),
    ("store_no_memory", "memcached_item_no_memory_total", C, "The number of times an item could not be stored due to no more memory."),
    ("lru_crawler_starts", "memcached_lru_crawler_starts_total", C, "Times an LRU crawler was started."),
    ("direct_reclaims", "memcached_direct_reclaims_total", C, "Times worker threads had to directly reclaim or evict items."),
    ("crawler_items_checked", "memcached_lru_crawler_items_checked_total", C, "Total items examined by LRU Crawler."),
    ("crawler_reclaimed", "memcached_lru_crawler_reclaimed_total", C, "Total items freed by LRU Crawler."),
    ("moves_to_cold", "memcached_lru_crawler_moves_to_cold_total", C, "Total number of items moved from HOT/WARM to COLD LRU's."),
    ("moves_to_warm", "memcached_lru_crawler_moves_to_warm_total", C, "Total number of items moved from COLD to WARM LRU."),
    ("moves_within_lru", "memcached_lru_crawler_moves_within_lru_total", C, "Total number of items reshuffled within HOT or WARM LRU's."),
    ("total_malloced", "memcached_malloced_bytes", G, "Number of bytes of memory allocated to slab pages."),
    ("accepting_conns", "memcached_accepting_conns", G, "The Memcached server is currently accepting new connections."),
];

/// `stats` figures that go into `memcached_commands_total` (or are text).
const COMMAND_FIGURES: &[&str] = &[
    "get_hits",
    "get_misses",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "cmd_flush",
    "cmd_set",
    "version",
    "libevent",
];

/// Figures that are always 0 here and whose names Prometheus' lint refuses (a unit abbreviation,
/// a `_count` suffix outside a histogram): left out.
const LEFT_OUT: &[&str] = &[
    "time_in_listen_disabled_us",
    "response_obj_count",
    "read_buf_count",
];

/// Other `stats` figures that only grow (exported as `corecached_<name>_total`).
const MONOTONIC: &[&str] = &[
    "cmd_get",
    "cmd_touch",
    "cmd_meta",
    "get_expired",
    "get_flushed",
    "auth_cmds",
    "auth_errors",
    "idle_kicks",
    "expired_unfetched",
    "evicted_unfetched",
    "evicted_active",
    "slab_reassign_rescues",
    "slab_reassign_chunk_rescues",
    "slab_reassign_evictions_nomem",
    "slab_reassign_inline_reclaim",
    "slab_reassign_busy_items",
    "slab_reassign_busy_deletes",
    "slabs_moved",
    "log_worker_dropped",
    "log_worker_written",
    "log_watcher_skipped",
    "log_watcher_sent",
    "malloc_fails",
    "response_obj_oom",
    "read_buf_oom",
    "lru_maintainer_juggles",
    "lrutail_reflocked",
    "lru_bumps_dropped",
    "unexpected_napi_ids",
    "round_robin_fallback",
];

/// `stats items` fields memcached_exporter maps (per `slab`).
const ITEMS: &[(&str, &str, Type, &str)] = &[
    ("number", "memcached_slab_current_items", G, "Number of items currently stored in this slab class."),
    ("age", "memcached_slab_items_age_seconds", G, "Number of seconds the oldest item has been in the slab class."),
    ("crawler_reclaimed", "memcached_slab_items_crawler_reclaimed_total", C, "Number of items freed by the LRU Crawler."),
    ("evicted", "memcached_slab_items_evicted_total", C, "Total number of times an item had to be evicted from the LRU before it expired."),
    ("evicted_nonzero", "memcached_slab_items_evicted_nonzero_total", C, "Total number of times an item which had an explicit expire time set had to be evicted from the LRU before it expired."),
    ("evicted_time", "memcached_slab_items_evicted_time_seconds", G, "Seconds since the last access for the most recent item evicted from this class."),
    ("evicted_unfetched", "memcached_slab_items_evicted_unfetched_total", C, "Total number of items evicted and never fetched."),
    ("expired_unfetched", "memcached_slab_items_expired_unfetched_total", C, "Total number of valid items evicted from the LRU which were never touched after being set."),
    ("outofmemory", "memcached_slab_items_outofmemory_total", C, "Total number of items for this slab class that have triggered an out of memory error."),
    ("reclaimed", "memcached_slab_items_reclaimed_total", C, "Total number of items reclaimed."),
    ("tailrepairs", "memcached_slab_items_tailrepairs_total", C, "Total number of times the entries for a particular ID need repairing."),
    ("mem_requested", "memcached_slab_mem_requested_bytes", G, "Number of bytes of memory actual items take up within a slab."),
    ("moves_to_cold", "memcached_slab_items_moves_to_cold", G, "Number of items moved from HOT or WARM into COLD."),
    ("moves_to_warm", "memcached_slab_items_moves_to_warm", G, "Number of items moves from COLD into WARM."),
    ("moves_within_lru", "memcached_slab_items_moves_within_lru", G, "Number of times active items were bumped within HOT or WARM."),
    ("number_hot", "memcached_slab_hot_items", G, "Number of items presently stored in the HOT LRU."),
    ("number_warm", "memcached_slab_warm_items", G, "Number of items presently stored in the WARM LRU."),
    ("number_cold", "memcached_slab_cold_items", G, "Number of items presently stored in the COLD LRU."),
    ("number_temp", "memcached_slab_temporary_items", G, "Number of items presently stored in the TEMPORARY LRU."),
    ("age_hot", "memcached_slab_hot_age_seconds", G, "Age of the oldest item in HOT LRU."),
    ("age_warm", "memcached_slab_warm_age_seconds", G, "Age of the oldest item in WARM LRU."),
];

/// `stats slabs` fields memcached_exporter maps (per `slab`).
const SLABS: &[(&str, &str, &str)] = &[
    (
        "chunk_size",
        "memcached_slab_chunk_size_bytes",
        "Number of bytes allocated to each chunk within this slab class.",
    ),
    (
        "chunks_per_page",
        "memcached_slab_chunks_per_page",
        "Number of chunks within a single page for this slab class.",
    ),
    (
        "total_pages",
        "memcached_slab_current_pages",
        "Number of pages allocated to this slab class.",
    ),
    (
        "total_chunks",
        "memcached_slab_current_chunks",
        "Number of chunks allocated to this slab class.",
    ),
    (
        "used_chunks",
        "memcached_slab_chunks_used",
        "Number of chunks allocated to an item.",
    ),
    (
        "free_chunks",
        "memcached_slab_chunks_free",
        "Number of chunks not yet allocated items.",
    ),
    (
        "free_chunks_end",
        "memcached_slab_chunks_free_end",
        "Number of free chunks at the end of the last allocated page.",
    ),
];

const COMMANDS_HELP: &str =
    "Total number of all requests broken down by command (get, set, etc.) and status.";
const SLAB_COMMANDS_HELP: &str =
    "Total number of all requests broken down by command (get, set, etc.) and status per slab.";

fn num(v: &str) -> Option<f64> {
    v.parse::<f64>().ok()
}

/// The general group: the exporter's names, `memcached_commands_total`, the rest as ours.
fn general(f: &mut Families, pairs: &[(String, String)]) {
    let map: HashMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let get = |k: &str| map.get(k).and_then(|v| num(v)).unwrap_or(0.0);
    f.gauge(
        "memcached_up",
        "Could the memcached server be reached.",
        &[],
        1.0,
    );
    if let Some(v) = map.get("version") {
        f.gauge(
            "memcached_version",
            "The version of this memcached server.",
            &[("version", v)],
            1.0,
        );
    }
    for op in ["get", "delete", "incr", "decr", "cas", "touch"] {
        for (status, suffix) in [("hit", "_hits"), ("miss", "_misses")] {
            let v = get(&format!("{op}{suffix}"));
            f.counter(
                "memcached_commands_total",
                COMMANDS_HELP,
                &[("command", op), ("status", status)],
                v,
            );
        }
    }
    f.counter(
        "memcached_commands_total",
        COMMANDS_HELP,
        &[("command", "cas"), ("status", "badval")],
        get("cas_badval"),
    );
    f.counter(
        "memcached_commands_total",
        COMMANDS_HELP,
        &[("command", "flush"), ("status", "hit")],
        get("cmd_flush"),
    );
    // As the exporter: cmd_set counts CAS stores too.
    let cas = get("cas_misses") + get("cas_hits") + get("cas_badval");
    f.counter(
        "memcached_commands_total",
        COMMANDS_HELP,
        &[("command", "set"), ("status", "hit")],
        (get("cmd_set") - cas).max(0.0),
    );
    for (stat, name, kind, help) in GENERAL {
        if let Some(v) = map.get(stat).and_then(|v| num(v)) {
            f.metric(*kind, name, help, &[], v);
        }
    }
    for (stat, value) in pairs {
        let stat = stat.as_str();
        // With --cluster the general group ends with `stats replication`: see replication().
        if stat.contains(':') || stat.starts_with("repl_") {
            continue;
        }
        if COMMAND_FIGURES.contains(&stat)
            || LEFT_OUT.contains(&stat)
            || GENERAL.iter().any(|(s, ..)| *s == stat)
        {
            continue;
        }
        let Some(v) = num(value) else { continue };
        let help = format!("The `stats` figure {stat}.");
        if MONOTONIC.contains(&stat) {
            f.counter(&format!("corecached_{stat}_total"), &help, &[], v);
        } else {
            f.gauge(&format!("corecached_{stat}"), &help, &[], v);
        }
    }
}

/// `stats settings` figures the exporter maps.
fn settings(f: &mut Families, pairs: &[(String, String)]) {
    let map: HashMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if map.get("lru_crawler") != Some(&"yes") {
        return;
    }
    let yes = |k: &str| f64::from(u8::from(map.get(k) == Some(&"yes")));
    let get = |k: &str| map.get(k).and_then(|v| num(v)).unwrap_or(0.0);
    f.gauge(
        "memcached_lru_crawler_enabled",
        "Whether the LRU crawler is enabled.",
        &[],
        yes("lru_crawler"),
    );
    f.gauge(
        "memcached_lru_crawler_sleep",
        "Microseconds to sleep between LRU crawls.",
        &[],
        get("lru_crawler_sleep"),
    );
    f.gauge(
        "memcached_lru_crawler_to_crawl",
        "Max items to crawl per slab per run.",
        &[],
        get("lru_crawler_tocrawl"),
    );
    f.gauge(
        "memcached_lru_crawler_maintainer_thread",
        "Split LRU mode and background threads.",
        &[],
        yes("lru_maintainer_thread"),
    );
    f.gauge(
        "memcached_lru_crawler_hot_percent",
        "Percent of slab memory reserved for HOT LRU.",
        &[],
        get("hot_lru_pct"),
    );
    f.gauge(
        "memcached_lru_crawler_warm_percent",
        "Percent of slab memory reserved for WARM LRU.",
        &[],
        get("warm_lru_pct"),
    );
    f.gauge(
        "memcached_lru_crawler_hot_max_factor",
        "Set idle age of HOT LRU to COLD age * this",
        &[],
        get("hot_max_factor"),
    );
    f.gauge(
        "memcached_lru_crawler_warm_max_factor",
        "Set idle age of WARM LRU to COLD age * this",
        &[],
        get("warm_max_factor"),
    );
}

/// `stats items`: `items:<slab>:<field>`.
fn items(f: &mut Families, pairs: &[(String, String)]) {
    for (name, value) in pairs {
        let Some((slab, field)) = name.strip_prefix("items:").and_then(|r| r.split_once(':'))
        else {
            continue;
        };
        let Some(v) = num(value) else { continue };
        let lru = match field {
            "hits_to_hot" => Some("hot"),
            "hits_to_warm" => Some("warm"),
            "hits_to_cold" => Some("cold"),
            "hits_to_temp" => Some("temporary"),
            _ => None,
        };
        if let Some(lru) = lru {
            f.counter(
                "memcached_slab_lru_hits_total",
                "Number of get_hits to the LRU.",
                &[("slab", slab), ("lru", lru)],
                v,
            );
        } else if let Some((_, metric, kind, help)) = ITEMS.iter().find(|(s, ..)| *s == field) {
            f.metric(*kind, metric, help, &[("slab", slab)], v);
        } else {
            let help = format!("The `stats items` figure {field} per slab class.");
            f.gauge(
                &format!("corecached_slab_items_{field}"),
                &help,
                &[("slab", slab)],
                v,
            );
        }
    }
}

/// `stats slabs`: `<slab>:<field>`, then the totals.
fn slabs(f: &mut Families, pairs: &[(String, String)]) {
    let mut per_slab: HashMap<&str, HashMap<&str, f64>> = HashMap::new();
    for (name, value) in pairs {
        let Some(v) = num(value) else { continue };
        match name.split_once(':') {
            Some((slab, field)) => {
                per_slab.entry(slab).or_default().insert(field, v);
            }
            None if name == "active_slabs" => {
                f.gauge(
                    "corecached_active_slabs",
                    "Slab classes holding pages.",
                    &[],
                    v,
                );
            }
            None => {}
        }
    }
    let mut classes: Vec<_> = per_slab.into_iter().collect();
    classes.sort_by_key(|(slab, _)| slab.parse::<u32>().unwrap_or(u32::MAX));
    for (slab, fields) in &classes {
        let get = |k: &str| fields.get(k).copied().unwrap_or(0.0);
        for op in ["get", "delete", "incr", "decr", "cas", "touch"] {
            f.counter(
                "memcached_slab_commands_total",
                SLAB_COMMANDS_HELP,
                &[("slab", slab), ("command", op), ("status", "hit")],
                get(&format!("{op}_hits")),
            );
        }
        f.counter(
            "memcached_slab_commands_total",
            SLAB_COMMANDS_HELP,
            &[("slab", slab), ("command", "cas"), ("status", "badval")],
            get("cas_badval"),
        );
        f.counter(
            "memcached_slab_commands_total",
            SLAB_COMMANDS_HELP,
            &[("slab", slab), ("command", "set"), ("status", "hit")],
            (get("cmd_set") - get("cas_hits") - get("cas_badval")).max(0.0),
        );
        for (field, metric, help) in SLABS {
            f.gauge(metric, help, &[("slab", slab)], get(field));
        }
    }
}

/// corecached's own: each shard's load and memory, the execution-time histograms.
fn shards(f: &mut Families, per_shard: &[Snapshot], total: &Snapshot) {
    for (i, s) in per_shard.iter().enumerate() {
        let shard = i.to_string();
        let l = [("shard", shard.as_str())];
        for kind in Kind::ALL {
            f.counter(
                "corecached_shard_commands_total",
                "Store commands each shard ran, by kind.",
                &[("shard", &shard), ("command", kind.name())],
                s.latency.count(kind) as f64,
            );
        }
        let st = &s.store;
        f.counter(
            "corecached_shard_get_hits_total",
            "Gets that found their key, per shard.",
            &l,
            st.get_hits as f64,
        );
        f.counter(
            "corecached_shard_get_misses_total",
            "Gets that did not find their key, per shard.",
            &l,
            st.get_misses as f64,
        );
        f.gauge(
            "corecached_shard_items",
            "Items each shard holds.",
            &l,
            st.curr_items as f64,
        );
        f.gauge(
            "corecached_shard_bytes",
            "Bytes of items each shard holds.",
            &l,
            st.bytes as f64,
        );
        f.gauge(
            "corecached_shard_limit_bytes",
            "Each shard's share of the memory limit.",
            &l,
            st.limit_maxbytes as f64,
        );
        f.gauge(
            "corecached_shard_malloced_bytes",
            "Bytes of slab pages each shard allocated.",
            &l,
            st.total_malloced as f64,
        );
        f.counter(
            "corecached_shard_evictions_total",
            "Items each shard evicted.",
            &l,
            st.evictions as f64,
        );
    }
    for kind in Kind::ALL {
        f.histogram(
            "corecached_command_duration_seconds",
            "Execution time of store commands on their owner shard (one command in 16 timed).",
            &[("command", kind.name())],
            total.latency.histogram(kind),
        );
    }
}

/// The sampled hot keys, merged over the shards: estimated requests per key.
fn hot_keys(f: &mut Families, total: &Snapshot, every: u32) {
    let top = super::hotkeys::merge([&total.hot[..]], super::hotkeys::REPORTED);
    for k in &top {
        let key = String::from_utf8_lossy(&k.key);
        f.gauge(
            "corecached_hot_key_requests",
            "Estimated requests of the hottest keys (sampled count times the sampling interval, since start or stats reset).",
            &[("key", &key)],
            (k.count * u64::from(every)) as f64,
        );
    }
    f.gauge(
        "corecached_hot_key_sample_every",
        "One key command in this many is counted for hot keys (0: off).",
        &[],
        f64::from(every),
    );
}

/// The HTTP face's own figures.
fn http(f: &mut Families, total: &Snapshot, open: usize) {
    let c = &total.counters;
    for (class, v) in [
        ("2xx", c.http_2xx),
        ("4xx", c.http_4xx),
        ("5xx", c.http_5xx),
    ] {
        f.counter(
            "corecached_http_requests_total",
            "HTTP requests answered, by status class.",
            &[("code", class)],
            v as f64,
        );
    }
    f.counter(
        "corecached_http_read_bytes_total",
        "Bytes read from HTTP clients.",
        &[],
        c.http_bytes_read as f64,
    );
    f.counter(
        "corecached_http_written_bytes_total",
        "Bytes written to HTTP clients.",
        &[],
        c.http_bytes_written as f64,
    );
    f.gauge(
        "corecached_http_current_connections",
        "Open HTTP connections.",
        &[],
        open as f64,
    );
}

/// `stats replication` (with `--cluster`): per peer, and the totals.
fn replication(f: &mut Families, pairs: &[(String, String)]) {
    for (name, value) in pairs {
        if let Some((peer, field)) = name.strip_prefix("peer:").and_then(|r| r.rsplit_once(':')) {
            let l = [("peer", peer)];
            if field == "state" {
                f.gauge(
                    "corecached_replication_peer_state",
                    "The least advanced state of the streams to each peer (1 for the state named).",
                    &[("peer", peer), ("state", value)],
                    1.0,
                );
                continue;
            }
            let Some(v) = num(value) else { continue };
            match field {
                "lag_records" => f.gauge(
                    "corecached_replication_lag_records",
                    "Records sent to each peer and not yet acknowledged.",
                    &l,
                    v,
                ),
                "lag_seconds" => f.gauge(
                    "corecached_replication_lag_seconds",
                    "Age of the oldest record sent to each peer and not yet acknowledged.",
                    &l,
                    v,
                ),
                other => f.counter(
                    &format!("corecached_replication_{other}_total"),
                    &format!("Replication streams' {other}, per peer."),
                    &l,
                    v,
                ),
            }
            continue;
        }
        let Some(v) = num(value) else { continue };
        let Some(stat) = name.strip_prefix("repl_") else {
            continue;
        };
        match stat {
            "ready" | "replicas" | "backlog_bytes" | "tombstones" | "tombstone_bytes" => f.gauge(
                &format!("corecached_replication_{stat}"),
                &format!("The `stats replication` figure repl_{stat}."),
                &[],
                v,
            ),
            _ => f.counter(
                &format!("corecached_replication_{stat}_total"),
                &format!("The `stats replication` figure repl_{stat}."),
                &[],
                v,
            ),
        }
    }
}

/// The whole exposition, every shard asked for its figures.
pub async fn exposition(core: &Core) -> String {
    let n = core.shards;
    let mut per_shard: Vec<Snapshot> = (0..n).map(|_| Snapshot::default()).collect();
    per_shard[core.shard.id] = core.snapshot();
    let others = (0..n).filter(|&s| s != core.shard.id);
    for (o, reply) in others.zip(core.fan_out(|| Request::Stats).await) {
        if let Reply::Stats(s) = reply {
            per_shard[o] = *s;
        }
    }
    let mut total = Snapshot::default();
    for s in &per_shard {
        total.add(s);
    }
    let shared = &core.shared;
    let info = shared.server_info();
    let mut f = Families::default();
    general(&mut f, &stats::general(&info, &total));
    settings(&mut f, &stats::settings(&shared.settings()));
    items(&mut f, &stats::items(&total, &info));
    slabs(&mut f, &stats::slabs(&total));
    shards(&mut f, &per_shard, &total);
    hot_keys(&mut f, &total, core.shard.hotkeys_sample());
    http(&mut f, &total, super::http::open_connections(shared));
    if shared.repl.is_some() {
        replication(&mut f, &core.replication_report(&total));
    }
    let mut out = Vec::new();
    // Encoding into a Vec fails only for a family without metrics, which none is.
    if let Err(e) = prometheus::TextEncoder.encode(&f.list, &mut out) {
        log::warn!("metrics exposition: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: &Families) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder.encode(&f.list, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn stats_figures_take_the_exporters_names() {
        let pairs: Vec<(String, String)> = [
            ("version", "1.6.18"),
            ("uptime", "7"),
            ("rusage_user", "0.250000"),
            ("get_hits", "3"),
            ("get_misses", "1"),
            ("cmd_set", "10"),
            ("cas_hits", "2"),
            ("cas_misses", "1"),
            ("cas_badval", "1"),
            ("curr_items", "5"),
            ("cmd_get", "4"),
            ("threads", "2"),
            ("time_in_listen_disabled_us", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut f = Families::default();
        general(&mut f, &pairs);
        let t = text(&f);
        assert!(t.contains("memcached_up 1\n"), "{t}");
        assert!(
            t.contains("memcached_version{version=\"1.6.18\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("memcached_uptime_seconds 7\n"), "{t}");
        assert!(
            t.contains("memcached_process_user_cpu_seconds_total 0.25\n"),
            "{t}"
        );
        assert!(
            t.contains("memcached_commands_total{command=\"get\",status=\"hit\"} 3\n"),
            "{t}"
        );
        // cmd_set less the CAS stores.
        assert!(
            t.contains("memcached_commands_total{command=\"set\",status=\"hit\"} 6\n"),
            "{t}"
        );
        assert!(t.contains("memcached_current_items 5\n"), "{t}");
        assert!(t.contains("corecached_cmd_get_total 4\n"), "{t}");
        assert!(t.contains("corecached_threads 2\n"), "{t}");
        assert!(!t.contains("listen_disabled_us"), "{t}");
        assert!(
            t.contains("# TYPE memcached_commands_total counter\n"),
            "{t}"
        );
    }

    #[test]
    fn slabs_and_items_are_labelled_by_class() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut f = Families::default();
        items(
            &mut f,
            &pairs(&[("items:3:number", "9"), ("items:3:hits_to_cold", "4")]),
        );
        slabs(
            &mut f,
            &pairs(&[
                ("3:chunk_size", "152"),
                ("3:cmd_set", "5"),
                ("active_slabs", "1"),
            ]),
        );
        let t = text(&f);
        assert!(
            t.contains("memcached_slab_current_items{slab=\"3\"} 9\n"),
            "{t}"
        );
        assert!(
            t.contains("memcached_slab_lru_hits_total{lru=\"cold\",slab=\"3\"} 4\n")
                || t.contains("memcached_slab_lru_hits_total{slab=\"3\",lru=\"cold\"} 4\n"),
            "{t}"
        );
        assert!(
            t.contains("memcached_slab_chunk_size_bytes{slab=\"3\"} 152\n"),
            "{t}"
        );
    }

    #[test]
    fn peers_keep_their_host_and_port() {
        let pairs = vec![
            (
                "peer:127.0.0.1:11211:lag_records".to_string(),
                "4".to_string(),
            ),
            (
                "peer:127.0.0.1:11211:state".to_string(),
                "streaming".to_string(),
            ),
            ("repl_applied".to_string(), "8".to_string()),
        ];
        let mut f = Families::default();
        replication(&mut f, &pairs);
        let t = text(&f);
        assert!(
            t.contains("corecached_replication_lag_records{peer=\"127.0.0.1:11211\"} 4\n"),
            "{t}"
        );
        assert!(
            t.contains("corecached_replication_applied_total 8\n"),
            "{t}"
        );
    }

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2).unwrap();
        h.record(3_000).unwrap(); // 3 µs
        h.record(2_000_000).unwrap(); // 2 ms
        let mut f = Families::default();
        f.histogram("x_seconds", "x", &[], &h);
        let t = text(&f);
        assert!(t.contains("x_seconds_bucket{le=\"0.000001\"} 0\n"), "{t}");
        assert!(t.contains("x_seconds_bucket{le=\"0.000005\"} 1\n"), "{t}");
        assert!(t.contains("x_seconds_bucket{le=\"0.0025\"} 2\n"), "{t}");
        assert!(t.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{t}");
        assert!(t.contains("x_seconds_count 2\n"), "{t}");
    }
}
