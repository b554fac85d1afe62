//! Apache hook callbacks, grouped by the part of the lifecycle they belong to. Each one is a
//! thin `extern "C"` shell opened by `callback!` (panic firewall, pointer checks), then a call
//! into safe code.
pub mod connection;
pub mod lifecycle;
pub mod request;
