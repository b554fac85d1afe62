//! Per-vhost AutoClose with name-based vhosts sharing one IP:port: a connection's mode follows
//! the Host of its request; before a request has been read it follows the vhost the connection
//! arrived on (for name-based vhosts, the first vhost of that IP:port).

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::{Conn, Mpm};
use guard::*;
use std::time::{Duration, Instant};

fn close_limit() -> Duration {
    TIMEOUT + 2 * SCAN_INTERVAL + TOLERANCE
}

fn vhost_line(s: &common::StatusAuto, name: &str) -> common::status::KvLine {
    s.vhost(name)
        .unwrap_or_else(|| panic!("no Vhost line for {name}:\n{}", s.raw))
}

/// Test 4: on.test (On), report.test (Report) and off.test (Off) are name-based vhosts on one
/// IP:port; off.test is listed first, so it is also where requests arrive. Four stuck clients
/// per Host: each vhost's own mode is applied.
fn name_based_modes(mpm: Mpm) {
    const N: usize = 4;
    let opts = opts_with_cgi(mpm, 3 * N + 2)
        .extra_ports(1)
        .vhosts(&format!(
            "{}{}{}",
            vhost_block("@PORT1@", "off.test", "Off", "1s"),
            vhost_block("@PORT1@", "on.test", "On", "1s"),
            vhost_block("@PORT1@", "report.test", "Report", "1s"),
        ));
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let (on, off, rep) = (
        format!("on.test:{p1}"),
        format!("off.test:{p1}"),
        format!("report.test:{p1}"),
    );
    let s0 = server.status_auto();
    for (name, mode) in [(&on, "On"), (&off, "Off"), (&rep, "Report")] {
        assert_eq!(
            vhost_line(&s0, name).get("AutoClose"),
            Some(mode),
            "{}",
            s0.raw
        );
    }

    let on_c = slow_clients(p1, Some("on.test"), N, 20);
    let off_c = slow_clients(p1, Some("off.test"), N, 20);
    let rep_c = slow_clients(p1, Some("report.test"), N, 20);
    let (on_p, off_p, rep_p) = (
        client_ports(&on_c),
        client_ports(&off_c),
        client_ports(&rep_c),
    );
    let all: Vec<u16> = [&on_p[..], &off_p[..], &rep_p[..]].concat();
    wait_rows(
        &server,
        &[conn_ids(&on_c), conn_ids(&off_c), conn_ids(&rep_c)].concat(),
        Duration::from_secs(15),
        "all slow CGI requests being handled",
        handling_slow,
    );
    // Attribution by Host before anything happens.
    let j = server.status_json();
    let rows = j.at("connections").as_array().unwrap();
    for (ports, vh) in [(&on_p, &on), (&off_p, &off), (&rep_p, &rep)] {
        for &p in ports.iter() {
            let r = row_for(rows, p, p1).unwrap();
            assert_eq!(
                str_field(r, "vhost"),
                vh.as_str(),
                "the request's Host decides: {r}"
            );
        }
    }

    for c in on_c.iter().chain(&off_c).chain(&rep_c) {
        c.shutdown_write();
    }
    let t0 = Instant::now();
    let mut want: Vec<u16> = all.clone();
    want.sort();
    assert_eq!(close_wait_peers(p1), want, "{}", ss_close_wait(p1));

    // The kernel's view narrows to exactly the Off and Report connections.
    let mut keep: Vec<u16> = [&off_p[..], &rep_p[..]].concat();
    keep.sort();
    loop {
        let now = close_wait_peers(p1);
        if now == keep {
            break;
        }
        if t0.elapsed() > close_limit() {
            panic!(
                "after {:?}: CLOSE_WAIT peers on {p1} are {now:?}, want only Off+Report {keep:?} \
                 (on.test's {on_p:?} closed)\n{}\n--- ?auto ---\n{}\n--- error.log tail ---\n{}",
                t0.elapsed(),
                ss_close_wait(p1),
                server.status_auto().raw,
                server.error_log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &on_c {
        let got = read_until_fin(c, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("on.test client {}: {e}", c.local_port()));
        assert!(got.is_empty(), "{} bytes before the FIN", got.len());
    }
    let left = close_limit().saturating_sub(t0.elapsed()) + Duration::from_millis(100);
    server.wait_status(left, "Reported 4", |s| match s.num("Reported") {
        n if n >= N as u64 => Ok(()),
        n => Err(format!("Reported={n}")),
    });

    // The guards have decided (On closed, Report reported); five more passes for repeats or a
    // late close.
    server.wait_guard_passes(5);
    assert_eq!(
        close_wait_peers(p1),
        keep,
        "Off and Report connections stay in CLOSE_WAIT\n{}",
        ss_close_wait(p1)
    );
    for c in off_c.iter().chain(&rep_c) {
        expect_silence(c, Duration::from_millis(20))
            .unwrap_or_else(|e| panic!("client {} of off.test/report.test: {e}", c.local_port()));
    }
    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedGuard"), N as u64, "{}", s.raw);
    assert_eq!(s.num("Reported"), N as u64, "{}", s.raw);
    for (name, closed, reported, close_wait) in [
        (&on, N as u64, 0, 0),
        (&off, 0, 0, N as u64),
        (&rep, 0, N as u64, N as u64),
    ] {
        let v = vhost_line(&s, name);
        assert_eq!(
            (
                v.num("ForceClosedGuard"),
                v.num("Reported"),
                v.num("CloseWait")
            ),
            (closed, reported, close_wait),
            "ForceClosedGuard/Reported/CloseWait of {name}: {}\n{}",
            v.raw,
            s.raw
        );
    }
    let closes = log_lines(&server, "SG0015");
    assert_one_line_per_client(&closes, &on_p, "SG0015", &server.error_log_tail(40));
    assert!(
        closes.iter().all(|l| l.contains(&format!("vhost {on},"))),
        "{}",
        closes.join("\n")
    );
    let reports = log_lines(&server, "SG0016");
    assert_one_line_per_client(&reports, &rep_p, "SG0016", &server.error_log_tail(40));
    assert!(
        reports.iter().all(|l| l.contains(&format!("vhost {rep},"))),
        "{}",
        reports.join("\n")
    );
}

mpm_tests!(name_based_modes);

// ---------------------------------------------------------------------------------------------
// Test 5: a connection whose request has not been read yet.
//
// Apache notices a client's FIN at once while it is reading a request, so such a connection
// only stays in CLOSE_WAIT when the thread serving it is stuck. The test makes it so: it finds
// the one thread blocked on the connection's descriptor (in read/recvfrom, or poll/ppoll on
// that single descriptor) and holds it in ptrace-stop (PTRACE_SEIZE + PTRACE_INTERRUPT stop a
// single thread; SIGSTOP would stop the whole child, guard included, and make it "hung", the
// parent's business). Everything else in the child, its guard thread in particular, keeps
// running; the guard acts on the connection by the vhost it arrived on.
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
const SYS_READ_LIKE: &[u64] = &[0 /* read */, 45 /* recvfrom */];
#[cfg(target_arch = "x86_64")]
const SYS_POLL_LIKE: &[u64] = &[7 /* poll */, 271 /* ppoll */];
#[cfg(target_arch = "aarch64")]
const SYS_READ_LIKE: &[u64] = &[63 /* read */, 207 /* recvfrom */];
#[cfg(target_arch = "aarch64")]
const SYS_POLL_LIKE: &[u64] = &[73 /* ppoll */];

/// The descriptor number under which `pid` holds the socket with inode `inode`.
fn fd_of_inode(pid: i32, inode: u64) -> Option<i32> {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_link(e.path())
                .map(|l| l.to_string_lossy() == want)
                .unwrap_or(false)
        })
        .and_then(|e| e.file_name().to_str()?.parse().ok())
}

/// The thread of `pid` blocked in a read or single-descriptor poll on `fd`.
fn thread_blocked_on(pid: i32, fd: i32) -> Option<i32> {
    use std::io::{Read, Seek, SeekFrom};
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let sc = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
        let f: Vec<u64> = sc
            .split_whitespace()
            .map(|x| {
                x.strip_prefix("0x")
                    .map(|h| u64::from_str_radix(h, 16).unwrap_or(u64::MAX))
                    .unwrap_or_else(|| x.parse().unwrap_or(u64::MAX))
            })
            .collect();
        if f.len() < 4 {
            continue; // "running", or unreadable
        }
        let (nr, a0, a1) = (f[0], f[1], f[2]);
        if SYS_READ_LIKE.contains(&nr) && a0 == fd as u64 {
            return Some(tid);
        }
        if SYS_POLL_LIKE.contains(&nr) && a1 == 1 {
            // struct pollfd { int fd; short events; short revents; } at a0.
            let mut mem = std::fs::File::open(t.path().join("mem")).ok()?;
            let mut b = [0u8; 4];
            if mem.seek(SeekFrom::Start(a0)).is_ok()
                && mem.read_exact(&mut b).is_ok()
                && i32::from_ne_bytes(b) == fd
            {
                return Some(tid);
            }
        }
    }
    None
}

