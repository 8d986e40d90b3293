//! memcached's UDP port (`-U`): the frame header, one message per response cut into datagrams
//! of at most 1400 bytes, request ids echoed, malformed datagrams dropped, text, meta and binary
//! over UDP, keys owned by other shards, and the stats that count UDP. The framing expectations
//! are Debian's memcached 1.6.18 (`/usr/bin/memcached`) itself: the same datagrams are sent to
//! both servers and the answers compared byte for byte (skipped, saying so, where memcached is
//! not installed; `tools/test-all` installs it).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::external::{free_udp_port, Memcached};
use common::{wait_until, Server};

/// How long a test waits for a datagram before it calls it missing (a bound, not a measure).
const RECV_LIMIT: Duration = Duration::from_secs(5);

/// corecached with `-U` on a free port and `args`; returns it with its UDP address.
fn corecached(args: &[&str]) -> (Server, SocketAddr) {
    for _ in 0..5 {
        let port = free_udp_port().to_string();
        let mut all = vec!["-U", &port];
        all.extend_from_slice(args);
        if let Ok(s) = Server::try_start(&all) {
            let udp = s
                .addrs()
                .iter()
                .find_map(|a| a.strip_prefix("udp:"))
                .unwrap_or_else(|| panic!("no udp address on the readiness line: {:?}", s.addrs()))
                .parse()
                .unwrap();
            return (s, udp);
        }
    }
    panic!("corecached did not start with -U in 5 attempts");
}

/// A UDP client socket with room for long replies.
struct Udp {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Udp {
    fn new(server: SocketAddr) -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(RECV_LIMIT)).unwrap();
        set_rcvbuf(&sock, 8 << 20);
        Udp { sock, server }
    }

    fn send_raw(&self, datagram: &[u8]) {
        self.sock.send_to(datagram, self.server).unwrap();
    }

    fn send(&self, id: u16, payload: &[u8]) {
        self.send_raw(&frame(id, 0, 1, payload));
    }

    /// The next datagram (panics when none comes within the bound).
    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0; 65536];
        let (n, _) = self
            .sock
            .recv_from(&mut buf)
            .expect("a datagram within the bound");
        buf.truncate(n);
        buf
    }

    /// Sends `payload` as request `id`, then a `mn` sentinel (id `id ^ 0xffff`), and returns
    /// every datagram that came before the sentinel's answer: the whole answer to `payload`
    /// when one server thread serves both in order (single-threaded servers).
    fn exchange(&self, id: u16, payload: &[u8]) -> Vec<Vec<u8>> {
        self.exchange_raw(&frame(id, 0, 1, payload), id)
    }

    fn exchange_raw(&self, datagram: &[u8], id: u16) -> Vec<Vec<u8>> {
        let sentinel = id ^ 0xffff;
        self.send_raw(datagram);
        self.send(sentinel, b"mn\r\n");
        let mut got = Vec::new();
        for _ in 0..100_000 {
            let d = self.recv();
            if d == frame(sentinel, 0, 1, b"MN\r\n") {
                return got;
            }
            got.push(d);
        }
        panic!("no sentinel answer");
    }
}

fn set_rcvbuf(sock: &UdpSocket, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: passes a pointer to a live c_int and its exact size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// A datagram: the 8-byte header (id, sequence, count, reserved 0) and `payload`.
fn frame(id: u16, seq: u16, total: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    for v in [id, seq, total, 0] {
        d.extend_from_slice(&v.to_be_bytes());
    }
    d.extend_from_slice(payload);
    d
}

fn header(d: &[u8]) -> (u16, u16, u16, u16) {
    let f = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
    (f(0), f(2), f(4), f(6))
}

/// Text commands over TCP, to set data up.
struct Text {
    stream: BufReader<TcpStream>,
}

impl Text {
    fn connect(addr: SocketAddr) -> Text {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(RECV_LIMIT)).unwrap();
        Text {
            stream: BufReader::new(stream),
        }
    }

    fn line(&mut self, cmd: &[u8]) -> String {
        self.stream.get_mut().write_all(cmd).unwrap();
        let mut l = String::new();
        self.stream.read_line(&mut l).unwrap();
        l
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        let mut cmd = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        cmd.extend_from_slice(value);
        cmd.extend_from_slice(b"\r\n");
        assert_eq!(self.line(&cmd), "STORED\r\n");
    }

    fn stats(&mut self, group: &str) -> BTreeMap<String, String> {
        self.stream
            .get_mut()
            .write_all(format!("stats {group}").trim_end().as_bytes())
            .unwrap();
        self.stream.get_mut().write_all(b"\r\n").unwrap();
        let mut out = BTreeMap::new();
        loop {
            let mut l = String::new();
            self.stream.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l == "END" || l.is_empty() {
                return out;
            }
            let mut parts = l.splitn(3, ' ');
            parts.next();
            let k = parts.next().unwrap_or_default().to_string();
            out.insert(k, parts.next().unwrap_or_default().to_string());
        }
    }
}

