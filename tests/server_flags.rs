//! memcached 1.6 command-line flags, against the real binary. Expected answers were taken from
//! Debian's memcached 1.6.18 (`/usr/bin/memcached -u nobody -p PORT ...`) where the flag has a
//! visible effect; each test names the flags it ran memcached with.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{op, status, store, wait_until, Client, Server};

/// A text-protocol connection with a read timeout.
struct Text {
    stream: TcpStream,
}

impl Text {
    fn connect(s: &Server) -> Text {
        let stream = TcpStream::connect(s.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Text { stream }
    }

    /// Sends `req` and reads until the reply ends with `end` (or the peer closes, or 10 s).
    fn call_until(&mut self, req: &[u8], end: &[u8]) -> Vec<u8> {
        self.stream.write_all(req).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while !out.ends_with(end) && Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        out
    }

    fn call(&mut self, req: &[u8]) -> String {
        String::from_utf8_lossy(&self.call_until(req, b"\r\n")).into_owned()
    }

    /// Whether the server closes the connection within 5 s.
    fn closed(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut b = [0u8; 64];
        while Instant::now() < deadline {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

fn setting(c: &mut Client, name: &str) -> String {
    c.stats("settings")
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no setting {name}"))
        .1
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("corecached-flags-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the binary to completion with `args`: (exit code, stdout, stderr).
fn run_to_end(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corecached"))
        .args(args)
        .output()
        .expect("run corecached");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_memcached_flags_and_ours() {
    let (code, out, _) = run_to_end(&["-h"]);
    assert_eq!(code, Some(0));
    // The flag column of memcached 1.6.18's `memcached -h`.
    for flag in [
        "-p, --port=<num>",
        "-U, --udp-port=<num>",
        "-s, --unix-socket=<file>",
        "-a, --unix-mask=<mask>",
        "-A, --enable-shutdown",
        "-l, --listen=<addr>",
        "-d, --daemon",
        "-r, --enable-coredumps",
        "-u, --user=<user>",
        "-m, --memory-limit=<num>",
        "-M, --disable-evictions",
        "-c, --conn-limit=<num>",
        "-k, --lock-memory",
        "-v, --verbose",
        "-vv",
        "-vvv",
        "-h, --help",
        "-i, --license",
        "-V, --version",
        "-P, --pidfile=<file>",
        "-f, --slab-growth-factor=<num>",
        "-n, --slab-min-size=<bytes>",
        "-L, --enable-largepages",
        "-D <char>",
        "-t, --threads=<num>",
        "-R, --max-reqs-per-event",
        "-C, --disable-cas",
        "-b, --listen-backlog=<num>",
        "-B, --protocol=<name>",
        "-I, --max-item-size=<num>",
        "-S, --enable-sasl",
        "-F, --disable-flush-all",
        "-X, --disable-dumping",
        "-W  --disable-watch",
        "-Y, --auth-file=<file>",
        "-e, --memory-file=<file>",
        "-Z, --enable-ssl",
        "-N, --napi_ids",
        "-o, --extended",
        "--eviction",
        "--cpus",
        "--io",
        "--buffer-memory-limit",
        "--direct-limit",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(flag)),
            "{flag} missing from -h:\n{out}"
        );
    }
    let (code, out, _) = run_to_end(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("1.6.18"), "{out}");
}

#[test]
fn long_options_as_memcached_spells_them() {
    let s = Server::start(&[
        "--memory-limit=32",
        "--conn-limit=100",
        "--threads=1",
        "--max-item-size=512k",
        "--enable-shutdown",
        "--disable-cas",
        "--listen-backlog=64",
        "--protocol=auto",
        "--max-reqs-per-event=20",
        "--slab-growth-factor=1.5",
        "--slab-min-size=48",
        "--disable-flush-all",
        "--extended=hash_algorithm=xxh3",
        "-vv",
        "-D",
        "#",
    ]);
    let mut c = s.client();
    for (name, want) in [
        ("maxbytes", "33554432"),
        ("maxconns", "100"),
        ("num_threads", "1"),
        ("item_size_max", "524288"),
        ("shutdown_command", "yes"),
        ("cas_enabled", "no"),
        ("tcp_backlog", "64"),
        ("binding_protocol", "auto-negotiate"),
        ("reqs_per_event", "20"),
        ("growth_factor", "1.50"),
        ("flush_enabled", "no"),
        ("verbosity", "2"),
        ("stat_key_prefix", "#"),
        ("detail_enabled", "yes"),
    ] {
        assert_eq!(setting(&mut c, name), want, "{name}");
    }
}

/// `stats settings` names, in the order memcached 1.6.18 prints them (default flags).
const MEMCACHED_SETTINGS: &[&str] = &[
    "maxbytes",
    "maxconns",
    "tcpport",
    "udpport",
    "inter",
    "verbosity",
    "oldest",
    "evictions",
    "domain_socket",
    "umask",
    "shutdown_command",
    "growth_factor",
    "chunk_size",
    "num_threads",
    "num_threads_per_udp",
    "stat_key_prefix",
    "detail_enabled",
    "reqs_per_event",
    "cas_enabled",
    "tcp_backlog",
    "binding_protocol",
    "auth_enabled_sasl",
    "auth_enabled_ascii",
    "item_size_max",
    "maxconns_fast",
    "hashpower_init",
    "slab_reassign",
    "slab_automove",
    "slab_automove_ratio",
    "slab_automove_window",
    "slab_chunk_max",
    "lru_crawler",
    "lru_crawler_sleep",
    "lru_crawler_tocrawl",
    "tail_repair_time",
    "flush_enabled",
    "dump_enabled",
    "hash_algorithm",
    "lru_maintainer_thread",
    "lru_segmented",
    "hot_lru_pct",
    "warm_lru_pct",
    "hot_max_factor",
    "warm_max_factor",
    "temp_lru",
    "temporary_ttl",
    "idle_timeout",
    "watcher_logbuf_size",
    "worker_logbuf_size",
    "read_buf_mem_limit",
    "track_sizes",
    "inline_ascii_response",
    "ext_item_size",
    "ext_item_age",
    "ext_low_ttl",
    "ext_recache_rate",
    "ext_wbuf_size",
    "ext_compact_under",
    "ext_drop_under",
    "ext_max_sleep",
    "ext_max_frag",
    "slab_automove_freeratio",
    "ext_drop_unread",
    "ssl_enabled",
    "ssl_chain_cert",
    "ssl_key",
    "ssl_verify_mode",
    "ssl_keyformat",
    "ssl_ciphers",
    "ssl_ca_cert",
    "ssl_wbuf_size",
    "ssl_session_cache",
    "ssl_kernel_tls",
    "ssl_min_version",
    "num_napi_ids",
    "memory_file",
];

#[test]
fn stats_settings_has_memcached_names_in_order() {
    let s = Server::start(&["-t", "1"]);
    let got = s.client().stats("settings");
    let names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&names[..MEMCACHED_SETTINGS.len()], MEMCACHED_SETTINGS);
    assert_eq!(&names[MEMCACHED_SETTINGS.len()..], &["eviction_policy"]);
    // memcached 1.6.18's defaults where they are ours too.
    let get = |n: &str| got.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(get("umask"), "700");
    assert_eq!(get("shutdown_command"), "no");
    assert_eq!(get("cas_enabled"), "yes");
    assert_eq!(get("tcp_backlog"), "1024");
    assert_eq!(get("evictions"), "on");
    assert_eq!(get("stat_key_prefix"), ":");
    assert_eq!(get("slab_chunk_max"), "524288");
}

#[test]
fn eviction_flag_selects_s3fifo_and_stats_settings_names_it() {
    let s = Server::start(&["--eviction", "s3fifo", "-t", "1"]);
    let mut c = s.client();
    assert_eq!(setting(&mut c, "eviction_policy"), "s3fifo");
}

#[test]
fn daemon_writes_the_pid_file_and_removes_it_on_a_clean_stop() {
    let dir = temp_dir("daemon");
    let pidfile = dir.join("cc.pid");
    let pidfile_s = pidfile.to_str().unwrap();
    let args = [
        "-d",
        "-P",
        pidfile_s,
        "--port",
        "-1",
        "-l",
        "127.0.0.1",
        "-t",
        "1",
    ];
    // The parent relays the child's start-up lines (the readiness line too) and exits 0.
    let mut s = Server::try_spawn(Server::command(&args)).expect("daemon started");
    let parent = s.pid();
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)).map(|st| st.code()),
        Some(Some(0)),
        "the parent exits 0 once the daemon serves"
    );
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid file written")
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, parent);
    let mut c = s.client();
    assert_eq!(c.stat("pid"), u64::from(pid));
    // A new session, detached from ours.
    // SAFETY: getsid reads no memory.
    let (sid, our_sid) = unsafe { (libc::getsid(pid as i32), libc::getsid(0)) };
    assert_eq!(sid, pid as i32, "the daemon leads its own session");
    assert_ne!(sid, our_sid);
    drop(c);
    // SAFETY: kill(2) on the daemon this test started (its pid from its own pid file).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    assert!(
        wait_until(Duration::from_secs(15), || !pidfile.exists()),
        "pid file removed on a clean exit"
    );
    let gone = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|st| st.contains("State:\tZ"))
            .unwrap_or(true)
    });
    assert!(gone, "the daemon exits");
    let _ = std::fs::remove_dir_all(dir);
}

