//! A hostile table: children run as `User`, so a compromised child can write anything into the
//! shared segment. This test does exactly that to a running server — every 8-byte word of the
//! segment, pass after pass, with random values, zeros, all-ones, small numbers, real pids and
//! lease-shaped words — while clients use it, and checks that:
//! - no process of the server crashes (no "exit signal" other than the SIGTERM/SIGKILL a child
//!   may legitimately get or give itself when the table claims a stop or an old generation —
//!   a compromised child shares the children's uid and could signal them anyway), no panic
//!   reaches the firewall (SG0004), and the parent and the guard process (the privileged ones)
//!   are the same processes at the end;
//! - nothing acts on a socket the kernel does not confirm: held keep-alive connections, healthy
//!   throughout, are all still open and answering afterwards;
//! - the status page stays well-formed in every format (JSON parses, ?auto lines are
//!   `Key: value`, metrics lines are `name{labels} value`, HTML is complete), and a planted
//!   `<script>` in a connection's path is never shown unescaped.
//!
//! Children that take a hostile "server stopping" or "old generation" at its word end
//! themselves, and on prefork the status requests then wait seconds for a new child: slow,
//! not wrong (the children could end each other anyway).

mod common;

use common::{hold_keepalive, json, Apache, Mpm, Opts};
use std::os::fd::AsRawFd;
use std::time::Instant;

const MAGIC: u64 = u64::from_le_bytes(*b"SGUARD\0\x01");
/// Passes over the whole segment, each followed by a look at every status format.
const PASSES: usize = 4;

/// The module's shared segment, mapped into this test process through a child's
/// /proc/<pid>/map_files entry (root only).
struct Segment {
    base: *mut u64,
    words: usize,
    mapping: (*mut libc::c_void, usize),
}

