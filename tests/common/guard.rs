//! Helpers for the CLOSE_WAIT guard tests (guard_autoclose.rs, guard_safety.rs,
//! guard_vhosts.rs): a slow CGI, MPM sizing for many concurrent CGIs, the kernel's view of
//! server-side CLOSE_WAIT sockets, JSON connection rows, and error-log lines by message id.
//!
//! Included by those test files with `#[path = "common/guard.rs"] mod guard;` next to
//! `mod common;`, so the shared harness module list stays as it is.

#![allow(dead_code)]

use crate::common::{json, Apache, Conn, Mpm, Opts, MODULES_DIR};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Scan interval the guard tests configure (`SocketGuardScanInterval 200ms`).
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// CLOSE_WAIT timeout the guard tests configure on their vhosts (`SocketGuardCloseWaitTimeout 1s`).
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Allowance for the first detection (scheduling, the scan's own duration, a loaded machine).
pub const TOLERANCE: Duration = Duration::from_secs(1);

/// `/cgi-bin/slow?SLEEP=N`: sleeps N seconds (0..=60) in 1 s steps, giving up early when the
/// test's Apache is gone (@APACHE_PID@, the parent process: it stays the same across graceful
/// restarts, unlike mod_cgid's daemon, which is the CGI's own parent and is replaced at every
/// restart) or the test released it (@STOP@ exists), and prints its headers only at the end,
/// so nothing reaches the client while it runs. /proc is checked rather than `kill -0`, which
/// a www-data CGI may not send to a root-owned parent.
const SLOW_CGI: &str = r#"#!/bin/sh
stop="@STOP@"
secs=5
case "&${QUERY_STRING:-}&" in
    *"&SLEEP="*)
        v=${QUERY_STRING#*SLEEP=}
        v=${v%%&*}
        case "$v" in
            "" | *[!0-9]*) ;;
            *) secs=$v ;;
        esac
        ;;
esac
[ "${#secs}" -gt 2 ] && secs=60
secs=$((secs + 0))
[ "$secs" -gt 60 ] && secs=60
server=@APACHE_PID@
left=$secs
while [ "$left" -gt 0 ]; do
    sleep 1
    [ -d "/proc/$server" ] || exit 0
    [ -e "$stop" ] && exit 0
    left=$((left - 1))
done
printf 'Content-Type: text/plain\r\n\r\n'
printf 'slow: done after %s s\n' "$secs"
"#;

/// Config for CGI under `mpm` (mod_cgi for prefork, mod_cgid for worker/event) with
/// `/cgi-bin/` mapped to `@DIR@/cgi-bin/`, plus the 200 ms scan interval.
pub fn cgi_global(mpm: Mpm) -> String {
    let module = match mpm {
        Mpm::Prefork => format!("LoadModule cgi_module {MODULES_DIR}/mod_cgi.so\n"),
        Mpm::Worker | Mpm::Event => format!(
            "LoadModule cgid_module {MODULES_DIR}/mod_cgid.so\nScriptSock \"@DIR@/run/cgisock\"\n"
        ),
    };
    format!(
        "{module}ScriptAlias /cgi-bin/ \"@DIR@/cgi-bin/\"\n\
         <Directory \"@DIR@/cgi-bin\">\n    Require all granted\n</Directory>\n\
         SocketGuardScanInterval 200ms\n"
    )
}

/// MPM sizing with room for at least `busy` requests in flight at once (CGIs, held
/// keep-alive connections, downloads) plus status requests.
pub fn tuning_for(mpm: Mpm, busy: usize) -> String {
    match mpm {
        Mpm::Prefork => {
            // Prefork grows slowly (1, 2, 4, 8... per second): start them all up front.
            let start = busy + 6;
            let limit = start + 16;
            format!(
                "StartServers {start}\nMinSpareServers 4\nMaxSpareServers {limit}\nServerLimit {limit}\nMaxRequestWorkers {limit}\n"
            )
        }
        Mpm::Worker | Mpm::Event => {
            let per_child = 32;
            let start = (busy + 8).div_ceil(per_child).max(2);
            let limit = start + 2;
            format!(
                "StartServers {start}\nServerLimit {limit}\nThreadLimit {per_child}\nThreadsPerChild {per_child}\n\
                 MinSpareThreads 8\nMaxSpareThreads {}\nMaxRequestWorkers {}\n",
                limit * per_child,
                limit * per_child
            )
        }
    }
}

