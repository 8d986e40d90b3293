//! Command-line options and their validation into a [`Config`]. Every run is bounded: a duration
//! (default 10 s, at most an hour) always applies, a request count may end it sooner.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Longest run allowed, warm-up and fill excluded (they have their own bounds).
pub const MAX_DURATION_S: f64 = 3600.0;
/// Largest value size accepted (memcached's default item limit).
pub const MAX_VALUE_SIZE: usize = 1024 * 1024;
/// Largest key space.
pub const MAX_KEYS: u64 = 1 << 40;
/// Smallest value in verify mode: the key index and version heading every value.
pub const VERIFY_HEADER: usize = 12;

/// Closed-loop load generator for memcached-protocol servers (binary and text protocols).
#[derive(Debug, Parser)]
#[command(
    name = "mcbench",
    version,
    about = "Closed-loop load generator for memcached-protocol servers (corecached, memcached)",
    long_about = None
)]
pub struct Args {
    /// Server address, host:port.
    #[arg(short = 's', long, default_value = "127.0.0.1:11211")]
    pub server: String,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Binary)]
    pub protocol: Protocol,
    /// Client threads.
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// Connections per thread.
    #[arg(short = 'c', long, default_value_t = 16)]
    pub conns: usize,
    /// Requests in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub pipeline: usize,
    /// Set:get ratio, e.g. 1:10 (0:1 = gets only, 1:0 = sets only).
    #[arg(long, default_value = "1:10")]
    pub ratio: String,
    /// Number of distinct keys (key indices 0..N).
    #[arg(short = 'k', long, default_value_t = 100_000)]
    pub keys: u64,
    /// Key pattern: sequential, uniform, or zipf[:EXPONENT] (default exponent 0.99).
    #[arg(long, default_value = "uniform")]
    pub key_pattern: String,
    /// Key prefix; a key is the prefix followed by its decimal index.
    #[arg(long, default_value = "mcb:")]
    pub key_prefix: String,
    /// Value size in bytes: N, or MIN-MAX for sizes drawn per set.
    #[arg(short = 'd', long, default_value = "32")]
    pub value_size: String,
    /// Measured duration in seconds (always a bound, at most 3600).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many requests in all (before the duration if they finish sooner).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Seconds of load before measuring (not recorded).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Check every returned value: values carry their key index and version and derived bytes;
    /// each connection owns its own keys so the exact version of every hit is known.
    #[arg(long)]
    pub verify: bool,
    /// Set every key once (split across connections, pipelined) before the run.
    #[arg(long)]
    pub fill: bool,
    /// Only fill, then report the fill and stop.
    #[arg(long, conflicts_with = "fill")]
    pub fill_only: bool,
    /// Microseconds to poll without sleeping before each wait for replies (burns client CPU to
    /// spare the server the cost of waking the client; 0 = always sleep).
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Seed of every random choice (key draws, value sizes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Wire protocol of the requests (the request writer is a seam, see `proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// memcached binary protocol (magic 0x80).
    Binary,
    /// memcached ASCII text protocol (`get` / `set`).
    Text,
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyPattern {
    /// Each connection walks the key space in order from its own offset.
    Sequential,
    /// Uniform over the key space.
    Uniform,
    /// Zipf over the key space with this exponent: index 0 the hottest.
    Zipf(f64),
}

/// Validated run parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// Resolved target.
    pub addr: SocketAddr,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Client threads.
    pub threads: usize,
    /// Connections per thread.
    pub conns: usize,
    /// In-flight requests per connection.
    pub pipeline: usize,
    /// Sets in each cycle of `sets + gets` requests.
    pub sets: u32,
    /// Gets in each cycle.
    pub gets: u32,
    /// Key space size.
    pub keys: u64,
    /// Key choice.
    pub pattern: KeyPattern,
    /// Key prefix bytes.
    pub key_prefix: Vec<u8>,
    /// Smallest value size.
    pub value_min: usize,
    /// Largest value size.
    pub value_max: usize,
    /// Measured duration.
    pub duration: Duration,
    /// Request budget over all connections, if any.
    pub requests: Option<u64>,
    /// Unrecorded warm-up.
    pub warmup: Duration,
    /// Verify every value.
    pub verify: bool,
    /// Fill before running.
    pub fill: bool,
    /// Fill and stop.
    pub fill_only: bool,
    /// Busy-poll time before sleeping for replies.
    pub spin: Duration,
    /// Seed.
    pub seed: u64,
    /// JSON output.
    pub json: bool,
}

impl Config {
    /// Total connections.
    pub fn total_conns(&self) -> usize {
        self.threads * self.conns
    }
}

fn parse_ratio(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("ratio {s:?}: expected SETS:GETS, e.g. 1:10"))?;
    let parse = |x: &str| {
        x.trim()
            .parse::<u32>()
            .ok()
            .filter(|v| *v <= 1_000_000)
            .ok_or_else(|| format!("ratio {s:?}: {x:?} is not a count in 0..=1000000"))
    };
    let (sets, gets) = (parse(a)?, parse(b)?);
    if sets + gets == 0 {
        return Err(format!("ratio {s:?}: sets and gets cannot both be 0"));
    }
    Ok((sets, gets))
}

fn parse_pattern(s: &str) -> Result<KeyPattern, String> {
    let (name, param) = match s.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (s, None),
    };
    match (name, param) {
        ("sequential" | "seq" | "S", None) => Ok(KeyPattern::Sequential),
        ("uniform" | "R", None) => Ok(KeyPattern::Uniform),
        ("zipf" | "Z", None) => Ok(KeyPattern::Zipf(0.99)),
        ("zipf" | "Z", Some(p)) => match p.parse::<f64>() {
            Ok(e) if e.is_finite() && e > 0.0 && e <= 10.0 => Ok(KeyPattern::Zipf(e)),
            _ => Err(format!(
                "key pattern {s:?}: zipf exponent must be in (0, 10]"
            )),
        },
        _ => Err(format!(
            "key pattern {s:?}: expected sequential, uniform, zipf or zipf:EXPONENT"
        )),
    }
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let one = |x: &str| {
        x.trim()
            .parse::<usize>()
            .ok()
            .filter(|v| (1..=MAX_VALUE_SIZE).contains(v))
            .ok_or_else(|| format!("value size {s:?}: {x:?} is not in 1..={MAX_VALUE_SIZE}"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let v = one(s)?;
            (v, v)
        }
    };
    if lo > hi {
        return Err(format!("value size {s:?}: MIN is larger than MAX"));
    }
    Ok((lo, hi))
}

fn seconds(name: &str, v: f64, max: f64) -> Result<Duration, String> {
    if !(v.is_finite() && (0.0..=max).contains(&v)) {
        return Err(format!("{name} {v}: must be between 0 and {max} seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Resolves `server` and refuses any non-loopback address unless `allow_remote`.
pub fn resolve(server: &str, allow_remote: bool) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .map_err(|e| format!("server {server:?}: {e}"))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("server {server:?}: no address"))?;
    if !allow_remote {
        if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "server {server:?} resolves to {a}, not a loopback address; \
                 pass --allow-remote to load a remote server"
            ));
        }
    }
    Ok(first)
}

impl Args {
    /// Checks every option and builds the run's [`Config`].
    pub fn validate(&self) -> Result<Config, String> {
        if !(1..=1024).contains(&self.threads) {
            return Err(format!("threads {}: must be in 1..=1024", self.threads));
        }
        if !(1..=4096).contains(&self.conns) {
            return Err(format!(
                "conns {}: must be in 1..=4096 per thread",
                self.conns
            ));
        }
        if !(1..=4096).contains(&self.pipeline) {
            return Err(format!("pipeline {}: must be in 1..=4096", self.pipeline));
        }
        if !(1..=MAX_KEYS).contains(&self.keys) {
            return Err(format!("keys {}: must be in 1..={MAX_KEYS}", self.keys));
        }
        let (sets, gets) = parse_ratio(&self.ratio)?;
        let pattern = parse_pattern(&self.key_pattern)?;
        let (value_min, value_max) = parse_size(&self.value_size)?;
        let duration = seconds("duration", self.duration, MAX_DURATION_S)?;
        let warmup = seconds("warmup", self.warmup, MAX_DURATION_S)?;
        if duration.is_zero() && !self.fill_only {
            return Err("duration 0: a run needs a positive duration".into());
        }
        if self.spin_us > 1_000_000 {
            return Err(format!("spin-us {}: at most 1000000", self.spin_us));
        }
        if self.requests == Some(0) {
            return Err("requests 0: give a positive count or leave it out".into());
        }
        if self.key_prefix.len() + 20 > 250
            || self.key_prefix.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(format!(
                "key prefix {:?}: at most 230 bytes, no spaces or control characters",
                self.key_prefix
            ));
        }
        let total_conns = (self.threads * self.conns) as u64;
        if self.verify {
            if value_min < VERIFY_HEADER {
                return Err(format!(
                    "--verify needs values of at least {VERIFY_HEADER} bytes (key index + version)"
                ));
            }
            if self.keys < total_conns {
                return Err(format!(
                    "--verify gives each connection its own keys: need keys >= connections ({total_conns})"
                ));
            }
        }
        let addr = resolve(&self.server, self.allow_remote)?;
        Ok(Config {
            addr,
            protocol: self.protocol,
            threads: self.threads,
            conns: self.conns,
            pipeline: self.pipeline,
            sets,
            gets,
            keys: self.keys,
            pattern,
            key_prefix: self.key_prefix.as_bytes().to_vec(),
            value_min,
            value_max,
            duration,
            requests: self.requests,
            warmup,
            verify: self.verify,
            fill: self.fill,
            fill_only: self.fill_only,
            spin: Duration::from_micros(self.spin_us),
            seed: self.seed,
            json: self.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Config, String> {
        let mut v = vec!["mcbench"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn defaults_are_valid_and_bounded() {
        let c = args(&[]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:11211".parse().unwrap());
        assert_eq!((c.threads, c.conns, c.pipeline), (1, 16, 1));
        assert_eq!((c.sets, c.gets), (1, 10));
        assert_eq!(c.pattern, KeyPattern::Uniform);
        assert_eq!((c.value_min, c.value_max), (32, 32));
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.requests, None);
    }

    #[test]
    fn parses_patterns_ratios_and_sizes() {
        let c = args(&[
            "--key-pattern",
            "zipf:1.2",
            "--ratio",
            "0:1",
            "-d",
            "10-2000",
        ])
        .unwrap();
        assert_eq!(c.pattern, KeyPattern::Zipf(1.2));
        assert_eq!((c.sets, c.gets), (0, 1));
        assert_eq!((c.value_min, c.value_max), (10, 2000));
        assert_eq!(
            args(&["--key-pattern", "zipf"]).unwrap().pattern,
            KeyPattern::Zipf(0.99)
        );
        assert_eq!(
            args(&["--key-pattern", "sequential"]).unwrap().pattern,
            KeyPattern::Sequential
        );
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &["--threads", "0"][..],
            &["--conns", "0"],
            &["--pipeline", "0"],
            &["--pipeline", "5000"],
            &["--keys", "0"],
            &["--ratio", "0:0"],
            &["--ratio", "1-10"],
            &["--ratio", "a:1"],
            &["--key-pattern", "gauss"],
            &["--key-pattern", "zipf:0"],
            &["--key-pattern", "zipf:-1"],
            &["--key-pattern", "zipf:x"],
            &["--key-pattern", "uniform:3"],
            &["-d", "0"],
            &["-d", "2000000"],
            &["-d", "100-10"],
            &["--duration", "0"],
            &["--duration", "-1"],
            &["--duration", "7200"],
            &["--duration", "NaN"],
            &["--warmup", "-1"],
            &["--requests", "0"],
            &["--spin-us", "2000000"],
            &["--key-prefix", "a b"],
            &["--verify", "-d", "8"],
            &["--verify", "--keys", "10", "-c", "16"],
            &["--fill", "--fill-only"],
            &["--threads", "x"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn refuses_non_loopback_unless_allowed() {
        let err = args(&["--server", "192.0.2.1:11211"]).unwrap_err();
        assert!(err.contains("--allow-remote"), "{err}");
        let c = args(&["--server", "192.0.2.1:11211", "--allow-remote"]).unwrap();
        assert_eq!(c.addr, "192.0.2.1:11211".parse().unwrap());
        assert!(args(&["--server", "[::1]:11211"]).is_ok());
        assert!(args(&["--server", "127.0.0.2:1"]).is_ok());
        assert!(args(&["--server", "nohost"]).is_err());
    }
}
