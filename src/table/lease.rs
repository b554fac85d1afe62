//! A slot's lease: its state, claim tag and owner pid in one 64-bit word, so that claiming,
//! changing state, ending and taking over a slot are each a single compare-and-swap. A process
//! that dies after any of them leaves a word that names a dead pid, which a reclaimer finds.
//!
//! Word: pid (bits 32–63) | tag (bits 8–31, 24 bits, +1 per claim, wraps) | state (bits 0–7).

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use super::crash;
use super::layout::Slot;
use super::state::SlotState;

pub const TAG_BITS: u32 = 24;
pub const TAG_MASK: u32 = (1 << TAG_BITS) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub state: SlotState,
    pub tag: u32,
    pub pid: u32,
}

/// How a connection's life ended (which per-slot total counts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Closed,
    Reclaimed,
}

impl End {
    fn ending_state(self) -> SlotState {
        match self {
            End::Closed => SlotState::EndingClosed,
            End::Reclaimed => SlotState::EndingReclaimed,
        }
    }

    fn of(state: SlotState) -> Option<End> {
        match state {
            SlotState::EndingClosed => Some(End::Closed),
            SlotState::EndingReclaimed => Some(End::Reclaimed),
            _ => None,
        }
    }
}

impl Lease {
    pub fn of(word: u64) -> Lease {
        Lease {
            state: SlotState::from_u32((word & 0xff) as u32),
            tag: ((word >> 8) as u32) & TAG_MASK,
            pid: (word >> 32) as u32,
        }
    }

    pub fn word(self) -> u64 {
        (self.pid as u64) << 32 | ((self.tag & TAG_MASK) as u64) << 8 | self.state as u64
    }

    /// The lease a new claim of a slot with this (free) lease takes.
    pub fn claimed_by(self, pid: u32) -> Lease {
        Lease {
            state: SlotState::Claiming,
            tag: self.tag.wrapping_add(1) & TAG_MASK,
            pid,
        }
    }

    pub fn with_state(self, state: SlotState) -> Lease {
        Lease { state, ..self }
    }
}

impl Slot {
    pub fn lease(&self) -> Lease {
        Lease::of(self.lease.load(Acquire))
    }

    /// Replaces the lease if it is still `from`. A crash point follows a successful swap.
    pub fn swap_lease(&self, from: Lease, to: Lease) -> bool {
        let ok = self
            .lease
            .compare_exchange(from.word(), to.word(), AcqRel, Acquire)
            .is_ok();
        if ok {
            crash::point();
        }
        ok
    }

    /// Ends the lifetime the lease `from` describes: `from` → Ending → counted → Free.
    /// False if the lease changed first (someone else ended or took it over).
    pub fn end(&self, from: Lease, how: End) -> bool {
        let ending = from.with_state(how.ending_state());
        self.swap_lease(from, ending) && self.finish_ending(ending)
    }

    /// Completes an Ending lease held by its `pid` (the ender, or a reclaimer that took it over
    /// from a dead one): counts the lifetime exactly once, normalises the text seqlock, frees.
    pub fn finish_ending(&self, ending: Lease) -> bool {
        let Some(how) = End::of(ending.state) else {
            return false;
        };
        if !self.lifetime_counted(ending.tag) {
            let total = match how {
                End::Closed => &self.ended_closed,
                End::Reclaimed => &self.ended_reclaimed,
            };
            total.fetch_add(1, Relaxed);
            crash::point();
        }
        self.reset_text_seq();
        let free = Lease {
            state: SlotState::Free,
            tag: ending.tag,
            pid: 0,
        };
        self.swap_lease(ending, free)
    }

    /// Whether the per-slot totals already count the lifetime claimed with `tag`: a slot's
    /// ended lifetimes equal its claims (the tag, modulo 2^24) once the last one is counted.
    pub fn lifetime_counted(&self, tag: u32) -> bool {
        let ended = self
            .ended_closed
            .load(Relaxed)
            .wrapping_add(self.ended_reclaimed.load(Relaxed));
        (ended as u32 & TAG_MASK) == tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_round_trips() {
        for l in [
            Lease {
                state: SlotState::Handling,
                tag: TAG_MASK,
                pid: u32::MAX,
            },
            Lease {
                state: SlotState::Free,
                tag: 0,
                pid: 0,
            },
        ] {
            assert_eq!(Lease::of(l.word()), l);
        }
        let wrapped = Lease::of(0).with_state(SlotState::Free);
        let l = Lease {
            tag: TAG_MASK,
            ..wrapped
        };
        assert_eq!(l.claimed_by(7).tag, 0, "the tag wraps");
    }
}
