//! Meta commands against the real server; expected replies copied from memcached 1.6.18 given the
//! same bytes (CAS values are checked for consistency instead of copied).

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends `send` and reads as many lines as `expect` has. A remaining-TTL token (`t<N>`) may read one
/// less than expected: a second boundary can pass between the set and the read.
fn exchange(s: &mut TcpStream, send: &str, expect: &str) {
    s.write_all(send.as_bytes()).unwrap();
    let lines = expect.matches("\r\n").count();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while got.windows(2).filter(|w| w == b"\r\n").count() < lines {
        s.read_exact(&mut byte).unwrap_or_else(|e| {
            panic!(
                "reply to {send:?}: {e} after {:?}",
                String::from_utf8_lossy(&got)
            )
        });
        got.push(byte[0]);
    }
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(
        same_but_a_second(&got, expect),
        "reply to {send:?}: got {got:?}, expected {expect:?}"
    );
}

fn same_but_a_second(got: &str, expect: &str) -> bool {
    let tokens = |text: &str| {
        text.split([' ', '\r', '\n'])
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (got, expect) = (tokens(got), tokens(expect));
    let ttl = |token: &str| token.strip_prefix('t').and_then(|n| n.parse::<i64>().ok());
    got.len() == expect.len()
        && got.iter().zip(&expect).all(|(g, e)| {
            g == e || matches!((ttl(g), ttl(e)), (Some(g), Some(e)) if e > 0 && g == e - 1)
        })
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
    ("ms foo 2 S2\r\nhi\r\nms foo 2 MS\r\nhi\r\nms foo 2 MP\r\nhi\r\nmg foo v\r\nms newk 2 MR\r\nhi\r\nms newk 2 ME T0\r\nhi\r\nmd nope q\r\nmg k2 E0 v\r\n",
     "CLIENT_ERROR invalid flag\r\nHD\r\nHD\r\nVA 4\r\nhihi\r\nNS\r\nHD\r\nNF\r\nCLIENT_ERROR bad token in command line format\r\n"),
    ("ms foo 2 T100\r\nhi\r\nmg foo t v T50\r\nmg foo t\r\nset n 0 0 1\r\n5\r\nma n v MD D9\r\nma n q v\r\nma n MD q\r\nma foo\r\nmn\r\n",
     "HD\r\nVA 2 t100\r\nhi\r\nHD t50\r\nSTORED\r\nVA 1\r\n0\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nMN\r\n"),
    // Flags in order: t after T reports the touched TTL, t before T the old one.
    ("ms gk 4 T100\r\nooom\r\nmg gk s v T300 t\r\nmg gk t T50\r\nmg gk t\r\nmg nope t T5\r\nms never 1\r\nx\r\nmg never T0 t\r\n",
     "HD\r\nVA 4 s4 t300\r\nooom\r\nHD t300\r\nHD t50\r\nEN\r\nHD\r\nHD t-1\r\n"),
    // u: the read leaves the fetched mark alone (the next read still reports h0).
    ("ms noupdate 3 T100\r\nhit\r\nmg noupdate s u h\r\nmg noupdate s h\r\nmg noupdate s u h\r\nmg noupdate s h\r\n",
     "HD\r\nHD s3 h0\r\nHD s3 h0\r\nHD s3 h1\r\nHD s3 h1\r\n"),
    // mg parses C (as a number, once) and ignores it.
    ("set ck 0 0 1\r\nx\r\nmg ck v C1\r\nmg ck v Cabc\r\nmg ck v C1 C2\r\n",
     "STORED\r\nVA 1\r\nx\r\nCLIENT_ERROR bad token in command line format\r\nCLIENT_ERROR duplicate flag\r\n"),
    // A set with C0 compares with 0 (never stores, never creates); an append with C0 does not.
    ("set moo 0 0 1\r\nx\r\nms moo 1 C0\r\nz\r\nms nokey2 1 C0\r\nz\r\nms moo 1 C0 MA\r\nz\r\nmg moo v\r\nmg nokey2 v\r\n",
     "STORED\r\nEX\r\nNF\r\nHD\r\nVA 2\r\nxz\r\nEN\r\n"),
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

/// Stampede protection: each request and its reply copied from memcached 1.6.18 (CAS values
/// left out of the requests, since the numbers differ).
const STAMPEDE: &[(&str, &str)] = &[
    // N: the first client wins the empty placeholder, later ones see Z; the winner's set clears it.
    ("mg a N30 v t s\r\nmg a N30 v t s\r\nmg a v\r\nms a 2 T60\r\nhi\r\nmg a v t\r\nmn\r\n",
     "VA 0 t30 s0 W\r\n\r\nVA 0 t30 s0 Z\r\n\r\nVA 0 Z\r\n\r\nHD\r\nVA 2 t60\r\nhi\r\nMN\r\n"),
    // R: a TTL below the token wins once (strictly below), then Z.
    ("ms b 2 T100\r\nhi\r\nmg b R30 v t\r\nmg b R200 v t\r\nmg b R200 v t\r\nmg b v\r\nmn\r\n",
     "HD\r\nVA 2 t100\r\nhi\r\nVA 2 t100 W\r\nhi\r\nVA 2 t100 Z\r\nhi\r\nVA 2 Z\r\nhi\r\nMN\r\n"),
    // md I T: stale with a new TTL, X W to the first reader, Z X after; a plain set clears it.
    ("ms c 2 T100\r\nhi\r\nmd c I T30\r\nmg c v t\r\nmg c v t\r\nmg c v\r\nms c 2\r\nyo\r\nmg c v t\r\nmn\r\n",
     "HD\r\nHD\r\nVA 2 t30 X W\r\nhi\r\nVA 2 t30 Z X\r\nhi\r\nVA 2 Z X\r\nhi\r\nHD\r\nVA 2 t-1\r\nyo\r\nMN\r\n"),
    // ms I with an older CAS stores the value but keeps it stale (and the token handed out).
    ("ms d 2 T0\r\nhi\r\nmd d I\r\nmg d t v\r\nms d 2 I C1\r\nxx\r\nmg d v\r\nmn\r\n",
     "HD\r\nHD\r\nVA 2 t-1 X W\r\nhi\r\nHD\r\nVA 2 Z X\r\nxx\r\nMN\r\n"),
    // q never hides a vivified hit; only the miss without N is a miss.
    ("mg x N30\r\nmg x N30 k O1\r\nmg x2 N30 q\r\nmg x2 q k\r\nmg y v\r\nmg y N0 s t v\r\nmn\r\n",
     "HD W\r\nHD kx O1 Z\r\nHD W\r\nHD kx2 Z\r\nEN\r\nVA 0 s0 t-1 W\r\n\r\nMN\r\n"),
    // ms I on a fresh item with an older CAS: stale, TTL kept; a newer CAS is EX; failures echo c0.
    ("ms e 2 T100\r\nhi\r\nms e 2 I C1\r\nzz\r\nmg e v t\r\nms e 2 I C99999999999 c\r\nqq\r\nms e 2 C99999999999 c k\r\nqq\r\nms nope 2 C1 c\r\nzz\r\nms e 2 ME c\r\nzz\r\nmn\r\n",
     "HD\r\nHD\r\nVA 2 t100 X W\r\nzz\r\nEX c0\r\nEX c0 ke\r\nNF c0\r\nNS c0\r\nMN\r\n"),
    // md I re-arms the win even after a token went out; T-1 expires it; a missing key is NF.
    ("ms f 2 T100\r\nhi\r\nmg f R200\r\nmd f I\r\nmg f\r\nmg f\r\nmd f I q\r\nmg f t\r\nmd f I T-1\r\nmg f\r\nmd zz I\r\nmn\r\n",
     "HD\r\nHD W\r\nHD\r\nHD X W\r\nHD Z X\r\nHD t100 X W\r\nHD\r\nEN\r\nNF\r\nMN\r\n"),
    // ma t / T: T sets the TTL on a hit and on creation (over N's), t reports it.
    ("ma n N0 J5 T30 t v\r\nma n t v\r\nma n T99 t\r\nma n t v\r\nma n2 N50 J1 t\r\nma n2 t\r\nma n3 N50 J1 T20 t\r\nma n4 N0 J1 t\r\nma n4 t v T0\r\nmn\r\n",
     "VA 1 t30\r\n5\r\nVA 1 t30\r\n6\r\nHD t99\r\nVA 1 t99\r\n8\r\nHD t50\r\nHD t50\r\nHD t20\r\nHD t-1\r\nVA 1 t-1\r\n2\r\nMN\r\n"),
    // N and R on a stale hit change nothing; a failed ma leaves the marks.
    ("ms st 2 T100\r\nhi\r\nmd st I\r\nmg st N30 v\r\nmg st R500 v\r\nma st\r\nmn\r\n",
     "HD\r\nHD\r\nVA 2 X W\r\nhi\r\nVA 2 Z X\r\nhi\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nMN\r\n"),
    // An in-place incr keeps the stale mark; an append makes a fresh item.
    ("ms st2 1 T100\r\n5\r\nmd st2 I\r\nma st2 v\r\nmg st2 v\r\nms st2 1 MA\r\n6\r\nmg st2 v\r\nmn\r\n",
     "HD\r\nHD\r\nVA 1\r\n6\r\nVA 1 X W\r\n6\r\nHD\r\nVA 2\r\n66\r\nMN\r\n"),
    // Items that never expire are never recache candidates; md I T0 keeps "never".
    ("ms v1 2 T0\r\nhi\r\nmg v1 R30 v t\r\nmg v1 N30 R30 t\r\nmd v1 I T0\r\nmg v1 t\r\nmn\r\n",
     "HD\r\nVA 2 t-1\r\nhi\r\nHD t-1\r\nHD\r\nHD t-1 X W\r\nMN\r\n"),
    // N with T: the placeholder takes T's TTL.
    ("mg vq N30 q v\r\nmg vq k q\r\nmd vq\r\nmg vq N30 T10 t\r\nmg vq t\r\nmn\r\n",
     "VA 0 W\r\n\r\nHD kvq Z\r\nHD\r\nHD t10 W\r\nHD t10 Z\r\nMN\r\n"),
    // md accepts c but does not echo it; md I with a wrong CAS is EX.
    ("ms h 2\r\nhi\r\nmd h c k\r\nms h 2\r\nhi\r\nmd h I c k\r\nmg h\r\nmd h I C1\r\nmd h I q k\r\nmn\r\n",
     "HD\r\nHD kh\r\nHD\r\nHD kh\r\nHD X W\r\nEX\r\nMN\r\n"),
];

#[test]
fn stampede_protection_answers_as_memcached() {
    let server = Server::start(&["-t", "2"]);
    for (send, expect) in STAMPEDE {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        exchange(&mut s, "flush_all\r\n", "OK\r\n");
        exchange(&mut s, send, expect);
    }
}

/// Reads one reply line.
fn line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        s.read_exact(&mut b).unwrap();
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn two_clients_stampede_and_the_winner_recaches_with_its_cas() {
    let server = Server::start(&["-t", "4"]);
    let mut a = TcpStream::connect(server.addr()).unwrap();
    let mut b = TcpStream::connect(server.addr()).unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    a.write_all(b"mg hot N30 c\r\n").unwrap();
    let won = line(&mut a);
    assert!(won.starts_with("HD c") && won.ends_with(" W\r\n"), "{won}");
    let cas: u64 = won[4..won.len() - 4].parse().unwrap();
    exchange(&mut b, "mg hot N30 v\r\n", "VA 0 Z\r\n\r\n");
    // The winner stores with its CAS; everyone then sees the fresh value without marks.
    exchange(&mut a, &format!("ms hot 3 C{cas} T60\r\nnew\r\n"), "HD\r\n");
    exchange(&mut b, "mg hot v\r\n", "VA 3\r\nnew\r\n");
    // Invalidate: the next reader (b) wins, a gets Z X; b's late set with the old CAS under I
    // stays stale, its matching set clears it.
    exchange(&mut a, "md hot I\r\n", "HD\r\n");
    b.write_all(b"mg hot c v\r\n").unwrap();
    let hit = line(&mut b);
    assert!(hit.ends_with(" X W\r\n"), "{hit}");
    let stale_cas: u64 = hit[6..hit.len() - 6].parse().unwrap();
    line(&mut b);
    exchange(&mut a, "mg hot v\r\n", "VA 3 Z X\r\nnew\r\n");
    exchange(
        &mut b,
        &format!("ms hot 3 C{stale_cas}\r\nnow\r\nmg hot v\r\n"),
        "HD\r\nVA 3\r\nnow\r\n",
    );
}

#[test]
fn explicit_cas_e_sets_the_cas_of_ms_md_ma_and_vivified_mg() {
    let server = Server::start(&["-t", "4"]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    exchange(
        &mut s,
        "ms k 2 E500 c\r\nhi\r\nmg k c v\r\n",
        "HD c500\r\nVA 2 c500\r\nhi\r\n",
    );
    exchange(&mut s, "ms k 2 C500 E600 c\r\nho\r\n", "HD c600\r\n");
    exchange(&mut s, "ms k 2 C500\r\nxx\r\n", "EX\r\n");
    exchange(&mut s, "md k I E700\r\nmg k c\r\n", "HD\r\nHD c700 X W\r\n");
    exchange(
        &mut s,
        "ma n N0 J1 E42 c v\r\nma n E43 c\r\n",
        "VA 1 c42\r\n1\r\nHD c43\r\n",
    );
    exchange(
        &mut s,
        "mg p N0 E77 c\r\nmg p c\r\n",
        "HD c77 W\r\nHD c77 Z\r\n",
    );
    exchange(
        &mut s,
        "ms k 2 E0\r\nhi\r\nmn\r\n",
        "CLIENT_ERROR bad token in command line format\r\nMN\r\n",
    );
    // A flush removes explicit-CAS items like any other.
    exchange(
        &mut s,
        "flush_all\r\nmg k v\r\nmg n v\r\n",
        "OK\r\nEN\r\nEN\r\n",
    );
}

#[test]
fn meta_get_hits_and_misses_are_counted_as_memcached_does() {
    let server = Server::start(&["-t", "2"]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // memcached 1.6.18: cmd_get 6, get_hits 5 (vivified placeholders count as hits), get_misses 1.
    exchange(
        &mut s,
        "mg x N30\r\nmg x N30 k O1\r\nmg x2 N30 q\r\nmg x2 q k\r\nmg y v\r\nmg y N0 s t v\r\nmn\r\n",
        "HD W\r\nHD kx O1 Z\r\nHD W\r\nHD kx2 Z\r\nEN\r\nVA 0 s0 t-1 W\r\n\r\nMN\r\n",
    );
    s.write_all(b"stats\r\n").unwrap();
    let mut stats = String::new();
    while !stats.ends_with("END\r\n") {
        stats += &line(&mut s);
    }
    for want in [
        "STAT cmd_get 6\r\n",
        "STAT get_hits 5\r\n",
        "STAT get_misses 1\r\n",
    ] {
        assert!(stats.contains(want), "{want} in {stats}");
    }
}
