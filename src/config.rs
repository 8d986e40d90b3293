//! Command-line flags (memcached's names where the meaning is the same) and their validation into
//! a [`Config`] the server runs from.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

use crate::storage::EvictionPolicy;

/// Size of one slab page: the unit of memory accounting, so each shard needs at least one.
pub const PAGE_SIZE: usize = 1024 * 1024;

/// The flags, as typed: memcached 1.6's short and long names, then corecached's own.
///
/// `-h` prints [`HELP`] (memcached's list in its style); `-V` the version; `-i` the license.
#[derive(Debug, Parser)]
#[command(
    name = "corecached",
    // As memcached's getopt: a flag given twice takes its last value (-l and -o accumulate).
    args_override_self = true,
    disable_help_flag = true,
    disable_version_flag = true,
    about = "A memcached-compatible cache server, thread-per-core"
)]
pub struct Args {
    /// TCP port to listen on, as memcached reads it: 0 = no TCP, -1 = a free port (the bound
    /// address is logged). Default 11211, or the UDP port when only -U is given.
    #[arg(short = 'p', long = "port", allow_negative_numbers = true)]
    pub port: Option<i32>,

    /// Interface(s) to listen on, comma separated or repeated. The default, like memcached's, is
    /// every IPv4 interface; pass 127.0.0.1 to stay local. `ADDR:PORT` sets a port per address.
    #[arg(short = 'l', long = "listen", action = ArgAction::Append)]
    pub listen: Vec<String>,

    /// Item memory in megabytes, split evenly over the shards.
    #[arg(short = 'm', long = "memory-limit", default_value_t = 64)]
    pub memory_limit: u64,

    /// Maximum simultaneous connections; more are accepted and closed at once.
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024)]
    pub conn_limit: usize,

    /// Number of shards (one executor thread each); default: every CPU the process may use.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,

    /// CPUs to pin the shards to, e.g. `0,2-3`; shard i runs on the i-th CPU, wrapping around.
    #[arg(long = "cpus")]
    pub cpus: Option<String>,

    /// Largest item: bytes, or with a k/m suffix (memcached's -I; 1k..1g).
    #[arg(short = 'I', long = "max-item-size", default_value = "1m")]
    pub max_item_size: String,

    /// Chunk size growth factor between slab classes.
    #[arg(short = 'f', long = "slab-growth-factor", default_value_t = 1.25)]
    pub growth_factor: f64,

    /// More logging: -v debug (connections), -vv trace.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    pub verbose: u8,

    /// Victim choice when memory is full.
    #[arg(long = "eviction", value_enum, default_value_t = Eviction::S3fifo)]
    pub eviction: Eviction,

    /// UDP port on every -l address (0 = off, the default as in memcached 1.6; -1 = a free
    /// port).
    #[arg(
        short = 'U',
        long = "udp-port",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub udp_port: i32,

    /// Unix socket path to listen on instead of TCP (memcached's -s; an old socket file at
    /// the path is replaced).
    #[arg(short = 's', long = "unix-socket")]
    pub unix_socket: Option<PathBuf>,

    /// Permissions of the unix socket, octal (memcached's default 700).
    #[arg(short = 'a', long = "unix-mask", default_value = "700")]
    pub unix_mask: String,

    /// Enable the text `shutdown` command.
    #[arg(short = 'A', long = "enable-shutdown")]
    pub enable_shutdown: bool,

    /// Run as a daemon.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Raise the core file size limit to its maximum.
    #[arg(short = 'r', long = "enable-coredumps")]
    pub enable_coredumps: bool,

    /// User to switch to after binding (when started as root).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,

    /// Answer out of memory instead of evicting.
    #[arg(short = 'M', long = "disable-evictions")]
    pub disable_evictions: bool,

    /// Lock all memory (mlockall).
    #[arg(short = 'k', long = "lock-memory")]
    pub lock_memory: bool,

    /// Print the help and exit.
    #[arg(short = 'h', long = "help")]
    pub help: bool,

    /// Print the license and exit.
    #[arg(short = 'i', long = "license")]
    pub license: bool,

    /// Print the version and exit.
    #[arg(short = 'V', long = "version")]
    pub version: bool,

    /// File to write the process id to (removed on a clean exit).
    #[arg(short = 'P', long = "pidfile")]
    pub pidfile: Option<PathBuf>,

    /// Smallest key+value+flags space (memcached's slab minimum; reported only).
    #[arg(short = 'n', long = "slab-min-size", default_value_t = 48)]
    pub slab_min_size: usize,

    /// Try large memory pages (not used here: a warning).
    #[arg(short = 'L', long = "enable-largepages")]
    pub enable_largepages: bool,

    /// Delimiter between key prefixes and ids for `stats detail`.
    #[arg(short = 'D', value_name = "CHAR")]
    pub prefix_delimiter: Option<String>,

    /// Requests one connection may have decoded per batch.
    #[arg(short = 'R', long = "max-reqs-per-event")]
    pub max_reqs_per_event: Option<usize>,

    /// Disable CAS: every CAS value is 0.
    #[arg(short = 'C', long = "disable-cas")]
    pub disable_cas: bool,

    /// Listen backlog.
    #[arg(short = 'b', long = "listen-backlog", default_value_t = 1024)]
    pub listen_backlog: i32,

    /// Protocol: auto, ascii or binary.
    #[arg(short = 'B', long = "protocol", default_value = "auto")]
    pub protocol: String,

    /// SASL authentication (binary protocol, PLAIN).
    #[arg(short = 'S', long = "enable-sasl")]
    pub enable_sasl: bool,

    /// SASL password file of `user:password` lines (default: $MEMCACHED_SASL_PWDB).
    #[arg(long = "sasl-pwdb", value_name = "FILE")]
    pub sasl_pwdb: Option<PathBuf>,

    /// Disable `flush_all`.
    #[arg(short = 'F', long = "disable-flush-all")]
    pub disable_flush_all: bool,

    /// Disable `stats cachedump` and `lru_crawler metadump`.
    #[arg(short = 'X', long = "disable-dumping")]
    pub disable_dumping: bool,

    /// Disable `watch`: it answers `CLIENT_ERROR watch commands not allowed`.
    #[arg(short = 'W', long = "disable-watch")]
    pub disable_watch: bool,

    /// Text protocol authentication file of `user:password` lines.
    #[arg(short = 'Y', long = "auth-file")]
    pub auth_file: Option<PathBuf>,

    /// Item memory in a mapped file (not supported: refused).
    #[arg(short = 'e', long = "memory-file")]
    pub memory_file: Option<PathBuf>,

    /// TLS on the TCP listeners (rustls), configured by the `ssl_*` options of `-o` or the
    /// `--ssl-*` flags; `-l notls:ADDR` keeps a listener plaintext.
    #[arg(short = 'Z', long = "enable-ssl")]
    pub enable_ssl: bool,

    /// TLS: the certificate chain, PEM (as `-o ssl_chain_cert=`).
    #[arg(long = "ssl-chain-cert")]
    pub ssl_chain_cert: Option<PathBuf>,

    /// TLS: the private key (as `-o ssl_key=`; default: found in the chain file).
    #[arg(long = "ssl-key")]
    pub ssl_key: Option<PathBuf>,

    /// TLS: the CAs client certificates are checked against, PEM (as `-o ssl_ca_cert=`).
    #[arg(long = "ssl-ca-cert")]
    pub ssl_ca_cert: Option<PathBuf>,

    /// TLS: client certificates: 0 none, 1 request, 2 require, 3 once (as `-o ssl_verify_mode=`).
    #[arg(long = "ssl-verify-mode")]
    pub ssl_verify_mode: Option<u8>,

    /// Number of NAPI ids (reported only).
    #[arg(short = 'N', long = "napi_ids")]
    pub napi_ids: Option<u32>,

    /// memcached's extended options, `key[=value],...`; may be repeated.
    #[arg(short = 'o', long = "extended", action = ArgAction::Append)]
    pub extended: Vec<String>,

    /// Megabytes all connections together may use for large request and reply buffers
    /// (beyond 16 KiB in and 64 KiB out each). A set that cannot be buffered is answered
    /// `SERVER_ERROR out of memory storing object`, a reply that cannot be staged
    /// `SERVER_ERROR out of memory writing get response`, as memcached does when it cannot
    /// allocate them.
    #[arg(long = "buffer-memory-limit", default_value_t = 32)]
    pub buffer_memory_limit: u64,

    /// Network backend: io_uring, epoll, or auto (io_uring, falling back to epoll where the
    /// kernel or a seccomp profile refuses it).
    #[arg(long = "io", value_enum, default_value_t = IoMode::Auto)]
    pub io: IoMode,

    /// Requests of one batch that a connection runs itself, under the owner's lock, on a shard
    /// of another core, before the rest of that batch goes to the owner as one message.
    /// 0 sends every request for another core's keys by message.
    #[arg(long = "direct-limit", default_value_t = 16, value_name = "N")]
    pub direct_limit: usize,

    /// The cluster's servers as its clients list them, `host:port[:weight]` comma-separated;
    /// turns on replication to each key's other owners.
    #[arg(long = "cluster", value_name = "LIST")]
    pub cluster: Option<String>,

    /// Placement of keys on the cluster's servers (the client library's names).
    #[arg(long = "distribution", default_value = "ketama", value_name = "NAME")]
    pub distribution: String,

    /// Copies of each key beyond its owner (default 1 with --cluster).
    #[arg(long = "replicas", value_name = "N")]
    pub replicas: Option<usize>,

    /// This server's entry in --cluster, when -l/-p cannot tell it.
    #[arg(long = "self", value_name = "HOST:PORT")]
    pub self_addr: Option<String>,

    /// Megabytes of replication backlog (all shards together): a peer that comes back
    /// within it gets only what it missed.
    #[arg(long = "replication-backlog", default_value_t = 64, value_name = "MB")]
    pub replication_backlog: u64,

    /// Seconds a starting cluster member waits to catch up from its peers before it serves
    /// clients anyway.
    #[arg(long = "resync-timeout", default_value_t = 30, value_name = "SECONDS")]
    pub resync_timeout: u64,

    /// Serve HTTP on this address (off by default): `/metrics` (Prometheus), `/health`, and the
    /// key API under `/cache/`; from the shards' own cores.
    #[arg(long = "http-listen", value_name = "ADDR:PORT")]
    pub http_listen: Option<SocketAddr>,

    /// Seconds an HTTP connection may stay idle between requests, and may take to send one
    /// whole request once it started.
    #[arg(long = "http-timeout", default_value_t = 30, value_name = "SECONDS")]
    pub http_timeout: u64,

    /// One key command in this many is counted in its shard's hot-key table (`stats hotkeys`,
    /// `/metrics`); 0 turns the counting off.
    #[arg(long = "hotkeys-sample", default_value_t = 16, value_name = "N")]
    pub hotkeys_sample: u32,
}

