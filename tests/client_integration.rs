//! Our client against three real corecached servers: keys written by pylibmc (binary protocol,
//! `{"ketama": True}`, i.e. libmemcached's plain KETAMA) are read back through
//! `client::Client` with `Distribution::Libmemcached` and sit on the servers our continuum names;
//! the client API round trip; killing a server ejects it and the others keep serving; a new
//! server on the same port is re-added after the retry interval.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, Server};
use corecached::client::{CasResult, Client, Config, Distribution, Node};

fn config() -> Config {
    Config {
        distribution: Distribution::Libmemcached,
        connect_timeout: Duration::from_millis(500),
        io_timeout: Duration::from_secs(2),
        failure_limit: 2,
        retry_interval: Duration::from_secs(1),
        ..Config::default()
    }
}

fn single(addr: &str) -> Client {
    Client::from_list(addr, config()).unwrap()
}

/// A server on a fixed port (the harness always asks for port 0), killed on drop.
struct FixedPortServer(Child);

impl FixedPortServer {
    fn start(port: u16) -> FixedPortServer {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_corecached"))
                .args(["-l", "127.0.0.1", "-t", "2", "--port", &port.to_string()])
                .args(common::io_args())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Ready once it accepts connections; if it exited (port still held), try again.
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return FixedPortServer(child);
                }
                assert!(Instant::now() < deadline, "no server on port {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Instant::now() < deadline, "port {port} stayed taken");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for FixedPortServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pylibmc_write(servers: &[String], n: usize) {
    let script = format!(
        "import pylibmc\n\
         mc = pylibmc.Client({servers:?}, binary=True, behaviors={{'ketama': True}})\n\
         for i in range({n}):\n    assert mc.set('pk:%d' % i, b'v%d' % i)\n\
         print('written')\n"
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("run /usr/bin/python3 (./tools/test-all installs python3-pylibmc)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("written"),
        "pylibmc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pylibmc_keys_are_found_and_failover_ejects_and_readds() {
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|_| Some(Server::start(&["-t", "2"]))).collect();
    let addrs: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.as_ref().unwrap().port()))
        .collect();
    const N: usize = 300;
    pylibmc_write(&addrs, N);

    let client = Client::from_list(&addrs.join(","), config()).unwrap();
    let keys: Vec<String> = (0..N).map(|i| format!("pk:{i}")).collect();
    let hits = client.get_multi(&keys).unwrap();
    assert_eq!(
        hits.len(),
        N,
        "get_multi found only {} of pylibmc's keys",
        hits.len()
    );
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(hits[k.as_bytes()].data, format!("v{i}").into_bytes());
    }
    // Each key is on exactly the server our continuum names.
    let direct: Vec<Client> = addrs.iter().map(|a| single(a)).collect();
    let mut per_server = [0usize; 3];
    for k in &keys {
        let owner = client.server_for(k.as_bytes()).unwrap();
        per_server[owner] += 1;
        for (i, d) in direct.iter().enumerate() {
            assert_eq!(
                d.get(k.as_bytes()).unwrap().is_some(),
                i == owner,
                "{k} on server {i}"
            );
        }
    }
    assert!(per_server.iter().all(|&c| c > 30), "{per_server:?}");

    // Kill server 1: at most `failure_limit` requests fail, then it is ejected and its keys
    // move to the next server on the ring; everything keeps working.
    let dead_port = servers[1].as_ref().unwrap().port();
    servers[1] = None;
    let mut errors = 0;
    for k in &keys {
        match client.get(k.as_bytes()) {
            Ok(_) => {}
            Err(e) => {
                assert!(e.to_string().contains(&addrs[1]), "{e}");
                errors += 1;
            }
        }
    }
    assert!(client.is_ejected(1));
    assert!((1..=2).contains(&errors), "{errors} errors");
    for (i, k) in keys.iter().enumerate() {
        assert_ne!(client.server_for(k.as_bytes()), Some(1));
        client
            .set(k.as_bytes(), format!("w{i}").as_bytes(), 0, 0)
            .unwrap();
    }
    let hits = client.get_multi(&keys).unwrap();
    assert_eq!(hits.len(), N);

    // A new server on the same port; once the retry interval has passed, the next request
    // that would use it tries it again and puts it back on the ring.
    let _reborn = FixedPortServer::start(dead_port);
    let probe = keys[0].as_bytes();
    let rejoined = wait_until(Duration::from_secs(10), || {
        let _ = client.get(probe);
        !client.is_ejected(1)
    });
    assert!(rejoined, "server 1 never came back");
    let back: Vec<&String> = keys
        .iter()
        .filter(|k| client.server_for(k.as_bytes()) == Some(1))
        .collect();
    assert!(!client.is_ejected(1));
    assert_eq!(back.len(), per_server[1], "server 1 owns its keys again");
    for k in &back {
        client.set(k.as_bytes(), b"again", 0, 0).unwrap();
        assert_eq!(direct[1].get(k.as_bytes()).unwrap().unwrap().data, b"again");
    }
}

