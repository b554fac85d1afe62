//! The module loads under every MPM: configtest passes, `-M` lists it, the server starts and
//! /socket-status answers.

mod common;

use common::{apache_cmd, configtest, Apache, Mpm, Opts};

fn module_loads(mpm: Mpm) {
    let opts = Opts::new(mpm);

    let (ok, out) = configtest(&opts);
    assert!(
        ok,
        "apache2 -t failed with the module loaded ({mpm:?}):\n{out}"
    );
    assert!(
        out.contains("Syntax OK"),
        "apache2 -t did not say Syntax OK:\n{out}"
    );

    let (ok, out) = apache_cmd(&opts, &["-M"]);
    assert!(ok, "apache2 -M failed:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.trim().starts_with("socket_guard_module")),
        "apache2 -M does not list socket_guard_module:\n{out}"
    );
    assert!(
        out.contains(&format!("mpm_{}_module", mpm.name())),
        "apache2 -M does not list the {} MPM:\n{out}",
        mpm.name()
    );

    let server = Apache::start(opts);
    let r = server.get("/socket-status");
    assert_eq!(r.status, 200, "GET /socket-status:\n{}", r.text());
    assert!(
        r.content_type().starts_with("text/html"),
        "content type {:?}",
        r.content_type()
    );
    assert!(!r.body.is_empty(), "empty status page");

    let auto = server.status_auto();
    assert_eq!(
        auto.get("ServerMPM"),
        Some(mpm.name()),
        "ServerMPM on ?auto:\n{}",
        auto.raw
    );
    assert_eq!(
        auto.num("RestartGeneration"),
        0,
        "fresh server must be generation 0:\n{}",
        auto.raw
    );
    // Ordinary content is still served with the module loaded.
    let r = server.get("/index.html");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("socket guard test"));

    assert!(server.is_running(), "server died:\n{}", server.error_log());
    let log = server.error_log();
    for bad in [
        "SG0004",
        "[emerg]",
        "[crit]",
        "[alert]",
        "Segmentation fault",
        "AH00052",
    ] {
        assert!(!log.contains(bad), "error.log contains {bad:?}:\n{log}");
    }
}

mpm_tests!(module_loads);
