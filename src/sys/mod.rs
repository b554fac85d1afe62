//! Thin, documented wrappers over the Linux interfaces the guard reads: /proc and sockets.
pub(crate) mod number;
pub(crate) mod pidfd;
pub(crate) mod privilege;
pub(crate) mod process;
pub(crate) mod procfs;
pub mod socket;
