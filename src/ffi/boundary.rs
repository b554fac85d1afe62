//! The panic firewall: every `extern "C"` entry point runs its body through `guarded`, so a
//! Rust panic becomes one error-log line and a safe return value instead of unwinding into
//! Apache (which is undefined behaviour and would take the worker down).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use super::log;
use crate::messages;

static QUIET_HOOK: Once = Once::new();

/// Rust's default hook prints a panic raw to stderr (Apache's error log, without our tag).
/// This module's copy of std is its own — another Rust module has its own hook — and every
/// piece of our code runs inside `guarded`, which logs the panic properly, so the hook of this
/// copy can simply stay silent.
pub fn install_quiet_hook() {
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

/// Runs `body`; if it panics, logs `what` and the panic message and returns `fallback`.
pub fn guarded<R>(what: &str, fallback: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
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
