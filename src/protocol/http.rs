//! HTTP/1.1 framing for the HTTP face (`--http-listen`) and the JSON shape of cached values.
//! Pure: no I/O. Request heads are parsed by `httparse`; bodies are framed by `Content-Length`
//! only (a `Transfer-Encoding` is refused); responses are written whole.
//!
//! Values in JSON (README, "HTTP"): a value that is valid UTF-8 is a JSON string of its text
//! (`"encoding": "utf-8"`), any other is its standard base64 (`"encoding": "base64"`). A PUT's
//! `"value"` is read the same way (`"encoding"` absent means UTF-8): what a GET returns can be
//! put back as it is. A `"value"` that is not a string (a number, an object) is stored as its
//! compact JSON text.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Value};

use super::KEY_MAX_LEN;

/// Longest request head (request line and header fields) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Header fields one request may carry.
const MAX_HEADERS: usize = 64;
/// memcached's exptime rule: up to this many seconds an exptime is relative, beyond it a Unix
/// time.
const RELATIVE_MAX: u64 = 30 * 24 * 3600;

/// The request methods the HTTP face answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// PUT.
    Put,
    /// POST.
    Post,
    /// DELETE.
    Delete,
    /// Anything else (answered 405 where a path exists).
    Other,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method.
    pub method: Method,
    /// The target's path, still percent-encoded, without its query.
    pub path: &'a str,
    /// The target's query (after `?`), empty when none.
    pub query: &'a str,
    /// Whether the connection stays open after the response (HTTP/1.1 unless `Connection:
    /// close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// Bytes of body that follow the head.
    pub content_length: usize,
    /// The client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// Bytes of the head, its blank line included.
    pub len: usize,
}

/// A request the server refuses before reading its body: the status and the reason sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Why, for the JSON body.
    pub reason: &'static str,
}

/// What the front of the read buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// Not a whole head yet.
    Incomplete,
    /// A whole head.
    Head(Head<'a>),
    /// A head that cannot be served; the connection closes after the answer.
    Refused(Refusal),
}

fn refuse(status: u16, reason: &'static str) -> Parse<'static> {
    Parse::Refused(Refusal { status, reason })
}

/// Parses the request head at the front of `buf`.
pub fn parse_head(buf: &[u8]) -> Parse<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return refuse(431, "request head too large")
        }
        Ok(httparse::Status::Partial) => return Parse::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return refuse(431, "too many header fields"),
        Err(_) => return refuse(400, "malformed request"),
    };
    if len > MAX_HEAD {
        return refuse(431, "request head too large");
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut keep_alive = req.version == Some(1);
    let mut content_length: Option<usize> = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = match value.parse::<usize>() {
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return refuse(400, "invalid Content-Length"),
            };
            if content_length.is_some_and(|c| c != n) {
                return refuse(400, "conflicting Content-Length fields");
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return refuse(
                501,
                "Transfer-Encoding is not supported: send a Content-Length",
            );
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return refuse(417, "only Expect: 100-continue is understood");
            }
            expect_continue = true;
        }
    }
    Parse::Head(Head {
        method,
        path,
        query,
        keep_alive,
        content_length: content_length.unwrap_or(0),
        expect_continue,
        len,
    })
}

/// The reason phrase of the statuses this server sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// The interim response a client sent `Expect: 100-continue` waits for.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends a whole response: status line, `Content-Type`, `Content-Length`, `Connection: close`
/// when the connection ends after it, the `extra` header fields, then `body`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        body.len()
    );
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The JSON body of an error: `{"error": reason}`.
pub fn error_body(reason: &str) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("error".into(), Value::String(reason.into()));
    Value::Object(m).to_string().into_bytes()
}

/// Why a key cannot name an item.
pub fn check_key(key: &[u8]) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if key.len() > KEY_MAX_LEN {
        return Err("key longer than 250 bytes");
    }
    // The same keys the text protocol can name: no spaces or control characters.
    if key.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err("keys may not contain spaces or control characters");
    }
    Ok(())
}

/// The key a `/cache/{key}` path segment names: percent-decoded, checked.
pub fn key_from_segment(segment: &str) -> Result<Vec<u8>, &'static str> {
    let key: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
    check_key(&key)?;
    Ok(key)
}

/// A value as JSON: its text when valid UTF-8, else its base64; with the encoding's name.
pub fn value_json(value: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(value) {
        Ok(s) => (Value::String(s.to_owned()), "utf-8"),
        Err(_) => (Value::String(B64.encode(value)), "base64"),
    }
}

/// A PUT's body, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Seconds to live; 0 = never expires.
    pub ttl: u64,
    /// The client flags memcached clients see.
    pub flags: u32,
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, &'static str> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the body must be a JSON object"),
        Err(_) => Err("the body is not valid JSON"),
    }
}

