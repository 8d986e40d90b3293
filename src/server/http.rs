//! The HTTP face (`--http-listen`): one HTTP/1.1 connection on the core that accepted it, like a
//! memcached connection (same loop, same accept round-robin, no thread pool of its own).
//!
//! Requests are read and answered one after another (pipelined requests wait in the read
//! buffer, answers go out in order); keep-alive unless the client asks otherwise. Limits: a head
//! of [`MAX_HEAD`](crate::protocol::http::MAX_HEAD) bytes, a body of the largest item in base64 plus 64 KiB, `--http-timeout`
//! seconds idle between requests and to send one whole request (slow clients are answered 408
//! and closed), and [`net::Conn::send`]'s back-pressure: a client that does not read its answers
//! is not read either.
//!
//! The key API runs through the same path as memcached's commands: each key's request goes to
//! its owner shard by [`Batch::route`] (directly under the owner's lock, or by mail) and the
//! outcomes come back through [`gather`] in request order, so counters, `watch`, replication
//! and limits are the protocols' own.

use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use log::debug;
use serde_json::{Map, Value};

use crate::net;
use crate::protocol::http::{self, Head, Method, Parse, Refusal, CONTINUE};
use crate::protocol::{Codec, Command, Decode, GetMeta, Limits, Outcome, StoreMode};

use super::router::{gather, Batch, Core, Request};

/// Keys one `POST /cache/batch` may ask for.
pub const MAX_BATCH_KEYS: usize = 1024;
/// Bytes of values one batch answer collects; hits beyond it are reported, not sent.
const MAX_BATCH_VALUES: usize = 16 * 1024 * 1024;
/// How long `/health` waits for every shard to answer.
const HEALTH_WAIT: Duration = Duration::from_secs(1);

/// JSON's content type.
const JSON: &str = "application/json";

/// Serves one HTTP connection until the client leaves, a refused request, a timeout or a stop.
pub async fn serve(core: Rc<Core>, conn: net::Conn) {
    let mut c = HttpConn {
        core,
        conn,
        rbuf: Vec::new(),
        out: Vec::new(),
    };
    if let Err(e) = c.run().await {
        debug!("HTTP connection {} ended: {e}", c.conn.peer());
    }
}

struct HttpConn {
    core: Rc<Core>,
    conn: net::Conn,
    rbuf: Vec<u8>,
    out: Vec<u8>,
}

/// One answer: status, content type, body.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            content_type: JSON,
            body: body.to_string().into_bytes(),
        }
    }

    fn error(status: u16, reason: &str) -> Answer {
        Answer {
            status,
            content_type: JSON,
            body: http::error_body(reason),
        }
    }
}

impl HttpConn {
    /// Receives more bytes within `limit`; `Ok(false)` when the peer left, the server stops,
    /// or the time ran out.
    async fn fill(&mut self, limit: Duration) -> io::Result<bool> {
        let before = self.rbuf.len();
        match net::timeout(limit, self.conn.recv(&mut self.rbuf)).await {
            None => Ok(false),
            Some(r) => {
                let got = r?;
                self.core.counters().http_bytes_read += (self.rbuf.len() - before) as u64;
                Ok(got)
            }
        }
    }

    async fn respond(&mut self, a: Answer, keep_alive: bool) -> io::Result<()> {
        {
            let mut c = self.core.counters();
            match a.status {
                ..=399 => c.http_2xx += 1,
                400..=499 => c.http_4xx += 1,
                _ => c.http_5xx += 1,
            }
        }
        let no_store = [("Cache-Control", "no-store")];
        http::write_response(
            &mut self.out,
            a.status,
            a.content_type,
            &no_store,
            &a.body,
            keep_alive,
        );
        self.core.counters().http_bytes_written += self.out.len() as u64;
        self.send().await
    }

