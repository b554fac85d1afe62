//! The scanner's part of the last hour (`table::history`): after a complete scan, once per
//! `HISTORY_PERIOD_MS`, one sample of the table into the ring; and, at the same tick, the leak
//! report's repair pass (an entry a dead writer left mid-replacement is emptied even on a
//! vhost that sees no further leak).

use std::sync::atomic::Ordering::Relaxed;

use super::scan::ScanOutcome;
use crate::clock::unix_ms;
use crate::table::history::Sample;
use crate::table::layout::HISTORY_PERIOD_MS;
use crate::table::slot::{FLAG_FORCE_CLOSED, FLAG_RESCUED};
use crate::table::SharedTable;

/// Takes a sample if the newest one is a period old (or there is none, or it claims to be
/// from the future, which only a corrupt table can say). True if it did.
pub fn sample_if_due(table: &SharedTable, scan: &ScanOutcome, now_mono_ms: u64) -> bool {
    if let Some(last) = table.newest_sample() {
        if last.mono_ms <= now_mono_ms && now_mono_ms - last.mono_ms < HISTORY_PERIOD_MS {
            return false;
        }
    }
    let sums = table.vhost_sums();
    table.push_sample(&Sample {
        mono_ms: now_mono_ms,
        unix_ms: unix_ms(),
        close_wait: saturate(scan.close_wait as u64),
        open: saturate(open_connections(table)),
        untracked: saturate(scan.untracked as u64),
        force_closed_guard: sums.force_closed_guard,
        force_closed_rescue: sums.force_closed_rescue,
    });
    table.repair_reports();
    true
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Open connections as the status page counts them: held, past their claim, and not shut
/// down by the guard or the rescue (those stay listed while their handler runs, but are not
/// open). The rescue sets both flags; either one alone counts too, as the page's
/// `display_state` reads them (a child can write any bits).
fn open_connections(table: &SharedTable) -> u64 {
    let open = |slot: &&crate::table::layout::Slot| {
        slot.lease().state.is_open()
            && slot.flags.load(Relaxed) & (FLAG_FORCE_CLOSED | FLAG_RESCUED) == 0
    };
    table.slots().iter().filter(open).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AutoClose;
    use crate::table::HeapTable;

    #[test]
    fn one_sample_per_period_with_the_scan_and_the_table() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("a.test", AutoClose::On, 1_000);
        heap.stuck_connection(7, v, 42, 1);
        let shut = heap.stuck_connection(7, v, 43, 1);
        t.owned(shut)
            .unwrap()
            .flags
            .fetch_or(FLAG_FORCE_CLOSED, Relaxed);
        t.vhost(v).unwrap().force_closed_guard.store(3, Relaxed);
        let scan = ScanOutcome {
            close_wait: 1,
            untracked: 2,
            ..Default::default()
        };
        assert!(sample_if_due(&t, &scan, 100_000));
        assert!(!sample_if_due(&t, &scan, 100_000 + HISTORY_PERIOD_MS - 1));
        assert!(sample_if_due(&t, &scan, 100_000 + HISTORY_PERIOD_MS));
        let s = t.samples();
        assert_eq!(s.len(), 2);
        let got = (
            s[0].close_wait,
            s[0].open,
            s[0].untracked,
            s[0].force_closed_guard,
        );
        assert_eq!(got, (1, 1, 2, 3), "the force-closed connection is not open");
        // A newest sample from the future does not stop the clock.
        t.history().samples[1].mono_ms.store(u64::MAX, Relaxed);
        t.history().samples[1].stamp.store(2, Relaxed);
        assert!(sample_if_due(&t, &scan, 200_000));
    }
}
