//! SocketGuardAbandonedTimeout against a real Apache: the work an abandoned request keeps
//! running is stopped, and nothing else is.
//! - Every MPM: slow CGIs whose clients hang up, on a vhost with `AbandonedTimeout 2s`, are
//!   gone within close timeout + 2 s + grace + slack of the clients leaving (never before
//!   timeout + 2 s); the same CGIs on a vhost with `Off` keep running; counters and SG0021.
//! - Prefork: a child stuck in mod_proxy on a backend that never answers, whose client is gone,
//!   is recycled (SG0022, Apache refills the pool, the server answers); a child whose stuck
//!   proxied request still has its client is never touched.
//! - Worker/event: a child with one abandoned request (proxy, not a CGI) and one live slow
//!   request is not ended; the live one completes; then the child holds only abandoned work
//!   and is ended.

mod common;
#[path = "common/guard.rs"]
mod guard;
#[path = "common/procs.rs"]
mod procs;

use common::{Conn, Mpm, Opts, MODULES_DIR};
use guard::*;
use procs::*;
use std::time::{Duration, Instant};

const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const ABANDONED: Duration = Duration::from_secs(2);
/// SIGTERM → SIGKILL in the module (abandon::GRACE_MS).
const GRACE: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_millis(1500);

fn vhost(port: &str, name: &str, abandoned: &str, extra: &str) -> String {
    format!(
        "<VirtualHost 127.0.0.1:{port}>\n    ServerName {name}\n    SocketGuardAutoClose On\n    \
         SocketGuardCloseWaitTimeout 1s\n    SocketGuardAbandonedTimeout {abandoned}\n{extra}</VirtualHost>\n"
    )
}

fn proxy_modules() -> String {
    format!(
        "LoadModule proxy_module {MODULES_DIR}/mod_proxy.so\nLoadModule proxy_http_module {MODULES_DIR}/mod_proxy_http.so\n"
    )
}

/// Waits until each client's request has its CGI running; returns the CGI's pid per client
/// (the script itself, not the `sleep 1` it starts every second).
fn cgi_pids(conns: &[Conn]) -> Vec<i32> {
    conns
        .iter()
        .map(|c| {
            let (server, port) = (c.port, c.local_port());
            wait_until(Duration::from_secs(10), "the CGI to start", || {
                !serving_to(server, port).is_empty()
            });
            let pids = serving_to(server, port);
            *pids
                .iter()
                .find(|p| !pids.contains(&common::proc_stat(**p).map_or(0, |s| s.ppid)))
                .unwrap_or(&pids[0])
        })
        .collect()
}

fn vhost_line_num(server: &Apache, vhost: &str, key: &str) -> u64 {
    let s = server.status_auto();
    s.vhost(vhost)
        .unwrap_or_else(|| panic!("no Vhost line for {vhost}:\n{}", s.raw))
        .num(key)
}

use common::Apache;

fn abandoned_cgis_are_stopped(mpm: Mpm) {
    let opts = opts_with_cgi(mpm, 8).extra_ports(2).vhosts(&format!(
        "{}{}",
        vhost("@PORT1@", "stop.test", "2s", ""),
        vhost("@PORT2@", "keep.test", "Off", "")
    ));
    let server = start_with_cgi(opts);
    let (p1, p2) = (server.extra_port(1), server.extra_port(2));
    let stop = slow_clients(p1, None, 2, 30);
    let keep = slow_clients(p2, None, 2, 30);
    let stop_pids = cgi_pids(&stop);
    let keep_pids = cgi_pids(&keep);
    let stop_ports = client_ports(&stop);
    for c in stop.into_iter().chain(keep) {
        c.close();
    }
    let left = Instant::now();
    let limit = CLOSE_TIMEOUT + SCAN_INTERVAL * 2 + ABANDONED + GRACE + SLACK;
    let took = wait_until(limit, "the abandoned CGIs on stop.test to end", || {
        stop_pids.iter().all(|p| !alive(*p))
    });
    eprintln!(
        "[measured] {}: abandoned CGIs gone {took:?} after their clients left",
        mpm.name()
    );
    assert!(
        took >= CLOSE_TIMEOUT + ABANDONED,
        "CGIs stopped {took:?} after their clients left: before close timeout + AbandonedTimeout"
    );
    // The Off vhost's CGIs run on, past the SIGKILL step that would follow a SIGTERM: every
    // guard looked twice more after it.
    server.wait_guard_passes_after(Instant::now() + GRACE, 2);
    let dead: Vec<&i32> = keep_pids.iter().filter(|p| !alive(**p)).collect();
    assert!(
        dead.is_empty(),
        "CGIs on the Off vhost were stopped: {dead:?}\n{}",
        server.error_log_tail(20)
    );
    assert!(
        left.elapsed() < Duration::from_secs(25),
        "premise: the keep CGIs (30 s) would still run"
    );

    let on = format!("stop.test:{p1}");
    let off = format!("keep.test:{p2}");
    assert_eq!(vhost_line_num(&server, &on, "StoppedCgi"), 2);
    assert_eq!(vhost_line_num(&server, &off, "StoppedCgi"), 0);
    let lines = log_lines(&server, "SG0021");
    assert_eq!(
        lines.len(),
        2,
        "one SG0021 per abandoned request:\n{}",
        lines.join("\n")
    );
    for port in stop_ports {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("client 127.0.0.1:{port},")))
            .unwrap_or_else(|| panic!("no SG0021 for client port {port}:\n{}", lines.join("\n")));
        assert!(line.contains("SIGTERM to pid"), "{line}");
        assert!(line.contains("request GET /cgi-bin/slow"), "{line}");
        assert!(line.contains("[socket_guard:notice]"), "{line}");
        assert!(
            line.contains("reason: SocketGuardAbandonedTimeout"),
            "{line}"
        );
    }
    assert_eq!(server.get("/small.txt").status, 200);
    server.release_cgis();
}

