//! The outgoing stream of one shard to one peer: dial, handshake, full or partial resync, then
//! the backlog's records for that peer as they come, reading the peer's acknowledgements.
//! It runs on the shard's own core and takes the shard's lock only to copy records out or to
//! walk one bounded slice, so a slow or dead peer never holds up clients: its connection's
//! unsent output is capped, and a peer that falls behind the backlog gets a full resync.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::net::{self, Loop};
use crate::protocol::repl::{Frame, Hello, HelloReply, STREAM_VERSION};

use super::backlog::Read;
use super::{unix_ms, PeerState, Replication, StreamStats, REDIAL};
use crate::server::router::Core;

/// Unsent bytes above which the stream stops reading the backlog until the peer catches up.
const UNSENT_CAP: usize = 1 << 20;
/// Positions remembered for acknowledged-bytes accounting, at most.
const MAX_MARKS: usize = 1024;
/// Bytes copied out of the backlog per lock.
const READ_CHUNK: usize = 256 * 1024;
/// Chunks examined per full-resync slice (one lock each).
const WALK_SLICE: usize = 1024;
/// How long a handshake may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Naps between looks at the backlog: short while records flow, longer while idle.
const MIN_NAP: Duration = Duration::from_millis(1);
const MAX_NAP: Duration = Duration::from_millis(50);
/// An idle stream says where it is this often (the peer acknowledges it, and learns that
/// positions without records for it are passed).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Records unacknowledged this long mean a stalled peer: the stream is dropped and dialed again
/// (the peer then resumes from what it applied).
const ACK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a stream ended.
enum End {
    Stop,
    Retry(String),
}

/// Runs the stream of `core`'s shard to member `peer` until the server stops.
pub async fn run(core: Rc<Core>, repl: std::sync::Arc<Replication>, peer: usize) {
    let shard = core.shard.id;
    let stats = repl.stream(shard, peer);
    let name = repl.cluster.name(peer);
    let mut warned = false;
    loop {
        if core.shared.stopping() {
            return;
        }
        stats
            .state
            .store(PeerState::Connecting as u8, Ordering::Relaxed);
        match stream_once(&core, &repl, peer, stats).await {
            End::Stop => return,
            End::Retry(why) => {
                if !stats.connected_once.load(Ordering::Relaxed) {
                    // Never got through since start: counted as down, not waited for.
                    stats.dial_failed.store(true, Ordering::Relaxed);
                }
                if !warned || stats.connected_once.load(Ordering::Relaxed) {
                    debug!("replication to {name} (shard {shard}): {why}");
                }
                if !warned && !stats.connected_once.load(Ordering::Relaxed) {
                    info!("replication to {name} (shard {shard}) not up yet: {why}");
                    warned = true;
                }
            }
        }
        net::sleep(REDIAL).await;
    }
}

