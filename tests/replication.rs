//! Replication between real corecached processes on 127.0.0.1 (`--cluster`): copies reach
//! every owner, a killed member's keys are read from the survivors through the Rust client, a
//! restarted member catches up (full resync) before it serves, a paused one gets what it missed
//! (partial resync), and bad peers are refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::external::free_port;
use common::{status, wait_until, Server};
use corecached::client::{Client as RingClient, Config as RingConfig};

/// A cluster member on a fixed 127.0.0.1 port.
fn member(port: u16, list: &str, extra: &[&str]) -> Server {
    try_member(port, list, extra).unwrap_or_else(|f| panic!("member did not start: {f:?}"))
}

fn try_member(port: u16, list: &str, extra: &[&str]) -> Result<Server, common::StartFailure> {
    let port = port.to_string();
    let mut args = vec![
        "-l",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "2",
        "-m",
        "64",
        "--cluster",
        list,
    ];
    args.extend_from_slice(extra);
    Server::try_spawn(Server::command(&args))
}

fn list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn repl_stat(s: &Server, name: &str) -> String {
    s.client()
        .stats("replication")
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in stats replication"))
}

fn ready(s: &Server) -> bool {
    repl_stat(s, "repl_ready") == "1"
}

/// Waits until every stream of `s` has nothing unacknowledged.
fn drained(s: &Server) -> bool {
    s.client()
        .stats("replication")
        .iter()
        .filter(|(k, _)| k.ends_with(":lag_records"))
        .all(|(_, v)| v == "0")
}

fn ring_client(ports: &[u16]) -> RingClient {
    RingClient::from_list(
        &list(ports),
        RingConfig {
            failure_limit: 1,
            retry_interval: Duration::from_secs(60),
            connect_timeout: Duration::from_millis(500),
            replicas: 1,
            ..RingConfig::default()
        },
    )
    .unwrap()
}

/// Two members of one cluster, both caught up: (A, B, B's port).
fn two_ready_members() -> (Server, Server, u16) {
    let (pa, pb) = (free_port(), free_port());
    let l = list(&[pa, pb]);
    let a = member(pa, &l, &[]);
    let b = member(pb, &l, &[]);
    assert!(wait_until(Duration::from_secs(10), || ready(&a) && ready(&b)));
    (a, b, pb)
}

#[test]
fn two_members_copy_sets_deletes_touches_and_counters() {
    let (a, b, pb) = two_ready_members();
    let mut ca = a.client();
    for i in 0..300 {
        ca.set(format!("k{i}").as_bytes(), format!("v{i}").as_bytes());
    }
    let mut cb = b.client();
    assert!(
        wait_until(Duration::from_secs(10), || (0..300).all(|i| cb
            .get(format!("k{i}").as_bytes())
            == Some(format!("v{i}").into_bytes()))),
        "every set on A reaches B"
    );
    // Deletes on B reach A, and an increment's result travels.
    for i in 0..50 {
        let r = cb.call(&common::get(common::op::DELETE, format!("k{i}").as_bytes()));
        assert_eq!(r.status, status::OK);
    }
    ca.set(b"counter", b"10");
    assert!(wait_until(Duration::from_secs(10), || cb
        .get(b"counter")
        .is_some()));
    let r = cb.call(&common::arith(
        common::op::INCR,
        b"counter",
        5,
        0,
        0xffff_ffff,
    ));
    assert_eq!(r.counter(), 15);
    assert!(wait_until(Duration::from_secs(10), || {
        (0..50).all(|i| ca.get(format!("k{i}").as_bytes()).is_none())
            && ca.get(b"counter") == Some(b"15".to_vec())
    }));
    // A touch that makes an item expire at once removes it on the other member too.
    let mut text = TcpStream::connect(a.addr()).unwrap();
    text.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    text.write_all(b"touch k100 -1\r\ntouch k101 1000\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < b"TOUCHED\r\nTOUCHED\r\n".len() {
        let n = text.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"TOUCHED\r\nTOUCHED\r\n");
    assert!(wait_until(Duration::from_secs(10), || cb
        .get(b"k100")
        .is_none()));
    // The other touch's new TTL reached B (meta get of the TTL, as memcached answers it).
    let mut tb = TcpStream::connect(b.addr()).unwrap();
    tb.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        tb.write_all(b"mg k101 t\r\n").unwrap();
        let n = tb.read(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        line == "HD t1000\r\n" || line == "HD t999\r\n"
    }));
    // Replicated writes are not client commands.
    let sets_b = cb.stat("cmd_set");
    assert_eq!(sets_b, 0, "B's clients set nothing");
    assert!(repl_stat(&b, "repl_applied").parse::<u64>().unwrap() >= 300);
    assert!(wait_until(Duration::from_secs(10), || drained(&a) && drained(&b)));
    assert_eq!(
        repl_stat(&a, &format!("peer:127.0.0.1:{pb}:state")),
        "streaming"
    );
    // Drained: everything sent is acknowledged, in records and in bytes.
    let stat_u64 = |m: &Server, what: &str| -> u64 {
        repl_stat(m, &format!("peer:127.0.0.1:{pb}:{what}"))
            .parse()
            .unwrap()
    };
    assert!(wait_until(Duration::from_secs(10), || stat_u64(
        &a,
        "bytes_acked"
    ) == stat_u64(
        &a,
        "bytes_sent"
    )));
    assert!(stat_u64(&a, "bytes_acked") > 300 * 8);
    // The 50 deletes left tombstones on both members (k100 expired: no tombstone), and they
    // count in memory.
    for m in [&a, &b] {
        assert_eq!(repl_stat(m, "repl_tombstones"), "50");
        assert!(repl_stat(m, "repl_tombstone_bytes").parse::<u64>().unwrap() >= 50 * 64);
    }
}

