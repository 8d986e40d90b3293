//! Binary codec micro-benchmarks: a pipelined batch decoded and answered as the connection does
//! it (decode every request in the read buffer, encode each reply into one output buffer).
//!
//! Run: `cargo bench --bench codec`. Figures and the machine are in perf/README.md ("Codec").

use std::hint::black_box;
use std::time::Duration;

use corecached::protocol::binary::{self, encode_request, encode_response, ReplyCtx, Variant};
use corecached::protocol::{Command, Decode, Limits, Outcome, StoreMode};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 100;
const VALUE: [u8; 32] = [b'v'; 32];

/// 100 GetKQ for distinct keys, then the Noop that ends the multi-get.
fn getkq_batch() -> Vec<u8> {
    let mut wire = Vec::new();
    let quiet_key = Variant {
        quiet: true,
        echo_key: true,
    };
    for i in 0..BATCH {
        let key = format!("user:{i:08}");
        let get = Command::Get {
            key: key.as_bytes(),
            touch: None,
            meta: None,
        };
        encode_request(&mut wire, &get, quiet_key, i as u32).unwrap();
    }
    encode_request(&mut wire, &Command::Noop, Variant::default(), 0).unwrap();
    wire
}

/// 100 SetQ with 32-byte values.
fn setq_batch() -> Vec<u8> {
    let mut wire = Vec::new();
    let quiet = Variant {
        quiet: true,
        echo_key: false,
    };
    for i in 0..BATCH {
        let key = format!("user:{i:08}");
        let set = Command::Store {
            mode: StoreMode::Set,
            key: key.as_bytes(),
            value: &VALUE,
            flags: 0,
            exptime: 0,
            cas: 0,
            meta: None,
        };
        encode_request(&mut wire, &set, quiet, i as u32).unwrap();
    }
    wire
}

/// Decodes every request of `wire`, answering each with `answer` when `out` is given.
fn serve(
    wire: &[u8],
    limits: &Limits,
    out: Option<&mut Vec<u8>>,
    answer: impl Fn(&Command<&[u8]>) -> Outcome<&'static [u8]>,
) -> usize {
    let mut rest = wire;
    let mut count = 0;
    let mut sink = out;
    while let Decode::Request {
        command,
        ctx,
        consumed,
    } = binary::decode(rest, limits)
    {
        if let Some(out) = sink.as_deref_mut() {
            reply(out, &ctx, &command, answer(&command));
        }
        count += 1;
        rest = &rest[consumed..];
    }
    count
}

fn reply(out: &mut Vec<u8>, ctx: &ReplyCtx, command: &Command<&[u8]>, outcome: Outcome<&[u8]>) {
    let key = command.key().copied().unwrap_or_default();
    encode_response(out, ctx, key, &outcome);
}

fn hit(command: &Command<&[u8]>) -> Outcome<&'static [u8]> {
    match command {
        Command::Get { .. } => Outcome::Value {
            flags: 0,
            cas: 42,
            value: &VALUE,
        },
        _ => Outcome::Done,
    }
}

fn stored(_: &Command<&[u8]>) -> Outcome<&'static [u8]> {
    Outcome::Stored { cas: 42 }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("binary");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);

    let gets = getkq_batch();
    let mut out = Vec::with_capacity(64 * 1024);
    group.throughput(Throughput::Elements(BATCH as u64 + 1));
    group.bench_function("100_getkq_noop/decode", |b| {
        b.iter(|| serve(black_box(&gets), &limits, None, hit))
    });
    group.bench_function("100_getkq_noop/decode+encode_hits", |b| {
        b.iter(|| {
            out.clear();
            serve(black_box(&gets), &limits, Some(&mut out), hit);
            black_box(out.len())
        })
    });

    let sets = setq_batch();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("100_setq_32b/decode", |b| {
        b.iter(|| serve(black_box(&sets), &limits, None, stored))
    });
    group.bench_function("100_setq_32b/decode+encode", |b| {
        b.iter(|| {
            out.clear();
            serve(black_box(&sets), &limits, Some(&mut out), stored);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
