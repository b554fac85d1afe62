//! Property tests of every parser of outside input (issue 8, "Parsers fuzzed"): netlink
//! replies, directive values, status query strings, /proc text and the environment of a CGI.
//!
//! Why proptest and not cargo-fuzz: libFuzzer needs a nightly toolchain and this project
//! builds on stable only, while proptest runs inside `cargo test` and shrinks a failure to a
//! minimal input. Inputs are random bytes and, because random bytes rarely get past a
//! parser's first check, generators that build the real thing (a kernel dump, a
//! /proc/net/tcp line, a directive value) and then mutate it (`mutate`).
//!
//! Case counts: 256 per property in `cargo test` (so `make test` runs them); under `make
//! fuzz` the FUZZ_CASES environment variable is a total, spread evenly over the properties
//! listed in `PROPERTIES`, and each property prints its count and time. Failures are not
//! persisted to files: the shrunk input is in the failure message, and every bug found gets
//! its own unit regression test next to the code it fixed.

mod directives;
mod lookup;
mod mutate;
mod netlink;
mod privilege;
mod proc_net;
mod process;
mod procfs;
mod query;

use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

/// Every property, by the name it passes to `check`: FUZZ_CASES is divided by their number.
pub const PROPERTIES: &[&str] = &[
    "netlink::any_bytes",
    "netlink::valid_dump_round_trips",
    "netlink::mutated_dump",
    "netlink::interrupted_dump",
    "netlink::kernel_error",
    "netlink::truncated_datagram",
    "netlink::stale_replies",
    "lookup::any_bytes",
    "lookup::replies_round_trip",
    "lookup::mutated_replies",
    "lookup::kernel_error",
    "lookup::missing_or_doubled_reply",
    "directives::any_value",
    "directives::accepted_within_bounds",
    "directives::rejection_quotes_value",
    "directives::duration_round_trip",
    "directives::keywords",
    "directives::slots",
    "query::any_string",
    "query::token_model",
    "query::errors_echo_nothing",
    "query::paging_params",
    "proc_net::any_text",
    "proc_net::real_lines_round_trip",
    "proc_net::mutated_lines",
    "proc_net::signed_fields",
    "procfs::stat_round_trip",
    "procfs::mutated_stat",
    "procfs::signed_fields",
    "process::socket_links",
    "process::environ_model",
    "process::mutated_environ",
    "privilege::cap_last_cap",
];

/// Cases per property: 256, or FUZZ_CASES / number of properties under `make fuzz`.
fn cases() -> u32 {
    match std::env::var("FUZZ_CASES") {
        Err(_) => 256,
        Ok(v) => {
            let total: u64 = v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("FUZZ_CASES={v:?} is not a whole number"));
            (total / PROPERTIES.len() as u64).clamp(1, u32::MAX as u64) as u32
        }
    }
}

/// Runs property `name`: `test` over `cases()` values of `strategy`. Panics with the shrunk
/// input on failure; under `make fuzz` prints one line with the count and the time taken.
pub fn check<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult) {
    assert!(
        PROPERTIES.contains(&name),
        "property {name} is not in fuzz::PROPERTIES (FUZZ_CASES is divided by their number)"
    );
    let cases = cases();
    let config = Config {
        // A failure file would land in src/; the message carries the shrunk input instead.
        failure_persistence: None,
        // Dumps and tables are nested: the default 1024 steps stop before the input is small.
        max_shrink_iters: 100_000,
        ..Config::with_cases(cases)
    };
    let start = Instant::now();
    let result = TestRunner::new(config).run(&strategy, test);
    if std::env::var_os("FUZZ_CASES").is_some() {
        // One line per property; `make fuzz` collects the lines starting with "fuzz: ".
        eprintln!(
            "fuzz: {name:<36} {cases:>9} cases {:>8.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    if let Err(e) = result {
        panic!("property {name}: {e}");
    }
}

/// `a` as the parsers return an address: an IPv4 client on an IPv6 socket (v4-mapped) as
/// IPv4.
fn canonical(a: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[test]
fn property_names_are_unique() {
    for (i, name) in PROPERTIES.iter().enumerate() {
        assert!(!PROPERTIES[..i].contains(name), "{name} listed twice");
    }
}
