//! The runtime: one glommio executor per shard, each listening on the same address
//! (`SO_REUSEPORT`), joined by two channel meshes (requests, replies), with a graceful drain on
//! SIGTERM/SIGINT.
//!
//! Requests and replies travel on separate meshes so that a shard blocked sending a reply never
//! waits on a peer that is itself blocked sending one: reply receivers never block.

pub mod conn;
pub mod router;
pub mod shard;
pub mod stats;

use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use glommio::net::TcpListener;
use glommio::sync::{Gate, Semaphore};
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};
use log::{debug, error, info, warn};

use crate::config::Config;
use crate::protocol::{Command, Limits, Outcome};
use crate::storage::{Store, StoreConfig};

use router::{Envelope, Pending, Reply, ReplyFuture, Request};
use shard::Shard;
use stats::{ServerInfo, Settings, Snapshot};

/// Messages in flight per shard pair before a sender waits.
const MESH_DEPTH: usize = 256;
/// Bytes of values one reply batch (local or remote) collects before the rest is deferred.
pub const REPLY_CAP: usize = 256 * 1024;
/// How long a shutdown waits for connections to finish their batch.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A one-way, cross-thread "stop now" flag whose waiters are executor tasks.
#[derive(Default)]
pub struct ShutdownSignal {
    inner: Mutex<(bool, Vec<Waker>)>,
}

