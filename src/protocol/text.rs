//! memcached's ASCII protocol (classic text commands; the meta commands are parsed by
//! [`super::meta`]), replying byte for byte as memcached 1.6.18 does.
//!
//! A request is one line ending in `\n` (a `\r` before it is dropped), split on spaces; storage
//! commands are followed by a data block of the announced length plus `\r\n`. A multi-key
//! `get a b c` is decoded into one [`Command::Get`] per key, so keys route to their shards like
//! any other request; the last key's reply context carries the closing `END`.
//!
//! Line framing, number parsing, data blocks and the shared error lines live in
//! [`super::ascii`].

use std::borrow::Cow;

use super::ascii::{
    data_block, line, parse_f64, parse_i32, parse_u32, parse_u64, tokens, DataBlock,
};
use super::meta::{self, MetaCtx};
use super::watch::uri_encode;
use super::{
    Admin, AdminStatus, ArithOp, ClassSet, Codec, Command, Decode, DumpedItem, Limits, Outcome,
    StoreMode,
};

/// memcached closes a connection that sends this many bytes without a `\n`, unless the line is a
/// `get`/`gets` (a big multiget).
pub const MAX_LINE: usize = 2048;

// The error lines shared with the meta commands, still reachable from here.
pub use super::ascii::{BAD_CHUNK, BAD_FORMAT, ERROR, NON_NUMERIC, OUT_OF_MEMORY, TOO_LARGE};

/// Bad exptime in touch / gat / flush_all.
pub const BAD_EXPTIME: &str = "CLIENT_ERROR invalid exptime argument";
/// Bad delta in incr / decr.
pub const BAD_DELTA: &str = "CLIENT_ERROR invalid numeric delta argument";
/// Wrong arguments to delete.
pub const BAD_DELETE: &str = "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
/// memcached's answer when it cannot allocate the reply to a get.
pub const GET_OUT_OF_MEMORY: &str = "SERVER_ERROR out of memory writing get response";

/// Which reply a classic text command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One key of a get/gets/gat/gats; `end` on the last key adds `END`.
    Get {
        /// gets/gats: VALUE lines carry the CAS.
        cas: bool,
        /// Last key of the line.
        end: bool,
    },
    /// set/add/replace/append/prepend, or cas (`cas` true: EXISTS / NOT_FOUND are reported).
    Store {
        /// The `cas` command.
        cas: bool,
    },
    /// delete.
    Delete,
    /// incr/decr.
    Arith,
    /// touch.
    Touch,
    /// flush_all, verbosity: `OK`.
    Ok,
    /// version.
    Version,
    /// stats; `reset` answers `RESET`.
    Stats {
        /// `stats reset`.
        reset: bool,
        /// `stats detail on|off|dump`: `OK`, or the dump's text as is.
        detail: bool,
    },
    /// quit: no reply, the connection closes.
    Quit,
    /// shutdown: no reply when it stops the server; memcached's errors when it does not.
    Shutdown,
    /// An operator command (`stats cachedump`, `lru_crawler`, `cache_memlimit`, `slabs`).
    Admin,
    /// A refused line: this exact error text.
    Error(&'static str),
}

/// How to answer one request of a text-protocol connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyCtx {
    /// A classic text command.
    Text {
        /// Which reply.
        kind: Kind,
        /// `noreply` given: nothing is sent, errors included (as memcached does).
        noreply: bool,
    },
    /// A meta command.
    Meta(MetaCtx),
}

impl ReplyCtx {
    fn text(kind: Kind, noreply: bool) -> ReplyCtx {
        ReplyCtx::Text { kind, noreply }
    }
}

/// The rest of a multi-key get line being handed out one key per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MultiGet {
    cas: bool,
    touch: Option<i64>,
    /// Bytes up to and including the line's `\n`, from the current buffer start.
    left: usize,
}

/// The text + meta protocol as a [`Codec`]. Holds the position inside a multi-key get.
#[derive(Debug, Default)]
pub struct TextCodec {
    multi: Option<MultiGet>,
}

/// A line refused with `msg`; its `len` bytes are skipped and the connection kept.
fn refuse<'a>(msg: &'static str, noreply: bool, len: usize) -> Decode<'a, ReplyCtx> {
    Decode::Reject {
        ctx: ReplyCtx::text(Kind::Error(msg), noreply),
        outcome: Outcome::InvalidArguments,
        skip: len,
        close: false,
        unlink_key: None,
    }
}

fn request<'a>(command: Command<&'a [u8]>, ctx: ReplyCtx, consumed: usize) -> Decode<'a, ReplyCtx> {
    Decode::Request {
        command,
        ctx,
        consumed,
    }
}

/// Whether memcached would keep reading a long line without `\n`: a `get`/`gets` after at most
/// 100 spaces.
fn looks_like_multiget(buf: &[u8]) -> bool {
    let spaces = buf.iter().take_while(|&&b| b == b' ').count();
    let rest = &buf[spaces..];
    spaces <= 100 && (rest.starts_with(b"get ") || rest.starts_with(b"gets "))
}

fn admin<'a>(command: Admin, noreply: bool, line_len: usize) -> Decode<'a, ReplyCtx> {
    request(
        Command::Admin(command),
        ReplyCtx::text(Kind::Admin, noreply),
        line_len,
    )
}

/// `stats cachedump <class> <limit>` (`args` from `cachedump` on; extra words are ignored).
fn decode_cachedump<'a>(args: &[&[u8]], line_len: usize) -> Decode<'a, ReplyCtx> {
    if args.len() < 3 {
        return refuse("CLIENT_ERROR bad command line", false, line_len);
    }
    let (Some(class), Some(limit)) = (parse_u32(args[1]), parse_u32(args[2])) else {
        return refuse(BAD_FORMAT, false, line_len);
    };
    if class >= 64 {
        return refuse("CLIENT_ERROR Illegal slab id", false, line_len);
    }
    admin(Admin::CacheDump { class, limit }, false, line_len)
}

