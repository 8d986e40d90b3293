//! memcached's operator commands over the shards: `stats cachedump`, `lru_crawler` (metadump,
//! crawl, enable/disable, sleep, tocrawl), `cache_memlimit`, `slabs reassign|automove` and
//! `stats conns`, answered as memcached 1.6.18 answers them.
//!
//! Items live in per-shard stores, so a dump or crawl asks every shard in turn for one bounded
//! step of its walk ([`AdminRequest::Walk`]: at most [`WALK_CHUNKS`] chunks after a cursor), its
//! own shard directly and the others over the mail. A metadump is sent as it goes (back-pressure
//! from `Conn::send`), so its memory stays bounded whatever the cache holds; a cachedump keeps
//! only what can still make its reply (memcached caps it at 2 MiB).
//!
//! Settings these commands change at run time live in [`AdminState`]; `stats settings` reports
//! them through `Shared::settings`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::Config;
use crate::net::{self, ListenAddr, SockName};
use crate::protocol::{Admin, AdminStatus, ClassSet, Codec, DumpedItem, Outcome};
use crate::storage::{class_bit, Cursor, ReassignError, WalkedItem};

use super::router::{Core, Reply, Request};
use super::stats::unix_now;

/// Chunks one walk step examines at most (the shard is locked for one step).
pub const WALK_CHUNKS: usize = 1024;
/// Chunks one crawl step examines at most.
const CRAWL_CHUNKS: usize = 4096;
/// memcached's cap on a cachedump reply, `END\r\n` included.
const CACHEDUMP_CAP: usize = 2 * 1024 * 1024;
/// Metadump output gathered before it is handed to the connection.
const METADUMP_FLUSH: usize = 64 * 1024;

/// Settings the operator commands change while the server runs.
pub struct AdminState {
    crawler: AtomicBool,
    crawler_sleep: AtomicU32,
    crawler_tocrawl: AtomicU32,
    automove: AtomicU32,
    automove_ratio: AtomicU64,
    memory_limit: AtomicUsize,
}

impl AdminState {
    /// The settings as the flags set them.
    pub fn new(config: &Config) -> AdminState {
        let e = &config.extended;
        AdminState {
            crawler: AtomicBool::new(e.lru_crawler),
            crawler_sleep: AtomicU32::new(e.lru_crawler_sleep),
            crawler_tocrawl: AtomicU32::new(e.lru_crawler_tocrawl),
            automove: AtomicU32::new(e.slab_automove),
            automove_ratio: AtomicU64::new(e.slab_automove_ratio.to_bits()),
            memory_limit: AtomicUsize::new(config.memory_limit),
        }
    }

    /// Whether the crawler (the background reclaimer and the crawl/metadump commands) is on.
    pub fn crawler(&self) -> bool {
        self.crawler.load(Ordering::Relaxed)
    }

    /// Whether the background page mover runs (`slabs automove` 1 or 2).
    pub fn automove(&self) -> bool {
        self.automove.load(Ordering::Relaxed) != 0
    }

    /// The memory limit in bytes, all shards together.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit.load(Ordering::Relaxed)
    }

    /// Writes the run-time values over the flags' (for `stats settings`).
    pub fn apply(&self, config: &mut Config) {
        let e = &mut config.extended;
        e.lru_crawler = self.crawler();
        e.lru_crawler_sleep = self.crawler_sleep.load(Ordering::Relaxed);
        e.lru_crawler_tocrawl = self.crawler_tocrawl.load(Ordering::Relaxed);
        e.slab_automove = self.automove.load(Ordering::Relaxed);
        e.slab_automove_ratio = f64::from_bits(self.automove_ratio.load(Ordering::Relaxed));
        config.memory_limit = self.memory_limit();
    }
}

