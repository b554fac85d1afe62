//! Stable error-log message ids, in the style of httpd's AHnnnnn numbers.
//!
//! Each id names exactly one message and is never reused or renumbered, so administrators can
//! grep for it and monitoring can alert on it. docs/MESSAGES.md lists them for users.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgId(pub &'static str);

/// Shared table created (first start, or layout/size changed).
pub const TABLE_CREATED: MsgId = MsgId("SG0001");
/// Shared table found again after a restart; counters continue.
pub const TABLE_REUSED: MsgId = MsgId("SG0002");
/// Shared memory could not be created: module degrades to doing nothing.
pub const TABLE_UNAVAILABLE: MsgId = MsgId("SG0003");
/// A Rust panic was caught at the FFI boundary.
pub const PANIC_CAUGHT: MsgId = MsgId("SG0004");
/// The table is full: new connections are served untracked (logged once per child).
pub const TABLE_FULL: MsgId = MsgId("SG0005");
/// The parent reclaimed slots of a child that died.
pub const SLOTS_RECLAIMED: MsgId = MsgId("SG0006");
/// A child's guard thread started.
pub const GUARD_STARTED: MsgId = MsgId("SG0007");
/// The guard thread could not be started: tracking continues, no scans from this child.
pub const GUARD_UNAVAILABLE: MsgId = MsgId("SG0008");
/// An existing segment had another layout or size and was replaced.
pub const TABLE_REPLACED: MsgId = MsgId("SG0009");
/// No free child row: this child's guard does not check in (shown as unknown).
pub const CHILD_TABLE_FULL: MsgId = MsgId("SG0010");
/// Retired: the socket's identity (inode) is no longer read at accept but taken from the
/// kernel when the scan first sees the socket in CLOSE_WAIT. Kept so the id is never reused.
#[cfg(test)]
pub const SOCKET_IDENTITY: MsgId = MsgId("SG0011");
/// More distinct servers than vhost rows: the rest share the last row.
pub const VHOSTS_FULL: MsgId = MsgId("SG0012");
/// Retired: a child exited still holding connections (the exit path may not log any more).
/// Kept so the id is never reused (the documentation test lists it).
#[cfg(test)]
pub const CHILD_EXIT_RELEASED: MsgId = MsgId("SG0013");
/// Status page request with a bad query string (answered 400).
pub const BAD_STATUS_QUERY: MsgId = MsgId("SG0014");

/// The guard shut down a connection stuck in CLOSE_WAIT (AutoClose On).
pub const FORCE_CLOSED: MsgId = MsgId("SG0015");
/// A connection stuck in CLOSE_WAIT past the timeout (AutoClose Report), logged once.
pub const REPORTED: MsgId = MsgId("SG0016");
/// The guard did not act: the descriptor no longer names the recorded socket, or it left CLOSE_WAIT.
pub const CLOSE_SKIPPED: MsgId = MsgId("SG0017");
/// sock_diag is unavailable; the scan falls back to /proc/net/tcp (logged once per child).
pub const SCAN_FALLBACK: MsgId = MsgId("SG0018");
/// This child took over the scanner role.
pub const SCANNER_ELECTED: MsgId = MsgId("SG0019");
/// The kernel scan failed (logged once per child until it works again).
pub const SCAN_FAILED: MsgId = MsgId("SG0020");

/// Abandoned work: a request's CGI processes were sent SIGTERM/SIGKILL.
pub const STOPPED_CGI: MsgId = MsgId("SG0021");
/// Abandoned work: this child was ended (prefork recycle, all-abandoned worker/event child,
/// GracefulDeadline, or a server stop that its handlers would otherwise have held up).
pub const STOPPED_CHILD: MsgId = MsgId("SG0022");
/// A process serving abandoned work could not be inspected or signalled (logged once).
pub const STOP_DENIED: MsgId = MsgId("SG0023");

/// The guard process shut down a hung child's CLOSE_WAIT socket.
pub const RESCUED: MsgId = MsgId("SG0024");
/// The guard process cannot take descriptors out of children (no CAP_SYS_PTRACE): said once.
pub const RESCUE_DEGRADED: MsgId = MsgId("SG0025");
/// The guard process started, or died and was restarted.
pub const GUARD_PROCESS: MsgId = MsgId("SG0026");

/// CLOSE_WAIT sockets that were never accepted (backlog): a capacity problem, said once per
/// episode.
pub const BACKLOG: MsgId = MsgId("SG0027");
/// More listening ports than the table records: the rest are not guarded (said at start-up
/// and at each restart).
pub const LISTENERS_UNGUARDED: MsgId = MsgId("SG0028");
/// A combination of directives that cannot work; Apache does not start (configtest fails).
pub const CONFIG_REFUSED: MsgId = MsgId("SG0029");

/// How loud a message from plain-Rust code (the guard thread) should be; the FFI layer maps
/// it to an APLOG level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warn,
    Notice,
    Info,
    Debug,
}

/// Where plain-Rust code sends log lines (Apache's error log in production, a Vec in tests).
pub type LogSink = fn(Severity, MsgId, &str);

/// Makes text from the network safe for a log line: control characters, backslashes and
/// non-ASCII bytes are written as \xNN, so a request path cannot forge log lines.
pub fn log_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A request for a log line, escaped: `GET /path`, or a plain note when the connection is
/// stuck before its first request was read.
pub fn request_text(method: &str, path: &str) -> String {
    if method.is_empty() && path.is_empty() {
        "- (none read yet)".to_string()
    } else {
        format!("{} {}", log_safe(method), log_safe(path))
    }
}

/// Every id, for the uniqueness test and docs.
#[cfg(test)]
pub const ALL: &[MsgId] = &[
    TABLE_CREATED,
    TABLE_REUSED,
    TABLE_UNAVAILABLE,
    PANIC_CAUGHT,
    TABLE_FULL,
    SLOTS_RECLAIMED,
    GUARD_STARTED,
    GUARD_UNAVAILABLE,
    TABLE_REPLACED,
    CHILD_TABLE_FULL,
    SOCKET_IDENTITY,
    VHOSTS_FULL,
    CHILD_EXIT_RELEASED,
    BAD_STATUS_QUERY,
    FORCE_CLOSED,
    REPORTED,
    CLOSE_SKIPPED,
    SCAN_FALLBACK,
    SCANNER_ELECTED,
    SCAN_FAILED,
    STOPPED_CGI,
    STOPPED_CHILD,
    STOP_DENIED,
    RESCUED,
    RESCUE_DEGRADED,
    GUARD_PROCESS,
    BACKLOG,
    LISTENERS_UNGUARDED,
    CONFIG_REFUSED,
];

#[cfg(test)]
mod tests {
    #[test]
    fn log_safe_escapes_control_and_non_ascii() {
        assert_eq!(super::log_safe("/a b"), "/a b");
        assert_eq!(
            super::log_safe("/x\n[error] forged"),
            "/x\\x0a[error] forged"
        );
        assert_eq!(super::log_safe("é\\"), "\\xc3\\xa9\\x5c");
    }

    #[test]
    fn every_id_is_documented_for_users() {
        let doc = include_str!("../docs/MESSAGES.md");
        for id in super::ALL {
            let row = format!("| {} |", id.0);
            assert!(
                doc.contains(&row),
                "{} has no row in docs/MESSAGES.md",
                id.0
            );
        }
    }

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for id in super::ALL {
            assert!(seen.insert(id.0), "duplicate {}", id.0);
            assert!(
                id.0.len() == 6
                    && id.0.starts_with("SG")
                    && id.0[2..].bytes().all(|b| b.is_ascii_digit())
            );
        }
    }
}
