//! The byte layout of the shared segment: header, vhost rows, child rows, connection slots.
//!
//! Every field that more than one process touches is an atomic, so any process may read or
//! write it through a shared reference without a lock. The layout is versioned: a segment
//! whose `magic`, `layout_version` or sizes differ from what this build expects is never reused.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

pub const MAGIC: u64 = u64::from_le_bytes(*b"SGUARD\0\x01");
/// Bump whenever any struct in this file, or a stored enum value, changes.
pub const LAYOUT_VERSION: u32 = 10;

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
pub const PATH_BYTES: usize = 96;
// Both lengths share one word of a slot (`Slot::text_len`), a byte each.
const _: () = assert!(METHOD_BYTES < 256 && PATH_BYTES < 256);

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
    /// Duration of the last scan (lookups or dump, and the join), microseconds.
    pub last_scan_us: AtomicU64,
    /// Exact kernel lookups the last scan made (one per in-flight connection it checked).
    pub last_scan_lookups: AtomicU64,
    /// SocketGuardFullScanInterval: how often the scan is a full dump of our ports instead
    /// (what the table cannot name: leaked, backlog, untracked).
    pub full_scan_interval_ms: AtomicU64,
    /// Full dumps so far, and whether the last scan was one (1) or lookups only (0).
    pub full_scans: AtomicU64,
    pub last_scan_full: AtomicU32,
    pub _reserved4: AtomicU32,
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
    /// `method length | path length << 8`, one store under the seqlock (both fit a byte).
    pub text_len: AtomicU32,
    /// `slot::FLAG_*` bits: what the guard already did to this connection.
    pub flags: AtomicU32,
    /// `tag | LEAK_SEEN` once the scanner counted this connection in the leak report
    /// (`report.rs`). Like a CLOSE_WAIT mark, a value of an older claim is no value, so
    /// nothing resets it at claim time.
    pub leak_seen: AtomicU32,
    /// The peer's `tcpi_bytes_acked` when the guard last looked (FLAG_SAMPLED): a CLOSE_WAIT
    /// socket whose peer keeps acknowledging data is a half-closed client still reading.
    pub acked_bytes: AtomicU64,
    /// When the guard decided the client is gone (FLAG_ABANDONED): the start of
    /// SocketGuardAbandonedTimeout.
    pub abandoned_since_mono_ms: AtomicU64,
    pub method: [AtomicU64; METHOD_BYTES / 8],
    pub path: [AtomicU64; PATH_BYTES / 8],
}

/// Entries per vhost in each of the leak report's two lists (request paths, client addresses).
pub const REPORT_K: usize = 16;
/// A path entry's key: the method's first 16 bytes, then the path's first 80 (no query string).
pub const LEAK_METHOD_BYTES: usize = 16;
pub const LEAK_PATH_BYTES: usize = 80;
pub const PATH_KEY_WORDS: usize = (LEAK_METHOD_BYTES + LEAK_PATH_BYTES) / 8;
/// A client entry's key: the address (IPv4 or IPv6, no port) in 16 bytes.
pub const CLIENT_KEY_WORDS: usize = 2;
/// The history ring: one sample per period, an hour of them.
pub const HISTORY_PERIOD_MS: u64 = 5_000;
pub const HISTORY_SAMPLES: usize = 720;

/// One counted key of the leak report (`report.rs`: the Space-Saving rule, the seqlock).
/// Written by the scanner only; any process may read.
#[repr(C)]
pub struct ReportEntry<const N: usize> {
    /// Even: stable. Odd: the key is being replaced, or its writer died doing so (the next
    /// writer empties the entry).
    pub seq: AtomicU32,
    /// What the key holds: a path entry `method_len | path_len << 8`, a client entry 4 or 6.
    pub shape: AtomicU32,
    /// Connections counted under the key (an overestimate by at most `error`).
    pub count: AtomicU64,
    /// The count the key inherited when it took the entry over from the least-counted key.
    pub error: AtomicU64,
    /// CLOCK_REALTIME ms when the key was last counted.
    pub last_seen_unix_ms: AtomicU64,
    pub key: [AtomicU64; N],
}

pub type PathEntry = ReportEntry<PATH_KEY_WORDS>;
pub type ClientEntry = ReportEntry<CLIENT_KEY_WORDS>;

/// The leak report of one vhost row (same index).
#[repr(C)]
pub struct VhostReport {
    pub paths: [PathEntry; REPORT_K],
    pub clients: [ClientEntry; REPORT_K],
}

pub const REPORT_BYTES: usize = MAX_VHOSTS * std::mem::size_of::<VhostReport>();

