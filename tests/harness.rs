//! Checks of the test harness itself (no module needed): the JSON and Prometheus checkers
//! reject what they must, and a plain Apache starts, serves and is fully stopped on drop.

mod common;

use common::{json, status, Apache, Conn, Mpm, Opts, LARGE_FILE_SIZE};
use std::time::Duration;

#[test]
fn json_checker_accepts_valid_and_rejects_invalid() {
    let v =
        json::parse(r#" {"a":[1,2.5,-3e2,true,false,null],"b":"x\"\\\u003c\ud83d\ude00","c":{}} "#)
            .unwrap();
    assert_eq!(v.at("a").as_array().unwrap().len(), 6);
    assert_eq!(v.at("b").as_str().unwrap(), "x\"\\<\u{1F600}");
    assert!(v.at("c").is_object());
    for bad in [
        "",
        "{",
        "{\"a\":1,}",
        "[1,]",
        "{\"a\" 1}",
        "\"\x01\"",
        "01",
        "{\"a\":1}x",
        "'a'",
        "{\"a\":1,\"a\":2}",
        "\"\\x\"",
        "NaN",
        "[1 2]",
        "\"\\ud800\"",
        "{a:1}",
    ] {
        assert!(json::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn metrics_checker_accepts_valid_and_rejects_invalid() {
    let ok = "# HELP socket_guard_accepted_total Connections accepted.\n\
              # TYPE socket_guard_accepted_total counter\n\
              socket_guard_accepted_total 12\n\
              socket_guard_force_closed_total{vhost=\"a\\\"b\\\\c\",by=\"guard\"} 0\n\
              socket_guard_close_wait_seconds_bucket{le=\"+Inf\"} 3\n";
    let samples = status::parse_metrics(ok).unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[1].label("vhost"), Some("a\"b\\c"));
    for bad in [
        "socket_guard_x{vhost=\"a\"b\"} 1\n",
        "socket_guard_x{vhost=a} 1\n",
        "socket guard 1\n",
        "socket_guard_x{vhost=\"a\"} one\n",
        "socket_guard_x{vhost=\"<b>\\q\"} 1\n",
        "# TYPE socket_guard_x bogus\n",
    ] {
        assert!(
            status::parse_metrics(bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn auto_parser_splits_repeated_keys() {
    let s = status::StatusAuto::parse(
        "Accepted: 5\nVhost: a.test:80 AutoClose=On TimeoutMs=100 Accepted=2\nVhost: b.test:80 AutoClose=Off\nChild: 12 Generation=0 Hung=0\n",
    );
    assert_eq!(s.num("Accepted"), 5);
    assert_eq!(s.vhost_lines.len(), 2);
    assert_eq!(s.vhost("a.test:80").unwrap().num("TimeoutMs"), 100);
    assert_eq!(s.children()[0].id, "12");
}

mpm_tests!(plain_apache_starts_serves_and_stops);

/// A plain Apache (without the module) starts, serves keep-alive and large files, and after
/// drop neither the parent nor any of its children are left.
fn plain_apache_starts_serves_and_stops(mpm: Mpm) {
    let server = Apache::start(Opts::new(mpm).without_module());
    let pid = server.pid();
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("socket guard test"));
    let mut c = Conn::connect(server.port()).unwrap();
    for _ in 0..3 {
        let r = c.get("/large.bin").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), LARGE_FILE_SIZE);
    }
    let r = c.request("HEAD", "/small.txt", None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = c.get("/small.txt").unwrap();
    assert_eq!(r.text(), "hello\n");
    let children = common::poll(Duration::from_secs(5), "children", || {
        let c = server.child_pids();
        if c.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(c)
        }
    });
    assert!(server.parent_fd_count() > 2);
    drop(c);
    drop(server);
    for p in std::iter::once(pid).chain(children) {
        let alive = common::proc_stat(p).map(|s| s.pgrp == pid).unwrap_or(false);
        assert!(!alive, "process {p} of the stopped server is still there");
    }
}
