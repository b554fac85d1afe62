//! `?auto`: mod_status-style `Key: Value` lines for scripts and monitoring agents.
//!
//! Every line starts with a fixed ASCII key; values from the network or config pass through
//! `escape::auto_value` (or `auto_token` inside `Vhost:` lines) so they can never start a
//! line of their own.

use std::fmt::Write;

use super::escape::{auto_token, auto_value, float_fixed, ms_as_secs};
use super::model::{CloseWaitClass, Count, ShownState, Snapshot};
use super::open_in;

/// The `?auto` key for the open count of one state.
fn state_key(state: ShownState) -> &'static str {
    match state {
        ShownState::Reading => "OpenReading",
        ShownState::Handling => "OpenHandling",
        ShownState::Keepalive => "OpenKeepalive",
        ShownState::Closing => "OpenClosing",
        ShownState::CloseWait => "OpenCloseWait",
        // Not in ShownState::OPEN; never asked for.
        _ => "OpenOther",
    }
}

/// Connection rows the guard shut down whose Apache handler has not finished yet.
pub(crate) fn force_closed_held(s: &Snapshot) -> u64 {
    s.connections
        .iter()
        .filter(|c| c.state == ShownState::ForceClosed)
        .count() as u64
}

/// The `?auto` key for the kernel count of one class. `leaked`, `backlog` and `untracked`
/// are kinds as well as classes (the same number): each is written once, with the
/// tracked/untracked/leaked/backlog lines.
fn class_key(class: CloseWaitClass) -> Option<&'static str> {
    match class {
        CloseWaitClass::Stuck => Some("KernelCloseWaitStuck"),
        CloseWaitClass::Hung => Some("KernelCloseWaitHung"),
        CloseWaitClass::OldGeneration => Some("KernelCloseWaitOldGeneration"),
        CloseWaitClass::Leaked | CloseWaitClass::Backlog | CloseWaitClass::Untracked => None,
    }
}

pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(2048);
    // `write!` to a String cannot fail; the results are ignored on purpose.
    server(&mut o, s);
    totals(&mut o, s);
    kernel(&mut o, s);
    scanner(&mut o, s);
    vhosts(&mut o, s);
    children(&mut o, s);
    leaked(&mut o, s);
    leak_report(&mut o, s);
    o
}

/// The server, the table and its settings.
fn server(o: &mut String, s: &Snapshot) {
    let _ = writeln!(o, "ServerVersion: {}", auto_value(&s.server_version));
    let _ = writeln!(o, "ServerMPM: {}", auto_value(&s.mpm));
    let _ = writeln!(o, "ModuleVersion: {}", auto_value(&s.module_version));
    let _ = writeln!(o, "Uptime: {}", s.uptime_secs);
    let _ = writeln!(o, "RestartGeneration: {}", s.generation);
    let _ = writeln!(o, "SlotsTotal: {}", s.slots_total);
    let _ = writeln!(o, "SlotsUsed: {}", s.slots_used);
    let _ = writeln!(o, "ScanIntervalMs: {}", s.scan_interval_ms);
    let _ = writeln!(o, "FullScanIntervalMs: {}", s.full_scan_interval_ms);
    let _ = writeln!(o, "GracefulDeadlineMs: {}", s.graceful_deadline_ms);
}

/// Server-wide connection counters and open connections per state.
fn totals(o: &mut String, s: &Snapshot) {
    let t = &s.totals;
    let _ = writeln!(o, "Accepted: {}", t.accepted);
    let _ = writeln!(o, "Requests: {}", t.requests);
    let _ = writeln!(o, "Closed: {}", t.closed);
    let _ = writeln!(o, "Open: {}", t.open());
    for state in ShownState::OPEN {
        let _ = writeln!(o, "{}: {}", state_key(state), open_in(t, state));
    }
    let _ = writeln!(o, "CloseWaitNow: {}", t.close_wait_now);
    let _ = writeln!(o, "ForceClosedGuard: {}", t.force_closed_guard);
    let _ = writeln!(o, "ForceClosedRescue: {}", t.force_closed_rescue);
    let _ = writeln!(o, "Reported: {}", t.reported);
    let _ = writeln!(o, "Reclaimed: {}", t.reclaimed);
    let _ = writeln!(o, "Untracked: {}", t.untracked);
    let _ = writeln!(o, "StoppedCgi: {}", t.stopped_cgi);
    let _ = writeln!(o, "StoppedChild: {}", t.stopped_child);
}

