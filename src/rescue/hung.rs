//! Rescue of hung children's sockets, in the guard process.
//!
//! A child is hung when its guard thread has not checked in for SocketGuardHungChildTimeout
//! (SIGSTOP, D-state, a deadlock): it cannot close its own CLOSE_WAIT sockets any more. The
//! guard process takes a duplicate of each such socket out of it (pidfd_getfd) and shuts it
//! down, per the vhost's AutoClose — but the table is written by children that run as `User`
//! and is hostile input here: a socket is acted on only if the kernel's own scan reports a
//! CLOSE_WAIT socket with the slot's tuple on this server's ports, the owner is verified to be
//! a live child of this server's root parent, and the duplicate taken out of it is that very
//! socket (inode, local and peer address) and still in CLOSE_WAIT.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::config::AutoClose;
use crate::guard::scan::Confirmed;
use crate::kernel::KernelSocket;
use crate::sys::socket::Refusal;
use crate::table::layout::Slot;
use crate::table::slot::{FLAG_ABANDONED, FLAG_FORCE_CLOSED, FLAG_REPORTED, FLAG_RESCUED};
use crate::table::SharedTable;

/// A child as the table names it; verified before anything is done to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildId {
    pub pid: u32,
    pub start_time: u64,
}

/// How the guard process reaches into children (real: pidfd + pidfd_getfd).
pub trait Reach {
    /// Whether `child` is alive and a child of this server's root parent.
    fn is_our_child(&mut self, child: ChildId) -> bool;
    /// Takes descriptor `fd` out of `child` and shuts it down if it is the kernel's `socket`.
    fn shutdown_in(
        &mut self,
        child: ChildId,
        fd: i32,
        socket: &KernelSocket,
    ) -> Result<(), Refusal>;
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Rescued,
    Reported,
    Refused(String),
}

/// One rescued (or reported) connection, with what its log line needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Rescue {
    pub outcome: Outcome,
    pub pid: u32,
    pub client: String,
    pub vhost: String,
    pub method: String,
    pub path: String,
    pub close_wait_ms: u64,
    pub hung_ms: u64,
}

/// Children whose guard has not checked in for the hung timeout (verified to be ours).
pub fn hung_children(table: &SharedTable, now: u64, reach: &mut impl Reach) -> Vec<(ChildId, u64)> {
    let after = table.header().hung_child_timeout_ms.load(Relaxed);
    let mut hung = Vec::new();
    for row in table.children() {
        let pid = row.pid.load(Acquire);
        let last = row.last_checkin_mono_ms.load(Acquire);
        if pid == 0 || after == 0 || now.saturating_sub(last) < after {
            continue;
        }
        let id = ChildId {
            pid,
            start_time: row.start_time.load(Relaxed),
        };
        if reach.is_our_child(id) {
            hung.push((id, now.saturating_sub(last)));
        }
    }
    hung
}

/// Rescues the CLOSE_WAIT sockets of hung children that passed their vhost's timeout.
/// `confirmed`: this interval's scan — the connections the kernel confirmed in CLOSE_WAIT,
/// each with the kernel's socket for its tuple.
pub fn rescue_hung(
    table: &SharedTable,
    confirmed: &[Confirmed],
    now: u64,
    rescue_on: bool,
    reach: &mut impl Reach,
    out: &mut Vec<Rescue>,
) {
    if confirmed.is_empty() {
        return;
    }
    let hung = hung_children(table, now, reach);
    for c in confirmed {
        let Some(slot) = table.slots().get(c.index) else {
            continue;
        };
        let pid = slot.lease().pid;
        let Some(&(child, hung_ms)) = hung.iter().find(|(id, _)| id.pid == pid) else {
            continue;
        };
        let seen = Seen {
            index: c.index,
            tag: c.tag,
            socket: &c.socket,
        };
        if let Some(r) = rescue_one(table, slot, seen, child, hung_ms, now, rescue_on, reach) {
            out.push(r);
        }
    }
}

/// A connection as the scan confirmed it: its slot, its claim, the kernel's socket.
struct Seen<'a> {
    index: usize,
    tag: u32,
    socket: &'a KernelSocket,
}

