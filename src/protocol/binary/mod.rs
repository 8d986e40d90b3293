//! memcached binary protocol (requests magic 0x80, responses magic 0x81), byte-exact with
//! memcached 1.6.18.
//!
//! Server side: [`decode`] reads one request from the front of the read buffer, borrowing its key
//! and value; [`encode_response`] appends the reply for an [`Outcome`]. Each quiet opcode decodes
//! to its normal [`Command`] with [`ReplyCtx::quiet`] set, and the encoder drops the replies the
//! quiet variant suppresses. Client side (tests, our client, integration tests):
//! [`encode_request`] and [`decode_response`].
//!
//! All checks memcached makes on a header are made here from the 24 header bytes alone, before
//! anything else is buffered: a refused request never makes the caller hold its body.

mod client;
#[cfg(test)]
mod tests;

pub use client::{
    decode_response, encode_packet, encode_request, request_opcode, EncodeError, Response,
    ResponseDecode, Variant,
};

use super::{ArithOp, Command, Decode, Limits, Outcome, StoreMode};

/// Length of every request and response header.
pub const HEADER_LEN: usize = 24;

/// The body of an [`Outcome::Unavailable`] answer.
const UNAVAILABLE_TEXT: &str = "Catching up from peers";
/// First byte of every request.
pub const REQUEST_MAGIC: u8 = 0x80;
/// First byte of every response.
pub const RESPONSE_MAGIC: u8 = 0x81;
/// Largest body accepted at all (memcached's `ITEM_SIZE_MAX_UPPER_LIMIT`, 1 GiB); beyond it the
/// request is "Invalid arguments" and the connection closes. memcached 1.6.18 lacks this guard
/// and would try to swallow up to 4 GiB; later memcached added it.
pub const MAX_BODY_LEN: usize = 1024 * 1024 * 1024;
/// Incr/decr exptime meaning "do not create the counter on a miss".
pub const NO_AUTO_CREATE: u32 = 0xffff_ffff;

/// Opcodes memcached 1.6 knows (`protocol_binary.h`); a response carries the request's opcode.
pub mod opcode {
    /// Get.
    pub const GET: u8 = 0x00;
    /// Set.
    pub const SET: u8 = 0x01;
    /// Add.
    pub const ADD: u8 = 0x02;
    /// Replace.
    pub const REPLACE: u8 = 0x03;
    /// Delete.
    pub const DELETE: u8 = 0x04;
    /// Increment.
    pub const INCREMENT: u8 = 0x05;
    /// Decrement.
    pub const DECREMENT: u8 = 0x06;
    /// Quit.
    pub const QUIT: u8 = 0x07;
    /// Flush.
    pub const FLUSH: u8 = 0x08;
    /// Get, quiet (misses are not answered).
    pub const GETQ: u8 = 0x09;
    /// No-op, the pipeline barrier.
    pub const NOOP: u8 = 0x0a;
    /// Version.
    pub const VERSION: u8 = 0x0b;
    /// Get, returning the key.
    pub const GETK: u8 = 0x0c;
    /// Get, returning the key, quiet.
    pub const GETKQ: u8 = 0x0d;
    /// Append.
    pub const APPEND: u8 = 0x0e;
    /// Prepend.
    pub const PREPEND: u8 = 0x0f;
    /// Stat.
    pub const STAT: u8 = 0x10;
    /// Set, quiet.
    pub const SETQ: u8 = 0x11;
    /// Add, quiet.
    pub const ADDQ: u8 = 0x12;
    /// Replace, quiet.
    pub const REPLACEQ: u8 = 0x13;
    /// Delete, quiet.
    pub const DELETEQ: u8 = 0x14;
    /// Increment, quiet.
    pub const INCREMENTQ: u8 = 0x15;
    /// Decrement, quiet.
    pub const DECREMENTQ: u8 = 0x16;
    /// Quit, quiet (close without a reply).
    pub const QUITQ: u8 = 0x17;
    /// Flush, quiet.
    pub const FLUSHQ: u8 = 0x18;
    /// Append, quiet.
    pub const APPENDQ: u8 = 0x19;
    /// Prepend, quiet.
    pub const PREPENDQ: u8 = 0x1a;
    /// Verbosity: in the spec, but memcached 1.6.18 answers it "Unknown command".
    pub const VERBOSITY: u8 = 0x1b;
    /// Touch.
    pub const TOUCH: u8 = 0x1c;
    /// Get and touch.
    pub const GAT: u8 = 0x1d;
    /// Get and touch, quiet.
    pub const GATQ: u8 = 0x1e;
    /// SASL: list mechanisms.
    pub const SASL_LIST_MECHS: u8 = 0x20;
    /// SASL: authenticate.
    pub const SASL_AUTH: u8 = 0x21;
    /// SASL: next step.
    pub const SASL_STEP: u8 = 0x22;
    /// Get and touch, returning the key.
    pub const GATK: u8 = 0x23;
    /// Get and touch, returning the key, quiet.
    pub const GATKQ: u8 = 0x24;
}

