//! Directive validation through `apache2 -t`: every bad value or wrong context stops configtest
//! with a message naming the directive; every documented good form passes.

mod common;

use common::{configtest, Mpm, Opts};

const VHOST_OPEN: &str = "<VirtualHost 127.0.0.1:@PORT1@>\n    ServerName v.test\n";
const VHOST_CLOSE: &str = "</VirtualHost>\n";

enum Where {
    Global,
    Vhost,
}

fn opts_with(place: &Where, line: &str) -> Opts {
    let base = Opts::new(Mpm::Event).extra_ports(1);
    match place {
        Where::Global => base.global(line),
        Where::Vhost => base.vhosts(&format!("{VHOST_OPEN}    {line}\n{VHOST_CLOSE}")),
    }
}

/// Runs all cases and reports every failing one at once.
fn check_all(cases: &[(Where, &str, &str, Option<&str>)], expect_ok: bool) {
    let mut failures = Vec::new();
    for (place, line, directive, value) in cases {
        let ctx = match place {
            Where::Global => "server config",
            Where::Vhost => "<VirtualHost>",
        };
        let (ok, out) = configtest(&opts_with(place, line));
        // First, for good and bad values alike: a caught panic returns the directive's
        // fallback (success), so it would otherwise pass as a good value.
        if out.contains("SG0004") {
            failures.push(format!(
                "`{line}` in {ctx}: a Rust panic was caught parsing it:\n{out}"
            ));
        }
        if expect_ok {
            if !ok || !out.contains("Syntax OK") {
                failures.push(format!("`{line}` in {ctx} should pass configtest:\n{out}"));
            }
            continue;
        }
        if ok {
            failures.push(format!(
                "`{line}` in {ctx} passed configtest but must fail:\n{out}"
            ));
            continue;
        }
        if !out.contains(directive) {
            failures.push(format!(
                "`{line}` in {ctx}: configtest output does not name {directive}:\n{out}"
            ));
        }
        if let Some(v) = value {
            if !out.contains(v) {
                failures.push(format!("`{line}` in {ctx}: configtest output does not show the bad value {v:?}:\n{out}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn bad_values_fail_configtest() {
    use Where::*;
    check_all(
        &[
            (
                Global,
                "SocketGuardAutoClose Maybe",
                "SocketGuardAutoClose",
                Some("Maybe"),
            ),
            (
                Vhost,
                "SocketGuardAutoClose Maybe",
                "SocketGuardAutoClose",
                Some("Maybe"),
            ),
            (
                Global,
                "SocketGuardCloseWaitTimeout 50ms",
                "SocketGuardCloseWaitTimeout",
                Some("50ms"),
            ),
            (
                Global,
                "SocketGuardCloseWaitTimeout abc",
                "SocketGuardCloseWaitTimeout",
                Some("abc"),
            ),
            (
                Global,
                "SocketGuardCloseWaitTimeout 5h",
                "SocketGuardCloseWaitTimeout",
                Some("5h"),
            ),
            (
                Vhost,
                "SocketGuardCloseWaitTimeout 50ms",
                "SocketGuardCloseWaitTimeout",
                Some("50ms"),
            ),
            (
                Global,
                "SocketGuardScanInterval 5ms",
                "SocketGuardScanInterval",
                Some("5ms"),
            ),
            (
                Global,
                "SocketGuardScanInterval 2m",
                "SocketGuardScanInterval",
                Some("2m"),
            ),
            (Global, "SocketGuardSlots 3", "SocketGuardSlots", Some("3")),
            (
                Global,
                "SocketGuardSlots lots",
                "SocketGuardSlots",
                Some("lots"),
            ),
            (
                Global,
                "SocketGuardSlots 2000000",
                "SocketGuardSlots",
                Some("2000000"),
            ),
            (
                Global,
                "SocketGuardRescue perhaps",
                "SocketGuardRescue",
                Some("perhaps"),
            ),
            (
                Global,
                "SocketGuardHungChildTimeout 0",
                "SocketGuardHungChildTimeout",
                Some("0"),
            ),
            (
                Global,
                "SocketGuardHungChildTimeout 500ms",
                "SocketGuardHungChildTimeout",
                Some("500ms"),
            ),
            (
                Global,
                "SocketGuardAbandonedTimeout never",
                "SocketGuardAbandonedTimeout",
                Some("never"),
            ),
            (
                Vhost,
                "SocketGuardAbandonedTimeout 10ms",
                "SocketGuardAbandonedTimeout",
                Some("10ms"),
            ),
            (
                Global,
                "SocketGuardGracefulDeadline 500ms",
                "SocketGuardGracefulDeadline",
                Some("500ms"),
            ),
            (
                Global,
                "SocketGuardGracefulDeadline -1",
                "SocketGuardGracefulDeadline",
                Some("-1"),
            ),
            // A HungChildTimeout shorter than two check-ins, in either order of the lines.
            (
                Global,
                "SocketGuardScanInterval 5s\nSocketGuardHungChildTimeout 9s",
                "SG0029: SocketGuardHungChildTimeout 9s is too short for SocketGuardScanInterval 5s",
                Some("SocketGuardHungChildTimeout 9s"),
            ),
            (
                Global,
                "SocketGuardHungChildTimeout 1s\nSocketGuardScanInterval 750ms",
                "SocketGuardScanInterval 750ms",
                Some("SocketGuardHungChildTimeout 1s is too short"),
            ),
            (
                Global,
                "SocketGuardHungChildTimeout 1s",
                "SocketGuardScanInterval 1s",
                Some("at least 2s"),
            ),
            // Argument count errors come from Apache itself but must still name the directive.
            (Global, "SocketGuardAutoClose", "SocketGuardAutoClose", None),
            (Global, "SocketGuardSlots 16 32", "SocketGuardSlots", None),
        ],
        false,
    );
}

#[test]
fn server_only_directives_fail_in_virtualhost() {
    use Where::*;
    check_all(
        &[
            (
                Vhost,
                "SocketGuardScanInterval 1s",
                "SocketGuardScanInterval",
                None,
            ),
            (Vhost, "SocketGuardSlots 64", "SocketGuardSlots", None),
            (Vhost, "SocketGuardRescue On", "SocketGuardRescue", None),
            (
                Vhost,
                "SocketGuardHungChildTimeout 10s",
                "SocketGuardHungChildTimeout",
                None,
            ),
            (
                Vhost,
                "SocketGuardGracefulDeadline 30s",
                "SocketGuardGracefulDeadline",
                None,
            ),
        ],
        false,
    );
}

#[test]
fn directives_fail_in_directory_context() {
    use Where::*;
    // Server/vhost directives are not per-directory: a <Location> block is the wrong context.
    check_all(
        &[
            (
                Global,
                "<Location /x>\n    SocketGuardAutoClose On\n</Location>",
                "SocketGuardAutoClose",
                None,
            ),
            (
                Global,
                "<Directory /tmp>\n    SocketGuardCloseWaitTimeout 5s\n</Directory>",
                "SocketGuardCloseWaitTimeout",
                None,
            ),
        ],
        false,
    );
}

#[test]
fn good_forms_pass_configtest() {
    use Where::*;
    check_all(
        &[
            (Global, "SocketGuardCloseWaitTimeout 500ms", "", None),
            (Global, "SocketGuardCloseWaitTimeout 5s", "", None),
            (Global, "SocketGuardCloseWaitTimeout 2m", "", None),
            (Global, "SocketGuardCloseWaitTimeout 60", "", None),
            (Global, "SocketGuardCloseWaitTimeout 100ms", "", None),
            (Vhost, "SocketGuardCloseWaitTimeout 5s", "", None),
            (Global, "SocketGuardScanInterval 10ms", "", None),
            (Global, "SocketGuardScanInterval 500ms", "", None),
            (Global, "SocketGuardScanInterval 60s", "", None),
            (Global, "SocketGuardScanInterval 1m", "", None),
            (Global, "SocketGuardScanInterval 5", "", None),
            (Global, "SocketGuardSlots 16", "", None),
            (Global, "SocketGuardSlots 4096", "", None),
            (Global, "SocketGuardRescue On", "", None),
            (Global, "SocketGuardRescue Off", "", None),
            (Global, "SocketGuardHungChildTimeout 2s", "", None),
            (
                Global,
                "SocketGuardHungChildTimeout 1s\nSocketGuardScanInterval 500ms",
                "",
                None,
            ),
            // Unset, HungChildTimeout grows with the interval (two intervals).
            (Global, "SocketGuardScanInterval 30s", "", None),
            (Global, "SocketGuardHungChildTimeout 2m", "", None),
            (Global, "SocketGuardHungChildTimeout 60", "", None),
            (Global, "SocketGuardAutoClose On", "", None),
            (Global, "SocketGuardAutoClose off", "", None),
            (Vhost, "SocketGuardAutoClose Report", "", None),
            (Vhost, "SocketGuardAutoClose ON", "", None),
            (Global, "SocketGuardAbandonedTimeout Off", "", None),
            (Global, "SocketGuardAbandonedTimeout 30s", "", None),
            (Vhost, "SocketGuardAbandonedTimeout 500ms", "", None),
            (Vhost, "SocketGuardAbandonedTimeout off", "", None),
            (Global, "SocketGuardGracefulDeadline Off", "", None),
            (Global, "SocketGuardGracefulDeadline 2m", "", None),
        ],
        true,
    );
}
