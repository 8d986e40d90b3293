//! Store micro-benchmarks on one core: get hit (100,000 items, and 1,000 hot items) / miss, set
//! overwrite / new (evicting once the 256 MiB limit is full), mixed 90/10 get/set.
//! Every operation includes the key hash, as a request pays it once. Also prints how many items
//! of 100-byte values with 16-byte keys one MiB of the memory limit holds.
//!
//! Run: `cargo bench --bench store`

use std::hint::black_box;
use std::time::Duration;

use corecached::storage::{key_hash, Store, StoreConfig, StoreMode};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const MIB: usize = 1024 * 1024;
/// Items preloaded for the hit benchmarks (about 15 MiB of items, well past the CPU caches).
const PRELOAD: usize = 100_000;
const VALUE: [u8; 100] = [b'v'; 100];

/// A 16-byte key for `n` with a one-letter prefix.
fn key(prefix: u8, n: u64) -> [u8; 16] {
    let mut k = [b'0'; 16];
    k[0] = prefix;
    let mut n = n;
    for slot in k[1..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// A store holding `PRELOAD` items `k…` with 100-byte values.
fn loaded_store() -> Store {
    let mut s = Store::new(StoreConfig {
        memory_limit: 256 * MIB,
        ..StoreConfig::default()
    })
    .unwrap();
    for n in 0..PRELOAD as u64 {
        let k = key(b'k', n);
        s.store(StoreMode::Set, &k, key_hash(&k), &VALUE, 0, 0, 0)
            .unwrap();
    }
    s
}

/// Visits 0..PRELOAD in a scattered order (a stride coprime with PRELOAD).
struct Scatter(u64);

impl Scatter {
    fn next(&mut self) -> u64 {
        self.0 = (self.0 + 7_919) % PRELOAD as u64;
        self.0
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));

    let mut s = loaded_store();
    let mut at = Scatter(0);
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            let k = key(b'k', at.next());
            black_box(s.get(&k, key_hash(&k)).unwrap().value.len())
        })
    });
    // The same lookups over the first 1,000 items only: in-cache cost, no memory latency.
    let mut small = 0u64;
    g.bench_function("get_hit_cached", |b| {
        b.iter(|| {
            small = (small + 7) % 1_000;
            let k = key(b'k', small);
            black_box(s.get(&k, key_hash(&k)).unwrap().value.len())
        })
    });
    g.bench_function("get_miss", |b| {
        b.iter(|| {
            let k = key(b'm', at.next());
            black_box(s.get(&k, key_hash(&k)).is_err())
        })
    });
    g.bench_function("set_overwrite", |b| {
        b.iter(|| {
            let k = key(b'k', at.next());
            black_box(
                s.store(StoreMode::Set, &k, key_hash(&k), &VALUE, 0, 0, 0)
                    .unwrap(),
            )
        })
    });
    let mut fresh = 0u64;
    g.bench_function("set_new", |b| {
        b.iter(|| {
            fresh += 1;
            let k = key(b'n', fresh);
            black_box(
                s.store(StoreMode::Set, &k, key_hash(&k), &VALUE, 0, 0, 0)
                    .unwrap(),
            )
        })
    });
    let mut s = loaded_store();
    let mut i = 0u32;
    g.bench_function("mixed_90_get_10_set", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let k = key(b'k', at.next());
            let h = key_hash(&k);
            if i.is_multiple_of(10) {
                black_box(s.store(StoreMode::Set, &k, h, &VALUE, 0, 0, 0).unwrap());
            } else {
                black_box(s.get(&k, h).unwrap().value.len());
            }
        })
    });
    g.finish();
    items_per_mib();
}

/// Fills a 64 MiB store with 16-byte keys and 100-byte values until it evicts; prints items/MiB.
fn items_per_mib() {
    let limit = 64 * MIB;
    let mut s = Store::new(StoreConfig {
        memory_limit: limit,
        ..StoreConfig::default()
    })
    .unwrap();
    let mut n = 0u64;
    while s.stats().evictions == 0 {
        let k = key(b'f', n);
        s.store(StoreMode::Set, &k, key_hash(&k), &VALUE, 0, 0, 0)
            .unwrap();
        n += 1;
    }
    let st = s.stats();
    let per_mib = st.curr_items as f64 / (limit / MIB) as f64;
    let class = s
        .slab_stats()
        .into_iter()
        .find(|c| c.used_chunks > 0)
        .unwrap();
    println!(
        "items per MiB (16-byte keys, 100-byte values): {per_mib:.0} \
         (item {} B in {} B chunks; index {:.1} B/item outside the limit)",
        Store::ITEM_HEADER_SIZE + 16 + 100,
        class.chunk_size,
        st.hash_bytes as f64 / st.curr_items as f64
    );
}

criterion_group! {
    name = store;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = benches
}
criterion_main!(store);
