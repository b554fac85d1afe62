//! The owner's pass: a child acts on its own connections that have sat in CLOSE_WAIT past
//! their vhost's timeout. Only the owning child can act — children are non-dumpable and run as
//! the `User`, so one child cannot reach another's descriptors.
//!
//! "Sat in CLOSE_WAIT" means with no data moving: a client may half-close after its request
//! and keep reading the response, and its socket is in CLOSE_WAIT the whole time. The guard
//! samples the peer's acknowledged bytes (TCP_INFO) when the scan first reports the socket and
//! again at the deadline; if they moved, the period starts again. Once the timeout passes with
//! nothing moving, the client counts as gone (FLAG_ABANDONED, as nginx's 499 and HAProxy's
//! abortonclose treat it), whatever the vhost's AutoClose mode.

use std::sync::atomic::Ordering::Relaxed;

use crate::config::AutoClose;
use crate::kernel::TCP_CLOSE_WAIT;
use crate::sys::socket::{Refusal, TcpInfo};
use crate::table::layout::{Slot, VhostRow};
use crate::table::slot::{FLAG_ABANDONED, FLAG_FORCE_CLOSED, FLAG_REPORTED, FLAG_SAMPLED};
use crate::table::SharedTable;

/// The socket operations the pass needs, each on a verified duplicate (see sys::socket).
pub trait Closer {
    /// TCP_INFO of the recorded socket, if the descriptor still names it.
    fn tcp_info(&mut self, fd: i32, inode: u64) -> Result<TcpInfo, Refusal>;
    /// Shuts it down if it is still the recorded socket, in CLOSE_WAIT, with `acked` bytes
    /// acknowledged by the peer.
    fn shutdown_if_same(&mut self, fd: i32, inode: u64, acked: u64) -> Result<(), Refusal>;
}

/// The real thing: dup + inode check + TCP_INFO check + shutdown(SHUT_RDWR).
pub struct SocketCloser;

impl Closer for SocketCloser {
    fn tcp_info(&mut self, fd: i32, inode: u64) -> Result<TcpInfo, Refusal> {
        crate::sys::socket::tcp_info_if_same(fd, inode)
    }
    fn shutdown_if_same(&mut self, fd: i32, inode: u64, acked: u64) -> Result<(), Refusal> {
        crate::sys::socket::shutdown_if_same(fd, inode, TCP_CLOSE_WAIT, acked)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    ForceClosed,
    Reported,
    Skipped(String),
}

/// What happened to one connection, with what the log line needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub outcome: Outcome,
    pub client: String,
    pub vhost: String,
    pub pid: u32,
    pub method: String,
    pub path: String,
    pub close_wait_ms: u64,
}

