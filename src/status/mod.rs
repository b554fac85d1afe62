//! Status page: one data model, rendered as HTML, `?auto`, JSON and Prometheus text.
pub mod auto;
pub mod escape;
pub mod html;
mod html_conns;
mod html_leaks;
pub mod json;
pub mod leaks;
mod links;
pub mod metrics;
mod metrics_leaks;
pub mod model;
pub mod params;
pub mod query;
pub mod select;
pub mod server_status;
pub mod snapshot;
mod svg;
mod time;

use model::{ShownState, Totals, VhostRow};

/// Open connections in one state. Renderers walk `ShownState::OPEN` rather than
/// `open_by_state` so every format always lists all five states, zeros included, even if a
/// snapshot leaves one out.
pub(crate) fn open_in(totals: &Totals, state: ShownState) -> u64 {
    totals
        .open_by_state
        .iter()
        .filter(|(s, _)| *s == state)
        .map(|(_, n)| n)
        .sum()
}

/// The raw "name:port" a vhost is known by in every format (escape it before output).
pub(crate) fn vhost_label(v: &VhostRow) -> String {
    format!("{}:{}", v.name, v.port)
}

/// A hand-built snapshot full of hostile strings, shared by the renderers' unit tests.
#[cfg(test)]
pub(crate) mod fixture {
    use super::model::*;
    use crate::config::AutoClose;

    pub const HOSTILE_PATH: &str = "/<script>alert(\"x\")</script>\n\"}";
    pub const HOSTILE_VHOST: &str = "evil <b>\"host\"</b>\\\nSlotsTotal: 0";
    pub const HOSTILE_CLIENT: &str = "10.0.0.1:5555<img src=x onerror=alert(1)>";
    /// The path of the force-closed row: the URL whose handler leaks sockets.
    pub const FORCE_CLOSED_PATH: &str = "/export/<all>&\"csv\"";
    /// The command name of the first leaked socket's holder (a process names itself).
    pub const HOSTILE_COMM: &str = "<x>\"\n";

    fn conn(state: ShownState, age_ms: u64, close_wait_ms: Option<u64>, path: &str) -> ConnRow {
        ConnRow {
            pid: 101,
            client: "192.0.2.7:40000".into(),
            local_port: 80,
            vhost: "www.example.com:80".into(),
            state,
            age_ms,
            close_wait_ms,
            class: close_wait_ms.map(|_| CloseWaitClass::Stuck),
            requests: 3,
            method: "GET".into(),
            path: path.into(),
            abandoned_ms: None,
            stopped: None,
        }
    }

    /// The path of the abandoned handler that is no longer in CLOSE_WAIT (`with_abandoned`).
    pub const ABANDONED_PATH: &str = "/cgi-bin/<slow>&\"x\"";

    /// The fixture with abandoned connections: the force-closed row (its CGI got SIGTERM
    /// 12.3 s after the client was found gone) and the hostile CLOSE_WAIT row (SIGKILL), plus
    /// an abandoned keep-alive row whose handler has returned (not counted in
    /// `abandoned_now`).
    pub fn with_abandoned() -> Snapshot {
        let mut s = snapshot();
        for c in &mut s.connections {
            if c.state == ShownState::ForceClosed {
                c.abandoned_ms = Some(12_300);
                c.stopped = Some(Stop::CgiTerm);
                c.path = ABANDONED_PATH.into();
            } else if c.path == HOSTILE_PATH {
                c.abandoned_ms = Some(15_000);
                c.stopped = Some(Stop::CgiKill);
            } else if c.state == ShownState::Keepalive {
                c.abandoned_ms = Some(2_000);
            }
        }
        s.totals.abandoned_now = 2;
        s
    }

    /// The fixture with a different count in every class (stuck 5, hung 6, old_generation 7,
    /// untracked 8, leaked 9, backlog 10) and verdict churn, so a swapped key or label shows.
    pub fn with_distinct_classes() -> Snapshot {
        let mut s = snapshot();
        s.kernel.stuck = 5;
        s.kernel.hung = 6;
        s.kernel.old_generation = 7;
        s.kernel.untracked = 8;
        s.kernel.leaked_count = 9;
        s.kernel.backlog = 10;
        s.kernel.verdict = Verdict::Churn;
        s
    }

