//! `?metrics`: Prometheus text exposition format 0.0.4.
//!
//! Every family gets `# HELP` and `# TYPE` lines; all names start with `socket_guard_`.
//! Label values from config or the network go through `escape::prom_label`, so a sample
//! always stays on one line. Per-connection data is left out on purpose: one series per
//! client would explode a Prometheus server's cardinality.

use std::fmt::Write;

use super::auto::force_closed_held;
use super::escape::{float, ms_as_secs, prom_label};
use super::model::{ChildRow, CloseWaitClass, ShownState, Snapshot, Verdict, VhostRow};
use super::{open_in, vhost_label};

pub(super) const P: &str = "socket_guard_";

/// Writes the `# HELP` / `# TYPE` header of one family. Help texts are our own constants,
/// written without backslashes or newlines, so they need no escaping.
pub(super) fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {P}{name} {help}");
    let _ = writeln!(o, "# TYPE {P}{name} {kind}");
}

/// One family with a single unlabelled sample.
fn scalar(o: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(o, name, kind, help);
    let _ = writeln!(o, "{P}{name} {value}");
}

/// Vhost rows merged by their "name:port" label. Two rows with the same label (e.g. a
/// duplicated ServerName) would otherwise emit duplicate series, which Prometheus rejects;
/// summing keeps the totals right.
fn vhosts_by_label(s: &Snapshot) -> Vec<(String, VhostRow)> {
    let mut out: Vec<(String, VhostRow)> = Vec::new();
    for v in &s.vhosts {
        let label = prom_label(&vhost_label(v));
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, acc)) => {
                acc.accepted += v.accepted;
                acc.open += v.open;
                acc.close_wait_now += v.close_wait_now;
                acc.force_closed_guard += v.force_closed_guard;
                acc.force_closed_rescue += v.force_closed_rescue;
                acc.reported += v.reported;
                acc.stopped_cgi += v.stopped_cgi;
                acc.stopped_child += v.stopped_child;
            }
            None => out.push((label, v.clone())),
        }
    }
    out
}

pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(4096);
    let vhosts = vhosts_by_label(s);
    connections(&mut o, s);
    flow(&mut o, s);
    outcomes(&mut o, &vhosts);
    table(&mut o, s);
    kernel(&mut o, s);
    histogram(&mut o, s);
    vhost_rows(&mut o, &vhosts);
    server(&mut o, s);
    children(&mut o, s);
    super::metrics_leaks::render(&mut o, s);
    o
}

/// Reads one number of a vhost row.
type VhostValue<T> = fn(&VhostRow) -> T;

/// A family with one sample per vhost, labelled `vhost`.
fn per_vhost<D: std::fmt::Display>(
    o: &mut String,
    vhosts: &[(String, VhostRow)],
    (name, kind, help): (&str, &str, &str),
    value: impl Fn(&VhostRow) -> D,
) {
    family(o, name, kind, help);
    for (l, v) in vhosts {
        let _ = writeln!(o, "{P}{name}{{vhost=\"{l}\"}} {}", value(v));
    }
}

/// A counter family with two samples per vhost, told apart by label `key`.
fn per_vhost_split(
    o: &mut String,
    vhosts: &[(String, VhostRow)],
    (name, help): (&str, &str),
    key: &str,
    parts: [(&str, VhostValue<u64>); 2],
) {
    family(o, name, "counter", help);
    for (l, v) in vhosts {
        for (part, value) in parts {
            let _ = writeln!(
                o,
                "{P}{name}{{vhost=\"{l}\",{key}=\"{part}\"}} {}",
                value(v)
            );
        }
    }
}

/// A gauge family with one sample per child, labelled `pid`.
fn per_child<D: std::fmt::Display>(
    o: &mut String,
    s: &Snapshot,
    (name, help): (&str, &str),
    value: impl Fn(&ChildRow) -> D,
) {
    family(o, name, "gauge", help);
    for c in &s.children {
        let _ = writeln!(o, "{P}{name}{{pid=\"{}\"}} {}", c.pid, value(c));
    }
}

