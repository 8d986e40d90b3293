//! memcached's `watch` against the real server: the answers to `watch` and its arguments, the
//! log lines of fetchers, mutations, evictions and connection events in memcached 1.6.18's
//! format (fields and order; `ts`, `gid` and `cfd` matched by pattern), a differential run
//! against Debian's memcached with the same commands, and the bad days: a watcher that never
//! reads under heavy traffic (bounded memory, `skipped=`), watchers that leave, too many watchers.
//!
//! Every read has a timeout and every loop a bound; nothing asserts on time.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::external::Memcached;
use common::{op, wait_until, Server};

/// A text connection with a read timeout (a missing line fails the test, never hangs it).
struct Text {
    r: BufReader<TcpStream>,
}

impl Text {
    fn connect(addr: SocketAddr) -> Text {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Text {
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).unwrap();
    }

    /// One line, with its line end.
    fn line(&mut self) -> String {
        let mut l = Vec::new();
        let n = self.r.read_until(b'\n', &mut l).expect("a line in time");
        assert!(n > 0, "connection closed");
        String::from_utf8_lossy(&l).into_owned()
    }

    /// Sends a command and reads its reply up to `mn`'s `MN` (any reply's length).
    fn call(&mut self, cmd: &[u8]) -> String {
        self.send(cmd);
        self.send(b"mn\r\n");
        let mut reply = String::new();
        for _ in 0..100 {
            let l = self.line();
            if l == "MN\r\n" {
                return reply;
            }
            reply.push_str(&l);
        }
        panic!("no end of reply to {:?}", String::from_utf8_lossy(cmd));
    }

    /// Starts watching `args`; asserts memcached's `OK`.
    fn watch(addr: SocketAddr, args: &str) -> Text {
        let mut w = Text::connect(addr);
        w.send(format!("watch{args}\r\n").as_bytes());
        assert_eq!(w.line(), "OK\r\n", "watch{args}");
        w
    }

    /// Log lines up to and including the first one containing `mark` (at most `max` lines).
    fn lines_until(&mut self, mark: &str, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..max {
            let l = self.line();
            let done = l.contains(mark);
            out.push(l);
            if done {
                return out;
            }
        }
        panic!("no {mark:?} in {max} lines: {out:?}");
    }

    fn stat(&mut self, name: &str) -> u64 {
        self.send(b"stats\r\n");
        let mut found = None;
        for _ in 0..200 {
            let l = self.line();
            if l == "END\r\n" {
                break;
            }
            if let Some(v) = l.strip_prefix(&format!("STAT {name} ")) {
                found = Some(v.trim().parse().unwrap());
            }
        }
        found.unwrap_or_else(|| panic!("no stat {name}"))
    }
}

/// Splits a log line into its `name=value` fields, checking the `ts=<secs>.<usecs> gid=<n>`
/// start and the bare `\n` end memcached writes.
fn fields(line: &str) -> Vec<(String, String)> {
    let body = line.strip_suffix('\n').expect("ends with \\n");
    assert!(
        !body.ends_with('\r'),
        "a log line ends with a bare \\n: {line:?}"
    );
    let f: Vec<(String, String)> = body
        .split(' ')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{kv} in {line}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(f[0].0, "ts", "{line}");
    let (secs, usecs) = f[0].1.split_once('.').expect("ts=secs.usecs");
    assert!(secs.parse::<u64>().is_ok() && usecs.parse::<u32>().is_ok_and(|u| u < 1_000_000));
    assert_eq!(f[1].0, "gid", "{line}");
    assert!(f[1].1.parse::<u64>().is_ok(), "{line}");
    f
}

