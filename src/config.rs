//! Command-line flags (memcached's names where the meaning is the same) and their validation into
//! a [`Config`] the server runs from.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

use crate::storage::EvictionPolicy;

/// Size of one slab page: the unit of memory accounting, so each shard needs at least one.
pub const PAGE_SIZE: usize = 1024 * 1024;

/// The flags, as typed.
#[derive(Debug, Parser)]
#[command(name = "corecached", version = crate::VERSION_STRING, about = "A memcached-compatible cache server, thread-per-core")]
pub struct Args {
    /// TCP port to listen on (0 = pick a free port; the bound address is logged).
    #[arg(short = 'p', long = "port", default_value_t = 11211)]
    pub port: u16,

    /// Interface(s) to listen on, comma separated. The default, like memcached's, is every
    /// IPv4 interface; pass 127.0.0.1 to stay local.
    #[arg(short = 'l', long = "listen", default_value = "0.0.0.0")]
    pub listen: String,

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
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,

    /// Victim choice when memory is full.
    #[arg(long = "eviction", value_enum, default_value_t = Eviction::Lru)]
    pub eviction: Eviction,

    /// UDP port; only 0 (off) is accepted: corecached speaks TCP only.
    #[arg(short = 'U', long = "udp-port", default_value_t = 0)]
    pub udp_port: u16,

    /// Unix socket path to listen on instead of TCP (memcached's -s; an old socket file at
    /// the path is replaced).
    #[arg(short = 's', long = "unix-socket")]
    pub unix_socket: Option<PathBuf>,

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
}

impl Eviction {
    /// The storage policy this name selects.
    pub fn policy(self) -> EvictionPolicy {
        match self {
            Eviction::Lru => EvictionPolicy::Lru,
            Eviction::Fifo => EvictionPolicy::Fifo,
            Eviction::Lfu => EvictionPolicy::Lfu,
            Eviction::Random => EvictionPolicy::Random,
        }
    }

    /// The name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Eviction::Lru => "lru",
            Eviction::Fifo => "fifo",
            Eviction::Lfu => "lfu",
            Eviction::Random => "random",
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Addresses every shard binds; the port is 0 when a free one is to be picked.
    pub listen: Vec<SocketAddr>,
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
}

impl Config {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.placement.len()
    }

    /// Memory limit of one shard.
    pub fn shard_memory(&self) -> usize {
        self.memory_limit / self.shards()
    }

    /// The TCP port as configured (0 until bound).
    pub fn port(&self) -> u16 {
        self.listen[0].port()
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
        if self.udp_port != 0 {
            return invalid("UDP is not supported: -U must be 0");
        }
        let mut listen = Vec::new();
        for part in self.listen.split(',') {
            let part = part.trim();
            let ip: IpAddr = part
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .or_else(|_| invalid(format!("-l: {part:?} is not an IP address")))?;
            listen.push(SocketAddr::new(ip, self.port));
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
        Ok(Config {
            listen,
            memory_limit,
            conn_limit: self.conn_limit,
            placement,
            max_item_size,
            growth_factor: self.growth_factor,
            eviction: self.eviction,
            verbosity: self.verbose,
            unix_socket: self.unix_socket,
            buffer_memory_limit: usize::try_from(self.buffer_memory_limit)
                .ok()
                .and_then(|m| m.checked_mul(1 << 20))
                .ok_or_else(|| ConfigError("--buffer-memory-limit: too large".into()))?,
            io: self.io,
            direct_limit: self.direct_limit,
        })
    }
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
    fn defaults_follow_memcached() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port(), 11211);
        assert_eq!(c.memory_limit, 64 << 20);
        assert_eq!(c.conn_limit, 1024);
        assert_eq!(c.max_item_size, 1 << 20);
        assert_eq!(c.placement, vec![Some(0), Some(1)]);
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
    fn sizes_parse_like_memcached() {
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_cpu_list("0,2-3"), Some(vec![0, 2, 3]));
    }

    #[test]
    fn invalid_combinations_are_refused() {
        assert!(config(&["-m", "1", "-t", "2"]).is_err());
        assert!(config(&["-f", "1.0"]).is_err());
        assert!(config(&["-I", "512"]).is_err());
        assert!(config(&["-m", "2", "-t", "2", "-I", "2m"]).is_err());
        assert!(config(&["-U", "11211"]).is_err());
        assert!(config(&["-l", "nowhere"]).is_err());
        assert!(config(&["-c", "0"]).is_err());
    }
}
