//! Replication rules: hybrid versions, last-writer-wins apply, tombstones, the resync walk, and
//! a random check that two stores exchanging records in any order converge.

use proptest::prelude::*;

use super::*;
use crate::storage::{
    key_hash, ArithOp, FetchOptions, SlabClassStats, StoreConfig, StoreMode, StoreStats,
    VersionClock, TOMBSTONE_OVERHEAD,
};

const MIB: usize = 1024 * 1024;
const T0: u64 = 1_700_000_000;

/// A replica that owns its bytes, to carry between stores.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Vec<u8>,
    value: Vec<u8>,
    flags: u32,
    exptime: u64,
    version: u64,
    deleted: bool,
}

impl Rec {
    fn of(r: Replica<'_>) -> Rec {
        Rec {
            key: r.key.to_vec(),
            value: r.value.to_vec(),
            flags: r.flags,
            exptime: r.exptime,
            version: r.version,
            deleted: r.deleted,
        }
    }

    fn item(key: &[u8], value: &[u8], version: u64) -> Rec {
        Rec {
            key: key.to_vec(),
            value: value.to_vec(),
            flags: 0,
            exptime: 0,
            version,
            deleted: false,
        }
    }

    fn tomb(key: &[u8], version: u64) -> Rec {
        Rec {
            deleted: true,
            value: Vec::new(),
            ..Rec::item(key, b"", version)
        }
    }

    fn view(&self) -> Replica<'_> {
        Replica {
            key: &self.key,
            value: &self.value,
            flags: self.flags,
            exptime: self.exptime,
            version: self.version,
            deleted: self.deleted,
        }
    }
}

fn hybrid_cfg(limit: usize) -> StoreConfig {
    StoreConfig {
        memory_limit: limit,
        versions: VersionClock::Hybrid,
        ..StoreConfig::default()
    }
}

fn make(config: StoreConfig) -> Store {
    let mut s = Store::new(config).unwrap();
    s.set_time(T0);
    s
}

fn hybrid() -> Store {
    make(hybrid_cfg(8 * MIB))
}

fn set(s: &mut Store, key: &[u8], value: &[u8]) -> u64 {
    s.store(StoreMode::Set, key, key_hash(key), value, 0, 0, 0)
        .unwrap();
    s.replica(key, key_hash(key)).unwrap().version
}

fn del(s: &mut Store, key: &[u8]) {
    s.delete(key, key_hash(key), 0).unwrap();
}

fn get(s: &mut Store, key: &[u8]) -> Option<Vec<u8>> {
    s.get(key, key_hash(key)).ok().map(|v| v.value.to_vec())
}

fn state(s: &Store, key: &[u8]) -> Option<Rec> {
    s.replica(key, key_hash(key)).map(Rec::of)
}

fn apply(s: &mut Store, r: &Rec) -> Applied {
    s.apply(&r.view(), key_hash(&r.key))
}

/// A version well above anything the wall clock gives now.
fn future(n: u64) -> u64 {
    wall_version() + (1 << 40) + n
}

/// The whole store as a resync walk in steps of `budget` reports it.
fn walk_all(s: &Store, budget: usize) -> Vec<Rec> {
    let (mut out, mut at, mut steps) = (Vec::new(), Some(ReplicaCursor::START), 0);
    while let Some(c) = at {
        at = s.walk_replicas(c, budget, |r| out.push(Rec::of(r)));
        steps += 1;
        assert!(steps < 1_000_000, "walk does not end");
    }
    out
}

// ---- versions ----

#[test]
fn hybrid_versions_increase_and_follow_the_wall_clock() {
    let mut s = make(StoreConfig {
        shard_id: 2,
        shard_count: 3,
        ..hybrid_cfg(8 * MIB)
    });
    let before = wall_version();
    assert!(before > 0 && before >> LOGICAL_BITS < 1 << 41);
    let mut last = 0;
    for i in 0..5000 {
        let v = set(&mut s, format!("k{}", i % 7).as_bytes(), b"v");
        assert!(v > last && v >= before && v <= CAS_MASK);
        last = v;
        // The wire CAS is derived from the version as with counters.
        let cas = s.get(b"k0", key_hash(b"k0")).map(|i| i.cas);
        if i % 7 == 0 {
            assert_eq!(cas, Ok(v * 3 + 2));
        }
    }
    // 5000 writes in well under 5000 ms: the logical bits took the excess.
    assert!(last <= wall_version() + 5000);
}

