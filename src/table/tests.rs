use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use super::*;
use crate::table::state::SlotState;

/// A heap buffer standing in for the shared segment (64-byte aligned, zeroed).
fn region(nslots: usize, nchildren: usize) -> (HeapTable, SharedTable) {
    let heap = HeapTable::new(nslots, nchildren, 1_000);
    let t = heap.table();
    (heap, t)
}

#[test]
fn claim_fill_and_release() {
    let (_m, t) = region(4, 2);
    let hs: Vec<_> = (0..4)
        .map(|i| t.claim(100, i, 5).expect("free slot"))
        .collect();
    assert_eq!(t.totals().open, 4);
    assert!(t.claim(100, 0, 5).is_none(), "full table refuses");
    assert_eq!(t.counters().untracked.load(Relaxed), 1);
    assert_eq!(t.totals().accepted, 5);
    assert!(t.release(hs[2]));
    assert!(!t.release(hs[2]), "double release is refused");
    assert_eq!(t.totals().closed, 1);
    let again = t.claim(100, 0, 6).expect("slot freed");
    assert_eq!(again.index, hs[2].index);
    assert_ne!(again.tag, hs[2].tag, "a new claim gets a new tag");
    assert!(
        !t.release(hs[2]),
        "a stale handle cannot free the new owner's slot"
    );
}

#[test]
fn attach_validates_layout() {
    let (mut m, t) = region(8, 2);
    let (base, len) = m.base_and_len();
    // SAFETY: same memory as `t`, still alive.
    let again = unsafe { SharedTable::attach(base, len) }.unwrap();
    assert_eq!(again.nslots(), 8);
    t.header().layout_version.store(999, Relaxed);
    // SAFETY: as above.
    let bad = unsafe { SharedTable::attach(base, len) };
    assert_eq!(bad.unwrap_err(), TableError::Incompatible);
    // SAFETY: as above; a too-short length must be refused, not read past.
    let short = unsafe { SharedTable::init(base, 64, 8, 2, 0) };
    assert!(matches!(short, Err(TableError::TooSmall { .. })));
}

