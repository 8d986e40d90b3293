//! Meta commands against the real server; expected replies copied from memcached 1.6.18 given the
//! same bytes (CAS values are checked for consistency instead of copied).

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn exchange(s: &mut TcpStream, send: &str, expect: &str) {
    s.write_all(send.as_bytes()).unwrap();
    let mut got = vec![0; expect.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("reply to {send:?}: {e}"));
    assert_eq!(String::from_utf8_lossy(&got), expect, "reply to {send:?}");
}

const CASES: &[(&str, &str)] = &[
    ("ms foo 2 T0 F5\r\nhi\r\nmg foo v f t s k O123 h l\r\nmg foo h l t\r\nmg missing v k O9\r\nmg missing v k O9 q\r\nmn\r\n",
     "HD\r\nVA 2 f5 t-1 s2 kfoo O123 h0 l0\r\nhi\r\nHD h1 l0 t-1\r\nEN kmissing O9\r\nMN\r\n"),
    ("ms foo 2 T0\r\nhi\r\nms foo 2 q\r\nhi\r\nms foo 2 MA k O1 q\r\nhi\r\nms foo 2 C1 O2\r\nhi\r\nms foo 2 ME\r\nhi\r\nms foo 2 MX\r\nhi\r\nmg foo v\r\n",
     "HD\r\nEX O2\r\nNS\r\nCLIENT_ERROR invalid mode for ms M token\r\nVA 4\r\nhihi\r\n"),
    ("ms foo 2\r\nhi\r\nmd foo q\r\nmd foo O5 k\r\nmd foo q\r\nmn\r\nma cnt\r\nma cnt N0 J10 v\r\nma cnt MD D3 v k O7\r\nma cnt MI D1\r\nma cnt q\r\nmn\r\n",
     "HD\r\nNF O5 kfoo\r\nNF\r\nMN\r\nNF\r\nVA 2\r\n10\r\nVA 1 kcnt O7\r\n7\r\nHD\r\nMN\r\n"),
    ("mg Zm9v b v k\r\nms Zm9v 1 b k\r\nx\r\nmg foo v\r\nmg ! b v\r\nme nothere\r\nmg\r\nms foo\r\nms foo abc\r\nmg foo zz\r\nmg foo Oaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa v\r\n",
     "EN kZm9v b\r\nHD kZm9v b\r\nVA 1\r\nx\r\nCLIENT_ERROR error decoding key\r\nEN\r\nERROR\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR opaque token too long\r\n"),
    ("ms foo 2\r\nhi\r\nmg foo Tabc v\r\nmg foo v v\r\nmg foo Nabc\r\nmg foo P L u v\r\nmg foo T-1 v\r\nmg foo v\r\nmn\r\n",
     "HD\r\nCLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR duplicate flag\r\nCLIENT_ERROR bad token in command line format\r\nVA 2\r\nhi\r\nVA 2\r\nhi\r\nEN\r\nMN\r\n"),
    ("ms foo 2 Fabc\r\nhi\r\nms foo 2 Tabc\r\nhi\r\nms foo 2 Cabc\r\nhi\r\nms foo 2 F1 F2\r\nhi\r\nms foo 2 v\r\nhi\r\nms foo 2 t s f\r\nhi\r\nmn\r\n",
     "CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR duplicate flag\r\nHD\r\nHD\r\nMN\r\n"),
    ("ms foo 2\r\nhi\r\nma foo Jabc\r\nma foo Dabc\r\nmd foo Cabc\r\nmd foo x\r\nma foo v v\r\nmd foo v\r\nmn\r\n",
     "HD\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\nHD\r\nMN\r\n"),
    ("me\r\nmn foo\r\nms foo -1\r\nms foo 4294967297\r\nx\r\nms foo 3\r\nhi\r\nmn\r\n",
     "CLIENT_ERROR bad command line format\r\nMN\r\nCLIENT_ERROR bad command line format\r\nHD\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\n"),
    ("ms foo 2 S2\r\nhi\r\nms foo 2 MS\r\nhi\r\nms foo 2 MP\r\nhi\r\nmg foo v\r\nms newk 2 MR\r\nhi\r\nms newk 2 ME T0\r\nhi\r\nmd nope q\r\nmg k2 E5 v\r\n",
     "CLIENT_ERROR invalid flag\r\nHD\r\nHD\r\nVA 4\r\nhihi\r\nNS\r\nHD\r\nNF\r\nCLIENT_ERROR invalid flag\r\n"),
    ("ms foo 2 T100\r\nhi\r\nmg foo t v T50\r\nmg foo t\r\nset n 0 0 1\r\n5\r\nma n v MD D9\r\nma n q v\r\nma n MD q\r\nma foo\r\nmn\r\n",
     "HD\r\nVA 2 t100\r\nhi\r\nHD t50\r\nSTORED\r\nVA 1\r\n0\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nMN\r\n"),
];

#[test]
fn meta_commands_answer_as_memcached() {
    let server = Server::start(&["-t", "2"]);
    for (send, expect) in CASES {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        exchange(&mut s, "flush_all\r\n", "OK\r\n");
        exchange(&mut s, send, expect);
    }
}

#[test]
fn meta_cas_round_trips_and_oversized_sets_are_swallowed() {
    let server = Server::start(&["-t", "4"]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ms k 2 c\r\nhi\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).to_string();
    let cas: u64 = line
        .trim_end()
        .strip_prefix("HD c")
        .unwrap()
        .parse()
        .unwrap();
    exchange(&mut s, "mg k c v\r\n", &format!("VA 2 c{cas}\r\nhi\r\n"));
    exchange(&mut s, &format!("ms k 2 C{}\r\nzz\r\n", cas + 1), "EX\r\n");
    exchange(&mut s, &format!("md k C{cas} q\r\nmg k v\r\n"), "EN\r\n");
    let big = format!("ms big 2000000 T0\r\n{}\r\nmn\r\n", "x".repeat(2_000_000));
    exchange(
        &mut s,
        &big,
        "SERVER_ERROR object too large for cache\r\nMN\r\n",
    );
    let me = "ms dbg 3\r\nabc\r\nme dbg\r\n";
    s.write_all(me.as_bytes()).unwrap();
    let mut reply = Vec::new();
    while reply.iter().filter(|&&b| b == b'\n').count() < 2 {
        let n = s.read(&mut buf).unwrap();
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(reply).unwrap();
    assert!(text.starts_with("HD\r\nME dbg exp=-1 la=0 cas="), "{text}");
    assert!(
        text.contains(" fetch=no cls=") && text.contains(" size="),
        "{text}"
    );
}

#[test]
fn quiet_meta_pipeline_across_shards_answers_only_misses_and_the_noop() {
    let server = Server::start(&["-t", "4"]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = String::new();
    for i in 0..100 {
        req += &format!("ms key{i} 1 q\r\n{}\r\n", i % 10);
    }
    req += "mn\r\n";
    exchange(&mut s, &req, "MN\r\n");
    let mut req = String::new();
    let mut expect = String::new();
    for i in 0..100 {
        req += &format!("mg key{i} v k q O{i}\r\nmg absent{i} v q k\r\n");
        expect += &format!("VA 1 kkey{i} O{i}\r\n{}\r\n", i % 10);
    }
    req += "mn\r\n";
    expect += "MN\r\n";
    exchange(&mut s, &req, &expect);
}
