//! Hot keys (`stats hotkeys`, `/metrics`): under a Zipf 1.2 load the 10 keys reported hottest are
//! the 10 keys the generator sent most often, counted by the generator itself. The generator is
//! mcbench's own (its Zipf sampler and PRNG, included from tools/mcbench).

mod common;

#[allow(dead_code)]
#[path = "../tools/mcbench/rng.rs"]
mod rng;
#[allow(dead_code)]
#[path = "../tools/mcbench/zipf.rs"]
mod zipf;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Server;

/// Keys in the space, requests in all, connections sending them, requests per write.
const KEYS: u64 = 1_000;
const REQUESTS: usize = 1_000_000;
const CONNS: usize = 4;
const PIPELINE: usize = 200;

/// Sends `REQUESTS / CONNS` Zipf-chosen gets on one connection; returns the count per rank.
fn load(addr: SocketAddr, seed: u64, deadline: Instant) -> HashMap<u64, u64> {
    let z = zipf::Zipf::new(KEYS, 1.2).unwrap();
    let mut rng = rng::Rng::new(seed);
    let mut counts = HashMap::new();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < REQUESTS / CONNS {
        assert!(Instant::now() < deadline, "the load did not finish in time");
        let mut req = Vec::with_capacity(PIPELINE * 16);
        for _ in 0..PIPELINE {
            let rank = z.sample(&mut rng);
            *counts.entry(rank).or_insert(0) += 1;
            req.extend_from_slice(format!("get hk:{rank}\r\n").as_bytes());
        }
        s.write_all(&req).unwrap();
        // Every key misses: each answer is one END line.
        let mut ends = 0;
        let mut tail = Vec::new();
        while ends < PIPELINE {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "server closed the connection");
            tail.extend_from_slice(&buf[..n]);
            ends += tail.windows(5).filter(|w| w == b"END\r\n").count();
            let keep = tail.len().min(4);
            tail.drain(..tail.len() - keep);
        }
        sent += PIPELINE;
    }
    counts
}

fn stats(addr: SocketAddr, group: &str) -> Vec<(String, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("stats {group}\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"END\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut w = l.splitn(3, ' ');
            (w.next() == Some("STAT"))
                .then(|| (w.next().unwrap().into(), w.next().unwrap_or("").into()))
        })
        .collect()
}

#[test]
fn the_ten_hottest_zipf_keys_are_the_ten_reported() {
    let server = Server::start(&[
        "-t",
        "2",
        "--hotkeys-sample",
        "4",
        "--http-listen",
        "127.0.0.1:0",
    ]);
    let addr = server.addr();
    let deadline = Instant::now() + Duration::from_secs(180);
    let workers: Vec<_> = (0..CONNS as u64)
        .map(|i| std::thread::spawn(move || load(addr, 0x5eed + i, deadline)))
        .collect();
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for w in workers {
        for (rank, n) in w.join().unwrap() {
            *counts.entry(rank).or_insert(0) += n;
        }
    }
    let mut by_count: Vec<(u64, u64)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut want: Vec<String> = by_count[..10]
        .iter()
        .map(|(r, _)| format!("hk:{r}"))
        .collect();
    want.sort();

    let st = stats(addr, "hotkeys");
    assert_eq!(st[0], ("hotkeys_sample_every".to_string(), "4".to_string()));
    let get = |name: String| {
        st.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {st:?}"))
    };
    let mut got: Vec<String> = (1..=10).map(|i| get(format!("hotkey:{i}:key"))).collect();
    got.sort();
    assert_eq!(got, want, "generator's top 20: {:?}", &by_count[..20]);
    // The estimate of the hottest is near its true count (sampling 1 in 4).
    let top = get("hotkey:1:key".into());
    let estimated: f64 = get("hotkey:1:requests".into()).parse().unwrap();
    let real = by_count
        .iter()
        .find(|(r, _)| format!("hk:{r}") == top)
        .unwrap()
        .1 as f64;
    assert!(
        (estimated - real).abs() < real * 0.05,
        "{top}: {estimated} vs {real}"
    );

    // The same keys in /metrics.
    let http = server
        .addrs()
        .iter()
        .find_map(|a| a.strip_prefix("http:"))
        .unwrap()
        .to_string();
    let mut s = TcpStream::connect(&http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.contains(&format!(
            "corecached_hot_key_requests{{key=\"{top}\"}} {estimated}"
        )),
        "{text}"
    );
}
