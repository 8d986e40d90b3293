//! TLS as a transform of one connection's byte streams (rustls), so the task above keeps
//! reading and writing plaintext and the backends keep moving ciphertext:
//!
//! - in: the ciphertext of each receive goes through the session ([`Tls::receive`]) and the
//!   plaintext it yields is appended to the connection's inbox, as plain bytes would be;
//! - out: what the task stages (copied small output, whole large chunks, values lent from the
//!   store) waits here as plaintext until the end of the loop turn, when [`Tls::encrypt`] seals
//!   it into records written straight into the connection's ordinary output chunks (at most
//!   [`CHUNK`] bytes each, recycled as any), and lets lent values go; the send path is the
//!   same as for a plain connection.
//!
//! The handshake runs the same way, inside the loop turn of the core that owns the connection:
//! each receive advances it and queues its answer; nothing blocks. Memory per session is
//! bounded: rustls buffers at most [`BUFFER_LIMIT`] of its own output (drained into chunks at
//! once) and one partial record of input; plaintext taken out at every receive.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;

use super::{recycle, Chunk, Lent, CHUNK, COPY_MAX};

pub use rustls::ServerConfig;

/// Bytes rustls may hold of its own output (the handshake's flight, or plaintext written
/// before the handshake completed).
const BUFFER_LIMIT: usize = 64 * 1024;

/// One connection's TLS session and the plaintext waiting for it.
pub(super) struct Tls {
    session: rustls::ServerConnection,
    /// Plaintext staged by the task, in order, not yet encrypted.
    pending: VecDeque<Chunk>,
    /// Bytes in `pending`.
    pending_bytes: usize,
    /// Small outputs are joined into one pending chunk (one record) up to this size.
    join_max: usize,
    /// The handshake has not completed yet.
    handshaking: bool,
    /// The session failed: `Some(true)` during the handshake, `Some(false)` after it.
    failure: Option<bool>,
    /// Our close_notify is queued.
    close_sent: bool,
    /// Handshake bytes held until their record is complete, so a client that sends part of
    /// one and stalls costs what it sent, not a read buffer of the session's.
    gather: Vec<u8>,
}

impl Tls {
    /// A server session with `config`; small outputs are joined up to `join_max` bytes.
    pub(super) fn new(config: Arc<ServerConfig>, join_max: usize) -> io::Result<Tls> {
        let mut session = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        session.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(Tls {
            session,
            pending: VecDeque::new(),
            pending_bytes: 0,
            join_max: join_max.max(COPY_MAX),
            handshaking: true,
            failure: None,
            close_sent: false,
            gather: Vec::new(),
        })
    }

    /// Whether the handshake is still running.
    pub(super) fn handshaking(&self) -> bool {
        self.handshaking
    }

    /// Whether the session failed, and if so whether during the handshake.
    pub(super) fn failure(&self) -> Option<bool> {
        self.failure
    }

    /// Feeds received ciphertext to the session and appends the plaintext it yields to
    /// `inbox` (at most `bytes.len()` bytes). An error is fatal: the session is marked failed
    /// and its alert can be taken with [`Tls::take_alert`].
    pub(super) fn receive(&mut self, bytes: &[u8], inbox: &mut Vec<u8>) -> io::Result<()> {
        if self.failure.is_some() {
            return Ok(()); // what a failed session receives is dropped
        }
        if !self.handshaking && self.gather.is_empty() {
            return self.feed(bytes, inbox);
        }
        let mut joined = std::mem::take(&mut self.gather);
        let src: &[u8] = if joined.is_empty() {
            bytes
        } else {
            joined.extend_from_slice(bytes);
            &joined
        };
        let n = if self.handshaking {
            complete_records(src)
        } else {
            src.len()
        };
        self.feed(&src[..n], inbox)?;
        if self.handshaking {
            self.gather = src[n..].to_vec();
            Ok(())
        } else {
            // The handshake completed: what follows is for the session at once.
            self.feed(&src[n..], inbox)
        }
    }

