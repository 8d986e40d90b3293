//! Authentication against the real server: SASL PLAIN on the binary protocol (`-S`) and
//! memcached's text authentication (`-Y`). Expected bytes are memcached's (1.6.18 with Cyrus
//! SASL for `-S`, 1.6.45 for `-Y`) given the same requests; version strings and CAS values
//! aside.

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

fn scratch_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("corecached-auth-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn frame(op: u8, key: &[u8], value: &[u8], extras: &[u8]) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut f = vec![0x80, op];
    f.extend_from_slice(&(key.len() as u16).to_be_bytes());
    f.push(extras.len() as u8);
    f.extend_from_slice(&[0, 0, 0]);
    f.extend_from_slice(&(body as u32).to_be_bytes());
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(extras);
    f.extend_from_slice(key);
    f.extend_from_slice(value);
    f
}

/// A response header with `status` and `body`, opaque and CAS 0.
fn reply(op: u8, status: u16, body: &[u8]) -> Vec<u8> {
    let mut r = vec![0x81, op, 0, 0, 0, 0];
    r.extend_from_slice(&status.to_be_bytes());
    r.extend_from_slice(&(body.len() as u32).to_be_bytes());
    r.extend_from_slice(&[0; 12]);
    r.extend_from_slice(body);
    r
}

const AUTH_FAILURE: &[u8] = b"Auth failure.";

