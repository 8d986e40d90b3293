//! S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP '23), per slab
//! class: a small FIFO that new items enter (about [`SMALL_PERCENT`] % of the class's items), a
//! main FIFO, a 2-bit saturating frequency per item, and a ghost of the key hashes recently
//! evicted from the small queue.
//!
//! - A hit only raises the item's frequency (capped at 3): it writes the item's own header and no
//!   other item, as LRU's active mark does.
//! - Insert: a key whose hash is in the ghost goes to the main queue's head (it was evicted from
//!   the small queue too early), any other to the small queue's head.
//! - Victims come from the small queue while it holds at least its share, else from the main one.
//!   Small tail: accessed while in the small queue (frequency > 0) → main head with frequency 0,
//!   else a victim (its hash goes into the ghost when it is evicted). Main tail: frequency > 0 →
//!   decremented and back to the main head, else a victim. One search moves at most
//!   [`MAX_MOVES`] items; past that it takes the tail as it is (with every item at 3 the main
//!   queue would need three passes).
//!
//! Layout (ids are below 2^31; an all-ones 31-bit link is NIL): policy word 0 = prev id (bits
//! 0..31) and the frequency's high bit (bit 31); word 1 = next id and the frequency's low bit.
//! The queue an item is on does not fit the header as well (two links and three bits is 65 bits),
//! so it sits in a bitmap indexed by item id, one bit per chunk slot (page size / 512 bytes per
//! page, 0.2 % of the memory): only linking, unlinking and moving read or write it, never a hit.
//!
//! Ghost: per class, a table of `u64` slots, each a 32-bit fingerprint (the hash's high half,
//! which also picks one of the 4-slot buckets) and the 32-bit number of the ghost insertion that
//! wrote it. An entry counts while fewer than `cap` insertions came after it, `cap` being the
//! main queue's target size (90 % of the class's items), so the ghost remembers about as many
//! hashes as the main queue holds items without a FIFO to pop; a full bucket overwrites its
//! oldest entry, a hit clears it. The table has `cap` rounded up to a power of two slots (at
//! least 16), grown (never shrunk) as the class grows, allocated at the class's first eviction
//! from the small queue: 8 to 16 bytes per ghost entry, so at most about 15 bytes per item of the
//! class. Fingerprint collisions (rare: 32 bits, less the bucket bits, within a bucket) only send
//! a new item to the main queue.

use super::super::item::{self, ItemId, NIL};
use super::super::key_hash;
use super::super::slab::Slab;
use super::{Carry, Evictor};

/// The small queue's share of a class's items, in percent (the paper's 10 %).
pub(crate) const SMALL_PERCENT: u32 = 10;
/// Most items one victim search moves (small → main or main reinsertion) before it takes the
/// tail anyway.
pub(crate) const MAX_MOVES: usize = 64;
/// The frequency's cap (two bits).
const MAX_FREQ: u32 = 3;

/// Top bit of a policy word: one bit of the frequency.
const TOP: u32 = 1 << 31;
/// Link bits of a policy word.
const LINK: u32 = !TOP;

#[inline]
fn link(w: u32) -> ItemId {
    match w & LINK {
        LINK => NIL,
        id => id,
    }
}

#[inline]
fn prev(c: &[u8]) -> ItemId {
    link(item::w0(c))
}

#[inline]
fn next(c: &[u8]) -> ItemId {
    link(item::w1(c))
}

#[inline]
fn set_prev(c: &mut [u8], id: ItemId) {
    item::set_w0(c, (item::w0(c) & TOP) | (id & LINK));
}

#[inline]
fn set_next(c: &mut [u8], id: ItemId) {
    item::set_w1(c, (item::w1(c) & TOP) | (id & LINK));
}

#[inline]
pub(crate) fn freq(c: &[u8]) -> u32 {
    ((item::w0(c) >> 31) << 1) | (item::w1(c) >> 31)
}

#[inline]
fn set_freq(c: &mut [u8], f: u32) {
    item::set_w0(c, (item::w0(c) & LINK) | ((f >> 1) << 31));
    item::set_w1(c, (item::w1(c) & LINK) | ((f & 1) << 31));
}

/// One FIFO's ends and length.
#[derive(Debug, Clone, Copy)]
struct Fifo {
    head: ItemId,
    tail: ItemId,
    len: u32,
}

const EMPTY: Fifo = Fifo {
    head: NIL,
    tail: NIL,
    len: 0,
};

