//! sock_diag replies (`kernel::diag_msg`): a dump is used whole or not at all.
//!
//! A generated dump is this request's socket messages and its NLMSG_DONE, with messages of
//! other dumps (another sequence number or port id: a timed-out dump's tail, another socket's
//! replies) mixed in, cut into datagrams at message boundaries as the kernel sends them.

use std::net::{IpAddr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{canonical, check, mutate};
use crate::kernel::diag_fixtures::{self, nlmsg};
use crate::kernel::diag_msg::{
    parse_datagram, parse_reply, read_dump, DumpError, Expect, NLMSG_DONE, NLMSG_ERROR,
    NLM_F_DUMP_INTR, SOCK_DIAG_BY_FAMILY,
};
use crate::kernel::KernelSocket;

/// One netlink message of a generated dump.
#[derive(Clone, Debug)]
enum Msg {
    Socket(KernelSocket, Expect),
    Done(Expect, i32),
    Error(Expect, i32),
    /// The message with NLM_F_DUMP_INTR set.
    Interrupted(Box<Msg>),
}

impl Msg {
    fn to(&self) -> Expect {
        match self {
            Msg::Socket(_, to) | Msg::Done(to, _) | Msg::Error(to, _) => *to,
            Msg::Interrupted(m) => m.to(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Socket(s, to) => diag_fixtures::socket_msg(s, *to),
            Msg::Done(to, errno) => diag_fixtures::done(*to, *errno),
            Msg::Error(to, errno) => diag_fixtures::error(*to, *errno),
            Msg::Interrupted(m) => {
                let mut b = m.encode();
                let flags = u16::from_ne_bytes([b[6], b[7]]) | NLM_F_DUMP_INTR;
                b[6..8].copy_from_slice(&flags.to_ne_bytes());
                b
            }
        }
    }
}

/// A dump as the kernel would send it, and what the parser must make of it.
#[derive(Clone, Debug)]
struct Dump {
    us: Expect,
    ports: Vec<u16>,
    msgs: Vec<Msg>,
    /// Message indexes where a new datagram starts.
    cuts: Vec<usize>,
}

impl Dump {
    fn datagrams(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for (i, m) in self.msgs.iter().enumerate() {
            if i == 0 || self.cuts.contains(&i) {
                out.push(Vec::new());
            }
            out.last_mut().unwrap().extend(m.encode());
        }
        out
    }

    /// Our sockets on the filtered ports, as the parser returns them (v4-mapped as IPv4).
    fn expected(&self) -> Vec<KernelSocket> {
        let ours = self.msgs.iter().filter_map(|m| match m {
            Msg::Socket(s, to) if *to == self.us => Some(canonical_socket(s)),
            _ => None,
        });
        ours.filter(|s| on(&self.ports, s)).collect()
    }

    /// The datagram message `i` travels in.
    fn datagram_of(&self, i: usize) -> usize {
        (1..=i).filter(|k| self.cuts.contains(k)).count()
    }

    /// Index in `msgs` of our NLMSG_DONE.
    fn done(&self) -> usize {
        let ours = |m: &Msg| matches!(m, Msg::Done(to, _) if *to == self.us);
        self.msgs
            .iter()
            .rposition(ours)
            .expect("a dump ends with DONE")
    }

    /// Index in `msgs` of one of our messages, DONE included.
    fn ours(&self, n: Index) -> usize {
        let idx: Vec<usize> = (0..self.msgs.len())
            .filter(|&i| self.msgs[i].to() == self.us)
            .collect();
        idx[n.index(idx.len())]
    }
}

/// Whether the port filter `ports` (empty: every port) keeps `s`.
fn on(ports: &[u16], s: &KernelSocket) -> bool {
    ports.is_empty() || ports.contains(&s.local.port())
}

/// `s` as the parser returns it: v4-mapped addresses as IPv4.
fn canonical_socket(s: &KernelSocket) -> KernelSocket {
    KernelSocket {
        local: canonical(s.local),
        remote: canonical(s.remote),
        ..s.clone()
    }
}

pub(super) fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

/// A few ports shared by sockets and filters (so filters match), or any port.
pub(super) fn port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => 80u16..84, 1 => any::<u16>()]
}

