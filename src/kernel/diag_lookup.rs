//! Exact sock_diag lookups: one inet_diag request per 4-tuple, without NLM_F_DUMP, which the
//! kernel answers with one hash lookup (inet_diag_find_one_icsk) instead of a walk of every
//! TCP socket of the host. Many requests go out in one datagram; each gets its own reply,
//! matched here by sequence number: the socket, or NLMSG_ERROR ENOENT when it is gone.
//!
//! Plain safe Rust over byte slices like `diag_msg`, and as distrustful: the tuples come from
//! the shared table (written by unprivileged children), so a reply counts only when it names
//! exactly the tuple asked for. The kernel's lookup falls back to the listening socket of the
//! port when the connection is gone; that reply names another tuple and reads as gone.

use std::net::SocketAddr;

use super::diag_msg::{
    align4, errno_of, header_at, parse_diag_msg, DumpError, NLMSG_ERROR, NLMSG_HDRLEN,
    NLM_F_REQUEST, REQ_V2_LEN, SOCK_DIAG_BY_FAMILY,
};
use super::KernelSocket;

/// Bytes of one lookup request.
pub const LOOKUP_LEN: usize = NLMSG_HDRLEN + REQ_V2_LEN;
/// `INET_DIAG_NOCOOKIE`: look the socket up by its addresses alone.
const NOCOOKIE: u32 = !0;

/// A connection as the table names it: (local, remote).
pub type Tuple = (SocketAddr, SocketAddr);

/// What the kernel said about one tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The socket with exactly this tuple.
    Found(KernelSocket),
    /// No connection with this tuple (ENOENT, or a reply naming another socket).
    Gone,
}

/// The address as inet_diag_sockid holds it: IPv4 in the first 4 bytes for AF_INET.
fn ip_bytes(a: SocketAddr, v6: bool) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a.ip() {
        std::net::IpAddr::V4(ip) if v6 => b = ip.to_ipv6_mapped().octets(),
        std::net::IpAddr::V4(ip) => b[..4].copy_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => b = ip.octets(),
    }
    b
}