async fn stream_once(core: &Rc<Core>, repl: &Replication, peer: usize, stats: &StreamStats) -> End {
    let Some(addr) = repl.addr(peer) else {
        return End::Retry("address not resolved".into());
    };
    let fd = match net::connect_tcp(addr) {
        Ok(fd) => fd,
        Err(e) => {
            stats.dial_failed.store(true, Ordering::Relaxed);
            return End::Retry(format!("connect: {e}"));
        }
    };
    let conn = match Loop::current().adopt(fd) {
        Ok(c) => c,
        Err(e) => return End::Retry(format!("adopt: {e}")),
    };
    let shard = core.shard.id;
    let mut out = Vec::new();
    Hello {
        version: STREAM_VERSION,
        from: repl.cluster.name(repl.me()),
        digest: repl.digest(),
        run_id: repl.run_id,
        shard: shard as u32,
        shards: core.shards as u32,
        plain: core.shared.auth.peer_plain(),
    }
    .encode(&mut out);
    if let Err(e) = conn.send(&mut out).await {
        stats.dial_failed.store(true, Ordering::Relaxed);
        return End::Retry(format!("send: {e}"));
    }
    let mut inbuf = Vec::new();
    let reply = loop {
        match HelloReply::decode(&inbuf) {
            Ok(Some((r, used))) => {
                inbuf.drain(..used);
                break r;
            }
            Ok(None) => {}
            Err(e) => return End::Retry(format!("handshake: {e}")),
        }
        match net::timeout(HELLO_TIMEOUT, conn.recv(&mut inbuf)).await {
            None => return End::Retry("handshake timed out".into()),
            Some(Ok(true)) => {}
            Some(Ok(false)) => return End::Retry("closed during the handshake".into()),
            Some(Err(e)) => {
                stats.dial_failed.store(true, Ordering::Relaxed);
                return End::Retry(format!("handshake: {e}"));
            }
        }
    };
    let applied = match reply {
        HelloReply::Ok(seq) => seq,
        HelloReply::Refused(why) => {
            stats
                .state
                .store(PeerState::Refused as u8, Ordering::Relaxed);
            warn!("replication to {} refused: {why}", repl.cluster.name(peer));
            // Counted as down for readiness: a peer that refuses us will not sync us either.
            stats.dial_failed.store(true, Ordering::Relaxed);
            return End::Retry(format!("refused: {why}"));
        }
    };
    stats.connected_once.store(true, Ordering::Relaxed);
    stats.unacked_since_ms.store(0, Ordering::Relaxed);
    stats.acked_seq.store(applied, Ordering::Relaxed);
    let mut pos = applied;
    let partial = applied > 0 && core.shard.repl_covers(applied);
    if partial {
        stats.partial_resyncs.fetch_add(1, Ordering::Relaxed);
    } else {
        match full_resync(core, repl, peer, stats, &conn, &mut inbuf).await {
            Ok(at) => pos = at,
            Err(end) => return end,
        }
    }
    stats
        .state
        .store(PeerState::Streaming as u8, Ordering::Relaxed);
    stats.sent_seq.store(pos, Ordering::Relaxed);
    // (position, bytes sent up to it) of what awaits acknowledgement: an acknowledged position
    // acknowledges those bytes.
    let mut marks = VecDeque::new();
    marks.push_back((pos, stats.bytes_sent.load(Ordering::Relaxed)));
    let mut nap = MIN_NAP;
    let mut last_sent = Instant::now();
    loop {
        if core.shared.stopping() {
            return End::Stop;
        }
        if conn.unsent() < UNSENT_CAP {
            match core.shard.repl_read(pos, peer, &mut out, READ_CHUNK) {
                Read::Gap => {
                    // Fell behind the backlog: start over with a full resync.
                    match full_resync(core, repl, peer, stats, &conn, &mut inbuf).await {
                        Ok(at) => pos = at,
                        Err(end) => return end,
                    }
                    stats
                        .state
                        .store(PeerState::Streaming as u8, Ordering::Relaxed);
                    continue;
                }
                Read::Upto(upto) => {
                    if !out.is_empty() {
                        count_sent(stats, &out);
                    }
                    if upto > pos && stats.unacked_since_ms.load(Ordering::Relaxed) == 0 {
                        stats.unacked_since_ms.store(unix_ms(), Ordering::Relaxed);
                    }
                    if upto > pos && out.is_empty() {
                        // Only other members' records: say how far this stream got.
                        Frame::Heartbeat {
                            seq: upto,
                            version: 0,
                        }
                        .encode(&mut out);
                    }
                    let advanced = upto > pos;
                    pos = upto;
                    stats.sent_seq.store(pos, Ordering::Relaxed);
                    if advanced {
                        let bytes = stats.bytes_sent.load(Ordering::Relaxed);
                        if marks.len() < MAX_MARKS {
                            marks.push_back((pos, bytes));
                        } else if let Some(last) = marks.back_mut() {
                            // Bounded: later positions fold into the last mark.
                            *last = (pos, bytes);
                        }
                    }
                }
            }
        }
        let unacked = stats.unacked_since_ms.load(Ordering::Relaxed);
        if unacked != 0 && unix_ms().saturating_sub(unacked) > ACK_TIMEOUT.as_millis() as u64 {
            return End::Retry("no acknowledgement from the peer; dialing again".into());
        }
        if out.is_empty() && last_sent.elapsed() >= HEARTBEAT {
            Frame::Heartbeat {
                seq: pos,
                version: 0,
            }
            .encode(&mut out);
        }
        if out.is_empty() {
            nap = (nap * 2).min(MAX_NAP);
        } else {
            nap = MIN_NAP;
            last_sent = Instant::now();
            if let Err(e) = conn.stage(&mut out) {
                return End::Retry(format!("send: {e}"));
            }
        }
        match net::timeout(nap, conn.recv(&mut inbuf)).await {
            None => {}
            Some(Ok(true)) => {
                if let Err(e) = read_acks(stats, &mut inbuf, &mut marks) {
                    return End::Retry(e);
                }
            }
            Some(Ok(false)) => return End::Retry("peer closed the stream".into()),
            Some(Err(e)) => return End::Retry(format!("receive: {e}")),
        }
    }
}