/// One sample of the last hour (`history.rs`). `stamp` is the sample's number (1-based),
/// stored last; 0 while it is written.
#[repr(C)]
pub struct HistorySample {
    pub stamp: AtomicU64,
    pub mono_ms: AtomicU64,
    pub unix_ms: AtomicU64,
    /// Tracked connections in CLOSE_WAIT, open connections, CLOSE_WAIT sockets on our ports
    /// that match no tracked connection.
    pub close_wait: AtomicU32,
    pub open: AtomicU32,
    pub untracked: AtomicU32,
    pub _reserved: AtomicU32,
    /// The force-closed counters (sums of the vhost rows) at the sample: readers take the
    /// differences between samples, so a sample needs no memory of the one before.
    pub force_closed_guard: AtomicU64,
    pub force_closed_rescue: AtomicU64,
}

/// The ring of samples, written by the scanner only.
#[repr(C)]
pub struct History {
    /// Samples published so far: the newest is number `head`, in `samples[(head - 1) % N]`.
    pub head: AtomicU64,
    pub _reserved: [AtomicU64; 7],
    pub samples: [HistorySample; HISTORY_SAMPLES],
}

pub const HISTORY_BYTES: usize = std::mem::size_of::<History>();

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
    /// One bit per slot: a connection in flight (`inflight.rs`).
    pub inflight_offset: usize,
    /// The leak report and the history ring: fixed sizes, after the parts sized by the
    /// configuration.
    pub report_offset: usize,
    pub history_offset: usize,
    pub total_size: usize,
}

impl Layout {
    #[inline(always)]
    pub fn new(nslots: usize, nchildren: usize) -> Layout {
        let vhosts_offset = align64(std::mem::size_of::<Header>());
        let children_offset = align64(vhosts_offset + MAX_VHOSTS * std::mem::size_of::<VhostRow>());
        let slots_offset = align64(children_offset + nchildren * std::mem::size_of::<ChildRow>());
        let inflight_offset = align64(slots_offset + nslots * std::mem::size_of::<Slot>());
        let report_offset = align64(inflight_offset + inflight_words(nslots) * 8);
        let history_offset = align64(report_offset + REPORT_BYTES);
        let total_size = align64(history_offset + HISTORY_BYTES);
        Layout {
            nslots,
            nchildren,
            vhosts_offset,
            children_offset,
            slots_offset,
            inflight_offset,
            report_offset,
            history_offset,
            total_size,
        }
    }
}

/// Words of the in-flight bitmap for `nslots` slots.
pub const fn inflight_words(nslots: usize) -> usize {
    nslots.div_ceil(64)
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
        assert!(l.inflight_offset >= l.slots_offset + 100 * std::mem::size_of::<Slot>());
        assert!(l.report_offset >= l.inflight_offset + 2 * 8);
        assert!(l.history_offset >= l.report_offset + REPORT_BYTES);
        assert!(l.total_size >= l.history_offset + HISTORY_BYTES);
        for off in [
            l.vhosts_offset,
            l.children_offset,
            l.slots_offset,
            l.inflight_offset,
            l.report_offset,
            l.history_offset,
            l.total_size,
        ] {
            assert_eq!(off % 64, 0);
        }
    }

    /// The fixed parts' sizes, as docs/ARCHITECTURE.md states them: a path entry is two
    /// cache lines, the report 720,896 bytes, the history 40,384 bytes.
    #[test]
    fn report_and_history_have_their_documented_sizes() {
        assert_eq!(std::mem::size_of::<PathEntry>(), 128);
        assert_eq!(std::mem::size_of::<ClientEntry>(), 48);
        assert_eq!(std::mem::size_of::<VhostReport>(), 2_816);
        assert_eq!(REPORT_BYTES, 720_896);
        assert_eq!(std::mem::size_of::<HistorySample>(), 56);
        assert_eq!(HISTORY_BYTES, 40_384);
    }

    /// The figures docs/leak-report.md and docs/directives.md give: a slot is 256 bytes (and
    /// one bit of the in-flight bitmap), and Debian's event defaults (4,160 slots, 48 child
    /// rows) make a 1,878,976-byte segment.
    #[test]
    fn the_documented_segment_size_for_debians_event_defaults() {
        assert_eq!(std::mem::size_of::<Slot>(), 256);
        assert_eq!(Layout::new(4_160, 48).total_size, 1_878_976);
    }

    #[test]
    fn slot_stays_small() {
        // The table is sized per connection: issue 10's target is 256 bytes, four cache lines.
        assert!(
            std::mem::size_of::<Slot>() <= 256,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }
}
