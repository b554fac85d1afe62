//! `SharedTable`: the one type through which the shared segment is read and written.
//!
//! It is a `Copy` handle (base pointer + layout) over memory that every Apache process maps at
//! the same address (anonymous shared memory created by the parent before forking). All access
//! after construction goes through atomics in `layout`'s structs, so the handle can be used from
//! any thread of any process without a lock. The only unsafe code is turning the base pointer
//! into typed references, and it lives in this file.

use std::ptr::NonNull;
use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::layout::*;

#[derive(Debug, PartialEq, Eq)]
pub enum TableError {
    TooSmall {
        have: usize,
        need: usize,
    },
    Misaligned,
    /// The segment was written by a build with another layout (or is not ours).
    Incompatible,
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableError::TooSmall { have, need } => {
                write!(f, "shared segment has {have} bytes, {need} needed")
            }
            TableError::Misaligned => f.write_str("shared segment is not 64-byte aligned"),
            TableError::Incompatible => f.write_str("shared segment has another layout version"),
        }
    }
}

/// The capacities, not the offsets: every accessor computes the one offset it needs
/// (`layout()`, inlined), which on the per-connection path is a few instructions instead of
/// the whole layout per handle.
#[derive(Clone, Copy, Debug)]
pub struct SharedTable {
    base: NonNull<u8>,
    nslots: usize,
    nchildren: usize,
}

// SAFETY: every field reachable through the handle is an atomic (see layout.rs), so concurrent
// use from several threads is data-race free; the memory outlives the handle by construction
// contract (`init`/`attach`).
unsafe impl Send for SharedTable {}
// SAFETY: as above — shared references only ever reach atomics.
unsafe impl Sync for SharedTable {}

impl SharedTable {
    pub fn required_size(nslots: usize, nchildren: usize) -> usize {
        Layout::new(nslots, nchildren).total_size
    }

    /// Formats `len` bytes at `base` as an empty table.
    ///
    /// # Safety
    /// `base` must point to `len` writable bytes that stay mapped (at this address, in every
    /// process that uses the handle) for as long as any handle exists, and no other code may
    /// access them except through `SharedTable`. No other process may be using them yet.
    pub unsafe fn init(
        base: *mut u8,
        len: usize,
        nslots: usize,
        nchildren: usize,
        now_mono_ms: u64,
    ) -> Result<SharedTable, TableError> {
        let layout = Layout::new(nslots, nchildren);
        let table = Self::check(base, len, layout, layout.total_size)?;
        // SAFETY: the caller guarantees exclusive access to `len >= total_size` bytes; zero is
        // a valid bit pattern for every atomic in the layout.
        unsafe { std::ptr::write_bytes(base, 0, layout.total_size) };
        let h = table.header();
        h.layout_version.store(LAYOUT_VERSION, Relaxed);
        h.nslots.store(nslots as u32, Relaxed);
        h.nchildren.store(nchildren as u32, Relaxed);
        h.total_size.store(layout.total_size as u64, Relaxed);
        h.created_mono_ms.store(now_mono_ms, Relaxed);
        h.magic.store(MAGIC, Release);
        Ok(table)
    }

