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
    /// Still in CLOSE_WAIT, but the peer acknowledged more data (bytes_acked now): a client
    /// that half-closed and is still reading the response.
    Progressing(u64),
    Io(String),
}

/// What the guard reads of `struct tcp_info` (linux/tcp.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    /// TCP state, include/net/tcp_states.h numbering.
    pub state: u8,
    /// `tcpi_bytes_acked`: bytes the peer has acknowledged (0 on kernels older than 4.1). A
    /// half-closed client that is still reading keeps moving it.
    pub bytes_acked: u64,
}

/// Offset of `tcpi_bytes_acked` in struct tcp_info: 8 one-byte fields, 24 u32s, 2 u64s.
const TCPI_BYTES_ACKED_AT: usize = 120;

/// TCP_INFO of the socket behind `fd`.
pub fn tcp_info(fd: RawFd) -> io::Result<TcpInfo> {
    let mut info = [0u8; TCPI_BYTES_ACKED_AT + 8];
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
    let acked = (len as usize >= info.len()).then(|| {
        let b: [u8; 8] = info[TCPI_BYTES_ACKED_AT..].try_into().unwrap_or_default();
        u64::from_ne_bytes(b)
    });
    Ok(TcpInfo {
        state: info[0],
        bytes_acked: acked.unwrap_or(0),
    })
}

/// TCP state (include/net/tcp_states.h numbering) of the socket behind `fd`.
pub fn tcp_state(fd: RawFd) -> io::Result<u8> {
    tcp_info(fd).map(|i| i.state)
}

/// A private duplicate of `fd`, if it still names the socket with inode `inode`. The
/// duplicate keeps naming that socket even if Apache closes `fd` and the number is reused.
fn same_socket(fd: RawFd, inode: u64) -> Result<std::os::fd::OwnedFd, Refusal> {
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
        Ok(i) if i == inode => Ok(dup),
        _ => Err(Refusal::Reused),
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr).into(),
                u16::from_be(a.sin6_port),
            ))
        }
        _ => None,
    }
}

