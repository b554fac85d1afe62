//! The leak report as each status format shows it, read back into one shape so that a test
//! can require the same ranking and the same exact counts from every format; and the HTML
//! page's inline SVGs. Included by leak_report.rs and history.rs with
//! `#[path = "common/leaks.rs"] mod leaks;` next to `mod common;`.

#![allow(dead_code)]

use crate::common::status::{parse_metrics, KvLine};
use crate::common::{json, Apache};

/// One entry: (vhost "name:port", key — "METHOD path" or a client address, count).
pub type Entry = (String, String, u64);

/// A vhost's report as one format shows it, each list in the format's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub paths: Vec<Entry>,
    pub clients: Vec<Entry>,
}

impl Report {
    /// Only `vhost`'s entries, in order.
    pub fn of(&self, vhost: &str) -> Report {
        let keep = |l: &[Entry]| l.iter().filter(|e| e.0 == vhost).cloned().collect();
        Report {
            paths: keep(&self.paths),
            clients: keep(&self.clients),
        }
    }
}

/// What the four formats show, read from a running server.
pub struct Formats {
    pub auto: Report,
    pub json: Report,
    pub metrics: Report,
    pub html: Report,
    /// The raw texts, for failure messages and for checks on what must never appear.
    pub raw: [String; 4],
}

impl Formats {
    pub fn read(server: &Apache) -> Formats {
        let auto = server.get("/socket-status?auto").text();
        let json = server.get("/socket-status?json").text();
        let metrics = server.get("/socket-status?metrics").text();
        let html = server.get("/socket-status").text();
        Formats {
            auto: from_auto(&auto),
            json: from_json(&json),
            metrics: from_metrics(&metrics),
            html: from_html(&html),
            raw: [auto, json, metrics, html],
        }
    }

    /// Panics unless every format shows exactly `want` for `vhost` (counts exact; paths and
    /// clients in `want`'s order, most counted first — Prometheus has no order, so its set).
    pub fn require(&self, vhost: &str, want: &Report) {
        for (name, got) in [
            ("?auto", &self.auto),
            ("?json", &self.json),
            ("HTML", &self.html),
        ] {
            assert_eq!(
                &got.of(vhost),
                want,
                "{name} leak report of {vhost}\n--- {name} ---\n{}",
                self.text(name)
            );
        }
        let sorted = |r: &Report| {
            let mut r = r.clone();
            r.paths.sort();
            r.clients.sort();
            r
        };
        assert_eq!(
            sorted(&self.metrics.of(vhost)),
            sorted(want),
            "?metrics leak report of {vhost}\n{}",
            self.raw[2]
        );
    }

    fn text(&self, name: &str) -> &str {
        match name {
            "?auto" => &self.raw[0],
            "?json" => &self.raw[1],
            _ => &self.raw[3],
        }
    }

    /// Panics if `needle` appears in any format.
    pub fn require_absent(&self, needle: &str) {
        for (name, text) in ["?auto", "?json", "?metrics", "HTML"].iter().zip(&self.raw) {
            assert!(!text.contains(needle), "{needle:?} in {name}:\n{text}");
        }
    }
}

pub fn from_auto(text: &str) -> Report {
    let s = crate::common::StatusAuto::parse(text);
    assert!(s.malformed_lines.is_empty(), "{:?}", s.malformed_lines);
    let entry = |l: &String, key: &dyn Fn(&KvLine) -> String| {
        let kv = KvLine::parse(l);
        (kv.id.clone(), key(&kv), kv.num("Count"))
    };
    let path = |kv: &KvLine| {
        format!(
            "{} {}",
            kv.get("Method").unwrap_or(""),
            kv.get("Path").unwrap_or("")
        )
    };
    let client = |kv: &KvLine| kv.get("Client").unwrap_or("").to_string();
    Report {
        paths: s.leak_path_lines.iter().map(|l| entry(l, &path)).collect(),
        clients: s
            .leak_client_lines
            .iter()
            .map(|l| entry(l, &client))
            .collect(),
    }
}

