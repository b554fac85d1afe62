//! The snapshot's leak report and last hour, read from the table (`table::report`,
//! `table::history`). Entries whose key has a shape the writer never makes (a child can
//! write anything there) are left out; text is raw, for the renderers to escape.

use std::sync::atomic::Ordering::Acquire;

use super::model::{Count, History, HistoryPoint, LeakClient, LeakPath, VhostLeaks};
use crate::table::history::Sample;
use crate::table::layout::{HISTORY_PERIOD_MS, HISTORY_SAMPLES, MAX_VHOSTS};
use crate::table::report::Counted;
use crate::table::SharedTable;

fn count<const N: usize>(c: &Counted<N>) -> Count {
    Count {
        count: c.count,
        error: c.error,
        last_seen_unix_ms: c.last_seen_unix_ms,
    }
}

/// Every vhost row's report that lists anything, in row order.
pub fn read_leaks(t: &SharedTable) -> Vec<VhostLeaks> {
    let rows = (t.header().vhost_count.load(Acquire) as usize).min(MAX_VHOSTS);
    (0..rows as u32)
        .filter_map(|i| {
            let r = t.leak_report(i);
            let paths: Vec<LeakPath> = r
                .paths
                .iter()
                .filter_map(|c| {
                    let (method, path) = c.key.text()?;
                    Some(LeakPath {
                        method,
                        path,
                        count: count(c),
                    })
                })
                .collect();
            let clients: Vec<LeakClient> = r
                .clients
                .iter()
                .filter_map(|c| {
                    Some(LeakClient {
                        client: c.key.ip()?.to_string(),
                        count: count(c),
                    })
                })
                .collect();
            if paths.is_empty() && clients.is_empty() {
                return None;
            }
            let (name, port) = t.vhost_name(i);
            Some(VhostLeaks {
                vhost: format!("{name}:{port}"),
                paths,
                clients,
            })
        })
        .collect()
}

/// The ring's samples as points, with the closes between consecutive samples.
pub fn read_history(t: &SharedTable) -> History {
    History {
        points: points(&t.samples()),
        ..empty_history()
    }
}

/// The history's shape with no samples.
pub fn empty_history() -> History {
    History {
        period_ms: HISTORY_PERIOD_MS,
        capacity: HISTORY_SAMPLES as u64,
        points: Vec::new(),
    }
}

fn points(samples: &[Sample]) -> Vec<HistoryPoint> {
    let mut prev: Option<&Sample> = None;
    samples
        .iter()
        .map(|s| {
            // Counters never go down, but a corrupt table could say so: no negative closes.
            let delta = |f: fn(&Sample) -> u64| prev.map_or(0, |p| f(s).saturating_sub(f(p)));
            let point = HistoryPoint {
                unix_ms: s.unix_ms,
                close_wait: u64::from(s.close_wait),
                open: u64::from(s.open),
                untracked: u64::from(s.untracked),
                guard_closes: delta(|x| x.force_closed_guard),
                rescue_closes: delta(|x| x.force_closed_rescue),
            };
            prev = Some(s);
            point
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::report::{ClientKey, PathKey};
    use crate::table::HeapTable;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn leaks_per_vhost_with_names_and_garbage_left_out() {
        let heap = HeapTable::for_tests();
        let t = heap.table();
        t.register_vhost("a.test", 80);
        t.register_vhost("b.test", 8080);
        let c = ClientKey::new("127.0.0.2".parse().unwrap());
        for p in ["/x", "/x", "/y"] {
            t.count_leak(1, &PathKey::new(b"GET", p.as_bytes()), &c, 5);
        }
        // A hostile child's garbage in another entry of the same list.
        let junk = &t.reports()[1].paths[5];
        junk.count.store(9, Relaxed);
        junk.shape.store(0xffff, Relaxed);
        let leaks = read_leaks(&t);
        assert_eq!(leaks.len(), 1, "vhost 0 has nothing to show");
        let v = &leaks[0];
        assert_eq!(v.vhost, "b.test:8080");
        let paths: Vec<(&str, u64)> = v
            .paths
            .iter()
            .map(|p| (p.path.as_str(), p.count.count))
            .collect();
        assert_eq!(paths, [("/x", 2), ("/y", 1)]);
        assert_eq!(v.clients[0].client, "127.0.0.2");
        assert_eq!(v.clients[0].count.count, 3);
        assert_eq!(v.clients[0].count.last_seen_unix_ms, 5);
    }

    #[test]
    fn closes_are_differences_between_samples() {
        let s = |g, r| Sample {
            force_closed_guard: g,
            force_closed_rescue: r,
            ..Default::default()
        };
        let p = points(&[s(5, 1), s(7, 1), s(7, 4), s(3, 4)]);
        let got: Vec<(u64, u64)> = p
            .iter()
            .map(|p| (p.guard_closes, p.rescue_closes))
            .collect();
        assert_eq!(got, [(0, 0), (2, 0), (0, 3), (0, 0)]);
    }
}
