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

/// A connection from `src` (any port) to `dst`:`port`.
fn connect_from(src: [u8; 4], dst: [u8; 4], port: u16) -> std::net::TcpStream {
    let sa = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let (from, to) = (sa(src, 0), sa(dst, port));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket owned by the returned stream; bind and connect read `len` bytes
    // of our sockaddr_in values.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let s = <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let p = |a: &libc::sockaddr_in| a as *const _ as *const libc::sockaddr;
        assert_eq!(libc::bind(fd, p(&from), len), 0, "bind {src:?}");
        assert_eq!(libc::connect(fd, p(&to), len), 0, "connect {dst:?}:{port}");
        s
    }
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

    assert_closed_by_lookups(&server, full_before);
    let busy = sample_scans(&server, 5);
    eprintln!("after the close: (lookups, full, µs) of 5 scans: {busy:?}");
    assert!(
        busy.iter().all(|&(lookups, _, _)| lookups <= IN_FLIGHT),
        "{busy:?}"
    );
    // The idle connections were left alone.
    let s = server.status_auto();
    assert!(s.num("OpenKeepalive") >= IDLE as u64, "{}", s.raw);
    assert_eq!(idle.len(), IDLE);
}

/// The port's listener only (`Listen PORT`: every address, IPv6 with v4-mapped clients where
/// the host has IPv6) and a client from 127.0.0.2 to 127.0.0.3: the slot's local address is
/// the one Apache asked the accepted socket for, and the lookup of that exact tuple finds the
/// stuck connection (no full dump in between).
#[test]
fn a_wildcard_listener_s_stuck_connection_is_found_by_lookup_event() {
    let port = common::free_port();
    let opts = opts_with_cgi(Mpm::Event, 8).global(&format!(
        "SocketGuardFullScanInterval 60s\nListen {port}\n<VirtualHost *:{port}>\n    \
         ServerName any.test\n    SocketGuardAutoClose On\n    SocketGuardCloseWaitTimeout 1s\n\
         </VirtualHost>\n"
    ));
    let server = start_with_cgi(opts);
    let mut c = connect_from([127, 0, 0, 2], [127, 0, 0, 3], port);
    let client_port = c.local_addr().unwrap().port();
    use std::io::Write;
    c.write_all(b"GET /cgi-bin/slow?SLEEP=30 HTTP/1.1\r\nHost: any.test\r\n\r\n")
        .unwrap();
    wait_rows(
        &server,
        &[(client_port, port)],
        Duration::from_secs(10),
        "the slow CGI request being handled",
        handling_slow,
    );
    let full_before = server.status_auto().num("FullScans");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let t0 = Instant::now();
    let limit = TIMEOUT + 2 * SCAN_INTERVAL + TOLERANCE;
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        use std::io::Read;
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}: the connection was reset, not closed"),
        }
        assert!(
            t0.elapsed() < limit,
            "not closed within {limit:?}:\n{}\n{}",
            server.status_auto().raw,
            server.error_log_tail(20)
        );
    }
    assert_closed_by_lookups(&server, full_before);
}

/// The guard closed the one stuck connection, and no full dump ran since `full_before`: the
/// lookups found it.
fn assert_closed_by_lookups(server: &CgiServer, full_before: u64) {
    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedGuard"), 1, "{}", s.raw);
    assert_eq!(
        s.num("FullScans"),
        full_before,
        "found by a full dump, not by lookups: {}",
        s.raw
    );
}
