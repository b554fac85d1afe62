//! Safety rule 1: only sockets the kernel shows in CLOSE_WAIT for the whole timeout are acted
//! on. Healthy connections that sit around longer than a short timeout (1 s, scans every
//! 200 ms) on an `AutoClose On` vhost are never touched, all at once:
//! (a) clients waiting on a slow response with their side open get the full response;
//! (b) keep-alive connections idle for 3 s serve a second request;
//! (c) slow readers of a 4 MiB download (small receive buffer, > 3 s) get every byte.

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::{hold_keepalive, Mpm, LARGE_FILE_SIZE};
use guard::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

const SLOW_CLIENTS: usize = 10;
const KEEPALIVE_CLIENTS: usize = 10;
const DOWNLOADERS: usize = 3;
/// How long the CGI takes and the keep-alive connections idle: 3 timeouts, 15 scan intervals.
const IDLE: Duration = Duration::from_secs(3);
const MIN_DOWNLOAD: Duration = Duration::from_millis(3500);

/// A connection to 127.0.0.1:`port` whose receive buffer is small (set before connect, so the
/// window stays small), so the server really waits on a slow reader.
fn small_window_stream(port: u16, rcvbuf: i32) -> TcpStream {
    // SAFETY: a fresh socket we own; setsockopt reads a valid local int; the fd is handed to
    // TcpStream (which then owns and closes it) only after connect succeeds.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &rcvbuf as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect to {port}: {e}");
        }
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }
}

/// Downloads /large.bin slowly (32 KiB per read, 35 ms apart: at most ~0.9 MiB/s), returns
/// the raw response and how long it took.
fn slow_download(port: u16) -> Result<(Vec<u8>, Duration), String> {
    let mut s = small_window_stream(port, 16 * 1024);
    let start = Instant::now();
    s.write_all(
        b"GET /large.bin HTTP/1.1\r\nHost: on.test\r\nUser-Agent: socket-guard-tests\r\nConnection: close\r\n\r\n",
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::with_capacity(LARGE_FILE_SIZE + 1024);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "read after {} bytes, {:?}: {:?} {e}",
                    out.len(),
                    start.elapsed(),
                    e.kind()
                ))
            }
        }
        std::thread::sleep(Duration::from_millis(35));
    }
    Ok((out, start.elapsed()))
}

fn expected_large() -> Vec<u8> {
    (0..LARGE_FILE_SIZE)
        .map(|i| ((i % 65536) % 251) as u8)
        .collect()
}

