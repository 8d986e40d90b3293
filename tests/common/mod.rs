//! Test harness: starts the real `corecached` binary on 127.0.0.1 with `--port -1` (a free port), learns the bound
//! address from its readiness line (no sleeps, no guessed ports), kills it by PID on drop; plus a
//! small blocking client for the memcached binary protocol.
//!
//! Used by every integration test, including the third-party-client ones: `Server::start(&[...])`,
//! `server.addr()` / `server.port()`, `server.client()`. Tests that need other listen flags or a
//! hook in the child build the command with `Server::command` and start it with
//! `Server::try_spawn`.
//!
//! When the environment variable `CORECACHED_IO` is set (`uring`, `epoll`), every server started
//! here runs with `--io $CORECACHED_IO` unless the test names a backend itself; `./tools/test-all`
//! runs the server tests once more that way, so each passes on both network backends.
#![allow(dead_code)]

pub mod external;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The text before the bound address on the server's readiness line.
pub const READY_MARK: &str = "corecached ready: listening on ";

/// How long a server may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that picks the network backend of every server the tests start.
pub const IO_ENV: &str = "CORECACHED_IO";

/// `--io $CORECACHED_IO` when the variable is set and not empty, else nothing.
pub fn io_args() -> Vec<String> {
    match std::env::var(IO_ENV) {
        Ok(io) if !io.trim().is_empty() => vec!["--io".into(), io.trim().into()],
        _ => Vec::new(),
    }
}

/// The addresses a readiness line lists (`ADDR[, ADDR...]` before ` (N shards...)`), as printed.
pub fn ready_addrs(line: &str) -> Option<Vec<String>> {
    let rest = line.split(READY_MARK).nth(1)?;
    let list = rest.split(" (").next().unwrap_or(rest);
    let addrs: Vec<String> = list
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    (!addrs.is_empty()).then_some(addrs)
}

/// A running server process, killed on drop.
pub struct Server {
    child: Child,
    /// The first TCP address on the readiness line, if it lists one.
    addr: Option<SocketAddr>,
    /// Every address on the readiness line, as printed (`127.0.0.1:N`, `[::1]:N`, `unix:PATH`).
    addrs: Vec<String>,
    log: Arc<Mutex<String>>,
}

/// Why a server did not start: its exit status (if it exited) and what it printed.
#[derive(Debug)]
pub struct StartFailure {
    /// Exit status, when the process ended.
    pub status: Option<ExitStatus>,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

impl Server {
    /// Starts `corecached --port -1 -l 127.0.0.1 ARGS` and waits for its readiness line.
    pub fn start(args: &[&str]) -> Server {
        Server::try_start(args).unwrap_or_else(|f| panic!("server did not start: {f:?}"))
    }

    /// Like [`Server::start`], returning the exit status and stderr when it fails to start.
    pub fn try_start(args: &[&str]) -> Result<Server, StartFailure> {
        let mut all = vec!["--port", "-1", "-l", "127.0.0.1"];
        all.extend_from_slice(args);
        Server::try_spawn(Server::command(&all))
    }

    /// `corecached ARGS`, plus `--io $CORECACHED_IO` when that is set and ARGS name no backend,
    /// with stderr piped for [`Server::try_spawn`]. No listen flags are added.
    pub fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_corecached"));
        cmd.args(args);
        if !args.iter().any(|a| *a == "--io" || a.starts_with("--io=")) {
            cmd.args(io_args());
        }
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Spawns `cmd` (from [`Server::command`], perhaps adjusted) and waits for its readiness line.
    pub fn try_spawn(mut cmd: Command) -> Result<Server, StartFailure> {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn corecached: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            // Keeps draining stderr for the server's whole life so it never blocks on the pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // Log first, then announce: a test that sees the address also sees the line.
                    {
                        let mut log = log.lock().unwrap();
                        if log.len() < 1 << 20 {
                            log.push_str(&line);
                            log.push('\n');
                        }
                    }
                    if line.contains(READY_MARK) {
                        let _ = tx.send(ready_addrs(&line));
                    }
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(addrs)) => {
                    let addr = addrs.iter().find_map(|a| a.parse::<SocketAddr>().ok());
                    return Ok(Server {
                        child,
                        addr,
                        addrs,
                        log,
                    });
                }
                Ok(None) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // Let the reader collect the last lines: it hangs up at the pipe's end.
                        let until = Instant::now() + Duration::from_secs(2);
                        while Instant::now() < until {
                            if let Err(mpsc::RecvTimeoutError::Disconnected) =
                                rx.recv_timeout(Duration::from_millis(20))
                            {
                                break;
                            }
                        }
                        return Err(StartFailure {
                            status: Some(status),
                            stderr: log.lock().unwrap().clone(),
                        });
                    }
                    if Instant::now() > deadline {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = child.kill();
        let status = child.wait().ok();
        let stderr = log.lock().unwrap().clone();
        Err(StartFailure { status, stderr })
    }