    /// Re-opens a segment formatted by `init` (e.g. after the module was reloaded).
    ///
    /// # Safety
    /// Same contract as `init`, except that the memory may already be in use by other
    /// processes through their own handles.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<SharedTable, TableError> {
        // Read the capacities through a header-only handle before trusting them: a segment
        // of another layout may be smaller than even an empty table of this one.
        let probe = Self::check(base, len, Layout::new(0, 0), std::mem::size_of::<Header>())?;
        let h = probe.header();
        if h.magic.load(Acquire) != MAGIC || h.layout_version.load(Relaxed) != LAYOUT_VERSION {
            return Err(TableError::Incompatible);
        }
        let layout = Layout::new(
            h.nslots.load(Relaxed) as usize,
            h.nchildren.load(Relaxed) as usize,
        );
        if h.total_size.load(Relaxed) != layout.total_size as u64 {
            return Err(TableError::Incompatible);
        }
        Self::check(base, len, layout, layout.total_size)
    }

    /// The handle as (base, slots, child rows), to be rebuilt by `from_parts` without storing
    /// the handle itself (`runtime` keeps these in atomics).
    pub fn parts(&self) -> (*mut u8, usize, usize) {
        (self.base.as_ptr(), self.nslots, self.nchildren)
    }

    /// Rebuilds a handle from `parts`.
    ///
    /// # Safety
    /// The parts must come from `parts()` of a live handle, whose segment is still mapped.
    pub unsafe fn from_parts(base: *mut u8, nslots: usize, nchildren: usize) -> SharedTable {
        SharedTable {
            // SAFETY: per the contract, base came from a NonNull.
            base: unsafe { NonNull::new_unchecked(base) },
            nslots,
            nchildren,
        }
    }

    /// A handle over `len` bytes at `base` once they cover `need` bytes (the parts the handle
    /// will reach: `layout.total_size`, or only the header for a probe) and are aligned.
    fn check(
        base: *mut u8,
        len: usize,
        layout: Layout,
        need: usize,
    ) -> Result<SharedTable, TableError> {
        if len < need {
            return Err(TableError::TooSmall { have: len, need });
        }
        let base = NonNull::new(base).ok_or(TableError::Misaligned)?;
        if !(base.as_ptr() as usize).is_multiple_of(64) {
            return Err(TableError::Misaligned);
        }
        Ok(SharedTable {
            base,
            nslots: layout.nslots,
            nchildren: layout.nchildren,
        })
    }

    #[inline(always)]
    fn layout(&self) -> Layout {
        Layout::new(self.nslots, self.nchildren)
    }

    fn part<T>(&self, offset: usize, count: usize) -> &[T] {
        // SAFETY: `check` verified the segment covers `layout.total_size` bytes (a probe
        // handle from `attach` covers only the header and reaches nothing else), every part's
        // offset/count comes from that layout, offsets are 64-byte aligned, and all types in
        // layout.rs consist only of atomics, for which any bit pattern (zeroed by `init`) is
        // valid and shared references are the intended access.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset) as *const T, count) }
    }

    pub fn header(&self) -> &Header {
        &self.part::<Header>(0, 1)[0]
    }
    pub fn vhosts(&self) -> &[VhostRow] {
        self.part(self.layout().vhosts_offset, MAX_VHOSTS)
    }
    pub fn children(&self) -> &[ChildRow] {
        self.part(self.layout().children_offset, self.nchildren)
    }
    pub fn slots(&self) -> &[Slot] {
        self.part(self.layout().slots_offset, self.nslots)
    }
    /// The in-flight bitmap: bit `i % 64` of word `i / 64` for slot `i`.
    pub fn inflight(&self) -> &[std::sync::atomic::AtomicU64] {
        self.part(self.layout().inflight_offset, inflight_words(self.nslots))
    }
    /// The leak report of every vhost row (same index as `vhosts`).
    pub fn reports(&self) -> &[VhostReport] {
        self.part(self.layout().report_offset, MAX_VHOSTS)
    }
    pub fn history(&self) -> &History {
        &self.part::<History>(self.layout().history_offset, 1)[0]
    }
    pub fn nslots(&self) -> usize {
        self.nslots
    }
    pub fn counters(&self) -> &Counters {
        &self.header().counters
    }

    /// The listeners recorded at post_config (what the kernel view filters on).
    pub fn listeners(&self) -> crate::kernel::Listeners {
        let h = self.header();
        let n = (h.listen_port_count.load(Relaxed) as usize).min(MAX_LISTEN_PORTS);
        let mut l = crate::kernel::Listeners::default();
        for entry in h.listen_ports.iter().take(n).map(|p| p.load(Relaxed)) {
            let port = (entry & 0xffff) as u16;
            if !l.ports.contains(&port) {
                l.ports.push(port);
            }
            if entry & LISTEN_IPV6 != 0 {
                l.ipv6 = true;
            } else {
                l.ipv4 = true;
            }
        }
        l
    }

    /// Parent only (post_config): records the listeners as (port, is IPv6).
    pub fn set_listeners(&self, listeners: &[(u16, bool)]) {
        let h = self.header();
        let n = listeners.len().min(MAX_LISTEN_PORTS);
        for (slot, (port, ipv6)) in h.listen_ports.iter().zip(&listeners[..n]) {
            slot.store(*port as u32 | if *ipv6 { LISTEN_IPV6 } else { 0 }, Relaxed);
        }
        h.listen_port_count.store(n as u32, Relaxed);
    }

    pub fn record_close_wait_duration(&self, ms: u64) {
        let h = self.header();
        let bucket = HISTOGRAM_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(HISTOGRAM_BOUNDS_MS.len());
        h.histogram[bucket].fetch_add(1, Relaxed);
        h.histogram_sum_ms.fetch_add(ms, Relaxed);
    }

    // ---- vhost rows --------------------------------------------------------------------

    /// Parent only (post_config): the row for `name:port`, created if new. Rows are never
    /// removed, so counters survive restarts and indexes stay valid in old children.
    pub fn register_vhost(&self, name: &str, port: u16) -> u32 {
        let h = self.header();
        let count = h.vhost_count.load(Acquire) as usize;
        let rows = self.vhosts();
        for (i, row) in rows.iter().take(count).enumerate() {
            if row.port.load(Relaxed) == port as u32
                && read_bytes(&row.name, row.name_len.load(Relaxed) as usize) == name.as_bytes()
            {
                return i as u32;
            }
        }
        if count >= MAX_VHOSTS {
            return (MAX_VHOSTS - 1) as u32;
        }
        let row = &rows[count];
        let len = write_bytes(&row.name, name.as_bytes());
        row.name_len.store(len as u32, Relaxed);
        row.port.store(port as u32, Relaxed);
        h.vhost_count.store(count as u32 + 1, Release);
        count as u32
    }

    pub fn vhost_name(&self, index: u32) -> (String, u16) {
        match self.vhosts().get(index as usize) {
            Some(row) if (index as usize) < self.header().vhost_count.load(Acquire) as usize => {
                let name = read_bytes(&row.name, row.name_len.load(Relaxed) as usize);
                (
                    String::from_utf8_lossy(&name).into_owned(),
                    row.port.load(Relaxed) as u16,
                )
            }
            _ => (String::from("?"), 0),
        }
    }

    pub fn vhost(&self, index: u32) -> Option<&VhostRow> {
        let count = self.header().vhost_count.load(Acquire) as usize;
        self.vhosts()
            .get(index as usize)
            .filter(|_| (index as usize) < count)
    }

    /// The guard process's list of untracked CLOSE_WAIT sockets (`Header::leaks`), read the
    /// way `LeakRow` says: a row is kept only if its `inode` was non-zero and unchanged while
    /// the rest was read. Free rows and rows being rewritten are left out. Display data only.
    pub fn leak_rows(&self) -> Vec<LeakView> {
        let mut out = Vec::new();
        for row in &self.header().leaks {
            let inode = row.inode.load(Acquire);
            if inode == 0 {
                continue;
            }
            let kind = row.kind.load(Relaxed);
            let holder_pid = row.holder_pid.load(Relaxed);
            let comm = read_bytes(&row.holder_comm, row.comm_len.load(Relaxed) as usize);
            let closed = row.closed.load(Relaxed) != 0;
            let since_mono_ms = row.since_mono_ms.load(Relaxed);
            // The reads above may not move past the re-check below.
            fence(Acquire);
            if row.inode.load(Relaxed) != inode {
                continue;
            }
            out.push(LeakView {
                inode,
                kind,
                holder_pid,
                holder_comm: String::from_utf8_lossy(&comm).into_owned(),
                closed,
                since_mono_ms,
            });
        }
        out
    }
}

