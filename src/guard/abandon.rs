//! Stopping the work nobody waits for (SocketGuardAbandonedTimeout, SocketGuardGracefulDeadline,
//! and a server stop).
//!
//! A connection is abandoned once its client is gone (see `act`: CLOSE_WAIT past the vhost's
//! timeout with no data moving, whether the guard then closed it, reported it or only showed
//! it). If its handler still runs `AbandonedTimeout` later, the guard stops the work, in this
//! order, each step only if the previous one did not free the worker:
//! 1. the request's CGI processes get SIGTERM, then SIGKILL `GRACE_MS` later;
//! 2. the child itself is ended: prefork (one connection per child) at once; worker/event only
//!    when every connection it holds is abandoned or idle (keep-alive, lingering close).
//!
//! What may be signalled, and how it is verified, is in `sys::process`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use crate::sys::process::{Proc, SignalError};
use crate::table::layout::Slot;
use crate::table::slot::{FLAG_ABANDONED, FLAG_CGI_KILL, FLAG_CGI_TERM};
use crate::table::state::SlotState;
use crate::table::SharedTable;

/// Between SIGTERM and SIGKILL to a CGI, and between SIGKILL and ending the child.
pub const GRACE_MS: u64 = 2_000;
/// How often a child that waits only for its live connections to finish looks again.
pub const RECHECK_MS: u64 = 250;

/// Finding and signalling the processes that serve a connection (real: `sys::process`).
pub trait Processes {
    /// The verified processes serving `client`'s request (a CGI and its children).
    fn serving(&mut self, client: SocketAddr) -> Vec<Proc>;
    fn signal(&mut self, p: &Proc, sig: i32) -> Result<(), SignalError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    AbandonedTimeout,
    GracefulDeadline,
    ServerStop,
}

impl Why {
    pub fn text(self) -> &'static str {
        match self {
            Why::AbandonedTimeout => "SocketGuardAbandonedTimeout",
            Why::GracefulDeadline => "SocketGuardGracefulDeadline after a graceful restart",
            Why::ServerStop => "the server is stopping",
        }
    }
}

/// One stop, with what its log line needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Stopped {
    pub why: Why,
    /// "SIGTERM" / "SIGKILL" to `pids`.
    pub signal: &'static str,
    pub pids: Vec<u32>,
    /// Processes the kernel would not let us signal (another user, e.g. suexec).
    pub denied: Vec<u32>,
    pub client: String,
    pub vhost_index: u32,
    pub vhost: String,
    pub method: String,
    pub path: String,
    /// How long the client had been gone.
    pub abandoned_ms: u64,
}

impl Stopped {
    /// A stop not tied to one request (e.g. a child that holds no live connection).
    pub fn nothing(why: Why) -> Stopped {
        Stopped {
            why,
            signal: "",
            pids: Vec::new(),
            denied: Vec::new(),
            client: String::new(),
            vhost_index: u32::MAX,
            vhost: String::new(),
            method: String::new(),
            path: String::new(),
            abandoned_ms: 0,
        }
    }
}

/// What one pass decided beyond signalling CGIs.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Earliest future deadline of a step still to come.
    pub next: Option<u64>,
    /// End this child: the vhost row and description of (one of) the abandoned request(s).
    pub end_child: Option<Stopped>,
}

/// The abandoned-work pass over `pid`'s connections. `threaded`: worker/event (a child holds
/// many connections), else prefork.
pub fn stop_abandoned(
    table: &SharedTable,
    pid: u32,
    now: u64,
    threaded: bool,
    procs: &mut impl Processes,
    events: &mut Vec<Stopped>,
) -> Decision {
    let mut d = Decision::default();
    let mut wants_end: Option<Stopped> = None;
    let mut live = false;
    for (i, slot) in own_open(table, pid) {
        let Some(timeout) = abandoned_timeout(table, slot) else {
            live |= !is_idle(slot);
            continue;
        };
        match next_step(table, i, slot, timeout, now, procs, events) {
            Step::Live(next) => {
                live = true;
                d.next = Some(d.next.map_or(next, |n| n.min(next)));
            }
            Step::EndChild(ev) => {
                wants_end.get_or_insert(ev);
            }
        }
    }
    if wants_end.is_some() && (!threaded || !live) {
        d.end_child = wants_end;
    } else if wants_end.is_some() {
        // A live connection keeps the child alive: look again soon, it may finish.
        let again = now + RECHECK_MS;
        d.next = Some(d.next.map_or(again, |n| n.min(again)));
    }
    d
}

