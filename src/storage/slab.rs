//! Slab arena: classes of fixed-size chunks carved from pages, under a hard byte cap.
//!
//! - Chunk sizes start at [`MIN_CHUNK`] and grow by the growth factor (8-byte aligned) up to half
//!   the largest item; the last class holds the largest item. At most [`MAX_CLASSES`] classes (as
//!   memcached): a tiny factor stops early and jumps to the largest class.
//! - Pages are small: a class whose chunks fit twice in [`PAGE`] (64 KiB) carves pages of that
//!   size; a larger class gets pages of exactly one chunk. Pages are allocated lazily, one boxed
//!   slice each, while the bytes held stay under the limit; each page belongs to one class at a
//!   time. Why small pages: every class in use holds at least one page, and with 1 MiB pages a
//!   shard of a few MiB (`-m 64` over `-t 16` gives 4 MiB) could not hold a page for each of its
//!   dozen active classes, so it evicted a working set of 3 % of memory. With 64 KiB pages a
//!   class's last page strands at most 64 KiB.
//! - A page moved to a class of another page size (see `mover.rs`) is freed and the bytes
//!   allocated anew for the receiver; its index stays vacant until a later page takes it.
//! - An [`ItemId`] is `page << slot_bits | slot`, below 2^31, so links are 4 bytes with a spare
//!   bit, and a chunk's address is one shift, one mask and one multiply away. 2^21 pages of
//!   64 KiB let one store address 128 GiB.
//! - Free chunks sit on a per-class doubly linked list threaded through the chunks themselves
//!   (policy words of the header), so a page can be pulled out of its class's free list in
//!   O(chunks in the page) when it moves to another class.
//!
//! The slab knows nothing of keys, the index or eviction; the store drives page moves.

use super::item::{self, Header, ItemId, NIL};

/// Smallest chunk: the 32-byte header plus a short key and value.
pub(crate) const MIN_CHUNK: usize = 64;

/// Most slab classes (memcached's `MAX_NUMBER_OF_SLAB_CLASSES`).
pub(crate) const MAX_CLASSES: usize = 64;

/// Page size of the classes whose chunks fit at least twice in it.
pub(crate) const PAGE: usize = 64 * 1024;

/// Class byte of a vacant page (freed, its index not yet reused).
const VACANT: u8 = u8::MAX;

/// One page of memory and what it is used for.
struct Page {
    mem: Box<[u8]>,
    class: u8,
    chunk_size: u32,
    used: u32,
    /// Being emptied for a move: freed chunks stay off the free list.
    draining: bool,
}

/// One slab class: a chunk size and the pages carved into it.
#[derive(Debug, Clone)]
pub(crate) struct Class {
    /// Bytes per chunk.
    pub chunk_size: u32,
    /// Chunks per page.
    pub per_page: u32,
    /// Pages owned by this class.
    pub pages: Vec<u32>,
    free_head: ItemId,
    /// Chunks on the free list.
    pub free: u32,
    /// Chunks holding items.
    pub used: u32,
    /// Sum of the sizes of the items held (memcached's `mem_requested`).
    pub mem_requested: u64,
    /// Chunks freed but kept off the free list until their readers are done (see `withhold`).
    pub withheld: u32,
}

/// The arena of one store.
pub(crate) struct Slab {
    /// The largest chunk (the largest item).
    largest: usize,
    /// Most bytes the pages may hold.
    limit: usize,
    /// Bytes the pages hold.
    bytes: usize,
    /// Indexes of vacant pages, for reuse.
    vacant: Vec<u32>,
    slot_bits: u32,
    slot_mask: u32,
    pages: Vec<Page>,
    classes: Vec<Class>,
    /// Items per size bucket of [`SIZE_BUCKET`] bytes (memcached's `stats sizes`), while enabled.
    sizes: Option<Vec<u32>>,
}

