//! The scan's join with the table: what the kernel says about our connections, applied once
//! per interval for the whole server.
//!
//! The kernel is asked in one of two ways (`pass`): exact lookups of the connections the
//! table names as in flight (`candidates`: reading or handling, the only ones Apache is not
//! polling, plus the ones this scanner is watching and those of hung children), or a full
//! dump of the CLOSE_WAIT sockets on our ports, every SocketGuardFullScanInterval, for what
//! the table cannot name. Either way each connection is matched by its 4-tuple: a newly seen
//! one gets its CLOSE_WAIT mark (and the kernel's inode, which the owner checks its duplicate
//! against before acting), marks of those no longer there end, the owners' child rows are
//! flagged so that only children with something to do walk their slots, and connections past
//! their timeout are counted in the leak report (`leaks`). A dump that finds nothing while
//! the scanner watches nothing does not walk the table at all.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use super::leaks;
use crate::config::{MAX_SCAN_INTERVAL_MS, MIN_SCAN_INTERVAL_MS};
use crate::kernel::diag_lookup::{Lookup, Tuple};
use crate::kernel::{KernelSocket, TCP_CLOSE_WAIT};
use crate::table::layout::Slot;
use crate::table::lease::Lease;
use crate::table::slot::{tuple_of, FLAG_FORCE_CLOSED};
use crate::table::{SharedTable, ROW_CLAIMING};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Whether the table was walked at all (a full dump's join).
    pub walked: bool,
    /// Tracked connections seen in CLOSE_WAIT for the first time.
    pub newly_marked: usize,
    /// Marked connections no longer in CLOSE_WAIT.
    pub cleared: usize,
    /// Tracked connections in CLOSE_WAIT after the scan (marked, not yet shut down).
    pub close_wait: usize,
    /// CLOSE_WAIT sockets on our ports that match no tracked connection, as the last full
    /// dump found them (lookups cannot see what the table does not name).
    pub untracked: usize,
    /// Connections counted in the leak report by this scan (`leaks`).
    pub leaks_counted: usize,
    /// Exact kernel lookups made (0 for a full dump).
    pub lookups: usize,
    /// A full dump of our ports rather than lookups.
    pub full: bool,
}

/// A connection the kernel confirmed in CLOSE_WAIT in the last scan: the slot, the claim it
/// was seen under, and the kernel's socket — what the rescue acts on, never the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmed {
    pub index: usize,
    pub tag: u32,
    pub socket: KernelSocket,
}

/// A connection to look up: its slot, the claim read, and its tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub lease: Lease,
    pub tuple: Tuple,
}

