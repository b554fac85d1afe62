//! The table heals whatever store a process dies after.
//!
//! Deterministic: every update a process makes to the table (claim, socket identity, state
//! change, method/path, release, child-row claim and release, CLOSE_WAIT mark and its end,
//! the reclaim itself) is run again and again, dying after its 1st, 2nd, … store, until it
//! completes. After each death the dead pid's work is reclaimed by another process, and the
//! table must be right: no slot stuck in any state, no odd seqlock, no CLOSE_WAIT mark
//! visible on a slot that changed hands, no child row of the dead pid, and totals that add
//! up (`accepted = closed + reclaimed + open + untracked`, nothing left half-ended) and never
//! went down.
//! Randomized: many simulated processes work on one table, die at random stores, and are
//! reclaimed by a reclaimer that may itself die.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use super::crash::run_dying_after;
use super::state::SlotState;
use super::{HeapTable, SharedTable, SlotHandle, Totals};

const DEAD: u32 = 666;
const RECLAIMER: u32 = 777;
const LIVE: u32 = 555;

/// The table is healed: checks every invariant the protocols promise after a reclaim pass.
fn assert_healed(t: &SharedTable, dead: &HashSet<u32>, before: &Totals, what: &str) {
    let in_flight = t.flagged_in_flight();
    for (i, slot) in t.slots().iter().enumerate() {
        let l = slot.lease();
        assert!(
            !l.state.in_flight() || in_flight.contains(&i),
            "{what}: slot {i} in flight without its bit: {l:?}"
        );
        assert!(
            !dead.contains(&l.pid),
            "{what}: slot {i} still held by a dead pid: {l:?}"
        );
        assert!(
            !l.state.is_ending(),
            "{what}: slot {i} left half-ended: {l:?}"
        );
        assert_eq!(
            l.state == SlotState::Free,
            l.pid == 0,
            "{what}: slot {i} lease {l:?}"
        );
        assert_eq!(
            slot.text_seq.load(Relaxed) & 1,
            0,
            "{what}: slot {i} seqlock odd"
        );
        if l.state == SlotState::Free {
            assert_eq!(
                slot.close_wait_since(l.tag),
                None,
                "{what}: free slot {i} marked"
            );
            assert!(
                slot.lifetime_counted(l.tag),
                "{what}: slot {i} lifetime lost"
            );
        }
    }
    for row in t.children() {
        let pid = row.holder();
        assert!(
            pid.is_none_or(|p| !dead.contains(&p)),
            "{what}: a dead pid keeps a child row"
        );
        assert_eq!(
            row.pid.load(Relaxed) & super::ROW_CLAIMING,
            0,
            "{what}: row left claiming"
        );
    }
    let now = t.totals();
    assert_eq!(
        now.accepted,
        now.closed + now.reclaimed + now.open + now.untracked,
        "{what}: {now:?}"
    );
    assert_eq!(now.ending, 0, "{what}: lifetimes left half-ended");
    for (a, b, name) in [
        (now.accepted, before.accepted, "accepted"),
        (now.closed, before.closed, "closed"),
        (now.reclaimed, before.reclaimed, "reclaimed"),
        (now.requests, before.requests, "requests"),
    ] {
        assert!(a >= b, "{what}: {name} went down: {before:?} → {now:?}");
    }
}

/// Reclaims what `DEAD` left, as the guard process or the parent does.
fn heal(t: &SharedTable) {
    t.reclaim_dead(RECLAIMER, |pid, _| pid != DEAD);
}

/// A table with a live process's connection in it (so healing must leave others alone).
fn table() -> (HeapTable, SlotHandle) {
    let heap = HeapTable::new(4, 3, 1);
    let t = heap.table();
    t.register_vhost("a.test", 80);
    t.claim_child(LIVE, 0, 1, 1).unwrap();
    let live = t.claim(LIVE, 3, 1).unwrap();
    t.set_state(live, SlotState::Handling, 1);
    (heap, live)
}