/// Replication settings (`--cluster` and its companions).
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// The servers, as listed.
    pub nodes: Vec<crate::ring::Node>,
    /// Key placement.
    pub distribution: crate::ring::Distribution,
    /// Copies beyond the owner.
    pub replicas: usize,
    /// This server's index in `nodes`.
    pub self_index: usize,
    /// Backlog bytes, all shards together.
    pub backlog_bytes: usize,
    /// Longest wait for peers before serving.
    pub resync_timeout: std::time::Duration,
}

impl Cluster {
    /// A digest of what every member must agree on: the list, the placement, the copies.
    pub fn digest(&self) -> u64 {
        let mut s = format!("{} {} ", self.distribution.name(), self.replicas);
        for n in &self.nodes {
            s.push_str(&format!("{}:{}:{},", n.host, n.port, n.weight));
        }
        xxhash_rust::xxh3::xxh3_64(s.as_bytes())
    }

    /// `host:port` of node `i`, as the list spells it.
    pub fn name(&self, i: usize) -> String {
        let n = &self.nodes[i];
        if n.host.contains(':') {
            format!("[{}]:{}", n.host, n.port)
        } else {
            format!("{}:{}", n.host, n.port)
        }
    }
}

/// `corecached -h`: memcached 1.6's flags in its layout, then corecached's own.
pub const HELP: &str = "\
-p, --port=<num>          TCP port to listen on (default: 11211; 0: no TCP, -1: a free one)
-U, --udp-port=<num>      UDP port to listen on (default: 0, off; -1: a free one)
-s, --unix-socket=<file>  UNIX socket to listen on (replaces the TCP listeners)
-a, --unix-mask=<mask>    permissions of the UNIX socket, octal (default: 700)
-A, --enable-shutdown     allow the text \"shutdown\" command
-l, --listen=<addr>       interfaces to listen on, comma separated (default: 0.0.0.0)
-d, --daemon              run in the background as a daemon
-r, --enable-coredumps    raise the core file size limit to its maximum
-u, --user=<user>         switch to this user after binding (when started as root)
-m, --memory-limit=<num>  item memory in megabytes (default: 64)
-M, --disable-evictions   answer out of memory when full instead of evicting
-c, --conn-limit=<num>    most simultaneous connections (default: 1024)
-k, --lock-memory         lock all of the process's memory (mlockall)
-v, --verbose             verbose (connections and errors)
-vv                       very verbose (requests too)
-vvv                      as -vv
-h, --help                show this help and exit
-i, --license             show the license and exit
-V, --version             show the version and exit
-P, --pidfile=<file>      write the process id to <file>; removed on a clean exit
-f, --slab-growth-factor=<num> growth factor between slab chunk sizes (default: 1.25)
-n, --slab-min-size=<bytes> smallest space for key+value+flags (default: 48; reported only)
-L, --enable-largepages   use large memory pages (not used here: a warning)
-D <char>                 delimiter between key prefixes and ids, used by the
                          per-prefix \"stats detail\" reports (default: \":\")
-t, --threads=<num>       shards, one thread each (default: every usable CPU)
-R, --max-reqs-per-event  most requests decoded per connection per batch, so one
                          connection cannot starve the others (default: 256)
-C, --disable-cas         no CAS values (all are 0)
-b, --listen-backlog=<num> backlog of the listening sockets (default: 1024)
-B, --protocol=<name>     ascii, binary or auto (default: auto-negotiate)
-I, --max-item-size=<num> largest item (default: 1m, min: 1k, max: 1024m)
-S, --enable-sasl         turn on SASL authentication (binary protocol, PLAIN)
    --sasl-pwdb=<file>    SASL password file, user:password lines
                          (default: $MEMCACHED_SASL_PWDB)
-F, --disable-flush-all   refuse the flush_all command
-X, --disable-dumping     disable stats cachedump and lru_crawler metadump
-W  --disable-watch       disable the watch command
-Y, --auth-file=<file>    text protocol authentication: the first command must be
                          set <any> 0 0 <len> with \"user password\" as the value;
                          user:password lines, re-read on SIGHUP
-e, --memory-file=<file>  item memory in a mapped file (not supported: refused)
-Z, --enable-ssl          TLS on the TCP listeners (rustls; see the ssl_* options);
                          -l notls:<addr> keeps one listener plaintext, btls: never
                          asks for a client certificate, mtls: always requires one
