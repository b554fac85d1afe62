//! The `socket-status` handler and the section inside mod_status's /server-status.

use std::ffi::{c_int, CString};

use super::bindings as b;
use super::callback::callback;
use super::{conn, log};
use crate::clock::mono_ms;
use crate::kernel::{self, sock_diag::DiagSocket};
use crate::messages;
use crate::runtime;
use crate::status::escape;
use crate::status::query::{self, Format, QueryError};
use crate::status::select::select;
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
fn write_body(r: &mut b::request_rec, body: &str) {
    // SAFETY: r is the live request being answered; ap_rwrite copies `len` bytes from the
    // buffer.
    unsafe { b::ap_rwrite(body.as_ptr() as *const _, body.len() as c_int, r) };
}

/// Answers 400 for a query we cannot honour. The reason goes into the error log and, through
/// the `error-notes` note, into Apache's own 400 page (which prints that note as HTML, so it
/// is escaped; it names parameters and limits, never what the client sent).
fn refuse(r: &mut b::request_rec, e: &QueryError) -> c_int {
    let text = format!("bad /socket-status query: {e}");
    log::log(
        log::Level::Info,
        r.server,
        messages::BAD_STATUS_QUERY,
        &text,
    );
    if let Ok(note) = CString::new(escape::html(&text)) {
        // SAFETY: r->notes is the request's table; apr_table_set copies key and value into
        // the table's pool.
        unsafe { b::apr_table_set(r.notes, c"error-notes".as_ptr(), note.as_ptr()) };
    }
    b::HTTP_BAD_REQUEST
}

/// The handler hook. It runs for every request of the server, so the usual answer — not ours,
/// the handler's name differs in its first byte — is given before the panic firewall: it reads
/// two pointers and a byte, which cannot panic.
///
/// # Safety
/// Apache's handler hook contract: `r` is null or a live request_rec.
pub unsafe extern "C" fn handler(r: *mut b::request_rec) -> c_int {
    // SAFETY: per the contract; r->handler is null or a NUL-terminated string, so its first
    // byte is readable.
    let first = unsafe { r.as_ref().and_then(|r| r.handler.as_ref()) };
    if first.map(|&c| c as u8) != Some(HANDLER_NAME[0]) {
        return b::DECLINED;
    }
    // SAFETY: as above.
    unsafe { serve(r) }
}

callback!(
    /// The `socket-status` handler: GET and HEAD only, output chosen by the query string.
    #[on_panic(b::HTTP_INTERNAL_SERVER_ERROR, "socket-status handler")]
    fn serve(r: &mut b::request_rec) -> c_int {
        // SAFETY: r->handler is null or a NUL-terminated string.
        if unsafe { conn::bytes(r.handler) } != HANDLER_NAME {
            return b::DECLINED;
        }
        if r.method_number != b::M_GET {
            // HEAD is M_GET with header_only set, so it is allowed too.
            r.allowed |= 1 << b::M_GET;
            return b::HTTP_METHOD_NOT_ALLOWED;
        }
        // SAFETY: r->args is null or the NUL-terminated query string.
        let args = unsafe { (!r.args.is_null()).then(|| conn::text(r.args)) };
        let q = match query::parse(args.as_deref()) {
            Ok(q) => q,
            Err(e) => return refuse(r, &e),
        };
        let ctype = CString::new(query::content_type(q.format)).unwrap_or_default();
        // SAFETY: ap_set_content_type keeps the pointer, so it must live as long as the
        // request: copy it into r->pool first.
        unsafe { b::ap_set_content_type(r, b::apr_pstrdup(r.pool, ctype.as_ptr())) };
        if r.header_only != 0 {
            return b::OK;
        }
        let snap = take_snapshot();
        let body = match q.format {
            Format::Html => html::render(&snap, &select(&snap, &q), &q),
            Format::Auto => auto::render(&snap),
            Format::Json => json::render(&snap, &select(&snap, &q), &q),
            Format::Metrics => metrics::render(&snap),
        };
        write_body(r, &body);
        b::OK
    }
);

callback!(
    /// mod_status's `status_hook`: a short section on /server-status (HTML) or `SocketGuard*`
    /// lines on /server-status?auto.
    #[on_panic(b::OK, "server-status section")]
    pub fn status_hook(r: &mut b::request_rec, flags: c_int) -> c_int {
        let snap = take_snapshot();
        let text = if flags & b::AP_STATUS_SHORT != 0 {
            server_status::auto_lines(&snap)
        } else {
            server_status::html_section(&snap)
        };
        write_body(r, &text);
        b::OK
    }
);