/// first.test (On) and named.test (Off) share an IP:port. A client sends a request line and a
/// `Host: named.test` header but never finishes the headers, then gives up: the request has
/// not been read, so the connection is first.test's (where it arrived) and is closed.
fn unread_request_arrival_vhost(mpm: Mpm) {
    let opts = opts_with_cgi(mpm, 2).extra_ports(1).vhosts(&format!(
        "{}{}",
        vhost_block("@PORT1@", "first.test", "On", "1s"),
        vhost_block("@PORT1@", "named.test", "Off", "1s"),
    ));
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let (first, named) = (format!("first.test:{p1}"), format!("named.test:{p1}"));

    // A control: a finished request for named.test is named.test's.
    let r = server
        .request_on(p1, "GET", "/small.txt", Some("named.test"), b"")
        .unwrap();
    assert_eq!(r.status, 200);

    let mut c = Conn::connect(p1).unwrap();
    c.send_raw(b"GET /cgi-bin/slow?SLEEP=1 HTTP/1.1\r\nHost: named.test\r\nX-Not-Done: yet\r\n")
        .unwrap();
    let port = c.local_port();
    let j = wait_rows(
        &server,
        &[(port, p1)],
        Duration::from_secs(5),
        "the connection reading its request",
        |r| {
            if str_field(r, "state") == "reading" {
                Ok(())
            } else {
                Err("not reading".into())
            }
        },
    );
    let rows = j.at("connections").as_array().unwrap();
    let row = row_for(rows, port, p1).unwrap();
    assert_eq!(
        str_field(row, "vhost"),
        first.as_str(),
        "unread request: the arrival vhost (first on the IP:port): {row}"
    );
    assert_eq!(row.at("requests").as_u64(), Some(0), "{row}");
    let pid = row.at("pid").as_u64().unwrap() as i32;
    assert!(server.child_pids().contains(&pid), "{row}");

    // The worker thread blocked reading this connection.
    let inode = kernel_sockets(p1)
        .into_iter()
        .find(|k| k.remote_port == port)
        .map(|k| k.inode)
        .expect("the server-side socket in /proc/net/tcp");
    let fd = fd_of_inode(pid, inode)
        .unwrap_or_else(|| panic!("pid {pid} holds no fd for socket inode {inode}"));
    let tid = common::poll(
        Duration::from_secs(3),
        "the thread blocked on the connection",
        || {
            thread_blocked_on(pid, fd)
                .ok_or_else(|| format!("no thread of {pid} blocked on fd {fd}"))
        },
    );
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
    assert_ne!(
        comm.trim(),
        "socket-guard",
        "must not stop the guard thread"
    );
    let stopped = StoppedThread::stop(tid).unwrap_or_else(|e| {
        panic!(
            "cannot stop thread {tid} of pid {pid} (this test needs ptrace: root or CAP_SYS_PTRACE): {e}"
        )
    });
    c.shutdown_write();
    let t0 = Instant::now();
    assert_eq!(close_wait_peers(p1), vec![port], "{}", ss_close_wait(p1));

    let got = read_until_fin(&c, close_limit()).unwrap_or_else(|e| {
        panic!(
            "the arrival vhost first.test is AutoClose On, the stuck unread connection must be \
             closed within {:?}: {e}\n--- ss ---\n{}\n--- ?auto ---\n{}\n--- error.log tail ---\n{}",
            close_limit(),
            ss_close_wait(p1),
            server.status_auto().raw,
            server.error_log_tail(40)
        )
    });
    let took = t0.elapsed();
    assert!(got.is_empty(), "{} bytes before the FIN", got.len());
    assert!(took >= TIMEOUT, "closed after {took:?}, before the timeout");
    common::poll(
        Duration::from_secs(1),
        "the kernel to drop the CLOSE_WAIT",
        || match close_wait_peers(p1) {
            v if v.is_empty() => Ok(()),
            v => Err(format!("{v:?}")),
        },
    );

    let s = server.wait_status(Duration::from_secs(2), "ForceClosedGuard 1", |s| {
        match s.num("ForceClosedGuard") {
            1 => Ok(()),
            n => Err(format!("ForceClosedGuard={n}")),
        }
    });
    assert_eq!(
        vhost_line(&s, &first).num("ForceClosedGuard"),
        1,
        "{}",
        s.raw
    );
    assert_eq!(
        vhost_line(&s, &named).num("ForceClosedGuard"),
        0,
        "{}",
        s.raw
    );
    let lines = common::poll(
        Duration::from_secs(2),
        "one SG0015 line",
        || match log_lines(&server, "SG0015") {
            l if !l.is_empty() => Ok(l),
            _ => Err("none".to_string()),
        },
    );
    assert_eq!(lines.len(), 1, "{}", lines.join("\n"));
    assert!(
        lines[0].contains(&format!("vhost {first},"))
            && lines[0].contains(&format!(":{port},"))
            && lines[0].contains(&format!("pid {pid},")),
        "SG0015 must name the arrival vhost {first}, client port {port} and pid {pid}: {}",
        lines[0]
    );

    // Let the worker go: it reads EOF from the shut-down socket and cleans up as usual.
    drop(stopped);
    common::poll(
        Duration::from_secs(5),
        "the connection's row to go away",
        || {
            let j = server.status_json();
            match row_for(j.at("connections").as_array().unwrap(), port, p1) {
                None => Ok(()),
                Some(r) => Err(format!("{r}")),
            }
        },
    );
    let r = server
        .request_on(p1, "GET", "/small.txt", Some("named.test"), b"")
        .unwrap();
    assert_eq!(r.status, 200, "the child serves again");
    assert!(server.is_running());
}

mpm_tests!(unread_request_arrival_vhost);
