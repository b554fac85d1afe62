//! Per-server config: create (everything unset) and merge (vhost overrides main), the way
//! mod_reqtimeout does it. The struct itself and the merge rule live in `crate::config`.
//!
//! Who may write it: only code that runs while the configuration is read and set up in the
//! parent, which is single-threaded then (directive handlers, post_config), through
//! `update_at_config_time`. Hooks in children, on any number of threads, only read it
//! through `of`.

use std::ffi::c_void;

use super::bindings as b;
use super::callback::callback;
use super::module::config_entry;
use crate::config::ServerConfig;

/// Copies `conf` into memory from `pool`. Returns null if the pool is out of memory.
fn alloc_in(pool: *mut b::apr_pool_t, conf: ServerConfig) -> *mut c_void {
    // SAFETY: apr_palloc returns memory suitably aligned for any type (or null); the pool
    // outlives every reader of the config, and ServerConfig is Copy with no destructor.
    unsafe {
        let p = b::apr_palloc(pool, std::mem::size_of::<ServerConfig>()) as *mut ServerConfig;
        if !p.is_null() {
            p.write(conf);
        }
        p as *mut c_void
    }
}

callback!(
    #[on_panic(std::ptr::null_mut(), "create_server_config")]
    pub fn create(pool: *mut b::apr_pool_t, _s: *mut b::server_rec) -> *mut c_void {
        alloc_in(pool, ServerConfig::default())
    }
);

callback!(
    #[on_panic(add, "merge_server_config")]
    pub fn merge(pool: *mut b::apr_pool_t, base: *mut c_void, add: *mut c_void) -> *mut c_void {
        // SAFETY: Apache passes two configs this module created (via `create`/`merge`).
        let (base, add) = unsafe {
            (
                &*(base as *const ServerConfig),
                &*(add as *const ServerConfig),
            )
        };
        alloc_in(pool, ServerConfig::merge(base, add))
    }
);

/// The raw config of server `s` (null if `s` is null or has none).
///
/// # Safety
/// `s` must be null or a live server_rec whose module_config Apache built for this module.
unsafe fn raw(s: *const b::server_rec) -> *mut ServerConfig {
    if s.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: per the caller's contract.
    unsafe { config_entry((*s).module_config) as *mut ServerConfig }
}

/// The (merged) config of server `s`, for reading.
///
/// # Safety
/// `s` must be null or a live server_rec whose module_config Apache built for this module, and
/// the reference must not outlive the configuration generation (the config pool frees it).
pub unsafe fn of<'a>(s: *const b::server_rec) -> Option<&'a ServerConfig> {
    // SAFETY: per the contract; the config lives in the config pool for the whole generation,
    // and is written only at config time, when no hook reads it (see the module doc).
    unsafe { raw(s).as_ref() }
}

/// Runs `change` on server `s`'s config. Returns None if `s` has no config.
///
/// # Safety
/// Only while Apache reads or sets up the configuration in the parent (directive handlers,
/// post_config), which runs on one thread; no reference from `of` to this config may be held
/// across the call. `s` as for `of`.
pub unsafe fn update_at_config_time<R>(
    s: *const b::server_rec,
    change: impl FnOnce(&mut ServerConfig) -> R,
) -> Option<R> {
    // SAFETY: per the contract, this is the only reference to the config while it lives,
    // and it does not escape the closure.
    unsafe { raw(s).as_mut() }.map(change)
}
