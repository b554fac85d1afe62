//! Lifecycle states a connection slot moves through.
//!
//! The numeric values are stored in shared memory, so they are part of the table layout:
//! changing them means bumping `layout::LAYOUT_VERSION`.

/// Where a tracked connection is in its life. `Free` marks an unused slot.
///
/// Stored in a slot's lease: Free, Claiming, Reading, Handling, Keepalive, Closing and the two
/// Ending states. The others are derived for display only (`status::snapshot`): CloseWait from
/// a valid CLOSE_WAIT mark, ForceClosed and Rescued from the slot's flags; Closed and
/// Reclaimed name how lifetimes ended in the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum ConnState {
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
    /// The kernel reports the socket in CLOSE_WAIT (client sent FIN, we still hold it).
    CloseWait = 6,
    /// Closed normally (terminal).
    Closed = 7,
    /// Shut down by the in-child guard (terminal).
    ForceClosed = 8,
    /// Shut down by the parent's rescue path (terminal).
    Rescued = 9,
    /// Owner died; the parent freed the slot (terminal).
    Reclaimed = 10,
    /// Being freed after a normal end, or after its owner died: counted once, then Free.
    EndingClosed = 11,
    EndingReclaimed = 12,
}

impl ConnState {
    /// States a live connection can be in (what "open" means on the status page).
    pub const OPEN: [ConnState; 5] = [
        ConnState::Reading,
        ConnState::Handling,
        ConnState::Keepalive,
        ConnState::Closing,
        ConnState::CloseWait,
    ];

    pub fn from_u32(v: u32) -> ConnState {
        match v {
            1 => ConnState::Claiming,
            2 => ConnState::Reading,
            3 => ConnState::Handling,
            4 => ConnState::Keepalive,
            5 => ConnState::Closing,
            6 => ConnState::CloseWait,
            7 => ConnState::Closed,
            8 => ConnState::ForceClosed,
            9 => ConnState::Rescued,
            10 => ConnState::Reclaimed,
            11 => ConnState::EndingClosed,
            12 => ConnState::EndingReclaimed,
            _ => ConnState::Free,
        }
    }

    /// The name used in every status format (`state` label, JSON, `?auto`).
    pub fn name(self) -> &'static str {
        match self {
            ConnState::Free => "free",
            ConnState::Claiming => "claiming",
            ConnState::Reading => "reading",
            ConnState::Handling => "handling",
            ConnState::Keepalive => "keepalive",
            ConnState::Closing => "closing",
            ConnState::CloseWait => "close_wait",
            ConnState::Closed => "closed",
            ConnState::ForceClosed => "force_closed",
            ConnState::Rescued => "rescued",
            ConnState::Reclaimed => "reclaimed",
            ConnState::EndingClosed | ConnState::EndingReclaimed => "ending",
        }
    }

    pub fn is_open(self) -> bool {
        ConnState::OPEN.contains(&self)
    }

    /// Held by a live claim: the owner may still change it (not free, not being freed).
    pub fn is_held(self) -> bool {
        matches!(
            self,
            ConnState::Claiming
                | ConnState::Reading
                | ConnState::Handling
                | ConnState::Keepalive
                | ConnState::Closing
        )
    }

    pub fn is_ending(self) -> bool {
        matches!(self, ConnState::EndingClosed | ConnState::EndingReclaimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_u32() {
        for v in 0..=12u32 {
            assert_eq!(ConnState::from_u32(v) as u32, v);
        }
        assert_eq!(ConnState::from_u32(99), ConnState::Free);
    }

    #[test]
    fn open_states_are_the_live_ones() {
        assert!(ConnState::Keepalive.is_open());
        assert!(!ConnState::Closed.is_open());
        assert!(!ConnState::Free.is_open());
    }
}