/// One shard's part of an operator command.
#[derive(Debug)]
pub enum AdminRequest {
    /// Live items of `classes` among at most `budget` chunks from `cursor`.
    Walk {
        /// Class mask (bit `c` = class `c`).
        classes: u64,
        /// Where to start.
        cursor: Cursor,
        /// Chunks to examine at most.
        budget: usize,
    },
    /// Reclaim dead items of `classes` among at most `budget` chunks from `cursor`.
    Crawl {
        /// Class mask.
        classes: u64,
        /// Where to start.
        cursor: Cursor,
        /// Chunks to examine at most.
        budget: usize,
    },
    /// How many pages the source of a reassign has here (`src` `None`: pick one).
    Spare {
        /// Source class, or any.
        src: Option<u32>,
        /// Destination class.
        dst: u32,
    },
    /// Move one page from `src` to `dst`.
    Reassign {
        /// Source class.
        src: u32,
        /// Destination class.
        dst: u32,
    },
    /// Set this shard's memory limit in bytes.
    MemLimit(usize),
    /// This core's connections.
    Conns,
}

/// A shard's answer to an [`AdminRequest`].
#[derive(Debug)]
pub enum AdminReply {
    /// Items walked and where to go on (`None`: the walk is done).
    Items(Vec<WalkedItem>, Option<Cursor>),
    /// A crawl step: where to go on.
    Crawled(Option<Cursor>),
    /// The source class and its pages here.
    Spare(Result<(u32, usize), ReassignError>),
    /// A page move's result.
    Reassigned(Result<(), ReassignError>),
    /// Whether the limit was set.
    MemLimit(bool),
    /// One line group per connection.
    Conns(Vec<ConnLine>),
}

/// What `stats conns` reports of one connection.
#[derive(Debug, Clone)]
pub struct ConnLine {
    /// A UDP socket (memcached writes `UDP UDP` first).
    udp: bool,
    fd: RawFd,
    addr: String,
    listen_addr: Option<String>,
    state: &'static str,
    idle: u64,
}

/// Where a connection is, in memcached's state names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Accepted, nothing read yet.
    NewCmd,
    /// Waiting for the next request.
    Read,
    /// Waiting for the rest of a request's data block.
    NRead,
    /// Running requests.
    ParseCmd,
    /// Waiting for the peer to take output.
    Write,
    /// A `watch` log stream.
    Watch,
    /// A cluster peer's replication stream.
    Repl,
}

impl ConnState {
    fn name(self) -> &'static str {
        match self {
            ConnState::NewCmd => "conn_new_cmd",
            ConnState::Read => "conn_read",
            ConnState::NRead => "conn_nread",
            ConnState::ParseCmd => "conn_parse_cmd",
            ConnState::Write => "conn_mwrite",
            ConnState::Watch => "conn_watch",
            ConnState::Repl => "conn_repl",
        }
    }
}

/// A registered connection: what its task updates (two cell writes per batch).
pub struct ConnTrack {
    fd: RawFd,
    addr: String,
    listen_addr: String,
    state: Cell<ConnState>,
    last_cmd: Cell<u64>,
}

impl ConnTrack {
    /// Records the connection's state.
    #[inline]
    pub fn set_state(&self, s: ConnState) {
        self.state.set(s);
    }

    /// The connection's state.
    pub fn state(&self) -> ConnState {
        self.state.get()
    }
}

/// The connections of one core, for `stats conns`; touched by its own thread only.
pub struct ConnRegistry {
    next: Cell<u64>,
    conns: RefCell<HashMap<u64, Rc<ConnTrack>>>,
    /// Unix seconds, advanced by housekeeping each second (no clock read per request).
    now: Cell<u64>,
}

impl Default for ConnRegistry {
    fn default() -> Self {
        ConnRegistry {
            next: Cell::new(0),
            conns: RefCell::new(HashMap::new()),
            now: Cell::new(unix_now()),
        }
    }
}

impl ConnRegistry {
    /// Advances the registry's clock.
    pub fn tick(&self, unix_secs: u64) {
        self.now.set(unix_secs);
    }

    /// Stamps a connection's last command time.
    #[inline]
    pub fn command(&self, track: &ConnTrack) {
        track.last_cmd.set(self.now.get());
        track.state.set(ConnState::ParseCmd);
    }

