//! NETLINK_SOCK_DIAG (inet_diag) messages: building the dump request and parsing replies.
//!
//! Plain safe Rust over byte slices with explicit bounds checks, so a short or malformed reply
//! is an error, never an out-of-bounds read. Layouts follow <linux/inet_diag.h> and
//! <linux/netlink.h>; all fields are host byte order except ports and addresses (network order).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::KernelSocket;

pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
const REQ_V2_LEN: usize = 56;
const DIAG_MSG_LEN: usize = 72;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const NLA_HDRLEN: usize = 4;

const BC_JMP: u8 = 1;
const BC_S_EQ: u8 = 11;
/// One test is 12 bytes and jumps are u16: far more ports than a server listens on.
pub const MAX_FILTER_PORTS: usize = 1024;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bytecode accepting sockets whose local port is one of `ports` (the layout `ss` emits for
/// `sport = :A or sport = :B`): each `S_EQ port` falls through on a match (yes = 8) to a `JMP`
/// to the end (accept) and skips on a miss (no = 12) to the next test; a miss on the last test
/// lands 4 bytes past the end (reject). The kernel's audit (inet_diag_bc_audit) follows the
/// chain of `yes` links and requires every `no` target to lie on it, which this layout meets.
pub fn port_filter(ports: &[u16]) -> Option<Vec<u8>> {
    let n = ports.len();
    if n == 0 || n > MAX_FILTER_PORTS {
        return None;
    }
    let mut bc = Vec::with_capacity(12 * n);
    for (i, port) in ports.iter().enumerate() {
        bc.extend_from_slice(&[BC_S_EQ, 8]);
        bc.extend_from_slice(&12u16.to_ne_bytes());
        bc.extend_from_slice(&[0, 0]);
        bc.extend_from_slice(&port.to_ne_bytes());
        if i + 1 < n {
            bc.extend_from_slice(&[BC_JMP, 4]);
            bc.extend_from_slice(&((12 * (n - 1 - i)) as u16).to_ne_bytes());
        }
    }
    Some(bc)
}

/// A dump request for TCP sockets of `family` (AF_INET / AF_INET6) in any of `states`
/// (a bit mask of 1 << TCP_state), optionally filtered by `bytecode`.
pub fn dump_request(family: u8, states: u32, seq: u32, bytecode: Option<&[u8]>) -> Vec<u8> {
    let attr_len = bytecode.map(|bc| NLA_HDRLEN + bc.len()).unwrap_or(0);
    let len = NLMSG_HDRLEN + REQ_V2_LEN + align4(attr_len);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&states.to_ne_bytes());
    m.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: unused for dumps
    if let Some(bc) = bytecode {
        m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        m.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        m.extend_from_slice(bc);
        m.resize(len, 0);
    }
    m
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// More messages follow in later datagrams.
    More,
    /// NLMSG_DONE seen: the dump is complete.
    Done,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn addr(family: u8, b: &[u8], port_at: usize, ip_at: usize) -> Option<SocketAddr> {
    let port = u16::from_be_bytes(b.get(port_at..port_at + 2)?.try_into().ok()?);
    let ip = if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(b.get(ip_at..ip_at + 4)?).ok()?,
        ))
    } else {
        let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(b.get(ip_at..ip_at + 16)?).ok()?);
        v6.to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6))
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one inet_diag_msg payload.
fn parse_diag_msg(p: &[u8]) -> Option<KernelSocket> {
    if p.len() < DIAG_MSG_LEN {
        return None;
    }
    let family = p[0];
    let id = 4; // inet_diag_sockid starts after family, state, timer, retrans
    Some(KernelSocket {
        state: p[1],
        local: addr(family, p, id, id + 4)?,
        remote: addr(family, p, id + 2, id + 20)?,
        // sockid: sport, dport, src[16], dst[16], if, cookie[2]
        cookie: u32_at(p, id + 40)? as u64 | (u32_at(p, id + 44)? as u64) << 32,
        recv_q: u32_at(p, 56)? as u64,
        uid: u32_at(p, 64)?,
        inode: u32_at(p, 68)? as u64,
    })
}

