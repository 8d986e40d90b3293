//! memcached's `watch` log stream: the event classes a `watch` command names and the text of
//! each log line, byte for byte as memcached 1.6.18's logger writes them (`logger.c`). Pure
//! formatting; collecting events and sending them is the server's business.
//!
//! Every line starts with `ts=<secs>.<usecs> gid=<n> ` (microseconds not zero-padded, as
//! memcached's `%d`) and ends with a bare `\n`; keys are URI-encoded (letters, digits and
//! `-._~` as they are, every other byte `%XX`).

use std::io::Write;
use std::net::SocketAddr;

/// Event classes, memcached's `LOG_*` bits.
pub mod class {
    /// `sysevents`: background threads (memcached: crawler and slab mover status).
    pub const SYSEVENTS: u16 = 1 << 1;
    /// `fetchers`: item lookups (`item_get`).
    pub const FETCHERS: u16 = 1 << 2;
    /// `mutations`: storage commands (`item_store`).
    pub const MUTATIONS: u16 = 1 << 3;
    /// `connevents`: connections opened and closed.
    pub const CONNEVENTS: u16 = 1 << 5;
    /// `evictions`: items evicted to make room.
    pub const EVICTIONS: u16 = 1 << 6;
    /// `rawcmds`: raw text commands (memcached 1.6.18 logs none).
    pub const RAWCMDS: u16 = 1 << 9;
    /// `proxyreqs`: proxy requests (no proxy here).
    pub const PROXYREQS: u16 = 1 << 10;
    /// `proxyevents`: proxy errors (no proxy here).
    pub const PROXYEVENTS: u16 = 1 << 11;
    /// `proxyuser`: proxy user logs (no proxy here).
    pub const PROXYUSER: u16 = 1 << 12;
}

/// The class bit a `watch` argument names (memcached 1.6.18's words; `None` for any other,
/// which memcached answers `ERROR`).
pub fn class_named(word: &[u8]) -> Option<u16> {
    Some(match word {
        b"rawcmds" => class::RAWCMDS,
        b"evictions" => class::EVICTIONS,
        b"fetchers" => class::FETCHERS,
        b"mutations" => class::MUTATIONS,
        b"sysevents" => class::SYSEVENTS,
        b"connevents" => class::CONNEVENTS,
        b"proxyreqs" => class::PROXYREQS,
        b"proxyevents" => class::PROXYEVENTS,
        b"proxyuser" => class::PROXYUSER,
        _ => return None,
    })
}

/// What a lookup found (`item_get`'s `status=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetStatus {
    /// No such item.
    NotFound,
    /// A live item.
    Found,
    /// An item invalidated by `flush_all`.
    Flushed,
    /// An expired item.
    Expired,
}

/// How a storage command ended (`item_store`'s `status=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreStatus {
    /// Not stored (add on an existing key, replace/append/prepend on a missing one).
    NotStored,
    /// Stored.
    Stored,
    /// CAS mismatch.
    Exists,
    /// CAS on a missing key.
    NotFound,
    /// Larger than the item size limit.
    TooLarge,
    /// No memory.
    NoMemory,
}

/// The storage command of an `item_store` line (`cmd=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCmd {
    /// memcached's 0 (binary too-large refusals lose the command).
    Null,
    /// add.
    Add,
    /// set.
    Set,
    /// replace.
    Replace,
    /// append.
    Append,
    /// prepend.
    Prepend,
    /// cas.
    Cas,
}

/// Why a connection closed (`conn_close`'s `reason=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A protocol error, an I/O error, or a watcher going away.
    Error,
    /// The client left or sent `quit`.
    Normal,
    /// Idle too long.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
}

