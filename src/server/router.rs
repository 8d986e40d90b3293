//! Routing: key -> owning shard, the messages between shards, a connection's batch (local
//! commands run at once, remote ones queued per owner), sending and fanning out over the
//! cross-core mail, and reassembling the outcomes in request order.
//!
//! Shard choice: `owner(hash, n)` takes bits 24..56 of the one 64-bit key hash and scales them
//! onto `0..n` (multiply-shift, no modulo bias worth speaking of). The store's index uses the low
//! bits of the same hash for buckets and the top 7 bits for tags, so the two choices are
//! independent: every shard's table fills evenly. Keep exactly this split.
//!
//! Crossing cores: the first [`Config::direct_limit`](crate::config::Config) requests of a batch
//! for another shard run at once on that shard's store, under its lock, by the connection's own
//! core (no message, no wake-up of a sleeping owner, no wait); the rest of the batch for that
//! owner travels as one message. Once a batch sends anything to an owner, its later requests for
//! that owner follow by mail too, so each key's requests still run in connection order.
//! Short batches (pipeline 1, small multi-gets) thus cost one uncontended lock instead of a
//! round trip between cores, and deep pipelines still pay one message per owner per batch.
//!
//! A batch for another shard copies its keys and values once into one arena; the commands refer
//! to it by [`Span`]. The owner answers with outcomes whose values are spans of a reply arena.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::net::mail::{Credits, Outbox, PostOffice};
use crate::net::{Conn, Lent};
use crate::protocol::{Codec, Command, Limits, Outcome};
use crate::storage::key_hash;

use super::admin::{AdminReply, AdminRequest, ConnRegistry};
use super::shard::Shard;
use super::stats::{Counters, Snapshot};
use super::Shared;

/// Requests in flight from one shard to another before a sender waits.
const CREDITS_PER_PEER: usize = 256;
/// Bytes of values one reply batch (local or remote) collects before the rest is deferred.
pub const REPLY_CAP: usize = 256 * 1024;

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
    /// The descriptor of the connection that asked (for `watch` lines).
    pub cfd: i32,
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
    /// An operator command's part on this shard (see `admin`).
    Admin(AdminRequest),
    /// Answer at once (the service watchdog's proof that the shard's loop turns).
    Ping,
}

/// An answer to a [`Request`].
#[derive(Debug)]
pub enum Reply {
    /// Outcomes of a batch.
    Batch(ReplyBatch),
    /// A snapshot of the shard's statistics.
    Stats(Box<Snapshot>),
    /// Done (flush, reset, ping).
    Done,
    /// The answer to [`Request::Admin`].
    Admin(AdminReply),
}

/// What travels between shards.
pub enum Mail {
    /// A request from shard `from`; answer with `token`.
    Request {
        /// The asking shard.
        from: usize,
        /// The waiter's number on the asking shard.
        token: u64,
        /// What is asked.
        body: Request,
    },
    /// The answer to the request numbered `token`.
    Reply {
        /// The waiter's number.
        token: u64,
        /// The answer.
        body: Reply,
    },
    /// An accepted client connection for this shard to serve, and what it speaks.
    Connection(OwnedFd, super::ConnKind),
}

/// A one-shot slot a task waits on until the answer from another shard arrives.
struct Slot {
    value: RefCell<Option<Reply>>,
    waker: RefCell<Option<Waker>>,
}

/// The answers a shard is waiting for, by token, with the shard each comes from.
#[derive(Default)]
pub struct Pending {
    next: Cell<u64>,
    slots: RefCell<hashbrown::HashMap<u64, (Rc<Slot>, usize)>>,
}

impl Pending {
    /// Registers a waiter for an answer from shard `from`; the token goes with the request.
    pub fn register(&self, from: usize) -> (u64, ReplyFuture) {
        let token = self.next.get();
        self.next.set(token.wrapping_add(1));
        let slot = Rc::new(Slot {
            value: RefCell::new(None),
            waker: RefCell::new(None),
        });
        self.slots.borrow_mut().insert(token, (slot.clone(), from));
        (token, ReplyFuture { slot })
    }

