//! The page mover (memcached's slab rebalancer): moves whole pages between slab classes when the
//! value-size mix shifts, so memory follows the traffic instead of calcifying. A page is taken
//! from a class with a page's worth of free chunks, else from the coldest class (least activity
//! per chunk; never one whose next victim is younger than the asker's, nor, unless the asker can
//! free nothing itself, a class's last page); its live items move
//! into free chunks of their class, made where needed by evicting that class's victim elsewhere.

use super::item::{self, Header, ItemId, NIL};
use super::{key_hash, Evictor, Store, SEARCH_DEPTH};

/// Bytes of pages one automove step may give its receiver: as much as one page held when pages
/// were 1 MiB, so memory follows a shift in sizes as fast as it did.
const MOVE_BYTES: usize = 1 << 20;

impl Store {
    /// One page-reassignment step (slab automove); returns whether a page moved.
    ///
    /// The class that evicted most since the last step receives up to [`MOVE_BYTES`] of pages,
    /// each from a class holding at least a page's worth of free chunks or, failing that, from
    /// the coldest class (fewest allocations and hits per chunk) if it is at most half as busy
    /// as the receiver.
    pub fn rebalance(&mut self) -> bool {
        let to = (0..self.classes.len())
            .filter(|&c| self.classes[c].win_evicts > 0)
            .max_by_key(|&c| self.classes[c].win_evicts);
        let mut moved = false;
        if let Some(to) = to {
            let steps = MOVE_BYTES.div_ceil(self.slab.page_bytes(to)).max(1);
            for _ in 0..steps {
                if !self.rebalance_into(to, false) {
                    break;
                }
                moved = true;
            }
        }
        self.decay_windows();
        moved
    }

    fn decay_windows(&mut self) {
        for k in &mut self.classes {
            k.win_allocs /= 2;
            k.win_hits /= 2;
            k.win_evicts /= 2;
        }
    }

    /// Moves one page into class `to` from the best donor; `force` drops the "donor must be
    /// much colder" rule (used when `to` cannot free anything itself).
    pub(super) fn rebalance_into(&mut self, to: usize, force: bool) -> bool {
        let Some(from) = self.pick_donor(to, force) else {
            return false;
        };
        self.move_page(from, to)
    }

    fn pick_donor(&self, to: usize, force: bool) -> Option<usize> {
        let classes = self.slab.classes();
        let protected_page = (self.protect != NIL).then(|| self.slab.page_index(self.protect));
        // A donor must have a page it can give: any page but the one holding the protected item
        // or a lent one.
        let givable = |p: u32| Some(p) != protected_page && !self.page_lent(p);
        let holds = |i: usize| i != to && classes[i].pages.iter().any(|&p| givable(p));
        // A class with a page's worth of free chunks can give a page without evicting anything.
        let roomy = (0..classes.len())
            .filter(|&i| holds(i) && classes[i].free >= classes[i].per_page)
            .max_by_key(|&i| classes[i].free / classes[i].per_page);
        if roomy.is_some() {
            return roomy;
        }
        let chunks = |i: usize| classes[i].pages.len() as u128 * u128::from(classes[i].per_page);
        let activity = |i: usize| u128::from(self.classes[i].win_allocs + self.classes[i].win_hits);
        // Coldest = least activity per chunk; compare a/b < c/d as a*d < c*b.
        let coldest_of = |pred: &dyn Fn(usize) -> bool| {
            (0..classes.len())
                .filter(|&i| holds(i) && pred(i))
                .min_by(|&a, &b| (activity(a) * chunks(b)).cmp(&(activity(b) * chunks(a))))
        };
        if force {
            // Prefer not to strip a class of its last page: that would only pass the need on.
            return coldest_of(&|i| classes[i].pages.len() > 1).or_else(|| coldest_of(&|_| true));
        }
        // Never strip a class whose next victim is younger than `to`'s: its items are being
        // kept in use (a handful of hot keys on a mostly empty page looks idle per chunk, yet
        // evicting them loses more hits than the page brings; memcached's automover compares
        // the ages of the classes' oldest items too). Policies that keep no order tell nothing.
        let now = self.clock.now();
        let victim_age = |i: usize| {
            self.policy
                .oldest(i)
                .map(|id| now.saturating_sub(item::atime(self.slab.chunk(id))))
        };
        let to_age = victim_age(to);
        let older_than_to = |i: usize| match (victim_age(i), to_age) {
            (Some(a), Some(b)) => a >= b,
            _ => true,
        };
        // Nor, unasked, a class's last page: its live items would have nowhere to go but out.
        let coldest = coldest_of(&|i| older_than_to(i) && classes[i].pages.len() > 1)?;
        let to_chunks = chunks(to).max(1);
        (activity(coldest) * 2 * to_chunks < activity(to) * chunks(coldest)).then_some(coldest)
    }

    /// Empties the emptiest page of `from` (dead items freed, live ones relocated into free
    /// chunks of `from`, or evicted when none is left) and gives it to `to`.
    pub(super) fn move_page(&mut self, from: usize, to: usize) -> bool {
        let protected_page = (self.protect != NIL).then(|| self.slab.page_index(self.protect));
        let Some(page) = self.slab.classes()[from]
            .pages
            .iter()
            .copied()
            .filter(|&p| Some(p) != protected_page && !self.page_lent(p))
            .min_by_key(|&p| self.slab.page_used(p))
        else {
            return false;
        };
        self.slab.start_drain(page);
        for id in self.slab.items_in_page(page) {
            if self.is_dead(id) {
                self.reclaim_item(id);
            } else if let Some(new) = self
                .slab
                .pop_free(from)
                .or_else(|| self.free_outside(from, page))
            {
                self.slab.copy_item(id, new);
                self.policy.on_move(&mut self.slab, from, id, new);
                let c = self.slab.chunk(new);
                let (hash, size) = (key_hash(item::key(c)), Header::load(c).total_size());
                self.index.relink(hash, id, new);
                self.slab.account(from, 0, size);
                self.slab.free(id);
                self.stats.slab_reassign_rescues += 1;
            } else {
                self.stats.slab_reassign_evictions += 1;
                self.evict_item(id, false);
            }
        }
        self.slab.finish_drain(page, to);
        self.stats.slabs_moved += 1;
        true
    }

    /// A free chunk of `class` outside the draining `page`, made by reclaiming or evicting the
    /// policy's victim there: a live item of the page then moves into it, so the page mover
    /// evicts the class's coldest items (as memcached's mover pulls its LRU tail), not whatever
    /// sits on the page it empties. None when the victims are all on that page.
    fn free_outside(&mut self, class: usize, page: u32) -> Option<ItemId> {
        let mut cands = std::mem::take(&mut self.candidates);
        cands.clear();
        let now = self.clock.now();
        self.policy
            .candidates(&mut self.slab, class, SEARCH_DEPTH, now, &mut cands);
        cands.retain(|&id| {
            id != self.protect && !self.is_lent(id) && self.slab.page_index(id) != page
        });
        let victim = cands
            .iter()
            .copied()
            .find(|&id| self.is_dead(id))
            .or_else(|| cands.first().copied());
        self.candidates = cands;
        let victim = victim?;
        if self.is_dead(victim) {
            self.reclaim_item(victim);
        } else if self.config.evictions {
            self.stats.slab_reassign_evictions += 1;
            self.evict_item(victim, false);
        } else {
            return None;
        }
        self.slab.pop_free(class)
    }
}
