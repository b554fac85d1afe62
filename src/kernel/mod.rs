//! The kernel's view of TCP sockets on this server's ports.
//!
//! `sock_diag` (netlink, one dump per call, filtered in the kernel) is the primary source;
//! `proc_net` (/proc/net/tcp{,6}) is the fallback where sock_diag is unavailable.
#[cfg(test)]
pub(crate) mod diag_fixtures;
pub mod diag_lookup;
pub mod diag_msg;
pub(crate) mod listeners;
pub(crate) mod proc_net;
pub mod sock_diag;
pub mod sock_lookup;

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

/// What the server listens on: the ports, and which address families its listeners use
/// (a `Listen 80` socket is IPv6 and also carries IPv4 clients as v4-mapped addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    pub ports: Vec<u16>,
    pub ipv4: bool,
    pub ipv6: bool,
}

/// CLOSE_WAIT sockets on our listeners: sock_diag through `diag` when given and working
/// (only the address families we listen on: each family is one walk of the kernel's socket
/// hash), else /proc.
pub fn close_wait_on(
    diag: Option<&mut sock_diag::DiagSocket>,
    l: &Listeners,
) -> Result<Vec<KernelSocket>, String> {
    if let Some(d) = diag {
        if let Ok(v) = d.dump_families(1 << TCP_CLOSE_WAIT, &l.ports, l.ipv4, l.ipv6) {
            return Ok(v);
        }
    }
    proc_net::close_wait_on_ports(&l.ports)
}

/// CLOSE_WAIT sockets on `ports` (both address families): sock_diag through `diag` when given
/// and working, else /proc.
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
