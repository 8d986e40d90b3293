//! Third-party clients against the real server: libmemcached's `memccapable` (the binary-protocol
//! conformance judge) and pylibmc with `binary=True`. `./tools/test-all` installs both from Debian.

mod common;

use common::Server;
use corecached::client::ketama::{Continuum, Distribution, Node};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program args` for at most `limit`, returning (success, stdout + stderr).
fn run_bounded(program: &str, args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); ./tools/test-all installs the Debian packages")
        });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Drain both pipes on threads so a chatty tool never blocks on a full pipe.
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = out.join().unwrap() + &err.join().unwrap();
    match status {
        Some(status) => (status.success(), text),
        None => (false, format!("{text}\n(killed after {limit:?})")),
    }
}

#[test]
fn memccapable_binary_reports_every_test_as_pass() {
    let server = Server::start(&["-t", "2"]);
    let port = server.port().to_string();
    let (ok, out) = run_bounded(
        "memccapable",
        &["-b", "-h", "127.0.0.1", "-p", &port],
        Duration::from_secs(120),
    );
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("[FAIL]") || l.contains("[skip]"))
        .collect();
    assert!(
        ok && failed.is_empty() && out.contains("All tests passed"),
        "memccapable -b did not pass:\n{out}\nserver log:\n{}",
        server.log()
    );
    // Every opcode memccapable exercises must have been reported.
    let passed = out.lines().filter(|l| l.contains("[pass]")).count();
    assert!(passed >= 27, "only {passed} binary tests ran:\n{out}");
}

#[test]
fn pylibmc_binary_client_works_across_shards() {
    let server = Server::start(&["-t", "4"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pylibmc_check.py");
    let target = format!("127.0.0.1:{}", server.port());
    // Debian's python3-pylibmc is visible only to Debian's interpreter.
    let (ok, out) = run_bounded(
        "/usr/bin/python3",
        &[script.to_str().unwrap(), &target],
        Duration::from_secs(60),
    );
    assert!(
        ok && out.contains("all checks passed"),
        "pylibmc check failed:\n{out}\nserver log:\n{}",
        server.log()
    );
}

/// Runs memccapable with `mode_args` and asserts every test it ran passed.
fn memccapable_passes(mode_args: &[&str], min_passed: usize) {
    let server = Server::start(&["-t", "2"]);
    let port = server.port().to_string();
    let mut args = mode_args.to_vec();
    args.extend_from_slice(&["-h", "127.0.0.1", "-p", &port]);
    let (ok, out) = run_bounded("memccapable", &args, Duration::from_secs(120));
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("[FAIL]") || l.contains("[skip]"))
        .collect();
    assert!(
        ok && failed.is_empty() && out.contains("All tests passed"),
        "memccapable {mode_args:?} did not pass:\n{out}\nserver log:\n{}",
        server.log()
    );
    let passed = out.lines().filter(|l| l.contains("[pass]")).count();
    assert!(passed >= min_passed, "only {passed} tests ran:\n{out}");
}

#[test]
fn memccapable_ascii_reports_every_test_as_pass() {
    memccapable_passes(&["-a"], 27);
}

#[test]
fn memccapable_all_modes_report_all_tests_passed() {
    memccapable_passes(&[], 54);
}

/// A free 127.0.0.1 port: bind port 0, read it, close (the caller retries if it is taken again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running nutcracker, killed by PID on drop.
struct Nutcracker {
    child: std::process::Child,
    port: u16,
    _dir: PathBuf,
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// Starts nutcracker with a ketama/md5 pool of `backends`, retrying on a port race; waits until it
/// accepts connections.
fn start_nutcracker(backends: &[u16]) -> Nutcracker {
    let bin = ["/usr/sbin/nutcracker", "nutcracker"]
        .into_iter()
        .find(|b| Path::new(b).exists())
        .unwrap_or("nutcracker");
    for attempt in 0..5 {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("corecached-nc-{}-{attempt}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "pool:\n  listen: 127.0.0.1:{port}\n  hash: md5\n  distribution: ketama\n  \
             auto_eject_hosts: false\n  timeout: 2000\n  servers:\n"
        );
        for b in backends {
            conf += &format!("    - 127.0.0.1:{b}:1\n");
        }
        let conf_path = dir.join("nutcracker.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .args(["-c", conf_path.to_str().unwrap(), "-a", "127.0.0.1"])
            .args(["-s", &free_port().to_string(), "-o"])
            .arg(dir.join("nc.log"))
            .arg("-p")
            .arg(dir.join("nc.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nutcracker ({e}); ./tools/test-all installs it")
            });
        let mut nc = Nutcracker {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = nc.child.try_wait() {
                break; // exited: most likely the port was taken; try another
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nc;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(nc.child.kill());
    }
    panic!("nutcracker did not start");
}

/// One request/response on a text connection: reads until `done` says the reply is complete.
fn ask(s: &mut std::net::TcpStream, req: &str, done: impl Fn(&str) -> bool) -> String {
    use std::io::Write;
    s.write_all(req.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&String::from_utf8_lossy(&reply)) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed after {req:?}");
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(reply).unwrap()
}

fn line_done(r: &str) -> bool {
    r.ends_with("\r\n")
}

fn get_done(r: &str) -> bool {
    r.ends_with("END\r\n")
}

#[test]
fn twemproxy_ketama_pool_of_three_places_each_key_on_its_ketama_server() {
    let servers: Vec<Server> = (0..3).map(|_| Server::start(&["-t", "2"])).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    let nc = start_nutcracker(&ports);
    let mut proxy = std::net::TcpStream::connect(("127.0.0.1", nc.port)).unwrap();
    proxy
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    const KEYS: usize = 90;
    for i in 0..KEYS {
        let r = ask(
            &mut proxy,
            &format!("set tw{i} {i} 0 3\r\nv{:02}\r\n", i % 100),
            line_done,
        );
        assert_eq!(r, "STORED\r\n");
    }
    for i in 0..KEYS {
        let r = ask(&mut proxy, &format!("get tw{i}\r\n"), get_done);
        assert_eq!(
            r,
            format!("VALUE tw{i} {i} 3\r\nv{:02}\r\nEND\r\n", i % 100)
        );
    }
    // A multi-key get is split by the proxy across the servers and merged back.
    let r = ask(&mut proxy, "get tw1 tw2 tw3 nope\r\n", get_done);
    assert_eq!(
        r,
        "VALUE tw1 1 3\r\nv01\r\nVALUE tw2 2 3\r\nv02\r\nVALUE tw3 3 3\r\nv03\r\nEND\r\n"
    );
    assert_eq!(
        ask(&mut proxy, "set ctr 0 0 1\r\n5\r\n", line_done),
        "STORED\r\n"
    );
    assert_eq!(ask(&mut proxy, "incr ctr 10\r\n", line_done), "15\r\n");
    assert_eq!(ask(&mut proxy, "decr ctr 3\r\n", line_done), "12\r\n");
    assert_eq!(ask(&mut proxy, "delete tw0\r\n", line_done), "DELETED\r\n");
    assert_eq!(ask(&mut proxy, "get tw0\r\n", get_done), "END\r\n");

    // Every key lives on exactly one server — the one libketama's ring (nutcracker's `hash: md5`,
    // `distribution: ketama`, which our client calls `ketama`) puts it on — and keys spread over
    // all three.
    let nodes: Vec<Node> = ports.iter().map(|&p| Node::new("127.0.0.1", p)).collect();
    let ring = Continuum::new(Distribution::Ketama, &nodes);
    let mut direct: Vec<std::net::TcpStream> = servers
        .iter()
        .map(|s| {
            let c = std::net::TcpStream::connect(s.addr()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c
        })
        .collect();
    let mut per_server = [0usize; 3];
    for i in 1..KEYS {
        let holders: Vec<usize> = (0..3)
            .filter(|&s| {
                ask(&mut direct[s], &format!("get tw{i}\r\n"), get_done).starts_with("VALUE")
            })
            .collect();
        assert_eq!(holders.len(), 1, "key tw{i} held by {holders:?}");
        let chosen = ring.server_for(format!("tw{i}").as_bytes());
        assert_eq!(
            Some(holders[0]),
            chosen,
            "key tw{i} not where ketama puts it"
        );
        per_server[holders[0]] += 1;
    }
    assert!(
        per_server.iter().all(|&n| n > 0),
        "keys did not spread: {per_server:?}"
    );
    let ctr: Vec<String> = (0..3)
        .map(|s| ask(&mut direct[s], "get ctr\r\n", get_done))
        .collect();
    assert_eq!(
        ctr.iter()
            .filter(|r| r.starts_with("VALUE ctr 0 2\r\n12"))
            .count(),
        1,
        "{ctr:?}"
    );
    for conn in &mut direct {
        assert_eq!(ask(conn, "get tw0\r\n", get_done), "END\r\n");
    }
}