/// A crawler's class list: `all`, `hash`, or class numbers 1..=63 separated by commas (empty
/// items skipped, as `strtok` does).
fn class_set(word: &[u8]) -> ClassSet {
    match word {
        b"all" => ClassSet::All,
        b"hash" => ClassSet::Hash,
        _ => {
            let mut mask = 0u64;
            for part in word.split(|&b| b == b',').filter(|p| !p.is_empty()) {
                match parse_u32(part) {
                    Some(c) if (1..64).contains(&c) => mask |= 1 << c,
                    _ => return ClassSet::Invalid,
                }
            }
            ClassSet::Classes(mask)
        }
    }
}

/// `lru_crawler crawl|metadump|tocrawl|sleep <arg>`, `lru_crawler enable|disable`.
fn decode_lru_crawler<'a>(args: &[&[u8]], line_len: usize) -> Decode<'a, ReplyCtx> {
    match args {
        [b"crawl", classes] => admin(Admin::Crawl(class_set(classes)), false, line_len),
        [b"metadump", classes] => admin(Admin::MetaDump(class_set(classes)), false, line_len),
        [b"tocrawl", n] => match parse_u32(n) {
            Some(n) => admin(Admin::CrawlerToCrawl(n), false, line_len),
            None => refuse(BAD_FORMAT, false, line_len),
        },
        [b"sleep", n] => match parse_u32(n) {
            Some(n) if n > 1_000_000 => refuse(
                "CLIENT_ERROR sleep must be one second or less",
                false,
                line_len,
            ),
            Some(n) => admin(Admin::CrawlerSleep(n), false, line_len),
            None => refuse(BAD_FORMAT, false, line_len),
        },
        [b"enable"] => admin(Admin::Crawler { enable: true }, false, line_len),
        [b"disable"] => admin(Admin::Crawler { enable: false }, false, line_len),
        _ => refuse(ERROR, false, line_len),
    }
}

/// `watch [class ...]`: no word means `fetchers`; a word memcached does not know makes the
/// command invalid (answered `ERROR` once `-W` is checked). A last `noreply` silences the answer,
/// and, being no class, makes the command invalid too, as in memcached.
fn decode_watch<'a>(content: &[u8], line_len: usize) -> Decode<'a, ReplyCtx> {
    let words: Vec<&[u8]> = tokens(content).skip(1).collect();
    let noreply = words.last() == Some(&&b"noreply"[..]);
    let mut events = 0;
    let mut valid = true;
    for w in &words {
        match super::watch::class_named(w) {
            Some(c) => events |= c,
            None => valid = false,
        }
    }
    if words.is_empty() {
        events = super::watch::class::FETCHERS;
    }
    request(
        Command::Watch { events, valid },
        ReplyCtx::text(Kind::Admin, noreply),
        line_len,
    )
}

/// `slabs reassign <src> <dst>`, `slabs automove <0|1|2>`, `slabs automove ratio <r>`.
fn decode_slabs<'a>(args: &[&[u8]], noreply: bool, line_len: usize) -> Decode<'a, ReplyCtx> {
    match args {
        [b"reassign", src, dst] => match (parse_i32(src), parse_i32(dst)) {
            (Some(src), Some(dst)) => admin(Admin::Reassign { src, dst }, false, line_len),
            _ => refuse(BAD_FORMAT, false, line_len),
        },
        [b"automove", b"ratio", rest @ ..] => match rest.first().and_then(|r| parse_f64(r)) {
            Some(r) => admin(Admin::AutomoveRatio(r.to_bits()), noreply, line_len),
            None => refuse(ERROR, noreply, line_len),
        },
        [b"automove", level, ..] => match parse_u32(level) {
            Some(l @ 0..=2) => admin(Admin::Automove(l), noreply, line_len),
            Some(_) => refuse(ERROR, noreply, line_len),
            None => refuse(BAD_FORMAT, noreply, line_len),
        },
        _ => refuse(ERROR, false, line_len),
    }
}

/// Whether `key` is within the key length limit.
fn key_ok(key: &[u8], limits: &Limits) -> bool {
    key.len() <= limits.max_key_len
}

/// set/add/replace/append/prepend `<key> <flags> <exptime> <bytes> [noreply]`, cas with `<cas>`
/// before `noreply`; waits for the data block.
fn decode_store<'a>(
    buf: &'a [u8],
    cmd: &[u8],
    args: &[&'a [u8]],
    noreply: bool,
    line_len: usize,
    limits: &Limits,
) -> Decode<'a, ReplyCtx> {
    let cas_cmd = cmd == b"cas";
    let want = if cas_cmd { 5 } else { 4 };
    if args.len() != want && args.len() != want + 1 {
        return refuse(ERROR, false, line_len);
    }
    let mode = match cmd {
        b"add" => StoreMode::Add,
        b"replace" => StoreMode::Replace,
        b"append" => StoreMode::Append,
        b"prepend" => StoreMode::Prepend,
        b"cas" => StoreMode::Cas,
        _ => StoreMode::Set,
    };
    let key = args[0];
    if !key_ok(key, limits) {
        return refuse(BAD_FORMAT, noreply, line_len);
    }
    let (Some(flags), Some(exptime), Some(vlen)) =
        (parse_u32(args[1]), parse_i32(args[2]), parse_i32(args[3]))
    else {
        return refuse(BAD_FORMAT, noreply, line_len);
    };
    let cas = if cas_cmd {
        match parse_u64(args[4]) {
            Some(c) => c,
            None => return refuse(BAD_FORMAT, noreply, line_len),
        }
    } else {
        0
    };
    // memcached adds 2 for the "\r\n" to an int: a length within 2 of its maximum is a
    // bad command line, not a value too large.
    let Some(vlen) = usize::try_from(vlen)
        .ok()
        .filter(|&v| v <= i32::MAX as usize - 2)
    else {
        return refuse(BAD_FORMAT, noreply, line_len);
    };
    match data_block(buf, line_len, vlen, limits) {
        DataBlock::Incomplete => Decode::Incomplete,
        DataBlock::BadChunk(skip) => refuse(BAD_CHUNK, noreply, skip),
        DataBlock::TooLarge(skip) => Decode::Reject {
            ctx: ReplyCtx::text(Kind::Error(TOO_LARGE), noreply),
            outcome: Outcome::TooLarge,
            skip,
            close: false,
            // memcached unlinks the old item so a failed set leaves no stale value.
            unlink_key: (mode == StoreMode::Set).then_some(key),
        },
        DataBlock::NoRoom(skip) => Decode::Reject {
            ctx: ReplyCtx::text(Kind::Error(OUT_OF_MEMORY), noreply),
            outcome: Outcome::OutOfMemory,
            skip,
            close: false,
            // As memcached when the item cannot be allocated.
            unlink_key: (mode == StoreMode::Set).then_some(key),
        },
        DataBlock::Ready(value, consumed) => request(
            Command::Store {
                mode,
                key,
                value,
                flags,
                exptime: i64::from(exptime),
                cas,
                meta: None,
            },
            ReplyCtx::text(Kind::Store { cas: cas_cmd }, noreply),
            consumed,
        ),
    }
}

