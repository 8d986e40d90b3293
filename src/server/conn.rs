//! One client connection: read -> decode every complete request -> run local ones inline, send
//! remote ones to their owner shards as one batch each -> gather outcomes in request order ->
//! encode into one buffer -> one write.
//!
//! The first byte fixes the protocol for the connection's life, as in memcached: 0x80 = binary,
//! anything else = text + meta. Everything below is generic over the [`Codec`], so both protocols
//! share routing, batching, ordering and back-pressure.
//!
//! Memory per connection stays bounded: the read buffer holds at most one request beyond what was
//! decoded; a batch stops growing once its local replies hold [`REPLY_CAP`] bytes, and an owner
//! shard defers the rest of a batch once its reply holds that much, so a slow reader with a huge
//! pipeline of big gets makes the server block on write (and stop reading) rather than buffer.

use std::borrow::Cow;
use std::io;
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use log::debug;

use crate::protocol::binary::{BinaryCodec, REQUEST_MAGIC};
use crate::protocol::text::TextCodec;
use crate::protocol::{Codec, Command, Decode, Outcome};
use crate::storage::key_hash;

use super::router::{owner, Reply, ReplyBatch, Request, RequestBatch, Span};
use super::{Core, REPLY_CAP};

/// Read buffer size for ordinary traffic; it grows for big values and shrinks back after.
const READ_BUF: usize = 16 * 1024;
/// Requests decoded into one batch at most.
const MAX_BATCH: usize = 4096;
/// Output buffer capacity kept between batches.
const OUT_KEEP: usize = 64 * 1024;

/// Serves a connection until the client leaves, a protocol error closes it, or shutdown.
pub async fn serve(core: Rc<Core>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let mut conn = Conn {
        core,
        stream,
        rbuf: vec![0; READ_BUF],
        start: 0,
        end: 0,
        skip: 0,
        out: Vec::new(),
    };
    let result = match conn.fill().await {
        Ok(false) => Ok(()),
        Ok(true) if conn.rbuf[0] == REQUEST_MAGIC => conn.run(BinaryCodec).await,
        Ok(true) => conn.run(TextCodec::default()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => debug!("connection {peer:?} closed"),
        Err(e) => debug!("connection {peer:?} ended: {e}"),
    }
}

struct Conn {
    core: Rc<Core>,
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Undecoded bytes are `rbuf[start..end]`.
    start: usize,
    end: usize,
    /// Bytes of a refused request still to discard as they arrive.
    skip: usize,
    out: Vec<u8>,
}

/// What one batch did with the buffered bytes.
#[derive(Default)]
struct Step {
    consumed: usize,
    skip: usize,
    close: bool,
}

impl Conn {
    /// Reads once more into the buffer; false when the peer left or the server stops.
    async fn fill(&mut self) -> io::Result<bool> {
        let max_buf = self.core.limits.max_item_size + 64 * 1024;
        self.make_room(max_buf)?;
        let stop = self.core.stop.clone();
        let read = futures_lite::future::or(
            async { Some(self.stream.read(&mut self.rbuf[self.end..]).await) },
            async {
                let _ = stop.acquire(1).await;
                None
            },
        )
        .await;
        let n = match read {
            None => return Ok(false),
            Some(r) => r?,
        };
        if n == 0 {
            return Ok(false);
        }
        self.core.shard.counters().bytes_read += n as u64;
        self.end += n;
        Ok(true)
    }

    async fn run<C: Codec>(&mut self, mut codec: C) -> io::Result<()> {
        loop {
            if !self.process(&mut codec).await? || !self.fill().await? {
                return Ok(());
            }
        }
    }

    /// Ensures free space after `end`, compacting or growing the buffer.
    fn make_room(&mut self, max_buf: usize) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.rbuf.len() > READ_BUF {
                self.rbuf = vec![0; READ_BUF];
            }
        }
        if self.end < self.rbuf.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return Ok(());
        }
        if self.rbuf.len() >= max_buf {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request larger than any acceptable one",
            ));
        }
        let grown = (self.rbuf.len() * 2).min(max_buf);
        self.rbuf.resize(grown, 0);
        Ok(())
    }

    /// Runs every complete request buffered. Returns false when the connection must close.
    async fn process<C: Codec>(&mut self, codec: &mut C) -> io::Result<bool> {
        loop {
            let discard = self.skip.min(self.end - self.start);
            self.start += discard;
            self.skip -= discard;
            if self.skip > 0 || self.start == self.end {
                return Ok(true);
            }
            let step = batch(
                &self.core,
                codec,
                &self.rbuf[self.start..self.end],
                &mut self.stream,
                &mut self.out,
            )
            .await?;
            self.start += step.consumed;
            self.skip = step.skip;
            self.flush().await?;
            if step.close {
                return Ok(false);
            }
            if step.consumed == 0 {
                return Ok(true);
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        write_out(&self.core, &mut self.stream, &mut self.out).await?;
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
        Ok(())
    }
}

async fn write_out(core: &Core, stream: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        core.shard.counters().bytes_written += out.len() as u64;
        out.clear();
    }
    Ok(())
}

