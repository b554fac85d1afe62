//! CPU cost of one /socket-status request at 10,000 connections, in process: the snapshot of
//! the shared table (every slot walked, every row built) and each page drawn from it, default
//! (every row that needs attention + 100 others) and `all`. No Apache, no socket, no kernel
//! dump (that is `cargo bench --bench scan`: ~4.6 ms at 10,000 connections), so the figures
//! are the module's own work without the loopback transfer and the scheduling noise of a busy
//! machine that `benches/status_page.py` (the end-to-end figures) sees.
//!
//! The table: 12,000 slots, 10,000 keep-alive connections spread over 4 children and 2 vhosts,
//! plus 20 in CLOSE_WAIT (they need attention: all of them are on every page). Each figure is
//! the minimum and the median of ROUNDS runs.

use std::time::{Duration, Instant};

use mod_socket_guard::status::model::Snapshot;
use mod_socket_guard::status::snapshot::{self, ServerInfo};
use mod_socket_guard::status::{html, json, query, select};
use mod_socket_guard::table::state::SlotState;
use mod_socket_guard::table::HeapTable;

const SLOTS: usize = 12_000;
const IDLE: usize = 10_000;
const CLOSE_WAIT: usize = 20;
const ROUNDS: usize = 30;
const NOW: u64 = 1_000_000;

fn table() -> HeapTable {
    let heap = HeapTable::new(SLOTS, 16, 0);
    let t = heap.table();
    let vhosts = [
        t.register_vhost("www.example.test", 80),
        t.register_vhost("shop.example.test", 80),
    ];
    for i in 0..IDLE + CLOSE_WAIT {
        let pid = 1000 + (i % 4) as u32;
        let h = t
            .claim(pid, i, NOW - 60_000 + i as u64)
            .expect("a free slot");
        let s = t.owned(h).expect("just claimed");
        let client = format!(
            "10.{}.{}.{}:{}",
            i / 65_536,
            i / 256 % 256,
            i % 256,
            40_000 + i % 20_000
        );
        s.set_socket(
            7,
            &client.parse().unwrap(),
            &"10.0.0.1:80".parse().unwrap(),
            vhosts[i % 2],
        );
        s.write_text(b"GET", b"/index.html");
        if i < IDLE {
            t.set_state(h, SlotState::Keepalive, NOW);
        } else {
            t.set_state(h, SlotState::Handling, NOW);
            t.mark_close_wait(s, h.tag, NOW - 5_000);
        }
    }
    heap
}

/// (min, median) of `ROUNDS` runs of `f`; `f` returns a size to keep the work observable.
fn time<T>(mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut times = Vec::with_capacity(ROUNDS);
    let mut last = f();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        last = f();
        times.push(t0.elapsed());
    }
    times.sort();
    (times[0], times[ROUNDS / 2], last)
}

fn page(s: &Snapshot, args: &str) -> String {
    let q = query::parse(Some(args)).expect("a valid query");
    let sel = select::select(s, &q);
    match q.format {
        query::Format::Json => json::render(s, &sel, &q),
        _ => html::render(s, &sel, &q),
    }
}

fn main() {
    let heap = table();
    let t = heap.table();
    let info = ServerInfo {
        server_version: "Apache/2.4 (bench)".into(),
        mpm: "event".into(),
    };
    let (min, med, snap) = time(|| snapshot::build(Some(&t), &info, NOW, Ok(Vec::new())));
    println!(
        "status_render: {} rows ({} need attention), {ROUNDS} rounds each",
        snap.connections.len(),
        select::select(&snap, &query::Query::default())
            .attention
            .len()
    );
    println!("| step | bytes | min | median |\n|---|---:|---:|---:|");
    println!(
        "| snapshot of the table | — | {:.2} ms | {:.2} ms |",
        ms(min),
        ms(med)
    );
    for (label, args) in [
        ("HTML default", ""),
        ("HTML all", "all"),
        ("JSON default", "json"),
        ("JSON all", "json&all"),
        ("HTML, state=close_wait", "state=close_wait"),
        ("HTML page 50", "page=50"),
    ] {
        let (min, med, body) = time(|| page(&snap, args));
        println!(
            "| {label} (`?{args}`) | {} | {:.2} ms | {:.2} ms |",
            body.len(),
            ms(min),
            ms(med)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