/// Sends `send`, reads until the server closes or 300 ms pass; returns the bytes and whether
/// it closed.
fn talk(server: &Server, send: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(send).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

/// A server with `-S` and its own password file (`name`: one per test, as they run at once).
fn sasl_server(name: &str, extra: &[&str]) -> (Server, PathBuf) {
    let pwdb = scratch_file(name, "bob:secret\nalice:pw:ignored\n");
    let mut args = vec!["-S", "--sasl-pwdb", pwdb.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Server::start(&args), pwdb)
}

/// `stats` over a connection that authenticates as bob first (its own attempt is counted).
fn stat(server: &Server, name: &str) -> String {
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut send = frame(0x21, b"PLAIN", b"\0bob\0secret", b"");
    send.extend(frame(0x10, b"", b"", b""));
    c.write_all(&send).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    let end = reply(0x10, 0, b"");
    while !all.ends_with(&end) {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed while reading stats");
        all.extend_from_slice(&buf[..n]);
    }
    let mut at = 0;
    while at + 24 <= all.len() {
        let klen = u16::from_be_bytes([all[at + 2], all[at + 3]]) as usize;
        let blen = u32::from_be_bytes(all[at + 8..at + 12].try_into().unwrap()) as usize;
        let body = &all[at + 24..at + 24 + blen];
        if all[at + 1] == 0x10 && &body[..klen] == name.as_bytes() {
            return String::from_utf8_lossy(&body[klen..]).into_owned();
        }
        at += 24 + blen;
    }
    panic!("no stat {name}");
}

#[test]
fn sasl_plain_answers_as_memcached() {
    let (server, pwdb) = sasl_server("pwdb-plain", &["-t", "2"]);
    let plain = |user: &str, pw: &str| format!("\0{user}\0{pw}").into_bytes();
    // Mechanisms, and version, before authentication.
    assert_eq!(
        talk(&server, &frame(0x20, b"", b"", b"")),
        (reply(0x20, 0, b"PLAIN"), false)
    );
    let (got, closed) = talk(&server, &frame(0x0b, b"", b"", b""));
    assert!(got.starts_with(&[0x81, 0x0b, 0, 0, 0, 0, 0, 0]) && !closed);
    // Success, and the password file's second field ends at a further colon.
    for (user, pw) in [("bob", "secret"), ("alice", "pw")] {
        assert_eq!(
            talk(&server, &frame(0x21, b"PLAIN", &plain(user, pw), b"")),
            (reply(0x21, 0, b"Authenticated"), false)
        );
    }
    // A wrong password, another mechanism, a step with nothing started, a proxy identity:
    // refused, the connection kept.
    for refused in [
        frame(0x21, b"PLAIN", &plain("bob", "wrong"), b""),
        frame(0x21, b"MD5", &plain("bob", "secret"), b""),
        frame(0x22, b"PLAIN", &plain("bob", "secret"), b""),
        frame(0x21, b"PLAIN", b"eve\0bob\0secret", b""),
    ] {
        let op = refused[1];
        assert_eq!(
            talk(&server, &refused),
            (reply(op, 0x20, AUTH_FAILURE), false)
        );
    }
    // Anything else before authentication: refused and closed (noop too, as memcached).
    for op in [0x00, 0x0a, 0x01, 0x10] {
        let extras: &[u8] = if op == 0x01 { &[0; 8] } else { &[] };
        let key: &[u8] = if op <= 0x01 { b"k" } else { b"" };
        let value: &[u8] = if op == 0x01 { b"v" } else { b"" };
        assert_eq!(
            talk(&server, &frame(op, key, value, extras)),
            (reply(op, 0x20, AUTH_FAILURE), true),
            "opcode {op:#04x}"
        );
    }
    // After a failed attempt the connection is still unauthenticated.
    let mut send = frame(0x21, b"PLAIN", &plain("bob", "wrong"), b"");
    send.extend(frame(0x0a, b"", b"", b""));
    let mut want = reply(0x21, 0x20, AUTH_FAILURE);
    want.extend(reply(0x0a, 0x20, AUTH_FAILURE));
    assert_eq!(talk(&server, &send), (want, true));
    // Authenticated: the connection serves.
    let mut send = frame(0x21, b"PLAIN", &plain("bob", "secret"), b"");
    send.extend(frame(0x01, b"k", b"v", &[0; 8]));
    send.extend(frame(0x00, b"k", b"", b""));
    send.extend(frame(0x0a, b"", b"", b""));
    let (got, closed) = talk(&server, &send);
    assert!(!closed);
    assert!(got.starts_with(&reply(0x21, 0, b"Authenticated")));
    assert!(got.ends_with(&reply(0x0a, 0, b"")), "{got:02x?}");
    assert!(got.windows(1).any(|w| w == b"v"));
    // The text protocol is closed at once (memcached -S binds the binary protocol only).
    let (got, closed) = talk(&server, b"get k\r\nversion\r\n");
    assert_eq!((got.as_slice(), closed), (&b""[..], true));
    // Every attempt counted, the failures too (2 ok + 4 refused + 1 + 1 ok, and stat()'s own).
    assert_eq!(stat(&server, "auth_cmds"), "9");
    assert_eq!(stat(&server, "auth_errors"), "5");
    let _ = std::fs::remove_file(pwdb);
}

#[test]
fn the_password_file_is_read_at_every_attempt() {
    let (server, pwdb) = sasl_server("pwdb-reread", &["-t", "1"]);
    let auth = frame(0x21, b"PLAIN", b"\0carol\0new", b"");
    assert_eq!(
        talk(&server, &auth),
        (reply(0x21, 0x20, AUTH_FAILURE), false)
    );
    std::fs::write(&pwdb, "carol:new\n").unwrap();
    assert_eq!(
        talk(&server, &auth),
        (reply(0x21, 0, b"Authenticated"), false)
    );
    // A file that cannot be read refuses everyone and the server goes on.
    std::fs::remove_file(&pwdb).unwrap();
    assert_eq!(
        talk(&server, &auth),
        (reply(0x21, 0x20, AUTH_FAILURE), false)
    );
    let (got, _) = talk(&server, &frame(0x20, b"", b"", b""));
    assert_eq!(got, reply(0x20, 0, b"PLAIN"));
}

#[test]
fn sasl_settings_errors_are_memcacheds() {
    let pwdb = scratch_file("pwdb-errors", "bob:secret\n");
    let cases: &[(&[&str], &str)] = &[
        (&["-S"], "MEMCACHED_SASL_PWDB"),
        (
            &["-S", "-B", "ascii", "--sasl-pwdb", "PWDB"],
            "You cannot allow the ASCII protocol while using SASL.",
        ),
        (
            &["-S", "-U", "11299", "--sasl-pwdb", "PWDB"],
            "Cannot enable UDP while using binary SASL authentication.",
        ),
        (&["--sasl-pwdb", "PWDB"], "--sasl-pwdb needs -S"),
        (
            &["-S", "--sasl-pwdb", "/nonexistent/pwdb"],
            "Could not open password file [/nonexistent/pwdb]",
        ),
        (
            &["-Y", "AUTHFILE", "-B", "binary"],
            "You cannot allow the BINARY protocol while using ascii authentication tokens.",
        ),
        (&["-Y", "BROKEN"], "has a malformed entry on line 2"),
    ];
    let authfile = scratch_file("authfile-errors", "bob:pw\n");
    let broken = scratch_file("authfile-broken", "bob:pw\nnocolon\n");
    for (args, want) in cases {
        let args: Vec<&str> = args
            .iter()
            .map(|a| match *a {
                "PWDB" => pwdb.to_str().unwrap(),
                "AUTHFILE" => authfile.to_str().unwrap(),
                "BROKEN" => broken.to_str().unwrap(),
                a => a,
            })
            .collect();
        let mut cmd = Server::command(&[&["-p", "0"], args.as_slice()].concat());
        cmd.env_remove("MEMCACHED_SASL_PWDB");
        let f = Server::try_spawn(cmd)
            .err()
            .unwrap_or_else(|| panic!("{args:?} started"));
        assert!(f.stderr.contains(want), "{args:?}: {}", f.stderr);
    }
    for p in [pwdb, authfile, broken] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn sasl_settings_show_in_stats_settings() {
    let (server, pwdb) = sasl_server("pwdb-settings", &[]);
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Authenticate on the binary protocol, then ask for the settings there.
    c.write_all(&frame(0x21, b"PLAIN", b"\0bob\0secret", b""))
        .unwrap();
    let want = reply(0x21, 0, b"Authenticated");
    let mut got = vec![0u8; want.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    c.write_all(&frame(0x10, b"settings", b"", b"")).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    // Stats replies end with an empty-key packet (24 bytes, key length 0, body 0).
    while !all.ends_with(&reply(0x10, 0, b"")[..]) {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0);
        all.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("auth_enabled_saslyes"), "{text}");
    assert!(text.contains("binding_protocolbinary"), "{text}");
    let _ = std::fs::remove_file(pwdb);
}

#[test]
fn text_authentication_answers_as_memcached() {
    let authfile = scratch_file("authfile", "bob:secret\nalice:pw:x\n");
    let server = Server::start(&["-Y", authfile.to_str().unwrap(), "-t", "2"]);
    let cases: &[(&[u8], &[u8], bool)] = &[
        (b"get foo\r\n", b"CLIENT_ERROR unauthenticated\r\n", false),
        (
            b"set a 0 0 10\r\nbob secret\r\nget a\r\nset k 0 0 1\r\nv\r\nget k\r\n",
            b"STORED\r\nEND\r\nSTORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n",
            false,
        ),
        (
            b"set a 0 0 5\r\nbobse\r\n",
            b"CLIENT_ERROR bad authentication token format\r\n",
            false,
        ),
        (
            b"set a 0 0 99999\r\n",
            b"CLIENT_ERROR auth token too long\r\n",
            false,
        ),
        // The -Y file's password runs to the end of the line, colons and all.
        (b"set a 0 0 10\r\nalice pw:x\r\n", b"STORED\r\n", false),
        (
            b"set a 0 0 8\r\nalice pw\r\n",
            b"CLIENT_ERROR authentication failure\r\n",
            false,
        ),
        (
            b"set a 0 0 3\r\nb cXX",
            b"CLIENT_ERROR bad command line termination\r\n",
            false,
        ),
        // Too short to be a command, or a binary header: closed without a word.
        (b"hi\r\n", b"", true),
        (
            &[
                0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            b"",
            false,
        ),
    ];
    for (send, want, closes) in cases {
        let (got, closed) = talk(&server, send);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "reply to {:?}",
            String::from_utf8_lossy(send)
        );
        assert_eq!(closed, *closes, "{:?}", String::from_utf8_lossy(send));
    }
    // A failed attempt may be followed by a good one (memcached 1.6.45 loses the failure's line
    // when both come in one read; corecached answers each).
    let (got, _) = talk(
        &server,
        b"set a 0 0 9\r\nbob wrong\r\nset a 0 0 10\r\nbob secret\r\nget zz\r\n",
    );
    assert_eq!(
        got,
        b"CLIENT_ERROR authentication failure\r\nSTORED\r\nEND\r\n"
    );
    // SIGHUP re-reads the file.
    std::fs::write(&authfile, "dave:d\n").unwrap();
    server.signal(libc::SIGHUP);
    let token = b"set a 0 0 6\r\ndave d\r\nget zz\r\n";
    assert!(common::wait_until(Duration::from_secs(5), || talk(
        &server, token
    )
    .0
        == b"STORED\r\nEND\r\n"));
    assert_eq!(
        talk(&server, b"set a 0 0 10\r\nbob secret\r\n").0,
        b"CLIENT_ERROR authentication failure\r\n"
    );
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"set a 0 0 6\r\ndave d\r\nstats settings\r\n")
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    while !all.ends_with(b"END\r\n") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0);
        all.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains(&format!("STAT auth_enabled_ascii {}", authfile.display())),
        "{text}"
    );
    assert!(text.contains("STAT binding_protocol ascii"), "{text}");
    let _ = std::fs::remove_file(authfile);
}

#[test]
fn libmemcached_tools_authenticate_with_username_and_password() {
    let have = |tool: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("memccp") || !have("memccat") {
        eprintln!("skipped: libmemcached-tools are not installed");
        return;
    }
    let (server, pwdb) = sasl_server("pwdb-tools", &["-t", "2"]);
    let servers = format!("--servers={}", server.addr());
    let dir = std::env::temp_dir().join(format!("corecached-auth-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("greeting");
    std::fs::write(&file, "hello over SASL\n").unwrap();
    let run = |tool: &str, args: &[&str]| {
        std::process::Command::new(tool)
            .arg(&servers)
            .arg("--binary")
            .args(args)
            .output()
            .unwrap()
    };
    let cp = run(
        "memccp",
        &[
            "--username=bob",
            "--password=secret",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let cat = run(
        "memccat",
        &["--username=bob", "--password=secret", "greeting"],
    );
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    // memccat prints the value and a newline.
    assert_eq!(cat.stdout, b"hello over SASL\n\n");
    let bad = run(
        "memccat",
        &["--username=bob", "--password=nope", "greeting"],
    );
    assert!(!bad.status.success() || bad.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("AUTHENTICATION FAILURE"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(pwdb);
}
