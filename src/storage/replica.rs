//! The storage half of replication between hosts: versions comparable across hosts, the
//! replicable state of a key ([`Replica`]), last-writer-wins apply, tombstones and the resync
//! walk.
//!
//! A key's state is its live item or its tombstone, each with a version: the 54-bit counter of
//! the item header (`item.rs`). With [`VersionClock::Hybrid`](super::VersionClock) versions come
//! from a hybrid logical clock, so versions issued on different hosts order by time, and every
//! apply raises the clock past what it saw, so a later local write always wins over it.
//!
//! Apply is a merge: of two states the one with the greater version wins; equal versions with
//! different contents fall to a fixed comparison of the contents, the same on every host. So
//! applying records in any order, any number of times, leaves every host with the same state
//! (as long as memory holds it all and nothing expires in between).
//!
//! Tombstones (`tombs.rs`) remember deletes for `tombstone_secs` so a late, older write cannot
//! bring a deleted key back; after that (or when their budget is full) they go, and such a write
//! would win again. Only deletes a client asked for leave them: expiry and eviction do not.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::item::{self, Header, ItemId, CAS_MASK, HEADER_SIZE};
use super::walk::{self, Cursor};
use super::{check_key, clock, Store, StoreError};

/// Start of the hybrid clock's milliseconds: 2025-01-01T00:00Z, in Unix milliseconds.
pub const VERSION_EPOCH_MS: u64 = 1_735_689_600_000;

/// Low bits of a hybrid version that count events within one millisecond.
pub const LOGICAL_BITS: u32 = 13;

/// Largest millisecond count the 54-bit version holds (41 bits: about 69 years).
const MAX_MS: u64 = (1 << (54 - LOGICAL_BITS)) - 1;

/// The hybrid clock's reading of the wall clock now: its milliseconds, no logical count.
pub(crate) fn wall_version() -> u64 {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    unix_ms.saturating_sub(VERSION_EPOCH_MS).min(MAX_MS) << LOGICAL_BITS
}

/// The replicable state of one key: a live item, or a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value; empty for a tombstone.
    pub value: &'a [u8],
    /// Client flags.
    pub flags: u32,
    /// Absolute expiry in Unix seconds, 0 = never (0 for a tombstone).
    pub exptime: u64,
    /// The 54-bit version, never 0.
    pub version: u64,
    /// A tombstone.
    pub deleted: bool,
}

impl Replica<'_> {
    /// Whether this state wins over `other` (see the module docs).
    fn beats(&self, other: &Replica<'_>) -> bool {
        let mine = (self.deleted, self.value, self.flags, self.exptime);
        let theirs = (other.deleted, other.value, other.flags, other.exptime);
        self.version
            .cmp(&other.version)
            .then_with(|| mine.cmp(&theirs))
            == Ordering::Greater
    }
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record won and is now the key's state.
    Applied,
    /// The local state is as new or newer (or was flushed after it): nothing changed.
    Older,
    /// The record won but could not be stored (too large, out of memory), as a set would fail.
    Failed(StoreError),
}

/// Where a [`Store::walk_replicas`] goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaCursor(At);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// In the items, chunk order.
    Items(Cursor),
    /// In the tombstones, at this slot.
    Tombs(usize),
}

impl ReplicaCursor {
    /// The start of a walk.
    pub const START: ReplicaCursor = ReplicaCursor(At::Items(Cursor::START));
}

