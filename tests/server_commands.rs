//! Every binary command (with its quiet variant) against the real server, plus stats, flush,
//! expiry, big values and protocol errors.

mod common;

use std::time::Duration;

use common::{arith, get, op, status, store, touch, Client, Req, Server};

fn noop() -> Req<'static> {
    get(op::NOOP, b"")
}

/// Sends `reqs` in one write followed by a Noop; returns every reply before the Noop's.
fn pipeline(c: &mut Client, reqs: &[Req]) -> Vec<common::Resp> {
    let mut bytes = Vec::new();
    for r in reqs {
        bytes.extend(r.encode());
    }
    bytes.extend(noop().encode());
    c.send_raw(&bytes);
    let mut out = Vec::new();
    loop {
        let r = c.recv();
        if r.opcode == op::NOOP {
            return out;
        }
        out.push(r);
    }
}

#[test]
fn get_family_and_quiet_misses() {
    let s = Server::start(&["-t", "2"]);
    let mut c = s.client();
    let r = c.call(&store(op::SET, b"g1", b"hello", 42, 0));
    assert_eq!((r.status, r.magic, r.opcode), (status::OK, 0x81, op::SET));
    assert!(r.cas != 0 && r.extras.is_empty() && r.key.is_empty() && r.value.is_empty());
    let set_cas = r.cas;

    let r = c.call(&get(op::GET, b"g1"));
    assert_eq!((r.status, r.flags(), r.cas), (status::OK, 42, set_cas));
    assert_eq!((r.value.as_slice(), r.key.len()), (&b"hello"[..], 0));
    let r = c.call(&get(op::GETK, b"g1"));
    assert_eq!(
        (r.key.as_slice(), r.value.as_slice()),
        (&b"g1"[..], &b"hello"[..])
    );
    let r = c.call(&get(op::GET, b"nope"));
    assert_eq!(r.status, status::NOT_FOUND);
    let r = c.call(&get(op::GETK, b"nope"));
    assert_eq!(
        (r.status, r.key.as_slice()),
        (status::NOT_FOUND, &b"nope"[..])
    );

    // Quiet gets: misses silent, hits answered, in order.
    let mut reqs = vec![get(op::GETQ, b"nope"), get(op::GETKQ, b"g1")];
    reqs[0].opaque = 1;
    reqs[1].opaque = 2;
    let replies = pipeline(&mut c, &reqs);
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].opcode, replies[0].opaque), (op::GETKQ, 2));
    assert_eq!(replies[0].key, b"g1");
    let replies = pipeline(&mut c, &[get(op::GETQ, b"g1"), get(op::GETKQ, b"nope")]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].value, b"hello");
}

#[test]
fn storage_commands_and_quiet_variants() {
    let s = Server::start(&["-t", "2"]);
    let mut c = s.client();
    // Add / AddQ.
    assert_eq!(c.call(&store(op::ADD, b"a", b"1", 0, 0)).status, status::OK);
    assert_eq!(
        c.call(&store(op::ADD, b"a", b"2", 0, 0)).status,
        status::EXISTS
    );
    let r = pipeline(
        &mut c,
        &[
            store(op::ADDQ, b"a", b"x", 0, 0),
            store(op::ADDQ, b"a2", b"x", 0, 0),
        ],
    );
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].opcode, r[0].status), (op::ADDQ, status::EXISTS));
    // Replace / ReplaceQ.
    assert_eq!(
        c.call(&store(op::REPLACE, b"missing", b"1", 0, 0)).status,
        status::NOT_FOUND
    );
    assert_eq!(
        c.call(&store(op::REPLACE, b"a", b"r", 0, 0)).status,
        status::OK
    );
    let r = pipeline(
        &mut c,
        &[
            store(op::REPLACEQ, b"a", b"rq", 0, 0),
            store(op::REPLACEQ, b"m", b"", 0, 0),
        ],
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, status::NOT_FOUND);
    assert_eq!(c.get(b"a").unwrap(), b"rq");
    // SetQ and CAS.
    assert!(pipeline(&mut c, &[store(op::SETQ, b"s", b"v", 0, 0)]).is_empty());
    let cas = c.call(&get(op::GET, b"s")).cas;
    let mut req = store(op::SET, b"s", b"v2", 0, 0);
    req.cas = cas + 1;
    assert_eq!(c.call(&req).status, status::EXISTS);
    req.cas = cas;
    assert_eq!(c.call(&req).status, status::OK);
    // Append / Prepend and their quiet variants.
    let r = c.call(&Req {
        opcode: op::APPEND,
        key: b"s",
        value: b"-end",
        ..Req::default()
    });
    assert_eq!(r.status, status::OK);
    let r = c.call(&Req {
        opcode: op::PREPEND,
        key: b"s",
        value: b"start-",
        ..Req::default()
    });
    assert_eq!(r.status, status::OK);
    let r = pipeline(
        &mut c,
        &[
            Req {
                opcode: op::APPENDQ,
                key: b"s",
                value: b"!",
                ..Req::default()
            },
            Req {
                opcode: op::PREPENDQ,
                key: b"s",
                value: b"<",
                ..Req::default()
            },
            Req {
                opcode: op::APPENDQ,
                key: b"nokey",
                value: b"!",
                ..Req::default()
            },
        ],
    );
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].opcode, r[0].status),
        (op::APPENDQ, status::NOT_STORED)
    );
    assert_eq!(c.get(b"s").unwrap(), b"<start-v2-end!");
    // Delete / DeleteQ.
    let r = c.call(&get(op::DELETE, b"s"));
    assert_eq!((r.status, r.cas), (status::OK, 0));
    assert_eq!(c.call(&get(op::DELETE, b"s")).status, status::NOT_FOUND);
    c.set(b"d", b"1");
    let r = pipeline(&mut c, &[get(op::DELETEQ, b"d"), get(op::DELETEQ, b"d")]);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].opcode, r[0].status), (op::DELETEQ, status::NOT_FOUND));
}