/// Response status codes memcached sends.
pub mod status {
    /// Success.
    pub const NO_ERROR: u16 = 0x0000;
    /// Key not found.
    pub const KEY_ENOENT: u16 = 0x0001;
    /// Key exists (CAS mismatch, Add on an existing key).
    pub const KEY_EEXISTS: u16 = 0x0002;
    /// Value too large.
    pub const E2BIG: u16 = 0x0003;
    /// Invalid arguments.
    pub const EINVAL: u16 = 0x0004;
    /// Item not stored.
    pub const NOT_STORED: u16 = 0x0005;
    /// Incr/decr on a non-numeric value.
    pub const DELTA_BADVAL: u16 = 0x0006;
    /// Authentication error.
    pub const AUTH_ERROR: u16 = 0x0020;
    /// Authentication continues.
    pub const AUTH_CONTINUE: u16 = 0x0021;
    /// Unknown command.
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
    /// Out of memory.
    pub const ENOMEM: u16 = 0x0082;
    /// Temporary failure (memcached's `PROTOCOL_BINARY_RESPONSE_ETMPFAIL`).
    pub const ETMPFAIL: u16 = 0x0086;
}

/// What encoding a reply needs that the [`Command`] does not carry; kept by the connection from
/// decode to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyCtx {
    /// Request opcode, echoed in the reply (quiet opcodes included).
    pub opcode: u8,
    /// Request opaque, echoed verbatim.
    pub opaque: u32,
    /// A quiet opcode: the uninteresting reply is suppressed.
    pub quiet: bool,
    /// A K variant (GetK, GetKQ, GATK, GATKQ): hits and misses carry the key.
    pub echo_key: bool,
}

impl ReplyCtx {
    /// The context of a request with this opcode and opaque.
    pub fn new(opcode: u8, opaque: u32) -> ReplyCtx {
        use opcode::*;
        ReplyCtx {
            opcode,
            opaque,
            quiet: matches!(
                opcode,
                GETQ | GETKQ
                    | SETQ
                    | ADDQ
                    | REPLACEQ
                    | DELETEQ
                    | INCREMENTQ
                    | DECREMENTQ
                    | QUITQ
                    | FLUSHQ
                    | APPENDQ
                    | PREPENDQ
                    | GATQ
                    | GATKQ
            ),
            echo_key: matches!(opcode, GETK | GETKQ | GATK | GATKQ),
        }
    }

    /// Whether this request's reply to `outcome` is suppressed (sends nothing): quiet gets drop
    /// misses, other quiet commands (QuitQ included) drop success; errors always go out, even
    /// for QuitQ, as memcached sends a malformed QuitQ its error before closing.
    pub fn suppresses<V>(&self, outcome: &Outcome<V>) -> bool {
        if !self.quiet {
            return false;
        }
        match Kind::of(self.opcode) {
            Some(Kind::Get | Kind::GetTouch) => matches!(outcome, Outcome::NotFound),
            _ => matches!(
                outcome,
                Outcome::Stored { .. }
                    | Outcome::Deleted
                    | Outcome::Counter { .. }
                    | Outcome::Touched { .. }
                    | Outcome::Done
            ),
        }
    }
}

/// The binary protocol as a [`Codec`](super::Codec); stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct BinaryCodec;

impl super::Codec for BinaryCodec {
    type Ctx = ReplyCtx;