    /// Hands an answer to its waiter (dropped if the waiter is gone, e.g. its client left);
    /// returns the shard it came from.
    pub fn complete(&self, token: u64, reply: Reply) -> Option<usize> {
        let (slot, from) = self.slots.borrow_mut().remove(&token)?;
        *slot.value.borrow_mut() = Some(reply);
        if let Some(w) = slot.waker.borrow_mut().take() {
            w.wake();
        }
        Some(from)
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

/// A one-way local "it happened" flag that tasks can wait on (e.g. the stop request).
#[derive(Default)]
pub struct Flag {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Flag {
    /// Raises the flag, waking every waiter.
    pub fn raise(&self) {
        if !self.set.replace(true) {
            self.waiters.take().into_iter().for_each(Waker::wake);
        }
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.set.get()
    }

    /// Resolves once the flag is raised.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.get() {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// One shard's view of the server: its store, its mail, and the shared state.
pub struct Core {
    /// This shard.
    pub shard: Arc<Shard>,
    /// Connection-level counters of this core (bytes, connections, refusals); the command
    /// counters live in the shard, with the store.
    conn_counters: RefCell<Counters>,
    /// Number of shards.
    pub shards: usize,
    /// Codec limits.
    pub limits: Limits,
    /// What all shards share.
    pub shared: Arc<Shared>,
    office: PostOffice<Mail>,
    outbox: Outbox<Mail>,
    credits: Credits,
    pending: Pending,
    mail: RefCell<Vec<Mail>>,
    /// Raised when the server stops; accept loops and drains wait on it.
    pub stop: Flag,
    /// Connection tasks still running on this shard.
    pub live_connections: Cell<usize>,
    /// Connections closed since the allocator last gave memory back.
    pub closed_since_trim: Cell<usize>,
    /// This core's connections, for `stats conns`.
    pub conns: ConnRegistry,
}

impl Core {
    /// The core of shard `shard.id`, posting through `office`.
    pub fn new(
        shard: Arc<Shard>,
        shards: usize,
        limits: Limits,
        shared: Arc<Shared>,
        office: PostOffice<Mail>,
    ) -> Core {
        Core {
            shard,
            conn_counters: RefCell::new(Counters::default()),
            shards,
            limits,
            shared,
            outbox: Outbox::new(office.clone()),
            office,
            credits: Credits::new(shards, CREDITS_PER_PEER),
            pending: Pending::default(),
            mail: RefCell::new(Vec::new()),
            stop: Flag::default(),
            live_connections: Cell::new(0),
            closed_since_trim: Cell::new(0),
            conns: ConnRegistry::default(),
        }
    }

    /// Counters for connection-level events on this core.
    pub fn counters(&self) -> std::cell::RefMut<'_, Counters> {
        self.conn_counters.borrow_mut()
    }

    /// This core's contribution to `stats`: its shard's and its connections' counters.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.shard.snapshot();
        s.counters.add(&self.conn_counters.borrow());
        s
    }

    /// Zeroes this core's counters (`stats reset`).
    pub fn reset_stats(&self) {
        self.shard.reset_stats();
        *self.conn_counters.borrow_mut() = Counters::default();
    }

    /// Sends `req` to shard `to` (leaving at the end of this loop turn, batched with the rest
    /// of the turn's mail for that shard); the returned future yields its reply.
    pub async fn send(&self, to: usize, req: Request) -> ReplyFuture {
        self.credits.acquire(to).await;
        let (token, fut) = self.pending.register(to);
        self.outbox.post(
            to,
            Mail::Request {
                from: self.shard.id,
                token,
                body: req,
            },
        );
        fut
    }

    /// Hands an accepted connection to shard `to`.
    pub fn hand_over(&self, to: usize, fd: OwnedFd, kind: super::ConnKind) {
        self.outbox.post(to, Mail::Connection(fd, kind));
    }

    /// Sends one request to every other shard and collects their replies.
    pub async fn fan_out(&self, make: impl Fn() -> Request) -> Vec<Reply> {
        let mut waits = Vec::with_capacity(self.shards);
        for to in (0..self.shards).filter(|&s| s != self.shard.id) {
            waits.push(self.send(to, make()).await);
        }
        let mut replies = Vec::with_capacity(waits.len());
        for w in waits {
            replies.push(w.await);
        }
        replies
    }

    /// Flush on every shard (each computes the deadline on its own clock).
    pub async fn flush_all(&self, delay: i64) {
        self.counters().cmd_flush += 1;
        self.fan_out(|| Request::Flush(delay)).await;
        self.shard
            .execute(Command::Flush { delay }, 0, None, -1, &mut Vec::new());
    }

    /// Serves one request from another shard.
    fn serve_request(&self, req: Request) -> Reply {
        match req {
            Request::Batch(b) => Reply::Batch(self.shard.execute_batch(b, REPLY_CAP)),
            Request::Flush(delay) => {
                self.shard
                    .execute(Command::Flush { delay }, 0, None, -1, &mut Vec::new());
                Reply::Done
            }
            Request::Stats => Reply::Stats(Box::new(self.snapshot())),
            Request::Ping => Reply::Done,
            Request::ResetStats => {
                self.reset_stats();
                Reply::Done
            }
            Request::Admin(r) => Reply::Admin(self.serve_admin(r)),
        }
    }

    /// The loop hook: serves the mail that arrived, sends what this turn posted, and notices a
    /// stop request. Returns whether more mail is already waiting.
    pub fn deliver_mail(self: &Rc<Self>) -> bool {
        if self.shared.stopping() && !self.stop.is_raised() {
            self.stop.raise();
        }
        let mut mail = self.mail.take();
        self.office[self.shard.id].take(&mut mail);
        for m in mail.drain(..) {
            match m {
                Mail::Request { from, token, body } => {
                    let body = self.serve_request(body);
                    self.outbox.post(from, Mail::Reply { token, body });
                }
                Mail::Reply { token, body } => {
                    if let Some(from) = self.pending.complete(token, body) {
                        self.credits.release(from);
                    }
                }
                Mail::Connection(fd, kind) => super::serve_kind(self, fd, kind),
            }
        }
        *self.mail.borrow_mut() = mail;
        self.outbox.flush();
        self.office[self.shard.id].has_mail()
    }

    /// Whether mail waits for this shard (checked before the loop sleeps).
    pub fn has_mail(&self) -> bool {
        self.office[self.shard.id].has_mail() || (self.shared.stopping() && !self.stop.is_raised())
    }
}

/// Where a request's outcome comes from.
enum Source {
    /// Already known (local execution, server command, refusal); values in the local arena.
    Ready(Outcome<Span>),
    /// The `idx`-th command sent to `shard` in this batch.
    Remote { shard: usize, idx: usize },
}

struct Entry<'a, Ctx> {
    /// How to answer; `None` for internal requests that get no reply.
    ctx: Option<Ctx>,
    key: &'a [u8],
    source: Source,
}

/// The requests of one connection decoded in one go, in order: local ones already run, remote
/// ones queued per owner.
pub struct Batch<'a, Ctx> {
    entries: Vec<Entry<'a, Ctx>>,
    local: Vec<u8>,
    remote: Vec<RequestBatch>,
    /// Requests run directly on each other shard so far.
    direct: Vec<usize>,
    /// The connection's descriptor.
    cfd: i32,
}

