//! Helpers for tests that drive programs other than corecached: a bounded command runner, free
//! ports, temporary directories, nutcracker, and Debian's memcached as the reference server.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program args` for at most `limit`, returning (success, stdout + stderr).
pub fn run_bounded(program: &str, args: &[&str], limit: Duration) -> (bool, String) {
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

/// A free 127.0.0.1 port: bind port 0, read it, close. Another process may take it before the
/// caller binds it, so callers retry when their program fails to listen.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free 127.0.0.1 UDP port, as [`free_port`] finds a TCP one.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port")
        .port()
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory whose name carries `tag` and this process's id.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("corecached-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `cmd` listening on 127.0.0.1:`port` and waits until that port accepts; `None` when the
/// process exited first (most likely another process took the port) or did not listen in time.
fn spawn_listening(mut cmd: Command, port: u16, limit: Duration) -> Option<Child> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); ./tools/test-all installs the Debian packages")
        });
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A running nutcracker (twemproxy), killed by PID on drop.
pub struct Nutcracker {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Nutcracker {
    /// Starts nutcracker with one pool over `servers` (`host:port:weight` entries); `settings`
    /// are extra pool lines (`hash: md5`, `distribution: ketama`, ...), two-space indented.
    /// Retries on a port race; waits until it accepts connections.
    pub fn start(settings: &[&str], servers: &[String]) -> Nutcracker {
        for attempt in 0..5 {
            let port = free_port();
            let dir = TempDir::new(&format!("nutcracker-{port}-{attempt}"));
            let mut conf = format!("pool:\n  listen: 127.0.0.1:{port}\n  timeout: 5000\n");
            for s in settings {
                conf.push_str(&format!("  {s}\n"));
            }
            conf.push_str("  servers:\n");
            for s in servers {
                conf.push_str(&format!("    - {s}\n"));
            }
            let conf_path = dir.path().join("nutcracker.yml");
            std::fs::write(&conf_path, conf).unwrap();
            let mut cmd = Command::new("/usr/sbin/nutcracker");
            cmd.arg("-c")
                .arg(&conf_path)
                .args(["-a", "127.0.0.1", "-s", &free_port().to_string(), "-o"])
                .arg(dir.path().join("nutcracker.log"))
                .arg("-p")
                .arg(dir.path().join("nutcracker.pid"));
            if let Some(child) = spawn_listening(cmd, port, Duration::from_secs(10)) {
                return Nutcracker {
                    child,
                    addr: ([127, 0, 0, 1], port).into(),
                    _dir: dir,
                };
            }
        }
        panic!("nutcracker did not start");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Nutcracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's memcached (1.6.18), the reference the tests compare corecached with; killed by PID
/// on drop.
pub struct Memcached {
    child: Child,
    port: u16,
    udp: Option<SocketAddr>,
}

/// Where Debian installs memcached (`./tools/test-all` installs the package).
const MEMCACHED: &str = "/usr/bin/memcached";

impl Memcached {
    /// `memcached -u nobody -U 0 -l 127.0.0.1 -p PORT ARGS` on a free port, once it accepts.
    pub fn start(args: &[&str]) -> Memcached {
        Memcached::launch(args, false)
    }

    /// As [`Memcached::start`]; `None` (and a SKIPPED line) when memcached is not installed.
    pub fn try_start(args: &[&str]) -> Option<Memcached> {
        Memcached::installed().then(|| Memcached::start(args))
    }

    /// As [`Memcached::try_start`], with its UDP port (`-U`) on a free port too.
    pub fn try_start_with_udp(args: &[&str]) -> Option<Memcached> {
        Memcached::installed().then(|| Memcached::launch(args, true))
    }

    fn installed() -> bool {
        let there = std::path::Path::new(MEMCACHED).exists();
        if !there {
            eprintln!("SKIPPED: {MEMCACHED} is not installed (tools/test-all installs it)");
        }
        there
    }

    /// A port the kernel just handed out is free unless someone takes it in between; then
    /// memcached exits and the next attempt picks others.
    fn launch(args: &[&str], with_udp: bool) -> Memcached {
        for _ in 0..5 {
            let port = free_port();
            let udp_port = if with_udp { free_udp_port() } else { 0 };
            let mut cmd = Command::new(MEMCACHED);
            cmd.args(["-u", "nobody", "-l", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .arg("-U")
                .arg(udp_port.to_string())
                .args(args);
            if let Some(child) = spawn_listening(cmd, port, Duration::from_secs(10)) {
                let udp = with_udp.then(|| SocketAddr::from(([127, 0, 0, 1], udp_port)));
                return Memcached { child, port, udp };
            }
        }
        panic!("memcached did not start on free ports in 5 attempts");
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its TCP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its UDP address (started with [`Memcached::try_start_with_udp`]).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp.expect("memcached was started without UDP")
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
