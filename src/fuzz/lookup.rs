//! sock_diag lookup replies (`kernel::diag_lookup`): each request's answer is the socket with
//! exactly the tuple it asked for, or gone, and a batch is used whole or not at all.
//!
//! A generated batch is a list of tuples (as the shared table, written by unprivileged
//! children, names them) and the kernel's reply to each: the socket, the port's listener (what
//! the kernel answers for a connection that is gone), or ENOENT; sent in any order, cut into
//! datagrams anywhere between messages, with messages of other requests (another port id, a
//! sequence number outside the batch) mixed in.

use std::net::SocketAddr;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::netlink::{expect, ip, port, raw_messages};
use super::{canonical, check, mutate};
use crate::kernel::diag_fixtures::{self, error, nlmsg};
use crate::kernel::diag_lookup::{complete, Batch, Lookup, Tuple};
use crate::kernel::diag_msg::{DumpError, Expect, SOCK_DIAG_BY_FAMILY};
use crate::kernel::KernelSocket;

/// The kernel's reply to one request.
#[derive(Clone, Debug)]
enum Reply {
    /// The socket with the tuple asked for.
    Socket { state: u8, inode: u32 },
    /// The port's listening socket (the kernel's lookup falls back to it).
    Listener { inode: u32 },
    /// NLMSG_ERROR ENOENT.
    NoEntry,
}

#[derive(Clone, Debug)]
struct Case {
    port_id: u32,
    first: u32,
    tuples: Vec<Tuple>,
    replies: Vec<Reply>,
    /// The order the replies are sent in (a permutation of the requests).
    order: Vec<usize>,
    /// Messages of other requests, inserted before the reply at their index.
    strangers: Vec<(Index, Vec<u8>)>,
    /// Reply positions where a new datagram starts.
    cuts: Vec<usize>,
}

fn socket(tuple: Tuple, state: u8, inode: u32) -> KernelSocket {
    KernelSocket {
        state,
        inode: inode as u64,
        ..diag_fixtures::socket(tuple.0, tuple.1, 0)
    }
}

impl Case {
    fn to(&self, i: usize) -> Expect {
        Expect {
            seq: self.first.wrapping_add(i as u32),
            port_id: self.port_id,
        }
    }

    /// The socket a reply names, if it names one.
    fn named(&self, i: usize) -> Option<KernelSocket> {
        let t = self.tuples[i];
        match self.replies[i] {
            Reply::Socket { state, inode } => Some(socket(t, state, inode)),
            Reply::Listener { inode } => {
                let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
                Some(socket((t.0, any), 10, inode))
            }
            Reply::NoEntry => None,
        }
    }

    fn encode(&self, i: usize) -> Vec<u8> {
        match self.named(i) {
            Some(s) => nlmsg(
                SOCK_DIAG_BY_FAMILY,
                0,
                self.to(i),
                &diag_fixtures::diag_msg(&s),
            ),
            None => error(self.to(i), libc::ENOENT),
        }
    }

    fn datagrams(&self) -> Vec<Vec<u8>> {
        let mut msgs: Vec<Vec<u8>> = self.order.iter().map(|&i| self.encode(i)).collect();
        for (at, m) in &self.strangers {
            msgs.insert(at.index(msgs.len() + 1), m.clone());
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        for (k, m) in msgs.into_iter().enumerate() {
            if k == 0 || self.cuts.contains(&k) {
                out.push(Vec::new());
            }
            out.last_mut().unwrap().extend(m);
        }
        out
    }

    /// What the batch must answer: found exactly when the reply names the tuple asked for.
    fn expected(&self) -> Vec<Lookup> {
        (0..self.tuples.len())
            .map(|i| match self.named(i) {
                Some(s) if (canonical(s.local), canonical(s.remote)) == self.tuples[i] => {
                    Lookup::Found(KernelSocket {
                        local: canonical(s.local),
                        remote: canonical(s.remote),
                        ..s
                    })
                }
                _ => Lookup::Gone,
            })
            .collect()
    }

    fn batch(&self) -> Batch<'_> {
        Batch {
            port_id: self.port_id,
            first: self.first,
            tuples: &self.tuples,
        }
    }

    /// Reads `datagrams` as this batch: its answers, or the first error.
    fn read(&self, datagrams: &[Vec<u8>]) -> Result<Vec<Lookup>, DumpError> {
        let mut answers = vec![None; self.tuples.len()];
        for d in datagrams {
            self.batch().take(d, &mut answers)?;
        }
        complete(answers)
    }
}

/// A tuple as the table names it (canonical: an IPv4 client of an IPv6 socket as IPv4).
fn tuple() -> impl Strategy<Value = Tuple> {
    (ip(), port(), ip(), any::<u16>()).prop_map(|(l, lp, r, rp)| {
        (
            canonical(SocketAddr::new(l, lp)),
            canonical(SocketAddr::new(r, rp)),
        )
    })
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u8>(), any::<u32>()).prop_map(|(state, inode)| Reply::Socket { state, inode }),
        any::<u32>().prop_map(|inode| Reply::Listener { inode }),
        Just(Reply::NoEntry),
    ]
}

