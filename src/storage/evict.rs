//! Eviction policies behind one seam, the [`Evictor`] trait.
//!
//! The store tells the policy about every item it links, reads, unlinks or relocates, and asks it
//! for victim candidates of one slab class when that class has no free chunk and no page can be
//! had. The policy owns the two policy words of each item header (and whatever it keeps outside
//! the slab); it never allocates or frees chunks. A policy is one type and one [`Policy`]
//! variant, without touching the allocator.
//!
//! Rewrites (append, prepend, incr, decr, cas, and a meta invalidation that needs a CAS trailer)
//! store a new item for the same key, often in a new chunk: the store asks the policy what the
//! old item [`Evictor::carry`]s before it unlinks it, and links the new one with
//! [`Evictor::on_rewrite`], so a key kept hot by writes alone keeps its recency or frequency
//! (memcached: an append is a fetch and a store). A plain set of an existing key is a new item
//! (`on_insert`), as in memcached, where it lands at the LRU head.
//!
//! - LRU: per-class doubly linked list (word 0 = prev, word 1 = next). A hit only sets an
//!   "active" mark in the top bit of word 0 (ids fit in 31 bits), touching no other item; the
//!   victim search gives active items at the tail a second chance by moving them to the head
//!   (lazy promotion, as memcached's segmented LRU does with `ITEM_ACTIVE`). So a hit costs no
//!   extra cache misses, and eviction order is LRU at the resolution of one pass over the list.
//! - FIFO: the same list, no mark on a hit.
//! - LFU: Redis-style approximate LFU: word 0 holds a logarithmic 8-bit frequency counter that
//!   decays by one per idle minute; victims are the least frequent of a random sample.
//! - Random: victims are a random sample of the class.
//! - S3-FIFO: per class a small and a main FIFO, a 2-bit frequency per item and a ghost of recent
//!   small-queue victims' key hashes; see `s3fifo.rs` for the algorithm, the header layout (the
//!   queue bit lives in a side bitmap) and the ghost's memory.
//!
//! What a rewrite carries: LRU puts the new item at the head marked active (hit), FIFO at the
//! head unmarked (a rewrite is a new insertion, so FIFO keeps insertion order by definition);
//! LFU keeps the decayed counter and counts one access; S3-FIFO keeps the queue and the
//! frequency, plus one access; random keeps nothing.

mod s3fifo;

use super::item::{self, ItemId, NIL};
use super::slab::Slab;
use super::EvictionPolicy;
#[cfg(test)]
pub(crate) use s3fifo::freq as s3fifo_freq;
pub(crate) use s3fifo::S3Fifo;

/// How many items a victim search looks at (memcached looks 5 deep into its LRU tail).
pub(crate) const SEARCH_DEPTH: usize = 5;

/// Start value of a new item's LFU counter, so new items are not evicted first.
const LFU_INIT: u32 = 5;
/// Growth damping of the LFU counter (Redis `lfu-log-factor`).
const LFU_LOG_FACTOR: u64 = 10;
/// Idle seconds per counter decrement (Redis `lfu-decay-time`, one minute).
const LFU_DECAY_SECS: u32 = 60;

/// Policy state a rewrite takes from the item it replaces to the new one (policy-defined bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Carry(u32);

