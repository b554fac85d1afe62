//! The shared connection table. `shared::SharedTable` is the only type that touches the
//! shared segment; `layout` defines its bytes, `slot` per-connection field access, `state`
//! the lifecycle states.
pub mod heap;
pub mod layout;
pub mod shared;
pub mod slot;
pub mod state;

pub use heap::HeapTable;
pub use shared::{SharedTable, SlotHandle, TableError};
pub use slot::SlotView;

#[cfg(test)]
mod tests;
