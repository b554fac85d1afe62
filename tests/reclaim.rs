//! A child killed with SIGKILL leaves slots behind; the parent reclaims them and they never
//! stay "open" on the status page.

mod common;

use common::{hold_keepalive, json, poll, Apache, Mpm, Opts};
use std::time::Duration;

/// SPEC: a dead child's slots are reclaimed "within a second"; the guard process checks every
/// 250 ms. Plus 300 ms for this test's own polling (two status requests per step).
const RECLAIM_WITHIN: Duration = Duration::from_millis(1300);

fn rows_of(j: &json::Value) -> Vec<json::Value> {
    j.at("connections")
        .as_array()
        .expect("connections array")
        .to_vec()
}

fn dead_child_slots_reclaimed(mpm: Mpm) {
    let mut opts = Opts::new(mpm).global("SocketGuardScanInterval 100ms");
    if mpm == Mpm::Prefork {
        opts = opts.tuning("StartServers 6\nMinSpareServers 2\nMaxSpareServers 8\nServerLimit 32\nMaxRequestWorkers 32\n");
    }
    let server = Apache::start(opts);
    let before = server.status_auto();
    let conns = hold_keepalive(server.port(), 3, "/index.html", None);
    let ports: Vec<u16> = conns.iter().map(|c| c.local_port()).collect();

    // Find the owner of our first held connection, and how many of ours it holds.
    let (victim, victim_rows) = poll(
        Duration::from_secs(10),
        "rows for the 3 held connections",
        || {
            let rows = rows_of(&server.status_json());
            let mine: Vec<&json::Value> = rows
                .iter()
                .filter(|r| {
                    common::client_port_of(r)
                        .map(|p| ports.contains(&p))
                        .unwrap_or(false)
                })
                .collect();
            if mine.len() != 3 {
                return Err(format!("{} of 3 rows: {:?}", mine.len(), rows));
            }
            let first = mine
                .iter()
                .find(|r| common::client_port_of(r) == Some(ports[0]))
                .unwrap();
            let pid = first
                .at("pid")
                .as_u64()
                .ok_or_else(|| format!("no pid in {first}"))?;
            let held = mine.iter().filter(|r| r.at("pid").as_u64() == Some(pid));
            Ok((pid as i32, held.count() as u64))
        },
    );
    assert_ne!(
        victim,
        server.pid(),
        "connections are owned by children, not the parent"
    );
    assert!(
        server.child_pids().contains(&victim),
        "pid {victim} from the status page is not a child of our server {} (children {:?})",
        server.pid(),
        server.child_pids()
    );

    let killed_at = std::time::Instant::now();
    // SAFETY: kill(2) has no memory effects; `victim` was just checked to be a child of the
    // server this test started.
    let rc = unsafe { libc::kill(victim, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {victim}");
    // Wait until it is really dead: a dying process can still accept a connection and then
    // reset it, which would fail the status requests below for reasons unrelated to the module.
    poll(
        Duration::from_secs(10),
        "the killed child to die",
        || match common::proc_stat(victim) {
            Some(st) if st.state != 'Z' && st.ppid == server.pid() => {
                Err(format!("state {}", st.state))
            }
            _ => Ok(()),
        },
    );
    drop(conns);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = server.status_auto();
        let j = server.status_json();
        let rows = rows_of(&j);
        let leftover: Vec<&json::Value> = rows
            .iter()
            .filter(|r| r.get("pid").and_then(json::Value::as_u64) == Some(victim as u64))
            .collect();
        let child_row_open = s
            .children()
            .into_iter()
            .find(|c| c.id == victim.to_string())
            .map(|c| c.num("Open"))
            .unwrap_or(0);
        if s.num("Reclaimed") > before.num("Reclaimed")
            && leftover.is_empty()
            && child_row_open == 0
        {
            let took = killed_at.elapsed();
            assert!(
                took <= RECLAIM_WITHIN,
                "slots of {victim} reclaimed {took:?} after SIGKILL (limit {RECLAIM_WITHIN:?})"
            );
            // Every slot the dead child held is counted: at least our connections it owned
            // (it may also have held a status connection still closing).
            assert!(
                s.num("Reclaimed") - before.num("Reclaimed") >= victim_rows,
                "{victim} held {victim_rows} of our connections:\n{}",
                s.raw
            );
            break;
        }
        let last_rows = format!(
            "Reclaimed={} (before {}), rows of {victim}: {:?}, Child {victim} Open={child_row_open}\n{}",
            s.num("Reclaimed"),
            before.num("Reclaimed"),
            leftover,
            s.raw
        );
        if std::time::Instant::now() > deadline {
            panic!(
                "slots of killed child {victim} not reclaimed within 30 s: {last_rows}\n--- error.log tail ---\n{}",
                server.error_log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // The server keeps serving and the status page goes back to just the asking connection.
    assert_eq!(server.get("/index.html").status, 200);
    server.wait_status(Duration::from_secs(10), "Open back to 1", |s| {
        if s.num("Open") == 1 {
            Ok(())
        } else {
            Err(format!("Open={}", s.num("Open")))
        }
    });
    assert!(server.is_running());
}

mpm_tests!(dead_child_slots_reclaimed);
