//! Which slots hold a connection in flight: reading its first request or handling one. Those
//! are the only sockets that can sit in CLOSE_WAIT unnoticed — Apache polls an idle
//! keep-alive or lingering-close socket itself and closes it when the client does — so they
//! are what the scan looks up each interval.
//!
//! One bit per slot, in words after the slots, so the scan reads 8 bytes per 64 slots
//! instead of walking 300-byte slots: at 100,000 idle connections that is 12.5 KB in cache
//! rather than 30 MB. The bit is a hint written by the lease's holder after each transition
//! (set on entering reading/handling, cleared on leaving them, cleared before the slot is
//! freed so that it can never clear a later claim's bit). A process that dies between its
//! lease swap and the bit leaves a stale bit: set on an idle slot (the scan checks the lease
//! and skips it), or clear on a dead process's slot (reclaimed anyway). The scan's periodic
//! full dump backstops anything a bit missed.

use std::sync::atomic::Ordering::Relaxed;

use super::crash;
use super::state::SlotState;
use super::SharedTable;

impl SlotState {
    /// Apache is not polling the socket: the connection waits for or runs a request.
    pub fn in_flight(self) -> bool {
        matches!(self, SlotState::Reading | SlotState::Handling)
    }
}

impl SharedTable {
    /// Records that slot `index` moved from state `from` to `to` (its holder, after the swap).
    /// One atomic operation when in-flight-ness changes, none otherwise.
    pub(super) fn note_transition(&self, index: usize, from: SlotState, to: SlotState) {
        match (from.in_flight(), to.in_flight()) {
            (false, true) => self.set_in_flight(index, true),
            (true, false) => self.set_in_flight(index, false),
            _ => {}
        }
    }

    pub(super) fn set_in_flight(&self, index: usize, on: bool) {
        let Some(word) = self.inflight().get(index / 64) else {
            return;
        };
        let bit = 1u64 << (index % 64);
        if on {
            word.fetch_or(bit, Relaxed);
        } else {
            word.fetch_and(!bit, Relaxed);
        }
        crash::point();
    }

    /// Indexes of the slots whose bit is set, in order (stale bits included: check the
    /// lease). Reads one word per 64 slots.
    pub fn in_flight_slots(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let n = self.nslots();
        for (w, word) in self.inflight().iter().enumerate() {
            let mut bits = word.load(Relaxed);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if i < n {
                    out.push(i);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HeapTable;

    #[test]
    fn a_connection_is_in_flight_while_reading_or_handling() {
        let heap = HeapTable::new(130, 2, 1);
        let t = heap.table();
        let a = t.claim(5, 129, 1).unwrap();
        let b = t.claim(5, 64, 1).unwrap();
        assert!(t.in_flight_slots().is_empty(), "claiming: no tuple yet");
        t.set_state(a, SlotState::Reading, 2);
        t.set_state(b, SlotState::Reading, 2);
        assert_eq!(t.in_flight_slots(), vec![64, 129]);
        t.set_state(a, SlotState::Handling, 3);
        t.set_state(b, SlotState::Keepalive, 3);
        assert_eq!(
            t.in_flight_slots(),
            vec![129],
            "idle keep-alive is Apache's"
        );
        t.set_state(b, SlotState::Handling, 4);
        t.set_state(a, SlotState::Closing, 4);
        assert_eq!(t.in_flight_slots(), vec![64]);
        assert!(t.release(b));
        assert!(t.in_flight_slots().is_empty(), "released while handling");
    }

    #[test]
    fn freed_slots_leave_no_bit_whoever_frees_them() {
        let heap = HeapTable::new(8, 2, 1);
        let t = heap.table();
        for pid in [5, 6] {
            let h = t.claim(pid, 0, 1).unwrap();
            t.set_state(h, SlotState::Handling, 2);
        }
        assert_eq!(t.in_flight_slots().len(), 2);
        assert_eq!(t.release_all_of(5), 1);
        assert_eq!(t.in_flight_slots().len(), 1);
        assert_eq!(t.reclaim_slots(9, |pid| pid != 6), 1);
        assert!(t.in_flight_slots().is_empty(), "reclaimed");
    }
}
