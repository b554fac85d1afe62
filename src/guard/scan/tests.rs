use super::*;
use crate::config::AutoClose;
use crate::table::slot::{FLAG_ABANDONED, FLAG_REPORTED};
use crate::table::state::SlotState;
use crate::table::HeapTable;

fn dump(inodes: &[u64]) -> Vec<KernelSocket> {
    inodes.iter().map(|&i| HeapTable::stuck_socket(i)).collect()
}

fn listed(t: &SharedTable, vhost: u32) -> Vec<u64> {
    t.leak_report(vhost).paths.iter().map(|e| e.count).collect()
}

/// The kernel as a map from tuple to socket: what `pass` would hear for each candidate.
fn answers(cands: &[Candidate], kernel: &[KernelSocket]) -> Vec<Lookup> {
    cands
        .iter()
        .map(|c| {
            let k = kernel.iter().find(|k| (k.local, k.remote) == c.tuple);
            k.map_or(Lookup::Gone, |k| Lookup::Found(k.clone()))
        })
        .collect()
}

const PORTS: &[u16] = &[80];

/// One lookup scan as `pass` makes it.
fn lookup_scan(s: &mut Scanner, t: &SharedTable, kernel: &[KernelSocket], now: u64) -> ScanOutcome {
    let cands = s.candidates(t, PORTS, &HashSet::new());
    let a = answers(&cands, kernel);
    s.apply_lookups(t, &cands, &a, now)
}

/// A small table scanned every 200 ms.
fn table() -> HeapTable {
    let heap = HeapTable::new(8, 2, 1);
    heap.table().header().scan_interval_ms.store(200, Relaxed);
    heap
}

#[test]
fn each_connection_past_its_timeout_is_counted_once_whatever_happens_to_it() {
    let heap = table();
    let t = heap.table();
    let on = heap.vhost_with("on.test", AutoClose::On, 1_000);
    let report = heap.vhost_with("report.test", AutoClose::Report, 1_000);
    let a = heap.stuck_connection(7, on, 41, 10_000);
    let b = heap.stuck_connection(7, report, 42, 10_000);
    let mut scanner = Scanner::default();
    // Within the timeout: two tracked in CLOSE_WAIT, one socket nobody tracks.
    let out = scanner.apply(&t, &dump(&[41, 42, 99]), 10_500);
    let seen = (out.close_wait, out.untracked, out.leaks_counted);
    assert_eq!(seen, (2, 1, 0));
    // At the timeout the owner closed one (its period ended, the kernel moved it on)
    // and reported the other: the next scan counts both.
    let sa = t.owned(a).unwrap();
    sa.flags
        .fetch_or(FLAG_FORCE_CLOSED | FLAG_ABANDONED, Relaxed);
    t.end_close_wait(sa, a.tag);
    let sb = t.owned(b).unwrap();
    sb.flags.fetch_or(FLAG_REPORTED | FLAG_ABANDONED, Relaxed);
    let out = scanner.apply(&t, &dump(&[42, 99]), 11_100);
    assert_eq!(
        (out.close_wait, out.untracked, out.leaks_counted),
        (1, 1, 2)
    );
    assert_eq!((listed(&t, on), listed(&t, report)), (vec![1], vec![1]));
    // Never again: not by this scanner, not by a new one (a guard process restarted).
    assert_eq!(scanner.apply(&t, &dump(&[42]), 20_000).leaks_counted, 0);
    let mut next = Scanner::default();
    assert_eq!(next.apply(&t, &dump(&[42]), 30_000).leaks_counted, 0);
    assert_eq!((listed(&t, on), listed(&t, report)), (vec![1], vec![1]));
}

#[test]
fn a_connection_nobody_acts_on_is_counted_one_grace_after_its_timeout() {
    let heap = table();
    let t = heap.table();
    let off = heap.vhost_with("off.test", AutoClose::Off, 1_000);
    heap.stuck_connection(7, off, 41, 10_000);
    let mut scanner = Scanner::default();
    // The grace is one interval, at least MIN_GRACE_MS (1 s): a hung owner's
    // connection, or one whose owner has not judged it yet, waits for it.
    for now in [10_500, 11_000, 11_999] {
        assert_eq!(
            scanner.apply(&t, &dump(&[41]), now).leaks_counted,
            0,
            "{now}"
        );
    }
    assert_eq!(scanner.apply(&t, &dump(&[41]), 12_000).leaks_counted, 1);
    assert_eq!(listed(&t, off), [1]);
}

/// A table of `idle` keep-alive connections and `busy` handling ones, port 80, each with its
/// own tuple (client port 5000 + i).
fn server(heap: &HeapTable, idle: usize, busy: usize) -> Vec<crate::table::SlotHandle> {
    let t = heap.table();
    (0..idle + busy)
        .map(|i| {
            let h = t.claim(7, i, 1).unwrap();
            let (local, client) = HeapTable::stuck_tuple(i as u64);
            t.owned(h).unwrap().set_socket(7, &client, &local, 0);
            let state = if i < idle {
                SlotState::Keepalive
            } else {
                SlotState::Handling
            };
            t.set_state(h, state, 1);
            h
        })
        .collect()
}

