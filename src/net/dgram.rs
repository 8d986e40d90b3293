//! Datagram sockets (UDP) on the per-core loop. Like the rest of `net` this knows nothing of
//! memcached: a task sees a [`DatagramSocket`] that hands it whole datagrams with the sender's
//! address and takes datagrams to send to an address.
//!
//! One bound socket may be registered on several loops (each with its own descriptor, a
//! `dup`); every datagram is received by exactly one of them. Receiving: io_uring keeps a few
//! RECVMSG requests armed per socket, each with its own 64 KiB buffer (owned by the backend,
//! re-armed as each completes); epoll reads with `recvmsg` on readiness (registered with
//! `EPOLLEXCLUSIVE`, so a datagram wakes one sleeping loop, not all). Datagrams wait in a
//! bounded queue for the task; a full queue stops receiving (the kernel's socket buffer then
//! fills and drops, as UDP does) until the task catches up. Sending: each datagram is copied
//! into a boxed message (buffer, address, `msghdr`), sent with one SENDMSG request (io_uring) or
//! one `sendmsg` call (epoll; a full socket buffer is retried on the next turn), and recycled.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::{cvt, set_int_opt, to_sockaddr, Driver, Loop};

/// Largest datagram received whole (memcached's UDP read buffer; above the 65,507 bytes an
/// IPv4 UDP payload can have).
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// Datagrams waiting for the task above which receiving stops...
const QUEUE_HIGH: usize = 256;
/// ...or bytes waiting for the task above which it stops.
const QUEUE_HIGH_BYTES: usize = 512 * 1024;
/// Unsent bytes above which [`DatagramSocket::drained`] waits...
const OUT_HIGH: usize = 256 * 1024;
/// ...until they are below this.
const OUT_LOW: usize = 64 * 1024;
/// Sends in flight per socket (io_uring).
const MAX_IN_FLIGHT: usize = 64;
/// Message boxes and receive copies kept for reuse, per socket.
const SPARE: usize = 128;
/// Send buffer asked of the kernel (memcached raises it as far as it may; the kernel clamps
/// to `wmem_max`).
const SNDBUF: libc::c_int = 4 * 1024 * 1024;

/// A peer's socket address as the kernel writes it (IPv4 or IPv6).
#[derive(Clone, Copy)]
pub struct PeerAddr {
    pub(super) ss: libc::sockaddr_storage,
    pub(super) len: libc::socklen_t,
}

impl PeerAddr {
    pub(super) fn empty() -> PeerAddr {
        PeerAddr {
            // SAFETY: sockaddr_storage is plain data, valid when zeroed.
            ss: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    /// The address, or `None` for a family other than IPv4/IPv6.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match super::decode_sockaddr(&self.ss) {
            super::SockName::Inet(a) => Some(a),
            _ => None,
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> PeerAddr {
        let (ss, len) = to_sockaddr(a);
        PeerAddr { ss, len }
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.socket_addr() {
            Some(a) => write!(f, "{a}"),
            None => write!(f, "<AF {}>", self.ss.ss_family),
        }
    }
}

/// A bound datagram socket, not yet on a loop. Bound without `SO_REUSEADDR` and
/// `SO_REUSEPORT`, so a second process asking for the same address is refused.
pub struct UdpSocket {
    fd: OwnedFd,
    addr: SocketAddr,
}

impl UdpSocket {
    /// Binds a UDP socket to `addr` (port 0 picks a free one).
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let domain = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: socket takes no pointers; a non-negative result is a new descriptor we own.
        let raw = cvt(unsafe {
            libc::socket(
                domain,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if domain == libc::AF_INET6 {
            set_int_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
        // Best effort: a bigger send buffer only absorbs bursts of reply datagrams.
        let _ = set_int_opt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, SNDBUF);
        let (ss, len) = to_sockaddr(addr);
        // SAFETY: `ss` holds a valid address of `len` bytes.
        cvt(unsafe { libc::bind(raw, (&ss as *const libc::sockaddr_storage).cast(), len) })?;
        let bound = std::net::UdpSocket::from(fd);
        let addr = bound.local_addr()?;
        Ok(UdpSocket {
            fd: OwnedFd::from(bound),
            addr,
        })
    }

    /// The bound address (the chosen port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The descriptor number (for reports).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A second descriptor for the same socket (for another loop to serve).
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            fd: self.fd.try_clone()?,
            addr: self.addr,
        })
    }
}

/// One datagram to send: its bytes, where to, and the `msghdr` the kernel reads. Boxed: the
/// kernel reads it in place while an io_uring send is in flight.
pub(super) struct TxMsg {
    pub(super) sock: usize,
    pub(super) msg: libc::msghdr,
    iov: libc::iovec,
    to: PeerAddr,
    pub(super) buf: Vec<u8>,
}

impl TxMsg {
    fn new() -> Box<TxMsg> {
        Box::new(TxMsg {
            sock: 0,
            // SAFETY: msghdr is plain data; all zeroes is an empty header.
            msg: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            to: PeerAddr::empty(),
            buf: Vec::new(),
        })
    }