/// The kernel's view: CLOSE_WAIT sockets by kind and class, the verdict.
fn kernel(o: &mut String, s: &Snapshot) {
    let k = &s.kernel;
    let view = if k.available {
        "available"
    } else {
        "unavailable"
    };
    let _ = writeln!(o, "KernelView: {}", view);
    let _ = writeln!(o, "KernelCloseWaitTracked: {}", k.tracked);
    let _ = writeln!(o, "KernelCloseWaitUntracked: {}", k.untracked);
    let _ = writeln!(o, "KernelCloseWaitLeaked: {}", k.leaked_count);
    let _ = writeln!(o, "KernelCloseWaitBacklog: {}", k.backlog);
    for class in CloseWaitClass::ALL {
        if let Some(key) = class_key(class) {
            let _ = writeln!(o, "{}: {}", key, k.count(class));
        }
    }
    let _ = writeln!(o, "CloseWaitVerdict: {}", k.verdict.name());
    let _ = writeln!(o, "OldestCloseWaitMs: {}", k.oldest_close_wait_ms);
}

/// The scanner, the guard process, abandoned work and the CLOSE_WAIT histogram's totals.
fn scanner(o: &mut String, s: &Snapshot) {
    let sc = &s.scanner;
    let _ = writeln!(o, "ScannerPid: {}", sc.pid);
    let _ = writeln!(o, "Scans: {}", sc.scans);
    let _ = writeln!(o, "ScanErrors: {}", sc.scan_errors);
    let _ = writeln!(o, "LastScanUs: {}", sc.last_scan_us);
    let _ = writeln!(o, "LastScanLookups: {}", sc.last_scan_lookups);
    let _ = writeln!(o, "LastScanFull: {}", u8::from(sc.last_scan_full));
    let _ = writeln!(o, "FullScans: {}", sc.full_scans);
    let _ = writeln!(o, "LastScanAgeMs: {}", sc.last_scan_age_ms);
    let _ = writeln!(o, "GuardProcessPid: {}", sc.guard_pid);
    let _ = writeln!(o, "GuardProcessReach: {}", sc.guard_reach);
    let _ = writeln!(o, "Rescue: {}", if sc.rescue { "On" } else { "Off" });
    let _ = writeln!(o, "ForceClosedHeld: {}", force_closed_held(s));
    let _ = writeln!(o, "AbandonedNow: {}", s.totals.abandoned_now);
    let h = &s.close_wait_histogram;
    let _ = writeln!(o, "CloseWaitSecondsCount: {}", h.count());
    let _ = writeln!(o, "CloseWaitSecondsSum: {}", float_fixed(h.sum_secs, 3));
    let _ = writeln!(
        o,
        "HistoryPeriodSeconds: {}",
        ms_as_secs(s.history.period_ms)
    );
    let _ = writeln!(o, "HistorySamples: {}", s.history.points.len());
}

/// One `Vhost:` line per vhost.
fn vhosts(o: &mut String, s: &Snapshot) {
    for v in &s.vhosts {
        let _ = writeln!(
            o,
            "Vhost: {}:{} AutoClose={} TimeoutMs={} Accepted={} Open={} CloseWait={} \
             ForceClosedGuard={} ForceClosedRescue={} Reported={} AbandonedTimeoutMs={} \
             StoppedCgi={} StoppedChild={}",
            auto_token(&v.name),
            v.port,
            v.auto_close.name(),
            v.close_wait_timeout_ms,
            v.accepted,
            v.open,
            v.close_wait_now,
            v.force_closed_guard,
            v.force_closed_rescue,
            v.reported,
            v.abandoned_timeout_ms,
            v.stopped_cgi,
            v.stopped_child
        );
    }
}

