//! The byte layout of the shared segment: header, vhost rows, child rows, connection slots.
//!
//! Every field that more than one process touches is an atomic, so any process may read or
//! write it through a shared reference without a lock. The layout is versioned: a segment
//! whose `magic`, `layout_version` or sizes differ from what this build expects is never reused.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

pub const MAGIC: u64 = u64::from_le_bytes(*b"SGUARD\0\x01");
/// Bump whenever any struct in this file, or a stored enum value, changes.
pub const LAYOUT_VERSION: u32 = 7;

/// Rows for distinct `name:port` servers; more than this share the last row ("other").
pub const MAX_VHOSTS: usize = 256;
pub const VHOST_NAME_BYTES: usize = 96;
/// Listening sockets remembered for the kernel view.
pub const MAX_LISTEN_PORTS: usize = 32;
/// In a `listen_ports` entry: the listener is an IPv6 socket (low 16 bits: the port).
pub const LISTEN_IPV6: u32 = 1 << 16;
/// CLOSE_WAIT sockets on our ports that no live connection owns, as the guard process last
/// classified them (leaked with holder, or backlog); more are counted but not listed.
pub const MAX_LEAKS: usize = 64;
/// Upper bounds (ms) of the CLOSE_WAIT duration histogram; one more bucket holds the rest.
pub const HISTOGRAM_BOUNDS_MS: [u64; 10] = [
    100, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
];
pub const METHOD_BYTES: usize = 16;
pub const PATH_BYTES: usize = 128;

/// The only server-wide counter stored as such: connections that found no free slot. Every
/// other total is derived (`totals`): from the slots (accepted, closed, reclaimed, open) or
/// as the sum of the vhost rows (requests, force-closed, reported, stopped), so no total can
/// disagree with its parts after a process dies between two stores.
#[repr(C)]
#[derive(Default)]
pub struct Counters {
    pub untracked: AtomicU64,
}

#[repr(C)]
pub struct Header {
    pub magic: AtomicU64,
    pub layout_version: AtomicU32,
    pub nslots: AtomicU32,
    pub nchildren: AtomicU32,
    pub _reserved: AtomicU32,
    pub total_size: AtomicU64,
    /// CLOCK_MONOTONIC ms when the segment was created (uptime survives graceful restarts).
    pub created_mono_ms: AtomicU64,
    /// Config generation: 0 at first start, +1 per restart.
    pub generation: AtomicU64,
    pub _reserved1: AtomicU32,
    pub vhost_count: AtomicU32,
    /// Main server settings published for every process (children read them at check-in).
    pub scan_interval_ms: AtomicU64,
    pub hung_child_timeout_ms: AtomicU64,
    pub listen_port_count: AtomicU32,
    /// The child elected to run the one kernel scan per interval (0: none yet).
    pub scanner_pid: AtomicU32,
    /// When the scanner last finished a scan; a stale beat lets another child take over.
    pub scanner_beat_mono_ms: AtomicU64,
    pub scans: AtomicU64,
    pub scan_errors: AtomicU64,
    /// Duration of the last scan (dump + join), microseconds.
    pub last_scan_us: AtomicU64,
    pub _reserved2: AtomicU64,
    /// CLOCK_MONOTONIC ms of the last restart (when `generation` last grew).
    pub restart_mono_ms: AtomicU64,
    /// SocketGuardGracefulDeadline in ms (0: Off).
    pub graceful_deadline_ms: AtomicU64,
    /// The guard process (0: none running) and what it can do, as it reports itself.
    pub guard_pid: AtomicU32,
    /// `guard_reach::*`: whether it can take descriptors out of children.
    pub guard_reach: AtomicU32,
    /// SocketGuardRescue (1: On).
    pub rescue: AtomicU32,
    pub _reserved3: AtomicU32,
    /// A worker/event child of the current generation was told to stop ungracefully (server
    /// stop or ungraceful restart): `generation + 1` of that generation, 0 for none; reset at
    /// every post_config. Children of older generations, which are past their own stop
    /// signal after a graceful restart, learn of the stop here.
    pub server_stop_generation: AtomicU64,
    pub listen_ports: [AtomicU32; MAX_LISTEN_PORTS],
    pub counters: Counters,
    pub histogram: [AtomicU64; HISTOGRAM_BOUNDS_MS.len() + 1],
    pub histogram_sum_ms: AtomicU64,
    /// Written by the guard process only (single writer); see `LeakRow`.
    pub leaks: [LeakRow; MAX_LEAKS],
}