-N, --napi_ids            number of NAPI ids (reported only)
-o, --extended            comma separated list of extended options
                          (memcached's names; those with no meaning here are
                          accepted with one warning line each):
   - maxconns_fast:       close new connections over the limit at once (always so here)
   - hashpower:           initial hash table size as a power of two (grows anyway)
   - tail_repair_time:    seconds before a stuck LRU tail item is forced out (none here)
   - hash_algorithm:      jenkins, murmur3 or xxh3 (corecached always uses xxh3)
   - no_lru_crawler, lru_crawler, lru_crawler_sleep, lru_crawler_tocrawl:
                          background expiry crawler (here: a bounded reclaimer each
                          second) and the lru_crawler command
   - read_buf_mem_limit:  megabytes for connection buffers (as --buffer-memory-limit)
   - no_lru_maintainer, lru_maintainer, hot_lru_pct, warm_lru_pct, hot_max_factor,
     warm_max_factor, temporary_ttl, temp_lru:
                          segmented LRU tuning (see --eviction)
   - idle_timeout:        seconds before an idle connection is closed (0: never)
   - slab_chunk_max:      largest slab chunk in bytes (default: 524288)
   - slab_reassign, slab_automove: page moves between slab classes (slabs
     reassign; the background mover); slab_automove_ratio, slab_automove_window,
     slab_automove_freeratio: not used here
   - watcher_logbuf_size: kilobytes of each watcher's buffer (default: 256)
   - worker_logbuf_size:  kilobytes of each core's log buffer (default: 64)
   - ssl_chain_cert:      certificate chain file in PEM format
   - ssl_key:             private key, if not part of the ssl_chain_cert file
   - ssl_keyformat:       private key format: 1 (PEM) or 2 (DER) (default: 1)
   - ssl_verify_mode:     client certificates: 0 (none), 1 (request: checked if
                          sent), 2 (require) or 3 (once: as 2) (default: 0);
                          1 to 3 need ssl_ca_cert
   - ssl_ca_cert:         PEM file of the CAs client certificates must chain to
   - ssl_min_version:     0 (tlsv1.0), 1 (tlsv1.1), 2 (tlsv1.2) or 3 (tlsv1.3);
                          TLS 1.2 is the lowest here (0 and 1 mean it) (default: 2)
   - ssl_wbuf_size:       kilobytes of small replies joined into one TLS record
                          (default: 16)
   - ssl_session_cache:   keep sessions for resumption (default: off)
   - ssl_ciphers, ssl_kernel_tls: accepted, not used (rustls's own suites)
   Reloaded on SIGHUP and by the refresh_certs command: chain, key and CAs.
   - track_sizes, no_hashexpand, modern, no_modern, sock_cookie_id,
     no_inline_ascii_resp, ext_*
corecached's own:
    --eviction=<policy>   s3fifo, lru, fifo, lfu or random (default: s3fifo)
    --cpus=<list>         CPUs to pin the shards to, e.g. 0,2-3
    --io=<backend>        auto, uring or epoll (default: auto)
    --buffer-memory-limit=<num> megabytes all connections may use for large
                          request and reply buffers (default: 32)
    --cluster=<list>      replicate to each key's other owners among these servers
                          (host:port[:weight],...; the list the clients use)
    --distribution=<name> key placement on --cluster (default: ketama)
    --replicas=<num>      copies of each key beyond its owner (default: 1)
    --self=<host:port>    this server's --cluster entry, when -l/-p cannot tell
    --replication-backlog=<mb> replication backlog, all shards (default: 64)
    --resync-timeout=<s>  longest wait to catch up from peers before serving (default: 30)
    --direct-limit=<num>  requests per batch run directly on another core's
                          shard before the rest goes by message (default: 16)
    --http-listen=<addr:port> serve HTTP there: /metrics, /health, /cache/{key}
                          (default: off)
    --http-timeout=<s>    idle and per-request time limit of HTTP connections
                          (default: 30)
    --hotkeys-sample=<n>  count one key command in n for stats hotkeys (default:
                          16; 0: off)
";

/// `-B`: which protocols connections may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Chosen by each connection's first byte.
    Auto,
    /// Text and meta only: every byte is read as text.
    Ascii,
    /// Binary only: a connection that starts otherwise is closed.
    Binary,
}

impl Protocol {
    /// The `binding_protocol` value of `stats settings`, as memcached names it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Auto => "auto-negotiate",
            Protocol::Ascii => "ascii",
            Protocol::Binary => "binary",
        }
    }
}

/// Whether a listener speaks TLS, as memcached's `-l` prefixes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTls {
    /// Plaintext (no `-Z`, or `notls:`).
    Plain,
    /// TLS with the client certificate check `ssl_verify_mode` asks for.
    Tls,
    /// `btls:` TLS that never asks for a client certificate.
    TlsNoPeer,
    /// `mtls:` TLS that requires a client certificate.
    TlsPeer,
}

/// memcached's `ssl_*` options (with `-Z`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `ssl_chain_cert`: the server's certificate chain, PEM.
    pub chain_cert: Option<PathBuf>,
    /// `ssl_key`: its private key (None: looked for in the chain file).
    pub key: Option<PathBuf>,
    /// `ssl_keyformat`: 1 PEM, 2 DER (OpenSSL's numbers).
    pub keyformat: i64,
    /// `ssl_verify_mode`: 0 none, 1 request, 2 require, 3 once.
    pub verify_mode: u8,
    /// `ssl_ca_cert`: the CAs client certificates must chain to, PEM.
    pub ca_cert: Option<PathBuf>,
    /// `ssl_ciphers` (accepted, not used).
    pub ciphers: Option<String>,
    /// `ssl_wbuf_size` in bytes: small replies joined into one record up to this.
    pub wbuf_size: usize,
    /// `ssl_session_cache`.
    pub session_cache: bool,
    /// `ssl_kernel_tls` (accepted, not used).
    pub kernel_tls: bool,
    /// `ssl_min_version` as memcached numbers it: 0 TLS 1.0 ... 3 TLS 1.3.
    pub min_version: u8,
}

impl Default for TlsSettings {
    /// memcached 1.6's defaults.
    fn default() -> Self {
        TlsSettings {
            chain_cert: None,
            key: None,
            keyformat: 1,
            verify_mode: 0,
            ca_cert: None,
            ciphers: None,
            wbuf_size: 16 * 1024,
            session_cache: false,
            kernel_tls: false,
            min_version: 2,
        }
    }
}

impl TlsSettings {
    /// `ssl_verify_mode` as memcached prints it: OpenSSL's flag bits.
    pub fn verify_bits(&self) -> u8 {
        match self.verify_mode {
            0 => 0,
            1 => 1,
            2 => 3,
            _ => 7,
        }
    }

    /// `ssl_min_version` as memcached prints it.
    pub fn min_version_name(&self) -> &'static str {
        match self.min_version {
            0 => "tlsv1.0",
            1 => "tlsv1.1",
            2 => "tlsv1.2",
            _ => "tlsv1.3",
        }
    }
}

/// The `ssl_*` keys of `-o` (memcached's).
const SSL_KEYS: &[&str] = &[
    "ssl_chain_cert",
    "ssl_key",
    "ssl_verify_mode",
    "ssl_keyformat",
    "ssl_ciphers",
    "ssl_ca_cert",
    "ssl_wbuf_size",
    "ssl_session_cache",
    "ssl_kernel_tls",
    "ssl_min_version",
];

/// Reads the `ssl_*` options of every `-o` list, with memcached's errors.
fn parse_tls(lists: &[String]) -> Result<TlsSettings, ConfigError> {
    let mut t = TlsSettings::default();
    for list in lists {
        for item in list.split(',').filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            if !SSL_KEYS.contains(&key) {
                continue;
            }
            let need = || value.ok_or_else(|| ConfigError(format!("Missing {key} argument")));
            let number = || -> Result<i64, ConfigError> {
                need()?
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| ConfigError(format!("could not parse argument to {key}")))
            };
            match key {
                "ssl_chain_cert" => t.chain_cert = Some(PathBuf::from(need()?)),
                "ssl_key" => t.key = Some(PathBuf::from(need()?)),
                "ssl_ca_cert" => t.ca_cert = Some(PathBuf::from(need()?)),
                "ssl_ciphers" => t.ciphers = Some(need()?.to_string()),
                "ssl_verify_mode" => match number()? {
                    v @ 0..=3 => t.verify_mode = v as u8,
                    _ => return invalid("Invalid ssl_verify_mode. Use help to see valid options."),
                },
                "ssl_keyformat" => t.keyformat = number()?,
                "ssl_wbuf_size" => {
                    let kib = number()?;
                    if kib < 0 {
                        return invalid("could not parse argument to ssl_wbuf_size");
                    }
                    t.wbuf_size = (kib as usize).saturating_mul(1024);
                }
                "ssl_session_cache" => t.session_cache = true,
                "ssl_kernel_tls" => t.kernel_tls = true,
                "ssl_min_version" => match number()? {
                    v @ 0..=3 => t.min_version = v as u8,
                    _ => return invalid("Invalid ssl_min_version. Use help to see valid options."),
                },
                _ => {}
            }
        }
    }
    Ok(t)
}

/// Splits memcached's TLS prefix off one `-l` entry.
fn listen_prefix(part: &str, tls: bool) -> Result<(&str, ListenTls), ConfigError> {
    for (prefix, kind) in [
        ("notls:", ListenTls::Plain),
        ("btls:", ListenTls::TlsNoPeer),
        ("mtls:", ListenTls::TlsPeer),
    ] {
        if let Some(rest) = part.strip_prefix(prefix) {
            if !tls {
                let name = prefix.trim_end_matches(':');
                return invalid(format!("'{name}' option is valid only when SSL is enabled"));
            }
            return Ok((rest, kind));
        }
    }
    Ok((
        part,
        if tls {
            ListenTls::Tls
        } else {
            ListenTls::Plain
        },
    ))
}

