//! Tombstones: what a store remembers of keys deleted on purpose, so that a replicated write
//! older than the delete, arriving late, cannot bring the key back (see `replica.rs`).
//!
//! A tombstone is a key, the version of its delete and the store time it was recorded. They live
//! in a slot vector threaded oldest-to-newest by a doubly-linked list (so the oldest goes first
//! when the byte budget is full or its age runs out, and any one leaves in O(1) when its key is
//! written again), found by key through a `hashbrown::HashTable` of slot numbers. Keys are
//! heap-allocated to their length: a tombstone of a 10-byte key costs as little as it can.
//!
//! Accounting: each tombstone counts its key length plus [`TOMBSTONE_OVERHEAD`] bytes against
//! the budget. The overhead covers the 40-byte slot, the index slot (4 bytes and a control byte,
//! at most 7/8 full) and the key allocation's allocator header, rounded up to 64.

use hashbrown::HashTable;

use super::key_hash;

/// Bytes a tombstone counts besides its key (see the module docs for what they cover).
pub const TOMBSTONE_OVERHEAD: usize = 64;

/// "No slot" in the links and the free list.
const NONE: u32 = u32::MAX;

/// One tombstone, or a free slot (empty key).
#[derive(Debug)]
struct Slot {
    key: Box<[u8]>,
    version: u64,
    /// Store time (relative seconds) it was recorded or last replaced.
    born: u32,
    /// Older neighbour; for a free slot, unused.
    prev: u32,
    /// Newer neighbour; for a free slot, the next free slot.
    next: u32,
}

// The slot, a (possibly wasted) index slot and the allocator's header must fit the overhead.
const _: () = assert!(std::mem::size_of::<Slot>() + 8 + 16 <= TOMBSTONE_OVERHEAD);

/// A tombstone as the walk and lookups report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tomb<'a> {
    pub key: &'a [u8],
    pub version: u64,
}

/// The tombstones of one store, bounded by a byte budget.
#[derive(Debug)]
pub(crate) struct Tombstones {
    slots: Vec<Slot>,
    /// Head of the free-slot list.
    free: u32,
    index: HashTable<u32>,
    /// Oldest and newest tombstone.
    oldest: u32,
    newest: u32,
    bytes: usize,
    budget: usize,
}

/// Bytes a tombstone of this key counts.
#[inline]
fn cost(key: &[u8]) -> usize {
    key.len() + TOMBSTONE_OVERHEAD
}

impl Tombstones {
    /// An empty set that may hold `budget` bytes of tombstones.
    pub(crate) fn new(budget: usize) -> Tombstones {
        Tombstones {
            slots: Vec::new(),
            free: NONE,
            index: HashTable::new(),
            oldest: NONE,
            newest: NONE,
            bytes: 0,
            budget,
        }
    }

    /// Tombstones held.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes counted against the budget.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The budget in bytes.
    #[cfg(test)]
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    fn find(&self, key: &[u8], hash: u64) -> Option<u32> {
        self.index
            .find(hash, |&s| *self.slots[s as usize].key == *key)
            .copied()
    }

