//! The client side of the binary codec: request encoding and response decoding, pure like the
//! server side. Tests, our client and the integration tests speak to servers through these.

use std::fmt;

use super::{
    be32, be64, opcode, status, Kind, ReplyCtx, HEADER_LEN, NO_AUTO_CREATE, REQUEST_MAGIC,
    RESPONSE_MAGIC,
};
use crate::protocol::{ArithOp, Command, Outcome, StoreMode};

/// Which opcode variant a request uses, beyond what the [`Command`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Variant {
    /// Use the quiet opcode (GetQ, SetQ, ...).
    pub quiet: bool,
    /// Use the K opcode, whose reply carries the key (GetK, GATK and their quiet forms).
    pub echo_key: bool,
}

/// Why a request cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The command has no opcode with the requested quiet/key variant.
    NoSuchVariant,
    /// A field the binary wire cannot carry: an exptime outside `0..=u32::MAX`, flags or an
    /// exptime on Append/Prepend, or an incr/decr auto-create exptime of `0xffffffff`.
    Unrepresentable,
    /// Key longer than 65535 bytes or body longer than `u32::MAX`.
    TooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::NoSuchVariant => "no binary opcode for this command variant",
            EncodeError::Unrepresentable => "field not representable in the binary protocol",
            EncodeError::TooLong => "key or body too long for the binary protocol",
        })
    }
}

impl std::error::Error for EncodeError {}

/// The opcode that carries `command` in the given variant, if there is one.
pub fn request_opcode<B>(command: &Command<B>, variant: Variant) -> Option<u8> {
    use opcode::*;
    let Variant { quiet, echo_key } = variant;
    // [plain, quiet] for commands without a K form.
    let pick = |ops: [u8; 2]| (!echo_key).then_some(ops[usize::from(quiet)]);
    let single = |op: u8| (!quiet && !echo_key).then_some(op);
    match command {
        // Meta-protocol forms have no binary opcode.
        Command::Get { meta: Some(_), .. }
        | Command::Store { meta: Some(_), .. }
        | Command::Arith { meta: Some(_), .. } => None,
        Command::Get { touch, .. } => {
            let ops = match touch {
                None => [GET, GETQ, GETK, GETKQ],
                Some(_) => [GAT, GATQ, GATK, GATKQ],
            };
            Some(ops[usize::from(echo_key) * 2 + usize::from(quiet)])
        }
        Command::Store { mode, .. } => pick(match mode {
            StoreMode::Set | StoreMode::Cas => [SET, SETQ],
            StoreMode::Add => [ADD, ADDQ],
            StoreMode::Replace => [REPLACE, REPLACEQ],
            StoreMode::Append => [APPEND, APPENDQ],
            StoreMode::Prepend => [PREPEND, PREPENDQ],
        }),
        Command::Arith { op, .. } => pick(match op {
            ArithOp::Incr => [INCREMENT, INCREMENTQ],
            ArithOp::Decr => [DECREMENT, DECREMENTQ],
        }),
        Command::Delete { .. } => pick([DELETE, DELETEQ]),
        Command::Quit => pick([QUIT, QUITQ]),
        Command::Flush { .. } => pick([FLUSH, FLUSHQ]),
        Command::Touch { .. } => single(TOUCH),
        // Meta-only commands have no binary opcode.
        Command::Shutdown { .. }
        | Command::Inspect { .. }
        | Command::Invalidate { .. }
        | Command::Watch { .. }
        | Command::Admin(_) => None,
        Command::Noop => single(NOOP),
        Command::Version => single(VERSION),
        Command::Stats { .. } => single(STAT),
        Command::Verbosity { .. } => single(VERBOSITY),
        Command::SaslListMechs => single(SASL_LIST_MECHS),
        Command::SaslAuth { .. } => single(SASL_AUTH),
        Command::SaslStep { .. } => single(SASL_STEP),
    }
}

fn wire_exptime(exptime: i64) -> Result<u32, EncodeError> {
    u32::try_from(exptime).map_err(|_| EncodeError::Unrepresentable)
}