#[test]
fn counters_touch_and_gat() {
    let s = Server::start(&["-t", "2"]);
    let mut c = s.client();
    let r = c.call(&arith(op::INCR, b"n", 5, 10, 0));
    assert_eq!((r.status, r.counter()), (status::OK, 10));
    assert!(r.cas != 0);
    assert_eq!(c.call(&arith(op::INCR, b"n", 5, 10, 0)).counter(), 15);
    assert_eq!(c.call(&arith(op::DECR, b"n", 20, 0, 0)).counter(), 0);
    let r = c.call(&arith(op::DECR, b"absent", 1, 0, 0xffff_ffff));
    assert_eq!(r.status, status::NOT_FOUND);
    let r = pipeline(
        &mut c,
        &[
            arith(op::INCRQ, b"n", 7, 0, 0),
            arith(op::DECRQ, b"n", 2, 0, 0),
            arith(op::INCRQ, b"z", 1, 0, 0xffff_ffff),
        ],
    );
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].opcode, r[0].status), (op::INCRQ, status::NOT_FOUND));
    assert_eq!(c.get(b"n").unwrap().trim_ascii(), b"5");
    c.set(b"text", b"abc");
    assert_eq!(
        c.call(&arith(op::INCR, b"text", 1, 0, 0)).status,
        status::NON_NUMERIC
    );

    c.call(&store(op::SET, b"t", b"tv", 7, 0));
    let r = c.call(&touch(op::TOUCH, b"t", 100));
    assert_eq!((r.status, r.flags()), (status::OK, 7));
    assert_eq!(
        c.call(&touch(op::TOUCH, b"missing", 100)).status,
        status::NOT_FOUND
    );
    let r = c.call(&touch(op::GAT, b"t", 100));
    assert_eq!(
        (r.status, r.value.as_slice(), r.flags()),
        (status::OK, &b"tv"[..], 7)
    );
    let r = c.call(&touch(op::GATK, b"t", 100));
    assert_eq!(r.key, b"t");
    let r = c.call(&touch(op::GATK, b"gone", 100));
    assert_eq!(
        (r.status, r.key.as_slice()),
        (status::NOT_FOUND, &b"gone"[..])
    );
    let r = pipeline(
        &mut c,
        &[
            touch(op::GATQ, b"gone", 1),
            touch(op::GATKQ, b"gone", 1),
            touch(op::GATQ, b"t", 0),
            touch(op::GATKQ, b"t", 0),
        ],
    );
    assert_eq!(
        r.iter().map(|r| r.opcode).collect::<Vec<_>>(),
        vec![op::GATQ, op::GATKQ]
    );
}

#[test]
fn server_commands_version_noop_quit_sasl_verbosity() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let r = c.call(&get(op::VERSION, b""));
    assert_eq!(r.status, status::OK);
    assert!(String::from_utf8(r.value).unwrap().starts_with("1.6."));
    let r = c.call(&noop());
    assert_eq!((r.status, r.cas, r.value.len()), (status::OK, 0, 0));
    for opcode in [op::SASL_LIST, op::VERBOSITY] {
        let mut req = get(opcode, b"");
        if opcode == op::VERBOSITY {
            req.extras = vec![0, 0, 0, 1];
        }
        assert_eq!(
            c.call(&req).status,
            status::UNKNOWN_COMMAND,
            "opcode {opcode:#x}"
        );
    }
    let r = c.call(&Req {
        opcode: op::SASL_AUTH,
        key: b"PLAIN",
        value: b"\0u\0p",
        ..Req::default()
    });
    assert_eq!(r.status, status::UNKNOWN_COMMAND);
    assert_eq!(c.call(&noop()).status, status::OK);

    let r = c.call(&get(op::QUIT, b""));
    assert_eq!((r.opcode, r.status), (op::QUIT, status::OK));
    assert!(c.is_closed());
    let mut c = s.client();
    c.send(&get(op::QUITQ, b""));
    assert!(c.is_closed(), "QuitQ closes without a reply");
}