fn kernel_socket() -> impl Strategy<Value = KernelSocket> {
    let ends = (ip(), port(), ip(), any::<u16>());
    let fields = (
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
    );
    (ends, fields).prop_map(
        |((lip, lport, rip, rport), (state, rq, inode, cookie, uid))| KernelSocket {
            local: SocketAddr::new(lip, lport),
            remote: SocketAddr::new(rip, rport),
            state,
            recv_q: rq as u64,
            inode: inode as u64,
            cookie,
            uid,
        },
    )
}

pub(super) fn expect() -> impl Strategy<Value = Expect> {
    (any::<u32>(), any::<u32>()).prop_map(|(seq, port_id)| Expect { seq, port_id })
}

/// Another dump's message: never ours, whatever it says.
fn foreign(us: Expect) -> impl Strategy<Value = Msg> {
    let other = (any::<bool>(), 1..u32::MAX).prop_map(move |(seq, d)| match seq {
        true => Expect {
            seq: us.seq.wrapping_add(d),
            ..us
        },
        false => Expect {
            port_id: us.port_id.wrapping_add(d),
            ..us
        },
    });
    (other, kernel_socket(), any::<i32>(), 0..4u8).prop_map(|(to, s, errno, kind)| match kind {
        0 => Msg::Socket(s, to),
        1 => Msg::Interrupted(Box::new(Msg::Socket(s, to))),
        2 => Msg::Done(to, errno),
        _ => Msg::Error(to, errno),
    })
}

/// A complete dump of ours (sockets, DONE) with foreign messages mixed in.
fn dump() -> impl Strategy<Value = Dump> {
    (expect(), vec(kernel_socket(), 0..24), vec(port(), 0..3)).prop_flat_map(
        |(us, sockets, ports)| {
            let mut msgs: Vec<Msg> = sockets.into_iter().map(|s| Msg::Socket(s, us)).collect();
            msgs.push(Msg::Done(us, 0));
            let strangers = vec((any::<Index>(), foreign(us)), 0..4);
            (strangers, vec(any::<Index>(), 0..6)).prop_map(move |(strangers, cuts)| {
                let mut msgs = msgs.clone();
                for (at, m) in strangers {
                    msgs.insert(at.index(msgs.len() + 1), m);
                }
                let cuts = cuts.iter().map(|c| c.index(msgs.len())).collect();
                Dump {
                    us,
                    ports: ports.clone(),
                    msgs,
                    cuts,
                }
            })
        },
    )
}

/// What another family's dump already put in the list: must survive every failure.
fn before() -> Vec<KernelSocket> {
    vec![diag_fixtures::socket(
        "10.9.9.9:1".parse().unwrap(),
        "10.9.9.8:2".parse().unwrap(),
        99,
    )]
}

/// Reads `datagrams` as dump `d` with a `buf_len` buffer: the result and the list after it.
fn read(
    d: &Dump,
    datagrams: Vec<Vec<u8>>,
    buf_len: usize,
) -> (Result<(), DumpError>, Vec<KernelSocket>) {
    let mut buf = vec![0u8; buf_len];
    let mut out = before();
    let r = read_dump(
        diag_fixtures::recv_script(datagrams),
        &mut buf,
        d.us,
        &d.ports,
        &mut out,
    );
    (r, out)
}

/// A failed read must leave exactly what was there before.
fn refused(r: &Result<(), DumpError>, out: &[KernelSocket]) -> Result<(), TestCaseError> {
    prop_assert!(r.is_err(), "accepted: {:?}", out);
    prop_assert_eq!(out, &before()[..], "a failed dump left sockets behind");
    Ok(())
}

/// Messages with well-formed headers and random kinds, flags and payloads.
pub(super) fn raw_messages() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        Just(SOCK_DIAG_BY_FAMILY),
        Just(NLMSG_DONE),
        Just(NLMSG_ERROR),
        any::<u16>()
    ];
    let msg = (kind, any::<u16>(), expect(), vec(any::<u8>(), 0..90));
    vec(msg, 0..5).prop_map(|ms| {
        ms.iter()
            .flat_map(|(k, f, to, p)| nlmsg(*k, *f, *to, p))
            .collect()
    })
}

