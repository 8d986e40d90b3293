//! The wire seam: a [`WireCodec`] writes get/set requests into a reused output buffer and reads
//! replies from the front of the read buffer. The binary protocol uses the crate's own client
//! codec; the ASCII text protocol is written and parsed here (replies come back in request order,
//! without an opaque).

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
        let cmd = Command::Get {
            key,
            touch: None,
            meta: None,
        };
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
            meta: None,
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

/// Longest reply line accepted before the reply is called invalid (memcached's own line limit).
const TEXT_LINE_MAX: usize = 2048;

/// memcached ASCII text protocol: `get`/`set` lines; replies `VALUE … END`, `END`, `STORED`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

impl WireCodec for Text {
    #[inline]
    fn write_get(&mut self, out: &mut Vec<u8>, key: &[u8], _opaque: u32) {
        out.extend_from_slice(b"get ");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\r\n");
    }

    #[inline]
    fn write_set(&mut self, out: &mut Vec<u8>, key: &[u8], value: &[u8], _opaque: u32) {
        out.extend_from_slice(b"set ");
        out.extend_from_slice(key);
        out.extend_from_slice(b" 0 0 ");
        out.extend_from_slice(itoa_buf(value.len()).as_slice());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }

    fn parse<'a>(&mut self, buf: &'a [u8]) -> Parsed<'a> {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            return if buf.len() > TEXT_LINE_MAX {
                Parsed::Invalid
            } else {
                Parsed::Incomplete
            };
        };
        let Some(line) = buf[..nl].strip_suffix(b"\r") else {
            return Parsed::Invalid;
        };
        let head = nl + 1;
        let done = |reply, consumed| Parsed::Reply {
            reply,
            op: None,
            opaque: None,
            consumed,
        };
        match line {
            b"END" => return done(Reply::NotFound, head),
            b"STORED" => return done(Reply::Stored, head),
            _ => {}
        }
        let Some(rest) = line.strip_prefix(b"VALUE ") else {
            // ERROR, CLIENT_ERROR …, SERVER_ERROR …, NOT_STORED: text has no status codes.
            return done(Reply::Error(0), head);
        };
        // VALUE <key> <flags> <bytes> [<cas>]
        let Some(len) = rest
            .split(|&b| b == b' ')
            .nth(2)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<usize>().ok())
        else {
            return Parsed::Invalid;
        };
        let end = head + len;
        if buf.len() < end + 7 {
            return Parsed::Incomplete;
        }
        if &buf[end..end + 7] != b"\r\nEND\r\n" {
            return Parsed::Invalid;
        }
        done(Reply::Value(&buf[head..end]), end + 7)
    }
}

/// Decimal digits of `n` without allocating.
fn itoa_buf(n: usize) -> DigitBuf {
    let mut d = DigitBuf {
        bytes: [0; 20],
        start: 20,
    };
    let mut n = n;
    loop {
        d.start -= 1;
        d.bytes[d.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return d;
        }
    }
}

/// A number's decimal digits, right-aligned in a fixed buffer.
struct DigitBuf {
    bytes: [u8; 20],
    start: usize,
}

impl DigitBuf {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
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

    #[test]
    fn text_requests_are_memcached_lines() {
        let mut out = Vec::new();
        Text.write_get(&mut out, b"k1", 7);
        Text.write_set(&mut out, b"k2", b"hello", 8);
        Text.write_set(&mut out, b"k3", b"", 9);
        assert_eq!(
            out,
            b"get k1\r\nset k2 0 0 5\r\nhello\r\nset k3 0 0 0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn text_replies_parse_whole_and_in_pieces() {
        let stream = b"VALUE k 0 5\r\nhello\r\nEND\r\nEND\r\nSTORED\r\nSERVER_ERROR out of memory\r\nVALUE k 3 0 42\r\n\r\nEND\r\n";
        let expect = [
            (Reply::Value(b"hello"), 25),
            (Reply::NotFound, 5),
            (Reply::Stored, 8),
            (Reply::Error(0), 28),
            (Reply::Value(b""), 23),
        ];
        let mut pos = 0;
        for (want, len) in expect {
            // Every shorter prefix of the reply is incomplete, the whole reply parses.
            for cut in 1..len {
                assert_eq!(
                    Text.parse(&stream[pos..pos + cut]),
                    Parsed::Incomplete,
                    "{cut}"
                );
            }
            match Text.parse(&stream[pos..]) {
                Parsed::Reply {
                    reply,
                    op,
                    opaque,
                    consumed,
                } => {
                    assert_eq!((reply, op, opaque, consumed), (want, None, None, len));
                }
                other => panic!("{other:?}"),
            }
            pos += len;
        }
        assert_eq!(pos, stream.len());
    }

    #[test]
    fn malformed_text_replies_are_invalid() {
        assert_eq!(Text.parse(b"VALUE k 0 x\r\n"), Parsed::Invalid);
        assert_eq!(Text.parse(b"VALUE k 0 2\r\nabXXEND\r\n"), Parsed::Invalid);
        assert_eq!(Text.parse(b"STORED\n"), Parsed::Invalid);
        assert_eq!(Text.parse(&[b'x'; 3000]), Parsed::Invalid);
    }
}
