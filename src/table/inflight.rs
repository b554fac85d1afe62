//! Which slots may hold a connection in flight: reading its first request or handling one.
//! Those are the only sockets that can sit in CLOSE_WAIT unnoticed — Apache polls an idle
//! keep-alive or lingering-close socket itself and closes it when the client does — so they
//! are what the scan looks up each interval.
//!
//! One bit per slot, in words after the slots, so the scan reads 8 bytes per 64 slots
//! instead of walking 256-byte slots: at 100,000 idle connections that is 12.5 KB rather
//! than 25.6 MB. The holder only ever sets its bit, on entering reading or handling (after the
//! lease swap); the scanner clears the bits of slots it finds not in flight (`sweep`), so a
//! keep-alive request costs one atomic operation, not two. The bits are a hint: the scanner
//! reads each flagged slot's lease. A process that dies between its lease swap and its bit
//! leaves the slot of a dead process, which is reclaimed; and the scan's periodic full dump
//! backstops anything a bit missed.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

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
    /// Records that slot `index` moved to state `to` (its holder, after the lease swap).
    /// Release: a scanner that clears the bit after this sees the swap (`sweep`).
    pub(super) fn note_transition(&self, index: usize, to: SlotState) {
        if !to.in_flight() {
            return;
        }
        if let Some(word) = self.inflight().get(index / 64) {
            word.fetch_or(1 << (index % 64), Release);
            crash::point();
        }
    }

    /// The slots in flight now, in order; the bits of the other flagged slots are cleared
    /// (the scanner's job). A bit is cleared first and the lease read again after: a holder
    /// that entered reading or handling before the clear is seen then (its set preceded the
    /// clear), and one that does so after sets the bit again.
    pub fn sweep_in_flight(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let slots = self.slots();
        let in_flight = |i: usize| slots.get(i).is_some_and(|s| s.lease().state.in_flight());
        for (w, word) in self.inflight().iter().enumerate() {
            let mut bits = word.load(Relaxed);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                let bit = bits & bits.wrapping_neg();
                bits &= bits - 1;
                if in_flight(i) {
                    out.push(i);
                    continue;
                }
                // Where the holder may enter handling between our read and our clear.
                crash::overtaken();
                word.fetch_and(!bit, AcqRel);
                if in_flight(i) {
                    word.fetch_or(bit, Release);
                    out.push(i);
                }
            }
        }
        out
    }

    /// The slots whose bit is set (in flight, or not swept since), without changing any.
    pub fn flagged_in_flight(&self) -> Vec<usize> {
        let n = self.nslots();
        let mut out = Vec::new();
        for (w, word) in self.inflight().iter().enumerate() {
            let mut bits = word.load(Acquire);
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
        assert!(t.sweep_in_flight().is_empty(), "claiming: no tuple yet");
        t.set_state(a, SlotState::Reading, 2);
        t.set_state(b, SlotState::Reading, 2);
        assert_eq!(t.sweep_in_flight(), vec![64, 129]);
        t.set_state(a, SlotState::Handling, 3);
        t.set_state(b, SlotState::Keepalive, 3);
        assert_eq!(
            t.flagged_in_flight(),
            vec![64, 129],
            "the holder never clears"
        );
        assert_eq!(
            t.sweep_in_flight(),
            vec![129],
            "idle keep-alive is Apache's"
        );
        assert_eq!(
            t.flagged_in_flight(),
            vec![129],
            "the sweep cleared the idle one"
        );
        t.set_state(b, SlotState::Handling, 4);
        t.set_state(a, SlotState::Closing, 4);
        assert_eq!(t.sweep_in_flight(), vec![64]);
        assert!(t.release(b));
        assert!(t.sweep_in_flight().is_empty(), "released while handling");
        assert!(t.flagged_in_flight().is_empty());
    }

    #[test]
    fn freed_slots_are_swept_whoever_frees_them() {
        let heap = HeapTable::new(8, 2, 1);
        let t = heap.table();
        for pid in [5, 6] {
            let h = t.claim(pid, 0, 1).unwrap();
            t.set_state(h, SlotState::Handling, 2);
        }
        assert_eq!(t.sweep_in_flight().len(), 2);
        assert_eq!(t.release_all_of(5), 1);
        assert_eq!(t.sweep_in_flight().len(), 1);
        assert_eq!(t.reclaim_slots(9, |pid| pid != 6), 1);
        assert!(t.sweep_in_flight().is_empty(), "reclaimed");
    }

    /// The holder enters handling after the sweep read its lease (keepalive) and before the
    /// sweep clears the bit: the sweep's second read of the lease finds it, and the bit stays.
    #[test]
    fn a_bit_cleared_while_its_holder_enters_handling_is_not_lost() {
        let heap = HeapTable::new(8, 2, 1);
        let t = heap.table();
        let h = t.claim(5, 3, 1).unwrap();
        t.set_state(h, SlotState::Handling, 2);
        t.set_state(h, SlotState::Keepalive, 3);
        crash::overtake_next_read(move || t.set_state(h, SlotState::Handling, 4));
        assert_eq!(t.sweep_in_flight(), vec![3]);
        assert_eq!(t.flagged_in_flight(), vec![3], "the bit is set again");
    }
}
