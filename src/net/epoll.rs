//! The epoll backend, for where io_uring is refused (Docker's and Kubernetes' default seccomp
//! profiles, gVisor, old kernels). Connections are registered once, edge-triggered for input and
//! output; listeners and the wake-up eventfd level-triggered. Reads go through one scratch
//! buffer per loop into the connection's inbox; sends are plain non-blocking writes made by the
//! loop at the end of a turn.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::dgram::PeerAddr;
use super::{ConnId, Ev, Notifier, MAX_DATAGRAM};

const KIND_LISTENER: u64 = 1;
const KIND_CONN: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_DGRAM: u64 = 4;

/// Datagrams read from one socket per wake-up before other work gets a turn (the socket is
/// level-triggered: the rest raises the next wait at once).
const DGRAM_BATCH: usize = 64;

/// Accepts per listener wake-up before other work gets a turn.
const ACCEPT_BATCH: usize = 64;
/// Bytes read from one connection per turn before others get theirs.
const READ_BATCH: usize = 64 * 1024;
/// Bytes read from all connections in one turn, before their tasks take them: like the
/// io_uring backend's ring of receive buffers, this bounds what a crowd of senders can make the
/// loop hold at once.
const TURN_READ_LIMIT: usize = 4 * 1024 * 1024;
const SCRATCH: usize = 16 * 1024;

fn token(kind: u64, index: usize) -> u64 {
    ConnId::index(index).tag(kind)
}

#[derive(Clone, Copy)]
struct Entry {
    id: ConnId,
    fd: RawFd,
    paused: bool,
}

pub struct Epoll {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
    scratch: Vec<u8>,
    conns: Vec<Option<Entry>>,
    listeners: Vec<RawFd>,
    /// Connections to read without waiting for an event (resumed, or cut short last turn).
    to_read: Vec<ConnId>,
    /// Bytes read so far this turn.
    read_this_turn: usize,
    /// Datagram sockets by index: descriptor and whether it is registered (not paused).
    dgrams: Vec<(RawFd, bool)>,
    /// One datagram's buffer (allocated with the first datagram socket).
    dgram_buf: Vec<u8>,
}

