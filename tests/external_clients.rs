//! Third-party clients against the real server: libmemcached's `memccapable` (the binary-protocol
//! conformance judge) and pylibmc with `binary=True`. `./tools/test-all` installs both from Debian.

mod common;

use common::Server;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program args` for at most `limit`, returning (success, stdout + stderr).
fn run_bounded(program: &str, args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); ./tools/test-all installs the Debian packages")
        });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Drain both pipes on threads so a chatty tool never blocks on a full pipe.
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = out.join().unwrap() + &err.join().unwrap();
    match status {
        Some(status) => (status.success(), text),
        None => (false, format!("{text}\n(killed after {limit:?})")),
    }
}

#[test]
fn memccapable_binary_reports_every_test_as_pass() {
    let server = Server::start(&["-t", "2"]);
    let port = server.port().to_string();
    let (ok, out) = run_bounded(
        "memccapable",
        &["-b", "-h", "127.0.0.1", "-p", &port],
        Duration::from_secs(120),
    );
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("[FAIL]") || l.contains("[skip]"))
        .collect();
    assert!(
        ok && failed.is_empty() && out.contains("All tests passed"),
        "memccapable -b did not pass:\n{out}\nserver log:\n{}",
        server.log()
    );
    // Every opcode memccapable exercises must have been reported.
    let passed = out.lines().filter(|l| l.contains("[pass]")).count();
    assert!(passed >= 27, "only {passed} binary tests ran:\n{out}");
}

#[test]
fn pylibmc_binary_client_works_across_shards() {
    let server = Server::start(&["-t", "4"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pylibmc_check.py");
    let target = format!("127.0.0.1:{}", server.port());
    // Debian's python3-pylibmc is visible only to Debian's interpreter.
    let (ok, out) = run_bounded(
        "/usr/bin/python3",
        &[script.to_str().unwrap(), &target],
        Duration::from_secs(60),
    );
    assert!(
        ok && out.contains("all checks passed"),
        "pylibmc check failed:\n{out}\nserver log:\n{}",
        server.log()
    );
}
