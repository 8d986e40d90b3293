//! memcached's meta commands (`mg ms md ma mn me`) on a text connection, replying as memcached
//! 1.6.18 does: `<code> <flags>*`, return flags echoed in request order, `q` hiding the
//! uninteresting reply, `O` opaque and `k` key for pipelining, `b` base64 keys.
//!
//! Stampede protection as in memcached: `mg N` vivifies a miss into an empty placeholder and
//! `mg R` wins a recompute when the TTL is short; `md I` / `ms I` mark items stale; a hit then
//! carries `Z` (a win token was handed out before), `X` (stale) and `W` (this client won), in
//! that order after the return flags. `E` (explicit CAS, newer than 1.6.18, which refuses it)
//! follows memcached's later documentation.

use super::ascii::{
    self, data_block, parse_i32, parse_u32, parse_u64, tokens, DataBlock, BAD_CHUNK, BAD_FORMAT,
    OUT_OF_MEMORY, TOO_LARGE,
};
use super::{ArithMeta, ArithOp, Command, Decode, GetMeta, Limits, Outcome, StoreMeta, StoreMode};

/// Longest opaque token memcached accepts.
pub const MAX_OPAQUE: usize = 32;
/// Most return flags one request can ask for (each flag at most once).
const MAX_RET: usize = 16;

/// Which meta command a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCmd {
    /// mg.
    Get {
        /// `v`: send the value (`VA`), else `HD`.
        value: bool,
    },
    /// ms; `compare` = a `C` CAS was given (EX / NF are then reported as such).
    Set {
        /// `C` given.
        compare: bool,
    },
    /// md.
    Delete,
    /// ma; `value` = `v` given.
    Arith {
        /// `v`: send the number (`VA`), else `HD`.
        value: bool,
    },
    /// mn.
    Noop,
    /// me.
    Debug,
    /// A refused line: answered with this exact error line, whatever the flags asked.
    Refused(&'static str),
}

/// How to answer one meta request: the command, its return flags in request order, opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaCtx {
    /// The command.
    pub cmd: MetaCmd,
    ret: [u8; MAX_RET],
    nret: u8,
    opaque: [u8; MAX_OPAQUE],
    olen: u8,
    /// `q`: hide the uninteresting reply.
    pub quiet: bool,
    /// `b`: the key is base64 (echoed as sent, followed by ` b`).
    pub base64: bool,
    /// `t` came after `T`: report the TTL the touch set (memcached handles flags in order).
    ttl_after_touch: bool,
}

impl MetaCtx {
    fn new(cmd: MetaCmd) -> MetaCtx {
        MetaCtx {
            cmd,
            ret: [0; MAX_RET],
            nret: 0,
            opaque: [0; MAX_OPAQUE],
            olen: 0,
            quiet: false,
            base64: false,
            ttl_after_touch: false,
        }
    }

    fn ret_flags(&self) -> &[u8] {
        &self.ret[..usize::from(self.nret)]
    }

    fn opaque(&self) -> &[u8] {
        &self.opaque[..usize::from(self.olen)]
    }
}

/// Standard base64 (with padding) decoded, as memcached's `b` flag expects; `None` if invalid.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.len() / 4;
    for (i, q) in text.chunks(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// A meta line refused with `msg`: skip `skip` bytes, keep the connection.
fn refuse<'a>(msg: &'static str, skip: usize) -> Decode<'a, MetaCtx> {
    Decode::Reject {
        ctx: MetaCtx::new(MetaCmd::Refused(msg)),
        outcome: Outcome::InvalidArguments,
        skip,
        close: false,
        unlink_key: None,
    }
}

/// The flags of one meta request after parsing.
#[derive(Default)]
struct Flags {
    cas: u64,
    /// A `C` flag was given (`C0` included: a compare that can only fail).
    cas_given: bool,
    /// `u`: no fetched mark, no LRU bump.
    no_update: bool,
    flags: u32,
    ttl: Option<i64>,
    delta: Option<u64>,
    initial: u64,
    vivify: Option<i64>,
    recache: Option<i64>,
    invalidate: bool,
    new_cas: u64,
    mode: Option<u8>,
    value: bool,
}