#[test]
fn flush_now_and_with_delay() {
    let s = Server::start(&["-t", "4"]);
    let mut c = s.client();
    for i in 0..64 {
        c.set(format!("f{i}").as_bytes(), b"v");
    }
    let r = c.call(&get(op::FLUSH, b""));
    assert_eq!((r.status, r.cas), (status::OK, 0));
    assert!((0..64).all(|i| c.get(format!("f{i}").as_bytes()).is_none()));
    // FlushQ is silent.
    c.set(b"q", b"v");
    assert!(pipeline(&mut c, &[get(op::FLUSHQ, b"")]).is_empty());
    assert!(c.get(b"q").is_none());
    assert_eq!(c.stat("cmd_flush"), 2);

    // Delayed: still visible right after, gone once the deadline passes.
    for i in 0..16 {
        c.set(format!("d{i}").as_bytes(), b"v");
    }
    let r = c.call(&Req {
        opcode: op::FLUSH,
        extras: 2u32.to_be_bytes().to_vec(),
        ..Req::default()
    });
    assert_eq!(r.status, status::OK);
    assert!(c.get(b"d0").is_some());
    let gone = common::wait_until(Duration::from_secs(6), || {
        (0..16).all(|i| c.get(format!("d{i}").as_bytes()).is_none())
    });
    assert!(gone, "delayed flush never took effect");
}

#[test]
fn items_expire() {
    let s = Server::start(&["-t", "2"]);
    let mut c = s.client();
    assert_eq!(
        c.call(&store(op::SET, b"ttl", b"v", 0, 2)).status,
        status::OK
    );
    assert_eq!(
        c.call(&store(op::SET, b"keep", b"v", 0, 0)).status,
        status::OK
    );
    let expired = common::wait_until(Duration::from_secs(6), || c.get(b"ttl").is_none());
    assert!(expired, "a 2 s item outlived 6 s");
    assert!(c.get(b"keep").is_some());
}

#[test]
fn big_values_and_too_large() {
    let s = Server::start(&["-t", "2", "-I", "2m"]);
    let mut c = s.client();
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    c.set(b"big", &mib);
    assert_eq!(c.get(b"big").unwrap(), mib);
    let huge = vec![b'x'; (2 << 20) + 1];
    let r = c.call(&store(op::SET, b"big", &huge, 0, 0));
    assert_eq!(r.status, status::TOO_LARGE);
    assert_eq!(r.value, b"Too large.");
    // Connection kept; the refused Set removed the old value, as memcached does.
    assert!(c.get(b"big").is_none());
    assert_eq!(c.call(&noop()).status, status::OK);

    let s = Server::start(&[]);
    let mut c = s.client();
    let over = vec![b'y'; (1 << 20) + 1];
    assert_eq!(
        c.call(&store(op::SET, b"k", &over, 0, 0)).status,
        status::TOO_LARGE
    );
    c.set(b"k", b"small");
    assert_eq!(c.get(b"k").unwrap(), b"small");
    assert_eq!(c.stat("store_too_large"), 1);
}

