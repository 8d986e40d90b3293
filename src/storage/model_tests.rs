//! The store against a simple model (a map and a clock) under random operation sequences, and the
//! fill test: ten times the memory limit in mixed sizes, then a shift to a new value size.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const MIB: usize = 1024 * 1024;
const T0: u64 = 1_700_000_000;

/// One model item; `evictions` is the store's eviction count when it was last written.
#[derive(Debug, Clone)]
struct MItem {
    value: Vec<u8>,
    flags: u32,
    /// Absolute Unix expiry; None = never.
    exp: Option<u64>,
    cas: u64,
    evictions: u64,
}

/// The model: what a cache with infinite memory would answer.
#[derive(Default)]
struct Model {
    items: HashMap<Vec<u8>, MItem>,
    now: u64,
    flush_at: Option<u64>,
}

impl Model {
    /// Absolute expiry of a wire exptime, written independently of `clock.rs`.
    fn expiry(&self, exptime: i64) -> Option<u64> {
        match exptime {
            0 => None,
            e if e < 0 => Some(self.now),
            e if e <= 2_592_000 => Some(self.now + e as u64),
            e => Some(e as u64),
        }
    }

    fn live(&mut self, key: &[u8]) -> Option<&mut MItem> {
        let now = self.now;
        if self
            .items
            .get(key)
            .is_some_and(|i| i.exp.is_some_and(|e| e <= now))
        {
            self.items.remove(key);
        }
        self.items.get_mut(key)
    }

    fn advance(&mut self, secs: u64) {
        self.now += secs;
        if self.flush_at.is_some_and(|d| self.now >= d) {
            self.items.clear();
            self.flush_at = None;
        }
    }

    fn flush(&mut self, delay: i64) {
        let deadline = if delay <= 0 { None } else { self.expiry(delay) };
        match deadline {
            Some(d) if d > self.now => self.flush_at = Some(d),
            _ => {
                self.items.clear();
                self.flush_at = None;
            }
        }
    }
}

