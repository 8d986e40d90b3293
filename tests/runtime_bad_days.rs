//! The network runtime on bad days: io_uring refused (seccomp) or explicitly chosen away
//! (`--io`), a unix socket, IPv6, signals other than SIGTERM/SIGINT, a port another server holds,
//! far more shards than CPUs, a tiny locked-memory limit, and crowds of clients that never read or
//! never finish a large set, where the server's memory must stay bounded and come back.
//!
//! No test asserts a duration: every wait is bounded by a generous deadline and fails with a
//! message saying what did not happen.

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_until, Server, READY_MARK};

/// Read/write timeout of the test's own blocking sockets.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a signalled server may take to drain and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The memory the memory-bound tests give the server (`-m`), in MiB.
const ITEM_MIB: u64 = 64;
/// RSS ceiling while the crowd is connected: `-m` plus 64 MiB for everything else, in KiB.
const RSS_LIMIT_KIB: u64 = (ITEM_MIB + 64) * 1024;
/// How far above its starting point the RSS may stay once the crowd is gone, in KiB.
const RSS_SETTLE_KIB: u64 = 32 * 1024;
/// How long the RSS may take to fall back once the crowd is gone.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The server's readiness line.
fn ready_line(s: &Server) -> String {
    s.log()
        .lines()
        .find(|l| l.contains(READY_MARK))
        .unwrap_or_else(|| panic!("no readiness line in\n{}", s.log()))
        .to_string()
}

/// The server's RSS in KiB, or a panic naming its log when the process is gone.
fn rss_kib(s: &Server) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("server process gone (no VmRSS)\n{}", s.log()))
}

/// A blocking TCP connection with bounded connect, read and write.
fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Reads exactly `want.len()` bytes and compares them with `want`; panics with what arrived.
fn expect_reply(s: &mut impl Read, want: &[u8], what: &str) {
    let mut got = vec![0u8; want.len()];
    let mut n = 0;
    while n < want.len() {
        match s.read(&mut got[n..]) {
            Ok(0) => panic!(
                "{what}: connection closed after {:?}, expected {:?}",
                String::from_utf8_lossy(&got[..n]),
                String::from_utf8_lossy(want)
            ),
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "{what}: {e} after {:?}, expected {:?}",
                String::from_utf8_lossy(&got[..n]),
                String::from_utf8_lossy(want)
            ),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "{what}"
    );
}

/// Text protocol: `set key` to `value`, then `get key`, checking both answers exactly.
fn text_set_get(s: &mut (impl Read + Write), key: &str, value: &[u8]) {
    let mut set = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    set.extend_from_slice(value);
    set.extend_from_slice(b"\r\n");
    s.write_all(&set).expect("write set");
    expect_reply(s, b"STORED\r\n", &format!("set {key}"));
    s.write_all(format!("get {key}\r\n").as_bytes())
        .expect("write get");
    let mut want = format!("VALUE {key} 0 {}\r\n", value.len()).into_bytes();
    want.extend_from_slice(value);
    want.extend_from_slice(b"\r\nEND\r\n");
    expect_reply(s, &want, &format!("get {key}"));
}

/// Text set/get on a new TCP connection, and binary set/get of keys spread over every shard.
fn serves(s: &Server) {
    text_set_get(&mut tcp(s.addr()), "text-key", b"text value");
    let mut c = s.client();
    for i in 0..64 {
        let key = format!("key-{i}");
        c.set(key.as_bytes(), key.as_bytes());
    }
    for i in 0..64 {
        let key = format!("key-{i}");
        assert_eq!(c.get(key.as_bytes()).as_deref(), Some(key.as_bytes()));
    }
}

/// Sends `signal` and waits (bounded) for an exit with status 0.
fn signal_and_expect_clean_exit(s: &mut Server, signal: i32, name: &str) {
    s.signal(signal);
    let status = s
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("no exit within {EXIT_TIMEOUT:?} of {name}\n{}", s.log()));
    assert!(
        status.success(),
        "{name}: exit status {status:?}\n{}",
        s.log()
    );
}

