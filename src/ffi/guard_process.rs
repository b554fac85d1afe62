//! Forks and supervises the guard process (`crate::rescue`), the way mod_cgid does its daemon:
//! forked by the root parent in post_config (never in the config-check pass), noted as a
//! subprocess of the configuration pool (so it is ended at every restart and at stop, and a
//! fresh one is forked for the new generation), and registered as an "other child" so the MPM
//! tells us at once when it dies: it is then forked again, with one log line.

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering::Relaxed;

use super::bindings as b;
use super::boundary::guarded;
use super::callback::callback;
use super::log;
use crate::messages;
use crate::runtime;

/// Lives in the configuration pool: what a restart of the guard process needs.
struct Spawn {
    pconf: *mut b::apr_pool_t,
    process: b::apr_proc_t,
    /// Set when it died: its pid must not be signalled any more (it may be reused).
    dead: bool,
    /// When it was last forked, and how many times in a row it died within a second of that.
    started_ms: u64,
    quick_deaths: u32,
}

/// A guard process that dies this many times in a row within a second of starting is not
/// started again (a fault that a restart cannot fix must not become a fork loop).
const MAX_QUICK_DEATHS: u32 = 5;

/// Parent, post_config: starts the guard process for this generation.
///
/// # Safety
/// `pconf` is the configuration pool of this generation; called in the root parent.
pub unsafe fn start(pconf: *mut b::apr_pool_t) {
    // `apache2 -X` (one process, no children: debugging, callgrind) has nothing to rescue,
    // and a forked helper would only confuse such a run.
    // (`-X` defines DEBUG; `-DONE_PROCESS` is the other spelling the MPMs honour.)
    // SAFETY: a lookup in Apache's list of -D defines, set before the config was read.
    if unsafe {
        b::ap_exists_config_define(c"ONE_PROCESS".as_ptr()) != 0
            || b::ap_exists_config_define(c"DEBUG".as_ptr()) != 0
    } {
        return;
    }
    // SAFETY: apr_palloc returns memory from pconf that lives as long as the registration.
    let sp = unsafe { b::apr_palloc(pconf, std::mem::size_of::<Spawn>()) } as *mut Spawn;
    if sp.is_null() {
        return;
    }
    // SAFETY: `sp` is fresh, properly sized pool memory; we initialise it in full.
    unsafe {
        sp.write(Spawn {
            pconf,
            process: std::mem::zeroed(),
            dead: false,
            started_ms: 0,
            quick_deaths: 0,
        });
        fork_guard(sp);
    }
}

/// # Safety
/// `sp` points to a live `Spawn` in its configuration pool.
unsafe fn fork_guard(sp: *mut Spawn) {
    let root = std::process::id();
    // SAFETY: per the contract; apr_proc_fork fills `process` and forks this process.
    let rv = unsafe {
        (*sp).started_ms = crate::clock::mono_ms();
        b::apr_proc_fork(&mut (*sp).process, (*sp).pconf)
    };
    if rv == b::APR_INCHILD {
        child_main(root); // never returns
    }
    if rv != b::APR_INPARENT {
        log::err(std::ptr::null(), messages::GUARD_PROCESS, &format!(
            "cannot fork the guard process (apr status {rv}): children keep their own guard; hung children are not rescued and dead children are reclaimed only by the monitor hook"
        ));
        return;
    }
    // SAFETY: `process` was filled by apr_proc_fork; pconf outlives both registrations, and
    // `maintenance` gets `sp` back, which lives in pconf.
    unsafe {
        (*sp).dead = false;
        b::apr_pool_note_subprocess((*sp).pconf, &mut (*sp).process, b::APR_KILL_AFTER_TIMEOUT);
        b::apr_proc_other_child_register(
            &mut (*sp).process,
            Some(maintenance),
            sp as *mut c_void,
            std::ptr::null_mut(),
            (*sp).pconf,
        );
    }
    // SAFETY: reading the pid apr_proc_fork wrote.
    let pid = unsafe { (*sp).process.pid };
    log::debug(
        std::ptr::null(),
        messages::GUARD_PROCESS,
        &format!("guard process pid {pid} started"),
    );
}

callback!(
    /// Called by the MPM (root parent) about the guard process: on its death it is forked again.
    #[on_panic((), "guard process maintenance")]
    fn maintenance(reason: c_int, data: *mut c_void, status: c_int) {
        let sp = data as *mut Spawn;
        // SAFETY: `data` is the Spawn registered with this callback, alive in pconf.
        let pid = unsafe { (*sp).process.pid };
        match reason {
            r if r == b::APR_OC_REASON_DEATH || r == b::APR_OC_REASON_LOST => {
                // SAFETY: as above; unregistering calls us again with UNREGISTER, where
                // `dead` keeps us from signalling a pid that may be reused.
                unsafe {
                    (*sp).dead = true;
                    b::apr_proc_other_child_unregister(data);
                }
                if let Some(t) = runtime::table() {
                    let _ = t
                        .header()
                        .guard_pid
                        .compare_exchange(pid as u32, 0, Relaxed, Relaxed);
                }
                if stopping() {
                    return;
                }
                // SAFETY: `sp` is alive in pconf.
                let quick = unsafe {
                    let lived = crate::clock::mono_ms().saturating_sub((*sp).started_ms);
                    (*sp).quick_deaths = if lived < 1_000 {
                        (*sp).quick_deaths + 1
                    } else {
                        0
                    };
                    (*sp).quick_deaths
                };
                if quick >= MAX_QUICK_DEATHS {
                    log::err(std::ptr::null(), messages::GUARD_PROCESS, &format!(
                        "guard process pid {pid} died {quick} times within a second of starting (status {status}): not started again; children keep their own guard, hung children are not rescued"
                    ));
                    return;
                }
                log::warn(
                    std::ptr::null(),
                    messages::GUARD_PROCESS,
                    &format!("guard process pid {pid} died (status {status}); starting a new one"),
                );
                // SAFETY: `sp` is still alive in pconf.
                unsafe { fork_guard(sp) };
            }
            r if r == b::APR_OC_REASON_RESTART => {
                // Only the MPM's reclaim of its children says this: at a stop, a hard restart
                // or the end of a graceful stop, never at a graceful restart.
                note_children_reclaimed();
                // SAFETY: `data` is our registration; this calls us back with UNREGISTER.
                unsafe { b::apr_proc_other_child_unregister(data) };
            }
            r if r == b::APR_OC_REASON_UNREGISTER => {
                // The configuration pool is going (restart or stop): end this generation's
                // guard process; the next generation forks its own.
                // SAFETY: `sp` is alive; a live registration's pid is our unreaped child.
                unsafe {
                    if !(*sp).dead && pid > 0 {
                        libc::kill(pid, libc::SIGTERM);
                    }
                }
            }
            _ => {}
        }
    }
);