/// Connections by state, force-closed ones included.
fn connections(o: &mut String, s: &Snapshot) {
    family(
        o,
        "connections",
        "gauge",
        "Connections by lifecycle state: the open states, plus force_closed ones the guard \
         shut down whose handler still runs.",
    );
    for st in ShownState::OPEN {
        let _ = writeln!(
            o,
            "{P}connections{{state=\"{}\"}} {}",
            st.name(),
            open_in(&s.totals, st)
        );
    }
    // Not an open state, so not in `open_by_state`: counted from the rows.
    let _ = writeln!(
        o,
        "{P}connections{{state=\"{}\"}} {}",
        ShownState::ForceClosed.name(),
        force_closed_held(s)
    );
}

/// Several unlabelled families: (name, type, help, value).
fn scalars(o: &mut String, rows: &[(&str, &str, &str, String)]) {
    for (name, kind, help, value) in rows {
        scalar(o, name, kind, help, value);
    }
}

/// Server-wide connection counters.
fn flow(o: &mut String, s: &Snapshot) {
    let t = &s.totals;
    scalars(
        o,
        &[
            (
                "accepted_total",
                "counter",
                "Connections accepted.",
                t.accepted.to_string(),
            ),
            (
                "requests_total",
                "counter",
                "Requests served.",
                t.requests.to_string(),
            ),
            (
                "closed_total",
                "counter",
                "Connections closed normally.",
                t.closed.to_string(),
            ),
            (
                "close_wait_connections",
                "gauge",
                "Tracked connections the kernel shows in CLOSE_WAIT now.",
                t.close_wait_now.to_string(),
            ),
        ],
    );
}

/// Per vhost: what the guard did to CLOSE_WAIT connections and abandoned work.
fn outcomes(o: &mut String, vhosts: &[(String, VhostRow)]) {
    per_vhost_split(
        o,
        vhosts,
        (
            "force_closed_total",
            "CLOSE_WAIT connections shut down, by the in-child guard or the parent rescue.",
        ),
        "by",
        [
            ("guard", |v| v.force_closed_guard),
            ("rescue", |v| v.force_closed_rescue),
        ],
    );
    per_vhost(
        o,
        vhosts,
        (
            "reported_total",
            "counter",
            "CLOSE_WAIT connections reported (AutoClose Report).",
        ),
        |v| v.reported,
    );
    per_vhost_split(
        o,
        vhosts,
        (
            "stopped_total",
            "Abandoned work stopped: the CGI of a request whose client is gone, or a child process.",
        ),
        "what",
        [("cgi", |v| v.stopped_cgi), ("child", |v| v.stopped_child)],
    );
}

/// Abandoned handlers now, the table's own counters and its size.
fn table(o: &mut String, s: &Snapshot) {
    let t = &s.totals;
    scalars(
        o,
        &[
            (
                "abandoned_connections",
                "gauge",
                "Connections whose client is gone while their handler still runs.",
                t.abandoned_now.to_string(),
            ),
            (
                "reclaimed_total",
                "counter",
                "Slots freed by the parent after their owner died.",
                t.reclaimed.to_string(),
            ),
            (
                "untracked_total",
                "counter",
                "Connections served untracked because the table was full.",
                t.untracked.to_string(),
            ),
        ],
    );
    family(o, "slots", "gauge", "Connection table slots.");
    let _ = writeln!(o, "{P}slots{{kind=\"total\"}} {}", s.slots_total);
    let _ = writeln!(o, "{P}slots{{kind=\"used\"}} {}", s.slots_used);
}

/// The kernel's view: CLOSE_WAIT sockets by kind and class, the verdict, the oldest one.
fn kernel(o: &mut String, s: &Snapshot) {
    let k = &s.kernel;
    family(
        o,
        "kernel_close_wait",
        "gauge",
        "CLOSE_WAIT sockets on this server's listening ports as the kernel sees them.",
    );
    for (kind, n) in [
        ("tracked", k.tracked),
        ("untracked", k.untracked),
        ("leaked", k.leaked_count),
        ("backlog", k.backlog),
    ] {
        let _ = writeln!(o, "{P}kernel_close_wait{{kind=\"{kind}\"}} {n}");
    }
    family(
        o,
        "close_wait_sockets",
        "gauge",
        "Kernel CLOSE_WAIT sockets on this server's listening ports by who holds them.",
    );
    for class in CloseWaitClass::ALL {
        let _ = writeln!(
            o,
            "{P}close_wait_sockets{{class=\"{}\"}} {}",
            class.name(),
            k.count(class)
        );
    }
    // A state set, like vhost_auto_close: 1 for the current verdict, 0 for the others.
    family(
        o,
        "close_wait_verdict",
        "gauge",
        "Whether CLOSE_WAIT sockets look like normal churn or a leak (1 = current verdict).",
    );
    for verdict in [Verdict::None, Verdict::Churn, Verdict::Leak] {
        let _ = writeln!(
            o,
            "{P}close_wait_verdict{{verdict=\"{}\"}} {}",
            verdict.name(),
            u8::from(k.verdict == verdict)
        );
    }
    scalar(
        o,
        "close_wait_oldest_seconds",
        "gauge",
        "Longest time a tracked socket has been in CLOSE_WAIT now (0 if none).",
        ms_as_secs(k.oldest_close_wait_ms),
    );
    scalar(
        o,
        "kernel_view_available",
        "gauge",
        "1 if the kernel socket view could be read.",
        u8::from(k.available),
    );
}