/// The checks memcached makes of a `<cmd> <key> <number> [noreply]` line before the number:
/// the word count (`ERROR`), then the key (`CLIENT_ERROR bad command line format`).
fn key_and_number<'a>(
    args: &[&[u8]],
    noreply: bool,
    line_len: usize,
    limits: &Limits,
) -> Option<Decode<'a, ReplyCtx>> {
    if args.len() != 2 && args.len() != 3 {
        return Some(refuse(ERROR, false, line_len));
    }
    if !key_ok(args[0], limits) {
        return Some(refuse(BAD_FORMAT, noreply, line_len));
    }
    None
}

/// incr/decr `<key> <delta> [noreply]`.
fn decode_arith<'a>(
    cmd: &[u8],
    args: &[&'a [u8]],
    noreply: bool,
    line_len: usize,
    limits: &Limits,
) -> Decode<'a, ReplyCtx> {
    if let Some(refused) = key_and_number(args, noreply, line_len, limits) {
        return refused;
    }
    let Some(delta) = parse_u64(args[1]) else {
        return refuse(BAD_DELTA, noreply, line_len);
    };
    let op = if cmd == b"incr" {
        ArithOp::Incr
    } else {
        ArithOp::Decr
    };
    request(
        Command::Arith {
            op,
            key: args[0],
            delta,
            on_miss: None,
            cas: 0,
            meta: None,
        },
        ReplyCtx::text(Kind::Arith, noreply),
        line_len,
    )
}

/// `delete <key> [0] [noreply]`.
fn decode_delete<'a>(
    args: &[&'a [u8]],
    noreply: bool,
    line_len: usize,
    limits: &Limits,
) -> Decode<'a, ReplyCtx> {
    if args.is_empty() || args.len() > 3 {
        return refuse(ERROR, false, line_len);
    }
    if args.len() > 1 {
        // Only the legacy `delete <key> 0` and `noreply` are tolerated.
        let hold_zero = args[1] == b"0";
        let valid = (args.len() == 2 && (hold_zero || noreply))
            || (args.len() == 3 && hold_zero && noreply);
        if !valid {
            return refuse(BAD_DELETE, noreply, line_len);
        }
    }
    if !key_ok(args[0], limits) {
        return refuse(BAD_FORMAT, noreply, line_len);
    }
    request(
        Command::Delete {
            key: args[0],
            cas: 0,
        },
        ReplyCtx::text(Kind::Delete, noreply),
        line_len,
    )
}

/// `touch <key> <exptime> [noreply]`.
fn decode_touch<'a>(
    args: &[&'a [u8]],
    noreply: bool,
    line_len: usize,
    limits: &Limits,
) -> Decode<'a, ReplyCtx> {
    if let Some(refused) = key_and_number(args, noreply, line_len, limits) {
        return refused;
    }
    let Some(exptime) = parse_i32(args[1]) else {
        return refuse(BAD_EXPTIME, noreply, line_len);
    };
    request(
        Command::Touch {
            key: args[0],
            exptime: i64::from(exptime),
        },
        ReplyCtx::text(Kind::Touch, noreply),
        line_len,
    )
}

/// `flush_all [delay] [noreply]`.
fn decode_flush<'a>(args: &[&'a [u8]], noreply: bool, line_len: usize) -> Decode<'a, ReplyCtx> {
    if args.len() > 2 {
        return refuse(ERROR, false, line_len);
    }
    let delay = if args.len() == usize::from(noreply) {
        0
    } else {
        match parse_i32(args[0]) {
            Some(d) => i64::from(d),
            None => return refuse(BAD_EXPTIME, noreply, line_len),
        }
    };
    request(
        Command::Flush { delay },
        ReplyCtx::text(Kind::Ok, noreply),
        line_len,
    )
}

/// `verbosity <level> [noreply]`.
fn decode_verbosity<'a>(args: &[&'a [u8]], noreply: bool, line_len: usize) -> Decode<'a, ReplyCtx> {
    if args.len() != 1 && args.len() != 2 {
        return refuse(ERROR, false, line_len);
    }
    let Some(level) = parse_u32(args[0]) else {
        return refuse(BAD_FORMAT, noreply, line_len);
    };
    request(
        Command::Verbosity { level },
        ReplyCtx::text(Kind::Ok, noreply),
        line_len,
    )
}

/// `cache_memlimit <megabytes> [noreply]`.
fn decode_memlimit<'a>(args: &[&'a [u8]], noreply: bool, line_len: usize) -> Decode<'a, ReplyCtx> {
    if args.len() != 1 && args.len() != 2 {
        return refuse(ERROR, false, line_len);
    }
    match parse_u32(args[0]) {
        None => refuse(ERROR, noreply, line_len),
        Some(mb) if mb < 8 => refuse(
            "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m",
            noreply,
            line_len,
        ),
        Some(mb) if mb > 1_000_000_000 => refuse(
            "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes",
            noreply,
            line_len,
        ),
        Some(mb) => admin(Admin::MemLimit(mb), noreply, line_len),
    }
}