/// What one abandoned connection needs from its child after `next_step`.
enum Step {
    /// Its handler still runs and has a next step at this time (or is not due yet).
    Live(u64),
    /// Only ending the child stops its handler.
    EndChild(Stopped),
}

/// Takes the step that is due for connection `i`, abandoned with `timeout`: SIGTERM to its
/// CGIs at the timeout, SIGKILL `GRACE_MS` later, ending the child another grace later or
/// when no CGI serves it.
fn next_step(
    table: &SharedTable,
    i: usize,
    slot: &Slot,
    timeout: u64,
    now: u64,
    procs: &mut impl Processes,
    events: &mut Vec<Stopped>,
) -> Step {
    let t0 = slot
        .abandoned_since_mono_ms
        .load(Relaxed)
        .saturating_add(timeout);
    let flags = slot.flags.load(Relaxed);
    let step_at = if flags & FLAG_CGI_KILL != 0 {
        t0 + 2 * GRACE_MS
    } else if flags & FLAG_CGI_TERM != 0 {
        t0 + GRACE_MS
    } else {
        t0
    };
    if now < step_at {
        return Step::Live(step_at); // not ready to end the child yet
    }
    let ev = describe(table, i, slot, now, Why::AbandonedTimeout);
    if flags & FLAG_CGI_KILL != 0 {
        // CGIs killed GRACE_MS ago and the handler still runs: only ending the child helps.
        return Step::EndChild(ev);
    }
    let (sig, flag) = if flags & FLAG_CGI_TERM != 0 {
        (libc::SIGKILL, FLAG_CGI_KILL)
    } else {
        (libc::SIGTERM, FLAG_CGI_TERM)
    };
    match signal_serving(procs, slot, sig, ev) {
        Some((ev, _)) => {
            slot.flags.fetch_or(flag, Relaxed);
            // Counted once per request, and only if a signal was actually delivered.
            if sig == libc::SIGTERM && !ev.pids.is_empty() {
                count_cgi(table, slot);
            }
            events.push(ev);
            Step::Live(step_at + GRACE_MS)
        }
        None if sig == libc::SIGKILL => {
            // The CGI is gone but the handler has not returned yet: give it one more grace.
            slot.flags.fetch_or(FLAG_CGI_KILL, Relaxed);
            Step::Live(step_at + GRACE_MS)
        }
        // No CGI serves it: the handler runs inside this child.
        None => Step::EndChild(describe(table, i, slot, now, Why::AbandonedTimeout)),
    }
}

/// After a graceful restart: whether this old-generation child is past the deadline and
/// holds abandoned connections and otherwise only idle ones. If so, its abandoned requests' CGIs are
/// killed (SIGKILL: the deadline has passed) and the description to end it is returned.
pub fn graceful_deadline(
    table: &SharedTable,
    pid: u32,
    my_generation: u64,
    now: u64,
    procs: &mut impl Processes,
    events: &mut Vec<Stopped>,
) -> Option<Stopped> {
    let h = table.header();
    let deadline = h.graceful_deadline_ms.load(Relaxed);
    if deadline == 0
        || my_generation >= h.generation.load(Relaxed)
        || now < h.restart_mono_ms.load(Relaxed).saturating_add(deadline)
    {
        return None;
    }
    let own: Vec<(usize, &Slot)> = own_open(table, pid).collect();
    let abandoned = |s: &Slot| s.flags.load(Relaxed) & FLAG_ABANDONED != 0;
    // A child with nothing abandoned is on its way out by itself (Apache closes the idle
    // connections of an old generation); one with a live connection is left to finish.
    if !own.iter().any(|(_, s)| abandoned(s))
        || own.iter().any(|(_, s)| !abandoned(s) && !is_idle(s))
    {
        return None;
    }
    let mut first = None;
    for (i, slot) in own.into_iter().filter(|(_, s)| abandoned(s) && !is_idle(s)) {
        let ev = describe(table, i, slot, now, Why::GracefulDeadline);
        first.get_or_insert_with(|| ev.clone());
        if let Some((ev, _)) = signal_serving(procs, slot, libc::SIGKILL, ev) {
            slot.flags.fetch_or(FLAG_CGI_TERM | FLAG_CGI_KILL, Relaxed);
            if !ev.pids.is_empty() {
                count_cgi(table, slot);
            }
            events.push(ev);
        }
    }
    first
}

