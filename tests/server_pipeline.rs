//! Pipelining, ordering across shards, fragmented requests and concurrent connections.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use common::{arith, get, op, parse_response, status, store, Client, Req, Resp, Server};

/// A tiny model of the expected reply: opaque, opcode, status, value.
type Expect = (u32, u8, u16, Vec<u8>);

/// Builds `n` mixed quiet/non-quiet requests over `keys` keys with a model of their replies.
fn mixed_pipeline(n: u32, keys: u32) -> (Vec<u8>, Vec<Expect>) {
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut bytes = Vec::new();
    let mut expect = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for opaque in 0..n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = format!("key:{}", rng % keys as u64).into_bytes();
        let value = format!("v{opaque}").into_bytes();
        let mut req = match rng % 7 {
            0 | 1 => {
                let quiet = rng.is_multiple_of(2);
                let opcode = if quiet { op::SETQ } else { op::SET };
                model.insert(key.clone(), value.clone());
                if !quiet {
                    expect.push((opaque, opcode, status::OK, Vec::new()));
                }
                store(opcode, &key, &value, 0, 0).encode()
            }
            2 => {
                match model.get(&key) {
                    Some(v) => expect.push((opaque, op::GET, status::OK, v.clone())),
                    None => {
                        expect.push((opaque, op::GET, status::NOT_FOUND, b"Not found".to_vec()))
                    }
                }
                get(op::GET, &key).encode()
            }
            3 | 4 => {
                if let Some(v) = model.get(&key) {
                    expect.push((opaque, op::GETKQ, status::OK, v.clone()));
                }
                get(op::GETKQ, &key).encode()
            }
            5 => {
                let opcode = if rng.is_multiple_of(3) {
                    op::DELETE
                } else {
                    op::DELETEQ
                };
                match model.remove(&key) {
                    Some(_) if opcode == op::DELETE => {
                        expect.push((opaque, opcode, status::OK, Vec::new()))
                    }
                    Some(_) => {}
                    None => expect.push((opaque, opcode, status::NOT_FOUND, b"Not found".to_vec())),
                }
                get(opcode, &key).encode()
            }
            _ => {
                expect.push((opaque, op::NOOP, status::OK, Vec::new()));
                get(op::NOOP, b"").encode()
            }
        };
        req[12..16].copy_from_slice(&opaque.to_be_bytes());
        bytes.extend(req);
    }
    let mut end = get(op::NOOP, b"");
    end.opaque = u32::MAX;
    bytes.extend(end.encode());
    expect.push((u32::MAX, op::NOOP, status::OK, Vec::new()));
    (bytes, expect)
}

/// Writes `bytes` from another thread (replies may outgrow socket buffers) and reads replies
/// until the Noop with opaque u32::MAX.
fn run_pipeline(c: &mut Client, bytes: Vec<u8>) -> Vec<Resp> {
    let mut writer = c.stream.try_clone().unwrap();
    let t = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &bytes).unwrap());
    let mut out = Vec::new();
    loop {
        let r = c.recv();
        let last = r.opcode == op::NOOP && r.opaque == u32::MAX;
        out.push(r);
        if last {
            break;
        }
    }
    t.join().unwrap();
    out
}

fn check_mixed_pipeline(args: &[&str]) {
    let s = Server::start(args);
    let mut c = s.client();
    let (bytes, expect) = mixed_pipeline(5000, 400);
    let got = run_pipeline(&mut c, bytes);
    assert_eq!(got.len(), expect.len());
    for (r, (opaque, opcode, st, value)) in got.iter().zip(&expect) {
        assert_eq!(
            (r.opaque, r.opcode, r.status),
            (*opaque, *opcode, *st),
            "reply {r:?}"
        );
        assert_eq!(&r.value, value, "opaque {opaque}");
    }
    // Every shard holds some of the keys and answers through any connection.
    let mut c2 = s.client();
    assert_eq!(c2.call(&get(op::NOOP, b"")).status, status::OK);
}

#[test]
fn mixed_pipeline_in_order_two_shards() {
    check_mixed_pipeline(&["-t", "2"]);
}

#[test]
fn mixed_pipeline_in_order_four_shards() {
    check_mixed_pipeline(&["-t", "4"]);
}

/// Every request for another shard's key goes by mail.
#[test]
fn mixed_pipeline_in_order_all_by_mail() {
    check_mixed_pipeline(&["-t", "3", "--direct-limit", "0"]);
}

/// Each batch switches from direct execution to mail after 3 requests per owner: a key's
/// later requests must still see its earlier ones.
#[test]
fn mixed_pipeline_in_order_direct_then_mail() {
    check_mixed_pipeline(&["-t", "4", "--direct-limit", "3"]);
}

/// Every request runs on its owner's store from the connection's own core.
#[test]
fn mixed_pipeline_in_order_all_direct() {
    check_mixed_pipeline(&["-t", "4", "--direct-limit", "100000"]);
}