/// `stats [group]`, `stats detail on|off|dump`, `stats cachedump <class> <limit>`.
fn decode_stats<'a>(args: &[&'a [u8]], line_len: usize) -> Decode<'a, ReplyCtx> {
    let mut group = args.first().copied().unwrap_or_default();
    if group == b"cachedump" {
        return decode_cachedump(args, line_len);
    }
    // `stats detail on|off|dump` travels as binary's key does ("detail on").
    let detail = group == b"detail";
    if detail {
        group = match args.get(1).copied() {
            Some(b"on") => b"detail on",
            Some(b"off") => b"detail off",
            Some(b"dump") => b"detail dump",
            _ => {
                return Decode::Reject {
                    ctx: ReplyCtx::text(
                        Kind::Error("CLIENT_ERROR usage: stats detail on|off|dump"),
                        false,
                    ),
                    outcome: Outcome::Done,
                    skip: line_len,
                    close: false,
                    unlink_key: None,
                }
            }
        };
    }
    request(
        Command::Stats { group },
        ReplyCtx::text(
            Kind::Stats {
                reset: group == b"reset",
                detail,
            },
            false,
        ),
        line_len,
    )
}

impl TextCodec {
    /// Hands out the next key of the multi-get in progress.
    fn next_key<'a>(&mut self, buf: &'a [u8], m: MultiGet) -> Decode<'a, ReplyCtx> {
        let rest = &buf[..m.left];
        let content = rest.strip_suffix(b"\n").unwrap_or(rest);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        let start = content
            .iter()
            .position(|&b| b != b' ')
            .unwrap_or(content.len());
        let len = content[start..]
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or(content.len() - start);
        let key = &content[start..start + len];
        let after = start + len;
        let last = content[after..].iter().all(|&b| b == b' ');
        let consumed = if last { m.left } else { after };
        self.multi = if last {
            None
        } else {
            Some(MultiGet {
                left: m.left - after,
                ..m
            })
        };
        let ctx = ReplyCtx::text(
            Kind::Get {
                cas: m.cas,
                end: last,
            },
            false,
        );
        request(
            Command::Get {
                key,
                touch: m.touch,
                meta: None,
            },
            ctx,
            consumed,
        )
    }

    /// Starts a get/gets/gat/gats line: checks every key first (memcached answers a bad key with
    /// one error and no values), then hands out the first key.
    fn start_get<'a>(
        &mut self,
        buf: &'a [u8],
        content: &'a [u8],
        line_len: usize,
        cas: bool,
        touch: bool,
        limits: &Limits,
    ) -> Decode<'a, ReplyCtx> {
        let mut words = tokens(content);
        words.next();
        let touch = if touch {
            match words.next() {
                Some(t) => match parse_i32(t) {
                    Some(t) => Some(i64::from(t)),
                    None => return refuse(BAD_EXPTIME, false, line_len),
                },
                None => return refuse(ERROR, false, line_len),
            }
        } else {
            None
        };
        let mut keys = 0;
        for key in words {
            if key.len() > limits.max_key_len {
                return refuse(BAD_FORMAT, false, line_len);
            }
            keys += 1;
        }
        if keys == 0 {
            // memcached: `gat <exptime>` alone is an empty answer; `get` alone is an error.
            return if touch.is_some() {
                Decode::Reject {
                    ctx: ReplyCtx::text(Kind::Error("END"), false),
                    outcome: Outcome::NotFound,
                    skip: line_len,
                    close: false,
                    unlink_key: None,
                }
            } else {
                refuse(ERROR, false, line_len)
            };
        }
        // Position just after the command word (and exptime): keys start there.
        let mut at = 0;
        let skip_words = if touch.is_some() { 2 } else { 1 };
        for _ in 0..skip_words {
            while content[at] == b' ' {
                at += 1;
            }
            while at < content.len() && content[at] != b' ' {
                at += 1;
            }
        }
        let m = MultiGet {
            cas,
            touch,
            left: line_len - at,
        };
        let first = self.next_key(&buf[at..], m);
        match first {
            Decode::Request {
                command,
                ctx,
                consumed,
            } => request(command, ctx, consumed + at),
            other => other,
        }
    }
}

impl Codec for TextCodec {
    type Ctx = ReplyCtx;

