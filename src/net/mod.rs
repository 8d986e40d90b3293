//! The per-core network layer: one event loop per thread that owns the sockets, the kernel
//! interface (io_uring, or epoll where io_uring is refused) and the connection buffers, plus a
//! tiny executor for the tasks that drive connections. It knows nothing of memcached: a
//! connection task sees a [`Conn`] that hands it received bytes and takes bytes to send.
//!
//! One loop turn: collect completions (received bytes land in each connection's inbox, finished
//! sends free their buffers), let the turn hooks deliver cross-core mail, poll the woken tasks,
//! then queue one send per connection that has output, and enter the kernel once to submit them
//! and wait for the next completions. Idle means asleep in the kernel.

pub mod budget;
mod dgram;
mod epoll;
pub mod exec;
pub mod mail;
mod tls;
mod uring;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

pub use budget::{MemoryBudget, Reservation};
pub use dgram::{DatagramSocket, PeerAddr, UdpSocket, MAX_DATAGRAM};
use exec::Executor;
pub use tls::ServerConfig as TlsConfig;

/// Inbox bytes above which a connection stops receiving until its task catches up.
const INBOX_PAUSE: usize = 64 * 1024;
/// Output a connection may stage without drawing on the shared [`MemoryBudget`].
pub const OUT_ALLOWANCE: usize = 64 * 1024;
/// Staged output above which [`Conn::send`] waits for the socket to drain...
const OUT_HIGH: usize = 256 * 1024;
/// ...until it is below this.
const OUT_LOW: usize = 64 * 1024;
/// Buffer capacity a connection keeps between uses; larger ones are given back.
const KEEP_CAPACITY: usize = 16 * 1024;
/// Small replies are appended to the last queued output chunk while it holds less than this.
/// Bounded chunks never reallocate what they already hold, and stay small enough to be reused
/// warm: one contiguous buffer grown to 256 KiB under memcslap's mget was reallocated, and (with
/// the 128 KiB mmap threshold of the time) mapped and unmapped 450 times a second.
const CHUNK: usize = 64 * 1024;
/// Output up to this size is copied onto the last queued chunk; larger output is queued as is.
const COPY_MAX: usize = 4 * 1024;
/// Chunks one send carries at most (one io_uring SQE, or one `sendmsg` on epoll). A lent value
/// takes a chunk of its own between two owned ones, so a pipeline of 16 large gets needs ~33.
const MAX_IOV: usize = 64;
/// How soon datagrams refused by a full socket buffer are tried again (epoll).
const DGRAM_RETRY: Duration = Duration::from_millis(1);
/// Empty chunks a loop keeps for reuse (at most `SPARE_CHUNKS * CHUNK` bytes held idle).
const SPARE_CHUNKS: usize = 32;

/// Bytes a connection sends without owning them (a cached value, sent from where it is stored
/// instead of being copied into the output): `keep` holds whatever keeps them there, and is
/// dropped once no send reads them any more (after the send's completion, or when the
/// connection fails). The layer never reads the bytes itself, only hands their address to the
/// kernel.
pub struct Lent {
    ptr: *const u8,
    len: usize,
    _keep: Box<dyn std::any::Any>,
}

impl Lent {
    /// Wraps `len` bytes at `ptr`, kept valid by `keep`.
    ///
    /// # Safety
    /// The bytes must stay allocated and unchanged until `keep` is dropped.
    pub unsafe fn new(ptr: *const u8, len: usize, keep: Box<dyn std::any::Any>) -> Lent {
        Lent {
            ptr,
            len,
            _keep: keep,
        }
    }

    /// Bytes lent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are lent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lent bytes (for a sink that copies them instead of sending them in place).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `Lent::new`'s contract keeps the `len` bytes at `ptr` allocated and unchanged
        // while `_keep` lives, which is at least as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// One piece of a connection's output.
enum Chunk {
    /// Bytes the layer owns (reused for later output once sent).
    Own(Vec<u8>),
    /// Bytes lent by the task (see [`Lent`]).
    Lent(Lent),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Own(v) => v.len(),
            Chunk::Lent(l) => l.len,
        }
    }

    /// The address of byte `from` (`from <= len`).
    fn ptr_at(&self, from: usize) -> *const u8 {
        debug_assert!(from <= self.len());
        match self {
            Chunk::Own(v) => v[from..].as_ptr(),
            // `from` stays within the lent bytes, so the offset is in bounds of their object.
            Chunk::Lent(l) => l.ptr.wrapping_add(from),
        }
    }
}

/// Which kernel interface a loop uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring: multishot accept and receive, provided buffers, one enter per turn.
    Uring,
    /// epoll, edge-triggered, with plain reads and writes.
    Epoll,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// Sizes of one loop's kernel resources.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Backend to use.
    pub backend: Backend,
    /// Submission queue entries (io_uring).
    pub ring_entries: u32,
    /// Receive buffers in the provided-buffer ring (io_uring; a power of two).
    pub recv_buffers: u16,
    /// Size of each receive buffer.
    pub recv_buffer_size: usize,
    /// Receives kept armed per datagram socket (io_uring), each with a 64 KiB buffer.
    pub dgram_recv_slots: usize,
}

impl LoopConfig {
    /// Sizes suited to `loops` loops in one process: fewer kernel resources each when many.
    pub fn for_loops(backend: Backend, loops: usize) -> LoopConfig {
        let many = loops > 16;
        LoopConfig {
            backend,
            ring_entries: if many { 256 } else { 2048 },
            recv_buffers: if many { 64 } else { 512 },
            recv_buffer_size: 8 * 1024,
            dgram_recv_slots: if many { 1 } else { 4 },
        }
    }
}

/// Probes whether io_uring with the features the loop needs can be set up here; the error is
/// what the kernel said (EPERM under Docker's default seccomp profile, ENOSYS on old kernels).
pub fn probe_uring() -> io::Result<()> {
    uring::probe()
}

/// Lets other threads wake a sleeping loop: an eventfd the loop watches, written only when the
/// loop has announced that it is about to sleep.
pub struct Notifier {
    sleeping: AtomicBool,
    efd: OwnedFd,
}

