//! mcbench: a closed-loop load generator for memcached-protocol servers.
//!
//! Each client thread drives its connections; each connection keeps `--pipeline` requests in
//! flight, a set:get mix over a key space drawn sequentially, uniformly or by Zipf. Every reply is
//! timed into an hdrhistogram; the run ends at `--duration` or `--requests`, whichever first.
//! `--verify` checks every returned value, `--fill` sets every key first. Targets must be loopback
//! unless `--allow-remote`.
//!
//! Modules: [`args`] options and validation, [`rng`] / [`zipf`] random draws, [`keys`] key choice
//! and verify-mode values, [`proto`] the wire seam, [`worker`] the connection loop, [`stats`]
//! counters and histograms, [`report`] table and JSON.

mod args;
mod keys;
mod proto;
mod report;
mod rng;
mod stats;
mod worker;
mod zipf;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Args, Protocol};
use crate::worker::{run_phases, Phase};

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcbench: {e}");
            return ExitCode::from(2);
        }
    };
    let phases: &[Phase] = if cfg.fill_only {
        &[Phase::Fill]
    } else if cfg.fill {
        &[Phase::Fill, Phase::Run]
    } else {
        &[Phase::Run]
    };
    let results = match cfg.protocol {
        Protocol::Binary => run_phases::<proto::Binary>(&cfg, phases),
        Protocol::Text => run_phases::<proto::Text>(&cfg, phases),
    };
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcbench: {e}");
            return ExitCode::from(1);
        }
    };
    let named: Vec<(&str, &worker::PhaseResult)> = phases
        .iter()
        .zip(&results)
        .map(|(p, r)| (if *p == Phase::Fill { "fill" } else { "run" }, r))
        .collect();
    if cfg.json {
        println!("{}", report::json(&cfg, &named));
    } else {
        print!("{}", report::table(&cfg, &named));
    }
    let failed = results
        .iter()
        .any(|r| r.stats.verify_errors > 0 || !r.failures.is_empty());
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
