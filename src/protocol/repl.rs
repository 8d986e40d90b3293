//! The replication stream between corecached hosts: a one-line text handshake on a normal
//! client connection, then length-prefixed binary frames in both directions. Pure: bytes in,
//! frames out, and back.
//!
//! ```text
//! dialer -> server   repl_hello 1 <from host:port> <cluster digest, 16 hex> <run id, 16 hex> <shard> <shards>\r\n
//! server -> dialer   repl_ok <last applied seq>\r\n        (0: nothing applied from this run and shard)
//!                    SERVER_ERROR repl <reason>\r\n         (then the server closes)
//! then frames:       kind u8 | payload length u32 LE | payload
//! ```
//!
//! Sender -> receiver frames carry the sender's backlog position (`seq`, per sending shard,
//! counting every record of the shard, also those the receiver does not own); a full resync's
//! items carry seq 0. Receiver -> sender: `Ack` of the last position applied. Records are results,
//! not operations (the item's value, flags, absolute expiry and version), so applying one twice
//! changes nothing.

use std::fmt::Write as _;

/// Version of the stream this build speaks.
pub const STREAM_VERSION: u32 = 1;

/// The handshake's command word.
pub const HELLO: &[u8] = b"repl_hello ";

/// Longest handshake line accepted.
pub const MAX_HELLO_LINE: usize = 512;

/// Bytes in front of every frame's payload.
pub const FRAME_HEADER: usize = 5;

/// Longest key (memcached's limit).
const MAX_KEY: usize = 250;

/// A dialer's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Stream version.
    pub version: u32,
    /// The dialing host, as its entry in the cluster list spells it.
    pub from: String,
    /// Digest of the dialer's cluster settings (servers, distribution, replicas).
    pub digest: u64,
    /// Random id of the dialer's run: positions of one run mean nothing in another.
    pub run_id: u64,
    /// The dialing shard.
    pub shard: u32,
    /// The dialer's shard count.
    pub shards: u32,
    /// SASL PLAIN's message (`\0user\0password`) when the receiver asks for authentication
    /// (`-S`); sent hex-encoded as an eighth word.
    pub plain: Option<Vec<u8>>,
}

impl Hello {
    /// The handshake line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut s = String::new();
        let _ = write!(
            s,
            "repl_hello {} {} {:016x} {:016x} {} {}",
            self.version, self.from, self.digest, self.run_id, self.shard, self.shards
        );
        if let Some(plain) = &self.plain {
            s.push(' ');
            for b in plain {
                let _ = write!(s, "{b:02x}");
            }
        }
        s.push_str("\r\n");
        out.extend_from_slice(s.as_bytes());
    }

    /// Parses a handshake at the front of `buf`: `Ok(None)` while the line is incomplete,
    /// else the hello and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Hello, usize)>, String> {
        let Some(end) = memchr::memchr(b'\n', buf) else {
            if buf.len() > MAX_HELLO_LINE {
                return Err("handshake line too long".into());
            }
            return Ok(None);
        };
        if end > MAX_HELLO_LINE {
            return Err("handshake line too long".into());
        }
        let line = std::str::from_utf8(&buf[..end])
            .map_err(|_| "handshake is not text".to_string())?
            .trim_end_matches('\r');
        let words: Vec<&str> = line.split(' ').collect();
        let (fixed, plain) = match words.len() {
            8 => (&words[..7], Some(words[7])),
            _ => (&words[..], None),
        };
        let &[cmd, version, from, digest, run_id, shard, shards] = fixed else {
            return Err(format!("handshake needs 7 or 8 words, got {}", words.len()));
        };
        if cmd.as_bytes() != &HELLO[..HELLO.len() - 1] {
            return Err("not a handshake".into());
        }
        let num = |w: &str, what: &str| {
            w.parse::<u32>()
                .map_err(|_| format!("bad {what} {w:?} in handshake"))
        };
        let hex = |w: &str, what: &str| {
            if w.len() != 16 {
                return Err(format!("bad {what} {w:?} in handshake"));
            }
            u64::from_str_radix(w, 16).map_err(|_| format!("bad {what} {w:?} in handshake"))
        };
        let hello = Hello {
            version: num(version, "version")?,
            from: from.to_string(),
            digest: hex(digest, "digest")?,
            run_id: hex(run_id, "run id")?,
            shard: num(shard, "shard")?,
            shards: num(shards, "shard count")?,
            plain: match plain {
                None => None,
                Some(w) => Some(unhex(w).ok_or("bad credentials in handshake")?),
            },
        };
        if hello.shards == 0 || hello.shard >= hello.shards {
            return Err(format!(
                "shard {} of {} in handshake",
                hello.shard, hello.shards
            ));
        }
        Ok(Some((hello, end + 1)))
    }
}

