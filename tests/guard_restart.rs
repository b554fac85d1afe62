//! Sockets held by children of an earlier generation after a graceful restart — restarts are
//! when stuck connections pile up. They are shown as `old_generation` (with the old children
//! still listed, by generation), and AutoClose still applies to them: the old child's guard
//! keeps running until the child exits.

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::{json, Mpm};
use guard::*;
use std::time::{Duration, Instant};

fn class_is(want: &'static str) -> impl Fn(&json::Value) -> Result<(), String> {
    move |r| match str_field(r, "class") {
        c if c == want => Ok(()),
        c => Err(format!("class {c:?}, state {:?}", str_field(r, "state"))),
    }
}

fn pid_of(j: &json::Value, client_port: u16, server_port: u16) -> u64 {
    let rows = j.at("connections").as_array().expect("connections array");
    row_for(rows, client_port, server_port)
        .and_then(|r| r.get("pid").and_then(json::Value::as_u64))
        .expect("row with a pid")
}

fn old_generation_after_graceful_restart(mpm: Mpm) {
    const N: usize = 3;
    let opts = opts_with_cgi(mpm, 2 * N + 4)
        .extra_ports(2)
        .vhosts(&format!(
            "{}{}",
            vhost_block("@PORT1@", "off.test", "Off", "1s"),
            vhost_block("@PORT2@", "on.test", "On", "1s"),
        ));
    let server = start_with_cgi(opts);
    let (p1, p2) = (server.extra_port(1), server.extra_port(2));
    let off_c = slow_clients(p1, None, N, 40);
    let on_c = slow_clients(p2, None, N, 40);
    let (off_ids, on_ids) = (conn_ids(&off_c), conn_ids(&on_c));
    wait_rows(
        &server,
        &[off_ids.clone(), on_ids.clone()].concat(),
        Duration::from_secs(15),
        "all slow CGI requests being handled",
        handling_slow,
    );

    // Before the restart: the Off vhost's abandoned connections are plain `stuck`.
    for c in &off_c {
        c.shutdown_write();
    }
    let before = wait_rows(
        &server,
        &off_ids,
        Duration::from_secs(10),
        "stuck before the restart",
        class_is("stuck"),
    );
    let owners: Vec<u64> = off_ids
        .iter()
        .map(|&(p, sp)| pid_of(&before, p, sp))
        .collect();

    assert_eq!(
        server.graceful_restart(),
        1,
        "first graceful restart is generation 1"
    );

    // The old children still hold them (their CGIs sleep on): now `old_generation`, same pids.
    let after = wait_rows(
        &server,
        &off_ids,
        Duration::from_secs(15),
        "old_generation after the restart",
        class_is("old_generation"),
    );
    for (&(p, sp), owner) in off_ids.iter().zip(&owners) {
        assert_eq!(
            pid_of(&after, p, sp),
            *owner,
            "the same old child still owns client port {p}"
        );
    }
    let s = server.wait_status(
        Duration::from_secs(10),
        "KernelCloseWaitOldGeneration",
        |s| match s.num("KernelCloseWaitOldGeneration") {
            n if n >= N as u64 => Ok(()),
            n => Err(format!("KernelCloseWaitOldGeneration={n}")),
        },
    );
    // (No assertion on KernelCloseWaitStuck: this test's own status connections pass through
    // CLOSE_WAIT for an instant as they close. The per-row classes above are the check.)
    assert_eq!(
        close_wait_peers(p1),
        client_ports(&off_c),
        "{}",
        ss_close_wait(p1)
    );
    let gens: Vec<u64> = s.children().iter().map(|c| c.num("Generation")).collect();
    assert!(
        gens.contains(&0) && gens.contains(&1),
        "old (0) and new (1) children listed: {}",
        s.raw
    );
    for owner in &owners {
        let row = s.children().into_iter().find(|c| c.id == owner.to_string());
        let row = row.unwrap_or_else(|| panic!("old child {owner} not listed:\n{}", s.raw));
        assert_eq!(row.num("Generation"), 0, "{}", row.raw);
    }

    // AutoClose On still applies in the old generation: clients that hang up now get a FIN.
    // t0 before the first FIN goes out: the guard's clock cannot start earlier than that.
    let t0 = Instant::now();
    for c in &on_c {
        c.shutdown_write();
    }
    let limit = TIMEOUT + 2 * SCAN_INTERVAL + TOLERANCE;
    for c in &on_c {
        let left = limit.saturating_sub(t0.elapsed()) + Duration::from_millis(200);
        match read_until_fin(c, left) {
            // The guard's shutdown: a FIN with no response before it (the CGI still sleeps).
            Ok(bytes) => assert!(
                bytes.is_empty(),
                "client port {} got a response, so the request ended by itself: {:?}",
                c.local_port(),
                String::from_utf8_lossy(&bytes)
            ),
            Err(e) => panic!(
                "client port {}: {e}\n{}",
                c.local_port(),
                server.error_log_tail(30)
            ),
        }
    }
    assert!(
        t0.elapsed() >= TIMEOUT,
        "closed before the timeout: {:?}",
        t0.elapsed()
    );
    // Each child's guard writes its SG0015 line just after the shutdown the client saw.
    let on_vhost = format!("vhost on.test:{p2}");
    let closed = common::poll(
        Duration::from_secs(3),
        "one SG0015 per On connection",
        || {
            let lines = log_lines(&server, "SG0015");
            match lines.iter().filter(|l| l.contains(&on_vhost)).count() {
                n if n == N => Ok(lines),
                n => Err(format!("{n} of {N} lines:\n{}", lines.join("\n"))),
            }
        },
    );
    assert!(
        closed.iter().all(|l| !l.contains("off.test")),
        "{}",
        closed.join("\n")
    );
}

mpm_tests!(old_generation_after_graceful_restart);