#[test]
fn any_bytes() {
    let bytes = prop_oneof![vec(any::<u8>(), 0..400), raw_messages()];
    check(
        "netlink::any_bytes",
        (bytes, expect(), vec(port(), 0..3)),
        |(b, us, ports)| {
            let mut out = Vec::new();
            if parse_datagram(&b, &ports, &mut out).is_ok() {
                prop_assert!(out.iter().all(|s| on(&ports, s)));
            }
            let _ = parse_reply(&b, us, &ports, &mut out);
            let d = Dump {
                us,
                ports,
                msgs: Vec::new(),
                cuts: Vec::new(),
            };
            let (r, out) = read(&d, vec![b], 4096);
            if r.is_err() {
                refused(&r, &out)?;
            }
            Ok(())
        },
    );
}

#[test]
fn valid_dump_round_trips() {
    check("netlink::valid_dump_round_trips", dump(), |d| {
        let (r, out) = read(&d, d.datagrams(), 8192);
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(&out[..1], &before()[..]);
        prop_assert_eq!(&out[1..], &d.expected()[..]);
        Ok(())
    });
}

#[test]
fn mutated_dump() {
    let input = (dump(), any::<Index>(), mutate::byte_edits(4));
    check("netlink::mutated_dump", input, |(d, which, edits)| {
        let mut grams = d.datagrams();
        mutate::one_datagram(&mut grams, which, &edits);
        let (r, out) = read(&d, grams, 8192);
        match r {
            Err(_) => refused(&r, &out)?,
            Ok(()) => {
                prop_assert_eq!(&out[..1], &before()[..]);
                prop_assert!(out[1..].iter().all(|s| on(&d.ports, s)));
            }
        }
        Ok(())
    });
}

#[test]
fn interrupted_dump() {
    check(
        "netlink::interrupted_dump",
        (dump(), any::<Index>()),
        |(mut d, n)| {
            let i = d.ours(n);
            d.msgs[i] = Msg::Interrupted(Box::new(d.msgs[i].clone()));
            let (r, out) = read(&d, d.datagrams(), 8192);
            prop_assert_eq!(&r, &Err(DumpError::Interrupted));
            refused(&r, &out)
        },
    );
}

#[test]
fn kernel_error() {
    let input = (dump(), any::<Index>(), any::<i32>(), any::<bool>());
    check(
        "netlink::kernel_error",
        input,
        |(mut d, n, errno, as_error)| {
            let i = d.ours(n);
            if as_error {
                d.msgs.insert(i, Msg::Error(d.us, errno));
            } else if errno != 0 {
                let done = d.done();
                d.msgs[done] = Msg::Done(d.us, errno);
            } else {
                return Ok(()); // DONE with 0 is the normal end
            }
            let (r, out) = read(&d, d.datagrams(), 8192);
            match errno {
                0 => prop_assert!(matches!(r, Err(DumpError::Malformed(_))), "{:?}", r),
                e => prop_assert_eq!(&r, &Err(DumpError::Kernel(e))),
            }
            refused(&r, &out)
        },
    );
}

#[test]
fn truncated_datagram() {
    check(
        "netlink::truncated_datagram",
        (dump(), any::<Index>(), any::<Index>()),
        |(d, which, cut)| {
            let grams = d.datagrams();
            // A datagram read before the dump ends: up to the one with our DONE.
            let last = d.datagram_of(d.done());
            let len = grams[which.index(last + 1)].len();
            // A buffer one byte to a whole datagram short of the chosen one.
            let buf_len = cut.index(len);
            let (r, out) = read(&d, grams, buf_len.max(1));
            refused(&r, &out)
        },
    );
}

#[test]
fn stale_replies() {
    let input = expect().prop_flat_map(|us| (Just(us), vec(foreign(us), 0..12)));
    check("netlink::stale_replies", input, |(us, msgs)| {
        let d = Dump {
            us,
            ports: Vec::new(),
            msgs,
            cuts: vec![2, 5],
        };
        let (r, out) = read(&d, d.datagrams(), 8192);
        prop_assert!(matches!(r, Err(DumpError::Io(_))), "{:?}", r);
        refused(&r, &out)
    });
}
