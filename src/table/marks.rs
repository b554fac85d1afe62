//! CLOSE_WAIT marks: when a scan first saw a connection's socket in CLOSE_WAIT.
//!
//! A mark carries the claim tag of the connection it was made for: `tag << 40 | ms`. A mark
//! whose tag is not the slot's current one belongs to an earlier connection of the slot (the
//! scan raced with a release and a new claim, or a process died before clearing it) and
//! counts as no mark at all, so a reused slot never inherits a CLOSE_WAIT period and nobody
//! has to clear marks at claim time. Only the scanner sets marks; anyone ends them.

use std::sync::atomic::Ordering::{AcqRel, Acquire};

use super::crash;
use super::layout::Slot;
use super::lease::TAG_MASK;
use super::SharedTable;

const MS_BITS: u32 = 40;
const MS_MASK: u64 = (1 << MS_BITS) - 1;

fn pack(tag: u32, ms: u64) -> u64 {
    ((tag & TAG_MASK) as u64) << MS_BITS | (ms.max(1) & MS_MASK)
}

fn tag_of(mark: u64) -> u32 {
    (mark >> MS_BITS) as u32
}

impl Slot {
    /// When the connection claimed with `tag` was first seen in CLOSE_WAIT, if it was.
    pub fn close_wait_since(&self, tag: u32) -> Option<u64> {
        let m = self.close_wait_mark.load(Acquire);
        (m != 0 && tag_of(m) == tag & TAG_MASK).then_some(m & MS_MASK)
    }

    /// Restarts the period of `tag`'s connection at `now` if it still started at `since`
    /// (a half-closed client that is still reading).
    pub fn restart_close_wait(&self, tag: u32, since: u64, now: u64) -> bool {
        let ok = self
            .close_wait_mark
            .compare_exchange(pack(tag, since), pack(tag, now), AcqRel, Acquire)
            .is_ok();
        if ok {
            crash::point();
        }
        ok
    }
}

impl SharedTable {
    /// Starts the CLOSE_WAIT period of `tag`'s connection unless it has one. True if this call
    /// started it. A mark of an older claim is simply replaced.
    pub fn mark_close_wait(&self, slot: &Slot, tag: u32, now_mono_ms: u64) -> bool {
        loop {
            let cur = slot.close_wait_mark.load(Acquire);
            if cur != 0 && tag_of(cur) == tag & TAG_MASK {
                return false;
            }
            if slot
                .close_wait_mark
                .compare_exchange(cur, pack(tag, now_mono_ms), AcqRel, Acquire)
                .is_ok()
            {
                crash::point();
                return true;
            }
        }
    }

    /// Ends the CLOSE_WAIT period of `tag`'s connection, if it has one, and adds its length
    /// to the histogram: exactly once per period, whichever path gets here first.
    pub fn end_close_wait(&self, slot: &Slot, tag: u32) -> bool {
        let cur = slot.close_wait_mark.load(Acquire);
        if cur == 0 || tag_of(cur) != tag & TAG_MASK {
            return false;
        }
        if slot
            .close_wait_mark
            .compare_exchange(cur, 0, AcqRel, Acquire)
            .is_err()
        {
            return false;
        }
        crash::point();
        let since = cur & MS_MASK;
        self.record_close_wait_duration(crate::clock::mono_ms().saturating_sub(since));
        true
    }
}
