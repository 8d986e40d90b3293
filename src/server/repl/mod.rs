//! Asynchronous replication between cluster members (`--cluster`).
//!
//! Every key has `replicas + 1` owners: the first distinct servers of the ring from the key's
//! point ([`crate::ring::Continuum::owners`]), the servers a client's failover reaches in turn.
//! A mutation applied here is recorded, as the key's resulting state, in the shard's
//! [`backlog::Backlog`] for the key's other owners (`Shard::run`); one sender task per
//! (shard, peer) on the shard's core dials the peer's client port, says `repl_hello`, and
//! streams the records for that peer ([`sender`]). The peer's connection becomes a receiver
//! ([`receiver`]) that applies each record on its own owning shard, last writer wins by version
//! (`Store::apply`), and acknowledges positions. A peer that returns with a position the backlog
//! still covers gets what it missed (partial resync); otherwise the sender walks its shard in
//! bounded slices and sends every item the peer owns (full resync), then goes on from the
//! backlog position taken when the walk began. A starting member refuses clients until every
//! reachable peer has synced it, or `--resync-timeout` passed.

pub mod backlog;
pub mod receiver;
pub mod sender;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Cluster;
use crate::ring::Continuum;

/// Peer stream states, as `stats replication` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerState {
    /// Not connected; dialing again after a pause.
    Connecting = 0,
    /// Sending a full resync.
    FullSync = 1,
    /// Streaming the backlog.
    Streaming = 2,
    /// The peer refused the handshake (its reason is logged).
    Refused = 3,
}

impl PeerState {
    fn name(v: u8) -> &'static str {
        match v {
            1 => "full_sync",
            2 => "streaming",
            3 => "refused",
            _ => "connecting",
        }
    }
}

/// One outgoing stream's figures (one per shard and peer).
#[derive(Default)]
pub struct StreamStats {
    pub state: AtomicU8,
    pub records_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// The last position sent and the last the peer acknowledged.
    pub sent_seq: AtomicU64,
    pub acked_seq: AtomicU64,
    /// Unix milliseconds of the oldest record sent and not yet acknowledged (0: none).
    pub unacked_since_ms: AtomicU64,
    pub records_acked: AtomicU64,
    /// Bytes sent up to the last acknowledged position.
    pub bytes_acked: AtomicU64,
    pub partial_resyncs: AtomicU64,
    pub full_resyncs: AtomicU64,
    /// The stream has connected at least once / failed to connect at least once.
    pub connected_once: AtomicBool,
    pub dial_failed: AtomicBool,
}

/// What this member applied from one peer's shard stream.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    run_id: u64,
    seq: u64,
    /// A full resync from this run and shard completed.
    synced: bool,
}