#[test]
fn keys_spread_over_shards_multiget() {
    let s = Server::start(&["-t", "4"]);
    let mut c = s.client();
    let mut bytes = Vec::new();
    for i in 0..2000u32 {
        bytes.extend(store(op::SETQ, format!("m{i}").as_bytes(), &i.to_be_bytes(), i, 0).encode());
    }
    // libmemcached's multi-get: N GetKQ then a Noop; misses silent.
    for i in 0..2500u32 {
        let mut r = get(op::GETKQ, format!("m{i}").as_bytes()).encode();
        r[12..16].copy_from_slice(&i.to_be_bytes());
        bytes.extend(r);
    }
    let mut end = get(op::NOOP, b"");
    end.opaque = u32::MAX;
    bytes.extend(end.encode());
    let got = run_pipeline(&mut c, bytes);
    assert_eq!(got.len(), 2001);
    for (i, r) in got[..2000].iter().enumerate() {
        assert_eq!(r.opaque, i as u32);
        assert_eq!(r.key, format!("m{i}").as_bytes());
        assert_eq!(r.value, (i as u32).to_be_bytes());
        assert_eq!(r.flags(), i as u32);
    }
}

/// A request stream touching every kind of reply; split at every byte boundary.
fn boundary_stream() -> (Vec<u8>, usize) {
    let reqs: Vec<Req> = vec![
        store(op::SET, b"split", b"some value", 3, 0),
        get(op::GETK, b"split"),
        get(op::GETQ, b"split-miss"),
        arith(op::INCR, b"split-n", 1, 5, 0),
        Req {
            opcode: op::APPENDQ,
            key: b"split",
            value: b"+",
            ..Req::default()
        },
        get(op::DELETE, b"split"),
        get(op::NOOP, b""),
    ];
    let mut bytes = Vec::new();
    for r in reqs {
        bytes.extend(r.encode());
    }
    (bytes, 5)
}

#[test]
fn requests_split_at_every_byte() {
    let s = Server::start(&["-t", "2"]);
    let (bytes, replies) = boundary_stream();
    let mut c = s.client();
    let mut reference = Vec::new();
    for cut in 0..=bytes.len() {
        c.call(&get(op::DELETE, b"split-n"));
        // Nodelay: each write leaves as its own segment.
        c.send_raw(&bytes[..cut]);
        c.send_raw(&bytes[cut..]);
        let got: Vec<Resp> = (0..replies).map(|_| c.recv()).collect();
        let shape: Vec<(u8, u16, Vec<u8>, Vec<u8>)> = got
            .iter()
            .map(|r| (r.opcode, r.status, r.key.clone(), r.value.clone()))
            .collect();
        if cut == 0 {
            reference = shape;
            assert_eq!(reference.len(), replies);
            assert_eq!(reference[1].3, b"some value");
            assert_eq!(reference[2].3, 5u64.to_be_bytes());
        } else {
            assert_eq!(shape, reference, "cut at {cut}");
        }
    }
    // And one byte per write.
    c.call(&get(op::DELETE, b"split-n"));
    for b in &bytes {
        c.send_raw(std::slice::from_ref(b));
    }
    for want in &reference {
        let r = c.recv();
        assert_eq!(&(r.opcode, r.status, r.key, r.value), want);
    }
}

