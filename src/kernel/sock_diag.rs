//! The NETLINK_SOCK_DIAG socket: one dump of the kernel's TCP sockets in chosen states.
//!
//! Works unprivileged (the children run as the `User`) and is system-wide, so replies are
//! filtered by local port — in the kernel with bytecode where possible. The unsafe code is the
//! three syscalls; message layout lives in `diag_msg` as safe Rust.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::diag_msg::{self, Reply};
use super::KernelSocket;

const NETLINK_SOCK_DIAG: i32 = 4;
const RECV_BUF: usize = 32 * 1024;

pub struct DiagSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
    /// Set when the kernel refused our bytecode (kernels before 4.16 lack S_EQ).
    no_bytecode: bool,
}

impl DiagSocket {
    pub fn open() -> io::Result<DiagSocket> {
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
        Ok(DiagSocket {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
            no_bytecode: false,
        })
    }

    /// Turns the in-kernel port filter (bytecode) off or back on; ports are then filtered
    /// here instead. For benchmarks: the guard itself never turns it off.
    /// Whether port filtering happens in the kernel (false after the kernel refused it).
    pub fn kernel_port_filter(&self) -> bool {
        !self.no_bytecode
    }

    pub fn set_kernel_port_filter(&mut self, enabled: bool) {
        self.no_bytecode = !enabled;
    }

    /// TCP sockets in any state of `states` (bit mask of 1 << TCP_state) whose local port is
    /// in `ports`, IPv4 and IPv6.
    pub fn dump(&mut self, states: u32, ports: &[u16]) -> Result<Vec<KernelSocket>, String> {
        self.dump_families(states, ports, true, true)
    }

    /// Like `dump`, for the chosen address families only.
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
            let filter = if self.no_bytecode {
                None
            } else {
                diag_msg::port_filter(ports)
            };
            match self.dump_family(family, states, ports, filter.as_deref(), &mut out) {
                Err(e) if filter.is_some() && e.contains("Invalid argument") => {
                    self.no_bytecode = true;
                    self.dump_family(family, states, ports, None, &mut out)?;
                }
                r => r?,
            }
        }
        Ok(out)
    }

    fn dump_family(
        &mut self,
        family: u8,
        states: u32,
        ports: &[u16],
        filter: Option<&[u8]>,
        out: &mut Vec<KernelSocket>,
    ) -> Result<(), String> {
        self.seq = self.seq.wrapping_add(1);
        let req = diag_msg::dump_request(family, states, self.seq, filter);
        // SAFETY: sends `req.len()` bytes from a live buffer on our own socket; an unconnected
        // netlink socket sends to the kernel.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                req.as_ptr() as *const libc::c_void,
                req.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(format!("sock_diag send: {}", io::Error::last_os_error()));
        }
        loop {
            // SAFETY: receives at most `buf.len()` bytes into our own buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("sock_diag recv: {e}"));
            }
            if n == 0 {
                return Err("sock_diag: socket closed mid-dump".into());
            }
            if diag_msg::parse_datagram(&self.buf[..n as usize], ports, out)? == Reply::Done {
                return Ok(());
            }
        }
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
}