const BAD_TOKEN: &str = "CLIENT_ERROR bad token in command line format";
const INVALID_FLAG: &str = "CLIENT_ERROR invalid flag";
const DUPLICATE: &str = "CLIENT_ERROR duplicate flag";
const INVALID_OR_DUP: &str = "CLIENT_ERROR invalid or duplicate flag";
const OPAQUE_TOO_LONG: &str = "CLIENT_ERROR opaque token too long";
const BAD_KEY: &str = "CLIENT_ERROR error decoding key";

/// Which flags each command accepts, and which of them appear in its reply.
fn accepts(cmd: &[u8], f: u8) -> bool {
    let ok: &[u8] = match cmd {
        // C: memcached 1.6.18 parses it on mg (bad token, duplicate) and then ignores it.
        b"mg" => b"bcCfhklOqstuvNRTPLE",
        b"ms" => b"bcCFIkOqTMPLNstfvE",
        b"md" => b"bcCIkOqTPLvE",
        b"ma" => b"bCNJDTMOqtcvkPLE",
        _ => b"",
    };
    // E (explicit CAS) arrived after memcached 1.6.18, which refuses it; issue 7 wants it.
    ok.contains(&f)
}

fn returned(cmd: &[u8], f: u8) -> bool {
    let ret: &[u8] = match cmd {
        b"mg" => b"cfhklOst",
        b"ms" | b"md" => b"ckO",
        b"ma" => b"ctkO",
        _ => b"",
    };
    ret.contains(&f)
}

/// Parses the flag tokens of a meta request into `ctx` and the returned [`Flags`]; the error
/// text on failure.
fn parse_flags<'t>(
    cmd: &[u8],
    words: impl Iterator<Item = &'t [u8]>,
    ctx: &mut MetaCtx,
) -> Result<Flags, &'static str> {
    let old_style = matches!(cmd, b"md" | b"ma");
    let dup = if old_style { INVALID_OR_DUP } else { DUPLICATE };
    let bad_token = if old_style { INVALID_OR_DUP } else { BAD_TOKEN };
    let mut seen = [false; 128];
    let mut f = Flags::default();
    for w in words {
        let c = w[0];
        let arg = &w[1..];
        if !c.is_ascii() || !accepts(cmd, c) {
            return Err(if old_style {
                INVALID_OR_DUP
            } else {
                INVALID_FLAG
            });
        }
        if std::mem::replace(&mut seen[usize::from(c)], true) {
            return Err(dup);
        }
        let num_i = || parse_i32(arg).map(i64::from).ok_or(bad_token);
        let num_u = || parse_u64(arg).ok_or(bad_token);
        match c {
            b'q' => ctx.quiet = true,
            b'b' => ctx.base64 = true,
            b'v' => f.value = true,
            b't' if seen[usize::from(b'T')] => ctx.ttl_after_touch = true,
            b'u' => f.no_update = true,
            b'O' => {
                if arg.len() > MAX_OPAQUE {
                    return Err(OPAQUE_TOO_LONG);
                }
                ctx.opaque[..arg.len()].copy_from_slice(arg);
                ctx.olen = arg.len() as u8;
            }
            b'T' => f.ttl = Some(num_i()?),
            b'N' => f.vivify = Some(num_i()?),
            b'R' => f.recache = Some(num_i()?),
            b'I' => f.invalidate = true,
            // 0 is "no CAS" everywhere, so it cannot be an explicit one.
            b'E' => f.new_cas = num_u().ok().filter(|&c| c != 0).ok_or(bad_token)?,
            b'C' => {
                f.cas = num_u()?;
                f.cas_given = true;
            }
            b'D' => f.delta = Some(num_u()?),
            b'J' => f.initial = num_u()?,
            b'F' => {
                f.flags = parse_u32(arg).ok_or(BAD_FORMAT)?;
            }
            b'M' => f.mode = Some(arg.first().copied().unwrap_or(0)),
            _ => {}
        }
        if c == b'O' || returned(cmd, c) {
            ctx.ret[usize::from(ctx.nret)] = c;
            ctx.nret += 1;
        }
    }
    Ok(f)
}