    /// The fixture plus 250 keep-alive rows (10.1.0.0-10.1.1.49, ages 1.000-1.249 s): 256
    /// rows, 3 of which need attention, so the default page leaves some out.
    pub fn crowded() -> Snapshot {
        let mut s = snapshot();
        let idle = s.connections[0].clone();
        for i in 0..250u64 {
            let mut c = idle.clone();
            c.client = format!("10.1.{}.{}:4000", i / 200, i % 200);
            c.age_ms = 1_000 + i;
            s.connections.push(c);
        }
        s
    }

    /// The snapshot's wall clock (2023-11-14 22:13:20 UTC).
    pub const NOW_UNIX_MS: u64 = 1_700_000_000_000;
    /// The leak report's hostile method (a child can write any bytes).
    pub const HOSTILE_METHOD: &str = "G\"ET<";

    fn counted(count: u64, error: u64, ago_ms: u64) -> Count {
        Count {
            count,
            error,
            last_seen_unix_ms: NOW_UNIX_MS - ago_ms,
        }
    }

    /// Two vhosts' reports: the hostile one (its hostile path 7 times, POST /export 9 with
    /// an error bound of 4), www.example.com:443 (GET /report 3 times).
    fn leaks() -> Vec<VhostLeaks> {
        vec![
            VhostLeaks {
                vhost: format!("{HOSTILE_VHOST}:80"),
                paths: vec![
                    LeakPath {
                        method: "POST".into(),
                        path: "/export".into(),
                        count: counted(9, 4, 600_000),
                    },
                    LeakPath {
                        method: HOSTILE_METHOD.into(),
                        path: HOSTILE_PATH.into(),
                        count: counted(7, 0, 12_000),
                    },
                ],
                clients: vec![LeakClient {
                    client: "192.0.2.7".into(),
                    count: counted(16, 0, 12_000),
                }],
            },
            VhostLeaks {
                vhost: "www.example.com:443".into(),
                paths: vec![LeakPath {
                    method: "GET".into(),
                    path: "/report".into(),
                    count: counted(3, 0, 3_000),
                }],
                clients: vec![LeakClient {
                    client: "2001:db8::1".into(),
                    count: counted(3, 0, 3_000),
                }],
            },
        ]
    }

    /// Four samples: three in a row ten minutes ago (2 guard closes and 1 rescue between the
    /// first two), then one 5 s ago after a gap.
    fn history() -> History {
        let p = |ago_ms, close_wait, open, guard_closes, rescue_closes| HistoryPoint {
            unix_ms: NOW_UNIX_MS - ago_ms,
            close_wait,
            open,
            untracked: 1,
            guard_closes,
            rescue_closes,
        };
        History {
            period_ms: 5_000,
            capacity: 720,
            points: vec![
                p(600_000, 2, 5, 0, 0),
                p(595_000, 3, 6, 2, 1),
                p(590_000, 1, 4, 0, 0),
                p(5_000, 0, 4, 1, 0),
            ],
        }
    }