fn no_false_closes(mpm: Mpm) {
    let opts = opts_with_cgi(mpm, SLOW_CLIENTS + KEEPALIVE_CLIENTS + DOWNLOADERS + 2)
        .extra_ports(1)
        .vhosts(&vhost_block("@PORT1@", "on.test", "On", "1s"));
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let on = format!("on.test:{p1}");
    let s0 = server.status_auto();
    let v = s0
        .vhost(&on)
        .unwrap_or_else(|| panic!("no Vhost line for {on}:\n{}", s0.raw));
    assert_eq!(v.get("AutoClose"), Some("On"), "{}", v.raw);
    assert_eq!(v.num("TimeoutMs"), 1000, "{}", v.raw);

    // (b) first, so their idle time starts now.
    let mut idle = hold_keepalive(p1, KEEPALIVE_CLIENTS, "/small.txt", None);
    let idle_since = Instant::now();
    let idle_ports = client_ports(&idle);

    let mut seen_close_wait: Vec<u16> = Vec::new();
    let mut max_force_closed = 0;
    std::thread::scope(|sc| {
        // (a) clients waiting on a slow answer, their side open.
        let slow: Vec<_> = (0..SLOW_CLIENTS)
            .map(|i| {
                sc.spawn(move || {
                    let mut c = common::Conn::connect(p1)
                        .map_err(|e| format!("slow client #{i}: connect: {e}"))?;
                    let start = Instant::now();
                    c.send_request(
                        "GET",
                        &format!("/cgi-bin/slow?SLEEP={}", IDLE.as_secs()),
                        None,
                        false,
                        &[],
                        b"",
                    )
                    .map_err(|e| format!("slow client #{i}: send: {e}"))?;
                    let r = c.read_response(false).map_err(|e| {
                        format!("slow client #{i}: after {:?}: {e}", start.elapsed())
                    })?;
                    Ok::<_, String>((r, start.elapsed()))
                })
            })
            .collect();
        // (c) slow readers of a large download.
        let downloads: Vec<_> = (0..DOWNLOADERS)
            .map(|_| sc.spawn(move || slow_download(p1)))
            .collect();

        // Meanwhile: the guard must not count a single close.
        while !(slow.iter().all(|h| h.is_finished()) && downloads.iter().all(|h| h.is_finished())) {
            let s = server.status_auto();
            max_force_closed = max_force_closed.max(s.num("ForceClosedGuard"));
            for p in close_wait_peers(p1) {
                if !seen_close_wait.contains(&p) {
                    seen_close_wait.push(p);
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }

        let body = format!("slow: done after {} s\n", IDLE.as_secs());
        for (i, h) in slow.into_iter().enumerate() {
            let (r, took) = h.join().unwrap().unwrap_or_else(|e| {
                panic!("{e}\n--- error.log tail ---\n{}", server.error_log_tail(30))
            });
            assert_eq!(r.status, 200, "slow client #{i}: {}", r.text());
            assert_eq!(r.text(), body, "slow client #{i} got the whole answer");
            assert!(took >= IDLE, "slow client #{i} answered after {took:?}");
        }
        let expected = expected_large();
        for (i, h) in downloads.into_iter().enumerate() {
            let (raw, took) = h.join().unwrap().unwrap_or_else(|e| {
                panic!(
                    "downloader #{i}: {e}\n--- error.log tail ---\n{}",
                    server.error_log_tail(30)
                )
            });
            let split = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("downloader #{i}: no header end in {} bytes", raw.len()));
            let head = String::from_utf8_lossy(&raw[..split]).into_owned();
            let body = &raw[split + 4..];
            assert!(head.starts_with("HTTP/1.1 200"), "downloader #{i}: {head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("content-length: {LARGE_FILE_SIZE}")),
                "downloader #{i}: {head}"
            );
            assert_eq!(
                body.len(),
                LARGE_FILE_SIZE,
                "downloader #{i} received {} of {LARGE_FILE_SIZE} body bytes in {took:?}",
                body.len()
            );
            assert!(
                body == expected.as_slice(),
                "downloader #{i}: body differs from the file"
            );
            assert!(
                took >= MIN_DOWNLOAD,
                "downloader #{i} finished in {took:?}: too fast to be a slow reader"
            );
        }
    });

    // (b) the idle keep-alive connections still serve.
    let idle_for = idle_since.elapsed();
    assert!(
        idle_for >= IDLE,
        "keep-alive connections idled {idle_for:?}"
    );
    for (i, c) in idle.iter_mut().enumerate() {
        let r = c.get("/small.txt").unwrap_or_else(|e| {
            panic!(
                "keep-alive connection #{i} (port {}) idle for {idle_for:?} failed its second request: {e}\n--- error.log tail ---\n{}",
                c.local_port(),
                server.error_log_tail(30)
            )
        });
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello\n");
    }

    let s = server.status_auto();
    let vline = s.vhost(&on).unwrap();
    assert_eq!(
        (
            max_force_closed,
            s.num("ForceClosedGuard"),
            vline.num("ForceClosedGuard")
        ),
        (0, 0, 0),
        "healthy connections were force-closed:\n{}\n--- error.log tail ---\n{}",
        s.raw,
        server.error_log_tail(40)
    );
    assert_eq!(s.num("Reported"), 0, "{}", s.raw);
    let sg15 = log_lines(&server, "SG0015");
    assert!(
        sg15.is_empty(),
        "no SG0015 on healthy traffic:\n{}",
        sg15.join("\n")
    );
    // For the record: the scenario itself never put a healthy connection in CLOSE_WAIT.
    assert!(
        seen_close_wait.iter().all(|p| !idle_ports.contains(p)),
        "test premise: idle keep-alive clients never closed, yet the kernel showed CLOSE_WAIT for {seen_close_wait:?}"
    );
    drop(idle);
    assert!(server.is_running());
}

mpm_tests!(no_false_closes);