/// Per-vhost numbers and settings.
fn vhost_rows(o: &mut String, vhosts: &[(String, VhostRow)]) {
    let families: [(&str, &str, &str, VhostValue<String>); 5] = [
        (
            "vhost_accepted_total",
            "counter",
            "Connections accepted per virtual host.",
            |v| v.accepted.to_string(),
        ),
        (
            "vhost_open_connections",
            "gauge",
            "Open connections per virtual host.",
            |v| v.open.to_string(),
        ),
        (
            "vhost_close_wait_connections",
            "gauge",
            "Connections in CLOSE_WAIT now per virtual host.",
            |v| v.close_wait_now.to_string(),
        ),
        (
            "vhost_close_wait_timeout_seconds",
            "gauge",
            "SocketGuardCloseWaitTimeout per virtual host.",
            |v| ms_as_secs(v.close_wait_timeout_ms),
        ),
        (
            "vhost_abandoned_timeout_seconds",
            "gauge",
            "SocketGuardAbandonedTimeout per virtual host (0 = Off).",
            |v| ms_as_secs(v.abandoned_timeout_ms),
        ),
    ];
    for (name, kind, help, value) in families {
        per_vhost(o, vhosts, (name, kind, help), value);
    }
    // A state set: one series per mode, 1 for the active one, so dashboards can filter on it.
    family(
        o,
        "vhost_auto_close",
        "gauge",
        "SocketGuardAutoClose mode per virtual host (1 = active mode).",
    );
    for (l, v) in vhosts {
        for mode in ["On", "Off", "Report"] {
            let on = u8::from(v.auto_close.name() == mode);
            let _ = writeln!(
                o,
                "{P}vhost_auto_close{{vhost=\"{l}\",mode=\"{mode}\"}} {on}"
            );
        }
    }
}

/// The server, its settings and the scanner.
fn server(o: &mut String, s: &Snapshot) {
    family(o, "info", "gauge", "Server and module versions; always 1.");
    let _ = writeln!(
        o,
        "{P}info{{server_version=\"{}\",mpm=\"{}\",module_version=\"{}\"}} 1",
        prom_label(&s.server_version),
        prom_label(&s.mpm),
        prom_label(&s.module_version)
    );
    let sc = &s.scanner;
    scalars(
        o,
        &[
            (
                "uptime_seconds",
                "gauge",
                "Seconds since the connection table was created.",
                s.uptime_secs.to_string(),
            ),
            (
                "restart_generation",
                "gauge",
                "Restarts the connection table has seen.",
                s.generation.to_string(),
            ),
            (
                "scan_interval_seconds",
                "gauge",
                "SocketGuardScanInterval.",
                ms_as_secs(s.scan_interval_ms),
            ),
            (
                "full_scan_interval_seconds",
                "gauge",
                "SocketGuardFullScanInterval.",
                ms_as_secs(s.full_scan_interval_ms),
            ),
            (
                "graceful_deadline_seconds",
                "gauge",
                "SocketGuardGracefulDeadline (0 = Off).",
                ms_as_secs(s.graceful_deadline_ms),
            ),
            (
                "scans_total",
                "counter",
                "Kernel CLOSE_WAIT scans run (one child scans for the whole server).",
                sc.scans.to_string(),
            ),
            (
                "scan_errors_total",
                "counter",
                "Kernel CLOSE_WAIT scans that failed.",
                sc.scan_errors.to_string(),
            ),
            (
                "last_scan_duration_seconds",
                "gauge",
                "Duration of the last scan (kernel lookups or dump, and join with the table).",
                us_as_secs(sc.last_scan_us),
            ),
            (
                "last_scan_lookups",
                "gauge",
                "Exact kernel lookups the last scan made, one per connection in flight (0 for a full dump).",
                sc.last_scan_lookups.to_string(),
            ),
            (
                "last_scan_full",
                "gauge",
                "1 if the last scan was a full dump of the listening ports, 0 for lookups.",
                u8::from(sc.last_scan_full).to_string(),
            ),
            (
                "full_scans_total",
                "counter",
                "Full dumps of the listening ports (leaked, backlog and untracked sockets).",
                sc.full_scans.to_string(),
            ),
        ],
    );
}