#[test]
fn concurrent_claims_never_share_a_slot() {
    let (_m, t) = region(64, 2);
    let threads: Vec<_> = (0..8)
        .map(|th| {
            std::thread::spawn(move || {
                for round in 0..2_000 {
                    if let Some(h) = t.claim(th + 1, (th as usize * 7 + round) % 64, 1) {
                        let slot = t.owned(h).unwrap();
                        slot.fd.store(th as i32, Relaxed);
                        slot.write_text(b"GET", format!("/t{th}").as_bytes());
                        t.set_state(h, SlotState::Handling, 2);
                        std::thread::yield_now();
                        // Nobody else wrote into our slot while we held it.
                        assert_eq!(slot.fd.load(Relaxed), th as i32);
                        assert_eq!(slot.lease().pid, th + 1);
                        assert!(t.release(h));
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let c = t.totals();
    assert_eq!(c.open, 0);
    assert_eq!(c.accepted, 16_000);
    assert_eq!(c.closed + c.untracked, 16_000);
    assert!(t.slots().iter().all(|s| s.lease().state == SlotState::Free));
}

#[test]
fn text_round_trips_and_truncates() {
    let (_m, t) = region(2, 1);
    let h = t.claim(1, 0, 1).unwrap();
    let slot = t.owned(h).unwrap();
    slot.write_text(b"PROPFIND", b"/a/b?no");
    assert_eq!(slot.read_text(), ("PROPFIND".into(), "/a/b?no".into()));
    let long = "x".repeat(500);
    slot.write_text(b"GET", long.as_bytes());
    assert_eq!(slot.read_text().1.len(), layout::PATH_BYTES);
    slot.write_text(b"GET", "/é".as_bytes());
    assert_eq!(slot.read_text().1, "/é");
}

#[test]
fn addresses_round_trip() {
    let (_m, t) = region(2, 1);
    let h = t.claim(1, 0, 1).unwrap();
    let slot = t.owned(h).unwrap();
    let c: SocketAddr = "10.1.2.3:4567".parse().unwrap();
    let l: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    slot.set_socket(9, &c, &l, 2);
    let v = slot.view(h.index as usize);
    assert_eq!((v.client, v.local, v.fd, v.vhost), (c, l, 9, 2));
}

#[test]
fn reclaim_frees_dead_owners_only() {
    let (_m, t) = region(8, 4);
    t.claim_child(10, 0, 111, 1).unwrap();
    t.claim_child(20, 0, 222, 1).unwrap();
    let a = t.claim(10, 0, 1).unwrap();
    let b = t.claim(20, 1, 1).unwrap();
    let c = t.claim(20, 2, 1).unwrap();
    t.mark_close_wait(t.owned(c).unwrap(), c.tag, 1);
    let n = t.reclaim_dead(99, |pid, _| pid == 10 || pid == 99);
    assert_eq!(n, 2);
    assert_eq!(t.totals().reclaimed, 2);
    assert!(t.owned(a).is_some());
    assert!(t.owned(b).is_none() && t.owned(c).is_none());
    assert_eq!(
        t.children()
            .iter()
            .filter(|r| r.pid.load(Relaxed) != 0)
            .count(),
        1
    );
    let hist: u64 = t.header().histogram.iter().map(|b| b.load(Relaxed)).sum();
    assert_eq!(
        hist, 1,
        "a reclaimed CLOSE_WAIT socket still lands in the histogram"
    );
}

#[test]
fn an_unknown_state_byte_reads_as_free_and_is_left_alone() {
    let (_m, t) = region(2, 1);
    // A hostile lease: state 7 (a number no SlotState has), tag 5, a pid that is not alive.
    let word = 4242u64 << 32 | 5 << 8 | 7;
    t.slots()[0].lease.store(word, Relaxed);
    assert_eq!(t.slots()[0].lease().state, SlotState::Free);
    assert_eq!(t.reclaim_slots(99, |_| false), 0, "the reclaimer skips it");
    let totals = t.totals();
    assert_eq!((totals.accepted, totals.open, totals.ending), (0, 0, 0));
    let h = t.claim(100, 0, 1).expect("the other slot");
    assert_eq!(h.index, 1, "a claim cannot take the unknown word");
    assert!(t.claim(100, 0, 1).is_none());
    assert_eq!(t.slots()[0].lease.load(Relaxed), word, "nothing rewrote it");
}

#[test]
fn child_exit_releases_its_slots() {
    let (_m, t) = region(8, 2);
    for i in 0..3 {
        t.claim(7, i, 1).unwrap();
    }
    let other = t.claim(8, 5, 1).unwrap();
    assert_eq!(t.release_all_of(7), 3);
    assert!(t.owned(other).is_some());
    assert_eq!(t.totals().open, 1);
}

#[test]
fn vhosts_are_found_again_by_name_and_port() {
    let (_m, t) = region(2, 1);
    let a = t.register_vhost("a.test", 80);
    let b = t.register_vhost("b.test", 80);
    let a8 = t.register_vhost("a.test", 8080);
    assert_eq!((a, b, a8), (0, 1, 2));
    assert_eq!(t.register_vhost("b.test", 80), 1);
    assert_eq!(t.vhost_name(1), ("b.test".to_string(), 80));
    assert!(t.vhost(3).is_none());
}

#[test]
fn histogram_buckets_by_upper_bound() {
    let (_m, t) = region(1, 1);
    t.record_close_wait_duration(100);
    t.record_close_wait_duration(101);
    t.record_close_wait_duration(99_999_999);
    let h = &t.header().histogram;
    assert_eq!(h[0].load(Relaxed), 1);
    assert_eq!(h[1].load(Relaxed), 1);
    assert_eq!(h[layout::HISTOGRAM_BOUNDS_MS.len()].load(Relaxed), 1);
}

#[test]
fn a_shorter_text_after_a_longer_one_shows_no_leftovers() {
    let (_m, t) = region(2, 1);
    let h = t.claim(1, 0, 1).unwrap();
    let slot = t.owned(h).unwrap();
    slot.write_text(b"OPTIONS", b"/a/very/long/path/indeed/with/many/segments");
    slot.write_text(b"GET", b"/x");
    assert_eq!(slot.read_text(), ("GET".into(), "/x".into()));
    slot.write_text(b"", b"");
    assert_eq!(slot.read_text(), (String::new(), String::new()));
}

#[test]
fn invalid_utf8_from_the_network_is_shown_lossily() {
    let (_m, t) = region(2, 1);
    let h = t.claim(1, 0, 1).unwrap();
    let slot = t.owned(h).unwrap();
    slot.write_text(b"GET", b"/\xff\xfe");
    assert_eq!(slot.read_text().1, "/\u{fffd}\u{fffd}");
}

#[test]
fn listeners_keep_ports_and_families() {
    let (_m, t) = region(1, 1);
    assert_eq!(t.listeners(), crate::kernel::Listeners::default());
    t.set_listeners(&[(8080, false), (443, true), (8080, true)]);
    let l = t.listeners();
    assert_eq!(l.ports, vec![8080, 443]);
    assert!(l.ipv4 && l.ipv6);
    t.set_listeners(&[(80, false)]);
    let l = t.listeners();
    assert_eq!((l.ports, l.ipv4, l.ipv6), (vec![80], true, false));
}