#[test]
fn only_connections_in_flight_are_looked_up() {
    let heap = HeapTable::new(1_000, 2, 1);
    let t = heap.table();
    heap.vhost_with("a.test", AutoClose::On, 1_000);
    let conns = server(&heap, 995, 5);
    let mut s = Scanner::default();
    let cands = s.candidates(&t, PORTS, &HashSet::new());
    let looked: Vec<usize> = cands.iter().map(|c| c.index).collect();
    assert_eq!(
        looked,
        vec![995, 996, 997, 998, 999],
        "idle keep-alive is Apache's"
    );
    // One of them is in CLOSE_WAIT: marked with the kernel's inode.
    let k = KernelSocket {
        inode: 4242,
        ..HeapTable::stuck_socket(997)
    };
    let out = lookup_scan(&mut s, &t, std::slice::from_ref(&k), 10_000);
    assert_eq!((out.lookups, out.newly_marked, out.close_wait), (5, 1, 1));
    assert!(!out.walked && !out.full);
    let slot = t.owned(conns[997]).unwrap();
    assert_eq!(slot.close_wait_since(conns[997].tag), Some(10_000));
    assert_eq!(
        slot.inode.load(Relaxed),
        4242,
        "the owner checks its duplicate against it"
    );
    assert_eq!(s.confirmed()[0].socket, k);
    // The handler returns (keepalive): still looked up, because it is marked, until the
    // kernel no longer lists it in CLOSE_WAIT.
    t.set_state(conns[997], SlotState::Keepalive, 2);
    let out = lookup_scan(&mut s, &t, std::slice::from_ref(&k), 10_200);
    assert_eq!((out.lookups, out.close_wait), (5, 1));
    let out = lookup_scan(&mut s, &t, &[], 10_400);
    assert_eq!((out.lookups, out.cleared, out.close_wait), (5, 1, 0));
    assert_eq!(slot.close_wait_since(conns[997].tag), None);
    assert_eq!(lookup_scan(&mut s, &t, &[], 10_600).lookups, 4);
}

#[test]
fn a_hung_childs_connections_are_all_looked_up_and_other_ports_never() {
    let heap = HeapTable::new(16, 2, 1);
    let t = heap.table();
    server(&heap, 3, 1);
    let h = t.claim(8, 10, 1).unwrap();
    let other = "10.0.0.2:8443".parse().unwrap();
    let client = "10.0.0.1:7".parse().unwrap();
    t.owned(h).unwrap().set_socket(9, &client, &other, 0);
    t.set_state(h, SlotState::Handling, 1);
    let s = Scanner::default();
    let count = |hung: &[u32]| {
        let hung: HashSet<u32> = hung.iter().copied().collect();
        s.candidates(&t, PORTS, &hung).len()
    };
    assert_eq!(count(&[]), 1, "the handling one on port 80");
    assert_eq!(count(&[7]), 4, "every connection of the hung child");
    assert_eq!(
        count(&[7, 8]),
        4,
        "never a socket on a port we do not listen on"
    );
}

#[test]
fn a_lookup_answer_is_for_the_claim_it_was_asked_for() {
    let heap = table();
    let t = heap.table();
    let conns = server(&heap, 0, 1);
    let mut s = Scanner::default();
    let cands = s.candidates(&t, PORTS, &HashSet::new());
    let a = answers(&cands, &dump(&[0]));
    // The connection ends and another takes its slot before the answer is applied.
    t.release(conns[0]);
    let n = t.claim(8, 0, 1).unwrap();
    t.set_state(n, SlotState::Handling, 1);
    let out = s.apply_lookups(&t, &cands, &a, 5_000);
    assert_eq!(out.newly_marked, 0);
    assert_eq!(t.owned(n).unwrap().close_wait_since(n.tag), None);
}

#[test]
fn a_new_socket_with_the_same_tuple_starts_its_own_period() {
    let heap = table();
    let t = heap.table();
    let conns = server(&heap, 0, 1);
    let mut s = Scanner::default();
    lookup_scan(&mut s, &t, &dump(&[0]), 1_000);
    let slot = t.owned(conns[0]).unwrap();
    assert_eq!(slot.close_wait_since(conns[0].tag), Some(1_000));
    let again = lookup_scan(&mut s, &t, &dump(&[0]), 2_000);
    assert_eq!(again.newly_marked, 0, "the same socket: the period goes on");
    let other = KernelSocket {
        inode: 77,
        ..HeapTable::stuck_socket(0)
    };
    let out = lookup_scan(&mut s, &t, &[other], 3_000);
    assert_eq!(out.newly_marked, 1);
    assert_eq!(slot.close_wait_since(conns[0].tag), Some(3_000));
    assert_eq!(slot.inode.load(Relaxed), 77);
}

#[test]
fn a_new_scanner_begins_with_a_full_dump_then_waits_its_period() {
    let heap = HeapTable::new(8, 2, 1);
    let t = heap.table();
    let h = t.header();
    h.scan_interval_ms.store(200, Relaxed);
    h.full_scan_interval_ms.store(1_000, Relaxed);
    let mut s = Scanner::default();
    assert!(s.full_due(5));
    s.apply(&t, &[], 10_000);
    assert!(!s.full_due(10_999) && s.full_due(11_000));
}
