//! Logging through Apache's error log with this module's index, so that
//! `LogLevel socket_guard:debug` applies. Messages are always passed as the argument of a
//! constant "%s" format: text that came from a client can never act as a format string.

use std::ffi::CString;

use super::bindings as b;
use super::module::module_index;
use crate::messages::{self, MsgId};

#[derive(Clone, Copy, Debug)]
pub enum Level {
    Err = b::APLOG_ERR as isize,
    Warn = b::APLOG_WARNING as isize,
    Notice = b::APLOG_NOTICE as isize,
    Info = b::APLOG_INFO as isize,
    Debug = b::APLOG_DEBUG as isize,
}

/// Logs `SGnnnn: text` at `level` for server `s` (null: the main server).
pub fn log(level: Level, s: *const b::server_rec, id: MsgId, text: &str) {
    let Ok(msg) = CString::new(line(id, text)) else {
        return;
    };
    let s = if s.is_null() { main_server() } else { s };
    // SAFETY: every pointer passed is valid for the call: static C strings, `msg` owned here,
    // `s` either Apache's server_rec or null (accepted by ap_log_error_). The format is the
    // constant "%s" with exactly one matching C-string argument.
    unsafe {
        b::ap_log_error_(
            c"mod_socket_guard".as_ptr(),
            0,
            module_index(),
            level as i32,
            0,
            s,
            c"%s".as_ptr(),
            msg.as_ptr(),
        )
    };
}

/// The text of the line as it reaches the error log: `SGnnnn: text`, NULs made visible (a C
/// string ends at the first one).
pub fn line(id: MsgId, text: &str) -> String {
    format!("{}: {}", id.0, text).replace('\0', "\\0")
}

/// Apache's main server_rec (null before the config is read, which ap_log_error_ accepts).
pub fn main_server() -> *const b::server_rec {
    // SAFETY: ap_server_conf is a global pointer Apache sets once the config is read; reading
    // a pointer-sized global has no further preconditions.
    unsafe { b::ap_server_conf }
}

/// `messages::LogSink` for plain-Rust code (the guard thread): logs for the main server.
pub fn sink(severity: messages::Severity, id: MsgId, text: &str) {
    let level = match severity {
        messages::Severity::Error => Level::Err,
        messages::Severity::Warn => Level::Warn,
        messages::Severity::Notice => Level::Notice,
        messages::Severity::Info => Level::Info,
        messages::Severity::Debug => Level::Debug,
    };
    log(level, std::ptr::null(), id, text)
}

pub fn err(s: *const b::server_rec, id: MsgId, text: &str) {
    log(Level::Err, s, id, text)
}
pub fn warn(s: *const b::server_rec, id: MsgId, text: &str) {
    log(Level::Warn, s, id, text)
}
pub fn notice(s: *const b::server_rec, id: MsgId, text: &str) {
    log(Level::Notice, s, id, text)
}
pub fn debug(s: *const b::server_rec, id: MsgId, text: &str) {
    log(Level::Debug, s, id, text)
}