/// A copy of one published `LeakRow`. `holder_comm` is raw text from another process's
/// /proc/<pid>/comm: escape it before output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakView {
    pub inode: u64,
    /// `leak_kind::*`.
    pub kind: u32,
    /// 0 if no holder was found.
    pub holder_pid: u32,
    pub holder_comm: String,
    pub closed: bool,
    pub since_mono_ms: u64,
}

/// Packs bytes little-endian into atomic words; returns how many bytes fit. Only the words
/// that hold bytes are written: readers stop at the stored length, so stale words past it
/// never show (this keeps the per-request cost to a few stores).
pub(crate) fn write_bytes(words: &[std::sync::atomic::AtomicU64], bytes: &[u8]) -> usize {
    let len = bytes.len().min(words.len() * 8);
    // Whole words as plain loads, the tail byte by byte: no memcpy call per word.
    let mut whole = bytes[..len].chunks_exact(8);
    let mut n = 0;
    for (w, chunk) in words.iter().zip(&mut whole) {
        let word: [u8; 8] = chunk.try_into().unwrap_or_default();
        w.store(u64::from_le_bytes(word), Relaxed);
        n += 1;
    }
    let tail = whole.remainder();
    if let (false, Some(w)) = (tail.is_empty(), words.get(n)) {
        let word = tail.iter().rev().fold(0u64, |acc, &b| acc << 8 | b as u64);
        w.store(word, Relaxed);
    }
    len
}

pub(crate) fn read_bytes(words: &[std::sync::atomic::AtomicU64], len: usize) -> Vec<u8> {
    let len = len.min(words.len() * 8);
    let mut out = Vec::with_capacity(len.div_ceil(8) * 8);
    for w in &words[..len.div_ceil(8)] {
        out.extend_from_slice(&w.load(Relaxed).to_le_bytes());
    }
    out.truncate(len);
    out
}
