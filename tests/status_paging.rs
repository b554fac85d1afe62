//! The status page stays readable with many connections: every connection that needs
//! attention is listed, then 100 of the others (a page at a time, filterable), while the
//! totals and the vhost table count every connection. Real Apache (event MPM): 300 idle
//! keep-alive connections, 200 on the main port and 100 on the `paging.test` vhost's, plus
//! 2 clients of that vhost that gave up on a stuck CGI (their sockets sit in CLOSE_WAIT,
//! AutoClose Off).

mod common;
#[path = "common/guard.rs"]
mod guard;

use common::{client_port_of, hold_keepalive, json, Apache, Conn, Mpm};
use guard::*;
use std::collections::BTreeSet;
use std::time::Duration;

const MAIN_IDLE: usize = 200;
const VHOST_IDLE: usize = 100;
const STUCK: usize = 2;
/// The page's default bound on the connections that do not need attention.
const BOUND: usize = 100;

/// (client port, server port): what identifies a connection's row.
type Id = (u16, u16);

/// Event MPM sized to hold every idle connection without a thread (up to ThreadsPerChild +
/// idle threads x AsyncRequestWorkerFactor per child) for longer than the test runs
/// (KeepAliveTimeout).
const TUNING: &str = "StartServers 4\nServerLimit 4\nThreadLimit 32\nThreadsPerChild 32\n\
MinSpareThreads 32\nMaxSpareThreads 128\nMaxRequestWorkers 128\nAsyncRequestWorkerFactor 100\n";
/// Idle connections are opened this many at a time: a child whose every worker is busy at
/// once closes all its keep-alive connections ("all workers are busy", event.c), which a
/// burst of 100 requests would cause.
const BATCH: usize = 10;

fn start() -> CgiServer {
    let opts = opts_with_cgi(Mpm::Event, STUCK + 8)
        .tuning(TUNING)
        .global("KeepAliveTimeout 300\nMaxKeepAliveRequests 0\nSocketGuardSlots 2048")
        .extra_ports(1)
        .vhosts(&vhost_block("@PORT1@", "paging.test", "Off", "1s"));
    start_with_cgi(opts)
}

/// The text of each cell of an HTML table row (tags inside a cell, like `<code>`, dropped).
fn cells(row: &str) -> Vec<String> {
    row.split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').map_or(0, |i| i + 1)..];
            let c = c.split("</td>").next().unwrap_or("");
            c.replace("<code class=\"short\">", "")
                .replace("<code>", "")
                .replace("</code>", "")
        })
        .collect()
}

/// The rows (header excluded) of the table in the section that starts at `anchor`.
fn html_rows(page: &str, anchor: &str) -> Vec<Vec<String>> {
    let from = &page[page
        .find(anchor)
        .unwrap_or_else(|| panic!("no {anchor} on the page:\n{page}"))..];
    let section = &from[..from[4..].find("<h2").map_or(from.len(), |i| i + 4)];
    let Some(start) = section.find("<table>") else {
        return Vec::new();
    };
    let table = &section[start..section.find("</table>").unwrap()];
    table.split("<tr").skip(2).map(cells).collect()
}

/// (client port, server port) of an HTML row.
fn html_id(row: &[String]) -> Id {
    let port = row[1].rsplit(':').next().and_then(|p| p.parse().ok());
    (port.unwrap_or(0), row[2].parse().unwrap_or(0))
}

fn json_id(row: &json::Value) -> Id {
    let sp = row.get("local_port").and_then(json::Value::as_u64);
    (client_port_of(row).unwrap_or(0), sp.unwrap_or(0) as u16)
}

fn json_rows(j: &json::Value) -> Vec<json::Value> {
    j.at("connections")
        .as_array()
        .expect("connections")
        .to_vec()
}

fn num(j: &json::Value, key: &str) -> u64 {
    j.at(key)
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number: {}", j.at(key)))
}

fn html(server: &Apache, args: &str) -> String {
    let r = server.get(&format!("/socket-status?{args}"));
    assert_eq!(r.status, 200, "?{args}: {}", r.text());
    r.text()
}

/// The "Showing X of Y connections ..." line.
fn shown_line(page: &str) -> String {
    let at = page.find("<p id=\"conn-shown\">").expect("conn-shown line");
    page[at..].lines().next().unwrap().to_string()
}

/// The number in the vhost table's Open column for `label`.
fn vhost_open(page: &str, label: &str) -> u64 {
    let rows = html_rows(page, "<h2>Virtual hosts</h2>");
    let row = rows
        .iter()
        .find(|r| r[0] == label)
        .unwrap_or_else(|| panic!("no vhost row {label}: {rows:?}"));
    row[4].parse().unwrap()
}

/// Holds the idle and the stuck connections; waits until the page shows them so.
struct Scene {
    server: CgiServer,
    idle: Vec<Conn>,
    idle_ids: BTreeSet<Id>,
    stuck_ids: BTreeSet<Id>,
    vhost: String,
}

