//! The systemd face: the units in tools/systemd pass `systemd-analyze verify`, the server serves
//! on a socket systemd-socket-activate passes it, refuses a passed socket it cannot serve, and
//! tells NOTIFY_SOCKET READY=1, WATCHDOG=1 and STOPPING=1 at the right moments.

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corecached");

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("corecached-systemd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills and reaps the child on drop, whatever the test did.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill takes no pointers; the pid is our own live child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = scratch("verify");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/systemd");
    let service = std::fs::read_to_string(units.join("corecached.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/corecached "));
    assert!(service.contains("Type=notify"));
    std::fs::write(
        dir.join("corecached.service"),
        service.replace("/usr/bin/corecached", BIN),
    )
    .unwrap();
    std::fs::copy(
        units.join("socket/corecached.socket"),
        dir.join("corecached.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("corecached.service"))
        .arg(dir.join("corecached.socket"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn notify_socket_hears_ready_watchdog_and_stopping() {
    let dir = scratch("notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = free_port();
    let mut cmd = Server::command(&["-p", &port.to_string(), "-l", "127.0.0.1", "-t", "2"]);
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "300000")
        .stderr(Stdio::null());
    let mut child = Reaped(cmd.spawn().unwrap());
    let mut buf = [0u8; 4096];
    let recv = |buf: &mut [u8]| {
        let n = sock.recv(buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv(&mut buf);
    assert!(first.contains("READY=1\n"), "{first:?}");
    assert!(
        first.contains(&format!("STATUS=listening on 127.0.0.1:{port}")),
        "{first:?}"
    );
    // READY means serving.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"version\r\n").unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"VERSION "));
    // Pings at half the watchdog period while every shard answers.
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(recv(&mut buf), "WATCHDOG=1\n");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    terminate(&mut child.0);
    let mut stopping = false;
    for _ in 0..5 {
        let m = recv(&mut buf);
        if m.contains("STOPPING=1\n") {
            stopping = true;
            break;
        }
        assert_eq!(m, "WATCHDOG=1\n");
    }
    assert!(stopping, "STOPPING=1 after SIGTERM");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_notify_socket_nothing_is_sent_and_the_server_runs() {
    // No NOTIFY_SOCKET, no LISTEN_FDS: the ordinary start (the rest of the suite is this too).
    let server = Server::start(&["-t", "1"]);
    let mut c = server.client();
    c.set(b"k", b"v");
    assert_eq!(c.get(b"k"), Some(b"v".to_vec()));
}

/// Starts `systemd-socket-activate ARGS corecached SERVER_ARGS`, which execs the server on the
/// first connection (or datagram) to `addr`.
fn activate(activate_args: &[&str], server_args: &[&str]) -> Reaped {
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(activate_args)
        .arg(BIN)
        .args(server_args)
        .args(common::io_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Reaped(cmd.spawn().unwrap())
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

#[test]
fn serves_on_the_socket_systemd_socket_activate_passes() {
    if !have("systemd-socket-activate") {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // -p 1 would need root and another port: it must not be bound at all.
    let mut child = activate(&["-l", &addr], &["-t", "2", "-p", "1", "-l", "127.0.0.1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match TcpStream::connect(&addr) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"set a 0 0 1\r\nx\r\nget a\r\n").unwrap();
    let want = b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n";
    let mut got = vec![0u8; want.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    // More connections are accepted on the same passed socket.
    let mut d = TcpStream::connect(&addr).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    d.write_all(b"get a\r\n").unwrap();
    let mut got = vec![0u8; b"VALUE a 0 1\r\nx\r\nEND\r\n".len()];
    d.read_exact(&mut got).unwrap();
    assert_eq!(got, b"VALUE a 0 1\r\nx\r\nEND\r\n");
    drop((c, d));
    let status = terminate(&mut child.0);
    let log = stderr_of(&mut child.0);
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("passed by the service manager"), "{log}");
}

#[test]
fn a_passed_datagram_socket_is_a_startup_error() {
    if !have("systemd-socket-activate") {
        eprintln!("skipped: systemd-socket-activate is not installed");
        return;
    }
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = activate(&["--datagram", "-l", &addr], &["-t", "1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let status = loop {
        // The datagram that makes systemd-socket-activate exec the server.
        let _ = probe.send_to(b"x", &addr);
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = stderr_of(&mut child.0);
    assert!(!status.success());
    assert!(
        log.contains("is not a listening TCP or unix stream socket"),
        "{log}"
    );
}
