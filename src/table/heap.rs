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

/// Fixtures for the crate's unit tests.
#[cfg(test)]
impl HeapTable {
    /// A small table: 8 slots, 2 child rows.
    pub(crate) fn for_tests() -> HeapTable {
        HeapTable::new(8, 2, 1)
    }

    /// A vhost row `name:80` with its AutoClose mode and CLOSE_WAIT timeout set.
    pub(crate) fn vhost_with(
        &self,
        name: &str,
        mode: crate::config::AutoClose,
        timeout_ms: u64,
    ) -> u32 {
        use std::sync::atomic::Ordering::Relaxed;
        let i = self.table.register_vhost(name, 80);
        let row = self.table.vhost(i).expect("just registered");
        row.auto_close.store(mode as u32, Relaxed);
        row.close_wait_timeout_ms.store(timeout_ms, Relaxed);
        i
    }

    /// The (local, client) tuple of `stuck_connection(_, _, inode, _)`: 10.0.0.2:80 and
    /// 10.0.0.1, port 5000 + inode, so that each test socket has its own tuple.
    pub(crate) fn stuck_tuple(inode: u64) -> (std::net::SocketAddr, std::net::SocketAddr) {
        let port = 5_000u16.wrapping_add(inode as u16);
        (
            "10.0.0.2:80".parse().unwrap(),
            std::net::SocketAddr::new([10, 0, 0, 1].into(), port),
        )
    }

    /// The kernel's CLOSE_WAIT socket of `stuck_connection(_, _, inode, _)`.
    pub(crate) fn stuck_socket(inode: u64) -> crate::kernel::KernelSocket {
        let (local, remote) = Self::stuck_tuple(inode);
        crate::kernel::KernelSocket {
            local,
            remote,
            state: crate::kernel::TCP_CLOSE_WAIT,
            recv_q: 1,
            inode,
            cookie: 0,
            uid: 33,
        }
    }

    /// A connection of `pid` on `vhost` (fd 7, socket `inode`, tuple `stuck_tuple(inode)`),
    /// handling `GET /slow`, that the scan first saw in CLOSE_WAIT at `since`.
    pub(crate) fn stuck_connection(
        &self,
        pid: u32,
        vhost: u32,
        inode: u64,
        since: u64,
    ) -> super::SlotHandle {
        let t = self.table;
        let h = t.claim(pid, 0, 0).expect("a free slot");
        let s = t.owned(h).expect("just claimed");
        let (local, client) = Self::stuck_tuple(inode);
        s.set_socket(7, &client, &local, vhost);
        // What the scan records with the mark: the kernel's inode for the tuple.
        s.inode.store(inode, std::sync::atomic::Ordering::Relaxed);
        s.write_text(b"GET", b"/slow");
        t.set_state(h, super::state::SlotState::Handling, 0);
        t.mark_close_wait(s, h.tag, since);
        h
    }
}
