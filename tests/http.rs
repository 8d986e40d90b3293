//! The HTTP face (`--http-listen`) against the real server: the key API (round trips shared
//! with the memcached protocols, TTL, batch, errors, keep-alive, pipelining, slow clients),
//! `/health`, and `/metrics` (Prometheus' own `promtool` and a real Prometheus scraping it),
//! driven by a small client here, by curl, and by Python's `requests`. `./tools/test-all`
//! installs curl, prometheus (with promtool) and python3-requests from Debian.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::external::{free_port, run_bounded, TempDir};
use common::Server;
use serde_json::{json, Value};

/// A server with `--http-listen 127.0.0.1:0` and `args`; its HTTP address.
fn start(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--http-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let http = server
        .addrs()
        .iter()
        .find_map(|a| a.strip_prefix("http:"))
        .unwrap_or_else(|| {
            panic!(
                "no http: address on the readiness line: {:?}",
                server.addrs()
            )
        })
        .parse()
        .expect("an http address");
    (server, http)
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} (status {})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client over one connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the HTTP port");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn request_bytes(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n").into_bytes();
        if let Some(body) = body {
            req.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        req.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            req.extend_from_slice(body);
        }
        req
    }

    fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>) {
        let req = Client::request_bytes(method, path, body);
        self.stream.write_all(&req).expect("send a request");
    }

    /// The next response; `None` when the server closed the connection first.
    fn try_read(&mut self) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) =
                resp.parse(&self.buf).expect("a well-formed response")
            {
                let status = resp.code.unwrap();
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .expect("a Content-Length");
                while self.buf.len() < head + len {
                    if !self.fill() {
                        panic!("connection closed inside a response body");
                    }
                }
                let body = self.buf[head..head + len].to_vec();
                self.buf.drain(..head + len);
                return Some(Response {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn read(&mut self) -> Response {
        self.try_read()
            .expect("a response before the connection closed")
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("reading a response: {e}"),
        }
    }

    fn call(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        self.send(method, path, body);
        self.read()
    }

    fn put(&mut self, key: &str, body: &Value) -> Response {
        let body = body.to_string();
        self.call("PUT", &format!("/cache/{key}"), Some(body.as_bytes()))
    }

    fn get(&mut self, key: &str) -> Response {
        self.call("GET", &format!("/cache/{key}"), None)
    }

    /// Whether the server closed the connection (read until end of stream, bounded).
    fn closed(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !self.fill() {
                return true;
            }
        }
        false
    }
}

