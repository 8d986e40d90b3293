//! Starting and stopping: bind the listeners (once, in this thread, so a taken address is an
//! error before anything runs), start one event-loop thread per shard joined by cross-core mail,
//! print the readiness line, and on SIGTERM/SIGINT/SIGUSR1 drain and stop. SIGHUP reloads the
//! `-Y` file and the TLS certificates.
//!
//! Shard 0 accepts every connection and hands them out round-robin (memcached's dispatch), so
//! connections spread evenly over the shards whatever their load.

pub mod admin;
pub mod auth;
pub mod conn;
pub mod hotkeys;
pub mod http;
pub mod metrics;
pub mod repl;
pub mod router;
pub mod shard;
pub mod stats;
mod systemd;
pub mod tls;
pub mod udp;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::config::{Config, IoMode, ListenTls};
use crate::net::mail::{Inbox, PostOffice};
use crate::net::{
    self, Acceptor, Backend, DatagramSocket, ListenAddr, Listener, Loop, LoopConfig, MemoryBudget,
    Notifier, UdpSocket,
};
use crate::protocol::Limits;
use crate::storage::{Store, StoreConfig, VersionClock};

use router::{Core, Mail, Request};
use shard::Shard;
use stats::{ServerInfo, Settings};

/// How long a shutdown waits for connections to finish their batch.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TLS client may take over its handshake before it is closed (slow clients hold a
/// session's buffers meanwhile).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// State shared by all shards; touched only on connect/disconnect, stats and shutdown.
pub struct Shared {
    config: Config,
    /// TCP port actually bound (known after the first bind when `--port 0`).
    port: AtomicU16,
    /// Open client connections over all shards (for `-c`).
    curr_connections: AtomicUsize,
    /// Open HTTP connections over all shards (`--http-listen`; limited by `-c` on their own).
    pub http_connections: AtomicUsize,
    started: u64,
    stopping: AtomicBool,
    notifiers: Vec<Arc<Notifier>>,
    drained: AtomicUsize,
    /// Large connection buffers, all shards together.
    pub buffers: Arc<MemoryBudget>,
    /// Every shard, set by its thread once its store exists (for direct cross-core requests).
    shards: Vec<OnceLock<Arc<Shard>>>,
    /// The network backend the shards run on (set once all are ready).
    backend: OnceLock<String>,
    /// Settings the operator commands change at run time.
    pub admin: admin::AdminState,
    /// Listening sockets (descriptor, memcached-style name), for `stats conns`.
    listeners: Vec<(std::os::fd::RawFd, String)>,
    /// The `watch` log.
    pub watch: Arc<watch::Hub>,
    /// UDP sockets, one entry per shard serving one (descriptor, memcached-style name): what
    /// memcached counts and lists as its UDP connections.
    udp: Vec<(std::os::fd::RawFd, String)>,
    /// Replication between cluster members (`--cluster`).
    pub repl: Option<Arc<repl::Replication>>,
    /// SASL (`-S`) and text authentication (`-Y`).
    pub auth: auth::Auth,
    /// `-Z`: the TLS configurations and counters.
    pub tls: Option<tls::Tls>,
}

impl Shared {
    /// Shard `id`, once its thread has created it.
    pub fn shard(&self, id: usize) -> Option<&Arc<Shard>> {
        self.shards.get(id)?.get()
    }

    fn settings(&self) -> Settings {
        let first = self.shard(0);
        let mut config = self.config.clone();
        self.admin.apply(&mut config);
        Settings {
            config,
            tcpport: self.port.load(Ordering::Relaxed),
            // Both are switched at run time (`stats detail`, `stats sizes_enable`) on every
            // shard together; shard 0 tells.
            detail_enabled: first.map_or(self.config.detail_enabled, |s| s.detail_on()),
            track_sizes: first.map_or(self.config.extended.track_sizes, |s| s.sizes().is_some()),
        }
    }

    /// Every shard created so far.
    pub fn all_shards(&self) -> impl Iterator<Item = &Arc<Shard>> {
        self.shards.iter().filter_map(|s| s.get())
    }

    /// Process start, Unix seconds.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// The listening sockets: descriptor and name as `stats conns` writes it.
    pub fn listeners(&self) -> &[(std::os::fd::RawFd, String)] {
        &self.listeners
    }

    /// The UDP sockets, one entry per shard serving one: descriptor and name.
    pub fn udp_sockets(&self) -> &[(std::os::fd::RawFd, String)] {
        &self.udp
    }

