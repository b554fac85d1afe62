//! Slot accounting: idle keep-alive connections are tracked and released; a full table keeps
//! serving and counts what it could not track.

mod common;

use common::{hold_keepalive, json, Apache, Mpm, Opts};
use std::time::Duration;

fn idle_keepalive_tracked(mpm: Mpm) {
    let mut opts = Opts::new(mpm);
    if mpm == Mpm::Prefork {
        // Each idle keep-alive connection pins a process: start enough of them up front.
        opts = opts.tuning("StartServers 14\nMinSpareServers 2\nMaxSpareServers 16\nServerLimit 32\nMaxRequestWorkers 32\n");
    }
    let server = Apache::start(opts);
    let conns = hold_keepalive(server.port(), 10, "/index.html", None);

    let s = server.wait_status(
        Duration::from_secs(10),
        "10 idle keep-alive connections",
        |s| {
            if s.num("Open") >= 11 && s.num("OpenKeepalive") >= 10 {
                Ok(())
            } else {
                Err(format!(
                    "Open={} OpenKeepalive={}",
                    s.num("Open"),
                    s.num("OpenKeepalive")
                ))
            }
        },
    );
    assert!(
        s.num("SlotsUsed") >= 11,
        "SlotsUsed must cover the 11 open connections:\n{}",
        s.raw
    );

    // Each held connection has its own row: our client port, keepalive, 1 request, GET /index.html.
    let j = server.status_json();
    let rows = j.at("connections").as_array().expect("connections array");
    for c in &conns {
        let client_port = c.local_port();
        let row = rows
            .iter()
            .find(|r| {
                r.get("client")
                    .and_then(json::Value::as_str)
                    .map(|a| a.ends_with(&format!(":{client_port}")))
                    .unwrap_or(false)
            })
            .unwrap_or_else(|| {
                panic!(
                    "no JSON connection row for client port {client_port}: {}",
                    j.at("connections")
                )
            });
        assert_eq!(row.at("state").as_str(), Some("keepalive"), "row {row}");
        assert_eq!(row.at("requests").as_u64(), Some(1), "row {row}");
        assert_eq!(row.at("method").as_str(), Some("GET"), "row {row}");
        assert_eq!(row.at("path").as_str(), Some("/index.html"), "row {row}");
        assert_eq!(
            row.at("local_port").as_u64(),
            Some(server.port() as u64),
            "row {row}"
        );
        let pid = row.at("pid").as_u64().unwrap_or(0) as i32;
        assert!(
            server.child_pids().contains(&pid),
            "row pid {pid} is not a child of our server: {row}"
        );
    }

    drop(conns);
    server.wait_status(
        Duration::from_secs(10),
        "Open back to 1 after closing",
        |s| {
            if s.num("Open") == 1 && s.num("OpenKeepalive") == 0 {
                Ok(())
            } else {
                Err(format!(
                    "Open={} OpenKeepalive={}",
                    s.num("Open"),
                    s.num("OpenKeepalive")
                ))
            }
        },
    );
}

mpm_tests!(idle_keepalive_tracked);

fn full_table_untracked(mpm: Mpm) {
    let tuning = match mpm {
        Mpm::Prefork => "StartServers 44\nMinSpareServers 40\nMaxSpareServers 48\nServerLimit 48\nMaxRequestWorkers 48\n",
        _ => "StartServers 2\nServerLimit 4\nThreadLimit 64\nThreadsPerChild 25\nMinSpareThreads 25\nMaxSpareThreads 75\nMaxRequestWorkers 100\n",
    };
    let server = Apache::start(Opts::new(mpm).tuning(tuning).global("SocketGuardSlots 16"));
    let a0 = server.status_auto();
    assert_eq!(a0.num("SlotsTotal"), 16, "SocketGuardSlots 16:\n{}", a0.raw);

    // 40 connections, all open at once; each gets its response (hold_keepalive asserts 200).
    let conns = hold_keepalive(server.port(), 40, "/index.html", None);
    assert_eq!(conns.len(), 40);

    // A status connection from before may still be on its way out (Apache closes it
    // asynchronously), leaving a slot that the next status request takes: full either way.
    let a1 = server.wait_status(Duration::from_secs(5), "the table to be full", |s| match s
        .num("SlotsUsed")
    {
        16 => Ok(()),
        n => Err(format!("SlotsUsed={n} with 40 connections open")),
    });
    assert_eq!(a1.num("SlotsTotal"), 16, "{}", a1.raw);
    assert!(
        a1.num("Untracked") >= 40 - 16,
        "Untracked must count at least the 24 connections beyond 16 slots:\n{}",
        a1.raw
    );
    // Each connection is counted once: accepted = tracked + untracked, and at least the 16
    // connections in the slots now were tracked.
    assert!(
        a1.num("Untracked") <= a1.num("Accepted") - 16,
        "Untracked counts more connections than could have gone untracked:\n{}",
        a1.raw
    );
    // (Open is not compared with the 16 slots: the snapshot derives both from one walk of
    // the same slots, so Open <= SlotsTotal cannot fail.)

    // Still serving normally with a full table.
    let r = server.get("/index.html");
    assert_eq!(r.status, 200);

    drop(conns);
    let s = server.wait_status(
        Duration::from_secs(10),
        "slots released after closing",
        |s| {
            if s.num("Open") == 1 && s.num("SlotsUsed") <= 1 {
                Ok(())
            } else {
                Err(format!(
                    "Open={} SlotsUsed={}",
                    s.num("Open"),
                    s.num("SlotsUsed")
                ))
            }
        },
    );
    // With free slots, a new connection is tracked again: Untracked stays where it was.
    let s2 = server.status_auto();
    assert_eq!(
        (s2.num("Accepted"), s2.num("Untracked")),
        (s.num("Accepted") + 1, s.num("Untracked")),
        "one more connection, tracked:\nbefore:\n{}\nafter:\n{}",
        s.raw,
        s2.raw
    );
    assert!(server.is_running());
    assert!(
        !server.error_log().contains("SG0004"),
        "{}",
        server.error_log()
    );
}

mpm_tests!(full_table_untracked);
