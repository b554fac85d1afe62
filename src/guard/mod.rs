//! The per-child guard thread.
//!
//! Every interval it checks in (proving the child is not hung); if this child holds the scanner
//! role it dumps the kernel's CLOSE_WAIT sockets once for the whole server and marks them in the
//! table (`scan`, which also feeds the leak report, `leaks`, and the last hour, `history`);
//! and if the scan flagged one of this child's connections, or one of its deadlines came up,
//! it acts on its own connections (`act`). Between ticks it sleeps until the
//! next tick or the earliest deadline, whichever is first, so a close happens within
//! milliseconds of the timeout once the connection is known to be in CLOSE_WAIT.

pub(crate) mod abandon;
pub(crate) mod act;
pub(crate) mod election;
pub(crate) mod history;
pub(crate) mod leaks;
pub mod pass;
pub mod scan;
pub(crate) mod stopper;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::clock::mono_ms;
use crate::config::{MAX_SCAN_INTERVAL_MS, MIN_SCAN_INTERVAL_MS};
use crate::kernel::sock_diag::DiagSocket;
use crate::messages::{self, log_safe, LogSink, Severity};
use crate::table::SharedTable;

/// What the guard loop needs to know about its child.
#[derive(Clone, Copy)]
pub struct Child {
    pub pid: u32,
    pub row: usize,
    pub log: LogSink,
    /// Worker/event (many connections per child) rather than prefork.
    pub threaded: bool,
    pub generation: u64,
}

/// Starts the guard loop in a detached thread. Signals are blocked in the thread so that
/// Apache's signal handling keeps running on the threads that expect it. The thread is never
/// joined: when `exiting` is set it stops acting, and the child's exit ends it. (Joining would
/// have to happen in the child's exit cleanup, which prefork runs inside a signal handler.)
pub fn start(
    table: SharedTable,
    child: Child,
    exiting: &'static AtomicBool,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("socket-guard".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            block_all_signals();
            // A panic here must not pass silently: log it; the child keeps serving,
            // only without its guard.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Guard::new(table, child, exiting).run()
            }));
            if run.is_err() {
                (child.log)(Severity::Error, messages::PANIC_CAUGHT, &format!(
                    "internal error in the guard thread of pid {}: it stopped; connections are still tracked but not scanned or closed by this child",
                    child.pid
                ));
            }
        })
        .map(drop)
}

struct Guard {
    table: SharedTable,
    child: Child,
    exiting: &'static AtomicBool,
    procs: stopper::RealProcesses,
    /// Some connection of this child may be abandoned: run the abandoned-work pass.
    watch_abandoned: bool,
    /// Earliest step of the abandoned-work pass still to come.
    stop_deadline: Option<u64>,
    diag: Option<DiagSocket>,
    diag_failed: bool,
    scanning: bool,
    scanner: scan::Scanner,
    scan_failing: bool,
    deadline: Option<u64>,
}

impl Guard {
    fn new(table: SharedTable, child: Child, exiting: &'static AtomicBool) -> Guard {
        Guard {
            table,
            child,
            exiting,
            procs: stopper::RealProcesses::new(child.pid, child.log),
            watch_abandoned: false,
            stop_deadline: None,
            diag: None,
            diag_failed: false,
            scanning: false,
            scanner: scan::Scanner::default(),
            scan_failing: false,
            deadline: None,
        }
    }

    /// Opens the netlink socket the first time this child scans (most children never do).
    fn open_diag(&mut self) {
        if self.diag.is_none() && !self.diag_failed {
            match DiagSocket::open() {
                Ok(d) => self.diag = Some(d),
                Err(e) => {
                    self.diag_failed = true;
                    (self.child.log)(
                        Severity::Warn,
                        messages::SCAN_FALLBACK,
                        &format!(
                            "sock_diag netlink unavailable ({e}): scanning /proc/net/tcp instead"
                        ),
                    );
                }
            }
        }
    }

    fn run(&mut self) {
        while !self.exiting.load(Relaxed) {
            let now = mono_ms();
            let interval = self.interval_ms();
            self.table.check_in(self.child.row, now);
            if election::take_turn(&self.table, self.child.pid, now, interval) {
                if !self.scanning {
                    // Another process scanned meanwhile: learn its marks afresh.
                    self.scanner = scan::Scanner::default();
                    (self.child.log)(
                        Severity::Debug,
                        messages::SCANNER_ELECTED,
                        &format!(
                        "pid {} now scans the kernel for CLOSE_WAIT sockets every {interval} ms",
                        self.child.pid
                    ),
                    );
                }
                self.scanning = true;
                self.scan();
            } else {
                self.scanning = false;
            }
            self.act_if_needed();
            self.stop_abandoned_work();
            let next_tick = now + interval;
            let wake = [self.deadline, self.stop_deadline]
                .into_iter()
                .flatten()
                .fold(next_tick, u64::min);
            let wait = wake.saturating_sub(mono_ms()).max(1);
            std::thread::sleep(Duration::from_millis(wait));
        }
    }

    fn interval_ms(&self) -> u64 {
        self.table
            .header()
            .scan_interval_ms
            .load(Relaxed)
            .clamp(MIN_SCAN_INTERVAL_MS, MAX_SCAN_INTERVAL_MS)
    }