/// One text-protocol exchange on the memcached port: sends `req`, reads until `end`.
fn memcached_text(addr: SocketAddr, req: &[u8], end: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(end) {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    got
}

#[test]
fn key_api_round_trips_and_shares_items_with_memcached_protocols() {
    let (server, http) = start(&["-t", "2"]);
    let mut c = Client::connect(http);
    let r = c.put("greeting", &json!({"value": "héllo", "flags": 7}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stored"], true);
    assert!(r.json()["cas"].as_u64().unwrap() > 0);
    let r = c.get("greeting");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["value"], "héllo");
    assert_eq!(v["encoding"], "utf-8");
    assert_eq!(v["flags"], 7);
    assert_eq!(v["ttl"], Value::Null);
    // The same item through the text protocol, and the other way round.
    let got = memcached_text(server.addr(), b"get greeting\r\n", b"END\r\n");
    assert_eq!(got, "VALUE greeting 7 6\r\nhéllo\r\nEND\r\n".as_bytes());
    memcached_text(
        server.addr(),
        b"set raw 3 0 3\r\n\xff\x00\x01\r\n",
        b"STORED\r\n",
    );
    let v = c.get("raw").json();
    assert_eq!(v["encoding"], "base64");
    assert_eq!(v["value"], "/wAB");
    assert_eq!(v["flags"], 3);
    // What a GET returns can be put back as it is.
    let r = c.put("copy", &json!({"value": v["value"], "encoding": "base64"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let got = memcached_text(server.addr(), b"get copy\r\n", b"END\r\n");
    assert_eq!(got, b"VALUE copy 0 3\r\n\xff\x00\x01\r\nEND\r\n");
    // Non-string JSON is stored as its text; percent-encoded keys are decoded.
    assert_eq!(c.put("n%3A1", &json!({"value": 41})).status, 200);
    memcached_text(server.addr(), b"incr n:1 1\r\n", b"42\r\n");
    assert_eq!(c.get("n:1").json()["value"], "42");
    let r = c.call("DELETE", "/cache/greeting", None);
    assert_eq!((r.status, r.json()["deleted"].clone()), (200, json!(true)));
    let r = c.get("greeting");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not found");
    let r = c.call("DELETE", "/cache/greeting", None);
    assert_eq!(r.status, 404);
}

#[test]
fn ttl_is_reported_and_items_expire() {
    let (_server, http) = start(&[]);
    let mut c = Client::connect(http);
    assert_eq!(c.put("short", &json!({"value": "x", "ttl": 2})).status, 200);
    assert_eq!(
        c.put("long", &json!({"value": "x", "ttl": 3600})).status,
        200
    );
    // Beyond memcached's 30 days: still a TTL here, not a date in 1970.
    let year = 365 * 24 * 3600;
    assert_eq!(
        c.put("year", &json!({"value": "x", "ttl": year})).status,
        200
    );
    let ttl = c.get("short").json()["ttl"].as_i64().unwrap();
    assert!((0..=2).contains(&ttl), "ttl {ttl}");
    let ttl = c.get("long").json()["ttl"].as_i64().unwrap();
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");
    let ttl = c.get("year").json()["ttl"].as_i64().unwrap();
    assert!(ttl > year - 10 && ttl <= year, "ttl {ttl}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = 200;
    while Instant::now() < deadline && status == 200 {
        std::thread::sleep(Duration::from_millis(200));
        status = c.get("short").status;
    }
    assert_eq!(status, 404, "the 2-second item never expired");
    assert_eq!(c.get("long").status, 200);
}

#[test]
fn batch_returns_the_found_values_from_every_shard() {
    let (_server, http) = start(&["-t", "4"]);
    let mut c = Client::connect(http);
    let mut keys = Vec::new();
    for i in 0..200 {
        let key = format!("batch:{i}");
        if i % 3 != 0 {
            let r = c.put(&key, &json!({"value": format!("v{i}"), "flags": i}));
            assert_eq!(r.status, 200);
        }
        keys.push(key);
    }
    let body = json!({ "keys": keys }).to_string();
    let r = c.call("POST", "/cache/batch", Some(body.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let values = v["values"].as_object().unwrap();
    let missing = v["missing"].as_array().unwrap();
    assert_eq!(values.len(), 133);
    assert_eq!(missing.len(), 67);
    for i in 0..200 {
        let key = format!("batch:{i}");
        if i % 3 != 0 {
            assert_eq!(values[&key]["value"], format!("v{i}"));
            assert_eq!(values[&key]["flags"], i);
        } else {
            assert!(missing.contains(&json!(key)));
        }
    }
    let too_many: Vec<String> = (0..1025).map(|i| format!("k{i}")).collect();
    let body = json!({ "keys": too_many }).to_string();
    let r = c.call("POST", "/cache/batch", Some(body.as_bytes()));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "too many keys in one batch");
}

#[test]
fn errors_carry_their_status_and_a_json_reason() {
    let (_server, http) = start(&[]);
    let mut c = Client::connect(http);
    let check = |r: Response, status: u16, reason: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let why = r.json()["error"].as_str().unwrap().to_owned();
        assert!(why.contains(reason), "{why:?} lacks {reason:?}");
    };
    check(c.get("absent"), 404, "not found");
    check(c.call("GET", "/nowhere", None), 404, "no such endpoint");
    check(
        c.call("POST", "/cache/k", Some(b"{}")),
        405,
        "GET, PUT, DELETE",
    );
    check(c.call("DELETE", "/metrics", None), 405, "GET");
    check(
        c.call("PUT", "/cache/k", Some(b"{\"value\": ")),
        400,
        "not valid JSON",
    );
    check(
        c.put("k", &json!({"value": "@@@", "encoding": "base64"})),
        400,
        "not valid base64",
    );
    check(c.put("k", &json!({"value": "x", "ttl": -5})), 400, "ttl");
    check(c.put("k", &json!({"ttl": 5})), 400, "missing");
    check(c.get(&"k".repeat(251)), 400, "longer than 250");
    check(c.get("a%20b"), 400, "spaces");
    check(
        c.call("POST", "/cache/batch", Some(b"{\"keys\": 5}")),
        400,
        "keys",
    );
    // A value over the item size limit (-I, 1 MiB) is refused; the connection stays.
    let big = "v".repeat(1024 * 1024 + 1);
    check(c.put("big", &json!({ "value": big })), 413, "too large");
    let fits = "v".repeat(900 * 1024);
    assert_eq!(c.put("fits", &json!({ "value": fits })).status, 200);
    assert_eq!(
        c.get("fits").json()["value"].as_str().unwrap().len(),
        900 * 1024
    );
    // A body no item could come from is refused before it is read, and the connection closes.
    let mut c2 = Client::connect(http);
    c2.stream
        .write_all(b"PUT /cache/huge HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let r = c2.read();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c2.closed());
    // Chunked bodies are not read.
    let mut c3 = Client::connect(http);
    c3.stream
        .write_all(b"PUT /cache/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .unwrap();
    check(c3.read(), 501, "Content-Length");
    // Garbage.
    let mut c4 = Client::connect(http);
    c4.stream
        .write_all(b"\x00\x01\x02 nonsense\r\n\r\n")
        .unwrap();
    check(c4.read(), 400, "malformed");
}

#[test]
fn ten_thousand_requests_on_one_keep_alive_connection_and_pipelining() {
    let (_server, http) = start(&["-t", "2"]);
    let mut c = Client::connect(http);
    for i in 0..5_000 {
        let key = format!("ka{}", i % 100);
        let r = c.put(&key, &json!({ "value": i }));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let r = c.get(&key);
        assert_eq!(r.json()["value"], i.to_string(), "request {i}");
    }
    // Three requests in one write: three answers, in order.
    let mut all = Vec::new();
    for (m, p, b) in [
        ("PUT", "/cache/p1", Some(&br#"{"value":"one"}"#[..])),
        ("GET", "/cache/p1", None),
        ("GET", "/cache/p2", None),
    ] {
        all.extend(Client::request_bytes(m, p, b));
    }
    c.stream.write_all(&all).unwrap();
    assert_eq!(c.read().status, 200);
    assert_eq!(c.read().json()["value"], "one");
    assert_eq!(c.read().status, 404);
    // HTTP/1.0 closes after its answer unless asked otherwise.
    let mut old = Client::connect(http);
    old.stream
        .write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .unwrap();
    assert_eq!(old.read().status, 200);
    assert!(old.closed());
}

#[test]
fn slow_clients_time_out_and_do_not_hold_up_others() {
    let (server, http) = start(&["-t", "1", "--http-timeout", "1"]);
    // Half a request head: answered 408 once the time is up, then closed.
    let mut slow = Client::connect(http);
    slow.stream
        .write_all(b"GET /cache/x HTTP/1.1\r\nHo")
        .unwrap();
    // Meanwhile the same core serves others.
    let mut c = Client::connect(http);
    assert_eq!(c.call("GET", "/health", None).status, 200);
    let r = slow.read();
    assert_eq!(r.status, 408);
    assert!(slow.closed());
    // A body that stops halfway: the same.
    let mut slow = Client::connect(http);
    slow.stream
        .write_all(b"PUT /cache/x HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"val")
        .unwrap();
    assert_eq!(slow.read().status, 408);
    // A client that sends and never reads: its answers back up, then it is left alone (not
    // read further) while others are served. (`c` idled past the timeout: a new connection.)
    let mut c = Client::connect(http);
    let value = "v".repeat(500 * 1024);
    assert_eq!(c.put("big", &json!({ "value": value })).status, 200);
    let mut hog = TcpStream::connect(http).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = Client::request_bytes("GET", "/cache/big", None);
    let mut sent = 0;
    for _ in 0..400 {
        if hog.write_all(&req).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0);
    for _ in 0..20 {
        let mut c = Client::connect(http);
        assert_eq!(c.call("GET", "/health", None).status, 200);
    }
    // The memcached port too.
    memcached_text(server.addr(), b"version\r\n", b"\r\n");
    drop(hog);
    // An idle keep-alive connection is closed after the timeout, without an answer.
    let mut idle = Client::connect(http);
    assert!(idle.try_read().is_none());
}

#[test]
fn health_reports_serving_and_metrics_follow_the_commands() {
    let (_server, http) = start(&["-t", "2"]);
    let mut c = Client::connect(http);
    let r = c.call("GET", "/health", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "serving");
    assert_eq!(r.json()["shards"], 2);
    assert_eq!(c.put("m", &json!({"value": "x"})).status, 200);
    for _ in 0..3 {
        assert_eq!(c.get("m").status, 200);
    }
    assert_eq!(c.get("nope").status, 404);
    let r = c.call("GET", "/metrics", None);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    };
    assert_eq!(value("memcached_up "), 1.0);
    assert_eq!(
        value("memcached_commands_total{command=\"get\",status=\"hit\"}"),
        3.0
    );
    assert_eq!(
        value("memcached_commands_total{command=\"get\",status=\"miss\"}"),
        1.0
    );
    assert_eq!(
        value("memcached_commands_total{command=\"set\",status=\"hit\"}"),
        1.0
    );
    assert_eq!(value("memcached_current_items "), 1.0);
    assert_eq!(value("memcached_limit_bytes "), 64.0 * 1024.0 * 1024.0);
    let per_shard: f64 = text
        .lines()
        .filter(|l| l.starts_with("corecached_shard_commands_total{") && l.contains("\"get\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(per_shard, 4.0, "{text}");
    assert!(
        text.contains("corecached_command_duration_seconds_bucket{command=\"get\",le=\"+Inf\"}")
    );
    assert!(value("corecached_http_requests_total{code=\"2xx\"}") >= 5.0);
    assert_eq!(value("corecached_http_requests_total{code=\"4xx\"}"), 1.0);
    assert_eq!(value("corecached_http_current_connections "), 1.0);
    assert!(text.contains("memcached_slab_current_items{slab="));
    assert!(text.contains("memcached_version{version=\"1.6.18-corecached-"));
}

#[test]
fn promtool_accepts_the_exposition() {
    let (_server, http) = start(&["-t", "2"]);
    let mut c = Client::connect(http);
    for i in 0..50 {
        assert_eq!(
            c.put(&format!("p{i}"), &json!({"value": "v".repeat(i * 40)}))
                .status,
            200
        );
        c.get(&format!("p{i}"));
    }
    let text = c.call("GET", "/metrics", None).body;
    promtool_check(&text, "promtool", "");
}

/// Asserts that `promtool check metrics` accepts `text`; `context` is added to the failure.
fn promtool_check(text: &[u8], dir_name: &str, context: &str) {
    let dir = TempDir::new(dir_name);
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let (ok, out) = run_bounded(
        "sh",
        &[
            "-c",
            &format!("promtool check metrics < {}", file.display()),
        ],
        Duration::from_secs(60),
    );
    assert!(ok, "promtool check metrics failed:\n{out}{context}");
}

/// Runs `curl ARGS` and returns its output.
fn curl(args: &[&str]) -> String {
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(args);
    let (ok, out) = run_bounded("curl", &all, Duration::from_secs(30));
    assert!(ok, "curl {args:?} failed:\n{out}");
    out
}

#[test]
fn a_real_prometheus_scrapes_the_server() {
    let (_server, http) = start(&["-t", "2"]);
    let mut c = Client::connect(http);
    assert_eq!(c.put("scraped", &json!({"value": "x"})).status, 200);
    let dir = TempDir::new("prometheus");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: corecached\n    static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .unwrap();
    let mut prom = None;
    let mut port = 0;
    for _ in 0..5 {
        port = free_port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (./tools/test-all installs Debian's package)");
        let mut child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut up = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.0.try_wait() {
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if up {
            prom = Some(child);
            break;
        }
    }
    let _prom = prom.expect("prometheus did not start listening");
    let base = format!("http://127.0.0.1:{port}");
    // The target's health, then a value from it, each waited for within a bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut targets = String::new();
    let mut query = String::new();
    let mut done = false;
    while Instant::now() < deadline && !done {
        std::thread::sleep(Duration::from_millis(500));
        targets = curl(&[&format!("{base}/api/v1/targets")]);
        let Ok(t) = serde_json::from_str::<Value>(&targets) else {
            continue;
        };
        let healthy = t["data"]["activeTargets"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["health"] == "up"));
        if !healthy {
            continue;
        }
        query = curl(&[
            "-G",
            &format!("{base}/api/v1/query"),
            "--data-urlencode",
            "query=memcached_current_items",
        ]);
        let Ok(q) = serde_json::from_str::<Value>(&query) else {
            continue;
        };
        done = q["data"]["result"]
            .as_array()
            .and_then(|r| r.first())
            .is_some_and(|r| r["value"][1] == "1");
    }
    assert!(
        done,
        "prometheus did not scrape memcached_current_items = 1\ntargets: {targets}\nquery: {query}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn curl_drives_the_key_api() {
    let (_server, http) = start(&[]);
    let url = format!("http://{http}/cache/curl-key");
    let out = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"value": "from curl", "ttl": 60}"#,
        "-w",
        " %{http_code}",
        &url,
    ]);
    assert!(out.ends_with(" 200"), "{out}");
    let out = curl(&[&url]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["value"], "from curl");
    // A body above curl's Expect: 100-continue threshold.
    let big = json!({ "value": "c".repeat(2 * 1024 * 1024 / 3) }).to_string();
    let dir = TempDir::new("curl");
    let file = dir.path().join("body.json");
    std::fs::write(&file, big).unwrap();
    let out = curl(&[
        "-X",
        "PUT",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{}", file.display()),
        "-w",
        " %{http_code}",
        &format!("http://{http}/cache/curl-big"),
    ]);
    assert!(out.ends_with(" 200"), "{out}");
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{http}/cache/absent"),
    ]);
    assert_eq!(out, "404");
    let out = curl(&["-X", "DELETE", &url]);
    assert_eq!(out, r#"{"deleted":true}"#);
    // Several requests over one connection (curl reuses it).
    let urls: Vec<String> = (0..5).map(|_| format!("http://{http}/health")).collect();
    let mut args: Vec<&str> = vec!["-v"];
    args.extend(urls.iter().map(String::as_str));
    let out = curl(&args);
    assert!(
        out.contains("Re-using existing connection") || out.contains("Reusing existing"),
        "{out}"
    );
}

#[test]
fn python_requests_drives_the_key_api() {
    let (_server, http) = start(&["-t", "2", "--http-timeout", "2"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/http_api_check.py");
    // Debian's python3-requests is visible only to Debian's interpreter.
    let (ok, out) = run_bounded(
        "/usr/bin/python3",
        &[script.to_str().unwrap(), &format!("http://{http}")],
        Duration::from_secs(180),
    );
    assert!(ok && out.contains("all checks passed"), "{out}");
}

/// Waits (bounded) until `f` holds.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn health_and_the_key_api_answer_503_while_catching_up_from_peers() {
    // A peer that accepts and never answers: the member cannot be synced by it, so it waits
    // for --resync-timeout before serving.
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        peer.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && conns.len() < 16 {
            match peer.accept() {
                Ok((s, _)) => conns.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        conns
    });
    let port = free_port();
    let list = format!("127.0.0.1:{port},127.0.0.1:{peer_port}");
    let port_s = port.to_string();
    let args = [
        "-l",
        "127.0.0.1",
        "-p",
        &port_s,
        "-t",
        "2",
        "--cluster",
        &list,
        "--resync-timeout",
        "3",
        "--http-listen",
        "127.0.0.1:0",
    ];
    let server = Server::try_spawn(Server::command(&args)).expect("member starts");
    let http: SocketAddr = server
        .addrs()
        .iter()
        .find_map(|a| a.strip_prefix("http:"))
        .unwrap()
        .parse()
        .unwrap();
    let mut c = Client::connect(http);
    let r = c.call("GET", "/health", None);
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (503, json!("catching_up"))
    );
    let r = c.get("k");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "catching up from peers");
    // The metrics are served meanwhile, with the peer's figures.
    let text = c.call("GET", "/metrics", None).text();
    assert!(text.contains("corecached_replication_ready 0\n"), "{text}");
    assert!(
        text.contains(&format!(
            "corecached_replication_lag_records{{peer=\"127.0.0.1:{peer_port}\"}}"
        )),
        "{text}"
    );
    assert!(wait_for(Duration::from_secs(20), || {
        Client::connect(http).call("GET", "/health", None).status == 200
    }));
    assert_eq!(Client::connect(http).get("k").status, 404);
    drop(server);
    drop(held);
}

#[test]
fn replication_lag_per_peer_is_in_the_metrics_and_promtool_accepts_them() {
    let (pa, pb) = (free_port(), free_port());
    let list = format!("127.0.0.1:{pa},127.0.0.1:{pb}");
    let start_member = |port: u16| {
        let port = port.to_string();
        let args = [
            "-l",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "2",
            "--cluster",
            &list,
            "--http-listen",
            "127.0.0.1:0",
        ];
        let s = Server::try_spawn(Server::command(&args)).expect("member starts");
        let http: SocketAddr = s
            .addrs()
            .iter()
            .find_map(|a| a.strip_prefix("http:"))
            .unwrap()
            .parse()
            .unwrap();
        (s, http)
    };
    let (_a, ha) = start_member(pa);
    let (_b, hb) = start_member(pb);
    assert!(wait_for(Duration::from_secs(20), || {
        Client::connect(ha).call("GET", "/health", None).status == 200
            && Client::connect(hb).call("GET", "/health", None).status == 200
    }));
    let mut c = Client::connect(ha);
    for i in 0..100 {
        assert_eq!(c.put(&format!("r{i}"), &json!({"value": i})).status, 200);
    }
    // Every key has both members as owners (replicas 1 of 2): B gets them all.
    assert!(wait_for(Duration::from_secs(20), || {
        let mut b = Client::connect(hb);
        (0..100).all(|i| b.get(&format!("r{i}")).status == 200)
    }));
    let text = c.call("GET", "/metrics", None).text();
    let peer = format!("peer=\"127.0.0.1:{pb}\"");
    for name in [
        "corecached_replication_lag_records{",
        "corecached_replication_lag_seconds{",
        "corecached_replication_records_sent_total{",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(&peer)),
            "no {name}{peer} in:\n{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "corecached_replication_peer_state{{{peer},state=\"streaming\"}} 1"
        )),
        "{text}"
    );
    promtool_check(text.as_bytes(), "promtool-repl", &format!("\n{text}"));
}
