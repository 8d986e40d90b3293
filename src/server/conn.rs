//! One client connection: receive -> decode every complete request -> run local ones inline
//! (answered at once while nothing before them waits), queue remote ones for their owner shards
//! -> gather the other outcomes in request order -> encode into one buffer -> hand it to the
//! network layer, which sends it with the rest of the loop turn.
//!
//! The first byte fixes the protocol for the connection's life, as in memcached: 0x80 = binary,
//! anything else = text + meta (`-B ascii`: always text; `-B binary`: anything else closes the
//! connection). Everything below is generic over the [`Codec`], so both protocols
//! share routing, batching, ordering and back-pressure.
//!
//! Memory per connection stays bounded: the read buffer holds at most one request beyond what was
//! decoded; a batch stops growing once its local replies hold 32 KiB, an owner shard defers the
//! rest of a batch once its reply holds [`REPLY_CAP`](super::router::REPLY_CAP), and
//! [`net::Conn::send`] waits while too much output is unsent, so a slow reader with a huge pipeline of big gets stops being
//! served (and read) rather than buffered.

use std::borrow::Cow;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

use crate::config::Protocol;
use crate::net;
use crate::net::Reservation;
use crate::protocol::auth::{self, TextAuth};
use crate::protocol::binary::{BinaryCodec, REQUEST_MAGIC};
use crate::protocol::repl::HELLO;
use crate::protocol::text::TextCodec;
use crate::protocol::watch::{class, CloseReason, Event, StoreCmd, StoreStatus};
use crate::protocol::{Admin, AdminStatus, Codec, Command, Decode, Limits, Outcome};
use crate::storage::key_hash;

use super::admin::{ConnState, Registered};
use super::router::{encode_answer, gather, Batch, Core, Output};
use super::watch::{self, AddError, Watcher};

/// Read buffer a connection may hold without drawing on the shared buffer budget; larger ones
/// (big values) are given back once used.
const READ_ALLOWANCE: usize = 16 * 1024;
/// Requests decoded into one batch at most. Batches this size keep every per-batch buffer (the
/// reply bytes, the outcomes, the mail arenas) small and reused warm: memcslap's 20,000-key mget
/// at `-t 2` went from 0.48 s to 0.29 s of server time (4,096 before, when such buffers also
/// crossed the 128 KiB mmap threshold of the time). One batch still amortises one message per
/// owner over up to 256 requests.
const MAX_BATCH: usize = 256;
/// Bytes of values the local outcomes of one batch may hold before decoding stops (same reason).
const BATCH_REPLY_BYTES: usize = 32 * 1024;
/// A binary request's fixed header.
const BINARY_HEADER_LEN: usize = 24;
/// Output buffer capacity kept between batches.
const OUT_KEEP: usize = 64 * 1024;

