//! memcached's operator commands against the real server: `stats cachedump`, `lru_crawler`,
//! `cache_memlimit`, `slabs`, `stats conns`. Fixed replies below were copied from memcached
//! 1.6.18 given the same bytes; lines carrying times, CAS values or sizes are checked field by
//! field (those values are corecached's own).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{wait_until, Server};

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `send` and reads until the reply ends with `end` (bounded by the read timeout).
fn call_until(s: &mut TcpStream, send: &[u8], end: &[u8]) -> Vec<u8> {
    s.write_all(send).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    while !got.ends_with(end) {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reply to {:?}: {e}", String::from_utf8_lossy(send)));
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Sends `send` and asserts the reply is exactly `expect`.
fn exchange(s: &mut TcpStream, send: &str, expect: &str) {
    s.write_all(send.as_bytes()).unwrap();
    let mut got = vec![0; expect.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("reply to {send:?}: {e}"));
    assert_eq!(String::from_utf8_lossy(&got), expect, "reply to {send:?}");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `name value` pairs of a text `stats <group>` reply.
fn stats(s: &mut TcpStream, group: &str) -> Vec<(String, String)> {
    let reply = call_until(s, format!("stats {group}\r\n").as_bytes(), b"END\r\n");
    String::from_utf8(reply)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn stat(s: &mut TcpStream, group: &str, name: &str) -> String {
    stats(s, group)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in stats {group}"))
        .1
}

/// Cases copied from memcached 1.6.18: (request bytes, exact reply).
const REFUSALS: &[(&str, &str)] = &[
    ("stats cachedump 64 0\r\n", "CLIENT_ERROR Illegal slab id\r\n"),
    ("stats cachedump 1\r\n", "CLIENT_ERROR bad command line\r\n"),
    ("stats cachedump x 0\r\n", "CLIENT_ERROR bad command line format\r\n"),
    ("stats cachedump 1 -1\r\n", "CLIENT_ERROR bad command line format\r\n"),
    ("stats cachedump 0 0\r\n", "END\r\n"),
    ("stats cachedump 63 0\r\n", "END\r\n"),
    ("lru_crawler metadump 0\r\n", "BADCLASS invalid class id\r\n"),
    ("lru_crawler metadump 64\r\n", "BADCLASS invalid class id\r\n"),
    ("lru_crawler metadump 1,x\r\n", "BADCLASS invalid class id\r\n"),
    ("lru_crawler metadump 63\r\n", "END\r\n"),
    ("lru_crawler metadump\r\n", "ERROR\r\n"),
    ("lru_crawler metadump all extra\r\n", "ERROR\r\n"),
    ("lru_crawler crawl all\r\n", "OK\r\n"),
    ("lru_crawler crawl 1,2,3\r\n", "OK\r\n"),
    ("lru_crawler crawl 0\r\n", "BADCLASS invalid class id\r\n"),
    ("lru_crawler crawl 64\r\n", "BADCLASS invalid class id\r\n"),
    ("lru_crawler crawl ,\r\n", "NOTSTARTED no items to crawl\r\n"),
    ("lru_crawler crawl hash\r\n", "ERROR an unknown error happened\r\n"),
    ("lru_crawler crawl\r\n", "ERROR\r\n"),
    ("lru_crawler\r\n", "ERROR\r\n"),
    ("lru_crawler foo\r\n", "ERROR\r\n"),
    ("lru_crawler sleep 100\r\n", "OK\r\n"),
    ("lru_crawler sleep 1000001\r\n", "CLIENT_ERROR sleep must be one second or less\r\n"),
    ("lru_crawler sleep x\r\n", "CLIENT_ERROR bad command line format\r\n"),
    ("lru_crawler sleep 5 noreply\r\n", "ERROR\r\n"),
    ("lru_crawler tocrawl 10\r\n", "OK\r\n"),
    ("lru_crawler tocrawl -1\r\n", "CLIENT_ERROR bad command line format\r\n"),
    ("lru_crawler enable\r\n", "ERROR failed to start lru crawler thread\r\n"),
    ("lru_crawler disable\r\nlru_crawler disable\r\n", "OK\r\nOK\r\n"),
    ("lru_crawler crawl all\r\n", "CLIENT_ERROR lru crawler disabled\r\n"),
    ("lru_crawler metadump all\r\n", "CLIENT_ERROR lru crawler disabled\r\n"),
    ("lru_crawler enable\r\n", "OK\r\n"),
    ("cache_memlimit\r\n", "ERROR\r\n"),
    ("cache_memlimit 7\r\n", "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"),
    ("cache_memlimit x\r\ncache_memlimit -1\r\n", "ERROR\r\nERROR\r\n"),
    ("cache_memlimit 1000000001\r\n", "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"),
    ("cache_memlimit 4294967296\r\n", "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"),
    ("cache_memlimit 64 noreply\r\ncache_memlimit 64 extra\r\n", "OK\r\n"),
    ("cache_memlimit 64 noreply extra\r\n", "ERROR\r\n"),
    ("verbosity\r\nverbosity invalid\r\nverbosity 1 noreply\r\nverbosity noreply\r\nverbosity 1 2\r\n", "ERROR\r\nCLIENT_ERROR bad command line format\r\nOK\r\n"),
    ("slabs reassign 1 1\r\n", "SAME src and dst class are identical\r\n"),
    ("slabs reassign 1 2\r\n", "NOSPARE source class has no spare pages\r\n"),
    ("slabs reassign 99 2\r\n", "BADCLASS invalid src or dst class id\r\n"),
    ("slabs reassign -1 5\r\n", "BADCLASS invalid src or dst class id\r\n"),
    ("slabs reassign x 2\r\n", "CLIENT_ERROR bad command line format\r\n"),
    ("slabs reassign 1\r\nslabs reassign 1 2 noreply\r\n", "ERROR\r\nERROR\r\n"),
    ("slabs automove 3\r\n", "ERROR\r\n"),
    ("slabs automove x\r\n", "CLIENT_ERROR bad command line format\r\n"),
    ("slabs automove 1 noreply\r\nslabs automove ratio 0.5\r\n", "OK\r\n"),
    ("slabs automove ratio x\r\nslabs automove ratio\r\nslabs automove\r\n", "ERROR\r\nERROR\r\nERROR\r\n"),
    ("slabs\r\nslabs foo 1\r\n", "ERROR\r\nERROR\r\n"),
    ("version\r\nlru_crawler metadump all\r\n", "VERSION 1.6.18-corecached-0.1.0\r\nERROR cannot pipeline other commands before metadump\r\n"),
];

#[test]
fn operator_commands_answer_as_memcached() {
    let s = Server::start(&["-t", "2"]);
    let mut c = connect(&s);
    let version = call_until(&mut c, b"version\r\n", b"\r\n");
    let version = String::from_utf8(version).unwrap();
    for (send, expect) in REFUSALS {
        // The version string is corecached's own.
        let expect = expect.replace("VERSION 1.6.18-corecached-0.1.0\r\n", &version);
        exchange(&mut c, send, &expect);
    }
}

/// The fields of an `ITEM <key> [<n> b; <t> s]` line.
fn cachedump_items(reply: &[u8]) -> Vec<(String, u64, u64)> {
    let text = String::from_utf8(reply.to_vec()).unwrap();
    assert!(text.ends_with("END\r\n"), "{text}");
    text.split_terminator("\r\n")
        .filter(|l| *l != "END")
        .map(|l| {
            let rest = l.strip_prefix("ITEM ").expect(l);
            let (key, rest) = rest.split_once(" [").expect(l);
            let (bytes, rest) = rest.split_once(" b; ").expect(l);
            let exp = rest.strip_suffix(" s]").expect(l);
            (
                key.to_string(),
                bytes.parse().unwrap(),
                exp.parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn cachedump_lists_a_class_most_recent_first() {
    let s = Server::start(&["-t", "1"]);
    let mut c = connect(&s);
    exchange(
        &mut c,
        "set a 0 0 1\r\nx\r\nset b 0 100 2\r\nxy\r\n",
        "STORED\r\nSTORED\r\n",
    );
    exchange(&mut c, "set gone 0 -1 1\r\nx\r\n", "STORED\r\n");
    let t = now();
    // memcached: "ITEM b [2 b; <unix expiry> s]\r\nITEM a [1 b; 0 s]\r\nEND\r\n".
    let items = cachedump_items(&call_until(&mut c, b"stats cachedump 1 0\r\n", b"END\r\n"));
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!((items[0].0.as_str(), items[0].1), ("b", 2));
    assert!((t + 98..=t + 101).contains(&items[0].2), "{items:?}");
    assert_eq!(items[1], ("a".to_string(), 1, 0));
    let one = cachedump_items(&call_until(&mut c, b"stats cachedump 1 1\r\n", b"END\r\n"));
    assert_eq!(one, items[..1]);
    exchange(&mut c, "stats cachedump 2 0\r\n", "END\r\n");
    // Other classes list only their own.
    let big = "v".repeat(3000);
    exchange(
        &mut c,
        &format!("set big 0 0 3000\r\n{big}\r\n"),
        "STORED\r\n",
    );
    let dump = call_until(&mut c, b"lru_crawler metadump all\r\n", b"END\r\n");
    let dump = String::from_utf8(dump).unwrap();
    let cls = dump
        .lines()
        .find(|l| l.starts_with("key=big "))
        .and_then(|l| l.split(" cls=").nth(1))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    let items = cachedump_items(&call_until(
        &mut c,
        format!("stats cachedump {cls} 0\r\n").as_bytes(),
        b"END\r\n",
    ));
    assert_eq!(items, [("big".to_string(), 3000, 0)]);
}

#[test]
fn cachedump_merges_every_shard() {
    let s = Server::start(&["-t", "4"]);
    let mut c = connect(&s);
    let mut send = String::new();
    for i in 0..200 {
        send.push_str(&format!("set k{i} 0 0 1 noreply\r\nx\r\n"));
    }
    c.write_all(send.as_bytes()).unwrap();
    exchange(&mut c, "mn\r\n", "MN\r\n");
    let items = cachedump_items(&call_until(&mut c, b"stats cachedump 1 0\r\n", b"END\r\n"));
    let mut keys: Vec<String> = items.into_iter().map(|i| i.0).collect();
    keys.sort();
    let mut want: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
    let items = cachedump_items(&call_until(&mut c, b"stats cachedump 1 7\r\n", b"END\r\n"));
    assert_eq!(items.len(), 7);
}

/// `key=... exp=... la=... cas=... fetch=... cls=... size=...` as (key, fields).
fn metadump_lines(reply: &[u8]) -> Vec<(String, Vec<(String, String)>)> {
    let text = String::from_utf8(reply.to_vec()).unwrap();
    let body = text.strip_suffix("END\r\n").expect("ends with END");
    body.split_terminator('\n')
        .map(|l| {
            assert!(
                !l.ends_with('\r'),
                "metadump lines end with a bare newline: {l:?}"
            );
            let fields: Vec<(String, String)> = l
                .split(' ')
                .map(|f| {
                    let (k, v) = f.split_once('=').expect(l);
                    (k.to_string(), v.to_string())
                })
                .collect();
            let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
            assert_eq!(
                names,
                ["key", "exp", "la", "cas", "fetch", "cls", "size"],
                "{l}"
            );
            (fields[0].1.clone(), fields)
        })
        .collect()
}

#[test]
fn metadump_streams_every_live_item_once() {
    let s = Server::start(&["-t", "2"]);
    let mut c = connect(&s);
    exchange(
        &mut c,
        "set c%20d 0 0 1\r\nx\r\nset e 0 1000 1\r\nx\r\n",
        "STORED\r\nSTORED\r\n",
    );
    exchange(
        &mut c,
        "set dead 0 -1 1\r\nx\r\nget e\r\n",
        "STORED\r\nVALUE e 0 1\r\nx\r\nEND\r\n",
    );
    let t = now();
    let lines = metadump_lines(&call_until(
        &mut c,
        b"lru_crawler metadump all\r\n",
        b"END\r\n",
    ));
    let find = |k: &str| lines.iter().find(|l| l.0 == k).map(|l| l.1.clone());
    // memcached: key=c%2520d exp=-1 la=<t> cas=<n> fetch=no cls=1 size=<n>
    let cd = find("c%2520d").expect("url-encoded key");
    let get = |f: &[(String, String)], n: &str| f.iter().find(|x| x.0 == n).unwrap().1.clone();
    assert_eq!(get(&cd, "exp"), "-1");
    assert_eq!(
        (get(&cd, "fetch").as_str(), get(&cd, "cls").as_str()),
        ("no", "1")
    );
    let la: u64 = get(&cd, "la").parse().unwrap();
    assert!((t - 2..=t + 1).contains(&la));
    let e = find("e").unwrap();
    assert_eq!(get(&e, "fetch"), "yes");
    let exp: u64 = get(&e, "exp").parse().unwrap();
    assert!((t + 998..=t + 1001).contains(&exp));
    assert!(find("dead").is_none(), "expired items are not listed");
    assert_eq!(lines.len(), 2);
    // The same for the hash walk and the class list; a command after a dump is answered after it.
    for form in ["hash", "1", "1,2"] {
        let got = call_until(
            &mut c,
            format!("lru_crawler metadump {form}\r\nmn\r\n").as_bytes(),
            b"MN\r\n",
        );
        let got = got.strip_suffix(b"MN\r\n").unwrap();
        assert_eq!(metadump_lines(got).len(), 2, "{form}");
    }

    // Many items, over many walk steps and shards: each listed exactly once.
    let mut send = String::new();
    for i in 0..20_000 {
        send.push_str(&format!("set key:{i} 0 0 5 noreply\r\nvalue\r\n"));
    }
    c.write_all(send.as_bytes()).unwrap();
    exchange(&mut c, "mn\r\n", "MN\r\n");
    let lines = metadump_lines(&call_until(
        &mut c,
        b"lru_crawler metadump all\r\n",
        b"END\r\n",
    ));
    let mut keys: Vec<String> = lines.into_iter().map(|l| l.0).collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!((n, keys.len()), (20_002, 20_002));
    assert!(keys.contains(&"key%3A19999".to_string()));
}

#[test]
fn memcdump_lists_the_keys() {
    let memcdump = std::path::Path::new("/usr/bin/memcdump");
    if !memcdump.exists() {
        eprintln!("skipped: /usr/bin/memcdump (libmemcached-tools) is not installed");
        return;
    }
    let s = Server::start(&["-t", "2"]);
    let mut c = connect(&s);
    let mut send = String::new();
    for i in 0..50 {
        send.push_str(&format!("set dump{i} 0 0 1 noreply\r\nx\r\n"));
    }
    c.write_all(send.as_bytes()).unwrap();
    exchange(&mut c, "mn\r\n", "MN\r\n");
    let out = std::process::Command::new(memcdump)
        .arg(format!("--servers=127.0.0.1:{}", s.port()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut keys: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    keys.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("dump{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
}

#[test]
fn dumps_refused_under_x() {
    let s = Server::start(&["-t", "1", "-X"]);
    let mut c = connect(&s);
    exchange(
        &mut c,
        "stats cachedump 1 0\r\n",
        "CLIENT_ERROR stats cachedump not allowed\r\n",
    );
    exchange(
        &mut c,
        "lru_crawler metadump all\r\n",
        "ERROR metadump not allowed\r\n",
    );
    assert_eq!(stat(&mut c, "settings", "dump_enabled"), "no");
}

#[test]
fn crawl_reclaims_expired_items_and_no_lru_crawler_stops_the_reclaimer() {
    let s = Server::start(&["-t", "2", "-o", "no_lru_crawler"]);
    let mut c = connect(&s);
    let mut send = String::from("set live 0 0 1 noreply\r\nx\r\n");
    for i in 0..50 {
        send.push_str(&format!("set dead{i} 0 -1 1 noreply\r\nx\r\n"));
    }
    c.write_all(send.as_bytes()).unwrap();
    exchange(&mut c, "mn\r\n", "MN\r\n");
    assert_eq!(stat(&mut c, "settings", "lru_crawler"), "no");
    exchange(
        &mut c,
        "lru_crawler crawl all\r\n",
        "CLIENT_ERROR lru crawler disabled\r\n",
    );
    // The background reclaimer is off too: the dead items stay linked.
    assert_eq!(stat(&mut c, "", "reclaimed"), "0");
    assert_eq!(stat(&mut c, "", "curr_items"), "51");
    exchange(
        &mut c,
        "lru_crawler enable\r\nlru_crawler crawl all\r\n",
        "OK\r\nOK\r\n",
    );
    assert_eq!(stat(&mut c, "", "curr_items"), "1");
    assert_eq!(stat(&mut c, "", "reclaimed"), "50");
    assert_eq!(stat(&mut c, "settings", "lru_crawler"), "yes");
    exchange(&mut c, "get live\r\n", "VALUE live 0 1\r\nx\r\nEND\r\n");
}

#[test]
fn cache_memlimit_grows_the_cache_and_shows_in_stats() {
    let s = Server::start(&["-t", "1", "-m", "8"]);
    let mut c = connect(&s);
    let value = "v".repeat(200_000);
    let fill = |c: &mut TcpStream, from: usize| {
        let mut send = String::new();
        for i in from..from + 60 {
            send.push_str(&format!(
                "set f{i} 0 0 {} noreply\r\n{value}\r\n",
                value.len()
            ));
        }
        c.write_all(send.as_bytes()).unwrap();
        exchange(c, "mn\r\n", "MN\r\n");
    };
    fill(&mut c, 0);
    let malloced = |c: &mut TcpStream| stat(c, "slabs", "total_malloced").parse::<u64>().unwrap();
    // Full: within one chunk (at most 250,000 bytes for these items) of the limit.
    let full = |m: u64, limit: u64| m <= limit && m + 250_000 > limit;
    let m = malloced(&mut c);
    assert!(full(m, 8 << 20), "{m}");
    exchange(&mut c, "cache_memlimit 16\r\n", "OK\r\n");
    assert_eq!(
        stat(&mut c, "", "limit_maxbytes"),
        (16u64 << 20).to_string()
    );
    assert_eq!(
        stat(&mut c, "settings", "maxbytes"),
        (16u64 << 20).to_string()
    );
    fill(&mut c, 100);
    let m = malloced(&mut c);
    assert!(full(m, 16 << 20), "{m}");
    // Lowered: memcached keeps what it holds and only stops allocating; so does corecached.
    exchange(&mut c, "cache_memlimit 8\r\n", "OK\r\n");
    fill(&mut c, 200);
    assert_eq!(malloced(&mut c), m);
    assert_eq!(stat(&mut c, "", "limit_maxbytes"), (8u64 << 20).to_string());
}

#[test]
fn slabs_reassign_moves_a_page_and_automove_is_a_setting() {
    let s = Server::start(&["-t", "1", "-m", "16"]);
    let mut c = connect(&s);
    // Three pages of class 1 (1,024 chunks of 64 bytes per 64 KiB page): short keys, empty
    // values.
    let mut send = String::new();
    for i in 0..2_100 {
        send.push_str(&format!("set {i} 0 0 0 noreply\r\n\r\n"));
    }
    c.write_all(send.as_bytes()).unwrap();
    exchange(&mut c, "mn\r\n", "MN\r\n");
    let pages = |c: &mut TcpStream, class: u32| {
        stats(c, "slabs")
            .into_iter()
            .find(|(k, _)| *k == format!("{class}:total_pages"))
            .map_or(0, |(_, v)| v.parse::<u64>().unwrap())
    };
    assert_eq!(pages(&mut c, 1), 3);
    let moved: u64 = stat(&mut c, "", "slabs_moved").parse().unwrap();
    exchange(&mut c, "slabs reassign 1 5\r\n", "OK\r\n");
    assert_eq!((pages(&mut c, 1), pages(&mut c, 5)), (2, 1));
    assert_eq!(stat(&mut c, "", "slabs_moved"), (moved + 1).to_string());
    exchange(
        &mut c,
        "slabs reassign 5 1\r\n",
        "NOSPARE source class has no spare pages\r\n",
    );
    exchange(&mut c, "slabs reassign -1 5\r\n", "OK\r\n");
    assert_eq!((pages(&mut c, 1), pages(&mut c, 5)), (1, 2));
    exchange(&mut c, "slabs automove 0\r\n", "OK\r\n");
    assert_eq!(stat(&mut c, "settings", "slab_automove"), "0");
    exchange(&mut c, "slabs automove 2\r\n", "OK\r\n");
    assert_eq!(stat(&mut c, "settings", "slab_automove"), "2");
    let s = Server::start(&["-t", "1", "-o", "no_slab_reassign"]);
    let mut c = connect(&s);
    exchange(
        &mut c,
        "slabs reassign 1 2\r\n",
        "CLIENT_ERROR slab reassignment disabled\r\n",
    );
}

#[test]
fn stats_conns_lists_listener_and_connections() {
    let s = Server::start(&["-t", "2"]);
    let port = s.port();
    let mut used = connect(&s);
    exchange(&mut used, "version\r\n", &{
        let mut v = connect(&s);
        String::from_utf8(call_until(&mut v, b"version\r\n", b"\r\n")).unwrap()
    });
    let fresh = connect(&s);
    let mut asking = connect(&s);
    // memcached's t/stats-conns.t: a client between a storage line and its data is conn_nread.
    let mut sending = connect(&s);
    sending.write_all(b"set foo 0 0 6\r\n").unwrap();
    let addr = |t: &TcpStream| format!("tcp:127.0.0.1:{}", t.local_addr().unwrap().port());
    // memcached 1.6.18: STAT <fd>:addr, :listen_addr (not for listeners), :state,
    // :secs_since_last_cmd, by descriptor.
    let mut by_fd: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let seen = wait_until(Duration::from_secs(10), || {
        by_fd.clear();
        for (k, v) in stats(&mut asking, "conns") {
            let (fd, field) = k.split_once(':').unwrap();
            match by_fd.last_mut() {
                Some((f, fields)) if f == fd => fields.push((field.into(), v)),
                _ => by_fd.push((fd.into(), vec![(field.into(), v)])),
            }
        }
        by_fd.iter().any(|(_, f)| f[0].1 == addr(&fresh))
            && by_fd
                .iter()
                .any(|(_, f)| f[0].1 == addr(&sending) && f[2].1 == "conn_nread")
    });
    assert!(seen, "{by_fd:?}");
    let fds: Vec<u64> = by_fd.iter().map(|(fd, _)| fd.parse().unwrap()).collect();
    assert!(fds.windows(2).all(|w| w[0] < w[1]), "ordered by descriptor");
    let entry = |a: &str| by_fd.iter().find(|(_, f)| f[0].1 == a).unwrap().1.clone();
    let listener = entry(&format!("tcp:127.0.0.1:{port}"));
    let names: Vec<&str> = listener.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["addr", "state", "secs_since_last_cmd"]);
    assert_eq!(listener[1].1, "conn_listening");
    for (conn, state) in [
        (&asking, "conn_parse_cmd"),
        (&used, "conn_read"),
        (&fresh, "conn_new_cmd"),
        (&sending, "conn_nread"),
    ] {
        let e = entry(&addr(conn));
        let names: Vec<&str> = e.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            ["addr", "listen_addr", "state", "secs_since_last_cmd"]
        );
        assert_eq!(e[1].1, format!("tcp:127.0.0.1:{port}"));
        assert_eq!(e[2].1, state, "{e:?}");
        assert!(e[3].1.parse::<u64>().unwrap() <= 2);
    }
}
