//! The guard acting on connections stuck in CLOSE_WAIT, per vhost: `SocketGuardAutoClose On`
//! closes them gracefully (FIN, never RST) after the timeout, `Off` leaves them alone, `Report`
//! logs each one once and counts it. A force-closed connection stays listed until its handler
//! returns.
//!
//! Timing: vhosts use `SocketGuardCloseWaitTimeout 1s`, the server `SocketGuardScanInterval
//! 200ms`. A stuck socket must be gone within timeout + 2 × interval + 1 s (the 1 s is the
//! tolerance for the first detection: scheduling and the scan itself on a busy 2-CPU machine),
//! counted from the moment the last client closed.

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::{Apache, Mpm};
use guard::*;
use std::time::{Duration, Instant};

/// Deadline for all stuck sockets of an `On` vhost to be closed, from the clients' close.
fn close_limit() -> Duration {
    TIMEOUT + 2 * SCAN_INTERVAL + TOLERANCE
}

fn vhost_num(server: &Apache, s: &common::StatusAuto, name: &str, key: &str) -> u64 {
    s.vhost(name)
        .unwrap_or_else(|| {
            panic!(
                "no Vhost line for {name}:\n{}\n--- error.log tail ---\n{}",
                s.raw,
                server.error_log_tail(30)
            )
        })
        .num(key)
}

