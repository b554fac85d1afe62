//! Per-server config: create (everything unset) and merge (vhost overrides main), the way
//! mod_reqtimeout does it. The struct itself and the merge rule live in `crate::config`.

use std::ffi::c_void;

use super::bindings as b;
use super::boundary::guarded;
use super::module::module_ptr;
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

pub unsafe extern "C" fn create(pool: *mut b::apr_pool_t, _s: *mut b::server_rec) -> *mut c_void {
    guarded("create_server_config", std::ptr::null_mut(), || {
        alloc_in(pool, ServerConfig::default())
    })
}

pub unsafe extern "C" fn merge(
    pool: *mut b::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    guarded("merge_server_config", add, || {
        // SAFETY: Apache passes two configs this module created (via `create`/`merge`).
        let (base, add) = unsafe {
            (
                &*(base as *const ServerConfig),
                &*(add as *const ServerConfig),
            )
        };
        alloc_in(pool, ServerConfig::merge(base, add))
    })
}

/// The (merged) config of server `s`.
///
/// # Safety
/// `s` must be a live server_rec whose module_config was built by Apache for this module.
pub unsafe fn of(s: *const b::server_rec) -> Option<&'static mut ServerConfig> {
    if s.is_null() {
        return None;
    }
    // SAFETY: per the caller's contract; the config lives in the config pool for the whole
    // generation, which outlives every hook call that asks for it.
    unsafe {
        let p = b::ap_get_module_config((*s).module_config, module_ptr()) as *mut ServerConfig;
        p.as_mut()
    }
}
