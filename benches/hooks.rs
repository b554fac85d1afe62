//! Per-connection cost of the module's hot path, without Apache: everything the
//! pre_connection, post_read_request, log_transaction, pre_close_connection and cleanup hooks
//! do to the shared table (claim, descriptor and addresses of a real socket, fields,
//! method/path, three state changes and one that finds the state already set, release), timed
//! over many iterations. `make bench` runs it next to the
//! with/without-Apache comparison, whose noise is far larger than this cost.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mod_socket_guard::clock::mono_ms;
use mod_socket_guard::table::state::SlotState;
use mod_socket_guard::table::{HeapTable, SharedTable};

fn one_connection(t: &SharedTable, fd: i32, hint: usize, client: &SocketAddr, local: &SocketAddr) {
    // pre_connection
    let now = mono_ms();
    let h = t.claim(4242, hint, now).expect("free slot");
    let slot = t.owned(h).unwrap();
    slot.set_socket(fd, client, local, 0);
    t.vhost(0).unwrap().accepted.fetch_add(1, Relaxed);
    t.set_state(h, SlotState::Reading, now);
    // post_read_request
    let slot = t.owned(h).unwrap();
    slot.vhost.store(slot.vhost.load(Relaxed), Relaxed);
    slot.requests
        .store(slot.requests.load(Relaxed) + 1, Relaxed);
    t.vhost(0).unwrap().requests.fetch_add(1, Relaxed);
    slot.write_text(b"GET", b"/index.html");
    t.enter(h, SlotState::Handling);
    // log_transaction
    t.enter(h, SlotState::Closing);
    // pre_close_connection: already closing, nothing written
    t.enter(h, SlotState::Closing);
    // connection pool cleanup
    t.release(h);
}

fn main() {
    let nslots = 4160;
    let heap = HeapTable::new(nslots, 48, mono_ms());
    let t = heap.table();
    t.register_vhost("bench.test", 80);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (client, local) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
    let fd = stream.as_raw_fd();

    let iterations = 2_000_000usize;
    for i in 0..10_000 {
        one_connection(&t, fd, i, &client, &local);
    }
    let mut best = f64::MAX;
    for _round in 0..5 {
        let start = Instant::now();
        for i in 0..iterations {
            one_connection(&t, fd, i, &client, &local);
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
    }
    let inode_ns = {
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(mod_socket_guard::sys::socket::inode(fd).unwrap());
        }
        start.elapsed().as_nanos() as f64 / iterations as f64
    };
    println!(
        "hooks per connection (claim..release, 1 thread): {best:.0} ns  (an fstat, which \
         pre_connection no longer makes since issue 10: {inode_ns:.0} ns)"
    );

    // Two threads claiming and releasing concurrently: cross-core contention on the counters.
    let start = Instant::now();
    let per_thread = iterations / 2;
    std::thread::scope(|s| {
        for th in 0..2 {
            s.spawn(move || {
                for i in 0..per_thread {
                    one_connection(&t, fd, th * 2000 + i, &client, &local);
                }
            });
        }
    });
    let contended = start.elapsed().as_nanos() as f64 / per_thread as f64;
    println!("hooks per connection (2 threads at once, wall time per connection per thread): {contended:.0} ns");
    assert_eq!(t.totals().open, 0);
}