/// memcached's `-o` settings as this server reports them in `stats settings`.
#[derive(Debug, Clone, PartialEq)]
pub struct Extended {
    /// `maxconns_fast`.
    pub maxconns_fast: bool,
    /// `hashpower` (0 = default).
    pub hashpower_init: u32,
    /// `slab_reassign`.
    pub slab_reassign: bool,
    /// `slab_automove` (0, 1 or 2).
    pub slab_automove: u32,
    /// `slab_automove_ratio`.
    pub slab_automove_ratio: f64,
    /// `slab_automove_window`.
    pub slab_automove_window: u32,
    /// `slab_chunk_max` in bytes.
    pub slab_chunk_max: usize,
    /// `lru_crawler`.
    pub lru_crawler: bool,
    /// `lru_crawler_sleep`.
    pub lru_crawler_sleep: u32,
    /// `lru_crawler_tocrawl`.
    pub lru_crawler_tocrawl: u32,
    /// `tail_repair_time`.
    pub tail_repair_time: u32,
    /// `lru_maintainer`.
    pub lru_maintainer_thread: bool,
    /// `lru_segmented`.
    pub lru_segmented: bool,
    /// `hot_lru_pct`.
    pub hot_lru_pct: u32,
    /// `warm_lru_pct`.
    pub warm_lru_pct: u32,
    /// `hot_max_factor`.
    pub hot_max_factor: f64,
    /// `warm_max_factor`.
    pub warm_max_factor: f64,
    /// `temp_lru`.
    pub temp_lru: bool,
    /// `temporary_ttl`.
    pub temporary_ttl: u32,
    /// `idle_timeout` in seconds (0 = none).
    pub idle_timeout: u32,
    /// `watcher_logbuf_size` in bytes.
    pub watcher_logbuf_size: usize,
    /// `worker_logbuf_size` in bytes.
    pub worker_logbuf_size: usize,
    /// `track_sizes`.
    pub track_sizes: bool,
    /// `inline_ascii_response`.
    pub inline_ascii_response: bool,
}

impl Default for Extended {
    /// memcached 1.6.18's defaults.
    fn default() -> Self {
        Extended {
            maxconns_fast: true,
            hashpower_init: 0,
            slab_reassign: true,
            slab_automove: 1,
            slab_automove_ratio: 0.8,
            slab_automove_window: 30,
            slab_chunk_max: 512 * 1024,
            lru_crawler: true,
            lru_crawler_sleep: 100,
            lru_crawler_tocrawl: 0,
            tail_repair_time: 0,
            lru_maintainer_thread: true,
            lru_segmented: true,
            hot_lru_pct: 20,
            warm_lru_pct: 40,
            hot_max_factor: 0.2,
            warm_max_factor: 2.0,
            temp_lru: false,
            temporary_ttl: 61,
            idle_timeout: 0,
            watcher_logbuf_size: 256 * 1024,
            worker_logbuf_size: 64 * 1024,
            track_sizes: false,
            inline_ascii_response: false,
        }
    }
}

/// The `--io` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoMode {
    /// io_uring where available, else epoll.
    Auto,
    /// io_uring only; refuse to start without it.
    Uring,
    /// epoll.
    Epoll,
}

/// Eviction policy names on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Eviction {
    /// Least recently used.
    Lru,
    /// First in, first out.
    Fifo,
    /// Least frequently used.
    Lfu,
    /// Uniformly random.
    Random,
    /// S3-FIFO: small, main and ghost FIFO queues.
    #[value(name = "s3fifo")]
    S3fifo,
}

impl Eviction {
    /// The storage policy this name selects.
    pub fn policy(self) -> EvictionPolicy {
        match self {
            Eviction::Lru => EvictionPolicy::Lru,
            Eviction::Fifo => EvictionPolicy::Fifo,
            Eviction::Lfu => EvictionPolicy::Lfu,
            Eviction::Random => EvictionPolicy::Random,
            Eviction::S3fifo => EvictionPolicy::S3Fifo,
        }
    }

    /// The name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Eviction::Lru => "lru",
            Eviction::Fifo => "fifo",
            Eviction::Lfu => "lfu",
            Eviction::Random => "random",
            Eviction::S3fifo => "s3fifo",
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// TCP addresses every shard binds; the port is 0 when a free one is to be picked. Empty
    /// with `-p 0` (no TCP, as memcached).
    pub listen: Vec<SocketAddr>,
    /// UDP port (`-U`) as given: 0 when UDP is off, -1 for a free one.
    pub udp_port: i32,
    /// UDP addresses: each -l address with the UDP port (or its own port); empty when off.
    pub udp_listen: Vec<SocketAddr>,
    /// Total item memory in bytes.
    pub memory_limit: usize,
    /// Maximum simultaneous connections over all shards.
    pub conn_limit: usize,
    /// Where each shard runs: `Some(cpu)` pinned, `None` unpinned. Its length is the shard count.
    pub placement: Vec<Option<usize>>,
    /// Largest item in bytes.
    pub max_item_size: usize,
    /// Slab growth factor.
    pub growth_factor: f64,
    /// Eviction policy.
    pub eviction: Eviction,
    /// Number of -v flags.
    pub verbosity: u8,
    /// Unix socket to listen on instead of TCP.
    pub unix_socket: Option<PathBuf>,
    /// Bytes connections may hold in large buffers, all together.
    pub buffer_memory_limit: usize,
    /// Network backend choice.
    pub io: IoMode,
    /// Requests per batch and owner run directly on another core's shard.
    pub direct_limit: usize,
    /// `-a`: permissions of the unix socket.
    pub unix_mask: u32,
    /// `-A`: the text `shutdown` command is allowed.
    pub enable_shutdown: bool,
    /// `-d`: run as a daemon.
    pub daemon: bool,
    /// `-r`: raise the core file limit.
    pub enable_coredumps: bool,
    /// `-u`: user to switch to after binding.
    pub user: Option<String>,
    /// `-M`: out of memory instead of evicting.
    pub disable_evictions: bool,
    /// `-k`: mlockall.
    pub lock_memory: bool,
    /// `-P`: pid file.
    pub pidfile: Option<PathBuf>,
    /// `-n` (reported only).
    pub slab_min_size: usize,
    /// `-L`.
    pub large_pages: bool,
    /// `-D`: stats detail prefix delimiter.
    pub prefix_delimiter: char,
    /// `-D` given: memcached turns detail collection on with it.
    pub detail_enabled: bool,
    /// `-R`: requests decoded per batch per connection (None: the built-in 256).
    pub reqs_per_event: Option<usize>,
    /// `-C`: CAS disabled.
    pub disable_cas: bool,
    /// `-b`: listen backlog.
    pub listen_backlog: i32,
    /// `-B` (binary with `-S`, ascii with `-Y`).
    pub protocol: Protocol,
    /// `-S`: SASL on, with this password file (read at every attempt, as memcached does).
    pub sasl_pwdb: Option<PathBuf>,
    /// `-Y`: text authentication with this file (read at start and on SIGHUP).
    pub auth_file: Option<PathBuf>,
    /// `-F`: flush_all refused.
    pub disable_flush_all: bool,
    /// `-X`.
    pub disable_dumping: bool,
    /// `-W`.
    pub disable_watch: bool,
    /// `-N` (reported only).
    pub napi_ids: Option<u32>,
    /// `-o` settings.
    pub extended: Extended,
    /// `-Z`: TLS on, with these settings.
    pub tls: Option<TlsSettings>,
    /// For each of `listen`: whether (and how) it speaks TLS.
    pub listen_tls: Vec<ListenTls>,
    /// `--cluster`: replication on.
    pub cluster: Option<Cluster>,
    /// `--http-listen`: the HTTP face's address (off when `None`).
    pub http_listen: Option<SocketAddr>,
    /// `--http-timeout`: an HTTP connection's idle and per-request limit.
    pub http_timeout: std::time::Duration,
    /// `--hotkeys-sample`: one key command in this many counted for hot keys (0: off).
    pub hotkeys_sample: u32,
    /// One line per accepted flag or option that has no effect here (logged at start).
    pub warnings: Vec<String>,
}

impl Config {
    /// The `-D` delimiter as the byte keys are split at (memcached takes the first byte).
    pub fn delimiter_byte(&self) -> u8 {
        let mut b = [0u8; 4];
        self.prefix_delimiter.encode_utf8(&mut b).as_bytes()[0]
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.placement.len()
    }

    /// Memory limit of one shard.
    pub fn shard_memory(&self) -> usize {
        self.memory_limit / self.shards()
    }

