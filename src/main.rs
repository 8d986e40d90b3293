//! The `corecached` binary: parse flags, set up logging, run the server.

use std::process::ExitCode;

use clap::Parser;
use corecached::config::Args;

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    let args = Args::parse();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corecached: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.verbosity);
    match corecached::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("corecached: {e}");
            ExitCode::from(1)
        }
    }
}

/// Info by default (lifecycle lines such as the readiness line), `-v` debug (connections),
/// `-vv` trace; `RUST_LOG` overrides.
fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

/// Large buffers (a 512 KiB value's reply or read buffer) come from the heap and are reused:
/// mapped on their own, as glibc does from 128 KiB up, each one cost a fresh mapping, a page fault
/// per 4 KiB and an unmap, request after request (512 KiB gets: 614 -> 225 µs of server CPU each).
/// Fixed thresholds (they also stop glibc's adaptive ones from drifting); the heap goes back to
/// the system by `malloc_trim` once clients have left, not by trimming its top on every free.
fn return_large_buffers_to_the_system() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
