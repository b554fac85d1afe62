//! Exact lookups on the NETLINK_SOCK_DIAG socket: the I/O around `diag_lookup`.
//!
//! A batch of up to `BATCH` requests goes out in one send; the kernel answers each request in
//! the sender's context (netlink input runs inside sendmsg), so when send returns the replies
//! are queued and one recvmmsg takes them. A batch is used whole or not at all: a missing,
//! doubled or refused reply fails it, and the socket is dropped with whatever is left in its
//! queue, as after a failed dump.

use std::os::fd::RawFd;

use super::diag_lookup::{complete, lookup_request, Batch, Lookup, Tuple, LOOKUP_LEN};
use super::diag_msg::DumpError;
use super::sock_diag::{os_error, DiagSocket};

/// Requests per send. Each reply is a datagram of its own (~100 bytes, a few hundred of
/// receive buffer with the kernel's overhead): 64 of them fit the default receive buffer.
pub const BATCH: usize = 64;
/// Room for one reply: the inet_diag_msg and the few attributes sent unasked are ~120 bytes.
const REPLY_ROOM: usize = 1024;
/// Datagrams taken per recvmmsg (the 32 KiB receive buffer in slices of `REPLY_ROOM`).
const PER_RECV: usize = 32;
/// How long to wait for replies still missing once the queue is empty (the kernel normally
/// queues them all before send returns).
const LATE_MS: i32 = 20;

impl DiagSocket {
    /// The kernel's socket for each tuple, in order, in one round trip per `BATCH` tuples.
    /// An error means no answer at all: nothing read before it may be used.
    pub fn lookup(&mut self, tuples: &[Tuple]) -> Result<Vec<Lookup>, String> {
        let mut out = Vec::with_capacity(tuples.len());
        for chunk in tuples.chunks(BATCH) {
            match self.lookup_batch(chunk) {
                Ok(v) => out.extend(v),
                Err(e) => {
                    self.fd = None;
                    return Err(e.to_string());
                }
            }
        }
        Ok(out)
    }

    fn lookup_batch(&mut self, tuples: &[Tuple]) -> Result<Vec<Lookup>, DumpError> {
        let fd = self.socket()?;
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(tuples.len() as u32);
        let mut req = Vec::with_capacity(tuples.len() * LOOKUP_LEN);
        for (i, t) in tuples.iter().enumerate() {
            lookup_request(&mut req, first.wrapping_add(i as u32), *t);
        }
        // SAFETY: sends `req.len()` bytes from a live buffer on our own netlink socket.
        let sent = unsafe { libc::send(fd, req.as_ptr() as *const libc::c_void, req.len(), 0) };
        if sent < 0 {
            return Err(DumpError::Io(os_error("send")));
        }
        let batch = Batch {
            port_id: self.port_id,
            first,
            tuples,
        };
        let mut answers = vec![None; tuples.len()];
        let mut waited = false;
        while answers.iter().any(Option::is_none) {
            let got = recv_many(fd, &mut self.buf, |d| batch.take(d, &mut answers))?;
            if got == 0 {
                if waited || !readable_within(fd, LATE_MS) {
                    break;
                }
                waited = true;
            }
        }
        complete(answers)
    }
}

/// Takes the datagrams queued on `fd` (at most `PER_RECV`) without waiting, handing each
/// from the kernel to `take`. Returns how many were read (0: the queue was empty).
fn recv_many(
    fd: RawFd,
    buf: &mut [u8],
    mut take: impl FnMut(&[u8]) -> Result<(), DumpError>,
) -> Result<usize, DumpError> {
    let n = PER_RECV.min(buf.len() / REPLY_ROOM);
    // SAFETY: all-zero iovec, sockaddr_nl and mmsghdr are valid values (null pointers,
    // zero lengths), filled in below before use.
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; n];
    let mut from: Vec<libc::sockaddr_nl> = vec![unsafe { std::mem::zeroed() }; n];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; n];
    for (i, chunk) in buf.chunks_mut(REPLY_ROOM).take(n).enumerate() {
        iov[i].iov_base = chunk.as_mut_ptr() as *mut libc::c_void;
        iov[i].iov_len = chunk.len();
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &mut from[i] as *mut libc::sockaddr_nl as *mut libc::c_void;
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    }
    let got = loop {
        // SAFETY: every mmsghdr points at its own iovec (a distinct `REPLY_ROOM` slice of
        // `buf`) and sockaddr_nl, all alive across the call; the kernel writes within them.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            break r as usize;
        }
        match std::io::Error::last_os_error() {
            e if e.kind() == std::io::ErrorKind::Interrupted => continue,
            e if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(0),
            e => return Err(DumpError::Io(format!("recvmmsg: {e}"))),
        }
    };
    for i in 0..got {
        let len = msgs[i].msg_len as usize;
        if msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > REPLY_ROOM {
            return Err(DumpError::Io("lookup reply truncated".into()));
        }
        if from[i].nl_pid != 0 {
            continue; // not from the kernel
        }
        take(&buf[i * REPLY_ROOM..i * REPLY_ROOM + len])?;
    }
    Ok(got)
}