/// Serves a connection until the client leaves, a protocol error closes it, or shutdown.
pub async fn serve(core: Rc<Core>, conn: net::Conn) {
    let hub = core.shared.watch.clone();
    let cfd = conn.raw_fd();
    // Asked once: a peer that left cannot be asked for its address at the close.
    let peer_name = conn.peer_addr();
    let peer = watch::log_peer(peer_name.clone());
    if hub.wants(class::CONNEVENTS) {
        hub.log(&Event::ConnNew { peer, cfd });
    }
    let registered = Registered::new(&core, &conn, peer_name.as_ref());
    let mut c = Connection {
        registered,
        core: core.clone(),
        conn,
        rbuf: Vec::new(),
        start: 0,
        skip: 0,
        out: Vec::new(),
        in_budget: Reservation::new(core.shared.buffers.clone()),
        over_budget: false,
        idle_timeout: match core.shared.config().extended.idle_timeout {
            0 => None,
            secs => Some(Duration::from_secs(u64::from(secs))),
        },
        last_command: Instant::now(),
        binary: false,
        reason: CloseReason::Normal,
        watcher: None,
        session: Session {
            authenticated: !core.shared.auth.sasl(),
        },
    };
    let protocol = core.shared.config().protocol;
    let mut first = c.fill().await;
    if let Some(repl) = core.shared.repl.clone() {
        // A peer's stream opens with `repl_hello`; wait for enough bytes to tell.
        while matches!(first, Ok(true)) && c.rbuf.len() < HELLO.len() && HELLO.starts_with(&c.rbuf)
        {
            first = c.fill().await;
        }
        if matches!(first, Ok(true)) && c.rbuf.starts_with(HELLO) {
            c.registered.track.set_state(ConnState::Repl);
            let rbuf = std::mem::take(&mut c.rbuf);
            super::repl::receiver::serve(&core, &repl, &c.conn, rbuf).await;
            first = Ok(false);
        }
    }
    let result = match first {
        Ok(false) => Ok(()),
        // -B ascii: every byte is text, 0x80 included (memcached answers ERROR at the newline).
        // -Y: the first request must be the authentication token.
        Ok(true) if protocol == Protocol::Ascii => match c.authenticate_text().await {
            Ok(true) => c.run(TextCodec::default()).await,
            other => other.map(drop),
        },
        Ok(true) if c.rbuf[0] == REQUEST_MAGIC => {
            c.binary = true;
            c.run(BinaryCodec).await
        }
        // -B binary: memcached closes a connection that does not start with the magic byte.
        Ok(true) if protocol == Protocol::Binary => {
            c.reason = CloseReason::Error;
            Ok(())
        }
        Ok(true) => c.run(TextCodec::default()).await,
        Err(e) => Err(e),
    };
    if let Some(w) = c.watcher.take() {
        // memcached: a watcher's connection never serves commands again.
        c.registered.track.set_state(ConnState::Watch);
        watch::serve_watcher(&hub, &c.conn, w).await;
        c.reason = CloseReason::Error;
    }
    if result.is_err() {
        c.reason = CloseReason::Error;
    } else if c.reason == CloseReason::Normal && c.conn.stopping() {
        c.reason = CloseReason::Shutdown;
    }
    if c.conn.tls_failure() == Some(false) {
        if let Some(t) = &core.shared.tls {
            t.proto_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    if hub.wants(class::CONNEVENTS) {
        hub.log(&Event::ConnClose {
            peer,
            reason: c.reason,
            cfd,
        });
    }
    if log::log_enabled!(log::Level::Debug) {
        let peer = c.conn.peer();
        match result {
            Ok(()) => debug!("connection {peer} closed"),
            Err(e) => debug!("connection {peer} ended: {e}"),
        }
    }
}

struct Connection {
    /// This connection's entry for `stats conns`.
    registered: Registered,
    core: Rc<Core>,
    conn: net::Conn,
    rbuf: Vec<u8>,
    /// Undecoded bytes are `rbuf[start..]`.
    start: usize,
    /// Bytes of a refused request still to discard as they arrive.
    skip: usize,
    out: Vec<u8>,
    /// The shared budget's share covering `rbuf` beyond [`READ_ALLOWANCE`].
    in_budget: Reservation,
    /// The last growth of `rbuf` was not covered: refuse the request that needs it.
    over_budget: bool,
    /// `-o idle_timeout`: close the connection when no request came for this long.
    idle_timeout: Option<Duration>,
    /// When the last request was decoded (or the connection accepted).
    last_command: Instant,
    /// The connection speaks the binary protocol.
    binary: bool,
    /// Why the connection closes, for `watch connevents`.
    reason: CloseReason,
    /// Set by a `watch` command: the connection becomes this log stream.
    watcher: Option<Arc<Watcher>>,
    /// Authentication state (always authenticated without `-S`).
    session: Session,
}

/// What a connection's requests may do, carried from batch to batch.
pub(crate) struct Session {
    /// The client authenticated (or no authentication is asked for).
    pub authenticated: bool,
}

/// What one batch did with the buffered bytes.
#[derive(Default)]
pub(crate) struct Step {
    /// Bytes of the buffer used.
    pub consumed: usize,
    /// Bytes beyond the buffer that belong to a refused request.
    pub skip: usize,
    /// The connection must close (quit, a protocol error).
    pub close: bool,
    /// Why it closes (a protocol error, `shutdown`); quitting is normal.
    pub error: Option<CloseReason>,
    /// A `watch` command was accepted: the connection becomes a log stream.
    pub watch: Option<Arc<Watcher>>,
}

impl Connection {
    /// Receives more bytes; false when the peer left or the server stops.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.rbuf.len() {
            self.rbuf.clear();
            self.start = 0;
            if self.rbuf.capacity() > READ_ALLOWANCE {
                self.rbuf = Vec::new();
            }
        } else if self.start > 0 {
            self.rbuf.drain(..self.start);
            self.start = 0;
        }
        let max_request = self.core.limits.max_item_size + 64 * 1024;
        if self.rbuf.len() >= max_request {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request larger than any acceptable one",
            ));
        }
        let before = self.rbuf.len();
        self.account_rbuf();
        let mid_request = self.mid_request();
        if mid_request {
            self.registered.track.set_state(ConnState::NRead);
        } else if before > 0 || self.registered.track.state() != ConnState::NewCmd {
            self.registered.track.set_state(ConnState::Read);
        }
        // As memcached, a connection in the middle of a request's data block is not kicked.
        let received = match self.idle_timeout {
            Some(limit) if !mid_request => {
                let left = (self.last_command + limit).saturating_duration_since(Instant::now());
                match net::timeout(left, self.conn.recv(&mut self.rbuf)).await {
                    Some(received) => received?,
                    None => {
                        self.core.counters().idle_kicks += 1;
                        self.reason = CloseReason::IdleTimeout;
                        debug!("closing idle connection {}", self.conn.peer());
                        return Ok(false);
                    }
                }
            }
            _ => self.conn.recv(&mut self.rbuf).await?,
        };
        if !received {
            return Ok(false);
        }
        self.core.counters().bytes_read += (self.rbuf.len() - before) as u64;
        self.account_rbuf();
        Ok(true)
    }

    /// Whether the undecoded bytes are a request whose data block is still arriving (memcached's
    /// conn_nread): a whole binary header, or a whole text line. `memchr` stops at the first
    /// newline, which a storage command has near its start.
    fn mid_request(&self) -> bool {
        match self.rbuf.first() {
            None => false,
            Some(&REQUEST_MAGIC) if self.binary => self.rbuf.len() >= BINARY_HEADER_LEN,
            Some(_) => memchr::memchr(b'\n', &self.rbuf).is_some(),
        }
    }

    /// Brings the budget share in line with the read buffer's size.
    fn account_rbuf(&mut self) {
        let want = self.rbuf.capacity().saturating_sub(READ_ALLOWANCE);
        self.over_budget = !self.in_budget.resize(want);
    }

    /// The codec limits for the next decode: a request may need as much buffer as this
    /// connection holds, plus what the shared budget still has (unless it just ran out).
    fn limits(&self) -> Limits {
        let spare = if self.over_budget {
            0
        } else {
            self.in_budget.budget().available()
        };
        Limits {
            buffer_room: READ_ALLOWANCE + self.in_budget.held() + spare,
            ..self.core.limits
        }
    }

    async fn run<C: Codec>(&mut self, mut codec: C) -> io::Result<()> {
        loop {
            if !self.process(&mut codec).await? || !self.fill().await? {
                return Ok(());
            }
        }
    }

    /// Runs every complete request buffered. Returns false when the connection must close.
    async fn process<C: Codec>(&mut self, codec: &mut C) -> io::Result<bool> {
        loop {
            let discard = self.skip.min(self.rbuf.len() - self.start);
            self.start += discard;
            self.skip -= discard;
            if self.skip > 0 || self.start == self.rbuf.len() {
                return Ok(true);
            }
            let limits = self.limits();
            self.core.conns.command(&self.registered.track);
            let step = batch(
                &self.core,
                codec,
                &limits,
                &self.rbuf[self.start..],
                &self.conn,
                &mut self.out,
                &mut self.session,
            )
            .await?;
            self.start += step.consumed;
            self.skip = step.skip;
            if step.consumed > 0 && self.idle_timeout.is_some() {
                self.last_command = Instant::now();
            }
            self.flush().await?;
            if let Some(reason) = step.error {
                self.reason = reason;
            }
            if step.watch.is_some() {
                self.watcher = step.watch;
                return Ok(false);
            }
            if step.close {
                return Ok(false);
            }
            if step.consumed == 0 {
                return Ok(true);
            }
        }
    }

    /// memcached's `-Y`: reads requests until one is a valid `set` whose value is `user
    /// password` of the file. Ok(false) when the connection is to close.
    async fn authenticate_text(&mut self) -> io::Result<bool> {
        if !self.core.shared.auth.text() {
            return Ok(true);
        }
        loop {
            let (ok, line, consumed) = match auth::decode_text(&self.rbuf[self.start..]) {
                TextAuth::Incomplete => (None, &b""[..], 0),
                TextAuth::Close => {
                    self.reason = CloseReason::Error;
                    return Ok(false);
                }
                TextAuth::Reply { line, consumed } => (None, line, consumed),
                TextAuth::Token {
                    user,
                    password,
                    consumed,
                } => {
                    let ok = self.core.shared.auth.check_text(user, password);
                    let mut counters = self.core.counters();
                    counters.auth_cmds += 1;
                    counters.auth_errors += u64::from(!ok);
                    let line: &[u8] = if ok {
                        b"STORED"
                    } else {
                        b"CLIENT_ERROR authentication failure"
                    };
                    (Some(ok), line, consumed)
                }
            };
            if consumed > 0 {
                self.start += consumed;
                self.out.extend_from_slice(line);
                self.out.extend_from_slice(b"\r\n");
                self.flush().await?;
                if ok == Some(true) {
                    return Ok(true);
                }
                continue;
            }
            if !self.fill().await? {
                return Ok(false);
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.core.counters().bytes_written += self.out.len() as u64;
        // Even with nothing left in `out`: values staged from the store may need the wait.
        self.registered.track.set_state(ConnState::Write);
        self.conn.send(&mut self.out).await?;
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
        Ok(())
    }
}

/// Decodes and runs the requests at the front of `buf`, writes their answers in order.
pub(crate) async fn batch<C: Codec, O: Output>(
    core: &Core,
    codec: &mut C,
    limits: &Limits,
    buf: &[u8],
    conn: &O,
    out: &mut Vec<u8>,
    session: &mut Session,
) -> io::Result<Step> {
    let mut b = Batch::new(core.shards, conn.raw_fd());
    let mut step = Step::default();
    let mut pos = 0;
    // Requests answered straight into `out` (nothing before them was waiting).
    let mut answered = 0;
    // Bytes of those answers already staged on the connection (values sent from the store).
    let mut staged = 0;
    let max_batch = core
        .shared
        .config()
        .reqs_per_event
        .map_or(MAX_BATCH, |r| r.min(MAX_BATCH));
    // A key request decoded but not run yet (see `Held`).
    let mut held: Option<Held<'_, '_, C::Ctx>> = None;
    macro_rules! tally {
        ($ran:expr) => {
            if let Some(bytes) = $ran {
                answered += 1;
                staged += bytes;
            }
        };
    }
    while answered + b.len() + usize::from(held.is_some()) < max_batch
        && staged + out.len() + b.local_bytes() < BATCH_REPLY_BYTES
    {
        let decoded = codec.decode(&buf[pos..], limits);
        let key_request = matches!(
            decoded,
            Decode::Request {
                command: Command::Get { .. }
                    | Command::Inspect { .. }
                    | Command::Store { .. }
                    | Command::Invalidate { .. }
                    | Command::Arith { .. }
                    | Command::Delete { .. }
                    | Command::Touch { .. },
                ..
            }
        );
        let refused = !session.authenticated
            && matches!(&decoded, Decode::Request { command, .. } if !matches!(
                command,
                Command::SaslListMechs
                    | Command::SaslAuth { .. }
                    | Command::SaslStep { .. }
                    | Command::Version
            ));
        if refused {
            // memcached -S: everything else before authentication is refused, and the
            // connection closed once that is sent.
            if let Some(h) = held.take() {
                tally!(run_key(&mut b, core, codec, conn, out, h, None));
            }
            if let Decode::Request { ctx, .. } = decoded {
                ready(&mut b, codec, out, ctx, Outcome::AuthError);
            }
            step.close = true;
            step.error = Some(CloseReason::Error);
            break;
        }
        if key_request && core.shared.repl.as_ref().is_some_and(|r| !r.is_ready()) {
            // Catching up from peers: this member may lack what a client would read, so it
            // answers the client away (its failover finds the next owner, which has the data).
            if let Some(h) = held.take() {
                tally!(run_key(&mut b, core, codec, conn, out, h, None));
            }
            if let Decode::Request { ctx, .. } = decoded {
                ready(&mut b, codec, out, ctx, Outcome::Unavailable);
            }
            step.close = true;
            step.error = Some(CloseReason::Error);
            break;
        }
        if !key_request {
            // Anything else is answered in order: the held request goes first.
            if let Some(h) = held.take() {
                tally!(run_key(&mut b, core, codec, conn, out, h, None));
            }
        }
        match decoded {
            Decode::Incomplete => break,
            Decode::Close => {
                step.close = true;
                step.error = Some(CloseReason::Error);
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
                    let hub = &core.shared.watch;
                    if hub.wants(class::MUTATIONS) {
                        let status = match outcome {
                            Outcome::TooLarge => StoreStatus::TooLarge,
                            _ => StoreStatus::NoMemory,
                        };
                        hub.log(&Event::ItemStore {
                            key,
                            status,
                            cmd: StoreCmd::Set,
                            ttl: 0,
                            class: 0,
                            cfd: conn.raw_fd(),
                            size: 0,
                        });
                    }
                    b.route(core, Command::Delete { key, cas: 0 }, key, None);
                }
                if outcome == Outcome::TooLarge {
                    core.counters().store_too_large += 1;
                }
                ready(&mut b, codec, out, ctx, outcome);
                let here = skip.min(buf.len() - pos);
                pos += here;
                step.skip = skip - here;
                step.close = close;
                if close {
                    step.error = Some(CloseReason::Error);
                }
                break;
            }
            Decode::Request {
                command,
                ctx,
                consumed,
            } => {
                if let Command::Watch { events, valid } = command {
                    let refused = watch_refusal(core, events, valid, pos > 0);
                    pos += consumed;
                    match refused {
                        Ok(w) => {
                            ready(&mut b, codec, out, ctx, Outcome::Admin(AdminStatus::Ok));
                            step.watch = Some(w);
                            break;
                        }
                        Err(o) => {
                            ready(&mut b, codec, out, ctx, o);
                            continue;
                        }
                    }
                }
                if let Command::Admin(Admin::MetaDump(_)) = command {
                    // memcached refuses a metadump behind other requests of the same read.
                    if let Some(refused) = core.metadump_refusal(pos > 0) {
                        pos += consumed;
                        ready(&mut b, codec, out, ctx, Outcome::Admin(refused));
                        continue;
                    }
                }
                let barrier = matches!(
                    command,
                    Command::Flush { .. } | Command::Stats { .. } | Command::Admin(_)
                );
                if barrier && !b.is_empty() {
                    // Everything before a flush or stats must be done first.
                    break;
                }
                pos += consumed;
                match command {
                    Command::Get { .. }
                    | Command::Inspect { .. }
                    | Command::Store { .. }
                    | Command::Invalidate { .. }
                    | Command::Arith { .. }
                    | Command::Delete { .. }
                    | Command::Touch { .. } => {
                        let wire_key = command.key().copied().unwrap_or_default();
                        match codec.item_key(&ctx, wire_key) {
                            Cow::Borrowed(item_key) => {
                                let hash = key_hash(item_key);
                                // The one held runs now, prefetching this one's item; this one
                                // waits for the next request or the end of the batch.
                                if let Some(h) = held.take() {
                                    tally!(run_key(&mut b, core, codec, conn, out, h, Some(hash)));
                                }
                                held = Some(Held {
                                    command,
                                    ctx,
                                    wire_key,
                                    hash,
                                });
                            }
                            Cow::Owned(item_key) => {
                                let hash = key_hash(&item_key);
                                if let Some(h) = held.take() {
                                    tally!(run_key(&mut b, core, codec, conn, out, h, Some(hash)));
                                }
                                // Key fields come first in `map_bytes`: only the key changes.
                                let mut first = true;
                                let command = command.map_bytes(|bytes| {
                                    if std::mem::take(&mut first) {
                                        &item_key[..]
                                    } else {
                                        bytes
                                    }
                                });
                                let h = Held {
                                    command,
                                    ctx,
                                    wire_key,
                                    hash,
                                };
                                tally!(run_key(&mut b, core, codec, conn, out, h, None));
                            }
                        }
                    }
                    Command::Noop | Command::Verbosity { .. } => {
                        ready(&mut b, codec, out, ctx, Outcome::Done)
                    }
                    Command::Version => ready(
                        &mut b,
                        codec,
                        out,
                        ctx,
                        Outcome::Version(crate::VERSION_STRING.as_bytes()),
                    ),
                    // SASL is off: answered as memcached without -S does.
                    Command::SaslListMechs
                    | Command::SaslAuth { .. }
                    | Command::SaslStep { .. }
                        if !core.shared.auth.sasl() =>
                    {
                        ready(&mut b, codec, out, ctx, Outcome::UnknownCommand)
                    }
                    Command::SaslListMechs => ready(
                        &mut b,
                        codec,
                        out,
                        ctx,
                        Outcome::SaslMechs(auth::MECHANISMS),
                    ),
                    Command::SaslAuth { mechanism, data } => {
                        let ok = mechanism == b"PLAIN"
                            && auth::parse_plain(data).is_some_and(|(user, password)| {
                                core.shared.auth.check_sasl(user, password)
                            });
                        let mut counters = core.counters();
                        counters.auth_cmds += 1;
                        counters.auth_errors += u64::from(!ok);
                        session.authenticated |= ok;
                        let outcome = if ok {
                            Outcome::Authenticated
                        } else {
                            Outcome::AuthError
                        };
                        ready(&mut b, codec, out, ctx, outcome)
                    }
                    // PLAIN takes one step: a step has nothing to continue (memcached's answer
                    // to a step without a started exchange).
                    Command::SaslStep { .. } => {
                        let mut counters = core.counters();
                        counters.auth_cmds += 1;
                        counters.auth_errors += 1;
                        ready(&mut b, codec, out, ctx, Outcome::AuthError)
                    }
                    Command::Quit => {
                        ready(&mut b, codec, out, ctx, Outcome::Done);
                        step.close = true;
                        break;
                    }
                    // -F: memcached refuses with its authentication error (binary 0x20).
                    Command::Flush { .. } if core.shared.config().disable_flush_all => {
                        ready(&mut b, codec, out, ctx, Outcome::AuthError)
                    }
                    Command::Flush { delay } => {
                        core.flush_all(delay).await;
                        ready(&mut b, codec, out, ctx, Outcome::Done);
                        break;
                    }
                    Command::Shutdown { .. } if !core.shared.config().enable_shutdown => {
                        ready(&mut b, codec, out, ctx, Outcome::UnknownCommand)
                    }
                    Command::Shutdown { valid_mode: false } => {
                        ready(&mut b, codec, out, ctx, Outcome::InvalidArguments)
                    }
                    Command::Shutdown { valid_mode: true } => {
                        // -A: the same graceful stop as SIGTERM; this connection closes.
                        log::info!("shutdown command: draining connections and stopping");
                        core.shared.request_stop();
                        step.close = true;
                        step.error = Some(CloseReason::Shutdown);
                        break;
                    }
                    // Answered above.
                    Command::Watch { .. } => {}
                    Command::Stats { group } if group == b"conns" => {
                        let outcome = core.stats_conns().await?;
                        ready(&mut b, codec, out, ctx, outcome);
                        break;
                    }
                    Command::Admin(a) => {
                        core.admin(a, codec, &ctx, conn, out).await?;
                        break;
                    }
                    Command::Stats { group } => {
                        let outcome = core.stats(group).await;
                        ready(&mut b, codec, out, ctx, outcome);
                        break;
                    }
                }
            }
        }
    }
    if let Some(h) = held.take() {
        tally!(run_key(&mut b, core, codec, conn, out, h, None));
    }
    // -R cut the batch short with requests left: memcached's `conn_yields`.
    if core.shared.config().reqs_per_event.is_some()
        && answered + b.len() >= max_batch
        && pos < buf.len()
    {
        core.counters().conn_yields += 1;
    }
    step.consumed = pos;
    core.counters().bytes_written += staged as u64;
    gather(core, codec, b, conn, out).await?;
    Ok(step)
}