fn passwd_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == user {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

#[test]
fn user_flag_drops_root_after_binding() {
    if !is_root() {
        eprintln!("not root: -u is ignored there, as memcached ignores it");
        return;
    }
    let Some((uid, gid)) = passwd_ids("nobody") else {
        eprintln!("no user nobody here");
        return;
    };
    let s = Server::start(&["-u", "nobody", "-t", "1"]);
    let st = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        st.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(ids("Uid:"), vec![uid; 4], "{st}");
    assert_eq!(ids("Gid:"), vec![gid; 4], "{st}");
    assert!(ids("Groups:").is_empty(), "supplementary groups dropped");
    // Still serving after the switch.
    assert_eq!(
        s.client().call(&common::get(op::NOOP, b"")).status,
        status::OK
    );
    // memcached 1.6.18: "can't find the user nosuchuser to switch to", exit status 67.
    let f = Server::try_start(&["-u", "corecached-no-such-user"])
        .err()
        .expect("refused");
    assert_eq!(f.status.and_then(|s| s.code()), Some(67));
    assert!(f.stderr.contains("can't find the user"), "{}", f.stderr);
}

#[test]
fn unix_socket_mask_sets_its_permissions() {
    let dir = temp_dir("unix");
    for (mask, mode) in [(None, 0o700), (Some("660"), 0o660), (Some("755"), 0o755)] {
        let path = dir.join(format!("cc-{mode:o}.sock"));
        let p = path.to_str().unwrap().to_string();
        let mut args = vec!["-s", p.as_str(), "-t", "1"];
        if let Some(m) = mask {
            args.extend(["-a", m]);
        }
        let s = Server::try_spawn(Server::command(&args)).expect("started");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "-a {mask:?}");
        drop(s);
    }
    let f = Server::try_start(&["-a", "9z"]).err().expect("refused");
    assert!(f.stderr.contains("-a"), "{}", f.stderr);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn disable_evictions_answers_out_of_memory() {
    // memcached 1.6.18 -M -m 2: after 1770 sets of 1000 bytes,
    // "SERVER_ERROR out of memory storing object"; binary set: status 0x82; evictions 0; a set
    // that fails leaves no old value.
    let s = Server::start(&["-M", "-m", "2", "-t", "1"]);
    let mut t = Text::connect(&s);
    let value = vec![b'x'; 1000];
    let mut refused_at = None;
    for i in 0..20_000 {
        let mut req = format!("set k{i} 0 0 1000\r\n").into_bytes();
        req.extend_from_slice(&value);
        req.extend_from_slice(b"\r\n");
        let r = t.call(&req);
        if r != "STORED\r\n" {
            assert_eq!(r, "SERVER_ERROR out of memory storing object\r\n");
            refused_at = Some(i);
            break;
        }
    }
    let n = refused_at.expect("memory ran out within 20,000 sets");
    assert!(n > 100, "refused after only {n} items");
    // Nothing was evicted: the first item is still there.
    assert!(t
        .call_until(b"get k0\r\n", b"END\r\n")
        .starts_with(b"VALUE k0 0 1000\r\n"));
    let mut c = s.client();
    let r = c.call(&store(op::SET, b"bk", &value, 0, 0));
    assert_eq!(r.status, 0x82);
    assert_eq!(c.stat("evictions"), 0);
    assert_eq!(setting(&mut c, "evictions"), "off");
}

#[test]
fn protocol_flag_restricts_the_protocol() {
    let version = common::get(op::VERSION, b"").encode();
    // memcached 1.6.18 -B ascii: a binary request is read as text: "ERROR" at its newline.
    let s = Server::start(&["-B", "ascii", "-t", "1"]);
    let mut t = Text::connect(&s);
    let mut req = version.clone();
    req.extend_from_slice(b"\r\n");
    assert_eq!(t.call(&req), "ERROR\r\n");
    assert!(Text::connect(&s)
        .call(b"version\r\n")
        .starts_with("VERSION "));
    drop(s);
    // memcached 1.6.18 -B binary: a text request closes the connection; binary works.
    let s = Server::start(&["-B", "binary", "-t", "1"]);
    let mut t = Text::connect(&s);
    t.stream
        .write_all(b"get aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
        .unwrap();
    assert!(t.closed(), "text connection closed under -B binary");
    let mut c = s.client();
    assert_eq!(c.call(&common::get(op::VERSION, b"")).status, status::OK);
    assert_eq!(setting(&mut c, "binding_protocol"), "binary");
    // memcached: "Invalid value for binding protocol: x", exit status 64.
    let f = Server::try_start(&["-B", "x"]).err().expect("refused");
    assert_eq!(f.status.and_then(|s| s.code()), Some(64));
    assert!(f.stderr.contains("binding protocol"), "{}", f.stderr);
}

#[test]
fn shutdown_needs_enable_shutdown() {
    // memcached 1.6.18 without -A: "ERROR: shutdown not enabled", whatever the mode.
    let mut s = Server::start(&["-t", "1"]);
    let mut t = Text::connect(&s);
    assert_eq!(t.call(b"shutdown\r\n"), "ERROR: shutdown not enabled\r\n");
    assert_eq!(
        t.call(b"shutdown graceful\r\n"),
        "ERROR: shutdown not enabled\r\n"
    );
    assert!(s.is_running());
    drop(s);
    // With -A: a bad mode is "CLIENT_ERROR invalid shutdown mode"; `shutdown graceful` and
    // `shutdown` stop the server (memcached closes the connection and exits 0).
    for cmd in [&b"shutdown graceful\r\n"[..], b"shutdown\r\n"] {
        let mut s2 = Server::start(&["-A", "-t", "1"]);
        let mut t = Text::connect(&s2);
        assert_eq!(
            t.call(b"shutdown now\r\n"),
            "CLIENT_ERROR invalid shutdown mode\r\n"
        );
        t.stream.write_all(cmd).unwrap();
        assert!(t.closed());
        let st = s2.wait_exit(Duration::from_secs(15)).expect("exited");
        assert!(st.success(), "{st:?}\n{}", s2.log());
    }
    s = Server::start(&["-A", "-t", "1"]);
    assert_eq!(setting(&mut s.client(), "shutdown_command"), "yes");
}

#[test]
fn disable_cas_reports_cas_zero() {
    // memcached 1.6.18 -C: `gets` shows CAS 0; `cas` answers EXISTS whatever the value.
    let s = Server::start(&["-C", "-t", "1"]);
    let mut t = Text::connect(&s);
    assert_eq!(t.call(b"set a 0 0 1\r\nx\r\n"), "STORED\r\n");
    let r = t.call_until(b"gets a\r\n", b"END\r\n");
    assert_eq!(r, b"VALUE a 0 1 0\r\nx\r\nEND\r\n");
    assert_eq!(t.call(b"cas a 0 0 1 0\r\ny\r\n"), "EXISTS\r\n");
    assert_eq!(t.call(b"cas a 0 0 1 5\r\ny\r\n"), "EXISTS\r\n");
    let mut c = s.client();
    assert_eq!(c.call(&store(op::SET, b"b", b"v", 0, 0)).cas, 0);
    assert_eq!(setting(&mut c, "cas_enabled"), "no");
}

#[test]
fn disable_flush_all_refuses_flush() {
    // memcached 1.6.18 -F: text "CLIENT_ERROR flush_all not allowed"; binary status 0x20.
    let s = Server::start(&["-F", "-t", "1"]);
    let mut t = Text::connect(&s);
    assert_eq!(t.call(b"set a 0 0 1\r\nx\r\n"), "STORED\r\n");
    assert_eq!(
        t.call(b"flush_all\r\n"),
        "CLIENT_ERROR flush_all not allowed\r\n"
    );
    let mut c = s.client();
    assert_eq!(c.call(&common::get(op::FLUSH, b"")).status, 0x20);
    assert_eq!(c.get(b"a").as_deref(), Some(&b"x"[..]));
}

#[test]
fn listen_backlog_is_applied() {
    let s = Server::start(&["-b", "7", "-t", "1"]);
    assert_eq!(setting(&mut s.client(), "tcp_backlog"), "7");
    // A listening socket's backlog is its "Send-Q" in ss; check when ss is present.
    if let Ok(out) = Command::new("ss").args(["-ltnH"]).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        let port = format!(":{}", s.port());
        if let Some(line) = text.lines().find(|l| l.contains(&port)) {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[2], "7", "{line}");
        }
    }
    assert!(Server::try_start(&["-b", "0"]).is_err());
}

