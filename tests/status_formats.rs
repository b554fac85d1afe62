//! The four status formats agree with each other and with the traffic the test made.

mod common;

use common::status::{parse_metrics, AUTO_KEYS};
use common::{json, Apache, Conn, Mpm, Opts, StatusAuto};
use std::time::{Duration, Instant};

const N: u64 = 5;

const VHOST_FIELDS: &[&str] = &[
    "AutoClose",
    "TimeoutMs",
    "Accepted",
    "Open",
    "CloseWait",
    "ForceClosedGuard",
    "ForceClosedRescue",
    "Reported",
];
const CHILD_FIELDS: &[&str] = &["Generation", "Open", "CheckinAgeMs", "Hung"];
const JSON_TOP: &[&str] = &[
    "server",
    "totals",
    "vhosts",
    "children",
    "connections",
    "kernel",
    "close_wait_histogram",
];
const JSON_CONN: &[&str] = &[
    "pid",
    "client",
    "local_port",
    "vhost",
    "state",
    "age_ms",
    "close_wait_ms",
    "requests",
    "method",
    "path",
];

fn check_auto_shape(a: &StatusAuto) {
    for k in AUTO_KEYS {
        assert!(a.get(k).is_some(), "?auto lacks {k}:\n{}", a.raw);
    }
    assert!(
        a.duplicate_keys.is_empty(),
        "?auto repeats {:?}:\n{}",
        a.duplicate_keys,
        a.raw
    );
    assert!(
        a.malformed_lines.is_empty(),
        "?auto has non `Key: Value` lines {:?}",
        a.malformed_lines
    );
    let by_state: u64 = [
        "OpenReading",
        "OpenHandling",
        "OpenKeepalive",
        "OpenClosing",
        "OpenCloseWait",
    ]
    .iter()
    .map(|k| a.num(k))
    .sum();
    assert_eq!(
        a.num("Open"),
        by_state,
        "Open != sum of Open<State>:\n{}",
        a.raw
    );
    assert!(
        a.num("Open") >= 1,
        "Open must include the status connection itself:\n{}",
        a.raw
    );
    assert!(a.num("SlotsUsed") <= a.num("SlotsTotal"), "{}", a.raw);
    assert!(!a.vhost_lines.is_empty(), "no Vhost: lines:\n{}", a.raw);
    for v in a.vhosts() {
        for f in VHOST_FIELDS {
            assert!(v.get(f).is_some(), "Vhost line lacks {f}=: {:?}", v.raw);
        }
        assert!(
            ["On", "Off", "Report"].contains(&v.get("AutoClose").unwrap()),
            "{:?}",
            v.raw
        );
    }
    assert!(!a.child_lines.is_empty(), "no Child: lines:\n{}", a.raw);
    for c in a.children() {
        assert!(
            c.id.parse::<u32>().is_ok(),
            "Child id is not a pid: {:?}",
            c.raw
        );
        for f in CHILD_FIELDS {
            assert!(c.get(f).is_some(), "Child line lacks {f}=: {:?}", c.raw);
        }
        assert!(["0", "1"].contains(&c.get("Hung").unwrap()), "{:?}", c.raw);
    }
}