/// Width of a `stats sizes` bucket, as memcached's.
pub(crate) const SIZE_BUCKET: usize = 32;

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl Slab {
    /// Builds the class table for items up to `largest` bytes; pages come later, on demand.
    pub(crate) fn new(
        largest: usize,
        memory_limit: usize,
        growth_factor: f64,
    ) -> Result<Slab, String> {
        if !(growth_factor.is_finite() && growth_factor > 1.0) {
            return Err(format!(
                "growth factor {growth_factor} must be a number above 1"
            ));
        }
        if memory_limit < largest {
            return Err(format!(
                "memory limit {memory_limit} is smaller than the largest item ({largest} bytes)"
            ));
        }
        let mut sizes = Vec::new();
        let mut size = MIN_CHUNK;
        while size <= largest / 2 && sizes.len() < MAX_CLASSES - 1 {
            sizes.push(size);
            let grown = (size as f64 * growth_factor).min(largest as f64) as usize;
            size = align8(grown).max(size + 8);
        }
        sizes.push(largest);
        let max_per_page = PAGE / MIN_CHUNK;
        let slot_bits = usize::BITS - (max_per_page - 1).leading_zeros();
        // Ids stay below 2^31 (policies may keep a flag in each link's top bit), and the
        // all-ones page number is never used, so NIL is never a valid id.
        let id_pages = (1usize << (31 - slot_bits)) - 1;
        if memory_limit / PAGE > id_pages {
            return Err(format!(
                "memory limit {memory_limit} exceeds what one store can address ({} bytes)",
                id_pages * PAGE
            ));
        }
        let classes = sizes
            .iter()
            .map(|&s| Class {
                chunk_size: s as u32,
                per_page: (PAGE / s).max(1) as u32,
                pages: Vec::new(),
                free_head: NIL,
                free: 0,
                used: 0,
                mem_requested: 0,
                withheld: 0,
            })
            .collect();
        Ok(Slab {
            largest,
            limit: memory_limit,
            bytes: 0,
            vacant: Vec::new(),
            slot_bits,
            slot_mask: (1 << slot_bits) - 1,
            pages: Vec::new(),
            classes,
            sizes: None,
        })
    }

    /// Bytes of a page of the small classes (larger classes have pages of one chunk).
    pub(crate) fn page_size(&self) -> usize {
        PAGE
    }

    /// Bytes of one page of `class`.
    pub(crate) fn page_bytes(&self, class: usize) -> usize {
        let c = &self.classes[class];
        if c.per_page > 1 {
            PAGE
        } else {
            c.chunk_size as usize
        }
    }

    /// Pages held now.
    pub(crate) fn pages_allocated(&self) -> usize {
        self.pages.len() - self.vacant.len()
    }

    /// Bytes held by pages (never above the limit, unless the limit was lowered since).
    pub(crate) fn bytes_allocated(&self) -> usize {
        self.bytes
    }

    /// The classes, smallest chunk first.
    pub(crate) fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// Largest item any chunk can hold.
    pub(crate) fn largest_chunk(&self) -> usize {
        self.largest
    }

    /// The smallest class whose chunks hold `size` bytes.
    #[inline]
    pub(crate) fn class_for(&self, size: usize) -> Option<usize> {
        let c = self
            .classes
            .partition_point(|c| (c.chunk_size as usize) < size);
        (c < self.classes.len()).then_some(c)
    }

    #[inline]
    fn page_of(&self, id: ItemId) -> usize {
        (id >> self.slot_bits) as usize
    }

    /// Page number of an item.
    #[inline]
    pub(crate) fn page_index(&self, id: ItemId) -> u32 {
        id >> self.slot_bits
    }

    /// Class of the page holding `id`.
    #[inline]
    pub(crate) fn class_of(&self, id: ItemId) -> usize {
        self.pages[self.page_of(id)].class as usize
    }

    #[inline]
    fn span(&self, id: ItemId) -> (usize, usize, usize) {
        let page = self.page_of(id);
        let cs = self.pages[page].chunk_size as usize;
        let off = (id & self.slot_mask) as usize * cs;
        (page, off, cs)
    }

    /// The bytes of a chunk.
    #[inline]
    pub(crate) fn chunk(&self, id: ItemId) -> &[u8] {
        let (page, off, cs) = self.span(id);
        &self.pages[page].mem[off..off + cs]
    }

    /// The bytes of a chunk, writable.
    #[inline]
    pub(crate) fn chunk_mut(&mut self, id: ItemId) -> &mut [u8] {
        let (page, off, cs) = self.span(id);
        &mut self.pages[page].mem[off..off + cs]
    }

    /// Two distinct chunks at once: `(read, write)`.
    pub(crate) fn chunk_pair(&mut self, from: ItemId, to: ItemId) -> (&[u8], &mut [u8]) {
        assert_ne!(from, to);
        let (pf, of, cf) = self.span(from);
        let (pt, ot, ct) = self.span(to);
        if pf == pt {
            let mem = &mut self.pages[pf].mem;
            if of < ot {
                let (a, b) = mem.split_at_mut(ot);
                (&a[of..of + cf], &mut b[..ct])
            } else {
                let (a, b) = mem.split_at_mut(of);
                (&b[..cf], &mut a[ot..ot + ct])
            }
        } else {
            let [a, b] = self
                .pages
                .get_disjoint_mut([pf, pt])
                .expect("distinct pages");
            (&a.mem[of..of + cf], &mut b.mem[ot..ot + ct])
        }
    }

    /// Takes a free chunk of `class`, if its free list has one.
    #[inline]
    pub(crate) fn pop_free(&mut self, class: usize) -> Option<ItemId> {
        let id = self.classes[class].free_head;
        if id == NIL {
            return None;
        }
        self.unlink_free(class, id);
        let page = self.page_of(id);
        self.pages[page].used += 1;
        self.classes[class].used += 1;
        Some(id)
    }

    /// Returns an item's chunk to its class (its accounting goes with it).
    pub(crate) fn free(&mut self, id: ItemId) {
        let (page, class) = self.retire(id);
        if !self.pages[page].draining {
            self.push_free(class, id);
        }
    }

    /// Frees an item's chunk but keeps it off the free list, so nothing overwrites it while a
    /// reader outside the store still reads its value (see `Store::lend`); the chunk's header
    /// says "free" from now on, its value bytes stay. [`Slab::release_withheld`] makes it
    /// reusable. The page of a withheld chunk must not be drained.
    pub(crate) fn withhold(&mut self, id: ItemId) {
        let (_, class) = self.retire(id);
        self.classes[class].withheld += 1;
    }

    /// Puts a withheld chunk on its class's free list.
    pub(crate) fn release_withheld(&mut self, id: ItemId) {
        let page = self.page_of(id);
        let class = self.pages[page].class as usize;
        self.classes[class].withheld -= 1;
        debug_assert!(
            !self.pages[page].draining,
            "a page with a withheld chunk was drained"
        );
        self.push_free(class, id);
    }

    /// Marks a chunk free and takes it out of the accounting; returns its page and class.
    fn retire(&mut self, id: ItemId) -> (usize, usize) {
        let page = self.page_of(id);
        let class = self.pages[page].class as usize;
        let size = Header::load(self.chunk(id)).total_size() as u64;
        item::mark_free(self.chunk_mut(id));
        self.pages[page].used -= 1;
        let c = &mut self.classes[class];
        c.used -= 1;
        c.mem_requested -= size;
        self.count_size(size as usize, false);
        (page, class)
    }

    /// Records that an item of `size` bytes now sits in a chunk of `class`.
    #[inline]
    pub(crate) fn account(&mut self, class: usize, old_size: usize, new_size: usize) {
        let c = &mut self.classes[class];
        c.mem_requested = c.mem_requested + new_size as u64 - old_size as u64;
        if self.sizes.is_some() {
            if old_size != 0 {
                self.count_size(old_size, false);
            }
            self.count_size(new_size, true);
        }
    }

    /// Moves the size histogram's count of an item of `size` bytes up or down.
    #[inline]
    fn count_size(&mut self, size: usize, add: bool) {
        let Some(hist) = &mut self.sizes else { return };
        if let Some(n) = hist.get_mut(size.div_ceil(SIZE_BUCKET)) {
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    /// Starts (or keeps) counting items per size, counting the items held now once; sizes up
    /// to a page fit the buckets.
    pub(crate) fn enable_sizes(&mut self) {
        if self.sizes.is_some() {
            return;
        }
        let mut hist = vec![0u32; self.largest / SIZE_BUCKET + 1];
        for page in 0..self.pages.len() as u32 {
            if self.pages[page as usize].class == VACANT {
                continue;
            }
            for id in self.items_in_page(page) {
                let size = Header::load(self.chunk(id)).total_size();
                if let Some(n) = hist.get_mut(size.div_ceil(SIZE_BUCKET)) {
                    *n += 1;
                }
            }
        }
        self.sizes = Some(hist);
    }

    /// Stops counting items per size and drops the histogram.
    pub(crate) fn disable_sizes(&mut self) {
        self.sizes = None;
    }

    /// The size histogram while enabled: items per bucket, bucket `i` holding sizes in
    /// `((i-1)*32, i*32]`.
    pub(crate) fn sizes(&self) -> Option<&[u32]> {
        self.sizes.as_deref()
    }

    fn push_free(&mut self, class: usize, id: ItemId) {
        let head = self.classes[class].free_head;
        let c = self.chunk_mut(id);
        item::set_w0(c, NIL);
        item::set_w1(c, head);
        if head != NIL {
            item::set_w0(self.chunk_mut(head), id);
        }
        let c = &mut self.classes[class];
        c.free_head = id;
        c.free += 1;
    }

    fn unlink_free(&mut self, class: usize, id: ItemId) {
        let c = self.chunk(id);
        let (prev, next) = (item::w0(c), item::w1(c));
        if prev == NIL {
            self.classes[class].free_head = next;
        } else {
            item::set_w1(self.chunk_mut(prev), next);
        }
        if next != NIL {
            item::set_w0(self.chunk_mut(next), prev);
        }
        self.classes[class].free -= 1;
    }

    /// Allocates a new page for `class` if the limit allows; returns whether it did.
    pub(crate) fn grow(&mut self, class: usize) -> bool {
        let bytes = self.page_bytes(class);
        if self.bytes + bytes > self.limit {
            return false;
        }
        let fresh = Page {
            mem: vec![0u8; bytes].into_boxed_slice(),
            class: 0,
            chunk_size: 0,
            used: 0,
            draining: false,
        };
        let page = match self.vacant.pop() {
            Some(at) => {
                self.pages[at as usize] = fresh;
                at as usize
            }
            None => {
                self.pages.push(fresh);
                self.pages.len() - 1
            }
        };
        self.bytes += bytes;
        self.assign(page, class);
        true
    }

    /// Frees an emptied page that belongs to no class; its index becomes vacant.
    fn release(&mut self, page: usize) {
        let p = &mut self.pages[page];
        debug_assert_eq!(p.used, 0);
        self.bytes -= p.mem.len();
        p.mem = Box::default();
        p.class = VACANT;
        p.chunk_size = 0;
        p.draining = false;
        self.vacant.push(page as u32);
    }

    /// Gives an empty page to `class`: carves it and puts every chunk on the free list.
    fn assign(&mut self, page: usize, class: usize) {
        let (cs, per_page) = (self.classes[class].chunk_size, self.classes[class].per_page);
        let p = &mut self.pages[page];
        debug_assert_eq!(p.used, 0);
        p.class = class as u8;
        p.chunk_size = cs;
        p.draining = false;
        self.classes[class].pages.push(page as u32);
        // Pushed in reverse so that allocation walks the page upwards.
        for slot in (0..per_page).rev() {
            let id = ((page as u32) << self.slot_bits) | slot;
            item::mark_free(self.chunk_mut(id));
            self.push_free(class, id);
        }
    }

    /// Items in a page still in use.
    pub(crate) fn page_used(&self, page: u32) -> u32 {
        self.pages[page as usize].used
    }

    /// Starts emptying a page: its free chunks leave the free list, and chunks freed from now on
    /// stay off it.
    pub(crate) fn start_drain(&mut self, page: u32) {
        let p = page as usize;
        let class = self.pages[p].class as usize;
        self.pages[p].draining = true;
        for slot in 0..self.classes[class].per_page {
            let id = (page << self.slot_bits) | slot;
            if item::key_len(self.chunk(id)) == 0 {
                self.unlink_free(class, id);
            }
        }
    }

    /// Ids of the items held in a page.
    pub(crate) fn items_in_page(&self, page: u32) -> Vec<ItemId> {
        let class = self.pages[page as usize].class as usize;
        (0..self.classes[class].per_page)
            .map(|slot| (page << self.slot_bits) | slot)
            .filter(|&id| item::key_len(self.chunk(id)) != 0)
            .collect()
    }

    /// Hands an emptied (drained) page to another class; false when the receiver's page size
    /// differs and the bytes freed (with what else is free) do not make one of its pages yet.
    pub(crate) fn finish_drain(&mut self, page: u32, to: usize) -> bool {
        let p = page as usize;
        debug_assert!(self.pages[p].draining && self.pages[p].used == 0);
        let from = self.pages[p].class as usize;
        let pages = &mut self.classes[from].pages;
        let at = pages
            .iter()
            .position(|&x| x == page)
            .expect("page in its class");
        pages.swap_remove(at);
        if self.pages[p].mem.len() == self.page_bytes(to) {
            self.assign(p, to);
            return true;
        }
        // Another page size: the bytes go back to the limit and the receiver allocates its own.
        self.release(p);
        self.grow(to)
    }

    /// Copies an item into a free chunk of the same class; the copy is not yet accounted.
    pub(crate) fn copy_item(&mut self, from: ItemId, to: ItemId) {
        let (src, dst) = self.chunk_pair(from, to);
        let n = Header::load(src).total_size();
        dst[..n].copy_from_slice(&src[..n]);
    }

    /// The first chunk at or after `id` in page order, wrapping to page 0 past the last page.
    /// Needs at least one page.
    pub(crate) fn chunk_at_or_after(&self, id: ItemId) -> ItemId {
        debug_assert!(self.pages_allocated() > 0);
        let (mut page, mut slot) = (self.page_of(id), id & self.slot_mask);
        // Vacant pages are skipped; one lap finds a held page.
        for _ in 0..=self.pages.len() {
            if page >= self.pages.len() {
                (page, slot) = (0, 0);
            }
            let class = self.pages[page].class;
            if class != VACANT && slot < self.classes[class as usize].per_page {
                return ((page as u32) << self.slot_bits) | slot;
            }
            (page, slot) = (page + 1, 0);
        }
        unreachable!("chunk_at_or_after needs a held page")
    }

    /// The class of page `page` and its chunks per page (`None` past the last page; a vacant
    /// page has no chunks and a class number no class has).
    pub(crate) fn page_layout(&self, page: usize) -> Option<(usize, u32)> {
        let p = self.pages.get(page)?;
        if p.class == VACANT {
            return Some((usize::from(VACANT), 0));
        }
        let class = p.class as usize;
        Some((class, self.classes[class].per_page))
    }

    /// The id of chunk `slot` of page `page`.
    #[inline]
    pub(crate) fn chunk_id(&self, page: usize, slot: u32) -> ItemId {
        ((page as u32) << self.slot_bits) | slot
    }

    /// Changes the byte cap (at least the largest item). Pages already allocated beyond a
    /// lowered cap stay; only growth stops. False, changing nothing, when the limit exceeds
    /// what the ids can address.
    pub(crate) fn set_memory_limit(&mut self, memory_limit: usize) -> bool {
        let id_pages = (1usize << (31 - self.slot_bits)) - 1;
        if memory_limit / PAGE > id_pages {
            return false;
        }
        self.limit = memory_limit.max(self.largest);
        true
    }

    /// Capacity of the chunk holding `id`.
    #[inline]
    pub(crate) fn chunk_size_of(&self, id: ItemId) -> usize {
        self.pages[self.page_of(id)].chunk_size as usize
    }

    /// A uniformly chosen chunk of `class` (used or not), from a random number.
    pub(crate) fn random_chunk(&self, class: usize, r: u64) -> Option<ItemId> {
        let c = &self.classes[class];
        if c.pages.is_empty() {
            return None;
        }
        let total = c.pages.len() as u64 * u64::from(c.per_page);
        let n = r % total;
        let page = c.pages[(n / u64::from(c.per_page)) as usize];
        let slot = (n % u64::from(c.per_page)) as u32;
        Some((page << self.slot_bits) | slot)
    }
}

#[cfg(test)]
impl Slab {
    /// Checks the arena's bookkeeping against its chunks; returns the ids of used chunks.
    pub(crate) fn verify(&self) -> Vec<ItemId> {
        let mut used_ids = Vec::new();
        let held: usize = self.pages.iter().map(|p| p.mem.len()).sum();
        assert_eq!(held, self.bytes);
        for &v in &self.vacant {
            assert_eq!(self.pages[v as usize].class, VACANT);
        }
        let in_classes: usize = self.classes.iter().map(|c| c.pages.len()).sum();
        assert_eq!(in_classes, self.pages_allocated());
        for (ci, c) in self.classes.iter().enumerate() {
            let (mut used, mut req) = (0u32, 0u64);
            for &p in &c.pages {
                let page = &self.pages[p as usize];
                assert_eq!(page.class as usize, ci);
                assert!(!page.draining);
                let mut page_used = 0;
                for slot in 0..c.per_page {
                    let id = (p << self.slot_bits) | slot;
                    let chunk = self.chunk(id);
                    if item::key_len(chunk) != 0 {
                        page_used += 1;
                        req += Header::load(chunk).total_size() as u64;
                        assert!(Header::load(chunk).total_size() <= c.chunk_size as usize);
                        used_ids.push(id);
                    }
                }
                assert_eq!(page.used, page_used);
                used += page_used;
            }
            assert_eq!(c.used, used, "class {ci} used");
            assert_eq!(c.mem_requested, req, "class {ci} mem_requested");
            let mut free = 0;
            let (mut prev, mut id) = (NIL, c.free_head);
            while id != NIL {
                assert_eq!(self.class_of(id), ci);
                assert_eq!(item::key_len(self.chunk(id)), 0);
                assert_eq!(item::w0(self.chunk(id)), prev);
                free += 1;
                prev = id;
                id = item::w1(self.chunk(id));
            }
            assert_eq!(c.free, free, "class {ci} free list");
            assert_eq!(used + free + c.withheld, c.pages.len() as u32 * c.per_page);
        }
        used_ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn classes_grow_by_factor_up_to_half_the_largest_item_then_the_largest() {
        let s = Slab::new(MIB, 4 * MIB, 1.25).unwrap();
        let sizes: Vec<u32> = s.classes().iter().map(|c| c.chunk_size).collect();
        assert_eq!(sizes[0], 64);
        assert_eq!(sizes[1], 80);
        assert_eq!(*sizes.last().unwrap() as usize, MIB);
        assert!(sizes.windows(2).all(|w| w[0] < w[1] && w[0] % 8 == 0));
        assert!(sizes[sizes.len() - 2] as usize <= MIB / 2);
        assert!(sizes.len() <= MAX_CLASSES);
        for (i, c) in s.classes().iter().enumerate() {
            let cs = c.chunk_size as usize;
            if cs <= PAGE / 2 {
                assert_eq!(c.per_page as usize, PAGE / cs);
                assert_eq!(s.page_bytes(i), PAGE);
            } else {
                assert_eq!(c.per_page, 1);
                assert_eq!(s.page_bytes(i), cs);
            }
        }
    }

    #[test]
    fn a_page_moved_to_another_page_size_is_freed_and_its_index_reused() {
        let mut s = Slab::new(MIB, MIB + PAGE / 2, 1.25).unwrap();
        let big = s.classes().len() - 1;
        assert!(s.grow(0) && s.grow(1));
        assert!(
            !s.grow(big),
            "a 1 MiB page does not fit beside two small ones"
        );
        s.start_drain(0);
        assert!(
            !s.finish_drain(0, big),
            "one small page's bytes are not enough"
        );
        assert_eq!(s.pages_allocated(), 1);
        assert_eq!(s.bytes_allocated(), PAGE);
        assert_eq!(s.page_layout(0), Some((usize::from(VACANT), 0)));
        assert_eq!(
            s.chunk_at_or_after(0) >> s.slot_bits,
            1,
            "vacant pages are skipped"
        );
        s.verify();
        s.start_drain(1);
        assert!(s.finish_drain(1, big));
        assert_eq!(s.bytes_allocated(), MIB);
        let id = s.pop_free(big).unwrap();
        Header::new(1, 1, 10, 0, 0).store(s.chunk_mut(id));
        s.account(big, 0, Header::load(s.chunk(id)).total_size());
        assert_eq!(s.class_of(id), big);
        assert_eq!(s.chunk(id).len(), MIB);
        assert_eq!(
            id >> s.slot_bits,
            1,
            "the last vacant index is reused first"
        );
        assert_eq!(s.vacant, vec![0]);
        s.verify();
    }

    #[test]
    fn tiny_factor_stops_at_max_classes() {
        let s = Slab::new(MIB, MIB, 1.0001).unwrap();
        assert_eq!(s.classes().len(), MAX_CLASSES);
        assert_eq!(s.classes()[1].chunk_size, 72);
        assert_eq!(s.classes().last().unwrap().chunk_size as usize, MIB);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Slab::new(MIB, MIB - 1, 1.25).is_err());
        assert!(Slab::new(MIB, MIB, 1.0).is_err());
        assert!(Slab::new(MIB, MIB, f64::NAN).is_err());
        assert!(Slab::new(MIB, usize::MAX, 1.25).is_err());
    }

    #[test]
    fn class_for_picks_the_smallest_fitting_chunk() {
        let s = Slab::new(MIB, MIB, 1.25).unwrap();
        assert_eq!(s.class_for(1), Some(0));
        assert_eq!(s.class_for(64), Some(0));
        assert_eq!(s.class_for(65), Some(1));
        assert_eq!(s.class_for(80), Some(1));
        assert_eq!(s.class_for(MIB), Some(s.classes().len() - 1));
        assert_eq!(s.class_for(MIB + 1), None);
    }

    #[test]
    fn pages_are_capped_and_chunks_recycled() {
        let mut s = Slab::new(MIB, 2 * MIB, 1.25).unwrap();
        let big = s.classes().len() - 1;
        assert!(s.pop_free(big).is_none());
        assert!(s.grow(big));
        let a = s.pop_free(big).unwrap();
        Header::new(1, 1, 10, 0, 0).store(s.chunk_mut(a));
        assert!(s.grow(big));
        assert!(!s.grow(big), "limit is two large pages");
        assert_eq!(s.bytes_allocated(), 2 * MIB);
        let b = s.pop_free(big).unwrap();
        Header::new(2, 1, 10, 0, 0).store(s.chunk_mut(b));
        assert!(s.pop_free(big).is_none());
        s.account(big, 0, 43);
        s.free(a);
        assert_eq!(s.pop_free(big), Some(a));
    }

    #[test]
    fn drain_moves_a_page_between_classes() {
        let mut s = Slab::new(MIB, MIB, 1.25).unwrap();
        assert!(s.grow(0));
        let per = s.classes()[0].per_page;
        assert_eq!(s.classes()[0].free, per);
        let id = s.pop_free(0).unwrap();
        Header::new(1, 1, 1, 0, 0).store(s.chunk_mut(id));
        s.account(0, 0, 34);
        s.start_drain(0);
        assert_eq!(s.classes()[0].free, 0);
        assert_eq!(s.items_in_page(0), vec![id]);
        s.free(id);
        assert_eq!(s.classes()[0].free, 0, "drained page keeps freed chunks");
        s.finish_drain(0, 3);
        assert!(s.classes()[0].pages.is_empty());
        assert_eq!(s.classes()[3].pages, vec![0]);
        assert_eq!(s.classes()[3].free, s.classes()[3].per_page);
        let id = s.pop_free(3).unwrap();
        assert_eq!(s.class_of(id), 3);
    }

    #[test]
    fn chunk_pair_reads_one_and_writes_another() {
        let mut s = Slab::new(MIB, 2 * MIB, 1.25).unwrap();
        assert!(s.grow(0));
        let a = s.pop_free(0).unwrap();
        let b = s.pop_free(0).unwrap();
        s.chunk_mut(a)[40] = 7;
        let (src, dst) = s.chunk_pair(a, b);
        dst[40] = src[40];
        assert_eq!(s.chunk(b)[40], 7);
        let (src, dst) = s.chunk_pair(b, a);
        dst[41] = src[40] + 1;
        assert_eq!(s.chunk(a)[41], 8);
    }
}