/// Appends one request packet with exactly these fields (lengths computed); tests use it for
/// requests of any shape, well-formed or not.
pub fn encode_packet(
    out: &mut Vec<u8>,
    opcode: u8,
    opaque: u32,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<(), EncodeError> {
    let keylen = u16::try_from(key.len()).map_err(|_| EncodeError::TooLong)?;
    let extlen = u8::try_from(extras.len()).map_err(|_| EncodeError::TooLong)?;
    let body =
        u32::try_from(extras.len() + key.len() + value.len()).map_err(|_| EncodeError::TooLong)?;
    out.reserve(HEADER_LEN + body as usize);
    out.extend_from_slice(&[REQUEST_MAGIC, opcode]);
    out.extend_from_slice(&keylen.to_be_bytes());
    // extras length, data type (raw), vbucket (unused by memcached).
    out.extend_from_slice(&[extlen, 0, 0, 0]);
    out.extend_from_slice(&body.to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    Ok(())
}

/// Appends `command` as a request in the given variant and returns the context its reply will
/// be encoded with. On error nothing is appended.
pub fn encode_request(
    out: &mut Vec<u8>,
    command: &Command<&[u8]>,
    variant: Variant,
    opaque: u32,
) -> Result<ReplyCtx, EncodeError> {
    let op = request_opcode(command, variant).ok_or(EncodeError::NoSuchVariant)?;
    let mut extras = [0u8; 20];
    let mut key: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut cas = 0;
    let extlen = match *command {
        Command::Get { meta: Some(_), .. }
        | Command::Store { meta: Some(_), .. }
        | Command::Arith { meta: Some(_), .. }
        | Command::Inspect { .. }
        | Command::Invalidate { .. }
        | Command::Shutdown { .. }
        | Command::Admin(_)
        | Command::Watch { .. } => return Err(EncodeError::NoSuchVariant),
        Command::Get { key: k, touch, .. } => {
            key = k;
            match touch {
                Some(exptime) => {
                    extras[..4].copy_from_slice(&wire_exptime(exptime)?.to_be_bytes());
                    4
                }
                None => 0,
            }
        }
        Command::Touch { key: k, exptime } => {
            key = k;
            extras[..4].copy_from_slice(&wire_exptime(exptime)?.to_be_bytes());
            4
        }
        Command::Store {
            mode,
            key: k,
            value: v,
            flags,
            exptime,
            cas: c,
            ..
        } => {
            (key, value, cas) = (k, v, c);
            match mode {
                // The binary protocol reads CAS 0 as "no compare": a compare with 0 has no form.
                StoreMode::Cas if c == 0 => return Err(EncodeError::Unrepresentable),
                StoreMode::Set | StoreMode::Add | StoreMode::Replace | StoreMode::Cas => {
                    extras[..4].copy_from_slice(&flags.to_be_bytes());
                    extras[4..8].copy_from_slice(&wire_exptime(exptime)?.to_be_bytes());
                    8
                }
                // Append/prepend keep the item's flags and exptime: the wire has no room for them.
                StoreMode::Append | StoreMode::Prepend if flags == 0 && exptime == 0 => 0,
                StoreMode::Append | StoreMode::Prepend => return Err(EncodeError::Unrepresentable),
            }
        }
        Command::Arith {
            key: k,
            delta,
            on_miss,
            cas: c,
            ..
        } => {
            (key, cas) = (k, c);
            let (initial, exptime) = match on_miss {
                Some((initial, exptime)) => match wire_exptime(exptime)? {
                    NO_AUTO_CREATE => return Err(EncodeError::Unrepresentable),
                    e => (initial, e),
                },
                None => (0, NO_AUTO_CREATE),
            };
            extras[..8].copy_from_slice(&delta.to_be_bytes());
            extras[8..16].copy_from_slice(&initial.to_be_bytes());
            extras[16..20].copy_from_slice(&exptime.to_be_bytes());
            20
        }
        Command::Delete { key: k, cas: c } => {
            (key, cas) = (k, c);
            0
        }
        Command::Flush { delay } => match wire_exptime(delay)? {
            0 => 0,
            d => {
                extras[..4].copy_from_slice(&d.to_be_bytes());
                4
            }
        },
        Command::Verbosity { level } => {
            extras[..4].copy_from_slice(&level.to_be_bytes());
            4
        }
        Command::Stats { group } => {
            key = group;
            0
        }
        Command::SaslAuth { mechanism, data } | Command::SaslStep { mechanism, data } => {
            (key, value) = (mechanism, data);
            0
        }
        Command::Noop | Command::Version | Command::Quit | Command::SaslListMechs => 0,
    };
    encode_packet(out, op, opaque, cas, &extras[..extlen], key, value)?;
    Ok(ReplyCtx::new(op, opaque))
}

/// One response packet, borrowing its body from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Opcode (the request's).
    pub opcode: u8,
    /// Data type (memcached always sends 0).
    pub datatype: u8,
    /// Status code (see [`status`](super::status)).
    pub status: u16,
    /// Opaque (the request's).
    pub opaque: u32,
    /// CAS.
    pub cas: u64,
    /// Extras.
    pub extras: &'a [u8],
    /// Key.
    pub key: &'a [u8],
    /// Value.
    pub value: &'a [u8],
}

/// What [`decode_response`] made of the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDecode<'a> {
    /// One complete packet occupying the first `consumed` bytes.
    Response {
        /// The packet.
        response: Response<'a>,
        /// Bytes it used.
        consumed: usize,
    },
    /// Only part of a packet is buffered.
    Incomplete,
    /// Not a response packet (bad magic, or key + extras longer than the body).
    Invalid,
}