#[test]
fn counter_versions_count_from_one_and_leave_no_tombstones() {
    let mut s = make(StoreConfig {
        memory_limit: 2 * MIB,
        ..StoreConfig::default()
    });
    assert_eq!(set(&mut s, b"a", b"1"), 1);
    assert_eq!(set(&mut s, b"b", b"1"), 2);
    del(&mut s, b"a");
    assert_eq!(state(&s, b"a"), None);
    assert_eq!(s.stats().tombstones, 0);
    // The whole limit is the slab's: beside the small items' 64 KiB page, 41 one-chunk pages
    // of 49,280 bytes fit in 2 MiB, where the tombstones' share (1/64: 32,768) would leave
    // room for only 40.
    let big = vec![b'x'; 40_000];
    for i in 0..60 {
        s.store(StoreMode::Set, &[i], key_hash(&[i]), &big, 0, 0, 0)
            .unwrap();
    }
    assert!(s.stats().evictions > 0);
    assert_eq!(s.stats().total_malloced, 65_536 + 41 * 49_280);
    // Apply works, without tombstones.
    assert_eq!(apply(&mut s, &Rec::tomb(b"b", 100)), Applied::Applied);
    assert_eq!((state(&s, b"b"), s.stats().tombstones), (None, 0));
    s.verify();
}

#[test]
fn hybrid_tombstones_take_their_share_out_of_the_page_cap() {
    let mut s = make(StoreConfig {
        tombstone_share: 4,
        ..hybrid_cfg(4 * MIB)
    });
    let big = vec![b'x'; 500_000];
    for i in 0..20 {
        s.store(StoreMode::Set, &[i], key_hash(&[i]), &big, 0, 0, 0)
            .unwrap();
    }
    assert_eq!(s.stats().total_malloced, 3 * MIB as u64);
    assert_eq!(s.stats().limit_maxbytes, 4 * MIB as u64);
    assert!(s.set_memory_limit(8 * MIB));
    for i in 20..60 {
        s.store(StoreMode::Set, &[i], key_hash(&[i]), &big, 0, 0, 0)
            .unwrap();
    }
    assert_eq!(s.stats().total_malloced, 6 * MIB as u64);
    s.verify();
    let zero = Store::new(StoreConfig {
        tombstone_share: 0,
        ..hybrid_cfg(4 * MIB)
    });
    assert!(zero.is_err());
}

// ---- apply ----

#[test]
fn apply_newer_wins_older_and_equal_do_nothing() {
    let mut s = hybrid();
    let v = set(&mut s, b"k", b"local");
    assert_eq!(
        apply(&mut s, &Rec::item(b"k", b"old", v - 1)),
        Applied::Older
    );
    assert_eq!(get(&mut s, b"k").as_deref(), Some(&b"local"[..]));
    let same = state(&s, b"k").unwrap();
    assert_eq!(apply(&mut s, &same), Applied::Older);
    let newer = Rec {
        flags: 7,
        exptime: T0 + 100,
        ..Rec::item(b"k", b"new", future(1))
    };
    assert_eq!(apply(&mut s, &newer), Applied::Applied);
    // Stored as sent: the record's version, flags and absolute expiry.
    assert_eq!(state(&s, b"k"), Some(newer.clone()));
    assert_eq!(s.peek(b"k", key_hash(b"k")).unwrap().ttl, Some(100));
    // A missing key takes any valid record; invalid versions are refused.
    assert_eq!(apply(&mut s, &Rec::item(b"m", b"v", 5)), Applied::Applied);
    assert_eq!(apply(&mut s, &Rec::item(b"z", b"v", 0)), Applied::Older);
    assert_eq!(
        apply(&mut s, &Rec::item(b"z", b"v", CAS_MASK + 1)),
        Applied::Older
    );
    assert_eq!(
        apply(&mut s, &Rec::item(b"", b"v", 9)),
        Applied::Failed(StoreError::BadKey)
    );
    s.verify();
}

