//! The scan: one kernel dump per interval for the whole server, joined to the table.
//!
//! Marks when each tracked connection was first seen in CLOSE_WAIT, ends the period of those
//! no longer there, flags their owners' child rows so that only children with something to
//! do walk their slots, and counts those past their timeout in the leak report (`leaks`).
//! A scan that finds no CLOSE_WAIT socket while the scanner left none marked does not walk
//! the table at all: its cost does not grow with the number of healthy connections.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::leaks;
use crate::config::{MAX_SCAN_INTERVAL_MS, MIN_SCAN_INTERVAL_MS};
use crate::kernel::KernelSocket;
use crate::table::slot::FLAG_FORCE_CLOSED;
use crate::table::{SharedTable, ROW_CLAIMING};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Whether the table was walked at all.
    pub walked: bool,
    /// Tracked connections seen in CLOSE_WAIT for the first time.
    pub newly_marked: usize,
    /// Marked connections no longer in CLOSE_WAIT.
    pub cleared: usize,
    /// Tracked connections in CLOSE_WAIT after the scan (marked, not yet shut down).
    pub close_wait: usize,
    /// CLOSE_WAIT sockets in the dump that match no tracked connection.
    pub untracked: usize,
    /// Connections counted in the leak report by this scan (`leaks`).
    pub leaks_counted: usize,
}

/// The scanner's memory between scans: which connections it left marked. Kept in the
/// scanning process, not in shared memory, so nothing stored can drift; a new scanner walks
/// the table once to learn the marks a previous one left.
#[derive(Default)]
pub struct Scanner {
    marked: HashSet<(usize, u32)>,
    walked: bool,
}

impl Scanner {
    /// Applies one kernel dump (`close_wait`: CLOSE_WAIT sockets on our ports) to the table.
    pub fn apply(
        &mut self,
        table: &SharedTable,
        close_wait: &[KernelSocket],
        now_mono_ms: u64,
    ) -> ScanOutcome {
        let mut out = ScanOutcome::default();
        if close_wait.is_empty() && self.walked && self.marked.is_empty() {
            return out;
        }
        out.walked = true;
        let inodes: HashSet<u64> = close_wait
            .iter()
            .map(|k| k.inode)
            .filter(|i| *i != 0)
            .collect();
        let rows = published_rows(table);
        let grace = leak_grace_ms(table);
        let mut marked = HashSet::new();
        // Slots found in the dump (a socket belongs to one connection: no set needed).
        let mut matched = 0;
        for (i, slot) in table.slots().iter().enumerate() {
            let lease = slot.lease();
            if !lease.state.is_open() {
                continue;
            }
            let inode = slot.inode.load(Relaxed);
            let flags = slot.flags.load(Relaxed);
            if slot.lease() != lease {
                continue; // changed hands while we read its inode
            }
            let in_dump = inode != 0 && inodes.contains(&inode);
            matched += usize::from(in_dump);
            // A force-closed socket still in the dump: the kernel has not moved it on yet.
            if in_dump && flags & FLAG_FORCE_CLOSED == 0 {
                if table.mark_close_wait(slot, lease.tag, now_mono_ms) {
                    out.newly_marked += 1;
                }
                marked.insert((i, lease.tag));
                if let Some(&row) = rows.get(&lease.pid) {
                    table.children()[row].pending.store(1, Relaxed);
                }
            } else if !in_dump && table.end_close_wait(slot, lease.tag) {
                out.cleared += 1;
            }
            let counted = leaks::count_if_overdue(table, slot, lease, flags, now_mono_ms, grace);
            out.leaks_counted += usize::from(counted);
        }
        out.close_wait = marked.len();
        out.untracked = close_wait.len().saturating_sub(matched);
        self.marked = marked;
        self.walked = true;
        out
    }
}

/// How long past its timeout a marked connection with no verdict waits to be counted in the
/// leak report: one scan interval (the owner acts at the timeout), at least `MIN_GRACE_MS`.
fn leak_grace_ms(table: &SharedTable) -> u64 {
    let interval = table.header().scan_interval_ms.load(Relaxed);
    interval
        .clamp(MIN_SCAN_INTERVAL_MS, MAX_SCAN_INTERVAL_MS)
        .max(leaks::MIN_GRACE_MS)
}

