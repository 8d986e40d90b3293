//! One shard's replication backlog: the frames of its recent mutations, numbered, bounded in
//! bytes. Every peer stream reads it from its own position; a peer whose position fell out of
//! it needs a full resync.
//!
//! The frames live back to back in one ring of `cap` bytes, allocated once (zeroed lazily by the
//! kernel, so untouched bytes cost no memory) and encoded through one reused scratch buffer: a
//! replicated write costs two copies and no allocation.

use std::collections::VecDeque;

/// Where one numbered record's frame is, and the peers it is for.
struct Record {
    /// Bit `i`: cluster member `i` owns the record's key (or, for a flush, every member).
    peers: u64,
    /// Offset of the frame's first byte in the stream of all bytes ever pushed.
    start: u64,
    len: u32,
}

/// Per-record bytes counted on top of the frame (the record's own fields and queue slot).
pub const RECORD_OVERHEAD: usize = 40;

/// Bounded, numbered mutation records of one shard.
pub struct Backlog {
    /// The records held, oldest first; the front one is number `next_seq - records.len()`.
    records: VecDeque<Record>,
    ring: Box<[u8]>,
    /// Bytes ever pushed into the ring (a frame's `start` is taken from it).
    pushed: u64,
    scratch: Vec<u8>,
    /// The number the next record gets (1 for the first).
    next_seq: u64,
    /// Frame bytes plus RECORD_OVERHEAD per record held.
    bytes: usize,
    cap: usize,
    /// Records dropped from the front to stay within `cap`.
    pub dropped: u64,
}

/// What [`Backlog::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Frames appended; the position now covered (records for other peers included).
    Upto(u64),
    /// Records after the position were dropped already: a full resync is needed.
    Gap,
}

impl Backlog {
    /// An empty backlog of at most `cap` bytes.
    pub fn new(cap: usize) -> Backlog {
        Backlog {
            records: VecDeque::new(),
            ring: vec![0; cap].into_boxed_slice(),
            pushed: 0,
            scratch: Vec::new(),
            next_seq: 1,
            bytes: 0,
            cap,
            dropped: 0,
        }
    }