/// At a server stop (not a graceful restart): every request in flight is abandoned by
/// definition. SIGTERM to the CGIs of all of this child's requests; returns what it signalled
/// (the caller waits and sends SIGKILL to what is left through `kill_left`).
pub fn stop_for_server_stop(
    table: &SharedTable,
    pid: u32,
    now: u64,
    procs: &mut impl Processes,
    events: &mut Vec<Stopped>,
) -> Vec<Proc> {
    let mut signalled = Vec::new();
    for (i, slot) in own_open(table, pid) {
        if slot.lease().state != SlotState::Handling {
            continue;
        }
        let ev = describe(table, i, slot, now, Why::ServerStop);
        let Some((ev, found)) = signal_serving(procs, slot, libc::SIGTERM, ev) else {
            continue;
        };
        if !ev.pids.is_empty() {
            slot.flags.fetch_or(FLAG_CGI_TERM, Relaxed);
            count_cgi(table, slot);
            signalled.extend(found);
        }
        events.push(ev);
    }
    signalled
}

/// SIGKILL to those of `procs_left` still running; returns how many.
pub fn kill_left(procs: &mut impl Processes, left: &[Proc]) -> usize {
    left.iter()
        .filter(|p| procs.signal(p, libc::SIGKILL).is_ok())
        .count()
}

fn own_open(table: &SharedTable, pid: u32) -> impl Iterator<Item = (usize, &Slot)> {
    table.slots().iter().enumerate().filter(move |(_, s)| {
        let l = s.lease();
        l.pid == pid && l.state.is_open()
    })
}

/// Keep-alive idle or lingering close: Apache closes such connections itself at any time.
fn is_idle(slot: &Slot) -> bool {
    matches!(
        slot.lease().state,
        SlotState::Keepalive | SlotState::Closing
    )
}

/// The AbandonedTimeout of an abandoned connection whose handler still runs, on a vhost where
/// the timeout is on.
fn abandoned_timeout(table: &SharedTable, slot: &Slot) -> Option<u64> {
    if slot.flags.load(Relaxed) & FLAG_ABANDONED == 0 || slot.lease().state != SlotState::Handling {
        return None;
    }
    let row = table.vhost(slot.vhost.load(Relaxed))?;
    let timeout = row.abandoned_timeout_ms.load(Relaxed);
    (timeout != 0).then_some(timeout)
}

fn describe(table: &SharedTable, index: usize, slot: &Slot, now: u64, why: Why) -> Stopped {
    let view = slot.view(index);
    let (name, port) = table.vhost_name(view.vhost);
    Stopped {
        why,
        signal: "",
        pids: Vec::new(),
        denied: Vec::new(),
        client: view.client.to_string(),
        vhost_index: view.vhost,
        vhost: format!("{name}:{port}"),
        method: view.method,
        path: view.path,
        abandoned_ms: match view.abandoned_since_mono_ms {
            0 => 0,
            t => now.saturating_sub(t),
        },
    }
}

/// Sends `sig` to every process serving the slot's client: the event and the processes, if
/// any was found.
fn signal_serving(
    procs: &mut impl Processes,
    slot: &Slot,
    sig: i32,
    mut ev: Stopped,
) -> Option<(Stopped, Vec<Proc>)> {
    let found = procs.serving(crate::table::slot::client_of(slot));
    if found.is_empty() {
        return None;
    }
    ev.signal = if sig == libc::SIGKILL {
        "SIGKILL"
    } else {
        "SIGTERM"
    };
    for p in &found {
        match procs.signal(p, sig) {
            Ok(()) => ev.pids.push(p.pid),
            Err(SignalError::Denied) => ev.denied.push(p.pid),
            Err(_) => {}
        }
    }
    Some((ev, found))
}

