//! Item header layout: 32 bytes in front of key and value in every chunk.
//!
//! ```text
//! offset size field
//!  0     4    policy word 0   LRU/FIFO: prev id, top bit = LRU "active" mark; LFU: frequency
//!                             counter; S3-FIFO: prev id (31 bits), top bit = frequency's high
//!                             bit; free chunk: prev free
//!  4     4    policy word 1   LRU/FIFO: next id; S3-FIFO: next id (31 bits), top bit =
//!                             frequency's low bit; free chunk: next free
//!  8     8    marks | cas | klen   bit 63 = win token handed out, bit 62 = explicit CAS trailer
//!                             follows the value, bits 8..62 = 54-bit CAS counter, bits 0..8 = key
//!                             length (0 marks a free chunk)
//! 16     4    exptime         seconds since the store epoch, 0 = never (see `clock`)
//! 20     4    atime           last access, seconds since the store epoch
//! 24     4    flags           the client's opaque flags
//! 28     4    vlen | bits     value length (30 bits, so values stay under 1 GiB), bit 30 =
//!                             fetched since stored, bit 31 = stale (invalidated, still served)
//! ```
//!
//! An item stored with an explicit CAS (a client-chosen wire CAS) carries it as an 8-byte trailer
//! after the value; the header keeps a fresh counter all the same, so flush and the replication
//! version still order it with the rest of the shard.
//!
//! Why: links are `u32` chunk ids (not pointers; ids stay below 2^31, so each policy word has a
//! spare top bit for the policy), so two links cost 8 bytes; a key fits in 8 bits
//! (at most 250 bytes), which leaves 56 bits in one word: 2 for the stampede marks (the policy
//! words' top bits belong to the policies, and the atime/exptime words use all 32 bits since the
//! clock's epoch is 2^31 s back) and 54 of CAS — 2^54 mutations last 57 years at 10 million a
//! second on one shard. Times are `u32` seconds relative to the store epoch. The two
//! policy words belong to the eviction policy (see `evict`): S3-FIFO keeps its queue links there and
//! its 2-bit frequency in the two spare top bits; which queue an item is on does not fit as well,
//! so S3-FIFO keeps that bit outside the header (see `evict/s3fifo.rs`). The key's hash is not
//! stored: the index recomputes it from the key on the rare rehash or unlink-by-id.
//!
//! Replication (design §9) needs a version comparable across hosts: the 54-bit CAS counter is the
//! version. With hybrid versions (`VersionClock::Hybrid`) it holds milliseconds since 2025 in its
//! high 41 bits and a logical count in the low 13, and an item applied from a peer keeps the
//! origin's version as its counter (the shard-unique wire CAS is derived from it, never stored:
//! 54 bits times at most 256 shards fits a `u64`), so the header needs no new field. Deleted keys
//! are remembered outside the slab, in `tombs.rs`.

/// Bytes of header in front of key and value.
pub(crate) const HEADER_SIZE: usize = 32;

/// Largest value length the header can hold.
pub(crate) const MAX_VALUE_LEN: usize = (1 << 30) - 1;

const VLEN_MASK: u32 = (1 << 30) - 1;
const FETCHED_BIT: u32 = 1 << 30;
const STALE_BIT: u32 = 1 << 31;
const TOKEN_BIT: u64 = 1 << 63;
const EXPLICIT_BIT: u64 = 1 << 62;

/// Mask of the 54-bit CAS counter.
pub(crate) const CAS_MASK: u64 = (1 << 54) - 1;

/// Bytes of the explicit-CAS trailer.
pub(crate) const EXPLICIT_CAS_LEN: usize = 8;

/// Chunk id: page number in the high bits, slot in the page in the low bits (see `slab`).
pub(crate) type ItemId = u32;

/// The id that means "no item" in links.
pub(crate) const NIL: ItemId = u32::MAX;

/// The header fields, decoded. Field order and widths mirror the byte layout above.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Header {
    /// Policy word 0.
    pub w0: u32,
    /// Policy word 1.
    pub w1: u32,
    /// CAS counter (56 bits) and key length (8 bits).
    pub cas_klen: u64,
    /// Relative expiry, 0 = never.
    pub exptime: u32,
    /// Relative last-access time.
    pub atime: u32,
    /// Client flags.
    pub flags: u32,
    /// Value length and status bits.
    pub vlen_bits: u32,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(HEADER_SIZE <= 32, "item metadata budget is 32 bytes");

const W0: usize = 0;
const W1: usize = 4;
const CAS_KLEN: usize = 8;
const EXPTIME: usize = 16;
const ATIME: usize = 20;
const FLAGS: usize = 24;
const VLEN: usize = 28;

#[inline]
fn rd32(c: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(c[at..at + 4].try_into().unwrap())
}

