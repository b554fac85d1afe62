//! The guard process: one process per server, forked by Apache's root parent after the
//! configuration is read (the way mod_cgid starts its daemon), that does what a failed child
//! cannot do for itself:
//! - reclaims the slots of children that died, within `RECLAIM_EVERY_MS` (the parent's monitor
//!   hook, every ~10 s, stays as backstop);
//! - runs the one kernel scan per interval for the whole server (it holds the scanner role;
//!   if the guard process is gone, the children's election takes over again);
//! - rescues the CLOSE_WAIT sockets of hung children (`hung`).
//!
//! It runs as the `User` with CAP_SYS_PTRACE as its only capability (see ffi::guard_process)
//! and treats the shared table as hostile input.

mod children;
pub mod hung;
pub mod untracked;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::clock::mono_ms;
use crate::config::{MAX_SCAN_INTERVAL_MS, MIN_SCAN_INTERVAL_MS};
use crate::guard::{election, history, pass as guard_pass, scan};
use crate::kernel::{sock_diag::DiagSocket, KernelSocket, TCP_CLOSE_WAIT};
use crate::messages::{self, log_safe, LogSink, Severity};
use crate::sys::socket::Refusal;
use crate::sys::{pidfd, procfs};
use crate::table::layout::guard_reach;
use crate::table::SharedTable;
use hung::{ChildId, Outcome, Reach};

/// How often dead children are looked for: a killed child's rows go within this (≤ 1 s).
pub const RECLAIM_EVERY_MS: u64 = 250;

/// pidfd + pidfd_getfd into this server's children, verified against the kernel.
pub struct KernelReach {
    root: u32,
    log: LogSink,
    denied_logged: bool,
    /// A descriptor was taken out of another process at least once: reach is proven.
    reached: bool,
}

impl Reach for KernelReach {
    fn is_our_child(&mut self, c: ChildId) -> bool {
        procfs::stat(c.pid).is_some_and(|st| {
            st.ppid == self.root && st.start_time == c.start_time && st.state != 'Z'
        })
    }

    fn shutdown_in(&mut self, c: ChildId, fd: i32, k: &KernelSocket) -> Result<(), Refusal> {
        self.take_and_shut(c.pid, fd, k, |me| me.is_our_child(c))
    }
}

impl untracked::Holders for KernelReach {
    fn find(&mut self, inodes: &HashSet<u64>) -> HashMap<u64, untracked::Holder> {
        let me = std::process::id();
        crate::sys::process::socket_holders(inodes, me)
            .into_iter()
            .filter_map(|(inode, (pid, fd))| {
                let st = procfs::stat(pid)?;
                Some((
                    inode,
                    untracked::Holder {
                        pid,
                        fd,
                        start_time: st.start_time,
                        comm: crate::sys::process::comm(pid),
                        is_apache_child: st.ppid == self.root || pid == self.root,
                    },
                ))
            })
            .collect()
    }

    fn shutdown_in(&mut self, h: &untracked::Holder, k: &KernelSocket) -> Result<(), Refusal> {
        self.take_and_shut(h.pid, h.fd, k, |_| {
            procfs::stat(h.pid).is_some_and(|st| st.start_time == h.start_time)
        })
    }
}

impl KernelReach {
    /// Takes a duplicate of `pid`'s descriptor `fd` and shuts it down if it is still the
    /// kernel's CLOSE_WAIT socket `k`. `still_same` runs once the pidfd pins the process, so
    /// a pid reused before that is caught.
    fn take_and_shut(
        &mut self,
        pid: u32,
        fd: i32,
        k: &KernelSocket,
        still_same: impl FnOnce(&mut Self) -> bool,
    ) -> Result<(), Refusal> {
        let pidfd = pidfd::open(pid).map_err(|_| Refusal::Gone)?;
        if !still_same(self) {
            return Err(Refusal::Gone);
        }
        let dup = pidfd::get_fd(&pidfd, fd).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                self.cannot_reach(&e);
            }
            Refusal::Io(e.to_string())
        })?;
        self.reached = true;
        crate::sys::socket::shutdown_taken(&dup, k.inode, k.local, k.remote, TCP_CLOSE_WAIT)
    }

    fn cannot_reach(&mut self, e: &std::io::Error) {
        if !std::mem::replace(&mut self.denied_logged, true) {
            (self.log)(Severity::Warn, messages::RESCUE_DEGRADED, &format!(
                "the guard process cannot take descriptors out of children ({e}; it needs CAP_SYS_PTRACE, or the same user as dumpable children): hung children's CLOSE_WAIT sockets are shown and reported, not closed"
            ));
        }
    }
}