/// Acts on `pid`'s connections whose CLOSE_WAIT period reached their vhost's timeout.
/// Returns the earliest future deadline among those still waiting (to sleep until it).
pub fn act_on_own(
    table: &SharedTable,
    pid: u32,
    now_mono_ms: u64,
    closer: &mut impl Closer,
    events: &mut Vec<Event>,
) -> Option<u64> {
    let mut next: Option<u64> = None;
    for (i, slot) in table.slots().iter().enumerate() {
        if slot.lease().pid != pid {
            continue;
        }
        if let Some(due) = act_on_slot(table, i, slot, pid, now_mono_ms, closer, events) {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    next
}

/// One connection of this child; returns its next deadline if it is still waiting.
fn act_on_slot(
    table: &SharedTable,
    index: usize,
    slot: &Slot,
    pid: u32,
    now: u64,
    closer: &mut impl Closer,
    events: &mut Vec<Event>,
) -> Option<u64> {
    // Another thread of this child may end the connection and claim the slot for a new one
    // while we look: everything below must describe one claim (checked after `view`).
    let lease = slot.lease();
    let tag = lease.tag;
    let since = slot.close_wait_since(tag)?;
    let flags = slot.flags.load(Relaxed);
    if lease.pid != pid || !lease.state.is_held() || flags & FLAG_ABANDONED != 0 {
        return None;
    }
    let vhost = table.vhost(slot.vhost.load(Relaxed))?;
    let timeout = vhost.close_wait_timeout_ms.load(Relaxed);
    if flags & FLAG_SAMPLED == 0 {
        // First look since the scan reported it: remember how far the peer had read.
        if let Ok(info) = closer.tcp_info(slot.fd.load(Relaxed), slot.inode.load(Relaxed)) {
            slot.acked_bytes.store(info.bytes_acked, Relaxed);
        }
        slot.flags.fetch_or(FLAG_SAMPLED, Relaxed);
    }
    let due = since.saturating_add(timeout);
    if now < due {
        return Some(due);
    }
    let view = slot.view(index);
    if view.tag != tag || view.close_wait_since_mono_ms != since {
        return None;
    }
    let acked = slot.acked_bytes.load(Relaxed);
    let mode = AutoClose::from_u8(vhost.auto_close.load(Relaxed) as u8);
    let outcome = match check(closer, mode, view.fd, view.inode, acked) {
        Err(Refusal::Progressing(now_acked)) => {
            // A half-closed client still reading: healthy. Start the period again.
            slot.acked_bytes.store(now_acked, Relaxed);
            let restarted = slot.restart_close_wait(tag, since, now);
            return restarted.then(|| now.saturating_add(timeout));
        }
        Err(why) => {
            // Whatever it was, the recorded socket is not ours to act on any more; end its
            // period so a later scan starts afresh if it shows up again.
            table.end_close_wait(slot, tag);
            Outcome::Skipped(refusal_text(&why, view.fd))
        }
        Ok(()) => client_gone(table, slot, tag, vhost, mode, now)?,
    };
    let (vname, vport) = table.vhost_name(view.vhost);
    events.push(Event {
        outcome,
        client: view.client.to_string(),
        vhost: format!("{vname}:{vport}"),
        pid,
        method: view.method,
        path: view.path,
        close_wait_ms: now.saturating_sub(since),
    });
    None
}

/// Confirms the recorded socket is still in CLOSE_WAIT with no data moving; under
/// `AutoClose On` it is shut down in the same step.
fn check(
    closer: &mut impl Closer,
    mode: AutoClose,
    fd: i32,
    inode: u64,
    acked: u64,
) -> Result<(), Refusal> {
    match mode {
        AutoClose::On => closer.shutdown_if_same(fd, inode, acked),
        AutoClose::Off | AutoClose::Report => match closer.tcp_info(fd, inode) {
            Ok(i) if i.state != TCP_CLOSE_WAIT => Err(Refusal::NotCloseWait(i.state)),
            Ok(i) if i.bytes_acked != acked => Err(Refusal::Progressing(i.bytes_acked)),
            Ok(_) => Ok(()),
            Err(r) => Err(r),
        },
    }
}

/// The client is gone: mark the connection abandoned and count what the vhost's mode did.
/// None under `AutoClose Off`, which logs nothing.
fn client_gone(
    table: &SharedTable,
    slot: &Slot,
    tag: u32,
    vhost: &VhostRow,
    mode: AutoClose,
    now: u64,
) -> Option<Outcome> {
    slot.abandoned_since_mono_ms.store(now, Relaxed);
    slot.flags.fetch_or(FLAG_ABANDONED, Relaxed);
    match mode {
        AutoClose::Off => None,
        AutoClose::Report => {
            slot.flags.fetch_or(FLAG_REPORTED, Relaxed);
            vhost.reported.fetch_add(1, Relaxed);
            Some(Outcome::Reported)
        }
        AutoClose::On => {
            slot.flags.fetch_or(FLAG_FORCE_CLOSED, Relaxed);
            table.end_close_wait(slot, tag);
            vhost.force_closed_guard.fetch_add(1, Relaxed);
            Some(Outcome::ForceClosed)
        }
    }
}

fn refusal_text(why: &Refusal, fd: i32) -> String {
    match why {
        Refusal::Gone => format!("descriptor {fd} is closed"),
        Refusal::Reused => format!("descriptor {fd} now names another socket"),
        Refusal::NotCloseWait(s) => format!("socket left CLOSE_WAIT (TCP state {s})"),
        Refusal::Progressing(_) => "the client is still reading".into(),
        Refusal::Io(e) => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HeapTable;

    #[derive(Default)]
    struct FakeCloser {
        calls: Vec<(i32, u64)>,
        answer: Option<Refusal>,
        /// What TCP_INFO reports as the peer's acknowledged bytes.
        acked: u64,
    }
    impl Closer for FakeCloser {
        fn tcp_info(&mut self, _fd: i32, _inode: u64) -> Result<TcpInfo, Refusal> {
            Ok(TcpInfo {
                state: TCP_CLOSE_WAIT,
                bytes_acked: self.acked,
            })
        }
        fn shutdown_if_same(&mut self, fd: i32, inode: u64, acked: u64) -> Result<(), Refusal> {
            self.calls.push((fd, inode));
            if acked != self.acked {
                return Err(Refusal::Progressing(self.acked));
            }
            self.answer.take().map_or(Ok(()), Err)
        }
    }

    #[test]
    fn on_closes_once_after_the_timeout_and_counts() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("on.test", AutoClose::On, 1_000);
        let h = heap.stuck_connection(5, v, 99, 10_000);
        let mut closer = FakeCloser::default();
        let mut ev = Vec::new();
        assert_eq!(
            act_on_own(&t, 5, 10_999, &mut closer, &mut ev),
            Some(11_000),
            "not yet due"
        );
        assert!(closer.calls.is_empty() && ev.is_empty());
        assert_eq!(act_on_own(&t, 5, 11_000, &mut closer, &mut ev), None);
        assert_eq!(closer.calls, vec![(7, 99)]);
        assert_eq!(ev[0].outcome, Outcome::ForceClosed);
        assert_eq!(
            (
                ev[0].path.as_str(),
                ev[0].vhost.as_str(),
                ev[0].close_wait_ms
            ),
            ("/slow", "on.test:80", 1_000)
        );
        assert_eq!(t.totals().force_closed_guard, 1);
        assert_eq!(t.vhost(v).unwrap().force_closed_guard.load(Relaxed), 1);
        assert_ne!(
            t.owned(h).unwrap().flags.load(Relaxed) & FLAG_FORCE_CLOSED,
            0
        );
        assert_eq!(t.owned(h).unwrap().close_wait_since(h.tag), None);
        assert_eq!(
            t.header()
                .histogram
                .iter()
                .map(|b| b.load(Relaxed))
                .sum::<u64>(),
            1
        );
        // Never twice.
        act_on_own(&t, 5, 20_000, &mut closer, &mut ev);
        assert_eq!(closer.calls.len(), 1);
    }

    #[test]
    fn report_logs_once_and_closes_nothing() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("rep.test", AutoClose::Report, 100);
        heap.stuck_connection(5, v, 99, 1_000);
        let mut closer = FakeCloser::default();
        let mut ev = Vec::new();
        act_on_own(&t, 5, 5_000, &mut closer, &mut ev);
        act_on_own(&t, 5, 6_000, &mut closer, &mut ev);
        assert!(closer.calls.is_empty());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].outcome, Outcome::Reported);
        assert_eq!(t.totals().reported, 1);
        assert_eq!(t.vhost(v).unwrap().reported.load(Relaxed), 1);
    }

    #[test]
    fn off_and_other_owners_are_untouched() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let off = heap.vhost_with("off.test", AutoClose::Off, 100);
        let on = heap.vhost_with("on.test", AutoClose::On, 100);
        heap.stuck_connection(5, off, 99, 1_000);
        let other = heap.stuck_connection(6, on, 99, 1_000); // another child's
        let mut closer = FakeCloser::default();
        let mut ev = Vec::new();
        assert_eq!(act_on_own(&t, 5, 100_000, &mut closer, &mut ev), None);
        assert!(closer.calls.is_empty() && ev.is_empty());
        assert_eq!(t.owned(other).unwrap().flags.load(Relaxed), 0);
    }

    #[test]
    fn a_refused_close_is_not_counted_and_ends_the_period() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("on.test", AutoClose::On, 100);
        let h = heap.stuck_connection(5, v, 99, 1_000);
        let mut closer = FakeCloser {
            answer: Some(Refusal::Reused),
            ..Default::default()
        };
        let mut ev = Vec::new();
        act_on_own(&t, 5, 2_000, &mut closer, &mut ev);
        assert!(matches!(&ev[0].outcome, Outcome::Skipped(why) if why.contains("another socket")));
        assert_eq!(t.totals().force_closed_guard, 0);
        assert_eq!(t.owned(h).unwrap().close_wait_since(h.tag), None);
    }

    #[test]
    fn a_half_closed_client_still_reading_is_never_closed() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("on.test", AutoClose::On, 1_000);
        let h = heap.stuck_connection(5, v, 99, 10_000);
        let mut closer = FakeCloser {
            acked: 100,
            ..Default::default()
        };
        let mut ev = Vec::new();
        // First look samples 100 bytes acknowledged.
        assert_eq!(
            act_on_own(&t, 5, 10_001, &mut closer, &mut ev),
            Some(11_000)
        );
        // The peer keeps reading: at each deadline the period starts again, nothing is closed.
        for (step, now) in [11_000u64, 12_000, 13_000].iter().enumerate() {
            closer.acked = 200 + step as u64;
            assert_eq!(
                act_on_own(&t, 5, *now, &mut closer, &mut ev),
                Some(now + 1_000)
            );
        }
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(t.totals().force_closed_guard, 0);
        let slot = t.owned(h).unwrap();
        assert_eq!(slot.flags.load(Relaxed) & FLAG_ABANDONED, 0);
        // It stops reading: one full timeout later it counts as gone and is closed.
        assert_eq!(act_on_own(&t, 5, 14_000, &mut closer, &mut ev), None);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].outcome, Outcome::ForceClosed);
        assert_ne!(slot.flags.load(Relaxed) & FLAG_ABANDONED, 0);
        assert_eq!(slot.abandoned_since_mono_ms.load(Relaxed), 14_000);
    }

    #[test]
    fn off_marks_a_gone_client_abandoned_without_acting() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("off.test", AutoClose::Off, 500);
        let h = heap.stuck_connection(5, v, 99, 1_000);
        let mut closer = FakeCloser::default();
        let mut ev = Vec::new();
        act_on_own(&t, 5, 1_400, &mut closer, &mut ev);
        assert_eq!(t.owned(h).unwrap().flags.load(Relaxed) & FLAG_ABANDONED, 0);
        act_on_own(&t, 5, 1_500, &mut closer, &mut ev);
        assert!(closer.calls.is_empty() && ev.is_empty());
        assert_ne!(t.owned(h).unwrap().flags.load(Relaxed) & FLAG_ABANDONED, 0);
    }
}