impl ShutdownSignal {
    /// Raises the flag and wakes every waiter (callable from any thread).
    pub fn trigger(&self) {
        let wakers = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.0 = true;
            std::mem::take(&mut g.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Resolves once the flag is raised.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if g.0 {
                Poll::Ready(())
            } else {
                if !g.1.iter().any(|w| w.will_wake(cx.waker())) {
                    g.1.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// State shared by all executors; touched only on connect/disconnect, stats and shutdown.
pub struct Shared {
    config: Config,
    /// TCP port actually bound (known after the first bind when `--port 0`).
    port: AtomicU16,
    /// Open client connections over all shards (for `-c`).
    curr_connections: AtomicUsize,
    started: u64,
    shutdown: ShutdownSignal,
    drained: AtomicUsize,
}

impl Shared {
    fn settings(&self) -> Settings {
        let c = &self.config;
        Settings {
            maxbytes: c.memory_limit,
            maxconns: c.conn_limit,
            tcpport: self.port.load(Ordering::Relaxed),
            inter: c
                .listen
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(","),
            verbosity: c.verbosity,
            growth_factor: c.growth_factor,
            num_threads: c.shards(),
            item_size_max: c.max_item_size,
            eviction: c.eviction.name(),
        }
    }
}

/// One executor's view of the server: its shard, the mesh, and the shared state.
pub struct Core {
    /// This executor's shard.
    pub shard: Rc<Shard>,
    /// Number of shards.
    pub shards: usize,
    /// Codec limits.
    pub limits: Limits,
    requests: Senders<Envelope<Request>>,
    pending: Pending,
    shared: Arc<Shared>,
    /// Closed when the server shuts down; connections and accept loops wait on it.
    stop: Rc<Semaphore>,
}

impl Core {
    /// Sends `req` to shard `to`; the returned future yields its reply.
    pub async fn send(&self, to: usize, req: Request) -> std::io::Result<ReplyFuture> {
        let (token, fut) = self.pending.register();
        let env = Envelope {
            from: self.shard.id,
            token,
            body: req,
        };
        self.requests
            .send_to(to, env)
            .await
            .map_err(|_| std::io::Error::other("shard mesh closed"))?;
        Ok(fut)
    }

    async fn fan_out(&self, make: impl Fn() -> Request) -> std::io::Result<Vec<Reply>> {
        let mut waits = Vec::with_capacity(self.shards);
        for to in (0..self.shards).filter(|&s| s != self.shard.id) {
            waits.push(self.send(to, make()).await?);
        }
        let mut replies = Vec::with_capacity(waits.len());
        for w in waits {
            replies.push(w.await);
        }
        Ok(replies)
    }

    /// Flush on every shard (each computes the deadline on its own clock).
    pub async fn flush_all(&self, delay: i64) -> std::io::Result<()> {
        self.shard.counters().cmd_flush += 1;
        self.fan_out(|| Request::Flush(delay)).await?;
        self.shard
            .execute(Command::Flush { delay }, 0, &mut Vec::new());
        Ok(())
    }

    /// Answers a `stats` request for `group`.
    pub async fn stats(&self, group: &[u8]) -> std::io::Result<Outcome<&'static [u8]>> {
        // memcached matches these two by prefix.
        if group.starts_with(b"reset") {
            self.fan_out(|| Request::ResetStats).await?;
            self.shard.reset_stats();
            return Ok(Outcome::Stats(Vec::new()));
        }
        if group.starts_with(b"settings") {
            return Ok(Outcome::Stats(stats::settings(&self.shared.settings())));
        }
        let known: &[&[u8]] = &[b"", b"items", b"slabs", b"latency"];
        if !known.contains(&group) {
            return Ok(Outcome::UnknownStatsGroup);
        }
        let mut total = self.shard.snapshot();
        for reply in self.fan_out(|| Request::Stats).await? {
            if let Reply::Stats(s) = reply {
                total.add(&s);
            }
        }
        Ok(Outcome::Stats(self.report(group, &total)))
    }

    fn report(&self, group: &[u8], total: &Snapshot) -> Vec<(String, String)> {
        match group {
            b"items" => stats::items(total),
            b"slabs" => stats::slabs(total),
            b"latency" => total.latency.report(),
            _ => {
                let info = ServerInfo {
                    started: self.shared.started,
                    threads: self.shards,
                    max_connections: self.shared.config.conn_limit,
                    curr_connections: self.shared.curr_connections.load(Ordering::Relaxed),
                    limit_maxbytes: self.shared.config.memory_limit,
                };
                stats::general(&info, total)
            }
        }
    }

    /// Serves one request from another shard.
    fn serve_request(&self, req: Request) -> Reply {
        match req {
            Request::Batch(b) => Reply::Batch(self.shard.execute_batch(b, REPLY_CAP)),
            Request::Flush(delay) => {
                self.shard
                    .execute(Command::Flush { delay }, 0, &mut Vec::new());
                Reply::Done
            }
            Request::Stats => Reply::Stats(Box::new(self.shard.snapshot())),
            Request::ResetStats => {
                self.shard.reset_stats();
                Reply::Done
            }
        }
    }
}

/// What executors tell the main thread while starting.
enum StartMsg {
    /// Executor 0 bound this port (for `--port 0`).
    Bound,
    /// The executor serves.
    Ready,
    /// The executor could not start.
    Failed(String),
}

type MeshOf<T> = MeshBuilder<Envelope<T>, glommio::channels::channel_mesh::Full>;

/// Runs the server until SIGTERM/SIGINT, then drains and returns.
pub fn run(config: Config) -> Result<(), StartError> {
    let n = config.shards();
    let shared = Arc::new(Shared {
        port: AtomicU16::new(config.port()),
        curr_connections: AtomicUsize::new(0),
        started: stats::unix_now(),
        shutdown: ShutdownSignal::default(),
        drained: AtomicUsize::new(0),
        config,
    });
    spawn_signal_thread(shared.clone())?;

    // The main thread keeps these builders alive until every executor is done: glommio's mesh
    // builder shares an Rc between threads, so its count must never reach zero while they run.
    let req_mesh: MeshOf<Request> = MeshBuilder::full(n, MESH_DEPTH);
    let rep_mesh: MeshOf<Reply> = MeshBuilder::full(n, MESH_DEPTH);
    let (tx, rx) = mpsc::channel::<StartMsg>();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let placement = match shared.config.placement[i] {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let (shared2, tx2) = (shared.clone(), tx.clone());
        let (req2, rep2) = (req_mesh.clone(), rep_mesh.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            // No file I/O here: keep the registered buffer area small.
            .io_memory(64 << 10)
            .spawn(move || async move {
                if let Err(e) = shard_main(i, shared2, req2, rep2, &tx2).await {
                    let _ = tx2.send(StartMsg::Failed(e));
                }
            })
            .map_err(|e| StartError(format!("cannot start executor {i}: {e}")))?;
        handles.push(handle);
        if i == 0 && shared.port.load(Ordering::Relaxed) == 0 {
            // Every other executor binds the port the first one got.
            match rx.recv() {
                Ok(StartMsg::Bound) => {}
                Ok(StartMsg::Failed(e)) => return Err(StartError(e)),
                _ => return Err(StartError("executor 0 vanished".into())),
            }
        }
    }
    drop(tx);
    let mut ready = 0;
    while ready < n {
        match rx.recv() {
            Ok(StartMsg::Ready) => ready += 1,
            Ok(StartMsg::Bound) => {}
            Ok(StartMsg::Failed(e)) => return Err(StartError(e)),
            Err(_) => return Err(StartError("an executor stopped while starting".into())),
        }
    }
    let port = shared.port.load(Ordering::Relaxed);
    let addrs: Vec<String> = shared
        .config
        .listen
        .iter()
        .map(|a| SocketAddr::new(a.ip(), port).to_string())
        .collect();
    info!(
        "corecached ready: listening on {} ({n} shards)",
        addrs.join(", ")
    );
    for h in handles {
        if let Err(e) = h.join() {
            error!("executor ended with an error: {e}");
        }
    }
    drop((req_mesh, rep_mesh));
    info!("corecached stopped");
    Ok(())
}

fn spawn_signal_thread(shared: Arc<Shared>) -> Result<(), StartError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| StartError(format!("cannot install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for (count, sig) in signals.forever().enumerate() {
                if count == 0 {
                    info!("signal {sig}: draining connections and stopping");
                    shared.shutdown.trigger();
                } else {
                    warn!("second signal {sig}: exiting at once");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| StartError(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

fn bind_all(shared: &Shared, i: usize) -> Result<Vec<TcpListener>, String> {
    let mut port = shared.port.load(Ordering::Relaxed);
    let mut listeners = Vec::new();
    for addr in &shared.config.listen {
        let addr = SocketAddr::new(addr.ip(), port);
        let l = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        if port == 0 {
            // The first bind picks the port; the rest of this and every other shard reuse it.
            port = l.local_addr().map_err(|e| e.to_string())?.port();
            shared.port.store(port, Ordering::Relaxed);
        }
        listeners.push(l);
    }
    debug!("shard {i} listening");
    Ok(listeners)
}

async fn shard_main(
    i: usize,
    shared: Arc<Shared>,
    req_mesh: MeshOf<Request>,
    rep_mesh: MeshOf<Reply>,
    tx: &mpsc::Sender<StartMsg>,
) -> Result<(), String> {
    let listeners = bind_all(&shared, i)?;
    if i == 0 {
        let _ = tx.send(StartMsg::Bound);
    }
    let (requests, mut req_rx) = req_mesh
        .join()
        .await
        .map_err(|e| format!("joining the mesh: {e}"))?;
    let (replies, mut rep_rx) = rep_mesh
        .join()
        .await
        .map_err(|e| format!("joining the mesh: {e}"))?;
    let id = requests.peer_id();
    let n = shared.config.shards();
    let mut store = Store::new(StoreConfig {
        memory_limit: shared.config.shard_memory(),
        max_item_size: shared.config.max_item_size,
        growth_factor: shared.config.growth_factor,
        eviction: shared.config.eviction.policy(),
        shard_id: id as u32,
        shard_count: n as u32,
    })
    .map_err(|e| e.to_string())?;
    store.set_time(stats::unix_now());
    let core = Rc::new(Core {
        shard: Rc::new(Shard::new(id, store)),
        shards: n,
        limits: Limits {
            max_item_size: shared.config.max_item_size,
            ..Limits::default()
        },
        requests,
        pending: Pending::default(),
        shared: shared.clone(),
        stop: Rc::new(Semaphore::new(0)),
    });

    let replies = Rc::new(replies);
    for (_, rx) in req_rx.streams() {
        let (core, replies) = (core.clone(), replies.clone());
        glommio::spawn_local(async move {
            while let Some(env) = rx.recv().await {
                let asker = env.from;
                let reply = Envelope {
                    from: id,
                    token: env.token,
                    body: core.serve_request(env.body),
                };
                if replies.send_to(asker, reply).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    for (_, rx) in rep_rx.streams() {
        let core = core.clone();
        glommio::spawn_local(async move {
            while let Some(env) = rx.recv().await {
                core.pending.complete(env.token, env.body);
            }
        })
        .detach();
    }
    spawn_housekeeping(core.shard.clone());
    {
        let (shared, stop) = (shared.clone(), core.stop.clone());
        glommio::spawn_local(async move {
            shared.shutdown.wait().await;
            stop.close();
        })
        .detach();
    }
    let _ = tx.send(StartMsg::Ready);

    let gate = Rc::new(Gate::new());
    let accepts: Vec<_> = listeners
        .into_iter()
        .map(|l| glommio::spawn_local(accept_loop(l, core.clone(), gate.clone())))
        .collect();
    for a in accepts {
        a.await;
    }
    if glommio::timer::timeout(DRAIN_TIMEOUT, async { gate.close().await })
        .await
        .is_err()
    {
        warn!("shard {id}: connections still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
    // Peers may still need this shard for their last batches: wait until every shard drained.
    shared.drained.fetch_add(1, Ordering::AcqRel);
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while shared.drained.load(Ordering::Acquire) < n && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn spawn_housekeeping(shard: Rc<Shard>) {
    let tq = glommio::executor().create_task_queue(
        Shares::default(),
        Latency::NotImportant,
        "housekeeping",
    );
    let task = glommio::spawn_local_into(
        async move {
            loop {
                // Wake just after each wall-clock second so the store's clock is never late.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let to_next = Duration::from_nanos(1_000_000_000 - now.subsec_nanos() as u64);
                glommio::timer::sleep(to_next + Duration::from_millis(1)).await;
                shard.tick(stats::unix_now());
                shard.housekeep();
            }
        },
        tq,
    );
    match task {
        Ok(t) => drop(t.detach()),
        Err(e) => error!("cannot start housekeeping: {e}"),
    }
}

async fn accept_loop(listener: TcpListener, core: Rc<Core>, gate: Rc<Gate>) {
    let shared = &core.shared;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = core.stop.acquire(1).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // E.g. out of file descriptors: back off instead of spinning.
                warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let limit = shared.config.conn_limit;
        let prev = shared.curr_connections.fetch_add(1, Ordering::AcqRel);
        if prev >= limit {
            shared.curr_connections.fetch_sub(1, Ordering::AcqRel);
            core.shard.counters().rejected_connections += 1;
            debug!(
                "connection limit {limit} reached: refusing {:?}",
                stream.peer_addr()
            );
            drop(stream);
            continue;
        }
        core.shard.counters().total_connections += 1;
        let core2 = core.clone();
        let spawned = gate.spawn(async move {
            conn::serve(core2.clone(), stream).await;
            core2.shared.curr_connections.fetch_sub(1, Ordering::AcqRel);
        });
        match spawned {
            Ok(t) => t.detach(),
            Err(_) => {
                shared.curr_connections.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
    }
}