/// The MPM is ending every child (it calls the other-child callbacks with RESTART from its
/// reclaim loop, right after the first SIGTERM). The current generation's worker/event children
/// hear of it from the MPM; older ones, still finishing requests after a graceful restart, no
/// longer listen to it, and there may be no child of the current generation yet to pass it on
/// (`child_stopping`): tell them through the table, so they end their requests' CGIs now
/// instead of being SIGKILLed 9 s later.
fn note_children_reclaimed() {
    if let Some(table) = runtime::table() {
        let h = table.header();
        h.server_stop_generation
            .store(h.generation.load(Relaxed) + 1, Relaxed);
    }
}

fn stopping() -> bool {
    let mut state: c_int = 0;
    // SAFETY: ap_mpm_query writes one int for this query code.
    let rv = unsafe { b::ap_mpm_query(b::AP_MPMQ_MPM_STATE, &mut state) };
    rv == 0 && state == b::AP_MPMQ_STOPPING
}

/// The forked guard process. Never returns into Apache.
fn child_main(root: u32) -> ! {
    guarded("guard process", (), || {
        reset_signals();
        // SAFETY: prctl on this process: die with the root parent; name it in ps/top.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            );
            libc::prctl(
                libc::PR_SET_NAME,
                c"socket-guard".as_ptr() as libc::c_ulong,
                0,
                0,
                0,
            );
        }
        if std::os::unix::process::parent_id() != root {
            return; // the parent died between fork and prctl
        }
        close_listeners();
        let can_reach = drop_privileges();
        if let Some(table) = runtime::table() {
            crate::rescue::run(table, root, log::sink, can_reach);
        }
    });
    // SAFETY: _exit ends this forked process without running Apache's atexit handlers or
    // flushing stdio buffers that belong to the parent.
    unsafe { libc::_exit(0) }
}

/// Default dispositions and an empty mask: Apache's handlers (restart, graceful) are the
/// parent's business, and SIGTERM must simply end the guard process.
fn reset_signals() {
    // SAFETY: signal/sigprocmask on this single-threaded forked process.
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// The listening sockets are Apache's: the guard process must not keep them open (a port
/// would stay bound after Apache exits, and its sockets would look held by it).
fn close_listeners() {
    // SAFETY: ap_listeners is the list the parent set up before post_config; in this forked
    // process nobody else uses it; we only read each fd and close our copy.
    unsafe {
        let mut lr = b::ap_listeners;
        while let Some(l) = lr.as_ref() {
            let mut fd: b::apr_os_sock_t = -1;
            if b::apr_os_sock_get(&mut fd, l.sd) == 0 && fd >= 0 {
                libc::close(fd);
            }
            lr = l.next;
        }
    }
}

/// Root-started Apache: become `User`/`Group`, keeping CAP_SYS_PTRACE only. If that capability
/// cannot be kept (a container without it), become `User` without it and say what is lost.
/// Returns whether children can be reached (a non-root Apache's children are its own user's
/// and dumpable, so they can without any capability).
fn drop_privileges() -> bool {
    // SAFETY: geteuid has no preconditions; ap_unixd_config is set by the config (User/Group)
    // before post_config and only read here.
    let (euid, uid, gid) = unsafe {
        (
            libc::geteuid(),
            b::ap_unixd_config.user_id,
            b::ap_unixd_config.group_id,
        )
    };
    if euid != 0 {
        return true; // a non-root Apache: the guard process has its children's user already
    }
    let Err(e) = crate::sys::privilege::drop_to_user_keeping_ptrace(uid, gid) else {
        return true;
    };
    log::warn(std::ptr::null(), messages::RESCUE_DEGRADED, &format!(
        "the guard process cannot keep CAP_SYS_PTRACE ({e}): hung children's and leaked CLOSE_WAIT sockets are shown and reported, not closed"
    ));
    // Normally the drop above already changed the ids; if it failed before that, do it
    // here. SAFETY: plain syscalls on this process; if they fail it must not go on as root.
    let ok = unsafe {
        libc::geteuid() == uid
            || (libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(gid, gid, gid) == 0
                && libc::setresuid(uid, uid, uid) == 0)
    };
    if !ok {
        // SAFETY: ends this forked process at once.
        unsafe { libc::_exit(1) };
    }
    false
}
