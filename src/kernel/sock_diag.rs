//! The NETLINK_SOCK_DIAG socket: one dump of the kernel's TCP sockets in chosen states.
//!
//! Works unprivileged (the children run as the `User`) and is system-wide, so replies are
//! filtered by local port — in the kernel with bytecode where possible. The unsafe code is the
//! syscalls; message layout and the dump's checks live in `diag_msg` as safe Rust.
//!
//! A dump is used whole or not at all: replies must carry this request's sequence number and
//! our port id, an interrupted dump (NLM_F_DUMP_INTR) is retried once, and after any failure
//! the socket is closed, so whatever is left of that dump in its queue can never be read as
//! part of the next one; the next dump opens a fresh socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::diag_msg::{self, DumpError, Expect};
use super::KernelSocket;

const NETLINK_SOCK_DIAG: i32 = 4;
/// The kernel never builds a dump datagram larger than 32 KiB (netlink_recvmsg caps
/// max_recvmsg_len there); a larger one is caught as truncated, not parsed.
const RECV_BUF: usize = 32 * 1024;

pub struct DiagSocket {
    /// None after a failed dump (the socket and its queue were dropped) until the next dump.
    pub(super) fd: Option<OwnedFd>,
    /// Our netlink port id: the kernel puts it in every reply to us.
    pub(super) port_id: u32,
    pub(super) seq: u32,
    pub(super) buf: Vec<u8>,
    /// Set when the kernel refused our bytecode (kernels before 4.16 lack S_EQ).
    no_bytecode: bool,
}

pub(super) fn os_error(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// A bound NETLINK_SOCK_DIAG socket with a receive timeout, and its port id.
fn open_socket() -> io::Result<(OwnedFd, u32)> {
    // SAFETY: plain socket(2) call; on success we take sole ownership of the new fd.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A dump never legitimately takes a second; never let a guard thread hang on one.
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from `tv`, which is valid.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    // Bind to port id 0 (the kernel picks a free one), then read it back: replies to our
    // dumps carry it, which is how they are told from anything else.
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let sa_ptr = &mut sa as *mut libc::sockaddr_nl as *mut libc::sockaddr;
    // SAFETY: bind reads and getsockname writes at most `len` bytes of our own `sa`.
    let rc = unsafe {
        match libc::bind(fd.as_raw_fd(), sa_ptr, len) {
            0 => libc::getsockname(fd.as_raw_fd(), sa_ptr, &mut len),
            rc => rc,
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fd, sa.nl_pid))
}

/// One datagram from the kernel into `buf`: EINTR retried, datagrams from another sender
/// (a user-space process) skipped. Returns the datagram's real length, larger than `buf` when
/// it was cut (`read_dump` refuses it).
fn recv_from_kernel(fd: RawFd, buf: &mut [u8]) -> Result<usize, DumpError> {
    loop {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: receives at most `buf.len()` bytes into our own buffer and at most `len`
        // bytes into `from`. MSG_TRUNC makes it return the datagram's real length.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC,
                &mut from as *mut libc::sockaddr_nl as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // EAGAIN here is the receive timeout.
            return Err(DumpError::Io(format!("recv: {e}")));
        }
        match n as usize {
            0 => return Err(DumpError::Io("socket closed mid-dump".into())),
            _ if from.nl_pid != 0 => continue,
            n => return Ok(n),
        }
    }
}

impl DiagSocket {
    pub fn open() -> io::Result<DiagSocket> {
        let (fd, port_id) = open_socket()?;
        Ok(DiagSocket {
            fd: Some(fd),
            port_id,
            seq: 0,
            buf: vec![0; RECV_BUF],
            no_bytecode: false,
        })
    }

    /// Whether port filtering happens in the kernel (false after the kernel refused it).
    pub fn kernel_port_filter(&self) -> bool {
        !self.no_bytecode
    }

    /// Turns the in-kernel port filter (bytecode) off or back on; ports are then filtered
    /// here instead. For benchmarks: the guard itself never turns it off.
    pub fn set_kernel_port_filter(&mut self, enabled: bool) {
        self.no_bytecode = !enabled;
    }

    /// TCP sockets in any state of `states` (bit mask of 1 << TCP_state) whose local port is
    /// in `ports`, IPv4 and IPv6.
    pub fn dump(&mut self, states: u32, ports: &[u16]) -> Result<Vec<KernelSocket>, String> {
        self.dump_families(states, ports, true, true)
    }

