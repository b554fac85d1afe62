//! docs/status-fields.md against a real server: every `?auto` key and line field, `?json`
//! path, `?metrics` family (with its labels), HTML heading, column, summary label and element
//! id that a real Apache prints is in the page's tables, in the column of its format, and
//! every name those columns give is printed (except the ones listed below, with the reason).
//! The same for the section mod_status shows on /server-status.

mod common;
#[path = "common/docs.rs"]
mod docs;
#[path = "common/guard.rs"]
mod guard;

use common::status::parse_metrics;
use common::{json, Conn, Mpm};
use guard::{conn_ids, opts_with_cgi, start_with_cgi, str_field, wait_rows, CgiServer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Documented `?auto` names printed only while a leaked socket exists (tests/leaked.rs makes
/// one): the `Leaked:` line and its fields.
const ONLY_WITH_A_LEAKED_SOCKET: &[&str] =
    &["Leaked", "client=", "port=", "holder=", "comm=", "closed="];

/// What one format prints, and what the page documents for it; lists the differences.
fn compare(
    format: &str,
    printed: &BTreeSet<String>,
    documented: &BTreeSet<String>,
    may_be_absent: &[&str],
) -> Vec<String> {
    let mut failures = Vec::new();
    if printed.is_empty() {
        failures.push(format!("{format}: the server printed nothing to compare"));
    }
    for name in printed.difference(documented) {
        failures.push(format!("{format}: `{name}` is printed but not documented"));
    }
    for name in documented.difference(printed) {
        if !may_be_absent.contains(&name.as_str()) {
            failures.push(format!("{format}: `{name}` is documented but not printed"));
        }
    }
    failures
}

/// The code spans in the `column` cells of every table, kept when `keep` accepts them.
fn documented_spans(md: &str, column: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    docs::column_cells(md, column)
        .iter()
        .flat_map(|c| docs::code_spans(c))
        .filter(|s| keep(s))
        .collect()
}

/// `?auto` (or mod_status's `?auto`) names: each key, and the `Field=` names of the lines
/// that carry several (`Vhost:`, `Child:`, `Leaked:`). `prefix` keeps only keys starting so.
fn auto_names(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        if !key.starts_with(prefix) {
            continue;
        }
        out.insert(key.to_string());
        if ["Vhost", "Child", "Leaked", "LeakPath", "LeakClient"].contains(&key) {
            let fields = value.split_whitespace().filter_map(|t| t.split_once('='));
            out.extend(fields.map(|(f, _)| format!("{f}=")));
        }
    }
    out
}

fn is_auto_name(s: &str) -> bool {
    let s = s.strip_suffix(['=', ':']).unwrap_or(s);
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic())
}

/// A documented `?auto` span as `auto_names` writes it (`Vhost:` is the key `Vhost`).
fn auto_span(s: &str) -> String {
    s.strip_suffix(':').unwrap_or(s).to_string()
}

/// Every leaf of the JSON document as a path (`totals.accepted`, `vhosts[].name`); empty
/// arrays are leaves too and are also returned on their own.
fn json_paths(v: &json::Value, path: &str, leaves: &mut BTreeSet<String>, empty: &mut Vec<String>) {
    match v {
        json::Value::Obj(members) => {
            for (k, child) in members {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_paths(child, &p, leaves, empty);
            }
        }
        json::Value::Arr(items) if items.iter().any(json::Value::is_object) => {
            for item in items {
                json_paths(item, &format!("{path}[]"), leaves, empty);
            }
        }
        json::Value::Arr(items) if items.is_empty() => {
            leaves.insert(path.to_string());
            empty.push(path.to_string());
        }
        _ => {
            leaves.insert(path.to_string());
        }
    }
}

/// Metric families (from `# TYPE`) with the label names of their own samples.
fn metric_families(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| (name.to_string(), BTreeSet::new()))
        .collect();
    let samples = parse_metrics(text).unwrap_or_else(|e| panic!("?metrics: {e}"));
    for s in samples {
        if let Some(labels) = out.get_mut(&s.name) {
            labels.extend(s.labels.into_iter().map(|(k, _)| k));
        }
    }
    out
}

/// A documented metric span, `socket_guard_x{a,b="v"}`, as (family, label names).
fn metric_span(s: &str) -> (String, BTreeSet<String>) {
    let (name, labels) = s.split_once('{').unwrap_or((s, ""));
    let labels = labels
        .trim_end_matches('}')
        .split(',')
        .map(|l| l.split('=').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (name.to_string(), labels)
}

/// `family{a,b}` (or `family`) as the comparison's name.
fn metric_name(family: &str, labels: &BTreeSet<String>) -> String {
    if labels.is_empty() {
        family.to_string()
    } else {
        format!(
            "{family}{{{}}}",
            labels.iter().cloned().collect::<Vec<_>>().join(",")
        )
    }
}

/// The texts between `open` and the next `<` in `html`.
fn tag_texts(html: &str, open: &str) -> Vec<String> {
    html.split(open)
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap_or("").to_string())
        .collect()
}

/// What a person reads as names on the page: headings, table columns, the summary's labels
/// (`<dt>Label: value`) and element ids (as `#id`).
fn html_names(html: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for open in ["<h2>", "<h3>", "<th>"] {
        out.extend(tag_texts(html, open));
    }
    for dt in tag_texts(html, "<dt>") {
        out.insert(dt.split(':').next().unwrap_or("").to_string());
    }
    for id in html.split(" id=\"").skip(1) {
        out.insert(format!("#{}", id.split('"').next().unwrap_or("")));
    }
    out
}

