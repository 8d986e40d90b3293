//! hitratio: generates the key traces of `perf/hit-ratio` and replays them against a
//! memcached-protocol server as a look-aside cache (get; on a miss, set).
//!
//! `hitratio gen` writes a trace (libCacheSim's oracleGeneral format, see [`trace`]);
//! `hitratio replay` sends one over the text protocol, a few pipelined gets in flight (see [`replay`])
//! and prints one JSON object: the client's miss counts (per window and over the measured part)
//! and the server's `stats` at the end of the warm-up and at the end. Targets must be loopback.

mod replay;
#[path = "../mcbench/rng.rs"]
#[allow(dead_code)]
mod rng;
mod trace;
#[path = "../mcbench/zipf.rs"]
mod zipf;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Trace generator and look-aside replayer for hit-ratio measurements.
#[derive(Debug, Parser)]
#[command(
    name = "hitratio",
    about = "Trace generator and look-aside replayer (perf/hit-ratio)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write a synthetic trace (oracleGeneral records).
    Gen {
        /// zipf, scan or shift.
        #[arg(long, default_value = "zipf")]
        kind: String,
        /// Requests in all.
        #[arg(long)]
        requests: u64,
        /// Zipf key space (ids 0..keys).
        #[arg(long)]
        keys: u64,
        /// Zipf exponent.
        #[arg(long, default_value_t = 0.99)]
        alpha: f64,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Object size written into every record (libCacheSim's size).
        #[arg(long)]
        obj_size: u32,
        /// scan: index of the first scan request.
        #[arg(long)]
        scan_at: Option<u64>,
        /// scan: never-seen keys in the scan.
        #[arg(long)]
        scan_keys: Option<u64>,
        /// shift: index of the first request with permuted ranks (default: half the trace).
        #[arg(long)]
        shift_at: Option<u64>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replay a trace as a look-aside cache and print JSON.
    Replay {
        /// Server, host:port (loopback).
        #[arg(short = 's', long)]
        server: String,
        /// Trace file.
        #[arg(long)]
        trace: PathBuf,
        /// Value bytes of every set.
        #[arg(long)]
        value_size: usize,
        /// Requests of warm-up (not measured).
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// Most gets in flight (pipeline depth).
        #[arg(long, default_value_t = 32)]
        depth: usize,
        /// Requests per window of the per-window miss counts.
        #[arg(long, default_value_t = 1000)]
        window: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600.0)]
        max_seconds: f64,
    },
}

fn json_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .filter(|(k, v)| {
            k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && v.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    format!("{{{}}}", items.join(","))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Gen {
            kind,
            requests,
            keys,
            alpha,
            seed,
            obj_size,
            scan_at,
            scan_keys,
            shift_at,
            out,
        } => {
            let kind = match kind.as_str() {
                "zipf" => trace::Kind::Zipf,
                "scan" => trace::Kind::Scan {
                    at: scan_at.ok_or("scan needs --scan-at")?,
                    keys: scan_keys.ok_or("scan needs --scan-keys")?,
                },
                "shift" => trace::Kind::Shift {
                    at: shift_at.unwrap_or(requests / 2),
                },
                k => return Err(format!("kind {k:?}: expected zipf, scan or shift")),
            };
            if requests == 0 || requests > u64::from(u32::MAX) {
                return Err("requests: 1..=4294967295".into());
            }
            if keys == 0 || keys > 1 << 32 {
                return Err("keys: 1..=2^32".into());
            }
            let spec = trace::Spec {
                requests,
                keys,
                alpha,
                seed,
                obj_size,
                kind,
            };
            let ids = trace::generate(&spec)?;
            trace::write(&out, &ids, obj_size).map_err(|e| format!("{}: {e}", out.display()))
        }
        Cmd::Replay {
            server,
            trace: path,
            value_size,
            warmup,
            depth,
            window,
            max_seconds,
        } => {
            let addr = resolve_loopback(&server)?;
            if !(1..=1024).contains(&depth) {
                return Err("depth: 1..=1024".into());
            }
            if !(1..=1024 * 1024).contains(&value_size) {
                return Err("value-size: 1..=1048576".into());
            }
            if !(max_seconds.is_finite() && max_seconds > 0.0 && max_seconds <= 3600.0) {
                return Err("max-seconds: in (0, 3600]".into());
            }
            let ids = trace::read(&path)?;
            let p = replay::Params {
                addr,
                value_size,
                warmup,
                depth,
                window,
                max_time: Duration::from_secs_f64(max_seconds),
            };
            let o = replay::replay(&ids, &p)?;
            let wm: Vec<String> = o.window_misses.iter().map(u64::to_string).collect();
            println!(
                "{{\"requests\":{},\"warmup\":{},\"measured_misses\":{},\"corrections\":{},\
                 \"corrections_total\":{},\"seconds\":{:.3},\
                 \"window\":{},\"window_misses\":[{}],\"stats_before\":{},\"stats_after\":{}}}",
                o.requests,
                warmup.min(o.requests),
                o.measured_misses,
                o.measured_corrections,
                o.corrections_total,
                o.seconds,
                window,
                wm.join(","),
                json_map(&o.stats_before),
                json_map(&o.stats_after)
            );
            Ok(())
        }
    }
}

/// Resolves a loopback `host:port`.
fn resolve_loopback(server: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let a = server
        .to_socket_addrs()
        .map_err(|e| format!("server {server:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("server {server:?}: no address"))?;
    if !a.ip().is_loopback() {
        return Err(format!("server {server:?}: not a loopback address"));
    }
    Ok(a)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hitratio: {e}");
            ExitCode::FAILURE
        }
    }
}
