//! Look-aside replay of a trace over the memcached text protocol on one connection.
//!
//! Each request is `get key`; a miss is followed by `set key 0 0 V noreply` with the value. The
//! gets are pipelined in a sliding window of at most `depth` in flight, and a miss's set is
//! written as soon as its reply is read, ahead of the following gets. So the order of requests
//! for different keys within `depth` of each other may differ from a one-at-a-time replay, and a
//! get of a key that was sent before an earlier request's set for that key (a repeat within
//! `depth` of a miss) may miss where it would have hit: such a miss is counted as a hit, sends no
//! set, and is reported (`corrections`) so that the server's get_misses can be corrected; it
//! does not bump the key's recency as the hit would have. `stats` is read at the end of the
//! warm-up (the window drained first) and at the end: the measured part's get_misses / cmd_get
//! are the deltas.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Key bytes: `k` and the id in 11 decimal digits.
pub const KEY_LEN: usize = 12;

/// Writes the key of `id` into `out`.
pub fn key(out: &mut Vec<u8>, id: u64) {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(KEY_LEN);
    write!(s, "k{id:011}").expect("string");
    out.extend_from_slice(s.as_bytes());
}

/// Replay parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// Server.
    pub addr: SocketAddr,
    /// Value bytes of every set.
    pub value_size: usize,
    /// Requests before the measured part.
    pub warmup: u64,
    /// Most gets in flight.
    pub depth: usize,
    /// Requests per window of the per-window miss counts.
    pub window: u64,
    /// Give up after this long.
    pub max_time: Duration,
}

/// What a replay saw.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Requests replayed.
    pub requests: u64,
    /// Misses the client saw in the measured part (corrections excluded).
    pub measured_misses: u64,
    /// Server misses in the measured part that were hits one at a time (see [`replay`]).
    pub measured_corrections: u64,
    /// The same over the whole trace.
    pub corrections_total: u64,
    /// Misses per window of `window` requests, over the whole trace.
    pub window_misses: Vec<u64>,
    /// `stats` at the end of the warm-up (empty if there is none).
    pub stats_before: BTreeMap<String, String>,
    /// `stats` at the end.
    pub stats_after: BTreeMap<String, String>,
    /// Seconds the replay took.
    pub seconds: f64,
}

/// A connection with a read buffer.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    /// Start of unparsed bytes in `buf`.
    pos: usize,
}

impl Conn {
    fn fill(&mut self) -> Result<(), String> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > (1 << 16) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + (1 << 16), 0);
        let n = self.s.read(&mut self.buf[len..]);
        let n = match n {
            Ok(0) => {
                self.buf.truncate(len);
                return Err("server closed the connection".into());
            }
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                return Err(format!("read: {e}"));
            }
        };
        self.buf.truncate(len + n);
        Ok(())
    }

    /// The next line (without CRLF), consumed.
    fn line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = memchr::memmem::find(&self.buf[self.pos..], b"\r\n") {
                let l = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 2;
                return Ok(l);
            }
            self.fill()?;
        }
    }

    fn stats(&mut self, out: &mut Vec<u8>) -> Result<BTreeMap<String, String>, String> {
        out.extend_from_slice(b"stats\r\n");
        self.s.write_all(out).map_err(|e| format!("write: {e}"))?;
        out.clear();
        let mut m = BTreeMap::new();
        loop {
            let l = self.line()?;
            if l == b"END" {
                return Ok(m);
            }
            let l = String::from_utf8_lossy(&l).into_owned();
            let mut w = l.split(' ');
            match (w.next(), w.next(), w.next()) {
                (Some("STAT"), Some(k), Some(v)) => {
                    m.insert(k.to_string(), v.to_string());
                }
                _ => return Err(format!("unexpected reply to stats: {l:?}")),
            }
        }
    }
}

/// Parses one get reply at the front of `buf` without consuming it: `Some((hit, bytes))` when it
/// is complete, `None` when more bytes are needed.
pub fn try_reply(buf: &[u8], value_size: usize) -> Result<Option<(bool, usize)>, String> {
    let Some(i) = memchr::memmem::find(buf, b"\r\n") else {
        return Ok(None);
    };
    let l = &buf[..i];
    if l == b"END" {
        return Ok(Some((false, i + 2)));
    }
    if !l.starts_with(b"VALUE ") {
        return Err(format!(
            "unexpected reply to get: {:?}",
            String::from_utf8_lossy(l)
        ));
    }
    let bytes: usize = std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.split(' ').nth(3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad VALUE line {:?}", String::from_utf8_lossy(l)))?;
    if bytes != value_size {
        return Err(format!("value of {bytes} bytes, expected {value_size}"));
    }
    let total = i + 2 + bytes + 2 + 5;
    if buf.len() < total {
        return Ok(None);
    }
    if &buf[total - 7..total] != b"\r\nEND\r\n" {
        return Err("expected END after a value".into());
    }
    Ok(Some((true, total)))
}

/// A get sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Flight {
    /// Its request's index in the trace.
    at: usize,
    /// Its key.
    id: u64,
    /// An earlier request's set for the same key was sent after this get.
    covered: bool,
}