    /// Points the header at this box's own buffer and address (call once it is in place).
    pub(super) fn prepare(&mut self) {
        self.iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: self.buf.len(),
        };
        self.msg.msg_name = (&mut self.to.ss as *mut libc::sockaddr_storage).cast();
        self.msg.msg_namelen = self.to.len;
        self.msg.msg_iov = &mut self.iov;
        self.msg.msg_iovlen = 1;
        self.msg.msg_control = std::ptr::null_mut();
        self.msg.msg_controllen = 0;
        self.msg.msg_flags = 0;
    }
}

/// One armed receive (io_uring): its buffer, the sender's address and the `msghdr`. Owned by
/// the backend in a vector never resized, so it stays in place and outlives the request.
pub(super) struct RxSlot {
    pub(super) msg: libc::msghdr,
    iov: libc::iovec,
    pub(super) from: PeerAddr,
    pub(super) buf: Vec<u8>,
    pub(super) armed: bool,
}

impl RxSlot {
    pub(super) fn new() -> RxSlot {
        RxSlot {
            // SAFETY: msghdr is plain data; all zeroes is an empty header.
            msg: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            from: PeerAddr::empty(),
            buf: vec![0; MAX_DATAGRAM],
            armed: false,
        }
    }

    /// Resets the header for the next receive into this box's buffer and address.
    pub(super) fn prepare(&mut self) -> *mut libc::msghdr {
        self.from = PeerAddr::empty();
        self.iov = libc::iovec {
            iov_base: self.buf.as_mut_ptr().cast(),
            iov_len: self.buf.len(),
        };
        self.msg.msg_name = (&mut self.from.ss as *mut libc::sockaddr_storage).cast();
        self.msg.msg_namelen = self.from.len;
        self.msg.msg_iov = &mut self.iov;
        self.msg.msg_iovlen = 1;
        self.msg.msg_control = std::ptr::null_mut();
        self.msg.msg_controllen = 0;
        self.msg.msg_flags = 0;
        &mut self.msg
    }
}

/// A loop's view of one registered datagram socket.
pub(super) struct DgramState {
    idx: usize,
    fd: OwnedFd,
    addr: SocketAddr,
    /// Received datagrams the task has not taken, with their senders.
    queue: VecDeque<(Vec<u8>, PeerAddr)>,
    queued_bytes: usize,
    /// Receiving stopped because the queue is full.
    paused: bool,
    reader: Option<Waker>,
    /// Datagrams not yet handed to the kernel.
    out: VecDeque<Box<TxMsg>>,
    /// Bytes queued in `out` or in flight.
    unsent: usize,
    in_flight: usize,
    writer: Option<Waker>,
    listed: bool,
    // Boxed: a message keeps its address from the queue to the kernel and back.
    #[allow(clippy::vec_box)]
    spare_msgs: Vec<Box<TxMsg>>,
    spare_bufs: Vec<Vec<u8>>,
}