pub fn from_json(text: &str) -> Report {
    let j = json::parse(text).unwrap_or_else(|e| panic!("?json: {e}\n{text}"));
    let mut r = Report::default();
    let s = |v: &json::Value, k: &str| {
        v.at(k)
            .as_str()
            .unwrap_or_else(|| panic!("{k}"))
            .to_string()
    };
    for v in j.at("leaks").as_array().expect("leaks array") {
        let vhost = s(v, "vhost");
        for p in v.at("paths").as_array().unwrap() {
            let key = format!("{} {}", s(p, "method"), s(p, "path"));
            r.paths
                .push((vhost.clone(), key, p.at("count").as_u64().unwrap()));
        }
        for c in v.at("clients").as_array().unwrap() {
            r.clients.push((
                vhost.clone(),
                s(c, "client"),
                c.at("count").as_u64().unwrap(),
            ));
        }
    }
    r
}

pub fn from_metrics(text: &str) -> Report {
    let samples = parse_metrics(text).unwrap_or_else(|e| panic!("?metrics: {e}\n{text}"));
    let mut r = Report::default();
    for s in &samples {
        let l = |k: &str| s.label(k).unwrap_or("").to_string();
        match s.name.as_str() {
            "socket_guard_leaks_total" => r.paths.push((
                l("vhost"),
                format!("{} {}", l("method"), l("path")),
                s.value as u64,
            )),
            "socket_guard_leak_clients_total" => {
                r.clients.push((l("vhost"), l("client"), s.value as u64))
            }
            _ => {}
        }
    }
    r
}

/// The five HTML entities the page's escaper writes, undone.
pub fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The cells of each row of the table with this id (header row left out), unescaped, tags
/// inside a cell (`<code>`) removed.
pub fn html_table(page: &str, id: &str) -> Vec<Vec<String>> {
    let Some(start) = page.find(&format!("<table id=\"{id}\">")) else {
        return Vec::new();
    };
    let table = &page[start..start + page[start..].find("</table>").unwrap()];
    table
        .split("<tr")
        .skip(2)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let inner = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
                    let inner = inner.replace("<code class=\"short\">", "");
                    html_unescape(&inner.replace("<code>", "").replace("</code>", ""))
                })
                .collect()
        })
        .collect()
}

/// The HTML count cell: "7", or "9 (at least 5)".
fn count_cell(cell: &str) -> u64 {
    cell.split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("count {cell:?}"))
}

pub fn from_html(page: &str) -> Report {
    let paths = html_table(page, "leak-paths")
        .into_iter()
        .map(|c| {
            (
                c[0].clone(),
                format!("{} {}", c[1], c[2]),
                count_cell(&c[3]),
            )
        })
        .collect();
    let clients = html_table(page, "leak-clients")
        .into_iter()
        .map(|c| (c[0].clone(), c[1].clone(), count_cell(&c[2])))
        .collect();
    Report { paths, clients }
}

/// Every `<svg>…</svg>` of an HTML page.
pub fn svgs(page: &str) -> Vec<&str> {
    page.match_indices("<svg")
        .map(|(i, _)| &page[i..i + page[i..].find("</svg>").expect("closed svg") + 6])
        .collect()
}

/// Parses each SVG of the page as XML (panics with the error if one is not well-formed) and
/// returns (id, all its text) per chart.
pub fn parsed_svgs(page: &str) -> Vec<(String, String)> {
    svgs(page)
        .into_iter()
        .map(|svg| {
            let doc = roxmltree::Document::parse(svg)
                .unwrap_or_else(|e| panic!("an <svg> is not well-formed XML: {e}\n{svg}"));
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            assert_eq!(
                root.tag_name().namespace(),
                Some("http://www.w3.org/2000/svg")
            );
            assert!(
                doc.descendants()
                    .all(|n| !matches!(n.tag_name().name(), "script" | "foreignObject")),
                "{svg}"
            );
            let text: String = doc.descendants().filter_map(|n| n.text()).collect();
            (root.attribute("id").unwrap_or("").to_string(), text)
        })
        .collect()
}