/// pid → row index of the children whose rows are published.
fn published_rows(table: &SharedTable) -> HashMap<u32, usize> {
    table
        .children()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.pid.load(Acquire) {
            pid if pid == 0 || pid & ROW_CLAIMING != 0 => None,
            pid => Some((pid, i)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AutoClose;
    use crate::kernel::TCP_CLOSE_WAIT;
    use crate::table::slot::{FLAG_ABANDONED, FLAG_REPORTED};
    use crate::table::HeapTable;

    fn dump(inodes: &[u64]) -> Vec<KernelSocket> {
        inodes
            .iter()
            .map(|&inode| KernelSocket {
                local: "10.0.0.2:80".parse().unwrap(),
                remote: "10.0.0.1:5000".parse().unwrap(),
                state: TCP_CLOSE_WAIT,
                recv_q: 1,
                inode,
                cookie: 0,
                uid: 33,
            })
            .collect()
    }

    fn listed(t: &SharedTable, vhost: u32) -> Vec<u64> {
        t.leak_report(vhost).paths.iter().map(|e| e.count).collect()
    }

    #[test]
    fn each_connection_past_its_timeout_is_counted_once_whatever_happens_to_it() {
        let heap = HeapTable::new(8, 2, 1);
        let t = heap.table();
        t.header().scan_interval_ms.store(200, Relaxed);
        let on = heap.vhost_with("on.test", AutoClose::On, 1_000);
        let report = heap.vhost_with("report.test", AutoClose::Report, 1_000);
        let a = heap.stuck_connection(7, on, 41, 10_000);
        let b = heap.stuck_connection(7, report, 42, 10_000);
        let mut scanner = Scanner::default();
        // Within the timeout: two tracked in CLOSE_WAIT, one socket nobody tracks.
        let out = scanner.apply(&t, &dump(&[41, 42, 99]), 10_500);
        let seen = (out.close_wait, out.untracked, out.leaks_counted);
        assert_eq!(seen, (2, 1, 0));
        // At the timeout the owner closed one (its period ended, the kernel moved it on)
        // and reported the other: the next scan counts both.
        let sa = t.owned(a).unwrap();
        sa.flags
            .fetch_or(FLAG_FORCE_CLOSED | FLAG_ABANDONED, Relaxed);
        t.end_close_wait(sa, a.tag);
        let sb = t.owned(b).unwrap();
        sb.flags.fetch_or(FLAG_REPORTED | FLAG_ABANDONED, Relaxed);
        let out = scanner.apply(&t, &dump(&[42, 99]), 11_100);
        assert_eq!(
            (out.close_wait, out.untracked, out.leaks_counted),
            (1, 1, 2)
        );
        assert_eq!((listed(&t, on), listed(&t, report)), (vec![1], vec![1]));
        // Never again: not by this scanner, not by a new one (a guard process restarted).
        assert_eq!(scanner.apply(&t, &dump(&[42]), 20_000).leaks_counted, 0);
        let mut next = Scanner::default();
        assert_eq!(next.apply(&t, &dump(&[42]), 30_000).leaks_counted, 0);
        assert_eq!((listed(&t, on), listed(&t, report)), (vec![1], vec![1]));
    }

    #[test]
    fn a_connection_nobody_acts_on_is_counted_one_grace_after_its_timeout() {
        let heap = HeapTable::new(8, 2, 1);
        let t = heap.table();
        t.header().scan_interval_ms.store(200, Relaxed);
        let off = heap.vhost_with("off.test", AutoClose::Off, 1_000);
        heap.stuck_connection(7, off, 41, 10_000);
        let mut scanner = Scanner::default();
        // The grace is one interval, at least MIN_GRACE_MS (1 s): a hung owner's
        // connection, or one whose owner has not judged it yet, waits for it.
        for now in [10_500, 11_000, 11_999] {
            assert_eq!(
                scanner.apply(&t, &dump(&[41]), now).leaks_counted,
                0,
                "{now}"
            );
        }
        assert_eq!(scanner.apply(&t, &dump(&[41]), 12_000).leaks_counted, 1);
        assert_eq!(listed(&t, off), [1]);
    }
}
