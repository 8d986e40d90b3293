//! mcbench as a process: its verify mode against a deliberately wrong fake server (and the same
//! fake server answering honestly), a verified run against the real corecached, and refusals.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use common::Server;

/// How the fake server answers gets.
#[derive(Clone, Copy, PartialEq)]
enum Fake {
    /// Returns what was set.
    Honest,
    /// Flips one byte near the end of every value it returns.
    CorruptValue,
    /// Returns the value stored under another key.
    WrongKey,
}

/// A tiny memcached-binary server on 127.0.0.1 answering Get and Set only, one thread per
/// connection, each connection with its own store.
fn fake_server(mode: Fake) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            std::thread::spawn(move || serve(stream, mode));
        }
    });
    addr
}

fn reply(out: &mut Vec<u8>, opcode: u8, status: u16, opaque: u32, extras: &[u8], value: &[u8]) {
    out.extend_from_slice(&[0x81, opcode, 0, 0, extras.len() as u8, 0]);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&((extras.len() + value.len()) as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&1u64.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(value);
}

fn serve(mut s: TcpStream, mode: Fake) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut store: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut at = 0;
        while buf.len() - at >= 24 {
            let h = &buf[at..at + 24];
            let opcode = h[1];
            let keylen = u16::from_be_bytes([h[2], h[3]]) as usize;
            let extlen = h[4] as usize;
            let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let opaque = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
            if buf.len() - at < 24 + body {
                break;
            }
            let key = buf[at + 24 + extlen..at + 24 + extlen + keylen].to_vec();
            let value = buf[at + 24 + extlen + keylen..at + 24 + body].to_vec();
            at += 24 + body;
            match opcode {
                0x01 => {
                    store.insert(key, value);
                    reply(&mut out, 0x01, 0, opaque, &[], &[]);
                }
                0x00 => {
                    let found = match mode {
                        Fake::WrongKey => store
                            .iter()
                            .find(|(k, _)| **k != key)
                            .map(|(_, v)| v.clone()),
                        _ => store.get(&key).cloned(),
                    };
                    match found {
                        Some(mut v) => {
                            if mode == Fake::CorruptValue {
                                let i = v.len() - 1;
                                v[i] ^= 0x20;
                            }
                            reply(&mut out, 0x00, 0, opaque, &[0, 0, 0, 0], &v);
                        }
                        None => reply(&mut out, 0x00, 1, opaque, &[], b"Not found"),
                    }
                }
                op => reply(&mut out, op, 0x81, opaque, &[], b"Unknown command"),
            }
        }
        buf.drain(..at);
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

fn mcbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcbench"))
        .args(args)
        .output()
        .expect("run mcbench")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The JSON of the measured phase (after the fill's).
fn run_part(t: &str) -> &str {
    t.split("\"run\":{")
        .nth(1)
        .unwrap_or_else(|| panic!("no run section: {t}"))
}

fn verify_run(addr: SocketAddr) -> Output {
    let server = addr.to_string();
    mcbench(&[
        "-s",
        &server,
        "--verify",
        "--fill",
        "-t",
        "2",
        "-c",
        "2",
        "-P",
        "4",
        "-k",
        "200",
        "-d",
        "16-300",
        "-n",
        "4000",
        "--duration",
        "20",
        "--json",
    ])
}

#[test]
fn verify_passes_against_an_honest_fake_server() {
    let out = verify_run(fake_server(Fake::Honest));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let run = run_part(&t);
    assert!(run.contains("\"verify_errors\":0,"), "{t}");
    assert!(
        !run.contains("\"hits\":0,"),
        "the run must have checked hits: {t}"
    );
}

#[test]
fn verify_catches_a_corrupted_value() {
    let out = verify_run(fake_server(Fake::CorruptValue));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let run = run_part(&t);
    assert!(!run.contains("\"verify_errors\":0,"), "{t}");
    assert!(!run.contains("\"hits\":0,"), "{t}");
    // The table names the first failure.
    let out = mcbench(&[
        "-s",
        &fake_server(Fake::CorruptValue).to_string(),
        "--verify",
        "--fill",
        "-c",
        "1",
        "-k",
        "50",
        "-n",
        "500",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("first verify failure") && t.contains("differ"),
        "{t}"
    );
}

#[test]
fn verify_catches_a_value_of_another_key() {
    let out = mcbench(&[
        "-s",
        &fake_server(Fake::WrongKey).to_string(),
        "--verify",
        "--fill",
        "-c",
        "1",
        "-k",
        "50",
        "-n",
        "500",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("belongs to key index"), "{t}");
}

#[test]
fn verified_run_against_corecached_is_clean() {
    let server = Server::start(&["-t", "2", "-m", "64"]);
    let addr = server.addr().to_string();
    for pattern in ["uniform", "zipf:1.1", "sequential"] {
        let out = mcbench(&[
            "-s",
            &addr,
            "--verify",
            "--fill",
            "-t",
            "2",
            "-c",
            "3",
            "-P",
            "8",
            "-k",
            "3000",
            "-d",
            "12-2000",
            "--key-pattern",
            pattern,
            "--ratio",
            "1:3",
            "-n",
            "30000",
            "--duration",
            "20",
            "--json",
        ]);
        let t = text(&out);
        assert!(out.status.success(), "{pattern}: {t}");
        let run = run_part(&t);
        assert!(
            run.contains("\"verify_errors\":0,\"failures\":[]"),
            "{pattern}: {t}"
        );
        assert!(
            run.contains("\"lost\":0,"),
            "{pattern}: nothing may be lost at this size: {t}"
        );
        assert!(
            run.contains("\"misses\":0,"),
            "{pattern}: every key was filled: {t}"
        );
    }
}

#[test]
fn refuses_remote_targets_and_bad_arguments() {
    let out = mcbench(&["-s", "192.0.2.1:11211", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--allow-remote"));
    let out = mcbench(&["--pipeline", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_closed_port_is_an_error_not_a_hang() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = mcbench(&["-s", &port.to_string(), "--duration", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("connect"));
}

#[test]
fn deep_pipeline_of_large_values_on_one_connection_does_not_deadlock() {
    // Big sets and big get replies both ways at once: a blocking write here would wait on a
    // server that waits for us to read.
    let server = Server::start(&["-t", "1", "-m", "256"]);
    let out = mcbench(&[
        "-s",
        &server.addr().to_string(),
        "--verify",
        "--fill",
        "-c",
        "1",
        "-P",
        "256",
        "-k",
        "60",
        "-d",
        "100000-200000",
        "--ratio",
        "1:1",
        "-n",
        "3000",
        "--duration",
        "30",
        "--json",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let run = run_part(&t);
    assert!(run.contains("\"verify_errors\":0,\"failures\":[]"), "{t}");
    assert!(run.contains("\"total\":{\"requests\":3000,"), "{t}");
}

#[test]
fn verified_text_protocol_run_against_corecached_is_clean() {
    let server = Server::start(&["-t", "2", "-m", "64"]);
    let addr = server.addr().to_string();
    let out = mcbench(&[
        "-s",
        &addr,
        "--protocol",
        "text",
        "--verify",
        "--fill",
        "-c",
        "4",
        "-P",
        "8",
        "-k",
        "2000",
        "-d",
        "12-3000",
        "--ratio",
        "1:3",
        "-n",
        "20000",
        "--duration",
        "20",
        "--json",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let run = run_part(&t);
    assert!(run.contains("\"verify_errors\":0,\"failures\":[]"), "{t}");
    assert!(run.contains("\"misses\":0,"), "every key was filled: {t}");
    assert!(
        t.contains("\"protocol\":\"text\""),
        "the report names the protocol: {t}"
    );
}
