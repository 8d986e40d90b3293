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

/// Connection buffers come and go with clients; glibc's adaptive threshold would keep freed
/// large buffers in its heap after a crowd of clients left. A fixed threshold maps every buffer
/// of 128 KiB or more on its own, so freeing it returns it to the system at once.
fn return_large_buffers_to_the_system() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable; it is called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