impl Notifier {
    /// A new notifier (an eventfd).
    pub fn new() -> io::Result<Notifier> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Notifier {
            sleeping: AtomicBool::new(false),
            // SAFETY: `fd` was just created and is owned by nobody else.
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Wakes the loop if it sleeps (or is about to); free when it is awake.
    pub fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.kick();
        }
    }

    /// Wakes the loop whatever it is doing (shutdown).
    pub fn kick(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN) means
        // a wake-up is already pending, which is all we want.
        unsafe { libc::write(self.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Resets the eventfd counter after a wake-up (epoll backend).
    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN just means nothing was pending.
        unsafe { libc::read(self.efd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address (IPv4 or IPv6; port 0 picks a free one).
    Tcp(SocketAddr),
    /// A unix stream socket path.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A bound, listening socket. Bound without `SO_REUSEPORT`, so a second process asking for the
/// same address is refused with "address in use".
pub struct Listener {
    fd: OwnedFd,
    addr: ListenAddr,
}

impl Listener {
    /// Binds and listens on `addr`.
    pub fn bind(addr: &ListenAddr) -> io::Result<Listener> {
        Listener::bind_with(addr, BACKLOG)
    }

    /// As [`Listener::bind`], with the listen backlog given (memcached's `-b`).
    pub fn bind_with(addr: &ListenAddr, backlog: libc::c_int) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(sa) => bind_tcp(*sa, backlog),
            ListenAddr::Unix(path) => bind_unix(path, backlog),
        }
    }

    /// The address actually bound (the chosen port when 0 was asked).
    /// The socket's descriptor number (for reports).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The bound address.
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// Adopts a listening TCP socket someone else bound (socket activation), made non-blocking.
    pub fn from_tcp(listener: std::net::TcpListener) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        let addr = ListenAddr::Tcp(listener.local_addr()?);
        Listener::adopt(OwnedFd::from(listener), addr)
    }

    /// Adopts a listening unix stream socket someone else bound (socket activation).
    pub fn from_unix(listener: std::os::unix::net::UnixListener) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        let path = listener
            .local_addr()?
            .as_pathname()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        Listener::adopt(OwnedFd::from(listener), ListenAddr::Unix(path))
    }

    fn adopt(fd: OwnedFd, addr: ListenAddr) -> io::Result<Listener> {
        let mut listening: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live c_int and updates `len`.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut listening as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        if listening == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the socket for {addr} is not listening"),
            ));
        }
        Ok(Listener { fd, addr })
    }

    /// A second descriptor for the same socket (for another loop to accept on).
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(Listener {
            fd: self.fd.try_clone()?,
            addr: self.addr.clone(),
        })
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn new_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers; a non-negative result is a new descriptor we own.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const BACKLOG: libc::c_int = 1024;

fn bind_tcp(addr: SocketAddr, backlog: libc::c_int) -> io::Result<Listener> {
    let fd = new_socket(match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    })?;
    let raw = fd.as_raw_fd();
    // Restarting right after a stop must not wait for TIME_WAIT; this does not let two
    // listeners share the address (that would take SO_REUSEPORT).
    set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        // One address family per socket, so `-l 0.0.0.0,::` can bind both on one port.
        set_int_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a valid address of `len` bytes.
    cvt(unsafe { libc::bind(raw, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    // SAFETY: listen takes no pointers.
    cvt(unsafe { libc::listen(raw, backlog) })?;
    let bound = std::net::TcpListener::from(fd);
    let local = bound.local_addr()?;
    Ok(Listener {
        fd: OwnedFd::from(bound),
        addr: ListenAddr::Tcp(local),
    })
}

/// Starts a TCP connection to `addr` without waiting for it: the socket is for
/// [`Loop::adopt`], whose first send goes out once the connection is up, and whose first
/// receive reports a refused or failed connection as an error.
pub fn connect_tcp(addr: SocketAddr) -> io::Result<OwnedFd> {
    let fd = new_socket(match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    })?;
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a valid address of `len` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(fd)
}

/// `addr` as the kernel takes it, with its length.
fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, valid when zeroed.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn bind_unix(path: &std::path::Path, backlog: libc::c_int) -> io::Result<Listener> {
    use std::os::unix::fs::FileTypeExt;
    // Like memcached: a socket file left by an earlier run is replaced; anything else is not.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    // std listens with its own backlog; listening again only changes it.
    // SAFETY: listen takes no pointers; the descriptor is the listener's own.
    cvt(unsafe { libc::listen(l.as_raw_fd(), backlog) })?;
    l.set_nonblocking(true)?;
    Ok(Listener {
        fd: OwnedFd::from(l),
        addr: ListenAddr::Unix(path.to_path_buf()),
    })
}

/// What the backends report to the loop.
enum Ev<'a> {
    /// A connection arrived on listener `idx`.
    Accepted { idx: usize, fd: OwnedFd },
    /// Accepting failed (e.g. out of descriptors); `stalled`: the listener must be re-armed.
    AcceptFailed {
        idx: usize,
        err: io::Error,
        stalled: bool,
    },
    /// Listener `idx` stopped accepting (cancelled); its descriptor may be closed.
    AcceptEnded { idx: usize },
    /// Bytes received on a connection.
    Data { id: ConnId, bytes: &'a [u8] },
    /// The connection's receiving ended: `Ok` for end of stream, else the error. `rearm` asks
    /// the loop to start receiving again (the kernel ran out of buffers, or it was paused).
    RecvEnded {
        id: ConnId,
        result: io::Result<()>,
        rearm: bool,
    },
    /// A send finished: bytes sent or the error.
    Sent {
        id: ConnId,
        result: io::Result<usize>,
    },
    /// The socket can take more bytes (epoll).
    Writable { id: ConnId },
    /// A datagram arrived on datagram socket `sock`.
    Datagram {
        sock: usize,
        bytes: &'a [u8],
        from: &'a PeerAddr,
    },
    /// A datagram send finished (io_uring); its message comes back.
    DgramSent {
        msg: Box<dgram::TxMsg>,
        result: io::Result<usize>,
    },
}

/// A connection's slot and generation (a reused slot gets a new generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnId {
    slot: u32,
    gen: u16,
}

impl ConnId {
    /// The 64-bit tag a backend attaches to a kernel request: `kind` in the top byte, then the
    /// generation and the slot (for listeners and the wake-up, the slot is their index).
    fn tag(self, kind: u64) -> u64 {
        kind << 56 | (self.gen as u64) << 32 | self.slot as u64
    }

    /// The kind and id of a [`ConnId::tag`].
    fn untag(tag: u64) -> (u64, ConnId) {
        let id = ConnId {
            slot: tag as u32,
            gen: (tag >> 32) as u16,
        };
        (tag >> 56, id)
    }