/// A binary request header + body.
fn bin(opcode: u8, key: &[u8], extras: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
    let mut d = vec![0x80, opcode];
    d.extend_from_slice(&(key.len() as u16).to_be_bytes());
    d.push(extras.len() as u8);
    d.extend_from_slice(&[0, 0, 0]);
    d.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    d.extend_from_slice(&opaque.to_be_bytes());
    d.extend_from_slice(&[0; 8]);
    d.extend_from_slice(extras);
    d.extend_from_slice(key);
    d.extend_from_slice(value);
    d
}

/// The requests whose answers (every datagram, every byte) must be memcached's.
fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let many: Vec<String> = (0..300).map(|i| format!("k{i:04}")).collect();
    let mut c: Vec<(&'static str, Vec<u8>)> = vec![
        ("set", frame(1, 0, 1, b"set a 0 0 1\r\nA\r\n")),
        ("get hit", frame(2, 0, 1, b"get a\r\n")),
        (
            "get, a miss in the middle",
            frame(3, 0, 1, b"get a nope b\r\n"),
        ),
        ("get, a miss first", frame(4, 0, 1, b"get nope a\r\n")),
        ("get miss", frame(5, 0, 1, b"get nope\r\n")),
        ("get, misses first", frame(6, 0, 1, b"get x1 x2 x3 a\r\n")),
        ("get, misses only", frame(32, 0, 1, b"get x1 x2 x3\r\n")),
        (
            "set, then get",
            frame(33, 0, 1, b"set s 0 0 1\r\nS\r\nget x1 s\r\n"),
        ),
        (
            "noreply, then get",
            frame(34, 0, 1, b"set n 0 0 1 noreply\r\nN\r\nget x1 a\r\n"),
        ),
        ("big value", frame(7, 0, 1, b"get big\r\n")),
        ("big value then small", frame(8, 0, 1, b"get big a\r\n")),
        ("noreply", frame(9, 0, 1, b"set n 0 0 1 noreply\r\nN\r\n")),
        ("noreply incr", frame(10, 0, 1, b"incr c 1 noreply\r\n")),
        ("incr", frame(11, 0, 1, b"incr c 5\r\n")),
        ("delete", frame(12, 0, 1, b"delete n\r\n")),
        ("unknown command", frame(13, 0, 1, b"bogus\r\n")),
        ("text garbage", frame(14, 0, 1, b"\x00\x01\x02\xff\r\n")),
        (
            "key too long",
            frame(15, 0, 1, &[b"get ", &[b'k'; 300][..], b"\r\n"].concat()),
        ),
        ("no newline", frame(16, 0, 1, b"get a")),
        ("verbosity", frame(17, 0, 1, b"verbosity 0\r\n")),
        ("quit", frame(18, 0, 1, b"quit\r\n")),
        ("meta hit", frame(19, 0, 1, b"mg a v\r\n")),
        ("meta miss", frame(35, 0, 1, b"mg nope v\r\n")),
        ("meta quiet miss", frame(36, 0, 1, b"mg nope v q\r\n")),
        ("empty datagram", Vec::new()),
        ("header only", frame(20, 0, 1, b"")),
        ("one payload byte", frame(21, 0, 1, b"\n")),
        ("several datagrams announced", frame(22, 0, 2, b"get a\r\n")),
        ("no datagrams announced", frame(23, 0, 0, b"get a\r\n")),
        ("sequence and reserved ignored", {
            let mut d = frame(24, 5, 1, b"get a\r\n");
            d[7] = 9;
            d
        }),
        ("id 0xfedc echoed", frame(0xfedc, 0, 1, b"get a\r\n")),
        (
            "binary get",
            frame(25, 0, 1, &bin(0x00, b"a", &[], &[], 0xdead)),
        ),
        (
            "binary getq miss, noop",
            frame(
                26,
                0,
                1,
                &[bin(0x09, b"z", &[], &[], 1), bin(0x0a, b"", &[], &[], 2)].concat(),
            ),
        ),
        (
            "binary get hit, getq miss, noop",
            frame(
                37,
                0,
                1,
                &[
                    bin(0x00, b"a", &[], &[], 1),
                    bin(0x09, b"z", &[], &[], 2),
                    bin(0x0a, b"", &[], &[], 3),
                ]
                .concat(),
            ),
        ),
        (
            "binary getq miss twice, noop",
            frame(
                38,
                0,
                1,
                &[
                    bin(0x09, b"y", &[], &[], 1),
                    bin(0x09, b"z", &[], &[], 2),
                    bin(0x0a, b"", &[], &[], 3),
                ]
                .concat(),
            ),
        ),
        (
            "binary getk, get big",
            frame(
                27,
                0,
                1,
                &[bin(0x0c, b"a", &[], &[], 3), bin(0x00, b"big", &[], &[], 4)].concat(),
            ),
        ),
        (
            "binary set, setq, delete",
            frame(
                28,
                0,
                1,
                &[
                    bin(0x01, b"bs", &[0, 0, 0, 7, 0, 0, 0, 0], b"v", 5),
                    bin(0x11, b"bq", &[0, 0, 0, 0, 0, 0, 0, 0], b"w", 6),
                    bin(0x04, b"bq", &[], &[], 7),
                ]
                .concat(),
            ),
        ),
        (
            "binary truncated",
            frame(29, 0, 1, &bin(0x00, b"big", &[], &[], 8)[..25]),
        ),
        (
            "binary unknown opcode",
            frame(30, 0, 1, &bin(0x7e, b"", &[], &[], 9)),
        ),
    ];
    let get_many = format!("get {}\r\n", many.join(" "));
    c.push(("get of 300 keys", frame(31, 0, 1, get_many.as_bytes())));
    c
}

