//! Eviction policies behind one seam, the [`Evictor`] trait.
//!
//! The store tells the policy about every item it links, reads, unlinks or relocates, and asks it
//! for victim candidates of one slab class when that class has no free chunk and no page can be
//! had. The policy owns the two policy words of each item header and nothing else; it never
//! allocates or frees chunks. A new policy (S3-FIFO: queue links in the two words, its few
//! frequency bits in a policy-owned side table or the header's spare bit) is one more type and one
//! more [`Policy`] variant, without touching the allocator.
//!
//! - LRU: per-class doubly linked list (word 0 = prev, word 1 = next); a hit moves to the head.
//! - FIFO: the same list, no move on a hit.
//! - LFU: Redis-style approximate LFU: word 0 holds a logarithmic 8-bit frequency counter that
//!   decays by one per idle minute; victims are the least frequent of a random sample.
//! - Random: victims are a random sample of the class.

use super::item::{self, ItemId, NIL};
use super::slab::Slab;
use super::EvictionPolicy;

/// How many items a victim search looks at (memcached looks 5 deep into its LRU tail).
pub(crate) const SEARCH_DEPTH: usize = 5;

/// Start value of a new item's LFU counter, so new items are not evicted first.
const LFU_INIT: u32 = 5;
/// Growth damping of the LFU counter (Redis `lfu-log-factor`).
const LFU_LOG_FACTOR: u64 = 10;
/// Idle seconds per counter decrement (Redis `lfu-decay-time`, one minute).
const LFU_DECAY_SECS: u32 = 60;

/// The seam between the store and an eviction policy.
pub(crate) trait Evictor {
    /// A new item was linked into `class`.
    fn on_insert(&mut self, slab: &mut Slab, class: usize, id: ItemId);
    /// An item was read or touched; called before the store updates its access time.
    fn on_access(&mut self, slab: &mut Slab, class: usize, id: ItemId, now: u32);
    /// An item is being unlinked (its chunk is freed right after).
    fn on_remove(&mut self, slab: &mut Slab, class: usize, id: ItemId);
    /// An item's bytes, header included, were copied from `old` to `new` in the same class.
    fn on_move(&mut self, slab: &mut Slab, class: usize, old: ItemId, new: ItemId);
    /// Up to `n` victim candidates of a full `class`, the most evictable first.
    fn candidates(&mut self, slab: &Slab, class: usize, n: usize, now: u32, out: &mut Vec<ItemId>);
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
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Policy::Lru($p) | Policy::Fifo($p) => $e,
            Policy::Lfu($p) => $e,
            Policy::Random($p) => $e,
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
    fn on_move(&mut self, slab: &mut Slab, class: usize, old: ItemId, new: ItemId) {
        dispatch!(self, p => p.on_move(slab, class, old, new))
    }
    fn candidates(&mut self, slab: &Slab, class: usize, n: usize, now: u32, out: &mut Vec<ItemId>) {
        dispatch!(self, p => p.candidates(slab, class, n, now, out))
    }
    fn oldest(&self, class: usize) -> Option<ItemId> {
        dispatch!(self, p => p.oldest(class))
    }
}

#[cfg(test)]
impl Policy {
    /// Items on a class's list, head to tail, checking the back links (list policies only).
    pub(crate) fn list(&self, slab: &Slab, class: usize) -> Option<Vec<ItemId>> {
        let (Policy::Lru(l) | Policy::Fifo(l)) = self else {
            return None;
        };
        let (mut out, mut prev, mut id) = (Vec::new(), NIL, l.ends[class].0);
        while id != NIL {
            assert_eq!(item::w0(slab.chunk(id)), prev);
            out.push(id);
            prev = id;
            id = item::w1(slab.chunk(id));
        }
        assert_eq!(l.ends[class].1, prev);
        Some(out)
    }
}

/// Per-class doubly linked lists, most recent at the head (LRU and FIFO).
pub(crate) struct Lists {
    /// (head, tail) per class.
    ends: Vec<(ItemId, ItemId)>,
    bump_on_access: bool,
}

impl Lists {
    fn new(classes: usize, bump_on_access: bool) -> Lists {
        Lists {
            ends: vec![(NIL, NIL); classes],
            bump_on_access,
        }
    }

    fn push_head(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        let head = self.ends[class].0;
        let c = slab.chunk_mut(id);
        item::set_w0(c, NIL);
        item::set_w1(c, head);
        if head != NIL {
            item::set_w0(slab.chunk_mut(head), id);
        } else {
            self.ends[class].1 = id;
        }
        self.ends[class].0 = id;
    }

