//! Thin, documented wrappers over the Linux interfaces the guard reads: /proc and sockets.
pub mod pidfd;
pub mod privilege;
pub mod process;
pub mod procfs;
pub mod socket;
