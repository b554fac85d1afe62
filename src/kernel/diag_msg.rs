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
pub(super) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// Set by the kernel on a dump whose table changed while it ran (include/uapi/linux/netlink.h).
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub(super) const NLMSG_HDRLEN: usize = 16;
pub(super) const REQ_V2_LEN: usize = 56;
const DIAG_MSG_LEN: usize = 72;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const NLA_HDRLEN: usize = 4;

const BC_JMP: u8 = 1;
const BC_S_EQ: u8 = 11;
/// One test is 12 bytes and jumps are u16: far more ports than a server listens on.
pub const MAX_FILTER_PORTS: usize = 1024;

pub(super) fn align4(n: usize) -> usize {
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

/// What a reply must carry to belong to our request: the request's sequence number and our
/// socket's port id. Anything else is a previous dump's tail (or not for us) and is skipped,
/// as iproute2 does, so it can never complete or pad the current dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub seq: u32,
    pub port_id: u32,
}

/// Why a dump gave no complete list. Every variant means "do not use what was read".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpError {
    /// NLM_F_DUMP_INTR: the socket table changed during the dump; sockets may be missing.
    Interrupted,
    /// NLMSG_ERROR, or NLMSG_DONE carrying an error: the kernel refused or cut the dump short.
    Kernel(i32),
    /// Bytes the kernel would not send (short header, bad length, short inet_diag_msg).
    Malformed(String),
    /// The socket failed (send/recv error, receive timeout, truncated datagram).
    Io(String),
}

impl std::fmt::Display for DumpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DumpError::Interrupted => {
                f.write_str("sock_diag dump interrupted: the socket table changed while it ran")
            }
            DumpError::Kernel(errno) => write!(
                f,
                "kernel refused or cut short the sock_diag dump: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            DumpError::Malformed(what) => write!(f, "malformed sock_diag reply: {what}"),
            DumpError::Io(what) => write!(f, "sock_diag: {what}"),
        }
    }
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

/// Parses one inet_diag_msg payload (None: too short, or a family we never ask for).
pub(super) fn parse_diag_msg(p: &[u8]) -> Option<KernelSocket> {
    if p.len() < DIAG_MSG_LEN {
        return None;
    }
    let family = p[0];
    if family != libc::AF_INET as u8 && family != libc::AF_INET6 as u8 {
        return None;
    }
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

/// One netlink message header and where the next message starts.
pub(super) struct Header {
    pub(super) len: usize,
    pub(super) kind: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) port_id: u32,
}

pub(super) fn header_at(buf: &[u8], at: usize) -> Result<Header, DumpError> {
    let h = buf.get(at..at + NLMSG_HDRLEN).ok_or_else(|| {
        DumpError::Malformed(format!(
            "{} bytes left after the last message",
            buf.len() - at
        ))
    })?;
    let field = |off| u32_at(h, off).unwrap_or(0);
    let len = field(0) as usize;
    if len < NLMSG_HDRLEN || len > buf.len() - at {
        return Err(DumpError::Malformed(format!(
            "message length {len} with {} bytes left",
            buf.len() - at
        )));
    }
    Ok(Header {
        len,
        kind: u16_at(h, 4).unwrap_or(0),
        flags: u16_at(h, 6).unwrap_or(0),
        seq: field(8),
        port_id: field(12),
    })
}

/// The error code a NLMSG_DONE or NLMSG_ERROR payload starts with (0 when absent).
pub(super) fn errno_of(payload: &[u8]) -> i32 {
    u32_at(payload, 0)
        .map(|e| (e as i32).wrapping_neg())
        .unwrap_or(0)
}

/// Parses one received datagram (possibly several netlink messages) of the dump `expect`
/// names, appending sockets whose local port is in `ports` (empty: keep all) to `out`.
/// Messages of another sequence number or port id are skipped; an interrupted, refused or
/// malformed reply is an error, and what was appended must then be thrown away.
pub fn parse_reply(
    buf: &[u8],
    expect: Expect,
    ports: &[u16],
    out: &mut Vec<KernelSocket>,
) -> Result<Reply, DumpError> {
    parse_messages(buf, Some(expect), ports, out)
}

/// `parse_reply` that takes every message as the current dump's, for the reference dump in
/// benches/scan.rs (a fresh socket per dump, read to its end, so nothing else is queued).
/// The guard reads dumps with `read_dump`, which checks sequence number and port id.
pub fn parse_datagram(
    buf: &[u8],
    ports: &[u16],
    out: &mut Vec<KernelSocket>,
) -> Result<Reply, String> {
    parse_messages(buf, None, ports, out).map_err(|e| e.to_string())
}