/// Where a request's outcome comes from.
enum Slot {
    /// Already known (local execution, server command, refusal); values in the local arena.
    Ready(Outcome<Span>),
    /// The `idx`-th command sent to `shard` in this batch.
    Remote { shard: usize, idx: usize },
}

struct Entry<'a, Ctx> {
    /// How to answer; `None` for internal requests that get no reply.
    ctx: Option<Ctx>,
    key: &'a [u8],
    slot: Slot,
}

/// Per-batch routing state.
struct Batch<'a, Ctx> {
    entries: Vec<Entry<'a, Ctx>>,
    local: Vec<u8>,
    remote: Vec<RequestBatch>,
}

impl<'a, Ctx> Batch<'a, Ctx> {
    /// Runs a key command on its owner: at once when local, else queued for its shard. The
    /// command is used (run or copied) before this returns; `echo` is the key the reply names.
    fn route(&mut self, core: &Core, cmd: Command<&[u8]>, echo: &'a [u8], ctx: Option<Ctx>) {
        let key = cmd.key().copied().unwrap_or_default();
        let hash = key_hash(key);
        let o = owner(hash, core.shards);
        let slot = if o == core.shard.id {
            Slot::Ready(core.shard.execute(cmd, hash, &mut self.local))
        } else {
            let idx = self.remote[o].len();
            self.remote[o].push(cmd, hash);
            Slot::Remote { shard: o, idx }
        };
        self.entries.push(Entry {
            ctx,
            key: echo,
            slot,
        });
    }

    fn ready(&mut self, ctx: Ctx, key: &'a [u8], outcome: Outcome<&[u8]>) {
        let local = &mut self.local;
        let outcome = outcome.map_bytes(|b| Span::push(local, b));
        self.entries.push(Entry {
            ctx: Some(ctx),
            key,
            slot: Slot::Ready(outcome),
        });
    }
}