#[test]
fn extended_options_warn_once_each_and_unknown_ones_are_refused() {
    let s = Server::start(&[
        "-t",
        "1",
        "-o",
        "modern,hashpower=16,slab_automove_window=10,slab_automove=2",
        "-o",
        "idle_timeout=5",
    ]);
    let log = s.log();
    for opt in [
        "-o modern:",
        "-o hashpower=16:",
        "-o slab_automove_window=10:",
    ] {
        assert_eq!(log.matches(opt).count(), 1, "{opt}\n{log}");
    }
    assert!(!log.contains("-o idle_timeout=5:"), "honoured\n{log}");
    let mut c = s.client();
    assert_eq!(setting(&mut c, "hashpower_init"), "16");
    assert_eq!(setting(&mut c, "slab_automove"), "2");
    assert!(
        !log.contains("-o slab_automove=2:"),
        "honoured, not warned\n{log}"
    );
    assert_eq!(setting(&mut c, "idle_timeout"), "5");
    // memcached 1.6.18: `Illegal suboption "foo=1"`, exit status 1.
    let f = Server::try_start(&["-o", "foo=1"]).err().expect("refused");
    assert_eq!(f.status.and_then(|s| s.code()), Some(1));
    assert!(
        f.stderr.contains("Illegal suboption \"foo=1\""),
        "{}",
        f.stderr
    );
    // memcached 1.6.18: "Missing numeric argument for hashpower", exit status 1.
    let f = Server::try_start(&["-o", "hashpower"])
        .err()
        .expect("refused");
    assert_eq!(f.status.and_then(|s| s.code()), Some(1));
    assert!(f.stderr.contains("Missing numeric argument for hashpower"));
    // An unknown flag: a message and exit status 1, as memcached's getopt.
    let f = Server::try_start(&["-Q"]).err().expect("refused");
    assert_eq!(f.status.and_then(|s| s.code()), Some(1));
}

