//! The scan: one kernel dump per interval for the whole server, joined to the table.
//!
//! Marks when each tracked connection was first seen in CLOSE_WAIT, ends the period of those
//! no longer there, and flags their owners' child rows so that only children with something to
//! do walk their slots. A scan that finds no CLOSE_WAIT socket while the scanner left none
//! marked does not walk the table at all: its cost does not grow with the number of healthy
//! connections.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::{Acquire, Relaxed};

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
        let mut marked = HashSet::new();
        for (i, slot) in table.slots().iter().enumerate() {
            let lease = slot.lease();
            if !lease.state.is_open() {
                continue;
            }
            let inode = slot.inode.load(Relaxed);
            if slot.lease() != lease {
                continue; // changed hands while we read its inode
            }
            if inode != 0 && inodes.contains(&inode) {
                if slot.flags.load(Relaxed) & FLAG_FORCE_CLOSED != 0 {
                    continue; // already shut down; the kernel just has not moved it on yet
                }
                if table.mark_close_wait(slot, lease.tag, now_mono_ms) {
                    out.newly_marked += 1;
                }
                marked.insert((i, lease.tag));
                if let Some(&row) = rows.get(&lease.pid) {
                    table.children()[row].pending.store(1, Relaxed);
                }
            } else if table.end_close_wait(slot, lease.tag) {
                out.cleared += 1;
            }
        }
        self.marked = marked;
        self.walked = true;
        out
    }
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
