//! Continuum build time for 100 servers and key lookups per second, per distribution.
//!
//! `cargo bench --bench ketama` (short measurement times; figures in perf/README.md).

use std::hint::black_box;
use std::time::Duration;

use corecached::ring::{Continuum, Distribution, Node};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn servers(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            host: format!("10.1.{}.{}", i / 250, i % 250 + 1),
            port: 11211,
            weight: 1 + (i % 3) as u32,
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let nodes = servers(100);
    let mut g = c.benchmark_group("continuum_build_100_servers");
    for d in Distribution::ALL {
        g.bench_function(d.name(), |b| {
            b.iter(|| Continuum::new(d, black_box(&nodes)))
        });
    }
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let nodes = servers(100);
    let keys: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("user:session:{i:08}").into_bytes())
        .collect();
    let mut g = c.benchmark_group("lookup_100_servers");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for d in Distribution::ALL {
        let ring = Continuum::new(d, &nodes);
        g.bench_function(d.name(), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for k in &keys {
                    acc = acc.wrapping_add(ring.server_for(black_box(k)).unwrap());
                }
                acc
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = build, lookup
}
criterion_main!(benches);
