//! The HTML status page: what a person reads at a glance.
//!
//! Styled after mod_status (plain headings, definition list, bordered tables) with a little
//! inline CSS and no scripts or external resources, so it works under any CSP and offline.
//! Every snapshot string passes through `escape::html` (aliased `e`) on its way in.

use std::fmt::Write;

use super::auto::force_closed_held;
use super::escape::{html as e, ms_as_secs};
use super::model::{ChildRow, CloseWaitClass, ShownState, Snapshot, Verdict, VhostRow};
use super::query::Query;
use super::select::Selection;
use super::{html_conns, html_leaks};
use super::{open_in, vhost_label};

const CSS: &str = "body{font-family:sans-serif;margin:1em 2em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
th,td{border:1px solid #999;padding:2px 6px;text-align:left}\
th{background:#ddd}td.n{text-align:right}\
tr.cw td{background:#fdd}tr.fc td{background:#fe9}tr.ab td{background:#fec}.hung{color:#b00;font-weight:bold}\
.headline{font-size:1.3em;font-weight:bold;padding:.3em .6em;display:inline-block}\
.headline.cw{background:#fdd;border:2px solid #b00}.headline.ok{background:#dfd}\
.verdict{font-size:1.1em;margin-top:0}.verdict.leak{color:#b00;font-weight:bold}\
.verdict.churn{color:#850}.verdict.none{color:#070}\
code{white-space:pre-wrap;word-break:break-all}code.short{white-space:pre}\
form label{margin-right:1em}";

/// The page for `q`: the tables of totals, vhosts and children are over every connection;
/// the connection tables hold what `sel` chose.
pub fn render(s: &Snapshot, sel: &Selection, q: &Query) -> String {
    let mut o = String::with_capacity(16384);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    if let Some(n) = q.refresh {
        let _ = writeln!(o, "<meta http-equiv=\"refresh\" content=\"{n}\">");
    }
    let _ = writeln!(
        o,
        "<title>Socket Guard Status</title>\n<style>{CSS}</style>\n</head>\n<body>"
    );
    o.push_str("<h1>Socket Guard Status</h1>\n");
    summary(&mut o, s);
    headline(&mut o, s);
    html_conns::attention(&mut o, sel, q);
    html_leaks::where_it_leaks(&mut o, s);
    html_leaks::last_hour(&mut o, s);
    vhosts(&mut o, &s.vhosts);
    children(&mut o, &s.children);
    html_conns::listing(&mut o, s, sel, q);
    kernel(&mut o, s);
    histogram(&mut o, s);
    o.push_str("</body>\n</html>\n");
    o
}

/// "1 day 2 hours 3 minutes 4 seconds", as mod_status prints uptime.
fn human_duration(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "day"),
        (secs / 3_600 % 24, "hour"),
        (secs / 60 % 60, "minute"),
        (secs % 60, "second"),
    ];
    let words: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if words.is_empty() {
        "0 seconds".to_string()
    } else {
        words.join(" ")
    }
}

fn summary(o: &mut String, s: &Snapshot) {
    let t = &s.totals;
    let by_state: Vec<String> = ShownState::OPEN
        .iter()
        .map(|&st| format!("{} {}", open_in(t, st), st.name()))
        .collect();
    let items = [
        format!("Server Version: {}", e(&s.server_version)),
        format!("Server MPM: {}", e(&s.mpm)),
        format!("Module Version: {}", e(&s.module_version)),
        format!("Uptime: {}", human_duration(s.uptime_secs)),
        format!("Restart generation: {}", s.generation),
        format!("Slots: {} used of {}", s.slots_used, s.slots_total),
        format!("Scan interval: {} s", ms_as_secs(s.scan_interval_ms)),
        format!(
            "Full scan interval: {} s",
            ms_as_secs(s.full_scan_interval_ms)
        ),
        format!("Graceful deadline: {}", off_or_secs(s.graceful_deadline_ms)),
        format!(
            "Connections: {} accepted, {} requests, {} closed, {} open ({})",
            t.accepted,
            t.requests,
            t.closed,
            t.open(),
            by_state.join(", ")
        ),
        format!(
            "Force-closed: {} by guard, {} rescued by parent; {} reported; {} reclaimed; \
             {} untracked (table full)",
            t.force_closed_guard, t.force_closed_rescue, t.reported, t.reclaimed, t.untracked
        ),
        format!(
            "Force-closed, handler still running: {}",
            force_closed_held(s)
        ),
        format!("Abandoned handlers now: {}", t.abandoned_now),
        format!(
            "Abandoned work stopped: {} CGI, {}",
            t.stopped_cgi,
            plural(t.stopped_child, "child", "children")
        ),
    ];
    o.push_str("<dl>\n");
    for item in items {
        let _ = writeln!(o, "<dt>{item}</dt>");
    }
    o.push_str("</dl>\n");
}

/// A duration setting where 0 means Off: "Off" or "30 s".
fn off_or_secs(ms: u64) -> String {
    if ms == 0 {
        "Off".to_string()
    } else {
        format!("{} s", ms_as_secs(ms))
    }
}

pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn headline(o: &mut String, s: &Snapshot) {
    let n = s.totals.close_wait_now;
    let class = if n > 0 { "cw" } else { "ok" };
    let _ = writeln!(
        o,
        "<p class=\"headline {class}\" id=\"close-wait-now\">{} in CLOSE_WAIT now</p>",
        plural(n, "socket", "sockets")
    );
    let k = &s.kernel;
    if k.available {
        let mut text = format!(
            "Verdict: <strong>{}</strong> &mdash; {}",
            k.verdict.name(),
            e(k.verdict.explain())
        );
        // Only tracked sockets have a known age; untracked-only churn has none to show.
        if k.verdict != Verdict::None && k.oldest_close_wait_ms > 0 {
            let _ = write!(
                text,
                "; the oldest has been in CLOSE_WAIT for {} s",
                ms_as_secs(k.oldest_close_wait_ms)
            );
        }
        let _ = writeln!(
            o,
            "<p class=\"verdict {}\" id=\"close-wait-verdict\">{text}.</p>",
            k.verdict.name()
        );
    } else {
        o.push_str(
            "<p class=\"verdict\" id=\"close-wait-verdict\">Verdict unknown: the kernel view \
             could not be read (see Kernel view).</p>\n",
        );
    }
    let leaked = s.kernel.leaked_count;
    if leaked > 0 {
        let _ = writeln!(
            o,
            "<p class=\"hung\" id=\"leaked-now\">{} held outside Apache (see Kernel view)</p>",
            plural(leaked, "leaked socket", "leaked sockets")
        );
    }
    let backlog = s.kernel.backlog;
    if backlog > 0 {
        let _ = writeln!(
            o,
            "<p class=\"hung\" id=\"backlog-now\">{} never accepted: clients gave up while \
             every worker was busy (a capacity problem, see Kernel view)</p>",
            plural(backlog, "socket", "sockets")
        );
    }
    let abandoned = s.totals.abandoned_now;
    if abandoned > 0 {
        let _ = writeln!(
            o,
            "<p class=\"hung\" id=\"abandoned-now\">{} still running for a client that is \
             gone (see Connections)</p>",
            plural(abandoned, "abandoned handler", "abandoned handlers")
        );
    }
}

/// Opens a table with the given (static, trusted) header cells.
pub(super) fn table_head(o: &mut String, headers: &[&str]) {
    table_head_id(o, None, headers);
}

/// Opens a table with an id (static, trusted) and the given header cells.
pub(super) fn table_head_id(o: &mut String, id: Option<&str>, headers: &[&str]) {
    match id {
        Some(id) => {
            let _ = write!(o, "<table id=\"{id}\">\n<tr>");
        }
        None => o.push_str("<table>\n<tr>"),
    }
    for h in headers {
        let _ = write!(o, "<th>{h}</th>");
    }
    o.push_str("</tr>\n");
}

/// One row; cells are already escaped. Numeric cells (`n`) are right-aligned.
pub(super) fn row(o: &mut String, class: Option<&str>, cells: &[(String, bool)]) {
    match class {
        Some(c) => {
            let _ = write!(o, "<tr class=\"{c}\">");
        }
        None => o.push_str("<tr>"),
    }
    for (text, numeric) in cells {
        let _ = write!(
            o,
            "{}{text}</td>",
            if *numeric { "<td class=\"n\">" } else { "<td>" }
        );
    }
    o.push_str("</tr>\n");
}

pub(super) fn num(v: impl ToString) -> (String, bool) {
    (v.to_string(), true)
}

pub(super) fn txt(v: String) -> (String, bool) {
    (v, false)
}

fn vhosts(o: &mut String, rows: &[VhostRow]) {
    o.push_str("<h2>Virtual hosts</h2>\n");
    table_head(
        o,
        &[
            "VHost",
            "AutoClose",
            "Timeout (s)",
            "Accepted",
            "Open",
            "CLOSE_WAIT now",
            "Force-closed (guard)",
            "Rescued (parent)",
            "Reported",
            "Abandoned timeout",
            "Stopped (CGI / child)",
        ],
    );
    for v in rows {
        let class = (v.close_wait_now > 0).then_some("cw");
        row(
            o,
            class,
            &[
                txt(e(&vhost_label(v))),
                txt(v.auto_close.name().to_string()),
                num(ms_as_secs(v.close_wait_timeout_ms)),
                num(v.accepted),
                num(v.open),
                num(v.close_wait_now),
                num(v.force_closed_guard),
                num(v.force_closed_rescue),
                num(v.reported),
                num(off_or_secs(v.abandoned_timeout_ms)),
                num(format!("{} / {}", v.stopped_cgi, v.stopped_child)),
            ],
        );
    }
    o.push_str("</table>\n");
}

fn children(o: &mut String, rows: &[ChildRow]) {
    o.push_str("<h2>Child processes</h2>\n");
    table_head(
        o,
        &[
            "PID",
            "Generation",
            "Open",
            "Last check-in (s ago)",
            "Status",
        ],
    );
    for c in rows {
        let status = if c.hung {
            "<span class=\"hung\">HUNG</span>"
        } else {
            "ok"
        };
        row(
            o,
            c.hung.then_some("cw"),
            &[
                num(c.pid),
                num(c.generation),
                num(c.open),
                num(ms_as_secs(c.checkin_age_ms)),
                txt(status.to_string()),
            ],
        );
    }
    o.push_str("</table>\n");
}

/// What each class means and which remedy applies (SPEC "Who holds a CLOSE_WAIT socket").
fn class_meaning(class: CloseWaitClass) -> &'static str {
    match class {
        CloseWaitClass::Stuck => "a live worker's handler has not returned: AutoClose applies",
        CloseWaitClass::Hung => {
            "its child's guard stopped checking in: the guard process rescues it \
             (SocketGuardRescue On, AutoClose On)"
        }
        CloseWaitClass::OldGeneration => {
            "a child from before the last graceful restart: treated like stuck; piles up at \
             restarts"
        }
        CloseWaitClass::Leaked => {
            "held by a process that is not an Apache child: the guard process closes it when \
             AutoClose is On; the holder is never killed"
        }
        CloseWaitClass::Backlog => {
            "never accepted: the client gave up while every worker was busy \u{2014} a capacity \
             problem; counted, never closed"
        }
        CloseWaitClass::Untracked => {
            "not an Apache connection we track, not (yet) classified by the guard process \
             (e.g. the table was full)"
        }
    }
}

fn scanner(o: &mut String, s: &Snapshot) {
    let sc = &s.scanner;
    let _ = writeln!(
        o,
        "<p id=\"guard-process\">Guard process: {}; rescue of hung children's sockets: {}.</p>",
        if sc.guard_pid == 0 {
            "not running (children scan for themselves)".to_string()
        } else {
            format!("pid {}", sc.guard_pid)
        },
        match (sc.rescue, sc.guard_reach) {
            (false, _) => "Off (SocketGuardRescue Off: shown and reported only)",
            (true, "none") => "not possible here (no CAP_SYS_PTRACE): shown and reported only",
            (true, _) if sc.guard_pid == 0 => "not running",
            (true, _) => "On",
        }
    );
    if sc.pid == 0 {
        o.push_str("<p id=\"scanner\">Scanner: no child has scanned yet.</p>\n");
        return;
    }
    let what = if sc.last_scan_full {
        "a full dump of the listening ports".to_string()
    } else {
        plural(sc.last_scan_lookups, "lookup", "lookups")
    };
    let _ = writeln!(
        o,
        "<p id=\"scanner\">Scanner: pid {}, {} ({} failed, {} full); the last scan took {} \
         &micro;s ({what}), {} s ago.</p>",
        sc.pid,
        plural(sc.scans, "scan", "scans"),
        sc.scan_errors,
        sc.full_scans,
        sc.last_scan_us,
        ms_as_secs(sc.last_scan_age_ms)
    );
}

fn kernel(o: &mut String, s: &Snapshot) {
    let k = &s.kernel;
    o.push_str("<h2>Kernel view</h2>\n");
    scanner(o, s);
    if !k.available {
        let why = k.error.as_deref().unwrap_or("no reason given");
        let _ = writeln!(o, "<p>Kernel view unavailable: {}</p>", e(why));
        return;
    }
    let _ = writeln!(
        o,
        "<p>CLOSE_WAIT sockets on this server's listening ports: {} tracked, {} untracked, \
         {} leaked, {} backlog.</p>",
        k.tracked, k.untracked, k.leaked_count, k.backlog
    );
    o.push_str("<h3>Who holds them</h3>\n");
    table_head(o, &["Class", "Sockets", "What it means / remedy"]);
    for class in CloseWaitClass::ALL {
        let n = k.count(class);
        row(
            o,
            (n > 0).then_some("cw"),
            &[
                txt(class.name().to_string()),
                num(n),
                txt(e(class_meaning(class))),
            ],
        );
    }
    o.push_str("</table>\n");
    if k.leaked.is_empty() {
        return;
    }
    o.push_str("<h3>Leaked sockets</h3>\n");
    table_head(
        o,
        &[
            "Client",
            "Local port",
            "Inode",
            "Holder PID",
            "Holder command",
            "Closed",
        ],
    );
    for l in &k.leaked {
        let holder = l
            .holder_pid
            .map_or_else(|| "unknown".to_string(), |p| p.to_string());
        // The command name is whatever the holder called itself: untrusted text.
        let comm = if l.holder_comm.is_empty() {
            "-".to_string()
        } else {
            format!("<code>{}</code>", e(&l.holder_comm))
        };
        row(
            o,
            (!l.closed).then_some("cw"),
            &[
                txt(e(&l.client)),
                num(l.local_port),
                num(l.inode),
                num(holder),
                txt(comm),
                txt(if l.closed { "yes" } else { "no" }.to_string()),
            ],
        );
    }
    o.push_str("</table>\n");
}

fn histogram(o: &mut String, s: &Snapshot) {
    let h = &s.close_wait_histogram;
    o.push_str("<h2>Time spent in CLOSE_WAIT before close</h2>\n");
    html_leaks::histogram_chart(o, s);
    table_head(o, &["Seconds", "Sockets"]);
    for (i, b) in h.bounds_secs.iter().enumerate() {
        let label = format!("&le; {}", super::escape::float(*b));
        row(
            o,
            None,
            &[txt(label), num(h.counts.get(i).copied().unwrap_or(0))],
        );
    }
    // Whatever is past the last bound (the model's +Inf bucket).
    let rest: u64 = h.counts.iter().skip(h.bounds_secs.len()).sum();
    let last = match h.bounds_secs.last() {
        Some(b) => format!("&gt; {}", super::escape::float(*b)),
        None => "any".to_string(),
    };
    row(o, None, &[txt(last), num(rest)]);
    let _ = writeln!(
        o,
        "</table>\n<p>{} closed after CLOSE_WAIT, {} s in total.</p>",
        plural(h.count(), "socket", "sockets"),
        super::escape::float_fixed(h.sum_secs, 3)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixture;
    use crate::status::query::parse;
    use crate::status::select::select;

    fn render_q(s: &Snapshot, args: &str) -> String {
        let q = parse(Some(args)).unwrap();
        render(s, &select(s, &q), &q)
    }

    fn page() -> String {
        render_q(&fixture::snapshot(), "")
    }

    #[test]
    fn is_a_complete_page_without_scripts() {
        let p = page();
        assert!(p.starts_with("<!DOCTYPE html>"));
        assert!(p.contains("<title>Socket Guard Status</title>"));
        assert!(p.trim_end().ends_with("</html>"));
        assert!(!p.contains("http-equiv"));
        // Our own markup has no script, and the hostile path's script tag is escaped.
        assert!(!p.to_lowercase().contains("<script"));
        assert!(!p.contains("<img"));
    }

    #[test]
    fn hostile_strings_are_escaped() {
        let p = page();
        assert!(p.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        assert!(p.contains("evil &lt;b&gt;&quot;host&quot;&lt;/b&gt;"));
        assert!(!p.contains("<b>"));
        assert!(p.contains("10.0.0.1:5555&lt;img src=x onerror=alert(1)&gt;"));
        assert!(p.contains("G&quot;ET&lt;"));
    }

    #[test]
    fn refresh_meta() {
        let p = render_q(&fixture::snapshot(), "refresh=7");
        assert!(p.contains("<meta http-equiv=\"refresh\" content=\"7\">"));
    }

    #[test]
    fn close_wait_headline_and_rows_first() {
        let p = page();
        assert!(p.contains(">2 sockets in CLOSE_WAIT now</p>"));
        let attention = table_rows(&p, "id=\"attention\"");
        assert_eq!(attention.len(), 3);
        assert!(
            attention[0].starts_with(" class=\"cw\">")
                && attention[0].contains("<td class=\"n\">45.5</td>")
        );
        assert!(attention[1].starts_with(" class=\"cw\">") && attention[1].contains("/cw-short"));
        assert!(attention[2].starts_with(" class=\"fc\">"));
        let others = table_rows(&p, "id=\"connections\"");
        assert_eq!(others.len(), 3);
        assert!(others
            .iter()
            .all(|r| r.starts_with('>') && !r.contains("close_wait")));
        // Attention comes before the vhost and child tables; the others after them.
        let at = |needle: &str| p.find(needle).unwrap();
        assert!(at("id=\"attention\"") < at("<h2>Virtual hosts</h2>"));
        assert!(at("<h2>Child processes</h2>") < at("id=\"connections\""));
        let mut s = fixture::snapshot();
        s.totals.close_wait_now = 1;
        assert!(render_q(&s, "").contains(">1 socket in CLOSE_WAIT now</p>"));
    }

    #[test]
    fn the_list_is_bounded_and_says_so() {
        let s = fixture::crowded();
        let p = render_q(&s, "");
        assert_eq!(table_rows(&p, "id=\"attention\"").len(), 3);
        assert_eq!(table_rows(&p, "id=\"connections\"").len(), 100);
        assert!(p.contains(
            "<p id=\"conn-shown\">Showing 103 of 256 connections (filter: none): 3 that need \
             attention (above) and 100 of the other 253, oldest first (#1\u{2013}#100).</p>"
        ));
        assert!(p.contains("<a href=\"?page=2\">next 100 &raquo;</a>"));
        assert!(p.contains("<a href=\"?all\">show all 256 (large)</a>"));
        assert!(!p.contains("previous"));
        // Totals stay exact.
        assert!(p.contains(&format!("{} open (", s.totals.open())));
        let last = render_q(&s, "page=3");
        assert_eq!(table_rows(&last, "id=\"connections\"").len(), 53);
        assert!(last.contains("(#201\u{2013}#253)"));
        assert!(last.contains("<a href=\"?page=2\">&laquo; previous 100</a>"));
        assert!(!last.contains("next "));
        let all = render_q(&s, "all");
        assert_eq!(table_rows(&all, "id=\"connections\"").len(), 253);
        assert!(!all.contains("id=\"conn-nav\""));
        let past = render_q(&s, "page=9");
        assert!(past.contains("No other connections on this page."));
        assert_eq!(table_rows(&past, "id=\"attention\"").len(), 3);
    }

    #[test]
    fn links_keep_the_other_parameters() {
        let s = fixture::crowded();
        let p = render_q(&s, "refresh=5&client=10.1.&limit=20&state=keepalive");
        // Escaped for the attribute: & becomes &amp;.
        assert!(p.contains(
            "<a href=\"?refresh=5&amp;state=keepalive&amp;client=10.1.&amp;limit=20&amp;page=2\">\
             next 20 &raquo;</a>"
        ));
        assert!(
            p.contains("<a href=\"?refresh=5&amp;client=10.1.&amp;limit=20\">show all states</a>")
        );
        assert!(p.contains(
            "<a href=\"?refresh=5&amp;state=reading&amp;client=10.1.&amp;limit=20\">reading</a> (1)"
        ));
        assert!(p.contains(
            "<a href=\"?refresh=5&amp;vhost=www.example.com:443&amp;state=keepalive&amp;\
             client=10.1.&amp;limit=20\">www.example.com:443</a> (2 open)"
        ));
        assert!(p.contains("(filter: state=keepalive, client=10.1.), 256 in all"));
        assert!(p.contains("<input type=\"hidden\" name=\"refresh\" value=\"5\">"));
        assert!(p.contains("<input name=\"limit\" value=\"20\">"));
        assert!(p.contains("<input name=\"state\" value=\"keepalive\">"));
    }

    #[test]
    fn hostile_filter_values_are_escaped_everywhere() {
        let p = render_q(&fixture::crowded(), "vhost=%22%3E%3Cscript%3Ex");
        assert!(!p.contains("<script"), "{p}");
        assert!(p.contains("(filter: vhost=&quot;&gt;&lt;script&gt;x)"));
        assert!(p.contains("<input name=\"vhost\" value=\"&quot;&gt;&lt;script&gt;x\">"));
        assert!(p.contains("<a href=\"?vhost=%22%3E%3Cscript%3Ex&amp;state=reading\">"));
        // The hostile vhost of the fixture, in its own link.
        assert!(p.contains("evil%20%3Cb%3E%22host%22%3C%2Fb%3E%5C%0ASlotsTotal:%200:80"));
        assert!(p.contains(
            "No connection in CLOSE_WAIT, force-closed, rescued or abandoned \
                            matching the filter (vhost=&quot;&gt;&lt;script&gt;x)."
        ));
    }

    #[test]
    fn summary_children_kernel_histogram() {
        let p = page();
        assert!(p.contains("Uptime: 1 day 2 hours 3 minutes 4 seconds"));
        assert!(p.contains("Slots: 4 used of 1024"));
        assert!(p.contains("13 untracked"));
        assert!(p.contains("<span class=\"hung\">HUNG</span>"));
        assert!(p.contains("2 tracked, 1 untracked, 2 leaked"));
        assert!(p.contains("<td class=\"n\">4242</td>") && p.contains(">unknown</td>"));
        assert!(p.contains("198.51.100.9:1234\n&lt;b&gt;"));
        assert!(p.contains("<td>&le; 0.1</td><td class=\"n\">2</td>"));
        assert!(p.contains("<td>&gt; 30</td><td class=\"n\">4</td>"));
        assert!(p.contains("10 sockets closed after CLOSE_WAIT, 321.500 s in total."));
    }

    #[test]
    fn kernel_unavailable_shows_the_escaped_reason() {
        let mut s = fixture::snapshot();
        s.kernel.available = false;
        s.kernel.error = Some("sock_diag: <denied>".into());
        let p = render_q(&s, "");
        assert!(p.contains("Kernel view unavailable: sock_diag: &lt;denied&gt;"));
        assert!(render_q(&Default::default(), "").contains("No open connections."));
    }

    /// The rows (header row excluded) of the first table after `anchor`, if there is one
    /// before the next section.
    fn table_rows(p: &str, anchor: &str) -> Vec<String> {
        let from = &p[p.find(anchor).unwrap()..];
        let section = &from[..from[4..].find("<h2").map_or(from.len(), |i| i + 4)];
        let Some(start) = section.find("<table>") else {
            return Vec::new();
        };
        let table = &section[start..section.find("</table>").unwrap()];
        table.split("<tr").skip(2).map(str::to_string).collect()
    }

    /// Both connection tables' rows, in page order: attention, then the others.
    fn conn_rows(p: &str) -> Vec<String> {
        let mut rows = table_rows(p, "id=\"attention\"");
        rows.extend(table_rows(p, "id=\"connections\""));
        rows
    }

    #[test]
    fn verdict_headline_with_oldest_age() {
        let p = page();
        assert!(p.contains(
            "<p class=\"verdict leak\" id=\"close-wait-verdict\">Verdict: <strong>leak</strong> \
             &mdash; sockets stay in CLOSE_WAIT past their timeout (or 10 s): something holds \
             them (a leak); \
             the oldest has been in CLOSE_WAIT for 45.5 s.</p>"
        ));
        // Right under the count, above the tables.
        let count_at = p.find("id=\"close-wait-now\"").unwrap();
        let verdict_at = p.find("id=\"close-wait-verdict\"").unwrap();
        assert!(count_at < verdict_at && verdict_at < p.find("<h2>").unwrap());

        let mut s = fixture::snapshot();
        s.kernel.verdict = Verdict::Churn;
        s.kernel.oldest_close_wait_ms = 1_200;
        let p = render_q(&s, "");
        assert!(p.contains("class=\"verdict churn\""));
        assert!(p.contains("normal churn; the oldest has been in CLOSE_WAIT for 1.2 s."));
        s.kernel.oldest_close_wait_ms = 0;
        assert!(render_q(&s, "").contains("normal churn.</p>"));

        let p = render_q(&Default::default(), "");
        assert!(p.contains("Verdict unknown: the kernel view could not be read"));
        let mut s = fixture::snapshot();
        s.kernel.verdict = Verdict::None;
        s.kernel.oldest_close_wait_ms = 0;
        let p = render_q(&s, "");
        assert!(p.contains("<strong>none</strong> &mdash; no socket is in CLOSE_WAIT.</p>"));
        assert!(!p.contains("the oldest has been"));
    }

    #[test]
    fn class_table_in_kernel_view() {
        let p = page();
        let k = &p[p.find("<h2>Kernel view</h2>").unwrap()..];
        assert!(k.contains("<h3>Who holds them</h3>"));
        assert!(k.contains(
            "<tr class=\"cw\"><td>stuck</td><td class=\"n\">1</td><td>a live worker&#39;s \
             handler has not returned: AutoClose applies</td></tr>"
        ));
        assert!(k.contains(
            "<tr class=\"cw\"><td>hung</td><td class=\"n\">1</td><td>its child&#39;s guard \
             stopped checking in: the guard process rescues it (SocketGuardRescue On, AutoClose \
             On)</td></tr>"
        ));
        assert!(k.contains(
            "<tr><td>old_generation</td><td class=\"n\">0</td><td>a child from before the last \
             graceful restart: treated like stuck; piles up at restarts</td></tr>"
        ));
        assert!(k.contains(
            "<tr class=\"cw\"><td>leaked</td><td class=\"n\">2</td><td>held by a process \
             that is not an Apache child: the guard process closes it when AutoClose is On; the \
             holder is never killed</td></tr>"
        ));
        assert!(k.contains(
            "<tr class=\"cw\"><td>backlog</td><td class=\"n\">3</td><td>never accepted: the \
             client gave up while every worker was busy \u{2014} a capacity problem; counted, \
             never closed</td></tr>"
        ));
        assert!(k.contains(
            "<tr class=\"cw\"><td>untracked</td><td class=\"n\">1</td><td>not an Apache \
             connection we track, not (yet) classified by the guard process (e.g. the table was \
             full)</td></tr>"
        ));
        // In ALL's order: the two new classes between old_generation and untracked.
        let at = |c: &str| k.find(&format!("<td>{c}</td>")).unwrap();
        assert!(at("old_generation") < at("leaked"));
        assert!(at("leaked") < at("backlog") && at("backlog") < at("untracked"));
        let mut s = fixture::snapshot();
        s.kernel.old_generation = 7;
        assert!(render_q(&s, "").contains("<td>old_generation</td><td class=\"n\">7</td>"));
    }

    #[test]
    fn leaked_table_and_backlog_headline() {
        let p = page();
        let k = &p[p.find("<h3>Leaked sockets</h3>").unwrap()..];
        let k = &k[..k.find("</table>").unwrap()];
        assert!(k.contains(
            "<th>Client</th><th>Local port</th><th>Inode</th><th>Holder PID</th>\
             <th>Holder command</th><th>Closed</th>"
        ));
        // The hostile command name is escaped.
        assert!(k.contains(
            "<tr class=\"cw\"><td>198.51.100.9:1234\n&lt;b&gt;</td><td class=\"n\">80</td>\
             <td class=\"n\">987654</td><td class=\"n\">4242</td>\
             <td><code>&lt;x&gt;&quot;\n</code></td><td>no</td></tr>"
        ));
        assert!(k.contains("<td class=\"n\">unknown</td><td>-</td><td>no</td></tr>"));
        assert!(!p.contains("<x>"));
        assert!(p.contains("2 tracked, 1 untracked, 2 leaked, 3 backlog."));
        assert!(p.contains(
            "<p class=\"hung\" id=\"backlog-now\">3 sockets never accepted: clients gave up \
             while every worker was busy (a capacity problem, see Kernel view)</p>"
        ));
        assert!(p.contains("id=\"leaked-now\">2 leaked sockets held outside Apache"));
        // A closed one is no longer highlighted.
        let mut s = fixture::snapshot();
        s.kernel.leaked[0].closed = true;
        let p = render_q(&s, "");
        assert!(p.contains("<tr><td>198.51.100.9:1234\n&lt;b&gt;</td>"));
        assert!(p.contains("</code></td><td>yes</td></tr>"));
        // Nothing to say when there is no backlog.
        let empty = render_q(&Default::default(), "");
        assert!(!empty.contains("backlog-now") && !empty.contains("leaked-now"));
    }

    #[test]
    fn class_column_and_force_closed_row() {
        let p = page();
        assert!(p.contains(
            "<th>In CLOSE_WAIT (s)</th><th>Class</th><th>Abandoned</th><th>Requests</th>"
        ));
        let rows = conn_rows(&p);
        assert!(rows[0].contains("<td class=\"n\">45.5</td><td>stuck</td>"));
        assert!(rows[1].contains("<td class=\"n\">1.2</td><td>hung</td>"));
        let fc: Vec<&String> = rows.iter().filter(|r| r.contains("force-closed")).collect();
        assert_eq!(fc.len(), 1);
        let fc = fc[0];
        assert!(fc.starts_with(" class=\"fc\">"), "{fc}");
        assert!(fc.contains("<td>force-closed (handler still running)</td>"));
        assert!(fc.contains("<td class=\"n\">-</td><td>-</td>"));
        assert!(fc.contains("<code class=\"short\">/export/&lt;all&gt;&amp;&quot;csv&quot;</code>"));
        assert!(!p.contains("<all>"));
        assert!(p.contains("tr.fc td{background:"));
        assert!(p.contains("<dt>Force-closed, handler still running: 1</dt>"));
        // Every row has as many cells as the header.
        for r in &rows {
            assert_eq!(r.matches("<td").count(), 12, "{r}");
        }
    }

    #[test]
    fn short_paths_are_kept_whole() {
        // Seen at 1366 px: with every path breakable anywhere, the table squeezed the Path
        // column first and /cgi-bin/slow wrapped in every row. Up to 20 characters (not
        // bytes: the width is in characters) a path does not wrap; longer ones still may.
        let page_with = |path: &str| {
            let mut s = fixture::snapshot();
            s.connections[0].path = path.to_string();
            render_q(&s, "")
        };
        let twenty = "/cgi-bin/slow?abcdef";
        assert!(page_with(twenty).contains(&format!("<code class=\"short\">{}</code>", e(twenty))));
        let accented = "/caf\u{e9}/\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}";
        assert_eq!(accented.chars().count(), 19);
        assert!(page_with(accented).contains(&format!("<code class=\"short\">{accented}</code>")));
        let long = "/cgi-bin/slow?abcdefg";
        assert!(page_with(long).contains(&format!("<code>{}</code>", e(long))));
        assert!(page().contains(
            "code{white-space:pre-wrap;word-break:break-all}code.short{white-space:pre}"
        ));
    }

    #[test]
    fn abandoned_column_rows_and_summary() {
        let p = render_q(&fixture::with_abandoned(), "");
        let rows = conn_rows(&p);
        assert_eq!(rows.len(), 6);
        // CLOSE_WAIT rows first (the hostile one is abandoned too), then the abandoned ones
        // with their method and path, then the rest.
        assert!(
            rows[0].contains("<td>stuck</td><td>15 s (CGI SIGKILL)</td>"),
            "{}",
            rows[0]
        );
        assert!(rows[1].contains("/cw-short") && rows[1].contains("<td>hung</td><td></td>"));
        assert!(rows[2].starts_with(" class=\"fc\">"), "{}", rows[2]);
        assert!(
            rows[2].contains("<td>-</td><td>12.3 s (CGI SIGTERM)</td>"),
            "{}",
            rows[2]
        );
        assert!(rows[2]
            .contains("<td>GET</td><td><code class=\"short\">/cgi-bin/&lt;slow&gt;&amp;&quot;x&quot;</code></td>"));
        assert!(rows[3].starts_with(" class=\"ab\">") && rows[3].contains("<td>keepalive</td>"));
        assert!(rows[3].contains("<td>-</td><td>2 s</td>"), "{}", rows[3]);
        assert!(rows[4].starts_with('>') && rows[4].contains("<td>handling</td>"));
        assert!(rows[4].contains("<td>-</td><td></td>"));
        for r in &rows {
            assert_eq!(r.matches("<td").count(), 12, "{r}");
        }
        assert!(!p.contains("<slow>"));
        assert!(p.contains("<dt>Abandoned handlers now: 2</dt>"));
        assert!(p.contains("<dt>Abandoned work stopped: 17 CGI, 19 children</dt>"));
        assert!(p.contains("<dt>Graceful deadline: 30 s</dt>"));
        assert!(p.contains(
            "<p class=\"hung\" id=\"abandoned-now\">2 abandoned handlers still running for a \
             client that is gone (see Connections)</p>"
        ));
        assert!(!page().contains("id=\"abandoned-now\""));
        assert!(page().contains("<dt>Abandoned handlers now: 0</dt>"));
        let mut s = fixture::snapshot();
        s.graceful_deadline_ms = 0;
        s.totals.stopped_child = 1;
        let p = render_q(&s, "");
        assert!(p.contains("<dt>Graceful deadline: Off</dt>"));
        assert!(p.contains("<dt>Abandoned work stopped: 17 CGI, 1 child</dt>"));
    }

    #[test]
    fn vhost_abandoned_timeout_and_stopped_columns() {
        let p = page();
        let v = &p[p.find("<h2>Virtual hosts</h2>").unwrap()..];
        let v = &v[..v.find("</table>").unwrap()];
        assert!(v.contains(
            "<th>Reported</th><th>Abandoned timeout</th><th>Stopped (CGI / child)</th></tr>"
        ));
        // Off when 0; otherwise seconds.
        assert!(v.contains(
            "<td class=\"n\">0</td><td class=\"n\">Off</td><td class=\"n\">0 / 0</td></tr>"
        ));
        assert!(v.contains(
            "<td class=\"n\">5</td><td class=\"n\">2.5 s</td><td class=\"n\">14 / 3</td></tr>"
        ));
    }

    #[test]
    fn scanner_line() {
        let p = page();
        assert!(p.contains(
            "<p id=\"scanner\">Scanner: pid 101, 77 scans (2 failed, 15 full); the last scan \
             took 140 &micro;s (3 lookups), 0.3 s ago.</p>"
        ));
        assert!(p.contains("<dt>Full scan interval: 5 s</dt>"), "{p}");
        let mut full = fixture::snapshot();
        full.scanner.last_scan_full = true;
        assert!(render_q(&full, "").contains("(a full dump of the listening ports)"));
        let mut s = fixture::snapshot();
        s.kernel.available = false;
        assert!(render_q(&s, "").contains("Scanner: pid 101"));
        assert!(render_q(&Default::default(), "").contains("Scanner: no child has scanned yet."));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(0), "0 seconds");
        assert_eq!(human_duration(61), "1 minute 1 second");
        assert_eq!(human_duration(86_400 * 2), "2 days");
    }
}