impl Segment {
    fn of(pid: i32) -> Segment {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let (Some(range), Some(perms)) = (f.next(), f.next()) else {
                continue;
            };
            if !(perms.starts_with("rw") && perms.ends_with('s')) {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap();
            let len = usize::from_str_radix(b, 16).unwrap() - usize::from_str_radix(a, 16).unwrap();
            let Ok(file) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/{pid}/map_files/{range}"))
            else {
                continue;
            };
            // SAFETY: a fresh shared mapping of `len` bytes of that file; unmapped on drop.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                continue;
            }
            // APR keeps its own size word first; the table starts at the next 64-byte line.
            let words = len / 8;
            // SAFETY: reading the first words of the fresh mapping.
            let magic_at = (0..16.min(words))
                .find(|&i| unsafe { std::ptr::read_volatile((p as *const u64).add(i)) } == MAGIC);
            match magic_at {
                Some(at) => {
                    return Segment {
                        // SAFETY: `at` < words, inside the mapping.
                        base: unsafe { (p as *mut u64).add(at) },
                        words: words - at,
                        mapping: (p, len),
                    };
                }
                // SAFETY: the mapping just made, not ours.
                None => unsafe {
                    libc::munmap(p, len);
                },
            }
        }
        panic!("no mod_socket_guard segment in /proc/{pid}/maps:\n{maps}");
    }

    fn read(&self, i: usize) -> u64 {
        // SAFETY: i < words, inside the mapping; volatile: other processes write it.
        unsafe { std::ptr::read_volatile(self.base.add(i)) }
    }

    fn write(&self, i: usize, v: u64) {
        // SAFETY: as above. Aligned 8-byte stores are single stores, as a child's would be.
        unsafe { std::ptr::write_volatile(self.base.add(i), v) }
    }

    /// Writes `text` at the first word of the first slot path it finds (a plausible place:
    /// after the word holding "GET").
    fn plant_after_get(&self, text: &[u8]) -> bool {
        let get = u64::from_le_bytes(*b"GET\0\0\0\0\0");
        let Some(i) = (1..self.words).find(|&i| self.read(i) == get) else {
            return false;
        };
        // method (2 words), then path (16 words) in the slot layout.
        for (k, chunk) in text.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write(i + 2 + k, u64::from_le_bytes(w));
        }
        true
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`.
        unsafe { libc::munmap(self.mapping.0, self.mapping.1) };
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value a hostile child might write: the shapes code is most likely to trip over.
    fn hostile(&mut self, pids: &[i32]) -> u64 {
        let r = self.next();
        let pid = pids[(r >> 8) as usize % pids.len()] as u64;
        match r % 8 {
            0 => 0,
            1 => u64::MAX,
            2 => r.rotate_left(17),
            3 => r % 64,
            4 => pid,
            5 => (pid << 32) | ((r >> 40) << 8) | ((r >> 3) % 16), // a lease naming a real process
            6 => (r >> 24) % 10_000_000,                           // a plausible time in ms
            _ => (r >> 32) as u32 as u64,
        }
    }
}

fn check_formats(server: &Apache) -> Result<(), String> {
    let json_page = server.get("/socket-status?json");
    if json_page.status != 200 {
        return Err(format!("?json answered {}", json_page.status));
    }
    json::parse(&String::from_utf8_lossy(&json_page.body)).map_err(|e| format!("?json: {e}"))?;
    let auto = server.get("/socket-status?auto");
    let auto_text = String::from_utf8_lossy(&auto.body).to_string();
    if let Some(bad) = auto_text.lines().find(|l| {
        let (k, _) = l.split_once(": ").unwrap_or(("", ""));
        k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric())
    }) {
        return Err(format!("?auto line not `Key: value`: {bad:?}"));
    }
    let metrics = server.get("/socket-status?metrics");
    for l in String::from_utf8_lossy(&metrics.body).lines() {
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        let value = l.rsplit(' ').next().unwrap_or("");
        if value.parse::<f64>().is_err() || !l.starts_with("socket_guard_") {
            return Err(format!("metrics line: {l:?}"));
        }
    }
    let html = server.get("/socket-status");
    let page = String::from_utf8_lossy(&html.body);
    if html.status != 200 || !page.trim_end().ends_with("</html>") {
        return Err(format!("HTML page {} incomplete", html.status));
    }
    if page.contains("<script>") {
        return Err("a planted <script> is shown unescaped".into());
    }
    Ok(())
}

fn hostile_table_changes_nothing_privileged(mpm: Mpm) {
    let mut server = Apache::start(
        // Keep-alive and I/O timeouts far beyond the test's length: the held connections
        // must outlive it even on a loaded machine (with the usual 30 s, a slow prefork run
        // saw Apache itself close them, which is not what this test is about).
        Opts::new(mpm)
            .global("KeepAliveTimeout 600\nTimeout 600\n")
            .vhosts("<VirtualHost *:@PORT@>\n    ServerName on.test\n    SocketGuardAutoClose On\n    SocketGuardCloseWaitTimeout 1s\n</VirtualHost>\n"),
    );
    let guard_before = server.status_auto().num("GuardProcessPid");
    assert!(guard_before > 0, "a guard process runs");
    let mut held = hold_keepalive(server.port(), 10, "/index.html", Some("on.test"));
    let children = server.child_pids();
    let seg = Segment::of(server.pid());
    let mut pids: Vec<i32> = children.clone();
    pids.extend([
        server.pid(),
        guard_before as i32,
        1,
        std::process::id() as i32,
    ]);
    let mut rng = Rng(0x0bad_5eed_0000_0001 ^ mpm as u64);
    let start = Instant::now();
    let mut problems = Vec::new();
    for pass in 0..PASSES {
        for i in 1..seg.words {
            seg.write(i, rng.hostile(&pids));
        }
        eprintln!("pass {pass}: {:?}", start.elapsed());
        seg.plant_after_get(b"<script>alert(1)</script>");
        if let Err(e) = check_formats(&server) {
            problems.push(e);
        }
    }
    let log = server.error_log();
    let crashes: Vec<&str> = log
        .lines()
        .filter(|l| {
            (l.contains("exit signal") && !l.contains("Killed") && !l.contains("Terminated"))
                || l.contains("SG0004")
                || (l.contains("SG0026") && l.contains("died"))
        })
        .collect();
    assert!(crashes.is_empty(), "{}", crashes.join("\n"));
    assert!(problems.is_empty(), "{problems:#?}");
    // The healthy connections were never touched: each still answers on its own socket.
    for (i, c) in held.iter_mut().enumerate() {
        c.send_request("GET", "/index.html", Some("on.test"), true, &[], b"")
            .unwrap_or_else(|e| panic!("held connection #{i} was closed: {e}"));
        let r = c.read_response(false).unwrap_or_else(|e| {
            panic!(
                "held connection #{i} got no answer {:?} after the first pass: {e}",
                start.elapsed()
            )
        });
        assert_eq!(r.status, 200, "held connection #{i}");
    }
    assert!(server.is_running(), "the parent is alive");
    let guard_pid = guard_before as i32;
    assert!(
        std::fs::read_to_string(format!("/proc/{guard_pid}/comm"))
            .is_ok_and(|c| c.trim() == "socket-guard"),
        "the guard process {guard_pid} is the same process"
    );
    drop(seg);
    server.stop();
}

mpm_tests!(hostile_table_changes_nothing_privileged);
