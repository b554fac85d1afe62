//! The short "Socket Guard" section mod_status shows on /server-status via its status_hook.
//!
//! mod_status calls the hook with its short-report flag for `?auto` (then we give
//! `auto_lines`) and otherwise for HTML (`html_section`). Only numbers and our own fixed
//! texts (the verdict) appear here, so there is nothing client-controlled to escape. The Location of our own page is not known to us,
//! so the section carries no link to it.

use std::fmt::Write;

use super::escape::html as e;
use super::model::Snapshot;

/// An HTML fragment appended to mod_status's page.
pub fn html_section(s: &Snapshot) -> String {
    let t = &s.totals;
    let mut o = String::with_capacity(512);
    o.push_str("<hr>\n<h2>Socket Guard</h2>\n<dl>\n");
    let items = [
        format!("Slots: {} used of {}", s.slots_used, s.slots_total),
        format!("Open connections: {}", t.open()),
        format!("In CLOSE_WAIT now: {}", t.close_wait_now),
        verdict(s),
        format!(
            "Force-closed: {} by guard, {} rescued by parent",
            t.force_closed_guard, t.force_closed_rescue
        ),
        format!("Reclaimed slots: {}", t.reclaimed),
        format!("Untracked (table full): {}", t.untracked),
        format!("Abandoned handlers now: {}", t.abandoned_now),
        format!(
            "Abandoned work stopped: {} CGI, {} child",
            t.stopped_cgi, t.stopped_child
        ),
    ];
    for item in items {
        let _ = writeln!(o, "<dt>{item}</dt>");
    }
    o.push_str("</dl>\n");
    o
}

/// The verdict sentence (our own fixed text, escaped anyway).
fn verdict(s: &Snapshot) -> String {
    let k = &s.kernel;
    if k.available {
        format!(
            "CLOSE_WAIT verdict: {} &mdash; {}",
            k.verdict.name(),
            e(k.verdict.explain())
        )
    } else {
        "CLOSE_WAIT verdict: unknown (kernel view unavailable)".to_string()
    }
}

/// `Key: Value` lines appended to mod_status's `?auto` output, all prefixed `SocketGuard`.
pub fn auto_lines(s: &Snapshot) -> String {
    let t = &s.totals;
    let lines = [
        ("SlotsUsed", s.slots_used),
        ("SlotsTotal", s.slots_total),
        ("Open", t.open()),
        ("CloseWait", t.close_wait_now),
        ("ForceClosed", t.force_closed_guard + t.force_closed_rescue),
        ("Reclaimed", t.reclaimed),
        ("Untracked", t.untracked),
        ("Accepted", t.accepted),
        ("StoppedCgi", t.stopped_cgi),
        ("StoppedChild", t.stopped_child),
        ("AbandonedNow", t.abandoned_now),
    ];
    let mut o = String::with_capacity(256);
    for (key, value) in lines {
        let _ = writeln!(o, "SocketGuard{key}: {value}");
    }
    let _ = writeln!(
        o,
        "SocketGuardCloseWaitVerdict: {}",
        s.kernel.verdict.name()
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixture;

    #[test]
    fn auto_lines_are_prefixed_and_match() {
        let out = auto_lines(&fixture::snapshot());
        let expected = "SocketGuardSlotsUsed: 4\nSocketGuardSlotsTotal: 1024\nSocketGuardOpen: 5\n\
                        SocketGuardCloseWait: 2\nSocketGuardForceClosed: 10\n\
                        SocketGuardReclaimed: 11\nSocketGuardUntracked: 13\n\
                        SocketGuardAccepted: 1000\nSocketGuardStoppedCgi: 17\n\
                        SocketGuardStoppedChild: 19\nSocketGuardAbandonedNow: 0\n\
                        SocketGuardCloseWaitVerdict: leak\n";
        assert_eq!(out, expected);
        let mut s = fixture::snapshot();
        s.kernel.verdict = crate::status::model::Verdict::Churn;
        assert!(auto_lines(&s).ends_with("\nSocketGuardCloseWaitVerdict: churn\n"));
        assert!(auto_lines(&Default::default()).ends_with("\nSocketGuardCloseWaitVerdict: none\n"));
    }

    #[test]
    fn stopped_and_abandoned_in_both_parts() {
        let s = fixture::with_abandoned();
        let out = auto_lines(&s);
        assert!(out.contains("\nSocketGuardStoppedCgi: 17\nSocketGuardStoppedChild: 19\n"));
        assert!(out.contains("\nSocketGuardAbandonedNow: 2\n"));
        let html = html_section(&s);
        assert!(html.contains("<dt>Abandoned handlers now: 2</dt>"));
        assert!(html.contains("<dt>Abandoned work stopped: 17 CGI, 19 child</dt>"));
    }

    #[test]
    fn html_section_has_heading_and_numbers() {
        let out = html_section(&fixture::snapshot());
        assert!(out.starts_with("<hr>\n<h2>Socket Guard</h2>"));
        assert!(out.contains("<dt>Slots: 4 used of 1024</dt>"));
        assert!(out.contains("<dt>In CLOSE_WAIT now: 2</dt>"));
        assert!(out.contains("<dt>Force-closed: 7 by guard, 3 rescued by parent</dt>"));
        assert!(out.contains("<dt>Untracked (table full): 13</dt>"));
        assert!(!out.contains("<a "));
        assert!(out.contains(
            "<dt>CLOSE_WAIT verdict: leak &mdash; sockets stay in CLOSE_WAIT past their timeout \
             (or 10 s): something holds them (a leak)</dt>"
        ));
        let mut s = fixture::snapshot();
        s.kernel.verdict = crate::status::model::Verdict::Churn;
        assert!(html_section(&s)
            .contains("<dt>CLOSE_WAIT verdict: churn &mdash; sockets pass through CLOSE_WAIT"));
        s.kernel.available = false;
        assert!(html_section(&s)
            .contains("<dt>CLOSE_WAIT verdict: unknown (kernel view unavailable)</dt>"));
    }
}
