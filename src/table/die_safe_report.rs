//! The leak report and the history ring heal whatever store their writer dies after.
//!
//! As in `die_safe.rs`: every write is rerun dying after its 1st, 2nd, … store until it
//! completes. Right after the death a reader must see only whole entries (a key is one that
//! was written, never half of one and half of another; a sample is one that was pushed); after
//! the next writer's turn nothing is left odd or torn, and the report and the ring go on
//! working. A writer that heals can die too, and the one after it finishes the job.

use std::collections::HashSet;

use super::crash::run_dying_after;
use super::die_safe::Rng;
use super::history::Sample;
use super::layout::REPORT_K;
use super::report::{ClientKey, PathKey};
use super::{HeapTable, SharedTable};

const VHOST: u32 = 2;

fn path(p: &str) -> PathKey {
    PathKey::new(b"GET", p.as_bytes())
}

fn client(i: u8) -> ClientKey {
    ClientKey::new(std::net::IpAddr::from([10, 0, 0, i]))
}

/// Every listed path and client is one that was counted, whole; every entry is even.
fn assert_whole(t: &SharedTable, known: &HashSet<String>, what: &str) {
    let r = t.leak_report(VHOST);
    for e in &r.paths {
        let (m, p) = e
            .key
            .text()
            .unwrap_or_else(|| panic!("{what}: shapeless key {e:?}"));
        assert!(
            m == "GET" && known.contains(&p),
            "{what}: a torn key shows: {m} {p}"
        );
    }
    for e in &r.clients {
        let ip = e
            .key
            .ip()
            .unwrap_or_else(|| panic!("{what}: shapeless client {e:?}"));
        assert!(
            matches!(ip, std::net::IpAddr::V4(v4) if v4.octets()[..3] == [10, 0, 0]),
            "{what}: a torn client shows: {ip}"
        );
    }
}

fn assert_healed(t: &SharedTable, known: &HashSet<String>, what: &str) {
    assert_whole(t, known, what);
    let report = &t.reports()[VHOST as usize];
    for seq in report
        .paths
        .iter()
        .map(|e| &e.seq)
        .chain(report.clients.iter().map(|e| &e.seq))
    {
        assert_eq!(
            seq.load(std::sync::atomic::Ordering::Relaxed) & 1,
            0,
            "{what}: odd seq left"
        );
    }
}

/// A report whose path list is full (16 keys, counts 1…16, clients the same), so the next new
/// key replaces the least counted one.
fn full_report() -> (HeapTable, HashSet<String>) {
    let heap = HeapTable::new(4, 2, 1);
    let t = heap.table();
    let mut known = HashSet::new();
    for k in 0..REPORT_K {
        let p = format!("/k{k:02}");
        for _ in 0..=k {
            t.count_leak(VHOST, &path(&p), &client(k as u8), 1);
        }
        known.insert(p);
    }
    known.extend(["/new-key".to_string(), "/healer".to_string()]);
    (heap, known)
}

/// Runs `op` on a fresh full report, dying after 0, 1, 2, … stores until it completes; after
/// each death checks what readers see, lets `heal` run (itself dying after every possible
/// store, then once whole), and checks the healed report. Returns the stores `op` makes.
fn every_death(name: &str, op: impl Fn(&SharedTable), heal: impl Fn(&SharedTable)) -> u32 {
    for stores in 0.. {
        let (heap, known) = full_report();
        let t = heap.table();
        if !run_dying_after(Some(stores), || op(&t)) {
            return stores;
        }
        let what = format!("{name}, died after {stores} stores");
        assert_whole(&t, &known, &what);
        for healer_stores in 0..4 {
            run_dying_after(Some(healer_stores), || heal(&t));
            assert_whole(
                &t,
                &known,
                &format!("{what}, healer died after {healer_stores}"),
            );
        }
        heal(&t);
        assert_healed(&t, &known, &what);
        // It still works: the healer's key is listed.
        let listed: Vec<String> = t
            .leak_report(VHOST)
            .paths
            .iter()
            .filter_map(|e| e.key.text().map(|k| k.1))
            .collect();
        assert!(
            listed.contains(&"/healer".to_string()),
            "{what}: {listed:?}"
        );
    }
    unreachable!()
}