/// Waits up to `ms` for `fd` to become readable.
fn readable_within(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one pollfd we own.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::TCP_CLOSE_WAIT;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    fn tuple_of(server: &TcpStream) -> Tuple {
        (server.local_addr().unwrap(), server.peer_addr().unwrap())
    }

    fn wait_close_wait(diag: &mut DiagSocket, t: Tuple) -> crate::kernel::KernelSocket {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Lookup::Found(s) = &diag.lookup(&[t]).unwrap()[0] {
                if s.state == TCP_CLOSE_WAIT {
                    return s.clone();
                }
            }
            assert!(std::time::Instant::now() < deadline, "never in CLOSE_WAIT");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Real sockets: an established one, one in CLOSE_WAIT (with its inode), one gone.
    #[test]
    fn finds_each_socket_by_its_tuple_and_says_when_one_is_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let idle = TcpStream::connect(addr).unwrap();
        let (idle_s, _) = listener.accept().unwrap();
        let mut gone = TcpStream::connect(addr).unwrap();
        let (closer, _) = listener.accept().unwrap();
        gone.write_all(b"x").unwrap();
        drop(gone);
        let ended = TcpStream::connect(addr).unwrap();
        let (ended_s, _) = listener.accept().unwrap();
        let ended_t = tuple_of(&ended_s);
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt reads size_of::<linger>() bytes from `linger`.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&ended_s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as u32,
            )
        };
        drop((ended, ended_s)); // reset: no TIME_WAIT left for the tuple
        let mut diag = DiagSocket::open().unwrap();
        let cw = wait_close_wait(&mut diag, tuple_of(&closer));
        let inode = crate::sys::socket::inode(std::os::fd::AsRawFd::as_raw_fd(&closer));
        assert_eq!(Ok(cw.inode), inode.map_err(|e| e.to_string()));
        assert_eq!(cw.recv_q, 2, "the unread byte and the FIN");
        let got = diag
            .lookup(&[tuple_of(&idle_s), tuple_of(&closer), ended_t])
            .unwrap();
        assert!(
            matches!(&got[0], Lookup::Found(s) if s.state == 1),
            "{got:?}"
        );
        assert!(matches!(&got[1], Lookup::Found(s) if s.inode == cw.inode));
        assert_eq!(got[2], Lookup::Gone, "{got:?}");
        drop(idle);
    }

    /// More tuples than one batch: every one answered, in order.
    #[test]
    fn several_batches_answer_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let n = BATCH * 2 + 5;
        let pairs: Vec<(TcpStream, TcpStream)> = (0..n)
            .map(|_| {
                let c = TcpStream::connect(addr).unwrap();
                (c, listener.accept().unwrap().0)
            })
            .collect();
        let tuples: Vec<Tuple> = pairs.iter().map(|(_, s)| tuple_of(s)).collect();
        let mut diag = DiagSocket::open().unwrap();
        let got = diag.lookup(&tuples).unwrap();
        assert_eq!(got.len(), n);
        for (t, g) in tuples.iter().zip(&got) {
            assert!(
                matches!(g, Lookup::Found(s) if s.local == t.0 && s.remote == t.1),
                "{t:?}: {g:?}"
            );
        }
    }

    /// An IPv4 client of an IPv6 listener: found by its IPv4 tuple.
    #[test]
    fn an_ipv4_client_of_an_ipv6_listener_is_found() {
        let Ok(listener) = TcpListener::bind("[::]:0") else {
            return; // no IPv6 on this host
        };
        let port = listener.local_addr().unwrap().port();
        let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = listener.accept().unwrap();
        let t = (s.local_addr().unwrap(), s.peer_addr().unwrap());
        let canonical =
            |a: std::net::SocketAddr| std::net::SocketAddr::new(a.ip().to_canonical(), a.port());
        let v4 = (canonical(t.0), canonical(t.1));
        assert!(v4.0.is_ipv4(), "{t:?}");
        let mut diag = DiagSocket::open().unwrap();
        let got = diag.lookup(&[v4, t]).unwrap();
        assert!(matches!(&got[0], Lookup::Found(_)), "{got:?}");
        assert!(matches!(&got[1], Lookup::Found(_)), "{got:?}");
    }
}