/// Waits until the kernel shows no CLOSE_WAIT socket on `port`, or panics after `limit`
/// (measured from `t0`). Returns when it happened.
fn wait_close_wait_gone(server: &Apache, port: u16, t0: Instant, limit: Duration) -> Duration {
    loop {
        let left = close_wait_peers(port);
        if left.is_empty() {
            return t0.elapsed();
        }
        if t0.elapsed() > limit {
            panic!(
                "{} server-side CLOSE_WAIT socket(s) still on port {port} {:?} after the clients closed \
                 (limit: timeout {TIMEOUT:?} + 2 x scan interval {SCAN_INTERVAL:?} + tolerance {TOLERANCE:?}): {left:?}\n\
                 --- ss ---\n{}\n--- ?auto ---\n{}\n--- error.log tail ---\n{}",
                left.len(),
                t0.elapsed(),
                ss_close_wait(port),
                server.status_auto().raw,
                server.error_log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks an SG0015/SG0016 line: level, vhost, request, pid of one of our children, and a
/// CLOSE_WAIT duration of at least the timeout and at most timeout + 2 intervals + tolerance.
fn check_action_line(server: &Apache, line: &str, level: &str, vhost: &str, children: &[i32]) {
    assert!(
        line.contains(&format!("[socket_guard:{level}]")),
        "expected a socket_guard {level} line: {line}"
    );
    assert!(
        line.contains(&format!("vhost {vhost},")),
        "line must name vhost {vhost}: {line}"
    );
    assert!(
        line.contains("request GET /cgi-bin/slow"),
        "line must name the request GET /cgi-bin/slow (no query string): {line}"
    );
    assert!(
        !line.contains("SLEEP="),
        "the query string must not be logged: {line}"
    );
    let pid_ok = children
        .iter()
        .any(|p| line.contains(&format!("pid {p},")) || line.contains(&format!("pid {p})")));
    assert!(
        pid_ok,
        "line must name the owning child's pid (children {children:?}): {line}"
    );
    let secs = close_wait_secs(line).unwrap_or_else(|| panic!("no CLOSE_WAIT duration in {line}"));
    let max = (TIMEOUT + 2 * SCAN_INTERVAL + TOLERANCE).as_secs_f64();
    assert!(
        secs >= TIMEOUT.as_secs_f64() && secs <= max,
        "CLOSE_WAIT duration {secs}s must be within [{:?}, {max}s]: {line}\n--- error.log tail ---\n{}",
        TIMEOUT,
        server.error_log_tail(30)
    );
}

/// Test 1: 20 clients of an `AutoClose On` vhost give up on a slow CGI. Half of them close
/// their socket, half only shut down their sending side and keep reading. All 20 server-side
/// CLOSE_WAIT sockets are gone within timeout + 2 intervals + 1 s; each is counted and logged
/// exactly once; the half-closed clients see a clean EOF (FIN), not a reset.
fn autoclose_on_closes_stuck(mpm: Mpm) {
    const N: usize = 20;
    let opts = opts_with_cgi(mpm, N + 2)
        .extra_ports(1)
        .vhosts(&vhost_block("@PORT1@", "on.test", "On", "1s"));
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let on = format!("on.test:{p1}");

    let s0 = server.status_auto();
    assert_eq!(s0.num("ScanIntervalMs"), 200, "{}", s0.raw);
    let v0 = s0
        .vhost(&on)
        .unwrap_or_else(|| panic!("no Vhost line for {on}:\n{}", s0.raw));
    assert_eq!(v0.get("AutoClose"), Some("On"), "{}", v0.raw);
    assert_eq!(v0.num("TimeoutMs"), 1000, "{}", v0.raw);
    assert_eq!(s0.num("ForceClosedGuard"), 0, "{}", s0.raw);

    let conns = slow_clients(p1, None, N, 20);
    let ports = client_ports(&conns);
    wait_rows(
        &server,
        &conn_ids(&conns),
        Duration::from_secs(15),
        "20 slow CGI requests being handled",
        handling_slow,
    );
    assert!(
        close_wait_peers(p1).is_empty(),
        "no CLOSE_WAIT before the clients close:\n{}",
        ss_close_wait(p1)
    );
    let children = server.child_pids();

    // Even clients close their socket, odd ones half-close and keep reading.
    let mut half = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        if i % 2 == 0 {
            c.close();
        } else {
            c.shutdown_write();
            half.push(c);
        }
    }
    let t0 = Instant::now();

    // The kernel sees all 20 in CLOSE_WAIT (before the 1 s timeout can have passed)...
    let seen = close_wait_peers(p1);
    assert_eq!(
        seen,
        ports,
        "right after the clients closed, all 20 server-side sockets must be in CLOSE_WAIT ({:?} after)",
        t0.elapsed()
    );
    // ...and none of them is closed before the timeout.
    let gone_after = wait_close_wait_gone(&server, p1, t0, close_limit());
    assert!(
        gone_after >= TIMEOUT,
        "stuck sockets were closed after {gone_after:?}, before the {TIMEOUT:?} timeout"
    );
    eprintln!("[{mpm:?}] 20 CLOSE_WAIT sockets gone {gone_after:?} after the clients closed");

    // Graceful: each half-closed client reads a clean EOF (the guard's FIN), no data, no reset.
    for c in &half {
        let got = read_until_fin(c, Duration::from_secs(2)).unwrap_or_else(|e| {
            panic!(
                "half-closed client {}: {e}\n--- error.log tail ---\n{}",
                c.local_port(),
                server.error_log_tail(30)
            )
        });
        assert!(
            got.is_empty(),
            "client {} got {} bytes before the FIN although the CGI had not answered: {:?}",
            c.local_port(),
            got.len(),
            String::from_utf8_lossy(&got)
        );
    }

    // Counted once each.
    let s = server.wait_status(Duration::from_secs(2), "ForceClosedGuard 20", |s| {
        match s.num("ForceClosedGuard") {
            20 => Ok(()),
            n => Err(format!("ForceClosedGuard={n}")),
        }
    });
    assert_eq!(
        vhost_num(&server, &s, &on, "ForceClosedGuard"),
        20,
        "{}",
        s.raw
    );
    assert_eq!(vhost_num(&server, &s, &on, "Reported"), 0, "{}", s.raw);
    assert_eq!(s.num("Reported"), 0, "{}", s.raw);
    assert_eq!(s.num("ForceClosedRescue"), 0, "{}", s.raw);
    assert!(
        s.num("CloseWaitSecondsCount") >= 20,
        "the 20 ended CLOSE_WAIT periods must be in the histogram:\n{}",
        s.raw
    );

    // Logged once each, at notice, naming vhost, request, owning pid and duration.
    let lines = common::poll(Duration::from_secs(2), "20 SG0015 lines", || {
        let l = log_lines(&server, "SG0015");
        if l.len() >= 20 {
            Ok(l)
        } else {
            Err(format!("{} lines", l.len()))
        }
    });
    assert_one_line_per_client(&lines, &ports, "SG0015", &server.error_log_tail(50));
    for l in &lines {
        check_action_line(&server, l, "notice", &on, &children);
        assert!(
            l.contains("closed by the in-child guard"),
            "SG0015 must say which path closed it: {l}"
        );
    }
    assert!(
        log_lines(&server, "SG0016").is_empty(),
        "On does not report"
    );

    // Five more passes of every guard: nothing is closed, counted or logged twice.
    server.wait_guard_passes(5);
    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedGuard"), 20, "{}", s.raw);
    assert_eq!(
        vhost_num(&server, &s, &on, "ForceClosedGuard"),
        20,
        "{}",
        s.raw
    );
    assert_eq!(log_lines(&server, "SG0015").len(), 20, "no repeats");
    assert!(close_wait_peers(p1).is_empty(), "{}", ss_close_wait(p1));
    assert!(server.is_running());
    assert!(
        !server.error_log().contains("SG0004"),
        "{}",
        server.error_log()
    );
}

mpm_tests!(autoclose_on_closes_stuck);

/// Test 2: in the same server, an `Off` vhost's stuck clients stay in CLOSE_WAIT untouched
/// (shown as close_wait), a `Report` vhost's are logged once each at warn and counted but not
/// closed, while the `On` vhost's are closed.
fn off_and_report_leave_sockets(mpm: Mpm) {
    const N_ON: usize = 2;
    const N: usize = 8;
    let opts = opts_with_cgi(mpm, N_ON + 2 * N + 2)
        .extra_ports(3)
        .vhosts(&format!(
            "{}{}{}",
            vhost_block("@PORT1@", "on.test", "On", "1s"),
            vhost_block("@PORT2@", "off.test", "Off", "1s"),
            vhost_block("@PORT3@", "report.test", "Report", "1s"),
        ));
    let server = start_with_cgi(opts);
    let (p1, p2, p3) = (
        server.extra_port(1),
        server.extra_port(2),
        server.extra_port(3),
    );
    let (on, off, rep) = (
        format!("on.test:{p1}"),
        format!("off.test:{p2}"),
        format!("report.test:{p3}"),
    );
    let s0 = server.status_auto();
    for (name, mode) in [(&on, "On"), (&off, "Off"), (&rep, "Report")] {
        let v = s0
            .vhost(name)
            .unwrap_or_else(|| panic!("no Vhost line for {name}:\n{}", s0.raw));
        assert_eq!(v.get("AutoClose"), Some(mode), "{}", v.raw);
        assert_eq!(v.num("TimeoutMs"), 1000, "{}", v.raw);
    }

    let on_c = slow_clients(p1, None, N_ON, 20);
    let off_c = slow_clients(p2, None, N, 20);
    let rep_c = slow_clients(p3, None, N, 20);
    let (on_p, off_p, rep_p) = (
        client_ports(&on_c),
        client_ports(&off_c),
        client_ports(&rep_c),
    );
    let all = [conn_ids(&on_c), conn_ids(&off_c), conn_ids(&rep_c)].concat();
    wait_rows(
        &server,
        &all,
        Duration::from_secs(15),
        "all slow CGI requests being handled",
        handling_slow,
    );
    let children = server.child_pids();
    for c in on_c.iter().chain(&off_c).chain(&rep_c) {
        c.shutdown_write();
    }
    let t0 = Instant::now();
    assert_eq!(close_wait_peers(p2), off_p, "{}", ss_close_wait(p2));
    assert_eq!(close_wait_peers(p3), rep_p, "{}", ss_close_wait(p3));

    // The On vhost's are closed and the Report vhost's reported, in the same time frame.
    wait_close_wait_gone(&server, p1, t0, close_limit());
    let left = close_limit().saturating_sub(t0.elapsed()) + Duration::from_millis(100);
    server.wait_status(left, "Reported 8", |s| match s.num("Reported") {
        n if n >= N as u64 => Ok(()),
        n => Err(format!("Reported={n}")),
    });

    // Every connection passed its timeout together (the On ones are closed and the Report
    // ones reported, so the guards have decided); five more passes for repeats or a late close.
    server.wait_guard_passes(5);

    // The kernel still has every Off and Report socket in CLOSE_WAIT.
    assert_eq!(
        close_wait_peers(p2),
        off_p,
        "Off: the stuck sockets must stay ({:?} after close)\n{}\n--- error.log tail ---\n{}",
        t0.elapsed(),
        ss_close_wait(p2),
        server.error_log_tail(30)
    );
    assert_eq!(
        close_wait_peers(p3),
        rep_p,
        "Report: nothing is closed ({:?} after close)\n{}\n--- error.log tail ---\n{}",
        t0.elapsed(),
        ss_close_wait(p3),
        server.error_log_tail(30)
    );
    // Their clients got nothing: no FIN, no data, no reset.
    for c in off_c.iter().chain(&rep_c) {
        expect_silence(c, Duration::from_millis(20))
            .unwrap_or_else(|e| panic!("client {} of Off/Report vhost: {e}", c.local_port()));
    }
    // The On vhost's clients got their FIN.
    for c in &on_c {
        read_until_fin(c, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("On client {}: {e}", c.local_port()));
    }

    let s = server.status_auto();
    assert_eq!(
        s.num("ForceClosedGuard"),
        N_ON as u64,
        "only the On vhost's connections are closed:\n{}",
        s.raw
    );
    assert_eq!(
        s.num("Reported"),
        N as u64,
        "one report per connection:\n{}",
        s.raw
    );
    assert_eq!(
        vhost_num(&server, &s, &on, "ForceClosedGuard"),
        N_ON as u64,
        "{}",
        s.raw
    );
    assert_eq!(vhost_num(&server, &s, &on, "Reported"), 0, "{}", s.raw);
    assert_eq!(
        vhost_num(&server, &s, &off, "ForceClosedGuard"),
        0,
        "{}",
        s.raw
    );
    assert_eq!(vhost_num(&server, &s, &off, "Reported"), 0, "{}", s.raw);
    assert_eq!(
        vhost_num(&server, &s, &off, "CloseWait"),
        N as u64,
        "{}",
        s.raw
    );
    assert_eq!(
        vhost_num(&server, &s, &rep, "ForceClosedGuard"),
        0,
        "{}",
        s.raw
    );
    assert_eq!(
        vhost_num(&server, &s, &rep, "Reported"),
        N as u64,
        "{}",
        s.raw
    );
    assert_eq!(
        vhost_num(&server, &s, &rep, "CloseWait"),
        N as u64,
        "{}",
        s.raw
    );
    assert!(
        s.num("CloseWaitNow") >= 2 * N as u64,
        "CloseWaitNow must count the 16 stuck sockets:\n{}",
        s.raw
    );
    assert!(
        s.num("OpenCloseWait") >= 2 * N as u64,
        "OpenCloseWait must count the 16 stuck connections:\n{}",
        s.raw
    );
    // At least: a status connection of this test may pass through CLOSE_WAIT as it closes.
    assert!(
        s.num("KernelCloseWaitStuck") >= 2 * N as u64,
        "the 16 stuck sockets are class stuck:\n{}",
        s.raw
    );
    assert_eq!(
        s.get("CloseWaitVerdict"),
        Some("leak"),
        "16 sockets in CLOSE_WAIT past their vhost's 1 s timeout:\n{}",
        s.raw
    );

    // JSON shows them as close_wait (class stuck where classes exist), in CLOSE_WAIT for at
    // least the timeout.
    let j = server.status_json();
    let rows = j.at("connections").as_array().expect("connections array");
    for (&p, sp, vh) in off_p
        .iter()
        .map(|p| (p, p2, &off))
        .chain(rep_p.iter().map(|p| (p, p3, &rep)))
    {
        let r = row_for(rows, p, sp)
            .unwrap_or_else(|| panic!("no row for client {p}: {}", j.at("connections")));
        assert_eq!(str_field(r, "state"), "close_wait", "{r}");
        assert_eq!(str_field(r, "vhost"), vh.as_str(), "{r}");
        assert_eq!(str_field(r, "path"), "/cgi-bin/slow", "{r}");
        assert_eq!(str_field(r, "class"), "stuck", "{r}");
        let ms = r.get("close_wait_ms").and_then(common::json::Value::as_u64);
        assert!(
            ms.map(|m| m >= TIMEOUT.as_millis() as u64).unwrap_or(false),
            "close_wait_ms must show at least the timeout: {r}"
        );
    }

    // Logs: exactly one SG0016 (warn) per Report connection, no repeats; none for Off; SG0015
    // only for the On vhost.
    let reports = log_lines(&server, "SG0016");
    assert_one_line_per_client(&reports, &rep_p, "SG0016", &server.error_log_tail(50));
    for l in &reports {
        check_action_line(&server, l, "warn", &rep, &children);
    }
    let closes = log_lines(&server, "SG0015");
    assert_one_line_per_client(&closes, &on_p, "SG0015", &server.error_log_tail(50));
    for l in &closes {
        check_action_line(&server, l, "notice", &on, &children);
    }
    assert!(
        !server.error_log().contains(&format!("vhost {off},")),
        "nothing is logged for the Off vhost:\n{}",
        server.error_log_tail(40)
    );
}

mpm_tests!(off_and_report_leave_sockets);

/// The status page lists a force-closed connection with its method and path, as
/// `force_closed`, for as long as its handler runs; it goes away when the handler returns.
fn force_closed_listed_while_handler_runs(mpm: Mpm) {
    let opts = opts_with_cgi(mpm, 3)
        .extra_ports(1)
        .vhosts(&vhost_block("@PORT1@", "on.test", "On", "1s"));
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let on = format!("on.test:{p1}");

    // The CGI runs until the test releases it, so the handler's lifetime is the test's choice,
    // not a race against the clock.
    let conns = slow_clients(p1, None, 1, 60);
    let port = conns[0].local_port();
    wait_rows(
        &server,
        &[(port, p1)],
        Duration::from_secs(5),
        "the slow request being handled",
        handling_slow,
    );
    conns.into_iter().for_each(|c| c.close());

    let j = wait_rows(
        &server,
        &[(port, p1)],
        close_limit() + Duration::from_millis(500),
        "the connection listed as force_closed",
        |r| match str_field(r, "state") {
            "force_closed" => Ok(()),
            s => Err(format!("state {s}")),
        },
    );
    let rows = j.at("connections").as_array().unwrap();
    let r = row_for(rows, port, p1).unwrap();
    assert_eq!(str_field(r, "method"), "GET", "{r}");
    assert_eq!(str_field(r, "path"), "/cgi-bin/slow", "{r}");
    assert_eq!(str_field(r, "vhost"), on.as_str(), "{r}");
    assert_eq!(r.at("local_port").as_u64(), Some(p1 as u64), "{r}");
    let pid = r.at("pid").as_u64().unwrap_or(0) as i32;
    assert!(
        server.child_pids().contains(&pid),
        "row pid {pid} is not one of our children: {r}"
    );
    assert!(
        close_wait_peers(p1).is_empty(),
        "the socket is no longer in CLOSE_WAIT:\n{}",
        ss_close_wait(p1)
    );
    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedGuard"), 1, "{}", s.raw);
    assert_eq!(
        vhost_num(&server, &s, &on, "ForceClosedGuard"),
        1,
        "{}",
        s.raw
    );

    // Still listed three guard passes later, while the handler still waits on its CGI...
    server.wait_guard_passes(3);
    let j = server.status_json();
    // (The script, and the `sleep 1` it may be in: both run in cgi-bin.)
    assert!(server.running_cgis() >= 1, "premise: the CGI still runs");
    let rows = j.at("connections").as_array().unwrap();
    let r = row_for(rows, port, p1).unwrap_or_else(|| {
        panic!(
            "row vanished while the handler runs: {}",
            j.at("connections")
        )
    });
    assert_eq!(str_field(r, "state"), "force_closed", "{r}");
    // ...and gone once the CGI is released and the handler returned.
    server.release_cgis();
    common::poll(
        Duration::from_secs(10),
        "the row to go away after the handler returned",
        || {
            let j = server.status_json();
            let rows = j.at("connections").as_array().unwrap();
            match row_for(rows, port, p1) {
                None => Ok(()),
                Some(r) => Err(format!("still listed after the CGI ended: {r}")),
            }
        },
    );
    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedGuard"), 1, "counted once:\n{}", s.raw);
    assert_eq!(vhost_num(&server, &s, &on, "Open"), 0, "{}", s.raw);
    assert_eq!(
        log_lines(&server, "SG0015").len(),
        1,
        "{}",
        server.error_log_tail(20)
    );
    assert!(server.is_running());
}

mpm_tests!(force_closed_listed_while_handler_runs);