/// The seam between the store and an eviction policy.
pub(crate) trait Evictor {
    /// A new item was linked into `class`.
    fn on_insert(&mut self, slab: &mut Slab, class: usize, id: ItemId);
    /// An item was read or touched; called before the store updates its access time.
    fn on_access(&mut self, slab: &mut Slab, class: usize, id: ItemId, now: u32);
    /// An item is being unlinked (its chunk is freed right after).
    fn on_remove(&mut self, slab: &mut Slab, class: usize, id: ItemId);
    /// A live item is being evicted to make room; `on_remove` follows.
    fn on_evict(&mut self, _slab: &mut Slab, _class: usize, _id: ItemId) {}
    /// What linked item `id` passes on to the item a rewrite of it stores (read before the
    /// store unlinks or overwrites it).
    fn carry(&self, slab: &Slab, class: usize, id: ItemId, now: u32) -> Carry;
    /// Links a rewritten item, instead of `on_insert`, with what the replaced item carried.
    fn on_rewrite(&mut self, slab: &mut Slab, class: usize, id: ItemId, carry: Carry, now: u32);
    /// An item's bytes, header included, were copied from `old` to `new` in the same class.
    fn on_move(&mut self, slab: &mut Slab, class: usize, old: ItemId, new: ItemId);
    /// Up to `n` victim candidates of a full `class`, the most evictable first (the policy may
    /// reorder its own links on the way).
    fn candidates(
        &mut self,
        slab: &mut Slab,
        class: usize,
        n: usize,
        now: u32,
        out: &mut Vec<ItemId>,
    );
    /// The item the policy would consider oldest in `class`, when it keeps an order.
    fn oldest(&self, class: usize) -> Option<ItemId>;
}

/// The store's policy: one variant per [`EvictionPolicy`].
pub(crate) enum Policy {
    /// Least recently used.
    Lru(Lists),
    /// First in, first out.
    Fifo(Lists),
    /// Approximate least frequently used.
    Lfu(Lfu),
    /// Random victim.
    Random(Sampler),
    /// S3-FIFO: small, main and ghost queues.
    S3Fifo(S3Fifo),
}

impl Policy {
    /// The policy for a store with `classes` slab classes.
    pub(crate) fn new(kind: EvictionPolicy, classes: usize, seed: u64) -> Policy {
        match kind {
            EvictionPolicy::Lru => Policy::Lru(Lists::new(classes, true)),
            EvictionPolicy::Fifo => Policy::Fifo(Lists::new(classes, false)),
            EvictionPolicy::Lfu => Policy::Lfu(Lfu {
                sampler: Sampler::new(seed),
            }),
            EvictionPolicy::Random => Policy::Random(Sampler::new(seed)),
            EvictionPolicy::S3Fifo => Policy::S3Fifo(S3Fifo::new(classes)),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Policy::Lru($p) | Policy::Fifo($p) => $e,
            Policy::Lfu($p) => $e,
            Policy::Random($p) => $e,
            Policy::S3Fifo($p) => $e,
        }
    };
}

impl Evictor for Policy {
    #[inline]
    fn on_insert(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        dispatch!(self, p => p.on_insert(slab, class, id))
    }
    #[inline]
    fn on_access(&mut self, slab: &mut Slab, class: usize, id: ItemId, now: u32) {
        dispatch!(self, p => p.on_access(slab, class, id, now))
    }
    #[inline]
    fn on_remove(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        dispatch!(self, p => p.on_remove(slab, class, id))
    }
    fn on_evict(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        dispatch!(self, p => p.on_evict(slab, class, id))
    }
    fn carry(&self, slab: &Slab, class: usize, id: ItemId, now: u32) -> Carry {
        dispatch!(self, p => p.carry(slab, class, id, now))
    }
    fn on_rewrite(&mut self, slab: &mut Slab, class: usize, id: ItemId, carry: Carry, now: u32) {
        dispatch!(self, p => p.on_rewrite(slab, class, id, carry, now))
    }
    fn on_move(&mut self, slab: &mut Slab, class: usize, old: ItemId, new: ItemId) {
        dispatch!(self, p => p.on_move(slab, class, old, new))
    }
    fn candidates(
        &mut self,
        slab: &mut Slab,
        class: usize,
        n: usize,
        now: u32,
        out: &mut Vec<ItemId>,
    ) {
        dispatch!(self, p => p.candidates(slab, class, n, now, out))
    }
    fn oldest(&self, class: usize) -> Option<ItemId> {
        dispatch!(self, p => p.oldest(class))
    }
}