    /// The TCP port as configured (0 until bound, or without TCP).
    pub fn port(&self) -> u16 {
        self.listen.first().map_or(0, |a| a.port())
    }
}

/// A flag combination that cannot work; the text says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The exit status memcached 1.6.18 gives the same mistake: 1 for a bad `-o` list (its
    /// sub-option parser), 64 (EX_USAGE) for the rest.
    pub fn exit_code(&self) -> u8 {
        const SUBOPTION: &[&str] = &[
            "Illegal suboption",
            "Missing numeric argument",
            "Initial hashtable multiplier",
            "Unknown hash_algorithm",
            "slab_automove must be",
        ];
        if SUBOPTION.iter().any(|p| self.0.starts_with(p)) {
            1
        } else {
            64
        }
    }
}

fn invalid<T>(why: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(why.into()))
}

/// Parses memcached's size syntax: a number of bytes with an optional k/m/g suffix.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1usize << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(mult)
}

/// Parses a CPU list such as `0,2-3` into CPU numbers in the given order.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if let Some((lo, hi)) = part.split_once('-') {
            let (lo, hi) = (lo.trim().parse::<usize>().ok()?, hi.trim().parse().ok()?);
            if lo > hi || hi - lo > 4096 {
                return None;
            }
            cpus.extend(lo..=hi);
        } else {
            cpus.push(part.parse().ok()?);
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// The CPUs this process may run on (its affinity mask), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data that may be zeroed; sched_getaffinity writes at most
    // `size_of::<cpu_set_t>()` bytes into it, and CPU_ISSET only reads within it for i below
    // CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                .filter(|&i| libc::CPU_ISSET(i, &set))
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

impl Args {
    /// Checks the flags against each other and builds the configuration.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.into_config_with(&allowed_cpus())
    }

    /// As [`Args::into_config`], with the CPUs the process may use given (for tests).
    pub fn into_config_with(self, allowed: &[usize]) -> Result<Config, ConfigError> {
        let tls = if self.enable_ssl {
            let mut t = parse_tls(&self.extended)?;
            if let Some(p) = &self.ssl_chain_cert {
                t.chain_cert = Some(p.clone());
            }
            if let Some(p) = &self.ssl_key {
                t.key = Some(p.clone());
            }
            if let Some(p) = &self.ssl_ca_cert {
                t.ca_cert = Some(p.clone());
            }
            if let Some(m) = self.ssl_verify_mode {
                if m > 3 {
                    return invalid("Invalid ssl_verify_mode. Use help to see valid options.");
                }
                t.verify_mode = m;
            }
            if self.port == Some(0) {
                return invalid("ERROR: You cannot enable SSL without a TCP port.");
            }
            Some(t)
        } else {
            None
        };
        if self.memory_file.is_some() {
            return invalid("-e: a memory file (restartable cache) is not supported by corecached");
        }
        let mut listen = Vec::new();
        let listen_arg = if self.listen.is_empty() {
            "0.0.0.0".to_string()
        } else {
            self.listen.join(",")
        };
        // As memcached: -U alone moves the TCP port to the UDP one; -p 0 turns TCP off and
        // -1 (either flag) binds a free port.
        let port = self.port.unwrap_or(match self.udp_port {
            0 => 11211,
            udp => udp,
        });
        let wire_port = |p: i32| -> Result<u16, ConfigError> {
            match p {
                -1 => Ok(0),
                0..=65535 => Ok(p as u16),
                _ => invalid(format!("ERROR: Invalid port number {p}.")),
            }
        };
        let tcp_port = wire_port(port)?;
        let udp_port = wire_port(self.udp_port)?;
        let mut udp_listen = Vec::new();
        let mut listen_tls = Vec::new();
        for part in listen_arg.split(',') {
            let (part, kind) = listen_prefix(part.trim(), tls.is_some())?;
            if port != 0 {
                listen.push(parse_listen(part.trim(), tcp_port)?);
                listen_tls.push(kind);
            }
            if self.udp_port != 0 {
                // An address's own port applies to its UDP socket too (memcached).
                udp_listen.push(parse_listen(part.trim(), udp_port)?);
            }
        }
        let placement = match (&self.cpus, self.threads) {
            (Some(list), threads) => {
                let cpus = parse_cpu_list(list)
                    .ok_or_else(|| ConfigError(format!("--cpus: cannot parse {list:?}")))?;
                if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
                    return invalid(format!(
                        "--cpus: CPU {bad} is not available to this process"
                    ));
                }
                let n = threads.unwrap_or(cpus.len());
                (0..n).map(|i| Some(cpus[i % cpus.len()])).collect()
            }
            // More shards than CPUs: let the kernel place them rather than stack them.
            (None, Some(n)) if n > allowed.len() => vec![None; n],
            (None, Some(n)) => allowed[..n].iter().map(|&c| Some(c)).collect(),
            (None, None) => allowed.iter().map(|&c| Some(c)).collect(),
        };
        let shards = placement.len();
        if shards == 0 {
            return invalid("-t: need at least one thread");
        }
        if shards > 1024 {
            return invalid("-t: at most 1024 threads");
        }
        if self.conn_limit == 0 {
            return invalid("-c: the connection limit must be at least 1");
        }
        let memory_limit = usize::try_from(self.memory_limit)
            .ok()
            .and_then(|m| m.checked_mul(1 << 20))
            .ok_or_else(|| ConfigError("-m: memory limit too large".into()))?;
        let per_shard = memory_limit / shards;
        if per_shard < PAGE_SIZE {
            return invalid(format!(
                "-m {} MiB over {shards} shards leaves {per_shard} bytes per shard, below one \
                 {PAGE_SIZE}-byte page; raise -m or lower -t",
                self.memory_limit
            ));
        }
        let max_item_size = parse_size(&self.max_item_size).ok_or_else(|| {
            ConfigError(format!(
                "-I: cannot parse {:?} (bytes, k or m)",
                self.max_item_size
            ))
        })?;
        if !(1024..=1 << 30).contains(&max_item_size) {
            return invalid("-I: the item size must be between 1k and 1g");
        }
        if max_item_size > per_shard {
            return invalid(format!(
                "-I {max_item_size} is larger than the memory of one shard ({per_shard} bytes); \
                 raise -m or lower -t or -I"
            ));
        }
        if !(self.growth_factor > 1.0 && self.growth_factor.is_finite()) {
            return invalid("-f: the growth factor must be greater than 1.0");
        }
        let unix_mask = u32::from_str_radix(self.unix_mask.trim(), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| ConfigError(format!("-a: {:?} is not an octal mask", self.unix_mask)))?;
        let mut protocol = match self.protocol.as_str() {
            "auto" => Protocol::Auto,
            "ascii" => Protocol::Ascii,
            "binary" => Protocol::Binary,
            other => {
                return invalid(format!(
                    "Invalid value for binding protocol: {other}\n -- should be one of auto, binary, or ascii"
                ))
            }
        };
        // As memcached: SASL is binary only, and text authentication text only (it wins when
        // both are given, as memcached's option order makes it).
        let sasl_pwdb = if self.enable_sasl {
            if protocol == Protocol::Ascii {
                return invalid("You cannot allow the ASCII protocol while using SASL.");
            }
            if self.udp_port != 0 {
                return invalid("Cannot enable UDP while using binary SASL authentication.");
            }
            protocol = Protocol::Binary;
            let from_env = std::env::var_os("MEMCACHED_SASL_PWDB").map(PathBuf::from);
            Some(self.sasl_pwdb.clone().or(from_env).ok_or_else(|| {
                ConfigError(
                    "-S: no password file: set MEMCACHED_SASL_PWDB or --sasl-pwdb to a file of \
                     user:password lines"
                        .into(),
                )
            })?)
        } else {
            if self.sasl_pwdb.is_some() {
                return invalid("--sasl-pwdb needs -S");
            }
            None
        };
        if self.auth_file.is_some() {
            if self.protocol == "binary" {
                return invalid(
                    "You cannot allow the BINARY protocol while using ascii authentication tokens.",
                );
            }
            protocol = Protocol::Ascii;
        }
        let prefix_delimiter = match &self.prefix_delimiter {
            None => ':',
            Some(d) => {
                let mut chars = d.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => c,
                    _ => return invalid("-D: the delimiter must be one character"),
                }
            }
        };
        if self.listen_backlog <= 0 {
            return invalid("-b: the backlog must be a positive number");
        }
        if self.max_reqs_per_event == Some(0) {
            return invalid("-R: the number of requests per event must be at least 1");
        }
        let mut warnings = Vec::new();
        let mut buffer_memory_limit = self.buffer_memory_limit;
        let extended = parse_extended(
            &self.extended,
            max_item_size,
            &mut warnings,
            &mut buffer_memory_limit,
        )?;
        if self.enable_largepages {
            warnings
                .push("-L: large pages are not used: slab pages are 1 MiB heap allocations".into());
        }
        if self.slab_min_size != 48 {
            warnings.push(format!(
                "-n {}: ignored: the smallest slab chunk here follows the item header and -f",
                self.slab_min_size
            ));
        }
        if self.napi_ids.is_some() {
            warnings.push("-N: NAPI ids are not used: connections are dealt round-robin".into());
        }
        if tls.is_none()
            && self.extended.iter().any(|l| {
                l.split(',')
                    .any(|i| SSL_KEYS.contains(&i.split('=').next().unwrap_or("")))
            })
        {
            warnings.push("-o ssl_*: accepted, no effect without -Z".into());
        }
        if let Some(t) = &tls {
            if t.ciphers.is_some() {
                warnings.push(
                    "-o ssl_ciphers: accepted, no effect: rustls's own cipher suites are used"
                        .into(),
                );
            }
            if t.kernel_tls {
                warnings
                    .push("-o ssl_kernel_tls: accepted, no effect: TLS runs in the process".into());
            }
            if t.min_version < 2 {
                warnings.push(format!(
                    "-o ssl_min_version={}: TLS 1.2 is the lowest version here",
                    t.min_version
                ));
            }
            if !matches!(t.keyformat, 1 | 2) {
                return invalid(format!(
                    "ssl_keyformat {}: only 1 (PEM) and 2 (DER) are supported",
                    t.keyformat
                ));
            }
        }
        let cluster = self.cluster_config(&listen)?;
        if self.http_timeout == 0 {
            return invalid("--http-timeout: give at least one second");
        }
        Ok(Config {
            listen,
            udp_port: self.udp_port,
            udp_listen,
            memory_limit,
            conn_limit: self.conn_limit,
            placement,
            max_item_size,
            growth_factor: self.growth_factor,
            eviction: self.eviction,
            verbosity: self.verbose,
            unix_socket: self.unix_socket,
            buffer_memory_limit: usize::try_from(buffer_memory_limit)
                .ok()
                .and_then(|m| m.checked_mul(1 << 20))
                .ok_or_else(|| ConfigError("--buffer-memory-limit: too large".into()))?,
            io: self.io,
            direct_limit: self.direct_limit,
            unix_mask,
            enable_shutdown: self.enable_shutdown,
            daemon: self.daemon,
            enable_coredumps: self.enable_coredumps,
            user: self.user,
            disable_evictions: self.disable_evictions,
            lock_memory: self.lock_memory,
            pidfile: self.pidfile,
            slab_min_size: self.slab_min_size,
            large_pages: self.enable_largepages,
            detail_enabled: self.prefix_delimiter.is_some(),
            prefix_delimiter,
            reqs_per_event: self.max_reqs_per_event,
            disable_cas: self.disable_cas,
            listen_backlog: self.listen_backlog,
            protocol,
            sasl_pwdb,
            auth_file: self.auth_file.clone(),
            disable_flush_all: self.disable_flush_all,
            disable_dumping: self.disable_dumping,
            disable_watch: self.disable_watch,
            napi_ids: self.napi_ids,
            extended,
            tls,
            listen_tls,
            cluster,
            http_listen: self.http_listen,
            http_timeout: std::time::Duration::from_secs(self.http_timeout),
            hotkeys_sample: self.hotkeys_sample,
            warnings,
        })
    }

    /// `--cluster` and its companions, checked; `None` without `--cluster`.
    fn cluster_config(&self, listen: &[SocketAddr]) -> Result<Option<Cluster>, ConfigError> {
        let Some(list) = &self.cluster else {
            if self.replicas.is_some_and(|r| r > 0) || self.self_addr.is_some() {
                return invalid("--replicas and --self need --cluster");
            }
            return Ok(None);
        };
        use crate::ring::{Distribution, Node};
        let nodes = Node::parse_list(list).map_err(|e| ConfigError(format!("--cluster: {e}")))?;
        if nodes.is_empty() {
            return invalid("--cluster: no servers listed");
        }
        if nodes.len() > MAX_CLUSTER_MEMBERS {
            return invalid(format!(
                "--cluster lists {} servers; at most {MAX_CLUSTER_MEMBERS} replicate to each other",
                nodes.len()
            ));
        }
        let distribution: Distribution = self
            .distribution
            .parse()
            .map_err(|e| ConfigError(format!("--distribution: {e}")))?;
        if distribution == Distribution::Jump {
            // A client re-jumps an ejected server's keys instead of taking the next server,
            // so the copies would not be where failover looks.
            return invalid("--distribution jump cannot place replicas (use a continuum)");
        }
        let replicas = self.replicas.unwrap_or(1);
        if replicas >= nodes.len() && replicas > 0 {
            return invalid(format!(
                "--replicas {replicas} needs more than {} servers in --cluster",
                nodes.len()
            ));
        }
        let same = |n: &Node, host: &str, port: u16| {
            n.port == port && n.host.trim_matches(|c| c == '[' || c == ']') == host
        };
        let self_index = match &self.self_addr {
            Some(spec) => {
                let me = Node::parse(spec).map_err(|e| ConfigError(format!("--self: {e}")))?;
                let found: Vec<usize> = (0..nodes.len())
                    .filter(|&i| same(&nodes[i], &me.host, me.port))
                    .collect();
                match found[..] {
                    [i] => i,
                    [] => {
                        return invalid(format!(
                            "--self {spec} is not one of the servers of --cluster {list}"
                        ))
                    }
                    _ => return invalid(format!("--self {spec} is listed twice in --cluster")),
                }
            }
            None => {
                let found: Vec<usize> = (0..nodes.len())
                    .filter(|&i| {
                        listen.iter().any(|a| {
                            a.port() != 0
                                && !a.ip().is_unspecified()
                                && same(&nodes[i], &a.ip().to_string(), a.port())
                        })
                    })
                    .collect();
                match found[..] {
                    [i] => i,
                    [] => {
                        return invalid(format!(
                            "none of the servers of --cluster {list} is this server's -l/-p \
                             address: give --self HOST:PORT"
                        ))
                    }
                    _ => return invalid("several --cluster entries match -l/-p: give --self"),
                }
            }
        };
        let backlog_bytes = usize::try_from(self.replication_backlog)
            .ok()
            .and_then(|m| m.checked_mul(1 << 20))
            .filter(|&b| b > 0)
            .ok_or_else(|| ConfigError("--replication-backlog: out of range".into()))?;
        Ok(Some(Cluster {
            nodes,
            distribution,
            replicas,
            self_index,
            backlog_bytes,
            resync_timeout: std::time::Duration::from_secs(self.resync_timeout),
        }))
    }
}