    fn scan(&mut self) {
        let started = Instant::now();
        self.open_diag();
        let (scanner, table) = (&self.scanner, &self.table);
        let full = scanner.full_due(mono_ms());
        let result = pass::ask_kernel(scanner, table, self.diag.as_mut(), full, mono_ms());
        let ok = result.is_ok();
        match result {
            Ok(answer) => {
                let now = mono_ms();
                let (outcome, _) = pass::apply(&mut self.scanner, &self.table, answer, now);
                history::sample_if_due(&self.table, &outcome, now);
                pass::record(&self.table, &outcome);
                self.scan_failing = false;
            }
            // A failed scan is no list: applying it as an empty one would end every
            // CLOSE_WAIT period (timers restart, AutoClose is delayed), so it is skipped.
            Err(e) if !self.scan_failing => {
                self.scan_failing = true;
                (self.child.log)(
                    Severity::Warn,
                    messages::SCAN_FAILED,
                    &format!("kernel scan failed: {e}"),
                );
            }
            Err(_) => {}
        }
        election::beat(
            &self.table,
            mono_ms(),
            started.elapsed().as_micros() as u64,
            ok,
        );
    }

    fn act_if_needed(&mut self) {
        let row = &self.table.children()[self.child.row];
        let flagged = row.pending.swap(0, Relaxed) != 0;
        let due = self.deadline.is_some_and(|d| mono_ms() >= d);
        if !flagged && !due {
            return;
        }
        let mut events = Vec::new();
        self.deadline = act::act_on_own(
            &self.table,
            self.child.pid,
            mono_ms(),
            &mut act::SocketCloser,
            &mut events,
        );
        for e in events {
            log_event(self.child.log, &e);
        }
        self.watch_abandoned = true;
    }

    /// The abandoned-work pass (see `abandon`): runs while some connection of this child may
    /// be abandoned, and checks the graceful-restart deadline of an old-generation child.
    /// An old-generation worker/event child learns of a server stop from the table (the MPM
    /// only tells the current generation): it ends its in-flight CGIs like the current
    /// generation's children do in `child_stopping`, and the overdue rule applies to it.
    fn follow_server_stop(&mut self) {
        let h = self.table.header();
        let generation = h.generation.load(Relaxed);
        if !self.child.threaded
            || self.child.generation >= generation
            || h.server_stop_generation.load(Relaxed) != generation + 1
            || crate::runtime::server_stop_since().is_some()
        {
            return;
        }
        crate::runtime::note_server_stop(mono_ms());
        stopper::stop_cgis_at_server_stop(
            &self.table,
            self.child.pid,
            self.child.log,
            Duration::from_millis(1000),
        );
    }

    fn stop_abandoned_work(&mut self) {
        self.follow_server_stop();
        let now = mono_ms();
        let mut events = Vec::new();
        let mut end = abandon::graceful_deadline(
            &self.table,
            self.child.pid,
            self.child.generation,
            now,
            &mut self.procs,
            &mut events,
        );
        if end.is_none() && (self.watch_abandoned || self.stop_deadline.is_some_and(|d| now >= d)) {
            let d = abandon::stop_abandoned(
                &self.table,
                self.child.pid,
                now,
                self.child.threaded,
                &mut self.procs,
                &mut events,
            );
            self.stop_deadline = d.next;
            self.watch_abandoned = d.next.is_some();
            end = d.end_child;
        }
        if end.is_none() {
            end = runtime_stop_overdue(now)
                .then(|| abandon::Stopped::nothing(abandon::Why::ServerStop));
        }
        for ev in &events {
            stopper::log_stopped(self.child.log, self.child.pid, ev);
        }
        if let Some(ev) = end {
            stopper::end_this_child(&self.table, &self.child, &ev, self.exiting);
        }
    }
}

/// A server stop began over `STOP_OVERDUE_MS` ago and this child still runs (a handler that
/// is not a CGI holds a worker): end it before Apache's "still did not exit" at 3 s.
fn runtime_stop_overdue(now: u64) -> bool {
    matches!(crate::runtime::server_stop_since(), Some(t) if now >= t + STOP_OVERDUE_MS)
}

/// How long after a server stop began a child that still runs is ended by its guard.
pub const STOP_OVERDUE_MS: u64 = 2_000;

fn log_event(log: LogSink, e: &act::Event) {
    let request = messages::request_text(&e.method, &e.path);
    let who = format!(
        "client {}, vhost {}, pid {}, request {request}",
        e.client,
        log_safe(&e.vhost),
        e.pid
    );
    let secs = e.close_wait_ms as f64 / 1000.0;
    match &e.outcome {
        act::Outcome::ForceClosed => log(Severity::Notice, messages::FORCE_CLOSED, &format!(
            "closed a connection stuck in CLOSE_WAIT for {secs:.1}s ({who}); closed by the in-child guard with shutdown(), the client got a FIN"
        )),
        act::Outcome::Reported => log(Severity::Warn, messages::REPORTED, &format!(
            "connection stuck in CLOSE_WAIT for {secs:.1}s, past the timeout ({who}); not closed: SocketGuardAutoClose Report"
        )),
        act::Outcome::Skipped(why) => log(Severity::Debug, messages::CLOSE_SKIPPED, &format!(
            "did not close a connection after {secs:.1}s in CLOSE_WAIT ({who}): {why}"
        )),
    }
}

fn block_all_signals() {
    // SAFETY: sigfillset initialises the set we own; pthread_sigmask only changes this
    // thread's mask. Failure leaves the default mask, which is harmless.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
