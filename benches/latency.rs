//! How long after its timeout the guard closes a connection stuck in CLOSE_WAIT, end to end,
//! with a real Apache (event MPM, started by the integration-test harness).
//!
//! A vhost has `SocketGuardAutoClose On` and `SocketGuardCloseWaitTimeout 1s`. N = 20 clients
//! each request a slow CGI (it answers nothing for 30 s); once all 20 handlers run, each client
//! half-closes (`shutdown(Write)`, at t0) — the server's socket goes to CLOSE_WAIT — and reads
//! until EOF (t1), which is the FIN the guard's shutdown() sends. The clients half-close spread
//! evenly over one scan interval, so that every phase of the scan cycle is sampled.
//!
//! latency = t1 - t0 - timeout: the time the guard needs to see the socket (up to one scan
//! interval) plus the time to act. Target: at most scan interval + 20 ms. Measured with
//! `SocketGuardScanInterval 1s` (the default) and `100ms`. Every server is stopped at the end,
//! also when something fails (the harness stops it on drop).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/guard.rs"]
mod guard;

use std::io::Read;
use std::net::Shutdown;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Conn, Mpm, Opts};

const CLIENTS: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(1);
const CGI_SECS: u32 = 30;

/// The event-MPM server with the tests' slow CGI (tests/common/guard.rs: it prints nothing
/// until the end and stops early when released) and one AutoClose On vhost.
fn start_server(interval: &str) -> guard::CgiServer {
    let opts = Opts::new(Mpm::Event)
        .extra_ports(1)
        .tuning(
            "StartServers 2\nServerLimit 4\nThreadLimit 32\nThreadsPerChild 32\n\
             MinSpareThreads 8\nMaxSpareThreads 128\nMaxRequestWorkers 128\n",
        )
        // The last SocketGuardScanInterval wins over cgi_global's 200 ms.
        .global(&format!(
            "{}SocketGuardScanInterval {interval}\n",
            guard::cgi_global(Mpm::Event)
        ))
        .vhosts(&format!(
            "<VirtualHost 127.0.0.1:@PORT1@>\n    ServerName on.test\n    \
             SocketGuardAutoClose On\n    SocketGuardCloseWaitTimeout {}ms\n</VirtualHost>\n",
            TIMEOUT.as_millis()
        ));
    guard::start_with_cgi(opts)
}

struct Outcome {
    interval: Duration,
    latencies_ms: Vec<f64>,
    failures: Vec<String>,
    force_closed: u64,
}

fn run(interval_text: &str, interval: Duration) -> Outcome {
    let server = start_server(interval_text);
    let port = server.extra_port(1);
    let mut conns: Vec<Conn> = (0..CLIENTS)
        .map(|i| Conn::connect(port).unwrap_or_else(|e| panic!("connect #{i}: {e}")))
        .collect();
    for c in conns.iter_mut() {
        c.send_request(
            "GET",
            &format!("/cgi-bin/slow?SLEEP={CGI_SECS}"),
            Some("on.test"),
            true,
            &[],
            b"",
        )
        .unwrap();
    }
    // All handlers must be running (their CGIs started) before the clients give up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.running_cgis() < CLIENTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {CLIENTS} CGIs running after 20s\n{}",
            server.running_cgis(),
            server.error_log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let limit = TIMEOUT + interval + Duration::from_secs(5);
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> Result<Duration, String> {
                let mut s = c.stream().try_clone().map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
                barrier.wait();
                // Spread the half-closes over one scan interval.
                std::thread::sleep(interval * i as u32 / CLIENTS as u32);
                let t0 = Instant::now();
                s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
                // The CGI sends nothing: the first read returns the guard's FIN (EOF).
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => Ok(t0.elapsed()),
                    Ok(n) => Err(format!(
                        "client {i}: {n} unexpected bytes: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    )),
                    Err(e) => Err(format!("client {i}: no EOF after {:?}: {e}", t0.elapsed())),
                }
            })
        })
        .collect();
    let mut latencies_ms = Vec::new();
    let mut failures = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(d)) => latencies_ms.push((d.as_secs_f64() - TIMEOUT.as_secs_f64()) * 1000.0),
            Ok(Err(e)) => failures.push(e),
            Err(_) => failures.push("client thread panicked".into()),
        }
    }
    let s = server.status_auto();
    let force_closed = s.num("ForceClosedGuard");
    if !failures.is_empty() {
        eprintln!("--- error.log tail ---\n{}", server.error_log_tail(30));
    }
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Outcome {
        interval,
        latencies_ms,
        failures,
        force_closed,
    }
}

fn main() {
    println!(
        "guard close latency, event MPM, {CLIENTS} clients half-closing during a slow CGI, \
         SocketGuardCloseWaitTimeout {}ms; latency = EOF at the client - half-close - timeout",
        TIMEOUT.as_millis()
    );
    let mut outcomes = Vec::new();
    for (text, interval) in [
        ("1s", Duration::from_secs(1)),
        ("100ms", Duration::from_millis(100)),
    ] {
        outcomes.push(run(text, interval));
    }
    println!(
        "{:>14} {:>7} {:>7} {:>8} {:>10} {:>8} {:>10}  target",
        "scan interval", "closed", "EOFs", "min ms", "median ms", "max ms", "limit ms"
    );
    let mut all_met = true;
    for o in &outcomes {
        let l = &o.latencies_ms;
        let limit = o.interval.as_secs_f64() * 1000.0 + 20.0;
        let (min, med, max) = if l.is_empty() {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            (l[0], l[l.len() / 2], l[l.len() - 1])
        };
        let met = o.failures.is_empty() && l.len() == CLIENTS && max <= limit;
        all_met &= met;
        println!(
            "{:>12}ms {:>7} {:>7} {:>8.1} {:>10.1} {:>8.1} {:>10.0}  {}",
            o.interval.as_millis(),
            o.force_closed,
            l.len(),
            min,
            med,
            max,
            limit,
            if met { "met" } else { "NOT met" }
        );
        for f in &o.failures {
            println!("    {f}");
        }
    }
    if !all_met {
        println!(
            "(target: every client gets its EOF within scan interval + 20 ms after the timeout)"
        );
    }
}