/// A key request decoded and held back one step: the request decoded after it is prefetched
/// (its index slots and item) while this one runs, so a pipelined batch waits on memory once
/// instead of once per request.
struct Held<'k, 'w, X> {
    command: Command<&'k [u8]>,
    ctx: X,
    /// The key as the request spelled it (the reply echoes it).
    wire_key: &'w [u8],
    /// [`key_hash`] of the item's key.
    hash: u64,
}

/// Runs a key request at once when it can, encoding its answer into `out` (`Some` of the bytes
/// staged beside `out`), else queues it in the batch (`None`). `next`: the hash of the key
/// request that follows, to prefetch.
fn run_key<'b, C: Codec, O: Output>(
    b: &mut Batch<'b, C::Ctx>,
    core: &Core,
    codec: &mut C,
    conn: &O,
    out: &mut Vec<u8>,
    held: Held<'_, 'b, C::Ctx>,
    next: Option<u64>,
) -> Option<usize>
where
    C::Ctx: 'b,
{
    let Held {
        command,
        ctx,
        wire_key,
        hash,
    } = held;
    let now = b.run_now(core, command, hash, next, conn.lends(), |outcome, lent| {
        encode_answer(codec, conn, out, &ctx, wire_key, outcome, lent)
    });
    match now {
        Ok(bytes) => Some(bytes),
        Err(command) => {
            b.route(core, command, wire_key, Some(ctx));
            None
        }
    }
}