/// One log event, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A lookup: `type=item_get`.
    ItemGet {
        /// The key.
        key: &'a [u8],
        /// What the lookup found.
        status: GetStatus,
        /// Slab class of a found item, else 0.
        class: u32,
        /// The connection's descriptor.
        cfd: i32,
        /// Value length of a found item, else 0.
        size: usize,
    },
    /// A storage command: `type=item_store`.
    ItemStore {
        /// The key.
        key: &'a [u8],
        /// How it ended.
        status: StoreStatus,
        /// Which command.
        cmd: StoreCmd,
        /// Seconds to live (memcached's unsigned arithmetic), 0 = never.
        ttl: u32,
        /// Slab class of the item.
        class: u32,
        /// The connection's descriptor.
        cfd: i32,
        /// Value length.
        size: usize,
    },
    /// An item evicted: `type=eviction`.
    Eviction {
        /// The key.
        key: &'a [u8],
        /// Whether it had been read.
        fetched: bool,
        /// Seconds it had left to live; -1 = no expiry.
        ttl: i64,
        /// Seconds since its last access.
        idle: u32,
        /// Slab class.
        class: u32,
        /// Value length.
        size: usize,
    },
    /// A connection accepted: `type=conn_new`.
    ConnNew {
        /// The peer (`None`: a unix socket).
        peer: Option<SocketAddr>,
        /// The connection's descriptor.
        cfd: i32,
    },
    /// A connection closed: `type=conn_close`.
    ConnClose {
        /// The peer (`None`: a unix socket).
        peer: Option<SocketAddr>,
        /// Why.
        reason: CloseReason,
        /// The connection's descriptor.
        cfd: i32,
    },
}

impl Event<'_> {
    /// The class a watcher must name to see this event.
    pub fn class(&self) -> u16 {
        match self {
            Event::ItemGet { .. } => class::FETCHERS,
            Event::ItemStore { .. } => class::MUTATIONS,
            Event::Eviction { .. } => class::EVICTIONS,
            Event::ConnNew { .. } | Event::ConnClose { .. } => class::CONNEVENTS,
        }
    }
}

/// memcached's `uriencode`: letters, digits and `-._~` as they are, every other byte `%XX`.
pub fn uri_encode(out: &mut Vec<u8>, key: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

fn get_status(s: GetStatus) -> &'static str {
    match s {
        GetStatus::NotFound => "not_found",
        GetStatus::Found => "found",
        GetStatus::Flushed => "flushed",
        GetStatus::Expired => "expired",
    }
}

fn store_status(s: StoreStatus) -> &'static str {
    match s {
        StoreStatus::NotStored => "not_stored",
        StoreStatus::Stored => "stored",
        StoreStatus::Exists => "exists",
        StoreStatus::NotFound => "not_found",
        StoreStatus::TooLarge => "too_large",
        StoreStatus::NoMemory => "no_memory",
    }
}

fn store_cmd(c: StoreCmd) -> &'static str {
    match c {
        StoreCmd::Null => "null",
        StoreCmd::Add => "add",
        StoreCmd::Set => "set",
        StoreCmd::Replace => "replace",
        StoreCmd::Append => "append",
        StoreCmd::Prepend => "prepend",
        StoreCmd::Cas => "cas",
    }
}

fn reason(r: CloseReason) -> &'static str {
    match r {
        CloseReason::Error => "error",
        CloseReason::Normal => "normal",
        CloseReason::IdleTimeout => "idle_timeout",
        CloseReason::Shutdown => "shutdown",
    }
}

/// `rip=<ip> rport=<port> transport=<tcp|local>` as memcached writes a peer.
fn endpoint(out: &mut Vec<u8>, peer: &Option<SocketAddr>) {
    // Writing into a Vec cannot fail.
    let _ = match peer {
        Some(a) => write!(out, "rip={} rport={} transport=tcp", a.ip(), a.port()),
        None => write!(out, "rip=unix rport=0 transport=local"),
    };
}

