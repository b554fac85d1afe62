//! The one data model every status format renders.
//!
//! Built from the shared table by `status::snapshot` (or by hand in unit tests); it holds
//! plain owned data and no Apache types, so renderers can be tested without a server.
//! Strings here are raw: they may contain anything a client sent. Each renderer escapes
//! them for its own format.

use crate::config::AutoClose;
use crate::table::state::SlotState;

/// Everything the status page shows, captured at one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// e.g. "Apache/2.4.71 (Debian)".
    pub server_version: String,
    /// e.g. "event", "worker", "prefork".
    pub mpm: String,
    /// The module's own version.
    pub module_version: String,
    /// Seconds since the table was created (first start; graceful restarts keep it).
    pub uptime_secs: u64,
    /// How many graceful/ungraceful restarts the table has seen (0 at first start).
    pub generation: u64,
    pub slots_total: u64,
    pub slots_used: u64,
    pub scan_interval_ms: u64,
    /// SocketGuardFullScanInterval in ms.
    pub full_scan_interval_ms: u64,
    /// SocketGuardGracefulDeadline in ms (0: Off).
    pub graceful_deadline_ms: u64,
    pub totals: Totals,
    pub vhosts: Vec<VhostRow>,
    pub children: Vec<ChildRow>,
    /// Listed connections, in table order; `status::select` picks and orders what a page
    /// shows.
    pub connections: Vec<ConnRow>,
    pub kernel: KernelView,
    pub close_wait_histogram: Histogram,
    pub scanner: ScannerInfo,
    /// CLOCK_REALTIME ms when the snapshot was taken (the leak report's and the history's
    /// times are wall-clock).
    pub now_unix_ms: u64,
    /// Where it leaks: per vhost with any entry, its top requests and clients.
    pub leaks: Vec<VhostLeaks>,
    /// The last hour, sampled by the scanner.
    pub history: History,
}

/// One vhost's leak report: the requests and the clients whose connections most often sat in
/// CLOSE_WAIT past the vhost's timeout (at most `REPORT_K` each), most counted first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VhostLeaks {
    /// "name:port".
    pub vhost: String,
    pub paths: Vec<LeakPath>,
    pub clients: Vec<LeakClient>,
}

/// A request (method and path, no query string; raw text: escape it) in the leak report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeakPath {
    pub method: String,
    pub path: String,
    pub count: Count,
}

/// A client address (no port) in the leak report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeakClient {
    pub client: String,
    pub count: Count,
}

/// A Space-Saving count: the true number lies in `[count - error, count]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    pub count: u64,
    pub error: u64,
    pub last_seen_unix_ms: u64,
}

/// The last hour: one point per sample, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub period_ms: u64,
    /// How many samples the ring holds (an hour's worth).
    pub capacity: u64,
    pub points: Vec<HistoryPoint>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryPoint {
    pub unix_ms: u64,
    /// Tracked connections in CLOSE_WAIT, open connections, untracked CLOSE_WAIT sockets.
    pub close_wait: u64,
    pub open: u64,
    pub untracked: u64,
    /// Closes since the previous point: by the in-child guard, by the guard process's rescue
    /// (0 for the first point).
    pub guard_closes: u64,
    pub rescue_closes: u64,
}

/// The one child that scans the kernel for the whole server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScannerInfo {
    /// 0 when no child has scanned yet.
    pub pid: u32,
    pub scans: u64,
    pub scan_errors: u64,
    /// Duration of the last scan (kernel lookups or dump + join with the table), microseconds.
    pub last_scan_us: u64,
    /// Exact kernel lookups the last scan made (0 for a full dump).
    pub last_scan_lookups: u64,
    /// Whether the last scan was a full dump of our ports.
    pub last_scan_full: bool,
    /// Full dumps so far.
    pub full_scans: u64,
    /// Milliseconds since the last scan finished.
    pub last_scan_age_ms: u64,
    /// The guard process (0: none running).
    pub guard_pid: u32,
    /// What it can do: "children" (rescue works), "none" (cannot reach children), "unknown".
    pub guard_reach: &'static str,
    /// SocketGuardRescue.
    pub rescue: bool,
}

