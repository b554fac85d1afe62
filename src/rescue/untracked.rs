//! CLOSE_WAIT sockets on our ports that no live connection of the table owns, in the guard
//! process: leaked into another process (an inherited descriptor whose Apache owner is gone),
//! or never accepted (backlog: the client gave up while every worker was busy).
//!
//! Bounded cost: the holder of a socket is looked for (one walk of /proc/*/fd) only once it
//! has been untracked for its vhost's timeout, and only once per socket. A leaked socket is
//! shut down per the vhost's AutoClose (On, with SocketGuardRescue On) through a duplicate
//! taken out of the holder and verified against the kernel's report; the holder itself is
//! never signalled. Backlog is counted and reported, never closed: taking it would mean
//! stealing a connection from the listen queue.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::config::AutoClose;
use crate::kernel::diag_lookup::Tuple;
use crate::kernel::KernelSocket;
use crate::sys::socket::Refusal;
use crate::table::layout::{leak_kind, MAX_LEAKS};
use crate::table::slot::tuple_of;
use crate::table::SharedTable;

/// A process holding a socket: verified again (start time) before anything is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub fd: i32,
    pub start_time: u64,
    pub comm: String,
    /// A live child of this server's root parent (then the socket is merely untracked).
    pub is_apache_child: bool,
}

/// Finding holders and taking sockets out of them (real: /proc + pidfd_getfd).
pub trait Holders {
    fn find(&mut self, inodes: &HashSet<u64>) -> HashMap<u64, Holder>;
    fn shutdown_in(&mut self, holder: &Holder, socket: &KernelSocket) -> Result<(), Refusal>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Not looked at yet (younger than its timeout), or held by an Apache child.
    Untracked,
    Leaked(Holder),
    Backlog,
}

/// A kernel socket's identity: never-accepted sockets have no inode yet, so the 4-tuple too.
type Key = (u64, SocketAddr, SocketAddr);

fn key(k: &KernelSocket) -> Key {
    (k.inode, k.local, k.remote)
}

struct Seen {
    since: u64,
    /// When it is to be classified: `since` + its port's timeout.
    due: u64,
    class: Option<Class>,
    acted: bool,
    /// Shut down by the guard process (not merely reported).
    closed: bool,
}

/// What the guard process remembers between scans.
#[derive(Default)]
pub struct Untracked {
    seen: HashMap<Key, Seen>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Closed,
    Reported,
    Refused(String),
}

/// One action on a leaked socket, with what its log line needs.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakEvent {
    pub outcome: Outcome,
    pub client: String,
    pub vhost: String,
    pub holder_pid: u32,
    pub holder_comm: String,
    pub close_wait_ms: u64,
}

/// Recv-Q of a CLOSE_WAIT socket counts the FIN: more than 1 means request bytes waiting.
const FIN_ONLY: u64 = 1;

impl Untracked {
    /// How many untracked sockets have their first sighting remembered.
    #[cfg(test)]
    pub fn watching(&self) -> usize {
        self.seen.len()
    }

    /// Whether an untracked socket is due to be classified: the guard process then makes the
    /// next scan a full dump, so that a leaked socket is acted on at its timeout rather than
    /// up to a full-scan period later.
    pub fn due(&self, now: u64) -> bool {
        self.seen
            .values()
            .any(|s| s.class.is_none() && now >= s.due)
    }

    /// Classifies a full dump's untracked sockets, acts on leaked ones that passed their
    /// timeout, and publishes the list for the status page. Returns the backlog count.
    pub fn pass(
        &mut self,
        table: &SharedTable,
        close_wait: &[KernelSocket],
        now: u64,
        rescue_on: bool,
        holders: &mut impl Holders,
        out: &mut Vec<LeakEvent>,
    ) -> usize {
        if close_wait.is_empty() {
            // The common case: nothing to classify, no table walk.
            self.seen.clear();
            self.publish(table, &[]);
            return 0;
        }
        let tracked = tracked_tuples(table);
        let untracked: Vec<&KernelSocket> = close_wait
            .iter()
            .filter(|k| !tracked.contains(&tuple(k)))
            .collect();
        let live: HashSet<Key> = untracked.iter().map(|k| key(k)).collect();
        self.seen.retain(|k, _| live.contains(k));
        for k in &untracked {
            self.seen.entry(key(k)).or_insert(Seen {
                since: now,
                due: now.saturating_add(timeout_for(table, k.local.port())),
                class: None,
                acted: false,
                closed: false,
            });
        }
        self.classify_due(&untracked, now, holders);
        for k in &untracked {
            self.act(table, k, now, rescue_on, holders, out);
        }
        self.publish(table, &untracked);
        untracked
            .iter()
            .filter(|k| {
                matches!(
                    self.seen.get(&key(k)).and_then(|s| s.class.as_ref()),
                    Some(Class::Backlog)
                )
            })
            .count()
    }