#[test]
fn equal_versions_converge_in_either_order() {
    let v = future(0);
    let base = Rec::item(b"k", b"bbb", v);
    let variants = [
        Rec::item(b"k", b"aaa", v),
        Rec::item(b"k", b"bbbb", v),
        Rec {
            flags: 1,
            ..base.clone()
        },
        Rec {
            exptime: T0 + 50,
            ..base.clone()
        },
        Rec::tomb(b"k", v),
    ];
    for other in &variants {
        let (mut x, mut y) = (hybrid(), hybrid());
        assert_eq!(apply(&mut x, &base), Applied::Applied);
        apply(&mut x, other);
        assert_eq!(apply(&mut y, other), Applied::Applied);
        apply(&mut y, &base);
        assert_eq!(state(&x, b"k"), state(&y, b"k"), "{other:?}");
        // The winner is the greater of the two, whichever came first.
        let winner = if other.view().beats(&base.view()) {
            other
        } else {
            &base
        };
        assert_eq!(state(&x, b"k").as_ref(), Some(winner));
        x.verify();
        y.verify();
    }
}

#[test]
fn applying_twice_is_applying_once() {
    let mut s = hybrid();
    let r = Rec::item(b"k", b"v", future(0));
    assert_eq!(apply(&mut s, &r), Applied::Applied);
    let (stats, st) = (s.stats(), state(&s, b"k"));
    assert_eq!(apply(&mut s, &r), Applied::Older);
    assert_eq!((s.stats(), state(&s, b"k")), (stats, st));
    let t = Rec::tomb(b"k", future(1));
    assert_eq!(apply(&mut s, &t), Applied::Applied);
    let (stats, st) = (s.stats(), state(&s, b"k"));
    assert_eq!(st, Some(t.clone()));
    assert_eq!(apply(&mut s, &t), Applied::Older);
    assert_eq!((s.stats(), state(&s, b"k")), (stats, st));
}

#[test]
fn apply_moves_item_gauges_but_no_command_counters() {
    let mut s = hybrid();
    set(&mut s, b"gone", b"v");
    let before = s.stats();
    let classes_before = s.slab_stats();
    for i in 0..20u64 {
        apply(
            &mut s,
            &Rec::item(format!("k{i}").as_bytes(), b"value", future(i)),
        );
    }
    apply(&mut s, &Rec::tomb(b"gone", future(99)));
    apply(&mut s, &Rec::tomb(b"never", future(100)));
    let after = s.stats();
    assert_eq!(after.curr_items, before.curr_items + 19);
    assert_eq!(after.total_items, before.total_items + 20);
    assert!(after.bytes > before.bytes);
    assert_eq!(after.tombstones, 2);
    let commands = |x: &StoreStats| {
        [
            x.get_hits,
            x.get_misses,
            x.get_expired,
            x.get_flushed,
            x.delete_hits,
            x.delete_misses,
            x.incr_hits,
            x.incr_misses,
            x.decr_hits,
            x.decr_misses,
            x.cas_hits,
            x.cas_misses,
            x.cas_badval,
            x.touch_hits,
            x.touch_misses,
        ]
    };
    assert_eq!(commands(&after), commands(&before));
    let set_cmds = |c: &[SlabClassStats]| c.iter().map(|k| k.set_cmds).sum::<u64>();
    assert_eq!(set_cmds(&s.slab_stats()), set_cmds(&classes_before));
    // Applied items are not marked fetched.
    assert!(!s.peek(b"k0", key_hash(b"k0")).unwrap().fetched);
}

#[test]
fn apply_raises_the_clock_past_the_record() {
    let mut s = hybrid();
    let v = future(5);
    apply(&mut s, &Rec::item(b"k", b"peer", v));
    assert!(set(&mut s, b"k", b"local") > v);
    assert!(set(&mut s, b"other", b"x") > v);
    s.observe_version(v + 1000);
    assert!(set(&mut s, b"k", b"again") > v + 1000);
    // An older record neither wins nor lowers the clock.
    let now = state(&s, b"k").unwrap().version;
    assert_eq!(apply(&mut s, &Rec::item(b"k", b"x", v)), Applied::Older);
    s.delete(b"k", key_hash(b"k"), 0).unwrap();
    assert!(state(&s, b"k").unwrap().version > now);
}