    fn decode<'a>(&mut self, buf: &'a [u8], limits: &Limits) -> Decode<'a, ReplyCtx> {
        if let Some(m) = self.multi {
            return self.next_key(buf, m);
        }
        if buf.is_empty() {
            return Decode::Incomplete;
        }
        let Some((content, line_len)) = line(buf) else {
            if buf.len() > MAX_LINE && !looks_like_multiget(buf) {
                return Decode::Close;
            }
            return Decode::Incomplete;
        };
        let mut words = [&[][..]; 9];
        let mut n = 0;
        for t in tokens(content) {
            if n == words.len() {
                n += 1;
                break;
            }
            words[n] = t;
            n += 1;
        }
        let Some(&cmd) = words.first().filter(|_| n > 0) else {
            return refuse(ERROR, false, line_len);
        };
        if cmd.len() == 2 && cmd[0] == b'm' {
            return meta::decode(buf, content, line_len, limits).map_ctx(ReplyCtx::Meta);
        }
        let args = &words[1..n.min(words.len())];
        let noreply = args.last() == Some(&&b"noreply"[..]);
        match cmd {
            b"get" => self.start_get(buf, content, line_len, false, false, limits),
            b"gets" => self.start_get(buf, content, line_len, true, false, limits),
            b"gat" => self.start_get(buf, content, line_len, false, true, limits),
            b"gats" => self.start_get(buf, content, line_len, true, true, limits),
            b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
                decode_store(buf, cmd, args, noreply, line_len, limits)
            }
            b"incr" | b"decr" => decode_arith(cmd, args, noreply, line_len, limits),
            b"delete" => decode_delete(args, noreply, line_len, limits),
            b"touch" => decode_touch(args, noreply, line_len, limits),
            b"flush_all" => decode_flush(args, noreply, line_len),
            b"verbosity" => decode_verbosity(args, noreply, line_len),
            b"cache_memlimit" => decode_memlimit(args, noreply, line_len),
            // memcached built with TLS; its answer when TLS is off comes from the server.
            b"refresh_certs" => admin(Admin::RefreshCerts, false, line_len),
            b"lru_crawler" => decode_lru_crawler(args, line_len),
            b"watch" => decode_watch(content, line_len),
            b"slabs" => decode_slabs(args, noreply, line_len),
            b"version" => request(
                Command::Version,
                ReplyCtx::text(Kind::Version, false),
                line_len,
            ),
            b"quit" => request(Command::Quit, ReplyCtx::text(Kind::Quit, false), line_len),
            b"shutdown" => request(
                Command::Shutdown {
                    valid_mode: matches!(args, [] | [b"graceful"]),
                },
                ReplyCtx::text(Kind::Shutdown, false),
                line_len,
            ),
            b"stats" => decode_stats(args, line_len),
            // An unknown command whose last word starts with "HTTP/" is a web request line
            // (`GET / HTTP/1.1`): memcached closes the connection without a reply.
            _ if tokens(content)
                .last()
                .is_some_and(|w| w.starts_with(b"HTTP/")) =>
            {
                Decode::Close
            }
            _ => refuse(ERROR, false, line_len),
        }
    }

    fn encode(&mut self, out: &mut Vec<u8>, ctx: &ReplyCtx, key: &[u8], outcome: &Outcome<&[u8]>) {
        match ctx {
            ReplyCtx::Text { kind, noreply } => {
                if !*noreply {
                    encode_text(out, *kind, key, outcome);
                }
            }
            ReplyCtx::Meta(m) => meta::encode(out, m, key, outcome),
        }
    }

    fn encode_split(
        &mut self,
        out: &mut Vec<u8>,
        ctx: &ReplyCtx,
        key: &[u8],
        outcome: &Outcome<&[u8]>,
        put_value: &mut dyn FnMut(&mut Vec<u8>),
    ) -> bool {
        let (
            ReplyCtx::Text {
                kind: Kind::Get { cas: with_cas, end },
                noreply: false,
            },
            Outcome::Value { flags, cas, value },
        ) = (ctx, outcome)
        else {
            return false;
        };
        let cas = with_cas.then_some(*cas);
        get_hit(out, key, *flags, value.len(), cas, *end, put_value);
        true
    }

    fn item_key<'k>(&self, ctx: &ReplyCtx, wire_key: &'k [u8]) -> Cow<'k, [u8]> {
        match ctx {
            // Checked when decoded, so the decoding cannot fail here.
            ReplyCtx::Meta(m) if m.base64 => {
                Cow::Owned(meta::base64_decode(wire_key).unwrap_or_default())
            }
            _ => Cow::Borrowed(wire_key),
        }
    }
}

/// `VALUE <key> <flags> <bytes>[ <cas>]\r\n`, the line in front of a get's data block.
fn value_line(out: &mut Vec<u8>, key: &[u8], flags: u32, len: usize, cas: Option<u64>) {
    use std::io::Write;
    out.extend_from_slice(b"VALUE ");
    out.extend_from_slice(key);
    // Writing into a Vec cannot fail.
    let _ = match cas {
        Some(cas) => write!(out, " {flags} {len} {cas}\r\n"),
        None => write!(out, " {flags} {len}\r\n"),
    };
}

/// A get's hit: its VALUE line, the data block `put_value` appends, and `END` after the last key.
fn get_hit(
    out: &mut Vec<u8>,
    key: &[u8],
    flags: u32,
    len: usize,
    cas: Option<u64>,
    end: bool,
    put_value: &mut dyn FnMut(&mut Vec<u8>),
) {
    value_line(out, key, flags, len, cas);
    put_value(out);
    out.extend_from_slice(b"\r\n");
    if end {
        line_out(out, b"END");
    }
}

