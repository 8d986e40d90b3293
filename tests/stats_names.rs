//! corecached's stats against Debian's memcached 1.6.18 (`/usr/bin/memcached`), both started
//! here on free 127.0.0.1 ports: the same workload on both, then the names of every stats group
//! compared (the set and the order), plus the counters the workload decides. Skipped, saying
//! so, only where memcached is not installed (`tools/test-all` installs it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::external::Memcached;
use common::Server;

/// Names only corecached lists, each with why. Everything else must match memcached's.
const OURS_ONLY: &[(&str, &str)] = &[
    // `stats settings`: the eviction policy is corecached's own flag (`--eviction`).
    ("settings", "eviction_policy"),
];

/// A text-protocol connection.
struct Text {
    stream: TcpStream,
}

impl Text {
    fn connect(addr: SocketAddr) -> Text {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Text { stream }
    }

    /// Sends `req` and reads until the last complete line starts with one of `ends`.
    fn call(&mut self, req: &[u8], ends: &[&str]) -> String {
        self.stream.write_all(req).expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let text = String::from_utf8_lossy(&buf);
            if let Some(body) = text.strip_suffix("\r\n") {
                let last = body.rsplit("\r\n").next().unwrap_or(body);
                if ends.iter().any(|e| last.starts_with(e)) {
                    return text.into_owned();
                }
            }
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed after {:?}", text);
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `stats [group]` as (name, value) in the order received.
    fn stats(&mut self, group: &str) -> Vec<(String, String)> {
        let req = if group.is_empty() {
            "stats\r\n".to_string()
        } else {
            format!("stats {group}\r\n")
        };
        self.call(req.as_bytes(), &["END"])
            .lines()
            .filter_map(|l| l.strip_prefix("STAT "))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }
}

/// The same small workload on either server: two slab classes, hits, misses, deletes, CAS (a
/// match and a mismatch), incr/decr, touch, gat and `me`.
fn workload(addr: SocketAddr) {
    let mut c = Text::connect(addr);
    let stored = ["STORED"];
    let big = "x".repeat(500);
    c.call(b"set a:1 0 0 5\r\nhello\r\n", &stored);
    c.call(b"set a:2 0 0 1\r\n7\r\n", &stored);
    c.call(format!("set b:1 0 0 500\r\n{big}\r\n").as_bytes(), &stored);
    c.call(
        format!("set b:2 0 100 500\r\n{big}\r\n").as_bytes(),
        &stored,
    );
    c.call(b"get a:1 b:1 nope\r\n", &["END"]);
    c.call(b"get b:2\r\n", &["END"]);
    let gets = c.call(b"gets a:1\r\n", &["END"]);
    let cas: u64 = gets.split_whitespace().nth(4).unwrap().parse().unwrap();
    c.call(
        format!("cas a:1 0 0 2 {}\r\nhi\r\n", cas + 1).as_bytes(),
        &["EXISTS"],
    );
    c.call(format!("cas a:1 0 0 2 {cas}\r\nhi\r\n").as_bytes(), &stored);
    c.call(b"cas nope 0 0 1 1\r\nx\r\n", &["NOT_FOUND"]);
    c.call(b"incr a:2 3\r\n", &["10"]);
    c.call(b"decr a:2 1\r\n", &["9"]);
    c.call(b"incr nope 1\r\n", &["NOT_FOUND"]);
    c.call(b"touch b:1 100\r\n", &["TOUCHED"]);
    c.call(b"touch nope 100\r\n", &["NOT_FOUND"]);
    c.call(b"gat 100 a:1\r\n", &["END"]);
    c.call(b"me a:1\r\n", &["ME ", "EN"]);
    c.call(b"delete b:1\r\n", &["DELETED"]);
    c.call(b"delete nope\r\n", &["NOT_FOUND"]);
}

/// The names of a group in order; for `items`/`slabs` the per-class suffixes of the first
/// class listed, then the names without a class.
fn names(group: &str, stats: &[(String, String)]) -> Vec<String> {
    let strip = |k: &str| -> Option<String> {
        let rest = match group {
            "items" => k.strip_prefix("items:")?,
            "slabs" => k,
            _ => return Some(k.to_string()),
        };
        let (class, field) = rest.split_once(':')?;
        class.parse::<u32>().ok()?;
        Some(field.to_string())
    };
    let first_class = stats.first().map(|(k, _)| {
        k.trim_start_matches("items:")
            .split(':')
            .next()
            .unwrap()
            .to_string()
    });
    let mut out = Vec::new();
    for (k, _) in stats {
        match strip(k) {
            Some(field) if group == "items" || group == "slabs" => {
                let class = k.trim_start_matches("items:").split(':').next();
                if class == first_class.as_deref() {
                    out.push(field);
                }
            }
            Some(name) => out.push(name),
            None => out.push(k.clone()),
        }
    }
    out
}

/// Sums of per-class fields over every class of a group.
fn class_sum(stats: &[(String, String)], field: &str) -> u64 {
    stats
        .iter()
        .filter(|(k, _)| k.rsplit(':').next() == Some(field) && k.contains(':'))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

fn general_value(stats: &[(String, String)], name: &str) -> String {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .1
        .clone()
}

/// Runs the workload on memcached (started with `mc_args`) and corecached (`cc_args`) and
/// compares every group's names; returns both servers' `stats`, `items` and `slabs` for more
/// checks.
fn compare(mc_args: &[&str], cc_args: &[&str]) -> Option<[Vec<(String, String)>; 6]> {
    let mc = Memcached::try_start(mc_args)?;
    let cc = Server::start(cc_args);
    workload(mc.addr());
    workload(cc.addr());
    let mut m = Text::connect(mc.addr());
    let mut c = Text::connect(cc.addr());
    for group in ["", "settings", "items", "slabs"] {
        let (ms, cs) = (m.stats(group), c.stats(group));
        let group_name = if group.is_empty() { "general" } else { group };
        let want = names(group, &ms);
        let ours_only: Vec<&str> = OURS_ONLY
            .iter()
            .filter(|(g, _)| *g == group_name)
            .map(|(_, n)| *n)
            .collect();
        let got: Vec<String> = names(group, &cs)
            .into_iter()
            .filter(|n| !ours_only.contains(&n.as_str()))
            .collect();
        let missing: Vec<&String> = want.iter().filter(|n| !got.contains(n)).collect();
        let extra: Vec<&String> = got.iter().filter(|n| !want.contains(n)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "stats {group_name}: names only memcached lists {missing:?}, \
             names only corecached lists (not allowed) {extra:?}"
        );
        assert_eq!(
            got, want,
            "stats {group_name}: order differs from memcached's"
        );
    }
    Some([
        m.stats(""),
        c.stats(""),
        m.stats("items"),
        c.stats("items"),
        m.stats("slabs"),
        c.stats("slabs"),
    ])
}

#[test]
fn stats_names_match_memcached_with_default_flags() {
    let Some([mg, cg, mi, ci, ms, cs]) = compare(&[], &["-t", "2"]) else {
        return;
    };
    // The counters this workload decides are the same on both.
    for name in [
        "cmd_get",
        "cmd_set",
        "cmd_touch",
        "cmd_meta",
        "get_hits",
        "get_misses",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "cas_hits",
        "cas_badval",
        "cas_misses",
        "touch_hits",
        "touch_misses",
        "curr_items",
    ] {
        assert_eq!(
            general_value(&cg, name),
            general_value(&mg, name),
            "stats {name}"
        );
    }
    for field in [
        "get_hits",
        "cmd_set",
        "delete_hits",
        "incr_hits",
        "decr_hits",
        "cas_hits",
        "cas_badval",
        "touch_hits",
        "used_chunks",
    ] {
        assert_eq!(
            class_sum(&cs, field),
            class_sum(&ms, field),
            "stats slabs: {field} over all classes"
        );
    }
    for field in ["number", "evicted", "outofmemory"] {
        assert_eq!(
            class_sum(&ci, field),
            class_sum(&mi, field),
            "stats items: {field} over all classes"
        );
    }
    // Two classes in use on both, and active_slabs says so.
    assert_eq!(general_value(&cs, "active_slabs"), "2");
    assert_eq!(general_value(&ms, "active_slabs"), "2");
}

#[test]
fn stats_names_follow_memcached_without_the_lru_maintainer_and_reassign() {
    // The names that depend on -o settings come and go as in memcached.
    let o = "no_lru_maintainer,no_slab_reassign,no_lru_crawler,no_maxconns_fast,idle_timeout=600";
    compare(&["-o", o], &["-t", "2", "-o", o]);
}

#[test]
fn stats_names_follow_memcached_with_temp_lru() {
    // `temporary_ttl` turns the TEMP list on (memcached has no `temp_lru` option).
    compare(
        &["-o", "temporary_ttl=30"],
        &["-t", "2", "-o", "temporary_ttl=30"],
    );
}

/// PREFIX lines in a fixed order (memcached lists them in its hash table's order).
fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.split_inclusive("\r\n").map(String::from).collect();
    let end = lines.pop();
    lines.sort();
    lines.extend(end);
    lines
}

#[test]
fn text_stats_detail_counts_per_prefix_as_memcached() {
    let Some(mc) = Memcached::try_start(&[]) else {
        return;
    };
    let cc = Server::start(&["-t", "2"]);
    let script: &[(&[u8], &[&str])] = &[
        (b"stats detail\r\n", &["CLIENT_ERROR"]),
        (b"stats detail foo\r\n", &["CLIENT_ERROR"]),
        (b"stats detail dump\r\n", &["END"]),
        (b"stats detail on\r\n", &["OK"]),
        (b"set a:1 0 0 1\r\nx\r\n", &["STORED"]),
        (b"add a:1 0 0 1\r\nx\r\n", &["NOT_STORED"]),
        (b"set plain 0 0 1\r\nx\r\n", &["STORED"]),
        (b"get a:1 a:2 b:3 plain\r\n", &["END"]),
        (b"gat 10 a:1\r\n", &["END"]),
        (b"delete a:9\r\n", &["NOT_FOUND"]),
        (b"delete a:1\r\n", &["DELETED"]),
        (b"stats detail dump\r\n", &["END"]),
        (b"stats detail off\r\n", &["OK"]),
        (b"get b:1\r\n", &["END"]),
        (b"stats detail dump\r\n", &["END"]),
        (b"stats reset\r\n", &["RESET"]),
        (b"stats detail dump\r\n", &["END"]),
    ];
    let mut m = Text::connect(mc.addr());
    let mut c = Text::connect(cc.addr());
    for (req, ends) in script {
        let (want, got) = (m.call(req, ends), c.call(req, ends));
        let what = String::from_utf8_lossy(req);
        assert_eq!(sorted_lines(&got), sorted_lines(&want), "{what}");
    }
    // -D sets the delimiter and turns detail on, in memcached as here.
    let mc = Memcached::try_start(&["-D", "/"]).unwrap();
    let cc = Server::start(&["-t", "2", "-D", "/"]);
    for addr in [mc.addr(), cc.addr()] {
        let mut t = Text::connect(addr);
        t.call(b"set u/1 0 0 1\r\nx\r\n", &["STORED"]);
        t.call(b"set u:1 0 0 1\r\nx\r\n", &["STORED"]);
        let dump = t.call(b"stats detail dump\r\n", &["END"]);
        assert_eq!(
            dump, "PREFIX u get 0 hit 0 set 1 del 0\r\nEND\r\n",
            "{addr}"
        );
        let settings = t.stats("settings");
        assert!(settings.contains(&("detail_enabled".into(), "yes".into())));
    }
}

#[test]
fn text_stats_sizes_as_memcached() {
    let Some(mc) = Memcached::try_start(&[]) else {
        return;
    };
    let cc = Server::start(&["-t", "2"]);
    let mut m = Text::connect(mc.addr());
    let mut c = Text::connect(cc.addr());
    fn both(m: &mut Text, c: &mut Text, req: &[u8], ends: &[&str]) -> String {
        let want = m.call(req, ends);
        assert_eq!(c.call(req, ends), want, "{}", String::from_utf8_lossy(req));
        want
    }
    assert_eq!(
        both(&mut m, &mut c, b"stats sizes\r\n", &["END"]),
        "STAT sizes_status disabled\r\nEND\r\n"
    );
    // memcached answers these two without END.
    both(&mut m, &mut c, b"stats sizes_enable\r\n", &["STAT"]);
    both(&mut m, &mut c, b"stats sizes\r\n", &["END"]);
    let (m_settings, c_settings) = (m.stats("settings"), c.stats("settings"));
    for s in [m_settings, c_settings] {
        assert!(s.contains(&("track_sizes".into(), "yes".into())));
    }
    // One item: one bucket of one item (the bucket's size is the item's size as stored,
    // which differs between the two).
    for t in [&mut m, &mut c] {
        t.call(b"set k 0 0 10\r\n0123456789\r\n", &["STORED"]);
        let sizes = t.stats("sizes");
        assert_eq!(sizes.len(), 1, "{sizes:?}");
        assert_eq!(sizes[0].1, "1");
        assert_eq!(sizes[0].0.parse::<u64>().unwrap() % 32, 0);
    }
    assert_eq!(
        both(&mut m, &mut c, b"stats sizes_disable\r\n", &["STAT"]),
        "STAT sizes_status disabled\r\n"
    );
    both(&mut m, &mut c, b"stats sizes\r\n", &["END"]);
}

/// A binary `stats` answer: its status and pairs (empty for an error).
fn bin_stats(c: &mut common::Client, group: &str) -> (u16, Vec<(String, String)>) {
    c.send(&common::get(common::op::STAT, group.as_bytes()));
    let mut out = Vec::new();
    loop {
        let r = c.recv();
        if r.status != common::status::OK {
            return (r.status, out);
        }
        if r.key.is_empty() {
            return (r.status, out);
        }
        out.push((
            String::from_utf8(r.key).unwrap(),
            String::from_utf8(r.value).unwrap(),
        ));
    }
}

#[test]
fn binary_stats_groups_answer_as_memcached() {
    let Some(mc) = Memcached::try_start(&[]) else {
        return;
    };
    let cc = Server::start(&["-t", "2"]);
    workload(mc.addr());
    workload(cc.addr());
    let mut m = common::Client::connect(mc.addr());
    let mut c = common::Client::connect(cc.addr());
    for group in [
        "",
        "settings",
        "items",
        "slabs",
        "sizes",
        "detail on",
        "detail dump",
        "detail off",
        // (Bare "detail" is left out: memcached reads past the key there, so its answer
        // depends on whatever bytes its buffer held before.)
        "detail bogus",
        "conns",
        "cachedump 1 1",
        "nosuchgroup",
        "reset",
    ] {
        if group == "detail dump" {
            // Something to count while detail is on.
            for cl in [&mut m, &mut c] {
                cl.set(b"p:1", b"v");
                cl.get(b"p:1");
                cl.get(b"p:2");
            }
        }
        let ((ms, mp), (cs, cp)) = (bin_stats(&mut m, group), bin_stats(&mut c, group));
        assert_eq!(cs, ms, "binary stats {group:?}: status");
        let mut want = names(group, &mp);
        let mut got = names(group, &cp);
        got.retain(|n| !OURS_ONLY.iter().any(|(_, o)| o == n));
        want.sort();
        got.sort();
        want.dedup();
        got.dedup();
        assert_eq!(got, want, "binary stats {group:?}: names");
        if group == "detail dump" {
            assert_eq!(
                sorted_lines(&cp[0].1),
                sorted_lines(&mp[0].1),
                "binary stats detail dump"
            );
        }
    }
    // sizes_enable / sizes_disable: one packet and no terminator; the next answer is the
    // next request's.
    for group in ["sizes_enable", "sizes_disable"] {
        for cl in [&mut m, &mut c] {
            cl.send(&common::get(common::op::STAT, group.as_bytes()));
            cl.send(&common::get(common::op::NOOP, b""));
            let r = cl.recv();
            assert_eq!(r.key, b"sizes_status", "{group}");
            let want: &[u8] = if group == "sizes_enable" {
                b"enabled"
            } else {
                b"disabled"
            };
            assert_eq!(r.value, want, "{group}");
            assert_eq!(cl.recv().opcode, common::op::NOOP, "{group}: no terminator");
        }
    }
}