/// The messages of one datagram; `expect: None` accepts any sequence number and port id.
fn parse_messages(
    buf: &[u8],
    expect: Option<Expect>,
    ports: &[u16],
    out: &mut Vec<KernelSocket>,
) -> Result<Reply, DumpError> {
    let mut at = 0;
    while at < buf.len() {
        let h = header_at(buf, at)?;
        let payload = &buf[at + NLMSG_HDRLEN..at + h.len];
        at += align4(h.len);
        if expect.is_some_and(|e| h.seq != e.seq || h.port_id != e.port_id) {
            continue;
        }
        if h.flags & NLM_F_DUMP_INTR != 0 {
            return Err(DumpError::Interrupted);
        }
        match h.kind {
            // DONE carries the dump's own return code: non-zero means it ended early.
            NLMSG_DONE => {
                return match errno_of(payload) {
                    0 => Ok(Reply::Done),
                    e => Err(DumpError::Kernel(e)),
                }
            }
            NLMSG_ERROR => {
                return Err(match errno_of(payload) {
                    0 => DumpError::Malformed("an acknowledgement instead of a dump".into()),
                    e => DumpError::Kernel(e),
                })
            }
            SOCK_DIAG_BY_FAMILY => {
                let s = parse_diag_msg(payload)
                    .ok_or_else(|| DumpError::Malformed("short or foreign inet_diag_msg".into()))?;
                if ports.is_empty() || ports.contains(&s.local.port()) {
                    out.push(s);
                }
            }
            _ => {}
        }
    }
    Ok(Reply::More)
}

