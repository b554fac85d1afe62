//! Graceful restarts: counters keep counting, the generation advances, and the parent does not
//! accumulate descriptors or shared mappings.

mod common;

use common::{poll, Apache, Conn, Mpm, Opts};
use std::time::Duration;

/// (fd count, rw-s mapping count) of the parent once two readings 100 ms apart agree.
fn stable_parent_resources(server: &Apache) -> (usize, usize) {
    let mut prev = (server.parent_fd_count(), server.parent_shm_mappings());
    poll(
        Duration::from_secs(5),
        "parent fd/mapping counts to settle",
        || {
            std::thread::sleep(Duration::from_millis(100));
            let now = (server.parent_fd_count(), server.parent_shm_mappings());
            if now == prev {
                Ok(now)
            } else {
                let e = format!("{prev:?} -> {now:?}");
                prev = now;
                Err(e)
            }
        },
    )
}

fn traffic(server: &Apache) {
    let mut c = Conn::connect(server.port()).unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("/index.html").unwrap().status, 200);
    }
}

fn counters_survive_graceful_restarts(mpm: Mpm) {
    let server = Apache::start(Opts::new(mpm));
    let mut last = server.status_auto();
    assert_eq!(last.num("RestartGeneration"), 0, "{}", last.raw);
    traffic(&server);

    let mut after_first = None;
    let mut after_first_fds = String::new();
    let mut after_first_maps = String::new();
    for i in 1..=3u64 {
        let gen = server.graceful_restart();
        assert_eq!(gen, i, "RestartGeneration after restart #{i}");
        let s = server.status_auto();
        assert!(
            s.num("Accepted") > last.num("Accepted"),
            "Accepted went from {} to {} across restart #{i} (must keep counting)",
            last.num("Accepted"),
            s.num("Accepted")
        );
        assert!(
            s.num("Requests") > last.num("Requests"),
            "Requests must keep counting across restart #{i}"
        );
        assert!(
            s.num("Uptime") >= last.num("Uptime"),
            "Uptime is since first start; restart #{i} reset it"
        );
        assert_eq!(s.get("ServerMPM"), Some(mpm.name()));
        assert!(
            server.is_running(),
            "parent died at restart #{i}:\n{}",
            server.error_log()
        );
        traffic(&server);

        if i == 1 {
            after_first = Some(stable_parent_resources(&server));
            after_first_fds = server.parent_fd_targets();
            after_first_maps = server.parent_shm_mapping_lines();
        }
        last = server.status_auto();
    }

    let want = after_first.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = (server.parent_fd_count(), server.parent_shm_mappings());
        if got == want {
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "parent (fds, rw-s mappings) after restart 1 = {want:?}, after restart 3 = {got:?}\n\
                 --- fds after 1 ---\n{after_first_fds}\n--- fds after 3 ---\n{}\n\
                 --- rw-s maps after 1 ---\n{after_first_maps}\n--- rw-s maps after 3 ---\n{}",
                server.parent_fd_targets(),
                server.parent_shm_mapping_lines()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Live children are of the current generation once the old ones have finished.
    server.wait_status(
        Duration::from_secs(15),
        "only generation-3 children listed",
        |s| {
            let children = s.children();
            if children.is_empty() {
                return Err("no Child lines".into());
            }
            let old: Vec<_> = children
                .iter()
                .filter(|c| c.num("Generation") != 3)
                .map(|c| c.raw.clone())
                .collect();
            if old.is_empty() {
                Ok(())
            } else {
                Err(format!("still listed: {old:?}"))
            }
        },
    );
    let log = server.error_log();
    assert!(!log.contains("SG0004"), "{log}");
}

mpm_tests!(counters_survive_graceful_restarts);
