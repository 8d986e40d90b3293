//! Eviction through the protocol: keys kept hot only by rewrites (append, incr, cas) survive a
//! flood of cold sets that evicts twice the memory, under the default policy (S3-FIFO) and LRU,
//! while the cold keys of the first rounds go (the bad-day probe's "20 of 20 hot keys gone").
//! A small working set fits at many shards (memory is not stranded in per-class pages).

mod common;

use common::Server;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

struct Text {
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Text {
    fn connect(server: &Server) -> Text {
        let s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Text {
            out: s.try_clone().unwrap(),
            input: BufReader::new(s),
        }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.input.read_line(&mut l).unwrap();
        l
    }

    /// Sends `req`, reads `replies` lines.
    fn pipeline(&mut self, req: &[u8], replies: usize) -> Vec<String> {
        self.out.write_all(req).unwrap();
        (0..replies).map(|_| self.line()).collect()
    }

    /// `gets key`: the CAS, or None on a miss.
    fn cas_of(&mut self, key: &str) -> Option<u64> {
        self.out
            .write_all(format!("gets {key}\r\n").as_bytes())
            .unwrap();
        let head = self.line();
        if head == "END\r\n" {
            return None;
        }
        let cas = head.split_whitespace().nth(4)?.parse().ok();
        self.line();
        assert_eq!(self.line(), "END\r\n");
        cas
    }

    fn has(&mut self, key: &str) -> bool {
        self.out
            .write_all(format!("mg {key}\r\n").as_bytes())
            .unwrap();
        self.line() == "HD\r\n"
    }

    fn stat(&mut self, name: &str) -> u64 {
        self.out.write_all(b"stats\r\n").unwrap();
        let mut value = None;
        loop {
            let l = self.line();
            if l == "END\r\n" {
                break;
            }
            let mut w = l.split_whitespace();
            if w.nth(1) == Some(name) {
                value = w.next().and_then(|v| v.parse().ok());
            }
        }
        value.unwrap_or_else(|| panic!("no stat {name}"))
    }
}

fn rewritten_keys_survive(policy: &str) {
    let server = Server::start(&["-t", "1", "-m", "16", "--eviction", policy]);
    let mut c = Text::connect(&server);
    let cold_value = vec![b'c'; 1000];
    let mut cold = 0usize;
    for i in 0..20 {
        let mut req = Vec::new();
        req.extend_from_slice(format!("set app{i} 0 0 1\r\na\r\n").as_bytes());
        req.extend_from_slice(format!("set cnt{i} 0 0 1\r\n0\r\n").as_bytes());
        req.extend_from_slice(format!("set cas{i} 0 0 1\r\nx\r\n").as_bytes());
        assert!(c.pipeline(&req, 3).iter().all(|l| l == "STORED\r\n"));
    }
    for _round in 0..40 {
        // Every hot key rewritten once a round, never read.
        let mut req = Vec::new();
        for i in 0..20 {
            req.extend_from_slice(format!("append app{i} 0 0 1\r\na\r\n").as_bytes());
            req.extend_from_slice(format!("incr cnt{i} 1\r\n").as_bytes());
        }
        let replies = c.pipeline(&req, 40);
        for (i, r) in replies.iter().enumerate() {
            assert_ne!(r, "NOT_STORED\r\n", "{policy}: hot key {i} gone");
            assert_ne!(r, "NOT_FOUND\r\n", "{policy}: hot counter {} gone", i / 2);
        }
        for i in 0..20 {
            let key = format!("cas{i}");
            let cas = c
                .cas_of(&key)
                .unwrap_or_else(|| panic!("{policy}: {key} gone"));
            let r = c.pipeline(format!("cas {key} 0 0 1 {cas}\r\ny\r\n").as_bytes(), 1);
            assert_eq!(r[0], "STORED\r\n");
        }
        // 1,000 cold sets of 1 KB a round: 40 rounds write 2.5 times the memory.
        let mut req = Vec::new();
        for _ in 0..1000 {
            req.extend_from_slice(format!("set cold{cold} 0 0 1000 noreply\r\n").as_bytes());
            req.extend_from_slice(&cold_value);
            req.extend_from_slice(b"\r\n");
            cold += 1;
        }
        c.out.write_all(&req).unwrap();
    }
    let evictions = c.stat("evictions");
    assert!(evictions > 16_000, "{policy}: {evictions} evictions");
    for i in 0..20 {
        for key in [format!("app{i}"), format!("cnt{i}"), format!("cas{i}")] {
            assert!(c.has(&key), "{policy}: {key} was evicted");
        }
    }
    let first_round_kept = (0..1000).filter(|i| c.has(&format!("cold{i}"))).count();
    // LFU evicts the least frequent of a random sample (as Redis does): among equally cold
    // items the sample leaves a share of old ones behind by chance; the queue policies do not.
    let bound = if policy == "lfu" { 250 } else { 100 };
    assert!(
        first_round_kept < bound,
        "{policy}: {first_round_kept} of the first round's cold keys kept"
    );
}

#[test]
fn rewritten_keys_survive_under_the_default_s3fifo() {
    rewritten_keys_survive("s3fifo");
}

#[test]
fn rewritten_keys_survive_under_lru() {
    rewritten_keys_survive("lru");
}

#[test]
fn rewritten_keys_survive_under_lfu() {
    rewritten_keys_survive("lfu");
}

/// `-m 64` over `-t 16` leaves each shard 4 MiB: a working set of 5,000 keys of 0–800 bytes
/// (3 % of memory, a dozen slab classes per shard) must fit without a single eviction.
#[test]
fn a_small_working_set_fits_at_many_shards() {
    let server = Server::start(&["-t", "16", "-m", "64"]);
    let mut c = Text::connect(&server);
    let mut req = Vec::new();
    for i in 0..5000usize {
        let len = (i * 7919) % 801;
        req.extend_from_slice(format!("set ws{i} 0 0 {len} noreply\r\n").as_bytes());
        req.extend(std::iter::repeat_n(b'w', len));
        req.extend_from_slice(b"\r\n");
    }
    c.out.write_all(&req).unwrap();
    assert_eq!(c.stat("evictions"), 0);
    let missing = (0..5000).filter(|i| !c.has(&format!("ws{i}"))).count();
    assert_eq!(missing, 0, "{missing} of 5,000 keys missing");
    assert_eq!(c.stat("curr_items"), 5000);
}
