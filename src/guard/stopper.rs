//! The real side of `abandon`: finding a request's processes in /proc, signalling them, ending
//! this child, and the log lines for each stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use super::abandon::{self, Processes, Stopped, Why};
use super::Child;
use crate::clock::mono_ms;
use crate::messages::{self, log_safe, LogSink, Severity};
use crate::sys::process::{self, Proc, SignalError};
use crate::table::SharedTable;

/// Processes below this server's root parent whose environment names the connection.
pub struct RealProcesses {
    /// The Apache parent (this child's parent, as the kernel says).
    root: u32,
    me: u32,
    log: LogSink,
    denied_logged: bool,
}

impl RealProcesses {
    pub fn new(me: u32, log: LogSink) -> RealProcesses {
        RealProcesses {
            root: std::os::unix::process::parent_id(),
            me,
            log,
            denied_logged: false,
        }
    }

    /// Says once that a process of another user could not be reached. EACCES from a process
    /// of our own user is a passing state (mid-exec, exiting) and says nothing.
    fn denied_once(&mut self, pid: u32, what: &str) {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let other_user = std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() != me);
        if other_user && !std::mem::replace(&mut self.denied_logged, true) {
            (self.log)(Severity::Warn, messages::STOP_DENIED, &format!(
                "cannot {what} process {pid} (another user, e.g. suexec?): abandoned work of such processes is not stopped; everything else keeps working"
            ));
        }
    }
}

impl Processes for RealProcesses {
    fn serving(&mut self, client: SocketAddr) -> Vec<Proc> {
        let all = process::all();
        // Below the root's own children (Apache's children and mod_cgid's daemon, never a
        // request's CGI), or re-parented but still in the root's process group.
        let mut candidates: Vec<Proc> = process::descendants_of(&all, self.root)
            .into_iter()
            .filter(|p| p.ppid != self.root)
            .collect();
        for p in process::in_group_of(&all, self.root) {
            if p.ppid != self.root && !candidates.iter().any(|c| c.pid == p.pid) {
                candidates.push(p);
            }
        }
        let me = self.me;
        let mut found = Vec::new();
        for p in candidates.into_iter().filter(|p| p.pid != me) {
            match process::environ(p.pid) {
                Ok(env) if process::environ_names_client(&env, client) => found.push(p),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    self.denied_once(p.pid, "read the environment of")
                }
                Err(_) => {}
            }
        }
        found
    }

    fn signal(&mut self, p: &Proc, sig: i32) -> Result<(), SignalError> {
        let r = process::signal_verified(p, sig);
        if let Err(SignalError::Denied) = r {
            self.denied_once(p.pid, "signal");
        }
        r
    }
}

/// Notice line for a stopped CGI.
pub fn log_stopped(log: LogSink, pid: u32, ev: &Stopped) {
    if ev.pids.is_empty() {
        return;
    }
    let pids: Vec<String> = ev.pids.iter().map(u32::to_string).collect();
    log(
        Severity::Notice,
        messages::STOPPED_CGI,
        &format!(
            "stopped the CGI of an abandoned request: {} to pid {} ({}; {}); reason: {}",
            ev.signal,
            pids.join(", "),
            who(pid, ev),
            gone_for(ev),
            ev.why.text()
        ),
    );
}

fn who(pid: u32, ev: &Stopped) -> String {
    let request = messages::request_text(&ev.method, &ev.path);
    format!(
        "client {}, vhost {}, pid {pid}, request {request}",
        ev.client,
        log_safe(&ev.vhost)
    )
}

fn gone_for(ev: &Stopped) -> String {
    match (ev.why, ev.abandoned_ms) {
        (Why::ServerStop, _) => "in flight at a server stop".into(),
        (_, 0) => "client gone".into(),
        (_, ms) => format!("client gone for {:.1}s", ms as f64 / 1000.0),
    }
}

/// Ends this child because it only serves abandoned work. Prefork: SIGTERM to itself, which
/// runs Apache's normal child exit (`just_die`), and the parent starts a fresh child.
/// Worker/event ignore SIGTERM in a child (the parent talks to them through a pipe), so the
/// child frees its slots and row and SIGKILLs itself, which Apache's parent reaps quietly. So
/// does a child still running 2 s into a server stop (prefork ignores SIGTERM by then).
pub fn end_this_child(table: &SharedTable, child: &Child, ev: &Stopped, exiting: &AtomicBool) {
    abandon::count_child(table, ev.vhost_index);
    let hard = child.threaded || ev.why == Why::ServerStop;
    let how = if ev.why == Why::ServerStop {
        "SIGKILL to itself: the server is stopping and a handler still holds the child"
    } else if child.threaded {
        "SIGKILL to itself (worker/event children ignore SIGTERM); Apache starts a fresh child"
    } else {
        "SIGTERM to itself (Apache's normal child exit); Apache starts a fresh child"
    };
    let what = if ev.client.is_empty() {
        "it holds no live connection".to_string()
    } else {
        format!(
            "its handler still runs for nobody ({}; {})",
            who(child.pid, ev),
            gone_for(ev)
        )
    };
    (child.log)(
        Severity::Notice,
        messages::STOPPED_CHILD,
        &format!(
            "ended child pid {}: {what}; reason: {}; {how}",
            child.pid,
            ev.why.text()
        ),
    );
    exiting.store(true, Relaxed);
    // SAFETY: signals to this very process: getpid() cannot name anything else.
    unsafe {
        if hard {
            table.release_all_of(child.pid);
            table.release_child(child.row, child.pid);
            libc::kill(libc::getpid(), libc::SIGKILL);
        } else {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    }
}

/// At a server stop, in a worker/event child (the `child_stopping` hook, graceful = 0): SIGTERM
/// to every in-flight request's CGI, up to `wait` for them to exit, SIGKILL to the rest. The
/// handlers then see their CGI's end and return, so the child exits long before Apache's
/// "still did not exit" at 3 s.
pub fn stop_cgis_at_server_stop(table: &SharedTable, pid: u32, log: LogSink, wait: Duration) {
    let mut procs = RealProcesses::new(pid, log);
    let mut events = Vec::new();
    let left = abandon::stop_for_server_stop(table, pid, mono_ms(), &mut procs, &mut events);
    for ev in &events {
        log_stopped(log, pid, ev);
    }
    let until = mono_ms() + wait.as_millis() as u64;
    while left.iter().any(process::is_running) && mono_ms() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let still: Vec<Proc> = left.into_iter().filter(process::is_running).collect();
    let killed = abandon::kill_left(&mut procs, &still);
    if killed > 0 {
        log(Severity::Notice, messages::STOPPED_CGI, &format!(
            "server stop: SIGKILL to {killed} CGI process(es) of pid {pid} still running {} ms after SIGTERM",
            wait.as_millis()
        ));
    }
}