/// memcached 1.6.18 takes `slab_chunk_max` in bytes (its -h says kilobytes) and checks it
/// against -I and its 1 MiB page; a bare `slab_automove` means 1.
#[test]
fn slab_chunk_max_is_in_bytes_with_memcached_checks() {
    let s = Server::start(&[
        "-t",
        "1",
        "-I",
        "1024",
        "-o",
        "slab_chunk_max=1024,slab_automove",
    ]);
    let mut c = s.client();
    assert_eq!(setting(&mut c, "slab_chunk_max"), "1024");
    assert_eq!(setting(&mut c, "item_size_max"), "1024");
    assert_eq!(setting(&mut c, "slab_automove"), "1");
    // memcached's exit statuses: 64 (EX_USAGE) for its checks after parsing, 1 for the -o parser.
    for (args, code, words) in [
        (
            &["-o", "slab_chunk_max=3000"][..],
            64,
            "-I (item_size_max: 1048576) must be evenly divisible by slab_chunk_max (bytes: 3000)",
        ),
        (
            &["-o", "slab_chunk_max=2097152"][..],
            64,
            "slab_chunk_max (bytes: 2097152) cannot be larger than -I (item_size_max 1048576)",
        ),
        (
            &["-I", "3m", "-o", "slab_chunk_max=3145728"][..],
            64,
            "slab_chunk_max (bytes: 3145728) must divide evenly into 1048576 (slab_page_size)",
        ),
        (
            &["-o", "slab_automove=3"][..],
            1,
            "slab_automove must be between 0 and 2",
        ),
    ] {
        let f = Server::try_start(args).err().expect("refused");
        assert_eq!(f.status.and_then(|s| s.code()), Some(code), "{args:?}");
        assert!(f.stderr.contains(words), "{args:?}: {}", f.stderr);
    }
}