/// Replication state shared by every shard.
pub struct Replication {
    pub cluster: Cluster,
    ring: Continuum,
    /// The members' addresses, resolved once at start (index = member).
    addrs: Vec<Option<SocketAddr>>,
    /// Random id of this run: positions from an earlier run mean nothing.
    pub run_id: u64,
    digest: u64,
    /// Per shard, per member: the outgoing stream (the self entry stays unused).
    streams: Vec<Vec<StreamStats>>,
    /// Received positions, by (peer member, peer shard).
    positions: Mutex<HashMap<(usize, u32), Position>>,
    /// Each peer's shard count, from its handshakes.
    peer_shards: Mutex<HashMap<usize, u32>>,
    pub applied: AtomicU64,
    pub ignored_older: AtomicU64,
    pub conflicts: AtomicU64,
    /// Records that could not be stored (too large, out of memory).
    pub failed: AtomicU64,
    pub refused_handshakes: AtomicU64,
    /// Members whose handshakes this server refused (failed authentication, other cluster
    /// settings), one bit each: they cannot sync us, so readiness does not wait for them.
    refused_members: AtomicU64,
    ready: AtomicBool,
    started: Instant,
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Replication {
    /// The replication of a server with `shards` shards.
    pub fn new(cluster: Cluster, shards: usize) -> Replication {
        let ring = Continuum::new(cluster.distribution, &cluster.nodes);
        let addrs = cluster
            .nodes
            .iter()
            .map(|n| {
                let a = (n.host.as_str(), n.port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next());
                if a.is_none() {
                    log::warn!("replication: cannot resolve {}:{}", n.host, n.port);
                }
                a
            })
            .collect();
        let members = cluster.nodes.len();
        let streams = (0..shards)
            .map(|_| (0..members).map(|_| StreamStats::default()).collect())
            .collect();
        let run_id = {
            let mut seed = [0u8; 8];
            let _ = std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed));
            u64::from_le_bytes(seed) ^ unix_ms() ^ u64::from(std::process::id()) << 32
        };
        let digest = cluster.digest();
        let alone = members == 1 || cluster.replicas == 0;
        Replication {
            cluster,
            ring,
            addrs,
            run_id: run_id.max(1),
            digest,
            streams,
            positions: Mutex::new(HashMap::new()),
            peer_shards: Mutex::new(HashMap::new()),
            applied: AtomicU64::new(0),
            ignored_older: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused_handshakes: AtomicU64::new(0),
            refused_members: AtomicU64::new(0),
            ready: AtomicBool::new(alone),
            started: Instant::now(),
        }
    }

    /// Notes that a handshake claiming to come from member `from` was refused.
    pub fn note_refused(&self, from: &str) {
        if let Some(m) = self.member(from) {
            self.refused_members.fetch_or(1 << m, Ordering::Relaxed);
        }
    }

    /// This member's index.
    pub fn me(&self) -> usize {
        self.cluster.self_index
    }

    /// The other members.
    pub fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.cluster.nodes.len()).filter(move |&i| i != self.me())
    }

    /// Bit mask of the members other than this one that own `key`.
    pub fn peers_of(&self, key: &[u8]) -> u64 {
        let owners = self.cluster.replicas + 1;
        if owners >= self.cluster.nodes.len() {
            // Every member owns every key: no need to hash the key onto the ring.
            return self.all_peers();
        }
        let mut mask = 0;
        for o in self.ring.owners(key, owners) {
            if o != self.me() {
                mask |= 1 << o;
            }
        }
        mask
    }

    /// Every peer, as a mask (records every member takes, e.g. a flush).
    pub fn all_peers(&self) -> u64 {
        // Members are at most config::MAX_CLUSTER_MEMBERS (64).
        self.peers().fold(0, |m, p| m | 1 << p)
    }

    /// Member `i`'s resolved address.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.addrs[i]
    }

    /// The digest members compare in the handshake.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The outgoing stream of `shard` to member `peer`.
    pub fn stream(&self, shard: usize, peer: usize) -> &StreamStats {
        &self.streams[shard][peer]
    }

    /// The member a handshake's `from` names.
    pub fn member(&self, from: &str) -> Option<usize> {
        (0..self.cluster.nodes.len()).find(|&i| self.cluster.name(i) == from)
    }

    /// The position to tell a peer's shard stream of run `run_id` (0: start over).
    pub fn position_for(&self, peer: usize, shard: u32, shards: u32, run_id: u64) -> u64 {
        self.peer_shards.lock().unwrap().insert(peer, shards);
        let positions = self.positions.lock().unwrap();
        match positions.get(&(peer, shard)) {
            Some(p) if p.run_id == run_id && p.synced => p.seq,
            _ => 0,
        }
    }

    /// Records the position applied from a peer's shard stream (`synced`: a full resync or
    /// a partial one completed before it).
    pub fn set_position(&self, peer: usize, shard: u32, run_id: u64, seq: u64, synced: bool) {
        let mut positions = self.positions.lock().unwrap();
        let p = positions.entry((peer, shard)).or_default();
        if p.run_id != run_id {
            *p = Position {
                run_id,
                seq: 0,
                synced: false,
            };
        }
        p.seq = seq;
        p.synced |= synced;
        drop(positions);
        if synced && !self.is_ready() {
            self.check_ready();
        }
    }

    /// Whether clients are served (every reachable peer synced this member, or the wait is
    /// over).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Decides readiness again: each peer has synced every shard of its own to us, or cannot
    /// be reached (it is down: nothing to wait for), or the timeout passed.
    pub fn check_ready(&self) -> bool {
        if self.is_ready() {
            return true;
        }
        let timed_out = self.started.elapsed() >= self.cluster.resync_timeout;
        let shards = self.peer_shards.lock().unwrap().clone();
        let positions = self.positions.lock().unwrap();
        let all = self.peers().all(|p| {
            let synced = shards
                .get(&p)
                .is_some_and(|&n| (0..n).all(|s| positions.get(&(p, s)).is_some_and(|x| x.synced)));
            // Down: our own streams to it never got through.
            let down = self.streams.iter().all(|per| {
                let s = &per[p];
                s.dial_failed.load(Ordering::Relaxed) && !s.connected_once.load(Ordering::Relaxed)
            });
            let refused = self.refused_members.load(Ordering::Relaxed) & (1 << p) != 0;
            synced || down || refused
        });
        drop(positions);
        if all || timed_out {
            if timed_out && !all {
                log::warn!(
                    "replication: serving after --resync-timeout ({:?}) without every peer's data",
                    self.cluster.resync_timeout
                );
            } else {
                log::info!("replication: caught up from peers; serving clients");
            }
            self.ready.store(true, Ordering::Release);
        }
        self.is_ready()
    }

    /// `stats replication`: per peer its streams' figures, then the totals. `backlog` is the
    /// bytes held in every shard's backlog.
    pub fn report(&self, backlog_bytes: usize, backlog_records: u64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let now = unix_ms();
        let push = |out: &mut Vec<(String, String)>, k: String, v: String| out.push((k, v));
        push(&mut out, "repl_self".into(), self.cluster.name(self.me()));
        push(
            &mut out,
            "repl_replicas".into(),
            self.cluster.replicas.to_string(),
        );
        push(
            &mut out,
            "repl_ready".into(),
            u8::from(self.is_ready()).to_string(),
        );
        for p in self.peers() {
            let name = self.cluster.name(p);
            let sum = |f: &dyn Fn(&StreamStats) -> u64| -> u64 {
                self.streams.iter().map(|per| f(&per[p])).sum()
            };
            let states: Vec<&str> = self
                .streams
                .iter()
                .map(|per| PeerState::name(per[p].state.load(Ordering::Relaxed)))
                .collect();
            let worst = ["refused", "connecting", "full_sync", "streaming"]
                .into_iter()
                .find(|s| states.contains(s))
                .unwrap_or("connecting");
            let lag_records = sum(&|s| {
                s.sent_seq
                    .load(Ordering::Relaxed)
                    .saturating_sub(s.acked_seq.load(Ordering::Relaxed))
            });
            let oldest = self
                .streams
                .iter()
                .map(|per| per[p].unacked_since_ms.load(Ordering::Relaxed))
                .filter(|&t| t != 0)
                .min();
            let lag_secs = oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
            push(&mut out, format!("peer:{name}:state"), worst.into());
            push(
                &mut out,
                format!("peer:{name}:records_sent"),
                sum(&|s| s.records_sent.load(Ordering::Relaxed)).to_string(),
            );
            push(
                &mut out,
                format!("peer:{name}:bytes_sent"),
                sum(&|s| s.bytes_sent.load(Ordering::Relaxed)).to_string(),
            );
            push(
                &mut out,
                format!("peer:{name}:records_acked"),
                sum(&|s| s.records_acked.load(Ordering::Relaxed)).to_string(),
            );
            push(
                &mut out,
                format!("peer:{name}:bytes_acked"),
                sum(&|s| s.bytes_acked.load(Ordering::Relaxed)).to_string(),
            );
            push(
                &mut out,
                format!("peer:{name}:lag_records"),
                lag_records.to_string(),
            );
            push(
                &mut out,
                format!("peer:{name}:lag_seconds"),
                format!("{lag_secs:.3}"),
            );
            push(
                &mut out,
                format!("peer:{name}:partial_resyncs"),
                sum(&|s| s.partial_resyncs.load(Ordering::Relaxed)).to_string(),
            );
            push(
                &mut out,
                format!("peer:{name}:full_resyncs"),
                sum(&|s| s.full_resyncs.load(Ordering::Relaxed)).to_string(),
            );
        }
        push(
            &mut out,
            "repl_backlog_bytes".into(),
            backlog_bytes.to_string(),
        );
        push(
            &mut out,
            "repl_backlog_dropped".into(),
            backlog_records.to_string(),
        );
        push(
            &mut out,
            "repl_applied".into(),
            self.applied.load(Ordering::Relaxed).to_string(),
        );
        push(
            &mut out,
            "repl_ignored_older".into(),
            self.ignored_older.load(Ordering::Relaxed).to_string(),
        );
        push(
            &mut out,
            "repl_conflicts".into(),
            self.conflicts.load(Ordering::Relaxed).to_string(),
        );
        push(
            &mut out,
            "repl_failed".into(),
            self.failed.load(Ordering::Relaxed).to_string(),
        );
        push(
            &mut out,
            "repl_refused_handshakes".into(),
            self.refused_handshakes.load(Ordering::Relaxed).to_string(),
        );
        out
    }
}

/// Pause before dialing a peer again: short, so a member that restarts is synced soon.
pub const REDIAL: Duration = Duration::from_millis(200);