/// Replays `ids` against `p.addr`.
///
/// A sliding window: at most `depth` gets in flight, the next one sent as soon as a slot is free.
/// Each reply is read as it comes; a miss queues its set, written ahead of the next gets. A get
/// that was already in flight when an earlier request for its key missed cannot see that set:
/// if it misses too, it is counted as the hit a one-at-a-time replay would have had (no second
/// set), and in `corrections`, which the caller subtracts from the server's get_misses.
pub fn replay(ids: &[u64], p: &Params) -> Result<Outcome, String> {
    let s = TcpStream::connect_timeout(&p.addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {}: {e}", p.addr))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut c = Conn {
        s,
        buf: Vec::with_capacity(1 << 17),
        pos: 0,
    };
    let value = vec![b'x'; p.value_size];
    let set_tail = format!(" 0 0 {} noreply\r\n", p.value_size);
    let window = p.window.max(1) as usize;
    let mut out = Outcome {
        requests: ids.len() as u64,
        window_misses: vec![0; ids.len().div_ceil(window)],
        ..Outcome::default()
    };
    let warmup = (p.warmup as usize).min(ids.len());
    let depth = p.depth.max(1);
    let mut wbuf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut inflight: VecDeque<Flight> = VecDeque::with_capacity(depth);
    let t0 = Instant::now();
    let mut next = 0usize;
    let mut warm_done = warmup == 0;
    if warm_done {
        out.stats_before = c.stats(&mut wbuf)?;
    }
    while next < ids.len() || !inflight.is_empty() {
        if t0.elapsed() > p.max_time {
            return Err(format!(
                "replay passed {:?} after {next} of {} requests",
                p.max_time,
                ids.len()
            ));
        }
        while inflight.len() < depth && next < ids.len() && (warm_done || next < warmup) {
            let id = ids[next];
            wbuf.extend_from_slice(b"get ");
            key(&mut wbuf, id);
            wbuf.extend_from_slice(b"\r\n");
            inflight.push_back(Flight {
                at: next,
                id,
                covered: false,
            });
            next += 1;
        }
        if inflight.is_empty() && next == warmup && !warm_done {
            out.stats_before = c.stats(&mut wbuf)?;
            warm_done = true;
            continue;
        }
        if !wbuf.is_empty() {
            c.s.write_all(&wbuf).map_err(|e| format!("write: {e}"))?;
            wbuf.clear();
        }
        // At least one reply, then every one already here.
        let mut got = 0;
        while let Some(&Flight { at, id, covered }) = inflight.front() {
            match try_reply(&c.buf[c.pos..], p.value_size)? {
                Some((hit, n)) => {
                    c.pos += n;
                    inflight.pop_front();
                    got += 1;
                    if !hit && covered {
                        // An earlier request's set for this key went out after this get: one at
                        // a time it would have been a hit.
                        out.corrections_total += 1;
                        if at >= warmup {
                            out.measured_corrections += 1;
                        }
                    } else if !hit {
                        out.window_misses[at / window] += 1;
                        if at >= warmup {
                            out.measured_misses += 1;
                        }
                        for f in inflight.iter_mut().filter(|f| f.id == id) {
                            f.covered = true;
                        }
                        wbuf.extend_from_slice(b"set ");
                        key(&mut wbuf, id);
                        wbuf.extend_from_slice(set_tail.as_bytes());
                        wbuf.extend_from_slice(&value);
                        wbuf.extend_from_slice(b"\r\n");
                    }
                }
                None if got > 0 => break,
                None => c.fill()?,
            }
        }
    }
    if !wbuf.is_empty() {
        c.s.write_all(&wbuf).map_err(|e| format!("write: {e}"))?;
        wbuf.clear();
    }
    out.stats_after = c.stats(&mut wbuf)?;
    out.seconds = t0.elapsed().as_secs_f64();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width() {
        let mut v = Vec::new();
        key(&mut v, 0);
        key(&mut v, 1_234_567);
        assert_eq!(v, b"k00000000000k00001234567");
        assert_eq!(v.len(), 2 * KEY_LEN);
    }

    #[test]
    fn replies_parse_only_when_complete() {
        assert_eq!(try_reply(b"END\r\n", 3), Ok(Some((false, 5))));
        assert_eq!(try_reply(b"EN", 3), Ok(None));
        let hit = b"VALUE k1 0 3\r\nabc\r\nEND\r\nEND\r\n";
        assert_eq!(try_reply(hit, 3), Ok(Some((true, hit.len() - 5))));
        for cut in 0..hit.len() - 5 {
            assert_eq!(try_reply(&hit[..cut], 3), Ok(None), "cut {cut}");
        }
        assert!(try_reply(b"VALUE k1 0 4\r\nabcd\r\nEND\r\n", 3).is_err());
        assert!(try_reply(b"VALUE k1 0 3\r\nabcXXEND\r\n", 3).is_err());
        assert!(try_reply(b"SERVER_ERROR out of memory\r\n", 3).is_err());
    }

    /// A text-protocol server holding every key (no eviction) on a thread, answering gets,
    /// noreply sets and `stats` (cmd_get, get_misses); it reads slowly in small pieces so that
    /// many gets are in flight.
    fn fake_server() -> SocketAddr {
        use std::collections::HashSet;
        use std::io::{BufRead, BufReader};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::with_capacity(64, s);
            let (mut keys, mut gets, mut misses) = (HashSet::new(), 0u64, 0u64);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let words: Vec<String> = line.split_whitespace().map(String::from).collect();
                line.clear();
                match words.first().map(String::as_str) {
                    Some("get") => {
                        gets += 1;
                        if keys.contains(&words[1]) {
                            let reply = format!("VALUE {} 0 3\r\nabc\r\nEND\r\n", words[1]);
                            w.write_all(reply.as_bytes()).unwrap();
                        } else {
                            misses += 1;
                            w.write_all(b"END\r\n").unwrap();
                        }
                    }
                    Some("set") => {
                        let mut v = [0u8; 5];
                        r.read_exact(&mut v).unwrap();
                        keys.insert(words[1].clone());
                    }
                    Some("stats") => {
                        let st =
                            format!("STAT cmd_get {gets}\r\nSTAT get_misses {misses}\r\nEND\r\n");
                        w.write_all(st.as_bytes()).unwrap();
                    }
                    _ => return,
                }
            }
        });
        addr
    }

    #[test]
    fn replay_counts_each_key_one_miss_and_corrects_early_repeats() {
        // No eviction: one at a time, each distinct key misses exactly once.
        let ids: Vec<u64> = (0..3000u64).map(|i| (i * 7919) % 500 + i / 1000).collect();
        let distinct_after = |from: usize| {
            let before: std::collections::HashSet<u64> = ids[..from].iter().copied().collect();
            let after: std::collections::HashSet<u64> = ids[from..].iter().copied().collect();
            after.difference(&before).count() as u64
        };
        let p = Params {
            addr: fake_server(),
            value_size: 3,
            warmup: 1000,
            depth: 32,
            window: 100,
            max_time: Duration::from_secs(60),
        };
        let o = replay(&ids, &p).unwrap();
        assert_eq!(o.measured_misses, distinct_after(1000));
        assert_eq!(o.window_misses.iter().sum::<u64>(), distinct_after(0));
        let stat = |m: &BTreeMap<String, String>, k: &str| m[k].parse::<u64>().unwrap();
        assert_eq!(stat(&o.stats_before, "cmd_get"), 1000);
        assert_eq!(stat(&o.stats_after, "cmd_get"), 3000);
        let server_misses =
            stat(&o.stats_after, "get_misses") - stat(&o.stats_before, "get_misses");
        assert_eq!(server_misses - o.measured_corrections, o.measured_misses);
        // A key repeated right after its first get is in flight at once: corrected.
        let ids = [1u64, 1, 1, 2, 2, 3];
        let p = Params {
            addr: fake_server(),
            warmup: 0,
            ..p
        };
        let o = replay(&ids, &p).unwrap();
        assert_eq!(o.measured_misses, 3);
        assert_eq!(o.window_misses, [3]);
        assert!(o.measured_corrections <= 3);
        let server_misses = stat(&o.stats_after, "get_misses");
        assert_eq!(server_misses, 3 + o.measured_corrections);
    }
}
