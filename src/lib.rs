//! mod_socket_guard: an Apache httpd 2.4 module that tracks every connection in shared memory,
//! finds sockets stuck in CLOSE_WAIT, and shows it all on /socket-status.
//!
//! Layout (see docs/ARCHITECTURE.md):
//! - `config`   — directive parsing, defaults, per-server merge (pure Rust)
//! - `table`    — the shared connection table: layout, slots, counters (pure Rust over a region)
//! - `status`   — the status data model, snapshot builder and its four renderers (pure Rust)
//! - `kernel`   — the kernel's view of CLOSE_WAIT sockets
//! - `guard`    — the per-child guard thread
//! - `rescue`   — the guard process (forked by the root parent): reclaim, scan, hung rescue
//! - `sys`      — thin wrappers over /proc and socket syscalls
//! - `runtime`  — per-process state (table handle, child row, guard thread)
//! - `ffi`      — everything that touches Apache: bindings, module struct, hooks, handler
//! - `fuzz`     — (tests only) property tests of every parser of outside input

pub mod clock;
pub mod config; // pub: tests/docs_directives.rs reads documented durations with its parser
pub mod guard;
pub mod kernel;
mod messages;
mod rescue;
mod runtime;
pub mod status;
pub mod sys;
pub mod table;

mod ffi;
#[cfg(test)]
mod fuzz;
