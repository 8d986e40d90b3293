//! One shard's replication backlog: the frames of its recent mutations, numbered, bounded in
//! bytes. Every peer stream reads it from its own position; a peer whose position fell out of
//! it needs a full resync.

use std::collections::VecDeque;

/// A numbered record and the peers it is for.
struct Record {
    seq: u64,
    /// Bit `i`: cluster member `i` owns the record's key (or, for a flush, every member).
    peers: u64,
    frame: Box<[u8]>,
}

/// Per-record bytes counted on top of the frame (the record's own fields and queue slot).
pub const RECORD_OVERHEAD: usize = 40;

/// Bounded, numbered mutation records of one shard.
pub struct Backlog {
    records: VecDeque<Record>,
    /// The number the next record gets (1 for the first).
    next_seq: u64,
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

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a peer at position `at` can go on from the backlog (every record after it is
    /// still held).
    pub fn covers(&self, at: u64) -> bool {
        at <= self.last_seq() && self.records.front().is_none_or(|r| r.seq <= at + 1)
    }

    /// Adds the record `encode` writes (given its number) for `peers`; drops the oldest
    /// records beyond the cap. Returns the record's number.
    pub fn push(&mut self, peers: u64, encode: impl FnOnce(u64, &mut Vec<u8>)) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut frame = Vec::new();
        encode(seq, &mut frame);
        self.bytes += frame.len() + RECORD_OVERHEAD;
        self.records.push_back(Record {
            seq,
            peers,
            frame: frame.into_boxed_slice(),
        });
        while self.bytes > self.cap {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.bytes -= old.frame.len() + RECORD_OVERHEAD;
            self.dropped += 1;
        }
        seq
    }

    /// Appends to `out` the frames after position `after` that are for `peer`, until `out`
    /// holds `max` bytes.
    pub fn read(&self, after: u64, peer: usize, out: &mut Vec<u8>, max: usize) -> Read {
        if !self.covers(after) {
            return Read::Gap;
        }
        let Some(first) = self.records.front() else {
            return Read::Upto(after);
        };
        let start = (after + 1).saturating_sub(first.seq) as usize;
        let mut upto = after;
        for r in self.records.range(start..) {
            if out.len() >= max {
                break;
            }
            if r.peers & (1 << peer) != 0 {
                out.extend_from_slice(&r.frame);
            }
            upto = r.seq;
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
