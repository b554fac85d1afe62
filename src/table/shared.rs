//! `SharedTable`: the one type through which the shared segment is read and written.
//!
//! It is a `Copy` handle (base pointer + layout) over memory that every Apache process maps at
//! the same address (anonymous shared memory created by the parent before forking). All access
//! after construction goes through atomics in `layout`'s structs, so the handle can be used from
//! any thread of any process without a lock. The only unsafe code is turning the base pointer
//! into typed references, and it lives in this file.

use std::ptr::NonNull;
use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use super::layout::*;
use super::state::ConnState;

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

#[derive(Clone, Copy, Debug)]
pub struct SharedTable {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: every field reachable through the handle is an atomic (see layout.rs), so concurrent
// use from several threads is data-race free; the memory outlives the handle by construction
// contract (`init`/`attach`).
unsafe impl Send for SharedTable {}
// SAFETY: as above — shared references only ever reach atomics.
unsafe impl Sync for SharedTable {}

/// A claimed slot: its index and the tag it was claimed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHandle {
    pub index: u32,
    pub tag: u64,
}

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
        let table = Self::check(base, len, layout)?;
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
        if len < std::mem::size_of::<Header>() {
            return Err(TableError::TooSmall {
                have: len,
                need: std::mem::size_of::<Header>(),
            });
        }
        // Read the capacities through a header-only handle before trusting them.
        let probe = Self::check(base, len, Layout::new(0, 0))?;
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
        Self::check(base, len, layout)
    }

    fn check(base: *mut u8, len: usize, layout: Layout) -> Result<SharedTable, TableError> {
        if len < layout.total_size {
            return Err(TableError::TooSmall {
                have: len,
                need: layout.total_size,
            });
        }
        let base = NonNull::new(base).ok_or(TableError::Misaligned)?;
        if !(base.as_ptr() as usize).is_multiple_of(64) {
            return Err(TableError::Misaligned);
        }
        Ok(SharedTable { base, layout })
    }

    fn part<T>(&self, offset: usize, count: usize) -> &[T] {
        // SAFETY: `check` verified the segment covers `layout.total_size` bytes, every part's
        // offset/count comes from that layout, offsets are 64-byte aligned, and all types in
        // layout.rs consist only of atomics, for which any bit pattern (zeroed by `init`) is
        // valid and shared references are the intended access.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset) as *const T, count) }
    }

    pub fn header(&self) -> &Header {
        &self.part::<Header>(0, 1)[0]
    }
    pub fn vhosts(&self) -> &[VhostRow] {
        self.part(self.layout.vhosts_offset, MAX_VHOSTS)
    }
    pub fn children(&self) -> &[ChildRow] {
        self.part(self.layout.children_offset, self.layout.nchildren)
    }
    pub fn slots(&self) -> &[Slot] {
        self.part(self.layout.slots_offset, self.layout.nslots)
    }
    pub fn nslots(&self) -> usize {
        self.layout.nslots
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

    // ---- connection slots -------------------------------------------------------------

    /// Claims a free slot for a new connection owned by `pid`, probing from `hint` so that
    /// processes spread out instead of all contending for slot 0. `None` when the table is
    /// full; the connection is then served untracked and counted as such.
    pub fn claim(&self, pid: u32, hint: usize, now_mono_ms: u64) -> Option<SlotHandle> {
        let h = self.header();
        let n = self.layout.nslots;
        h.counters.accepted.fetch_add(1, Relaxed);
        if n == 0 || h.slots_used.load(Relaxed) as usize >= n {
            h.counters.untracked.fetch_add(1, Relaxed);
            return None;
        }
        let slots = self.slots();
        for i in 0..n {
            let slot = &slots[(hint + i) % n];
            if slot.state.load(Relaxed) != ConnState::Free as u32 {
                continue;
            }
            if slot
                .state
                .compare_exchange(
                    ConnState::Free as u32,
                    ConnState::Claiming as u32,
                    Acquire,
                    Relaxed,
                )
                .is_ok()
            {
                h.slots_used.fetch_add(1, Relaxed);
                let tag = slot.tag.fetch_add(1, Relaxed) + 1;
                slot.owner_pid.store(pid, Relaxed);
                slot.accept_mono_ms.store(now_mono_ms, Relaxed);
                slot.state_since_mono_ms.store(now_mono_ms, Relaxed);
                slot.close_wait_since_mono_ms.store(0, Relaxed);
                slot.requests.store(0, Relaxed);
                slot.flags.store(0, Relaxed);
                slot.write_text(b"", b"");
                return Some(SlotHandle {
                    index: ((hint + i) % n) as u32,
                    tag,
                });
            }
        }
        h.counters.untracked.fetch_add(1, Relaxed);
        None
    }

    /// The slot behind a handle, if the handle still owns it (same tag, still claimed).
    pub fn owned(&self, handle: SlotHandle) -> Option<&Slot> {
        let slot = self.slots().get(handle.index as usize)?;
        let live = slot.tag.load(Relaxed) == handle.tag
            && slot.state.load(Acquire) != ConnState::Free as u32;
        live.then_some(slot)
    }

    /// Publishes the slot's fields (written after `claim`) and moves it to `state`.
    pub fn set_state(&self, handle: SlotHandle, state: ConnState, now_mono_ms: u64) {
        if let Some(slot) = self.owned(handle) {
            slot.state_since_mono_ms.store(now_mono_ms, Relaxed);
            slot.state.store(state as u32, Release);
        }
    }

    /// Frees a slot when its connection ends normally. Returns false if the handle no longer
    /// owned the slot (e.g. the parent reclaimed it).
    pub fn release(&self, handle: SlotHandle) -> bool {
        let Some(slot) = self.owned(handle) else {
            return false;
        };
        self.record_close_wait_end(slot);
        self.free_slot(slot);
        self.counters().closed.fetch_add(1, Relaxed);
        true
    }

    fn free_slot(&self, slot: &Slot) {
        slot.owner_pid.store(0, Relaxed);
        slot.state.store(ConnState::Free as u32, Release);
        self.header().slots_used.fetch_sub(1, Relaxed);
    }

    /// Adds the time a closing socket spent in CLOSE_WAIT to the histogram.
    /// Ends a slot's CLOSE_WAIT period (if it had one): histogram, marked count. Exactly once
    /// per period whichever path gets here first (release, force close, scan, reclaim).
    pub fn record_close_wait_end(&self, slot: &Slot) {
        let since = slot.close_wait_since_mono_ms.swap(0, AcqRel);
        if since != 0 {
            self.header().close_wait_marked.fetch_sub(1, Relaxed);
            self.record_close_wait_duration(crate::clock::mono_ms().saturating_sub(since));
        }
    }

    /// Starts a slot's CLOSE_WAIT period unless it already has one. True if this call started it.
    pub fn mark_close_wait(&self, slot: &Slot, now_mono_ms: u64) -> bool {
        let started = slot
            .close_wait_since_mono_ms
            .compare_exchange(0, now_mono_ms.max(1), AcqRel, Relaxed)
            .is_ok();
        if started {
            self.header().close_wait_marked.fetch_add(1, Relaxed);
        }
        started
    }

    /// The child row of `pid`, if it has one.
    pub fn child_of(&self, pid: u32) -> Option<&ChildRow> {
        self.children().iter().find(|r| r.pid.load(Relaxed) == pid)
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

    /// Frees every slot still owned by `pid` (the child is exiting). Returns how many.
    pub fn release_all_of(&self, pid: u32) -> u64 {
        let mut n = 0;
        for slot in self.slots() {
            if slot.owner_pid.load(Relaxed) == pid
                && slot.state.load(Acquire) != ConnState::Free as u32
            {
                self.record_close_wait_end(slot);
                self.free_slot(slot);
                self.counters().closed.fetch_add(1, Relaxed);
                n += 1;
            }
        }
        n
    }

    /// Parent only: frees the slots and child rows of processes that are gone.
    /// `is_alive(pid, start_time)` answers for child rows (start_time known) and for slot
    /// owners (start_time 0: any process with that pid counts). Returns slots reclaimed.
    pub fn reclaim_dead(&self, mut is_alive: impl FnMut(u32, u64) -> bool) -> u64 {
        let dead = self.reclaim_dead_children(&mut is_alive);
        let mut alive_cache: Vec<(u32, bool)> = Vec::new();
        self.reclaim_slots(|pid| {
            if dead.contains(&pid) {
                return false;
            }
            if let Some(&(_, a)) = alive_cache.iter().find(|(p, _)| *p == pid) {
                return a;
            }
            let a = is_alive(pid, 0);
            alive_cache.push((pid, a));
            a
        })
    }

    /// Frees the child rows of processes that are gone (and the scanner role one of them
    /// held); returns their pids, whose slots `reclaim_slots` then frees.
    pub fn reclaim_dead_children(&self, mut is_alive: impl FnMut(u32, u64) -> bool) -> Vec<u32> {
        let mut dead: Vec<u32> = Vec::new();
        for child in self.children() {
            let pid = child.pid.load(Acquire);
            if pid != 0 && !is_alive(pid, child.start_time.load(Relaxed)) {
                dead.push(pid);
                child.pending.store(0, Relaxed);
                let _ = child.pid.compare_exchange(pid, 0, AcqRel, Relaxed);
                let _ = self
                    .header()
                    .scanner_pid
                    .compare_exchange(pid, 0, AcqRel, Relaxed);
            }
        }
        dead
    }

    /// Frees every slot in use whose owner `owner_alive` says is gone; returns how many.
    pub fn reclaim_slots(&self, mut owner_alive: impl FnMut(u32) -> bool) -> u64 {
        let mut reclaimed = 0;
        for slot in self.slots() {
            let state = slot.state.load(Acquire);
            let pid = slot.owner_pid.load(Relaxed);
            if state == ConnState::Free as u32 || pid == 0 || owner_alive(pid) {
                continue;
            }
            if slot
                .state
                .compare_exchange(state, ConnState::Reclaimed as u32, AcqRel, Relaxed)
                .is_ok()
            {
                self.record_close_wait_end(slot);
                self.free_slot(slot);
                self.counters().reclaimed.fetch_add(1, Relaxed);
                reclaimed += 1;
            }
        }
        reclaimed
    }

    // ---- child rows --------------------------------------------------------------------

    pub fn claim_child(
        &self,
        pid: u32,
        generation: u64,
        start_time: u64,
        now_mono_ms: u64,
    ) -> Option<usize> {
        for (i, row) in self.children().iter().enumerate() {
            // A row left by a recycled pid of ours is ours again.
            let cur = row.pid.load(Relaxed);
            if (cur == 0 || cur == pid)
                && row.pid.compare_exchange(cur, pid, AcqRel, Relaxed).is_ok()
            {
                row.generation.store(generation, Relaxed);
                row.start_time.store(start_time, Relaxed);
                row.last_checkin_mono_ms.store(now_mono_ms, Release);
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

    pub fn release_child(&self, index: usize, pid: u32) {
        if let Some(row) = self.children().get(index) {
            row.pending.store(0, Relaxed);
            let _ = row.pid.compare_exchange(pid, 0, AcqRel, Relaxed);
        }
        // Hand the scanner role over at once instead of waiting for the beat to go stale.
        let _ = self
            .header()
            .scanner_pid
            .compare_exchange(pid, 0, AcqRel, Relaxed);
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
    for (w, chunk) in words.iter().zip(bytes[..len].chunks(8)) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        w.store(u64::from_le_bytes(word), Relaxed);
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