impl<'a, Ctx> Batch<'a, Ctx> {
    /// An empty batch of the connection with descriptor `cfd`, for a server of `shards` shards.
    pub fn new(shards: usize, cfd: i32) -> Self {
        Batch {
            entries: Vec::new(),
            local: Vec::new(),
            remote: (0..shards)
                .map(|_| RequestBatch {
                    cfd,
                    ..RequestBatch::default()
                })
                .collect(),
            direct: vec![0; shards],
            cfd,
        }
    }

    /// Requests in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch holds no request.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of values the local outcomes hold.
    pub fn local_bytes(&self) -> usize {
        self.local.len()
    }

    /// The shard that can run a command for owner `o` from this core right now: this one, or
    /// another directly (within the batch's direct limit and before any mail to it); `None`
    /// when the request must go by mail.
    fn runner<'c>(&self, core: &'c Core, o: usize) -> Option<&'c Arc<Shard>> {
        if o == core.shard.id {
            return Some(&core.shard);
        }
        if self.remote[o].is_empty() && self.direct[o] < core.shared.config.direct_limit {
            return core.shared.shard(o);
        }
        None
    }

    /// Runs a key command at once when nothing earlier in the batch still waits for its answer
    /// and its owner can run it from here: `answer` then gets the outcome under the owner's lock
    /// (to encode it straight from the store), with a big hit's value lent when `lend`. Gives
    /// the command back otherwise. `next` is the hash of the key the caller runs next: the
    /// owner prefetches it while this one runs when it owns that key too.
    pub fn run_now<'c, R>(
        &mut self,
        core: &Core,
        cmd: Command<&'c [u8]>,
        hash: u64,
        next: Option<u64>,
        lend: bool,
        answer: impl FnOnce(Outcome<&[u8]>, Option<Lent>) -> R,
    ) -> Result<R, Command<&'c [u8]>> {
        if !self.entries.is_empty() {
            return Err(cmd);
        }
        let o = owner(hash, core.shards);
        let Some(shard) = self.runner(core, o) else {
            return Err(cmd);
        };
        if o != core.shard.id {
            self.direct[o] += 1;
        }
        let next = next.filter(|&h| owner(h, core.shards) == o);
        if lend {
            Ok(shard.execute_lending(cmd, hash, next, self.cfd, answer))
        } else {
            Ok(shard.execute_with(cmd, hash, next, self.cfd, |o| answer(o, None)))
        }
    }

    /// Runs a key command on its owner: at once when local, else queued for its shard. The
    /// command is used (run or copied) before this returns; `echo` is the key the reply names.
    pub fn route(&mut self, core: &Core, cmd: Command<&[u8]>, echo: &'a [u8], ctx: Option<Ctx>) {
        let key = cmd.key().copied().unwrap_or_default();
        let hash = key_hash(key);
        let o = owner(hash, core.shards);
        let source = if let Some(shard) = self.runner(core, o) {
            if o != core.shard.id {
                self.direct[o] += 1;
            }
            Source::Ready(shard.execute(cmd, hash, None, self.cfd, &mut self.local))
        } else {
            let idx = self.remote[o].len();
            self.remote[o].push(cmd, hash);
            Source::Remote { shard: o, idx }
        };
        self.entries.push(Entry {
            ctx,
            key: echo,
            source,
        });
    }

    /// Adds a request whose outcome is already known.
    pub fn ready(&mut self, ctx: Ctx, key: &'a [u8], outcome: Outcome<&[u8]>) {
        let local = &mut self.local;
        let outcome = outcome.map_bytes(|b| Span::push(local, b));
        self.entries.push(Entry {
            ctx: Some(ctx),
            key,
            source: Source::Ready(outcome),
        });
    }
}