/// Parses one received datagram (possibly several netlink messages), appending sockets whose
/// local port is in `ports` (empty: keep all) to `out`.
pub fn parse_datagram(
    buf: &[u8],
    ports: &[u16],
    out: &mut Vec<KernelSocket>,
) -> Result<Reply, String> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or("truncated header")? as usize;
        let kind = u16_at(buf, at + 4).ok_or("truncated header")?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(format!("malformed netlink message (length {len})"));
        }
        let payload = &buf[at + NLMSG_HDRLEN..at + len];
        match kind {
            NLMSG_DONE => return Ok(Reply::Done),
            NLMSG_ERROR => {
                let errno = u32_at(payload, 0).map(|e| -(e as i32)).unwrap_or(0);
                return Err(format!(
                    "kernel refused the sock_diag dump: {}",
                    std::io::Error::from_raw_os_error(errno)
                ));
            }
            SOCK_DIAG_BY_FAMILY => {
                let s = parse_diag_msg(payload).ok_or("short inet_diag_msg")?;
                if ports.is_empty() || ports.contains(&s.local.port()) {
                    out.push(s);
                }
            }
            _ => {}
        }
        at += align4(len);
    }
    Ok(Reply::More)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag_msg(state: u8, lport: u16, rport: u16, inode: u32, rq: u32) -> Vec<u8> {
        let mut p = vec![libc::AF_INET as u8, state, 0, 0];
        p.extend_from_slice(&lport.to_be_bytes());
        p.extend_from_slice(&rport.to_be_bytes());
        p.extend_from_slice(&[127, 0, 0, 1]);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&[127, 0, 0, 2]);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&0u32.to_ne_bytes()); // if
        p.extend_from_slice(&7u32.to_ne_bytes()); // cookie lo
        p.extend_from_slice(&1u32.to_ne_bytes()); // cookie hi
        for v in [0u32, rq, 0, 33, inode] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(p.len(), DIAG_MSG_LEN);
        p
    }

    fn nlmsg(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn request_has_the_kernel_layout() {
        let r = dump_request(libc::AF_INET as u8, 1 << 8, 9, None);
        assert_eq!(r.len(), 72);
        assert_eq!(u32_at(&r, 0), Some(72));
        assert_eq!(u16_at(&r, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u32_at(&r, 20), Some(1 << 8));
        let bc = port_filter(&[80, 8080]).unwrap();
        assert_eq!(bc.len(), 20);
        let r = dump_request(libc::AF_INET6 as u8, 1 << 8, 9, Some(&bc));
        assert_eq!(r.len(), 72 + 4 + 20);
        assert_eq!(u16_at(&r, 72), Some(24));
    }

    /// The kernel's inet_diag_bc_run for the two ops we emit: true = socket accepted.
    fn run(bc: &[u8], sport: u16) -> bool {
        let mut at = 0usize;
        let mut len = bc.len() as i64;
        while len > 0 {
            let (code, yes, no) = (
                bc[at],
                bc[at + 1] as usize,
                u16_at(bc, at + 2).unwrap() as usize,
            );
            let ok = match code {
                BC_S_EQ => u16_at(bc, at + 6).unwrap() == sport,
                BC_JMP => false,
                _ => panic!("unexpected op {code}"),
            };
            let step = if ok { yes } else { no };
            at += step;
            len -= step as i64;
        }
        len == 0
    }

    /// The kernel's inet_diag_bc_audit: walk the `yes` chain; every `no` must land on it or
    /// exactly 4 bytes past the end.
    fn audit(bc: &[u8]) -> bool {
        let mut chain = vec![0usize];
        let mut at = 0usize;
        while at < bc.len() {
            let yes = bc[at + 1] as usize;
            at += yes;
            chain.push(at);
        }
        if at != bc.len() {
            return false;
        }
        chain.iter().filter(|&&p| p < bc.len()).all(|&p| {
            let no = u16_at(bc, p + 2).unwrap() as usize;
            let target = p + no;
            target == bc.len() + 4 || chain.contains(&target)
        })
    }

    #[test]
    fn filter_accepts_exactly_our_ports_and_passes_the_kernel_audit() {
        for ports in [vec![8080], vec![80, 443], vec![80, 443, 8080, 8443]] {
            let bc = port_filter(&ports).unwrap();
            assert!(audit(&bc), "audit rejects {ports:?}");
            for p in [1, 79, 80, 443, 8080, 8443, 65535] {
                assert_eq!(
                    run(&bc, p),
                    ports.contains(&p),
                    "port {p} with filter {ports:?}"
                );
            }
        }
        assert!(port_filter(&[]).is_none());
    }

    #[test]
    fn parses_sockets_and_stops_at_done() {
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(8, 8080, 50000, 4242, 12));
        buf.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(8, 9999, 50001, 1, 0)));
        let mut out = Vec::new();
        assert_eq!(parse_datagram(&buf, &[8080], &mut out), Ok(Reply::More));
        assert_eq!(out.len(), 1);
        let s = &out[0];
        assert_eq!((s.state, s.inode, s.recv_q, s.uid), (8, 4242, 12, 33));
        assert_eq!(s.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.remote, "127.0.0.2:50000".parse().unwrap());
        assert_eq!(s.cookie, 7 | 1 << 32);
        assert_eq!(
            parse_datagram(&nlmsg(NLMSG_DONE, &[0; 4]), &[], &mut out),
            Ok(Reply::Done)
        );
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let mut out = Vec::new();
        let mut bad = nlmsg(SOCK_DIAG_BY_FAMILY, &[0; 10]);
        assert!(parse_datagram(&bad, &[], &mut out).is_err());
        bad[0] = 200; // length beyond the buffer
        assert!(parse_datagram(&bad, &[], &mut out).is_err());
        let err = nlmsg(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert!(parse_datagram(&err, &[], &mut out)
            .unwrap_err()
            .contains("refused"));
        // Arbitrary bytes never panic.
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let _ = parse_datagram(&junk, &[], &mut out);
        }
    }
}