    /// Hands `out` over, waiting while too much is unsent; a client that takes nothing for
    /// `--http-timeout` is given up.
    async fn send(&mut self) -> io::Result<()> {
        let limit = self.core.shared.config().http_timeout;
        match net::timeout(limit, self.conn.send(&mut self.out)).await {
            Some(r) => r,
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no output in time",
            )),
        }
    }

    async fn run(&mut self) -> io::Result<()> {
        let timeout = self.core.shared.config().http_timeout;
        let max_body = self.core.limits.max_item_size / 3 * 4 + 64 * 1024;
        loop {
            // The next head: what is buffered, else wait for more (idle between requests, or a
            // request that has started and must finish in time).
            let head = loop {
                match http::parse_head(&self.rbuf) {
                    Parse::Head(h) => break OwnedHead::from(&h),
                    Parse::Refused(Refusal { status, reason }) => {
                        self.respond(Answer::error(status, reason), false).await?;
                        return Ok(());
                    }
                    Parse::Incomplete => {
                        let started = !self.rbuf.is_empty();
                        if !self.fill(timeout).await? {
                            if started && !self.conn.stopping() {
                                let a = Answer::error(408, "request not completed in time");
                                // Best effort: the client may be gone.
                                let _ = self.respond(a, false).await;
                            }
                            return Ok(());
                        }
                    }
                }
            };
            if head.content_length > max_body {
                let a = Answer::error(413, "request body larger than any acceptable value");
                self.respond(a, false).await?;
                return Ok(());
            }
            let total = head.len + head.content_length;
            if self.rbuf.len() < total && head.expect_continue {
                self.out.extend_from_slice(CONTINUE);
                self.send().await?;
            }
            while self.rbuf.len() < total {
                if !self.fill(timeout).await? {
                    if !self.conn.stopping() {
                        let a = Answer::error(408, "request body not completed in time");
                        let _ = self.respond(a, false).await;
                    }
                    return Ok(());
                }
            }
            let answer = {
                let body = &self.rbuf[head.len..total];
                handle(&self.core, &self.conn, &head, body).await?
            };
            self.rbuf.drain(..total);
            let keep_alive = head.keep_alive && !self.conn.stopping();
            self.respond(answer, keep_alive).await?;
            if !keep_alive {
                return Ok(());
            }
        }
    }
}

/// A head detached from the read buffer (so the buffer can grow while its body arrives).
struct OwnedHead {
    method: Method,
    path: String,
    keep_alive: bool,
    content_length: usize,
    expect_continue: bool,
    len: usize,
}

impl From<&Head<'_>> for OwnedHead {
    fn from(h: &Head<'_>) -> OwnedHead {
        OwnedHead {
            method: h.method,
            path: h.path.to_owned(),
            keep_alive: h.keep_alive,
            content_length: h.content_length,
            expect_continue: h.expect_continue,
            len: h.len,
        }
    }
}

fn not_allowed(allow: &str) -> Answer {
    Answer::error(405, &format!("method not allowed here; allowed: {allow}"))
}

async fn handle(
    core: &Core,
    conn: &net::Conn,
    head: &OwnedHead,
    body: &[u8],
) -> io::Result<Answer> {
    let path = head.path.as_str();
    Ok(match (path, head.method) {
        ("/health", Method::Get) => health(core).await,
        ("/health", _) => not_allowed("GET"),
        ("/metrics", Method::Get) => Answer {
            status: 200,
            content_type: super::metrics::CONTENT_TYPE,
            body: super::metrics::exposition(core).await.into_bytes(),
        },
        ("/metrics", _) => not_allowed("GET"),
        ("/cache/batch", Method::Post) => batch(core, conn, body).await?,
        _ => match path.strip_prefix("/cache/") {
            Some(segment) => match head.method {
                Method::Get | Method::Put | Method::Delete => {
                    key_request(core, conn, head.method, segment, body).await?
                }
                _ => not_allowed("GET, PUT, DELETE"),
            },
            None => Answer::error(404, "no such endpoint"),
        },
    })
}

/// `GET /health`: 200 while every shard answers and this member serves; 503 while it drains,
/// catches up from its peers, or a shard does not answer within [`HEALTH_WAIT`].
async fn health(core: &Core) -> Answer {
    let shared = &core.shared;
    let status = |code: u16, s: &str| {
        let mut m = Map::new();
        m.insert("status".into(), Value::String(s.into()));
        m.insert("shards".into(), Value::from(core.shards));
        Answer::json(code, Value::Object(m))
    };
    if shared.stopping() {
        return status(503, "draining");
    }
    if shared.repl.as_ref().is_some_and(|r| !r.is_ready()) {
        return status(503, "catching_up");
    }
    if shared.all_shards().count() < core.shards {
        return status(503, "starting");
    }
    // A round trip through every shard: a stuck core fails the probe.
    match net::timeout(HEALTH_WAIT, core.fan_out(|| Request::Ping)).await {
        Some(_) => status(200, "serving"),
        None => status(503, "shard_not_answering"),
    }
}

