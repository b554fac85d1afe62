//! pidfds (Linux 5.3+) and pidfd_getfd (5.6+): a stable handle on a process, and a duplicate
//! of one of its descriptors. Raw syscalls: libc has the numbers, not wrappers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A pidfd for `pid`. While it is open, the pid cannot name another process for us: signals
/// and `getfd` through it reach this process or fail with ESRCH.
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A duplicate, in this process, of descriptor `fd` of the process behind `pidfd`. Needs
/// ptrace-attach rights over it (same user and dumpable, or CAP_SYS_PTRACE); EPERM otherwise.
pub fn get_fd(pidfd: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd with our pidfd, a descriptor number of the target and no flags;
    // returns a new descriptor (close-on-exec) or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as RawFd) })
}

/// Whether the process behind `pidfd` has ended (exited or killed, reaped or not): its pidfd
/// polls readable then. One syscall, no /proc read.
pub fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, without waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents != 0
}

/// Sends `sig` through `pidfd`.
pub fn send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with our pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_descriptor_of_our_own_process_can_be_taken() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let me = super::open(std::process::id()).unwrap();
        let dup = super::get_fd(&me, b.as_raw_fd()).unwrap();
        let mut dup = std::os::unix::net::UnixStream::from(dup);
        a.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        dup.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
        assert!(super::get_fd(&me, 1_000_000).is_err(), "no such descriptor");
        super::send_signal(&me, 0).unwrap();
    }
}
