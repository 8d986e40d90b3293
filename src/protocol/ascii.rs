//! What memcached's two ASCII protocols share (classic text commands in [`super::text`], meta
//! commands in [`super::meta`]): line framing and tokens, memcached's number parsing, data
//! blocks, and the error lines both answer.
//!
//! Numbers are read the way memcached's `safe_strto*` helpers read them (C `strtol` semantics,
//! including the silent truncation of 64-bit results to the 32-bit fields).

use super::Limits;

/// memcached's answer to an unknown command or a wrong number of arguments.
pub const ERROR: &str = "ERROR";
/// Bad key, bad number in a storage command.
pub const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";
/// Data block not followed by `\r\n`.
pub const BAD_CHUNK: &str = "CLIENT_ERROR bad data chunk";
/// Item over the size limit (its data block is swallowed).
pub const TOO_LARGE: &str = "SERVER_ERROR object too large for cache";
/// No memory for the item.
pub const OUT_OF_MEMORY: &str = "SERVER_ERROR out of memory storing object";
/// Incr/decr on a value that is not a number.
pub const NON_NUMERIC: &str = "CLIENT_ERROR cannot increment or decrement non-numeric value";
/// What a cluster member answers while it catches up from its peers (then it closes).
pub const UNAVAILABLE: &str = "SERVER_ERROR catching up from peers";

/// The request line at the front of `buf`: its content (without `\r\n`) and its full length.
pub(crate) fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let nl = memchr::memchr(b'\n', buf)?;
    let content = &buf[..nl];
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    Some((content, nl + 1))
}

/// Space-separated tokens of a line (memcached splits on spaces only).
pub(crate) fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// A token as an optional sign and at least one decimal digit: (negative, the digits).
fn sign_and_digits(tok: &[u8]) -> Option<(bool, &[u8])> {
    let (neg, digits) = match tok.first()? {
        b'-' => (true, &tok[1..]),
        b'+' => (false, &tok[1..]),
        _ => (false, tok),
    };
    (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit)).then_some((neg, digits))
}

/// C `strtoll` over a whole token: optional sign, decimal digits, nothing after; out of range fails.
pub(crate) fn strtoll(tok: &[u8]) -> Option<i64> {
    let (neg, digits) = sign_and_digits(tok)?;
    let mut v: i128 = 0;
    for &d in digits {
        v = v * 10 + i128::from(d - b'0');
        if v > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

/// memcached's `safe_strtoull`: unsigned 64-bit; a `-` sign is refused unless the value is 0.
pub(crate) fn parse_u64(tok: &[u8]) -> Option<u64> {
    let (neg, digits) = sign_and_digits(tok)?;
    let mut v: u64 = 0;
    for &d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (!neg || v == 0).then_some(v)
}

/// memcached's `safe_strtol` into an `int32_t`: parsed as a C long, then truncated.
pub(crate) fn parse_i32(tok: &[u8]) -> Option<i32> {
    strtoll(tok).map(|v| v as i32)
}

/// memcached's `safe_strtoul` into a `uint32_t` (flags, verbosity): negative refused, truncated.
pub(crate) fn parse_u32(tok: &[u8]) -> Option<u32> {
    parse_u64(tok).map(|v| v as u32)
}

/// C `strtod` over a whole token, as memcached's `safe_strtod` reads it.
pub(crate) fn parse_f64(tok: &[u8]) -> Option<f64> {
    std::str::from_utf8(tok).ok()?.parse::<f64>().ok()
}

/// The data block of a storage command whose line is `line_len` bytes long: the request, a
/// refusal (too large: swallowed; bad chunk), or `Incomplete`.
pub(crate) enum DataBlock<'a> {
    /// The value and the bytes used by line + block.
    Ready(&'a [u8], usize),
    /// Wait for more bytes.
    Incomplete,
    /// Not followed by `\r\n`: skip this many bytes.
    BadChunk(usize),
    /// Over the item size limit: skip this many bytes without buffering them.
    TooLarge(usize),
    /// More than the connection can buffer now: skip this many bytes without buffering them.
    NoRoom(usize),
}

/// Finds the `vlen`-byte data block after a line of `line_len` bytes.
pub(crate) fn data_block<'a>(
    buf: &'a [u8],
    line_len: usize,
    vlen: usize,
    limits: &Limits,
) -> DataBlock<'a> {
    let total = line_len + vlen + 2;
    if vlen > limits.max_item_size {
        return DataBlock::TooLarge(total);
    }
    if total > limits.buffer_room {
        return DataBlock::NoRoom(total);
    }
    let Some(block) = buf.get(line_len..total) else {
        return DataBlock::Incomplete;
    };
    if &block[vlen..] != b"\r\n" {
        return DataBlock::BadChunk(total);
    }
    DataBlock::Ready(&block[..vlen], total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_memcacheds_strtol_rules() {
        assert_eq!(parse_i32(b"4294967297"), Some(1));
        assert_eq!(parse_i32(b"2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32(b"+5"), Some(5));
        assert_eq!(parse_i32(b"5x"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"-0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u32(b"4294967296"), Some(0));
    }
}