/// The guard process's loop. Returns only when the root parent is gone.
/// `can_reach`: whether it can take descriptors out of children at all (CAP_SYS_PTRACE kept,
/// or a non-root Apache); without, hung and leaked sockets are shown and reported only.
pub fn run(table: SharedTable, root: u32, log: LogSink, can_reach: bool) {
    let me = std::process::id();
    let h = table.header();
    h.guard_pid.store(me, Relaxed);
    if !can_reach {
        h.guard_reach.store(guard_reach::NONE, Relaxed);
    }
    let mut pass = Pass::new(root, log, can_reach);
    let mut diag = DiagSocket::open().ok();
    let mut backlog_reported = false;
    let mut next_scan = 0;
    let mut children = children::ChildWatch::default();
    while std::os::unix::process::parent_id() == root {
        let now = mono_ms();
        let reclaimed = reclaim_dead_children(&table, &mut children);
        if reclaimed > 0 {
            log(
                Severity::Notice,
                messages::SLOTS_RECLAIMED,
                &format!(
                    "guard process reclaimed {reclaimed} connection slots of children that died"
                ),
            );
        }
        if now >= next_scan {
            let interval = h
                .scan_interval_ms
                .load(Relaxed)
                .clamp(MIN_SCAN_INTERVAL_MS, MAX_SCAN_INTERVAL_MS);
            next_scan = now + interval;
            // The scanner role is ours whoever held it (a child, while we were gone or
            // stopped): one scan for the server, here, where the rescue needs it. After
            // someone else scanned, learn the marks afresh (a new scanner's first scan is a
            // full dump).
            if !election::hold(&table, me, now) {
                pass.scanner = scan::Scanner::default();
            }
            let started = Instant::now();
            // A full dump when its period is up, or when an untracked socket it found is due
            // to be classified (so a leaked socket is closed at its timeout, not a period
            // later).
            let full = pass.scanner.full_due(now) || pass.untracked.due(now);
            let result = guard_pass::ask_kernel(&pass.scanner, &table, diag.as_mut(), full, now);
            // A failed scan, or one of lookups only, says nothing about the backlog: keep
            // the episode.
            if let Some(backlog) = pass.after_scan(&table, result, started) {
                report_backlog(log, backlog, &mut backlog_reported);
            }
        }
        let wait = next_scan
            .saturating_sub(mono_ms())
            .clamp(1, RECLAIM_EVERY_MS);
        std::thread::sleep(Duration::from_millis(wait));
    }
}

/// Frees the rows and slots of children that ended. Only the child rows are checked (through
/// pidfds); the slots are walked only when one of them died. Slots of a process without a row
/// are left to the parent's monitor hook, which walks everything.
fn reclaim_dead_children(table: &SharedTable, children: &mut children::ChildWatch) -> u64 {
    let dead = table.reclaim_dead_children(|pid, start| children.is_alive(pid, start));
    let rows: Vec<u32> = table
        .children()
        .iter()
        .map(|c| c.pid.load(Relaxed))
        .filter(|p| *p != 0)
        .collect();
    children.keep_only(&rows);
    if dead.is_empty() {
        return 0;
    }
    table.reclaim_slots(std::process::id(), |pid| !dead.contains(&pid))
}