/// What a key request's outcome became, values copied out.
enum Got {
    Item {
        flags: u32,
        cas: u64,
        /// Seconds left; -1 never expires.
        ttl: i64,
        value: Vec<u8>,
    },
    Stored {
        cas: u64,
    },
    Deleted,
    NotFound,
    TooLarge,
    NoMemory,
    Unavailable,
    /// A batch answer already holds [`MAX_BATCH_VALUES`] bytes of values.
    Skipped,
    Failed,
}

/// The encoder [`gather`] hands outcomes to: it keeps them, in request order.
#[derive(Default)]
struct Collect {
    got: Vec<Got>,
    value_bytes: usize,
}

impl Codec for Collect {
    type Ctx = ();

    fn decode<'a>(&mut self, _buf: &'a [u8], _limits: &Limits) -> Decode<'a, ()> {
        Decode::Close
    }

    fn encode(&mut self, _out: &mut Vec<u8>, _ctx: &(), _key: &[u8], outcome: &Outcome<&[u8]>) {
        let got = match outcome {
            Outcome::Item {
                flags,
                cas,
                value,
                meta,
            } => {
                if self.value_bytes + value.len() > MAX_BATCH_VALUES {
                    Got::Skipped
                } else {
                    self.value_bytes += value.len();
                    Got::Item {
                        flags: *flags,
                        cas: *cas,
                        ttl: meta.ttl,
                        value: value.to_vec(),
                    }
                }
            }
            Outcome::Stored { cas } => Got::Stored { cas: *cas },
            Outcome::Deleted => Got::Deleted,
            Outcome::NotFound | Outcome::NotStored | Outcome::Exists => Got::NotFound,
            Outcome::TooLarge => Got::TooLarge,
            Outcome::OutOfMemory => Got::NoMemory,
            Outcome::Unavailable => Got::Unavailable,
            _ => Got::Failed,
        };
        self.got.push(got);
    }
}

/// Runs `commands` on their owners, in order, and returns their outcomes.
async fn run(core: &Core, conn: &net::Conn, commands: Vec<Command<&[u8]>>) -> io::Result<Vec<Got>> {
    let mut codec = Collect::default();
    let mut b = Batch::new(core.shards, conn.raw_fd());
    for cmd in commands {
        let key = cmd.key().copied().unwrap_or_default();
        b.route(core, cmd, key, Some(()));
    }
    let mut out = Vec::new();
    gather(core, &mut codec, b, conn, &mut out).await?;
    Ok(codec.got)
}

fn get_command(key: &[u8]) -> Command<&[u8]> {
    Command::Get {
        key,
        touch: None,
        // A meta get: the reply carries the item's TTL.
        meta: Some(GetMeta {
            value: true,
            ..GetMeta::default()
        }),
    }
}

/// A hit as JSON: value, encoding, flags, CAS, TTL (`null`: never expires).
fn item_json(key: Option<&[u8]>, flags: u32, cas: u64, ttl: i64, value: &[u8]) -> Value {
    let mut m = Map::new();
    if let Some(key) = key {
        m.insert(
            "key".into(),
            Value::String(String::from_utf8_lossy(key).into_owned()),
        );
    }
    let (v, encoding) = http::value_json(value);
    m.insert("value".into(), v);
    m.insert("encoding".into(), Value::String(encoding.into()));
    m.insert("flags".into(), Value::from(flags));
    m.insert("cas".into(), Value::from(cas));
    m.insert(
        "ttl".into(),
        if ttl < 0 {
            Value::Null
        } else {
            Value::from(ttl)
        },
    );
    Value::Object(m)
}

fn failure(got: &Got) -> Answer {
    match got {
        Got::NotFound => Answer::error(404, "not found"),
        Got::TooLarge => Answer::error(413, "value too large for an item"),
        Got::NoMemory => Answer::error(507, "out of memory storing the value"),
        Got::Unavailable => Answer::error(503, "catching up from peers"),
        _ => Answer::error(500, "unexpected outcome"),
    }
}

fn catching_up(core: &Core) -> bool {
    core.shared.repl.as_ref().is_some_and(|r| !r.is_ready())
}

