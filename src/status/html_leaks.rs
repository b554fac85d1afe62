//! The HTML page's "Where it leaks" (the leak report, the first tables a person reads) and
//! "The last hour" (the history as inline SVG charts, with the numbers in a table for text
//! browsers). Every snapshot string passes through `escape::html`; the SVGs carry only
//! numbers, times and our own words.

use std::fmt::Write;

use super::escape::{html as e, ms_as_secs};
use super::html::{num, row, table_head_id, txt};
use super::html_conns;
use super::model::{Count, HistoryPoint, Snapshot};
use super::svg::{self, Series, Stack};
use super::time::{ago, utc, utc_minute};
use crate::table::layout::REPORT_K;

/// The window the history charts show.
const HOUR_MS: u64 = 3_600_000;
const MINUTE_MS: u64 = 60_000;

/// "7", or "9 (at least 7)" when Space-Saving inherited part of the count.
fn count_cell(c: &Count) -> String {
    if c.error == 0 {
        c.count.to_string()
    } else {
        format!("{} (at least {})", c.count, c.count.saturating_sub(c.error))
    }
}

fn seen_cell(s: &Snapshot, c: &Count) -> String {
    format!(
        "{} ({})",
        utc(c.last_seen_unix_ms),
        ago(s.now_unix_ms, c.last_seen_unix_ms)
    )
}

/// Rows of every vhost's list, most counted first across vhosts.
fn ranked<'a, T>(
    s: &'a Snapshot,
    list: impl Fn(&'a super::model::VhostLeaks) -> &'a [T],
    count: impl Fn(&T) -> Count,
) -> Vec<(&'a str, &'a T)> {
    let mut rows: Vec<(&str, &T)> = s
        .leaks
        .iter()
        .flat_map(|v| list(v).iter().map(move |item| (v.vhost.as_str(), item)))
        .collect();
    rows.sort_by(|a, b| {
        let (ca, cb) = (count(a.1), count(b.1));
        cb.count
            .cmp(&ca.count)
            .then(cb.last_seen_unix_ms.cmp(&ca.last_seen_unix_ms))
    });
    rows
}

/// "Where it leaks": the requests and the clients whose connections sat in CLOSE_WAIT past
/// their vhost's timeout.
pub fn where_it_leaks(o: &mut String, s: &Snapshot) {
    o.push_str("<h2 id=\"where-it-leaks\">Where it leaks</h2>\n");
    if s.leaks.is_empty() {
        o.push_str(
            "<p id=\"no-leaks\">No connection has sat in CLOSE_WAIT past its vhost&#39;s \
             timeout.</p>\n",
        );
        return;
    }
    let _ = writeln!(
        o,
        "<p>Connections that sat in CLOSE_WAIT past their vhost&#39;s timeout, counted once \
         each, whatever happened to them then: the top {REPORT_K} requests and clients per \
         vhost, kept across graceful restarts.</p>"
    );
    o.push_str("<h3>These URLs leak</h3>\n");
    let head = ["VHost", "Method", "Path", "Connections", "Last seen"];
    table_head_id(o, Some("leak-paths"), &head);
    for (vhost, p) in ranked(s, |v| &v.paths, |p| p.count) {
        let cells = [
            txt(e(vhost)),
            txt(e(&p.method)),
            html_conns::path_cell(&p.path),
            num(count_cell(&p.count)),
            txt(seen_cell(s, &p.count)),
        ];
        row(o, Some("cw"), &cells);
    }
    o.push_str("</table>\n<h3>From these clients</h3>\n");
    let head = ["VHost", "Client", "Connections", "Last seen"];
    table_head_id(o, Some("leak-clients"), &head);
    for (vhost, c) in ranked(s, |v| &v.clients, |c| c.count) {
        let cells = [
            txt(e(vhost)),
            txt(e(&c.client)),
            num(count_cell(&c.count)),
            txt(seen_cell(s, &c.count)),
        ];
        row(o, None, &cells);
    }
    o.push_str("</table>\n");
}

/// A sum that stops at u64::MAX: the numbers come from a table children can write.
pub(super) fn saturating_sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

/// Where a point lies in the last hour: 0 an hour ago, 1 now.
fn frac(s: &Snapshot, p: &HistoryPoint) -> f64 {
    let start = s.now_unix_ms.saturating_sub(HOUR_MS);
    p.unix_ms.saturating_sub(start) as f64 / HOUR_MS as f64
}