/// `Opts` with CGI, the guard's fast scan interval, and MPM room for `busy` requests.
pub fn opts_with_cgi(mpm: Mpm, busy: usize) -> Opts {
    Opts::new(mpm)
        .global(&cgi_global(mpm))
        .tuning(&tuning_for(mpm, busy))
}

/// A server with `/cgi-bin/slow`. Dropping it first releases every still-sleeping CGI (they
/// exit within a second), so that stopping a threaded MPM does not wait for handlers blocked
/// on them; then the server stops as usual.
pub struct CgiServer {
    pub server: Apache,
}

impl CgiServer {
    /// Lets every running `/cgi-bin/slow` exit now (without answering).
    pub fn release_cgis(&self) {
        let _ = std::fs::write(self.server.dir.path.join("cgi-stop"), b"");
    }
}

impl CgiServer {
    /// Number of processes running in this server's cgi-bin directory (CGIs run there).
    pub fn running_cgis(&self) -> usize {
        let dir = self.server.dir.path.join("cgi-bin");
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return 0;
        };
        rd.flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    && std::fs::read_link(e.path().join("cwd")).is_ok_and(|p| p == dir)
            })
            .count()
    }
}

impl std::ops::Deref for CgiServer {
    type Target = Apache;
    fn deref(&self) -> &Apache {
        &self.server
    }
}

impl Drop for CgiServer {
    fn drop(&mut self) {
        self.release_cgis();
        // Give the scripts their 1 s step to notice, so handlers return before SIGTERM.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.running_cgis() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts the server and installs `/cgi-bin/slow` (the config only names the directory; the
/// script is needed from the first CGI request on).
pub fn start_with_cgi(opts: Opts) -> CgiServer {
    let server = Apache::start(opts);
    let dir = server.dir.path.join("cgi-bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.join("slow");
    let stop = server.dir.path.join("cgi-stop");
    std::fs::write(
        &script,
        SLOW_CGI
            .replace("@STOP@", &stop.display().to_string())
            .replace("@APACHE_PID@", &server.pid().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Sanity: CGI works on this server (a 0 s run) before a test relies on it.
    let r = server.get("/cgi-bin/slow?SLEEP=0");
    assert_eq!(
        r.status,
        200,
        "the slow CGI does not run: {} {}\n--- error.log tail ---\n{}",
        r.status,
        r.text(),
        server.error_log_tail(30)
    );
    assert!(r.text().contains("slow: done after 0 s"), "{}", r.text());
    CgiServer { server }
}

/// A `<VirtualHost 127.0.0.1:@PORT<i>@>` block with the guard settings.
pub fn vhost_block(port_placeholder: &str, name: &str, auto_close: &str, timeout: &str) -> String {
    format!(
        "<VirtualHost 127.0.0.1:{port_placeholder}>\n    ServerName {name}\n    SocketGuardAutoClose {auto_close}\n    SocketGuardCloseWaitTimeout {timeout}\n</VirtualHost>\n"
    )
}

// ---------------------------------------------------------------------------------------------
// The kernel's view
// ---------------------------------------------------------------------------------------------

/// One server-side TCP socket as /proc/net/tcp{,6} shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSock {
    pub local_port: u16,
    pub remote_port: u16,
    pub state: u8,
    pub inode: u64,
}

pub const TCP_CLOSE_WAIT: u8 = 0x08;

/// Every TCP socket (IPv4 and IPv6) whose local port is `port`.
pub fn kernel_sockets(port: u16) -> Vec<KernelSock> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port_of = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            let (Some(lp), Some(rp)) = (port_of(f[1]), port_of(f[2])) else {
                continue;
            };
            if lp != port {
                continue;
            }
            out.push(KernelSock {
                local_port: lp,
                remote_port: rp,
                state: u8::from_str_radix(f[3], 16).unwrap_or(0),
                inode: f[9].parse().unwrap_or(0),
            });
        }
    }
    out
}

/// Client ports of the server-side sockets on `port` that the kernel shows in CLOSE_WAIT
/// (what `ss -tn state close-wait '( sport = :PORT )'` lists), sorted.
pub fn close_wait_peers(port: u16) -> Vec<u16> {
    let mut v: Vec<u16> = kernel_sockets(port)
        .into_iter()
        .filter(|s| s.state == TCP_CLOSE_WAIT)
        .map(|s| s.remote_port)
        .collect();
    // /proc/net/tcp is read in chunks while other sockets come and go, so one socket can be
    // listed twice; a client port names one connection here (all clients are on 127.0.0.1).
    v.sort();
    v.dedup();
    v
}

/// `ss` output for failure messages.
pub fn ss_close_wait(port: u16) -> String {
    std::process::Command::new("ss")
        .args([
            "-tnp",
            "state",
            "close-wait",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("(ss failed: {e})"))
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Opens `n` connections to `port` that each send `GET /cgi-bin/slow?SLEEP=<secs>` (Host
/// `host`, or the default) and then wait.
pub fn slow_clients(port: u16, host: Option<&str>, n: usize, secs: u32) -> Vec<Conn> {
    (0..n)
        .map(|i| {
            let mut c =
                Conn::connect(port).unwrap_or_else(|e| panic!("connect #{i} to {port}: {e}"));
            c.send_request(
                "GET",
                &format!("/cgi-bin/slow?SLEEP={secs}"),
                host,
                false,
                &[],
                b"",
            )
            .unwrap_or_else(|e| panic!("send on #{i}: {e}"));
            c
        })
        .collect()
}

pub fn client_ports(conns: &[Conn]) -> Vec<u16> {
    let mut v: Vec<u16> = conns.iter().map(Conn::local_port).collect();
    v.sort();
    v
}

/// Reads on a half-closed client until the server's FIN: Ok(bytes received before it) on a
/// clean EOF, Err on a reset (or any other error), or on no EOF within `timeout`.
pub fn read_until_fin(c: &Conn, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut s = c.stream();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "no FIN within {timeout:?} ({} bytes received)",
                        got.len()
                    ));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "{:?} ({e}) after {} bytes: the server reset the connection instead of a FIN",
                    e.kind(),
                    got.len()
                ))
            }
        }
    }
}