/// Slots per ghost bucket.
const WAYS: usize = 4;
/// Smallest ghost table.
const MIN_GHOST_SLOTS: usize = 16;

/// Key hashes recently evicted from a small queue (see the module docs).
#[derive(Default)]
struct Ghost {
    /// `fingerprint << 32 | insertion number`; 0 = empty.
    slots: Vec<u64>,
    /// Number of the next insertion (wrapping: an entry left untouched for 2^32 insertions may
    /// count again, which costs one item a place in the main queue).
    seq: u32,
}

impl Ghost {
    #[inline]
    fn fingerprint(hash: u64) -> u32 {
        (hash >> 32) as u32
    }

    #[inline]
    fn bucket(len: usize, fp: u32) -> usize {
        (fp as usize & (len / WAYS - 1)) * WAYS
    }

    /// Insertions made since the slot was written.
    #[inline]
    fn age(&self, slot: u64) -> u32 {
        self.seq.wrapping_sub(slot as u32)
    }

    #[inline]
    fn live(&self, slot: u64, cap: u32) -> bool {
        slot != 0 && self.age(slot) <= cap
    }

    /// Whether `hash` is a live entry; a hit removes it.
    fn take(&mut self, hash: u64, cap: u32) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let fp = Self::fingerprint(hash);
        let b = Self::bucket(self.slots.len(), fp);
        for i in b..b + WAYS {
            let s = self.slots[i];
            if (s >> 32) as u32 == fp && self.live(s, cap) {
                self.slots[i] = 0;
                return true;
            }
        }
        false
    }

    /// Remembers `hash`, in a table sized for `cap` live entries.
    fn insert(&mut self, hash: u64, cap: u32) {
        let want = (cap as usize).next_power_of_two().max(MIN_GHOST_SLOTS);
        if want > self.slots.len() {
            self.grow(want, cap);
        }
        let fp = Self::fingerprint(hash);
        let b = Self::bucket(self.slots.len(), fp);
        let at = self.victim(b, cap);
        self.slots[at] = (u64::from(fp) << 32) | u64::from(self.seq);
        self.seq = self.seq.wrapping_add(1);
    }

    /// The slot of bucket `b` to overwrite: a free or dead one, else the oldest.
    fn victim(&self, b: usize, cap: u32) -> usize {
        (b..b + WAYS)
            .find(|&i| !self.live(self.slots[i], cap))
            .unwrap_or_else(|| {
                (b..b + WAYS)
                    .max_by_key(|&i| self.age(self.slots[i]))
                    .unwrap()
            })
    }

    /// Rehashes the live entries into `len` slots (the fingerprint holds the bucket bits).
    fn grow(&mut self, len: usize, cap: u32) {
        let old = std::mem::replace(&mut self.slots, vec![0; len]);
        for s in old {
            if self.live(s, cap) {
                let b = Self::bucket(len, (s >> 32) as u32);
                let at = self.victim(b, cap);
                self.slots[at] = s;
            }
        }
    }

    #[cfg(test)]
    fn live_entries(&self, cap: u32) -> usize {
        self.slots.iter().filter(|&&s| self.live(s, cap)).count()
    }
}

/// One class's queues.
struct Queues {
    small: Fifo,
    main: Fifo,
    ghost: Ghost,
}

impl Queues {
    /// Items the small queue should hold at least before it gives victims (at least one).
    fn small_target(&self) -> u32 {
        let total = u64::from(self.small.len) + u64::from(self.main.len);
        ((total * u64::from(SMALL_PERCENT) / 100) as u32).max(1)
    }

    /// The main queue's target size: how many live entries the ghost keeps.
    fn ghost_cap(&self) -> u32 {
        let total = self.small.len + self.main.len;
        (total - total * SMALL_PERCENT / 100).max(1)
    }

    /// Whether the next victim comes from the small queue, with `small` and `main` items left.
    fn evicts_small(&self, small: u32, main: u32) -> bool {
        small > 0 && (main == 0 || small >= self.small_target())
    }
}

/// S3-FIFO queues of every class.
pub(crate) struct S3Fifo {
    classes: Vec<Queues>,
    /// Bit per item id: on the main queue.
    in_main: Vec<u64>,
}

impl S3Fifo {
    pub(crate) fn new(classes: usize) -> S3Fifo {
        S3Fifo {
            classes: (0..classes)
                .map(|_| Queues {
                    small: EMPTY,
                    main: EMPTY,
                    ghost: Ghost::default(),
                })
                .collect(),
            in_main: Vec::new(),
        }
    }

