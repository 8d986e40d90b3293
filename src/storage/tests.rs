//! Store-level unit tests: one per rule, edge cases named after what they guard.

use super::*;

const MIB: usize = 1024 * 1024;
const T0: u64 = 1_700_000_000;

fn cfg(limit: usize) -> StoreConfig {
    StoreConfig {
        memory_limit: limit,
        ..StoreConfig::default()
    }
}

fn store_with(config: StoreConfig) -> Store {
    let mut s = Store::new(config).unwrap();
    s.set_time(T0);
    s
}

fn small() -> Store {
    store_with(cfg(4 * MIB))
}

fn set(s: &mut Store, key: &[u8], value: &[u8]) -> u64 {
    s.store(StoreMode::Set, key, key_hash(key), value, 0, 0, 0)
        .unwrap()
}

fn set_ttl(s: &mut Store, key: &[u8], value: &[u8], exptime: i64) -> u64 {
    s.store(StoreMode::Set, key, key_hash(key), value, 0, exptime, 0)
        .unwrap()
}

fn put(s: &mut Store, mode: StoreMode, key: &[u8], value: &[u8], cas: u64) -> StoreResult<u64> {
    s.store(mode, key, key_hash(key), value, 0, 0, cas)
}

fn get(s: &mut Store, key: &[u8]) -> Option<Vec<u8>> {
    s.get(key, key_hash(key)).ok().map(|v| v.value.to_vec())
}

fn gets(s: &mut Store, key: &[u8]) -> Option<(Vec<u8>, u32, u64)> {
    s.get(key, key_hash(key))
        .ok()
        .map(|v| (v.value.to_vec(), v.flags, v.cas))
}

fn arith(s: &mut Store, op: ArithOp, key: &[u8], delta: u64) -> StoreResult<u64> {
    s.arith(op, key, key_hash(key), delta, None, 0).map(|r| r.0)
}

fn class_of(s: &mut Store, key: &[u8]) -> u32 {
    s.peek(key, key_hash(key)).unwrap().class
}

// ---- configuration ----

#[test]
fn memory_limit_below_one_page_is_a_config_error() {
    assert!(matches!(
        Store::new(cfg(MIB - 1)),
        Err(ConfigError::Invalid(_))
    ));
    assert!(matches!(Store::new(cfg(0)), Err(ConfigError::Invalid(_))));
    assert!(Store::new(cfg(MIB)).is_ok());
    // A raised item size raises the page size, and the limit must hold one such page.
    let big = StoreConfig {
        memory_limit: 3 * MIB,
        max_item_size: 4 * MIB,
        ..StoreConfig::default()
    };
    assert!(Store::new(big).is_err());
}