#[test]
fn an_expired_record_removes_the_older_item_and_is_not_stored() {
    let mut s = hybrid();
    set(&mut s, b"k", b"local");
    let dead = Rec {
        exptime: T0 - 1,
        ..Rec::item(b"k", b"peer", future(0))
    };
    assert_eq!(apply(&mut s, &dead), Applied::Applied);
    assert_eq!((get(&mut s, b"k"), state(&s, b"k")), (None, None));
    assert_eq!(s.stats().curr_items, 0);
    // An older tombstone stays: it still guards against older writes.
    set(&mut s, b"t", b"v");
    del(&mut s, b"t");
    let tomb = state(&s, b"t").unwrap();
    let dead = Rec {
        exptime: T0,
        ..Rec::item(b"t", b"peer", tomb.version + 1)
    };
    assert_eq!(apply(&mut s, &dead), Applied::Applied);
    assert_eq!(state(&s, b"t"), Some(tomb));
    s.verify();
}

#[test]
fn an_oversized_record_fails_as_a_set_would() {
    let mut s = hybrid();
    set(&mut s, b"k", b"local");
    let big = Rec::item(b"k", &vec![b'x'; 2 * MIB], future(0));
    assert_eq!(apply(&mut s, &big), Applied::Failed(StoreError::TooLarge));
    assert_eq!(get(&mut s, b"k"), None);
    assert_eq!(s.stats().store_too_large, 1);
}

#[test]
fn an_applied_item_may_be_lent_and_replaced() {
    let mut s = hybrid();
    set(&mut s, b"k", b"lent value");
    let item = s.get(b"k", key_hash(b"k")).unwrap().item;
    let lent = s.lend(item);
    assert_eq!(
        apply(&mut s, &Rec::item(b"k", b"new value!", future(0))),
        Applied::Applied
    );
    // SAFETY: the loan keeps the old chunk's bytes in place and unchanged until `end_loan`.
    let old = unsafe { std::slice::from_raw_parts(lent.ptr, lent.len) }.to_vec();
    assert_eq!(old, b"lent value");
    s.end_loan(item);
    assert_eq!(get(&mut s, b"k").as_deref(), Some(&b"new value!"[..]));
    s.verify();
}

#[test]
fn apply_touch_needs_the_same_version() {
    let mut s = hybrid();
    let v = set(&mut s, b"k", b"v");
    let h = key_hash(b"k");
    assert_eq!(s.apply_touch(b"k", h, v + 1, T0 + 10), Applied::Older);
    assert_eq!(s.peek(b"k", h).unwrap().ttl, None);
    assert_eq!(s.apply_touch(b"k", h, v, T0 + 10), Applied::Applied);
    assert_eq!(s.peek(b"k", h).unwrap().ttl, Some(10));
    assert_eq!(state(&s, b"k").unwrap().version, v);
    assert_eq!(s.stats().touch_hits, 0);
    assert_eq!(s.apply_touch(b"k", h, v, 0), Applied::Applied);
    assert_eq!(s.peek(b"k", h).unwrap().ttl, None);
    // A past time expires it.
    assert_eq!(s.apply_touch(b"k", h, v, T0 - 5), Applied::Applied);
    assert_eq!(get(&mut s, b"k"), None);
    assert_eq!(
        s.apply_touch(b"none", key_hash(b"none"), v, 0),
        Applied::Older
    );
}

// ---- tombstones ----

#[test]
fn a_local_delete_leaves_a_tombstone_that_blocks_older_writes_only() {
    let mut s = hybrid();
    let v = set(&mut s, b"k", b"v");
    del(&mut s, b"k");
    let t = state(&s, b"k").unwrap();
    assert!(t.deleted && t.version > v && t.value.is_empty());
    assert_eq!((t.flags, t.exptime), (0, 0));
    // Gets never see it.
    assert_eq!(get(&mut s, b"k"), None);
    assert_eq!(s.peek(b"k", key_hash(b"k")), Err(StoreError::NotFound));
    assert_eq!(s.delete(b"k", key_hash(b"k"), 0), Err(StoreError::NotFound));
    let stats = s.stats();
    assert_eq!(stats.tombstones, 1);
    assert_eq!(stats.tombstone_bytes, (1 + TOMBSTONE_OVERHEAD) as u64);
    // A late set from before the delete stays out.
    let late = Rec::item(b"k", b"late", t.version - 1);
    assert_eq!(apply(&mut s, &late), Applied::Older);
    assert_eq!(get(&mut s, b"k"), None);
    // A newer one goes in and takes the tombstone's place.
    let newer = Rec::item(b"k", b"newer", t.version + 1);
    assert_eq!(apply(&mut s, &newer), Applied::Applied);
    assert_eq!(get(&mut s, b"k").as_deref(), Some(&b"newer"[..]));
    assert_eq!(s.stats().tombstones, 0);
    s.verify();
}

