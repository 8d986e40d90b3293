//! memcached over UDP (`-U`): each datagram is one request frame (see [`protocol::udp`]); its
//! payload runs through the same decode -> route -> execute -> encode path as a connection's
//! bytes ([`conn::batch`](super::conn)), so keys of other shards work as over TCP. The payload
//! picks its codec by its first byte, as memcached does for every UDP datagram: 0x80 binary,
//! anything else text + meta.
//!
//! Replies follow memcached 1.6.18 byte for byte: every response (one per key of a text get,
//! per binary request, per meta command) is a message of its own, cut into datagrams of at most
//! 1400 bytes with the request's id; a response the protocol suppresses (text `noreply`, meta
//! `q`) sends nothing, an empty one (a missed key before the last of a text get, a quiet binary
//! miss, `quit`) one header-only datagram, but only where it would head memcached's queue of
//! responses: not right after another response of the same datagram went out. A request must
//! fit in its datagram: an incomplete one at the end is dropped unanswered.
//!
//! Memory stays bounded: the task takes one datagram at a time, complete responses leave as
//! datagrams as soon as they are encoded, the bytes waiting in the socket's queue make the
//! task wait ([`net::DatagramSocket::drained`]), and big values draw on the shared buffer
//! budget like a connection's (else `SERVER_ERROR out of memory writing get response`).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use crate::net::{self, Lent, PeerAddr, Reservation};
use crate::protocol::binary::{BinaryCodec, REQUEST_MAGIC};
use crate::protocol::text::{ReplyCtx, TextCodec};
use crate::protocol::{udp, Codec, Decode, Limits, Outcome};

use super::conn::{batch, Session};
use super::router::{Core, Output};

/// Serves datagrams arriving on `sock` until the server stops.
pub async fn serve(core: Rc<Core>, sock: net::DatagramSocket) {
    let mut buf = Vec::new();
    loop {
        let got = futures_lite::future::or(async { Some(sock.recv(&mut buf).await) }, async {
            core.stop.wait().await;
            None
        })
        .await;
        let Some(from) = got else { break };
        if let Err(e) = serve_datagram(&core, &sock, &buf, from).await {
            log::debug!("UDP request from {from:?}: {e}");
        }
    }
}

/// Answers one datagram.
async fn serve_datagram(
    core: &Core,
    sock: &net::DatagramSocket,
    datagram: &[u8],
    from: PeerAddr,
) -> io::Result<()> {
    // memcached counts every datagram read, dropped ones too, header included.
    core.counters().bytes_read += datagram.len() as u64;
    let Some((id, payload)) = udp::parse_request(datagram) else {
        return Ok(());
    };
    let reply = Reply {
        sock,
        to: from,
        id,
        pending: RefCell::new(Vec::new()),
        base: Cell::new(0),
        ends: RefCell::new(VecDeque::new()),
        budget: RefCell::new(Reservation::new(core.shared.buffers.clone())),
        written: Cell::new(0),
        after_sent: Cell::new(false),
        counted: Cell::new(0),
    };
    let result = if payload[0] == REQUEST_MAGIC {
        run(core, &reply, BinaryCodec, payload).await
    } else {
        run(core, &reply, TextCodec::default(), payload).await
    };
    reply.finish();
    core.counters().bytes_written += reply.written.get().saturating_sub(reply.counted.get()) as u64;
    sock.drained().await;
    result
}

/// Runs every complete request of `payload`, in order.
async fn run<C: Codec + Suppress>(
    core: &Core,
    reply: &Reply<'_>,
    codec: C,
    payload: &[u8],
) -> io::Result<()> {
    let mut codec = Framed {
        inner: codec,
        reply,
    };
    let limits = core.limits;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < payload.len() {
        // No UDP with -S (refused at start), so a datagram needs no authentication.
        let mut session = Session {
            authenticated: true,
        };
        let step = batch(
            core,
            &mut codec,
            &limits,
            &payload[pos..],
            reply,
            &mut out,
            &mut session,
        )
        .await?;
        pos += step.consumed;
        if let Some(w) = &step.watch {
            // A datagram socket cannot become a log stream: the watcher goes at once.
            core.shared.watch.remove(w);
        }
        reply.take(&mut out);
        // A datagram of many big gets waits for its datagrams to leave, batch by batch.
        reply.sock.drained().await;
        // Quit or a protocol error ends the datagram; so does a request cut off by its end,
        // or a refused one whose bytes go beyond it (a request never spans datagrams).
        if step.close || step.skip > 0 || step.consumed == 0 || step.watch.is_some() {
            break;
        }
    }
    Ok(())
}

/// Whether an empty reply means the protocol suppressed it (memcached sends no datagram
/// then) rather than answered nothing (a header-only datagram).
pub trait Suppress: Codec {
    /// True when an empty reply for `ctx` sends nothing.
    fn suppressed(&self, ctx: &Self::Ctx) -> bool;
}

impl Suppress for TextCodec {
    fn suppressed(&self, ctx: &ReplyCtx) -> bool {
        // Text `noreply`; a meta command writes nothing only for its `q` flag.
        matches!(
            ctx,
            ReplyCtx::Text { noreply: true, .. } | ReplyCtx::Meta(_)
        )
    }
}

