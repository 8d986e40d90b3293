//! Large values are sent from where the store keeps them (no copy into the reply) while the
//! kernel reads them: a value being sent must never change under the send, whatever happens to
//! its key meanwhile, and the store must get every such chunk back once the send is done or its
//! reader is gone.
//!
//! No test asserts a duration: every wait is bounded by a deadline and says what did not happen.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{get, op, wait_until, Server};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn text_conn(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    c
}

fn read_line(c: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf[..at].to_vec();
            buf.drain(..at + 2);
            return line;
        }
        fill(c, buf);
    }
}

fn fill(c: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 64 * 1024];
    let n = c.read(&mut chunk).expect("reply within the timeout");
    assert!(n > 0, "server closed the connection");
    buf.extend_from_slice(&chunk[..n]);
}

/// A value whose every byte is `b`, so a block mixing two values shows.
fn uniform(b: u8, len: usize) -> Vec<u8> {
    vec![b; len]
}

#[test]
fn a_value_being_sent_is_never_changed_by_overwrites_or_deletes() {
    let s = Server::start(&["-t", "2", "-m", "64"]);
    let len = 100_000;
    let mut setup = text_conn(&s);
    setup
        .write_all(
            &[
                b"set k 0 0 100000\r\n".as_slice(),
                &uniform(b'a', len),
                b"\r\n",
            ]
            .concat(),
        )
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_line(&mut setup, &mut buf), b"STORED");

    // A writer replaces the value (a different byte each time, sometimes a delete first) while
    // a reader keeps 40 gets of it in flight and reads slowly.
    let mut writer = text_conn(&s);
    let w = thread::spawn(move || {
        let mut buf = Vec::new();
        for round in 0..300u32 {
            let b = b'a' + (round % 26) as u8;
            if round % 7 == 0 {
                writer.write_all(b"delete k\r\n").unwrap();
                read_line(&mut writer, &mut buf);
            }
            let set = [
                b"set k 0 0 100000\r\n".as_slice(),
                &uniform(b, len),
                b"\r\n",
            ]
            .concat();
            writer.write_all(&set).unwrap();
            assert_eq!(read_line(&mut writer, &mut buf), b"STORED");
        }
    });
    let mut reader = text_conn(&s);
    let (mut hits, mut misses) = (0, 0);
    for _ in 0..20 {
        reader.write_all(&b"get k\r\n".repeat(40)).unwrap();
        thread::sleep(Duration::from_millis(5));
        for _ in 0..40 {
            let line = read_line(&mut reader, &mut buf);
            if line == b"END" {
                misses += 1;
                continue;
            }
            assert_eq!(line, b"VALUE k 0 100000", "unexpected line");
            while buf.len() < len + 2 {
                fill(&mut reader, &mut buf);
            }
            let first = buf[0];
            assert!(
                buf[..len].iter().all(|&x| x == first),
                "a value changed while it was being sent"
            );
            assert_eq!(&buf[len..len + 2], b"\r\n");
            buf.drain(..len + 2);
            assert_eq!(read_line(&mut reader, &mut buf), b"END");
            hits += 1;
        }
    }
    w.join().unwrap();
    assert!(hits > 0, "no get hit ({misses} misses)");
}

/// Every slab class's chunks are all either used or free: none is still held for a send.
fn all_chunks_accounted(c: &mut common::Client) -> bool {
    let mut per_class: HashMap<String, [u64; 3]> = HashMap::new();
    for (name, value) in c.stats("slabs") {
        let Some((class, field)) = name.split_once(':') else {
            continue;
        };
        let slot = match field {
            "total_chunks" => 0,
            "used_chunks" => 1,
            "free_chunks" => 2,
            _ => continue,
        };
        per_class.entry(class.to_string()).or_default()[slot] = value.parse().unwrap();
    }
    !per_class.is_empty() && per_class.values().all(|[t, u, f]| t == &(u + f))
}

#[test]
fn values_lent_to_readers_that_vanish_come_back_to_the_store() {
    let s = Server::start(&["-t", "2", "-m", "16"]);
    let mut c = s.client();
    let value = uniform(b'v', 64 * 1024);
    for i in 0..8 {
        c.set(format!("big{i}").as_bytes(), &value);
    }
    // Readers that ask for far more than the socket holds, never read, and go.
    for r in 0..20 {
        let mut raw = TcpStream::connect(s.addr()).unwrap();
        let mut many = Vec::new();
        for i in 0..200 {
            many.extend(get(op::GET, format!("big{}", (r + i) % 8).as_bytes()).encode());
        }
        raw.write_all(&many).unwrap();
        drop(raw);
    }
    // Deleting the values while (possibly) still lent, then filling the cache many times
    // over with the same size, needs every chunk back.
    for i in 0..8 {
        c.call(&get(op::DELETE, format!("big{i}").as_bytes()));
    }
    let settled = wait_until(Duration::from_secs(10), || {
        c.stat("curr_connections") == 1 && all_chunks_accounted(&mut c)
    });
    assert!(settled, "chunks still held after every reader left");
    for i in 0..1000 {
        c.set(format!("fill{i}").as_bytes(), &value);
    }
    assert_eq!(c.get(b"fill999").unwrap(), value);
    assert!(all_chunks_accounted(&mut c));
}