fn unhex(word: &str) -> Option<Vec<u8>> {
    if !word.len().is_multiple_of(2) {
        return None;
    }
    (0..word.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(word.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The server's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloReply {
    /// Accepted; the last position applied from this dialer's run and shard (0: none).
    Ok(u64),
    /// Refused, with the reason.
    Refused(String),
}

impl HelloReply {
    /// The reply line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            HelloReply::Ok(seq) => out.extend_from_slice(format!("repl_ok {seq}\r\n").as_bytes()),
            HelloReply::Refused(why) => {
                // One line whatever the reason says.
                let why: String = why.chars().map(|c| if c < ' ' { ' ' } else { c }).collect();
                out.extend_from_slice(format!("SERVER_ERROR repl {why}\r\n").as_bytes())
            }
        }
    }

    /// Parses a reply line at the front of `buf` (`Ok(None)`: incomplete).
    pub fn decode(buf: &[u8]) -> Result<Option<(HelloReply, usize)>, String> {
        let Some(end) = memchr::memchr(b'\n', buf) else {
            if buf.len() > MAX_HELLO_LINE {
                return Err("reply line too long".into());
            }
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&buf[..end]);
        let line = line.trim_end_matches('\r');
        if let Some(seq) = line.strip_prefix("repl_ok ") {
            let seq = seq
                .parse()
                .map_err(|_| format!("bad position in {line:?}"))?;
            return Ok(Some((HelloReply::Ok(seq), end + 1)));
        }
        if let Some(why) = line.strip_prefix("SERVER_ERROR repl ") {
            return Ok(Some((HelloReply::Refused(why.to_string()), end + 1)));
        }
        Err(format!("unexpected reply {line:?}"))
    }
}

/// One frame of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A key's live state.
    Item {
        seq: u64,
        version: u64,
        flags: u32,
        /// Absolute unix seconds, 0 = never.
        exptime: u64,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// A key was deleted at `version`.
    Tombstone {
        seq: u64,
        version: u64,
        key: &'a [u8],
    },
    /// The item of `version` now expires at `exptime` (touch, gat).
    Touch {
        seq: u64,
        version: u64,
        exptime: u64,
        key: &'a [u8],
    },
    /// `flush_all`, effective at unix second `at` (0: at once).
    Flush { seq: u64, at: u64 },
    /// A full resync starts; the stream goes on from `seq` after it.
    FullStart { seq: u64 },
    /// The full resync is complete.
    FullEnd { seq: u64 },
    /// Nothing for the receiver up to `seq`; the sender's clock is at `version`.
    Heartbeat { seq: u64, version: u64 },
    /// Receiver -> sender: everything up to `seq` is applied.
    Ack { seq: u64 },
}

const ITEM: u8 = 1;
const TOMBSTONE: u8 = 2;
const TOUCH: u8 = 3;
const FLUSH: u8 = 4;
const FULL_START: u8 = 5;
const FULL_END: u8 = 6;
const HEARTBEAT: u8 = 7;
const ACK: u8 = 16;

/// Why a stream cannot go on (the connection is closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn put_key(out: &mut Vec<u8>, key: &[u8]) {
    debug_assert!(key.len() <= MAX_KEY);
    out.push(key.len() as u8);
    out.extend_from_slice(key);
}