/// Appends the request for `tuple` with sequence number `seq`. An IPv4 tuple is asked as
/// AF_INET: the kernel finds it in the one established hash whatever the socket's family (an
/// IPv4 client of an IPv6 listener too), so nothing about the listener needs to be known.
pub fn lookup_request(out: &mut Vec<u8>, seq: u32, tuple: Tuple) {
    let (local, remote) = (canonical(tuple.0), canonical(tuple.1));
    let v6 = local.is_ipv6() || remote.is_ipv6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    out.extend_from_slice(&(LOOKUP_LEN as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    out.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // states: not used by a lookup
    out.extend_from_slice(&local.port().to_be_bytes());
    out.extend_from_slice(&remote.port().to_be_bytes());
    out.extend_from_slice(&ip_bytes(local, v6));
    out.extend_from_slice(&ip_bytes(remote, v6));
    out.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    out.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    out.extend_from_slice(&NOCOOKIE.to_ne_bytes());
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// One batch of lookups in flight: request `i` went out with sequence number `first + i`.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub port_id: u32,
    pub first: u32,
    pub tuples: &'a [Tuple],
}

impl Batch<'_> {
    /// Takes the replies in one received datagram into `answers` (one entry per tuple).
    /// Messages of another port id or outside the batch's sequence numbers (a failed batch's
    /// tail) are skipped; a second reply to one request, a kernel error other than ENOENT or
    /// malformed bytes are errors, and the whole batch must then be thrown away.
    pub fn take(&self, buf: &[u8], answers: &mut [Option<Lookup>]) -> Result<(), DumpError> {
        let mut at = 0;
        while at < buf.len() {
            let h = header_at(buf, at)?;
            let payload = &buf[at + NLMSG_HDRLEN..at + h.len];
            at += align4(h.len);
            let i = h.seq.wrapping_sub(self.first) as usize;
            if h.port_id != self.port_id || i >= self.tuples.len() {
                continue;
            }
            let lookup = match h.kind {
                SOCK_DIAG_BY_FAMILY => self.reply(i, payload)?,
                NLMSG_ERROR => match errno_of(payload) {
                    libc::ENOENT => Lookup::Gone,
                    0 => return Err(DumpError::Malformed("an acknowledgement".into())),
                    e => return Err(DumpError::Kernel(e)),
                },
                _ => return Err(DumpError::Malformed(format!("message type {}", h.kind))),
            };
            let slot = answers
                .get_mut(i)
                .ok_or_else(|| DumpError::Malformed("more answers than requests".into()))?;
            if slot.replace(lookup).is_some() {
                return Err(DumpError::Malformed(format!("two replies to request {i}")));
            }
        }
        Ok(())
    }

    /// A socket reply to request `i`: found only if it is exactly the tuple asked for.
    fn reply(&self, i: usize, payload: &[u8]) -> Result<Lookup, DumpError> {
        let s = parse_diag_msg(payload)
            .ok_or_else(|| DumpError::Malformed("short or foreign inet_diag_msg".into()))?;
        let (local, remote) = self.tuples[i];
        Ok(
            if s.local == canonical(local) && s.remote == canonical(remote) {
                Lookup::Found(s)
            } else {
                Lookup::Gone
            },
        )
    }
}

/// The answers of a batch once every request has one; an error names how many are missing.
pub fn complete(answers: Vec<Option<Lookup>>) -> Result<Vec<Lookup>, DumpError> {
    let missing = answers.iter().filter(|a| a.is_none()).count();
    if missing > 0 {
        return Err(DumpError::Io(format!(
            "{missing} of {} lookups unanswered",
            answers.len()
        )));
    }
    Ok(answers.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::diag_fixtures::{error, nlmsg, socket};
    use crate::kernel::diag_msg::Expect;

    const PORT_ID: u32 = 4242;

    fn tuple(client_port: u16) -> Tuple {
        (
            "127.0.0.1:80".parse().unwrap(),
            format!("127.0.0.2:{client_port}").parse().unwrap(),
        )
    }

    fn found(t: Tuple, seq: u32, inode: u64) -> Vec<u8> {
        let to = Expect {
            seq,
            port_id: PORT_ID,
        };
        nlmsg(
            SOCK_DIAG_BY_FAMILY,
            0,
            to,
            &crate::kernel::diag_fixtures::diag_msg(&socket(t.0, t.1, inode)),
        )
    }

    fn gone(seq: u32) -> Vec<u8> {
        error(
            Expect {
                seq,
                port_id: PORT_ID,
            },
            libc::ENOENT,
        )
    }

    #[test]
    fn request_has_the_kernel_layout() {
        let mut r = Vec::new();
        lookup_request(&mut r, 9, tuple(5000));
        assert_eq!(r.len(), LOOKUP_LEN);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(
            u16::from_ne_bytes(r[6..8].try_into().unwrap()),
            1,
            "no dump"
        );
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(&r[24..26], &80u16.to_be_bytes(), "sport: the local port");
        assert_eq!(&r[26..28], &5000u16.to_be_bytes(), "dport: the client's");
        assert_eq!(&r[28..32], &[127, 0, 0, 1]);
        assert_eq!(&r[44..48], &[127, 0, 0, 2]);
        assert_eq!(&r[64..72], &[0xff; 8], "no cookie");
        let mut r6 = Vec::new();
        let v6 = ("[::1]:80".parse().unwrap(), "[::1]:5000".parse().unwrap());
        lookup_request(&mut r6, 1, v6);
        assert_eq!(r6[16], libc::AF_INET6 as u8);
        assert_eq!(r6[28 + 15], 1);
        // A v4-mapped tuple is asked as IPv4.
        let mapped = (
            "[::ffff:127.0.0.1]:80".parse().unwrap(),
            "[::ffff:127.0.0.2]:7".parse().unwrap(),
        );
        let mut rm = Vec::new();
        lookup_request(&mut rm, 1, mapped);
        assert_eq!(rm[16], libc::AF_INET as u8);
    }

    #[test]
    fn replies_are_matched_by_sequence_number_in_any_order() {
        let tuples = [tuple(1), tuple(2), tuple(3)];
        let b = Batch {
            port_id: PORT_ID,
            first: 10,
            tuples: &tuples,
        };
        let mut answers = vec![None; 3];
        b.take(&found(tuples[2], 12, 33), &mut answers).unwrap();
        b.take(&[gone(10), found(tuples[1], 11, 22)].concat(), &mut answers)
            .unwrap();
        let got = complete(answers).unwrap();
        assert_eq!(got[0], Lookup::Gone);
        assert!(matches!(&got[1], Lookup::Found(s) if s.inode == 22));
        assert!(matches!(&got[2], Lookup::Found(s) if s.inode == 33));
    }

    #[test]
    fn another_socket_in_the_reply_is_gone_not_found() {
        // The kernel answers a gone connection with the port's listener.
        let tuples = [tuple(1)];
        let b = Batch {
            port_id: PORT_ID,
            first: 1,
            tuples: &tuples,
        };
        let listener = (
            "127.0.0.1:80".parse().unwrap(),
            "0.0.0.0:0".parse().unwrap(),
        );
        let mut answers = vec![None];
        b.take(&found(listener, 1, 7), &mut answers).unwrap();
        assert_eq!(answers[0], Some(Lookup::Gone));
    }

    #[test]
    fn stale_and_foreign_replies_are_skipped_errors_fail_the_batch() {
        let tuples = [tuple(1), tuple(2)];
        let b = Batch {
            port_id: PORT_ID,
            first: u32::MAX, // the sequence numbers wrap inside the batch
            tuples: &tuples,
        };
        let mut answers = vec![None; 2];
        let other = Expect {
            seq: u32::MAX,
            port_id: 1,
        };
        b.take(
            &[gone(u32::MAX - 1), error(other, libc::ENOENT)].concat(),
            &mut answers,
        )
        .unwrap();
        assert_eq!(answers, vec![None, None], "nothing of ours");
        b.take(&gone(0), &mut answers).unwrap();
        assert_eq!(
            answers[1],
            Some(Lookup::Gone),
            "seq 0 is the second request"
        );
        assert!(complete(answers.clone())
            .unwrap_err()
            .to_string()
            .contains("1 of 2"));
        assert!(b.take(&gone(0), &mut answers).is_err(), "a second reply");
        let mut fresh = vec![None; 2];
        let eperm = error(
            Expect {
                seq: u32::MAX,
                port_id: PORT_ID,
            },
            libc::EPERM,
        );
        assert_eq!(
            b.take(&eperm, &mut fresh),
            Err(DumpError::Kernel(libc::EPERM))
        );
        let mut cut = found(tuples[0], u32::MAX, 1);
        cut.truncate(40);
        assert!(b.take(&cut, &mut fresh).is_err(), "a cut message");
    }
}