/// Polls `?json&limit=10000` (not `all`, which is under test) until the row of every
/// connection in `ids` is in one of `states`.
fn wait_states(server: &Apache, ids: &BTreeSet<Id>, states: &[&str], what: &str) {
    common::poll(Duration::from_secs(15), what, || {
        let j = server.status_json_query("json&limit=10000");
        let rows = json_rows(&j);
        let seen: Vec<&json::Value> = rows.iter().filter(|r| ids.contains(&json_id(r))).collect();
        if seen.len() < ids.len() {
            // Apache closes keep-alive connections it cannot hold (see BATCH).
            return Err(format!("{} of {} rows listed", seen.len(), ids.len()));
        }
        match seen
            .iter()
            .find(|r| !states.contains(&str_field(r, "state")))
        {
            Some(r) => Err(format!("row {r}")),
            None => Ok(()),
        }
    })
}

fn scene() -> Scene {
    let server = start();
    let p1 = server.extra_port(1);
    let mut idle = Vec::new();
    for (port, n) in [(server.port(), MAIN_IDLE), (p1, VHOST_IDLE)] {
        for _ in 0..n / BATCH {
            idle.extend(hold_keepalive(port, BATCH, "/index.html", None));
        }
    }
    let idle_ids: BTreeSet<Id> = conn_ids(&idle).into_iter().collect();
    wait_states(&server, &idle_ids, &["keepalive"], "idle rows in keepalive");
    let stuck = slow_clients(p1, None, STUCK, 60);
    let stuck_ids: BTreeSet<Id> = conn_ids(&stuck).into_iter().collect();
    wait_states(
        &server,
        &stuck_ids,
        &["handling"],
        "the stuck CGIs handling",
    );
    for c in stuck {
        c.close();
    }
    wait_states(
        &server,
        &stuck_ids,
        &["close_wait"],
        "the stuck connections in CLOSE_WAIT",
    );
    Scene {
        vhost: format!("paging.test:{p1}"),
        server,
        idle,
        idle_ids,
        stuck_ids,
    }
}