impl Store {
    /// The replicable state of `key` now (after a local mutation): its live item, else its
    /// tombstone, else `None`.
    pub fn replica(&self, key: &[u8], hash: u64) -> Option<Replica<'_>> {
        match self.index.find(&self.slab, key, hash) {
            Some(id) if !self.is_dead(id) => Some(self.item_replica(id)),
            // A dead item never coexists with a tombstone (writes remove the tombstone).
            Some(_) => None,
            None => self
                .tombs
                .get(key, hash)
                .map(|t| tomb_replica(t.key, t.version)),
        }
    }

    /// Last-writer-wins apply of a replicated state (item or tombstone).
    ///
    /// The record wins when its version is greater than the local item's (live or not) or
    /// tombstone's; on equal versions with different contents the greater `(deleted, value,
    /// flags, exptime)` wins; equal and same contents is [`Applied::Older`], as is a version
    /// below the last flush, or an invalid one (0 or over 54 bits). A winning item is stored
    /// with the record's version as its counter through the normal allocation and eviction
    /// path (`curr_items`, `bytes`, `total_items` move; no command counter does); one already
    /// expired is not stored but still removes the older local item. A winning tombstone
    /// unlinks the local item and, with hybrid versions, is recorded. Either way the hybrid
    /// clock is raised to the version, so a later local write of the key gets a greater one.
    pub fn apply(&mut self, r: &Replica<'_>, hash: u64) -> Applied {
        if check_key(r.key).is_err() {
            return Applied::Failed(StoreError::BadKey);
        }
        let version = r.version;
        if version == 0 || version > CAS_MASK || version < self.flush_below {
            return Applied::Older;
        }
        self.observe_version(version);
        let old = self.index.find(&self.slab, r.key, hash);
        let local = match old {
            Some(id) => Some(self.item_replica(id)),
            None => self
                .tombs
                .get(r.key, hash)
                .map(|t| tomb_replica(t.key, t.version)),
        };
        if local.is_some_and(|l| !r.beats(&l)) {
            return Applied::Older;
        }
        if r.deleted {
            if let Some(id) = old {
                self.unlink(id, Some(hash));
            }
            if self.hybrid {
                self.bury_at(r.key, hash, version);
            }
            return Applied::Applied;
        }
        let Some(exp) = self.clock.absolute(r.exptime) else {
            // Dead on arrival: the older local item goes, a tombstone stays (it still guards
            // against writes older than itself).
            if let Some(id) = old {
                self.unlink(id, Some(hash));
            }
            return Applied::Applied;
        };
        if item::item_size(r.key.len(), r.value.len()) > self.max_item {
            self.stats.store_too_large += 1;
            // As a failed set: the older value must not stay readable.
            if let Some(id) = old {
                self.unlink(id, Some(hash));
            }
            return Applied::Failed(StoreError::TooLarge);
        }
        // Linking the new item drops the key's tombstone, if any.
        match self.put_as(old, r.key, hash, r.value, r.flags, exp, 0, version, false) {
            Ok(_) => Applied::Applied,
            Err(e) => Applied::Failed(e),
        }
    }

    /// A replicated touch or get-and-touch: sets the absolute expiry (Unix seconds, 0 = never)
    /// of the key's item when its version equals `version` (the touch changed no version where
    /// it ran); else [`Applied::Older`]. No counter, recency or fetched mark moves.
    pub fn apply_touch(&mut self, key: &[u8], hash: u64, version: u64, exptime: u64) -> Applied {
        if check_key(key).is_err() {
            return Applied::Failed(StoreError::BadKey);
        }
        if version == 0 || version > CAS_MASK || version < self.flush_below {
            return Applied::Older;
        }
        self.observe_version(version);
        let Some(id) = self.index.find(&self.slab, key, hash) else {
            return Applied::Older;
        };
        if item::cas(self.slab.chunk(id)) != version {
            return Applied::Older;
        }
        // A time already past expires the item, as a touch with a past exptime does.
        let exp = self.clock.absolute(exptime).unwrap_or(self.clock.now());
        item::set_exptime(self.slab.chunk_mut(id), exp);
        Applied::Applied
    }

    /// Raises the version clock to at least `version` (a peer's heartbeat, or an applied
    /// record): the next local write gets a greater version.
    pub fn observe_version(&mut self, version: u64) {
        let v = version & CAS_MASK;
        if v > self.cas_counter {
            self.cas_counter = v;
        }
    }

    /// One bounded step of a full-resync walk: calls `f` for each live item (chunk order) and
    /// then each tombstone from `cursor` on, examining at most `budget` chunks or tombstone
    /// slots; returns the cursor to go on from, `None` when done. As with [`Store::walk`],
    /// changes between steps (pages moving, tombstone slots reused) may make a walk miss or
    /// repeat a key; such a key changed meanwhile, so its own record is on its way anyway.
    pub fn walk_replicas(
        &self,
        cursor: ReplicaCursor,
        budget: usize,
        mut f: impl FnMut(Replica<'_>),
    ) -> Option<ReplicaCursor> {
        let (mut slot, mut spent) = match cursor.0 {
            At::Items(c) => {
                let mut store = self;
                let (next, spent) = walk::walk_ids(
                    &mut store,
                    |_| true,
                    c,
                    budget,
                    |s, id| {
                        let s: &Store = s;
                        if item::key_len(s.slab.chunk(id)) != 0 && !s.is_dead(id) {
                            f(s.item_replica(id));
                        }
                    },
                );
                if let Some(next) = next {
                    return Some(ReplicaCursor(At::Items(next)));
                }
                (0, spent)
            }
            At::Tombs(slot) => (slot, 0),
        };
        while spent < budget {
            if slot >= self.tombs.slot_count() {
                return None;
            }
            if let Some(t) = self.tombs.at(slot) {
                f(tomb_replica(t.key, t.version));
            }
            slot += 1;
            spent += 1;
        }
        (slot < self.tombs.slot_count()).then_some(ReplicaCursor(At::Tombs(slot)))
    }

    /// The state of linked item `id` (dead or not).
    fn item_replica(&self, id: ItemId) -> Replica<'_> {
        let c = self.slab.chunk(id);
        let h = Header::load(c);
        let start = HEADER_SIZE + h.key_len();
        Replica {
            key: item::key(c),
            value: &c[start..start + h.value_len()],
            flags: h.flags,
            exptime: match h.exptime {
                clock::NEVER => 0,
                exp => self.clock.to_unix(exp),
            },
            version: item::cas(c),
            deleted: false,
        }
    }
}

fn tomb_replica(key: &[u8], version: u64) -> Replica<'_> {
    Replica {
        key,
        value: &[],
        flags: 0,
        exptime: 0,
        version,
        deleted: true,
    }
}

#[cfg(test)]
mod tests;