/// The fields after `ts` and `gid`, as `name=value` words, with `cfd` and `rport` values
/// replaced by `*` (they differ between runs and servers).
fn shape(line: &str) -> String {
    fields(line)[2..]
        .iter()
        .map(|(k, v)| match k.as_str() {
            "cfd" | "rport" => format!("{k}=*"),
            _ => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> &'a str {
    &f.iter().find(|(k, _)| k == name).unwrap().1
}

#[test]
fn watch_answers_as_memcached() {
    let s = Server::start(&["-t", "2"]);
    let mut c = Text::connect(s.addr());
    // Unknown words: ERROR, and the connection stays a normal one. 1.6.18 has no `deletions`.
    for bad in ["watch foo", "watch fetchers foo", "watch deletions"] {
        assert_eq!(
            c.call(format!("{bad}\r\n").as_bytes()),
            "ERROR\r\n",
            "{bad}"
        );
    }
    // noreply is no class: the ERROR is silenced.
    assert_eq!(c.call(b"watch fetchers noreply\r\n"), "");
    // Behind another request of the same read: refused.
    c.send(b"version\r\nwatch\r\n");
    assert!(c.line().starts_with("VERSION "));
    assert_eq!(
        c.line(),
        "ERROR cannot pipeline other commands before watch\r\n"
    );
    // Every memcached word is accepted, with any spacing.
    for args in [
        "",
        " fetchers",
        "  fetchers   mutations",
        " rawcmds sysevents proxyreqs proxyevents proxyuser",
    ] {
        let mut w = Text::watch(s.addr(), args);
        // A watcher no longer runs commands: what it sends is dropped.
        w.send(b"version\r\n");
        let mut probe = Text::connect(s.addr());
        assert!(probe.call(b"version\r\n").starts_with("VERSION "));
    }
    let disabled = Server::start(&["-t", "1", "-W"]);
    let mut d = Text::connect(disabled.addr());
    assert_eq!(
        d.call(b"watch mutations\r\n"),
        "CLIENT_ERROR watch commands not allowed\r\n"
    );
}

#[test]
fn fetchers_and_mutations_log_every_protocol_in_memcached_s_format() {
    let s = Server::start(&["-t", "2"]);
    let mut w = Text::watch(s.addr(), " fetchers mutations");
    let mut c = Text::connect(s.addr());
    assert_eq!(c.call(b"set foo 0 0 3\r\nbar\r\n"), "STORED\r\n");
    c.call(b"get foo\r\n");
    c.call(b"get nokey\r\n");
    c.call(b"add foo 0 0 1\r\nx\r\n");
    c.call(b"append foo 0 0 1\r\na\r\n");
    c.call(b"cas foo 0 0 1 999\r\nc\r\n");
    c.call(b"mg foo v\r\n");
    c.call(b"set sp%ce 0 100 1\r\nv\r\n");
    c.call(b"flush_all\r\n");
    c.call(b"get foo\r\n");
    let mut b = common::Client::connect(s.addr());
    b.set(b"bk", b"vv");
    assert_eq!(b.get(b"bk"), Some(b"vv".to_vec()));
    c.call(b"get zz_end\r\n");
    let lines = w.lines_until("key=zz_end", 50);
    let shapes: Vec<String> = lines.iter().map(|l| shape(l)).collect();
    assert_eq!(
        shapes,
        [
            "type=item_get key=foo status=not_found clsid=0 cfd=* size=0",
            "type=item_store key=foo status=stored cmd=set ttl=0 clsid=1 cfd=* size=3",
            "type=item_get key=foo status=found clsid=1 cfd=* size=3",
            "type=item_get key=nokey status=not_found clsid=0 cfd=* size=0",
            "type=item_get key=foo status=found clsid=1 cfd=* size=3",
            "type=item_store key=foo status=not_stored cmd=add ttl=0 clsid=1 cfd=* size=1",
            "type=item_get key=foo status=found clsid=1 cfd=* size=3",
            "type=item_store key=foo status=stored cmd=append ttl=0 clsid=1 cfd=* size=4",
            "type=item_get key=foo status=found clsid=1 cfd=* size=4",
            "type=item_store key=foo status=exists cmd=cas ttl=0 clsid=1 cfd=* size=1",
            "type=item_get key=foo status=found clsid=1 cfd=* size=4",
            "type=item_get key=sp%25ce status=not_found clsid=0 cfd=* size=0",
            "type=item_store key=sp%25ce status=stored cmd=set ttl=100 clsid=1 cfd=* size=1",
            "type=item_get key=foo status=flushed clsid=0 cfd=* size=0",
            "type=item_get key=bk status=not_found clsid=0 cfd=* size=0",
            "type=item_store key=bk status=stored cmd=set ttl=0 clsid=1 cfd=* size=2",
            "type=item_get key=bk status=found clsid=1 cfd=* size=2",
            "type=item_get key=zz_end status=not_found clsid=0 cfd=* size=0",
        ]
    );
    // One connection, one descriptor; the binary connection has its own.
    let cfd = |i: usize| field(&fields(&lines[i]), "cfd").to_string();
    assert_eq!(cfd(0), cfd(13));
    assert_ne!(cfd(0), cfd(14));
    // gids grow.
    let gids: Vec<u64> = lines
        .iter()
        .map(|l| field(&fields(l), "gid").parse().unwrap())
        .collect();
    assert!(gids.windows(2).all(|g| g[0] < g[1]), "{gids:?}");
    // The stats count what was logged and sent.
    assert!(c.stat("log_watcher_sent") >= lines.len() as u64);
    assert_eq!(c.stat("log_watchers"), 1);
}

#[test]
fn connection_events_name_peers_and_reasons() {
    let s = Server::start(&["-t", "2"]);
    let mut w = Text::watch(s.addr(), " connevents");
    let mut c = Text::connect(s.addr());
    let port = c.r.get_ref().local_addr().unwrap().port();
    c.call(b"version\r\n");
    c.send(b"quit\r\n");
    let lines = w.lines_until("type=conn_close", 10);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let new = fields(&lines[0]);
    assert_eq!(
        shape(&lines[0]),
        "type=conn_new rip=127.0.0.1 rport=* transport=tcp cfd=*"
    );
    assert_eq!(field(&new, "rport"), port.to_string());
    assert_eq!(
        shape(&lines[1]),
        "type=conn_close rip=127.0.0.1 rport=* transport=tcp reason=normal cfd=*"
    );
    assert_eq!(field(&fields(&lines[1]), "cfd"), field(&new, "cfd"));
    // A web request line: memcached closes with reason=error.
    let mut h = Text::connect(s.addr());
    h.send(b"GET / HTTP/1.1\r\n");
    let lines = w.lines_until("type=conn_close", 10);
    assert!(lines[1].contains(" reason=error "), "{lines:?}");
    // A watcher that leaves is closed with reason=error, as in memcached.
    let other = Text::watch(s.addr(), " fetchers");
    drop(other);
    let lines = w.lines_until("type=conn_close", 10);
    assert!(
        lines.last().unwrap().contains(" reason=error "),
        "{lines:?}"
    );
}

#[test]
fn evictions_are_logged_with_memcached_s_fields() {
    let s = Server::start(&["-t", "1", "-m", "2"]);
    let mut w = Text::watch(s.addr(), " mutations evictions");
    let mut c = Text::connect(s.addr());
    let value = vec![b'B'; 11_000];
    let mut req = Vec::new();
    for i in 0..400 {
        req.clear();
        req.extend_from_slice(format!("set n,foo{i} 0 0 11000 noreply\r\n").as_bytes());
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n");
        c.send(&req);
    }
    c.call(b"version\r\n");
    let lines = w.lines_until("type=eviction", 2000);
    let ev = lines.last().unwrap();
    let f = fields(ev);
    let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["ts", "gid", "type", "key", "fetch", "ttl", "la", "clsid", "size"]
    );
    assert!(field(&f, "key").starts_with("n%2Cfoo"), "{ev}");
    assert_eq!(field(&f, "fetch"), "no");
    assert_eq!(field(&f, "ttl"), "-1");
    assert_eq!(field(&f, "size"), "11000");
    assert!(c.stat("evictions") > 0);
}

/// The same commands against memcached 1.6.18 and corecached: the same lines, once `ts`, `gid`
/// and `cfd` are set aside.
#[test]
fn lines_match_memcached_for_the_same_commands() {
    let script: &[&[u8]] = &[
        b"set foo 0 0 3\r\nbar\r\n",
        b"get foo\r\n",
        b"gets foo nokey\r\n",
        b"add foo 0 0 1\r\nx\r\n",
        b"add foo2 0 0 1\r\nx\r\n",
        b"replace foo 5 0 2\r\nzz\r\n",
        b"replace nokey 5 0 2\r\nzz\r\n",
        b"append foo 0 0 1\r\na\r\n",
        b"prepend foo 0 0 1\r\np\r\n",
        b"append nokey 0 0 1\r\na\r\n",
        b"cas foo 0 0 1 999\r\nc\r\n",
        b"cas nokey 0 0 1 999\r\nc\r\n",
        b"incr foo 1\r\n",
        b"set n 0 0 1\r\n5\r\n",
        b"incr n 3\r\n",
        b"decr n 1\r\n",
        b"incr nokey 1\r\n",
        b"touch foo 0\r\n",
        b"gat 0 foo\r\n",
        b"delete foo\r\n",
        b"delete foo\r\n",
        b"set k\x01y 0 0 1\r\nv\r\n",
        b"get k\x01y\r\n",
        b"set sp%ce 0 0 1\r\nv\r\n",
        b"mg n v\r\n",
        b"mg nokey v\r\n",
        b"ms mk 2\r\nhi\r\n",
        b"ms mk 2 MA\r\nhi\r\n",
        b"md mk\r\n",
        b"ma n\r\n",
        b"me n\r\n",
        b"ms bWs= 2 b\r\nhi\r\n",
        b"mg bWs= b v\r\n",
    ];
    let run = |addr: SocketAddr| -> Vec<String> {
        let mut w = Text::watch(addr, " fetchers mutations");
        let mut c = Text::connect(addr);
        let mut replies = Vec::new();
        for cmd in script {
            replies.push(c.call(cmd));
        }
        // Binary: a set, a get, an incr that creates its counter.
        let mut b = common::Client::connect(addr);
        b.set(b"bk", b"vv");
        b.get(b"bk");
        b.call(&common::arith(op::INCR, b"bn", 1, 5, 0));
        c.call(b"get zz_end\r\n");
        b.get(b"zz_bin_end");
        // Each server delivers its threads' (cores') lines in turns, so the two connections'
        // lines may come in either order: wait for the last line of each, compare in gid order.
        let mut raw = w.lines_until("key=zz_end ", 500);
        if !raw.iter().any(|l| l.contains("key=zz_bin_end ")) {
            raw.extend(w.lines_until("key=zz_bin_end ", 500));
        }
        raw.sort_by_key(|l| field(&fields(l), "gid").parse::<u64>().unwrap());
        let mut lines: Vec<String> = raw.iter().map(|l| shape(l)).collect();
        // The replies must agree too (the version and `me` aside).
        lines.extend(
            replies
                .into_iter()
                .filter(|r| !r.starts_with("ME ") && !r.starts_with("VALUE foo 0 3 ")),
        );
        lines
    };
    let mc = Memcached::start(&["-t", "2"]);
    let reference = run(SocketAddr::from(([127, 0, 0, 1], mc.port())));
    let s = Server::start(&["-t", "2"]);
    let ours = run(s.addr());
    assert_eq!(ours, reference);
}

#[test]
fn a_watcher_that_never_reads_stays_bounded_and_is_told_what_it_skipped() {
    let s = Server::start(&[
        "-t",
        "2",
        "-o",
        "watcher_logbuf_size=8,worker_logbuf_size=16",
    ]);
    // A small receive buffer, never read while the traffic runs.
    let slow = {
        let sock = socket2_small_rcvbuf(s.addr());
        let mut t = Text {
            r: BufReader::new(sock),
        };
        t.send(b"watch fetchers\r\n");
        t
    };
    let mut c = Text::connect(s.addr());
    // Wait for the watcher to be registered (bounded).
    assert!(wait_until(Duration::from_secs(10), || c
        .stat("log_watchers")
        == 1));
    let rss_before = s.rss_kib();
    let spacer = "X".repeat(180);
    let mut batch = Vec::new();
    for round in 0..100 {
        batch.clear();
        for i in 0..500 {
            batch.extend_from_slice(format!("get foo{round}_{i}{spacer}\r\n").as_bytes());
        }
        c.send(&batch);
        for _ in 0..500 {
            assert_eq!(c.line(), "END\r\n");
        }
    }
    let skipped = c.stat("log_watcher_skipped");
    assert!(
        skipped > 0,
        "50,000 lines into an 8 KiB buffer: some are skipped"
    );
    // 50,000 lines are about 11 MB; the watcher's buffers hold a few KiB of them.
    let grown = s.rss_kib().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "server grew by {grown} KiB");
    // Once the watcher reads, a skipped= line comes before the lines that fit again.
    let mut w = slow;
    assert_eq!(w.line(), "OK\r\n");
    let mut found = None;
    for n in 0..200_000 {
        if n % 100 == 0 {
            c.call(b"get foo\r\n");
        }
        let l = w.line();
        if let Some(v) = l.strip_prefix("skipped=") {
            found = Some(v.trim().parse::<u64>().unwrap());
            break;
        }
        fields(&l);
    }
    assert!(found.is_some_and(|n| n > 0), "no skipped= line");
    c.call(b"get foob\r\n");
    let after = w.line();
    assert!(after.contains(" type=item_get "), "{after}");
}