    /// One /proc walk for every accepted socket that passed its timeout and was not looked at
    /// yet. A socket without an inode was never accepted: backlog if request bytes wait.
    fn classify_due(&mut self, untracked: &[&KernelSocket], now: u64, holders: &mut impl Holders) {
        let due: Vec<&KernelSocket> = untracked
            .iter()
            .filter(|k| {
                let s = &self.seen[&key(k)];
                s.class.is_none() && now >= s.due
            })
            .copied()
            .collect();
        let search: HashSet<u64> = due.iter().map(|k| k.inode).filter(|i| *i != 0).collect();
        let found = if search.is_empty() {
            HashMap::new()
        } else {
            holders.find(&search)
        };
        for k in due {
            let class = match found.get(&k.inode) {
                Some(h) if k.inode != 0 && h.is_apache_child => Class::Untracked,
                Some(h) if k.inode != 0 => Class::Leaked(h.clone()),
                _ if k.recv_q > FIN_ONLY => Class::Backlog,
                _ => Class::Untracked,
            };
            if let Some(s) = self.seen.get_mut(&key(k)) {
                s.class = Some(class);
            }
        }
    }

    fn act(
        &mut self,
        table: &SharedTable,
        k: &KernelSocket,
        now: u64,
        rescue_on: bool,
        holders: &mut impl Holders,
        out: &mut Vec<LeakEvent>,
    ) {
        let Some(seen) = self.seen.get_mut(&key(k)) else {
            return;
        };
        let Some(Class::Leaked(holder)) = &seen.class else {
            return;
        };
        if seen.acted {
            return;
        }
        let Some(vi) = vhost_for_port(table, k.local.port()) else {
            return;
        };
        let Some(vhost) = table.vhost(vi) else { return };
        let mode = AutoClose::from_u8(vhost.auto_close.load(Relaxed) as u8);
        if mode == AutoClose::Off {
            return;
        }
        seen.acted = true;
        let (name, port) = table.vhost_name(vi);
        let mut ev = LeakEvent {
            outcome: Outcome::Reported,
            client: k.remote.to_string(),
            vhost: format!("{name}:{port}"),
            holder_pid: holder.pid,
            holder_comm: holder.comm.clone(),
            close_wait_ms: now.saturating_sub(seen.since),
        };
        if mode == AutoClose::Report || !rescue_on {
            vhost.reported.fetch_add(1, Relaxed);
        } else {
            match holders.shutdown_in(holder, k) {
                Ok(()) => {
                    vhost.force_closed_rescue.fetch_add(1, Relaxed);
                    ev.outcome = Outcome::Closed;
                    seen.closed = true;
                }
                Err(why) => ev.outcome = Outcome::Refused(format!("{why:?}")),
            }
        }
        out.push(ev);
    }

    /// Rewrites the header's leak list (single writer: this process).
    fn publish(&self, table: &SharedTable, untracked: &[&KernelSocket]) {
        let rows = &table.header().leaks;
        let mut listed = untracked.iter().filter(|k| k.inode != 0).filter_map(|k| {
            let s = self.seen.get(&key(k))?;
            match s.class.as_ref()? {
                Class::Leaked(h) => Some((k.inode, leak_kind::LEAKED, Some(h), s)),
                Class::Backlog => Some((k.inode, leak_kind::BACKLOG, None, s)),
                Class::Untracked => None,
            }
        });
        for row in rows.iter().take(MAX_LEAKS) {
            row.inode.store(0, Release);
            // Readers must not pair the fields written next with the old inode.
            std::sync::atomic::fence(Release);
            let Some((inode, kind, holder, seen)) = listed.next() else {
                row.kind.store(leak_kind::FREE, Relaxed);
                continue;
            };
            row.kind.store(kind, Relaxed);
            row.holder_pid.store(holder.map_or(0, |h| h.pid), Relaxed);
            let comm = holder.map_or("", |h| h.comm.as_str()).as_bytes();
            let len = crate::table::shared::write_bytes(&row.holder_comm, comm);
            row.comm_len.store(len as u32, Relaxed);
            row.closed.store(u32::from(seen.closed), Relaxed);
            row.since_mono_ms.store(seen.since, Relaxed);
            row.inode.store(inode, Release);
        }
    }
}