#[cfg(test)]
impl Policy {
    /// Items on a class's list, head to tail, checking the back links (list policies only; for
    /// S3-FIFO the small queue, then the main one).
    pub(crate) fn list(&self, slab: &Slab, class: usize) -> Option<Vec<ItemId>> {
        if let Policy::S3Fifo(p) = self {
            let (mut small, main) = p.queues(slab, class);
            small.extend(main);
            return Some(small);
        }
        let (Policy::Lru(l) | Policy::Fifo(l)) = self else {
            return None;
        };
        let (mut out, mut back, mut id) = (Vec::new(), NIL, l.ends[class].0);
        while id != NIL {
            assert_eq!(prev(slab.chunk(id)), back);
            out.push(id);
            back = id;
            id = next(slab.chunk(id));
        }
        assert_eq!(l.ends[class].1, back);
        Some(out)
    }
}

/// Top bit of word 0: hit since the item was last placed at the head (LRU).
const ACTIVE: u32 = 1 << 31;
/// Link bits of word 0.
const LINK: u32 = !ACTIVE;
/// Most active items one victim search moves to the head before it takes the tail anyway.
const MAX_SECOND_CHANCES: usize = 64;

#[inline]
fn prev(c: &[u8]) -> ItemId {
    match item::w0(c) & LINK {
        LINK => NIL,
        id => id,
    }
}

#[inline]
fn set_prev(c: &mut [u8], id: ItemId) {
    item::set_w0(c, (item::w0(c) & ACTIVE) | (id & LINK));
}

#[inline]
fn next(c: &[u8]) -> ItemId {
    item::w1(c)
}

#[inline]
fn set_next(c: &mut [u8], id: ItemId) {
    item::set_w1(c, id);
}

/// Per-class doubly linked lists, most recent at the head (LRU and FIFO).
pub(crate) struct Lists {
    /// (head, tail) per class.
    ends: Vec<(ItemId, ItemId)>,
    mark_on_access: bool,
}

impl Lists {
    fn new(classes: usize, mark_on_access: bool) -> Lists {
        Lists {
            ends: vec![(NIL, NIL); classes],
            mark_on_access,
        }
    }

    /// Links `id` at the head, inactive.
    fn push_head(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        let head = self.ends[class].0;
        let c = slab.chunk_mut(id);
        item::set_w0(c, NIL & LINK);
        set_next(c, head);
        if head != NIL {
            set_prev(slab.chunk_mut(head), id);
        } else {
            self.ends[class].1 = id;
        }
        self.ends[class].0 = id;
    }

    fn unlink(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        let c = slab.chunk(id);
        let (p, n) = (prev(c), next(c));
        if p == NIL {
            self.ends[class].0 = n;
        } else {
            set_next(slab.chunk_mut(p), n);
        }
        if n == NIL {
            self.ends[class].1 = p;
        } else {
            set_prev(slab.chunk_mut(n), p);
        }
    }
}

impl Evictor for Lists {
    fn on_insert(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        self.push_head(slab, class, id);
    }

    #[inline]
    fn on_access(&mut self, slab: &mut Slab, _class: usize, id: ItemId, _now: u32) {
        if self.mark_on_access {
            let c = slab.chunk_mut(id);
            let w = item::w0(c);
            if w & ACTIVE == 0 {
                item::set_w0(c, w | ACTIVE);
            }
        }
    }

    fn on_remove(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        self.unlink(slab, class, id);
    }

    fn carry(&self, _: &Slab, _: usize, _: ItemId, _: u32) -> Carry {
        Carry(0)
    }

    fn on_rewrite(&mut self, slab: &mut Slab, class: usize, id: ItemId, _: Carry, now: u32) {
        // The head, as memcached links a rewritten item; for LRU also a hit, so the key keeps
        // its second chance.
        self.push_head(slab, class, id);
        self.on_access(slab, class, id, now);
    }