#[inline]
fn wr32(c: &mut [u8], at: usize, v: u32) {
    c[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn rd64(c: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(c[at..at + 8].try_into().unwrap())
}

#[inline]
fn wr64(c: &mut [u8], at: usize, v: u64) {
    c[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl Header {
    /// A header for a new item (links cleared, not fetched).
    pub(crate) fn new(
        cas: u64,
        key_len: usize,
        value_len: usize,
        flags: u32,
        exptime: u32,
    ) -> Self {
        debug_assert!(key_len > 0 && key_len <= 255);
        debug_assert!(value_len <= MAX_VALUE_LEN);
        Header {
            w0: NIL,
            w1: NIL,
            cas_klen: ((cas & CAS_MASK) << 8) | key_len as u64,
            exptime,
            atime: 0,
            flags,
            vlen_bits: value_len as u32,
        }
    }

    /// Reads the header at the front of a chunk.
    #[inline]
    pub(crate) fn load(c: &[u8]) -> Header {
        Header {
            w0: rd32(c, W0),
            w1: rd32(c, W1),
            cas_klen: rd64(c, CAS_KLEN),
            exptime: rd32(c, EXPTIME),
            atime: rd32(c, ATIME),
            flags: rd32(c, FLAGS),
            vlen_bits: rd32(c, VLEN),
        }
    }

    /// Writes the header at the front of a chunk.
    #[inline]
    pub(crate) fn store(&self, c: &mut [u8]) {
        wr32(c, W0, self.w0);
        wr32(c, W1, self.w1);
        wr64(c, CAS_KLEN, self.cas_klen);
        wr32(c, EXPTIME, self.exptime);
        wr32(c, ATIME, self.atime);
        wr32(c, FLAGS, self.flags);
        wr32(c, VLEN, self.vlen_bits);
    }

    /// The CAS counter (the chunk accessor serves the store; this one the tests).
    #[inline]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn cas(&self) -> u64 {
        (self.cas_klen >> 8) & CAS_MASK
    }

    /// Whether the item was invalidated (served, marked stale).
    #[inline]
    pub(crate) fn stale(&self) -> bool {
        self.vlen_bits & STALE_BIT != 0
    }

    /// Whether a win token was handed out for this item.
    #[inline]
    pub(crate) fn token_sent(&self) -> bool {
        self.cas_klen & TOKEN_BIT != 0
    }

    /// Whether an explicit-CAS trailer follows the value.
    #[inline]
    pub(crate) fn has_explicit_cas(&self) -> bool {
        self.cas_klen & EXPLICIT_BIT != 0
    }

    /// Key length in bytes (0 for a free chunk).
    #[inline]
    pub(crate) fn key_len(&self) -> usize {
        (self.cas_klen & 0xff) as usize
    }

    /// Value length in bytes.
    #[inline]
    pub(crate) fn value_len(&self) -> usize {
        (self.vlen_bits & VLEN_MASK) as usize
    }

    /// Whether the item was read since it was stored.
    #[inline]
    pub(crate) fn fetched(&self) -> bool {
        self.vlen_bits & FETCHED_BIT != 0
    }

    /// Bytes this item occupies in its chunk (memcached's item size for `bytes`).
    #[inline]
    pub(crate) fn total_size(&self) -> usize {
        let trailer = if self.has_explicit_cas() {
            EXPLICIT_CAS_LEN
        } else {
            0
        };
        HEADER_SIZE + self.key_len() + self.value_len() + trailer
    }
}

/// Item size for a key and value of these lengths.
#[inline]
pub(crate) fn item_size(key_len: usize, value_len: usize) -> usize {
    HEADER_SIZE + key_len + value_len
}

// Field accessors on a chunk's bytes, for the hot paths that touch one field.

/// Policy word 0.
#[inline]
pub(crate) fn w0(c: &[u8]) -> u32 {
    rd32(c, W0)
}

/// Policy word 1.
#[inline]
pub(crate) fn w1(c: &[u8]) -> u32 {
    rd32(c, W1)
}

/// Sets policy word 0.
#[inline]
pub(crate) fn set_w0(c: &mut [u8], v: u32) {
    wr32(c, W0, v)
}

/// Sets policy word 1.
#[inline]
pub(crate) fn set_w1(c: &mut [u8], v: u32) {
    wr32(c, W1, v)
}

/// Key length (0 = free chunk).
#[inline]
pub(crate) fn key_len(c: &[u8]) -> usize {
    c[CAS_KLEN] as usize
}

/// Marks a chunk free (key length 0).
#[inline]
pub(crate) fn mark_free(c: &mut [u8]) {
    wr64(c, CAS_KLEN, 0);
}

/// The key bytes.
#[inline]
pub(crate) fn key(c: &[u8]) -> &[u8] {
    &c[HEADER_SIZE..HEADER_SIZE + key_len(c)]
}

/// Relative expiry.
#[inline]
pub(crate) fn exptime(c: &[u8]) -> u32 {
    rd32(c, EXPTIME)
}

/// Sets the relative expiry.
#[inline]
pub(crate) fn set_exptime(c: &mut [u8], v: u32) {
    wr32(c, EXPTIME, v)
}

/// Relative last-access time.
#[inline]
pub(crate) fn atime(c: &[u8]) -> u32 {
    rd32(c, ATIME)
}

/// Sets the relative last-access time.
#[inline]
pub(crate) fn set_atime(c: &mut [u8], v: u32) {
    wr32(c, ATIME, v)
}

/// The CAS counter.
#[inline]
pub(crate) fn cas(c: &[u8]) -> u64 {
    (rd64(c, CAS_KLEN) >> 8) & CAS_MASK
}

/// Sets or clears the stale mark.
#[inline]
pub(crate) fn set_stale(c: &mut [u8], on: bool) {
    let v = rd32(c, VLEN);
    wr32(c, VLEN, if on { v | STALE_BIT } else { v & !STALE_BIT });
}

/// Sets or clears the "win token handed out" mark.
#[inline]
pub(crate) fn set_token_sent(c: &mut [u8], on: bool) {
    let v = rd64(c, CAS_KLEN);
    wr64(c, CAS_KLEN, if on { v | TOKEN_BIT } else { v & !TOKEN_BIT });
}

/// Writes an explicit wire CAS after the value and marks the header; the chunk must have room.
pub(crate) fn set_explicit_cas(c: &mut [u8], wire_cas: u64) {
    let h = Header::load(c);
    let at = HEADER_SIZE + h.key_len() + h.value_len();
    wr64(c, at, wire_cas);
    wr64(c, CAS_KLEN, h.cas_klen | EXPLICIT_BIT);
}

/// Drops the explicit-CAS mark (the trailer bytes become slack).
pub(crate) fn clear_explicit_cas(c: &mut [u8]) {
    let v = rd64(c, CAS_KLEN);
    wr64(c, CAS_KLEN, v & !EXPLICIT_BIT);
}

/// The explicit wire CAS of an item, if it has one.
#[inline]
pub(crate) fn explicit_cas(c: &[u8]) -> Option<u64> {
    let h = Header::load(c);
    h.has_explicit_cas()
        .then(|| rd64(c, HEADER_SIZE + h.key_len() + h.value_len()))
}

/// Whether the item was read since it was stored.
#[inline]
pub(crate) fn fetched(c: &[u8]) -> bool {
    rd32(c, VLEN) & FETCHED_BIT != 0
}

/// Marks the item as read.
#[inline]
pub(crate) fn set_fetched(c: &mut [u8]) {
    let v = rd32(c, VLEN);
    if v & FETCHED_BIT == 0 {
        wr32(c, VLEN, v | FETCHED_BIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_bytes() {
        let mut h = Header::new(CAS_MASK, 250, MAX_VALUE_LEN, 0xdead_beef, 77);
        h.atime = 5;
        h.w0 = 1;
        h.w1 = 2;
        let mut buf = [0u8; HEADER_SIZE];
        h.store(&mut buf);
        let back = Header::load(&buf);
        assert_eq!(back, h);
        assert_eq!(back.cas(), CAS_MASK);
        assert_eq!(back.key_len(), 250);
        assert_eq!(back.value_len(), MAX_VALUE_LEN);
        assert!(!back.fetched());
        assert_eq!(back.total_size(), HEADER_SIZE + 250 + MAX_VALUE_LEN);
    }

    #[test]
    fn field_accessors_agree_with_header() {
        let mut buf = [0u8; 64];
        Header::new(42, 3, 7, 9, 11).store(&mut buf);
        buf[HEADER_SIZE..HEADER_SIZE + 3].copy_from_slice(b"abc");
        assert_eq!(key(&buf), b"abc");
        assert_eq!(cas(&buf), 42);
        assert_eq!(exptime(&buf), 11);
        set_fetched(&mut buf);
        assert!(fetched(&buf));
        assert_eq!(Header::load(&buf).value_len(), 7);
        set_w0(&mut buf, 5);
        set_w1(&mut buf, 6);
        assert_eq!((w0(&buf), w1(&buf)), (5, 6));
        mark_free(&mut buf);
        assert_eq!(key_len(&buf), 0);
    }

    #[test]
    fn marks_live_beside_the_fields_they_share_a_word_with() {
        let mut buf = [0u8; 64];
        Header::new(CAS_MASK, 3, 7, 9, 11).store(&mut buf);
        set_stale(&mut buf, true);
        set_token_sent(&mut buf, true);
        set_fetched(&mut buf);
        let h = Header::load(&buf);
        assert!(h.stale() && h.token_sent() && h.fetched());
        assert_eq!((h.cas(), h.key_len(), h.value_len()), (CAS_MASK, 3, 7));
        assert_eq!(explicit_cas(&buf), None);
        set_explicit_cas(&mut buf, u64::MAX);
        let h = Header::load(&buf);
        assert_eq!(explicit_cas(&buf), Some(u64::MAX));
        assert_eq!(h.total_size(), HEADER_SIZE + 3 + 7 + EXPLICIT_CAS_LEN);
        assert_eq!(h.cas(), CAS_MASK);
        set_stale(&mut buf, false);
        set_token_sent(&mut buf, false);
        let h = Header::load(&buf);
        assert!(!h.stale() && !h.token_sent() && h.fetched() && h.has_explicit_cas());
    }

    #[test]
    fn cas_counter_is_truncated_to_54_bits() {
        let h = Header::new(u64::MAX, 1, 0, 0, 0);
        assert_eq!(h.cas(), CAS_MASK);
        assert_eq!(h.key_len(), 1);
    }
}
