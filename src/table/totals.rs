//! Server totals, derived rather than stored: from the slots (accepted, closed, reclaimed,
//! open) and as sums of the vhost rows (requests, force-closed, reported, stopped). A process
//! that dies between two stores therefore cannot leave a total that disagrees with its parts:
//! `accepted = closed + reclaimed + open + ending + untracked` holds by construction (`ending`:
//! lifetimes being ended right now, or left half-ended by a process that died, until a
//! reclaimer finishes them).

use std::sync::atomic::Ordering::Relaxed;

use super::layout::Slot;
use super::state::SlotState;
use super::SharedTable;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub accepted: u64,
    pub closed: u64,
    pub reclaimed: u64,
    /// Slots held by a live claim (open connections, tracked).
    pub open: u64,
    /// Lifetimes being ended, not yet counted as closed or reclaimed.
    pub ending: u64,
    pub untracked: u64,
    pub requests: u64,
    pub force_closed_guard: u64,
    pub force_closed_rescue: u64,
    pub reported: u64,
    pub stopped_cgi: u64,
    pub stopped_child: u64,
}

/// One slot's share of the totals: (closed, reclaimed, lifetimes not yet counted in them).
fn slot_share(slot: &Slot) -> (u64, u64, u64) {
    // A lease that changed while the counts were read means a transition in between:
    // read again (bounded; the last read is used if it keeps changing).
    let mut share = (0, 0, 0);
    for _ in 0..4 {
        let before = slot.lease();
        let closed = slot.ended_closed.load(Relaxed);
        let reclaimed = slot.ended_reclaimed.load(Relaxed);
        let pending = match before.state {
            SlotState::Free => 0,
            s if s.is_ending() && slot.lifetime_counted(before.tag) => 0,
            _ => 1,
        };
        share = (closed, reclaimed, pending);
        if slot.lease() == before {
            break;
        }
    }
    share
}

impl SharedTable {
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            untracked: self.counters().untracked.load(Relaxed),
            ..Totals::default()
        };
        for slot in self.slots() {
            let (closed, reclaimed, pending) = slot_share(slot);
            t.closed += closed;
            t.reclaimed += reclaimed;
            t.accepted += closed + reclaimed + pending;
            let held = slot.lease().state.is_held();
            t.open += u64::from(held);
            t.ending += u64::from(pending == 1 && !held);
        }
        t.accepted += t.untracked;
        self.add_vhost_sums(&mut t);
        t
    }

    /// The totals that are sums of the vhost rows (requests, force-closed, reported,
    /// stopped), without walking the slots; the other fields stay 0.
    pub fn vhost_sums(&self) -> Totals {
        let mut t = Totals::default();
        self.add_vhost_sums(&mut t);
        t
    }

    fn add_vhost_sums(&self, t: &mut Totals) {
        let count = self.header().vhost_count.load(Relaxed) as usize;
        for v in self.vhosts().iter().take(count) {
            t.requests += v.requests.load(Relaxed);
            t.force_closed_guard += v.force_closed_guard.load(Relaxed);
            t.force_closed_rescue += v.force_closed_rescue.load(Relaxed);
            t.reported += v.reported.load(Relaxed);
            t.stopped_cgi += v.stopped_cgi.load(Relaxed);
            t.stopped_child += v.stopped_child.load(Relaxed);
        }
    }
}