/// `-o idle_timeout=N`: a connection with no request for N seconds is closed and counted in
/// `idle_kicks`; one in the middle of a value's data block is left alone (memcached's
/// conn_nread state is not timed out either).
#[test]
fn idle_timeout_closes_idle_connections_only() {
    let s = Server::start(&["-t", "2", "-o", "idle_timeout=1"]);
    let mut mid_value = Text::connect(&s);
    mid_value.stream.write_all(b"set k 0 0 5\r\nab").unwrap();
    let mut idle = Text::connect(&s);
    assert!(idle.call(b"version\r\n").starts_with("VERSION"));
    assert!(idle.closed(), "the idle connection is closed");
    assert_eq!(
        mid_value.call(b"cde\r\n"),
        "STORED\r\n",
        "a connection waiting for data is not kicked"
    );
    let mut c = s.client();
    let stats = c.stats("");
    let kicks: u64 = stats
        .iter()
        .find(|(name, _)| name == "idle_kicks")
        .expect("idle_kicks")
        .1
        .parse()
        .unwrap();
    assert!(kicks >= 1, "{kicks}");
}

#[test]
fn flags_without_an_effect_here_warn_and_run() {
    let s = Server::start(&[
        "-t", "1", "-m", "8", "-L", "-X", "-W", "-N", "2", "-n", "64", "-k", "-r",
    ]);
    let log = s.log();
    for flag in ["-L:", "-N:", "-n 64:"] {
        assert_eq!(log.matches(flag).count(), 1, "{flag}\n{log}");
    }
    // -W is honoured (watch refused), so it warns no more.
    assert_eq!(log.matches("-W:").count(), 0, "{log}");
    let mut c = s.client();
    assert_eq!(setting(&mut c, "chunk_size"), "64");
    assert_eq!(setting(&mut c, "num_napi_ids"), "2");
    // Refused: a persistence corecached does not have (a memory file), TLS without a
    // certificate and SASL without a password file (tests/tls.rs and tests/auth.rs have the
    // rest).
    for flag in [&["-S"][..], &["-Z"], &["-e", "/dev/shm/x"]] {
        let f = Server::try_start(flag).err().expect("refused");
        assert!(!f.stderr.trim().is_empty(), "{flag:?}");
    }
}

