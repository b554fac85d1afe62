//! The leak report: per vhost, the request paths (method + path, no query string) and the
//! client addresses whose connections most often sat in CLOSE_WAIT past the vhost's timeout.
//!
//! Each list is `REPORT_K` entries kept by the Space-Saving rule (Metwally, Agrawal, El Abbadi
//! 2005): a key already listed is counted in place; a new key takes over the entry with the
//! smallest count, starting at that count + 1 and keeping it as its `error` (the key's true
//! count lies in `[count - error, count]`). So the memory is fixed, the counts add up to the
//! connections counted, and a key counted more than `total / K` times is never pushed out,
//! however many distinct keys flood in.
//!
//! Only the scanner writes (the guard process, or the elected child when there is none).
//! Counting a listed key is two stores, each of which leaves a valid entry. Replacing a key
//! rewrites several words under the entry's seqlock (`seq` odd while it runs). A writer that
//! dies part-way leaves `seq` odd: readers skip the entry after a bounded number of tries,
//! and the next writer — its next count on that vhost, or the scanner's history tick every
//! 5 s — empties it. That loses the connection being counted and the count of the
//! least-counted key, which the replacement was dropping anyway. Children run as `User` and
//! can write anything here: readers check every shape and length, show text lossily and leave
//! escaping to the renderers; the writer saturates counts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use super::crash;
use super::layout::{
    ReportEntry, Slot, CLIENT_KEY_WORDS, LEAK_METHOD_BYTES, LEAK_PATH_BYTES, PATH_KEY_WORDS,
};
use super::lease::TAG_MASK;
use super::SharedTable;

/// In `Slot::leak_seen`: the connection with the tag below this bit was counted.
const LEAK_SEEN: u32 = 1 << 31;
/// How many times a reader tries an entry that is being rewritten before leaving it out.
const READ_TRIES: usize = 8;

/// A key as plain data: what an entry's `shape` and `key` words hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key<const N: usize> {
    pub shape: u32,
    pub words: [u64; N],
}

/// Method (16 bytes at most) and path (80 bytes at most).
pub type PathKey = Key<PATH_KEY_WORDS>;
/// A client address without its port.
pub type ClientKey = Key<CLIENT_KEY_WORDS>;

/// Packs `bytes` little-endian into `words` from word `at` on.
fn pack(words: &mut [u64], at: usize, bytes: &[u8]) {
    for (w, chunk) in words[at..].iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
}

/// Truncation can split a UTF-8 sequence, and a child can write any bytes: never fail.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl PathKey {
    /// Method and path, each truncated to its share of the key.
    pub fn new(method: &[u8], path: &[u8]) -> PathKey {
        let m = &method[..method.len().min(LEAK_METHOD_BYTES)];
        let p = &path[..path.len().min(LEAK_PATH_BYTES)];
        let mut words = [0; PATH_KEY_WORDS];
        pack(&mut words, 0, m);
        pack(&mut words, LEAK_METHOD_BYTES / 8, p);
        Key {
            shape: m.len() as u32 | (p.len() as u32) << 8,
            words,
        }
    }

    /// Method and path as text, or None for a shape `new` never makes (hostile bytes).
    pub fn text(&self) -> Option<(String, String)> {
        let (m, p) = ((self.shape & 0xff) as usize, (self.shape >> 8) as usize);
        if m > LEAK_METHOD_BYTES || p > LEAK_PATH_BYTES {
            return None;
        }
        let bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let path = &bytes[LEAK_METHOD_BYTES..LEAK_METHOD_BYTES + p];
        Some((lossy(&bytes[..m]), lossy(path)))
    }
}

impl ClientKey {
    pub fn new(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => Key {
                shape: 4,
                words: [u64::from(u32::from(v4)), 0],
            },
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                Key {
                    shape: 6,
                    words: [(bits >> 64) as u64, bits as u64],
                }
            }
        }
    }

    /// The address, or None for a shape `new` never makes (hostile bytes).
    pub fn ip(&self) -> Option<IpAddr> {
        let [hi, lo] = self.words;
        match self.shape {
            4 if lo == 0 => u32::try_from(hi)
                .ok()
                .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(
                u128::from(hi) << 64 | u128::from(lo),
            ))),
            _ => None,
        }
    }
}