    fn on_move(&mut self, slab: &mut Slab, class: usize, old: ItemId, new: ItemId) {
        let c = slab.chunk(new);
        let (p, n) = (prev(c), next(c));
        if p == NIL {
            self.ends[class].0 = new;
        } else {
            debug_assert_eq!(next(slab.chunk(p)), old);
            set_next(slab.chunk_mut(p), new);
        }
        if n == NIL {
            self.ends[class].1 = new;
        } else {
            set_prev(slab.chunk_mut(n), new);
        }
    }

    fn candidates(
        &mut self,
        slab: &mut Slab,
        class: usize,
        n: usize,
        _now: u32,
        out: &mut Vec<ItemId>,
    ) {
        let mut chances = 0;
        let mut id = self.ends[class].1;
        while id != NIL && out.len() < n {
            let c = slab.chunk(id);
            let before = prev(c);
            if item::w0(c) & ACTIVE != 0 && chances < MAX_SECOND_CHANCES {
                // Hit since it was placed: second chance at the head, mark cleared.
                chances += 1;
                self.unlink(slab, class, id);
                self.push_head(slab, class, id);
            } else {
                out.push(id);
            }
            id = before;
        }
    }

    fn oldest(&self, class: usize) -> Option<ItemId> {
        let tail = self.ends[class].1;
        (tail != NIL).then_some(tail)
    }
}

/// xorshift64*: a small deterministic generator for sampling (quality is ample for victim choice).
pub(crate) struct Sampler {
    state: u64,
}

