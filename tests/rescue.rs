//! The guard process against a real Apache (prefork, worker and event):
//! - Hung: the holders of 8 abandoned slow requests are SIGSTOPped (whole child processes:
//!   they can do nothing for themselves); the guard process takes each CLOSE_WAIT socket out of
//!   them and shuts it down within HungChildTimeout + 2 scan intervals of the stop, each client
//!   gets a FIN (not a reset), the sockets show as `rescued`, ForceClosedRescue counts 8 with
//!   one SG0024 each; after SIGCONT the server still serves. (Nothing asks the server while
//!   the children are stopped: the FIN is read on the clients.)
//! - A SIGKILLed child's rows are gone within 1 s (the guard process reclaims every 250 ms).
//! - The guard process SIGKILLed is restarted at once (one SG0026), with the counters intact,
//!   and goes on scanning.
//! - It runs as `User` with CAP_SYS_PTRACE as its only capability.

mod common;
#[path = "common/guard.rs"]
mod guard;
#[path = "common/procs.rs"]
mod procs;

use common::{json, Mpm};
use guard::*;
use procs::*;
use std::time::{Duration, Instant};

const HUNG_AFTER: Duration = Duration::from_secs(2);
const HOLDERS: usize = 8;

fn rescue_vhost() -> String {
    vhost_block("@PORT1@", "on.test", "On", "1s")
}

/// ?json, or None on a connection error: right after a child is SIGKILLed, a connection it
/// had just accepted is reset, and the poll must go through that.
fn try_status_json(server: &common::Apache) -> Option<json::Value> {
    let r = server
        .request_on(server.port(), "GET", "/socket-status?json", None, b"")
        .ok()?;
    json::parse(&r.text()).ok()
}

fn guard_pid(server: &common::Apache) -> i32 {
    server.status_auto().num("GuardProcessPid") as i32
}

fn hung_children_are_rescued(mpm: Mpm) {
    let opts = opts_with_cgi(mpm, HOLDERS)
        .global("SocketGuardHungChildTimeout 2s\n")
        .extra_ports(1)
        .vhosts(&rescue_vhost());
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let clients = slow_clients(p1, None, HOLDERS, 30);
    let mut holders: Vec<i32> = clients
        .iter()
        .map(|c| owner_pid(&server, c.local_port(), p1))
        .collect();
    holders.sort();
    holders.dedup();
    let gp = guard_pid(&server);
    assert!(
        gp > 0 && !holders.contains(&gp),
        "a guard process runs: {gp}"
    );
    for p in &holders {
        // SAFETY: kill(2) on children of the server this test started.
        unsafe { libc::kill(*p, libc::SIGSTOP) };
    }
    let stopped = Instant::now();
    for c in &clients {
        c.shutdown_write();
    }
    let limit = HUNG_AFTER + SCAN_INTERVAL * 2 + TOLERANCE;
    let mut results = Vec::new();
    std::thread::scope(|sc| {
        let hs: Vec<_> = clients
            .iter()
            .map(|c| {
                sc.spawn(move || {
                    read_until_fin(c, limit + Duration::from_secs(2)).map(|_| stopped.elapsed())
                })
            })
            .collect();
        results = hs.into_iter().map(|h| h.join().unwrap()).collect();
    });
    let mut took = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let t = r.unwrap_or_else(|e| panic!("client #{i}: {e}\n{}", server.error_log_tail(30)));
        took.push(t);
    }
    let slowest = *took.iter().max().unwrap();
    eprintln!(
        "[measured] {}: FIN {:?}..{:?} after SIGSTOP",
        mpm.name(),
        took.iter().min().unwrap(),
        slowest
    );
    assert!(
        slowest <= limit,
        "rescued after {slowest:?} (limit {limit:?})"
    );
    assert!(
        *took.iter().min().unwrap() >= HUNG_AFTER - Duration::from_millis(300),
        "rescued before the child was hung: {took:?}"
    );
    // Resume them before asking the server anything: a stopped child can hold new
    // connections in its listener's queue (and, under worker, the accept mutex).
    for p in &holders {
        // SAFETY: kill(2) on children of the server this test started.
        unsafe { libc::kill(*p, libc::SIGCONT) };
    }
    let j = server.status_json();
    let rescued = j
        .at("connections")
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("state").and_then(json::Value::as_str) == Some("rescued"))
        .count();
    assert_eq!(rescued, HOLDERS, "rows in state rescued");
    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedRescue"), HOLDERS as u64, "{}", s.raw);
    assert_eq!(
        s.num("ForceClosedGuard"),
        0,
        "the hung children did nothing: {}",
        s.raw
    );
    let lines = log_lines(&server, "SG0024");
    assert_eq!(lines.len(), HOLDERS, "{}", lines.join("\n"));
    assert!(lines
        .iter()
        .all(|l| l.contains("closed by the guard process")
            && l.contains("request GET /cgi-bin/slow")));
    assert_eq!(server.get("/small.txt").status, 200);
    server.release_cgis();
}