impl Frame<'_> {
    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        let kind = match *self {
            Frame::Item {
                seq,
                version,
                flags,
                exptime,
                key,
                value,
            } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&flags.to_le_bytes());
                out.extend_from_slice(&exptime.to_le_bytes());
                put_key(out, key);
                out.extend_from_slice(value);
                ITEM
            }
            Frame::Tombstone { seq, version, key } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                put_key(out, key);
                TOMBSTONE
            }
            Frame::Touch {
                seq,
                version,
                exptime,
                key,
            } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&exptime.to_le_bytes());
                put_key(out, key);
                TOUCH
            }
            Frame::Flush { seq, at } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
                FLUSH
            }
            Frame::FullStart { seq } => {
                out.extend_from_slice(&seq.to_le_bytes());
                FULL_START
            }
            Frame::FullEnd { seq } => {
                out.extend_from_slice(&seq.to_le_bytes());
                FULL_END
            }
            Frame::Heartbeat { seq, version } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                HEARTBEAT
            }
            Frame::Ack { seq } => {
                out.extend_from_slice(&seq.to_le_bytes());
                ACK
            }
        };
        let len = (out.len() - start - FRAME_HEADER) as u32;
        out[start] = kind;
        out[start + 1..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    }

    /// The backlog position the frame carries.
    pub fn seq(&self) -> u64 {
        match *self {
            Frame::Item { seq, .. }
            | Frame::Tombstone { seq, .. }
            | Frame::Touch { seq, .. }
            | Frame::Flush { seq, .. }
            | Frame::FullStart { seq }
            | Frame::FullEnd { seq }
            | Frame::Heartbeat { seq, .. }
            | Frame::Ack { seq } => seq,
        }
    }

    /// Decodes the frame at the front of `buf`: `Ok(None)` while incomplete, else the frame and
    /// the bytes it took. A payload over `max_payload` (checked from the header, before it is
    /// buffered) or any malformed field is an error.
    pub fn decode(
        buf: &[u8],
        max_payload: usize,
    ) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
        if buf.len() < FRAME_HEADER {
            return Ok(None);
        }
        let kind = buf[0];
        let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > max_payload {
            return Err(FrameError(format!(
                "frame of {len} bytes exceeds {max_payload}"
            )));
        }
        if buf.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        let mut r = Reader {
            buf: &buf[FRAME_HEADER..FRAME_HEADER + len],
        };
        let frame = match kind {
            ITEM => Frame::Item {
                seq: r.u64()?,
                version: r.u64()?,
                flags: r.u32()?,
                exptime: r.u64()?,
                key: r.key()?,
                value: r.rest(),
            },
            TOMBSTONE => Frame::Tombstone {
                seq: r.u64()?,
                version: r.u64()?,
                key: r.key()?,
            },
            TOUCH => Frame::Touch {
                seq: r.u64()?,
                version: r.u64()?,
                exptime: r.u64()?,
                key: r.key()?,
            },
            FLUSH => Frame::Flush {
                seq: r.u64()?,
                at: r.u64()?,
            },
            FULL_START => Frame::FullStart { seq: r.u64()? },
            FULL_END => Frame::FullEnd { seq: r.u64()? },
            HEARTBEAT => Frame::Heartbeat {
                seq: r.u64()?,
                version: r.u64()?,
            },
            ACK => Frame::Ack { seq: r.u64()? },
            k => return Err(FrameError(format!("unknown frame kind {k}"))),
        };
        // Every field read in order (struct fields are evaluated as written); nothing may follow.
        r.end()?;
        if let Frame::Item { version: 0, .. }
        | Frame::Tombstone { version: 0, .. }
        | Frame::Touch { version: 0, .. } = frame
        {
            return Err(FrameError("record with version 0".into()));
        }
        Ok(Some((frame, FRAME_HEADER + len)))
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError("frame shorter than its fields".into()));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn key(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.take(1)?[0] as usize;
        if len == 0 {
            return Err(FrameError("empty key".into()));
        }
        let key = self.take(len)?;
        if key.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(FrameError("key with a space or control byte".into()));
        }
        Ok(key)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn end(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError("frame longer than its fields".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame<'static>> {
        vec![
            Frame::Item {
                seq: 7,
                version: 99,
                flags: 0xdead_beef,
                exptime: 1_800_000_000,
                key: b"key:1",
                value: b"the value\r\n",
            },
            Frame::Item {
                seq: 0,
                version: 1,
                flags: 0,
                exptime: 0,
                key: b"k",
                value: b"",
            },
            Frame::Tombstone {
                seq: 8,
                version: 100,
                key: b"gone",
            },
            Frame::Touch {
                seq: 9,
                version: 99,
                exptime: 5,
                key: b"key:1",
            },
            Frame::Flush { seq: 10, at: 0 },
            Frame::FullStart { seq: 11 },
            Frame::FullEnd { seq: 11 },
            Frame::Heartbeat {
                seq: 12,
                version: 1 << 50,
            },
            Frame::Ack { seq: 12 },
        ]
    }

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let frames = all_frames();
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < wire.len() {
            // Every strict prefix of a frame is incomplete, never an error.
            let (f, used) = Frame::decode(&wire[pos..], 1 << 20).unwrap().unwrap();
            for cut in 0..used {
                assert_eq!(Frame::decode(&wire[pos..pos + cut], 1 << 20), Ok(None));
            }
            got.push(f);
            pos += used;
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut big = Vec::new();
        Frame::Item {
            seq: 1,
            version: 1,
            flags: 0,
            exptime: 0,
            key: b"k",
            value: &[b'x'; 100],
        }
        .encode(&mut big);
        assert!(Frame::decode(&big, 50).is_err(), "payload over the limit");
        assert!(
            Frame::decode(&[42, 0, 0, 0, 0], 10).is_err(),
            "unknown kind"
        );
        // An ack with a short payload.
        assert!(Frame::decode(&[ACK, 4, 0, 0, 0, 1, 2, 3, 4], 10).is_err());
        // A tombstone with trailing bytes.
        let mut t = Vec::new();
        Frame::Tombstone {
            seq: 1,
            version: 2,
            key: b"k",
        }
        .encode(&mut t);
        t.push(0);
        t[1] += 1;
        assert!(Frame::decode(&t, 100).is_err());
        // Version 0, an empty key, a key with a space.
        let mut z = Vec::new();
        Frame::Tombstone {
            seq: 1,
            version: 0,
            key: b"k",
        }
        .encode(&mut z);
        assert!(Frame::decode(&z, 100).is_err());
        let mut e = vec![TOMBSTONE, 17, 0, 0, 0];
        e.extend_from_slice(&[0; 16]);
        e.push(0);
        assert!(Frame::decode(&e, 100).is_err());
        let mut s = Vec::new();
        Frame::Tombstone {
            seq: 1,
            version: 3,
            key: b"a b",
        }
        .encode(&mut s);
        assert!(Frame::decode(&s, 100).is_err());
    }

    #[test]
    fn hello_round_trips_and_refuses_garbage() {
        let h = Hello {
            version: STREAM_VERSION,
            from: "127.0.0.1:11211".into(),
            digest: 0x0123_4567_89ab_cdef,
            run_id: 42,
            shard: 1,
            shards: 4,
            plain: None,
        };
        let mut line = Vec::new();
        h.encode(&mut line);
        assert!(line.starts_with(HELLO));
        assert_eq!(Hello::decode(&line), Ok(Some((h.clone(), line.len()))));
        assert_eq!(Hello::decode(&line[..line.len() - 1]), Ok(None));
        let with_plain = Hello {
            plain: Some(b"\0peer\0pw \xff".to_vec()),
            ..h.clone()
        };
        let mut line = Vec::new();
        with_plain.encode(&mut line);
        assert_eq!(Hello::decode(&line), Ok(Some((with_plain, line.len()))));
        assert!(
            Hello::decode(b"repl_hello 1 a 0123456789abcdef 0000000000000001 0 1 0g\r\n").is_err()
        );
        assert!(
            Hello::decode(b"repl_hello 1 a 0123456789abcdef 0000000000000001 0 1 012\r\n").is_err()
        );
        for bad in [
            &b"repl_hello 1 a\r\n"[..],
            b"repl_hello x a 0123456789abcdef 0000000000000001 0 1\r\n",
            b"repl_hello 1 a 0123 0000000000000001 0 1\r\n",
            b"repl_hello 1 a 0123456789abcdef 0000000000000001 2 2\r\n",
            b"repl_hello 1 a 0123456789abcdef 0000000000000001 0 0\r\n",
            b"repl_hellx 1 a 0123456789abcdef 0000000000000001 0 1\r\n",
        ] {
            assert!(
                Hello::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Hello::decode(&[b'x'; MAX_HELLO_LINE + 1]).is_err());
        for r in [
            HelloReply::Ok(0),
            HelloReply::Ok(77),
            HelloReply::Refused("no\nway".into()),
        ] {
            let mut l = Vec::new();
            r.encode(&mut l);
            let (got, used) = HelloReply::decode(&l).unwrap().unwrap();
            assert_eq!(used, l.len());
            match (&r, got) {
                (HelloReply::Refused(_), HelloReply::Refused(w)) => assert_eq!(w, "no way"),
                (a, b) => assert_eq!(*a, b),
            }
        }
        assert!(HelloReply::decode(b"ERROR\r\n").is_err());
    }
}
