//! `callback!`: opens an `extern "C"` function that Apache calls, so the function reads like its
//! logic. Modelled on ngx-rust's `http_request_handler!` (which turns the raw request pointer
//! into a `&mut Request` before the handler runs), with this project's panic firewall kept:
//!
//! ```ignore
//! callback!(
//!     /// Apache is about to do its lingering close.
//!     #[on_panic(OK)]
//!     pub fn pre_close_connection(c: &b::conn_rec) -> c_int {
//!         /* c is a reference here; a panic is logged (SG0004) and OK returned */
//!     }
//! );
//! ```
//!
//! The generated `unsafe extern "C" fn` has the raw signature Apache expects and
//! - runs everything inside `boundary::guarded`, named by the function (or the label given as
//!   `#[on_panic(fallback, "label")]`), returning `fallback` if it panics;
//! - turns each parameter written `&T` / `&mut T` (raw `*mut T`) or `&CStr` (raw
//!   `*const c_char`) into that reference, returning `fallback` if the pointer is null;
//! - passes every other parameter through unchanged (pools, `void *` data, ints).
//!
//! A reference parameter promises what Apache guarantees for its hook and directive arguments:
//! the record is live for the whole call and no one else writes it meanwhile (`&mut` only for
//! records the callback alone works on, the request being handled or the directive's
//! `cmd_parms`). Pass a reference back to C as the pointer it came from (`&mut T` coerces to
//! `*mut T`, `&T` to `*const T`).

/// See the module documentation.
macro_rules! callback {
    // Entry: docs, then #[on_panic(..)], then the function.
    (
        $(#[doc = $doc:literal])*
        #[on_panic($fallback:expr $(, $label:literal)?)]
        $vis:vis fn $name:ident ($($params:tt)*) $(-> $ret:ty)? $body:block
    ) => {
        $crate::ffi::callback::callback!(@params
            {
                docs: [$(#[doc = $doc])*],
                vis: $vis,
                name: $name,
                label: ($crate::ffi::callback::callback!(@label $name $($label)?)),
                fallback: ($fallback),
                ret: [$($ret)?],
                body: $body
            }
            [] [] $($params)*
        );
    };

    (@label $name:ident) => { stringify!($name) };
    (@label $name:ident $label:literal) => { $label };

    // One parameter at a time: its raw type goes into the signature, and how to read it into
    // the list of reads. `&mut` before `&`, and `&CStr` before `&T`, so each gets its own arm.
    (@params $f:tt [$($sig:tt)*] [$($read:tt)*] $arg:ident : &mut $t:ty $(, $($rest:tt)*)?) => {
        $crate::ffi::callback::callback!(@params $f
            [$($sig)* $arg: *mut $t,] [$($read)* ($arg as_mut)] $($($rest)*)?);
    };
    (@params $f:tt [$($sig:tt)*] [$($read:tt)*] $arg:ident : &CStr $(, $($rest:tt)*)?) => {
        $crate::ffi::callback::callback!(@params $f
            [$($sig)* $arg: *const ::std::ffi::c_char,] [$($read)* ($arg c_str)] $($($rest)*)?);
    };
    (@params $f:tt [$($sig:tt)*] [$($read:tt)*] $arg:ident : & $t:ty $(, $($rest:tt)*)?) => {
        $crate::ffi::callback::callback!(@params $f
            [$($sig)* $arg: *mut $t,] [$($read)* ($arg as_ref)] $($($rest)*)?);
    };
    (@params $f:tt [$($sig:tt)*] [$($read:tt)*] $arg:ident : $t:ty $(, $($rest:tt)*)?) => {
        $crate::ffi::callback::callback!(@params $f [$($sig)* $arg: $t,] [$($read)*] $($($rest)*)?);
    };

    // All parameters read: emit the function.
    (@params {
        docs: [$($docs:tt)*],
        vis: $vis:vis,
        name: $name:ident,
        label: ($label:expr),
        fallback: ($fallback:expr),
        ret: [$($ret:ty)?],
        body: $body:block
    } [$($sig:tt)*] [$(($arg:ident $how:ident))*]) => {
        $($docs)*
        $vis unsafe extern "C" fn $name($($sig)*) $(-> $ret)? {
            $crate::ffi::boundary::guarded($label, $fallback, || {
                $(
                    let raw = $arg;
                    let Some($arg) = $crate::ffi::callback::callback!(@read $how raw) else {
                        return $fallback;
                    };
                )*
                $body
            })
        }
    };

    // SAFETY (all three): Apache passes hook and directive arguments that are null or live for
    // the whole call, with no other writer meanwhile (see the module documentation); null was
    // turned into None by as_ref/as_mut and is checked before CStr::from_ptr.
    (@read as_ref $raw:ident) => {
        unsafe { $raw.as_ref() }
    };
    (@read as_mut $raw:ident) => {
        unsafe { $raw.as_mut() }
    };
    (@read c_str $raw:ident) => {
        (!$raw.is_null()).then(|| unsafe { ::std::ffi::CStr::from_ptr($raw) })
    };
}

pub(crate) use callback;

#[cfg(test)]
mod tests {
    use std::ffi::{c_char, c_int};

    #[repr(C)]
    struct Rec {
        n: c_int,
    }

    super::callback!(
        /// Adds `by` to the record and returns the new value.
        #[on_panic(-1)]
        fn add(rec: &mut Rec, by: c_int) -> c_int {
            rec.n += by;
            rec.n
        }
    );

    super::callback!(
        #[on_panic(0, "length of a C string")]
        fn len(s: &CStr, _rec: &Rec) -> usize {
            s.to_bytes().len()
        }
    );

    #[test]
    fn references_reach_the_body() {
        let mut rec = Rec { n: 1 };
        // SAFETY: a live, exclusively borrowed record.
        assert_eq!(unsafe { add(&mut rec, 2) }, 3);
        assert_eq!(rec.n, 3);
        // SAFETY: a NUL-terminated literal and a live record.
        assert_eq!(unsafe { len(c"abc".as_ptr(), &mut rec) }, 3);
    }

    #[test]
    fn a_null_pointer_returns_the_fallback_without_running_the_body() {
        // SAFETY: null is what is being tested; the callback must not dereference it.
        assert_eq!(unsafe { add(std::ptr::null_mut(), 2) }, -1);
        let mut rec = Rec { n: 0 };
        // SAFETY: as above, for each parameter in turn.
        unsafe {
            assert_eq!(len(std::ptr::null::<c_char>(), &mut rec), 0);
            assert_eq!(len(c"abc".as_ptr(), std::ptr::null_mut()), 0);
        }
    }
}