mpm_tests!(hung_children_are_rescued);

fn killed_childs_rows_go_within_a_second(mpm: Mpm) {
    let server = start_with_cgi(opts_with_cgi(mpm, 4));
    let port = server.port();
    let clients = slow_clients(port, None, 2, 30);
    let victim = owner_pid(&server, clients[0].local_port(), port);
    // SAFETY: kill(2) on a child of the server this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let killed = Instant::now();
    let took = wait_until(
        Duration::from_secs(3),
        "the killed child's rows to go",
        || {
            let Some(j) = try_status_json(&server) else {
                return false;
            };
            let has = |k: &str| {
                j.at(k)
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r.get("pid").and_then(json::Value::as_u64) == Some(victim as u64))
            };
            !has("connections") && !has("children")
        },
    );
    eprintln!(
        "[measured] {}: rows of a SIGKILLed child gone after {took:?}",
        mpm.name()
    );
    assert!(
        killed.elapsed() <= Duration::from_millis(1300),
        "took {:?}",
        killed.elapsed()
    );
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    assert!(server.status_auto().num("Reclaimed") >= 1);
    drop(clients);
}

mpm_tests!(killed_childs_rows_go_within_a_second);

#[test]
fn guard_process_is_restarted_and_runs_with_ptrace_only() {
    let server = common::Apache::start(
        common::Opts::new(Mpm::Event).global("SocketGuardScanInterval 200ms\n"),
    );
    let first = guard_pid(&server);
    assert!(first > 0);
    let status = std::fs::read_to_string(format!("/proc/{first}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(
        field("CapEff:"),
        "0000000000080000",
        "CAP_SYS_PTRACE only:\n{status}"
    );
    assert_eq!(field("Uid:"), "33", "runs as www-data:\n{status}");
    assert_eq!(server.get("/small.txt").status, 200);
    let accepted = server.status_auto().num("Accepted");
    // SAFETY: kill(2) on the guard process of the server this test started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let mut second = 0;
    wait_until(Duration::from_secs(3), "a new guard process", || {
        second = guard_pid(&server);
        second > 0 && second != first && alive(second)
    });
    let s = server.status_auto();
    assert!(s.num("Accepted") > accepted, "counters kept: {}", s.raw);
    let scans = s.num("Scans");
    wait_until(
        Duration::from_secs(3),
        "the new guard process to scan",
        || {
            let s = server.status_auto();
            s.num("Scans") > scans && s.num("ScannerPid") as i32 == second
        },
    );
    let lines: Vec<String> = log_lines(&server, "SG0026")
        .into_iter()
        .filter(|l| l.contains("died"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", server.error_log_tail(20));
    assert!(
        lines[0].contains(&format!("guard process pid {first} died")),
        "{}",
        lines[0]
    );
}

/// A child scans while the guard process is stopped; once it runs again the guard process
/// takes the scanner role back, although the child keeps scanning on time.
#[test]
fn a_resumed_guard_process_takes_the_scanner_role_back() {
    let server = common::Apache::start(
        common::Opts::new(Mpm::Event).global("SocketGuardScanInterval 200ms\n"),
    );
    let guard = guard_pid(&server);
    assert!(guard > 0);
    let scanner = |s: &common::StatusAuto| s.num("ScannerPid") as i32;
    wait_until(Duration::from_secs(3), "the guard process to scan", || {
        scanner(&server.status_auto()) == guard
    });
    // SAFETY: kill(2) on the guard process of the server this test started.
    unsafe { libc::kill(guard, libc::SIGSTOP) };
    let mut child = 0;
    wait_until(Duration::from_secs(5), "a child to take over", || {
        child = scanner(&server.status_auto());
        child != guard && child > 0
    });
    // SAFETY: as above.
    unsafe { libc::kill(guard, libc::SIGCONT) };
    wait_until(
        Duration::from_secs(3),
        "the guard process to scan again",
        || scanner(&server.status_auto()) == guard,
    );
    let scans = server.status_auto().num("Scans");
    wait_until(Duration::from_secs(3), "scans to go on", || {
        let s = server.status_auto();
        s.num("Scans") > scans + 2 && scanner(&s) == guard
    });
}

/// `SocketGuardRescue Off`: the guard process shows and reports a hung child's sockets, it
/// does not close them (prefork: one holder per request).
#[test]
fn rescue_off_only_reports() {
    let opts = opts_with_cgi(Mpm::Prefork, 2)
        .global("SocketGuardHungChildTimeout 1s\nSocketGuardRescue Off\n")
        .extra_ports(1)
        .vhosts(&rescue_vhost());
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let clients = slow_clients(p1, None, 2, 30);
    let holders: Vec<i32> = clients
        .iter()
        .map(|c| owner_pid(&server, c.local_port(), p1))
        .collect();
    for p in &holders {
        // SAFETY: kill(2) on children of the server this test started.
        unsafe { libc::kill(*p, libc::SIGSTOP) };
    }
    for c in &clients {
        c.shutdown_write();
    }
    // The guard process decides on a hung child's socket once: wait for both reports, then
    // two more scans, and the clients must have received nothing.
    let reports = || {
        log_lines(&server, "SG0016")
            .into_iter()
            .filter(|l| l.contains("in a hung child") && l.contains("SocketGuardRescue Off"))
            .count()
    };
    let wait = Duration::from_secs(1) + SCAN_INTERVAL * 2 + TOLERANCE;
    wait_until(wait, "both hung sockets reported", || reports() >= 2);
    server.wait_scans(2);
    for (i, c) in clients.iter().enumerate() {
        expect_silence(c, Duration::from_millis(20)).unwrap_or_else(|e| panic!("client #{i}: {e}"));
    }
    for p in &holders {
        // SAFETY: as above.
        unsafe { libc::kill(*p, libc::SIGCONT) };
    }
    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedRescue"), 0, "{}", s.raw);
    assert_eq!(s.get("Rescue"), Some("Off"), "{}", s.raw);
    assert_eq!(reports(), 2, "{}", server.error_log_tail(20));
    server.release_cgis();
}

/// Apache started without CAP_SYS_PTRACE in its bounding set (a container): it starts and
/// serves, the status page works, one line says what is degraded, and what still works —
/// the guard process and its reclaim of a killed child's rows — is shown to work.
#[test]
fn without_cap_sys_ptrace_rescue_degrades_and_the_rest_works() {
    let server = start_with_cgi(opts_with_cgi(Mpm::Event, 2).without_ptrace());
    assert_eq!(server.get("/small.txt").status, 200);
    let gp = guard_pid(&server);
    assert!(gp > 0 && alive(gp));
    let status = std::fs::read_to_string(format!("/proc/{gp}/status")).unwrap();
    for set in ["CapEff:", "CapPrm:"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(
            line.ends_with("0000000000000000"),
            "no capability at all: {line}"
        );
    }
    let lines = log_lines(&server, "SG0025");
    assert_eq!(lines.len(), 1, "{}", server.error_log_tail(20));
    assert_eq!(server.status_auto().get("GuardProcessReach"), Some("none"));
    assert!(
        lines[0].contains("cannot keep CAP_SYS_PTRACE"),
        "{}",
        lines[0]
    );
    let port = server.port();
    let clients = slow_clients(port, None, 1, 30);
    let victim = owner_pid(&server, clients[0].local_port(), port);
    // SAFETY: kill(2) on a child of the server this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_until(
        Duration::from_secs(1),
        "the killed child's rows to go",
        || {
            let Some(j) = try_status_json(&server) else {
                return false;
            };
            !j.at("children")
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.get("pid").and_then(json::Value::as_u64) == Some(victim as u64))
        },
    );
    drop(clients);
}
