//! Test-only builders of the kernel's sock_diag replies, for the parser's unit and property
//! tests (the parser must be testable without a socket).

use std::net::{IpAddr, SocketAddr};

use super::diag_msg::{DumpError, Expect, NLMSG_DONE, NLMSG_ERROR, SOCK_DIAG_BY_FAMILY};
use super::KernelSocket;

pub const NLMSG_HDRLEN: usize = 16;
/// The multi-part flag the kernel sets on every dump message.
pub const NLM_F_MULTI: u16 = 0x2;

/// The inet_diag_msg the kernel would send for `s` (IPv6 when either address is).
pub fn diag_msg(s: &KernelSocket) -> Vec<u8> {
    let v6 = s.local.is_ipv6() || s.remote.is_ipv6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    let mut p = vec![family, s.state, 0, 0];
    p.extend_from_slice(&s.local.port().to_be_bytes());
    p.extend_from_slice(&s.remote.port().to_be_bytes());
    p.extend_from_slice(&ip_field(s.local.ip(), v6));
    p.extend_from_slice(&ip_field(s.remote.ip(), v6));
    p.extend_from_slice(&0u32.to_ne_bytes()); // if
    p.extend_from_slice(&(s.cookie as u32).to_ne_bytes());
    p.extend_from_slice(&((s.cookie >> 32) as u32).to_ne_bytes());
    // expires, rqueue, wqueue, uid, inode
    for v in [0u32, s.recv_q as u32, 0, s.uid, s.inode as u32] {
        p.extend_from_slice(&v.to_ne_bytes());
    }
    p
}

/// 16 address bytes: IPv4 in the first four for AF_INET, v4-mapped for AF_INET6.
fn ip_field(ip: IpAddr, v6: bool) -> [u8; 16] {
    let mut b = [0u8; 16];
    match (ip, v6) {
        (IpAddr::V4(a), false) => b[..4].copy_from_slice(&a.octets()),
        (IpAddr::V4(a), true) => b = a.to_ipv6_mapped().octets(),
        (IpAddr::V6(a), _) => b = a.octets(),
    }
    b
}

/// One netlink message, padded to 4 bytes as the kernel does.
pub fn nlmsg(kind: u16, flags: u16, to: Expect, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&to.seq.to_ne_bytes());
    m.extend_from_slice(&to.port_id.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(m.len().next_multiple_of(4), 0);
    m
}

pub fn socket_msg(s: &KernelSocket, to: Expect) -> Vec<u8> {
    nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F_MULTI, to, &diag_msg(s))
}

/// NLMSG_DONE with the dump's return code (0: complete). Any errno, as the property tests
/// generate them (negated with wrapping, like the kernel's int).
pub fn done(to: Expect, errno: i32) -> Vec<u8> {
    nlmsg(
        NLMSG_DONE,
        NLM_F_MULTI,
        to,
        &errno.wrapping_neg().to_ne_bytes(),
    )
}

/// NLMSG_ERROR: the error, then the request's header (zeros will do).
pub fn error(to: Expect, errno: i32) -> Vec<u8> {
    let mut p = errno.wrapping_neg().to_ne_bytes().to_vec();
    p.extend_from_slice(&[0; NLMSG_HDRLEN]);
    nlmsg(NLMSG_ERROR, 0, to, &p)
}

/// A socket the parser returns unchanged (v4-mapped IPv6 addresses come back as IPv4).
pub fn socket(local: SocketAddr, remote: SocketAddr, inode: u64) -> KernelSocket {
    KernelSocket {
        local,
        remote,
        state: super::TCP_CLOSE_WAIT,
        recv_q: 1,
        inode,
        cookie: inode << 3,
        uid: 33,
    }
}

/// A `recv` for `read_dump`: the datagrams one by one as recv with MSG_TRUNC hands them out
/// (copied as far as the buffer reaches, the real length returned), then a receive timeout.
pub fn recv_script(datagrams: Vec<Vec<u8>>) -> impl FnMut(&mut [u8]) -> Result<usize, DumpError> {
    let mut it = datagrams.into_iter();
    move |buf: &mut [u8]| match it.next() {
        Some(d) => {
            let n = d.len().min(buf.len());
            buf[..n].copy_from_slice(&d[..n]);
            Ok(d.len())
        }
        None => Err(DumpError::Io("recv: timed out".into())),
    }
}
