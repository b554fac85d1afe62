//! The scanner's part of the leak report (`table::report`): when a scan sees a connection
//! that has sat in CLOSE_WAIT past its vhost's timeout, it counts the connection's request
//! (method and path, no query string) and client address, once per connection, whatever then
//! happens to it (stuck, reported, force-closed, rescued).

use std::sync::atomic::Ordering::Relaxed;

use crate::clock::unix_ms;
use crate::table::layout::Slot;
use crate::table::lease::Lease;
use crate::table::report::{ClientKey, PathKey};
use crate::table::slot::{
    client_of, FLAG_ABANDONED, FLAG_FORCE_CLOSED, FLAG_REPORTED, FLAG_RESCUED,
};
use crate::table::SharedTable;

/// Flags a guard sets only once the timeout passed with the client gone: its verdict.
const VERDICT: u32 = FLAG_ABANDONED | FLAG_FORCE_CLOSED | FLAG_REPORTED | FLAG_RESCUED;

/// The least time a connection stays marked past its timeout, with no verdict, before the
/// scanner counts it anyway (see `count_if_overdue`).
pub const MIN_GRACE_MS: u64 = 1_000;

/// Counts the connection in `slot` (claimed as `lease`; `flags` read under that claim) if it
/// is past its vhost's timeout. That is when a guard gave its verdict, which it does only
/// then (so a connection closed between two scans is still counted), or when it is still
/// marked `grace_ms` after the timeout: the owner of a half-closed client that is still
/// reading restarts its period at the timeout, so only a connection nobody acted on (a hung
/// child's, until the guard process acts) gets there. True if it was counted now.
pub fn count_if_overdue(
    table: &SharedTable,
    slot: &Slot,
    lease: Lease,
    flags: u32,
    now_mono_ms: u64,
    grace_ms: u64,
) -> bool {
    // Most slots of a walk are healthy: no verdict, no mark. Say so after one load.
    let since = slot.close_wait_since(lease.tag);
    if (flags & VERDICT == 0 && since.is_none()) || slot.leak_counted(lease.tag) {
        return false;
    }
    let vhost = slot.vhost.load(Relaxed);
    let Some(row) = table.vhost(vhost) else {
        return false;
    };
    let limit = row
        .close_wait_timeout_ms
        .load(Relaxed)
        .saturating_add(grace_ms);
    let overdue = since.is_some_and(|since| now_mono_ms.saturating_sub(since) >= limit);
    if flags & VERDICT == 0 && !overdue {
        return false;
    }
    let (method, path) = slot.read_text();
    let client = client_of(slot).ip();
    // What was read belongs to this connection only if the slot did not change hands.
    if slot.lease() != lease || !slot.note_leak(lease.tag) {
        return false;
    }
    let key = PathKey::new(method.as_bytes(), path.as_bytes());
    table.count_leak(vhost, &key, &ClientKey::new(client), unix_ms());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AutoClose;
    use crate::table::HeapTable;

    fn listed(t: &SharedTable, vhost: u32) -> Vec<(String, u64)> {
        t.leak_report(vhost)
            .paths
            .iter()
            .map(|e| (e.key.text().unwrap().1, e.count))
            .collect()
    }

    #[test]
    fn counted_once_at_the_verdict_or_past_timeout_plus_grace() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("a.test", AutoClose::Off, 1_000);
        let h = heap.stuck_connection(7, v, 42, 10_000);
        let slot = t.owned(h).unwrap();
        let lease = slot.lease();
        let run = |now, flags| count_if_overdue(&t, slot, lease, flags, now, 500);
        assert!(!run(10_900, 0), "within the timeout");
        assert!(!run(11_400, 0), "past the timeout, within the grace");
        assert!(run(11_500, 0), "timeout + grace, no verdict: counted");
        assert!(!run(20_000, FLAG_REPORTED), "once per connection");
        assert_eq!(listed(&t, v), [("/slow".to_string(), 1)]);
        let c = &t.leak_report(v).clients[0];
        assert_eq!(c.key.ip(), Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_verdict_counts_at_once_even_after_the_mark_ended() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("on.test", AutoClose::On, 1_000);
        let h = heap.stuck_connection(7, v, 42, 10_000);
        let slot = t.owned(h).unwrap();
        // The owner force-closed it at the timeout and ended the period before the scan.
        slot.flags
            .fetch_or(FLAG_FORCE_CLOSED | FLAG_ABANDONED, Relaxed);
        t.end_close_wait(slot, h.tag);
        assert!(count_if_overdue(
            &t,
            slot,
            slot.lease(),
            slot.flags.load(Relaxed),
            11_001,
            500
        ));
        assert_eq!(listed(&t, v), [("/slow".to_string(), 1)]);
    }

    #[test]
    fn a_slot_that_changed_hands_is_not_counted_for_the_old_connection() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let v = heap.vhost_with("a.test", AutoClose::Off, 1_000);
        let h = heap.stuck_connection(7, v, 42, 10_000);
        let slot = t.owned(h).unwrap();
        let old = slot.lease();
        t.release(h);
        t.claim(8, h.index as usize, 1).unwrap();
        assert!(!count_if_overdue(&t, slot, old, FLAG_REPORTED, 20_000, 0));
        assert!(listed(&t, v).is_empty());
        // A hostile vhost index is no vhost.
        slot.vhost.store(9_999, Relaxed);
        assert!(!count_if_overdue(
            &t,
            slot,
            slot.lease(),
            FLAG_REPORTED,
            20_000,
            0
        ));
    }
}