/// The scanner's memory between scans, kept in the scanning process, not in shared memory,
/// so nothing stored can drift. A new scanner's first scan is a full dump, which walks the
/// table once and learns the marks a previous one left.
#[derive(Default)]
pub struct Scanner {
    /// Connections to look up again next scan whatever their state: marked, or shut down by
    /// the guard and still held.
    watch: HashSet<(usize, u32)>,
    walked: bool,
    /// The last full dump's untracked count.
    untracked: usize,
    /// When the next full dump is due (0: now).
    next_full_ms: u64,
    confirmed: Vec<Confirmed>,
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Scanner {
    /// Whether this scan must be a full dump (its period is up, or this scanner is new).
    pub fn full_due(&self, now_mono_ms: u64) -> bool {
        now_mono_ms >= self.next_full_ms
    }

    /// What the kernel confirmed in CLOSE_WAIT in the last scan.
    pub fn confirmed(&self) -> &[Confirmed] {
        &self.confirmed
    }

    /// Applies one full dump (`close_wait`: CLOSE_WAIT sockets on our ports) to the table.
    pub fn apply(
        &mut self,
        table: &SharedTable,
        close_wait: &[KernelSocket],
        now_mono_ms: u64,
    ) -> ScanOutcome {
        self.next_full_ms = now_mono_ms.saturating_add(full_interval_ms(table));
        let mut out = ScanOutcome {
            full: true,
            ..Default::default()
        };
        if close_wait.is_empty() && self.walked && self.watch.is_empty() {
            self.untracked = 0;
            self.confirmed.clear();
            return out;
        }
        out.walked = true;
        let by_tuple: HashMap<Tuple, &KernelSocket> = close_wait
            .iter()
            .map(|k| ((canonical(k.local), canonical(k.remote)), k))
            .collect();
        let mut join = Join::new(table, now_mono_ms);
        // Slots found in the dump (a socket belongs to one connection: no set needed).
        let mut matched = 0;
        for (i, slot) in table.slots().iter().enumerate() {
            let lease = slot.lease();
            if !lease.state.is_open() {
                continue;
            }
            let tuple = tuple_of(slot);
            if slot.lease() != lease {
                continue; // changed hands while we read its addresses
            }
            let found = by_tuple.get(&tuple).copied();
            matched += usize::from(found.is_some());
            join.visit(i, slot, lease, found);
        }
        out.untracked = close_wait.len().saturating_sub(matched);
        self.untracked = out.untracked;
        self.walked = true;
        self.finish(join, &mut out);
        out
    }

    /// The connections to look up this scan, on our `ports`: those in flight, those watched,
    /// and every connection of a `hung` child (its guard cannot act; the rescue may).
    /// Reads one bit per slot, plus the slots it names (clearing the bits of those no longer
    /// in flight: the scanner's half of `table::inflight`); the table is walked only while a
    /// child is hung.
    pub fn candidates(
        &self,
        table: &SharedTable,
        ports: &[u16],
        hung: &HashSet<u32>,
    ) -> Vec<Candidate> {
        let slots = table.slots();
        let mut wanted = table.sweep_in_flight();
        wanted.extend(self.watch.iter().map(|&(i, _)| i));
        if !hung.is_empty() {
            let of_hung = |(_, s): &(usize, &Slot)| hung.contains(&s.lease().pid);
            wanted.extend(slots.iter().enumerate().filter(of_hung).map(|(i, _)| i));
        }
        wanted.sort_unstable();
        wanted.dedup();
        wanted
            .into_iter()
            .filter_map(|index| {
                let slot = slots.get(index)?;
                let lease = slot.lease();
                let why = lease.state.in_flight()
                    || self.watch.contains(&(index, lease.tag))
                    || hung.contains(&lease.pid);
                if !why || !lease.state.is_open() {
                    return None;
                }
                let tuple = tuple_of(slot);
                (slot.lease() == lease && ports.contains(&tuple.0.port())).then_some(Candidate {
                    index,
                    lease,
                    tuple,
                })
            })
            .collect()
    }

    /// Applies the kernel's answers to `candidates` (one each, in order).
    pub fn apply_lookups(
        &mut self,
        table: &SharedTable,
        candidates: &[Candidate],
        answers: &[Lookup],
        now_mono_ms: u64,
    ) -> ScanOutcome {
        let mut out = ScanOutcome {
            lookups: candidates.len(),
            untracked: self.untracked,
            ..Default::default()
        };
        let mut join = Join::new(table, now_mono_ms);
        for (c, answer) in candidates.iter().zip(answers) {
            let Some(slot) = table.slots().get(c.index) else {
                continue;
            };
            // Its state may have moved on meanwhile; the claim must be the one looked up.
            let lease = slot.lease();
            if lease.tag != c.lease.tag || lease.pid != c.lease.pid || !lease.state.is_open() {
                continue;
            }
            let found = match answer {
                Lookup::Found(k) => Some(k),
                Lookup::Gone => None,
            };
            join.visit(c.index, slot, lease, found);
        }
        self.finish(join, &mut out);
        out
    }

    fn finish(&mut self, join: Join, out: &mut ScanOutcome) {
        out.newly_marked = join.newly_marked;
        out.cleared = join.cleared;
        out.close_wait = join.confirmed.len();
        out.leaks_counted = join.leaks_counted;
        self.watch = join.watch;
        self.confirmed = join.confirmed;
    }
}

/// One scan's pass over the connections it looks at.
struct Join<'a> {
    table: &'a SharedTable,
    now: u64,
    rows: HashMap<u32, usize>,
    grace: u64,
    watch: HashSet<(usize, u32)>,
    confirmed: Vec<Confirmed>,
    newly_marked: usize,
    cleared: usize,
    leaks_counted: usize,
}