    #[inline]
    fn in_main(&self, id: ItemId) -> bool {
        self.in_main
            .get(id as usize >> 6)
            .is_some_and(|w| (w >> (id & 63)) & 1 != 0)
    }

    #[inline]
    fn set_in_main(&mut self, id: ItemId, on: bool) {
        let i = id as usize >> 6;
        if i >= self.in_main.len() {
            if !on {
                return;
            }
            // Grows with the highest id seen, so with the pages allocated.
            let len = (i + 1).max(self.in_main.len() * 2);
            self.in_main.resize(len, 0);
        }
        let bit = 1u64 << (id & 63);
        if on {
            self.in_main[i] |= bit;
        } else {
            self.in_main[i] &= !bit;
        }
    }

    #[inline]
    fn fifo(&mut self, class: usize, main: bool) -> &mut Fifo {
        let q = &mut self.classes[class];
        if main {
            &mut q.main
        } else {
            &mut q.small
        }
    }

    /// Links `id` at the head of a queue with frequency `f`.
    fn push_head(&mut self, slab: &mut Slab, class: usize, main: bool, id: ItemId, f: u32) {
        let q = self.fifo(class, main);
        let head = q.head;
        let c = slab.chunk_mut(id);
        item::set_w0(c, LINK | ((f >> 1) << 31));
        item::set_w1(c, (head & LINK) | ((f & 1) << 31));
        if head != NIL {
            set_prev(slab.chunk_mut(head), id);
        } else {
            q.tail = id;
        }
        q.head = id;
        q.len += 1;
        self.set_in_main(id, main);
    }

    fn unlink(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        let main = self.in_main(id);
        let c = slab.chunk(id);
        let (p, n) = (prev(c), next(c));
        let q = self.fifo(class, main);
        if p == NIL {
            q.head = n;
        } else {
            set_next(slab.chunk_mut(p), n);
        }
        if n == NIL {
            q.tail = p;
        } else {
            set_prev(slab.chunk_mut(n), p);
        }
        q.len -= 1;
    }

    /// The (small, main) queues of a class, head to tail, checking back links, lengths and
    /// membership bits (tests only).
    #[cfg(test)]
    pub(crate) fn queues(&self, slab: &Slab, class: usize) -> (Vec<ItemId>, Vec<ItemId>) {
        let q = &self.classes[class];
        let walk = |fifo: &Fifo, main: bool| {
            let (mut out, mut back, mut id) = (Vec::new(), NIL, fifo.head);
            while id != NIL {
                assert_eq!(prev(slab.chunk(id)), back);
                assert_eq!(self.in_main(id), main);
                out.push(id);
                back = id;
                id = next(slab.chunk(id));
            }
            assert_eq!(fifo.tail, back);
            assert_eq!(fifo.len as usize, out.len());
            out
        };
        (walk(&q.small, false), walk(&q.main, true))
    }
}

impl Evictor for S3Fifo {
    fn on_insert(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        let q = &mut self.classes[class];
        // No hash to compute before the class first evicted from its small queue.
        let cap = q.ghost_cap();
        let main =
            !q.ghost.slots.is_empty() && q.ghost.take(key_hash(item::key(slab.chunk(id))), cap);
        self.push_head(slab, class, main, id, 0);
    }

    #[inline]
    fn on_access(&mut self, slab: &mut Slab, _: usize, id: ItemId, _: u32) {
        let c = slab.chunk_mut(id);
        let f = freq(c);
        if f < MAX_FREQ {
            set_freq(c, f + 1);
        }
    }

    fn on_remove(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        self.unlink(slab, class, id);
    }

    fn on_evict(&mut self, slab: &mut Slab, class: usize, id: ItemId) {
        if !self.in_main(id) {
            let q = &mut self.classes[class];
            let cap = q.ghost_cap();
            q.ghost.insert(key_hash(item::key(slab.chunk(id))), cap);
        }
    }

    fn on_move(&mut self, slab: &mut Slab, class: usize, old: ItemId, new: ItemId) {
        // The header (links and frequency) came along; re-point the neighbours and the ends.
        let main = self.in_main(old);
        let c = slab.chunk(new);
        let (p, n) = (prev(c), next(c));
        let q = self.fifo(class, main);
        if p == NIL {
            q.head = new;
        } else {
            set_next(slab.chunk_mut(p), new);
        }
        if n == NIL {
            q.tail = new;
        } else {
            set_prev(slab.chunk_mut(n), new);
        }
        self.set_in_main(new, main);
    }