/// Ok if nothing at all (no data, no FIN, no reset) arrives on `c` within `wait`.
pub fn expect_silence(c: &Conn, wait: Duration) -> Result<(), String> {
    let mut s = c.stream();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    let r = match s.read(&mut buf) {
        Ok(0) => Err("got a FIN: the server closed a connection it must leave alone".to_string()),
        Ok(n) => Err(format!(
            "got {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        )),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
        Err(e) => Err(format!("{:?} ({e})", e.kind())),
    };
    let _ = s.set_read_timeout(Some(crate::common::http::IO_TIMEOUT));
    r
}

// ---------------------------------------------------------------------------------------------
// Status page
// ---------------------------------------------------------------------------------------------

/// The JSON connection row of the client whose local port is `client_port`, connected to
/// the server's port `server_port`. Both are needed: the kernel reuses a client port for
/// connections to different server ports at the same time.
pub fn row_for(rows: &[json::Value], client_port: u16, server_port: u16) -> Option<&json::Value> {
    rows.iter().find(|r| {
        r.get("client")
            .and_then(json::Value::as_str)
            .map(|a| a.ends_with(&format!(":{client_port}")))
            .unwrap_or(false)
            && r.get("local_port").and_then(json::Value::as_u64) == Some(server_port as u64)
    })
}

/// (client port, server port) of each connection: what identifies its row.
pub fn conn_ids(conns: &[Conn]) -> Vec<(u16, u16)> {
    conns.iter().map(|c| (c.local_port(), c.port)).collect()
}

pub fn str_field<'a>(row: &'a json::Value, k: &str) -> &'a str {
    row.get(k).and_then(json::Value::as_str).unwrap_or("")
}

