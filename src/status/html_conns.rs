//! The HTML page's connection tables: every row that needs attention, near the top, and a
//! bounded, pageable, filterable list of the others, with links that keep the query's other
//! parameters. It draws what `select` chose and nothing else; counts come from the
//! selection, so "showing X of Y" is what the tables hold.

use std::fmt::Write;

use super::escape::{html as e, ms_as_secs};
use super::html::{num, plural, row, table_head, txt};
use super::links::{args, at_offset, everything};
use super::model::{CloseWaitClass, ConnRow, Snapshot};
use super::query::{Filter, Query, Start};
use super::select::{state_counts, Selection};
use super::vhost_label;
use crate::status::model::ShownState;

const HEADERS: [&str; 12] = [
    "PID",
    "Client",
    "Local port",
    "VHost",
    "State",
    "Age (s)",
    "In CLOSE_WAIT (s)",
    "Class",
    "Abandoned",
    "Requests",
    "Method",
    "Path",
];

/// The "Needs attention" section: in CLOSE_WAIT, force-closed or rescued, abandoned. All of
/// them, on every page.
pub fn attention(o: &mut String, sel: &Selection, q: &Query) {
    o.push_str("<h2 id=\"attention\">Needs attention</h2>\n");
    let scope = if q.filter.is_empty() {
        String::new()
    } else {
        format!(" matching the filter ({})", describe(&q.filter))
    };
    let n = sel.attention.len() as u64;
    if n == 0 {
        let _ = writeln!(
            o,
            "<p id=\"attention-count\">No connection in CLOSE_WAIT, force-closed, rescued or \
             abandoned{scope}.</p>"
        );
        return;
    }
    let _ = writeln!(
        o,
        "<p id=\"attention-count\">{} in CLOSE_WAIT, force-closed, rescued or abandoned{scope}: \
         all listed, most urgent first.</p>",
        plural(n, "connection", "connections")
    );
    table(o, &sel.attention);
}

/// The "Connections" section: what the page shows of how many, the links to page and
/// filter, and the bounded table of the other connections.
pub fn listing(o: &mut String, s: &Snapshot, sel: &Selection, q: &Query) {
    o.push_str("<h2 id=\"connections\">Connections</h2>\n");
    if sel.total == 0 {
        o.push_str("<p id=\"conn-shown\">No open connections.</p>\n");
        return;
    }
    shown(o, sel, q);
    nav(o, sel, q);
    state_links(o, s, q);
    vhost_links(o, s, q);
    form(o, q);
    if sel.others.is_empty() {
        o.push_str("<p id=\"conn-none\">No other connections on this page.</p>\n");
    } else {
        table(o, &sel.others);
    }
}