/// Per-child check-in age, hung flag and open connections.
fn children(o: &mut String, s: &Snapshot) {
    per_child(
        o,
        s,
        (
            "child_checkin_age_seconds",
            "Seconds since each child's guard last checked in.",
        ),
        |c| ms_as_secs(c.checkin_age_ms),
    );
    per_child(
        o,
        s,
        ("child_hung", "1 if the child's guard stopped checking in."),
        |c| u8::from(c.hung),
    );
    per_child(
        o,
        s,
        ("child_open_connections", "Open connections per child."),
        |c| c.open,
    );
}

/// Microseconds as seconds, exact (no float rounding): 140 -> "0.00014".
fn us_as_secs(us: u64) -> String {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        whole.to_string()
    } else {
        let f = format!("{:06}", frac);
        format!("{}.{}", whole, f.trim_end_matches('0'))
    }
}

/// Prometheus buckets are cumulative; the model's counts are per bucket, so they are summed
/// here. The +Inf bucket is the total count, whatever the model's shape.
fn histogram(o: &mut String, s: &Snapshot) {
    let h = &s.close_wait_histogram;
    let name = "close_wait_seconds";
    family(
        o,
        name,
        "histogram",
        "How long sockets sat in CLOSE_WAIT before they closed.",
    );
    let mut cumulative = 0u64;
    for (i, bound) in h.bounds_secs.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        // A non-finite bound cannot be a finite bucket; its count still lands in +Inf.
        if bound.is_finite() {
            let _ = writeln!(
                o,
                "{P}{name}_bucket{{le=\"{}\"}} {cumulative}",
                float(*bound)
            );
        }
    }
    let _ = writeln!(o, "{P}{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(o, "{P}{name}_sum {}", float(h.sum_secs));
    let _ = writeln!(o, "{P}{name}_count {}", h.count());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixture;

    /// Splits a sample line into (name, labels text, value), checking its shape.
    fn sample(line: &str) -> (&str, &str, &str) {
        let (head, value) = line.rsplit_once(' ').expect(line);
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect(line)),
            None => (head, ""),
        };
        assert!(name.starts_with(P), "{line}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
        (name, labels, value)
    }

    fn find<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
        out.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample_with_a_declared_family() {
        let out = render(&fixture::snapshot());
        let mut declared: Vec<&str> = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap());
            } else if !line.starts_with("# HELP ") {
                let (name, _, _) = sample(line);
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suf| name.strip_suffix(suf).filter(|b| declared.contains(b)))
                    .unwrap_or(name);
                assert!(declared.contains(&base), "undeclared family: {line}");
            }
        }
        // Every family also has HELP.
        for name in &declared {
            assert!(out.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn hostile_vhost_label_stays_on_one_line() {
        let out = render(&fixture::snapshot());
        let lines = find(&out, "socket_guard_reported_total{");
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"socket_guard_reported_total{vhost="evil <b>\"host\"</b>\\\nSlotsTotal: 0:80"} 0"#
        );
        assert_eq!(
            lines[1],
            r#"socket_guard_reported_total{vhost="www.example.com:443"} 5"#
        );
        // The escaped newline did not start a line of its own.
        assert!(!out.lines().any(|l| l.starts_with("SlotsTotal")));
        let info = find(&out, "socket_guard_info{");
        assert_eq!(info.len(), 1);
        assert!(info[0].contains(r#"server_version="Apache/2.4.99 (Test)\nEvil: 1""#));
    }

    #[test]
    fn required_series_have_the_snapshot_values() {
        let out = render(&fixture::snapshot());
        for expected in [
            "socket_guard_connections{state=\"close_wait\"} 2",
            "socket_guard_connections{state=\"closing\"} 0",
            "socket_guard_accepted_total 1000",
            "socket_guard_requests_total 5000",
            "socket_guard_closed_total 990",
            "socket_guard_close_wait_connections 2",
            "socket_guard_force_closed_total{vhost=\"www.example.com:443\",by=\"guard\"} 1",
            "socket_guard_force_closed_total{vhost=\"www.example.com:443\",by=\"rescue\"} 1",
            "socket_guard_reclaimed_total 11",
            "socket_guard_untracked_total 13",
            "socket_guard_slots{kind=\"total\"} 1024",
            "socket_guard_slots{kind=\"used\"} 4",
            "socket_guard_kernel_close_wait{kind=\"tracked\"} 2",
            "socket_guard_kernel_close_wait{kind=\"untracked\"} 1",
            "socket_guard_kernel_close_wait{kind=\"leaked\"} 2",
            "socket_guard_uptime_seconds 93784",
            "socket_guard_restart_generation 2",
            "socket_guard_scan_interval_seconds 1",
            "socket_guard_full_scan_interval_seconds 5",
            "socket_guard_child_checkin_age_seconds{pid=\"101\"} 0.25",
            "socket_guard_child_hung{pid=\"102\"} 1",
            "socket_guard_vhost_accepted_total{vhost=\"www.example.com:443\"} 400",
            "socket_guard_vhost_open_connections{vhost=\"www.example.com:443\"} 2",
            "socket_guard_vhost_auto_close{vhost=\"www.example.com:443\",mode=\"Report\"} 1",
            "socket_guard_vhost_close_wait_timeout_seconds{vhost=\"www.example.com:443\"} 0.5",
        ] {
            assert!(
                out.lines().any(|l| l == expected),
                "missing: {expected}\n{out}"
            );
        }
        // The five open states plus force_closed.
        assert_eq!(find(&out, "socket_guard_connections{").len(), 6);
    }

    #[test]
    fn connections_include_force_closed() {
        let s = fixture::snapshot();
        let out = render(&s);
        let states: Vec<&str> = find(&out, "socket_guard_connections{")
            .into_iter()
            .map(|l| sample(l).1)
            .collect();
        assert_eq!(
            states,
            [
                "state=\"reading\"",
                "state=\"handling\"",
                "state=\"keepalive\"",
                "state=\"closing\"",
                "state=\"close_wait\"",
                "state=\"force_closed\"",
            ]
        );
        assert!(out.contains("\nsocket_guard_connections{state=\"force_closed\"} 1\n"));
        // The open states still sum to the open total; force_closed is not open.
        let open: u64 = find(&out, "socket_guard_connections{")
            .into_iter()
            .map(sample)
            .filter(|(_, l, _)| *l != "state=\"force_closed\"")
            .map(|(_, _, v)| v.parse::<u64>().unwrap())
            .sum();
        assert_eq!(open, s.totals.open());
        let empty = render(&Default::default());
        assert!(empty.contains("\nsocket_guard_connections{state=\"force_closed\"} 0\n"));
    }

    #[test]
    fn close_wait_classes_all_six_series() {
        let s = fixture::snapshot();
        let out = render(&s);
        let series = find(&out, "socket_guard_close_wait_sockets{");
        assert_eq!(
            series,
            [
                "socket_guard_close_wait_sockets{class=\"stuck\"} 1",
                "socket_guard_close_wait_sockets{class=\"hung\"} 1",
                "socket_guard_close_wait_sockets{class=\"old_generation\"} 0",
                "socket_guard_close_wait_sockets{class=\"leaked\"} 2",
                "socket_guard_close_wait_sockets{class=\"backlog\"} 3",
                "socket_guard_close_wait_sockets{class=\"untracked\"} 1",
            ]
        );
        let sum: u64 = series
            .iter()
            .map(|l| sample(l).2.parse::<u64>().unwrap())
            .sum();
        let k = &s.kernel;
        assert_eq!(sum, k.tracked + k.untracked + k.leaked_count + k.backlog);
        let out = render(&fixture::with_distinct_classes());
        for expected in [
            "socket_guard_close_wait_sockets{class=\"stuck\"} 5",
            "socket_guard_close_wait_sockets{class=\"hung\"} 6",
            "socket_guard_close_wait_sockets{class=\"old_generation\"} 7",
            "socket_guard_close_wait_sockets{class=\"untracked\"} 8",
            "socket_guard_close_wait_sockets{class=\"leaked\"} 9",
            "socket_guard_close_wait_sockets{class=\"backlog\"} 10",
            "socket_guard_kernel_close_wait{kind=\"leaked\"} 9",
            "socket_guard_kernel_close_wait{kind=\"backlog\"} 10",
        ] {
            assert!(out.lines().any(|l| l == expected), "missing: {expected}");
        }
        // All six even when nothing is in CLOSE_WAIT.
        let empty = render(&Default::default());
        assert_eq!(find(&empty, "socket_guard_close_wait_sockets{").len(), 6);
        assert_eq!(find(&empty, "socket_guard_kernel_close_wait{").len(), 4);
    }

    #[test]
    fn kernel_close_wait_has_the_four_kinds() {
        let out = render(&fixture::snapshot());
        assert_eq!(
            find(&out, "socket_guard_kernel_close_wait{"),
            [
                "socket_guard_kernel_close_wait{kind=\"tracked\"} 2",
                "socket_guard_kernel_close_wait{kind=\"untracked\"} 1",
                "socket_guard_kernel_close_wait{kind=\"leaked\"} 2",
                "socket_guard_kernel_close_wait{kind=\"backlog\"} 3",
            ]
        );
        // Holders are not labels: one series per leaked socket would be unbounded.
        assert!(!out.contains("4242") && !out.contains("<x>"));
    }

    #[test]
    fn verdict_is_a_state_set_with_exactly_one_1() {
        for (verdict, name) in [
            (Verdict::None, "none"),
            (Verdict::Churn, "churn"),
            (Verdict::Leak, "leak"),
        ] {
            let mut s = fixture::snapshot();
            s.kernel.verdict = verdict;
            let out = render(&s);
            let series: Vec<(&str, &str)> = find(&out, "socket_guard_close_wait_verdict{")
                .into_iter()
                .map(|l| {
                    let (_, labels, v) = sample(l);
                    (labels, v)
                })
                .collect();
            assert_eq!(series.len(), 3, "{out}");
            let ones: Vec<&str> = series
                .iter()
                .filter(|(_, v)| *v == "1")
                .map(|(l, _)| *l)
                .collect();
            assert_eq!(ones, [format!("verdict=\"{name}\"")]);
            assert!(series.iter().all(|(_, v)| *v == "0" || *v == "1"));
        }
    }

    #[test]
    fn oldest_and_scanner_series() {
        let out = render(&fixture::snapshot());
        for expected in [
            "socket_guard_close_wait_oldest_seconds 45.5",
            "socket_guard_scans_total 77",
            "socket_guard_scan_errors_total 2",
            "socket_guard_last_scan_duration_seconds 0.00014",
            "socket_guard_last_scan_lookups 3",
            "socket_guard_last_scan_full 0",
            "socket_guard_full_scans_total 15",
            "# TYPE socket_guard_full_scans_total counter",
            "# TYPE socket_guard_last_scan_lookups gauge",
            "# TYPE socket_guard_scans_total counter",
            "# TYPE socket_guard_scan_errors_total counter",
            "# TYPE socket_guard_last_scan_duration_seconds gauge",
            "# TYPE socket_guard_close_wait_oldest_seconds gauge",
            "# TYPE socket_guard_close_wait_sockets gauge",
            "# TYPE socket_guard_close_wait_verdict gauge",
        ] {
            assert!(
                out.lines().any(|l| l == expected),
                "missing: {expected}\n{out}"
            );
        }
        assert_eq!(us_as_secs(0), "0");
        assert_eq!(us_as_secs(1), "0.000001");
        assert_eq!(us_as_secs(2_500_000), "2.5");
    }

    #[test]
    fn histogram_is_cumulative_and_inf_equals_count() {
        let out = render(&fixture::snapshot());
        let buckets: Vec<(String, u64)> = find(&out, "socket_guard_close_wait_seconds_bucket")
            .into_iter()
            .map(|l| {
                let (_, labels, v) = sample(l);
                (labels.to_string(), v.parse().unwrap())
            })
            .collect();
        assert_eq!(
            buckets,
            vec![
                ("le=\"0.1\"".to_string(), 2),
                ("le=\"1\"".to_string(), 5),
                ("le=\"30\"".to_string(), 6),
                ("le=\"+Inf\"".to_string(), 10),
            ]
        );
        assert!(out.contains("\nsocket_guard_close_wait_seconds_count 10\n"));
        assert!(out.contains("\nsocket_guard_close_wait_seconds_sum 321.5\n"));
    }

    #[test]
    fn duplicate_vhost_labels_are_merged() {
        let mut s = fixture::snapshot();
        let dup = s.vhosts[1].clone();
        s.vhosts.push(dup);
        let out = render(&s);
        let lines = find(
            &out,
            "socket_guard_reported_total{vhost=\"www.example.com:443\"}",
        );
        assert_eq!(
            lines,
            vec!["socket_guard_reported_total{vhost=\"www.example.com:443\"} 10"]
        );
    }

    #[test]
    fn stopped_total_and_abandoned_connections() {
        let out = render(&fixture::with_abandoned());
        assert_eq!(
            find(&out, "socket_guard_stopped_total{"),
            [
                r#"socket_guard_stopped_total{vhost="evil <b>\"host\"</b>\\\nSlotsTotal: 0:80",what="cgi"} 0"#,
                r#"socket_guard_stopped_total{vhost="evil <b>\"host\"</b>\\\nSlotsTotal: 0:80",what="child"} 0"#,
                r#"socket_guard_stopped_total{vhost="www.example.com:443",what="cgi"} 14"#,
                r#"socket_guard_stopped_total{vhost="www.example.com:443",what="child"} 3"#,
            ]
        );
        for expected in [
            "# TYPE socket_guard_stopped_total counter",
            "# TYPE socket_guard_abandoned_connections gauge",
            "socket_guard_abandoned_connections 2",
            "socket_guard_graceful_deadline_seconds 30",
            "socket_guard_vhost_abandoned_timeout_seconds{vhost=\"www.example.com:443\"} 2.5",
        ] {
            assert!(
                out.lines().any(|l| l == expected),
                "missing: {expected}\n{out}"
            );
        }
        assert!(out.contains("# HELP socket_guard_stopped_total "));
        // Duplicated labels are summed, like the other per-vhost counters.
        let mut s = fixture::snapshot();
        let dup = s.vhosts[1].clone();
        s.vhosts.push(dup);
        let out = render(&s);
        assert!(out
            .lines()
            .any(|l| l
                == r#"socket_guard_stopped_total{vhost="www.example.com:443",what="child"} 6"#));
        let empty = render(&Default::default());
        assert!(empty.contains("\nsocket_guard_abandoned_connections 0\n"));
        assert!(empty.contains("\nsocket_guard_graceful_deadline_seconds 0\n"));
    }

    #[test]
    fn per_vhost_and_per_child_series_carry_their_own_values() {
        let mut s = fixture::snapshot();
        let v = &mut s.vhosts[1];
        (v.force_closed_guard, v.force_closed_rescue) = (3, 4);
        (v.close_wait_now, v.reported) = (5, 7);
        (s.children[0].open, s.children[1].open) = (6, 8);
        let out = render(&s);
        for expected in [
            "socket_guard_force_closed_total{vhost=\"www.example.com:443\",by=\"guard\"} 3",
            "socket_guard_force_closed_total{vhost=\"www.example.com:443\",by=\"rescue\"} 4",
            "socket_guard_vhost_close_wait_connections{vhost=\"www.example.com:443\"} 5",
            "socket_guard_reported_total{vhost=\"www.example.com:443\"} 7",
            "socket_guard_child_open_connections{pid=\"101\"} 6",
            "socket_guard_child_open_connections{pid=\"102\"} 8",
        ] {
            assert!(
                out.lines().any(|l| l == expected),
                "missing: {expected}\n{out}"
            );
        }
    }

    #[test]
    fn empty_snapshot_still_parses() {
        let out = render(&Default::default());
        assert!(out.contains("socket_guard_close_wait_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(out.contains("socket_guard_kernel_view_available 0\n"));
    }
}
