//! The ASCII text protocol against the real server. Every expected reply below was copied from
//! memcached 1.6.18 given the same bytes (CAS values aside), so a difference is a regression.

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A text connection.
fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `send` and asserts the reply is exactly `expect`.
fn exchange(s: &mut TcpStream, send: &[u8], expect: &[u8]) {
    s.write_all(send).unwrap();
    let mut got = vec![0; expect.len()];
    s.read_exact(&mut got).unwrap_or_else(|e| {
        panic!(
            "reading reply to {:?}: {e}",
            String::from_utf8_lossy(&send[..send.len().min(80)])
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expect),
        "reply to {:?}",
        String::from_utf8_lossy(&send[..send.len().min(80)])
    );
}

/// Asserts the server closes the connection without sending anything more.
fn assert_closed(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    let n = s.read(&mut b).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "expected close, got {:?}",
        String::from_utf8_lossy(&b[..n])
    );
}

/// Cases copied from memcached 1.6.18: (request bytes, exact reply).
const CASES: &[(&str, &str)] = &[
    ("set a 0 0 1\r\nx\r\nget a b a\r\n", "STORED\r\nVALUE a 0 1\r\nx\r\nVALUE a 0 1\r\nx\r\nEND\r\n"),
    ("get\r\n", "ERROR\r\n"),
    ("set a 0 0 1\r\nx\r\nset a 0 0 2\r\nxyz\r\nget a\r\n", "STORED\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\nVALUE a 0 1\r\nx\r\nEND\r\n"),
    ("set a abc 0 2\r\nxy\r\nget a\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\nEND\r\n"),
    ("set a 0 0\r\nget a\r\n", "ERROR\r\nEND\r\n"),
    ("set a 0 0 -1\r\nget a\r\n", "CLIENT_ERROR bad command line format\r\nEND\r\n"),
    ("bogus\r\n\r\nGET a\r\n", "ERROR\r\nERROR\r\nERROR\r\n"),
    ("set a 0 0 1\r\nx\r\nincr a 1\r\n", "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
    ("set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n abc\r\nincr n -1\r\nincr nn 1\r\n", "STORED\r\n15\r\n0\r\nCLIENT_ERROR invalid numeric delta argument\r\nCLIENT_ERROR invalid numeric delta argument\r\nNOT_FOUND\r\n"),
    ("set n 0 0 2\r\n10\r\nincr n 18446744073709551615\r\nincr n 18446744073709551616\r\n", "STORED\r\n9\r\nCLIENT_ERROR invalid numeric delta argument\r\n"),
    ("set a 0 0 1\r\nx\r\ndelete a 0\r\ndelete a 1\r\ndelete a noreply\r\ndelete a\r\n", "STORED\r\nDELETED\r\nCLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\nNOT_FOUND\r\n"),
    ("set n 0 0 1\r\n1\r\ntouch n 10\r\ntouch zz 10\r\ntouch n abc\r\ntouch n\r\n", "STORED\r\nTOUCHED\r\nNOT_FOUND\r\nCLIENT_ERROR invalid exptime argument\r\nERROR\r\n"),
    ("verbosity\r\nverbosity 1\r\nverbosity 1 noreply\r\nverbosity a\r\nverbosity 1 2 3\r\n", "ERROR\r\nOK\r\nCLIENT_ERROR bad command line format\r\nERROR\r\n"),
    ("flush_all\r\nflush_all 0\r\nflush_all noreply\r\nflush_all abc\r\nflush_all 10 noreply\r\nflush_all -1\r\nflush_all 1 2\r\nflush_all noreply 1\r\n", "OK\r\nOK\r\nCLIENT_ERROR invalid exptime argument\r\nOK\r\nOK\r\nCLIENT_ERROR invalid exptime argument\r\n"),
    ("stats reset\r\nstats noreply\r\nstats bogus\r\nstats detail on\r\nstats sizes\r\n", "RESET\r\nERROR\r\nERROR\r\nOK\r\nSTAT sizes_status disabled\r\nEND\r\n"),
    ("set n 0 0 1\r\n1\r\ngat 100 n a\r\ngat n\r\ngat abc n\r\ngat 100\r\ngats\r\n", "STORED\r\nVALUE n 0 1\r\n1\r\nEND\r\nCLIENT_ERROR invalid exptime argument\r\nCLIENT_ERROR invalid exptime argument\r\nEND\r\nERROR\r\n"),
    ("get a  \r\nset b 0 0 1 noreply\r\ny\r\nget  b\r\n  get b\r\n", "END\r\nVALUE b 0 1\r\ny\r\nEND\r\nVALUE b 0 1\r\ny\r\nEND\r\n"),
    ("set c 0 0 1\nz\nget c\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n"),
    ("cas zz 0 0 1 1\r\n5\r\ncas n 0 0 1\r\n5\r\ncas n 0 0 1 abc\r\n5\r\n", "NOT_FOUND\r\nERROR\r\nERROR\r\nCLIENT_ERROR bad command line format\r\nERROR\r\n"),
    ("incr\r\nincr n\r\ndelete\r\ntouch n 1 noreply\r\n", "ERROR\r\nERROR\r\nERROR\r\n"),
    ("set e 0 -1 1\r\nx\r\nget e\r\nset f 4294967295 0 1\r\nx\r\nget f\r\nset f 4294967296 0 1\r\nx\r\nget f\r\n", "STORED\r\nEND\r\nSTORED\r\nVALUE f 4294967295 1\r\nx\r\nEND\r\nSTORED\r\nVALUE f 0 1\r\nx\r\nEND\r\n"),
    ("set g 0 0 1 foo\r\nx\r\nset g 0 0 1 noreply extra\r\nx\r\nget g\r\n", "STORED\r\nERROR\r\nERROR\r\nVALUE g 0 1\r\nx\r\nEND\r\n"),
    ("set h -1 0 1\r\nx\r\nset h 0 99999999999999999999 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\nCLIENT_ERROR bad command line format\r\nERROR\r\n"),
    ("set a 0 0 1 noreply\r\nxyz\r\nget zz\r\n", "ERROR\r\nEND\r\n"),
    ("set a 0 0 1\r\nx\r\nincr a 1 noreply\r\nincr a abc noreply\r\nadd a 0 0 1 noreply\r\nx\r\ntouch a abc noreply\r\nappend zz 0 0 1 noreply\r\nx\r\nmn\r\n", "STORED\r\nMN\r\n"),
    ("set f 0 0 01\r\nx\r\nset f 0 0 +1\r\nx\r\nset f 0 0 1 \r\nx\r\n", "STORED\r\nSTORED\r\nSTORED\r\n"),
    ("set n 0 0 3\r\n 12\r\nincr n 1\r\nset n 0 0 0\r\n\r\nincr n 1\r\nset n 0 0 21\r\n000000000000000000012\r\nincr n 1\r\n", "STORED\r\n13\r\nSTORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nSTORED\r\n13\r\n"),
    ("set x 0 4294967297 1\r\nx\r\nget x\r\nset x 0 2147483648 1\r\nx\r\nget x\r\nset x 0 0 4294967297\r\nx\r\n", "STORED\r\nVALUE x 0 1\r\nx\r\nEND\r\nSTORED\r\nEND\r\nSTORED\r\n"),
    ("set y 0 0 1\r\n1\r\ndecr y 1 noreply\r\nget y\r\nreplace zz 0 0 1\r\nx\r\nadd y 0 0 1\r\nx\r\nprepend zz 0 0 1\r\nx\r\ncas y 0 0 1 1\r\nx\r\n", "STORED\r\nVALUE y 0 1\r\n0\r\nEND\r\nNOT_STORED\r\nNOT_STORED\r\nNOT_STORED\r\nEXISTS\r\n"),
    ("set a 0 0 1\r\nx\r\nappend a 0 0 2\r\nyz\r\nprepend a 0 0 1\r\nw\r\nget a\r\n", "STORED\r\nSTORED\r\nSTORED\r\nVALUE a 0 4\r\nwxyz\r\nEND\r\n"),
    // Lengths within 2 of INT_MAX overflow memcached's length + "\r\n": a bad command line.
    ("set k 0 0 2147483647\r\nset k 0 0 2147483646\r\nget k\r\n", "CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\nEND\r\n"),
    // `cas` with unique 0 compares with 0: EXISTS on an item, NOT_FOUND (nothing created) without.
    ("set moo 0 0 1\r\nx\r\ncas moo 0 0 1 0\r\ny\r\ncas nokey 0 0 1 0\r\ny\r\nget moo nokey\r\n", "STORED\r\nEXISTS\r\nNOT_FOUND\r\nVALUE moo 0 1\r\nx\r\nEND\r\n"),
    // A known command with an HTTP-looking key is still that command.
    ("get / HTTP/1.0\r\n", "END\r\n"),
];

#[test]
fn text_commands_answer_as_memcached() {
    let server = Server::start(&["-t", "2"]);
    for (send, expect) in CASES {
        let mut s = connect(&server);
        exchange(&mut s, b"flush_all\r\n", b"OK\r\n");
        exchange(&mut s, send.as_bytes(), expect.as_bytes());
    }
}

#[test]
fn gets_and_cas_use_the_items_cas() {
    let server = Server::start(&["-t", "2"]);
    let mut s = connect(&server);
    exchange(&mut s, b"set k 3 0 2\r\nhi\r\n", b"STORED\r\n");
    s.write_all(b"gets k\r\n").unwrap();
    let mut buf = vec![0; 256];
    let n = s.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    let cas: u64 = reply
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .nth(4)
        .unwrap()
        .parse()
        .unwrap();
    assert!(reply.ends_with("\r\nhi\r\nEND\r\n"), "{reply}");
    exchange(
        &mut s,
        format!("cas k 0 0 1 {}\r\nx\r\n", cas + 1).as_bytes(),
        b"EXISTS\r\n",
    );
    exchange(
        &mut s,
        format!("cas k 0 0 1 {cas} noreply\r\nx\r\nget k\r\n").as_bytes(),
        b"VALUE k 0 1\r\nx\r\nEND\r\n",
    );
}

#[test]
fn multi_key_get_spans_shards_in_request_order() {
    let server = Server::start(&["-t", "4"]);
    let mut s = connect(&server);
    let mut set = Vec::new();
    let mut expect = Vec::new();
    for i in 0..200 {
        set.extend_from_slice(
            format!(
                "set key{i} {i} 0 {}\r\nvalue{i}\r\n",
                5 + i.to_string().len()
            )
            .as_bytes(),
        );
        expect.extend_from_slice(b"STORED\r\n");
    }
    exchange(&mut s, &set, &expect);
    let mut get = b"get".to_vec();
    let mut expect = Vec::new();
    for i in (0..200).rev() {
        get.extend_from_slice(format!(" key{i} missing{i}").as_bytes());
        expect.extend_from_slice(
            format!(
                "VALUE key{i} {i} {}\r\nvalue{i}\r\n",
                5 + i.to_string().len()
            )
            .as_bytes(),
        );
    }
    get.extend_from_slice(b"\r\n");
    expect.extend_from_slice(b"END\r\n");
    exchange(&mut s, &get, &expect);
    // Pipelined single-key gets keep their order too.
    exchange(
        &mut s,
        b"get key1\r\nget nope\r\nget key2\r\n",
        b"VALUE key1 1 6\r\nvalue1\r\nEND\r\nEND\r\nVALUE key2 2 6\r\nvalue2\r\nEND\r\n",
    );
}

#[test]
fn a_bad_key_in_a_multi_get_answers_one_error_and_no_values() {
    let server = Server::start(&["-t", "2"]);
    let mut s = connect(&server);
    exchange(&mut s, b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let line = format!("get a {} a\r\nget a\r\n", "k".repeat(251));
    exchange(
        &mut s,
        line.as_bytes(),
        b"CLIENT_ERROR bad command line format\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    );
}

#[test]
fn an_http_request_line_closes_without_a_reply() {
    // memcached 1.6.18: an unknown command whose last word starts with "HTTP/" closes the
    // connection at once, with no ERROR.
    let server = Server::start(&[]);
    for line in [
        &b"GET / HTTP/1.0\r\n"[..],
        b"POST /x HTTP/1.1\r\nversion\r\n",
        b"HTTP/1.0\r\nversion\r\n",
        b"foo HTTP/\r\n",
    ] {
        let mut s = connect(&server);
        s.write_all(line).unwrap();
        assert_closed(&mut s);
    }
    // Other unknown commands still answer ERROR and keep the connection.
    let mut s = connect(&server);
    exchange(&mut s, b"GET / HTTP1.0\r\nget k\r\n", b"ERROR\r\nEND\r\n");
}

#[test]
fn a_line_without_newline_past_2048_bytes_closes_the_connection() {
    let server = Server::start(&[]);
    let mut s = connect(&server);
    s.write_all(&[b'x'; 2100]).unwrap();
    assert_closed(&mut s);
    // A long multiget line is read on, as memcached does.
    let mut s = connect(&server);
    let mut line = b"get".to_vec();
    for _ in 0..1100 {
        line.extend_from_slice(b" k");
    }
    s.write_all(&line).unwrap();
    exchange(&mut s, b"\r\n", b"END\r\n");
}

#[test]
fn an_oversized_data_block_is_swallowed_after_the_error() {
    let server = Server::start(&[]);
    let mut s = connect(&server);
    exchange(&mut s, b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let mut req = b"set a 0 0 2000000\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 2_000_000));
    req.extend_from_slice(b"\r\nget a\r\n");
    // The failed set also removes the old value, as memcached does.
    exchange(
        &mut s,
        &req,
        b"SERVER_ERROR object too large for cache\r\nEND\r\n",
    );
    let mut req = b"set big 0 0 2000000 noreply\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 2_000_000));
    req.extend_from_slice(b"\r\nget a\r\n");
    exchange(&mut s, &req, b"END\r\n");
}

#[test]
fn a_missing_data_block_waits_and_quit_closes() {
    let server = Server::start(&[]);
    let mut s = connect(&server);
    s.write_all(b"set a 0 0 5\r\nab").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 16];
    assert!(
        s.read(&mut b).is_err(),
        "no reply before the block is complete"
    );
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    exchange(
        &mut s,
        b"cde\r\nget a\r\n",
        b"STORED\r\nVALUE a 0 5\r\nabcde\r\nEND\r\n",
    );
    s.write_all(b"quit\r\nget a\r\n").unwrap();
    assert_closed(&mut s);
}

#[test]
fn version_and_stats_use_memcacheds_format() {
    let server = Server::start(&["-t", "2"]);
    let mut s = connect(&server);
    exchange(
        &mut s,
        b"version\r\n",
        format!("VERSION {}\r\n", corecached::VERSION_STRING).as_bytes(),
    );
    for group in ["", " settings", " items", " slabs", " latency"] {
        exchange(&mut s, b"set st 0 0 1\r\nx\r\n", b"STORED\r\n");
        s.write_all(format!("stats{group}\r\n").as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while !reply.ends_with(b"END\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            reply.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8(reply).unwrap();
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.last(), Some(&"END"));
        for l in &lines[..lines.len() - 1] {
            let parts: Vec<&str> = l.splitn(3, ' ').collect();
            assert!(
                parts.len() == 3 && parts[0] == "STAT" && !parts[1].is_empty(),
                "stats{group}: {l:?}"
            );
        }
        if group.is_empty() {
            assert!(text.contains("STAT cmd_set "), "{text}");
            assert!(text.contains("STAT curr_items "), "{text}");
        }
    }
}

#[test]
fn binary_and_text_share_the_port_and_the_data() {
    let server = Server::start(&["-t", "2"]);
    let mut s = connect(&server);
    exchange(&mut s, b"set shared 7 0 3\r\nabc\r\n", b"STORED\r\n");
    let mut client = server.client();
    assert_eq!(client.get(b"shared").as_deref(), Some(&b"abc"[..]));
}
