//! Connections of one server: a small pool of blocking sockets, each with its read buffer, and
//! the request/reply exchanges on one connection (single request, GetKQ pipeline, stats stream).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use super::{Config, Value};
use crate::protocol::binary::{
    decode_response, encode_request, opcode, Response, ResponseDecode, Variant,
};
use crate::protocol::{Command, Outcome};

/// Keys sent per GetKQ ... Noop round trip: bounds what is in flight, so neither side blocks on
/// a full socket buffer while the other is still writing.
const PIPELINE_CHUNK: usize = 512;

/// Why an exchange failed.
#[derive(Debug)]
pub(super) enum ConnError {
    Io(io::Error),
    Protocol(String),
    Encode(String),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

/// One reply packet, owned.
#[derive(Debug, Clone, Default)]
pub(super) struct Packet {
    pub opcode: u8,
    pub status: u16,
    pub opaque: u32,
    pub cas: u64,
    pub extras: Vec<u8>,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Packet {
    fn from_response(r: &Response<'_>) -> Packet {
        Packet {
            opcode: r.opcode,
            status: r.status,
            opaque: r.opaque,
            cas: r.cas,
            extras: r.extras.to_vec(),
            key: r.key.to_vec(),
            value: r.value.to_vec(),
        }
    }

    fn response(&self) -> Response<'_> {
        Response {
            opcode: self.opcode,
            datatype: 0,
            status: self.status,
            opaque: self.opaque,
            cas: self.cas,
            extras: &self.extras,
            key: &self.key,
            value: &self.value,
        }
    }

    /// The outcome the packet reports (see [`Response::outcome`]), values owned.
    pub fn outcome(&self) -> Option<Outcome<Vec<u8>>> {
        Some(match self.response().outcome()? {
            Outcome::Value { flags, cas, value } => Outcome::Value {
                flags,
                cas,
                value: value.to_vec(),
            },
            Outcome::Stored { cas } => Outcome::Stored { cas },
            Outcome::Deleted => Outcome::Deleted,
            Outcome::Counter { value, cas } => Outcome::Counter { value, cas },
            Outcome::Touched { flags, cas } => Outcome::Touched { flags, cas },
            Outcome::Done => Outcome::Done,
            Outcome::Version(v) => Outcome::Version(v.to_vec()),
            Outcome::NotFound => Outcome::NotFound,
            Outcome::Exists => Outcome::Exists,
            Outcome::NotStored => Outcome::NotStored,
            Outcome::NonNumeric => Outcome::NonNumeric,
            Outcome::TooLarge => Outcome::TooLarge,
            Outcome::OutOfMemory => Outcome::OutOfMemory,
            Outcome::InvalidArguments => Outcome::InvalidArguments,
            Outcome::UnknownCommand => Outcome::UnknownCommand,
            Outcome::AuthError => Outcome::AuthError,
            Outcome::UnknownStatsGroup => Outcome::UnknownStatsGroup,
            _ => return None,
        })
    }
}

/// One connection and its read buffer.
pub(super) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
    out: Vec<u8>,
}