fn count_sent(stats: &StreamStats, out: &[u8]) {
    let mut records = 0;
    let mut at = 0;
    while let Ok(Some((f, used))) = Frame::decode(&out[at..], usize::MAX) {
        if let Frame::Item { .. }
        | Frame::Tombstone { .. }
        | Frame::Touch { .. }
        | Frame::Flush { .. } = f
        {
            records += 1;
        }
        at += used;
    }
    stats.records_sent.fetch_add(records, Ordering::Relaxed);
    stats
        .bytes_sent
        .fetch_add(out.len() as u64, Ordering::Relaxed);
}

/// Takes the acknowledgements at the front of `inbuf`.
fn read_acks(
    stats: &StreamStats,
    inbuf: &mut Vec<u8>,
    marks: &mut VecDeque<(u64, u64)>,
) -> Result<(), String> {
    let mut at = 0;
    loop {
        match Frame::decode(&inbuf[at..], 64) {
            Ok(Some((Frame::Ack { seq }, used))) => {
                while let Some(&(mark, bytes)) = marks.front() {
                    if mark > seq {
                        break;
                    }
                    stats.bytes_acked.store(bytes, Ordering::Relaxed);
                    marks.pop_front();
                }
                let before = stats.acked_seq.swap(seq, Ordering::Relaxed);
                if seq > before {
                    stats
                        .records_acked
                        .fetch_add(seq - before, Ordering::Relaxed);
                }
                if seq >= stats.sent_seq.load(Ordering::Relaxed) {
                    stats.unacked_since_ms.store(0, Ordering::Relaxed);
                } else {
                    stats.unacked_since_ms.store(unix_ms(), Ordering::Relaxed);
                }
                at += used;
            }
            Ok(Some((f, _))) => return Err(format!("unexpected frame from the peer: {f:?}")),
            Ok(None) => break,
            Err(e) => return Err(format!("bad frame from the peer: {e}")),
        }
    }
    inbuf.drain(..at);
    Ok(())
}

/// Sends every item and tombstone of the shard that `peer` owns, in bounded slices, between
/// `FullStart` and `FullEnd`; returns the backlog position the stream goes on from.
async fn full_resync(
    core: &Rc<Core>,
    repl: &Replication,
    peer: usize,
    stats: &StreamStats,
    conn: &net::Conn,
    inbuf: &mut Vec<u8>,
) -> Result<u64, End> {
    stats
        .state
        .store(PeerState::FullSync as u8, Ordering::Relaxed);
    stats.full_resyncs.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let from = core.shard.repl_last_seq();
    let mut out = Vec::new();
    Frame::FullStart { seq: from }.encode(&mut out);
    let mut cursor = Some(crate::storage::ReplicaCursor::START);
    let mut items = 0u64;
    while let Some(c) = cursor {
        if core.shared.stopping() {
            return Err(End::Stop);
        }
        let (next, n) = core.shard.repl_walk(c, WALK_SLICE, repl, peer, &mut out);
        cursor = next;
        items += n;
        if !out.is_empty() {
            count_sent(stats, &out);
            // Waits while the peer is behind: the walk goes at the peer's pace.
            conn.send(&mut out)
                .await
                .map_err(|e| End::Retry(format!("full resync: {e}")))?;
        }
        // Acknowledgements of the stream before; nothing to act on during the walk.
        if let Some(Ok(false)) | Some(Err(_)) = net::timeout(Duration::ZERO, conn.recv(inbuf)).await
        {
            return Err(End::Retry("peer closed during the full resync".into()));
        }
        inbuf.clear();
    }
    if !core.shard.repl_covers(from) {
        return Err(End::Retry(
            "backlog overran during the full resync; starting again".into(),
        ));
    }
    Frame::FullEnd { seq: from }.encode(&mut out);
    count_sent(stats, &out);
    conn.send(&mut out)
        .await
        .map_err(|e| End::Retry(format!("full resync: {e}")))?;
    info!(
        "replication to {} (shard {}): full resync of {items} items in {:?}",
        repl.cluster.name(peer),
        core.shard.id,
        started.elapsed()
    );
    Ok(from)
}
