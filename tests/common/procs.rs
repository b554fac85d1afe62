//! Helpers for the abandoned-work tests (abandoned.rs, server_stop.rs, graceful_deadline.rs):
//! the processes serving one client's request, liveness by pid, and a proxy backend that
//! accepts connections and never answers.
//!
//! Included with `#[path = "common/procs.rs"] mod procs;` next to `mod common;`.

#![allow(dead_code)]

use crate::common::{json, Apache};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pids whose environment names `REMOTE_PORT=<client_port>` and `REMOTE_ADDR=127.0.0.1`:
/// the CGI serving that client's request and its children (the test runs as root).
pub fn serving(client_port: u16) -> Vec<i32> {
    serving_where(client_port, None)
}

/// `serving`, and only on the server listening on `server_port` (`SERVER_PORT`): a CGI an
/// earlier test's server left running for a client that had the same ephemeral port is not
/// this request's.
pub fn serving_to(server_port: u16, client_port: u16) -> Vec<i32> {
    serving_where(client_port, Some(server_port))
}

fn serving_where(client_port: u16, server_port: Option<u16>) -> Vec<i32> {
    let want_port = format!("REMOTE_PORT={client_port}");
    let want_server = server_port.map(|p| format!("SERVER_PORT={p}"));
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        if vars.contains(&want_port.as_bytes())
            && vars.contains(&&b"REMOTE_ADDR=127.0.0.1"[..])
            && want_server
                .as_ref()
                .is_none_or(|w| vars.contains(&w.as_bytes()))
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// Running and not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Polls every 50 ms until `f` holds or `timeout` passes; returns how long it took.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// A backend on 127.0.0.1 that accepts every connection and never answers (a stuck
/// application server behind mod_proxy). Connections are held until it is dropped.
pub struct StuckBackend {
    pub port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl StuckBackend {
    pub fn start() -> StuckBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (Arc::clone(&held), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => h.lock().unwrap().push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        StuckBackend { port, held, stop }
    }

    pub fn accepted(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for StuckBackend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.held.lock().unwrap().clear();
    }
}

/// The pid serving `client_port` on `server_port` according to the status page (waits up to
/// 5 s for the row).
pub fn owner_pid(server: &Apache, client_port: u16, server_port: u16) -> i32 {
    let mut pid = 0;
    wait_until(Duration::from_secs(5), "the connection's row", || {
        let j = server.status_json();
        let rows = j.at("connections").as_array().unwrap().to_vec();
        pid = rows
            .iter()
            .find(|r| {
                r.get("client")
                    .and_then(json::Value::as_str)
                    .is_some_and(|a| a.ends_with(&format!(":{client_port}")))
                    && r.get("local_port").and_then(json::Value::as_u64) == Some(server_port as u64)
            })
            .and_then(|r| r.get("pid").and_then(json::Value::as_u64))
            .unwrap_or(0) as i32;
        pid != 0
    });
    pid
}
