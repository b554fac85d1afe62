//! Request data from the network (paths, Host) is escaped in every format; query strings are
//! never recorded.

mod common;

use common::status::parse_metrics;
use common::{json, poll, Apache, Conn, Mpm, Opts};
use std::time::Duration;

const RAW_PATH: &str = "/<script>alert(1)</script>\"'&";
const ENC_PATH: &str = "/%3Cscript%3Ealert(2)%3C/script%3E%22'&";
const ENC_DECODED: &str = "/<script>alert(2)</script>\"'&";
/// Newline, control char and a byte that is not UTF-8, percent-encoded.
const NASTY_PATH: &str = "/x%0Ay%01z%FFw%00";
const NASTY_PATH2: &str = "/x%0Ay%01z%FFw";
const SECRET: &str = "secretquery";

/// Sends raw bytes as a request; returns the connection if the server kept it open.
fn hold_raw(port: u16, request: &[u8]) -> (u16, Option<Conn>) {
    let mut c = Conn::connect(port).unwrap();
    c.send_raw(request).unwrap();
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(request)));
    let closes = r
        .header("Connection")
        .map(|v| v.eq_ignore_ascii_case("close"))
        .unwrap_or(false);
    eprintln!(
        "{:?} -> {}{}",
        String::from_utf8_lossy(request)
            .lines()
            .next()
            .unwrap_or(""),
        r.status,
        if closes { " (closed)" } else { "" }
    );
    (r.status, if closes { None } else { Some(c) })
}

fn assert_json_utf8_and_parse(body: &[u8]) -> json::Value {
    let text = std::str::from_utf8(body).unwrap_or_else(|e| {
        panic!(
            "?json is not valid UTF-8 ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    json::parse(text).unwrap_or_else(|e| panic!("?json is not well-formed: {e}\n{text}"))
}

#[test]
fn hostile_request_data_is_escaped_event() {
    let server = Apache::start(Opts::new(Mpm::Event));
    let port = server.port();

    let (st_raw, c_raw) = hold_raw(
        port,
        format!("GET {RAW_PATH}?{SECRET}=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    );
    let (_, c_enc) = hold_raw(
        port,
        format!("GET {ENC_PATH}?{SECRET}=2&x=<i> HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    );
    let c_enc = c_enc.expect("a percent-encoded path that 404s keeps its keep-alive connection");
    let c_raw = c_raw.expect("a raw hostile path that 404s keeps its keep-alive connection");
    let (_, c_nasty) = hold_raw(
        port,
        format!("GET {NASTY_PATH2}?{SECRET}=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    );
    let (_, c_nasty0) = hold_raw(
        port,
        format!("GET {NASTY_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    );
    // Raw obs-text bytes in the request line (Apache's strict parser accepts obs-text).
    let (_, c_obs) = hold_raw(
        port,
        b"GET /obs\xff\xfe<x> HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    // A hostile Host header: Apache rejects it before any request hook runs, and the module
    // never records a Host (a connection's vhost is the matched ServerName), so it cannot
    // reach a page; the request still goes through the module's connection hooks.
    let (st_host, c_host) = hold_raw(
        port,
        b"GET /index.html HTTP/1.1\r\nHost: <b>evil</b>\"\r\n\r\n",
    );
    assert_eq!(st_raw, 404, "the raw hostile path is served (not found)");
    assert_eq!(st_host, 400, "Apache rejects a Host with markup");
    // Every other request kept its connection, so each has a row with its path.
    let held: Vec<Conn> = [c_nasty, c_nasty0, c_obs]
        .into_iter()
        .map(|c| c.expect("a hostile path that 404s keeps its keep-alive connection"))
        .collect();

    // Wait until the held connections show their paths.
    let enc_port = c_enc.local_port();
    let raw_port = c_raw.local_port();
    let mut want: Vec<u16> = held.iter().map(Conn::local_port).collect();
    want.extend([enc_port, raw_port]);
    let j = poll(
        Duration::from_secs(10),
        "rows for the hostile requests",
        || {
            let r = server.get("/socket-status?json");
            let j = assert_json_utf8_and_parse(&r.body);
            let rows = j.at("connections").as_array().unwrap().to_vec();
            let has = |p: u16| {
                rows.iter().any(|r| {
                    common::client_port_of(r) == Some(p)
                        && r.get("path")
                            .and_then(|v| v.as_str())
                            .map(|s| !s.is_empty())
                            .unwrap_or(false)
                })
            };
            if want.iter().all(|p| has(*p)) {
                Ok(j)
            } else {
                Err(format!("rows: {}", j.at("connections")))
            }
        },
    );
    let rows = j.at("connections").as_array().unwrap();
    let enc_row = rows
        .iter()
        .find(|r| common::client_port_of(r) == Some(enc_port))
        .unwrap();
    let enc_path = enc_row.at("path").as_str().unwrap();
    assert!(
        enc_path == ENC_PATH || enc_path == ENC_DECODED,
        "percent-encoded request's path recorded as {enc_path:?}; expected {ENC_PATH:?} or {ENC_DECODED:?} (no query string)"
    );
    let row = rows
        .iter()
        .find(|r| common::client_port_of(r) == Some(raw_port))
        .unwrap();
    assert_eq!(
        row.at("path").as_str(),
        Some(RAW_PATH),
        "raw hostile path, without its query string: {row}"
    );
    assert_eq!(row.at("method").as_str(), Some("GET"));

    // JSON once more, raw: no query strings anywhere.
    let r = server.get("/socket-status?json");
    let jtext = String::from_utf8_lossy(&r.body).into_owned();
    assert_json_utf8_and_parse(&r.body);
    assert!(
        !jtext.contains(SECRET),
        "query string recorded in ?json:\n{jtext}"
    );

    // HTML: the hostile path is shown, escaped.
    let r = server.get("/socket-status");
    assert_eq!(r.status, 200);
    let html = r.text();
    let lower = html.to_ascii_lowercase();
    assert!(
        !lower.contains("<script"),
        "raw <script> in the HTML page:\n{html}"
    );
    assert!(
        !lower.contains("<x>") && !lower.contains("<i>"),
        "raw request markup in the HTML page:\n{html}"
    );
    assert!(
        html.contains("&lt;script&gt;alert("),
        "the hostile path should be listed, HTML-escaped, in the connections table:\n{html}"
    );
    assert!(
        !html.contains(SECRET),
        "query string recorded in HTML:\n{html}"
    );
    let r = server.get("/socket-status?refresh=2");
    assert!(
        !r.text().to_ascii_lowercase().contains("<script"),
        "raw <script> in ?refresh HTML"
    );

    // ?auto and metrics: well-formed, no query strings, no raw markup.
    let auto = server.status_auto();
    assert!(
        auto.malformed_lines.is_empty(),
        "?auto lines broken by request data: {:?}",
        auto.malformed_lines
    );
    assert!(
        !auto.raw.contains(SECRET) && !auto.raw.contains("<script"),
        "{}",
        auto.raw
    );
    let r = server.get("/socket-status?metrics");
    let text = r.text();
    parse_metrics(&text).unwrap_or_else(|e| panic!("?metrics broken: {e}\n{text}"));
    assert!(
        !text.contains(SECRET) && !text.contains("<script"),
        "{text}"
    );

    drop((c_raw, c_enc, held, c_host));
    assert!(server.is_running());
    assert!(
        !server.error_log().contains("SG0004"),
        "{}",
        server.error_log()
    );
}
