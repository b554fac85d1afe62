//! The connection slot protocol: claim, state changes, release, reclaim.
//!
//! Every step is one compare-and-swap of the slot's lease (`lease.rs`) plus stores that only
//! the lease's holder makes, each followed by a crash point. Whatever store a process dies
//! after, the slot's lease still names it, so a reclaimer that finds the pid dead takes the
//! lease over and finishes the job: a claim becomes a reclaimed lifetime, an Ending is
//! counted (once) and freed. docs/ARCHITECTURE.md has the state machine.

use std::sync::atomic::Ordering::Relaxed;

use super::crash;
use super::layout::Slot;
use super::lease::{End, Lease};
use super::state::SlotState;
use super::SharedTable;

/// A claimed slot: its index and the lease tag it was claimed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHandle {
    pub index: u32,
    pub tag: u32,
    pub pid: u32,
}

impl SharedTable {
    /// Claims a free slot for a new connection owned by `pid`, probing from `hint` so that
    /// processes spread out instead of all contending for slot 0. `None` when the table is
    /// full; the connection is then served untracked and counted as such.
    pub fn claim(&self, pid: u32, hint: usize, now_mono_ms: u64) -> Option<SlotHandle> {
        let slots = self.slots();
        let n = slots.len();
        for i in 0..n {
            let index = (hint + i) % n;
            let slot = &slots[index];
            let free = slot.lease();
            if free.state != SlotState::Free {
                continue;
            }
            let mine = free.claimed_by(pid);
            if slot.swap_lease(free, mine) {
                slot.init_claimed(now_mono_ms);
                return Some(SlotHandle {
                    index: index as u32,
                    tag: mine.tag,
                    pid,
                });
            }
        }
        self.counters().untracked.fetch_add(1, Relaxed);
        crash::point();
        None
    }

    /// The slot behind a handle, if the handle's claim still holds it.
    pub fn owned(&self, handle: SlotHandle) -> Option<&Slot> {
        let slot = self.slots().get(handle.index as usize)?;
        let l = slot.lease();
        (l.tag == handle.tag && l.pid == handle.pid && l.state.is_held()).then_some(slot)
    }

    /// Moves the connection to `state` (its fields, written after `claim`, are published by it).
    /// Nothing is written when it is in that state already (a lingering close after a request
    /// that closed the connection: log_transaction set `closing` before).
    pub fn set_state(&self, handle: SlotHandle, state: SlotState, now_mono_ms: u64) {
        self.transition(handle, state, || now_mono_ms);
    }

    /// `set_state` for the hooks: the clock is read only when the state changes.
    pub fn enter(&self, handle: SlotHandle, state: SlotState) {
        self.transition(handle, state, crate::clock::mono_ms);
    }

    fn transition(&self, handle: SlotHandle, state: SlotState, now: impl FnOnce() -> u64) {
        let Some(slot) = self.slots().get(handle.index as usize) else {
            return;
        };
        let l = slot.lease();
        if l.tag != handle.tag || l.pid != handle.pid || !l.state.is_held() || l.state == state {
            return;
        }
        slot.state_since_mono_ms.store(now(), Relaxed);
        crash::point();
        // Only the holder changes a held lease's state; the swap fails if a reclaimer took it.
        if slot.swap_lease(l, l.with_state(state)) {
            self.note_transition(handle.index as usize, state);
        }
    }

    /// Frees a slot when its connection ends normally. False if the handle no longer held it.
    pub fn release(&self, handle: SlotHandle) -> bool {
        let Some(slot) = self.slots().get(handle.index as usize) else {
            return false;
        };
        let l = slot.lease();
        if l.tag != handle.tag || l.pid != handle.pid || !l.state.is_held() {
            return false;
        }
        self.end_close_wait(slot, handle.tag);
        // The in-flight bit, if set, is left to the scanner's sweep.
        slot.end(l, End::Closed)
    }

    /// Frees every slot still held by `pid` (the child is exiting; atomics only: prefork runs
    /// this inside a signal handler). Returns how many.
    pub fn release_all_of(&self, pid: u32) -> u64 {
        let mut n = 0;
        for slot in self.slots() {
            let l = slot.lease();
            if l.pid == pid && l.state.is_held() {
                self.end_close_wait(slot, l.tag);
                n += u64::from(slot.end(l, End::Closed));
            }
        }
        n
    }

    /// Frees every slot whose lease names a process `alive` says is gone, taking the lease
    /// over as `me` first (so one reclaimer finishes each). Held slots become reclaimed
    /// lifetimes; half-finished endings are finished as what they were. Returns slots freed.
    pub fn reclaim_slots(&self, me: u32, mut alive: impl FnMut(u32) -> bool) -> u64 {
        let mut freed = 0;
        for slot in self.slots() {
            let l = slot.lease();
            if l.state == SlotState::Free || (l.pid != 0 && alive(l.pid)) {
                continue;
            }
            let ending = if l.state.is_ending() {
                l
            } else {
                l.with_state(SlotState::EndingReclaimed)
            };
            let taken = Lease { pid: me, ..ending };
            if slot.swap_lease(l, taken) {
                self.end_close_wait(slot, l.tag);
                freed += u64::from(slot.finish_ending(taken));
            }
        }
        freed
    }
}

impl Slot {
    /// Resets the per-connection fields of a just-claimed slot (the lease holder only).
    fn init_claimed(&self, now_mono_ms: u64) {
        for field in [&self.accept_mono_ms, &self.state_since_mono_ms] {
            field.store(now_mono_ms, Relaxed);
            crash::point();
        }
        // acked_bytes, abandoned_since_mono_ms and inode are not reset: each means something
        // only under a flag or a mark of this claim (FLAG_SAMPLED, FLAG_ABANDONED, the
        // CLOSE_WAIT mark), which the writer sets after it, and both start cleared.
        self.requests.store(0, Relaxed);
        crash::point();
        self.flags.store(0, Relaxed);
        crash::point();
        self.write_text(b"", b"");
    }
}