fn setup(text: &mut Text) {
    text.set("b", b"B");
    text.set("c", b"10");
    text.set("big", &[b'x'; 5000]);
    for i in 0..300 {
        text.set(&format!("k{i:04}"), b"0123456789");
    }
}

#[test]
fn datagrams_match_memcached_byte_for_byte() {
    let Some(mc) = Memcached::try_start_with_udp(&["-t", "1"]) else {
        return;
    };
    let (cc, cc_udp) = corecached(&["-t", "1"]);
    setup(&mut Text::connect(mc.addr()));
    setup(&mut Text::connect(cc.addr()));
    let (mu, cu) = (Udp::new(mc.udp_addr()), Udp::new(cc_udp));
    for (name, datagram) in cases() {
        let id = if datagram.len() >= 2 {
            u16::from_be_bytes([datagram[0], datagram[1]])
        } else {
            0x4242
        };
        let want = mu.exchange_raw(&datagram, id);
        let got = cu.exchange_raw(&datagram, id);
        assert_eq!(
            got.len(),
            want.len(),
            "{name}: {} datagrams, memcached sends {}: {:?}",
            got.len(),
            want.len(),
            got.iter()
                .map(|d| String::from_utf8_lossy(d))
                .collect::<Vec<_>>()
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g,
                w,
                "{name}: datagram {i}: {:?} vs memcached's {:?}",
                String::from_utf8_lossy(g),
                String::from_utf8_lossy(w)
            );
        }
    }
    // Every datagram keeps to memcached's size limit.
    let big = cu.exchange(40, b"get big\r\n");
    assert_eq!(big.len(), 4);
    assert!(big.iter().all(|d| d.len() <= 1400));
}