fn parse_model_counter(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let t = s.trim_matches(|c: char| " \t\n\x0b\x0c\r".contains(c));
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

#[derive(Debug, Clone, Copy)]
enum CasPick {
    Zero,
    Current,
    Wrong,
}

#[derive(Debug, Clone)]
enum Op {
    Get(usize),
    Touch(usize, i64, bool),
    Store(StoreMode, usize, Vec<u8>, u32, i64, CasPick),
    /// With a touch (`arith_with`) or without (`arith`).
    Arith(
        ArithOp,
        usize,
        u64,
        Option<(u64, i64)>,
        CasPick,
        Option<i64>,
    ),
    Delete(usize, CasPick),
    /// Meta get: touch, vivify, recache threshold, no_update.
    Fetch(usize, Option<i64>, Option<i64>, Option<i64>, bool),
    /// Meta delete with invalidation: CAS to compare, new expiry.
    Invalidate(usize, CasPick, Option<i64>),
    Peek(usize),
    Flush(i64),
    Advance(u64),
    Reclaim(usize),
    Rebalance,
}

/// Keys of varied lengths, up to the 250-byte limit.
fn key_of(i: usize) -> Vec<u8> {
    let len = [1, 3, 8, 16, 40, 250][i % 6];
    let mut k = format!("k{i}-").into_bytes();
    k.resize(len.max(k.len()), b'x');
    k.truncate(250);
    k
}

const KEYS: usize = 24;

fn exptime() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => Just(0i64),
        3 => 1i64..20,
        1 => Just(-1i64),
        1 => (0u64..40).prop_map(|d| (T0 + d) as i64),
        1 => Just(2_592_001i64),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (0usize..100, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        3 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => Just(b"18446744073709551615".to_vec()),
        1 => Just(b" 7 ".to_vec()),
        2 => (100usize..20_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        2 => (100_000usize..450_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        1 => Just(vec![b'z'; MIB]),
    ]
}

fn cas_pick() -> impl Strategy<Value = CasPick> {
    prop_oneof![6 => Just(CasPick::Zero), 2 => Just(CasPick::Current), 1 => Just(CasPick::Wrong)]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let mode = prop_oneof![
        4 => Just(StoreMode::Set),
        1 => Just(StoreMode::Add),
        1 => Just(StoreMode::Replace),
        1 => Just(StoreMode::Append),
        1 => Just(StoreMode::Prepend),
    ];
    let arith_op = prop_oneof![Just(ArithOp::Incr), Just(ArithOp::Decr)];
    let delta = prop_oneof![0u64..10, Just(u64::MAX)];
    prop_oneof![
        10 => key.clone().prop_map(Op::Get),
        2 => (key.clone(), exptime(), any::<bool>()).prop_map(|(k, e, g)| Op::Touch(k, e, g)),
        14 => (mode, key.clone(), value(), any::<u32>(), exptime(), cas_pick())
            .prop_map(|(m, k, v, f, e, c)| Op::Store(m, k, v, f, e, c)),
        3 => (
            arith_op,
            key.clone(),
            delta,
            proptest::option::of((0u64..1000, exptime())),
            cas_pick(),
            proptest::option::weighted(0.3, exptime()),
        )
            .prop_map(|(o, k, d, m, c, t)| Op::Arith(o, k, d, m, c, t)),
        2 => (key.clone(), cas_pick()).prop_map(|(k, c)| Op::Delete(k, c)),
        4 => (
            key.clone(),
            proptest::option::weighted(0.3, exptime()),
            proptest::option::weighted(0.3, exptime()),
            proptest::option::weighted(0.2, 0i64..30),
            any::<bool>(),
        )
            .prop_map(|(k, t, v, r, n)| Op::Fetch(k, t, v, r, n)),
        1 => (key.clone(), cas_pick(), proptest::option::of(exptime()))
            .prop_map(|(k, c, e)| Op::Invalidate(k, c, e)),
        1 => key.prop_map(Op::Peek),
        1 => prop_oneof![Just(0i64), 1i64..5].prop_map(Op::Flush),
        3 => (0u64..8).prop_map(Op::Advance),
        1 => (1usize..5000).prop_map(Op::Reclaim),
        1 => Just(Op::Rebalance),
    ]
}

/// What an operation answered, in a form both sides can produce.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A read: value, flags, CAS.
    Item(Vec<u8>, u32, u64),
    /// A write's CAS (the model learns it from the store).
    Cas,
    /// An arithmetic result (CAS learnt from the store).
    Number(u64),
    /// Metadata without side effects: value length, CAS.
    Info(usize, u64),
    /// Done, nothing to report.
    Done,
    /// A typed failure.
    Failed(StoreError),
}

struct Harness {
    store: Store,
    model: Model,
    max_item: usize,
    last_cas: u64,
    shard: (u64, u64),
    /// Bytes of pages the slab may hold (the limit less the tombstones' share).
    page_cap: u64,
}

impl Harness {
    fn cas_for(&mut self, key: &[u8], pick: CasPick) -> u64 {
        let current = self.model.live(key).map(|i| i.cas);
        match pick {
            CasPick::Zero => 0,
            CasPick::Current => current.unwrap_or(12345 * self.shard.1 + self.shard.0),
            CasPick::Wrong => current.map_or(999, |c| c + self.shard.1),
        }
    }

    /// Runs an op on the store; returns its answer and the CAS it reported, if any.
    fn run_store(&mut self, op: &Op, cas: u64) -> (Answer, Option<u64>) {
        let s = &mut self.store;
        match op {
            Op::Get(k) => {
                let key = key_of(*k);
                match s.get(&key, key_hash(&key)) {
                    Ok(v) => (Answer::Item(v.value.to_vec(), v.flags, v.cas), None),
                    Err(e) => (Answer::Failed(e), None),
                }
            }
            Op::Touch(k, e, gat) => {
                let key = key_of(*k);
                let r = if *gat {
                    s.get_and_touch(&key, key_hash(&key), *e)
                } else {
                    s.touch(&key, key_hash(&key), *e)
                };
                match r {
                    Ok(v) => (Answer::Item(v.value.to_vec(), v.flags, v.cas), None),
                    Err(e) => (Answer::Failed(e), None),
                }
            }
            Op::Store(m, k, v, f, e, _) => {
                let key = key_of(*k);
                match s.store(*m, &key, key_hash(&key), v, *f, *e, cas) {
                    Ok(c) => (Answer::Cas, Some(c)),
                    Err(e) => (Answer::Failed(e), None),
                }
            }
            Op::Arith(o, k, d, miss, _, touch) => {
                let key = key_of(*k);
                let r = match touch {
                    None => s.arith(*o, &key, key_hash(&key), *d, *miss, cas),
                    Some(_) => {
                        let opts = ArithOptions {
                            on_miss: *miss,
                            cas,
                            touch: *touch,
                            new_cas: 0,
                        };
                        s.arith_with(*o, &key, key_hash(&key), *d, opts)
                            .map(|r| (r.value, r.cas))
                    }
                };
                match r {
                    Ok((n, c)) => (Answer::Number(n), Some(c)),
                    Err(e) => (Answer::Failed(e), None),
                }
            }
            Op::Fetch(k, touch, vivify, recache_below, no_update) => {
                let key = key_of(*k);
                let opts = FetchOptions {
                    touch: *touch,
                    vivify: *vivify,
                    recache_below: *recache_below,
                    new_cas: 0,
                    no_update: *no_update,
                };
                let had = s.probe(&key, key_hash(&key)).map(|p| p.liveness);
                match s.fetch(&key, key_hash(&key), opts) {
                    Ok(f) => {
                        let v = f.item;
                        // A placeholder created on a miss is a write with a new CAS.
                        let created = had != Some(Liveness::Live);
                        let answer = Answer::Item(v.value.to_vec(), v.flags, v.cas);
                        (answer, created.then_some(v.cas))
                    }
                    Err(e) => (Answer::Failed(e), None),
                }
            }
            Op::Invalidate(k, _, exptime) => {
                let key = key_of(*k);
                match s.invalidate(&key, key_hash(&key), cas, *exptime, 0) {
                    Ok(c) => (Answer::Cas, Some(c)),
                    Err(e) => (Answer::Failed(e), None),
                }
            }
            Op::Peek(k) => {
                let key = key_of(*k);
                match s.peek(&key, key_hash(&key)) {
                    Ok(i) => (Answer::Info(i.value_len, i.cas), None),
                    Err(e) => (Answer::Failed(e), None),
                }
            }
            Op::Delete(k, _) => {
                let key = key_of(*k);
                match s.delete(&key, key_hash(&key), cas) {
                    Ok(()) => (Answer::Done, None),
                    Err(e) => (Answer::Failed(e), None),
                }
            }
            Op::Flush(d) => {
                s.flush(*d);
                (Answer::Done, None)
            }
            Op::Advance(secs) => {
                s.set_time(s.now() + secs);
                (Answer::Done, None)
            }
            Op::Reclaim(b) => {
                s.reclaim(*b);
                (Answer::Done, None)
            }
            Op::Rebalance => {
                s.rebalance();
                (Answer::Done, None)
            }
        }
    }

    /// The model's answer and its new state for `key` (None = absent), given the item it holds.
    fn predict(
        &self,
        op: &Op,
        cas: u64,
        item: Option<MItem>,
        new_cas: Option<u64>,
    ) -> (Answer, Option<MItem>) {
        let m = &self.model;
        let ev = self.store.stats().evictions;
        let fresh = |value: Vec<u8>, flags: u32, exp: Option<u64>| MItem {
            value,
            flags,
            exp,
            cas: new_cas.unwrap_or(0),
            evictions: ev,
        };
        match op {
            Op::Get(_) => match item {
                Some(i) => (Answer::Item(i.value.clone(), i.flags, i.cas), Some(i)),
                None => (Answer::Failed(StoreError::NotFound), None),
            },
            Op::Touch(_, e, _) => match item {
                Some(mut i) => {
                    let answer = Answer::Item(i.value.clone(), i.flags, i.cas);
                    i.exp = m.expiry(*e);
                    (answer, Some(i))
                }
                None => (Answer::Failed(StoreError::NotFound), None),
            },
            Op::Store(mode, k, v, flags, e, _) => {
                let klen = key_of(*k).len();
                if item::item_size(klen, v.len()) > self.max_item {
                    let keep = if *mode == StoreMode::Set && cas == 0 {
                        None
                    } else {
                        item
                    };
                    return (Answer::Failed(StoreError::TooLarge), keep);
                }
                let fail = |e, keep| (Answer::Failed(e), keep);
                if cas != 0 {
                    match &item {
                        None => return fail(StoreError::NotFound, None),
                        Some(i) if i.cas != cas => return fail(StoreError::Exists, item),
                        Some(_) => {}
                    }
                } else {
                    match (mode, &item) {
                        (StoreMode::Add, Some(_)) => return fail(StoreError::Exists, item),
                        (StoreMode::Replace, None) => return fail(StoreError::NotFound, None),
                        (StoreMode::Append | StoreMode::Prepend, None) => {
                            return fail(StoreError::NotStored, None)
                        }
                        _ => {}
                    }
                }
                match (mode, item) {
                    (StoreMode::Append | StoreMode::Prepend, Some(i)) => {
                        let mut nv = i.value.clone();
                        if *mode == StoreMode::Append {
                            nv.extend_from_slice(v);
                        } else {
                            nv.splice(0..0, v.iter().copied());
                        }
                        if item::item_size(klen, nv.len()) > self.max_item {
                            return fail(StoreError::TooLarge, Some(i));
                        }
                        (Answer::Cas, Some(fresh(nv, i.flags, i.exp)))
                    }
                    _ => (Answer::Cas, Some(fresh(v.clone(), *flags, m.expiry(*e)))),
                }
            }
            Op::Arith(o, _, d, miss, _, touch) => match item {
                None => match miss {
                    None => (Answer::Failed(StoreError::NotFound), None),
                    Some((init, e)) => (
                        Answer::Number(*init),
                        Some(fresh(
                            init.to_string().into_bytes(),
                            0,
                            m.expiry(touch.unwrap_or(*e)),
                        )),
                    ),
                },
                Some(i) if cas != 0 && i.cas != cas => {
                    (Answer::Failed(StoreError::Exists), Some(i))
                }
                Some(mut i) => match parse_model_counter(&i.value) {
                    // The new expiry applies before the value is parsed.
                    None => {
                        if let Some(t) = touch {
                            i.exp = m.expiry(*t);
                        }
                        (Answer::Failed(StoreError::NonNumeric), Some(i))
                    }
                    Some(n) => {
                        let r = match o {
                            ArithOp::Incr => n.wrapping_add(*d),
                            ArithOp::Decr => n.saturating_sub(*d),
                        };
                        let v = r.to_string().into_bytes();
                        let exp = touch.map_or(i.exp, |t| m.expiry(t));
                        (Answer::Number(r), Some(fresh(v, i.flags, exp)))
                    }
                },
            },
            Op::Fetch(_, touch, vivify, ..) => match (item, vivify) {
                (Some(mut i), _) => {
                    let answer = Answer::Item(i.value.clone(), i.flags, i.cas);
                    if let Some(t) = touch {
                        i.exp = m.expiry(*t);
                    }
                    (answer, Some(i))
                }
                (None, None) => (Answer::Failed(StoreError::NotFound), None),
                (None, Some(v)) => {
                    let exp = m.expiry(touch.unwrap_or(*v));
                    let answer = Answer::Item(Vec::new(), 0, new_cas.unwrap_or(0));
                    (answer, Some(fresh(Vec::new(), 0, exp)))
                }
            },
            Op::Invalidate(_, _, exptime) => match item {
                None => (Answer::Failed(StoreError::NotFound), None),
                Some(i) if cas != 0 && i.cas != cas => {
                    (Answer::Failed(StoreError::Exists), Some(i))
                }
                // Still served, with a new CAS (the model does not track the stale mark).
                Some(mut i) => {
                    i.cas = new_cas.unwrap_or(0);
                    if let Some(e) = exptime {
                        i.exp = m.expiry(*e);
                    }
                    (Answer::Cas, Some(i))
                }
            },
            Op::Peek(_) => match item {
                Some(i) => (Answer::Info(i.value.len(), i.cas), Some(i)),
                None => (Answer::Failed(StoreError::NotFound), None),
            },
            Op::Delete(..) => match item {
                None => (Answer::Failed(StoreError::NotFound), None),
                Some(i) if cas != 0 && i.cas != cas => {
                    (Answer::Failed(StoreError::Exists), Some(i))
                }
                Some(_) => (Answer::Done, None),
            },
            _ => (Answer::Done, None),
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let key_index = match op {
            Op::Get(k) | Op::Touch(k, ..) | Op::Store(_, k, ..) | Op::Arith(_, k, ..) => Some(*k),
            Op::Delete(k, _) | Op::Fetch(k, ..) | Op::Invalidate(k, ..) | Op::Peek(k) => Some(*k),
            _ => None,
        };
        let pick = match op {
            Op::Store(.., c) | Op::Arith(_, _, _, _, c, _) | Op::Delete(_, c) => *c,
            Op::Invalidate(_, c, _) => *c,
            _ => CasPick::Zero,
        };
        let key = key_index.map(key_of);
        let cas = match &key {
            Some(k) => self.cas_for(k, pick),
            None => 0,
        };
        let before = self.store.stats();
        let item = key.as_ref().and_then(|k| self.model.live(k).cloned());
        let (answer, new_cas) = self.run_store(op, cas);
        let after = self.store.stats();
        if let Some(c) = new_cas {
            prop_assert!(
                c != 0 && c > self.last_cas,
                "CAS {c} not fresh after {}",
                self.last_cas
            );
            prop_assert_eq!(c % self.shard.1, self.shard.0);
            self.last_cas = c;
        }
        let (mut expect, mut next) = self.predict(op, cas, item.clone(), new_cas);
        if answer != expect {
            let oom_append = matches!(op, Op::Store(StoreMode::Append | StoreMode::Prepend, ..))
                && answer == Answer::Failed(StoreError::OutOfMemory)
                && after.total_malloced + MIB as u64 > self.page_cap;
            // Only an eviction since the item was written may explain a missing item: replay the
            // op on a model without it.
            let evicted = item.as_ref().is_some_and(|i| after.evictions > i.evictions);
            if oom_append && item.is_some() {
                // Memory full and the item to extend may not be evicted: it stays as it was.
                expect = answer.clone();
                next = item.clone();
            } else if evicted {
                (expect, next) = self.predict(op, cas, None, new_cas);
            }
        }
        prop_assert_eq!(&answer, &expect, "op {:?}", op);
        if let Some(k) = key {
            match next {
                Some(i) => {
                    self.model.items.insert(k, i);
                }
                None => {
                    self.model.items.remove(&k);
                }
            }
        }
        match op {
            Op::Flush(d) => self.model.flush(*d),
            Op::Advance(secs) => self.model.advance(*secs),
            _ => {}
        }
        // Memory: never above the limit; evictions only once every page is in use.
        prop_assert!(after.total_malloced <= self.page_cap);
        if after.evictions > before.evictions {
            prop_assert!(after.total_malloced + MIB as u64 > self.page_cap);
        }
        Ok(())
    }
}

/// One random operation sequence against the model, under `eviction`.
fn run_model(
    eviction: EvictionPolicy,
    ops: &[Op],
    pages: usize,
    shard: (u32, u32),
    growth: f64,
    versions: VersionClock,
) -> Result<(), TestCaseError> {
    let config = StoreConfig {
        memory_limit: pages * MIB,
        growth_factor: growth,
        eviction,
        shard_id: shard.0,
        shard_count: shard.1,
        versions,
        ..StoreConfig::default()
    };
    // Hybrid versions set the tombstones' share aside.
    let page_cap = match versions {
        VersionClock::Counter => (pages * MIB) as u64,
        VersionClock::Hybrid => {
            let limit = pages * MIB;
            (limit - limit / 64) as u64
        }
    };
    let mut store = Store::new(config).unwrap();
    store.set_time(T0);
    let max_item = store.max_item_size();
    let mut h = Harness {
        store,
        model: Model {
            now: T0,
            ..Model::default()
        },
        max_item,
        last_cas: 0,
        shard: (u64::from(shard.0), u64::from(shard.1)),
        page_cap,
    };
    for (n, op) in ops.iter().enumerate() {
        h.step(op)?;
        if n % 50 == 49 {
            h.store.verify();
        }
    }
    h.store.verify();
    // Every item the model still holds is either in the store or was evicted.
    let evictions = h.store.stats().evictions;
    for k in 0..KEYS {
        let key = key_of(k);
        let want = h.model.live(&key).cloned();
        let got = h
            .store
            .get(&key, key_hash(&key))
            .ok()
            .map(|v| (v.value.to_vec(), v.flags, v.cas));
        match (want, got) {
            (Some(i), Some(g)) => prop_assert_eq!((i.value, i.flags, i.cas), g),
            (Some(i), None) => prop_assert!(evictions > i.evictions, "lost {:?}", key),
            (None, Some(_)) => prop_assert!(false, "store holds {:?} the model lacks", key),
            (None, None) => {}
        }
    }
    Ok(())
}

/// One proptest per policy, so that every run covers every policy (10 cases each).
macro_rules! model_test {
    ($($name:ident => $policy:expr),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $name(
                    ops in proptest::collection::vec(op(), 1..250),
                    pages in 2usize..4,
                    shard in (1u32..5).prop_flat_map(|n| (0..n, Just(n))),
                    growth in prop_oneof![Just(1.25f64), Just(2.0f64)],
                    versions in prop_oneof![Just(VersionClock::Counter), Just(VersionClock::Hybrid)],
                ) {
                    run_model($policy, &ops, pages, shard, growth, versions)?;
                }
            )*
        }
    };
}

