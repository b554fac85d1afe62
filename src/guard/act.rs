//! The owner's pass: a child acts on its own connections that have sat in CLOSE_WAIT past
//! their vhost's timeout. Only the owning child can act — children are non-dumpable and run as
//! the `User`, so one child cannot reach another's descriptors.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::config::AutoClose;
use crate::kernel::TCP_CLOSE_WAIT;
use crate::sys::socket::Refusal;
use crate::table::slot::{FLAG_FORCE_CLOSED, FLAG_REPORTED};
use crate::table::state::ConnState;
use crate::table::SharedTable;

/// Shuts down a socket after checking it is still the one recorded (see sys::socket).
pub trait Closer {
    fn shutdown_if_same(&mut self, fd: i32, inode: u64) -> Result<(), Refusal>;
}

/// The real thing: dup + inode check + TCP state check + shutdown(SHUT_RDWR).
pub struct SocketCloser;

impl Closer for SocketCloser {
    fn shutdown_if_same(&mut self, fd: i32, inode: u64) -> Result<(), Refusal> {
        crate::sys::socket::shutdown_if_same(fd, inode, TCP_CLOSE_WAIT)
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
        if slot.owner_pid.load(Relaxed) != pid {
            continue;
        }
        // Another thread of this child may end the connection and claim the slot for a new
        // one while we look: everything below must describe one claim (checked after `view`).
        let tag = slot.tag.load(Acquire);
        let since = slot.close_wait_since_mono_ms.load(Acquire);
        let state = ConnState::from_u32(slot.state.load(Acquire));
        if since == 0 || !state.is_open() {
            continue;
        }
        let Some(vhost) = table.vhost(slot.vhost.load(Relaxed)) else {
            continue;
        };
        let mode = AutoClose::from_u8(vhost.auto_close.load(Relaxed) as u8);
        let due = since.saturating_add(vhost.close_wait_timeout_ms.load(Relaxed));
        let flags = slot.flags.load(Relaxed);
        let done = match mode {
            AutoClose::Off => true,
            AutoClose::On => flags & FLAG_FORCE_CLOSED != 0,
            AutoClose::Report => flags & FLAG_REPORTED != 0,
        };
        if done {
            continue;
        }
        if now_mono_ms < due {
            next = Some(next.map_or(due, |n| n.min(due)));
            continue;
        }
        let view = slot.view(i);
        if slot.tag.load(Acquire) != tag || view.close_wait_since_mono_ms != since {
            continue;
        }
        let (vname, vport) = table.vhost_name(view.vhost);
        let mut event = Event {
            outcome: Outcome::Reported,
            client: view.client.to_string(),
            vhost: format!("{vname}:{vport}"),
            pid,
            method: view.method,
            path: view.path,
            close_wait_ms: now_mono_ms.saturating_sub(since),
        };
        let c = table.counters();
        if mode == AutoClose::Report {
            slot.flags.fetch_or(FLAG_REPORTED, Relaxed);
            c.reported.fetch_add(1, Relaxed);
            vhost.reported.fetch_add(1, Relaxed);
        } else {
            match closer.shutdown_if_same(view.fd, view.inode) {
                Ok(()) => {
                    slot.flags.fetch_or(FLAG_FORCE_CLOSED, Relaxed);
                    table.record_close_wait_end(slot);
                    c.force_closed_guard.fetch_add(1, Relaxed);
                    vhost.force_closed_guard.fetch_add(1, Relaxed);
                    event.outcome = Outcome::ForceClosed;
                }
                Err(why) => {
                    // Whatever it was, the recorded socket is not ours to close any more; end
                    // its period so a later scan starts afresh if it shows up again.
                    table.record_close_wait_end(slot);
                    event.outcome = Outcome::Skipped(match why {
                        Refusal::Gone => format!("descriptor {} is closed", view.fd),
                        Refusal::Reused => {
                            format!("descriptor {} now names another socket", view.fd)
                        }
                        Refusal::NotCloseWait(s) => {
                            format!("socket left CLOSE_WAIT (TCP state {s})")
                        }
                        Refusal::Io(e) => e,
                    });
                }
            }
        }
        events.push(event);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HeapTable;

    #[derive(Default)]
    struct FakeCloser {
        calls: Vec<(i32, u64)>,
        answer: Option<Refusal>,
    }
    impl Closer for FakeCloser {
        fn shutdown_if_same(&mut self, fd: i32, inode: u64) -> Result<(), Refusal> {
            self.calls.push((fd, inode));
            self.answer.take().map_or(Ok(()), Err)
        }
    }

    fn vhost(t: &SharedTable, name: &str, mode: AutoClose, timeout: u64) -> u32 {
        let i = t.register_vhost(name, 80);
        let row = t.vhost(i).unwrap();
        row.auto_close.store(mode as u32, Relaxed);
        row.close_wait_timeout_ms.store(timeout, Relaxed);
        i
    }

    #[test]
    fn on_closes_once_after_the_timeout_and_counts() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = vhost(&t, "on.test", AutoClose::On, 1_000);
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
        assert_eq!(t.counters().force_closed_guard.load(Relaxed), 1);
        assert_eq!(t.vhost(v).unwrap().force_closed_guard.load(Relaxed), 1);
        assert_ne!(
            t.owned(h).unwrap().flags.load(Relaxed) & FLAG_FORCE_CLOSED,
            0
        );
        assert_eq!(t.header().close_wait_marked.load(Relaxed), 0);
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
        let v = vhost(&t, "rep.test", AutoClose::Report, 100);
        heap.stuck_connection(5, v, 99, 1_000);
        let mut closer = FakeCloser::default();
        let mut ev = Vec::new();
        act_on_own(&t, 5, 5_000, &mut closer, &mut ev);
        act_on_own(&t, 5, 6_000, &mut closer, &mut ev);
        assert!(closer.calls.is_empty());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].outcome, Outcome::Reported);
        assert_eq!(t.counters().reported.load(Relaxed), 1);
        assert_eq!(t.vhost(v).unwrap().reported.load(Relaxed), 1);
    }

    #[test]
    fn off_and_other_owners_are_untouched() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let off = vhost(&t, "off.test", AutoClose::Off, 100);
        let on = vhost(&t, "on.test", AutoClose::On, 100);
        heap.stuck_connection(5, off, 99, 1_000);
        heap.stuck_connection(6, on, 99, 1_000); // another child's
        let mut closer = FakeCloser::default();
        let mut ev = Vec::new();
        assert_eq!(act_on_own(&t, 5, 100_000, &mut closer, &mut ev), None);
        assert!(closer.calls.is_empty() && ev.is_empty());
    }

    #[test]
    fn a_refused_close_is_not_counted_and_ends_the_period() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = vhost(&t, "on.test", AutoClose::On, 100);
        heap.stuck_connection(5, v, 99, 1_000);
        let mut closer = FakeCloser {
            answer: Some(Refusal::Reused),
            ..Default::default()
        };
        let mut ev = Vec::new();
        act_on_own(&t, 5, 2_000, &mut closer, &mut ev);
        assert!(matches!(&ev[0].outcome, Outcome::Skipped(why) if why.contains("another socket")));
        assert_eq!(t.counters().force_closed_guard.load(Relaxed), 0);
        assert_eq!(t.header().close_wait_marked.load(Relaxed), 0);
    }
}