/// Who holds a CLOSE_WAIT socket (SPEC "Who holds a CLOSE_WAIT socket"): each class needs a
/// different remedy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseWaitClass {
    /// A live worker of the current generation whose handler has not returned.
    Stuck,
    /// Owned by a child whose guard stopped checking in.
    Hung,
    /// Owned by a child of an earlier generation still finishing after a graceful restart.
    OldGeneration,
    /// Held only by a process that is not a live Apache child (an inherited descriptor), as
    /// the guard process classified it.
    Leaked,
    /// Held by nobody, request bytes waiting: never accepted (the client gave up while every
    /// worker was busy), as the guard process classified it.
    Backlog,
    /// On our ports, matching no tracked connection, and not (yet) classified by the guard
    /// process (e.g. the table was full, or no guard process runs).
    Untracked,
}

impl CloseWaitClass {
    pub const ALL: [CloseWaitClass; 6] = [
        CloseWaitClass::Stuck,
        CloseWaitClass::Hung,
        CloseWaitClass::OldGeneration,
        CloseWaitClass::Leaked,
        CloseWaitClass::Backlog,
        CloseWaitClass::Untracked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CloseWaitClass::Stuck => "stuck",
            CloseWaitClass::Hung => "hung",
            CloseWaitClass::OldGeneration => "old_generation",
            CloseWaitClass::Leaked => "leaked",
            CloseWaitClass::Backlog => "backlog",
            CloseWaitClass::Untracked => "untracked",
        }
    }
}

/// Whether the CLOSE_WAIT sockets seen now look like normal churn or a leak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// No socket in CLOSE_WAIT.
    #[default]
    None,
    /// Some, none of them overdue: clients closing while responses finish.
    Churn,
    /// At least one tracked socket has sat in CLOSE_WAIT past its vhost's
    /// `SocketGuardCloseWaitTimeout` or `LEAK_AFTER_MS`, whichever is shorter, or a leaked
    /// socket (held outside Apache) has been known to the guard process for `LEAK_AFTER_MS`.
    Leak,
}

/// How long a socket may sit in CLOSE_WAIT before the verdict calls it a leak, at most (a
/// vhost's shorter CloseWaitTimeout counts instead: the administrator said what is too long).
pub const LEAK_AFTER_MS: u64 = 10_000;

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::None => "none",
            Verdict::Churn => "churn",
            Verdict::Leak => "leak",
        }
    }

    /// One sentence for people (HTML, mod_status section).
    pub fn explain(self) -> &'static str {
        match self {
            Verdict::None => "no socket is in CLOSE_WAIT",
            Verdict::Churn => "sockets pass through CLOSE_WAIT briefly: normal churn",
            Verdict::Leak => {
                "sockets stay in CLOSE_WAIT past their timeout (or 10 s): something holds them (a leak)"
            }
        }
    }
}

/// Server-wide counters and gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub accepted: u64,
    pub requests: u64,
    pub closed: u64,
    /// Connections currently open, per open state (every state of `ShownState::OPEN`, zeros included).
    pub open_by_state: Vec<(ShownState, u64)>,
    pub close_wait_now: u64,
    pub force_closed_guard: u64,
    pub force_closed_rescue: u64,
    pub reported: u64,
    pub reclaimed: u64,
    /// Connections served but not tracked because the table was full.
    pub untracked: u64,
    /// Abandoned work stopped (SocketGuardAbandonedTimeout, GracefulDeadline, server stop):
    /// CGI processes and child processes.
    pub stopped_cgi: u64,
    pub stopped_child: u64,
    /// Listed connections whose client is gone (abandoned) while their handler still runs
    /// (Apache's state is `handling`), force-closed ones included.
    pub abandoned_now: u64,
}