/// Names in the HTML-type `column`: the "quoted" labels and the `#id` spans.
fn documented_html(md: &str, column: &str) -> BTreeSet<String> {
    let cells = docs::column_cells(md, column);
    let quoted = cells.iter().flat_map(|c| docs::quoted(c));
    let ids = cells
        .iter()
        .flat_map(|c| docs::code_spans(c))
        .filter(|s| s.starts_with('#'));
    quoted.chain(ids).collect()
}

/// The HTML page's names, each of which must be documented (the page has conditional parts, so
/// the converse is not checked).
fn html_failures(
    what: &str,
    printed: BTreeSet<String>,
    documented: &BTreeSet<String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if printed.is_empty() {
        failures.push(format!("{what}: the server printed nothing to compare"));
    }
    for name in printed.difference(documented) {
        failures.push(format!(
            "{what}: \"{name}\" is on the page but not documented"
        ));
    }
    failures
}

fn json_failures(md: &str, doc: &json::Value) -> Vec<String> {
    let (mut printed, mut empty) = (BTreeSet::new(), Vec::new());
    json_paths(doc, "", &mut printed, &mut empty);
    // A path has a `.` or `[`; the paging keys (`connections_…`) are the document's only
    // top-level members that are not objects, so they are named by themselves.
    let documented = documented_spans(md, "?json", |s| {
        s.contains('.') || s.contains('[') || s.starts_with("connections_")
    });
    // An array that is empty now documents its members' paths as `path[].member`.
    let under_empty: Vec<String> = documented
        .iter()
        .filter(|d| empty.iter().any(|e| d.starts_with(&format!("{e}[]."))))
        .cloned()
        .collect();
    let may_be_absent: Vec<&str> = under_empty.iter().map(String::as_str).collect();
    compare("?json", &printed, &documented, &may_be_absent)
}

fn metrics_failures(md: &str, text: &str) -> Vec<String> {
    let printed: BTreeSet<String> = metric_families(text)
        .iter()
        .map(|(f, labels)| metric_name(f, labels))
        .collect();
    let mut by_family: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for span in documented_spans(md, "?metrics", |s| s.starts_with("socket_guard_")) {
        let (family, labels) = metric_span(&span);
        by_family.entry(family).or_default().extend(labels);
    }
    let documented: BTreeSet<String> = by_family.iter().map(|(f, l)| metric_name(f, l)).collect();
    compare("?metrics", &printed, &documented, &[])
}

fn auto_failures(md: &str, socket_status: &str, server_status: &str) -> Vec<String> {
    let own = documented_spans(md, "?auto", is_auto_name)
        .iter()
        .map(|s| auto_span(s))
        .collect();
    let mut failures = compare(
        "?auto",
        &auto_names(socket_status, ""),
        &own,
        ONLY_WITH_A_LEAKED_SOCKET,
    );
    let theirs = documented_spans(md, "/server-status?auto", is_auto_name);
    let printed = auto_names(server_status, "SocketGuard");
    failures.extend(compare("/server-status?auto", &printed, &theirs, &[]));
    failures
}

/// The "Socket Guard" section of mod_status's page.
fn server_status_section(html: &str) -> String {
    let from = html
        .find("<h2>Socket Guard</h2>")
        .unwrap_or_else(|| panic!("/server-status has no Socket Guard section:\n{html}"));
    html[from..].split("</dl>").next().unwrap_or("").to_string()
}

/// A server whose leak report has an entry: a client gave up on a stuck CGI on an `On` vhost
/// (1 s timeout), and the scan counted it.
fn server_with_a_leak() -> CgiServer {
    let opts = opts_with_cgi(Mpm::Event, 4).with_mod_status().vhosts(
        "<VirtualHost 127.0.0.1:@PORT@>\n    ServerName shop.test\n    SocketGuardAutoClose On\n    \
         SocketGuardCloseWaitTimeout 1s\n</VirtualHost>",
    );
    let cgi = start_with_cgi(opts);
    let server = &cgi.server;
    server.get("/index.html");
    let mut c = Conn::connect(server.port()).expect("connect");
    c.send_request("GET", "/cgi-bin/slow/docs?SLEEP=30", None, false, &[], b"")
        .expect("send");
    wait_rows(
        server,
        &conn_ids(std::slice::from_ref(&c)),
        Duration::from_secs(20),
        "the stuck CGI request being handled",
        |r| match str_field(r, "state") {
            "handling" => Ok(()),
            s => Err(s.to_string()),
        },
    );
    c.close();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !server
        .get("/socket-status?auto")
        .text()
        .contains("\nLeakPath: ")
    {
        assert!(
            Instant::now() < deadline,
            "no leak report entry within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cgi
}

#[test]
fn every_printed_field_is_documented_and_every_documented_one_printed() {
    let md = docs::read("status-fields.md");
    let cgi = server_with_a_leak();
    let server = &cgi.server;
    // The scanner has run, so its fields carry values rather than a "not yet" text.
    server.wait_scans(1);
    let page = |path: &str| {
        let r = server.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.text()
    };
    let mut failures = auto_failures(
        &md,
        &page("/socket-status?auto"),
        &page("/server-status?auto"),
    );
    failures.extend(json_failures(&md, &server.status_json()));
    failures.extend(metrics_failures(&md, &page("/socket-status?metrics")));
    let own_html = html_names(&page("/socket-status"));
    failures.extend(html_failures(
        "HTML",
        own_html,
        &documented_html(&md, "HTML"),
    ));
    let section = server_status_section(&page("/server-status"));
    let mut theirs = html_names(&section);
    theirs.remove("Socket Guard"); // the section's heading, named in the prose
    failures.extend(html_failures(
        "/server-status",
        theirs,
        &documented_html(&md, "/server-status"),
    ));
    assert!(
        failures.is_empty(),
        "docs/status-fields.md disagrees with the server:\n{}",
        failures.join("\n")
    );
}
