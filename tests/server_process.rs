//! The process: signals, flag validation, connection limit, vanishing clients, back-pressure.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{get, op, status, store, wait_until, Client, Server};

#[test]
fn sigterm_and_sigint_exit_zero_after_draining() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut s = Server::start(&["-t", "2"]);
        let mut idle = s.client();
        idle.set(b"k", b"v");
        s.signal(signal);
        let status = s
            .wait_exit(Duration::from_secs(15))
            .expect("server did not exit");
        assert!(status.success(), "exit status {status:?}\n{}", s.log());
        assert!(idle.is_closed());
    }
}

#[test]
fn invalid_flags_exit_nonzero_with_a_message() {
    let cases: &[&[&str]] = &[
        &["-t", "0"],
        &["-f", "1.0"],
        &["-m", "1", "-t", "2"],
        &["-U", "70000"],
        &["-I", "2g"],
        &["-I", "512"],
        &["-m", "2", "-t", "2", "-I", "2m"],
        &["--eviction", "bogus"],
        &["--cpus", "9999"],
        &["-l", "not-an-address"],
    ];
    for args in cases {
        match Server::try_start(args) {
            Ok(_) => panic!("{args:?} started"),
            Err(f) => {
                let status = f.status.expect("exited");
                assert!(!status.success(), "{args:?}");
                assert!(!f.stderr.trim().is_empty(), "{args:?}: no message");
            }
        }
    }
}

#[test]
fn connection_limit_refuses_politely() {
    let s = Server::start(&["-t", "2", "-c", "2"]);
    let mut a = s.client();
    let mut b = s.client();
    assert_eq!(a.call(&get(op::NOOP, b"")).status, status::OK);
    assert_eq!(b.call(&get(op::NOOP, b"")).status, status::OK);
    let mut third = s.client();
    assert!(third.is_closed(), "third connection should be refused");
    drop(b);
    // Once a slot frees, new connections are served again.
    let mut served = None;
    let freed = wait_until(Duration::from_secs(5), || {
        let mut c = s.client();
        let mut head = [0u8; 24];
        let ok = c.stream.write_all(&get(op::NOOP, b"").encode()).is_ok()
            && c.stream.read_exact(&mut head).is_ok();
        if ok {
            served = Some(c);
        }
        ok
    });
    assert!(freed, "no connection served after one closed");
    let rejected = served.unwrap().stat("rejected_connections");
    assert!(rejected >= 1);
    assert_eq!(a.call(&get(op::NOOP, b"")).status, status::OK);
}

#[test]
fn client_vanishing_mid_request_leaves_server_healthy() {
    let s = Server::start(&["-t", "2"]);
    let value = vec![b'v'; 100_000];
    let req = store(op::SET, b"half", &value, 0, 0).encode();
    for cut in [1, 10, 23, 24, 30, 5000, req.len() - 1] {
        let mut raw = TcpStream::connect(s.addr()).unwrap();
        raw.write_all(&req[..cut]).unwrap();
        drop(raw);
    }
    // A pipeline whose replies are never read, then gone.
    let mut raw = TcpStream::connect(s.addr()).unwrap();
    let mut many = Vec::new();
    for _ in 0..2000 {
        many.extend(get(op::GETK, b"half").encode());
    }
    raw.write_all(&many).unwrap();
    drop(raw);

    let mut c = s.client();
    assert!(c.get(b"half").is_none(), "a partial set must not store");
    c.set(b"ok", b"fine");
    assert_eq!(c.get(b"ok").unwrap(), b"fine");
    let settled = wait_until(Duration::from_secs(5), || c.stat("curr_connections") == 1);
    assert!(settled, "connections leaked");
}

#[test]
fn slow_reader_with_huge_pipeline_does_not_grow_memory() {
    let s = Server::start(&["-t", "2", "-m", "64"]);
    let mut c = s.client();
    let value = vec![b'x'; 256 * 1024];
    c.set(b"big", &value);
    assert_eq!(c.get(b"big").unwrap().len(), value.len());
    let before = s.rss_kib();

    // 1000 gets of 256 KiB: 256 MiB of replies, read slowly.
    let gets = 1000;
    let mut bytes = Vec::new();
    for _ in 0..gets {
        bytes.extend(get(op::GET, b"big").encode());
    }
    let mut writer = c.stream.try_clone().unwrap();
    let w = std::thread::spawn(move || writer.write_all(&bytes).unwrap());
    let mut peak = before;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let expected = gets * (24 + 4 + value.len());
    let mut round = 0;
    while total < expected {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0, "server closed");
        total += n;
        round += 1;
        if round % 64 == 0 && total < expected / 4 {
            // Slow phase: let the server fill every buffer it is willing to fill.
            std::thread::sleep(Duration::from_millis(20));
            peak = peak.max(s.rss_kib());
        }
    }
    w.join().unwrap();
    assert_eq!(total, expected);
    // Unbounded buffering would hold up to 256 MiB; allow generous fixed headroom.
    let grown = peak.saturating_sub(before);
    eprintln!("RSS before {before} KiB, peak {peak} KiB");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(c.call(&get(op::NOOP, b"")).status, status::OK);
}

#[test]
fn four_shards_on_two_cores_and_pinned_cpus() {
    let s = Server::start(&["-t", "4"]);
    let mut c = s.client();
    assert_eq!(c.stat("threads"), 4);
    let s = Server::start(&["--cpus", "0", "-t", "2"]);
    let mut c = s.client();
    c.set(b"a", b"1");
    assert_eq!(c.get(b"a").unwrap(), b"1");
}

#[test]
fn readiness_line_names_the_bound_port() {
    let s = Server::start(&["-t", "2"]);
    assert_ne!(s.port(), 0);
    // The backend may follow the shard count: `(2 shards, io_uring)` or `(2 shards, epoll)`.
    assert!(s
        .log()
        .contains(&format!("{}{} (2 shards", common::READY_MARK, s.addr())));
    let mut c = Client::connect(s.addr());
    let settings = c.stats("settings");
    assert!(settings
        .iter()
        .any(|(k, v)| k == "tcpport" && *v == s.port().to_string()));
}