fn status_formats(mpm: Mpm) {
    let server = Apache::start(
        Opts::new(mpm)
            .extra_ports(1)
            .vhosts("<VirtualHost 127.0.0.1:@PORT1@>\n    ServerName fmt.test\n</VirtualHost>"),
    );
    let vport = server.extra_port(1);
    let vname = format!("fmt.test:{vport}");

    // The harness's readiness probe (a connection opened and dropped at start) may still sit
    // in the listen queue; under prefork a child can accept it after the first status
    // request. Settle first: two status reads in a row that differ by exactly their own one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let a0 = loop {
        let a = server.status_auto();
        let b = server.status_auto();
        if b.num("Accepted") == a.num("Accepted") + 1 {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "Accepted never settled:\n{}",
            b.raw
        );
    };
    check_auto_shape(&a0);
    assert_eq!(a0.get("ServerMPM"), Some(mpm.name()));
    let v0 = a0
        .vhost(&vname)
        .unwrap_or_else(|| panic!("no Vhost line for {vname}:\n{}", a0.raw));
    assert_eq!(
        (v0.num("Accepted"), v0.num("Open")),
        (0, 0),
        "nothing has connected to {vname}'s port yet; connections to the main port {} must not be \
         attributed to it (a vhost without SocketGuard directives shares the main server's config \
         unless the module merges always):\n{}",
        server.port(),
        a0.raw
    );

    // N fresh connections, 2 keep-alive requests each, to the vhost's own port.
    for i in 0..N {
        let mut c = Conn::connect(vport).unwrap();
        for j in 0..2 {
            let r = c.request("GET", "/index.html", Some("fmt.test")).unwrap();
            assert_eq!(r.status, 200, "connection {i} request {j}");
        }
        c.close();
    }

    // Wait until those connections are gone (their requests fully finished), counting the
    // status requests made meanwhile: each is one more connection and one more request.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status_requests = 0u64;
    let a1 = loop {
        let a = server.status_auto();
        status_requests += 1;
        if a.num("Open") == 1 {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "Open never went back to 1:\n{}",
            a.raw
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    check_auto_shape(&a1);
    assert_eq!(
        a1.num("Accepted") - a0.num("Accepted"),
        N + status_requests,
        "Accepted delta must be {N} connections + {status_requests} status connections:\nbefore:\n{}\nafter:\n{}",
        a0.raw,
        a1.raw
    );
    assert_eq!(
        a1.num("Requests") - a0.num("Requests"),
        2 * N + status_requests,
        "Requests delta must be {} requests + {status_requests} status requests:\nbefore:\n{}\nafter:\n{}",
        2 * N,
        a0.raw,
        a1.raw
    );
    assert!(
        a1.num("Closed") >= a0.num("Closed") + N,
        "Closed must count the {N} closed connections:\n{}",
        a1.raw
    );
    let v1 = a1
        .vhost(&vname)
        .unwrap_or_else(|| panic!("no Vhost line for {vname}:\n{}", a1.raw));
    assert_eq!(
        v1.num("Accepted") - v0.num("Accepted"),
        N,
        "per-vhost Accepted for {vname}: before {:?} after {:?}",
        v0.raw,
        v1.raw
    );
    assert_eq!(
        v1.num("Open"),
        0,
        "{vname} connections are all closed: {:?}",
        v1.raw
    );
    assert!(a1.num("Uptime") >= a0.num("Uptime"));

    // JSON: well-formed, the contract's keys, and the same Accepted (+1: its own connection).
    let r = server.get("/socket-status?json");
    assert_eq!(r.status, 200);
    assert!(
        r.content_type().starts_with("application/json"),
        "JSON content type {:?}",
        r.content_type()
    );
    let j = json::parse(&r.text())
        .unwrap_or_else(|e| panic!("?json is not well-formed: {e}\n{}", r.text()));
    for k in JSON_TOP {
        assert!(
            j.get(k).is_some(),
            "?json lacks top-level {k:?}: keys {:?}",
            j.keys()
        );
    }
    let totals = j.at("totals");
    let j_accepted = totals
        .get("accepted")
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("?json totals.accepted missing or not a count: {totals}"));
    assert_eq!(
        j_accepted,
        a1.num("Accepted") + 1,
        "JSON accepted vs ?auto Accepted (+1 for the JSON request)"
    );
    let conns = j
        .at("connections")
        .as_array()
        .expect("connections is an array");
    assert!(
        !conns.is_empty(),
        "connections must include the JSON request's own connection"
    );
    for c in conns {
        for k in JSON_CONN {
            assert!(c.get(k).is_some(), "connection row lacks {k:?}: {c}");
        }
    }
    assert!(
        conns
            .iter()
            .any(|c| c.get("path").and_then(|p| p.as_str()) == Some("/socket-status")),
        "the JSON request's own row should show path /socket-status (no query): {}",
        j.at("connections")
    );
    assert!(
        j.at("vhosts")
            .as_array()
            .map(|v| !v.is_empty())
            .unwrap_or(false),
        "vhosts must be a non-empty array"
    );
    assert!(
        j.at("children").as_array().is_some(),
        "children must be an array"
    );

    // Prometheus.
    let r = server.get("/socket-status?metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.content_type().starts_with("text/plain; version=0.0.4"),
        "metrics content type {:?}",
        r.content_type()
    );
    let text = r.text();
    let samples = parse_metrics(&text)
        .unwrap_or_else(|e| panic!("?metrics is not valid exposition format: {e}\n{text}"));
    let find = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|s| s.name == name && label.map(|(k, v)| s.label(k) == Some(v)).unwrap_or(true))
    };
    let accepted = find("socket_guard_accepted_total", None)
        .unwrap_or_else(|| panic!("no socket_guard_accepted_total:\n{text}"));
    assert_eq!(
        accepted.value as u64,
        a1.num("Accepted") + 2,
        "metrics accepted_total vs ?auto (+ the JSON and metrics connections)"
    );
    for (name, label) in [
        ("socket_guard_connections", Some(("state", "keepalive"))),
        ("socket_guard_connections", Some(("state", "handling"))),
        ("socket_guard_slots", Some(("kind", "total"))),
        ("socket_guard_slots", Some(("kind", "used"))),
        ("socket_guard_untracked_total", None),
        ("socket_guard_reclaimed_total", None),
        (
            "socket_guard_close_wait_seconds_bucket",
            Some(("le", "+Inf")),
        ),
        ("socket_guard_close_wait_seconds_count", None),
        ("socket_guard_close_wait_seconds_sum", None),
    ] {
        assert!(
            find(name, label).is_some(),
            "metrics lack {name} {label:?}:\n{text}"
        );
    }
    let total_slots = find("socket_guard_slots", Some(("kind", "total")))
        .unwrap()
        .value as u64;
    assert_eq!(
        total_slots,
        a1.num("SlotsTotal"),
        "slots total differs between formats"
    );
    assert!(
        find("socket_guard_connections", Some(("state", "handling")))
            .unwrap()
            .value
            >= 1.0,
        "the metrics request itself is being handled:\n{text}"
    );
    let fc = samples
        .iter()
        .filter(|s| s.name == "socket_guard_force_closed_total")
        .collect::<Vec<_>>();
    assert!(
        fc.iter()
            .any(|s| s.label("vhost").is_some() && s.label("by").is_some()),
        "metrics lack socket_guard_force_closed_total{{vhost=..,by=..}}:\n{text}"
    );
    for s in &fc {
        assert!(
            matches!(s.label("by"), Some("guard") | Some("rescue")),
            "bad by label: {s:?}"
        );
    }

    // HTML.
    let r = server.get("/socket-status");
    assert_eq!(r.status, 200);
    assert!(
        r.content_type().starts_with("text/html"),
        "HTML content type {:?}",
        r.content_type()
    );
    let html = r.text();
    assert!(
        html.to_ascii_lowercase().contains("<html"),
        "not an HTML document:\n{html}"
    );
    assert!(
        html.contains("fmt.test"),
        "HTML lacks the vhost fmt.test:\n{html}"
    );
    assert!(
        !html.to_ascii_lowercase().contains("http-equiv=\"refresh\""),
        "plain HTML must not refresh"
    );

    let r = server.get("/socket-status?refresh=5");
    assert_eq!(r.status, 200);
    assert!(r.content_type().starts_with("text/html"));
    let lower = r.text().to_ascii_lowercase();
    assert!(
        lower.contains("http-equiv=\"refresh\"") && lower.contains("content=\"5"),
        "?refresh=5 lacks <meta http-equiv=\"refresh\" content=\"5\">:\n{}",
        r.text()
    );

    let r = server.get("/socket-status?refresh=abc");
    assert_eq!(
        r.status,
        400,
        "?refresh=abc must be 400, got {}:\n{}",
        r.status,
        r.text()
    );

    for method in ["POST", "PUT", "DELETE"] {
        let r = server
            .request_on(server.port(), method, "/socket-status", None, b"x=1")
            .unwrap();
        assert_eq!(
            r.status, 405,
            "{method} /socket-status must be 405, got {}",
            r.status
        );
    }

    // HEAD: 200, headers only. Read to the server's close to be sure no body follows.
    let mut c = Conn::connect(server.port()).unwrap();
    c.send_request("HEAD", "/socket-status?auto", None, false, &[], b"")
        .unwrap();
    let r = c.read_response(true).unwrap();
    assert_eq!(r.status, 200, "HEAD /socket-status?auto");
    assert!(
        r.content_type().starts_with("text/plain"),
        "HEAD content type {:?}",
        r.content_type()
    );
    let rest = c.read_to_close(Duration::from_secs(10)).unwrap();
    assert!(
        rest.is_empty(),
        "HEAD response carried a body: {:?}",
        String::from_utf8_lossy(&rest)
    );

    let log = server.error_log();
    assert!(!log.contains("SG0004"), "error.log:\n{log}");
}

mpm_tests!(status_formats);