fn line_out(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// The text reply to `outcome` for a command of `kind`.
fn encode_text(out: &mut Vec<u8>, kind: Kind, key: &[u8], outcome: &Outcome<&[u8]>) {
    let error = |out: &mut Vec<u8>, o: &Outcome<&[u8]>| match o {
        Outcome::TooLarge => line_out(out, TOO_LARGE.as_bytes()),
        Outcome::OutOfMemory => line_out(out, OUT_OF_MEMORY.as_bytes()),
        Outcome::Unavailable => line_out(out, super::ascii::UNAVAILABLE.as_bytes()),
        Outcome::NonNumeric => line_out(out, NON_NUMERIC.as_bytes()),
        Outcome::InvalidArguments => line_out(out, BAD_FORMAT.as_bytes()),
        _ => line_out(out, ERROR.as_bytes()),
    };
    match kind {
        Kind::Get { cas: with_cas, end } => {
            if let Outcome::Value { flags, cas, value } = outcome {
                let cas = with_cas.then_some(*cas);
                get_hit(out, key, *flags, value.len(), cas, end, &mut |out| {
                    out.extend_from_slice(value)
                });
                return;
            }
            if let Outcome::OutOfMemory = outcome {
                line_out(out, GET_OUT_OF_MEMORY.as_bytes());
            }
            if let Outcome::Unavailable = outcome {
                // No END: the connection closes after it.
                line_out(out, super::ascii::UNAVAILABLE.as_bytes());
                return;
            }
            if end {
                line_out(out, b"END");
            }
        }
        Kind::Store { cas } => match outcome {
            Outcome::Stored { .. } => line_out(out, b"STORED"),
            Outcome::Exists if cas => line_out(out, b"EXISTS"),
            Outcome::NotFound if cas => line_out(out, b"NOT_FOUND"),
            Outcome::Exists | Outcome::NotFound | Outcome::NotStored => {
                line_out(out, b"NOT_STORED")
            }
            o => error(out, o),
        },
        Kind::Delete => match outcome {
            Outcome::Deleted => line_out(out, b"DELETED"),
            Outcome::NotFound => line_out(out, b"NOT_FOUND"),
            o => error(out, o),
        },
        Kind::Arith => match outcome {
            Outcome::Counter { value, .. } => line_out(out, value.to_string().as_bytes()),
            Outcome::NotFound => line_out(out, b"NOT_FOUND"),
            Outcome::OutOfMemory => line_out(out, b"SERVER_ERROR out of memory"),
            o => error(out, o),
        },
        Kind::Touch => match outcome {
            Outcome::Touched { .. } => line_out(out, b"TOUCHED"),
            Outcome::NotFound => line_out(out, b"NOT_FOUND"),
            o => error(out, o),
        },
        // flush_all under memcached's -F.
        Kind::Ok if *outcome == Outcome::AuthError => {
            line_out(out, b"CLIENT_ERROR flush_all not allowed")
        }
        Kind::Ok => line_out(out, b"OK"),
        Kind::Version => {
            if let Outcome::Version(v) = outcome {
                out.extend_from_slice(b"VERSION ");
                line_out(out, v);
            }
        }
        Kind::Stats { reset, detail } => match outcome {
            Outcome::Stats(_) if reset => line_out(out, b"RESET"),
            Outcome::Stats(pairs) if detail && pairs.is_empty() => line_out(out, b"OK"),
            // The dump is its own text (PREFIX lines, END).
            Outcome::Stats(pairs) if detail => {
                pairs
                    .iter()
                    .for_each(|(_, text)| out.extend_from_slice(text.as_bytes()));
            }
            Outcome::Stats(pairs) | Outcome::StatsOpen(pairs) => {
                for (name, value) in pairs {
                    out.extend_from_slice(b"STAT ");
                    out.extend_from_slice(name.as_bytes());
                    out.push(b' ');
                    line_out(out, value.as_bytes());
                }
                if matches!(outcome, Outcome::Stats(_)) {
                    line_out(out, b"END");
                }
            }
            _ => line_out(out, ERROR.as_bytes()),
        },
        Kind::Quit => {}
        // memcached's answers for shutdown without -A and with a bad mode.
        Kind::Shutdown => match outcome {
            Outcome::UnknownCommand => line_out(out, b"ERROR: shutdown not enabled"),
            Outcome::InvalidArguments => line_out(out, b"CLIENT_ERROR invalid shutdown mode"),
            _ => {}
        },
        Kind::Admin => encode_admin(out, outcome),
        Kind::Error(text) => line_out(out, text.as_bytes()),
    }
}

/// memcached's text for an operator command's status.
fn admin_status(s: AdminStatus) -> &'static str {
    match s {
        AdminStatus::Ok => "OK",
        AdminStatus::MemLimitFailed => "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust",
        AdminStatus::CrawlerBadClass => "BADCLASS invalid class id",
        AdminStatus::CrawlerHashCrawl => "ERROR an unknown error happened",
        AdminStatus::CrawlerNotStarted => "NOTSTARTED no items to crawl",
        AdminStatus::CrawlerDisabled => "CLIENT_ERROR lru crawler disabled",
        AdminStatus::CrawlerRunning => "ERROR failed to start lru crawler thread",
        AdminStatus::CacheDumpDisabled => "CLIENT_ERROR stats cachedump not allowed",
        AdminStatus::MetaDumpDisabled => "ERROR metadump not allowed",
        AdminStatus::MetaDumpPipelined => "ERROR cannot pipeline other commands before metadump",
        AdminStatus::ReassignDisabled => "CLIENT_ERROR slab reassignment disabled",
        AdminStatus::ReassignBadClass => "BADCLASS invalid src or dst class id",
        AdminStatus::ReassignNoSpare => "NOSPARE source class has no spare pages",
        AdminStatus::ReassignSame => "SAME src and dst class are identical",
        AdminStatus::WatchDisabled => "CLIENT_ERROR watch commands not allowed",
        AdminStatus::WatchPipelined => "ERROR cannot pipeline other commands before watch",
        AdminStatus::WatchTooMany => "WATCHER_TOO_MANY log watcher limit reached",
    }
}

/// One `lru_crawler metadump` line (memcached ends these with a bare `\n`).
fn metadump_line(out: &mut Vec<u8>, i: &DumpedItem) {
    use std::io::Write;
    out.extend_from_slice(b"key=");
    uri_encode(out, &i.key);
    let exp = i.exptime.map_or(-1, |e| e as i64);
    let fetch = if i.fetched { "yes" } else { "no" };
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        out,
        " exp={exp} la={} cas={} fetch={fetch} cls={} size={}",
        i.atime, i.cas, i.class, i.size
    );
}