/// A TCP connection whose receive buffer is as small as the kernel allows.
fn socket2_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: socket() returns a new descriptor we own (checked), handed to TcpStream once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    // SAFETY: `fd` is ours and open.
    let sock = unsafe { TcpStream::from_raw_fd(fd) };
    let size: libc::c_int = 4096;
    // SAFETY: `size` lives across the call and its length is passed.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 test address")
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sa` is a valid sockaddr_in and its length is passed.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock
}

#[test]
fn watchers_that_leave_are_removed_and_the_limit_is_memcached_s() {
    let s = Server::start(&["-t", "2"]);
    let mut c = Text::connect(s.addr());
    let mut ws: Vec<Text> = (0..20).map(|_| Text::watch(s.addr(), "")).collect();
    let mut extra = Text::connect(s.addr());
    assert_eq!(
        extra.call(b"watch\r\n"),
        "WATCHER_TOO_MANY log watcher limit reached\r\n"
    );
    // Refused, it stays a normal connection.
    assert!(extra.call(b"version\r\n").starts_with("VERSION "));
    assert_eq!(c.stat("log_watchers"), 20);
    // Lines reach watchers on every core.
    c.call(b"get spread\r\n");
    for w in &mut ws {
        let l = w.line();
        assert!(l.contains(" type=item_get key=spread "), "{l}");
    }
    for w in ws.drain(..10) {
        let _ = w.r.get_ref().shutdown(std::net::Shutdown::Both);
    }
    assert!(wait_until(Duration::from_secs(10), || c
        .stat("log_watchers")
        == 10));
    ws.clear();
    assert!(wait_until(Duration::from_secs(10), || c
        .stat("log_watchers")
        == 0));
    // A watcher can be added again, and nothing stale reaches it.
    let mut w = Text::watch(s.addr(), "");
    c.call(b"get again\r\n");
    let l = w.line();
    assert!(l.contains(" key=again "), "{l}");
    // Its connection lists as memcached's conn_watch.
    let mut conns = String::new();
    c.send(b"stats conns\r\n");
    for _ in 0..200 {
        let l = c.line();
        if l == "END\r\n" {
            break;
        }
        conns.push_str(&l);
    }
    assert!(conns.contains(":state conn_watch\r\n"), "{conns}");
}
