//! Detection in proportion to what can be stuck (issue 10): with 3,000 idle keep-alive
//! connections on a real Apache (event MPM), the scan looks up only the connections in flight,
//! and one client that gave up on a stuck CGI is still found and closed on time.
//!
//! `SocketGuardFullScanInterval 60s`: after the guard process's first scan (a full dump) every
//! scan in the test is made of lookups, so the close is the lookups' doing; the status page
//! says how many each scan made (`LastScanLookups`) and whether it was a dump
//! (`LastScanFull`, `FullScans`).

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::{hold_keepalive, Conn, Mpm, StatusAuto};
use guard::*;
use std::time::{Duration, Instant};

const IDLE: usize = 3_000;
/// Opened this many at a time: a child whose every worker is busy at once closes its
/// keep-alive connections (event.c, "all workers are busy").
const BATCH: usize = 10;
/// Event sized to hold every idle connection without a thread: per child ThreadsPerChild +
/// idle threads x AsyncRequestWorkerFactor, 32 + 32 x 100.
const TUNING: &str = "StartServers 4\nServerLimit 4\nThreadLimit 32\nThreadsPerChild 32\n\
MinSpareThreads 32\nMaxSpareThreads 128\nMaxRequestWorkers 128\nAsyncRequestWorkerFactor 100\n";
/// At most this many requests are in flight while the test samples the scans: the status
/// request itself, and the stuck CGI.
const IN_FLIGHT: u64 = 2;

fn start() -> CgiServer {
    let opts = opts_with_cgi(Mpm::Event, 8)
        .tuning(TUNING)
        .global(
            "KeepAliveTimeout 300\nMaxKeepAliveRequests 0\nSocketGuardSlots 4096\n\
             SocketGuardFullScanInterval 60s\n",
        )
        .extra_ports(1)
        .vhosts(&vhost_block("@PORT1@", "on.test", "On", "1s"));
    start_with_cgi(opts)
}

/// The scans of the next `n` intervals as the status page reports them, one sample per new
/// scan: (LastScanLookups, LastScanFull, LastScanUs).
fn sample_scans(server: &CgiServer, n: usize) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let mut last = server.status_auto().num("Scans");
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        assert!(Instant::now() < deadline, "scans stopped: {out:?}");
        std::thread::sleep(SCAN_INTERVAL / 4);
        let s = server.status_auto();
        if s.num("Scans") > last {
            last = s.num("Scans");
            let full = s.num("LastScanFull");
            out.push((s.num("LastScanLookups"), full, s.num("LastScanUs")));
        }
    }
    out
}

fn open_idle(server: &CgiServer) -> Vec<Conn> {
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE / BATCH {
        idle.extend(hold_keepalive(server.port(), BATCH, "/index.html", None));
    }
    common::poll(
        Duration::from_secs(30),
        "every idle connection tracked",
        || {
            let s: StatusAuto = server.status_auto();
            match s.num("OpenKeepalive") {
                n if n >= IDLE as u64 => Ok(()),
                n => Err(format!("{n} keep-alive connections tracked")),
            }
        },
    );
    idle
}

#[test]
fn thousands_of_idle_connections_cost_no_lookups_event() {
    let server = start();
    let p1 = server.extra_port(1);
    let idle = open_idle(&server);

    let quiet = sample_scans(&server, 10);
    eprintln!("{IDLE} idle: (lookups, full, µs) of 10 scans: {quiet:?}");
    assert!(
        quiet
            .iter()
            .all(|&(lookups, full, _)| full == 0 && lookups <= IN_FLIGHT),
        "with {IDLE} idle keep-alive connections a scan must look up only the requests in \
         flight (at most {IN_FLIGHT}), and not dump: {quiet:?}\n{}",
        server.status_auto().raw
    );

    // One client gives up on a stuck CGI of the AutoClose On vhost.
    let full_before = server.status_auto().num("FullScans");
    let stuck = slow_clients(p1, None, 1, 30);
    wait_rows(
        &server,
        &conn_ids(&stuck),
        Duration::from_secs(10),
        "the slow CGI request being handled",
        handling_slow,
    );
    let t0 = Instant::now();
    stuck[0].shutdown_write();
    let limit = TIMEOUT + 2 * SCAN_INTERVAL + TOLERANCE;
    read_until_fin(&stuck[0], limit).unwrap_or_else(|e| {
        panic!(
            "the stuck connection was not closed within {limit:?}: {e}\n{}\n{}",
            server.status_auto().raw,
            server.error_log_tail(30)
        )
    });
    let took = t0.elapsed();
    eprintln!("stuck connection closed {took:?} after its client's FIN (timeout {TIMEOUT:?})");
    assert!(took >= TIMEOUT, "closed before its timeout: {took:?}");

    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedGuard"), 1, "{}", s.raw);
    assert_eq!(
        s.num("FullScans"),
        full_before,
        "found by lookups, not by a full dump: {}",
        s.raw
    );
    let busy = sample_scans(&server, 5);
    eprintln!("after the close: (lookups, full, µs) of 5 scans: {busy:?}");
    assert!(
        busy.iter().all(|&(lookups, _, _)| lookups <= IN_FLIGHT),
        "{busy:?}"
    );
    // The idle connections were left alone.
    assert!(s.num("OpenKeepalive") >= IDLE as u64, "{}", s.raw);
    assert_eq!(idle.len(), IDLE);
}
