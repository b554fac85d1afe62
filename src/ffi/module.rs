//! The `socket_guard_module` symbol Apache loads, its directive table and hook registration.
//!
//! Apache writes `module_index` (and links `next`) into this struct at load time, so it must be
//! a mutable static: a read-only one lands in a read-only page and crashes configtest.

use std::ffi::{c_char, c_void};
use std::ptr::{addr_of, null, null_mut};

use super::bindings as b;
use super::callback::callback;
use super::{directives, hooks, server_conf, status_handler};

/// Wrapper so the command table (which holds raw pointers) can be an immutable static.
#[repr(transparent)]
pub struct CommandTable<const N: usize>(pub [b::command_rec; N]);
// SAFETY: the table is never written after compilation; Apache only reads it.
unsafe impl<const N: usize> Sync for CommandTable<N> {}

/// One directive taking one argument, allowed in `contexts` (RSRC_CONF: server config and
/// <VirtualHost>; server-config-only directives re-check with GLOBAL_ONLY when parsed).
const fn take1(
    name: &'static std::ffi::CStr,
    func: unsafe extern "C" fn(*mut b::cmd_parms, *mut c_void, *const c_char) -> *const c_char,
    help: &'static std::ffi::CStr,
) -> b::command_rec {
    b::command_rec {
        name: name.as_ptr(),
        func: b::cmd_func { take1: Some(func) },
        cmd_data: null_mut(),
        req_override: b::RSRC_CONF,
        args_how: b::TAKE1,
        errmsg: help.as_ptr(),
    }
}

static COMMANDS: CommandTable<10> = CommandTable([
    take1(c"SocketGuardAutoClose", directives::auto_close,
        c"On | Off | Report - what to do with a connection stuck in CLOSE_WAIT past the timeout (default Off)"),
    take1(c"SocketGuardCloseWaitTimeout", directives::close_wait_timeout,
        c"duration (500ms, 5s, 2m or seconds; min 100ms) a connection may sit in CLOSE_WAIT before AutoClose acts (default 30s)"),
    take1(c"SocketGuardScanInterval", directives::scan_interval,
        c"duration between socket scans, 10ms to 60s (default 1s); server config only"),
    take1(c"SocketGuardFullScanInterval", directives::full_scan_interval,
        c"duration between full dumps of the listening ports (leaked, backlog, untracked sockets), 10ms to 60m (default 5 scan intervals, at least 1s); server config only"),
    take1(c"SocketGuardSlots", directives::slots,
        c"capacity of the shared connection table, 16 to 1000000 (default: sized from the MPM limits); server config only"),
    take1(c"SocketGuardRescue", directives::rescue,
        c"On | Off - let the guard process close CLOSE_WAIT sockets held by hung children or other processes (default On); server config only"),
    take1(c"SocketGuardHungChildTimeout", directives::hung_child_timeout,
        c"duration after which a child whose guard has not checked in is treated as hung, min 1s (default 10s); server config only"),
    take1(c"SocketGuardAbandonedTimeout", directives::abandoned_timeout,
        c"Off | duration (min 100ms): once a connection's client is gone, stop its handler's work (CGI, prefork child) after this long (default Off)"),
    take1(c"SocketGuardGracefulDeadline", directives::graceful_deadline,
        c"Off | duration (min 1s): after a graceful restart, end an old child holding only abandoned or idle connections after this long (default Off); server config only"),
    // SAFETY-free terminator: Apache stops at the first entry with a null name.
    b::command_rec {
        name: null(),
        func: b::cmd_func { take1: None },
        cmd_data: null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: null(),
    },
]);

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut socket_guard_module: b::module = b::module {
    version: b::MODULE_MAGIC_NUMBER_MAJOR,
    minor_version: b::MODULE_MAGIC_NUMBER_MINOR,
    module_index: -1,
    // Apache derives the log tag from this name: "mod_socket_guard.c" → `socket_guard`.
    name: c"mod_socket_guard.c".as_ptr(),
    dynamic_load_handle: null_mut(),
    next: null_mut(),
    magic: b::MODULE_MAGIC_COOKIE as std::ffi::c_ulong,
    rewrite_args: None,
    create_dir_config: None,
    merge_dir_config: None,
    create_server_config: Some(server_conf::create),
    merge_server_config: Some(server_conf::merge),
    cmds: &COMMANDS.0 as *const [b::command_rec; 10] as *const b::command_rec,
    register_hooks: Some(register_hooks),
    // Without ALWAYS_MERGE, a vhost that uses none of our directives shares the main server's
    // config struct, and the per-server vhost index written at post_config would collide.
    flags: b::AP_MODULE_FLAG_ALWAYS_MERGE,
};