    /// The position of the last record (0 when none was ever added).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The position of the oldest record held (`next_seq` when none is).
    fn first_seq(&self) -> u64 {
        self.next_seq - self.records.len() as u64
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a peer at position `at` can go on from the backlog (every record after it is
    /// still held).
    pub fn covers(&self, at: u64) -> bool {
        // With no record held, only the last position is covered: what was pushed after any
        // earlier one was dropped.
        at <= self.last_seq() && self.first_seq() <= at + 1
    }

    /// Adds the record `encode` writes (given its number) for `peers`; drops the oldest
    /// records beyond the cap. Returns the record's number.
    pub fn push(&mut self, peers: u64, encode: impl FnOnce(u64, &mut Vec<u8>)) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.scratch.clear();
        encode(seq, &mut self.scratch);
        let len = self.scratch.len();
        let cost = len + RECORD_OVERHEAD;
        while self.bytes + cost > self.cap {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.len as usize + RECORD_OVERHEAD;
            self.dropped += 1;
        }
        if cost > self.cap {
            // Larger than the whole backlog: it cannot be kept, so it is dropped like the rest
            // and every peer that needs it resyncs.
            self.dropped += 1;
            return seq;
        }
        let start = self.pushed;
        self.pushed += len as u64;
        let at = (start % self.cap as u64) as usize;
        let first = len.min(self.cap - at);
        self.ring[at..at + first].copy_from_slice(&self.scratch[..first]);
        self.ring[..len - first].copy_from_slice(&self.scratch[first..]);
        self.bytes += cost;
        self.records.push_back(Record {
            peers,
            start,
            len: len as u32,
        });
        seq
    }

    /// Appends to `out` the frames after position `after` that are for `peer`, until `out`
    /// holds `max` bytes.
    pub fn read(&self, after: u64, peer: usize, out: &mut Vec<u8>, max: usize) -> Read {
        if !self.covers(after) {
            return Read::Gap;
        }
        if self.records.is_empty() {
            return Read::Upto(after);
        }
        let first_seq = self.first_seq();
        let skip = (after + 1).saturating_sub(first_seq) as usize;
        let mut upto = after;
        for (i, r) in self.records.iter().enumerate().skip(skip) {
            if out.len() >= max {
                break;
            }
            if r.peers & (1 << peer) != 0 {
                let at = (r.start % self.cap as u64) as usize;
                let len = r.len as usize;
                let first = len.min(self.cap - at);
                out.extend_from_slice(&self.ring[at..at + first]);
                out.extend_from_slice(&self.ring[..len - first]);
            }
            upto = first_seq + i as u64;
        }
        Read::Upto(upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_peer_its_records_in_order_and_reports_gaps() {
        let mut b = Backlog::new(10_000);
        for i in 0..10u8 {
            // Even records for peer 0, all for peer 1.
            let peers = if i % 2 == 0 { 0b11 } else { 0b10 };
            b.push(peers, |seq, out| {
                assert_eq!(seq, u64::from(i) + 1);
                out.push(i)
            });
        }
        let mut out = Vec::new();
        assert_eq!(b.read(0, 0, &mut out, 1 << 20), Read::Upto(10));
        assert_eq!(out, [0, 2, 4, 6, 8]);
        out.clear();
        assert_eq!(b.read(7, 1, &mut out, 1 << 20), Read::Upto(10));
        assert_eq!(out, [7, 8, 9]);
        out.clear();
        assert_eq!(b.read(10, 1, &mut out, 1 << 20), Read::Upto(10));
        assert!(out.is_empty());
        // A read stops at `max` bytes and says how far it got.
        assert_eq!(b.read(0, 1, &mut out, 3), Read::Upto(3));
        assert_eq!(out, [0, 1, 2]);
        // Past the end is not covered.
        assert!(!b.covers(11));
    }

    #[test]
    fn frames_that_wrap_around_the_ring_read_back_whole() {
        let cap = 3 * (RECORD_OVERHEAD + 50);
        let mut b = Backlog::new(cap);
        for i in 0..20u8 {
            // Lengths that do not divide the ring, so frames straddle its end.
            b.push(1, |_, out| {
                out.extend(std::iter::repeat_n(i, 37 + usize::from(i % 5)))
            });
            let mut out = Vec::new();
            assert_eq!(
                b.read(u64::from(i), 0, &mut out, 1 << 20),
                Read::Upto(u64::from(i) + 1)
            );
            assert_eq!(out, vec![i; 37 + usize::from(i % 5)]);
        }
        // A frame larger than the backlog is dropped with the rest: the peers resync.
        b.push(1, |_, out| out.extend_from_slice(&[9; 1000]));
        assert_eq!(b.bytes(), 0);
        let mut out = Vec::new();
        assert_eq!(b.read(20, 0, &mut out, 1 << 20), Read::Gap);
        b.push(1, |_, out| out.push(7));
        assert_eq!(b.read(21, 0, &mut out, 1 << 20), Read::Upto(22));
        assert_eq!(out, [7]);
    }

    #[test]
    fn stays_within_its_cap_and_then_asks_for_a_full_resync() {
        let mut b = Backlog::new(10 * (RECORD_OVERHEAD + 100));
        for _ in 0..25 {
            b.push(1, |_, out| out.extend_from_slice(&[0; 100]));
        }
        assert!(b.bytes() <= 10 * (RECORD_OVERHEAD + 100));
        assert_eq!(b.dropped, 15);
        let mut out = Vec::new();
        assert_eq!(b.read(3, 0, &mut out, 1 << 20), Read::Gap);
        assert!(b.covers(15));
        assert_eq!(b.read(15, 0, &mut out, 1 << 20), Read::Upto(25));
        assert_eq!(out.len(), 1000);
    }
}
