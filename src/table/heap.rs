//! A table in ordinary process memory: the same `SharedTable`, over an owned, aligned heap
//! buffer instead of Apache's shared segment. For unit tests and benchmarks, which exercise the
//! table's logic (including from many threads) without Apache.

use super::SharedTable;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct CacheLine([u8; 64]);

/// Owns the memory behind its `SharedTable`; the handle must not outlive it.
pub struct HeapTable {
    _mem: Vec<CacheLine>,
    table: SharedTable,
}

impl HeapTable {
    pub fn new(nslots: usize, nchildren: usize, now_mono_ms: u64) -> HeapTable {
        let size = SharedTable::required_size(nslots, nchildren);
        let mut mem = vec![CacheLine([0; 64]); size.div_ceil(64)];
        // SAFETY: `mem` is 64-byte aligned (CacheLine's alignment), at least `size` bytes, only
        // reached through the returned handle, and moved into the HeapTable that owns both —
        // a Vec's heap buffer does not move when the Vec does.
        let table = unsafe {
            SharedTable::init(
                mem.as_mut_ptr() as *mut u8,
                size,
                nslots,
                nchildren,
                now_mono_ms,
            )
        }
        .expect("a buffer of required_size bytes fits the layout");
        HeapTable { _mem: mem, table }
    }

    /// The table (a `Copy` handle): use it only while `self` lives.
    pub fn table(&self) -> SharedTable {
        self.table
    }

    /// The raw buffer, for tests of `SharedTable::attach`.
    pub fn base_and_len(&mut self) -> (*mut u8, usize) {
        (self._mem.as_mut_ptr() as *mut u8, self._mem.len() * 64)
    }
}
