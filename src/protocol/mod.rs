//! Pure wire codecs: bytes in, [`Command`]s out; [`Outcome`]s in, bytes out. No I/O here.
//!
//! The codec contract every protocol follows: decoding looks at the front of the read buffer and
//! returns one [`Decode`]; the caller consumes `consumed`/`skip` bytes and calls again.

use std::borrow::Cow;

pub mod ascii;
pub mod auth;
pub mod binary;
pub mod command;
pub mod http;
pub mod meta;
pub mod repl;
pub mod text;
pub mod udp;
pub mod watch;

pub use command::{
    Admin, AdminStatus, ArithMeta, ArithOp, ClassSet, Command, DumpedItem, GetMeta, ItemMeta,
    Outcome, StoreMeta, StoreMode,
};

/// memcached's key length limit (`KEY_MAX_LENGTH`).
pub const KEY_MAX_LEN: usize = 250;

/// Limits checked from the header, before anything is buffered or allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted key.
    pub max_key_len: usize,
    /// Largest accepted item (`-I`); bodies beyond it are skipped, never buffered.
    pub max_item_size: usize,
    /// Bytes the connection can buffer for one request right now. A storage request longer
    /// than this (yet within `max_item_size`) is refused with [`Outcome::OutOfMemory`] and its
    /// bytes skipped: memcached's answer when it cannot allocate the item.
    pub buffer_room: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_len: KEY_MAX_LEN,
            max_item_size: 1024 * 1024,
            buffer_room: usize::MAX,
        }
    }
}

/// A wire protocol as a connection drives it: decode requests from the front of the read
/// buffer, encode each outcome in request order. A codec may keep state between calls (the text
/// protocol splits a multi-key `get` into one request per key).
pub trait Codec {
    /// What encoding a reply needs beyond the [`Outcome`], kept from decode to encode.
    type Ctx;
    /// Decodes the request at the front of `buf` (see [`Decode`]).
    fn decode<'a>(&mut self, buf: &'a [u8], limits: &Limits) -> Decode<'a, Self::Ctx>;
    /// Appends the reply to `outcome` (nothing when the protocol suppresses it); `key` is the
    /// request's key, empty when it has none.
    fn encode(&mut self, out: &mut Vec<u8>, ctx: &Self::Ctx, key: &[u8], outcome: &Outcome<&[u8]>);
    /// Appends the reply as [`Codec::encode`] does, except that a hit's value
    /// (`Outcome::Value`) is not copied: `put_value` is called where its bytes belong, with
    /// `out` holding everything before them, and may take those bytes away (the caller then
    /// places the value after them by its own means). Returns false, having written nothing,
    /// when this reply does not carry its value that way; the caller then uses `encode`.
    fn encode_split(
        &mut self,
        _out: &mut Vec<u8>,
        _ctx: &Self::Ctx,
        _key: &[u8],
        _outcome: &Outcome<&[u8]>,
        _put_value: &mut dyn FnMut(&mut Vec<u8>),
    ) -> bool {
        false
    }
    /// The item key that a request's key names: the wire key itself, except where the protocol
    /// encodes keys (meta `b`: base64). Replies echo the wire key.
    fn item_key<'k>(&self, _ctx: &Self::Ctx, wire_key: &'k [u8]) -> Cow<'k, [u8]> {
        Cow::Borrowed(wire_key)
    }
}

/// What the decoder made of the front of the buffer. `Ctx` is the protocol's per-request reply
/// context (for binary: opcode, opaque, quiet, key-echo), kept by the connection for encoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decode<'a, Ctx> {
    /// One complete request occupying the first `consumed` bytes.
    Request {
        /// The request.
        command: Command<&'a [u8]>,
        /// How to answer it.
        ctx: Ctx,
        /// Bytes of the buffer this request used.
        consumed: usize,
    },
    /// The buffer holds only part of a request; read more and call again.
    Incomplete,
    /// A request refused without execution: answer `outcome` using `ctx`, discard `skip` bytes of
    /// the stream (this may be more than is buffered: keep discarding as bytes arrive), then
    /// close the connection if `close`.
    Reject {
        /// How to answer it.
        ctx: Ctx,
        /// The error to send.
        outcome: Outcome<&'a [u8]>,
        /// Bytes of the stream (header included) that belong to the refused request.
        skip: usize,
        /// Whether the connection must be closed after the reply.
        close: bool,
        /// A key whose stored item must be removed although the request is refused: memcached
        /// deletes the old item when a Set is refused as too large, so no stale value survives.
        unlink_key: Option<&'a [u8]>,
    },
    /// Garbage that cannot be answered (e.g. bad magic): close without a reply.
    Close,
}

impl<'a, Ctx> Decode<'a, Ctx> {
    /// The same decoding with its reply context converted by `f` (a codec wrapping another's).
    pub fn map_ctx<C>(self, f: impl FnOnce(Ctx) -> C) -> Decode<'a, C> {
        match self {
            Decode::Request {
                command,
                ctx,
                consumed,
            } => Decode::Request {
                command,
                ctx: f(ctx),
                consumed,
            },
            Decode::Incomplete => Decode::Incomplete,
            Decode::Reject {
                ctx,
                outcome,
                skip,
                close,
                unlink_key,
            } => Decode::Reject {
                ctx: f(ctx),
                outcome,
                skip,
                close,
                unlink_key,
            },
            Decode::Close => Decode::Close,
        }
    }
}