impl Totals {
    pub fn open(&self) -> u64 {
        self.open_by_state.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct VhostRow {
    /// ServerName as configured (or the default server's name).
    pub name: String,
    pub port: u16,
    pub auto_close: AutoClose,
    pub close_wait_timeout_ms: u64,
    pub accepted: u64,
    pub open: u64,
    pub close_wait_now: u64,
    pub force_closed_guard: u64,
    pub force_closed_rescue: u64,
    pub reported: u64,
    /// SocketGuardAbandonedTimeout in ms (0: Off).
    pub abandoned_timeout_ms: u64,
    /// Abandoned work of this vhost stopped: CGI processes and child processes.
    pub stopped_cgi: u64,
    pub stopped_child: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChildRow {
    pub pid: u32,
    pub generation: u64,
    pub open: u64,
    /// Milliseconds since this child's guard thread last checked in.
    pub checkin_age_ms: u64,
    pub hung: bool,
}

/// A connection's state as the status page names it: the stored `SlotState` it came from
/// (`From<SlotState>`), or one derived for display by `snapshot::display_state` — CloseWait
/// from a valid CLOSE_WAIT mark, ForceClosed and Rescued from the slot's flags. The derived
/// ones have no `SlotState`, so none can be stored in a lease.
///
/// The snapshot lists open slots only, so Free, Claiming and Ending exist to make the
/// conversion total; they are never listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShownState {
    Free,
    Claiming,
    Reading,
    Handling,
    Keepalive,
    Closing,
    /// The kernel reports the socket in CLOSE_WAIT (client sent FIN, we still hold it).
    CloseWait,
    /// Shut down by the in-child guard; listed until Apache lets go of it.
    ForceClosed,
    /// Shut down by the guard process (taken out of a hung child); listed like ForceClosed.
    Rescued,
    /// Being freed (either Ending state of the lease).
    Ending,
}

impl ShownState {
    /// States a live connection can be in (what "open" means on the status page).
    pub const OPEN: [ShownState; 5] = [
        ShownState::Reading,
        ShownState::Handling,
        ShownState::Keepalive,
        ShownState::Closing,
        ShownState::CloseWait,
    ];

    /// The name the HTML, JSON and Prometheus (`state` label) formats use; `?auto` keys its
    /// open counts by state in `auto::state_key`.
    pub fn name(self) -> &'static str {
        match self {
            ShownState::Free => "free",
            ShownState::Claiming => "claiming",
            ShownState::Reading => "reading",
            ShownState::Handling => "handling",
            ShownState::Keepalive => "keepalive",
            ShownState::Closing => "closing",
            ShownState::CloseWait => "close_wait",
            ShownState::ForceClosed => "force_closed",
            ShownState::Rescued => "rescued",
            ShownState::Ending => "ending",
        }
    }
}

impl From<SlotState> for ShownState {
    fn from(s: SlotState) -> ShownState {
        match s {
            SlotState::Free => ShownState::Free,
            SlotState::Claiming => ShownState::Claiming,
            SlotState::Reading => ShownState::Reading,
            SlotState::Handling => ShownState::Handling,
            SlotState::Keepalive => ShownState::Keepalive,
            SlotState::Closing => ShownState::Closing,
            SlotState::EndingClosed | SlotState::EndingReclaimed => ShownState::Ending,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConnRow {
    pub pid: u32,
    /// Client address as text, "ip:port" (IPv6 as "[ip]:port").
    pub client: String,
    pub local_port: u16,
    /// "name:port" of the vhost the connection is attributed to.
    pub vhost: String,
    pub state: ShownState,
    pub age_ms: u64,
    /// How long the kernel has shown it in CLOSE_WAIT, if it is there now.
    pub close_wait_ms: Option<u64>,
    /// Who holds it, when it is in CLOSE_WAIT.
    pub class: Option<CloseWaitClass>,
    pub requests: u64,
    /// Method and path (no query string) of the current or last request; empty before the first.
    pub method: String,
    pub path: String,
    /// How long ago the guard found its client gone (abandoned), if it did.
    pub abandoned_ms: Option<u64>,
    /// The stop taken against the request's work, if any.
    pub stopped: Option<Stop>,
}

/// What was done to the work of an abandoned request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stop {
    /// Its CGI processes were sent SIGTERM.
    CgiTerm,
    /// Its CGI processes were sent SIGKILL (after SIGTERM's grace).
    CgiKill,
}

impl Stop {
    /// The name in machine formats (JSON `stopped`).
    pub fn name(self) -> &'static str {
        match self {
            Stop::CgiTerm => "cgi_term",
            Stop::CgiKill => "cgi_kill",
        }
    }

    /// For people (HTML).
    pub fn label(self) -> &'static str {
        match self {
            Stop::CgiTerm => "CGI SIGTERM",
            Stop::CgiKill => "CGI SIGKILL",
        }
    }
}

/// CLOSE_WAIT sockets on this server's listening ports as the kernel reports them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelView {
    /// False when the kernel view could not be read (the reason is in `error`).
    pub available: bool,
    pub error: Option<String>,
    /// CLOSE_WAIT sockets matched to a tracked connection.
    pub tracked: u64,
    /// CLOSE_WAIT sockets on our ports that match no tracked connection and that the guard
    /// process has not classified as leaked or backlog.
    pub untracked: u64,
    /// CLOSE_WAIT sockets held by a process that is not a live Apache child (equals
    /// `leaked.len()` when built from the table).
    pub leaked_count: u64,
    /// CLOSE_WAIT sockets nobody accepted (request bytes waiting): a capacity problem.
    pub backlog: u64,
    /// The leaked sockets the kernel shows now, with their holders.
    pub leaked: Vec<LeakedSocket>,
    /// Every kernel CLOSE_WAIT socket on our ports in exactly one class: these three (the
    /// tracked ones), `leaked_count`, `backlog` and `untracked`.
    pub stuck: u64,
    pub hung: u64,
    pub old_generation: u64,
    pub verdict: Verdict,
    /// The longest time a tracked socket has been in CLOSE_WAIT now (0 if none).
    pub oldest_close_wait_ms: u64,
}