/// Reads a PUT body: `{"value": ..., "ttl": N, "flags": N, "encoding": "utf-8"|"base64"}`
/// (`value` required).
pub fn parse_put(body: &[u8]) -> Result<Put, &'static str> {
    let obj = parse_object(body)?;
    if obj
        .keys()
        .any(|k| !matches!(k.as_str(), "value" | "ttl" | "flags" | "encoding"))
    {
        return Err("unknown field: only value, ttl, flags and encoding are read");
    }
    let base64 = match obj.get("encoding") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("utf-8") => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("base64") => true,
        Some(_) => return Err("encoding must be \"utf-8\" or \"base64\""),
    };
    let value = match obj.get("value") {
        None => return Err("missing \"value\""),
        Some(Value::String(s)) if base64 => B64
            .decode(s.as_bytes())
            .map_err(|_| "value is not valid base64")?,
        Some(_) if base64 => return Err("a base64 value must be a string"),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        Some(other) => other.to_string().into_bytes(),
    };
    let ttl = match obj.get("ttl") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or("ttl must be a whole number of seconds, 0 or more")?,
    };
    let flags = match obj.get("flags") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|f| u32::try_from(f).ok())
            .ok_or("flags must be a whole number from 0 to 4294967295")?,
    };
    Ok(Put { value, ttl, flags })
}

/// Reads a batch body `{"keys": ["k1", ...]}` (at most `max` keys, each checked).
pub fn parse_batch(body: &[u8], max: usize) -> Result<Vec<String>, &'static str> {
    let obj = parse_object(body)?;
    let Some(Value::Array(keys)) = obj.get("keys") else {
        return Err("the body must be {\"keys\": [...]}");
    };
    if keys.len() > max {
        return Err("too many keys in one batch");
    }
    keys.iter()
        .map(|k| match k {
            Value::String(s) => check_key(s.as_bytes()).map(|()| s.clone()),
            _ => Err("keys must be strings"),
        })
        .collect()
}

/// memcached's exptime for a TTL in seconds at Unix time `now`: 0 (never), the TTL itself
/// where memcached reads it as relative, else the absolute Unix time.
pub fn exptime(ttl: u64, now: u64) -> i64 {
    let at = if ttl <= RELATIVE_MAX {
        ttl
    } else {
        now.saturating_add(ttl)
    };
    i64::try_from(at).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head<'_> {
        match parse_head(raw.as_bytes()) {
            Parse::Head(h) => h,
            other => panic!("not a head: {other:?}"),
        }
    }

    #[test]
    fn heads_frame_by_content_length_and_keep_alive() {
        let h = head("PUT /cache/a%20b?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nbody");
        assert_eq!(h.method, Method::Put);
        assert_eq!(h.path, "/cache/a%20b");
        assert_eq!(h.query, "x=1");
        assert!(h.keep_alive);
        assert_eq!(h.content_length, 12);
        assert_eq!(
            h.len,
            "PUT /cache/a%20b?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n".len()
        );
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(head("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn bad_heads_are_refused_with_their_status() {
        let status = |raw: &[u8]| match parse_head(raw) {
            Parse::Refused(r) => r.status,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(status(b"\x01\x02 / HTTP/1.1\r\n\r\n"), 400);
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(status(&long), 431);
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost"), Parse::Incomplete);
    }

    #[test]
    fn values_round_trip_through_json() {
        let (v, enc) = value_json("héllo".as_bytes());
        assert_eq!((v, enc), (Value::String("héllo".into()), "utf-8"));
        let (v, enc) = value_json(&[0xff, 0, 1]);
        assert_eq!(enc, "base64");
        let body = format!("{{\"value\": {v}, \"encoding\": \"base64\", \"ttl\": 5}}");
        let put = parse_put(body.as_bytes()).unwrap();
        assert_eq!(put.value, vec![0xff, 0, 1]);
        assert_eq!(put.ttl, 5);
        assert_eq!(
            parse_put(br#"{"value": {"a": [1, 2]}}"#).unwrap().value,
            br#"{"a":[1,2]}"#
        );
        assert_eq!(parse_put(br#"{"value": 42}"#).unwrap().value, b"42");
    }

    #[test]
    fn bad_bodies_say_why() {
        assert_eq!(
            parse_put(b"{\"value\": "),
            Err("the body is not valid JSON")
        );
        assert_eq!(parse_put(b"[1]"), Err("the body must be a JSON object"));
        assert_eq!(parse_put(b"{}"), Err("missing \"value\""));
        assert_eq!(
            parse_put(br#"{"value": "!!", "encoding": "base64"}"#),
            Err("value is not valid base64")
        );
        assert!(parse_put(br#"{"value": "a", "ttl": -1}"#).is_err());
        assert!(parse_put(br#"{"value": "a", "flags": 4294967296}"#).is_err());
        assert!(parse_put(br#"{"value": "a", "tll": 5}"#).is_err());
        assert_eq!(
            parse_batch(br#"{"keys": ["a", "b c"]}"#, 10),
            Err("keys may not contain spaces or control characters")
        );
        assert_eq!(
            parse_batch(br#"{"keys": ["a", "b"]}"#, 1),
            Err("too many keys in one batch")
        );
        assert_eq!(
            parse_batch(br#"{"keys": ["a"]}"#, 1).unwrap(),
            vec!["a".to_string()]
        );
    }

    #[test]
    fn keys_are_percent_decoded_and_checked() {
        assert_eq!(key_from_segment("user%3A1").unwrap(), b"user:1");
        assert!(key_from_segment("").is_err());
        assert!(key_from_segment("a%20b").is_err());
        assert!(key_from_segment(&"k".repeat(251)).is_err());
        assert!(key_from_segment(&"k".repeat(250)).is_ok());
    }

    #[test]
    fn long_ttls_become_unix_times() {
        assert_eq!(exptime(0, 1_000), 0);
        assert_eq!(exptime(60, 1_000), 60);
        assert_eq!(
            exptime(RELATIVE_MAX + 1, 1_000),
            (1_000 + RELATIVE_MAX + 1) as i64
        );
    }
}