/// Counts one request's CGI stopped, on the slot's vhost (the total is the vhosts' sum).
fn count_cgi(table: &SharedTable, slot: &Slot) {
    if let Some(row) = table.vhost(slot.vhost.load(Relaxed)) {
        row.stopped_cgi.fetch_add(1, Relaxed);
    }
}

/// Counts an ended child on the vhost of the request that made it end (the caller ends it).
pub fn count_child(table: &SharedTable, vhost_index: u32) {
    if let Some(row) = table.vhost(vhost_index) {
        row.stopped_child.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::slot::FLAG_ABANDONED;
    use crate::table::HeapTable;

    /// One fake CGI per client port listed in `cgis`; records signals.
    #[derive(Default)]
    struct FakeProcs {
        cgis: Vec<u16>,
        signals: Vec<(u32, i32)>,
    }
    impl Processes for FakeProcs {
        fn serving(&mut self, client: SocketAddr) -> Vec<Proc> {
            self.cgis
                .iter()
                .filter(|p| **p == client.port())
                .map(|p| Proc {
                    pid: *p as u32,
                    ppid: 1,
                    pgrp: 1,
                    start_time: 1,
                })
                .collect()
        }
        fn signal(&mut self, p: &Proc, sig: i32) -> Result<(), SignalError> {
            self.signals.push((p.pid, sig));
            Ok(())
        }
    }

    fn abandoned(heap: &HeapTable, pid: u32, timeout: u64, at: u64) -> crate::table::SlotHandle {
        let t = heap.table();
        let v = t.register_vhost("a.test", 80);
        t.vhost(v)
            .unwrap()
            .abandoned_timeout_ms
            .store(timeout, Relaxed);
        let h = heap.stuck_connection(pid, v, 9, 1);
        let s = t.owned(h).unwrap();
        s.abandoned_since_mono_ms.store(at, Relaxed);
        s.flags.fetch_or(FLAG_ABANDONED, Relaxed);
        h
    }

    #[test]
    fn cgi_gets_sigterm_then_sigkill_then_the_child_ends() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        abandoned(&heap, 5, 1_000, 10_000);
        let mut procs = FakeProcs {
            cgis: vec![5009],
            ..Default::default()
        };
        let mut ev = Vec::new();
        let d = stop_abandoned(&t, 5, 10_999, false, &mut procs, &mut ev);
        assert_eq!(
            (d.next, procs.signals.len()),
            (Some(11_000), 0),
            "not before the timeout"
        );
        let d = stop_abandoned(&t, 5, 11_000, false, &mut procs, &mut ev);
        assert_eq!(procs.signals, vec![(5009, libc::SIGTERM)]);
        assert_eq!(d.next, Some(11_000 + GRACE_MS));
        assert!(d.end_child.is_none());
        assert_eq!(ev[0].path, "/slow");
        assert_eq!(ev[0].abandoned_ms, 1_000);
        assert_eq!(t.totals().stopped_cgi, 1);
        stop_abandoned(&t, 5, 11_000 + GRACE_MS, false, &mut procs, &mut ev);
        assert_eq!(procs.signals[1], (5009, libc::SIGKILL));
        assert_eq!(t.totals().stopped_cgi, 1, "one stop per request");
        // The handler still has not returned after the CGI was killed: end the child.
        let d = stop_abandoned(&t, 5, 11_000 + 2 * GRACE_MS, false, &mut procs, &mut ev);
        assert!(d.end_child.is_some());
    }

    #[test]
    fn prefork_without_cgi_ends_the_child_at_the_timeout() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        abandoned(&heap, 5, 1_000, 10_000);
        let mut procs = FakeProcs::default();
        let d = stop_abandoned(&t, 5, 11_000, false, &mut procs, &mut Vec::new());
        let end = d.end_child.expect("prefork child ended");
        assert_eq!(end.why, Why::AbandonedTimeout);
        assert!(procs.signals.is_empty());
    }

    #[test]
    fn a_threaded_child_with_a_live_connection_is_never_ended() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        abandoned(&heap, 5, 1_000, 10_000);
        // A second, live connection of the same child (handling, client still there).
        let live = t.claim(5, 3, 0).unwrap();
        t.set_state(live, SlotState::Handling, 0);
        let mut procs = FakeProcs::default();
        let d = stop_abandoned(&t, 5, 20_000, true, &mut procs, &mut Vec::new());
        assert!(d.end_child.is_none());
        assert_eq!(
            d.next,
            Some(20_000 + RECHECK_MS),
            "looks again while it waits"
        );
        // Idle keep-alive connections do not keep it alive.
        t.set_state(live, SlotState::Keepalive, 0);
        let d = stop_abandoned(&t, 5, 20_000, true, &mut procs, &mut Vec::new());
        assert!(d.end_child.is_some());
    }

    #[test]
    fn off_vhosts_and_returned_handlers_are_left_alone() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let h = abandoned(&heap, 5, 0, 10_000);
        let mut procs = FakeProcs {
            cgis: vec![5009],
            ..Default::default()
        };
        let d = stop_abandoned(&t, 5, 99_000, false, &mut procs, &mut Vec::new());
        assert_eq!(d, Decision::default());
        t.vhost(0)
            .unwrap()
            .abandoned_timeout_ms
            .store(1_000, Relaxed);
        t.set_state(h, SlotState::Keepalive, 0); // the handler returned
        let d = stop_abandoned(&t, 5, 99_000, false, &mut procs, &mut Vec::new());
        assert_eq!(d, Decision::default());
        assert!(procs.signals.is_empty());
    }

    #[test]
    fn graceful_deadline_ends_old_children_holding_only_abandoned_work() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let h = t.header();
        h.graceful_deadline_ms.store(5_000, Relaxed);
        h.generation.store(1, Relaxed);
        h.restart_mono_ms.store(100_000, Relaxed);
        abandoned(&heap, 5, 0, 90_000);
        let mut procs = FakeProcs {
            cgis: vec![5009],
            ..Default::default()
        };
        let mut ev = Vec::new();
        assert!(graceful_deadline(&t, 5, 0, 104_999, &mut procs, &mut ev).is_none());
        assert!(
            graceful_deadline(&t, 5, 1, 200_000, &mut procs, &mut ev).is_none(),
            "current generation"
        );
        let end = graceful_deadline(&t, 5, 0, 105_000, &mut procs, &mut ev).unwrap();
        assert_eq!(end.why, Why::GracefulDeadline);
        assert_eq!(procs.signals, vec![(5009, libc::SIGKILL)]);
        // A live connection keeps the old child alive.
        let heap2 = HeapTable::for_tests();
        let t2 = heap2.table();
        t2.header().graceful_deadline_ms.store(5_000, Relaxed);
        t2.header().generation.store(1, Relaxed);
        let live = t2.claim(5, 0, 0).unwrap();
        t2.set_state(live, SlotState::Handling, 0);
        assert!(graceful_deadline(&t2, 5, 0, 1_000_000, &mut procs, &mut ev).is_none());
        // Nothing abandoned (only idle, or nothing at all): it exits by itself.
        t2.set_state(live, SlotState::Keepalive, 0);
        assert!(graceful_deadline(&t2, 5, 0, 1_000_000, &mut procs, &mut ev).is_none());
    }

    #[test]
    fn server_stop_signals_every_in_flight_cgi() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = t.register_vhost("a.test", 80);
        heap.stuck_connection(5, v, 9, 1); // client port 5009, handling
        let mut procs = FakeProcs {
            cgis: vec![5009],
            ..Default::default()
        };
        let mut ev = Vec::new();
        let left = stop_for_server_stop(&t, 5, 1, &mut procs, &mut ev);
        assert_eq!(left.len(), 1);
        assert_eq!(procs.signals, vec![(5009, libc::SIGTERM)]);
        assert_eq!(ev[0].why, Why::ServerStop);
        assert_eq!(kill_left(&mut procs, &left), 1);
        assert_eq!(procs.signals[1], (5009, libc::SIGKILL));
    }
}
