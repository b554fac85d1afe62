//! Request hooks: once a request is read, attribute the connection to the request's vhost and
//! record method and path; after logging, the connection is idle again.

use std::ffi::c_int;
use std::sync::atomic::Ordering::Relaxed;

use crate::ffi::bindings as b;
use crate::ffi::boundary::guarded;
use crate::ffi::conn;
use crate::ffi::server_conf;
use crate::runtime;
use crate::table::state::SlotState;

const DECLINED: c_int = b::DECLINED;

pub unsafe extern "C" fn post_read_request(r: *mut b::request_rec) -> c_int {
    guarded("post_read_request", DECLINED, || {
        // SAFETY: Apache passes a live request_rec whose connection is live.
        let rr = unsafe { &*r };
        // SAFETY: rr.connection is the live conn_rec this request arrived on (track_of's
        // contract); it outlives the request.
        let Some(track) = (unsafe { conn::track_of(rr.connection) }) else {
            return DECLINED;
        };
        let Some(table) = runtime::table() else {
            return DECLINED;
        };
        let Some(slot) = table.owned(track.handle) else {
            return DECLINED;
        };
        // Name-based vhosts are only known now; the arrival vhost was a guess.
        // SAFETY: r->server is the request's (merged) server.
        let vhost = unsafe { server_conf::of(rr.server) }
            .map(|s| s.vhost_index)
            .unwrap_or(0);
        // Only the slot's holder writes these two: plain loads and stores, no locked
        // instructions.
        let old = slot.vhost.load(Relaxed);
        slot.vhost.store(vhost, Relaxed);
        let served = slot.requests.load(Relaxed);
        slot.requests.store(served + 1, Relaxed);
        let first = served == 0;
        if first && old != vhost {
            // "Accepted" per vhost counts a connection where its first request went.
            if let Some(row) = table.vhost(old) {
                row.accepted.fetch_sub(1, Relaxed);
            }
            if let Some(row) = table.vhost(vhost) {
                row.accepted.fetch_add(1, Relaxed);
            }
        }
        if let Some(row) = table.vhost(vhost) {
            row.requests.fetch_add(1, Relaxed);
        }
        // The path without query string: parsed_uri.path is the raw path as sent.
        // SAFETY: method and parsed_uri.path are null or NUL-terminated strings in r->pool.
        let (method, path) = unsafe { (conn::bytes(rr.method), conn::bytes(rr.parsed_uri.path)) };
        slot.write_text(method, path);
        table.enter(track.handle, SlotState::Handling);
        DECLINED
    })
}

pub unsafe extern "C" fn log_transaction(r: *mut b::request_rec) -> c_int {
    guarded("log_transaction", DECLINED, || {
        // SAFETY: Apache passes a live request_rec whose connection is live.
        let rr = unsafe { &*r };
        // SAFETY: log_transaction runs before the request's connection is torn down, so
        // rr.connection is a live conn_rec (track_of's contract).
        let Some(track) = (unsafe { conn::track_of(rr.connection) }) else {
            return DECLINED;
        };
        let Some(table) = runtime::table() else {
            return DECLINED;
        };
        // SAFETY: as above.
        let keepalive = unsafe { (*rr.connection).keepalive } == b::AP_CONN_KEEPALIVE as _;
        let state = if keepalive {
            SlotState::Keepalive
        } else {
            SlotState::Closing
        };
        table.enter(track.handle, state);
        DECLINED
    })
}