/// A message of another request: another port id, or a sequence number outside the batch.
fn stranger(port_id: u32, first: u32, n: usize) -> impl Strategy<Value = Vec<u8>> {
    let to = (any::<bool>(), n as u32..u32::MAX - 1).prop_map(move |(other_port, d)| Expect {
        seq: first.wrapping_add(if other_port { 0 } else { d }),
        port_id: if other_port {
            port_id.wrapping_add(1)
        } else {
            port_id
        },
    });
    (to, tuple(), any::<i32>()).prop_map(|(to, t, errno)| {
        let mut m = error(to, errno);
        m.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            0,
            to,
            &diag_fixtures::diag_msg(&socket(t, 8, 1)),
        ));
        m
    })
}

fn case() -> impl Strategy<Value = Case> {
    (any::<u32>(), any::<u32>(), vec((tuple(), reply()), 1..20)).prop_flat_map(
        |(port_id, first, items)| {
            let n = items.len();
            let (tuples, replies): (Vec<Tuple>, Vec<Reply>) = items.into_iter().unzip();
            let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
            let strangers = vec((any::<Index>(), stranger(port_id, first, n)), 0..3);
            let cuts = vec(0..n + 3, 0..6);
            (order, strangers, cuts).prop_map(move |(order, strangers, cuts)| Case {
                port_id,
                first,
                tuples: tuples.clone(),
                replies: replies.clone(),
                order,
                strangers,
                cuts,
            })
        },
    )
}

/// Every answer found names exactly the tuple its request asked for.
fn only_asked_tuples(c: &Case, answers: &[Lookup]) -> Result<(), TestCaseError> {
    for (t, a) in c.tuples.iter().zip(answers) {
        if let Lookup::Found(s) = a {
            prop_assert_eq!((s.local, s.remote), *t, "a socket for another tuple");
        }
    }
    Ok(())
}

#[test]
fn any_bytes() {
    let bytes = prop_oneof![vec(any::<u8>(), 0..400), raw_messages()];
    let input = (bytes, expect(), vec(tuple(), 0..4));
    check("lookup::any_bytes", input, |(b, to, tuples)| {
        let batch = Batch {
            port_id: to.port_id,
            first: to.seq,
            tuples: &tuples,
        };
        let mut answers = vec![None; tuples.len()];
        if batch.take(&b, &mut answers).is_ok() {
            for (t, a) in tuples.iter().zip(&answers) {
                if let Some(Lookup::Found(s)) = a {
                    prop_assert_eq!((s.local, s.remote), *t);
                }
            }
        }
        Ok(())
    });
}

#[test]
fn replies_round_trip() {
    check("lookup::replies_round_trip", case(), |c| {
        prop_assert_eq!(c.read(&c.datagrams()), Ok(c.expected()));
        Ok(())
    });
}

#[test]
fn mutated_replies() {
    let input = (case(), any::<Index>(), mutate::byte_edits(4));
    check("lookup::mutated_replies", input, |(c, which, edits)| {
        let mut grams = c.datagrams();
        mutate::one_datagram(&mut grams, which, &edits);
        if let Ok(answers) = c.read(&grams) {
            prop_assert_eq!(answers.len(), c.tuples.len());
            only_asked_tuples(&c, &answers)?;
        }
        Ok(())
    });
}

#[test]
fn kernel_error() {
    let input = (case(), any::<Index>(), any::<i32>());
    check("lookup::kernel_error", input, |(c, which, errno)| {
        if errno == libc::ENOENT {
            return Ok(()); // the answer "gone"
        }
        let i = which.index(c.tuples.len());
        // The request's reply is an error instead (sent ahead of the rest).
        let mut refused = c.clone();
        refused.order.retain(|&k| k != i);
        let mut grams = refused.datagrams();
        grams.insert(0, error(c.to(i), errno));
        let r = c.read(&grams);
        prop_assert!(r.is_err(), "{:?} accepted for request {}", errno, i);
        Ok(())
    });
}

#[test]
fn missing_or_doubled_reply() {
    let input = (case(), any::<Index>(), any::<bool>());
    check(
        "lookup::missing_or_doubled_reply",
        input,
        |(c, which, double)| {
            let i = c.order[which.index(c.order.len())];
            let mut changed = c.clone();
            if double {
                changed.order.push(i);
            } else {
                changed.order.retain(|&k| k != i);
            }
            let r = changed.read(&changed.datagrams());
            prop_assert!(r.is_err(), "request {} answered {}: {:?}", i, double, r);
            Ok(())
        },
    );
}