/// Decodes and runs the requests at the front of `buf`, writes their answers in order.
async fn batch<C: Codec>(
    core: &Core,
    codec: &mut C,
    buf: &[u8],
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
) -> io::Result<Step> {
    let mut b = Batch {
        entries: Vec::new(),
        local: Vec::new(),
        remote: (0..core.shards).map(|_| RequestBatch::default()).collect(),
    };
    let mut step = Step::default();
    let mut pos = 0;
    while b.entries.len() < MAX_BATCH && b.local.len() < REPLY_CAP {
        let decoded = codec.decode(&buf[pos..], &core.limits);
        match decoded {
            Decode::Incomplete => break,
            Decode::Close => {
                step.close = true;
                break;
            }
            Decode::Reject {
                ctx,
                outcome,
                skip,
                close,
                unlink_key,
            } => {
                // A refused Set must not leave the old value behind (memcached deletes it).
                if let Some(key) = unlink_key {
                    b.route(core, Command::Delete { key, cas: 0 }, key, None);
                }
                if outcome == Outcome::TooLarge {
                    core.shard.counters().store_too_large += 1;
                }
                b.ready(ctx, &[], outcome);
                let here = skip.min(buf.len() - pos);
                pos += here;
                step.skip = skip - here;
                step.close = close;
                break;
            }
            Decode::Request {
                command,
                ctx,
                consumed,
            } => {
                let barrier = matches!(command, Command::Flush { .. } | Command::Stats { .. });
                if barrier && !b.entries.is_empty() {
                    // Everything before a flush or stats must be done first.
                    break;
                }
                pos += consumed;
                match command {
                    Command::Get { .. }
                    | Command::MetaGet { .. }
                    | Command::Inspect { .. }
                    | Command::Store { .. }
                    | Command::MetaStore { .. }
                    | Command::Invalidate { .. }
                    | Command::MetaArith { .. }
                    | Command::Arith { .. }
                    | Command::Delete { .. }
                    | Command::Touch { .. } => {
                        let wire_key = command.key().copied().unwrap_or_default();
                        match codec.item_key(&ctx, wire_key) {
                            Cow::Borrowed(_) => b.route(core, command, wire_key, Some(ctx)),
                            Cow::Owned(item_key) => {
                                // Key fields come first in `map_bytes`: only the key changes.
                                let mut first = true;
                                let command = command.map_bytes(|bytes| {
                                    if std::mem::take(&mut first) {
                                        &item_key[..]
                                    } else {
                                        bytes
                                    }
                                });
                                b.route(core, command, wire_key, Some(ctx));
                            }
                        }
                    }
                    Command::Noop | Command::Verbosity { .. } => b.ready(ctx, &[], Outcome::Done),
                    Command::Version => {
                        b.ready(ctx, &[], Outcome::Version(crate::VERSION_STRING.as_bytes()))
                    }
                    // SASL is off: answered as memcached without -S does.
                    Command::SaslListMechs
                    | Command::SaslAuth { .. }
                    | Command::SaslStep { .. } => b.ready(ctx, &[], Outcome::UnknownCommand),
                    Command::Quit => {
                        b.ready(ctx, &[], Outcome::Done);
                        step.close = true;
                        break;
                    }
                    Command::Flush { delay } => {
                        core.flush_all(delay).await?;
                        b.ready(ctx, &[], Outcome::Done);
                        break;
                    }
                    Command::Stats { group } => {
                        let outcome = core.stats(group).await?;
                        b.ready(ctx, &[], outcome);
                        break;
                    }
                }
            }
        }
    }
    step.consumed = pos;
    gather(core, codec, b, stream, out).await?;
    Ok(step)
}

/// Sends the remote parts, then encodes every outcome in request order. When an owner deferred
/// part of its batch, the answers so far are written before the rest is sent again.
async fn gather<C: Codec>(
    core: &Core,
    codec: &mut C,
    b: Batch<'_, C::Ctx>,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let Batch {
        mut entries,
        local,
        remote,
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
                waits.push((o, core.send(o, Request::Batch(req)).await?));
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
            let (outcome, arena) = match &mut e.slot {
                Slot::Ready(o) => (std::mem::replace(o, Outcome::Done), &local[..]),
                Slot::Remote { shard, idx } => {
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
                let outcome = outcome.map_bytes(|s| s.get(arena));
                codec.encode(out, ctx, e.key, &outcome);
            }
            next += 1;
        }
        if next == entries.len() {
            return Ok(());
        }
        // Some owner deferred: write what is ready, then ask again for shards fully answered.
        log::trace!(
            "batch partly deferred at request {next} of {}",
            entries.len()
        );
        write_out(core, stream, out).await?;
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
