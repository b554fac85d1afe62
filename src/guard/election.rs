//! Which child scans. One scan per interval serves the whole server, so a server with 400
//! children costs the same as one with 4. The role is held through the shared table: a child
//! keeps it while it scans on time; when it exits it hands it back (`release_child`), and when
//! it dies or hangs its beat goes stale and another child takes over. The guard process, when
//! there is one, always holds the role (`hold`): children scan only while it is gone or stopped.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::table::SharedTable;

/// How many intervals without a scan make the scanner's role free for the taking.
const STALE_INTERVALS: u64 = 3;
/// ...but never less than this, so a short interval does not cause flapping.
const MIN_STALE_MS: u64 = 1_000;

/// True if `pid` should scan now (it holds the role, or just took it over).
pub fn take_turn(table: &SharedTable, pid: u32, now_mono_ms: u64, interval_ms: u64) -> bool {
    let h = table.header();
    // Acquire pairs with `hold`'s Release: whoever sees a new holder sees its fresh beat.
    let current = h.scanner_pid.load(Acquire);
    if current == pid {
        return true;
    }
    let stale = now_mono_ms.saturating_sub(h.scanner_beat_mono_ms.load(Relaxed))
        > (STALE_INTERVALS * interval_ms).max(MIN_STALE_MS);
    if (current == 0 || stale)
        && h.scanner_pid
            .compare_exchange(current, pid, AcqRel, Relaxed)
            .is_ok()
    {
        h.scanner_beat_mono_ms.store(now_mono_ms, Relaxed);
        return true;
    }
    false
}

/// Takes the role for `pid` whoever holds it: the guard process's claim. The beat is stored
/// before the pid, so a child that reads the new holder cannot pair it with the old, stale
/// beat and take the role straight back (it did: a child took over from a just-restarted
/// guard process and kept the role while the guard process waited its turn).
/// Returns false if someone else held it until now.
pub fn hold(table: &SharedTable, pid: u32, now_mono_ms: u64) -> bool {
    let h = table.header();
    if h.scanner_pid.load(Relaxed) == pid {
        return true;
    }
    h.scanner_beat_mono_ms.store(now_mono_ms, Relaxed);
    h.scanner_pid.store(pid, Release);
    false
}

/// Records that the scanner finished a scan at `now` taking `cost_us`.
pub fn beat(table: &SharedTable, now_mono_ms: u64, cost_us: u64, ok: bool) {
    let h = table.header();
    h.scanner_beat_mono_ms.store(now_mono_ms, Relaxed);
    h.last_scan_us.store(cost_us, Relaxed);
    h.scans.fetch_add(1, Relaxed);
    if !ok {
        h.scan_errors.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HeapTable;

    const CHILD: u32 = 100;
    const GUARD: u32 = 200;

    #[test]
    fn the_guard_process_takes_the_role_from_a_child_that_scans_on_time() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        assert!(take_turn(&t, CHILD, 10_000, 200));
        beat(&t, 10_000, 5, true);
        assert!(!hold(&t, GUARD, 10_100));
        assert!(hold(&t, GUARD, 10_150));
        assert_eq!(t.header().scanner_pid.load(Relaxed), GUARD);
        assert!(
            !take_turn(&t, CHILD, 10_200, 200),
            "the child gives the role up"
        );
    }

    #[test]
    fn a_child_takes_over_only_once_the_holders_beat_is_stale() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        hold(&t, GUARD, 10_000);
        assert!(!take_turn(&t, CHILD, 10_000 + MIN_STALE_MS, 200));
        assert!(take_turn(&t, CHILD, 10_001 + MIN_STALE_MS, 200));
        hold(&t, GUARD, 12_000);
        assert!(
            !take_turn(&t, CHILD, 12_000, 200),
            "back with the guard process"
        );
    }
}