/// Runs of points of the last hour, split where samples are missing (over 3 periods apart).
fn runs(s: &Snapshot, value: impl Fn(&HistoryPoint) -> u64) -> Vec<Vec<(f64, f64)>> {
    let gap = 3 * s.history.period_ms.max(1);
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut last: Option<u64> = None;
    for p in s
        .history
        .points
        .iter()
        .filter(|p| p.unix_ms.saturating_add(HOUR_MS) >= s.now_unix_ms)
    {
        if last.is_none_or(|t| p.unix_ms.saturating_sub(t) > gap) {
            runs.push(Vec::new());
        }
        if let Some(run) = runs.last_mut() {
            run.push((frac(s, p), value(p) as f64));
        }
        last = Some(p.unix_ms);
    }
    runs
}

/// The last 60 clock minutes (the current one included), oldest first: (the minute's start,
/// its points).
fn minutes(s: &Snapshot) -> Vec<(u64, Vec<&HistoryPoint>)> {
    let this_minute = s.now_unix_ms / MINUTE_MS;
    let mut out: Vec<(u64, Vec<&HistoryPoint>)> = (0..60u64)
        .rev()
        .map(|back| (this_minute.saturating_sub(back) * MINUTE_MS, Vec::new()))
        .collect();
    for p in &s.history.points {
        let back = this_minute.saturating_sub(p.unix_ms / MINUTE_MS);
        if let Some(i) = 59usize.checked_sub(back as usize) {
            out[i].1.push(p);
        }
    }
    out
}

fn x_ticks() -> Vec<(f64, String)> {
    [
        (0.0, "-60 min"),
        (0.25, "-45"),
        (0.5, "-30"),
        (0.75, "-15"),
        (1.0, "now"),
    ]
    .into_iter()
    .map(|(f, t)| (f, t.to_string()))
    .collect()
}

/// "The last hour": CLOSE_WAIT and untracked sockets, open connections, closes per minute.
pub fn last_hour(o: &mut String, s: &Snapshot) {
    let h = &s.history;
    o.push_str("<h2 id=\"last-hour\">The last hour</h2>\n");
    let period = ms_as_secs(h.period_ms);
    let Some(first) = h.points.first() else {
        let _ = writeln!(
            o,
            "<p id=\"history-none\">No sample yet: the scanner takes one every {period} s.</p>"
        );
        return;
    };
    let _ = writeln!(
        o,
        "<p id=\"history-summary\">One sample every {period} s ({} kept, an hour): {} so far, \
         the oldest from {}.</p>",
        h.capacity,
        h.points.len(),
        utc(first.unix_ms)
    );
    o.push_str(&svg::line_chart(
        "chart-close-wait",
        "Sockets in CLOSE_WAIT",
        &x_ticks(),
        &[
            Series {
                label: "tracked",
                color: "#b00",
                runs: runs(s, |p| p.close_wait),
            },
            Series {
                label: "untracked",
                color: "#777",
                runs: runs(s, |p| p.untracked),
            },
        ],
    ));
    o.push_str(&svg::line_chart(
        "chart-open",
        "Open connections",
        &x_ticks(),
        &[Series {
            label: "open",
            color: "#05a",
            runs: runs(s, |p| p.open),
        }],
    ));
    let per_minute = minutes(s);
    let sum = |f: fn(&HistoryPoint) -> u64| -> Vec<u64> {
        per_minute
            .iter()
            .map(|(_, ps)| saturating_sum(ps.iter().map(|p| f(p))))
            .collect()
    };
    let labels: Vec<String> = per_minute.iter().map(|(t, _)| utc_minute(*t)).collect();
    o.push_str(&svg::bar_chart(
        "chart-closes",
        "Closes per minute",
        &labels,
        &x_ticks(),
        &[
            Stack {
                label: "by the guard",
                color: "#d70",
                values: sum(|p| p.guard_closes),
            },
            Stack {
                label: "rescued",
                color: "#70b",
                values: sum(|p| p.rescue_closes),
            },
        ],
    ));
    numbers(o, &per_minute);
}