#[test]
fn inconsistent_settings_are_config_errors() {
    let bad = [
        StoreConfig {
            growth_factor: 1.0,
            ..cfg(MIB)
        },
        StoreConfig {
            growth_factor: f64::INFINITY,
            ..cfg(MIB)
        },
        StoreConfig {
            shard_count: 0,
            ..cfg(MIB)
        },
        StoreConfig {
            shard_id: 4,
            shard_count: 4,
            ..cfg(MIB)
        },
        StoreConfig {
            max_item_size: 100,
            ..cfg(MIB)
        },
        StoreConfig {
            max_item_size: (1 << 30) + 1,
            ..cfg(usize::MAX)
        },
        cfg(usize::MAX),
    ];
    for c in bad {
        let e = Store::new(c.clone())
            .err()
            .unwrap_or_else(|| panic!("accepted {c:?}"));
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn the_largest_class_follows_the_max_item_size() {
    let s = store_with(StoreConfig {
        memory_limit: 8 * MIB,
        max_item_size: 2 * MIB,
        ..StoreConfig::default()
    });
    assert_eq!(s.page_size(), 64 * 1024, "small classes keep small pages");
    assert_eq!(s.max_item_size(), 2 * MIB);
    assert_eq!(s.slab_stats().last().unwrap().chunk_size as usize, 2 * MIB);
    let small = store_with(StoreConfig {
        max_item_size: 4096,
        ..cfg(MIB)
    });
    assert_eq!(small.max_item_size(), 4096);
    assert_eq!(small.slab_stats().last().unwrap().chunk_size, 4096);
}

// ---- keys and sizes ----

#[test]
fn zero_length_key_is_bad_for_every_operation() {
    let mut s = small();
    let h = key_hash(b"");
    assert_eq!(s.get(b"", h).err(), Some(StoreError::BadKey));
    assert_eq!(s.touch(b"", h, 0).err(), Some(StoreError::BadKey));
    assert_eq!(s.get_and_touch(b"", h, 0).err(), Some(StoreError::BadKey));
    assert_eq!(
        put(&mut s, StoreMode::Set, b"", b"v", 0),
        Err(StoreError::BadKey)
    );
    assert_eq!(
        s.arith(ArithOp::Incr, b"", h, 1, Some((0, 0)), 0),
        Err(StoreError::BadKey)
    );
    assert_eq!(s.delete(b"", h, 0), Err(StoreError::BadKey));
    assert_eq!(s.peek(b"", h).err(), Some(StoreError::BadKey));
}

#[test]
fn key_of_250_bytes_works_and_251_is_bad() {
    let mut s = small();
    let k250 = vec![b'k'; 250];
    set(&mut s, &k250, b"v");
    assert_eq!(get(&mut s, &k250), Some(b"v".to_vec()));
    let k251 = vec![b'k'; 251];
    assert_eq!(
        put(&mut s, StoreMode::Set, &k251, b"v", 0),
        Err(StoreError::BadKey)
    );
    assert_eq!(
        s.get(&k251, key_hash(&k251)).err(),
        Some(StoreError::BadKey)
    );
    assert_eq!(s.delete(&k251, key_hash(&k251), 0), Err(StoreError::BadKey));
    s.verify();
}

#[test]
fn value_exactly_at_a_class_boundary_stays_in_that_class() {
    let mut s = small();
    // 32-byte header + 4-byte key + 28-byte value = 64 = smallest chunk.
    set(&mut s, b"edge", &[b'x'; 28]);
    assert_eq!(class_of(&mut s, b"edge"), 1);
    set(&mut s, b"over", &[b'x'; 29]);
    assert_eq!(class_of(&mut s, b"over"), 2);
    let stats = s.slab_stats();
    assert_eq!(stats[0].chunk_size, 64);
    assert_eq!(stats[0].mem_requested, 64);
    assert_eq!(stats[1].mem_requested, 65);
    assert_eq!(get(&mut s, b"edge"), Some(vec![b'x'; 28]));
    s.verify();
}

#[test]
fn item_of_exactly_the_max_size_is_stored_and_one_more_byte_is_too_large() {
    let mut s = small();
    let max_value = s.max_item_size() - Store::ITEM_HEADER_SIZE - 1;
    let v = vec![7u8; max_value];
    set(&mut s, b"k", &v);
    assert_eq!(get(&mut s, b"k"), Some(v));
    assert_eq!(
        s.peek(b"k", key_hash(b"k")).unwrap().size,
        s.max_item_size()
    );
    let too = vec![7u8; max_value + 1];
    assert_eq!(
        put(&mut s, StoreMode::Set, b"k", &too, 0),
        Err(StoreError::TooLarge)
    );
    assert_eq!(s.stats().store_too_large, 1);
    s.verify();
}

#[test]
fn max_size_item_with_a_raised_limit() {
    let mut s = store_with(StoreConfig {
        memory_limit: 4 * MIB,
        max_item_size: 2 * MIB + 8,
        ..StoreConfig::default()
    });
    let v = vec![1u8; 2 * MIB + 8 - 33];
    set(&mut s, b"k", &v);
    assert_eq!(get(&mut s, b"k").map(|v| v.len()), Some(v.len()));
    let too = vec![1u8; 2 * MIB + 8 - 33];
    assert_eq!(
        put(&mut s, StoreMode::Set, b"k2", &too, 0),
        Err(StoreError::TooLarge)
    );
}

#[test]
fn failed_set_deletes_the_old_value() {
    let mut s = small();
    set(&mut s, b"k", b"old");
    let too = vec![0u8; s.max_item_size()];
    assert_eq!(
        put(&mut s, StoreMode::Set, b"k", &too, 0),
        Err(StoreError::TooLarge)
    );
    assert_eq!(get(&mut s, b"k"), None);
    // Other modes keep the old value.
    set(&mut s, b"k", b"old");
    assert_eq!(
        put(&mut s, StoreMode::Replace, b"k", &too, 0),
        Err(StoreError::TooLarge)
    );
    assert_eq!(get(&mut s, b"k"), Some(b"old".to_vec()));
}

#[test]
fn cas_mode_compares_even_zero_and_never_creates() {
    let mut s = small();
    assert_eq!(
        put(&mut s, StoreMode::Cas, b"k", b"new", 0),
        Err(StoreError::NotFound)
    );
    assert_eq!(
        get(&mut s, b"k"),
        None,
        "a compare must not create the item"
    );
    let cas = set(&mut s, b"k", b"old");
    assert_eq!(
        put(&mut s, StoreMode::Cas, b"k", b"new", 0),
        Err(StoreError::Exists)
    );
    assert_eq!(
        put(&mut s, StoreMode::Cas, b"k", b"new", cas + 1),
        Err(StoreError::Exists)
    );
    assert_eq!(get(&mut s, b"k"), Some(b"old".to_vec()));
    assert!(put(&mut s, StoreMode::Cas, b"k", b"new", cas).is_ok());
    assert_eq!(get(&mut s, b"k"), Some(b"new".to_vec()));
    // Set with 0 stays the unconditional store.
    assert!(put(&mut s, StoreMode::Set, b"k", b"any", 0).is_ok());
}

#[test]
fn empty_value_is_stored() {
    let mut s = small();
    set(&mut s, b"k", b"");
    assert_eq!(get(&mut s, b"k"), Some(Vec::new()));
}

// ---- store modes and CAS ----

#[test]
fn set_get_overwrite_and_flags() {
    let mut s = small();
    let c1 = s
        .store(StoreMode::Set, b"k", key_hash(b"k"), b"one", 42, 0, 0)
        .unwrap();
    assert_eq!(gets(&mut s, b"k"), Some((b"one".to_vec(), 42, c1)));
    let c2 = set(
        &mut s,
        b"k",
        b"two, longer than one chunk of the first class by a fair bit",
    );
    assert_ne!(c1, c2);
    assert_eq!(gets(&mut s, b"k").unwrap().2, c2);
    assert_eq!(gets(&mut s, b"k").unwrap().1, 0);
    let st = s.stats();
    assert_eq!((st.curr_items, st.total_items), (1, 2));
    s.verify();
}

#[test]
fn every_mutation_gets_a_new_nonzero_cas() {
    let mut s = small();
    let mut seen = std::collections::HashSet::new();
    seen.insert(set(&mut s, b"a", b"1"));
    seen.insert(set(&mut s, b"a", b"2"));
    seen.insert(put(&mut s, StoreMode::Append, b"a", b"3", 0).unwrap());
    seen.insert(put(&mut s, StoreMode::Prepend, b"a", b"4", 0).unwrap());
    seen.insert(
        s.arith(ArithOp::Incr, b"a", key_hash(b"a"), 1, None, 0)
            .unwrap()
            .1,
    );
    seen.insert(
        s.arith(ArithOp::Decr, b"a", key_hash(b"a"), 1, None, 0)
            .unwrap()
            .1,
    );
    seen.insert(
        s.arith(ArithOp::Incr, b"n", key_hash(b"n"), 1, Some((5, 0)), 0)
            .unwrap()
            .1,
    );
    assert_eq!(seen.len(), 7);
    assert!(!seen.contains(&0));
}

#[test]
fn cas_is_unique_across_shards() {
    let mut a = store_with(StoreConfig {
        shard_id: 0,
        shard_count: 3,
        ..cfg(MIB)
    });
    let mut b = store_with(StoreConfig {
        shard_id: 2,
        shard_count: 3,
        ..cfg(MIB)
    });
    for i in 0..10u8 {
        let ca = set(&mut a, &[b'a', i], b"v");
        let cb = set(&mut b, &[b'b', i], b"v");
        assert_eq!(ca % 3, 0);
        assert_eq!(cb % 3, 2);
        assert_ne!(ca, 0);
        assert_eq!(gets(&mut b, &[b'b', i]).unwrap().2, cb);
    }
}

#[test]
fn cas_store_matches_mismatches_and_misses() {
    let mut s = small();
    let c = set(&mut s, b"k", b"v1");
    assert_eq!(
        put(&mut s, StoreMode::Set, b"k", b"x", c + 1),
        Err(StoreError::Exists)
    );
    assert_eq!(
        put(&mut s, StoreMode::Set, b"nope", b"x", c),
        Err(StoreError::NotFound)
    );
    let c2 = put(&mut s, StoreMode::Set, b"k", b"v2", c).unwrap();
    assert_eq!(gets(&mut s, b"k").unwrap(), (b"v2".to_vec(), 0, c2));
    // The old CAS no longer matches.
    assert_eq!(
        put(&mut s, StoreMode::Set, b"k", b"v3", c),
        Err(StoreError::Exists)
    );
    // Add and replace with a matching CAS store (memcached turns any mode into a CAS store).
    let c3 = put(&mut s, StoreMode::Add, b"k", b"v4", c2).unwrap();
    let c4 = put(&mut s, StoreMode::Replace, b"k", b"v5", c3).unwrap();
    assert_eq!(
        put(&mut s, StoreMode::Append, b"k", b"!", c4 + 1),
        Err(StoreError::Exists)
    );
    put(&mut s, StoreMode::Append, b"k", b"!", c4).unwrap();
    assert_eq!(get(&mut s, b"k"), Some(b"v5!".to_vec()));
    let st = s.stats();
    assert_eq!((st.cas_hits, st.cas_badval, st.cas_misses), (4, 3, 1));
}

#[test]
fn add_on_existing_is_exists_and_bumps_it() {
    let mut s = store_with(cfg(MIB));
    set(&mut s, b"first", b"1");
    set(&mut s, b"second", b"2");
    assert_eq!(
        put(&mut s, StoreMode::Add, b"first", b"x", 0),
        Err(StoreError::Exists)
    );
    assert_eq!(get(&mut s, b"first"), Some(b"1".to_vec()));
    assert!(put(&mut s, StoreMode::Add, b"third", b"3", 0).is_ok());
    // Fill the class (one page: 16384 chunks of 64 bytes) until "second" is evicted.
    let mut i = 0u32;
    while get_quiet(&mut s, b"second") {
        set(&mut s, format!("f{i}").as_bytes(), b"x");
        i += 1;
        assert!(i < 20_000);
    }
    assert!(
        s.peek(b"first", key_hash(b"first")).is_ok(),
        "the bumped item outlived its neighbour"
    );
}

/// Presence without bumping.
fn get_quiet(s: &mut Store, key: &[u8]) -> bool {
    s.peek(key, key_hash(key)).is_ok()
}

#[test]
fn replace_needs_an_item_and_append_prepend_need_one_too() {
    let mut s = small();
    assert_eq!(
        put(&mut s, StoreMode::Replace, b"k", b"v", 0),
        Err(StoreError::NotFound)
    );
    assert_eq!(
        put(&mut s, StoreMode::Append, b"k", b"v", 0),
        Err(StoreError::NotStored)
    );
    assert_eq!(
        put(&mut s, StoreMode::Prepend, b"k", b"v", 0),
        Err(StoreError::NotStored)
    );
    assert_eq!(get(&mut s, b"k"), None);
    set(&mut s, b"k", b"v");
    put(&mut s, StoreMode::Replace, b"k", b"w", 0).unwrap();
    assert_eq!(get(&mut s, b"k"), Some(b"w".to_vec()));
}

#[test]
fn append_and_prepend_keep_flags_and_expiry() {
    let mut s = small();
    let c0 = s
        .store(StoreMode::Set, b"k", key_hash(b"k"), b"mid", 7, 100, 0)
        .unwrap();
    let c1 = s
        .store(StoreMode::Append, b"k", key_hash(b"k"), b">>", 99, 5, 0)
        .unwrap();
    let c2 = s
        .store(StoreMode::Prepend, b"k", key_hash(b"k"), b"<<", 99, 5, 0)
        .unwrap();
    assert!(c0 != c1 && c1 != c2);
    assert_eq!(gets(&mut s, b"k").unwrap(), (b"<<mid>>".to_vec(), 7, c2));
    assert_eq!(s.peek(b"k", key_hash(b"k")).unwrap().ttl, Some(100));
    s.set_time(T0 + 100);
    assert_eq!(get(&mut s, b"k"), None);
}

#[test]
fn append_crossing_a_class_boundary_moves_the_item() {
    let mut s = small();
    set(&mut s, b"k", &[b'a'; 20]);
    assert_eq!(class_of(&mut s, b"k"), 1);
    put(&mut s, StoreMode::Append, b"k", &[b'b'; 100], 0).unwrap();
    assert!(class_of(&mut s, b"k") > 1);
    put(&mut s, StoreMode::Prepend, b"k", &[b'c'; 1000], 0).unwrap();
    let mut want = vec![b'c'; 1000];
    want.extend_from_slice(&[b'a'; 20]);
    want.extend_from_slice(&[b'b'; 100]);
    assert_eq!(get(&mut s, b"k"), Some(want));
    assert_eq!(s.stats().curr_items, 1);
    assert_eq!(s.stats().bytes, (32 + 1 + 1120) as u64);
    s.verify();
}

#[test]
fn append_past_the_max_item_size_is_too_large_and_keeps_the_item() {
    let mut s = small();
    let half = vec![1u8; s.max_item_size() / 2];
    set(&mut s, b"k", &half);
    put(&mut s, StoreMode::Append, b"k", &half[..half.len() - 40], 0).unwrap();
    assert_eq!(
        put(&mut s, StoreMode::Append, b"k", &half, 0),
        Err(StoreError::TooLarge)
    );
    assert_eq!(get(&mut s, b"k").unwrap().len(), half.len() * 2 - 40);
}

#[test]
fn append_that_cannot_get_memory_keeps_the_old_item() {
    // One page, holding the item's own class: the larger class cannot get a page without
    // evicting the very item being appended to.
    let mut s = store_with(cfg(MIB));
    let v = vec![b'v'; 300 * 1024];
    set(&mut s, b"k", &v);
    assert_eq!(
        put(&mut s, StoreMode::Append, b"k", &v[..200 * 1024], 0),
        Err(StoreError::OutOfMemory)
    );
    assert_eq!(get(&mut s, b"k"), Some(v));
    assert_eq!(s.stats().store_no_memory, 1);
    s.verify();
}

// ---- arithmetic ----

#[test]
fn incr_wraps_at_two_to_the_64() {
    let mut s = small();
    set(&mut s, b"n", b"18446744073709551615");
    assert_eq!(arith(&mut s, ArithOp::Incr, b"n", 0), Ok(u64::MAX));
    assert_eq!(arith(&mut s, ArithOp::Incr, b"n", 2), Ok(1));
    assert_eq!(get(&mut s, b"n"), Some(b"1".to_vec()));
    assert_eq!(arith(&mut s, ArithOp::Incr, b"n", u64::MAX), Ok(0));
}

#[test]
fn decr_floors_at_zero() {
    let mut s = small();
    set(&mut s, b"n", b"5");
    assert_eq!(arith(&mut s, ArithOp::Decr, b"n", 3), Ok(2));
    assert_eq!(arith(&mut s, ArithOp::Decr, b"n", 3), Ok(0));
    assert_eq!(arith(&mut s, ArithOp::Decr, b"n", u64::MAX), Ok(0));
    assert_eq!(get(&mut s, b"n"), Some(b"0".to_vec()));
}

#[test]
fn arith_on_non_numeric_values() {
    let mut s = small();
    for bad in [
        &b"abc"[..],
        b"",
        b"12a",
        b"1 2",
        b"-1",
        b"+1",
        b"18446744073709551616",
        b"99999999999999999999999",
        b"  ",
    ] {
        set(&mut s, b"n", bad);
        assert_eq!(
            arith(&mut s, ArithOp::Incr, b"n", 1),
            Err(StoreError::NonNumeric),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    for ok in [&b" 12"[..], b"12 ", b"\t12\r\n", b"0012"] {
        set(&mut s, b"n", ok);
        assert_eq!(arith(&mut s, ArithOp::Incr, b"n", 1), Ok(13));
    }
}

#[test]
fn arith_on_miss_creates_with_initial_or_fails() {
    let mut s = small();
    let h = key_hash(b"c");
    assert_eq!(
        s.arith(ArithOp::Incr, b"c", h, 5, None, 0),
        Err(StoreError::NotFound)
    );
    let (v, cas) = s
        .arith(ArithOp::Incr, b"c", h, 5, Some((10, 0)), 0)
        .unwrap();
    assert_eq!(v, 10, "creation returns initial, not initial + delta");
    assert_eq!(gets(&mut s, b"c").unwrap(), (b"10".to_vec(), 0, cas));
    assert_eq!(
        s.arith(ArithOp::Incr, b"c", h, 5, Some((10, 0)), 0)
            .unwrap()
            .0,
        15
    );
    let (v, _) = s
        .arith(ArithOp::Decr, b"d", key_hash(b"d"), 5, Some((3, 100)), 0)
        .unwrap();
    assert_eq!(v, 3);
    assert_eq!(s.peek(b"d", key_hash(b"d")).unwrap().ttl, Some(100));
    let st = s.stats();
    assert_eq!(
        (st.incr_hits, st.incr_misses, st.decr_hits, st.decr_misses),
        (1, 2, 0, 1)
    );
}

#[test]
fn arith_checks_cas_and_returns_the_new_one() {
    let mut s = small();
    let c = set(&mut s, b"n", b"1");
    let h = key_hash(b"n");
    assert_eq!(
        s.arith(ArithOp::Incr, b"n", h, 1, None, c + 1),
        Err(StoreError::Exists)
    );
    let (v, c2) = s.arith(ArithOp::Incr, b"n", h, 1, None, c).unwrap();
    assert_eq!(v, 2);
    assert_eq!(gets(&mut s, b"n").unwrap().2, c2);
}

#[test]
fn incr_growing_past_its_chunk_moves_the_item_and_keeps_flags() {
    let mut s = small();
    // 32 + 30 + 2 = 64: exactly the first class; "100" needs 65 bytes.
    let key = [b'k'; 30];
    s.store(StoreMode::Set, &key, key_hash(&key), b"99", 5, 100, 0)
        .unwrap();
    assert_eq!(class_of(&mut s, &key), 1);
    assert_eq!(arith(&mut s, ArithOp::Incr, &key, 1), Ok(100));
    assert_eq!(class_of(&mut s, &key), 2);
    assert_eq!(gets(&mut s, &key).unwrap().0, b"100".to_vec());
    assert_eq!(gets(&mut s, &key).unwrap().1, 5);
    assert_eq!(s.peek(&key, key_hash(&key)).unwrap().ttl, Some(100));
    assert_eq!(arith(&mut s, ArithOp::Decr, &key, 1), Ok(99));
    s.verify();
}

// ---- delete, touch ----

#[test]
fn delete_with_and_without_cas() {
    let mut s = small();
    let h = key_hash(b"k");
    assert_eq!(s.delete(b"k", h, 0), Err(StoreError::NotFound));
    let c = set(&mut s, b"k", b"v");
    assert_eq!(s.delete(b"k", h, c + 1), Err(StoreError::Exists));
    assert_eq!(s.delete(b"k", h, c), Ok(()));
    assert_eq!(get(&mut s, b"k"), None);
    set(&mut s, b"k", b"v");
    assert_eq!(s.delete(b"k", h, 0), Ok(()));
    let st = s.stats();
    assert_eq!(
        (st.delete_hits, st.delete_misses, st.curr_items, st.bytes),
        (2, 1, 0, 0)
    );
    s.verify();
}

#[test]
fn touch_and_get_and_touch_set_a_new_expiry() {
    let mut s = small();
    let h = key_hash(b"k");
    assert_eq!(s.touch(b"k", h, 10).err(), Some(StoreError::NotFound));
    let c = set_ttl(&mut s, b"k", b"v", 10);
    let v = s.touch(b"k", h, 100).unwrap();
    assert_eq!((v.value, v.cas), (&b"v"[..], c), "touch keeps the CAS");
    s.set_time(T0 + 50);
    let v = s.get_and_touch(b"k", h, 0).unwrap();
    assert_eq!(v.value, b"v");
    s.set_time(T0 + 10_000);
    assert_eq!(
        get(&mut s, b"k"),
        Some(b"v".to_vec()),
        "touched to never expire"
    );
    s.touch(b"k", h, -1).unwrap();
    assert_eq!(get(&mut s, b"k"), None);
    let st = s.stats();
    assert_eq!((st.touch_hits, st.touch_misses), (3, 1));
}

// ---- expiry ----

#[test]
fn relative_ttl_expires_on_time() {
    let mut s = small();
    set_ttl(&mut s, b"k", b"v", 10);
    s.set_time(T0 + 9);
    assert!(get(&mut s, b"k").is_some());
    s.set_time(T0 + 10);
    assert_eq!(get(&mut s, b"k"), None);
    let st = s.stats();
    assert_eq!((st.get_expired, st.get_misses, st.curr_items), (1, 1, 0));
}

#[test]
fn ttl_set_to_an_absolute_past_time_is_expired_at_once() {
    let mut s = small();
    assert!(set_ttl(&mut s, b"past", b"v", T0 as i64 - 1) != 0);
    assert_eq!(get(&mut s, b"past"), None);
    set_ttl(&mut s, b"now", b"v", T0 as i64);
    assert_eq!(get(&mut s, b"now"), None);
    // 30 days + 1 second is read as 1970.
    set_ttl(&mut s, b"1970", b"v", MAX_RELATIVE_EXPTIME + 1);
    assert_eq!(get(&mut s, b"1970"), None);
    set_ttl(&mut s, b"future", b"v", T0 as i64 + 60);
    assert!(get(&mut s, b"future").is_some());
    s.set_time(T0 + 60);
    assert_eq!(get(&mut s, b"future"), None);
}

#[test]
fn negative_and_absurd_ttls_never_panic() {
    let mut s = small();
    set_ttl(&mut s, b"neg", b"v", -1);
    assert_eq!(get(&mut s, b"neg"), None);
    set_ttl(&mut s, b"min", b"v", i64::MIN);
    assert_eq!(get(&mut s, b"min"), None);
    set_ttl(&mut s, b"max", b"v", i64::MAX);
    set_ttl(&mut s, b"u32", b"v", u32::MAX as i64);
    s.set_time(T0 + 50 * 365 * 86_400);
    assert!(get(&mut s, b"max").is_some());
    s.set_time(u64::MAX);
    let _ = get(&mut s, b"max");
    s.touch(b"u32", key_hash(b"u32"), i64::MAX).ok();
    s.flush(i64::MAX);
    s.flush(i64::MIN);
    s.verify();
}

// ---- flush ----

#[test]
fn flush_now_hides_everything_stored_before() {
    let mut s = small();
    set(&mut s, b"a", b"1");
    set(&mut s, b"b", b"2");
    s.flush(0);
    assert_eq!(get(&mut s, b"a"), None);
    set(&mut s, b"c", b"3");
    assert_eq!(
        get(&mut s, b"c"),
        Some(b"3".to_vec()),
        "written after the flush, same second"
    );
    assert!(
        put(&mut s, StoreMode::Add, b"b", b"x", 0).is_ok(),
        "add on a flushed key stores"
    );
    assert!(s.stats().get_flushed >= 2);
}

#[test]
fn flush_with_delay_takes_effect_at_the_deadline() {
    let mut s = small();
    set(&mut s, b"before", b"1");
    s.flush(2);
    assert!(
        get(&mut s, b"before").is_some(),
        "still visible right after the command"
    );
    s.set_time(T0 + 1);
    set(&mut s, b"between", b"2");
    assert!(get(&mut s, b"between").is_some());
    s.set_time(T0 + 2);
    assert_eq!(get(&mut s, b"before"), None);
    assert_eq!(
        get(&mut s, b"between"),
        None,
        "written before the deadline: flushed too"
    );
    set(&mut s, b"after", b"3");
    s.set_time(T0 + 3);
    assert_eq!(get(&mut s, b"after"), Some(b"3".to_vec()));
    assert_eq!(s.stats().get_flushed, 2);
}

#[test]
fn flush_with_an_absolute_deadline_and_replacement() {
    let mut s = small();
    set(&mut s, b"a", b"1");
    // An absolute time in the past flushes at once.
    s.flush(T0 as i64 - 5);
    assert_eq!(get(&mut s, b"a"), None);
    set(&mut s, b"a", b"1");
    s.flush(T0 as i64 + 10);
    s.flush(20); // replaces the pending deadline: now T0 + 20
    s.set_time(T0 + 15);
    assert!(get(&mut s, b"a").is_some());
    s.set_time(T0 + 20);
    assert_eq!(get(&mut s, b"a"), None);
    // A flush now cancels a pending one.
    set(&mut s, b"b", b"1");
    s.flush(5);
    s.flush(0);
    set(&mut s, b"c", b"1");
    s.set_time(T0 + 100);
    assert_eq!(get(&mut s, b"b"), None);
    assert!(get(&mut s, b"c").is_some());
}

// ---- eviction ----

/// Fills a one-page store's smallest class and returns how many keys were written.
fn fill_one_class(s: &mut Store, n: usize) {
    for i in 0..n {
        set(s, format!("k{i:06}").as_bytes(), b"v");
    }
}

#[test]
fn lru_evicts_the_least_recently_used() {
    let mut s = store_with(cfg(MIB));
    let per_page = MIB / 64;
    fill_one_class(&mut s, per_page);
    assert_eq!(s.stats().evictions, 0);
    assert!(get(&mut s, b"k000000").is_some());
    set(&mut s, b"new1", b"v");
    set(&mut s, b"new2", b"v");
    assert!(get_quiet(&mut s, b"k000000"), "read item was bumped");
    assert!(!get_quiet(&mut s, b"k000001"));
    assert!(!get_quiet(&mut s, b"k000002"));
    assert!(get_quiet(&mut s, b"k000003"));
    let st = s.stats();
    assert_eq!((st.evictions, st.evicted_unfetched), (2, 2));
    assert_eq!(s.slab_stats()[0].evicted, 2);
    assert!(st.total_malloced <= MIB as u64);
    s.verify();
}

#[test]
fn fifo_ignores_reads() {
    let mut s = store_with(StoreConfig {
        eviction: EvictionPolicy::Fifo,
        ..cfg(MIB)
    });
    fill_one_class(&mut s, MIB / 64);
    assert!(get(&mut s, b"k000000").is_some());
    set(&mut s, b"new", b"v");
    assert!(!get_quiet(&mut s, b"k000000"));
    assert_eq!(
        s.stats().evicted_unfetched,
        0,
        "the evicted one had been read"
    );
    s.verify();
}

#[test]
fn lfu_keeps_frequently_read_items() {
    let mut s = store_with(StoreConfig {
        eviction: EvictionPolicy::Lfu,
        ..cfg(MIB)
    });
    let n = MIB / 64;
    fill_one_class(&mut s, n);
    let hot: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("k{:06}", i * 300).into_bytes())
        .collect();
    for _ in 0..100 {
        for k in &hot {
            assert!(get(&mut s, k).is_some());
        }
    }
    for i in 0..n / 2 {
        set(&mut s, format!("new{i}").as_bytes(), b"v");
    }
    let kept = hot.iter().filter(|k| get_quiet(&mut s, k)).count();
    assert!(kept >= 45, "only {kept} of 50 hot items survived");
    assert_eq!(s.stats().evictions as usize, n / 2);
    s.verify();
}

#[test]
fn random_eviction_evicts_and_stays_consistent() {
    let mut s = store_with(StoreConfig {
        eviction: EvictionPolicy::Random,
        ..cfg(MIB)
    });
    fill_one_class(&mut s, MIB / 64 + 100);
    assert_eq!(s.stats().evictions, 100);
    assert_eq!(s.stats().curr_items as usize, MIB / 64);
    s.verify();
}

/// How a test keeps a key hot without reading it.
#[derive(Debug, Clone, Copy)]
enum Rewrite {
    Append,
    Prepend,
    Incr,
    Cas,
}

fn rewrite(s: &mut Store, key: &[u8], how: Rewrite) {
    match how {
        Rewrite::Append => drop(put(s, StoreMode::Append, key, b"1", 0).unwrap()),
        Rewrite::Prepend => drop(put(s, StoreMode::Prepend, key, b"1", 0).unwrap()),
        Rewrite::Incr => drop(arith(s, ArithOp::Incr, key, 1).unwrap()),
        Rewrite::Cas => {
            // peek: the CAS without a read that would count as an access.
            let cas = s.peek(key, key_hash(key)).unwrap().cas;
            put(s, StoreMode::Cas, key, b"7", cas).unwrap();
        }
    }
}

/// 20 keys rewritten every round, never read, in a one-page store that evicts 2.5 times its
/// items' worth of cold keys: the rewrites must keep them (memcached: an append is a fetch and
/// a store), while the cold keys of the first fill go.
fn rewritten_keys_stay_hot(eviction: EvictionPolicy, how: Rewrite) {
    let mut s = store_with(StoreConfig {
        eviction,
        ..cfg(MIB)
    });
    let per_page = MIB / 64;
    let hot: Vec<Vec<u8>> = (0..20).map(|i| format!("hot{i:03}").into_bytes()).collect();
    for k in &hot {
        set(&mut s, k, b"1");
    }
    let mut cold = 0usize;
    let mut fill = |s: &mut Store, n: usize| {
        for _ in 0..n {
            set(s, format!("k{cold:06}").as_bytes(), b"v");
            cold += 1;
        }
    };
    fill(&mut s, per_page - hot.len());
    assert_eq!(s.stats().evictions, 0);
    // 20 rounds: an append grows the value to 21 bytes, still in the first class.
    for round in 0..20 {
        s.set_time(T0 + round);
        for k in &hot {
            rewrite(&mut s, k, how);
        }
        fill(&mut s, per_page / 8);
    }
    assert!(s.stats().evictions as usize > 2 * per_page);
    let kept = hot.iter().filter(|k| get_quiet(&mut s, k)).count();
    assert_eq!(
        kept,
        hot.len(),
        "{eviction:?}, {how:?}: {kept} hot keys kept"
    );
    let first_fill = (0..per_page - hot.len())
        .filter(|i| get_quiet(&mut s, format!("k{i:06}").as_bytes()))
        .count();
    assert!(
        first_fill < per_page / 4,
        "{eviction:?}, {how:?}: {first_fill} cold keys kept"
    );
    s.verify();
}

const EVERY_REWRITE: [Rewrite; 4] = [
    Rewrite::Append,
    Rewrite::Prepend,
    Rewrite::Incr,
    Rewrite::Cas,
];

#[test]
fn rewrites_keep_keys_hot_under_lru() {
    for how in EVERY_REWRITE {
        rewritten_keys_stay_hot(EvictionPolicy::Lru, how);
    }
}

#[test]
fn rewrites_keep_keys_hot_under_lfu() {
    for how in EVERY_REWRITE {
        rewritten_keys_stay_hot(EvictionPolicy::Lfu, how);
    }
}

#[test]
fn rewrites_keep_keys_hot_under_s3fifo() {
    for how in EVERY_REWRITE {
        rewritten_keys_stay_hot(EvictionPolicy::S3Fifo, how);
    }
}

/// The bad-day probe: 20 keys kept hot by appends only, growing 10 bytes a round so that they
/// climb through the classes together, against 500 cold 100-byte sets a round in a 16 MiB store
/// (16 pages: each class the hot keys pass through needs one).
/// The page mover takes pages from cold classes and must not evict the hot keys that happen to
/// sit on the page it empties: it evicts its class's coldest items instead, as memcached's
/// mover pulls its LRU tail.
fn appended_keys_survive_the_page_mover(eviction: EvictionPolicy) {
    let mut s = store_with(StoreConfig {
        eviction,
        ..cfg(16 * MIB)
    });
    let hot: Vec<Vec<u8>> = (0..20).map(|i| format!("hot{i:03}").into_bytes()).collect();
    for k in &hot {
        set(&mut s, k, b"0123456789");
    }
    let mut cold = 0usize;
    for round in 0..200u64 {
        s.set_time(T0 + round);
        for k in &hot {
            let appended = put(&mut s, StoreMode::Append, k, b"0123456789", 0);
            assert!(
                appended.is_ok(),
                "{eviction:?}: round {round}: append to {}: {appended:?} (evictions {}, moves {}, \
                 mover evictions {})",
                String::from_utf8_lossy(k),
                s.stats().evictions,
                s.stats().slabs_moved,
                s.stats().slab_reassign_evictions
            );
        }
        for _ in 0..700 {
            set(&mut s, format!("cold{cold:08}").as_bytes(), &[b'c'; 100]);
            cold += 1;
        }
        s.rebalance();
    }
    assert!(
        s.stats().evictions > 10_000,
        "{eviction:?}: the store must be evicting"
    );
    assert!(
        s.stats().slabs_moved > 0,
        "{eviction:?}: the mover must have moved pages"
    );
    let kept = hot.iter().filter(|k| get_quiet(&mut s, k)).count();
    assert_eq!(
        kept,
        hot.len(),
        "{eviction:?}: {kept} of 20 appended keys kept"
    );
    s.verify();
}

/// LRU and S3-FIFO tell the mover how old a class's next victim is; LFU and random keep no
/// order, so the mover still judges them by activity per chunk alone.
#[test]
fn appended_keys_survive_the_page_mover_under_lru_s3fifo_and_lfu() {
    for eviction in [
        EvictionPolicy::Lru,
        EvictionPolicy::S3Fifo,
        EvictionPolicy::Lfu,
    ] {
        appended_keys_survive_the_page_mover(eviction);
    }
}

/// FIFO evicts in insertion order by definition; a rewrite is a new insertion there (the head),
/// so rewritten keys stay too.
#[test]
fn rewrites_reinsert_under_fifo() {
    for how in [Rewrite::Append, Rewrite::Cas] {
        rewritten_keys_stay_hot(EvictionPolicy::Fifo, how);
    }
}

/// The rewrite that moves an item to another class (append, incr past the chunk) takes its
/// S3-FIFO queue and frequency along.
#[test]
fn s3fifo_rewrite_into_another_class_keeps_queue_and_frequency() {
    let mut s = store_with(StoreConfig {
        eviction: EvictionPolicy::S3Fifo,
        ..cfg(4 * MIB)
    });
    let key = [b'k'; 30];
    s.store(StoreMode::Set, &key, key_hash(&key), b"99", 0, 0, 0)
        .unwrap();
    let id = s.index.find(&s.slab, &key, key_hash(&key)).unwrap();
    let Policy::S3Fifo(p) = &s.policy else {
        unreachable!()
    };
    assert_eq!(p.queues(&s.slab, 0), (vec![id], vec![]));
    get(&mut s, &key).unwrap();
    assert_eq!(arith(&mut s, ArithOp::Incr, &key, 1), Ok(100));
    let id = s.index.find(&s.slab, &key, key_hash(&key)).unwrap();
    assert_eq!(s.slab.class_of(id), 1);
    let Policy::S3Fifo(p) = &s.policy else {
        unreachable!()
    };
    assert_eq!(p.queues(&s.slab, 1), (vec![id], vec![]));
    assert_eq!(
        evict::s3fifo_freq(s.slab.chunk(id)),
        2,
        "one read, one rewrite"
    );
    put(&mut s, StoreMode::Append, &key, &[b'x'; 100], 0).unwrap();
    let id = s.index.find(&s.slab, &key, key_hash(&key)).unwrap();
    assert_eq!(evict::s3fifo_freq(s.slab.chunk(id)), 3);
    // A plain set is a new item: frequency 0.
    set(&mut s, &key, b"v");
    let id = s.index.find(&s.slab, &key, key_hash(&key)).unwrap();
    assert_eq!(evict::s3fifo_freq(s.slab.chunk(id)), 0);
    s.verify();
}

#[test]
fn s3fifo_evicts_unread_items_and_keeps_read_ones() {
    let mut s = store_with(StoreConfig {
        eviction: EvictionPolicy::S3Fifo,
        ..cfg(MIB)
    });
    let n = MIB / 64;
    fill_one_class(&mut s, n);
    let hot: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("k{:06}", i * 300).into_bytes())
        .collect();
    for k in &hot {
        assert!(get(&mut s, k).is_some());
    }
    for i in 0..2 * n {
        set(&mut s, format!("new{i}").as_bytes(), b"v");
        if i % 1000 == 0 {
            for k in &hot {
                get(&mut s, k);
            }
        }
    }
    let kept = hot.iter().filter(|k| get_quiet(&mut s, k)).count();
    assert_eq!(kept, 50);
    assert_eq!(s.stats().evictions as usize, 2 * n);
    s.verify();
}

#[test]
fn expired_items_are_reclaimed_before_live_ones_are_evicted() {
    let mut s = store_with(cfg(MIB));
    let n = MIB / 64;
    for i in 0..n {
        let ttl = if i < 10 { 5 } else { 0 };
        set_ttl(&mut s, format!("k{i:06}").as_bytes(), b"v", ttl);
    }
    s.set_time(T0 + 5);
    for i in 0..5 {
        set(&mut s, format!("n{i}").as_bytes(), b"v");
    }
    let st = s.stats();
    assert_eq!(
        (st.evictions, st.reclaimed, st.expired_unfetched),
        (0, 5, 5)
    );
    assert_eq!(s.slab_stats()[0].reclaimed, 5);
    s.verify();
}

// ---- reclaim ----

#[test]
fn reclaim_walks_a_bounded_slice_and_resumes() {
    let mut s = small();
    for i in 0..100 {
        set_ttl(
            &mut s,
            format!("k{i}").as_bytes(),
            b"v",
            if i % 2 == 0 { 10 } else { 0 },
        );
    }
    s.set_time(T0 + 10);
    assert!(get(&mut s, b"k1").is_some());
    // Items sit in chunks 0..100 of page 0; 60 chunks per call.
    let first = s.reclaim(60);
    assert_eq!(first, 30);
    let mut total = first;
    for _ in 0..1000 {
        total += s.reclaim(1000);
        if total == 50 {
            break;
        }
    }
    assert_eq!(total, 50);
    let st = s.stats();
    assert_eq!(
        (st.curr_items, st.reclaimed, st.expired_unfetched),
        (50, 50, 50)
    );
    assert_eq!(s.reclaim(100_000), 0);
    s.verify();
}

#[test]
fn reclaim_frees_flushed_items_and_handles_an_empty_store() {
    let mut s = small();
    assert_eq!(s.reclaim(10), 0);
    for i in 0..10 {
        set(&mut s, format!("k{i}").as_bytes(), b"v");
    }
    s.flush(0);
    assert_eq!(s.reclaim(100_000), 10);
    assert_eq!(s.stats().curr_items, 0);
    s.verify();
}

// ---- page reassignment ----

#[test]
fn a_class_without_pages_takes_one_when_memory_is_full() {
    let mut s = store_with(cfg(2 * MIB));
    // Two pages of 64-byte chunks, full.
    fill_one_class(&mut s, 2 * MIB / 64);
    assert_eq!(s.stats().total_malloced, 2 * MIB as u64);
    let big = vec![b'b'; 4000];
    set(&mut s, b"big", &big);
    assert_eq!(get(&mut s, b"big"), Some(big));
    let st = s.stats();
    assert_eq!(st.slabs_moved, 1);
    assert!(st.total_malloced <= 2 * MIB as u64);
    s.verify();
}

#[test]
fn rebalance_moves_a_mostly_free_page_to_an_evicting_class() {
    let mut s = store_with(cfg(3 * MIB));
    // The 64-byte class takes two pages, then three items in four are deleted.
    let n = 2 * MIB / 64;
    fill_one_class(&mut s, n);
    for i in (0..n).filter(|i| i % 4 != 0) {
        let k = format!("k{i:06}");
        s.delete(k.as_bytes(), key_hash(k.as_bytes()), 0).unwrap();
    }
    // The class of 5000-byte items takes the third MiB and evicts a few items (fewer than a
    // page's worth, so no inline move happens).
    let v = vec![b'x'; 5000];
    let big_class = s
        .slab_stats()
        .iter()
        .position(|c| c.chunk_size >= 5034)
        .unwrap();
    let per_page = s.slab_stats()[big_class].chunks_per_page as usize;
    let small_pages = s.slab_stats()[0].total_pages;
    let mut i = 0;
    while s.stats().evictions < 10 {
        set(&mut s, format!("big{i}").as_bytes(), &v);
        i += 1;
        assert!(i < 10_000, "the third MiB must fill");
    }
    let big_pages = s.slab_stats()[big_class].total_pages;
    assert_eq!(s.stats().slabs_moved, 0);
    assert!(s.rebalance());
    // One step moves up to a MiB of pages, each relocating its survivors (no eviction).
    let st = s.stats();
    let moved = st.slabs_moved;
    assert!((1..=16).contains(&moved), "{moved} pages moved");
    assert!(st.slab_reassign_rescues >= (n / 4 / small_pages as usize) as u64);
    assert_eq!(st.slab_reassign_evictions, 0);
    assert_eq!(s.slab_stats()[big_class].total_pages, big_pages + moved);
    assert_eq!(s.slab_stats()[0].total_pages, small_pages - moved);
    for i in (0..n).filter(|i| i % 4 == 0) {
        assert!(get_quiet(&mut s, format!("k{i:06}").as_bytes()));
    }
    // The receiving class now has room: new items do not evict.
    for i in 0..per_page / 2 {
        set(&mut s, format!("more{i}").as_bytes(), &v);
    }
    assert_eq!(s.stats().evictions, 10);
    s.verify();
}

#[test]
fn steady_eviction_in_one_class_pulls_pages_from_a_cold_class() {
    let mut s = store_with(cfg(4 * MIB));
    // A cold class fills three pages, then a new value size takes over.
    fill_one_class(&mut s, 3 * MIB / 64);
    let v = vec![b'y'; 3000];
    for i in 0..3000 {
        set(&mut s, format!("new{i}").as_bytes(), &v);
    }
    let st = s.stats();
    assert!(st.slabs_moved >= 2, "only {} pages moved", st.slabs_moved);
    assert!(st.total_malloced <= 4 * MIB as u64);
    // The most recent new-size items are all there.
    for i in 2900..3000 {
        assert!(get_quiet(&mut s, format!("new{i}").as_bytes()));
    }
    s.verify();
}

#[test]
fn rebalance_without_pressure_moves_nothing() {
    let mut s = small();
    fill_one_class(&mut s, 100);
    assert!(!s.rebalance());
    assert_eq!(s.stats().slabs_moved, 0);
}

// ---- stats ----

#[test]
fn stats_track_items_bytes_and_classes() {
    let mut s = small();
    set(&mut s, b"a", b"12345");
    set(&mut s, b"bb", &[0u8; 500]);
    let st = s.stats();
    assert_eq!(st.curr_items, 2);
    assert_eq!(st.total_items, 2);
    assert_eq!(st.bytes, (32 + 1 + 5 + 32 + 2 + 500) as u64);
    assert_eq!(st.limit_maxbytes, 4 * MIB as u64);
    assert_eq!(st.total_malloced, 2 * 64 * 1024, "one page per used class");
    get(&mut s, b"a");
    get(&mut s, b"zz");
    let st = s.stats();
    assert_eq!((st.get_hits, st.get_misses), (1, 1));
    let classes = s.slab_stats();
    let used: Vec<&SlabClassStats> = classes.iter().filter(|c| c.total_pages > 0).collect();
    assert_eq!(used.len(), 2);
    for c in &used {
        assert_eq!(c.used_chunks, 1);
        assert_eq!(c.total_chunks, c.chunks_per_page);
        assert_eq!(c.used_chunks + c.free_chunks, c.total_chunks);
        assert!(c.chunk_size * c.chunks_per_page <= MIB as u64);
    }
    assert_eq!(classes[0].class, 1);
    s.reset_stats();
    let st = s.stats();
    assert_eq!((st.get_hits, st.total_items, st.curr_items), (0, 0, 2));
}

#[test]
fn peek_reports_without_side_effects() {
    let mut s = small();
    let c = set_ttl(&mut s, b"k", b"abc", 30);
    s.set_time(T0 + 4);
    let info = s.peek(b"k", key_hash(b"k")).unwrap();
    assert_eq!(info.value_len, 3);
    assert_eq!(info.size, 36);
    assert_eq!(info.ttl, Some(26));
    assert_eq!(info.idle, 4);
    assert!(!info.fetched);
    assert_eq!(info.cas, c);
    assert_eq!(s.stats().get_hits, 0);
    get(&mut s, b"k");
    assert!(s.peek(b"k", key_hash(b"k")).unwrap().fetched);
    assert_eq!(
        s.peek(b"x", key_hash(b"x")).err(),
        Some(StoreError::NotFound)
    );
}

// ---- stampede protection and explicit CAS ----

fn fetch(s: &mut Store, key: &[u8], opts: FetchOptions) -> StoreResult<(Vec<u8>, ItemInfo, bool)> {
    s.fetch(key, key_hash(key), opts)
        .map(|f| (f.item.value.to_vec(), f.info, f.won))
}

#[test]
fn vivify_creates_a_placeholder_won_once_then_marked() {
    let mut s = small();
    let viv = FetchOptions {
        vivify: Some(30),
        ..FetchOptions::default()
    };
    let (v, info, won) = fetch(&mut s, b"k", viv).unwrap();
    assert!(v.is_empty() && won);
    assert_eq!(info.ttl, Some(30));
    let (_, info, won) = fetch(&mut s, b"k", viv).unwrap();
    assert!(!won && info.token_sent && !info.stale);
    // A miss without vivify stays a miss and counts as one; placeholders count as hits.
    assert_eq!(
        fetch(&mut s, b"other", FetchOptions::default()),
        Err(StoreError::NotFound)
    );
    let st = s.stats();
    assert_eq!((st.get_hits, st.get_misses), (2, 1));
    // Storing the real value clears the mark.
    set(&mut s, b"k", b"real");
    let info = s.peek(b"k", key_hash(b"k")).unwrap();
    assert!(!info.token_sent && !info.stale);
    s.verify();
}

#[test]
fn recache_wins_once_when_the_ttl_is_below_the_threshold() {
    let mut s = small();
    set_ttl(&mut s, b"k", b"v", 100);
    let r = |below| FetchOptions {
        recache_below: Some(below),
        ..FetchOptions::default()
    };
    assert!(
        !fetch(&mut s, b"k", r(100)).unwrap().2,
        "100 s left is not below 100"
    );
    assert!(fetch(&mut s, b"k", r(101)).unwrap().2);
    let (_, info, won) = fetch(&mut s, b"k", r(101)).unwrap();
    assert!(!won && info.token_sent);
    // Items that never expire are never recache candidates.
    set(&mut s, b"n", b"v");
    assert!(!fetch(&mut s, b"n", r(1_000_000)).unwrap().2);
}

#[test]
fn invalidate_keeps_the_item_stale_with_a_new_cas_and_rearms_the_win() {
    let mut s = small();
    let old = set_ttl(&mut s, b"k", b"v", 100);
    let h = key_hash(b"k");
    // A token handed out before the invalidation does not block the next win.
    fetch(
        &mut s,
        b"k",
        FetchOptions {
            recache_below: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        s.invalidate(b"k", h, old + 1, None, 0),
        Err(StoreError::Exists)
    );
    let new = s.invalidate(b"k", h, old, Some(30), 0).unwrap();
    assert_ne!(new, old);
    let (v, info, won) = fetch(&mut s, b"k", FetchOptions::default()).unwrap();
    assert_eq!(
        (v.as_slice(), info.cas, info.ttl),
        (&b"v"[..], new, Some(30))
    );
    assert!(info.stale && won);
    let (_, info, won) = fetch(&mut s, b"k", FetchOptions::default()).unwrap();
    assert!(info.stale && info.token_sent && !won);
    assert_eq!(
        s.invalidate(b"nope", key_hash(b"nope"), 0, None, 0),
        Err(StoreError::NotFound)
    );
    // A plain store replaces the stale item with a fresh one.
    set(&mut s, b"k", b"fresh");
    assert!(!s.peek(b"k", h).unwrap().stale);
    s.verify();
}

#[test]
fn invalidation_mode_store_with_an_older_cas_stores_stale_keeping_ttl_and_token() {
    let mut s = small();
    let h = key_hash(b"k");
    let first = set_ttl(&mut s, b"k", b"v1", 100);
    let second = set_ttl(&mut s, b"k", b"v2", 100);
    fetch(
        &mut s,
        b"k",
        FetchOptions {
            recache_below: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    let opts = |cas| StoreOptions {
        cas,
        invalidate: true,
        new_cas: 0,
    };
    // Newer than the item's CAS: refused as any CAS mismatch.
    assert_eq!(
        s.store_with(StoreMode::Set, b"k", h, b"x", 0, 0, opts(second + 1)),
        Err(StoreError::Exists)
    );
    let c = s
        .store_with(StoreMode::Set, b"k", h, b"late", 0, 0, opts(first))
        .unwrap();
    let info = s.peek(b"k", h).unwrap();
    assert!(info.stale && info.token_sent);
    assert_eq!((info.cas, info.ttl), (c, Some(100)));
    assert_eq!(get(&mut s, b"k").unwrap(), b"late");
    // The matching CAS stores normally and clears the marks.
    s.store_with(StoreMode::Set, b"k", h, b"ok", 0, 0, opts(c))
        .unwrap();
    let info = s.peek(b"k", h).unwrap();
    assert!(!info.stale && !info.token_sent);
    // Without invalidation mode an older CAS is a plain mismatch.
    assert_eq!(
        put(&mut s, StoreMode::Set, b"k", b"z", first),
        Err(StoreError::Exists)
    );
    s.verify();
}

#[test]
fn explicit_cas_is_kept_until_the_next_change_and_survives_nothing_flush_kills() {
    let mut s = small();
    let h = key_hash(b"k");
    let e = StoreOptions {
        new_cas: 12345,
        ..Default::default()
    };
    assert_eq!(
        s.store_with(StoreMode::Set, b"k", h, b"v", 0, 0, e),
        Ok(12345)
    );
    assert_eq!(gets(&mut s, b"k").unwrap().2, 12345);
    assert_eq!(s.peek(b"k", h).unwrap().size, item::item_size(1, 1) + 8);
    // Compare against the explicit value.
    assert_ne!(put(&mut s, StoreMode::Append, b"k", b"w", 12345), Ok(12345));
    assert_eq!(get(&mut s, b"k").unwrap(), b"vw");
    // Arith and invalidate with and without explicit CAS; append in place keeps the value intact.
    set(&mut s, b"n", b"5");
    let a = ArithOptions {
        new_cas: 777,
        touch: Some(50),
        ..Default::default()
    };
    let r = s
        .arith_with(ArithOp::Incr, b"n", key_hash(b"n"), 2, a)
        .unwrap();
    assert_eq!((r.value, r.cas, r.ttl), (7, 777, Some(50)));
    assert_eq!(
        s.invalidate(b"n", key_hash(b"n"), 777, None, 0)
            .map(|c| c != 777),
        Ok(true)
    );
    assert_eq!(s.invalidate(b"n", key_hash(b"n"), 0, None, 999), Ok(999));
    assert_eq!(
        s.invalidate(b"n", key_hash(b"n"), 999, None, 1000),
        Ok(1000)
    );
    assert_eq!(get(&mut s, b"n").unwrap(), b"7");
    let viv = FetchOptions {
        vivify: Some(0),
        new_cas: 55,
        ..Default::default()
    };
    assert_eq!(fetch(&mut s, b"p", viv).unwrap().1.cas, 55);
    s.verify();
    // Flush still sees explicit-CAS items: the header keeps a generated counter.
    s.flush(0);
    assert_eq!(get(&mut s, b"n"), None);
    assert_eq!(get(&mut s, b"p"), None);
    s.verify();
}

#[test]
fn fetch_without_update_leaves_the_fetched_mark() {
    let mut s = small();
    set(&mut s, b"k", b"v");
    let quiet = FetchOptions {
        no_update: true,
        ..FetchOptions::default()
    };
    let (_, info, _) = fetch(&mut s, b"k", quiet).unwrap();
    assert!(!info.fetched);
    let (_, info, _) = fetch(&mut s, b"k", quiet).unwrap();
    assert!(
        !info.fetched,
        "a no-update read must not mark the item fetched"
    );
    let (_, info, _) = fetch(&mut s, b"k", FetchOptions::default()).unwrap();
    assert!(!info.fetched);
    let (_, info, _) = fetch(&mut s, b"k", quiet).unwrap();
    assert!(info.fetched);
    assert_eq!(s.stats().get_hits, 4, "every read is still a hit");
}

// ---- lent values ----

fn lend(s: &mut Store, key: &[u8]) -> (ItemRef, LentValue) {
    let item = s.get(key, key_hash(key)).unwrap().item;
    (item, s.lend(item))
}

/// The bytes a loan covers, read as the kernel would read them.
fn read_lent(v: LentValue) -> Vec<u8> {
    // SAFETY: tests read a loan's bytes only while it lasts, so they are allocated and
    // unchanged; nothing in the store writes them during the copy (single thread).
    unsafe { std::slice::from_raw_parts(v.ptr, v.len) }.to_vec()
}

#[test]
fn a_deleted_lent_item_keeps_its_bytes_until_the_loan_ends() {
    let mut s = small();
    let old = vec![b'a'; 9000];
    set(&mut s, b"k", &old);
    let (item, v) = lend(&mut s, b"k");
    s.delete(b"k", key_hash(b"k"), 0).unwrap();
    // Same class, so a free chunk would be the deleted one: it must not be.
    for i in 0..20 {
        set(&mut s, format!("other{i}").as_bytes(), &vec![b'b'; 9000]);
    }
    assert_eq!(get(&mut s, b"k"), None);
    assert_eq!(read_lent(v), old);
    s.verify();
    s.end_loan(item);
    assert_eq!(s.lent_items(), 0);
    s.verify();
    let classes = s.slab_stats();
    assert!(classes
        .iter()
        .all(|c| c.used_chunks + c.free_chunks == c.total_chunks));
}

#[test]
fn a_lent_item_is_replaced_elsewhere_not_in_place() {
    let mut s = small();
    let old = vec![b'a'; 9000];
    set(&mut s, b"k", &old);
    let (item, v) = lend(&mut s, b"k");
    let new = vec![b'n'; 9000];
    set(&mut s, b"k", &new);
    s.store(StoreMode::Append, b"k", key_hash(b"k"), b"tail", 0, 0, 0)
        .unwrap();
    assert_eq!(read_lent(v), old);
    let mut want = new.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(get(&mut s, b"k"), Some(want));
    s.end_loan(item);
    s.verify();
}

#[test]
fn a_lent_item_in_place_append_or_prepend_goes_elsewhere() {
    let mut s = small();
    // Room left in the chunk, so both would otherwise edit in place.
    set(&mut s, b"k", &vec![b'a'; 8000]);
    let (item, v) = lend(&mut s, b"k");
    s.store(StoreMode::Prepend, b"k", key_hash(b"k"), b"head", 0, 0, 0)
        .unwrap();
    assert_eq!(read_lent(v), vec![b'a'; 8000]);
    let got = get(&mut s, b"k").unwrap();
    assert_eq!(&got[..4], b"head");
    s.end_loan(item);
    s.verify();
}

#[test]
fn loans_nest_and_the_last_one_frees_an_unlinked_chunk() {
    let mut s = small();
    set(&mut s, b"k", &vec![b'a'; 9000]);
    let (item, _) = lend(&mut s, b"k");
    let (again, v) = lend(&mut s, b"k");
    assert_eq!(item, again);
    s.delete(b"k", key_hash(b"k"), 0).unwrap();
    s.end_loan(item);
    assert_eq!(s.lent_items(), 1);
    assert_eq!(read_lent(v), vec![b'a'; 9000]);
    s.end_loan(again);
    assert_eq!(s.lent_items(), 0);
    s.verify();
}

#[test]
fn a_full_class_does_not_evict_or_move_a_lent_item() {
    let mut s = store_with(cfg(2 * MIB));
    let v0 = vec![b'z'; 9000];
    set(&mut s, b"lent", &v0);
    let (item, v) = lend(&mut s, b"lent");
    // Many more items of the class than fit, then of another class (page moves).
    for i in 0..400 {
        set(&mut s, format!("fill{i}").as_bytes(), &vec![b'f'; 9000]);
    }
    for i in 0..20_000 {
        set(&mut s, format!("small{i}").as_bytes(), b"xx");
    }
    for _ in 0..8 {
        s.rebalance();
    }
    assert_eq!(get(&mut s, b"lent"), Some(v0.clone()));
    assert_eq!(read_lent(v), v0);
    s.verify();
    s.end_loan(item);
    s.verify();
}

// ---- per-class counters and the size histogram ----

#[test]
fn per_class_counters_land_in_the_items_class_and_sum_to_the_totals() {
    let mut s = small();
    let big = vec![b'x'; 500];
    set(&mut s, b"a", b"1");
    set(&mut s, b"b", &big);
    let (ca, cb) = (
        class_of(&mut s, b"a") as usize - 1,
        class_of(&mut s, b"b") as usize - 1,
    );
    assert_ne!(ca, cb);
    get(&mut s, b"a");
    get(&mut s, b"b");
    get(&mut s, b"b");
    get(&mut s, b"missing");
    arith(&mut s, ArithOp::Incr, b"a", 1).unwrap();
    arith(&mut s, ArithOp::Decr, b"a", 1).unwrap();
    let cas = gets(&mut s, b"b").unwrap().2;
    put(&mut s, StoreMode::Set, b"b", &big, cas + 1).unwrap_err();
    put(&mut s, StoreMode::Set, b"b", &big, cas).unwrap();
    s.touch(b"a", key_hash(b"a"), 100).unwrap();
    s.delete(b"b", key_hash(b"b"), 0).unwrap();
    let k = s.slab_stats();
    let t = s.stats();
    assert_eq!((k[ca].get_hits, k[cb].get_hits), (1, 3));
    assert_eq!((k[ca].set_cmds, k[cb].set_cmds), (1, 3));
    assert_eq!((k[ca].incr_hits, k[ca].decr_hits), (1, 1));
    assert_eq!((k[cb].cas_hits, k[cb].cas_badval), (1, 1));
    assert_eq!((k[ca].touch_hits, k[cb].delete_hits), (1, 1));
    let sum = |f: fn(&SlabClassStats) -> u64| k.iter().map(f).sum::<u64>();
    assert_eq!(sum(|c| c.get_hits), t.get_hits);
    assert_eq!(sum(|c| c.delete_hits), t.delete_hits);
    assert_eq!(
        sum(|c| c.cas_hits + c.cas_badval),
        t.cas_hits + t.cas_badval
    );
    s.reset_stats();
    assert_eq!(s.slab_stats()[cb].get_hits, 0);
}

#[test]
fn eviction_records_expiry_and_idle_time_of_the_victim() {
    let mut s = store_with(cfg(MIB));
    let v = vec![b'v'; 1000];
    set_ttl(&mut s, b"first", &v, 1000);
    s.set_time(T0 + 7);
    let mut i = 0;
    while s.slab_stats().iter().all(|c| c.evicted == 0) {
        set(&mut s, format!("k{i}").as_bytes(), &v);
        i += 1;
        assert!(i < 10_000, "no eviction");
    }
    let c = s.slab_stats().into_iter().find(|c| c.evicted > 0).unwrap();
    assert_eq!((c.evicted, c.evicted_nonzero, c.evicted_time), (1, 1, 7));
}

#[test]
fn reclaimer_counts_what_it_checks_and_frees() {
    let mut s = small();
    set_ttl(&mut s, b"short", b"v", 1);
    set(&mut s, b"long", b"v");
    s.set_time(T0 + 2);
    s.reclaim(1 << 20);
    let t = s.stats();
    assert_eq!(t.crawler_reclaimed, 1);
    assert!(t.crawler_items_checked >= 2);
    assert_eq!(s.slab_stats()[0].crawler_reclaimed, 1);
}

#[test]
fn size_histogram_counts_items_held_by_32_byte_bucket() {
    let mut s = small();
    assert_eq!(s.sizes(), None);
    set(&mut s, b"before", b"v");
    s.enable_sizes();
    let size = |k: &[u8], v: usize| item::item_size(k.len(), v).div_ceil(32) as u64 * 32;
    assert_eq!(s.sizes(), Some(vec![(size(b"before", 1), 1)]));
    set(&mut s, b"k1", &[b'x'; 100]);
    set(&mut s, b"k1", &[b'x'; 300]);
    let mut want = vec![(size(b"before", 1), 1), (size(b"k1", 300), 1)];
    want.sort();
    assert_eq!(s.sizes(), Some(want));
    s.delete(b"k1", key_hash(b"k1"), 0).unwrap();
    s.delete(b"before", key_hash(b"before"), 0).unwrap();
    assert_eq!(s.sizes(), Some(vec![]));
    s.disable_sizes();
    assert_eq!(s.sizes(), None);
}

// ---- watch support: probes and recorded evictions ----

#[test]
fn probe_reports_without_side_effects() {
    let mut s = small();
    assert_eq!(s.probe(b"none", key_hash(b"none")), None);
    set(&mut s, b"live", b"abc");
    let p = s.probe(b"live", key_hash(b"live")).unwrap();
    assert_eq!(
        (p.liveness, p.class, p.value_len, p.ttl),
        (Liveness::Live, 1, 3, None)
    );
    set_ttl(&mut s, b"short", b"v", 10);
    s.set_time(T0 + 11);
    let p = s.probe(b"short", key_hash(b"short")).unwrap();
    assert_eq!(p.liveness, Liveness::Expired);
    s.flush(0);
    let p = s.probe(b"live", key_hash(b"live")).unwrap();
    assert_eq!(p.liveness, Liveness::Flushed);
    // Probing counted and unlinked nothing.
    assert_eq!(s.len(), 2);
    assert_eq!((s.stats().get_hits, s.stats().get_flushed), (0, 0));
    assert_eq!(s.item_class(4, 3), 1);
    assert_eq!(s.item_class(4, 100 * MIB), 0);
}

#[test]
fn evictions_are_recorded_only_while_asked() {
    let mut s = store_with(cfg(MIB));
    fill_one_class(&mut s, MIB / 64);
    let mut got = Vec::new();
    set(&mut s, b"quiet", b"v");
    s.take_evictions(&mut got);
    assert!(got.is_empty());
    s.record_evictions(true);
    set(&mut s, b"loud", b"v");
    s.take_evictions(&mut got);
    assert_eq!(got.len(), 1);
    let e = &got[0];
    // k000000 made room for "quiet", unrecorded.
    assert_eq!(e.key, b"k000001".to_vec());
    assert_eq!(
        (e.fetched, e.ttl, e.class, e.value_len),
        (false, None, 1, 1)
    );
    s.record_evictions(false);
    set(&mut s, b"quiet2", b"v");
    s.take_evictions(&mut got);
    assert_eq!(got.len(), 1);
}
