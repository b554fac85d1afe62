//! Per-process state of the module: the handle to the shared table, this child's pid and row,
//! and its guard thread. Set by the lifecycle hooks, read on the per-connection hot path.
//!
//! Plain statics are fine: in the parent they are re-set at every post_config (the module may
//! be reloaded, which resets them), and children inherit them at fork.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};

use parking_lot::{Mutex, RwLock};

use crate::guard::GuardThread;
use crate::table::SharedTable;

static TABLE: RwLock<Option<SharedTable>> = RwLock::new(None);
static PID: AtomicU32 = AtomicU32::new(0);
/// This child's row in the table's child list (usize::MAX: none).
static CHILD_ROW: AtomicUsize = AtomicUsize::new(usize::MAX);
static NEXT_HINT: AtomicUsize = AtomicUsize::new(0);
static TABLE_FULL_LOGGED: AtomicBool = AtomicBool::new(false);
static GUARD: Mutex<Option<GuardThread>> = Mutex::new(None);

pub fn table() -> Option<SharedTable> {
    *TABLE.read()
}

pub fn set_table(t: Option<SharedTable>) {
    *TABLE.write() = t;
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

pub fn set_guard(g: Option<GuardThread>) -> Option<GuardThread> {
    std::mem::replace(&mut *GUARD.lock(), g)
}