impl Conn {
    fn connect(addr: &str, connect_timeout: Duration, io_timeout: Duration) -> io::Result<Conn> {
        let mut last = None;
        for sa in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, connect_timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(io_timeout))?;
                    stream.set_write_timeout(Some(io_timeout))?;
                    stream.set_nodelay(true)?;
                    return Ok(Conn {
                        stream,
                        buf: Vec::with_capacity(16 * 1024),
                        start: 0,
                        out: Vec::with_capacity(1024),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
    }

    fn encode(
        &mut self,
        command: &Command<&[u8]>,
        variant: Variant,
        opaque: u32,
    ) -> Result<(), ConnError> {
        encode_request(&mut self.out, command, variant, opaque)
            .map(|_| ())
            .map_err(|e| ConnError::Encode(e.to_string()))
    }

    fn flush_out(&mut self) -> io::Result<()> {
        let r = self.stream.write_all(&self.out);
        self.out.clear();
        r
    }

    /// Reads the next reply packet.
    fn next_packet(&mut self) -> Result<Packet, ConnError> {
        loop {
            match decode_response(&self.buf[self.start..]) {
                ResponseDecode::Response { response, consumed } => {
                    let packet = Packet::from_response(&response);
                    self.start += consumed;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(packet);
                }
                ResponseDecode::Invalid => {
                    return Err(ConnError::Protocol("invalid response packet".into()))
                }
                ResponseDecode::Incomplete => {
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    let len = self.buf.len();
                    self.buf.resize(len.max(4096) + 16 * 1024, 0);
                    let n = self.stream.read(&mut self.buf[len..]);
                    let n = match n {
                        Ok(n) => n,
                        Err(e) => {
                            self.buf.truncate(len);
                            return Err(e.into());
                        }
                    };
                    self.buf.truncate(len + n);
                    if n == 0 {
                        return Err(ConnError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed by server",
                        )));
                    }
                }
            }
        }
    }

    /// One request, one reply (checked to be the reply to it).
    pub fn request(&mut self, command: &Command<&[u8]>) -> Result<Packet, ConnError> {
        const OPAQUE: u32 = 0x00c0_ffee;
        self.encode(command, Variant::default(), OPAQUE)?;
        self.flush_out()?;
        let packet = self.next_packet()?;
        if packet.opaque != OPAQUE {
            return Err(ConnError::Protocol(format!(
                "reply opaque {:#x} does not match the request",
                packet.opaque
            )));
        }
        Ok(packet)
    }

    /// GetKQ for every key, then Noop; hits until the Noop's reply.
    pub fn get_pipelined(&mut self, keys: &[&[u8]]) -> Result<Vec<(Vec<u8>, Value)>, ConnError> {
        let variant = Variant {
            quiet: true,
            echo_key: true,
        };
        let mut hits = Vec::new();
        for chunk in keys.chunks(PIPELINE_CHUNK) {
            for (i, key) in chunk.iter().enumerate() {
                self.encode(
                    &Command::Get {
                        key,
                        touch: None,
                        meta: None,
                    },
                    variant,
                    i as u32,
                )?;
            }
            self.encode(&Command::Noop, Variant::default(), u32::MAX)?;
            self.flush_out()?;
            loop {
                let p = self.next_packet()?;
                if p.opcode == opcode::NOOP {
                    break;
                }
                // A quiet get reports errors other than a miss; they read as misses.
                if let Some(Outcome::Value { flags, cas, value }) = p.outcome() {
                    let key = if p.key.is_empty() {
                        chunk
                            .get(p.opaque as usize)
                            .map(|k| k.to_vec())
                            .unwrap_or_default()
                    } else {
                        p.key
                    };
                    let data = value;
                    hits.push((key, Value { data, flags, cas }));
                }
            }
        }
        Ok(hits)
    }

    /// A Stat request and its stream of name/value packets.
    pub fn stats(&mut self, group: &[u8]) -> Result<Vec<(String, String)>, ConnError> {
        self.encode(&Command::Stats { group }, Variant::default(), 0)?;
        self.flush_out()?;
        let mut out = Vec::new();
        loop {
            let p = self.next_packet()?;
            if p.status != 0 {
                return Err(ConnError::Protocol(format!(
                    "stats {:?}: status {:#06x}",
                    String::from_utf8_lossy(group),
                    p.status
                )));
            }
            if p.key.is_empty() && p.value.is_empty() {
                return Ok(out);
            }
            out.push((
                String::from_utf8_lossy(&p.key).into_owned(),
                String::from_utf8_lossy(&p.value).into_owned(),
            ));
        }
    }
}

/// The idle connections of one server.
pub(super) struct ServerPool {
    addr: String,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl ServerPool {
    pub fn new(addr: String, config: &Config) -> ServerPool {
        ServerPool {
            addr,
            idle: Mutex::new(Vec::new()),
            max_idle: config.pool_size.max(1),
            connect_timeout: config.connect_timeout,
            io_timeout: config.io_timeout,
        }
    }

    /// Drops every idle connection (after the server failed).
    pub fn clear(&self) {
        self.idle.lock().unwrap().clear();
    }

    /// Runs `f` on a pooled (or new) connection; the connection goes back to the pool only when
    /// `f` succeeded (after an error its state is unknown). A pooled connection the server has
    /// closed meanwhile (a restarted or idle-timed-out server: EOF, reset, broken pipe) is
    /// dropped and `f` runs once more on a fresh connection.
    pub fn with_conn<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, ConnError>,
    ) -> Result<T, ConnError> {
        let pooled = self.idle.lock().unwrap().pop();
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => Conn::connect(&self.addr, self.connect_timeout, self.io_timeout)?,
        };
        let mut r = f(&mut conn);
        if reused && matches!(&r, Err(ConnError::Io(e)) if is_stale(e)) {
            self.clear();
            conn = Conn::connect(&self.addr, self.connect_timeout, self.io_timeout)?;
            r = f(&mut conn);
        }
        if matches!(&r, Ok(_) | Err(ConnError::Encode(_))) {
            let mut idle = self.idle.lock().unwrap();
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        r
    }
}

/// Errors that mean the server closed a connection while it sat in the pool.
fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}