/// Says once per episode that connections were abandoned in the listen queue.
fn report_backlog(log: LogSink, backlog: usize, reported: &mut bool) {
    if backlog > 0 && !*reported {
        log(Severity::Warn, messages::BACKLOG, &format!(
            "{backlog} connection(s) in CLOSE_WAIT were never accepted: their clients gave up while every worker was busy (a capacity problem: raise MaxRequestWorkers or stop stuck handlers with SocketGuardAbandonedTimeout); the module does not close them"
        ));
    }
    *reported = backlog > 0;
}

/// What the scans of the guard process carry from one to the next.
struct Pass {
    reach: KernelReach,
    scanner: scan::Scanner,
    untracked: untracked::Untracked,
    log: LogSink,
    can_reach: bool,
}

impl Pass {
    fn new(root: u32, log: LogSink, can_reach: bool) -> Pass {
        Pass {
            reach: KernelReach {
                root,
                log,
                denied_logged: false,
                reached: false,
            },
            scanner: scan::Scanner::default(),
            untracked: untracked::Untracked::default(),
            log,
            can_reach,
        }
    }

    /// One scan's answer (begun at `started`): applied to the table, hung children's
    /// sockets rescued, and after a full dump the untracked ones classified. Returns the
    /// backlog count after a full dump; None after lookups, or when the scan failed: then
    /// nothing is touched, because a failed scan is no list at all — taken as an empty one
    /// it would end every CLOSE_WAIT period (timers restart, AutoClose is delayed) and forget
    /// when each untracked socket was first seen.
    fn after_scan(
        &mut self,
        table: &SharedTable,
        result: Result<guard_pass::Answer, String>,
        started: Instant,
    ) -> Option<usize> {
        let now = mono_ms();
        let applied = result.map(|a| guard_pass::apply(&mut self.scanner, table, a, now));
        if let Ok((outcome, _)) = &applied {
            history::sample_if_due(table, outcome, now);
            guard_pass::record(table, outcome);
        }
        let cost_us = started.elapsed().as_micros() as u64;
        election::beat(table, mono_ms(), cost_us, applied.is_ok());
        let (_, dump) = applied.ok()?;
        self.rescue(table, dump.as_deref(), now)
    }

    /// Hung children's sockets the scan confirmed, and after a full dump its untracked ones.
    /// Returns the backlog count after a full dump.
    fn rescue(
        &mut self,
        table: &SharedTable,
        dump: Option<&[KernelSocket]>,
        now: u64,
    ) -> Option<usize> {
        let (log, reach) = (self.log, &mut self.reach);
        let rescue_on = self.can_reach && table.header().rescue.load(Relaxed) != 0;
        let mut out = Vec::new();
        hung::rescue_hung(
            table,
            self.scanner.confirmed(),
            now,
            rescue_on,
            reach,
            &mut out,
        );
        for r in &out {
            log_rescue(log, r);
        }
        let backlog = dump.map(|sockets| {
            let mut leaks = Vec::new();
            let backlog = self
                .untracked
                .pass(table, sockets, now, rescue_on, reach, &mut leaks);
            for e in &leaks {
                log_leak(log, e);
            }
            backlog
        });
        let h = table.header();
        if reach.denied_logged {
            h.guard_reach.store(guard_reach::NONE, Relaxed);
        } else if reach.reached {
            h.guard_reach.store(guard_reach::CHILDREN, Relaxed);
        }
        backlog
    }
}

fn log_leak(log: LogSink, e: &untracked::LeakEvent) {
    let who = format!(
        "client {}, vhost {}, held by pid {} ({}), not an Apache child",
        e.client,
        log_safe(&e.vhost),
        e.holder_pid,
        log_safe(&e.holder_comm)
    );
    let secs = e.close_wait_ms as f64 / 1000.0;
    match &e.outcome {
        untracked::Outcome::Closed => log(Severity::Notice, messages::RESCUED, &format!(
            "rescued a leaked socket in CLOSE_WAIT for {secs:.1}s ({who}); closed by the guard process with shutdown() on a duplicate taken out of the holder, the client got a FIN; the holder keeps running"
        )),
        untracked::Outcome::Reported => log(Severity::Warn, messages::REPORTED, &format!(
            "leaked socket in CLOSE_WAIT for {secs:.1}s ({who}); not closed: SocketGuardAutoClose Report or SocketGuardRescue Off"
        )),
        untracked::Outcome::Refused(why) => log(Severity::Debug, messages::CLOSE_SKIPPED, &format!(
            "guard process did not close a leaked socket ({who}): {why}"
        )),
    }
}

