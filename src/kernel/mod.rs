//! The kernel's view of sockets on this server's ports.
pub mod proc_net;
