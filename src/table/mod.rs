//! The shared connection table. `shared::SharedTable` is the only type that touches the
//! shared segment; `layout` defines its bytes, `slot` per-connection field access, `state`
//! the lifecycle states a slot's lease stores (what the status page shows is derived from
//! them in `status`).
mod children;
mod conn;
pub mod crash;
pub mod heap;
pub mod history;
mod inflight;
pub mod layout;
pub mod lease;
mod marks;
pub mod report;
pub mod shared;
pub mod slot;
pub mod state;
mod totals;

pub use children::ROW_CLAIMING;
pub use conn::SlotHandle;
pub use heap::HeapTable;
pub use shared::{SharedTable, TableError};
pub use slot::SlotView;
pub use totals::Totals;

#[cfg(test)]
mod die_safe;
#[cfg(test)]
mod die_safe_report;
#[cfg(test)]
mod tests;
