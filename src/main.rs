//! The `corecached` binary: parse flags, set up the process (`-d`, `-P`, `-k`, `-r`, `-u`) and
//! logging, run the server.

use std::process::ExitCode;

use clap::Parser;
use corecached::config::{Args, HELP};
use corecached::process;

/// memcached's exit statuses (sysexits.h) where it has one for the same failure.
const EX_NOUSER: u8 = 67;
const EX_OSERR: u8 = 71;

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // As memcached's getopt: a message and exit status 1.
            let _ = e.print();
            return ExitCode::from(1);
        }
    };
    if args.help {
        print!("corecached {}\n{HELP}", corecached::VERSION_STRING);
        return ExitCode::SUCCESS;
    }
    if args.version {
        println!("{}", corecached::VERSION_STRING);
        return ExitCode::SUCCESS;
    }
    if args.license {
        println!(
            "corecached {}\nLicensed under the MIT license or the Apache License 2.0, at your option.",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let mut config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corecached: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    // As memcached: -u matters only when started as root; an unknown user is refused.
    let run_as = match (&config.user, process::is_root()) {
        (Some(name), true) => match process::lookup_user(name) {
            Some(who) => Some(who),
            None => {
                eprintln!("corecached: can't find the user {name} to switch to");
                return ExitCode::from(EX_NOUSER);
            }
        },
        _ => None,
    };
    if config.enable_coredumps {
        if let Err(e) = process::maximize_core_limit() {
            eprintln!("corecached: warning: -r: cannot raise the core file limit: {e}");
        }
    }
    // Paths stay valid after the daemon's chdir to /.
    for p in [&mut config.pidfile, &mut config.unix_socket]
        .into_iter()
        .flatten()
    {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
    let daemon = if config.daemon {
        match process::daemonize(config.enable_coredumps) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("corecached: cannot daemonize: {e}");
                return ExitCode::from(EX_OSERR);
            }
        }
    } else {
        None
    };
    init_logging(config.verbosity);
    for w in &config.warnings {
        log::warn!("{w}");
    }
    if process::is_root() && config.user.is_none() {
        // memcached refuses to run as root without -u; corecached runs, and says so.
        log::warn!("running as root: pass -u USER to switch to an unprivileged user after binding");
    }
    if config.lock_memory {
        if let Err(e) = process::lock_memory() {
            log::warn!("-k: mlockall failed ({e}): proceeding without locked memory");
        }
    }
    let pidfile = config.pidfile.clone();
    if let Some(p) = &pidfile {
        if let Err(e) = process::write_pidfile(p) {
            log::error!("cannot write the pid file {}: {e}", p.display());
            eprintln!("corecached: cannot write the pid file {}: {e}", p.display());
            return ExitCode::from(1);
        }
    }
    let hooks = corecached::server::Hooks {
        run_as,
        on_ready: daemon.map(|d| Box::new(move || d.ready()) as Box<dyn FnOnce()>),
    };
    let result = corecached::server::run_with(config, hooks);
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    match result {
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