/// Whether this process may create an io_uring (the kernel offers it and nothing forbids it).
fn io_uring_available() -> bool {
    // struct io_uring_params is 120 bytes; zeroed means "no flags, kernel picks the sizes".
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(2) takes an entry count and a pointer to a writable
    // struct io_uring_params (120 bytes), which `params` is and which outlives the call; the
    // kernel writes only within it.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is the ring descriptor just returned to us and is closed exactly once.
    unsafe { libc::close(fd as i32) };
    true
}

/// Raises this process's open-file limit to at least `want` (children inherit it).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` into `lim`, which is valid and writable.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) },
        0,
        "getrlimit"
    );
    if lim.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one `struct rlimit` from `raised`, which is valid for the call.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    assert!(
        r == 0 && raised.rlim_cur >= want,
        "cannot raise RLIMIT_NOFILE to {want} (hard limit {})",
        lim.rlim_max
    );
}

/// A unix socket path in the temp dir, removed on drop.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(tag: &str) -> SocketPath {
        let p = std::env::temp_dir().join(format!("corecached-{}-{tag}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        SocketPath(p)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Makes the command's child see io_uring_setup, io_uring_enter and io_uring_register fail with
/// EPERM, as under a container's seccomp profile: a seccomp filter installed just before exec.
#[cfg(target_arch = "x86_64")]
fn deny_io_uring(cmd: &mut Command) {
    use libc::{sock_filter, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    /// linux/audit.h: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    /// Offsets in struct seccomp_data { int nr; __u32 arch; ... }.
    const NR_OFFSET: u32 = 0;
    const ARCH_OFFSET: u32 = 4;
    /// x86_64 numbers of io_uring_setup, io_uring_enter, io_uring_register.
    const IO_URING_SETUP: u32 = 425;
    const IO_URING_ENTER: u32 = 426;
    const IO_URING_REGISTER: u32 = 427;
    const DENY: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

    fn stmt(code: u32, k: u32) -> sock_filter {
        sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter {
            code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
            jt,
            jf,
            k,
        }
    }
    // Jump offsets count the instructions skipped after the jump: index + 1 + offset.
    let mut filter: [sock_filter; 8] = [
        /* 0 */ stmt(BPF_LD | BPF_W | BPF_ABS, ARCH_OFFSET),
        /* 1 */ jeq(AUDIT_ARCH_X86_64, 0, 4), // another ABI (i386 compat): 6, allow
        /* 2 */ stmt(BPF_LD | BPF_W | BPF_ABS, NR_OFFSET),
        /* 3 */ jeq(IO_URING_SETUP, 3, 0), // 7, deny
        /* 4 */ jeq(IO_URING_ENTER, 2, 0), // 7, deny
        /* 5 */ jeq(IO_URING_REGISTER, 1, 0), // 7, deny; else 6
        /* 6 */ stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
        /* 7 */ stmt(BPF_RET | BPF_K, DENY),
    ];
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes two prctl(2) system calls, allocates nothing, and touches only
    // its own copy of `filter`. Failing either call fails the spawn (the error is errno only).
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only (required before an
            // unprivileged process may install a seccomp filter). prctl is variadic and reads
            // unsigned longs, so every argument is passed as one.
            let (one, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0 {
                return Err(io::Error::last_os_error());
            }
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            // SAFETY: `prog` points at `filter`, which lives for the whole call, and its `len` is
            // the array's length; the kernel validates and copies the program during the call.
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// `--io auto` picks io_uring when this process may create one: the readiness line says
/// `(2 shards, io_uring)`, nothing is said about falling back, and set/get work.
#[test]
fn auto_backend_picks_io_uring_when_the_kernel_offers_it() {
    if !io_uring_available() {
        eprintln!("skipped: io_uring_setup is refused here");
        return;
    }
    let s = Server::start(&["--io", "auto", "-t", "2"]);
    let line = ready_line(&s);
    assert!(line.contains("(2 shards, io_uring)"), "{line}");
    assert!(!s.log().contains("falling back to epoll"), "{}", s.log());
    serves(&s);
}

/// `--io epoll` serves text and binary set/get and names its backend on the readiness line.
#[test]
fn epoll_backend_serves_and_says_so() {
    let s = Server::start(&["--io", "epoll", "-t", "2"]);
    let line = ready_line(&s);
    assert!(line.contains("(2 shards, epoll)"), "{line}");
    serves(&s);
}

/// `--io uring` serves text and binary set/get and names its backend on the readiness line
/// (skipped where this process may not create an io_uring).
#[test]
fn uring_backend_serves_and_says_so() {
    if !io_uring_available() {
        eprintln!("skipped: io_uring_setup is refused here");
        return;
    }
    let s = Server::start(&["--io", "uring", "-t", "2"]);
    let line = ready_line(&s);
    assert!(line.contains("(2 shards, io_uring)"), "{line}");
    serves(&s);
}

/// With io_uring_setup/enter/register refused (EPERM, by a seccomp filter as in a locked-down
/// container), `--io auto` becomes ready, warns once that it is falling back to epoll, says
/// `epoll` on the readiness line, and serves set/get.
#[cfg(target_arch = "x86_64")]
#[test]
fn io_uring_refused_by_seccomp_falls_back_to_epoll() {
    let mut cmd = Server::command(&["--port", "-1", "-l", "127.0.0.1", "--io", "auto", "-t", "2"]);
    deny_io_uring(&mut cmd);
    let s = Server::try_spawn(cmd)
        .unwrap_or_else(|f| panic!("server did not start with io_uring refused: {f:?}"));
    let log = s.log();
    assert_eq!(
        log.matches("falling back to epoll").count(),
        1,
        "expected one fallback warning\n{log}"
    );
    let line = ready_line(&s);
    assert!(line.contains("(2 shards, epoll)"), "{line}");
    serves(&s);
}

// ---------------------------------------------------------------------------------------------
// Listening
// ---------------------------------------------------------------------------------------------

/// `-s PATH`: the readiness line lists `unix:PATH`, and a client on that unix socket can set and
/// get over the text protocol.
#[test]
fn unix_socket_serves_text_protocol() {
    let path = SocketPath::new("unix");
    let s = Server::start(&["-t", "2", "-s", path.as_str()]);
    let listed = format!("unix:{}", path.as_str());
    assert!(
        s.addrs().contains(&listed),
        "readiness line does not list {listed}: {:?}",
        s.addrs()
    );
    let mut u =
        UnixStream::connect(&path.0).unwrap_or_else(|e| panic!("connect {}: {e}", path.as_str()));
    u.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    u.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    text_set_get(&mut u, "over-unix", b"unix value");
    text_set_get(&mut u, "big-over-unix", &vec![b'u'; 300_000]);
}

/// `-l ::1` listens on the IPv6 loopback and serves set/get there (skipped when this machine has
/// no IPv6 loopback).
#[test]
fn ipv6_loopback_listens_and_serves() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let s = Server::try_spawn(Server::command(&["--port", "-1", "-l", "::1", "-t", "2"]))
        .unwrap_or_else(|f| panic!("server did not start on ::1: {f:?}"));
    let addr = s.addr();
    assert!(
        addr.is_ipv6() && addr.ip().is_loopback(),
        "bound {addr}, expected [::1]"
    );
    serves(&s);
}

/// A second server asked for a TCP port that a running server (two shards sharing the port)
/// already serves refuses to start: non-zero exit, stderr mentions "in use". The first keeps
/// serving.
#[test]
fn second_server_on_a_served_port_refuses_to_start() {
    let first = Server::start(&["-t", "2"]);
    serves(&first);
    let port = first.port().to_string();
    let second = Server::try_spawn(Server::command(&[
        "--port",
        &port,
        "-l",
        "127.0.0.1",
        "-t",
        "2",
    ]));
    match second {
        Ok(s) => panic!(
            "a second server started on port {port}, already served by pid {}\n{}",
            first.pid(),
            s.log()
        ),
        Err(f) => {
            let status = f.status.expect("the second server should have exited");
            assert!(!status.success(), "exit status {status:?}\n{}", f.stderr);
            assert!(
                f.stderr.to_lowercase().contains("in use"),
                "stderr does not say the port is in use:\n{}",
                f.stderr
            );
        }
    }
    // Many connections, which the kernel spreads over the first server's shards.
    let mut conns: Vec<TcpStream> = (0..32).map(|_| tcp(first.addr())).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        text_set_get(c, &format!("after-refusal-{i}"), b"still here");
    }
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// SIGUSR1 stops the server gracefully, as in memcached: exit status 0, idle clients closed.
#[test]
fn sigusr1_stops_gracefully_with_exit_zero() {
    let mut s = Server::start(&["-t", "2"]);
    let mut idle = s.client();
    idle.set(b"k", b"v");
    signal_and_expect_clean_exit(&mut s, libc::SIGUSR1, "SIGUSR1");
    assert!(idle.is_closed(), "an idle client stayed connected");
}

/// SIGHUP is ignored: after two of them the server still runs, the same connection and new ones
/// are served, and SIGTERM still ends it with status 0.
#[test]
fn sighup_is_ignored_and_the_server_keeps_serving() {
    let mut s = Server::start(&["-t", "2"]);
    let mut c = s.client();
    c.set(b"before-hup", b"1");
    s.signal(libc::SIGHUP);
    s.signal(libc::SIGHUP);
    // A server that SIGHUP kills is gone well within this.
    let died = wait_until(Duration::from_secs(1), || !s.is_running());
    assert!(!died, "SIGHUP ended the server\n{}", s.log());
    assert_eq!(c.get(b"before-hup").as_deref(), Some(&b"1"[..]));
    serves(&s);
    signal_and_expect_clean_exit(&mut s, libc::SIGTERM, "SIGTERM after SIGHUP");
}

// ---------------------------------------------------------------------------------------------
// Many shards, little locked memory
// ---------------------------------------------------------------------------------------------

fn many_shards(threads: &str) {
    let mut s = Server::try_start(&["-t", threads, "-m", "256"])
        .unwrap_or_else(|f| panic!("-t {threads} did not start: {f:?}"));
    assert!(
        ready_line(&s).contains(&format!("({threads} shards")),
        "{}",
        ready_line(&s)
    );
    serves(&s);
    assert_eq!(s.client().stat("threads").to_string(), threads);
    signal_and_expect_clean_exit(&mut s, libc::SIGTERM, &format!("SIGTERM to -t {threads}"));
}

/// `-t 64` on a machine with far fewer CPUs starts within the harness timeout, serves set/get,
/// and exits 0 on SIGTERM.
#[test]
fn sixty_four_shards_start_serve_and_stop() {
    many_shards("64");
}

/// `-t 256` on a machine with far fewer CPUs starts within the harness timeout, serves set/get,
/// and exits 0 on SIGTERM.
#[test]
fn two_hundred_fifty_six_shards_start_serve_and_stop() {
    many_shards("256");
}

/// linux/capability.h
const CAP_IPC_LOCK: libc::c_ulong = 14;

/// Gives the command's child an RLIMIT_MEMLOCK of `bytes` (soft and hard, as `ulimit -l`), and,
/// when run as root, takes CAP_IPC_LOCK out of its bounding set so that the limit applies to it.
fn limit_locked_memory(cmd: &mut Command, bytes: libc::rlim_t) {
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes setrlimit(2), geteuid(2) and prctl(2) system calls and
    // allocates nothing. A failed setrlimit fails the spawn (the error is errno only).
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            // SAFETY: setrlimit reads one `struct rlimit` from `lim`, valid for the call.
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Root's bounding set survives exec and CAP_IPC_LOCK exempts it from the limit: drop
            // the capability there. Best effort (it needs CAP_SETPCAP); the test reports what the
            // child ended up with.
            // SAFETY: geteuid has no arguments; PR_CAPBSET_DROP takes integer arguments only
            // (passed as unsigned longs, as the variadic prctl reads them).
            if libc::geteuid() == 0 {
                let zero: libc::c_ulong = 0;
                libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, zero, zero, zero);
            }
            Ok(())
        });
    }
}

/// Whether process `pid` has CAP_IPC_LOCK in its effective set.
fn has_cap_ipc_lock(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// With RLIMIT_MEMLOCK at 64 KiB (`ulimit -l 64`) and `-t 1` the server neither hangs nor dies:
/// it becomes ready (io_uring or epoll) and serves set/get. When the tests run as root the child
/// also loses CAP_IPC_LOCK, which would otherwise exempt it from the limit.
#[test]
fn low_locked_memory_limit_still_serves() {
    let mut cmd = Server::command(&["--port", "-1", "-l", "127.0.0.1", "-t", "1"]);
    limit_locked_memory(&mut cmd, 64 << 10);
    let s = Server::try_spawn(cmd)
        .unwrap_or_else(|f| panic!("server did not start with RLIMIT_MEMLOCK 64 KiB: {f:?}"));
    eprintln!(
        "server has CAP_IPC_LOCK: {}; {}",
        has_cap_ipc_lock(s.pid()),
        ready_line(&s)
    );
    serves(&s);
}

// ---------------------------------------------------------------------------------------------
// Memory bounds
// ---------------------------------------------------------------------------------------------

/// Polls the RSS until it is back within [`RSS_SETTLE_KIB`] of `before`, or fails.
fn expect_rss_settles(s: &Server, before: u64, what: &str) {
    let mut last = 0;
    let settled = wait_until(SETTLE_TIMEOUT, || {
        last = rss_kib(s);
        last <= before + RSS_SETTLE_KIB
    });
    assert!(
        settled,
        "{what}: RSS still {last} KiB {SETTLE_TIMEOUT:?} after the clients closed; it was \
         {before} KiB before they connected (allowed: + {RSS_SETTLE_KIB} KiB)"
    );
}

/// Many slow readers: with one 512 KiB value stored, 500 connections each pipeline four text
/// `get`s of it and never read. While they are connected the server's RSS stays below `-m 64`
/// plus 64 MiB and a new client is still served; once they close, the RSS falls back to within
/// 32 MiB of what it was before they connected.
#[test]
fn many_slow_readers_keep_memory_bounded() {
    const READERS: usize = 500;
    const GETS: usize = 16;
    raise_nofile(4096);
    let s = Server::start(&["-m", &ITEM_MIB.to_string(), "-t", "1", "-I", "1m"]);
    let value = vec![b'r'; 512 * 1024];
    let mut c = tcp(s.addr());
    text_set_get(&mut c, "big", &value);
    let before = rss_kib(&s);

    let mut peak = before;
    let mut readers = Vec::with_capacity(READERS);
    for i in 0..READERS {
        let mut r = tcp(s.addr());
        r.write_all(&b"get big\r\n".repeat(GETS))
            .unwrap_or_else(|e| panic!("reader {i}: write: {e}"));
        readers.push(r);
        if i % 25 == 0 {
            peak = peak.max(rss_kib(&s));
        }
    }
    // Let the server fill whatever it is willing to fill, sampling the RSS meanwhile (~2 s).
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_kib(&s));
    }
    eprintln!("slow readers: RSS before {before} KiB, peak {peak} KiB");
    assert!(
        peak < RSS_LIMIT_KIB,
        "RSS reached {peak} KiB with {READERS} slow readers (limit {RSS_LIMIT_KIB} KiB, before \
         {before} KiB)"
    );
    // The readers hold nothing up for others.
    text_set_get(&mut tcp(s.addr()), "during-slow-readers", b"served");
    drop(readers);
    expect_rss_settles(&s, before, "slow readers");
    text_set_get(&mut c, "after-slow-readers", b"served");
}

