//! A non-root Apache (run by an ordinary user, here `nobody`, on high ports): the guard still
//! stops the CGI of an abandoned request (same user), and never signals a process outside the
//! server, even one of the same user whose environment names the very same client — an
//! impostor started outside the server's process tree and process group.

mod common;
#[path = "common/guard.rs"]
mod guard;
#[path = "common/procs.rs"]
mod procs;

use common::Mpm;
use guard::*;
use procs::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// uid and gid of `nobody`.
fn nobody() -> (u32, u32) {
    // SAFETY: getpwnam with a NUL-terminated name; the returned record is read at once.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    assert!(!pw.is_null(), "no user 'nobody' on this machine");
    // SAFETY: non-null result of getpwnam points to a valid passwd record.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// SIGTERM → SIGKILL in the module (abandon::GRACE_MS).
const GRACE: Duration = Duration::from_secs(2);

const VHOST: &str = "<VirtualHost 127.0.0.1:@PORT1@>\n    ServerName stop.test\n    \
    SocketGuardAutoClose On\n    SocketGuardCloseWaitTimeout 1s\n    \
    SocketGuardAbandonedTimeout 1s\n</VirtualHost>\n";

fn nonroot_apache_stops_only_its_own_cgis(mpm: Mpm) {
    let (uid, gid) = nobody();
    let opts = opts_with_cgi(mpm, 4)
        .run_as(uid, gid)
        .extra_ports(1)
        .vhosts(VHOST);
    let server = start_with_cgi(opts);
    let owner = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(
        owner.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(&uid.to_string())),
        "premise: the server runs as nobody"
    );
    let p1 = server.extra_port(1);
    let client = slow_clients(p1, None, 1, 30).pop().unwrap();
    let port = client.local_port();
    wait_until(Duration::from_secs(10), "the CGI to run", || {
        !serving(port).is_empty()
    });
    let cgis = serving(port);
    // The impostor: same user, same REMOTE_ADDR/REMOTE_PORT, but not the server's.
    let mut impostor = Command::new("sleep")
        .arg("30")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_PORT", port.to_string())
        .uid(uid)
        .gid(gid)
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    client.close();
    wait_until(
        Duration::from_secs(8),
        "the abandoned CGI to be stopped",
        || cgis.iter().all(|p| !alive(*p)),
    );
    // Past the SIGKILL step too (GRACE_MS after the SIGTERM): every guard looked twice more
    // after it.
    server.wait_guard_passes_after(std::time::Instant::now() + GRACE, 2);
    let still = impostor.try_wait().unwrap().is_none();
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert!(still, "a process outside the server was signalled");
    let lines = log_lines(&server, "SG0021");
    assert_eq!(lines.len(), 1, "{}", server.error_log_tail(20));
    assert!(
        !lines[0].contains(&impostor.id().to_string()),
        "{}",
        lines[0]
    );
    assert_eq!(server.status_auto().num("StoppedCgi"), 1);
}

mpm_tests!(nonroot_apache_stops_only_its_own_cgis);
