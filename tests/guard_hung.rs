//! A child whose guard stops checking in (here: its `socket-guard` thread held in ptrace-stop,
//! as a deadlock would) is shown as hung after SocketGuardHungChildTimeout, and the CLOSE_WAIT
//! sockets it holds are classed `hung` (the parent-rescue class), not `stuck`.
//!
//! Only the guard thread is stopped: SIGSTOP on the whole child would also stop its accepting
//! (event MPM: the kernel can hand a new connection to the stopped child's listener, and the
//! test's own status request would hang). Needs root or CAP_SYS_PTRACE, as CI has.

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::{json, Mpm};
use guard::*;
use std::time::Duration;

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

    let guard_tid = *threads_named(owner, "socket-guard")
        .first()
        .unwrap_or_else(|| panic!("no socket-guard thread in {owner}"));
    let _stopped = StoppedThread::stop(guard_tid).unwrap_or_else(|e| panic!("{e}"));
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

mpm_tests!(hung_child_is_shown);