impl Sampler {
    fn new(seed: u64) -> Sampler {
        Sampler {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// The next random number.
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Up to `n` distinct random items of `class` (a full class, so chunks are mostly used).
    fn sample(&mut self, slab: &Slab, class: usize, n: usize, out: &mut Vec<ItemId>) {
        for _ in 0..n * 2 {
            if out.len() >= n {
                break;
            }
            let Some(id) = slab.random_chunk(class, self.next()) else {
                return;
            };
            if item::key_len(slab.chunk(id)) != 0 && !out.contains(&id) {
                out.push(id);
            }
        }
    }
}

impl Evictor for Sampler {
    fn on_insert(&mut self, _: &mut Slab, _: usize, _: ItemId) {}
    fn on_access(&mut self, _: &mut Slab, _: usize, _: ItemId, _: u32) {}
    fn on_remove(&mut self, _: &mut Slab, _: usize, _: ItemId) {}
    fn carry(&self, _: &Slab, _: usize, _: ItemId, _: u32) -> Carry {
        Carry(0)
    }
    fn on_rewrite(&mut self, _: &mut Slab, _: usize, _: ItemId, _: Carry, _: u32) {}
    fn on_move(&mut self, _: &mut Slab, _: usize, _: ItemId, _: ItemId) {}
    fn candidates(
        &mut self,
        slab: &mut Slab,
        class: usize,
        n: usize,
        _now: u32,
        out: &mut Vec<ItemId>,
    ) {
        self.sample(slab, class, n, out);
    }
    fn oldest(&self, _: usize) -> Option<ItemId> {
        None
    }
}

/// Approximate LFU: a decaying logarithmic counter per item, least frequent of a sample evicted.
pub(crate) struct Lfu {
    sampler: Sampler,
}

/// The counter after `now - atime` idle seconds of decay.
fn lfu_decayed(c: &[u8], now: u32) -> u32 {
    let idle = now.saturating_sub(item::atime(c)) / LFU_DECAY_SECS;
    item::w0(c).saturating_sub(idle)
}

impl Evictor for Lfu {
    fn on_insert(&mut self, slab: &mut Slab, _: usize, id: ItemId) {
        let c = slab.chunk_mut(id);
        item::set_w0(c, LFU_INIT);
        item::set_w1(c, 0);
    }

    fn on_access(&mut self, slab: &mut Slab, _: usize, id: ItemId, now: u32) {
        let r = self.sampler.next();
        let c = slab.chunk_mut(id);
        let mut counter = lfu_decayed(c, now);
        if counter < 255 {
            let base = u64::from(counter.saturating_sub(LFU_INIT));
            // Increment with probability 1 / (base * factor + 1).
            if r.is_multiple_of(base * LFU_LOG_FACTOR + 1) {
                counter += 1;
            }
        }
        item::set_w0(c, counter);
    }

    fn on_remove(&mut self, _: &mut Slab, _: usize, _: ItemId) {}

    fn carry(&self, slab: &Slab, _: usize, id: ItemId, now: u32) -> Carry {
        Carry(lfu_decayed(slab.chunk(id), now))
    }

    fn on_rewrite(&mut self, slab: &mut Slab, class: usize, id: ItemId, carry: Carry, now: u32) {
        // The counter as it stood, plus this access (the new item's atime is now: no decay).
        let c = slab.chunk_mut(id);
        item::set_w0(c, carry.0);
        item::set_w1(c, 0);
        self.on_access(slab, class, id, now);
    }

    fn on_move(&mut self, _: &mut Slab, _: usize, _: ItemId, _: ItemId) {}

    fn candidates(
        &mut self,
        slab: &mut Slab,
        class: usize,
        n: usize,
        now: u32,
        out: &mut Vec<ItemId>,
    ) {
        self.sampler.sample(slab, class, n, out);
        out.sort_by_key(|&id| {
            let c = slab.chunk(id);
            (lfu_decayed(c, now), item::atime(c))
        });
    }

    fn oldest(&self, _: usize) -> Option<ItemId> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::item::Header;

    /// A slab and `n` items in class `C`, whose pages hold two chunks each, so that a few items
    /// fill the class (sampling policies assume a full class).
    fn slab_with(n: usize) -> (Slab, Vec<ItemId>) {
        let mut slab = Slab::new(1 << 20, 64 << 20, 1.25).unwrap();
        assert_eq!(slab.classes()[C].per_page, 2);
        let ids = (0..n)
            .map(|_| {
                if slab.classes()[C].free == 0 {
                    assert!(slab.grow(C));
                }
                let id = slab.pop_free(C).unwrap();
                Header::new(1, 1, 0, 0, 0).store(slab.chunk_mut(id));
                id
            })
            .collect();
        (slab, ids)
    }

    /// The class of 25 KiB chunks (two per 64 KiB page) with 1.25 growth from 64 bytes.
    const C: usize = 26;

    fn policy(kind: EvictionPolicy) -> Policy {
        Policy::new(kind, C + 2, 7)
    }

    fn cands(p: &mut Policy, slab: &mut Slab, n: usize) -> Vec<ItemId> {
        let mut out = Vec::new();
        p.candidates(slab, C, n, 100, &mut out);
        out
    }

    #[test]
    fn lru_evicts_least_recent_and_hits_bump() {
        let (mut slab, ids) = slab_with(4);
        let mut p = policy(EvictionPolicy::Lru);
        for &id in &ids {
            p.on_insert(&mut slab, C, id);
        }
        assert_eq!(cands(&mut p, &mut slab, 2), vec![ids[0], ids[1]]);
        p.on_access(&mut slab, C, ids[0], 1);
        assert_eq!(
            cands(&mut p, &mut slab, 4),
            vec![ids[1], ids[2], ids[3], ids[0]]
        );
        p.on_remove(&mut slab, C, ids[2]);
        assert_eq!(cands(&mut p, &mut slab, 4), vec![ids[1], ids[3], ids[0]]);
        assert_eq!(p.oldest(C), Some(ids[1]));
        assert_eq!(p.list(&slab, C).unwrap(), vec![ids[0], ids[3], ids[1]]);
    }

    #[test]
    fn second_chances_are_bounded_when_everything_is_active() {
        let n = MAX_SECOND_CHANCES + 10;
        let (mut slab, ids) = slab_with(n);
        let mut p = policy(EvictionPolicy::Lru);
        for &id in &ids {
            p.on_insert(&mut slab, C, id);
            p.on_access(&mut slab, C, id, 1);
        }
        // The first MAX_SECOND_CHANCES tail items move to the head; the next one is the victim.
        assert_eq!(cands(&mut p, &mut slab, 1), vec![ids[MAX_SECOND_CHANCES]]);
        assert_eq!(p.list(&slab, C).unwrap().len(), n);
        assert_eq!(p.oldest(C), Some(ids[MAX_SECOND_CHANCES]));
    }

    #[test]
    fn fifo_ignores_hits() {
        let (mut slab, ids) = slab_with(3);
        let mut p = policy(EvictionPolicy::Fifo);
        for &id in &ids {
            p.on_insert(&mut slab, C, id);
        }
        p.on_access(&mut slab, C, ids[0], 1);
        assert_eq!(cands(&mut p, &mut slab, 3), ids);
    }

    #[test]
    fn list_follows_a_moved_item() {
        let (mut slab, ids) = slab_with(4);
        let mut p = policy(EvictionPolicy::Lru);
        for &id in &ids[..3] {
            p.on_insert(&mut slab, C, id);
        }
        // Move the middle one into the fourth chunk, then the ends around.
        slab.copy_item(ids[1], ids[3]);
        p.on_move(&mut slab, C, ids[1], ids[3]);
        assert_eq!(cands(&mut p, &mut slab, 3), vec![ids[0], ids[3], ids[2]]);
        slab.copy_item(ids[0], ids[1]);
        p.on_move(&mut slab, C, ids[0], ids[1]);
        slab.copy_item(ids[2], ids[0]);
        p.on_move(&mut slab, C, ids[2], ids[0]);
        assert_eq!(cands(&mut p, &mut slab, 3), vec![ids[1], ids[3], ids[0]]);
    }

    #[test]
    fn lfu_prefers_the_least_frequent() {
        let (mut slab, ids) = slab_with(2);
        let mut p = policy(EvictionPolicy::Lfu);
        for &id in &ids {
            p.on_insert(&mut slab, C, id);
            item::set_atime(slab.chunk_mut(id), 100);
        }
        for _ in 0..200 {
            p.on_access(&mut slab, C, ids[1], 100);
        }
        assert!(item::w0(slab.chunk(ids[1])) > LFU_INIT);
        let c = cands(&mut p, &mut slab, 2);
        assert_eq!(c.first(), Some(&ids[0]));
    }

    #[test]
    fn lfu_counter_decays_with_idleness() {
        let (mut slab, ids) = slab_with(1);
        let mut p = policy(EvictionPolicy::Lfu);
        p.on_insert(&mut slab, C, ids[0]);
        item::set_atime(slab.chunk_mut(ids[0]), 0);
        assert_eq!(
            lfu_decayed(slab.chunk(ids[0]), 3 * LFU_DECAY_SECS),
            LFU_INIT - 3
        );
    }

    /// `n` S3-FIFO items with distinct one-byte keys, inserted in order.
    fn s3fifo_with(n: usize) -> (Slab, Vec<ItemId>, Policy) {
        let (mut slab, ids) = slab_with(n);
        let mut p = policy(EvictionPolicy::S3Fifo);
        for (i, &id) in ids.iter().enumerate() {
            slab.chunk_mut(id)[item::HEADER_SIZE] = i as u8;
            p.on_insert(&mut slab, C, id);
        }
        (slab, ids, p)
    }

    fn queues(p: &Policy, slab: &Slab) -> (Vec<ItemId>, Vec<ItemId>) {
        let Policy::S3Fifo(s) = p else { unreachable!() };
        s.queues(slab, C)
    }

    fn freq_of(slab: &Slab, id: ItemId) -> u32 {
        s3fifo::freq(slab.chunk(id))
    }

    #[test]
    fn s3fifo_evicts_unread_small_items_first_and_promotes_read_ones() {
        let (mut slab, ids, mut p) = s3fifo_with(10);
        assert_eq!(
            queues(&p, &slab).0,
            ids.iter().rev().copied().collect::<Vec<_>>()
        );
        p.on_access(&mut slab, C, ids[0], 1);
        p.on_access(&mut slab, C, ids[2], 1);
        // Read in the small queue: moved to the main one (frequency reset) on the way.
        assert_eq!(cands(&mut p, &mut slab, 2), vec![ids[1], ids[3]]);
        let (small, main) = queues(&p, &slab);
        assert_eq!(main, vec![ids[2], ids[0]]);
        assert_eq!(small.len(), 8);
        assert_eq!((freq_of(&slab, ids[0]), freq_of(&slab, ids[2])), (0, 0));
        assert_eq!(p.oldest(C), Some(ids[1]));
        // The store evicts the first; the second stays the next candidate.
        p.on_evict(&mut slab, C, ids[1]);
        p.on_remove(&mut slab, C, ids[1]);
        assert_eq!(cands(&mut p, &mut slab, 1), vec![ids[3]]);
        assert_eq!(p.list(&slab, C).unwrap().len(), 9);
    }

    #[test]
    fn s3fifo_main_reinserts_while_frequency_lasts() {
        let (mut slab, ids, mut p) = s3fifo_with(4);
        for &id in &ids {
            p.on_access(&mut slab, C, id, 1);
        }
        // All read: all move to main with frequency 0, whose tail is then the victim.
        assert_eq!(cands(&mut p, &mut slab, 1), vec![ids[0]]);
        assert_eq!(queues(&p, &slab).1.len(), 4);
        for _ in 0..5 {
            p.on_access(&mut slab, C, ids[0], 1);
        }
        assert_eq!(freq_of(&slab, ids[0]), 3, "saturates at 3");
        p.on_access(&mut slab, C, ids[1], 1);
        // ids[0] goes back to the head with 2, ids[1] with 0; ids[2] is the victim.
        assert_eq!(cands(&mut p, &mut slab, 1), vec![ids[2]]);
        assert_eq!(queues(&p, &slab).1, vec![ids[1], ids[0], ids[3], ids[2]]);
        assert_eq!((freq_of(&slab, ids[0]), freq_of(&slab, ids[1])), (2, 0));
    }

    #[test]
    fn s3fifo_ghost_sends_a_recently_evicted_key_to_main() {
        let (mut slab, ids, mut p) = s3fifo_with(3);
        assert_eq!(cands(&mut p, &mut slab, 1), vec![ids[0]]);
        p.on_evict(&mut slab, C, ids[0]);
        p.on_remove(&mut slab, C, ids[0]);
        // The same key again (the chunk still holds it): a ghost hit, so main.
        p.on_insert(&mut slab, C, ids[0]);
        assert_eq!(queues(&p, &slab), (vec![ids[2], ids[1]], vec![ids[0]]));
        // The ghost forgets a hit; a removed (not evicted) item leaves no ghost.
        p.on_remove(&mut slab, C, ids[0]);
        p.on_insert(&mut slab, C, ids[0]);
        assert_eq!(queues(&p, &slab).1, Vec::<ItemId>::new());
    }

    #[test]
    fn s3fifo_search_is_bounded_when_everything_is_hot() {
        let n = s3fifo::MAX_MOVES * 2;
        let (mut slab, ids, mut p) = s3fifo_with(n);
        for &id in &ids {
            p.on_access(&mut slab, C, id, 1);
        }
        // First search: MAX_MOVES moves from small to main, then the small tail as it is.
        assert_eq!(cands(&mut p, &mut slab, 1), vec![ids[s3fifo::MAX_MOVES]]);
        for &id in &ids {
            for _ in 0..3 {
                p.on_access(&mut slab, C, id, 1);
            }
        }
        for _ in 0..20 {
            let c = cands(&mut p, &mut slab, 5);
            assert_eq!(c.len(), 5);
            let (small, main) = queues(&p, &slab);
            assert_eq!(small.len() + main.len(), n);
        }
    }

    #[test]
    fn s3fifo_move_keeps_queue_position_and_frequency() {
        let (mut slab, ids, mut p) = s3fifo_with(5);
        p.on_access(&mut slab, C, ids[0], 1);
        assert_eq!(cands(&mut p, &mut slab, 1), vec![ids[1]]);
        p.on_remove(&mut slab, C, ids[1]);
        p.on_access(&mut slab, C, ids[0], 1);
        p.on_access(&mut slab, C, ids[3], 1);
        // Main: [0]; small: [4, 3, 2]. Move 0 (main, freq 1) and 3 (small middle, freq 1).
        slab.copy_item(ids[0], ids[1]);
        p.on_move(&mut slab, C, ids[0], ids[1]);
        assert_eq!(
            queues(&p, &slab),
            (vec![ids[4], ids[3], ids[2]], vec![ids[1]])
        );
        let (a, b) = (ids[3], ids[0]);
        slab.copy_item(a, b);
        p.on_move(&mut slab, C, a, b);
        assert_eq!(
            queues(&p, &slab),
            (vec![ids[4], ids[0], ids[2]], vec![ids[1]])
        );
        assert_eq!((freq_of(&slab, ids[1]), freq_of(&slab, ids[0])), (1, 1));
    }

    #[test]
    fn rewrites_carry_policy_state() {
        // S3-FIFO: same queue, one access more.
        let (mut slab, ids, mut p) = s3fifo_with(3);
        p.on_access(&mut slab, C, ids[0], 1);
        let carry = p.carry(&slab, C, ids[0], 1);
        p.on_remove(&mut slab, C, ids[0]);
        p.on_rewrite(&mut slab, C, ids[0], carry, 1);
        assert_eq!(freq_of(&slab, ids[0]), 2);
        assert_eq!(queues(&p, &slab).0, vec![ids[0], ids[2], ids[1]]);
        // LRU: head, marked as read.
        let (mut slab, ids) = slab_with(2);
        let mut p = policy(EvictionPolicy::Lru);
        for &id in &ids {
            p.on_insert(&mut slab, C, id);
        }
        let carry = p.carry(&slab, C, ids[0], 1);
        p.on_remove(&mut slab, C, ids[0]);
        p.on_rewrite(&mut slab, C, ids[0], carry, 1);
        assert_ne!(item::w0(slab.chunk(ids[0])) & ACTIVE, 0);
        assert_eq!(p.list(&slab, C).unwrap(), vec![ids[0], ids[1]]);
        // LFU: the counter survives.
        let (mut slab, ids) = slab_with(1);
        let mut p = policy(EvictionPolicy::Lfu);
        p.on_insert(&mut slab, C, ids[0]);
        item::set_w0(slab.chunk_mut(ids[0]), 40);
        item::set_atime(slab.chunk_mut(ids[0]), 100);
        let carry = p.carry(&slab, C, ids[0], 100);
        p.on_insert(&mut slab, C, ids[0]);
        p.on_rewrite(&mut slab, C, ids[0], carry, 100);
        assert!(item::w0(slab.chunk(ids[0])) >= 40);
    }

    #[test]
    fn random_samples_used_chunks_of_the_class() {
        let (mut slab, ids) = slab_with(4);
        let mut p = policy(EvictionPolicy::Random);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut out = Vec::new();
            p.candidates(&mut slab, C, 2, 0, &mut out);
            assert!(!out.is_empty());
            assert!(out.iter().all(|id| ids.contains(id)));
            seen.extend(out);
        }
        assert_eq!(seen.len(), 4, "every item gets sampled");
        assert_eq!(p.oldest(C), None);
    }
}
