//! The per-child guard thread. For now it only checks in (proving the child is not hung);
//! the CLOSE_WAIT scanner runs from the same loop.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::clock::mono_ms;
use crate::table::SharedTable;

pub struct GuardThread {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: std::thread::JoinHandle<()>,
}

impl GuardThread {
    /// Starts the guard loop for the child owning `child_row`. Signals are blocked in the
    /// thread so that Apache's signal handling keeps running on the threads that expect it.
    pub fn start(table: SharedTable, child_row: usize) -> std::io::Result<GuardThread> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("socket-guard".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                block_all_signals();
                run(table, child_row, &stop2)
            })?;
        Ok(GuardThread { stop, handle })
    }

    /// Asks the loop to end and waits for it (it wakes at once, not at the next interval).
    pub fn stop(self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        let _ = self.handle.join();
    }
}

fn run(table: SharedTable, child_row: usize, stop: &(Mutex<bool>, Condvar)) {
    loop {
        table.check_in(child_row, mono_ms());
        let interval = table
            .header()
            .scan_interval_ms
            .load(std::sync::atomic::Ordering::Relaxed)
            .clamp(
                crate::config::MIN_SCAN_INTERVAL_MS,
                crate::config::MAX_SCAN_INTERVAL_MS,
            );
        let mut stopped = stop.0.lock();
        if !*stopped {
            stop.1
                .wait_for(&mut stopped, Duration::from_millis(interval));
        }
        if *stopped {
            return;
        }
    }
}

fn block_all_signals() {
    // SAFETY: sigfillset initialises the set we own; pthread_sigmask only changes this
    // thread's mask. Failure leaves the default mask, which is harmless.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
