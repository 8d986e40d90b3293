//! The closed loop: each thread drives its connections, each connection keeps `pipeline` requests
//! in flight, and every reply is timed from the moment its request was queued for writing.
//!
//! One thread with one connection and one request in flight uses a blocking socket (write, read:
//! two system calls per round trip). Otherwise sockets are non-blocking, driven by a level-triggered
//! epoll set (registered once: `poll(2)` re-registering every socket per call cost ~15 % of the
//! client's CPU at pipeline 16). Buffers are
//! allocated once per connection; issuing and completing a request allocates nothing.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::args::Config;
use crate::keys::{check_verify_value, fill_verify_value, format_key, KeyGen, MAX_KEY};
use crate::proto::{Op, Parsed, Reply, WireCodec};
use crate::stats::Stats;

/// How long a fill may take at most.
pub const FILL_TIME_LIMIT: Duration = Duration::from_secs(600);
/// How long replies still in flight at the end are waited for.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Blocking reads wake this often to check the clock.
const READ_TICK: Duration = Duration::from_millis(50);
/// Initial read buffer per connection (grows to fit the largest reply).
const READ_BUF: usize = 64 * 1024;

/// Which phase a set of threads runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Set every key of the connection's share once.
    Fill,
    /// The measured mix (after the warm-up).
    Run,
}

/// What a phase produced.
#[derive(Debug)]
pub struct PhaseResult {
    /// Everything measured, merged over threads.
    pub stats: Stats,
    /// From the start of measurement to the last measured reply.
    pub elapsed: Duration,
    /// Errors that ended a connection early (protocol errors, closed sockets, timeouts).
    pub failures: Vec<String>,
}

struct InFlight {
    sent: Instant,
    op: Op,
    key: u64,
    /// Verify mode: the version this request writes (set) or expects (get; 0 = unknown).
    version: u32,
    opaque: u32,
}

struct Conn<C> {
    stream: TcpStream,
    codec: C,
    keys: KeyGen,
    /// This connection's index among all, and their count (fill partition).
    index: u64,
    total: u64,
    out: Vec<u8>,
    out_pos: usize,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    inflight: VecDeque<InFlight>,
    next_opaque: u32,
    cycle: u32,
    issued: u64,
    budget: u64,
    /// Verify mode: last version written per key of this connection's share.
    versions: Vec<u32>,
    value: Vec<u8>,
    key_buf: [u8; MAX_KEY],
    /// Finished this phase.
    done: bool,
    /// Failed: skipped by every later phase.
    broken: bool,
    /// Registered for writability (output pending).
    want_out: bool,
}

impl<C: WireCodec> Conn<C> {
    fn can_issue(&self, now: Instant, deadline: Instant) -> bool {
        self.issued < self.budget && now < deadline
    }

    fn issue(&mut self, cfg: &Config, phase: Phase, static_value: &[u8], now: Instant) {
        let (op, key) = match phase {
            Phase::Fill => (Op::Set, self.index + self.issued * self.total),
            Phase::Run => {
                let period = cfg.sets + cfg.gets;
                let op = if self.cycle < cfg.sets {
                    Op::Set
                } else {
                    Op::Get
                };
                self.cycle = (self.cycle + 1) % period;
                (op, self.keys.next_key())
            }
        };
        self.issued += 1;
        let klen = format_key(&mut self.key_buf, &cfg.key_prefix, key);
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        let mut version = 0;
        let share = (key / self.total) as usize;
        match op {
            Op::Get => {
                if cfg.verify {
                    version = self.versions[share];
                }
                self.codec
                    .write_get(&mut self.out, &self.key_buf[..klen], opaque);
            }
            Op::Set if cfg.verify => {
                version = self.versions[share].wrapping_add(1).max(1);
                self.versions[share] = version;
                fill_verify_value(&mut self.value, key, version, cfg.value_min, cfg.value_max);
                self.codec
                    .write_set(&mut self.out, &self.key_buf[..klen], &self.value, opaque);
            }
            Op::Set => {
                let size = if cfg.value_min == cfg.value_max {
                    cfg.value_min
                } else {
                    cfg.value_min
                        + self
                            .keys
                            .rng()
                            .below((cfg.value_max - cfg.value_min + 1) as u64)
                            as usize
                };
                self.codec.write_set(
                    &mut self.out,
                    &self.key_buf[..klen],
                    &static_value[..size],
                    opaque,
                );
            }
        }
        self.inflight.push_back(InFlight {
            sent: now,
            op,
            key,
            version,
            opaque,
        });
    }

