//! Reading Apache's connection and server records into plain Rust values.

use std::ffi::{c_void, CStr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::bindings as b;
use super::module::module_ptr;
use crate::table::SlotHandle;

/// What this module remembers about a tracked connection; lives in the connection's pool.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ConnTrack {
    pub handle: SlotHandle,
}

/// The tracking record of connection `c`, if it is tracked.
///
/// # Safety
/// `c` must be a live conn_rec.
pub unsafe fn track_of(c: *const b::conn_rec) -> Option<ConnTrack> {
    // SAFETY: per the contract; conn_config is zero-initialised by Apache, so an untracked
    // connection yields null, and a non-null entry is a ConnTrack we stored.
    unsafe {
        if c.is_null() {
            return None;
        }
        let p = b::ap_get_module_config((*c).conn_config, module_ptr()) as *const ConnTrack;
        p.as_ref().copied()
    }
}

/// Stores `track` in `c`'s pool and config vector. Returns the stored pointer.
///
/// # Safety
/// `c` must be a conn_rec Apache set up (its pool and conn_config vector live).
pub unsafe fn set_track(c: &b::conn_rec, track: ConnTrack) -> *mut c_void {
    // SAFETY: apr_palloc gives memory aligned for any type from the connection's pool, which
    // lives exactly as long as the connection; ConnTrack is Copy. The config vector is an
    // array of its own, not part of the conn_rec.
    unsafe {
        let p = b::apr_palloc(c.pool, std::mem::size_of::<ConnTrack>()) as *mut ConnTrack;
        if p.is_null() {
            return std::ptr::null_mut();
        }
        p.write(track);
        b::ap_set_module_config(c.conn_config, module_ptr(), p as *mut c_void);
        p as *mut c_void
    }
}

/// An APR socket address as a std one (unspecified on anything unexpected).
///
/// # Safety
/// `sa` must be null or a live apr_sockaddr_t.
pub unsafe fn socket_addr(sa: *const b::apr_sockaddr_t) -> SocketAddr {
    // SAFETY: per the contract; ipaddr_ptr points at ipaddr_len bytes of the address.
    unsafe {
        let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let Some(sa) = sa.as_ref() else {
            return unspecified;
        };
        if sa.ipaddr_ptr.is_null() {
            return unspecified;
        }
        let bytes =
            std::slice::from_raw_parts(sa.ipaddr_ptr as *const u8, sa.ipaddr_len.max(0) as usize);
        let ip = match bytes.len() {
            4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            16 => {
                let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap_or([0; 16]));
                v6.to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6))
            }
            _ => return unspecified,
        };
        SocketAddr::new(ip, sa.port)
    }
}

/// A NUL-terminated C string's bytes (without the NUL), or empty for null.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that outlives `'a`.
pub unsafe fn bytes<'a>(p: *const std::ffi::c_char) -> &'a [u8] {
    if p.is_null() {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }.to_bytes()
}

/// A NUL-terminated C string as text (lossy), or "" for null.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
pub unsafe fn text<'a>(p: *const std::ffi::c_char) -> std::borrow::Cow<'a, str> {
    if p.is_null() {
        return "".into();
    }
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy()
}
