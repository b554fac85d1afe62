//! More listening ports than the shared table records (`MAX_LISTEN_PORTS`, 32): the ports
//! beyond it are named once in the error log (SG0028) and really are not scanned, while a
//! recorded port keeps working. The ports left out are those of the last `Listen` lines, at
//! start-up and after a graceful restart (which reverses Apache's own listener list). Event MPM only: the listener list is filled by the parent at
//! post_config, the same code for every MPM.

mod common;
#[path = "common/guard.rs"]
mod guard;
#[path = "common/procs.rs"]
mod procs;

use common::{Mpm, Opts};
use guard::*;
use procs::wait_until;
use std::time::Duration;

/// The table's limit (src/table/layout.rs MAX_LISTEN_PORTS) and two ports more.
const TABLE_PORTS: usize = 32;
const EXTRA_PORTS: usize = TABLE_PORTS + 1;

/// The ports an SG0028 line names: the list after its last ": ".
fn named_ports(line: &str) -> Vec<u16> {
    let list = line.rsplit(": ").next().unwrap_or("");
    list.split(", ")
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

#[test]
fn ports_beyond_the_table_are_named_and_not_scanned() {
    let mpm = Mpm::Event;
    let opts = Opts::new(mpm)
        .global(&cgi_global(mpm))
        .tuning(&tuning_for(mpm, 4))
        .extra_ports(EXTRA_PORTS);
    let server = start_with_cgi(opts);
    let all: Vec<u16> = std::iter::once(server.port())
        .chain((1..=EXTRA_PORTS).map(|i| server.extra_port(i)))
        .collect();
    let lines = log_lines(&server, "SG0028");
    assert_eq!(
        lines.len(),
        1,
        "said once at start-up:\n{}",
        lines.join("\n")
    );
    assert!(lines[0].contains("[socket_guard:warn]"), "{}", lines[0]);
    let unguarded = named_ports(&lines[0]);
    assert_eq!(unguarded.len(), all.len() - TABLE_PORTS, "{}", lines[0]);
    assert_eq!(
        unguarded,
        all[TABLE_PORTS..],
        "the last Listen lines are the ones left out ({all:?}): {}",
        lines[0]
    );
    let guarded = *all.iter().find(|p| !unguarded.contains(p)).unwrap();
    let off_table = unguarded[0];

    // One stuck request on a recorded port and one on a port beyond the table; both clients
    // leave, so the kernel shows both server sockets in CLOSE_WAIT.
    let on = slow_clients(guarded, None, 1, 30);
    let off = slow_clients(off_table, None, 1, 30);
    let ids = [conn_ids(&on)[0], conn_ids(&off)[0]];
    wait_rows(
        &server,
        &ids,
        Duration::from_secs(10),
        "both requests to run",
        handling_slow,
    );
    let client_ports = (on[0].local_port(), off[0].local_port());
    on.into_iter().chain(off).for_each(|c| c.close());
    wait_until(Duration::from_secs(5), "both sockets in CLOSE_WAIT", || {
        close_wait_peers(guarded).contains(&client_ports.0)
            && close_wait_peers(off_table).contains(&client_ports.1)
    });
    // A scan that started after both were in CLOSE_WAIT marks the recorded port's socket and
    // passes over the other one.
    let scans = server.status_auto().num("Scans");
    wait_until(Duration::from_secs(5), "two more scans", || {
        server.status_auto().num("Scans") >= scans + 2
    });
    let j = server.status_json();
    let rows = j.at("connections").as_array().expect("connections array");
    let state = |(client, port): (u16, u16)| {
        row_for(rows, client, port).map(|r| str_field(r, "state").to_string())
    };
    assert_eq!(
        state(ids[0]).as_deref(),
        Some("close_wait"),
        "{}",
        j.at("connections")
    );
    assert_eq!(
        state(ids[1]).as_deref(),
        Some("handling"),
        "a port beyond the table was scanned after all: {}",
        j.at("connections")
    );
    server.release_cgis();

    // A graceful restart reverses Apache's own listener list; the same Listen lines stay
    // guarded and the same ports are named again.
    server.graceful_restart();
    wait_until(Duration::from_secs(10), "SG0028 said again", || {
        log_lines(&server, "SG0028").len() == 2
    });
    let again = named_ports(&log_lines(&server, "SG0028")[1]);
    assert_eq!(
        again, unguarded,
        "other ports left out after a graceful restart"
    );
}