/// The charts' numbers per minute, newest first, for text browsers and screen readers.
fn numbers(o: &mut String, per_minute: &[(u64, Vec<&HistoryPoint>)]) {
    o.push_str("<details id=\"history-numbers\">\n<summary>The numbers, per minute</summary>\n");
    table_head_id(
        o,
        Some("history-table"),
        &[
            "Minute",
            "CLOSE_WAIT (max)",
            "Untracked (max)",
            "Open (max)",
            "Closed by the guard",
            "Rescued",
        ],
    );
    for (start, ps) in per_minute.iter().rev().filter(|(_, ps)| !ps.is_empty()) {
        let max = |f: fn(&HistoryPoint) -> u64| ps.iter().map(|p| f(p)).max().unwrap_or(0);
        let sum = |f: fn(&HistoryPoint) -> u64| saturating_sum(ps.iter().map(|p| f(p)));
        let cells = [
            txt(utc_minute(*start)),
            num(max(|p| p.close_wait)),
            num(max(|p| p.untracked)),
            num(max(|p| p.open)),
            num(sum(|p| p.guard_closes)),
            num(sum(|p| p.rescue_closes)),
        ];
        row(o, None, &cells);
    }
    o.push_str("</table>\n</details>\n");
}

/// The CLOSE_WAIT duration histogram as bars (its numbers are in the table below it).
pub fn histogram_chart(o: &mut String, s: &Snapshot) {
    let h = &s.close_wait_histogram;
    let mut labels: Vec<String> = h
        .bounds_secs
        .iter()
        .map(|b| format!("\u{2264} {} s", super::escape::float(*b)))
        .collect();
    labels.push(match h.bounds_secs.last() {
        Some(b) => format!("> {} s", super::escape::float(*b)),
        None => "any".to_string(),
    });
    o.push_str(&svg::bar_chart(
        "chart-close-wait-seconds",
        "Sockets by time spent in CLOSE_WAIT",
        &labels,
        &[],
        &[Stack {
            label: "sockets",
            color: "#b00",
            values: h.counts.clone(),
        }],
    ));
}

#[cfg(test)]
mod tests {
    use crate::status::model::Snapshot;
    use crate::status::query::{parse, Query};
    use crate::status::select::select;
    use crate::status::{fixture, html};

    /// The default (first) page of `s`, or of `s` as JSON.
    fn default_query(json: bool) -> Query {
        parse(Some(if json { "json" } else { "" })).unwrap()
    }

    fn html_page(s: &Snapshot) -> String {
        let q = default_query(false);
        html::render(s, &select(s, &q), &q)
    }

    fn json_doc(s: &Snapshot) -> String {
        let q = default_query(true);
        crate::status::json::render(s, &select(s, &q), &q)
    }

    fn page() -> String {
        html_page(&fixture::snapshot())
    }