/// `GET|PUT|DELETE /cache/{key}`.
async fn key_request(
    core: &Core,
    conn: &net::Conn,
    method: Method,
    segment: &str,
    body: &[u8],
) -> io::Result<Answer> {
    let key = match http::key_from_segment(segment) {
        Ok(k) => k,
        Err(why) => return Ok(Answer::error(400, why)),
    };
    if catching_up(core) {
        return Ok(failure(&Got::Unavailable));
    }
    let put;
    let command = match method {
        Method::Get => get_command(&key),
        Method::Delete => Command::Delete {
            key: &key[..],
            cas: 0,
        },
        _ => {
            put = match http::parse_put(body) {
                Ok(p) => p,
                Err(why) => return Ok(Answer::error(400, why)),
            };
            if put.value.len() > core.limits.max_item_size {
                return Ok(failure(&Got::TooLarge));
            }
            Command::Store {
                mode: StoreMode::Set,
                key: &key[..],
                value: &put.value[..],
                flags: put.flags,
                exptime: http::exptime(put.ttl, super::stats::unix_now()),
                cas: 0,
                meta: None,
            }
        }
    };
    let got = run(core, conn, vec![command]).await?;
    let Some(got) = got.into_iter().next() else {
        return Ok(Answer::error(500, "no outcome"));
    };
    Ok(match got {
        Got::Item {
            flags,
            cas,
            ttl,
            value,
        } => Answer::json(200, item_json(Some(&key), flags, cas, ttl, &value)),
        Got::Stored { cas } => {
            let mut m = Map::new();
            m.insert("stored".into(), Value::Bool(true));
            m.insert("cas".into(), Value::from(cas));
            Answer::json(200, Value::Object(m))
        }
        Got::Deleted => {
            let mut m = Map::new();
            m.insert("deleted".into(), Value::Bool(true));
            Answer::json(200, Value::Object(m))
        }
        other => failure(&other),
    })
}

/// `POST /cache/batch` with `{"keys": [...]}`: `{"values": {key: item...}, "missing": [...]}`
/// (and `"skipped"`: hits left out beyond [`MAX_BATCH_VALUES`] bytes of values).
async fn batch(core: &Core, conn: &net::Conn, body: &[u8]) -> io::Result<Answer> {
    let keys = match http::parse_batch(body, MAX_BATCH_KEYS) {
        Ok(k) => k,
        Err(why) => return Ok(Answer::error(400, why)),
    };
    if catching_up(core) {
        return Ok(failure(&Got::Unavailable));
    }
    let commands = keys.iter().map(|k| get_command(k.as_bytes())).collect();
    let got = run(core, conn, commands).await?;
    let mut values = Map::new();
    let mut missing = Vec::new();
    let mut skipped = Vec::new();
    for (key, got) in keys.iter().zip(got) {
        match got {
            Got::Item {
                flags,
                cas,
                ttl,
                value,
            } => {
                values.insert(key.clone(), item_json(None, flags, cas, ttl, &value));
            }
            Got::Skipped => skipped.push(Value::String(key.clone())),
            Got::Unavailable => return Ok(failure(&Got::Unavailable)),
            _ => missing.push(Value::String(key.clone())),
        }
    }
    let mut m = Map::new();
    m.insert("values".into(), Value::Object(values));
    m.insert("missing".into(), Value::Array(missing));
    if !skipped.is_empty() {
        m.insert("skipped".into(), Value::Array(skipped));
    }
    Ok(Answer::json(200, Value::Object(m)))
}

/// Open HTTP connections, all shards together.
pub fn open_connections(shared: &super::Shared) -> usize {
    shared.http_connections.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_become_json_with_their_encoding() {
        let v = item_json(Some(b"k"), 3, 9, -1, b"text");
        assert_eq!(
            v.to_string(),
            r#"{"cas":9,"encoding":"utf-8","flags":3,"key":"k","ttl":null,"value":"text"}"#
        );
        let v = item_json(None, 0, 1, 10, &[0xff]);
        assert_eq!(v["encoding"], "base64");
        assert_eq!(v["value"], "/w==");
        assert_eq!(v["ttl"], 10);
    }

    #[test]
    fn batch_answers_stop_collecting_values_at_their_cap() {
        let mut c = Collect::default();
        let big = vec![b'x'; MAX_BATCH_VALUES / 2 + 1];
        let hit = Outcome::Item {
            flags: 0,
            cas: 1,
            value: &big[..],
            meta: Default::default(),
        };
        c.encode(&mut Vec::new(), &(), b"a", &hit);
        c.encode(&mut Vec::new(), &(), b"b", &hit);
        c.encode(&mut Vec::new(), &(), b"c", &Outcome::NotFound);
        assert!(matches!(c.got[0], Got::Item { .. }));
        assert!(matches!(c.got[1], Got::Skipped));
        assert!(matches!(c.got[2], Got::NotFound));
    }
}
