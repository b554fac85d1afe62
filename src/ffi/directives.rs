//! Directive callbacks: each hands its raw argument to a `crate::config` parser and stores the
//! result in the server's config, or returns the parser's error for Apache to print.

use std::ffi::{c_char, c_void, CStr, CString};

use super::bindings as b;
use super::server_conf;
use crate::config::{self, ServerConfig};

type Setter = fn(&mut ServerConfig, &str) -> Result<(), String>;

/// Shared body of every directive: context check, parse, store, or error string.
fn apply(cmd: &mut b::cmd_parms, arg: &CStr, global_only: bool, set: Setter) -> *const c_char {
    if global_only {
        // SAFETY: documented Apache API; returns null or an error string from cmd's pool
        // that names the directive and the section it may not appear in.
        let e = unsafe { b::ap_check_cmd_context(cmd, b::GLOBAL_ONLY as u32) };
        if !e.is_null() {
            return e;
        }
    }
    let value = arg.to_string_lossy();
    // SAFETY: directive handlers run while Apache reads the configuration, single-threaded in
    // the parent; cmd->server is the server whose section is being parsed.
    let result =
        unsafe { server_conf::update_at_config_time(cmd.server, |conf| set(conf, &value)) }
            .unwrap_or_else(|| Err("mod_socket_guard: no server config (out of memory?)".into()));
    match result {
        Ok(()) => std::ptr::null(),
        Err(msg) => error_string(cmd.pool, &msg),
    }
}

/// Copies an error message into the command's pool, where Apache expects it.
fn error_string(pool: *mut b::apr_pool_t, msg: &str) -> *const c_char {
    let c = CString::new(msg.replace('\0', "")).unwrap_or_default();
    // SAFETY: apr_pstrdup copies the NUL-terminated string into `pool`, which Apache keeps
    // alive until it has printed the error.
    unsafe { b::apr_pstrdup(pool, c.as_ptr()) }
}

/// One TAKE1 directive handler: `cmd_parms` and the argument read by `callback!`, the rest
/// done by `apply` with the given parser.
macro_rules! directive {
    ($fn_name:ident, global_only = $global:expr, |$conf:ident, $v:ident| $body:expr) => {
        super::callback::callback!(
            #[on_panic(std::ptr::null(), "directive")]
            pub fn $fn_name(
                cmd: &mut b::cmd_parms,
                _dir: *mut c_void,
                arg: &CStr,
            ) -> *const c_char {
                apply(cmd, arg, $global, |$conf, $v| {
                    $body;
                    Ok(())
                })
            }
        );
    };
}

directive!(auto_close, global_only = false, |c, v| c.auto_close =
    Some(config::parse_auto_close(v)?));
directive!(close_wait_timeout, global_only = false, |c, v| c
    .close_wait_timeout_ms =
    Some(config::parse_close_wait_timeout(v)?));
directive!(scan_interval, global_only = true, |c, v| c
    .scan_interval_ms =
    Some(config::parse_scan_interval(v)?));
directive!(full_scan_interval, global_only = true, |c, v| c
    .full_scan_interval_ms =
    Some(config::parse_full_scan_interval(v)?));
directive!(slots, global_only = true, |c, v| c.slots =
    Some(config::parse_slots(v)?));
directive!(rescue, global_only = true, |c, v| c.rescue =
    Some(config::parse_rescue(v)?));
directive!(hung_child_timeout, global_only = true, |c, v| c
    .hung_child_timeout_ms =
    Some(config::parse_hung_child_timeout(v)?));
directive!(abandoned_timeout, global_only = false, |c, v| c
    .abandoned_timeout_ms =
    Some(config::parse_abandoned_timeout(v)?));
directive!(graceful_deadline, global_only = true, |c, v| c
    .graceful_deadline_ms =
    Some(config::parse_graceful_deadline(v)?));