#[test]
fn a_killed_member_loses_nothing_and_catches_up_before_serving() {
    let ports = [free_port(), free_port(), free_port()];
    let l = list(&ports);
    let mut members: Vec<Option<Server>> =
        ports.iter().map(|&p| Some(member(p, &l, &[]))).collect();
    assert!(wait_until(Duration::from_secs(10), || members
        .iter()
        .all(|m| ready(m.as_ref().unwrap()))));
    let client = ring_client(&ports);
    for i in 0..2000 {
        client
            .set(
                format!("key:{i}").as_bytes(),
                format!("one:{i}").as_bytes(),
                0,
                0,
            )
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(20), || members
        .iter()
        .all(|m| drained(m.as_ref().unwrap()))));

    // kill -9 of the member at index 1; every key is still read through the client.
    let victim = 1;
    let dead = members[victim].take().unwrap();
    dead.signal(libc::SIGKILL);
    drop(dead);
    for i in 0..2000 {
        let got = client.get(format!("key:{i}").as_bytes()).unwrap();
        assert_eq!(
            got.map(|v| v.data),
            Some(format!("one:{i}").into_bytes()),
            "key:{i} after the kill"
        );
    }
    // Writes during the outage go to the surviving owners.
    for i in 0..2000 {
        if i % 2 == 0 {
            client
                .set(
                    format!("key:{i}").as_bytes(),
                    format!("two:{i}").as_bytes(),
                    0,
                    0,
                )
                .unwrap();
        }
    }
    // The member comes back empty on its port and is synced before it serves: until then a
    // get is turned away, never answered with a miss or an old value.
    let back = member(ports[victim], &l, &[]);
    let ring = corecached::ring::Continuum::new(
        corecached::ring::Distribution::Ketama,
        &corecached::ring::Node::parse_list(&l).unwrap(),
    );
    // An odd key (written once, never changed) that the restarted member owns.
    let probe = (0..2000)
        .filter(|i| i % 2 == 1)
        .find(|i| {
            ring.owners(format!("key:{i}").as_bytes(), 2)
                .contains(&victim)
        })
        .unwrap();
    let want = format!(
        "VALUE key:{probe} 0 {}\r\none:{probe}\r\nEND\r\n",
        format!("one:{probe}").len()
    );
    assert!(wait_until(Duration::from_secs(20), || {
        let mut s = TcpStream::connect(back.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("get key:{probe}\r\n").as_bytes())
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).unwrap_or(0);
        let reply = String::from_utf8_lossy(&buf[..n]).to_string();
        if reply.starts_with("SERVER_ERROR catching up from peers") {
            return false;
        }
        assert_eq!(reply, want, "served before it caught up");
        ready(&back)
    }));
    members[victim] = Some(back);
    for i in 0..2000 {
        let key = format!("key:{i}");
        let want = if i % 2 == 0 {
            format!("two:{i}")
        } else {
            format!("one:{i}")
        };
        for owner in ring.owners(key.as_bytes(), 2) {
            let mut c = members[owner].as_ref().unwrap().client();
            assert_eq!(
                c.get(key.as_bytes()),
                Some(want.clone().into_bytes()),
                "{key} on owner {owner}"
            );
        }
    }
    let full: u64 = repl_stat(
        members[0].as_ref().unwrap(),
        &format!("peer:127.0.0.1:{}:full_resyncs", ports[victim]),
    )
    .parse()
    .unwrap();
    assert!(
        full >= 2,
        "a first sync and the one after the restart: {full}"
    );
}

