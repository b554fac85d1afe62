//! Socket identity. A descriptor number can be closed and reused for another connection at
//! any time; the socket's inode cannot be reused while the socket exists, and it is what the
//! kernel reports in /proc/net/tcp and sock_diag, so the table records it at accept.

use std::io;
use std::os::fd::RawFd;

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

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

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
