//! A stop that needs no SIGKILL: at `apache2 -k stop` (SIGTERM to the parent, which is what
//! `-k stop` sends) every request in flight is abandoned by definition. With 10 slow CGI
//! requests in flight (5 clients still connected, 5 gone), every child is gone within 3 s —
//! before Apache's "still did not exit, sending a SIGTERM" (3 s) — no such line is logged, the
//! parent follows within its polling step (at most 1 s), and
//! no CGI it started outlives it, on every MPM, with no directive set.
//!
//! Measured: the handlers return within ~10 ms of the stop; event/worker children then spend
//! up to Apache's 2 s lingering close on the clients still connected, so they are gone in
//! ~1.3-1.9 s; prefork in ~50 ms.
//!
//! The CGI here does not watch the server (unlike the shared slow CGI, which exits when the
//! Apache parent is gone): it sleeps until the test releases it (at most 20 s), like a script
//! stuck on a backend. A control run on event without the module shows the premise: stock
//! Apache takes over 3 s there and logs the line.

mod common;
#[path = "common/guard.rs"]
mod guard;
#[path = "common/procs.rs"]
mod procs;

use common::Mpm;
use guard::*;
use procs::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 10;
const PROMPT: Duration = Duration::from_secs(3);

const STUBBORN_CGI: &str = r#"#!/bin/sh
i=0
while [ "$i" -lt 20 ] && [ ! -e "@STOP@" ]; do
    sleep 1
    i=$((i + 1))
done
printf 'Content-Type: text/plain\r\n\r\ndone\n'
"#;

struct Stopped {
    /// Until the last child exited.
    children_took: Duration,
    /// Until the parent exited (it polls its children at 16 ms × 4ⁿ, at most every second,
    /// so this lags the children by up to a second).
    took: Duration,
    cgis_left: Vec<i32>,
    log: String,
}

fn stop_with_cgis_in_flight(mpm: Mpm, with_module: bool) -> Stopped {
    let mut opts = opts_with_cgi(mpm, IN_FLIGHT + 2);
    if !with_module {
        opts = common::Opts::new(mpm)
            .global(&cgi_global(mpm).replace("SocketGuardScanInterval 200ms\n", ""))
            .tuning(&tuning_for(mpm, IN_FLIGHT + 2))
            .without_module();
    }
    let mut server = start_with_cgi(opts);
    let script = server.dir.path.join("cgi-bin/stubborn");
    let stop_file = server.dir.path.join("cgi-stop");
    std::fs::write(
        &script,
        STUBBORN_CGI.replace("@STOP@", &stop_file.display().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = server.port();
    let mut clients: Vec<common::Conn> = (0..IN_FLIGHT)
        .map(|_| {
            let mut c = common::Conn::connect(port).unwrap();
            c.send_request("GET", "/cgi-bin/stubborn", None, false, &[], b"")
                .unwrap();
            c
        })
        .collect();
    let ports = client_ports(&clients);
    wait_until(Duration::from_secs(10), "every CGI to run", || {
        ports.iter().all(|p| !serving(*p).is_empty())
    });
    // Half of the clients give up; the other half still wait.
    for c in clients.drain(..IN_FLIGHT / 2) {
        c.close();
    }
    let pid = server.pid();
    let children = server.child_pids();
    let start = Instant::now();
    // SAFETY: kill(2) on the Apache parent this test started: what `apache2 -k stop` sends.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut children_took = None;
    while server.is_running() && start.elapsed() < Duration::from_secs(15) {
        if children_took.is_none() && children.iter().all(|p| !alive(*p)) {
            children_took = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed();
    let children_took = children_took.unwrap_or(took);
    // Whatever Apache's own cleanup does, it has finished once the parent is gone; a CGI
    // signalled at the last moment gets 300 ms to finish dying.
    let left = || -> Vec<i32> { ports.iter().flat_map(|p| serving(*p)).collect() };
    let gone = Instant::now();
    while !left().is_empty() && gone.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cgis_left = left();
    let log = server.error_log();
    server.release_cgis();
    server.server.stop();
    drop(clients);
    Stopped {
        children_took,
        took,
        cgis_left,
        log,
    }
}

fn stop_needs_no_sigkill(mpm: Mpm) {
    let s = stop_with_cgis_in_flight(mpm, true);
    eprintln!(
        "[measured] {} with the module: children gone in {:?}, server in {:?}",
        mpm.name(),
        s.children_took,
        s.took
    );
    let late: Vec<&str> = s
        .log
        .lines()
        .filter(|l| l.contains("still did not exit"))
        .collect();
    assert!(
        late.is_empty(),
        "Apache had to chase its children:\n{}",
        late.join("\n")
    );
    assert!(
        s.children_took < PROMPT && s.took < PROMPT + Duration::from_secs(1),
        "the children took {:?} and the server {:?} to stop\n{}",
        s.children_took,
        s.took,
        s.log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(
        s.cgis_left.is_empty(),
        "CGIs outlived the server: {:?}",
        s.cgis_left
    );
}

mpm_tests!(stop_needs_no_sigkill);

#[test]
fn premise_stock_event_needs_sigterm_and_leaves_cgis() {
    let s = stop_with_cgis_in_flight(Mpm::Event, false);
    assert!(
        s.children_took >= PROMPT && s.log.contains("still did not exit"),
        "premise: stock Apache (event, mod_cgid) stopped in {:?} without chasing its children",
        s.took
    );
    eprintln!(
        "[premise] stock event: stopped in {:?}, {} CGI process(es) left running",
        s.took,
        s.cgis_left.len()
    );
    // They end by themselves within 20 s, or now:
    for p in s.cgis_left {
        // SAFETY: kill(2) on a CGI this test started (its environment names our client).
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}
