//! The leak report ("Where it leaks") against a real Apache: clients that give up on stuck
//! CGIs, on two vhosts (`AutoClose On` and `Report`, `SocketGuardCloseWaitTimeout 1s`), from
//! several loopback addresses. Every format ranks their requests and clients with exact
//! counts; a graceful restart keeps them; a query string never shows; hostile paths are
//! escaped in every format and never reach the SVG charts; a flood of distinct paths stays in
//! the fixed 16 entries and keeps the heavy hitter on top.

mod common;
#[path = "common/guard.rs"]
mod guard;
#[path = "common/leaks.rs"]
mod leaks;

use common::{json, Apache, Conn, Mpm};
use guard::*;
use leaks::{Formats, Report};
use std::time::Duration;

/// How long a stuck CGI sleeps (each test releases them at its end).
const HOLD_SECS: u32 = 50;
/// A query string that must never reach a page.
const SECRET: &str = "token=SECRETQ";
/// From the clients' close to the last count: the timeout, the owner's verdict, the next
/// scan, with room for a loaded 2-CPU machine.
const COUNTED_WITHIN: Duration = Duration::from_secs(10);

/// `n` clients from `src` that each send `GET <path>?SLEEP=..&token=..` to `port` and wait.
fn stuck_clients(port: u16, src: [u8; 4], path: &str, n: usize) -> Vec<Conn> {
    (0..n)
        .map(|i| {
            let mut c = Conn::connect_from(src, port)
                .unwrap_or_else(|e| panic!("connect #{i} from {src:?} to {port}: {e}"));
            let target = format!("{path}?SLEEP={HOLD_SECS}&{SECRET}");
            c.send_request("GET", &target, None, false, &[], b"")
                .unwrap_or_else(|e| panic!("send {target}: {e}"));
            c
        })
        .collect()
}

/// Waits until every connection's handler runs its CGI (state `handling`, path under
/// `/cgi-bin/slow/`), so that closing the clients leaves them in CLOSE_WAIT.
fn wait_handling(server: &Apache, conns: &[Conn]) {
    wait_rows(
        server,
        &conn_ids(conns),
        Duration::from_secs(20),
        "the stuck CGI requests being handled",
        |r| match (str_field(r, "state"), str_field(r, "path")) {
            ("handling", p) if p.starts_with("/cgi-bin/slow/") => Ok(()),
            (s, p) => Err(format!("{s} {p}")),
        },
    );
}

fn entry(vhost: &str, key: &str, n: u64) -> leaks::Entry {
    (vhost.to_string(), key.to_string(), n)
}