fn ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a live epoll_event for the duration of the call.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Epoll {
    pub fn new(notify_fd: RawFd) -> io::Result<Epoll> {
        // SAFETY: no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ctl(
            fd,
            libc::EPOLL_CTL_ADD,
            notify_fd,
            libc::EPOLLIN as u32,
            token(KIND_WAKE, 0),
        )?;
        Ok(Epoll {
            epfd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
            scratch: vec![0; SCRATCH],
            conns: Vec::new(),
            listeners: Vec::new(),
            to_read: Vec::new(),
            read_this_turn: 0,
            dgrams: Vec::new(),
            dgram_buf: Vec::new(),
        })
    }

    pub fn add_listener(&mut self, idx: usize, fd: RawFd) -> io::Result<()> {
        if self.listeners.len() <= idx {
            self.listeners.resize(idx + 1, -1);
        }
        self.listeners[idx] = fd;
        ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            libc::EPOLLIN as u32,
            token(KIND_LISTENER, idx),
        )
    }

    pub fn remove_listener(&mut self, fd: RawFd) {
        if let Some(l) = self.listeners.iter_mut().find(|l| **l == fd) {
            *l = -1;
        }
        let _ = ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    pub fn add_conn(&mut self, id: ConnId, fd: RawFd) -> io::Result<()> {
        let slot = id.slot as usize;
        if self.conns.len() <= slot {
            self.conns.resize(slot + 1, None);
        }
        ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            id.tag(KIND_CONN),
        )?;
        self.conns[slot] = Some(Entry {
            id,
            fd,
            paused: false,
        });
        Ok(())
    }

    fn entry(&mut self, id: ConnId) -> Option<&mut Entry> {
        self.conns
            .get_mut(id.slot as usize)?
            .as_mut()
            .filter(|e| e.id == id)
    }

    pub fn pause(&mut self, id: ConnId) {
        if let Some(e) = self.entry(id) {
            e.paused = true;
        }
    }

    pub fn resume(&mut self, id: ConnId) {
        if let Some(e) = self.entry(id) {
            e.paused = false;
            // Edge-triggered: bytes that arrived while paused raise no new event.
            self.to_read.push(id);
        }
    }

    /// Reads what a connection has, up to a turn's share. A short read normally means the
    /// socket is drained (the next arrival raises a new edge); with `until_empty` it reads on to
    /// EAGAIN or end of stream: when the peer's FIN came with the data, or edges were ignored
    /// while the connection was paused.
    fn read_conn(&mut self, id: ConnId, until_empty: bool, sink: &mut dyn FnMut(Ev<'_>) -> bool) {
        let Some(e) = self.entry(id).copied() else {
            return;
        };
        if e.paused {
            return;
        }
        let mut total = 0;
        loop {
            if self.read_this_turn >= TURN_READ_LIMIT {
                self.to_read.push(id);
                return;
            }
            // SAFETY: reads at most `scratch.len()` bytes into the live scratch buffer.
            let n =
                unsafe { libc::read(e.fd, self.scratch.as_mut_ptr().cast(), self.scratch.len()) };
            if n > 0 {
                let n = n as usize;
                let more = sink(Ev::Data {
                    id,
                    bytes: &self.scratch[..n],
                });
                total += n;
                self.read_this_turn += n;
                if !more {
                    return; // the loop pauses it; resuming reads again
                }
                if n < self.scratch.len() && !until_empty {
                    return; // drained: the next arrival raises a new edge
                }
                if total >= READ_BATCH {
                    // The rest next turn (to EAGAIN: an end may be waiting behind it).
                    self.to_read.push(id);
                    return;
                }
                continue;
            }
            if n == 0 {
                sink(Ev::RecvEnded {
                    id,
                    result: Ok(()),
                    rearm: false,
                });
                return;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return,
                io::ErrorKind::Interrupted => continue,
                _ => {
                    sink(Ev::RecvEnded {
                        id,
                        result: Err(err),
                        rearm: false,
                    });
                    return;
                }
            }
        }
    }

    /// Starts receiving on datagram socket `idx`. Exclusive: when several loops wait on the
    /// same socket, a datagram wakes one of them.
    pub fn add_dgram(&mut self, idx: usize, fd: RawFd) -> io::Result<()> {
        if self.dgrams.len() <= idx {
            self.dgrams.resize(idx + 1, (-1, false));
        }
        if self.dgram_buf.is_empty() {
            self.dgram_buf = vec![0; MAX_DATAGRAM];
        }
        self.register_dgram(idx, fd)?;
        self.dgrams[idx] = (fd, true);
        Ok(())
    }

    fn register_dgram(&self, idx: usize, fd: RawFd) -> io::Result<()> {
        ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            token(KIND_DGRAM, idx),
        )
    }

    /// Receives again on a datagram socket whose queue had filled.
    pub fn resume_dgram(&mut self, idx: usize, fd: RawFd) {
        if let Some(&(f, false)) = self.dgrams.get(idx) {
            if f == fd {
                match self.register_dgram(idx, fd) {
                    Ok(()) => self.dgrams[idx].1 = true,
                    Err(e) => log::warn!("cannot resume receiving UDP datagrams: {e}"),
                }
            }
        }
    }

    /// Stops receiving on a datagram socket (before its descriptor is closed).
    pub fn remove_dgram(&mut self, idx: usize, fd: RawFd) {
        if let Some(d) = self.dgrams.get_mut(idx) {
            if d.1 {
                let _ = ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
            }
            *d = (-1, false);
        }
    }

    fn read_dgrams(&mut self, idx: usize, sink: &mut dyn FnMut(Ev<'_>) -> bool) {
        let Some(&(fd, true)) = self.dgrams.get(idx) else {
            return;
        };
        for _ in 0..DGRAM_BATCH {
            if self.read_this_turn >= TURN_READ_LIMIT {
                return; // level-triggered: the next wait reports it again
            }
            let mut from = PeerAddr::empty();
            let mut iov = libc::iovec {
                iov_base: self.dgram_buf.as_mut_ptr().cast(),
                iov_len: self.dgram_buf.len(),
            };
            // SAFETY: msghdr is plain data; all zeroes is an empty header.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from.ss as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = from.len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            // SAFETY: `msg` points at the live buffer, address and iovec above, for the call.
            let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {}
                    _ => log::debug!("UDP receive failed: {err}"),
                }
                return;
            }
            let n = n as usize;
            self.read_this_turn += n;
            from.len = msg.msg_namelen;
            if msg.msg_flags & libc::MSG_TRUNC != 0 {
                continue; // larger than any datagram we take: dropped
            }
            let more = sink(Ev::Datagram {
                sock: idx,
                bytes: &self.dgram_buf[..n],
                from: &from,
            });
            if !more {
                // Paused until the task catches up (level-triggered: unregister, or every
                // wait would report it).
                let _ = ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0);
                self.dgrams[idx].1 = false;
                return;
            }
        }
    }

    fn accept_on(&mut self, idx: usize, sink: &mut dyn FnMut(Ev<'_>) -> bool) {
        let Some(&lfd) = self.listeners.get(idx) else {
            return;
        };
        if lfd < 0 {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            // SAFETY: null address pointers ask for no peer address.
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if fd >= 0 {
                // SAFETY: a successful accept returns a new descriptor nobody else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                sink(Ev::Accepted { idx, fd });
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return,
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                _ => {
                    sink(Ev::AcceptFailed {
                        idx,
                        err,
                        stalled: false,
                    });
                    return;
                }
            }
        }
    }

    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        notifier: &Notifier,
        sink: &mut dyn FnMut(Ev<'_>) -> bool,
    ) -> io::Result<()> {
        self.read_this_turn = 0;
        let carried = std::mem::take(&mut self.to_read);
        let ms = if !carried.is_empty() {
            0
        } else {
            match timeout {
                None => -1,
                Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
            }
        };
        for id in carried {
            self.read_conn(id, true, sink);
        }
        // SAFETY: the kernel writes at most `events.len()` entries into the live vector.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(err)
            };
        }
        for i in 0..n as usize {
            let ev = self.events[i];
            let (data, flags) = (ev.u64, ev.events);
            let (kind, id) = ConnId::untag(data);
            match kind {
                KIND_WAKE => notifier.drain(),
                KIND_LISTENER => self.accept_on(id.slot as usize, sink),
                KIND_DGRAM => self.read_dgrams(id.slot as usize, sink),
                KIND_CONN => {
                    let input =
                        (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                    let ended = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                    if flags & input != 0 {
                        self.read_conn(id, flags & ended != 0, sink);
                    }
                    if flags & libc::EPOLLOUT as u32 != 0 {
                        sink(Ev::Writable { id });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