    /// Writes what is pending; `Ok(true)` once the output buffer is empty.
    fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "server closed the connection",
                    ))
                }
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }

    /// One read; `Ok(false)` if nothing was there (would block / tick).
    fn read(&mut self) -> io::Result<bool> {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        } else if self.rx_end == self.rx.len() {
            if self.rx_start > 0 {
                self.rx.copy_within(self.rx_start..self.rx_end, 0);
                self.rx_end -= self.rx_start;
                self.rx_start = 0;
            } else {
                // One reply larger than the buffer: grow it.
                let len = self.rx.len() * 2;
                self.rx.resize(len, 0);
            }
        }
        match self.stream.read(&mut self.rx[self.rx_end..]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )),
            Ok(n) => {
                self.rx_end += n;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Completes every whole reply in the read buffer.
    fn complete(&mut self, cfg: &Config, stats: &mut Stats, now: Instant) -> Result<(), String> {
        loop {
            let (reply, op, opaque, consumed) =
                match self.codec.parse(&self.rx[self.rx_start..self.rx_end]) {
                    Parsed::Incomplete => return Ok(()),
                    Parsed::Invalid => return Err("invalid reply from the server".into()),
                    Parsed::Reply {
                        reply,
                        op,
                        opaque,
                        consumed,
                    } => (reply, op, opaque, consumed),
                };
            let req = self
                .inflight
                .pop_front()
                .ok_or_else(|| "a reply with no request in flight".to_string())?;
            if op.is_some_and(|o| o != req.op) || opaque.is_some_and(|o| o != req.opaque) {
                return Err(format!(
                    "reply out of order: expected {:?} opaque {}, got {op:?} opaque {opaque:?}",
                    req.op, req.opaque
                ));
            }
            let ns = now.saturating_duration_since(req.sent).as_nanos() as u64;
            match (req.op, reply) {
                (Op::Get, Reply::Value(v)) => {
                    stats.record_get(ns);
                    stats.hits += 1;
                    if cfg.verify {
                        if let Err(e) = check_verify_value(
                            v,
                            req.key,
                            req.version,
                            cfg.value_min,
                            cfg.value_max,
                        ) {
                            stats.verify_failed(format!("key index {}: {e}", req.key));
                        }
                    }
                }
                (Op::Get, Reply::NotFound) => {
                    stats.record_get(ns);
                    stats.misses += 1;
                    if req.version != 0 {
                        stats.lost += 1;
                    }
                }
                (Op::Set, Reply::Stored) => stats.record_set(ns),
                (op, Reply::Error(_)) => {
                    stats.errors += 1;
                    match op {
                        Op::Get => stats.record_get(ns),
                        Op::Set => {
                            stats.record_set(ns);
                            if cfg.verify {
                                // The key now holds an older version, or nothing: stop expecting one.
                                let share = (req.key / self.total) as usize;
                                if self.versions[share] == req.version {
                                    self.versions[share] = 0;
                                }
                            }
                        }
                    }
                }
                (op, reply) => return Err(format!("reply {reply:?} does not answer a {op:?}")),
            }
            self.rx_start += consumed;
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Splits `total` into `parts` shares differing by at most one.
pub fn split(total: u64, parts: u64, i: u64) -> u64 {
    total / parts + u64::from(i < total % parts)
}

fn depth_of(cfg: &Config, phase: Phase) -> usize {
    match phase {
        Phase::Fill => cfg.pipeline.max(64),
        Phase::Run => cfg.pipeline,
    }
}

/// Runs the phases in order on the same connections (a fill's versions carry into the run),
/// each thread waiting for all others between phases, and merges what each phase measured.
pub fn run_phases<C: WireCodec + Default + Send + 'static>(
    cfg: &Config,
    phases: &[Phase],
) -> Result<Vec<PhaseResult>, String> {
    let total = cfg.total_conns() as u64;
    // Connect everything first so the load starts together.
    let mut per_thread: Vec<Vec<Conn<C>>> = Vec::with_capacity(cfg.threads);
    for t in 0..cfg.threads {
        let mut conns = Vec::with_capacity(cfg.conns);
        for c in 0..cfg.conns {
            let index = (t * cfg.conns + c) as u64;
            let stream = connect(cfg.addr).map_err(|e| format!("connect to {}: {e}", cfg.addr))?;
            let depth = phases.iter().map(|&p| depth_of(cfg, p)).max().unwrap_or(1);
            let keys = KeyGen::new(cfg.pattern, cfg.keys, index, total, cfg.verify, cfg.seed);
            let versions = if cfg.verify {
                vec![0u32; split(cfg.keys, total, index) as usize]
            } else {
                Vec::new()
            };
            conns.push(Conn {
                stream,
                codec: C::default(),
                keys,
                index,
                total,
                out: Vec::with_capacity((depth * (64 + MAX_KEY + cfg.value_max)).min(4 << 20)),
                out_pos: 0,
                rx: vec![0u8; READ_BUF.max(2 * (cfg.value_max + 64))],
                rx_start: 0,
                rx_end: 0,
                inflight: VecDeque::with_capacity(depth),
                next_opaque: 0,
                cycle: 0,
                issued: 0,
                budget: 0,
                versions,
                value: Vec::with_capacity(cfg.value_max),
                key_buf: [0; MAX_KEY],
                done: false,
                broken: false,
                want_out: false,
            });
        }
        per_thread.push(conns);
    }
    let barrier = Arc::new(Barrier::new(cfg.threads));
    let handles: Vec<_> = per_thread
        .into_iter()
        .enumerate()
        .map(|(t, mut conns)| {
            let cfg = cfg.clone();
            let barrier = barrier.clone();
            let phases = phases.to_vec();
            std::thread::Builder::new()
                .name(format!("mcbench-{t}"))
                .spawn(move || {
                    let mut results = Vec::new();
                    for phase in phases {
                        for c in &mut conns {
                            c.issued = 0;
                            c.budget = match (phase, cfg.requests) {
                                (Phase::Fill, _) => split(cfg.keys, total, c.index),
                                (Phase::Run, Some(n)) => split(n, total, c.index),
                                (Phase::Run, None) => u64::MAX,
                            };
                        }
                        barrier.wait();
                        results.push(drive(&cfg, phase, &mut conns));
                    }
                    results
                })
                .expect("spawn thread")
        })
        .collect();
    /// Per phase: merged stats, failures, earliest measurement start, latest reply.
    type Merged = (Stats, Vec<String>, Option<Instant>, Option<Instant>);
    let mut merged: Vec<Merged> = phases
        .iter()
        .map(|_| (Stats::default(), Vec::new(), None, None))
        .collect();
    let mut panicked = false;
    for h in handles {
        let Ok(results) = h.join() else {
            panicked = true;
            continue;
        };
        for (m, r) in merged.iter_mut().zip(results) {
            m.0.merge(&r.stats);
            m.1.extend(r.failures);
            m.2 = Some(m.2.map_or(r.measure_start, |f: Instant| f.min(r.measure_start)));
            if let Some(l) = r.last_reply {
                m.3 = Some(m.3.map_or(l, |x: Instant| x.max(l)));
            }
        }
    }
    if panicked {
        return Err("a client thread panicked".into());
    }
    Ok(merged
        .into_iter()
        .map(|(stats, failures, first, last)| {
            let elapsed = match (first, last) {
                (Some(f), Some(l)) => l.saturating_duration_since(f),
                _ => Duration::ZERO,
            };
            PhaseResult {
                stats,
                elapsed,
                failures,
            }
        })
        .collect())
}

struct ThreadResult {
    stats: Stats,
    measure_start: Instant,
    last_reply: Option<Instant>,
    failures: Vec<String>,
}

fn drive<C: WireCodec>(cfg: &Config, phase: Phase, conns: &mut [Conn<C>]) -> ThreadResult {
    let static_value: Vec<u8> = (0..cfg.value_max).map(|i| b'a' + (i % 26) as u8).collect();
    let start = Instant::now();
    let (warm_end, deadline) = match phase {
        Phase::Fill => (start, start + FILL_TIME_LIMIT),
        Phase::Run => (start + cfg.warmup, start + cfg.warmup + cfg.duration),
    };
    let mut warming = warm_end > start;
    let depth = depth_of(cfg, phase);
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    let mut last_reply = None;
    // Blocking only for one connection with one request in flight: a blocking write of a deep
    // pipeline could wait on a server that waits for us to read its replies.
    let blocking = conns.len() == 1 && depth == 1;
    for c in conns.iter_mut() {
        c.done = c.broken;
        c.cycle = 0;
        let r = if blocking {
            c.stream.set_read_timeout(Some(READ_TICK))
        } else {
            c.stream.set_nonblocking(true)
        };
        if let Err(e) = r {
            failures.push(format!("socket setup: {e}"));
            (c.done, c.broken) = (true, true);
        }
    }
    // Prime every pipeline.
    let now = Instant::now();
    for c in conns.iter_mut().filter(|c| !c.done) {
        while c.inflight.len() < depth && c.can_issue(now, deadline) {
            c.issue(cfg, phase, &static_value, now);
        }
        if let Err(e) = c.flush() {
            failures.push(e.to_string());
            (c.done, c.broken) = (true, true);
        }
    }
    let epoll = if blocking {
        None
    } else {
        match Epoll::new() {
            Ok(ep) => Some(ep),
            Err(e) => {
                failures.push(format!("epoll: {e}"));
                return ThreadResult {
                    stats,
                    measure_start: warm_end,
                    last_reply,
                    failures,
                };
            }
        }
    };
    if let Some(ep) = &epoll {
        for (i, c) in conns.iter_mut().enumerate().filter(|(_, c)| !c.done) {
            c.want_out = !c.out.is_empty();
            if let Err(e) = ep.ctl(
                libc::EPOLL_CTL_ADD,
                c.stream.as_raw_fd(),
                interest(c.want_out),
                i as u64,
            ) {
                failures.push(format!("epoll add: {e}"));
                (c.done, c.broken) = (true, true);
            }
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len()];
    let mut ready: Vec<(usize, u32)> = Vec::with_capacity(conns.len());
    loop {
        let now = Instant::now();
        if warming && now >= warm_end {
            warming = false;
            stats.reset();
            for c in conns.iter_mut() {
                c.issued = 0;
            }
        }
        let mut live = 0;
        for c in conns.iter_mut().filter(|c| !c.done) {
            if c.inflight.is_empty() && c.out.is_empty() && !c.can_issue(now, deadline) {
                c.done = true;
                if let Some(ep) = &epoll {
                    let _ = ep.ctl(libc::EPOLL_CTL_DEL, c.stream.as_raw_fd(), 0, 0);
                }
            } else {
                live += 1;
            }
        }
        if live == 0 {
            break;
        }
        if now >= deadline + DRAIN_LIMIT {
            failures.push(format!(
                "{live} connection(s) still waiting for replies {DRAIN_LIMIT:?} after the end"
            ));
            for c in conns.iter_mut().filter(|c| !c.done) {
                (c.done, c.broken) = (true, true);
            }
            break;
        }
        ready.clear();
        match &epoll {
            None => ready.push((0, libc::EPOLLIN as u32)),
            Some(ep) => match ep.wait_spinning(&mut events, cfg.spin, READ_TICK) {
                Ok(n) => ready.extend(events[..n].iter().map(|e| (e.u64 as usize, e.events))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failures.push(format!("epoll_wait: {e}"));
                    break;
                }
            },
        }
        for &(i, revents) in &ready {
            let c = &mut conns[i];
            if c.done {
                continue;
            }
            if revents & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                match c.read() {
                    Ok(false) => {}
                    Ok(true) => {
                        let now = Instant::now();
                        let before = c.inflight.len();
                        if let Err(e) = c.complete(cfg, &mut stats, now) {
                            failures.push(e);
                            (c.done, c.broken) = (true, true);
                            continue;
                        }
                        if c.inflight.len() < before {
                            last_reply = Some(now);
                        }
                        while c.inflight.len() < depth && c.can_issue(now, deadline) {
                            c.issue(cfg, phase, &static_value, now);
                        }
                    }
                    Err(e) => {
                        failures.push(e.to_string());
                        (c.done, c.broken) = (true, true);
                        continue;
                    }
                }
            }
        }
        // Then write every ready connection's new requests, together: the server finds several
        // connections readable at once (as with an event loop that defers writes to the end of
        // its round) instead of being woken once per connection.
        for &(i, _) in &ready {
            let c = &mut conns[i];
            if c.done {
                continue;
            }
            match c.flush() {
                Ok(flushed) => {
                    // Ask for writability only while output is pending.
                    if let Some(ep) = &epoll {
                        if flushed == c.want_out {
                            c.want_out = !flushed;
                            let fd = c.stream.as_raw_fd();
                            if let Err(e) =
                                ep.ctl(libc::EPOLL_CTL_MOD, fd, interest(c.want_out), i as u64)
                            {
                                failures.push(format!("epoll mod: {e}"));
                                (c.done, c.broken) = (true, true);
                            }
                        }
                    }
                }
                Err(e) => {
                    failures.push(e.to_string());
                    (c.done, c.broken) = (true, true);
                }
            }
        }
    }
    ThreadResult {
        stats,
        measure_start: warm_end,
        last_reply,
        failures,
    }
}

fn interest(want_out: bool) -> u32 {
    if want_out {
        (libc::EPOLLIN | libc::EPOLLOUT) as u32
    } else {
        libc::EPOLLIN as u32
    }
}

/// A level-triggered epoll set; closed on drop.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a negative result is an error, checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned open by epoll_create1 and is owned by nothing else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call; both fds are open
        // (the epoll fd is owned by `self`, `fd` by a live TcpStream of the caller).
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Polls without sleeping for up to `spin`, then sleeps up to `tick`.
    fn wait_spinning(
        &self,
        events: &mut [libc::epoll_event],
        spin: Duration,
        tick: Duration,
    ) -> io::Result<usize> {
        if !spin.is_zero() {
            let until = Instant::now() + spin;
            loop {
                let n = self.wait(events, 0)?;
                if n > 0 || Instant::now() >= until {
                    return Ok(n);
                }
            }
        }
        self.wait(events, tick.as_millis() as i32)
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `events` is a live, exclusively borrowed buffer whose length is passed as the
        // maximum the kernel may write; the epoll fd is owned by `self`.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}