/// Appends the log line of `event` stamped `secs.usecs` and numbered `gid`.
pub fn render(out: &mut Vec<u8>, secs: u64, usecs: u32, gid: u64, event: &Event<'_>) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "ts={secs}.{usecs} gid={gid} ");
    match event {
        Event::ItemGet {
            key,
            status,
            class,
            cfd,
            size,
        } => {
            out.extend_from_slice(b"type=item_get key=");
            uri_encode(out, key);
            let _ = write!(
                out,
                " status={} clsid={class} cfd={cfd} size={size}",
                get_status(*status)
            );
        }
        Event::ItemStore {
            key,
            status,
            cmd,
            ttl,
            class,
            cfd,
            size,
        } => {
            out.extend_from_slice(b"type=item_store key=");
            uri_encode(out, key);
            let _ = write!(
                out,
                " status={} cmd={} ttl={ttl} clsid={class} cfd={cfd} size={size}",
                store_status(*status),
                store_cmd(*cmd)
            );
        }
        Event::Eviction {
            key,
            fetched,
            ttl,
            idle,
            class,
            size,
        } => {
            out.extend_from_slice(b"type=eviction key=");
            uri_encode(out, key);
            let fetch = if *fetched { "yes" } else { "no" };
            let _ = write!(
                out,
                " fetch={fetch} ttl={ttl} la={idle} clsid={class} size={size}"
            );
        }
        Event::ConnNew { peer, cfd } => {
            out.extend_from_slice(b"type=conn_new ");
            endpoint(out, peer);
            let _ = write!(out, " cfd={cfd}");
        }
        Event::ConnClose {
            peer,
            reason: r,
            cfd,
        } => {
            out.extend_from_slice(b"type=conn_close ");
            endpoint(out, peer);
            let _ = write!(out, " reason={} cfd={cfd}", reason(*r));
        }
    }
    out.push(b'\n');
}

/// memcached's `skipped=<n>` line, written before the next line a slow watcher gets.
pub fn render_skipped(out: &mut Vec<u8>, skipped: u64) {
    let _ = writeln!(out, "skipped={skipped}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(e: &Event<'_>) -> String {
        let mut out = Vec::new();
        render(&mut out, 1_700_000_000, 4321, 7, e);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_memcached_s() {
        assert_eq!(
            line(&Event::ItemGet {
                key: b"k\x01y",
                status: GetStatus::NotFound,
                class: 0,
                cfd: 23,
                size: 0
            }),
            "ts=1700000000.4321 gid=7 type=item_get key=k%01y status=not_found clsid=0 cfd=23 size=0\n"
        );
        assert_eq!(
            line(&Event::ItemStore {
                key: b"sp%ce",
                status: StoreStatus::Stored,
                cmd: StoreCmd::Set,
                ttl: 100,
                class: 1,
                cfd: 23,
                size: 3
            }),
            "ts=1700000000.4321 gid=7 type=item_store key=sp%25ce status=stored cmd=set ttl=100 clsid=1 cfd=23 size=3\n"
        );
        assert_eq!(
            line(&Event::Eviction {
                key: b"n,foo0",
                fetched: false,
                ttl: -1,
                idle: 0,
                class: 22,
                size: 11000
            }),
            "ts=1700000000.4321 gid=7 type=eviction key=n%2Cfoo0 fetch=no ttl=-1 la=0 clsid=22 size=11000\n"
        );
        let peer = Some("127.0.0.1:38380".parse().unwrap());
        assert_eq!(
            line(&Event::ConnNew { peer, cfd: 23 }),
            "ts=1700000000.4321 gid=7 type=conn_new rip=127.0.0.1 rport=38380 transport=tcp cfd=23\n"
        );
        assert_eq!(
            line(&Event::ConnClose {
                peer: None,
                reason: CloseReason::Normal,
                cfd: 5
            }),
            "ts=1700000000.4321 gid=7 type=conn_close rip=unix rport=0 transport=local reason=normal cfd=5\n"
        );
        let mut out = Vec::new();
        render_skipped(&mut out, 3341);
        assert_eq!(out, b"skipped=3341\n");
    }

    #[test]
    fn watch_words() {
        assert_eq!(class_named(b"fetchers"), Some(class::FETCHERS));
        assert_eq!(class_named(b"deletions"), None);
        assert_eq!(class_named(b"noreply"), None);
    }
}
