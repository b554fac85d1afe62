//! SocketGuardGracefulDeadline: after a graceful restart, a child of the old generation still
//! alive at the deadline that holds only abandoned (or idle) connections is ended, with the
//! CGI of its abandoned request; one that holds a live download is not (prefork, where each
//! connection has its own child). Deadline 3 s; the abandoned vhost has no AbandonedTimeout,
//! so only the deadline can end it.

mod common;
#[path = "common/guard.rs"]
mod guard;
#[path = "common/procs.rs"]
mod procs;

use common::{Conn, Mpm};
use guard::*;
use procs::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(3);
const SIZE: usize = 20 * 1024 * 1024;

/// Starts a download of /huge.bin read at ~3 MiB/s; returns the thread's handle and the
/// client port.
fn slow_download(port: u16) -> (std::thread::JoinHandle<Result<usize, String>>, u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let local = s.local_addr().unwrap().port();
    s.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: on.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let h = std::thread::spawn(move || {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) => return Err(format!("after {total} bytes: {e}")),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (h, local)
}

fn deadline_ends_old_children_with_only_abandoned_work(mpm: Mpm) {
    let with_live = mpm == Mpm::Prefork;
    let opts = opts_with_cgi(mpm, 6)
        .global("SocketGuardGracefulDeadline 3s\n")
        .extra_ports(1)
        .vhosts(&vhost_block("@PORT1@", "on.test", "On", "1s"));
    let server = start_with_cgi(opts);
    std::fs::write(server.dir.path.join("htdocs/huge.bin"), vec![b'x'; SIZE]).unwrap();
    let p1 = server.extra_port(1);
    let gone = slow_clients(p1, None, 1, 30).pop().unwrap();
    let gone_port = gone.local_port();
    wait_until(Duration::from_secs(10), "the CGI to run", || {
        !serving(gone_port).is_empty()
    });
    let cgis = serving(gone_port);
    let gone_child = owner_pid(&server, gone_port, p1);
    gone.close();
    wait_until(Duration::from_secs(5), "the guard to close it", || {
        !log_lines(&server, "SG0015").is_empty()
    });
    let live = with_live.then(|| slow_download(p1));
    let live_child = live.as_ref().map(|(_, port)| {
        let mut pid = 0;
        wait_until(Duration::from_secs(5), "the download's row", || {
            pid = owner_pid(&server, *port, p1);
            pid != 0
        });
        pid
    });
    // Taken before the signal: the restart (and the deadline's start) can only come later.
    let restarted = Instant::now();
    server.graceful_restart();
    let took = wait_until(
        DEADLINE + Duration::from_secs(3),
        "the old child to be ended",
        || !alive(gone_child),
    );
    assert!(
        restarted.elapsed() >= DEADLINE,
        "ended {took:?} after the restart: before the deadline"
    );
    wait_until(Duration::from_secs(2), "its CGI to end", || {
        cgis.iter().all(|p| !alive(*p))
    });
    let lines = log_lines(&server, "SG0022");
    assert_eq!(lines.len(), 1, "{}", server.error_log_tail(20));
    assert!(
        lines[0].contains("SocketGuardGracefulDeadline"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!("ended child pid {gone_child}")),
        "{}",
        lines[0]
    );
    if let (Some((h, _)), Some(pid)) = (live, live_child) {
        assert_ne!(pid, gone_child);
        assert!(
            alive(pid),
            "the old child serving a live download was ended at the deadline"
        );
        let got = h
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("download: {e}"));
        assert!(got > SIZE, "download incomplete: {got} bytes");
    }
    let s = server.status_auto();
    assert_eq!(s.num("StoppedChild"), 1, "{}", s.raw);
    assert_eq!(server.get("/small.txt").status, 200);
    drop(Conn::connect(p1));
}

mpm_tests!(deadline_ends_old_children_with_only_abandoned_work);