fn encode_admin(out: &mut Vec<u8>, outcome: &Outcome<&[u8]>) {
    use std::io::Write;
    match outcome {
        Outcome::Admin(s) => line_out(out, admin_status(*s).as_bytes()),
        Outcome::CacheDump(items) => {
            for i in items {
                out.extend_from_slice(b"ITEM ");
                out.extend_from_slice(&i.key);
                // Writing into a Vec cannot fail.
                let _ = write!(
                    out,
                    " [{} b; {} s]\r\n",
                    i.value_len,
                    i.exptime.unwrap_or(0)
                );
            }
            line_out(out, b"END");
        }
        Outcome::MetaDump { items, end } => {
            for i in items {
                metadump_line(out, i);
            }
            if *end {
                line_out(out, b"END");
            }
        }
        _ => line_out(out, ERROR.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_encoding_is_the_whole_encoding_with_the_value_put_in_by_the_caller() {
        let value = b"0123456789";
        let hit = Outcome::Value {
            flags: 3,
            cas: 99,
            value: &value[..],
        };
        for (with_cas, end) in [(false, false), (false, true), (true, false), (true, true)] {
            let ctx = ReplyCtx::Text {
                kind: Kind::Get { cas: with_cas, end },
                noreply: false,
            };
            let (mut whole, mut split) = (Vec::new(), Vec::new());
            let mut codec = TextCodec::default();
            codec.encode(&mut whole, &ctx, b"k", &hit);
            let done = codec.encode_split(&mut split, &ctx, b"k", &hit, &mut |out| {
                out.extend_from_slice(value)
            });
            assert!(done);
            assert_eq!(split, whole, "gets {with_cas}, end {end}");
        }
        let miss = ReplyCtx::Text {
            kind: Kind::Get {
                cas: false,
                end: true,
            },
            noreply: false,
        };
        let mut out = Vec::new();
        let never = &mut |_: &mut Vec<u8>| panic!("no value to place");
        let mut codec = TextCodec::default();
        assert!(!codec.encode_split(&mut out, &miss, b"k", &Outcome::NotFound, never));
        assert!(out.is_empty());
    }

    /// What one decode step produced, owned, for comparing whole streams.
    #[derive(Debug, PartialEq, Eq)]
    enum Step {
        Request(String, String),
        Reject(String, usize, bool),
        Close,
    }

    /// Decodes a stream delivered in pieces of `chunk` bytes (0 = all at once), as the
    /// connection does: decode while possible, else wait for more bytes; skips honoured.
    fn run(stream: &[u8], chunk: usize) -> Vec<Step> {
        let limits = Limits {
            max_key_len: 250,
            max_item_size: 1024,
            ..Limits::default()
        };
        let mut codec = TextCodec::default();
        let mut steps = Vec::new();
        let (mut start, mut avail, mut skip) = (0usize, 0usize, 0usize);
        while avail < stream.len() || start < avail {
            avail = if chunk == 0 {
                stream.len()
            } else {
                (avail + chunk).min(stream.len())
            };
            loop {
                let d = skip.min(avail - start);
                start += d;
                skip -= d;
                if skip > 0 || start == avail {
                    break;
                }
                match codec.decode(&stream[start..avail], &limits) {
                    Decode::Incomplete => break,
                    Decode::Close => {
                        steps.push(Step::Close);
                        return steps;
                    }
                    Decode::Request {
                        command,
                        ctx,
                        consumed,
                    } => {
                        steps.push(Step::Request(format!("{command:?}"), format!("{ctx:?}")));
                        start += consumed;
                    }
                    Decode::Reject {
                        ctx,
                        skip: s,
                        close,
                        ..
                    } => {
                        steps.push(Step::Reject(format!("{ctx:?}"), s, close));
                        skip = s;
                    }
                }
            }
            if avail == stream.len() && (start == avail || skip > 0) {
                break;
            }
            if avail == stream.len() {
                break;
            }
        }
        steps
    }

    /// Every input gives the same steps whole and in fragments of 1, 2, 5, 10, 100 bytes.
    fn same_in_fragments(stream: &[u8]) -> Vec<Step> {
        let whole = run(stream, 0);
        for chunk in [1, 2, 5, 10, 100] {
            assert_eq!(run(stream, chunk), whole, "chunk {chunk}");
        }
        whole
    }

    fn get_key(step: &Step) -> String {
        match step {
            Step::Request(c, _) => c.clone(),
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn multi_get_yields_one_request_per_key_and_end_on_the_last() {
        let steps = same_in_fragments(b"get a bb  ccc\r\ngets x\r\n");
        assert_eq!(steps.len(), 4);
        assert!(get_key(&steps[0]).contains("[97]"));
        assert!(get_key(&steps[2]).contains("[99, 99, 99]"));
        let ends: Vec<bool> = steps
            .iter()
            .map(|s| matches!(s, Step::Request(_, c) if c.contains("end: true")))
            .collect();
        assert_eq!(ends, [false, false, true, true]);
        assert!(matches!(&steps[3], Step::Request(_, c) if c.contains("cas: true")));
    }

    #[test]
    fn storage_commands_wait_for_the_data_block() {
        let steps = same_in_fragments(b"set k 5 -1 3 noreply\r\nabc\r\ncas k 0 0 1 77\r\nx\r\n");
        assert_eq!(steps.len(), 2);
        let Step::Request(cmd, ctx) = &steps[0] else {
            panic!()
        };
        assert!(
            cmd.contains("flags: 5") && cmd.contains("exptime: -1"),
            "{cmd}"
        );
        assert!(ctx.contains("noreply: true"), "{ctx}");
        assert!(get_key(&steps[1]).contains("cas: 77"));
    }

    #[test]
    fn bad_chunk_and_too_large_skip_the_block() {
        let mut stream = b"set k 0 0 2\r\nabc\r\nset k 0 0 2000\r\n".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 2002));
        stream.extend_from_slice(b"version\r\n");
        let steps = same_in_fragments(&stream);
        assert_eq!(steps.len(), 4, "{steps:?}");
        assert!(matches!(&steps[0], Step::Reject(c, 17, false) if c.contains("bad data chunk")));
        // The rest of the first block ("c\r\n" -> "\n" after "c\r") is an empty line.
        assert!(matches!(&steps[1], Step::Reject(c, 1, false) if c.contains("\"ERROR\"")));
        assert!(matches!(&steps[2], Step::Reject(c, 2018, false) if c.contains("too large")));
        assert!(matches!(&steps[3], Step::Request(c, _) if c == "Version"));
    }

    #[test]
    fn a_long_line_without_newline_closes_unless_it_is_a_get() {
        let steps = same_in_fragments(&[b'x'; 3000]);
        assert_eq!(steps, [Step::Close]);
        let mut get = b"get".to_vec();
        for _ in 0..1000 {
            get.extend_from_slice(b" k");
        }
        get.extend_from_slice(b"\r\n");
        assert_eq!(same_in_fragments(&get).len(), 1000);
    }

    #[test]
    fn meta_requests_decode_in_fragments() {
        let steps = same_in_fragments(
            b"mg foo v k O1 q\r\nms Zm9v 2 b T5 F3 MA\r\nhi\r\nmd foo C9\r\nma n N0 J4 D2 MD\r\nmn\r\nme foo\r\n",
        );
        assert_eq!(steps.len(), 6, "{steps:?}");
        assert!(get_key(&steps[0]).contains("meta: Some(GetMeta"));
        let ms = get_key(&steps[1]);
        assert!(ms.contains("Append") && ms.contains("flags: 3"), "{ms}");
        assert!(get_key(&steps[2]).contains("cas: 9"));
        let ma = get_key(&steps[3]);
        assert!(ma.contains("Decr") && ma.contains("Some((4, 0))"), "{ma}");
        assert_eq!(get_key(&steps[4]), "Noop");
        assert!(get_key(&steps[5]).contains("Inspect"));
        assert_eq!(meta::base64_decode(b"Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(meta::base64_decode(b"Zm8="), Some(b"fo".to_vec()));
        assert_eq!(meta::base64_decode(b"!"), None);
    }

    #[test]
    fn operator_commands_decode_and_encode_as_memcached() {
        assert_eq!(class_set(b"all"), ClassSet::All);
        assert_eq!(class_set(b"1,,3"), ClassSet::Classes(0b1010));
        assert_eq!(class_set(b","), ClassSet::Classes(0));
        for bad in [&b"0"[..], b"64", b"1,x", b"-1"] {
            assert_eq!(class_set(bad), ClassSet::Invalid, "{bad:?}");
        }
        let mut codec = TextCodec::default();
        let Decode::Request { command, ctx, .. } =
            codec.decode(b"stats cachedump 3 10 extra\r\n", &Limits::default())
        else {
            panic!("not decoded");
        };
        assert_eq!(
            command,
            Command::Admin(Admin::CacheDump {
                class: 3,
                limit: 10
            })
        );
        let item = |key: &[u8], exptime| DumpedItem {
            key: key.to_vec(),
            value_len: 2,
            size: 40,
            class: 1,
            exptime,
            atime: 1_700_000_000,
            cas: 7,
            fetched: true,
        };
        let mut out = Vec::new();
        let dump = Outcome::CacheDump(vec![item(b"b", Some(1_700_000_100)), item(b"a", None)]);
        codec.encode(&mut out, &ctx, b"", &dump);
        assert_eq!(
            out,
            b"ITEM b [2 b; 1700000100 s]\r\nITEM a [2 b; 0 s]\r\nEND\r\n"
        );
        out.clear();
        let part = Outcome::MetaDump {
            items: vec![item(b"c d%\x01\xff-._~", None)],
            end: true,
        };
        codec.encode(&mut out, &ctx, b"", &part);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "key=c%20d%25%01%FF-._~ exp=-1 la=1700000000 cas=7 fetch=yes cls=1 size=40\nEND\r\n"
        );
    }

    #[test]
    fn http_request_lines_close_and_huge_lengths_are_bad_format() {
        let limits = Limits::default();
        let mut codec = TextCodec::default();
        for line in [&b"GET / HTTP/1.1\r\n"[..], b"HTTP/1.0\r\n"] {
            assert!(
                matches!(codec.decode(line, &limits), Decode::Close),
                "{line:?}"
            );
        }
        // A known command keeps its meaning whatever its keys look like.
        assert!(matches!(
            codec.decode(b"get / HTTP/1.1\r\n", &limits),
            Decode::Request { .. }
        ));
        for (line, bad_format) in [
            (&b"set k 0 0 2147483646\r\n"[..], true),
            (b"set k 0 0 2147483647\r\n", true),
            (b"set k 0 0 2147483645\r\n", false),
        ] {
            let mut codec = TextCodec::default();
            let Decode::Reject { ctx, outcome, .. } = codec.decode(line, &limits) else {
                panic!("{line:?} not refused");
            };
            let mut out = Vec::new();
            codec.encode(&mut out, &ctx, b"", &outcome);
            let want: &[u8] = if bad_format {
                b"CLIENT_ERROR bad command line format\r\n"
            } else {
                b"SERVER_ERROR object too large for cache\r\n"
            };
            assert_eq!(out, want, "{line:?}");
        }
    }

    #[test]
    fn values_beyond_the_buffer_room_are_out_of_memory_like_memcached() {
        let limits = Limits {
            buffer_room: 64,
            ..Limits::default()
        };
        let mut codec = TextCodec::default();
        let line = b"set big 0 0 100\r\n";
        let total = line.len() + 100 + 2;
        // Refused from the command line alone, before the value arrives.
        let Decode::Reject {
            ctx,
            outcome,
            skip,
            close,
            unlink_key,
        } = codec.decode(line, &limits)
        else {
            panic!("not refused");
        };
        assert_eq!((skip, close, unlink_key), (total, false, Some(&b"big"[..])));
        let mut out = Vec::new();
        codec.encode(&mut out, &ctx, b"", &outcome);
        assert_eq!(out, b"SERVER_ERROR out of memory storing object\r\n");
        // Meta sets answer the same error.
        let Decode::Reject { ctx, outcome, .. } = codec.decode(b"ms big 100\r\n", &limits) else {
            panic!("meta set not refused");
        };
        let mut out = Vec::new();
        codec.encode(&mut out, &ctx, b"", &outcome);
        assert_eq!(out, b"SERVER_ERROR out of memory storing object\r\n");
        // A get whose reply cannot be staged answers memcached's get-side error, then END.
        let Decode::Request { ctx, .. } = codec.decode(b"get k\r\n", &limits) else {
            panic!("get not decoded");
        };
        let mut out = Vec::new();
        codec.encode(&mut out, &ctx, b"k", &Outcome::OutOfMemory);
        assert_eq!(
            out,
            b"SERVER_ERROR out of memory writing get response\r\nEND\r\n"
        );
    }
}