/// One `Child:` line per child.
fn children(o: &mut String, s: &Snapshot) {
    for c in &s.children {
        let _ = writeln!(
            o,
            "Child: {} Generation={} Open={} CheckinAgeMs={} Hung={}",
            c.pid,
            c.generation,
            c.open,
            c.checkin_age_ms,
            u8::from(c.hung)
        );
    }
}

/// One `Leaked:` line per leaked socket.
fn leaked(o: &mut String, s: &Snapshot) {
    // One line per leaked socket; the holder's command name is untrusted text (another
    // program chose it), so it is made a single token like a vhost name.
    for l in &s.kernel.leaked {
        let _ = writeln!(
            o,
            "Leaked: client={} port={} holder={} comm={} closed={}",
            auto_token(&l.client),
            l.local_port,
            l.holder_pid.unwrap_or(0),
            auto_token(&l.holder_comm),
            u8::from(l.closed)
        );
    }
}

/// "Count=N Error=E LastSeen=<unix seconds>" of a leak report entry.
fn count_fields(c: &Count) -> String {
    format!(
        "Count={} Error={} LastSeen={}",
        c.count,
        c.error,
        c.last_seen_unix_ms / 1_000
    )
}

/// One `LeakPath:` and one `LeakClient:` line per entry of each vhost's leak report, most
/// counted first. Method, path and vhost are untrusted text made single tokens.
fn leak_report(o: &mut String, s: &Snapshot) {
    for v in &s.leaks {
        for p in &v.paths {
            let _ = writeln!(
                o,
                "LeakPath: {} {} Method={} Path={}",
                auto_token(&v.vhost),
                count_fields(&p.count),
                auto_token(&p.method),
                auto_token(&p.path)
            );
        }
    }
    for v in &s.leaks {
        for c in &v.clients {
            let _ = writeln!(
                o,
                "LeakClient: {} {} Client={}",
                auto_token(&v.vhost),
                count_fields(&c.count),
                auto_token(&c.client)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixture;

    /// Parses the output back into (key, value) pairs, checking each line's shape.
    fn lines(out: &str) -> Vec<(String, String)> {
        assert!(out.ends_with('\n'));
        out.lines()
            .map(|l| {
                let (k, v) = l
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("bad line {l:?}"));
                assert!(
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphabetic()),
                    "{l:?}"
                );
                assert!(!l.contains(['\r', '\u{85}', '\u{2028}']), "{l:?}");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// The value of `key`, which must appear exactly once.
    fn one(kv: &[(String, String)], key: &str) -> String {
        let v = get(kv, key);
        assert_eq!(v.len(), 1, "{key}");
        v[0].to_string()
    }

    fn get<'a>(kv: &'a [(String, String)], key: &str) -> Vec<&'a str> {
        kv.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn every_line_is_key_colon_value() {
        let kv = lines(&render(&fixture::snapshot()));
        // The hostile server version and vhost name must not have produced their own keys.
        assert!(get(&kv, "Evil").is_empty());
        assert_eq!(get(&kv, "SlotsTotal"), vec!["1024"]);
    }

    #[test]
    fn counts_match_the_snapshot() {
        let s = fixture::snapshot();
        let kv = lines(&render(&s));
        let one = |k: &str| one(&kv, k);
        assert_eq!(one("ServerVersion"), "Apache/2.4.99 (Test)?Evil: 1");
        assert_eq!(one("Uptime"), "93784");
        assert_eq!(one("RestartGeneration"), "2");
        assert_eq!(one("SlotsUsed"), "4");
        assert_eq!(one("ScanIntervalMs"), "1000");
        assert_eq!(one("Accepted"), "1000");
        assert_eq!(one("Requests"), "5000");
        assert_eq!(one("Closed"), "990");
        assert_eq!(one("Open"), s.totals.open().to_string());
        assert_eq!(one("OpenReading"), "1");
        assert_eq!(one("OpenClosing"), "0");
        assert_eq!(one("OpenCloseWait"), "2");
        assert_eq!(one("CloseWaitNow"), "2");
        assert_eq!(one("ForceClosedGuard"), "7");
        assert_eq!(one("ForceClosedRescue"), "3");
        assert_eq!(one("Reported"), "5");
        assert_eq!(one("Reclaimed"), "11");
        assert_eq!(one("Untracked"), "13");
        assert_eq!(one("KernelView"), "available");
        assert_eq!(one("KernelCloseWaitTracked"), "2");
        assert_eq!(one("KernelCloseWaitUntracked"), "1");
        assert_eq!(one("KernelCloseWaitLeaked"), "2");
        assert_eq!(one("CloseWaitSecondsCount"), "10");
        assert_eq!(one("CloseWaitSecondsSum"), "321.500");
    }

    #[test]
    fn vhost_and_child_lines() {
        let kv = lines(&render(&fixture::snapshot()));
        let vh = get(&kv, "Vhost");
        assert_eq!(vh.len(), 2);
        // Name sanitized into a single token; the rest are space-separated key=value pairs.
        let first: Vec<&str> = vh[0].split(' ').collect();
        assert_eq!(first[0], "evil_<b>\"host\"</b>\\_SlotsTotal:_0:80");
        assert_eq!(first[1], "AutoClose=On");
        assert_eq!(first.len(), 12);
        assert_eq!(
            vh[1],
            "www.example.com:443 AutoClose=Report TimeoutMs=500 Accepted=400 Open=2 \
             CloseWait=0 ForceClosedGuard=1 ForceClosedRescue=1 Reported=5 \
             AbandonedTimeoutMs=2500 StoppedCgi=14 StoppedChild=3"
        );
        assert!(vh[0].ends_with(" AbandonedTimeoutMs=0 StoppedCgi=0 StoppedChild=0"));
        assert_eq!(
            get(&kv, "Child"),
            vec![
                "101 Generation=2 Open=4 CheckinAgeMs=250 Hung=0",
                "102 Generation=1 Open=1 CheckinAgeMs=60000 Hung=1"
            ]
        );
    }

    #[test]
    fn classes_verdict_scanner_and_force_closed() {
        let s = fixture::snapshot();
        let kv = lines(&render(&s));
        let one = |k: &str| one(&kv, k);
        assert_eq!(one("KernelCloseWaitStuck"), "1");
        assert_eq!(one("KernelCloseWaitHung"), "1");
        assert_eq!(one("KernelCloseWaitOldGeneration"), "0");
        // Still exactly once (the `one` helper checks), not repeated by the class lines.
        assert_eq!(one("KernelCloseWaitUntracked"), "1");
        assert_eq!(one("CloseWaitVerdict"), "leak");
        assert_eq!(one("OldestCloseWaitMs"), "45500");
        assert_eq!(one("ScannerPid"), "101");
        assert_eq!(one("Scans"), "77");
        assert_eq!(one("ScanErrors"), "2");
        assert_eq!(one("LastScanUs"), "140");
        assert_eq!(one("LastScanLookups"), "3");
        assert_eq!(one("LastScanFull"), "0");
        assert_eq!(one("FullScans"), "15");
        assert_eq!(one("FullScanIntervalMs"), "5000");
        assert_eq!(one("LastScanAgeMs"), "300");
        assert_eq!(one("ForceClosedHeld"), "1");
        // The classes split the kernel's sockets: tracked ones are stuck, hung or
        // old_generation, the rest untracked (the fixture is consistent).
        let n = |k: &str| one(k).parse::<u64>().unwrap();
        assert_eq!(
            n("KernelCloseWaitStuck")
                + n("KernelCloseWaitHung")
                + n("KernelCloseWaitOldGeneration"),
            n("KernelCloseWaitTracked")
        );
        // The class lines come right after the kinds (tracked, untracked, leaked, backlog),
        // before the histogram.
        let keys: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
        let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
        assert_eq!(
            at("KernelCloseWaitBacklog"),
            at("KernelCloseWaitLeaked") + 1
        );
        assert_eq!(at("KernelCloseWaitStuck"), at("KernelCloseWaitBacklog") + 1);
        assert!(at("ForceClosedHeld") < at("CloseWaitSecondsCount"));
    }

    #[test]
    fn each_class_has_its_own_count() {
        let s = fixture::with_distinct_classes();
        let kv = lines(&render(&s));
        assert_eq!(get(&kv, "KernelCloseWaitStuck"), vec!["5"]);
        assert_eq!(get(&kv, "KernelCloseWaitHung"), vec!["6"]);
        assert_eq!(get(&kv, "KernelCloseWaitOldGeneration"), vec!["7"]);
        assert_eq!(get(&kv, "KernelCloseWaitUntracked"), vec!["8"]);
        assert_eq!(get(&kv, "KernelCloseWaitLeaked"), vec!["9"]);
        assert_eq!(get(&kv, "KernelCloseWaitBacklog"), vec!["10"]);
        assert_eq!(get(&kv, "CloseWaitVerdict"), vec!["churn"]);
    }

    #[test]
    fn stopped_abandoned_and_graceful_deadline() {
        let kv = lines(&render(&fixture::with_abandoned()));
        let one = |k: &str| one(&kv, k);
        assert_eq!(one("StoppedCgi"), "17");
        assert_eq!(one("StoppedChild"), "19");
        // The force-closed and the CLOSE_WAIT handler; not the keep-alive row.
        assert_eq!(one("AbandonedNow"), "2");
        assert_eq!(one("GracefulDeadlineMs"), "30000");
        let keys: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
        let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
        assert_eq!(at("FullScanIntervalMs"), at("ScanIntervalMs") + 1);
        assert_eq!(at("GracefulDeadlineMs"), at("FullScanIntervalMs") + 1);
        assert_eq!(at("StoppedCgi"), at("Untracked") + 1);
        assert_eq!(at("StoppedChild"), at("StoppedCgi") + 1);
        assert_eq!(at("AbandonedNow"), at("ForceClosedHeld") + 1);
        assert_eq!(
            get(&lines(&render(&fixture::snapshot())), "AbandonedNow"),
            ["0"]
        );
    }

    #[test]
    fn abandoned_counts_from_the_table() {
        use crate::status::snapshot::{build, ServerInfo};
        use crate::table::slot::{FLAG_ABANDONED, FLAG_CGI_TERM};
        use crate::table::HeapTable;
        use std::sync::atomic::Ordering::Relaxed;

        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = t.register_vhost("cgi.test", 80);
        let row = t.vhost(v).unwrap();
        row.abandoned_timeout_ms.store(5_000, Relaxed);
        row.stopped_cgi.store(4, Relaxed);
        row.stopped_child.store(1, Relaxed);
        t.header().graceful_deadline_ms.store(45_000, Relaxed);
        t.claim_child(7, 0, 1, 1).unwrap();
        let h = heap.stuck_connection(7, v, 42, 10_000);
        let s = t.owned(h).unwrap();
        s.abandoned_since_mono_ms.store(11_000, Relaxed);
        s.flags.fetch_or(FLAG_ABANDONED | FLAG_CGI_TERM, Relaxed);
        let snap = build(Some(&t), &ServerInfo::default(), 20_000, Ok(vec![]));
        let kv = lines(&render(&snap));
        assert_eq!(get(&kv, "StoppedCgi"), ["4"], "the vhosts' sum");
        assert_eq!(get(&kv, "StoppedChild"), ["1"]);
        assert_eq!(get(&kv, "AbandonedNow"), ["1"]);
        assert_eq!(get(&kv, "GracefulDeadlineMs"), ["45000"]);
        let vh = get(&kv, "Vhost");
        assert!(
            vh[0].ends_with(" AbandonedTimeoutMs=5000 StoppedCgi=4 StoppedChild=1"),
            "{vh:?}"
        );
    }

    #[test]
    fn leaked_lines_and_backlog() {
        let mut s = fixture::snapshot();
        s.kernel.leaked[1].closed = true;
        let kv = lines(&render(&s));
        let one = |k: &str| one(&kv, k);
        assert_eq!(one("KernelCloseWaitLeaked"), "2");
        assert_eq!(one("KernelCloseWaitBacklog"), "3");
        assert_eq!(one("KernelCloseWaitUntracked"), "1");
        // The hostile comm and client stay one token each; no line of their own.
        assert_eq!(
            get(&kv, "Leaked"),
            [
                "client=198.51.100.9:1234_<b> port=80 holder=4242 comm=<x>\"_ closed=0",
                "client=[2001:db8::1]:999 port=443 holder=0 comm= closed=1",
            ]
        );
        for l in get(&kv, "Leaked") {
            let keys: Vec<&str> = l.split(' ').map(|t| t.split_once('=').unwrap().0).collect();
            assert_eq!(keys, ["client", "port", "holder", "comm", "closed"]);
        }
        // Leaked and backlog are printed once, as kinds, not again as classes.
        assert!(kv.iter().all(|(k, _)| !k.ends_with("Class")));
        let empty = lines(&render(&Default::default()));
        assert_eq!(get(&empty, "KernelCloseWaitBacklog"), ["0"]);
        assert!(get(&empty, "Leaked").is_empty());
    }

    #[test]
    fn unavailable_kernel_and_empty_snapshot() {
        let kv = lines(&render(&Default::default()));
        assert_eq!(get(&kv, "KernelView"), vec!["unavailable"]);
        // All five open states are listed even when the snapshot has none.
        assert_eq!(get(&kv, "OpenKeepalive"), vec!["0"]);
        assert_eq!(get(&kv, "CloseWaitSecondsSum"), vec!["0.000"]);
        assert_eq!(get(&kv, "CloseWaitVerdict"), vec!["none"]);
        assert_eq!(get(&kv, "ScannerPid"), vec!["0"]);
        assert_eq!(get(&kv, "ForceClosedHeld"), vec!["0"]);
        assert_eq!(get(&kv, "KernelCloseWaitHung"), vec!["0"]);
        assert_eq!(get(&kv, "StoppedCgi"), vec!["0"]);
        assert_eq!(get(&kv, "AbandonedNow"), vec!["0"]);
        assert_eq!(get(&kv, "GracefulDeadlineMs"), vec!["0"]);
    }

    #[test]
    fn leak_report_lines_one_token_per_value() {
        let kv = lines(&render(&fixture::snapshot()));
        let paths = get(&kv, "LeakPath");
        let hostile_vhost = "evil_<b>\"host\"</b>\\_SlotsTotal:_0:80";
        assert_eq!(
            paths,
            [
                format!(
                    "{hostile_vhost} Count=9 Error=4 LastSeen=1699999400 Method=POST Path=/export"
                ),
                format!(
                    "{hostile_vhost} Count=7 Error=0 LastSeen=1699999988 Method=G\"ET< \
                     Path=/<script>alert(\"x\")</script>_\"}}"
                ),
                "www.example.com:443 Count=3 Error=0 LastSeen=1699999997 Method=GET Path=/report"
                    .to_string(),
            ]
        );
        for l in &paths {
            let keys: Vec<&str> = l
                .split(' ')
                .skip(1)
                .map(|t| t.split_once('=').unwrap().0)
                .collect();
            assert_eq!(keys, ["Count", "Error", "LastSeen", "Method", "Path"]);
        }
        assert_eq!(
            get(&kv, "LeakClient"),
            [
                format!("{hostile_vhost} Count=16 Error=0 LastSeen=1699999988 Client=192.0.2.7"),
                "www.example.com:443 Count=3 Error=0 LastSeen=1699999997 Client=2001:db8::1"
                    .to_string(),
            ]
        );
        assert_eq!(one(&kv, "HistoryPeriodSeconds"), "5");
        assert_eq!(one(&kv, "HistorySamples"), "4");
        let empty = lines(&render(&Default::default()));
        assert!(get(&empty, "LeakPath").is_empty() && get(&empty, "LeakClient").is_empty());
    }
}