    /// The text between `from` and the next `to` after it.
    fn part<'a>(p: &'a str, from: &str, to: &str) -> &'a str {
        let p = &p[p.find(from).unwrap_or_else(|| panic!("no {from}"))..];
        &p[..p.find(to).unwrap()]
    }

    #[test]
    fn the_leak_tables_come_first_ranked_and_escaped() {
        let p = page();
        // Right after the rows that need attention: the first table of the page after those.
        let leaks = p.find("id=\"where-it-leaks\"").unwrap();
        assert!(p.find("id=\"attention\"").unwrap() < leaks);
        let first_table_after = leaks + p[leaks..].find("<table").unwrap();
        assert_eq!(
            first_table_after,
            p.find("<table id=\"leak-paths\">").unwrap()
        );
        assert!(leaks < p.find("<h2>Virtual hosts").unwrap());
        let rows: Vec<&str> = part(&p, "id=\"leak-paths\"", "</table>")
            .split("<tr")
            .skip(2)
            .collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].contains("<td>POST</td><td><code class=\"short\">/export</code></td><td class=\"n\">9 (at least 5)</td><td>2023-11-14 22:03:20 UTC (10 min ago)</td>"), "{}", rows[0]);
        assert!(rows[1].contains("<td>G&quot;ET&lt;</td><td><code>/&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\n&quot;}</code></td><td class=\"n\">7</td>"), "{}", rows[1]);
        assert!(rows[2].contains("<td>www.example.com:443</td><td>GET</td><td><code class=\"short\">/report</code></td><td class=\"n\">3</td><td>2023-11-14 22:13:17 UTC (3 s ago)</td>"));
        let clients: Vec<&str> = part(&p, "id=\"leak-clients\"", "</table>")
            .split("<tr")
            .skip(2)
            .collect();
        assert_eq!(clients.len(), 2);
        assert!(clients[0].contains("<td>192.0.2.7</td><td class=\"n\">16</td>"));
        assert!(clients[1].contains("<td>2001:db8::1</td><td class=\"n\">3</td>"));
        assert!(!p.contains("<script") && !p.contains("G\"ET<"));
        let none = html_page(&Snapshot::default());
        assert!(none.contains("<p id=\"no-leaks\">No connection has sat in CLOSE_WAIT past"));
        assert!(!none.contains("leak-paths"));
    }

    /// Every `<svg>…</svg>` of the page.
    fn svgs(p: &str) -> Vec<&str> {
        p.match_indices("<svg")
            .map(|(i, _)| &p[i..i + p[i..].find("</svg>").unwrap() + 6])
            .collect()
    }

    #[test]
    fn the_charts_are_well_formed_svg_without_request_text() {
        let p = page();
        let charts = svgs(&p);
        let ids: Vec<String> = charts
            .iter()
            .map(|svg| {
                let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
                let root = doc.root_element();
                assert_eq!(
                    root.tag_name().namespace(),
                    Some("http://www.w3.org/2000/svg")
                );
                assert!(doc.descendants().all(|n| n.tag_name().name() != "script"));
                let text: String = doc.descendants().filter_map(|n| n.text()).collect();
                assert!(
                    !text.contains("script") && !text.contains("export"),
                    "{text}"
                );
                root.attribute("id").unwrap().to_string()
            })
            .collect();
        // The last hour's three charts, then the histogram's bars.
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert_eq!(
            (ids[0].as_str(), ids[3].as_str()),
            ("chart-close-wait", "chart-close-wait-seconds")
        );
        // The tracked CLOSE_WAIT line: the three samples ten minutes ago, then a dot (a gap).
        let cw = charts[0];
        assert_eq!(cw.matches("<polyline").count(), 2, "{cw}");
        assert_eq!(cw.matches("<circle").count(), 2);
        // The histogram: one bar per non-empty bucket (2, 3, 1, 4 in the fixture).
        let bars = charts[3];
        assert_eq!(bars.matches("<rect").count(), 4);
        assert!(bars.contains("<title>&gt; 30 s: 4</title>"));
        let empty = html_page(&Snapshot::default());
        assert!(
            empty.contains("<p id=\"history-none\">No sample yet"),
            "{empty}"
        );
        assert!(!empty.contains("chart-close-wait\""));
    }

    #[test]
    fn the_numbers_per_minute_for_text_browsers() {
        let p = page();
        assert!(p.contains("<p id=\"history-summary\">One sample every 5 s (720 kept, an hour): 4 so far, the oldest from 2023-11-14 22:03:20 UTC.</p>"));
        let t = part(&p, "<details id=\"history-numbers\">", "</details>");
        let rows: Vec<&str> = t.split("<tr").skip(2).collect();
        // Newest first, one row per clock minute with samples: 22:13 (the sample 5 s ago:
        // 1 guard close); 22:03 (three samples: CLOSE_WAIT at most 3, open at most 6, 2
        // guard closes and 1 rescue between the first two).
        assert_eq!(rows.len(), 2, "{t}");
        let cells = |r: &str| -> Vec<String> {
            r.split("<td")
                .skip(1)
                .map(|c| c[c.find('>').unwrap() + 1..c.find("</td>").unwrap()].to_string())
                .collect()
        };
        assert_eq!(cells(rows[0]), ["22:13 UTC", "0", "1", "4", "1", "0"]);
        assert_eq!(cells(rows[1]), ["22:03 UTC", "3", "1", "6", "2", "1"]);
    }

    /// Numbers a child can forge in the table (u64::MAX counts, closes and times) render
    /// in every format without a panic, and the charts stay well-formed.
    #[test]
    fn forged_extreme_numbers_render_everywhere() {
        use crate::status::{auto, metrics};
        let mut s = fixture::snapshot();
        for p in &mut s.history.points {
            p.guard_closes = u64::MAX;
            p.rescue_closes = u64::MAX;
            p.open = u64::MAX;
        }
        s.history.points.push(crate::status::model::HistoryPoint {
            unix_ms: u64::MAX,
            ..Default::default()
        });
        s.leaks[0].paths[0].count.count = u64::MAX;
        s.leaks[0].paths[0].count.last_seen_unix_ms = u64::MAX;
        let p = html_page(&s);
        for svg in svgs(&p) {
            roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        }
        assert!(!auto::render(&s).is_empty() && !metrics::render(&s).is_empty());
        assert!(json_doc(&s).contains("\"guard_closes\":[18446744073709551615,"));
    }
}