    /// The bound address (the first TCP address on the readiness line).
    pub fn addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(|| {
            panic!(
                "the readiness line lists no TCP address: {:?}\n{}",
                self.addrs,
                self.log()
            )
        })
    }

    /// Every address on the readiness line, as printed (`unix:PATH` for a unix socket).
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A new binary-protocol client connection.
    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Resident memory of the server process, in KiB (from /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with our own child's pid has no memory effects.
        let r = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(r, 0, "kill failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Binary protocol opcodes.
pub mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const ADD: u8 = 0x02;
    pub const REPLACE: u8 = 0x03;
    pub const DELETE: u8 = 0x04;
    pub const INCR: u8 = 0x05;
    pub const DECR: u8 = 0x06;
    pub const QUIT: u8 = 0x07;
    pub const FLUSH: u8 = 0x08;
    pub const GETQ: u8 = 0x09;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETK: u8 = 0x0c;
    pub const GETKQ: u8 = 0x0d;
    pub const APPEND: u8 = 0x0e;
    pub const PREPEND: u8 = 0x0f;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const ADDQ: u8 = 0x12;
    pub const REPLACEQ: u8 = 0x13;
    pub const DELETEQ: u8 = 0x14;
    pub const INCRQ: u8 = 0x15;
    pub const DECRQ: u8 = 0x16;
    pub const QUITQ: u8 = 0x17;
    pub const FLUSHQ: u8 = 0x18;
    pub const APPENDQ: u8 = 0x19;
    pub const PREPENDQ: u8 = 0x1a;
    pub const VERBOSITY: u8 = 0x1b;
    pub const TOUCH: u8 = 0x1c;
    pub const GAT: u8 = 0x1d;
    pub const GATQ: u8 = 0x1e;
    pub const SASL_LIST: u8 = 0x20;
    pub const SASL_AUTH: u8 = 0x21;
    pub const SASL_STEP: u8 = 0x22;
    pub const GATK: u8 = 0x23;
    pub const GATKQ: u8 = 0x24;
}

/// Response statuses.
pub mod status {
    pub const OK: u16 = 0x0000;
    pub const NOT_FOUND: u16 = 0x0001;
    pub const EXISTS: u16 = 0x0002;
    pub const TOO_LARGE: u16 = 0x0003;
    pub const INVALID: u16 = 0x0004;
    pub const NOT_STORED: u16 = 0x0005;
    pub const NON_NUMERIC: u16 = 0x0006;
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
}

/// One binary request, to encode.
#[derive(Debug, Clone, Default)]
pub struct Req<'a> {
    pub opcode: u8,
    pub key: &'a [u8],
    pub extras: Vec<u8>,
    pub value: &'a [u8],
    pub cas: u64,
    pub opaque: u32,
}

impl Req<'_> {
    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.extras.len() + self.key.len() + self.value.len();
        let mut b = Vec::with_capacity(24 + body);
        b.push(0x80);
        b.push(self.opcode);
        b.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        b.push(self.extras.len() as u8);
        b.push(0);
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&(body as u32).to_be_bytes());
        b.extend_from_slice(&self.opaque.to_be_bytes());
        b.extend_from_slice(&self.cas.to_be_bytes());
        b.extend_from_slice(&self.extras);
        b.extend_from_slice(self.key);
        b.extend_from_slice(self.value);
        b
    }
}

/// Request builders for the common commands.
pub fn get(opcode: u8, key: &[u8]) -> Req<'_> {
    Req {
        opcode,
        key,
        ..Req::default()
    }
}

/// A Set/Add/Replace (or quiet variant) request.
pub fn store<'a>(opcode: u8, key: &'a [u8], value: &'a [u8], flags: u32, exptime: u32) -> Req<'a> {
    let mut extras = flags.to_be_bytes().to_vec();
    extras.extend_from_slice(&exptime.to_be_bytes());
    Req {
        opcode,
        key,
        extras,
        value,
        ..Req::default()
    }
}