/// Decodes the response packet at the front of `buf`.
pub fn decode_response(buf: &[u8]) -> ResponseDecode<'_> {
    match buf.first() {
        None => return ResponseDecode::Incomplete,
        Some(&m) if m != RESPONSE_MAGIC => return ResponseDecode::Invalid,
        Some(_) => {}
    }
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return ResponseDecode::Incomplete;
    };
    let keylen = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let extlen = usize::from(h[4]);
    let bodylen = be32(&h[8..]) as usize;
    if keylen + extlen > bodylen {
        return ResponseDecode::Invalid;
    }
    let Some(packet) = buf.get(..HEADER_LEN + bodylen) else {
        return ResponseDecode::Incomplete;
    };
    let (key_at, value_at) = (HEADER_LEN + extlen, HEADER_LEN + extlen + keylen);
    ResponseDecode::Response {
        response: Response {
            opcode: h[1],
            datatype: h[5],
            status: u16::from_be_bytes([h[6], h[7]]),
            opaque: be32(&h[12..]),
            cas: be64(&h[16..]),
            extras: &packet[HEADER_LEN..key_at],
            key: &packet[key_at..value_at],
            value: &packet[value_at..],
        },
        consumed: packet.len(),
    }
}

impl<'a> Response<'a> {
    /// Whether this is the empty packet that ends a Stat stream.
    pub fn is_stats_end(&self) -> bool {
        self.opcode == opcode::STAT
            && self.status == status::NO_ERROR
            && self.key.is_empty()
            && self.value.is_empty()
    }

    /// The outcome this packet reports, read as memcached means it. `None` for a successful Stat
    /// packet (a stream: read `key`/`value` until [`is_stats_end`](Self::is_stats_end)), for an
    /// unknown opcode or status, and for a success missing its extras.
    pub fn outcome(&self) -> Option<Outcome<&'a [u8]>> {
        let kind = Kind::of(self.opcode);
        Some(match self.status {
            status::NO_ERROR => {
                let flags = || Some(be32(self.extras.get(..4)?));
                match kind? {
                    Kind::Get | Kind::GetTouch => Outcome::Value {
                        flags: flags()?,
                        cas: self.cas,
                        value: self.value,
                    },
                    Kind::Touch => Outcome::Touched {
                        flags: flags()?,
                        cas: self.cas,
                    },
                    Kind::Store(_) => Outcome::Stored { cas: self.cas },
                    Kind::Delete => Outcome::Deleted,
                    Kind::Arith(_) => Outcome::Counter {
                        value: be64(self.value.get(..8)?),
                        cas: self.cas,
                    },
                    Kind::Quit | Kind::Flush | Kind::Noop => Outcome::Done,
                    Kind::Version => Outcome::Version(self.value),
                    Kind::Stat => return None,
                    Kind::SaslListMechs => Outcome::SaslMechs(self.value),
                    Kind::SaslAuth | Kind::SaslStep => Outcome::Authenticated,
                }
            }
            status::KEY_ENOENT if kind == Some(Kind::Stat) => Outcome::UnknownStatsGroup,
            status::KEY_ENOENT => Outcome::NotFound,
            status::KEY_EEXISTS => Outcome::Exists,
            status::E2BIG => Outcome::TooLarge,
            status::EINVAL => Outcome::InvalidArguments,
            status::NOT_STORED => Outcome::NotStored,
            status::DELTA_BADVAL => Outcome::NonNumeric,
            status::AUTH_ERROR => Outcome::AuthError,
            status::AUTH_CONTINUE => Outcome::AuthContinue(self.value),
            status::UNKNOWN_COMMAND => Outcome::UnknownCommand,
            status::ENOMEM => Outcome::OutOfMemory,
            _ => return None,
        })
    }
}
