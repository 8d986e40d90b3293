//! The wire seam: a [`WireCodec`] writes get/set requests into a reused output buffer and reads
//! replies from the front of the read buffer. The binary protocol uses the crate's own client
//! codec; a text codec can be added beside it without touching the connection loop.

use corecached::protocol::binary::{self, opcode, status, ResponseDecode, Variant};
use corecached::protocol::{Command, StoreMode};

/// Which request a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A get.
    Get,
    /// A set.
    Set,
}

/// One reply, borrowing any value from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A get found this value.
    Value(&'a [u8]),
    /// A get found nothing.
    NotFound,
    /// A set was stored.
    Stored,
    /// Any other status (the protocol's code).
    Error(u16),
}

/// What the front of the read buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// One complete reply of `consumed` bytes, to the request of this kind and opaque (when the
    /// protocol carries them).
    Reply {
        /// Reply.
        reply: Reply<'a>,
        /// Request kind it answers, if the wire says.
        op: Option<Op>,
        /// Opaque echoed, if the wire has one.
        opaque: Option<u32>,
        /// Bytes used.
        consumed: usize,
    },
    /// Need more bytes.
    Incomplete,
    /// Not a valid reply.
    Invalid,
}

/// Writes requests and reads replies of one wire protocol. Implementations keep no per-request
/// heap state: requests are appended to the caller's buffer.
pub trait WireCodec {
    /// Appends a get of `key`.
    fn write_get(&mut self, out: &mut Vec<u8>, key: &[u8], opaque: u32);
    /// Appends a set of `key` to `value` (flags 0, no expiry).
    fn write_set(&mut self, out: &mut Vec<u8>, key: &[u8], value: &[u8], opaque: u32);
    /// Reads the reply at the front of `buf`.
    fn parse<'a>(&mut self, buf: &'a [u8]) -> Parsed<'a>;
}

/// memcached binary protocol through `corecached::protocol::binary`'s client codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binary;

impl WireCodec for Binary {
    #[inline]
    fn write_get(&mut self, out: &mut Vec<u8>, key: &[u8], opaque: u32) {
        let cmd = Command::Get { key, touch: None };
        binary::encode_request(out, &cmd, Variant::default(), opaque)
            .expect("key length validated");
    }

    #[inline]
    fn write_set(&mut self, out: &mut Vec<u8>, key: &[u8], value: &[u8], opaque: u32) {
        let cmd = Command::Store {
            mode: StoreMode::Set,
            key,
            value,
            flags: 0,
            exptime: 0,
            cas: 0,
        };
        binary::encode_request(out, &cmd, Variant::default(), opaque).expect("sizes validated");
    }

    #[inline]
    fn parse<'a>(&mut self, buf: &'a [u8]) -> Parsed<'a> {
        match binary::decode_response(buf) {
            ResponseDecode::Incomplete => Parsed::Incomplete,
            ResponseDecode::Invalid => Parsed::Invalid,
            ResponseDecode::Response {
                response: r,
                consumed,
            } => {
                let op = match r.opcode {
                    opcode::GET => Some(Op::Get),
                    opcode::SET => Some(Op::Set),
                    _ => None,
                };
                let reply = match (op, r.status) {
                    (Some(Op::Get), status::NO_ERROR) => Reply::Value(r.value),
                    (Some(Op::Get), status::KEY_ENOENT) => Reply::NotFound,
                    (Some(Op::Set), status::NO_ERROR) => Reply::Stored,
                    (_, s) => Reply::Error(s),
                };
                Parsed::Reply {
                    reply,
                    op,
                    opaque: Some(r.opaque),
                    consumed,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecached::protocol::binary::{encode_response, ReplyCtx};
    use corecached::protocol::Outcome;

    #[test]
    fn binary_requests_decode_on_the_server_side_and_replies_parse() {
        let mut c = Binary;
        let mut out = Vec::new();
        c.write_get(&mut out, b"k1", 7);
        c.write_set(&mut out, b"k2", b"value", 8);
        assert_eq!(out[0], 0x80);
        assert_eq!(out[1], opcode::GET);
        assert_eq!(out[24 + 2], 0x80);
        assert_eq!(out[24 + 2 + 1], opcode::SET);

        let mut replies = Vec::new();
        let outcomes: [(u8, u32, Outcome<&[u8]>); 4] = [
            (
                opcode::GET,
                7,
                Outcome::Value {
                    flags: 0,
                    cas: 1,
                    value: b"abc",
                },
            ),
            (opcode::GET, 9, Outcome::NotFound),
            (opcode::SET, 8, Outcome::Stored { cas: 2 }),
            (opcode::SET, 10, Outcome::OutOfMemory),
        ];
        for (op, opaque, o) in &outcomes {
            encode_response(&mut replies, &ReplyCtx::new(*op, *opaque), b"", o);
        }
        let mut at = 0;
        let mut got = Vec::new();
        while at < replies.len() {
            // A partial reply is incomplete, never misread.
            assert_eq!(c.parse(&replies[at..at + 10]), Parsed::Incomplete);
            match c.parse(&replies[at..]) {
                Parsed::Reply {
                    reply,
                    op,
                    opaque,
                    consumed,
                } => {
                    got.push((reply, op, opaque));
                    at += consumed;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            got,
            [
                (Reply::Value(b"abc"), Some(Op::Get), Some(7)),
                (Reply::NotFound, Some(Op::Get), Some(9)),
                (Reply::Stored, Some(Op::Set), Some(8)),
                (Reply::Error(status::ENOMEM), Some(Op::Set), Some(10)),
            ]
        );
        assert_eq!(c.parse(b"\x80garbage................."), Parsed::Invalid);
    }
}