#[test]
fn concurrent_connections_see_each_others_writes() {
    let s = Server::start(&["-t", "4"]);
    let addr = s.addr();
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    let workers: Vec<_> = (0..n)
        .map(|w| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..300 {
                    c.set(
                        format!("w{w}:{i}").as_bytes(),
                        format!("{w}-{i}").as_bytes(),
                    );
                }
                barrier.wait();
                for other in 0..n {
                    for i in (0..300).step_by(7) {
                        let v = c.get(format!("w{other}:{i}").as_bytes());
                        assert_eq!(v.unwrap(), format!("{other}-{i}").into_bytes());
                    }
                }
                // Counters shared by everyone.
                for _ in 0..100 {
                    assert_eq!(
                        c.call(&arith(op::INCR, b"shared", 1, 1, 0)).status,
                        status::OK
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut c = s.client();
    let v = c.get(b"shared").unwrap();
    let total: u64 = std::str::from_utf8(&v).unwrap().trim().parse().unwrap();
    // The first incr creates the item with 1; the other n*100-1 add one each.
    assert_eq!(total, (n * 100) as u64);
}

#[test]
fn parse_helper_handles_partial_buffers() {
    // Guards the harness itself: a response split anywhere parses only once complete.
    let mut bytes = vec![
        0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1,
    ];
    bytes.extend_from_slice(b"ok");
    for cut in 0..bytes.len() {
        assert!(parse_response(&bytes[..cut]).is_none());
    }
    let (r, used) = parse_response(&bytes).unwrap();
    assert_eq!((r.value.as_slice(), r.opaque, used), (&b"ok"[..], 9, 26));
}

/// `n` keys with `prefix` that shard `shard` of `shards` owns.
fn keys_on_shard(prefix: &str, shard: usize, shards: usize, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| {
            corecached::server::router::owner(corecached::storage::key_hash(k.as_bytes()), shards)
                == shard
        })
        .take(n)
        .collect()
}

#[test]
fn big_replies_from_many_shards_stay_in_order() {
    // By mail only: an owner's reply past the per-batch cap is deferred and fetched again.
    big_replies_in_order(&["-t", "4", "-vv", "--direct-limit", "0"], true);
}

#[test]
fn big_replies_run_directly_stay_in_order() {
    // Direct execution fills the connection's own reply arena; the batch stops at its cap.
    big_replies_in_order(&["-t", "4", "-vv"], false);
}

fn big_replies_in_order(args: &[&str], expect_deferral: bool) {
    // Order must hold across shards, with writes interleaved between the reads. For each shard
    // in turn, all big values live there: whenever that is not the connection's own shard, its
    // replies come from another core.
    let s = Server::start(args);
    let mut c = s.client();
    let big = |i: usize| vec![b'a' + (i % 26) as u8; 100_000 + i];
    for shard in 0..4 {
        let keys = keys_on_shard(&format!("big{shard}:"), shard, 4, 6);
        for (i, k) in keys.iter().enumerate() {
            c.set(k.as_bytes(), &big(i));
        }
        let mut bytes = Vec::new();
        let mut expect: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut opaque = 0u32;
        for round in 0..4 {
            for (i, k) in keys.iter().enumerate() {
                let mut r = get(op::GET, k.as_bytes());
                r.opaque = opaque;
                bytes.extend(r.encode());
                expect.push((opaque, big(i)));
                let small = format!("small{shard}:{round}:{i}");
                let mut w = store(op::SET, small.as_bytes(), small.as_bytes(), 0, 0);
                w.opaque = opaque + 1;
                bytes.extend(w.encode());
                expect.push((opaque + 1, Vec::new()));
                let mut g = get(op::GET, small.as_bytes());
                g.opaque = opaque + 2;
                bytes.extend(g.encode());
                expect.push((opaque + 2, small.into_bytes()));
                opaque += 3;
            }
        }
        let mut end = get(op::NOOP, b"");
        end.opaque = u32::MAX;
        bytes.extend(end.encode());
        let got = run_pipeline(&mut c, bytes);
        assert_eq!(got.len(), expect.len() + 1);
        for (r, (opaque, value)) in got.iter().zip(&expect) {
            assert_eq!((r.opaque, r.status), (*opaque, status::OK));
            assert!(r.value == *value, "opaque {opaque}: wrong value");
        }
    }
    if expect_deferral {
        let deferred = common::wait_until(std::time::Duration::from_secs(5), || {
            s.log().contains("batch partly deferred")
        });
        assert!(deferred, "the deferral path was not exercised");
    }
}

#[test]
fn slow_reader_gets_mixed_replies_whole_and_in_order() {
    // Replies of very different sizes queue up behind a reader that takes a few KiB at a time:
    // small ones are appended to the last queued output chunk, large ones become chunks of their
    // own, and sends of several chunks end part-way through one. Every byte must still arrive
    // once and in order.
    let s = Server::start(&["-t", "2"]);
    let mut c = s.client();
    let value = |i: usize| {
        let len = match i % 5 {
            0 => 3,
            1 => 40_000,
            2 => 70_000,
            3 => 900,
            _ => 20_000 + i,
        };
        vec![b'A' + (i % 26) as u8; len]
    };
    const KEYS: usize = 40;
    for i in 0..KEYS {
        c.set(format!("mix:{i}").as_bytes(), &value(i));
    }
    let mut bytes = Vec::new();
    let mut expect = Vec::new();
    for n in 0..600u32 {
        let i = (n as usize * 7) % KEYS;
        let key = format!("mix:{i}");
        let mut r = get(op::GET, key.as_bytes());
        r.opaque = n;
        bytes.extend(r.encode());
        expect.push((n, value(i)));
    }
    let mut end = get(op::NOOP, b"");
    end.opaque = u32::MAX;
    bytes.extend(end.encode());

    let mut writer = c.stream.try_clone().unwrap();
    let t = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &bytes).unwrap());
    let mut got = Vec::new();
    let mut replies = Vec::new();
    let mut parsed = 0;
    let mut piece = [0u8; 4096];
    let mut reads = 0u32;
    while replies.last().is_none_or(|r: &Resp| r.opaque != u32::MAX) {
        let n = std::io::Read::read(&mut c.stream, &mut piece).expect("read");
        assert!(n > 0, "server closed the connection");
        got.extend_from_slice(&piece[..n]);
        reads += 1;
        // Slow at first (the server's output queue fills up), then at full speed.
        if reads < 200 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        while let Some((r, used)) = parse_response(&got[parsed..]) {
            parsed += used;
            replies.push(r);
        }
    }
    t.join().unwrap();
    assert_eq!(parsed, got.len(), "bytes after the last reply");
    assert_eq!(replies.len(), expect.len() + 1);
    for (r, (opaque, value)) in replies.iter().zip(&expect) {
        assert_eq!((r.opaque, r.status), (*opaque, status::OK));
        assert!(r.value == *value, "opaque {opaque}: wrong value");
    }
}