/// Decodes the meta command whose line (without `\r\n`) is `content`, `line_len` bytes with its
/// end; `buf` starts with the line (ms reads its data block after it).
pub(crate) fn decode<'a>(
    buf: &'a [u8],
    content: &'a [u8],
    line_len: usize,
    limits: &Limits,
) -> Decode<'a, MetaCtx> {
    let mut words = tokens(content);
    let cmd = words.next().unwrap_or_default();
    if cmd == b"mn" {
        return Decode::Request {
            command: Command::Noop,
            ctx: MetaCtx::new(MetaCmd::Noop),
            consumed: line_len,
        };
    }
    if !matches!(cmd, b"mg" | b"ms" | b"md" | b"ma" | b"me") {
        return refuse(ascii::ERROR, line_len);
    }
    let Some(key) = words.next() else {
        return refuse(
            if cmd == b"me" {
                BAD_FORMAT
            } else {
                ascii::ERROR
            },
            line_len,
        );
    };
    if key.len() > limits.max_key_len {
        return refuse(BAD_FORMAT, line_len);
    }
    if cmd == b"me" {
        return Decode::Request {
            command: Command::Inspect { key },
            ctx: MetaCtx::new(MetaCmd::Debug),
            consumed: line_len,
        };
    }
    // ms: the data length comes before the flags; its block follows the line.
    let (value, consumed) = if cmd == b"ms" {
        let Some(vlen) = words.next().and_then(parse_i32) else {
            return refuse(BAD_FORMAT, line_len);
        };
        let Ok(vlen) = usize::try_from(vlen) else {
            return refuse(BAD_FORMAT, line_len);
        };
        match data_block(buf, line_len, vlen, limits) {
            DataBlock::Incomplete => return Decode::Incomplete,
            DataBlock::Ready(v, used) => (v, used),
            // From here on an error swallows the data block, as memcached does.
            DataBlock::BadChunk(skip) => return refuse(BAD_CHUNK, skip),
            DataBlock::TooLarge(skip) => return refuse(TOO_LARGE, skip),
            DataBlock::NoRoom(skip) => return refuse(OUT_OF_MEMORY, skip),
        }
    } else {
        (&[][..], line_len)
    };
    let mut ctx = MetaCtx::new(MetaCmd::Noop);
    let f = match parse_flags(cmd, words, &mut ctx) {
        Ok(f) => f,
        Err(msg) => return refuse(msg, consumed),
    };
    if ctx.base64 && base64_decode(key).is_none() {
        return refuse(BAD_KEY, consumed);
    }
    let command = match cmd {
        b"mg" => {
            ctx.cmd = MetaCmd::Get { value: f.value };
            Command::Get {
                key,
                touch: f.ttl,
                meta: Some(GetMeta {
                    value: f.value,
                    vivify: f.vivify,
                    recache: f.recache,
                    new_cas: f.new_cas,
                    no_update: f.no_update,
                }),
            }
        }
        b"ms" => {
            let mode = match f.mode {
                // A set with C compares, as memcached's NREAD_CAS, even with C0.
                None | Some(b'S') if f.cas_given => StoreMode::Cas,
                None | Some(b'S') => StoreMode::Set,
                Some(b'E') => StoreMode::Add,
                Some(b'R') => StoreMode::Replace,
                Some(b'A') => StoreMode::Append,
                Some(b'P') => StoreMode::Prepend,
                Some(_) => return refuse("CLIENT_ERROR invalid mode for ms M token", consumed),
            };
            ctx.cmd = MetaCmd::Set {
                compare: f.cas_given,
            };
            Command::Store {
                mode,
                key,
                value,
                flags: f.flags,
                exptime: f.ttl.unwrap_or(0),
                cas: f.cas,
                meta: (f.invalidate || f.new_cas != 0).then_some(StoreMeta {
                    invalidate: f.invalidate,
                    new_cas: f.new_cas,
                }),
            }
        }
        b"md" => {
            ctx.cmd = MetaCmd::Delete;
            if f.invalidate {
                Command::Invalidate {
                    key,
                    cas: f.cas,
                    exptime: f.ttl,
                    new_cas: f.new_cas,
                }
            } else {
                // memcached only applies T (and an explicit CAS) when the item is kept.
                Command::Delete { key, cas: f.cas }
            }
        }
        _ => {
            let op = match f.mode {
                None | Some(b'I' | b'i' | b'+') => ArithOp::Incr,
                Some(b'D' | b'd' | b'-') => ArithOp::Decr,
                Some(_) => return refuse("CLIENT_ERROR invalid mode for ma M token", consumed),
            };
            ctx.cmd = MetaCmd::Arith { value: f.value };
            Command::Arith {
                op,
                key,
                delta: f.delta.unwrap_or(1),
                on_miss: f.vivify.map(|ttl| (f.initial, ttl)),
                cas: f.cas,
                meta: Some(ArithMeta {
                    touch: f.ttl,
                    new_cas: f.new_cas,
                }),
            }
        }
    };
    Decode::Request {
        command,
        ctx,
        consumed,
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

/// Appends the return flags of a hit; `pick` filters which flags are shown.
fn put_flags(
    out: &mut Vec<u8>,
    ctx: &MetaCtx,
    key: &[u8],
    pick: impl Fn(u8) -> bool,
    mut value_of: impl FnMut(u8, &mut Vec<u8>),
) {
    for &f in ctx.ret_flags() {
        if !pick(f) {
            continue;
        }
        out.push(b' ');
        out.push(f);
        match f {
            b'k' => {
                put(out, key);
                if ctx.base64 {
                    put(out, b" b");
                }
            }
            b'O' => put(out, ctx.opaque()),
            _ => value_of(f, out),
        }
    }
}

/// A code followed by only the `k` and `O` flags (misses and failures).
fn put_code(out: &mut Vec<u8>, code: &[u8], ctx: &MetaCtx, key: &[u8]) {
    put(out, code);
    put_flags(out, ctx, key, |f| f == b'k' || f == b'O', |_, _| {});
    put(out, b"\r\n");
}

/// A failed ms: memcached 1.6.18 also echoes `c` there, as `c0`.
fn put_set_failure(out: &mut Vec<u8>, code: &[u8], ctx: &MetaCtx, key: &[u8]) {
    put(out, code);
    put_flags(
        out,
        ctx,
        key,
        |f| matches!(f, b'k' | b'O' | b'c'),
        |_, out| put(out, b"0"),
    );
    put(out, b"\r\n");
}

fn put_num(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    put(out, n.to_string().as_bytes());
}

/// Appends the reply to a meta request.
pub(crate) fn encode(out: &mut Vec<u8>, ctx: &MetaCtx, key: &[u8], outcome: &Outcome<&[u8]>) {
    let error = |out: &mut Vec<u8>, text: &str| {
        put(out, text.as_bytes());
        put(out, b"\r\n");
    };
    match (ctx.cmd, outcome) {
        (MetaCmd::Refused(msg), _) => error(out, msg),
        (MetaCmd::Noop, _) => put(out, b"MN\r\n"),
        (
            MetaCmd::Get { value: with_value },
            Outcome::Item {
                flags,
                cas,
                value,
                meta,
            },
        ) => {
            if with_value {
                put(out, b"VA ");
                put_num(out, value.len());
            } else {
                put(out, b"HD");
            }
            put_flags(
                out,
                ctx,
                key,
                |_| true,
                |f, out| match f {
                    b'f' => put_num(out, flags),
                    b'c' => put_num(out, cas),
                    b't' if ctx.ttl_after_touch => put_num(out, meta.ttl_after),
                    b't' => put_num(out, meta.ttl),
                    b's' => put_num(out, meta.value_len),
                    b'h' => put_num(out, u8::from(meta.fetched)),
                    b'l' => put_num(out, meta.idle),
                    _ => {}
                },
            );
            // memcached's order: Z (token handed out before), X (stale), W (won now).
            if meta.token_sent && !meta.won {
                put(out, b" Z");
            }
            if meta.stale {
                put(out, b" X");
            }
            if meta.won {
                put(out, b" W");
            }
            put(out, b"\r\n");
            if with_value {
                put(out, value);
                put(out, b"\r\n");
            }
        }
        (MetaCmd::Get { .. }, Outcome::NotFound) => {
            if !ctx.quiet {
                put_code(out, b"EN", ctx, key);
            }
        }
        (MetaCmd::Set { .. }, Outcome::Stored { cas }) => {
            if !ctx.quiet {
                put(out, b"HD");
                put_flags(out, ctx, key, |_| true, |_, out| put_num(out, cas));
                put(out, b"\r\n");
            }
        }
        (MetaCmd::Set { compare: true }, Outcome::Exists) => put_set_failure(out, b"EX", ctx, key),
        (MetaCmd::Set { compare: true }, Outcome::NotFound) => {
            put_set_failure(out, b"NF", ctx, key)
        }
        (MetaCmd::Set { .. }, Outcome::Exists | Outcome::NotFound | Outcome::NotStored) => {
            put_set_failure(out, b"NS", ctx, key)
        }
        (MetaCmd::Delete, Outcome::Deleted) => {
            if !ctx.quiet {
                put_code(out, b"HD", ctx, key);
            }
        }
        (MetaCmd::Delete | MetaCmd::Arith { .. }, Outcome::NotFound) => {
            put_code(out, b"NF", ctx, key)
        }
        (MetaCmd::Delete | MetaCmd::Arith { .. }, Outcome::Exists) => {
            put_code(out, b"EX", ctx, key)
        }
        (MetaCmd::Arith { value: with_value }, Outcome::MetaCounter { value, cas, ttl }) => {
            let digits = value.to_string();
            if ctx.quiet {
                // memcached hides a successful ma under q, value included.
                return;
            }
            if with_value {
                put(out, b"VA ");
                put_num(out, digits.len());
            } else {
                put(out, b"HD");
            }
            put_flags(
                out,
                ctx,
                key,
                |_| true,
                |f, out| match f {
                    b't' => put_num(out, ttl),
                    _ => put_num(out, cas),
                },
            );
            put(out, b"\r\n");
            if with_value {
                put(out, digits.as_bytes());
                put(out, b"\r\n");
            }
        }
        (MetaCmd::Arith { .. }, Outcome::NotStored) => put_code(out, b"NS", ctx, key),
        (MetaCmd::Debug, Outcome::Info(m)) => {
            put(out, b"ME ");
            put(out, key);
            let fetch = if m.fetched { "yes" } else { "no" };
            put(
                out,
                format!(
                    " exp={} la={} cas={} fetch={fetch} cls={} size={}\r\n",
                    m.ttl, m.idle, m.cas, m.class, m.size
                )
                .as_bytes(),
            );
        }
        (MetaCmd::Debug, Outcome::NotFound) => put(out, b"EN\r\n"),
        (_, Outcome::TooLarge) => error(out, TOO_LARGE),
        (_, Outcome::OutOfMemory) => error(out, OUT_OF_MEMORY),
        (_, Outcome::Unavailable) => error(out, super::ascii::UNAVAILABLE),
        (_, Outcome::NonNumeric) => error(out, ascii::NON_NUMERIC),
        (_, _) => error(out, BAD_FORMAT),
    }
}