    fn lines(&self) -> Vec<ConnLine> {
        let now = self.now.get();
        self.conns
            .borrow()
            .values()
            .map(|t| ConnLine {
                udp: false,
                fd: t.fd,
                addr: t.addr.clone(),
                listen_addr: Some(t.listen_addr.clone()),
                state: t.state.get().name(),
                idle: now.saturating_sub(t.last_cmd.get()),
            })
            .collect()
    }
}

/// A connection's entry in its core's registry, removed when dropped.
pub struct Registered {
    core: Rc<Core>,
    id: u64,
    /// What the connection updates.
    pub track: Rc<ConnTrack>,
}

impl Registered {
    /// Registers `conn`, whose peer is `peer`, on `core`.
    pub fn new(core: &Rc<Core>, conn: &net::Conn, peer: Option<&SockName>) -> Registered {
        let reg = &core.conns;
        let id = reg.next.get();
        reg.next.set(id + 1);
        let track = Rc::new(ConnTrack {
            fd: conn.raw_fd(),
            addr: peer.map_or_else(|| "<closed>".into(), conn_text),
            listen_addr: conn
                .local_addr()
                .map_or_else(String::new, |a| conn_text(&a)),
            state: Cell::new(ConnState::NewCmd),
            last_cmd: Cell::new(reg.now.get()),
        });
        reg.conns.borrow_mut().insert(id, track.clone());
        Registered {
            core: core.clone(),
            id,
            track,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.core.conns.conns.borrow_mut().remove(&self.id);
    }
}

/// A UDP socket's address as memcached's `stats conns` writes it: `udp:1.2.3.4:5`,
/// `udp6:[::1]:5`.
pub fn udp_text(a: std::net::SocketAddr) -> String {
    match a {
        std::net::SocketAddr::V4(a) => format!("udp:{}:{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("udp6:[{}]:{}", a.ip(), a.port()),
    }
}

/// An address as memcached's `stats conns` writes it: `tcp:1.2.3.4:5`, `tcp6:[::1]:5`,
/// `unix:/path` (`unix:<AF 1>` for a client's unnamed end).
pub fn conn_text(a: &SockName) -> String {
    match a {
        SockName::Inet(std::net::SocketAddr::V4(a)) => format!("tcp:{}:{}", a.ip(), a.port()),
        SockName::Inet(std::net::SocketAddr::V6(a)) => format!("tcp6:[{}]:{}", a.ip(), a.port()),
        SockName::Unix(p) if p.as_os_str().len() < 2 => "unix:<AF 1>".into(),
        SockName::Unix(p) => format!("unix:{}", p.display()),
        SockName::Other(f) => format!("<AF {f}>"),
    }
}

/// A listening socket's name for `stats conns`.
pub fn listener_text(a: &ListenAddr) -> String {
    match a {
        ListenAddr::Tcp(a) => conn_text(&SockName::Inet(*a)),
        ListenAddr::Unix(p) => conn_text(&SockName::Unix(p.clone())),
    }
}

fn dumped(i: WalkedItem) -> DumpedItem {
    DumpedItem {
        key: i.key,
        value_len: i.value_len as u32,
        size: i.size as u32,
        class: i.class,
        exptime: i.exptime,
        atime: i.atime,
        cas: i.cas,
        fetched: i.fetched,
    }
}

/// Bytes of one cachedump line: `ITEM <key> [<n> b; <t> s]\r\n`.
fn cachedump_line_len(i: &WalkedItem) -> usize {
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    5 + i.key.len() + 2 + digits(i.value_len as u64) + 4 + digits(i.exptime.unwrap_or(0)) + 5
}

/// Keeps the items a cachedump lists: most recently used first (the head of memcached's LRU),
/// at most `limit` (0: no count limit), as long as the reply stays within memcached's cap.
fn keep_for_cachedump(items: &mut Vec<WalkedItem>, limit: u32) {
    items.sort_unstable_by_key(|i| std::cmp::Reverse((i.atime, i.cas)));
    let (mut bytes, mut keep) = (0, 0);
    for i in items.iter() {
        let len = cachedump_line_len(i);
        if (limit != 0 && keep == limit as usize) || bytes + len + 6 > CACHEDUMP_CAP {
            break;
        }
        bytes += len;
        keep += 1;
    }
    items.truncate(keep);
}

fn class_mask(set: ClassSet) -> Result<u64, AdminStatus> {
    match set {
        ClassSet::All | ClassSet::Hash => Ok(u64::MAX),
        ClassSet::Classes(0) => Err(AdminStatus::CrawlerNotStarted),
        ClassSet::Classes(m) => Ok(m),
        ClassSet::Invalid => Err(AdminStatus::CrawlerBadClass),
    }
}

fn unexpected() -> io::Error {
    io::Error::other("unexpected reply kind to an operator command")
}

impl Core {
    /// Runs one shard's part of an operator command on this shard.
    pub(crate) fn serve_admin(&self, r: AdminRequest) -> AdminReply {
        match r {
            AdminRequest::Walk {
                classes,
                cursor,
                budget,
            } => {
                let mut items = Vec::new();
                let next = self
                    .shard
                    .with_store(|s| s.walk(classes, cursor, budget, &mut items));
                AdminReply::Items(items, next)
            }
            AdminRequest::Crawl {
                classes,
                cursor,
                budget,
            } => {
                let (next, _) = self.shard.with_store(|s| s.crawl(classes, cursor, budget));
                AdminReply::Crawled(next)
            }
            AdminRequest::Spare { src, dst } => AdminReply::Spare(self.shard.with_store(|s| {
                let n = s.class_count() as u32;
                let src = match src {
                    Some(src) => src,
                    // memcached: no class to pick leaves the source at -1, a bad class.
                    None => s.spare_class(dst).ok_or(ReassignError::BadClass)?,
                };
                if !(1..=n).contains(&src) || !(1..=n).contains(&dst) {
                    return Err(ReassignError::BadClass);
                }
                Ok((src, s.class_pages(src)))
            })),
            AdminRequest::Reassign { src, dst } => {
                AdminReply::Reassigned(self.shard.with_store(|s| s.reassign(src, dst)))
            }
            AdminRequest::MemLimit(bytes) => {
                AdminReply::MemLimit(self.shard.with_store(|s| s.set_memory_limit(bytes)))
            }
            AdminRequest::Conns => AdminReply::Conns(self.conns.lines()),
        }
    }

    /// Runs `r` on shard `to`: here directly, elsewhere by mail.
    async fn ask(&self, to: usize, r: AdminRequest) -> io::Result<AdminReply> {
        if to == self.shard.id {
            return Ok(self.serve_admin(r));
        }
        match self.send(to, Request::Admin(r)).await.await {
            Reply::Admin(a) => Ok(a),
            _ => Err(unexpected()),
        }
    }

    /// memcached's refusal of a metadump before it starts, if any (`pipelined`: other requests
    /// came before it in the same read).
    pub fn metadump_refusal(&self, pipelined: bool) -> Option<AdminStatus> {
        if !self.shared.admin.crawler() {
            Some(AdminStatus::CrawlerDisabled)
        } else if self.shared.config().disable_dumping {
            Some(AdminStatus::MetaDumpDisabled)
        } else if pipelined {
            Some(AdminStatus::MetaDumpPipelined)
        } else {
            None
        }
    }

    /// Runs an operator command and writes its answer into `out`; a metadump also hands its
    /// output to `conn` as it goes.
    pub async fn admin<C: Codec, O: super::router::Output>(
        &self,
        cmd: Admin,
        codec: &mut C,
        ctx: &C::Ctx,
        conn: &O,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let outcome = match cmd {
            Admin::CacheDump { class, limit } => self.cachedump(class, limit).await?,
            Admin::MetaDump(set) => {
                if let Some(refused) = self.metadump_refusal(false) {
                    Outcome::Admin(refused)
                } else {
                    match class_mask(set) {
                        Ok(mask) => return self.metadump(mask, codec, ctx, conn, out).await,
                        Err(s) => Outcome::Admin(s),
                    }
                }
            }
            Admin::Crawl(set) => Outcome::Admin(self.crawl(set).await?),
            Admin::Crawler { enable } => {
                let was = self.shared.admin.crawler.swap(enable, Ordering::Relaxed);
                // memcached cannot start a crawler thread that runs already; stopping a
                // stopped one is fine.
                Outcome::Admin(if enable && was {
                    AdminStatus::CrawlerRunning
                } else {
                    AdminStatus::Ok
                })
            }
            Admin::CrawlerSleep(us) => {
                self.shared.admin.crawler_sleep.store(us, Ordering::Relaxed);
                Outcome::Admin(AdminStatus::Ok)
            }
            Admin::CrawlerToCrawl(n) => {
                self.shared
                    .admin
                    .crawler_tocrawl
                    .store(n, Ordering::Relaxed);
                Outcome::Admin(AdminStatus::Ok)
            }
            Admin::MemLimit(mb) => Outcome::Admin(self.mem_limit(mb).await?),
            Admin::Automove(level) => {
                self.shared.admin.automove.store(level, Ordering::Relaxed);
                Outcome::Admin(AdminStatus::Ok)
            }
            Admin::AutomoveRatio(bits) => {
                self.shared
                    .admin
                    .automove_ratio
                    .store(bits, Ordering::Relaxed);
                Outcome::Admin(AdminStatus::Ok)
            }
            Admin::Reassign { src, dst } => Outcome::Admin(self.reassign(src, dst).await?),
            Admin::RefreshCerts => {
                // memcached's answers: OK, or the reason as the whole line.
                let reloaded = match &self.shared.tls {
                    Some(t) => t.reload(),
                    None => Err("Error TLS not enabled".into()),
                };
                match reloaded {
                    Ok(()) => Outcome::Admin(AdminStatus::Ok),
                    Err(e) => {
                        out.extend_from_slice(e.replace(['\r', '\n'], " ").as_bytes());
                        out.extend_from_slice(b"\r\n");
                        return Ok(());
                    }
                }
            }
        };
        codec.encode(out, ctx, &[], &outcome);
        Ok(())
    }

    async fn cachedump(&self, class: u32, limit: u32) -> io::Result<Outcome<&'static [u8]>> {
        if self.shared.config().disable_dumping {
            return Ok(Outcome::Admin(AdminStatus::CacheDumpDisabled));
        }
        let classes = class_bit(class);
        let mut kept: Vec<WalkedItem> = Vec::new();
        // Prune once this many items came in since the last prune: memory stays within the
        // reply's worth plus one batch.
        let mut prune_at = 8192;
        for shard in 0..self.shards {
            let mut at = Some(Cursor::START);
            while let Some(cursor) = at {
                let walk = AdminRequest::Walk {
                    classes,
                    cursor,
                    budget: WALK_CHUNKS,
                };
                let AdminReply::Items(items, next) = self.ask(shard, walk).await? else {
                    return Err(unexpected());
                };
                kept.extend(items);
                at = next;
                if kept.len() >= prune_at {
                    keep_for_cachedump(&mut kept, limit);
                    prune_at = kept.len() + 8192;
                }
            }
        }
        keep_for_cachedump(&mut kept, limit);
        Ok(Outcome::CacheDump(kept.into_iter().map(dumped).collect()))
    }

    async fn metadump<C: Codec, O: super::router::Output>(
        &self,
        classes: u64,
        codec: &mut C,
        ctx: &C::Ctx,
        conn: &O,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        for shard in 0..self.shards {
            let mut at = Some(Cursor::START);
            while let Some(cursor) = at {
                let walk = AdminRequest::Walk {
                    classes,
                    cursor,
                    budget: WALK_CHUNKS,
                };
                let AdminReply::Items(items, next) = self.ask(shard, walk).await? else {
                    return Err(unexpected());
                };
                at = next;
                if items.is_empty() {
                    continue;
                }
                let items = items.into_iter().map(dumped).collect();
                let part: Outcome<&[u8]> = Outcome::MetaDump { items, end: false };
                codec.encode(out, ctx, &[], &part);
                if out.len() >= METADUMP_FLUSH {
                    self.counters().bytes_written += out.len() as u64;
                    // Waits while the client has not taken enough: the dump goes at its pace.
                    conn.send(out).await?;
                }
            }
        }
        let end: Outcome<&[u8]> = Outcome::MetaDump {
            items: Vec::new(),
            end: true,
        };
        codec.encode(out, ctx, &[], &end);
        Ok(())
    }

    /// `lru_crawler crawl`: reclaims the dead items of the classes on every shard now, in steps
    /// (`lru_crawler tocrawl` chunks per shard at most, 0 = all; `lru_crawler sleep`
    /// microseconds between steps), then answers.
    async fn crawl(&self, set: ClassSet) -> io::Result<AdminStatus> {
        let admin = &self.shared.admin;
        if !admin.crawler() {
            return Ok(AdminStatus::CrawlerDisabled);
        }
        if set == ClassSet::Hash {
            // memcached walks its hash table for dumps only.
            return Ok(AdminStatus::CrawlerHashCrawl);
        }
        let classes = match class_mask(set) {
            Ok(m) => m,
            Err(s) => return Ok(s),
        };
        let tocrawl = admin.crawler_tocrawl.load(Ordering::Relaxed) as usize;
        let pause = Duration::from_micros(u64::from(admin.crawler_sleep.load(Ordering::Relaxed)));
        for shard in 0..self.shards {
            let (mut at, mut examined) = (Some(Cursor::START), 0);
            while let Some(cursor) = at {
                let budget = match tocrawl {
                    0 => CRAWL_CHUNKS,
                    n => CRAWL_CHUNKS.min(n - examined),
                };
                if budget == 0 {
                    break;
                }
                let crawl = AdminRequest::Crawl {
                    classes,
                    cursor,
                    budget,
                };
                let AdminReply::Crawled(next) = self.ask(shard, crawl).await? else {
                    return Err(unexpected());
                };
                examined += budget;
                at = next;
                if at.is_some() && !pause.is_zero() {
                    net::sleep(pause).await;
                }
            }
        }
        Ok(AdminStatus::Ok)
    }

    /// `cache_memlimit`: each shard's share of the new limit.
    async fn mem_limit(&self, megabytes: u32) -> io::Result<AdminStatus> {
        let total = (megabytes as usize) << 20;
        let each = total / self.shards;
        let mut ok = true;
        for shard in 0..self.shards {
            match self.ask(shard, AdminRequest::MemLimit(each)).await? {
                AdminReply::MemLimit(set) => ok &= set,
                _ => return Err(unexpected()),
            }
        }
        if !ok {
            return Ok(AdminStatus::MemLimitFailed);
        }
        self.shared
            .admin
            .memory_limit
            .store(total, Ordering::Relaxed);
        Ok(AdminStatus::Ok)
    }

    /// `slabs reassign`: one page from the shard holding most pages of the source class.
    async fn reassign(&self, src: i32, dst: i32) -> io::Result<AdminStatus> {
        let status = |e: ReassignError| match e {
            ReassignError::Same => AdminStatus::ReassignSame,
            ReassignError::BadClass => AdminStatus::ReassignBadClass,
            ReassignError::NoSpare => AdminStatus::ReassignNoSpare,
        };
        if !self.shared.config().extended.slab_reassign {
            return Ok(AdminStatus::ReassignDisabled);
        }
        if src == dst {
            return Ok(AdminStatus::ReassignSame);
        }
        let Ok(dst) = u32::try_from(dst) else {
            return Ok(AdminStatus::ReassignBadClass);
        };
        let src = match src {
            -1 => None,
            s => match u32::try_from(s) {
                Ok(s) => Some(s),
                Err(_) => return Ok(AdminStatus::ReassignBadClass),
            },
        };
        // (shard, source class, its pages there) with the most pages.
        let mut best: Option<(usize, u32, usize)> = None;
        for shard in 0..self.shards {
            let AdminReply::Spare(spare) =
                self.ask(shard, AdminRequest::Spare { src, dst }).await?
            else {
                return Err(unexpected());
            };
            match spare {
                Ok((s, pages)) => {
                    if best.is_none_or(|(_, _, p)| pages > p) {
                        best = Some((shard, s, pages));
                    }
                }
                // Picking a source: this shard has none to give.
                Err(ReassignError::BadClass) if src.is_none() => {}
                Err(e) => return Ok(status(e)),
            }
        }
        let Some((shard, src, pages)) = best else {
            return Ok(AdminStatus::ReassignBadClass);
        };
        if pages < 2 {
            return Ok(AdminStatus::ReassignNoSpare);
        }
        let AdminReply::Reassigned(r) =
            self.ask(shard, AdminRequest::Reassign { src, dst }).await?
        else {
            return Err(unexpected());
        };
        Ok(r.map_or_else(status, |()| AdminStatus::Ok))
    }

    /// `stats conns`: every listener and connection by descriptor, as memcached lists them.
    pub async fn stats_conns(&self) -> io::Result<Outcome<&'static [u8]>> {
        let mut lines = Vec::new();
        let now = unix_now();
        let since_start = now.saturating_sub(self.shared.started());
        for (fd, addr) in self.shared.listeners() {
            lines.push(ConnLine {
                udp: false,
                fd: *fd,
                addr: addr.clone(),
                listen_addr: None,
                state: "conn_listening",
                idle: since_start,
            });
        }
        for (fd, addr) in self.shared.udp_sockets() {
            lines.push(ConnLine {
                udp: true,
                fd: *fd,
                addr: addr.clone(),
                listen_addr: None,
                state: "conn_read",
                idle: since_start,
            });
        }
        for shard in 0..self.shards {
            match self.ask(shard, AdminRequest::Conns).await? {
                AdminReply::Conns(c) => lines.extend(c),
                _ => return Err(unexpected()),
            }
        }
        lines.sort_by_key(|l| l.fd);
        let mut pairs = Vec::with_capacity(lines.len() * 4);
        for l in lines {
            let fd = l.fd;
            if l.udp {
                pairs.push((format!("{fd}:UDP"), "UDP".into()));
            }
            pairs.push((format!("{fd}:addr"), l.addr));
            if let Some(listen) = l.listen_addr {
                pairs.push((format!("{fd}:listen_addr"), listen));
            }
            pairs.push((format!("{fd}:state"), l.state.to_string()));
            pairs.push((format!("{fd}:secs_since_last_cmd"), l.idle.to_string()));
        }
        Ok(Outcome::Stats(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, atime: u64, cas: u64) -> WalkedItem {
        WalkedItem {
            key: key.into(),
            value_len: 1,
            size: 40,
            class: 1,
            exptime: None,
            atime,
            cas,
            fetched: false,
        }
    }

    #[test]
    fn cachedump_keeps_the_most_recent_within_limit_and_cap() {
        let mut items = vec![item("old", 1, 9), item("new", 5, 1), item("newer", 5, 2)];
        keep_for_cachedump(&mut items, 2);
        let keys: Vec<&[u8]> = items.iter().map(|i| &i.key[..]).collect();
        assert_eq!(keys, [&b"newer"[..], b"new"]);
        assert_eq!(
            cachedump_line_len(&item("a", 0, 0)),
            "ITEM a [1 b; 0 s]\r\n".len()
        );
        // 2 MiB cap: lines of 260 bytes, at most (2 MiB - 6) / 260 of them.
        let key = "k".repeat(242);
        let mut many: Vec<_> = (0..10_000).map(|i| item(&key, i, i)).collect();
        assert_eq!(cachedump_line_len(&many[0]), 260);
        keep_for_cachedump(&mut many, 0);
        assert_eq!(many.len(), (CACHEDUMP_CAP - 6) / 260);
    }

    #[test]
    fn addresses_read_as_memcached_writes_them() {
        let v4: std::net::SocketAddr = "127.0.0.1:11211".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(conn_text(&SockName::Inet(v4)), "tcp:127.0.0.1:11211");
        assert_eq!(conn_text(&SockName::Inet(v6)), "tcp6:[::1]:5");
        assert_eq!(conn_text(&SockName::Unix("".into())), "unix:<AF 1>");
        assert_eq!(conn_text(&SockName::Unix("/tmp/s".into())), "unix:/tmp/s");
    }
}
