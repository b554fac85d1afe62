//! Connection hooks: claim a slot at accept, mark lingering close, release on pool cleanup.

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering::Relaxed;

use crate::clock::mono_ms;
use crate::ffi::bindings as b;
use crate::ffi::callback::callback;
use crate::ffi::conn::{self, ConnTrack};
use crate::ffi::{log, server_conf};
use crate::messages;
use crate::runtime;
use crate::table::state::SlotState;
use crate::table::{SharedTable, SlotHandle};

const OK: c_int = b::OK;

callback!(
    /// Claims a slot for a new connection. `csd` is the accepted socket (ap_get_conn_socket is
    /// not set up yet at this point).
    #[on_panic(OK)]
    pub fn pre_connection(c: &b::conn_rec, csd: *mut c_void) -> c_int {
        // HTTP/2 secondary connections (master set) share the primary's socket and are not
        // connections of their own; outgoing ones (mod_proxy's backend connections, which also
        // run pre_connection) are not clients.
        if !c.master.is_null() || c.outgoing != 0 {
            return OK;
        }
        let Some(table) = runtime::table() else {
            return OK;
        };
        let now = mono_ms();
        let Some(handle) = table.claim(runtime::pid(), runtime::next_hint(), now) else {
            if runtime::first_table_full() {
                log::warn(c.base_server, messages::TABLE_FULL, &format!(
                    "connection table full ({} slots): new connections are served but not tracked; raise SocketGuardSlots",
                    table.nslots()
                ));
            }
            return OK;
        };
        record_socket(&table, handle, c, csd);
        // SAFETY: c is live; the cleanup runs when the connection's pool is destroyed, after
        // Apache has closed the socket — it only frees the slot and never touches the fd.
        unsafe {
            let data = conn::set_track(c, ConnTrack { handle });
            b::apr_pool_cleanup_register(
                c.pool,
                data,
                Some(connection_cleanup),
                Some(b::apr_pool_cleanup_null),
            );
        }
        table.set_state(handle, SlotState::Reading, now);
        OK
    }
);

/// Records the accepted socket's fd, addresses and arrival vhost in the claimed slot. The
/// local address is exact: Apache's core asks the socket for it (getsockname) when the
/// listener is a wildcard, so the tuple names the connection for the scan's lookups.
fn record_socket(table: &SharedTable, handle: SlotHandle, c: &b::conn_rec, csd: *mut c_void) {
    let mut fd: b::apr_os_sock_t = -1;
    // SAFETY: csd is the apr_socket_t of this connection; apr_os_sock_get writes its fd.
    unsafe { b::apr_os_sock_get(&mut fd, csd as *mut b::apr_socket_t) };
    // SAFETY: base_server and the addresses are set by the core before pre_connection.
    let (vhost, client, local) = unsafe {
        let vhost = server_conf::of(c.base_server)
            .map(|s| s.vhost_index)
            .unwrap_or(0);
        (
            vhost,
            conn::socket_addr(c.client_addr),
            conn::socket_addr(c.local_addr),
        )
    };
    if let Some(slot) = table.owned(handle) {
        slot.set_socket(fd, &client, &local, vhost);
    }
    if let Some(row) = table.vhost(vhost) {
        row.accepted.fetch_add(1, Relaxed);
    }
}

callback!(
    /// Apache is about to do its lingering close.
    #[on_panic(OK)]
    pub fn pre_close_connection(c: &b::conn_rec) -> c_int {
        // SAFETY: c is a live conn_rec.
        if let (Some(t), Some(table)) = (unsafe { conn::track_of(c) }, runtime::table()) {
            table.enter(t.handle, SlotState::Closing);
        }
        OK
    }
);

callback!(
    /// Connection pool cleanup: the connection is over, free its slot.
    #[on_panic(0, "connection cleanup")]
    fn connection_cleanup(data: *mut c_void) -> b::apr_status_t {
        // `data` is the word set_track made (never dereferenced).
        if let (Some(track), Some(table)) = (ConnTrack::from_word(data), runtime::table()) {
            table.release(track.handle);
        }
        0
    }
);
