//! A peer's incoming stream: a client connection whose first line was `repl_hello`. Checks the
//! handshake (a member of our cluster, the same cluster settings), answers the position applied
//! so far, then applies every record on the shard that owns its key here (whatever the peer's
//! shard count) and acknowledges positions.

use std::sync::atomic::Ordering;
use std::time::Duration;

use log::{info, warn};

use crate::net;
use crate::protocol::repl::{Frame, Hello, HelloReply, STREAM_VERSION};
use crate::server::router::{owner, Core};
use crate::storage::{key_hash, Applied, Replica};

use super::Replication;

/// How long a peer may take to complete its handshake line.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Frame payload beyond the value: fixed fields and the key.
const FRAME_SLACK: usize = 64 + 256;

/// Serves a replication stream on `conn`; `rbuf` holds what was read so far. Returns when the
/// peer leaves, sends something wrong, or the server stops.
pub async fn serve(core: &Core, repl: &Replication, conn: &net::Conn, mut rbuf: Vec<u8>) {
    let hello = loop {
        match Hello::decode(&rbuf) {
            Ok(Some((h, used))) => {
                rbuf.drain(..used);
                break h;
            }
            Ok(None) => {}
            Err(e) => return refuse(repl, conn, &format!("bad handshake: {e}")).await,
        }
        match net::timeout(HELLO_TIMEOUT, conn.recv(&mut rbuf)).await {
            Some(Ok(true)) => {}
            _ => return,
        }
    };
    let auth = &core.shared.auth;
    if auth.sasl() {
        // -S: a peer authenticates as a client would, with a user of this server's file.
        let ok = hello
            .plain
            .as_deref()
            .and_then(crate::protocol::auth::parse_plain)
            .is_some_and(|(user, password)| auth.check_sasl(user, password));
        {
            let mut counters = core.counters();
            counters.auth_cmds += 1;
            counters.auth_errors += u64::from(!ok);
        }
        if !ok {
            warn!(
                "replication: {} did not authenticate (SASL is on here); refused",
                hello.from
            );
            repl.note_refused(&hello.from);
            return refuse(repl, conn, "authentication failed").await;
        }
    }
    let Some(peer) = repl.member(&hello.from) else {
        return refuse(
            repl,
            conn,
            &format!("{} is not a member of this cluster", hello.from),
        )
        .await;
    };
    if peer == repl.me() {
        return refuse(repl, conn, "a member cannot replicate to itself").await;
    }
    if hello.version != STREAM_VERSION {
        return refuse(
            repl,
            conn,
            &format!(
                "stream version {} (this server speaks {STREAM_VERSION})",
                hello.version
            ),
        )
        .await;
    }
    if hello.digest != repl.digest() {
        warn!(
            "replication: {} has other cluster settings (servers, distribution or replicas) than this server; refused",
            hello.from
        );
        repl.note_refused(&hello.from);
        return refuse(
            repl,
            conn,
            "cluster settings differ (servers, distribution or replicas)",
        )
        .await;
    }
    let mut applied = repl.position_for(peer, hello.shard, hello.shards, hello.run_id);
    let mut out = Vec::new();
    HelloReply::Ok(applied).encode(&mut out);
    if conn.send(&mut out).await.is_err() {
        return;
    }
    info!(
        "replication: stream from {} (shard {} of {}) from position {applied}",
        hello.from, hello.shard, hello.shards
    );
    let max_payload = core.limits.max_item_size + FRAME_SLACK;
    // Positions inside a full resync only count once it completes.
    let mut in_full = false;
    let mut acked = applied;
    loop {
        let mut at = 0;
        loop {
            match Frame::decode(&rbuf[at..], max_payload) {
                Ok(Some((frame, used))) => {
                    at += used;
                    match frame {
                        Frame::FullStart { .. } => in_full = true,
                        Frame::FullEnd { seq } => {
                            in_full = false;
                            applied = seq;
                            repl.set_position(peer, hello.shard, hello.run_id, seq, true);
                        }
                        Frame::Ack { .. } => {
                            warn!(
                                "replication: {} sent an acknowledgement as a sender; closing",
                                hello.from
                            );
                            return;
                        }
                        f => {
                            apply(core, repl, &f);
                            if !in_full && f.seq() > applied {
                                applied = f.seq();
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("replication: bad frame from {}: {e}; closing", hello.from);
                    return;
                }
            }
        }
        rbuf.drain(..at);
        if applied > acked {
            repl.set_position(peer, hello.shard, hello.run_id, applied, false);
            Frame::Ack { seq: applied }.encode(&mut out);
            acked = applied;
            if conn.stage(&mut out).is_err() {
                return;
            }
        }
        match conn.recv(&mut rbuf).await {
            Ok(true) => {}
            _ => return,
        }
    }
}

async fn refuse(repl: &Replication, conn: &net::Conn, why: &str) {
    repl.refused_handshakes.fetch_add(1, Ordering::Relaxed);
    warn!("replication: refused a stream from {}: {why}", conn.peer());
    let mut out = Vec::new();
    HelloReply::Refused(why.into()).encode(&mut out);
    let _ = conn.send(&mut out).await;
}

/// Applies one record on the shard that owns its key here.
fn apply(core: &Core, repl: &Replication, frame: &Frame<'_>) {
    let result = match *frame {
        Frame::Item {
            version,
            flags,
            exptime,
            key,
            value,
            ..
        } => {
            let r = Replica {
                key,
                value,
                flags,
                exptime,
                version,
                deleted: false,
            };
            on_owner(core, key, |s, hash| s.repl_apply(repl, &r, hash))
        }
        Frame::Tombstone { version, key, .. } => {
            let r = Replica {
                key,
                value: &[],
                flags: 0,
                exptime: 0,
                version,
                deleted: true,
            };
            on_owner(core, key, |s, hash| s.repl_apply(repl, &r, hash))
        }
        Frame::Touch {
            version,
            exptime,
            key,
            ..
        } => on_owner(core, key, |s, hash| {
            s.repl_apply_touch(key, hash, version, exptime)
        }),
        Frame::Flush { at, .. } => {
            for i in 0..core.shards {
                if let Some(s) = core.shared.shard(i) {
                    s.repl_flush(at);
                }
            }
            repl.applied.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Frame::Heartbeat { .. }
        | Frame::FullStart { .. }
        | Frame::FullEnd { .. }
        | Frame::Ack { .. } => return,
    };
    match result {
        Some(Applied::Applied) => repl.applied.fetch_add(1, Ordering::Relaxed),
        Some(Applied::Older) => repl.ignored_older.fetch_add(1, Ordering::Relaxed),
        Some(Applied::Failed(_)) | None => repl.failed.fetch_add(1, Ordering::Relaxed),
    };
}

fn on_owner<R>(
    core: &Core,
    key: &[u8],
    f: impl FnOnce(&crate::server::shard::Shard, u64) -> R,
) -> Option<R> {
    let hash = key_hash(key);
    let shard = core.shared.shard(owner(hash, core.shards))?;
    Some(f(shard, hash))
}