/// Most members of one `--cluster` (a record's peers are a 64-bit mask).
pub const MAX_CLUSTER_MEMBERS: usize = 64;

/// One `-l` entry: an IP address (the `-p` port), or `ADDR:PORT` / `[V6]:PORT`.
fn parse_listen(part: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = part
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port));
    }
    if let Ok(sa) = part.parse::<SocketAddr>() {
        return Ok(sa);
    }
    invalid(format!("-l: {part:?} is not an IP address"))
}

/// Options of `-o` that have no counterpart here; accepted with this reason.
fn no_effect(key: &str) -> Option<&'static str> {
    Some(match key {
        "maxconns_fast" | "no_maxconns_fast" => {
            "connections over -c are always closed at once here"
        }
        "hashpower" | "no_hashexpand" => "each shard's index sizes itself",
        "tail_repair_time" => "items are never pinned, so no tail needs repair",
        // slab_reassign, slab_automove, lru_crawler and its sleep/tocrawl are honoured (see
        // server::admin); these tune memcached's automover, which works differently here.
        "slab_automove_ratio" | "slab_automove_window" | "slab_automove_freeratio" => {
            "the page mover here follows evictions, not memcached's age ratios"
        }
        "lru_maintainer" | "no_lru_maintainer" | "hot_lru_pct" | "warm_lru_pct"
        | "hot_max_factor" | "warm_max_factor" | "temporary_ttl" => {
            "there is no segmented LRU here; --eviction picks the policy"
        }
        "slab_sizes" => "slab classes follow -f here",
        "track_sizes" => "stats sizes is not collected here",
        "inline_ascii_resp" | "no_inline_ascii_resp" | "no_chunked_items" => {
            "item layout is fixed here"
        }
        "modern" => "it changes nothing in memcached 1.6.18 either",
        "drop_privileges" | "no_drop_privileges" | "relaxed_privileges" => {
            "no seccomp filter is installed here"
        }
        "resp_obj_mem_limit" => "replies are bounded by --buffer-memory-limit",
        "sock_cookie_id" => "sockets are not marked here",
        "proxy_config" | "proxy_uring" => "there is no proxy mode here",
        "slab_chunk_max" => "items are stored whole, never chunked",
        _ if key.starts_with("ext_") => "there is no external storage here",
        _ => return None,
    })
}

