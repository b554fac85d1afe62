//! The last hour: a ring of `HISTORY_SAMPLES` samples, one per `HISTORY_PERIOD_MS`, written
//! by the scanner only.
//!
//! A sample is written in place, then published: its `stamp` is zeroed first and set to the
//! sample's number last, and only then does `head` count it. A writer that dies part-way
//! leaves a slot whose stamp is 0, or ahead of `head`: readers skip it, and the next writer,
//! which finds the same `head`, writes that slot again. Readers check a sample's stamp before
//! and after reading it (a seqlock), so a sample rewritten under them is skipped too, and they
//! read at most `HISTORY_SAMPLES` slots whatever `head` says (children can write anything).

use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::crash;
use super::layout::{HistorySample, HISTORY_SAMPLES};
use super::SharedTable;

/// One sample as plain data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub mono_ms: u64,
    pub unix_ms: u64,
    /// Tracked connections in CLOSE_WAIT.
    pub close_wait: u32,
    /// Open connections (force-closed ones whose handler still runs are not open).
    pub open: u32,
    /// CLOSE_WAIT sockets on our ports that match no tracked connection.
    pub untracked: u32,
    /// The force-closed counters at the sample (readers take differences).
    pub force_closed_guard: u64,
    pub force_closed_rescue: u64,
}

/// Where sample number `number` (1-based) lives.
fn slot_of(number: u64) -> usize {
    (number.wrapping_sub(1) % HISTORY_SAMPLES as u64) as usize
}

impl HistorySample {
    fn write(&self, number: u64, s: &Sample) {
        self.stamp.store(0, Relaxed);
        crash::point();
        fence(Release);
        for (field, v) in [
            (&self.mono_ms, s.mono_ms),
            (&self.unix_ms, s.unix_ms),
            (&self.force_closed_guard, s.force_closed_guard),
            (&self.force_closed_rescue, s.force_closed_rescue),
        ] {
            field.store(v, Relaxed);
            crash::point();
        }
        for (field, v) in [
            (&self.close_wait, s.close_wait),
            (&self.open, s.open),
            (&self.untracked, s.untracked),
        ] {
            field.store(v, Relaxed);
            crash::point();
        }
        self.stamp.store(number, Release);
        crash::point();
    }

    /// Sample `number`, if this slot holds it, whole.
    pub(crate) fn read(&self, number: u64) -> Option<Sample> {
        if number == 0 || self.stamp.load(Acquire) != number {
            return None;
        }
        crash::overtaken();
        let s = Sample {
            mono_ms: self.mono_ms.load(Relaxed),
            unix_ms: self.unix_ms.load(Relaxed),
            close_wait: self.close_wait.load(Relaxed),
            open: self.open.load(Relaxed),
            untracked: self.untracked.load(Relaxed),
            force_closed_guard: self.force_closed_guard.load(Relaxed),
            force_closed_rescue: self.force_closed_rescue.load(Relaxed),
        };
        // The reads above may not move past the re-check below.
        fence(Acquire);
        (self.stamp.load(Relaxed) == number).then_some(s)
    }
}

impl SharedTable {
    /// Adds a sample to the ring, replacing the oldest once it is full (the scanner only).
    pub fn push_sample(&self, s: &Sample) {
        let h = self.history();
        let number = h.head.load(Acquire).wrapping_add(1);
        h.samples[slot_of(number)].write(number, s);
        h.head.store(number, Release);
        crash::point();
    }

    /// The published samples, oldest first; samples being written, or left torn by a writer
    /// that died, are left out.
    pub fn samples(&self) -> Vec<Sample> {
        let h = self.history();
        let head = h.head.load(Acquire);
        let n = head.min(HISTORY_SAMPLES as u64);
        (0..n)
            .rev()
            .filter_map(|back| {
                let number = head - back;
                h.samples[slot_of(number)].read(number)
            })
            .collect()
    }

    /// The newest published sample, if it is whole.
    pub fn newest_sample(&self) -> Option<Sample> {
        let h = self.history();
        let head = h.head.load(Acquire);
        h.samples[slot_of(head)].read(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::HeapTable;

    fn sample(i: u64) -> Sample {
        Sample {
            mono_ms: i * 5_000,
            unix_ms: 1_700_000_000_000 + i * 5_000,
            close_wait: i as u32,
            open: 10 + i as u32,
            untracked: 1,
            force_closed_guard: i * 2,
            force_closed_rescue: i,
        }
    }

    #[test]
    fn the_ring_keeps_the_last_hour_oldest_first() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        assert!(t.samples().is_empty());
        assert_eq!(t.newest_sample(), None);
        for i in 1..=3 {
            t.push_sample(&sample(i));
        }
        assert_eq!(t.samples(), [sample(1), sample(2), sample(3)]);
        for i in 4..=HISTORY_SAMPLES as u64 + 5 {
            t.push_sample(&sample(i));
        }
        let all = t.samples();
        assert_eq!(all.len(), HISTORY_SAMPLES, "a fixed ring");
        assert_eq!(all[0], sample(6));
        assert_eq!(t.newest_sample(), Some(sample(HISTORY_SAMPLES as u64 + 5)));
    }

    #[test]
    fn a_sample_being_written_is_skipped_and_a_hostile_head_is_bounded() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        for i in 1..=3 {
            t.push_sample(&sample(i));
        }
        t.history().samples[1].stamp.store(0, Relaxed);
        assert_eq!(t.samples(), [sample(1), sample(3)]);
        t.history().head.store(u64::MAX, Relaxed);
        assert!(t.samples().len() <= HISTORY_SAMPLES);
        t.push_sample(&sample(9)); // wraps to number 0: never shown, never a panic
        assert!(t.samples().len() <= HISTORY_SAMPLES);
    }
}
