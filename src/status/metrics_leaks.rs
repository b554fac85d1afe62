//! `?metrics` for the leak report: `leaks_total{vhost,method,path}` and
//! `leak_clients_total{vhost,client}`, one series per entry of each vhost's top `REPORT_K`.
//! The label set is bounded by the table, not by the traffic: at most `REPORT_K` series per
//! vhost row, `REPORT_K × MAX_VHOSTS` (4,096) per family. A series can make way for another
//! (Space-Saving replaces the least counted key), which Prometheus sees as a series ending.

use std::fmt::Write;

use super::escape::prom_label;
use super::metrics::{family, P};
use super::model::Snapshot;

/// Sums samples whose escaped label sets are equal (two vhost rows with one name:port, or
/// two paths that escape alike), so no series is written twice.
fn merged(samples: impl Iterator<Item = (String, u64)>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for (labels, n) in samples {
        match out.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, acc)) => *acc = acc.saturating_add(n),
            None => out.push((labels, n)),
        }
    }
    out
}

pub fn render(o: &mut String, s: &Snapshot) {
    family(
        o,
        "leaks_total",
        "counter",
        "Connections that sat in CLOSE_WAIT past their vhost's timeout, by request (method and \
         path, no query string); each vhost's top 16 only (at most 4096 series).",
    );
    let paths = s.leaks.iter().flat_map(|v| {
        v.paths.iter().map(move |p| {
            let labels = format!(
                "vhost=\"{}\",method=\"{}\",path=\"{}\"",
                prom_label(&v.vhost),
                prom_label(&p.method),
                prom_label(&p.path)
            );
            (labels, p.count.count)
        })
    });
    for (labels, n) in merged(paths) {
        let _ = writeln!(o, "{P}leaks_total{{{labels}}} {n}");
    }
    family(
        o,
        "leak_clients_total",
        "counter",
        "Connections that sat in CLOSE_WAIT past their vhost's timeout, by client address; \
         each vhost's top 16 only (at most 4096 series).",
    );
    let clients = s.leaks.iter().flat_map(|v| {
        v.clients.iter().map(move |c| {
            let labels = format!(
                "vhost=\"{}\",client=\"{}\"",
                prom_label(&v.vhost),
                prom_label(&c.client)
            );
            (labels, c.count.count)
        })
    });
    for (labels, n) in merged(clients) {
        let _ = writeln!(o, "{P}leak_clients_total{{{labels}}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use crate::status::model::{Count, LeakPath, VhostLeaks};
    use crate::status::{fixture, metrics};

    fn series<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
        let prefix = format!("socket_guard_{name}{{");
        out.lines().filter(|l| l.starts_with(&prefix)).collect()
    }

    #[test]
    fn one_escaped_series_per_entry() {
        let out = metrics::render(&fixture::snapshot());
        let v = r#"vhost="evil <b>\"host\"</b>\\\nSlotsTotal: 0:80""#;
        assert_eq!(
            series(&out, "leaks_total"),
            [
                format!(r#"socket_guard_leaks_total{{{v},method="POST",path="/export"}} 9"#),
                format!(
                    r#"socket_guard_leaks_total{{{v},method="G\"ET<",path="/<script>alert(\"x\")</script>\n\"}}"}} 7"#
                ),
                r#"socket_guard_leaks_total{vhost="www.example.com:443",method="GET",path="/report"} 3"#.to_string(),
            ]
        );
        assert_eq!(
            series(&out, "leak_clients_total"),
            [
                format!(r#"socket_guard_leak_clients_total{{{v},client="192.0.2.7"}} 16"#),
                r#"socket_guard_leak_clients_total{vhost="www.example.com:443",client="2001:db8::1"} 3"#.to_string(),
            ]
        );
        assert!(out.contains("# TYPE socket_guard_leaks_total counter\n"));
        assert!(out.contains("# TYPE socket_guard_leak_clients_total counter\n"));
    }

    #[test]
    fn equal_label_sets_are_one_series() {
        // Two vhost rows with one name:port, and a CR that escapes like a tab: one series.
        let mut s = fixture::snapshot();
        let entry = |path: &str, n| LeakPath {
            method: "GET".into(),
            path: path.into(),
            count: Count {
                count: n,
                ..Default::default()
            },
        };
        s.leaks = vec![
            VhostLeaks {
                vhost: "a:80".into(),
                paths: vec![entry("/x\r", 2)],
                clients: vec![],
            },
            VhostLeaks {
                vhost: "a:80".into(),
                paths: vec![entry("/x\t", 3)],
                clients: vec![],
            },
        ];
        let out = metrics::render(&s);
        assert_eq!(
            series(&out, "leaks_total"),
            [r#"socket_guard_leaks_total{vhost="a:80",method="GET",path="/x?"} 5"#]
        );
    }
}