/// (local, peer) addresses of the TCP socket behind `fd`.
pub fn addrs(fd: RawFd) -> io::Result<(std::net::SocketAddr, std::net::SocketAddr)> {
    let get = |peer: bool| -> io::Result<std::net::SocketAddr> {
        // SAFETY: an all-zero sockaddr_storage is valid; the call writes at most `len` bytes.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let p = &mut ss as *mut _ as *mut libc::sockaddr;
        // SAFETY: `p` points to our storage of `len` bytes.
        let rc = unsafe {
            if peer {
                libc::getpeername(fd, p, &mut len)
            } else {
                libc::getsockname(fd, p, &mut len)
            }
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        sockaddr_to_std(&ss).ok_or_else(|| io::Error::other("not an IP socket"))
    };
    Ok((get(false)?, get(true)?))
}

/// The same endpoint, an IPv4 address and its v4-mapped IPv6 form counting as equal.
pub fn same_endpoint(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Shuts down a socket that the guard process took out of a child (`dup`, its own
/// duplicate) — but only if it is the socket the kernel reported: same inode, same local and
/// peer address, and still in TCP state `close_wait`.
pub fn shutdown_taken(
    dup: &std::os::fd::OwnedFd,
    inode: u64,
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
    close_wait: u8,
) -> Result<(), Refusal> {
    let fd = dup.as_raw_fd();
    match self::inode(fd) {
        Ok(i) if i == inode => {}
        _ => return Err(Refusal::Reused),
    }
    match addrs(fd) {
        Ok((l, p)) if same_endpoint(l, local) && same_endpoint(p, peer) => {}
        _ => return Err(Refusal::Reused),
    }
    match tcp_info(fd) {
        Ok(i) if i.state != close_wait => return Err(Refusal::NotCloseWait(i.state)),
        Ok(_) => {}
        Err(e) => return Err(Refusal::Io(e.to_string())),
    }
    // SAFETY: shutdown on our duplicate; affects the connection, which is the intent.
    if unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } != 0 {
        return Err(Refusal::Io(io::Error::last_os_error().to_string()));
    }
    Ok(())
}

/// TCP_INFO of the socket behind `fd`, if it is still the socket with inode `inode`.
pub fn tcp_info_if_same(fd: RawFd, inode: u64) -> Result<TcpInfo, Refusal> {
    let dup = same_socket(fd, inode)?;
    tcp_info(dup.as_raw_fd()).map_err(|e| Refusal::Io(e.to_string()))
}

/// Gracefully shuts down the connection behind Apache's descriptor `fd` — but only if it is
/// still the socket with inode `inode`, still in TCP state `close_wait`, and its peer has not
/// acknowledged any data beyond `acked` (a half-closed client still reading is healthy).
///
/// Works on a private duplicate (F_DUPFD_CLOEXEC): the checks are made on the duplicate, so
/// even if Apache closes `fd` and the number is reused in between, the duplicate still names
/// the socket that was checked. `shutdown(SHUT_RDWR)` sends the peer a FIN and makes the
/// worker's next read or write fail, so Apache runs its normal cleanup. Apache's own
/// descriptor is never closed; only the duplicate is.
pub fn shutdown_if_same(fd: RawFd, inode: u64, close_wait: u8, acked: u64) -> Result<(), Refusal> {
    let dup = same_socket(fd, inode)?;
    match tcp_info(dup.as_raw_fd()) {
        Ok(i) if i.state != close_wait => return Err(Refusal::NotCloseWait(i.state)),
        Ok(i) if i.bytes_acked != acked => return Err(Refusal::Progressing(i.bytes_acked)),
        Ok(_) => {}
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
            shutdown_if_same(server.as_raw_fd(), inode, CLOSE_WAIT, 0),
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
            shutdown_if_same(fd, recorded_inode, CLOSE_WAIT, 0),
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
            shutdown_if_same(s.as_raw_fd(), inode, CLOSE_WAIT, 0),
            Err(Refusal::NotCloseWait(1))
        ));
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        (&s).read_exact(&mut b).unwrap();
    }

    #[test]
    fn a_half_closed_peer_that_acknowledged_data_is_refused_until_it_stops() {
        let (mut client, server) = pair();
        (&server).write_all(&[7u8; 4096]).unwrap();
        let mut buf = [0u8; 4096];
        client.read_exact(&mut buf).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        wait_state(server.as_raw_fd(), CLOSE_WAIT);
        let inode = super::inode(server.as_raw_fd()).unwrap();
        let acked = super::tcp_info_if_same(server.as_raw_fd(), inode)
            .unwrap()
            .bytes_acked;
        assert!(acked >= 4096, "bytes_acked {acked}");
        assert_eq!(
            shutdown_if_same(server.as_raw_fd(), inode, CLOSE_WAIT, 0),
            Err(Refusal::Progressing(acked))
        );
        assert_eq!(
            shutdown_if_same(server.as_raw_fd(), inode, CLOSE_WAIT, acked),
            Ok(())
        );
    }

    #[test]
    fn a_taken_socket_is_shut_down_only_if_it_matches_the_kernel_report() {
        let (mut client, server) = pair();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        wait_state(server.as_raw_fd(), CLOSE_WAIT);
        let inode = super::inode(server.as_raw_fd()).unwrap();
        let (local, peer) = super::addrs(server.as_raw_fd()).unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let dup = server.try_clone().unwrap().into();
        let other: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            super::shutdown_taken(&dup, inode, local, other, CLOSE_WAIT),
            Err(Refusal::Reused),
            "another peer than the kernel reported"
        );
        assert_eq!(
            super::shutdown_taken(&dup, inode + 1, local, peer, CLOSE_WAIT),
            Err(Refusal::Reused)
        );
        assert_eq!(
            super::shutdown_taken(&dup, inode, local, peer, CLOSE_WAIT),
            Ok(())
        );
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).unwrap(), 0, "a FIN, not a reset");
    }

    #[test]
    fn closed_descriptors_are_refused() {
        assert_eq!(shutdown_if_same(-1, 1, CLOSE_WAIT, 0), Err(Refusal::Gone));
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
