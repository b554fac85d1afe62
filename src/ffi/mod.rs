//! Everything that touches Apache: raw bindings, the module struct, directive and hook
//! callbacks. Each callback is a thin shell over the plain-Rust modules of the crate.
pub mod bindings;
pub mod boundary;
pub mod callback;
pub mod conn;
pub mod directives;
pub mod guard_process;
pub mod hooks;
pub mod log;
pub mod module;
pub mod server_conf;
pub mod shm;
pub mod status_handler;
