//! TLS (`-Z`) against the real server on 127.0.0.1: certificates made here (rcgen), a rustls
//! client for the text and binary protocols, `openssl s_client` for the chain, memtier's
//! `--tls` when it is installed; client certificates, reloads (SIGHUP, `refresh_certs`),
//! separate plaintext ports (`notls:`), bad input and a crowd of half-open handshakes.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A CA, a server certificate (chain: server + CA) and a client certificate, as files.
struct Pki {
    dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
    server: Certificate,
    client: Certificate,
    client_key: KeyPair,
}

fn leaf(cn: &str, client: bool, ca: &Certificate, ca_key: &KeyPair) -> (Certificate, KeyPair) {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    (p.signed_by(&key, ca, ca_key).unwrap(), key)
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("corecached-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "corecached test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = p.self_signed(&ca_key).unwrap();
        let (client, client_key) = leaf("corecached test client", true, &ca, &ca_key);
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
        std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).unwrap();
        let (server, server_key) = leaf("corecached test server", false, &ca, &ca_key);
        let pki = Pki {
            dir,
            ca,
            ca_key,
            server,
            client,
            client_key,
        };
        pki.write_server(&pki.server, &server_key);
        pki
    }

    /// Writes `cert` (with the CA after it) and its key where the server reads them.
    fn write_server(&self, cert: &Certificate, key: &KeyPair) {
        std::fs::write(
            self.path("chain.pem"),
            format!("{}{}", cert.pem(), self.ca.pem()),
        )
        .unwrap();
        std::fs::write(self.path("key.pem"), key.serialize_pem()).unwrap();
    }

    /// A fresh server certificate, written in place of the current one.
    fn renew(&self, cn: &str) -> Certificate {
        let (cert, key) = leaf(cn, false, &self.ca, &self.ca_key);
        self.write_server(&cert, &key);
        cert
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `-Z` and the chain and key options.
    fn args(&self) -> Vec<String> {
        vec![
            "-Z".into(),
            "-o".into(),
            format!(
                "ssl_chain_cert={},ssl_key={}",
                self.p("chain.pem"),
                self.p("key.pem")
            ),
        ]
    }

    fn client_config(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        Arc::new(if with_cert {
            let key = PrivateKeyDer::try_from(self.client_key.serialize_der()).unwrap();
            b.with_client_auth_cert(vec![self.client.der().clone()], key)
                .unwrap()
        } else {
            b.with_no_client_auth()
        })
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(pki: &Pki, more: &[&str]) -> Server {
    let mut args: Vec<String> = pki.args();
    args.extend(more.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&refs)
}

/// The first TLS address on the readiness line.
fn tls_addr(s: &Server) -> SocketAddr {
    tls_addrs(s)[0]
}

fn tls_addrs(s: &Server) -> Vec<SocketAddr> {
    let v: Vec<SocketAddr> = s
        .addrs()
        .iter()
        .filter_map(|a| a.strip_prefix("tls:")?.parse().ok())
        .collect();
    assert!(
        !v.is_empty(),
        "no TLS listener in {:?}\n{}",
        s.addrs(),
        s.log()
    );
    v
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> io::Result<Tls> {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let conn =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
            .map_err(io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

fn read_line(s: &mut impl Read) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        line.push(b[0]);
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn text(s: &mut Tls, req: &str) -> io::Result<String> {
    s.write_all(req.as_bytes())?;
    s.flush()?;
    read_line(s)
}

/// A text set then get of `value`, checked.
fn text_set_get(s: &mut Tls, key: &str, value: &[u8]) {
    s.write_all(format!("set {key} 5 0 {}\r\n", value.len()).as_bytes())
        .unwrap();
    s.write_all(value).unwrap();
    s.write_all(b"\r\n").unwrap();
    s.flush().unwrap();
    assert_eq!(read_line(s).unwrap(), "STORED");
    s.write_all(format!("get {key}\r\n").as_bytes()).unwrap();
    s.flush().unwrap();
    assert_eq!(
        read_line(s).unwrap(),
        format!("VALUE {key} 5 {}", value.len())
    );
    let mut got = vec![0u8; value.len() + 2];
    s.read_exact(&mut got).unwrap();
    assert!(got[..value.len()] == *value, "value of {key} differs");
    assert_eq!(read_line(s).unwrap(), "END");
}

fn frame(op: u8, key: &[u8], value: &[u8], extras: &[u8]) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut f = vec![0x80, op];
    f.extend_from_slice(&(key.len() as u16).to_be_bytes());
    f.push(extras.len() as u8);
    f.extend_from_slice(&[0, 0, 0]);
    f.extend_from_slice(&(body as u32).to_be_bytes());
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(extras);
    f.extend_from_slice(key);
    f.extend_from_slice(value);
    f
}

/// One binary response: (status, value).
fn binary_reply(s: &mut Tls) -> (u16, Vec<u8>) {
    let mut h = [0u8; 24];
    s.read_exact(&mut h).unwrap();
    assert_eq!(h[0], 0x81, "response magic");
    let status = u16::from_be_bytes([h[6], h[7]]);
    let extras = h[4] as usize;
    let key = u16::from_be_bytes([h[2], h[3]]) as usize;
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let mut b = vec![0u8; body];
    s.read_exact(&mut b).unwrap();
    (status, b[extras + key..].to_vec())
}

fn binary_set_get(s: &mut Tls, key: &[u8], value: &[u8]) {
    s.write_all(&frame(0x01, key, value, &[0, 0, 0, 7, 0, 0, 0, 0]))
        .unwrap();
    s.write_all(&frame(0x00, key, &[], &[])).unwrap();
    s.flush().unwrap();
    assert_eq!(binary_reply(s).0, 0, "binary set");
    let (status, got) = binary_reply(s);
    assert_eq!(status, 0, "binary get");
    assert!(got == value, "binary value differs");
}

/// `stats` (or `stats settings`) as a map.
fn stats(s: &mut Tls, group: &str) -> std::collections::HashMap<String, String> {
    s.write_all(format!("stats{group}\r\n").as_bytes()).unwrap();
    s.flush().unwrap();
    let mut m = std::collections::HashMap::new();
    loop {
        let l = read_line(s).unwrap();
        if l == "END" {
            return m;
        }
        let mut w = l.splitn(3, ' ');
        assert_eq!(w.next(), Some("STAT"), "{l}");
        m.insert(
            w.next().unwrap().to_string(),
            w.next().unwrap_or("").to_string(),
        );
    }
}

fn stat(s: &mut Tls, name: &str) -> u64 {
    stats(s, "")
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in stats"))
        .parse()
        .unwrap()
}

/// Whether a session on `addr` is refused: the handshake fails, or the first request gets no
/// answer before the server closes.
fn refused(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> bool {
    match connect(addr, config) {
        Err(_) => true,
        Ok(mut s) => !matches!(text(&mut s, "version\r\n"), Ok(l) if l.starts_with("VERSION")),
    }
}

/// Reads until the server closes (or `IO_TIMEOUT`); returns the bytes and whether it closed.
fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// The first bytes a rustls client sends: its ClientHello.
fn client_hello(config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut c =
        rustls::ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    hello
}

#[test]
fn text_and_binary_round_trip_over_tls() {
    let pki = Pki::new("roundtrip");
    let s = start(&pki, &[]);
    let cfg = pki.client_config(false);
    let mut c = connect(tls_addr(&s), &cfg).unwrap();
    assert!(text(&mut c, "version\r\n").unwrap().starts_with("VERSION "));
    text_set_get(&mut c, "small", b"hello");
    // Large values go out lent from the store and are encrypted on the way (several records,
    // several output chunks).
    let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    text_set_get(&mut c, "big", &big);
    // A pipeline of gets, answered in order.
    let mut req = String::new();
    for _ in 0..50 {
        req.push_str("get big\r\nget small\r\n");
    }
    c.write_all(req.as_bytes()).unwrap();
    c.flush().unwrap();
    for _ in 0..50 {
        assert_eq!(
            read_line(&mut c).unwrap(),
            format!("VALUE big 5 {}", big.len())
        );
        let mut got = vec![0u8; big.len() + 2];
        c.read_exact(&mut got).unwrap();
        assert!(got[..big.len()] == big[..]);
        assert_eq!(read_line(&mut c).unwrap(), "END");
        assert_eq!(read_line(&mut c).unwrap(), "VALUE small 5 5");
        assert_eq!(read_line(&mut c).unwrap(), "hello");
        assert_eq!(read_line(&mut c).unwrap(), "END");
    }
    let mut b = connect(tls_addr(&s), &cfg).unwrap();
    binary_set_get(&mut b, b"bin", b"binary over tls");
    binary_set_get(&mut b, b"binbig", &big);
    let st = stats(&mut c, "");
    assert_eq!(
        st.get("ssl_handshake_errors").map(String::as_str),
        Some("0")
    );
    assert!(st.contains_key("time_since_server_cert_refresh"));
    let set = stats(&mut c, " settings");
    assert_eq!(set["ssl_enabled"], "yes");
    assert_eq!(set["ssl_chain_cert"], pki.p("chain.pem"));
    assert_eq!(set["ssl_key"], pki.p("key.pem"));
    assert_eq!(set["ssl_verify_mode"], "0");
    assert_eq!(set["ssl_min_version"], "tlsv1.2");
    // quit: the server closes cleanly (close_notify, then the end of the stream).
    c.write_all(b"quit\r\n").unwrap();
    c.flush().unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("a close_notify before the end of the stream");
    assert!(rest.is_empty());
}

#[test]
fn epoll_backend_serves_tls() {
    let pki = Pki::new("epoll");
    let s = start(&pki, &["--io", "epoll"]);
    assert!(s.log().contains("epoll"), "{}", s.log());
    let cfg = pki.client_config(false);
    let mut c = connect(tls_addr(&s), &cfg).unwrap();
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 13) as u8).collect();
    text_set_get(&mut c, "e", &big);
    let mut b = connect(tls_addr(&s), &cfg).unwrap();
    binary_set_get(&mut b, b"eb", &big);
}

#[test]
fn openssl_s_client_sees_the_chain() {
    let pki = Pki::new("sclient");
    let s = start(&pki, &[]);
    let addr = tls_addr(&s);
    let child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-showcerts"])
        .args(["-servername", "localhost", "-CAfile", &pki.p("ca.pem")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("note: openssl is not installed; ./tools/test-all installs it; skipped");
        return;
    };
    let (_, out) = wait_bounded(&mut child, Duration::from_secs(30), "openssl s_client");
    assert_eq!(
        out.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "server certificate and CA expected:\n{out}"
    );
    assert!(out.contains("corecached test server"), "{out}");
    assert!(out.contains("corecached test CA"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
}

#[test]
fn client_certificates_when_asked() {
    let pki = Pki::new("mtls");
    let peer_port = common::external::free_port();
    let ca = format!("ssl_ca_cert={}", pki.p("ca.pem"));
    let mtls = format!("mtls:127.0.0.1:{peer_port}");
    // Default listener: mode 2 (require); an mtls: one requires too; a btls: one never asks.
    let btls_port = common::external::free_port();
    let btls = format!("btls:127.0.0.1:{btls_port}");
    let s = start(
        &pki,
        &[
            "-o",
            &format!("ssl_verify_mode=2,{ca}"),
            "-l",
            &mtls,
            "-l",
            &btls,
        ],
    );
    let addrs = tls_addrs(&s);
    assert_eq!(addrs.len(), 3, "{:?}", s.addrs());
    let anonymous = pki.client_config(false);
    let with_cert = pki.client_config(true);
    let default = addrs[0];
    let peer: SocketAddr = format!("127.0.0.1:{peer_port}").parse().unwrap();
    let nopeer: SocketAddr = format!("127.0.0.1:{btls_port}").parse().unwrap();
    assert!(
        refused(default, &anonymous),
        "no client certificate, mode 2"
    );
    assert!(refused(peer, &anonymous), "no client certificate, mtls:");
    let mut c = connect(default, &with_cert).unwrap();
    text_set_get(&mut c, "mtls", b"with a certificate");
    let mut p = connect(peer, &with_cert).unwrap();
    text_set_get(&mut p, "mtls2", b"mtls listener");
    let mut n = connect(nopeer, &anonymous).unwrap();
    text_set_get(&mut n, "btls", b"no certificate asked");
    assert!(stat(&mut c, "ssl_handshake_errors") >= 2);
    assert_eq!(stats(&mut c, " settings")["ssl_verify_mode"], "3");
    drop(s);

    // Mode 1 (request): a certificate is checked when sent, not required.
    let s = start(&pki, &["-o", &format!("ssl_verify_mode=1,{ca}")]);
    let mut a = connect(tls_addr(&s), &anonymous).unwrap();
    text_set_get(&mut a, "req", b"anonymous");
    let mut b = connect(tls_addr(&s), &with_cert).unwrap();
    text_set_get(&mut b, "req", b"certified");
}

/// Waits (bounded) until a new session on `addr` presents `cert`.
fn wait_for_cert(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>, cert: &Certificate) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = connect(addr, cfg).unwrap();
        let seen = c.conn.peer_certificates().unwrap()[0].clone();
        if seen.as_ref() == cert.der().as_ref() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate never showed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_and_refresh_certs_reload_for_new_connections() {
    let pki = Pki::new("reload");
    let s = start(&pki, &[]);
    let addr = tls_addr(&s);
    let cfg = pki.client_config(false);
    let mut old = connect(addr, &cfg).unwrap();
    let first: CertificateDer<'static> = old.conn.peer_certificates().unwrap()[0].clone();
    assert_eq!(first.as_ref(), pki.server.der().as_ref());
    text_set_get(&mut old, "before", b"reload");

    let second = pki.renew("corecached test server 2");
    s.signal(libc::SIGHUP);
    wait_for_cert(addr, &cfg, &second);
    // The session from before keeps working, with its certificate.
    text_set_get(&mut old, "after-sighup", b"still here");

    let third = pki.renew("corecached test server 3");
    assert_eq!(text(&mut old, "refresh_certs\r\n").unwrap(), "OK");
    wait_for_cert(addr, &cfg, &third);
    text_set_get(&mut old, "after-refresh", b"still here");

    // A broken file: memcached's error line, and the certificate in use stays.
    std::fs::write(pki.path("chain.pem"), "not a certificate\n").unwrap();
    let err = text(&mut old, "refresh_certs\r\n").unwrap();
    assert!(
        err.starts_with("Error loading the certificate chain: "),
        "{err}"
    );
    s.signal(libc::SIGHUP);
    let mut new = connect(addr, &cfg).unwrap();
    assert_eq!(
        new.conn.peer_certificates().unwrap()[0].as_ref(),
        third.der().as_ref()
    );
    text_set_get(&mut new, "after-error", b"served");
    assert!(
        s.log().contains("Could not reload TLS certificates"),
        "{}",
        s.log()
    );
}

#[test]
fn refresh_certs_without_tls() {
    let s = Server::start(&[]);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.write_all(b"refresh_certs\r\n").unwrap();
    assert_eq!(read_line(&mut c).unwrap(), "Error TLS not enabled");
}

#[test]
fn plaintext_client_on_the_tls_port_is_closed() {
    let pki = Pki::new("plain");
    let s = start(&pki, &[]);
    let addr = tls_addr(&s);
    let mut p = TcpStream::connect(addr).unwrap();
    p.write_all(b"version\r\n").unwrap();
    let (got, closed) = read_to_close(&mut p);
    assert!(closed, "the server kept a plaintext client open");
    assert!(!String::from_utf8_lossy(&got).contains("VERSION"));
    // Binary protocol bytes too.
    let mut b = TcpStream::connect(addr).unwrap();
    b.write_all(&frame(0x0b, b"", b"", &[])).unwrap();
    assert!(read_to_close(&mut b).1);
    let cfg = pki.client_config(false);
    let mut c = connect(addr, &cfg).unwrap();
    assert_eq!(stat(&mut c, "ssl_handshake_errors"), 2);
    text_set_get(&mut c, "k", b"still serving");
}

#[test]
fn garbage_during_the_handshake_is_counted_and_closed() {
    let pki = Pki::new("garbage");
    let s = start(&pki, &[]);
    let addr = tls_addr(&s);
    let cfg = pki.client_config(false);
    // A record header announcing a handshake, then noise.
    let mut g = TcpStream::connect(addr).unwrap();
    let mut bytes = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    bytes.extend((0..64u32).map(|i| (i * 37 % 256) as u8));
    g.write_all(&bytes).unwrap();
    assert!(read_to_close(&mut g).1);
    // Half a real ClientHello, then noise where the rest should be.
    let hello = client_hello(&cfg);
    let mut h = TcpStream::connect(addr).unwrap();
    h.write_all(&hello[..hello.len() / 2]).unwrap();
    h.write_all(&[0xff; 4096]).unwrap();
    assert!(read_to_close(&mut h).1);
    // Noise after a complete ClientHello.
    let mut n = TcpStream::connect(addr).unwrap();
    n.write_all(&hello).unwrap();
    n.write_all(&[0x17, 0x03, 0x03, 0x00, 0x10]).unwrap();
    n.write_all(&[0x55; 16]).unwrap();
    assert!(read_to_close(&mut n).1);
    let mut c = connect(addr, &cfg).unwrap();
    assert_eq!(stat(&mut c, "ssl_handshake_errors"), 3);
    text_set_get(&mut c, "k", b"still serving");
}

#[test]
fn notls_listener_serves_plaintext_beside_tls() {
    let pki = Pki::new("notls");
    let plain_port = common::external::free_port();
    let notls = format!("notls:127.0.0.1:{plain_port}");
    let s = start(&pki, &["-l", &notls]);
    let plain: SocketAddr = format!("127.0.0.1:{plain_port}").parse().unwrap();
    assert!(
        s.addrs().iter().any(|a| *a == plain.to_string()),
        "{:?}",
        s.addrs()
    );
    let mut t = connect(tls_addr(&s), &pki.client_config(false)).unwrap();
    text_set_get(&mut t, "shared", b"one store");
    let mut raw = TcpStream::connect(plain).unwrap();
    raw.write_all(b"get shared\r\n").unwrap();
    assert_eq!(read_line(&mut raw).unwrap(), "VALUE shared 5 9");
    assert_eq!(read_line(&mut raw).unwrap(), "one store");
    // The plaintext port speaks plaintext only.
    let mut tls_on_plain = TcpStream::connect(plain).unwrap();
    tls_on_plain.write_all(b"version\r\n").unwrap();
    assert!(read_line(&mut tls_on_plain)
        .unwrap()
        .starts_with("VERSION "));
}

#[test]
fn startup_errors_are_clear() {
    let pki = Pki::new("errors");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-Z".into()], "certificate chain"),
        (
            vec![
                "-Z".into(),
                "-o".into(),
                "ssl_chain_cert=/nonexistent/chain.pem".into(),
            ],
            "/nonexistent/chain.pem",
        ),
        (
            vec![
                "-Z".into(),
                "--ssl-chain-cert".into(),
                pki.p("chain.pem"),
                "--ssl-key".into(),
                pki.p("client-key.pem"),
            ],
            "Error validating the certificate",
        ),
        (
            vec![
                "-Z".into(),
                "--ssl-chain-cert".into(),
                pki.p("chain.pem"),
                "--ssl-key".into(),
                pki.p("key.pem"),
                "--ssl-verify-mode".into(),
                "2".into(),
            ],
            "ssl_ca_cert",
        ),
        (
            vec!["-l".into(), "notls:127.0.0.1".into()],
            "'notls' option is valid only when SSL is enabled",
        ),
        (
            vec!["-Z".into(), "-o".into(), "ssl_verify_mode=9".into()],
            "Invalid ssl_verify_mode",
        ),
    ];
    for (args, want) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let f = Server::try_start(&refs).err().expect("refused");
        assert!(
            f.status.is_some_and(|s| !s.success()),
            "{args:?}: {:?}",
            f.status
        );
        assert!(
            f.stderr.contains(want),
            "{args:?}: want {want:?} in\n{}",
            f.stderr
        );
    }
}

/// 10,000 clients send half a ClientHello and then nothing: the server's memory stays within
/// `-m` plus 64 MiB and other clients keep being served.
#[test]
fn ten_thousand_half_open_handshakes_keep_memory_bounded() {
    const CROWD: usize = 10_000;
    const MEM_MIB: u64 = 64;
    const RSS_LIMIT_KIB: u64 = (MEM_MIB + 64) * 1024;
    let crowd = raise_nofile(CROWD as u64 + 512).min(CROWD);
    if crowd < CROWD {
        eprintln!("note: RLIMIT_NOFILE allows {crowd} half-open handshakes, not {CROWD}");
    }
    let pki = Pki::new("loris");
    let s = start(&pki, &["-m", &MEM_MIB.to_string(), "-c", "20000"]);
    let addr = tls_addr(&s);
    let cfg = pki.client_config(false);
    let mut good = connect(addr, &cfg).unwrap();
    text_set_get(&mut good, "before", b"crowd");
    let before = s.rss_kib();
    let hello = client_hello(&cfg);
    let half = &hello[..hello.len() / 2];
    let mut peak = before;
    let mut crowd_socks = Vec::with_capacity(crowd);
    for i in 0..crowd {
        let mut t = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
        t.write_all(half).unwrap();
        crowd_socks.push(t);
        if i % 1000 == 999 {
            peak = peak.max(s.rss_kib());
            // The others keep being served, on the old session and on new ones.
            text_set_get(&mut good, &format!("during-{i}"), b"served");
            let mut fresh = connect(addr, &cfg).unwrap();
            text_set_get(&mut fresh, "fresh", b"new session");
        }
    }
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(s.rss_kib());
    }
    eprintln!(
        "{crowd} half-open handshakes: RSS before {before} KiB, peak {peak} KiB \
         (limit {RSS_LIMIT_KIB} KiB)"
    );
    assert!(peak < RSS_LIMIT_KIB, "RSS reached {peak} KiB");
    text_set_get(&mut good, "after", b"served");
    drop(crowd_socks);
}

/// Raises the soft descriptor limit towards `want` (children inherit it); returns how many
/// descriptors a crowd may use.
fn raise_nofile(want: u64) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` into `lim`, which is valid and writable.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one `struct rlimit` from `raised`, valid for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    (lim.rlim_cur.saturating_sub(512)) as usize
}

const MEMTIER: &str = "/work/ext/memtier/memtier_benchmark";

#[test]
fn memtier_benchmark_over_tls() {
    if !Path::new(MEMTIER).exists() {
        eprintln!("note: {MEMTIER} is not here; memtier over TLS skipped");
        return;
    }
    let pki = Pki::new("memtier");
    let s = start(&pki, &[]);
    let addr = tls_addr(&s);
    for protocol in ["memcache_text", "memcache_binary"] {
        let mut child = Command::new(MEMTIER)
            .args(["-s", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["--tls", "--tls-skip-verify", "--protocol", protocol])
            .args(["-t", "1", "-c", "4", "-n", "2000", "--ratio", "1:4"])
            .args([
                "--data-size",
                "2000",
                "--key-maximum",
                "500",
                "--hide-histogram",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (status, out) = wait_bounded(
            &mut child,
            Duration::from_secs(120),
            &format!("memtier ({protocol})"),
        );
        assert!(status.success(), "memtier {protocol}: {status}\n{out}");
        assert!(out.contains("Totals"), "memtier {protocol}:\n{out}");
    }
    let mut c = connect(addr, &pki.client_config(false)).unwrap();
    assert_eq!(stat(&mut c, "ssl_handshake_errors"), 0);
}

/// Waits for `child` at most `limit` (killing it and failing the test past that); its exit
/// status and what it wrote to its piped stdout.
fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status, out)
}