/// The tuples of the connections the table holds (the join key: the table records no inode
/// until the scan confirms one).
fn tracked_tuples(table: &SharedTable) -> HashSet<Tuple> {
    table
        .slots()
        .iter()
        .filter(|s| s.lease().state.is_open())
        .map(tuple_of)
        .collect()
}

fn tuple(k: &KernelSocket) -> Tuple {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    (canonical(k.local), canonical(k.remote))
}

/// The first server registered on `port` (a socket that no connection owns has no request,
/// so name-based vhosts cannot be told apart: the port's first server decides).
fn vhost_for_port(table: &SharedTable, port: u16) -> Option<u32> {
    let count = table.header().vhost_count.load(Acquire);
    (0..count).find(|&i| {
        table
            .vhost(i)
            .is_some_and(|r| r.port.load(Relaxed) == port as u32)
    })
}

fn timeout_for(table: &SharedTable, port: u16) -> u64 {
    vhost_for_port(table, port)
        .and_then(|i| table.vhost(i))
        .map_or(crate::config::DEFAULT_CLOSE_WAIT_TIMEOUT_MS, |r| {
            r.close_wait_timeout_ms.load(Relaxed)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HeapTable;

    #[derive(Default)]
    struct FakeHolders {
        held: HashMap<u64, Holder>,
        finds: usize,
        closed: Vec<u64>,
    }
    impl Holders for FakeHolders {
        fn find(&mut self, inodes: &HashSet<u64>) -> HashMap<u64, Holder> {
            self.finds += 1;
            self.held
                .iter()
                .filter(|(i, _)| inodes.contains(i))
                .map(|(i, h)| (*i, h.clone()))
                .collect()
        }
        fn shutdown_in(&mut self, _h: &Holder, k: &KernelSocket) -> Result<(), Refusal> {
            self.closed.push(k.inode);
            Ok(())
        }
    }

    fn sock(inode: u64, recv_q: u64) -> KernelSocket {
        KernelSocket {
            local: "127.0.0.1:80".parse().unwrap(),
            remote: "127.0.0.1:5000".parse().unwrap(),
            state: crate::kernel::TCP_CLOSE_WAIT,
            recv_q,
            inode,
            cookie: 0,
            uid: 0,
        }
    }

    fn holder(pid: u32, apache: bool) -> Holder {
        Holder {
            pid,
            fd: 5,
            start_time: 1,
            comm: "sleep".into(),
            is_apache_child: apache,
        }
    }

    fn table(mode: AutoClose) -> HeapTable {
        let heap = HeapTable::for_tests();
        heap.vhost_with("on.test", mode, 1_000);
        heap
    }

    #[test]
    fn leaked_sockets_are_closed_after_the_timeout_backlog_never() {
        let heap = table(AutoClose::On);
        let t = heap.table();
        let mut h = FakeHolders::default();
        h.held.insert(10, holder(77, false));
        h.held.insert(11, holder(78, true)); // an Apache child's: merely untracked
        let mut never_accepted = sock(0, 40);
        never_accepted.remote = "127.0.0.1:5001".parse().unwrap();
        let list = [
            sock(10, 1),
            sock(11, 1),
            sock(12, 40),
            sock(13, 1),
            never_accepted,
        ];
        let mut u = Untracked::default();
        let mut out = Vec::new();
        assert_eq!(u.pass(&t, &list, 5_000, true, &mut h, &mut out), 0);
        assert_eq!(h.finds, 0, "nothing looked for before the timeout");
        let backlog = u.pass(&t, &list, 6_000, true, &mut h, &mut out);
        assert_eq!(
            backlog, 2,
            "one with no holder found, one never accepted (no inode)"
        );
        assert_eq!(h.closed, vec![10], "only the leaked one");
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].holder_pid, out[0].outcome.clone()),
            (77, Outcome::Closed)
        );
        assert_eq!(t.totals().force_closed_rescue, 1);
        // Published for the status page: the leaked one with its holder, the backlog one.
        let rows: Vec<(u64, u32, u32)> = t
            .header()
            .leaks
            .iter()
            .filter(|r| r.inode.load(Relaxed) != 0)
            .map(|r| {
                (
                    r.inode.load(Relaxed),
                    r.kind.load(Relaxed),
                    r.holder_pid.load(Relaxed),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![(10, leak_kind::LEAKED, 77), (12, leak_kind::BACKLOG, 0)]
        );
        // Looked for once, acted on once; shown as closed while the kernel still lists it.
        u.pass(&t, &list, 7_000, true, &mut h, &mut out);
        assert_eq!((h.finds, h.closed.len(), out.len()), (1, 1, 1));
        assert_eq!(t.header().leaks[0].closed.load(Relaxed), 1);
        // Gone from the kernel's list: forgotten and unpublished.
        u.pass(&t, &[], 8_000, true, &mut h, &mut out);
        assert!(t.header().leaks.iter().all(|r| r.inode.load(Relaxed) == 0));
    }

    #[test]
    fn off_shows_report_and_rescue_off_only_report() {
        for (mode, rescue, closed, reported) in [
            (AutoClose::Off, true, 0, 0),
            (AutoClose::Report, true, 0, 1),
            (AutoClose::On, false, 0, 1),
        ] {
            let heap = table(mode);
            let t = heap.table();
            let mut h = FakeHolders::default();
            h.held.insert(10, holder(77, false));
            let mut u = Untracked::default();
            let mut out = Vec::new();
            u.pass(&t, &[sock(10, 1)], 0, rescue, &mut h, &mut out);
            u.pass(&t, &[sock(10, 1)], 2_000, rescue, &mut h, &mut out);
            u.pass(&t, &[sock(10, 1)], 3_000, rescue, &mut h, &mut out);
            assert_eq!(h.closed.len(), closed, "{mode:?}");
            assert_eq!(t.totals().reported, reported, "{mode:?}");
            assert_eq!(
                t.header().leaks[0].inode.load(Relaxed),
                10,
                "{mode:?}: shown"
            );
            assert_eq!(
                t.header().leaks[0].closed.load(Relaxed),
                0,
                "{mode:?}: not shown as closed"
            );
        }
    }

    #[test]
    fn tracked_sockets_are_not_untracked() {
        let heap = table(AutoClose::On);
        let t = heap.table();
        heap.stuck_connection(5, 0, 10, 1);
        let mut h = FakeHolders::default();
        h.held.insert(10, holder(77, false));
        let mut u = Untracked::default();
        let mut out = Vec::new();
        // Joined by tuple: the table holds no inode until the scan confirms one.
        t.slots()[0].inode.store(0, Relaxed);
        let k = HeapTable::stuck_socket(10);
        u.pass(&t, std::slice::from_ref(&k), 0, true, &mut h, &mut out);
        u.pass(&t, std::slice::from_ref(&k), 9_000, true, &mut h, &mut out);
        assert_eq!((h.finds, u.watching()), (0, 0));
        assert!(out.is_empty());
    }

    #[test]
    fn a_socket_is_due_for_classification_at_its_ports_timeout() {
        let heap = table(AutoClose::On);
        let t = heap.table();
        let mut u = Untracked::default();
        let mut out = Vec::new();
        let mut h = FakeHolders::default();
        let mut seen_at = |u: &mut Untracked, now| {
            u.pass(&t, &[sock(10, 1)], now, true, &mut h, &mut out);
        };
        assert!(!u.due(0));
        seen_at(&mut u, 5_000);
        assert!(!u.due(5_999) && u.due(6_000), "the vhost's timeout is 1 s");
        seen_at(&mut u, 6_000);
        assert!(!u.due(60_000), "classified: not due again");
    }
}