/// Where a request path's answers go: a stream connection ([`Conn`]), or the reply to one UDP
/// request (`server::udp`). Everything from decoding to encoding is shared over it.
pub trait Output {
    /// Asks room for `more` output bytes on top of `pending` still being built (see
    /// [`Conn::reserve_output`]).
    fn reserve_output(&self, pending: usize, more: usize) -> bool;
    /// Queues `out` (leaving it empty) without waiting.
    fn stage(&self, out: &mut Vec<u8>) -> io::Result<()>;
    /// Queues bytes lent by the store after everything staged.
    fn stage_lent(&self, lent: Lent);
    /// Queues `out` and waits while too much is unsent.
    fn send(&self, out: &mut Vec<u8>) -> impl Future<Output = io::Result<()>>;
    /// Whether big hits may be lent from the store rather than copied.
    fn lends(&self) -> bool {
        true
    }
    /// The socket's descriptor, as `watch` and `stats conns` name it.
    fn raw_fd(&self) -> i32;
}

impl Output for Conn {
    fn raw_fd(&self) -> i32 {
        Conn::raw_fd(self)
    }

    fn reserve_output(&self, pending: usize, more: usize) -> bool {
        Conn::reserve_output(self, pending, more)
    }

    fn stage(&self, out: &mut Vec<u8>) -> io::Result<()> {
        Conn::stage(self, out)
    }

    fn stage_lent(&self, lent: Lent) {
        Conn::stage_lent(self, lent)
    }

    async fn send(&self, out: &mut Vec<u8>) -> io::Result<()> {
        Conn::send(self, out).await
    }
}