/// One entry as a reader saw it: the same `seq`, even, before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted<const N: usize> {
    pub key: Key<N>,
    pub count: u64,
    pub error: u64,
    pub last_seen_unix_ms: u64,
}

impl<const N: usize> ReportEntry<N> {
    fn load_key(&self) -> Key<N> {
        Key {
            shape: self.shape.load(Relaxed),
            words: std::array::from_fn(|i| self.key[i].load(Relaxed)),
        }
    }

    /// The entry, if it holds a key and no writer is replacing it (bounded retries).
    pub fn read(&self) -> Option<Counted<N>> {
        for _ in 0..READ_TRIES {
            let before = self.seq.load(Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            crash::overtaken();
            let seen = Counted {
                key: self.load_key(),
                count: self.count.load(Relaxed),
                error: self.error.load(Relaxed),
                last_seen_unix_ms: self.last_seen_unix_ms.load(Relaxed),
            };
            // The reads above may not move past the re-check below.
            fence(Acquire);
            if self.seq.load(Relaxed) == before {
                return (seen.count > 0).then_some(seen);
            }
        }
        None
    }

    /// Whether the entry holds `key` (the writer's view: nobody else changes keys).
    fn holds(&self, key: &Key<N>) -> bool {
        self.seq.load(Acquire) & 1 == 0 && self.count.load(Relaxed) > 0 && self.load_key() == *key
    }

    /// Counts one more connection under the key the entry holds.
    fn bump(&self, now_unix_ms: u64) {
        let n = self.count.load(Relaxed).saturating_add(1);
        self.count.store(n, Relaxed);
        crash::point();
        self.last_seen_unix_ms.store(now_unix_ms, Relaxed);
        crash::point();
    }

    /// Gives the entry to `key`, counted once on top of the `inherited` count of the key it
    /// evicts. Every word is written while `seq` is odd.
    fn replace(&self, key: &Key<N>, inherited: u64, now_unix_ms: u64) {
        let even = self.seq.load(Relaxed) & !1;
        self.seq.store(even.wrapping_add(1), Relaxed);
        crash::point();
        fence(Release);
        self.shape.store(key.shape, Relaxed);
        crash::point();
        for (word, value) in self.key.iter().zip(key.words) {
            word.store(value, Relaxed);
            crash::point();
        }
        self.error.store(inherited, Relaxed);
        crash::point();
        self.count.store(inherited.saturating_add(1), Relaxed);
        crash::point();
        self.last_seen_unix_ms.store(now_unix_ms, Relaxed);
        crash::point();
        self.seq.store(even.wrapping_add(2), Release);
        crash::point();
    }

    /// Empties the entry if a replacement was cut short (odd `seq`). True if it was.
    fn repair(&self) -> bool {
        let seq = self.seq.load(Acquire);
        if seq & 1 == 0 {
            return false;
        }
        for field in [&self.count, &self.error, &self.last_seen_unix_ms] {
            field.store(0, Relaxed);
            crash::point();
        }
        self.seq.store(seq.wrapping_add(1), Release);
        crash::point();
        true
    }
}

/// Counts `key` once in `entries` by the Space-Saving rule, after emptying any entry a dead
/// writer left mid-replacement.
pub(crate) fn count_key<const N: usize>(
    entries: &[ReportEntry<N>],
    key: &Key<N>,
    now_unix_ms: u64,
) {
    for e in entries {
        e.repair();
    }
    if let Some(e) = entries.iter().find(|e| e.holds(key)) {
        e.bump(now_unix_ms);
    } else if let Some(least) = entries.iter().min_by_key(|e| e.count.load(Relaxed)) {
        least.replace(key, least.count.load(Relaxed), now_unix_ms);
    }
}

/// The entries that hold a key, most counted first (ties: most recently seen first).
fn counted<const N: usize>(entries: &[ReportEntry<N>]) -> Vec<Counted<N>> {
    let mut out: Vec<Counted<N>> = entries.iter().filter_map(ReportEntry::read).collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.last_seen_unix_ms.cmp(&a.last_seen_unix_ms))
    });
    out
}