/// Where one connection of the partial-set crowd stands.
#[derive(Debug, PartialEq)]
enum Partial {
    /// Still sending its bytes.
    Sending,
    /// All bytes sent (all but the value's last byte and CRLF); waiting, as the server should.
    Sent,
    /// Answered `SERVER_ERROR out of memory storing object` (memcached's answer when it cannot
    /// allocate the item), which is fine.
    OutOfMemory,
    /// Anything else: an unexpected answer or a close without one.
    Failed(String),
}

struct PartialConn {
    stream: TcpStream,
    header: Vec<u8>,
    /// Bytes to send in all: the header and the value but its last byte.
    total: usize,
    sent: usize,
    answer: Vec<u8>,
    state: Partial,
}

impl PartialConn {
    /// Reads whatever the server sent (non-blocking) and updates the state.
    fn poll_answer(&mut self) -> bool {
        if !matches!(self.state, Partial::Sending | Partial::Sent) {
            return false;
        }
        let mut buf = [0u8; 512];
        let mut progressed = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.classify(Some("closed"));
                    return true;
                }
                Ok(n) => {
                    progressed = true;
                    self.answer.extend_from_slice(&buf[..n]);
                    if self.classify(None) {
                        return true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return progressed,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.classify(Some(&e.to_string()));
                    return true;
                }
            }
        }
    }

    /// Judges the first line of the answer; `ended` says how the connection ended, if it did.
    fn classify(&mut self, ended: Option<&str>) -> bool {
        if let Some(end) = self.answer.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&self.answer[..end]).into_owned();
            self.state = if line.starts_with("SERVER_ERROR out of memory") {
                Partial::OutOfMemory
            } else {
                Partial::Failed(format!("unexpected answer {line:?}"))
            };
            return true;
        }
        if let Some(how) = ended {
            self.state = Partial::Failed(format!(
                "connection ended ({how}) after {} of {} bytes, answer so far {:?}",
                self.sent,
                self.total,
                String::from_utf8_lossy(&self.answer)
            ));
            return true;
        }
        false
    }

    /// Writes the next chunk (non-blocking); true if anything was written.
    fn push(&mut self, filler: &[u8]) -> bool {
        if self.state != Partial::Sending {
            return false;
        }
        let chunk = if self.sent < self.header.len() {
            &self.header[self.sent..]
        } else {
            &filler[..filler.len().min(self.total - self.sent)]
        };
        match self.stream.write(chunk) {
            Ok(n) => {
                self.sent += n;
                if self.sent == self.total {
                    self.state = Partial::Sent;
                }
                n > 0
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
            Err(e) => {
                // The server may have answered and closed: its answer is still readable.
                self.poll_answer();
                if matches!(self.state, Partial::Sending | Partial::Sent) {
                    self.state = Partial::Failed(format!(
                        "write failed ({e}) after {} of {} bytes, no answer",
                        self.sent, self.total
                    ));
                }
                true
            }
        }
    }
}

