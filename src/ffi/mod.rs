//! Everything that touches Apache: raw bindings, the module struct, directive and hook
//! callbacks. Each callback is a thin shell over the plain-Rust modules of the crate.
pub(crate) mod bindings;
pub(crate) mod boundary;
pub(crate) mod callback;
pub(crate) mod conn;
pub(crate) mod directives;
pub(crate) mod guard_process;
pub(crate) mod hooks;
pub(crate) mod log;
pub(crate) mod module;
pub(crate) mod server_conf;
pub(crate) mod shm;
pub(crate) mod status_handler;
