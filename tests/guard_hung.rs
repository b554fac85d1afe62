//! A child whose guard stops checking in (here: SIGSTOP, as a deadlock or D-state would) is
//! shown as hung after SocketGuardHungChildTimeout, and the CLOSE_WAIT sockets it holds are
//! classed `hung` (the parent-rescue class), not `stuck`.

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::{json, Mpm};
use guard::*;
use std::time::Duration;

/// SIGSTOPs a process of our test server; SIGCONT when dropped, so the server can always stop.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Stopped {
        // SAFETY: kill(2) on a child of the server this test started; no memory effects.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

fn hung_child_is_shown(mpm: Mpm) {
    let opts = opts_with_cgi(mpm, 6)
        .extra_ports(1)
        .global("SocketGuardHungChildTimeout 1s\n")
        .vhosts(&vhost_block("@PORT1@", "off.test", "Off", "1s"));
    let server = start_with_cgi(opts);
    let p1 = server.extra_port(1);
    let clients = slow_clients(p1, None, 1, 40);
    let ids = conn_ids(&clients);
    wait_rows(
        &server,
        &ids,
        Duration::from_secs(15),
        "the slow request being handled",
        handling_slow,
    );
    clients[0].shutdown_write();
    let j = wait_rows(
        &server,
        &ids,
        Duration::from_secs(10),
        "stuck",
        |r| match str_field(r, "class") {
            "stuck" => Ok(()),
            c => Err(format!("class {c:?}")),
        },
    );
    let rows = j.at("connections").as_array().expect("connections");
    let owner = row_for(rows, ids[0].0, ids[0].1)
        .and_then(|r| r.get("pid").and_then(json::Value::as_u64))
        .expect("owner pid") as i32;
    assert!(
        server.child_pids().contains(&owner),
        "{owner} is a child of our server"
    );

    let _stopped = Stopped::new(owner);
    // Another child answers the status page; the stopped one's check-ins age past 1 s.
    let s = server.wait_status(
        Duration::from_secs(10),
        "the stopped child shown as hung",
        |s| match s.children().into_iter().find(|c| c.id == owner.to_string()) {
            Some(c) if c.get("Hung") == Some("1") && c.num("CheckinAgeMs") > 1000 => Ok(()),
            Some(c) => Err(c.raw),
            None => Err(format!("no Child line for {owner}")),
        },
    );
    assert!(s.num("KernelCloseWaitHung") >= 1, "{}", s.raw);
    wait_rows(
        &server,
        &ids,
        Duration::from_secs(5),
        "class hung",
        |r| match str_field(r, "class") {
            "hung" => Ok(()),
            c => Err(format!("class {c:?}")),
        },
    );
    // Nothing acted on it: Off vhost, and rescue is not the in-child guard's job.
    assert_eq!(
        close_wait_peers(p1),
        client_ports(&clients),
        "{}",
        ss_close_wait(p1)
    );
}

// Prefork serves the status page from another process; event too (another child, or the
// listener of a running one). Worker is the same as event here.
#[test]
fn hung_child_is_shown_prefork() {
    hung_child_is_shown(Mpm::Prefork);
}

#[test]
fn hung_child_is_shown_event() {
    hung_child_is_shown(Mpm::Event);
}