impl DgramState {
    fn recycle(&mut self, mut m: Box<TxMsg>) {
        if self.spare_msgs.len() < SPARE && m.buf.capacity() <= 2 * 1024 {
            m.buf.clear();
            self.spare_msgs.push(m);
        }
    }

    fn sent(&mut self, len: usize) {
        self.unsent -= len;
        if self.unsent <= OUT_LOW {
            if let Some(w) = self.writer.take() {
                w.wake();
            }
        }
    }
}

/// A datagram socket on this loop. Dropping it stops receiving and closes its descriptor
/// (datagrams still queued for sending are dropped).
pub struct DatagramSocket {
    lp: Rc<Loop>,
    state: Rc<RefCell<DgramState>>,
}

impl DatagramSocket {
    /// The next datagram: its bytes replace `buf`'s, and the sender comes back.
    pub async fn recv(&self, buf: &mut Vec<u8>) -> PeerAddr {
        std::future::poll_fn(|cx| {
            let mut s = self.state.borrow_mut();
            if let Some((data, from)) = s.queue.pop_front() {
                s.queued_bytes -= data.len();
                let mut old = std::mem::replace(buf, data);
                if s.spare_bufs.len() < SPARE && old.capacity() <= 16 * 1024 {
                    old.clear();
                    s.spare_bufs.push(old);
                }
                if s.paused
                    && s.queue.len() < QUEUE_HIGH / 2
                    && s.queued_bytes < QUEUE_HIGH_BYTES / 2
                {
                    s.paused = false;
                    let (idx, raw) = (s.idx, s.fd.as_raw_fd());
                    match &mut *self.lp.driver.borrow_mut() {
                        Driver::Uring(u) => u.resume_dgram(idx),
                        Driver::Epoll(e) => e.resume_dgram(idx, raw),
                    }
                }
                return Poll::Ready(from);
            }
            s.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Queues one datagram, the concatenation of `parts`, for `to` (copied; sent with the rest
    /// of the loop turn).
    pub fn send_to(&self, to: &PeerAddr, parts: &[&[u8]]) {
        let mut s = self.state.borrow_mut();
        let mut m = s.spare_msgs.pop().unwrap_or_else(TxMsg::new);
        m.sock = s.idx;
        m.to = *to;
        for p in parts {
            m.buf.extend_from_slice(p);
        }
        s.unsent += m.buf.len();
        s.out.push_back(m);
        if !s.listed {
            s.listed = true;
            self.lp.dgram_listed.borrow_mut().push(s.idx);
        }
    }

    /// Bytes queued or in flight.
    pub fn unsent(&self) -> usize {
        self.state.borrow().unsent
    }

    /// Waits while too much is unsent (so one task cannot queue without bound).
    pub async fn drained(&self) {
        std::future::poll_fn(|cx| {
            let mut s = self.state.borrow_mut();
            if s.unsent <= OUT_HIGH || (s.writer.is_some() && s.unsent <= OUT_LOW) {
                s.writer = None;
                return Poll::Ready(());
            }
            s.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.state.borrow().addr
    }

    /// The descriptor number (for reports; the loop owns the socket).
    pub fn raw_fd(&self) -> RawFd {
        self.state.borrow().fd.as_raw_fd()
    }
}

impl Drop for DatagramSocket {
    fn drop(&mut self) {
        let (idx, raw) = {
            let s = self.state.borrow();
            (s.idx, s.fd.as_raw_fd())
        };
        match &mut *self.lp.driver.borrow_mut() {
            Driver::Uring(u) => u.close_dgram(idx),
            Driver::Epoll(e) => e.remove_dgram(idx, raw),
        }
        // The backend keeps what armed requests read until they complete; the descriptor can
        // go now (an armed request holds its own reference to the socket).
        self.lp.dgrams.borrow_mut()[idx] = None;
    }
}

impl Loop {
    /// Starts receiving on `sock` on this loop.
    pub fn datagrams(self: &Rc<Self>, sock: UdpSocket) -> io::Result<DatagramSocket> {
        let idx = self.dgrams.borrow().len();
        let raw = sock.fd.as_raw_fd();
        match &mut *self.driver.borrow_mut() {
            Driver::Uring(u) => u.add_dgram(idx, raw),
            Driver::Epoll(e) => e.add_dgram(idx, raw)?,
        }
        let state = Rc::new(RefCell::new(DgramState {
            idx,
            fd: sock.fd,
            addr: sock.addr,
            queue: VecDeque::new(),
            queued_bytes: 0,
            paused: false,
            reader: None,
            out: VecDeque::new(),
            unsent: 0,
            in_flight: 0,
            writer: None,
            listed: false,
            spare_msgs: Vec::new(),
            spare_bufs: Vec::new(),
        }));
        self.dgrams.borrow_mut().push(Some(state.clone()));
        Ok(DatagramSocket {
            lp: self.clone(),
            state,
        })
    }

    fn dgram(&self, idx: usize) -> Option<Rc<RefCell<DgramState>>> {
        self.dgrams.borrow().get(idx).cloned().flatten()
    }

    /// A datagram arrived on socket `idx`; false asks the backend to stop receiving on it.
    pub(super) fn on_datagram(&self, idx: usize, bytes: &[u8], from: &PeerAddr) -> bool {
        let Some(s) = self.dgram(idx) else {
            return false;
        };
        let mut s = s.borrow_mut();
        let mut data = s.spare_bufs.pop().unwrap_or_default();
        data.extend_from_slice(bytes);
        s.queued_bytes += data.len();
        s.queue.push_back((data, *from));
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        if s.queue.len() >= QUEUE_HIGH || s.queued_bytes >= QUEUE_HIGH_BYTES {
            s.paused = true;
        }
        !s.paused
    }

    /// An io_uring send finished.
    pub(super) fn on_dgram_sent(&self, m: Box<TxMsg>, result: io::Result<usize>) {
        let Some(s) = self.dgram(m.sock) else {
            return;
        };
        let mut s = s.borrow_mut();
        if let Err(e) = result {
            log::debug!("UDP send to {:?} failed: {e}", m.to);
        }
        s.in_flight -= 1;
        s.sent(m.buf.len());
        s.recycle(m);
        if !s.out.is_empty() && !s.listed {
            s.listed = true;
            self.dgram_listed.borrow_mut().push(s.idx);
        }
    }

    /// Hands queued datagrams to the kernel. Returns whether some wait for a full socket
    /// buffer (epoll), to be retried shortly.
    pub(super) fn flush_dgrams(&self) -> bool {
        let listed = std::mem::take(&mut *self.dgram_listed.borrow_mut());
        let mut blocked = false;
        for idx in listed {
            let Some(rc) = self.dgram(idx) else { continue };
            let mut s = rc.borrow_mut();
            s.listed = false;
            let raw = s.fd.as_raw_fd();
            let mut full = false;
            let mut driver = self.driver.borrow_mut();
            while let Some(mut m) = s.out.pop_front() {
                match &mut *driver {
                    Driver::Uring(u) => {
                        if s.in_flight >= MAX_IN_FLIGHT {
                            s.out.push_front(m);
                            break; // a completion lists the socket again
                        }
                        m.prepare();
                        s.in_flight += 1;
                        u.send_dgram(raw, m);
                    }
                    Driver::Epoll(_) => {
                        m.prepare();
                        // SAFETY: `m.msg` points into `m`, alive and untouched for the call.
                        let r = unsafe { libc::sendmsg(raw, &m.msg, libc::MSG_DONTWAIT) };
                        if r < 0 {
                            let e = io::Error::last_os_error();
                            match e.kind() {
                                io::ErrorKind::Interrupted => {
                                    s.out.push_front(m);
                                    continue;
                                }
                                io::ErrorKind::WouldBlock => {
                                    s.out.push_front(m);
                                    full = true;
                                    break;
                                }
                                _ => log::debug!("UDP send to {:?} failed: {e}", m.to),
                            }
                        }
                        s.sent(m.buf.len());
                        s.recycle(m);
                    }
                }
            }
            if full {
                blocked = true;
                s.listed = true;
                self.dgram_listed.borrow_mut().push(idx);
            }
        }
        blocked
    }
}