/// "vhost=a.test, state=keepalive" (escaped), or "none".
fn describe(f: &Filter) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &f.vhost {
        parts.push(format!("vhost={}", e(v)));
    }
    if !f.states.is_empty() {
        let names: Vec<&str> = f.states.iter().map(|s| s.name()).collect();
        parts.push(format!("state={}", names.join(",")));
    }
    if let Some(c) = &f.client {
        parts.push(format!("client={}", e(&c.text)));
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

fn shown(o: &mut String, sel: &Selection, q: &Query) {
    let mut text = format!(
        "Showing {} of {} (filter: {})",
        sel.shown(),
        plural(sel.matching() as u64, "connection", "connections"),
        describe(&q.filter)
    );
    if !q.filter.is_empty() {
        let _ = write!(text, ", {} in all", sel.total);
    }
    let _ = write!(
        text,
        ": {} that need attention (above) and {} of the other {}, oldest first",
        sel.attention.len(),
        sel.others.len(),
        sel.others_matching
    );
    if !sel.others.is_empty() {
        let _ = write!(
            text,
            " (#{}\u{2013}#{})",
            sel.offset + 1,
            sel.offset + sel.others.len()
        );
    }
    let _ = writeln!(o, "<p id=\"conn-shown\">{text}.</p>");
}

/// `<a href="?...">text</a>`; `text` is trusted markup, the query is encoded and escaped.
fn link(q: &Query, text: &str) -> String {
    format!("<a href=\"?{}\">{text}</a>", e(&args(q)))
}

fn nav(o: &mut String, sel: &Selection, q: &Query) {
    let mut items = Vec::new();
    let step = sel.limit.unwrap_or(0);
    if let Some(p) = sel.prev_offset() {
        items.push(link(&at_offset(q, p), &format!("&laquo; previous {step}")));
    }
    if let Some(n) = sel.next_offset() {
        let left = (sel.others_matching - n).min(step);
        items.push(link(&at_offset(q, n), &format!("next {left} &raquo;")));
    }
    if sel.truncated() {
        items.push(link(
            &everything(q),
            &format!("show all {} (large)", sel.matching()),
        ));
    }
    if items.is_empty() {
        return;
    }
    let _ = writeln!(o, "<p id=\"conn-nav\">{}</p>", items.join(" &middot; "));
}

/// `q` with another filter, from the first page.
fn refiltered(q: &Query, f: Filter) -> Query {
    Query {
        filter: f,
        start: Start::First,
        ..q.clone()
    }
}

fn state_links(o: &mut String, s: &Snapshot, q: &Query) {
    let mut items = vec![link(
        &refiltered(
            q,
            Filter {
                states: Vec::new(),
                ..q.filter.clone()
            },
        ),
        "show all states",
    )];
    for (st, n) in state_counts(s) {
        let f = Filter {
            states: vec![st],
            ..q.filter.clone()
        };
        items.push(format!("{} ({n})", link(&refiltered(q, f), st.name())));
    }
    let _ = writeln!(
        o,
        "<p id=\"conn-states\">State: {}</p>",
        items.join(" &middot; ")
    );
}

fn vhost_links(o: &mut String, s: &Snapshot, q: &Query) {
    let mut items = vec![link(
        &refiltered(
            q,
            Filter {
                vhost: None,
                ..q.filter.clone()
            },
        ),
        "all vhosts",
    )];
    for v in &s.vhosts {
        let label = vhost_label(v);
        let f = Filter {
            vhost: Some(label.clone()),
            ..q.filter.clone()
        };
        items.push(format!(
            "{} ({} open)",
            link(&refiltered(q, f), &e(&label)),
            v.open
        ));
    }
    let _ = writeln!(
        o,
        "<p id=\"conn-vhosts\">VHost: {}</p>",
        items.join(" &middot; ")
    );
}

/// A plain GET form (no script): empty fields are no filter.
fn form(o: &mut String, q: &Query) {
    let f = &q.filter;
    let states: Vec<&str> = f.states.iter().map(|s| s.name()).collect();
    let limit = q
        .limit
        .rows()
        .map_or_else(|| "all".to_string(), |n| n.to_string());
    o.push_str("<form id=\"conn-filter\" method=\"get\" action=\"\">\n");
    if let Some(n) = q.refresh {
        let _ = writeln!(o, "<input type=\"hidden\" name=\"refresh\" value=\"{n}\">");
    }
    for (name, label, value) in [
        ("vhost", "VHost", f.vhost.clone().unwrap_or_default()),
        ("state", "State", states.join(",")),
        (
            "client",
            "Client address or prefix",
            f.client
                .as_ref()
                .map_or_else(String::new, |c| c.text.clone()),
        ),
        ("limit", "Rows (1-10000 or all)", limit),
    ] {
        let _ = writeln!(
            o,
            "<label>{label} <input name=\"{name}\" value=\"{}\"></label>",
            e(&value)
        );
    }
    o.push_str("<button type=\"submit\">Filter</button>\n</form>\n");
}

fn table(o: &mut String, rows: &[&ConnRow]) {
    table_head(o, &HEADERS);
    for c in rows {
        conn_row(o, c);
    }
    o.push_str("</table>\n");
}

/// Paths of at most this many characters are never wrapped (see `path_cell`).
const SHORT_PATH: usize = 20;

/// The path in a `<code>`. A long path may wrap anywhere (the CSS's `break-all`), so one
/// hostile path cannot widen the table past the window. But a column that can shrink to a
/// single character is the one the browser squeezes first: at 1366 px, `/cgi-bin/slow`
/// wrapped as `/cgi-bin/sl` `ow` in every row. A short path is kept whole (`short`: no
/// wrap); 20 characters still leave the 12-column table narrower than a 1280 px window.
pub(super) fn path_cell(path: &str) -> (String, bool) {
    let class = if path.chars().count() <= SHORT_PATH {
        " class=\"short\""
    } else {
        ""
    };
    txt(format!("<code{class}>{}</code>", e(path)))
}

fn conn_row(o: &mut String, c: &ConnRow) {
    let in_cw = c.close_wait_ms.map_or_else(|| "-".to_string(), ms_as_secs);
    // A force-closed row stays listed while its handler runs: it names the URL that leaks.
    let (row_class, state) = match c.state {
        ShownState::CloseWait => (Some("cw"), c.state.name()),
        ShownState::ForceClosed => (Some("fc"), "force-closed (handler still running)"),
        ShownState::Rescued => (Some("fc"), c.state.name()),
        _ if c.abandoned_ms.is_some() => (Some("ab"), c.state.name()),
        _ => (None, c.state.name()),
    };
    let class = c.class.map_or("-", CloseWaitClass::name);
    // "12.3 s (CGI SIGTERM)"; empty while the client is there.
    let mut abandoned = c
        .abandoned_ms
        .map_or_else(String::new, |ms| format!("{} s", ms_as_secs(ms)));
    if let Some(stop) = c.stopped {
        if !abandoned.is_empty() {
            abandoned.push(' ');
        }
        let _ = write!(abandoned, "({})", stop.label());
    }
    row(
        o,
        row_class,
        &[
            num(c.pid),
            txt(e(&c.client)),
            num(c.local_port),
            txt(e(&c.vhost)),
            txt(state.to_string()),
            num(ms_as_secs(c.age_ms)),
            num(in_cw),
            txt(class.to_string()),
            txt(abandoned),
            num(c.requests),
            txt(e(&c.method)),
            path_cell(&c.path),
        ],
    );
}