#[test]
fn a_report_writer_dying_after_any_store_is_healed_by_the_next_writer() {
    let heal = |t: &SharedTable| t.count_leak(VHOST, &path("/healer"), &client(99), 3);
    // A new key replacing the least counted one (the seqlocked rewrite), in both lists.
    let replace = every_death(
        "a new key",
        |t| t.count_leak(VHOST, &path("/new-key"), &client(77), 2),
        heal,
    );
    assert!(
        replace > 2 * 10,
        "only {replace} stores: crash points missing?"
    );
    // A listed key counted again (two stores per list).
    let bump = every_death(
        "a listed key",
        |t| t.count_leak(VHOST, &path("/k03"), &client(3), 2),
        heal,
    );
    assert_eq!(bump, 4);
    // The history tick's repair pass heals a vhost that sees no further leak.
    let repaired = every_death(
        "a new key, healed by the repair pass",
        |t| t.count_leak(VHOST, &path("/new-key"), &client(77), 2),
        |t| {
            t.repair_reports();
            t.count_leak(VHOST, &path("/healer"), &client(99), 3);
        },
    );
    assert_eq!(repaired, replace);
    eprintln!("fault injection: a new key {replace} stores, a listed key {bump}");
}

#[test]
fn a_death_costs_at_most_the_connection_in_flight_and_the_evicted_minimum() {
    for stores in 0..40 {
        let (heap, _) = full_report();
        let t = heap.table();
        let before: u64 = t.leak_report(VHOST).paths.iter().map(|e| e.count).sum();
        let died = run_dying_after(Some(stores), || {
            t.count_leak(VHOST, &path("/new-key"), &client(77), 2)
        });
        t.repair_reports();
        let after: u64 = t.leak_report(VHOST).paths.iter().map(|e| e.count).sum();
        // The least counted key had 1; the new one takes it over at 2.
        let lost = (before + 1).saturating_sub(after);
        assert!(lost <= 2, "died after {stores}: lost {lost}");
        if !died {
            assert_eq!(after, before + 1, "Space-Saving: the counts add up");
            break;
        }
    }
}

#[test]
fn writers_dying_at_random_stores_never_show_a_torn_key() {
    let heap = HeapTable::new(4, 2, 1);
    let t = heap.table();
    let mut rng = Rng(0x1ea4_5eed_0000_0009);
    let known: HashSet<String> = (0..64).map(|k| format!("/p{k}")).collect();
    for round in 0..3_000 {
        let p = format!("/p{}", rng.next(64));
        let budget = Some(rng.next(40) as u32);
        let c = client(rng.next(64) as u8);
        run_dying_after(budget, || t.count_leak(VHOST, &path(&p), &c, round));
        assert_whole(&t, &known, &format!("round {round}"));
        assert!(t.leak_report(VHOST).paths.len() <= REPORT_K);
    }
    t.repair_reports();
    assert_healed(&t, &known, "after 3,000 random deaths");
}

fn sample(i: u64) -> Sample {
    Sample {
        mono_ms: i * 5_000,
        unix_ms: 1_700_000_000_000 + i,
        close_wait: i as u32,
        open: i as u32 + 1,
        untracked: i as u32 + 2,
        force_closed_guard: i * 3,
        force_closed_rescue: i * 4,
    }
}

#[test]
fn a_history_writer_dying_after_any_store_leaves_no_torn_sample() {
    for full in [false, true] {
        for stores in 0.. {
            let heap = HeapTable::new(4, 2, 1);
            let t = heap.table();
            // An empty ring, or a full one whose oldest sample is being overwritten.
            let pushed = if full {
                super::layout::HISTORY_SAMPLES as u64
            } else {
                3
            };
            for i in 1..=pushed {
                t.push_sample(&sample(i));
            }
            let died = run_dying_after(Some(stores), || t.push_sample(&sample(1_000)));
            let seen = t.samples();
            let whole = |s: &Sample| *s == sample(1_000) || (1..=pushed).any(|i| *s == sample(i));
            assert!(
                seen.iter().all(whole),
                "died after {stores}: a torn sample shows"
            );
            if !died {
                assert_eq!(seen.last(), Some(&sample(1_000)));
                assert!(stores >= 9, "only {stores} stores: crash points missing?");
                break;
            }
            // The next writer finds the same head (unless the death came after it was
            // stored) and writes the slot again.
            let published = seen.last() == Some(&sample(1_000));
            t.push_sample(&sample(2_000));
            let healed = t.samples();
            assert_eq!(healed.last(), Some(&sample(2_000)), "died after {stores}");
            let expect =
                (pushed as usize + usize::from(published) + 1).min(super::layout::HISTORY_SAMPLES);
            assert_eq!(
                healed.len(),
                expect,
                "died after {stores}: a slot stayed torn"
            );
        }
    }
}

