//! The panic firewall: every `extern "C"` entry point runs its body through `guarded`, so a
//! Rust panic becomes one error-log line and a safe return value instead of unwinding into
//! Apache (which is undefined behaviour and would take the worker down).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use super::log;
use crate::messages::{self, LogSink, Severity};

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
    guarded_logging_to(log::sink, what, fallback, body)
}

/// `guarded` with the log sink as a parameter: Apache's error log in production, a recorder in
/// the unit tests (which run without Apache, so nothing may call into it).
fn guarded_logging_to<R>(sink: LogSink, what: &str, fallback: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            sink(
                Severity::Error,
                messages::PANIC_CAUGHT,
                &format!("internal error in {what}: {msg}; continuing without it"),
            );
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::MsgId;
    use std::cell::RefCell;

    thread_local! {
        /// What `record` was given on this test's thread: (severity, the line as written).
        static LOGGED: RefCell<Vec<(Severity, String)>> = const { RefCell::new(Vec::new()) };
    }

    fn record(severity: Severity, id: MsgId, text: &str) {
        LOGGED.with(|l| l.borrow_mut().push((severity, log::line(id, text))));
    }

    fn logged() -> Vec<(Severity, String)> {
        LOGGED.with(|l| l.borrow_mut().drain(..).collect())
    }

    #[test]
    fn a_panic_returns_the_fallback_and_logs_one_sg0004_line() {
        let r = guarded_logging_to(record, "test hook", -1, || -> i32 { panic!("boom") });
        assert_eq!(r, -1, "the fallback is returned");
        assert_eq!(
            logged(),
            vec![(
                Severity::Error,
                "SG0004: internal error in test hook: boom; continuing without it".to_string()
            )]
        );
    }

    #[test]
    fn formatted_and_non_string_panics_are_named() {
        let n = 7;
        let r = guarded_logging_to(record, "fmt", "fallback", || -> &str { panic!("slot {n}") });
        assert_eq!(r, "fallback");
        let r = guarded_logging_to(record, "any", 0u8, || -> u8 {
            std::panic::panic_any(42u32)
        });
        assert_eq!(r, 0);
        let lines: Vec<String> = logged().into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            lines,
            [
                "SG0004: internal error in fmt: slot 7; continuing without it",
                "SG0004: internal error in any: non-string panic; continuing without it",
            ]
        );
    }

    #[test]
    fn without_a_panic_the_body_decides_and_nothing_is_logged() {
        assert_eq!(guarded_logging_to(record, "ok", 1, || 2), 2);
        assert!(logged().is_empty());
    }
}
