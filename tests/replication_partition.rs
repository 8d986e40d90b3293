//! A real network partition between two cluster members: each member runs in its own network
//! namespace, joined by a veth pair this test creates. The link goes down for 10 s while both
//! sides take writes to the same keys, then comes back; both members must converge to the same
//! value per key (last writer wins), checked key by key. Needs root and `ip` (iproute2); skipped
//! with a message otherwise.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_until, Client, Server};

const KEYS: usize = 500;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Two namespaces joined by a veth pair, removed on drop.
struct Net {
    a: String,
    b: String,
}

impl Net {
    fn create() -> Option<Net> {
        let id = std::process::id();
        let net = Net {
            a: format!("ccpa{id}"),
            b: format!("ccpb{id}"),
        };
        let (va, vb) = (format!("vpa{id}"), format!("vpb{id}"));
        let ok = ip(&["netns", "add", &net.a])
            && ip(&["netns", "add", &net.b])
            && ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
            && ip(&["link", "set", &va, "netns", &net.a])
            && ip(&["link", "set", &vb, "netns", &net.b])
            && ip(&["-n", &net.a, "addr", "add", "10.77.0.1/24", "dev", &va])
            && ip(&["-n", &net.b, "addr", "add", "10.77.0.2/24", "dev", &vb])
            && ip(&["-n", &net.a, "link", "set", &va, "up"])
            && ip(&["-n", &net.b, "link", "set", &vb, "up"])
            && ip(&["-n", &net.a, "link", "set", "lo", "up"])
            && ip(&["-n", &net.b, "link", "set", "lo", "up"]);
        ok.then_some(net)
    }

    fn link(&self, up: bool) {
        let id = std::process::id();
        let state = if up { "up" } else { "down" };
        assert!(ip(&[
            "-n",
            &self.a,
            "link",
            "set",
            &format!("vpa{id}"),
            state
        ]));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth pair, and with it the pair.
        ip(&["netns", "del", &self.a]);
        ip(&["netns", "del", &self.b]);
    }
}

/// Runs `f` on a thread that has joined namespace `ns` (sockets it opens live there).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("namespace file");
        // SAFETY: setns takes a descriptor we hold open and a flag; it changes only this
        // thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

fn member(ns: &str, addr: &str, list: &str) -> Server {
    let bin = env!("CARGO_BIN_EXE_corecached");
    let (host, port) = addr.split_once(':').unwrap();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns", "exec", ns, bin, "-l", host, "-p", port, "-t", "2", "-m", "64",
    ])
    .args(["--cluster", list])
    .args(common::io_args())
    .env_remove("RUST_LOG")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    Server::try_spawn(cmd).unwrap_or_else(|f| panic!("member in {ns} did not start: {f:?}"))
}

fn values(ns: &str, addr: &str) -> Vec<Option<Vec<u8>>> {
    let addr = addr.parse().unwrap();
    in_ns(ns, move || {
        let mut c = Client::connect(addr);
        (0..KEYS)
            .map(|i| c.get(format!("part:{i}").as_bytes()))
            .collect()
    })
}

fn ready(ns: &str, addr: &str) -> bool {
    let addr = addr.parse().unwrap();
    in_ns(ns, move || {
        Client::connect(addr)
            .stats("replication")
            .iter()
            .any(|(k, v)| k == "repl_ready" && v == "1")
    })
}

/// Writes every key in turn, each value naming the side and the round, for `secs` seconds.
fn write_load(ns: &str, addr: &str, side: &'static str, secs: u64) -> std::thread::JoinHandle<u64> {
    let ns = ns.to_string();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    std::thread::spawn(move || {
        in_ns(&ns, move || {
            let mut c = Client::connect(addr);
            let end = Instant::now() + Duration::from_secs(secs);
            let mut n = 0u64;
            while Instant::now() < end {
                let i = n as usize % KEYS;
                c.set(
                    format!("part:{i}").as_bytes(),
                    format!("{side}:{n}").as_bytes(),
                );
                n += 1;
                // Bounded rate: a few thousand writes a second per side.
                if n.is_multiple_of(200) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            n
        })
    })
}

#[test]
fn a_healed_partition_converges_to_one_value_per_key() {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 || !ip(&["netns", "list"]) {
        eprintln!("skipped: needs root and iproute2 for network namespaces");
        return;
    }
    let net = Net::create().expect("create namespaces and a veth pair");
    let port = common::external::free_port();
    let (addr_a, addr_b) = (format!("10.77.0.1:{port}"), format!("10.77.0.2:{port}"));
    let list = format!("{addr_a},{addr_b}");
    let _a = member(&net.a, &addr_a, &list);
    let _b = member(&net.b, &addr_b, &list);
    assert!(wait_until(Duration::from_secs(20), || ready(
        &net.a, &addr_a
    ) && ready(
        &net.b, &addr_b
    )));

    // Both sides write the same keys; the link is down for 10 s in the middle.
    let wa = write_load(&net.a, &addr_a, "a", 14);
    let wb = write_load(&net.b, &addr_b, "b", 14);
    std::thread::sleep(Duration::from_secs(2));
    net.link(false);
    std::thread::sleep(Duration::from_secs(10));
    net.link(true);
    let (na, nb) = (wa.join().unwrap(), wb.join().unwrap());
    assert!(
        na > KEYS as u64 && nb > KEYS as u64,
        "writes: {na} and {nb}"
    );

    let converged = wait_until(Duration::from_secs(30), || {
        values(&net.a, &addr_a) == values(&net.b, &addr_b)
    });
    let (va, vb) = (values(&net.a, &addr_a), values(&net.b, &addr_b));
    for i in 0..KEYS {
        assert_eq!(va[i], vb[i], "part:{i} differs after the partition healed");
        assert!(va[i].is_some(), "part:{i} lost");
    }
    assert!(converged);
}