impl KernelView {
    pub fn count(&self, class: CloseWaitClass) -> u64 {
        match class {
            CloseWaitClass::Stuck => self.stuck,
            CloseWaitClass::Hung => self.hung,
            CloseWaitClass::OldGeneration => self.old_generation,
            CloseWaitClass::Leaked => self.leaked_count,
            CloseWaitClass::Backlog => self.backlog,
            CloseWaitClass::Untracked => self.untracked,
        }
    }
}

/// A CLOSE_WAIT socket on our ports held by a process that is not a live Apache child.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakedSocket {
    /// Client address as text, "ip:port" (IPv6 as "[ip]:port").
    pub client: String,
    pub local_port: u16,
    pub inode: u64,
    /// None when the guard process found no holder.
    pub holder_pid: Option<u32>,
    /// The holder's command name (/proc/<pid>/comm): raw text another program chose, escape
    /// it like anything from the network. Empty when unknown.
    pub holder_comm: String,
    /// The guard process already shut it down (the kernel may not have moved it on yet).
    pub closed: bool,
}

/// How long sockets sat in CLOSE_WAIT before they closed, Prometheus-style.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending (the +Inf bucket is implied).
    pub bounds_secs: Vec<f64>,
    /// Non-cumulative count per bucket; one more entry than `bounds_secs` (the +Inf bucket).
    pub counts: Vec<u64>,
    pub sum_secs: f64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_states_are_shown_under_their_names() {
        let shown = [
            (SlotState::Free, "free"),
            (SlotState::Claiming, "claiming"),
            (SlotState::Reading, "reading"),
            (SlotState::Handling, "handling"),
            (SlotState::Keepalive, "keepalive"),
            (SlotState::Closing, "closing"),
            (SlotState::EndingClosed, "ending"),
            (SlotState::EndingReclaimed, "ending"),
        ];
        for (stored, name) in shown {
            assert_eq!(ShownState::from(stored).name(), name);
        }
        let derived = [
            ShownState::CloseWait,
            ShownState::ForceClosed,
            ShownState::Rescued,
        ];
        let names: Vec<&str> = derived.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["close_wait", "force_closed", "rescued"]);
    }
}
