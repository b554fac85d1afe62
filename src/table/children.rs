//! The child row protocol. A row is claimed in two steps so that no reader ever pairs a pid
//! with another process's start time: CAS `pid | ROW_CLAIMING` into a free row, write the
//! start time and generation, then publish the bare pid. A row still marked claiming is judged
//! by its pid alone; whoever finds its process gone frees it.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use super::crash;
use super::layout::ChildRow;
use super::SharedTable;

/// In `ChildRow::pid`: the claimer has not published its start time yet.
pub const ROW_CLAIMING: u32 = 1 << 31;

impl ChildRow {
    /// The row's pid, if a child holds it (published or still claiming).
    pub fn holder(&self) -> Option<u32> {
        match self.pid.load(Acquire) & !ROW_CLAIMING {
            0 => None,
            pid => Some(pid),
        }
    }
}

impl SharedTable {
    pub fn claim_child(
        &self,
        pid: u32,
        generation: u64,
        start_time: u64,
        now_mono_ms: u64,
    ) -> Option<usize> {
        for (i, row) in self.children().iter().enumerate() {
            // A row left by a recycled pid of ours (or by our own interrupted claim) is ours.
            let cur = row.pid.load(Acquire);
            if (cur == 0 || cur & !ROW_CLAIMING == pid)
                && row
                    .pid
                    .compare_exchange(cur, pid | ROW_CLAIMING, AcqRel, Relaxed)
                    .is_ok()
            {
                crash::point();
                row.generation.store(generation, Relaxed);
                crash::point();
                row.start_time.store(start_time, Relaxed);
                crash::point();
                row.pending.store(0, Relaxed);
                crash::point();
                row.last_checkin_mono_ms.store(now_mono_ms, Relaxed);
                crash::point();
                row.pid.store(pid, Release);
                crash::point();
                return Some(i);
            }
        }
        None
    }

    pub fn check_in(&self, index: usize, now_mono_ms: u64) {
        if let Some(row) = self.children().get(index) {
            row.last_checkin_mono_ms.store(now_mono_ms, Release);
        }
    }

    /// The child row of `pid`, if it has one.
    pub fn child_of(&self, pid: u32) -> Option<&ChildRow> {
        self.children().iter().find(|r| r.pid.load(Relaxed) == pid)
    }

    pub fn release_child(&self, index: usize, pid: u32) {
        if let Some(row) = self.children().get(index) {
            row.pending.store(0, Relaxed);
            crash::point();
            let _ = row.pid.compare_exchange(pid, 0, AcqRel, Relaxed);
            crash::point();
        }
        self.hand_back_scanner(pid);
    }

    /// Frees the rows of processes that are gone (and the scanner role one of them held);
    /// returns their pids, whose slots `reclaim_slots` then frees.
    pub fn reclaim_dead_children(&self, mut is_alive: impl FnMut(u32, u64) -> bool) -> Vec<u32> {
        let mut dead = Vec::new();
        for row in self.children() {
            let raw = row.pid.load(Acquire);
            let Some(pid) = row.holder() else { continue };
            let start = if raw & ROW_CLAIMING != 0 {
                0 // not published yet: any process with this pid counts as the claimer
            } else {
                row.start_time.load(Relaxed)
            };
            if is_alive(pid, start) {
                continue;
            }
            if row.pid.compare_exchange(raw, 0, AcqRel, Relaxed).is_ok() {
                crash::point();
                dead.push(pid);
            }
            self.hand_back_scanner(pid);
        }
        dead
    }

    /// Frees the rows and slots of processes that are gone (`is_alive(pid, start_time)`; a
    /// start time of 0 means any process with that pid counts). `me` is the caller's pid.
    /// Returns the slots freed.
    pub fn reclaim_dead(&self, me: u32, mut is_alive: impl FnMut(u32, u64) -> bool) -> u64 {
        let dead = self.reclaim_dead_children(&mut is_alive);
        let mut cache: Vec<(u32, bool)> = Vec::new();
        self.reclaim_slots(me, |pid| {
            if dead.contains(&pid) {
                return false;
            }
            if let Some(&(_, a)) = cache.iter().find(|(p, _)| *p == pid) {
                return a;
            }
            let a = is_alive(pid, 0);
            cache.push((pid, a));
            a
        })
    }

    /// Hands the scanner role back at once instead of letting the beat go stale.
    fn hand_back_scanner(&self, pid: u32) {
        let _ = self
            .header()
            .scanner_pid
            .compare_exchange(pid, 0, AcqRel, Relaxed);
    }
}
