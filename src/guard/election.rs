//! Which child scans. One scan per interval serves the whole server, so a server with 400
//! children costs the same as one with 4. The role is held through the shared table: a child
//! keeps it while it scans on time; when it exits it hands it back (`release_child`), and when
//! it dies or hangs its beat goes stale and another child takes over.

use std::sync::atomic::Ordering::{AcqRel, Relaxed};

use crate::table::SharedTable;

/// How many intervals without a scan make the scanner's role free for the taking.
const STALE_INTERVALS: u64 = 3;
/// ...but never less than this, so a short interval does not cause flapping.
const MIN_STALE_MS: u64 = 1_000;

/// True if `pid` should scan now (it holds the role, or just took it over).
pub fn take_turn(table: &SharedTable, pid: u32, now_mono_ms: u64, interval_ms: u64) -> bool {
    let h = table.header();
    let current = h.scanner_pid.load(Relaxed);
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