/// Reads datagrams with `recv` until the dump `expect` names is complete. On an error the
/// sockets appended so far are removed again: a dump is used whole or not at all.
/// `recv` returns a datagram's real length (MSG_TRUNC), which exceeds `buf` when its tail was
/// cut off: an error, because what is left may end at a message boundary and parse.
pub fn read_dump(
    mut recv: impl FnMut(&mut [u8]) -> Result<usize, DumpError>,
    buf: &mut [u8],
    expect: Expect,
    ports: &[u16],
    out: &mut Vec<KernelSocket>,
) -> Result<(), DumpError> {
    let mark = out.len();
    let r = loop {
        let n = match recv(buf) {
            Ok(n) if n > buf.len() => {
                break Err(DumpError::Io(format!("datagram of {n} bytes truncated")))
            }
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        match parse_reply(&buf[..n], expect, ports, out) {
            Ok(Reply::Done) => break Ok(()),
            Ok(Reply::More) => {}
            Err(e) => break Err(e),
        }
    };
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::diag_fixtures::{self, *};

    const US: Expect = Expect {
        seq: 7,
        port_id: 4242,
    };

    fn sock(port: u16, inode: u64) -> KernelSocket {
        socket(
            format!("127.0.0.1:{port}").parse().unwrap(),
            "127.0.0.2:50000".parse().unwrap(),
            inode,
        )
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
        let mut buf = socket_msg(&sock(8080, 4242), US);
        buf.extend(socket_msg(&sock(9999, 1), US));
        let mut out = Vec::new();
        assert_eq!(parse_reply(&buf, US, &[8080], &mut out), Ok(Reply::More));
        assert_eq!(out, vec![sock(8080, 4242)]);
        assert_eq!(out[0].cookie, 4242 << 3);
        assert_eq!(
            parse_reply(&done(US, 0), US, &[], &mut out),
            Ok(Reply::Done)
        );
        let v6 = socket(
            "[2001:db8::1]:443".parse().unwrap(),
            "[::ffff:10.0.0.1]:5".parse().unwrap(),
            9,
        );
        let mut out = Vec::new();
        parse_reply(&socket_msg(&v6, US), US, &[], &mut out).unwrap();
        assert_eq!(out[0].local, v6.local);
        assert_eq!(
            out[0].remote,
            "10.0.0.1:5".parse().unwrap(),
            "v4-mapped shown as IPv4"
        );
    }

    #[test]
    fn replies_of_another_dump_or_socket_are_skipped() {
        let stale = Expect { seq: 6, ..US };
        let other = Expect { port_id: 1, ..US };
        let mut buf = socket_msg(&sock(80, 1), stale);
        buf.extend(done(stale, 0)); // a previous dump's end must not end this one
        buf.extend(socket_msg(&sock(80, 2), other));
        buf.extend(socket_msg(&sock(80, 3), US));
        let mut out = Vec::new();
        assert_eq!(parse_reply(&buf, US, &[], &mut out), Ok(Reply::More));
        assert_eq!(out, vec![sock(80, 3)]);
    }

    #[test]
    fn an_interrupted_dump_is_an_error() {
        let mut out = Vec::new();
        let intr = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_MULTI | NLM_F_DUMP_INTR,
            US,
            &diag_fixtures::diag_msg(&sock(80, 1)),
        );
        assert_eq!(
            parse_reply(&intr, US, &[], &mut out),
            Err(DumpError::Interrupted)
        );
        let intr_done = nlmsg(NLMSG_DONE, NLM_F_MULTI | NLM_F_DUMP_INTR, US, &[0; 4]);
        assert_eq!(
            parse_reply(&intr_done, US, &[], &mut out),
            Err(DumpError::Interrupted)
        );
    }

    #[test]
    fn kernel_errors_end_the_dump_with_the_errno() {
        let mut out = Vec::new();
        let e = parse_reply(&error(US, libc::EPERM), US, &[], &mut out).unwrap_err();
        assert_eq!(e, DumpError::Kernel(libc::EPERM));
        assert!(e.to_string().contains("refused"), "{e}");
        // NLMSG_DONE carries the dump's return code: an error there means it stopped early.
        assert_eq!(
            parse_reply(&done(US, libc::ENOBUFS), US, &[], &mut out),
            Err(DumpError::Kernel(libc::ENOBUFS))
        );
        assert!(matches!(
            parse_reply(&error(US, 0), US, &[], &mut out),
            Err(DumpError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let mut out = Vec::new();
        let short = nlmsg(SOCK_DIAG_BY_FAMILY, 0, US, &[0; 10]);
        assert!(matches!(
            parse_reply(&short, US, &[], &mut out),
            Err(DumpError::Malformed(_))
        ));
        let mut long = socket_msg(&sock(80, 1), US);
        long[0] = 200; // length beyond the buffer
        assert!(parse_reply(&long, US, &[], &mut out).is_err());
        let mut tiny = socket_msg(&sock(80, 1), US);
        tiny[..4].copy_from_slice(&8u32.to_ne_bytes()); // shorter than a header
        assert!(parse_reply(&tiny, US, &[], &mut out).is_err());
        // A datagram cut inside the next header.
        let mut cut = socket_msg(&sock(80, 1), US);
        cut.extend_from_slice(&[1, 2, 3, 4, 5]);
        let e = parse_reply(&cut, US, &[], &mut out).unwrap_err();
        assert!(e.to_string().contains("5 bytes left"), "{e}");
        // An address family we never ask for.
        let mut foreign = diag_fixtures::diag_msg(&sock(80, 1));
        foreign[0] = libc::AF_UNIX as u8;
        let foreign = nlmsg(SOCK_DIAG_BY_FAMILY, 0, US, &foreign);
        assert!(parse_reply(&foreign, US, &[], &mut out).is_err());
    }

    /// Found by fuzz::netlink::truncated_datagram (shrunk: our DONE, then another dump's
    /// message, in one datagram one message longer than the buffer): the length was clamped
    /// to the buffer and the cut datagram parsed. Here the cut drops a socket at a message
    /// boundary and DONE comes next: the dump ended "complete" without it.
    #[test]
    fn a_truncated_datagram_fails_the_dump() {
        let first = socket_msg(&sock(80, 2), US);
        let mut buf = vec![0; first.len()];
        let mut out = vec![sock(1, 1)];
        let parts = vec![[first, socket_msg(&sock(80, 3), US)].concat(), done(US, 0)];
        let e = read_dump(recv_script(parts), &mut buf, US, &[], &mut out).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert_eq!(out, vec![sock(1, 1)]);
    }

    #[test]
    fn a_multi_part_dump_is_read_to_its_end() {
        let mut buf = vec![0; 4096];
        let mut out = vec![sock(1, 1)]; // what the other family's dump found stays
        let parts = vec![
            socket_msg(&sock(80, 2), US),
            [socket_msg(&sock(80, 3), US), socket_msg(&sock(80, 4), US)].concat(),
            done(US, 0),
        ];
        read_dump(recv_script(parts), &mut buf, US, &[], &mut out).unwrap();
        let inodes: Vec<u64> = out.iter().map(|s| s.inode).collect();
        assert_eq!(inodes, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_failed_dump_leaves_nothing_behind() {
        let mut buf = vec![0; 4096];
        let mut out = vec![sock(1, 1)];
        // Timed out before NLMSG_DONE: a partial list is no list.
        let parts = vec![socket_msg(&sock(80, 2), US)];
        let e = read_dump(recv_script(parts), &mut buf, US, &[], &mut out).unwrap_err();
        assert!(matches!(e, DumpError::Io(_)));
        assert_eq!(out, vec![sock(1, 1)]);
        // Interrupted in its second part.
        let intr = nlmsg(NLMSG_DONE, NLM_F_MULTI | NLM_F_DUMP_INTR, US, &[0; 4]);
        let parts = vec![socket_msg(&sock(80, 2), US), intr];
        let e = read_dump(recv_script(parts), &mut buf, US, &[], &mut out).unwrap_err();
        assert_eq!(e, DumpError::Interrupted);
        assert_eq!(out, vec![sock(1, 1)]);
    }

    #[test]
    fn the_tail_of_a_timed_out_dump_does_not_complete_the_next() {
        // Dump 6 timed out after its first part; its tail (and its DONE) is still queued
        // when dump 7 is read. Without the sequence check dump 7 would end at dump 6's
        // DONE with dump 6's sockets.
        let old = Expect { seq: 6, ..US };
        let mut buf = vec![0; 4096];
        let mut out = Vec::new();
        let parts = vec![
            [socket_msg(&sock(80, 60), old), done(old, 0)].concat(),
            socket_msg(&sock(80, 70), US),
            done(US, 0),
        ];
        read_dump(recv_script(parts), &mut buf, US, &[], &mut out).unwrap();
        assert_eq!(out, vec![sock(80, 70)]);
    }
}