/// One untracked CLOSE_WAIT socket the guard process classified. The writer clears `inode`,
/// writes the rest, then stores `inode` last (Release); a reader loads `inode` (Acquire),
/// reads the rest and keeps the row only if `inode` is unchanged. Display data only: nothing
/// acts on it but the guard process, which re-verifies everything with the kernel.
#[repr(C)]
pub struct LeakRow {
    pub inode: AtomicU64,
    /// `leak_kind::*`.
    pub kind: AtomicU32,
    /// The process holding it (leaked), 0 if none was found.
    pub holder_pid: AtomicU32,
    /// The holder's command name (/proc/<pid>/comm, at most 16 bytes).
    pub holder_comm: [AtomicU64; 2],
    pub comm_len: AtomicU32,
    /// 1 once the guard process shut it down.
    pub closed: AtomicU32,
    /// When the guard process first saw it untracked.
    pub since_mono_ms: AtomicU64,
}

/// Values of `LeakRow::kind`.
pub mod leak_kind {
    pub const FREE: u32 = 0;
    /// Held by a process that is not a live Apache child (an inherited descriptor).
    pub const LEAKED: u32 = 1;
    /// Held by no process, request bytes in Recv-Q: never accepted (the client gave up while
    /// every worker was busy).
    pub const BACKLOG: u32 = 2;
}

/// Values of `Header::guard_reach`.
pub mod guard_reach {
    /// Not known yet (no guard process, or it has not checked).
    pub const UNKNOWN: u32 = 0;
    /// It can take a descriptor out of a child (CAP_SYS_PTRACE, or same user and dumpable).
    pub const CHILDREN: u32 = 1;
    /// It cannot: hung children's sockets are shown and reported, not closed.
    pub const NONE: u32 = 2;
}

/// One `name:port` server. The name is written by the parent before `vhost_count` publishes
/// the row and never changes afterwards, so readers need no lock for it.
#[repr(C)]
pub struct VhostRow {
    pub name: [AtomicU64; VHOST_NAME_BYTES / 8],
    pub name_len: AtomicU32,
    pub port: AtomicU32,
    /// `config::AutoClose` as u8 and the timeout; refreshed at every restart.
    pub auto_close: AtomicU32,
    pub _reserved: AtomicU32,
    pub close_wait_timeout_ms: AtomicU64,
    pub accepted: AtomicU64,
    pub requests: AtomicU64,
    pub force_closed_guard: AtomicU64,
    pub force_closed_rescue: AtomicU64,
    pub reported: AtomicU64,
    /// SocketGuardAbandonedTimeout in ms (0: Off); refreshed at every restart.
    pub abandoned_timeout_ms: AtomicU64,
    pub stopped_cgi: AtomicU64,
    pub stopped_child: AtomicU64,
}

/// One child process's guard. `pid == 0` marks a free row; `pid | ROW_CLAIMING` a row whose
/// claimer has not published its start time yet (`children.rs`).
#[repr(C)]
pub struct ChildRow {
    pub pid: AtomicU32,
    /// Set by the scanner when one of this child's connections is in CLOSE_WAIT, so the
    /// child's guard walks its slots only when there is something to act on.
    pub pending: AtomicU32,
    pub generation: AtomicU64,
    /// /proc/<pid>/stat start time, to tell a recycled pid from the child we knew.
    pub start_time: AtomicU64,
    pub last_checkin_mono_ms: AtomicU64,
}

