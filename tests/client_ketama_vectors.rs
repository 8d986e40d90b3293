//! `mcring` against the real implementations, with vectors generated at test time:
//! - libmemcached 1.1.4 (Debian libmemcached-dev): `tests/ketama/lmvectors.c`, compiled with gcc
//!   into a temporary directory, prints `memcached_server_by_key()` for every key, in the modes
//!   `ketama`, `libmemcached`, `libmemcached-md5` and `libmemcached-spy`;
//! - twemproxy (Debian nutcracker 0.5.0): a real nutcracker with its default pool settings in
//!   front of fake backends that record which keys they are asked for (`twemproxy` mode).
//!
//! Server lists: equal and unequal weights, default and other ports, a host name, 25 servers (the
//! float rounding of point counts), one server. Keys: ASCII, non-ASCII UTF-8 and invalid UTF-8,
//! keys whose hash equals a continuum point (the point names themselves), keys hashing above the
//! last point (wrap-around). `./tools/test-all` installs gcc, libmemcached-dev and nutcracker.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::external::{Nutcracker, TempDir};
use corecached::ring::{Continuum, Distribution, Node};

/// Runs `program args` with `input` on stdin for at most `limit`; returns stdout, panics with
/// stderr on failure.
fn run_with_input(program: &Path, args: &[&str], input: &[u8], limit: Duration) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {args:?} ran past {limit:?}", program.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    writer.join().unwrap();
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    assert!(
        status.success(),
        "{} {args:?} failed: {err}",
        program.display()
    );
    out
}

fn mcring(distribution: &str, servers: &str, keys: &[Vec<u8>]) -> Vec<String> {
    let input = join_lines(keys);
    let out = run_with_input(
        Path::new(env!("CARGO_BIN_EXE_mcring")),
        &["--distribution", distribution, "--servers", servers],
        &input,
        Duration::from_secs(60),
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn join_lines(keys: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for k in keys {
        v.extend_from_slice(k);
        v.push(b'\n');
    }
    v
}

/// Small deterministic generator (xorshift), so vectors are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// ASCII keys, non-ASCII UTF-8 keys and keys with invalid UTF-8 (no space, control or newline
/// bytes: they must also pass as memcached text-protocol keys through nutcracker).
fn general_keys(n_ascii: usize, n_other: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..n_ascii)
        .map(|i| format!("key:{i}").into_bytes())
        .collect();
    keys.extend(
        ["user:42", "a", "ä", "日本語キー", "emoji:🦀", "Z"].map(|k| k.as_bytes().to_vec()),
    );
    let alphabet = ["a", "Q", "7", ":", "-", "é", "ü", "€", "中", "🦀", "ß"];
    let mut rng = Rng(0x243f_6a88_85a3_08d3);
    for i in 0..n_other {
        let len = 1 + (rng.next() % 24) as usize;
        let mut key = Vec::new();
        for _ in 0..len {
            key.extend_from_slice(
                alphabet[(rng.next() % alphabet.len() as u64) as usize].as_bytes(),
            );
        }
        if i % 4 == 0 {
            // Raw high bytes, not valid UTF-8: signed-char hashing matters here.
            key.push(0x80 + (rng.next() % 0x7f) as u8);
            key.push(0xff);
        }
        keys.push(key);
    }
    keys
}

/// The point names of every server in every libmemcached/twemproxy format: under an MD5 key
/// hash the first point of a name is exactly the key's hash, and under one-at-a-time the only
/// point is; these keys test the ">=" of the lookup and the tie order.
fn exact_hit_keys(nodes: &[Node]) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for n in nodes {
        for i in 0..100 {
            keys.push(format!("{}-{i}", n.host).into_bytes());
            keys.push(format!("{}:{}-{i}", n.host, n.port).into_bytes());
            if i < 40 {
                keys.push(format!("/{}:{}-{i}", n.host, n.port).into_bytes());
            }
        }
    }
    keys
}

/// Up to `want` keys whose hash (in `distribution`) lies above the last point: they wrap to the
/// first point. Bounded search.
fn wrap_keys(distribution: Distribution, nodes: &[Node], want: usize) -> Vec<Vec<u8>> {
    let ring = Continuum::new(distribution, nodes);
    let Some(last) = ring.points().last().map(|p| p.value) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for i in 0..400_000u32 {
        if keys.len() == want {
            break;
        }
        let key = format!("wrap-{i}").into_bytes();
        if distribution.key_hash(&key) > last {
            keys.push(key);
        }
    }
    keys
}

