//! With mod_status loaded, /server-status carries a Socket Guard section through status_hook.

mod common;

use common::{Apache, Mpm, Opts};

#[test]
fn server_status_shows_socket_guard_event() {
    let server = Apache::start(Opts::new(Mpm::Event).with_mod_status());

    let r = server.get("/server-status?auto");
    assert_eq!(r.status, 200, "/server-status?auto:\n{}", r.text());
    let auto = r.text();
    // mod_status's own lines are still there.
    assert!(
        auto.contains("ServerMPM: event"),
        "mod_status ?auto lost its own lines:\n{auto}"
    );
    let sg: Vec<&str> = auto
        .lines()
        .filter(|l| l.starts_with("SocketGuard"))
        .collect();
    assert!(
        !sg.is_empty(),
        "no SocketGuard lines in /server-status?auto:\n{auto}"
    );
    for l in &sg {
        assert!(
            l.contains(": "),
            "SocketGuard line is not `Key: Value`: {l:?}"
        );
    }
    let used = sg
        .iter()
        .find_map(|l| l.strip_prefix("SocketGuardSlotsUsed: "))
        .unwrap_or_else(|| panic!("no SocketGuardSlotsUsed: line:\n{auto}"));
    let used: u64 = used
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("SocketGuardSlotsUsed not a number: {used:?}"));
    assert!(
        used >= 1,
        "the /server-status connection itself occupies a slot"
    );
    let open = sg
        .iter()
        .find_map(|l| l.strip_prefix("SocketGuardOpen: "))
        .unwrap_or_else(|| panic!("no SocketGuardOpen: line:\n{auto}"));
    assert!(
        open.trim().parse::<u64>().is_ok_and(|n| n >= 1),
        "SocketGuardOpen must count the /server-status connection: {open:?}"
    );

    let r = server.get("/server-status");
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(
        html.contains("Socket Guard"),
        "/server-status HTML lacks a \"Socket Guard\" section:\n{html}"
    );

    // The module's own page still works next to mod_status.
    assert_eq!(server.get("/socket-status").status, 200);
    assert!(
        !server.error_log().contains("SG0004"),
        "{}",
        server.error_log()
    );
}

#[test]
fn server_status_without_module_has_no_section_event() {
    // Control: the section comes from the module, not from the test config.
    let server = Apache::start(Opts::new(Mpm::Event).with_mod_status().without_module());
    let r = server.get("/server-status?auto");
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("SocketGuard"), "{}", r.text());
}