    /// An id naming listener or other non-connection slot `index`.
    fn index(index: usize) -> ConnId {
        ConnId {
            slot: index as u32,
            gen: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvState {
    /// The kernel delivers data as it arrives.
    On,
    /// Stop asked; the backend has not confirmed yet.
    Stopping,
    /// Not receiving (paused, or ended).
    Off,
}

struct ConnState {
    id: ConnId,
    fd: OwnedFd,
    /// Received bytes the task has not taken yet.
    inbox: Vec<u8>,
    /// The stream ended (or failed: `error`); no more bytes will arrive.
    rx_done: bool,
    error: Option<io::Error>,
    reader: Option<Waker>,
    /// Output the task handed over, in order, not yet sent; `out[0][sent..]` goes first.
    out: VecDeque<Chunk>,
    sent: usize,
    /// Bytes in `out` not yet sent.
    staged: usize,
    /// Chunks at the front of `out` that the send in flight reads (io_uring; 0 when none):
    /// they are neither touched nor dropped until its completion.
    in_flight: usize,
    /// What a send of several chunks hands the kernel.
    vec: Box<SendVec>,
    writer: Option<Waker>,
    recv: RecvState,
    /// Listed for the end-of-turn flush.
    listed: bool,
    /// The task dropped its handle: flush, then close.
    handle_gone: bool,
    /// The server is stopping: the task should finish.
    stopping: bool,
    /// Budget held for output beyond [`OUT_ALLOWANCE`]; given back once all is sent.
    out_budget: Reservation,
    /// The TLS session of a TLS connection: `out` then holds ciphertext, and `staged` counts
    /// it plus the plaintext waiting in the session.
    tls: Option<Box<tls::Tls>>,
}

/// The vector of a multi-chunk send. Boxed: its address must not change while the kernel reads
/// it (an io_uring SENDMSG in flight).
struct SendVec {
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
}

impl SendVec {
    fn new() -> Box<SendVec> {
        Box::new(SendVec {
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV],
            // SAFETY: msghdr is plain data; all zeroes is an empty header.
            msg: unsafe { std::mem::zeroed() },
        })
    }
}

impl ConnState {
    fn staged(&self) -> usize {
        self.staged
    }

    /// Points the send vector at the unsent front of up to [`MAX_IOV`] chunks; returns how many
    /// chunks and bytes it covers. The pointers stay valid while those chunks are not touched.
    fn fill_vec(&mut self) -> (usize, usize) {
        let v = &mut *self.vec;
        let mut bytes = 0;
        let mut chunks = 0;
        for (i, chunk) in self.out.iter().take(MAX_IOV).enumerate() {
            let from = if i == 0 { self.sent } else { 0 };
            let len = chunk.len() - from;
            v.iov[i] = libc::iovec {
                iov_base: chunk.ptr_at(from) as *mut libc::c_void,
                iov_len: len,
            };
            bytes += len;
            chunks += 1;
        }
        v.msg.msg_iov = v.iov.as_mut_ptr();
        v.msg.msg_iovlen = chunks as _;
        (chunks, bytes)
    }

    /// Accounts `n` more bytes as sent: recycles the chunks fully sent into `spare`, gives the
    /// budget share back once nothing is staged, and wakes a task waiting for the output to
    /// drain.
    fn advance(&mut self, mut n: usize, spare: &RefCell<Vec<Vec<u8>>>) {
        self.staged -= n;
        while n > 0 {
            let left = self.out[0].len() - self.sent;
            if n < left {
                self.sent += n;
                break;
            }
            n -= left;
            self.sent = 0;
            if let Some(chunk) = self.out.pop_front() {
                recycle(spare, chunk);
            }
        }
        if self.staged == 0 {
            self.out_budget.resize(0);
        }
        if self.staged <= OUT_LOW {
            if let Some(w) = self.writer.take() {
                w.wake();
            }
        }
    }

    /// Drops the output no send in flight reads (the connection failed: it can never go).
    fn discard_unsent(&mut self, spare: &RefCell<Vec<Vec<u8>>>) {
        while self.out.len() > self.in_flight {
            if let Some(chunk) = self.out.pop_back() {
                recycle(spare, chunk);
            }
        }
        if self.out.is_empty() {
            self.sent = 0;
        }
        if let Some(t) = self.tls.as_mut() {
            t.discard_pending(spare);
        }
        self.staged = self.out.iter().map(Chunk::len).sum::<usize>() - self.sent;
    }

    /// TLS: encrypts the plaintext the task staged (and, once the task is gone, queues the
    /// close_notify), so what is staged is ciphertext ready to send.
    fn seal(&mut self, spare: &RefCell<Vec<Vec<u8>>>) {
        let Some(t) = self.tls.as_mut() else {
            return;
        };
        if self.handle_gone && t.handshaking() {
            // Nobody waits for the handshake any more: what waits for it never goes.
            let n = t.discard_pending(spare);
            self.staged -= n;
        }
        let sealed = t
            .encrypt(&mut self.out, self.in_flight, spare)
            .and_then(|(p, c)| {
                self.staged = self.staged - p + c;
                if self.handle_gone && t.pending_bytes() == 0 {
                    self.staged += t.close(&mut self.out, self.in_flight, spare)?;
                }
                Ok(())
            });
        if let Err(e) = sealed {
            self.error.get_or_insert(e);
            self.wake_all();
            self.discard_unsent(spare);
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    fn wake_all(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// Keeps an emptied output chunk for reuse, unless it is large or enough are kept; a lent one
/// is given back to its lender.
fn recycle(spare: &RefCell<Vec<Vec<u8>>>, chunk: Chunk) {
    let Chunk::Own(mut chunk) = chunk else {
        return;
    };
    let mut spare = spare.borrow_mut();
    if chunk.capacity() <= CHUNK && spare.len() < SPARE_CHUNKS {
        chunk.clear();
        spare.push(chunk);
    }
}

enum Driver {
    // Boxed: one per thread, reached through a RefCell; the size only matters for clippy.
    Uring(Box<uring::Uring>),
    Epoll(epoll::Epoll),
}

struct AcceptState {
    queue: VecDeque<io::Result<OwnedFd>>,
    waker: Option<Waker>,
    /// Still armed in the backend (its descriptor must stay open until it is not).
    armed: bool,
    /// An error stopped the backend's accepting; re-arm before waiting again.
    stalled: bool,
    fd: Option<OwnedFd>,
}

/// A hook run every turn; returns whether it left work that must not wait for the kernel
/// (e.g. mail still arriving).
type Hook = Box<dyn Fn() -> bool>;

/// One core's event loop. Reach it from its thread with [`Loop::current`].
pub struct Loop {
    exec: Executor,
    driver: RefCell<Driver>,
    backend: Backend,
    conns: RefCell<Vec<Option<Rc<RefCell<ConnState>>>>>,
    free_slots: RefCell<Vec<u32>>,
    next_gen: Cell<u16>,
    /// Connections with output to send or a close to finish.
    listed: RefCell<Vec<u32>>,
    /// Connections whose receiving must be stopped or restarted.
    recv_changes: RefCell<Vec<u32>>,
    acceptors: RefCell<Vec<Rc<RefCell<AcceptState>>>>,
    notifier: std::sync::Arc<Notifier>,
    budget: std::sync::Arc<MemoryBudget>,
    hooks: RefCell<Vec<Hook>>,
    /// Emptied output chunks, reused by the next connection that queues output.
    spare: RefCell<Vec<Vec<u8>>>,
    /// Whether any hook may have more work (checked before sleeping).
    pending_check: RefCell<Vec<Box<dyn Fn() -> bool>>>,
    /// Datagram sockets by index (`None` once closed; indices are not reused).
    dgrams: RefCell<Vec<Option<Rc<RefCell<dgram::DgramState>>>>>,
    /// Datagram sockets with datagrams to send.
    dgram_listed: RefCell<Vec<usize>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Loop>>> = const { RefCell::new(None) };
}

impl Loop {
    /// Creates this thread's loop (one per thread), woken from other threads through `notifier`;
    /// connections draw large output buffers from `budget`.
    pub fn new(
        config: LoopConfig,
        notifier: std::sync::Arc<Notifier>,
        budget: std::sync::Arc<MemoryBudget>,
    ) -> io::Result<Rc<Loop>> {
        let driver = match config.backend {
            Backend::Uring => Driver::Uring(Box::new(uring::Uring::new(&config, notifier.fd())?)),
            Backend::Epoll => Driver::Epoll(epoll::Epoll::new(notifier.fd())?),
        };
        let lp = Rc::new(Loop {
            exec: Executor::default(),
            driver: RefCell::new(driver),
            backend: config.backend,
            conns: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            next_gen: Cell::new(0),
            listed: RefCell::new(Vec::new()),
            recv_changes: RefCell::new(Vec::new()),
            acceptors: RefCell::new(Vec::new()),
            notifier,
            budget,
            hooks: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
            pending_check: RefCell::new(Vec::new()),
            dgrams: RefCell::new(Vec::new()),
            dgram_listed: RefCell::new(Vec::new()),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(lp.clone()));
        Ok(lp)
    }

    /// This thread's loop. Panics when called outside one (a bug, not a runtime condition).
    pub fn current() -> Rc<Loop> {
        CURRENT
            .with(|c| c.borrow().clone())
            .expect("not on an event loop thread")
    }

    /// The backend this loop runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a task on this loop.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + 'static) {
        self.exec.spawn(fut);
    }

    /// Adds a hook run every turn, after completions and after tasks ran (e.g. to deliver and
    /// send cross-core mail); `has_work` tells, just before the loop sleeps, whether the hook
    /// would find work (the loop then does not sleep).
    pub fn add_hook(
        &self,
        hook: impl Fn() -> bool + 'static,
        has_work: impl Fn() -> bool + 'static,
    ) {
        self.hooks.borrow_mut().push(Box::new(hook));
        self.pending_check.borrow_mut().push(Box::new(has_work));
    }

    /// Starts accepting connections on `listener`.
    pub fn accept_on(self: &Rc<Self>, listener: Listener) -> io::Result<Acceptor> {
        let idx = self.acceptors.borrow().len();
        let raw = listener.fd.as_raw_fd();
        let state = Rc::new(RefCell::new(AcceptState {
            queue: VecDeque::new(),
            waker: None,
            armed: true,
            stalled: false,
            fd: Some(listener.fd),
        }));
        self.acceptors.borrow_mut().push(state.clone());
        match &mut *self.driver.borrow_mut() {
            Driver::Uring(u) => u.arm_accept(idx, raw),
            Driver::Epoll(e) => e.add_listener(idx, raw)?,
        }
        Ok(Acceptor {
            lp: self.clone(),
            idx,
            state,
        })
    }

    /// Takes an accepted (or handed-over) socket into this loop and starts receiving on it.
    pub fn adopt(self: &Rc<Self>, fd: OwnedFd) -> io::Result<Conn> {
        self.adopt_with(fd, None)
    }

    /// As [`Loop::adopt`], for a TLS connection: the server side of a session with `config`
    /// runs over the socket (its handshake first), and the task reads and writes plaintext.
    /// Small outputs are joined into one record up to `join_max` bytes.
    pub fn adopt_tls(
        self: &Rc<Self>,
        fd: OwnedFd,
        config: std::sync::Arc<TlsConfig>,
        join_max: usize,
    ) -> io::Result<Conn> {
        let session = tls::Tls::new(config, join_max)?;
        self.adopt_with(fd, Some(Box::new(session)))
    }

    fn adopt_with(self: &Rc<Self>, fd: OwnedFd, tls: Option<Box<tls::Tls>>) -> io::Result<Conn> {
        // Replies go out at once; harmless failure on unix sockets.
        let _ = set_int_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        let slot = match self.free_slots.borrow_mut().pop() {
            Some(s) => s,
            None => {
                let mut conns = self.conns.borrow_mut();
                conns.push(None);
                (conns.len() - 1) as u32
            }
        };
        let gen = self.next_gen.get().wrapping_add(1);
        self.next_gen.set(gen);
        let id = ConnId { slot, gen };
        let raw = fd.as_raw_fd();
        let state = Rc::new(RefCell::new(ConnState {
            id,
            fd,
            inbox: Vec::new(),
            rx_done: false,
            error: None,
            reader: None,
            out: VecDeque::new(),
            sent: 0,
            staged: 0,
            in_flight: 0,
            vec: SendVec::new(),
            writer: None,
            recv: RecvState::On,
            listed: false,
            handle_gone: false,
            stopping: false,
            out_budget: Reservation::new(self.budget.clone()),
            tls,
        }));
        let started = match &mut *self.driver.borrow_mut() {
            Driver::Uring(u) => {
                u.start_recv(id, raw);
                Ok(())
            }
            Driver::Epoll(e) => e.add_conn(id, raw),
        };
        if let Err(e) = started {
            self.free_slots.borrow_mut().push(slot);
            return Err(e);
        }
        self.conns.borrow_mut()[slot as usize] = Some(state.clone());
        Ok(Conn {
            lp: self.clone(),
            state,
        })
    }

    /// Number of connections not yet fully closed.
    pub fn open_connections(&self) -> usize {
        self.conns.borrow().iter().filter(|c| c.is_some()).count()
    }

    /// Asks every connection task to finish (graceful stop): their receives return end of
    /// stream once the bytes already received are taken.
    pub fn stop_connections(&self) {
        for c in self.conns.borrow().iter().flatten() {
            let mut c = c.borrow_mut();
            c.stopping = true;
            c.wake_all();
        }
    }

    fn conn(&self, id: ConnId) -> Option<Rc<RefCell<ConnState>>> {
        let c = self.conns.borrow().get(id.slot as usize)?.clone()?;
        let same = c.borrow().id == id;
        same.then_some(c)
    }

    fn list(&self, c: &mut ConnState) {
        if !c.listed {
            c.listed = true;
            self.listed.borrow_mut().push(c.id.slot);
        }
    }

    /// Handles one backend event; false asks the backend to stop reading this connection for
    /// now (its inbox is full).
    fn on_event(&self, ev: Ev<'_>) -> bool {
        match ev {
            Ev::Data { id, bytes } => return self.on_data(id, bytes),
            Ev::Datagram { sock, bytes, from } => return self.on_datagram(sock, bytes, from),
            Ev::DgramSent { msg, result } => {
                self.on_dgram_sent(msg, result);
                return true;
            }
            _ => {}
        }
        self.on_other_event(ev);
        true
    }

    fn on_data(&self, id: ConnId, bytes: &[u8]) -> bool {
        let Some(c) = self.conn(id) else {
            return false;
        };
        let mut c = c.borrow_mut();
        let need = c.inbox.len() + bytes.len();
        // (TLS: the session grows the inbox by the plaintext it yields, none mid-handshake.)
        if need > c.inbox.capacity() && c.tls.is_none() {
            // Doubling, but never far beyond the pause mark: an inbox of 64 KiB + one buffer
            // must not become a 128 KiB allocation (times every connection of a crowd).
            let want = (c.inbox.capacity() * 2)
                .clamp(2048, INBOX_PAUSE + bytes.len())
                .max(need);
            let len = c.inbox.len();
            c.inbox.reserve_exact(want - len);
        }
        if c.tls.is_some() {
            self.on_tls_data(&mut c, bytes);
        } else {
            c.inbox.extend_from_slice(bytes);
        }
        if let Some(w) = c.reader.take() {
            w.wake();
        }
        if c.inbox.len() > INBOX_PAUSE && c.recv == RecvState::On {
            c.recv = RecvState::Stopping;
            self.recv_changes.borrow_mut().push(id.slot);
        }
        c.recv == RecvState::On
    }

    /// Received ciphertext: through the session into the inbox; the handshake's answers (or an
    /// alert) are queued for sending.
    fn on_tls_data(&self, c: &mut ConnState, bytes: &[u8]) {
        let ConnState {
            tls, inbox, out, ..
        } = c;
        let Some(t) = tls.as_mut() else { return };
        match t.receive(bytes, inbox) {
            Ok(()) => {
                // Handshake messages, or plaintext staged before the handshake completed.
                match t.encrypt(out, c.in_flight, &self.spare) {
                    Ok((p, q)) => c.staged = c.staged - p + q,
                    Err(e) => {
                        c.error.get_or_insert(e);
                        c.wake_all();
                    }
                }
                if c.staged > 0 || c.failed() {
                    self.list(c);
                }
            }
            Err(e) => {
                // Best effort: tell the peer why (its alert), if nothing else is on its way.
                let alert = t.take_alert();
                if !alert.is_empty() && c.in_flight == 0 && c.staged == 0 {
                    // SAFETY: sends from a live buffer of `alert.len()` bytes; never blocks.
                    unsafe {
                        libc::send(
                            c.fd.as_raw_fd(),
                            alert.as_ptr().cast(),
                            alert.len(),
                            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                        )
                    };
                }
                c.error.get_or_insert(e);
                c.wake_all();
                self.list(c);
            }
        }
    }

    fn on_other_event(&self, ev: Ev<'_>) {
        match ev {
            Ev::Accepted { idx, fd } => self.to_acceptor(idx, Ok(fd)),
            Ev::AcceptFailed { idx, err, stalled } => {
                if stalled {
                    if let Some(a) = self.acceptors.borrow().get(idx) {
                        a.borrow_mut().stalled = true;
                    }
                }
                self.to_acceptor(idx, Err(err))
            }
            Ev::AcceptEnded { idx } => {
                if let Some(a) = self.acceptors.borrow().get(idx) {
                    let mut a = a.borrow_mut();
                    a.armed = false;
                    if let Some(w) = a.waker.take() {
                        w.wake();
                    }
                }
            }
            Ev::Data { .. } | Ev::Datagram { .. } | Ev::DgramSent { .. } => {}
            Ev::RecvEnded { id, result, rearm } => {
                let Some(c) = self.conn(id) else { return };
                let mut c = c.borrow_mut();
                c.recv = RecvState::Off;
                match result {
                    Ok(()) => c.rx_done = true,
                    Err(e) => {
                        c.rx_done = true;
                        c.error.get_or_insert(e);
                    }
                }
                if rearm && !c.handle_gone {
                    // Not an end: restart when the task has room (possibly at once).
                    c.rx_done = false;
                    self.recv_changes.borrow_mut().push(id.slot);
                }
                if c.failed() {
                    // Also a task waiting for its output to drain: it never will.
                    c.wake_all();
                } else if let Some(w) = c.reader.take() {
                    w.wake();
                }
                if c.handle_gone || c.failed() {
                    self.list(&mut c);
                }
            }
            Ev::Sent { id, result } => {
                let Some(c) = self.conn(id) else { return };
                let mut c = c.borrow_mut();
                c.in_flight = 0;
                match result {
                    Ok(n) => c.advance(n, &self.spare),
                    Err(e) => {
                        c.error.get_or_insert(e);
                        c.wake_all();
                    }
                }
                self.list(&mut c);
            }
            Ev::Writable { id } => {
                let Some(c) = self.conn(id) else { return };
                let mut c = c.borrow_mut();
                if c.staged() > 0 || c.handle_gone {
                    self.list(&mut c);
                }
            }
        }
    }

    fn to_acceptor(&self, idx: usize, r: io::Result<OwnedFd>) {
        let Some(a) = self.acceptors.borrow().get(idx).cloned() else {
            return;
        };
        let mut a = a.borrow_mut();
        a.queue.push_back(r);
        if let Some(w) = a.waker.take() {
            w.wake();
        }
    }

    /// Applies receive pauses and restarts decided during the turn.
    fn apply_recv_changes(&self) {
        let slots = std::mem::take(&mut *self.recv_changes.borrow_mut());
        for slot in slots {
            let Some(c) = self.conns.borrow().get(slot as usize).cloned().flatten() else {
                continue;
            };
            let mut c = c.borrow_mut();
            let raw = c.fd.as_raw_fd();
            match c.recv {
                // The task caught up before the pause took effect: keep receiving. (Pausing
                // now would leave nobody to resume it: the task only asks when it takes bytes.)
                RecvState::Stopping if c.inbox.len() <= INBOX_PAUSE && !c.handle_gone => {
                    c.recv = RecvState::On;
                    if let Driver::Epoll(e) = &mut *self.driver.borrow_mut() {
                        // It may have stopped reading when the inbox was full.
                        e.resume(c.id);
                    }
                }
                RecvState::Stopping => match &mut *self.driver.borrow_mut() {
                    Driver::Uring(u) => u.cancel_recv(c.id),
                    Driver::Epoll(e) => {
                        e.pause(c.id);
                        c.recv = RecvState::Off;
                    }
                },
                RecvState::Off if !c.rx_done && !c.handle_gone && c.inbox.len() <= INBOX_PAUSE => {
                    c.recv = RecvState::On;
                    match &mut *self.driver.borrow_mut() {
                        Driver::Uring(u) => u.start_recv(c.id, raw),
                        Driver::Epoll(e) => e.resume(c.id),
                    }
                }
                _ => {}
            }
        }
    }

    /// Starts one send per listed connection, and finishes closes.
    fn flush_listed(&self) {
        let slots = std::mem::take(&mut *self.listed.borrow_mut());
        for slot in slots {
            let Some(rc) = self.conns.borrow().get(slot as usize).cloned().flatten() else {
                continue;
            };
            let mut c = rc.borrow_mut();
            c.listed = false;
            if c.failed() {
                c.discard_unsent(&self.spare);
            } else {
                c.seal(&self.spare);
            }
            // io_uring: one send in flight per connection, carrying up to MAX_IOV chunks.
            // epoll: write until the socket is full (its EPOLLOUT edge then says when to go
            // on) or nothing is left.
            while c.in_flight == 0 && c.staged > 0 && !c.failed() {
                let raw = c.fd.as_raw_fd();
                let id = c.id;
                match &mut *self.driver.borrow_mut() {
                    Driver::Uring(u) => {
                        // SAFETY (of the pointers' lifetime): the chunks the send reads, and
                        // `vec`, are neither touched nor dropped while `in_flight` covers them;
                        // the slot is not freed before the send's completion (see `try_close`).
                        if c.out.len() == 1 {
                            let len = c.out[0].len() - c.sent;
                            u.send(id, raw, c.out[0].ptr_at(c.sent), len);
                            c.in_flight = 1;
                        } else {
                            let (chunks, _) = c.fill_vec();
                            u.send_msg(id, raw, &c.vec.msg);
                            c.in_flight = chunks;
                        }
                    }
                    Driver::Epoll(_) => {
                        let (_, bytes) = c.fill_vec();
                        // SAFETY: `vec` points into chunks of `out`, alive and untouched for
                        // the call.
                        let r = unsafe {
                            libc::sendmsg(raw, &c.vec.msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                        };
                        if r < 0 {
                            let e = io::Error::last_os_error();
                            match e.kind() {
                                io::ErrorKind::Interrupted => continue,
                                io::ErrorKind::WouldBlock => {}
                                _ => {
                                    c.error.get_or_insert(e);
                                    c.wake_all();
                                }
                            }
                            break;
                        }
                        c.advance(r as usize, &self.spare);
                        if (r as usize) < bytes {
                            break; // the socket is full
                        }
                    }
                }
            }
            drop(c);
            self.try_close(&rc);
        }
    }

    /// Closes a connection whose task is gone once nothing of it is left in the kernel.
    fn try_close(&self, rc: &Rc<RefCell<ConnState>>) {
        let mut c = rc.borrow_mut();
        if !c.handle_gone || c.in_flight > 0 || (c.staged() > 0 && !c.failed()) {
            return;
        }
        if c.recv != RecvState::Off {
            if c.recv == RecvState::On {
                c.recv = RecvState::Stopping;
                match &mut *self.driver.borrow_mut() {
                    Driver::Uring(u) => u.cancel_recv(c.id),
                    Driver::Epoll(_) => c.recv = RecvState::Off,
                }
            }
            if c.recv != RecvState::Off {
                return; // the cancel's completion lists it again
            }
        }
        let slot = c.id.slot;
        drop(c);
        self.conns.borrow_mut()[slot as usize] = None;
        self.free_slots.borrow_mut().push(slot);
        // Dropping the state closes the descriptor (epoll forgets it by itself).
    }

    fn has_pending_work(&self) -> bool {
        self.exec.has_ready()
            || !self.listed.borrow().is_empty()
            || !self.recv_changes.borrow().is_empty()
            || self.pending_check.borrow().iter().any(|f| f())
    }

    fn run_hooks(&self) -> bool {
        let mut more = false;
        for h in self.hooks.borrow().iter() {
            more |= h();
        }
        more
    }

    /// One turn: kernel completions, hooks and tasks until quiet, then sends.
    fn turn(&self) -> io::Result<()> {
        // Tasks and hooks until nothing is ready (bounded, so I/O is never starved).
        for _ in 0..64 {
            let more = self.run_hooks();
            if self.exec.run_ready() == 0 && !more {
                break;
            }
        }
        self.run_hooks();
        self.apply_recv_changes();
        self.flush_listed();
        let dgrams_blocked = self.flush_dgrams();

        let now = Instant::now();
        let mut timeout = self.exec.fire_timers(now);
        if dgrams_blocked {
            // A full UDP send buffer raises no event we wait for: look again shortly.
            timeout = Some(timeout.map_or(DGRAM_RETRY, |t| t.min(DGRAM_RETRY)));
        }
        if self.exec.has_ready() || !self.recv_changes.borrow().is_empty() {
            timeout = Some(Duration::ZERO);
        } else {
            // Announce the sleep, then look once more: mail posted before the announcement is
            // seen here, mail posted after it finds the flag and writes the eventfd.
            self.notifier.sleeping.store(true, Ordering::SeqCst);
            if self.has_pending_work() {
                // Not sleeping after all: peers need not write the eventfd.
                self.notifier.sleeping.store(false, Ordering::Relaxed);
                timeout = Some(Duration::ZERO);
            }
        }
        let mut sink = |ev: Ev<'_>| self.on_event(ev);
        let r = match &mut *self.driver.borrow_mut() {
            Driver::Uring(u) => u.wait(timeout, &mut sink),
            Driver::Epoll(e) => e.wait(timeout, &self.notifier, &mut sink),
        };
        self.notifier.sleeping.store(false, Ordering::Relaxed);
        r
    }

    /// Runs `main` and everything it spawns until `main` finishes; then drops the remaining
    /// tasks and closes what they left.
    pub fn block_on(
        self: &Rc<Self>,
        main: impl std::future::Future<Output = ()> + 'static,
    ) -> io::Result<()> {
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        self.spawn(async move {
            main.await;
            d.set(true);
        });
        while !done.get() {
            self.turn()?;
        }
        self.exec.clear();
        // Flush and close what the dropped tasks left, briefly.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.open_connections() > 0 && Instant::now() < deadline {
            self.flush_listed();
            let mut sink = |ev: Ev<'_>| self.on_event(ev);
            match &mut *self.driver.borrow_mut() {
                Driver::Uring(u) => u.wait(Some(Duration::from_millis(10)), &mut sink)?,
                Driver::Epoll(e) => {
                    e.wait(Some(Duration::from_millis(10)), &self.notifier, &mut sink)?
                }
            }
        }
        CURRENT.with(|c| c.borrow_mut().take());
        Ok(())
    }
}

/// Resolves after `d` (on the current loop).
pub async fn sleep(d: Duration) {
    let at = Instant::now() + d;
    let lp = Loop::current();
    let mut timer: Option<u64> = None;
    std::future::poll_fn(|cx| {
        if Instant::now() >= at {
            return Poll::Ready(());
        }
        if let Some(id) = timer.take() {
            lp.exec.cancel_timer(id);
        }
        timer = Some(lp.exec.add_timer(at, cx.waker().clone()));
        Poll::Pending
    })
    .await
}

/// Runs `fut` for at most `d`; `None` when time ran out.
pub async fn timeout<T>(d: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(d).await;
        None
    })
    .await
}

/// A listener's stream of accepted sockets; dropping it stops accepting and closes it.
pub struct Acceptor {
    lp: Rc<Loop>,
    idx: usize,
    state: Rc<RefCell<AcceptState>>,
}

impl Acceptor {
    /// The next accepted socket (or accept error).
    pub async fn accept(&self) -> io::Result<OwnedFd> {
        std::future::poll_fn(|cx| {
            let mut a = self.state.borrow_mut();
            match a.queue.pop_front() {
                Some(r) => Poll::Ready(r),
                None => {
                    if std::mem::take(&mut a.stalled) {
                        if let Driver::Uring(u) = &mut *self.lp.driver.borrow_mut() {
                            u.rearm_accept(self.idx);
                        }
                    }
                    a.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Stops accepting; resolves once the backend released the socket.
    pub async fn close(self) {
        {
            let a = self.state.borrow();
            if a.armed {
                let raw = a.fd.as_ref().map_or(-1, |f| f.as_raw_fd());
                match &mut *self.lp.driver.borrow_mut() {
                    Driver::Uring(u) => u.cancel_accept(self.idx),
                    Driver::Epoll(e) => e.remove_listener(raw),
                }
            }
        }
        if self.lp.backend == Backend::Epoll {
            self.state.borrow_mut().armed = false;
        }
        std::future::poll_fn(|cx| {
            let mut a = self.state.borrow_mut();
            if a.armed {
                a.waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        let mut a = self.state.borrow_mut();
        a.fd = None;
        a.queue.clear();
    }
}

/// A connection as its task sees it: bytes in, bytes out. Dropping it flushes what was handed
/// to [`Conn::send`] and closes the socket.
pub struct Conn {
    lp: Rc<Loop>,
    state: Rc<RefCell<ConnState>>,
}

impl Conn {
    /// Moves the bytes received since the last call to the end of `buf`, waiting for some if
    /// none came yet. Returns `Ok(false)` at end of stream, or when the server stops.
    pub async fn recv(&self, buf: &mut Vec<u8>) -> io::Result<bool> {
        std::future::poll_fn(|cx| {
            let mut c = self.state.borrow_mut();
            if !c.inbox.is_empty() {
                if buf.is_empty() && buf.capacity() <= c.inbox.capacity() {
                    std::mem::swap(buf, &mut c.inbox);
                } else {
                    buf.extend_from_slice(&c.inbox);
                }
                c.inbox.clear();
                if c.inbox.capacity() > KEEP_CAPACITY {
                    c.inbox = Vec::new();
                }
                if c.recv == RecvState::Off && !c.rx_done {
                    self.lp.recv_changes.borrow_mut().push(c.id.slot);
                }
                return Poll::Ready(Ok(true));
            }
            if let Some(e) = &c.error {
                return Poll::Ready(Err(io::Error::new(e.kind(), e.to_string())));
            }
            if c.rx_done || c.stopping {
                return Poll::Ready(Ok(false));
            }
            c.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Hands `out` to the loop (it leaves `out` empty) and waits while too much of this
    /// connection's output is still unsent, so a client that does not read stops its own
    /// requests from being served.
    pub async fn send(&self, out: &mut Vec<u8>) -> io::Result<()> {
        self.stage(out)?;
        std::future::poll_fn(|cx| {
            let mut c = self.state.borrow_mut();
            if let Some(e) = &c.error {
                return Poll::Ready(Err(io::Error::new(e.kind(), e.to_string())));
            }
            if c.staged() <= OUT_HIGH || (c.writer.is_some() && c.staged() <= OUT_LOW) {
                c.writer = None;
                return Poll::Ready(Ok(()));
            }
            c.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Queues `out` for sending without waiting (it leaves `out` empty); the next
    /// [`Conn::send`] waits for the lot.
    pub fn stage(&self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let mut c = self.state.borrow_mut();
        if let Some(e) = &c.error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        if let Some(t) = c.tls.as_mut() {
            // Plaintext waits for the end of the turn, when it is encrypted (`seal`).
            c.staged += t.stage(out, &self.lp.spare);
            self.lp.list(&mut c);
            return Ok(());
        }
        let len = out.len();
        // Copy small output onto the last chunk if no send reads it and it stays small;
        // queue anything larger as a chunk of its own (no copy; the send's vector joins
        // them) and give the caller a spare in its place.
        let appendable = c.out.len() > c.in_flight && len < COPY_MAX;
        match c.out.back_mut() {
            Some(Chunk::Own(last)) if appendable && last.len() + len <= CHUNK => {
                last.extend_from_slice(out);
                out.clear();
            }
            _ => {
                let fresh = self.lp.spare.borrow_mut().pop().unwrap_or_default();
                c.out.push_back(Chunk::Own(std::mem::replace(out, fresh)));
            }
        }
        c.staged += len;
        self.lp.list(&mut c);
        Ok(())
    }

    /// Queues lent bytes after everything staged so far, without waiting. Never drops `lent`
    /// here (a failed connection lets it go on the loop's next flush), so a caller may call
    /// this while holding whatever `lent`'s keeper takes back on drop.
    pub fn stage_lent(&self, lent: Lent) {
        let mut c = self.state.borrow_mut();
        c.staged += lent.len;
        match c.tls.as_mut() {
            // Encrypted at the end of the turn, then let go.
            Some(t) => {
                t.stage_lent(lent);
            }
            None => c.out.push_back(Chunk::Lent(lent)),
        }
        self.lp.list(&mut c);
    }

    /// Asks room to stage `more` output bytes on top of the `pending` bytes the task is still
    /// building: free within [`OUT_ALLOWANCE`], else drawn from the shared budget (held until
    /// everything staged is sent). False when the budget cannot cover it: the caller should
    /// answer with an error instead of the bytes.
    pub fn reserve_output(&self, pending: usize, more: usize) -> bool {
        let mut c = self.state.borrow_mut();
        let total = c.staged() + pending + more;
        if total <= OUT_ALLOWANCE + c.out_budget.held() {
            return true;
        }
        let want = total - OUT_ALLOWANCE;
        c.out_budget.resize(want)
    }

    /// Output bytes handed over and not yet sent.
    pub fn unsent(&self) -> usize {
        self.state.borrow().staged()
    }

    /// Whether the server asked connections to finish.
    pub fn stopping(&self) -> bool {
        self.state.borrow().stopping
    }

    /// Waits for a TLS connection's handshake: `Ok(true)` once it completed (at once for a
    /// plain connection), `Ok(false)` when the peer left or the server stops first, an error
    /// when it failed (a TLS error is `InvalidData`). The handshake itself advances inside the
    /// loop with each receive, whether or not anyone waits here.
    pub async fn handshake(&self) -> io::Result<bool> {
        std::future::poll_fn(|cx| {
            let mut c = self.state.borrow_mut();
            if let Some(e) = &c.error {
                return Poll::Ready(Err(io::Error::new(e.kind(), e.to_string())));
            }
            if c.tls.as_ref().is_none_or(|t| !t.handshaking()) {
                return Poll::Ready(Ok(true));
            }
            if c.rx_done || c.stopping {
                return Poll::Ready(Ok(false));
            }
            c.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        self.state.borrow().tls.is_some()
    }

    /// Whether the TLS session failed (a protocol error, bad input), and if so whether during
    /// the handshake (`Some(true)`).
    pub fn tls_failure(&self) -> Option<bool> {
        self.state.borrow().tls.as_ref().and_then(|t| t.failure())
    }

    /// The peer's address, for logs.
    pub fn peer(&self) -> String {
        match self.peer_addr() {
            Some(SockName::Inet(a)) => a.to_string(),
            Some(_) => "unix".into(),
            None => "?".into(),
        }
    }

    /// The socket's descriptor number (for reports; the loop owns the socket).
    pub fn raw_fd(&self) -> RawFd {
        self.state.borrow().fd.as_raw_fd()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SockName> {
        sock_name(self.raw_fd(), true)
    }

    /// The local address the connection arrived on.
    pub fn local_addr(&self) -> Option<SockName> {
        sock_name(self.raw_fd(), false)
    }
}

/// A socket address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockName {
    /// IPv4 or IPv6.
    Inet(SocketAddr),
    /// A unix socket; the path is empty for an unnamed (client) end.
    Unix(PathBuf),
    /// Another family, by number.
    Other(i32),
}

/// The peer's (`peer`) or the local name of socket `fd`.
pub fn sock_name(fd: RawFd, peer: bool) -> Option<SockName> {
    // SAFETY: sockaddr_storage is plain data; getpeername/getsockname write at most `len` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let sa = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: `ss` and `len` are live and `len` is the size of `ss`.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, sa, &mut len)
        } else {
            libc::getsockname(fd, sa, &mut len)
        }
    };
    if r != 0 {
        return None;
    }
    Some(decode_sockaddr(&ss))
}

/// The address a kernel wrote into `ss`.
fn decode_sockaddr(ss: &libc::sockaddr_storage) -> SockName {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into `ss`.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            SockName::Inet(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6) into `ss`.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            SockName::Inet(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        libc::AF_UNIX => {
            // SAFETY: the kernel wrote a sockaddr_un (family AF_UNIX) into `ss`.
            let sun =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
            let path: Vec<u8> = sun
                .sun_path
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            use std::os::unix::ffi::OsStringExt;
            SockName::Unix(PathBuf::from(std::ffi::OsString::from_vec(path)))
        }
        other => SockName::Other(other),
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let rc = self.state.clone();
        {
            let mut c = rc.borrow_mut();
            c.handle_gone = true;
            c.reader = None;
            c.writer = None;
            self.lp.list(&mut c);
        }
    }
}