/// Polls until every format shows `want` for each vhost (the counts come one scan after the
/// verdicts); then requires it of every format once more, together.
fn wait_report(server: &Apache, want: &[(&str, &Report)]) -> Formats {
    let deadline = std::time::Instant::now() + COUNTED_WITHIN;
    loop {
        let f = Formats::read(server);
        let all = |r: &Report| want.iter().all(|(v, w)| r.of(v) == **w);
        if all(&f.auto) && all(&f.json) && all(&f.html) || std::time::Instant::now() > deadline {
            for (vhost, w) in want {
                f.require(vhost, w);
            }
            return f;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server with the two vhosts; returns it with their "name:port" labels.
fn two_vhosts(mpm: Mpm, busy: usize) -> (CgiServer, String, String) {
    let opts = opts_with_cgi(mpm, busy)
        .extra_ports(2)
        .vhosts(&vhost_block("@PORT1@", "leak-on.test", "On", "1s"))
        .vhosts(&vhost_block("@PORT2@", "leak-report.test", "Report", "1s"));
    let server = start_with_cgi(opts);
    let (on, report) = (
        format!("leak-on.test:{}", server.extra_port(1)),
        format!("leak-report.test:{}", server.extra_port(2)),
    );
    (server, on, report)
}

/// 10 abandoned requests: on the On vhost 4 × alpha from 127.0.0.2 and 2 × beta from
/// 127.0.0.3; on the Report vhost 3 × gamma from 127.0.0.4 and 1 × delta from 127.0.0.2.
/// The report ranks them with exact counts in every format, counts each once (the Report
/// connections stay in CLOSE_WAIT, seen past their timeout by every scan), keeps them across
/// a graceful restart (a new guard process scans the same connections), and never shows the
/// query string.
fn ranks_with_exact_counts(mpm: Mpm) {
    let (server, on, report) = two_vhosts(mpm, 12);
    let (p1, p2) = (server.extra_port(1), server.extra_port(2));
    let before = Formats::read(&server);
    assert_eq!(
        before.auto,
        Report::default(),
        "no leak before any client left"
    );
    assert!(before.raw[3].contains("id=\"no-leaks\""));

    let mut conns = stuck_clients(p1, [127, 0, 0, 2], "/cgi-bin/slow/alpha", 4);
    conns.extend(stuck_clients(p1, [127, 0, 0, 3], "/cgi-bin/slow/beta", 2));
    conns.extend(stuck_clients(p2, [127, 0, 0, 4], "/cgi-bin/slow/gamma", 3));
    conns.extend(stuck_clients(p2, [127, 0, 0, 2], "/cgi-bin/slow/delta", 1));
    wait_handling(&server, &conns);
    for c in conns {
        c.close();
    }
    let want_on = Report {
        paths: vec![
            entry(&on, "GET /cgi-bin/slow/alpha", 4),
            entry(&on, "GET /cgi-bin/slow/beta", 2),
        ],
        clients: vec![entry(&on, "127.0.0.2", 4), entry(&on, "127.0.0.3", 2)],
    };
    let want_report = Report {
        paths: vec![
            entry(&report, "GET /cgi-bin/slow/gamma", 3),
            entry(&report, "GET /cgi-bin/slow/delta", 1),
        ],
        clients: vec![
            entry(&report, "127.0.0.4", 3),
            entry(&report, "127.0.0.2", 1),
        ],
    };
    let want = [(on.as_str(), &want_on), (report.as_str(), &want_report)];
    let f = wait_report(&server, &want);
    f.require_absent("SECRETQ");
    f.require_absent("SLEEP=");
    // The HTML's first table after the rows that need attention is the report, ranked
    // across vhosts.
    let page = &f.raw[3];
    let leaks = page
        .find("id=\"where-it-leaks\"")
        .expect("the report's heading");
    assert!(page.find("id=\"attention\"").expect("Needs attention") < leaks);
    assert_eq!(
        page[leaks..].find("<table").map(|i| i + leaks),
        page.find("<table id=\"leak-paths\">")
    );
    let ranked: Vec<u64> = f.html.paths.iter().map(|e| e.2).collect();
    assert_eq!(ranked, [4, 3, 2, 1], "{page}");

    // Counted once: the Report vhost's sockets are still in CLOSE_WAIT, past their timeout,
    // at every scan; the On vhost's are force-closed with their handlers still running.
    server.wait_guard_passes(5);
    for (vhost, w) in want {
        Formats::read(&server).require(vhost, w);
    }

    // A graceful restart: the new generation's guard process scans the same connections.
    server.graceful_restart();
    server.wait_scans(5);
    let after = Formats::read(&server);
    for (vhost, w) in want {
        after.require(vhost, w);
    }
    after.require_absent("SECRETQ");
    let s = server.status_auto();
    assert!(s.num("RestartGeneration") >= 1, "{}", s.raw);
    server.release_cgis();
}

mpm_tests!(ranks_with_exact_counts);

/// Hostile request paths (markup, quotes, an encoded newline, a byte that is not UTF-8) on
/// stuck CGIs: each format escapes them its own way and reads them back intact; the SVG
/// charts never carry them.
#[test]
fn hostile_paths_are_escaped_in_every_format() {
    let (server, on, _) = two_vhosts(Mpm::Event, 4);
    let port = server.extra_port(1);
    let hostile = "/cgi-bin/slow/<script>alert(\"x\")</script>'&%0Aq";
    let mut c = Conn::connect_from([127, 0, 0, 5], port).unwrap();
    let request = format!("GET {hostile}?SLEEP={HOLD_SECS}&{SECRET} HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send_raw(request.as_bytes()).unwrap();
    let mut obs = Conn::connect_from([127, 0, 0, 5], port).unwrap();
    let mut raw = b"GET /cgi-bin/slow/obs\xff".to_vec();
    raw.extend_from_slice(format!("?SLEEP={HOLD_SECS} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    obs.send_raw(&raw).unwrap();
    let conns = vec![c, obs];
    wait_handling(&server, &conns);
    for c in conns {
        c.close();
    }
    let want = Report {
        paths: vec![
            entry(&on, &format!("GET {hostile}"), 1),
            entry(&on, "GET /cgi-bin/slow/obs\u{fffd}", 1),
        ],
        clients: vec![entry(&on, "127.0.0.5", 2)],
    };
    // Equal counts: the order between the two is the order they were last seen in, so
    // compare as sets first, then require each format's own escaping.
    let deadline = std::time::Instant::now() + COUNTED_WITHIN;
    // Every format must have both: the four are read one after another, and a scan can
    // count in between (seen: ?auto read empty, ?json a moment later with both).
    let f = loop {
        let f = Formats::read(&server);
        let both = [&f.auto, &f.json, &f.metrics, &f.html]
            .iter()
            .all(|r| r.of(&on).paths.len() == 2);
        if both || std::time::Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut w = want.clone();
    w.paths.sort();
    for (name, got) in [
        ("?auto", &f.auto),
        ("?json", &f.json),
        ("?metrics", &f.metrics),
        ("HTML", &f.html),
    ] {
        // Read back through each format's own unescaping, the paths are the ones sent.
        let mut got = got.of(&on);
        got.paths.sort();
        assert_eq!(got, w, "{name}");
    }
    let [auto, json_text, metrics, page] = &f.raw;
    assert!(
        auto.contains("Path=/cgi-bin/slow/<script>alert(\"x\")</script>'&%0Aq\n"),
        "{auto}"
    );
    assert!(
        json_text.contains(
            r#""path":"/cgi-bin/slow/\u003cscript\u003ealert(\"x\")\u003c/script\u003e'\u0026%0Aq""#
        ),
        "{json_text}"
    );
    assert!(
        metrics.contains(r#"path="/cgi-bin/slow/<script>alert(\"x\")</script>'&%0Aq"} 1"#),
        "{metrics}"
    );
    assert!(page.contains("<code>/cgi-bin/slow/&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;&amp;%0Aq</code>"));
    assert!(!page.contains("<script"), "raw markup on the page");
    json::parse(json_text).expect("valid JSON");
    for (id, text) in leaks::parsed_svgs(page) {
        assert!(
            !text.contains("script") && !text.contains("obs"),
            "{id}: {text}"
        );
    }
    f.require_absent("SECRETQ");
    server.release_cgis();
}

/// One heavy path (6 abandoned requests) and then a flood of 24 distinct ones on one vhost:
/// every format lists at most 16 entries, their counts add up to the 30 connections, the heavy
/// hitter stays on top with its exact count, and the shared segment did not grow.
#[test]
fn a_flood_of_distinct_paths_keeps_the_heavy_hitter_on_top() {
    const FLOOD: usize = 24;
    let (server, on, _) = two_vhosts(Mpm::Event, 6 + FLOOD);
    let port = server.extra_port(1);
    let segment = server.parent_shm_mapping_lines();
    let heavy = stuck_clients(port, [127, 0, 0, 6], "/cgi-bin/slow/heavy", 6);
    wait_handling(&server, &heavy);
    for c in heavy {
        c.close();
    }
    let top = Report {
        paths: vec![entry(&on, "GET /cgi-bin/slow/heavy", 6)],
        clients: vec![entry(&on, "127.0.0.6", 6)],
    };
    wait_report(&server, &[(on.as_str(), &top)]);
    let flood: Vec<Conn> = (0..FLOOD)
        .flat_map(|i| {
            stuck_clients(
                port,
                [127, 0, 0, 7],
                &format!("/cgi-bin/slow/flood-{i:02}"),
                1,
            )
        })
        .collect();
    wait_handling(&server, &flood);
    for c in flood {
        c.close();
    }
    let total = 6 + FLOOD as u64;
    let f = {
        let deadline = std::time::Instant::now() + COUNTED_WITHIN;
        loop {
            let f = Formats::read(&server);
            let sum: u64 = f.auto.of(&on).paths.iter().map(|e| e.2).sum();
            if sum == total || std::time::Instant::now() > deadline {
                break f;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for (name, got) in [
        ("?auto", &f.auto),
        ("?json", &f.json),
        ("?metrics", &f.metrics),
        ("HTML", &f.html),
    ] {
        let r = got.of(&on);
        assert_eq!(r.paths.len(), 16, "{name}: the fixed 16 entries\n{r:?}");
        assert_eq!(
            r.paths.iter().map(|e| e.2).sum::<u64>(),
            total,
            "{name}: Space-Saving counts add up"
        );
        let heavy = r.paths.iter().find(|e| e.1 == "GET /cgi-bin/slow/heavy");
        assert_eq!(
            heavy.map(|e| e.2),
            Some(6),
            "{name}: the heavy hitter, exact\n{r:?}"
        );
        assert!(r.paths.iter().all(|e| e.2 <= 6), "{name}: on top\n{r:?}");
        let mut clients = r.clients.clone();
        clients.sort_by_key(|e| std::cmp::Reverse(e.2));
        let want = [entry(&on, "127.0.0.7", 24), entry(&on, "127.0.0.6", 6)];
        assert_eq!(clients, want, "{name}");
    }
    // The heavy hitter came first, into an empty entry: no error bound in ?json.
    let j = json::parse(&f.raw[1]).unwrap();
    let vhost = j
        .at("leaks")
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.at("vhost").as_str() == Some(&on))
        .unwrap();
    let first = &vhost.at("paths").as_array().unwrap()[0];
    assert_eq!(first.at("path").as_str(), Some("/cgi-bin/slow/heavy"));
    assert_eq!(first.at("error").as_u64(), Some(0));
    assert_eq!(
        server.parent_shm_mapping_lines(),
        segment,
        "the segment was not replaced or grown"
    );
    server.release_cgis();
}