/// Keys of `-o` whose value memcached reads as a number.
const NUMERIC: &[&str] = &[
    "hashpower",
    "slab_automove",
    "slab_automove_window",
    "tail_repair_time",
    "lru_crawler_sleep",
    "lru_crawler_tocrawl",
    "hot_lru_pct",
    "warm_lru_pct",
    "temporary_ttl",
    "idle_timeout",
    "watcher_logbuf_size",
    "worker_logbuf_size",
    "slab_chunk_max",
    "read_buf_mem_limit",
    "resp_obj_mem_limit",
    "sock_cookie_id",
];

/// Parses every `-o` list: memcached's names, each either applied (`read_buf_mem_limit`, and
/// what `stats settings` reports) or noted in `warnings` with the reason it does not apply;
/// an unknown name is an error, worded as memcached's.
fn parse_extended(
    lists: &[String],
    max_item_size: usize,
    warnings: &mut Vec<String>,
    buffer_memory_limit: &mut u64,
) -> Result<Extended, ConfigError> {
    let mut e = Extended::default();
    for list in lists {
        for item in list.split(',').filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (item, None),
            };
            // Honoured without a warning (the crawler and page-mover settings: server::admin).
            let known = matches!(
                key,
                "hash_algorithm"
                    | "read_buf_mem_limit"
                    | "lru_crawler"
                    | "no_lru_crawler"
                    | "lru_crawler_sleep"
                    | "lru_crawler_tocrawl"
                    | "slab_reassign"
                    | "no_slab_reassign"
                    | "slab_automove"
                    | "no_slab_automove"
                    | "no_modern"
                    | "idle_timeout"
                    | "watcher_logbuf_size"
                    | "worker_logbuf_size"
            );
            if SSL_KEYS.contains(&key) {
                continue; // parse_tls reads them
            }
            if !known && no_effect(key).is_none() {
                return invalid(format!("Illegal suboption \"{item}\""));
            }
            let number = if NUMERIC.contains(&key) {
                // memcached reads these with a plain atoi-like conversion; only a missing
                // value is an error there.
                let Some(v) = value.or((key == "slab_automove").then_some("1")) else {
                    // A bare `slab_automove` means 1 there.
                    return invalid(format!("Missing numeric argument for {key}"));
                };
                Some(v.trim().parse::<u64>().unwrap_or(0))
            } else {
                None
            };
            let n = number.unwrap_or(0);
            let float = || value.and_then(|v| v.trim().parse::<f64>().ok());
            match key {
                "hashpower" => {
                    if !(12..=64).contains(&n) {
                        return invalid(format!("Initial hashtable multiplier of {n} is too low"));
                    }
                    e.hashpower_init = n as u32;
                }
                "hash_algorithm" => match value {
                    Some("jenkins" | "murmur3") => {
                        warnings.push(format!(
                            "-o {item}: ignored: keys are always hashed with xxh3 here"
                        ));
                        continue;
                    }
                    Some("xxh3") => continue,
                    _ => return invalid("Unknown hash_algorithm option (jenkins, murmur3, xxh3)"),
                },
                "read_buf_mem_limit" => {
                    // The same job as --buffer-memory-limit; 0 is memcached's "unlimited".
                    if n > 0 {
                        *buffer_memory_limit = n;
                    }
                    continue;
                }
                "slab_chunk_max" => {
                    // In bytes, whatever memcached's -h says; its three checks, its words.
                    let bytes = n as usize;
                    if bytes == 0 {
                        return invalid("could not parse argument to slab_chunk_max");
                    }
                    if bytes > max_item_size {
                        return invalid(format!(
                            "slab_chunk_max (bytes: {bytes}) cannot be larger than -I \
                             (item_size_max {max_item_size})"
                        ));
                    }
                    if !max_item_size.is_multiple_of(bytes) {
                        return invalid(format!(
                            "-I (item_size_max: {max_item_size}) must be evenly divisible by \
                             slab_chunk_max (bytes: {bytes})"
                        ));
                    }
                    if !PAGE_SIZE.is_multiple_of(bytes) {
                        return invalid(format!(
                            "slab_chunk_max (bytes: {bytes}) must divide evenly into \
                             {PAGE_SIZE} (slab_page_size)"
                        ));
                    }
                    e.slab_chunk_max = bytes;
                }
                "maxconns_fast" => e.maxconns_fast = true,
                "no_maxconns_fast" => e.maxconns_fast = false,
                "slab_reassign" => e.slab_reassign = true,
                "no_slab_reassign" => e.slab_reassign = false,
                "slab_automove" => {
                    if n > 2 {
                        return invalid("slab_automove must be between 0 and 2");
                    }
                    e.slab_automove = n as u32;
                }
                "no_slab_automove" => e.slab_automove = 0,
                "slab_automove_ratio" => e.slab_automove_ratio = float().unwrap_or(0.0),
                "slab_automove_window" => e.slab_automove_window = n as u32,
                "tail_repair_time" => e.tail_repair_time = n as u32,
                "lru_crawler" => e.lru_crawler = true,
                "no_lru_crawler" => e.lru_crawler = false,
                "lru_crawler_sleep" => e.lru_crawler_sleep = n as u32,
                "lru_crawler_tocrawl" => e.lru_crawler_tocrawl = n as u32,
                "lru_maintainer" => e.lru_maintainer_thread = true,
                "no_lru_maintainer" => e.lru_maintainer_thread = false,
                "hot_lru_pct" => e.hot_lru_pct = n as u32,
                "warm_lru_pct" => e.warm_lru_pct = n as u32,
                "hot_max_factor" => e.hot_max_factor = float().unwrap_or(0.0),
                "warm_max_factor" => e.warm_max_factor = float().unwrap_or(0.0),
                "temporary_ttl" => {
                    e.temp_lru = true;
                    e.temporary_ttl = n as u32;
                }
                "idle_timeout" => e.idle_timeout = n as u32,
                "watcher_logbuf_size" => e.watcher_logbuf_size = (n as usize) * 1024,
                "worker_logbuf_size" => e.worker_logbuf_size = (n as usize) * 1024,
                "track_sizes" => e.track_sizes = true,
                "inline_ascii_resp" => e.inline_ascii_response = true,
                "no_inline_ascii_resp" => e.inline_ascii_response = false,
                "modern" => {
                    e.slab_reassign = true;
                    e.slab_automove = 1;
                    e.lru_maintainer_thread = true;
                    e.lru_segmented = true;
                }
                "no_modern" => {
                    e.slab_reassign = false;
                    e.slab_automove = 0;
                    e.lru_maintainer_thread = false;
                    e.lru_segmented = false;
                    e.lru_crawler = false;
                }
                _ => {}
            }
            if let Some(why) = no_effect(key) {
                warnings.push(format!("-o {item}: accepted, no effect: {why}"));
            }
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["corecached"];
        all.extend_from_slice(args);
        Args::try_parse_from(all).unwrap().into_config_with(&[0, 1])
    }

    #[test]
    fn tls_options_and_listener_prefixes() {
        let c = config(&[
            "-Z",
            "-o",
            "ssl_chain_cert=/c.pem,ssl_key=/k.pem,ssl_verify_mode=2,ssl_wbuf_size=8",
            "-l",
            "127.0.0.1,notls:127.0.0.1:7001,mtls:127.0.0.1:7002,btls:[::1]:7003",
        ])
        .unwrap();
        let t = c.tls.as_ref().unwrap();
        assert_eq!(
            t.chain_cert.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        assert_eq!((t.verify_mode, t.verify_bits(), t.wbuf_size), (2, 3, 8192));
        assert_eq!(
            c.listen_tls,
            vec![
                ListenTls::Tls,
                ListenTls::Plain,
                ListenTls::TlsPeer,
                ListenTls::TlsNoPeer
            ]
        );
        assert_eq!(c.listen[3], "[::1]:7003".parse().unwrap());
        // Long flags win over -o.
        let c = config(&["-Z", "-o", "ssl_verify_mode=1", "--ssl-verify-mode", "0"]).unwrap();
        assert_eq!(c.tls.unwrap().verify_mode, 0);
        // Without -Z: prefixes refused, ssl_* accepted with a warning.
        assert!(config(&["-l", "btls:127.0.0.1"]).is_err());
        let c = config(&["-o", "ssl_chain_cert=/c.pem"]).unwrap();
        assert!(c.tls.is_none() && c.warnings.iter().any(|w| w.contains("without -Z")));
        for bad in [
            "ssl_verify_mode=4",
            "ssl_min_version=7",
            "ssl_keyformat=3",
            "ssl_key",
        ] {
            assert!(config(&["-Z", "-o", bad]).is_err(), "{bad}");
        }
        assert!(config(&["-Z", "-p", "0"]).is_err());
    }

    #[test]
    fn defaults_follow_memcached() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port(), 11211);
        assert_eq!(c.memory_limit, 64 << 20);
        assert_eq!(c.conn_limit, 1024);
        assert_eq!(c.max_item_size, 1 << 20);
        assert_eq!(c.placement, vec![Some(0), Some(1)]);
    }

    #[test]
    fn every_eviction_policy_parses_by_name_and_s3fifo_is_the_default() {
        // perf/README.md "Hit ratio": S3-FIFO has the fewest misses on every trace but one.
        assert_eq!(config(&[]).unwrap().eviction, Eviction::S3fifo);
        for (name, policy) in [
            ("lru", EvictionPolicy::Lru),
            ("fifo", EvictionPolicy::Fifo),
            ("lfu", EvictionPolicy::Lfu),
            ("random", EvictionPolicy::Random),
            ("s3fifo", EvictionPolicy::S3Fifo),
        ] {
            let e = config(&["--eviction", name]).unwrap().eviction;
            assert_eq!((e.name(), e.policy()), (name, policy));
        }
    }

    #[test]
    fn more_threads_than_cpus_run_unpinned() {
        let c = config(&["-t", "4"]).unwrap();
        assert_eq!(c.placement, vec![None; 4]);
    }

    #[test]
    fn cpu_list_wraps() {
        let c = config(&["--cpus", "1", "-t", "3"]).unwrap();
        assert_eq!(c.placement, vec![Some(1); 3]);
        assert!(config(&["--cpus", "7"]).is_err());
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value_as_in_memcached() {
        let c = config(&["-p", "11211", "-m", "8", "-p", "11300", "-m", "16"]).unwrap();
        assert_eq!((c.port(), c.memory_limit), (11300, 16 << 20));
        let c = config(&["-l", "127.0.0.1", "-l", "127.0.0.2", "-p", "5"]).unwrap();
        assert_eq!(c.listen.len(), 2);
    }

    #[test]
    fn a_cluster_is_at_most_64_members() {
        let list = |n: u16| {
            (0..n)
                .map(|i| format!("10.0.0.{}:{}", i / 200 + 1, 11211 + i))
                .collect::<Vec<_>>()
                .join(",")
        };
        let ok = config(&["--cluster", &list(64), "--self", "10.0.0.1:11211"]).unwrap();
        assert_eq!(ok.cluster.unwrap().nodes.len(), 64);
        let e = config(&["--cluster", &list(65), "--self", "10.0.0.1:11211"]).unwrap_err();
        assert!(e.to_string().contains("at most 64"), "{e}");
    }

    #[test]
    fn sizes_parse_like_memcached() {
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_cpu_list("0,2-3"), Some(vec![0, 2, 3]));
    }

    #[test]
    fn udp_port_binds_every_listen_address() {
        let c = config(&[]).unwrap();
        assert_eq!((c.udp_port, c.udp_listen.len()), (0, 0));
        // -U alone moves the TCP port too, as memcached does.
        let c = config(&["-U", "22122", "-l", "127.0.0.1"]).unwrap();
        assert_eq!(c.port(), 22122);
        assert_eq!(c.udp_listen, vec!["127.0.0.1:22122".parse().unwrap()]);
        // An address's own port is used for its UDP socket too.
        let c = config(&["-p", "1", "-U", "2", "-l", "127.0.0.1:7000,::1"]).unwrap();
        assert_eq!(c.port(), 7000);
        assert_eq!(
            c.udp_listen,
            vec![
                "127.0.0.1:7000".parse().unwrap(),
                "[::1]:2".parse().unwrap()
            ]
        );
    }

    /// memcached's ports: -p 0 turns TCP off, -1 binds a free port, -U alone moves TCP too.
    #[test]
    fn ports_as_memcached_reads_them() {
        let c = config(&["-p", "0", "-U", "11222"]).unwrap();
        assert!(c.listen.is_empty());
        assert_eq!(c.udp_listen[0].port(), 11222);
        let c = config(&["-p", "-1"]).unwrap();
        assert_eq!((c.port(), c.udp_listen.len()), (0, 0));
        let c = config(&["-U", "-1"]).unwrap();
        assert_eq!((c.port(), c.udp_listen[0].port()), (0, 0));
        let c = config(&["-U", "11222"]).unwrap();
        assert_eq!(c.port(), 11222);
    }

    #[test]
    fn invalid_combinations_are_refused() {
        assert!(config(&["-m", "1", "-t", "2"]).is_err());
        assert!(config(&["-f", "1.0"]).is_err());
        assert!(config(&["-I", "512"]).is_err());
        assert!(config(&["-m", "2", "-t", "2", "-I", "2m"]).is_err());
        assert!(config(&["-U", "70000"]).is_err());
        assert!(config(&["-p", "-2"]).is_err());
        assert!(config(&["-l", "nowhere"]).is_err());
        assert!(config(&["-c", "0"]).is_err());
        assert!(config(&["-S"]).is_err());
        assert!(config(&["-a", "8"]).is_err());
        assert!(config(&["-D", "ab"]).is_err());
    }

    #[test]
    fn memcached_flags_fill_the_config() {
        let c = config(&[
            "-A",
            "-C",
            "-M",
            "-b",
            "10",
            "-B",
            "binary",
            "-a",
            "644",
            "-D",
            "/",
            "-R",
            "5",
            "-l",
            "127.0.0.1",
            "-l",
            "[::1]:7000",
            "-P",
            "/tmp/x.pid",
            "-u",
            "nobody",
            "-d",
        ])
        .unwrap();
        assert!(c.enable_shutdown && c.disable_cas && c.disable_evictions && c.daemon);
        assert_eq!(c.listen_backlog, 10);
        assert_eq!(c.protocol, Protocol::Binary);
        assert_eq!(c.unix_mask, 0o644);
        assert_eq!((c.prefix_delimiter, c.detail_enabled), ('/', true));
        assert_eq!(c.reqs_per_event, Some(5));
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.listen[1].port(), 7000);
        assert_eq!(c.user.as_deref(), Some("nobody"));
    }

    #[test]
    fn extended_options_apply_warn_or_refuse() {
        let c = config(&[
            "-o",
            "read_buf_mem_limit=8,modern",
            "-o",
            "slab_chunk_max=262144,slab_automove",
        ])
        .unwrap();
        assert_eq!(c.buffer_memory_limit, 8 << 20);
        assert_eq!(c.extended.slab_chunk_max, 256 << 10);
        assert_eq!(c.extended.slab_automove, 1);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        // Both honoured: no warning.
        let c = config(&["-o", "hash_algorithm=xxh3,no_lru_crawler"]).unwrap();
        assert!(!c.extended.lru_crawler);
        assert_eq!(c.warnings.len(), 0, "{:?}", c.warnings);
        for bad in [
            "foo",
            "hashpower",
            "hashpower=3",
            "hash_algorithm=md5",
            "slab_chunk_max=7",
        ] {
            assert!(config(&["-o", bad]).is_err(), "{bad}");
        }
        assert_eq!(config(&["-o", "foo=1"]).unwrap_err().exit_code(), 1);
        assert_eq!(config(&["-B", "x"]).unwrap_err().exit_code(), 64);
    }
}