    fn carry(&self, slab: &Slab, _: usize, id: ItemId, _: u32) -> Carry {
        Carry((u32::from(self.in_main(id)) << 2) | freq(slab.chunk(id)))
    }

    fn on_rewrite(&mut self, slab: &mut Slab, class: usize, id: ItemId, carry: Carry, _: u32) {
        // The same queue, one access more: a rewrite is a read and a store.
        let f = ((carry.0 & 3) + 1).min(MAX_FREQ);
        self.push_head(slab, class, carry.0 & 4 != 0, id, f);
    }

    fn candidates(
        &mut self,
        slab: &mut Slab,
        class: usize,
        n: usize,
        _now: u32,
        out: &mut Vec<ItemId>,
    ) {
        // Each round either moves an item (at most MAX_MOVES) or picks one (at most n), so the
        // loop is bounded. Picked items stay linked (the store evicts only one of them), so the
        // queue lengths are counted without them.
        let mut moves = 0;
        let mut picked = [0u32; 2];
        // Walk positions (small, main); NIL = start at the tail again.
        let mut cur = [NIL; 2];
        while out.len() < n {
            let qs = &self.classes[class];
            let left = [qs.small.len - picked[0], qs.main.len - picked[1]];
            if left == [0, 0] {
                break;
            }
            let q = usize::from(!qs.evicts_small(left[0], left[1]));
            let mut id = cur[q];
            if id == NIL {
                // Walked off the head (or starting): the queue's tail, past what was picked.
                id = if q == 0 { qs.small.tail } else { qs.main.tail };
                while id != NIL && out.contains(&id) {
                    id = prev(slab.chunk(id));
                }
                if id == NIL {
                    break;
                }
            }
            cur[q] = prev(slab.chunk(id));
            let f = freq(slab.chunk(id));
            if f > 0 && moves < MAX_MOVES {
                moves += 1;
                self.unlink(slab, class, id);
                // From small: it was read there, so it earns the main queue, starting at 0; from
                // main: one chance spent.
                let f = if q == 0 { 0 } else { f - 1 };
                self.push_head(slab, class, true, id, f);
            } else {
                out.push(id);
                picked[q] += 1;
            }
        }
    }

    fn oldest(&self, class: usize) -> Option<ItemId> {
        let q = &self.classes[class];
        let tail = if q.evicts_small(q.small.len, q.main.len) {
            q.small.tail
        } else {
            q.main.tail
        };
        (tail != NIL).then_some(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ghost_remembers_about_cap_entries_and_forgets_older_ones() {
        let mut g = Ghost::default();
        let hash = |i: u64| key_hash(&i.to_le_bytes());
        for i in 0..1000 {
            g.insert(hash(i), 100);
        }
        assert!(g.slots.len() <= 2 * 100 && g.slots.len() >= 100);
        assert!(g.live_entries(100) <= 100);
        // The latest ones are mostly there (a full bucket drops its oldest), older ones are not.
        let recent = (950..1000).filter(|&i| g.take(hash(i), 100)).count();
        assert!(recent >= 40, "{recent} of the last 50");
        assert!(!(0..800).any(|i| g.take(hash(i), 100)));
        // A hit removes the entry.
        assert!(!g.take(hash(999), 100));
    }

    #[test]
    fn ghost_keeps_live_entries_when_it_grows() {
        let mut g = Ghost::default();
        let hash = |i: u64| key_hash(&i.to_le_bytes());
        for i in 0..10 {
            g.insert(hash(i), 10);
        }
        for i in 10..20 {
            g.insert(hash(i), 1000);
        }
        assert!(g.slots.len() >= 1000);
        assert_eq!((0..20).filter(|&i| g.take(hash(i), 1000)).count(), 20);
    }

    #[test]
    fn frequency_bits_leave_the_links_alone() {
        let mut c = vec![0u8; 64];
        item::set_w0(&mut c, LINK);
        item::set_w1(&mut c, 12345);
        for f in 0..=MAX_FREQ {
            set_freq(&mut c, f);
            assert_eq!((freq(&c), prev(&c), next(&c)), (f, NIL, 12345));
        }
        set_prev(&mut c, 7);
        set_next(&mut c, NIL);
        assert_eq!((freq(&c), prev(&c), next(&c)), (MAX_FREQ, 7, NIL));
    }
}