/// One vhost's report as read: its paths and its clients, most counted first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VhostLeaks {
    pub paths: Vec<Counted<PATH_KEY_WORDS>>,
    pub clients: Vec<Counted<CLIENT_KEY_WORDS>>,
}

impl SharedTable {
    /// Counts one connection of vhost row `vhost` that sat in CLOSE_WAIT past the timeout,
    /// under its request and its client (the scanner only).
    pub fn count_leak(&self, vhost: u32, path: &PathKey, client: &ClientKey, now_unix_ms: u64) {
        let Some(report) = self.reports().get(vhost as usize) else {
            return;
        };
        count_key(&report.paths, path, now_unix_ms);
        count_key(&report.clients, client, now_unix_ms);
    }

    /// Empties every entry a dead writer left mid-replacement (the scanner, at each history
    /// sample, so that a vhost with no further leaks does not keep one hidden). How many.
    pub fn repair_reports(&self) -> usize {
        let mut n = 0;
        for r in self.reports() {
            n += r.paths.iter().filter(|e| e.repair()).count();
            n += r.clients.iter().filter(|e| e.repair()).count();
        }
        n
    }

    /// The report of vhost row `vhost` (empty for a row that does not exist).
    pub fn leak_report(&self, vhost: u32) -> VhostLeaks {
        match self.reports().get(vhost as usize) {
            Some(r) => VhostLeaks {
                paths: counted(&r.paths),
                clients: counted(&r.clients),
            },
            None => VhostLeaks::default(),
        }
    }
}

impl Slot {
    /// Whether the connection claimed with `tag` was counted in the leak report.
    pub fn leak_counted(&self, tag: u32) -> bool {
        self.leak_seen.load(Acquire) == (tag & TAG_MASK) | LEAK_SEEN
    }

    /// Takes the one right to count the connection claimed with `tag`: true once per
    /// connection, whichever scanner asks (a new guard process after a restart included).
    pub fn note_leak(&self, tag: u32) -> bool {
        let mine = (tag & TAG_MASK) | LEAK_SEEN;
        let cur = self.leak_seen.load(Acquire);
        if cur == mine {
            return false;
        }
        let won = self
            .leak_seen
            .compare_exchange(cur, mine, AcqRel, Acquire)
            .is_ok();
        if won {
            crash::point();
        }
        won
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::layout::{PathEntry, REPORT_K};
    use crate::table::HeapTable;

    fn path(p: &str) -> PathKey {
        PathKey::new(b"GET", p.as_bytes())
    }

    fn paths(t: &SharedTable, vhost: u32) -> Vec<(String, u64, u64)> {
        t.leak_report(vhost)
            .paths
            .iter()
            .map(|c| (c.key.text().unwrap().1, c.count, c.error))
            .collect()
    }

    #[test]
    fn keys_round_trip_and_truncate() {
        let k = PathKey::new(b"PROPFIND-LONG-METHOD", &[b'x'; 200]);
        let (m, p) = k.text().unwrap();
        assert_eq!(m, "PROPFIND-LONG-ME");
        assert_eq!(p.len(), LEAK_PATH_BYTES);
        assert_eq!(path("/a?").text().unwrap(), ("GET".into(), "/a?".into()));
        for ip in ["127.0.0.2", "2001:db8::1", "::ffff:10.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ClientKey::new(ip).ip(), Some(ip));
        }
        // Shapes `new` never makes are no key.
        let bad = Key {
            shape: 4,
            words: [1 << 40, 0],
        };
        assert_eq!(bad.ip(), None);
        assert_eq!(Key { shape: 5, ..bad }.ip(), None);
        let long = PathKey {
            shape: 200 << 8,
            ..path("/x")
        };
        assert_eq!(long.text(), None);
    }

    #[test]
    fn known_keys_are_counted_in_place_and_ranked() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let client = ClientKey::new("127.0.0.2".parse().unwrap());
        for (p, n) in [("/a", 2), ("/b", 5), ("/c", 1)] {
            for _ in 0..n {
                t.count_leak(0, &path(p), &client, 7);
            }
        }
        assert_eq!(
            paths(&t, 0),
            [
                ("/b".into(), 5, 0),
                ("/a".into(), 2, 0),
                ("/c".into(), 1, 0)
            ]
        );
        let clients = t.leak_report(0).clients;
        assert_eq!(clients.len(), 1);
        assert_eq!((clients[0].count, clients[0].last_seen_unix_ms), (8, 7));
        assert!(t.leak_report(1).paths.is_empty(), "another vhost's report");
        assert_eq!(t.leak_report(100_000), VhostLeaks::default());
    }