#[test]
fn local_writes_of_a_deleted_key_drop_its_tombstone() {
    let mut s = hybrid();
    let h = key_hash(b"k");
    for write in 0..4 {
        set(&mut s, b"k", b"1");
        del(&mut s, b"k");
        let t = state(&s, b"k").unwrap().version;
        match write {
            0 => s.store(StoreMode::Add, b"k", h, b"2", 0, 0, 0).map(|_| ()),
            1 => s.store(StoreMode::Set, b"k", h, b"2", 0, 0, 0).map(|_| ()),
            2 => s
                .arith(ArithOp::Incr, b"k", h, 1, Some((2, 0)), 0)
                .map(|_| ()),
            _ => s
                .fetch(
                    b"k",
                    h,
                    FetchOptions {
                        vivify: Some(30),
                        ..FetchOptions::default()
                    },
                )
                .map(|_| ()),
        }
        .unwrap();
        let now = state(&s, b"k").unwrap();
        assert!(!now.deleted && now.version > t, "write {write}");
        assert_eq!(s.stats().tombstones, 0);
    }
    // Replace, append and prepend find no item: nothing changes.
    del(&mut s, b"k");
    for mode in [StoreMode::Replace, StoreMode::Append, StoreMode::Prepend] {
        assert!(s.store(mode, b"k", h, b"x", 0, 0, 0).is_err());
    }
    assert!(state(&s, b"k").unwrap().deleted);
    s.verify();
}

#[test]
fn expiry_eviction_and_misses_leave_no_tombstones() {
    let mut s = make(StoreConfig {
        memory_limit: 2 * MIB,
        max_item_size: MIB / 2,
        ..hybrid_cfg(2 * MIB)
    });
    let h = key_hash(b"ttl");
    s.store(StoreMode::Set, b"ttl", h, b"v", 0, 5, 0).unwrap();
    s.set_time(T0 + 5);
    assert_eq!(s.delete(b"ttl", h, 0), Err(StoreError::NotFound));
    assert_eq!(state(&s, b"ttl"), None);
    let big = vec![b'x'; 400_000];
    for i in 0..20u8 {
        s.store(StoreMode::Set, &[i], key_hash(&[i]), &big, 0, 0, 0)
            .unwrap();
    }
    assert!(s.stats().evictions > 0);
    assert_eq!(s.stats().tombstones, 0);
    // A refused set that removed the old value leaves one, as a delete would.
    let k = [19u8];
    let too_big = vec![b'x'; MIB];
    let r = s.store(StoreMode::Set, &k, key_hash(&k), &too_big, 0, 0, 0);
    assert_eq!(r, Err(StoreError::TooLarge));
    assert!(state(&s, &k).unwrap().deleted);
    s.verify();
}

#[test]
fn tombstones_go_when_old_enough() {
    let mut s = make(StoreConfig {
        tombstone_secs: 100,
        ..hybrid_cfg(8 * MIB)
    });
    set(&mut s, b"a", b"v");
    del(&mut s, b"a");
    let t = state(&s, b"a").unwrap();
    s.set_time(T0 + 50);
    set(&mut s, b"b", b"v");
    del(&mut s, b"b");
    s.set_time(T0 + 99);
    s.reclaim(1000);
    assert_eq!(s.stats().tombstones, 2);
    s.set_time(T0 + 100);
    s.reclaim(1000);
    assert_eq!((state(&s, b"a"), s.stats().tombstones), (None, 1));
    assert_eq!(s.stats().tombstones_reclaimed, 1);
    // Forgotten: an older write of the key goes in again.
    let late = Rec::item(b"a", b"late", t.version - 1);
    assert_eq!(apply(&mut s, &late), Applied::Applied);
    // The reclaim step is bounded.
    s.set_time(T0 + 500);
    for i in 0..10 {
        let k = format!("x{i}");
        set(&mut s, k.as_bytes(), b"v");
        del(&mut s, k.as_bytes());
    }
    s.set_time(T0 + 1000);
    s.reclaim(4);
    assert_eq!(s.stats().tombstones, 7);
    s.reclaim(1000);
    assert_eq!(s.stats().tombstones, 0);
    assert_eq!(s.stats().tombstones_reclaimed, 12);
    s.verify();
}