    fn decode<'a>(&mut self, buf: &'a [u8], limits: &Limits) -> Decode<'a, ReplyCtx> {
        decode(buf, limits)
    }

    fn encode(&mut self, out: &mut Vec<u8>, ctx: &ReplyCtx, key: &[u8], outcome: &Outcome<&[u8]>) {
        encode_response(out, ctx, key, outcome);
    }

    fn encode_split(
        &mut self,
        out: &mut Vec<u8>,
        ctx: &ReplyCtx,
        key: &[u8],
        outcome: &Outcome<&[u8]>,
        put_value: &mut dyn FnMut(&mut Vec<u8>),
    ) -> bool {
        let Outcome::Value { flags, cas, value } = outcome else {
            return false;
        };
        // A Touch hit has no value to carry; a suppressed reply nothing at all.
        if ctx.opcode == opcode::TOUCH || ctx.suppresses(outcome) {
            return false;
        }
        put_hit(out, ctx, key, *flags, *cas, value.len(), put_value);
        true
    }
}

/// The request families, each with memcached's shape rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    GetTouch,
    Store(StoreMode),
    Delete,
    Arith(ArithOp),
    Quit,
    Flush,
    Noop,
    Version,
    Stat,
    Touch,
    SaslListMechs,
    SaslAuth,
    SaslStep,
}

impl Kind {
    /// The family of an opcode, `None` for opcodes memcached 1.6.18 answers "Unknown command".
    fn of(op: u8) -> Option<Kind> {
        use opcode::*;
        Some(match op {
            GET | GETQ | GETK | GETKQ => Kind::Get,
            GAT | GATQ | GATK | GATKQ => Kind::GetTouch,
            SET | SETQ => Kind::Store(StoreMode::Set),
            ADD | ADDQ => Kind::Store(StoreMode::Add),
            REPLACE | REPLACEQ => Kind::Store(StoreMode::Replace),
            APPEND | APPENDQ => Kind::Store(StoreMode::Append),
            PREPEND | PREPENDQ => Kind::Store(StoreMode::Prepend),
            DELETE | DELETEQ => Kind::Delete,
            INCREMENT | INCREMENTQ => Kind::Arith(ArithOp::Incr),
            DECREMENT | DECREMENTQ => Kind::Arith(ArithOp::Decr),
            QUIT | QUITQ => Kind::Quit,
            FLUSH | FLUSHQ => Kind::Flush,
            NOOP => Kind::Noop,
            VERSION => Kind::Version,
            STAT => Kind::Stat,
            TOUCH => Kind::Touch,
            SASL_LIST_MECHS => Kind::SaslListMechs,
            SASL_AUTH => Kind::SaslAuth,
            SASL_STEP => Kind::SaslStep,
            _ => return None,
        })
    }

    /// memcached's extras/key/body check for this family (`dispatch_bin_command`). Where memcached
    /// does not bound the body (Stat, Touch, GAT) stray bytes would be parsed as the next header;
    /// we refuse them instead.
    fn shape_ok(self, h: &Header) -> bool {
        let (ext, key, body) = (h.extlen, h.keylen, h.bodylen);
        match self {
            Kind::Get | Kind::Delete => ext == 0 && key > 0 && body == key,
            Kind::GetTouch | Kind::Touch => ext == 4 && key > 0 && body == key + 4,
            // (The binary protocol has no Cas mode: a SET with a non-zero CAS compares.)
            Kind::Store(StoreMode::Set | StoreMode::Add | StoreMode::Replace | StoreMode::Cas) => {
                ext == 8 && key > 0
            }
            Kind::Store(StoreMode::Append | StoreMode::Prepend)
            | Kind::SaslAuth
            | Kind::SaslStep => ext == 0 && key > 0,
            Kind::Arith(_) => ext == 20 && key > 0 && body == key + 20,
            Kind::Quit | Kind::Noop | Kind::Version | Kind::SaslListMechs => body == 0,
            Kind::Flush => key == 0 && body == ext && (ext == 0 || ext == 4),
            Kind::Stat => ext == 0 && body == key,
        }
    }

    /// Whether the body carries a value of client-chosen length.
    fn has_value(self) -> bool {
        matches!(self, Kind::Store(_) | Kind::SaslAuth | Kind::SaslStep)
    }
}

/// The request header fields the decoder uses (data type and vbucket are ignored, as memcached
/// does).
struct Header {
    opcode: u8,
    keylen: usize,
    extlen: usize,
    bodylen: usize,
    opaque: u32,
    cas: u64,
}

