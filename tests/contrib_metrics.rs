//! contrib/: the Prometheus rules (and their promtool tests) and the Grafana dashboard name
//! only metrics a real server's /socket-status?metrics emits, and the dashboard is a valid
//! Grafana document whose queries are valid PromQL. A renamed metric would otherwise leave
//! alerts that never fire and panels that stay empty, with nothing failing.

mod common;

use common::status::parse_metrics;
use common::{json, Apache, Mpm, Opts, TempDir};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const RULES: &str = "contrib/prometheus/socket_guard.rules.yml";
const RULE_TESTS: &str = "contrib/prometheus/socket_guard.rules.test.yml";
const DASHBOARD: &str = "contrib/grafana/socket_guard.json";

fn contrib_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every family and sample name the module emits: `# TYPE` lines (a family with no sample
/// right now still counts) and sample lines (histograms' `_bucket`, `_sum`, `_count`).
fn emitted_names(text: &str) -> BTreeSet<String> {
    let samples = parse_metrics(text)
        .unwrap_or_else(|e| panic!("?metrics is not valid exposition format: {e}\n{text}"));
    let mut names: BTreeSet<String> = samples.into_iter().map(|s| s.name).collect();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.insert(rest.split(' ').next().unwrap_or("").to_string());
        }
    }
    names
}

/// Identifier-like tokens (`[A-Za-z0-9_:]+`) that contain `socket_guard_`: metric names, and
/// recording-rule names (they have colons: `level:metric:operation`).
fn referenced(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| {
            t.starts_with("socket_guard_") || (t.contains(':') && t.contains("socket_guard_"))
        })
        .map(|t| t.trim_end_matches(':').to_string())
        .collect()
}

/// The `record:` names of the rules file.
fn recorded(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("record:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// Names in `text` that are neither emitted nor recorded by the rules.
fn unknown(text: &str, emitted: &BTreeSet<String>, records: &BTreeSet<String>) -> Vec<String> {
    referenced(text)
        .into_iter()
        .filter(|n| {
            let known = if n.contains(':') {
                records.contains(n)
            } else {
                emitted.contains(n)
            };
            !known
        })
        .collect()
}

/// Scrapes the way docs/fleet.md's scrape config does (`params: metrics: ['1']`).
fn scrape() -> String {
    let server = Apache::start(Opts::new(Mpm::Event));
    let r = server.get("/socket-status?metrics=1");
    assert_eq!(r.status, 200, "GET /socket-status?metrics=1:\n{}", r.text());
    r.text()
}

#[test]
fn contrib_names_only_emitted_metrics() {
    let text = scrape();
    let emitted = emitted_names(&text);
    let rules = contrib_file(RULES);
    let records = recorded(&rules);
    assert!(records.len() >= 2, "no record: rules found in {RULES}");
    for rel in [RULES, RULE_TESTS, DASHBOARD] {
        let body = contrib_file(rel);
        // Not vacuous: each file names a good share of the module's metrics.
        let named = referenced(&body).len();
        assert!(named >= 8, "{rel} names only {named} socket_guard_ metrics");
        let bad = unknown(&body, &emitted, &records);
        assert!(
            bad.is_empty(),
            "{rel} names metrics /socket-status?metrics does not emit, or recording rules \
             {RULES} does not define: {bad:?}\nemitted: {emitted:?}\nrecorded: {records:?}"
        );
    }
}

/// The dashboard's panels and template variables.
fn dashboard() -> json::Value {
    let text = contrib_file(DASHBOARD);
    json::parse(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}"))
}

fn str_at<'a>(v: &'a json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|s| s.as_str()).unwrap_or("")
}

/// Every `datasource` in the document (panels, queries, template variables) is the
/// `${DS_PROMETHEUS}` variable, so the dashboard imports into any Grafana whatever its
/// Prometheus is called. Returns how many there are.
fn assert_datasource_variable(v: &json::Value, path: &str) -> usize {
    match v {
        json::Value::Obj(members) => members
            .iter()
            .map(|(k, m)| {
                let at = format!("{path}.{k}");
                if k == "datasource" {
                    assert_eq!(str_at(m, "uid"), "${DS_PROMETHEUS}", "{at}: {m}");
                    1
                } else {
                    assert_datasource_variable(m, &at)
                }
            })
            .sum(),
        json::Value::Arr(items) => items
            .iter()
            .enumerate()
            .map(|(i, m)| assert_datasource_variable(m, &format!("{path}[{i}]")))
            .sum(),
        _ => 0,
    }
}

/// Each PromQL expression of the dashboard (queries and variable definitions), with
/// Grafana's variables replaced by values Prometheus accepts.
fn dashboard_queries(d: &json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d.at("panels").as_array().unwrap_or(&[]) {
        for t in p.get("targets").and_then(|t| t.as_array()).unwrap_or(&[]) {
            out.push(str_at(t, "expr").to_string());
        }
    }
    for v in d.at("templating").at("list").as_array().unwrap_or(&[]) {
        // label_values(<selector>, <label>): the selector is PromQL.
        let def = str_at(v, "definition");
        if let Some(inner) = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
        {
            out.push(
                inner
                    .rsplit_once(',')
                    .map_or(inner, |(sel, _)| sel)
                    .to_string(),
            );
        }
    }
    out.into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "5m")
                .replace("$__range", "6h")
                .replace("$instance", ".*")
                .replace("$vhost", ".*")
        })
        .collect()
}

/// A JSON string literal (YAML reads JSON).
fn quoted(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                o.push('\\');
                o.push(c);
            }
            '\n' => o.push_str("\\n"),
            _ => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `promtool check rules` parses every expression: one recording rule per query.
fn assert_promql_parses(exprs: &[String]) {
    let rules: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{{\"record\":\"dashboard:q{i}\",\"expr\":{}}}", quoted(e)))
        .collect();
    let dir = TempDir::new("contrib");
    let file = dir.path.join("dashboard.rules.json");
    let doc = format!(
        "{{\"groups\":[{{\"name\":\"dashboard\",\"rules\":[{}]}}]}}\n",
        rules.join(",")
    );
    std::fs::write(&file, doc).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("promtool (Debian package prometheus; make bootstrap): {e}"));
    assert!(
        out.status.success(),
        "a dashboard query is not valid PromQL:\n{}{}\nqueries: {exprs:#?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_is_valid_grafana_json() {
    let d = dashboard();
    let vars: Vec<(&str, &str)> = d
        .at("templating")
        .at("list")
        .as_array()
        .unwrap_or(&[])
        .iter()
        .map(|v| (str_at(v, "name"), str_at(v, "type")))
        .collect();
    for want in [
        ("DS_PROMETHEUS", "datasource"),
        ("instance", "query"),
        ("vhost", "query"),
    ] {
        assert!(
            vars.contains(&want),
            "template variable {want:?} missing: {vars:?}"
        );
    }
    let panels = d.at("panels").as_array().unwrap_or(&[]);
    let mut queried = 0;
    for p in panels.iter().filter(|p| str_at(p, "type") != "row") {
        let targets = p.get("targets").and_then(|t| t.as_array()).unwrap_or(&[]);
        assert!(
            !targets.is_empty(),
            "panel {:?} has no query",
            str_at(p, "title")
        );
        queried += 1;
    }
    assert!(queried >= 10, "only {queried} panels with queries");
    let sources = assert_datasource_variable(&d, "dashboard");
    assert!(sources > queried, "only {sources} datasource references");
    let exprs = dashboard_queries(&d);
    assert!(exprs.iter().all(|e| !e.is_empty()), "a query without expr");
    assert_promql_parses(&exprs);
}