/// Many partial large sets: 1,000 connections each send `set kN 0 0 1048576` and all of the
/// 1 MiB value but its last byte (and never the CRLF). Each connection's bytes are all accepted
/// or it is answered `SERVER_ERROR out of memory storing object`; meanwhile the server's RSS stays
/// below `-m 64` plus 64 MiB. After they close, the RSS falls back to within 32 MiB of what it
/// was before, no connection is left behind, and a normal set/get works.
///
/// The cache is first filled with 1 MiB items (more than `-m` holds), as a cache in service is:
/// item memory, once taken, may stay with the store (memcached keeps its slab pages), so "before"
/// is measured with it already taken, and a server may read partial values straight into items.
#[test]
fn many_partial_large_sets_keep_memory_bounded() {
    const CONNS: usize = 1000;
    const VALUE_LEN: usize = 1 << 20;
    /// Bound on the sending phase (about 1 GiB over loopback).
    const SEND_DEADLINE: Duration = Duration::from_secs(180);
    raise_nofile(4096);
    // -I 2m: a 1 MiB value (plus the item's header) is a storable size, so the server has to
    // take each set seriously rather than refuse it as too large.
    let s = Server::start(&[
        "-m",
        &ITEM_MIB.to_string(),
        "-t",
        "1",
        "-I",
        "2m",
        "-c",
        "4096",
    ]);
    let fill = vec![b'f'; VALUE_LEN];
    let mut filler_client = s.client();
    for i in 0..(ITEM_MIB + ITEM_MIB / 2) {
        filler_client.set(format!("fill-{i}").as_bytes(), &fill);
    }
    drop(filler_client);
    let before = rss_kib(&s);
    let mut peak = before;
    let mut conns = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        let stream = tcp(s.addr());
        stream.set_nonblocking(true).unwrap();
        let header = format!("set k{i} 0 0 {VALUE_LEN}\r\n").into_bytes();
        let total = header.len() + VALUE_LEN - 1;
        conns.push(PartialConn {
            stream,
            header,
            total,
            sent: 0,
            answer: Vec::new(),
            state: Partial::Sending,
        });
        if i % 50 == 0 {
            peak = peak.max(rss_kib(&s));
        }
    }

    let filler = vec![b'p'; 64 * 1024];
    let start = Instant::now();
    let mut sampled = Instant::now();
    while conns.iter().any(|c| c.state == Partial::Sending) && start.elapsed() < SEND_DEADLINE {
        let mut progressed = false;
        for c in conns.iter_mut() {
            progressed |= c.poll_answer();
            progressed |= c.push(&filler);
        }
        if sampled.elapsed() >= Duration::from_millis(100) {
            peak = peak.max(rss_kib(&s));
            sampled = Instant::now();
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Let late answers arrive and the server settle, sampling the RSS (~2 s).
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        for c in conns.iter_mut() {
            c.poll_answer();
        }
        peak = peak.max(rss_kib(&s));
    }
    let count = |want: fn(&Partial) -> bool| conns.iter().filter(|c| want(&c.state)).count();
    let (sending, sent, oom) = (
        count(|p| *p == Partial::Sending),
        count(|p| *p == Partial::Sent),
        count(|p| *p == Partial::OutOfMemory),
    );
    eprintln!(
        "partial sets: {sent} fully sent, {oom} out of memory, {sending} stuck; RSS before \
         {before} KiB, peak {peak} KiB"
    );
    let failed: Vec<String> = conns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match &c.state {
            Partial::Failed(why) => Some(format!("k{i}: {why}")),
            _ => None,
        })
        .take(5)
        .collect();
    assert!(
        failed.is_empty(),
        "{} partial sets went wrong, e.g. {failed:#?}",
        count(|p| matches!(p, Partial::Failed(_)))
    );
    assert_eq!(
        sending, 0,
        "{sending} connections could not send their partial value within {SEND_DEADLINE:?}: \
         the server stopped reading them without answering"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "RSS reached {peak} KiB with {CONNS} partial 1 MiB sets (limit {RSS_LIMIT_KIB} KiB, \
         before {before} KiB)"
    );
    drop(conns);
    expect_rss_settles(&s, before, "partial sets");
    let mut c = s.client();
    let mut open = 0;
    let settled = wait_until(SETTLE_TIMEOUT, || {
        open = c.stat("curr_connections");
        open == 1
    });
    assert!(
        settled,
        "{open} connections still open after the crowd left"
    );
    text_set_get(
        &mut tcp(s.addr()),
        "after-partial-sets",
        &vec![b'a'; 100_000],
    );
}
