//! Leaked sockets: the server-side sockets of 2 slow requests on an `AutoClose On` vhost and 2
//! on an `Off` vhost are duplicated into a helper process (`sleep`, not an Apache child: the
//! test takes them out of the child with pidfd_getfd, as root, and hands them to the helper
//! at exec), their Apache owner is SIGKILLed, and the clients half-close. The sockets stay in
//! CLOSE_WAIT, held only by the helper: the guard process shows them as leaked with the
//! helper's pid and command, closes the On vhost's (the clients get a FIN) and leaves the Off
//! vhost's alone; the helper itself is never killed. Every MPM. The helper runs as `User`
//! (www-data), as a program spawned by an Apache child does.

mod common;
#[path = "common/guard.rs"]
mod guard;
#[path = "common/procs.rs"]
mod procs;

use common::{json, Conn, Mpm};
use guard::*;
use procs::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The server-side socket of `client` (its inode from /proc/net/tcp) as a descriptor number
/// in process `owner`.
fn server_fd(owner: i32, server_port: u16, client_port: u16) -> i32 {
    let inode = kernel_sockets(server_port)
        .into_iter()
        .find(|s| s.remote_port == client_port)
        .expect("the server-side socket")
        .inode;
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{owner}/fd"))
        .unwrap()
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
        .expect("the owner holds it")
}

/// A copy of descriptor `fd` of process `pid`, in this process.
fn take_fd(pid: i32, fd: i32) -> OwnedFd {
    // SAFETY: raw pidfd_open/pidfd_getfd syscalls; each returns a new descriptor or -1, which
    // we check before taking ownership.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, fd, 0);
        let err = std::io::Error::last_os_error();
        libc::close(pidfd as i32);
        assert!(dup >= 0, "pidfd_getfd: {err}");
        OwnedFd::from_raw_fd(dup as i32)
    }
}

fn leaked_sockets(mpm: Mpm) {
    let opts = opts_with_cgi(mpm, 6).extra_ports(2).vhosts(&format!(
        "{}{}",
        vhost_block("@PORT1@", "on.test", "On", "1s"),
        vhost_block("@PORT2@", "off.test", "Off", "1s")
    ));
    let server = start_with_cgi(opts);
    let (p1, p2) = (server.extra_port(1), server.extra_port(2));
    let on = slow_clients(p1, None, 2, 30);
    let off = slow_clients(p2, None, 2, 30);
    let mut owners = Vec::new();
    let mut taken = Vec::new();
    for (clients, port) in [(&on, p1), (&off, p2)] {
        for c in clients.iter() {
            let owner = owner_pid(&server, c.local_port(), port);
            taken.push(take_fd(owner, server_fd(owner, port, c.local_port())));
            owners.push(owner);
        }
    }
    // The helper inherits the sockets as descriptors 200, 201, ... (dup2 clears close-on-exec;
    // far above the taken descriptors, so no copy overwrites one not copied yet).
    let raw: Vec<i32> = taken.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new("sleep");
    // As `User`, like a program an Apache child spawned: the guard process (also `User`) can
    // list its descriptors; another user's /proc/<pid>/fd would need CAP_DAC_READ_SEARCH.
    cmd.arg("60")
        .stdin(Stdio::null())
        .process_group(0)
        .uid(33)
        .gid(33);
    // SAFETY: the closure only calls dup2, which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, 200 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut helper = cmd.spawn().unwrap();
    drop(taken);
    owners.sort();
    owners.dedup();
    for o in &owners {
        // SAFETY: kill(2) on children of the server this test started.
        unsafe { libc::kill(*o, libc::SIGKILL) };
    }
    for c in on.iter().chain(off.iter()) {
        c.shutdown_write();
    }
    let limit = Duration::from_secs(1) + SCAN_INTERVAL * 3 + TOLERANCE + Duration::from_secs(1);
    for (i, c) in on.iter().enumerate() {
        read_until_fin(c, limit)
            .unwrap_or_else(|e| panic!("On client #{i}: {e}\n{}", server.error_log_tail(30)));
    }
    // The Off vhost's sockets leaked at the same moment: the scan that closed the On ones
    // decided on them too; two more scans.
    server.wait_scans(2);
    for (i, c) in off.iter().enumerate() {
        expect_silence(c, Duration::from_millis(20))
            .unwrap_or_else(|e| panic!("Off client #{i} was touched: {e}"));
    }
    let j = server.status_json();
    let leaked = j.at("kernel").at("leaked").as_array().unwrap().to_vec();
    let off_ports: Vec<u16> = off.iter().map(Conn::local_port).collect();
    let listed: Vec<(u64, String)> = leaked
        .iter()
        .map(|r| {
            (
                r.get("holder_pid")
                    .and_then(json::Value::as_u64)
                    .unwrap_or(0),
                r.get("client")
                    .and_then(json::Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    for p in &off_ports {
        assert!(
            listed.iter().any(|(pid, client)| *pid == helper.id() as u64 && client.ends_with(&format!(":{p}"))),
            "the Off vhost's leaked socket of client port {p} is listed with the helper's pid {}: {listed:?}",
            helper.id()
        );
    }
    assert!(
        leaked
            .iter()
            .all(|r| matches!(r.get("closed"), Some(json::Value::Bool(false)))),
        "the Off vhost's leaked sockets are not shown as closed: {leaked:?}"
    );
    let s = server.status_auto();
    assert_eq!(s.num("KernelCloseWaitLeaked"), 2, "{}", s.raw);
    // Taking the descriptors out of the holder proved the guard process's reach.
    assert_eq!(s.get("GuardProcessReach"), Some("children"), "{}", s.raw);
    assert_eq!(s.num("ForceClosedRescue"), 2, "{}", s.raw);
    let lines = log_lines(&server, "SG0024");
    assert_eq!(lines.len(), 2, "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!("held by pid {} (sleep)", helper.id()))),
        "{}",
        lines.join("\n")
    );
    assert!(
        helper.try_wait().unwrap().is_none(),
        "the holder was killed"
    );
    let _ = helper.kill();
    let _ = helper.wait();
    assert_eq!(server.get("/small.txt").status, 200);
}

mpm_tests!(leaked_sockets);
