//! Safety rule 1, half-closed clients: a client may shut down its sending side right after its
//! request and keep reading the response. Its server-side socket is in CLOSE_WAIT for the
//! whole download, so only the data still moving tells it from a gone client. On an
//! `AutoClose On` vhost with a 1 s timeout (scans every 200 ms), 4 clients that half-close after
//! `GET` of a 20 MiB file and read it slowly (≥ 3 s, so ≥ 3 timeouts in CLOSE_WAIT) get every
//! byte, and the guard closes nothing.

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::Mpm;
use guard::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const SIZE: usize = 20 * 1024 * 1024;
/// Slower than this would not prove anything: the download must span several timeouts.
const MIN_DOWNLOAD: Duration = Duration::from_secs(3);

fn content() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 253) as u8).collect()
}

/// GET /huge.bin, half-close, then read 64 KiB every 15 ms (≤ ~4 MiB/s): (body, time taken).
fn half_closed_download(port: u16) -> Result<(Vec<u8>, Duration), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    s.write_all(b"GET /huge.bin HTTP/1.1\r\nHost: on.test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("half-close: {e}"))?;
    let mut raw = Vec::with_capacity(SIZE + 1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "after {} bytes, {:?}: {e}",
                    raw.len(),
                    start.elapsed()
                ))
            }
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {} bytes", raw.len()))?;
    Ok((raw[split + 4..].to_vec(), start.elapsed()))
}

fn half_closed_downloads_complete(mpm: Mpm) {
    let opts = opts_with_cgi(mpm, CLIENTS + 2)
        .extra_ports(1)
        .vhosts(&vhost_block("@PORT1@", "on.test", "On", "1s"));
    let server = start_with_cgi(opts);
    let expected = content();
    std::fs::write(server.dir.path.join("htdocs/huge.bin"), &expected).unwrap();
    let p1 = server.extra_port(1);

    let mut seen_close_wait = 0;
    let results: Vec<_> = std::thread::scope(|sc| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| sc.spawn(move || half_closed_download(p1)))
            .collect();
        while !clients.iter().all(|h| h.is_finished()) {
            seen_close_wait = seen_close_wait.max(close_wait_peers(p1).len());
            std::thread::sleep(Duration::from_millis(100));
        }
        clients.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.into_iter().enumerate() {
        let (body, took) = r.unwrap_or_else(|e| {
            panic!(
                "client #{i}: {e}\n--- error.log tail ---\n{}",
                server.error_log_tail(30)
            )
        });
        assert_eq!(
            body.len(),
            SIZE,
            "client #{i} got {} of {SIZE} bytes in {took:?}",
            body.len()
        );
        assert!(body == expected, "client #{i}: body differs from the file");
        assert!(
            took >= MIN_DOWNLOAD,
            "client #{i} took only {took:?}: not slow enough to prove anything"
        );
    }
    // The premise: the server side really sat in CLOSE_WAIT while streaming.
    assert!(
        seen_close_wait >= 1,
        "no server-side CLOSE_WAIT seen during the downloads"
    );
    let s = server.status_auto();
    assert_eq!(s.num("ForceClosedGuard"), 0, "{}", s.raw);
    assert!(
        log_lines(&server, "SG0015").is_empty(),
        "{}",
        server.error_log_tail(20)
    );
}

mpm_tests!(half_closed_downloads_complete);