    fn unlink(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        let c = slab.chunk(id);
        let (prev, next) = (item::w0(c), item::w1(c));
        if prev == NIL {
            self.ends[class].0 = next;
        } else {
            item::set_w1(slab.chunk_mut(prev), next);
        }
        if next == NIL {
            self.ends[class].1 = prev;
        } else {
            item::set_w0(slab.chunk_mut(next), prev);
        }
    }
}

impl Evictor for Lists {
    fn on_insert(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        self.push_head(slab, class, id);
    }

    fn on_access(&mut self, slab: &mut Slab, class: usize, id: ItemId, _now: u32) {
        if self.bump_on_access && self.ends[class].0 != id {
            self.unlink(slab, class, id);
            self.push_head(slab, class, id);
        }
    }

    fn on_remove(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        self.unlink(slab, class, id);
    }

    fn on_move(&mut self, slab: &mut Slab, class: usize, old: ItemId, new: ItemId) {
        let c = slab.chunk(new);
        let (prev, next) = (item::w0(c), item::w1(c));
        if prev == NIL {
            self.ends[class].0 = new;
        } else {
            debug_assert_eq!(item::w1(slab.chunk(prev)), old);
            item::set_w1(slab.chunk_mut(prev), new);
        }
        if next == NIL {
            self.ends[class].1 = new;
        } else {
            item::set_w0(slab.chunk_mut(next), new);
        }
    }

    fn candidates(
        &mut self,
        slab: &Slab,
        class: usize,
        n: usize,
        _now: u32,
        out: &mut Vec<ItemId>,
    ) {
        let mut id = self.ends[class].1;
        while id != NIL && out.len() < n {
            out.push(id);
            id = item::w0(slab.chunk(id));
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
    fn on_move(&mut self, _: &mut Slab, _: usize, _: ItemId, _: ItemId) {}
    fn candidates(
        &mut self,
        slab: &Slab,
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
            if r % (base * LFU_LOG_FACTOR + 1) == 0 {
                counter += 1;
            }
        }
        item::set_w0(c, counter);
    }

    fn on_remove(&mut self, _: &mut Slab, _: usize, _: ItemId) {}

    fn on_move(&mut self, _: &mut Slab, _: usize, _: ItemId, _: ItemId) {}

    fn candidates(&mut self, slab: &Slab, class: usize, n: usize, now: u32, out: &mut Vec<ItemId>) {
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
        let mut slab = Slab::new(1 << 20, 8 << 20, 1.25).unwrap();
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

    /// The class of 367 KiB chunks (two per page) with 1.25 growth from 64 bytes.
    const C: usize = 38;

    fn policy(kind: EvictionPolicy) -> Policy {
        Policy::new(kind, C + 2, 7)
    }

    fn cands(p: &mut Policy, slab: &Slab, n: usize) -> Vec<ItemId> {
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
        assert_eq!(cands(&mut p, &slab, 2), vec![ids[0], ids[1]]);
        p.on_access(&mut slab, C, ids[0], 1);
        assert_eq!(
            cands(&mut p, &slab, 4),
            vec![ids[1], ids[2], ids[3], ids[0]]
        );
        p.on_remove(&mut slab, C, ids[2]);
        assert_eq!(cands(&mut p, &slab, 4), vec![ids[1], ids[3], ids[0]]);
        assert_eq!(p.oldest(C), Some(ids[1]));
        assert_eq!(p.list(&slab, C).unwrap(), vec![ids[0], ids[3], ids[1]]);
    }

    #[test]
    fn fifo_ignores_hits() {
        let (mut slab, ids) = slab_with(3);
        let mut p = policy(EvictionPolicy::Fifo);
        for &id in &ids {
            p.on_insert(&mut slab, C, id);
        }
        p.on_access(&mut slab, C, ids[0], 1);
        assert_eq!(cands(&mut p, &slab, 3), ids);
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
        assert_eq!(cands(&mut p, &slab, 3), vec![ids[0], ids[3], ids[2]]);
        slab.copy_item(ids[0], ids[1]);
        p.on_move(&mut slab, C, ids[0], ids[1]);
        slab.copy_item(ids[2], ids[0]);
        p.on_move(&mut slab, C, ids[2], ids[0]);
        assert_eq!(cands(&mut p, &slab, 3), vec![ids[1], ids[3], ids[0]]);
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
        let c = cands(&mut p, &slab, 2);
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

    #[test]
    fn random_samples_used_chunks_of_the_class() {
        let (slab, ids) = slab_with(4);
        let mut p = policy(EvictionPolicy::Random);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut out = Vec::new();
            p.candidates(&slab, C, 2, 0, &mut out);
            assert!(!out.is_empty());
            assert!(out.iter().all(|id| ids.contains(id)));
            seen.extend(out);
        }
        assert_eq!(seen.len(), 4, "every item gets sampled");
        assert_eq!(p.oldest(C), None);
    }
}