/// The server lists of the libmemcached comparison.
fn libmemcached_lists() -> Vec<String> {
    let mut lists = vec![
        "10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211".to_owned(),
        "10.0.0.1:11211,10.0.0.2:11300:3,cache-b.example:11211:2,10.0.0.4:22122".to_owned(),
        "mc1.example:11211:5,mc2.example:11211:1,mc3.example:11212:1".to_owned(),
        "10.9.9.9:11211".to_owned(),
    ];
    lists.push(
        (1..=25)
            .map(|i| format!("10.0.1.{i}:11211"))
            .collect::<Vec<_>>()
            .join(","),
    );
    lists.push(
        (1..=25)
            .map(|i| format!("10.0.2.{i}:{}:{}", 11200 + i, 1 + i % 4))
            .collect::<Vec<_>>()
            .join(","),
    );
    lists
}

/// Compiles tests/ketama/lmvectors.c against libmemcached.
fn build_lmvectors(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ketama/lmvectors.c");
    let exe = dir.join("lmvectors");
    let out = Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-lmemcached")
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc ({e}); ./tools/test-all installs it"));
    assert!(
        out.status.success(),
        "gcc lmvectors.c -lmemcached failed (libmemcached-dev missing? ./tools/test-all installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

#[test]
fn mcring_matches_libmemcached_in_every_libmemcached_mode() {
    let dir = TempDir::new("lmvectors");
    let exe = build_lmvectors(&dir.0);
    let general = general_keys(2000, 600);
    let mut total = 0;
    for mode in [
        "ketama",
        "libmemcached",
        "libmemcached-md5",
        "libmemcached-spy",
    ] {
        let distribution: Distribution = mode.parse().unwrap();
        for list in libmemcached_lists() {
            let nodes = Node::parse_list(&list).unwrap();
            let mut keys = general.clone();
            keys.extend(exact_hit_keys(&nodes));
            keys.extend(wrap_keys(distribution, &nodes, 20));
            let want = run_with_input(
                &exe,
                &[mode, &list],
                &join_lines(&keys),
                Duration::from_secs(60),
            );
            let want: Vec<&str> = std::str::from_utf8(&want).unwrap().lines().collect();
            let got = mcring(mode, &list, &keys);
            assert_eq!(
                want.len(),
                keys.len(),
                "{mode} [{list}]: libmemcached answered too few keys"
            );
            assert_eq!(
                got.len(),
                keys.len(),
                "{mode} [{list}]: mcring answered too few keys"
            );
            let wrong: Vec<String> = (0..keys.len())
                .filter(|&i| want[i] != got[i])
                .take(10)
                .map(|i| {
                    format!(
                        "{:?}: libmemcached {} mcring {}",
                        String::from_utf8_lossy(&keys[i]),
                        want[i],
                        got[i]
                    )
                })
                .collect();
            assert!(wrong.is_empty(), "{mode} [{list}]: {wrong:#?}");
            total += keys.len();
        }
    }
    eprintln!(
        "libmemcached vectors: {total} keys agree across 4 modes x {} lists",
        libmemcached_lists().len()
    );
}

/// A fake memcached backend for nutcracker: answers every text `get` with END and records which
/// backend each key was asked of.
fn fake_backend(listener: TcpListener, index: usize, seen: Arc<Mutex<HashMap<Vec<u8>, usize>>>) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                let mut reader = BufReader::new(conn);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let body = line.strip_suffix(b"\r\n").unwrap_or(&line);
                    let mut words = body.split(|&b| b == b' ').filter(|w| !w.is_empty());
                    match words.next() {
                        Some(b"get" | b"gets") => {
                            let mut seen = seen.lock().unwrap();
                            for key in words {
                                seen.insert(key.to_vec(), index);
                            }
                            drop(seen);
                            if writer.write_all(b"END\r\n").is_err() {
                                return;
                            }
                        }
                        Some(b"version") => {
                            let _ = writer.write_all(b"VERSION 1.6.18\r\n");
                        }
                        _ => {
                            let _ = writer.write_all(b"ERROR\r\n");
                        }
                    }
                }
            });
        }
    });
}

/// Asks nutcracker for every key (pipelined text gets in bounded batches) and returns the
/// backend index each one reached.
fn route_through(
    listen: SocketAddr,
    keys: &[Vec<u8>],
    seen: &Mutex<HashMap<Vec<u8>, usize>>,
) -> Vec<usize> {
    let conn = TcpStream::connect(listen).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    for batch in keys.chunks(200) {
        let mut req = Vec::new();
        for key in batch {
            req.extend_from_slice(b"get ");
            req.extend_from_slice(key);
            req.extend_from_slice(b"\r\n");
        }
        writer.write_all(&req).unwrap();
        for key in batch {
            line.clear();
            reader.read_until(b'\n', &mut line).unwrap();
            assert_eq!(
                line,
                b"END\r\n",
                "nutcracker answered {:?} for {:?}",
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(key)
            );
        }
    }
    let seen = seen.lock().unwrap();
    keys.iter()
        .map(|k| {
            *seen
                .get(k)
                .unwrap_or_else(|| panic!("no backend saw {:?}", String::from_utf8_lossy(k)))
        })
        .collect()
}

