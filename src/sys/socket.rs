//! Socket identity. A descriptor number can be closed and reused for another connection at
//! any time; the socket's inode cannot be reused while the socket exists, and it is what the
//! kernel reports in /proc/net/tcp and sock_diag, so the table records it at accept.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// The inode of the socket behind `fd`, or an error if `fd` is not an open socket.
pub fn inode(fd: RawFd) -> io::Result<u64> {
    // SAFETY: `st` is a properly sized, writable stat buffer; fstat only writes into it and
    // has no other effect, whatever `fd` is.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
    }
    Ok(st.st_ino)
}

/// Why `shutdown_if_same` did not act.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The descriptor is closed.
    Gone,
    /// The descriptor now names another socket (or not a socket): the number was reused.
    Reused,
    /// Still the same socket, but no longer in CLOSE_WAIT (kernel TCP state given).
    NotCloseWait(u8),
    Io(String),
}

/// TCP state (include/net/tcp_states.h numbering) of the socket behind `fd`.
pub fn tcp_state(fd: RawFd) -> io::Result<u8> {
    // tcpi_state is the first byte of struct tcp_info; the kernel copies at most `len` bytes.
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info[0])
}

/// Gracefully shuts down the connection behind Apache's descriptor `fd` — but only if it is
/// still the socket with inode `inode` and still in CLOSE_WAIT.
///
/// Works on a private duplicate (F_DUPFD_CLOEXEC): the identity is checked on the duplicate,
/// so even if Apache closes `fd` and the number is reused in between, the duplicate still names
/// the socket that was checked. `shutdown(SHUT_RDWR)` sends the peer a FIN and makes the
/// worker's next read or write fail, so Apache runs its normal cleanup. Apache's own
/// descriptor is never closed; only the duplicate is.
pub fn shutdown_if_same(fd: RawFd, inode: u64, close_wait: u8) -> Result<(), Refusal> {
    if fd < 0 {
        return Err(Refusal::Gone);
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) creates a new descriptor or fails; it does not affect `fd`.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(Refusal::Gone);
    }
    // SAFETY: `dup` is a fresh descriptor that only we own; OwnedFd closes it on every path.
    let dup = unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) };
    match self::inode(dup.as_raw_fd()) {
        Ok(i) if i == inode => {}
        _ => return Err(Refusal::Reused),
    }
    match tcp_state(dup.as_raw_fd()) {
        Ok(s) if s == close_wait => {}
        Ok(s) => return Err(Refusal::NotCloseWait(s)),
        Err(e) => return Err(Refusal::Io(e.to_string())),
    }
    // SAFETY: shutdown on our duplicate; affects the connection, which is the intent.
    if unsafe { libc::shutdown(dup.as_raw_fd(), libc::SHUT_RDWR) } != 0 {
        return Err(Refusal::Io(io::Error::last_os_error().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{shutdown_if_same, Refusal};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    const CLOSE_WAIT: u8 = 8;

    /// (client, accepted server side) over loopback.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    fn wait_state(fd: i32, want: u8) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while super::tcp_state(fd).unwrap() != want {
            assert!(
                Instant::now() < deadline,
                "socket never reached state {want}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn closes_a_close_wait_socket_with_a_fin() {
        let (mut client, server) = pair();
        client.shutdown(std::net::Shutdown::Write).unwrap(); // client sends FIN
        wait_state(server.as_raw_fd(), CLOSE_WAIT);
        let inode = super::inode(server.as_raw_fd()).unwrap();
        assert_eq!(
            shutdown_if_same(server.as_raw_fd(), inode, CLOSE_WAIT),
            Ok(())
        );
        // The client sees an orderly EOF (FIN), not a reset.
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).unwrap(), 0);
        // Apache's descriptor is still open (we only closed our duplicate).
        assert!(super::inode(server.as_raw_fd()).is_ok());
    }

    #[test]
    fn a_reused_descriptor_number_is_never_shut_down() {
        // The recorded connection went away; its fd number now names a healthy connection.
        let (_c1, old) = pair();
        let recorded_inode = super::inode(old.as_raw_fd()).unwrap();
        let (mut c2, newer) = pair();
        let fd = newer.as_raw_fd();
        assert_eq!(
            shutdown_if_same(fd, recorded_inode, CLOSE_WAIT),
            Err(Refusal::Reused)
        );
        // The healthy connection still works both ways.
        c2.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        (&newer).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        (&newer).write_all(b"pong").unwrap();
        c2.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[test]
    fn the_same_socket_outside_close_wait_is_left_alone() {
        let (mut c, s) = pair();
        let inode = super::inode(s.as_raw_fd()).unwrap();
        assert!(matches!(
            shutdown_if_same(s.as_raw_fd(), inode, CLOSE_WAIT),
            Err(Refusal::NotCloseWait(1))
        ));
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        (&s).read_exact(&mut b).unwrap();
    }

    #[test]
    fn closed_descriptors_are_refused() {
        assert_eq!(shutdown_if_same(-1, 1, CLOSE_WAIT), Err(Refusal::Gone));
    }

    #[test]
    fn sockets_have_distinct_inodes_and_files_are_refused() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ia = super::inode(a.as_raw_fd()).unwrap();
        let ib = super::inode(b.as_raw_fd()).unwrap();
        assert_ne!(ia, ib);
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(super::inode(f.as_raw_fd()).is_err());
        assert!(super::inode(-1).is_err());
    }
}
