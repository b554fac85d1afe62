//! Raw bindgen output for the httpd/APR API (see build.rs for the allowlist). Nothing outside
//! `ffi` uses these names directly.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(unknown_lints, unnecessary_transmutes)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
