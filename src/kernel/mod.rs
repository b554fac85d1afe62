//! The kernel's view of TCP sockets on this server's ports.
//!
//! `sock_diag` (netlink, one dump per call, filtered in the kernel) is the primary source;
//! `proc_net` (/proc/net/tcp{,6}) is the fallback where sock_diag is unavailable.
pub mod diag_msg;
pub mod proc_net;
pub mod sock_diag;

use std::net::SocketAddr;

/// TCP_CLOSE_WAIT in the kernel's state numbering (include/net/tcp_states.h).
pub const TCP_CLOSE_WAIT: u8 = 8;

/// One socket as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// Bytes received but not read by the owner (requests waiting in a never-accepted socket).
    pub recv_q: u64,
    pub inode: u64,
    /// SO_COOKIE (sock_diag only; 0 from /proc).
    pub cookie: u64,
    pub uid: u32,
}

/// CLOSE_WAIT sockets on `ports`: sock_diag through `diag` when given and working, else /proc.
pub fn close_wait_on_ports(
    diag: Option<&mut sock_diag::DiagSocket>,
    ports: &[u16],
) -> Result<Vec<KernelSocket>, String> {
    if let Some(d) = diag {
        if let Ok(v) = d.dump(1 << TCP_CLOSE_WAIT, ports) {
            return Ok(v);
        }
    }
    proc_net::close_wait_on_ports(ports)
}
