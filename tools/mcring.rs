//! `mcring --distribution NAME --servers host:port[:weight],...`: reads keys on stdin, one per
//! line, and prints the server each key goes to (`host:port` as given), one per line.
//!
//! The interface is used by external compatibility checks; keep it. Buffered both ways, no
//! allocation per key.

use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

use corecached::ring::{Continuum, Distribution, Node};

const USAGE: &str = "usage: mcring --distribution NAME --servers host:port[:weight],...
  NAME: ketama | libmemcached | libmemcached-md5 | libmemcached-spy | spymemcached | twemproxy | jump
  Reads keys on stdin (one per line, a trailing CR is dropped) and prints the chosen server for each.";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcring: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut distribution = None;
    let mut servers = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match name.as_str() {
            "--distribution" | "-d" => distribution = Some(value()?.parse::<Distribution>()?),
            "--servers" | "-s" => servers = Some(Node::parse_list(&value()?)?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let distribution =
        distribution.ok_or_else(|| format!("--distribution is required\n{USAGE}"))?;
    let nodes = servers.ok_or_else(|| format!("--servers is required\n{USAGE}"))?;
    if nodes.is_empty() {
        return Err("--servers lists no server".into());
    }
    let ring = Continuum::new(distribution, &nodes);
    // Each server's output line, prepared once.
    let names: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| format!("{}\n", n.addr()).into_bytes())
        .collect();
    let stdin = io::stdin();
    let mut input = io::BufReader::with_capacity(1 << 16, stdin.lock());
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = Vec::with_capacity(256);
    let io_err = |e: io::Error| format!("I/O error: {e}");
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).map_err(io_err)? == 0 {
            break;
        }
        let mut key = line.as_slice();
        if let Some(k) = key.strip_suffix(b"\n") {
            key = k;
        }
        if let Some(k) = key.strip_suffix(b"\r") {
            key = k;
        }
        let index = ring.server_for(key).expect("a non-empty server list");
        if let Err(e) = out.write_all(&names[index]) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(io_err(e));
        }
    }
    match out.flush() {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(io_err(e)),
        _ => Ok(()),
    }
}