    /// Like `dump`, for the chosen address families only. An error means no list at all:
    /// never a partial one.
    pub fn dump_families(
        &mut self,
        states: u32,
        ports: &[u16],
        ipv4: bool,
        ipv6: bool,
    ) -> Result<Vec<KernelSocket>, String> {
        let mut out = Vec::new();
        let families = [(ipv4, libc::AF_INET as u8), (ipv6, libc::AF_INET6 as u8)];
        for family in families.iter().filter(|(on, _)| *on).map(|(_, f)| *f) {
            self.dump_family(family, states, ports, &mut out)
                .map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    /// One family's dump, retried once when the kernel says it was interrupted, and once
    /// without bytecode when the kernel refuses the filter (EINVAL: kernels before 4.16).
    fn dump_family(
        &mut self,
        family: u8,
        states: u32,
        ports: &[u16],
        out: &mut Vec<KernelSocket>,
    ) -> Result<(), DumpError> {
        let mut retried = false;
        loop {
            let filter = if self.no_bytecode {
                None
            } else {
                diag_msg::port_filter(ports)
            };
            match self.attempt(family, states, ports, filter.as_deref(), out) {
                Err(DumpError::Kernel(libc::EINVAL)) if filter.is_some() => self.no_bytecode = true,
                Err(DumpError::Interrupted) if !retried => retried = true,
                r => return r,
            }
        }
    }

    /// Sends one dump request and reads its replies. On any failure the socket is dropped
    /// with whatever is left of this dump in its queue.
    fn attempt(
        &mut self,
        family: u8,
        states: u32,
        ports: &[u16],
        filter: Option<&[u8]>,
        out: &mut Vec<KernelSocket>,
    ) -> Result<(), DumpError> {
        let r = self.send_and_read(family, states, ports, filter, out);
        if r.is_err() {
            self.fd = None;
        }
        r
    }

    fn send_and_read(
        &mut self,
        family: u8,
        states: u32,
        ports: &[u16],
        filter: Option<&[u8]>,
        out: &mut Vec<KernelSocket>,
    ) -> Result<(), DumpError> {
        let fd = self.socket()?;
        self.seq = self.seq.wrapping_add(1);
        let req = diag_msg::dump_request(family, states, self.seq, filter);
        // SAFETY: sends `req.len()` bytes from a live buffer on our own socket; an unconnected
        // netlink socket sends to the kernel.
        let sent = unsafe { libc::send(fd, req.as_ptr() as *const libc::c_void, req.len(), 0) };
        if sent < 0 {
            return Err(DumpError::Io(os_error("send")));
        }
        let expect = Expect {
            seq: self.seq,
            port_id: self.port_id,
        };
        diag_msg::read_dump(
            |buf| recv_from_kernel(fd, buf),
            &mut self.buf,
            expect,
            ports,
            out,
        )
    }

    /// The open socket, or a fresh one after a failed dump dropped the last.
    pub(super) fn socket(&mut self) -> Result<RawFd, DumpError> {
        if let Some(fd) = &self.fd {
            return Ok(fd.as_raw_fd());
        }
        let (fd, port_id) = open_socket().map_err(|e| DumpError::Io(format!("reopen: {e}")))?;
        let raw = fd.as_raw_fd();
        self.fd = Some(fd);
        self.port_id = port_id;
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::TCP_CLOSE_WAIT;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// A real CLOSE_WAIT socket: the client closes, the accepted side is kept open.
    #[test]
    fn finds_a_real_close_wait_socket_by_port_and_inode() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (held, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        drop(client);
        let inode = crate::sys::socket::inode(held.as_raw_fd()).unwrap();
        let mut diag = DiagSocket::open().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found = diag.dump(1 << TCP_CLOSE_WAIT, &[port]).unwrap();
            if let Some(s) = found.iter().find(|s| s.inode == inode) {
                assert_eq!(s.state, TCP_CLOSE_WAIT);
                assert_eq!(s.local.port(), port);
                // rcv_nxt - copied_seq: the unread byte plus the FIN's sequence number.
                assert_eq!(s.recv_q, 2, "the unread byte (and the FIN) in Recv-Q");
                assert!(
                    found.iter().all(|s| s.local.port() == port),
                    "bytecode filter keeps our port only"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CLOSE_WAIT socket not reported: {found:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            diag.kernel_port_filter(),
            "the kernel accepted our port bytecode"
        );
        // A port nobody uses yields nothing.
        assert!(diag.dump(1 << TCP_CLOSE_WAIT, &[1]).unwrap().is_empty());
        drop(held);
    }

    /// Sends a request and leaves the kernel's answer unread in the socket's queue.
    fn leave_unread(d: &mut DiagSocket, family: u8, states: u32) {
        let fd = d.socket().unwrap();
        d.seq += 1;
        let req = diag_msg::dump_request(family, states, d.seq, None);
        // SAFETY: sends a live buffer on the test's own netlink socket.
        let sent = unsafe { libc::send(fd, req.as_ptr() as *const libc::c_void, req.len(), 0) };
        assert_eq!(sent, req.len() as isize);
    }

    #[test]
    fn replies_left_from_an_earlier_request_are_not_taken_for_the_next_dump() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut diag = DiagSocket::open().unwrap();
        // No sock_diag handler for AF_UNSPEC: an NLMSG_ERROR (ENOENT) of that request waits
        // in the queue.
        leave_unread(&mut diag, libc::AF_UNSPEC as u8, 1 << TCP_CLOSE_WAIT);
        const TCP_LISTEN: u32 = 10;
        let found = diag.dump(1 << TCP_LISTEN, &[port]);
        assert_eq!(
            found.map(|v| v.len()),
            Ok(1),
            "the earlier request's answer was taken for this dump's"
        );
    }

    #[test]
    fn a_failed_dump_drops_the_socket_and_the_next_one_works() {
        let mut diag = DiagSocket::open().unwrap();
        // No inet_diag handler for this family: the kernel answers NLMSG_ERROR.
        let e = diag.attempt(99, 1 << TCP_CLOSE_WAIT, &[], None, &mut Vec::new());
        assert!(matches!(e, Err(DumpError::Kernel(_))), "{e:?}");
        assert!(diag.fd.is_none(), "the socket and its queue are dropped");
        assert!(diag.dump(1 << TCP_CLOSE_WAIT, &[1]).unwrap().is_empty());
        assert!(diag.fd.is_some(), "reopened");
    }
}