#[test]
fn a_paused_member_gets_what_it_missed() {
    let (a, b, pb) = two_ready_members();
    let mut ca = a.client();
    for i in 0..100 {
        ca.set(format!("p{i}").as_bytes(), b"before");
    }
    assert!(wait_until(Duration::from_secs(10), || drained(&a)));
    b.signal(libc::SIGSTOP);
    for i in 0..100 {
        ca.set(format!("p{i}").as_bytes(), b"during");
    }
    // Unacknowledged for longer than the stream waits: A drops the connection.
    std::thread::sleep(Duration::from_secs(5));
    b.signal(libc::SIGCONT);
    let mut cb = b.client();
    assert!(wait_until(Duration::from_secs(20), || (0..100).all(|i| cb
        .get(format!("p{i}").as_bytes())
        == Some(b"during".to_vec()))));
    let peer = format!("peer:127.0.0.1:{pb}");
    assert!(
        repl_stat(&a, &format!("{peer}:partial_resyncs"))
            .parse::<u64>()
            .unwrap()
            >= 1,
        "{:?}",
        a.client().stats("replication")
    );
}

#[test]
fn strangers_garbage_and_other_clusters_are_refused() {
    let (pa, pb) = (free_port(), free_port());
    let l = list(&[pa, pb]);
    let a = member(pa, &l, &[]);
    // Its one peer never started: it is down, so nothing to wait for.
    assert!(wait_until(Duration::from_secs(10), || ready(&a)));
    let hello = |from: &str, digest: &str| {
        let mut s = TcpStream::connect(a.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("repl_hello 1 {from} {digest} 0000000000000001 0 1\r\n").as_bytes())
            .unwrap();
        let mut buf = vec![0u8; 512];
        let n = s.read(&mut buf).unwrap();
        (s, String::from_utf8_lossy(&buf[..n]).to_string())
    };
    let (_, reply) = hello("10.9.9.9:11211", "0123456789abcdef");
    assert!(reply.starts_with("SERVER_ERROR repl"), "{reply}");
    assert!(reply.contains("not a member"), "{reply}");
    let (_, reply) = hello(&format!("127.0.0.1:{pb}"), "0123456789abcdef");
    assert!(reply.contains("cluster settings differ"), "{reply}");
    // Garbage frames after a good-looking hello (the right digest is not known here, so
    // send garbage where the hello should be): the connection is closed, the server lives.
    let mut s = TcpStream::connect(a.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"repl_hello \xff\xfe garbage\r\n").unwrap();
    let mut buf = vec![0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SERVER_ERROR repl"));
    assert!(
        repl_stat(&a, "repl_refused_handshakes")
            .parse::<u64>()
            .unwrap()
            >= 3
    );
    // The member still serves clients.
    let mut c = a.client();
    c.set(b"alive", b"yes");
    assert_eq!(c.get(b"alive"), Some(b"yes".to_vec()));
}

#[test]
fn a_cluster_list_without_this_server_is_a_startup_error() {
    let port = free_port();
    let other = free_port();
    let f = try_member(port, &list(&[other, free_port()]), &[])
        .err()
        .expect("refused");
    assert!(f.stderr.contains("--self"), "{}", f.stderr);
    let f = try_member(port, &list(&[other, port]), &["--self", "127.0.0.1:1"])
        .err()
        .expect("refused");
    assert!(
        f.stderr.contains("is not one of the servers"),
        "{}",
        f.stderr
    );
    let f = try_member(port, &list(&[other, port]), &["--replicas", "2"])
        .err()
        .expect("refused");
    assert!(f.stderr.contains("--replicas 2"), "{}", f.stderr);
}

#[test]
fn members_with_different_cluster_lists_report_it_and_do_not_exchange() {
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = member(pa, &list(&[pa, pb]), &[]);
    let b = member(pb, &list(&[pa, pb, pc]), &["--resync-timeout", "1"]);
    assert!(wait_until(Duration::from_secs(10), || {
        repl_stat(&a, "repl_refused_handshakes") != "0"
            && repl_stat(&b, "repl_refused_handshakes") != "0"
    }));
    assert!(wait_until(Duration::from_secs(10), || b
        .log()
        .contains("other cluster settings")
        || a.log().contains("other cluster settings")));
    let mut ca = a.client();
    ca.set(b"mismatch", b"x");
    std::thread::sleep(Duration::from_millis(300));
    assert!(wait_until(Duration::from_secs(5), || ready(&b)));
    assert_eq!(b.client().get(b"mismatch"), None);
}

/// A binary client of `s` authenticated as `user` (SASL PLAIN).
fn sasl_client(s: &Server, user: &str, password: &str) -> common::Client {
    let mut c = s.client();
    let plain = format!("\0{user}\0{password}");
    let r = c.call(&common::Req {
        opcode: 0x21,
        key: b"PLAIN",
        value: plain.as_bytes(),
        ..Default::default()
    });
    assert_eq!(r.status, status::OK, "SASL auth as {user}");
    c
}

fn sasl_repl_stat(s: &Server, name: &str) -> String {
    sasl_client(s, "peer", "pw")
        .stats("replication")
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in stats replication"))
}

#[test]
fn with_sasl_members_authenticate_to_each_other() {
    let dir = std::env::temp_dir().join(format!("corecached-repl-sasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Both files start with the user members present; C's first user is unknown to A and B.
    let shared = dir.join("shared");
    std::fs::write(&shared, "peer:pw\nclient:c\n").unwrap();
    let stranger = dir.join("stranger");
    std::fs::write(&stranger, "intruder:x\npeer:pw\n").unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let l = list(&[pa, pb, pc]);
    let (shared_path, stranger_path) =
        (shared.display().to_string(), stranger.display().to_string());
    let args_ab = ["-S", "--sasl-pwdb", shared_path.as_str()];
    let args_c = ["-S", "--sasl-pwdb", stranger_path.as_str()];
    let a = member(pa, &l, &args_ab);
    let b = member(pb, &l, &args_ab);
    let c = member(pc, &l, &args_c);
    // A and B accept each other's streams; both refuse C's (it presents "intruder").
    assert!(wait_until(Duration::from_secs(10), || {
        sasl_repl_stat(&a, "repl_refused_handshakes") != "0"
            && sasl_repl_stat(&b, "repl_refused_handshakes") != "0"
    }));
    // A member that cannot authenticate is not waited for (it could never sync us).
    assert!(wait_until(Duration::from_secs(10), || {
        sasl_repl_stat(&a, "repl_ready") == "1" && sasl_repl_stat(&b, "repl_ready") == "1"
    }));
    let mut ca = sasl_client(&a, "client", "c");
    let ring = corecached::ring::Continuum::new(
        corecached::ring::Distribution::Ketama,
        &corecached::ring::Node::parse_list(&l).unwrap(),
    );
    // A key A and B own (replicas 1: two owners) reaches B.
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let o = ring.owners(k.as_bytes(), 2);
            o.contains(&0) && o.contains(&1)
        })
        .unwrap();
    ca.set(key.as_bytes(), b"secret value");
    let mut cb = sasl_client(&b, "client", "c");
    assert!(wait_until(Duration::from_secs(10), || cb
        .get(key.as_bytes())
        == Some(b"secret value".to_vec())));
    // C knows A's user, so A's stream to C gets through: authentication is per direction.
    assert!(wait_until(Duration::from_secs(10), || sasl_repl_stat(
        &a,
        &format!("peer:127.0.0.1:{pc}:state")
    ) == "streaming"));
    // The refused handshakes count as failed authentications.
    let mut sa = sasl_client(&a, "client", "c");
    let errors: u64 = sa
        .stats("")
        .into_iter()
        .find(|(k, _)| k == "auth_errors")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    assert!(errors >= 1);
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}