/// Debian's default /etc/memcached.conf (memcached 1.6.18 package), its flag lines.
const DEBIAN_CONF: &str = "\
# memcached default config file
-d
logfile /var/log/memcached.log
-m 64
-p 11211
-u memcache
-l 127.0.0.1
-P /var/run/memcached/memcached.pid
";

/// The argument list Debian's systemd-memcached-wrapper builds from a memcached.conf: comments
/// cut, `-d`/`-h` lines and non-flag directives (logfile) dropped, the rest joined and split
/// on blanks by the shell.
fn debian_wrapper_args(conf: &str) -> Vec<String> {
    let mut args = Vec::new();
    for line in conf.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("-d") || line.starts_with("-h") {
            continue;
        }
        if !line.starts_with('-') {
            continue;
        }
        args.extend(line.split_whitespace().map(str::to_string));
    }
    args
}

#[test]
fn debian_memcached_conf_starts_the_server() {
    let conf =
        std::fs::read_to_string("/etc/memcached.conf").unwrap_or_else(|_| DEBIAN_CONF.into());
    let dir = temp_dir("debian");
    let pidfile = dir.join("memcached.pid");
    let mut args = debian_wrapper_args(&conf);
    // The test's own port, pid file and (where the package's user is missing) user.
    for i in 0..args.len().saturating_sub(1) {
        match args[i].as_str() {
            "-p" => args[i + 1] = "-1".into(),
            "-P" => args[i + 1] = pidfile.to_str().unwrap().into(),
            "-u" if passwd_ids(&args[i + 1]).is_none() => args[i + 1] = "nobody".into(),
            _ => {}
        }
    }
    assert!(args.iter().any(|a| a == "-m"), "{args:?}");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::try_spawn(Server::command(&refs)).expect("started with Debian's flags");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, s.pid());
    let mut c = s.client();
    assert_eq!(c.call(&common::get(op::NOOP, b"")).status, status::OK);
    assert_eq!(setting(&mut c, "maxbytes"), (64u64 << 20).to_string());
    drop(c);
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn max_reqs_per_event_still_answers_deep_pipelines() {
    // -R 2: two requests per batch; a 100-deep pipeline is answered in full and in order.
    let s = Server::start(&["-R", "2", "-t", "1"]);
    let mut t = Text::connect(&s);
    let mut req = Vec::new();
    for i in 0..100 {
        req.extend_from_slice(format!("set k{i} 0 0 1\r\n{}\r\n", i % 10).as_bytes());
    }
    req.extend_from_slice(b"get k99\r\n");
    let r = t.call_until(&req, b"END\r\n");
    let text = String::from_utf8_lossy(&r);
    assert_eq!(text.matches("STORED\r\n").count(), 100);
    assert!(text.ends_with("VALUE k99 0 1\r\n9\r\nEND\r\n"));
    assert_eq!(setting(&mut s.client(), "reqs_per_event"), "2");
}