impl<'a> Join<'a> {
    fn new(table: &'a SharedTable, now: u64) -> Join<'a> {
        Join {
            table,
            now,
            rows: published_rows(table),
            grace: leak_grace_ms(table),
            watch: HashSet::new(),
            confirmed: Vec::new(),
            newly_marked: 0,
            cleared: 0,
            leaks_counted: 0,
        }
    }

    /// One connection (slot `index`, claimed as `lease`) and the kernel's socket with its
    /// tuple, if there is one.
    fn visit(&mut self, index: usize, slot: &Slot, lease: Lease, kernel: Option<&KernelSocket>) {
        let t = self.table;
        let flags = slot.flags.load(Relaxed);
        let close_wait = kernel.filter(|k| k.state == TCP_CLOSE_WAIT);
        match close_wait {
            // A force-closed socket still in CLOSE_WAIT: the kernel has not moved it on yet.
            Some(_) if flags & FLAG_FORCE_CLOSED != 0 => {}
            Some(k) => {
                self.newly_marked += usize::from(mark(t, slot, lease.tag, k, self.now));
                self.watch.insert((index, lease.tag));
                self.confirmed.push(Confirmed {
                    index,
                    tag: lease.tag,
                    socket: k.clone(),
                });
                if let Some(&row) = self.rows.get(&lease.pid) {
                    t.children()[row].pending.store(1, Relaxed);
                }
            }
            None => self.cleared += usize::from(t.end_close_wait(slot, lease.tag)),
        }
        if flags & FLAG_FORCE_CLOSED != 0 {
            self.watch.insert((index, lease.tag));
        }
        let counted = leaks::count_if_overdue(t, slot, lease, flags, self.now, self.grace);
        self.leaks_counted += usize::from(counted);
    }
}

/// Marks `tag`'s connection as in CLOSE_WAIT since `now`, unless it already is, recording the
/// kernel's inode first: the owner acts only through a duplicate with that inode, and it reads
/// the inode after the mark, which publishes it. A mark made for another socket with the same
/// tuple (the connection ended, a new one reused it) is ended and started afresh. True if
/// this started a period.
fn mark(table: &SharedTable, slot: &Slot, tag: u32, k: &KernelSocket, now: u64) -> bool {
    if slot.close_wait_since(tag).is_some() {
        if slot.inode.load(Relaxed) == k.inode {
            return false;
        }
        table.end_close_wait(slot, tag);
    }
    slot.inode.store(k.inode, Relaxed);
    table.mark_close_wait(slot, tag, now)
}

/// How long past its timeout a marked connection with no verdict waits to be counted in the
/// leak report: one scan interval (the owner acts at the timeout), at least `MIN_GRACE_MS`.
fn leak_grace_ms(table: &SharedTable) -> u64 {
    let interval = table.header().scan_interval_ms.load(Relaxed);
    interval
        .clamp(MIN_SCAN_INTERVAL_MS, MAX_SCAN_INTERVAL_MS)
        .max(leaks::MIN_GRACE_MS)
}

/// SocketGuardFullScanInterval as published (a table that says 0 gets the scan interval).
fn full_interval_ms(table: &SharedTable) -> u64 {
    let h = table.header();
    let interval = h.scan_interval_ms.load(Relaxed);
    match h.full_scan_interval_ms.load(Relaxed) {
        0 => interval,
        full => full,
    }
    .clamp(
        MIN_SCAN_INTERVAL_MS,
        crate::config::MAX_FULL_SCAN_INTERVAL_MS,
    )
}

/// pid → row index of the children whose rows are published.
fn published_rows(table: &SharedTable) -> HashMap<u32, usize> {
    table
        .children()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r.pid.load(Acquire) {
            pid if pid == 0 || pid & ROW_CLAIMING != 0 => None,
            pid => Some((pid, i)),
        })
        .collect()
}

#[cfg(test)]
mod tests;