/// Runs `op` (as `DEAD`, on a fresh table prepared by `setup`) dying after 0, 1, 2, … stores
/// until it completes; after each death heals and checks. Returns how many deaths were tried.
fn every_death(name: &str, setup: impl Fn(&SharedTable), op: impl Fn(&SharedTable)) -> u32 {
    for stores in 0.. {
        let (heap, live) = table();
        let t = heap.table();
        setup(&t);
        let before = t.totals();
        let died = run_dying_after(Some(stores), || op(&t));
        if !died {
            return stores;
        }
        heal(&t);
        let what = format!("{name}, died after {stores} stores");
        assert_healed(&t, &HashSet::from([DEAD]), &before, &what);
        assert!(
            t.owned(live).is_some(),
            "{what}: a live connection was reclaimed"
        );
        // The table still works: every slot can be claimed again.
        let n = (0..4).filter_map(|i| t.claim(LIVE, i, 2)).count();
        assert_eq!(n, 3, "{what}: a slot stayed unusable");
    }
    unreachable!()
}

/// Every update of a connection's life, from claim to release, as one process does it.
fn whole_connection(t: &SharedTable) {
    t.claim_child(DEAD, 0, 9, 1).unwrap();
    let h = t.claim(DEAD, 0, 1).unwrap();
    let slot = t.owned(h).unwrap();
    slot.set_socket(
        5,
        &"10.0.0.1:1".parse().unwrap(),
        &"10.0.0.2:80".parse().unwrap(),
        0,
    );
    t.set_state(h, SlotState::Reading, 2);
    slot.write_text(b"GET", b"/slow");
    t.vhost(0).unwrap().requests.fetch_add(1, Relaxed);
    t.set_state(h, SlotState::Handling, 3);
    t.mark_close_wait(slot, h.tag, 4);
    slot.restart_close_wait(h.tag, 4, 5);
    t.end_close_wait(slot, h.tag);
    t.set_state(h, SlotState::Keepalive, 6);
    t.mark_close_wait(slot, h.tag, 7);
    t.release(h);
    t.release_child(0, DEAD);
}

#[test]
fn a_death_after_any_store_of_any_update_heals_in_one_reclaim_pass() {
    let n = every_death("a connection's whole life", |_| {}, whole_connection);
    assert!(n > 30, "only {n} stores: crash points missing?");
    // A process exiting (prefork's signal handler) while it frees its slots.
    let exiting = every_death(
        "child exit",
        |t| {
            t.claim_child(DEAD, 0, 9, 1).unwrap();
            for i in 0..2 {
                let h = t.claim(DEAD, i, 1).unwrap();
                t.mark_close_wait(t.owned(h).unwrap(), h.tag, 2);
            }
        },
        |t| {
            t.release_all_of(DEAD);
            t.release_child(0, DEAD);
        },
    );
    assert!(exiting >= 6, "{exiting}");
    eprintln!("fault injection: a connection's life {n} stores, a child's exit {exiting} stores");
}

#[test]
fn a_reclaimer_that_dies_is_finished_by_the_next_one() {
    for stores in 0..12 {
        let (heap, live) = table();
        let t = heap.table();
        t.claim_child(DEAD, 0, 9, 1).unwrap();
        for i in 0..2 {
            let h = t.claim(DEAD, i, 1).unwrap();
            t.mark_close_wait(t.owned(h).unwrap(), h.tag, 2);
        }
        let before = t.totals();
        // The first reclaimer (pid DEAD + 1) dies part-way; the next one finishes.
        run_dying_after(Some(stores), || {
            t.reclaim_dead(DEAD + 1, |pid, _| pid != DEAD);
        });
        t.reclaim_dead(RECLAIMER, |pid, _| pid != DEAD && pid != DEAD + 1);
        let what = format!("reclaimer died after {stores} stores");
        assert_healed(&t, &HashSet::from([DEAD, DEAD + 1]), &before, &what);
        assert_eq!(
            t.totals().reclaimed,
            2,
            "{what}: each lifetime counted once"
        );
        assert!(t.owned(live).is_some());
    }
}