/// memcached's ports (its t/issue_67.t): `-p -1` / `-U -1` bind free ports, `-p 0` turns TCP
/// off, and MEMCACHED_PORT_FILENAME receives one `TCP INET: N` / `UDP INET: N` line per socket.
#[test]
fn port_file_lists_the_bound_ports_and_p0_turns_tcp_off() {
    let dir = temp_dir("portfile");
    for (args, tcp, udp) in [
        (&["-p", "-1", "-U", "-1"][..], true, true),
        (&["-p", "0", "-U", "-1"][..], false, true),
        (&["-p", "-1"][..], true, false),
    ] {
        let file = dir.join("ports");
        let _ = std::fs::remove_file(&file);
        let mut cmd = Server::command(&["-l", "127.0.0.1", "-t", "1"]);
        cmd.args(args).env("MEMCACHED_PORT_FILENAME", &file);
        let s = Server::try_spawn(cmd).expect("starts");
        let text = std::fs::read_to_string(&file).expect("port file written before readiness");
        let lines: Vec<&str> = text.lines().collect();
        let tcp_lines: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("TCP INET: "))
            .collect();
        let udp_lines: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("UDP INET: "))
            .collect();
        assert_eq!(lines.len(), tcp_lines.len() + udp_lines.len(), "{text}");
        assert_eq!(tcp_lines.len(), usize::from(tcp), "{args:?}: {text}");
        assert_eq!(udp_lines.len(), usize::from(udp), "{args:?}: {text}");
        if tcp {
            assert_eq!(tcp_lines[0], format!("TCP INET: {}", s.port()));
        } else {
            assert!(
                s.addrs().iter().all(|a| a.starts_with("udp:")),
                "{:?}",
                s.addrs()
            );
        }
        if udp {
            let port: u16 = udp_lines[0]["UDP INET: ".len()..].parse().unwrap();
            assert_ne!(port, 0);
            assert!(
                s.addrs()
                    .iter()
                    .any(|a| a == &format!("udp:127.0.0.1:{port}")),
                "{:?}",
                s.addrs()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
