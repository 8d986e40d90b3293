//! Operator walks over a store: listing items (memcached's `stats cachedump` and `lru_crawler
//! metadump`), reclaiming dead ones on request (`lru_crawler crawl`), moving a page between two
//! given classes (`slabs reassign`) and changing the memory limit (`cache_memlimit`).
//!
//! Walks go in chunk order (page by page, slot by slot) from a [`Cursor`] and examine a bounded
//! number of chunks per call, so a caller can list a store of any size in steps without holding
//! the store for long or building one giant reply. Pages that move between steps may make a walk
//! miss or repeat an item, as memcached's crawler may when items move in its LRUs.

use std::borrow::Borrow;

use super::item::{self, Header, ItemId};
use super::Store;

/// Where a walk goes on: the next chunk to examine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    page: u32,
    slot: u32,
}

impl Cursor {
    /// The first chunk of the store.
    pub const START: Cursor = Cursor { page: 0, slot: 0 };
}

/// One live item as a walk reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedItem {
    /// The key.
    pub key: Vec<u8>,
    /// Value length in bytes.
    pub value_len: usize,
    /// Item size as stored (header + key + value).
    pub size: usize,
    /// Slab class, 1-based.
    pub class: u32,
    /// Expiry as Unix seconds; `None` = never expires.
    pub exptime: Option<u64>,
    /// Last access as Unix seconds.
    pub atime: u64,
    /// The item's CAS.
    pub cas: u64,
    /// Whether the item was read since it was stored.
    pub fetched: bool,
}

/// Why [`Store::reassign`] moved nothing (memcached's `slabs reassign` answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReassignError {
    /// Source and destination are the same class.
    Same,
    /// A class number names no class.
    BadClass,
    /// The source class has fewer than two pages, or none it may give.
    NoSpare,
}

/// Bit of class `class` (1-based) in a class mask.
pub fn class_bit(class: u32) -> u64 {
    1u64.checked_shl(class).unwrap_or(0)
}

/// Calls `each` for every chunk of `store` (shared or exclusive: `each` gets it back) from
/// `cursor` on, at most `budget` chunks (a page of a class `wanted` refuses counts as one), with
/// the chunk's id; returns where to go on (`None` at the end of the store) and the budget spent.
pub(crate) fn walk_ids<S: Borrow<Store>>(
    store: &mut S,
    wanted: impl Fn(usize) -> bool,
    cursor: Cursor,
    budget: usize,
    mut each: impl FnMut(&mut S, ItemId),
) -> (Option<Cursor>, usize) {
    let Cursor { mut page, mut slot } = cursor;
    let mut spent = 0;
    while spent < budget {
        let s: &Store = (*store).borrow();
        let Some((class, per_page)) = s.slab.page_layout(page as usize) else {
            return (None, spent);
        };
        if !wanted(class) || slot >= per_page {
            spent += 1;
            page += 1;
            slot = 0;
            continue;
        }
        let end = per_page.min(slot.saturating_add((budget - spent) as u32));
        for at in slot..end {
            let s: &Store = (*store).borrow();
            let id = s.slab.chunk_id(page as usize, at);
            each(store, id);
        }
        spent += (end - slot) as usize;
        slot = end;
    }
    (Some(Cursor { page, slot }), spent)
}

impl Store {
    /// Calls `each` for every chunk from `cursor` on, at most `budget` chunks (a page of classes
    /// outside `classes` counts as one), with the chunk's id; returns where to go on, `None` at
    /// the end of the store.
    fn walk_chunks(
        &mut self,
        classes: u64,
        cursor: Cursor,
        budget: usize,
        mut each: impl FnMut(&mut Store, ItemId),
    ) -> Option<Cursor> {
        let mut store = self;
        let wanted = |class: usize| classes & class_bit(class as u32 + 1) != 0;
        walk_ids(&mut store, wanted, cursor, budget, |s, id| each(s, id)).0
    }

    /// Appends to `out` the live items of the classes in `classes` (bit `c` = class `c`, 1-based)
    /// among at most `budget` chunks from `cursor`. Free chunks (a withheld chunk reads as free)
    /// and expired or flushed items are skipped; nothing about an item changes. Returns where
    /// to go on, `None` once the walk reached the end of the store.
    pub fn walk(
        &mut self,
        classes: u64,
        cursor: Cursor,
        budget: usize,
        out: &mut Vec<WalkedItem>,
    ) -> Option<Cursor> {
        self.walk_chunks(classes, cursor, budget, |store, id| {
            let c = store.slab.chunk(id);
            if item::key_len(c) == 0 || store.is_dead(id) {
                return;
            }
            let h = Header::load(c);
            let exptime = (h.exptime != 0).then(|| store.clock.to_unix(h.exptime));
            out.push(WalkedItem {
                key: item::key(c).to_vec(),
                value_len: h.value_len(),
                size: h.total_size(),
                class: store.slab.class_of(id) as u32 + 1,
                exptime,
                atime: store.clock.to_unix(h.atime),
                cas: store.item_cas(id),
                fetched: h.fetched(),
            });
        })
    }