/// Polls `?json` until `check(row)` passes for the row of every connection in `ids`
/// ((client port, server port), see `conn_ids`). Returns the document that passed.
pub fn wait_rows(
    server: &Apache,
    ids: &[(u16, u16)],
    timeout: Duration,
    what: &str,
    check: impl Fn(&json::Value) -> Result<(), String>,
) -> json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let j = server.status_json();
        let err = {
            let rows = j.at("connections").as_array().expect("connections array");
            ids.iter().find_map(|&(p, sp)| match row_for(rows, p, sp) {
                None => Some(format!("no row for client port {p} on server port {sp}")),
                Some(r) => check(r).err().map(|e| format!("client port {p}: {e}: {r}")),
            })
        };
        match err {
            None => return j,
            Some(e) => {
                if Instant::now() >= deadline {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}: {e}\n--- connections ---\n{}\n--- error.log tail ---\n{}",
                        j.at("connections"),
                        server.error_log_tail(40)
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A check for `wait_rows`: the row is in state `handling` on `/cgi-bin/slow`.
pub fn handling_slow(r: &json::Value) -> Result<(), String> {
    if str_field(r, "state") == "handling" && str_field(r, "path") == "/cgi-bin/slow" {
        Ok(())
    } else {
        Err("not yet handling /cgi-bin/slow".into())
    }
}

/// Error-log lines carrying message id `id` (e.g. "SG0015").
pub fn log_lines(server: &Apache, id: &str) -> Vec<String> {
    let tag = format!("{id}:");
    server
        .error_log()
        .lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_string)
        .collect()
}

/// The "N.N" of "... CLOSE_WAIT for N.Ns ..." in an SG0015/SG0016 line.
pub fn close_wait_secs(line: &str) -> Option<f64> {
    let rest = &line[line.find("CLOSE_WAIT for ")? + "CLOSE_WAIT for ".len()..];
    let end = rest.find('s')?;
    rest[..end].parse().ok()
}

/// The client port of the "(client IP:PORT, ..." in an SG0015/SG0016 line.
pub fn logged_client_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("(client ")? + "(client ".len()..];
    let addr = &rest[..rest.find(',')?];
    addr.rsplit(':').next()?.parse().ok()
}

/// Asserts that `lines` are exactly one line per port in `ports` (by the logged client port).
pub fn assert_one_line_per_client(lines: &[String], ports: &[u16], what: &str, log_tail: &str) {
    let mut logged: Vec<u16> = lines
        .iter()
        .map(|l| {
            logged_client_port(l).unwrap_or_else(|| panic!("{what}: no client port in line {l:?}"))
        })
        .collect();
    logged.sort();
    let mut want = ports.to_vec();
    want.sort();
    assert_eq!(
        logged,
        want,
        "{what}: expected exactly one line per client port\n--- lines ---\n{}\n--- error.log tail ---\n{log_tail}",
        lines.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

/// Thread ids of `pid` whose name (comm) is `name`.
pub fn threads_named(pid: i32, name: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|t| t.parse::<i32>().ok()))
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .map(|c| c.trim() == name)
                .unwrap_or(false)
        })
        .collect()
}

/// A thread held in ptrace-stop; dropping detaches it (it resumes where it was, its
/// interrupted system call restarted).
pub struct StoppedThread {
    tid: i32,
}

impl StoppedThread {
    pub fn stop(tid: i32) -> Result<StoppedThread, String> {
        // SAFETY: ptrace/waitpid on a thread of our own test server (root in CI); no memory of ours
        // is passed except `status`, a valid local.
        unsafe {
            if libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) != 0 {
                return Err(format!(
                    "PTRACE_SEIZE {tid}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let st = StoppedThread { tid };
            if libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) != 0 {
                return Err(format!(
                    "PTRACE_INTERRUPT {tid}: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let mut status = 0;
            let r = libc::waitpid(tid, &mut status, libc::__WALL);
            if r != tid || !libc::WIFSTOPPED(status) {
                return Err(format!("waitpid {tid}: {r} status {status:#x}"));
            }
            Ok(st)
        }
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        // SAFETY: detaching a thread this value seized; no pointers involved.
        unsafe {
            libc::ptrace(libc::PTRACE_DETACH, self.tid, 0usize, 0usize);
        }
    }
}
