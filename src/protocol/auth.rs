//! Authentication on the wire: SASL PLAIN's message (RFC 4616), memcached's text authentication
//! (`-Y`: the first command is `set <any> <flags> <exptime> <len>` whose value is
//! `user password`), and the `user:password` files both read. Pure: no files, no sockets.

/// Mechanisms offered (SASL list mechanisms' answer).
pub const MECHANISMS: &[u8] = b"PLAIN";

/// SASL PLAIN's message `[authzid] NUL authcid NUL passwd`: the user (authcid) and password.
/// An authorization identity other than empty or the user itself is refused (None), as Cyrus
/// SASL refuses a proxy user nobody allowed.
pub fn parse_plain(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if user.is_empty() || (!authzid.is_empty() && authzid != user) {
        return None;
    }
    Some((user, password))
}

/// Longest value the text authentication accepts (memcached's `MAX_AUTH_REQ_LEN`).
pub const MAX_TEXT_TOKEN: usize = 16384;
/// Bytes without a newline after which an unauthenticated text connection is closed.
const MAX_TEXT_LINE: usize = 2048;
/// Shortest possible command line (memcached's `MIN_AUTH_REQ_LEN`).
const MIN_TEXT_LINE: usize = 6;

/// What the front of an unauthenticated text connection's buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextAuth<'a> {
    /// Not a whole request yet.
    Incomplete,
    /// Junk: close the connection (memcached's answer, without a reply).
    Close,
    /// Refused: send `line` (with CRLF) and drop `consumed` bytes.
    Reply {
        /// The reply line, without CRLF.
        line: &'static [u8],
        /// Bytes of the request.
        consumed: usize,
    },
    /// The credentials to check; `consumed` bytes make up the request.
    Token {
        /// User name.
        user: &'a [u8],
        /// Password.
        password: &'a [u8],
        /// Bytes of the request.
        consumed: usize,
    },
}

/// Decodes the front of `buf` as memcached's text authentication does.
pub fn decode_text(buf: &[u8]) -> TextAuth<'_> {
    if buf.len() < 3 {
        return TextAuth::Incomplete;
    }
    let Some(nl) = memchr::memchr(b'\n', buf) else {
        return if buf.len() > MAX_TEXT_LINE {
            TextAuth::Close
        } else {
            TextAuth::Incomplete
        };
    };
    if nl < MIN_TEXT_LINE {
        return TextAuth::Close;
    }
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let tokens: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let size = tokens
        .get(4)
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse::<u32>().ok());
    let (true, Some(size)) = (line.starts_with(b"set"), size) else {
        return TextAuth::Reply {
            line: b"CLIENT_ERROR unauthenticated",
            consumed: nl + 1,
        };
    };
    let size = size as usize;
    if size > MAX_TEXT_TOKEN {
        return TextAuth::Reply {
            line: b"CLIENT_ERROR auth token too long",
            consumed: nl + 1,
        };
    }
    let body = &buf[nl + 1..];
    if body.len() < size + 2 {
        return TextAuth::Incomplete;
    }
    let consumed = nl + 1 + size + 2;
    if &body[size..size + 2] != b"\r\n" {
        return TextAuth::Reply {
            line: b"CLIENT_ERROR bad command line termination",
            consumed,
        };
    }
    let Some(space) = memchr::memchr(b' ', &body[..size]) else {
        return TextAuth::Reply {
            line: b"CLIENT_ERROR bad authentication token format",
            consumed,
        };
    };
    TextAuth::Token {
        user: &body[..space],
        password: &body[space + 1..size],
        consumed,
    }
}

/// How a password ends on a line of a password file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordEnd {
    /// At the end of the line (memcached's `-Y` file).
    Line,
    /// At a further `:` or the end of the line (memcached's MEMCACHED_SASL_PWDB).
    Colon,
}

/// A password file's entries: (user, password).
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Parses a file of `user:password` lines. Empty lines are skipped; a line without `:` is an
/// error naming its number (memcached refuses such a `-Y` file).
pub fn parse_password_file(text: &[u8], end: PasswordEnd) -> Result<Entries, usize> {
    let mut entries = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(n + 1);
        };
        let rest = &line[colon + 1..];
        let password = match end {
            PasswordEnd::Line => rest,
            PasswordEnd::Colon => rest.split(|&b| b == b':').next().unwrap_or(rest),
        };
        entries.push((line[..colon].to_vec(), password.to_vec()));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        assert_eq!(
            parse_plain(b"\0bob\0secret"),
            Some((&b"bob"[..], &b"secret"[..]))
        );
        assert_eq!(
            parse_plain(b"bob\0bob\0pw\0x"),
            Some((&b"bob"[..], &b"pw\0x"[..]))
        );
        assert_eq!(parse_plain(b"eve\0bob\0pw"), None);
        assert_eq!(parse_plain(b"\0\0pw"), None);
        assert_eq!(parse_plain(b"bob:pw"), None);
        assert_eq!(parse_plain(b""), None);
    }

    #[test]
    fn text_authentication_as_memcached_reads_it() {
        assert_eq!(decode_text(b"se"), TextAuth::Incomplete);
        assert_eq!(decode_text(b"set a 0 0 7\r\nbob p"), TextAuth::Incomplete);
        assert_eq!(
            decode_text(b"set a 0 0 6\r\nbob pw\r\nget a\r\n"),
            TextAuth::Token {
                user: b"bob",
                password: b"pw",
                consumed: 21
            }
        );
        assert_eq!(
            decode_text(b"get foo\r\n"),
            TextAuth::Reply {
                line: b"CLIENT_ERROR unauthenticated",
                consumed: 9
            }
        );
        assert_eq!(
            decode_text(b"set a 0 0\r\n"),
            TextAuth::Reply {
                line: b"CLIENT_ERROR unauthenticated",
                consumed: 11
            }
        );
        assert_eq!(
            decode_text(b"set a 0 0 99999\r\n"),
            TextAuth::Reply {
                line: b"CLIENT_ERROR auth token too long",
                consumed: 17
            }
        );
        assert_eq!(
            decode_text(b"set a 0 0 5\r\nbobpw\r\n"),
            TextAuth::Reply {
                line: b"CLIENT_ERROR bad authentication token format",
                consumed: 20
            }
        );
        assert_eq!(
            decode_text(b"set a 0 0 3\r\nb pXX"),
            TextAuth::Reply {
                line: b"CLIENT_ERROR bad command line termination",
                consumed: 18
            }
        );
        assert_eq!(decode_text(b"hi\r\n"), TextAuth::Close);
        assert_eq!(decode_text(&[b'x'; 3000]), TextAuth::Close);
    }

    #[test]
    fn password_files() {
        let text = b"bob:pw:extra\r\n\nalice:a:b\n";
        assert_eq!(
            parse_password_file(text, PasswordEnd::Colon).unwrap(),
            vec![
                (b"bob".to_vec(), b"pw".to_vec()),
                (b"alice".to_vec(), b"a".to_vec())
            ]
        );
        assert_eq!(
            parse_password_file(text, PasswordEnd::Line).unwrap()[0],
            (b"bob".to_vec(), b"pw:extra".to_vec())
        );
        assert_eq!(
            parse_password_file(b"ok:1\nbroken\n", PasswordEnd::Line),
            Err(2)
        );
    }
}