impl Header {
    fn parse(h: &[u8; HEADER_LEN]) -> Header {
        Header {
            opcode: h[1],
            keylen: usize::from(u16::from_be_bytes([h[2], h[3]])),
            extlen: usize::from(h[4]),
            bodylen: u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize,
            opaque: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            cas: u64::from_be_bytes([h[16], h[17], h[18], h[19], h[20], h[21], h[22], h[23]]),
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Decodes the request at the front of `buf`.
///
/// Checks run in memcached's order: bad magic → [`Decode::Close`]; key + extras longer than the
/// body → "Unknown command" and close; body over [`MAX_BODY_LEN`] or key over
/// `limits.max_key_len` → "Invalid arguments" and close; unknown opcode → "Unknown command", the
/// whole packet skipped, connection kept; wrong shape → "Invalid arguments" and close; a value
/// over `limits.max_item_size` → "Too large." with the whole packet skipped and the connection
/// kept (Set/SetQ also name the key to unlink; SASL frames get "Out of memory", as memcached's
/// failed allocation does). All of these are decided from the header (and, for Set, its key),
/// never by waiting for the body.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Decode<'a, ReplyCtx> {
    match buf.first() {
        None => return Decode::Incomplete,
        // No reply can be framed for a peer that does not speak the protocol.
        Some(&magic) if magic != REQUEST_MAGIC => return Decode::Close,
        Some(_) => {}
    }
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Decode::Incomplete;
    };
    let h = Header::parse(header);
    let ctx = ReplyCtx::new(h.opcode, h.opaque);
    // Once the stream is out of step nothing after this header can be trusted: a closing
    // rejection skips only the header, the caller closes after replying.
    let closing = |outcome| Decode::Reject {
        ctx,
        outcome,
        skip: HEADER_LEN,
        close: true,
        unlink_key: None,
    };
    if h.keylen + h.extlen > h.bodylen {
        return closing(Outcome::UnknownCommand);
    }
    if h.bodylen > MAX_BODY_LEN || h.keylen > limits.max_key_len {
        return closing(Outcome::InvalidArguments);
    }
    let total = HEADER_LEN + h.bodylen;
    let Some(kind) = Kind::of(h.opcode) else {
        // Exactly this packet is skipped. (memcached 1.6.18 swallows `bodylen` bytes *after*
        // the extras and key it already read, so an unknown opcode carrying either leaves it
        // out of step with the stream; we do not copy that.)
        return Decode::Reject {
            ctx,
            outcome: Outcome::UnknownCommand,
            skip: total,
            close: false,
            unlink_key: None,
        };
    };
    if !kind.shape_ok(&h) {
        return closing(Outcome::InvalidArguments);
    }
    let key_at = HEADER_LEN + h.extlen;
    let value_at = key_at + h.keylen;
    if kind.has_value() && total - value_at > limits.max_item_size {
        let (outcome, unlink_key) = match kind {
            Kind::Store(StoreMode::Set) => match buf.get(key_at..value_at) {
                Some(key) => (Outcome::TooLarge, Some(key)),
                None => return Decode::Incomplete,
            },
            Kind::Store(_) => (Outcome::TooLarge, None),
            _ => (Outcome::OutOfMemory, None),
        };
        return Decode::Reject {
            ctx,
            outcome,
            skip: total,
            close: false,
            unlink_key,
        };
    }
    if kind.has_value() && total > limits.buffer_room {
        // The connection cannot buffer this now: refused as memcached refuses an item it
        // cannot allocate (a failed Set also drops the old value).
        let unlink_key = match kind {
            Kind::Store(StoreMode::Set) => match buf.get(key_at..value_at) {
                Some(key) => Some(key),
                None => return Decode::Incomplete,
            },
            _ => None,
        };
        return Decode::Reject {
            ctx,
            outcome: Outcome::OutOfMemory,
            skip: total,
            close: false,
            unlink_key,
        };
    }
    let Some(packet) = buf.get(..total) else {
        return Decode::Incomplete;
    };
    let extras = &packet[HEADER_LEN..key_at];
    let key = &packet[key_at..value_at];
    let value = &packet[value_at..];
    // The wire exptime is a u32: widen without sign extension (0xffffffff is year 2106, not -1).
    // memcached's binary protocol has no `stats conns` (text only): its binary answer is
    // "Not found", whatever the text protocol lists.
    if kind == Kind::Stat && key == b"conns" {
        return Decode::Reject {
            ctx,
            outcome: Outcome::UnknownStatsGroup,
            skip: total,
            close: false,
            unlink_key: None,
        };
    }
    let exptime = |at: usize| i64::from(be32(&extras[at..]));
    let command = match kind {
        Kind::Get => Command::Get {
            key,
            touch: None,
            meta: None,
        },
        Kind::GetTouch => Command::Get {
            key,
            touch: Some(exptime(0)),
            meta: None,
        },
        Kind::Touch => Command::Touch {
            key,
            exptime: exptime(0),
        },
        Kind::Store(mode) => {
            let (flags, exptime) = if extras.is_empty() {
                (0, 0)
            } else {
                (be32(extras), exptime(4))
            };
            Command::Store {
                mode,
                key,
                value,
                flags,
                exptime,
                cas: h.cas,
                meta: None,
            }
        }
        Kind::Delete => Command::Delete { key, cas: h.cas },
        Kind::Arith(op) => {
            let expiry = be32(&extras[16..]);
            Command::Arith {
                op,
                key,
                delta: be64(extras),
                on_miss: (expiry != NO_AUTO_CREATE)
                    .then(|| (be64(&extras[8..]), i64::from(expiry))),
                cas: h.cas,
                meta: None,
            }
        }
        Kind::Quit => Command::Quit,
        Kind::Flush => Command::Flush {
            delay: if extras.is_empty() { 0 } else { exptime(0) },
        },
        Kind::Noop => Command::Noop,
        Kind::Version => Command::Version,
        Kind::Stat => Command::Stats { group: key },
        Kind::SaslListMechs => Command::SaslListMechs,
        Kind::SaslAuth => Command::SaslAuth {
            mechanism: key,
            data: value,
        },
        Kind::SaslStep => Command::SaslStep {
            mechanism: key,
            data: value,
        },
    };
    Decode::Request {
        command,
        ctx,
        consumed: total,
    }
}

/// Appends one response packet.
fn put_packet(
    out: &mut Vec<u8>,
    ctx: &ReplyCtx,
    status: u16,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    put_packet_head(out, ctx, status, cas, extras, key, value.len());
    out.extend_from_slice(value);
}

/// Appends the packet of a hit carrying `value_len` bytes of value, which `put_value` appends.
fn put_hit(
    out: &mut Vec<u8>,
    ctx: &ReplyCtx,
    key: &[u8],
    flags: u32,
    cas: u64,
    value_len: usize,
    put_value: &mut dyn FnMut(&mut Vec<u8>),
) {
    let key = if ctx.echo_key { key } else { &[] };
    let extras = flags.to_be_bytes();
    put_packet_head(out, ctx, status::NO_ERROR, cas, &extras, key, value_len);
    put_value(out);
}

/// Appends a response packet's header, extras and key: everything but its `value_len` bytes of
/// value.
fn put_packet_head(
    out: &mut Vec<u8>,
    ctx: &ReplyCtx,
    status: u16,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value_len: usize,
) {
    let body = extras.len() + key.len() + value_len;
    debug_assert!(key.len() <= usize::from(u16::MAX) && extras.len() <= usize::from(u8::MAX));
    debug_assert!(body <= u32::MAX as usize);
    let mut header = [0u8; HEADER_LEN];
    header[0] = RESPONSE_MAGIC;
    header[1] = ctx.opcode;
    header[2..4].copy_from_slice(&(key.len() as u16).to_be_bytes());
    header[4] = extras.len() as u8;
    // header[5], the data type, stays 0: raw bytes.
    header[6..8].copy_from_slice(&status.to_be_bytes());
    header[8..12].copy_from_slice(&(body as u32).to_be_bytes());
    header[12..16].copy_from_slice(&ctx.opaque.to_be_bytes());
    header[16..24].copy_from_slice(&cas.to_be_bytes());
    out.reserve(HEADER_LEN + body);
    out.extend_from_slice(&header);
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
}

/// Appends an error packet: the status with memcached's text as the body, CAS 0, no extras/key.
fn put_error(out: &mut Vec<u8>, ctx: &ReplyCtx, status: u16, text: &str) {
    put_packet(out, ctx, status, 0, &[], &[], text.as_bytes());
}

/// memcached's text for an allocation failure, which names what was being allocated.
fn out_of_memory_text(opcode: u8) -> &'static str {
    match Kind::of(opcode) {
        Some(Kind::Store(_)) => "Out of memory allocating item",
        // memcached says "allocating new item" when creating a missing counter; the outcome
        // does not tell the two apart, so the failure on an existing counter is named.
        Some(Kind::Arith(_)) => "Out of memory incrementing value",
        Some(Kind::Stat) => "Out of memory generating stats",
        _ => "Out of memory",
    }
}