/// The module struct's address, for `ap_get_module_config` and friends.
pub fn module_ptr() -> *const b::module {
    addr_of!(socket_guard_module)
}

/// This module's entry of a config vector: what `ap_get_module_config` returns, read the way
/// httpd's own macro of that name does (one index, no call: this runs in every per-request
/// hook). Null before Apache has given the module an index.
///
/// # Safety
/// `vector` must be a config vector Apache built (a server's `module_config`, a connection's
/// `conn_config`), which holds one entry per loaded module.
#[inline]
pub unsafe fn config_entry(vector: *mut b::ap_conf_vector_t) -> *mut std::ffi::c_void {
    match module_index() {
        i if i < 0 => std::ptr::null_mut(),
        // SAFETY: per the contract, the vector has an entry at every loaded module's index.
        i => unsafe { *(vector as *mut *mut std::ffi::c_void).add(i as usize) },
    }
}

/// The index Apache assigned to this module (used for per-module LogLevel and config vectors).
pub fn module_index() -> i32 {
    // SAFETY: a plain read of an int Apache wrote once while loading the module, before any
    // hook or thread of ours can run; nothing writes it concurrently.
    unsafe { (*addr_of!(socket_guard_module)).module_index }
}

callback!(
    #[on_panic(())]
    fn register_hooks(_p: *mut b::apr_pool_t) {
        super::boundary::install_quiet_hook();
        let middle = b::APR_HOOK_MIDDLE;
        // SAFETY: registering hook functions with Apache's hook API during register_hooks,
        // which is exactly when it expects them; the function pointers are to `extern "C"`
        // functions of this module with the signatures bindgen derived from the headers.
        unsafe {
            b::ap_hook_check_config(Some(hooks::lifecycle::check_config), null(), null(), middle);
            b::ap_hook_post_config(Some(hooks::lifecycle::post_config), null(), null(), middle);
            b::ap_hook_child_init(Some(hooks::lifecycle::child_init), null(), null(), middle);
            b::ap_hook_monitor(Some(hooks::lifecycle::monitor), null(), null(), middle);
            // Claim the slot before other modules' pre_connection hooks, so it covers the
            // whole connection.
            b::ap_hook_pre_connection(
                Some(hooks::connection::pre_connection),
                null(),
                null(),
                b::APR_HOOK_REALLY_FIRST,
            );
            b::ap_hook_pre_close_connection(
                Some(hooks::connection::pre_close_connection),
                null(),
                null(),
                middle,
            );
            b::ap_hook_post_read_request(
                Some(hooks::request::post_read_request),
                null(),
                null(),
                middle,
            );
            b::ap_hook_log_transaction(
                Some(hooks::request::log_transaction),
                null(),
                null(),
                b::APR_HOOK_LAST,
            );
            b::ap_hook_handler(Some(status_handler::handler), null(), null(), middle);
            register_child_stopping();
            // mod_status's optional hook: our section on /server-status, if mod_status loads.
            b::apr_optional_hook_add(
                c"status_hook".as_ptr(),
                Some(std::mem::transmute::<
                    unsafe extern "C" fn(*mut b::request_rec, i32) -> i32,
                    unsafe extern "C" fn(),
                >(status_handler::status_hook)),
                null(),
                null(),
                middle,
            );
        }
    }
);

/// `ap_hook_child_stopping` exists from httpd 2.4.49 on. It is looked up at run time so the
/// module still loads into an older httpd, which then only lacks the prompt stop.
fn register_child_stopping() {
    type Register = unsafe extern "C" fn(
        Option<unsafe extern "C" fn(*mut b::apr_pool_t, std::ffi::c_int)>,
        *const *const c_char,
        *const *const c_char,
        std::ffi::c_int,
    );
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks a symbol up.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"ap_hook_child_stopping".as_ptr()) };
    if sym.is_null() {
        return;
    }
    // SAFETY: httpd declares ap_hook_child_stopping with exactly this signature
    // (AP_DECLARE_HOOK(void, child_stopping, (apr_pool_t *, int)) in mpm_common.h), and it is
    // called during register_hooks as the hook API requires.
    unsafe {
        let register: Register = std::mem::transmute::<*mut c_void, Register>(sym);
        register(
            Some(super::hooks::lifecycle::child_stopping),
            null(),
            null(),
            b::APR_HOOK_MIDDLE,
        );
    }
}