/// A reader overtaken mid-read by a writer that dies (or is just slow) part-way through a
/// replacement, after each possible store: it gives up on the entry, or reads one whole key,
/// never a mix (deterministic: `crash::overtaken` runs the writer inside the read).
#[test]
fn a_reader_overtaken_by_a_writer_never_returns_a_torn_key_or_sample() {
    use super::crash::overtake_next_read;
    for stores in 0..30 {
        let heap = HeapTable::new(4, 2, 1);
        let t = heap.table();
        t.count_leak(VHOST, &path("/old-key"), &client(1), 1);
        let entry = &t.reports()[VHOST as usize].paths[0];
        // A full list's least counted entry is entry 0: the writer replaces it.
        for k in 1..REPORT_K {
            for _ in 0..3 {
                t.count_leak(VHOST, &path(&format!("/k{k:02}")), &client(1), 1);
            }
        }
        overtake_next_read(move || {
            run_dying_after(Some(stores), || {
                t.count_leak(VHOST, &path("/new-key-longer"), &client(1), 2)
            });
        });
        let seen = entry.read().map(|e| e.key.text().unwrap().1);
        assert!(
            matches!(
                seen.as_deref(),
                None | Some("/old-key") | Some("/new-key-longer")
            ),
            "writer died after {stores} stores: the reader returned {seen:?}"
        );
    }
    for stores in 0..12 {
        let heap = HeapTable::new(4, 2, 1);
        let t = heap.table();
        for i in 1..=super::layout::HISTORY_SAMPLES as u64 {
            t.push_sample(&sample(i));
        }
        // The oldest sample (number 1) is read while sample 721 overwrites its slot.
        overtake_next_read(move || {
            run_dying_after(Some(stores), || t.push_sample(&sample(1_000)));
        });
        let oldest = t.history().samples[0].read(1);
        assert!(
            oldest.is_none() || oldest == Some(sample(1)),
            "writer died after {stores} stores: the reader returned {oldest:?}"
        );
    }
}

/// A reader racing a writer (another process, here a thread): `read` runs until it has read
/// 20,000 times while `write` ran. Returns how many times the writer wrote. (Only the ring
/// is raced: its reader and writer are quick enough to overlap often; a report's writer
/// spends most of its time finding the entry, so a race there rarely overlaps a rewrite —
/// `a_reader_overtaken_…` covers it deterministically.)
fn race(write: impl Fn(&SharedTable, u64) + Sync, read: impl Fn(&SharedTable)) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    const READS: u64 = 20_000;
    let heap = HeapTable::new(4, 2, 1);
    let t = heap.table();
    let (reads, writes) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            // Until the reader has read enough (bounded, should it be starved).
            while reads.load(Relaxed) < READS && writes.load(Relaxed) < 50_000_000 {
                write(&t, writes.fetch_add(1, Relaxed));
            }
        });
        while reads.load(Relaxed) < READS && !writer.is_finished() {
            // Reads count once the ring and the lists are full and being overwritten.
            if writes.load(Relaxed) > 2_000 {
                reads.fetch_add(1, Relaxed);
            }
            read(&t);
        }
        writer.join().unwrap();
        assert_eq!(reads.load(Relaxed), READS);
        writes.load(Relaxed)
    })
}

/// The ring's readers racing its writer see only whole samples: the stamp re-check throws
/// away what was rewritten under them.
#[test]
fn readers_racing_a_writer_never_see_a_torn_sample() {
    let reads = race(
        |t, i| t.push_sample(&sample(i + 1)),
        |t| {
            for s in t.samples() {
                assert_eq!(s, sample(u64::from(s.close_wait)), "a torn sample");
            }
        },
    );
    eprintln!("racing readers: 20,000 reads of the ring during {reads} samples");
}
