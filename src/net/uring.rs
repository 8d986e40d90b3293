//! The io_uring backend. The ring is set up with SINGLE_ISSUER + DEFER_TASKRUN: completions are
//! produced only when this thread enters the kernel to wait for them, so no completion ever
//! interrupts the core. Accept and receive are multishot (armed once per listener/connection);
//! receives land in a ring of provided buffers, copied out to the connection's inbox and
//! recycled at once, so an idle connection holds no receive buffer.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::dgram::{RxSlot, TxMsg};
use super::{ConnId, Ev, LoopConfig};

const BUF_GROUP: u16 = 0;

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_WAKE: u64 = 4;
const KIND_CANCEL: u64 = 5;
const KIND_DGRAM_RECV: u64 = 6;
const KIND_DGRAM_SEND: u64 = 7;

const ENTER_GETEVENTS: u32 = 1;

fn user_data(kind: u64, index: usize) -> u64 {
    ConnId::index(index).tag(kind)
}

fn conn_data(kind: u64, id: ConnId) -> u64 {
    id.tag(kind)
}

/// Checks that a ring with the flags the loop uses can be created here.
pub fn probe() -> io::Result<()> {
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring without EXT_ARG (kernel too old)",
        ));
    }
    Ok(())
}

/// The provided-buffer ring: `count` buffers of `size` bytes the kernel picks from.
struct BufRing {
    entries: *mut types::BufRingEntry,
    map_len: usize,
    data: Vec<u8>,
    size: usize,
    count: u16,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "buffer count must be a power of two"
        );
        let map_len = count as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; no existing memory is affected.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            entries: mem.cast(),
            map_len,
            data: vec![0; count as usize * size],
            size,
            count,
            tail: 0,
        };
        // SAFETY: `mem` is a page-aligned mapping of `count` entries that lives as long as this
        // BufRing, which unregisters it before unmapping (Drop order in `Uring`).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(mem as u64, count, BUF_GROUP, 0)?
        };
        for bid in 0..count {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Gives buffer `bid` back to the kernel (visible after `publish`).
    fn recycle(&mut self, bid: u16) {
        let mask = self.count - 1;
        // SAFETY: the index is masked into the mapping's `count` entries; the kernel reads
        // entries only up to the published tail, and this one is beyond it until `publish`.
        unsafe {
            let e = &mut *self.entries.add((self.tail & mask) as usize);
            e.set_addr(self.data.as_mut_ptr().add(bid as usize * self.size) as u64);
            e.set_len(self.size as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `tail` points at the ring's tail field inside our mapping, a u16 the kernel
        // reads atomically; a release store makes the entries written before it visible.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.size;
        &self.data[start..start + len.min(self.size)]
    }
}

/// One loop's ring.
pub struct Uring {
    // Declared before `bufs` so the ring (and its registration) goes first on drop.
    ring: IoUring,
    bufs: BufRing,
    wake_buf: Box<u64>,
    notify_fd: RawFd,
    listeners: Vec<(RawFd, bool)>,
    cqes: Vec<cqueue::Entry>,
    /// Datagram sockets by index: their armed receives (kept until the ring is gone, since
    /// the kernel may write into them until then).
    dgrams: Vec<DgramRx>,
    dgram_slots: usize,
    /// Datagram sends in flight, by slot.
    tx: Vec<Option<Box<TxMsg>>>,
    tx_free: Vec<usize>,
}

/// One datagram socket's receives.
struct DgramRx {
    fd: RawFd,
    open: bool,
    /// Never resized once made, so each slot stays where the kernel writes it.
    slots: Vec<RxSlot>,
}

/// The tag of receive `slot` of datagram socket `sock`.
fn dgram_data(sock: usize, slot: usize) -> u64 {
    ConnId {
        slot: sock as u32,
        gen: slot as u16,
    }
    .tag(KIND_DGRAM_RECV)
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the ring that used it is closed.
        unsafe { libc::munmap(self.entries.cast(), self.map_len) };
    }
}

impl Uring {
    pub fn new(config: &LoopConfig, notify_fd: RawFd) -> io::Result<Uring> {
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(config.ring_entries * 4)
            .build(config.ring_entries)?;
        let bufs = BufRing::new(&ring, config.recv_buffers, config.recv_buffer_size)?;
        let mut u = Uring {
            ring,
            bufs,
            wake_buf: Box::new(0),
            notify_fd,
            listeners: Vec::new(),
            cqes: Vec::with_capacity(1024),
            dgrams: Vec::new(),
            dgram_slots: config.dgram_recv_slots.max(1),
            tx: Vec::new(),
            tx_free: Vec::new(),
        };
        u.arm_wake();
        Ok(u)
    }

    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every SQE pushed here refers to memory that outlives its completion:
            // provided buffers (owned by `bufs`), `wake_buf` (boxed, owned by self), send
            // buffers the loop keeps untouched until the send completes, datagram receive
            // slots (in `dgrams`, never moved, until the ring is dropped) and datagram messages
            // (boxed, in `tx` until their completion).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            // Full: hand what is queued to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                log::warn!("io_uring submit failed: {e}");
                std::thread::yield_now();
            }
        }
    }

    fn arm_wake(&mut self) {
        let buf = (&mut *self.wake_buf as *mut u64).cast::<u8>();
        let sqe = opcode::Read::new(types::Fd(self.notify_fd), buf, 8)
            .build()
            .user_data(user_data(KIND_WAKE, 0));
        self.push(sqe);
    }

    pub fn arm_accept(&mut self, idx: usize, fd: RawFd) {
        if self.listeners.len() <= idx {
            self.listeners.resize(idx + 1, (-1, false));
        }
        self.listeners[idx] = (fd, true);
        let sqe = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(user_data(KIND_ACCEPT, idx));
        self.push(sqe);
    }

    /// Arms a listener again after an accept error stopped it.
    pub fn rearm_accept(&mut self, idx: usize) {
        if let Some((fd, true)) = self.listeners.get(idx).copied() {
            self.arm_accept(idx, fd);
        }
    }

    pub fn cancel_accept(&mut self, idx: usize) {
        if let Some(l) = self.listeners.get_mut(idx) {
            l.1 = false;
        }
        let sqe = opcode::AsyncCancel::new(user_data(KIND_ACCEPT, idx))
            .build()
            .user_data(user_data(KIND_CANCEL, 0));
        self.push(sqe);
    }

    pub fn start_recv(&mut self, id: ConnId, fd: RawFd) {
        let sqe = opcode::RecvMulti::new(types::Fd(fd), BUF_GROUP)
            .build()
            .user_data(conn_data(KIND_RECV, id));
        self.push(sqe);
    }

    pub fn cancel_recv(&mut self, id: ConnId) {
        let sqe = opcode::AsyncCancel::new(conn_data(KIND_RECV, id))
            .build()
            .user_data(user_data(KIND_CANCEL, 0));
        self.push(sqe);
    }

    pub fn send(&mut self, id: ConnId, fd: RawFd, ptr: *const u8, len: usize) {
        let sqe = opcode::Send::new(types::Fd(fd), ptr, len.min(u32::MAX as usize) as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(conn_data(KIND_SEND, id));
        self.push(sqe);
    }

    /// Sends the chunks `msg` points at, in one request.
    pub fn send_msg(&mut self, id: ConnId, fd: RawFd, msg: *const libc::msghdr) {
        let sqe = opcode::SendMsg::new(types::Fd(fd), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(conn_data(KIND_SEND, id));
        self.push(sqe);
    }

    /// Starts receiving on datagram socket `sock` (index `idx`).
    pub fn add_dgram(&mut self, idx: usize, fd: RawFd) {
        while self.dgrams.len() <= idx {
            self.dgrams.push(DgramRx {
                fd: -1,
                open: false,
                slots: Vec::new(),
            });
        }
        let slots = (0..self.dgram_slots).map(|_| RxSlot::new()).collect();
        self.dgrams[idx] = DgramRx {
            fd,
            open: true,
            slots,
        };
        for slot in 0..self.dgram_slots {
            self.arm_dgram(idx, slot);
        }
    }

    fn arm_dgram(&mut self, sock: usize, slot: usize) {
        let d = &mut self.dgrams[sock];
        let fd = d.fd;
        let s = &mut d.slots[slot];
        s.armed = true;
        let msg = s.prepare();
        let sqe = opcode::RecvMsg::new(types::Fd(fd), msg)
            .build()
            .user_data(dgram_data(sock, slot));
        self.push(sqe);
    }

    /// Re-arms the receives of datagram socket `sock` that stopped (its queue had filled).
    pub fn resume_dgram(&mut self, sock: usize) {
        let Some(d) = self.dgrams.get(sock) else {
            return;
        };
        if !d.open {
            return;
        }
        let idle: Vec<usize> = (0..d.slots.len()).filter(|&i| !d.slots[i].armed).collect();
        for slot in idle {
            self.arm_dgram(sock, slot);
        }
    }

    /// Stops receiving on datagram socket `sock`; its buffers stay until the ring is gone.
    pub fn close_dgram(&mut self, sock: usize) {
        let Some(d) = self.dgrams.get_mut(sock) else {
            return;
        };
        d.open = false;
        let armed: Vec<usize> = (0..d.slots.len()).filter(|&i| d.slots[i].armed).collect();
        for slot in armed {
            let sqe = opcode::AsyncCancel::new(dgram_data(sock, slot))
                .build()
                .user_data(user_data(KIND_CANCEL, 0));
            self.push(sqe);
        }
    }

    /// Sends one datagram (`msg` already prepared); it comes back with the completion.
    pub fn send_dgram(&mut self, fd: RawFd, msg: Box<TxMsg>) {
        let slot = match self.tx_free.pop() {
            Some(s) => s,
            None => {
                self.tx.push(None);
                self.tx.len() - 1
            }
        };
        let ptr: *const libc::msghdr = &msg.msg;
        self.tx[slot] = Some(msg);
        let sqe = opcode::SendMsg::new(types::Fd(fd), ptr)
            .build()
            .user_data(user_data(KIND_DGRAM_SEND, slot));
        self.push(sqe);
    }

    /// Submits what is queued, waits up to `timeout` (None: until something completes) and
    /// reports every completion.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut dyn FnMut(Ev<'_>) -> bool,
    ) -> io::Result<()> {
        let r = match timeout {
            Some(d) if d.is_zero() => {
                let len = self.ring.submission().len() as u32;
                // SAFETY: a plain io_uring_enter without an argument struct.
                unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(len, 0, ENTER_GETEVENTS, None)
                }
            }
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        if let Err(e) = r {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => return Err(e),
            }
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion());
        for cqe in &cqes {
            self.complete(cqe, sink);
        }
        cqes.clear();
        self.cqes = cqes;
        self.bufs.publish();
        Ok(())
    }

    fn complete(&mut self, cqe: &cqueue::Entry, sink: &mut dyn FnMut(Ev<'_>) -> bool) {
        let (kind, id) = ConnId::untag(cqe.user_data());
        let res = cqe.result();
        let more = cqueue::more(cqe.flags());
        match kind {
            KIND_RECV => {
                if res > 0 {
                    let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                        return;
                    };
                    sink(Ev::Data {
                        id,
                        bytes: self.bufs.get(bid, res as usize),
                    });
                    self.bufs.recycle(bid);
                }
                if !more {
                    let (result, rearm) = match res {
                        0 => (Ok(()), false),
                        r if r > 0 => (Ok(()), true),
                        r if r == -libc::ENOBUFS || r == -libc::ECANCELED => (Ok(()), true),
                        r => (Err(io::Error::from_raw_os_error(-r)), false),
                    };
                    sink(Ev::RecvEnded { id, result, rearm });
                }
            }
            KIND_SEND => {
                let result = if res >= 0 {
                    Ok(res as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                sink(Ev::Sent { id, result });
            }
            KIND_ACCEPT => {
                let idx = id.slot as usize;
                if res >= 0 {
                    // SAFETY: a successful accept returns a new descriptor nobody else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    sink(Ev::Accepted { idx, fd });
                } else if res != -libc::ECANCELED {
                    // Not re-armed here (that would spin while, say, descriptors run out): the
                    // acceptor re-arms after its back-off.
                    sink(Ev::AcceptFailed {
                        idx,
                        err: io::Error::from_raw_os_error(-res),
                        stalled: !more,
                    });
                    return;
                }
                if !more {
                    match self.listeners.get(idx).copied() {
                        Some((fd, true)) => self.arm_accept(idx, fd),
                        _ => {
                            sink(Ev::AcceptEnded { idx });
                        }
                    }
                }
            }
            KIND_DGRAM_RECV => {
                let (sock, slot) = (id.slot as usize, id.gen as usize);
                let Some(d) = self.dgrams.get_mut(sock) else {
                    return;
                };
                let Some(s) = d.slots.get_mut(slot) else {
                    return;
                };
                s.armed = false;
                let open = d.open;
                let mut again = open && res != -libc::ECANCELED;
                if res >= 0 && open {
                    // A datagram larger than the buffer arrives cut (MSG_TRUNC): dropped.
                    s.from.len = s.msg.msg_namelen;
                    if s.msg.msg_flags & libc::MSG_TRUNC == 0 {
                        again = sink(Ev::Datagram {
                            sock,
                            bytes: &s.buf[..res as usize],
                            from: &s.from,
                        });
                    }
                } else if res < 0 && res != -libc::ECANCELED {
                    log::debug!("UDP receive failed: {}", io::Error::from_raw_os_error(-res));
                }
                if again {
                    self.arm_dgram(sock, slot);
                }
            }
            KIND_DGRAM_SEND => {
                let slot = id.slot as usize;
                let Some(msg) = self.tx.get_mut(slot).and_then(Option::take) else {
                    return;
                };
                self.tx_free.push(slot);
                let result = if res >= 0 {
                    Ok(res as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                sink(Ev::DgramSent { msg, result });
            }
            KIND_WAKE => self.arm_wake(),
            _ => {}
        }
    }
}
