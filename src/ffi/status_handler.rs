//! The `socket-status` handler and the section inside mod_status's /server-status.

use std::ffi::{c_int, CString};

use super::bindings as b;
use super::boundary::guarded;
use super::{conn, log};
use crate::clock::mono_ms;
use crate::kernel::{self, sock_diag::DiagSocket};
use crate::messages;
use crate::runtime;
use crate::status::query::{self, Format};
use crate::status::snapshot::{self, ServerInfo};
use crate::status::{auto, html, json, metrics, model::Snapshot, server_status};

const HANDLER_NAME: &[u8] = b"socket-status";

fn take_snapshot() -> Snapshot {
    // SAFETY: both return static strings owned by Apache for the life of the process.
    let info = unsafe {
        ServerInfo {
            server_version: conn::text(b::ap_get_server_description()).into_owned(),
            mpm: conn::text(b::ap_show_mpm()).into_owned(),
        }
    };
    let table = runtime::table();
    let kernel = match &table {
        Some(t) => {
            let mut diag = DiagSocket::open().ok();
            kernel::close_wait_on(diag.as_mut(), &t.listeners())
        }
        None => Err("shared table unavailable".to_string()),
    };
    snapshot::build(table.as_ref(), &info, mono_ms(), kernel)
}

/// Writes `body` to the client.
///
/// # Safety
/// `r` must be the live request being handled.
unsafe fn write_body(r: *mut b::request_rec, body: &str) {
    // SAFETY: per the contract; ap_rwrite copies `len` bytes from the buffer.
    unsafe { b::ap_rwrite(body.as_ptr() as *const _, body.len() as c_int, r) };
}

pub unsafe extern "C" fn handler(r: *mut b::request_rec) -> c_int {
    guarded(
        "socket-status handler",
        b::HTTP_INTERNAL_SERVER_ERROR,
        || {
            // SAFETY: Apache passes the live request being handled.
            let rr = unsafe { &mut *r };
            // Runs for every request of the server: compare bytes, convert nothing.
            // SAFETY: r->handler is null or a NUL-terminated string.
            if unsafe { conn::bytes(rr.handler) } != HANDLER_NAME {
                return b::DECLINED;
            }
            if rr.method_number != b::M_GET {
                // HEAD is M_GET with header_only set, so it is allowed too.
                rr.allowed |= 1 << b::M_GET;
                return b::HTTP_METHOD_NOT_ALLOWED;
            }
            // SAFETY: r->args is null or the NUL-terminated query string.
            let args = unsafe { (!rr.args.is_null()).then(|| conn::text(rr.args)) };
            let q = match query::parse(args.as_deref()) {
                Ok(q) => q,
                Err(e) => {
                    log::log(
                        log::Level::Info,
                        rr.server,
                        messages::BAD_STATUS_QUERY,
                        &format!("bad /socket-status query: {e}"),
                    );
                    return b::HTTP_BAD_REQUEST;
                }
            };
            let ctype = CString::new(query::content_type(q.format)).unwrap_or_default();
            // SAFETY: ap_set_content_type keeps the pointer, so it must live as long as the
            // request: copy it into r->pool first.
            unsafe { b::ap_set_content_type(r, b::apr_pstrdup(rr.pool, ctype.as_ptr())) };
            if rr.header_only != 0 {
                return b::OK;
            }
            let snap = take_snapshot();
            let body = match q.format {
                Format::Html => html::render(&snap, q.refresh),
                Format::Auto => auto::render(&snap),
                Format::Json => json::render(&snap),
                Format::Metrics => metrics::render(&snap),
            };
            // SAFETY: r is the live request.
            unsafe { write_body(r, &body) };
            b::OK
        },
    )
}

/// mod_status's `status_hook`: a short section on /server-status (HTML) or `SocketGuard*`
/// lines on /server-status?auto.
pub unsafe extern "C" fn status_hook(r: *mut b::request_rec, flags: c_int) -> c_int {
    guarded("server-status section", b::OK, || {
        let snap = take_snapshot();
        let text = if flags & b::AP_STATUS_SHORT != 0 {
            server_status::auto_lines(&snap)
        } else {
            server_status::html_section(&snap)
        };
        // SAFETY: mod_status calls the hook with the live request it is answering.
        unsafe { write_body(r, &text) };
        b::OK
    })
}