    /// The tombstone of `key`, if any.
    pub(crate) fn get(&self, key: &[u8], hash: u64) -> Option<Tomb<'_>> {
        self.find(key, hash).map(|s| self.tomb(s))
    }

    fn tomb(&self, s: u32) -> Tomb<'_> {
        let slot = &self.slots[s as usize];
        Tomb {
            key: &slot.key,
            version: slot.version,
        }
    }

    /// Records (or replaces) the tombstone of `key` at `now`; it becomes the newest. Returns how
    /// many older tombstones were dropped to stay within the budget (1 also when this one alone
    /// exceeds the budget and is not recorded).
    pub(crate) fn insert(&mut self, key: &[u8], hash: u64, version: u64, now: u32) -> usize {
        debug_assert!(!key.is_empty());
        if let Some(s) = self.find(key, hash) {
            self.detach(s);
            let slot = &mut self.slots[s as usize];
            slot.version = version;
            slot.born = now;
            self.attach_newest(s);
            return 0;
        }
        let need = cost(key);
        if need > self.budget {
            return 1;
        }
        let mut dropped = 0;
        while self.bytes + need > self.budget {
            self.remove_slot(self.oldest);
            dropped += 1;
        }
        let slot = Slot {
            key: key.into(),
            version,
            born: now,
            prev: NONE,
            next: NONE,
        };
        let s = if self.free != NONE {
            let s = self.free;
            self.free = self.slots[s as usize].next;
            self.slots[s as usize] = slot;
            s
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        };
        let slots = &self.slots;
        self.index
            .insert_unique(hash, s, |&o| key_hash(&slots[o as usize].key));
        self.attach_newest(s);
        self.bytes += need;
        dropped
    }

    /// Removes the tombstone of `key`; returns whether there was one.
    pub(crate) fn remove(&mut self, key: &[u8], hash: u64) -> bool {
        match self.find(key, hash) {
            Some(s) => {
                self.remove_slot(s);
                true
            }
            None => false,
        }
    }

    /// Removes tombstones recorded `ttl` seconds or more before `now`, oldest first, examining
    /// at most `budget`; returns how many went.
    pub(crate) fn expire(&mut self, now: u32, ttl: u32, budget: usize) -> usize {
        let mut gone = 0;
        while gone < budget && self.oldest != NONE {
            if self.slots[self.oldest as usize].born.saturating_add(ttl) > now {
                break;
            }
            self.remove_slot(self.oldest);
            gone += 1;
        }
        gone
    }

    /// Changes the budget; drops the oldest tombstones until they fit. Returns how many went.
    pub(crate) fn set_budget(&mut self, budget: usize) -> usize {
        self.budget = budget;
        let mut dropped = 0;
        while self.bytes > self.budget {
            self.remove_slot(self.oldest);
            dropped += 1;
        }
        dropped
    }

    /// Slots a walk goes over (`0..slot_count()`; free ones included).
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The tombstone in slot `s`, `None` for a free slot.
    pub(crate) fn at(&self, s: usize) -> Option<Tomb<'_>> {
        let slot = self.slots.get(s)?;
        (!slot.key.is_empty()).then(|| self.tomb(s as u32))
    }

    fn remove_slot(&mut self, s: u32) {
        debug_assert!(s != NONE, "removing from an empty set");
        self.detach(s);
        let slot = &self.slots[s as usize];
        let hash = key_hash(&slot.key);
        let found = self.index.find_entry(hash, |&x| x == s);
        if let Ok(entry) = found {
            entry.remove();
        } else {
            debug_assert!(false, "tombstone missing from its index");
        }
        self.bytes -= cost(&slot.key);
        let slot = &mut self.slots[s as usize];
        // An empty box does not allocate: the key's memory goes back now.
        slot.key = Box::default();
        slot.next = self.free;
        self.free = s;
    }

    /// Unthreads slot `s` from the age list.
    fn detach(&mut self, s: u32) {
        let (prev, next) = {
            let slot = &self.slots[s as usize];
            (slot.prev, slot.next)
        };
        match prev {
            NONE => self.oldest = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NONE => self.newest = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    /// Threads slot `s` in as the newest.
    fn attach_newest(&mut self, s: u32) {
        let old_newest = self.newest;
        {
            let slot = &mut self.slots[s as usize];
            slot.prev = old_newest;
            slot.next = NONE;
        }
        match old_newest {
            NONE => self.oldest = s,
            n => self.slots[n as usize].next = s,
        }
        self.newest = s;
    }

    /// Checks list, index and byte count against each other (tests only).
    #[cfg(test)]
    pub(crate) fn verify(&self) {
        let (mut n, mut bytes, mut s, mut prev) = (0, 0, self.oldest, NONE);
        while s != NONE {
            let slot = &self.slots[s as usize];
            assert!(!slot.key.is_empty(), "free slot in the age list");
            assert_eq!(slot.prev, prev);
            assert_eq!(self.find(&slot.key, key_hash(&slot.key)), Some(s));
            n += 1;
            bytes += cost(&slot.key);
            prev = s;
            s = slot.next;
        }
        assert_eq!(prev, self.newest);
        assert_eq!(n, self.len());
        assert_eq!(bytes, self.bytes);
        assert!(self.bytes <= self.budget);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(t: &mut Tombstones, key: &[u8], version: u64, now: u32) -> usize {
        t.insert(key, key_hash(key), version, now)
    }

    fn has(t: &Tombstones, key: &[u8]) -> Option<u64> {
        t.get(key, key_hash(key)).map(|x| x.version)
    }

    #[test]
    fn insert_find_replace_remove() {
        let mut t = Tombstones::new(10_000);
        assert_eq!(ins(&mut t, b"a", 5, 1), 0);
        assert_eq!(ins(&mut t, b"bb", 6, 1), 0);
        assert_eq!(
            (has(&t, b"a"), has(&t, b"bb"), has(&t, b"c")),
            (Some(5), Some(6), None)
        );
        assert_eq!(t.bytes(), 1 + 2 + 2 * TOMBSTONE_OVERHEAD);
        // Replacing keeps the count and bytes.
        assert_eq!(ins(&mut t, b"a", 9, 2), 0);
        assert_eq!((t.len(), has(&t, b"a")), (2, Some(9)));
        assert!(t.remove(b"bb", key_hash(b"bb")));
        assert!(!t.remove(b"bb", key_hash(b"bb")));
        assert_eq!(t.bytes(), 1 + TOMBSTONE_OVERHEAD);
        t.verify();
        // A freed slot is reused.
        ins(&mut t, b"ccc", 10, 3);
        assert_eq!(t.slot_count(), 2);
        t.verify();
    }

    #[test]
    fn budget_drops_the_oldest_first() {
        let each = 1 + TOMBSTONE_OVERHEAD;
        let mut t = Tombstones::new(3 * each);
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            assert_eq!(ins(&mut t, *k, i as u64 + 1, 1), 0);
        }
        // "a" replaced: now the newest, so "b" is the oldest.
        ins(&mut t, b"a", 7, 2);
        assert_eq!(ins(&mut t, b"d", 8, 3), 1);
        assert_eq!(has(&t, b"b"), None);
        assert!(has(&t, b"a").is_some() && has(&t, b"c").is_some());
        // A key longer than the whole budget is not recorded.
        assert_eq!(ins(&mut t, &[b'x'; 250], 9, 3), 1);
        assert_eq!(t.len(), 3);
        assert_eq!(t.set_budget(each), 2);
        assert_eq!(has(&t, b"d"), Some(8));
        t.verify();
    }

    #[test]
    fn expire_goes_oldest_first_within_its_budget() {
        let mut t = Tombstones::new(100_000);
        for i in 0..10u32 {
            ins(
                &mut t,
                format!("k{i}").as_bytes(),
                u64::from(i) + 1,
                100 + i,
            );
        }
        // ttl 50 at 154: born 100..=104 are due.
        assert_eq!(t.expire(154, 50, 3), 3);
        assert_eq!(t.expire(154, 50, 100), 2);
        assert_eq!(t.expire(154, 50, 100), 0);
        assert_eq!(t.len(), 5);
        assert_eq!(has(&t, b"k4"), None);
        assert_eq!(has(&t, b"k5"), Some(6));
        assert_eq!(t.expire(u32::MAX, u32::MAX, 100), 5);
        assert!(t.is_empty());
        assert_eq!(t.bytes(), 0);
        t.verify();
    }

    #[test]
    fn slots_walk_skips_free_ones() {
        let mut t = Tombstones::new(100_000);
        for k in [b"a", b"b", b"c"] {
            ins(&mut t, k, 1, 1);
        }
        t.remove(b"b", key_hash(b"b"));
        let keys: Vec<_> = (0..t.slot_count())
            .filter_map(|s| t.at(s).map(|x| x.key.to_vec()))
            .collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(t.at(99).is_none());
    }
}