    /// Space-Saving's promises on a flood: the memory stays K entries, the counts add up to
    /// the connections counted, every count is within its error of the truth, and a heavy
    /// hitter (more than total / K) stays listed — on top — however many distinct keys come.
    #[test]
    fn a_flood_of_distinct_paths_keeps_the_heavy_hitter_on_top() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let client = ClientKey::new("10.0.0.1".parse().unwrap());
        let mut truth = std::collections::HashMap::new();
        let mut total = 0u64;
        for i in 0..600u64 {
            // One heavy hitter every 5th connection (120 of 600 > 600 / 16), the rest a
            // flood of 480 distinct paths.
            let p = if i % 5 == 0 {
                "/heavy".to_string()
            } else {
                format!("/flood/{i}")
            };
            t.count_leak(3, &path(&p), &client, i);
            *truth.entry(p).or_insert(0u64) += 1;
            total += 1;
        }
        let listed = paths(&t, 3);
        assert_eq!(listed.len(), REPORT_K, "the memory is K entries");
        assert_eq!(listed.iter().map(|e| e.1).sum::<u64>(), total);
        for (p, count, error) in &listed {
            let real = truth[p];
            assert!(
                count - error <= real && real <= *count,
                "{p}: {real} vs {count}-{error}"
            );
        }
        assert_eq!(listed[0].0, "/heavy", "{listed:?}");
        assert!(listed[0].1 >= 120 && listed[0].1 - listed[0].2 <= 120);
        // The heavy hitter came first, into an empty entry: counted exactly.
        assert_eq!((listed[0].1, listed[0].2), (120, 0));
    }

    #[test]
    fn readers_skip_an_entry_being_replaced_and_give_up_in_bounded_time() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let c = ClientKey::new("10.0.0.1".parse().unwrap());
        t.count_leak(0, &path("/a"), &c, 1);
        let e: &PathEntry = &t.reports()[0].paths[0];
        e.seq.fetch_add(1, Relaxed); // a writer mid-replacement (or dead)
        assert_eq!(e.read(), None);
        assert!(t.leak_report(0).paths.is_empty());
        // The next writer empties it (count 0: the entry is free) and counts its own key.
        t.count_leak(0, &path("/b"), &c, 2);
        assert_eq!(paths(&t, 0), [("/b".into(), 1, 0)]);
        assert_eq!(e.seq.load(Relaxed) & 1, 0);
    }

    #[test]
    fn hostile_counts_and_shapes_never_break_the_writer_or_the_reader() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let c = ClientKey::new("10.0.0.1".parse().unwrap());
        for e in &t.reports()[0].paths {
            e.count.store(u64::MAX, Relaxed);
            e.shape.store(u32::MAX, Relaxed);
        }
        t.count_leak(0, &path("/a"), &c, 1);
        let report = t.leak_report(0);
        // Every entry reads; the garbage shapes give no text, the new key does.
        let texts: Vec<_> = report.paths.iter().filter_map(|e| e.key.text()).collect();
        assert_eq!(texts, [("GET".to_string(), "/a".to_string())]);
        assert!(report.paths.iter().all(|e| e.count == u64::MAX));
    }

    #[test]
    fn a_connection_is_noted_once_per_claim() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let slot = &t.slots()[0];
        assert!(slot.note_leak(5));
        assert!(!slot.note_leak(5), "the same connection again");
        assert!(slot.leak_counted(5) && !slot.leak_counted(6));
        assert!(slot.note_leak(6), "the slot's next connection");
    }
}