/// Appends exactly what memcached sends for `outcome` in reply to the request of `ctx` (nothing
/// when the quiet variant suppresses it). `key` is the request's key, returned by the K variants.
pub fn encode_response(out: &mut Vec<u8>, ctx: &ReplyCtx, key: &[u8], outcome: &Outcome<&[u8]>) {
    if ctx.suppresses(outcome) {
        return;
    }
    let no_key: &[u8] = &[];
    match outcome {
        Outcome::Value { flags, cas, value } => {
            // A Touch hit carries the flags but not the value.
            let value = if ctx.opcode == opcode::TOUCH {
                no_key
            } else {
                value
            };
            put_hit(out, ctx, key, *flags, *cas, value.len(), &mut |out| {
                out.extend_from_slice(value)
            });
        }
        Outcome::Touched { flags, cas } => {
            put_packet(
                out,
                ctx,
                status::NO_ERROR,
                *cas,
                &flags.to_be_bytes(),
                &[],
                &[],
            );
        }
        Outcome::Stored { cas } => put_packet(out, ctx, status::NO_ERROR, *cas, &[], &[], &[]),
        Outcome::Deleted | Outcome::Done => {
            put_packet(out, ctx, status::NO_ERROR, 0, &[], &[], &[])
        }
        Outcome::Counter { value, cas } | Outcome::MetaCounter { value, cas, .. } => {
            put_packet(
                out,
                ctx,
                status::NO_ERROR,
                *cas,
                &[],
                &[],
                &value.to_be_bytes(),
            );
        }
        Outcome::Version(v) | Outcome::SaslMechs(v) => {
            put_packet(out, ctx, status::NO_ERROR, 0, &[], &[], v);
        }
        Outcome::Stats(pairs) | Outcome::StatsOpen(pairs) => {
            for (name, value) in pairs {
                put_packet(
                    out,
                    ctx,
                    status::NO_ERROR,
                    0,
                    &[],
                    name.as_bytes(),
                    value.as_bytes(),
                );
            }
            // The empty packet ends the stream (not after sizes_enable/disable, as memcached).
            if matches!(outcome, Outcome::Stats(_)) {
                put_packet(out, ctx, status::NO_ERROR, 0, &[], &[], &[]);
            }
        }
        Outcome::UnknownStatsGroup => put_error(out, ctx, status::KEY_ENOENT, "Not found"),
        Outcome::Authenticated => {
            put_packet(out, ctx, status::NO_ERROR, 0, &[], &[], b"Authenticated");
        }
        Outcome::AuthContinue(challenge) => {
            put_packet(out, ctx, status::AUTH_CONTINUE, 0, &[], &[], challenge);
        }
        Outcome::AuthError => put_error(out, ctx, status::AUTH_ERROR, "Auth failure."),
        Outcome::NotFound if ctx.echo_key && !key.is_empty() => {
            // K-variant miss: the key as key and body, no text.
            put_packet(out, ctx, status::KEY_ENOENT, 0, &[], key, &[]);
        }
        Outcome::NotFound => put_error(out, ctx, status::KEY_ENOENT, "Not found"),
        Outcome::Exists => put_error(out, ctx, status::KEY_EEXISTS, "Data exists for key."),
        Outcome::NotStored => put_error(out, ctx, status::NOT_STORED, "Not stored."),
        Outcome::NonNumeric => put_error(
            out,
            ctx,
            status::DELTA_BADVAL,
            "Non-numeric server-side value for incr or decr",
        ),
        Outcome::TooLarge => put_error(out, ctx, status::E2BIG, "Too large."),
        Outcome::OutOfMemory => {
            put_error(out, ctx, status::ENOMEM, out_of_memory_text(ctx.opcode));
        }
        Outcome::InvalidArguments => put_error(out, ctx, status::EINVAL, "Invalid arguments"),
        Outcome::Unavailable => put_error(out, ctx, status::ETMPFAIL, UNAVAILABLE_TEXT),
        // Meta-protocol outcomes never answer a binary request.
        // Neither do the text protocol's operator answers.
        Outcome::UnknownCommand
        | Outcome::Item { .. }
        | Outcome::Info(_)
        | Outcome::Admin(_)
        | Outcome::CacheDump(_)
        | Outcome::MetaDump { .. } => {
            put_error(out, ctx, status::UNKNOWN_COMMAND, "Unknown command")
        }
    }
}