    fn feed(&mut self, bytes: &[u8], inbox: &mut Vec<u8>) -> io::Result<()> {
        let mut rd = bytes;
        while !rd.is_empty() {
            if let Err(e) = self.session.read_tls(&mut rd) {
                return Err(self.fail(e));
            }
            let state = match self.session.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    return Err(self.fail(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = inbox.len();
                inbox.resize(at + n, 0);
                let got = self.session.reader().read(&mut inbox[at..]).unwrap_or(0);
                inbox.truncate(at + got);
            }
        }
        if self.handshaking && !self.session.is_handshaking() {
            self.handshaking = false;
        }
        Ok(())
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failure = Some(self.handshaking);
        e
    }

    /// The alert a failed session queued (to send before closing), if any.
    pub(super) fn take_alert(&mut self) -> Vec<u8> {
        let mut alert = Vec::new();
        while self.session.wants_write() {
            match self.session.write_tls(&mut alert) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        alert
    }

    /// Queues plaintext the task staged (leaves `out` empty, as `Conn::stage` does); returns
    /// the bytes queued.
    pub(super) fn stage(&mut self, out: &mut Vec<u8>, spare: &RefCell<Vec<Vec<u8>>>) -> usize {
        let len = out.len();
        match self.pending.back_mut() {
            Some(Chunk::Own(last)) if len < COPY_MAX && last.len() + len <= self.join_max => {
                last.extend_from_slice(out);
                out.clear();
            }
            _ => {
                let fresh = spare.borrow_mut().pop().unwrap_or_default();
                self.pending
                    .push_back(Chunk::Own(std::mem::replace(out, fresh)));
            }
        }
        self.pending_bytes += len;
        len
    }

    /// Queues lent plaintext; it is let go once encrypted.
    pub(super) fn stage_lent(&mut self, lent: Lent) -> usize {
        let len = lent.len();
        self.pending_bytes += len;
        self.pending.push_back(Chunk::Lent(lent));
        len
    }

    /// Plaintext bytes waiting for encryption.
    pub(super) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Drops the plaintext not yet encrypted (the connection failed); returns its size.
    pub(super) fn discard_pending(&mut self, spare: &RefCell<Vec<Vec<u8>>>) -> usize {
        let n = self.pending_bytes;
        while let Some(chunk) = self.pending.pop_front() {
            recycle(spare, chunk);
        }
        self.pending_bytes = 0;
        n
    }

    /// Encrypts the pending plaintext into records appended to `out` (whose first `in_flight`
    /// chunks a send is reading and must not change), lets lent values go, and moves anything
    /// else the session wants to send (handshake messages) there too. Plaintext waits while the
    /// handshake runs. Returns (plaintext bytes consumed, ciphertext bytes queued).
    pub(super) fn encrypt(
        &mut self,
        out: &mut VecDeque<Chunk>,
        in_flight: usize,
        spare: &RefCell<Vec<Vec<u8>>>,
    ) -> io::Result<(usize, usize)> {
        let mut cipher = self.drain(out, in_flight, spare)?;
        if self.session.is_handshaking() || self.failure.is_some() {
            return Ok((0, cipher));
        }
        let mut plain = 0;
        while let Some(chunk) = self.pending.pop_front() {
            let bytes: &[u8] = match &chunk {
                Chunk::Own(v) => v,
                Chunk::Lent(l) => l.bytes(),
            };
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = self.session.writer().write(rest)?;
                rest = &rest[n..];
                cipher += self.drain(out, in_flight, spare)?;
                if n == 0 {
                    return Err(io::Error::other("TLS: the session takes no more output"));
                }
            }
            plain += bytes.len();
            self.pending_bytes -= bytes.len();
            recycle(spare, chunk);
        }
        Ok((plain, cipher))
    }

    /// Queues our close_notify (once, after a completed handshake); returns the ciphertext
    /// bytes queued.
    pub(super) fn close(
        &mut self,
        out: &mut VecDeque<Chunk>,
        in_flight: usize,
        spare: &RefCell<Vec<Vec<u8>>>,
    ) -> io::Result<usize> {
        if self.close_sent || self.handshaking || self.failure.is_some() {
            return Ok(0);
        }
        self.close_sent = true;
        self.session.send_close_notify();
        self.drain(out, in_flight, spare)
    }

    /// Moves the session's queued ciphertext into output chunks: onto the last one while no
    /// send reads it and it has room, else into fresh ones of at most [`CHUNK`] bytes.
    fn drain(
        &mut self,
        out: &mut VecDeque<Chunk>,
        in_flight: usize,
        spare: &RefCell<Vec<Vec<u8>>>,
    ) -> io::Result<usize> {
        let mut total = 0;
        while self.session.wants_write() {
            let room = out.len() > in_flight
                && matches!(out.back(), Some(Chunk::Own(v)) if v.len() < CHUNK);
            if !room {
                let fresh = spare.borrow_mut().pop().unwrap_or_default();
                out.push_back(Chunk::Own(fresh));
            }
            let Some(Chunk::Own(buf)) = out.back_mut() else {
                unreachable!("a chunk with room was just ensured");
            };
            total += self.session.write_tls(&mut Room(buf))?;
        }
        if matches!(out.back(), Some(Chunk::Own(v)) if v.is_empty()) && out.len() > in_flight {
            if let Some(chunk) = out.pop_back() {
                recycle(spare, chunk);
            }
        }
        Ok(total)
    }
}

/// A writer that fills an output chunk up to [`CHUNK`] bytes.
struct Room<'a>(&'a mut Vec<u8>);

impl Write for Room<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(CHUNK.saturating_sub(self.0.len()));
        self.0.extend_from_slice(&b[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            let k = self.write(b)?;
            n += k;
            if k < b.len() {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The largest record a peer may send (TLS 1.2's ciphertext limit).
const MAX_RECORD: usize = 16384 + 2048;

/// Length of the complete TLS records at the start of `b`; all of `b` when it cannot be TLS
/// (an unknown content type, an oversized record), so the session rejects it at once.
fn complete_records(b: &[u8]) -> usize {
    let mut at = 0;
    while b.len() - at >= 5 {
        let len = u16::from_be_bytes([b[at + 3], b[at + 4]]) as usize;
        if !(20..=24).contains(&b[at]) || len > MAX_RECORD {
            return b.len();
        }
        if b.len() - at < 5 + len {
            break;
        }
        at += 5 + len;
    }
    if at < b.len() && !(20..=24).contains(&b[at]) {
        return b.len();
    }
    at
}

#[cfg(test)]
mod tests {
    use super::complete_records;

    #[test]
    fn records_are_gathered_whole() {
        assert_eq!(complete_records(&[]), 0);
        assert_eq!(complete_records(&[22, 3, 1]), 0);
        assert_eq!(complete_records(&[22, 3, 1, 0, 2, 9]), 0);
        assert_eq!(complete_records(&[22, 3, 1, 0, 2, 9, 9]), 7);
        assert_eq!(complete_records(&[22, 3, 1, 0, 1, 9, 22, 3]), 6);
        // Not TLS: handed over at once, to be refused.
        assert_eq!(complete_records(b"version\r\n"), 9);
        assert_eq!(complete_records(&[22, 3, 1, 0xff, 0xff, 0]), 6);
        assert_eq!(complete_records(&[22, 3, 1, 0, 1, 9, 0x80]), 7);
    }
}