#[test]
fn paging_and_filters_event() {
    let sc = scene();
    let s = &sc.server;
    assert_eq!(sc.idle.len(), MAIN_IDLE + VHOST_IDLE);

    // Default page: every CLOSE_WAIT row, then exactly BOUND of the others; totals exact.
    let p1 = html(s, "");
    let attention = html_rows(&p1, "id=\"attention\"");
    let ids: BTreeSet<Id> = attention.iter().map(|r| html_id(r)).collect();
    assert_eq!(ids, sc.stuck_ids, "attention rows: {attention:?}");
    assert!(
        attention.iter().all(|r| r[4] == "close_wait"),
        "{attention:?}"
    );
    let page1 = html_rows(&p1, "id=\"connections\"");
    assert_eq!(page1.len(), BOUND, "{}", shown_line(&p1));
    let line = shown_line(&p1);
    assert!(
        line.contains(&format!("Showing {} of ", STUCK + BOUND)),
        "{line}"
    );
    assert!(line.contains("(filter: none)"), "{line}");
    assert!(
        p1.contains("<a href=\"?page=2\">next 100 &raquo;</a>"),
        "{line}"
    );
    // The vhost table counts all 102 of paging.test, though the page lists 100 rows in all.
    assert_eq!(vhost_open(&p1, &sc.vhost), (VHOST_IDLE + STUCK) as u64);
    let total = |page: &str| -> usize {
        let l = shown_line(page);
        let t = l.split(" of ").nth(1).unwrap().split(' ').next().unwrap();
        t.parse().unwrap()
    };
    assert!(total(&p1) > MAIN_IDLE + VHOST_IDLE + STUCK, "{line}");

    // Pages 2 and 3: the next ones, no overlap; pages 1-3 are exactly the idle connections
    // (the oldest), page 4 holds what came later (status requests).
    let p2 = html(s, "page=2");
    assert_eq!(
        html_rows(&p2, "id=\"attention\"").len(),
        STUCK,
        "attention on page 2"
    );
    let page2 = html_rows(&p2, "id=\"connections\"");
    let p3 = html(s, "page=3");
    let page3 = html_rows(&p3, "id=\"connections\"");
    let set = |rows: &[Vec<String>]| rows.iter().map(|r| html_id(r)).collect::<BTreeSet<Id>>();
    let (s1, s2, s3) = (set(&page1), set(&page2), set(&page3));
    assert_eq!(s2.len(), BOUND);
    assert!(
        s1.is_disjoint(&s2),
        "pages 1 and 2 overlap: {:?}",
        s1.intersection(&s2)
    );
    assert!(p2.contains("<a href=\"?page=3\">"), "{}", shown_line(&p2));
    assert!(p2.contains("(#101\u{2013}#200)"), "{}", shown_line(&p2));
    let first_three: BTreeSet<Id> = s1.union(&s2).chain(s3.iter()).copied().collect();
    assert_eq!(
        first_three, sc.idle_ids,
        "pages 1-3 must hold exactly the 300 idle connections, the oldest"
    );

    // Filters: by state, by vhost, by client; each returns matching rows only.
    let cw = html(s, "state=close_wait");
    assert_eq!(html_rows(&cw, "id=\"attention\"").len(), STUCK);
    assert!(html_rows(&cw, "id=\"connections\"").is_empty());
    assert!(shown_line(&cw).contains("(filter: state=close_wait)"));
    let ka = s.status_json_query("json&state=keepalive&all");
    let ka_ids: BTreeSet<Id> = json_rows(&ka).iter().map(json_id).collect();
    assert!(json_rows(&ka)
        .iter()
        .all(|r| str_field(r, "state") == "keepalive"));
    assert_eq!(ka_ids, sc.idle_ids, "state=keepalive");
    let vh = s.status_json_query(&format!("json&vhost={}&all", sc.vhost));
    assert!(json_rows(&vh)
        .iter()
        .all(|r| str_field(r, "vhost") == sc.vhost));
    assert_eq!(json_rows(&vh).len(), VHOST_IDLE + STUCK);
    assert_eq!(num(&vh, "connections_attention"), STUCK as u64);
    let by_name = s.status_json_query("json&vhost=PAGING.test&all");
    assert_eq!(
        json_rows(&by_name).len(),
        VHOST_IDLE + STUCK,
        "name, any port"
    );
    let one = sc.idle.first().unwrap().local_port();
    let c = s.status_json_query(&format!("json&client=127.0.0.1:{one}"));
    let rows = json_rows(&c);
    assert_eq!(
        rows.len(),
        1,
        "client=127.0.0.1:{one}: {}",
        c.at("connections")
    );
    assert_eq!(client_port_of(&rows[0]), Some(one));
    assert_eq!(json_rows(&s.status_json_query("json&client=10.")).len(), 0);
    let lo = s.status_json_query("json&client=127.0.&limit=5");
    assert_eq!(json_rows(&lo).len(), STUCK + 5);
    assert!(num(&lo, "connections_matching") > (MAIN_IDLE + VHOST_IDLE) as u64);

    // JSON: bounded by default, with the flag and the way to the rest; `all` has every row.
    let j = s.status_json_query("json");
    assert_eq!(json_rows(&j).len(), STUCK + BOUND);
    assert_eq!(num(&j, "connections_shown"), (STUCK + BOUND) as u64);
    assert_eq!(j.at("connections_truncated"), &json::Value::Bool(true));
    assert_eq!(j.at("connections_next").as_str(), Some("json&page=2"));
    assert_eq!(j.at("connections_all").as_str(), Some("json&all"));
    let jt = num(&j, "connections_total");
    assert!(jt > (MAIN_IDLE + VHOST_IDLE + STUCK) as u64, "{jt}");
    assert_eq!(num(&j, "connections_matching"), jt);
    let all = s.status_json_query("json&all");
    let all_ids: BTreeSet<Id> = json_rows(&all).iter().map(json_id).collect();
    assert!(all_ids.is_superset(&sc.idle_ids) && all_ids.is_superset(&sc.stuck_ids));
    assert_eq!(all.at("connections_truncated"), &json::Value::Bool(false));
    assert_eq!(json_rows(&all).len() as u64, num(&all, "connections_total"));
    // The totals count every connection, whatever the page shows.
    let open = all.at("totals").at("open").as_u64().unwrap();
    assert!(open >= (MAIN_IDLE + VHOST_IDLE + STUCK) as u64, "{open}");
    let open_j = j.at("totals").at("open").as_u64().unwrap();
    assert!(
        open_j >= (MAIN_IDLE + VHOST_IDLE + STUCK) as u64,
        "{open_j}"
    );

    // ?auto lists no connection (a fixed set of lines, one per vhost and child).
    let auto = s.status_auto();
    assert!(auto.raw.lines().count() < 100, "{}", auto.raw);
    drop(sc.idle);
}

#[test]
fn bad_values_are_400_without_echo_event() {
    let server = start();
    let long = format!("vhost={}", "a".repeat(600));
    for (args, says) in [
        ("state=sleeping%3Cscript%3E", "state must be one or more of"),
        (
            "limit=0",
            "limit must be a whole number from 1 to 10000, or all",
        ),
        ("limit=abc", "limit must be a whole number"),
        ("page=-1", "page must be a whole number from 1 to"),
        ("page=0", "page must be a whole number"),
        ("offset=x", "offset must be a whole number"),
        ("json&client=%3Cimg%3E", "client must be an IP address"),
        (long.as_str(), "the value of vhost is longer than 512 bytes"),
        ("page=2&offset=5", "give page or offset, not both"),
    ] {
        let r = server.get(&format!("/socket-status?{args}"));
        let body = r.text();
        assert_eq!(r.status, 400, "?{args} -> {}: {body}", r.status);
        assert!(
            body.contains(says),
            "?{args}: the 400 page must say why:\n{body}"
        );
        assert!(
            !body.contains("<script") && !body.contains("<img") && !body.contains("aaaaaaaa"),
            "?{args}: the 400 page echoes the input:\n{body}"
        );
    }
    // Unknown tokens are still ignored, mod_status style.
    let r = server.get("/socket-status?notable&foo=%3Cx%3E&json");
    assert_eq!(r.status, 200);
}
