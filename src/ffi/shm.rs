//! The shared segment's life across config passes.
//!
//! Apache re-reads its config (and may reload this .so) at start-up and at every restart.
//! The segment is therefore created from the *process* pool, which lives as long as the parent,
//! and found again through that pool's userdata; children inherit the mapping at fork. A segment
//! written by another build (layout version) or sized differently is replaced, never reused.

use std::ffi::{c_void, CStr};

use super::bindings as b;
use crate::table::{SharedTable, TableError};

const USERDATA_KEY: &CStr = c"mod_socket_guard:segment";
/// apr_shm puts its own bookkeeping before the usable area; we align the table up to 64 bytes.
const ALIGN_SLACK: usize = 64;

pub enum Outcome {
    Created(SharedTable),
    Reused(SharedTable),
    Replaced(SharedTable, TableError),
}

/// Finds the segment from an earlier config pass, or creates one with room for
/// `nslots` connections and `nchildren` children.
///
/// # Safety
/// Parent process only, in post_config, with `ppool` being `s->process->pool`.
pub unsafe fn find_or_create(
    ppool: *mut b::apr_pool_t,
    nslots: usize,
    nchildren: usize,
) -> Result<Outcome, String> {
    let mut existing: *mut c_void = std::ptr::null_mut();
    // SAFETY: documented APR call reading a userdata pointer from a live pool.
    unsafe { b::apr_pool_userdata_get(&mut existing, USERDATA_KEY.as_ptr(), ppool) };
    let mut replaced = None;
    if !existing.is_null() {
        let shm = existing as *mut b::apr_shm_t;
        // SAFETY: the userdata under our key is always an apr_shm_t we created in this pool.
        match unsafe { attach(shm) } {
            Ok(t) if t.nslots() == nslots && t.children().len() == nchildren => {
                return Ok(Outcome::Reused(t))
            }
            Ok(_) => replaced = Some(TableError::Incompatible),
            Err(e) => replaced = Some(e),
        }
        // Only the parent's mapping goes; children of older generations keep theirs.
        // SAFETY: `shm` is ours and no handle of this process uses it after this point
        // (runtime::set_table is re-pointed by the caller).
        unsafe {
            b::apr_shm_destroy(shm);
            b::apr_pool_userdata_set(
                std::ptr::null(),
                USERDATA_KEY.as_ptr(),
                Some(b::apr_pool_cleanup_null),
                ppool,
            );
        }
    }
    let size = SharedTable::required_size(nslots, nchildren) + ALIGN_SLACK;
    let mut shm: *mut b::apr_shm_t = std::ptr::null_mut();
    // SAFETY: a null filename asks APR for anonymous shared memory (mmap MAP_SHARED), which
    // fork() shares with the children; the segment lives until the process pool is destroyed.
    let rv = unsafe { b::apr_shm_create(&mut shm, size, std::ptr::null(), ppool) };
    if rv != 0 || shm.is_null() {
        return Err(format!(
            "apr_shm_create of {size} bytes failed (APR status {rv})"
        ));
    }
    // SAFETY: `shm` was just created with `size` bytes; nothing else uses it yet.
    let table = unsafe {
        let (base, len) = aligned_region(shm);
        SharedTable::init(base, len, nslots, nchildren, crate::clock::mono_ms())
            .map_err(|e| e.to_string())?
    };
    // SAFETY: storing the pointer under our key; the key is copied by apr_pool_userdata_set.
    unsafe {
        b::apr_pool_userdata_set(
            shm as *const c_void,
            USERDATA_KEY.as_ptr(),
            Some(b::apr_pool_cleanup_null),
            ppool,
        )
    };
    Ok(match replaced {
        Some(e) => Outcome::Replaced(table, e),
        None => Outcome::Created(table),
    })
}

/// # Safety
/// `shm` must be a live segment created by `find_or_create`.
unsafe fn attach(shm: *mut b::apr_shm_t) -> Result<SharedTable, TableError> {
    // SAFETY: per the contract; the region stays mapped while the process pool lives.
    unsafe {
        let (base, len) = aligned_region(shm);
        SharedTable::attach(base, len)
    }
}

/// # Safety
/// `shm` must be a live apr_shm_t.
unsafe fn aligned_region(shm: *mut b::apr_shm_t) -> (*mut u8, usize) {
    // SAFETY: per the contract, these getters just read the segment's base and size.
    let (base, size) = unsafe {
        (
            b::apr_shm_baseaddr_get(shm) as *mut u8,
            b::apr_shm_size_get(shm),
        )
    };
    let pad = base.align_offset(ALIGN_SLACK).min(ALIGN_SLACK);
    // SAFETY: `pad` < 64 <= the slack we allocated on top of the table's size.
    (unsafe { base.add(pad) }, size.saturating_sub(pad))
}