    pub fn snapshot() -> Snapshot {
        let mut hostile = conn(ShownState::CloseWait, 1_000, Some(45_500), HOSTILE_PATH);
        hostile.client = HOSTILE_CLIENT.into();
        hostile.vhost = format!("{}:80", HOSTILE_VHOST);
        hostile.method = "G\"ET<".into();
        // Owned by the hung child 102, so its class is `hung`.
        let mut short = conn(ShownState::CloseWait, 70_000, Some(1_200), "/cw-short");
        short.pid = 102;
        short.class = Some(CloseWaitClass::Hung);
        // The guard shut it down but the handler still runs: listed, not open, no longer in
        // CLOSE_WAIT (the kernel moved it on after the shutdown).
        let force_closed = conn(ShownState::ForceClosed, 60_000, None, FORCE_CLOSED_PATH);
        Snapshot {
            server_version: "Apache/2.4.99 (Test)\nEvil: 1".into(),
            mpm: "event".into(),
            module_version: "0.1.0".into(),
            uptime_secs: 93_784,
            generation: 2,
            slots_total: 1024,
            slots_used: 4,
            scan_interval_ms: 1_000,
            full_scan_interval_ms: 5_000,
            graceful_deadline_ms: 30_000,
            totals: Totals {
                accepted: 1_000,
                requests: 5_000,
                closed: 990,
                open_by_state: vec![
                    (ShownState::Reading, 1),
                    (ShownState::Handling, 1),
                    (ShownState::Keepalive, 1),
                    (ShownState::Closing, 0),
                    (ShownState::CloseWait, 2),
                ],
                close_wait_now: 2,
                force_closed_guard: 7,
                force_closed_rescue: 3,
                reported: 5,
                reclaimed: 11,
                untracked: 13,
                stopped_cgi: 17,
                stopped_child: 19,
                abandoned_now: 0,
            },
            vhosts: vec![
                VhostRow {
                    name: HOSTILE_VHOST.into(),
                    port: 80,
                    auto_close: AutoClose::On,
                    close_wait_timeout_ms: 30_000,
                    accepted: 600,
                    open: 3,
                    close_wait_now: 2,
                    force_closed_guard: 6,
                    force_closed_rescue: 2,
                    reported: 0,
                    abandoned_timeout_ms: 0,
                    stopped_cgi: 0,
                    stopped_child: 0,
                },
                VhostRow {
                    name: "www.example.com".into(),
                    port: 443,
                    auto_close: AutoClose::Report,
                    close_wait_timeout_ms: 500,
                    accepted: 400,
                    open: 2,
                    close_wait_now: 0,
                    force_closed_guard: 1,
                    force_closed_rescue: 1,
                    reported: 5,
                    abandoned_timeout_ms: 2_500,
                    stopped_cgi: 14,
                    stopped_child: 3,
                },
            ],
            children: vec![
                ChildRow {
                    pid: 101,
                    generation: 2,
                    open: 4,
                    checkin_age_ms: 250,
                    hung: false,
                },
                ChildRow {
                    pid: 102,
                    generation: 1,
                    open: 1,
                    checkin_age_ms: 60_000,
                    hung: true,
                },
            ],
            // Deliberately not in display order: CLOSE_WAIT rows are last here.
            connections: vec![
                conn(ShownState::Keepalive, 90_000, None, "/old"),
                conn(ShownState::Reading, 5, None, ""),
                force_closed,
                conn(ShownState::Handling, 2_000, None, "/slow"),
                short,
                hostile,
            ],
            kernel: KernelView {
                available: true,
                error: None,
                tracked: 2,
                untracked: 1,
                leaked_count: 2,
                backlog: 3,
                leaked: vec![
                    LeakedSocket {
                        client: "198.51.100.9:1234\n<b>".into(),
                        local_port: 80,
                        inode: 987_654,
                        holder_pid: Some(4242),
                        holder_comm: HOSTILE_COMM.into(),
                        closed: false,
                    },
                    LeakedSocket {
                        client: "[2001:db8::1]:999".into(),
                        local_port: 443,
                        inode: 123,
                        holder_pid: None,
                        holder_comm: String::new(),
                        closed: false,
                    },
                ],
                // Consistent with the rows: the hostile one (pid 101) is stuck, /cw-short
                // (pid 102, hung) is hung; stuck + hung + old_generation == tracked.
                stuck: 1,
                hung: 1,
                old_generation: 0,
                verdict: Verdict::Leak,
                oldest_close_wait_ms: 45_500,
            },
            close_wait_histogram: Histogram {
                bounds_secs: vec![0.1, 1.0, 30.0],
                counts: vec![2, 3, 1, 4],
                sum_secs: 321.5,
            },
            scanner: ScannerInfo {
                pid: 101,
                scans: 77,
                scan_errors: 2,
                last_scan_us: 140,
                last_scan_lookups: 3,
                last_scan_full: false,
                full_scans: 15,
                last_scan_age_ms: 300,
                guard_pid: 100,
                guard_reach: "children",
                rescue: true,
            },
            now_unix_ms: NOW_UNIX_MS,
            leaks: leaks(),
            history: history(),
        }
    }
}