/// Encodes one answer into `out`; a value the connection's output budget cannot take is
/// answered as out of memory instead. A `lent` value goes from the store: what `out` holds in
/// front of it is staged on `conn`, then the value itself; returns the bytes staged that way
/// (no longer in `out`), 0 when the answer went into `out` whole.
pub fn encode_answer<C: Codec, O: Output>(
    codec: &mut C,
    conn: &O,
    out: &mut Vec<u8>,
    ctx: &C::Ctx,
    key: &[u8],
    mut outcome: Outcome<&[u8]>,
    lent: Option<Lent>,
) -> usize {
    if let Outcome::Value { value, .. } | Outcome::Item { value, .. } = &outcome {
        // Room for the value plus its header line.
        if !conn.reserve_output(out.len(), value.len() + key.len() + 64) {
            outcome = Outcome::OutOfMemory;
        }
    }
    if let Some(lent) = lent {
        let mut lent = Some(lent);
        let mut staged = 0;
        let split = codec.encode_split(out, ctx, key, &outcome, &mut |head| {
            if let Some(value) = lent.take() {
                staged = head.len() + value.len();
                if conn.stage(head).is_err() {
                    // The connection failed: nothing of it will be sent.
                    head.clear();
                }
                conn.stage_lent(value);
            }
        });
        if split {
            return staged;
        }
        // Not sent from the store after all: the loan ends (queued, since the store is locked).
    }
    codec.encode(out, ctx, key, &outcome);
    0
}

/// Sends the remote parts, then encodes every outcome in request order into `out`. When an
/// owner deferred part of its batch, the answers so far are sent before the rest is asked again.
pub async fn gather<C: Codec, O: Output>(
    core: &Core,
    codec: &mut C,
    b: Batch<'_, C::Ctx>,
    conn: &O,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let Batch {
        mut entries,
        local,
        remote,
        ..
    } = b;
    let n = core.shards;
    let mut to_send: Vec<Option<RequestBatch>> = remote
        .into_iter()
        .map(|r| (!r.is_empty()).then_some(r))
        .collect();
    let mut replies: Vec<Option<ReplyBatch>> = (0..n).map(|_| None).collect();
    let mut deferred: Vec<Option<RequestBatch>> = (0..n).map(|_| None).collect();
    // Index (within this batch's commands for that shard) of the first outcome in `replies`.
    let mut base = vec![0usize; n];
    // Outcomes of each shard encoded so far.
    let mut used = vec![0usize; n];
    let mut next = 0;
    loop {
        let mut waits = Vec::new();
        for (o, slot) in to_send.iter_mut().enumerate() {
            if let Some(req) = slot.take() {
                waits.push((o, core.send(o, Request::Batch(req)).await));
            }
        }
        for (o, wait) in waits {
            match wait.await {
                Reply::Batch(mut r) => {
                    deferred[o] = r.rest.take();
                    replies[o] = Some(r);
                }
                _ => return Err(io::Error::other("unexpected reply kind")),
            }
        }
        while next < entries.len() {
            let e = &mut entries[next];
            let (outcome, arena) = match &mut e.source {
                Source::Ready(o) => (std::mem::replace(o, Outcome::Done), &local[..]),
                Source::Remote { shard, idx } => {
                    let Some(r) = replies[*shard].as_mut() else {
                        break;
                    };
                    let Some(o) = r.outcomes.get_mut(*idx - base[*shard]) else {
                        break;
                    };
                    used[*shard] += 1;
                    (std::mem::replace(o, Outcome::Done), &r.arena[..])
                }
            };
            if let Some(ctx) = &e.ctx {
                encode_answer(
                    codec,
                    conn,
                    out,
                    ctx,
                    e.key,
                    outcome.map_bytes(|s| s.get(arena)),
                    None,
                );
            }
            next += 1;
        }
        if next == entries.len() {
            return Ok(());
        }
        // Some owner deferred: send what is ready, then ask again for shards fully answered.
        log::trace!(
            "batch partly deferred at request {next} of {}",
            entries.len()
        );
        core.counters().bytes_written += out.len() as u64;
        conn.send(out).await?;
        for o in 0..n {
            let answered = replies[o].as_ref().map_or(0, |r| r.outcomes.len());
            if deferred[o].is_some() && used[o] == base[o] + answered {
                base[o] += answered;
                replies[o] = None;
                to_send[o] = deferred[o].take();
            }
        }
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
                meta: None,
            },
            7,
        );
        let (cmd, hash) = b.commands[0].clone();
        assert_eq!(hash, 7);
        let back = cmd.map_bytes(|s| s.get(&b.arena));
        assert_eq!(back.key(), Some(&&b"k"[..]));
    }
}