#[allow(clippy::too_many_arguments)]
fn rescue_one(
    table: &SharedTable,
    slot: &Slot,
    seen: Seen,
    child: ChildId,
    hung_ms: u64,
    now: u64,
    rescue_on: bool,
    reach: &mut impl Reach,
) -> Option<Rescue> {
    let lease = slot.lease();
    let since = slot.close_wait_since(lease.tag)?;
    let flags = slot.flags.load(Relaxed);
    if lease.tag != seen.tag
        || lease.pid != child.pid
        || !lease.state.is_held()
        || flags & FLAG_FORCE_CLOSED != 0
    {
        return None;
    }
    let vhost = table.vhost(slot.vhost.load(Relaxed))?;
    let mode = AutoClose::from_u8(vhost.auto_close.load(Relaxed) as u8);
    if mode == AutoClose::Off
        || now < since.saturating_add(vhost.close_wait_timeout_ms.load(Relaxed))
    {
        return None;
    }
    let closes = mode == AutoClose::On && rescue_on;
    if !closes && flags & FLAG_REPORTED != 0 {
        return None; // reported once already
    }
    // What is acted on is the kernel's socket for the slot's tuple, never the table's word.
    let socket = seen.socket;
    let view = slot.view(seen.index);
    let (name, port) = table.vhost_name(view.vhost);
    let mut r = Rescue {
        outcome: Outcome::Reported,
        pid: child.pid,
        client: socket.remote.to_string(),
        vhost: format!("{name}:{port}"),
        method: view.method,
        path: view.path,
        close_wait_ms: now.saturating_sub(since),
        hung_ms,
    };
    if !closes {
        slot.flags.fetch_or(FLAG_REPORTED, Relaxed);
        vhost.reported.fetch_add(1, Relaxed);
        return Some(r);
    }
    match reach.shutdown_in(child, view.fd, socket) {
        Ok(()) => {
            slot.flags
                .fetch_or(FLAG_FORCE_CLOSED | FLAG_RESCUED | FLAG_ABANDONED, Relaxed);
            slot.abandoned_since_mono_ms.store(now, Relaxed);
            table.end_close_wait(slot, lease.tag);
            vhost.force_closed_rescue.fetch_add(1, Relaxed);
            r.outcome = Outcome::Rescued;
        }
        Err(why) => {
            // Not this socket, or not any more: leave the slot; the next scan decides again.
            r.outcome = Outcome::Refused(format!("{why:?}"));
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HeapTable;

    #[derive(Default)]
    struct FakeReach {
        ours: bool,
        calls: Vec<(u32, i32, u64)>,
    }
    impl Reach for FakeReach {
        fn is_our_child(&mut self, _c: ChildId) -> bool {
            self.ours
        }
        fn shutdown_in(&mut self, c: ChildId, fd: i32, k: &KernelSocket) -> Result<(), Refusal> {
            self.calls.push((c.pid, fd, k.inode));
            Ok(())
        }
    }

    /// The scan's confirmed list when the kernel reports the CLOSE_WAIT sockets `inodes`
    /// (`stuck_socket` tuples): each joined to the open slot with its tuple.
    fn kernel(t: &SharedTable, inodes: &[u64]) -> Vec<Confirmed> {
        let joined = |socket: KernelSocket| {
            let tuple = (socket.local, socket.remote);
            let (index, slot) = t.slots().iter().enumerate().find(|(_, s)| {
                s.lease().state.is_open() && crate::table::slot::tuple_of(s) == tuple
            })?;
            let tag = slot.lease().tag;
            Some(Confirmed { index, tag, socket })
        };
        inodes
            .iter()
            .filter_map(|&i| joined(HeapTable::stuck_socket(i)))
            .collect()
    }

    fn setup(mode: AutoClose) -> (HeapTable, crate::table::SlotHandle) {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        t.header().hung_child_timeout_ms.store(2_000, Relaxed);
        let v = heap.vhost_with("on.test", mode, 1_000);
        t.claim_child(5, 0, 77, 10_000).unwrap();
        let h = heap.stuck_connection(5, v, 99, 10_500);
        (heap, h)
    }

    #[test]
    fn a_hung_childs_socket_is_rescued_once_the_kernel_confirms_it() {
        let (heap, h) = setup(AutoClose::On);
        let t = heap.table();
        let mut reach = FakeReach {
            ours: true,
            ..Default::default()
        };
        let mut out = Vec::new();
        // Not hung yet (checked in 1.9 s ago).
        rescue_hung(&t, &kernel(&t, &[99]), 11_900, true, &mut reach, &mut out);
        assert!(out.is_empty());
        // Hung, but the kernel does not report that inode: nothing.
        rescue_hung(&t, &kernel(&t, &[98]), 12_000, true, &mut reach, &mut out);
        assert!(out.is_empty() && reach.calls.is_empty());
        rescue_hung(&t, &kernel(&t, &[99]), 12_000, true, &mut reach, &mut out);
        assert_eq!(reach.calls, vec![(5, 7, 99)]);
        assert_eq!(out[0].outcome, Outcome::Rescued);
        assert_eq!(t.totals().force_closed_rescue, 1);
        let flags = t.owned(h).unwrap().flags.load(Relaxed);
        assert_ne!(flags & FLAG_RESCUED, 0);
        // Never twice.
        rescue_hung(&t, &kernel(&t, &[99]), 13_000, true, &mut reach, &mut out);
        assert_eq!(reach.calls.len(), 1);
    }

    #[test]
    fn not_our_child_rescue_off_and_report_do_not_close() {
        let (heap, _) = setup(AutoClose::On);
        let t = heap.table();
        let mut reach = FakeReach::default(); // not a child of our root
        let mut out = Vec::new();
        rescue_hung(&t, &kernel(&t, &[99]), 20_000, true, &mut reach, &mut out);
        assert!(out.is_empty());
        reach.ours = true;
        rescue_hung(&t, &kernel(&t, &[99]), 20_000, false, &mut reach, &mut out);
        rescue_hung(&t, &kernel(&t, &[99]), 21_000, false, &mut reach, &mut out);
        assert_eq!(out.len(), 1, "Rescue Off reports once");
        assert_eq!(out[0].outcome, Outcome::Reported, "Rescue Off only reports");
        assert!(reach.calls.is_empty());
        let (heap2, _) = setup(AutoClose::Report);
        let t2 = heap2.table();
        let mut out2 = Vec::new();
        rescue_hung(
            &t2,
            &kernel(&t2, &[99]),
            20_000,
            true,
            &mut reach,
            &mut out2,
        );
        rescue_hung(
            &t2,
            &kernel(&t2, &[99]),
            21_000,
            true,
            &mut reach,
            &mut out2,
        );
        assert_eq!(out2.len(), 1, "reported once");
        assert!(reach.calls.is_empty());
    }
}