#[test]
fn client_api_round_trip() {
    let servers: Vec<Server> = (0..2).map(|_| Server::start(&["-t", "2"])).collect();
    let list: Vec<String> = servers
        .iter()
        .map(|s| Node::new("127.0.0.1", s.port()).addr())
        .collect();
    let c = Client::from_list(&list.join(","), Config::default()).unwrap();
    let cas = c.set(b"a", b"1", 7, 0).unwrap();
    let v = c.get(b"a").unwrap().unwrap();
    assert_eq!((v.data.as_slice(), v.flags, v.cas), (&b"1"[..], 7, cas));
    assert!(!c.add(b"a", b"x", 0, 0).unwrap());
    assert!(c.add(b"b", b"x", 0, 0).unwrap());
    assert!(c.replace(b"b", b"y", 0, 0).unwrap());
    assert!(!c.replace(b"nope", b"y", 0, 0).unwrap());
    assert!(c.append(b"b", b"z").unwrap());
    assert!(c.prepend(b"b", b"<").unwrap());
    assert_eq!(c.get(b"b").unwrap().unwrap().data, b"<yz");
    assert_eq!(
        c.cas(b"a", b"2", 0, 0, cas + 1000).unwrap(),
        CasResult::Exists
    );
    assert!(matches!(
        c.cas(b"a", b"2", 0, 0, cas).unwrap(),
        CasResult::Stored(_)
    ));
    assert_eq!(c.cas(b"gone", b"2", 0, 0, 5).unwrap(), CasResult::NotFound);
    assert_eq!(c.incr(b"n", 1, None).unwrap(), None);
    assert_eq!(c.incr(b"n", 1, Some((10, 0))).unwrap(), Some(10));
    assert_eq!(c.incr(b"n", 5, None).unwrap(), Some(15));
    assert_eq!(c.decr(b"n", 20, None).unwrap(), Some(0));
    assert!(c.touch(b"a", 100).unwrap());
    assert!(!c.touch(b"nope", 100).unwrap());
    assert!(c.delete(b"a").unwrap());
    assert!(!c.delete(b"a").unwrap());
    // Pipelined multi-get over both servers, more keys than one pipeline chunk.
    let keys: Vec<String> = (0..1500).map(|i| format!("m{i}")).collect();
    for k in keys.iter().step_by(2) {
        c.set(k.as_bytes(), k.as_bytes(), 0, 0).unwrap();
    }
    let hits = c.get_multi(&keys).unwrap();
    assert_eq!(hits.len(), 750);
    assert!(hits.iter().all(|(k, v)| k == &v.data));
    let stats = c.stats("").unwrap();
    assert_eq!(stats.len(), 2);
    assert!(stats
        .iter()
        .all(|(_, s)| s.iter().any(|(k, _)| k == "curr_items")));
    c.flush(0).unwrap();
    assert!(c.get_multi(&keys).unwrap().is_empty());
    // Errors carry the operation and the server.
    let err = c.set(&[b'k'; 300], b"v", 0, 0).unwrap_err().to_string();
    assert!(err.starts_with("set"), "{err}");
}
