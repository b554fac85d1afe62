//! Builds the status `Snapshot` from the shared table (plus the kernel's view), without locks:
//! each slot is copied field by field, so a row may be a moment out of date but never torn in
//! a way that matters for display.

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::model::*;
use crate::config::AutoClose;
use crate::kernel::diag_lookup::Tuple;
use crate::kernel::KernelSocket;
use crate::table::layout::{leak_kind, HISTOGRAM_BOUNDS_MS};
use crate::table::shared::LeakView;
use crate::table::slot::{
    FLAG_ABANDONED, FLAG_CGI_KILL, FLAG_CGI_TERM, FLAG_FORCE_CLOSED, FLAG_RESCUED,
};
use crate::table::state::SlotState;
use crate::table::{SharedTable, SlotView};

/// What the server says about itself (from Apache, not the table).
#[derive(Clone, Debug, Default)]
pub struct ServerInfo {
    pub server_version: String,
    pub mpm: String,
}

pub fn build(
    table: Option<&SharedTable>,
    info: &ServerInfo,
    now_mono_ms: u64,
    kernel: Result<Vec<KernelSocket>, String>,
) -> Snapshot {
    let mut snap = empty(info);
    let Some(t) = table else {
        snap.kernel = kernel_view(kernel, &[], &[], &[], now_mono_ms, false);
        return snap;
    };
    read_header(&mut snap, t, now_mono_ms);
    snap.vhosts = read_vhosts(t);
    let seen = read_connections(&mut snap, t, now_mono_ms);
    snap.children = read_children(t, &seen.open_per_pid, now_mono_ms);
    snap.kernel = kernel_view(
        kernel,
        &seen.tuples,
        &snap.connections,
        &t.leak_rows(),
        now_mono_ms,
        seen.any_overdue,
    );
    snap.scanner = scanner_info(t, now_mono_ms);
    snap.leaks = super::leaks::read_leaks(t);
    snap.history = super::leaks::read_history(t);
    snap
}