fn log_rescue(log: LogSink, r: &hung::Rescue) {
    let request = messages::request_text(&r.method, &r.path);
    let who = format!(
        "client {}, vhost {}, pid {} (hung for {:.1}s), request {request}",
        r.client,
        log_safe(&r.vhost),
        r.pid,
        r.hung_ms as f64 / 1000.0
    );
    let secs = r.close_wait_ms as f64 / 1000.0;
    match &r.outcome {
        Outcome::Rescued => log(Severity::Notice, messages::RESCUED, &format!(
            "rescued a connection stuck in CLOSE_WAIT for {secs:.1}s in a hung child ({who}); closed by the guard process with shutdown() on a duplicate taken out of the child, the client got a FIN"
        )),
        Outcome::Reported => log(Severity::Warn, messages::REPORTED, &format!(
            "connection stuck in CLOSE_WAIT for {secs:.1}s in a hung child ({who}); not closed: SocketGuardAutoClose Report or SocketGuardRescue Off"
        )),
        Outcome::Refused(why) => log(Severity::Debug, messages::CLOSE_SKIPPED, &format!(
            "guard process did not close a socket of a hung child ({who}): {why}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AutoClose;
    use crate::kernel::diag_lookup::Lookup;
    use crate::table::HeapTable;

    fn no_log(_: Severity, _: messages::MsgId, _: &str) {}

    #[test]
    fn a_failed_scan_ends_no_close_wait_period_and_forgets_nothing() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let vhost = heap.vhost_with("a", AutoClose::On, 60_000);
        let h = heap.stuck_connection(100, vhost, 42, 5);
        let since = || t.owned(h).unwrap().close_wait_since(h.tag).unwrap_or(0);
        let mut pass = Pass::new(1, no_log, false);
        let dump = |v: Vec<KernelSocket>| Ok(guard_pass::Answer::Dump(v));
        // A complete scan: the tracked socket and an untracked one in CLOSE_WAIT.
        let both = vec![HeapTable::stuck_socket(42), HeapTable::stuck_socket(77)];
        assert_eq!(pass.after_scan(&t, dump(both), Instant::now()), Some(0));
        assert_eq!((since(), pass.untracked.watching()), (5, 1));
        // A failed scan: no list, so nothing changes (only the error is counted).
        let failed = pass.after_scan(&t, Err("no /proc".into()), Instant::now());
        assert_eq!(failed, None);
        assert_eq!(since(), 5, "the CLOSE_WAIT period goes on");
        assert_eq!(pass.untracked.watching(), 1, "the first sighting is kept");
        assert_eq!(t.header().scan_errors.load(Relaxed), 1);
        // Lookups, the tracked one still in CLOSE_WAIT: nothing is said about the backlog,
        // and the untracked socket's sighting is kept.
        let c = pass.scanner.candidates(&t, &[80], &HashSet::new());
        let found = vec![Lookup::Found(HeapTable::stuck_socket(42))];
        let lookups = Ok(guard_pass::Answer::Lookups(c, found));
        assert_eq!(pass.after_scan(&t, lookups, Instant::now()), None);
        assert_eq!((since(), pass.untracked.watching()), (5, 1));
        // Control: a complete scan that finds nothing does end both.
        assert_eq!(
            pass.after_scan(&t, dump(Vec::new()), Instant::now()),
            Some(0)
        );
        assert_eq!((since(), pass.untracked.watching()), (0, 0));
    }
}
