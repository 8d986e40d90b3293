//! Key -> owning shard, and the messages that carry batches of requests between shards.
//!
//! Shard choice: `owner(hash, n)` takes bits 24..56 of the one 64-bit key hash and scales them
//! onto `0..n` (multiply-shift, no modulo bias worth speaking of). The store's index uses the low
//! bits of the same hash for buckets and the top 7 bits for tags, so the two choices are
//! independent: every shard's table fills evenly. Keep exactly this split.
//!
//! A batch for another shard copies its keys and values once into one arena; the commands refer
//! to it by [`Span`]. The owner answers with outcomes whose values are spans of a reply arena.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::protocol::{Command, Outcome};

use super::stats::Snapshot;

/// The shard owning a key with this hash, among `shards`.
#[inline]
pub fn owner(hash: u64, shards: usize) -> usize {
    ((((hash >> 24) as u32) as u64 * shards as u64) >> 32) as usize
}

/// A byte range of an arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// Appends `bytes` to `arena` and returns where they went.
    pub fn push(arena: &mut Vec<u8>, bytes: &[u8]) -> Span {
        let start = arena.len() as u32;
        arena.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u32,
        }
    }

    /// The bytes of this span in `arena`.
    #[inline]
    pub fn get(self, arena: &[u8]) -> &[u8] {
        &arena[self.start as usize..(self.start + self.len) as usize]
    }
}

/// Requests for one owner shard, in the connection's order, with their key hashes.
#[derive(Debug, Default)]
pub struct RequestBatch {
    /// The commands; byte fields are spans of `arena`.
    pub commands: Vec<(Command<Span>, u64)>,
    /// Keys and values of the commands.
    pub arena: Vec<u8>,
}

impl RequestBatch {
    /// Copies a decoded command (borrowing the read buffer) into this batch.
    pub fn push(&mut self, command: Command<&[u8]>, hash: u64) {
        let arena = &mut self.arena;
        let command = command.map_bytes(|b| Span::push(arena, b));
        self.commands.push((command, hash));
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether the batch holds no command.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

/// Outcomes of a prefix of a [`RequestBatch`]; values are spans of `arena`.
#[derive(Debug, Default)]
pub struct ReplyBatch {
    /// One outcome per executed command, in order.
    pub outcomes: Vec<Outcome<Span>>,
    /// Values of the outcomes.
    pub arena: Vec<u8>,
    /// Commands left unexecuted because the reply reached its size cap; send them again once
    /// the answers so far are written.
    pub rest: Option<RequestBatch>,
}

/// What one shard asks another.
#[derive(Debug)]
pub enum Request {
    /// Execute these commands.
    Batch(RequestBatch),
    /// Invalidate items (`delay` as in [`Command::Flush`]).
    Flush(i64),
    /// Send a statistics snapshot.
    Stats,
    /// Reset the counters.
    ResetStats,
}

/// An answer to a [`Request`].
#[derive(Debug)]
pub enum Reply {
    /// Outcomes of a batch.
    Batch(ReplyBatch),
    /// A snapshot of the shard's statistics.
    Stats(Box<Snapshot>),
    /// Done (flush, reset).
    Done,
}

/// A request on the wire between shards: who asks, and which waiter gets the answer.
#[derive(Debug)]
pub struct Envelope<T> {
    /// The asking shard.
    pub from: usize,
    /// The waiter's number on the asking shard.
    pub token: u64,
    /// The payload.
    pub body: T,
}

/// A one-shot slot a task waits on until the answer from another shard arrives.
struct Slot {
    value: RefCell<Option<Reply>>,
    waker: RefCell<Option<Waker>>,
}

/// The answers a shard is waiting for, by token.
#[derive(Default)]
pub struct Pending {
    next: Cell<u64>,
    slots: RefCell<HashMap<u64, Rc<Slot>>>,
}

impl Pending {
    /// Registers a waiter; the returned token goes with the request.
    pub fn register(&self) -> (u64, ReplyFuture) {
        let token = self.next.get();
        self.next.set(token.wrapping_add(1));
        let slot = Rc::new(Slot {
            value: RefCell::new(None),
            waker: RefCell::new(None),
        });
        self.slots.borrow_mut().insert(token, slot.clone());
        (token, ReplyFuture { slot })
    }

    /// Hands an answer to its waiter (dropped if the waiter is gone, e.g. its client left).
    pub fn complete(&self, token: u64, reply: Reply) {
        if let Some(slot) = self.slots.borrow_mut().remove(&token) {
            *slot.value.borrow_mut() = Some(reply);
            if let Some(w) = slot.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
}

/// Resolves when the answer for its token arrives.
pub struct ReplyFuture {
    slot: Rc<Slot>,
}

impl Future for ReplyFuture {
    type Output = Reply;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        if let Some(reply) = self.slot.value.borrow_mut().take() {
            return Poll::Ready(reply);
        }
        *self.slot.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_uses_middle_bits_and_covers_all_shards() {
        for n in 1..9 {
            let mut seen = vec![false; n];
            for i in 0..10_000u64 {
                let h = crate::storage::key_hash(&i.to_le_bytes());
                let o = owner(h, n);
                assert!(o < n);
                seen[o] = true;
            }
            assert!(seen.iter().all(|&s| s), "shard unused with n={n}");
        }
        // Low and top bits do not influence the choice.
        assert_eq!(owner(0x00ff_ffff, 4), owner(0, 4));
        assert_eq!(owner(0xff00_0000_0000_0000, 4), owner(0, 4));
    }

    #[test]
    fn spans_round_trip() {
        let mut b = RequestBatch::default();
        b.push(
            Command::Store {
                mode: crate::protocol::StoreMode::Set,
                key: b"k",
                value: b"value",
                flags: 1,
                exptime: 0,
                cas: 0,
            },
            7,
        );
        let (cmd, hash) = b.commands[0].clone();
        assert_eq!(hash, 7);
        let back = cmd.map_bytes(|s| s.get(&b.arena));
        assert_eq!(back.key(), Some(&&b"k"[..]));
    }
}