    /// Frees the expired and flushed items of the classes in `classes` among at most `budget`
    /// chunks from `cursor` (counted as the background reclaimer counts them: `reclaimed`,
    /// `crawler_reclaimed`, `crawler_items_checked`); returns where to go on (`None` at the
    /// end) and how many were freed.
    pub fn crawl(
        &mut self,
        classes: u64,
        cursor: Cursor,
        budget: usize,
    ) -> (Option<Cursor>, usize) {
        let mut freed = 0;
        let next = self.walk_chunks(classes, cursor, budget, |store, id| {
            if item::key_len(store.slab.chunk(id)) == 0 {
                return;
            }
            store.stats.crawler_items_checked += 1;
            store.class_mut(id).crawler_items_checked += 1;
            if store.is_dead(id) {
                store.stats.crawler_reclaimed += 1;
                store.class_mut(id).crawler_reclaimed += 1;
                store.reclaim_item(id);
                freed += 1;
            }
        });
        (next, freed)
    }

    /// Number of slab classes (class numbers are `1..=classes`).
    pub fn class_count(&self) -> usize {
        self.slab.classes().len()
    }

    /// Pages class `class` (1-based) owns; 0 for a class that does not exist.
    pub fn class_pages(&self, class: u32) -> usize {
        let i = (class as usize).wrapping_sub(1);
        self.slab.classes().get(i).map_or(0, |c| c.pages.len())
    }

    /// The class (1-based, not `dst`) with the most pages, at least two: the source of a
    /// `slabs reassign -1 <dst>`.
    pub fn spare_class(&self, dst: u32) -> Option<u32> {
        (1..=self.class_count() as u32)
            .filter(|&c| c != dst && self.class_pages(c) >= 2)
            .max_by_key(|&c| self.class_pages(c))
    }

    /// Moves one page from class `src` to class `dst` (1-based) at once, as memcached's
    /// `slabs reassign`: the emptiest page of `src` is drained (live items moved into free
    /// chunks of `src`, evicted when none is left) and carved for `dst`. The source must keep a
    /// page, as in memcached.
    pub fn reassign(&mut self, src: u32, dst: u32) -> Result<(), ReassignError> {
        if src == dst {
            return Err(ReassignError::Same);
        }
        let n = self.class_count() as u32;
        if !(1..=n).contains(&src) || !(1..=n).contains(&dst) {
            return Err(ReassignError::BadClass);
        }
        if self.class_pages(src) < 2 {
            return Err(ReassignError::NoSpare);
        }
        if self.move_page(src as usize - 1, dst as usize - 1) {
            Ok(())
        } else {
            // Every page of the source holds a lent value.
            Err(ReassignError::NoSpare)
        }
    }

    /// Sets the memory limit, as memcached's `cache_memlimit`: raising it lets the store grow;
    /// lowering it below what is held frees nothing, it only stops allocating new pages (the
    /// pages held stay in use). False, changing nothing, for a limit the store cannot address.
    pub fn set_memory_limit(&mut self, bytes: usize) -> bool {
        // With hybrid versions the tombstones' share of the limit is not the slab's.
        let tombs = super::tomb_budget(&self.config, bytes);
        if !self.slab.set_memory_limit(bytes - tombs) {
            return false;
        }
        let dropped = self.tombs.set_budget(tombs);
        self.stats.tombstones_reclaimed += dropped as u64;
        self.config.memory_limit = bytes;
        true
    }

    /// Whether the key of a walked item still names a live item here (tests).
    #[cfg(test)]
    pub(crate) fn holds(&mut self, key: &[u8]) -> bool {
        matches!(
            self.lookup(key, super::key_hash(key)),
            super::Found::Live(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{key_hash, StoreConfig, StoreMode};

    fn store(limit: usize) -> Store {
        let mut s = Store::new(StoreConfig {
            memory_limit: limit,
            ..StoreConfig::default()
        })
        .unwrap();
        s.set_time(1_700_000_000);
        s
    }

    fn set(s: &mut Store, key: &[u8], value: &[u8], exptime: i64) {
        let h = key_hash(key);
        s.store(StoreMode::Set, key, h, value, 0, exptime, 0)
            .unwrap();
    }

    /// Walks the whole store in steps of `budget` chunks.
    fn walk_all(s: &mut Store, classes: u64, budget: usize) -> Vec<WalkedItem> {
        let (mut out, mut at) = (Vec::new(), Some(Cursor::START));
        let mut steps = 0;
        while let Some(c) = at {
            at = s.walk(classes, c, budget, &mut out);
            steps += 1;
            assert!(steps < 1_000_000, "walk does not end");
        }
        out
    }

    #[test]
    fn walks_list_live_items_once_in_any_step_size() {
        let mut s = store(4 << 20);
        for i in 0..300 {
            set(&mut s, format!("k{i}").as_bytes(), b"v", 0);
        }
        set(&mut s, b"big", &vec![b'x'; 5000], 100);
        set(&mut s, b"dead", b"v", -1);
        for budget in [1, 7, 100, 1 << 20] {
            let items = walk_all(&mut s, u64::MAX, budget);
            assert_eq!(items.len(), 301, "budget {budget}");
            let mut keys: Vec<_> = items.iter().map(|i| i.key.clone()).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 301);
            assert!(!keys.contains(&b"dead".to_vec()));
        }
        let items = walk_all(&mut s, u64::MAX, 64);
        let big = items.iter().find(|i| i.key == b"big").unwrap();
        assert_eq!(big.value_len, 5000);
        assert_eq!(big.exptime, Some(1_700_000_100));
        assert_eq!(big.atime, 1_700_000_000);
        // Only the class asked for.
        let only = walk_all(&mut s, class_bit(big.class), 3);
        assert_eq!(only.len(), 1);
        let small = items.iter().find(|i| i.key == b"k0").unwrap();
        assert_eq!((small.exptime, small.fetched), (None, false));
        assert!(small.cas != 0 && small.size > 2);
    }

    #[test]
    fn walks_skip_withheld_chunks_of_lent_values() {
        let mut s = store(4 << 20);
        let value = vec![b'x'; 10_000];
        set(&mut s, b"lent", &value, 0);
        let item = s.get(b"lent", key_hash(b"lent")).unwrap().item;
        let _ = s.lend(item);
        // Replaced while lent: the old chunk is withheld and must not be listed.
        set(&mut s, b"lent", b"new", 0);
        let items = walk_all(&mut s, u64::MAX, 10);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].value_len, 3);
        s.end_loan(item);
        assert_eq!(walk_all(&mut s, u64::MAX, 10).len(), 1);
    }