/// (label, number of backends, weight of backend i).
type Shape = (&'static str, usize, fn(usize) -> u32);

#[test]
fn mcring_matches_nutcracker_default_pool() {
    let shapes: [Shape; 4] = [
        ("3 equal", 3, |_| 1),
        ("4 unequal", 4, |i| [1, 3, 2, 5][i]),
        ("25 equal", 25, |_| 1),
        ("25 unequal", 25, |i| 1 + (i % 4) as u32),
    ];
    let general = general_keys(1500, 400);
    let mut total = 0;
    for (label, n, weight) in shapes {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let mut servers = Vec::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            fake_backend(listener, i, seen.clone());
            servers.push(format!("127.0.0.1:{port}:{}", weight(i)));
        }
        let nc = Nutcracker::start(&[], &servers);
        let listen = nc.addr();
        let nodes = Node::parse_list(&servers.join(",")).unwrap();
        let mut keys = general.clone();
        keys.extend(exact_hit_keys(&nodes).into_iter().take(300));
        keys.extend(wrap_keys(Distribution::Twemproxy, &nodes, 20));
        let reached = route_through(listen, &keys, &seen);
        let got = mcring("twemproxy", &servers.join(","), &keys);
        let wrong: Vec<String> = (0..keys.len())
            .filter(|&i| nodes[reached[i]].addr() != got[i])
            .take(10)
            .map(|i| {
                format!(
                    "{:?}: nutcracker {} mcring {}",
                    String::from_utf8_lossy(&keys[i]),
                    nodes[reached[i]].addr(),
                    got[i]
                )
            })
            .collect();
        assert!(wrong.is_empty(), "twemproxy {label}: {wrong:#?}");
        total += keys.len();
    }
    eprintln!("nutcracker vectors: {total} keys agree across 4 server lists");
}

/// Default port: nutcracker leaves ":11211" out of point names. Needs 11211 free on 127.0.0.2-4
/// (any loopback address works on Linux); skipped with a message when it is taken.
#[test]
fn mcring_matches_nutcracker_on_the_default_port() {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let mut servers = Vec::new();
    for (i, host) in ["127.0.0.2", "127.0.0.3", "127.0.0.4"].iter().enumerate() {
        match TcpListener::bind((*host, 11211)) {
            Ok(listener) => fake_backend(listener, i, seen.clone()),
            Err(e) => {
                eprintln!("skipped: cannot bind {host}:11211 ({e})");
                return;
            }
        }
        servers.push(format!("{host}:11211:{}", 1 + i));
    }
    let nc = Nutcracker::start(&[], &servers);
    let listen = nc.addr();
    let nodes = Node::parse_list(&servers.join(",")).unwrap();
    let mut keys = general_keys(1500, 300);
    keys.extend(exact_hit_keys(&nodes).into_iter().take(300));
    let reached = route_through(listen, &keys, &seen);
    let got = mcring("twemproxy", &servers.join(","), &keys);
    let wrong = (0..keys.len())
        .filter(|&i| nodes[reached[i]].addr() != got[i])
        .count();
    assert_eq!(wrong, 0, "{wrong} of {} keys differ", keys.len());
}

#[test]
fn mcring_is_fast_and_keeps_its_interface() {
    // 200k keys through the release-or-debug binary in bounded time; the output has one line
    // per key, each one of the servers as given.
    let keys: Vec<Vec<u8>> = (0..200_000).map(|i| format!("k{i}").into_bytes()).collect();
    let servers = "10.0.0.1:11211,10.0.0.2:11212:2,cache.example:11211";
    let start = Instant::now();
    let out = mcring("ketama", servers, &keys);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.len(), keys.len());
    let allowed = ["10.0.0.1:11211", "10.0.0.2:11212", "cache.example:11211"];
    assert!(out.iter().all(|s| allowed.contains(&s.as_str())));
    // Unknown distribution: an error naming the choices, non-zero exit.
    let status = Command::new(env!("CARGO_BIN_EXE_mcring"))
        .args(["--distribution", "modula", "--servers", servers])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("libmemcached-spy"));
}