model_test! {
    store_agrees_with_the_model_under_lru => EvictionPolicy::Lru,
    store_agrees_with_the_model_under_fifo => EvictionPolicy::Fifo,
    store_agrees_with_the_model_under_lfu => EvictionPolicy::Lfu,
    store_agrees_with_the_model_under_random => EvictionPolicy::Random,
    store_agrees_with_the_model_under_s3fifo => EvictionPolicy::S3Fifo,
}

/// A deterministic size sequence: mostly small, some medium, a few large values.
fn mixed_size(i: u64) -> usize {
    let r = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize;
    match r % 10 {
        0..=5 => 10 + r % 300,
        6..=8 => 300 + r % 5000,
        _ => 5000 + r % 25_000,
    }
}

#[test]
fn fill_ten_times_the_limit_then_shift_value_size() {
    let limit = 64 * MIB;
    let mut s = Store::new(StoreConfig {
        memory_limit: limit,
        ..StoreConfig::default()
    })
    .unwrap();
    s.set_time(T0);
    let mut written = 0usize;
    let mut i = 0u64;
    let source: Vec<u8> = (0..64 * 1024u32).map(|b| (b % 251) as u8).collect();
    while written < 10 * limit {
        let key = format!("mixed:{i}");
        let buf = &source[(i % 1000) as usize..][..mixed_size(i)];
        s.store(
            StoreMode::Set,
            key.as_bytes(),
            key_hash(key.as_bytes()),
            buf,
            0,
            0,
            0,
        )
        .unwrap();
        written += buf.len();
        // Keeps serving: what was just written reads back.
        assert_eq!(
            s.get(key.as_bytes(), key_hash(key.as_bytes()))
                .unwrap()
                .value,
            buf
        );
        assert!(s.stats().total_malloced <= limit as u64);
        if i.is_multiple_of(1000) {
            s.rebalance();
        }
        i += 1;
    }
    let st = s.stats();
    // Pages move, but rarely: a steady mix must not make them flap between classes.
    assert!(
        st.slabs_moved * 50 < i,
        "{} page moves for {i} writes",
        st.slabs_moved
    );
    assert_eq!(st.total_malloced, limit as u64);
    assert!(st.evictions > 0);
    s.verify();

    // Shift: 60 KB values, a class no mixed value used.
    let size = 60_000;
    let class = s
        .slab_stats()
        .into_iter()
        .position(|c| c.chunk_size as usize >= size + 64)
        .unwrap();
    assert_eq!(
        s.slab_stats()[class].total_pages,
        0,
        "class unused before the shift"
    );
    let value = vec![0xabu8; size];
    let n = 4 * limit / size;
    for j in 0..n {
        let key = format!("shifted:{j}");
        s.store(
            StoreMode::Set,
            key.as_bytes(),
            key_hash(key.as_bytes()),
            &value,
            0,
            0,
            0,
        )
        .unwrap();
        assert!(s.stats().total_malloced <= limit as u64);
        if j.is_multiple_of(50) {
            s.rebalance();
        }
    }
    let pages = s.slab_stats()[class].total_pages as usize;
    let total = limit / s.page_size();
    assert!(
        pages * 2 >= total,
        "new size got only {pages} of {total} pages"
    );
    // The most recent shifted items, a page's worth per page owned, all read back.
    let per_page = s.slab_stats()[class].chunks_per_page as usize;
    let recent = (pages - 1) * per_page;
    for j in n - recent..n {
        let key = format!("shifted:{j}");
        assert!(
            s.get(key.as_bytes(), key_hash(key.as_bytes())).is_ok(),
            "lost {key}"
        );
    }
    assert!(s.stats().slabs_moved as usize >= pages);
    s.verify();
}