/// Collects the datagrams of `messages` responses to request `id`, each reassembled by its
/// sequence numbers (they may come in any order).
fn messages(u: &Udp, id: u16, messages: usize) -> Vec<Vec<u8>> {
    let mut done = Vec::new();
    let mut partial: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    let mut total = None;
    while done.len() < messages {
        let d = u.recv();
        let (rid, seq, count, reserved) = header(&d);
        assert_eq!((rid, reserved), (id, 0), "header {:?}", header(&d));
        if count <= 1 {
            assert_eq!(seq, 0);
            done.push(d[8..].to_vec());
            continue;
        }
        assert_eq!(
            *total.get_or_insert(count),
            count,
            "count changed mid-message"
        );
        assert!(
            partial.insert(seq, d[8..].to_vec()).is_none(),
            "seq {seq} twice"
        );
        if partial.len() == count as usize {
            let whole: Vec<u8> = std::mem::take(&mut partial)
                .into_values()
                .flatten()
                .collect();
            done.push(whole);
            total = None;
        }
    }
    done
}

#[test]
fn a_large_value_is_reassembled_by_sequence() {
    let (s, udp) = corecached(&["-t", "2"]);
    let value: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    Text::connect(s.addr()).set("large", &value);
    let u = Udp::new(udp);
    u.send(77, b"get large\r\n");
    let got = messages(&u, 77, 1);
    let mut want = b"VALUE large 0 300000\r\n".to_vec();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\nEND\r\n");
    assert_eq!(got[0].len(), want.len());
    assert!(got[0] == want, "reassembled value differs");
}

#[test]
fn keys_of_every_shard_answer_over_udp() {
    let (s, udp) = corecached(&["-t", "4"]);
    let mut t = Text::connect(s.addr());
    let keys: Vec<String> = (0..64).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        t.set(k, k.as_bytes());
    }
    let u = Udp::new(udp);
    // Text: one message per key, in key order, END after the last.
    u.send(5, format!("get {}\r\n", keys.join(" ")).as_bytes());
    let got = messages(&u, 5, keys.len());
    let mut seen: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert!(seen.iter().any(|m| m.ends_with("END\r\n")));
    seen.sort();
    let mut want: Vec<String> = keys
        .iter()
        .map(|k| format!("VALUE {k} 0 {}\r\n{k}\r\n", k.len()))
        .collect();
    want.sort();
    for (s, w) in seen.iter().zip(&want) {
        assert!(s.starts_with(w.as_str()), "{s:?} vs {w:?}");
    }
    // Binary: a set and a get per key, each answered by one datagram.
    for (i, k) in keys.iter().enumerate() {
        let set = bin(
            0x01,
            k.as_bytes(),
            &[0, 0, 0, 1, 0, 0, 0, 0],
            b"bin",
            i as u32,
        );
        u.send(
            i as u16,
            &[set, bin(0x00, k.as_bytes(), &[], &[], i as u32)].concat(),
        );
        let replies = messages(&u, i as u16, 2);
        assert_eq!(replies[0][0], 0x81);
        assert_eq!(&replies[0][6..8], &[0, 0], "set status");
        assert_eq!(&replies[1][6..8], &[0, 0], "get status");
        assert!(replies[1].ends_with(b"bin"));
    }
}

#[test]
fn malformed_datagrams_leave_the_server_serving() {
    let (mut s, udp) = corecached(&["-t", "2"]);
    let u = Udp::new(udp);
    // A flood of garbage: empty, short, bad counts, random payloads (text and binary magic),
    // binary headers announcing huge bodies. Pseudo-random, fixed seed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000u32 {
        let len = (next() % 1500) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match i % 5 {
            0 if d.len() > 8 => d[4..6].copy_from_slice(&[0, 1]),
            1 if d.len() > 9 => {
                d[4..6].copy_from_slice(&[0, 1]);
                d[8] = 0x80;
            }
            2 => d = frame(i as u16, 0, 1, &bin(0x01, b"k", &[0; 8], &[], 0)[..]),
            3 => d = frame(i as u16, 0, 1, b"set k 0 0 1000000\r\nxyz"),
            _ => {}
        }
        u.send_raw(&d);
    }
    // A datagram asking for about 20 MB of replies that nobody reads: the shard sends them at
    // the socket's pace (the kernel drops what the client's buffer cannot take).
    Text::connect(s.addr()).set("v", &[b'v'; 100_000]);
    u.send(7, format!("get{}\r\n", " v".repeat(200)).as_bytes());
    // Whatever came back, the server still answers in order once asked.
    let mut answered = false;
    for _ in 0..100_000 {
        u.send(0xbeef, b"version\r\n");
        let d = u.recv();
        if header(&d).0 == 0xbeef {
            answered = d[8..].starts_with(b"VERSION ");
            break;
        }
    }
    assert!(answered);
    assert!(s.is_running(), "{}", s.log());
    // TCP still works too.
    let mut t = Text::connect(s.addr());
    assert_eq!(t.line(b"version\r\n").split(' ').next(), Some("VERSION"));
}