    fn server_info(&self) -> ServerInfo {
        ServerInfo {
            started: self.started,
            threads: self.config.shards(),
            max_connections: self.config.conn_limit,
            // memcached counts each thread's UDP socket as a connection.
            curr_connections: self.curr_connections.load(Ordering::Relaxed) + self.udp.len(),
            limit_maxbytes: self.admin.memory_limit(),
            backend: self.backend.get().cloned().unwrap_or_default(),
            maxconns_fast: self.config.extended.maxconns_fast,
            idle_timeout: self.config.extended.idle_timeout != 0,
            slab_reassign: self.config.extended.slab_reassign,
            lru_crawler: self.admin.crawler(),
            lru_maintainer: self.config.extended.lru_maintainer_thread,
            temp_lru: self.config.extended.temp_lru,
            log: self.watch.stats(),
            tls: self
                .tls
                .as_ref()
                .map_or(Vec::new(), |t| t.stats(stats::unix_now())),
        }
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Requests a graceful stop and wakes every shard (callable from any thread).
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for n in &self.notifiers {
            n.kick();
        }
    }
}

/// What shard threads tell the main thread while starting.
enum StartMsg {
    Ready(Backend),
    Failed(String),
}

/// Picks the backend: io_uring unless refused here (then epoll, with a warning) or chosen.
fn choose_backend(mode: IoMode) -> Result<Backend, StartError> {
    match mode {
        IoMode::Epoll => Ok(Backend::Epoll),
        IoMode::Uring => net::probe_uring()
            .map(|()| Backend::Uring)
            .map_err(|e| StartError(format!("--io uring: io_uring is not available: {e}"))),
        IoMode::Auto => match net::probe_uring() {
            Ok(()) => Ok(Backend::Uring),
            Err(e) => {
                warn!("io_uring is not available ({e}): falling back to epoll");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// Binds the listeners, each with whether it speaks TLS (unix sockets never do, as memcached).
fn bind_listeners(config: &Config) -> Result<Vec<(Listener, ListenTls)>, StartError> {
    let tcp_kind = if config.tls.is_some() {
        ListenTls::Tls
    } else {
        ListenTls::Plain
    };
    if let Some(passed) = systemd::inherited_listeners().map_err(StartError)? {
        return Ok(passed
            .into_iter()
            .map(|l| {
                let kind = match l.local_addr() {
                    ListenAddr::Tcp(_) => tcp_kind,
                    ListenAddr::Unix(_) => ListenTls::Plain,
                };
                (l, kind)
            })
            .collect());
    }
    let mut addrs: Vec<(ListenAddr, ListenTls)> = Vec::new();
    match &config.unix_socket {
        // As memcached: a unix socket replaces the network listeners.
        Some(path) => addrs.push((ListenAddr::Unix(path.clone()), ListenTls::Plain)),
        None => addrs.extend(
            config
                .listen
                .iter()
                .zip(&config.listen_tls)
                .map(|(a, k)| (ListenAddr::Tcp(*a), *k)),
        ),
    }
    let first = config.port();
    let mut port = first;
    let mut listeners = Vec::new();
    for (addr, kind) in addrs {
        // An address given with a port of its own (`-l ADDR:PORT`) keeps it; the others share
        // the first one's (picked by the first bind with --port -1).
        let mut shared = false;
        let addr = match addr {
            ListenAddr::Tcp(mut a) if a.port() == first => {
                shared = true;
                a.set_port(port);
                ListenAddr::Tcp(a)
            }
            other => other,
        };
        let l = Listener::bind_with(&addr, config.listen_backlog)
            .map_err(|e| StartError(format!("cannot listen on {addr}: {e}")))?;
        if let ListenAddr::Unix(path) = &addr {
            use std::os::unix::fs::PermissionsExt;
            // memcached's -a: the socket's permission bits.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.unix_mask))
                .map_err(|e| StartError(format!("cannot set the mode of {addr}: {e}")))?;
        }
        if let (ListenAddr::Tcp(bound), true) = (l.local_addr(), shared) {
            // With --port 0 the first bind picks the port; the other addresses reuse it.
            port = bound.port();
        }
        listeners.push((l, kind));
    }
    Ok(listeners)
}

/// memcached's environment variable naming a file to receive the bound ports (its test suite
/// starts servers on free ports and reads them there).
const PORT_FILE_ENV: &str = "MEMCACHED_PORT_FILENAME";

/// Writes the bound ports as memcached does (`TCP INET: 11211`, `UDP INET6: ...`, one line per
/// socket, TCP first) to `PATH.lck`, then renames it to `path`, so a reader never sees half.
fn write_port_file(
    path: &Path,
    tcp: impl Iterator<Item = SocketAddr>,
    udp: impl Iterator<Item = SocketAddr>,
) -> std::io::Result<()> {
    let line = |kind: &str, a: SocketAddr| {
        let family = if a.is_ipv4() { "INET" } else { "INET6" };
        format!("{kind} {family}: {}\n", a.port())
    };
    let mut text = String::new();
    tcp.for_each(|a| text.push_str(&line("TCP", a)));
    udp.for_each(|a| text.push_str(&line("UDP", a)));
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lck");
    std::fs::write(&lock, text)?;
    std::fs::rename(&lock, path)
}

/// Binds the UDP sockets (`-U`): one per -l address, as memcached; none with a unix socket.
fn bind_udp(config: &Config) -> Result<Vec<UdpSocket>, StartError> {
    if config.unix_socket.is_some() {
        return Ok(Vec::new());
    }
    config
        .udp_listen
        .iter()
        .map(|&addr| {
            UdpSocket::bind(addr)
                .map_err(|e| StartError(format!("cannot listen on UDP {addr}: {e}")))
        })
        .collect()
}

/// Gives each shard its share of the UDP sockets as memcached spreads them over its worker
/// threads: with one -l address every thread serves it (each on its own descriptor, a `dup`),
/// with several each address is served by one thread, round-robin.
fn spread_udp(sockets: Vec<UdpSocket>, config: &Config) -> Result<Vec<Vec<UdpSocket>>, StartError> {
    let n = config.shards();
    let per_socket = stats::threads_per_udp(config);
    let mut shards: Vec<Vec<UdpSocket>> = (0..n).map(|_| Vec::new()).collect();
    let mut next = 0;
    for sock in sockets {
        // Each share is a descriptor of its own; the original closes when dropped here.
        for _ in 0..per_socket {
            let share = sock
                .try_clone()
                .map_err(|e| StartError(format!("cannot duplicate a UDP socket: {e}")))?;
            shards[next % n].push(share);
            next += 1;
        }
    }
    Ok(shards)
}

/// What the process around the server wants done at two points of the start.
#[derive(Default)]
pub struct Hooks {
    /// The user to become once every listener is bound (`-u` as root).
    pub run_as: Option<crate::process::RunAs>,
    /// Called once the readiness line is logged (`-d`: release the waiting parent).
    pub on_ready: Option<Box<dyn FnOnce()>>,
}

/// Runs the server until SIGTERM/SIGINT/SIGUSR1, then drains and returns.
pub fn run(config: Config) -> Result<(), StartError> {
    run_with(config, Hooks::default())
}

/// As [`run`], with the process's [`Hooks`].
pub fn run_with(config: Config, hooks: Hooks) -> Result<(), StartError> {
    let n = config.shards();
    let backend = choose_backend(config.io)?;
    let auth = auth::Auth::new(&config).map_err(StartError)?;
    let tls = match &config.tls {
        Some(t) => Some(
            tls::Tls::new(t, config.listen_tls.contains(&ListenTls::TlsPeer))
                .map_err(StartError)?,
        ),
        None => None,
    };
    let listeners = bind_listeners(&config)?;
    let http_listener = match config.http_listen {
        Some(addr) => Some(
            Listener::bind_with(&ListenAddr::Tcp(addr), config.listen_backlog)
                .map_err(|e| StartError(format!("--http-listen: cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    let udp_sockets = bind_udp(&config)?;
    if let Some(path) = std::env::var_os(PORT_FILE_ENV).filter(|_| config.unix_socket.is_none()) {
        let tcp = listeners.iter().filter_map(|(l, _)| match l.local_addr() {
            ListenAddr::Tcp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        });
        let udp = udp_sockets.iter().map(|u| u.local_addr());
        write_port_file(Path::new(&path), tcp, udp)
            .map_err(|e| StartError(format!("cannot write the port file {path:?}: {e}")))?;
    }
    if let Some(who) = hooks.run_as {
        crate::process::become_user(who).map_err(|e| {
            StartError(format!(
                "failed to assume identity of user {}: {e}",
                config.user.as_deref().unwrap_or("?")
            ))
        })?;
    }
    let bound: Vec<String> = listeners
        .iter()
        .map(|(l, kind)| match kind {
            ListenTls::Plain => l.local_addr().to_string(),
            _ => format!("tls:{}", l.local_addr()),
        })
        .chain(
            udp_sockets
                .iter()
                .map(|u| format!("udp:{}", u.local_addr())),
        )
        .chain(
            http_listener
                .iter()
                .map(|l| format!("http:{}", l.local_addr())),
        )
        .collect();
    let mut udp_shares = spread_udp(udp_sockets, &config)?;
    let udp_names = udp_shares
        .iter()
        .flatten()
        .map(|u| (u.raw_fd(), admin::udp_text(u.local_addr())))
        .collect();
    let port = listeners
        .iter()
        .find_map(|(l, _)| match l.local_addr() {
            ListenAddr::Tcp(a) => Some(a.port()),
            ListenAddr::Unix(_) => None,
        })
        .unwrap_or(0);
    let notifiers = (0..n)
        .map(|_| Notifier::new().map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError(format!("cannot create an eventfd: {e}")))?;
    let office: PostOffice<Mail> =
        Arc::new(notifiers.iter().map(|n| Inbox::new(n.clone())).collect());
    let listener_names = listeners
        .iter()
        .map(|(l, _)| (l.raw_fd(), admin::listener_text(l.local_addr())))
        .collect();
    let started = stats::unix_now();
    let shared = Arc::new(Shared {
        watch: Arc::new(watch::Hub::new(&config, n, started)),
        admin: admin::AdminState::new(&config),
        listeners: listener_names,
        udp: udp_names,
        port: AtomicU16::new(port),
        curr_connections: AtomicUsize::new(0),
        http_connections: AtomicUsize::new(0),
        started,
        stopping: AtomicBool::new(false),
        notifiers: notifiers.clone(),
        drained: AtomicUsize::new(0),
        buffers: MemoryBudget::new(config.buffer_memory_limit),
        shards: (0..n).map(|_| OnceLock::new()).collect(),
        backend: OnceLock::new(),
        repl: config
            .cluster
            .clone()
            .map(|c| Arc::new(repl::Replication::new(c, n))),
        auth,
        tls,
        config,
    });
    spawn_signal_thread(shared.clone())?;

    let (tx, rx) = mpsc::channel::<StartMsg>();
    let mut listeners = Some(listeners);
    let mut http_listener = http_listener;
    let mut handles = Vec::with_capacity(n);
    for (i, notifier) in notifiers.iter().enumerate() {
        let (shared2, tx2, office2) = (shared.clone(), tx.clone(), office.clone());
        let notifier = notifier.clone();
        let mine = if i == 0 { listeners.take() } else { None };
        let http = if i == 0 { http_listener.take() } else { None };
        let udp = std::mem::take(&mut udp_shares[i]);
        let handle = std::thread::Builder::new()
            .name(format!("shard-{i}"))
            .spawn(move || {
                let sockets = Sockets {
                    tcp: mine,
                    http,
                    udp,
                };
                if let Err(e) = shard_thread(
                    i,
                    shared2.clone(),
                    office2,
                    notifier,
                    sockets,
                    backend,
                    &tx2,
                ) {
                    let _ = tx2.send(StartMsg::Failed(e));
                    shared2.request_stop();
                }
            })
            .map_err(|e| StartError(format!("cannot start shard thread {i}: {e}")))?;
        handles.push(handle);
    }
    drop(tx);
    let mut ready = 0;
    let mut backends = Vec::new();
    let mut failure = None;
    while ready < n {
        match rx.recv() {
            Ok(StartMsg::Ready(b)) => {
                ready += 1;
                backends.push(b);
            }
            Ok(StartMsg::Failed(e)) => {
                failure = Some(e);
                break;
            }
            Err(_) => {
                failure = Some("a shard stopped while starting".into());
                break;
            }
        }
    }
    if let Some(e) = failure {
        shared.request_stop();
        for h in handles {
            let _ = h.join();
        }
        return Err(StartError(e));
    }
    let used = if backends.iter().all(|&b| b == backend) {
        backend.to_string()
    } else {
        "mixed io_uring/epoll".into()
    };
    // One word, as memcached's libevent version is.
    let _ = shared.backend.set(used.replace(' ', "_"));
    info!(
        "corecached ready: listening on {} ({n} shards, {used})",
        bound.join(", ")
    );
    systemd::ready(&format!("listening on {}", bound.join(", ")));
    if let Some(ready) = hooks.on_ready {
        ready();
    }
    for h in handles {
        if h.join().is_err() {
            error!("a shard thread panicked");
        }
    }
    if let Some(ListenAddr::Unix(path)) = shared.config.unix_socket.clone().map(ListenAddr::Unix) {
        let _ = std::fs::remove_file(path);
    }
    info!("corecached stopped");
    Ok(())
}

fn spawn_signal_thread(shared: Arc<Shared>) -> Result<(), StartError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGUSR1, SIGHUP])
        .map_err(|e| StartError(format!("cannot install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stops = 0;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    // As memcached: SIGHUP re-reads the -Y file and the TLS certificates.
                    match shared.auth.reload() {
                        Ok(()) if shared.auth.text() => info!("SIGHUP: reloaded the -Y file"),
                        Ok(()) if shared.tls.is_none() => {
                            info!("signal {sig} (SIGHUP): nothing to reload")
                        }
                        Ok(()) => {}
                        Err(e) => warn!("SIGHUP: {e}; the previous -Y entries stay"),
                    }
                    if let Some(t) = &shared.tls {
                        match t.reload() {
                            Ok(()) => info!("SIGHUP: reloaded the TLS certificates"),
                            Err(e) => warn!(
                                "Could not reload TLS certificates on SIGHUP: {e}; \
                                 the previous ones stay"
                            ),
                        }
                    }
                    continue;
                }
                stops += 1;
                if stops == 1 {
                    info!("signal {sig}: draining connections and stopping");
                    systemd::stopping();
                    shared.request_stop();
                } else {
                    warn!("second signal {sig}: exiting at once");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| StartError(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data that may be zeroed; CPU_SET writes inside it for
    // cpu < CPU_SETSIZE (checked); sched_setaffinity reads exactly its size.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU {cpu} is out of range"));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The sockets one shard serves: the listeners (shard 0) and its UDP shares.
struct Sockets {
    tcp: Option<Vec<(Listener, ListenTls)>>,
    /// `--http-listen`'s listener (shard 0).
    http: Option<Listener>,
    udp: Vec<UdpSocket>,
}

/// What an accepted connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// memcached's protocols (conn.rs), over TLS or not as its listener says.
    Memcached(ListenTls),
    /// HTTP (http.rs).
    Http,
}

fn shard_thread(
    i: usize,
    shared: Arc<Shared>,
    office: PostOffice<Mail>,
    notifier: Arc<Notifier>,
    sockets: Sockets,
    backend: Backend,
    tx: &mpsc::Sender<StartMsg>,
) -> Result<(), String> {
    if let Some(cpu) = shared.config.placement[i] {
        pin_to(cpu)?;
    }
    let n = shared.config.shards();
    let budget = shared.buffers.clone();
    let lp = match Loop::new(
        LoopConfig::for_loops(backend, n),
        notifier.clone(),
        budget.clone(),
    ) {
        Ok(lp) => lp,
        Err(e) if backend == Backend::Uring && shared.config.io == IoMode::Auto => {
            warn!("shard {i}: io_uring setup failed ({e}): falling back to epoll");
            Loop::new(LoopConfig::for_loops(Backend::Epoll, n), notifier, budget)
                .map_err(|e| format!("shard {i}: cannot start its event loop: {e}"))?
        }
        Err(e) => {
            return Err(format!(
                "shard {i}: cannot start its {backend} event loop: {e}"
            ))
        }
    };
    let mut store = Store::new(StoreConfig {
        memory_limit: shared.config.shard_memory(),
        max_item_size: shared.config.max_item_size,
        growth_factor: shared.config.growth_factor,
        eviction: shared.config.eviction.policy(),
        shard_id: i as u32,
        shard_count: n as u32,
        evictions: !shared.config.disable_evictions,
        cas_enabled: !shared.config.disable_cas,
        // Versions comparable across members, and tombstones, only where replication runs.
        versions: if shared.repl.is_some() {
            VersionClock::Hybrid
        } else {
            VersionClock::Counter
        },
        ..StoreConfig::default()
    })
    .map_err(|e| e.to_string())?;
    store.set_time(stats::unix_now());
    if shared.config.extended.track_sizes {
        store.enable_sizes();
    }
    let limits = Limits {
        max_item_size: shared.config.max_item_size,
        ..Limits::default()
    };
    watch::set_core(i);
    let shard = Arc::new(Shard::new(
        i,
        n,
        store,
        shared.watch.clone(),
        shared.repl.clone(),
    ));
    shard.set_detail(shared.config.detail_enabled, shared.config.delimiter_byte());
    shard.set_hotkeys_sample(shared.config.hotkeys_sample);
    // Each shard is set once, by its own thread.
    let _ = shared.shards[i].set(shard.clone());
    let core = Rc::new(Core::new(shard, n, limits, shared.clone(), office));
    {
        let (c1, c2) = (core.clone(), core.clone());
        lp.add_hook(move || c1.deliver_mail(), move || c2.has_mail());
    }
    let datagrams = sockets
        .udp
        .into_iter()
        .map(|u| lp.datagrams(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("shard {i}: cannot receive UDP datagrams: {e}"))?;
    // memcached counts each thread's UDP socket as a connection it made.
    core.counters().total_connections += datagrams.len() as u64;
    let mut acceptors = match sockets.tcp {
        Some(ls) => ls
            .into_iter()
            .map(|(l, tls)| lp.accept_on(l).map(|a| (a, ConnKind::Memcached(tls))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("shard {i}: cannot accept: {e}"))?,
        None => Vec::new(),
    };
    if let Some(l) = sockets.http {
        let a = lp
            .accept_on(l)
            .map_err(|e| format!("shard {i}: cannot accept HTTP: {e}"))?;
        acceptors.push((a, ConnKind::Http));
    }
    let _ = tx.send(StartMsg::Ready(lp.backend()));
    let main = shard_main(core, acceptors, datagrams);
    lp.block_on(main)
        .map_err(|e| format!("shard {i}: event loop failed: {e}"))
}

async fn shard_main(
    core: Rc<Core>,
    acceptors: Vec<(Acceptor, ConnKind)>,
    datagrams: Vec<DatagramSocket>,
) {
    let lp = Loop::current();
    lp.spawn(housekeeping(core.clone()));
    for (a, kind) in acceptors {
        lp.spawn(accept_loop(core.clone(), a, kind));
    }
    for d in datagrams {
        lp.spawn(udp::serve(core.clone(), d));
    }
    if let Some(repl) = core.shared.repl.clone() {
        for peer in repl.peers() {
            lp.spawn(repl::sender::run(core.clone(), repl.clone(), peer));
        }
        if core.shard.id == 0 && !repl.is_ready() {
            let repl = repl.clone();
            lp.spawn(async move {
                while !repl.check_ready() {
                    net::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    }
    if core.shard.id == 0 {
        if let Some(every) = systemd::watchdog_interval() {
            let core = core.clone();
            lp.spawn(async move {
                while !core.shared.stopping() {
                    net::sleep(every).await;
                    // A round trip through every shard: a stuck core stops the pings.
                    core.fan_out(|| Request::Ping).await;
                    systemd::watchdog();
                }
            });
        }
    }
    core.stop.wait().await;

    // Drain: connections finish the batch in hand, then close.
    lp.stop_connections();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while core.live_connections.get() > 0 && Instant::now() < deadline {
        net::sleep(Duration::from_millis(5)).await;
    }
    if core.live_connections.get() > 0 {
        warn!(
            "shard {}: {} connections still busy after {DRAIN_TIMEOUT:?}; closing them",
            core.shard.id,
            core.live_connections.get()
        );
    }
    // Peers may still need this shard for their last batches: serve mail until all drained.
    let shared = &core.shared;
    let n = core.shards;
    shared.drained.fetch_add(1, Ordering::AcqRel);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.drained.load(Ordering::Acquire) < n && Instant::now() < deadline {
        net::sleep(Duration::from_millis(5)).await;
    }
}

async fn housekeeping(core: Rc<Core>) {
    let shard = core.shard.clone();
    loop {
        // Wake just after each wall-clock second so the store's clock is never late.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let to_next = Duration::from_nanos(1_000_000_000 - now.subsec_nanos() as u64);
        net::sleep(to_next + Duration::from_millis(1)).await;
        let now = stats::unix_now();
        shard.tick(now);
        core.conns.tick(now);
        let admin = &core.shared.admin;
        shard.housekeep(admin.crawler(), admin.automove());
        if core.closed_since_trim.replace(0) > 0 {
            give_freed_memory_back();
        }
    }
}

/// Returns the free pages of the allocator's heaps to the system (after clients left, their
/// smaller buffers are scattered free chunks that glibc would otherwise keep).
fn give_freed_memory_back() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn accept_loop(core: Rc<Core>, acceptor: Acceptor, kind: ConnKind) {
    let shared = core.shared.clone();
    let mut next_shard = 0usize;
    loop {
        let accepted = futures_lite::future::or(async { Some(acceptor.accept().await) }, async {
            core.stop.wait().await;
            None
        })
        .await;
        let fd = match accepted {
            None => break,
            Some(Ok(fd)) => fd,
            Some(Err(e)) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!("accept failed: {e}");
                net::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let limit = shared.config.conn_limit;
        let open = match kind {
            ConnKind::Memcached(_) => &shared.curr_connections,
            ConnKind::Http => &shared.http_connections,
        };
        let prev = open.fetch_add(1, Ordering::AcqRel);
        if prev >= limit {
            open.fetch_sub(1, Ordering::AcqRel);
            core.counters().rejected_connections += 1;
            debug!("connection limit {limit} reached: refusing a connection");
            drop(fd);
            continue;
        }
        let to = next_shard;
        next_shard = (next_shard + 1) % core.shards;
        if to == core.shard.id {
            serve_kind(&core, fd, kind);
        } else {
            core.hand_over(to, fd, kind);
        }
    }
    acceptor.close().await;
}

/// Starts serving an accepted connection of `kind` on this shard.
pub(crate) fn serve_kind(core: &Rc<Core>, fd: OwnedFd, kind: ConnKind) {
    match kind {
        ConnKind::Memcached(tls) => serve_connection(core, fd, tls),
        ConnKind::Http => serve_http(core, fd),
    }
}

/// Starts serving an accepted HTTP connection on this shard (counted in `http_connections` by
/// the acceptor already). Its task counts as a live connection, so a drain waits for it.
fn serve_http(core: &Rc<Core>, fd: OwnedFd) {
    let lp = Loop::current();
    let conn = match lp.adopt(fd) {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot serve an HTTP connection: {e}");
            core.shared.http_connections.fetch_sub(1, Ordering::AcqRel);
            return;
        }
    };
    core.live_connections.set(core.live_connections.get() + 1);
    let core = core.clone();
    lp.spawn(async move {
        http::serve(core.clone(), conn).await;
        core.live_connections.set(core.live_connections.get() - 1);
        core.closed_since_trim.set(core.closed_since_trim.get() + 1);
        core.shared.http_connections.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Starts serving an accepted connection on this shard (counted in `curr_connections` by the
/// acceptor already); a TLS one (`kind`) after its handshake, which runs on this shard's loop.
pub(crate) fn serve_connection(core: &Rc<Core>, fd: OwnedFd, kind: ListenTls) {
    let lp = Loop::current();
    let tls = core.shared.tls.as_ref().and_then(|t| {
        t.config(kind)
            .map(|config| (config, t.settings().wbuf_size))
    });
    let adopted = match tls {
        Some((config, wbuf)) => lp.adopt_tls(fd, config, wbuf),
        None => lp.adopt(fd),
    };
    let conn = match adopted {
        Ok(c) => c,
        Err(e) => {
            warn!("cannot serve a connection: {e}");
            core.shared.curr_connections.fetch_sub(1, Ordering::AcqRel);
            return;
        }
    };
    core.counters().total_connections += 1;
    core.live_connections.set(core.live_connections.get() + 1);
    let core = core.clone();
    lp.spawn(async move {
        if conn.is_tls() {
            match net::timeout(HANDSHAKE_TIMEOUT, conn.handshake()).await {
                Some(Ok(true)) => conn::serve(core.clone(), conn).await,
                Some(Ok(false)) => debug!("TLS: {} left during the handshake", conn.peer()),
                Some(Err(e)) => {
                    if conn.tls_failure().is_some() {
                        if let Some(t) = &core.shared.tls {
                            t.handshake_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    debug!("TLS handshake with {} failed: {e}", conn.peer());
                }
                None => debug!("TLS: {} timed out during the handshake", conn.peer()),
            }
        } else {
            conn::serve(core.clone(), conn).await;
        }
        core.live_connections.set(core.live_connections.get() - 1);
        core.closed_since_trim.set(core.closed_since_trim.get() + 1);
        core.shared.curr_connections.fetch_sub(1, Ordering::AcqRel);
    });
}