fn canonical(a: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// A snapshot with no table: server info, every open state at 0, the histogram's shape.
fn empty(info: &ServerInfo) -> Snapshot {
    let mut snap = Snapshot {
        server_version: info.server_version.clone(),
        mpm: info.mpm.clone(),
        module_version: env!("CARGO_PKG_VERSION").to_string(),
        now_unix_ms: crate::clock::unix_ms(),
        history: super::leaks::empty_history(),
        ..Default::default()
    };
    snap.totals.open_by_state = ShownState::OPEN.iter().map(|s| (*s, 0)).collect();
    snap.close_wait_histogram.bounds_secs = HISTOGRAM_BOUNDS_MS
        .iter()
        .map(|ms| *ms as f64 / 1000.0)
        .collect();
    snap.close_wait_histogram.counts = vec![0; HISTOGRAM_BOUNDS_MS.len() + 1];
    snap
}

/// Settings, counters and the histogram from the table's header.
fn read_header(snap: &mut Snapshot, t: &SharedTable, now_mono_ms: u64) {
    let h = t.header();
    snap.uptime_secs = now_mono_ms.saturating_sub(h.created_mono_ms.load(Relaxed)) / 1000;
    snap.generation = h.generation.load(Relaxed);
    snap.slots_total = t.nslots() as u64;
    snap.scan_interval_ms = h.scan_interval_ms.load(Relaxed);
    snap.full_scan_interval_ms = h.full_scan_interval_ms.load(Relaxed);
    snap.graceful_deadline_ms = h.graceful_deadline_ms.load(Relaxed);
    let c = t.totals();
    snap.totals.accepted = c.accepted;
    snap.totals.requests = c.requests;
    snap.totals.closed = c.closed;
    snap.totals.force_closed_guard = c.force_closed_guard;
    snap.totals.force_closed_rescue = c.force_closed_rescue;
    snap.totals.reported = c.reported;
    snap.totals.reclaimed = c.reclaimed;
    snap.totals.untracked = c.untracked;
    snap.totals.stopped_cgi = c.stopped_cgi;
    snap.totals.stopped_child = c.stopped_child;
    for (i, b) in h.histogram.iter().enumerate() {
        snap.close_wait_histogram.counts[i] = b.load(Relaxed);
    }
    snap.close_wait_histogram.sum_secs = h.histogram_sum_ms.load(Relaxed) as f64 / 1000.0;
}

/// The vhost rows, with `open` and `close_wait_now` still 0 (counted from the slots).
fn read_vhosts(t: &SharedTable) -> Vec<VhostRow> {
    let vhost_count = t.header().vhost_count.load(Acquire) as usize;
    (0..vhost_count as u32)
        .filter_map(|i| {
            let row = t.vhost(i)?;
            let (name, port) = t.vhost_name(i);
            Some(VhostRow {
                name,
                port,
                auto_close: AutoClose::from_u8(row.auto_close.load(Relaxed) as u8),
                close_wait_timeout_ms: row.close_wait_timeout_ms.load(Relaxed),
                accepted: row.accepted.load(Relaxed),
                open: 0,
                close_wait_now: 0,
                force_closed_guard: row.force_closed_guard.load(Relaxed),
                force_closed_rescue: row.force_closed_rescue.load(Relaxed),
                reported: row.reported.load(Relaxed),
                abandoned_timeout_ms: row.abandoned_timeout_ms.load(Relaxed),
                stopped_cgi: row.stopped_cgi.load(Relaxed),
                stopped_child: row.stopped_child.load(Relaxed),
            })
        })
        .collect()
}

/// What the walk over the slots found besides the rows: open connections per child, each
/// tracked connection's tuple as recorded (row i's is `tuples[i]`; canonical only when the
/// join needs it), and whether a socket sat in CLOSE_WAIT too long.
#[derive(Default)]
struct Seen {
    open_per_pid: HashMap<u32, u64>,
    tuples: Vec<Tuple>,
    any_overdue: bool,
}

/// Lists every open slot as a connection row and counts it in the totals and its vhost.
fn read_connections(snap: &mut Snapshot, t: &SharedTable, now_mono_ms: u64) -> Seen {
    let mut seen = Seen::default();
    for (i, slot) in t.slots().iter().enumerate() {
        if slot.lease().state == SlotState::Free {
            continue;
        }
        let v = slot.view(i);
        if !v.state.is_open() {
            continue; // being claimed or on its way out
        }
        snap.slots_used += 1;
        // Apache's own state, not the shown one: an abandoned connection whose handler
        // still runs is `handling` here.
        let handling = v.state == SlotState::Handling;
        let shown = display_state(&v);
        let (vhost, tuple) = (v.vhost, (v.local, v.client));
        let row = conn_row(t, v, shown, now_mono_ms);
        count(snap, &mut seen, &row, vhost);
        if row.abandoned_ms.is_some() && handling {
            snap.totals.abandoned_now += 1;
        }
        seen.tuples.push(tuple);
        snap.connections.push(row);
    }
    seen
}

/// What people need to see: the guard's action first, then the kernel's state, then
/// Apache's. A force-closed connection stays listed (its handler may still run), which
/// shows which URL leaks.
fn display_state(v: &SlotView) -> ShownState {
    if v.flags & FLAG_RESCUED != 0 {
        ShownState::Rescued
    } else if v.flags & FLAG_FORCE_CLOSED != 0 {
        ShownState::ForceClosed
    } else if v.close_wait_since_mono_ms != 0 {
        ShownState::CloseWait
    } else {
        v.state.into()
    }
}

/// Counts one listed connection in the totals, its child and its vhost.
fn count(snap: &mut Snapshot, seen: &mut Seen, row: &ConnRow, vhost: u32) {
    if let Some((_, n)) = snap
        .totals
        .open_by_state
        .iter_mut()
        .find(|(s, _)| *s == row.state)
    {
        *n += 1;
    }
    // Like the server-wide Open: connections shut down by the guard (in the child or by the
    // guard process) are counted apart, even while their handler still runs.
    let open = !matches!(row.state, ShownState::ForceClosed | ShownState::Rescued) as u64;
    *seen.open_per_pid.entry(row.pid).or_default() += open;
    let in_close_wait = row.close_wait_ms.is_some();
    snap.totals.close_wait_now += in_close_wait as u64;
    if let Some(v) = snap.vhosts.get_mut(vhost as usize) {
        v.open += open;
        v.close_wait_now += in_close_wait as u64;
        let limit = v.close_wait_timeout_ms.min(LEAK_AFTER_MS);
        seen.any_overdue |= row.close_wait_ms.is_some_and(|ms| ms >= limit);
    }
}

/// One connection row from a slot and the state it is shown in.
fn conn_row(t: &SharedTable, v: SlotView, state: ShownState, now_mono_ms: u64) -> ConnRow {
    let in_close_wait = v.close_wait_since_mono_ms != 0;
    let (vname, vport) = t.vhost_name(v.vhost);
    // The flag may be seen a moment before its time: show 0 s rather than the uptime.
    let abandoned_ms = (v.flags & FLAG_ABANDONED != 0).then(|| match v.abandoned_since_mono_ms {
        0 => 0,
        since => now_mono_ms.saturating_sub(since),
    });
    let stopped = if v.flags & FLAG_CGI_KILL != 0 {
        Some(Stop::CgiKill)
    } else if v.flags & FLAG_CGI_TERM != 0 {
        Some(Stop::CgiTerm)
    } else {
        None
    };
    ConnRow {
        pid: v.owner_pid,
        client: v.client.to_string(),
        local_port: v.local.port(),
        vhost: format!("{vname}:{vport}"),
        state,
        age_ms: now_mono_ms.saturating_sub(v.accept_mono_ms),
        close_wait_ms: in_close_wait
            .then(|| now_mono_ms.saturating_sub(v.close_wait_since_mono_ms)),
        class: in_close_wait.then(|| classify(t, v.owner_pid, now_mono_ms)),
        requests: v.requests,
        method: v.method,
        path: v.path,
        abandoned_ms,
        stopped,
    }
}

/// The child rows, oldest generation first, with their open connections.
fn read_children(
    t: &SharedTable,
    open_per_pid: &HashMap<u32, u64>,
    now_mono_ms: u64,
) -> Vec<ChildRow> {
    let hung_after = t.header().hung_child_timeout_ms.load(Relaxed);
    let mut children: Vec<ChildRow> = t
        .children()
        .iter()
        .filter_map(|row| {
            let pid = row.pid.load(Acquire);
            if pid == 0 {
                return None;
            }
            let age = now_mono_ms.saturating_sub(row.last_checkin_mono_ms.load(Relaxed));
            Some(ChildRow {
                pid,
                generation: row.generation.load(Relaxed),
                open: open_per_pid.get(&pid).copied().unwrap_or(0),
                checkin_age_ms: age,
                hung: hung_after > 0 && age > hung_after,
            })
        })
        .collect();
    children.sort_by_key(|c| (c.generation, c.pid));
    children
}

/// Who scans, how it went, and the guard process.
fn scanner_info(t: &SharedTable, now_mono_ms: u64) -> ScannerInfo {
    let h = t.header();
    ScannerInfo {
        pid: h.scanner_pid.load(Relaxed),
        scans: h.scans.load(Relaxed),
        scan_errors: h.scan_errors.load(Relaxed),
        last_scan_us: h.last_scan_us.load(Relaxed),
        last_scan_lookups: h.last_scan_lookups.load(Relaxed),
        last_scan_full: h.last_scan_full.load(Relaxed) != 0,
        full_scans: h.full_scans.load(Relaxed),
        last_scan_age_ms: now_mono_ms.saturating_sub(h.scanner_beat_mono_ms.load(Relaxed)),
        guard_pid: h.guard_pid.load(Relaxed),
        guard_reach: match h.guard_reach.load(Relaxed) {
            crate::table::layout::guard_reach::CHILDREN => "children",
            crate::table::layout::guard_reach::NONE => "none",
            _ => "unknown",
        },
        rescue: h.rescue.load(Relaxed) != 0,
    }
}

/// Who holds a tracked CLOSE_WAIT socket owned by `pid`.
fn classify(t: &SharedTable, pid: u32, now_mono_ms: u64) -> CloseWaitClass {
    let h = t.header();
    let Some(row) = t.child_of(pid) else {
        return CloseWaitClass::Stuck;
    };
    let hung_after = h.hung_child_timeout_ms.load(Relaxed);
    let checkin_age = now_mono_ms.saturating_sub(row.last_checkin_mono_ms.load(Relaxed));
    if hung_after > 0 && checkin_age > hung_after {
        CloseWaitClass::Hung
    } else if row.generation.load(Relaxed) < h.generation.load(Relaxed) {
        CloseWaitClass::OldGeneration
    } else {
        CloseWaitClass::Stuck
    }
}

/// Joins the kernel's CLOSE_WAIT sockets with the tracked connections (by their tuple: the
/// table records no inode until the scan confirms one) and puts
/// each in one class. A tracked socket the scanner has not marked yet counts as `stuck`. An
/// untracked one is `leaked` or `backlog` when the guard process's list (`leaks`) says so,
/// `untracked` otherwise; only sockets the kernel shows now are counted or listed.
/// `overdue`: some tracked socket has been in CLOSE_WAIT past its vhost's timeout or
/// `LEAK_AFTER_MS`, whichever is shorter — the verdict is then `leak`; so it is when a leaked
/// socket has been known to the guard process for `LEAK_AFTER_MS`.
fn kernel_view(
    kernel: Result<Vec<KernelSocket>, String>,
    tracked: &[Tuple],
    rows: &[ConnRow],
    leaks: &[LeakView],
    now_mono_ms: u64,
    mut overdue: bool,
) -> KernelView {
    let sockets = match kernel {
        Err(e) => {
            return KernelView {
                available: false,
                error: Some(e),
                ..Default::default()
            };
        }
        Ok(s) => s,
    };
    let mut view = KernelView {
        available: true,
        ..Default::default()
    };
    let leaks: HashMap<u64, &LeakView> = leaks.iter().map(|l| (l.inode, l)).collect();
    let owners = owner_rows(&sockets, tracked);
    for (s, owner) in sockets.iter().zip(owners) {
        match owner.map(|i| &rows[i]) {
            None => match leaks.get(&s.inode) {
                Some(l) if l.kind == leak_kind::LEAKED => {
                    view.leaked_count += 1;
                    view.leaked.push(LeakedSocket {
                        client: s.remote.to_string(),
                        local_port: s.local.port(),
                        inode: s.inode,
                        holder_pid: (l.holder_pid != 0).then_some(l.holder_pid),
                        holder_comm: l.holder_comm.clone(),
                        closed: l.closed,
                    });
                    overdue |= l.since_mono_ms != 0
                        && now_mono_ms.saturating_sub(l.since_mono_ms) >= LEAK_AFTER_MS;
                }
                Some(l) if l.kind == leak_kind::BACKLOG => view.backlog += 1,
                // No inode: never accepted (a socket gets its file at accept). Request bytes
                // beyond the FIN in Recv-Q: a client that gave up in the listen queue.
                _ if s.inode == 0 && s.recv_q > 1 => view.backlog += 1,
                _ => view.untracked += 1,
            },
            Some(row) => {
                view.tracked += 1;
                match row.class.unwrap_or(CloseWaitClass::Stuck) {
                    CloseWaitClass::Hung => view.hung += 1,
                    CloseWaitClass::OldGeneration => view.old_generation += 1,
                    _ => view.stuck += 1,
                }
            }
        }
    }
    view.oldest_close_wait_ms = rows
        .iter()
        .filter_map(|r| r.close_wait_ms)
        .max()
        .unwrap_or(0);
    view.verdict = if overdue {
        Verdict::Leak
    } else if sockets.is_empty() && view.oldest_close_wait_ms == 0 {
        Verdict::None
    } else {
        Verdict::Churn
    };
    view
}

/// The row of each kernel socket, joined by tuple. The kernel lists only CLOSE_WAIT sockets,
/// usually a handful, so they are hashed and every row is probed (no map of every row per
/// request); with none listed there is nothing to join.
fn owner_rows(sockets: &[KernelSocket], tracked: &[Tuple]) -> Vec<Option<usize>> {
    let mut owners = vec![None; sockets.len()];
    if sockets.is_empty() {
        return owners;
    }
    let wanted: HashMap<Tuple, usize> = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| ((canonical(s.local), canonical(s.remote)), i))
        .collect();
    for (row, &(local, client)) in tracked.iter().enumerate() {
        if let Some(&i) = wanted.get(&(canonical(local), canonical(client))) {
            owners[i] = Some(row);
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::slot::FLAG_FORCE_CLOSED;
    use crate::table::HeapTable;
    use std::sync::atomic::Ordering::Relaxed;

    /// The kernel's socket for `stuck_connection(_, _, inode, _)` (its tuple).
    fn kernel_socket(inode: u64) -> KernelSocket {
        HeapTable::stuck_socket(inode)
    }

    #[test]
    fn verdict_turns_to_leak_at_the_vhost_timeout() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = t.register_vhost("short.test", 80);
        t.vhost(v)
            .unwrap()
            .close_wait_timeout_ms
            .store(1_000, Relaxed);
        t.claim_child(7, 0, 1, 1).unwrap();
        heap.stuck_connection(7, v, 42, 10_000);
        let info = ServerInfo::default();
        let early = build(
            Some(&t),
            &info,
            10_500,
            Ok(vec![kernel_socket(42), kernel_socket(99)]),
        );
        assert_eq!(early.kernel.verdict, Verdict::Churn);
        assert_eq!(
            (
                early.kernel.tracked,
                early.kernel.untracked,
                early.kernel.stuck
            ),
            (1, 1, 1)
        );
        assert_eq!(early.connections[0].class, Some(CloseWaitClass::Stuck));
        assert_eq!(early.connections[0].state, ShownState::CloseWait);
        let late = build(Some(&t), &info, 11_000, Ok(vec![kernel_socket(42)]));
        assert_eq!(late.kernel.verdict, Verdict::Leak);
        assert_eq!(late.kernel.oldest_close_wait_ms, 1_000);
        let none = build(Some(&t), &info, 11_000, Ok(vec![]));
        assert_eq!(
            none.kernel.verdict,
            Verdict::Leak,
            "a marked socket counts even if this dump missed it"
        );
    }

    #[test]
    fn connections_are_counted_per_state_vhost_and_child() {
        let heap = HeapTable::new(8, 4, 1);
        let t = heap.table();
        let a = t.register_vhost("a.test", 80);
        let b = t.register_vhost("b.test", 80);
        t.claim_child(7, 0, 1, 1).unwrap();
        t.claim_child(8, 0, 1, 1).unwrap();
        heap.stuck_connection(7, a, 41, 10_000);
        heap.stuck_connection(8, b, 42, 10_000);
        let k = heap.stuck_connection(8, b, 43, 10_000);
        let s = t.owned(k).unwrap();
        t.end_close_wait(s, s.lease().tag);
        t.set_state(k, SlotState::Keepalive, 0);
        let snap = build(Some(&t), &ServerInfo::default(), 10_500, Ok(vec![]));
        let per_vhost: Vec<(u64, u64)> = snap
            .vhosts
            .iter()
            .map(|v| (v.open, v.close_wait_now))
            .collect();
        assert_eq!(per_vhost, [(1, 1), (2, 1)]);
        let per_child: Vec<(u32, u64)> = snap.children.iter().map(|c| (c.pid, c.open)).collect();
        assert_eq!(per_child, [(7, 1), (8, 2)]);
        assert_eq!(snap.totals.close_wait_now, 2);
        assert_eq!(snap.slots_used, 3);
        let open = |st| crate::status::open_in(&snap.totals, st);
        assert_eq!(
            (open(ShownState::CloseWait), open(ShownState::Keepalive)),
            (2, 1)
        );
    }

    #[test]
    fn force_closed_and_rescued_rows_are_listed_but_not_open() {
        use crate::table::slot::FLAG_RESCUED;
        for (flag, shown) in [
            (FLAG_FORCE_CLOSED, ShownState::ForceClosed),
            (FLAG_RESCUED, ShownState::Rescued),
        ] {
            let heap = HeapTable::for_tests();
            let t = heap.table();
            let v = t.register_vhost("on.test", 80);
            t.claim_child(7, 0, 1, 1).unwrap();
            let h = heap.stuck_connection(7, v, 42, 10_000);
            let s = t.owned(h).unwrap();
            s.flags.fetch_or(flag, Relaxed);
            t.end_close_wait(s, s.lease().tag);
            let snap = build(Some(&t), &ServerInfo::default(), 20_000, Ok(vec![]));
            assert_eq!(snap.connections.len(), 1);
            assert_eq!(snap.connections[0].state, shown);
            assert_eq!(snap.totals.open(), 0, "{shown:?}");
            assert_eq!(snap.vhosts[0].open, 0, "{shown:?}");
            assert!(
                snap.children.iter().all(|c| c.open == 0),
                "{shown:?}: {:?}",
                snap.children
            );
            assert_eq!(snap.kernel.verdict, Verdict::None);
        }
    }

    #[test]
    fn abandoned_rows_stops_and_counters() {
        use crate::table::slot::{FLAG_ABANDONED, FLAG_CGI_KILL, FLAG_CGI_TERM};
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = t.register_vhost("cgi.test", 80);
        let row = t.vhost(v).unwrap();
        row.abandoned_timeout_ms.store(5_000, Relaxed);
        row.stopped_cgi.store(3, Relaxed);
        row.stopped_child.store(1, Relaxed);
        t.header().graceful_deadline_ms.store(30_000, Relaxed);
        t.claim_child(7, 0, 1, 1).unwrap();
        // Force-closed, handler still running, CGI killed after SIGTERM.
        let a = heap.stuck_connection(7, v, 41, 10_000);
        let s = t.owned(a).unwrap();
        s.abandoned_since_mono_ms.store(12_000, Relaxed);
        s.flags.fetch_or(
            FLAG_ABANDONED | FLAG_FORCE_CLOSED | FLAG_CGI_TERM | FLAG_CGI_KILL,
            Relaxed,
        );
        t.end_close_wait(s, s.lease().tag);
        // Still in CLOSE_WAIT (AutoClose Off), CGI got SIGTERM.
        let b = heap.stuck_connection(7, v, 42, 10_000);
        let s = t.owned(b).unwrap();
        s.abandoned_since_mono_ms.store(15_000, Relaxed);
        s.flags.fetch_or(FLAG_ABANDONED | FLAG_CGI_TERM, Relaxed);
        // Abandoned, but its handler returned: not an abandoned handler.
        let k = heap.stuck_connection(7, v, 43, 10_000);
        t.set_state(k, SlotState::Keepalive, 0);
        let s = t.owned(k).unwrap();
        s.abandoned_since_mono_ms.store(16_000, Relaxed);
        s.flags.fetch_or(FLAG_ABANDONED, Relaxed);
        t.end_close_wait(s, s.lease().tag);
        // Still in CLOSE_WAIT, not (yet) found abandoned.
        heap.stuck_connection(7, v, 44, 10_000);

        let snap = build(Some(&t), &ServerInfo::default(), 20_000, Ok(vec![]));
        assert_eq!(snap.totals.stopped_cgi, 3, "the vhosts' sum");
        assert_eq!(snap.totals.stopped_child, 1);
        assert_eq!(snap.totals.abandoned_now, 2);
        assert_eq!(snap.graceful_deadline_ms, 30_000);
        assert_eq!(
            (
                snap.vhosts[0].abandoned_timeout_ms,
                snap.vhosts[0].stopped_cgi,
                snap.vhosts[0].stopped_child
            ),
            (5_000, 3, 1)
        );
        let find = |state: ShownState, ms: Option<u64>| {
            snap.connections
                .iter()
                .find(|c| c.state == state && c.abandoned_ms == ms)
                .map(|c| c.stopped)
        };
        assert_eq!(
            find(ShownState::ForceClosed, Some(8_000)),
            Some(Some(Stop::CgiKill))
        );
        assert_eq!(
            find(ShownState::CloseWait, Some(5_000)),
            Some(Some(Stop::CgiTerm))
        );
        assert_eq!(find(ShownState::Keepalive, Some(4_000)), Some(None));
        let rows = crate::status::select::ordered(&snap);
        let order: Vec<(ShownState, Option<u64>)> =
            rows.iter().map(|c| (c.state, c.abandoned_ms)).collect();
        assert_eq!(
            order,
            [
                (ShownState::CloseWait, Some(5_000)),
                (ShownState::CloseWait, None),
                (ShownState::ForceClosed, Some(8_000)),
                (ShownState::Keepalive, Some(4_000)),
            ]
        );
    }

    #[test]
    fn old_generation_and_hung_owners_are_classified() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = t.register_vhost("x.test", 80);
        t.vhost(v)
            .unwrap()
            .close_wait_timeout_ms
            .store(30_000, Relaxed);
        t.header().hung_child_timeout_ms.store(10_000, Relaxed);
        t.header().generation.store(2, Relaxed);
        t.claim_child(7, 1, 1, 50_000).unwrap(); // generation 1 < 2, checked in recently
        heap.stuck_connection(7, v, 42, 49_000);
        let snap = build(
            Some(&t),
            &ServerInfo::default(),
            50_000,
            Ok(vec![kernel_socket(42)]),
        );
        assert_eq!(snap.kernel.old_generation, 1);
        let later = build(
            Some(&t),
            &ServerInfo::default(),
            70_000,
            Ok(vec![kernel_socket(42)]),
        );
        assert_eq!(later.kernel.hung, 1, "no check-in for 20 s > 10 s");
    }

    /// Publishes one `LeakRow` the way the guard process must: clear `inode`, write the
    /// rest, store `inode` last (Release).
    #[allow(clippy::too_many_arguments)]
    fn publish_leak(
        t: &SharedTable,
        i: usize,
        inode: u64,
        kind: u32,
        pid: u32,
        comm: &[u8],
        closed: bool,
        since: u64,
    ) {
        use std::sync::atomic::{fence, Ordering::Release};
        let row = &t.header().leaks[i];
        row.inode.store(0, Relaxed);
        fence(Release);
        row.kind.store(kind, Relaxed);
        row.holder_pid.store(pid, Relaxed);
        let n = crate::table::shared::write_bytes(&row.holder_comm, comm);
        row.comm_len.store(n as u32, Relaxed);
        row.closed.store(u32::from(closed), Relaxed);
        row.since_mono_ms.store(since, Relaxed);
        row.inode.store(inode, Release);
    }

    fn socket_from(inode: u64, remote: &str, local: &str) -> KernelSocket {
        KernelSocket {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            ..kernel_socket(inode)
        }
    }

    const HOSTILE_COMM: &[u8] = b"<x>\"\n";

    /// A table with one tracked stuck connection (inode 42) and the guard process's list:
    /// 500 leaked (held by 4242, hostile comm), 501 backlog, 502 leaked and already closed
    /// (gone from the dump), 503 leaked with no holder found, 504 being rewritten (inode 0),
    /// 42 listed too (a tracked socket stays tracked). The dump: 42, 500, 501, 503, 505
    /// (on no list: untracked), 504.
    fn table_with_leaks(heap: &HeapTable, leaked_since: u64) -> Snapshot {
        let t = heap.table();
        let v = t.register_vhost("leak.test", 80);
        t.vhost(v)
            .unwrap()
            .close_wait_timeout_ms
            .store(30_000, Relaxed);
        t.claim_child(7, 0, 1, 20_000).unwrap();
        heap.stuck_connection(7, v, 42, 19_500);
        publish_leak(
            &t,
            0,
            500,
            leak_kind::LEAKED,
            4242,
            HOSTILE_COMM,
            false,
            leaked_since,
        );
        publish_leak(&t, 1, 501, leak_kind::BACKLOG, 0, b"", false, 15_000);
        publish_leak(&t, 2, 502, leak_kind::LEAKED, 4243, b"cron", true, 15_000);
        publish_leak(&t, 5, 503, leak_kind::LEAKED, 0, b"", false, leaked_since);
        publish_leak(&t, 6, 504, leak_kind::LEAKED, 4244, b"half", false, 15_000);
        t.header().leaks[6].inode.store(0, Relaxed); // a rewrite in progress
        publish_leak(&t, 7, 42, leak_kind::LEAKED, 4245, b"wrong", false, 15_000);
        build(
            Some(&t),
            &ServerInfo::default(),
            20_000,
            Ok(vec![
                kernel_socket(42),
                socket_from(500, "198.51.100.9:1234", "10.0.0.2:80"),
                socket_from(501, "[2001:db8::7]:4000", "[2001:db8::2]:443"),
                socket_from(503, "198.51.100.10:999", "10.0.0.2:8080"),
                kernel_socket(504),
                kernel_socket(505),
            ]),
        )
    }

    #[test]
    fn leak_rows_are_read_only_when_published() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        assert!(t.leak_rows().is_empty());
        publish_leak(
            &t,
            3,
            77,
            leak_kind::LEAKED,
            9,
            b"0123456789abcdefXYZ",
            true,
            5,
        );
        publish_leak(&t, 4, 78, leak_kind::BACKLOG, 0, b"", false, 6);
        t.header().leaks[4].inode.store(0, Relaxed);
        let rows = t.leak_rows();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!((r.inode, r.kind, r.holder_pid), (77, leak_kind::LEAKED, 9));
        // comm holds at most 16 bytes.
        assert_eq!(r.holder_comm, "0123456789abcdef");
        assert!(r.closed);
        assert_eq!(r.since_mono_ms, 5);
    }

    #[test]
    fn untracked_sockets_become_leaked_or_backlog_per_the_guard_list() {
        let heap = HeapTable::for_tests();
        let snap = table_with_leaks(&heap, 15_000);
        let k = &snap.kernel;
        assert!(k.available);
        assert_eq!((k.tracked, k.stuck, k.hung, k.old_generation), (1, 1, 0, 0));
        assert_eq!(k.leaked_count, 2, "{k:?}");
        assert_eq!(k.backlog, 1);
        // 504 (row being rewritten) and 505 (on no list).
        assert_eq!(k.untracked, 2);
        let sum: u64 = CloseWaitClass::ALL.iter().map(|&c| k.count(c)).sum();
        assert_eq!(sum, 6, "every socket of the dump in exactly one class");
        assert_eq!(
            k.leaked,
            vec![
                LeakedSocket {
                    client: "198.51.100.9:1234".into(),
                    local_port: 80,
                    inode: 500,
                    holder_pid: Some(4242),
                    holder_comm: "<x>\"\n".into(),
                    closed: false,
                },
                LeakedSocket {
                    client: "198.51.100.10:999".into(),
                    local_port: 8080,
                    inode: 503,
                    holder_pid: None,
                    holder_comm: String::new(),
                    closed: false,
                },
            ]
        );
        // The tracked socket keeps its class although the list names its inode too.
        assert_eq!(snap.connections[0].class, Some(CloseWaitClass::Stuck));
        // Leaked for 5 s: not yet a leak by the verdict's measure (10 s).
        assert_eq!(k.verdict, Verdict::Churn);
        // Without a table the guard's list is not there: everything untracked.
        let bare = build(
            None,
            &ServerInfo::default(),
            0,
            Ok(vec![kernel_socket(500)]),
        );
        assert_eq!(
            (
                bare.kernel.untracked,
                bare.kernel.leaked_count,
                bare.kernel.backlog
            ),
            (1, 0, 0)
        );
    }

    #[test]
    fn a_long_leaked_socket_makes_the_verdict_leak() {
        let heap = HeapTable::for_tests();
        let snap = table_with_leaks(&heap, 20_000 - LEAK_AFTER_MS);
        assert_eq!(snap.kernel.verdict, Verdict::Leak);
        // The oldest age stays the tracked sockets' (0.5 s here).
        assert_eq!(snap.kernel.oldest_close_wait_ms, 500);
    }

    #[test]
    fn every_format_shows_the_leaked_holder_and_the_backlog() {
        use crate::status::{auto, html, json, metrics};
        let heap = HeapTable::for_tests();
        let snap = table_with_leaks(&heap, 15_000);

        let a = auto::render(&snap);
        assert!(
            a.contains("\nKernelCloseWaitLeaked: 2\nKernelCloseWaitBacklog: 1\n"),
            "{a}"
        );
        assert!(a.contains("\nKernelCloseWaitUntracked: 2\n"), "{a}");
        assert!(a.contains(
            "\nLeaked: client=198.51.100.9:1234 port=80 holder=4242 comm=<x>\"_ closed=0\n"
        ));
        assert!(
            a.contains("\nLeaked: client=198.51.100.10:999 port=8080 holder=0 comm= closed=0\n")
        );
        assert!(
            a.lines().all(|l| l.contains(": ") || l.ends_with(':')),
            "{a}"
        );

        let q = crate::status::query::Query::default();
        let sel = crate::status::select::select(&snap, &q);
        let j = json::render(&snap, &sel, &q);
        assert!(j.contains("\"untracked\":2,\"backlog\":1,"), "{j}");
        assert!(j.contains(
            "{\"client\":\"198.51.100.9:1234\",\"local_port\":80,\"inode\":500,\
             \"holder_pid\":4242,\"holder_comm\":\"\\u003cx\\u003e\\\"\\n\",\"closed\":false}"
        ));
        assert!(j.contains("\"holder_pid\":null,\"holder_comm\":\"\",\"closed\":false}"));
        assert!(
            j.contains("\"leaked\":2,\"backlog\":1,\"untracked\":2}"),
            "{j}"
        );

        let m = metrics::render(&snap);
        for line in [
            "socket_guard_kernel_close_wait{kind=\"untracked\"} 2",
            "socket_guard_kernel_close_wait{kind=\"leaked\"} 2",
            "socket_guard_kernel_close_wait{kind=\"backlog\"} 1",
            "socket_guard_close_wait_sockets{class=\"leaked\"} 2",
            "socket_guard_close_wait_sockets{class=\"backlog\"} 1",
            "socket_guard_close_wait_sockets{class=\"untracked\"} 2",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line}\n{m}");
        }
        assert!(
            !m.contains("4242") && !m.contains("<x>"),
            "no per-socket series"
        );

        let h = html::render(&snap, &sel, &q);
        assert!(
            h.contains("1 tracked, 2 untracked, 2 leaked, 1 backlog."),
            "{h}"
        );
        assert!(h.contains(
            "<td class=\"n\">4242</td><td><code>&lt;x&gt;&quot;\n</code></td><td>no</td>"
        ));
        assert!(!h.contains("<x>"));
        assert!(h.contains("id=\"backlog-now\">1 socket never accepted"));
    }
}