/// An Incr/Decr (or quiet variant) request.
pub fn arith(opcode: u8, key: &[u8], delta: u64, initial: u64, exptime: u32) -> Req<'_> {
    let mut extras = delta.to_be_bytes().to_vec();
    extras.extend_from_slice(&initial.to_be_bytes());
    extras.extend_from_slice(&exptime.to_be_bytes());
    Req {
        opcode,
        key,
        extras,
        ..Req::default()
    }
}

/// A Touch/GAT-family request.
pub fn touch(opcode: u8, key: &[u8], exptime: u32) -> Req<'_> {
    Req {
        opcode,
        key,
        extras: exptime.to_be_bytes().to_vec(),
        ..Req::default()
    }
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub magic: u8,
    pub opcode: u8,
    pub datatype: u8,
    pub status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Resp {
    /// The flags in a Get/Touch response's extras.
    pub fn flags(&self) -> u32 {
        u32::from_be_bytes(self.extras[..4].try_into().unwrap())
    }

    /// The counter in an Incr/Decr response.
    pub fn counter(&self) -> u64 {
        u64::from_be_bytes(self.value[..8].try_into().unwrap())
    }
}

/// Parses one response from the front of `buf`: `Some((resp, len))`, or `None` if incomplete.
pub fn parse_response(buf: &[u8]) -> Option<(Resp, usize)> {
    if buf.len() < 24 {
        return None;
    }
    let keylen = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let extlen = buf[4] as usize;
    let body = u32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize;
    if buf.len() < 24 + body {
        return None;
    }
    let b = &buf[24..24 + body];
    Some((
        Resp {
            magic: buf[0],
            opcode: buf[1],
            datatype: buf[5],
            status: u16::from_be_bytes([buf[6], buf[7]]),
            opaque: u32::from_be_bytes(buf[12..16].try_into().unwrap()),
            cas: u64::from_be_bytes(buf[16..24].try_into().unwrap()),
            extras: b[..extlen].to_vec(),
            key: b[extlen..extlen + keylen].to_vec(),
            value: b[extlen + keylen..].to_vec(),
        },
        24 + body,
    ))
}

/// A blocking binary-protocol connection with a 10 s read timeout (tests never hang).
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Writes one request.
    pub fn send(&mut self, req: &Req) {
        self.send_raw(&req.encode());
    }

    /// Reads one response.
    pub fn recv(&mut self) -> Resp {
        let mut head = [0u8; 24];
        self.stream.read_exact(&mut head).expect("read header");
        let body = u32::from_be_bytes(head[8..12].try_into().unwrap()) as usize;
        let mut buf = head.to_vec();
        buf.resize(24 + body, 0);
        self.stream.read_exact(&mut buf[24..]).expect("read body");
        parse_response(&buf).unwrap().0
    }

    /// Sends a request and reads its response.
    pub fn call(&mut self, req: &Req) -> Resp {
        self.send(req);
        self.recv()
    }

    /// Whether the server closed the connection (EOF or reset) within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    /// Sets `key` to `value` (flags 0, no expiry) and asserts success; returns the CAS.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> u64 {
        let r = self.call(&store(op::SET, key, value, 0, 0));
        assert_eq!(r.status, status::OK, "set {key:?}");
        r.cas
    }

    /// Gets `key`: `Some(value)` on a hit, `None` on a miss.
    pub fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let r = self.call(&get(op::GET, key));
        match r.status {
            status::OK => Some(r.value),
            status::NOT_FOUND => None,
            s => panic!("get {key:?}: status {s:#x}"),
        }
    }

    /// `stats [group]` as name/value pairs, in the order received.
    pub fn stats(&mut self, group: &str) -> Vec<(String, String)> {
        self.send(&get(op::STAT, group.as_bytes()));
        let mut out = Vec::new();
        loop {
            let r = self.recv();
            assert_eq!(r.status, status::OK, "stats {group}");
            if r.key.is_empty() {
                return out;
            }
            out.push((
                String::from_utf8(r.key).unwrap(),
                String::from_utf8(r.value).unwrap(),
            ));
        }
    }

    /// One general stat as a number.
    pub fn stat(&mut self, name: &str) -> u64 {
        self.stats("")
            .into_iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no stat {name}"))
            .1
            .parse()
            .unwrap()
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