impl Suppress for BinaryCodec {
    fn suppressed(&self, _ctx: &Self::Ctx) -> bool {
        // memcached answers a quiet request with an empty response: a header-only datagram.
        false
    }
}

/// A codec that marks where each reply ends, so each becomes its own UDP message.
struct Framed<'r, 's, C> {
    inner: C,
    reply: &'r Reply<'s>,
}

impl<C: Codec + Suppress> Codec for Framed<'_, '_, C> {
    type Ctx = C::Ctx;

    fn decode<'a>(&mut self, buf: &'a [u8], limits: &Limits) -> Decode<'a, C::Ctx> {
        self.inner.decode(buf, limits)
    }

    fn encode(&mut self, out: &mut Vec<u8>, ctx: &C::Ctx, key: &[u8], outcome: &Outcome<&[u8]>) {
        let before = out.len();
        self.inner.encode(out, ctx, key, outcome);
        let silent = out.len() == before && self.inner.suppressed(ctx);
        self.reply.end(out.len(), silent);
    }

    fn item_key<'k>(&self, ctx: &C::Ctx, wire_key: &'k [u8]) -> Cow<'k, [u8]> {
        self.inner.item_key(ctx, wire_key)
    }
}

/// The answers to one request datagram: encoded bytes not yet framed, where each response
/// ends, and the datagrams sent so far.
struct Reply<'s> {
    sock: &'s net::DatagramSocket,
    to: PeerAddr,
    id: u16,
    /// Response bytes not yet sent; `pending[0]` is byte `base` of the whole reply.
    pending: RefCell<Vec<u8>>,
    base: Cell<usize>,
    /// End (offset in the whole reply) of each response not yet sent, and whether it is
    /// suppressed.
    ends: RefCell<VecDeque<(usize, bool)>>,
    /// The shared budget's share covering big values.
    budget: RefCell<Reservation>,
    /// Bytes of datagrams sent.
    written: Cell<usize>,
    /// A response went out since the last one suppressed at the head (see `send_complete`).
    after_sent: Cell<bool>,
    /// Bytes the request path counted in `bytes_written` itself (handed to `send`).
    counted: Cell<usize>,
}

impl Reply<'_> {
    /// A response ends after `out_len` bytes of the output being built.
    fn end(&self, out_len: usize, silent: bool) {
        let end = self.base.get() + self.pending.borrow().len() + out_len;
        self.ends.borrow_mut().push_back((end, silent));
    }

    /// Takes `out` (leaving it empty) and sends every response now complete.
    fn take(&self, out: &mut Vec<u8>) {
        self.pending.borrow_mut().extend_from_slice(out);
        out.clear();
        self.send_complete();
    }

    fn send_complete(&self) {
        let mut pending = self.pending.borrow_mut();
        let mut ends = self.ends.borrow_mut();
        let base = self.base.get();
        let mut done = 0;
        while let Some(&(end, silent)) = ends.front() {
            let end = end - base;
            if end > pending.len() {
                break;
            }
            let response = &pending[done..end];
            // memcached sends an empty response only when it heads its queue of responses:
            // right after a datagram went out, its send accounting consumes the empty (and the
            // suppressed) ones that follow along with it.
            if !silent && (!response.is_empty() || !self.after_sent.get()) {
                udp::frame(self.id, response, |header, data| {
                    self.sock.send_to(&self.to, &[header, data]);
                    self.written
                        .set(self.written.get() + header.len() + data.len());
                });
                self.after_sent.set(true);
            }
            done = end;
            ends.pop_front();
        }
        pending.drain(..done);
        self.base.set(base + done);
    }

    /// Sends what is left (bytes no reply claimed go as one last response).
    fn finish(&self) {
        let left = self.pending.borrow().len();
        if left > 0 {
            let end = self.base.get() + left;
            self.ends.borrow_mut().push_back((end, false));
            self.send_complete();
        }
    }
}

impl Output for Reply<'_> {
    fn raw_fd(&self) -> i32 {
        self.sock.raw_fd()
    }

    fn reserve_output(&self, pending: usize, more: usize) -> bool {
        let total = self.sock.unsent() + self.pending.borrow().len() + pending + more;
        let mut budget = self.budget.borrow_mut();
        if total <= net::OUT_ALLOWANCE + budget.held() {
            return true;
        }
        budget.resize(total - net::OUT_ALLOWANCE)
    }

    fn stage(&self, out: &mut Vec<u8>) -> io::Result<()> {
        self.take(out);
        Ok(())
    }

    fn stage_lent(&self, lent: Lent) {
        // Not asked for (`lends` is false); copied if it ever is.
        self.pending.borrow_mut().extend_from_slice(lent.bytes());
    }

    async fn send(&self, out: &mut Vec<u8>) -> io::Result<()> {
        self.counted.set(self.counted.get() + out.len());
        self.take(out);
        self.sock.drained().await;
        Ok(())
    }

    fn lends(&self) -> bool {
        false
    }
}