#[test]
fn stats_groups_follow_memcached() {
    // memcached 1.6.18's general stats, in its order.
    const MEMCACHED: &str = "pid uptime time version libevent pointer_size rusage_user rusage_system \
        max_connections curr_connections total_connections rejected_connections connection_structures \
        response_obj_oom response_obj_count response_obj_bytes read_buf_count read_buf_bytes \
        read_buf_bytes_free read_buf_oom reserved_fds cmd_get cmd_set cmd_flush cmd_touch cmd_meta \
        get_hits get_misses get_expired get_flushed delete_misses delete_hits incr_misses incr_hits \
        decr_misses decr_hits cas_misses cas_hits cas_badval touch_hits touch_misses store_too_large \
        store_no_memory auth_cmds auth_errors bytes_read bytes_written limit_maxbytes accepting_conns \
        listen_disabled_num time_in_listen_disabled_us threads conn_yields hash_power_level hash_bytes \
        hash_is_expanding slab_reassign_rescues slab_reassign_chunk_rescues \
        slab_reassign_evictions_nomem slab_reassign_inline_reclaim slab_reassign_busy_items \
        slab_reassign_busy_deletes slab_reassign_running slabs_moved lru_crawler_running \
        lru_crawler_starts lru_maintainer_juggles malloc_fails log_worker_dropped log_worker_written \
        log_watcher_skipped log_watcher_sent log_watchers unexpected_napi_ids round_robin_fallback bytes \
        curr_items total_items slab_global_page_pool expired_unfetched evicted_unfetched evicted_active \
        evictions reclaimed crawler_reclaimed crawler_items_checked lrutail_reflocked moves_to_cold \
        moves_to_warm moves_within_lru direct_reclaims lru_bumps_dropped";
    let order: Vec<&str> = MEMCACHED.split_whitespace().collect();
    let s = Server::start(&["-t", "2", "-m", "32"]);
    let mut c = s.client();
    for i in 0..20 {
        c.set(format!("s{i}").as_bytes(), b"v");
        c.get(format!("s{i}").as_bytes());
        c.get(format!("miss{i}").as_bytes());
    }
    let general = c.stats("");
    let mut last = 0;
    for (name, _) in &general {
        let at = order
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} is not a memcached stat"));
        assert!(at >= last, "{name} out of memcached's order");
        last = at;
    }
    let stat = |n: &str| {
        general
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    for name in [
        "pid",
        "uptime",
        "time",
        "version",
        "curr_connections",
        "cmd_get",
        "get_hits",
        "threads",
        "limit_maxbytes",
    ] {
        assert!(general.iter().any(|(k, _)| k == name), "missing {name}");
    }
    assert_eq!(stat("cmd_get"), "40");
    assert_eq!(stat("get_hits"), "20");
    assert_eq!(stat("get_misses"), "20");
    assert_eq!(stat("cmd_set"), "20");
    assert_eq!(stat("threads"), "2");
    assert_eq!(stat("limit_maxbytes"), (32u64 << 20).to_string());
    assert_eq!(stat("pid"), s.pid().to_string());

    let settings = c.stats("settings");
    let setting = |n: &str| {
        settings
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap()
            .to_string()
    };
    assert_eq!(setting("maxconns"), "1024");
    assert_eq!(setting("evictions"), "on");
    assert_eq!(setting("cas_enabled"), "yes");
    assert_eq!(setting("flush_enabled"), "yes");
    assert_eq!(setting("domain_socket"), "NULL");
    assert_eq!(setting("tcpport"), s.port().to_string());
    assert_eq!(setting("num_threads"), "2");

    let latency = c.stats("latency");
    assert!(
        latency.iter().any(|(k, v)| k == "get_count" && v == "40"),
        "{latency:?}"
    );
    assert!(latency.iter().any(|(k, _)| k == "set_p99_us"));
    c.stats("items");
    c.stats("slabs");

    // Unknown group: one Not found, no terminator.
    let r = c.call(&get(op::STAT, b"bogus"));
    assert_eq!(r.status, status::NOT_FOUND);
    assert_eq!(c.call(&noop()).opcode, op::NOOP);
    // `detail on|off`: terminator only; `detail dump`: one "detailed" stat, as memcached 1.6.18
    // answers with detail off.
    assert!(c.stats("detail on").is_empty());
    assert!(c.stats("detail off").is_empty());
    assert_eq!(
        c.stats("detail dump"),
        vec![("detailed".to_string(), "END\r\n".to_string())]
    );
    // Reset: terminator only, counters zeroed.
    assert!(c.stats("reset").is_empty());
    assert_eq!(c.stat("cmd_get"), 0);
}

#[test]
fn protocol_errors() {
    let s = Server::start(&["-t", "2"]);
    // Unknown opcode: answered, body swallowed, connection kept.
    let mut c = s.client();
    let r = c.call(&Req {
        opcode: 0x30,
        key: b"k",
        value: b"body",
        ..Req::default()
    });
    assert_eq!((r.status, r.opcode), (status::UNKNOWN_COMMAND, 0x30));
    c.set(b"after", b"ok");
    assert_eq!(c.get(b"after").unwrap(), b"ok");
    // Bad magic after the first request: closed without a reply.
    let mut bytes = vec![0x81u8];
    bytes.extend_from_slice(&[0; 23]);
    c.send_raw(&bytes);
    assert!(c.is_closed());
    // Key over 250 bytes: Invalid arguments, then closed.
    let mut c = s.client();
    let long = vec![b'k'; 251];
    let r = c.call(&get(op::GET, &long));
    assert_eq!(r.status, status::INVALID);
    assert!(c.is_closed());
    // The server is fine.
    assert_eq!(s.client().get(b"after").unwrap(), b"ok");
}
