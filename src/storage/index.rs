//! Hash index: key -> chunk id, in a `hashbrown::HashTable<u32>` (4 bytes per slot plus hashbrown's
//! 1 control byte).
//!
//! The caller passes the request's precomputed [`key_hash`](super::key_hash). hashbrown picks the
//! bucket from the low bits and the tag from the top 7 bits; the server chooses the shard from bits
//! 24..56, so the bits this table relies on are independent of the shard choice and each shard's
//! table fills evenly. The hash is not stored: on a rehash, and when an item is removed by id
//! (eviction, page moves), it is recomputed from the stored key.

use hashbrown::HashTable;

use super::item::{self, ItemId};
use super::key_hash;
use super::slab::Slab;

/// Key -> item id.
pub(crate) struct Index {
    table: HashTable<ItemId>,
}

impl Index {
    /// An empty index.
    pub(crate) fn new() -> Index {
        Index {
            table: HashTable::new(),
        }
    }

    /// The item stored under `key`, if any.
    #[inline]
    pub(crate) fn find(&self, slab: &Slab, key: &[u8], hash: u64) -> Option<ItemId> {
        self.table
            .find(hash, |&id| item::key(slab.chunk(id)) == key)
            .copied()
    }

    /// Asks the CPU to bring in the items `hash` may name, without waiting for them: a caller
    /// that knows its next key while it still works on the current one hides the next lookup's
    /// memory latency behind that work. Walking the probe sequence also loads the table's own
    /// bytes for that lookup.
    #[inline]
    pub(crate) fn prefetch(&self, slab: &Slab, hash: u64) {
        // The predicate never matches, so every candidate of the tag is visited and none is
        // compared: comparing would wait for the very load this starts.
        let _ = self.table.find(hash, |&id| {
            prefetch_lines(slab.chunk(id));
            false
        });
    }

    /// Adds an id whose key is not in the index.
    #[inline]
    pub(crate) fn insert(&mut self, slab: &Slab, hash: u64, id: ItemId) {
        self.table
            .insert_unique(hash, id, |&other| key_hash(item::key(slab.chunk(other))));
    }

    /// Removes an id (its key hashing to `hash`); returns whether it was there.
    #[inline]
    pub(crate) fn remove(&mut self, hash: u64, id: ItemId) -> bool {
        match self.table.find_entry(hash, |&x| x == id) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Points the entry of `old` at `new` (the item moved to another chunk).
    pub(crate) fn relink(&mut self, hash: u64, old: ItemId, new: ItemId) {
        if let Some(slot) = self.table.find_mut(hash, |&x| x == old) {
            *slot = new;
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Bytes the table holds (slots and control bytes, approximately).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets() * (std::mem::size_of::<ItemId>() + 1)
    }

    /// Slots of the table (approximately: capacity over the load factor).
    pub(crate) fn buckets(&self) -> usize {
        self.table.capacity() * 8 / 7
    }
}

/// How much of a chunk [`Index::prefetch`] asks for: the header, a key, and a small value.
const PREFETCH_BYTES: usize = 192;

/// Hints the CPU to load the cache lines of the first [`PREFETCH_BYTES`] of `bytes`.
#[inline]
fn prefetch_lines(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes[..bytes.len().min(PREFETCH_BYTES)].chunks(64) {
        // SAFETY: `_mm_prefetch` is only a hint: it reads nothing into the program, never
        // faults, and is given an address inside a live slice; SSE is part of x86_64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::item::Header;

    fn put(slab: &mut Slab, key: &[u8]) -> ItemId {
        let id = slab.pop_free(0).unwrap();
        let c = slab.chunk_mut(id);
        Header::new(1, key.len(), 0, 0, 0).store(c);
        c[item::HEADER_SIZE..item::HEADER_SIZE + key.len()].copy_from_slice(key);
        id
    }

    #[test]
    fn finds_inserts_relinks_and_removes() {
        let mut slab = Slab::new(1 << 20, 1 << 20, 1.25).unwrap();
        assert!(slab.grow(0));
        let mut index = Index::new();
        let ids: Vec<ItemId> = (0..1000u32)
            .map(|i| {
                let key = format!("key{i}");
                let id = put(&mut slab, key.as_bytes());
                index.insert(&slab, key_hash(key.as_bytes()), id);
                id
            })
            .collect();
        assert_eq!(index.len(), 1000);
        for (i, &id) in ids.iter().enumerate() {
            let key = format!("key{i}");
            assert_eq!(
                index.find(&slab, key.as_bytes(), key_hash(key.as_bytes())),
                Some(id)
            );
        }
        assert_eq!(index.find(&slab, b"nope", key_hash(b"nope")), None);
        let h = key_hash(b"key7");
        let moved = put(&mut slab, b"key7");
        index.relink(h, ids[7], moved);
        assert_eq!(index.find(&slab, b"key7", h), Some(moved));
        assert!(index.remove(h, moved));
        assert!(!index.remove(h, moved));
        assert_eq!(index.find(&slab, b"key7", h), None);
        assert!(index.heap_bytes() >= 999 * 5);
    }
}