#[test]
fn stats_count_udp_as_memcached_does() {
    let (s, udp) = corecached(&["-t", "2"]);
    let mut t = Text::connect(s.addr());
    let settings = t.stats("settings");
    assert_eq!(settings["udpport"], udp.port().to_string());
    assert_eq!(settings["num_threads_per_udp"], "2");
    let stats = t.stats("");
    if let Some(mc) = Memcached::try_start_with_udp(&["-t", "2"]) {
        let mut mt = Text::connect(mc.addr());
        // Each thread's UDP socket counts as a connection, beside the one TCP client (the
        // start-up probe's connection may still be counted for a moment: wait it out).
        let mut theirs = String::new();
        wait_until(Duration::from_secs(10), || {
            theirs = mt.stats("")["curr_connections"].clone();
            theirs == stats["curr_connections"]
        });
        assert_eq!(stats["curr_connections"], theirs);
        assert_eq!(mt.stats("settings")["num_threads_per_udp"], "2");
    } else {
        assert_eq!(stats["curr_connections"], "3");
    }
    // bytes_read counts the datagram, header included, as memcached.
    let before: u64 = stats["bytes_read"].parse().unwrap();
    let u = Udp::new(udp);
    u.send(1, b"get nothing\r\n");
    assert_eq!(u.recv(), frame(1, 0, 1, b"END\r\n"));
    let after: u64 = t.stats("")["bytes_read"].parse().unwrap();
    assert_eq!(after - before, 8 + 13 + "stats\r\n".len() as u64);
    // stats conns lists the UDP sockets as memcached does.
    let conns = t.stats("conns");
    let udp_lines = conns
        .iter()
        .filter(|(k, v)| k.ends_with(":UDP") && *v == "UDP")
        .count();
    assert_eq!(udp_lines, 2, "{conns:?}");
    assert!(conns
        .values()
        .any(|v| *v == format!("udp:127.0.0.1:{}", udp.port())));
}

#[test]
fn a_taken_udp_port_is_refused_and_off_by_default() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let f = Server::try_start(&["-U", &port])
        .err()
        .expect("started on a taken UDP port");
    assert!(f.stderr.contains("UDP"), "{}", f.stderr);
    let s = Server::start(&[]);
    assert!(s.addrs().iter().all(|a| !a.starts_with("udp:")));
    let mut t = Text::connect(s.addr());
    assert_eq!(t.stats("settings")["udpport"], "0");
}

#[test]
fn every_request_of_a_datagram_is_answered() {
    // memcached 1.6.18 drops what follows a get or meta command in the same datagram (it
    // answers `get a\r\nget b\r\n` with a's value only); corecached answers each, in order.
    let (s, udp) = corecached(&["-t", "1"]);
    let mut t = Text::connect(s.addr());
    t.set("a", b"A");
    t.set("b", b"B");
    let u = Udp::new(udp);
    let got = u.exchange(9, b"get a\r\nget b\r\nmn\r\ndelete a\r\n");
    let want: Vec<Vec<u8>> = [
        &b"VALUE a 0 1\r\nA\r\nEND\r\n"[..],
        b"VALUE b 0 1\r\nB\r\nEND\r\n",
        b"MN\r\n",
        b"DELETED\r\n",
    ]
    .iter()
    .map(|p| frame(9, 0, 1, p))
    .collect();
    assert_eq!(got, want);
}