#[test]
fn a_full_tombstone_budget_drops_the_oldest() {
    // A budget of four 2-byte keys.
    let limit = 4 * MIB;
    let share = (limit / (4 * (2 + TOMBSTONE_OVERHEAD) + 1)) as u32;
    let mut s = make(StoreConfig {
        tombstone_share: share,
        ..hybrid_cfg(limit)
    });
    for i in 0..10 {
        let k = format!("k{i}");
        set(&mut s, k.as_bytes(), b"v");
        del(&mut s, k.as_bytes());
    }
    let stats = s.stats();
    assert_eq!((stats.tombstones, stats.tombstones_reclaimed), (4, 6));
    assert!(stats.tombstone_bytes <= (limit / share as usize) as u64);
    for i in 0..10 {
        let k = format!("k{i}");
        assert_eq!(state(&s, k.as_bytes()).is_some(), i >= 6, "{k}");
    }
    // A lower limit shrinks the budget too.
    assert!(s.set_memory_limit(limit / 2));
    assert_eq!(s.stats().tombstones, 2);
    s.verify();
}

#[test]
fn flush_kills_versions_below_the_clock_and_keeps_tombstones() {
    let mut s = hybrid();
    set(&mut s, b"a", b"v");
    set(&mut s, b"t", b"v");
    del(&mut s, b"t");
    let tomb = state(&s, b"t").unwrap();
    // A peer's write from just before the flush, not yet arrived.
    let before = wall_version();
    s.flush(0);
    assert_eq!(get(&mut s, b"a"), None);
    assert_eq!(state(&s, b"t"), Some(tomb.clone()));
    assert_eq!(
        apply(&mut s, &Rec::item(b"p", b"v", before - 1)),
        Applied::Older
    );
    assert_eq!(state(&s, b"p"), None);
    // Written after the flush: stays, locally and replicated.
    set(&mut s, b"a", b"after");
    assert_eq!(get(&mut s, b"a").as_deref(), Some(&b"after"[..]));
    assert_eq!(
        apply(&mut s, &Rec::item(b"p", b"v", future(0))),
        Applied::Applied
    );
    assert!(get(&mut s, b"p").is_some());
    // A delayed flush in the store's time.
    s.flush(10);
    s.set_time(T0 + 9);
    assert!(get(&mut s, b"a").is_some());
    s.set_time(T0 + 10);
    assert_eq!((get(&mut s, b"a"), get(&mut s, b"p")), (None, None));
    set(&mut s, b"a", b"later");
    assert!(get(&mut s, b"a").is_some());
    s.verify();
}

// ---- resync walk ----

#[test]
fn the_resync_walk_reports_every_item_and_tombstone_once() {
    let mut s = make(hybrid_cfg(16 * MIB));
    let mut want = Vec::new();
    for i in 0..300 {
        let k = format!("k{i}");
        let v = vec![b'v'; [1, 500, 5000, 100_000][i % 4]];
        set(&mut s, k.as_bytes(), &v);
        if i % 6 == 0 {
            del(&mut s, k.as_bytes());
        }
        want.push(state(&s, k.as_bytes()).unwrap());
    }
    s.store(StoreMode::Set, b"dead", key_hash(b"dead"), b"v", 0, -1, 0)
        .unwrap();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    for budget in [1, 7, 100, 1 << 20] {
        let got = walk_all(&s, budget);
        // Items first, then tombstones.
        let first_tomb = got.iter().position(|r| r.deleted).unwrap();
        assert!(got[first_tomb..].iter().all(|r| r.deleted));
        let mut got = got;
        got.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(got, want, "budget {budget}");
    }
    // An empty store: one step, nothing reported.
    let empty = hybrid();
    assert!(walk_all(&empty, 10).is_empty());
    assert_eq!(empty.walk_replicas(ReplicaCursor::START, 10, |_| ()), None);
}

// ---- convergence ----

/// One step of the random exchange between two hosts.
#[derive(Debug, Clone)]
enum Op {
    /// A client write on a host: (host, mode, key, value, exptime).
    Write(usize, StoreMode, usize, Vec<u8>, i64),
    Delete(usize, usize),
    Incr(usize, usize),
    /// Deliver the pending record (index modulo their number) to its host.
    Deliver(usize),
    /// Deliver any record sent so far again.
    Redeliver(usize),
    Advance(u64),
}