    #[test]
    fn crawl_frees_dead_items_only() {
        let mut s = store(4 << 20);
        set(&mut s, b"live", b"v", 0);
        for i in 0..50 {
            set(&mut s, format!("dead{i}").as_bytes(), b"v", -1);
        }
        assert_eq!(s.stats().curr_items, 51);
        let (mut at, mut freed) = (Some(Cursor::START), 0);
        while let Some(c) = at {
            let (next, n) = s.crawl(u64::MAX, c, 5);
            at = next;
            freed += n;
        }
        assert_eq!(freed, 50);
        assert_eq!(s.stats().curr_items, 1);
        assert_eq!(s.stats().reclaimed, 50);
        assert_eq!(s.stats().crawler_reclaimed, 50);
        assert_eq!(s.stats().crawler_items_checked, 51);
        assert!(s.holds(b"live"));
        s.verify();
    }

    #[test]
    fn reassign_moves_one_page_with_memcacheds_refusals() {
        let mut s = store(8 << 20);
        // Three pages of the smallest class.
        let mut i = 0;
        while s.class_pages(1) < 3 {
            set(&mut s, format!("{i}").as_bytes(), b"", 0);
            i += 1;
        }
        let big_class = s.class_count() as u32;
        assert_eq!(s.reassign(1, 1), Err(ReassignError::Same));
        assert_eq!(s.reassign(0, 2), Err(ReassignError::BadClass));
        assert_eq!(s.reassign(1, big_class + 1), Err(ReassignError::BadClass));
        assert_eq!(s.reassign(2, 1), Err(ReassignError::NoSpare));
        assert_eq!(s.spare_class(2), Some(1));
        let moved = s.stats().slabs_moved;
        assert_eq!(s.reassign(1, 2), Ok(()));
        assert_eq!((s.class_pages(1), s.class_pages(2)), (2, 1));
        assert_eq!(s.stats().slabs_moved, moved + 1);
        s.verify();
    }

    #[test]
    fn memory_limit_grows_at_once_and_shrinks_for_future_pages_only() {
        let mut s = store(1 << 20);
        let value = vec![b'x'; 100_000];
        let fill = |s: &mut Store, from: usize| {
            let mut stored = 0;
            for i in from..from + 40 {
                let k = format!("f{i}");
                if s.store(
                    StoreMode::Add,
                    k.as_bytes(),
                    key_hash(k.as_bytes()),
                    &value,
                    0,
                    0,
                    0,
                )
                .is_ok()
                {
                    stored += 1;
                }
            }
            stored
        };
        // One-chunk pages of the 100,000-byte items' class fill each limit to within a chunk.
        let chunk = s
            .slab_stats()
            .iter()
            .find(|c| c.chunk_size > 100_000)
            .unwrap()
            .chunk_size;
        let full = |limit: u64| limit / chunk * chunk;
        fill(&mut s, 0);
        assert_eq!(s.stats().total_malloced, full(1 << 20));
        assert!(s.set_memory_limit(3 << 20));
        assert_eq!(s.stats().limit_maxbytes, 3 << 20);
        fill(&mut s, 100);
        assert_eq!(s.stats().total_malloced, full(3 << 20));
        // Lowered: the pages held stay, none is added.
        assert!(s.set_memory_limit(1 << 20));
        fill(&mut s, 200);
        assert_eq!(s.stats().total_malloced, full(3 << 20));
        assert!(!s.set_memory_limit(usize::MAX));
        assert_eq!(s.stats().limit_maxbytes, 1 << 20);
    }
}
