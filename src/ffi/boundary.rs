//! The panic firewall: every `extern "C"` entry point runs its body through `guarded`, so a
//! Rust panic becomes one error-log line and a safe return value instead of unwinding into
//! Apache (which is undefined behaviour and would take the worker down).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use super::log;
use crate::messages;

thread_local! {
    static IN_GUARDED: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Keeps Rust's default panic message (printed raw to stderr) out of the error log for panics
/// we catch and log ourselves; panics elsewhere in the process keep the previous hook.
fn install_quiet_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_GUARDED.with(|g| g.get()) {
                previous(info);
            }
        }));
    });
}

/// Runs `body`; if it panics, logs `what` and the panic message and returns `fallback`.
pub fn guarded<R>(what: &str, fallback: R, body: impl FnOnce() -> R) -> R {
    install_quiet_hook();
    let outer = IN_GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(body));
    IN_GUARDED.with(|g| g.set(outer));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            log::err(
                std::ptr::null(),
                messages::PANIC_CAUGHT,
                &format!("internal error in {what}: {msg}; continuing without it"),
            );
            fallback
        }
    }
}