const KEYS: usize = 6;

fn op() -> impl Strategy<Value = Op> {
    let host = 0usize..2;
    let key = 0usize..KEYS;
    let mode = prop_oneof![
        4 => Just(StoreMode::Set),
        1 => Just(StoreMode::Add),
        1 => Just(StoreMode::Replace),
        1 => Just(StoreMode::Append),
        1 => Just(StoreMode::Prepend),
    ];
    let value = prop_oneof![
        (0usize..40, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        (0u64..100).prop_map(|n| n.to_string().into_bytes()),
    ];
    // Expiry far beyond what the test advances, so that nothing expires on one host only.
    let exptime = prop_oneof![3 => Just(0i64), 1 => Just(100_000i64)];
    prop_oneof![
        6 => (host.clone(), mode, key.clone(), value, exptime)
            .prop_map(|(h, m, k, v, e)| Op::Write(h, m, k, v, e)),
        2 => (host.clone(), key.clone()).prop_map(|(h, k)| Op::Delete(h, k)),
        1 => (host, key).prop_map(|(h, k)| Op::Incr(h, k)),
        6 => any::<usize>().prop_map(Op::Deliver),
        2 => any::<usize>().prop_map(Op::Redeliver),
        1 => (0u64..5).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Two hosts write the same keys and send each other every resulting state; delivered in
    /// any order, duplicated, then all of them: both end with the same state for every key, and
    /// it is the greatest state any host produced for that key.
    #[test]
    fn two_hosts_converge_whatever_the_delivery_order(ops in proptest::collection::vec(op(), 1..200)) {
        let mut hosts = [hybrid(), hybrid()];
        // Records on their way: (destination, record); and all ever sent.
        let mut pending: Vec<(usize, Rec)> = Vec::new();
        let mut sent: Vec<(usize, Rec)> = Vec::new();
        let key_of = |k: usize| format!("key{k}").into_bytes();
        for op in &ops {
            let mutated = match op {
                Op::Write(h, mode, k, v, e) => {
                    let key = key_of(*k);
                    let r = hosts[*h].store(*mode, &key, key_hash(&key), v, 0, *e, 0);
                    r.is_ok().then_some((*h, key))
                }
                Op::Delete(h, k) => {
                    let key = key_of(*k);
                    hosts[*h].delete(&key, key_hash(&key), 0).is_ok().then_some((*h, key))
                }
                Op::Incr(h, k) => {
                    let key = key_of(*k);
                    let r = hosts[*h].arith(ArithOp::Incr, &key, key_hash(&key), 1, None, 0);
                    r.is_ok().then_some((*h, key))
                }
                Op::Deliver(i) if !pending.is_empty() => {
                    let (to, rec) = pending.swap_remove(i % pending.len());
                    apply(&mut hosts[to], &rec);
                    None
                }
                Op::Redeliver(i) if !sent.is_empty() => {
                    let (to, rec) = sent[i % sent.len()].clone();
                    apply(&mut hosts[to], &rec);
                    None
                }
                Op::Advance(secs) => {
                    for s in &mut hosts {
                        s.set_time(s.now() + secs);
                        s.reclaim(100);
                    }
                    None
                }
                _ => None,
            };
            if let Some((h, key)) = mutated {
                let rec = state(&hosts[h], &key).expect("a mutation leaves a state");
                pending.push((1 - h, rec.clone()));
                sent.push((1 - h, rec));
            }
        }
        for (to, rec) in pending.drain(..) {
            apply(&mut hosts[to], &rec);
        }
        for k in 0..KEYS {
            let key = key_of(k);
            let a = state(&hosts[0], &key);
            prop_assert_eq!(&a, &state(&hosts[1], &key), "key {}", k);
            let best = sent
                .iter()
                .map(|(_, r)| r)
                .filter(|r| r.key == key)
                .fold(None::<&Rec>, |b, r| match b {
                    Some(b) if !r.view().beats(&b.view()) => Some(b),
                    _ => Some(r),
                });
            prop_assert_eq!(a.as_ref(), best);
        }
        for s in &hosts {
            s.verify();
            prop_assert_eq!(s.stats().evictions, 0);
        }
    }
}
