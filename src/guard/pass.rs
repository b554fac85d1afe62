//! One scan for the whole server, by whichever process holds the scanner role (`election`):
//! asking the kernel and applying its answer (`scan`).
//!
//! Every interval the kernel is asked only about the connections that can be stuck: exact
//! lookups of the in-flight ones (one batched netlink round trip per 64, each a hash lookup
//! in the kernel), so the cost follows the requests being handled, not the idle keep-alive
//! connections. Every SocketGuardFullScanInterval — and whenever lookups cannot be made (no
//! sock_diag: /proc/net/tcp is read whole anyway) or fail — it is a full dump of the
//! CLOSE_WAIT sockets on our ports instead, which the kernel makes by walking every TCP
//! socket of the host: the only way to see sockets the table does not name (leaked,
//! backlog, untracked), and a backstop for anything else.

use std::collections::HashSet;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::scan::{Candidate, ScanOutcome, Scanner};
use crate::kernel::diag_lookup::{Lookup, Tuple};
use crate::kernel::{self, sock_diag::DiagSocket, KernelSocket};
use crate::table::SharedTable;

/// What the kernel answered.
#[derive(Debug)]
pub enum Answer {
    /// CLOSE_WAIT sockets on our ports (a full dump, or /proc/net/tcp).
    Dump(Vec<KernelSocket>),
    /// One answer per candidate.
    Lookups(Vec<Candidate>, Vec<Lookup>),
}

/// Asks the kernel: lookups of `scanner`'s candidates, or a full dump when `full` is set or
/// lookups are not possible. An error means no answer at all.
pub fn ask_kernel(
    scanner: &Scanner,
    table: &SharedTable,
    mut diag: Option<&mut DiagSocket>,
    full: bool,
    now_mono_ms: u64,
) -> Result<Answer, String> {
    let listeners = table.listeners();
    if let (false, Some(d)) = (full, diag.as_deref_mut()) {
        let hung = hung_pids(table, now_mono_ms);
        let candidates = scanner.candidates(table, &listeners.ports, &hung);
        let tuples: Vec<Tuple> = candidates.iter().map(|c| c.tuple).collect();
        // A failed batch falls back to the dump below, which answers for everything.
        if let Ok(answers) = d.lookup(&tuples) {
            return Ok(Answer::Lookups(candidates, answers));
        }
    }
    kernel::close_wait_on(diag, &listeners).map(Answer::Dump)
}

/// Applies the kernel's answer. Returns the outcome and, for a dump, the dump (the guard
/// process classifies the untracked sockets in it).
pub fn apply(
    scanner: &mut Scanner,
    table: &SharedTable,
    answer: Answer,
    now_mono_ms: u64,
) -> (ScanOutcome, Option<Vec<KernelSocket>>) {
    match answer {
        Answer::Dump(sockets) => (scanner.apply(table, &sockets, now_mono_ms), Some(sockets)),
        Answer::Lookups(c, a) => (scanner.apply_lookups(table, &c, &a, now_mono_ms), None),
    }
}

/// Publishes what the scan did for the status page (after `election::beat`).
pub fn record(table: &SharedTable, outcome: &ScanOutcome) {
    let h = table.header();
    h.last_scan_lookups.store(outcome.lookups as u64, Relaxed);
    h.last_scan_full.store(u32::from(outcome.full), Relaxed);
    if outcome.full {
        h.full_scans.fetch_add(1, Relaxed);
    }
}

/// Children whose guard has not checked in for the hung timeout, as the table says (the
/// rescue verifies each one before acting; here they only widen the lookups).
fn hung_pids(table: &SharedTable, now_mono_ms: u64) -> HashSet<u32> {
    let after = table.header().hung_child_timeout_ms.load(Relaxed);
    if after == 0 {
        return HashSet::new();
    }
    table
        .children()
        .iter()
        .filter(|row| now_mono_ms.saturating_sub(row.last_checkin_mono_ms.load(Acquire)) >= after)
        .map(|row| row.pid.load(Acquire))
        .filter(|&pid| pid != 0 && pid & crate::table::ROW_CLAIMING == 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HeapTable;

    #[test]
    fn a_child_is_hung_once_its_check_in_is_the_timeout_old() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        t.header().hung_child_timeout_ms.store(2_000, Relaxed);
        t.claim_child(5, 0, 77, 10_000).unwrap();
        assert!(hung_pids(&t, 11_999).is_empty());
        assert_eq!(hung_pids(&t, 12_000), HashSet::from([5]));
        t.header().hung_child_timeout_ms.store(0, Relaxed);
        assert!(hung_pids(&t, 99_000).is_empty(), "0: never");
    }

    #[test]
    fn without_sock_diag_every_scan_is_a_full_read() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        t.set_listeners(&[(1, false)]);
        let s = Scanner::default();
        let answer = ask_kernel(&s, &t, None, false, 1).unwrap();
        assert!(matches!(answer, Answer::Dump(_)), "{answer:?}");
    }

    #[test]
    fn the_status_page_hears_how_many_lookups_the_scan_made() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let lookups = ScanOutcome {
            lookups: 3,
            ..Default::default()
        };
        record(&t, &lookups);
        let full = ScanOutcome {
            full: true,
            ..Default::default()
        };
        record(&t, &full);
        let h = t.header();
        let seen = (
            h.last_scan_lookups.load(Relaxed),
            h.last_scan_full.load(Relaxed),
            h.full_scans.load(Relaxed),
        );
        assert_eq!(seen, (0, 1, 1));
    }
}
