//! The lifecycle states a slot's lease stores.
//!
//! The numeric values are stored in shared memory, so they are part of the table layout:
//! changing them means bumping `layout::LAYOUT_VERSION`. What the status page shows is a
//! separate type, `status::model::ShownState`, derived from these plus the slot's flags and
//! CLOSE_WAIT mark; a shown-only state (close_wait, force_closed, rescued, …) has no value
//! here, so no code can store one into a lease.

/// Where a slot's connection is in its life, as its lease stores it. `Free` marks an unused
/// slot. Every lease transition (`lease.rs`, `conn.rs`) takes this type.
///
/// The values 6 to 10 are unused: they once named display-only states that no writer ever
/// stored (close_wait, closed, force_closed, rescued, reclaimed). The Ending values keep their
/// old numbers so that the layout did not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SlotState {
    /// Slot unused.
    Free = 0,
    /// Being claimed by its owner; fields are not valid yet.
    Claiming = 1,
    /// Waiting for, or reading, the first request.
    Reading = 2,
    /// A request is being processed by a handler.
    Handling = 3,
    /// Idle between requests on a keep-alive connection.
    Keepalive = 4,
    /// Apache is in lingering close.
    Closing = 5,
    /// Being freed after a normal end: counted once as closed, then Free.
    EndingClosed = 11,
    /// Being freed after its owner died: counted once as reclaimed, then Free.
    EndingReclaimed = 12,
}

/// `from_u32` for the values a lease's state byte can hold.
const BY_VALUE: [SlotState; 256] = {
    let mut t = [SlotState::Free; 256];
    t[1] = SlotState::Claiming;
    t[2] = SlotState::Reading;
    t[3] = SlotState::Handling;
    t[4] = SlotState::Keepalive;
    t[5] = SlotState::Closing;
    t[11] = SlotState::EndingClosed;
    t[12] = SlotState::EndingReclaimed;
    t
};

impl SlotState {
    /// The state a lease word's state bits name. Any other value (a table written by a
    /// compromised child, which runs as `User` and can write anything) reads as `Free`, which
    /// is safe: a Free slot is skipped by every reader that acts on or shows connections
    /// (status, scan, rescue, abandoned-work stops) and by the reclaimer, counts in no total,
    /// and cannot be claimed, because a claim's compare-and-swap expects the word re-encoded
    /// with state 0 and so fails against the unknown state bits. The slot stays out of use
    /// until a valid word is written; nothing acts on its (equally untrusted) fields.
    pub fn from_u32(v: u32) -> SlotState {
        // A table lookup: every lease read decodes its state, several times per connection.
        BY_VALUE.get(v as usize).copied().unwrap_or(SlotState::Free)
    }

    /// Held by a live claim: the owner may still change it (not free, not being freed).
    pub fn is_held(self) -> bool {
        matches!(
            self,
            SlotState::Claiming
                | SlotState::Reading
                | SlotState::Handling
                | SlotState::Keepalive
                | SlotState::Closing
        )
    }

    /// A published connection: held and past claiming, so its fields are valid.
    pub fn is_open(self) -> bool {
        self.is_held() && self != SlotState::Claiming
    }

    pub fn is_ending(self) -> bool {
        matches!(self, SlotState::EndingClosed | SlotState::EndingReclaimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip_and_others_read_as_free() {
        for v in [0, 1, 2, 3, 4, 5, 11, 12u32] {
            assert_eq!(SlotState::from_u32(v) as u32, v);
        }
        for v in [6, 7, 8, 9, 10, 13, 99, 255, u32::MAX] {
            assert_eq!(SlotState::from_u32(v), SlotState::Free, "{v}");
        }
    }

    #[test]
    fn open_states_are_the_published_held_ones() {
        assert!(SlotState::Keepalive.is_open());
        assert!(SlotState::Claiming.is_held() && !SlotState::Claiming.is_open());
        assert!(!SlotState::EndingClosed.is_open());
        assert!(!SlotState::Free.is_open());
    }
}
