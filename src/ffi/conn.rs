//! Reading Apache's connection and server records into plain Rust values.

use std::ffi::{c_void, CStr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::bindings as b;
use super::module::{config_entry, module_ptr};
use crate::table::SlotHandle;

/// What this module remembers about a tracked connection: its slot handle, packed into the
/// pointer-sized word Apache keeps for us in the connection's config vector and hands to the
/// pool cleanup, so nothing is allocated per connection. The word is never dereferenced. The
/// pid is not stored: a connection's hooks run in the process that claimed its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnTrack {
    pub handle: SlotHandle,
}

/// Marks a word as ours (Apache zero-initialises the config vector: 0 is untracked).
const TRACKED: usize = 1 << 63;
const _: () = assert!(
    usize::BITS == 64,
    "ConnTrack packs a handle into a 64-bit word"
);

impl ConnTrack {
    /// The word: TRACKED | tag << 32 | slot index.
    pub fn to_word(self) -> *mut c_void {
        let h = self.handle;
        (TRACKED | (h.tag as usize) << 32 | h.index as usize) as *mut c_void
    }

    /// The handle of a word `to_word` made, for this process; None for any other word.
    pub fn from_word(word: *const c_void) -> Option<ConnTrack> {
        let w = word as usize;
        (w & TRACKED != 0).then(|| ConnTrack {
            handle: SlotHandle {
                index: w as u32,
                tag: (w >> 32) as u32 & crate::table::lease::TAG_MASK,
                pid: crate::runtime::pid(),
            },
        })
    }
}

/// The tracking record of connection `c`, if it is tracked.
///
/// # Safety
/// `c` must be a live conn_rec.
pub unsafe fn track_of(c: *const b::conn_rec) -> Option<ConnTrack> {
    // SAFETY: per the contract; conn_config is zero-initialised by Apache, so an untracked
    // connection yields 0, and a word with TRACKED set is one we stored.
    unsafe {
        if c.is_null() {
            return None;
        }
        ConnTrack::from_word(config_entry((*c).conn_config))
    }
}

/// Stores `track` in `c`'s config vector. Returns the word, for the pool cleanup.
///
/// # Safety
/// `c` must be a conn_rec Apache set up (its conn_config vector live).
pub unsafe fn set_track(c: &b::conn_rec, track: ConnTrack) -> *mut c_void {
    let word = track.to_word();
    // SAFETY: the config vector is an array of its own, not part of the conn_rec; the word
    // is stored, never dereferenced.
    unsafe { b::ap_set_module_config(c.conn_config, module_ptr(), word) };
    word
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_round_trips_through_its_word_and_nothing_else_reads_as_one() {
        let handle = SlotHandle {
            index: u32::MAX,
            tag: crate::table::lease::TAG_MASK,
            pid: crate::runtime::pid(),
        };
        let t = ConnTrack { handle };
        assert_eq!(ConnTrack::from_word(t.to_word()), Some(t));
        let first = ConnTrack {
            handle: SlotHandle {
                index: 0,
                tag: 0,
                ..handle
            },
        };
        assert!(!first.to_word().is_null());
        assert_eq!(ConnTrack::from_word(first.to_word()), Some(first));
        assert_eq!(ConnTrack::from_word(std::ptr::null()), None);
        let aligned = 0x7fff_1234_5678usize as *const c_void;
        assert_eq!(
            ConnTrack::from_word(aligned),
            None,
            "a real pointer is no handle"
        );
    }
}
