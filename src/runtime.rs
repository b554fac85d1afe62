//! Per-process state of the module: the handle to the shared table, this child's pid and row,
//! and whether the child is exiting. Set by the lifecycle hooks, read on the per-connection hot
//! path.
//!
//! Everything here is a plain atomic, never a lock: prefork runs an exiting child's pool
//! cleanups inside its SIGTERM handler, which may interrupt a thread of this process at any
//! instruction — a lock taken there could be held by the interrupted code for ever.
//! In the parent the statics are re-set at every post_config (the module may be reloaded,
//! which resets them); children inherit them at fork.

use std::ptr::null_mut;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

use crate::table::SharedTable;

/// The current table, as the parts its handle is rebuilt from: the segment's base (null: no
/// table) and its capacities. Nothing is allocated, so nothing leaks at a restart; the parent
/// sets them single-threaded before any child is forked, and children never change them.
static TABLE_BASE: AtomicPtr<u8> = AtomicPtr::new(null_mut());
static TABLE_SLOTS: AtomicUsize = AtomicUsize::new(0);
static TABLE_CHILDREN: AtomicUsize = AtomicUsize::new(0);
/// Set when this child starts exiting: its guard thread stops acting.
static EXITING: AtomicBool = AtomicBool::new(false);
static PID: AtomicU32 = AtomicU32::new(0);
/// This child's row in the table's child list (usize::MAX: none).
static CHILD_ROW: AtomicUsize = AtomicUsize::new(usize::MAX);
static NEXT_HINT: AtomicUsize = AtomicUsize::new(0);
static TABLE_FULL_LOGGED: AtomicBool = AtomicBool::new(false);

pub fn table() -> Option<SharedTable> {
    let base = TABLE_BASE.load(Acquire);
    if base.is_null() {
        return None;
    }
    // SAFETY: a non-null base was stored by set_table from a live handle together with its
    // capacities (stored before it, published by the Release store); the segment stays mapped
    // for the life of the process.
    Some(unsafe {
        SharedTable::from_parts(
            base,
            TABLE_SLOTS.load(Relaxed),
            TABLE_CHILDREN.load(Relaxed),
        )
    })
}

/// Parent (post_config) only, or a test's single thread.
pub fn set_table(t: Option<SharedTable>) {
    TABLE_BASE.store(null_mut(), Release);
    if let Some(t) = t {
        let (base, slots, children) = t.parts();
        TABLE_SLOTS.store(slots, Relaxed);
        TABLE_CHILDREN.store(children, Relaxed);
        TABLE_BASE.store(base, Release);
    }
}

/// This process's pid (cached at child_init; falls back to asking the kernel).
pub fn pid() -> u32 {
    match PID.load(Relaxed) {
        0 => std::process::id(),
        p => p,
    }
}

pub fn enter_child(pid: u32, row: Option<usize>) {
    PID.store(pid, Relaxed);
    CHILD_ROW.store(row.unwrap_or(usize::MAX), Relaxed);
    // Spread children over the table so their claims rarely probe the same slots.
    NEXT_HINT.store((pid as usize).wrapping_mul(2654435761), Relaxed);
    TABLE_FULL_LOGGED.store(false, Relaxed);
    EXITING.store(false, Relaxed);
    SERVER_STOP_SINCE.store(0, Relaxed);
}

/// When a server stop (not a graceful restart) reached this child (0: none).
static SERVER_STOP_SINCE: AtomicU64 = AtomicU64::new(0);
/// Worker/event (several connections per child), set at child_init.
static THREADED: AtomicBool = AtomicBool::new(false);

/// A server stop reached this child (async-signal-safe: one atomic store).
pub fn note_server_stop(now_mono_ms: u64) {
    let _ = SERVER_STOP_SINCE.compare_exchange(0, now_mono_ms.max(1), Relaxed, Relaxed);
}

pub fn server_stop_since() -> Option<u64> {
    match SERVER_STOP_SINCE.load(Relaxed) {
        0 => None,
        t => Some(t),
    }
}

/// This child's generation, set at child_init.
static GENERATION: AtomicU64 = AtomicU64::new(0);

pub fn set_generation(generation: u64) {
    GENERATION.store(generation, Relaxed);
}

pub fn generation() -> u64 {
    GENERATION.load(Relaxed)
}

pub fn set_threaded(threaded: bool) {
    THREADED.store(threaded, Relaxed);
}

pub fn threaded() -> bool {
    THREADED.load(Relaxed)
}

/// The child is exiting (async-signal-safe: one atomic store).
pub fn set_exiting() {
    EXITING.store(true, Relaxed);
}

/// The flag the guard thread polls; `'static` so the thread can hold it.
pub fn exiting_flag() -> &'static AtomicBool {
    &EXITING
}

pub fn child_row() -> Option<usize> {
    match CHILD_ROW.load(Relaxed) {
        usize::MAX => None,
        r => Some(r),
    }
}

/// Where this process should start probing for a free slot.
pub fn next_hint() -> usize {
    NEXT_HINT.fetch_add(1, Relaxed)
}

/// True the first time it is called in this process (to log "table full" once, not per conn).
pub fn first_table_full() -> bool {
    !TABLE_FULL_LOGGED.swap(true, Relaxed)
}

/// The child is exiting: stop the guard, free what the child still holds. Async-signal-safe
/// (see ffi::hooks::lifecycle::child_exit): atomics only.
pub fn on_child_exit() {
    set_exiting();
    let Some(table) = table() else { return };
    let pid = pid();
    table.release_all_of(pid);
    if let Some(row) = child_row() {
        table.release_child(row, pid);
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::Ordering::Relaxed;

    use crate::table::HeapTable;

    /// Counts allocations made by the current thread (other tests' threads are not counted).
    struct Counting;
    thread_local!(static ALLOCS: Cell<u64> = const { Cell::new(0) });
    // SAFETY: forwards to the system allocator unchanged; the counter is a const-initialised
    // thread-local Cell, which never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            ALLOCS.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as ours.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            ALLOCS.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(p, l) }
        }
    }
    #[global_allocator]
    static COUNTING: Counting = Counting;

    #[test]
    fn child_exit_is_async_signal_safe() {
        // What prefork's SIGTERM handler runs: it must free the child's slots and row without
        // allocating (no lock exists in this module to take; see the module comment).
        let heap = HeapTable::for_tests();
        let t = heap.table();
        let pid = 4242;
        let row = t.claim_child(pid, 0, 1, 1).unwrap();
        let h = t.claim(pid, 0, 1).unwrap();
        t.set_state(h, crate::table::state::SlotState::Handling, 1);
        t.mark_close_wait(t.owned(h).unwrap(), h.tag, 1);
        super::set_table(Some(t));
        super::enter_child(pid, Some(row));
        let before = ALLOCS.with(|c| c.get());
        super::on_child_exit();
        let after = ALLOCS.with(|c| c.get());
        super::set_table(None);
        assert_eq!(after - before, 0, "child exit allocated");
        assert!(super::exiting_flag().load(Relaxed));
        assert!(t.owned(h).is_none(), "the child's slot is freed");
        assert_eq!(t.children()[row].pid.load(Relaxed), 0, "its row is freed");
        let slot = &t.slots()[h.index as usize];
        assert_eq!(
            slot.close_wait_since(h.tag),
            None,
            "its CLOSE_WAIT period ended"
        );
        assert_eq!(t.totals().closed, 1);
    }
}