mpm_tests!(abandoned_cgis_are_stopped);

fn send_get(port: u16, path: &str) -> Conn {
    let mut c = Conn::connect(port).unwrap();
    c.send_request("GET", path, None, false, &[], b"").unwrap();
    c
}

#[test]
fn prefork_stuck_proxy_child_is_recycled() {
    let backend = StuckBackend::start();
    let extra = format!("    ProxyPass /stuck http://127.0.0.1:{}/\n", backend.port);
    let opts = Opts::new(Mpm::Prefork)
        .global(&format!("{}SocketGuardScanInterval 200ms\n", proxy_modules()))
        .tuning("StartServers 4\nMinSpareServers 4\nMaxSpareServers 8\nServerLimit 16\nMaxRequestWorkers 16\n")
        .extra_ports(1)
        .vhosts(&vhost("@PORT1@", "stop.test", "2s", &extra));
    let server = Apache::start(opts);
    let p1 = server.extra_port(1);
    let gone = send_get(p1, "/stuck");
    let live = send_get(p1, "/stuck");
    wait_until(
        Duration::from_secs(5),
        "both requests at the backend",
        || backend.accepted() >= 2,
    );
    let gone_pid = owner_pid(&server, gone.local_port(), p1);
    let live_pid = owner_pid(&server, live.local_port(), p1);
    assert_ne!(gone_pid, live_pid);
    gone.close();
    let limit = CLOSE_TIMEOUT + SCAN_INTERVAL * 2 + ABANDONED + SLACK;
    let took = wait_until(
        limit,
        "the abandoned request's child to be recycled",
        || !alive(gone_pid),
    );
    assert!(
        took >= CLOSE_TIMEOUT + ABANDONED,
        "recycled after {took:?}: too early"
    );
    let lines = log_lines(&server, "SG0022");
    assert_eq!(lines.len(), 1, "{}", server.error_log_tail(20));
    assert!(
        lines[0].contains(&format!("ended child pid {gone_pid}")),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("request GET /stuck"), "{}", lines[0]);
    // Apache refills its pool and keeps answering; the child with a live client is untouched.
    wait_until(Duration::from_secs(8), "prefork to refill its pool", || {
        server.child_pids().len() >= 4
    });
    assert_eq!(server.get("/small.txt").status, 200);
    // The live child is still there an AbandonedTimeout and a grace later: every guard
    // looked twice more after that.
    server.wait_guard_passes_after(Instant::now() + ABANDONED + GRACE, 2);
    assert!(alive(live_pid), "the child serving a live client was ended");
    assert_eq!(
        vhost_line_num(&server, &format!("stop.test:{p1}"), "StoppedChild"),
        1
    );
    drop(live);
}

fn threaded_child_ends_only_when_all_abandoned(mpm: Mpm) {
    let backend = StuckBackend::start();
    let extra = format!("    ProxyPass /stuck http://127.0.0.1:{}/\n", backend.port);
    // One child holds every connection.
    let opts = opts_with_cgi(mpm, 2)
        .global(&proxy_modules())
        .tuning("StartServers 1\nServerLimit 1\nThreadLimit 16\nThreadsPerChild 16\nMinSpareThreads 1\nMaxSpareThreads 16\nMaxRequestWorkers 16\n")
        .extra_ports(1)
        .vhosts(&vhost("@PORT1@", "stop.test", "1s", &extra));
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let gone = send_get(p1, "/stuck");
    wait_until(Duration::from_secs(5), "the request at the backend", || {
        backend.accepted() >= 1
    });
    let mut live = send_get(p1, "/cgi-bin/slow?SLEEP=6");
    let child = owner_pid(&server, gone.local_port(), p1);
    assert_eq!(
        owner_pid(&server, live.local_port(), p1),
        child,
        "premise: one child"
    );
    gone.close();
    // Past close timeout + AbandonedTimeout (1 s) + slack, the child is still there, because
    // of the live request, which completes.
    let r = live
        .read_response(false)
        .expect("the live request completes");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow: done after 6 s\n");
    assert!(
        log_lines(&server, "SG0022").is_empty(),
        "ended while a live request ran"
    );
    drop(live);
    // Now it holds only abandoned work: it is ended, and Apache starts a fresh child.
    let waited = Instant::now();
    while alive(child) && waited.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(child),
        "the child holding only abandoned work was not ended within 5 s\n--- connections ---\n{}",
        server.status_json().at("connections")
    );
    let lines = log_lines(&server, "SG0022");
    assert_eq!(lines.len(), 1, "{}", server.error_log_tail(20));
    assert!(lines[0].contains("request GET /stuck"), "{}", lines[0]);
    wait_until(Duration::from_secs(10), "a fresh child", || {
        server.child_pids().iter().any(|p| *p != child)
    });
    let mut answered = false;
    wait_until(Duration::from_secs(10), "the server to answer", || {
        answered = server
            .request_on(p1, "GET", "/small.txt", None, b"")
            .is_ok_and(|r| r.status == 200);
        answered
    });
}

#[test]
fn worker_child_ends_only_when_all_abandoned() {
    threaded_child_ends_only_when_all_abandoned(Mpm::Worker)
}

#[test]
fn event_child_ends_only_when_all_abandoned() {
    threaded_child_ends_only_when_all_abandoned(Mpm::Event)
}