/// memcached's checks of a `watch` command, in its order: `-W`, other requests before it in
/// the same read, unknown words, the watcher limit. A watcher on success.
fn watch_refusal(
    core: &Core,
    events: u16,
    valid: bool,
    pipelined: bool,
) -> Result<Arc<Watcher>, Outcome<&'static [u8]>> {
    let hub = &core.shared.watch;
    if !hub.enabled() {
        return Err(Outcome::Admin(AdminStatus::WatchDisabled));
    }
    if pipelined {
        return Err(Outcome::Admin(AdminStatus::WatchPipelined));
    }
    if !valid {
        return Err(Outcome::UnknownCommand);
    }
    match hub.add(events) {
        Ok(w) => Ok(w),
        Err(AddError::TooMany) => Err(Outcome::Admin(AdminStatus::WatchTooMany)),
        Err(AddError::Disabled) => Err(Outcome::Admin(AdminStatus::WatchDisabled)),
    }
}

/// Answers a request whose outcome needs no shard: at once when nothing before it in the batch
/// waits, else in its place among the batch's answers.
fn ready<C: Codec>(
    b: &mut Batch<'_, C::Ctx>,
    codec: &mut C,
    out: &mut Vec<u8>,
    ctx: C::Ctx,
    outcome: Outcome<&[u8]>,
) {
    if b.is_empty() {
        codec.encode(out, &ctx, &[], &outcome);
    } else {
        b.ready(ctx, &[], outcome);
    }
}
