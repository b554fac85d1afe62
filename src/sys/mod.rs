//! Thin, documented wrappers over the Linux interfaces the guard reads: /proc and sockets.
pub mod procfs;
pub mod socket;