/// One tracked connection.
///
/// Ownership: `lease` (state, claim tag and owner pid in one word, see `lease.rs`) is the
/// claim. Only the process named there writes the other fields (a reclaimer takes the lease
/// over first when that process is dead). Method and path are guarded by the `text_seq`
/// seqlock so readers never show half of one request and half of another. The state machine
/// is in docs/ARCHITECTURE.md ("Shared memory").
#[repr(C)]
pub struct Slot {
    pub lease: AtomicU64,
    /// Lifetimes of this slot that ended normally / were reclaimed (their sums over all slots
    /// are the server's `closed` and `reclaimed` totals; see `lease::end`).
    pub ended_closed: AtomicU64,
    pub ended_reclaimed: AtomicU64,
    pub fd: AtomicI32,
    pub vhost: AtomicU32,
    pub inode: AtomicU64,
    /// IPv4 as ::ffff:a.b.c.d form, IPv6 as is.
    pub client_ip: [AtomicU32; 4],
    pub local_ip: [AtomicU32; 4],
    /// low 16 bits: port; bit 16: IPv6.
    pub client_port: AtomicU32,
    pub local_port: AtomicU32,
    pub accept_mono_ms: AtomicU64,
    pub state_since_mono_ms: AtomicU64,
    /// When a scan first saw it in CLOSE_WAIT, tagged with the claim it belongs to
    /// (`marks.rs`): 0, or a mark of an older claim, means not in CLOSE_WAIT.
    pub close_wait_mark: AtomicU64,
    pub requests: AtomicU64,
    pub text_seq: AtomicU32,
    pub method_len: AtomicU32,
    pub path_len: AtomicU32,
    /// `slot::FLAG_*` bits: what the guard already did to this connection.
    pub flags: AtomicU32,
    /// The peer's `tcpi_bytes_acked` when the guard last looked (FLAG_SAMPLED): a CLOSE_WAIT
    /// socket whose peer keeps acknowledging data is a half-closed client still reading.
    pub acked_bytes: AtomicU64,
    /// When the guard decided the client is gone (FLAG_ABANDONED): the start of
    /// SocketGuardAbandonedTimeout.
    pub abandoned_since_mono_ms: AtomicU64,
    pub method: [AtomicU64; METHOD_BYTES / 8],
    pub path: [AtomicU64; PATH_BYTES / 8],
}

const fn align64(n: usize) -> usize {
    (n + 63) & !63
}

/// Offsets of each part inside a segment with the given capacities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub nslots: usize,
    pub nchildren: usize,
    pub vhosts_offset: usize,
    pub children_offset: usize,
    pub slots_offset: usize,
    pub total_size: usize,
}

impl Layout {
    pub fn new(nslots: usize, nchildren: usize) -> Layout {
        let vhosts_offset = align64(std::mem::size_of::<Header>());
        let children_offset = align64(vhosts_offset + MAX_VHOSTS * std::mem::size_of::<VhostRow>());
        let slots_offset = align64(children_offset + nchildren * std::mem::size_of::<ChildRow>());
        let total_size = align64(slots_offset + nslots * std::mem::size_of::<Slot>());
        Layout {
            nslots,
            nchildren,
            vhosts_offset,
            children_offset,
            slots_offset,
            total_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_do_not_overlap_and_are_aligned() {
        let l = Layout::new(100, 10);
        assert!(l.vhosts_offset >= std::mem::size_of::<Header>());
        assert!(
            l.children_offset >= l.vhosts_offset + MAX_VHOSTS * std::mem::size_of::<VhostRow>()
        );
        assert!(l.slots_offset >= l.children_offset + 10 * std::mem::size_of::<ChildRow>());
        assert!(l.total_size >= l.slots_offset + 100 * std::mem::size_of::<Slot>());
        for off in [
            l.vhosts_offset,
            l.children_offset,
            l.slots_offset,
            l.total_size,
        ] {
            assert_eq!(off % 64, 0);
        }
    }

    #[test]
    fn slot_stays_small() {
        // The table is sized per connection; keep a slot within a few cache lines.
        assert!(
            std::mem::size_of::<Slot>() <= 320,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }
}
