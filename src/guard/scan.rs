//! The scan: one kernel dump per interval for the whole server, joined to the table.
//!
//! Marks when each tracked connection was first seen in CLOSE_WAIT, ends the period of those
//! no longer there, and flags their owners' child rows so that only children with something to
//! do walk their slots. A scan that finds no CLOSE_WAIT socket and has none marked does not
//! walk the table at all: its cost does not grow with the number of healthy connections.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::kernel::KernelSocket;
use crate::table::slot::FLAG_FORCE_CLOSED;
use crate::table::state::ConnState;
use crate::table::SharedTable;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Whether the table was walked at all.
    pub walked: bool,
    /// Tracked connections seen in CLOSE_WAIT for the first time.
    pub newly_marked: usize,
    /// Marked connections no longer in CLOSE_WAIT.
    pub cleared: usize,
}

/// Applies one kernel dump (`close_wait`: CLOSE_WAIT sockets on our ports) to the table.
pub fn apply(table: &SharedTable, close_wait: &[KernelSocket], now_mono_ms: u64) -> ScanOutcome {
    let mut out = ScanOutcome::default();
    if close_wait.is_empty() && table.header().close_wait_marked.load(Relaxed) == 0 {
        return out;
    }
    out.walked = true;
    let inodes: HashSet<u64> = close_wait
        .iter()
        .map(|k| k.inode)
        .filter(|i| *i != 0)
        .collect();
    let rows: HashMap<u32, usize> = table
        .children()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.pid.load(Acquire) {
            0 => None,
            pid => Some((pid, i)),
        })
        .collect();
    for slot in table.slots() {
        let state = slot.state.load(Acquire);
        if state == ConnState::Free as u32 || state == ConnState::Claiming as u32 {
            continue;
        }
        let inode = slot.inode.load(Relaxed);
        if inode != 0 && inodes.contains(&inode) {
            if slot.flags.load(Relaxed) & FLAG_FORCE_CLOSED != 0 {
                continue; // already shut down; the kernel just has not moved it on yet
            }
            if table.mark_close_wait(slot, now_mono_ms) {
                out.newly_marked += 1;
            }
            if let Some(&row) = rows.get(&slot.owner_pid.load(Relaxed)) {
                table.children()[row].pending.store(1, Relaxed);
            }
        } else if slot.close_wait_since_mono_ms.load(Relaxed) != 0 {
            table.record_close_wait_end(slot);
            out.cleared += 1;
        }
    }
    out
}
