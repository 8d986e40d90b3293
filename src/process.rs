//! The process around the server, as memcached's flags shape it: `-d` (daemonize), `-u` (the user
//! to become after binding), `-P` (pid file), `-k` (mlockall), `-r` (core file limit).
//!
//! Everything here runs in the main thread, before any other thread exists (fork) or between
//! binding and starting the shard threads (privileges).

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A user to switch to: its ids as the password database has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Whether the process runs as root (real or effective).
pub fn is_root() -> bool {
    // SAFETY: getuid/geteuid take no arguments and cannot fail.
    unsafe { libc::getuid() == 0 || libc::geteuid() == 0 }
}

/// Looks `name` up in the password database.
pub fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0u8; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to live memory of the stated size; getpwnam_r writes only into
    // `pwd`, `buf` (its length passed) and `result`.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(RunAs {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is plain data (integers and pointers); all zeros is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Drops supplementary groups, then becomes `who`'s group and user (as memcached: EPERM from
/// setgroups means already unprivileged and is not an error).
pub fn become_user(who: RunAs) -> io::Result<()> {
    // SAFETY: setgroups with a count of 0 reads no memory; setgid/setuid take plain integers.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
        }
        if libc::setgid(who.gid) != 0 || libc::setuid(who.uid) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `-k`: locks current and future memory.
pub fn lock_memory() -> io::Result<()> {
    // SAFETY: mlockall takes flags only.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `-r`: raises the core file size limit to the hard limit (unlimited where allowed).
pub fn maximize_core_limit() -> io::Result<()> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write exactly one rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_CORE, &mut rl) != 0 {
            return Err(io::Error::last_os_error());
        }
        let want = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if libc::setrlimit(libc::RLIMIT_CORE, &want) != 0 {
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_CORE, &rl) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Writes the pid file (through a temporary file and a rename, so a reader never sees half).
pub fn write_pidfile(path: &Path) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

/// The daemon child's link to the waiting parent.
pub struct Daemon {
    pipe: OwnedFd,
}

/// Message the child sends once it serves.
const READY: &[u8] = b"R";

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `-d`: forks. The parent waits until the child reports that it serves (its stderr goes to the
/// parent's until then, so start-up errors and the readiness line are still seen), then exits 0;
/// 1 when the child failed. The child starts a new session, has stdin and stdout on /dev/null,
/// and gets the [`Daemon`] to report with. Call before any other thread exists.
pub fn daemonize(keep_cwd: bool) -> io::Result<Daemon> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists (the caller's contract), so the child may run Rust code.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid > 0 {
        drop(wr);
        let mut r = std::fs::File::from(rd);
        let mut ok = false;
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut bytes = &buf[..n];
                    if bytes.ends_with(READY) {
                        ok = true;
                        bytes = &bytes[..n - 1];
                    }
                    let _ = io::stderr().write_all(bytes);
                    if ok {
                        break;
                    }
                }
            }
        }
        std::process::exit(if ok { 0 } else { 1 });
    }
    drop(rd);
    // SAFETY: setsid takes no arguments; chdir gets a valid C string; open/dup2 only work on
    // descriptors (the new one is closed after duplication).
    unsafe {
        cvt(libc::setsid())?;
        if !keep_cwd {
            cvt(libc::chdir(c"/".as_ptr()))?;
        }
        let null = cvt(libc::open(c"/dev/null".as_ptr(), libc::O_RDWR))?;
        libc::dup2(null, 0);
        libc::dup2(null, 1);
        // Until ready, log lines reach the waiting parent.
        libc::dup2(wr.as_raw_fd(), 2);
        if null > 2 {
            libc::close(null);
        }
    }
    Ok(Daemon { pipe: wr })
}

impl Daemon {
    /// Tells the parent the server serves, and detaches stderr (to /dev/null) from it.
    pub fn ready(self) {
        let mut f = std::fs::File::from(self.pipe);
        let _ = f.write_all(READY);
        // SAFETY: open returns a new descriptor or -1; dup2 replaces fd 2 atomically.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 2);
                libc::close(null);
            }
        }
    }
}