#[test]
fn a_stale_mark_never_shows_on_the_next_connection_of_the_slot() {
    let (heap, _) = table();
    let t = heap.table();
    let old = t.claim(DEAD, 0, 1).unwrap();
    let slot = t.owned(old).unwrap();
    t.release(old);
    // The scanner read the old claim's tag just before the release, and marks late.
    let new = t.claim(LIVE, 0, 2).unwrap();
    assert_eq!(new.index, old.index);
    t.mark_close_wait(slot, old.tag, 3);
    assert_eq!(
        slot.close_wait_since(new.tag),
        None,
        "not the new connection's period"
    );
    assert!(
        t.mark_close_wait(slot, new.tag, 4),
        "the stale mark does not block a real one"
    );
    assert_eq!(slot.close_wait_since(new.tag), Some(4));
}

/// A tiny deterministic generator (xorshift), so a failing seed can be replayed.
pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn many_processes_dying_at_random_stores_leave_a_consistent_table() {
    let heap = HeapTable::new(16, 8, 1);
    let t = heap.table();
    t.register_vhost("a.test", 80);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut dead: HashSet<u32> = HashSet::new();
    let mut before = t.totals();
    for round in 0..3_000 {
        let pid = 1_000 + round as u32;
        let budget = Some(rng.next(60) as u32);
        let died = run_dying_after(budget, || {
            t.claim_child(pid, 0, 1, 1);
            for _ in 0..rng.next(3) + 1 {
                let Some(h) = t.claim(pid, rng.next(16) as usize, 1) else {
                    continue;
                };
                let slot = t.owned(h).unwrap();
                slot.write_text(b"GET", b"/r");
                t.set_state(h, SlotState::Handling, 2);
                if rng.next(2) == 0 {
                    t.mark_close_wait(slot, h.tag, 3);
                }
                if rng.next(3) != 0 {
                    t.release(h);
                }
            }
        });
        // Whether it died or just left connections behind, the process is gone now.
        let _ = died;
        dead.insert(pid);
        // Every few rounds a reclaimer runs, and sometimes dies itself.
        if rng.next(4) == 0 {
            let reclaimer = 900_000 + round as u32;
            let d = dead.clone();
            let dies = Some(rng.next(20) as u32);
            if run_dying_after(dies, || {
                t.reclaim_dead(reclaimer, |p, _| !d.contains(&p));
            }) {
                dead.insert(reclaimer);
            }
            let now = t.totals();
            assert_eq!(
                now.accepted,
                now.closed + now.reclaimed + now.open + now.ending + now.untracked
            );
            assert!(now.accepted >= before.accepted && now.closed >= before.closed);
            before = now;
        }
    }
    let d = dead.clone();
    t.reclaim_dead(RECLAIMER, |p, _| !d.contains(&p));
    assert_healed(&t, &dead, &before, "after 3,000 random deaths");
    assert_eq!(t.totals().open, 0);
    assert!(t.totals().accepted > 3_000, "{:?}", t.totals());
}

#[test]
fn a_row_being_claimed_is_never_judged_by_its_previous_owners_start_time() {
    let heap = HeapTable::new(2, 1, 1);
    let t = heap.table();
    // The row's previous owner (started at 100) is gone; a new child (started at 500) claims
    // it, and a reclaim pass runs between its CAS and its start-time store.
    t.claim_child(11, 0, 100, 1).unwrap();
    t.release_child(0, 11);
    let alive = |pid: u32, start: u64| pid == LIVE && (start == 0 || start == 500);
    run_dying_after(Some(1), || {
        t.claim_child(LIVE, 0, 500, 2);
    });
    assert!(
        t.reclaim_dead_children(alive).is_empty(),
        "a live child lost its row"
    );
    // Its claim completes later (here: it claims again, as a restarted claim would).
    assert_eq!(t.claim_child(LIVE, 0, 500, 3), Some(0));
    assert_eq!(t.children()[0].holder(), Some(LIVE));
}
