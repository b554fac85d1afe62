//! Per-vhost attribution and settings: two name-based vhosts on one port.

mod common;

use common::{hold_keepalive, json, Apache, Conn, Mpm, Opts};
use std::time::Duration;

fn row_for_client(rows: &[json::Value], client_port: u16) -> Option<&json::Value> {
    rows.iter().find(|r| {
        r.get("client")
            .and_then(json::Value::as_str)
            .map(|a| a.ends_with(&format!(":{client_port}")))
            .unwrap_or(false)
    })
}

fn vhost_attribution(mpm: Mpm) {
    let mut opts = Opts::new(mpm)
        .extra_ports(1)
        .global("SocketGuardAutoClose Off")
        .vhosts(
            "<VirtualHost 127.0.0.1:@PORT1@>\n    ServerName a.test\n    SocketGuardAutoClose On\n    SocketGuardCloseWaitTimeout 2s\n</VirtualHost>\n\
             <VirtualHost 127.0.0.1:@PORT1@>\n    ServerName b.test\n    SocketGuardAutoClose Report\n    SocketGuardCloseWaitTimeout 750ms\n</VirtualHost>",
        );
    if mpm == Mpm::Prefork {
        opts = opts.tuning("StartServers 8\nMinSpareServers 2\nMaxSpareServers 10\nServerLimit 32\nMaxRequestWorkers 32\n");
    }
    let server = Apache::start(opts);
    let (p0, p1) = (server.port(), server.extra_port(1));
    let (a_name, b_name, main_name) = (
        format!("a.test:{p1}"),
        format!("b.test:{p1}"),
        format!("127.0.0.1:{p0}"),
    );

    let s0 = server.status_auto();
    for (name, mode, timeout) in [(&a_name, "On", 2000), (&b_name, "Report", 750)] {
        let v = s0
            .vhost(name)
            .unwrap_or_else(|| panic!("no Vhost line for {name}:\n{}", s0.raw));
        assert_eq!(
            v.get("AutoClose"),
            Some(mode),
            "AutoClose of {name}: {:?}",
            v.raw
        );
        assert_eq!(
            v.num("TimeoutMs"),
            timeout,
            "TimeoutMs of {name}: {:?}",
            v.raw
        );
    }
    let b_accepted0 = s0.vhost(&b_name).unwrap().num("Accepted");

    // Two held connections whose request went to b.test, one to a.test, and one whose request
    // is still being read (request line sent, headers not finished). A connection that sent
    // nothing at all would not even be accepted yet (Linux TCP_DEFER_ACCEPT, Apache's default
    // AcceptFilter), so it is not used here.
    let b_conns = hold_keepalive(p1, 2, "/index.html", Some("b.test"));
    let a_conns = hold_keepalive(p1, 1, "/small.txt", Some("a.test"));
    let mut partial = Conn::connect(p1).unwrap();
    partial
        .send_raw(b"GET /small.txt HTTP/1.1\r\nX-Partial: 1\r\n")
        .unwrap();

    let s = server.wait_status(Duration::from_secs(10), "per-vhost Open counts", |s| {
        let a = s.vhost(&a_name).ok_or("no a.test line")?;
        let b = s.vhost(&b_name).ok_or("no b.test line")?;
        if a.num("Open") == 2 && b.num("Open") == 2 {
            Ok(())
        } else {
            Err(format!(
                "a.test Open={} b.test Open={}",
                a.num("Open"),
                b.num("Open")
            ))
        }
    });
    let b = s.vhost(&b_name).unwrap();
    assert_eq!(
        b.num("Accepted") - b_accepted0,
        2,
        "connections whose request named b.test count as accepted for b.test: {:?}",
        b.raw
    );
    // Settings unchanged by traffic.
    assert_eq!(b.get("AutoClose"), Some("Report"));
    assert_eq!(s.vhost(&a_name).unwrap().get("AutoClose"), Some("On"));

    let j = server.status_json();
    let rows = j.at("connections").as_array().expect("connections array");
    for c in &b_conns {
        let row = row_for_client(rows, c.local_port()).unwrap_or_else(|| {
            panic!(
                "no row for b.test client {}: {}",
                c.local_port(),
                j.at("connections")
            )
        });
        assert_eq!(
            row.at("vhost").as_str(),
            Some(b_name.as_str()),
            "request vhost wins once read: {row}"
        );
        assert_eq!(row.at("local_port").as_u64(), Some(p1 as u64), "{row}");
    }
    let row = row_for_client(rows, a_conns[0].local_port()).expect("row for a.test client");
    assert_eq!(row.at("vhost").as_str(), Some(a_name.as_str()), "{row}");
    assert_eq!(row.at("path").as_str(), Some("/small.txt"), "{row}");
    let row = row_for_client(rows, partial.local_port()).unwrap_or_else(|| {
        panic!(
            "no row for the connection whose request is being read: {}",
            j.at("connections")
        )
    });
    assert_eq!(
        row.at("vhost").as_str(),
        Some(a_name.as_str()),
        "before a request is read, the vhost is the one the connection arrived on (first vhost of the port): {row}"
    );
    assert_eq!(row.at("state").as_str(), Some("reading"), "{row}");
    assert_eq!(row.at("requests").as_u64(), Some(0), "{row}");

    // JSON vhosts carry the same names.
    let vh = j.at("vhosts").to_string();
    for host in ["a.test", "b.test", "127.0.0.1"] {
        assert!(
            vh.contains(&format!("\"{host}")),
            "JSON vhosts lack {host}: {vh}"
        );
    }

    drop(b_conns);
    drop(a_conns);
    drop(partial);
    let s = server.wait_status(Duration::from_secs(10), "vhost connections closed", |s| {
        let a = s.vhost(&a_name).ok_or("no a.test line")?.num("Open");
        let b = s.vhost(&b_name).ok_or("no b.test line")?.num("Open");
        if a == 0 && b == 0 {
            Ok(())
        } else {
            Err(format!("a.test Open={a} b.test Open={b}"))
        }
    });

    // The main server (default for the main port only) is listed as name:<main port>, with the
    // server-wide settings, and owns the status connections made to the main port.
    let main = s
        .vhost(&main_name)
        .unwrap_or_else(|| panic!("no Vhost line for the main server {main_name}:\n{}", s.raw));
    assert_eq!(main.get("AutoClose"), Some("Off"), "{:?}", main.raw);
    assert_eq!(main.num("TimeoutMs"), 30000, "{:?}", main.raw);
    assert!(
        main.num("Open") >= 1,
        "the status connection arrived on the main server: {:?}",
        main.raw
    );
    assert!(
        main.num("Accepted") >= 4,
        "the status connections count for the main server: {:?}",
        main.raw
    );
}

mpm_tests!(vhost_attribution: prefork, event);
